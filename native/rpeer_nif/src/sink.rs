//! Delivers channel events to the owner as `{rpeer, Tag, Event}` messages, or, for the
//! peer side's channel, as the messages of an active-once gen_tcp socket; from the
//! channel's own threads (never a VM thread, where `send_and_clear` would panic).

use crate::atoms;
use crate::resource::PayloadResource;
use rpeer_core::event::{Event, Failure, Sink};
use rpeer_core::tuning::ZERO_COPY_FROM;
use rustler::env::{OwnedEnv, SavedTerm};
use rustler::types::atom::Atom;
use rustler::{Encoder, Env, LocalPid, OwnedBinary, ResourceArc, Term};

pub struct ProcessSink {
    owner: LocalPid,
    /// Holds the owner's tag for the channel; never cleared.
    tag_env: OwnedEnv,
    tag: SavedTerm,
    msg_env: OwnedEnv,
    shape: Shape,
}

/// What the messages look like.
#[derive(Clone, Copy)]
enum Shape {
    /// `{rpeer, Tag, Event}` for every event.
    Tagged,
    /// `{tcp, Tag, Frame}` for a frame and `{tcp_closed, Tag}` when the channel ends, as a
    /// gen_tcp socket `Tag` would send (OTP's peer module reads its channel so).
    Socket,
}

impl ProcessSink {
    pub fn new(owner: LocalPid, tag: Term) -> Self {
        Self::with_shape(owner, tag, Shape::Tagged)
    }

    pub fn socket(owner: LocalPid, socket: Term) -> Self {
        Self::with_shape(owner, socket, Shape::Socket)
    }

    fn with_shape(owner: LocalPid, tag: Term, shape: Shape) -> Self {
        let tag_env = OwnedEnv::new();
        let tag = tag_env.save(tag);
        ProcessSink {
            owner,
            tag_env,
            tag,
            msg_env: OwnedEnv::new(),
            shape,
        }
    }
}

impl ProcessSink {
    /// Sends the owner the message `build` makes with the channel's tag.
    fn send(&mut self, build: impl for<'a> FnOnce(Env<'a>, Term<'a>) -> Term<'a>) -> bool {
        let ProcessSink {
            owner,
            tag_env,
            tag,
            msg_env,
            ..
        } = self;
        tag_env.run(|tenv| {
            let tag = tag.load(tenv);
            msg_env
                .send_and_clear(owner, |env| build(env, tag.in_env(env)))
                .is_ok()
        })
    }
}

impl Sink for ProcessSink {
    fn deliver(&mut self, event: Event) -> bool {
        match (self.shape, event) {
            (Shape::Tagged, event) => {
                self.send(|env, tag| (atoms::rpeer(), tag, encode_event(env, event)).encode(env))
            }
            (Shape::Socket, Event::Frame(payload)) => {
                self.send(|env, tag| (atoms::tcp(), tag, payload_binary(env, payload)).encode(env))
            }
            (Shape::Socket, Event::Closed(_) | Event::Failed(_)) => {
                self.send(|env, tag| (atoms::tcp_closed(), tag).encode(env))
            }
            // Nothing else happens on the peer side's channel.
            (Shape::Socket, _) => true,
        }
    }
}

pub fn encode_event<'a>(env: Env<'a>, event: Event) -> Term<'a> {
    match event {
        Event::Frame(payload) => (atoms::frame(), payload_binary(env, payload)).encode(env),
        Event::Console(text) => (atoms::console(), binary(env, &text)).encode(env),
        Event::Stderr(text) => (atoms::stderr(), binary(env, &text)).encode(env),
        Event::ExitStatus(Some(status)) => (atoms::exit_status(), status).encode(env),
        Event::ExitStatus(None) => (atoms::exit_status(), atoms::unknown()).encode(env),
        Event::Accepted => atoms::accepted().encode(env),
        Event::AcceptFailed(failure) => {
            (atoms::accept_failed(), failure_term(env, failure)).encode(env)
        }
        Event::Closed(failure) => (atoms::closed(), failure_term(env, failure)).encode(env),
        Event::FrameTooLarge { size, head } => {
            (atoms::frame_too_large(), size, binary(env, &head)).encode(env)
        }
        Event::Rejected(address) => (atoms::rejected(), address).encode(env),
        Event::Failed(what) => (atoms::failed(), what).encode(env),
        Event::LaunchFailed(errno) => (atoms::launch_failed(), errno_atom(env, &errno)).encode(env),
        Event::Resume => atoms::resume().encode(env),
    }
}

fn failure_term<'a>(env: Env<'a>, failure: Failure) -> Term<'a> {
    match failure {
        Failure::Eof => atoms::closed().encode(env),
        Failure::Timeout => atoms::timeout().encode(env),
        Failure::Io(name) => errno_atom(env, &name),
    }
}

pub fn errno_atom<'a>(env: Env<'a>, name: &str) -> Term<'a> {
    match Atom::from_str(env, name) {
        Ok(atom) => atom.encode(env),
        Err(_) => name.encode(env),
    }
}

/// A binary term of a frame's payload.
fn payload_binary(env: Env, payload: Vec<u8>) -> Term {
    if payload.len() < ZERO_COPY_FROM {
        return binary(env, &payload);
    }
    let resource = ResourceArc::new(PayloadResource { bytes: payload });
    resource.make_binary(env, |held| &held.bytes).encode(env)
}

/// A binary term holding `bytes` (rustler encodes `&[u8]` as a list).
pub fn binary<'a>(env: Env<'a>, bytes: &[u8]) -> Term<'a> {
    match OwnedBinary::new(bytes.len()) {
        Some(mut owned) => {
            owned.as_mut_slice().copy_from_slice(bytes);
            owned.release(env).encode(env)
        }
        // Allocation failure: say so rather than lose the data silently.
        None => (atoms::error(), atoms::frame_too_large()).encode(env),
    }
}
