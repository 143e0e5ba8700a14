//! The peer side: what rpeer's agent (`erlang/rpeer_agent.erl`) runs on the peer node.
//!
//! Everything else in this crate runs on the origin, the node that starts peers. On the
//! peer node, OTP's own `peer` code serves the origin's calls and I/O, as with stock
//! peer; rpeer's agent gives it, in place of a gen_tcp socket, a socket whose frames are
//! read and written here, in the same wire formats as the origin's (see `codec` and
//! `tcp`), from the other end:
//!
//! - [`stdio`]: the standard_io connection. Frames come in on the node's stdin and go
//!   out on its stdout, through rpeer's codec instead of peer's Erlang one.
//! - [`tcp`]: a tcp peer on the origin's host. The agent's gen_tcp socket connects and
//!   writes; a thread here reads its frames, borrowing the socket.
//!
//! Both deliver [`crate::event::Event::Frame`]s under the channel's flow control, then
//! [`crate::event::Event::Closed`] when the connection ends, which the agent reports as
//! `tcp_closed` (on which peer halts the node). The peer takes a frame of any size the
//! wire can express: the limit (`max_frame`) is the origin's, checked before it sends.

pub mod stdio;
pub mod tcp;
