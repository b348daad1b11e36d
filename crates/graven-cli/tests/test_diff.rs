//! `graven diff`: what changed between two releases.

use crate::common::{Graven, shell_app};

/// Two releases of a shell app in production, one file and the config apart.
fn two_releases() -> (graven_testutils::TestRepo, Graven) {
    let repo = shell_app("[build]\ncommand = \"mkdir -p lib && echo one > lib/a && echo same > lib/b\"\n");
    let graven = Graven::in_repo(&repo);
    graven.build_json::<&str>([]);
    graven.run(["config", "set", "MODE=old", "--env", "production"]);
    graven.run(["config", "set", "TOKEN=old-secret-value", "--secret", "--env", "production"]);
    graven.run(["release", "--env", "production"]);
    repo.write("notes.txt", "new file\n");
    repo.commit("Add notes");
    graven.build_json::<&str>([]);
    graven.run(["release", "--env", "production"]);
    graven.run(["config", "set", "MODE=new", "--env", "production"]);
    (repo, graven)
}

#[test]
fn diff_shows_commits_files_and_config_keys() {
    let (_repo, graven) = two_releases();
    insta::assert_snapshot!(graven.run(["diff", "v1", "v3", "--env", "production"]), @r"
        exit code: 0
        ----- stdout -----
        from  v1 of production            commit [C1]  artifact [DIGEST]  config [DIGEST]
        to    v3 of production (current)  commit [C2]  artifact [DIGEST]  config [DIGEST]

        commits: 1 added, 0 removed ([C1]..[C2])
          + [C2] Add notes
        files: 1 added, 0 removed, 0 changed
          + notes.txt
        config: 0 added, 0 removed, 1 changed
          ~ MODE: old → new
        release phase: did not run
        ----- stderr -----
        ");
    let json = graven.run(["diff", "v1", "v3", "--env", "production", "--json"]).json();
    assert_eq!(json["files"]["added"], serde_json::json!(["notes.txt"]));
    assert_eq!(json["config"]["changed"], serde_json::json!(["MODE"]));
    assert_eq!(json["from"]["version"], "v1");
    assert_eq!(json["to"]["version"], "v3");
    assert_eq!(json["release_phase"], false);
}

#[test]
fn diff_refuses_bad_references() {
    let (_repo, graven) = two_releases();
    insta::assert_snapshot!(graven.run(["diff", "v1", "v9", "--env", "production"]), @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: environment 'production' has no release v9
        hint: `graven releases --env production` lists its releases
        ");
    insta::assert_snapshot!(graven.run(["diff", "vx", "v2", "--env", "production"]), @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: 'vx' is not a release version
        hint: write it as v42 (or 42)
        ");
    insta::assert_snapshot!(graven.run(["diff", "staging:v1", "production:v2"]), @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: environment 'staging' does not exist
        hint: the environments of shell are: production
        ");
}
