//! Two-stage settings: raw global flags (and the environment variables clap
//! reads for them) plus the repository and `graven.toml` become one
//! validated [`Settings`] before any command logic runs.

use std::path::{Path, PathBuf};

use graven::app::{AppSettings, SETTINGS_FILE, is_valid_app_name};
use graven::env_vars::{GRAVEN_AUTHOR, GRAVEN_LEDGER, GRAVEN_STORE};
use graven::git::Repo;
use graven::home::{DEFAULT_HOME, Home};
use graven::ledger::{Ledger as _, SqliteLedger};
use graven::store::LocalStore;

use crate::commands::GlobalArgs;
use crate::error::CommandError;

/// What every command may need, resolved once.
pub(crate) struct Settings {
    /// The repository around the current directory, if any.
    pub(crate) repo: Option<Repo>,
    /// The graven home.
    pub(crate) home: Home,
    /// `--app`, if given.
    pub(crate) app_flag: Option<String>,
    /// Team backends asked for through the environment, by variable name.
    team_backends: Vec<&'static str>,
    /// Set once the home exists and is private.
    home_ready: std::sync::OnceLock<()>,
}

impl Settings {
    /// Resolves the global flags against the current directory.
    pub(crate) fn resolve(global: &GlobalArgs) -> Result<Self, CommandError> {
        let cwd = std::env::current_dir()
            .map_err(|e| CommandError::failed(format!("cannot read the current directory: {e}")))?;
        let repo = Repo::discover(&cwd).ok();
        let home = match (&global.home, &repo) {
            (Some(home), _) => Home::new(absolute(&cwd, home)),
            (None, Some(repo)) => Home::new(repo.root().join(DEFAULT_HOME)),
            (None, None) => {
                return Err(CommandError::bad_input(format!(
                    "{} is not inside a git repository, and no graven home was given",
                    cwd.display()
                ))
                .hint("run graven inside your app's repository, or pass --home DIR (or set GRAVEN_HOME)"));
            }
        };
        if let Some(app) = &global.app
            && !is_valid_app_name(app)
        {
            return Err(CommandError::bad_input(format!("--app '{app}' is not a valid app name"))
                .hint("use a lowercase letter, then up to 62 of a-z, 0-9 and '-'"));
        }
        let team_backends = [GRAVEN_LEDGER, GRAVEN_STORE]
            .into_iter()
            .filter(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()))
            .collect();
        Ok(Self { repo, home, app_flag: global.app.clone(), team_backends, home_ready: std::sync::OnceLock::new() })
    }

    /// Settings for the repository `repo` with its default home.
    pub(crate) fn for_repo(repo: Repo) -> Self {
        let home = Home::new(repo.root().join(DEFAULT_HOME));
        Self {
            repo: Some(repo),
            home,
            app_flag: None,
            team_backends: Vec::new(),
            home_ready: std::sync::OnceLock::new(),
        }
    }

    /// The repository, for commands that need one.
    pub(crate) fn repo(&self) -> Result<&Repo, CommandError> {
        self.repo.as_ref().ok_or_else(|| {
            CommandError::bad_input("this command needs a git repository, and the current directory is not inside one")
                .hint("run it inside your app's repository")
        })
    }

    /// The app: `--app`/`GRAVEN_APP`, else `graven.toml [app] name` in the
    /// working tree, else the repository's directory name.
    pub(crate) fn app(&self) -> Result<String, CommandError> {
        if let Some(app) = &self.app_flag {
            return Ok(app.clone());
        }
        let Some(repo) = &self.repo else { return self.only_app_in_the_ledger() };
        let settings = match std::fs::read_to_string(repo.root().join(SETTINGS_FILE)) {
            Ok(text) => AppSettings::parse(&text).map_err(|e| CommandError::bad_input(e).hint("fix graven.toml"))?,
            Err(_) => AppSettings::default(),
        };
        Ok(graven::build::app_name(repo, &settings))
    }

    /// Outside a repository and without `--app`: the ledger's app, if it
    /// has exactly one, as on a server that runs one app.
    fn only_app_in_the_ledger(&self) -> Result<String, CommandError> {
        let no_app = || CommandError::bad_input("no app given, and the current directory is not inside a repository");
        self.refuse_team_backend(GRAVEN_LEDGER, "PostgreSQL ledger", &self.home.ledger_path())?;
        let apps = if self.home.ledger_path().exists() {
            let ledger = SqliteLedger::open(&self.home.ledger_path()).map_err(CommandError::failed)?;
            ledger.apps().map_err(CommandError::failed)?
        } else {
            Vec::new()
        };
        match <[String; 1]>::try_from(apps) {
            Ok([app]) => Ok(app),
            Err(apps) if apps.is_empty() => Err(no_app().hint("pass --app NAME (or set GRAVEN_APP)")),
            Err(apps) => Err(no_app().hint(format!(
                "the ledger in {} has several apps ({}): pass --app NAME (or set GRAVEN_APP)",
                self.home.root().display(),
                apps.join(", ")
            ))),
        }
    }

    /// Refuses to go on with the embedded backend at `embedded` when
    /// `variable` asks for a team backend: writing to a local ledger while
    /// the team reads another is how "what is running?" loses its answer.
    /// The variable's value is not shown: a URL can hold a password.
    fn refuse_team_backend(&self, variable: &str, what: &str, embedded: &Path) -> Result<(), CommandError> {
        if !self.team_backends.contains(&variable) {
            return Ok(());
        }
        Err(CommandError::bad_input(format!(
            "{variable} is set, but this version of graven has no {what}: it has only the embedded one"
        ))
        .hint(format!("unset {variable} to use {}", embedded.display())))
    }

    /// Creates the home if needed, private; a home that other users could
    /// read is tightened, and that is said (once: then it is private).
    fn ensure_home(&self) -> Result<(), CommandError> {
        if self.home_ready.get().is_some() {
            return Ok(());
        }
        let root = self.home.root();
        let tightened = self
            .home
            .create()
            .map_err(|e| CommandError::failed(format!("cannot create the graven home {}: {e}", root.display())))?;
        if let Some(mode) = tightened {
            crate::ui::note(format!(
                "made the graven home {} private (mode {mode:04o} -> 0700): it holds config values, secret ones included",
                root.display()
            ));
        }
        let _ = self.home_ready.set(());
        Ok(())
    }

    /// Opens the embedded ledger, creating the home if needed.
    pub(crate) fn ledger(&self) -> Result<SqliteLedger, CommandError> {
        self.refuse_team_backend(GRAVEN_LEDGER, "PostgreSQL ledger", &self.home.ledger_path())?;
        self.ensure_home()?;
        SqliteLedger::open(&self.home.ledger_path()).map_err(CommandError::failed)
    }

    /// Opens the embedded ledger for a command that only reads it, which
    /// works on a full disk too.
    pub(crate) fn ledger_for_reading(&self) -> Result<SqliteLedger, CommandError> {
        self.refuse_team_backend(GRAVEN_LEDGER, "PostgreSQL ledger", &self.home.ledger_path())?;
        self.ensure_home()?;
        SqliteLedger::open_for_reading(&self.home.ledger_path()).map_err(CommandError::failed)
    }

    /// Opens the local store, creating the home if needed.
    pub(crate) fn store(&self) -> Result<LocalStore, CommandError> {
        self.refuse_team_backend(GRAVEN_STORE, "S3 store", &self.home.store_dir())?;
        self.ensure_home()?;
        LocalStore::open(&self.home.store_dir()).map_err(CommandError::failed)
    }

    /// The app, the ledger, the store and the author: what a release-stage
    /// command works with.
    pub(crate) fn open_stage(&self) -> Result<OpenStage, CommandError> {
        Ok(OpenStage { app: self.app()?, ledger: self.ledger()?, store: self.store()?, author: self.author() })
    }

    /// Who is acting: `GRAVEN_AUTHOR`, else git's `user.email`, else `user@host`.
    pub(crate) fn author(&self) -> String {
        if let Some(author) = std::env::var(GRAVEN_AUTHOR).ok().filter(|a| !a.is_empty()) {
            return author;
        }
        if let Some(email) = self.repo.as_ref().and_then(Repo::user_email) {
            return email;
        }
        let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".to_owned());
        format!("{user}@{}", host())
    }
}

/// Everything a release-stage operation needs, opened.
pub(crate) struct OpenStage {
    pub(crate) app: String,
    pub(crate) ledger: SqliteLedger,
    pub(crate) store: LocalStore,
    pub(crate) author: String,
}

impl OpenStage {
    /// The release stage over these.
    pub(crate) fn stage(&self) -> graven::release::Stage<'_> {
        graven::release::Stage { ledger: &self.ledger, store: &self.store, app: &self.app, author: &self.author }
    }
}

/// This machine's host name.
pub(crate) fn host() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

fn absolute(cwd: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() { path.to_owned() } else { cwd.join(path) }
}
