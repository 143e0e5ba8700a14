//! Frame candidates on the fast path: judging one that is complete in a read by
//! decoding and summing it, and one that streams in over many reads ([`Body`]).

use super::run::{field_at, resync_len, small_field_ends, Run};
use super::{encoded_len, is_nibble, nibble_of, ENC_HEADER, ENC_TRAILER};
use crate::tuning::{DECODE_PIECE, RESYNC_HEAD, RESYNC_TAIL};

/// Decodes 8 nibble bytes into a big-endian u32.
#[inline]
pub(super) fn decode_u32(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(0u32, |acc, &b| (acc << 4) | u32::from((b >> 2) & 0x0F))
}

/// The byte encoded by the nibble bytes `high`, `low`.
#[inline(always)]
pub(super) fn pair(high: u8, low: u8) -> u8 {
    ((high << 2) & 0xF0) | ((low >> 2) & 0x0F)
}

/// The 16 bytes encoded by the 32 nibble bytes of `raw`.
#[inline(always)]
pub(super) fn decode_block(raw: &[u8]) -> [u8; 16] {
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
pub(super) fn decode_pairs(raw: &[u8], payload: &mut Vec<u8>) -> u8 {
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
pub(super) fn decode_run(raw: &[u8], payload: &mut Vec<u8>, crc: &mut crc32fast::Hasher) -> usize {
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
pub(super) fn nibble_prefix_len(bytes: &[u8]) -> usize {
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
pub(super) fn text_prefix_len(bytes: &[u8]) -> usize {
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
pub(super) enum Candidate {
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
pub(super) fn candidate(bytes: &[u8], checked: bool, max_payload: usize) -> Candidate {
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
pub(super) fn declared_len(size: u32, max_payload: usize) -> Option<usize> {
    let size = usize::try_from(size).ok()?;
    if size > max_payload {
        return None;
    }
    size.checked_mul(2)?.checked_add(ENC_HEADER + ENC_TRAILER)
}

/// A candidate frame that waits for more bytes, decoded as they arrive so that a big
/// frame spread over many reads is neither copied nor held twice (the fast path). Its
/// raw bytes can be rebuilt exactly (every one is a nibble byte) if it turns out not to
/// be a frame.
#[derive(Debug, Clone)]
pub(super) struct Body {
    pub(super) header: [u8; ENC_HEADER],
    pub(super) size: usize,
    /// The payload decoded so far.
    pub(super) payload: Vec<u8>,
    /// The first nibble byte of a pair whose second has not arrived.
    pub(super) odd: Option<u8>,
    pub(super) trailer: [u8; ENC_TRAILER],
    pub(super) trailer_len: usize,
    pub(super) crc: crc32fast::Hasher,
    /// The declared ends (from the candidate's start) of the starts indexed so far
    /// within [`RESYNC_HEAD`] bytes after it, sorted.
    pub(super) ends: Vec<usize>,
    /// The next start to index.
    pub(super) indexed: usize,
}

impl Body {
    /// Starts from `raw`, the nibble bytes of the candidate so far: a header declaring
    /// an acceptable size, and fewer bytes than the candidate needs.
    pub(super) fn start(raw: &[u8]) -> Self {
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
    pub(super) fn raw_len(&self) -> usize {
        ENC_HEADER + 2 * self.payload.len() + usize::from(self.odd.is_some()) + self.trailer_len
    }

    /// Raw bytes still missing.
    pub(super) fn missing(&self) -> usize {
        encoded_len(self.size) - self.raw_len()
    }

    /// Takes the nibble bytes at the start of `raw` (up to the first other byte), at
    /// most `missing()` of them; returns how many it took.
    pub(super) fn absorb(&mut self, raw: &[u8]) -> usize {
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
    pub(super) fn complete(self) -> Result<Vec<u8>, Run> {
        if self.crc.clone().finalize() == decode_u32(&self.trailer) {
            Ok(self.payload)
        } else {
            Err(self.into_run())
        }
    }

    /// The nibble at position `x` (from the candidate's start) of the bytes received.
    pub(super) fn nibble(&self, x: usize) -> u8 {
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
    pub(super) fn word(&self, x: usize) -> u32 {
        (x..x + ENC_HEADER).fold(0, |acc, y| (acc << 4) | u32::from(self.nibble(y)))
    }

    /// Whether a start within [`RESYNC_HEAD`] bytes after the candidate's, or
    /// [`RESYNC_TAIL`] before the end of the bytes received, declares a frame that ends
    /// exactly there: a frame rule 4 may take. Only then is the general path worth it.
    pub(super) fn may_resync(&mut self, max_payload: usize) -> bool {
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
    pub(super) fn index_head(&mut self, max_payload: usize) {
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
    pub(super) fn into_run(self) -> Run {
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
