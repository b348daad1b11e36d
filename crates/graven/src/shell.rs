//! Commands given as text and run by `/bin/sh -c`: the build command and a
//! release's processes. Both run with exactly the environment given, stdin
//! `/dev/null`, and stdout and stderr on one pipe, so that lines keep the
//! order a terminal would show them in.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, BufRead as _, BufReader, PipeReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};

/// Lines longer than this are passed on in pieces, so that a command
/// writing without newlines cannot grow graven's memory without bound.
const MAX_LINE_BYTES: u64 = 64 * 1024;

/// `/bin/sh -c script` in `dir` with exactly `env`, ready to spawn, and the
/// reading end of its output. The command holds the pipe's writing end:
/// drop it once spawned, or reading never ends.
pub(crate) fn command(script: &str, dir: &Path, env: &BTreeMap<String, OsString>) -> io::Result<(Command, PipeReader)> {
    piped(sh(script, dir), env)
}

/// `/bin/sh -c script` in `dir`, nothing else set.
pub(crate) fn sh(script: &str, dir: &Path) -> Command {
    // An absolute path: with the environment cleared, a lookup of `sh`
    // would depend on the PATH given.
    let mut sh = Command::new("/bin/sh");
    sh.arg("-c").arg(script).current_dir(dir);
    sh
}

/// `program` with exactly `env`, stdin `/dev/null`, and stdout and stderr
/// on one pipe, whose reading end comes with it (as for [`command`]).
pub(crate) fn piped(mut program: Command, env: &BTreeMap<String, OsString>) -> io::Result<(Command, PipeReader)> {
    let (reader, writer) = io::pipe()?;
    program.env_clear().envs(env).stdin(Stdio::null()).stdout(writer.try_clone()?).stderr(writer);
    Ok((program, reader))
}

/// Calls `on_line` with each line of `output` until it ends: lossy UTF-8,
/// without its line ending, long lines in pieces of [`MAX_LINE_BYTES`].
pub(crate) fn for_each_line(output: impl Read, mut on_line: impl FnMut(&str)) {
    let mut reader = BufReader::new(output);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader).take(MAX_LINE_BYTES).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if line.last() == Some(&b'\n') {
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                }
                on_line(&String::from_utf8_lossy(&line));
            }
        }
    }
}

/// `error`, from starting a process, with what its errno means there: the
/// kernel's own words ("Argument list too long") blame the arguments for
/// what is usually the environment.
pub fn explain_spawn_error(error: std::io::Error) -> std::io::Error {
    let why = match error.raw_os_error().map(rustix::io::Errno::from_raw_os_error) {
        Some(rustix::io::Errno::TOOBIG) => {
            "its environment and command line together are larger than the kernel allows (E2BIG): the config is too large"
        }
        Some(rustix::io::Errno::NOMEM) => "the machine has no memory left to start it (ENOMEM)",
        Some(rustix::io::Errno::AGAIN) => "the user may start no more processes (EAGAIN: RLIMIT_NPROC or pids.max)",
        Some(rustix::io::Errno::MFILE | rustix::io::Errno::NFILE) => {
            "no file descriptor was left to start it with (EMFILE/ENFILE): too many open files"
        }
        _ => return error,
    };
    std::io::Error::new(error.kind(), Explained { why, errno: error })
}

/// What an errno means where a process is started, with the errno kept as
/// the cause, so that a caller can still tell a passing shortage from the
/// rest (see the rollout's failure causes).
#[derive(Debug)]
struct Explained {
    why: &'static str,
    errno: std::io::Error,
}

impl std::fmt::Display for Explained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.why)
    }
}

impl std::error::Error for Explained {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.errno)
    }
}
