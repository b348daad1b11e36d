//! Files are private: after a whole scenario (a secret set, a build, a
//! release, a runner that served and logged, an exec), another local user
//! can read nothing under the home, and every mode is the one graven
//! promises. Processes get config in their environment, never in argv.

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{Graven, shell_app};

const SECRET: &str = "private-value-31337";

fn everything_under(dir: &Path) -> Vec<PathBuf> {
    let mut all = vec![dir.to_owned()];
    if std::fs::symlink_metadata(dir).is_ok_and(|meta| meta.is_dir()) {
        for entry in std::fs::read_dir(dir).unwrap() {
            all.extend(everything_under(&entry.unwrap().path()));
        }
    }
    all
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn after_a_whole_scenario_another_user_can_read_nothing_under_the_home() {
    let repo = shell_app("");
    repo.write("Procfile", "web: exec python3 -m http.server \"$PORT\" --bind 127.0.0.1\n");
    repo.commit("A web process");
    let graven = Graven::in_repo(&repo);
    let mut set = graven
        .command(["config", "set", "--secret", "TOKEN", "--env", "production"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    set.stdin.take().unwrap().write_all(format!("{SECRET}\n").as_bytes()).unwrap();
    assert!(set.wait().unwrap().success());
    graven.build_json::<&str>([]);
    assert_eq!(graven.run(["release", "--env", "production"]).code, 0);

    // Stopped when dropped, should an assertion fail first.
    let mut runner = crate::common::runner::Runner::start(&graven, crate::common::runner::free_port(), &[]);
    let start = Instant::now();
    let web_pid = loop {
        let status = graven.run(["status", "--env", "production", "--json"]).json();
        if status["in_sync"] == true {
            break status["processes"][0]["pid"].as_u64().unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "never in sync: {status:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    // Config reaches the process through its environment only.
    let cmdline = std::fs::read(format!("/proc/{web_pid}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(SECRET), "the secret is in web.1's argv");
    let environ = std::fs::read(format!("/proc/{web_pid}/environ")).unwrap();
    assert!(String::from_utf8_lossy(&environ).contains(&format!("TOKEN={SECRET}")));
    assert_eq!(graven.run(["exec", "--env", "production", "--", "true"]).code, 0);
    assert!(runner.terminate().success());

    let home = repo.path().join(".graven");
    let all = everything_under(&home);
    assert_eq!(mode(&home), 0o700, "the home");
    for path in &all {
        let meta = std::fs::symlink_metadata(path).unwrap();
        let name = path.strip_prefix(&home).unwrap().display().to_string();
        let m = mode(path);
        if name.starts_with("ledger.sqlite") || name.ends_with("graven.log") || name.ends_with("groups.json") {
            assert_eq!(m, 0o600, "{name} is {m:04o}");
        } else if name.starts_with("store/") && meta.is_file() {
            assert_eq!(m & 0o222, 0, "store object {name} is writable ({m:04o})");
        } else if name.starts_with("run") && meta.is_dir() {
            assert_eq!(m, 0o700, "{name} is {m:04o}");
        }
    }
    assert!(all.iter().any(|p| p.ends_with("graven.log")), "the scenario wrote a log");

    // As another user: nothing under the home can be listed or read.
    let mut nobody = std::process::Command::new("runuser")
        .args([
            "-u",
            "nobody",
            "--",
            "sh",
            "-c",
            r#"while IFS= read -r p; do if [ -r "$p" ]; then echo "$p"; fi; done"#,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run runuser (util-linux)");
    let list = all.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join("\n") + "\n";
    nobody.stdin.take().unwrap().write_all(list.as_bytes()).unwrap();
    let output = nobody.wait_with_output().unwrap();
    assert!(output.status.success());
    let readable = String::from_utf8_lossy(&output.stdout);
    assert!(readable.is_empty(), "nobody can read:\n{readable}");
    let query = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--", "cat"])
        .arg(home.join("ledger.sqlite"))
        .output()
        .unwrap();
    assert!(!query.status.success(), "nobody read the ledger");
}

#[test]
fn a_home_others_can_read_is_made_private_and_that_is_said_once() {
    let repo = shell_app("");
    let graven = Graven::in_repo(&repo);
    graven.build_json::<&str>([]);
    let home = repo.path().join(".graven");
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ledger = home.join("ledger.sqlite");
    std::fs::set_permissions(&ledger, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = graven.run(["builds"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stderr.contains("(mode 0755 -> 0700): it holds config values"), "{run}");
    assert_eq!((mode(&home), mode(&ledger)), (0o700, 0o600));
    let again = graven.run(["builds"]);
    assert!(!again.stderr.contains("private"), "said twice:\n{again}");
}
