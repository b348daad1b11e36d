//! Retention: `graven gc` deletes store content that no kept release needs.
//!
//! Kept, for every app in the ledger: the artifacts of the newest N releases
//! of each environment, every environment's current release, and builds
//! made after the app's newest released build (built, not yet released). Everything
//! those artifacts reach — their records, listings and blobs — stays; the
//! rest goes, records first, then listings, then blobs, so a collection cut
//! short never leaves a kept artifact incomplete. Nothing stored more
//! recently than the grace period is touched, and a collection waits for
//! builds in progress (each holds the store's lease until the ledger
//! records it), so a build that stores or reuses content the ledger does
//! not know of yet is safe. Ledger rows are never
//! deleted: a collected build stays listed, and `graven builds` marks it.

use std::collections::HashSet;
use std::time::Duration;

use crate::Digest;
use crate::ledger::{Ledger, LedgerError};
use crate::model::{Artifact, EntryKind, Listing};
use crate::store::ArtifactError;
use crate::store::{Area, ObjectKind, Store, StoreError};

/// What to keep.
#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    /// Releases kept per environment, newest first (the current one is
    /// always kept).
    pub keep: u64,
    /// Items stored more recently than this are kept whatever else holds.
    pub grace: Duration,
    /// Only report what would be removed.
    pub dry_run: bool,
}

/// The default number of releases kept per environment.
pub const DEFAULT_KEEP: u64 = 10;

/// The default grace period: an hour, longer than any reasonable build.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// What a collection removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Artifacts kept.
    pub kept_artifacts: u64,
    /// Artifact records removed.
    pub artifacts: u64,
    /// Listings removed.
    pub listings: u64,
    /// Blobs removed.
    pub blobs: u64,
    /// Bytes freed, temporary files of killed writers included.
    pub bytes: u64,
}

/// A collection that failed partway; what was removed stays removed, and
/// every kept artifact is whole.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A kept artifact could not be read: collecting now could delete what
    /// it needs, so nothing was removed.
    #[error("kept artifact {id} could not be read, so nothing was collected")]
    KeptArtifactUnreadable {
        /// The artifact.
        id: Digest,
        /// Why.
        #[source]
        source: Box<ArtifactError>,
    },
}

/// Collects what no kept release needs. Waits for builds in progress
/// first (`on_wait` is called if it must): a build may be reusing content
/// that no kept release needs yet.
pub fn collect_garbage(
    ledger: &dyn Ledger,
    store: &dyn Store,
    options: &GcOptions,
    on_wait: &mut dyn FnMut(),
) -> Result<GcReport, GcError> {
    // A shared store's bucket is append-only: what is collected is the
    // local store in front of it (for a local store, the store itself).
    let store: &dyn Store = store.local();
    let _lease = store.collect_lease(on_wait)?;
    let kept = kept_artifacts(ledger, options.keep)?;
    let mut live = Live::default();
    for id in &kept {
        if store.has_object(ObjectKind::Artifact, id)? {
            live.mark_artifact(store, id)?;
        }
    }
    let mut report = GcReport { kept_artifacts: kept.len() as u64, ..GcReport::default() };
    // Records first: an artifact whose record is gone is "collected", never
    // half there.
    for (area, live_set) in
        [(Area::Artifacts, &live.artifacts), (Area::Manifests, &live.listings), (Area::Blobs, &live.blobs)]
    {
        store.list(area, &mut |item| {
            if live_set.contains(&item.digest) || item.age < options.grace {
                return Ok(());
            }
            if !options.dry_run {
                store.remove(area, &item.digest)?;
                crate::fail_point::check("gc-after-a-removal");
            }
            report.bytes += item.size;
            match area {
                Area::Artifacts => report.artifacts += 1,
                Area::Manifests => report.listings += 1,
                Area::Blobs => report.blobs += 1,
            }
            Ok(())
        })?;
    }
    if !options.dry_run {
        report.bytes += store.remove_abandoned(options.grace)?;
    }
    Ok(report)
}

/// The artifacts every app of the ledger keeps.
fn kept_artifacts(ledger: &dyn Ledger, keep: u64) -> Result<HashSet<Digest>, LedgerError> {
    let mut kept = HashSet::new();
    for app in ledger.apps()? {
        let mut released = HashSet::new();
        for env in ledger.environments(&app)? {
            let releases = ledger.releases(&app, &env, None)?;
            released.extend(releases.iter().map(|release| release.artifact));
            // The newest `keep` releases (newest first), and always the
            // current one.
            let newest = usize::try_from(keep.max(1)).unwrap_or(usize::MAX);
            kept.extend(releases.iter().take(newest).map(|release| release.artifact));
        }
        // Builds made after the newest released build: built, not yet
        // released. Ledger order, not clock time, decides "after".
        let builds = ledger.builds(&app)?;
        let newest_released = builds.iter().filter(|b| released.contains(&b.build.artifact)).map(|b| b.seq).max();
        for build in &builds {
            if newest_released.is_none_or(|newest| build.seq > newest) {
                kept.insert(build.build.artifact);
            }
        }
    }
    Ok(kept)
}

/// Everything the kept artifacts reach.
#[derive(Default)]
struct Live {
    artifacts: HashSet<Digest>,
    listings: HashSet<Digest>,
    blobs: HashSet<Digest>,
}

impl Live {
    fn mark_artifact(&mut self, store: &dyn Store, id: &Digest) -> Result<(), GcError> {
        let unreadable = |source| GcError::KeptArtifactUnreadable { id: *id, source: Box::new(source) };
        let artifact = Artifact::load(store, id).map_err(unreadable)?;
        self.artifacts.insert(*id);
        let mut pending = vec![(artifact.root, String::new())];
        while let Some((tree, path)) = pending.pop() {
            if !self.listings.insert(tree) {
                continue;
            }
            let listing = Listing::load(store, &tree, &path)
                .map_err(|source| unreadable(ArtifactError::Tree { id: *id, source: Box::new(source) }))?;
            for entry in listing.entries {
                match entry.kind {
                    EntryKind::File { digest, .. } => {
                        self.blobs.insert(digest);
                    }
                    EntryKind::Dir { tree } => {
                        pending
                            .push((tree, if path.is_empty() { entry.name } else { format!("{path}/{}", entry.name) }));
                    }
                    EntryKind::Symlink { .. } => {}
                }
            }
        }
        Ok(())
    }
}
