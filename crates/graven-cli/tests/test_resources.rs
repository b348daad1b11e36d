//! Resource failures are errors, not signals: a file-size limit and a full
//! disk give an error naming the file or filesystem, exit 1, record nothing,
//! and commands that only read keep working on a full disk.

use std::path::PathBuf;

use crate::common::{Graven, shell_app};

/// Exit code of a process killed by SIGXFSZ, as a shell reports it.
const KILLED_BY_SIGXFSZ: i32 = 128 + 25;

#[test]
fn a_file_size_limit_fails_a_build_and_a_release_with_an_error_not_a_signal() {
    let repo = shell_app("");
    repo.write("big.bin", vec![7u8; 300_000]);
    repo.commit("A big file");
    let graven = Graven::in_repo(&repo);
    assert_eq!(graven.run(["builds"]).code, 0, "the ledger exists before the limit applies");

    let output = graven.command_via(&["prlimit", "--fsize=100000:100000", "--"], ["build"]).output().unwrap();
    let run = graven.finish(&output);
    assert_ne!(run.code, KILLED_BY_SIGXFSZ, "killed by SIGXFSZ:\n{run}");
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("File too large") && run.stderr.contains("big.bin"), "{run}");
    graven.assert_no_builds();

    graven.build_json::<&str>([]);
    let output = graven
        .command_via(&["prlimit", "--fsize=1024:1024", "--"], ["release", "--env", "production"])
        .output()
        .unwrap();
    let run = graven.finish(&output);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("the file-size limit (ulimit -f) of 1024 bytes is too small for"), "{run}");
    assert!(graven.run(["releases", "--env", "production", "--json"]).json().as_array().unwrap().is_empty());
    assert_eq!(graven.run(["verify", "--ledger"]).code, 0);
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs {
    _dir: tempfile::TempDir,
    mount: PathBuf,
}

impl Tmpfs {
    fn new(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("fs");
        std::fs::create_dir(&mount).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mount)
            .status()
            .expect("run mount");
        assert!(status.success(), "this test mounts a tmpfs: run the tests as root (the README's test command does)");
        Self { _dir: dir, mount }
    }

    /// Writes into `name` until the filesystem is full.
    fn fill(&self, name: &str) {
        use std::io::Write as _;
        let mut file = std::fs::File::create(self.mount.join(name)).unwrap();
        let chunk = vec![0u8; 1 << 16];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.mount).status();
    }
}

#[test]
fn on_a_full_disk_reading_commands_work_and_writing_ones_say_no_space_naming_it() {
    let fs = Tmpfs::new("16m");
    let home = fs.mount.join("home");
    let repo = shell_app("");
    let graven = Graven::in_repo(&repo).env("GRAVEN_HOME", home.as_os_str());
    graven.build_json::<&str>([]);
    assert_eq!(graven.run(["release", "--env", "production"]).code, 0);
    assert_eq!(graven.run(["config", "set", "A=1", "--env", "production"]).code, 0);
    let out = tempfile::tempdir().unwrap();
    let export = out.path().join("app.tar");
    let export = export.to_str().unwrap();
    fs.fill("filler");

    for args in [
        &["releases", "--env", "production"][..],
        &["release", "show", "v1", "--env", "production"],
        &["config", "--env", "production"],
        &["builds"],
        &["verify", "--ledger"],
        &["verify", "HEAD"],
        &["diff", "v1", "v2", "--env", "production"],
        &["export", "HEAD", "--format", "tar", "-o", export],
    ] {
        let run = graven.run(args);
        assert_eq!(run.code, 0, "{args:?} fails on a full disk:\n{run}");
    }
    let status = graven.run(["status", "--env", "production"]);
    assert!(status.stderr.contains("no runner has reported"), "status reads the ledger:\n{status}");

    let run = graven.run(["config", "set", "B=2", "--env", "production"]);
    assert_eq!(run.code, 1, "{run}");
    let named = format!("no space left on the filesystem of {}", home.display());
    assert!(run.stderr.contains(&named), "{run}");

    repo.write("more.txt", "more\n");
    repo.commit("More");
    let run = graven.run(["build"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("No space left on device") || run.stderr.contains(&named), "{run}");

    std::fs::remove_file(fs.mount.join("filler")).unwrap();
    assert_eq!(graven.builds().len(), 1, "the failed build recorded nothing");
    assert_eq!(graven.run(["verify", "--ledger"]).code, 0);
}
