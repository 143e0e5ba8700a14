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
//! first byte of UTF-8 "é"), so unlike stock `peer` the [`Decoder`] never fails and never
//! loses text:
//!
//! 1. A frame is accepted only as a contiguous run of nibble bytes of exactly
//!    `2 * (8 + Size)` bytes, with `Size <= max_payload` and a matching CRC. It may start
//!    at any position (after text, after a frame, inside a run of nibble-looking text).
//! 2. Every other byte is console text, delivered exactly once, unchanged, in stream
//!    order; adjacent console bytes are merged into one [`Event::Console`] per
//!    [`Decoder::feed`] call, and no empty console event is emitted.
//! 3. A nibble run is held back only while it could still become (the start of) a valid
//!    frame. At the first held byte: fewer than 8 bytes, wait; a declared size over
//!    `max_payload`, that byte is console and the candidate moves on one byte; the whole
//!    candidate present, a valid CRC makes a frame, an invalid one makes that byte console
//!    and moves on one byte; otherwise wait for the missing bytes. When a non-nibble byte
//!    ends the run, the rest of the held run is searched for complete valid frames at
//!    every offset and the remainder is flushed as console, in order. Text without nibble
//!    bytes is never delayed. The result does not depend on how the stream is split.
//!
//! The format itself is ambiguous in one way: text that happens to be a valid encoded
//! frame (such as sixteen bytes 0xC3, an empty frame) is taken as a frame.
//!
//! # Memory bound
//!
//! Between calls the decoder holds only the waiting candidate: [`Decoder::pending_len`]
//! is always below `encoded_len(max_payload)` = `2 * (8 + max_payload)` bytes. A
//! candidate whose header is known is decoded as it arrives, so it actually takes half
//! that (its payload buffer, reserved at the declared size, at most `max_payload`).
//!
//! Console text, arbitrary bytes, is made valid UTF-8 for `io:put_chars(unicode, ..)`
//! by [`Utf8Assembler`].

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
/// Payload bytes encoded per block, summed just before (the block is then in cache).
const BLOCK: usize = 16 * 1024;
/// Payload bytes decoded per piece: the piece is decoded and checked onto the payload in
/// one pass, then summed while it is still in L1 cache.
const PIECE: usize = 4 * 1024;
/// Held buffer capacity above which the buffer is released once empty.
const KEEP_CAPACITY: usize = 1 << 20;

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
        for block in part.chunks(BLOCK) {
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
    for (i, piece) in raw.chunks(2 * PIECE).enumerate() {
        let start = payload.len();
        let run = if decode_pairs(piece, payload) & 0xC3 == 0xC3 {
            piece.len()
        } else {
            nibble_prefix_len(piece)
        };
        payload.truncate(start + run / 2);
        crc.update(&payload[start..]);
        if run < piece.len() {
            return i * 2 * PIECE + run;
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
    /// Cannot be a frame: the first byte is console.
    Skip,
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
    let Some(need) = frame_len(header, max_payload) else {
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
        Candidate::Skip
    }
}

/// The encoded length of the frame whose encoded size field is `header`, if acceptable.
fn frame_len(header: &[u8], max_payload: usize) -> Option<usize> {
    let size = decode_u32(header) as usize;
    if size > max_payload {
        return None;
    }
    size.checked_mul(2)?.checked_add(ENC_HEADER + ENC_TRAILER)
}

/// A candidate frame that waits for more bytes, decoded as they arrive so that a big
/// frame spread over many reads is neither copied nor held twice. Its raw bytes can be
/// rebuilt exactly (every one is a nibble byte) if it turns out not to be a frame.
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

    /// The candidate is complete: its payload if the CRC matches, else its raw bytes.
    fn complete(self) -> Result<Vec<u8>, Vec<u8>> {
        if self.crc.clone().finalize() == decode_u32(&self.trailer) {
            Ok(self.payload)
        } else {
            Err(self.into_raw())
        }
    }

    /// The raw bytes received so far, exactly as they came.
    fn into_raw(self) -> Vec<u8> {
        let mut raw = Vec::with_capacity(self.raw_len());
        raw.extend_from_slice(&self.header);
        encode_nibbles(&self.payload, &mut raw);
        raw.extend(self.odd);
        raw.extend_from_slice(&self.trailer[..self.trailer_len]);
        raw
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

/// Resolves the nibble run `run` from its start; returns how many bytes were resolved
/// (as frames or console). With `ended` the run is known to be complete and everything
/// is resolved; otherwise it stops at the first candidate that must wait.
fn scan_run(run: &[u8], ended: bool, max_payload: usize, sink: &mut Sink<'_>) -> usize {
    let (mut at, mut text) = (0, 0);
    while at < run.len() {
        match candidate(&run[at..], true, max_payload) {
            Candidate::Frame(len, payload) => {
                sink.console(&run[text..at]);
                sink.frame(payload);
                at += len;
                text = at;
            }
            // (RunEnds only with unchecked bytes.)
            Candidate::Skip | Candidate::RunEnds(_) => at += 1,
            Candidate::Wait(_) if !ended => break,
            // Shorter than a header: so is every later candidate.
            Candidate::Wait(ENC_HEADER) => at = run.len(),
            Candidate::Wait(_) => at += 1,
        }
    }
    sink.console(&run[text..at]);
    at
}

/// Streaming decoder of the peer's stdout into console text and frames.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_payload: usize,
    /// Raw nibble bytes of the current run not yet resolved: fewer than a header, or
    /// (only within a call) a candidate that failed and the bytes after it.
    held: Vec<u8>,
    /// The candidate that waits for more bytes, once its header is known.
    body: Option<Body>,
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
            held: Vec::new(),
            body: None,
        }
    }

    /// Feeds bytes read from the peer's stdout, split at any boundary; appends the
    /// events they complete, in stream order.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<Event>) {
        let mut sink = Sink::new(out);
        let mut at = 0;
        loop {
            if self.body.is_some() {
                at += self.feed_body(&input[at..], &mut sink);
                if self.body.is_some() {
                    return; // all input taken
                }
            }
            if self.held.is_empty() {
                break;
            }
            // The held bytes need at most a header's worth of the input.
            let window = &input[at..input.len().min(at + ENC_HEADER)];
            let run = nibble_prefix_len(window);
            at += self.feed_held(&window[..run], run < window.len(), &mut sink);
            if self.body.is_none() && !self.held.is_empty() && at == input.len() {
                return; // waiting for a header
            }
        }
        // Nothing held: text, then frame candidates at each nibble byte, checked for the
        // end of the nibble run as they are decoded.
        let mut text = at;
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
                Candidate::RunEnds(len) => {
                    // The run ended before this candidate: search the run as a whole.
                    sink.console(&input[text..at]);
                    at += scan_run(&input[at..at + len], true, self.max_payload, &mut sink);
                    text = at;
                }
                Candidate::Wait(_) => {
                    // The rest of the input, all nibble bytes, may become a frame.
                    sink.console(&input[text..at]);
                    self.hold(&input[at..]);
                    return;
                }
            }
        }
        sink.console(&input[text..at]);
    }

    /// Holds `raw`, the nibble bytes at the end of the input from a waiting candidate on.
    fn hold(&mut self, raw: &[u8]) {
        if raw.len() >= ENC_HEADER {
            self.body = Some(Body::start(raw));
        } else {
            self.held.extend_from_slice(raw);
        }
    }

    /// Continues the waiting candidate with `input`; returns how many bytes it took.
    /// Leaves it waiting (all input taken), or resolved: a frame, or raw held bytes.
    fn feed_body(&mut self, input: &[u8], sink: &mut Sink<'_>) -> usize {
        let Some(body) = self.body.as_mut() else {
            return 0;
        };
        let missing = body.missing();
        let run = body.absorb(input);
        if run < missing && run == input.len() {
            return run; // still waiting
        }
        let Some(body) = self.body.take() else {
            return run;
        };
        if run < missing {
            // The run ended first: not a frame; its later offsets are searched as held.
            self.held = body.into_raw();
            return run;
        }
        match body.complete() {
            Ok(payload) => sink.frame(payload),
            Err(raw) => {
                sink.console(&raw[..1]);
                self.held.extend_from_slice(&raw[1..]);
            }
        }
        run
    }

    /// Continues the held run with `more`, nibble bytes from the input (`ended`: a
    /// non-nibble byte follows them). Returns how many bytes of `more` were taken. Leaves
    /// the held bytes resolved, waiting for a header (all of `more` taken), or a candidate
    /// streaming in `body`.
    fn feed_held(&mut self, more: &[u8], ended: bool, sink: &mut Sink<'_>) -> usize {
        let (mut used, mut at, mut text) = (0, 0, 0);
        while at < self.held.len() {
            match candidate(&self.held[at..], true, self.max_payload) {
                Candidate::Frame(len, payload) => {
                    sink.console(&self.held[text..at]);
                    sink.frame(payload);
                    at += len;
                    text = at;
                }
                Candidate::Skip | Candidate::RunEnds(_) => at += 1,
                Candidate::Wait(ENC_HEADER) if used < more.len() => {
                    sink.console(&self.held[text..at]);
                    self.held.drain(..at);
                    (at, text) = (0, 0);
                    let take = (ENC_HEADER - self.held.len()).min(more.len() - used);
                    self.held.extend_from_slice(&more[used..used + take]);
                    used += take;
                }
                Candidate::Wait(ENC_HEADER) if ended => at = self.held.len(),
                Candidate::Wait(ENC_HEADER) => break,
                Candidate::Wait(need)
                    if ended && need - (self.held.len() - at) > more.len() - used =>
                {
                    at += 1; // cannot complete before the run ends
                }
                Candidate::Wait(_) => {
                    sink.console(&self.held[text..at]);
                    self.body = Some(Body::start(&self.held[at..]));
                    self.release();
                    return used;
                }
            }
        }
        sink.console(&self.held[text..at]);
        if at == self.held.len() {
            self.release();
        } else {
            self.held.drain(..at);
        }
        used
    }

    /// Empties the held buffer, giving back a large allocation.
    fn release(&mut self) {
        if self.held.capacity() > KEEP_CAPACITY {
            self.held = Vec::new();
        } else {
            self.held.clear();
        }
    }

    /// End of stream: the held bytes are searched for complete frames like a run that
    /// ended, and everything else becomes console text.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        if let Some(body) = self.body.take() {
            self.held = body.into_raw();
        }
        if self.held.is_empty() {
            return;
        }
        let mut sink = Sink::new(out);
        scan_run(&self.held, true, self.max_payload, &mut sink);
        self.release();
    }

    /// Raw bytes still missing from the frame being received (0 when none is).
    pub fn awaiting(&self) -> usize {
        self.body.as_ref().map_or(0, Body::missing)
    }

    /// Bytes currently held back waiting to see whether they form a frame (a streaming
    /// candidate's bytes count as received); always below `encoded_len(max_payload)`.
    pub fn pending_len(&self) -> usize {
        self.held.len() + self.body.as_ref().map_or(0, Body::raw_len)
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
        let payload: Vec<u8> = (0..5 * PIECE + 3)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect();
        let stream = [b"x".to_vec(), frame(&payload), b"y".to_vec()].concat();
        for read in [1, 3, 2 * PIECE - 1, 2 * PIECE + 1, stream.len()] {
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
        let encoded = frame(&vec![0x5A; 3 * PIECE]);
        for cut in [16, 17, 18, 2 * PIECE + 5, 2 * PIECE + 6, 5 * PIECE + 1] {
            let stream = [&encoded[..cut], b"!", &encoded[cut..]].concat();
            for read in [7, 2 * PIECE - 3, stream.len()] {
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
    fn frame_found_inside_held_run_when_run_ends() {
        // "Ã" then "Ç" declare a big size (0x01xxxxxx bytes) at offset 0: the candidate
        // waits, and the real frame is found once a non-nibble byte ends the run.
        let stream = [b"\xC3\xC7".to_vec(), frame(b"inner")].concat();
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        decoder.feed(&stream, &mut out);
        assert!(out.is_empty());
        decoder.feed(b"\n", &mut out);
        assert_eq!(
            out,
            [console(b"\xC3\xC7"), framed(b"inner"), console(b"\n")]
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
        assert!(decoder.held.capacity() <= KEEP_CAPACITY);
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
