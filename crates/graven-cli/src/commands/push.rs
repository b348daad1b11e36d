//! `graven push`: a build's image to a registry, recorded in the ledger.

use std::path::PathBuf;

use clap::Args;
use graven::image::{Credentials, Destination, PushError, PushRequest};
use graven::model::NewPush;

use super::export::{ImageArgs, make_image};
use crate::error::CommandError;
use crate::settings::Settings;
use crate::ui;

/// Push a build's image to a registry
///
/// The image is the one `graven export --format oci` writes (the artifact at
/// /app, no config in it), tagged with the full commit id and each --tag.
/// Only the blobs the registry lacks are sent: after a change outside a
/// `[image] layers` directory, only the last layer. The image's digest is
/// recorded in the ledger, so that releases can name the image by digest.
///
/// Credentials: --creds, else the registry's entry in $REGISTRY_AUTH_FILE,
/// ~/.docker/config.json or podman's auth.json (`docker login`, `podman
/// login`), or from the credential helper such a file names (credHelpers,
/// credsStore: docker-credential-NAME on PATH), else none. A registry on this machine (127.0.0.1, localhost) is
/// spoken to over HTTP, others over HTTPS unless --insecure.
///
/// Examples:
///   graven push HEAD registry.example.com/shop
///   graven push HEAD 127.0.0.1:5000/shop --tag production --json
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub(crate) struct PushArgs {
    /// The build: an artifact id, a unique prefix of 7+ hex digits, or a commit
    build: String,

    /// Where: REGISTRY/REPOSITORY (no tag: the commit is the tag)
    destination: String,

    /// Another tag for the image (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,

    /// Credentials for the registry, as USER:PASSWORD
    #[arg(long, value_name = "USER:PASSWORD", env = "GRAVEN_REGISTRY_CREDS", hide_env_values = true)]
    creds: Option<String>,

    /// Speak plain HTTP to a registry that is not on this machine
    #[arg(long)]
    insecure: bool,

    #[command(flatten)]
    image: ImageArgs,

    /// Print what was pushed as JSON
    #[arg(long)]
    json: bool,
}

pub(crate) fn cmd_push(settings: &Settings, args: &PushArgs) -> Result<(), CommandError> {
    let destination = Destination::parse(&args.destination).map_err(CommandError::bad_input)?;
    for tag in &args.tags {
        if !is_tag(tag) {
            return Err(CommandError::bad_input(format!("--tag '{tag}' is not a tag"))
                .hint("a tag is up to 128 of letters, digits, '_', '.' and '-', not starting with '.' or '-'"));
        }
    }
    let credentials = credentials(args, &destination.registry)?;
    let made = make_image(settings, &args.build, &args.image)?;
    // Open the ledger before pushing: a push that cannot be recorded is
    // better not made.
    let ledger = settings.ledger()?;
    // The commit, or `<commit>-dirty` for a build of uncommitted changes.
    let mut tags = vec![made.image.tag.clone()];
    tags.extend(args.tags.iter().filter(|tag| **tag != made.image.tag).cloned());
    let observer = ui::TransferBar::new();
    let request = PushRequest {
        image: &made.image,
        destination: &destination,
        tags: &tags,
        credentials: &credentials,
        insecure: args.insecure,
        observer: &observer,
    };
    let pushed = graven::image::push(&request).map_err(|error| explain(error, &destination))?;
    let push = NewPush {
        app: made.app.clone(),
        artifact: made.record.build.artifact,
        commit: made.record.build.commit.clone(),
        repository: destination.to_string(),
        tags: tags.clone(),
        digest: pushed.digest,
        author: settings.author(),
        created_at: graven::time::now_rfc3339(),
    };
    ledger.record_push(&push).map_err(CommandError::failed)?;
    if args.json {
        ui::out_json(&serde_json::json!({
            "artifact": push.artifact,
            "commit": push.commit,
            "repository": push.repository,
            "tags": push.tags,
            "digest": push.digest,
            "image": push.image(),
            "sent": { "blobs": pushed.sent.0, "bytes": pushed.sent.1 },
            "skipped": { "blobs": pushed.skipped.0, "bytes": pushed.skipped.1 },
        }));
        return Ok(());
    }
    ui::out(push.image());
    ui::note(format!(
        "pushed {} to {} (tags {}) — sent {} ({}); {} already there ({})",
        made.record.build.artifact.short(),
        destination,
        tags.iter()
            .map(|tag| if *tag == push.commit { ui::short_commit(tag).to_owned() } else { tag.clone() })
            .collect::<Vec<_>>()
            .join(", "),
        ui::count_of(pushed.sent.0, "blob"),
        ui::bytes(pushed.sent.1),
        ui::count_of(pushed.skipped.0, "blob"),
        ui::bytes(pushed.skipped.1),
    ));
    Ok(())
}

/// Whether `tag` can be an image's tag.
fn is_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    tag.len() <= 128
        && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// --creds, else the first auth file with an entry for `registry`.
fn credentials(args: &PushArgs, registry: &str) -> Result<Credentials, CommandError> {
    if let Some(creds) = &args.creds {
        return Credentials::parse(creds).map_err(CommandError::bad_input);
    }
    let mut files: Vec<PathBuf> = Vec::new();
    if let Some(file) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(file.into());
    }
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => files.push(PathBuf::from(dir).join("config.json")),
        None => files.extend(std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))),
    }
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR") {
        files.push(PathBuf::from(runtime).join("containers/auth.json"));
    }
    for file in files {
        if let Some(found) = Credentials::from_auth_file(&file, registry).map_err(CommandError::bad_input)? {
            return Ok(found);
        }
    }
    Ok(Credentials::Anonymous)
}

fn explain(error: PushError, destination: &Destination) -> CommandError {
    match error {
        PushError::Unreachable { .. } => CommandError::failed(error).hint(format!(
            "check that a registry listens at {} and that this machine can reach it",
            destination.registry
        )),
        PushError::Unauthorized { .. } => CommandError::failed(error).hint(format!(
            "give --creds USER:PASSWORD, or log in first (docker login {0}, podman login {0})",
            destination.registry
        )),
        other => CommandError::failed(other),
    }
}
