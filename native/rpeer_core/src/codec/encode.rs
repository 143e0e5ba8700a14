//! Encoding frames: the whole frame at once, or a large one in bounded chunks.

use super::encoded_len;
use crate::tuning::ENCODE_BLOCK;

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
