//! The rpeer NIF: registers the `rpeer_nif` functions and the channel resource. The
//! work is in `rpeer_core`; `nifs` adapts arguments and results, `sink` turns channel
//! events into messages to the owning process.

mod atoms;
mod nifs;
mod resource;
mod sink;

rustler::init!("rpeer_nif");
