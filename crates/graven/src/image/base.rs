//! A base image, read from an OCI layout the user has (`skopeo copy
//! docker://python:3.12-slim oci:base:3.12`). Everything in it is untrusted
//! input: each document is checked against its digest and size, each
//! layer's blob against its size, and, the first time a layer is read for
//! its paths, against its digest.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::{Arch, History, ImageConfiguration, ImageIndex, ImageManifest, MediaType, Os};

use super::{Layer, LayerOf};
use crate::Digest;
use crate::digest::Hasher;

/// The largest JSON document read from a layout.
const MAX_DOCUMENT: u64 = 4 << 20;

/// How many links are followed when resolving a path in the base.
const MAX_LINKS: usize = 40;

/// A base image that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    /// Not there, or not a directory.
    #[error("the base image {} does not exist: make one with `skopeo copy docker://IMAGE oci:{}:TAG`", dir.display(), dir.display())]
    Missing {
        /// The layout's directory.
        dir: PathBuf,
    },
    /// Not an OCI layout, or one whose documents are not what they say.
    #[error("the base image {} is not a usable OCI layout: {problem}", dir.display())]
    NotALayout {
        /// The layout's directory.
        dir: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The tag is not in the layout.
    #[error("the base image {} has no tag '{tag}' (it has: {})", dir.display(), if tags.is_empty() { "none".to_owned() } else { tags.join(", ") })]
    NoTag {
        /// The layout's directory.
        dir: PathBuf,
        /// The tag asked for.
        tag: String,
        /// The tags it has.
        tags: Vec<String>,
    },
    /// No tag given, and the layout has more than one image.
    #[error("the base image {} has {} images: name one with {}:TAG (tags: {})", dir.display(), tags.len(), dir.display(), tags.join(", "))]
    WhichTag {
        /// The layout's directory.
        dir: PathBuf,
        /// The tags it has.
        tags: Vec<String>,
    },
    /// A multi-platform image without this machine's platform.
    #[error("the base image {} has no linux/{arch} image", dir.display())]
    NoPlatform {
        /// The layout's directory.
        dir: PathBuf,
        /// This machine's architecture.
        arch: &'static str,
    },
    /// Reading the layout failed.
    #[error("could not read the base image {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A base image: its config, its layers, and the paths its file system has.
#[derive(Debug, Clone)]
pub struct BaseImage {
    config: ImageConfiguration,
    layers: Vec<Layer>,
    /// Every path of its file system (no leading `/`), with the target of
    /// the links.
    paths: BTreeMap<String, Option<String>>,
}

impl BaseImage {
    /// Opens `LAYOUT[:TAG]`: the image tagged `TAG` in the OCI layout at
    /// `LAYOUT`, or its only image. What its layers hold is cached in
    /// `cache` by the manifest's digest.
    pub fn open(spec: &str, cache: &Path) -> Result<Self, BaseError> {
        let (dir, tag) = split_spec(spec);
        let dir = PathBuf::from(dir);
        if !dir.is_dir() {
            return Err(BaseError::Missing { dir });
        }
        let layout = Layout { dir: dir.clone() };
        layout.check_header()?;
        let index: ImageIndex = layout.parse(&layout.dir.join("index.json"), None)?;
        let tags: Vec<String> = index.manifests().iter().filter_map(ref_name).collect();
        let descriptor = match tag {
            Some(tag) => index
                .manifests()
                .iter()
                .find(|d| ref_name(d).as_deref() == Some(tag))
                .ok_or_else(|| BaseError::NoTag { dir: dir.clone(), tag: tag.to_owned(), tags: tags.clone() })?,
            None => match index.manifests().as_slice() {
                [only] => only,
                [] => return Err(layout.invalid("its index.json lists no image")),
                _ => return Err(BaseError::WhichTag { dir: dir.clone(), tags }),
            },
        };
        let (manifest, manifest_digest) = layout.manifest(descriptor)?;
        let config: ImageConfiguration = layout.parse_blob(manifest.config())?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers().len() {
            return Err(layout.invalid("its config's diff_ids do not match its manifest's layers"));
        }
        let mut layers = Vec::new();
        for (descriptor, diff_id) in manifest.layers().iter().zip(diff_ids) {
            let digest = layout.digest_of(descriptor)?;
            let diff_id = diff_id.parse::<Digest>().map_err(|_| layout.invalid("a diff_id is not a sha256 digest"))?;
            let blob = layout.blob(&digest);
            let size = fs::metadata(&blob).map_err(|source| BaseError::Read { path: blob.clone(), source })?.len();
            if size != descriptor.size() {
                return Err(layout.invalid(&format!("the layer {digest} is {size} bytes, not {}", descriptor.size())));
            }
            let media_type = match descriptor.media_type().to_string().as_str() {
                // The same bytes, under the OCI name.
                "application/vnd.docker.image.rootfs.diff.tar.gzip" => MediaType::ImageLayerGzip.to_string(),
                other => other.to_owned(),
            };
            layers.push(Layer { of: LayerOf::Base, digest, diff_id, size, media_type, blob, reused: true });
        }
        let paths = paths_of(&layout, &layers, cache, &manifest_digest)?;
        Ok(Self { config, layers, paths })
    }

    pub(super) fn layers(&self) -> Vec<Layer> {
        self.layers.clone()
    }

    /// Its environment (`PATH=…`), which the image inherits.
    pub fn env(&self) -> Vec<String> {
        self.config.config().as_ref().and_then(|config| config.env().clone()).unwrap_or_default()
    }

    pub(super) fn history(&self) -> Vec<History> {
        self.config.history().clone().unwrap_or_default()
    }

    pub(super) fn platform(&self) -> (Arch, Os, Option<String>) {
        (self.config.architecture().clone(), self.config.os().clone(), self.config.variant().clone())
    }

    /// Whether `path` (absolute) names something in the base's file
    /// system, following its links.
    pub fn provides(&self, path: &str) -> bool {
        let mut pending: Vec<String> = components(path).into_iter().rev().collect();
        let mut resolved: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(part) = pending.pop() {
            if part == ".." {
                resolved.pop();
                continue;
            }
            resolved.push(part);
            let at = resolved.join("/");
            match self.paths.get(&at) {
                None => return false,
                Some(None) => {}
                Some(Some(target)) => {
                    links += 1;
                    if links > MAX_LINKS {
                        return false;
                    }
                    resolved.pop();
                    if target.starts_with('/') {
                        resolved.clear();
                    }
                    pending.extend(components(target).into_iter().rev());
                }
            }
        }
        true
    }
}

fn components(path: &str) -> Vec<String> {
    path.split('/').filter(|part| !part.is_empty() && *part != ".").map(str::to_owned).collect()
}

/// `LAYOUT[:TAG]`: the tag is what follows the last `:`, if no `/` does.
fn split_spec(spec: &str) -> (&str, Option<&str>) {
    match spec.rsplit_once(':') {
        Some((dir, tag)) if !dir.is_empty() && !tag.is_empty() && !tag.contains('/') => (dir, Some(tag)),
        _ => (spec, None),
    }
}

fn ref_name(descriptor: &oci_spec::image::Descriptor) -> Option<String> {
    descriptor.annotations().as_ref()?.get(oci_spec::image::ANNOTATION_REF_NAME).cloned()
}

struct Layout {
    dir: PathBuf,
}

impl Layout {
    fn invalid(&self, problem: &str) -> BaseError {
        BaseError::NotALayout { dir: self.dir.clone(), problem: problem.to_owned() }
    }

    fn check_header(&self) -> Result<(), BaseError> {
        #[derive(serde::Deserialize)]
        struct Header {
            #[serde(rename = "imageLayoutVersion")]
            version: String,
        }
        let path = self.dir.join("oci-layout");
        if !path.exists() {
            return Err(self.invalid("it has no oci-layout file"));
        }
        let header: Header = self.parse(&path, None)?;
        if !header.version.starts_with("1.") {
            return Err(self.invalid(&format!("its layout version is {}; graven reads 1.x", header.version)));
        }
        Ok(())
    }

    fn blob(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs").join("sha256").join(digest.hex())
    }

    fn digest_of(&self, descriptor: &oci_spec::image::Descriptor) -> Result<Digest, BaseError> {
        descriptor
            .digest()
            .to_string()
            .parse::<Digest>()
            .map_err(|_| self.invalid(&format!("{} is not a sha256 digest", descriptor.digest())))
    }

    /// Reads `path`, which must be `expected` (size and digest) if given.
    fn read(&self, path: &Path, expected: Option<(&Digest, u64)>) -> Result<Vec<u8>, BaseError> {
        let read_error = |source| BaseError::Read { path: path.to_owned(), source };
        let file = fs::File::open(path).map_err(read_error)?;
        let mut bytes = Vec::new();
        file.take(MAX_DOCUMENT + 1).read_to_end(&mut bytes).map_err(read_error)?;
        if bytes.len() as u64 > MAX_DOCUMENT {
            return Err(self.invalid(&format!("{} is over {MAX_DOCUMENT} bytes", path.display())));
        }
        if let Some((digest, size)) = expected
            && (bytes.len() as u64 != size || Digest::of(&bytes) != *digest)
        {
            return Err(self.invalid(&format!("{} is not what its descriptor says ({digest})", path.display())));
        }
        Ok(bytes)
    }

    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        path: &Path,
        expected: Option<(&Digest, u64)>,
    ) -> Result<T, BaseError> {
        let bytes = self.read(path, expected)?;
        serde_json::from_slice(&bytes).map_err(|e| self.invalid(&format!("{}: {e}", path.display())))
    }

    fn parse_blob<T: serde::de::DeserializeOwned>(
        &self,
        descriptor: &oci_spec::image::Descriptor,
    ) -> Result<T, BaseError> {
        let digest = self.digest_of(descriptor)?;
        self.parse(&self.blob(&digest), Some((&digest, descriptor.size())))
    }

    /// The image manifest `descriptor` names, through an index of
    /// platforms if it is one.
    fn manifest(&self, descriptor: &oci_spec::image::Descriptor) -> Result<(ImageManifest, Digest), BaseError> {
        let media_type = descriptor.media_type().to_string();
        if media_type == MediaType::ImageIndex.to_string()
            || media_type == "application/vnd.docker.distribution.manifest.list.v2+json"
        {
            let index: ImageIndex = self.parse_blob(descriptor)?;
            let arch = super::host_arch();
            let chosen = index
                .manifests()
                .iter()
                .find(|d| {
                    d.platform()
                        .as_ref()
                        .is_some_and(|p| p.architecture().to_string() == arch && p.os().to_string() == "linux")
                })
                .ok_or_else(|| BaseError::NoPlatform { dir: self.dir.clone(), arch })?;
            return self.manifest(chosen);
        }
        Ok((self.parse_blob(descriptor)?, self.digest_of(descriptor)?))
    }
}

/// The paths of the base's file system, its layers applied in order (with
/// their whiteouts), from the cache or read once.
fn paths_of(
    layout: &Layout,
    layers: &[Layer],
    cache: &Path,
    manifest: &Digest,
) -> Result<BTreeMap<String, Option<String>>, BaseError> {
    let name = format!("base-{}.json", manifest.hex());
    if let Some(paths) = super::recall(cache, &name) {
        return Ok(paths);
    }
    let mut paths = BTreeMap::new();
    for layer in layers {
        apply_layer(layout, layer, &mut paths)?;
    }
    super::remember(cache, &name, &paths);
    Ok(paths)
}

fn apply_layer(layout: &Layout, layer: &Layer, paths: &mut BTreeMap<String, Option<String>>) -> Result<(), BaseError> {
    let read_error = |source| BaseError::Read { path: layer.blob.clone(), source };
    let file = fs::File::open(&layer.blob).map_err(read_error)?;
    let mut hashing = HashingReader { inner: io::BufReader::with_capacity(1 << 20, file), hasher: Hasher::default() };
    {
        let decompressed: Box<dyn Read + '_> = match layer.media_type.as_str() {
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip" => {
                Box::new(flate2::read::MultiGzDecoder::new(&mut hashing))
            }
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Box::new(zstd::stream::read::Decoder::new(&mut hashing).map_err(read_error)?)
            }
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Box::new(&mut hashing),
            other => {
                return Err(layout.invalid(&format!("a layer has the media type {other}, which graven cannot read")));
            }
        };
        let mut archive = tar::Archive::new(decompressed);
        let bad = |e: io::Error| layout.invalid(&format!("the layer {} is not a tar stream: {e}", layer.digest));
        for entry in archive.entries().map_err(bad)? {
            let entry = entry.map_err(bad)?;
            let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let path = components(&path).join("/");
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", &path));
            if name == ".wh..wh..opq" {
                let prefix = format!("{dir}/");
                paths.retain(|known, _| !known.starts_with(&prefix));
                continue;
            }
            if let Some(gone) = name.strip_prefix(".wh.") {
                let gone = if dir.is_empty() { gone.to_owned() } else { format!("{dir}/{gone}") };
                let below = format!("{gone}/");
                paths.retain(|known, _| *known != gone && !known.starts_with(&below));
                continue;
            }
            let target = (entry.header().entry_type() == tar::EntryType::Symlink)
                .then(|| entry.link_name_bytes().map(|t| String::from_utf8_lossy(&t).into_owned()))
                .flatten();
            if !path.is_empty() {
                paths.insert(path, target);
            }
        }
        io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(bad)?;
    }
    io::copy(&mut hashing, &mut io::sink()).map_err(read_error)?;
    if hashing.hasher.finish() != layer.digest {
        return Err(layout.invalid(&format!("the layer {} is not what its digest says", layer.digest)));
    }
    Ok(())
}

struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.hasher.update(&buf[..read]);
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(paths: &[(&str, Option<&str>)]) -> BaseImage {
        BaseImage {
            config: ImageConfiguration::default(),
            layers: Vec::new(),
            paths: paths.iter().map(|(p, t)| ((*p).to_owned(), t.map(str::to_owned))).collect(),
        }
    }

    #[test]
    fn a_path_is_provided_through_the_links_of_the_base() {
        let base = base(&[
            ("usr", None),
            ("usr/bin", None),
            ("usr/bin/python3.11", None),
            ("usr/bin/python3", Some("python3.11")),
            ("bin", Some("usr/bin")),
            ("loop", Some("/loop")),
        ]);
        assert!(base.provides("/usr/bin/python3"));
        assert!(base.provides("/bin/python3"));
        // `..` after a link is taken from where the link led (/usr).
        assert!(base.provides("/bin/../bin/python3"));
        assert!(!base.provides("/bin/../usr/bin/python3.11"));
        assert!(!base.provides("/bin/python2"));
        assert!(!base.provides("/loop/x"));
    }

    #[test]
    fn a_tag_follows_the_last_colon() {
        assert_eq!(split_spec("base:3.12"), ("base", Some("3.12")));
        assert_eq!(split_spec("/images/base"), ("/images/base", None));
        assert_eq!(split_spec("a:b/c"), ("a:b/c", None));
    }
}
