//! Build paths embedded in the output: a path the build saw for its output
//! that will not exist when the artifact runs. In the sandbox the checkout
//! is at `/app` both when building and running, unless `[build] output`
//! names a subdirectory (its files are at `/app/<output>` while building,
//! at `/app` when running); without the sandbox the checkout is at a path
//! of this machine. One Aho-Corasick pass over the output's files, as the
//! secret scan does, finds files that hold such a path.

use std::path::{Path, PathBuf};

use aho_corasick::AhoCorasick;
use rayon::prelude::*;

/// The files under `output` (relative paths, sorted) that contain one of
/// `needles`. Symlinks are not followed; unreadable files are skipped.
pub(crate) fn files_embedding(output: &Path, needles: &[String]) -> Vec<String> {
    let needles: Vec<&String> = needles.iter().filter(|needle| !needle.is_empty()).collect();
    if needles.is_empty() {
        return Vec::new();
    }
    let matcher = AhoCorasick::new(&needles).expect("paths make a valid automaton");
    let mut files = Vec::new();
    collect_files(output, "", &mut files);
    let mut found: Vec<String> = files
        .par_iter()
        .filter(|(absolute, _)| {
            std::fs::File::open(absolute).ok().is_some_and(|file| {
                matcher.stream_find_iter(std::io::BufReader::new(file)).next().is_some_and(|m| m.is_ok())
            })
        })
        .map(|(_, relative)| relative.clone())
        .collect();
    found.sort();
    found
}

fn collect_files(dir: &Path, prefix: &str, files: &mut Vec<(PathBuf, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let Ok(file_type) = entry.file_type() else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        let relative = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        if file_type.is_dir() {
            collect_files(&entry.path(), &relative, files);
        } else if file_type.is_file() {
            files.push((entry.path(), relative));
        }
    }
}
