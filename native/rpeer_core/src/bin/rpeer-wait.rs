//! `rpeer-wait ORIGIN_PID PROGRAM ARGS...`: the small process between the origin VM and
//! the peer's program. The VM ignores SIGCHLD, so the kernel reaps the VM's children at
//! once and their exit status is lost; rpeer-wait runs PROGRAM as its own child, waits
//! for it and writes its status on fd 3 (`N` for an exit code, `128 + N` when signal N
//! killed it, as a shell's `$?`). PROGRAM inherits the standard streams and the
//! environment, but not fd 3.
//!
//! Neither outlives the origin: rpeer-wait takes SIGKILL as its parent-death signal
//! (and exits at once when ORIGIN_PID is no longer its parent: the origin died before
//! that was armed), and PROGRAM takes SIGKILL as its own when rpeer-wait dies.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;

/// Where the exit status goes.
const STATUS_FD: i32 = 3;
/// As a shell: the program was not found, or could not be executed.
const NOT_FOUND: i32 = 127;
const NOT_EXECUTABLE: i32 = 126;

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(origin), Some(program)) = (args.next(), args.next()) else {
        eprintln!("usage: rpeer-wait ORIGIN_PID PROGRAM ARGS...");
        std::process::exit(2);
    };
    die_with_parent(origin_pid(&origin));
    // SAFETY: fcntl on a descriptor number; failing (fd 3 not open) is harmless here.
    unsafe { libc::fcntl(STATUS_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    // SAFETY: getpid has no preconditions.
    let this = unsafe { libc::getpid() };
    let mut command = Command::new(&program);
    command.args(args);
    // SAFETY: the closure runs in the forked child before exec and only makes system
    // calls (prctl, getppid), which is what is allowed there.
    unsafe {
        command.pre_exec(move || {
            die_with_parent(this);
            Ok(())
        });
    }
    let status = match command.status() {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => NOT_EXECUTABLE,
        },
        Err(err) => {
            eprintln!(
                "rpeer-wait: cannot execute {}: {err}",
                program.to_string_lossy()
            );
            match err.kind() {
                std::io::ErrorKind::NotFound => NOT_FOUND,
                _ => NOT_EXECUTABLE,
            }
        }
    };
    // SAFETY: fd 3 is the status pipe rpeer gave us; nothing else in this process owns it.
    let mut report = unsafe { File::from_raw_fd(STATUS_FD) };
    let _ = writeln!(report, "{status}");
}

/// Takes SIGKILL as the parent-death signal; exits if the parent is already not `parent`.
fn die_with_parent(parent: libc::pid_t) {
    // SAFETY: prctl and getppid are plain system calls.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(NOT_EXECUTABLE);
        }
    }
}

fn origin_pid(arg: &OsString) -> libc::pid_t {
    arg.to_str().and_then(|s| s.parse().ok()).unwrap_or(0)
}
