//! Nothing half-done is ever visible: a build killed midway publishes no
//! artifact, and builds running at the same time do not disturb each other.

use std::path::Path;

use crate::common::{Graven, shell_app};

/// A build with a few files in a few directories, so ingest has work to do.
const SEVERAL_FILES: &str = "[build]\ncommand = \"mkdir -p a/b c && for n in 1 2 3; do echo $n > a/$n; echo $n$n > a/b/$n; done; echo $GRAVEN_COMMIT > c/commit\"\n";

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).map_or_else(
        |_| Vec::new(),
        |entries| entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
    )
}

#[track_caller]
fn assert_killed_build_left_nothing_visible(fail_point: &str) {
    let repo = shell_app(SEVERAL_FILES);
    let graven = Graven::in_repo(&repo);
    let mut child = graven.spawn_to_fail_point(&["build"], fail_point);
    child.kill().expect("SIGKILL graven");
    child.wait().expect("reap graven");

    graven.assert_no_builds();
    let run = graven.run(["verify", "HEAD"]);
    insta::allow_duplicates! {
        insta::assert_snapshot!(run, @r"
            exit code: 2
            ----- stdout -----
            ----- stderr -----
            error: commit [C1] ('HEAD') has not been built
            hint: build it first: graven build <rev>
            ");
    }

    let build = graven.build_json::<&str>([]);
    assert_eq!(build["reused"], false);
    assert_eq!(graven.builds().len(), 1);
    graven.assert_all_verify();
    assert_eq!(
        leftovers(&repo.path().join(".graven/tmp")),
        Vec::<String>::new(),
        "the killed build's scratch space is gone"
    );
}

#[test]
fn a_build_killed_after_storing_blobs_publishes_nothing() {
    assert_killed_build_left_nothing_visible("ingest-after-blobs");
}

#[test]
fn a_build_killed_before_it_is_recorded_publishes_nothing() {
    assert_killed_build_left_nothing_visible("build-before-record");
}

#[test]
fn two_builds_of_different_commits_at_the_same_time() {
    let repo = shell_app(SEVERAL_FILES);
    let first = repo.git(&["rev-parse", "HEAD"]).trim().to_owned();
    repo.write("more.txt", "more\n");
    let second = repo.commit("More");
    let graven = Graven::in_repo(&repo);

    let children: Vec<_> = [first.as_str(), second.as_str()]
        .map(|rev| {
            graven
                .command(["build", "--json", rev])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .into_iter()
        .collect();
    for child in children {
        let run = graven.finish(&child.wait_with_output().unwrap());
        assert_eq!(run.code, 0, "{run}");
        assert_eq!(run.json()["reused"], false);
    }

    let mut commits: Vec<String> = graven.builds().iter().map(|b| b["commit"].as_str().unwrap().to_owned()).collect();
    commits.sort();
    let mut expected = vec![first, second];
    expected.sort();
    assert_eq!(commits, expected);
    graven.assert_all_verify();
}

#[test]
fn two_builds_of_the_same_commit_at_the_same_time() {
    let repo = shell_app(SEVERAL_FILES);
    let graven = Graven::in_repo(&repo);
    let children: Vec<_> = (0..2)
        .map(|_| {
            graven
                .command(["build", "--json"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut artifacts = Vec::new();
    for child in children {
        let run = graven.finish(&child.wait_with_output().unwrap());
        assert_eq!(run.code, 0, "{run}");
        artifacts.push(run.json()["artifact"].clone());
    }
    assert_eq!(artifacts[0], artifacts[1]);
    graven.assert_all_verify();
}
