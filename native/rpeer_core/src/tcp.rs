//! The tcp channel: the origin listens, the peer connects back (`-origin Ips Port`), and
//! frames travel with a 4-byte big-endian length prefix (gen_tcp's `{packet, 4}`).
//!
//! One thread accepts (within the accept timeout) and then reads frames; a writer thread
//! starts once the connection is there. Frames sent before that wait in the queue.
//!
//! When the channel verifies its peer, a connection is taken only when it comes from a
//! process of the peer's process group (see `owner`); any other connection is closed
//! without a byte read from it, reported as `Rejected`, and accepting goes on until
//! the accept timeout.

use crate::channel::{self, Channel, Framing, Shared};
use crate::event::{self, Event, Failure, Sink};
use crate::spawn::ProcessId;
use crate::sys::{self, Interest};
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

/// Bytes read from the socket at a time: small frames come in one read with their header.
const READ_BUFFER: usize = 64 * 1024;

/// Largest frame payload accepted from the peer.
pub const DEFAULT_MAX_FRAME: usize = crate::codec::DEFAULT_MAX_FRAME;
const HEADER_LEN: usize = 4;

/// Binds a listening socket (SO_REUSEADDR, as peer's listen) and returns it with the
/// port it got (useful with port 0).
pub fn listen(addr: SocketAddr) -> io::Result<(TcpListener, u16)> {
    let listener = TcpListener::bind(addr)?;
    let port = listener.local_addr()?.port();
    Ok((listener, port))
}

/// Bounds of a tcp channel.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long to wait for the peer to connect.
    pub accept_timeout: Duration,
    /// Largest frame payload accepted from the peer.
    pub max_frame: usize,
    /// How long the peer's host may leave data or keepalive probes unanswered before the
    /// connection is taken as closed (a link that died silently); `None`: never.
    pub dead_link: Option<Duration>,
}

/// Starts accepting the peer's connection; events go to `sink`: `Accepted` then frames
/// and finally `Closed`, or `AcceptFailed`.
pub fn start(
    listener: TcpListener,
    limits: Limits,
    verify_peer: bool,
    sink: impl Sink,
) -> io::Result<Channel> {
    let shared = Shared::new()?;
    let (queue, frames) = channel::queue();
    let thread_shared = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("rpeer-tcp".into())
        .spawn(move || {
            let mut sink = sink;
            event::guarded(&mut sink, |sink| {
                let mut conn = Connection {
                    shared: thread_shared,
                    sink,
                };
                let stream = match conn.accept(&listener, limits.accept_timeout, verify_peer) {
                    Ok(stream) => stream,
                    Err(failure) => {
                        conn.report(Event::AcceptFailed(failure));
                        return;
                    }
                };
                drop(listener);
                let ready = limits
                    .dead_link
                    .map_or(Ok(()), |t| sys::detect_dead_link(stream.as_raw_fd(), t))
                    .and_then(|()| conn.start_writer(&stream, frames));
                let failure = match ready {
                    Ok(()) => {
                        conn.report(Event::Accepted);
                        conn.read_frames(stream, limits.max_frame)
                    }
                    Err(e) => Failure::Io(sys::errno_name(&e)),
                };
                conn.report(Event::Closed(failure));
            });
        })?;
    Ok(Channel::new(Some(queue), shared, None))
}

struct Connection<'s, S: Sink> {
    shared: Arc<Shared>,
    sink: &'s mut S,
}

impl<S: Sink> Connection<'_, S> {
    fn accept(
        &mut self,
        listener: &TcpListener,
        timeout: Duration,
        verify_peer: bool,
    ) -> Result<TcpStream, Failure> {
        let io_failure = |e: io::Error| Failure::Io(sys::errno_name(&e));
        listener.set_nonblocking(true).map_err(io_failure)?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let ready = sys::poll(
                &[
                    (listener.as_raw_fd(), Interest::Read),
                    (self.shared.closed.fd(), Interest::Read),
                ],
                Some(left),
            )
            .map_err(io_failure)?;
            if ready[1].readable {
                return Err(Failure::Eof);
            }
            if !ready[0].readable {
                if left.is_zero() {
                    return Err(Failure::Timeout);
                }
                continue;
            }
            match listener.accept() {
                Ok((stream, remote)) => {
                    if verify_peer && !self.is_the_peer(&stream, remote) {
                        self.report(Event::Rejected(remote.to_string()));
                        continue;
                    }
                    stream.set_nonblocking(false).map_err(io_failure)?;
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                // ECONNABORTED and friends: the next connection may be fine.
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(io_failure(e)),
            }
        }
    }

    fn is_the_peer(&self, stream: &TcpStream, remote: SocketAddr) -> bool {
        let group = self
            .shared
            .peer_group
            .lock()
            .as_ref()
            .and_then(ProcessId::get);
        group.is_some_and(|group| {
            stream
                .local_addr()
                .is_ok_and(|local| crate::owner::connection_from_group(local, remote, group))
        })
    }

    fn start_writer(&self, stream: &TcpStream, frames: channel::Frames) -> io::Result<()> {
        let writer = OwnedFd::from(stream.try_clone()?);
        channel::spawn_writer(
            writer,
            frames,
            Framing::LengthPrefixed,
            Arc::clone(&self.shared),
        )
    }

    /// Reads frames until the connection ends (the socket is blocking; an abort shuts
    /// it down from the writer's side).
    fn read_frames(&mut self, stream: TcpStream, max_frame: usize) -> Failure {
        let mut reader = io::BufReader::with_capacity(READ_BUFFER, &stream);
        loop {
            let mut header = [0u8; HEADER_LEN];
            if let Err(e) = reader.read_exact(&mut header) {
                return failure_of(e);
            }
            let len = u32::from_be_bytes(header) as usize;
            if len > max_frame {
                // SAFETY: shutdown() of the socket this thread reads; the writer's clone
                // sees the same end.
                unsafe {
                    libc::shutdown(stream.as_raw_fd(), libc::SHUT_RDWR);
                }
                return Failure::FrameTooLarge(len);
            }
            let Some(mut payload) = self.sink.payload(len) else {
                return Failure::Io("enomem".into());
            };
            if let Err(e) = reader.read_exact(&mut payload) {
                return failure_of(e);
            }
            if !self.shared.flow.acquire() || !self.sink.deliver_payload(payload) {
                return Failure::Eof;
            }
        }
    }

    fn report(&mut self, event: Event) {
        if !self.shared.is_aborted() {
            self.sink.deliver(event);
        }
    }
}

fn failure_of(e: io::Error) -> Failure {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        Failure::Eof
    } else {
        Failure::Io(sys::errno_name(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::TestSink;
    use crossbeam_channel::{unbounded, Receiver};
    use std::io::Write;

    fn loopback_channel(timeout: Duration, max_frame: usize) -> (Channel, Receiver<Event>, u16) {
        verified_channel(timeout, max_frame, false)
    }

    fn verified_channel(
        accept_timeout: Duration,
        max_frame: usize,
        verify: bool,
    ) -> (Channel, Receiver<Event>, u16) {
        let limits = Limits {
            accept_timeout,
            max_frame,
            dead_link: Some(Duration::from_secs(8)),
        };
        let (listener, port) = listen("127.0.0.1:0".parse().expect("addr")).expect("listen");
        let (tx, rx) = unbounded();
        let channel = start(listener, limits, verify, TestSink(tx)).expect("start");
        (channel, rx, port)
    }

    fn next(rx: &Receiver<Event>) -> Event {
        rx.recv_timeout(Duration::from_secs(10)).expect("event")
    }

    #[test]
    fn frames_travel_both_ways_with_length_prefix() {
        let (channel, rx, port) = loopback_channel(Duration::from_secs(10), DEFAULT_MAX_FRAME);
        channel
            .send_vec(b"queued before accept".to_vec())
            .expect("send");
        let mut peer = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        assert_eq!(next(&rx), Event::Accepted);
        let mut got = [0u8; 4 + 20];
        peer.read_exact(&mut got).expect("read");
        assert_eq!(&got[..4], &20u32.to_be_bytes());
        assert_eq!(&got[4..], b"queued before accept");
        peer.write_all(&[0, 0, 0, 3, b'a', b'b', b'c'])
            .expect("write");
        assert_eq!(next(&rx), Event::Frame(b"abc".to_vec()));
        channel.ack(1);
        drop(peer);
        assert_eq!(next(&rx), Event::Closed(Failure::Eof));
    }

    #[test]
    fn a_large_frame_and_the_small_one_behind_it_arrive_whole() {
        let (channel, rx, port) = loopback_channel(Duration::from_secs(10), DEFAULT_MAX_FRAME);
        let mut peer = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        assert_eq!(next(&rx), Event::Accepted);
        // The large payload is received partly from the read buffer (with its header)
        // and the rest straight into the sink's memory.
        let big: Vec<u8> = (0..3 * 1024 * 1024 + 7).map(|i| (i % 251) as u8).collect();
        let mut wire = (big.len() as u32).to_be_bytes().to_vec();
        wire.extend_from_slice(&big);
        wire.extend_from_slice(&[0, 0, 0, 2, b'o', b'k']);
        let writer = std::thread::spawn(move || peer.write_all(&wire).map(|()| peer));
        assert!(next(&rx) == Event::Frame(big), "large frame garbled");
        assert_eq!(next(&rx), Event::Frame(b"ok".to_vec()));
        channel.ack(2);
        drop(writer.join().expect("writer").expect("write"));
        assert_eq!(next(&rx), Event::Closed(Failure::Eof));
    }

    #[test]
    fn large_frames_written_partly_by_the_caller_arrive_whole_and_in_order() {
        let (channel, rx, port) = loopback_channel(Duration::from_secs(10), DEFAULT_MAX_FRAME);
        let mut peer = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        assert_eq!(next(&rx), Event::Accepted);
        // The peer reads nothing yet: the socket takes part of the first frames, the
        // rest waits for the writer thread, behind which later frames queue.
        let frames: Vec<Vec<u8>> = (0..12u8)
            .map(|i| {
                vec![
                    i;
                    if i % 3 == 0 {
                        1024 * 1024
                    } else {
                        300 * 1024 + i as usize
                    }
                ]
            })
            .collect();
        for frame in &frames {
            channel.send_vec(frame.clone()).expect("send");
        }
        for frame in &frames {
            let mut header = [0u8; 4];
            peer.read_exact(&mut header).expect("header");
            assert_eq!(u32::from_be_bytes(header) as usize, frame.len());
            let mut payload = vec![0u8; frame.len()];
            peer.read_exact(&mut payload).expect("payload");
            assert!(payload == *frame, "frame of {} bytes garbled", frame.len());
        }
    }

    #[test]
    fn accept_times_out() {
        let (_channel, rx, _port) = loopback_channel(Duration::from_millis(50), DEFAULT_MAX_FRAME);
        assert_eq!(next(&rx), Event::AcceptFailed(Failure::Timeout));
    }

    #[test]
    fn oversized_declared_frame_closes_the_channel() {
        let (_channel, rx, port) = loopback_channel(Duration::from_secs(10), 16);
        let mut peer = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        assert_eq!(next(&rx), Event::Accepted);
        peer.write_all(&1000u32.to_be_bytes()).expect("write");
        assert_eq!(next(&rx), Event::Closed(Failure::FrameTooLarge(1000)));
        let mut rest = Vec::new();
        assert_eq!(
            peer.read_to_end(&mut rest).map(|_| rest.len()).unwrap_or(0),
            0
        );
    }

    #[test]
    fn close_ends_the_connection_for_the_peer() {
        let (channel, rx, port) = loopback_channel(Duration::from_secs(10), DEFAULT_MAX_FRAME);
        let mut peer = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        assert_eq!(next(&rx), Event::Accepted);
        channel.send_vec(b"last".to_vec()).expect("send");
        channel.close();
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).expect("read");
        assert_eq!(rest, [&4u32.to_be_bytes()[..], b"last"].concat());
    }

    #[test]
    fn connection_from_another_group_is_rejected_unread() {
        let (channel, rx, port) =
            verified_channel(Duration::from_secs(10), DEFAULT_MAX_FRAME, true);
        // The connecting socket is this test process's; expect some other group.
        channel.expect_peer(ProcessId::from(u32::MAX - 1));
        let mut intruder = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let _ = intruder.write_all(&[0, 0, 0, 1, b'x']);
        assert!(matches!(next(&rx), Event::Rejected(addr) if addr.starts_with("127.0.0.1:")));
        let mut rest = Vec::new();
        assert_eq!(
            intruder
                .read_to_end(&mut rest)
                .map(|_| rest.len())
                .unwrap_or(0),
            0
        );
        // SAFETY: getpgrp() only returns this process's group id.
        channel.expect_peer(ProcessId::from(unsafe { libc::getpgrp() } as u32));
        let _peer = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        assert_eq!(next(&rx), Event::Accepted);
    }

    #[test]
    fn address_in_use_is_reported() {
        let (_first, port) = listen("127.0.0.1:0".parse().expect("addr")).expect("listen");
        let err = listen(SocketAddr::from(([127, 0, 0, 1], port))).expect_err("in use");
        assert_eq!(sys::errno_name(&err), "eaddrinuse");
    }
}
