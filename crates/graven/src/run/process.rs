//! Process control for the runner: one process of a release, started in its
//! own process group with exactly its environment, its output passed on line
//! by line, stopped with SIGTERM to the group and SIGKILL after a timeout;
//! the delays between restarts; and a state file that lets a runner started
//! after a SIGKILL stop the previous run's leftovers.
//!
//! This module starts, watches and stops processes. It does not decide which
//! ones should run (the supervisor does), and it never prints.
//!
//! A group is signalled only while its id cannot belong to anyone else: while
//! its leader is our child and not yet reaped (a zombie still holds its pid,
//! which is the group id), or, for a previous run's leftovers, after checking
//! the leader's start time and session against the state file. Members of a
//! group are found in `/proc`, so stopping waits for every member, not just
//! the leader: a server that `sh -c` started still gets to drain.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};
use serde::{Deserialize, Serialize};

use crate::sandbox::SetupReport;

/// The delay before the first restart of a process that exited.
pub const FIRST_RESTART_DELAY: Duration = Duration::from_secs(1);

/// The longest delay between restarts: each restart doubles the delay, up to
/// this.
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);

/// A process that stayed up this long before it exited was working: its next
/// restart waits [`FIRST_RESTART_DELAY`] again.
pub const STABLE_UPTIME: Duration = Duration::from_secs(60);

/// How often a stop checks whether a group has ended.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How long to wait, after SIGKILL, for a group's members to be gone.
/// SIGKILL cannot be ignored, but a process in uninterruptible sleep (a hung
/// network filesystem) dies only when that ends, and the runner must not hang
/// with it.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// How long, once a process has ended, to wait for its last lines. The pipe
/// closes when the whole group is gone, unless a process that left the group
/// (`setsid`) still holds it; its lines are then passed on as they come, and
/// stopping does not wait for them.
const OUTPUT_DRAIN_WAIT: Duration = Duration::from_secs(1);

/// Where the id of the current boot is: `/proc` start times count clock ticks
/// since boot, so they identify a process only within one boot.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// Where a process's output goes: called with the process's name (`web.1`)
/// and each line, from the thread that reads the process's output.
pub type OnLine = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// A failure to start, watch or stop a process, or to read the state file.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The process could not be started.
    #[error("could not start {name} (`{command}`) in {}", dir.display())]
    Spawn {
        /// The process, e.g. `web.1`.
        name: String,
        /// Its command line.
        command: String,
        /// Its working directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Whether the process has exited could not be found out.
    #[error("could not wait for {name} (pid {pid})")]
    Wait {
        /// The process, e.g. `web.1`.
        name: String,
        /// Its pid.
        pid: u32,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A signal could not be sent.
    #[error("could not send {signal} to process group {pgid}")]
    Signal {
        /// `SIGTERM` or `SIGKILL`.
        signal: &'static str,
        /// The process group.
        pgid: i32,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The state file could not be read, written or removed.
    #[error("could not {action} {}", path.display())]
    Io {
        /// What graven was doing.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The state file holds something else than graven wrote.
    #[error("the runner state file {} is damaged ({why}); if no runner is running, remove it", path.display())]
    StateFile {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

/// How every process of a release sees its tree: mounted read-only at
/// `/app` in a mount namespace of its own, with graven's store and trees
/// read-only too (see [`crate::sandbox`]), so that no process, root's
/// included, can change the code it runs or the store behind it.
#[derive(Debug, Clone)]
pub struct AppMount {
    sandbox: crate::sandbox::Sandbox,
    protect: Vec<std::path::PathBuf>,
    /// The user to run as, and the directories it must write.
    user: Option<(crate::user::RunAs, Vec<std::path::PathBuf>)>,
}

impl AppMount {
    /// Processes of `home`'s releases, with its store and trees read-only.
    pub fn new(sandbox: crate::sandbox::Sandbox, home: &crate::home::Home) -> Self {
        Self { sandbox, protect: vec![home.store_dir(), home.releases_root()], user: None }
    }

    /// The same, for a process that runs as `user`, which is given
    /// `writable` (its HOME and TMPDIR, made by graven) to write.
    pub fn as_user(&self, user: &crate::user::RunAs, writable: &[&Path]) -> io::Result<Self> {
        if user.is_self() {
            return Ok(self.clone());
        }
        for dir in writable {
            user.give(dir)?;
        }
        let writable = writable.iter().map(|dir| dir.to_path_buf()).collect();
        Ok(Self { user: Some((user.clone(), writable)), ..self.clone() })
    }

    /// `sh -c script` with `tree` at `/app`.
    pub(crate) fn command(&self, script: &str, tree: &Path) -> std::process::Command {
        let writable = self.writable();
        let user = self.as_user_of(&writable);
        self.sandbox.run_command(script, tree, &self.protected(), user.as_ref())
    }

    /// `program` with `args`, with `tree` at `/app` (its working
    /// directory): for `graven exec`.
    pub fn program(&self, program: &std::ffi::OsStr, args: &[OsString], tree: &Path) -> std::process::Command {
        let writable = self.writable();
        let user = self.as_user_of(&writable);
        self.sandbox.run_program(program, args, tree, &self.protected(), user.as_ref())
    }

    fn writable(&self) -> Vec<&Path> {
        self.user.iter().flat_map(|(_, dirs)| dirs.iter().map(std::path::PathBuf::as_path)).collect()
    }

    fn as_user_of<'a>(&'a self, writable: &'a [&'a Path]) -> Option<crate::sandbox::AsUser<'a>> {
        self.user.as_ref().map(|(user, _)| crate::sandbox::AsUser { user, writable })
    }

    /// What is made read-only: what exists of it (a bind needs its source).
    fn protected(&self) -> Vec<&Path> {
        self.protect.iter().map(std::path::PathBuf::as_path).filter(|path| path.exists()).collect()
    }
}

/// One running process of a release, in its own process group.
///
/// Dropping a `Process` that has not ended kills its group, so that none
/// outlives the runner by accident (a panic, an early return); [`stop`]
/// is the graceful way.
///
/// [`stop`]: Process::stop
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    /// The group id, which is the leader's pid.
    pgid: Pid,
    started: Instant,
    /// How the leader ended and when, once it is reaped.
    ended: Option<(ExitStatus, Instant)>,
    /// The thread passing the output on; `None` once drained.
    output: Option<JoinHandle<()>>,
    /// Our end of the socket the process waits on before its command
    /// runs; `None` once it was told to go.
    gate: Option<UnixStream>,
    /// In the sandbox, bwrap's report of whether it started the command,
    /// on the same socket.
    report: Option<SetupReport>,
}

impl Process {
    /// Starts `sh -c command` in `dir` with exactly `env`, stdin `/dev/null`,
    /// in a new process group; with `mount`, `dir` is mounted read-only at
    /// `/app` for it (see [`AppMount`]) and it runs there. Stdout and stderr
    /// share one pipe, so their order is kept; each line (lossy UTF-8,
    /// without its newline) goes to `on_line(name, line)` from a thread of
    /// its own.
    ///
    /// The process is held: its group exists, but `command` runs only once
    /// [`go`](Process::go) is called, so that the caller can record the
    /// group first. Should the caller die before that, the process ends
    /// without running anything: no process of graven's ever runs
    /// unrecorded.
    pub fn spawn(
        name: &str,
        command: &str,
        dir: &Path,
        mount: Option<&AppMount>,
        env: &BTreeMap<String, OsString>,
        on_line: OnLine,
    ) -> Result<Self, ProcessError> {
        let spawn_error = |source: io::Error| ProcessError::Spawn {
            name: name.to_owned(),
            command: command.to_owned(),
            dir: dir.to_owned(),
            source: crate::shell::explain_spawn_error(source),
        };
        let program = match mount {
            Some(mount) => {
                if !dir.is_dir() {
                    return Err(spawn_error(io::Error::from(io::ErrorKind::NotFound)));
                }
                mount.command(command, dir)
            }
            None => crate::shell::sh(command, dir),
        };
        let (report, stdin) = SetupReport::pair().map_err(spawn_error)?;
        let gate = report.stream().try_clone().map_err(spawn_error)?;
        let (mut sh, reader) = crate::shell::piped(held(&program, mount.is_some()), env).map_err(spawn_error)?;
        sh.stdin(std::os::fd::OwnedFd::from(stdin));
        // The reader starts first: should the process fail to start, the
        // writing end is dropped with the command and the reader ends.
        let output = {
            let name = name.to_owned();
            thread::Builder::new()
                .name(format!("output of {name}"))
                .spawn(move || crate::shell::for_each_line(reader, |line| on_line(&name, line)))
                .map_err(spawn_error)?
        };
        let child = sh.process_group(0).spawn().map_err(spawn_error)?;
        // The command holds the pipe's writing end: the reader sees the end
        // of the output only once this copy is gone too.
        drop(sh);
        Ok(Self {
            name: name.to_owned(),
            pgid: Pid::from_child(&child),
            child,
            started: Instant::now(),
            ended: None,
            output: Some(output),
            gate: Some(gate),
            report: mount.is_some().then_some(report),
        })
    }

    /// Once it has ended: whether it ended because bwrap could not make its
    /// sandbox, before its command started, which starting it again is
    /// likely to mend (see [`crate::sandbox::SETUP_TRIES`]).
    pub fn sandbox_failed(&mut self) -> bool {
        let Some((status, _)) = self.ended else { return false };
        self.report.as_mut().is_some_and(|report| report.sandbox_failed(status))
    }

    /// Whether it is held, not yet told to [`go`](Process::go).
    pub fn is_held(&self) -> bool {
        self.gate.is_some()
    }

    /// Lets a held process run its command (see [`spawn`](Process::spawn)).
    /// A process that has ended meanwhile is not an error here: the next
    /// [`try_wait`](Process::try_wait) sees it.
    pub fn go(&mut self) {
        if let Some(mut gate) = self.gate.take() {
            let _ = std::io::Write::write_all(&mut gate, b"go\n");
        }
    }

    /// The leader's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process group id (the leader's pid).
    pub fn pgid(&self) -> i32 {
        self.pgid.as_raw_pid()
    }

    /// How long the process has been up, or was up once it has been seen to
    /// exit.
    pub fn uptime(&self) -> Duration {
        match self.ended {
            Some((_, at)) => at.duration_since(self.started),
            None => self.started.elapsed(),
        }
    }

    /// Non-blocking: `Some(status)` if the process has exited.
    ///
    /// Once the leader has exited the process is over: whatever it left in
    /// its group is killed, so that a restart does not run beside it (and,
    /// say, find its port taken).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, ProcessError> {
        if let Some((status, _)) = self.ended {
            return Ok(Some(status));
        }
        if !self.leader_exited()? {
            return Ok(None);
        }
        signal_group(self.pgid, Signal::KILL)?;
        self.reap().map(Some)
    }

    /// Sends SIGTERM to the whole group, waits up to `timeout` for every
    /// member to exit, then sends SIGKILL to the group; returns how the
    /// leader ended. Leaves no member of the group behind, and, unless one
    /// left the group, has passed on every line of output when it returns.
    pub fn stop(self, timeout: Duration) -> Result<ExitStatus, ProcessError> {
        stop_all(vec![self], timeout).pop().expect("one process in, one result out")
    }

    /// Whether the leader has exited, leaving it unreaped.
    fn leader_exited(&self) -> Result<bool, ProcessError> {
        // NOWAIT keeps an exited leader a zombie, so its pid, the group id,
        // cannot be given to another process meanwhile.
        let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
        rustix::process::waitid(WaitId::Pid(self.pgid), options)
            .map(|status| status.is_some())
            .map_err(|errno| self.wait_error(errno.into()))
    }

    fn reap(&mut self) -> Result<ExitStatus, ProcessError> {
        let status = self.child.wait().map_err(|source| self.wait_error(source))?;
        self.ended = Some((status, Instant::now()));
        Ok(status)
    }

    fn wait_error(&self, source: io::Error) -> ProcessError {
        ProcessError::Wait { name: self.name.clone(), pid: self.pid(), source }
    }

    /// Waits until `deadline` at most for the last lines.
    fn drain_output(&mut self, deadline: Instant) {
        let Some(output) = self.output.take() else { return };
        while !output.is_finished() && Instant::now() < deadline {
            thread::sleep(POLL_INTERVAL);
        }
        if output.is_finished() {
            // An error here is a panic of `on_line`, which is the caller's.
            let _ = output.join();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.ended.is_none() {
            // The leader is not reaped, so the group id is still ours. A
            // failure has nowhere to go from here.
            let _ = signal_group(self.pgid, Signal::KILL);
            let _ = self.child.wait();
        }
    }
}

/// Stops `processes` as [`Process::stop`] stops one, all at once: SIGTERM
/// to every group, then one look at `/proc` per round for all of them, and
/// SIGKILL to what is left after `timeout`. Stopping a thousand processes
/// takes as long as stopping the slowest. Returns how each leader ended, in
/// the order given.
pub fn stop_all(mut processes: Vec<Process>, timeout: Duration) -> Vec<Result<ExitStatus, ProcessError>> {
    // Until a leader is reaped, at the end, its group id is ours: neither
    // the signals nor the waiting can reach anyone else.
    let mut failed: Vec<Option<ProcessError>> = processes
        .iter()
        .map(|process| process.ended.is_none().then(|| signal_group(process.pgid, Signal::TERM).err()).flatten())
        .collect();
    let deadline = Instant::now() + timeout;
    loop {
        let mut leaders_gone = Vec::new();
        for process in processes.iter().filter(|process| process.ended.is_none()) {
            match process.leader_exited() {
                Ok(true) => leaders_gone.push(process.pgid()),
                // Still running, or not to be waited for: SIGKILL settles it.
                Ok(false) | Err(_) => break,
            }
        }
        let unended = processes.iter().filter(|process| process.ended.is_none()).count();
        // The cheap check first: members are looked for only once every
        // leader has gone.
        if leaders_gone.len() == unended {
            let live = live_groups();
            if leaders_gone.iter().all(|pgid| !live.contains(pgid)) {
                break;
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        thread::sleep(POLL_INTERVAL);
    }
    // Whatever is left after the timeout, or that `/proc` did not show.
    for (process, failure) in processes.iter().zip(&mut failed) {
        if process.ended.is_none()
            && let Err(error) = signal_group(process.pgid, Signal::KILL)
        {
            failure.get_or_insert(error);
        }
    }
    let ours: Vec<i32> = processes.iter().filter(|process| process.ended.is_none()).map(Process::pgid).collect();
    let deadline = Instant::now() + KILL_WAIT;
    while Instant::now() < deadline && {
        let live = live_groups();
        ours.iter().any(|pgid| live.contains(pgid))
    } {
        thread::sleep(POLL_INTERVAL);
    }
    let statuses: Vec<Result<ExitStatus, ProcessError>> = processes
        .iter_mut()
        .zip(failed)
        .map(|(process, failure)| {
            let status = match process.ended {
                Some((status, _)) => Ok(status),
                None => process.reap(),
            };
            match failure {
                Some(error) => Err(error),
                None => status,
            }
        })
        .collect();
    let deadline = Instant::now() + OUTPUT_DRAIN_WAIT;
    for process in &mut processes {
        process.drain_output(deadline);
    }
    statuses
}

/// What a held process runs first: it waits for a line on stdin, the gate,
/// then becomes `program` ([`EXEC`], or for bwrap
/// [`crate::sandbox::EXEC_REPORTING`], which also has it report whether it
/// started the command). At the end of the gate's socket without a line
/// (the runner died before it said go), it exits 125.
const GATE: &str = "read -r go || exit 125;";

/// Becomes `program` with stdin `/dev/null`.
const EXEC: &str = r#"exec "$0" "$@" </dev/null"#;

/// `program` behind the gate: `/bin/sh -c GATE program args…`, in its
/// directory; `bwrap` says whether it started its command. The environment
/// and stdio are set on what this returns.
fn held(program: &std::process::Command, bwrap: bool) -> std::process::Command {
    let mut gate = std::process::Command::new("/bin/sh");
    gate.arg("-c").arg(format!("{GATE} {}", if bwrap { crate::sandbox::EXEC_REPORTING } else { EXEC }));
    gate.arg(program.get_program()).args(program.get_args());
    if let Some(dir) = program.get_current_dir() {
        gate.current_dir(dir);
    }
    gate
}

/// Sends `signal` to group `pgid`; a group that is already gone is not an
/// error.
fn signal_group(pgid: Pid, signal: Signal) -> Result<(), ProcessError> {
    match rustix::process::kill_process_group(pgid, signal) {
        Ok(()) => Ok(()),
        Err(errno) if errno == Errno::SRCH => Ok(()),
        Err(errno) => Err(ProcessError::Signal {
            signal: if signal == Signal::KILL { "SIGKILL" } else { "SIGTERM" },
            pgid: pgid.as_raw_pid(),
            source: errno.into(),
        }),
    }
}

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, Copy)]
struct ProcStat {
    /// Field 3: `R`, `S`, … `Z` for a zombie.
    state: u8,
    /// Field 5.
    pgrp: i32,
    /// Field 6.
    session: i32,
    /// Field 22: clock ticks from boot to the process's start.
    start_time: u64,
}

impl ProcStat {
    /// A zombie has exited; only its exit status is left to collect.
    fn is_live(self) -> bool {
        !matches!(self.state, b'Z' | b'X' | b'x')
    }
}

fn proc_stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&fs::read(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_stat(stat: &[u8]) -> Option<ProcStat> {
    // Field 2, the command name, is in parentheses and may itself hold any
    // byte, parentheses and spaces included: fields are counted from the
    // last ')'.
    let close = stat.iter().rposition(|&byte| byte == b')')?;
    let mut fields = std::str::from_utf8(&stat[close + 1..]).ok()?.split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    // Fields 7 to 21 come before the start time.
    let start_time = fields.nth(15)?.parse().ok()?;
    Some(ProcStat { state, pgrp, session, start_time })
}

/// The processes of group `pgid` that have not exited; none if `/proc`
/// cannot be read.
fn live_members(pgid: i32) -> Vec<i32> {
    live_processes().filter(|(_, stat)| stat.pgrp == pgid).map(|(pid, _)| pid).collect()
}

/// The groups with a process that has not exited, from one look at
/// `/proc`; none if it cannot be read.
fn live_groups() -> std::collections::BTreeSet<i32> {
    live_processes().map(|(_, stat)| stat.pgrp).collect()
}

/// Every process that has not exited, with its `stat`.
fn live_processes() -> impl Iterator<Item = (i32, ProcStat)> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter_map(|pid| Some((pid, proc_stat(pid)?)))
        .filter(|(_, stat)| stat.is_live())
}

/// Restart delays: [`FIRST_RESTART_DELAY`], doubling up to
/// [`MAX_RESTART_DELAY`], and back to the first once a process has stayed up
/// [`STABLE_UPTIME`]. Pure: the caller does the waiting.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    restarts: u32,
    /// Sandboxes that could not be made in a row, since the last exit of a
    /// command that ran.
    sandbox_failures: u32,
}

impl Backoff {
    /// A backoff before any restart.
    pub fn new() -> Self {
        Self { next: FIRST_RESTART_DELAY, restarts: 0, sandbox_failures: 0 }
    }

    /// Counts a restart of a process that was up for `uptime` and returns
    /// how long to wait before it.
    pub fn next_delay(&mut self, uptime: Duration) -> Duration {
        self.sandbox_failures = 0;
        self.doubled(uptime)
    }

    fn doubled(&mut self, uptime: Duration) -> Duration {
        if uptime >= STABLE_UPTIME {
            self.next = FIRST_RESTART_DELAY;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(MAX_RESTART_DELAY);
        self.restarts = self.restarts.saturating_add(1);
        delay
    }

    /// Counts a restart of a process whose sandbox could not be made (see
    /// [`Process::sandbox_failed`]) and returns how long to wait before it:
    /// as a build waits to make its sandbox again, for as many tries as a
    /// build makes; then as for any exit, since what fails every time is
    /// no passing race.
    pub fn after_sandbox_failure(&mut self) -> Duration {
        self.sandbox_failures = self.sandbox_failures.saturating_add(1);
        if self.sandbox_failures >= crate::sandbox::SETUP_TRIES {
            return self.doubled(Duration::ZERO);
        }
        self.restarts = self.restarts.saturating_add(1);
        crate::sandbox::SETUP_PAUSE * self.sandbox_failures
    }

    /// How many restarts have been counted.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// The state file: the groups a runner started, each with what identifies
/// its leader, so that a pid used again by another process is not mistaken
/// for it.
#[derive(Debug, Serialize, Deserialize)]
struct StateFile {
    /// The boot the start times count from; `None` if it could not be read.
    boot_id: Option<String>,
    groups: Vec<RecordedGroup>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct RecordedGroup {
    pgid: i32,
    session: i32,
    start_time: u64,
}

impl RecordedGroup {
    /// Whether the group still runs and is the one recorded.
    fn still_running(self) -> bool {
        match proc_stat(self.pgid) {
            Some(leader) => {
                leader.pgrp == self.pgid && leader.session == self.session && leader.start_time == self.start_time
            }
            // The leader has exited, but members may live on: they pin the
            // group id, so if they are in the recorded session they are
            // ours, unless the whole group ended, the pid numbers wrapped
            // around, and a new group of the same id and session lost its
            // leader too.
            None => live_members(self.pgid)
                .iter()
                .any(|&pid| proc_stat(pid).is_some_and(|member| member.session == self.session)),
        }
    }
}

fn boot_id() -> Option<String> {
    fs::read_to_string(BOOT_ID).ok().map(|id| id.trim().to_owned())
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ProcessError {
    let path = path.to_owned();
    move |source| ProcessError::Io { action, path, source }
}

/// Records the process groups a runner started in the state file `path`
/// (JSON: `boot_id`, and `groups` of `pgid`, `session`, `start_time`),
/// replacing it whole (written beside it, then renamed), so that a runner
/// started after a SIGKILL can stop them with [`kill_leftovers`]. A group
/// whose leader is already gone and reaped is left out: nothing would tell
/// it apart from a later process given the same pid.
pub fn record_groups(path: &Path, pgids: &[i32]) -> Result<(), ProcessError> {
    let groups = pgids
        .iter()
        .filter_map(|&pgid| {
            let leader = proc_stat(pgid)?;
            (leader.pgrp == pgid).then_some(RecordedGroup {
                pgid,
                session: leader.session,
                start_time: leader.start_time,
            })
        })
        .collect();
    let state = StateFile { boot_id: boot_id(), groups };
    let json = serde_json::to_vec_pretty(&state).expect("plain numbers and strings serialise");
    let mut temp_name = path.file_name().unwrap_or_default().to_owned();
    temp_name.push(format!(".tmp-{}", std::process::id()));
    let temp = path.with_file_name(temp_name);
    // No fsync: the groups are gone after a crash of the machine anyway;
    // the rename is what keeps a SIGKILL from leaving half a file.
    crate::fs_tree::private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .and_then(|mut file| std::io::Write::write_all(&mut file, &json))
        .map_err(io_error("write", &temp))?;
    fs::rename(&temp, path).map_err(|source| {
        let _ = fs::remove_file(&temp);
        io_error("move into place", path)(source)
    })
}

/// Sends SIGKILL to every group listed in the state file `path` that still
/// runs and is the one recorded, waits (briefly) for their processes to be
/// gone, then removes the file; returns the groups killed. No file, no
/// leftovers.
pub fn kill_leftovers(path: &Path) -> Result<Vec<i32>, ProcessError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(source) if source.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(io_error("read", path)(source)),
    };
    let state: StateFile = serde_json::from_slice(&bytes)
        .map_err(|error| ProcessError::StateFile { path: path.to_owned(), why: error.to_string() })?;
    // After a reboot every recorded group is gone, and start times,
    // counted from boot, could match a new process by chance.
    let same_boot = state.boot_id.is_none() || state.boot_id == boot_id();
    let mut killed = Vec::new();
    for group in state.groups.iter().filter(|group| same_boot && group.still_running()) {
        if let Some(pgid) = Pid::from_raw(group.pgid) {
            signal_group(pgid, Signal::KILL)?;
            killed.push(group.pgid);
        }
    }
    // Not our children: init reaps them, and a zombie is gone enough.
    let deadline = Instant::now() + KILL_WAIT;
    while killed.iter().any(|&pgid| !live_members(pgid).is_empty()) && Instant::now() < deadline {
        thread::sleep(POLL_INTERVAL);
    }
    fs::remove_file(path).map_err(io_error("remove", path))?;
    Ok(killed)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::io::{BufRead as _, BufReader};
    use std::os::unix::process::ExitStatusExt as _;
    use std::process::{Command, Stdio};
    use std::sync::Mutex;

    use super::*;

    type Lines = Arc<Mutex<Vec<(String, String)>>>;

    /// An `on_line` that keeps every line, and the lines kept.
    fn collector() -> (Lines, OnLine) {
        let lines = Lines::default();
        let keep = Arc::clone(&lines);
        let on_line = move |name: &str, line: &str| keep.lock().unwrap().push((name.to_owned(), line.to_owned()));
        (lines, Arc::new(on_line))
    }

    fn path_only() -> BTreeMap<String, OsString> {
        BTreeMap::from([("PATH".to_owned(), std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()))])
    }

    fn spawn(command: &str, on_line: OnLine) -> Process {
        let mut process = Process::spawn("web.1", command, Path::new("/"), None, &path_only(), on_line).unwrap();
        process.go();
        process
    }

    /// Polls `ready` until it holds; fails after a bound well above what a
    /// passing test needs.
    fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_millis(1500);
        while !ready() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for `process` to exit by itself, then for its last lines.
    fn finish(mut process: Process) -> ExitStatus {
        wait_for("the exit", || process.try_wait().unwrap().is_some());
        process.stop(Duration::ZERO).unwrap()
    }

    fn alive(pid: i32) -> bool {
        proc_stat(pid).is_some_and(ProcStat::is_live)
    }

    fn first_line_as_pid(lines: &Lines) -> i32 {
        wait_for("the first line", || !lines.lock().unwrap().is_empty());
        lines.lock().unwrap()[0].1.parse().unwrap()
    }

    #[test]
    fn the_environment_is_exactly_the_one_given() {
        let (lines, on_line) = collector();
        let mut env = path_only();
        env.insert("GRAVEN_PROCESS".to_owned(), "web.1".into());
        env.insert("SPACED".to_owned(), "a b  c".into());
        let mut process = Process::spawn("web.1", "exec env", Path::new("/"), None, &env, on_line).unwrap();
        process.go();
        assert!(finish(process).success());

        let expected: BTreeSet<String> =
            env.iter().map(|(key, value)| format!("{key}={}", value.to_string_lossy())).collect();
        let seen: BTreeSet<String> = lines.lock().unwrap().iter().map(|(_, line)| line.clone()).collect();
        // What sh itself exports (dash: PWD; bash also SHLVL and _) is not
        // the runner's environment leaking in.
        let leaked: Vec<&String> = seen
            .difference(&expected)
            .filter(|line| line.as_str() != "PWD=/" && !line.starts_with("SHLVL=") && !line.starts_with("_="))
            .collect();
        assert!(leaked.is_empty(), "not given: {leaked:?}");
        assert!(expected.is_subset(&seen), "missing: {:?}", expected.difference(&seen).collect::<Vec<_>>());
    }

    #[test]
    fn stdout_and_stderr_lines_arrive_in_order_with_the_name() {
        let (lines, on_line) = collector();
        let process =
            spawn("echo one; echo two >&2; printf 'three\\r\\n'; echo four >&2; printf 'no newline'", on_line);
        assert!(finish(process).success());
        let expected = ["one", "two", "three", "four", "no newline"].map(|line| ("web.1".to_owned(), line.to_owned()));
        assert_eq!(*lines.lock().unwrap(), expected);
    }

    #[test]
    fn try_wait_sees_the_exit_code() {
        let (_, on_line) = collector();
        let mut process = spawn("sleep 100", on_line);
        assert_eq!(process.try_wait().unwrap(), None);

        let (_, on_line) = collector();
        let mut process = spawn("exit 3", on_line);
        let mut status = None;
        wait_for("the exit", || {
            status = process.try_wait().unwrap();
            status.is_some()
        });
        assert_eq!(status.unwrap().code(), Some(3));
        let uptime = process.uptime();
        thread::sleep(Duration::from_millis(20));
        assert_eq!(process.uptime(), uptime, "uptime stops at the exit");
    }

    #[test]
    fn try_wait_kills_what_an_exited_leader_left_in_its_group() {
        let (lines, on_line) = collector();
        let mut process = spawn("sleep 100 & echo $!; exit 1", on_line);
        let grandchild = first_line_as_pid(&lines);
        wait_for("the exit", || process.try_wait().unwrap().is_some());
        wait_for("the grandchild to go", || !alive(grandchild));
    }

    #[test]
    fn stop_kills_a_process_that_ignores_sigterm_and_its_children() {
        let (lines, on_line) = collector();
        let process = spawn("trap '' TERM; sleep 100 & echo $!; wait", on_line);
        let grandchild = first_line_as_pid(&lines);
        let (pid, pgid) = (process.pid(), process.pgid());
        assert_eq!(i32::try_from(pid).unwrap(), pgid);
        assert_eq!(proc_stat(grandchild).unwrap().pgrp, pgid);

        let start = Instant::now();
        let status = process.stop(Duration::from_millis(300)).unwrap();
        let took = start.elapsed();
        assert_eq!(status.signal(), Some(9), "{status}");
        assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(1), "{took:?}");
        assert!(!alive(grandchild), "the grandchild {grandchild} survived");
        assert!(live_members(pgid).is_empty());
    }

    #[test]
    fn stop_of_a_well_behaved_process_returns_quickly() {
        let (_, on_line) = collector();
        let process = spawn("sleep 100", on_line);
        let start = Instant::now();
        let status = process.stop(Duration::from_secs(10)).unwrap();
        assert_eq!(status.signal(), Some(15), "{status}");
        assert!(start.elapsed() < Duration::from_millis(500), "{:?}", start.elapsed());
    }

    #[test]
    fn stop_waits_for_the_whole_group_to_drain() {
        // The leader dies at SIGTERM at once; its child takes 200 ms to
        // finish, and must be allowed to.
        let (lines, on_line) = collector();
        let inner = "trap 'sleep 0.2; echo drained; exit 0' TERM; echo ready; sleep 100 & wait";
        let process = spawn(&format!("sh -c \"{inner}\" & wait"), on_line);
        wait_for("the child to be ready", || !lines.lock().unwrap().is_empty());
        let status = process.stop(Duration::from_secs(1)).unwrap();
        assert_eq!(status.signal(), Some(15), "{status}");
        let seen: Vec<String> = lines.lock().unwrap().iter().map(|(_, line)| line.clone()).collect();
        assert_eq!(seen, ["ready", "drained"]);
    }

    #[test]
    fn a_process_dropped_without_stop_is_killed() {
        let (lines, on_line) = collector();
        let process = spawn("sleep 100 & echo $!; wait", on_line);
        let grandchild = first_line_as_pid(&lines);
        drop(process);
        wait_for("the grandchild to go", || !alive(grandchild));
    }

    #[test]
    fn a_command_that_cannot_start_names_itself() {
        let (_, on_line) = collector();
        let error =
            Process::spawn("web.1", "true", Path::new("/no/such/dir"), None, &path_only(), on_line).unwrap_err();
        assert_eq!(error.to_string(), "could not start web.1 (`true`) in /no/such/dir");
    }

    #[test]
    fn backoff_doubles_to_thirty_seconds_and_resets_after_a_minute_up() {
        let mut backoff = Backoff::new();
        let short = Duration::from_secs(2);
        let delays: Vec<u64> = (0..7).map(|_| backoff.next_delay(short).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff.next_delay(Duration::from_millis(59_999)), MAX_RESTART_DELAY);
        assert_eq!(backoff.next_delay(STABLE_UPTIME), FIRST_RESTART_DELAY);
        assert_eq!(backoff.next_delay(short), Duration::from_secs(2));
        assert_eq!(backoff.restarts(), 10);
    }

    #[test]
    fn a_sandbox_failure_is_tried_again_at_once_a_few_times_then_backs_off_as_any_exit() {
        let mut backoff = Backoff::new();
        let pause = crate::sandbox::SETUP_PAUSE;
        let delays: Vec<Duration> = (0..crate::sandbox::SETUP_TRIES).map(|_| backoff.after_sandbox_failure()).collect();
        assert_eq!(delays, [pause, pause * 2, pause * 3, pause * 4, FIRST_RESTART_DELAY]);
        assert_eq!(backoff.after_sandbox_failure(), Duration::from_secs(2), "it keeps failing: it backs off");
        // A command that ran and exited starts the count again.
        assert_eq!(backoff.next_delay(STABLE_UPTIME), FIRST_RESTART_DELAY);
        assert_eq!(backoff.after_sandbox_failure(), pause);
        assert_eq!(backoff.restarts(), 8);
        assert_eq!(backoff.after_sandbox_failure(), pause * 2);
    }

    #[test]
    fn a_process_knows_whether_its_sandbox_failed_or_its_command_did() {
        let sandbox = crate::sandbox::Sandbox::find().expect("the tests need bwrap");
        let home = tempfile::tempdir().unwrap();
        let mount = AppMount::new(sandbox, &crate::home::Home::new(home.path()));
        let sandboxed = |command: &str, tree: &Path| {
            let (_, on_line) = collector();
            Process::spawn("web.1", command, tree, Some(&mount), &path_only(), on_line).unwrap()
        };
        let tree = tempfile::tempdir().unwrap();
        // The command ran, and failed as bwrap fails.
        let mut failed = sandboxed("exit 1", tree.path());
        failed.go();
        assert_eq!(finish_keeping(&mut failed).code(), Some(1));
        assert!(!failed.sandbox_failed());
        // The tree went away before it could be mounted: bwrap fails.
        let gone = tempfile::tempdir().unwrap();
        let mut unmade = sandboxed("exit 0", gone.path());
        drop(gone);
        unmade.go();
        assert_eq!(finish_keeping(&mut unmade).code(), Some(1));
        assert!(unmade.sandbox_failed());
        // Without the sandbox there is nothing to fail but the command.
        let mut plain = spawn("exit 1", collector().1);
        assert_eq!(finish_keeping(&mut plain).code(), Some(1));
        assert!(!plain.sandbox_failed());
    }

    /// Waits for `process` to exit by itself, keeping it.
    fn finish_keeping(process: &mut Process) -> ExitStatus {
        wait_for("the exit", || process.try_wait().unwrap().is_some());
        process.try_wait().unwrap().unwrap()
    }

    #[test]
    fn leftovers_are_killed_unless_gone_or_someone_else() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("runner.json");
        let (_, on_line) = collector();
        let mut leftover = spawn("sleep 100", Arc::clone(&on_line));
        let vanished = spawn("sleep 100", Arc::clone(&on_line));
        let mut stranger = spawn("sleep 100", on_line);

        record_groups(&state, &[leftover.pgid(), vanished.pgid()]).unwrap();
        let vanished_pgid = vanished.pgid();
        vanished.stop(Duration::from_secs(1)).unwrap();
        // The stranger has a pid that was once ours, but started at
        // another time.
        let mut recorded: StateFile = serde_json::from_slice(&fs::read(&state).unwrap()).unwrap();
        assert_eq!(
            recorded.groups.iter().map(|group| group.pgid).collect::<Vec<_>>(),
            [leftover.pgid(), vanished_pgid]
        );
        let stranger_stat = proc_stat(stranger.pgid()).unwrap();
        recorded.groups.push(RecordedGroup {
            pgid: stranger.pgid(),
            session: stranger_stat.session,
            start_time: stranger_stat.start_time + 1,
        });
        fs::write(&state, serde_json::to_vec(&recorded).unwrap()).unwrap();

        assert_eq!(kill_leftovers(&state).unwrap(), [leftover.pgid()]);
        assert!(!state.exists());
        wait_for("the leftover's end", || leftover.try_wait().unwrap().is_some());
        assert_eq!(leftover.try_wait().unwrap().unwrap().signal(), Some(9));
        assert_eq!(stranger.try_wait().unwrap(), None);
        assert_eq!(kill_leftovers(&state).unwrap(), [] as [i32; 0], "no file, no leftovers");
    }

    #[test]
    fn leftovers_of_a_leader_that_exited_are_killed() {
        // The previous runner's child, whose leader has exited and been
        // reaped (by init, in real life), leaving its own child behind.
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("runner.json");
        let mut leader = Command::new("/bin/sh")
            .args(["-c", "sleep 100 & echo $!; read line"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(leader.stdout.take().unwrap()).read_line(&mut first).unwrap();
        let grandchild: i32 = first.trim().parse().unwrap();
        let pgid = i32::try_from(leader.id()).unwrap();
        record_groups(&state, &[pgid]).unwrap();
        drop(leader.stdin.take());
        leader.wait().unwrap();
        assert!(alive(grandchild));

        assert_eq!(kill_leftovers(&state).unwrap(), [pgid]);
        assert!(!alive(grandchild), "the grandchild {grandchild} survived");
    }

    #[test]
    fn a_damaged_state_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("runner.json");
        fs::write(&state, "not json").unwrap();
        let error = kill_leftovers(&state).unwrap_err();
        assert!(matches!(error, ProcessError::StateFile { ref path, .. } if *path == state), "{error}");
        assert!(state.exists(), "kept for a look");
    }

    #[test]
    fn proc_stat_reads_fields_after_a_command_name_with_parentheses() {
        let line = b"4242 (a) S 1 (b) R 1 77 88 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 12345 0 0\n";
        let stat = parse_stat(line).unwrap();
        assert_eq!((stat.state, stat.pgrp, stat.session, stat.start_time), (b'R', 77, 88, 12345));
        let own = proc_stat(i32::try_from(std::process::id()).unwrap()).unwrap();
        assert!(own.is_live());
        assert_eq!(own.pgrp, rustix::process::getpgrp().as_raw_pid());
        // The session is not compared with getsid: in a PID namespace whose
        // session leader lives outside, the kernel reports session 0, which
        // getsid cannot represent.
    }
}
