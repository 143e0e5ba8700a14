//! rpeer's core, independent of the Erlang VM: the standard_io codec, spawning the peer
//! program, and the standard_io and tcp channels that carry frames to and from it.
//! The `rpeer_nif` crate adapts it to the VM.

pub mod buffers;
pub mod channel;
pub mod codec;
pub mod event;
pub mod incoming;
pub mod owner;
pub mod spawn;
pub mod stdio;
pub mod sys;
pub mod tcp;
pub mod tuning;
