//! Everything the CLI prints goes through here: results on stdout (text or
//! `--json`), messages and progress on stderr.

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The first 7 digits of a commit id.
pub(crate) use graven::git::short_commit;

/// Progress display on stderr.
pub(crate) struct Ui {
    /// Whether stderr is a terminal (progress bars only there).
    stderr_tty: bool,
}

impl Ui {
    pub(crate) fn new() -> Self {
        Self { stderr_tty: std::io::stderr().is_terminal() }
    }

    /// A progress bar for `total` bytes, drawn on stderr if it is a terminal.
    pub(crate) fn byte_progress(&self, message: &str, total: u64) -> ProgressBar {
        if !self.stderr_tty {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>9} [{bar:30}] {binary_bytes:>10}/{binary_total_bytes} {binary_bytes_per_sec}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        bar.set_message(message.to_owned());
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    }
}

/// Shows transfers to and from a shared store as a progress bar of bytes
/// and objects on stderr, if it is a terminal.
pub(crate) struct TransferBar {
    stderr_tty: bool,
    bar: std::sync::Mutex<Option<(ProgressBar, u64, u64)>>,
}

impl TransferBar {
    pub(crate) fn new() -> Self {
        Self { stderr_tty: std::io::stderr().is_terminal(), bar: std::sync::Mutex::new(None) }
    }
}

impl graven::store::TransferObserver for TransferBar {
    fn on_transfer(&self, event: &graven::store::TransferEvent) {
        use graven::store::{Direction, TransferEvent};
        if !self.stderr_tty {
            return;
        }
        let mut bar = self.bar.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match *event {
            TransferEvent::Started { direction, objects, bytes } => {
                let shown = ProgressBar::with_draw_target(Some(bytes), ProgressDrawTarget::stderr());
                shown.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>9} [{bar:30}] {binary_bytes:>10}/{binary_total_bytes} {binary_bytes_per_sec} {msg}",
                    )
                    .expect("the template is valid")
                    .progress_chars("=> "),
                );
                shown.set_prefix(match direction {
                    Direction::Upload => "upload",
                    Direction::Download => "download",
                });
                shown.set_message(format!("0/{objects} objects"));
                shown.enable_steady_tick(Duration::from_millis(100));
                *bar = Some((shown, 0, objects));
            }
            TransferEvent::Moved { objects, bytes } => {
                if let Some((shown, done, total)) = bar.as_mut() {
                    *done += objects;
                    shown.inc(bytes);
                    shown.set_message(format!("{done}/{total} objects"));
                }
            }
            TransferEvent::Finished => {
                if let Some((shown, _, _)) = bar.take() {
                    shown.finish_and_clear();
                }
            }
        }
    }
}

/// A result line on stdout.
pub(crate) fn out(text: impl std::fmt::Display) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
}

/// A JSON value on stdout, pretty-printed.
pub(crate) fn out_json(value: &impl serde::Serialize) {
    out(serde_json::to_string_pretty(value).expect("JSON output always serialises"));
}

/// Asks for input on stderr, without a line break.
pub(crate) fn prompt(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = write!(stderr, "{text}");
    let _ = stderr.flush();
}

/// A message on stderr.
pub(crate) fn note(text: impl std::fmt::Display) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{text}");
}

/// `38.2 MB`: decimal units, one decimal place from kB up.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if n < 1000 {
        return format!("{n} B");
    }
    #[expect(clippy::cast_precision_loss, reason = "one decimal place is shown")]
    let mut value = n as f64 / 1000.0;
    let mut unit = 0;
    while value >= 999.95 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `4,312`.
pub(crate) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1 file`, `4,312 files`.
pub(crate) fn count_of(n: u64, noun: &str) -> String {
    format!("{} {noun}{}", count(n), if n == 1 { "" } else { "s" })
}

/// `5 minutes ago`, from an RFC 3339 timestamp.
pub(crate) fn age(rfc3339: &str) -> String {
    let Some(age) = graven::time::age(rfc3339) else { return rfc3339.to_owned() };
    let seconds = age.as_secs();
    let (n, unit) = match seconds {
        0..60 => return "just now".to_owned(),
        60..3600 => (seconds / 60, "minute"),
        3600..86_400 => (seconds / 3600, "hour"),
        _ => (seconds / 86_400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// Pads `rows` into aligned columns, two spaces apart, trailing spaces trimmed.
pub(crate) fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                line.push_str(&" ".repeat(widths[c] - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.pop();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_sizes_and_counts() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1_100_000), "1.1 MB");
        assert_eq!(bytes(38_200_000), "38.2 MB");
        assert_eq!(bytes(999_999_999), "1.0 GB");
        assert_eq!(count(0), "0");
        assert_eq!(count(4312), "4,312");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count_of(1, "file"), "1 file");
        assert_eq!(count_of(4312, "file"), "4,312 files");
    }

    #[test]
    fn aligns_tables() {
        let rows = vec![
            vec!["A".to_owned(), "BB".to_owned(), "C".to_owned()],
            vec!["aaa".to_owned(), "b".to_owned(), String::new()],
        ];
        assert_eq!(table(&rows), "A    BB  C\naaa  b");
    }
}
