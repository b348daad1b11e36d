//! What is checked before an artifact is released with a config. The
//! artifact must be whole and valid: every listing loads (and so is
//! validated), every blob is in the store with its listed size. And config
//! must never be baked into it: every file is searched for the bytes of
//! every secret value of at least [`SECRET_SCAN_MIN_LEN`] bytes.

use std::collections::BTreeMap;

use aho_corasick::AhoCorasick;
use rayon::prelude::*;

use super::ReleaseError;
use super::config::SECRET_SCAN_MIN_LEN;
use crate::Digest;
use crate::model::{ConfigVersion, EntryKind};
use crate::store::{ArtifactError, walk};
use crate::store::{CheckedBlob, Mismatch, Store, StoreError, open_checked_blob};

/// Checks artifact `id` before it is released with `config`: whole and
/// valid if it is `new` to the ledger's releases (an artifact released
/// before was checked then, and what the store holds of it cannot change
/// without its digests saying so); then returns the secret keys whose
/// values it contains, each with the paths that contain it. Empty if the
/// artifact is clean.
pub(crate) fn check_pairing(
    store: &dyn Store,
    id: &Digest,
    config: &ConfigVersion,
    new: bool,
) -> Result<BTreeMap<String, Vec<String>>, ReleaseError> {
    let secrets: Vec<(&str, &str)> = config
        .secret
        .iter()
        .filter_map(|key| config.vars.get(key).map(|value| (key.as_str(), value.as_str())))
        .filter(|(_, value)| value.len() >= SECRET_SCAN_MIN_LEN)
        .collect();
    if secrets.is_empty() && !new {
        return Ok(BTreeMap::new());
    }
    // From a shared store: what the local one lacks, checked on the way.
    store.fetch(id)?;
    let artifact = super::load_artifact(store, id)?;
    // By digest and listed size: each blob is checked through its listing.
    let mut files: BTreeMap<(Digest, u64), Vec<String>> = BTreeMap::new();
    walk(store, id, &artifact.root, &mut |path, kind| {
        if let EntryKind::File { digest, size, .. } = kind {
            files.entry((*digest, *size)).or_default().push(path.to_owned());
        }
        Ok::<_, ArtifactError>(())
    })?;
    if new {
        // Every blob present at its listed size: one batch question.
        let wanted: Vec<Digest> = files.keys().map(|(digest, _)| *digest).collect();
        let sizes = store.blob_sizes(&wanted)?;
        for ((&(digest, size), paths), found) in files.iter().zip(sizes) {
            let mismatch = match found {
                Some(found) if found == size => continue,
                Some(found) => StoreError::Mismatch { digest, mismatch: Mismatch::Size { listed: size, found } },
                None => StoreError::NotFound { kind: "blob", digest },
            };
            return Err(ArtifactError::Blob { id: *id, path: paths[0].clone(), source: mismatch }.into());
        }
    }
    if secrets.is_empty() {
        return Ok(BTreeMap::new());
    }
    let matcher =
        AhoCorasick::new(secrets.iter().map(|(_, value)| value)).expect("secret values make a valid automaton");

    let found: Vec<(usize, &Vec<String>)> = files
        .par_iter()
        .map(|(&(digest, size), paths)| {
            let blob_error = |source| ArtifactError::Blob { id: *id, path: paths[0].clone(), source };
            let blob = open_checked_blob(store, &digest, size).map_err(blob_error)?;
            // Streamed: a blob may be far larger than memory should hold.
            let mut hits: Vec<(usize, &Vec<String>)> = Vec::new();
            for found in matcher.stream_find_iter(blob) {
                let found = found.map_err(|e| blob_error(CheckedBlob::into_store_error(&digest, e)))?;
                let pattern = found.pattern().as_usize();
                if !hits.iter().any(|(p, _)| *p == pattern) {
                    hits.push((pattern, paths));
                }
            }
            Ok(hits)
        })
        .collect::<Result<Vec<_>, ArtifactError>>()?
        .into_iter()
        .flatten()
        .collect();

    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (pattern, paths) in found {
        let entry = by_key.entry(secrets[pattern].0.to_owned()).or_default();
        entry.extend(paths.iter().cloned());
    }
    for paths in by_key.values_mut() {
        paths.sort();
        paths.dedup();
    }
    Ok(by_key)
}
