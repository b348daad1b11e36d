//! The runner: makes the running processes match the environment's current
//! release, and keeps them running.
//!
//! A rollout lays out the new release's tree, runs its release phase, starts
//! its processes, waits until every new `web` process is healthy, switches
//! the proxy to them in one step and only then stops the old processes
//! (after their open connections drain). If anything before the switch
//! fails, the new processes are stopped, the failure is recorded, and the
//! old release keeps serving, untouched. A release that failed is not tried
//! again; the next release is.

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
use super::{RunError, artifact_of, materialise, process_environment};
use crate::Digest;
use crate::app::RunSettings;
use crate::home::Home;
use crate::ledger::Ledger;
use crate::model::{Artifact, Formation};
use crate::model::{ConfigVersion, Release};
use crate::model::{Failure, ProcessState, ProcessStatus, RunState, RunnerState, RunningRelease};
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
/// How many release trees stay on disk after a switch (the running one
/// among them), so that a rollback to a recent release costs no I/O.
pub const KEEP_TREES: usize = 5;
/// The longest the runner waits for its watch between two turns of its
/// loop (supervising, reporting).
const POLL: Duration = Duration::from_millis(200);

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
    if let Some(bytes) = run.max_header_bytes {
        limits.max_header_bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
    }
    if let Some(seconds) = run.timeout {
        limits.response_timeout = Duration::from_secs(seconds);
    }
    (run.proxy.unwrap_or_default(), limits)
}

/// One process slot of a deployment: restarted in place when it exits.
struct Slot {
    name: String,
    kind: String,
    command: String,
    port: Option<u16>,
    process: Option<Process>,
    backoff: Backoff,
    restart_at: Option<Instant>,
    started_at: Option<String>,
}

/// A release with its processes.
struct Deployment {
    release: Release,
    config: ConfigVersion,
    tree: PathBuf,
    run: RunSettings,
    /// Whom its processes run as: `--user`, else its `[run] user`.
    user: Option<crate::user::RunAs>,
    /// The formation its slots were made for.
    formation: Formation,
    slots: Vec<Slot>,
    since: String,
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
    failure: Option<Failure>,
    failed: Option<Digest>,
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
            failure: None,
            failed: None,
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
        // The ledger wakes the loop when it changes; a slow poll stays as
        // a fallback, and a failed read is tried again at every turn.
        let ledger = self.ledger;
        let mut watch = ledger.watch(&self.options.app, &self.options.env)?;
        let mut read_at: Option<Instant> = None;
        let mut changed = true;
        while !stop.load(Ordering::Relaxed) {
            if changed || read_at.is_none_or(|at| at.elapsed() >= SLOW_POLL) {
                let desired = ledger.current_release(&self.options.app, &self.options.env).and_then(|release| {
                    let formation = ledger.formation(&self.options.app, &self.options.env)?;
                    Ok((release, formation.map(|record| record.formation).unwrap_or_default()))
                });
                match desired {
                    Ok((desired, formation)) => {
                        read_at = Some(Instant::now());
                        self.ledger_trouble(None);
                        let formation = formation.overridden_by(&self.options.formation);
                        if formation != self.formation {
                            self.say(&format!("formation: {formation}"));
                            self.formation = formation;
                            // Scaling again is a new chance for a release that failed.
                            self.failed = None;
                        }
                        if let Some(desired) = desired {
                            let running = self.current.as_ref().map(|d| (d.release.id, &d.formation));
                            let wanted = (desired.id, &self.formation);
                            if running != Some(wanted) && self.failed != Some(desired.id) {
                                self.rollout(&desired, stop);
                            }
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
            self.keep_up();
            changed = watch.wait(POLL).unwrap_or_else(|_| {
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

    /// Switches to `release`, or records why it could not.
    fn rollout(&mut self, release: &Release, stop: &AtomicBool) {
        if self.current.as_ref().is_some_and(|current| current.release.id == release.id) {
            self.say(&format!("scaling {} to {}", release.version(), self.formation));
        } else {
            self.say(&format!("rolling out {}: {} ({})", release.version(), release.description, release.kind));
        }
        match self.prepare(release, stop) {
            Ok(deployment) => self.switch(deployment),
            Err(reason) => {
                self.say(&format!("rollout of {} failed: {reason}", release.version()));
                match &self.current {
                    Some(current) => self.say(&format!("{} keeps serving", current.release.version())),
                    None => self.say("nothing is serving"),
                }
                self.failure = Some(Failure { number: release.number, reason, at: time::now_rfc3339() });
                self.failed = Some(release.id);
                self.report(RunnerState::Running);
            }
        }
    }

    /// Everything before the switch: tree, release phase, new processes,
    /// health. On failure, whatever was started is stopped again.
    fn prepare(&mut self, release: &Release, stop: &AtomicBool) -> Result<Deployment, String> {
        let artifact = artifact_of(self.store, release).map_err(|e| crate::error_chain(&e))?;
        let tree = materialise(self.store, self.home, release, &artifact).map_err(|e| crate::error_chain(&e))?;
        let config = self
            .ledger
            .config_version(&release.config)
            .map_err(|e| crate::error_chain(&e))?
            .ok_or_else(|| format!("config version {} is missing from the ledger", release.config.short()))?;
        let user = crate::user::RunAs::of_release(self.options.user.as_ref(), artifact.run.user.as_deref())
            .map_err(|e| format!("[run] user: {e}"))?;
        if user.as_ref().is_some_and(|user| !user.is_self()) && self.options.mount.is_none() {
            return Err(
                "a user to run as needs the sandbox, which gives it a HOME of its own: run without --no-sandbox"
                    .to_owned(),
            );
        }
        let mut deployment = Deployment {
            release: release.clone(),
            config,
            tree: tree.path,
            run: artifact.run.clone(),
            user,
            formation: self.formation.clone(),
            slots: Vec::new(),
            since: time::now_rfc3339(),
        };
        // The release phase runs once per release: not again when the
        // running release is only scaled.
        let scaling = self.current.as_ref().is_some_and(|current| current.release.id == release.id);
        if let Some(command) = artifact.process_types.get(crate::app::RELEASE_PHASE)
            && !scaling
        {
            self.release_phase(&deployment, command, stop)?;
        }
        deployment.slots = self.slots(&artifact);
        let started = self.start_all(&mut deployment);
        if let Err(reason) = started.and_then(|()| self.wait_healthy(&mut deployment, stop)) {
            self.stop_all(std::mem::take(&mut deployment.slots), &deployment.run);
            crate::fs_tree::remove_tree(&self.tmp_dir(&deployment.release));
            return Err(reason);
        }
        Ok(deployment)
    }

    /// Starts every slot of `deployment`, stopping at the first that fails.
    fn start_all(&self, deployment: &mut Deployment) -> Result<(), String> {
        for slot in &mut deployment.slots {
            self.start(&deployment.release, &deployment.config, &deployment.tree, deployment.user.as_ref(), slot)?;
        }
        Ok(())
    }

    fn release_phase(&mut self, deployment: &Deployment, command: &str, stop: &AtomicBool) -> Result<(), String> {
        let mut slot = Slot::new("release.1", crate::app::RELEASE_PHASE, command, None);
        self.start(&deployment.release, &deployment.config, &deployment.tree, deployment.user.as_ref(), &mut slot)?;
        let mut process = slot.process.take().expect("a started slot has a process");
        loop {
            match process.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("the release phase `{command}` failed ({status})")),
                Ok(None) if stop.load(Ordering::Relaxed) => {
                    let _ = process.stop(stop_timeout(&deployment.run));
                    return Err("the runner was stopped during the release phase".to_owned());
                }
                Ok(None) => {
                    self.keep_up();
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// The slots of the formation, web first.
    fn slots(&self, artifact: &Artifact) -> Vec<Slot> {
        let mut slots = Vec::new();
        let mut types: Vec<(&String, &String)> =
            artifact.process_types.iter().filter(|(name, _)| name.as_str() != crate::app::RELEASE_PHASE).collect();
        types.sort_by_key(|(name, _)| (name.as_str() != "web", (*name).clone()));
        for (kind, command) in types {
            let count = self.formation.count(kind);
            for n in 1..=count {
                let port = (kind == "web").then(free_port);
                slots.push(Slot::new(&format!("{kind}.{n}"), kind, command, port.flatten()));
            }
        }
        slots
    }

    /// Starts `slot`'s process, with a fresh private TMPDIR.
    fn start(
        &self,
        release: &Release,
        config: &ConfigVersion,
        tree: &Path,
        user: Option<&crate::user::RunAs>,
        slot: &mut Slot,
    ) -> Result<(), String> {
        let mut env = process_environment(release, config, &slot.name);
        if let Some(port) = slot.port {
            env.insert("PORT".to_owned(), OsString::from(port.to_string()));
        }
        // Per release: while a switch drains, v1's web.1 and v2's web.1 both
        // run, and neither may lose its files to the other's start.
        let tmp = self.tmp_dir(release).join(&slot.name);
        crate::fs_tree::remove_tree(&tmp);
        crate::fs_tree::create_private_dir_all(&tmp).map_err(|e| format!("could not create {}: {e}", tmp.display()))?;
        let home = super::process_home(self.home, &self.options.app, &self.options.env)
            .map_err(|e| format!("could not create the processes' HOME: {e}"))?;
        let mount = match (self.options.mount.as_ref(), user) {
            (Some(mount), Some(user)) => Some(
                mount
                    .as_user(user, &[&home, &tmp])
                    .map_err(|e| format!("could not give {} its HOME and TMPDIR: {e}", user.name))?,
            ),
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
            .map_err(|e| crate::error_chain(&e))?;
        slot.process = Some(process);
        slot.started_at = Some(time::now_rfc3339());
        Ok(())
    }

    /// Where `release`'s processes get their TMPDIRs (one each, by name).
    fn tmp_dir(&self, release: &Release) -> PathBuf {
        self.home.run_dir(&self.options.app, &self.options.env).join("tmp").join(release.version())
    }

    /// Waits until every web process accepts connections (or answers 2xx on
    /// `[run] health`), failing if one exits or the time runs out.
    fn wait_healthy(&mut self, deployment: &mut Deployment, stop: &AtomicBool) -> Result<(), String> {
        let timeout = deployment.run.health_timeout.map_or(DEFAULT_HEALTH_TIMEOUT, Duration::from_secs);
        let deadline = Instant::now() + timeout;
        let health = deployment.run.health.clone();
        for slot in deployment.slots.iter_mut().filter(|slot| slot.port.is_some()) {
            let port = slot.port.expect("web slots have ports");
            loop {
                let process = slot.process.as_mut().expect("started");
                if let Ok(Some(status)) = process.try_wait() {
                    return Err(format!("{} exited before it was healthy ({status})", slot.name));
                }
                if healthy(port, health.as_deref()) {
                    break;
                }
                if stop.load(Ordering::Relaxed) {
                    return Err("the runner was stopped while the new processes started".to_owned());
                }
                if Instant::now() >= deadline {
                    let check = health.as_deref().map_or_else(
                        || format!("accept connections on port {port}"),
                        |path| format!("answer 2xx on {path}"),
                    );
                    return Err(format!("{} did not {check} within {} s", slot.name, timeout.as_secs()));
                }
                self.keep_up();
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// Points the proxy at the new web processes, then stops the old ones
    /// once their connections have drained.
    fn switch(&mut self, deployment: Deployment) {
        let backends: Vec<SocketAddr> = deployment
            .slots
            .iter()
            .filter_map(|s| s.port)
            .map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p)))
            .collect();
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
        self.record_groups();
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

    /// Restarts processes that exited, with backoff.
    fn supervise(&mut self) {
        let Some(mut deployment) = self.current.take() else { return };
        for slot in &mut deployment.slots {
            if let Some(process) = slot.process.as_mut()
                && let Ok(Some(status)) = process.try_wait()
            {
                let uptime = process.uptime();
                let delay = slot.backoff.next_delay(uptime);
                slot.process = None;
                slot.restart_at = Some(Instant::now() + delay);
                self.say(&format!("{} exited ({status}); restarting in {} s", slot.name, delay.as_secs()));
            }
            if slot.process.is_none() && slot.restart_at.is_some_and(|at| Instant::now() >= at) {
                slot.restart_at = None;
                if let Err(e) = self.start(
                    &deployment.release,
                    &deployment.config,
                    &deployment.tree,
                    deployment.user.as_ref(),
                    slot,
                ) {
                    let delay = slot.backoff.next_delay(Duration::ZERO);
                    slot.restart_at = Some(Instant::now() + delay);
                    self.say(&format!("{} could not be restarted: {e}", slot.name));
                }
            }
        }
        self.current = Some(deployment);
        self.record_groups();
    }

    /// Writes the groups file when the set of process groups changed.
    fn record_groups(&mut self) {
        self.retiring.retain(|retiring| !retiring.handle.is_finished());
        let pgids: Vec<i32> = self
            .current
            .iter()
            .flat_map(|d| d.slots.iter())
            .filter_map(|slot| slot.process.as_ref().map(Process::pgid))
            .chain(self.retiring.iter().flat_map(|retiring| retiring.pgids.iter().copied()))
            .collect();
        if pgids != self.recorded
            && record_groups(&groups_file(self.home, &self.options.app, &self.options.env), &pgids).is_ok()
        {
            self.recorded = pgids;
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
            }),
            processes,
            last_failure: self.failure.clone(),
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

impl Slot {
    fn new(name: &str, kind: &str, command: &str, port: Option<u16>) -> Self {
        Self {
            name: name.to_owned(),
            kind: kind.to_owned(),
            command: command.to_owned(),
            port,
            process: None,
            backoff: Backoff::new(),
            restart_at: None,
            started_at: None,
        }
    }
}

/// Processes being stopped in the background, and their process groups.
struct Retiring {
    pgids: Vec<i32>,
    handle: std::thread::JoinHandle<()>,
}

/// Stops `slots` in parallel: a web process once its connections through
/// `proxy` have drained (or `timeout` passed), the others at once.
fn stop_slots(proxy: Option<&Proxy>, slots: Vec<Slot>, timeout: Duration) {
    std::thread::scope(|scope| {
        for slot in slots {
            let Some(process) = slot.process else { continue };
            scope.spawn(move || {
                if let (Some(proxy), Some(port)) = (proxy, slot.port) {
                    proxy.wait_drained(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), timeout);
                }
                let _ = process.stop(timeout);
            });
        }
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
