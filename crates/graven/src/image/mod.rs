//! OCI images of artifacts.
//!
//! An artifact's image has its tree at **`/app`**, the path it was built
//! at and runs at, as the working directory, in one layer per
//! `[image] layers` directory and one for the rest, on top of a base
//! image's layers if one is given. The image carries no config value: its
//! config has the base's environment (or a plain `PATH`), the `web`
//! process as its command, and labels naming the commit and the artifact.
//!
//! The same artifact gives the same image digest on any machine and on
//! every run: layers are deterministic tar streams (see [`crate::export`])
//! compressed in fixed-size chunks (see [`CHUNK`]), and every JSON document
//! is written with its keys sorted. Layers are cached by what they are
//! made of, so a second export of an artifact, or of one whose `.venv` did
//! not change, reuses the work.
//!
//! The base image and its layout are untrusted input: every document read
//! from it is checked against its digest and size before use.

mod base;
mod cache;
mod compress;
mod layers;
mod push;
mod write;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::image::{
    Arch, ConfigBuilder, DescriptorBuilder, HistoryBuilder, ImageConfigurationBuilder, ImageManifestBuilder, MediaType,
    Os, RootFsBuilder,
};

pub use base::{BaseError, BaseImage};
pub use cache::{CacheHold, CacheRemoved, remove_cache};
pub use compress::CHUNK;
pub use layers::APP_DIR;
pub use push::{Credentials, Destination, PushError, PushRequest, Pushed, push};
pub use write::{ArchiveKind, write_archive, write_layout};

use crate::Digest;
use crate::export::ExportError;
use crate::model::Artifact;
use crate::store::Store;

/// The gzip level of image layers: fast, as most image tools use. Part of
/// the byte-identical promise.
pub const GZIP_LEVEL: u32 = 1;
/// The zstd level of image layers. Part of the byte-identical promise.
pub const ZSTD_LEVEL: i32 = 3;

/// The label that names the artifact an image was made from.
pub const ARTIFACT_LABEL: &str = "dev.graven.artifact";
/// The label of an image of a dirty build (uncommitted changes).
pub const DIRTY_LABEL: &str = "dev.graven.dirty";

/// The `PATH` of an image without a base.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How layers are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// gzip: every runtime reads it.
    #[default]
    Gzip,
    /// zstd: smaller and faster, for runtimes that read it (containerd
    /// 1.5+, podman 3+).
    Zstd,
}

impl Compression {
    /// As given to `--compression`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }

    fn media_type(self) -> MediaType {
        match self {
            Self::Gzip => MediaType::ImageLayerGzip,
            Self::Zstd => MediaType::ImageLayerZstd,
        }
    }
}

/// What an image is made from.
pub struct ImageRequest<'a> {
    /// Where the artifact is.
    pub store: &'a dyn Store,
    /// The artifact.
    pub artifact: Digest,
    /// The app, for the archive's tag.
    pub app: &'a str,
    /// The commit it was built from (40 hex digits): the image's tag.
    pub commit: &'a str,
    /// Whether the build had uncommitted changes: then the tag is
    /// `<commit>-dirty` and a label says so, for an image that is not the
    /// commit must not be named as if it were.
    pub dirty: bool,
    /// The commit's time, in seconds since the epoch: the image's creation
    /// time, so that it is the same wherever it is made.
    pub commit_time: u64,
    /// The repository's address, for `org.opencontainers.image.source`.
    pub source: Option<&'a str>,
    /// How layers are compressed.
    pub compression: Compression,
    /// The base image, if any.
    pub base: Option<&'a BaseImage>,
    /// Where made layers are kept for the next export.
    pub cache: &'a Path,
}

/// An image, ready to be written: its documents and where its layers are.
#[derive(Debug, Clone)]
pub struct Image {
    /// The manifest's bytes (canonical JSON).
    pub manifest: Vec<u8>,
    /// Their digest: the image's digest.
    pub manifest_digest: Digest,
    /// The config's bytes (canonical JSON).
    pub config: Vec<u8>,
    /// Their digest.
    pub config_digest: Digest,
    /// The layers, the base's first.
    pub layers: Vec<Layer>,
    /// The tag: the commit (`<commit>-dirty` for a dirty build).
    pub tag: String,
    /// The repository name archives are tagged with: the app.
    pub name: String,
    /// What the user should know.
    pub warnings: Vec<ImageWarning>,
}

/// One layer of an [`Image`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// What it holds.
    pub of: LayerOf,
    /// The digest of its blob.
    pub digest: Digest,
    /// The digest of its tar stream.
    pub diff_id: Digest,
    /// The size of its blob.
    pub size: u64,
    /// Its media type.
    pub media_type: String,
    /// Where its blob is.
    pub blob: PathBuf,
    /// Whether it was made by an earlier export (or comes from the base).
    pub reused: bool,
}

/// What a [`Layer`] holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerOf {
    /// A layer of the base image.
    Base,
    /// An `[image] layers` directory of the artifact.
    Directory(String),
    /// The rest of the artifact.
    Rest,
}

impl fmt::Display for LayerOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Base => f.write_str("base"),
            Self::Directory(path) => write!(f, "/{APP_DIR}/{path}"),
            Self::Rest => write!(f, "/{APP_DIR}"),
        }
    }
}

/// Something about an image the user should know; the image is usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageWarning {
    /// An `[image] layers` directory the artifact does not have.
    LayerMissing {
        /// As `graven.toml` names it.
        path: String,
    },
    /// An `[image] layers` entry that is a file or a link: it stays in
    /// the last layer.
    LayerNotADirectory {
        /// As `graven.toml` names it.
        path: String,
    },
    /// A link of the artifact that points outside `/app` at a path the
    /// image does not have.
    HostReference {
        /// The link, relative to `/app`.
        path: String,
        /// Its target, as stored.
        target: String,
        /// Where it points in the image.
        resolved: String,
    },
    /// The `web` command needs a shell the image does not have.
    NoShell {
        /// The command.
        command: String,
    },
    /// No `web` process: the image has no default command.
    NoWeb,
    /// The `web` command's program is on no directory of the image's PATH.
    NoProgram {
        /// The program (`python3`).
        program: String,
    },
}

impl fmt::Display for ImageWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LayerMissing { path } => {
                write!(f, "[image] layers names '{path}', which the artifact does not have: no layer for it")
            }
            Self::LayerNotADirectory { path } => {
                write!(f, "[image] layers names '{path}', which is not a directory: it stays in the last layer")
            }
            Self::HostReference { path, target, resolved } => {
                write!(f, "/{APP_DIR}/{path} links to {target}")?;
                if resolved != target {
                    write!(f, " ({resolved})")?;
                }
                f.write_str(", which the image does not have: give a base image that provides it (--base)")
            }
            Self::NoShell { command } => write!(
                f,
                "the web command '{command}' needs /bin/sh, which the image does not have: give a base image \
                 with a shell (--base), or make the command a plain program and its arguments"
            ),
            Self::NoProgram { program } => write!(
                f,
                "the web command runs {program}, which is on no directory of the image's PATH: give a base image \
                 that has it (--base)"
            ),
            Self::NoWeb => f.write_str(
                "the Procfile has no web process: the image has no default command; give one when you run it",
            ),
        }
    }
}

/// Making an image failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The artifact, a listing or a blob is missing or invalid, or the
    /// output could not be written.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// The base image cannot be used.
    #[error(transparent)]
    Base(#[from] BaseError),
    /// The layer cache could not be written.
    #[error("could not write the image layer cache in {}", path.display())]
    Cache {
        /// The cache directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An OCI document could not be made.
    #[error("could not make the image's {what}")]
    Document {
        /// Which.
        what: &'static str,
        /// Why.
        #[source]
        source: oci_spec::OciSpecError,
    },
}

impl From<crate::store::ArtifactError> for ImageError {
    fn from(error: crate::store::ArtifactError) -> Self {
        Self::Export(error.into())
    }
}

/// Makes the image of the artifact `request` names: its layers (from the
/// cache where they are there), config and manifest. Reads the store and
/// writes only the cache.
pub fn build(request: &ImageRequest<'_>) -> Result<Image, ImageError> {
    let ImageRequest { store, artifact: id, .. } = *request;
    store.fetch(&id)?;
    let artifact = Artifact::load(store, &id)?;
    let (parts, mut warnings) = layers::parts(store, &id, &artifact)?;

    // Each layer on a thread of its own; each spreads its chunks over the
    // cores.
    let made: Vec<Result<layers::Made, ImageError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .iter()
            .map(|part| scope.spawn(move || layers::layer(store, &id, part, request.compression, request.cache)))
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    });

    let mut all = request.base.map(BaseImage::layers).unwrap_or_default();
    for (part, made) in parts.iter().zip(made) {
        let made = made?;
        all.push(Layer {
            of: part.of(),
            digest: made.compressed.digest,
            diff_id: made.compressed.diff_id,
            size: made.compressed.size,
            media_type: request.compression.media_type().to_string(),
            blob: made.blob,
            reused: made.reused,
        });
    }

    let shell = request.base.is_some_and(|base| base.provides("/bin/sh"));
    let command = artifact.process_types.get(crate::run::plan::WEB).map(|web| command_of(web, shell, &mut warnings));
    match &command {
        None => warnings.push(ImageWarning::NoWeb),
        Some(argv) => {
            if let Some(program) = missing_program(argv, request.base, &image_env(request.base)) {
                warnings.push(ImageWarning::NoProgram { program });
            }
        }
    }
    for (path, target) in host_references(store, &id, &artifact.root, request.cache)? {
        let resolved = resolve_in_image(&path, &target);
        if !request.base.is_some_and(|base| base.provides(&resolved)) {
            warnings.push(ImageWarning::HostReference { path, target, resolved });
        }
    }

    let created = crate::time::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(request.commit_time));
    let config = image_config(request, &all, command, &created)?;
    let config_digest = Digest::of(&config);
    let manifest = manifest(request, &all, config.len() as u64, &config_digest, &created)?;
    Ok(Image {
        manifest_digest: Digest::of(&manifest),
        manifest,
        config,
        config_digest,
        layers: all,
        tag: if request.dirty { format!("{}-dirty", request.commit) } else { request.commit.to_owned() },
        name: request.app.to_owned(),
        warnings,
    })
}

/// The host references of the tree at `root`: a walk of every listing,
/// so kept in the cache by the root's digest, which they are a function of.
fn host_references(
    store: &dyn Store,
    id: &Digest,
    root: &Digest,
    cache: &Path,
) -> Result<Vec<(String, String)>, ImageError> {
    let name = format!("links-{}.json", root.hex());
    if let Some(found) = recall(cache, &name) {
        return Ok(found);
    }
    let found = crate::store::host_references(store, id, root)?;
    remember(cache, &name, &found);
    Ok(found)
}

/// What [`remember`] kept in `cache` as `name`, if it is there and reads.
fn recall<T: serde::de::DeserializeOwned>(cache: &Path, name: &str) -> Option<T> {
    serde_json::from_slice(&std::fs::read(cache.join(name)).ok()?).ok()
}

/// Keeps `value` in `cache` as `name`, written whole or not at all. The
/// cache only spares work: an export goes on without it.
fn remember(cache: &Path, name: &str, value: &impl serde::Serialize) {
    if std::fs::create_dir_all(cache).is_ok()
        && let Ok(temp) = tempfile::Builder::new().prefix(".cached-").tempfile_in(cache)
        && std::fs::write(temp.path(), canonical_json(value)).is_ok()
    {
        let _ = temp.persist(cache.join(name));
    }
}

/// The image's command for the Procfile command `web`; warns if it needs
/// a shell the image lacks.
fn command_of(web: &str, shell: bool, warnings: &mut Vec<ImageWarning>) -> Vec<String> {
    if needs_shell(web) && !shell {
        warnings.push(ImageWarning::NoShell { command: web.to_owned() });
    }
    command_argv(web)
}

/// Whether a Procfile command needs a shell: anything but words of
/// letters, digits and `-_./,:=+@%`.
fn needs_shell(command: &str) -> bool {
    !command.bytes().all(|b| b.is_ascii_alphanumeric() || b" \t-_./,:=+@%".contains(&b))
}

/// A Procfile command as a container's command: the program and its
/// arguments when it is only words (so that an image without a shell can
/// run it), else `/bin/sh -c`, as the runner runs it.
pub fn command_argv(command: &str) -> Vec<String> {
    if needs_shell(command) {
        return vec!["/bin/sh".to_owned(), "-c".to_owned(), command.to_owned()];
    }
    command.split_whitespace().map(str::to_owned).collect()
}

/// The image's environment: the base's, or a plain `PATH`.
fn image_env(base: Option<&BaseImage>) -> Vec<String> {
    base.map(BaseImage::env).filter(|env| !env.is_empty()).unwrap_or_else(|| vec![format!("PATH={DEFAULT_PATH}")])
}

/// The program `argv` runs if the image cannot find it: a bare name
/// (`python3`) on no directory of the image's `PATH` in the base (an
/// image without one has only `/app`). A path (`./server`) is the app's.
fn missing_program(argv: &[String], base: Option<&BaseImage>, env: &[String]) -> Option<String> {
    let program = argv.first()?;
    if program.contains('/') {
        return None;
    }
    let path = env.iter().find_map(|entry| entry.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH);
    let found = base.is_some_and(|base| {
        path.split(':').filter(|dir| !dir.is_empty()).any(|dir| base.provides(&format!("{dir}/{program}")))
    });
    (!found).then(|| program.clone())
}

/// Where the link at `path` (relative to `/app`) with `target` points in
/// the image, as an absolute, normalised path.
fn resolve_in_image(path: &str, target: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    if !target.starts_with('/') {
        parts.push(APP_DIR);
        parts.extend(path.split('/'));
        parts.pop();
    }
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

fn image_config(
    request: &ImageRequest<'_>,
    layers: &[Layer],
    command: Option<Vec<String>>,
    created: &str,
) -> Result<Vec<u8>, ImageError> {
    let document = |source| ImageError::Document { what: "config", source };
    let env = image_env(request.base);
    let mut config =
        ConfigBuilder::default().env(env).working_dir(format!("/{APP_DIR}")).labels(labels(request, created));
    if let Some(command) = command {
        config = config.cmd(command);
    }
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(layers.iter().map(|layer| layer.diff_id.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(document)?;
    let mut history = request.base.map(BaseImage::history).unwrap_or_default();
    for layer in layers.iter().filter(|layer| layer.of != LayerOf::Base) {
        let by = format!("graven build {} ({})", crate::git::short_commit(request.commit), layer.of);
        history.push(HistoryBuilder::default().created(created).created_by(by).build().map_err(document)?);
    }
    let (architecture, os, variant) = match request.base {
        Some(base) => base.platform(),
        None => (Arch::from(host_arch()), Os::Linux, None),
    };
    let mut image = ImageConfigurationBuilder::default()
        .created(created)
        .architecture(architecture)
        .os(os)
        .config(config.build().map_err(document)?)
        .rootfs(rootfs)
        .history(history);
    if let Some(variant) = variant {
        image = image.variant(variant);
    }
    Ok(canonical_json(&image.build().map_err(document)?))
}

fn labels(request: &ImageRequest<'_>, created: &str) -> HashMap<String, String> {
    let mut labels = HashMap::from([
        (oci_spec::image::ANNOTATION_REVISION.to_owned(), request.commit.to_owned()),
        (oci_spec::image::ANNOTATION_CREATED.to_owned(), created.to_owned()),
        (ARTIFACT_LABEL.to_owned(), request.artifact.to_string()),
    ]);
    if let Some(source) = request.source {
        labels.insert(oci_spec::image::ANNOTATION_SOURCE.to_owned(), source.to_owned());
    }
    if request.dirty {
        labels.insert(DIRTY_LABEL.to_owned(), "true".to_owned());
    }
    labels
}

fn manifest(
    request: &ImageRequest<'_>,
    layers: &[Layer],
    config_size: u64,
    config_digest: &Digest,
    created: &str,
) -> Result<Vec<u8>, ImageError> {
    let document = |source| ImageError::Document { what: "manifest", source };
    let config = DescriptorBuilder::default()
        .media_type(MediaType::ImageConfig)
        .size(config_size)
        .digest(oci_digest(config_digest))
        .build()
        .map_err(document)?;
    let layers = layers
        .iter()
        .map(|layer| {
            DescriptorBuilder::default()
                .media_type(MediaType::from(layer.media_type.as_str()))
                .size(layer.size)
                .digest(oci_digest(&layer.digest))
                .build()
                .map_err(document)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(layers)
        .annotations(labels(request, created))
        .build()
        .map_err(document)?;
    Ok(canonical_json(&manifest))
}

/// graven's digest as the OCI types take it (both are `sha256:<hex>`).
fn oci_digest(digest: &Digest) -> oci_spec::image::Digest {
    digest.to_string().parse().expect("a sha256 digest is an OCI digest")
}

/// The machine's architecture, as OCI (Go's `GOARCH`) names it.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "arm" => "arm",
        other => other,
    }
}

/// `value` as JSON with every object's keys sorted and no spaces: the same
/// bytes for the same document, whatever order its maps were filled in.
pub(crate) fn canonical_json(value: &impl serde::Serialize) -> Vec<u8> {
    fn write(value: &serde_json::Value, out: &mut Vec<u8>) {
        match value {
            serde_json::Value::Object(map) => {
                let sorted: BTreeMap<&String, &serde_json::Value> = map.iter().collect();
                out.push(b'{');
                for (n, (key, value)) in sorted.into_iter().enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut *out, key).expect("a string serialises");
                    out.push(b':');
                    write(value, out);
                }
                out.push(b'}');
            }
            serde_json::Value::Array(items) => {
                out.push(b'[');
                for (n, item) in items.iter().enumerate() {
                    if n > 0 {
                        out.push(b',');
                    }
                    write(item, out);
                }
                out.push(b']');
            }
            scalar => serde_json::to_writer(&mut *out, scalar).expect("a scalar serialises"),
        }
    }
    let value = serde_json::to_value(value).expect("OCI documents serialise");
    let mut out = Vec::new();
    write(&value, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_commands_need_no_shell() {
        let mut warnings = Vec::new();
        assert_eq!(command_of("./server --port=8080", false, &mut warnings), ["./server", "--port=8080"]);
        assert!(warnings.is_empty());
        assert_eq!(
            command_of("gunicorn -b :$PORT app", true, &mut warnings),
            ["/bin/sh", "-c", "gunicorn -b :$PORT app"]
        );
        assert!(warnings.is_empty());
        command_of("echo hi && sleep 1", false, &mut warnings);
        assert!(matches!(&warnings[..], [ImageWarning::NoShell { .. }]));
    }

    #[test]
    fn a_bare_program_must_be_on_the_images_path() {
        let argv = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
        let env = image_env(None);
        assert_eq!(missing_program(&argv(&["python3", "app.py"]), None, &env).as_deref(), Some("python3"));
        assert_eq!(missing_program(&argv(&["./web"]), None, &env), None, "the app's own program");
        assert_eq!(missing_program(&argv(&["/bin/sh", "-c", "x"]), None, &env), None);
    }

    #[test]
    fn links_resolve_from_their_directory_under_app() {
        assert_eq!(resolve_in_image(".venv/bin/python", "/usr/bin/python3"), "/usr/bin/python3");
        assert_eq!(resolve_in_image(".venv/bin/python", "../../../usr/bin/python3"), "/usr/bin/python3");
        assert_eq!(resolve_in_image("lib/x", "../../../../etc/ssl"), "/etc/ssl");
    }

    #[test]
    fn canonical_json_sorts_keys_whatever_the_map() {
        let one = HashMap::from([("b", 1), ("a", 2), ("c", 3)]);
        assert_eq!(canonical_json(&one), br#"{"a":2,"b":1,"c":3}"#);
        let nested = serde_json::json!({"z": [{"y": 1, "x": "é"}], "a": null});
        assert_eq!(String::from_utf8(canonical_json(&nested)).unwrap(), r#"{"a":null,"z":[{"x":"é","y":1}]}"#);
    }
}
