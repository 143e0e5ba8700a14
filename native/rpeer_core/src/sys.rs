//! Thin wrappers over the few POSIX calls std does not offer: poll, non-blocking mode,
//! and a level-triggered waker that interrupts a channel's blocking threads.

use crate::tuning::PIPE_SIZE;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Readiness of one descriptor after [`poll`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Ready {
    /// Data to read, end of file, or an error to collect: a read will not block.
    pub readable: bool,
    /// A write will not block (or will fail at once).
    pub writable: bool,
}

/// What to wait for on one descriptor.
#[derive(Debug, Clone, Copy)]
pub enum Interest {
    Read,
    Write,
    /// Only an error or a hang-up (reported as readable).
    Failure,
}

/// Waits until one of `fds` is ready, or `timeout` passes (`None`: no timeout).
/// Returns one `Ready` per entry; all false on timeout. Retries on EINTR.
pub fn poll(fds: &[(RawFd, Interest)], timeout: Option<Duration>) -> io::Result<Vec<Ready>> {
    let mut pollfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&(fd, interest)| libc::pollfd {
            fd,
            events: match interest {
                Interest::Read => libc::POLLIN,
                Interest::Write => libc::POLLOUT,
                Interest::Failure => 0,
            },
            revents: 0,
        })
        .collect();
    let timeout_ms = match timeout {
        None => -1,
        Some(t) => t.as_millis().min(i32::MAX as u128) as i32,
    };
    loop {
        // SAFETY: `pollfds` is a valid, exclusively borrowed array of `len` pollfd structs.
        let n = unsafe {
            libc::poll(
                pollfds.as_mut_ptr(),
                pollfds.len() as libc::nfds_t,
                timeout_ms,
            )
        };
        if n >= 0 {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    Ok(pollfds
        .iter()
        .map(|p| {
            let done = p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0;
            Ready {
                readable: p.revents & libc::POLLIN != 0 || done,
                writable: p.revents & libc::POLLOUT != 0 || done,
            }
        })
        .collect())
}

/// Puts a descriptor in non-blocking mode.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; F_GETFL/F_SETFL take and return plain ints.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A pipe whose read end turns readable, for good, once `wake` is called. Threads put it
/// in their poll set to learn that their channel is being torn down.
pub struct Waker {
    read: OwnedFd,
    write: OwnedFd,
}

impl Waker {
    pub fn new() -> io::Result<Self> {
        let (read, write) = pipe()?;
        set_nonblocking(read.as_raw_fd())?;
        set_nonblocking(write.as_raw_fd())?;
        Ok(Waker { read, write })
    }

    /// Takes back the wakes so far: the next poll waits for a new one.
    pub fn clear(&self) {
        let mut sink = [0u8; 64];
        // SAFETY: reads into a valid local buffer from a pipe we own (non-blocking).
        while unsafe {
            libc::read(
                self.read.as_raw_fd(),
                sink.as_mut_ptr() as *mut libc::c_void,
                sink.len(),
            )
        } > 0
        {}
    }

    /// Wakes every present and future poller. Idempotent.
    pub fn wake(&self) {
        let byte = 1u8;
        // SAFETY: writes one byte from a valid local to a pipe we own. A full pipe (EAGAIN)
        // means it is already readable, which is all a wake needs.
        unsafe {
            libc::write(
                self.write.as_raw_fd(),
                &byte as *const u8 as *const libc::c_void,
                1,
            );
        }
    }

    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }
}

/// A new open file description of one of this process's standard streams, so that
/// making it non-blocking does not change the stream the VM itself writes to. Falls back
/// to a duplicate where /proc is not available.
pub fn reopen_std(fd: RawFd, writable: bool) -> io::Result<OwnedFd> {
    let path = format!("/proc/self/fd/{fd}\0");
    let mode = if writable {
        libc::O_WRONLY
    } else {
        libc::O_RDONLY
    };
    // SAFETY: open() of a NUL-terminated path; the result is a new descriptor we own.
    let reopened =
        unsafe { libc::open(path.as_ptr() as *const libc::c_char, mode | libc::O_CLOEXEC) };
    if reopened < 0 {
        return duplicate(fd);
    }
    // SAFETY: reopened was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(reopened) })
}

/// Reads at most `want` bytes from `fd` into `payload`'s spare capacity (which must hold
/// them) and extends the payload by what was read: a large frame's bytes go straight
/// into it, without a copy through a buffer.
pub fn read_into_spare(fd: RawFd, payload: &mut Vec<u8>, want: usize) -> io::Result<usize> {
    let spare = payload.spare_capacity_mut();
    let want = want.min(spare.len());
    // SAFETY: read(2) writes at most `want` bytes into the vector's spare capacity
    // (uninitialised memory it owns, at least `want` long); only the count read(2)
    // reports is then taken as initialised.
    let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), want) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: read(2) initialised these `n` bytes, within the capacity.
    unsafe { payload.set_len(payload.len() + n as usize) };
    Ok(n as usize)
}

/// Shuts a socket down both ways: the other end reads its end, a reader here too. Any
/// failure (not a socket, not connected) leaves nothing to shut down.
pub fn shutdown(socket: RawFd) {
    // SAFETY: shutdown() only changes the state of the socket behind `socket`.
    unsafe {
        libc::shutdown(socket, libc::SHUT_RDWR);
    }
}

/// A socket descriptor owned by someone else (the VM's gen_tcp socket), used without
/// holding a reference to it while waiting: closing it there releases the socket at
/// once (the connection ends then, not when the last thread of the process is gone).
/// Its identity (device and inode) tells whether the number still names that socket.
#[derive(Debug, Clone, Copy)]
pub struct BorrowedSocket {
    fd: RawFd,
    identity: (u64, u64),
}

impl BorrowedSocket {
    /// Borrows `fd`, which must be open now.
    pub fn new(fd: RawFd) -> io::Result<Self> {
        Ok(BorrowedSocket {
            fd,
            identity: identity(fd)?,
        })
    }

    /// The descriptor number, for registering with [`Epoll`] (which holds no reference).
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// A duplicate to read through for a while, or `None` once the owner closed the
    /// socket (the number is free, or names something else now). Drop it before waiting.
    pub fn pin(&self) -> io::Result<Option<OwnedFd>> {
        match duplicate(self.fd) {
            Ok(pin) => match identity(pin.as_raw_fd()) {
                Ok(identity) if identity == self.identity => Ok(Some(pin)),
                Ok(_) => Ok(None),
                Err(e) => Err(e),
            },
            Err(e) if e.raw_os_error() == Some(libc::EBADF) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Device and inode of what `fd` names.
fn identity(fd: RawFd) -> io::Result<(u64, u64)> {
    // SAFETY: fstat() writes the zeroed stat struct it is given and nothing else.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut stat) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((stat.st_dev as u64, stat.st_ino as u64))
}

/// An epoll set: unlike poll(), waiting in it holds no reference to the descriptors it
/// watches, so a socket closed elsewhere is released (and leaves the set) at once.
pub struct Epoll(OwnedFd);

impl Epoll {
    pub fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1() only creates a descriptor (or fails).
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just created and is owned by nobody else.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Watches `fd` for reading (level-triggered); `token` identifies it in [`Self::wait`].
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: token,
        };
        // SAFETY: epoll_ctl() reads the event struct it is given and nothing else.
        if unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits until a watched descriptor is ready: the tokens of the ready ones. Retries
    /// on EINTR.
    pub fn wait(&self) -> io::Result<Vec<u64>> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
        loop {
            // SAFETY: epoll_wait() writes at most `events.len()` entries into `events`.
            let n = unsafe {
                libc::epoll_wait(
                    self.0.as_raw_fd(),
                    events.as_mut_ptr(),
                    events.len() as i32,
                    -1,
                )
            };
            if n >= 0 {
                return Ok(events[..n as usize].iter().map(|e| e.u64).collect());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// A duplicate of descriptor `fd` (close-on-exec), owned by the caller; `fd` stays its
/// owner's.
pub fn duplicate(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC only creates a new descriptor (or fails for a bad `fd`).
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: dup was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}

/// Grows a pipe's buffer to [`PIPE_SIZE`] where the system allows it (best effort: the
/// default 64 KiB works, only slower).
pub fn enlarge_pipe(fd: RawFd) {
    // SAFETY: F_SETPIPE_SZ on a pipe descriptor we own takes and returns an int.
    unsafe {
        libc::fcntl(fd, libc::F_SETPIPE_SZ, PIPE_SIZE);
    }
}

/// Makes a connected tcp socket notice a dead link within about `timeout`: keepalive
/// probes start after a quarter of it without traffic, and the connection is aborted
/// (ETIMEDOUT) once sent data or probes stay unanswered for `timeout` (TCP_USER_TIMEOUT).
/// A busy or stopped peer still answers: its kernel sends the acknowledgements.
pub fn detect_dead_link(fd: RawFd, timeout: Duration) -> io::Result<()> {
    let quarter_secs = (timeout.as_secs() / 4).clamp(1, i32::MAX as u64) as libc::c_int;
    let user_timeout_ms = timeout.as_millis().clamp(1, u32::MAX as u128) as libc::c_uint;
    set_int_option(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    set_int_option(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, quarter_secs)?;
    set_int_option(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, quarter_secs)?;
    set_int_option(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 4)?;
    set_int_option(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_USER_TIMEOUT,
        user_timeout_ms as libc::c_int,
    )
}

/// The pending error of a socket (SO_ERROR, which reading clears), if any.
pub fn socket_error(fd: RawFd) -> Option<io::Error> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into a live local int.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    match rc {
        0 if value == 0 => None,
        0 => Some(io::Error::from_raw_os_error(value)),
        _ => Some(io::Error::last_os_error()),
    }
}

fn set_int_option(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt reads exactly size_of::<c_int>() bytes from a live local.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills the two-element array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The errno name Erlang uses for an I/O error (`enoent`, `econnreset`, ...).
pub fn errno_name(err: &io::Error) -> String {
    let name = match err.raw_os_error() {
        Some(libc::ENOENT) => "enoent",
        Some(libc::EACCES) => "eacces",
        Some(libc::EPERM) => "eperm",
        Some(libc::EADDRINUSE) => "eaddrinuse",
        Some(libc::EADDRNOTAVAIL) => "eaddrnotavail",
        Some(libc::ECONNRESET) => "econnreset",
        Some(libc::ECONNREFUSED) => "econnrefused",
        Some(libc::EPIPE) => "epipe",
        Some(libc::ENOTDIR) => "enotdir",
        Some(libc::EISDIR) => "eisdir",
        Some(libc::ENOEXEC) => "enoexec",
        Some(libc::EMFILE) => "emfile",
        Some(libc::ENFILE) => "enfile",
        Some(libc::ENOMEM) => "enomem",
        Some(libc::EINVAL) => "einval",
        Some(libc::ETIMEDOUT) => "etimedout",
        Some(libc::EAGAIN) => "eagain",
        Some(code) => return format!("errno_{code}"),
        None => match err.kind() {
            io::ErrorKind::UnexpectedEof => "closed",
            io::ErrorKind::TimedOut => "timeout",
            io::ErrorKind::InvalidInput => "einval",
            _ => "eio",
        },
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_woken(waker: &Waker) -> bool {
        poll(&[(waker.fd(), Interest::Read)], Some(Duration::ZERO)).expect("poll")[0].readable
    }

    #[test]
    fn a_borrowed_socket_closed_by_its_owner_ends_the_connection_and_cannot_be_pinned() {
        use std::io::Read;
        use std::os::unix::net::UnixStream;
        let (owned, mut other) = UnixStream::pair().expect("socket pair");
        let borrowed = BorrowedSocket::new(owned.as_raw_fd()).expect("borrow");
        let epoll = Epoll::new().expect("epoll");
        epoll.add(borrowed.fd(), 1).expect("add");
        assert!(borrowed.pin().expect("pin").is_some());
        drop(owned);
        let mut byte = [0u8; 1];
        assert_eq!(
            other.read(&mut byte).expect("read"),
            0,
            "the connection ended"
        );
        assert!(borrowed.pin().expect("pin").is_none());
    }

    #[test]
    fn a_borrowed_number_that_names_another_file_cannot_be_pinned() {
        use std::os::unix::net::UnixStream;
        let (first, _) = UnixStream::pair().expect("socket pair");
        let (reused, _) = UnixStream::pair().expect("socket pair");
        // The number now names another socket than the one borrowed.
        let borrowed = BorrowedSocket {
            fd: reused.as_raw_fd(),
            identity: identity(first.as_raw_fd()).expect("identity"),
        };
        assert!(borrowed.pin().expect("pin").is_none());
    }

    #[test]
    fn waker_is_level_triggered() {
        let waker = Waker::new().expect("waker");
        assert!(!is_woken(&waker));
        waker.wake();
        waker.wake();
        assert!(is_woken(&waker));
        assert!(is_woken(&waker));
    }

    #[test]
    fn poll_times_out_with_nothing_ready() {
        let (read, _write) = pipe().expect("pipe");
        let ready = poll(
            &[(read.as_raw_fd(), Interest::Read)],
            Some(Duration::from_millis(10)),
        )
        .expect("poll");
        assert!(!ready[0].readable);
    }

    fn int_option(fd: RawFd, level: libc::c_int, name: libc::c_int) -> libc::c_int {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into a live local.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                level,
                name,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "getsockopt {name}");
        value
    }

    #[test]
    fn dead_link_detection_sets_keepalive_and_user_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let fd = client.as_raw_fd();
        detect_dead_link(fd, Duration::from_secs(8)).expect("set options");
        assert_eq!(int_option(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
        assert_eq!(int_option(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), 2);
        assert_eq!(int_option(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL), 2);
        assert_eq!(
            int_option(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT),
            8000
        );
        // Under four seconds, probes still wait one second: never zero (EINVAL).
        detect_dead_link(fd, Duration::from_millis(1500)).expect("set options");
        assert_eq!(int_option(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), 1);
    }

    #[test]
    fn errno_names_match_erlang() {
        assert_eq!(
            errno_name(&io::Error::from_raw_os_error(libc::ENOENT)),
            "enoent"
        );
        assert_eq!(
            errno_name(&io::Error::from_raw_os_error(libc::EADDRINUSE)),
            "eaddrinuse"
        );
    }
}
