//! `graven kube render|apply|status`: a release as Kubernetes objects,
//! applied with kubectl, and what the cluster runs.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use graven::kube::{KubeRelease, Manifests};
use graven::ledger::Ledger;
use graven::model::{Formation, Release};

use super::env::EnvArg;
use crate::error::CommandError;
use crate::settings::Settings;
use crate::ui;

/// Run releases on Kubernetes
///
/// A release becomes, per process type of the Procfile, a Deployment (its
/// replicas from the environment's formation, the build's image by digest,
/// the process's command, its config from a ConfigMap and a Secret named
/// <app>-<env>-v<N>, both immutable), a Service for web on port 8080, and the
/// Procfile's release command as a Job that completes before the Deployments
/// roll. The build must have been pushed (graven push). Each release has its
/// own ConfigMap and Secret: a rollback applies the older release's, and its
/// config comes back with its code.
///
/// Examples:
///   graven kube render --env production | kubectl diff -f -
///   graven kube apply --env production --context prod-cluster
///   graven kube status --env production
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub(crate) struct KubeArgs {
    #[command(subcommand)]
    command: KubeCommand,
}

#[derive(Subcommand, Debug)]
enum KubeCommand {
    /// Print a release's objects (YAML, or JSON with -o json)
    Render(RenderArgs),
    /// Apply a release with kubectl: its config, its release Job (waited
    /// for), then its Deployments (waited for)
    Apply(ApplyArgs),
    /// Which release each process type runs in the cluster
    Status(StatusArgs),
}

#[derive(Args, Debug)]
struct ReleaseArgs {
    #[command(flatten)]
    env: EnvArg,

    /// The release [default: the current one]
    #[arg(long, value_name = "vN")]
    release: Option<String>,
}

#[derive(Args, Debug)]
struct RenderArgs {
    #[command(flatten)]
    release: ReleaseArgs,

    /// The output format
    #[arg(short, long, value_enum, default_value_t = Output::Yaml)]
    output: Output,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Output {
    /// YAML documents
    Yaml,
    /// One JSON List
    Json,
}

#[derive(Args, Debug)]
struct ApplyArgs {
    #[command(flatten)]
    release: ReleaseArgs,

    /// The kubeconfig context (kubectl --context); KUBECONFIG is honoured
    #[arg(long, value_name = "NAME")]
    context: Option<String>,

    /// How long the release Job and each rollout may take
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Args, Debug)]
struct StatusArgs {
    #[command(flatten)]
    env: EnvArg,

    /// The kubeconfig context (kubectl --context)
    #[arg(long, value_name = "NAME")]
    context: Option<String>,

    /// Print the status as JSON
    #[arg(long)]
    json: bool,
}

pub(crate) fn cmd_kube(settings: &Settings, args: &KubeArgs) -> Result<(), CommandError> {
    match &args.command {
        KubeCommand::Render(args) => render(settings, args),
        KubeCommand::Apply(args) => apply(settings, args),
        KubeCommand::Status(args) => status(settings, &args.env, args.context.as_deref(), args.json),
    }
}

/// A release's objects, with what they were made of.
struct Rendered {
    manifests: Manifests,
    release: Release,
    /// The formation they run: what a rollout of them is recorded with,
    /// whatever `graven scale` did meanwhile.
    formation: Formation,
}

/// The release's objects.
fn manifests(settings: &Settings, ledger: &dyn Ledger, args: &ReleaseArgs) -> Result<Rendered, CommandError> {
    let env = args.env.name()?;
    let app = settings.app()?;
    let store = settings.store()?;
    let (release, config) = crate::commands::release::release_and_config(ledger, &app, env, args.release.as_deref())?;
    let artifact = graven::run::artifact_of(&*store, &release).map_err(crate::error::run_error)?;
    let formation = ledger
        .formation(&app, env)
        .map_err(CommandError::failed)?
        .map_or_else(Formation::default, |record| record.formation);
    let push = ledger.pushes(&app, Some(&release.artifact)).map_err(CommandError::failed)?.into_iter().next();
    let Some(push) = push else {
        return Err(CommandError::bad_input(format!(
            "the build of {} ({}) has not been pushed: Kubernetes pulls its image from a registry",
            release.version(),
            ui::short_commit(&release.commit)
        ))
        .hint(format!("push it first: graven push {} REGISTRY/REPOSITORY", ui::short_commit(&release.commit))));
    };
    let image = push.push.image();
    let request =
        KubeRelease { release: &release, config: &config, artifact: &artifact, formation: &formation, image: &image };
    let manifests = graven::kube::render(&request).map_err(|error| match error {
        graven::kube::KubeError::NoWeb { .. } => {
            CommandError::bad_input(error).hint(format!("scale it first: graven scale --env {env} web=1"))
        }
        graven::kube::KubeError::Name { .. } => CommandError::bad_input(error),
    })?;
    Ok(Rendered { manifests, release, formation })
}

fn render(settings: &Settings, args: &RenderArgs) -> Result<(), CommandError> {
    let Rendered { manifests, .. } = manifests(settings, &*settings.ledger_for_reading()?, &args.release)?;
    let objects = manifests.all();
    match args.output {
        Output::Yaml => print!("{}", graven::kube::to_yaml(&objects)),
        Output::Json => ui::out_json(&graven::kube::to_json_list(&objects)),
    }
    Ok(())
}

/// kubectl, with the context if one is given.
fn kubectl(context: Option<&str>) -> Command {
    let mut command = Command::new("kubectl");
    if let Some(context) = context {
        command.args(["--context", context]);
    }
    command
}

/// Runs kubectl with `args` (and `input` on its stdin); its stdout, or an
/// error saying what it was doing and what kubectl said.
fn run_kubectl(context: Option<&str>, args: &[&str], input: Option<&str>, doing: &str) -> Result<String, CommandError> {
    let mut command = kubectl(context);
    command.args(args).stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() });
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|e| {
        let error = CommandError::failed(format!("could not run kubectl to {doing}: {e}"));
        if e.kind() == std::io::ErrorKind::NotFound { error.hint("install kubectl and put it on PATH") } else { error }
    })?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| CommandError::failed(format!("could not give kubectl the objects to {doing}: {e}")))?;
    }
    let output =
        child.wait_with_output().map_err(|e| CommandError::failed(format!("kubectl failed to {doing}: {e}")))?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        return Err(CommandError::failed(format!("kubectl could not {doing}: {said}"))
            .hint("check the cluster with kubectl (and --context, KUBECONFIG)"));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn apply(settings: &Settings, args: &ApplyArgs) -> Result<(), CommandError> {
    let ledger = settings.ledger()?;
    let Rendered { manifests, release, formation } = manifests(settings, &*ledger, &args.release)?;
    let env = release.env.clone();
    let context = args.context.as_deref();
    let timeout = format!("--timeout={}s", args.timeout.as_secs().max(1));
    let config: Vec<_> = manifests.config.iter().collect();
    run_kubectl(context, &["apply", "-f", "-"], Some(&graven::kube::to_yaml(&config)), "apply the config")?;
    ui::note(format!("applied the config of {} (ConfigMap and Secret)", release.version()));
    if let Some((name, job)) = &manifests.job {
        // In the ledger before the Job may run, as a runner records its
        // release phases, so that `graven diff` never misses one.
        let run = graven::model::ReleasePhaseRun {
            app: release.app.clone(),
            env: env.clone(),
            number: release.number,
            host: cluster_host(context),
            home: String::new(),
            started_at: graven::time::now_rfc3339(),
        };
        ledger.record_release_phase(&run).map_err(CommandError::failed)?;
        run_kubectl(context, &["apply", "-f", "-"], Some(&graven::kube::to_yaml(&[job])), "apply the release Job")?;
        ui::note(format!("waiting for the release phase (job/{name})"));
        run_kubectl(
            context,
            &["wait", "--for=condition=complete", &timeout, &format!("job/{name}")],
            None,
            "see the release phase complete",
        )
        .map_err(|error| error.hint(format!("see what it printed: kubectl logs job/{name}")))?;
    }
    let workloads: Vec<_> = manifests.workloads.iter().collect();
    run_kubectl(context, &["apply", "-f", "-"], Some(&graven::kube::to_yaml(&workloads)), "apply the Deployments")?;
    for name in &manifests.deployments {
        ui::note(format!("waiting for deployment/{name} to roll out"));
        run_kubectl(
            context,
            &["rollout", "status", &timeout, &format!("deployment/{name}")],
            None,
            "see the rollout end",
        )?;
    }
    record(&*ledger, &release, formation, context)?;
    ui::out(format!(
        "{} of {} runs on Kubernetes ({})",
        release.version(),
        env,
        context.unwrap_or("the current context")
    ));
    Ok(())
}

/// Where the ledger says a cluster's rollouts ran: `kubernetes/<context>`.
fn cluster_host(context: Option<&str>) -> String {
    format!("kubernetes/{}", context.unwrap_or("current-context"))
}

/// Records the rollout of `release` in `formation` in the run-state
/// table, as a runner does, under the host [`cluster_host`].
fn record(
    ledger: &dyn Ledger,
    release: &Release,
    formation: Formation,
    context: Option<&str>,
) -> Result<(), CommandError> {
    let now = graven::time::now_rfc3339();
    let state = graven::model::RunState {
        app: release.app.clone(),
        env: release.env.clone(),
        host: cluster_host(context),
        home: String::new(),
        runner_pid: 0,
        state: graven::model::RunnerState::Cluster,
        running: Some(graven::model::RunningRelease {
            id: release.id,
            number: release.number,
            since: now.clone(),
            read_only_app: true,
            user: None,
            formation,
            restart: 0,
        }),
        processes: Vec::new(),
        last_failure: None,
        rollout: None,
        updated_at: now,
    };
    ledger.set_run_state(&state).map_err(CommandError::failed)
}

pub(crate) fn status(settings: &Settings, env: &EnvArg, context: Option<&str>, json: bool) -> Result<(), CommandError> {
    let env = env.name()?;
    let app = settings.app()?;
    let ledger = settings.ledger_for_reading()?;
    let desired = ledger.current_release(&app, env).map_err(CommandError::failed)?;
    let selector = format!("{}={app},{}={env}", graven::kube::APP_LABEL, graven::kube::ENV_LABEL);
    let listed =
        run_kubectl(context, &["get", "deployments", "-l", &selector, "-o", "json"], None, "list the Deployments")?;
    let list: serde_json::Value = serde_json::from_str(&listed)
        .map_err(|e| CommandError::failed(format!("kubectl get deployments printed no JSON list: {e}")))?;
    let deployed = graven::kube::deployed(&list, &app, env);
    let in_sync = desired.as_ref().is_some_and(|d| graven::kube::all_serve(&deployed, d.number));
    if json {
        ui::out_json(&serde_json::json!({
            "app": app,
            "env": env,
            "desired": desired.as_ref().map(Release::version),
            "in_sync": in_sync,
            "processes": deployed.iter().map(|p| serde_json::json!({
                "process": p.process,
                "release": p.release.map(|n| format!("v{n}")),
                "replicas": p.replicas,
                "ready": p.ready,
                "updated": p.updated,
                "desired": desired.as_ref().is_some_and(|d| p.serves(d.number)),
            })).collect::<Vec<_>>(),
        }));
    } else {
        let wanted = desired.as_ref().map_or_else(|| "nothing (no release)".to_owned(), Release::version);
        ui::out(format!(
            "{app} {env} on Kubernetes: {wanted} is released, {}",
            if in_sync { "and runs everywhere" } else { "not everywhere yet" }
        ));
        let mut rows = vec![vec!["PROCESS".to_owned(), "RELEASE".to_owned(), "READY".to_owned(), String::new()]];
        for p in &deployed {
            let release = p.release.map_or_else(|| "?".to_owned(), |n| format!("v{n}"));
            let mark = match &desired {
                Some(d) if p.serves(d.number) => "desired".to_owned(),
                Some(d) if p.release == Some(d.number) => "rolling out".to_owned(),
                Some(d) => format!("not {}", d.version()),
                None => String::new(),
            };
            rows.push(vec![p.process.clone(), release, format!("{}/{}", p.ready, p.replicas), mark]);
        }
        if deployed.is_empty() {
            ui::out(format!("no Deployment of {app} {env} in the cluster: graven kube apply --env {env}"));
        } else {
            ui::out(ui::table(&rows));
        }
    }
    if in_sync {
        Ok(())
    } else {
        Err(CommandError::failed(format!(
            "the cluster does not run {} everywhere",
            desired.as_ref().map_or("a release".to_owned(), Release::version)
        )))
    }
}
