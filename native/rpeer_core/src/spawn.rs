//! Starting the peer's OS process so that its exit status can be known.
//!
//! The Erlang VM ignores SIGCHLD, so the kernel reaps the VM's children at once and
//! `waitpid` can never report their status. The program is therefore run under
//! `rpeer-wait` (`src/bin/rpeer-wait.rs`, installed next to the NIF), which waits for it
//! and writes its status (128 + N for a signal) on a status pipe (its fd 3, closed for
//! the program). rpeer-wait is the VM's child and is reaped by the kernel; the program
//! is rpeer-wait's child and is reaped by it. (A shell could do this, but `sh` plus
//! util-linux's `setpriv` for the parent-death signals cost about 4 ms per boot.)
//!
//! rpeer-wait is started with `posix_spawn` (vfork semantics: the VM's page tables are not
//! copied, which with a fork would take milliseconds and stall every scheduler of a busy
//! VM), on a small pool of long-lived spawner threads ([`launch`]), so that the caller
//! never waits for the child to exec (under load that takes tens of milliseconds): every signal disposition is reset to default (the VM ignores SIGCHLD, SIGPIPE and
//! SIGFPE, and exec keeps ignored signals ignored), the signal mask is emptied, rpeer-wait
//! leads a new session and process group (as open_port's programs do: with the kernel's
//! autogroup scheduling, peers in the origin's session would share one CPU group, and 50
//! peers booting at once took twice the CPU), and every descriptor above the status
//! pipe is closed (the
//! VM's own sockets and pipes are not close-on-exec), so peers never hold each other's
//! channels. This needs glibc 2.34 or later (`posix_spawn_file_actions_addclosefrom_np`).
//!
//! Peers never outlive the origin: rpeer-wait takes SIGKILL as its parent-death signal
//! (sent when the thread that spawned it exits; the spawner threads live as long as the
//! process), and gives the program SIGKILL as its own (sent when rpeer-wait dies). A
//! program that re-forks itself away (`-detached`) escapes this.

use crate::tuning::SPAWNERS;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

/// Written on the status pipe instead of a status when posix_spawn fails.
const LAUNCH_FAILED: &str = "launch-failed ";
/// rpeer-wait's descriptor for the status pipe.
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
    /// rpeer-wait, which runs the program and reports its exit status.
    pub waiter: PathBuf,
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
    /// OS pid of rpeer-wait, which is also the process group of the program.
    pub pid: ProcessId,
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    pub status: ExitStatusReader,
}

/// The OS pid of a spawned program's rpeer-wait, known once it is launched.
#[derive(Debug, Clone, Default)]
pub struct ProcessId(Arc<AtomicU32>);

impl From<u32> for ProcessId {
    fn from(pid: u32) -> Self {
        ProcessId(Arc::new(AtomicU32::new(pid)))
    }
}

impl ProcessId {
    pub fn get(&self) -> Option<u32> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            pid => Some(pid),
        }
    }

    fn set(&self, pid: u32) {
        self.0.store(pid, Ordering::Release);
    }
}

/// Reads the exit status rpeer-wait reports.
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
    /// when rpeer-wait died without reporting, e.g. killed), `None` while more may come.
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

    /// Why the program could not be launched at all (an errno name), if so.
    pub fn launch_failure(&self) -> Option<String> {
        let text = std::str::from_utf8(&self.text).ok()?;
        text.strip_prefix(LAUNCH_FAILED)
            .map(|errno| errno.trim().to_string())
    }
}

/// Resolves the program as open_port's spawn_executable does: the path is taken as given
/// (relative to the working directory, PATH is not searched) and must be an executable file.
pub fn resolve_program(program: &OsStr) -> Result<PathBuf, SpawnError> {
    let path = Path::new(program);
    let resolved = if path.components().count() == 1 && !path.is_absolute() {
        // "erl" means ./erl for spawn_executable, never a search of PATH.
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

/// Starts the program under rpeer-wait and waits until it is launched.
pub fn spawn(spec: &Spec) -> Result<Spawned, SpawnError> {
    let (spawned, launch) = prepare(spec)?;
    launch
        .run()
        .map_err(|e| SpawnError::Os(crate::sys::errno_name(&e)))?;
    Ok(spawned)
}

/// Everything needed to launch a prepared program, and the child's ends of its pipes,
/// kept open until then.
pub struct Launch {
    argv: Vec<CString>,
    envp: Vec<CString>,
    actions: FileActions,
    attributes: SpawnAttributes,
    child_ends: Vec<OwnedFd>,
    status_write: OwnedFd,
    pid: ProcessId,
}

// SAFETY: a Launch is owned by one thread at a time; the raw pointers inside glibc's
// posix_spawn structures point to memory that the structures own.
unsafe impl Send for Launch {}

impl Launch {
    /// Launches the program (waits until the child has exec'ed). On failure the reason
    /// is also written on the status pipe, where the channel's reader finds it.
    pub fn run(self) -> io::Result<u32> {
        let mut pid: libc::pid_t = 0;
        let argv = pointers(&self.argv);
        let envp = pointers(&self.envp);
        // SAFETY: every pointer is valid for the call: the CStrings and their
        // NUL-terminated pointer arrays outlive it, and the actions and attributes were
        // initialised by their constructors.
        let rc = unsafe {
            libc::posix_spawn(
                &mut pid,
                self.argv[0].as_ptr(),
                &self.actions.0,
                &self.attributes.0,
                argv.as_ptr(),
                envp.as_ptr(),
            )
        };
        if rc != 0 {
            let err = io::Error::from_raw_os_error(rc);
            let report = format!("{LAUNCH_FAILED}{}\n", crate::sys::errno_name(&err));
            let _ = io::Write::write_all(&mut File::from(self.status_write), report.as_bytes());
            return Err(err);
        }
        self.pid.set(pid as u32);
        // The child has its copies; the status pipe's write end is rpeer-wait's alone.
        drop(self.child_ends);
        Ok(pid as u32)
    }
}

/// Launches on the spawner pool; the caller does not wait. The channel built on the
/// prepared `Spawned` sees the program's output, or its launch failure, as it comes.
pub fn launch(launch: Launch) {
    static SPAWNERS_QUEUE: OnceLock<Option<crossbeam_channel::Sender<Launch>>> = OnceLock::new();
    let queue = SPAWNERS_QUEUE.get_or_init(|| {
        let (queue, launches) = crossbeam_channel::unbounded::<Launch>();
        let started = (0..SPAWNERS).filter(|_| {
            let launches = launches.clone();
            std::thread::Builder::new()
                .name("rpeer-spawner".into())
                .spawn(move || {
                    // These threads never exit: a child's parent-death signal is tied to
                    // the thread that spawned it.
                    while let Ok(launch) = launches.recv() {
                        // A panic must not take a spawner (and its children) down.
                        let _ =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| launch.run()));
                    }
                })
                .is_ok()
        });
        (started.count() > 0).then_some(queue)
    });
    match queue {
        Some(queue) => {
            if let Err(unsent) = queue.send(launch) {
                let _ = unsent.into_inner().run();
            }
        }
        // No thread could be started: launch from this one.
        None => {
            let _ = launch.run();
        }
    }
}

/// Prepares everything for the launch (pipes, arguments, environment): the parent's
/// ends are returned at once, ready for a channel.
pub fn prepare(spec: &Spec) -> Result<(Spawned, Launch), SpawnError> {
    let program = resolve_program(&spec.program)?;
    let waiter = resolve_program(spec.waiter.as_os_str())?;
    let os_error = |e: io::Error| SpawnError::Os(crate::sys::errno_name(&e));
    let invalid = || SpawnError::Os("einval".to_string());

    // SAFETY: getpid has no preconditions.
    let origin = OsString::from(unsafe { libc::getpid() }.to_string());
    let argv = [waiter.as_os_str(), &origin, program.as_os_str()]
        .into_iter()
        .chain(spec.args.iter().map(OsString::as_os_str));
    let argv = c_strings(argv.map(|arg| arg.as_bytes().to_vec())).ok_or_else(invalid)?;
    let envp = c_strings(
        spec.env
            .iter()
            .map(|(name, value)| [name.as_bytes(), b"=", value.as_bytes()].concat()),
    )
    .ok_or_else(invalid)?;

    let (status_read, status_write) = crate::sys::pipe().map_err(os_error)?;
    let mut actions = FileActions::new().map_err(os_error)?;
    let mut child_ends = Vec::new();
    let (stdin, stdout, stderr) = match spec.stdio {
        StdioMode::Piped => {
            let (stdin_read, stdin_write) = crate::sys::pipe().map_err(os_error)?;
            let (stdout_read, stdout_write) = crate::sys::pipe().map_err(os_error)?;
            let (stderr_read, stderr_write) = crate::sys::pipe().map_err(os_error)?;
            actions.dup2(stdin_read.as_raw_fd(), 0).map_err(os_error)?;
            actions
                .dup2(stdout_write.as_raw_fd(), 1)
                .map_err(os_error)?;
            actions
                .dup2(stderr_write.as_raw_fd(), 2)
                .map_err(os_error)?;
            crate::sys::enlarge_pipe(stdin_write.as_raw_fd());
            crate::sys::enlarge_pipe(stdout_read.as_raw_fd());
            child_ends.extend([stdin_read, stdout_write, stderr_write]);
            (Some(stdin_write), Some(stdout_read), Some(stderr_read))
        }
        StdioMode::Detached => {
            actions
                .open(0, c"/dev/null", libc::O_RDONLY)
                .map_err(os_error)?;
            actions
                .open(1, c"/dev/null", libc::O_WRONLY)
                .map_err(os_error)?;
            (None, None, None)
        }
    };
    actions
        .dup2(status_write.as_raw_fd(), STATUS_FD)
        .map_err(os_error)?;
    actions.close_from(STATUS_FD + 1).map_err(os_error)?;
    let attributes = SpawnAttributes::new().map_err(os_error)?;
    let pid = ProcessId::default();
    let spawned = Spawned {
        pid: pid.clone(),
        stdin,
        stdout,
        stderr,
        status: ExitStatusReader {
            pipe: File::from(status_read),
            text: Vec::new(),
        },
    };
    let launch = Launch {
        argv,
        envp,
        actions,
        attributes,
        child_ends,
        status_write,
        pid,
    };
    Ok((spawned, launch))
}

fn c_strings(items: impl Iterator<Item = Vec<u8>>) -> Option<Vec<CString>> {
    items.map(|item| CString::new(item).ok()).collect()
}

/// A NULL-terminated array of pointers into `strings` (which must outlive it).
fn pointers(strings: &[CString]) -> Vec<*mut libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr() as *mut libc::c_char)
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect()
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// What the child does with its descriptors before exec.
struct FileActions(libc::posix_spawn_file_actions_t);

impl FileActions {
    fn new() -> io::Result<Self> {
        // SAFETY: the zeroed struct is initialised by posix_spawn_file_actions_init
        // before any other use, and destroyed once in Drop.
        unsafe {
            let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
            check(libc::posix_spawn_file_actions_init(&mut actions))?;
            Ok(FileActions(actions))
        }
    }

    fn dup2(&mut self, from: RawFd, to: RawFd) -> io::Result<()> {
        // SAFETY: self.0 was initialised in new(); descriptors are plain ints.
        check(unsafe { libc::posix_spawn_file_actions_adddup2(&mut self.0, from, to) })
    }

    fn open(
        &mut self,
        fd: RawFd,
        path: &'static std::ffi::CStr,
        flags: libc::c_int,
    ) -> io::Result<()> {
        // SAFETY: self.0 was initialised; the path is a static NUL-terminated string.
        check(unsafe {
            libc::posix_spawn_file_actions_addopen(&mut self.0, fd, path.as_ptr(), flags, 0)
        })
    }

    fn close_from(&mut self, first: RawFd) -> io::Result<()> {
        // SAFETY: self.0 was initialised; closefrom takes a plain int.
        check(unsafe { libc::posix_spawn_file_actions_addclosefrom_np(&mut self.0, first) })
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialised in new(), destroyed exactly once here.
        unsafe {
            libc::posix_spawn_file_actions_destroy(&mut self.0);
        }
    }
}

/// Default dispositions for every signal, an empty signal mask, a new session (so a new
/// process group too).
struct SpawnAttributes(libc::posix_spawnattr_t);

impl SpawnAttributes {
    fn new() -> io::Result<Self> {
        // SAFETY: the zeroed structs are initialised (posix_spawnattr_init,
        // sigfillset, sigemptyset) before use; the attributes are destroyed in Drop.
        unsafe {
            let mut attributes: libc::posix_spawnattr_t = std::mem::zeroed();
            check(libc::posix_spawnattr_init(&mut attributes))?;
            let mut spawned = SpawnAttributes(attributes);
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::sigemptyset(&mut none);
            check(libc::posix_spawnattr_setsigdefault(&mut spawned.0, &all))?;
            check(libc::posix_spawnattr_setsigmask(&mut spawned.0, &none))?;
            let flags = libc::POSIX_SPAWN_SETSIGDEF
                | libc::POSIX_SPAWN_SETSIGMASK
                | libc::POSIX_SPAWN_SETSID as libc::c_int;
            check(libc::posix_spawnattr_setflags(
                &mut spawned.0,
                flags as libc::c_short,
            ))?;
            Ok(spawned)
        }
    }
}

impl Drop for SpawnAttributes {
    fn drop(&mut self) {
        // SAFETY: initialised in new(), destroyed exactly once here.
        unsafe {
            libc::posix_spawnattr_destroy(&mut self.0);
        }
    }
}

/// Kills (SIGKILL) the program and whatever it started in its process group, but not the
/// rpeer-wait that leads the group, so that it still reaps the program and reports its
/// status (137). Where /proc cannot be read, the whole group is killed.
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

/// rpeer-wait as cargo builds it for the tests: target/PROFILE/rpeer-wait, next to the
/// target/PROFILE/deps/ where test binaries run.
#[cfg(test)]
pub(crate) fn test_waiter() -> PathBuf {
    let test_binary = std::env::current_exe().expect("current_exe");
    let profile_dir = test_binary
        .parent()
        .and_then(Path::parent)
        .expect("target/PROFILE/deps");
    profile_dir.join("rpeer-wait")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// `program` under the test build's rpeer-wait, without arguments or environment.
    fn bare(program: OsString, stdio: StdioMode) -> Spec {
        Spec {
            waiter: test_waiter(),
            program,
            args: vec![],
            env: vec![],
            stdio,
        }
    }

    fn sh(script: &str, stdio: StdioMode) -> Spawned {
        let spec = Spec {
            waiter: test_waiter(),
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
        let mut child = sh("echo before >&2; kill -9 $$", StdioMode::Piped);
        assert_eq!(child.status.wait(), Some(137));
        // Only what the program wrote, nothing about how it ended.
        assert_eq!(read_all(child.stderr.take()), "before\n");
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
    fn only_the_standard_streams_are_inherited() {
        let mut child = sh("ls /proc/self/fd", StdioMode::Piped);
        let fds: Vec<String> = read_all(child.stdout.take())
            .lines()
            .map(str::to_string)
            .collect();
        // 0, 1, 2 and the directory ls itself opened (3): the status pipe and the test
        // process's other descriptors are not inherited.
        assert_eq!(fds, ["0", "1", "2", "3"]);
    }

    /// The first line the program writes.
    fn first_line(stdout: &mut File) -> String {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte).expect("read") == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        String::from_utf8_lossy(&line).into_owned()
    }

    #[test]
    fn program_runs_in_a_session_of_its_own() {
        let mut child = sh("echo $$; read _ || true", StdioMode::Piped);
        let waiter = child.pid.get().expect("launched") as libc::pid_t;
        let mut stdout = File::from(child.stdout.take().expect("stdout"));
        let program: libc::pid_t = first_line(&mut stdout).parse().expect("pid");
        // SAFETY: getsid and getpgid only read the process table.
        let (session, group) = unsafe { (libc::getsid(program), libc::getpgid(program)) };
        assert_eq!((session, group), (waiter, waiter));
        drop(child.stdin.take());
        assert_eq!(child.status.wait(), Some(0));
    }

    #[test]
    fn signals_are_reset_to_default_and_unblocked() {
        // The test harness ignores SIGPIPE, as the VM does SIGCHLD, SIGPIPE and SIGFPE.
        let mut child = sh("exec cat /proc/self/status", StdioMode::Piped);
        let text = read_all(child.stdout.take());
        let mask = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
                .expect(name)
        };
        assert_eq!(mask("SigBlk:"), 0);
        // Signals 1-31; posix_spawn leaves glibc's own (32, 33) as they were, and glibc
        // sets them up in every program it starts.
        assert_eq!(mask("SigIgn:") & 0x7fff_ffff, 0);
    }

    #[test]
    fn program_dies_with_the_thread_that_spawned_it() {
        // The thread ends once the program runs (rpeer-wait armed its death signal first).
        let (child, mut stdout, program) = std::thread::spawn(|| {
            let mut child = sh("echo $$; exec sleep 30", StdioMode::Piped);
            let mut stdout = File::from(child.stdout.take().expect("stdout"));
            let program: libc::pid_t = first_line(&mut stdout).parse().expect("pid");
            (child, stdout, program)
        })
        .join()
        .expect("spawner thread");
        // rpeer-wait was killed with the thread, so nobody reports a status...
        assert_eq!(child.status.wait(), None);
        // ...and the program was killed with rpeer-wait: its stdout ends.
        let mut rest = Vec::new();
        stdout.read_to_end(&mut rest).expect("read");
        assert!(rest.is_empty());
        // SAFETY: kill(pid, 0) only checks whether the process exists.
        let gone = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            unsafe { libc::kill(program, 0) != 0 }
        });
        assert!(gone, "the program survived rpeer-wait");
    }

    #[test]
    fn program_whose_interpreter_is_missing_is_status_127() {
        let dir = std::env::temp_dir().join(format!("rpeer-exec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("script");
        std::fs::write(&file, "#!/nonexistent/interpreter\n").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let spec = bare(file.clone().into_os_string(), StdioMode::Piped);
        let mut child = spawn(&spec).expect("rpeer-wait starts");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(child.status.wait(), Some(127));
        assert!(read_all(child.stderr.take()).starts_with("rpeer-wait: cannot execute"));
    }

    #[test]
    fn missing_waiter_names_its_path() {
        let spec = Spec {
            waiter: "/nonexistent/rpeer-wait".into(),
            ..bare("/bin/sh".into(), StdioMode::Detached)
        };
        assert!(matches!(
            spawn(&spec),
            Err(SpawnError::Exec(ref e, ref path)) if e == "enoent" && path == Path::new("/nonexistent/rpeer-wait")
        ));
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
        kill_group(child.pid.get().expect("launched"));
        // rpeer-wait survives to report how its program ended.
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
        let spec = bare("/nonexistent/erl".into(), StdioMode::Detached);
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
