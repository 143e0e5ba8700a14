//! Throughput of rpeer's standard_io codec alone (MB/s of payload, the wire carries
//! twice as many bytes). Usage: rpeer_codec_bench SIZE_MB ROUNDS
//! Prints one line per measure: `codec <name> <size_mb> <median MB/s> <best MB/s>`.
use rpeer_core::codec::{encode_frame, Decoder, Decoded, FrameEncoder};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let size_mb: usize = args.get(1).map_or(10, |s| s.parse().expect("SIZE_MB"));
    let rounds: usize = args.get(2).map_or(5, |s| s.parse().expect("ROUNDS"));
    let len = size_mb << 20;
    let payload: Vec<u8> = (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut encoded = Vec::new();
    encode_frame(&payload, &mut encoded);

    let mut results: Vec<(&str, Vec<f64>)> = vec![
        ("encode_fresh", vec![]),
        ("encode_256k_parts", vec![]),
        ("decode_64k_reads", vec![]),
        ("decode_one_read", vec![]),
    ];
    let mbps = |secs: f64| len as f64 / secs / 1e6;
    let mut reused = Vec::with_capacity(encoded.len());
    for _ in 0..rounds {
        // A fresh output buffer, as a writer encoding one whole frame would have.
        let t = Instant::now();
        let mut out = Vec::new();
        encode_frame(&payload, &mut out);
        results[0].1.push(mbps(t.elapsed().as_secs_f64()));
        assert!(out == encoded);
        drop(out);
        // Like the channel writer: 256 KB of payload at a time into one reused buffer.
        let t = Instant::now();
        let mut encoder = FrameEncoder::new(len, &mut reused);
        for part in payload.chunks(256 * 1024) {
            reused.clear();
            encoder.chunk(part, &mut reused);
        }
        encoder.finish(&mut reused);
        results[1].1.push(mbps(t.elapsed().as_secs_f64()));
        // Like the channel reader: 64 KB reads from the pipe.
        let t = Instant::now();
        let mut events = Vec::new();
        let mut decoder = Decoder::new();
        for read in encoded.chunks(64 * 1024) {
            decoder.feed(read, &mut events);
        }
        results[2].1.push(mbps(t.elapsed().as_secs_f64()));
        assert!(matches!(&events[..], [Decoded::Frame(p)] if *p == payload));
        drop(events);
        let t = Instant::now();
        let mut events = Vec::new();
        Decoder::new().feed(&encoded, &mut events);
        results[3].1.push(mbps(t.elapsed().as_secs_f64()));
        assert!(matches!(&events[..], [Decoded::Frame(p)] if p.len() == len));
    }
    for (name, mut v) in results {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "codec {name} {size_mb} {:.1} {:.1}",
            v[v.len() / 2],
            v[v.len() - 1]
        );
    }
}
