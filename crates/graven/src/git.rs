//! The git repository an app is built from, through the `git` command.
//!
//! graven shells out to git rather than linking a git library: git is on
//! every machine that has a repository, it honours every setting the user has
//! (`export-ignore`, `safe.directory`, alternates), and it keeps our build
//! small. This module only reads the repository; it never changes refs, the
//! index or the working tree.

use std::ffi::OsStr;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A failure to read the repository.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The directory is not inside a git working tree.
    #[error("{} is not inside a git repository", path.display())]
    NotARepository {
        /// The directory graven looked in.
        path: PathBuf,
    },
    /// The revision names no commit.
    #[error("'{rev}' does not name a commit in this repository")]
    UnknownRevision {
        /// The revision as given.
        rev: String,
    },
    /// The repository has no commit yet.
    #[error("the repository at {} has no commits yet", path.display())]
    NoCommits {
        /// The repository's root.
        path: PathBuf,
    },
    /// `git` is not installed.
    #[error("could not run git")]
    Spawn(#[source] std::io::Error),
    /// git ran and failed.
    #[error("`git {args}` failed: {stderr}")]
    Failed {
        /// The arguments, space-separated.
        args: String,
        /// What git printed on stderr.
        stderr: String,
    },
    /// The archive git produced could not be unpacked.
    #[error("could not unpack the export of {what} into {}", path.display())]
    Unpack {
        /// The commit or tree exported.
        what: String,
        /// Where it was being unpacked.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A git working tree, found from a directory inside it.
#[derive(Debug, Clone)]
pub struct Repo {
    root: PathBuf,
}

/// The full id of a commit: 40 hex digits.
pub type CommitId = String;

/// One commit of a [`Repo::log`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The commit.
    pub commit: CommitId,
    /// The first line of its message.
    pub subject: String,
}

impl Repo {
    /// Finds the repository that contains `dir`.
    pub fn discover(dir: &Path) -> Result<Self, GitError> {
        let output = git_command(dir).args(["rev-parse", "--show-toplevel"]).output().map_err(GitError::Spawn)?;
        if !output.status.success() {
            return Err(GitError::NotARepository { path: dir.to_owned() });
        }
        let root = String::from_utf8_lossy(&output.stdout).trim_end().to_owned();
        Ok(Self { root: PathBuf::from(root) })
    }

    /// The root of the working tree.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The commit that `rev` names (`HEAD`, a branch, a tag, a hash prefix).
    pub fn resolve_commit(&self, rev: &str) -> Result<CommitId, GitError> {
        let spec = format!("{rev}^{{commit}}");
        let output = self
            .git(["rev-parse", "--verify", "--quiet", "--end-of-options", &spec])
            .output()
            .map_err(GitError::Spawn)?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).trim_end().to_owned());
        }
        if rev == "HEAD" && !self.has_commits()? {
            return Err(GitError::NoCommits { path: self.root.clone() });
        }
        Err(GitError::UnknownRevision { rev: rev.to_owned() })
    }

    fn has_commits(&self) -> Result<bool, GitError> {
        let status = self
            .git(["rev-parse", "--verify", "--quiet", "HEAD"])
            .stdout(Stdio::null())
            .status()
            .map_err(GitError::Spawn)?;
        Ok(status.success())
    }

    /// The commit time of `commit`, in seconds since the epoch.
    pub fn commit_time(&self, commit: &str) -> Result<u64, GitError> {
        let text = self.run(["show", "-s", "--format=%ct", commit])?;
        text.trim().parse().map_err(|_| GitError::Failed {
            args: format!("show -s --format=%ct {commit}"),
            stderr: format!("unexpected output '{}'", text.trim()),
        })
    }

    /// The address of the `origin` remote, without any credentials in it,
    /// if the repository has one.
    pub fn origin_url(&self) -> Option<String> {
        let url = self.run(["config", "--get", "remote.origin.url"]).ok()?;
        let url = url.trim();
        if url.is_empty() {
            return None;
        }
        // https://user:token@host/… → https://host/…
        Some(match url.split_once("://") {
            Some((scheme, rest)) => {
                let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
                let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
                format!("{scheme}://{host}/{path}")
            }
            None => url.to_owned(),
        })
    }

    /// The paths that make the working tree dirty: changes to tracked files,
    /// staged or not, and untracked files that are not ignored.
    pub fn dirty_paths(&self) -> Result<Vec<String>, GitError> {
        let text = self.run(["status", "--porcelain=v1", "-z", "--untracked-files=all"])?;
        let mut paths = Vec::new();
        let mut records = text.split('\0');
        while let Some(record) = records.next() {
            if record.len() < 4 {
                continue;
            }
            paths.push(record[3..].to_owned());
            // A rename or copy is followed by its source path.
            if matches!(record.as_bytes()[0], b'R' | b'C') {
                records.next();
            }
        }
        Ok(paths)
    }

    /// The contents of each of `paths` in `commit` (`None` where it has no
    /// such file), read by one `git cat-file --batch`.
    pub fn read_files<const N: usize>(&self, commit: &str, paths: [&str; N]) -> Result<[Option<Vec<u8>>; N], GitError> {
        let args = ["cat-file", "--batch"];
        let mut child = self.git(args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().map_err(GitError::Spawn)?;
        let requests = paths.map(|path| format!("{commit}:{path}\n")).concat();
        // The requests are a few hundred bytes: they fit the pipe, so writing
        // them all before reading cannot block.
        let mut stdin = child.stdin.take().expect("stdin is piped");
        std::io::Write::write_all(&mut stdin, requests.as_bytes()).map_err(GitError::Spawn)?;
        drop(stdin);
        let output = child.wait_with_output().map_err(GitError::Spawn)?;
        if !output.status.success() {
            return Err(failed(&args, &output.stderr));
        }
        let malformed = || failed(&args, b"output that is not the --batch format");
        let mut rest = output.stdout.as_slice();
        let mut files = [const { None }; N];
        for file in &mut files {
            // `<oid> <type> <size>\n<contents>\n`, or `<object> missing\n`.
            let end = rest.iter().position(|&b| b == b'\n').ok_or_else(malformed)?;
            let header = std::str::from_utf8(&rest[..end]).map_err(|_| malformed())?;
            rest = &rest[end + 1..];
            let mut fields = header.rsplitn(3, ' ');
            let (Some(size), Some(kind)) = (fields.next(), fields.next()) else { continue };
            let Ok(size) = size.parse::<usize>() else { continue };
            let contents = rest.get(..size).ok_or_else(malformed)?;
            // A tree or anything else where a file is expected is no file.
            if kind == "blob" {
                *file = Some(contents.to_vec());
            }
            rest = rest.get(size + 1..).ok_or_else(malformed)?;
        }
        Ok(files)
    }

    /// A tree object holding the working tree as it is now: tracked files with
    /// their changes, and untracked files that are not ignored. Writes git
    /// objects (as `git stash` does) but leaves the index and refs alone.
    /// `leave_out`, if given, is a directory (relative, ending in `/`) left
    /// out of the snapshot: graven's own home.
    pub fn working_tree_snapshot(&self, scratch: &Path, leave_out: Option<&str>) -> Result<String, GitError> {
        let index = self.run(["rev-parse", "--git-path", "index"])?;
        let index = self.root.join(index.trim_end());
        let temp_index = scratch.join("index");
        if index.exists() {
            std::fs::copy(&index, &temp_index).map_err(GitError::Spawn)?;
        }
        let with_index = |args: &[&str]| {
            let mut command = self.git(args);
            command.env("GIT_INDEX_FILE", &temp_index);
            let output = command.output().map_err(GitError::Spawn)?;
            if output.status.success() { Ok(output.stdout) } else { Err(failed(args, &output.stderr)) }
        };
        // git refuses an exclude pathspec that names an ignored path ("The
        // following paths are ignored"), and leaves ignored paths out anyway.
        let exclude = leave_out.filter(|dir| !self.is_ignored(dir)).map(|dir| format!(":(exclude){dir}"));
        let mut add = vec!["add", "--all", "--", "."];
        add.extend(exclude.as_deref());
        with_index(&add)?;
        let tree = with_index(&["write-tree"])?;
        Ok(String::from_utf8_lossy(&tree).trim_end().to_owned())
    }

    /// Whether `path` (relative to the root) is ignored by `.gitignore` or
    /// the user's excludes.
    fn is_ignored(&self, path: &str) -> bool {
        let status = self.git(["check-ignore", "--quiet", "--", path]).stdout(Stdio::null()).status();
        status.is_ok_and(|status| status.success())
    }

    /// Exports the tree of `tree_ish` into the empty directory `dest`, as `git
    /// archive` does: no `.git`, nothing untracked, `export-ignore` honoured.
    pub fn export(&self, tree_ish: &str, dest: &Path) -> Result<(), GitError> {
        let mut child = self
            .git(["archive", "--format=tar", tree_ish])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(GitError::Spawn)?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let unpack_error = |source| GitError::Unpack { what: tree_ish.to_owned(), path: dest.to_owned(), source };
        let unpacked = unpack(stdout, dest).map_err(unpack_error);
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        let status = child.wait().map_err(GitError::Spawn)?;
        if !status.success() {
            // git dies of SIGPIPE, silently, when unpacking stopped reading
            // early: then the unpack error says what went wrong.
            if unpacked.is_err() && stderr.trim().is_empty() {
                return unpacked;
            }
            return Err(failed(&["archive", "--format=tar", tree_ish], stderr.as_bytes()));
        }
        unpacked
    }

    /// The commits reachable from `to` but not from `from` (`git log
    /// from..to`), newest first, each with its subject line.
    pub fn log(&self, from: &str, to: &str) -> Result<Vec<LogEntry>, GitError> {
        let range = format!("{from}..{to}");
        let text = self.run(["log", "--no-color", "--format=%H%x00%s", "--end-of-options", &range])?;
        Ok(text
            .lines()
            .filter_map(|line| line.split_once('\0'))
            .map(|(commit, subject)| LogEntry { commit: commit.to_owned(), subject: subject.to_owned() })
            .collect())
    }

    /// git's `user.email`, if set.
    pub fn user_email(&self) -> Option<String> {
        let output = self.git(["config", "user.email"]).output().ok()?;
        let email = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        (output.status.success() && !email.is_empty()).then_some(email)
    }

    fn git<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = git_command(&self.root);
        command.args(args);
        command
    }

    fn run<const N: usize>(&self, args: [&str; N]) -> Result<String, GitError> {
        let output = self.git(args).output().map_err(GitError::Spawn)?;
        if !output.status.success() {
            return Err(failed(&args, &output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// The first 7 hex digits of a commit id, as git abbreviates it.
pub fn short_commit(commit: &str) -> &str {
    &commit[..commit.len().min(7)]
}

fn git_command(dir: &Path) -> Command {
    let mut command = Command::new("git");
    command.arg("-C").arg(dir).stdin(Stdio::null());
    // Plumbing output must not depend on the user's locale or pager.
    command
        .env("LC_ALL", "C")
        .env("GIT_PAGER", "cat")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE");
    command
}

fn failed(args: &[&str], stderr: &[u8]) -> GitError {
    GitError::Failed { args: args.join(" "), stderr: String::from_utf8_lossy(stderr).trim().to_owned() }
}

fn unpack(stream: impl std::io::Read, dest: &Path) -> std::io::Result<()> {
    let mut archive = tar::Archive::new(stream);
    archive.set_preserve_permissions(false);
    archive.set_overwrite(false);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if matches!(entry.header().entry_type(), tar::EntryType::XGlobalHeader | tar::EntryType::XHeader) {
            continue;
        }
        entry.unpack_in(dest)?;
    }
    // Read on past the end-of-archive marker to the end of git's padding:
    // were the pipe closed before git's last write, git would die of SIGPIPE.
    std::io::copy(&mut archive.into_inner(), &mut std::io::sink())?;
    Ok(())
}
