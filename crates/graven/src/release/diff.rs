//! Comparing two releases (`graven diff`): the files their artifacts differ
//! in, the config keys their config versions differ in, and whether a
//! release phase ran between them.
//!
//! The file comparison walks the two manifests side by side and never opens
//! a subtree whose digest is the same on both sides: that is what the
//! Merkle tree is for, and it keeps a diff of two large, nearly equal
//! artifacts proportional to what changed. This module only compares; it
//! never reads blobs, and it never writes.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::ReleaseError;
use crate::Digest;
use crate::ledger::Ledger;
use crate::model::{Artifact, ConfigVersion, EntryKind, Listing, Release};
use crate::store::ManifestError;
use crate::store::{ObjectKind, Store};

/// How two trees differ, path by path. Paths are relative, `/`-separated
/// and sorted. A path is a file, a symlink, or an empty directory (shown
/// with a trailing `/`, so that two differing trees never compare empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeDiff {
    /// Paths only the newer tree has.
    pub added: Vec<String>,
    /// Paths only the older tree has.
    pub removed: Vec<String>,
    /// Paths both have, with other contents, mode or kind.
    pub changed: Vec<String>,
}

impl TreeDiff {
    /// Whether the trees hold the same files.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Compares the tree rooted at listing `old` with the one at `new`.
///
/// A file whose contents, executable bit or kind (file, symlink) differ is
/// changed, as is a symlink whose target differs. A directory that only one
/// side has contributes every path below it; a path that is a directory on
/// one side and not on the other is removed on one side and added on the
/// other. Identical subtrees are skipped without being read.
pub fn diff_trees(store: &dyn Store, old: &Digest, new: &Digest) -> Result<TreeDiff, ManifestError> {
    let mut diff = TreeDiff::default();
    diff_dirs(store, old, new, "", &mut diff)?;
    diff.added.sort();
    diff.removed.sort();
    diff.changed.sort();
    Ok(diff)
}

fn diff_dirs(
    store: &dyn Store,
    old: &Digest,
    new: &Digest,
    prefix: &str,
    diff: &mut TreeDiff,
) -> Result<(), ManifestError> {
    if old == new {
        return Ok(());
    }
    // Listings are validated on load: sorted by name, each name once.
    let old = Listing::load(store, old, prefix)?.entries;
    let new = Listing::load(store, new, prefix)?.entries;
    let (mut old_entries, mut new_entries) = (old.iter().peekable(), new.iter().peekable());
    loop {
        let order = match (old_entries.peek(), new_entries.peek()) {
            (None, None) => return Ok(()),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(o), Some(n)) => o.name.cmp(&n.name),
        };
        match order {
            Ordering::Less => {
                let entry = old_entries.next().expect("peeked");
                everything_below(store, &join(prefix, &entry.name), &entry.kind, &mut diff.removed)?;
            }
            Ordering::Greater => {
                let entry = new_entries.next().expect("peeked");
                everything_below(store, &join(prefix, &entry.name), &entry.kind, &mut diff.added)?;
            }
            Ordering::Equal => {
                let (o, n) = (old_entries.next().expect("peeked"), new_entries.next().expect("peeked"));
                let path = join(prefix, &o.name);
                match (&o.kind, &n.kind) {
                    (EntryKind::Dir { tree: old_tree }, EntryKind::Dir { tree: new_tree }) => {
                        diff_dirs(store, old_tree, new_tree, &path, diff)?;
                    }
                    (EntryKind::Dir { .. }, _) | (_, EntryKind::Dir { .. }) => {
                        everything_below(store, &path, &o.kind, &mut diff.removed)?;
                        everything_below(store, &path, &n.kind, &mut diff.added)?;
                    }
                    (old_kind, new_kind) => {
                        if old_kind != new_kind {
                            diff.changed.push(path);
                        }
                    }
                }
            }
        }
    }
}

/// Adds `path` to `out`, or, for a directory, every path below it.
fn everything_below(
    store: &dyn Store,
    path: &str,
    kind: &EntryKind,
    out: &mut Vec<String>,
) -> Result<(), ManifestError> {
    let EntryKind::Dir { tree } = kind else {
        out.push(path.to_owned());
        return Ok(());
    };
    let listing = Listing::load(store, tree, path)?;
    if listing.entries.is_empty() {
        out.push(format!("{path}/"));
    }
    for entry in &listing.entries {
        everything_below(store, &join(path, &entry.name), &entry.kind, out)?;
    }
    Ok(())
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_owned() } else { format!("{prefix}/{name}") }
}

/// How two config versions differ, by key (sorted). Values are not part of
/// it: whoever shows them decides what to mask.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// Keys only the newer version has.
    pub added: Vec<String>,
    /// Keys only the older version has.
    pub removed: Vec<String>,
    /// Keys both have, with another value or another secret mark.
    pub changed: Vec<String>,
}

impl ConfigDiff {
    /// Whether the two versions set the same variables the same way.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Compares config version `old` with `new`.
pub fn diff_configs(old: &ConfigVersion, new: &ConfigVersion) -> ConfigDiff {
    let mut diff = ConfigDiff::default();
    for (key, value) in &old.vars {
        match new.vars.get(key) {
            None => diff.removed.push(key.clone()),
            Some(new_value) if new_value != value || old.secret.contains(key) != new.secret.contains(key) => {
                diff.changed.push(key.clone());
            }
            Some(_) => {}
        }
    }
    diff.added = new.vars.keys().filter(|key| !old.vars.contains_key(*key)).cloned().collect();
    diff
}

/// Where a release phase ran between two releases.
///
/// A runner runs a release phase once per release it rolls out whose
/// artifact's Procfile has a [`RELEASE_PHASE`](crate::app::RELEASE_PHASE)
/// process, a config change and a rollback included (Heroku's rule), not
/// when it only scales or restarts; and not for a release that a newer one
/// superseded before the runner got to it. So what counts is what the
/// ledger recorded: each runner (and `graven kube apply`) records a release
/// phase before it starts it.
///
/// Releases counted are those of the newer release's environment after the
/// older release, up to and including the newer one. The newer is the one
/// with the larger number when both are in one environment, else the one
/// created later (of two created in the same second, the second argument);
/// "after the older" then means created at the same second or later:
/// timestamps have one-second precision, and of a tie, the release phase
/// that may have run after the older release is the one worth showing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleasePhase {
    /// The environment the releases below are in.
    pub env: String,
    /// The releases whose release phase ran (started, on some runner or
    /// cluster), by number, ascending.
    pub ran_in: Vec<u64>,
    /// The releases with a release phase that never ran: no runner rolled
    /// them out (a newer release superseded them, or none runs yet).
    pub not_run: Vec<u64>,
    /// The releases whose release phase may have run: made before graven
    /// recorded release phases, with one in their artifact or with their
    /// artifact's record no longer in the store (collected).
    pub unknown: Vec<u64>,
}

impl ReleasePhase {
    /// Whether a release phase ran between the two releases.
    pub fn ran(&self) -> bool {
        !self.ran_in.is_empty()
    }
}

/// Finds where a release phase ran between releases `a` and `b`, in
/// either order (see [`ReleasePhase`]).
pub fn release_phase_between(
    ledger: &dyn Ledger,
    store: &dyn Store,
    a: &Release,
    b: &Release,
) -> Result<ReleasePhase, ReleaseError> {
    let same_env = a.app == b.app && a.env == b.env;
    let (older, newer) = if same_env {
        if a.number <= b.number { (a, b) } else { (b, a) }
    } else if a.created_at <= b.created_at {
        (a, b)
    } else {
        (b, a)
    };
    let mut phase = ReleasePhase { env: newer.env.clone(), ..ReleasePhase::default() };
    if same_env && older.number == newer.number {
        return Ok(phase);
    }
    // Newest first. In one environment, the newest N - older + 1 releases
    // reach back to the older one, the parent of the first counted.
    let limit = if same_env {
        let newest = ledger.current_release(&newer.app, &newer.env)?.as_ref().map_or(newer.number, |r| r.number);
        Some(newest.saturating_sub(older.number) + 1)
    } else {
        None
    };
    let releases = ledger.releases(&newer.app, &newer.env, limit)?;
    let counted: Vec<&Release> = releases
        .iter()
        .rev()
        .filter(|r| {
            r.number <= newer.number
                && if same_env { r.number > older.number } else { r.created_at.as_str() >= older.created_at.as_str() }
        })
        .collect();
    let (Some(first), Some(last)) = (counted.first(), counted.last()) else {
        return Ok(phase);
    };
    let runs = ledger.release_phase_runs(&newer.app, &newer.env, first.number..=last.number)?;
    let mut has_release_process: BTreeMap<Digest, Option<bool>> = BTreeMap::new();
    for release in counted {
        if runs.started.contains(&release.number) {
            phase.ran_in.push(release.number);
            continue;
        }
        let known = if let Some(known) = has_release_process.get(&release.artifact) {
            *known
        } else {
            let known = release_process_of(store, &release.artifact)?;
            has_release_process.insert(release.artifact, known);
            known
        };
        match (runs.knows(release.number), known) {
            (_, Some(false)) | (true, None) => {}
            (true, Some(true)) => phase.not_run.push(release.number),
            (false, _) => phase.unknown.push(release.number),
        }
    }
    Ok(phase)
}

/// Whether artifact `id` has a release process; `None` if its record is
/// not in the store.
fn release_process_of(store: &dyn Store, id: &Digest) -> Result<Option<bool>, ReleaseError> {
    if !store.has_object(ObjectKind::Artifact, id)? {
        return Ok(None);
    }
    let artifact = super::load_artifact(store, id)?;
    Ok(Some(artifact.process_types.contains_key(crate::app::RELEASE_PHASE)))
}

/// Everything `graven diff` shows about two releases.
#[derive(Debug, Clone)]
pub struct ReleaseDiff {
    /// The first release's config version.
    pub from_config: ConfigVersion,
    /// The second release's config version.
    pub to_config: ConfigVersion,
    /// The files, from the first release's artifact to the second's.
    pub files: TreeDiff,
    /// The config keys, from the first release's config to the second's.
    pub config: ConfigDiff,
    /// Where a release phase ran between them.
    pub release_phase: ReleasePhase,
}

/// Compares release `from` with release `to` (of one environment or two).
/// Both artifacts must be in the store, unless they are the same.
pub fn diff_releases(
    ledger: &dyn Ledger,
    store: &dyn Store,
    from: &Release,
    to: &Release,
) -> Result<ReleaseDiff, ReleaseError> {
    let from_config = super::config_of(ledger, from)?;
    let to_config = super::config_of(ledger, to)?;
    let files = if from.artifact == to.artifact {
        TreeDiff::default()
    } else {
        let old = load_artifact(store, from)?;
        let new = load_artifact(store, to)?;
        diff_trees(store, &old.root, &new.root).map_err(|source| ReleaseError::Compare {
            from: from.artifact,
            to: to.artifact,
            source: Box::new(source),
        })?
    };
    let config = diff_configs(&from_config, &to_config);
    let release_phase = release_phase_between(ledger, store, from, to)?;
    Ok(ReleaseDiff { from_config, to_config, files, config, release_phase })
}

fn load_artifact(store: &dyn Store, release: &Release) -> Result<Artifact, ReleaseError> {
    super::require_artifact(store, &release.artifact, &release.commit)?;
    // Listings only: a comparison reads no file.
    store.fetch_listings(&release.artifact)?;
    super::artifact_of(store, release)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::app::RunSettings;
    use crate::ledger::SqliteLedger;
    use crate::model::{ARTIFACT_FORMAT, BuildRecord, Entry, NewBuild};
    use crate::release::{ConfigChange, Stage};
    use crate::store::LocalStore;

    fn store() -> (tempfile::TempDir, LocalStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(&dir.path().join("store")).unwrap();
        (dir, store)
    }

    fn file(name: &str, contents: &str) -> Entry {
        Entry {
            name: name.to_owned(),
            kind: EntryKind::File {
                executable: false,
                size: contents.len() as u64,
                digest: Digest::of(contents.as_bytes()),
            },
        }
    }

    fn executable(name: &str, contents: &str) -> Entry {
        let mut entry = file(name, contents);
        if let EntryKind::File { executable, .. } = &mut entry.kind {
            *executable = true;
        }
        entry
    }

    fn symlink(name: &str, target: &str) -> Entry {
        Entry { name: name.to_owned(), kind: EntryKind::Symlink { target: target.to_owned() } }
    }

    fn dir(name: &str, tree: Digest) -> Entry {
        Entry { name: name.to_owned(), kind: EntryKind::Dir { tree } }
    }

    /// Stores a listing (entries in any order: it is sorted first, as the
    /// format requires) and returns its digest.
    fn put(store: &LocalStore, mut entries: Vec<Entry>) -> Digest {
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let bytes = Listing { entries }.to_canonical_json();
        let digest = Digest::of(&bytes);
        store.put_object(ObjectKind::Manifest, &digest, &bytes).unwrap();
        digest
    }

    fn paths(paths: &[&str]) -> Vec<String> {
        paths.iter().map(|p| (*p).to_owned()).collect()
    }

    #[test]
    fn identical_trees_are_not_read() {
        let (_dir, store) = store();
        let absent = Digest::of(b"a listing that is not in the store");
        assert_eq!(diff_trees(&store, &absent, &absent).unwrap(), TreeDiff::default());
    }

    #[test]
    fn identical_subtrees_are_skipped() {
        let (_dir, store) = store();
        // Neither side's vendor/ listing is in the store: reading it would fail.
        let vendor = Digest::of(b"vendor listing, never stored");
        let old = put(&store, vec![dir("vendor", vendor), file("app.py", "v1")]);
        let new = put(&store, vec![dir("vendor", vendor), file("app.py", "v2")]);
        let diff = diff_trees(&store, &old, &new).unwrap();
        assert_eq!(diff, TreeDiff { changed: paths(&["app.py"]), ..TreeDiff::default() });

        let missing_new = put(&store, vec![dir("vendor", Digest::of(b"another, never stored"))]);
        let error = diff_trees(&store, &old, &missing_new).unwrap_err().to_string();
        assert!(error.contains("is missing from the store"), "a differing subtree is read: {error}");
    }

    #[test]
    fn reports_added_removed_and_changed_paths_sorted() {
        let (_dir, store) = store();
        let old_lib = put(&store, vec![file("a.py", "a"), file("b.py", "b"), file("gone.py", "x")]);
        let old_docs = put(&store, vec![file("one.md", "1"), dir("deep", put(&store, vec![file("two.md", "2")]))]);
        let old = put(
            &store,
            vec![
                dir("lib", old_lib),
                dir("docs", old_docs),
                file("Procfile", "web: ./serve"),
                file("serve", "#!/bin/sh"),
                symlink("current", "lib"),
                file("kind", "a file"),
                file("becomes-dir", "a file"),
                dir("becomes-file", put(&store, vec![file("inner", "i")])),
                file("same", "same"),
            ],
        );
        let new_lib = put(&store, vec![file("a.py", "a"), file("b.py", "B"), file("new.py", "n")]);
        let new = put(
            &store,
            vec![
                dir("lib", new_lib),
                dir("static", put(&store, vec![file("app.css", "c"), dir("empty", put(&store, vec![]))])),
                file("Procfile", "web: ./serve"),
                executable("serve", "#!/bin/sh"),
                symlink("current", "lib/"),
                symlink("kind", "a file"),
                dir("becomes-dir", put(&store, vec![file("x", "x")])),
                file("becomes-file", "f"),
                file("same", "same"),
                file("a.txt", "sorts before a/ as a string"),
            ],
        );
        let diff = diff_trees(&store, &old, &new).unwrap();
        assert_eq!(
            diff,
            TreeDiff {
                added: paths(&[
                    "a.txt",
                    "becomes-dir/x",
                    "becomes-file",
                    "lib/new.py",
                    "static/app.css",
                    "static/empty/",
                ]),
                removed: paths(&[
                    "becomes-dir",
                    "becomes-file/inner",
                    "docs/deep/two.md",
                    "docs/one.md",
                    "lib/gone.py"
                ]),
                changed: paths(&["current", "kind", "lib/b.py", "serve"]),
            }
        );
        let back = diff_trees(&store, &new, &old).unwrap();
        assert_eq!((back.added, back.removed, back.changed), (diff.removed, diff.added, diff.changed));
    }

    fn config(vars: &[(&str, &str)], secret: &[&str]) -> ConfigVersion {
        let mut config = ConfigVersion {
            id: Digest::of(b""),
            app: "hello".to_owned(),
            env: "production".to_owned(),
            number: 1,
            parent: None,
            vars: vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            secret: secret.iter().map(|k| (*k).to_owned()).collect::<BTreeSet<_>>(),
            author: "dev@example.com".to_owned(),
            created_at: "2026-11-27T12:00:00Z".to_owned(),
            description: "Set".to_owned(),
        };
        config.id = config.computed_id();
        config
    }

    #[test]
    fn config_keys_added_removed_and_changed() {
        let old = config(&[("PORT", "80"), ("DEBUG", "1"), ("TOKEN", "abc"), ("KEY", "k"), ("SAME", "s")], &["TOKEN"]);
        let new =
            config(&[("PORT", "8080"), ("TOKEN", "xyz"), ("KEY", "k"), ("SAME", "s"), ("NEW", "n")], &["TOKEN", "KEY"]);
        assert_eq!(
            diff_configs(&old, &new),
            ConfigDiff {
                added: paths(&["NEW"]),
                removed: paths(&["DEBUG"]),
                changed: paths(&["KEY", "PORT", "TOKEN"])
            }
        );
        assert!(diff_configs(&new, &new).is_empty());
    }

    struct Env {
        dir: tempfile::TempDir,
        store: LocalStore,
        ledger: SqliteLedger,
    }

    impl Env {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let store = LocalStore::open(&dir.path().join("store")).unwrap();
            let ledger = SqliteLedger::open(&dir.path().join("ledger.sqlite")).unwrap();
            Self { dir, store, ledger }
        }

        fn stage(&self) -> Stage<'_> {
            Stage { ledger: &self.ledger, store: &self.store, app: "hello", author: "dev@example.com", host: "laptop" }
        }

        /// An artifact with one file, `version`, and a release process if
        /// `migrates`; returns its build.
        fn artifact(&self, version: &str, migrates: bool) -> BuildRecord {
            let root = put(&self.store, vec![file("version", version)]);
            let blob = self.dir.path().join(format!("blob-{version}"));
            std::fs::write(&blob, version).unwrap();
            self.store.local().put_blob(&Digest::of(version.as_bytes()), &blob, crate::store::Handover::Copy).unwrap();
            let mut process_types = BTreeMap::from([("web".to_owned(), "./serve".to_owned())]);
            if migrates {
                process_types.insert(crate::app::RELEASE_PHASE.to_owned(), "./migrate".to_owned());
            }
            let artifact = Artifact {
                format: ARTIFACT_FORMAT,
                image: crate::app::ImageSettings::default(),
                process_types,
                root,
                run: RunSettings::default(),
            };
            let bytes = artifact.to_canonical_json();
            self.store.put_object(ObjectKind::Artifact, &artifact.id(), &bytes).unwrap();
            BuildRecord {
                seq: 1,
                build: NewBuild {
                    app: "hello".to_owned(),
                    artifact: artifact.id(),
                    commit: format!("{version:0>40}"),
                    dirty: false,
                    sandboxed: true,
                    recipe: Digest::of(b"recipe"),
                    author: "dev@example.com".to_owned(),
                    host: "host".to_owned(),
                    started_at: String::new(),
                    finished_at: String::new(),
                    files: 1,
                    bytes: 1,
                    new_bytes: 0,
                    duration_ms: 0,
                    build_command_ms: 0,
                    ingest_ms: 0,
                    log: String::new(),
                },
            }
        }

        fn release(&self, env: &str, number: u64) -> Release {
            self.ledger.release("hello", env, number).unwrap().unwrap()
        }

        fn phase(&self, env: &str, a: u64, b: u64) -> Vec<u64> {
            self.phases(env, a, b).ran_in
        }

        fn phases(&self, env: &str, a: u64, b: u64) -> ReleasePhase {
            release_phase_between(&self.ledger, &self.store, &self.release(env, a), &self.release(env, b)).unwrap()
        }

        /// Records a release phase run, as a runner does before it starts one.
        fn ran(&self, env: &str, numbers: &[u64]) {
            for &number in numbers {
                let run = crate::model::ReleasePhaseRun {
                    app: "hello".to_owned(),
                    env: env.to_owned(),
                    number,
                    host: "web-1".to_owned(),
                    home: "/srv/graven".to_owned(),
                    started_at: "2026-01-01T00:00:00Z".to_owned(),
                };
                self.ledger.record_release_phase(&run).unwrap();
            }
        }
    }

    /// A config change: `PORT=80`.
    fn set_port() -> ConfigChange {
        ConfigChange { set: vec![("PORT".to_owned(), "80".to_owned())], ..ConfigChange::default() }
    }

    #[test]
    fn a_release_phase_counts_where_a_runner_ran_it() {
        let env = Env::new();
        let stage = env.stage();
        let plain = env.artifact("1", false);
        let migrating = env.artifact("2", true);
        let set = set_port();
        stage.deploy("production", &plain, None).unwrap(); // v1
        stage.deploy("production", &migrating, None).unwrap(); // v2: migrates
        stage.change_config("production", &set).unwrap(); // v3: same artifact, migrates again
        stage.rollback("production", Some(1)).unwrap(); // v4: the plain artifact
        stage.rollback("production", Some(3)).unwrap(); // v5: migrates again
        env.ran("production", &[2, 3, 5]);

        assert_eq!(env.phase("production", 1, 2), [2]);
        assert_eq!(env.phase("production", 2, 1), [2], "either order");
        assert_eq!(env.phase("production", 2, 3), [3], "a config change runs it, as the runner does");
        assert_eq!(env.phase("production", 3, 4), Vec::<u64>::new(), "the plain artifact has none");
        assert_eq!(env.phase("production", 3, 5), [5]);
        assert_eq!(env.phase("production", 1, 5), [2, 3, 5]);
        assert_eq!(env.phase("production", 3, 3), Vec::<u64>::new(), "nothing between a release and itself");

        let diff = diff_releases(&env.ledger, &env.store, &env.release("production", 1), &env.release("production", 3))
            .unwrap();
        assert_eq!(diff.files.changed, paths(&["version"]));
        assert_eq!(diff.config.added, paths(&["PORT"]));
        assert!(diff.release_phase.ran());
    }

    #[test]
    fn a_release_superseded_before_it_rolled_out_did_not_run_its_phase() {
        let env = Env::new();
        let stage = env.stage();
        let plain = env.artifact("1", false);
        let migrating = env.artifact("2", true);
        let set = set_port();
        stage.deploy("production", &plain, None).unwrap(); // v1
        stage.deploy("production", &migrating, None).unwrap(); // v2: superseded at once
        stage.change_config("production", &set).unwrap(); // v3: what the runner rolled out
        env.ran("production", &[3]);
        let phase = env.phases("production", 1, 3);
        assert_eq!((phase.ran_in, phase.not_run, phase.unknown), (vec![3], vec![2], vec![]));
        let phase = env.phases("production", 1, 2);
        assert_eq!((phase.ran_in, phase.not_run), (vec![], vec![2]), "v2's own phase did not run");
        // Run later (the runner was down), it counts.
        env.ran("production", &[2]);
        assert_eq!(env.phase("production", 1, 3), [2, 3]);
    }

    #[test]
    fn across_environments_the_newer_environment_is_counted() {
        let env = Env::new();
        let stage = env.stage();
        let migrating = env.artifact("2", true);
        stage.deploy("staging", &migrating, None).unwrap(); // staging v1
        stage.promote("staging", "production").unwrap(); // production v1, created later (or at once)
        env.ran("production", &[1]);
        let staging = env.release("staging", 1);
        let production = env.release("production", 1);
        let phase = release_phase_between(&env.ledger, &env.store, &staging, &production).unwrap();
        assert_eq!((phase.env.as_str(), phase.ran_in.as_slice()), ("production", &[1][..]));
        // Made in one second, the second argument counts as the newer.
        let back = release_phase_between(&env.ledger, &env.store, &production, &staging).unwrap();
        assert_eq!((back.env.as_str(), back.not_run.as_slice()), ("staging", &[1][..]), "no runner ran staging's");

        let diff = diff_releases(&env.ledger, &env.store, &staging, &production).unwrap();
        assert!(diff.files.is_empty(), "promotion deploys the same artifact");
    }

    #[test]
    fn a_release_made_before_runs_were_recorded_may_have_run_its_phase() {
        let mut env = Env::new();
        let plain = env.artifact("1", false);
        let migrating = env.artifact("2", true);
        env.stage().deploy("production", &plain, None).unwrap(); // v1
        env.stage().deploy("production", &migrating, None).unwrap(); // v2
        // As a ledger an older graven made, then migrated.
        let path = env.dir.path().join("ledger.sqlite");
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection
            .execute_batch(
                "DROP TABLE release_phase_runs; DROP TABLE release_phase_runs_recorded_from; PRAGMA user_version = 9",
            )
            .unwrap();
        env.ledger = SqliteLedger::open(&path).unwrap();
        env.stage().deploy("production", &migrating, None).unwrap(); // v3: not run yet
        let phase = env.phases("production", 1, 3);
        assert_eq!((phase.ran_in, phase.not_run, phase.unknown), (vec![], vec![3], vec![2]));
    }

    #[test]
    fn a_collected_artifact_needs_no_record_to_know_its_release_phase() {
        let env = Env::new();
        let stage = env.stage();
        let first = env.artifact("1", false);
        let second = env.artifact("2", true);
        stage.deploy("production", &first, None).unwrap();
        stage.deploy("production", &second, None).unwrap();
        let path = env.store.object_path(ObjectKind::Artifact, &second.build.artifact);
        std::fs::remove_file(path).unwrap();
        let phase = release_phase_between(
            &env.ledger,
            &env.store,
            &env.release("production", 1),
            &env.release("production", 2),
        )
        .unwrap();
        assert_eq!((phase.ran_in, phase.not_run, phase.unknown), (vec![], vec![], vec![]), "recorded: it never ran");
        env.ran("production", &[2]);
        let phase = env.phases("production", 1, 2);
        assert_eq!((phase.ran_in, phase.unknown), (vec![2], vec![]), "recorded: it ran");
        let error =
            diff_releases(&env.ledger, &env.store, &env.release("production", 1), &env.release("production", 2))
                .unwrap_err();
        assert!(matches!(error, ReleaseError::ArtifactMissing { .. }), "{error}");
    }
}
