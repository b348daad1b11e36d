//! `graven build`: one commit into one artifact.

use std::sync::Mutex;

use clap::Args;
use graven::build::{BuildEvent, BuildObserver, BuildRequest};
use indicatif::ProgressBar;

use crate::error::CommandError;
use crate::output::BuildJson;
use crate::settings::{Settings, host};
use crate::ui::{self, Ui};

/// Build a commit into an immutable, content-addressed artifact
///
/// graven exports the commit into a fresh directory (no .git, no untracked
/// files), runs graven.toml's [build] command there with a scrubbed
/// environment (PATH, HOME, LANG, TMPDIR, SOURCE_DATE_EPOCH, GRAVEN_COMMIT and
/// what [build] env and pass_env name: no runtime config), and stores the
/// output as an artifact. Building a commit that was already built with the
/// same recipe reuses that artifact.
///
/// The command runs in a sandbox (bubblewrap): the export is at /app, its
/// working directory and the only writable place besides a private /tmp;
/// HOME is /tmp/home; the rest of the machine is visible read-only, so
/// toolchains work. No path of this machine reaches the build, so the same
/// commit gives the same artifact on every machine. [build] network = false
/// takes its network away.
///
/// [build] cache (a list, like ~/.cache/pip and ~/.npm) keeps those
/// directories of the sandbox's HOME (or of /tmp) from build to build, in the graven home
/// (cache/<app>/), outside /app: package downloads are reused, and never
/// reach the artifact. One build of an app uses its caches at a time.
/// `graven gc --caches` deletes them.
///
/// Examples:
///   graven build                 # HEAD
///   graven build v1.4.2 --json   # a tag, output for scripts
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub(crate) struct BuildArgs {
    /// The commit to build: a hash, branch or tag
    #[arg(default_value = "HEAD")]
    rev: String,

    /// Build the working tree with its uncommitted changes; the build is
    /// marked dirty for good
    #[arg(long)]
    allow_dirty: bool,

    /// Build again even if this commit and recipe were built before
    ///
    /// Also re-hashes every blob and listing the store already holds for
    /// this build and stores again any that `graven verify` would call
    /// corrupted: the way to repair a damaged artifact.
    #[arg(long)]
    force: bool,

    /// Build twice in two directories and fail if the outputs differ
    #[arg(long)]
    check_reproducible: bool,

    /// Run the build command on the host, not in the sandbox at /app
    ///
    /// For machines that cannot make namespaces. The build can then write
    /// anywhere the user can, and see its host paths; it is marked
    /// unsandboxed for good, and never reused for a sandboxed build.
    #[arg(long)]
    no_sandbox: bool,

    /// Leave the build caches ([build] cache) out: the build starts from
    /// an empty HOME, as on a new machine
    #[arg(long)]
    no_cache: bool,

    /// Print the result as JSON on stdout
    #[arg(long)]
    json: bool,
}

pub(crate) fn cmd_build(settings: &Settings, args: &BuildArgs) -> Result<(), CommandError> {
    let ui = Ui::new();
    let repo = settings.repo()?;
    let ledger = settings.ledger()?;
    let ledger = &*ledger;
    let store = settings.store()?;
    let store = &*store;
    let author = settings.author();
    let host = host();
    let request = BuildRequest {
        repo,
        home: &settings.home,
        rev: &args.rev,
        app: settings.app_flag.as_deref(),
        allow_dirty: args.allow_dirty,
        force: args.force,
        check_reproducible: args.check_reproducible,
        sandbox: !args.no_sandbox,
        cache: !args.no_cache,
        author: &author,
        host: &host,
    };
    let observer = Observer { ui: &ui, bar: Mutex::new(None) };
    let result = graven::build::build(&request, store, ledger, &observer);
    observer.finish();
    let outcome = result?;

    let record = &outcome.record;
    if args.json {
        let mut json = BuildJson::new(record);
        json.reused = outcome.reused;
        let millis = u64::try_from(outcome.duration.as_millis()).unwrap_or(u64::MAX);
        if outcome.reused {
            // This run stored nothing and ran nothing.
            json.new_bytes = 0;
            json.duration_ms = millis;
            json.build_command_ms = 0;
            json.ingest_ms = 0;
        }
        json.new_manifest_bytes = Some(outcome.new_manifest_bytes);
        json.upload = settings.shared_store().map(|_| outcome.upload);
        json.host_references = Some(crate::output::HostReference::all(&outcome.host_references));
        ui::out_json(&json);
        return Ok(());
    }
    let build = &record.build;
    let dirty = match (build.dirty, build.sandboxed) {
        (false, true) => "",
        (true, true) => " (dirty)",
        (false, false) => " (unsandboxed)",
        (true, false) => " (dirty, unsandboxed)",
    };
    if outcome.reused {
        ui::out(format!(
            "reused {} from {}{dirty}: built {} by {}; --force builds again",
            build.artifact.short(),
            ui::short_commit(&build.commit),
            ui::age(&build.finished_at),
            build.author
        ));
    } else {
        ui::out(format!(
            "built {} from {}{dirty} — {}, {}, {} new",
            build.artifact.short(),
            ui::short_commit(&build.commit),
            ui::count_of(build.files, "file"),
            ui::bytes(build.bytes),
            ui::bytes(build.new_bytes)
        ));
    }
    if let Some((path, target)) = outcome.host_references.first() {
        let n = outcome.host_references.len() as u64;
        ui::out(format!(
            "{} leading out of /app (like {path} -> {target}): the machine that runs it must have {}; graven builds show lists {}",
            ui::count_of(n, "host reference"),
            if n == 1 { "it" } else { "them" },
            if n == 1 { "it" } else { "them" },
        ));
    }
    if let Some(url) = settings.shared_store() {
        let upload = &outcome.upload;
        if upload.objects == 0 {
            ui::out(format!("{url} already has it ({})", ui::count_of(upload.requests, "request")));
        } else {
            ui::out(format!(
                "sent {}, {}, to {url} in {}",
                ui::count_of(upload.objects, "object"),
                ui::bytes(upload.bytes),
                ui::count_of(upload.requests, "request")
            ));
        }
    }
    Ok(())
}

/// Shows build progress: the command's output prefixed, a progress bar
/// during ingest.
struct Observer<'a> {
    ui: &'a Ui,
    bar: Mutex<Option<ProgressBar>>,
}

impl Observer<'_> {
    fn finish(&self) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            bar.finish_and_clear();
        }
    }
}

impl BuildObserver for Observer<'_> {
    fn on_event(&self, event: &BuildEvent<'_>) {
        match event {
            BuildEvent::Exporting { source } => {
                let source = if source.len() == 40 { ui::short_commit(source) } else { source };
                ui::note(format!("exporting {source}"));
            }
            BuildEvent::CommandStarted { command } => ui::note(format!("running `{command}`")),
            BuildEvent::Output { line } => ui::note(format!("  build | {line}")),
            BuildEvent::SandboxRetry { why } => ui::note(format!(
                "note: bwrap could not make the sandbox ({why}): the machine's mounts changed while it copied them; the command did not start, and starts again in a new one"
            )),
            BuildEvent::SecondBuild => ui::note("building again to check that the build is reproducible"),
            BuildEvent::CacheWait { app } => {
                ui::note(format!("waiting for another build of {app} to finish with the build caches"));
            }
            BuildEvent::CachesUnused => {
                ui::note(
                    "note: [build] cache is mounted by the sandbox: this build without it runs without the caches",
                );
            }
            BuildEvent::IngestStarted { files, bytes } => {
                self.finish();
                ui::note(format!("storing {}, {}", ui::count_of(*files, "file"), ui::bytes(*bytes)));
                *self.bar.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(self.ui.byte_progress("ingest", *bytes));
            }
            BuildEvent::Publishing => self.finish(),
            BuildEvent::EmbeddedPath { path, files, count } => {
                self.finish();
                ui::note(format!(
                    "warning: {} {} {path}, a path of the build that will not exist when it runs (the tree is at /app then):",
                    ui::count_of(*count as u64, "file"),
                    if *count == 1 { "holds" } else { "hold" }
                ));
                for file in *files {
                    ui::note(format!("  {file}"));
                }
                if *count > files.len() {
                    ui::note(format!("  … and {} more", count - files.len()));
                }
            }
            BuildEvent::IngestProgress { bytes } => {
                if let Some(bar) = self.bar.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref() {
                    bar.set_position(*bytes);
                }
            }
        }
    }
}
