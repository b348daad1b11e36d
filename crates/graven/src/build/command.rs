//! Runs the build command: `sh -c` in the clean checkout, with a scrubbed
//! environment, its output streamed live and kept for the build's log.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::PipeReader;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Child;

use super::{BuildError, BuildEvent, BuildObserver};
use crate::sandbox::{SETUP_PAUSE, SETUP_TRIES, Sandbox, SandboxError, SetupReport};

/// The most of a build's output kept in its log; beyond it, the oldest lines
/// are dropped.
const LOG_LIMIT: usize = 1 << 20;

/// How many of the last lines a failed build shows.
pub(crate) const FAILURE_TAIL: usize = 20;

#[derive(Default)]
struct Log {
    lines: VecDeque<String>,
    bytes: usize,
    dropped: usize,
}

impl Log {
    fn push(&mut self, line: String) {
        self.bytes += line.len() + 1;
        self.lines.push_back(line);
        while self.bytes > LOG_LIMIT {
            let Some(old) = self.lines.pop_front() else { break };
            self.bytes -= old.len() + 1;
            self.dropped += 1;
        }
    }

    fn text(&self) -> String {
        let mut text = String::with_capacity(self.bytes + 64);
        if self.dropped > 0 {
            let _ = writeln!(text, "[{} earlier lines dropped]", self.dropped);
        }
        for line in &self.lines {
            text.push_str(line);
            text.push('\n');
        }
        text
    }
}

/// How a sandboxed build command is isolated.
#[derive(Clone, Copy)]
pub(crate) struct Isolation<'a> {
    pub(crate) sandbox: &'a Sandbox,
    /// Whether it has the network.
    pub(crate) network: bool,
    /// Build caches: `(kept at, path in the sandbox)`; kept nowhere is an
    /// empty directory (`--no-cache`).
    pub(crate) caches: &'a [(Option<std::path::PathBuf>, String)],
}

/// Runs `command` in the checkout `dir` with exactly `env`, isolated (at
/// `/app`, with the network or without, its caches mounted) if `sandbox`
/// says so; returns its log. A sandbox that could not be made is made
/// again (see [`SETUP_TRIES`]): its command never ran, so the checkout is
/// as it was.
pub(crate) fn run(
    command: &str,
    dir: &Path,
    sandbox: Option<Isolation<'_>>,
    env: &BTreeMap<String, OsString>,
    observer: &dyn BuildObserver,
) -> Result<String, BuildError> {
    observer.on_event(&BuildEvent::CommandStarted { command });
    let mut tries = 1;
    loop {
        let (mut child, output, report) = spawn(command, dir, sandbox, env)?;
        let mut log = Log::default();
        crate::shell::for_each_line(output, |line| {
            observer.on_event(&BuildEvent::Output { line });
            log.push(line.to_owned());
        });
        let status = child.wait().map_err(BuildError::CommandSpawn)?;
        if status.success() {
            return Ok(log.text());
        }
        if let Some(mut report) = report
            && report.sandbox_failed(status)
        {
            let why = crate::sandbox::bwrap_says(log.text().as_bytes());
            if tries == SETUP_TRIES {
                return Err(SandboxError::Setup { tries, why }.into());
            }
            observer.on_event(&BuildEvent::SandboxRetry { why: &why });
            std::thread::sleep(SETUP_PAUSE * tries);
            tries += 1;
            continue;
        }
        let skip = log.lines.len().saturating_sub(FAILURE_TAIL);
        return Err(BuildError::CommandFailed {
            command: command.to_owned(),
            status,
            tail: log.lines.into_iter().skip(skip).collect(),
        });
    }
}

/// The build command started, the reading end of its output, and, in the
/// sandbox, bwrap's report of whether the command itself started.
fn spawn(
    command: &str,
    dir: &Path,
    sandbox: Option<Isolation<'_>>,
    env: &BTreeMap<String, OsString>,
) -> Result<(Child, PipeReader, Option<SetupReport>), BuildError> {
    // One pipe for stdout and stderr, as a terminal shows them: with two,
    // lines are logged in whatever order two readers get to them, and an
    // error printed last on stderr can be missing from a failure's tail.
    let (mut program, output, report) = match sandbox {
        Some(Isolation { sandbox, network, caches }) => sandbox
            .reporting(&sandbox.build_command(command, dir, network, caches), env)
            .map(|(program, output, report)| (program, output, Some(report))),
        None => crate::shell::command(command, dir, env).map(|(mut sh, output)| {
            // Named `sh` in its own messages (`sh: 1: make: not
            // found`), as build logs always have been.
            sh.arg0("sh");
            (sh, output, None)
        }),
    }
    .map_err(BuildError::CommandSpawn)?;
    let child = program.spawn().map_err(BuildError::CommandSpawn)?;
    // `program` drops our copies of the write ends here, so that reading
    // ends when the command (and whatever it started) closes its copies.
    Ok((child, output, report))
}
