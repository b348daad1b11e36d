//! The build stage: one commit and its recipe become one immutable,
//! content-addressed artifact.
//!
//! 1. resolve the commit; refuse a dirty working tree unless allowed;
//! 2. export the commit into a fresh directory (no `.git`, nothing
//!    untracked, `export-ignore` honoured);
//! 3. run the build command there with a scrubbed environment: no runtime
//!    config can reach it;
//! 4. ingest the output into the store as a manifest; write the artifact
//!    record; make the store durable; only then record the build in the
//!    ledger. A build stopped at any point publishes nothing.

mod cache;
mod command;
mod ingest;
mod paths;
mod resolve;
mod verify;
mod workdir;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

pub use cache::{CachesRemoved, remove_caches};
pub use ingest::IngestError;
pub use resolve::{ResolveError, resolve_build};
pub use verify::{BlobProblem, VerifyReport, verify_artifact};

use crate::app::{AppSettings, PROCFILE, Procfile, ProcfileError, SETTINGS_FILE, SettingsError};
use crate::env_vars::build::{GRAVEN_COMMIT, SOURCE_DATE_EPOCH};
use crate::git::{GitError, Repo};
use crate::home::Home;
use crate::ledger::{Ledger, LedgerError};
use crate::model::{ARTIFACT_FORMAT, Artifact, BuildRecord, EntryKind, NewBuild};
use crate::sandbox::{self, Sandbox};
use crate::store::{ObjectKind, Store, StoreError};
use crate::{Digest, time};
use ingest::{IngestOptions, Ingested};
use workdir::WorkDir;

/// What to build, and how.
#[derive(Debug, Clone)]
pub struct BuildRequest<'a> {
    /// The repository to build from.
    pub repo: &'a Repo,
    /// Where the store and scratch space are.
    pub home: &'a Home,
    /// The revision to build (`HEAD`, a branch, a tag, a commit).
    pub rev: &'a str,
    /// The app name, overriding `graven.toml`.
    pub app: Option<&'a str>,
    /// Build the working tree's uncommitted changes instead of refusing.
    pub allow_dirty: bool,
    /// Build even if this commit and recipe were built before, and re-check
    /// what the store already has, storing again whatever is damaged.
    pub force: bool,
    /// Build twice and fail if the two outputs differ.
    pub check_reproducible: bool,
    /// Run the build command in the sandbox (see [`sandbox`]); `false` is
    /// `--no-sandbox`, and the build is marked unsandboxed for good.
    pub sandbox: bool,
    /// Mount the app's build caches (`[build] cache`) in the sandbox;
    /// `false` is `--no-cache`.
    pub cache: bool,
    /// Who is building.
    pub author: &'a str,
    /// The machine building.
    pub host: &'a str,
}

/// The outcome of a build.
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    /// The build as recorded (for a reused build, the earlier record).
    pub record: BuildRecord,
    /// Whether an earlier build of the same commit and recipe was reused.
    pub reused: bool,
    /// Of the new bytes, those of manifest listings.
    pub new_manifest_bytes: u64,
    /// This run's duration (for a reused build, the time to find it).
    pub duration: Duration,
    /// What was sent to a shared store (nothing for a local one).
    pub upload: crate::store::Transfer,
    /// The artifact's host references: its symlinks that lead out of
    /// `/app`, by path, with their targets.
    pub host_references: Vec<(String, String)>,
}

/// Something worth telling the user while a build runs.
#[derive(Debug)]
pub enum BuildEvent<'a> {
    /// The commit is being exported.
    Exporting {
        /// The commit, or `working tree` for a dirty build.
        source: &'a str,
    },
    /// The build command started.
    CommandStarted {
        /// The command.
        command: &'a str,
    },
    /// A line the build command printed.
    Output {
        /// The line, without its newline.
        line: &'a str,
    },
    /// bwrap could not make the build's sandbox (the machine's mounts
    /// changed while it copied them); the build command, which did not
    /// start, starts again in a new one.
    SandboxRetry {
        /// What bwrap said.
        why: &'a str,
    },
    /// The second build of `--check-reproducible` is starting.
    SecondBuild,
    /// Another build of `app` is using its build caches; this one waits.
    CacheWait {
        /// The app.
        app: &'a str,
    },
    /// The recipe names build caches, and this build runs without the
    /// sandbox, which is what mounts them: it runs without them.
    CachesUnused,
    /// Ingest started.
    IngestStarted {
        /// Files to ingest.
        files: u64,
        /// Their total size.
        bytes: u64,
    },
    /// Ingest has hashed this many bytes.
    IngestProgress {
        /// Bytes done so far.
        bytes: u64,
    },
    /// The artifact is stored locally; it goes to the shared store, if
    /// there is one, now.
    Publishing,
    /// Files of the output hold `path`, a path the build saw that will not
    /// exist when the artifact runs.
    EmbeddedPath {
        /// The path.
        path: &'a str,
        /// The files that hold it, relative to the output (the first few).
        files: &'a [String],
        /// How many files hold it.
        count: usize,
    },
}

/// Told of a build's progress. Called from several threads.
pub trait BuildObserver: Sync {
    /// One event.
    fn on_event(&self, event: &BuildEvent<'_>);
}

/// An observer that ignores everything.
pub struct Quiet;

impl BuildObserver for Quiet {
    fn on_event(&self, _: &BuildEvent<'_>) {}
}

/// A build that did not produce an artifact.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The repository could not be read.
    #[error(transparent)]
    Git(#[from] GitError),
    /// The working tree has uncommitted changes.
    #[error("the working tree has uncommitted changes:\n{}", list_paths(paths))]
    Dirty {
        /// The changed paths.
        paths: Vec<String>,
    },
    /// No Procfile in the commit.
    #[error("commit {commit} has no {PROCFILE} at the root of the repository")]
    MissingProcfile {
        /// The commit.
        commit: String,
    },
    /// A Procfile that does not parse.
    #[error(transparent)]
    Procfile(#[from] ProcfileError),
    /// A graven.toml that does not parse.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The build command could not be started.
    #[error("could not start the build command with sh")]
    CommandSpawn(#[source] std::io::Error),
    /// The build command failed.
    #[error("the build command `{command}` failed ({})", describe_status(*status))]
    CommandFailed {
        /// The command.
        command: String,
        /// How it ended.
        status: ExitStatus,
        /// Its last lines of output.
        tail: Vec<String>,
    },
    /// The output directory does not exist after the build.
    #[error("the build output directory '{output}' does not exist after the build")]
    OutputMissing {
        /// `[build] output`.
        output: String,
    },
    /// The output holds something an artifact cannot.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// The sandbox cannot be made.
    #[error(transparent)]
    Sandbox(#[from] sandbox::SandboxError),
    /// `--check-reproducible` found differences.
    #[error("the build is not reproducible: {} {} between two builds of the same commit:\n{}", plural(paths.len(), "path"), if paths.len() == 1 { "differs" } else { "differ" }, list_paths(&paths.iter().zip(differences).map(|(path, what)| format!("{path}: {what}")).collect::<Vec<_>>()))]
    NotReproducible {
        /// Paths whose content, mode or presence differ.
        paths: Vec<String>,
        /// For each, what differs: sizes and the first differing byte, a
        /// mode, a link's target, or that only one build has it.
        differences: Vec<String>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The artifact could not be sent to the shared store.
    #[error("could not send artifact {} to the shared store", id.short())]
    Publish {
        /// The artifact.
        id: Digest,
        /// Why.
        #[source]
        source: Box<crate::store::ArtifactError>,
    },
    /// A build cache could not be prepared.
    #[error("could not prepare the build cache {}", path.display())]
    Cache {
        /// The directory or lock file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Scratch space could not be prepared.
    #[error("could not prepare {}", path.display())]
    WorkDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn list_paths(paths: &[String]) -> String {
    let mut text: Vec<String> = paths.iter().take(crate::LISTED_PATHS).map(|p| format!("  {p}")).collect();
    if paths.len() > crate::LISTED_PATHS {
        text.push(format!("  … and {} more", paths.len() - crate::LISTED_PATHS));
    }
    text.join("\n")
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") }
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(127), _) => "exit code 127: command not found".to_owned(),
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "ended abnormally".to_owned(),
    }
}

/// What the build needs from the commit, read before anything runs.
struct Source {
    commit: String,
    /// The tree to export: the commit's, or a snapshot of the working tree.
    tree_ish: String,
    dirty: bool,
    procfile: Procfile,
    settings: AppSettings,
}

/// Builds `request.rev` into an artifact in `store`, recorded in `ledger`.
pub fn build(
    request: &BuildRequest<'_>,
    store: &dyn Store,
    ledger: &dyn Ledger,
    observer: &dyn BuildObserver,
) -> Result<BuildOutcome, BuildError> {
    let started = Instant::now();
    let started_at = time::now_rfc3339();
    let home_dir = request.home.tmp_dir();
    workdir::remove_abandoned(&home_dir);
    let work = WorkDir::create(&home_dir)?;
    let source = read_source(request, &work)?;
    let app = request.app.map_or_else(|| app_name(request.repo, &source.settings), str::to_owned);
    let recipe = recipe_digest(&source.settings, request.sandbox);
    // From the first look at the store until the ledger records the build:
    // nothing found here and reused can be collected meanwhile.
    let _lease = store.lease()?;

    if !source.dirty
        && !request.force
        && let Some(record) = ledger.reusable_build(&app, &source.commit, &recipe)?
        && store.has_object(ObjectKind::Artifact, &record.build.artifact)?
    {
        return reused(store, record, started.elapsed());
    }

    // Only a build that runs needs the commit time, and the sandbox.
    let epoch = request.repo.commit_time(&source.commit)?;
    let sandbox = (request.sandbox && source.settings.build.command.is_some()).then(Sandbox::new).transpose()?;
    let env = build_env(&source, epoch, &work, sandbox.is_some());
    let caches = take_caches(request, &source, &app, sandbox.is_some(), observer)?;
    // With --no-cache, the same directories, empty.
    let empty: Vec<_> = source.settings.build.cache.iter().map(|path| (None, path.in_sandbox.clone())).collect();
    let isolation = sandbox.as_ref().map(|sandbox| command::Isolation {
        sandbox,
        network: source.settings.build.network,
        caches: caches.as_ref().map_or(&empty, |caches| &caches.mounts),
    });
    let run = |name| run_once(request, &source, &work, name, isolation, &env, observer);
    let (output, command_time, log) = run("a")?;
    let exclude = exclude_set(&source.settings);

    let second = if request.check_reproducible {
        observer.on_event(&BuildEvent::SecondBuild);
        let (output, _, _) = run("b")?;
        let options = IngestOptions { exclude: &exclude, store: None, flat: true, repair: false, observer, find: None };
        Some((ingest::ingest(&output, &options)?, output))
    } else {
        None
    };
    // The commands are done with the caches: the next build may have them.
    drop(caches);

    let embedded = paths::build_time_path(source.settings.build.output.as_deref(), &output, sandbox.is_some());
    let finder = embedded.as_deref().map(paths::finder);
    let ingest_started = Instant::now();
    let ingested = with_early_writeback(store, || {
        let options = IngestOptions {
            exclude: &exclude,
            store: Some(store),
            flat: second.is_some(),
            repair: request.force,
            observer,
            find: finder.as_ref(),
        };
        ingest::ingest(&output, &options)
    })?;
    if let Some((second, second_output)) = second {
        check_same(store, &ingested, &second, &second_output)?;
    }

    report_embedded(embedded.as_deref(), &ingested.embedding, observer);

    let artifact = Artifact {
        format: ARTIFACT_FORMAT,
        image: source.settings.image.clone(),
        process_types: source.procfile.types().map(|t| (t.name.to_owned(), t.command.to_owned())).collect(),
        root: ingested.root,
        run: source.settings.run.clone(),
    };
    let record_bytes = artifact.to_canonical_json();
    let id = Digest::of(&record_bytes);
    if request.force {
        crate::store::remove_if_corrupt_object(store, ObjectKind::Artifact, &id)?;
    }
    let new_record_bytes =
        if store.put_object(ObjectKind::Artifact, &id, &record_bytes)? { record_bytes.len() as u64 } else { 0 };
    store.sync()?;
    // Ingest ends when the artifact is durable in the store: the sync that
    // makes it so is part of the cost, as it is for OSTree's commit.
    let ingest_time = ingest_started.elapsed();
    // In a shared store before the ledger names it: a build in the ledger
    // is one every machine can fetch.
    observer.on_event(&BuildEvent::Publishing);
    let upload =
        store.publish(&id, request.force).map_err(|source| BuildError::Publish { id, source: Box::new(source) })?;
    crate::fail_point::check("build-before-record");

    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let new_manifest_bytes = ingested.new_manifest_bytes + new_record_bytes;
    let record = ledger.record_build(&NewBuild {
        app,
        artifact: id,
        commit: source.commit,
        dirty: source.dirty,
        sandboxed: request.sandbox,
        recipe,
        author: request.author.to_owned(),
        host: request.host.to_owned(),
        started_at,
        finished_at: time::now_rfc3339(),
        files: ingested.files,
        bytes: ingested.bytes,
        new_bytes: ingested.new_blob_bytes + new_manifest_bytes,
        duration_ms: millis(started.elapsed()),
        build_command_ms: millis(command_time),
        ingest_ms: millis(ingest_time),
        log,
    })?;
    drop(work);
    let (duration, host_references) = (started.elapsed(), ingested.host_references);
    Ok(BuildOutcome { record, reused: false, new_manifest_bytes, duration, upload, host_references })
}

/// Fails if the second build of `--check-reproducible` (ingested without
/// storing, its output at `second_output`) differs from the first.
fn check_same(store: &dyn Store, first: &Ingested, second: &Ingested, second_output: &Path) -> Result<(), BuildError> {
    let paths = differing_paths(first, second);
    if paths.is_empty() {
        return Ok(());
    }
    let (first, second) = (first.flat.as_ref(), second.flat.as_ref());
    let differences = paths
        .iter()
        .map(|path| {
            let (a, b) = (first.and_then(|f| f.get(path)), second.and_then(|f| f.get(path)));
            describe_difference(store, a, b, &second_output.join(path.trim_end_matches('/')))
        })
        .collect();
    Err(BuildError::NotReproducible { paths, differences })
}

/// The app's build caches, for a build that runs its command in the
/// sandbox with caches allowed; the others run without.
fn take_caches(
    request: &BuildRequest<'_>,
    source: &Source,
    app: &str,
    sandboxed: bool,
    observer: &dyn BuildObserver,
) -> Result<Option<cache::Caches>, BuildError> {
    let paths = &source.settings.build.cache;
    if !request.cache || paths.is_empty() || source.settings.build.command.is_none() {
        return Ok(None);
    }
    if !sandboxed {
        observer.on_event(&BuildEvent::CachesUnused);
        return Ok(None);
    }
    cache::take(request.home, app, paths, observer).map(Some)
}

/// Tells `observer` of the files that hold `path`, a path the build saw for
/// its output that will not exist when the artifact runs.
fn report_embedded(path: Option<&str>, files: &[String], observer: &dyn BuildObserver) {
    if let Some(path) = path
        && !files.is_empty()
    {
        let shown = &files[..files.len().min(crate::LISTED_PATHS)];
        observer.on_event(&BuildEvent::EmbeddedPath { path, files: shown, count: files.len() });
    }
}

/// The outcome of a build that reuses `record`'s artifact. A shared store
/// has it whole once it has its record; a local copy whose upload was cut
/// short is sent now.
fn reused(store: &dyn Store, record: BuildRecord, duration: Duration) -> Result<BuildOutcome, BuildError> {
    let id = record.build.artifact;
    let unusable = |source| BuildError::Publish { id, source: Box::new(source) };
    let upload = store.publish(&id, false).map_err(unusable)?;
    store.fetch_listings(&id).map_err(unusable)?;
    let artifact = Artifact::load(store, &id).map_err(unusable)?;
    let host_references = crate::store::host_references(store, &id, &artifact.root).map_err(unusable)?;
    Ok(BuildOutcome { record, reused: true, new_manifest_bytes: 0, duration, upload, host_references })
}

/// The app name: `graven.toml [app] name`, else the repository's directory.
pub fn app_name(repo: &Repo, settings: &AppSettings) -> String {
    settings.name.clone().unwrap_or_else(|| {
        let directory = repo.root().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        crate::app::app_name_from_directory(&directory)
    })
}

fn read_source(request: &BuildRequest<'_>, work: &WorkDir) -> Result<Source, BuildError> {
    let repo = request.repo;
    let commit = repo.resolve_commit(request.rev)?;
    let head = if request.rev == "HEAD" { Some(commit.clone()) } else { repo.resolve_commit("HEAD").ok() };
    let mut dirty = false;
    let mut tree_ish = commit.clone();
    // The working tree only matters when building what is checked out.
    if head.as_deref() == Some(commit.as_str()) {
        let home = home_in_repo(repo, request.home);
        let paths: Vec<String> = repo
            .dirty_paths()?
            .into_iter()
            .filter(|p| home.as_deref().is_none_or(|home| !p.starts_with(home)))
            .collect();
        if !paths.is_empty() {
            if !request.allow_dirty {
                return Err(BuildError::Dirty { paths });
            }
            dirty = true;
            tree_ish = repo.working_tree_snapshot(work.path(), home.as_deref())?;
        }
    }
    let [procfile, settings] = repo.read_files(&tree_ish, [PROCFILE, SETTINGS_FILE])?;
    let procfile = match procfile {
        Some(bytes) => Procfile::parse(&String::from_utf8_lossy(&bytes))?,
        None => return Err(BuildError::MissingProcfile { commit }),
    };
    let settings = match settings {
        Some(bytes) => AppSettings::parse(&String::from_utf8_lossy(&bytes))?,
        None => AppSettings::default(),
    };
    Ok(Source { commit, tree_ish, dirty, procfile, settings })
}

/// The home's path relative to the repository root, with a trailing `/`,
/// if the home is inside the repository.
fn home_in_repo(repo: &Repo, home: &Home) -> Option<String> {
    let root = repo.root().canonicalize().ok()?;
    let home = home.root().canonicalize().ok()?;
    let relative = home.strip_prefix(&root).ok()?;
    let relative = relative.to_str()?;
    (!relative.is_empty()).then(|| format!("{relative}/"))
}

/// The digest of what makes a build: the recipe, and whether its command
/// runs in the sandbox (a build without it is another build, never reused
/// for one with it). Unsandboxed recipes keep the digests they had before
/// the sandbox.
fn recipe_digest(settings: &AppSettings, sandboxed: bool) -> Digest {
    let mut bytes = serde_json::to_vec(&settings.build).expect("recipes always serialise");
    if sandboxed {
        bytes.splice(0..0, format!("sandbox {}\n", sandbox::APP).into_bytes());
    }
    Digest::of(&bytes)
}

fn exclude_set(settings: &AppSettings) -> globset::GlobSet {
    let mut builder = globset::GlobSetBuilder::new();
    for pattern in &settings.build.exclude {
        // A pattern without '/' matches a name at any depth, as in .gitignore.
        let patterns =
            if pattern.contains('/') { vec![pattern.clone()] } else { vec![pattern.clone(), format!("**/{pattern}")] };
        for pattern in patterns {
            if let Ok(glob) = globset::GlobBuilder::new(&pattern).literal_separator(true).build() {
                builder.add(glob);
            }
        }
    }
    builder.build().unwrap_or_else(|_| globset::GlobSet::empty())
}

/// The build command's whole environment. In the sandbox, `HOME`, `TMPDIR`
/// and `PWD` are the same on every machine.
fn build_env(source: &Source, epoch: u64, work: &WorkDir, sandboxed: bool) -> BTreeMap<String, OsString> {
    let mut env = BTreeMap::new();
    if let Some(path) = std::env::var_os("PATH") {
        env.insert("PATH".to_owned(), path);
    }
    if sandboxed {
        env.insert("HOME".to_owned(), sandbox::HOME.into());
        env.insert("TMPDIR".to_owned(), sandbox::TMPDIR.into());
        env.insert("PWD".to_owned(), sandbox::APP.into());
    } else {
        env.insert("HOME".to_owned(), work.home().into_os_string());
        env.insert("TMPDIR".to_owned(), work.tmp().into_os_string());
    }
    env.insert("LANG".to_owned(), "C.UTF-8".into());
    env.insert(SOURCE_DATE_EPOCH.to_owned(), epoch.to_string().into());
    env.insert(GRAVEN_COMMIT.to_owned(), source.commit.clone().into());
    for name in &source.settings.build.pass_env {
        if let Some(value) = std::env::var_os(name) {
            env.insert(name.clone(), value);
        }
    }
    for (name, value) in &source.settings.build.env {
        env.insert(name.clone(), value.into());
    }
    env
}

/// Exports the source into checkout `name` and runs the build command there;
/// returns the output directory, the command's duration and its log.
fn run_once(
    request: &BuildRequest<'_>,
    source: &Source,
    work: &WorkDir,
    name: &str,
    sandbox: Option<command::Isolation<'_>>,
    env: &BTreeMap<String, OsString>,
    observer: &dyn BuildObserver,
) -> Result<(std::path::PathBuf, Duration, String), BuildError> {
    let checkout = work.checkout(name)?;
    observer.on_event(&BuildEvent::Exporting { source: if source.dirty { "working tree" } else { &source.commit } });
    request.repo.export(&source.tree_ish, &checkout)?;
    // The times the files will have in the store and at run time, so that
    // what the build derives from them (a `.pyc`'s source mtime) holds then.
    crate::fs_tree::normalise_mtimes(&checkout)
        .map_err(|source| BuildError::WorkDir { path: checkout.clone(), source })?;
    let started = Instant::now();
    let log = match &source.settings.build.command {
        Some(command) => command::run(command, &checkout, sandbox, env, observer)?,
        None => String::new(),
    };
    let command_time = started.elapsed();
    let output = match &source.settings.build.output {
        Some(output) => checkout.join(output),
        None => checkout,
    };
    if !output_is_dir(&output) {
        let output = source.settings.build.output.clone().unwrap_or_else(|| ".".to_owned());
        return Err(BuildError::OutputMissing { output });
    }
    Ok((output, command_time, log))
}

fn output_is_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_dir())
}

/// What differs at one path between the first build (stored) and the
/// second (`second_file`, its path in the second build's output).
fn describe_difference(
    store: &dyn Store,
    first: Option<&EntryKind>,
    second: Option<&EntryKind>,
    second_file: &Path,
) -> String {
    let kind = |entry: &EntryKind| match entry {
        EntryKind::File { .. } => "a file",
        EntryKind::Dir { .. } => "a directory",
        EntryKind::Symlink { .. } => "a symlink",
    };
    match (first, second) {
        (Some(_), None) => "only in the first build".to_owned(),
        (None, Some(_)) => "only in the second build".to_owned(),
        (Some(EntryKind::Symlink { target: a }), Some(EntryKind::Symlink { target: b })) => {
            format!("links to '{a}' in the first build, '{b}' in the second")
        }
        (
            Some(EntryKind::File { executable: xa, size: a, digest }),
            Some(EntryKind::File { executable: xb, size: b, .. }),
        ) => {
            let mut what = Vec::new();
            if xa != xb {
                let mode = |x: &bool| if *x { "0755" } else { "0644" };
                what.push(format!("mode {} vs {}", mode(xa), mode(xb)));
            }
            if a != b {
                what.push(format!("{a} vs {b} bytes"));
            }
            let first_file = store.local().blob_path(digest);
            if let Some(offset) = first_difference(&first_file, second_file) {
                what.push(format!("first difference at byte {offset}"));
            }
            if what.is_empty() { "contents differ".to_owned() } else { what.join(", ") }
        }
        (Some(a), Some(b)) => format!("{} in the first build, {} in the second", kind(a), kind(b)),
        (None, None) => "differs".to_owned(),
    }
}

/// The offset of the first byte at which files `a` and `b` differ (one
/// ending before the other counts); `None` if they are equal or unreadable.
fn first_difference(a: &Path, b: &Path) -> Option<u64> {
    use std::io::Read as _;
    // Reads until `buf` is full or the file ends.
    fn fill(file: &mut std::fs::File, buf: &mut [u8]) -> Option<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..]).ok()? {
                0 => break,
                read => filled += read,
            }
        }
        Some(filled)
    }
    let (mut a, mut b) = (std::fs::File::open(a).ok()?, std::fs::File::open(b).ok()?);
    let (mut buf_a, mut buf_b) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    let mut offset = 0u64;
    loop {
        let (read_a, read_b) = (fill(&mut a, &mut buf_a)?, fill(&mut b, &mut buf_b)?);
        let common = read_a.min(read_b);
        if let Some(at) = buf_a[..common].iter().zip(&buf_b[..common]).position(|(x, y)| x != y) {
            return Some(offset + at as u64);
        }
        if read_a != read_b {
            return Some(offset + common as u64);
        }
        if read_a == 0 {
            return None;
        }
        offset += read_a as u64;
    }
}

fn differing_paths(first: &Ingested, second: &Ingested) -> Vec<String> {
    let (Some(a), Some(b)) = (&first.flat, &second.flat) else { return Vec::new() };
    let mut paths: Vec<String> =
        a.iter().filter(|(path, kind)| b.get(*path) != Some(kind)).map(|(path, _)| path.clone()).collect();
    paths.extend(b.keys().filter(|path| !a.contains_key(*path)).cloned());
    paths.sort();
    paths
}

/// Runs `work` while a second thread keeps asking the store to sync, so that
/// the disk writes what ingest has stored so far while ingest hashes the
/// rest, and the sync that makes the build durable afterwards has little
/// left to wait for. Errors of these early syncs are left to that last one.
/// Work done within the first interval never syncs early.
fn with_early_writeback<T>(store: &dyn Store, work: impl FnOnce() -> T) -> T {
    const INTERVAL: Duration = Duration::from_millis(10);
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let flusher = scope.spawn(|| {
            loop {
                std::thread::park_timeout(INTERVAL);
                if done.load(std::sync::atomic::Ordering::Acquire) || store.sync().is_err() {
                    return;
                }
            }
        });
        let result = work();
        done.store(true, std::sync::atomic::Ordering::Release);
        flusher.thread().unpark();
        result
    })
}
