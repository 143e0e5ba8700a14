//! The standard_io decoder under many random inputs: it never panics, holds at most its
//! memory bound, and accounts for every input byte (console text plus re-encoded frames
//! give back the input). `RPEER_FUZZ_CASES` sets the number of inputs (bin/test runs a
//! million; the default keeps `cargo test` quick).

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rpeer_core::codec::{encode_frame, encoded_len, Decoded, Decoder};

const MAX_FRAME: usize = 64;

fn cases() -> u32 {
    std::env::var("RPEER_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000)
}

/// Inputs made of arbitrary bytes, nibble-looking bytes, valid frames, and frames that
/// are corrupted or cut short, read in arbitrary pieces.
fn input() -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
    let part = prop_oneof![
        vec(any::<u8>(), 0..64),
        vec((0..16u8).prop_map(|n| 0xC3 | (n << 2)), 0..64),
        vec(any::<u8>(), 0..MAX_FRAME + 8).prop_map(|payload| {
            let mut encoded = Vec::new();
            encode_frame(&payload, &mut encoded);
            encoded
        }),
        (
            vec(any::<u8>(), 0..MAX_FRAME),
            any::<prop::sample::Index>(),
            any::<u8>()
        )
            .prop_map(|(payload, at, byte)| {
                let mut encoded = Vec::new();
                encode_frame(&payload, &mut encoded);
                let at = at.index(encoded.len());
                encoded[at] = byte;
                encoded
            }),
        (vec(any::<u8>(), 0..MAX_FRAME), any::<prop::sample::Index>()).prop_map(|(payload, at)| {
            let mut encoded = Vec::new();
            encode_frame(&payload, &mut encoded);
            encoded.truncate(at.index(encoded.len() + 1));
            encoded
        }),
    ];
    (
        vec(part, 0..8).prop_map(|parts| parts.concat()),
        vec(1..97usize, 1..6),
    )
}

#[test]
fn decoder_survives_random_inputs() {
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&input(), |(bytes, cuts)| {
        let mut decoder = Decoder::with_max_frame(MAX_FRAME);
        let mut events = Vec::new();
        let mut rest = &bytes[..];
        for &cut in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (read, tail) = rest.split_at(cut.min(rest.len()));
            decoder.feed(read, &mut events);
            prop_assert!(decoder.pending_len() < encoded_len(MAX_FRAME));
            rest = tail;
        }
        decoder.finish(&mut events);
        let mut rebuilt = Vec::new();
        for event in events {
            match event {
                Decoded::Console(text) => rebuilt.extend(text),
                Decoded::Frame(payload) => {
                    prop_assert!(payload.len() <= MAX_FRAME);
                    encode_frame(&payload, &mut rebuilt);
                }
            }
        }
        prop_assert_eq!(rebuilt, bytes);
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    println!("decoder fuzz: {} inputs, no failure", cases());
}
