//! `graven kube render|apply` and `graven status --kube`: a release's
//! Kubernetes objects, valid for the official schemas (kubernetes-validate,
//! offline), applied through a recording fake `kubectl` on PATH (no
//! cluster can run here), and the cluster's state read from canned
//! `kubectl get -o json` output.

use std::path::PathBuf;
use std::process::Command;

use graven::Digest;
use graven::ledger::{Ledger as _, SqliteLedger};
use graven::model::NewPush;
use graven_testutils::TestRepo;

use crate::common::Graven;
use crate::test_image::busybox_app;

const PROCFILE: &str = "web: ./web\nworker: ./web --work\nrelease: ./web --migrate\n";

/// A busybox app with web, worker and a release phase, built, "pushed"
/// (recorded as `graven push` records it) and released to production
/// with a plain and a secret config variable.
fn released() -> (TestRepo, Graven, serde_json::Value) {
    let repo = busybox_app("[run]\nhealth = \"/healthz\"\n");
    repo.write("Procfile", PROCFILE);
    repo.commit("Three process types");
    let graven = Graven::in_repo(&repo);
    let build = graven.build_json::<&str>([]);
    record_push(&repo, &build);
    for args in [
        &["config", "set", "--env", "production", "GREETING=hello"][..],
        &["config", "set", "--env", "production", "--secret", "API_TOKEN=s3cret-token"],
        &["scale", "--env", "production", "worker=2"],
        &["release", "--env", "production"],
    ] {
        let run = graven.run(args);
        assert_eq!(run.code, 0, "{run}");
    }
    (repo, graven, build)
}

/// What `graven push` records, written straight to the app's ledger.
fn record_push(repo: &TestRepo, build: &serde_json::Value) {
    let ledger = SqliteLedger::open(&repo.path().join(".graven/ledger.sqlite")).unwrap();
    let artifact: Digest = build["artifact"].as_str().unwrap().parse().unwrap();
    let commit = build["commit"].as_str().unwrap().to_owned();
    ledger
        .record_push(&NewPush {
            app: "boxed".to_owned(),
            artifact,
            commit: commit.clone(),
            repository: "registry.example.com/boxed".to_owned(),
            tags: vec![commit],
            digest: Digest::of(b"the manifest"),
            author: "dev@example.com".to_owned(),
            created_at: "2026-01-01T00:00:00Z".to_owned(),
        })
        .unwrap();
}

fn render_json(graven: &Graven, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["kube", "render", "--env", "production", "-o", "json"];
    args.extend_from_slice(extra);
    let run = graven.run(&args);
    assert_eq!(run.code, 0, "{run}");
    let list = run.json();
    assert_eq!(list["kind"], "List");
    list["items"].as_array().unwrap().clone()
}

fn find<'a>(items: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    items.iter().find(|i| i["kind"] == kind && i["metadata"]["name"] == name).unwrap_or_else(|| {
        panic!(
            "no {kind} {name} in {:#?}",
            items.iter().map(|i| (&i["kind"], &i["metadata"]["name"])).collect::<Vec<_>>()
        )
    })
}

#[test]
fn a_release_renders_as_immutable_config_a_release_job_deployments_and_a_service() {
    let (_repo, graven, build) = released();
    let items = render_json(&graven, &[]);
    let kinds: Vec<(&str, &str)> =
        items.iter().map(|i| (i["kind"].as_str().unwrap(), i["metadata"]["name"].as_str().unwrap())).collect();
    assert_eq!(
        kinds,
        [
            ("ConfigMap", "boxed-production-v1"),
            ("Secret", "boxed-production-v1"),
            ("Job", "boxed-production-v1-release"),
            ("Deployment", "boxed-production-web"),
            ("Deployment", "boxed-production-worker"),
            ("Service", "boxed-production-web"),
        ],
        "config first, then the release phase, then the workloads"
    );
    let config_map = find(&items, "ConfigMap", "boxed-production-v1");
    assert_eq!(config_map["immutable"], true);
    assert_eq!(config_map["data"], serde_json::json!({ "GREETING": "hello" }), "no secret in the ConfigMap");
    let secret = find(&items, "Secret", "boxed-production-v1");
    assert_eq!(secret["immutable"], true);
    // base64("s3cret-token")
    assert_eq!(secret["data"], serde_json::json!({ "API_TOKEN": "czNjcmV0LXRva2Vu" }));
    let everything = serde_json::to_string(&items).unwrap();
    assert!(!everything.contains("s3cret-token"), "the secret appears only encoded, in the Secret");

    let web = find(&items, "Deployment", "boxed-production-web");
    assert_eq!(web["spec"]["replicas"], 1);
    let worker = find(&items, "Deployment", "boxed-production-worker");
    assert_eq!(worker["spec"]["replicas"], 2, "the formation's count");
    let annotations = &web["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["graven.dev/release"], "v1");
    assert_eq!(annotations["graven.dev/commit"], build["commit"]);
    assert_eq!(annotations["graven.dev/artifact"], build["artifact"]);
    assert!(annotations["graven.dev/config"].as_str().unwrap().starts_with("sha256:"));
    let labels = &web["spec"]["template"]["metadata"]["labels"];
    assert_eq!(
        (&labels["app.kubernetes.io/name"], &labels["graven.dev/env"], &labels["graven.dev/process"]),
        (&serde_json::json!("boxed"), &serde_json::json!("production"), &serde_json::json!("web"))
    );
    let container = &web["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], format!("registry.example.com/boxed@{}", Digest::of(b"the manifest")));
    assert_eq!(container["command"], serde_json::json!(["./web"]));
    assert_eq!(container["workingDir"], "/app");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["volumeMounts"], serde_json::json!([{ "name": "tmp", "mountPath": "/tmp" }]));
    assert_eq!(web["spec"]["template"]["spec"]["volumes"], serde_json::json!([{ "name": "tmp", "emptyDir": {} }]));
    assert_eq!(
        container["envFrom"],
        serde_json::json!([{ "configMapRef": { "name": "boxed-production-v1" } }, { "secretRef": { "name": "boxed-production-v1" } }])
    );
    let env: Vec<&str> = container["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert!(env.contains(&"GRAVEN_RELEASE") && env.contains(&"PORT") && !env.contains(&"GREETING"), "{env:?}");
    assert!(!env.contains(&"PATH"), "PATH comes from the image");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/healthz");
    let job = find(&items, "Job", "boxed-production-v1-release");
    assert_eq!(job["spec"]["template"]["spec"]["containers"][0]["command"], serde_json::json!(["./web", "--migrate"]));
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
    let service = find(&items, "Service", "boxed-production-web");
    assert_eq!(service["spec"]["ports"][0]["port"], 8080);
    assert_eq!(service["spec"]["selector"]["graven.dev/process"], "web");
}

/// kubernetes-validate, from the README's test command; `None` (the test
/// skips) outside it.
fn kubernetes_validate() -> Option<PathBuf> {
    let found = std::env::var_os("GRAVEN_TEST_KUBERNETES_VALIDATE").map(PathBuf::from).filter(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must validate the manifests: GRAVEN_TEST_KUBERNETES_VALIDATE is not set"
        );
        eprintln!("GRAVEN_TEST_KUBERNETES_VALIDATE is not set: skipping (./scripts/test installs kubernetes-validate)");
    }
    found
}

#[test]
fn rendered_manifests_pass_the_official_schemas_strictly() {
    let Some(validate) = kubernetes_validate() else { return };
    let (_repo, graven, _) = released();
    let dir = tempfile::tempdir().unwrap();
    let yaml = graven.run(["kube", "render", "--env", "production"]);
    assert_eq!(yaml.code, 0, "{yaml}");
    let path = dir.path().join("release.yaml");
    std::fs::write(&path, &yaml.stdout).unwrap();
    // The oldest version graven supports and the newest the tool knows.
    for version in [Some("1.30.0"), None] {
        let mut command = Command::new(&validate);
        command.arg("--strict");
        if let Some(version) = version {
            command.args(["-k", version]);
        }
        let output = command.arg(&path).output().unwrap();
        let said = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{version:?}: {said}{}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(said.matches("passed").count(), 6, "{said}");
    }
}

#[test]
fn a_rollback_renders_the_older_releases_config_with_its_code() {
    let (_repo, graven, _) = released();
    let run = graven.run(["config", "set", "--env", "production", "GREETING=changed"]);
    assert_eq!(run.code, 0, "{run}");
    let newest = render_json(&graven, &[]);
    assert_eq!(find(&newest, "ConfigMap", "boxed-production-v2")["data"]["GREETING"], "changed");
    let older = render_json(&graven, &["--release", "v1"]);
    assert_eq!(find(&older, "ConfigMap", "boxed-production-v1")["data"]["GREETING"], "hello");
    let web = find(&older, "Deployment", "boxed-production-web");
    assert_eq!(
        web["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["configMapRef"]["name"],
        "boxed-production-v1"
    );
}

#[test]
fn what_cannot_be_rendered_is_refused_naming_the_rule() {
    let repo = busybox_app("");
    repo.write("Procfile", "web: ./web\nclock_worker: ./web\n");
    repo.commit("A process type Kubernetes cannot name");
    let graven = Graven::in_repo(&repo);
    insta::assert_snapshot!(graven.run(["kube", "render", "--env", "production"]), @r"
        exit code: 2
        ----- stdout -----
        ----- stderr -----
        error: environment 'production' has no release yet
        hint: release a build first: graven release --env production
        ");
    let build = graven.build_json::<&str>([]);
    assert_eq!(graven.run(["release", "--env", "production"]).code, 0);
    insta::assert_snapshot!(graven.run(["kube", "render", "--env", "production"]), @r"
    exit code: 2
    ----- stdout -----
    ----- stderr -----
    error: the build of v1 ([C2]) has not been pushed: Kubernetes pulls its image from a registry
    hint: push it first: graven push [C2] REGISTRY/REPOSITORY
    ");
    record_push(&repo, &build);
    insta::assert_snapshot!(graven.run(["kube", "render", "--env", "production"]), @r"
    exit code: 2
    ----- stdout -----
    ----- stderr -----
    error: process type 'clock_worker' makes the container name 'clock_worker', which is not a valid Kubernetes name: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit; rename it, like 'clock-worker'
    ");
    repo.write("Procfile", "web: ./web\n");
    repo.commit("Only web");
    let build = graven.build_json::<&str>([]);
    record_push(&repo, &build);
    assert_eq!(graven.run(["release", "--env", "production"]).code, 0);
    assert_eq!(graven.run(["scale", "--env", "production", "web=0"]).code, 0);
    insta::assert_snapshot!(graven.run(["kube", "render", "--env", "production"]), @r"
    exit code: 2
    ----- stdout -----
    ----- stderr -----
    error: the formation of production runs no web process (web=0): nothing would serve the Service
    hint: scale it first: graven scale --env production web=1
    ");
}

/// A fake kubectl on PATH: each call's arguments, stdin (for apply) and
/// KUBECONFIG in a directory of its own; `get` prints `get.json`; a call
/// whose arguments contain the text in `fail` fails; `rollout` runs
/// `during-rollout` first, if there is one (see [`FakeKubectl::during_rollout`]).
struct FakeKubectl {
    dir: tempfile::TempDir,
}

impl FakeKubectl {
    fn new(fail: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let calls = dir.path().join("calls");
        std::fs::create_dir(&calls).unwrap();
        let script = format!(
            r#"#!/bin/sh
n=$(ls "{calls}" | wc -l)
call="{calls}/$(printf '%03d' "$n")"
mkdir "$call"
printf '%s\n' "$@" > "$call/args"
printf '%s' "${{KUBECONFIG:-}}" > "$call/kubeconfig"
case " $* " in *" apply "*) cat > "$call/stdin" ;; esac
if [ -n "{fail}" ]; then
    case " $* " in *"{fail}"*) echo "error: timed out waiting for the condition" >&2; exit 1 ;; esac
fi
case " $* " in *" get "*) cat "{dir}/get.json" ;; esac
case " $* " in *" rollout "*) [ ! -x "{dir}/during-rollout" ] || "{dir}/during-rollout" ;; esac
exit 0
"#,
            calls = calls.display(),
            dir = dir.path().display(),
            fail = fail.unwrap_or(""),
        );
        let program = dir.path().join("kubectl");
        std::fs::write(&program, script).unwrap();
        std::fs::set_permissions(&program, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        Self { dir }
    }

    fn path_env(&self) -> std::ffi::OsString {
        let mut paths = vec![self.dir.path().to_owned()];
        paths.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
        std::env::join_paths(paths).unwrap()
    }

    /// Each call: its arguments, its stdin, its KUBECONFIG.
    fn calls(&self) -> Vec<(Vec<String>, String, String)> {
        let mut dirs: Vec<PathBuf> =
            std::fs::read_dir(self.dir.path().join("calls")).unwrap().map(|e| e.unwrap().path()).collect();
        dirs.sort();
        dirs.iter()
            .map(|dir| {
                let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
                (read("args").lines().map(str::to_owned).collect(), read("stdin"), read("kubeconfig"))
            })
            .collect()
    }

    /// Runs `script` (sh) whenever a rollout is waited for.
    fn during_rollout(&self, script: &str) {
        let program = self.dir.path().join("during-rollout");
        std::fs::write(&program, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&program, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }

    fn answer_get(&self, json: &serde_json::Value) {
        std::fs::write(self.dir.path().join("get.json"), json.to_string()).unwrap();
    }
}

fn kinds_in(yaml: &str) -> Vec<String> {
    yaml.lines().filter_map(|line| line.strip_prefix("kind: ")).map(str::to_owned).collect()
}

#[test]
fn apply_runs_the_release_job_first_waits_for_the_rollouts_and_records_them() {
    let (repo, graven, _) = released();
    let kubectl = FakeKubectl::new(None);
    let graven = graven.env("PATH", kubectl.path_env()).env("KUBECONFIG", "/etc/graven-test/kubeconfig");
    let run = graven.run(["kube", "apply", "--env", "production", "--context", "prod", "--timeout", "90s"]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.stdout, "v1 of production runs on Kubernetes (prod)\n");
    let calls = kubectl.calls();
    let args: Vec<String> = calls.iter().map(|(args, _, _)| args.join(" ")).collect();
    assert_eq!(
        args,
        [
            "--context prod apply -f -",
            "--context prod apply -f -",
            "--context prod wait --for=condition=complete --timeout=90s job/boxed-production-v1-release",
            "--context prod apply -f -",
            "--context prod rollout status --timeout=90s deployment/boxed-production-web",
            "--context prod rollout status --timeout=90s deployment/boxed-production-worker",
        ]
    );
    assert_eq!(kinds_in(&calls[0].1), ["ConfigMap", "Secret"]);
    assert_eq!(kinds_in(&calls[1].1), ["Job"]);
    assert_eq!(kinds_in(&calls[3].1), ["Deployment", "Deployment", "Service"]);
    assert!(
        calls.iter().all(|(_, _, kubeconfig)| kubeconfig == "/etc/graven-test/kubeconfig"),
        "KUBECONFIG is honoured"
    );

    let ledger = SqliteLedger::open(&repo.path().join(".graven/ledger.sqlite")).unwrap();
    let states = ledger.run_states("boxed", "production").unwrap();
    let state = states.iter().find(|s| s.host == "kubernetes/prod").expect("the rollout is recorded");
    assert_eq!(state.running.as_ref().map(|r| r.number), Some(1));
    assert_eq!(state.state, graven::model::RunnerState::Cluster);
    let status = graven.run(["status", "--env", "production"]);
    assert_eq!(status.code, 0, "{status}");
    assert!(status.stdout.contains("in sync       yes"), "{status}");
    assert!(status.stdout.contains("cluster       v1 applied to kubernetes/prod just now"), "{status}");
    let runs = ledger.release_phase_runs("boxed", "production", 1..=1).unwrap();
    assert!(runs.started.contains(&1), "the release Job is recorded as v1's release phase: {runs:?}");
}

#[test]
fn a_rollout_is_recorded_with_the_formation_it_applied_not_one_scaled_to_meanwhile() {
    let (repo, graven, _) = released();
    let kubectl = FakeKubectl::new(None);
    // Someone scales while the Deployments roll out.
    kubectl.during_rollout(&format!(
        "exec {} scale --env production worker=5 >/dev/null 2>&1",
        env!("CARGO_BIN_EXE_graven")
    ));
    let graven = graven.env("PATH", kubectl.path_env());
    let run = graven.run(["kube", "apply", "--env", "production"]);
    assert_eq!(run.code, 0, "{run}");
    let applied = &kubectl.calls()[3].1;
    assert!(applied.contains("replicas: 2"), "worker=2 was applied: {applied}");

    let ledger = SqliteLedger::open(&repo.path().join(".graven/ledger.sqlite")).unwrap();
    assert_eq!(ledger.formation("boxed", "production").unwrap().unwrap().formation.count("worker"), 5);
    let states = ledger.run_states("boxed", "production").unwrap();
    let state = states.iter().find(|s| s.host.starts_with("kubernetes/")).expect("the rollout is recorded");
    let running = state.running.as_ref().unwrap();
    assert_eq!(running.formation.count("worker"), 2, "what the cluster was given: {running:?}");
    let wait = graven.run(["scale", "--env", "production", "worker=5", "--wait", "--wait-timeout", "1"]);
    assert_eq!(wait.code, 1, "the cluster does not run worker=5 until it is applied again: {wait}");
}

#[test]
fn a_release_job_that_fails_stops_the_rollout_before_the_deployments() {
    let (_repo, graven, _) = released();
    let kubectl = FakeKubectl::new(Some("job/"));
    let graven = graven.env("PATH", kubectl.path_env());
    let run = graven.run(["kube", "apply", "--env", "production"]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("kubectl could not see the release phase complete: error: timed out"), "{run}");
    assert!(run.stderr.contains("kubectl logs job/boxed-production-v1-release"), "{run}");
    let applied: Vec<String> = kubectl.calls().iter().flat_map(|(_, stdin, _)| kinds_in(stdin)).collect();
    assert_eq!(applied, ["ConfigMap", "Secret", "Job"], "no Deployment is applied");
}

fn deployment(process: &str, release: &str, replicas: u64, ready: u64) -> serde_json::Value {
    serde_json::json!({
        "metadata": { "labels": { "app.kubernetes.io/name": "boxed", "graven.dev/env": "production", "graven.dev/process": process } },
        "spec": { "replicas": replicas, "template": { "metadata": { "annotations": { "graven.dev/release": release } } } },
        "status": { "readyReplicas": ready, "updatedReplicas": replicas },
    })
}

#[test]
fn status_kube_reports_which_release_each_process_type_runs() {
    let (_repo, graven, _) = released();
    let kubectl = FakeKubectl::new(None);
    let graven = graven.env("PATH", kubectl.path_env());
    kubectl
        .answer_get(&serde_json::json!({ "items": [deployment("web", "v1", 1, 1), deployment("worker", "v1", 2, 2)] }));
    let run = graven.run(["status", "--env", "production", "--kube"]);
    insta::assert_snapshot!(run, @r"
    exit code: 0
    ----- stdout -----
    boxed production on Kubernetes: v1 is released, and runs everywhere
    PROCESS  RELEASE  READY
    web      v1       1/1    desired
    worker   v1       2/2    desired
    ----- stderr -----
    ");
    let (args, _, _) = &kubectl.calls()[0];
    assert_eq!(args.join(" "), "get deployments -l app.kubernetes.io/name=boxed,graven.dev/env=production -o json");

    // The worker still runs an older release.
    kubectl
        .answer_get(&serde_json::json!({ "items": [deployment("web", "v1", 1, 1), deployment("worker", "v0", 2, 2)] }));
    let run = graven.run(["status", "--env", "production", "--kube", "--json"]);
    assert_eq!(run.code, 1, "{run}");
    let json = run.json();
    assert_eq!(json["in_sync"], false);
    assert_eq!(json["desired"], "v1");
    assert_eq!(json["processes"][1]["release"], "v0");
    assert_eq!(json["processes"][1]["desired"], false);
}
