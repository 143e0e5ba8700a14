//! Console text made valid UTF-8.

use std::str;

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
