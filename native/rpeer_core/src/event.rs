//! What a channel reports to its owner, and the flow control between them.
//!
//! Channel threads deliver [`Event`]s through a [`Sink`] (the NIF crate's sink sends them
//! to the owning Erlang process). Data events are flow-controlled by [`Flow`]: a channel
//! thread takes one credit before delivering a data event and the owner gives it back
//! once the event is handled, so a fast peer cannot flood the owner's mailbox.

use parking_lot::{Condvar, Mutex};
use std::fmt;

/// An event of a channel, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A control frame's payload (an external term format binary).
    Frame(Vec<u8>),
    /// Console text the peer wrote to its stdout, as valid UTF-8 (decoded from the
    /// stdout's [`crate::incoming::Incoming`] stream, by the owner or, for a large frame,
    /// the channel's thread).
    Console(Vec<u8>),
    /// Text the peer wrote to its stderr, as valid UTF-8.
    Stderr(Vec<u8>),
    /// The spawned program exited; `None` when its status could not be read.
    /// Sent after every `Stderr` event of the process; the owner orders it after the
    /// end of the process's stdout, which it reads itself (stdout's `Frame`, `Console`
    /// and `Resume` events, read here at the owner's request, may still follow).
    ExitStatus(Option<i32>),
    /// The program could not be launched (an errno name); nothing follows.
    LaunchFailed(String),
    /// The tcp channel accepted its peer's connection.
    Accepted,
    /// The tcp channel gave up waiting for the peer to connect.
    AcceptFailed(Failure),
    /// A connection that is not the peer's was closed unread (its remote address).
    Rejected(String),
    /// The tcp connection ended (decoded from its end of file by
    /// [`crate::incoming::Incoming`], or a failure the channel's thread saw); a second
    /// one may follow (the thread's hang-up after the end of file).
    Closed(Failure),
    /// A tcp frame declared longer than the channel's maximum was read past and dropped;
    /// its declared size and its first bytes (at most [`crate::tuning::SKIPPED_HEAD`]).
    FrameTooLarge { size: usize, head: Vec<u8> },
    /// The channel's thread failed (a bug in rpeer: a panic); nothing follows.
    Failed(String),
    /// The thread reading a large frame from an incoming stream is done: the owner reads
    /// the stream again (see [`crate::incoming::Incoming::read_on_thread`]).
    Resume,
}

impl Event {
    /// Data events take a flow-control credit; the others are rare and always delivered.
    pub fn is_data(&self) -> bool {
        matches!(self, Event::Frame(_) | Event::Console(_) | Event::Stderr(_))
    }
}

/// Why a connection ended or could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The peer closed the connection.
    Eof,
    /// No connection came within the accept timeout.
    Timeout,
    /// An I/O error, as the OS names it (e.g. `econnreset`).
    Io(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Eof => write!(f, "closed"),
            Failure::Timeout => write!(f, "timeout"),
            Failure::Io(name) => write!(f, "{name}"),
        }
    }
}

/// Where a channel delivers its events. Returns `false` once the owner is gone, after
/// which the channel stops delivering.
pub trait Sink: Send + 'static {
    fn deliver(&mut self, event: Event) -> bool;
}

/// Runs a channel thread's body; if it panics, the owner is told (`Failed`) instead of
/// waiting forever for an event that will never come.
pub fn guarded<S: Sink>(sink: &mut S, body: impl FnOnce(&mut S)) {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&mut *sink)));
    if let Err(panic) = outcome {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_string());
        sink.deliver(Event::Failed(what));
    }
}

/// A sink for tests: events go to a crossbeam channel.
#[cfg(test)]
pub(crate) struct TestSink(pub(crate) crossbeam_channel::Sender<Event>);

#[cfg(test)]
impl Sink for TestSink {
    fn deliver(&mut self, event: Event) -> bool {
        self.0.send(event).is_ok()
    }
}

/// Credit-based flow control between a channel thread and its owner.
pub struct Flow {
    state: Mutex<FlowState>,
    changed: Condvar,
}

struct FlowState {
    credits: usize,
    closed: bool,
}

impl Flow {
    pub fn new(window: usize) -> Self {
        Flow {
            state: Mutex::new(FlowState {
                credits: window,
                closed: false,
            }),
            changed: Condvar::new(),
        }
    }

    /// Takes a credit, waiting for the owner to return one. `false` once closed.
    pub fn acquire(&self) -> bool {
        let mut state = self.state.lock();
        loop {
            if state.closed {
                return false;
            }
            if state.credits > 0 {
                state.credits -= 1;
                return true;
            }
            self.changed.wait(&mut state);
        }
    }

    /// The owner handled `n` data events.
    pub fn release(&self, n: usize) {
        let mut state = self.state.lock();
        state.credits = state.credits.saturating_add(n);
        self.changed.notify_all();
    }

    /// The owner is gone: nobody waits for credits any more.
    pub fn close(&self) {
        let mut state = self.state.lock();
        state.closed = true;
        self.changed.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    #[test]
    fn acquire_waits_for_release() {
        let flow = Arc::new(Flow::new(1));
        assert!(flow.acquire());
        let waiter = {
            let flow = Arc::clone(&flow);
            thread::spawn(move || flow.acquire())
        };
        thread::sleep(Duration::from_millis(20));
        assert!(!waiter.is_finished());
        flow.release(1);
        assert!(waiter.join().unwrap_or(false));
    }

    #[test]
    fn close_wakes_waiters_and_refuses_credits() {
        let flow = Arc::new(Flow::new(0));
        let waiter = {
            let flow = Arc::clone(&flow);
            thread::spawn(move || flow.acquire())
        };
        thread::sleep(Duration::from_millis(20));
        flow.close();
        assert!(!waiter.join().unwrap_or(true));
        flow.release(5);
        assert!(!flow.acquire());
    }

    #[test]
    fn a_panicking_channel_thread_tells_its_owner() {
        let (tx, rx) = crossbeam_channel::unbounded();
        guarded(&mut TestSink(tx.clone()), |sink| {
            sink.deliver(Event::Accepted);
            panic!("decoder bug");
        });
        let events: Vec<Event> = rx.try_iter().collect();
        assert_eq!(
            events,
            vec![Event::Accepted, Event::Failed("decoder bug".into())]
        );
        guarded(&mut TestSink(tx), |sink| {
            sink.deliver(Event::Accepted);
        });
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![Event::Accepted]);
    }

    #[test]
    fn only_frames_and_text_are_data() {
        assert!(Event::Frame(vec![]).is_data());
        assert!(Event::Console(vec![]).is_data());
        assert!(Event::Stderr(vec![]).is_data());
        assert!(!Event::ExitStatus(Some(0)).is_data());
        assert!(!Event::Accepted.is_data());
        assert!(!Event::Closed(Failure::Eof).is_data());
    }
}
