//! The release stage: config versions, numbered releases, rollback,
//! promote, the hash chain, concurrency and crashes.

use std::ffi::OsString;

use crate::common::{Graven, shell_app};

/// A built shell app, ready to release.
fn built_app() -> (graven_testutils::TestRepo, Graven) {
    let repo = shell_app("[build]\ncommand = \"echo built > out.txt\"\n");
    let graven = Graven::in_repo(&repo);
    graven.build_json::<&str>([]);
    (repo, graven)
}

fn releases(graven: &Graven, env: &str) -> Vec<serde_json::Value> {
    let run = graven.run(["releases", "--env", env, "--json"]);
    assert_eq!(run.code, 0, "{run}");
    run.json().as_array().expect("an array").clone()
}

#[test]
fn a_release_combines_the_newest_build_with_the_env_config() {
    let (_repo, graven) = built_app();
    insta::assert_snapshot!(graven.run(["release", "--env", "production"]), @r"
    exit code: 0
    ----- stdout -----
    released shell v1 to production: [DIGEST] from [C1] with config [DIGEST]
    ----- stderr -----
    created environment 'production'
    ");
    let release = graven.run(["release", "show", "v1", "--env", "production", "--json"]).json();
    for field in [
        "id",
        "app",
        "env",
        "number",
        "version",
        "kind",
        "artifact",
        "config",
        "parent",
        "commit",
        "author",
        "created_at",
        "description",
        "rollback_of",
        "promoted_from",
        "current",
    ] {
        assert!(release.get(field).is_some(), "release JSON lacks {field}: {release}");
    }
    assert_eq!(release["version"], "v1");
    assert_eq!(release["kind"], "deploy");
    assert_eq!(release["parent"], serde_json::Value::Null);
    assert_eq!(release["description"], format!("Deploy {}", &release["commit"].as_str().unwrap()[..7]));
    assert_eq!(release["current"], true);
    assert_eq!(release["artifact"], graven.builds()[0]["artifact"]);
}

#[test]
fn every_config_change_is_one_version_and_one_release() {
    let (repo, graven) = built_app();
    // Before the first release, a config change makes a version only.
    insta::assert_snapshot!(graven.run(["config", "set", "GREETING=Hello", "PORT=5000", "--env", "staging"]), @r"
    exit code: 0
    ----- stdout -----
    Set GREETING, PORT in staging: config [DIGEST]
    ----- stderr -----
    created environment 'staging'
    staging has no release yet: the config applies from the first graven release --env staging
    ");
    graven.run(["release", "--env", "staging"]);
    let run = graven.run(["config", "set", "TOKEN=s3cr3t-t0ken", "--secret", "--env", "staging"]);
    assert_eq!(run.code, 0, "{run}");
    repo.write("prod.env", "# imported\nexport A=1\nB='two words'\nC=\"line\\nbreak\"\n");
    let run = graven.run(["config", "import", "prod.env", "--env", "staging"]);
    assert_eq!(run.code, 0, "{run}");
    let run = graven.run(["config", "unset", "A", "B", "--env", "staging"]);
    assert_eq!(run.code, 0, "{run}");

    let history = releases(&graven, "staging");
    let summary: Vec<(String, String, String)> = history
        .iter()
        .map(|r| {
            (
                r["version"].as_str().unwrap().to_owned(),
                r["kind"].as_str().unwrap().to_owned(),
                r["description"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("v4".to_owned(), "config".to_owned(), "Unset A, B".to_owned()),
            ("v3".to_owned(), "config".to_owned(), "Set A, B, C".to_owned()),
            ("v2".to_owned(), "config".to_owned(), "Set TOKEN".to_owned()),
            ("v1".to_owned(), "deploy".to_owned(), format!("Deploy {}", &history[3]["commit"].as_str().unwrap()[..7])),
        ]
    );
    for pair in history.windows(2) {
        assert_eq!(pair[0]["parent"], pair[1]["id"], "each release chains to the one before");
        assert_eq!(pair[0]["artifact"], pair[1]["artifact"], "a config change keeps the artifact");
    }
    insta::assert_snapshot!(graven.run(["config", "--env", "staging"]), @r"
    exit code: 0
    ----- stdout -----
    C         line\nbreak
    GREETING  Hello
    PORT      5000
    TOKEN     ••••••  (secret)
    ----- stderr -----
    ");
    let revealed = graven.run(["config", "--env", "staging", "--json", "--reveal"]).json();
    assert_eq!(revealed["vars"]["TOKEN"], "s3cr3t-t0ken");
    let masked = graven.run(["config", "--env", "staging", "--json"]).json();
    assert_eq!(masked["vars"]["TOKEN"], "••••••");
    assert_eq!(masked["secret"], serde_json::json!(["TOKEN"]));
    assert_eq!(masked["version"], history[0]["config"]);
}

#[test]
fn rollback_restores_code_and_config_as_a_new_release() {
    let (repo, graven) = built_app();
    graven.run(["release", "--env", "production"]);
    graven.run(["config", "set", "MODE=new", "--env", "production"]);
    repo.write("graven.toml", "[app]\nname = \"shell\"\n\n[build]\ncommand = \"echo rebuilt > out.txt\"\n");
    repo.commit("Change the build");
    graven.build_json::<&str>([]);
    graven.run(["release", "--env", "production"]);

    // The default target is the release the current one replaced: v2.
    insta::assert_snapshot!(graven.run(["rollback", "--env", "production"]), @r"
    exit code: 0
    ----- stdout -----
    released shell v4 to production: Rollback to v2 ([DIGEST] from [C1], config [DIGEST])
    ----- stderr -----
    ");
    let history = releases(&graven, "production");
    assert_eq!(history[0]["kind"], "rollback");
    assert_eq!(history[0]["rollback_of"], 2);
    assert_eq!(history[0]["artifact"], history[2]["artifact"]);
    assert_eq!(history[0]["config"], history[2]["config"]);
    assert_eq!(history[0]["parent"], history[1]["id"]);

    let run = graven.run(["rollback", "v1", "--env", "production", "--json"]);
    assert_eq!(run.code, 0, "{run}");
    let rollback = run.json();
    assert_eq!((rollback["version"].as_str(), rollback["rollback_of"].as_u64()), (Some("v5"), Some(1)));
    assert_eq!(rollback["config"], history[3]["config"], "v1's config: before MODE was set");

    // Rolling back to exactly what runs changes nothing, so it is refused.
    insta::assert_snapshot!(graven.run(["rollback", "v1", "--env", "production"]), @r"
    exit code: 2
    ----- stdout -----
    ----- stderr -----
    error: v1 has the same artifact and config as the current release v5: rolling back to it would change nothing
    ");
    assert_eq!(releases(&graven, "production").len(), 5);
}

#[test]
fn promote_deploys_the_same_artifact_with_the_target_config() {
    let (_repo, graven) = built_app();
    graven.run(["release", "--env", "staging"]);
    graven.run(["config", "set", "WHERE=production", "--env", "production"]);
    insta::assert_snapshot!(graven.run(["promote", "staging", "production"]), @r"
    exit code: 0
    ----- stdout -----
    released shell v1 to production: Promote staging v1 ([DIGEST] from [C1], config [DIGEST])
    ----- stderr -----
    ");
    let staging = &releases(&graven, "staging")[0];
    let production = &releases(&graven, "production")[0];
    assert_eq!(production["artifact"], staging["artifact"], "build once, deploy many");
    assert_eq!(production["kind"], "promote");
    assert_eq!(production["promoted_from"], serde_json::json!({"env": "staging", "number": 1}));
    assert_ne!(production["config"], staging["config"]);
    let config = graven.run(["config", "--env", "production", "--json"]).json();
    assert_eq!(config["vars"]["WHERE"], "production");
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let (repo, graven) = built_app();
    graven.run(["release", "--env", "production"]);
    repo.write("bad.env", "A=1\nB=\"unterminated\n");
    repo.write("nul.env", "A=x\0y\n");
    let value = "v".repeat(30 * 1024);
    repo.write("large.env", format!("A={value}\nB={value}\nC={value}\n"));
    let big = format!("BIG={}", "x".repeat(32 * 1024 + 1));
    let set_big = ["config", "set", big.as_str(), "--env", "production"];
    let cases: Vec<(&[&str], &str)> = vec![
        (
            &["release", "--env", "Prod"],
            "error: 'Prod' is not a valid environment name: use a lowercase letter, then up to 62 of a-z, 0-9 and '-'\n",
        ),
        (
            &["release"],
            "error: no environment given\nhint: pass --env NAME (for example --env production), or set GRAVEN_ENV\n",
        ),
        (
            &["config", "set", "1BAD=x", "--env", "production"],
            "error: '1BAD' is not a valid config key: use letters, digits and '_', not starting with a digit\n",
        ),
        (
            &["config", "set", "NOEQUALS", "--env", "production"],
            "error: argument 1 of config set has no '=' (not shown: it may be a value)\nhint: write KEY=VALUE; for a secret, graven config set --secret KEY reads the value from standard input; to remove a variable, graven config unset KEY\n",
        ),
        (
            &["config", "set", "--secret", "hunter2 is my password", "--env", "production"],
            "error: argument 1 of config set --secret is not a config key (not shown: it may be a value)\nhint: give the key alone, graven config set --secret KEY, and type the value when asked (or pipe it in)\n",
        ),
        (
            &set_big,
            "error: the value of BIG has 32769 bytes: a config value may have at most 32768 (32 KiB)\nhint: config holds settings, not data: keep large values in a file or a store and put where they are in config\n",
        ),
        (
            &["config", "import", "large.env", "--env", "production"],
            "error: the config of production would have 92169 bytes: an environment's config may have at most 65536 (64 KiB), counted as KEY=VALUE per variable\nhint: `graven config --env production` lists what is set; unset what is no longer needed\n",
        ),
        (
            &["config", "unset", "MISSING", "--env", "production"],
            "error: MISSING is not set in production\nhint: `graven config --env production` lists the keys\n",
        ),
        (
            &["config", "import", "bad.env", "--env", "production"],
            "error: bad.env: line 2, column 3: unterminated double-quoted value for B\nhint: fix the file and import it again\n",
        ),
        (
            &["config", "import", "nul.env", "--env", "production"],
            "error: nul.env: line 1, column 4: values cannot contain NUL\nhint: fix the file and import it again\n",
        ),
        (
            &["release", "0123456789abc", "--env", "production"],
            "error: no build of app 'shell' matches '0123456789abc'\nhint: `graven builds` lists the builds; give an artifact id, a prefix of 7 or more hex digits, or a commit\n",
        ),
        (
            &["release", "show", "v9", "--env", "production"],
            "error: environment 'production' has no release v9\nhint: `graven releases --env production` lists the releases\n",
        ),
        (
            &["rollback", "--env", "production"],
            "error: environment 'production' has only one release (v1): there is nothing to roll back to\n",
        ),
        (
            &["rollback", "v7", "--env", "production"],
            "error: environment 'production' has no release v7\nhint: `graven releases --env production` lists the releases\n",
        ),
        (
            &["promote", "staging", "production"],
            "error: environment 'staging' has no release yet\nhint: release a build first: graven release --env staging\n",
        ),
    ];
    for (args, stderr) in cases {
        let run = graven.run(args.iter().map(OsString::from));
        assert!(!run.to_string().contains("hunter2"), "an argument that may be a value was repeated:\n{run}");
        assert_eq!(run.code, 2, "{args:?}:\n{run}");
        let expected = format!("----- stderr -----\n{stderr}");
        assert!(run.to_string().trim_end().ends_with(expected.trim_end()), "{args:?}:\n{run}");
    }
    assert_eq!(releases(&graven, "production").len(), 1, "nothing was released");
    let config = graven.run(["config", "--env", "production", "--json"]).json();
    assert_eq!(config["vars"], serde_json::json!({}), "nothing was set");
    let run = graven.run(["verify", "--ledger"]);
    assert_eq!(run.code, 0, "{run}");
}

#[test]
fn an_artifact_holding_a_secret_value_is_refused() {
    let repo = shell_app("[build]\ncommand = \"echo 'password=hunter2-hunter2' > settings.ini\"\n");
    let graven = Graven::in_repo(&repo);
    graven.build_json::<&str>([]);
    let run = graven.run(["config", "set", "DB_PASSWORD=hunter2-hunter2", "--secret", "--env", "production"]);
    assert_eq!(run.code, 0, "{run}");
    insta::assert_snapshot!(graven.run(["release", "--env", "production"]), @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: artifact [DIGEST] contains the value of secret config DB_PASSWORD:
          graven.toml (DB_PASSWORD)
          settings.ini (DB_PASSWORD)
        hint: config must never be baked into a build: remove the value from the files above (they come from the build), rebuild, and release the new build
        ");
    assert!(releases(&graven, "production").is_empty());
    // A value never shows, even in this error: only the key does.
    assert!(!graven.run(["release", "--env", "production"]).to_string().contains("hunter2"));
    // Short values (under 8 bytes) are not searched for: too many false alarms.
    let run = graven.run(["config", "set", "DB_PASSWORD=hunter", "--secret", "--env", "staging"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(graven.run(["release", "--env", "staging"]).code, 0);
}

#[test]
fn the_database_refuses_edits_and_verify_finds_tampering() {
    let (_repo, graven) = built_app();
    graven.run(["release", "--env", "production"]);
    graven.run(["config", "set", "A=1", "--env", "production"]);
    graven.run(["config", "set", "A=2", "--env", "production"]);
    let ledger = graven.cwd().join(".graven/ledger.sqlite");
    let connection = rusqlite::Connection::open(&ledger).unwrap();
    for (table, statement) in [
        ("releases", "UPDATE releases SET description = 'edited'"),
        ("releases", "DELETE FROM releases"),
        ("config versions", "UPDATE config_versions SET vars = '{}'"),
        ("builds", "DELETE FROM builds"),
    ] {
        let error = connection.execute(statement, []).unwrap_err().to_string();
        assert!(error.contains(&format!("{table} are append-only")), "{statement}: {error}");
    }
    connection.execute_batch("DROP TRIGGER releases_are_append_only_update;").unwrap();
    connection.execute("UPDATE releases SET description = 'nothing to see' WHERE number = 2", []).unwrap();
    drop(connection);
    insta::assert_snapshot!(graven.run(["verify", "--ledger"]), @r"
    exit code: 1
    ----- stdout -----
    production v2 was changed after it was written: its id is [DIGEST] but its fields hash to [DIGEST]
    ----- stderr -----
    error: the ledger of app 'shell' has been tampered with: 1 break found
    hint: restore the ledger from a backup; the releases named above are not what graven wrote
    ");
    let run = graven.run(["verify", "--ledger", "--json"]);
    assert_eq!(run.code, 1, "{run}");
    let json = run.json();
    assert_eq!((json["intact"].as_bool(), json["releases"].as_u64()), (Some(false), Some(3)));
    let problems = json["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{json:#}");
    assert_eq!(
        (&problems[0]["problem"], &problems[0]["env"], &problems[0]["number"]),
        (&"release_edited".into(), &"production".into(), &2.into())
    );
}

#[test]
fn twenty_concurrent_releases_are_numbered_without_gaps() {
    let (_repo, graven) = built_app();
    let children: Vec<_> = (0..20)
        .map(|i| {
            graven
                .command(["release", "--env", "production", "-m", &format!("release {i}")])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start graven")
        })
        .collect();
    for child in children {
        let output = child.wait_with_output().expect("wait for graven");
        assert!(output.status.success(), "a release failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let history = releases(&graven, "production");
    let numbers: Vec<u64> = history.iter().rev().map(|r| r["number"].as_u64().unwrap()).collect();
    assert_eq!(numbers, (1..=20).collect::<Vec<_>>());
    let mut messages: Vec<&str> = history.iter().map(|r| r["description"].as_str().unwrap()).collect();
    messages.sort_unstable();
    messages.dedup();
    assert_eq!(messages.len(), 20, "none lost");
    let run = graven.run(["verify", "--ledger"]);
    assert_eq!(run.code, 0, "every parent link is right:\n{run}");
}

#[test]
fn a_release_killed_midway_leaves_nothing_half_made() {
    let (_repo, graven) = built_app();
    graven.run(["config", "set", "A=1", "--env", "production"]);
    // Killed inside the ledger's transaction, after the config version row
    // and before the release row: neither may appear.
    let mut child = graven.spawn_to_fail_point(&["release", "--env", "production"], "ledger-append-before-release");
    child.kill().expect("SIGKILL graven");
    child.wait().expect("reap graven");
    assert!(releases(&graven, "production").is_empty());
    let mut child =
        graven.spawn_to_fail_point(&["config", "set", "B=2", "--env", "production"], "ledger-append-before-release");
    child.kill().expect("SIGKILL graven");
    child.wait().expect("reap graven");
    let config = graven.run(["config", "--env", "production", "--json"]).json();
    assert_eq!(config["vars"], serde_json::json!({"A": "1"}));

    let run = graven.run(["release", "--env", "production", "--json"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.json()["version"], "v1");
    let run = graven.run(["verify", "--ledger"]);
    assert_eq!(run.code, 0, "{run}");
}

#[test]
fn bad_store_urls_and_unknown_schemes_are_refused_rather_than_ignored() {
    let (repo, graven) = built_app();
    let before = graven.run(["releases", "--env", "production", "--json"]);
    let graven = Graven::in_repo(&repo).env("GRAVEN_STORE", "s3://Not_A_Bucket/graven");
    let run = graven.run(["build", "--force"]);
    insta::assert_snapshot!(run, @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: 's3://Not_A_Bucket/graven' is not a store URL: the bucket name must be 3 to 63 of a-z, 0-9, '.' and '-'
        hint: set GRAVEN_STORE (or --store-url) to a store URL graven knows, or unset it to use [TEMP]/.graven/store
        ");
    let run = Graven::in_repo(&repo).env("GRAVEN_STORE", "s3://bucket/../up").run(["build", "--force"]);
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("the prefix must be names of"), "{run}");
    for url in ["mysql://root:hunter2@db/graven", "ftp://u:hunter2@host/x", "/no/scheme"] {
        let run = Graven::in_repo(&repo).env("GRAVEN_LEDGER", url).run(["releases", "--env", "production"]);
        assert_eq!(run.code, 2, "{run}");
        assert!(run.stderr.contains("is not a ledger URL: use postgres://"), "{run}");
        assert!(!run.to_string().contains("hunter2"), "a password was shown:\n{run}");
    }
    let run = Graven::in_repo(&repo).env("GRAVEN_STORE", "gs://bucket").run(["build", "--force"]);
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("'gs://bucket' is not a store URL: use s3://BUCKET/PREFIX, or file:PATH"), "{run}");

    // Another embedded ledger and store, named by URL, are used as asked.
    let elsewhere = tempfile::tempdir().unwrap();
    let ledger = format!("sqlite:{}", elsewhere.path().join("ledger.sqlite").display());
    let store = format!("file:{}", elsewhere.path().join("store").display());
    let other = Graven::in_repo(&repo).env("GRAVEN_LEDGER", &ledger).env("GRAVEN_STORE", &store);
    other.build_json(["--force"]);
    assert!(elsewhere.path().join("ledger.sqlite").exists() && elsewhere.path().join("store/artifacts").is_dir());
    assert_eq!(other.builds().len(), 1, "the other ledger has its own history");

    let after = Graven::in_repo(&repo).run(["releases", "--env", "production", "--json"]);
    assert_eq!(before.stdout, after.stdout, "nothing changed");
}

#[test]
fn releases_and_release_show_say_from_which_host_a_release_was_made() {
    let (_repo, graven) = built_app();
    assert_eq!(graven.run(["release", "--env", "production"]).code, 0);
    let host = crate::common::host();
    let json = graven.run(["releases", "--env", "production", "--json"]).json();
    assert_eq!(json[0]["host"], host.as_str());
    let table = graven.run(["releases", "--env", "production"]);
    assert!(table.stdout.lines().next().unwrap().contains(" BY ") && table.stdout.contains(" FROM "), "{table}");
    assert!(table.stdout.contains(&format!("dev@example.com  {host}")), "{table}");
    let show = graven.run(["release", "show", "v1", "--env", "production"]);
    assert!(show.stdout.lines().any(|line| line.starts_with("from") && line.ends_with(host.as_str())), "{show}");
    assert_eq!(graven.run(["verify", "--ledger"]).code, 0, "the host is part of the hash chain");
}
