//! rpeer's tuning constants, in one place: the sizes and times chosen for speed or for a
//! bound on memory, each with the reason for its value. None of them is a fact of a
//! wire format (those stay with the code that speaks it: `codec`, `tcp`), and changing
//! one changes no behaviour a caller can see, only how fast or how much memory.
//!
//! The figures behind them are in `bench/`: `bench/README.md` says what each row
//! measures (`throughput`, `latency`, `nif_calls`, `console`, `concurrent`, `codec`)
//! and `bench/RESULTS*.md` hold the tables and their readings. Measure there before and
//! after changing a value: `bench/run quick` (and `bench/codec_bench` for the codec's).

use std::time::Duration;

// ---------------------------------------------------------------------------------
// Flow control (event.rs)

/// Data events the owner may have unhandled at once (see `event::Flow`). Large enough
/// that a channel thread seldom waits for an acknowledgement while the owner keeps up
/// (console output in bursts, a series of replies), small enough that a stalled owner
/// holds only a few dozen messages in its mailbox.
pub const DEFAULT_WINDOW: usize = 64;

// ---------------------------------------------------------------------------------
// Writing frames (channel.rs)

/// Bytes of payload encoded per write into the outgoing descriptor: bounds the writer's
/// buffer whatever the frame size, while each write is still large enough that the
/// syscalls and the peer's wake-ups cost little per byte (`throughput`, origin to peer).
pub const WRITE_CHUNK: usize = 256 * 1024;

/// Nibble-encoded payload that the sending caller encodes and writes itself: a whole
/// frame up to this size, else the frame's start. Writing on the caller saves waking
/// the writer thread, which is most of a small call's latency (`latency`); past this
/// size the encoding would keep the caller (an Erlang scheduler inside a NIF) too long.
pub const INLINE_MAX: usize = 64 * 1024;

/// Length-prefixed payload that the sending caller writes itself at most: no encoding
/// to do, but a write into a loopback socket also runs the receiving side's network
/// stack, so the write's time grows with its size. This size keeps the NIF call short
/// (`nif_calls`) while most replies of a series leave at once (`throughput`, tcp).
pub const INLINE_PREFIXED_MAX: usize = 256 * 1024;

// ---------------------------------------------------------------------------------
// Reading streams from the peer (incoming.rs, stdio.rs, tcp.rs, peer_side/)

/// Bytes a channel thread, or the owner reading a large frame, takes per read: larger
/// than a port's 64 KiB reads, so that the rest of a large frame crosses in few
/// syscalls, and a fraction of [`PIPE_SIZE`], so that one read never waits on a full
/// pipe's worth.
pub const READ_BUFFER: usize = 256 * 1024;

/// Raw bytes of a frame's rest from which its reading moves off the owner's port to
/// the channel's thread: well over one port read (64 KiB), so that small frames never
/// leave the port (a port close and open costs more than it saves for them), while
/// large ones are read in big reads straight into the frame (`throughput`).
pub const THREAD_READ_FROM: usize = 256 * 1024;

/// A stretch of frames (raw bytes since the stream was last between frames) under
/// which the channel's thread keeps the stream after it: a series of replies of about
/// 1 MiB stays on the thread, which beats a port close and open for each. A larger
/// frame starts on a port again, whose decoder allocates it on a VM scheduler: very
/// large replies read wholly on the thread were slower (`throughput`, 10 MiB rows).
pub const LINGER_BELOW: usize = 4 * 1024 * 1024;

/// How long the owner goes on reading a large frame itself before leaving the rest to
/// the channel's thread: about the rest of a 1 MiB reply (tcp, or standard_io read and
/// decoded) when the frame's buffer was used before, so that a typical large reply
/// completes without a thread wake-up, while one NIF call stays well under the 1 ms a
/// normal scheduler may be held (`nif_calls`).
pub const READ_NOW_TIME: Duration = Duration::from_micros(250);

/// Raw bytes of the owner's first read of a large frame: its buffer may be memory never
/// touched (page faults on every page), so the first read is kept small enough to stay
/// short even then; each next read is sized from the rate of the one before to end
/// near [`READ_NOW_TIME`]. Not smaller: a socket read costs more per call than per
/// byte, and smaller steps made 1 MiB replies slower (`throughput`, tcp).
pub const READ_NOW_FIRST_STEP: usize = 64 * 1024;

/// Raw bytes of one of the owner's reads at most, whatever the rate: the rate of a read
/// into memory used before says nothing of the next read's fresh pages, so one step
/// this size keeps the NIF call near its bound at worst (`nif_calls`).
pub const READ_NOW_MAX_STEP: usize = 256 * 1024;

/// How long a dropped `Incoming` keeps its descriptor open when its owner never said
/// that the port reading it is closed: the port closes when the owner dies, maybe just
/// after the owner's resources are dropped, and must not find its descriptor reused.
/// Generous: it only delays closing a descriptor of a peer already gone.
pub const PORT_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Bytes a channel's pipes can hold: large frames cross in fewer, larger writes and
/// reads, with fewer wake-ups of the other side (`throughput`, standard_io). Best
/// effort: the default 64 KiB works, only slower.
pub const PIPE_SIZE: libc::c_int = 1024 * 1024;

/// How many bytes of a skipped tcp frame (over the maximum) are kept for its owner:
/// enough to tell which call a reply belongs to (`{reply, Seq, ...}` encodes its
/// sequence number within the first 20 bytes), little enough to copy always.
pub const SKIPPED_HEAD: usize = 64;

// ---------------------------------------------------------------------------------
// Spawning (spawn.rs, stdio.rs)

/// Spawner threads: launches run in parallel up to this many. Enough for the
/// `concurrent` runs (dozens of peers started at once) not to queue behind one
/// another's fork and exec, few enough to cost little memory while idle.
pub const SPAWNERS: usize = 16;

/// How long the standard_io reader waits for the peer's streams to end once the program
/// has exited: a grandchild may hold stderr open for ever, and the owner must still get
/// the exit status; a peer that halts flushes its output well within this.
pub const EXIT_GRACE: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------
// Buffers of large incoming frames (buffers.rs)

/// Smallest buffer the pool keeps: smaller frames are cheap to allocate, and most are
/// copied into a VM binary anyway (see `rpeer_nif`'s zero-copy size).
pub const POOL_MIN_CAPACITY: usize = 256 * 1024;

/// Largest buffer the pool keeps: larger frames are rare and their transfer dwarfs the
/// page faults of a fresh buffer.
pub const POOL_MAX_CAPACITY: usize = 4 * 1024 * 1024;

/// Bytes of capacity the pool keeps in all: memory the process keeps after its large
/// frames, enough for a few replies in flight of the sizes above (`throughput`, the
/// 1 MiB rows in a series).
pub const POOL_MAX_BYTES: usize = 8 * 1024 * 1024;

// ---------------------------------------------------------------------------------
// Handing frames to the VM (rpeer_nif's sink.rs)

/// Frames from this size on become a resource binary, without a copy; smaller ones are
/// copied into a VM binary, which is cheaper than creating a resource (`nif_calls`,
/// `throughput` at small sizes).
pub const ZERO_COPY_FROM: usize = 64 * 1024;

// ---------------------------------------------------------------------------------
// The standard_io codec (codec/)

/// Payload bytes the encoder encodes per block, summing each block just before (the
/// block is then in cache): small enough for L1/L2, large enough for the CRC's
/// vectorized loop (`codec`, encode rows).
pub const ENCODE_BLOCK: usize = 16 * 1024;

/// Payload bytes the decoder decodes per piece: a piece is decoded and checked onto the
/// payload in one pass, then summed while it is still in L1 cache (`codec`, decode
/// rows).
pub const DECODE_PIECE: usize = 4 * 1024;

/// Capacity of the decoder's held-nibble buffer above which it is released once empty:
/// a stretch of stray nibble bytes that grew large must not keep its memory, while the
/// usual small ones reuse it.
pub const KEEP_CAPACITY: usize = 1 << 20;

/// Decoded bytes between the prefix CRCs the decoder's general path keeps: checking a
/// candidate sums at most twice this many bytes, and the prefix CRCs cost 4 bytes per
/// this many bytes of both decoded streams.
pub const SUM_STEP: usize = 128;

/// Candidates at most this many bytes long (encoded) are checked by decoding and summing
/// them directly, which for short ones costs less than the general path's bookkeeping;
/// past the first longer one that fails, the rest of its run takes the general path,
/// which judges each candidate in constant time (the decoder fuzz in bench/RESULTS.md).
pub const DIRECT: usize = 256;

/// Rule 4 (resynchronisation, see `codec`'s documentation) takes a frame that ends where
/// the data ends if it is at most this long (encoded bytes), whatever stands before it:
/// a reply of up to 1 KiB, the usual small reply. Each read that leaves a candidate
/// waiting scans this far back, so the window bounds that cost per read.
pub const RESYNC_TAIL: usize = 2048;

/// ... or if it starts at most this many bytes after the waiting candidate's start: a
/// reply of any length after a few stray nibble bytes. Indexed once per waiting
/// candidate, so it bounds that index.
pub const RESYNC_HEAD: usize = 256;

/// Resolved stretches of the general path left that are no longer than this (encoded:
/// four size fields) go back to streaming as a candidate, the fast path: a frame that
/// started in a read's last few bytes is then decoded as it arrives.
pub const SETTLE_MAX: usize = 4 * 2 * crate::codec::HEADER_LEN;
