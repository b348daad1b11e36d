//! `graven.toml`: the app's name, build recipe and run settings.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::{Position, SETTINGS_FILE, is_valid_app_name};

/// The parsed and validated `graven.toml`. Every field has a default, so an
/// app without the file gets `AppSettings::default()`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppSettings {
    /// `[app] name`.
    pub name: Option<String>,
    /// `[build]`.
    pub build: BuildRecipe,
    /// `[run]`: travels with the artifact, for the runner.
    pub run: RunSettings,
}

/// How to turn a clean checkout into the artifact's tree.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BuildRecipe {
    /// Run by `sh -c` at the root of the checkout; none means the checkout is
    /// the artifact as it is.
    pub command: Option<String>,
    /// The directory, relative to the checkout, that becomes the artifact;
    /// none means the whole checkout.
    pub output: Option<String>,
    /// Globs of paths, relative to the output, left out of the artifact.
    pub exclude: Vec<String>,
    /// Variables set for the build command.
    pub env: BTreeMap<String, String>,
    /// Names of the caller's variables let through to the build command.
    pub pass_env: Vec<String>,
    /// Whether the build command may use the network (package installs);
    /// `false` gives its sandbox no network at all. Left out of the recipe's
    /// digest when `true`, so recipes from before it keep their digests.
    #[serde(skip_serializing_if = "is_true")]
    pub network: bool,
}

impl Default for BuildRecipe {
    fn default() -> Self {
        Self {
            command: None,
            output: None,
            exclude: Vec::new(),
            env: BTreeMap::new(),
            pass_env: Vec::new(),
            network: true,
        }
    }
}

#[expect(clippy::trivially_copy_pass_by_ref, reason = "serde's skip_serializing_if passes a reference")]
fn is_true(value: &bool) -> bool {
    *value
}

/// How the runner runs the artifact. Part of the artifact, like the Procfile.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSettings {
    // Fields are in alphabetical order: the artifact record is canonical JSON.
    /// An HTTP path that answers 2xx when a web process is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// Seconds a new web process has to become healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_timeout: Option<u64>,
    /// The public port the runner listens on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Seconds between SIGTERM and SIGKILL when stopping a process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<u64>,
}

/// A `graven.toml` that does not parse or does not make sense.
#[derive(Debug, thiserror::Error)]
#[error("{SETTINGS_FILE} line {}, column {}: {message}", position.line, position.column)]
pub struct SettingsError {
    /// Where the problem is.
    pub position: Position,
    /// What was expected, and what was found.
    pub message: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    app: RawApp,
    #[serde(default)]
    build: RawBuild,
    #[serde(default)]
    run: Option<Spanned<RunSettings>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApp {
    name: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBuild {
    command: Option<Spanned<String>>,
    output: Option<Spanned<String>>,
    #[serde(default)]
    exclude: Vec<Spanned<String>>,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, String>,
    #[serde(default)]
    pass_env: Vec<Spanned<String>>,
    network: Option<bool>,
}

impl AppSettings {
    /// Parses and validates the text of a `graven.toml`.
    pub fn parse(text: &str) -> Result<Self, SettingsError> {
        let error =
            |offset: usize, message: String| SettingsError { position: Position::of_offset(text, offset), message };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |span| span.start);
            error(offset, e.message().trim_end().to_owned())
        })?;

        let name = match raw.app.name {
            Some(name) if !is_valid_app_name(name.get_ref()) => {
                return Err(error(
                    name.span().start,
                    format!(
                        "app name '{}' is not valid: use a lowercase letter, then up to 62 of a-z, 0-9 and '-'",
                        name.get_ref()
                    ),
                ));
            }
            name => name.map(Spanned::into_inner),
        };

        let command = match raw.build.command {
            Some(command) if command.get_ref().trim().is_empty() => {
                return Err(error(
                    command.span().start,
                    "[build] command is empty: remove it, or give the command that builds the app".to_owned(),
                ));
            }
            command => command.map(Spanned::into_inner),
        };

        let output = match raw.build.output {
            Some(output) => {
                check_relative_path(output.get_ref()).map_err(|why| {
                    error(output.span().start, format!("[build] output '{}' {why}", output.get_ref()))
                })?;
                let trimmed = output.get_ref().trim_end_matches('/').to_owned();
                (trimmed != ".").then_some(trimmed)
            }
            None => None,
        };

        let mut exclude = Vec::new();
        for glob in raw.build.exclude {
            globset::Glob::new(glob.get_ref()).map_err(|e| {
                error(
                    glob.span().start,
                    format!("[build] exclude '{}' is not a valid glob: {}", glob.get_ref(), e.kind()),
                )
            })?;
            exclude.push(glob.into_inner());
        }

        let mut env = BTreeMap::new();
        for (key, value) in raw.build.env {
            if !is_variable_name(key.get_ref()) {
                return Err(error(
                    key.span().start,
                    format!(
                        "[build] env key '{}' is not a variable name: use letters, digits and '_', not starting with a digit",
                        key.get_ref()
                    ),
                ));
            }
            env.insert(key.into_inner(), value);
        }

        let mut pass_env = Vec::new();
        for key in raw.build.pass_env {
            if !is_variable_name(key.get_ref()) {
                return Err(error(
                    key.span().start,
                    format!(
                        "[build] pass_env entry '{}' is not a variable name: use letters, digits and '_', not starting with a digit",
                        key.get_ref()
                    ),
                ));
            }
            pass_env.push(key.into_inner());
        }

        let run = match raw.run {
            Some(run) => {
                let start = run.span().start;
                let run = run.into_inner();
                if let Some(health) = &run.health
                    && !health.starts_with('/')
                {
                    return Err(error(
                        start,
                        format!("[run] health '{health}' must be an HTTP path starting with '/', like \"/healthz\""),
                    ));
                }
                run
            }
            None => RunSettings::default(),
        };

        let network = raw.build.network.unwrap_or(true);
        Ok(Self { name, build: BuildRecipe { command, output, exclude, env, pass_env, network }, run })
    }
}

/// Whether `name` can be an environment variable's name.
pub fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks that `path` is relative and stays inside the directory it is
/// relative to.
fn check_relative_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("is empty: name a directory inside the checkout, like \"dist\"");
    }
    if path.starts_with('/') {
        return Err("is absolute: name a directory inside the checkout, like \"dist\"");
    }
    if path.split('/').any(|part| part == "..") {
        return Err("leaves the checkout through '..': name a directory inside it");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_section() {
        let settings = AppSettings::parse(
            r#"
[app]
name = "hello"

[build]
command = "make"
output = "dist/"
exclude = ["*.o", "tests/**"]
env = { NODE_ENV = "production" }
pass_env = ["CI"]

[run]
port = 8000
health = "/healthz"
health_timeout = 10
"#,
        )
        .unwrap();
        assert_eq!(settings.name.as_deref(), Some("hello"));
        assert_eq!(settings.build.command.as_deref(), Some("make"));
        assert_eq!(settings.build.output.as_deref(), Some("dist"));
        assert_eq!(settings.build.exclude, ["*.o", "tests/**"]);
        assert_eq!(settings.build.env["NODE_ENV"], "production");
        assert_eq!(settings.build.pass_env, ["CI"]);
        assert_eq!(settings.run.port, Some(8000));
        assert_eq!(settings.run.health_timeout, Some(10));
    }

    #[test]
    fn an_empty_file_is_all_defaults() {
        assert_eq!(AppSettings::parse("").unwrap(), AppSettings::default());
        let dot = AppSettings::parse("[build]\noutput = \".\"\n").unwrap();
        assert_eq!(dot.build.output, None);
    }

    #[test]
    fn errors_name_line_column_and_expectation() {
        let cases = [
            (
                "[build]\ncommand = \n",
                "graven.toml line 2, column 11: string values must be quoted, expected literal string",
            ),
            (
                "[build]\ncomand = \"make\"\n",
                "graven.toml line 2, column 1: unknown field `comand`, expected one of `command`, `output`, `exclude`, `env`, `pass_env`, `network`",
            ),
            (
                "[app]\nname = \"Hello\"\n",
                "graven.toml line 2, column 8: app name 'Hello' is not valid: use a lowercase letter, then up to 62 of a-z, 0-9 and '-'",
            ),
            (
                "[build]\noutput = \"../x\"\n",
                "graven.toml line 2, column 10: [build] output '../x' leaves the checkout through '..': name a directory inside it",
            ),
            (
                "[build]\nexclude = [\"a[\"]\n",
                "graven.toml line 2, column 12: [build] exclude 'a[' is not a valid glob: unclosed character class; missing ']'",
            ),
            (
                "[build]\nenv = { 1X = \"a\" }\n",
                "graven.toml line 2, column 9: [build] env key '1X' is not a variable name: use letters, digits and '_', not starting with a digit",
            ),
            ("[run]\nport = 99999\n", "graven.toml line 2, column 8: invalid value: integer `99999`, expected u16"),
        ];
        for (text, expected) in cases {
            assert_eq!(AppSettings::parse(text).unwrap_err().to_string(), expected, "{text:?}");
        }
    }
}
