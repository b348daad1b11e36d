//! The environment of a release's processes: the release's config, graven's
//! own variables, and PATH. Nothing else of the caller's environment.

use std::collections::BTreeMap;
use std::ffi::OsString;

use crate::env_vars::process::{
    GRAVEN_APP, GRAVEN_ARTIFACT, GRAVEN_COMMIT, GRAVEN_ENV, GRAVEN_PROCESS, GRAVEN_RELEASE,
};
use crate::model::{ConfigVersion, Release};

/// The whole environment of process `process` (`web.1`, `run.1`) of
/// `release`. graven's own variables win over config keys of the same name;
/// `PATH` is the config's if it sets one, else graven's own.
pub fn process_environment(release: &Release, config: &ConfigVersion, process: &str) -> BTreeMap<String, OsString> {
    let mut env: BTreeMap<String, OsString> = config.vars.iter().map(|(k, v)| (k.clone(), OsString::from(v))).collect();
    if let Some(path) = std::env::var_os("PATH") {
        env.entry("PATH".to_owned()).or_insert(path);
    }
    env.insert(GRAVEN_APP.to_owned(), release.app.clone().into());
    env.insert(GRAVEN_ENV.to_owned(), release.env.clone().into());
    env.insert(GRAVEN_RELEASE.to_owned(), release.version().into());
    env.insert(GRAVEN_COMMIT.to_owned(), release.commit.clone().into());
    env.insert(GRAVEN_ARTIFACT.to_owned(), release.artifact.to_string().into());
    env.insert(GRAVEN_PROCESS.to_owned(), process.into());
    env
}

/// Creates (private, 0700) and returns the `HOME` of `app`'s processes in
/// environment `env` (see [`Home::process_home`](crate::home::Home::process_home)).
pub fn process_home(home: &crate::home::Home, app: &str, env: &str) -> std::io::Result<std::path::PathBuf> {
    let dir = home.process_home(app, env);
    crate::fs_tree::create_private_dir_all(&dir)?;
    Ok(dir)
}
