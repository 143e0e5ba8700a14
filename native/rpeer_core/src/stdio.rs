//! The standard_io channel: a spawned peer's stdin carries frames to it; its stdout
//! carries console text and frames back, its stderr text; rpeer-wait reports the exit
//! status on a pipe of its own. A detached program (no pipes) reports only its exit status.
//!
//! The peer side of the same channel ([`attach`]) reads frames from the node's own
//! stdin and writes frames to its stdout; its end of input ends the channel (`Closed`).
//!
//! One reader thread polls stdout, stderr and the status pipe. It reads until both
//! streams end, so that a peer flushing its output while it halts is never blocked, and
//! reports `ExitStatus` last. After the status arrives it waits at most
//! [`EXIT_GRACE`] for the streams to end (a grandchild may hold them open).

use crate::channel::{self, Channel, Framing, Shared};
use crate::codec::{Decoder, Event as Wire, Utf8Assembler};
use crate::event::{self, Event, Failure, Sink};
use crate::spawn::{ExitStatusReader, Spawned};
use crate::sys::{self, Interest};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the reader waits for stdout and stderr to end once the program has exited.
pub const EXIT_GRACE: Duration = Duration::from_secs(2);
const READ_BUFFER: usize = 256 * 1024;

/// Starts the channel of a spawned program. With pipes, frames sent on the channel go to
/// its stdin; without (a detached program) the channel only reports the exit status.
pub fn start(spawned: Spawned, sink: impl Sink) -> io::Result<Channel> {
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
        stdout: spawned.stdout.map(Stream::new).transpose()?,
        stderr: spawned.stderr.map(Stream::new).transpose()?,
        status: Some(spawned.status),
        shared: Arc::clone(&shared),
        delivering: true,
        console: true,
    };
    std::thread::Builder::new()
        .name("rpeer-stdio".into())
        .spawn(move || {
            let mut sink = sink;
            event::guarded(&mut sink, |sink| reader.run(sink));
        })?;
    Ok(Channel::new(queue, shared, Some(spawned.pid)))
}

/// The peer node's side: frames are read from `input` (the node's stdin) and written to
/// `output` (its stdout). Ends with `Closed(Eof)` when the input ends. Only frames are
/// delivered: the origin writes nothing else, so other bytes on stdin are noise.
pub fn attach(input: OwnedFd, output: OwnedFd, sink: impl Sink) -> io::Result<Channel> {
    let shared = Shared::new()?;
    let (queue, frames) = channel::queue();
    channel::spawn_writer(output, frames, Framing::Nibbles, Arc::clone(&shared))?;
    let reader = Reader {
        stdout: Some(Stream::new(input)?),
        stderr: None,
        status: None,
        shared: Arc::clone(&shared),
        delivering: true,
        console: false,
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
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    /// The spawned program's exit status; `None` on the peer side.
    status: Option<ExitStatusReader>,
    shared: Arc<Shared>,
    /// False once the owner is gone: the streams are still drained, not delivered.
    delivering: bool,
    /// Whether text between frames on stdout is delivered (`Console`) or dropped.
    console: bool,
}

impl Reader {
    fn run(mut self, sink: &mut impl Sink) {
        let mut decoder = Decoder::new();
        let mut console = Utf8Assembler::new();
        let mut errors = Utf8Assembler::new();
        let mut wire = Vec::new();
        let mut buf = vec![0u8; READ_BUFFER];
        let mut exit: Option<(Option<i32>, Instant)> = None;
        loop {
            let open = |s: &Option<Stream>| s.as_ref().is_some_and(|s| s.open);
            let (out_open, err_open) = (open(&self.stdout), open(&self.stderr));
            let streams_ended = !out_open && !err_open;
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
            if out_open {
                fds.push((
                    self.stdout.as_ref().map_or(-1, |s| s.file.as_raw_fd()),
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
            let Ok(ready) = sys::poll(&fds, timeout) else {
                break;
            };
            let mut ready = ready.into_iter();
            if out_open && ready.next().is_some_and(|r| r.readable) {
                if let Some(bytes) = self.stdout.as_mut().and_then(|s| s.read(&mut buf)) {
                    if bytes.is_empty() {
                        decoder.finish(&mut wire);
                    } else {
                        decoder.feed(bytes, &mut wire);
                    }
                    let ended = bytes.is_empty();
                    for event in wire.drain(..) {
                        match event {
                            Wire::Frame(payload) => self.deliver(sink, Event::Frame(payload)),
                            Wire::Console(text) => {
                                let mut utf8 = Vec::with_capacity(text.len());
                                console.push(&text, &mut utf8);
                                self.deliver_text(sink, Event::Console(utf8));
                            }
                        }
                    }
                    if ended {
                        let mut utf8 = Vec::new();
                        console.flush(&mut utf8);
                        self.deliver_text(sink, Event::Console(utf8));
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
    }

    fn deliver_text(&mut self, sink: &mut impl Sink, event: Event) {
        let empty = matches!(&event, Event::Console(t) | Event::Stderr(t) if t.is_empty());
        let dropped = matches!(&event, Event::Console(_)) && !self.console;
        if !empty && !dropped {
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

    fn start_sh(script: &str, stdio: StdioMode) -> (Channel, Receiver<Event>) {
        let spec = Spec {
            waiter: crate::spawn::test_waiter(),
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            stdio,
        };
        let (tx, rx) = unbounded();
        let channel = start(spawn(&spec).expect("spawn"), TestSink(tx)).expect("start");
        (channel, rx)
    }

    /// Collects events until the exit status, acknowledging data events.
    fn collect(
        channel: &Channel,
        rx: &Receiver<Event>,
    ) -> (Vec<u8>, Vec<u8>, Vec<Vec<u8>>, Option<i32>) {
        let (mut out, mut err, mut frames) = (Vec::new(), Vec::new(), Vec::new());
        loop {
            let event = rx.recv_timeout(Duration::from_secs(10)).expect("event");
            if event.is_data() {
                channel.ack(1);
            }
            match event {
                Event::Console(t) => out.extend(t),
                Event::Stderr(t) => err.extend(t),
                Event::Frame(f) => frames.push(f),
                Event::ExitStatus(status) => return (out, err, frames, status),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn echoes_frames_and_reports_text_and_status() {
        // cat echoes the encoded frames back; the shell adds text around them.
        let (channel, rx) = start_sh("echo before; cat; echo after >&2; exit 3", StdioMode::Piped);
        channel.send_vec(b"hello".to_vec()).expect("send");
        channel
            .send_vec(vec![7u8; 3 * WRITE_TEST_CHUNK])
            .expect("send");
        channel.close();
        let (out, err, frames, status) = collect(&channel, &rx);
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
    fn invalid_utf8_console_bytes_arrive_as_latin1() {
        let (channel, rx) = start_sh("printf 'caf\\303\\251 \\377\\n'", StdioMode::Piped);
        let (out, _, frames, status) = collect(&channel, &rx);
        assert_eq!(String::from_utf8(out).expect("utf8"), "café ÿ\n");
        assert!(frames.is_empty());
        assert_eq!(status, Some(0));
    }

    #[test]
    fn frame_printed_by_the_program_is_decoded() {
        let mut encoded = Vec::new();
        codec::encode_frame(b"from peer", &mut encoded);
        let octal: String = encoded.iter().map(|b| format!("\\{b:03o}")).collect();
        let (channel, rx) = start_sh(&format!("printf 'x{octal}y'"), StdioMode::Piped);
        let (out, _, frames, _) = collect(&channel, &rx);
        assert_eq!(out, b"xy");
        assert_eq!(frames, vec![b"from peer".to_vec()]);
    }

    #[test]
    fn detached_program_reports_only_its_status() {
        let (channel, rx) = start_sh("exit 5", StdioMode::Detached);
        assert_eq!(channel.send_vec(vec![1]), Err(channel::Closed));
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)).expect("event"),
            Event::ExitStatus(Some(5))
        );
    }

    #[test]
    fn flow_control_holds_events_until_acked() {
        let (channel, rx) = start_sh(
            "i=0; while [ $i -lt 200 ]; do echo line$i; sleep 0.001; i=$((i+1)); done",
            StdioMode::Piped,
        );
        std::thread::sleep(Duration::from_millis(600));
        // Without acks no more than the window of data events is delivered.
        assert!(
            rx.len() <= crate::event::DEFAULT_WINDOW,
            "{} events",
            rx.len()
        );
        let (out, _, _, status) = collect(&channel, &rx);
        let expected: String = (0..200).map(|i| format!("line{i}\n")).collect();
        assert_eq!(String::from_utf8(out).expect("utf8"), expected);
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
        let (channel, rx) = start_sh("cat >/dev/null; exit 9", StdioMode::Piped);
        channel.close();
        let (_, _, _, status) = collect(&channel, &rx);
        assert_eq!(status, Some(9));
    }
}
