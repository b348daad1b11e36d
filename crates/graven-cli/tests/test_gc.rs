//! Retention: `graven gc` deletes what no kept release needs, never a ledger
//! row, and a gc killed midway leaves every kept artifact whole.

use crate::common::{Graven, shell_app};

/// An app with three releases in production, each of a different build
/// (every build has its own 1 MB file, so each is easy to tell apart).
fn three_releases() -> (graven_testutils::TestRepo, Graven) {
    let repo =
        shell_app("[build]\ncommand = \"head -c 1000000 /dev/urandom > big.bin; echo $GRAVEN_COMMIT > commit\"\n");
    let graven = Graven::in_repo(&repo);
    for n in 1..=3 {
        if n > 1 {
            repo.write("version", format!("{n}\n"));
            repo.commit(&format!("Version {n}"));
        }
        graven.build_json::<&str>([]);
        let run = graven.run(["release", "--env", "production"]);
        assert_eq!(run.code, 0, "{run}");
    }
    (repo, graven)
}

fn collected(graven: &Graven) -> Vec<bool> {
    let builds = graven.run(["builds", "--json"]).json();
    builds.as_array().unwrap().iter().map(|b| b["collected"].as_bool().unwrap()).collect()
}

#[test]
fn gc_keeps_the_newest_releases_and_marks_collected_builds() {
    let (_repo, graven) = three_releases();
    let dry = graven.run(["gc", "--keep", "1", "--grace", "0", "--dry-run", "--json"]).json();
    assert_eq!((dry["artifacts"].as_u64(), dry["kept_artifacts"].as_u64()), (Some(2), Some(1)));
    assert!(dry["bytes"].as_u64().unwrap() > 2_000_000, "two 1 MB files: {dry}");
    assert_eq!(collected(&graven), [false, false, false], "a dry run deletes nothing");

    insta::assert_snapshot!(graven.run(["gc", "--keep", "1", "--grace", "0"]), @r"
    exit code: 0
    ----- stdout -----
    deleted 2 artifacts, 2 listings and 5 blobs: 2.0 MB freed; kept 1 artifact
    ----- stderr -----
    ");
    // Newest first: only the newest build's artifact is kept.
    assert_eq!(collected(&graven), [false, true, true]);
    graven.assert_all_verify_of(&[0]);
    // The ledger is untouched, and a rollback to a collected release says so.
    assert_eq!(graven.run(["releases", "--env", "production", "--json"]).json().as_array().unwrap().len(), 3);
    let run = graven.run(["rollback", "--env", "production"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.to_string().contains("is no longer in the store"), "{run}");
    assert!(run.to_string().contains("--force"), "the hint says how to rebuild it:\n{run}");
    // Nothing is left to collect.
    let again = graven.run(["gc", "--keep", "1", "--grace", "0", "--json"]).json();
    assert_eq!(again["bytes"], 0);
}

#[test]
fn gc_keeps_unreleased_builds_and_recent_objects() {
    let (repo, graven) = three_releases();
    repo.write("version", "4\n");
    repo.commit("Version 4, built but not released");
    graven.build_json::<&str>([]);
    // Everything is younger than the default grace period of an hour.
    let run = graven.run(["gc", "--keep", "1", "--json"]).json();
    assert_eq!(run["bytes"], 0);
    let run = graven.run(["gc", "--keep", "1", "--grace", "0", "--json"]).json();
    assert_eq!(run["artifacts"], 2);
    assert_eq!(collected(&graven), [false, false, true, true], "the unreleased build is kept");
}

#[test]
fn gc_killed_midway_leaves_every_kept_artifact_whole() {
    let (_repo, graven) = three_releases();
    let mut child = graven.spawn_to_fail_point(&["gc", "--keep", "1", "--grace", "0"], "gc-after-a-removal");
    child.kill().expect("SIGKILL graven");
    child.wait().expect("reap graven");
    graven.assert_all_verify_of(&[0]);
    let run = graven.run(["gc", "--keep", "1", "--grace", "0"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(collected(&graven), [false, true, true]);
    graven.assert_all_verify_of(&[0]);
}

#[test]
fn gc_waits_for_a_build_that_reuses_a_blob_no_kept_release_needs() {
    // v1 has shared.txt; v2 does not: its blob is garbage once only v2 is kept.
    let repo = shell_app("");
    repo.write("shared.txt", "the same bytes in v1 and in the build in progress\n");
    repo.commit("v1");
    let graven = Graven::in_repo(&repo);
    graven.build_json::<&str>([]);
    assert_eq!(graven.run(["release", "--env", "production"]).code, 0);
    repo.remove("shared.txt");
    repo.commit("v2");
    graven.build_json::<&str>([]);
    assert_eq!(graven.run(["release", "--env", "production"]).code, 0);

    // A build that finds the blob in the store (and so does not write it
    // again) stops before the ledger records it, as a slow build would.
    repo.write("shared.txt", "the same bytes in v1 and in the build in progress\n");
    repo.commit("v3");
    let mut build = graven.spawn_to_fail_point(&["build"], "build-before-record");
    let mut gc = graven
        .command(["gc", "--keep", "1", "--grace", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // gc says it waits, and does wait: the build still holds its lease.
    let mut stderr = std::io::BufReader::new(gc.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
    assert!(line.contains("waiting for the builds in progress to finish"), "{line:?}");
    assert!(gc.try_wait().unwrap().is_none(), "gc went on while a build held the store's lease");

    // The build ends (here: killed, so it records nothing); gc goes on and
    // collects what is garbage now, v1's artifact and the blob.
    build.kill().unwrap();
    build.wait().unwrap();
    let output = gc.wait_with_output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("deleted 1 artifact"), "{stdout}");

    // A build of v3 now stores the blob again, and everything verifies.
    graven.build_json::<&str>([]);
    graven.assert_all_verify_of(&[0]);
}
