//! The peer side of the tcp channel: the reading half of rpeer's agent on a peer node
//! started with `connection => Port` (or `{Ip, Port}`). The agent's own gen_tcp socket
//! connects to the origin and writes; a thread here reads the connection's frames and
//! delivers them to the agent.

use crate::channel::{Channel, ChannelShared};
use crate::event::{self, Event, Failure, Sink};
use crate::incoming::StreamDecoder;
use crate::sys;
use crate::tcp::FrameDecoder;
use crate::tuning::READ_BUFFER;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

/// The reading half of the peer node's side of the tcp channel (rpeer's agent): a
/// thread reads the frames of the connection `socket` (the descriptor of the peer's own
/// gen_tcp socket, which writes, borrowed: see [`sys::BorrowedSocket`]) and delivers
/// each to `sink` (acknowledged through the channel's window), then `Closed` when the
/// connection ends. Waiting, the thread holds no reference to the socket, so the
/// connection ends when gen_tcp's socket closes, also when the VM halts (a duplicate
/// would hold it open until the last thread of the process is gone, milliseconds later
/// for the origin). Closing the channel shuts the connection down. The peer takes any
/// frame the origin sends: the origin's limit is on what it reads.
pub fn attach_reader(socket: RawFd, sink: impl Sink) -> io::Result<Channel> {
    let socket = sys::BorrowedSocket::new(socket)?;
    let waiting = sys::Epoll::new()?;
    waiting.add(socket.fd(), SOCKET_READY)?;
    let shared = ChannelShared::new()?;
    waiting.add(shared.closed.fd(), CHANNEL_CLOSED)?;
    let reader_shared = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("rpeer-tcp-peer".into())
        .spawn(move || {
            let mut sink = sink;
            event::guarded(&mut sink, |sink| {
                read_frames(socket, &waiting, &reader_shared, sink)
            });
        })?;
    Ok(Channel::new(None, shared, None))
}

/// The tokens of the peer side reader's epoll set.
const SOCKET_READY: u64 = 0;
const CHANNEL_CLOSED: u64 = 1;

/// The peer side's reader, until the connection ends. The descriptor is non-blocking
/// (gen_tcp's socket shares it): the reader reads through a pinned duplicate until
/// nothing is left, drops it, and waits in `waiting` for the socket or for the channel
/// to close. A socket its owner closed (it cannot be pinned any more) is the end.
fn read_frames(
    socket: sys::BorrowedSocket,
    waiting: &sys::Epoll,
    shared: &ChannelShared,
    sink: &mut impl Sink,
) {
    let mut decoder = FrameDecoder::new(u32::MAX as usize);
    let (mut buf, mut events) = (vec![0u8; READ_BUFFER], Vec::new());
    let mut delivering = true;
    let mut shut_down = false;
    let failed = |e: io::Error| Event::Closed(Failure::Io(sys::errno_name(&e)));
    loop {
        let ended = match socket.pin() {
            Ok(Some(pin)) => read_burst(pin, &mut decoder, &mut buf, &mut events),
            Ok(None) => {
                decoder.finish(&mut events);
                true
            }
            Err(e) => {
                events.push(failed(e));
                true
            }
        };
        for event in events.drain(..) {
            shared.deliver(&mut delivering, sink, event);
        }
        if ended {
            return;
        }
        match waiting.wait() {
            Ok(ready) if !shut_down && ready.contains(&CHANNEL_CLOSED) => {
                // Reading on finds the end of the stream.
                if let Ok(Some(pin)) = socket.pin() {
                    sys::shutdown(pin.as_raw_fd());
                }
                shut_down = true;
            }
            Ok(_) => {}
            Err(e) => {
                shared.deliver(&mut delivering, sink, failed(e));
                return;
            }
        }
    }
}

/// Reads through `pin` until the socket has nothing more now: whether the connection
/// ended. A frame's payload is read straight into it; headers and small frames through
/// the buffer.
fn read_burst(
    pin: OwnedFd,
    decoder: &mut FrameDecoder,
    buf: &mut [u8],
    events: &mut Vec<Event>,
) -> bool {
    let mut stream = std::fs::File::from(pin);
    loop {
        let read = match decoder.payload_in_progress() {
            Some((payload, len)) => {
                let want = len - payload.len();
                sys::read_into_spare(stream.as_raw_fd(), payload, want).map(|n| (n, true))
            }
            None => stream.read(buf).map(|n| (n, false)),
        };
        match read {
            Ok((0, _)) => {
                decoder.finish(events);
                return true;
            }
            Ok((n, direct)) => decoder.feed(if direct { &[] } else { &buf[..n] }, events),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) => {
                events.push(Event::Closed(Failure::Io(sys::errno_name(&e))));
                return true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::TestSink;
    use crate::tcp::listen;
    use crate::tcp::tests::{next, pattern, write_frame};
    use crossbeam_channel::{unbounded, Receiver};
    use std::net::TcpStream;
    use std::time::Duration;

    fn attached_reader() -> (TcpStream, TcpStream, Channel, Receiver<Event>) {
        let (listener, port) = listen("127.0.0.1:0".parse().expect("addr")).expect("listen");
        let peer_end = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (origin_end, _) = listener.accept().expect("accept");
        peer_end.set_nonblocking(true).expect("nonblocking");
        let (tx, rx) = unbounded();
        let channel = attach_reader(peer_end.as_raw_fd(), TestSink(tx)).expect("attach");
        (origin_end, peer_end, channel, rx)
    }

    #[test]
    fn the_peer_side_reader_delivers_frames_of_any_size_then_the_end() {
        let (mut origin_end, peer_end, channel, rx) = attached_reader();
        let large = pattern(3 * READ_BUFFER + 17, 5);
        let writer = std::thread::spawn(move || {
            write_frame(&mut origin_end, b"small");
            write_frame(&mut origin_end, &large);
            write_frame(&mut origin_end, b"");
            (origin_end, large)
        });
        assert_eq!(next(&rx), Event::Frame(b"small".to_vec()));
        channel.ack(1);
        let (origin_end, large) = writer.join().expect("writer");
        assert_eq!(next(&rx), Event::Frame(large));
        channel.ack(1);
        assert_eq!(next(&rx), Event::Frame(Vec::new()));
        channel.ack(1);
        drop(origin_end);
        assert_eq!(next(&rx), Event::Closed(Failure::Eof));
        drop(peer_end);
    }

    #[test]
    fn closing_the_peer_side_reader_shuts_the_connection_down() {
        let (mut origin_end, _peer_end, channel, rx) = attached_reader();
        channel.close();
        origin_end
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut rest = Vec::new();
        origin_end.read_to_end(&mut rest).expect("read to the end");
        assert!(rest.is_empty());
        assert_eq!(next(&rx), Event::Closed(Failure::Eof));
    }

    #[test]
    fn the_connection_ends_when_its_owner_closes_the_socket_the_reader_waits_on() {
        let (mut origin_end, peer_end, _channel, _events) = attached_reader();
        // Let the reader go to wait, then close gen_tcp's descriptor, as a halting VM
        // does: the origin sees the end at once, with no duplicate keeping it open.
        std::thread::sleep(Duration::from_millis(50));
        drop(peer_end);
        origin_end
            .set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        let mut rest = Vec::new();
        origin_end
            .read_to_end(&mut rest)
            .expect("the end, within a second");
        assert!(rest.is_empty());
    }
}
