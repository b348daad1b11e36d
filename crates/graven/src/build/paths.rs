//! Build paths embedded in the output: a path the build saw for its output
//! that will not exist when the artifact runs. In the sandbox the checkout
//! is at `/app` both when building and running, unless `[build] output`
//! names a subdirectory (its files are at `/app/<output>` while building,
//! at `/app` when running); without the sandbox the checkout is at a path
//! of this machine. Ingest looks for it in every file as it hashes the
//! file (one Aho-Corasick automaton, as the secret scan uses), so finding
//! it costs no second read of the output.

use std::path::Path;

use aho_corasick::AhoCorasick;

/// The path of the output the build saw that will not exist at run time,
/// if there is one: `/app/<output>` in the sandbox when `[build] output`
/// is a subdirectory, the checkout's path on this machine without the
/// sandbox.
pub(crate) fn build_time_path(subdirectory: Option<&str>, output: &Path, sandboxed: bool) -> Option<String> {
    match (subdirectory, sandboxed) {
        (Some(subdirectory), true) => Some(format!("{}/{subdirectory}", crate::sandbox::APP)),
        (subdirectory, false) => {
            // The checkout: the output, less `[build] output`'s components.
            let depth = subdirectory.map_or(0, |sub| Path::new(sub).components().count());
            Some(output.ancestors().nth(depth).unwrap_or(output).display().to_string())
        }
        (None, true) => None,
    }
}

/// The automaton that finds `path`.
pub(crate) fn finder(path: &str) -> AhoCorasick {
    AhoCorasick::new([path]).expect("a path makes a valid automaton")
}
