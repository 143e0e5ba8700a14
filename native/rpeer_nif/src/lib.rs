//! The rpeer NIF: registers the `rpeer_nif` functions and the channel resource. The
//! work is in `rpeer_core`; `nifs` adapts arguments and results, `sink` turns channel
//! events into messages to the owning process.

mod atoms;
mod nifs;
mod resource;
mod sink;

/// Inside the VM, Rust allocates with `enif_alloc`: large frames reuse the VM's cached
/// carriers instead of fresh mmaps (page faults on every frame), and the memory shows in
/// `erlang:memory()`. Not in `cargo test`, where no VM provides `enif_alloc`.
#[cfg(not(test))]
#[global_allocator]
static ALLOCATOR: rustler::EnifAllocator = rustler::EnifAllocator;

rustler::init!("rpeer_nif", load = nifs::load);
