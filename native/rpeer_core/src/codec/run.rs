//! The general path of the decoder: the unresolved stretch of a nibble run, judged
//! through prefix CRCs, and rule 4 (resynchronisation) over it.

use super::candidate::{declared_len, pair};
use super::crc;
use super::decode::DecodedOutput;
use super::{encode_nibbles, nibble_byte, nibble_of, ENC_HEADER, ENC_TRAILER, HEADER_LEN};
use crate::tuning::{KEEP_CAPACITY, RESYNC_HEAD, RESYNC_TAIL, SUM_STEP};

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
/// bytes summed and four multiplications ([`crc`]): every candidate of a run is
/// judged in constant time, so the search is linear in the run's length.
#[derive(Debug, Clone, Default)]
pub(super) struct Run {
    /// Nibble `x` (position `x` of the stretch) is the high half of `packed[x / 2]` when
    /// `x` is even, the low half when odd.
    pub(super) packed: Vec<u8>,
    /// Nibbles held.
    pub(super) len: usize,
    /// Positions before this one are resolved (kept until [`Run::compact`]).
    pub(super) first: usize,
    /// `sums[q][k]`: CRC-32 of bytes `[0, k SUM_STEP)` of stream `q` (empty: `[0]`).
    pub(super) sums: [Vec<u32>; 2],
}

impl Run {
    pub(super) fn is_empty(&self) -> bool {
        self.first == self.len
    }

    /// Raw bytes not resolved yet.
    pub(super) fn pending(&self) -> usize {
        self.len - self.first
    }

    pub(super) fn nibble(&self, x: usize) -> u8 {
        let byte = self.packed[x / 2];
        if x.is_multiple_of(2) {
            byte >> 4
        } else {
            byte & 0x0F
        }
    }

    /// The 32-bit field whose 8 nibbles start at position `x` (`x + 8 <= len`).
    pub(super) fn word(&self, x: usize) -> u32 {
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
    pub(super) fn push(&mut self, mut raw: &[u8]) {
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
    pub(super) fn stream(&self, q: usize, from: usize, to: usize, mut f: impl FnMut(&[u8])) {
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
    pub(super) fn sum(&mut self, q: usize, i: usize) -> u32 {
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
    pub(super) fn stretch_crc(&mut self, q: usize, from: usize, to: usize) -> u32 {
        if to - from <= 2 * SUM_STEP {
            let mut hasher = crc32fast::Hasher::new();
            self.stream(q, from, to, |b| hasher.update(b));
            return hasher.finalize();
        }
        let before = self.sum(q, from);
        self.sum(q, to) ^ crc::shift(before, (to - from) as u64)
    }

    /// Whether the candidate at `x` declaring `size`, wholly held, has a matching CRC.
    pub(super) fn valid(&mut self, x: usize, size: usize) -> bool {
        let crc = self.word(x + ENC_HEADER + 2 * size);
        let from = x / 2 + HEADER_LEN;
        self.stretch_crc(x % 2, from, from + size) == crc
    }

    /// The payload of the frame at `x` declaring `size`.
    pub(super) fn payload(&self, x: usize, size: usize) -> Vec<u8> {
        let from = x / 2 + HEADER_LEN;
        let mut out = Vec::with_capacity(size);
        self.stream(x % 2, from, from + size, |b| out.extend_from_slice(b));
        out
    }

    /// Emits positions `[from, to)` as console text, the raw bytes they were.
    pub(super) fn text(&self, from: usize, to: usize, sink: &mut DecodedOutput<'_>) {
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
    pub(super) fn raw(&self) -> Vec<u8> {
        (self.first..self.len)
            .map(|x| nibble_byte(self.nibble(x)))
            .collect()
    }

    /// The encoded length of the candidate at the first unresolved position, if its
    /// size field is held and acceptable.
    pub(super) fn first_len(&self, max_payload: usize) -> Option<usize> {
        if self.pending() < ENC_HEADER {
            return None;
        }
        declared_len(self.word(self.first), max_payload)
    }

    /// The run rule from `first` up to `limit` (at most `len`): at each position a
    /// candidate wholly before `limit` with a matching CRC is a frame (the search goes on
    /// after it), any other byte is text. Unless `ended`, stops at the first candidate
    /// that `limit` cuts short (it waits), or where a size field is not all there.
    pub(super) fn resolve(
        &mut self,
        limit: usize,
        ended: bool,
        max_payload: usize,
        sink: &mut DecodedOutput<'_>,
    ) {
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
    pub(super) fn resync(&mut self, max_payload: usize, sink: &mut DecodedOutput<'_>) -> bool {
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
    pub(super) fn compact(&mut self) {
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
    pub(super) fn clear(&mut self) {
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
pub(super) fn field_at(bytes: &[u8], j: usize, odd: bool) -> u32 {
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
pub(super) fn small_field_ends(
    bytes: &[u8],
    js: std::ops::Range<usize>,
    target: u32,
    odd: bool,
) -> bool {
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
pub(super) fn low_bits_hit(s: &[u8], n: usize, base: u16, odd: bool) -> bool {
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
pub(super) fn resync_len(size: u32, max_payload: usize) -> Option<usize> {
    (size != 0)
        .then(|| declared_len(size, max_payload))
        .flatten()
}
