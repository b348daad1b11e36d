//! An [`Image`] written out: as an OCI image layout (a directory), or as a
//! tarball of one that `podman load` and `docker load` accept. Archives
//! are byte-identical for the same image, like every export.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{DescriptorBuilder, ImageIndexBuilder, MediaType, OciLayoutBuilder};

use super::{Image, ImageError, canonical_json};
use crate::export::ExportError;
use crate::export::tar::header;

/// Which tarball.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    /// An OCI image layout in a tar (`podman load`, `skopeo copy oci-archive:`).
    Oci,
    /// What `docker save` writes: the blobs and a `manifest.json` naming
    /// the image `APP:COMMIT` (`docker load`, `podman load`, `skopeo copy
    /// docker-archive:`).
    Docker,
}

/// The files other than blobs: for a layout, `oci-layout` and `index.json`
/// (the image tagged with its commit), as the OCI types write them; for
/// `docker load`, `manifest.json` (not an OCI document: Docker's own).
fn documents(image: &Image, docker: bool) -> Result<Vec<(&'static str, Vec<u8>)>, ImageError> {
    if docker {
        let blob = |digest: &crate::Digest| format!("blobs/sha256/{}", digest.hex());
        let manifest = serde_json::json!([{
            "Config": blob(&image.config_digest),
            "RepoTags": [format!("{}:{}", image.name, image.tag)],
            "Layers": image.layers.iter().map(|layer| blob(&layer.digest)).collect::<Vec<_>>(),
        }]);
        return Ok(vec![("manifest.json", canonical_json(&manifest))]);
    }
    let document = |what| move |source| ImageError::Document { what, source };
    let layout = OciLayoutBuilder::default().image_layout_version("1.0.0").build().map_err(document("layout"))?;
    let manifest = DescriptorBuilder::default()
        .media_type(MediaType::ImageManifest)
        .size(image.manifest.len() as u64)
        .digest(super::oci_digest(&image.manifest_digest))
        .annotations(HashMap::from([(oci_spec::image::ANNOTATION_REF_NAME.to_owned(), image.tag.clone())]))
        .build()
        .map_err(document("index"))?;
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest])
        .build()
        .map_err(document("index"))?;
    Ok(vec![("oci-layout", canonical_json(&layout)), ("index.json", canonical_json(&index))])
}

/// The image's blobs, each once, by digest: name, then where its bytes are.
enum Bytes<'a> {
    Memory(&'a [u8]),
    File(&'a Path),
}

fn blobs(image: &Image, with_manifest: bool) -> Vec<(String, Bytes<'_>)> {
    let mut blobs = vec![(image.config_digest.hex(), Bytes::Memory(&image.config))];
    if with_manifest {
        blobs.push((image.manifest_digest.hex(), Bytes::Memory(&image.manifest)));
    }
    for layer in &image.layers {
        blobs.push((layer.digest.hex(), Bytes::File(&layer.blob)));
    }
    blobs.sort_by(|a, b| a.0.cmp(&b.0));
    blobs.dedup_by(|a, b| a.0 == b.0);
    blobs
}

/// Writes `image` as an OCI image layout at `dir`, which must not exist
/// (or be an empty directory): written beside it and renamed, so that a
/// killed export leaves no half layout. Layer blobs are hard links to the
/// cache's where they can be (read-only files), copies otherwise.
pub fn write_layout(image: &Image, dir: &Path) -> Result<(), ImageError> {
    let write_error = |path: &Path| {
        let path = path.to_owned();
        move |source| ImageError::Export(ExportError::Write { path, source })
    };
    if fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) || dir.is_file() {
        return Err(ImageError::Export(ExportError::Write {
            path: dir.to_owned(),
            source: io::Error::new(io::ErrorKind::AlreadyExists, "it exists and is not empty"),
        }));
    }
    let parent = match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let temp = tempfile::Builder::new().prefix(".graven-export-").tempdir_in(&parent).map_err(write_error(dir))?;
    let sha256 = temp.path().join("blobs").join("sha256");
    fs::create_dir_all(&sha256).map_err(write_error(&sha256))?;
    for (name, bytes) in blobs(image, true) {
        let path = sha256.join(&name);
        match bytes {
            Bytes::Memory(bytes) => fs::write(&path, bytes).map_err(write_error(&path))?,
            Bytes::File(from) => {
                if fs::hard_link(from, &path).is_err() {
                    fs::copy(from, &path).map_err(write_error(&path))?;
                }
            }
        }
    }
    for (name, bytes) in documents(image, false)? {
        let path = temp.path().join(name);
        fs::write(&path, bytes).map_err(write_error(&path))?;
    }
    let mode = 0o777 & !crate::export::umask();
    fs::set_permissions(temp.path(), std::os::unix::fs::PermissionsExt::from_mode(mode)).map_err(write_error(dir))?;
    let kept = temp.keep();
    if dir.is_dir() {
        fs::remove_dir(dir).map_err(write_error(dir))?;
    }
    fs::rename(&kept, dir).map_err(|source| {
        crate::fs_tree::remove_tree(&kept);
        ImageError::Export(ExportError::Write { path: dir.to_owned(), source })
    })?;
    Ok(())
}

/// Writes `image` to `out` as a tarball of its layout; returns the entries
/// written.
pub fn write_archive(image: &Image, kind: ArchiveKind, out: impl Write) -> Result<u64, ImageError> {
    let io_error = |source| ImageError::Export(ExportError::Write { path: PathBuf::from("-"), source });
    let mut builder = tar::Builder::new(out);
    let mut entries = 0;
    for dir in ["blobs/", "blobs/sha256/"] {
        let mut header = header(tar::EntryType::Directory, 0o755, 0);
        builder.append_data(&mut header, dir, io::empty()).map_err(io_error)?;
        entries += 1;
    }
    for (name, bytes) in blobs(image, kind == ArchiveKind::Oci) {
        let path = format!("blobs/sha256/{name}");
        match bytes {
            Bytes::Memory(bytes) => {
                let mut header = header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
                builder.append_data(&mut header, &path, bytes).map_err(io_error)?;
            }
            Bytes::File(from) => {
                let file =
                    fs::File::open(from).map_err(|source| ImageError::Cache { path: from.to_owned(), source })?;
                let size = file.metadata().map_err(io_error)?.len();
                let mut header = header(tar::EntryType::Regular, 0o644, size);
                builder
                    .append_data(&mut header, &path, io::BufReader::with_capacity(1 << 20, file))
                    .map_err(io_error)?;
            }
        }
        entries += 1;
    }
    for (name, bytes) in documents(image, kind == ArchiveKind::Docker)? {
        let mut header = header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
        builder.append_data(&mut header, name, &bytes[..]).map_err(io_error)?;
        entries += 1;
    }
    builder.into_inner().map_err(io_error)?.flush().map_err(io_error)?;
    Ok(entries)
}
