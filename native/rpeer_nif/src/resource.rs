//! The channel resource held by the owning Erlang process.

use rpeer_core::channel::Channel;
use rpeer_core::incoming::Incoming;
use rustler::{Env, LocalPid, Monitor, Resource};

/// One peer channel (standard_io, tcp, or the exit status of a detached program), and
/// the stream from the peer that the owner reads through a port: the stdout of the
/// program it spawned with pipes, or the tcp connection.
/// The owner is monitored: when it dies the channel is aborted, which closes the peer's
/// stdin or socket. Dropping the resource aborts it too.
pub struct ChannelResource {
    pub channel: Channel,
    pub incoming: Option<Incoming>,
}

#[rustler::resource_impl]
impl Resource for ChannelResource {
    const IMPLEMENTS_DOWN: bool = true;

    fn down<'a>(&'a self, _env: Env<'a>, _pid: LocalPid, _monitor: Monitor) {
        self.channel.abort();
    }
}

/// The payload of a big frame from the peer, handed to Erlang as a resource binary: the
/// bytes the reader thread decoded are not copied again into a VM binary.
pub struct PayloadResource {
    pub bytes: Vec<u8>,
}

#[rustler::resource_impl]
impl Resource for PayloadResource {}

impl Drop for PayloadResource {
    /// The binary was garbage-collected: its buffer may carry a later large frame.
    fn drop(&mut self) {
        rpeer_core::buffers::give_back(std::mem::take(&mut self.bytes));
    }
}
