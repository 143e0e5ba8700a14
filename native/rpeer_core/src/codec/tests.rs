//! The codec's unit tests: encoding, decoding rules 1 to 4, bounds, the CRC algebra,
//! and properties against a reference decoder.

use super::candidate::*;
use super::crc;
use super::decode::*;
use super::run::*;
use super::*;
use crate::tuning::*;

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(payload, &mut out);
    out
}

/// Feeds `chunks` one by one, then finishes.
fn decode_chunks(decoder: &mut Decoder, chunks: &[&[u8]]) -> Vec<Decoded> {
    let mut out = Vec::new();
    for chunk in chunks {
        decoder.feed(chunk, &mut out);
    }
    decoder.finish(&mut out);
    out
}

fn decode(bytes: &[u8]) -> Vec<Decoded> {
    decode_chunks(&mut Decoder::new(), &[bytes])
}

/// The events of `bytes` fed in reads of `read` bytes, merged.
fn decode_in_reads(bytes: &[u8], read: usize) -> Vec<Decoded> {
    let chunks: Vec<&[u8]> = bytes.chunks(read).collect();
    merged(decode_chunks(&mut Decoder::new(), &chunks))
}

fn console(bytes: &[u8]) -> Decoded {
    Decoded::Console(bytes.to_vec())
}

fn framed(payload: &[u8]) -> Decoded {
    Decoded::Frame(payload.to_vec())
}

/// Merges adjacent console events (across feed calls) for comparisons.
fn merged(events: Vec<Decoded>) -> Vec<Decoded> {
    let mut out: Vec<Decoded> = Vec::new();
    for event in events {
        match (out.last_mut(), event) {
            (Some(Decoded::Console(text)), Decoded::Console(more)) => text.extend(more),
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
        assert!(out.iter().all(|e| *e != Decoded::Console(Vec::new())));
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
                let events = decode_chunks(&mut Decoder::new(), &[&stream[..cut], &stream[cut..]]);
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
    assert_eq!(out, [Decoded::Frame(payload)]);
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
fn decode_in_random_reads(bytes: &[u8], rng: &mut Rng, max_read: usize) -> Vec<Decoded> {
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
fn reference(stream: &[u8]) -> Vec<Decoded> {
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
                    out.push(Decoded::Frame(payload));
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
            through ^ crc::shift(before, (to - from) as u64),
            crc32fast::hash(&data[from..to]),
            "{from}..{to}"
        );
    }
    assert_eq!(crc::shift(0x1234_5678, 0), 0x1234_5678);
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
            let expected = [console(garbage), Decoded::Frame(decode_one(reply))];
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
        [Decoded::Frame(payload)] => payload.clone(),
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
                    Decoded::Frame(p) => Some(p),
                    Decoded::Console(_) => None,
                })
                .collect();
            let put: Vec<&Vec<u8>> = pieces.iter().filter_map(|(_, p)| p.as_ref()).collect();
            prop_assert_eq!(frames, put);
            let mut rng = Rng(seed | 1);
            prop_assert_eq!(decode_in_random_reads(&stream, &mut rng, max_read), expected);
        }
    }
}
