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
    /// `[image]`: travels with the artifact, for its OCI image.
    pub image: ImageSettings,
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
    /// `[build] cache`: directories of the build's `HOME` or `/tmp` kept
    /// from build to build. Not part of the recipe's digest: a cache never
    /// changes what a deterministic build makes.
    #[serde(skip)]
    pub cache: Vec<CachePath>,
}

/// One `[build] cache` entry: a directory inside the build sandbox, under
/// its `HOME` or its `/tmp`, that outlives the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachePath {
    /// As `graven.toml` wrote it (`~/.cache/pip`).
    pub written: String,
    /// Where it is in the sandbox (`/tmp/home/.cache/pip`).
    pub in_sandbox: String,
    /// Where it is kept, relative to the app's cache directory
    /// (`home/.cache/pip`, `tmp/go-build`).
    pub key: String,
}

impl CachePath {
    /// Reads one `[build] cache` entry: `~/…` (under the build's `HOME`) or
    /// `/tmp/…`, with at least one component and no `.`, `..` or empty ones.
    pub fn parse(written: &str) -> Result<Self, String> {
        let home = crate::sandbox::HOME;
        let (area, rest) = if written == "~" || written == home {
            ("home", "")
        } else if let Some(rest) = written.strip_prefix("~/") {
            ("home", rest)
        } else if let Some(rest) = written.strip_prefix(&format!("{home}/")) {
            ("home", rest)
        } else if let Some(rest) = written.strip_prefix("/tmp/") {
            ("tmp", rest)
        } else {
            return Err(format!(
                "[build] cache '{written}' is not under the build's HOME or /tmp: name a directory like \"~/.cache/pip\" or \"/tmp/cache\"; the build sees nothing else writable"
            ));
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() {
            return Err(format!(
                "[build] cache '{written}' names the whole {}: name a directory inside it, like \"~/.cache/pip\"",
                if area == "home" { "HOME" } else { "/tmp" }
            ));
        }
        if let Some(part) = rest.split('/').find(|part| part.is_empty() || *part == "." || *part == "..") {
            let part = if part.is_empty() { "an empty component" } else { part };
            return Err(format!(
                "[build] cache '{written}' has '{part}' in it: write the directory's plain path, like \"~/.cache/pip\""
            ));
        }
        let in_sandbox = if area == "home" { format!("{home}/{rest}") } else { format!("/tmp/{rest}") };
        Ok(Self { written: written.to_owned(), in_sandbox, key: format!("{area}/{rest}") })
    }

    /// Whether one of the two is inside the other (or they are the same).
    fn overlaps(&self, other: &Self) -> bool {
        let inside = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
        inside(&self.key, &other.key) || inside(&other.key, &self.key)
    }
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
            cache: Vec::new(),
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
    /// Seconds the proxy gives a client for a request's headers, from
    /// their first byte (or from connecting, for the first request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_timeout: Option<u64>,
    /// Seconds a keep-alive connection may wait for its next request
    /// before the proxy closes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<u64>,
    /// Client connections the proxy serves at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u64>,
    /// The largest request head (request line and headers), in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_header_bytes: Option<u64>,
    /// The public port the runner listens on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `http` (the default: routed per request) or `tcp` (bytes, per
    /// connection, for services that do not speak HTTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyMode>,
    /// Seconds every new process must stay up, once the web processes are
    /// healthy, before the switch: a process that exits meanwhile fails
    /// the rollout. `0` switches at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle: Option<u64>,
    /// Seconds between SIGTERM and SIGKILL when stopping a process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<u64>,
    /// Seconds a web process has to answer a request before the client
    /// gets a 504.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// The user the processes run as, when graven runs as root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// How the artifact becomes an OCI image. Part of the artifact, so that
/// its image is the same wherever it is exported.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSettings {
    /// Directories of the artifact (`.venv`, `node_modules`), each put in
    /// an image layer of its own, in this order, before the layer of the
    /// rest: a change that leaves one alone leaves its layer alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<String>,
}

impl ImageSettings {
    /// Whether nothing is set (the record then leaves `[image]` out).
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Checks the settings; the message names the value and the rule.
    pub fn check(&self) -> Result<(), String> {
        for (n, layer) in self.layers.iter().enumerate() {
            check_relative_path(layer).map_err(|why| format!("[image] layers entry '{layer}' {why}"))?;
            if layer.ends_with('/') || layer.split('/').any(|part| part.is_empty() || part == ".") {
                return Err(format!(
                    "[image] layers entry '{layer}' is not a plain path: write it like \".venv\" or \"web/node_modules\""
                ));
            }
            let inside = |outer: &str, inner: &str| inner.strip_prefix(outer).is_some_and(|rest| rest.starts_with('/'));
            if let Some(other) =
                self.layers[..n].iter().find(|other| *other == layer || inside(other, layer) || inside(layer, other))
            {
                return Err(format!(
                    "[image] layers entry '{layer}' overlaps '{other}': each directory is in one layer; keep the one you mean"
                ));
            }
        }
        Ok(())
    }
}

/// What the runner's proxy speaks (`[run] proxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyMode {
    /// HTTP/1.1, routed per request.
    #[default]
    Http,
    /// Bytes, routed per connection.
    Tcp,
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
    #[serde(default)]
    image: Option<Spanned<ImageSettings>>,
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
    #[serde(default)]
    cache: Vec<Spanned<String>>,
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
                check_run(run.into_inner()).map_err(|why| error(start, why))?
            }
            None => RunSettings::default(),
        };

        let image = match raw.image {
            Some(image) => {
                let start = image.span().start;
                let image = image.into_inner();
                image.check().map_err(|why| error(start, why))?;
                image
            }
            None => ImageSettings::default(),
        };

        let cache = parse_caches(raw.build.cache, &error)?;
        let network = raw.build.network.unwrap_or(true);
        Ok(Self { name, build: BuildRecipe { command, output, exclude, env, pass_env, network, cache }, run, image })
    }
}

/// Checks `[run]`'s values; the message says which and why.
fn check_run(run: RunSettings) -> Result<RunSettings, String> {
    if let Some(health) = &run.health
        && !health.starts_with('/')
    {
        return Err(format!("[run] health '{health}' must be an HTTP path starting with '/', like \"/healthz\""));
    }
    for (name, value) in [
        ("header_timeout", run.header_timeout),
        ("idle_timeout", run.idle_timeout),
        ("max_connections", run.max_connections),
        ("timeout", run.timeout),
    ] {
        if value == Some(0) {
            return Err(format!("[run] {name} is 0: give a positive number, or leave it out"));
        }
    }
    if run.settle.is_some_and(|seconds| seconds > 3600) {
        return Err(
            "[run] settle is over an hour: a few seconds (the default is 3) show a process that crashes at start"
                .to_owned(),
        );
    }
    if run.max_header_bytes.is_some_and(|bytes| !(8192..=1 << 20).contains(&bytes)) {
        return Err("[run] max_header_bytes must be between 8192 and 1048576: the default, 65536, fits every browser"
            .to_owned());
    }
    if let Some(user) = &run.user
        && (user.is_empty() || user.contains(|c: char| c.is_whitespace() || c == ':' || c == '/'))
    {
        return Err(format!("[run] user '{user}' is not a user name: give one like \"www-data\", or a uid"));
    }
    Ok(run)
}

/// Reads `[build] cache`: every entry a [`CachePath`], none inside another.
fn parse_caches(
    entries: Vec<Spanned<String>>,
    error: &dyn Fn(usize, String) -> SettingsError,
) -> Result<Vec<CachePath>, SettingsError> {
    let mut cache: Vec<CachePath> = Vec::new();
    for entry in entries {
        let path = CachePath::parse(entry.get_ref()).map_err(|why| error(entry.span().start, why))?;
        if let Some(other) = cache.iter().find(|other| other.overlaps(&path)) {
            return Err(error(
                entry.span().start,
                format!(
                    "[build] cache '{}' overlaps '{}': one is inside the other; keep the one you mean",
                    path.written, other.written
                ),
            ));
        }
        cache.push(path);
    }
    Ok(cache)
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
settle = 0
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
        assert_eq!(settings.run.settle, Some(0));
    }

    #[test]
    fn cache_paths_are_kept_by_where_they_are_in_the_sandbox() {
        let settings =
            AppSettings::parse("[build]\ncache = [\"~/.cache/pip/\", \"/tmp/home/.npm\", \"/tmp/go\"]\n").unwrap();
        let keys: Vec<(&str, &str)> =
            settings.build.cache.iter().map(|c| (c.in_sandbox.as_str(), c.key.as_str())).collect();
        assert_eq!(
            keys,
            [("/tmp/home/.cache/pip", "home/.cache/pip"), ("/tmp/home/.npm", "home/.npm"), ("/tmp/go", "tmp/go")]
        );
    }

    #[test]
    fn image_layers_are_plain_paths_none_inside_another() {
        let settings = AppSettings::parse("[image]\nlayers = [\".venv\", \"web/node_modules\"]\n").unwrap();
        assert_eq!(settings.image.layers, [".venv", "web/node_modules"]);
        for (text, message) in [
            ("[\"/venv\"]", "[image] layers entry '/venv' is absolute"),
            ("[\"../x\"]", "[image] layers entry '../x' leaves the checkout through '..'"),
            ("[\"a//b\"]", "[image] layers entry 'a//b' is not a plain path"),
            ("[\"venv/\"]", "[image] layers entry 'venv/' is not a plain path"),
            ("[\"web\", \"web/node_modules\"]", "[image] layers entry 'web/node_modules' overlaps 'web'"),
            ("[\"a\", \"a\"]", "[image] layers entry 'a' overlaps 'a'"),
        ] {
            let error = AppSettings::parse(&format!("[image]\nlayers = {text}\n")).unwrap_err().to_string();
            assert!(error.contains(message), "{text}: {error}");
        }
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
                "graven.toml line 2, column 1: unknown field `comand`, expected one of `command`, `output`, `exclude`, `env`, `pass_env`, `network`, `cache`",
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
            (
                "[run]\nuser = \"www data\"\n",
                "graven.toml line 1, column 1: [run] user 'www data' is not a user name: give one like \"www-data\", or a uid",
            ),
            (
                "[run]\nsettle = 7200\n",
                "graven.toml line 1, column 1: [run] settle is over an hour: a few seconds (the default is 3) show a process that crashes at start",
            ),
            (
                "[build]\ncache = [\"~/../x\"]\n",
                "graven.toml line 2, column 10: [build] cache '~/../x' has '..' in it: write the directory's plain path, like \"~/.cache/pip\"",
            ),
            (
                "[build]\ncache = [\"/root/.graven/store\"]\n",
                "graven.toml line 2, column 10: [build] cache '/root/.graven/store' is not under the build's HOME or /tmp: name a directory like \"~/.cache/pip\" or \"/tmp/cache\"; the build sees nothing else writable",
            ),
            (
                "[build]\ncache = [\"/app/.cache\"]\n",
                "graven.toml line 2, column 10: [build] cache '/app/.cache' is not under the build's HOME or /tmp: name a directory like \"~/.cache/pip\" or \"/tmp/cache\"; the build sees nothing else writable",
            ),
            (
                "[build]\ncache = [\"~\"]\n",
                "graven.toml line 2, column 10: [build] cache '~' names the whole HOME: name a directory inside it, like \"~/.cache/pip\"",
            ),
            (
                "[build]\ncache = [\"/tmp/home\"]\n",
                "graven.toml line 2, column 10: [build] cache '/tmp/home' names the whole HOME: name a directory inside it, like \"~/.cache/pip\"",
            ),
            (
                "[build]\ncache = [\"~/.cache\", \"/tmp/home/.cache/pip\"]\n",
                "graven.toml line 2, column 22: [build] cache '/tmp/home/.cache/pip' overlaps '~/.cache': one is inside the other; keep the one you mean",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(AppSettings::parse(text).unwrap_err().to_string(), expected, "{text:?}");
        }
    }
}
