//! Reading a commit: exporting its tree, as the build does before running
//! its command, and reading single files from it.

use graven::git::{GitError, Repo};
use graven_testutils::TestRepo;

#[test]
fn an_export_that_cannot_unpack_says_why_rather_than_that_git_failed() {
    // An archive larger than a pipe holds: when unpacking stops at the first
    // entry, git is still writing, and dies of SIGPIPE without a word.
    let repo = TestRepo::new();
    repo.write("Procfile", "web: ./serve\n");
    repo.write("big.bin", vec![b'x'; 512 * 1024]);
    repo.commit("A big file");
    let dest = tempfile::tempdir().unwrap();
    std::fs::write(dest.path().join("Procfile"), "already here\n").unwrap();
    let git = Repo::discover(repo.path()).unwrap();
    let error = git.export("HEAD", dest.path()).unwrap_err();
    assert!(matches!(error, GitError::Unpack { .. }), "{error:?}");
}

#[test]
fn an_export_reads_git_archive_to_its_end() {
    // Trees of many sizes around a pipe's 64 KiB, so that git's padding
    // after the end-of-archive marker sometimes comes in a write of its own.
    let repo = TestRepo::new();
    repo.write("Procfile", "web: ./serve\n");
    let git = Repo::discover(repo.path()).unwrap();
    for size in (60..80).map(|k| k * 1024) {
        repo.write("data.bin", vec![b'x'; size]);
        repo.commit(&format!("{size} bytes"));
        let dest = tempfile::tempdir().unwrap();
        git.export("HEAD", dest.path()).unwrap_or_else(|e| panic!("{size} bytes: {e:?}"));
        assert_eq!(std::fs::metadata(dest.path().join("data.bin")).unwrap().len(), size as u64);
    }
}

#[test]
fn files_are_read_from_a_commit_and_a_directory_or_missing_path_is_no_file() {
    let repo = TestRepo::new();
    repo.write("Procfile", "web: ./serve\n");
    repo.write("empty", "");
    repo.write("dir/inside", "x");
    repo.commit("Files");
    repo.write("Procfile", "web: changed, not committed\n");
    let git = Repo::discover(repo.path()).unwrap();
    let [procfile, empty, dir, missing] = git.read_files("HEAD", ["Procfile", "empty", "dir", "missing"]).unwrap();
    assert_eq!(procfile.as_deref(), Some(&b"web: ./serve\n"[..]));
    assert_eq!(empty.as_deref(), Some(&b""[..]));
    assert_eq!((dir, missing), (None, None));
}
