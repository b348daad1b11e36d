//! The plan of a release: which processes run, with which command and
//! which environment, whoever runs them. One pure function of the release,
//! its config, its artifact and the formation, shared by the runner and by
//! whatever renders a release for another platform: they add only what is
//! theirs (a port, a TMPDIR, a HOME), never another rule. A one-off process
//! (`graven exec`) gets its environment from the same
//! [`process_environment`].

use std::collections::BTreeMap;
use std::ffi::OsString;

use super::environment::process_environment;
use crate::model::{Artifact, ConfigVersion, Formation, Release};

/// The process type that listens on `PORT` and gets the public traffic.
pub const WEB: &str = "web";

/// What runs for a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The release phase (`release.1`), run before the processes start,
    /// if the Procfile has one.
    pub release_phase: Option<PlannedProcess>,
    /// Every process of the formation: `web` first, then the other types
    /// by name, each numbered from 1 (`worker.2`).
    pub processes: Vec<PlannedProcess>,
}

/// One process of a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedProcess {
    /// `web.1`.
    pub name: String,
    /// `web`.
    pub kind: String,
    /// Its Procfile command, run by `sh -c`.
    pub command: String,
    /// Its whole environment but `PORT`, `TMPDIR` and `HOME`, which the
    /// one that runs it adds: see [`process_environment`].
    pub env: BTreeMap<String, OsString>,
}

impl PlannedProcess {
    /// Whether it listens on `PORT` for the proxy.
    pub fn is_web(&self) -> bool {
        self.kind == WEB
    }
}

/// The plan of `release` (with `config`, its config version, and
/// `artifact`, its artifact) in `formation`.
pub fn plan(release: &Release, config: &ConfigVersion, artifact: &Artifact, formation: &Formation) -> Plan {
    let planned = |name: String, kind: &str, command: &str| PlannedProcess {
        env: process_environment(release, config, &name),
        name,
        kind: kind.to_owned(),
        command: command.to_owned(),
    };
    let release_phase = artifact
        .process_types
        .get(crate::app::RELEASE_PHASE)
        .map(|command| planned("release.1".to_owned(), crate::app::RELEASE_PHASE, command));
    let mut types: Vec<(&String, &String)> =
        artifact.process_types.iter().filter(|(kind, _)| kind.as_str() != crate::app::RELEASE_PHASE).collect();
    types.sort_by_key(|(kind, _)| (kind.as_str() != WEB, kind.as_str()));
    let processes = types
        .into_iter()
        .flat_map(|(kind, command)| (1..=formation.count(kind)).map(move |n| (kind, command, n)))
        .map(|(kind, command, n)| planned(format!("{kind}.{n}"), kind, command))
        .collect();
    Plan { release_phase, processes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Digest;

    fn release() -> (Release, ConfigVersion, Artifact) {
        let config = ConfigVersion {
            id: Digest::of(b"config"),
            app: "hello".to_owned(),
            env: "production".to_owned(),
            number: 3,
            parent: None,
            vars: BTreeMap::from([
                ("GREETING".to_owned(), "Hi".to_owned()),
                ("GRAVEN_PROCESS".to_owned(), "x".to_owned()),
            ]),
            secret: std::collections::BTreeSet::new(),
            author: "dev@example.com".to_owned(),
            created_at: "2026-01-01T00:00:00Z".to_owned(),
            description: "test".to_owned(),
        };
        let release = Release {
            id: Digest::of(b"release"),
            app: "hello".to_owned(),
            env: "production".to_owned(),
            number: 7,
            kind: crate::model::ReleaseKind::Deploy,
            artifact: Digest::of(b"artifact"),
            commit: "c".repeat(40),
            config: config.id,
            parent: None,
            author: "dev@example.com".to_owned(),
            created_at: "2026-01-01T00:00:00Z".to_owned(),
            description: "Deploy".to_owned(),
            rollback_of: None,
            promoted_from: None,
            host: None,
        };
        let artifact = Artifact {
            format: crate::model::ARTIFACT_FORMAT,
            image: crate::app::ImageSettings::default(),
            root: Digest::of(b"root"),
            process_types: BTreeMap::from([
                ("worker".to_owned(), "python3 worker.py".to_owned()),
                ("web".to_owned(), "python3 app.py".to_owned()),
                ("clock".to_owned(), "python3 clock.py".to_owned()),
                ("release".to_owned(), "python3 release.py".to_owned()),
            ]),
            run: crate::app::RunSettings::default(),
        };
        (release, config, artifact)
    }

    #[test]
    fn web_comes_first_then_the_types_by_name_numbered_by_the_formation() {
        let (release, config, artifact) = release();
        let formation = Formation::parse(["web=2", "clock=0"]).unwrap();
        let plan = plan(&release, &config, &artifact, &formation);
        let names: Vec<&str> = plan.processes.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["web.1", "web.2", "worker.1"]);
        assert!(plan.processes[0].is_web() && !plan.processes[2].is_web());
        assert_eq!(plan.processes[2].command, "python3 worker.py");
        let phase = plan.release_phase.expect("the Procfile has one");
        assert_eq!((phase.name.as_str(), phase.command.as_str()), ("release.1", "python3 release.py"));
    }

    #[test]
    fn each_process_has_the_config_and_graven_s_variables_which_win() {
        let (release, config, artifact) = release();
        let plan = plan(&release, &config, &artifact, &Formation::default());
        let web = &plan.processes[0];
        assert_eq!(web.env["GREETING"], "Hi");
        assert_eq!(web.env["GRAVEN_PROCESS"], "web.1", "graven's own variable over the config's");
        assert_eq!(web.env["GRAVEN_RELEASE"], "v7");
        assert!(!web.env.contains_key("PORT") && !web.env.contains_key("TMPDIR"), "the runner's to add");
        assert_eq!(process_environment(&release, &config, "run.1")["GRAVEN_PROCESS"], "run.1");
    }
}
