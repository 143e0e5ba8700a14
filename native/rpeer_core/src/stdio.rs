//! The standard_io channel: a spawned peer's stdin carries frames to it; its stdout
//! carries console text and frames back, its stderr text; rpeer-wait reports the exit
//! status on a pipe of its own. A detached program (no pipes) reports only its exit status.
//!
//! The origin does not read the spawned program's stdout on a thread of its own: the
//! owner reads it through an Erlang port (`open_port({fd, Fd, Fd}, [in, binary, eof])`)
//! and decodes what the port delivers with [`Stdout::decode`]. The VM's scheduler polls
//! that descriptor itself, so a reply wakes one thread, not a reader thread and then
//! a scheduler; the owner orders the exit status after the port's end of file. A port
//! reads 64 KiB at a time, a message each: when a large frame is coming, the owner
//! closes the port and [`Stdout::read_on_thread`] has the channel's reader thread read
//! the frame's rest in big reads; it hands the stream back (`Resume`) once the frame is
//! in.
//!
//! The peer side of the same channel ([`attach`]) reads frames from the node's own
//! stdin and writes frames to its stdout; its end of input ends the channel (`Closed`).
//!
//! One reader thread polls stderr (and, on the peer side, stdin) and the status pipe. It
//! reads until the streams end, so that a peer flushing its output while it halts is
//! never blocked, and reports `ExitStatus` after them. After the status arrives it waits
//! at most [`EXIT_GRACE`] for the streams to end (a grandchild may hold them open).
//! Until the owner releases stdout it still reads large frames there when asked.

use crate::channel::{self, Channel, Framing, Shared};
use crate::codec::{Decoder, Event as Wire, Utf8Assembler};
use crate::event::{self, Event, Failure, Sink};
use crate::spawn::{ExitStatusReader, Spawned};
use crate::sys::{self, Interest};
use parking_lot::Mutex;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the reader waits for stderr to end once the program has exited.
pub const EXIT_GRACE: Duration = Duration::from_secs(2);
const READ_BUFFER: usize = 256 * 1024;

/// The rest of a frame from which reading it on a thread pays (raw bytes): well over
/// one port read (64 KiB), so that small frames never leave the port.
pub const THREAD_READ_FROM: usize = 256 * 1024;

/// Raw bytes the owner reads itself when a large frame begins (see [`Stdout::read_now`]):
/// half of what a full pipe holds, read and decoded in ~200 us (the call stays well under
/// a millisecond also on a busy machine).
const READ_NOW_MAX: usize = 512 * 1024;

/// How long a dropped [`Stdout`] keeps its descriptor open when the owner never said
/// that the port reading it is closed: a port closes when its owner dies, maybe just
/// after the owner's resources are dropped, and must not find its descriptor reused.
const PORT_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Starts the channel of a spawned program. With pipes, frames sent on the channel go to
/// its stdin, and its stdout is returned for the owner to read; without (a detached
/// program) the channel only reports the exit status.
pub fn start(mut spawned: Spawned, sink: impl Sink) -> io::Result<(Channel, Option<Stdout>)> {
    let stdout = spawned.stdout.take().map(Stdout::new).transpose()?;
    let shared = Shared::new()?;
    let queue = match spawned.stdin {
        Some(stdin) => {
            let (queue, frames) = channel::queue();
            channel::spawn_writer(stdin, frames, Framing::Nibbles, Arc::clone(&shared))?;
            Some(queue)
        }
        None => None,
    };
    let reader = Reader {
        input: None,
        stdout: stdout.as_ref().map(|s| Arc::clone(&s.shared)),
        stdout_read: None,
        stderr: spawned.stderr.map(Stream::new).transpose()?,
        status: Some(spawned.status),
        shared: Arc::clone(&shared),
        delivering: true,
    };
    std::thread::Builder::new()
        .name("rpeer-stdio".into())
        .spawn(move || {
            let mut sink = sink;
            event::guarded(&mut sink, |sink| reader.run(sink));
        })?;
    Ok((Channel::new(queue, shared, Some(spawned.pid)), stdout))
}

/// The origin's end of a spawned program's stdout, read by the owner, and the decoder
/// of what it reads: frames, and console text made valid UTF-8.
pub struct Stdout {
    shared: Arc<StdoutShared>,
}

/// What the owner and the channel's reader thread share of the stdout.
struct StdoutShared {
    /// `None` once released: the owner closed the port that read it.
    fd: Mutex<Option<OwnedFd>>,
    decoding: Mutex<StdoutDecoder>,
    /// The owner asked the reader thread to read a large frame; cleared by the thread
    /// before it hands the stream back.
    requested: AtomicBool,
    /// Tells the reader thread that `requested` (or `fd`) changed.
    wake: sys::Waker,
    /// Bytes read from the stream so far, by the owner's port or the reader thread.
    read_bytes: AtomicU64,
    /// The buffer of [`Stdout::read_now`].
    read_now_buf: Mutex<Vec<u8>>,
}

impl Stdout {
    fn new(fd: OwnedFd) -> io::Result<Self> {
        // The port reads it when polled; a read must never block a scheduler.
        sys::set_nonblocking(fd.as_raw_fd())?;
        Ok(Stdout {
            shared: Arc::new(StdoutShared {
                fd: Mutex::new(Some(fd)),
                decoding: Mutex::new(StdoutDecoder::new(true)),
                requested: AtomicBool::new(false),
                wake: sys::Waker::new()?,
                read_bytes: AtomicU64::new(0),
                read_now_buf: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The descriptor to read, until released.
    pub fn raw_fd(&self) -> Option<RawFd> {
        self.shared.fd.lock().as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Decodes bytes read from the descriptor into `Frame` and `Console` events. Returns
    /// whether a large frame is coming, whose rest is faster read on the reader thread.
    pub fn decode(&self, bytes: &[u8], out: &mut Vec<Event>) -> bool {
        self.shared.decode(bytes, out) >= THREAD_READ_FROM
    }

    /// Bytes read from the stream so far: whether it is still written to.
    pub fn read_bytes(&self) -> u64 {
        self.shared.read_bytes.load(Ordering::Acquire)
    }

    /// The stream ended: what is held back becomes console text.
    pub fn finish(&self, out: &mut Vec<Event>) {
        self.shared.decoding.lock().finish(out);
    }

    /// Reads the frame being received as far as the stream holds it now, without
    /// waiting (at most [`READ_NOW_MAX`] bytes): a large frame's start is in the pipe
    /// already when the owner sees the frame begin, and reading it here spares waiting
    /// for the reader thread to wake up. Returns whether a large frame is still coming,
    /// whose rest [`Stdout::read_on_thread`] reads; else (also at the end of the stream,
    /// or on an error, which a port then sees) a port can read on. Call only while
    /// nothing else reads the stream.
    pub fn read_now(&self, out: &mut Vec<Event>) -> bool {
        let Some(Stream { mut file, .. }) = self.shared.duplicate() else {
            return false;
        };
        let mut buf = self.shared.read_now_buf.lock();
        buf.resize(READ_BUFFER, 0);
        let (mut read, mut missing) = (0, self.shared.decoding.lock().decoder.awaiting());
        while read < READ_NOW_MAX {
            match file.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => {
                    read += n;
                    missing = self.shared.decode(&buf[..n], out);
                    if missing == 0 {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return false,
            }
        }
        missing >= THREAD_READ_FROM
    }

    /// Has the channel's reader thread read the stream until a read ends with no frame
    /// unfinished, delivering `Frame` and `Console` events, then `Resume` (also at the
    /// end of the stream, which the owner's port then sees). Call only while nothing
    /// else reads it.
    pub fn read_on_thread(&self) {
        self.shared.requested.store(true, Ordering::Release);
        self.shared.wake.wake();
    }

    /// Closes the descriptor; call once nothing polls it any more. The reader thread
    /// stops reading its own duplicate.
    pub fn release(&self) {
        drop(self.shared.stop_reading());
    }
}

impl StdoutShared {
    /// A duplicate of the descriptor (until released), non-blocking: a closed port
    /// leaves it blocking, and neither the owner's read nor the thread's after a poll
    /// may wait for more.
    fn duplicate(&self) -> Option<Stream> {
        let fd = self.fd.lock().as_ref().map(OwnedFd::try_clone)?;
        fd.and_then(Stream::new).ok()
    }

    /// Takes the descriptor away and stops the reader thread from reading it.
    fn stop_reading(&self) -> Option<OwnedFd> {
        let fd = self.fd.lock().take();
        self.requested.store(false, Ordering::Release);
        self.wake.wake();
        fd
    }

    /// Decodes bytes read from the stream, by the port or the reader thread; returns the
    /// raw bytes still missing from the frame being received.
    fn decode(&self, bytes: &[u8], out: &mut Vec<Event>) -> usize {
        self.read_bytes
            .fetch_add(bytes.len() as u64, Ordering::AcqRel);
        let mut decoding = self.decoding.lock();
        decoding.feed(bytes, out);
        decoding.decoder.awaiting()
    }
}

impl Drop for Stdout {
    fn drop(&mut self) {
        if let Some(fd) = self.shared.stop_reading() {
            // Not released: a port may still have it selected, so it is closed later.
            let fd = Arc::new(fd);
            let closing = Arc::clone(&fd);
            let parked = std::thread::Builder::new()
                .name("rpeer-stdout-close".into())
                .spawn(move || {
                    std::thread::sleep(PORT_CLOSE_GRACE);
                    drop(closing);
                });
            if parked.is_err() {
                // No thread: leave the descriptor open rather than risk its reuse.
                std::mem::forget(fd);
            }
        }
    }
}

/// Decodes a stdout stream: frames, and (when `console`) text between them as UTF-8.
struct StdoutDecoder {
    decoder: Decoder,
    console: Option<Utf8Assembler>,
    wire: Vec<Wire>,
}

impl StdoutDecoder {
    fn new(console: bool) -> Self {
        StdoutDecoder {
            decoder: Decoder::new(),
            console: console.then(Utf8Assembler::new),
            wire: Vec::new(),
        }
    }

    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Event>) {
        self.decoder.feed(bytes, &mut self.wire);
        self.drain(out);
    }

    fn finish(&mut self, out: &mut Vec<Event>) {
        self.decoder.finish(&mut self.wire);
        self.drain(out);
        if let Some(console) = &mut self.console {
            let mut utf8 = Vec::new();
            console.flush(&mut utf8);
            if !utf8.is_empty() {
                out.push(Event::Console(utf8));
            }
        }
    }

    fn drain(&mut self, out: &mut Vec<Event>) {
        for event in self.wire.drain(..) {
            match (event, &mut self.console) {
                (Wire::Frame(payload), _) => out.push(Event::Frame(payload)),
                (Wire::Console(text), Some(console)) => {
                    let mut utf8 = Vec::with_capacity(text.len());
                    console.push(&text, &mut utf8);
                    if !utf8.is_empty() {
                        out.push(Event::Console(utf8));
                    }
                }
                (Wire::Console(_), None) => {}
            }
        }
    }
}

/// The peer node's side: frames are read from `input` (the node's stdin) and written to
/// `output` (its stdout). Ends with `Closed(Eof)` when the input ends. Only frames are
/// delivered: the origin writes nothing else, so other bytes on stdin are noise.
pub fn attach(input: OwnedFd, output: OwnedFd, sink: impl Sink) -> io::Result<Channel> {
    let shared = Shared::new()?;
    let (queue, frames) = channel::queue();
    channel::spawn_writer(output, frames, Framing::Nibbles, Arc::clone(&shared))?;
    let reader = Reader {
        input: Some(Stream::new(input)?),
        stdout: None,
        stdout_read: None,
        stderr: None,
        status: None,
        shared: Arc::clone(&shared),
        delivering: true,
    };
    std::thread::Builder::new()
        .name("rpeer-stdio".into())
        .spawn(move || {
            let mut sink = sink;
            event::guarded(&mut sink, |sink| reader.run(sink));
        })?;
    Ok(Channel::new(Some(queue), shared, None))
}

struct Stream {
    file: File,
    open: bool,
}

impl Stream {
    fn new(fd: OwnedFd) -> io::Result<Self> {
        sys::set_nonblocking(fd.as_raw_fd())?;
        Ok(Stream {
            file: File::from(fd),
            open: true,
        })
    }

    /// Reads what is there into `buf`; an empty slice once the stream has ended.
    fn read<'b>(&mut self, buf: &'b mut [u8]) -> Option<&'b [u8]> {
        match self.file.read(buf) {
            Ok(0) => {
                self.open = false;
                Some(&[])
            }
            Ok(n) => Some(&buf[..n]),
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                None
            }
            Err(_) => {
                self.open = false;
                Some(&[])
            }
        }
    }
}

struct Reader {
    /// The peer side's stdin, which carries frames (the origin reads none here).
    input: Option<Stream>,
    /// The origin's stdout of the spawned program, which the owner reads, and asks this
    /// thread to read while a large frame comes in.
    stdout: Option<Arc<StdoutShared>>,
    /// This thread's duplicate of the stdout descriptor while it reads a large frame.
    stdout_read: Option<Stream>,
    stderr: Option<Stream>,
    /// The spawned program's exit status; `None` on the peer side.
    status: Option<ExitStatusReader>,
    shared: Arc<Shared>,
    /// False once the owner is gone: the streams are still drained, not delivered.
    delivering: bool,
}

impl Reader {
    fn run(mut self, sink: &mut impl Sink) {
        let mut decoder = StdoutDecoder::new(false);
        let mut events = Vec::new();
        let mut errors = Utf8Assembler::new();
        let mut buf = vec![0u8; READ_BUFFER];
        let mut exit: Option<(Option<i32>, Instant)> = None;
        loop {
            self.take_stdout_request(sink);
            let open = |s: &Option<Stream>| s.as_ref().is_some_and(|s| s.open);
            let (in_open, err_open) = (open(&self.input), open(&self.stderr));
            let streams_ended = !in_open && !err_open && self.stdout_read.is_none();
            let timeout = match (&self.status, exit) {
                (None, _) | (Some(_), Some(_)) if streams_ended => break,
                (Some(_), Some((_, at))) => match EXIT_GRACE.checked_sub(at.elapsed()) {
                    Some(left) => Some(left),
                    None => break,
                },
                _ => None,
            };
            let status_open = self.status.is_some() && exit.is_none();
            let mut fds = Vec::with_capacity(3);
            if in_open {
                fds.push((
                    self.input.as_ref().map_or(-1, |s| s.file.as_raw_fd()),
                    Interest::Read,
                ));
            }
            if err_open {
                fds.push((
                    self.stderr.as_ref().map_or(-1, |s| s.file.as_raw_fd()),
                    Interest::Read,
                ));
            }
            if let (true, Some(status)) = (status_open, &self.status) {
                fds.push((status.fd(), Interest::Read));
            }
            if let Some(stream) = &self.stdout_read {
                fds.push((stream.file.as_raw_fd(), Interest::Read));
            }
            if let Some(stdout) = &self.stdout {
                fds.push((stdout.wake.fd(), Interest::Read));
            }
            let Ok(ready) = sys::poll(&fds, timeout) else {
                break;
            };
            let mut ready = ready.into_iter();
            if in_open && ready.next().is_some_and(|r| r.readable) {
                if let Some(bytes) = self.input.as_mut().and_then(|s| s.read(&mut buf)) {
                    if bytes.is_empty() {
                        decoder.finish(&mut events);
                    } else {
                        decoder.feed(bytes, &mut events);
                    }
                    for event in events.drain(..) {
                        self.deliver(sink, event);
                    }
                }
            }
            if err_open && ready.next().is_some_and(|r| r.readable) {
                if let Some(bytes) = self.stderr.as_mut().and_then(|s| s.read(&mut buf)) {
                    let mut utf8 = Vec::with_capacity(bytes.len());
                    if bytes.is_empty() {
                        errors.flush(&mut utf8);
                    } else {
                        errors.push(bytes, &mut utf8);
                    }
                    self.deliver_text(sink, Event::Stderr(utf8));
                }
            }
            if status_open && ready.next().is_some_and(|r| r.readable) {
                if let Some(status) = self.status.as_mut().and_then(ExitStatusReader::read_some) {
                    exit = Some((status, Instant::now()));
                }
            }
            if self.stdout_read.is_some() && ready.next().is_some_and(|r| r.readable) {
                self.read_stdout(sink, &mut buf, &mut events);
            }
            if let (Some(stdout), Some(r)) = (&self.stdout, ready.next()) {
                if r.readable {
                    stdout.wake.clear();
                }
            }
        }
        let last = match (&self.status, exit) {
            (None, _) => Event::Closed(Failure::Eof),
            (Some(reader), Some((None, _))) => match reader.launch_failure() {
                Some(errno) => Event::LaunchFailed(errno),
                None => Event::ExitStatus(None),
            },
            (Some(_), Some((status, _))) => Event::ExitStatus(status),
            (Some(_), None) => Event::ExitStatus(None),
        };
        if self.delivering && !self.shared.is_aborted() {
            sink.deliver(last);
        }
        self.serve_stdout(sink, &mut buf, &mut events);
    }

    /// After the exit status the owner may still be reading stdout (the exit came first)
    /// and ask for a large frame there to be read here: until it releases stdout.
    fn serve_stdout(&mut self, sink: &mut impl Sink, buf: &mut [u8], events: &mut Vec<Event>) {
        loop {
            let Some(wake) = self.stdout.as_ref().map(|s| s.wake.fd()) else {
                return;
            };
            if self.stdout.as_ref().is_some_and(|s| s.fd.lock().is_none()) {
                return; // released, or the owner is gone
            }
            self.take_stdout_request(sink);
            let mut fds = vec![(wake, Interest::Read)];
            if let Some(stream) = &self.stdout_read {
                fds.push((stream.file.as_raw_fd(), Interest::Read));
            }
            let Ok(ready) = sys::poll(&fds, None) else {
                return;
            };
            if ready[0].readable {
                if let Some(stdout) = &self.stdout {
                    stdout.wake.clear();
                }
            }
            if ready.get(1).is_some_and(|r| r.readable) {
                self.read_stdout(sink, buf, events);
            }
        }
    }

    /// The owner asked for a large frame on stdout to be read here (or released it).
    fn take_stdout_request(&mut self, sink: &mut impl Sink) {
        let Some(stdout) = &self.stdout else {
            return;
        };
        let requested = stdout.requested.load(Ordering::Acquire);
        if requested && self.stdout_read.is_none() {
            match stdout.duplicate() {
                Some(stream) => self.stdout_read = Some(stream),
                // Released meanwhile, or no descriptor left: the owner reads on.
                None => self.hand_stdout_back(sink),
            }
        } else if !requested {
            self.stdout_read = None;
        }
    }

    /// Reads stdout for the owner; hands it back once a read ends with no frame
    /// unfinished, or at the end of the stream (which the owner's port then sees).
    fn read_stdout(&mut self, sink: &mut impl Sink, buf: &mut [u8], events: &mut Vec<Event>) {
        let (Some(stdout), Some(stream)) = (&self.stdout, &mut self.stdout_read) else {
            return;
        };
        let Some(bytes) = stream.read(buf) else {
            return;
        };
        let frame_unfinished = !bytes.is_empty() && stdout.decode(bytes, events) > 0;
        if !frame_unfinished {
            // Closed before the owner reads the stream again.
            self.stdout_read = None;
        }
        for event in events.drain(..) {
            self.deliver(sink, event);
        }
        if !frame_unfinished {
            self.hand_stdout_back(sink);
        }
    }

    fn hand_stdout_back(&mut self, sink: &mut impl Sink) {
        if let Some(stdout) = &self.stdout {
            stdout.requested.store(false, Ordering::Release);
        }
        self.deliver(sink, Event::Resume);
    }

    fn deliver_text(&mut self, sink: &mut impl Sink, event: Event) {
        if !matches!(&event, Event::Stderr(t) if t.is_empty()) {
            self.deliver(sink, event);
        }
    }

    fn deliver(&mut self, sink: &mut impl Sink, event: Event) {
        if !self.delivering {
            return;
        }
        if (event.is_data() && !self.shared.flow.acquire()) || !sink.deliver(event) {
            // The owner is gone; keep draining so the peer never blocks on a full pipe.
            self.delivering = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::event::TestSink;
    use crate::spawn::{spawn, Spec, StdioMode};
    use crossbeam_channel::{unbounded, Receiver};

    fn start_sh(script: &str, stdio: StdioMode) -> (Channel, Option<Stdout>, Receiver<Event>) {
        let spec = Spec {
            waiter: crate::spawn::test_waiter(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            stdio,
        };
        let (tx, rx) = unbounded();
        let (channel, stdout) = start(spawn(&spec).expect("spawn"), TestSink(tx)).expect("start");
        (channel, stdout, rx)
    }

    /// Reads the program's stdout to its end, as the owner's port does, and decodes it:
    /// (console text, frames).
    fn read_stdout(stdout: Stdout) -> std::thread::JoinHandle<(Vec<u8>, Vec<Vec<u8>>)> {
        std::thread::spawn(move || {
            let fd = stdout.raw_fd().expect("stdout fd");
            // A blocking reader of the same pipe, without taking the descriptor over.
            let mut pipe = File::open(format!("/proc/self/fd/{fd}")).expect("open pipe");
            let (mut events, mut buf) = (Vec::new(), vec![0u8; 64 * 1024]);
            loop {
                match pipe.read(&mut buf).expect("read") {
                    0 => break,
                    n => {
                        stdout.decode(&buf[..n], &mut events);
                    }
                }
            }
            stdout.finish(&mut events);
            stdout.release();
            assert_eq!(stdout.raw_fd(), None);
            let (mut text, mut frames) = (Vec::new(), Vec::new());
            for event in events {
                match event {
                    Event::Console(t) => text.extend(t),
                    Event::Frame(f) => frames.push(f),
                    other => panic!("unexpected {other:?}"),
                }
            }
            (text, frames)
        })
    }

    /// Collects the channel's events until the exit status, acknowledging data events:
    /// (stderr text, status).
    fn collect(channel: &Channel, rx: &Receiver<Event>) -> (Vec<u8>, Option<i32>) {
        let mut err = Vec::new();
        loop {
            let event = rx.recv_timeout(Duration::from_secs(10)).expect("event");
            if event.is_data() {
                channel.ack(1);
            }
            match event {
                Event::Stderr(t) => err.extend(t),
                Event::ExitStatus(status) => return (err, status),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    fn run_sh(script: &str) -> (Vec<u8>, Vec<u8>, Vec<Vec<u8>>, Option<i32>) {
        let (channel, stdout, rx) = start_sh(script, StdioMode::Piped);
        let reading = read_stdout(stdout.expect("piped stdout"));
        channel.close();
        let (err, status) = collect(&channel, &rx);
        let (out, frames) = reading.join().expect("stdout reader");
        (out, err, frames, status)
    }

    #[test]
    fn echoes_frames_and_reports_text_and_status() {
        // cat echoes the encoded frames back; the shell adds text around them.
        let (channel, stdout, rx) =
            start_sh("echo before; cat; echo after >&2; exit 3", StdioMode::Piped);
        let reading = read_stdout(stdout.expect("piped stdout"));
        channel.send_vec(b"hello".to_vec()).expect("send");
        channel
            .send_vec(vec![7u8; 3 * WRITE_TEST_CHUNK])
            .expect("send");
        channel.close();
        let (err, status) = collect(&channel, &rx);
        let (out, frames) = reading.join().expect("stdout reader");
        assert_eq!(out, b"before\n");
        assert_eq!(err, b"after\n");
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], b"hello");
        assert!(
            frames[1] == vec![7u8; 3 * WRITE_TEST_CHUNK],
            "big frame corrupted"
        );
        assert_eq!(status, Some(3));
    }

    const WRITE_TEST_CHUNK: usize = 300 * 1024;

    #[test]
    fn invalid_utf8_output_arrives_as_latin1() {
        let (out, err, frames, status) =
            run_sh("printf 'caf\\303\\251 \\377\\n'; printf '\\376x\\303' >&2");
        assert_eq!(String::from_utf8(out).expect("utf8"), "café ÿ\n");
        assert_eq!(String::from_utf8(err).expect("utf8"), "þxÃ");
        assert!(frames.is_empty());
        assert_eq!(status, Some(0));
    }

    #[test]
    fn frame_printed_by_the_program_is_decoded() {
        let mut encoded = Vec::new();
        codec::encode_frame(b"from peer", &mut encoded);
        let octal: String = encoded.iter().map(|b| format!("\\{b:03o}")).collect();
        let (out, _, frames, _) = run_sh(&format!("printf 'x{octal}y'"));
        assert_eq!(out, b"xy");
        assert_eq!(frames, vec![b"from peer".to_vec()]);
    }

    #[test]
    fn stdout_decoder_joins_frames_and_characters_split_across_reads() {
        let (read_end, _write_end) = crate::sys::pipe().expect("pipe");
        let stdout = Stdout::new(read_end).expect("stdout");
        let mut wire = "é:".as_bytes().to_vec();
        codec::encode_frame(b"split", &mut wire);
        wire.extend_from_slice(&[b'!', 0xC3]);
        let mut events = Vec::new();
        for byte in &wire {
            stdout.decode(std::slice::from_ref(byte), &mut events);
        }
        stdout.finish(&mut events);
        let text = console_text(&events);
        let frames: Vec<&Event> = events
            .iter()
            .filter(|e| matches!(e, Event::Frame(_)))
            .collect();
        assert_eq!(frames, vec![&Event::Frame(b"split".to_vec())]);
        // A lone lead byte at the end of the stream is a Latin-1 character.
        assert_eq!(String::from_utf8(text).expect("utf8"), "é:!Ã");
        stdout.release();
    }

    /// A file holding `bytes`, for a test program to `cat`.
    fn wire_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("rpeer-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).expect("write wire file");
        path
    }

    /// Reads the program's stdout "through the port" (a blocking reader of the same
    /// pipe) until the decoder says a large frame is coming.
    fn read_until_large_frame(stdout: &Stdout, port: &mut File, events: &mut Vec<Event>) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = port.read(&mut buf).expect("read");
            assert!(n > 0, "stream ended before the large frame");
            if stdout.decode(&buf[..n], events) {
                return;
            }
        }
    }

    /// Reads the rest of a large frame as the owner does (what the pipe holds now, then
    /// on the reader thread if the frame goes on), then the rest "through the port" to
    /// the end.
    fn read_rest_then_port(
        channel: &Channel,
        stdout: &Stdout,
        port: &mut File,
        rx: &Receiver<Event>,
        events: &mut Vec<Event>,
    ) {
        if stdout.read_now(events) {
            read_on_thread(channel, stdout, rx, events);
        }
        read_port_to_end(stdout, port, events);
    }

    fn read_port_to_end(stdout: &Stdout, port: &mut File, events: &mut Vec<Event>) {
        let mut rest = Vec::new();
        port.read_to_end(&mut rest).expect("read");
        stdout.decode(&rest, events);
        stdout.finish(events);
        stdout.release();
    }

    /// Has the reader thread read the large frame (acknowledging its events) until it
    /// hands the stream back; an exit status coming meanwhile joins the events.
    fn read_on_thread(
        channel: &Channel,
        stdout: &Stdout,
        rx: &Receiver<Event>,
        events: &mut Vec<Event>,
    ) {
        stdout.read_on_thread();
        loop {
            let event = rx.recv_timeout(Duration::from_secs(10)).expect("event");
            if event.is_data() {
                channel.ack(1);
            }
            match event {
                Event::Resume => return,
                Event::Frame(_) | Event::Console(_) | Event::ExitStatus(_) => events.push(event),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// The console text among `events`, joined.
    fn console_text(events: &[Event]) -> Vec<u8> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Console(t) => Some(t.as_slice()),
                _ => None,
            })
            .flatten()
            .copied()
            .collect()
    }

    fn port_reader(stdout: &Stdout) -> File {
        let fd = stdout.raw_fd().expect("fd");
        File::open(format!("/proc/self/fd/{fd}")).expect("open pipe")
    }

    #[test]
    fn large_frame_is_read_on_the_reader_thread_then_handed_back() {
        let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut wire = b"before ".to_vec();
        codec::encode_frame(&big, &mut wire);
        wire.extend_from_slice(b" after ");
        codec::encode_frame(b"small", &mut wire);
        let file = wire_file("large-frame", &wire);
        let (channel, stdout, rx) =
            start_sh(&format!("cat '{}'", file.display()), StdioMode::Piped);
        let stdout = stdout.expect("piped stdout");
        let mut port = port_reader(&stdout);
        let mut events = Vec::new();
        read_until_large_frame(&stdout, &mut port, &mut events);
        read_rest_then_port(&channel, &stdout, &mut port, &rx, &mut events);
        let _ = std::fs::remove_file(&file);
        let frames: Vec<&Vec<u8>> = events
            .iter()
            .filter_map(|e| match e {
                Event::Frame(f) => Some(f),
                _ => None,
            })
            .collect();
        assert_eq!(frames.len(), 2);
        assert!(*frames[0] == big, "large frame corrupted");
        assert_eq!(frames[1], b"small");
        let text = console_text(&events);
        assert_eq!(text, b"before  after ");
        let status = events.iter().find_map(|e| match e {
            Event::ExitStatus(status) => Some(*status),
            _ => None,
        });
        let status = status.unwrap_or_else(|| collect(&channel, &rx).1);
        assert_eq!(status, Some(0));
    }

    /// A program that writes a large frame, then `text`, and exits: all of it fits in
    /// the pipe, so its exit status arrives before the owner reads. Returns once the
    /// owner "through the port" sees the frame begin.
    fn exited_leaving_a_large_frame(
        name: &str,
        frame: &[u8],
        text: &[u8],
    ) -> (Channel, Stdout, Receiver<Event>, File, Vec<Event>) {
        let mut wire = Vec::new();
        codec::encode_frame(frame, &mut wire);
        wire.extend_from_slice(text);
        let file = wire_file(name, &wire);
        let (channel, stdout, rx) =
            start_sh(&format!("cat '{}'", file.display()), StdioMode::Piped);
        let stdout = stdout.expect("piped stdout");
        let (_, status) = collect(&channel, &rx);
        assert_eq!(status, Some(0));
        let _ = std::fs::remove_file(&file);
        let mut port = port_reader(&stdout);
        let mut events = Vec::new();
        read_until_large_frame(&stdout, &mut port, &mut events);
        (channel, stdout, rx, port, events)
    }

    #[test]
    fn large_frame_left_in_the_pipe_after_the_exit_is_still_read() {
        // 400 KB of payload, 800 KB encoded.
        let big = vec![7u8; 400_000];
        let (channel, stdout, rx, mut port, mut events) =
            exited_leaving_a_large_frame("after-exit", &big, b"bye");
        // The thread, not read_now, which would find all of it in the pipe.
        read_on_thread(&channel, &stdout, &rx, &mut events);
        read_port_to_end(&stdout, &mut port, &mut events);
        assert!(events.contains(&Event::Frame(big)), "large frame lost");
        assert!(events.contains(&Event::Console(b"bye".to_vec())));
    }

    #[test]
    fn large_frame_already_in_the_pipe_is_read_at_once() {
        // 500 KB encoded: within what read_now reads, after the port's first 64 KiB.
        let big = vec![9u8; 250_000];
        let (_channel, stdout, _rx, mut port, mut events) =
            exited_leaving_a_large_frame("read-now", &big, b"end");
        assert!(!stdout.read_now(&mut events), "frame left unfinished");
        assert!(events.contains(&Event::Frame(big)), "large frame lost");
        read_port_to_end(&stdout, &mut port, &mut events);
        assert_eq!(console_text(&events), b"end");
    }

    /// A program that writes the first `written` bytes of a large frame and stays;
    /// returns once the owner "through the port" sees the frame begin.
    fn stalled_in_a_large_frame(
        name: &str,
        written: usize,
    ) -> (Channel, Stdout, Receiver<Event>, Vec<Event>) {
        let mut wire = Vec::new();
        codec::encode_frame(&vec![3u8; 1_000_000], &mut wire);
        let file = wire_file(name, &wire[..written]);
        let (channel, stdout, rx) = start_sh(
            &format!("cat '{}'; sleep 30", file.display()),
            StdioMode::Piped,
        );
        let stdout = stdout.expect("piped stdout");
        let mut port = port_reader(&stdout);
        let mut events = Vec::new();
        read_until_large_frame(&stdout, &mut port, &mut events);
        // cat has it open by now.
        let _ = std::fs::remove_file(&file);
        (channel, stdout, rx, events)
    }

    #[test]
    fn reading_now_returns_when_the_pipe_is_empty() {
        let (channel, stdout, rx, _) = stalled_in_a_large_frame("read-now-empty", 300 * 1024);
        // Let cat finish writing, then read what it wrote: the frame is unfinished.
        std::thread::sleep(Duration::from_millis(200));
        // As a closed port leaves it: blocking.
        let fd = stdout.raw_fd().expect("fd");
        // SAFETY: fcntl on a descriptor the test's Stdout keeps open; plain ints.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
        let stdout = Arc::new(stdout);
        let (done, returned) = crossbeam_channel::bounded(1);
        let reading = Arc::clone(&stdout);
        std::thread::spawn(move || {
            let mut events = Vec::new();
            let more = reading.read_now(&mut events);
            let _ = done.send((more, events));
        });
        let (more, events) = returned
            .recv_timeout(Duration::from_secs(2))
            .expect("read_now waited on an empty pipe");
        assert!(more, "the frame is not complete");
        assert!(events.is_empty());
        assert_eq!(stdout.read_bytes(), 300 * 1024);
        stdout.release();
        channel.kill();
        let (_, status) = collect(&channel, &rx);
        assert_eq!(status, Some(128 + 9));
    }

    #[test]
    fn released_stdout_is_no_longer_read_by_the_reader_thread() {
        let (channel, stdout, rx, _events) = stalled_in_a_large_frame("released", 128 * 1024);
        stdout.read_on_thread();
        std::thread::sleep(Duration::from_millis(100));
        stdout.release();
        assert_eq!(stdout.raw_fd(), None);
        channel.kill();
        // Nothing but the exit status: no frame, no hand-back.
        let (_, status) = collect(&channel, &rx);
        assert_eq!(status, Some(128 + 9));
    }

    #[test]
    fn detached_program_reports_only_its_status() {
        let (channel, stdout, rx) = start_sh("exit 5", StdioMode::Detached);
        assert!(stdout.is_none());
        assert_eq!(channel.send_vec(vec![1]), Err(channel::Closed));
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)).expect("event"),
            Event::ExitStatus(Some(5))
        );
    }

    #[test]
    fn flow_control_holds_events_until_acked() {
        let (channel, stdout, rx) = start_sh(
            "i=0; while [ $i -lt 200 ]; do echo line$i >&2; sleep 0.001; i=$((i+1)); done",
            StdioMode::Piped,
        );
        drop(stdout);
        std::thread::sleep(Duration::from_millis(600));
        // Without acks no more than the window of data events is delivered.
        assert!(
            rx.len() <= crate::event::DEFAULT_WINDOW,
            "{} events",
            rx.len()
        );
        let (err, status) = collect(&channel, &rx);
        let expected: String = (0..200).map(|i| format!("line{i}\n")).collect();
        assert_eq!(String::from_utf8(err).expect("utf8"), expected);
        assert_eq!(status, Some(0));
    }

    #[test]
    fn attached_side_reads_frames_and_writes_frames() {
        let (in_read, in_write) = crate::sys::pipe().expect("pipe");
        let (out_read, out_write) = crate::sys::pipe().expect("pipe");
        let (tx, rx) = unbounded();
        let channel = attach(in_read, out_write, TestSink(tx)).expect("attach");
        let mut encoded = Vec::new();
        codec::encode_frame(b"to peer", &mut encoded);
        let mut origin_side = File::from(in_write);
        std::io::Write::write_all(&mut origin_side, &encoded).expect("write");
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)).expect("event"),
            Event::Frame(b"to peer".to_vec())
        );
        channel.ack(1);
        channel.send_vec(b"to origin".to_vec()).expect("send");
        channel.close();
        let mut written = Vec::new();
        File::from(out_read)
            .read_to_end(&mut written)
            .expect("read");
        let mut expected = Vec::new();
        codec::encode_frame(b"to origin", &mut expected);
        assert_eq!(written, expected);
        drop(origin_side);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)).expect("event"),
            Event::Closed(Failure::Eof)
        );
    }

    #[test]
    fn closing_stdin_ends_a_program_that_reads_it() {
        let (_, _, _, status) = run_sh("cat >/dev/null; exit 9");
        assert_eq!(status, Some(9));
    }
}
