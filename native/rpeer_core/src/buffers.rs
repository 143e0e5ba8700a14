//! Reuse of the buffers of large incoming frames.
//!
//! A tcp frame's payload is read straight into a buffer of its size, which becomes the
//! Erlang binary. Freshly allocated, its pages fault in as they are first written (a
//! series of 1 MiB replies page-faulted on every other one, see bench/RESULTS.md), while
//! stock peer's binaries come from the VM's cached carriers and take none. A buffer
//! whose binary is garbage-collected comes back here ([`give_back`]) and carries the
//! next large frame with its pages already there.
//!
//! Bounded: only buffers of [`POOL_MIN_CAPACITY`] to [`POOL_MAX_CAPACITY`] bytes are
//! kept, at most [`POOL_MAX_BYTES`] bytes of them in all (memory the process keeps after
//! its large frames; the values and their reasons are in `tuning`).

use crate::tuning::{POOL_MAX_BYTES, POOL_MAX_CAPACITY, POOL_MIN_CAPACITY};
use parking_lot::Mutex;

struct Pool {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool::new());

/// An empty buffer with room for `len` bytes: a kept one when one fits (at most twice
/// the size asked for), else a new one; `None` when the memory cannot be had (a frame
/// declared larger than this machine can hold must not abort the VM).
pub fn take(len: usize) -> Option<Vec<u8>> {
    if let Some(kept) = is_kept_size(len).then(|| POOL.lock().take(len)).flatten() {
        return Some(kept);
    }
    let mut fresh = Vec::new();
    fresh.try_reserve_exact(len).ok()?;
    Some(fresh)
}

/// Keeps `buf` for a later [`take`] if it is of a kept size and there is room.
pub fn give_back(buf: Vec<u8>) {
    if is_kept_size(buf.capacity()) {
        POOL.lock().give_back(buf);
    }
}

/// Sizes the pool deals in (see [`POOL_MIN_CAPACITY`] and [`POOL_MAX_CAPACITY`]).
fn is_kept_size(bytes: usize) -> bool {
    (POOL_MIN_CAPACITY..=POOL_MAX_CAPACITY).contains(&bytes)
}

impl Pool {
    const fn new() -> Self {
        Pool {
            buffers: Vec::new(),
            bytes: 0,
        }
    }

    fn take(&mut self, len: usize) -> Option<Vec<u8>> {
        let fitting = self
            .buffers
            .iter()
            .enumerate()
            .filter(|(_, buf)| buf.capacity() >= len && buf.capacity() <= 2 * len)
            .min_by_key(|(_, buf)| buf.capacity())
            .map(|(i, _)| i)?;
        let buf = self.buffers.swap_remove(fitting);
        self.bytes -= buf.capacity();
        Some(buf)
    }

    fn give_back(&mut self, mut buf: Vec<u8>) {
        if self.bytes + buf.capacity() <= POOL_MAX_BYTES {
            buf.clear();
            self.bytes += buf.capacity();
            self.buffers.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_that_cannot_be_had_is_none_not_an_abort() {
        assert!(take(usize::MAX / 2).is_none());
        assert!(take(1 << 20).is_some_and(|buf| buf.capacity() >= 1 << 20));
    }

    #[test]
    fn a_buffer_given_back_carries_the_next_frame_of_its_size_empty() {
        let mut pool = Pool::new();
        let mut first = Vec::with_capacity(POOL_MIN_CAPACITY + 12_345);
        first.extend_from_slice(b"old bytes");
        let addr = first.as_ptr();
        pool.give_back(first);
        let again = pool.take(POOL_MIN_CAPACITY + 100).expect("kept buffer");
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), addr);
        assert!(pool.take(POOL_MIN_CAPACITY).is_none(), "taken once only");
    }

    #[test]
    fn a_buffer_over_twice_the_size_asked_for_stays_kept() {
        let mut pool = Pool::new();
        pool.give_back(Vec::with_capacity(POOL_MAX_CAPACITY));
        assert!(pool.take(POOL_MIN_CAPACITY).is_none());
        assert!(pool.take(POOL_MAX_CAPACITY / 2).is_some());
    }

    #[test]
    fn the_pool_keeps_at_most_its_bound() {
        let mut pool = Pool::new();
        for _ in 0..(2 * POOL_MAX_BYTES / POOL_MAX_CAPACITY + 2) {
            pool.give_back(Vec::with_capacity(POOL_MAX_CAPACITY));
        }
        assert!(pool.bytes <= POOL_MAX_BYTES);
        assert_eq!(
            pool.bytes,
            pool.buffers.iter().map(Vec::capacity).sum::<usize>()
        );
    }

    #[test]
    fn sizes_outside_the_range_are_not_kept() {
        // Through the process-wide pool: nothing of these sizes may end up in it.
        give_back(Vec::with_capacity(POOL_MAX_CAPACITY + 1));
        give_back(Vec::with_capacity(16));
        let pool = POOL.lock();
        assert!(pool.buffers.iter().all(|buf| is_kept_size(buf.capacity())));
    }
}
