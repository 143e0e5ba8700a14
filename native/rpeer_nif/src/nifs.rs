//! The NIF functions: each decodes its arguments, calls rpeer_core, encodes the answer.
//! All of them are short: `spawn` prepares pipes and threads and leaves the launch (which
//! waits for the child to exec) to rpeer_core's spawner threads.

use crate::atoms;
use crate::resource::ChannelResource;
use crate::sink::{encode_event, errno_atom, ProcessSink};
use rpeer_core::channel::{parts_len, Outgoing, Parts};
use rpeer_core::event::Event;
use rpeer_core::incoming::Incoming;
use rpeer_core::spawn::{self, SpawnError, Spec, StdioMode};
use rpeer_core::{peer_side, stdio, sys, tcp};
use rustler::env::{OwnedEnv, SavedTerm};
use rustler::types::tuple::get_tuple;
use rustler::{Atom, Binary, Encoder, Env, Error, NifResult, ResourceArc, Term};
use std::ffi::OsString;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// rpeer-wait's path, given by `rpeer_nif` when it loads the library.
static WAITER: OnceLock<PathBuf> = OnceLock::new();

/// Takes rpeer-wait's path (a binary) from the load info.
pub fn load(_env: Env, load_info: Term) -> bool {
    match load_info.decode::<Binary>() {
        Ok(path) => {
            let _ = WAITER.set(PathBuf::from(os_string(&path)));
            true
        }
        Err(_) => false,
    }
}

/// Starts `Exec Args` with exactly the environment `Env`; `Mode` is `standard_io`
/// (pipes: the channel carries frames, those from the program up to `MaxFrame` bytes)
/// or `detached` (the channel reports only the exit status). Events go to the caller as
/// `{rpeer, Tag, Event}`.
#[rustler::nif]
fn spawn<'a>(
    env: Env<'a>,
    tag: Term<'a>,
    exec: Binary<'a>,
    arguments: Vec<Binary<'a>>,
    environment: Vec<(Binary<'a>, Binary<'a>)>,
    mode: Atom,
    max_frame: usize,
) -> NifResult<Term<'a>> {
    let stdio = if mode == atoms::standard_io() {
        StdioMode::Piped
    } else if mode == atoms::detached() {
        StdioMode::Detached
    } else {
        return Err(Error::BadArg);
    };
    let spec = Spec {
        waiter: WAITER.get().cloned().unwrap_or_default(),
        program: os_string(&exec),
        args: arguments.iter().map(os_string).collect(),
        env: environment
            .iter()
            .map(|(k, v)| (os_string(k), os_string(v)))
            .collect(),
        stdio,
    };
    let (spawned, launch) = match spawn::prepare(&spec) {
        Ok(prepared) => prepared,
        Err(SpawnError::Exec(errno, path)) => {
            let path = path.into_os_string().into_vec();
            let reason = (
                atoms::exec(),
                errno_atom(env, &errno),
                crate::sink::binary(env, &path),
            );
            return Ok((atoms::error(), reason).encode(env));
        }
        Err(SpawnError::Os(errno)) => {
            return Ok((atoms::error(), errno_atom(env, &errno)).encode(env))
        }
    };
    let sink = ProcessSink::new(env.pid(), tag);
    match stdio::start(spawned, max_frame, sink) {
        Ok((channel, stdout)) => {
            // The channel sees the program's output, or why it could not be launched.
            spawn::launch(launch);
            Ok((atoms::ok(), owned_resource(env, channel, stdout)).encode(env))
        }
        Err(e) => Ok(io_error(env, &e)),
    }
}

/// Listens on `Ip:Port` and accepts one peer connection within `AcceptTimeout` ms; with
/// `Verify`, only one from the process group given by `expect_peer/2`. A connection left
/// unanswered for `DeadLink` ms (0: never) is closed.
/// Returns `{ok, Channel, BoundPort}`; events go to the caller as `{rpeer, Tag, Event}`.
#[rustler::nif]
fn listen<'a>(
    env: Env<'a>,
    tag: Term<'a>,
    ip: Term<'a>,
    port: u16,
    (accept_timeout, dead_link): (u64, u64),
    max_frame: usize,
    verify: bool,
) -> NifResult<Term<'a>> {
    let addr = SocketAddr::new(decode_ip(ip)?, port);
    let (listener, bound) = match tcp::listen(addr) {
        Ok(bound) => bound,
        Err(e) => return Ok(io_error(env, &e)),
    };
    let sink = ProcessSink::new(env.pid(), tag);
    let limits = tcp::Limits {
        accept_timeout: Duration::from_millis(accept_timeout),
        max_frame,
        dead_link: (dead_link > 0).then(|| Duration::from_millis(dead_link)),
    };
    match tcp::start(listener, limits, verify, sink) {
        Ok((channel, connection)) => {
            let resource = owned_resource(env, channel, Some(connection));
            Ok((atoms::ok(), resource, bound).encode(env))
        }
        Err(e) => Ok(io_error(env, &e)),
    }
}

/// The peer node's side of the standard_io channel (rpeer's agent): frames come from
/// this node's stdin and go to its stdout. The caller gets them as an active-once
/// gen_tcp socket `Socket` would deliver them: `{tcp, Socket, Frame}`, and
/// `{tcp_closed, Socket}` when stdin ends; acknowledging a frame is the next
/// `{active, once}`.
#[rustler::nif]
fn attach_stdio<'a>(env: Env<'a>, socket: Term<'a>) -> Term<'a> {
    let attached = sys::reopen_std(0, false).and_then(|input| {
        let output = sys::reopen_std(1, true)?;
        peer_side::stdio::attach(input, output, ProcessSink::socket(env.pid(), socket))
    });
    match attached {
        Ok(channel) => (atoms::ok(), owned_resource(env, channel, None)).encode(env),
        Err(e) => io_error(env, &e),
    }
}

/// The reading half of the peer node's side of the tcp channel (rpeer's agent): frames
/// of the connection whose descriptor is `Fd` (gen_tcp's socket, which stays open and
/// writes; it is read borrowed, see `peer_side::tcp::attach_reader`) are delivered as `attach_stdio/1` delivers them.
#[rustler::nif]
fn attach_tcp<'a>(env: Env<'a>, socket: Term<'a>, fd: i32) -> NifResult<Term<'a>> {
    if fd < 0 {
        return Err(Error::BadArg);
    }
    let attached = peer_side::tcp::attach_reader(fd, ProcessSink::socket(env.pid(), socket));
    Ok(match attached {
        Ok(channel) => (atoms::ok(), owned_resource(env, channel, None)).encode(env),
        Err(e) => io_error(env, &e),
    })
}

/// A verifying tcp channel accepts only a connection from the process group of the
/// spawned channel `Peer` (its OS pid leads the group).
#[rustler::nif]
fn expect_peer(
    channel: ResourceArc<ChannelResource>,
    peer: ResourceArc<ChannelResource>,
) -> NifResult<Atom> {
    let pid = peer.channel.process_id().ok_or(Error::BadArg)?;
    channel.channel.expect_peer(pid);
    Ok(atoms::ok())
}

/// Sends one frame to the peer, an external term format binary or iovec (the binaries
/// of `term_to_iovec/1`): written at once when the descriptor takes it, else queued.
/// Never copies it.
#[rustler::nif]
fn send<'a>(
    env: Env<'a>,
    channel: ResourceArc<ChannelResource>,
    payload: Term<'a>,
) -> NifResult<Term<'a>> {
    let binaries = payload_binaries(payload)?;
    let parts: Vec<&[u8]> = binaries.iter().map(Binary::as_slice).collect();
    let sent = channel.channel.send(&parts, || {
        Box::new(KeptPayload::new(payload, parts_len(&parts)))
    });
    Ok(match sent {
        Ok(()) => atoms::ok().encode(env),
        Err(_) => (atoms::error(), atoms::closed()).encode(env),
    })
}

/// A payload's binaries: itself, or the elements of an iovec (a list of binaries).
fn payload_binaries(payload: Term) -> NifResult<Vec<Binary>> {
    match payload.decode::<Binary>() {
        Ok(binary) => Ok(vec![binary]),
        Err(_) => payload.decode::<Vec<Binary>>(),
    }
}

/// The caller handled `Count` data events of the channel.
#[rustler::nif]
fn ack(channel: ResourceArc<ChannelResource>, count: usize) -> Atom {
    channel.channel.ack(count);
    atoms::ok()
}

/// Closes the sending side; events keep coming until the channel ends.
#[rustler::nif]
fn close(channel: ResourceArc<ChannelResource>) -> Atom {
    channel.channel.close();
    atoms::ok()
}

/// Kills the spawned program's process group (SIGKILL).
#[rustler::nif]
fn kill(channel: ResourceArc<ChannelResource>) -> Atom {
    channel.channel.kill();
    atoms::ok()
}

/// OS pid of a spawned program's rpeer-wait, or `undefined` for a tcp channel.
#[rustler::nif]
fn os_pid(env: Env, channel: ResourceArc<ChannelResource>) -> Term {
    match channel.channel.os_pid() {
        Some(pid) => pid.encode(env),
        None => atoms::undefined().encode(env),
    }
}

/// The descriptor of the channel's incoming stream (a spawned program's stdout, or the
/// tcp connection once accepted), for the owner to open a port on, or `undefined` (no
/// such stream, not yet there, or released).
#[rustler::nif]
fn incoming_fd(env: Env, channel: ResourceArc<ChannelResource>) -> Term {
    match channel.incoming.as_ref().and_then(Incoming::raw_fd) {
        Some(fd) => fd.encode(env),
        None => atoms::undefined().encode(env),
    }
}

/// Decodes what the port read from the incoming stream (at most the port's 64 KiB read,
/// a few microseconds), or `eof`: `{Events, Next}`, the events it completes in stream
/// order (`{frame, Payload}`, a program's `{console, Text}`, the connection's
/// `{closed, Reason}`), and `thread` when a large frame is coming whose rest
/// `read_incoming/1` reads faster, else `port`.
#[rustler::nif]
fn decode_incoming<'a>(
    env: Env<'a>,
    channel: ResourceArc<ChannelResource>,
    input: Term<'a>,
) -> NifResult<Term<'a>> {
    let incoming = channel.incoming.as_ref().ok_or(Error::BadArg)?;
    let mut events = Vec::new();
    let large_frame_next = if let Ok(bytes) = input.decode::<Binary>() {
        incoming.decode(bytes.as_slice(), &mut events)
    } else if input == atoms::eof().to_term(env) {
        incoming.finish(&mut events);
        false
    } else {
        return Err(Error::BadArg);
    };
    Ok(incoming_events(env, events, large_frame_next))
}

/// Reads the large frame being received from the incoming stream (its port closed) as
/// far as the stream holds it now, for about `tuning::READ_NOW_TIME`: `{Events, Next}` as
/// decode_incoming/2. With `thread`, the channel's thread reads on, the frame's rest and
/// the frames after it while they are large; its events come as the channel's: frames
/// (and console text), then `resume` (read it through a port again). With `port`, a port
/// reads on: after a very large frame, or at the end of the stream (which it reports).
#[rustler::nif]
fn read_incoming(env: Env, channel: ResourceArc<ChannelResource>) -> NifResult<Term> {
    let incoming = channel.incoming.as_ref().ok_or(Error::BadArg)?;
    let mut events = Vec::new();
    let thread_reads_on = incoming.read_now(&mut events);
    if thread_reads_on {
        incoming.read_on_thread();
    }
    Ok(incoming_events(env, events, thread_reads_on))
}

/// `{Events, thread | port}`: what a read of the incoming stream completed, and who
/// reads on.
fn incoming_events(env: Env, events: Vec<Event>, thread_reads_on: bool) -> Term {
    let terms: Vec<Term> = events
        .into_iter()
        .map(|event| encode_event(env, event))
        .collect();
    let next = if thread_reads_on {
        atoms::thread()
    } else {
        atoms::port()
    };
    (terms, next).encode(env)
}

/// Bytes read from the incoming stream so far (by the port or the channel's thread).
#[rustler::nif]
fn incoming_read_bytes(channel: ResourceArc<ChannelResource>) -> u64 {
    channel.incoming.as_ref().map_or(0, Incoming::read_bytes)
}

/// Closes the origin's end of the incoming stream; call once the port reading it is
/// closed.
#[rustler::nif]
fn release_incoming(channel: ResourceArc<ChannelResource>) -> Atom {
    if let Some(incoming) = &channel.incoming {
        incoming.release();
    }
    atoms::ok()
}

/// An Erlang binary kept alive (not copied) until the writer thread has written it.
struct KeptPayload {
    env: OwnedEnv,
    term: SavedTerm,
    len: usize,
}

impl KeptPayload {
    /// `payload`, a binary or an iovec, kept without copying its binaries.
    fn new(payload: Term, len: usize) -> Self {
        let env = OwnedEnv::new();
        let term = env.save(payload);
        KeptPayload { env, term, len }
    }
}

impl Outgoing for KeptPayload {
    fn len(&self) -> usize {
        self.len
    }

    fn with_parts(&self, f: &mut dyn FnMut(Parts) -> io::Result<()>) -> io::Result<()> {
        self.env
            .run(|env| match payload_binaries(self.term.load(env)) {
                Ok(binaries) => {
                    let parts: Vec<&[u8]> = binaries.iter().map(Binary::as_slice).collect();
                    f(&parts)
                }
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "saved payload is not a binary or an iovec",
                )),
            })
    }
}

fn owned_resource(
    env: Env,
    channel: rpeer_core::channel::Channel,
    incoming: Option<Incoming>,
) -> ResourceArc<ChannelResource> {
    let resource = ResourceArc::new(ChannelResource { channel, incoming });
    // A failed monitor means the owner is already dead: abort at once.
    if env.monitor(&resource, &env.pid()).is_none() {
        resource.channel.abort();
    }
    resource
}

fn os_string(binary: &Binary) -> OsString {
    OsString::from_vec(binary.as_slice().to_vec())
}

fn io_error<'a>(env: Env<'a>, e: &io::Error) -> Term<'a> {
    (atoms::error(), errno_atom(env, &sys::errno_name(e))).encode(env)
}

fn decode_ip(term: Term) -> NifResult<IpAddr> {
    let parts = get_tuple(term)?;
    match parts.len() {
        4 => {
            let mut octets = [0u8; 4];
            for (octet, part) in octets.iter_mut().zip(&parts) {
                *octet = part.decode()?;
            }
            Ok(IpAddr::V4(Ipv4Addr::from(octets)))
        }
        8 => {
            let mut segments = [0u16; 8];
            for (segment, part) in segments.iter_mut().zip(&parts) {
                *segment = part.decode()?;
            }
            Ok(IpAddr::V6(Ipv6Addr::from(segments)))
        }
        _ => Err(Error::BadArg),
    }
}
