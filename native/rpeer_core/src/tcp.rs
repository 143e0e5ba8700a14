//! The tcp channel: the origin listens, the peer connects back (`-origin Ips Port`), and
//! frames travel with a 4-byte big-endian length prefix (gen_tcp's `{packet, 4}`).
//!
//! One thread accepts (within the accept timeout); a writer thread starts once the
//! connection is there. Frames sent before that wait in the queue. The owner reads the
//! connection through a port, an [`Incoming`] stream: the accepting thread stays to read
//! large frames there when asked. The connection's end is the end of that stream
//! (`Closed` from [`Incoming::finish`]); a frame over the maximum ends it too.
//!
//! When the channel verifies its peer, a connection is taken only when it comes from a
//! process of the peer's process group (see `owner`); any other connection is closed
//! without a byte read from it, reported as `Rejected`, and accepting goes on until
//! the accept timeout.

use crate::channel::{self, Channel, ChannelShared, Framing};
use crate::event::{self, Event, Failure, Sink};
use crate::incoming::{Incoming, StreamDecoder, ThreadRead};
use crate::spawn::ProcessId;
use crate::sys::{self, Interest};
use crate::tuning::{READ_BUFFER, SKIPPED_HEAD};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

/// Largest frame payload accepted from the peer by default.
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

/// Starts accepting the peer's connection; events go to `sink`: `Accepted` (the
/// returned stream is there to read), `Closed` when the connection could not be set up,
/// or `AcceptFailed`; then the events of large frames read on the thread.
pub fn start(
    listener: TcpListener,
    limits: Limits,
    verify_peer: bool,
    sink: impl Sink,
) -> io::Result<(Channel, Incoming)> {
    let shared = ChannelShared::new()?;
    let (queue, frames) = channel::queue();
    let thread_shared = Arc::clone(&shared);
    let incoming = Incoming::new(Box::new(FrameDecoder::new(limits.max_frame)))?;
    let reading = incoming.thread_side();
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
                    .and_then(|()| conn.start_writer(&stream, frames))
                    .and_then(|()| stream.try_clone())
                    .and_then(|watched| {
                        reading.open(OwnedFd::from(stream))?;
                        Ok(watched)
                    });
                match ready {
                    Ok(watched) => {
                        conn.report(Event::Accepted);
                        conn.serve(reading, watched);
                    }
                    Err(e) => conn.report(Event::Closed(Failure::Io(sys::errno_name(&e)))),
                }
            });
        })?;
    Ok((Channel::new(Some(queue), shared, None), incoming))
}

struct Connection<'s, S: Sink> {
    shared: Arc<ChannelShared>,
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

    /// Reads large frames for the owner when asked, until it releases the connection.
    /// A port does not report a connection that failed (a reset, a dead link's timeout:
    /// it sees no end of file either), so the socket is watched here for an error or a
    /// hang-up (shut down both ways), reported as `Closed`; the owner may see the end
    /// twice (the port's end of file, then this).
    fn serve(self, mut reading: ThreadRead, watched: TcpStream) {
        let mut buf = vec![0u8; READ_BUFFER];
        let mut delivering = true;
        let mut deliver = |event| self.shared.deliver(&mut delivering, self.sink, event);
        let mut watched = Some(watched);
        while !reading.is_released() {
            let fd = watched.as_ref().map(AsRawFd::as_raw_fd);
            let Some(failed) = reading.poll_once(fd, &mut buf, &mut deliver) else {
                return;
            };
            if failed {
                // Shut down both ways: the error, unless the writer took it.
                let error = watched
                    .take()
                    .and_then(|s| sys::socket_error(s.as_raw_fd()));
                let failure = error.map_or(Failure::Eof, |e| Failure::Io(sys::errno_name(&e)));
                deliver(Event::Closed(failure));
            }
        }
    }

    fn report(&mut self, event: Event) {
        if !self.shared.is_aborted() {
            self.sink.deliver(event);
        }
    }
}

/// Decodes the connection's frames: a 4-byte big-endian length, then the payload. A
/// frame declared over the maximum is skipped (read and dropped as it comes, so memory
/// stays flat) and reported once, with its first bytes; the frames after it decode as
/// usual, since the length says exactly where it ends.
pub(crate) struct FrameDecoder {
    max_frame: usize,
    state: FrameState,
}

/// Where the decoder stands in the stream.
enum FrameState {
    /// Reading a frame's length; `filled` of its bytes are in `bytes`.
    Header {
        bytes: [u8; HEADER_LEN],
        filled: usize,
    },
    /// Receiving a payload of `len` bytes into `payload`.
    Payload { payload: Vec<u8>, len: usize },
    /// Dropping a payload of `len` bytes over the maximum; `left` of them still to come,
    /// the first [`SKIPPED_HEAD`] kept in `head`.
    Skipping {
        len: usize,
        left: usize,
        head: Vec<u8>,
    },
}

impl FrameState {
    fn header() -> Self {
        FrameState::Header {
            bytes: [0; HEADER_LEN],
            filled: 0,
        }
    }
}

impl FrameDecoder {
    pub(crate) fn new(max_frame: usize) -> Self {
        FrameDecoder {
            max_frame,
            state: FrameState::header(),
        }
    }

    /// The state after a complete header declaring `len` bytes. A frame over the
    /// maximum, or larger than the memory this process can get, is skipped.
    fn after_header(&self, len: usize, out: &mut Vec<Event>) -> FrameState {
        if len == 0 {
            out.push(Event::Frame(Vec::new()));
            return FrameState::header();
        }
        match (len <= self.max_frame)
            .then(|| crate::buffers::take(len))
            .flatten()
        {
            Some(payload) => FrameState::Payload { payload, len },
            None => FrameState::Skipping {
                len,
                left: len,
                head: Vec::with_capacity(len.min(SKIPPED_HEAD)),
            },
        }
    }
}

impl StreamDecoder for FrameDecoder {
    fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<Event>) {
        loop {
            // Each arm consumes what it can; a completed frame or header moves on, and an
            // empty feed still completes a payload that was filled directly.
            let next = match &mut self.state {
                FrameState::Header {
                    bytes: header,
                    filled,
                } => {
                    let take = (HEADER_LEN - *filled).min(bytes.len());
                    header[*filled..*filled + take].copy_from_slice(&bytes[..take]);
                    *filled += take;
                    bytes = &bytes[take..];
                    if *filled < HEADER_LEN {
                        return;
                    }
                    let len = u32::from_be_bytes(*header) as usize;
                    self.after_header(len, out)
                }
                FrameState::Payload { payload, len } => {
                    let take = (*len - payload.len()).min(bytes.len());
                    payload.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if payload.len() < *len {
                        return;
                    }
                    out.push(Event::Frame(std::mem::take(payload)));
                    FrameState::header()
                }
                FrameState::Skipping { len, left, head } => {
                    let take = (*left).min(bytes.len());
                    let keep = (SKIPPED_HEAD - head.len().min(SKIPPED_HEAD)).min(take);
                    head.extend_from_slice(&bytes[..keep]);
                    bytes = &bytes[take..];
                    *left -= take;
                    if *left > 0 {
                        return;
                    }
                    out.push(Event::FrameTooLarge {
                        size: *len,
                        head: std::mem::take(head),
                    });
                    FrameState::header()
                }
            };
            self.state = next;
            if bytes.is_empty() && !matches!(self.state, FrameState::Payload { .. }) {
                return;
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<Event>) {
        out.push(Event::Closed(Failure::Eof));
    }

    fn awaiting(&self) -> usize {
        match &self.state {
            FrameState::Header { filled: 0, .. } => 0,
            FrameState::Header { filled, .. } => HEADER_LEN - filled,
            FrameState::Payload { payload, len } => len - payload.len(),
            FrameState::Skipping { left, .. } => *left,
        }
    }

    fn payload_in_progress(&mut self) -> Option<(&mut Vec<u8>, usize)> {
        match &mut self.state {
            FrameState::Payload { payload, len } => Some((payload, *len)),
            _ => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::event::TestSink;
    use crate::tuning::LINGER_BELOW;
    use crossbeam_channel::{unbounded, Receiver};
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    use std::time::Instant;

    type Started = (Channel, Incoming, Receiver<Event>, u16);

    fn loopback_channel(timeout: Duration, max_frame: usize) -> Started {
        verified_channel(timeout, max_frame, false)
    }

    fn verified_channel(accept_timeout: Duration, max_frame: usize, verify: bool) -> Started {
        let limits = Limits {
            accept_timeout,
            max_frame,
            dead_link: Some(Duration::from_secs(8)),
        };
        let (listener, port) = listen("127.0.0.1:0".parse().expect("addr")).expect("listen");
        let (tx, rx) = unbounded();
        let (channel, incoming) = start(listener, limits, verify, TestSink(tx)).expect("start");
        (channel, incoming, rx, port)
    }

    /// Reads the connection as the owner's port would, until `count` events are decoded
    /// or a large frame begins (then `true`).
    fn read_like_a_port(incoming: &Incoming, count: usize, events: &mut Vec<Event>) -> bool {
        let fd = incoming.raw_fd().expect("connected");
        // SAFETY: dup() of a descriptor `incoming` keeps open; the duplicate is owned here.
        let mut port = File::from(unsafe { OwnedFd::from_raw_fd(libc::dup(fd)) });
        let mut buf = vec![0u8; 64 * 1024];
        let deadline = Instant::now() + Duration::from_secs(10);
        while events.len() < count {
            assert!(Instant::now() < deadline, "no events: {events:?}");
            match port.read(&mut buf) {
                Ok(0) => incoming.finish(events),
                Ok(n) => {
                    if incoming.decode(&buf[..n], events) {
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("read: {e}"),
            }
        }
        false
    }

    fn port_events(incoming: &Incoming, count: usize) -> Vec<Event> {
        let mut events = Vec::new();
        assert!(!read_like_a_port(incoming, count, &mut events));
        events
    }

    /// The channel's next event (the peer side's tests use these helpers too).
    pub(crate) fn next(rx: &Receiver<Event>) -> Event {
        rx.recv_timeout(Duration::from_secs(10)).expect("event")
    }

    /// Connects as the peer, once the channel accepted the connection.
    fn connect_peer(port: u16, rx: &Receiver<Event>) -> TcpStream {
        let peer = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        assert_eq!(next(rx), Event::Accepted);
        peer
    }

    /// Reads the next frame as the peer and checks it is `expected`, length prefix first.
    fn expect_frame(peer: &mut TcpStream, expected: &[u8]) {
        let mut header = [0u8; 4];
        peer.read_exact(&mut header).expect("header");
        assert_eq!(u32::from_be_bytes(header) as usize, expected.len());
        let mut payload = vec![0u8; expected.len()];
        peer.read_exact(&mut payload).expect("payload");
        assert!(
            payload == expected,
            "frame of {} bytes garbled",
            expected.len()
        );
    }

    #[test]
    fn frames_travel_both_ways_with_length_prefix() {
        let (channel, incoming, rx, port) =
            loopback_channel(Duration::from_secs(10), DEFAULT_MAX_FRAME);
        assert_eq!(incoming.raw_fd(), None);
        channel
            .send_vec(b"queued before accept".to_vec())
            .expect("send");
        let mut peer = connect_peer(port, &rx);
        let mut got = [0u8; 4 + 20];
        peer.read_exact(&mut got).expect("read");
        assert_eq!(&got[..4], &20u32.to_be_bytes());
        assert_eq!(&got[4..], b"queued before accept");
        peer.write_all(&[0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0])
            .expect("write");
        assert_eq!(
            port_events(&incoming, 2),
            [Event::Frame(b"abc".to_vec()), Event::Frame(Vec::new())]
        );
        drop(peer);
        assert_eq!(port_events(&incoming, 1), [Event::Closed(Failure::Eof)]);
        incoming.release();
    }

    /// A connection over loopback whose peer end (non-blocking, as gen_tcp's) a reader
    /// reads, borrowed: (the origin's end, the peer's end, the reader's channel, its
    /// events).
    #[test]
    fn a_large_frame_is_read_on_the_thread_then_the_port_reads_on() {
        let (channel, incoming, rx, port) =
            loopback_channel(Duration::from_secs(10), DEFAULT_MAX_FRAME);
        let mut peer = connect_peer(port, &rx);
        let big = pattern(3 * 1024 * 1024 + 7, 0);
        let payload = big.clone();
        let writer = std::thread::spawn(move || {
            write_frame(&mut peer, &payload);
            write_frame(&mut peer, b"ok");
            peer
        });
        let mut events = Vec::new();
        assert!(
            read_like_a_port(&incoming, 1, &mut events),
            "large frame not seen"
        );
        if incoming.read_now(&mut events) {
            incoming.read_on_thread();
            loop {
                match next(&rx) {
                    Event::Resume => break,
                    event => events.push(event),
                }
            }
        }
        let frames = events
            .iter()
            .filter(|e| matches!(e, Event::Frame(_)))
            .count();
        events.extend(port_events(&incoming, 2 - frames));
        assert!(events[0] == Event::Frame(big), "large frame garbled");
        assert_eq!(events[1], Event::Frame(b"ok".to_vec()));
        channel.ack(frames);
        drop(writer.join().expect("writer"));
        assert_eq!(port_events(&incoming, 1), [Event::Closed(Failure::Eof)]);
    }

    /// Writes `payload` as one frame, as the peer.
    pub(crate) fn write_frame(peer: &mut TcpStream, payload: &[u8]) {
        peer.write_all(&(payload.len() as u32).to_be_bytes())
            .and_then(|()| peer.write_all(payload))
            .expect("write");
    }

    /// `len` bytes that differ from position to position (and with `seed`).
    pub(crate) fn pattern(len: usize, seed: usize) -> Vec<u8> {
        (0..len).map(|i| ((i + seed) % 251) as u8).collect()
    }

    /// As the owner: a port sees `payload`'s frame begin, then the stream is read at
    /// once and, if it reads on, by the thread until the frame is in. Returns the events
    /// and whether the thread reads on.
    fn large_frame_through_read_now(
        incoming: &Incoming,
        rx: &Receiver<Event>,
        payload: &[u8],
    ) -> (Vec<Event>, bool) {
        let mut events = Vec::new();
        assert!(
            read_like_a_port(incoming, 1, &mut events),
            "large frame not seen"
        );
        let thread_reads_on = incoming.read_now(&mut events);
        if thread_reads_on {
            incoming.read_on_thread();
        }
        while !events
            .iter()
            .any(|e| matches!(e, Event::Frame(f) if f == payload))
        {
            assert!(thread_reads_on, "frame unfinished, yet a port reads on");
            events.push(next(rx));
        }
        (events, thread_reads_on)
    }

    #[test]
    fn the_thread_reads_on_while_frames_are_large_then_hands_the_stream_back() {
        let (channel, incoming, rx, port) =
            loopback_channel(Duration::from_secs(10), DEFAULT_MAX_FRAME);
        let mut peer = connect_peer(port, &rx);
        let (first, second) = (pattern(1024 * 1024, 1), pattern(1024 * 1024, 2));
        write_frame(&mut peer, &first);
        let (events, thread_reads_on) = large_frame_through_read_now(&incoming, &rx, &first);
        assert!(thread_reads_on, "a port reads on after a 1 MiB frame");
        assert!(
            !events.contains(&Event::Resume),
            "handed back after a 1 MiB frame"
        );
        // A later large frame: still the thread's, no port in between.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(rx.try_recv().ok(), None, "the thread let go of the stream");
        write_frame(&mut peer, &second);
        assert!(
            next(&rx) == Event::Frame(second),
            "second large frame garbled"
        );
        // A small one: delivered, then the stream is the port's again.
        write_frame(&mut peer, b"small");
        assert_eq!(next(&rx), Event::Frame(b"small".to_vec()));
        assert_eq!(next(&rx), Event::Resume);
        channel.ack(3);
        write_frame(&mut peer, b"port");
        assert_eq!(port_events(&incoming, 1), [Event::Frame(b"port".to_vec())]);
    }

    #[test]
    fn after_a_very_large_frame_a_port_reads_on() {
        let (_channel, incoming, rx, port) =
            loopback_channel(Duration::from_secs(10), DEFAULT_MAX_FRAME);
        let mut peer = connect_peer(port, &rx);
        let big = pattern(LINGER_BELOW, 3);
        let mut writing = peer.try_clone().expect("clone");
        let payload = big.clone();
        let writer = std::thread::spawn(move || write_frame(&mut writing, &payload));
        let (mut events, thread_reads_on) = large_frame_through_read_now(&incoming, &rx, &big);
        writer.join().expect("writer");
        while thread_reads_on && events.last() != Some(&Event::Resume) {
            events.push(next(&rx));
        }
        write_frame(&mut peer, b"port");
        assert_eq!(port_events(&incoming, 1), [Event::Frame(b"port".to_vec())]);
    }

    #[test]
    fn large_frames_written_partly_by_the_caller_arrive_whole_and_in_order() {
        let (channel, _incoming, rx, port) =
            loopback_channel(Duration::from_secs(10), DEFAULT_MAX_FRAME);
        let mut peer = connect_peer(port, &rx);
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
            expect_frame(&mut peer, frame);
        }
    }

    #[test]
    fn payloads_sent_as_parts_arrive_whole_with_their_length() {
        let (channel, _incoming, rx, port) =
            loopback_channel(Duration::from_secs(10), DEFAULT_MAX_FRAME);
        let mut peer = connect_peer(port, &rx);
        let payloads = crate::channel::tests::parted_payloads();
        for (parts, _) in &payloads {
            crate::channel::tests::send_parts(&channel, parts.clone()).expect("send");
        }
        for (_, whole) in &payloads {
            expect_frame(&mut peer, whole);
        }
    }

    #[test]
    fn a_reset_connection_is_reported_as_closed() {
        let (_channel, incoming, rx, port) =
            loopback_channel(Duration::from_secs(10), DEFAULT_MAX_FRAME);
        let peer = connect_peer(port, &rx);
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt reads exactly size_of::<linger>() bytes from a live local.
        let rc = unsafe {
            libc::setsockopt(
                peer.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        // Closed with linger 0: a reset, which a port reading the socket never reports.
        drop(peer);
        assert_eq!(next(&rx), Event::Closed(Failure::Io("econnreset".into())));
        incoming.release();
    }

    #[test]
    fn accept_times_out() {
        let (_channel, _incoming, rx, _port) =
            loopback_channel(Duration::from_millis(50), DEFAULT_MAX_FRAME);
        assert_eq!(next(&rx), Event::AcceptFailed(Failure::Timeout));
    }

    #[test]
    fn a_frame_over_the_maximum_is_skipped_and_the_next_one_arrives() {
        let (channel, incoming, rx, port) = loopback_channel(Duration::from_secs(10), 16);
        let mut peer = connect_peer(port, &rx);
        let oversized = vec![b'o'; 1000];
        peer.write_all(&1000u32.to_be_bytes()).expect("write");
        peer.write_all(&oversized).expect("write");
        peer.write_all(&[0, 0, 0, 2, b'o', b'k']).expect("write");
        assert_eq!(
            port_events(&incoming, 2),
            [
                Event::FrameTooLarge {
                    size: 1000,
                    head: oversized[..SKIPPED_HEAD].to_vec()
                },
                Event::Frame(b"ok".to_vec())
            ]
        );
        channel.close();
        incoming.release();
    }

    #[test]
    fn close_ends_the_connection_for_the_peer() {
        let (channel, _incoming, rx, port) =
            loopback_channel(Duration::from_secs(10), DEFAULT_MAX_FRAME);
        let mut peer = connect_peer(port, &rx);
        channel.send_vec(b"last".to_vec()).expect("send");
        channel.close();
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).expect("read");
        assert_eq!(rest, [&4u32.to_be_bytes()[..], b"last"].concat());
    }

    #[test]
    fn connection_from_another_group_is_rejected_unread() {
        let (channel, _incoming, rx, port) =
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
        let _peer = connect_peer(port, &rx);
    }

    #[test]
    fn frames_split_anywhere_are_decoded_whole() {
        let mut wire = Vec::new();
        let frames: Vec<Vec<u8>> = vec![b"one".to_vec(), Vec::new(), vec![7; 1000], b"x".to_vec()];
        for frame in &frames {
            wire.extend_from_slice(&(frame.len() as u32).to_be_bytes());
            wire.extend_from_slice(frame);
        }
        for split in 1..wire.len() {
            let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
            let mut events = Vec::new();
            decoder.feed(&wire[..split], &mut events);
            decoder.feed(&wire[split..], &mut events);
            assert_eq!(decoder.awaiting(), 0);
            decoder.finish(&mut events);
            let expected: Vec<Event> = frames
                .iter()
                .cloned()
                .map(Event::Frame)
                .chain([Event::Closed(Failure::Eof)])
                .collect();
            assert_eq!(events, expected, "split at {split}");
        }
    }

    #[test]
    fn awaiting_counts_what_the_frame_still_misses() {
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let mut events = Vec::new();
        decoder.feed(&[0, 0], &mut events);
        assert_eq!(decoder.awaiting(), 2);
        decoder.feed(&[4, 0, b'a'], &mut events);
        assert_eq!(decoder.awaiting(), 1024 - 1);
        assert!(events.is_empty());
    }

    #[test]
    fn a_payload_filled_directly_completes_on_an_empty_feed() {
        let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let mut events = Vec::new();
        decoder.feed(&[0, 0, 0, 5, b'a'], &mut events);
        let (payload, len) = decoder.payload_in_progress().expect("payload");
        assert_eq!(len, 5);
        payload.extend_from_slice(b"bcd");
        decoder.feed(&[], &mut events);
        assert!(events.is_empty());
        assert_eq!(decoder.awaiting(), 1);
        decoder.payload_in_progress().expect("payload").0.push(b'e');
        decoder.feed(&[], &mut events);
        assert_eq!(events, [Event::Frame(b"abcde".to_vec())]);
        assert!(decoder.payload_in_progress().is_none());
    }

    #[test]
    fn a_frame_too_large_is_skipped_and_reported_with_its_head() {
        let mut wire = vec![0, 0, 0, 4, 1, 2, 3, 4, 0, 0, 0, 1, 9];
        let big: Vec<u8> = (0..200u8).collect();
        wire.extend_from_slice(&(big.len() as u32).to_be_bytes());
        wire.extend_from_slice(&big);
        wire.extend_from_slice(&[0, 0, 0, 2, 7, 8]);
        for split in 1..wire.len() {
            let mut decoder = FrameDecoder::new(3);
            let mut events = Vec::new();
            decoder.feed(&wire[..split], &mut events);
            decoder.feed(&wire[split..], &mut events);
            assert_eq!(decoder.awaiting(), 0, "split at {split}");
            decoder.finish(&mut events);
            let expected = [
                Event::FrameTooLarge {
                    size: 4,
                    head: vec![1, 2, 3, 4],
                },
                Event::Frame(vec![9]),
                Event::FrameTooLarge {
                    size: 200,
                    head: big[..SKIPPED_HEAD].to_vec(),
                },
                Event::Frame(vec![7, 8]),
                Event::Closed(Failure::Eof),
            ];
            assert_eq!(events, expected, "split at {split}");
        }
    }

    #[test]
    fn a_skipped_frame_awaits_what_is_left_of_it() {
        let mut decoder = FrameDecoder::new(3);
        let mut events = Vec::new();
        decoder.feed(&[0, 0, 1, 0, 5, 5], &mut events);
        assert_eq!(decoder.awaiting(), 256 - 2);
        assert!(decoder.payload_in_progress().is_none());
        assert!(events.is_empty());
    }

    #[test]
    fn address_in_use_is_reported() {
        let (_first, port) = listen("127.0.0.1:0".parse().expect("addr")).expect("listen");
        let err = listen(SocketAddr::from(([127, 0, 0, 1], port))).expect_err("in use");
        assert_eq!(sys::errno_name(&err), "eaddrinuse");
    }
}
