//! The standard_io wire codec of OTP's `peer`: control frames multiplexed with console
//! text on the peer node's stdout.
//!
//! # Wire format
//!
//! A frame is `<<Size:32/big, Payload:Size/binary, Crc:32/big>>` with
//! `Crc = erlang:crc32(Payload)` (standard CRC-32), and every byte of it is sent as two
//! "nibble bytes", high nibble first, nibble `N` as `0b11_NNNN_11` (`0xC3 | N << 2`).
//! An encoded frame is therefore `2 * (8 + Size)` bytes, all with `byte & 0xC3 == 0xC3`.
//!
//! # Decoding
//!
//! Console text may contain nibble bytes too (16 of the values 0xC3..=0xFF, such as the
//! first byte of UTF-8 "é"), and a peer may write any bytes at all, without a newline,
//! just before a frame. So unlike stock `peer` the [`Decoder`] never fails, never loses
//! text, and finds a frame whatever nibble bytes stand before it:
//!
//! 1. A frame is accepted only as a contiguous run of nibble bytes of exactly
//!    `2 * (8 + Size)` bytes, with `Size <= max_payload` and a matching CRC. It may start
//!    at any position (after text, after a frame, inside a run of nibble-looking text).
//!    Each position of a run is a *candidate*: the frame its size field would make.
//! 2. Every other byte is console text, delivered exactly once, unchanged, in stream
//!    order; adjacent console bytes are merged into one [`Decoded::Console`] per
//!    [`Decoder::feed`] call, and no empty console event is emitted.
//! 3. The run rule. In a nibble run that has ended (a non-nibble byte follows it, or
//!    [`Decoder::finish`] is called), frames are found leftmost first: at each position
//!    in turn, a valid frame lying wholly in the run is taken and the search goes on
//!    after it; otherwise that byte is console. While the run goes on this is applied as
//!    bytes arrive: a candidate is judged as soon as it is complete (a declared size over
//!    `max_payload` at once), and everything from the earliest candidate still
//!    incomplete on is held back: that candidate *waits*. So an earlier candidate that
//!    completes validly always wins over frames inside it, and text without nibble
//!    bytes is never delayed.
//! 4. Resynchronisation. When a feed leaves a candidate waiting, the decoder looks for
//!    a frame ending exactly where the data received so far ends (the peer wrote a
//!    reply after stray nibble bytes and fell silent): among the starts after the
//!    waiting candidate's with the right parity, at most [`RESYNC_HEAD`] bytes after it
//!    or at most [`RESYNC_TAIL`] bytes before the end, the earliest whose size field
//!    declares that end, not empty, and whose CRC matches. (An empty frame is eight
//!    zero bytes in a payload, aligned: taking one would cut many a frame at a read
//!    boundary; peers never send one.) If there is one, the held bytes before it
//!    are resolved by rule 3 as a run that ended at its start (frames among them are
//!    taken, a candidate overlapping it is not), it is taken, and the run goes on after
//!    it as if it started there. Nothing else is taken early: a frame that ends before
//!    the data does stays held until the waiting candidate completes, the run ends, or a
//!    later frame ends the data (which takes it along, by rule 3).
//!
//! Rule 4 gives what rule 3 gives for the stream decoded whole, except when the waiting
//! candidate later completes validly, or a valid candidate overlaps the frame taken:
//! only then does the result depend on how the stream is split into reads.
//!
//! The windows of rule 4 keep its cost off clean frames (see below). A frame longer than
//! [`RESYNC_TAIL`] that starts more than [`RESYNC_HEAD`] bytes after the waiting
//! candidate is not taken early: it waits, as every frame after stray nibble bytes did
//! before, for the candidate to fail or the run to end. That takes over `RESYNC_HEAD`
//! stray nibble bytes from a candidate declaring more than follows ("ÃÇÃÇ...", a frame
//! cut short), directly before a reply over `RESYNC_TAIL` bytes long.
//!
//! ## Ambiguities
//!
//! The format is ambiguous in two ways. Text that happens to be a valid encoded frame
//! (such as sixteen bytes 0xC3, an empty frame) is taken as a frame. And a frame A whose
//! payload holds the bytes of a whole frame B (a call whose argument is
//! `<<Size:32, Payload/binary, Crc:32>>`) has B aligned inside it: decoded whole, A is
//! the frame (rule 3), but if a read of A ends exactly where B ends, rule 4 takes B and
//! A's bytes become console text. Garbage makes a false frame only when 32 bits of CRC
//! match: about 2^-32 for each candidate checked. Rule 3 checks the candidates that
//! complete inside a run; rule 4 only those in its windows whose size field declares the
//! exact end of the data, usually none.
//!
//! ## Cost
//!
//! Decoding takes time linear in the bytes read. A candidate streaming in is decoded and
//! summed in one pass, and so is one complete in a read: that costs its length, which a
//! valid one then consumes, and an invalid one up to 256 bytes long costs little. Once a
//! longer one fails, or rule 4 has a start to check, the rest of the run takes the
//! general path: its bytes are kept as nibbles with the CRCs of the prefixes of both
//! decoded streams (pairs from even and from odd positions) every 128 bytes, and since
//! `crc(B) = crc(A ++ B) + crc(A) x^(8 |B|)` over GF(2), a candidate is checked with at
//! most 256 bytes summed and four multiplications, each position once. Rule 4 adds, for
//! each read that leaves a candidate waiting, a scan of the tail window (the sizes
//! sought there are below 2^16, so a vectorized test for two zero bytes then nonzero
//! ones skips most of it) and, once per waiting candidate, an index of the head window's
//! declared ends; in the general path it scans both windows: `O(RESYNC_TAIL)` a read.
//!
//! # Memory bound
//!
//! Between calls the decoder holds only the bytes from the earliest waiting candidate
//! on: [`Decoder::pending_len`] is always below `encoded_len(max_payload)` =
//! `2 * (8 + max_payload)` bytes. They are kept as nibbles, half that: a candidate
//! streaming in as its payload buffer (reserved at the declared size, at most
//! `max_payload`), the general path packed two nibbles a byte, plus resolved nibbles not
//! yet compacted (no more than the pending ones, or 256), prefix CRCs (8 bytes per 256
//! nibbles) and the head window's index (at most [`RESYNC_HEAD`] ends).
//!
//! Console text, arbitrary bytes, is made valid UTF-8 for `io:put_chars(unicode, ..)`
//! by [`Utf8Assembler`].
//!
//! # Layout
//!
//! - `encode`: [`encode_frame`] and the streaming [`FrameEncoder`].
//! - `decode`: the [`Decoder`] and what it reports ([`Decoded`]); it moves between three
//!   states: nothing held, a candidate streaming in (the fast path, `candidate`), and
//!   the general path (`run`).
//! - `candidate`: judging a candidate complete in a read, and one streaming in.
//! - `run`: the general path's stretch of nibbles with its prefix CRCs, and rule 4.
//! - `crc`: the CRC-32 algebra that gives a stretch's CRC from two prefix CRCs.
//! - `utf8`: the [`Utf8Assembler`] for console text.
//!
//! The tuning of the decoder (block sizes, the windows of rule 4) is in `tuning`.
//!
//! [`RESYNC_HEAD`]: crate::tuning::RESYNC_HEAD
//! [`RESYNC_TAIL`]: crate::tuning::RESYNC_TAIL

mod candidate;
mod crc;
mod decode;
mod encode;
mod run;
#[cfg(test)]
mod tests;
mod utf8;

pub use decode::{Decoded, Decoder};
pub use encode::{encode_frame, encode_frame_parts, encode_nibbles, FrameEncoder};
pub use utf8::Utf8Assembler;

/// Bytes of the size field before the payload (before nibble encoding).
pub const HEADER_LEN: usize = 4;
/// Bytes of the CRC field after the payload (before nibble encoding).
pub const TRAILER_LEN: usize = 4;
/// The largest payload the decoder accepts by default (256 MiB).
pub const DEFAULT_MAX_FRAME: usize = 256 * 1024 * 1024;

/// Encoded length of the size field.
const ENC_HEADER: usize = 2 * HEADER_LEN;
/// Encoded length of the CRC field.
const ENC_TRAILER: usize = 2 * TRAILER_LEN;

/// Whether `byte` has the shape of an encoded nibble, `0b11xxxx11`.
#[inline]
pub fn is_nibble(byte: u8) -> bool {
    byte & 0xC3 == 0xC3
}

/// Length of the encoding of a frame carrying `payload_len` bytes: `2 * (8 + payload_len)`.
#[inline]
pub fn encoded_len(payload_len: usize) -> usize {
    2 * (HEADER_LEN + payload_len + TRAILER_LEN)
}

/// The nibble a nibble byte stands for.
#[inline]
fn nibble_of(byte: u8) -> u8 {
    (byte >> 2) & 0x0F
}

/// The nibble byte standing for `nibble`.
#[inline]
fn nibble_byte(nibble: u8) -> u8 {
    0xC3 | (nibble << 2)
}
