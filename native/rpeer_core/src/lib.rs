//! rpeer's core, independent of the Erlang VM: the standard_io codec, spawning the peer
//! program, and the standard_io and tcp channels that carry frames to and from it.
//! The `rpeer_nif` crate adapts it to the VM.
//!
//! The origin's side (the node that starts peers) is `channel`, `stdio`, `tcp`,
//! `incoming` and `spawn`; the peer node's side (rpeer's agent) is `peer_side`. The
//! sizes and times tuned for speed are in `tuning`.

pub mod buffers;
pub mod channel;
pub mod codec;
pub mod event;
pub mod incoming;
pub mod owner;
pub mod peer_side;
pub mod spawn;
pub mod stdio;
pub mod sys;
pub mod tcp;
pub mod tuning;
