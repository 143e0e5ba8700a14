//! The connection abstraction: one [`Channel`] for the standard_io and the tcp
//! alternative alike. Frames go out through the channel's outgoing descriptor, owned by
//! a writer thread; events come in from a reader thread (see `stdio` and `tcp`).
//!
//! Sending never blocks the caller. When nothing is queued before it, the caller writes
//! what the descriptor takes now of a small frame (this saves a thread wake-up per call,
//! which is most of a small call's latency), or of a larger one's start, whose first
//! bytes then reach the peer while the writer thread wakes up; the rest goes to the
//! writer thread, which waits for the peer to read.
//!
//! Closing is graceful: the writer thread writes every frame already queued (as fast as
//! the peer reads them), then closes the descriptor and the peer sees end of file; with
//! nothing queued, the closing caller closes it at once.
//! Aborting (the owner died) drops the queue at once.

use crate::codec::{self, FrameEncoder};
use crate::event::{Event, Flow, Sink};
use crate::spawn::ProcessId;
use crate::sys::{self, Interest, Waker};
use crate::tuning::{DEFAULT_WINDOW, INLINE_MAX, INLINE_PREFIXED_MAX, WRITE_CHUNK};
use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Parts one write takes at most (Linux's IOV_MAX); the rest goes with the next write.
const MAX_IOVECS: usize = 1024;

/// A frame's payload as its parts, in order: the binaries of an Erlang iovec
/// (`term_to_iovec/1` leaves a large binary of the term as a part of its own, uncopied).
pub type Parts<'a> = &'a [&'a [u8]];

/// A frame payload to send. Implemented by the NIF for Erlang binaries it keeps alive
/// without copying them, and by `Vec<u8>`.
pub trait Outgoing: Send {
    fn len(&self) -> usize;
    /// Calls `f` with the payload's parts.
    fn with_parts(&self, f: &mut dyn FnMut(Parts) -> io::Result<()>) -> io::Result<()>;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Outgoing for Vec<u8> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn with_parts(&self, f: &mut dyn FnMut(Parts) -> io::Result<()>) -> io::Result<()> {
        f(&[self])
    }
}

/// The payload's length.
pub fn parts_len(parts: Parts) -> usize {
    parts.iter().map(|part| part.len()).sum()
}

/// The payload's bytes from `from` to `to`, as slices of its parts (none empty).
fn slices<'a>(parts: Parts<'a>, from: usize, to: usize) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut start = 0;
    parts.iter().filter_map(move |part| {
        let (part_start, part_end) = (start, start + part.len());
        start = part_end;
        let (lo, hi) = (from.max(part_start), to.min(part_end));
        (lo < hi).then(|| &part[lo - part_start..hi - part_start])
    })
}

/// How frames are laid out on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// peer's standard_io encoding: every byte as two `11xxxx11` bytes, with size and CRC.
    Nibbles,
    /// peer's tcp encoding (`{packet, 4}`): a 4-byte big-endian length, then the payload.
    LengthPrefixed,
}

/// The channel's send side failed: it is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendClosed;

/// What the writer thread writes, in order: whole frames, or the rest of frames whose
/// start the sending caller wrote itself (see [`Channel::send`]).
pub(crate) enum WriteItem {
    /// A whole frame, nothing of it written yet (either framing).
    Frame(Box<dyn Outgoing>),
    /// The encoded bytes of a small nibble-encoded frame that the caller wrote only in
    /// part.
    EncodedRest(Vec<u8>),
    /// A length-prefixed frame of which the caller wrote the first `sent` bytes (the
    /// prefix included).
    PrefixedRest {
        frame: Box<dyn Outgoing>,
        sent: usize,
    },
    /// A larger nibble-encoded frame whose start the caller encoded (and wrote in part).
    NibblesStarted {
        frame: Box<dyn Outgoing>,
        start: NibblesStart,
    },
}

/// How far a nibble-encoded frame got: the encoder after the first `consumed` bytes of
/// payload, and the encoded bytes not written yet.
pub(crate) struct NibblesStart {
    encoder: FrameEncoder,
    consumed: usize,
    unwritten: Vec<u8>,
}

/// State shared by a channel's handle and its threads.
pub(crate) struct ChannelShared {
    pub(crate) flow: Flow,
    /// Woken by close(): a channel still waiting for its tcp peer stops listening.
    pub(crate) closed: Waker,
    /// Woken by abort(): threads blocked on the peer give up.
    pub(crate) aborted: Waker,
    aborted_flag: AtomicBool,
    /// The outgoing side, once there is one. Held by whoever is writing.
    out: Mutex<Option<Out>>,
    /// Items queued for the writer thread and not yet completely written.
    queued: AtomicUsize,
    /// tcp: the process group the peer's connection must come from.
    pub(crate) peer_group: Mutex<Option<ProcessId>>,
}

impl ChannelShared {
    pub(crate) fn new() -> io::Result<Arc<Self>> {
        Ok(Arc::new(ChannelShared {
            flow: Flow::new(DEFAULT_WINDOW),
            closed: Waker::new()?,
            aborted: Waker::new()?,
            aborted_flag: AtomicBool::new(false),
            out: Mutex::new(None),
            queued: AtomicUsize::new(0),
            peer_group: Mutex::new(None),
        }))
    }

    pub(crate) fn is_aborted(&self) -> bool {
        self.aborted_flag.load(Ordering::Acquire)
    }

    /// Delivers an event of a channel thread while the owner is there (`delivering`),
    /// data events with flow control.
    pub(crate) fn deliver(&self, delivering: &mut bool, sink: &mut impl Sink, event: Event) {
        if !*delivering {
            return;
        }
        if (event.is_data() && !self.flow.acquire()) || !sink.deliver(event) {
            // The owner is gone; the thread goes on reading so the peer never blocks.
            *delivering = false;
        }
    }
}

pub(crate) type Queue = Sender<WriteItem>;

/// The receiving end of a channel's queue, handed to its writer thread.
pub(crate) struct Frames(Receiver<WriteItem>);

/// The origin's handle on one peer channel.
pub struct Channel {
    queue: Mutex<Option<Queue>>,
    shared: Arc<ChannelShared>,
    /// The spawned program's process group, when this channel spawned it.
    pid: Option<ProcessId>,
}

impl Channel {
    pub(crate) fn new(
        queue: Option<Queue>,
        shared: Arc<ChannelShared>,
        pid: Option<ProcessId>,
    ) -> Self {
        Channel {
            queue: Mutex::new(queue),
            shared,
            pid,
        }
    }

    /// Sends a frame whose payload is `payload`; never blocks. `keep` gives the payload
    /// to hold on to, and is called only when the frame (or its unwritten rest) must
    /// wait for the writer thread: a small frame written at once costs no copy.
    pub fn send(
        &self,
        payload: Parts,
        keep: impl FnOnce() -> Box<dyn Outgoing>,
    ) -> Result<(), SendClosed> {
        let len = parts_len(payload);
        let queue = self.queue.lock();
        let Some(queue) = &*queue else {
            return Err(SendClosed);
        };
        // Written here only when nothing queued is pending before it (the writer thread
        // lowers `queued` under the same lock, once an item is fully written).
        if let Some(mut out) = self.shared.out.try_lock() {
            if let (0, Some(out)) = (self.shared.queued.load(Ordering::Acquire), out.as_mut()) {
                match out.framing {
                    Framing::Nibbles if len <= INLINE_MAX => {
                        return match out.write_now(payload) {
                            Ok(None) => Ok(()),
                            Ok(Some(rest)) => self.enqueue(queue, WriteItem::EncodedRest(rest)),
                            Err(_) => Err(SendClosed),
                        };
                    }
                    Framing::Nibbles if frame_size(len).is_ok() => {
                        return match out.write_start(payload) {
                            Ok(start) => self.enqueue(
                                queue,
                                WriteItem::NibblesStarted {
                                    frame: keep(),
                                    start,
                                },
                            ),
                            Err(_) => Err(SendClosed),
                        };
                    }
                    Framing::LengthPrefixed if frame_size(len).is_ok() => {
                        return match out.send_prefixed_start(payload) {
                            Ok(sent) if sent == len + 4 => Ok(()),
                            Ok(sent) => self.enqueue(
                                queue,
                                WriteItem::PrefixedRest {
                                    frame: keep(),
                                    sent,
                                },
                            ),
                            Err(_) => Err(SendClosed),
                        };
                    }
                    _ => {}
                }
            }
        }
        self.enqueue(queue, WriteItem::Frame(keep()))
    }

    /// Sends an owned payload (see [`Channel::send`]).
    #[cfg(test)]
    pub(crate) fn send_vec(&self, payload: Vec<u8>) -> Result<(), SendClosed> {
        let kept = payload.clone();
        self.send(&[&payload], move || Box::new(kept))
    }

    fn enqueue(&self, queue: &Queue, item: WriteItem) -> Result<(), SendClosed> {
        self.shared.queued.fetch_add(1, Ordering::AcqRel);
        queue.send(item).map_err(|_| {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            SendClosed
        })
    }

    /// The owner handled `n` data events.
    pub fn ack(&self, n: usize) {
        self.shared.flow.release(n);
    }

    /// Stops sending: frames already queued are still written, then the outgoing side
    /// closes. Never blocks. Events keep coming until the channel ends.
    pub fn close(&self) {
        self.queue.lock().take();
        // Nothing left to write (the usual stop): close the descriptor here, so the peer
        // sees end of file now rather than once the writer thread gets a CPU (50 peers
        // stopping at once queued 50 wake-ups behind their exiting VMs). The writer
        // thread then finds the queue closed and the descriptor gone.
        if let Some(mut out) = self.shared.out.try_lock() {
            if self.shared.queued.load(Ordering::Acquire) == 0 {
                if let Some(out) = out.take() {
                    out.shut();
                }
            }
        }
        self.shared.closed.wake();
    }

    /// The owner is gone: drop queued frames, close now, deliver nothing more.
    pub fn abort(&self) {
        self.shared.aborted_flag.store(true, Ordering::Release);
        self.shared.flow.close();
        self.shared.aborted.wake();
        self.close();
    }

    /// OS pid of the spawned program's rpeer-wait (its process group id), once launched.
    pub fn os_pid(&self) -> Option<u32> {
        self.pid.as_ref().and_then(ProcessId::get)
    }

    /// The spawned program's pid, as it will be known once launched.
    pub fn process_id(&self) -> Option<ProcessId> {
        self.pid.clone()
    }

    /// tcp: accept only a connection from a process of the process group led by `pid`
    /// (the peer's spawned program).
    pub fn expect_peer(&self, pid: ProcessId) {
        *self.shared.peer_group.lock() = Some(pid);
    }

    /// Kills the spawned program's process group; its exit status is still reported.
    pub fn kill(&self) {
        if let Some(pid) = self.os_pid() {
            crate::spawn::kill_group(pid);
        }
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Creates the queue of a channel whose writer starts later (tcp, after accept).
pub(crate) fn queue() -> (Queue, Frames) {
    let (queue, frames) = crossbeam_channel::unbounded();
    (queue, Frames(frames))
}

/// Starts the writer thread that owns `fd`. When the queue is closed and drained (or the
/// channel aborted) the descriptor is shut down and closed.
pub(crate) fn spawn_writer(
    fd: OwnedFd,
    frames: Frames,
    framing: Framing,
    shared: Arc<ChannelShared>,
) -> io::Result<()> {
    install_out(fd, framing, &shared)?;
    std::thread::Builder::new()
        .name("rpeer-writer".into())
        .spawn(move || {
            while let Ok(item) = frames.0.recv() {
                if shared.is_aborted() {
                    break;
                }
                let mut out = shared.out.lock();
                let written = match out.as_mut() {
                    Some(out) => out.write_item(item, &shared),
                    None => Err(io::ErrorKind::BrokenPipe.into()),
                };
                shared.queued.fetch_sub(1, Ordering::AcqRel);
                if written.is_err() {
                    break;
                }
            }
            if let Some(out) = shared.out.lock().take() {
                out.shut();
            }
        })?;
    Ok(())
}

/// Makes `fd` the channel's outgoing side, written by senders and the writer thread.
fn install_out(fd: OwnedFd, framing: Framing, shared: &ChannelShared) -> io::Result<()> {
    if framing == Framing::Nibbles {
        // A pipe of our own: writes must not block. A socket stays blocking for its
        // reader (the file description is shared); writes to it pass MSG_DONTWAIT.
        sys::set_nonblocking(fd.as_raw_fd())?;
    }
    *shared.out.lock() = Some(Out {
        fd,
        framing,
        buf: Vec::new(),
    });
    Ok(())
}

/// The outgoing descriptor (non-blocking) and its encoding buffer.
struct Out {
    fd: OwnedFd,
    framing: Framing,
    buf: Vec<u8>,
}

impl Out {
    /// Closes the outgoing side: the peer sees end of file.
    fn shut(self) {
        if self.framing == Framing::LengthPrefixed {
            // The reader holds a clone of the socket: shut it down for both.
            sys::shutdown(self.fd.as_raw_fd());
        }
    }

    /// Writes a small frame without waiting: `None` when all of it was written, else the
    /// encoded bytes still to write.
    fn write_now(&mut self, payload: Parts) -> io::Result<Option<Vec<u8>>> {
        let mut buf = self.take_buf();
        codec::encode_frame_parts(payload, &mut buf);
        let rest = self.write_buffered(buf)?;
        Ok((!rest.is_empty()).then_some(rest))
    }

    /// Encodes the start of a larger frame (its first [`INLINE_MAX`] bytes of payload)
    /// and writes what the descriptor takes of it now.
    fn write_start(&mut self, payload: Parts) -> io::Result<NibblesStart> {
        let mut buf = self.take_buf();
        let len = parts_len(payload);
        let mut encoder = FrameEncoder::new(len, &mut buf);
        let consumed = len.min(INLINE_MAX);
        slices(payload, 0, consumed).for_each(|part| encoder.chunk(part, &mut buf));
        Ok(NibblesStart {
            encoder,
            consumed,
            unwritten: self.write_buffered(buf)?,
        })
    }

    /// The encoding buffer, empty (given back by [`Out::write_buffered`] or its user).
    fn take_buf(&mut self) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf
    }

    /// Writes what the descriptor takes now of `buf`, which becomes the encoding buffer
    /// again; returns the bytes it did not take.
    fn write_buffered(&mut self, buf: Vec<u8>) -> io::Result<Vec<u8>> {
        let written = self.write_some(&[&buf]);
        let unwritten = written.as_ref().map_or(Vec::new(), |&n| buf[n..].to_vec());
        self.buf = buf;
        written.map(|_| unwritten)
    }

    fn write_item(&mut self, item: WriteItem, shared: &ChannelShared) -> io::Result<()> {
        match item {
            WriteItem::EncodedRest(bytes) => self.write_all(&bytes, shared),
            WriteItem::Frame(frame) => self.write_frame(&*frame, shared),
            WriteItem::PrefixedRest { frame, sent } => self.write_prefixed(&*frame, sent, shared),
            WriteItem::NibblesStarted { frame, start } => self.write_rest(&*frame, start, shared),
        }
    }

    fn write_frame(&mut self, frame: &dyn Outgoing, shared: &ChannelShared) -> io::Result<()> {
        // Both framings carry the size in 32 bits: refuse a larger frame before a byte.
        frame_size(frame.len())?;
        match self.framing {
            Framing::LengthPrefixed => self.write_prefixed(frame, 0, shared),
            Framing::Nibbles => {
                let mut header = Vec::new();
                let encoder = FrameEncoder::new(frame.len(), &mut header);
                let start = NibblesStart {
                    encoder,
                    consumed: 0,
                    unwritten: header,
                };
                self.write_rest(frame, start, shared)
            }
        }
    }

    /// Encodes and writes a nibble-encoded frame from where `start` left it, waiting for
    /// the peer to read.
    fn write_rest(
        &mut self,
        frame: &dyn Outgoing,
        start: NibblesStart,
        shared: &ChannelShared,
    ) -> io::Result<()> {
        let NibblesStart {
            mut encoder,
            consumed,
            unwritten,
        } = start;
        let mut buf = self.take_buf();
        // What is left of the start leaves with the next part.
        buf.extend_from_slice(&unwritten);
        let result = frame
            .with_parts(&mut |parts| {
                let pieces = slices(parts, consumed, frame.len())
                    .flat_map(|slice| slice.chunks(WRITE_CHUNK));
                for piece in pieces {
                    encoder.chunk(piece, &mut buf);
                    // Small parts (an iovec's) are encoded together.
                    if buf.len() >= 2 * WRITE_CHUNK {
                        self.write_all(&buf, shared)?;
                        buf.clear();
                    }
                }
                Ok(())
            })
            .and_then(|()| {
                encoder.finish(&mut buf);
                self.write_all(&buf, shared)
            });
        buf.clear();
        self.buf = buf;
        result
    }

    /// Writes what the descriptor takes now; returns how much that was.
    fn write_some(&self, parts: Parts) -> io::Result<usize> {
        let (len, mut written) = (parts_len(parts), 0);
        let mut rest = Vec::new();
        while written < len {
            let unwritten = if written == 0 {
                parts
            } else {
                rest.clear();
                rest.extend(slices(parts, written, len));
                &rest
            };
            match self.write_once(unwritten)? {
                0 => break,
                n => written += n,
            }
        }
        Ok(written)
    }

    /// Writes a length-prefixed frame from byte `sent` on (the prefix counts), waiting
    /// for the peer to read.
    fn write_prefixed(
        &self,
        frame: &dyn Outgoing,
        sent: usize,
        shared: &ChannelShared,
    ) -> io::Result<()> {
        let header = frame_size(frame.len())?.to_be_bytes();
        frame.with_parts(&mut |parts| {
            let whole: Vec<&[u8]> = std::iter::once(&header[..])
                .chain(parts.iter().copied())
                .collect();
            let rest: Vec<&[u8]> = slices(&whole, sent, frame.len() + header.len()).collect();
            self.write_all_parts(&rest, shared)
        })
    }

    /// Writes what the socket takes now of a length-prefixed frame's start (its prefix
    /// and at most [`INLINE_PREFIXED_MAX`] bytes of payload); returns how much of the
    /// frame that was (the prefix counts).
    fn send_prefixed_start(&self, payload: Parts) -> io::Result<usize> {
        let header = frame_size(parts_len(payload))?.to_be_bytes();
        let start: Vec<&[u8]> = std::iter::once(&header[..])
            .chain(slices(payload, 0, INLINE_PREFIXED_MAX))
            .collect();
        self.write_once(&start)
    }

    /// One write of what the descriptor takes now from `parts`, in order, in a single
    /// call: a length prefix and its payload leave in one segment (a prefix sent alone
    /// would be a packet of its own, with TCP_NODELAY). Returns 0 when it would block.
    fn write_once(&self, parts: Parts) -> io::Result<usize> {
        const NO_IOVEC: libc::iovec = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        // A frame, or a prefix and its payload, without an allocation.
        let (mut few, mut many) = ([NO_IOVEC; 4], Vec::new());
        let count = parts.len().min(MAX_IOVECS);
        let iov = if count <= few.len() {
            &mut few[..count]
        } else {
            many.resize(count, NO_IOVEC);
            &mut many[..]
        };
        for (slot, part) in iov.iter_mut().zip(parts) {
            *slot = libc::iovec {
                iov_base: part.as_ptr() as *mut libc::c_void,
                iov_len: part.len(),
            };
        }
        // SAFETY: a zeroed msghdr is valid (no name, no control data).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = iov.len() as _;
        loop {
            // SAFETY: writev and sendmsg only read the slices the iovecs point to, which
            // outlive the call, to a descriptor this channel owns.
            let n = unsafe {
                match self.framing {
                    Framing::Nibbles => {
                        libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), iov.len() as _)
                    }
                    Framing::LengthPrefixed => libc::sendmsg(
                        self.fd.as_raw_fd(),
                        &msg,
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    ),
                }
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(0),
                _ => return Err(err),
            }
        }
    }

    /// Writes everything, waiting for the peer to read; gives up when the channel is
    /// aborted.
    fn write_all(&self, bytes: &[u8], shared: &ChannelShared) -> io::Result<()> {
        self.write_all_parts(&[bytes], shared)
    }

    /// [`Out::write_all`] of a payload's parts.
    fn write_all_parts(&self, parts: Parts, shared: &ChannelShared) -> io::Result<()> {
        let (len, mut written) = (parts_len(parts), 0);
        loop {
            let rest: Vec<&[u8]> = slices(parts, written, len).collect();
            written += self.write_some(&rest)?;
            if written == len {
                return Ok(());
            }
            if shared.is_aborted() {
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, "channel aborted"));
            }
            sys::poll(
                &[
                    (self.fd.as_raw_fd(), Interest::Write),
                    (shared.aborted.fd(), Interest::Read),
                ],
                None,
            )?;
        }
    }
}

/// Both framings carry the size in 32 bits.
fn frame_size(len: usize) -> io::Result<u32> {
    u32::try_from(len).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 4 GiB"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::codec::{Decoded, Decoder};
    use std::fs::File;
    use std::io::Read;
    use std::thread::JoinHandle;

    /// Reads a pipe to its end and decodes it: the frames, in order.
    fn decode_all(read_end: OwnedFd) -> JoinHandle<Vec<Vec<u8>>> {
        std::thread::spawn(move || {
            let (mut file, mut bytes) = (File::from(read_end), Vec::new());
            file.read_to_end(&mut bytes).expect("read");
            let (mut decoder, mut events) = (Decoder::new(), Vec::new());
            decoder.feed(&bytes, &mut events);
            events
                .into_iter()
                .map(|event| match event {
                    Decoded::Frame(frame) => frame,
                    Decoded::Console(text) => panic!("console text {} bytes", text.len()),
                })
                .collect()
        })
    }

    fn payload(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    #[test]
    fn start_of_a_large_frame_left_unwritten_by_a_full_pipe_is_written_first() {
        let (read_end, write_end) = sys::pipe().expect("pipe");
        sys::set_nonblocking(write_end.as_raw_fd()).expect("nonblocking");
        let shared = ChannelShared::new().expect("shared");
        let mut out = Out {
            fd: write_end,
            framing: Framing::Nibbles,
            buf: Vec::new(),
        };
        // A small frame fills the pipe (64 KiB by default) but for a few bytes.
        let small = payload(30 * 1024, 1);
        assert_eq!(out.write_now(&[&small]).expect("write"), None);
        let large = payload(3 * INLINE_MAX + 5, 2);
        let start = out.write_start(&[&large]).expect("start");
        assert_eq!(start.consumed, INLINE_MAX);
        // The encoded start: the size (8 bytes), then two bytes per payload byte.
        let encoded_start = 8 + 2 * INLINE_MAX;
        assert!(
            !start.unwritten.is_empty() && start.unwritten.len() < encoded_start,
            "the start was partly written: {} bytes left",
            start.unwritten.len()
        );
        let reading = decode_all(read_end);
        out.write_rest(&large, start, &shared).expect("rest");
        drop(out);
        assert!(reading.join().expect("reader") == vec![small, large]);
    }

    /// A standard_io channel writing into a pipe, and the thread decoding what comes out
    /// of it: the frames, in order, once the channel is closed.
    fn nibble_channel() -> (Channel, JoinHandle<Vec<Vec<u8>>>) {
        let (read_end, write_end) = sys::pipe().expect("pipe");
        let shared = ChannelShared::new().expect("shared");
        let (queue, frames) = queue();
        spawn_writer(write_end, frames, Framing::Nibbles, Arc::clone(&shared)).expect("writer");
        let channel = Channel::new(Some(queue), shared, None);
        (channel, decode_all(read_end))
    }

    /// A payload sent as parts (as an Erlang iovec is), kept as its parts.
    struct PartsPayload(Vec<Vec<u8>>);

    impl Outgoing for PartsPayload {
        fn len(&self) -> usize {
            self.0.iter().map(Vec::len).sum()
        }
        fn with_parts(&self, f: &mut dyn FnMut(Parts) -> io::Result<()>) -> io::Result<()> {
            let parts: Vec<&[u8]> = self.0.iter().map(Vec::as_slice).collect();
            f(&parts)
        }
    }

    /// Sends `parts` as one frame's payload.
    pub(crate) fn send_parts(channel: &Channel, parts: Vec<Vec<u8>>) -> Result<(), SendClosed> {
        let kept = PartsPayload(parts.clone());
        let slices: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        channel.send(&slices, move || Box::new(kept))
    }

    /// Payloads cut in parts of every kind of size (a large binary between small pieces,
    /// as term_to_iovec/1 gives them, empty parts, many tiny ones), and the frames they
    /// make.
    pub(crate) fn parted_payloads() -> Vec<(Vec<Vec<u8>>, Vec<u8>)> {
        let cuts: Vec<Vec<Vec<u8>>> = vec![
            vec![payload(7, 1), payload(100, 2), payload(3, 3)],
            vec![
                payload(6, 4),
                payload(3 * WRITE_CHUNK + 11, 5),
                payload(2, 6),
            ],
            vec![
                Vec::new(),
                payload(INLINE_MAX - 1, 7),
                Vec::new(),
                payload(2, 8),
            ],
            (0..3000).map(|i| payload(i % 5, i as u8)).collect(),
            vec![
                payload(5, 9),
                payload(400 * 1024, 10),
                payload(400 * 1024, 11),
                payload(1, 12),
            ],
        ];
        cuts.into_iter()
            .map(|parts| {
                let whole = parts.concat();
                (parts, whole)
            })
            .collect()
    }

    #[test]
    fn closing_with_nothing_queued_ends_the_stream_without_the_writer_thread() {
        let (read_end, write_end) = sys::pipe().expect("pipe");
        sys::set_nonblocking(read_end.as_raw_fd()).expect("nonblocking");
        let shared = ChannelShared::new().expect("shared");
        // No writer thread: whatever reaches the reader was written by send and close.
        let (queue, _frames) = queue();
        install_out(write_end, Framing::Nibbles, &shared).expect("out");
        let channel = Channel::new(Some(queue), shared, None);
        channel.send_vec(payload(100, 1)).expect("send");
        channel.close();
        let (mut file, mut bytes) = (File::from(read_end), Vec::new());
        // Non-blocking: an open write end would fail this with WouldBlock, not hang.
        file.read_to_end(&mut bytes).expect("end of file");
        let (mut decoder, mut events) = (Decoder::new(), Vec::new());
        decoder.feed(&bytes, &mut events);
        assert!(matches!(&events[..], [Decoded::Frame(frame)] if *frame == payload(100, 1)));
    }

    #[test]
    fn slices_cover_exactly_the_asked_range_across_parts() {
        let parts: [&[u8]; 4] = [b"ab", b"", b"cde", b"f"];
        let range = |from, to| slices(&parts, from, to).collect::<Vec<_>>().concat();
        assert_eq!(range(0, 6), b"abcdef");
        assert_eq!(range(1, 4), b"bcd");
        assert_eq!(range(2, 5), b"cde");
        assert_eq!(range(5, 6), b"f");
        assert!(range(3, 3).is_empty());
        assert!(slices(&parts, 0, 6).all(|slice| !slice.is_empty()));
        assert_eq!(parts_len(&parts), 6);
    }

    #[test]
    fn payloads_sent_as_parts_arrive_as_their_concatenation() {
        let (channel, reading) = nibble_channel();
        let mut expected = Vec::new();
        for (parts, whole) in parted_payloads() {
            send_parts(&channel, parts).expect("send");
            expected.push(whole);
        }
        channel.close();
        assert!(reading.join().expect("reader") == expected);
    }

    #[test]
    fn frames_sent_around_a_started_frame_keep_their_order() {
        let (channel, reading) = nibble_channel();
        let sent = vec![
            payload(10, 3),
            payload(5 * INLINE_MAX, 4),
            payload(INLINE_MAX, 5),
            payload(2 * WRITE_CHUNK + 1, 6),
            payload(1, 7),
        ];
        for frame in &sent {
            channel.send_vec(frame.clone()).expect("send");
        }
        channel.close();
        assert!(reading.join().expect("reader") == sent);
    }
}
