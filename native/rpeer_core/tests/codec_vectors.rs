//! The codec against OTP's own encoder, and a throughput measurement.
//!
//! `data/otp_vectors.txt` was generated with OTP 25 by `data/gen_otp_vectors.escript`
//! (`escript gen_otp_vectors.escript > otp_vectors.txt`), which uses a verbatim copy of
//! `encode_port_data/1` from stdlib-4.2's peer.erl. Each line: name, payload hex,
//! encoded frame hex ("-" for empty).

mod codec {
    use rpeer_core::codec::{encode_frame, Decoded, Decoder, FrameEncoder};

    struct Vector {
        name: String,
        payload: Vec<u8>,
        encoded: Vec<u8>,
    }

    fn unhex(hex: &str) -> Vec<u8> {
        if hex == "-" {
            return Vec::new();
        }
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn vectors() -> Vec<Vector> {
        let vectors: Vec<Vector> = include_str!("data/otp_vectors.txt")
            .lines()
            .map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                assert_eq!(fields.len(), 3, "{line}");
                Vector {
                    name: fields[0].to_string(),
                    payload: unhex(fields[1]),
                    encoded: unhex(fields[2]),
                }
            })
            .collect();
        assert_eq!(vectors.len(), 10);
        vectors
    }

    #[test]
    fn encode_matches_otp_vectors() {
        for vector in vectors() {
            let mut out = Vec::new();
            encode_frame(&vector.payload, &mut out);
            assert_eq!(out, vector.encoded, "{}", vector.name);
            let mut out = Vec::new();
            let mut encoder = FrameEncoder::new(vector.payload.len(), &mut out);
            for part in vector.payload.chunks(3) {
                encoder.chunk(part, &mut out);
            }
            encoder.finish(&mut out);
            assert_eq!(out, vector.encoded, "{} (streamed)", vector.name);
        }
    }

    #[test]
    fn decode_otp_vectors() {
        for vector in vectors() {
            let mut out = Vec::new();
            let mut decoder = Decoder::new();
            decoder.feed(&vector.encoded, &mut out);
            assert_eq!(
                out,
                [Decoded::Frame(vector.payload.clone())],
                "{}",
                vector.name
            );
            assert_eq!(decoder.pending_len(), 0);
        }
    }

    #[test]
    fn decode_otp_vectors_mixed_with_text() {
        // All OTP frames in one stream, separated by text full of nibble bytes (UTF-8
        // and Latin-1), fed in 5-byte reads.
        let vectors = vectors();
        let text = "é ÿ Ã ©\n".as_bytes();
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for vector in &vectors {
            stream.extend_from_slice(text);
            stream.extend_from_slice(&vector.encoded);
            expected.push(Decoded::Console(text.to_vec()));
            expected.push(Decoded::Frame(vector.payload.clone()));
        }
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        for read in stream.chunks(5) {
            decoder.feed(read, &mut out);
        }
        decoder.finish(&mut out);
        let mut merged: Vec<Decoded> = Vec::new();
        for event in out {
            match (merged.last_mut(), event) {
                (Some(Decoded::Console(a)), Decoded::Console(b)) => a.extend(b),
                (_, event) => merged.push(event),
            }
        }
        assert_eq!(merged, expected);
    }

    /// Throughput in MB/s of payload (the wire carries twice as many bytes):
    /// `cargo test --release -p rpeer_core --test codec_vectors -- --ignored --nocapture`
    ///
    /// Fresh 64 MB buffers cost page faults that can dominate (the decoder must hand out
    /// a new payload per frame), so reused-buffer and 1 MB-frame figures are shown too.
    #[test]
    #[ignore]
    fn codec_throughput_64mb() {
        use std::time::Instant;
        const LEN: usize = 64 << 20;
        let payload: Vec<u8> = (0..LEN)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut encoded = Vec::new();
        encode_frame(&payload, &mut encoded);
        let mut frames_1m = Vec::new();
        for part in payload.chunks(1 << 20) {
            encode_frame(part, &mut frames_1m);
        }
        let time = |f: &mut dyn FnMut()| {
            let start = Instant::now();
            f();
            LEN as f64 / start.elapsed().as_secs_f64() / 1e6
        };
        let mut reused = Vec::with_capacity(encoded.len());
        for round in 0..3 {
            let encode_fresh = time(&mut || {
                let mut out = Vec::new();
                encode_frame(&payload, &mut out);
                assert_eq!(out.len(), encoded.len());
            });
            let encode_reused = time(&mut || {
                reused.clear();
                encode_frame(&payload, &mut reused);
            });
            assert_eq!(reused, encoded);
            let encode_parts = time(&mut || {
                // Like a writer: 256 KB of payload encoded at a time into one buffer.
                let mut encoder = FrameEncoder::new(LEN, &mut reused);
                for part in payload.chunks(256 * 1024) {
                    reused.clear();
                    encoder.chunk(part, &mut reused);
                }
                encoder.finish(&mut reused);
            });
            let decode_one = time(&mut || {
                let mut events = Vec::new();
                Decoder::new().feed(&encoded, &mut events);
                assert!(matches!(&events[..], [Decoded::Frame(p)] if p.len() == LEN));
            });
            let decode_reads = time(&mut || {
                let mut events = Vec::new();
                let mut decoder = Decoder::new();
                for read in encoded.chunks(64 * 1024) {
                    decoder.feed(read, &mut events);
                }
                assert!(matches!(&events[..], [Decoded::Frame(p)] if *p == payload));
            });
            let decode_1m = time(&mut || {
                let mut events = Vec::new();
                let (mut decoder, mut frames) = (Decoder::new(), 0);
                for read in frames_1m.chunks(1 << 20) {
                    decoder.feed(read, &mut events);
                    frames += events.len();
                    events.clear();
                }
                assert_eq!(frames, 64);
            });
            println!(
                "round {round}: encode 64 MB frame {encode_fresh:.0} (into a reused buffer {encode_reused:.0}, \
                 256 KB parts {encode_parts:.0}); decode 64 MB frame in one read {decode_one:.0}, \
                 in 64 KB reads {decode_reads:.0}; decode 1 MB frames in 1 MB reads {decode_1m:.0}"
            );
        }
    }
}
