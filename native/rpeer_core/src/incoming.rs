//! A stream from the peer that the owner reads through an Erlang port: the stdout of a
//! spawned program (frames and console text), or the tcp connection (length-prefixed
//! frames).
//!
//! The owner opens `open_port({fd, Fd, Fd}, [in, binary, eof])` on [`Incoming::raw_fd`]
//! and decodes what the port delivers with [`Incoming::decode`]. A port's descriptor is
//! always selected, so the VM moves it into the scheduler's own pollset: a reply wakes
//! one thread, not a channel thread and then a scheduler. A port reads 64 KiB at a time,
//! a message each: when a large frame is coming, the owner closes the port, reads what
//! the stream holds already ([`Incoming::read_now`]) and has the channel's thread read
//! on ([`Incoming::read_on_thread`]): the frame's rest in big reads, straight into the
//! frame, and the frames after it while they are large too (large replies often come
//! in a series, and closing a port and opening the next costs more than reading on,
//! see `tuning`); the thread
//! hands the stream back (`Resume`) once a stretch of frames up to a read that ends
//! between frames was small, or very large.
//!
//! A closed port leaves its descriptor *blocking* (ERTS resets O_NONBLOCK when an fd
//! port stops, and the flag belongs to every duplicate of the descriptor): every read
//! here first makes its duplicate non-blocking again.

use crate::event::Event;
use crate::sys::{self, Interest, Ready};
use crate::tuning::{
    LINGER_BELOW, PORT_CLOSE_GRACE, READ_BUFFER, READ_NOW_FIRST_STEP, READ_NOW_MAX_STEP,
    READ_NOW_TIME, THREAD_READ_FROM,
};
use parking_lot::Mutex;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Turns the bytes of a stream into events.
pub trait StreamDecoder: Send {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<Event>);
    /// The stream ended.
    fn finish(&mut self, out: &mut Vec<Event>);
    /// Raw bytes still missing from the frame being received (0 between frames).
    fn awaiting(&self) -> usize;

    /// The payload being received and its full length, when the stream's next bytes
    /// are that payload's as they are (tcp): a reader fills it directly, then feeds
    /// nothing to have the decoder see it complete. `None` by default.
    fn payload_in_progress(&mut self) -> Option<(&mut Vec<u8>, usize)> {
        None
    }
}

/// What one read of the stream did.
enum ReadOutcome {
    /// Nothing there now.
    Nothing,
    /// The stream ended (or failed, which a port then sees).
    Ended,
    /// `read` bytes were read and decoded; the raw bytes the frame being received still
    /// misses.
    Decoded { read: usize, missing: usize },
    /// What was read is decoded, up to a point between frames; whether the channel's
    /// thread keeps the stream from there (see [`Incoming::read_on_thread`]).
    BetweenFrames { linger: bool },
}

/// A stream's decoder, and the raw bytes it was fed since the stream was last between
/// frames (by whichever reader).
struct Decoding {
    decoder: Box<dyn StreamDecoder>,
    stretch: usize,
}

impl Decoding {
    /// Feeds `read` bytes to the decoder (`bytes`, or as many already put in the payload
    /// in progress); what that read did.
    fn feed(&mut self, bytes: &[u8], read: usize, out: &mut Vec<Event>) -> ReadOutcome {
        self.decoder.feed(bytes, out);
        self.stretch = self.stretch.saturating_add(read);
        match self.decoder.awaiting() {
            0 => {
                let stretch = std::mem::take(&mut self.stretch);
                ReadOutcome::BetweenFrames {
                    linger: (THREAD_READ_FROM..LINGER_BELOW).contains(&stretch),
                }
            }
            missing => ReadOutcome::Decoded { read, missing },
        }
    }
}

/// The origin's end of a stream from the peer, read by the owner, and its decoder.
pub struct Incoming {
    shared: Arc<IncomingShared>,
}

/// Where the stream's descriptor stands.
enum StreamFd {
    /// Not there yet (a tcp connection not yet accepted).
    Awaited,
    /// There: the owner's port or the channel's thread reads it.
    Open(OwnedFd),
    /// Released (the owner closed the port that read it, or is gone): closed, and
    /// nothing reads the stream any more; a descriptor that comes later is closed.
    Released,
}

/// What the owner and the channel's thread share of the stream.
struct IncomingShared {
    fd: Mutex<StreamFd>,
    decoding: Mutex<Decoding>,
    /// The owner asked the channel's thread to read on (a large frame); cleared by the
    /// thread before it hands the stream back.
    requested: AtomicBool,
    /// Tells the channel's thread that `requested` (or `fd`) changed.
    wake: sys::Waker,
    /// Bytes read from the stream so far, by the owner's port or the thread.
    read_bytes: AtomicU64,
    /// The buffer of [`Incoming::read_now`].
    read_now_buf: Mutex<Vec<u8>>,
}

impl Incoming {
    /// A stream not there yet: [`Incoming::open`] gives it its descriptor.
    pub fn new(decoder: Box<dyn StreamDecoder>) -> io::Result<Self> {
        Ok(Incoming {
            shared: Arc::new(IncomingShared {
                fd: Mutex::new(StreamFd::Awaited),
                decoding: Mutex::new(Decoding {
                    decoder,
                    stretch: 0,
                }),
                requested: AtomicBool::new(false),
                wake: sys::Waker::new()?,
                read_bytes: AtomicU64::new(0),
                read_now_buf: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The stream is there (unless released meanwhile, when `fd` is closed).
    pub fn open(&self, fd: OwnedFd) -> io::Result<()> {
        self.shared.open(fd)
    }

    /// The descriptor to read, once there and until released.
    pub fn raw_fd(&self) -> Option<RawFd> {
        match &*self.shared.fd.lock() {
            StreamFd::Open(fd) => Some(fd.as_raw_fd()),
            StreamFd::Awaited | StreamFd::Released => None,
        }
    }

    /// Decodes bytes read from the descriptor into events. Returns whether a large frame
    /// is coming, whose rest is faster read on the channel's thread.
    pub fn decode(&self, bytes: &[u8], out: &mut Vec<Event>) -> bool {
        matches!(
            self.shared.decode(bytes, out),
            ReadOutcome::Decoded { missing, .. } if missing >= THREAD_READ_FROM
        )
    }

    /// Bytes read from the stream so far: whether it is still written to.
    pub fn read_bytes(&self) -> u64 {
        self.shared.read_bytes.load(Ordering::Acquire)
    }

    /// The stream ended: the decoder says what that means (held-back console text, the
    /// end of a connection).
    pub fn finish(&self, out: &mut Vec<Event>) {
        self.shared.decoding.lock().decoder.finish(out);
    }

    /// Reads the frame being received as far as the stream holds it now, without
    /// waiting, for about [`READ_NOW_TIME`]: a large frame's start (often all of a 1 MiB
    /// one) is there already when the owner sees the frame begin, and reading it here
    /// spares waiting for the channel's thread to wake up. Returns whether the channel's
    /// thread reads on ([`Incoming::read_on_thread`]): the rest of the frame, or the
    /// frames after it; else a port reads on (also at the end of the stream, or on an
    /// error, which a port then sees). Call only while nothing else reads the stream.
    pub fn read_now(&self, out: &mut Vec<Event>) -> bool {
        self.read_for(READ_NOW_TIME, out)
    }

    /// [`Incoming::read_now`], going on for about `time`.
    pub(crate) fn read_for(&self, time: Duration, out: &mut Vec<Event>) -> bool {
        let Some(mut stream) = self.shared.duplicate() else {
            return false;
        };
        let mut buf = self.shared.read_now_buf.lock();
        buf.resize(READ_BUFFER, 0);
        let started = Instant::now();
        let mut step = READ_NOW_FIRST_STEP;
        loop {
            let read_at = Instant::now();
            match self.shared.read_some(&mut stream, &mut buf, step, out) {
                ReadOutcome::Nothing => return true,
                ReadOutcome::Ended => return false,
                ReadOutcome::BetweenFrames { linger } => return linger,
                ReadOutcome::Decoded { read, .. } => {
                    let Some(left) = time.checked_sub(started.elapsed()) else {
                        return true;
                    };
                    step = next_step(read, read_at.elapsed(), left);
                }
            }
        }
    }

    /// Has the channel's thread read the stream, delivering its events, until a read
    /// ends between frames after a stretch (the raw bytes since the stream was last
    /// between frames, whoever read them) under [`THREAD_READ_FROM`] or from
    /// [`LINGER_BELOW`] on, then `Resume` (also at the end of the stream, which the
    /// owner's port then sees). Call only while nothing else reads it.
    pub fn read_on_thread(&self) {
        self.shared.requested.store(true, Ordering::Release);
        self.shared.wake.wake();
    }

    /// Closes the descriptor; call once nothing polls it any more. The channel's thread
    /// stops reading its own duplicate.
    pub fn release(&self) {
        drop(self.shared.stop_reading());
    }

    /// The channel thread's side of the stream.
    pub(crate) fn thread_side(&self) -> ThreadRead {
        ThreadRead {
            shared: Arc::clone(&self.shared),
            stream: None,
        }
    }
}

impl IncomingShared {
    fn open(&self, fd: OwnedFd) -> io::Result<()> {
        // The port reads it when polled; a read must never block a scheduler.
        sys::set_nonblocking(fd.as_raw_fd())?;
        let mut slot = self.fd.lock();
        if !matches!(*slot, StreamFd::Released) {
            *slot = StreamFd::Open(fd);
        }
        Ok(())
    }

    /// A duplicate of the descriptor (once there and until released), non-blocking: a
    /// closed port leaves it blocking, and neither the owner's read nor the thread's
    /// after a poll may wait for more.
    fn duplicate(&self) -> Option<Stream> {
        let fd = match &*self.fd.lock() {
            StreamFd::Open(fd) => fd.try_clone(),
            StreamFd::Awaited | StreamFd::Released => return None,
        };
        fd.and_then(Stream::new).ok()
    }

    /// Takes the descriptor away and stops the channel's thread from reading it.
    fn stop_reading(&self) -> Option<OwnedFd> {
        let fd = match std::mem::replace(&mut *self.fd.lock(), StreamFd::Released) {
            StreamFd::Open(fd) => Some(fd),
            StreamFd::Awaited | StreamFd::Released => None,
        };
        self.requested.store(false, Ordering::Release);
        self.wake.wake();
        fd
    }

    /// Reads at most `max` bytes and decodes them: straight into the payload being
    /// received where the decoder allows (no copy out of `buf`), else through `buf`.
    fn read_some(
        &self,
        stream: &mut Stream,
        buf: &mut [u8],
        max: usize,
        out: &mut Vec<Event>,
    ) -> ReadOutcome {
        let mut decoding = self.decoding.lock();
        if let Some((payload, len)) = decoding.decoder.payload_in_progress() {
            let want = (len - payload.len()).min(max);
            return match sys::read_into_spare(stream.file.as_raw_fd(), payload, want) {
                Ok(0) => ReadOutcome::Ended,
                Ok(n) => {
                    self.read_bytes.fetch_add(n as u64, Ordering::AcqRel);
                    decoding.feed(&[], n, out)
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => ReadOutcome::Nothing,
                    _ => ReadOutcome::Ended,
                },
            };
        }
        drop(decoding);
        let limit = buf.len().min(max);
        match stream.read(&mut buf[..limit]) {
            None => ReadOutcome::Nothing,
            Some([]) => ReadOutcome::Ended,
            Some(bytes) => self.decode(bytes, out),
        }
    }

    /// Decodes bytes read from the stream, by the port or the thread.
    fn decode(&self, bytes: &[u8], out: &mut Vec<Event>) -> ReadOutcome {
        self.read_bytes
            .fetch_add(bytes.len() as u64, Ordering::AcqRel);
        self.decoding.lock().feed(bytes, bytes.len(), out)
    }
}

/// The size of the next read in [`Incoming::read_now`]: what the rate of the last one
/// (`read` bytes in `took`) reads in the time `left`.
fn next_step(read: usize, took: Duration, left: Duration) -> usize {
    let rate = read as u128 * 1000 / took.as_nanos().max(1000);
    let fits = rate * left.as_micros();
    usize::try_from(fits).map_or(READ_NOW_MAX_STEP, |bytes| {
        bytes.clamp(4096, READ_NOW_MAX_STEP)
    })
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if let Some(fd) = self.shared.stop_reading() {
            // Not released: a port may still have it selected, so it is closed later.
            let fd = Arc::new(fd);
            let closing = Arc::clone(&fd);
            let parked = std::thread::Builder::new()
                .name("rpeer-port-close".into())
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

/// A non-blocking stream a channel thread reads.
pub(crate) struct Stream {
    pub(crate) file: File,
    pub(crate) open: bool,
}

impl Stream {
    pub(crate) fn new(fd: OwnedFd) -> io::Result<Self> {
        sys::set_nonblocking(fd.as_raw_fd())?;
        Ok(Stream {
            file: File::from(fd),
            open: true,
        })
    }

    /// Reads what is there into `buf`; an empty slice once the stream has ended.
    pub(crate) fn read<'b>(&mut self, buf: &'b mut [u8]) -> Option<&'b [u8]> {
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

/// The reading a channel thread does for the owner of an [`Incoming`]: large frames,
/// when asked. The thread polls [`ThreadRead::poll_fds`] with its own descriptors.
pub(crate) struct ThreadRead {
    shared: Arc<IncomingShared>,
    /// The thread's duplicate of the descriptor while it reads for the owner.
    stream: Option<Stream>,
}

impl ThreadRead {
    /// The stream is there (see [`Incoming::open`]).
    pub(crate) fn open(&self, fd: OwnedFd) -> io::Result<()> {
        self.shared.open(fd)
    }

    /// Whether the owner released the stream (or is gone): nothing more to read.
    pub(crate) fn is_released(&self) -> bool {
        matches!(*self.shared.fd.lock(), StreamFd::Released)
    }

    /// Whether the thread is reading the stream now.
    pub(crate) fn is_reading(&self) -> bool {
        self.stream.is_some()
    }

    /// Adds what to poll: the stream while reading it, then the owner's wake-up.
    pub(crate) fn poll_fds(&self, fds: &mut Vec<(RawFd, Interest)>) {
        if let Some(stream) = &self.stream {
            fds.push((stream.file.as_raw_fd(), Interest::Read));
        }
        fds.push((self.shared.wake.fd(), Interest::Read));
    }

    /// Handles the poll results of [`ThreadRead::poll_fds`]'s descriptors (taken from
    /// `ready` in the same order), then takes a new request of the owner's.
    pub(crate) fn on_poll(
        &mut self,
        ready: &mut impl Iterator<Item = Ready>,
        buf: &mut [u8],
        deliver: &mut dyn FnMut(Event),
    ) {
        if self.stream.is_some() && ready.next().is_some_and(|r| r.readable) {
            self.read(buf, deliver);
        }
        if ready.next().is_some_and(|r| r.readable) {
            self.shared.wake.clear();
        }
        self.take_request(deliver);
    }

    /// The owner asked for a large frame to be read here (or released the stream).
    pub(crate) fn take_request(&mut self, deliver: &mut dyn FnMut(Event)) {
        let requested = self.shared.requested.load(Ordering::Acquire);
        if requested && self.stream.is_none() {
            match self.shared.duplicate() {
                Some(stream) => self.stream = Some(stream),
                // Released meanwhile, or no descriptor left: the owner reads on.
                None => self.hand_back(deliver),
            }
        } else if !requested {
            self.stream = None;
        }
    }

    /// Reads for the owner; hands the stream back once a read ends between frames after
    /// a small stretch (see [`Incoming::read_on_thread`]), or at its end (which the
    /// owner's port then sees).
    fn read(&mut self, buf: &mut [u8], deliver: &mut dyn FnMut(Event)) {
        let Some(stream) = &mut self.stream else {
            return;
        };
        let mut events = Vec::new();
        let keep = match self.shared.read_some(stream, buf, usize::MAX, &mut events) {
            ReadOutcome::Nothing => return,
            ReadOutcome::Ended => false,
            ReadOutcome::Decoded { .. } => true,
            ReadOutcome::BetweenFrames { linger } => linger,
        };
        if !keep {
            // Closed before the owner reads the stream again.
            self.stream = None;
        }
        events.into_iter().for_each(&mut *deliver);
        if !keep {
            self.hand_back(deliver);
        }
    }

    fn hand_back(&mut self, deliver: &mut dyn FnMut(Event)) {
        self.shared.requested.store(false, Ordering::Release);
        deliver(Event::Resume);
    }

    /// Reads large frames for the owner whenever asked, until it releases the stream (or
    /// is gone).
    pub(crate) fn serve(&mut self, buf: &mut [u8], deliver: &mut dyn FnMut(Event)) {
        self.take_request(deliver);
        while !self.is_released() {
            if self.poll_once(None, buf, deliver).is_none() {
                return;
            }
        }
    }

    /// Waits for the stream, the owner, or `watched` (a descriptor of the caller's, for
    /// a failure or hang-up only) and handles what is ready of the first two. Returns
    /// whether `watched` is ready; `None` if polling failed.
    pub(crate) fn poll_once(
        &mut self,
        watched: Option<RawFd>,
        buf: &mut [u8],
        deliver: &mut dyn FnMut(Event),
    ) -> Option<bool> {
        let mut fds = Vec::with_capacity(3);
        self.poll_fds(&mut fds);
        if let Some(fd) = watched {
            fds.push((fd, Interest::Failure));
        }
        let mut ready = sys::poll(&fds, None).ok()?.into_iter();
        self.on_poll(&mut ready, buf, deliver);
        Some(watched.is_some() && ready.next().is_some_and(|r| r.readable))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_at_once_are_sized_by_the_rate_of_the_one_before() {
        let us = Duration::from_micros;
        // 64 KiB in 60 us: the rest of the time takes ~256 KB.
        assert_eq!(next_step(64 * 1024, us(60), us(240)), 262_080);
        // 64 KiB in 8 us (memory used before): ~2 MB would fit, never more than the
        // largest step.
        assert_eq!(next_step(64 * 1024, us(8), us(240)), READ_NOW_MAX_STEP);
        assert_eq!(next_step(64 * 1024, us(1), us(240)), READ_NOW_MAX_STEP);
        // 64 KiB in 230 us (fresh memory's page faults): a small last read.
        assert_eq!(next_step(64 * 1024, us(230), us(20)), 5_680);
        // Nothing measurable left: the smallest step.
        assert_eq!(next_step(64 * 1024, us(230), Duration::ZERO), 4096);
    }
}
