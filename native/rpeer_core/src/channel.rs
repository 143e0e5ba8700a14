//! The connection abstraction: one [`Channel`] for the standard_io and the tcp
//! alternative alike. Frames go out through a writer thread that owns the outgoing
//! descriptor; events come in from a reader thread (see `stdio` and `tcp`).
//!
//! Closing is graceful and never blocks the caller: the writer thread writes every frame
//! already queued (as fast as the peer reads them), then closes the descriptor and the
//! peer sees end of file. Aborting (the owner died) drops the queue at once.

use crate::codec::{self, FrameEncoder};
use crate::event::{Flow, DEFAULT_WINDOW};
use crate::sys::{self, Interest, Waker};
use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Bytes of payload encoded per write: bounds the writer's buffer for any frame size.
const WRITE_CHUNK: usize = 256 * 1024;

/// A frame payload to send. Implemented by the NIF for Erlang binaries it keeps alive
/// without copying them, and by `Vec<u8>`.
pub trait Outgoing: Send {
    fn len(&self) -> usize;
    /// Calls `f` with the payload's bytes.
    fn with_bytes(&self, f: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()>;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Outgoing for Vec<u8> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn with_bytes(&self, f: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        f(self)
    }
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
pub struct Closed;

/// State shared by a channel's handle and its threads.
pub(crate) struct Shared {
    pub(crate) flow: Flow,
    /// Woken by close(): a channel still waiting for its tcp peer stops listening.
    pub(crate) closed: Waker,
    /// Woken by abort(): threads blocked on the peer give up.
    pub(crate) aborted: Waker,
    aborted_flag: AtomicBool,
}

impl Shared {
    pub(crate) fn new() -> io::Result<Arc<Self>> {
        Ok(Arc::new(Shared {
            flow: Flow::new(DEFAULT_WINDOW),
            closed: Waker::new()?,
            aborted: Waker::new()?,
            aborted_flag: AtomicBool::new(false),
        }))
    }

    pub(crate) fn is_aborted(&self) -> bool {
        self.aborted_flag.load(Ordering::Acquire)
    }
}

type Queue = Sender<Box<dyn Outgoing>>;

/// The origin's handle on one peer channel.
pub struct Channel {
    queue: Mutex<Option<Queue>>,
    shared: Arc<Shared>,
    /// The spawned program's process group, when this channel spawned it.
    pid: Option<u32>,
}

impl Channel {
    pub(crate) fn new(queue: Option<Queue>, shared: Arc<Shared>, pid: Option<u32>) -> Self {
        Channel {
            queue: Mutex::new(queue),
            shared,
            pid,
        }
    }

    /// Queues a frame for the writer thread; never blocks.
    pub fn send(&self, frame: Box<dyn Outgoing>) -> Result<(), Closed> {
        match &*self.queue.lock() {
            Some(queue) => queue.send(frame).map_err(|_| Closed),
            None => Err(Closed),
        }
    }

    /// The owner handled `n` data events.
    pub fn ack(&self, n: usize) {
        self.shared.flow.release(n);
    }

    /// Stops sending: frames already queued are still written, then the outgoing side
    /// closes. Never blocks. Events keep coming until the channel ends.
    pub fn close(&self) {
        self.queue.lock().take();
        self.shared.closed.wake();
    }

    /// The owner is gone: drop queued frames, close now, deliver nothing more.
    pub fn abort(&self) {
        self.shared.aborted_flag.store(true, Ordering::Release);
        self.shared.flow.close();
        self.shared.aborted.wake();
        self.close();
    }

    /// OS pid of the spawned program's waiting shell (its process group id).
    pub fn os_pid(&self) -> Option<u32> {
        self.pid
    }

    /// Signals the spawned program's process group.
    pub fn kill(&self, signal: i32) {
        if let Some(pid) = self.pid {
            crate::spawn::kill_group(pid, signal);
        }
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Creates the queue of a channel whose writer starts later (tcp, after accept).
pub(crate) fn queue() -> (Queue, Receiver<Box<dyn Outgoing>>) {
    crossbeam_channel::unbounded()
}

/// Starts the writer thread that owns `fd`. When the queue is closed and drained (or the
/// channel aborted) the descriptor is shut down and closed.
pub(crate) fn spawn_writer(
    fd: OwnedFd,
    frames: Receiver<Box<dyn Outgoing>>,
    framing: Framing,
    shared: Arc<Shared>,
) -> io::Result<()> {
    sys::set_nonblocking(fd.as_raw_fd())?;
    std::thread::Builder::new()
        .name("rpeer-writer".into())
        .spawn(move || {
            let mut writer = Writer {
                fd: fd.as_raw_fd(),
                shared: &shared,
                buf: Vec::with_capacity(codec::encoded_len(WRITE_CHUNK)),
            };
            while let Ok(frame) = frames.recv() {
                if shared.is_aborted() || writer.write_frame(&*frame, framing).is_err() {
                    break;
                }
            }
            if framing == Framing::LengthPrefixed {
                // The reader holds a clone of the socket: shut it down for both.
                // SAFETY: shutdown() on a socket descriptor this thread owns.
                unsafe {
                    libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR);
                }
            }
            drop(fd);
        })?;
    Ok(())
}

struct Writer<'a> {
    fd: RawFd,
    shared: &'a Shared,
    buf: Vec<u8>,
}

impl Writer<'_> {
    fn write_frame(&mut self, frame: &dyn Outgoing, framing: Framing) -> io::Result<()> {
        let len = frame.len();
        // Both framings carry the size in 32 bits.
        let size = u32::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 4 GiB"))?;
        match framing {
            Framing::LengthPrefixed => {
                self.write_all(&size.to_be_bytes())?;
                frame.with_bytes(&mut |bytes| self.write_all(bytes))
            }
            Framing::Nibbles => {
                let mut buf = std::mem::take(&mut self.buf);
                buf.clear();
                let mut encoder = FrameEncoder::new(len, &mut buf);
                let result = frame.with_bytes(&mut |bytes| {
                    for part in bytes.chunks(WRITE_CHUNK) {
                        encoder.chunk(part, &mut buf);
                        self.write_all(&buf)?;
                        buf.clear();
                    }
                    Ok(())
                });
                encoder.finish(&mut buf);
                let result = result.and_then(|()| self.write_all(&buf));
                self.buf = buf;
                result
            }
        }
    }

    /// Writes everything, waiting for the peer to read; gives up when the channel is
    /// aborted.
    fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            // SAFETY: writes from a valid slice to a descriptor this thread owns.
            let n =
                unsafe { libc::write(self.fd, bytes.as_ptr() as *const libc::c_void, bytes.len()) };
            if n >= 0 {
                bytes = &bytes[n as usize..];
                continue;
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => self.wait_writable()?,
                _ => return Err(err),
            }
        }
        Ok(())
    }

    fn wait_writable(&self) -> io::Result<()> {
        loop {
            if self.shared.is_aborted() {
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, "channel aborted"));
            }
            let ready = sys::poll(
                &[
                    (self.fd, Interest::Write),
                    (self.shared.aborted.fd(), Interest::Read),
                ],
                None,
            )?;
            if ready[0].writable {
                return Ok(());
            }
        }
    }
}
