//! The Procfile: `name: command` lines, Heroku's format.

use std::collections::BTreeMap;

use super::{PROCFILE, Position};

/// The process types of an app, by name. `release` is not a process but the
/// release phase: the command run once before a release starts serving.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Procfile {
    types: BTreeMap<String, String>,
}

/// One process type: its name and the command that starts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessType<'a> {
    /// `web`, `worker`, …
    pub name: &'a str,
    /// Run by `sh -c`.
    pub command: &'a str,
}

/// A Procfile that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{PROCFILE} line {}, column {}: {message}", position.line, position.column)]
pub struct ProcfileError {
    /// Where the problem is.
    pub position: Position,
    /// What was expected, and what was found.
    pub message: String,
}

/// The Procfile process type run once for each new release, before its
/// processes start: database migrations and the like (Heroku's release
/// phase).
pub const RELEASE_PHASE: &str = "release";

impl Procfile {
    /// Parses a Procfile's text.
    pub fn parse(text: &str) -> Result<Self, ProcfileError> {
        let mut types = BTreeMap::new();
        let mut first_line = BTreeMap::new();
        for (index, raw_line) in text.lines().enumerate() {
            let line_number = index + 1;
            let line = raw_line.trim_end_matches('\r');
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = line.len() - trimmed.len();
            let error = |column: usize, message: String| ProcfileError {
                position: Position { line: line_number, column },
                message,
            };
            let Some((name, command)) = trimmed.split_once(':') else {
                return Err(error(indent + 1, format!("expected 'name: command', got '{trimmed}'")));
            };
            let name = name.trim_end();
            if let Some((offset, bad)) = name
                .char_indices()
                .find(|(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
            {
                return Err(error(
                    indent + name[..offset].chars().count() + 1,
                    format!("process name '{name}' has '{bad}': names use only a-z, 0-9, '_' and '-'"),
                ));
            }
            if name.is_empty() {
                return Err(error(indent + 1, "expected a process name before ':'".to_owned()));
            }
            let command = command.trim();
            if command.is_empty() {
                return Err(error(
                    indent + trimmed.chars().count() + 1,
                    format!("process '{name}' has no command after ':'"),
                ));
            }
            if let Some(first) = first_line.insert(name.to_owned(), line_number) {
                return Err(error(indent + 1, format!("process '{name}' is already defined on line {first}")));
            }
            types.insert(name.to_owned(), command.to_owned());
        }
        Ok(Self { types })
    }

    /// Every process type, sorted by name, the release phase included.
    pub fn types(&self) -> impl Iterator<Item = ProcessType<'_>> {
        self.types.iter().map(|(name, command)| ProcessType { name, command })
    }

    /// The process types that run as processes: all but the release phase.
    pub fn processes(&self) -> impl Iterator<Item = ProcessType<'_>> {
        self.types().filter(|process| process.name != RELEASE_PHASE)
    }

    /// The release phase's command, if the app has one.
    pub fn release_phase(&self) -> Option<&str> {
        self.types.get(RELEASE_PHASE).map(String::as_str)
    }

    /// The command of process type `name`.
    pub fn command(&self, name: &str) -> Option<&str> {
        self.types.get(name).map(String::as_str)
    }

    /// Whether the Procfile defines no process at all.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_commands_comments_and_blank_lines() {
        let procfile = Procfile::parse(
            "# the web server\nweb: python3 app.py --port $PORT\n\n  worker:python3 worker.py\r\nrelease: ./migrate: now\n",
        )
        .unwrap();
        let types: Vec<_> = procfile.types().map(|t| (t.name, t.command)).collect();
        assert_eq!(
            types,
            [("release", "./migrate: now"), ("web", "python3 app.py --port $PORT"), ("worker", "python3 worker.py"),]
        );
        assert_eq!(procfile.release_phase(), Some("./migrate: now"));
        assert_eq!(procfile.processes().count(), 2);
    }

    #[test]
    fn errors_name_line_column_and_expectation() {
        let cases = [
            ("web: a\nnonsense\n", "Procfile line 2, column 1: expected 'name: command', got 'nonsense'"),
            ("Web: a\n", "Procfile line 1, column 1: process name 'Web' has 'W': names use only a-z, 0-9, '_' and '-'"),
            (
                "  we b: a\n",
                "Procfile line 1, column 5: process name 'we b' has ' ': names use only a-z, 0-9, '_' and '-'",
            ),
            (": a\n", "Procfile line 1, column 1: expected a process name before ':'"),
            ("web:\n", "Procfile line 1, column 5: process 'web' has no command after ':'"),
            ("web: a\n\nweb: b\n", "Procfile line 3, column 1: process 'web' is already defined on line 1"),
        ];
        for (text, expected) in cases {
            assert_eq!(Procfile::parse(text).unwrap_err().to_string(), expected, "{text:?}");
        }
    }
}
