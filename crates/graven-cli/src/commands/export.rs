//! `graven export`: an artifact as a byte-identical archive, or as an OCI
//! image.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use graven::export::Format;
use graven::image::{ArchiveKind, BaseImage, Compression, ImageError, ImageRequest};

use crate::error::CommandError;
use crate::settings::Settings;
use crate::ui;

/// Write an artifact as an archive or an OCI image
///
/// The output is byte-identical for the same artifact on any machine:
/// entries sorted, owner 0, one constant modification time, normalised modes,
/// fixed compression levels. Its checksum (or image digest) can be published
/// and checked.
///
/// As an image (oci, oci-archive, docker-archive), the artifact's tree is at
/// /app, the working directory, and the web process is the command. Each
/// `[image] layers` directory of graven.toml (".venv") is a layer of its own,
/// then the rest; layers are kept, so exporting again is near instant. The
/// image holds no config: give it when you run it (`podman run -e KEY=…`).
///
/// Examples:
///   graven export HEAD --format tar.zst -o app.tar.zst
///   graven export 3f9c2a1 --format tar -o - | tar -t
///   graven export HEAD --format oci -o image && skopeo inspect oci:image:$(git rev-parse HEAD)
///   graven export HEAD --format oci-archive --base python-layout:3.12 -o app.tar && podman load -i app.tar
#[derive(Args, Debug)]
#[command(verbatim_doc_comment)]
pub(crate) struct ExportArgs {
    /// The build: an artifact id, a unique prefix of 7+ hex digits, or a commit
    build: String,

    /// The archive format
    #[arg(long, value_enum)]
    format: ExportFormat,

    /// Where to write it; `-` for stdout (archives only). An oci layout is a
    /// directory, which must not exist or be empty
    #[arg(short, long, value_name = "PATH")]
    output: PathBuf,

    #[command(flatten)]
    image: ImageArgs,

    /// Print what was written as JSON
    #[arg(long)]
    json: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum ExportFormat {
    /// Uncompressed tar
    Tar,
    /// tar compressed with gzip (level 6)
    #[value(name = "tar.gz")]
    TarGz,
    /// tar compressed with zstd (level 3)
    #[value(name = "tar.zst")]
    TarZst,
    /// An OCI image layout: a directory (skopeo, umoci, `podman run oci:DIR`)
    Oci,
    /// An OCI image layout in a tar (`podman load`)
    OciArchive,
    /// An image as `docker save` writes it (`docker load`, `podman load`)
    DockerArchive,
}

/// How an image is made, for `export` and `push`.
#[derive(Args, Debug)]
pub(crate) struct ImageArgs {
    /// Images: stack the artifact on this base image, an OCI layout the
    /// machine has (made with `skopeo copy docker://python:3.12-slim
    /// oci:python-layout:3.12`); its PATH and platform are inherited
    #[arg(long, value_name = "LAYOUT[:TAG]")]
    pub(crate) base: Option<String>,

    /// Images: how layers are compressed (zstd needs podman 3+ or
    /// containerd 1.5+)
    #[arg(long, value_enum, default_value_t = LayerCompression::Gzip)]
    pub(crate) compression: LayerCompression,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LayerCompression {
    /// gzip (level 1): every runtime reads it
    Gzip,
    /// zstd (level 3): smaller
    Zstd,
}

pub(crate) fn cmd_export(settings: &Settings, args: &ExportArgs) -> Result<(), CommandError> {
    let format = match args.format {
        ExportFormat::Tar => Format::Tar,
        ExportFormat::TarGz => Format::TarGz,
        ExportFormat::TarZst => Format::TarZst,
        ExportFormat::Oci => return export_image(settings, args, None),
        ExportFormat::OciArchive => return export_image(settings, args, Some(ArchiveKind::Oci)),
        ExportFormat::DockerArchive => return export_image(settings, args, Some(ArchiveKind::Docker)),
    };
    if args.image.base.is_some() || args.image.compression != LayerCompression::Gzip {
        return Err(CommandError::bad_input(format!(
            "--base and --compression are for images; --format {} is an archive of the tree",
            format.name()
        ))
        .hint("use --format oci, oci-archive or docker-archive for an image"));
    }
    let app = settings.app()?;
    let ledger = settings.ledger_for_reading()?;
    let ledger = &*ledger;
    let store = settings.store()?;
    let store = &*store;
    let record = graven::build::resolve_build(ledger, &app, settings.repo.as_ref(), &args.build)?;
    let id = record.build.artifact;
    if args.output.as_os_str() == "-" {
        refuse_terminal()?;
        let stdout = std::io::stdout().lock();
        let summary = graven::export::export(store, &id, format, std::io::BufWriter::new(stdout))
            .map_err(CommandError::failed)?;
        if args.json {
            // stdout has the archive: the summary goes to stderr.
            ui::note(
                serde_json::json!({ "artifact": id, "format": format.name(), "entries": summary.entries, "bytes": summary.bytes }),
            );
        }
        return Ok(());
    }
    let summary = graven::export::export_to_path(store, &id, format, &args.output).map_err(CommandError::failed)?;
    if args.json {
        ui::out_json(&serde_json::json!({
            "artifact": id,
            "format": format.name(),
            "path": args.output,
            "entries": summary.entries,
            "bytes": summary.bytes,
        }));
        return Ok(());
    }
    ui::note(format!(
        "exported {} to {} — {} entries, {}",
        id.short(),
        args.output.display(),
        ui::count(summary.entries),
        ui::bytes(summary.bytes)
    ));
    Ok(())
}

fn refuse_terminal() -> Result<(), CommandError> {
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(CommandError::bad_input("refusing to write an archive to a terminal")
            .hint("redirect stdout (-o - > app.tar, or | tar -t), or give a file with -o PATH"));
    }
    Ok(())
}

/// `--format oci|oci-archive|docker-archive`: the image of the build, as a
/// layout directory (`archive` none) or a tarball.
fn export_image(settings: &Settings, args: &ExportArgs, archive: Option<ArchiveKind>) -> Result<(), CommandError> {
    if archive.is_none() && args.output.as_os_str() == "-" {
        return Err(CommandError::bad_input("an oci layout is a directory, and cannot go to stdout")
            .hint("give a directory with -o DIR, or use --format oci-archive -o - for a tarball"));
    }
    if archive.is_none() && std::fs::read_dir(&args.output).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(CommandError::bad_input(format!("{} exists and is not empty", args.output.display()))
            .hint("give a new directory with -o, or remove this one first"));
    }
    let started = std::time::Instant::now();
    let made = make_image(settings, &args.build, &args.image)?;
    let image = &made.image;
    let output = &args.output;
    match archive {
        None => graven::image::write_layout(image, output).map_err(|e| failed_at(e, output))?,
        Some(kind) if output.as_os_str() == "-" => {
            refuse_terminal()?;
            let stdout = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            graven::image::write_archive(image, kind, stdout).map_err(|e| failed_at(e, output))?;
        }
        Some(kind) => {
            graven::export::write_file_atomically(output, |out| graven::image::write_archive(image, kind, out))
                .map_err(|e| failed_at(e, output))?;
        }
    }
    report(args, image, made.record.build.artifact, made.based, started.elapsed());
    Ok(())
}

/// What an image export wrote: JSON, or a line and one per layer made.
fn report(
    args: &ExportArgs,
    image: &graven::image::Image,
    artifact: graven::Digest,
    based: bool,
    elapsed: std::time::Duration,
) {
    let output = &args.output;
    if args.json {
        let format = args.format.to_possible_value().map(|v| v.get_name().to_owned()).unwrap_or_default();
        let layers: Vec<_> = image
            .layers
            .iter()
            .map(|layer| {
                serde_json::json!({
                    "of": layer.of.to_string(),
                    "digest": layer.digest,
                    "diff_id": layer.diff_id,
                    "size": layer.size,
                    "media_type": layer.media_type,
                    "reused": layer.reused,
                })
            })
            .collect();
        let summary = serde_json::json!({
            "artifact": artifact,
            "format": format,
            "path": output,
            "image": image.manifest_digest,
            "config": image.config_digest,
            "tag": image.tag,
            "layers": layers,
            "warnings": image.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        // With the archive on stdout, the summary goes to stderr.
        if output.as_os_str() == "-" {
            ui::note(summary);
        } else {
            ui::out_json(&summary);
        }
        return;
    }
    let made: Vec<_> = image.layers.iter().filter(|layer| layer.of != graven::image::LayerOf::Base).collect();
    let reused = made.iter().filter(|layer| layer.reused).count();
    let size: u64 = image.layers.iter().map(|layer| layer.size).sum();
    ui::note(format!(
        "exported {} to {} as image {} (tag {}) — {} of the artifact ({} reused){}, {} in {:.1} s",
        artifact.short(),
        output.display(),
        image.manifest_digest.short(),
        ui::short_commit(&image.tag),
        ui::count_of(made.len() as u64, "layer"),
        reused,
        if based { format!(" on {} of the base", image.layers.len() - made.len()) } else { String::new() },
        ui::bytes(size),
        elapsed.as_secs_f64(),
    ));
    for layer in &made {
        ui::note(format!("  {}  {:>10}  {}", layer.digest.short(), ui::bytes(layer.size), layer.of));
    }
}

/// An image made for `export` or `push`, and what it was made of.
pub(crate) struct MadeImage {
    pub(crate) record: graven::model::BuildRecord,
    pub(crate) app: String,
    pub(crate) image: graven::image::Image,
    pub(crate) based: bool,
    /// Its layers are files in the layer cache: held until it is written
    /// or pushed, so that `graven gc --caches` leaves them.
    _cache: graven::image::CacheHold,
}

/// The image of `build` (on `base`, if given), its layers from the cache
/// where they are there; its warnings said.
pub(crate) fn make_image(settings: &Settings, build: &str, how: &ImageArgs) -> Result<MadeImage, CommandError> {
    let (base, compression) = (how.base.as_deref(), how.compression);
    let app = settings.app()?;
    let ledger = settings.ledger_for_reading()?;
    let store = settings.store()?;
    let record = graven::build::resolve_build(&*ledger, &app, settings.repo.as_ref(), build)?;
    let repo = settings.repo().map_err(|error| {
        error.hint("an image's creation time is its commit's time: run this inside the app's repository")
    })?;
    let commit_time = repo.commit_time(&record.build.commit).map_err(|error| {
        CommandError::failed(error).hint("an image's creation time is its commit's time: fetch the commit first")
    })?;
    let cache = settings.home.image_cache_dir();
    let hold = graven::image::CacheHold::take(&cache).map_err(CommandError::failed)?;
    let base = match base {
        Some(spec) => Some(BaseImage::open(spec, &cache).map_err(|error| {
            CommandError::bad_input(error).hint("--base takes an OCI layout directory, with :TAG if it has several")
        })?),
        None => None,
    };
    let source = repo.origin_url();
    let request = ImageRequest {
        store: &*store,
        artifact: record.build.artifact,
        app: &app,
        commit: &record.build.commit,
        dirty: record.build.dirty,
        commit_time,
        source: source.as_deref(),
        compression: match compression {
            LayerCompression::Gzip => Compression::Gzip,
            LayerCompression::Zstd => Compression::Zstd,
        },
        base: base.as_ref(),
        cache: &cache,
    };
    let image = graven::image::build(&request).map_err(CommandError::failed)?;
    for warning in &image.warnings {
        ui::note(format!("warning: {warning}"));
    }
    Ok(MadeImage { record, app, image, based: base.is_some(), _cache: hold })
}

/// A write failure named by the output the user gave.
fn failed_at(error: ImageError, output: &Path) -> CommandError {
    match error {
        ImageError::Export(graven::export::ExportError::Write { source, .. }) => {
            CommandError::failed(graven::export::ExportError::Write { path: output.to_owned(), source })
        }
        other => CommandError::failed(other),
    }
}
