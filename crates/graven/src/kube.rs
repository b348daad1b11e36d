//! A release as Kubernetes objects, and what a cluster says it runs.
//!
//! [`render`] is a pure function of a release, its config, its artifact,
//! the environment's formation and the image the build was pushed as
//! (by digest). It uses the release's [`plan`](crate::run::plan) — the
//! same commands and environment the runner and `exec` use — and adds only
//! what is Kubernetes': per release an immutable ConfigMap and Secret named
//! `<app>-<env>-v<N>` (secret keys in the Secret, the rest in the
//! ConfigMap), the Procfile's `release` command as a Job
//! `<app>-<env>-v<N>-release`, a Deployment per process type, a Service
//! for `web`. Because each release has its own ConfigMap and Secret, a
//! rollback applies the older release's objects, and its config comes back
//! with its code.
//!
//! [`deployed`] reads `kubectl get deployments -o json` back into which
//! release each process type runs.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::model::{Artifact, ConfigVersion, Formation, Release};
use crate::run::plan::{WEB, plan};

/// The port a `web` container listens on (its `PORT`), and the Service's.
pub const WEB_PORT: u16 = 8080;

/// Labels every object has.
pub const APP_LABEL: &str = "app.kubernetes.io/name";
/// The environment's label.
pub const ENV_LABEL: &str = "graven.dev/env";
/// The process type's label.
pub const PROCESS_LABEL: &str = "graven.dev/process";
/// The annotation naming the release (`v7`).
pub const RELEASE_ANNOTATION: &str = "graven.dev/release";

/// What to render.
pub struct KubeRelease<'a> {
    /// The release.
    pub release: &'a Release,
    /// Its config version.
    pub config: &'a ConfigVersion,
    /// Its artifact.
    pub artifact: &'a Artifact,
    /// The environment's formation.
    pub formation: &'a Formation,
    /// The build's image, by digest (`registry.example.com/shop@sha256:…`).
    pub image: &'a str,
}

/// A release's objects, in the order they are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifests {
    /// The ConfigMap and the Secret: applied first.
    pub config: Vec<Value>,
    /// The release phase's Job, if the Procfile has one: applied, and
    /// waited for, before the workloads.
    pub job: Option<(String, Value)>,
    /// The Deployments (by name) and the Service.
    pub workloads: Vec<Value>,
    /// The Deployments' names, for `kubectl rollout status`.
    pub deployments: Vec<String>,
}

impl Manifests {
    /// Every object, in order.
    pub fn all(&self) -> Vec<&Value> {
        self.config.iter().chain(self.job.iter().map(|(_, job)| job)).chain(&self.workloads).collect()
    }
}

/// Objects as YAML documents, separated by `---`.
pub fn to_yaml(objects: &[&Value]) -> String {
    objects
        .iter()
        .map(|object| serde_yaml_ng::to_string(object).expect("JSON values serialise as YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Objects as one JSON `List`.
pub fn to_json_list(objects: &[&Value]) -> Value {
    json!({ "apiVersion": "v1", "kind": "List", "items": objects })
}

/// A release that cannot be rendered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KubeError {
    /// A name made from the app, the environment or a process type is not
    /// a valid Kubernetes name.
    #[error(
        "{what} '{name}' makes the {object} name '{made}', which is not a valid Kubernetes name: {rule}; \
         rename it, like '{suggestion}'"
    )]
    Name {
        /// `process type`, `app`, `environment`.
        what: &'static str,
        /// Its name.
        name: String,
        /// The object (`Deployment`, `Service`…).
        object: &'static str,
        /// The name made.
        made: String,
        /// The rule it breaks.
        rule: &'static str,
        /// A name that would do.
        suggestion: String,
    },
    /// `web=0`: nothing would serve.
    #[error("the formation of {env} runs no web process (web=0): nothing would serve the Service")]
    NoWeb {
        /// The environment.
        env: String,
    },
}

const LABEL_RULE: &str = "at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit";
const SERVICE_RULE: &str =
    "at most 63 lowercase letters, digits and '-', starting with a letter and ending with a letter or digit";

/// Whether `name` is a DNS-1123 label (or, `service`, a DNS-1035 one).
fn is_label(name: &str, service: bool) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(|b| if service { b.is_ascii_lowercase() } else { b.is_ascii_alphanumeric() })
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// A name like `name` that is a label: lowercase, other characters as
/// `-`, trimmed.
fn suggest(name: &str, room: usize) -> String {
    let mapped: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let mut cut: String = mapped.trim_matches('-').chars().take(room.max(1)).collect();
    while cut.ends_with('-') {
        cut.pop();
    }
    if cut.is_empty() { "app".to_owned() } else { cut }
}

/// Checks the name `made` of `object`, made from `what` `name` (whose
/// part of it is `name`): an error with a suggestion if it is not a label.
fn check(what: &'static str, name: &str, object: &'static str, made: &str, service: bool) -> Result<(), KubeError> {
    if is_label(made, service) {
        return Ok(());
    }
    let room = 63usize.saturating_sub(made.len().saturating_sub(name.len()));
    Err(KubeError::Name {
        what,
        name: name.to_owned(),
        object,
        made: made.to_owned(),
        rule: if service { SERVICE_RULE } else { LABEL_RULE },
        suggestion: suggest(name, room),
    })
}

/// The objects of `request`'s release; see the module.
pub fn render(request: &KubeRelease<'_>) -> Result<Manifests, KubeError> {
    let KubeRelease { release, config, artifact, formation, .. } = *request;
    let plan = plan(release, config, artifact, formation);
    let types = process_types(artifact);
    check_names(release, &types, plan.release_phase.is_some())?;
    if artifact.process_types.contains_key(WEB) && formation.count(WEB) == 0 {
        return Err(KubeError::NoWeb { env: release.env.clone() });
    }
    let objects = Objects::of(request);
    let job = plan.release_phase.as_ref().map(|phase| objects.job(phase));
    let mut workloads = Vec::new();
    let mut deployments = Vec::new();
    for kind in &types {
        // The plan's environment of its first process; a type scaled to 0
        // gets the one it would have.
        let env = plan
            .processes
            .iter()
            .find(|p| p.kind == *kind)
            .map_or_else(|| crate::run::process_environment(release, config, &format!("{kind}.1")), |p| p.env.clone());
        let (name, deployment) = objects.deployment(kind, &artifact.process_types[*kind], &env);
        workloads.push(deployment);
        deployments.push(name);
    }
    if types.contains(&WEB) {
        workloads.push(objects.service());
    }
    Ok(Manifests { config: objects.config(), job, workloads, deployments })
}

/// Every process type of the artifact but the release phase, `web` first:
/// one scaled to 0 is in no plan, but keeps its Deployment, at 0.
fn process_types(artifact: &Artifact) -> Vec<&str> {
    let mut types: Vec<&str> =
        artifact.process_types.keys().map(String::as_str).filter(|kind| *kind != crate::app::RELEASE_PHASE).collect();
    types.sort_by_key(|kind| (*kind != WEB, *kind));
    types
}

/// Checks every name the objects will have.
fn check_names(release: &Release, types: &[&str], release_phase: bool) -> Result<(), KubeError> {
    let (app, env) = (release.app.as_str(), release.env.as_str());
    let base = format!("{app}-{env}");
    let config_name = format!("{base}-v{}", release.number);
    for (what, name) in [("app", app), ("environment", env)] {
        check(what, name, "ConfigMap", &config_name, false)?;
    }
    check("app", app, "Service", &format!("{base}-web"), true)?;
    for kind in types {
        check("process type", kind, "container", kind, false)?;
        check("process type", kind, "Deployment", &format!("{base}-{kind}"), false)?;
    }
    if release_phase {
        check("app", app, "Job", &format!("{config_name}-release"), false)?;
    }
    Ok(())
}

/// What every object of one release shares, and how each is made.
struct Objects<'a> {
    request: &'a KubeRelease<'a>,
    base: String,
    config_name: String,
    annotations: Value,
}

impl<'a> Objects<'a> {
    fn of(request: &'a KubeRelease<'a>) -> Self {
        let release = request.release;
        let base = format!("{}-{}", release.app, release.env);
        let annotations = json!({
            RELEASE_ANNOTATION: release.version(),
            "graven.dev/commit": release.commit,
            "graven.dev/artifact": release.artifact.to_string(),
            "graven.dev/config": release.config.to_string(),
        });
        Self { config_name: format!("{base}-v{}", release.number), base, annotations, request }
    }

    fn labels(&self, kind: Option<&str>) -> BTreeMap<&'static str, String> {
        let release = self.request.release;
        let mut labels = BTreeMap::from([
            (APP_LABEL, release.app.clone()),
            (ENV_LABEL, release.env.clone()),
            ("app.kubernetes.io/managed-by", "graven".to_owned()),
        ]);
        if let Some(kind) = kind {
            labels.insert(PROCESS_LABEL, kind.to_owned());
        }
        labels
    }

    fn metadata(&self, name: &str, kind: Option<&str>) -> Value {
        json!({ "name": name, "labels": self.labels(kind), "annotations": self.annotations })
    }

    /// The ConfigMap and the Secret: secret keys in the Secret (base64, as
    /// the API keeps them), the rest in the ConfigMap; both immutable.
    fn config(&self) -> Vec<Value> {
        let config = self.request.config;
        let (secret, plain): (BTreeMap<&String, &String>, BTreeMap<&String, &String>) =
            config.vars.iter().partition(|(key, _)| config.secret.contains(*key));
        let encoded: BTreeMap<&String, String> = secret
            .iter()
            .map(|(key, value)| (*key, base64::Engine::encode(&base64::engine::general_purpose::STANDARD, value)))
            .collect();
        vec![
            json!({
                "apiVersion": "v1", "kind": "ConfigMap", "metadata": self.metadata(&self.config_name, None),
                "immutable": true, "data": plain,
            }),
            json!({
                "apiVersion": "v1", "kind": "Secret", "metadata": self.metadata(&self.config_name, None),
                "immutable": true, "type": "Opaque", "data": encoded,
            }),
        ]
    }

    /// The container of process type `kind`, running `command` with the
    /// plan's environment `env`: config keys from the ConfigMap and the
    /// Secret, graven's own variables set (they win, as in the runner),
    /// PATH from the image unless the config sets it.
    fn container(&self, kind: &str, command: &str, env: &BTreeMap<String, std::ffi::OsString>) -> Value {
        let config = self.request.config;
        let mut vars: BTreeMap<String, Value> = env
            .iter()
            .filter(|(key, _)| !config.vars.contains_key(*key) && key.as_str() != "PATH")
            .map(|(key, value)| (key.clone(), json!({ "name": key, "value": value.to_string_lossy() })))
            .collect();
        let process = crate::env_vars::process::GRAVEN_PROCESS;
        vars.insert(
            process.to_owned(),
            json!({ "name": process, "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } }),
        );
        for key in ["HOME", "TMPDIR"] {
            vars.insert(key.to_owned(), json!({ "name": key, "value": "/tmp" }));
        }
        let mut container = json!({
            "name": kind,
            "image": self.request.image,
            "command": crate::image::command_argv(command),
            "workingDir": format!("/{}", crate::image::APP_DIR),
            "envFrom": [{ "configMapRef": { "name": self.config_name } }, { "secretRef": { "name": self.config_name } }],
            "securityContext": { "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false },
            "volumeMounts": [{ "name": "tmp", "mountPath": "/tmp" }],
        });
        if kind == WEB {
            vars.insert("PORT".to_owned(), json!({ "name": "PORT", "value": WEB_PORT.to_string() }));
            container["ports"] = json!([{ "name": "http", "containerPort": WEB_PORT }]);
            if let Some(path) = &self.request.artifact.run.health {
                container["readinessProbe"] = json!({ "httpGet": { "path": path, "port": "http" } });
            }
        }
        container["env"] = Value::Array(vars.into_values().collect());
        container
    }

    /// A pod template: the container, a writable `/tmp`, the artifact's
    /// stop timeout as the grace period.
    fn pod(&self, kind: &str, container: &Value, restart: &str) -> Value {
        json!({
            "metadata": { "labels": self.labels(Some(kind)), "annotations": self.annotations },
            "spec": {
                "containers": [container],
                "volumes": [{ "name": "tmp", "emptyDir": {} }],
                "restartPolicy": restart,
                "terminationGracePeriodSeconds": self.request.artifact.run.stop_timeout.unwrap_or(10),
            },
        })
    }

    /// The release phase, run once, never retried.
    fn job(&self, phase: &crate::run::plan::PlannedProcess) -> (String, Value) {
        let kind = crate::app::RELEASE_PHASE;
        let name = format!("{}-release", self.config_name);
        let object = json!({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": self.metadata(&name, Some(kind)),
            "spec": {
                "backoffLimit": 0,
                "template": self.pod(kind, &self.container(kind, &phase.command, &phase.env), "Never"),
            },
        });
        (name, object)
    }

    fn deployment(&self, kind: &str, command: &str, env: &BTreeMap<String, std::ffi::OsString>) -> (String, Value) {
        let name = format!("{}-{kind}", self.base);
        let release = self.request.release;
        let object = json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": self.metadata(&name, Some(kind)),
            "spec": {
                "replicas": self.request.formation.count(kind),
                "selector": { "matchLabels": selector(&release.app, &release.env, kind) },
                "template": self.pod(kind, &self.container(kind, command, env), "Always"),
            },
        });
        (name, object)
    }

    fn service(&self) -> Value {
        let release = self.request.release;
        json!({
            "apiVersion": "v1", "kind": "Service", "metadata": self.metadata(&format!("{}-web", self.base), Some(WEB)),
            "spec": {
                "selector": selector(&release.app, &release.env, WEB),
                "ports": [{ "name": "http", "port": WEB_PORT, "targetPort": "http" }],
            },
        })
    }
}

/// The labels that pick a process type's pods.
fn selector(app: &str, env: &str, kind: &str) -> Value {
    json!({ APP_LABEL: app, ENV_LABEL: env, PROCESS_LABEL: kind })
}

/// What a cluster runs of one process type, from its Deployment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Deployed {
    /// The process type.
    pub process: String,
    /// The release its pod template is of (`graven.dev/release`), if it
    /// names one.
    pub release: Option<u64>,
    /// Replicas asked for.
    pub replicas: u64,
    /// Replicas ready.
    pub ready: u64,
    /// Replicas of the current pod template.
    pub updated: u64,
}

impl Deployed {
    /// Whether it runs release `number`, every replica ready and updated.
    pub fn serves(&self, number: u64) -> bool {
        self.release == Some(number) && self.ready == self.replicas && self.updated == self.replicas
    }
}

/// Whether the cluster runs release `number` everywhere: some process
/// type is deployed, and every one serves it.
pub fn all_serve(deployed: &[Deployed], number: u64) -> bool {
    !deployed.is_empty() && deployed.iter().all(|process| process.serves(number))
}

/// The process types `kubectl get deployments -o json` shows for `app`'s
/// environment `env`, by name; objects of another app or environment, or
/// not graven's, are left out.
pub fn deployed(list: &Value, app: &str, env: &str) -> Vec<Deployed> {
    let mut found: Vec<Deployed> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|item| item["metadata"]["labels"][APP_LABEL] == app && item["metadata"]["labels"][ENV_LABEL] == env)
        .filter_map(|item| {
            let process = item["metadata"]["labels"][PROCESS_LABEL].as_str()?.to_owned();
            let release = item["spec"]["template"]["metadata"]["annotations"][RELEASE_ANNOTATION]
                .as_str()
                .and_then(|version| version.strip_prefix('v'))
                .and_then(|number| number.parse().ok());
            let count = |value: &Value| value.as_u64().unwrap_or(0);
            Some(Deployed {
                process,
                release,
                replicas: item["spec"]["replicas"].as_u64().unwrap_or(1),
                ready: count(&item["status"]["readyReplicas"]),
                updated: count(&item["status"]["updatedReplicas"]),
            })
        })
        .collect();
    found.sort_by(|a, b| (a.process != WEB, &a.process).cmp(&(b.process != WEB, &b.process)));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_kubernetes_refuses_get_a_suggestion() {
        assert!(is_label("shop-production-web", false));
        assert!(!is_label("shop-production-clock_worker", false));
        assert!(!is_label("9shop", true) && is_label("9shop", false));
        let error = check("process type", "clock_worker", "Deployment", "shop-production-clock_worker", false);
        let KubeError::Name { suggestion, .. } = error.unwrap_err() else { panic!() };
        assert_eq!(suggestion, "clock-worker");
        let long = "a".repeat(70);
        let made = format!("shop-production-{long}");
        let KubeError::Name { suggestion, .. } = check("process type", &long, "Deployment", &made, false).unwrap_err()
        else {
            panic!()
        };
        assert_eq!(format!("shop-production-{suggestion}").len(), 63);
    }

    #[test]
    fn deployed_reads_each_process_types_release() {
        let list = json!({ "items": [
            { "metadata": { "labels": { APP_LABEL: "shop", ENV_LABEL: "production", PROCESS_LABEL: "worker" } },
              "spec": { "replicas": 2, "template": { "metadata": { "annotations": { RELEASE_ANNOTATION: "v3" } } } },
              "status": { "readyReplicas": 1, "updatedReplicas": 2 } },
            { "metadata": { "labels": { APP_LABEL: "shop", ENV_LABEL: "production", PROCESS_LABEL: "web" } },
              "spec": { "replicas": 1, "template": { "metadata": { "annotations": { RELEASE_ANNOTATION: "v4" } } } },
              "status": { "readyReplicas": 1, "updatedReplicas": 1 } },
            { "metadata": { "labels": { APP_LABEL: "shop", ENV_LABEL: "staging", PROCESS_LABEL: "web" } } },
        ]});
        let found = deployed(&list, "shop", "production");
        assert_eq!(found.iter().map(|d| d.process.as_str()).collect::<Vec<_>>(), ["web", "worker"]);
        assert!(found[0].serves(4));
        assert!(!found[1].serves(3), "one replica is not ready");
        assert!(!all_serve(&found, 4) && all_serve(&found[..1], 4) && !all_serve(&[], 4));
        assert_eq!(found[1].release, Some(3));
    }
}
