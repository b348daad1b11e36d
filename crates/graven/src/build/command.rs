//! Runs the build command: `sh -c` in the clean checkout, with a scrubbed
//! environment, its output streamed live and kept for the build's log.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use super::{BuildError, BuildEvent, BuildObserver};

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

/// Runs `command` in `dir` with exactly `env`; returns its log.
pub(crate) fn run(
    command: &str,
    dir: &Path,
    env: &BTreeMap<String, OsString>,
    observer: &dyn BuildObserver,
) -> Result<String, BuildError> {
    observer.on_event(&BuildEvent::CommandStarted { command });
    // One pipe for stdout and stderr, as a terminal shows them: with two,
    // lines are logged in whatever order two readers get to them, and an
    // error printed last on stderr can be missing from a failure's tail.
    let (reader, writer) = std::io::pipe().map_err(BuildError::CommandSpawn)?;
    let mut child = {
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(command)
            .current_dir(dir)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(writer.try_clone().map_err(BuildError::CommandSpawn)?)
            .stderr(writer);
        sh.spawn().map_err(BuildError::CommandSpawn)?
        // `sh` drops our copies of the write end here, so that reading ends
        // when the command (and whatever it started) closes its copies.
    };
    let log = Mutex::new(Log::default());
    stream(reader, &log, observer);
    let status = child.wait().map_err(BuildError::CommandSpawn)?;
    let log = log.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    if status.success() {
        return Ok(log.text());
    }
    let skip = log.lines.len().saturating_sub(FAILURE_TAIL);
    Err(BuildError::CommandFailed {
        command: command.to_owned(),
        status,
        tail: log.lines.into_iter().skip(skip).collect(),
    })
}

fn stream(pipe: impl Read, log: &Mutex<Log>, observer: &dyn BuildObserver) {
    let mut reader = BufReader::new(pipe);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        match reader.read_until(b'\n', &mut raw) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end_matches(['\n', '\r']);
        observer.on_event(&BuildEvent::Output { line });
        log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(line.to_owned());
    }
}
