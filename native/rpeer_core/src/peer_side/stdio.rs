//! The peer side of the standard_io channel: frames come in on the node's stdin and go
//! out on its stdout, nibble-encoded as the origin's are.

use crate::channel::{self, Channel, ChannelShared, Framing};
use crate::codec::{Decoded, Decoder};
use crate::event::{self, Event, Failure, Sink};
use crate::incoming::Stream;
use crate::sys::{self, Interest};
use crate::tuning::READ_BUFFER;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

/// Attaches the peer node's side: frames are read from `input` (the node's stdin) and
/// written to `output` (its stdout). Ends with `Closed(Eof)` when the input ends. Only
/// frames are delivered: the origin writes nothing else, so other bytes on stdin are
/// noise.
pub fn attach(input: OwnedFd, output: OwnedFd, sink: impl Sink) -> io::Result<Channel> {
    let shared = ChannelShared::new()?;
    let (queue, frames) = channel::queue();
    channel::spawn_writer(output, frames, Framing::Nibbles, Arc::clone(&shared))?;
    let input = Stream::new(input)?;
    let reader_shared = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("rpeer-stdio".into())
        .spawn(move || {
            let mut sink = sink;
            event::guarded(&mut sink, |sink| read_frames(input, &reader_shared, sink));
        })?;
    Ok(Channel::new(Some(queue), shared, None))
}

/// Reads the frames of `input` until it ends, then delivers `Closed(Eof)`. Once the
/// owner is gone the input is still read to its end (so the origin's writes never
/// block), but nothing is delivered.
fn read_frames(mut input: Stream, shared: &ChannelShared, sink: &mut impl Sink) {
    // stdin carries only the origin's frames, which the origin checked against its
    // limit: any size the wire can say is taken.
    let mut decoder = Decoder::with_max_frame(u32::MAX as usize);
    let (mut decoded, mut buf) = (Vec::new(), vec![0u8; READ_BUFFER]);
    let mut delivering = true;
    while input.open {
        let Ok(ready) = sys::poll(&[(input.file.as_raw_fd(), Interest::Read)], None) else {
            break;
        };
        if !ready.first().is_some_and(|r| r.readable) {
            continue;
        }
        let Some(bytes) = input.read(&mut buf) else {
            continue;
        };
        if bytes.is_empty() {
            decoder.finish(&mut decoded);
        } else {
            decoder.feed(bytes, &mut decoded);
        }
        for found in decoded.drain(..) {
            // Console text on stdin is noise (see `attach`).
            if let Decoded::Frame(payload) = found {
                shared.deliver(&mut delivering, sink, Event::Frame(payload));
            }
        }
    }
    if delivering && !shared.is_aborted() {
        sink.deliver(Event::Closed(Failure::Eof));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::event::TestSink;
    use crossbeam_channel::unbounded;
    use std::fs::File;
    use std::io::Read;
    use std::time::Duration;

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
}
