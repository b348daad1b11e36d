//! Test helpers for graven: temporary git repositories with fixed identities
//! and commit dates, the example apps, and throwaway PostgreSQL databases
//! and S3 buckets.

pub mod postgres;
pub mod s3;

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// The commit time of the first commit a [`TestRepo`] makes (2026-01-01);
/// each later commit is one minute later.
pub const FIRST_COMMIT_TIME: u64 = 1_767_225_600;

/// A temporary git repository, removed when dropped.
pub struct TestRepo {
    dir: TempDir,
    commits: std::cell::Cell<u64>,
}

impl Default for TestRepo {
    fn default() -> Self {
        Self::new()
    }
}

impl TestRepo {
    /// An empty repository on branch `main`.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("graven-test-").tempdir().expect("create a temporary directory");
        let repo = Self { dir, commits: std::cell::Cell::new(0) };
        repo.git(&["init", "--quiet", "--initial-branch=main"]);
        repo.git(&["config", "user.name", "Test Author"]);
        repo.git(&["config", "user.email", "author@example.com"]);
        repo.git(&["config", "commit.gpgsign", "false"]);
        repo
    }

    /// A repository holding the example app `examples/hello`, committed.
    pub fn hello() -> Self {
        let repo = Self::new();
        repo.copy_dir(&example_dir("hello"));
        repo.commit("The example app");
        repo
    }

    /// The working tree's root.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file (creating directories as needed).
    pub fn write(&self, path: &str, contents: impl AsRef<[u8]>) -> &Self {
        let full = self.path().join(path);
        std::fs::create_dir_all(full.parent().expect("paths have parents")).expect("create directories");
        std::fs::write(&full, contents).expect("write a file");
        self
    }

    /// Writes an executable file.
    pub fn write_executable(&self, path: &str, contents: impl AsRef<[u8]>) -> &Self {
        use std::os::unix::fs::PermissionsExt as _;
        self.write(path, contents);
        std::fs::set_permissions(self.path().join(path), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        self
    }

    /// Removes a file.
    pub fn remove(&self, path: &str) -> &Self {
        std::fs::remove_file(self.path().join(path)).expect("remove a file");
        self
    }

    /// Copies every file under `source` into the working tree.
    pub fn copy_dir(&self, source: &Path) -> &Self {
        copy_tree(source, self.path());
        self
    }

    /// Stages everything and commits it at a fixed, increasing time; returns
    /// the commit id.
    pub fn commit(&self, message: &str) -> String {
        let n = self.commits.get();
        self.commits.set(n + 1);
        let date = format!("@{} +0000", FIRST_COMMIT_TIME + 60 * n);
        self.git(&["add", "--all"]);
        let output = Command::new("git")
            .arg("-C")
            .arg(self.path())
            .args(["commit", "--quiet", "--allow-empty", "-m", message])
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .output()
            .expect("run git commit");
        assert!(output.status.success(), "git commit failed: {}", String::from_utf8_lossy(&output.stderr));
        self.git(&["rev-parse", "HEAD"]).trim().to_owned()
    }

    /// Runs git in the repository; panics if it fails; returns its stdout.
    pub fn git(&self, args: &[&str]) -> String {
        let output = Command::new("git").arg("-C").arg(self.path()).args(args).output().expect("run git");
        assert!(output.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// The directory of example app `name` in this source tree.
pub fn example_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(name)
}

/// Copies a tree of regular files and directories, keeping exec bits; skips
/// `__pycache__` and `static` left by running the example by hand.
pub fn copy_tree(source: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).expect("create a directory");
    for entry in std::fs::read_dir(source).expect("read a directory") {
        let entry = entry.expect("read a directory entry");
        let name = entry.file_name();
        if name == "__pycache__" || name == "static" {
            continue;
        }
        let from = entry.path();
        let to = dest.join(&name);
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&from, &to);
        } else {
            std::fs::copy(&from, &to).expect("copy a file");
        }
    }
}
