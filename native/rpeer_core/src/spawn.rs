//! Starting the peer's OS process so that its exit status can be known.
//!
//! The Erlang VM ignores SIGCHLD, so the kernel reaps the VM's children at once and
//! `waitpid` can never report their status. The program is therefore run under a
//! `/bin/sh` that waits for it and writes `$?` (128 + N for a signal) on a status pipe
//! (fd 3 of the shell, closed for the program itself). The shell is the VM's child and is
//! reaped by the kernel; the program is the shell's child and is reaped by the shell.
//!
//! In the child, before exec (async-signal-safe calls only): every signal disposition is
//! reset to default (the VM ignores SIGCHLD, SIGPIPE and SIGFPE and exec keeps ignored
//! signals ignored), and every descriptor above the status pipe is marked close-on-exec
//! (the VM's own sockets and pipes are not), so peers never hold each other's channels.
//!
//! Peers never outlive the origin: the waiting shell gets SIGKILL when the thread that
//! forked it exits (`PR_SET_PDEATHSIG`; spawning runs on one of the VM's dirty I/O
//! scheduler threads, which live as long as the VM), and the program gets SIGKILL when
//! the shell dies (it is started through util-linux's `setpriv --pdeathsig KILL` where
//! that exists). A program that re-forks itself away (`-detached`) escapes this.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The shell that waits for the program; `$1..` are the program and its arguments.
const WRAPPER_SHELL: &str = "/bin/sh";
const WRAPPER_SCRIPT: &str = "\"$@\" 3>&-; echo $? >&3";
/// Sets the parent-death signal of the program it runs (util-linux).
const SETPRIV: [&str; 2] = ["/usr/bin/setpriv", "/bin/setpriv"];

/// argv[0] of the waiting shell, as `ps` shows it.
const WRAPPER_NAME: &str = "rpeer-wait";
/// The shell's descriptor for the status pipe.
const STATUS_FD: libc::c_int = 3;

/// How the program's standard streams are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdioMode {
    /// stdin, stdout and stderr are pipes to the origin (the standard_io channel).
    Piped,
    /// stdin and stdout are /dev/null; stderr is the VM's, as for a detached peer.
    Detached,
}

/// What to run: the program, its arguments and its complete environment.
#[derive(Debug, Clone)]
pub struct Spec {
    pub program: OsString,
    pub args: Vec<OsString>,
    /// The whole environment of the program (nothing is inherited).
    pub env: Vec<(OsString, OsString)>,
    pub stdio: StdioMode,
}

/// Why the program could not be started.
#[derive(Debug)]
pub enum SpawnError {
    /// The executable is missing or cannot be executed: (errno name, resolved path).
    Exec(String, PathBuf),
    /// Anything else (pipes, fork), as an errno name.
    Os(String),
}

/// A started program: its standard streams (when piped) and its exit status.
#[derive(Debug)]
pub struct Spawned {
    /// OS pid of the waiting shell, which is also the process group of the program.
    pub pid: u32,
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    pub status: ExitStatusReader,
}

/// Reads the exit status the waiting shell reports.
#[derive(Debug)]
pub struct ExitStatusReader {
    pipe: File,
    text: Vec<u8>,
}

impl ExitStatusReader {
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.pipe.as_raw_fd()
    }

    /// Reads what is available; returns `Some(status)` at end of file (the inner `None`
    /// when the shell died without reporting, e.g. killed), `None` while more may come.
    pub fn read_some(&mut self) -> Option<Option<i32>> {
        let mut buf = [0u8; 16];
        match self.pipe.read(&mut buf) {
            Ok(0) => Some(self.parse()),
            Ok(n) => {
                if self.text.len() < 64 {
                    self.text.extend_from_slice(&buf[..n]);
                }
                None
            }
            Err(e)
                if e.kind() == io::ErrorKind::Interrupted
                    || e.kind() == io::ErrorKind::WouldBlock =>
            {
                None
            }
            Err(_) => Some(self.parse()),
        }
    }

    /// Blocks until the status is known.
    pub fn wait(mut self) -> Option<i32> {
        loop {
            if let Some(status) = self.read_some() {
                return status;
            }
        }
    }

    fn parse(&self) -> Option<i32> {
        std::str::from_utf8(&self.text).ok()?.trim().parse().ok()
    }
}

/// Resolves the program as open_port's spawn_executable does: the path is taken as given
/// (relative to the working directory, PATH is not searched) and must be an executable file.
pub fn resolve_program(program: &OsStr) -> Result<PathBuf, SpawnError> {
    let path = Path::new(program);
    let resolved = if path.components().count() == 1 && !path.is_absolute() {
        // "erl" means ./erl for spawn_executable; the shell would search PATH instead.
        Path::new(".").join(path)
    } else {
        path.to_path_buf()
    };
    let exec_error = |name: &str| SpawnError::Exec(name.to_string(), resolved.clone());
    let meta = std::fs::metadata(&resolved).map_err(|e| exec_error(&crate::sys::errno_name(&e)))?;
    if meta.is_dir() {
        return Err(exec_error("eisdir"));
    }
    if meta.permissions().mode() & 0o111 == 0 || !is_executable(&resolved) {
        return Err(exec_error("eacces"));
    }
    Ok(resolved)
}

fn is_executable(path: &Path) -> bool {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access() reads a valid NUL-terminated path.
    unsafe { libc::access(c_path.as_ptr(), libc::X_OK) == 0 }
}

/// Starts the program under the waiting shell.
pub fn spawn(spec: &Spec) -> Result<Spawned, SpawnError> {
    let program = resolve_program(&spec.program)?;
    let os_error = |e: io::Error| SpawnError::Os(crate::sys::errno_name(&e));
    let (status_read, status_write) = crate::sys::pipe().map_err(os_error)?;

    let mut command = Command::new(WRAPPER_SHELL);
    command
        .arg0(WRAPPER_NAME)
        .arg("-c")
        .arg(WRAPPER_SCRIPT)
        .arg(WRAPPER_NAME);
    if let Some(setpriv) = SETPRIV.iter().find(|path| is_executable(Path::new(path))) {
        command.args([setpriv, "--pdeathsig", "KILL", "--"]);
    }
    command
        .arg(&program)
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)));
    match spec.stdio {
        StdioMode::Piped => command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
        StdioMode::Detached => command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    };
    let status_fd = status_write.as_raw_fd();
    let origin_pid = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (sigaction, setpgid, dup2, fcntl, close_range) on
    // plain integers; it allocates nothing and takes no locks.
    unsafe {
        command.pre_exec(move || prepare_child(status_fd, origin_pid));
    }
    let mut child = command.spawn().map_err(os_error)?;
    drop(status_write);
    let stdin = child.stdin.take().map(OwnedFd::from);
    let stdout = child.stdout.take().map(OwnedFd::from);
    for pipe in stdin.iter().chain(stdout.iter()) {
        crate::sys::enlarge_pipe(pipe.as_raw_fd());
    }
    Ok(Spawned {
        pid: child.id(),
        stdin,
        stdout,
        stderr: child.stderr.take().map(OwnedFd::from),
        status: ExitStatusReader {
            pipe: File::from(status_read),
            text: Vec::new(),
        },
    })
    // `child` is dropped without waiting: the kernel reaps it (the VM ignores SIGCHLD).
}

/// Runs in the forked child: see the module documentation.
fn prepare_child(status_fd: libc::c_int, origin_pid: libc::pid_t) -> io::Result<()> {
    // SAFETY (whole function): async-signal-safe system calls on plain integers only.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if libc::getppid() != origin_pid {
            // The origin died before the signal was armed.
            libc::_exit(1);
        }
        for signal in 1..libc::SIGRTMIN() {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::signal(signal, libc::SIG_DFL);
            }
        }
        // Own process group: the peer and everything it starts can be signalled at once.
        libc::setpgid(0, 0);
        if status_fd == STATUS_FD {
            let flags = libc::fcntl(STATUS_FD, libc::F_GETFD);
            libc::fcntl(STATUS_FD, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
        } else if libc::dup2(status_fd, STATUS_FD) < 0 {
            return Err(io::Error::last_os_error());
        }
        // Close-on-exec rather than close: std's own exec-error pipe must stay usable.
        let first = (STATUS_FD + 1) as libc::c_uint;
        if libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) != 0
        {
            let mut limit = libc::sysconf(libc::_SC_OPEN_MAX);
            if !(0..=1 << 20).contains(&limit) {
                limit = 1 << 16;
            }
            for fd in first as libc::c_int..limit as libc::c_int {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
}

/// Kills (SIGKILL) the program and whatever it started in its process group, but not the
/// waiting shell that leads the group, so that the shell still reaps the program and
/// reports its status (137). Where /proc cannot be read, the whole group is killed.
pub fn kill_group(pid: u32) {
    let members = group_members(pid);
    let others: Vec<u32> = members
        .iter()
        .copied()
        .filter(|&member| member != pid)
        .collect();
    if others.is_empty() {
        // SAFETY: kill() with a negative pid addresses a process group; no memory is touched.
        unsafe {
            libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
        }
    }
    for member in others {
        // SAFETY: kill() of a process id; no memory is touched.
        unsafe {
            libc::kill(member as libc::pid_t, libc::SIGKILL);
        }
    }
}

/// Processes whose process group is `pgid`, from /proc (empty when it cannot be read).
pub(crate) fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| process_group(pid) == Some(pgid))
        .collect()
}

/// The process group of `pid`: the fifth field of /proc/PID/stat, after the
/// parenthesised command name (which may itself contain spaces and parentheses).
fn process_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn sh(script: &str, stdio: StdioMode) -> Spawned {
        let spec = Spec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("RPEER_T".into(), "yes".into()),
            ],
            stdio,
        };
        spawn(&spec).expect("spawn")
    }

    fn read_all(fd: Option<OwnedFd>) -> String {
        let mut text = String::new();
        File::from(fd.expect("piped"))
            .read_to_string(&mut text)
            .expect("read");
        text
    }

    #[test]
    fn exit_status_is_reported() {
        let child = sh("exit 7", StdioMode::Detached);
        assert_eq!(child.status.wait(), Some(7));
    }

    #[test]
    fn killed_program_reports_128_plus_signal() {
        let child = sh("kill -9 $$", StdioMode::Detached);
        assert_eq!(child.status.wait(), Some(137));
    }

    #[test]
    fn pipes_carry_stdin_stdout_and_stderr() {
        let mut child = sh(
            "read line; echo \"out:$line\"; echo err >&2",
            StdioMode::Piped,
        );
        File::from(child.stdin.take().expect("stdin"))
            .write_all(b"hello\n")
            .expect("write");
        assert_eq!(read_all(child.stdout.take()), "out:hello\n");
        assert_eq!(read_all(child.stderr.take()), "err\n");
        assert_eq!(child.status.wait(), Some(0));
    }

    #[test]
    fn environment_is_exactly_the_given_one() {
        let mut child = sh("echo \"$RPEER_T:${HOME:-unset}\"", StdioMode::Piped);
        assert_eq!(read_all(child.stdout.take()), "yes:unset\n");
    }

    #[test]
    fn status_pipe_is_closed_for_the_program() {
        let mut child = sh("ls /proc/self/fd", StdioMode::Piped);
        let fds: Vec<String> = read_all(child.stdout.take())
            .lines()
            .map(str::to_string)
            .collect();
        // 0, 1, 2 and the directory ls itself opened (3): the status pipe and the test
        // process's other descriptors are not inherited.
        assert_eq!(fds, ["0", "1", "2", "3"]);
    }

    #[test]
    fn kill_group_ends_the_program_and_its_children() {
        let mut child = sh("sleep 60 & echo $!; wait", StdioMode::Piped);
        let mut grandchild = String::new();
        let mut stdout = File::from(child.stdout.take().expect("stdout"));
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte).expect("read") == 1 && byte[0] != b'\n' {
            grandchild.push(byte[0] as char);
        }
        kill_group(child.pid);
        // The shell survives to report how its program ended.
        assert_eq!(child.status.wait(), Some(137));
        let gone = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            // SAFETY: kill(pid, 0) only checks that the process exists.
            unsafe { libc::kill(grandchild.trim().parse().unwrap_or(0), 0) != 0 }
        });
        assert!(gone, "the program's child survived");
    }

    #[test]
    fn missing_program_names_the_path() {
        let spec = Spec {
            program: "/nonexistent/erl".into(),
            args: vec![],
            env: vec![],
            stdio: StdioMode::Detached,
        };
        match spawn(&spec) {
            Err(SpawnError::Exec(errno, path)) => {
                assert_eq!(errno, "enoent");
                assert_eq!(path, PathBuf::from("/nonexistent/erl"));
            }
            other => panic!("expected enoent, got {other:?}"),
        }
    }

    #[test]
    fn non_executable_file_is_eacces() {
        let dir = std::env::temp_dir().join(format!("rpeer-spawn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("not-exec");
        std::fs::write(&file, "#!/bin/sh\n").expect("write");
        let result = resolve_program(file.as_os_str());
        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(result, Err(SpawnError::Exec(ref e, _)) if e == "eacces"));
    }

    #[test]
    fn bare_name_is_not_searched_in_path() {
        assert!(
            matches!(resolve_program(OsStr::new("sh")), Err(SpawnError::Exec(ref e, _)) if e == "enoent")
        );
    }
}
