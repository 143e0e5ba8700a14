//! The standard_io channel: a spawned peer's stdin carries frames to it; its stdout
//! carries console text and frames back, its stderr text; rpeer-wait reports the exit
//! status on a pipe of its own. A detached program (no pipes) reports only its exit status.
//!
//! The origin does not read the spawned program's stdout on a thread of its own: the
//! owner reads it through an Erlang port, an [`Incoming`] stream (the channel's reader
//! thread reads large frames there when asked); the owner orders the exit status after
//! the port's end of file.
//!
//! The peer node's end of the same channel is in [`crate::peer_side::stdio`].
//!
//! One reader thread polls stderr and the status pipe. It
//! reads until the streams end, so that a peer flushing its output while it halts is
//! never blocked, and reports `ExitStatus` after them. After the status arrives it waits
//! at most [`EXIT_GRACE`] for the streams to end (a grandchild may hold them open).
//! Until the owner releases stdout it still reads large frames there when asked.

use crate::channel::{self, Channel, ChannelShared, Framing};
use crate::codec::{Decoded, Decoder, Utf8Assembler};
use crate::event::{self, Event, Sink};
use crate::incoming::{Incoming, Stream, StreamDecoder, ThreadRead};
use crate::spawn::{ExitStatusReader, Spawned};
use crate::sys::{self, Interest};
use crate::tuning::{EXIT_GRACE, READ_BUFFER};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

/// Starts the channel of a spawned program. With pipes, frames sent on the channel go to
/// its stdin, and its stdout is returned for the owner to read, with frames up to
/// `max_frame` bytes (a longer one is not taken for a frame); without (a detached
/// program) the channel only reports the exit status.
pub fn start(
    mut spawned: Spawned,
    max_frame: usize,
    sink: impl Sink,
) -> io::Result<(Channel, Option<Incoming>)> {
    let stdout = match spawned.stdout.take() {
        Some(fd) => Some(stdout(fd, max_frame)?),
        None => None,
    };
    let shared = ChannelShared::new()?;
    let queue = match spawned.stdin {
        Some(stdin) => {
            let (queue, frames) = channel::queue();
            channel::spawn_writer(stdin, frames, Framing::Nibbles, Arc::clone(&shared))?;
            Some(queue)
        }
        None => None,
    };
    let reader = Reader {
        stdout: stdout.as_ref().map(Incoming::thread_side),
        stderr: spawned.stderr.map(Stream::new).transpose()?,
        status: spawned.status,
        shared: Arc::clone(&shared),
        delivering: true,
    };
    reader.spawn(sink)?;
    Ok((Channel::new(queue, shared, Some(spawned.pid)), stdout))
}

/// The origin's end of a spawned program's stdout, read by the owner: frames, and
/// console text made valid UTF-8.
fn stdout(fd: OwnedFd, max_frame: usize) -> io::Result<Incoming> {
    let stdout = Incoming::new(Box::new(StdoutDecoder::new(max_frame)))?;
    stdout.open(fd)?;
    Ok(stdout)
}

/// Decodes a stdout stream: frames, and the text between them as UTF-8.
struct StdoutDecoder {
    decoder: Decoder,
    console: Utf8Assembler,
    decoded: Vec<Decoded>,
}

impl StdoutDecoder {
    fn new(max_frame: usize) -> Self {
        StdoutDecoder {
            decoder: Decoder::with_max_frame(max_frame),
            console: Utf8Assembler::new(),
            decoded: Vec::new(),
        }
    }

    fn drain(&mut self, out: &mut Vec<Event>) {
        for decoded in self.decoded.drain(..) {
            match decoded {
                Decoded::Frame(payload) => out.push(Event::Frame(payload)),
                Decoded::Console(text) => {
                    let mut utf8 = Vec::with_capacity(text.len());
                    self.console.push(&text, &mut utf8);
                    if !utf8.is_empty() {
                        out.push(Event::Console(utf8));
                    }
                }
            }
        }
    }
}

impl StreamDecoder for StdoutDecoder {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Event>) {
        self.decoder.feed(bytes, &mut self.decoded);
        self.drain(out);
    }

    fn finish(&mut self, out: &mut Vec<Event>) {
        self.decoder.finish(&mut self.decoded);
        self.drain(out);
        let mut utf8 = Vec::new();
        self.console.flush(&mut utf8);
        if !utf8.is_empty() {
            out.push(Event::Console(utf8));
        }
    }

    fn awaiting(&self) -> usize {
        self.decoder.awaiting()
    }
}

/// The origin's reader of a spawned program's stderr and exit status.
struct Reader {
    /// The origin's stdout of the spawned program, which the owner reads, and asks this
    /// thread to read while a large frame comes in.
    stdout: Option<ThreadRead>,
    stderr: Option<Stream>,
    /// The spawned program's exit status.
    status: ExitStatusReader,
    shared: Arc<ChannelShared>,
    /// False once the owner is gone: the streams are still drained, not delivered.
    delivering: bool,
}

impl Reader {
    /// Runs the reader on a thread of its own, delivering to `sink`.
    fn spawn(self, sink: impl Sink) -> io::Result<()> {
        std::thread::Builder::new()
            .name("rpeer-stdio".into())
            .spawn(move || {
                let mut sink = sink;
                event::guarded(&mut sink, |sink| self.run(sink));
            })?;
        Ok(())
    }

    fn run(mut self, sink: &mut impl Sink) {
        let mut errors = Utf8Assembler::new();
        let mut buf = vec![0u8; READ_BUFFER];
        let mut exit: Option<(Option<i32>, Instant)> = None;
        loop {
            let open = |s: &Option<Stream>| s.as_ref().is_some_and(|s| s.open);
            let err_open = open(&self.stderr);
            let stdout_reading = self.stdout.as_ref().is_some_and(ThreadRead::is_reading);
            let streams_ended = !err_open && !stdout_reading;
            let timeout = match exit {
                Some(_) if streams_ended => break,
                Some((_, at)) => match EXIT_GRACE.checked_sub(at.elapsed()) {
                    Some(left) => Some(left),
                    None => break,
                },
                None => None,
            };
            let status_open = exit.is_none();
            let mut fds = Vec::with_capacity(4);
            if err_open {
                fds.push((
                    self.stderr.as_ref().map_or(-1, |s| s.file.as_raw_fd()),
                    Interest::Read,
                ));
            }
            if status_open {
                fds.push((self.status.fd(), Interest::Read));
            }
            if let Some(stdout) = &self.stdout {
                stdout.poll_fds(&mut fds);
            }
            let Ok(ready) = sys::poll(&fds, timeout) else {
                break;
            };
            let mut ready = ready.into_iter();
            if err_open && ready.next().is_some_and(|r| r.readable) {
                if let Some(bytes) = self.stderr.as_mut().and_then(|s| s.read(&mut buf)) {
                    let mut utf8 = Vec::with_capacity(bytes.len());
                    if bytes.is_empty() {
                        errors.flush(&mut utf8);
                    } else {
                        errors.push(bytes, &mut utf8);
                    }
                    if !utf8.is_empty() {
                        self.deliver(sink, Event::Stderr(utf8));
                    }
                }
            }
            if status_open && ready.next().is_some_and(|r| r.readable) {
                if let Some(status) = self.status.read_some() {
                    exit = Some((status, Instant::now()));
                }
            }
            self.with_stdout(sink, |stdout, deliver| {
                stdout.on_poll(&mut ready, &mut buf, deliver)
            });
        }
        let last = match exit {
            Some((None, _)) => match self.status.launch_failure() {
                Some(errno) => Event::LaunchFailed(errno),
                None => Event::ExitStatus(None),
            },
            Some((status, _)) => Event::ExitStatus(status),
            None => Event::ExitStatus(None),
        };
        if self.delivering && !self.shared.is_aborted() {
            sink.deliver(last);
        }
        // After the exit status the owner may still be reading stdout (the exit came
        // first) and ask for a large frame there to be read here: until it releases it.
        self.with_stdout(sink, |stdout, deliver| stdout.serve(&mut buf, deliver));
    }

    /// Runs `read` on stdout's thread side, if there is one, delivering what it reads.
    fn with_stdout<S: Sink>(
        &mut self,
        sink: &mut S,
        read: impl FnOnce(&mut ThreadRead, &mut dyn FnMut(Event)),
    ) {
        let Reader {
            stdout,
            shared,
            delivering,
            ..
        } = self;
        if let Some(stdout) = stdout {
            read(stdout, &mut |event| shared.deliver(delivering, sink, event));
        }
    }

    fn deliver(&mut self, sink: &mut impl Sink, event: Event) {
        self.shared.deliver(&mut self.delivering, sink, event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{self, DEFAULT_MAX_FRAME};
    use crate::event::TestSink;
    use crate::spawn::{spawn, Spec, StdioMode};
    use crossbeam_channel::{unbounded, Receiver};
    use std::fs::File;
    use std::io::Read;
    use std::time::Duration;

    fn start_sh(script: &str, stdio: StdioMode) -> (Channel, Option<Incoming>, Receiver<Event>) {
        let spec = Spec {
            waiter: crate::spawn::test_waiter(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            stdio,
        };
        let (tx, rx) = unbounded();
        let (channel, stdout) = start(
            spawn(&spec).expect("spawn"),
            DEFAULT_MAX_FRAME,
            TestSink(tx),
        )
        .expect("start");
        (channel, stdout, rx)
    }

    /// Reads the program's stdout to its end, as the owner's port does, and decodes it:
    /// (console text, frames).
    fn read_stdout(stdout: Incoming) -> std::thread::JoinHandle<(Vec<u8>, Vec<Vec<u8>>)> {
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
        let stdout = stdout(read_end, DEFAULT_MAX_FRAME).expect("stdout");
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
    fn read_until_large_frame(stdout: &Incoming, port: &mut File, events: &mut Vec<Event>) {
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
        stdout: &Incoming,
        port: &mut File,
        rx: &Receiver<Event>,
        events: &mut Vec<Event>,
    ) {
        if stdout.read_now(events) {
            read_on_thread(channel, stdout, rx, events);
        }
        read_port_to_end(stdout, port, events);
    }

    fn read_port_to_end(stdout: &Incoming, port: &mut File, events: &mut Vec<Event>) {
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
        stdout: &Incoming,
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

    fn port_reader(stdout: &Incoming) -> File {
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
    ) -> (Channel, Incoming, Receiver<Event>, File, Vec<Event>) {
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
        // 500 KB encoded; the time is a debug build's (read_now's 250 us is an
        // optimised build's, for the rest of a 1 MiB frame).
        let big = vec![9u8; 250_000];
        let (_channel, stdout, _rx, mut port, mut events) =
            exited_leaving_a_large_frame("read-now", &big, b"end");
        // The frame is in at once; the thread would read on (the next frames).
        assert!(stdout.read_for(Duration::from_secs(10), &mut events));
        assert!(events.contains(&Event::Frame(big)), "frame left unfinished");
        read_port_to_end(&stdout, &mut port, &mut events);
        assert_eq!(console_text(&events), b"end");
    }

    #[test]
    fn reading_at_once_stops_after_its_time_and_the_thread_reads_the_rest() {
        let big = vec![9u8; 400_000];
        let (channel, stdout, rx, mut port, mut events) =
            exited_leaving_a_large_frame("read-now-time", &big, b"end");
        // No time: one 64 KiB step, then the rest is the thread's.
        assert!(
            stdout.read_for(Duration::ZERO, &mut events),
            "read past its time"
        );
        assert!(!events.contains(&Event::Frame(big.clone())));
        read_on_thread(&channel, &stdout, &rx, &mut events);
        read_port_to_end(&stdout, &mut port, &mut events);
        assert!(events.contains(&Event::Frame(big)), "large frame lost");
        assert_eq!(console_text(&events), b"end");
    }

    /// A program that writes the first `written` bytes of a large frame and stays;
    /// returns once the owner "through the port" sees the frame begin.
    fn stalled_in_a_large_frame(
        name: &str,
        written: usize,
    ) -> (Channel, Incoming, Receiver<Event>, Vec<Event>) {
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
        // SAFETY: fcntl on a descriptor the test's Incoming keeps open; plain ints.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
        let stdout = Arc::new(stdout);
        let (done, returned) = crossbeam_channel::bounded(1);
        let reading = Arc::clone(&stdout);
        std::thread::spawn(move || {
            let mut events = Vec::new();
            // A time far past the test's: it ends because the pipe is empty.
            let more = reading.read_for(Duration::from_secs(10), &mut events);
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
        assert_eq!(channel.send_vec(vec![1]), Err(channel::SendClosed));
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
            rx.len() <= crate::tuning::DEFAULT_WINDOW,
            "{} events",
            rx.len()
        );
        let (err, status) = collect(&channel, &rx);
        let expected: String = (0..200).map(|i| format!("line{i}\n")).collect();
        assert_eq!(String::from_utf8(err).expect("utf8"), expected);
        assert_eq!(status, Some(0));
    }

    #[test]
    fn closing_stdin_ends_a_program_that_reads_it() {
        let (_, _, _, status) = run_sh("cat >/dev/null; exit 9");
        assert_eq!(status, Some(9));
    }
}
