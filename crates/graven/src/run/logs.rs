//! Logs: every line a process prints, prefixed with the time and the process
//! (`12:03:04 web.1 | listening on 5000`, foreman style), appended to
//! `graven.log` in the environment's run directory
//! ([`Home::run_dir`](crate::home::Home::run_dir)) and rotated by size; and
//! reading them back, the last lines ([`tail`]) or lines as they come
//! ([`Follower`], [`follow`]).
//!
//! Times are UTC: the local time zone needs the tz database, which would be
//! a new dependency, and UTC reads the same on every machine of a team.
//!
//! One [`LogSink`] writes a directory; any number of readers may read it at
//! the same time. A line is written whole, with one `write`, and rotation
//! happens between lines, so a line is never split across files. This module
//! never prints: the runner prints what [`LogSink::line`] returns.

use std::fs::{self, File, Metadata};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// The name of the log file in a run directory; rotated files add `.1` (the
/// newest) to `.5` (the oldest).
pub const LOG_FILE: &str = "graven.log";

/// Size past which the log file is rotated: 10 MB.
pub const MAX_BYTES: u64 = 10_000_000;

/// How many rotated files are kept, besides the current one.
pub const KEEP: usize = 5;

/// How often [`follow`] looks for new lines.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(100);

/// How much [`tail`] reads at a time, backwards from the end of a file.
const CHUNK: u64 = 64 * 1024;

/// A log file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The filesystem failed.
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
}

/// The current log file of run directory `dir`.
pub fn log_path(dir: &Path) -> PathBuf {
    dir.join(LOG_FILE)
}

/// The `n`th rotated log file of `dir` (1 is the newest).
pub fn rotated_path(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("{LOG_FILE}.{n}"))
}

/// Whether a runner has written logs in `dir`.
pub fn has_logs(dir: &Path) -> bool {
    log_path(dir).exists() || rotated_path(dir, 1).exists()
}

/// The writing end of a run directory's log: formats, appends and rotates.
///
/// Its methods take `&self`, so that the threads reading each process's
/// output can share one sink. A failure to write never panics and never
/// stops the runner: [`LogSink::line`] still returns the line (it matters
/// more on the runner's stdout than in a file), and the failure is counted
/// ([`LogSink::failures`]) and kept for the runner to report
/// ([`LogSink::take_failure`]).
#[derive(Debug)]
pub struct LogSink {
    dir: PathBuf,
    max_bytes: u64,
    keep: usize,
    state: Mutex<SinkState>,
}

#[derive(Debug)]
struct SinkState {
    file: File,
    /// The file's size as far as this sink wrote it.
    size: u64,
    /// The size past which the file is rotated: the limit, or more after a
    /// failed rotation, so that a failing one is retried once per limit's
    /// worth of lines rather than shifting the rotated files at every line.
    rotate_at: u64,
    /// Whether a failed write may have left part of a line at the end of the
    /// file, to be ended before the next line.
    unfinished: bool,
    failures: u64,
    last_failure: Option<LogError>,
}

impl LogSink {
    /// Opens `dir/graven.log` for appending, creating `dir` if needed, with
    /// the default limits ([`MAX_BYTES`], [`KEEP`]).
    pub fn open(dir: &Path) -> Result<Self, LogError> {
        crate::fs_tree::create_private_dir_all(dir).map_err(io_error("create", dir))?;
        let path = log_path(dir);
        let file = open_append(&path)?;
        let size = file.metadata().map_err(io_error("read the size of", &path))?.len();
        let state = SinkState { file, size, rotate_at: MAX_BYTES, unfinished: false, failures: 0, last_failure: None };
        Ok(Self { dir: dir.to_owned(), max_bytes: MAX_BYTES, keep: KEEP, state: Mutex::new(state) })
    }

    /// The same sink, rotating when the file would grow past `max_bytes` and
    /// keeping `keep` rotated files (0: the full file is simply removed).
    #[must_use]
    pub fn with_limits(mut self, max_bytes: u64, keep: usize) -> Self {
        self.max_bytes = max_bytes;
        self.keep = keep;
        self.state.get_mut().unwrap_or_else(PoisonError::into_inner).rotate_at = max_bytes;
        self
    }

    /// Appends `text`, a line that process `process` (`web.1`: no spaces)
    /// printed, to the log as `HH:MM:SS web.1 | text` (UTC), and returns that
    /// line, without a line break, for the runner's stdout.
    ///
    /// A trailing line break in `text` is dropped and any other one is
    /// written as `\n` (or `\r`), so that one call is one line of the log.
    /// The line is returned even if it could not be written; see
    /// [`LogSink::failures`].
    pub fn line(&self, process: &str, text: &str) -> String {
        let line = format_line(SystemTime::now(), process, text);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(error) = self.append(&mut state, &line) {
            state.failures += 1;
            state.last_failure = Some(error);
        }
        line
    }

    /// How many writes or rotations have failed since the sink was opened. A
    /// failed write loses its line from the file; a failed rotation does not:
    /// the line goes to the current file, which grows past the limit, and
    /// rotation is tried again when it has grown by the limit once more.
    pub fn failures(&self) -> u64 {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).failures
    }

    /// The most recent failure not yet taken, if any.
    pub fn take_failure(&self) -> Option<LogError> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).last_failure.take()
    }

    fn append(&self, state: &mut SinkState, line: &str) -> Result<(), LogError> {
        // A line longer than the limit gets a file of its own rather than
        // being split.
        let mut rotated = Ok(());
        if state.size > 0 && state.size + line.len() as u64 + 1 > state.rotate_at {
            rotated = self.rotate(state);
            if rotated.is_err() {
                state.rotate_at = state.size.saturating_add(self.max_bytes);
            }
        }
        let mut record = Vec::with_capacity(line.len() + 2);
        if state.unfinished {
            record.push(b'\n');
        }
        record.extend_from_slice(line.as_bytes());
        record.push(b'\n');
        if let Err(source) = state.file.write_all(&record) {
            // Take back what was written of the line, so that the next one
            // starts on a line of its own; if that fails, end it first.
            let before = state.size;
            let _ = state.file.set_len(before);
            state.size = state.file.metadata().map_or(before, |m| m.len());
            state.unfinished = state.size != before;
            return Err(LogError::Io { action: "append to", path: log_path(&self.dir), source });
        }
        state.size += record.len() as u64;
        state.unfinished = false;
        rotated
    }

    /// `graven.log.4` → `.5` … `graven.log` → `.1`, then a new `graven.log`.
    fn rotate(&self, state: &mut SinkState) -> Result<(), LogError> {
        let current = log_path(&self.dir);
        if self.keep == 0 {
            ignore_missing(fs::remove_file(&current)).map_err(io_error("remove", &current))?;
        } else {
            // Renaming onto the oldest kept file drops it.
            for n in (1..self.keep).rev() {
                let from = rotated_path(&self.dir, n);
                ignore_missing(fs::rename(&from, rotated_path(&self.dir, n + 1))).map_err(io_error("rotate", &from))?;
            }
            ignore_missing(fs::rename(&current, rotated_path(&self.dir, 1))).map_err(io_error("rotate", &current))?;
        }
        state.file = open_append(&current)?;
        state.size = 0;
        state.rotate_at = self.max_bytes;
        state.unfinished = false;
        Ok(())
    }
}

/// `HH:MM:SS process | text`, in UTC.
pub(crate) fn format_line(at: SystemTime, process: &str, text: &str) -> String {
    let seconds = crate::time::unix_seconds(at) % 86_400;
    let text = text.strip_suffix('\n').map_or(text, |t| t.strip_suffix('\r').unwrap_or(t));
    let mut line = format!("{:02}:{:02}:{:02} {process} | ", seconds / 3600, seconds / 60 % 60, seconds % 60);
    line.reserve(text.len());
    for c in text.chars() {
        match c {
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            c => line.push(c),
        }
    }
    line
}

/// The process of a log line: `web.1` in `12:03:04 web.1 | hello`.
pub fn process_of(line: &str) -> Option<&str> {
    let (_time, rest) = line.split_once(' ')?;
    rest.split(' ').find(|field| !field.is_empty())
}

/// Whether `line` was printed by `process`: a process (`web.1`) exactly, or
/// any process of a type (`web` matches `web.1`, `web.2` …, not `webhook.1`).
pub fn is_of_process(line: &str, process: &str) -> bool {
    let Some(field) = process_of(line) else { return false };
    field == process
        || field
            .strip_prefix(process)
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The last `n` lines of the log in `dir`, oldest first, across the rotated
/// files; only `process`'s (see [`is_of_process`]) if given. An unfinished
/// last line (being written) is left out. No log at all is no lines.
pub fn tail(dir: &Path, n: usize, process: Option<&str>) -> Result<Vec<String>, LogError> {
    Ok(read_tail(dir, n, process)?.0)
}

/// Reads new lines of a log as they are appended, following it across
/// rotations (a new `graven.log`, told by its inode) and truncations (a
/// shrunk one).
///
/// Lines are missed only in two cases: the log rotates more than [`KEEP`]
/// times between two polls (the files dropped in between are not seen), or
/// a file truncated in place grows past what had been read before the next
/// poll (the truncation goes unnoticed).
#[derive(Debug)]
pub struct Follower {
    dir: PathBuf,
    process: Option<String>,
    /// The file being read, if there is one yet.
    reading: Option<Reading>,
}

#[derive(Debug)]
struct Reading {
    file: File,
    /// Device and inode: which file this is, whatever its name now.
    id: (u64, u64),
    /// The end of the last complete line read.
    offset: u64,
}

impl Follower {
    /// Starts following the log in `dir` (which need not exist yet); returns
    /// its last `n` lines, as [`tail`] does, and a follower that yields the
    /// lines appended after them, none missed and none repeated.
    pub fn start(dir: &Path, n: usize, process: Option<&str>) -> Result<(Vec<String>, Self), LogError> {
        let (lines, reading) = read_tail(dir, n, process)?;
        Ok((lines, Self { dir: dir.to_owned(), process: process.map(str::to_owned), reading }))
    }

    /// The complete lines appended since the last poll, oldest first; none
    /// if nothing was.
    pub fn poll(&mut self) -> Result<Vec<String>, LogError> {
        let mut lines = Vec::new();
        let process = self.process.as_deref();
        let path = log_path(&self.dir);
        let newest = open_existing(&path)?;
        if let (Some(reading), Some((_, meta))) = (&mut self.reading, &newest)
            && reading.id == file_id(meta)
        {
            if meta.len() < reading.offset {
                reading.offset = 0;
            }
            reading.offset +=
                read_lines(&mut reading.file, reading.offset, process, &mut lines).map_err(io_error("read", &path))?;
            return Ok(lines);
        }
        let Some((file, meta)) = newest else {
            // Between a rotation's rename and its new file, or no log yet:
            // the file being read may still have lines.
            if let Some(reading) = &mut self.reading {
                reading.offset += read_lines(&mut reading.file, reading.offset, process, &mut lines)
                    .map_err(io_error("read", &path))?;
            }
            return Ok(lines);
        };
        // A rotation, or the first file: finish the file being read, then the
        // files rotated after it, then the new one from its start.
        if let Some(mut reading) = self.reading.take() {
            read_lines(&mut reading.file, reading.offset, process, &mut lines).map_err(io_error("read", &path))?;
            let mut newer = Vec::new();
            for n in 1.. {
                let rotated = rotated_path(&self.dir, n);
                let Some(meta) = fs::metadata(&rotated).ok() else { break };
                if file_id(&meta) == reading.id {
                    break;
                }
                newer.push(rotated);
            }
            for rotated in newer.iter().rev() {
                if let Some((mut file, _)) = open_existing(rotated)? {
                    read_lines(&mut file, 0, process, &mut lines).map_err(io_error("read", rotated))?;
                }
            }
        }
        let mut reading = Reading { file, id: file_id(&meta), offset: 0 };
        reading.offset = read_lines(&mut reading.file, 0, process, &mut lines).map_err(io_error("read", &path))?;
        self.reading = Some(reading);
        Ok(lines)
    }
}

/// Calls `on_line` with the last `n` lines of the log in `dir` (only
/// `process`'s, if given), then with each line appended, every
/// [`FOLLOW_INTERVAL`], until `stop` is set (`on_line` may set it).
pub fn follow(
    dir: &Path,
    n: usize,
    process: Option<&str>,
    stop: &AtomicBool,
    mut on_line: impl FnMut(&str),
) -> Result<(), LogError> {
    let (mut lines, mut follower) = Follower::start(dir, n, process)?;
    loop {
        for line in &lines {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            on_line(line);
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        std::thread::sleep(FOLLOW_INTERVAL);
        lines = follower.poll()?;
    }
}

/// The last lines and where the current file's complete lines end.
fn read_tail(dir: &Path, n: usize, process: Option<&str>) -> Result<(Vec<String>, Option<Reading>), LogError> {
    let mut newest_first = Vec::new();
    let current = log_path(dir);
    let mut reading = None;
    if let Some((mut file, meta)) = open_existing(&current)? {
        let offset =
            last_lines(&mut file, meta.len(), n, process, &mut newest_first).map_err(io_error("read", &current))?;
        reading = Some(Reading { file, id: file_id(&meta), offset });
    }
    for k in 1.. {
        if newest_first.len() >= n {
            break;
        }
        let path = rotated_path(dir, k);
        let Some((mut file, meta)) = open_existing(&path)? else { break };
        // Rotated since it was opened above: already read.
        if reading.as_ref().is_some_and(|r| r.id == file_id(&meta)) {
            continue;
        }
        last_lines(&mut file, meta.len(), n, process, &mut newest_first).map_err(io_error("read", &path))?;
    }
    newest_first.reverse();
    Ok((newest_first, reading))
}

/// Pushes the last complete lines of the first `len` bytes of `file` onto
/// `out`, newest first, until it holds `n`; reads backwards, a chunk at a
/// time. Returns the end of the last complete line.
fn last_lines(file: &mut File, len: u64, n: usize, process: Option<&str>, out: &mut Vec<String>) -> io::Result<u64> {
    let keep = |bytes: &[u8], out: &mut Vec<String>| {
        let line = String::from_utf8_lossy(bytes);
        if process.is_none_or(|p| is_of_process(&line, p)) {
            out.push(line.into_owned());
        }
    };
    // `buf` holds the file from `start` on, up to a line break already seen.
    let mut start = len;
    let mut buf = Vec::new();
    let mut end = None;
    loop {
        while let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            let fragment = buf.split_off(i + 1);
            buf.truncate(i);
            if end.is_none() {
                // What follows the last line break is unfinished, or empty.
                end = Some(start + i as u64 + 1);
            } else {
                keep(&fragment, out);
            }
            if out.len() >= n {
                return Ok(end.unwrap_or(0));
            }
        }
        if start == 0 {
            break;
        }
        let size = CHUNK.min(start);
        start -= size;
        let mut chunk = vec![0; usize::try_from(size).expect("a chunk fits in memory")];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        chunk.append(&mut buf);
        buf = chunk;
    }
    let Some(end) = end else { return Ok(0) };
    // The file's first line.
    keep(&buf, out);
    Ok(end)
}

/// Pushes the complete lines of `file` from `offset` on onto `out`, oldest
/// first; returns how many bytes they took.
fn read_lines(file: &mut File, offset: u64, process: Option<&str>, out: &mut Vec<String>) -> io::Result<u64> {
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)?;
    let Some(last) = buf.iter().rposition(|&b| b == b'\n') else { return Ok(0) };
    for bytes in buf[..last].split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(bytes);
        if process.is_none_or(|p| is_of_process(&line, p)) {
            out.push(line.into_owned());
        }
    }
    Ok(last as u64 + 1)
}

fn file_id(meta: &Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

/// `path` opened for reading, with its metadata; `None` if it does not exist.
fn open_existing(path: &Path) -> Result<Option<(File, Metadata)>, LogError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LogError::Io { action: "open", path: path.to_owned(), source: e }),
    };
    let meta = file.metadata().map_err(io_error("read the size of", path))?;
    Ok(Some((file, meta)))
}

fn open_append(path: &Path) -> Result<File, LogError> {
    let file = crate::fs_tree::private_file().create(true).append(true).open(path).map_err(io_error("open", path))?;
    // A log written by an older graven may be readable by others.
    crate::fs_tree::tighten(path, crate::fs_tree::PRIVATE_FILE).map_err(io_error("make private", path))?;
    Ok(file)
}

fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> LogError {
    let path = path.to_owned();
    move |source| LogError::Io { action, path, source }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::UNIX_EPOCH;

    use super::*;

    /// How long a test waits for a line to be followed.
    const WAIT: Duration = Duration::from_secs(10);

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap()
    }

    /// The text part of each line: `a` in `12:03:04 web.1 | a`.
    fn texts(lines: &[String]) -> Vec<&str> {
        lines.iter().map(|l| l.split_once(" | ").unwrap().1).collect()
    }

    #[test]
    fn a_line_is_the_utc_time_the_process_and_the_text() {
        let at = UNIX_EPOCH + Duration::from_secs(3 * 86_400 + 3723);
        assert_eq!(format_line(at, "web.1", "hello"), "01:02:03 web.1 | hello");
        assert_eq!(format_line(UNIX_EPOCH, "worker.2", "done\r\n"), "00:00:00 worker.2 | done");
        assert_eq!(format_line(UNIX_EPOCH, "web.1", "a\nb\rc\n"), "00:00:00 web.1 | a\\nb\\rc");
        assert_eq!(format_line(UNIX_EPOCH, "web.1", ""), "00:00:00 web.1 | ");
    }

    #[test]
    fn lines_are_appended_and_returned() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run/production");
        let sink = LogSink::open(&run).unwrap();
        let first = sink.line("web.1", "listening on 5000");
        assert!(first.ends_with(" web.1 | listening on 5000"), "{first}");
        assert_eq!(first.as_bytes()[2], b':');
        drop(sink);
        let sink = LogSink::open(&run).unwrap();
        let second = sink.line("worker.1", "started");
        assert_eq!(read(&run.join("graven.log")), format!("{first}\n{second}\n"));
        assert_eq!(sink.failures(), 0);
        assert!(has_logs(&run));
        assert!(!has_logs(dir.path()));
    }

    #[test]
    fn threads_share_a_sink_and_lines_stay_whole() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LogSink::open(dir.path()).unwrap();
        std::thread::scope(|scope| {
            for t in 0..8 {
                let sink = &sink;
                scope.spawn(move || {
                    for i in 0..200 {
                        sink.line(&format!("web.{t}"), &format!("{t}-{i} {}", "x".repeat(i)));
                    }
                });
            }
        });
        let lines: Vec<String> = read(&dir.path().join("graven.log")).lines().map(str::to_owned).collect();
        assert_eq!(lines.len(), 1600);
        for line in &lines {
            let (head, text) = line.split_once(" | ").unwrap();
            let (t, i) = text.split_once(' ').unwrap().0.split_once('-').unwrap();
            assert_eq!(head[9..], format!("web.{t}"));
            assert_eq!(text, format!("{t}-{i} {}", "x".repeat(i.parse().unwrap())));
        }
    }

    #[test]
    fn rotation_keeps_five_files_under_the_limit_and_never_splits_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LogSink::open(dir.path()).unwrap().with_limits(200, 5);
        let mut written = Vec::new();
        for i in 0..300 {
            written.push(sink.line("web.1", &format!("line {i} {}", "-".repeat(i % 17))));
        }
        // A line longer than the limit gets a file of its own.
        let long = sink.line("web.1", &"y".repeat(300));
        written.push(long.clone());
        written.push(sink.line("web.1", "after the long line"));
        assert_eq!(sink.failures(), 0);

        let mut names: Vec<String> =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(
            names,
            ["graven.log", "graven.log.1", "graven.log.2", "graven.log.3", "graven.log.4", "graven.log.5"]
        );
        assert_eq!(read(&rotated_path(dir.path(), 1)), format!("{long}\n"));
        // Oldest first, the files hold the newest lines, whole and in order.
        let mut kept = Vec::new();
        for path in (1..=5).rev().map(|n| rotated_path(dir.path(), n)).chain([log_path(dir.path())]) {
            let text = read(&path);
            assert!(text.ends_with('\n'), "{}", path.display());
            assert!(text.len() <= 200 || text == format!("{long}\n"), "{} has {} bytes", path.display(), text.len());
            kept.extend(text.lines().map(str::to_owned));
        }
        assert_eq!(kept, written[written.len() - kept.len()..]);
        assert!(kept.len() > 6);
    }

    #[test]
    fn keep_zero_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LogSink::open(dir.path()).unwrap().with_limits(50, 0);
        for i in 0..20 {
            sink.line("web.1", &format!("line {i}"));
        }
        assert!(!rotated_path(dir.path(), 1).exists());
        assert!(tail(dir.path(), 100, None).unwrap().last().unwrap().ends_with("line 19"));
    }

    #[test]
    fn a_failed_rotation_keeps_the_line_and_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        // A directory in the way of the rotated file: even root cannot
        // rename a file onto it.
        fs::create_dir_all(rotated_path(dir.path(), 1).join("in-the-way")).unwrap();
        let sink = LogSink::open(dir.path()).unwrap().with_limits(100, 1);
        for i in 0..4 {
            sink.line("web.1", &format!("line {i} of twenty bytes"));
        }
        assert_eq!(sink.failures(), 1, "retried only after another limit's worth");
        let failure = sink.take_failure().unwrap().to_string();
        assert!(failure.starts_with("could not rotate "), "{failure}");
        assert!(sink.take_failure().is_none());
        assert_eq!(read(&log_path(dir.path())).lines().count(), 4);
    }

    #[test]
    fn a_failed_write_does_not_panic_and_is_counted() {
        let full = Path::new("/dev/full");
        if !full.exists() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(full, log_path(dir.path())).unwrap();
        let sink = LogSink::open(dir.path()).unwrap();
        let line = sink.line("web.1", "lost");
        assert!(line.ends_with(" web.1 | lost"));
        sink.line("web.1", "lost too");
        assert_eq!(sink.failures(), 2);
        assert!(sink.take_failure().unwrap().to_string().starts_with("could not append to "));
    }

    /// A sink at a small limit with `count` lines `line 0` … written.
    fn rotated_log(dir: &Path, count: usize) -> LogSink {
        let sink = LogSink::open(dir).unwrap().with_limits(120, 5);
        for i in 0..count {
            sink.line(["web.1", "worker.1"][i % 2], &format!("line {i}"));
        }
        sink
    }

    #[test]
    fn tail_reads_across_rotated_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let _sink = rotated_log(dir.path(), 40);
        assert!(rotated_path(dir.path(), 3).exists());
        let expected: Vec<String> = (28..40).map(|i| format!("line {i}")).collect();
        assert_eq!(texts(&tail(dir.path(), 12, None).unwrap()), expected);
        assert!(tail(dir.path(), 0, None).unwrap().is_empty());
        let all = tail(dir.path(), 1000, None).unwrap();
        let first: usize = texts(&all)[0].strip_prefix("line ").unwrap().parse().unwrap();
        let expected: Vec<String> = (first..40).map(|i| format!("line {i}")).collect();
        assert_eq!(texts(&all), expected);
    }

    #[test]
    fn tail_reads_backwards_through_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LogSink::open(dir.path()).unwrap();
        // More than two chunks, with a line across each chunk boundary.
        let lines: Vec<String> =
            (0..3000).map(|i| sink.line("web.1", &format!("{i} {}", "z".repeat(i % 97)))).collect();
        assert!(fs::metadata(log_path(dir.path())).unwrap().len() > 2 * CHUNK);
        assert_eq!(tail(dir.path(), 2500, None).unwrap(), lines[500..]);
        assert_eq!(tail(dir.path(), 5000, None).unwrap(), lines);
    }

    #[test]
    fn tail_leaves_out_an_unfinished_line_and_reads_no_log_as_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(tail(&dir.path().join("nothing"), 10, None).unwrap().is_empty());
        fs::write(log_path(dir.path()), "00:00:01 web.1 | a\n00:00:02 web.1 | b\n00:00:03 web.1 | unfini").unwrap();
        assert_eq!(texts(&tail(dir.path(), 10, None).unwrap()), ["a", "b"]);
        fs::write(log_path(dir.path()), "00:00:03 web.1 | unfini").unwrap();
        assert!(tail(dir.path(), 10, None).unwrap().is_empty());
    }

    #[test]
    fn a_process_type_matches_its_processes_and_a_process_itself() {
        let line = |process: &str| format!("12:00:00 {process} | hi");
        assert_eq!(process_of(&line("web.1")), Some("web.1"));
        assert_eq!(process_of("garbage"), None);
        assert!(is_of_process(&line("web.1"), "web"));
        assert!(is_of_process(&line("web.12"), "web"));
        assert!(is_of_process(&line("web.1"), "web.1"));
        assert!(!is_of_process(&line("web.12"), "web.1"));
        assert!(!is_of_process(&line("webhook.1"), "web"));
        assert!(!is_of_process(&line("web.x"), "web"));
        assert!(!is_of_process(&line("worker.1"), "web"));
    }

    #[test]
    fn tail_filters_by_process_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let _sink = rotated_log(dir.path(), 40);
        let web = tail(dir.path(), 5, Some("web")).unwrap();
        assert_eq!(texts(&web), ["line 30", "line 32", "line 34", "line 36", "line 38"]);
        let worker = tail(dir.path(), 2, Some("worker.1")).unwrap();
        assert_eq!(texts(&worker), ["line 37", "line 39"]);
        assert!(tail(dir.path(), 5, Some("web.2")).unwrap().is_empty());
    }

    #[test]
    fn a_follower_sees_every_line_once_across_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let sink = rotated_log(dir.path(), 10);
        let (backlog, mut follower) = Follower::start(dir.path(), 2, None).unwrap();
        assert_eq!(texts(&backlog), ["line 8", "line 9"]);
        assert!(follower.poll().unwrap().is_empty());

        let mut expected = Vec::new();
        let mut seen = Vec::new();
        // Each line of 24 bytes; 120-byte files: a rotation every 5 lines.
        // Between polls: no rotation, one, then two, then four.
        for batch in [2, 3, 6, 11, 21] {
            for _ in 0..batch {
                expected.push(sink.line("web.1", &format!("line {}", 10 + expected.len())));
            }
            seen.extend(follower.poll().unwrap());
            assert_eq!(seen, expected);
        }
        // A file shrunk in place is read again from its start.
        fs::write(log_path(dir.path()), "").unwrap();
        assert!(follower.poll().unwrap().is_empty());
        let sink = LogSink::open(dir.path()).unwrap();
        let after = sink.line("web.1", "after truncation");
        assert_eq!(follower.poll().unwrap(), [after]);
    }

    #[test]
    fn a_follower_waits_for_a_log_and_filters_by_process() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run/staging");
        let (backlog, mut follower) = Follower::start(&run, 10, Some("web")).unwrap();
        assert!(backlog.is_empty());
        assert!(follower.poll().unwrap().is_empty());
        let sink = LogSink::open(&run).unwrap();
        let web = sink.line("web.1", "up");
        sink.line("worker.1", "up");
        assert_eq!(follower.poll().unwrap(), [web]);
    }

    #[test]
    fn follow_calls_back_until_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let sink = rotated_log(dir.path(), 3);
        let stop = AtomicBool::new(false);
        let (sender, receiver) = mpsc::channel();
        std::thread::scope(|scope| {
            let follower =
                scope.spawn(|| follow(dir.path(), 1, None, &stop, |line| sender.send(line.to_owned()).unwrap()));
            let next = || receiver.recv_timeout(WAIT).expect("a followed line within the wait");
            assert!(next().ends_with("line 2"));
            // Two batches, each across a rotation.
            for batch in [3..9, 9..15] {
                let lines: Vec<String> = batch.map(|i| sink.line("web.1", &format!("line {i}"))).collect();
                for line in lines {
                    assert_eq!(next(), line);
                }
            }
            stop.store(true, Ordering::Relaxed);
            follower.join().unwrap().unwrap();
        });
    }
}
