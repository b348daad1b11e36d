//! The build command sees no runtime config: a scrubbed environment with
//! only what DESIGN.md lists, plus `[build] env` and `pass_env`.

use std::collections::BTreeMap;

use graven_testutils::FIRST_COMMIT_TIME;

use crate::common::{Graven, shell_app};

/// The build command writes its whole environment into the artifact.
const DUMP_ENV: &str = "[build]\ncommand = \"env > env.txt\"\n";

fn build_env(graven: &Graven, args: &[&str]) -> BTreeMap<String, String> {
    let run = graven.run([&["build"], args].concat());
    assert_eq!(run.code, 0, "{run}");
    let tree = graven.unpack("HEAD");
    let text = std::fs::read_to_string(tree.path().join("tree/env.txt")).unwrap();
    text.lines()
        .map(|line| {
            let (name, value) = line.split_once('=').unwrap_or((line, ""));
            (name.to_owned(), value.to_owned())
        })
        .collect()
}

#[test]
fn the_build_command_sees_a_scrubbed_environment() {
    let repo = shell_app(DUMP_ENV);
    let commit = repo.git(&["rev-parse", "HEAD"]).trim().to_owned();
    let graven = Graven::in_repo(&repo)
        .env("DATABASE_URL", "postgres://user:secret@db/prod")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("GRAVEN_APP", "shell")
        .env("LANG", "fr_FR.UTF-8")
        .env("TMPDIR", std::env::temp_dir());
    let env = build_env(&graven, &[]);

    let names: Vec<&str> = env.keys().map(String::as_str).collect();
    // Other shells than dash, `sh` on Debian, also set SHLVL and `_`.
    let names: Vec<&str> = names.into_iter().filter(|name| !["SHLVL", "_", "OLDPWD"].contains(name)).collect();
    assert_eq!(names, ["GRAVEN_COMMIT", "HOME", "LANG", "PATH", "PWD", "SOURCE_DATE_EPOCH", "TMPDIR"]);
    assert_eq!(env["GRAVEN_COMMIT"], commit);
    assert_eq!(env["SOURCE_DATE_EPOCH"], FIRST_COMMIT_TIME.to_string(), "the commit time, not the clock");
    assert_eq!(env["LANG"], "C.UTF-8", "not the caller's locale");
    assert_eq!(env["PATH"], std::env::var("PATH").unwrap());
    // The same on every machine: no host path, no pid.
    assert_eq!((env["HOME"].as_str(), env["TMPDIR"].as_str(), env["PWD"].as_str()), ("/tmp/home", "/tmp", "/app"));
}

#[test]
fn without_the_sandbox_home_and_tmpdir_are_the_builds_own_scratch_directories() {
    let repo = shell_app(DUMP_ENV);
    let env = build_env(&Graven::in_repo(&repo), &["--no-sandbox"]);
    // HOME and TMPDIR are the build's own, empty and thrown away.
    let home = repo.path().join(".graven/tmp");
    for name in ["HOME", "TMPDIR"] {
        assert!(
            std::path::Path::new(&env[name]).starts_with(&home),
            "{name}={} is not under {}",
            env[name],
            home.display()
        );
        assert!(!std::path::Path::new(&env[name]).exists(), "{name} is removed after the build");
    }
    assert_ne!(env["HOME"], env["TMPDIR"]);
}

#[test]
fn build_env_and_pass_env_add_variables() {
    let repo = shell_app(
        "[build]\ncommand = \"env > env.txt\"\nenv = { NODE_ENV = \"production\", LANG = \"en_US.UTF-8\" }\npass_env = [\"CI\", \"NOT_SET_ANYWHERE\"]\n",
    );
    let graven = Graven::in_repo(&repo).env("CI", "true").env("DATABASE_URL", "secret");
    let env = build_env(&graven, &[]);
    assert_eq!(env.get("NODE_ENV").map(String::as_str), Some("production"));
    assert_eq!(env.get("LANG").map(String::as_str), Some("en_US.UTF-8"), "[build] env wins over the defaults");
    assert_eq!(env.get("CI").map(String::as_str), Some("true"), "pass_env lets CI through");
    assert!(!env.contains_key("NOT_SET_ANYWHERE"), "a pass_env variable the caller has not set stays unset");
    assert!(!env.contains_key("DATABASE_URL"), "only what pass_env names gets through");
}
