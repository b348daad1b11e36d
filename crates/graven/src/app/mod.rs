//! The app's own description of itself, read from the commit being built:
//! the `Procfile` (which process types exist and how to start them) and the
//! optional `graven.toml` (app name, build recipe, run settings).
//!
//! Parsing only: this module neither runs nor stores anything. Every error
//! names the file, line and column, and what was expected there.

mod procfile;
mod settings;

pub use procfile::RELEASE_PHASE;
pub use procfile::{ProcessType, Procfile, ProcfileError};
pub use settings::{
    AppSettings, BuildRecipe, CachePath, ImageSettings, ProxyMode, RunSettings, SettingsError, is_variable_name,
};

/// The file that lists an app's process types.
pub const PROCFILE: &str = "Procfile";
/// The optional file with the app's name, build recipe and run settings.
pub const SETTINGS_FILE: &str = "graven.toml";

/// Where in a file something is: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` in `text`.
    pub fn of_offset(text: &str, offset: usize) -> Self {
        let offset = offset.min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Self { line, column }
    }
}

/// Whether `name` is a valid app name: `[a-z][a-z0-9-]{0,62}`.
pub fn is_valid_app_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// An app name made from a directory name: lowercased, with every character
/// outside `[a-z0-9-]` replaced by `-`, and `app` if nothing usable is left.
pub fn app_name_from_directory(directory: &str) -> String {
    let mut name: String = directory
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' }
        })
        .collect();
    name = name.trim_matches('-').to_owned();
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        name.insert_str(0, "app-");
    }
    name.truncate(63);
    let name = name.trim_end_matches('-').to_owned();
    if is_valid_app_name(&name) { name } else { "app".to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters() {
        let text = "ab\ncdé\nf";
        assert_eq!(Position::of_offset(text, 0), Position { line: 1, column: 1 });
        assert_eq!(Position::of_offset(text, 3), Position { line: 2, column: 1 });
        assert_eq!(Position::of_offset(text, 7), Position { line: 2, column: 4 });
        assert_eq!(Position::of_offset(text, 9), Position { line: 3, column: 2 });
    }

    #[test]
    fn app_names_from_directories() {
        assert_eq!(app_name_from_directory("hello"), "hello");
        assert_eq!(app_name_from_directory("My_App"), "my-app");
        assert_eq!(app_name_from_directory("2048"), "app-2048");
        assert_eq!(app_name_from_directory("..."), "app");
        assert!(is_valid_app_name("a"));
        assert!(!is_valid_app_name("A"));
        assert!(!is_valid_app_name("-a"));
        assert!(!is_valid_app_name(&"a".repeat(64)));
    }
}
