//! `graven gc`: delete store content that no kept release needs.

use std::time::Duration;

use clap::Args;
use graven::release::gc::{DEFAULT_GRACE, DEFAULT_KEEP, GcOptions, collect_garbage};

use crate::error::CommandError;
use crate::settings::Settings;
use crate::ui;

/// Delete store content that no kept release needs
///
/// Keeps, for every app in the ledger: the artifacts of the newest N
/// releases of each environment, every environment's current release, and
/// builds newer than the app's newest release. Everything else in the store
/// is deleted. The ledger is never changed: a collected build stays listed
/// (marked "collected"), and rolling back to it says how to rebuild it.
/// Stopped midway, gc leaves every kept artifact whole.
///
/// With an S3 store (GRAVEN_STORE=s3://…), gc collects this machine's
/// local copy only: the bucket is append-only, and what is collected here
/// is fetched again when needed.
///
/// Build caches ([build] cache) and the layers kept for the next image
/// export or push are not store content, and stay unless --caches is
/// given; a cache a build, an export or a push is using is left alone.
///
/// Examples:
///   graven gc --dry-run
///   graven gc --keep 3
///   graven gc --caches       # also the build caches and image layers
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub(crate) struct GcArgs {
    /// Releases to keep per environment, newest first
    #[arg(long, value_name = "N", default_value_t = DEFAULT_KEEP)]
    keep: u64,

    /// Only show what would be deleted
    #[arg(long)]
    dry_run: bool,

    /// Keep anything stored less than this many seconds ago, so that a build
    /// in progress is never collected
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_GRACE.as_secs())]
    grace: u64,

    /// Also delete every app's build caches and the image layer cache: the
    /// next build of each downloads again what its caches held, the next
    /// export or push compresses its layers again
    #[arg(long)]
    caches: bool,

    /// Print the result as JSON on stdout
    #[arg(long)]
    json: bool,
}

pub(crate) fn cmd_gc(settings: &Settings, args: &GcArgs) -> Result<(), CommandError> {
    let ledger = settings.ledger()?;
    let ledger = &*ledger;
    let store = settings.store()?;
    let store = &*store;
    let options = GcOptions { keep: args.keep, grace: Duration::from_secs(args.grace), dry_run: args.dry_run };
    let mut on_wait = || ui::note("waiting for the builds in progress to finish: they may reuse what gc would delete");
    let report = collect_garbage(ledger, store, &options, &mut on_wait).map_err(|e| {
        CommandError::failed(e)
            .hint("nothing kept was touched; run graven verify on the builds you need, then gc again")
    })?;
    let caches = if args.caches {
        let caches = graven::build::remove_caches(&settings.home, args.dry_run).map_err(|e| {
            CommandError::failed(format!("could not delete the build caches: {e}"))
                .hint(format!("delete what is left of {} by hand", settings.home.caches_root().display()))
        })?;
        let dir = settings.home.image_cache_dir();
        let layers = graven::image::remove_cache(&dir, args.dry_run).map_err(|e| {
            CommandError::failed(format!("could not delete the image layer cache: {e}"))
                .hint(format!("delete what is left of {} by hand", dir.display()))
        })?;
        Some((caches, layers))
    } else {
        None
    };
    if args.json {
        #[derive(serde::Serialize)]
        struct Json {
            dry_run: bool,
            kept_artifacts: u64,
            artifacts: u64,
            listings: u64,
            blobs: u64,
            bytes: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            caches: Option<graven::build::CachesRemoved>,
            #[serde(skip_serializing_if = "Option::is_none")]
            image_layers: Option<graven::image::CacheRemoved>,
        }
        let (caches, image_layers) = caches.unzip();
        ui::out_json(&Json {
            dry_run: args.dry_run,
            kept_artifacts: report.kept_artifacts,
            artifacts: report.artifacts,
            listings: report.listings,
            blobs: report.blobs,
            bytes: report.bytes,
            caches,
            image_layers,
        });
        return Ok(());
    }
    let verb = if args.dry_run { "would delete" } else { "deleted" };
    ui::out(format!(
        "{verb} {}, {} and {}: {} {}; kept {}",
        ui::count_of(report.artifacts, "artifact"),
        ui::count_of(report.listings, "listing"),
        ui::count_of(report.blobs, "blob"),
        ui::bytes(report.bytes),
        if args.dry_run { "to free" } else { "freed" },
        ui::count_of(report.kept_artifacts, "artifact"),
    ));
    if let Some((caches, layers)) = caches {
        let freed = if args.dry_run { "to free" } else { "freed" };
        let apps = if caches.apps.is_empty() { "no app".to_owned() } else { caches.apps.join(", ") };
        ui::out(format!("{verb} the build caches of {apps}: {} {freed}", ui::bytes(caches.bytes)));
        if !caches.in_use.is_empty() {
            ui::note(format!("left the caches of {}: a build is using them", caches.in_use.join(", ")));
        }
        if layers.in_use {
            ui::note("left the image layer cache: an export or a push is using it");
        } else {
            ui::out(format!("{verb} the image layer cache: {} {freed}", ui::bytes(layers.bytes)));
        }
    }
    Ok(())
}
