//! The streaming decoder: what it reports, and how a feed moves between nothing held,
//! a candidate streaming in and the general path.

use super::candidate::{candidate, nibble_prefix_len, text_prefix_len, Body, Candidate};
use super::run::Run;
use super::{is_nibble, DEFAULT_MAX_FRAME, ENC_HEADER};
use crate::tuning::{DIRECT, SETTLE_MAX};

/// What the decoder found in the peer's stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Console text, raw bytes as the peer wrote them.
    Console(Vec<u8>),
    /// The payload of a valid frame.
    Frame(Vec<u8>),
}

/// Appends events to the caller's vector, merging console bytes added by this call.
pub(super) struct DecodedOutput<'a> {
    pub(super) out: &'a mut Vec<Decoded>,
    pub(super) base: usize,
}

impl<'a> DecodedOutput<'a> {
    pub(super) fn new(out: &'a mut Vec<Decoded>) -> Self {
        let base = out.len();
        DecodedOutput { out, base }
    }

    pub(super) fn console(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.out.len() > self.base {
            if let Some(Decoded::Console(text)) = self.out.last_mut() {
                text.extend_from_slice(bytes);
                return;
            }
        }
        self.out.push(Decoded::Console(bytes.to_vec()));
    }

    pub(super) fn frame(&mut self, payload: Vec<u8>) {
        self.out.push(Decoded::Frame(payload));
    }
}

/// Resolves the nibble run `run`, which has ended, directly: at most [`DIRECT`] bytes,
/// so each candidate costs little.
pub(super) fn scan_short_run(run: &[u8], max_payload: usize, sink: &mut DecodedOutput<'_>) {
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
///
/// Between feeds it is in one of three states, which [`Decoder::feed`] dispatches on:
/// nothing held (`body` is `None`, `run` empty), a candidate streaming in (`body`, the
/// fast path), or the general path (`run` not empty). They stay two fields rather than
/// one enum because `run` keeps its buffers from one stretch to the next (up to
/// `KEEP_CAPACITY`), which an enum variant would drop on every change of state.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_payload: usize,
    /// The earliest candidate of the run, waiting for its bytes (the fast path).
    body: Option<Body>,
    /// Otherwise the unresolved nibble bytes of the run (the general path): fewer than
    /// a header, or a stretch that starts with a waiting candidate.
    pub(super) run: Run,
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
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<Decoded>) {
        let mut sink = DecodedOutput::new(out);
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
    fn feed_free(&mut self, input: &[u8], sink: &mut DecodedOutput<'_>) -> usize {
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
    fn feed_body(&mut self, input: &[u8], sink: &mut DecodedOutput<'_>) -> usize {
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
    fn feed_run(&mut self, input: &[u8], sink: &mut DecodedOutput<'_>) -> usize {
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
    fn resync(&mut self, sink: &mut DecodedOutput<'_>) {
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
    pub fn finish(&mut self, out: &mut Vec<Decoded>) {
        if let Some(body) = self.body.take() {
            self.run = body.into_run();
        }
        if !self.run.is_empty() {
            let mut sink = DecodedOutput::new(out);
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
