//! The runner: makes the running processes match the environment's current
//! release, and keeps them running.
//!
//! A rollout (its states are in the `rollout` module) lays out the new
//! release's tree, runs its release phase, starts its processes, waits
//! until every new `web` process is healthy and every new process has
//! stayed up for `[run] settle`, switches the proxy to them in one step and
//! only then stops the old processes (after their requests drain). If
//! anything before the switch fails, the new processes are stopped, the
//! failure is recorded, and the old release keeps serving, untouched. A
//! release that failed is not tried again, unless the failure was passing
//! (no file descriptors, a full disk) or `graven restart` asks; the next
//! release is. A newer release supersedes a rollout still under way.
//!
//! Every process is recorded in the groups file before its command runs
//! (see [`Process::spawn`]), so that a runner killed at any moment leaves
//! nothing that the next one does not stop.

use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::logs::LogSink;
use super::process::{AppMount, Backoff, Process, record_groups};
use super::proxy::Proxy;
use super::rollout::{self, Failed, Prepared, Rollout, Steps};
use super::{RunError, artifact_of, materialise};
use crate::Digest;
use crate::app::RunSettings;
use crate::home::Home;
use crate::ledger::Ledger;
use crate::model::Formation;
use crate::model::Release;
use crate::model::{
    Failure, ProcessState, ProcessStatus, ReleasePhaseRun, RolloutReport, RunState, RunnerState, RunningRelease,
};
use crate::store::Store;
use crate::time;

/// The public port when neither `--port` nor `graven.toml [run] port` says.
pub const DEFAULT_PORT: u16 = 8080;
/// How long a new web process has to become healthy, unless `[run]
/// health_timeout` says.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a process has between SIGTERM and SIGKILL, unless `[run]
/// stop_timeout` says.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long every new process must stay up before the switch, unless
/// `[run] settle` says.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(3);
/// How many release trees stay on disk after a switch (the running one
/// among them), so that a rollback to a recent release costs no I/O.
pub const KEEP_TREES: usize = 5;
/// The longest the runner waits for its watch between two turns of its
/// loop (supervising, reporting).
const POLL: Duration = Duration::from_millis(200);
/// The same while a rollout waits for its release phase, its health checks
/// or its settle period.
const ROLLOUT_POLL: Duration = Duration::from_millis(50);

/// How often the runner reads the ledger even if its watch says nothing
/// changed: the fallback should a notification be lost.
const SLOW_POLL: Duration = Duration::from_secs(5);
/// How often the runner reports itself in the ledger.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Prints one line on the runner's stdout.
pub type Print = Arc<dyn Fn(&str) + Send + Sync>;

/// What the runner runs, and how.
pub struct RunnerOptions {
    /// The app.
    pub app: String,
    /// The environment.
    pub env: String,
    /// `--formation`: counts that override the environment's formation
    /// (`graven scale`) for this runner, type by type.
    pub formation: Formation,
    /// The public port; `None` takes the current release's `[run] port`.
    pub port: Option<u16>,
    /// This machine's name, for the run state.
    pub host: String,
    /// How processes see their tree: read-only at `/app`, or, with
    /// `None` (`--no-sandbox`), where it lies, writable by root.
    pub mount: Option<AppMount>,
    /// `--user`: whom every release's processes run as, over its
    /// `[run] user`.
    pub user: Option<crate::user::RunAs>,
}

/// The proxy's mode and limits: the first release's `[run]` settings,
/// defaults for what it leaves out. A runner keeps them until it restarts.
fn proxy_settings(run: Option<&RunSettings>) -> (super::proxy::ProxyMode, super::proxy::ProxyLimits) {
    let mut limits = super::proxy::ProxyLimits::default();
    let Some(run) = run else { return (super::proxy::ProxyMode::default(), limits) };
    if let Some(max) = run.max_connections {
        limits.max_connections = usize::try_from(max).unwrap_or(usize::MAX);
    }
    if let Some(seconds) = run.header_timeout {
        limits.header_timeout = Duration::from_secs(seconds);
    }
    if let Some(seconds) = run.idle_timeout {
        limits.idle_timeout = Duration::from_secs(seconds);
    }
    if let Some(bytes) = run.max_header_bytes {
        limits.max_header_bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
    }
    if let Some(seconds) = run.timeout {
        limits.response_timeout = Duration::from_secs(seconds);
    }
    (run.proxy.unwrap_or_default(), limits)
}

/// What the runner says of a process whose sandbox could not be made.
const SANDBOX_FAILED: &str = "bwrap could not make its sandbox (the machine's mounts changed while it copied them; its output says how), and its command did not start";

/// One process slot of a deployment: its process of the release's
/// [`Plan`](super::plan::Plan), restarted in place when it exits.
struct Slot {
    name: String,
    kind: String,
    command: String,
    /// The plan's environment, to which `start` adds PORT, TMPDIR, HOME.
    env: std::collections::BTreeMap<String, OsString>,
    port: Option<u16>,
    process: Option<Process>,
    backoff: Backoff,
    restart_at: Option<Instant>,
    started_at: Option<String>,
    /// A web process the proxy sends requests to: from the switch until
    /// it exits, then again once its restart is healthy (see
    /// [`Runner::supervise`]).
    routed: bool,
    /// Its health check under way, if any (see [`Slot::answers_health`]).
    probe: Option<Probe>,
}

/// A release with its processes.
struct Deployment {
    release: Release,
    tree: PathBuf,
    run: RunSettings,
    /// Whom its processes run as: `--user`, else its `[run] user`.
    user: Option<crate::user::RunAs>,
    /// What it was rolled out for: see [`Target`].
    target: Target,
    slots: Vec<Slot>,
    since: String,
}

/// What the runner is to run: a release, in a formation, as of a restart
/// request. A rollout is due whenever the running deployment was made for
/// another target.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    release: Digest,
    formation: Formation,
    /// The newest `graven restart` request seen (0: none).
    restart: u64,
}

/// A rollout under way, or failed, and its work.
struct Attempt {
    machine: Rollout,
    work: Work,
}

/// What a rollout has made so far.
struct Work {
    release: Release,
    target: Target,
    /// Whether it only scales or restarts the running release: no release
    /// phase then.
    same_release: bool,
    /// What runs, once prepared.
    plan: Option<super::plan::Plan>,
    /// The new deployment, until the switch hands it over.
    pending: Option<Deployment>,
    release_phase: Option<Process>,
}

/// The runner of one app's environment.
pub struct Runner<'a> {
    ledger: &'a dyn Ledger,
    store: &'a dyn Store,
    home: &'a Home,
    options: RunnerOptions,
    sink: Arc<LogSink>,
    print: Print,
    proxy: Option<Arc<Proxy>>,
    current: Option<Deployment>,
    /// The formation to run: the environment's, under `--formation`.
    formation: Formation,
    /// Processes of releases switched away from, being stopped in the
    /// background once their connections drain.
    retiring: Vec<Retiring>,
    /// The rollout under way, or the one that failed for good.
    attempt: Option<Attempt>,
    /// The newest `graven restart` request seen.
    restart: u64,
    failure: Option<Failure>,
    /// The process groups last written to the groups file.
    recorded: Vec<i32>,
    /// When the run state was last recorded in the ledger.
    last_report: Option<Instant>,
    /// The ledger failing when polled.
    ledger_error: Trouble,
    /// The ledger failing when the run state is recorded.
    report_error: Trouble,
    /// The log file failing to be written.
    log_error: Trouble,
}

/// A failure that keeps happening, said when it starts or changes and when
/// it is over, not at every attempt.
#[derive(Default)]
struct Trouble(Option<String>);

/// What an attempt tells of a [`Trouble`].
enum News {
    /// It fails, newly or otherwise than before, and why.
    Failing(String),
    /// It works again.
    Recovered,
    /// Nothing new.
    Same,
}

impl Trouble {
    /// Records the latest attempt's error (`None`: it worked).
    fn update(&mut self, error: Option<String>) -> News {
        if error == self.0 {
            return News::Same;
        }
        self.0.clone_from(&error);
        error.map_or(News::Recovered, News::Failing)
    }
}

impl<'a> Runner<'a> {
    /// A runner that logs to the environment's run directory and prints
    /// with `print`.
    pub fn new(
        ledger: &'a dyn Ledger,
        store: &'a dyn Store,
        home: &'a Home,
        options: RunnerOptions,
        print: Print,
    ) -> Result<Self, RunError> {
        let dir = home.run_dir(&options.app, &options.env);
        let sink = LogSink::open(&dir).map_err(|e| RunError::Io {
            action: "open the log in",
            path: dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(Self {
            ledger,
            store,
            home,
            formation: options.formation.clone(),
            options,
            sink: Arc::new(sink),
            print,
            proxy: None,
            current: None,
            retiring: Vec::new(),
            attempt: None,
            restart: 0,
            failure: None,
            recorded: Vec::new(),
            last_report: None,
            ledger_error: Trouble::default(),
            report_error: Trouble::default(),
            log_error: Trouble::default(),
        })
    }

    /// Runs until `stop` is set, then stops every process. The caller has
    /// stopped a previous runner's leftovers (see
    /// [`kill_leftovers`](super::process::kill_leftovers)) first.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), RunError> {
        let first = self.ledger.current_release(&self.options.app, &self.options.env)?;
        let port = match (self.options.port, &first) {
            (Some(port), _) => port,
            (None, Some(release)) => {
                artifact_of(self.store, release).ok().and_then(|a| a.run.port).unwrap_or(DEFAULT_PORT)
            }
            (None, None) => DEFAULT_PORT,
        };
        // A descriptor per client and one per backend connection: as many
        // as the machine lets this process have.
        super::proxy::raise_open_file_limit();
        let settings = first.as_ref().and_then(|release| artifact_of(self.store, release).ok()).map(|a| a.run);
        let (mode, limits) = proxy_settings(settings.as_ref());
        let proxy = Proxy::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)), mode, limits)
            .map_err(|e| RunError::Proxy { port, why: e.to_string() })?;
        proxy.start().map_err(|e| RunError::Proxy { port, why: e.to_string() })?;
        self.say(&format!("listening on port {port} for {} {}", self.options.app, self.options.env));
        self.proxy = Some(Arc::new(proxy));
        if first.is_none() {
            self.say(&format!("no release yet: waiting for graven release --env {}", self.options.env));
        }

        // What a killed runner's processes left in their TMPDIRs: nothing
        // of theirs runs any more (the caller stopped the leftovers).
        crate::fs_tree::remove_tree(&self.home.run_dir(&self.options.app, &self.options.env).join("tmp"));
        // A restart asked for before this runner started is not for it:
        // its processes are fresh.
        self.restart = self.ledger.last_restart(&self.options.app, &self.options.env)?.map_or(0, |r| r.seq);
        // The ledger wakes the loop when it changes; a slow poll stays as
        // a fallback, and a failed read is tried again at every turn.
        let ledger = self.ledger;
        let mut watch = ledger.watch(&self.options.app, &self.options.env)?;
        let mut read_at: Option<Instant> = None;
        let mut changed = true;
        while !stop.load(Ordering::Relaxed) {
            if changed || read_at.is_none_or(|at| at.elapsed() >= SLOW_POLL) {
                match self.read_desired() {
                    Ok(desired) => {
                        read_at = Some(Instant::now());
                        self.ledger_trouble(None);
                        if let Some(desired) = desired {
                            self.aim_at(&desired);
                        }
                    }
                    // What runs keeps running: a ledger that cannot be read
                    // for a while (a disk or network hiccup) is no reason to
                    // stop serving. The next turn tries again.
                    Err(error) => {
                        read_at = None;
                        self.ledger_trouble(Some(crate::error_chain(&error)));
                    }
                }
            }
            self.advance_rollout();
            self.keep_up();
            let busy = self.attempt.as_ref().is_some_and(|attempt| attempt.machine.failure().is_none())
                || self.web_coming_back();
            changed = watch.wait(if busy { ROLLOUT_POLL } else { POLL }).unwrap_or_else(|_| {
                // The watch failed with the ledger: look again after a pause.
                std::thread::sleep(POLL);
                true
            });
        }
        self.shutdown();
        Ok(())
    }

    /// Supervises the running release and keeps its run state fresh; also
    /// called while a rollout waits for a release phase or a health check,
    /// so that neither stops the old release's restarts nor makes the
    /// runner look dead to `graven status`.
    fn keep_up(&mut self) {
        self.supervise();
        // Said on stdout only: the log file is what fails. Each distinct
        // error once; whether writes work again shows in the file itself.
        if let Some(error) = self.sink.take_failure()
            && let News::Failing(why) = self.log_error.update(Some(error.to_string()))
        {
            let text = format!("could not write the log file ({why}); lines still go to stdout");
            (self.print)(&super::logs::format_line(std::time::SystemTime::now(), "graven", &text));
        }
        if self.last_report.is_none_or(|at| at.elapsed() >= REPORT_EVERY) {
            self.report(RunnerState::Running);
            self.last_report = Some(Instant::now());
        }
    }

    /// Says when the ledger stops answering (once per distinct error) and
    /// when it answers again.
    fn ledger_trouble(&mut self, error: Option<String>) {
        match self.ledger_error.update(error) {
            News::Failing(why) => {
                let serving = self.current.as_ref().map_or_else(|| "nothing".to_owned(), |d| d.release.version());
                self.say(&format!("cannot read the ledger ({why}); {serving} keeps running, and graven retries"));
            }
            News::Recovered => self.say("the ledger answers again"),
            News::Same => {}
        }
    }

    fn say(&self, text: &str) {
        let line = self.sink.line("graven", text);
        (self.print)(&line);
    }

    /// The current release and formation from the ledger, and the newest
    /// restart request; says when the formation changed.
    fn read_desired(&mut self) -> Result<Option<(Release, Target)>, crate::ledger::LedgerError> {
        let (app, env) = (&self.options.app, &self.options.env);
        let release = self.ledger.current_release(app, env)?;
        let formation = self.ledger.formation(app, env)?.map(|record| record.formation).unwrap_or_default();
        let restart = self.ledger.last_restart(app, env)?;
        let formation = formation.overridden_by(&self.options.formation);
        if formation != self.formation {
            self.say(&format!("formation: {formation}"));
            self.formation = formation;
        }
        if let Some(restart) = restart
            && restart.seq > self.restart
        {
            self.say(&format!("restart asked by {} at {}", restart.author, restart.created_at));
            self.restart = restart.seq;
        }
        let target = |release: &Release| Target {
            release: release.id,
            formation: self.formation.clone(),
            restart: self.restart,
        };
        Ok(release.map(|release| {
            let target = target(&release);
            (release, target)
        }))
    }

    /// Starts a rollout to `desired` unless it runs, or is being rolled
    /// out, or failed for good; a rollout to anything else that has not
    /// switched yet is cancelled: the newer release supersedes it.
    fn aim_at(&mut self, (release, target): &(Release, Target)) {
        if self.current.as_ref().is_some_and(|current| &current.target == target) {
            if let Some(mut attempt) = self.attempt.take_if(|attempt| !attempt.machine.switched()) {
                self.say(&format!(
                    "{} is wanted again: the rollout of {} is cancelled",
                    release.version(),
                    attempt.work.release.version()
                ));
                self.cancel(&mut attempt);
            }
            return;
        }
        if self.attempt.as_ref().is_some_and(|attempt| &attempt.work.target == target) {
            return;
        }
        if let Some(mut attempt) = self.attempt.take() {
            if !attempt.machine.switched() {
                self.say(&format!(
                    "{} supersedes the rollout of {}, which is cancelled",
                    release.version(),
                    attempt.work.release.version()
                ));
            }
            self.cancel(&mut attempt);
        }
        let same_release = self.current.as_ref().is_some_and(|current| current.release.id == release.id);
        if !same_release {
            self.say(&format!("rolling out {}: {} ({})", release.version(), release.description, release.kind));
        } else if self.current.as_ref().is_some_and(|current| current.target.formation != target.formation) {
            self.say(&format!("scaling {} to {}", release.version(), self.formation));
        } else {
            self.say(&format!("restarting {}", release.version()));
        }
        self.attempt = Some(Attempt {
            machine: Rollout::new(&release.version()),
            work: Work {
                release: release.clone(),
                target: target.clone(),
                same_release,
                plan: None,
                pending: None,
                release_phase: None,
            },
        });
    }

    fn cancel(&mut self, attempt: &mut Attempt) {
        let Attempt { machine, work } = attempt;
        machine.cancel(&mut Act { runner: self, work });
    }

    /// Takes the rollout as far as it can go now, and says what happened.
    fn advance_rollout(&mut self) {
        let Some(mut attempt) = self.attempt.take() else { return };
        let Attempt { machine, work } = &mut attempt;
        let events = machine.advance(Instant::now(), &mut Act { runner: self, work });
        let version = work.release.version();
        // Stages are shown by `graven status`; failures are said here too.
        for event in events {
            if let rollout::Event::Failed { failed, retry_at } = event {
                self.say(&format!("rollout of {version} failed: {}", failed.reason));
                let retry = retry_at.map(|at| at.saturating_duration_since(Instant::now()));
                match (&self.current, retry) {
                    (_, Some(delay)) => self.say(&format!(
                        "that is a passing cause: {version} is tried again in {} s",
                        delay.as_secs_f64().ceil()
                    )),
                    (Some(current), None) => self.say(&format!("{} keeps serving", current.release.version())),
                    (None, None) => self.say("nothing is serving"),
                }
                self.failure = Some(Failure {
                    number: work.release.number,
                    reason: failed.reason,
                    at: time::now_rfc3339(),
                    cause: failed.cause,
                    retry_at: retry.map(|delay| time::rfc3339(std::time::SystemTime::now() + delay)),
                });
                self.report(RunnerState::Running);
            }
        }
        if machine.stage().is_some() {
            self.attempt = Some(attempt);
        }
    }

    /// Starts `slot`'s process, with a fresh private TMPDIR, held: it runs
    /// its command once [`Slot::go`] is called, after its group is
    /// recorded.
    fn start(
        &self,
        release: &Release,
        tree: &Path,
        user: Option<&crate::user::RunAs>,
        slot: &mut Slot,
    ) -> Result<(), Failed> {
        let mut env = slot.env.clone();
        if let Some(port) = slot.port {
            env.insert("PORT".to_owned(), OsString::from(port.to_string()));
        }
        // Per release: while a switch drains, v1's web.1 and v2's web.1 both
        // run, and neither may lose its files to the other's start.
        let tmp = self.tmp_dir(release).join(&slot.name);
        crate::fs_tree::remove_tree(&tmp);
        let io_failure = |action, path: &Path| {
            let path = path.to_owned();
            move |source| Failed::of(&RunError::Io { action, path, source })
        };
        crate::fs_tree::create_private_dir_all(&tmp).map_err(io_failure("create", &tmp))?;
        let home_dir = self.home.run_dir(&self.options.app, &self.options.env);
        let home = super::process_home(self.home, &self.options.app, &self.options.env)
            .map_err(io_failure("create the processes' HOME in", &home_dir))?;
        let mount = match (self.options.mount.as_ref(), user) {
            (Some(mount), Some(user)) => Some(mount.as_user(user, &[&home, &tmp]).map_err(|e| Failed {
                reason: format!("could not give {} its HOME and TMPDIR: {e}", user.name),
                cause: Failed::of(&e).cause,
            })?),
            (mount, _) => mount.cloned(),
        };
        env.insert("TMPDIR".to_owned(), tmp.into_os_string());
        env.insert("HOME".to_owned(), home.into_os_string());
        let sink = Arc::clone(&self.sink);
        let print = Arc::clone(&self.print);
        // `web.1 v5 |`: while a switch drains, v4's web.1 and v5's web.1
        // both print, and each line says whose it is.
        let version = release.version();
        let on_line = Arc::new(move |name: &str, line: &str| print(&sink.line(&format!("{name} {version}"), line)));
        let process = Process::spawn(&slot.name, &slot.command, tree, mount.as_ref(), &env, on_line)
            .map_err(|e| Failed::of(&e))?;
        slot.process = Some(process);
        slot.started_at = Some(time::now_rfc3339());
        Ok(())
    }

    /// Where `release`'s processes get their TMPDIRs (one each, by name).
    fn tmp_dir(&self, release: &Release) -> PathBuf {
        self.home.run_dir(&self.options.app, &self.options.env).join("tmp").join(release.version())
    }

    /// Points the proxy at the new web processes, then stops the old ones
    /// once their connections have drained.
    fn switch(&mut self, mut deployment: Deployment) {
        for slot in &mut deployment.slots {
            slot.routed = slot.port.is_some();
        }
        let backends: Vec<SocketAddr> = deployment.slots.iter().filter_map(Slot::backend).collect();
        let version = deployment.release.version();
        if let Some(proxy) = &self.proxy {
            proxy.switch(&version, backends);
        }
        if let Some(old) = self.current.replace(deployment) {
            self.say(&format!("{version} is serving; stopping {}", old.release.version()));
            self.retire(old);
        } else {
            self.say(&format!("{version} is serving"));
        }
        self.failure = None;
        self.record_groups(&[]);
        self.report(RunnerState::Running);
        self.prune_trees();
    }

    /// Removes release trees beyond the newest [`KEEP_TREES`], never the
    /// running one.
    fn prune_trees(&self) {
        let dir = self.home.releases_dir(&self.options.app, &self.options.env);
        let Ok(entries) = std::fs::read_dir(&dir) else { return };
        let mut numbers: Vec<u64> =
            entries.flatten().filter_map(|entry| entry.file_name().to_str()?.strip_prefix('v')?.parse().ok()).collect();
        numbers.sort_unstable_by(|a, b| b.cmp(a));
        let running = self.current.as_ref().map(|d| d.release.number);
        for number in numbers.into_iter().skip(KEEP_TREES) {
            if Some(number) != running {
                crate::fs_tree::remove_tree(&dir.join(format!("v{number}")));
            }
        }
    }

    /// Stops `slots` and waits for them; see [`stop_slots`].
    fn stop_all(&self, slots: Vec<Slot>, run: &RunSettings) {
        stop_slots(self.proxy.as_deref(), slots, stop_timeout(run));
    }

    /// Stops the processes of a release switched away from on a thread of
    /// their own: draining connections can take the whole stop timeout, and
    /// meanwhile the new release must be supervised and reported. Their
    /// process groups stay in the groups file until they are gone.
    fn retire(&mut self, old: Deployment) {
        let pgids = old.slots.iter().filter_map(|slot| slot.process.as_ref().map(Process::pgid)).collect();
        let proxy = self.proxy.clone();
        let timeout = stop_timeout(&old.run);
        let tmp = self.tmp_dir(&old.release);
        let handle = std::thread::spawn(move || {
            stop_slots(proxy.as_deref(), old.slots, timeout);
            crate::fs_tree::remove_tree(&tmp);
        });
        self.retiring.push(Retiring { pgids, handle });
    }

    /// Whether a restarted web process of the running release waits to be
    /// healthy, and routed to again.
    fn web_coming_back(&self) -> bool {
        self.current.iter().flat_map(|d| &d.slots).any(Slot::coming_back)
    }

    /// Restarts processes that exited, with backoff. A web process that
    /// exited is taken out of the proxy's backends at once, and restarted
    /// on a new port: whatever listens on its old one meanwhile (another
    /// process could) gets no request. It is routed to again once it is
    /// healthy, as a rollout checks it.
    fn supervise(&mut self) {
        let Some(mut deployment) = self.current.take() else { return };
        let routed_before = routed_backends(&deployment.slots);
        for slot in &mut deployment.slots {
            if let Some(process) = slot.process.as_mut()
                && let Ok(Some(status)) = process.try_wait()
            {
                let uptime = process.uptime();
                let sandbox_failed = process.sandbox_failed();
                let delay =
                    if sandbox_failed { slot.backoff.after_sandbox_failure() } else { slot.backoff.next_delay(uptime) };
                slot.process = None;
                slot.restart_at = Some(Instant::now() + delay);
                if slot.port.is_some() {
                    slot.routed = false;
                    slot.port = free_port().or(slot.port);
                }
                if sandbox_failed {
                    self.say(&format!(
                        "{}: {SANDBOX_FAILED}; starting it again in {} ms",
                        slot.name,
                        delay.as_millis()
                    ));
                } else {
                    self.say(&format!("{} exited ({status}); restarting in {} s", slot.name, delay.as_secs()));
                }
            }
            if slot.process.is_none() && slot.restart_at.is_some_and(|at| Instant::now() >= at) {
                slot.restart_at = None;
                if let Err(failed) = self.start(&deployment.release, &deployment.tree, deployment.user.as_ref(), slot) {
                    let delay = slot.backoff.next_delay(Duration::ZERO);
                    slot.restart_at = Some(Instant::now() + delay);
                    self.say(&format!("{} could not be restarted: {}", slot.name, failed.reason));
                }
            }
        }
        for slot in deployment.slots.iter_mut().filter(|slot| slot.coming_back()) {
            slot.routed = slot.answers_health(deployment.run.health.as_deref());
        }
        let routed = routed_backends(&deployment.slots);
        if routed != routed_before
            && let Some(proxy) = &self.proxy
        {
            proxy.reroute(routed);
        }
        self.current = Some(deployment);
        // Restarted processes run once their groups are on record; without
        // a record they are stopped, and tried again later.
        let recorded = self.record_groups(&[]);
        let mut unrecorded = Vec::new();
        for slot in self.current.iter_mut().flat_map(|d| d.slots.iter_mut()) {
            if recorded {
                slot.go();
            } else if slot.process.as_ref().is_some_and(Process::is_held) {
                slot.process = None;
                slot.restart_at = Some(Instant::now() + slot.backoff.next_delay(Duration::ZERO));
                unrecorded.push(slot.name.clone());
            }
        }
        if !unrecorded.is_empty() {
            let file = groups_file(self.home, &self.options.app, &self.options.env);
            self.say(&format!("could not record {} in {}: tried again later", unrecorded.join(", "), file.display()));
        }
    }

    /// Writes the groups file when the set of process groups changed: the
    /// running release's, those being stopped, the rollout's, and `extra`
    /// (a rollout's while it is out of `self`). Whether it could be written
    /// says whether held processes may go.
    fn record_groups(&mut self, extra: &[i32]) -> bool {
        self.retiring.retain(|retiring| !retiring.handle.is_finished());
        let pgids: Vec<i32> = self
            .current
            .iter()
            .flat_map(|d| d.slots.iter())
            .filter_map(|slot| slot.process.as_ref().map(Process::pgid))
            .chain(self.retiring.iter().flat_map(|retiring| retiring.pgids.iter().copied()))
            .chain(self.attempt.iter().flat_map(|attempt| attempt.work.pgids()))
            .chain(extra.iter().copied())
            .collect();
        if pgids == self.recorded {
            return true;
        }
        match record_groups(&groups_file(self.home, &self.options.app, &self.options.env), &pgids) {
            Ok(()) => {
                self.recorded = pgids;
                true
            }
            Err(_) => false,
        }
    }

    /// Writes the run state for `graven status`.
    fn report(&mut self, state: RunnerState) {
        let processes = self
            .current
            .iter()
            .flat_map(|d| d.slots.iter())
            .map(|slot| ProcessState {
                name: slot.name.clone(),
                kind: slot.kind.clone(),
                pid: slot.process.as_ref().map(Process::pid),
                state: match (&slot.process, slot.restart_at) {
                    _ if state == RunnerState::Stopped => ProcessStatus::Stopped,
                    (Some(_), _) => ProcessStatus::Up,
                    (None, Some(_)) => ProcessStatus::Restarting,
                    (None, None) => ProcessStatus::Stopped,
                },
                restarts: slot.backoff.restarts(),
                started_at: slot.started_at.clone(),
            })
            .collect();
        let run_state = RunState {
            app: self.options.app.clone(),
            env: self.options.env.clone(),
            host: self.options.host.clone(),
            home: self.home.root().display().to_string(),
            runner_pid: std::process::id(),
            state,
            running: self.current.as_ref().map(|d| RunningRelease {
                id: d.release.id,
                number: d.release.number,
                since: d.since.clone(),
                read_only_app: self.options.mount.is_some(),
                user: d.user.as_ref().map(|user| user.name.clone()),
                formation: d.target.formation.clone(),
                restart: d.target.restart,
            }),
            processes,
            last_failure: self.failure.clone(),
            rollout: self.attempt.as_ref().and_then(|attempt| {
                Some(RolloutReport {
                    number: attempt.work.release.number,
                    stage: attempt.machine.stage()?,
                    attempt: attempt.machine.attempt(),
                })
            }),
            updated_at: time::now_rfc3339(),
        };
        let error = self.ledger.set_run_state(&run_state).err().map(|e| e.to_string());
        match self.report_error.update(error) {
            News::Failing(why) => self.say(&format!("could not record the run state in the ledger: {why}")),
            News::Recovered => self.say("the run state is recorded in the ledger again"),
            News::Same => {}
        }
    }

    fn shutdown(&mut self) {
        self.say("stopping");
        // No new connections from here on; open ones drain while the web
        // processes are stopped, rather than new ones keep them busy.
        if let Some(proxy) = &self.proxy {
            proxy.stop();
        }
        if let Some(mut attempt) = self.attempt.take() {
            self.cancel(&mut attempt);
        }
        if let Some(deployment) = self.current.take() {
            let run = deployment.run.clone();
            self.stop_all(deployment.slots, &run);
        }
        for retiring in self.retiring.drain(..) {
            let _ = retiring.handle.join();
        }
        self.proxy = None;
        crate::fs_tree::remove_tree(&self.home.run_dir(&self.options.app, &self.options.env).join("tmp"));
        let _ = std::fs::remove_file(groups_file(self.home, &self.options.app, &self.options.env));
        self.report(RunnerState::Stopped);
        self.say("stopped");
    }
}

impl Work {
    /// The process groups it has started.
    fn pgids(&self) -> impl Iterator<Item = i32> + '_ {
        self.pending
            .iter()
            .flat_map(|d| d.slots.iter())
            .filter_map(|slot| slot.process.as_ref().map(Process::pgid))
            .chain(self.release_phase.as_ref().map(Process::pgid))
    }
}

/// The steps of a rollout, done by the runner on its work.
struct Act<'r, 'a> {
    runner: &'r mut Runner<'a>,
    work: &'r mut Work,
}

impl Act<'_, '_> {
    /// Records the runner's groups with the rollout's, then lets held
    /// processes run; without a record they are stopped instead.
    /// `held` names them for the fail point: `rollout-v5-held-processes`.
    fn record_and_go(&mut self, held: &str) -> Result<(), Failed> {
        crate::fail_point::check(&format!("rollout-{}-held-{held}", self.work.release.version()));
        let pgids: Vec<i32> = self.work.pgids().collect();
        if !self.runner.record_groups(&pgids) {
            let file = groups_file(self.runner.home, &self.runner.options.app, &self.runner.options.env);
            return Err(Failed::passing(format!("could not record the new processes in {}", file.display())));
        }
        if let Some(process) = self.work.release_phase.as_mut() {
            process.go();
        }
        for slot in self.work.pending.iter_mut().flat_map(|d| d.slots.iter_mut()) {
            slot.go();
        }
        Ok(())
    }

    fn deployment(&mut self) -> &mut Deployment {
        self.work.pending.as_mut().expect("prepared before it is started")
    }
}

impl Steps for Act<'_, '_> {
    fn prepare(&mut self) -> Result<Prepared, Failed> {
        let runner = &*self.runner;
        let release = &self.work.release;
        let artifact = artifact_of(runner.store, release).map_err(|e| Failed::of(&e))?;
        let tree = materialise(runner.store, runner.home, release, &artifact).map_err(|e| Failed::of(&e))?;
        let config = runner.ledger.config_version(&release.config).map_err(|e| Failed::of(&e))?.ok_or_else(|| {
            Failed::release(format!("config version {} is missing from the ledger", release.config.short()))
        })?;
        let user = crate::user::RunAs::of_release(runner.options.user.as_ref(), artifact.run.user.as_deref())
            .map_err(|e| Failed::release(format!("[run] user: {e}")))?;
        if user.as_ref().is_some_and(|user| !user.is_self()) && runner.options.mount.is_none() {
            return Err(Failed::release(
                "a user to run as needs the sandbox, which gives it a HOME of its own: run without --no-sandbox",
            ));
        }
        let plan = super::plan::plan(release, &config, &artifact, &self.work.target.formation);
        let run = &artifact.run;
        let prepared = Prepared {
            // Once per release: not again when the running release is
            // only scaled or restarted.
            release_phase: plan.release_phase.is_some() && !self.work.same_release,
            health_timeout: run.health_timeout.map_or(DEFAULT_HEALTH_TIMEOUT, Duration::from_secs),
            settle: run.settle.map_or(DEFAULT_SETTLE, Duration::from_secs),
        };
        self.work.plan = Some(plan);
        self.work.pending = Some(Deployment {
            release: release.clone(),
            tree: tree.path,
            run: artifact.run.clone(),
            user,
            target: self.work.target.clone(),
            slots: Vec::new(),
            since: time::now_rfc3339(),
        });
        Ok(prepared)
    }

    fn start_release_phase(&mut self) -> Result<(), Failed> {
        let phase = self.work.plan.as_ref().and_then(|plan| plan.release_phase.clone());
        let mut slot = Slot::new(phase.expect("prepare saw a release phase"));
        let d = self.work.pending.as_ref().expect("prepared before it is started");
        self.runner.start(&d.release, &d.tree, d.user.as_ref(), &mut slot)?;
        self.work.release_phase = slot.process.take();
        // In the ledger before the process may run, so that `graven diff`
        // never misses a run; a held process that never goes is stopped
        // with the rollout that failed.
        let runner = &*self.runner;
        let run = ReleasePhaseRun {
            app: d.release.app.clone(),
            env: d.release.env.clone(),
            number: d.release.number,
            host: runner.options.host.clone(),
            home: runner.home.root().display().to_string(),
            started_at: time::now_rfc3339(),
        };
        runner.ledger.record_release_phase(&run).map_err(|e| Failed::of(&e))?;
        self.record_and_go("release-phase")
    }

    fn release_phase_ended(&mut self) -> Option<Result<(), Failed>> {
        let process = self.work.release_phase.as_mut()?;
        let ended = match process.try_wait() {
            Ok(None) => return None,
            Ok(Some(status)) if status.success() => Ok(()),
            Ok(Some(_)) if process.sandbox_failed() => {
                Err(Failed::passing(format!("the release phase: {SANDBOX_FAILED}")))
            }
            Ok(Some(status)) => {
                let phase = self.work.plan.as_ref().and_then(|plan| plan.release_phase.as_ref());
                Err(Failed::release(format!(
                    "the release phase `{}` failed ({status})",
                    phase.map_or("", |phase| phase.command.as_str())
                )))
            }
            Err(e) => Err(Failed::of(&e)),
        };
        // Ended: what is left is its last lines.
        if let Some(process) = self.work.release_phase.take() {
            let _ = process.stop(Duration::ZERO);
        }
        Some(ended)
    }

    fn start_processes(&mut self) -> Result<(), Failed> {
        let plan = self.work.plan.as_ref().expect("prepared before it is started");
        let slots = plan.processes.iter().cloned().map(Slot::new).collect();
        self.deployment().slots = slots;
        let d = self.work.pending.as_mut().expect("prepared before it is started");
        for slot in &mut d.slots {
            self.runner.start(&d.release, &d.tree, d.user.as_ref(), slot)?;
        }
        self.record_and_go("processes")
    }

    fn healthy(&mut self) -> Result<Option<String>, Failed> {
        if let Some(failed) = self.exited("before it was healthy") {
            return Err(failed);
        }
        let d = self.deployment();
        let health = d.run.health.clone();
        // Every web process's check under way at once; the first that has
        // not answered yes is what the rollout waits for.
        let mut waiting = None;
        for slot in &mut d.slots {
            let Some(port) = slot.port else { continue };
            if !slot.answers_health(health.as_deref()) && waiting.is_none() {
                let check = health.as_deref().map_or_else(
                    || format!("accept connections on port {port}"),
                    |path| format!("answer 2xx on {path}"),
                );
                waiting = Some(format!("{} did not {check}", slot.name));
            }
        }
        Ok(waiting)
    }

    fn exited(&mut self) -> Option<Failed> {
        self.exited("while settling")
    }

    fn switch(&mut self) {
        let deployment = self.work.pending.take().expect("switched once, after it started");
        self.runner.switch(deployment);
    }

    fn drained(&mut self) -> bool {
        self.runner.retiring.retain(|retiring| !retiring.handle.is_finished());
        self.runner.retiring.is_empty()
    }

    fn abandon(&mut self) {
        let timeout = self.work.pending.as_ref().map_or(DEFAULT_STOP_TIMEOUT, |d| stop_timeout(&d.run));
        if let Some(process) = self.work.release_phase.take() {
            let pgid = process.pgid();
            let handle = std::thread::spawn(move || drop(process.stop(timeout)));
            self.runner.retiring.push(Retiring { pgids: vec![pgid], handle });
        }
        if let Some(deployment) = self.work.pending.take() {
            // In the background, as a release switched away from: the loop
            // goes on supervising what serves meanwhile.
            self.runner.retire(deployment);
        }
        self.runner.record_groups(&[]);
    }
}

impl Act<'_, '_> {
    /// A failure naming the first new process that has exited, `when`.
    fn exited(&mut self, when: &str) -> Option<Failed> {
        let d = self.work.pending.as_mut()?;
        d.slots.iter_mut().find_map(|slot| {
            let process = slot.process.as_mut()?;
            let status = process.try_wait().ok()??;
            Some(if process.sandbox_failed() {
                Failed::passing(format!("{}: {SANDBOX_FAILED}", slot.name))
            } else if let Some(port) = slot.port.filter(|&port| taken(port)) {
                // Picked free, then taken by another process before the
                // app could listen on it: the next try has new ports.
                Failed::passing(format!(
                    "{} exited {when} ({status}), and another process listens on its port {port}",
                    slot.name
                ))
            } else {
                Failed::release(format!("{} exited {when} ({status})", slot.name))
            })
        })
    }
}

impl Slot {
    /// Lets its held process run (see [`Runner::start`]).
    fn go(&mut self) {
        if let Some(process) = self.process.as_mut() {
            process.go();
        }
    }

    /// The slot of `process`; a web process gets a port of its own.
    fn new(process: super::plan::PlannedProcess) -> Self {
        let port = if process.is_web() { free_port() } else { None };
        Self {
            name: process.name,
            kind: process.kind,
            command: process.command,
            env: process.env,
            port,
            process: None,
            backoff: Backoff::new(),
            restart_at: None,
            started_at: None,
            routed: false,
            probe: None,
        }
    }

    /// Where the proxy reaches it, if it is a web process.
    fn backend(&self) -> Option<SocketAddr> {
        self.port.map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
    }

    /// A restarted web process, running but not routed to until it is
    /// healthy.
    fn coming_back(&self) -> bool {
        !self.routed && self.port.is_some() && self.process.is_some()
    }

    /// Whether its web process answers its health check (`health`, see
    /// [`healthy`]), as far as is known now: a check is started on a
    /// thread if none is under way for its port, and waited for at most
    /// [`PROBE_WAIT`]; one still under way answers no, for now. A process
    /// slow to answer (or one that accepts and never answers) holds up
    /// the runner's loop that long, not the check's whole timeout.
    fn answers_health(&mut self, health: Option<&str>) -> bool {
        let Some(port) = self.port else { return false };
        if self.probe.as_ref().is_some_and(|probe| probe.port != port) {
            // Restarted on another port since: that answer is of no use.
            self.probe = None;
        }
        let probe = self.probe.get_or_insert_with(|| Probe::start(port, health.map(str::to_owned)));
        let answer = probe.answer(PROBE_WAIT);
        if answer.is_some() {
            self.probe = None;
        }
        answer == Some(true)
    }
}

/// How long the runner's loop waits for a health check's answer before it
/// goes on and asks again on its next turn: a healthy process on loopback
/// answers within a few milliseconds.
const PROBE_WAIT: Duration = Duration::from_millis(20);

/// One health check of a web process, made on a thread of its own.
#[derive(Debug)]
struct Probe {
    port: u16,
    answer: std::sync::mpsc::Receiver<bool>,
}

impl Probe {
    /// Checks the web process on `port` (see [`healthy`]).
    fn start(port: u16, health: Option<String>) -> Self {
        let (tell, answer) = std::sync::mpsc::sync_channel(1);
        std::thread::spawn(move || {
            let _ = tell.send(healthy(port, health.as_deref()));
        });
        Self { port, answer }
    }

    /// Its answer, waited for at most `wait`: `None` while it is under way.
    /// A check whose thread could not report (it panicked) answers no.
    fn answer(&self, wait: Duration) -> Option<bool> {
        match self.answer.recv_timeout(wait) {
            Ok(answer) => Some(answer),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Some(false),
        }
    }
}

/// The backends of `slots` the proxy sends requests to.
fn routed_backends(slots: &[Slot]) -> Vec<SocketAddr> {
    slots.iter().filter(|slot| slot.routed).filter_map(Slot::backend).collect()
}

/// Processes being stopped in the background, and their process groups.
struct Retiring {
    pgids: Vec<i32>,
    handle: std::thread::JoinHandle<()>,
}

/// Stops `slots`: a web process once its requests through `proxy` have
/// drained (or `timeout` passed), each on a thread of its own; the others
/// at once, all together (see [`super::process::stop_all`]).
fn stop_slots(proxy: Option<&Proxy>, slots: Vec<Slot>, timeout: Duration) {
    let (web, others): (Vec<Slot>, Vec<Slot>) = slots.into_iter().partition(|slot| slot.port.is_some());
    std::thread::scope(|scope| {
        for slot in web {
            let backend = slot.backend();
            let Some(process) = slot.process else { continue };
            scope.spawn(move || {
                if let (Some(proxy), Some(backend)) = (proxy, backend) {
                    proxy.wait_drained(backend, timeout);
                }
                let _ = process.stop(timeout);
            });
        }
        super::process::stop_all(others.into_iter().filter_map(|slot| slot.process).collect(), timeout);
    });
}

/// The file listing the process groups the runner of `app` started.
pub fn groups_file(home: &Home, app: &str, env: &str) -> PathBuf {
    home.run_dir(app, env).join("groups.json")
}

/// The lock that makes a runner the only one for its app, environment and
/// home. Held while this lives; the kernel drops it when the process dies,
/// however it dies.
pub struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    /// Takes the lock, or names the runner that holds it.
    pub fn acquire(home: &Home, app: &str, env: &str) -> Result<Self, RunError> {
        let dir = home.run_dir(app, env);
        let path = dir.join("runner.lock");
        let io_error = |action| {
            let path = path.clone();
            move |source| RunError::Io { action, path, source }
        };
        crate::fs_tree::create_private_dir_all(&dir).map_err(io_error("create"))?;
        crate::fs_tree::tighten(&dir, crate::fs_tree::PRIVATE_DIR).map_err(io_error("make private"))?;
        let mut file = crate::fs_tree::private_file()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error("open"))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                file.set_len(0).map_err(io_error("write"))?;
                write!(file, "{}", std::process::id()).map_err(io_error("write"))?;
                Ok(Self { _file: file })
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                Err(RunError::AlreadyRunning { pid: pid.trim().to_owned(), lock: path })
            }
            Err(e) => Err(io_error("lock")(e.into())),
        }
    }
}

fn stop_timeout(run: &RunSettings) -> Duration {
    run.stop_timeout.map_or(DEFAULT_STOP_TIMEOUT, Duration::from_secs)
}

/// A port nothing listens on now, for a web process.
fn free_port() -> Option<u16> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()).ok().map(|a| a.port())
}

/// Whether another process listens on `port` (std binds with
/// `SO_REUSEADDR`, so connections closed on it do not count).
fn taken(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_err_and(|error| error.kind() == std::io::ErrorKind::AddrInUse)
}

/// Whether a web process on `port` is ready: it accepts a connection, and,
/// with a health path, answers it with a 2xx status.
fn healthy(port: u16, health: Option<&str>) -> bool {
    match health {
        None => TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), Duration::from_millis(500))
            .is_ok(),
        Some(path) => {
            http_get(port, path, Duration::from_secs(2)).is_some_and(|(status, _)| (200..300).contains(&status))
        }
    }
}

/// `GET path` over HTTP/1.0 on 127.0.0.1:`port`: the status and the body of
/// the answer (at most 64 KiB of it), or `None` if there is no answer.
pub fn http_get(port: u16, path: &str, timeout: Duration) -> Option<(u16, String)> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: graven\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    // Read the whole (small) answer: closing with unread data resets the
    // connection, and the app would log the reset as an error.
    let mut response = Vec::new();
    let _ = (&mut stream).take(64 * 1024).read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n")?;
    // "HTTP/1.x 200 OK"
    let status = head.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()?;
    Some((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web_slot(port: u16) -> Slot {
        let planned = super::super::plan::PlannedProcess {
            name: "web.1".into(),
            kind: "web".into(),
            command: String::new(),
            env: std::collections::BTreeMap::new(),
        };
        Slot { port: Some(port), ..Slot::new(planned) }
    }

    #[test]
    fn a_health_check_not_yet_answered_is_no_for_now_and_made_once_until_its_answer_comes() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let mut slot = web_slot(listener.local_addr().unwrap().port());
        assert!(!slot.answers_health(Some("/up")), "no answer yet");
        // Accepted, its request read, and not answered: the check waits.
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = [0u8; 1024];
        let read = conn.read(&mut request).unwrap();
        assert!(String::from_utf8_lossy(&request[..read]).starts_with("GET /up HTTP/1.0"));
        assert!(!slot.answers_health(Some("/up")), "still no answer");
        listener.set_nonblocking(true).unwrap();
        assert!(listener.accept().is_err(), "asked again, the check under way was not made twice");
        conn.write_all(b"HTTP/1.0 200 OK\r\n\r\nup\n").unwrap();
        drop(conn);
        let answered = slot.probe.as_ref().unwrap().answer(Duration::from_secs(30));
        assert_eq!(answered, Some(true));
    }

    #[test]
    fn a_check_of_a_port_the_process_left_is_dropped_for_one_of_its_new_port() {
        let old = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let new = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let mut slot = web_slot(old.local_addr().unwrap().port());
        assert!(!slot.answers_health(Some("/up")));
        let (_held, _) = old.accept().unwrap();
        slot.port = Some(new.local_addr().unwrap().port());
        assert!(!slot.answers_health(Some("/up")));
        assert_eq!(slot.probe.as_ref().map(|probe| probe.port), slot.port);
        let (mut conn, _) = new.accept().unwrap();
        let mut request = [0u8; 1024];
        let _ = conn.read(&mut request).unwrap();
        conn.write_all(b"HTTP/1.0 503 Service Unavailable\r\n\r\n").unwrap();
        drop(conn);
        assert_eq!(slot.probe.as_ref().unwrap().answer(Duration::from_secs(30)), Some(false), "a 503 is not healthy");
    }
}
