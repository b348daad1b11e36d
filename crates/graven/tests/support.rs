//! Helpers shared by the tests: an app in a temporary git repository, built
//! into a temporary home with a local store and a SQLite ledger.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use graven::Digest;
use graven::build::{BuildError, BuildOutcome, BuildRequest, Quiet};
use graven::git::Repo;
use graven::home::Home;
use graven::ledger::{Ledger as _, SqliteLedger};
use graven::model::Artifact;
use graven::model::BuildRecord;
use graven::model::EntryKind;
use graven::store::LocalStore;
use graven_testutils::TestRepo;
use tempfile::TempDir;

/// The app name every test app has.
pub(crate) const APP: &str = "test-app";

/// A repository holding an app whose build command is `command` and whose
/// output is `out/`, plus any `extra` lines of `[build]`, committed.
pub(crate) fn app_with_command(command: &str, extra: &str) -> TestRepo {
    app(&format!("[build]\ncommand = '''{command}'''\noutput = \"out\"\n{extra}"))
}

/// A repository holding an app with `settings` as the body of its
/// `graven.toml` (after `[app]`), committed.
pub(crate) fn app(settings: &str) -> TestRepo {
    let repo = TestRepo::new();
    repo.write("Procfile", "web: ./serve\nworker: ./work\n");
    repo.write("graven.toml", format!("[app]\nname = \"{APP}\"\n\n{settings}"));
    repo.commit("The app");
    repo
}

/// A graven home in a temporary directory, with its store and ledger open.
/// The directory also holds `outside/`, on the same filesystem as the
/// build's scratch space but outside any build.
pub(crate) struct TestHome {
    dir: TempDir,
    pub(crate) home: Home,
    pub(crate) store: LocalStore,
    pub(crate) ledger: SqliteLedger,
}

impl TestHome {
    pub(crate) fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("graven-home-").tempdir().expect("create a temporary directory");
        let home = Home::new(dir.path().join("home"));
        home.create().expect("create the home");
        std::fs::create_dir(dir.path().join("outside")).expect("create outside/");
        let store = LocalStore::open(&home.store_dir()).expect("open the store");
        let ledger = SqliteLedger::open(&home.ledger_path()).expect("open the ledger");
        Self { dir, home, store, ledger }
    }

    /// A directory beside the home, on the same filesystem, that no build owns.
    pub(crate) fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }

    /// Builds `HEAD` of `repo`.
    pub(crate) fn build(&self, repo: &TestRepo) -> Result<BuildOutcome, BuildError> {
        self.build_with(repo, |_| {})
    }

    /// Builds `repo` with a request adjusted by `adjust`.
    pub(crate) fn build_with(
        &self,
        repo: &TestRepo,
        adjust: impl FnOnce(&mut BuildRequest<'_>),
    ) -> Result<BuildOutcome, BuildError> {
        let git = Repo::discover(repo.path()).expect("find the repository");
        let mut request = BuildRequest {
            repo: &git,
            home: &self.home,
            rev: "HEAD",
            app: None,
            allow_dirty: false,
            force: false,
            check_reproducible: false,
            sandbox: true,
            cache: true,
            author: "tester@example.com",
            host: "test-host",
        };
        adjust(&mut request);
        graven::build::build(&request, &self.store, &self.ledger, &Quiet)
    }

    /// Builds `HEAD` of `repo`, which must succeed; returns the artifact id.
    pub(crate) fn built(&self, repo: &TestRepo) -> Digest {
        match self.build(repo) {
            Ok(outcome) => outcome.record.build.artifact,
            Err(e) => panic!("the build failed: {e}"),
        }
    }

    /// The builds recorded for the test app, newest first.
    pub(crate) fn builds(&self) -> Vec<BuildRecord> {
        self.ledger.builds(APP).expect("list builds")
    }

    /// The artifact's tree, one line per entry in manifest order:
    /// `path 0644 size`, `path/` or `path -> target`.
    pub(crate) fn tree(&self, id: &Digest) -> Vec<String> {
        self.entries(id)
            .into_iter()
            .map(|(path, kind)| match kind {
                EntryKind::File { size, .. } => format!("{path} {:04o} {size}", kind.mode()),
                EntryKind::Dir { .. } => format!("{path}/"),
                EntryKind::Symlink { target } => format!("{path} -> {target}"),
            })
            .collect()
    }

    /// The artifact's entries, in manifest order.
    pub(crate) fn entries(&self, id: &Digest) -> Vec<(String, EntryKind)> {
        let artifact = Artifact::load(&self.store, id).expect("load the artifact");
        let mut entries = Vec::new();
        graven::store::walk(&self.store, id, &artifact.root, &mut |path, kind| {
            entries.push((path.to_owned(), kind.clone()));
            Ok::<_, graven::store::ArtifactError>(())
        })
        .expect("walk the manifest");
        entries
    }

    /// The digest of the file at `path` in the artifact.
    pub(crate) fn file_digest(&self, id: &Digest, path: &str) -> Digest {
        match self.entries(id).into_iter().find(|(p, _)| p == path) {
            Some((_, EntryKind::File { digest, .. })) => digest,
            other => panic!("{path} is not a file in the artifact: {other:?}"),
        }
    }

    /// The digest of the listing of directory `path` (`""` for the root).
    pub(crate) fn tree_digest(&self, id: &Digest, path: &str) -> Digest {
        if path.is_empty() {
            return Artifact::load(&self.store, id).expect("load the artifact").root;
        }
        match self.entries(id).into_iter().find(|(p, _)| p == path) {
            Some((_, EntryKind::Dir { tree })) => tree,
            other => panic!("{path} is not a directory in the artifact: {other:?}"),
        }
    }
}

/// Makes a read-only store file writable, so a test can damage it.
pub(crate) fn make_writable(path: &Path) {
    let mode = std::fs::metadata(path).expect("stat").permissions().mode();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o200)).expect("chmod u+w");
}

/// Every file under `dir`, at any depth, sorted.
pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return files };
    for entry in entries {
        let entry = entry.expect("read a directory entry");
        if entry.file_type().expect("file type").is_dir() {
            files.extend(files_under(&entry.path()));
        } else {
            files.push(entry.path());
        }
    }
    files.sort();
    files
}
