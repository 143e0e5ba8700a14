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
//!    order; adjacent console bytes are merged into one [`Event::Console`] per
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

use crate::tuning::{
    DECODE_PIECE, DIRECT, ENCODE_BLOCK, KEEP_CAPACITY, RESYNC_HEAD, RESYNC_TAIL, SETTLE_MAX,
    SUM_STEP,
};
use std::str;

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

/// Appends the nibble encoding of `bytes` (two bytes each, high nibble first), unframed.
pub fn encode_nibbles(bytes: &[u8], out: &mut Vec<u8>) {
    // Arithmetic rather than a lookup table: this form vectorizes. Arrays from a slice
    // iterator have an exact length, so `extend` writes in place without first zeroing
    // the space as `resize` would (a pass over memory that cost a third of the time).
    out.extend(
        bytes
            .iter()
            .flat_map(|&byte| [0xC3 | ((byte >> 2) & 0x3C), 0xC3 | ((byte << 2) & 0x3C)]),
    );
}

/// Appends the whole encoded frame carrying `payload`.
///
/// # Panics
/// If `payload` is longer than `u32::MAX` bytes, which the format cannot express.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    encode_frame_parts(&[payload], out);
}

/// Appends the whole encoded frame whose payload is `parts`, in order.
///
/// # Panics
/// If the parts add up to more than `u32::MAX` bytes, which the format cannot express.
pub fn encode_frame_parts(parts: &[&[u8]], out: &mut Vec<u8>) {
    let len = parts.iter().map(|part| part.len()).sum();
    out.reserve(encoded_len(len));
    let mut encoder = FrameEncoder::new(len, out);
    parts.iter().for_each(|part| encoder.chunk(part, out));
    encoder.finish(out);
}

/// Streaming encoder for big payloads: a writer can encode and write a large payload in
/// bounded chunks without building the whole encoding at once.
#[derive(Debug, Clone)]
pub struct FrameEncoder {
    crc: crc32fast::Hasher,
    payload_len: usize,
    written: usize,
}

impl FrameEncoder {
    /// Starts a frame of `payload_len` bytes: appends the encoded size field.
    ///
    /// # Panics
    /// If `payload_len` exceeds `u32::MAX`, which the format cannot express.
    pub fn new(payload_len: usize, out: &mut Vec<u8>) -> Self {
        let size = u32::try_from(payload_len).expect("peer frames carry at most 4 GiB - 1");
        encode_nibbles(&size.to_be_bytes(), out);
        FrameEncoder {
            crc: crc32fast::Hasher::new(),
            payload_len,
            written: 0,
        }
    }

    /// Appends the encoding of the next part of the payload.
    pub fn chunk(&mut self, part: &[u8], out: &mut Vec<u8>) {
        out.reserve(2 * part.len());
        for block in part.chunks(ENCODE_BLOCK) {
            self.crc.update(block);
            encode_nibbles(block, out);
        }
        self.written += part.len();
    }

    /// Appends the encoded CRC, ending the frame. The parts must add up to the
    /// `payload_len` given to [`FrameEncoder::new`].
    pub fn finish(self, out: &mut Vec<u8>) {
        debug_assert_eq!(
            self.written, self.payload_len,
            "frame payload length mismatch"
        );
        encode_nibbles(&self.crc.finalize().to_be_bytes(), out);
    }
}

/// What the decoder found in the peer's stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Console text, raw bytes as the peer wrote them.
    Console(Vec<u8>),
    /// The payload of a valid frame.
    Frame(Vec<u8>),
}

/// Decodes 8 nibble bytes into a big-endian u32.
#[inline]
fn decode_u32(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(0u32, |acc, &b| (acc << 4) | u32::from((b >> 2) & 0x0F))
}

/// The byte encoded by the nibble bytes `high`, `low`.
#[inline(always)]
fn pair(high: u8, low: u8) -> u8 {
    ((high << 2) & 0xF0) | ((low >> 2) & 0x0F)
}

/// The 16 bytes encoded by the 32 nibble bytes of `raw`.
#[inline(always)]
fn decode_block(raw: &[u8]) -> [u8; 16] {
    let mut out = [0; 16];
    for (k, byte) in out.iter_mut().enumerate() {
        *byte = pair(raw[2 * k], raw[2 * k + 1]);
    }
    out
}

/// Appends the bytes encoded by the nibble pairs of `raw` onto `payload` (`raw.len() / 2`
/// of them, a trailing odd byte is left); returns the AND of all the bytes of `raw`,
/// whose `0xC3` bits are all set if and only if every byte is a nibble byte. The pairs
/// are decoded whether or not they are nibble bytes: the caller keeps those before the
/// first other byte.
#[inline]
fn decode_pairs(raw: &[u8], payload: &mut Vec<u8>) -> u8 {
    // `extend` from fixed-size blocks writes straight into the payload, vectorized, with
    // the check folded in (one lane per raw byte, ANDed as they lie: no shuffle).
    let mut all = [0xFF; 32];
    let blocks = raw.chunks_exact(32);
    let rest = blocks.remainder();
    payload.extend(blocks.flat_map(|block| {
        for (lane, &byte) in all.iter_mut().zip(block) {
            *lane &= byte;
        }
        decode_block(block)
    }));
    payload.extend(rest.chunks_exact(2).map(|r| pair(r[0], r[1])));
    all.iter().chain(rest).fold(0xFF, |acc, &b| acc & b)
}

/// Decodes the run of nibble bytes at the start of `raw` (up to the first other byte)
/// onto `payload`, feeding `crc`, and returns the run's length. If the run is odd, its
/// last byte, the high half of a pair, is left to the caller.
///
/// One pass over `raw`: a piece at a time is decoded and checked onto the payload, then
/// summed there while it is still in cache (no scratch copy, no zero fill; the piece is
/// read again only if the run ends in it).
fn decode_run(raw: &[u8], payload: &mut Vec<u8>, crc: &mut crc32fast::Hasher) -> usize {
    for (i, piece) in raw.chunks(2 * DECODE_PIECE).enumerate() {
        let start = payload.len();
        let run = if decode_pairs(piece, payload) & 0xC3 == 0xC3 {
            piece.len()
        } else {
            nibble_prefix_len(piece)
        };
        payload.truncate(start + run / 2);
        crc.update(&payload[start..]);
        if run < piece.len() {
            return i * 2 * DECODE_PIECE + run;
        }
    }
    raw.len()
}

/// Length of the prefix of `bytes` made of nibble bytes.
#[inline]
fn nibble_prefix_len(bytes: &[u8]) -> usize {
    let mut done = 0;
    for chunk in bytes.chunks_exact(64) {
        // Branch-free within a chunk so it vectorizes: all nibbles iff the AND keeps 0xC3.
        if chunk.iter().fold(0xFF, |acc, &b| acc & b) & 0xC3 != 0xC3 {
            break;
        }
        done += 64;
    }
    let tail = &bytes[done..];
    done + tail
        .iter()
        .position(|&b| !is_nibble(b))
        .unwrap_or(tail.len())
}

/// Length of the prefix of `bytes` without nibble bytes.
#[inline]
fn text_prefix_len(bytes: &[u8]) -> usize {
    let mut done = 0;
    for chunk in bytes.chunks_exact(64) {
        if chunk.iter().fold(false, |acc, &b| acc | is_nibble(b)) {
            break;
        }
        done += 64;
    }
    let tail = &bytes[done..];
    done + tail
        .iter()
        .position(|&b| is_nibble(b))
        .unwrap_or(tail.len())
}

/// The verdict on a frame candidate starting at a nibble byte.
enum Candidate {
    /// A valid frame of this many encoded bytes.
    Frame(usize, Vec<u8>),
    /// Its size field declares more than the maximum: the first byte is console.
    Skip,
    /// Complete with this many encoded bytes, but the CRC does not match: the first byte
    /// is console.
    Invalid(usize),
    /// Could be a frame once the run has this many bytes.
    Wait(usize),
    /// The nibble run ends (a non-nibble byte is at this offset) before the candidate.
    RunEnds(usize),
}

/// Judges the candidate at `bytes[0]`, a nibble byte. Unless `checked` (all of `bytes`
/// are nibble bytes), `bytes` may go on past the end of the nibble run.
fn candidate(bytes: &[u8], checked: bool, max_payload: usize) -> Candidate {
    let header = &bytes[..bytes.len().min(ENC_HEADER)];
    if !checked {
        let run = nibble_prefix_len(header);
        if run < header.len() {
            return Candidate::RunEnds(run);
        }
    }
    if header.len() < ENC_HEADER {
        return Candidate::Wait(ENC_HEADER);
    }
    let Some(need) = declared_len(decode_u32(header), max_payload) else {
        return Candidate::Skip;
    };
    let Some(frame) = bytes.get(..need) else {
        let run = if checked {
            bytes.len()
        } else {
            nibble_prefix_len(bytes)
        };
        return if run < bytes.len() {
            Candidate::RunEnds(run)
        } else {
            Candidate::Wait(need)
        };
    };
    let (body, trailer) = frame[ENC_HEADER..].split_at(need - ENC_HEADER - ENC_TRAILER);
    let mut payload = Vec::with_capacity(body.len() / 2);
    let mut crc = crc32fast::Hasher::new();
    let run = decode_run(body, &mut payload, &mut crc);
    if run < body.len() {
        return Candidate::RunEnds(ENC_HEADER + run);
    }
    if !checked {
        let run = nibble_prefix_len(trailer);
        if run < trailer.len() {
            return Candidate::RunEnds(need - ENC_TRAILER + run);
        }
    }
    if crc.finalize() == decode_u32(trailer) {
        Candidate::Frame(need, payload)
    } else {
        Candidate::Invalid(need)
    }
}

/// The encoded length of a frame whose size field holds `size`, if acceptable.
#[inline]
fn declared_len(size: u32, max_payload: usize) -> Option<usize> {
    let size = usize::try_from(size).ok()?;
    if size > max_payload {
        return None;
    }
    size.checked_mul(2)?.checked_add(ENC_HEADER + ENC_TRAILER)
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

/// CRC-32 arithmetic: the CRC of any stretch of a stream from the CRCs of its prefixes.
///
/// For the standard CRC-32, `crc(A ++ B) = crc(A) * x^(8 |B|) + crc(B)` in GF(2)[x]
/// modulo its polynomial (zlib's `crc32_combine`), so `crc(B) = crc(A ++ B) +
/// shift(crc(A), |B|)`: two prefix CRCs and a multiplication give the CRC of the stretch
/// between them, whatever its length.
mod crc_algebra {
    /// The CRC-32 polynomial, reflected: bit 31 stands for x^0, bit 0 for x^31.
    const POLY: u32 = 0xEDB8_8320;

    /// `a * b` modulo the polynomial, in the reflected representation of the CRC.
    pub(super) const fn mul(a: u32, b: u32) -> u32 {
        let (mut product, mut b) = (0, b);
        let mut bit = 0;
        while bit < 32 {
            if a & (0x8000_0000 >> bit) != 0 {
                product ^= b;
            }
            // b * x: a shift towards x^31, reduced.
            b = (b >> 1) ^ (POLY & (b & 1).wrapping_neg());
            bit += 1;
        }
        product
    }

    /// `POWERS[k][d]` is `x^(8 d 256^k)`: `d 256^k` zero bytes fed to the CRC.
    static POWERS: [[u32; 256]; 4] = powers();

    const fn powers() -> [[u32; 256]; 4] {
        let mut table = [[0; 256]; 4];
        // x^8, one byte; then x^(8 * 256^k).
        let mut step = 0x0080_0000;
        let mut k = 0;
        while k < 4 {
            let mut power = 0x8000_0000; // x^0
            let mut d = 0;
            while d < 256 {
                table[k][d] = power;
                power = mul(power, step);
                d += 1;
            }
            step = power;
            k += 1;
        }
        table
    }

    /// `crc * x^(8 bytes)`: the CRC of a stream after `bytes` more bytes, minus their
    /// own CRC. At most four multiplications (`bytes` below 2^32).
    pub(super) fn shift(crc: u32, bytes: u64) -> u32 {
        let mut out = crc;
        for (k, table) in POWERS.iter().enumerate() {
            let digit = (bytes >> (8 * k)) & 0xFF;
            if digit != 0 {
                out = mul(table[digit as usize], out);
            }
        }
        debug_assert!(bytes >> 32 == 0, "stretches are shorter than 4 GiB");
        out
    }
}

// The tail scan's prefilter needs the sizes it looks for to fit in 16 bits.
const _: () = assert!(RESYNC_TAIL <= 1 << 17);

/// The unresolved stretch of the current nibble run (the general path: before a
/// candidate's size is known, after a candidate failed, or when a later frame ends
/// where the data ends), from its earliest unresolved byte.
///
/// Every byte of it is a nibble byte, so it is kept as nibbles, two a byte, high first:
/// half its raw size, and for a frame at an even position its bytes are the payload.
/// CRCs of the prefixes of the two decoded streams (byte `i` of stream `q` is the pair
/// at positions `q + 2i` and `q + 2i + 1`), every [`SUM_STEP`] bytes and computed the
/// first time they are needed, give the CRC of any stretch with at most `2 SUM_STEP`
/// bytes summed and four multiplications ([`crc_algebra`]): every candidate of a run is
/// judged in constant time, so the search is linear in the run's length.
#[derive(Debug, Clone, Default)]
struct Run {
    /// Nibble `x` (position `x` of the stretch) is the high half of `packed[x / 2]` when
    /// `x` is even, the low half when odd.
    packed: Vec<u8>,
    /// Nibbles held.
    len: usize,
    /// Positions before this one are resolved (kept until [`Run::compact`]).
    first: usize,
    /// `sums[q][k]`: CRC-32 of bytes `[0, k SUM_STEP)` of stream `q` (empty: `[0]`).
    sums: [Vec<u32>; 2],
}

impl Run {
    fn is_empty(&self) -> bool {
        self.first == self.len
    }

    /// Raw bytes not resolved yet.
    fn pending(&self) -> usize {
        self.len - self.first
    }

    fn nibble(&self, x: usize) -> u8 {
        let byte = self.packed[x / 2];
        if x.is_multiple_of(2) {
            byte >> 4
        } else {
            byte & 0x0F
        }
    }

    /// The 32-bit field whose 8 nibbles start at position `x` (`x + 8 <= len`).
    fn word(&self, x: usize) -> u32 {
        let i = x / 2;
        let p = &self.packed[i..];
        let word = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
        if x.is_multiple_of(2) {
            word
        } else {
            (word << 4) | u32::from(p[4] >> 4)
        }
    }

    /// Appends `raw`, nibble bytes.
    fn push(&mut self, mut raw: &[u8]) {
        if self.len % 2 == 1 {
            let (Some(&byte), Some(last)) = (raw.first(), self.packed.last_mut()) else {
                return;
            };
            *last |= nibble_of(byte);
            self.len += 1;
            raw = &raw[1..];
        }
        // (Not `decode_pairs`: with a second caller it was no longer inlined into the
        // streaming loop, and clean frames decoded some 5 % slower.)
        self.packed
            .extend(raw.chunks_exact(2).map(|bytes| pair(bytes[0], bytes[1])));
        if raw.len() % 2 == 1 {
            self.packed.push(nibble_of(raw[raw.len() - 1]) << 4);
        }
        self.len += raw.len();
    }

    /// Calls `f` on bytes `[from, to)` of stream `q` (available: `q + 2 to <= len`), in
    /// one piece for stream 0, in pieces of at most `SUM_STEP` for stream 1.
    fn stream(&self, q: usize, from: usize, to: usize, mut f: impl FnMut(&[u8])) {
        if q == 0 {
            f(&self.packed[from..to]);
            return;
        }
        let mut piece = [0; SUM_STEP];
        let mut at = from;
        while at < to {
            let n = (to - at).min(SUM_STEP);
            let src = &self.packed[at..=at + n];
            for (out, pair) in piece.iter_mut().zip(src.windows(2)) {
                *out = (pair[0] << 4) | (pair[1] >> 4);
            }
            f(&piece[..n]);
            at += n;
        }
    }

    /// CRC-32 of bytes `[0, i)` of stream `q`.
    fn sum(&mut self, q: usize, i: usize) -> u32 {
        let k = i / SUM_STEP;
        if self.sums[q].is_empty() {
            self.sums[q].push(0);
        }
        while self.sums[q].len() <= k {
            let j = self.sums[q].len() - 1;
            let mut hasher = crc32fast::Hasher::new_with_initial(self.sums[q][j]);
            self.stream(q, j * SUM_STEP, (j + 1) * SUM_STEP, |b| hasher.update(b));
            self.sums[q].push(hasher.finalize());
        }
        let mut hasher = crc32fast::Hasher::new_with_initial(self.sums[q][k]);
        self.stream(q, k * SUM_STEP, i, |b| hasher.update(b));
        hasher.finalize()
    }

    /// CRC-32 of bytes `[from, to)` of stream `q`.
    fn stretch_crc(&mut self, q: usize, from: usize, to: usize) -> u32 {
        if to - from <= 2 * SUM_STEP {
            let mut hasher = crc32fast::Hasher::new();
            self.stream(q, from, to, |b| hasher.update(b));
            return hasher.finalize();
        }
        let before = self.sum(q, from);
        self.sum(q, to) ^ crc_algebra::shift(before, (to - from) as u64)
    }

    /// Whether the candidate at `x` declaring `size`, wholly held, has a matching CRC.
    fn valid(&mut self, x: usize, size: usize) -> bool {
        let crc = self.word(x + ENC_HEADER + 2 * size);
        let from = x / 2 + HEADER_LEN;
        self.stretch_crc(x % 2, from, from + size) == crc
    }

    /// The payload of the frame at `x` declaring `size`.
    fn payload(&self, x: usize, size: usize) -> Vec<u8> {
        let from = x / 2 + HEADER_LEN;
        let mut out = Vec::with_capacity(size);
        self.stream(x % 2, from, from + size, |b| out.extend_from_slice(b));
        out
    }

    /// Emits positions `[from, to)` as console text, the raw bytes they were.
    fn text(&self, from: usize, to: usize, sink: &mut Sink<'_>) {
        if from >= to {
            return;
        }
        let mut raw = Vec::with_capacity(to - from);
        let mut x = from;
        if x % 2 == 1 {
            raw.push(nibble_byte(self.nibble(x)));
            x += 1;
        }
        let pairs_end = x + (to.saturating_sub(x)) / 2 * 2;
        if pairs_end > x {
            encode_nibbles(&self.packed[x / 2..pairs_end / 2], &mut raw);
        }
        if pairs_end < to {
            raw.push(nibble_byte(self.nibble(pairs_end)));
        }
        sink.console(&raw);
    }

    /// The raw bytes from the first unresolved one on.
    fn raw(&self) -> Vec<u8> {
        (self.first..self.len)
            .map(|x| nibble_byte(self.nibble(x)))
            .collect()
    }

    /// The encoded length of the candidate at the first unresolved position, if its
    /// size field is held and acceptable.
    fn first_len(&self, max_payload: usize) -> Option<usize> {
        if self.pending() < ENC_HEADER {
            return None;
        }
        declared_len(self.word(self.first), max_payload)
    }

    /// The run rule from `first` up to `limit` (at most `len`): at each position a
    /// candidate wholly before `limit` with a matching CRC is a frame (the search goes on
    /// after it), any other byte is text. Unless `ended`, stops at the first candidate
    /// that `limit` cuts short (it waits), or where a size field is not all there.
    fn resolve(&mut self, limit: usize, ended: bool, max_payload: usize, sink: &mut Sink<'_>) {
        let (mut x, mut text) = (self.first, self.first);
        while x < limit {
            if limit - x < ENC_HEADER {
                if ended {
                    x = limit;
                }
                break;
            }
            let Some(len) = declared_len(self.word(x), max_payload) else {
                x += 1;
                continue;
            };
            if len > limit - x {
                if ended {
                    x += 1;
                    continue;
                }
                break;
            }
            let size = (len - ENC_HEADER - ENC_TRAILER) / 2;
            if self.valid(x, size) {
                self.text(text, x, sink);
                sink.frame(self.payload(x, size));
                x += len;
                text = x;
            } else {
                x += 1;
            }
        }
        self.text(text, x, sink);
        self.first = x;
    }

    /// Rule 4, with the earliest unresolved candidate waiting: the earliest start
    /// within [`RESYNC_HEAD`] bytes after it or [`RESYNC_TAIL`] before the end of the
    /// stretch whose valid frame ends exactly at the end. If there is one, the bytes before it are
    /// resolved as a run that ended there, it is a frame, and the stretch is resolved.
    fn resync(&mut self, max_payload: usize, sink: &mut Sink<'_>) -> bool {
        let (start, end) = (self.first, self.len);
        let Some(last) = end.checked_sub(ENC_HEADER + ENC_TRAILER) else {
            return false;
        };
        if last <= start {
            return false;
        }
        // Starts with the parity of `end` (frames are an even number of bytes).
        let lo = start + 1 + (end - start - 1) % 2;
        let head_end = last.min(start.saturating_add(RESYNC_HEAD));
        let tail = end.saturating_sub(RESYNC_TAIL).max(head_end + 1).max(lo);
        let tail = tail + (end - tail) % 2;
        // The tail window only where the prefiltered scan sees a start ending at `end`:
        // there h = odd + 2j, and h + 16 + 2 field(j) = end.
        let odd = end % 2;
        let tail_end = if tail <= last
            && small_field_ends(
                &self.packed,
                (tail - odd) / 2..(last - odd) / 2 + 1,
                ((end - 2 * ENC_HEADER - odd) / 2) as u32,
                odd == 1,
            ) {
            last
        } else {
            tail.saturating_sub(1)
        };
        let starts = (lo..=head_end)
            .step_by(2)
            .chain((tail..=tail_end).step_by(2));
        for at in starts {
            let Some(len) = resync_len(self.word(at), max_payload) else {
                continue;
            };
            if at + len != end {
                continue;
            }
            let size = (len - ENC_HEADER - ENC_TRAILER) / 2;
            if self.valid(at, size) {
                self.resolve(at, true, max_payload, sink);
                sink.frame(self.payload(at, size));
                self.first = end;
                return true;
            }
        }
        false
    }

    /// Drops resolved nibbles once they are at least half of what is held, in whole
    /// steps of the prefix CRCs so that those stay valid: memory stays within twice the
    /// unresolved stretch, and each nibble is moved at most once on average.
    fn compact(&mut self) {
        let cut = self.first / (2 * SUM_STEP) * (2 * SUM_STEP);
        if cut == 0 || self.first < self.pending() {
            return;
        }
        self.packed.drain(..cut / 2);
        self.len -= cut;
        self.first -= cut;
        let steps = cut / (2 * SUM_STEP);
        for sums in &mut self.sums {
            if sums.len() > steps {
                sums.drain(..steps);
            } else {
                // Prefix CRCs from the new start instead (any common start will do).
                sums.clear();
            }
        }
    }

    /// Forgets everything, giving back a large allocation.
    fn clear(&mut self) {
        if self.packed.capacity() > KEEP_CAPACITY {
            self.packed = Vec::new();
        } else {
            self.packed.clear();
        }
        self.len = 0;
        self.first = 0;
        self.sums.iter_mut().for_each(Vec::clear);
    }
}

/// The size or CRC field at byte `j` of a decoded stream (`bytes`), or when `odd` at
/// the nibble after it (then `bytes[j + 4]` must exist).
#[inline]
fn field_at(bytes: &[u8], j: usize, odd: bool) -> u32 {
    let word = u32::from_be_bytes([bytes[j], bytes[j + 1], bytes[j + 2], bytes[j + 3]]);
    if odd {
        (word << 4) | u32::from(bytes[j + 4] >> 4)
    } else {
        word
    }
}

/// Whether some `j` in `js` has a nonzero `field_at(bytes, j, odd)` with
/// `field + j == target`, where every such field would be below 2^16 (`target - j` is,
/// as in the tail window; `bytes[j + 4]` must exist). In pieces of 64 starts: a byte
/// test for fields in `1..2^16` (in most data, random bytes or runs of zeros, no piece
/// passes it), then a test of their low 16 bits, both written so that they vectorize,
/// then the exact test where that one hits.
fn small_field_ends(bytes: &[u8], js: std::ops::Range<usize>, target: u32, odd: bool) -> bool {
    const PIECE: usize = 64;
    let mut j = js.start;
    while j < js.end {
        let n = (js.end - j).min(PIECE);
        let s = &bytes[j..j + n + 4];
        let (b0, b1, b2, b3, b4) = (&s[..n], &s[1..=n], &s[2..n + 2], &s[3..n + 3], &s[4..]);
        // The field's bits from 16 up are zero (`high`), the 16 below are not (`low`).
        let mut small = 0;
        if odd {
            for k in 0..n {
                let high = b1[k] | (b2[k] & 0xF0);
                let low = (b2[k] & 0x0F) | b3[k] | (b4[k] & 0xF0);
                small |= u8::from(high == 0) & u8::from(low != 0);
            }
        } else {
            for k in 0..n {
                small |= u8::from((b0[k] | b1[k]) == 0) & u8::from((b2[k] | b3[k]) != 0);
            }
        }
        if small != 0 && low_bits_hit(s, n, target.wrapping_sub(j as u32) as u16, odd) {
            let exact = (j..j + n).any(|k| {
                let field = field_at(bytes, k, odd);
                field != 0 && field.wrapping_add(k as u32) == target
            });
            if exact {
                return true;
            }
        }
        j += n;
    }
    false
}

/// Whether some `k < n` has a field at `s[k..]` in `1..2^16` whose low 16 bits are
/// `base - k` (see [`small_field_ends`]).
fn low_bits_hit(s: &[u8], n: usize, base: u16, odd: bool) -> bool {
    let (b0, b1, b2, b3, b4) = (&s[..n], &s[1..=n], &s[2..n + 2], &s[3..n + 3], &s[4..n + 4]);
    let mut hit = 0;
    if odd {
        for k in 0..n {
            let high = b1[k] | (b2[k] & 0xF0);
            let low =
                (u16::from(b2[k] & 0x0F) << 12) | (u16::from(b3[k]) << 4) | u16::from(b4[k] >> 4);
            let want = base.wrapping_sub(k as u16);
            hit |= u8::from(high == 0) & u8::from(low != 0) & u8::from(low == want);
        }
    } else {
        for k in 0..n {
            let low = (u16::from(b2[k]) << 8) | u16::from(b3[k]);
            let want = base.wrapping_sub(k as u16);
            hit |= u8::from((b0[k] | b1[k]) == 0) & u8::from(low != 0) & u8::from(low == want);
        }
    }
    hit != 0
}

/// The encoded length of a frame rule 4 may take whose size field holds `size`: as
/// [`declared_len`], but never an empty frame. Sixteen 0xC3 bytes, eight zero bytes
/// aligned in a payload, are one, so a read of a large frame that ends after eight
/// zero bytes of its payload would otherwise cut it; and peers never send empty frames
/// (every payload is `term_to_binary/1` output).
#[inline]
fn resync_len(size: u32, max_payload: usize) -> Option<usize> {
    (size != 0)
        .then(|| declared_len(size, max_payload))
        .flatten()
}

/// A candidate frame that waits for more bytes, decoded as they arrive so that a big
/// frame spread over many reads is neither copied nor held twice (the fast path). Its
/// raw bytes can be rebuilt exactly (every one is a nibble byte) if it turns out not to
/// be a frame.
#[derive(Debug, Clone)]
struct Body {
    header: [u8; ENC_HEADER],
    size: usize,
    /// The payload decoded so far.
    payload: Vec<u8>,
    /// The first nibble byte of a pair whose second has not arrived.
    odd: Option<u8>,
    trailer: [u8; ENC_TRAILER],
    trailer_len: usize,
    crc: crc32fast::Hasher,
    /// The declared ends (from the candidate's start) of the starts indexed so far
    /// within [`RESYNC_HEAD`] bytes after it, sorted.
    ends: Vec<usize>,
    /// The next start to index.
    indexed: usize,
}

impl Body {
    /// Starts from `raw`, the nibble bytes of the candidate so far: a header declaring
    /// an acceptable size, and fewer bytes than the candidate needs.
    fn start(raw: &[u8]) -> Self {
        let mut header = [0; ENC_HEADER];
        header.copy_from_slice(&raw[..ENC_HEADER]);
        let size = decode_u32(&header) as usize;
        let mut payload = Vec::new();
        // The declared size is at most max_payload; if memory is short, grow as needed.
        let _ = payload.try_reserve_exact(size);
        let mut body = Body {
            header,
            size,
            payload,
            odd: None,
            trailer: [0; ENC_TRAILER],
            trailer_len: 0,
            crc: crc32fast::Hasher::new(),
            ends: Vec::new(),
            indexed: 1,
        };
        let taken = body.absorb(&raw[ENC_HEADER..]);
        debug_assert_eq!(
            taken,
            raw.len() - ENC_HEADER,
            "a held candidate is all nibbles"
        );
        body
    }

    /// Raw bytes received so far.
    fn raw_len(&self) -> usize {
        ENC_HEADER + 2 * self.payload.len() + usize::from(self.odd.is_some()) + self.trailer_len
    }

    /// Raw bytes still missing.
    fn missing(&self) -> usize {
        encoded_len(self.size) - self.raw_len()
    }

    /// Takes the nibble bytes at the start of `raw` (up to the first other byte), at
    /// most `missing()` of them; returns how many it took.
    fn absorb(&mut self, raw: &[u8]) -> usize {
        let raw = &raw[..raw.len().min(self.missing())];
        let mut taken = 0;
        if let Some(high) = self.odd {
            match raw.first() {
                Some(&low) if is_nibble(low) => {
                    let byte = pair(high, low);
                    self.payload.push(byte);
                    self.crc.update(&[byte]);
                    self.odd = None;
                    taken = 1;
                }
                _ => return 0,
            }
        }
        let payload_left = (2 * (self.size - self.payload.len())).min(raw.len() - taken);
        let body = &raw[taken..taken + payload_left];
        let run = decode_run(body, &mut self.payload, &mut self.crc);
        if run % 2 == 1 {
            self.odd = Some(body[run - 1]);
        }
        taken += run;
        if run < body.len() {
            return taken;
        }
        // Bytes past the payload (only once it is complete) belong to the CRC field.
        let trailer = &raw[taken..];
        let run = nibble_prefix_len(trailer);
        let end = self.trailer_len + run;
        self.trailer[self.trailer_len..end].copy_from_slice(&trailer[..run]);
        self.trailer_len = end;
        taken + run
    }

    /// The candidate is complete: its payload if the CRC matches, else its bytes.
    fn complete(self) -> Result<Vec<u8>, Run> {
        if self.crc.clone().finalize() == decode_u32(&self.trailer) {
            Ok(self.payload)
        } else {
            Err(self.into_run())
        }
    }

    /// The nibble at position `x` (from the candidate's start) of the bytes received.
    fn nibble(&self, x: usize) -> u8 {
        if x < ENC_HEADER {
            return nibble_of(self.header[x]);
        }
        let p = x - ENC_HEADER;
        if let Some(&byte) = self.payload.get(p / 2) {
            return if p.is_multiple_of(2) {
                byte >> 4
            } else {
                byte & 0x0F
            };
        }
        let past = p - 2 * self.payload.len();
        match self.odd {
            Some(odd) => nibble_of(odd),
            None => nibble_of(self.trailer[past]),
        }
    }

    /// The 32-bit field whose 8 nibbles start at position `x` (`x + 8 <= raw_len()`).
    fn word(&self, x: usize) -> u32 {
        (x..x + ENC_HEADER).fold(0, |acc, y| (acc << 4) | u32::from(self.nibble(y)))
    }

    /// Whether a start within [`RESYNC_HEAD`] bytes after the candidate's, or
    /// [`RESYNC_TAIL`] before the end of the bytes received, declares a frame that ends
    /// exactly there: a frame rule 4 may take. Only then is the general path worth it.
    fn may_resync(&mut self, max_payload: usize) -> bool {
        let end = self.raw_len();
        let Some(last) = end.checked_sub(ENC_HEADER + ENC_TRAILER) else {
            return false;
        };
        if last == 0 {
            return false;
        }
        self.index_head(max_payload);
        if self.ends.binary_search(&end).is_ok() {
            return true;
        }
        // The tail is scanned at each call (the sizes sought are small).
        let from = end.saturating_sub(RESYNC_TAIL).max(RESYNC_HEAD + 1);
        if from > last {
            return false;
        }
        let from = from + (end - from) % 2;
        let ends_here =
            |x: usize| resync_len(self.word(x), max_payload).is_some_and(|len| x + len == end);
        // Starts whose field lies in the payload with a byte to spare: from 8 to
        // 2 len - 2, with the parity of `end` (8 is even).
        let odd = end % 2;
        let fast_from = from.max(ENC_HEADER + odd);
        let fast_to = last.min((2 * self.payload.len()).saturating_sub(2));
        let fast_to = fast_to.saturating_sub((end - fast_to) % 2);
        if fast_from > fast_to {
            return (from..=last).step_by(2).any(ends_here);
        }
        if (from..fast_from).step_by(2).any(ends_here)
            || (fast_to + 2..=last).step_by(2).any(ends_here)
        {
            return true;
        }
        // There x = 8 + odd + 2j, and the frame ends at `end` if field(j) + j equals
        // (end - 24 - odd) / 2.
        let js = (fast_from - ENC_HEADER - odd) / 2..(fast_to - ENC_HEADER - odd) / 2 + 1;
        let target = ((end - 3 * ENC_HEADER - odd) / 2) as u32;
        small_field_ends(&self.payload, js, target, odd == 1)
    }

    /// Indexes the declared ends of the starts within [`RESYNC_HEAD`] bytes after the
    /// candidate's whose size fields have arrived since the last call.
    fn index_head(&mut self, max_payload: usize) {
        let readable = RESYNC_HEAD.min(self.raw_len() - ENC_HEADER);
        if self.indexed > readable {
            return;
        }
        // A size field whose first byte is over this declares too much.
        let top = (max_payload.min(u32::MAX as usize) >> 24) as u8;
        for x in self.indexed..=readable {
            let (p, in_payload) = (x.wrapping_sub(ENC_HEADER), x >= ENC_HEADER);
            let field = match self.payload.get(p / 2..p / 2 + 5) {
                Some(b) if in_payload => {
                    let odd = p % 2 == 1;
                    let first = if odd { (b[0] << 4) | (b[1] >> 4) } else { b[0] };
                    if first > top {
                        continue;
                    }
                    field_at(b, 0, odd)
                }
                _ => self.word(x),
            };
            if let Some(len) = resync_len(field, max_payload) {
                self.ends.push(x + len);
            }
        }
        self.indexed = readable + 1;
        self.ends.sort_unstable();
    }

    /// The bytes received so far, as a [`Run`] from the candidate's start.
    fn into_run(self) -> Run {
        let mut packed = self.payload;
        let header = [
            pair(self.header[0], self.header[1]),
            pair(self.header[2], self.header[3]),
            pair(self.header[4], self.header[5]),
            pair(self.header[6], self.header[7]),
        ];
        packed.splice(0..0, header);
        let mut run = Run {
            len: 2 * packed.len(),
            packed,
            first: 0,
            sums: Default::default(),
        };
        run.push(self.odd.as_slice());
        run.push(&self.trailer[..self.trailer_len]);
        run
    }
}

/// Appends events to the caller's vector, merging console bytes added by this call.
struct Sink<'a> {
    out: &'a mut Vec<Event>,
    base: usize,
}

impl<'a> Sink<'a> {
    fn new(out: &'a mut Vec<Event>) -> Self {
        let base = out.len();
        Sink { out, base }
    }

    fn console(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.out.len() > self.base {
            if let Some(Event::Console(text)) = self.out.last_mut() {
                text.extend_from_slice(bytes);
                return;
            }
        }
        self.out.push(Event::Console(bytes.to_vec()));
    }

    fn frame(&mut self, payload: Vec<u8>) {
        self.out.push(Event::Frame(payload));
    }
}

/// Resolves the nibble run `run`, which has ended, directly: at most [`DIRECT`] bytes,
/// so each candidate costs little.
fn scan_short_run(run: &[u8], max_payload: usize, sink: &mut Sink<'_>) {
    let (mut at, mut text) = (0, 0);
    while at < run.len() {
        match candidate(&run[at..], true, max_payload) {
            Candidate::Frame(len, payload) => {
                sink.console(&run[text..at]);
                sink.frame(payload);
                at += len;
                text = at;
            }
            // Shorter than a header: so is every later candidate.
            Candidate::Wait(ENC_HEADER) => at = run.len(),
            // (RunEnds only with unchecked bytes.)
            Candidate::Skip
            | Candidate::Invalid(_)
            | Candidate::RunEnds(_)
            | Candidate::Wait(_) => at += 1,
        }
    }
    sink.console(&run[text..]);
}

/// Streaming decoder of the peer's stdout into console text and frames.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_payload: usize,
    /// The earliest candidate of the run, waiting for its bytes (the fast path).
    body: Option<Body>,
    /// Otherwise the unresolved nibble bytes of the run (the general path): fewer than
    /// a header, or a stretch that starts with a waiting candidate.
    run: Run,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder accepting payloads up to [`DEFAULT_MAX_FRAME`].
    pub fn new() -> Self {
        Self::with_max_frame(DEFAULT_MAX_FRAME)
    }

    /// A decoder accepting payloads up to `max_payload` bytes.
    pub fn with_max_frame(max_payload: usize) -> Self {
        Decoder {
            max_payload,
            body: None,
            run: Run::default(),
        }
    }

    /// Feeds bytes read from the peer's stdout, split at any boundary; appends the
    /// events they complete, in stream order.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<Event>) {
        let mut sink = Sink::new(out);
        let mut at = 0;
        while at < input.len() {
            let rest = &input[at..];
            at += if self.body.is_some() {
                self.feed_body(rest, &mut sink)
            } else if !self.run.is_empty() {
                self.feed_run(rest, &mut sink)
            } else {
                self.feed_free(rest, &mut sink)
            };
        }
        if !input.is_empty() {
            self.resync(&mut sink);
        }
    }

    /// Nothing held: text, then frame candidates at each nibble byte, checked for the
    /// end of the nibble run as they are decoded. Returns the bytes taken: all of them,
    /// or up to where a candidate failed and the rest of its run went to `run`.
    fn feed_free(&mut self, input: &[u8], sink: &mut Sink<'_>) -> usize {
        let (mut at, mut text) = (0, 0);
        while at < input.len() {
            if !is_nibble(input[at]) {
                at += text_prefix_len(&input[at..]);
                continue;
            }
            match candidate(&input[at..], false, self.max_payload) {
                Candidate::Frame(len, payload) => {
                    sink.console(&input[text..at]);
                    sink.frame(payload);
                    at += len;
                    text = at;
                }
                Candidate::Skip => at += 1,
                Candidate::Invalid(len) if len <= DIRECT => at += 1,
                Candidate::Invalid(_) => {
                    // Checking each later start of this run the same way could take time
                    // quadratic in its length: the run goes on in the general path.
                    sink.console(&input[text..=at]);
                    let rest = &input[at + 1..];
                    let run = nibble_prefix_len(rest);
                    self.run.push(&rest[..run]);
                    let end = self.run.len;
                    self.run
                        .resolve(end, run < rest.len(), self.max_payload, sink);
                    self.settle();
                    return at + 1 + run;
                }
                Candidate::RunEnds(len) => {
                    // The run ended before this candidate: search the run as a whole.
                    sink.console(&input[text..at]);
                    let run = &input[at..at + len];
                    if len <= DIRECT {
                        scan_short_run(run, self.max_payload, sink);
                    } else {
                        self.run.push(run);
                        self.run.resolve(len, true, self.max_payload, sink);
                        self.run.clear();
                    }
                    at += len;
                    text = at;
                }
                Candidate::Wait(_) => {
                    // The rest of the input, all nibble bytes, may become a frame.
                    sink.console(&input[text..at]);
                    let raw = &input[at..];
                    if raw.len() >= ENC_HEADER {
                        self.body = Some(Body::start(raw));
                    } else {
                        self.run.push(raw);
                    }
                    return input.len();
                }
            }
        }
        sink.console(&input[text..at]);
        at
    }

    /// Continues the waiting candidate with `input`; returns how many bytes it took.
    /// Leaves it waiting (all input taken), or resolved: a frame, or the general path.
    fn feed_body(&mut self, input: &[u8], sink: &mut Sink<'_>) -> usize {
        let Some(body) = self.body.as_mut() else {
            return 0;
        };
        let missing = body.missing();
        let taken = body.absorb(input);
        if taken < missing && taken == input.len() {
            return taken; // still waiting
        }
        let Some(body) = self.body.take() else {
            return taken;
        };
        if taken < missing {
            // The run ended first: not a frame; its later starts are searched.
            self.run = body.into_run();
            let end = self.run.len;
            self.run.resolve(end, true, self.max_payload, sink);
            self.run.clear();
            return taken;
        }
        match body.complete() {
            Ok(payload) => sink.frame(payload),
            Err(run) => {
                // Its first byte is console; the later starts are searched.
                self.run = run;
                self.run.text(0, 1, sink);
                self.run.first = 1;
                let end = self.run.len;
                self.run.resolve(end, false, self.max_payload, sink);
                self.settle();
            }
        }
        taken
    }

    /// Continues the general path with `input`; returns how many bytes it took (none
    /// only when a non-nibble byte comes first, which ends the run and resolves it).
    fn feed_run(&mut self, input: &[u8], sink: &mut Sink<'_>) -> usize {
        let run = nibble_prefix_len(input);
        // Fewer than a header held: take a header's worth at a time, so that a frame
        // starting here streams into a Body rather than through the general path.
        let take = if self.run.pending() < ENC_HEADER {
            run.min(ENC_HEADER)
        } else {
            run
        };
        self.run.push(&input[..take]);
        let end = self.run.len;
        let ended = take == run && run < input.len();
        self.run.resolve(end, ended, self.max_payload, sink);
        self.settle();
        take
    }

    /// After the general path resolved what it could: forgets an empty stretch, hands a
    /// short one that starts with a waiting candidate back to a Body, else compacts it.
    fn settle(&mut self) {
        if self.run.is_empty() {
            self.run.clear();
        } else if self.run.pending() <= SETTLE_MAX && self.run.first_len(self.max_payload).is_some()
        {
            self.body = Some(Body::start(&self.run.raw()));
            self.run.clear();
        } else {
            self.run.compact();
        }
    }

    /// Rule 4 at the end of a feed: with a candidate waiting, a frame that ends exactly
    /// where the data ends (within the windows) is taken.
    fn resync(&mut self, sink: &mut Sink<'_>) {
        if let Some(body) = self.body.as_mut() {
            if !body.may_resync(self.max_payload) {
                return;
            }
            if let Some(body) = self.body.take() {
                self.run = body.into_run();
            }
        }
        if self.run.first_len(self.max_payload).is_none() {
            return;
        }
        if self.run.resync(self.max_payload, sink) {
            self.run.clear();
        } else {
            self.settle();
        }
    }

    /// End of stream: the held bytes are searched for complete frames like a run that
    /// ended, and everything else becomes console text.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        if let Some(body) = self.body.take() {
            self.run = body.into_run();
        }
        if !self.run.is_empty() {
            let mut sink = Sink::new(out);
            let end = self.run.len;
            self.run.resolve(end, true, self.max_payload, &mut sink);
        }
        self.run.clear();
    }

    /// Raw bytes still missing from the frame being received (0 when none is): the
    /// earliest candidate that waits.
    pub fn awaiting(&self) -> usize {
        match &self.body {
            Some(body) => body.missing(),
            None => self
                .run
                .first_len(self.max_payload)
                .map_or(0, |len| len.saturating_sub(self.run.pending())),
        }
    }

    /// Bytes currently held back waiting to see whether they form a frame (a streaming
    /// candidate's bytes count as received); always below `encoded_len(max_payload)`.
    pub fn pending_len(&self) -> usize {
        self.body.as_ref().map_or(self.run.pending(), Body::raw_len)
    }
}

/// Turns arbitrary console bytes into valid UTF-8 for `io:put_chars(unicode, ..)`:
/// valid UTF-8 sequences pass through unchanged; a sequence split across pushes is held
/// (at most 3 bytes) and completed by the next push; any byte that is not part of a valid
/// UTF-8 sequence is taken as a Latin-1 character (U+0080..U+00FF) and encoded as UTF-8,
/// so no byte is ever lost.
#[derive(Debug, Clone, Default)]
pub struct Utf8Assembler {
    partial: [u8; 4],
    len: usize,
}

/// Appends the UTF-8 encoding of Latin-1 character `byte`.
#[inline]
fn push_latin1(byte: u8, out: &mut Vec<u8>) {
    if byte < 0x80 {
        out.push(byte);
    } else {
        out.extend_from_slice(&[0xC0 | (byte >> 6), 0x80 | (byte & 0x3F)]);
    }
}

/// Converts `bytes`; returns the length of the prefix converted. Unless `last`, an
/// incomplete sequence at the end (at most 3 bytes) is left unconverted.
fn convert(mut bytes: &[u8], last: bool, out: &mut Vec<u8>) -> usize {
    let total = bytes.len();
    loop {
        match str::from_utf8(bytes) {
            Ok(_) => {
                out.extend_from_slice(bytes);
                return total;
            }
            Err(error) => {
                let (valid, rest) = bytes.split_at(error.valid_up_to());
                out.extend_from_slice(valid);
                // Bytes of an invalid (or, at the end, unfinished) sequence: none of them
                // can start a valid sequence (they are continuation bytes after the first).
                let bad = match error.error_len() {
                    Some(len) => len,
                    None if last => rest.len(),
                    None => return total - rest.len(),
                };
                rest[..bad].iter().for_each(|&b| push_latin1(b, out));
                bytes = &rest[bad..];
            }
        }
    }
}

impl Utf8Assembler {
    /// An assembler holding nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the UTF-8 conversion of `bytes`, holding back an unfinished sequence.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<u8>) {
        if self.len > 0 {
            // The held bytes start a sequence of at most 4 bytes: complete or refute it
            // with at most 4 bytes in all.
            let take = bytes.len().min(4 - self.len);
            let mut window = [0u8; 4];
            window[..self.len].copy_from_slice(&self.partial[..self.len]);
            window[self.len..self.len + take].copy_from_slice(&bytes[..take]);
            let done = convert(&window[..self.len + take], false, out);
            if done < self.len {
                // Still unfinished: only possible when all of `bytes` went into the window.
                self.partial[..self.len + take].copy_from_slice(&window[..self.len + take]);
                self.len += take;
                return;
            }
            // Bytes of `bytes` after the converted prefix are converted again below.
            bytes = &bytes[done - self.len..];
            self.len = 0;
        }
        let done = convert(bytes, false, out);
        let rest = &bytes[done..];
        self.partial[..rest.len()].copy_from_slice(rest);
        self.len = rest.len();
    }

    /// Converts the held bytes, if any, as Latin-1: the stream ended before the sequence.
    pub fn flush(&mut self, out: &mut Vec<u8>) {
        convert(&self.partial[..self.len], true, out);
        self.len = 0;
    }

    /// Bytes of an unfinished sequence held back (0..=3).
    pub fn held(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(payload, &mut out);
        out
    }

    /// Feeds `chunks` one by one, then finishes.
    fn decode_chunks(decoder: &mut Decoder, chunks: &[&[u8]]) -> Vec<Event> {
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.feed(chunk, &mut out);
        }
        decoder.finish(&mut out);
        out
    }

    fn decode(bytes: &[u8]) -> Vec<Event> {
        decode_chunks(&mut Decoder::new(), &[bytes])
    }

    /// The events of `bytes` fed in reads of `read` bytes, merged.
    fn decode_in_reads(bytes: &[u8], read: usize) -> Vec<Event> {
        let chunks: Vec<&[u8]> = bytes.chunks(read).collect();
        merged(decode_chunks(&mut Decoder::new(), &chunks))
    }

    fn console(bytes: &[u8]) -> Event {
        Event::Console(bytes.to_vec())
    }

    fn framed(payload: &[u8]) -> Event {
        Event::Frame(payload.to_vec())
    }

    /// Merges adjacent console events (across feed calls) for comparisons.
    fn merged(events: Vec<Event>) -> Vec<Event> {
        let mut out: Vec<Event> = Vec::new();
        for event in events {
            match (out.last_mut(), event) {
                (Some(Event::Console(text)), Event::Console(more)) => text.extend(more),
                (_, event) => out.push(event),
            }
        }
        out
    }

    #[test]
    fn is_nibble_matches_definition() {
        for byte in 0..=255u8 {
            assert_eq!(
                is_nibble(byte),
                byte >> 6 == 3 && byte & 3 == 3,
                "{byte:#x}"
            );
        }
        assert_eq!((0..=255u8).filter(|&b| is_nibble(b)).count(), 16);
    }

    #[test]
    fn encoded_len_is_twice_framed_len() {
        assert_eq!(encoded_len(0), 16);
        assert_eq!(encoded_len(1), 18);
        for len in [0, 1, 7, 255, 4096] {
            assert_eq!(frame(&vec![0xAB; len]).len(), encoded_len(len));
        }
    }

    #[test]
    fn encode_nibbles_high_nibble_first() {
        let mut out = vec![b'x'];
        encode_nibbles(&[0x0F, 0xA5], &mut out);
        assert_eq!(out, [b'x', 0xC3, 0xFF, 0xEB, 0xD7]);
        assert!(out[1..].iter().all(|&b| is_nibble(b)));
    }

    #[test]
    fn encode_frame_layout() {
        let payload = b"hello";
        let encoded = frame(payload);
        let mut expected = Vec::new();
        encode_nibbles(&5u32.to_be_bytes(), &mut expected);
        encode_nibbles(payload, &mut expected);
        encode_nibbles(&crc32fast::hash(payload).to_be_bytes(), &mut expected);
        assert_eq!(encoded, expected);
    }

    #[test]
    fn frame_encoder_chunks_match_encode_frame() {
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let expected = frame(&payload);
        for part in [1, 7, 4096, 65_536, 100_000] {
            let mut out = Vec::new();
            let mut encoder = FrameEncoder::new(payload.len(), &mut out);
            for chunk in payload.chunks(part) {
                encoder.chunk(chunk, &mut out);
            }
            encoder.finish(&mut out);
            assert_eq!(out, expected, "parts of {part}");
        }
    }

    #[test]
    fn single_frame() {
        assert_eq!(decode(&frame(b"payload")), [framed(b"payload")]);
    }

    #[test]
    fn empty_payload_frame() {
        assert_eq!(decode(&frame(b"")), [framed(b"")]);
    }

    #[test]
    fn back_to_back_frames_in_one_read() {
        let mut stream = frame(b"one");
        stream.extend(frame(b""));
        stream.extend(frame(&[0xC3; 300]));
        let mut out = Vec::new();
        let mut decoder = Decoder::new();
        decoder.feed(&stream, &mut out);
        assert_eq!(out, [framed(b"one"), framed(b""), framed(&[0xC3; 300])]);
        assert_eq!(decoder.pending_len(), 0);
    }

    #[test]
    fn frame_split_across_reads() {
        let mut stream = b"before\n".to_vec();
        stream.extend(frame(b"split me"));
        stream.extend(b"after\n");
        let expected = [
            console(b"before\n"),
            framed(b"split me"),
            console(b"after\n"),
        ];
        for cut in 0..=stream.len() {
            let events = decode_chunks(&mut Decoder::new(), &[&stream[..cut], &stream[cut..]]);
            assert_eq!(merged(events), expected, "cut at {cut}");
        }
        for first in 0..stream.len() {
            for second in first..=stream.len() {
                let chunks = [&stream[..first], &stream[first..second], &stream[second..]];
                let events = decode_chunks(&mut Decoder::new(), &chunks);
                assert_eq!(merged(events), expected, "cuts at {first}, {second}");
            }
        }
    }

    #[test]
    fn frame_byte_by_byte() {
        let stream = [frame(b"a"), b"\xC3\xA9\n".to_vec(), frame(b"bc")].concat();
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        for byte in &stream {
            decoder.feed(std::slice::from_ref(byte), &mut out);
            assert!(out.iter().all(|e| *e != Event::Console(Vec::new())));
        }
        decoder.finish(&mut out);
        assert_eq!(
            merged(out),
            [framed(b"a"), console(b"\xC3\xA9\n"), framed(b"bc")]
        );
    }

    #[test]
    fn read_incomplete_head() {
        let encoded = frame(b"head");
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        for len in 1..8 {
            decoder.feed(&encoded[len - 1..len], &mut out);
            assert!(out.is_empty());
            assert_eq!(decoder.pending_len(), len);
        }
        decoder.feed(&encoded[7..], &mut out);
        assert_eq!(out, [framed(b"head")]);
        assert_eq!(decoder.pending_len(), 0);
    }

    #[test]
    fn waiting_for_body_holds_bytes() {
        let encoded = frame(&[7; 1000]);
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        decoder.feed(&encoded[..1500], &mut out);
        assert!(out.is_empty());
        assert_eq!(decoder.pending_len(), 1500);
        decoder.feed(&encoded[1500..], &mut out);
        assert_eq!(out, [framed(&[7; 1000])]);
    }

    #[test]
    fn large_frame_across_decode_pieces_in_odd_reads() {
        let payload: Vec<u8> = (0..5 * DECODE_PIECE + 3)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect();
        let stream = [b"x".to_vec(), frame(&payload), b"y".to_vec()].concat();
        for read in [
            1,
            3,
            2 * DECODE_PIECE - 1,
            2 * DECODE_PIECE + 1,
            stream.len(),
        ] {
            let events = decode_in_reads(&stream, read);
            assert_eq!(
                events,
                [console(b"x"), framed(&payload), console(b"y")],
                "reads of {read}"
            );
        }
    }

    #[test]
    fn a_streaming_candidate_cut_by_text_is_text_wherever_it_is_cut() {
        // A text byte inside the body: before it, after an odd byte, deep in a piece.
        let encoded = frame(&vec![0x5A; 3 * DECODE_PIECE]);
        for cut in [
            16,
            17,
            18,
            2 * DECODE_PIECE + 5,
            2 * DECODE_PIECE + 6,
            5 * DECODE_PIECE + 1,
        ] {
            let stream = [&encoded[..cut], b"!", &encoded[cut..]].concat();
            for read in [7, 2 * DECODE_PIECE - 3, stream.len()] {
                let events = decode_in_reads(&stream, read);
                assert_eq!(events, [console(&stream)], "cut at {cut}, reads of {read}");
            }
        }
    }

    #[test]
    fn crc_mismatch_is_text() {
        let mut bad = frame(b"corrupt");
        let last = bad.len() - 1;
        bad[last] ^= 0x04; // still a nibble byte, other nibble value
        assert!(is_nibble(bad[last]));
        let mut stream = bad.clone();
        stream.push(b'\n');
        assert_eq!(decode(&stream), [console(&stream)]);
        // Without a terminator the candidate is complete, so it is judged at once.
        let mut out = Vec::new();
        let mut decoder = Decoder::new();
        decoder.feed(&bad, &mut out);
        decoder.finish(&mut out);
        assert_eq!(merged(out), [console(&bad)]);
    }

    #[test]
    fn oversized_declared_length_is_text() {
        let mut decoder = Decoder::with_max_frame(4);
        let mut out = Vec::new();
        decoder.feed(&frame(b"12345"), &mut out);
        decoder.finish(&mut out);
        assert_eq!(merged(out), [console(&frame(b"12345"))]);
        // The size field declares 2^32-1 bytes: never waited for.
        let mut out = Vec::new();
        let mut decoder = Decoder::new();
        decoder.feed(&[0xFF; 20], &mut out);
        assert_eq!(decoder.pending_len(), 7);
        decoder.finish(&mut out);
        assert_eq!(merged(out), [console(&[0xFF; 20])]);
    }

    #[test]
    fn max_payload_is_inclusive() {
        assert_eq!(
            decode_chunks(&mut Decoder::with_max_frame(5), &[&frame(b"12345")]),
            [framed(b"12345")]
        );
    }

    #[test]
    fn text_between_frames() {
        let stream = [
            b"start ".to_vec(),
            frame(b"f1"),
            b"middle \xC3\xA9\n".to_vec(),
            frame(b"f2"),
            b"end".to_vec(),
        ]
        .concat();
        let mut out = Vec::new();
        Decoder::new().feed(&stream, &mut out);
        assert_eq!(
            out,
            [
                console(b"start "),
                framed(b"f1"),
                console(b"middle \xC3\xA9\n"),
                framed(b"f2"),
                console(b"end")
            ]
        );
    }

    #[test]
    fn plain_text_is_not_delayed() {
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        decoder.feed(b"no nibble bytes here\n", &mut out);
        assert_eq!(out, [console(b"no nibble bytes here\n")]);
        assert_eq!(decoder.pending_len(), 0);
    }

    #[test]
    fn lone_nibble_byte_then_text() {
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        decoder.feed(b"caf\xC3", &mut out);
        assert_eq!(out, [console(b"caf")]);
        assert_eq!(decoder.pending_len(), 1);
        out.clear();
        decoder.feed(b"\xA9 ok", &mut out);
        assert_eq!(out, [console(b"\xC3\xA9 ok")]);
        assert_eq!(decoder.pending_len(), 0);
    }

    #[test]
    fn nibble_text_run_then_valid_frame() {
        // Nibble-looking text (Latin-1 "Ã", "ÿ", ...) directly followed by a frame, split
        // at every point: the garbage's candidates fail (some after waiting) and the frame
        // is still found.
        let garbage: [&[u8]; 6] = [
            b"\xC3",
            b"\xC3\xC3",
            b"\xC3\xFF",
            b"\xC3\xC7\xCB",
            b"\xC3\xC3\xC3\xC3\xC3",
            b"\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF",
        ];
        for garbage in garbage {
            for payload in [&b""[..], b"o", b"ok", b"ok!", b"frame"] {
                if payload.is_empty() && garbage.ends_with(b"\xC3") {
                    // Ambiguous: the empty frame is 16 bytes 0xC3, so the bytes from
                    // one 0xC3 earlier are the same frame, and the earliest one wins.
                    continue;
                }
                let stream = [
                    b"text ".to_vec(),
                    garbage.to_vec(),
                    frame(payload),
                    b"\n".to_vec(),
                ]
                .concat();
                let expected = [
                    console(&[&b"text "[..], garbage].concat()),
                    framed(payload),
                    console(b"\n"),
                ];
                assert_eq!(decode(&stream), expected, "{garbage:x?} {payload:?}");
                for cut in 0..=stream.len() {
                    let events =
                        decode_chunks(&mut Decoder::new(), &[&stream[..cut], &stream[cut..]]);
                    assert_eq!(
                        merged(events),
                        expected,
                        "{garbage:x?} {payload:?} cut at {cut}"
                    );
                }
            }
        }
    }

    #[test]
    fn nibble_text_run_after_frame() {
        let stream = [frame(b"x"), b"\xC3\xC3\xFF".to_vec(), b"!".to_vec()].concat();
        assert_eq!(decode(&stream), [framed(b"x"), console(b"\xC3\xC3\xFF!")]);
    }

    #[test]
    fn frame_inside_held_run_found_when_the_data_or_the_run_ends() {
        // "Ã" then "Ç" declare a big size (0x01xxxxxx bytes) at offset 0: that candidate
        // waits. (Before issue 28 the real frame waited behind it for the run's end.)
        // The real frame ends where the data ends, so it is taken at once (rule 4).
        let stream = [b"\xC3\xC7".to_vec(), frame(b"inner")].concat();
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        decoder.feed(&stream, &mut out);
        assert_eq!(out, [console(b"\xC3\xC7"), framed(b"inner")]);
        assert_eq!(decoder.pending_len(), 0);
        // A read that ends inside the next frame holds both; the run's end finds them.
        let next = frame(b"next");
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        decoder.feed(&[&stream[..], &next[..10]].concat(), &mut out);
        assert!(out.is_empty());
        decoder.feed(&[&next[10..], b"\n"].concat(), &mut out);
        assert_eq!(
            out,
            [
                console(b"\xC3\xC7"),
                framed(b"inner"),
                framed(b"next"),
                console(b"\n")
            ]
        );
        // And likewise at the end of the stream.
        assert_eq!(decode(&stream), [console(b"\xC3\xC7"), framed(b"inner")]);
    }

    #[test]
    fn all_byte_values_as_text() {
        let text: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        assert_eq!(decode(&text), [console(&text)]);
        for cut in 0..=text.len() {
            let events = decode_chunks(&mut Decoder::new(), &[&text[..cut], &text[cut..]]);
            assert_eq!(merged(events), [console(&text)], "cut at {cut}");
        }
    }

    #[test]
    fn finish_flushes_partial_frame_as_text() {
        let encoded = frame(b"never completed");
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        decoder.feed(b"x", &mut out);
        decoder.feed(&encoded[..20], &mut out);
        assert_eq!(out, [console(b"x")]);
        decoder.finish(&mut out);
        assert_eq!(out, [console(b"x"), console(&encoded[..20])]);
        assert_eq!(decoder.pending_len(), 0);
        let mut out = Vec::new();
        decoder.finish(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn pending_bounded() {
        let max = 100;
        let limit = encoded_len(max);
        let mut decoder = Decoder::with_max_frame(max);
        let mut out = Vec::new();
        // Nibble bytes declaring sizes up to the limit, never valid: held, but bounded.
        let mut state = 12345u32;
        for _ in 0..20_000 {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let nibble = if state >> 16 & 7 == 0 {
                0xC3
            } else {
                0xC3 | (((state >> 20) as u8 & 0x0F) << 2)
            };
            decoder.feed(&[nibble], &mut out);
            assert!(decoder.pending_len() < limit, "{}", decoder.pending_len());
        }
        // A frame of exactly max bytes arriving in pieces is held whole until complete.
        let mut decoder = Decoder::with_max_frame(max);
        let encoded = frame(&[0xC3; 100]);
        let mut out = Vec::new();
        for chunk in encoded.chunks(33) {
            decoder.feed(chunk, &mut out);
            assert!(decoder.pending_len() < limit);
        }
        assert_eq!(out, [framed(&[0xC3; 100])]);
    }

    #[test]
    fn console_events_are_merged_and_never_empty() {
        // Text, a failed candidate and more text within one feed: one console event.
        let mut bad = frame(b"abc");
        bad[10] = 0xC7;
        let stream = [b"a".to_vec(), bad.clone(), b"\xC3z".to_vec()].concat();
        let mut out = vec![console(b"earlier")];
        Decoder::new().feed(&stream, &mut out);
        assert_eq!(out, [console(b"earlier"), console(&stream)]);
        let mut out = Vec::new();
        let mut decoder = Decoder::new();
        decoder.feed(b"", &mut out);
        decoder.finish(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn crc_mismatch_across_reads_is_text() {
        // A big corrupted frame streamed over many reads, then a valid frame right after
        // it: the bad one is console, byte for byte, and the good one is still found.
        let payload: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let mut bad = frame(&payload);
        bad[4000] = if bad[4000] == 0xC3 { 0xC7 } else { 0xC3 };
        let stream = [bad.clone(), frame(b"good"), b"\n".to_vec()].concat();
        let expected = [console(&bad), framed(b"good"), console(b"\n")];
        for read in [1, 7, 100, 4096, stream.len()] {
            let events = decode_in_reads(&stream, read);
            assert_eq!(events, expected, "reads of {read}");
        }
    }

    #[test]
    fn text_inside_frame_ends_it() {
        // Text written into the middle of a frame: the frame's bytes become console, the
        // text too, and the next frame is found.
        let encoded = frame(&[0x42; 3000]);
        let stream = [
            &encoded[..2500],
            b"interrupt\n",
            &encoded[2500..],
            &frame(b"next"),
        ]
        .concat();
        let expected = [
            console(&[&encoded[..2500], b"interrupt\n", &encoded[2500..]].concat()),
            framed(b"next"),
        ];
        for read in [1, 13, 1000, stream.len()] {
            let events = decode_in_reads(&stream, read);
            assert_eq!(events, expected, "reads of {read}");
        }
    }

    #[test]
    fn pending_counts_streamed_frame_bytes() {
        let encoded = frame(&[1; 100_000]);
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        let mut fed = 0;
        for read in encoded.chunks(30_001) {
            decoder.feed(read, &mut out);
            fed += read.len();
            if fed < encoded.len() {
                assert_eq!(decoder.pending_len(), fed);
            }
        }
        assert_eq!((out.len(), decoder.pending_len()), (1, 0));
    }

    #[test]
    fn non_nibble_byte_with_same_nibble_bits_is_not_frame_data() {
        // 0x0F carries the nibble bits of 0xCF but is not a nibble byte: wherever it
        // replaces one, the run is cut and the frame is not accepted.
        let encoded = frame(b"xyz");
        for i in 0..encoded.len() {
            let mut broken = encoded.clone();
            broken[i] &= 0x3F;
            assert!(!is_nibble(broken[i]));
            for read in [1, 5, broken.len()] {
                let events = decode_in_reads(&broken, read);
                assert_eq!(events, [console(&broken)], "byte {i}, reads of {read}");
            }
        }
    }

    #[test]
    fn large_frame_held_capacity_released() {
        let payload = vec![0x5A; 2 << 20];
        let encoded = frame(&payload);
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        for chunk in encoded.chunks(64 * 1024 + 3) {
            decoder.feed(chunk, &mut out);
        }
        assert_eq!(out, [Event::Frame(payload)]);
        assert!(decoder.run.packed.capacity() <= KEEP_CAPACITY);
    }

    /// xorshift64*: deterministic pseudo-random numbers for the tests below.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }

        fn nibble_byte(&mut self) -> u8 {
            nibble_byte(self.next() as u8 & 0x0F)
        }
    }

    /// The stream read in pieces of random sizes (1 to `max_read`), merged.
    fn decode_in_random_reads(bytes: &[u8], rng: &mut Rng, max_read: usize) -> Vec<Event> {
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let (read, tail) = rest.split_at((1 + rng.below(max_read)).min(rest.len()));
            decoder.feed(read, &mut out);
            assert!(decoder.pending_len() < encoded_len(DEFAULT_MAX_FRAME));
            rest = tail;
        }
        decoder.finish(&mut out);
        merged(out)
    }

    /// The run rule applied naively to the whole stream (every run ended): at each
    /// position of a nibble run, a wholly contained valid frame, else one byte of text.
    fn reference(stream: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            let run_end = at + nibble_prefix_len(&stream[at..]).max(1);
            while at < run_end {
                let found = (run_end - at >= 16)
                    .then(|| decode_u32(&stream[at..at + 8]) as usize)
                    .filter(|&size| 16 + 2 * size <= run_end - at)
                    .and_then(|size| {
                        let len = 16 + 2 * size;
                        let payload: Vec<u8> = stream[at + 8..at + len - 8]
                            .chunks(2)
                            .map(|p| pair(p[0], p[1]))
                            .collect();
                        let crc = decode_u32(&stream[at + len - 8..at + len]);
                        (crc32fast::hash(&payload) == crc).then_some((len, payload))
                    });
                match found {
                    Some((len, payload)) if is_nibble(stream[at]) => {
                        out.push(Event::Frame(payload));
                        at += len;
                    }
                    _ => {
                        out.push(console(&stream[at..at + 1]));
                        at += 1;
                    }
                }
            }
        }
        merged(out)
    }

    /// Nibble bytes that stand before a frame in the tests below, of kind `kind`.
    fn garbage(kind: usize, len: usize, rng: &mut Rng) -> Vec<u8> {
        let mut out = match kind {
            // Any nibble bytes.
            0 => (0..len).map(|_| rng.nibble_byte()).collect(),
            // Mostly zero nibbles: shifted headers declare believable sizes, many of
            // which are waited for (up to 256 MiB).
            1 => (0..len)
                .map(|_| match rng.below(4) {
                    0 | 1 => 0xC3,
                    2 => 0xC7,
                    _ => rng.nibble_byte(),
                })
                .collect(),
            // "ÃÇÃÇ...": every even offset declares 16 MiB and waits.
            2 => (0..len).map(|i| [0xC3, 0xC7][i % 2]).collect(),
            // Frames with a wrong CRC, and frames cut short, then any nibble bytes.
            _ => {
                let mut out = Vec::new();
                while out.len() < len {
                    let size = rng.below(300);
                    let mut bad = frame(&rng.bytes(size));
                    if rng.below(2) == 0 {
                        let at = rng.below(bad.len());
                        bad[at] = nibble_byte(nibble_of(bad[at]) ^ (1 + rng.below(15) as u8));
                    } else {
                        bad.truncate(1 + rng.below(bad.len() - 1));
                    }
                    out.extend(bad);
                }
                out.truncate(len);
                out
            }
        };
        // Sixteen "Ã" in a row are an empty frame: keep the garbage free of them.
        for i in 15..out.len() {
            if out[i - 15..=i].iter().all(|&b| b == 0xC3) {
                out[i] = 0xC7;
            }
        }
        out
    }

    #[test]
    fn crc_of_any_stretch_from_prefix_crcs() {
        let mut rng = Rng(7);
        let data = rng.bytes(70_000);
        for _ in 0..300 {
            let from = rng.below(data.len());
            let to = from + rng.below(data.len() - from + 1);
            let before = crc32fast::hash(&data[..from]);
            let through = crc32fast::hash(&data[..to]);
            assert_eq!(
                through ^ crc_algebra::shift(before, (to - from) as u64),
                crc32fast::hash(&data[from..to]),
                "{from}..{to}"
            );
        }
        assert_eq!(crc_algebra::shift(0x1234_5678, 0), 0x1234_5678);
    }

    #[test]
    fn run_stretch_crcs_match_both_decoded_streams() {
        let mut rng = Rng(11);
        let raw: Vec<u8> = (0..9_001).map(|_| rng.nibble_byte()).collect();
        let mut run = Run::default();
        for piece in raw.chunks(333) {
            run.push(piece);
        }
        assert_eq!(run.len, raw.len());
        for q in 0..2 {
            let stream: Vec<u8> = raw[q..].chunks_exact(2).map(|p| pair(p[0], p[1])).collect();
            for _ in 0..200 {
                let from = rng.below(stream.len());
                let to = from + rng.below(stream.len() - from + 1);
                assert_eq!(
                    run.stretch_crc(q, from, to),
                    crc32fast::hash(&stream[from..to]),
                    "stream {q}, {from}..{to}"
                );
            }
        }
        // Compaction keeps the sums valid.
        run.first = 5000;
        run.compact();
        let cut = raw.len() - run.len;
        assert_eq!((cut, run.first), (4864, 136));
        let stream: Vec<u8> = raw[cut..]
            .chunks_exact(2)
            .map(|p| pair(p[0], p[1]))
            .collect();
        for (from, to) in [(0, 2000), (100, 2060), (1, 2067)] {
            assert_eq!(
                run.stretch_crc(0, from, to),
                crc32fast::hash(&stream[from..to])
            );
        }
    }

    #[test]
    fn reply_after_nibble_garbage_is_delivered_in_the_same_feed() {
        // The issue-28 cases: raw bytes without a newline, then a reply, then nothing.
        let mut bad_crc = frame(b"not a reply");
        bad_crc[30] = nibble_byte(nibble_of(bad_crc[30]) ^ 1);
        let garbages: [Vec<u8>; 6] = [
            b"\xC3\xC7".to_vec(),
            b"\xC3\xC7\xC3".to_vec(),
            // A header declaring 408 bytes, shifted by one.
            [b"\xC3".to_vec(), frame(&[7; 204])[..5].to_vec()].concat(),
            bad_crc,
            frame(&[1; 100])[..150].to_vec(),
            b"\xC3\xC7".repeat(300),
        ];
        // (Replies within the tail window: the garbage may be longer than the head one.)
        let replies = [frame(b"ok"), frame(&[0x5A; 1000]), frame(&[0xC3; 1])];
        for garbage in &garbages {
            for reply in &replies {
                let expected = [console(garbage), Event::Frame(decode_one(reply))];
                // Garbage and reply in one read, in two, or byte by byte.
                let stream = [&garbage[..], reply].concat();
                for split in [
                    vec![stream.len()],
                    vec![garbage.len(), reply.len()],
                    vec![1; stream.len()],
                ] {
                    let mut decoder = Decoder::new();
                    let mut out = Vec::new();
                    let mut rest = &stream[..];
                    for read in split {
                        let (now, tail) = rest.split_at(read);
                        decoder.feed(now, &mut out);
                        rest = tail;
                    }
                    assert_eq!(
                        merged(out),
                        expected,
                        "{:x?}",
                        &garbage[..garbage.len().min(20)]
                    );
                    assert_eq!(decoder.pending_len(), 0);
                    // The next call's reply, right after, is not held either.
                    let mut out = Vec::new();
                    decoder.feed(&frame(b"next"), &mut out);
                    assert_eq!(out, [framed(b"next")]);
                }
            }
        }
    }

    /// The payload of the one frame that `encoded` is.
    fn decode_one(encoded: &[u8]) -> Vec<u8> {
        match &decode(encoded)[..] {
            [Event::Frame(payload)] => payload.clone(),
            other => panic!("not one frame: {other:?}"),
        }
    }

    #[test]
    fn frame_ending_the_data_is_delivered_at_once() {
        // The reply case: nothing after the frame. With any garbage before it, and
        // whatever the earlier reads were, the feed that completes it delivers it.
        let mut rng = Rng(99);
        for len in (0..=64).chain([100, 500, 1000, 3000, 10_000]) {
            for kind in 0..4 {
                let garbage = garbage(kind, len, &mut rng);
                let size = 1 + rng.below(1000);
                let payload = rng.bytes(size);
                let stream = [garbage.clone(), frame(&payload)].concat();
                let mut decoder = Decoder::new();
                let mut out = Vec::new();
                let mut at = 0;
                while at < stream.len() {
                    let read = (1 + rng.below(700)).min(stream.len() - at);
                    decoder.feed(&stream[at..at + read], &mut out);
                    at += read;
                }
                let mut expected = vec![console(&garbage), framed(&payload)];
                expected.retain(|e| *e != console(b""));
                assert_eq!(merged(out), expected, "garbage kind {kind}, {len} bytes");
                assert_eq!(decoder.pending_len(), 0);
            }
        }
    }

    #[test]
    fn frames_are_found_whatever_precedes_them() {
        // Nibble garbage of every length up to 64 and some long ones, then one to three
        // valid frames back to back, then nothing, a newline or text: in one read, byte
        // by byte and in random reads, every frame comes out, in order, and every other
        // byte as console text exactly once, in order.
        let mut rng = Rng(2024);
        for len in (0..=64).chain([65, 127, 128, 129, 1000, 1025, 4097, 12_000]) {
            for kind in 0..4 {
                let garbage = garbage(kind, len, &mut rng);
                let frames: Vec<Vec<u8>> = (0..1 + rng.below(3))
                    .map(|_| {
                        let longest = if rng.below(5) == 0 { 6000 } else { 300 };
                        let size = 1 + rng.below(longest);
                        rng.bytes(size)
                    })
                    .collect();
                let after: &[u8] = [&b""[..], b"\n", b"more text\n"][rng.below(3)];
                let mut stream = garbage.clone();
                frames.iter().for_each(|p| encode_frame(p, &mut stream));
                stream.extend_from_slice(after);
                let mut expected = vec![console(&garbage)];
                expected.extend(frames.iter().map(|p| framed(p)));
                expected.push(console(after));
                let expected = merged(
                    expected
                        .into_iter()
                        .filter(|e| *e != console(b""))
                        .collect(),
                );
                assert_eq!(
                    reference(&stream),
                    expected,
                    "test design: kind {kind}, {len}"
                );
                let case = format!("garbage kind {kind}, {len} bytes, {} frames", frames.len());
                assert_eq!(
                    decode_in_reads(&stream, stream.len()),
                    expected,
                    "{case}, one read"
                );
                // (Each read costs a scan of the tail window: keep debug builds quick.)
                if stream.len() <= 3000 {
                    assert_eq!(
                        decode_in_reads(&stream, 1),
                        expected,
                        "{case}, byte by byte"
                    );
                }
                for max_read in [50, 300, 5000] {
                    let events = decode_in_random_reads(&stream, &mut rng, max_read);
                    assert_eq!(events, expected, "{case}, random reads up to {max_read}");
                }
            }
        }
    }

    #[test]
    fn long_frame_after_short_garbage_is_found_when_the_data_ends() {
        // Longer than the tail window, but starting within the head window of the
        // waiting candidate ("Ã" "Ç" declare 16 MiB): found in the read that ends it.
        let payload = vec![0x42; 3 * RESYNC_TAIL];
        let stream = [b"\xC3\xC7".to_vec(), frame(&payload)].concat();
        for read in [1000, 4096, stream.len()] {
            let mut decoder = Decoder::new();
            let mut out = Vec::new();
            for chunk in stream.chunks(read) {
                decoder.feed(chunk, &mut out);
            }
            assert_eq!(
                merged(out),
                [console(b"\xC3\xC7"), framed(&payload)],
                "reads of {read}"
            );
        }
    }

    #[test]
    fn long_frame_after_long_waiting_garbage_waits_for_the_run_to_end() {
        // The documented limit of rule 4: a frame longer than the tail window that starts
        // beyond the head window of a waiting candidate is found only once the candidate
        // fails or the run ends ("ÃÇ" repeated: every even offset waits for 16 MiB).
        let garbage = b"\xC3\xC7".repeat(RESYNC_HEAD);
        let payload = vec![0x42; 3 * RESYNC_TAIL];
        let stream = [garbage.clone(), frame(&payload)].concat();
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        for chunk in stream.chunks(1000) {
            decoder.feed(chunk, &mut out);
        }
        assert!(out.is_empty());
        assert_eq!(decoder.pending_len(), stream.len());
        // A short frame that ends the data is taken, and the long one with it.
        decoder.feed(&frame(b"short"), &mut out);
        assert_eq!(out, [console(&garbage), framed(&payload), framed(b"short")]);
    }

    #[test]
    fn an_earlier_candidate_that_completes_in_the_same_data_wins() {
        // A frame whose payload holds the bytes of a whole frame (`inner`, aligned inside
        // it): the outer one, complete in the data, is the frame.
        let inner = frame(b"inner");
        let inner_bytes: Vec<u8> = inner.chunks(2).map(|p| pair(p[0], p[1])).collect();
        let payload = [&b"head"[..], &inner_bytes, b"tail"].concat();
        let outer = frame(&payload);
        assert_eq!(decode(&outer), [framed(&payload)]);
        // Read up to anywhere but the inner frame's end, the outer one is still the frame.
        let inner_end = ENC_HEADER + 2 * (4 + inner_bytes.len());
        for cut in (0..=outer.len()).filter(|&cut| cut != inner_end) {
            let events = decode_chunks(&mut Decoder::new(), &[&outer[..cut], &outer[cut..]]);
            assert_eq!(merged(events), [framed(&payload)], "cut at {cut}");
        }
        // The known ambiguity: a read that ends exactly where the inner frame ends, with
        // the outer one incomplete, takes the inner frame (rule 4), and the outer one's
        // bytes are text.
        let events = decode_chunks(
            &mut Decoder::new(),
            &[&outer[..inner_end], &outer[inner_end..]],
        );
        assert_eq!(
            merged(events),
            [
                console(&outer[..inner_end - inner.len()]),
                framed(b"inner"),
                console(&outer[inner_end..])
            ]
        );
    }

    #[test]
    fn zero_bytes_in_a_payload_are_not_an_empty_frame_to_resync_to() {
        // Eight zero bytes of a payload are, aligned, a valid empty frame (sixteen 0xC3),
        // and nine hold one at the other parity too. A read that ends right after them
        // must not cut the frame: rule 4 never takes an empty frame.
        let mut payload = vec![0; 600];
        payload.extend((0..600u32).map(|i| if i % 40 < 30 { 0 } else { i as u8 | 1 }));
        let encoded = frame(&payload);
        for cut in 0..=encoded.len() {
            let events = decode_chunks(&mut Decoder::new(), &[&encoded[..cut], &encoded[cut..]]);
            assert_eq!(events, [framed(&payload)], "cut at {cut}");
        }
        let zeros = vec![0; 300_000];
        for read in [4096, 65_536, 65_537] {
            assert_eq!(
                decode_in_reads(&frame(&zeros), read),
                [framed(&zeros)],
                "{read}"
            );
        }
        // Rule 3 still takes an empty frame (when nothing earlier covers it).
        assert_eq!(decode(&frame(b"")), [framed(b"")]);
    }

    #[test]
    fn search_stays_linear_on_crafted_runs() {
        // A run whose every offset declares a size that fits in it (nibbles 0 0 0 1 0 0 0
        // 0 repeated: 1, 16, ..., 64 Ki, 1 Mi, 16 Mi, 256 Mi), none valid. Checking each
        // by decoding it would take ~10^10 steps; with prefix CRCs it is quick.
        let unit = [0u8, 0, 0, 1, 0, 0, 0, 0].map(nibble_byte);
        let run = unit.repeat(64 * 1024);
        let stream = [&run[..], b"\n"].concat();
        let start = std::time::Instant::now();
        assert_eq!(decode(&stream), [console(&stream)]);
        assert_eq!(decode_in_reads(&stream, 4096), [console(&stream)]);
        assert_eq!(decode_in_reads(&run, 777), [console(&run)]);
        assert!(start.elapsed().as_secs() < 60, "{:?}", start.elapsed());
    }

    mod props {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        /// Pieces of a stream: nibble garbage (any nibbles, mostly zero nibbles, "ÃÇ"
        /// runs), frames with a wrong CRC or cut short, valid frames, text lines.
        fn piece() -> impl Strategy<Value = (Vec<u8>, Option<Vec<u8>>)> {
            let nibbles = |weights: [u32; 2]| {
                vec(
                    prop_oneof![
                        weights[0] => Just(0xC3u8),
                        weights[1] => (0..16u8).prop_map(nibble_byte),
                    ],
                    0..80,
                )
            };
            prop_oneof![
                1 => nibbles([1, 3]).prop_map(|g| (g, None)),
                1 => nibbles([1, 1]).prop_map(|g| (g, None)),
                1 => (0..300usize).prop_map(|n| (b"\xC3\xC7".repeat(n), None)),
                1 => (vec(any::<u8>(), 1..200), any::<prop::sample::Index>(), 1..16u8).prop_map(
                    |(p, at, flip)| {
                        let mut bad = frame(&p);
                        let at = at.index(bad.len());
                        bad[at] = nibble_byte(nibble_of(bad[at]) ^ flip);
                        (bad, None)
                    }
                ),
                1 => (vec(any::<u8>(), 1..200), any::<prop::sample::Index>()).prop_map(|(p, at)| {
                    let mut cut = frame(&p);
                    // (Cut by at least a CRC field: the next piece cannot complete it.)
                    cut.truncate(at.index(cut.len() - ENC_TRAILER));
                    (cut, None)
                }),
                3 => vec(any::<u8>(), 1..300).prop_map(|p| (frame(&p), Some(p))),
                1 => vec(any::<u8>(), 1..6000).prop_map(|p| (frame(&p), Some(p))),
                1 => (vec(any::<u8>(), 0..20)).prop_map(|mut t| {
                    t.push(b'\n');
                    (t, None)
                }),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { max_global_rejects: 100_000, ..ProptestConfig::with_cases(256) })]

            /// Read in any pieces, a stream decodes as the run rule applied to it whole
            /// (rule 4 takes frames early, not other ones); every valid frame that was
            /// put in comes out, in order.
            #[test]
            fn reads_decode_as_the_whole_stream(
                pieces in vec(piece(), 1..8),
                seed in any::<u64>(),
                max_read in prop_oneof![1 => Just(1usize), 4 => 2..64usize, 5 => 64..9000usize],
            ) {
                let stream: Vec<u8> = pieces.iter().flat_map(|(bytes, _)| bytes.clone()).collect();
                // Sixteen "Ã" are an empty frame; any such run would be taken as one.
                prop_assume!(!stream.windows(16).any(|w| w.iter().all(|&b| b == 0xC3)));
                let expected = reference(&stream);
                let frames: Vec<&Vec<u8>> = expected
                    .iter()
                    .filter_map(|e| match e {
                        Event::Frame(p) => Some(p),
                        Event::Console(_) => None,
                    })
                    .collect();
                let put: Vec<&Vec<u8>> = pieces.iter().filter_map(|(_, p)| p.as_ref()).collect();
                prop_assert_eq!(frames, put);
                let mut rng = Rng(seed | 1);
                prop_assert_eq!(decode_in_random_reads(&stream, &mut rng, max_read), expected);
            }
        }
    }

    fn utf8(chunks: &[&[u8]]) -> Vec<u8> {
        let mut assembler = Utf8Assembler::new();
        let mut out = Vec::new();
        for chunk in chunks {
            assembler.push(chunk, &mut out);
            assert!(assembler.held() <= 3);
        }
        assembler.flush(&mut out);
        assert_eq!(assembler.held(), 0);
        out
    }

    /// Reference: each byte not in a valid sequence as Latin-1, decoded one char at a time.
    fn latin1_fallback(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let valid = (1..=4).rev().find(|&n| {
                bytes
                    .get(at..at + n)
                    .is_some_and(|s| str::from_utf8(s).is_ok())
            });
            match valid {
                Some(n) => {
                    out.extend_from_slice(&bytes[at..at + n]);
                    at += n;
                }
                None => {
                    out.extend_from_slice(char::from(bytes[at]).to_string().as_bytes());
                    at += 1;
                }
            }
        }
        out
    }

    #[test]
    fn utf8_valid_passes_through() {
        let text = "plain, é, ©, 日本語, 🙂🚀, \u{10FFFF}".as_bytes();
        assert_eq!(utf8(&[text]), text);
    }

    #[test]
    fn utf8_split_at_every_point() {
        let text = "aé日🙂b\u{80}\u{7FF}\u{800}\u{FFFF}\u{10000}".as_bytes();
        for first in 0..=text.len() {
            for second in first..=text.len() {
                assert_eq!(
                    utf8(&[&text[..first], &text[first..second], &text[second..]]),
                    text
                );
            }
        }
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(utf8(&bytes), text);
    }

    #[test]
    fn utf8_held_until_completed() {
        let mut assembler = Utf8Assembler::new();
        let mut out = Vec::new();
        assembler.push(b"x\xF0\x9F", &mut out);
        assert_eq!((out.as_slice(), assembler.held()), (&b"x"[..], 2));
        assembler.push(b"\x99", &mut out);
        assert_eq!(assembler.held(), 3);
        assembler.push(b"\x82y", &mut out);
        assert_eq!(out, "x🙂y".as_bytes());
        assert_eq!(assembler.held(), 0);
    }

    #[test]
    fn utf8_invalid_bytes_become_latin1() {
        assert_eq!(utf8(&[b"caf\xE9!"]), "café!".as_bytes());
        assert_eq!(utf8(&[b"\xFF\xFE\x80"]), "ÿþ\u{80}".as_bytes());
        // A broken sequence: each of its bytes as Latin-1, then what follows as usual.
        assert_eq!(utf8(&[b"\xE2\x82A\xC3\xA9"]), "â\u{82}Aé".as_bytes());
        // Overlong and surrogate encodings are invalid too.
        assert_eq!(utf8(&[b"\xC0\xAF"]), "À¯".as_bytes());
        assert_eq!(utf8(&[b"\xED\xA0\x80"]), "í\u{A0}\u{80}".as_bytes());
        assert_eq!(utf8(&[b"\xE2\x82", b"A"]), "â\u{82}A".as_bytes());
    }

    #[test]
    fn utf8_four_byte_sequences() {
        let text = "🙂𝄞\u{10000}\u{10FFFF}".as_bytes();
        for cut in 0..=text.len() {
            assert_eq!(utf8(&[&text[..cut], &text[cut..]]), text);
        }
        // Beyond U+10FFFF is not UTF-8: Latin-1 bytes.
        assert_eq!(
            utf8(&[b"\xF4\x90\x80\x80"]),
            "ô\u{90}\u{80}\u{80}".as_bytes()
        );
    }

    #[test]
    fn utf8_truncated_sequence_flushed_as_latin1() {
        assert_eq!(utf8(&[b"ok\xE6\x97"]), "okæ\u{97}".as_bytes());
        assert_eq!(
            utf8(&[b"\xF0", b"\x9F", b"\x99"]),
            "ð\u{9F}\u{99}".as_bytes()
        );
    }

    #[test]
    fn utf8_matches_reference_for_every_split() {
        let bytes =
            b"a\xC3\xA9\xC3\xE2\x82\xAC\xE2\x82\xF0\x9F\x99\x82\xF0\x9F\xFF\x80\xC2\xE0\xA0\x80z";
        let expected = latin1_fallback(bytes);
        assert!(str::from_utf8(&expected).is_ok());
        for first in 0..=bytes.len() {
            for second in first..=bytes.len() {
                assert_eq!(
                    utf8(&[&bytes[..first], &bytes[first..second], &bytes[second..]]),
                    expected
                );
            }
        }
    }
}
