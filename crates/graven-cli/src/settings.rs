//! Two-stage settings: raw global flags (and the environment variables clap
//! reads for them) plus the repository and `graven.toml` become one
//! validated [`Settings`] before any command logic runs.

use std::path::{Path, PathBuf};

use graven::app::{AppSettings, SETTINGS_FILE, is_valid_app_name};
use graven::env_vars::{GRAVEN_AUTHOR, GRAVEN_LEDGER, GRAVEN_STORE};
use graven::git::Repo;
use graven::home::{DEFAULT_HOME, Home};
use graven::ledger::{Access, Ledger, LedgerError, open_ledger};
use graven::store::{Store, StoreError, open_store};

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
    /// `--ledger-url` / `GRAVEN_LEDGER`: the ledger's URL, if not the home's.
    ledger_url: Option<String>,
    /// `--store-url` / `GRAVEN_STORE`: the store's URL, if not the home's.
    store_url: Option<String>,
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
        let non_empty = |url: &Option<String>| url.clone().filter(|url| !url.is_empty());
        Ok(Self {
            repo,
            home,
            app_flag: global.app.clone(),
            ledger_url: non_empty(&global.ledger_url),
            store_url: non_empty(&global.store_url),
            home_ready: std::sync::OnceLock::new(),
        })
    }

    /// Settings for the repository `repo` with its default home.
    pub(crate) fn for_repo(repo: Repo) -> Self {
        let home = Home::new(repo.root().join(DEFAULT_HOME));
        Self {
            repo: Some(repo),
            home,
            app_flag: None,
            ledger_url: None,
            store_url: None,
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
        let apps = if self.ledger_url.is_some() || self.home.ledger_path().exists() {
            self.ledger_for_reading()?.apps().map_err(CommandError::failed)?
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

    /// Opens the ledger (`--ledger-url`, else the home's), creating the home if
    /// needed.
    pub(crate) fn ledger(&self) -> Result<Box<dyn Ledger>, CommandError> {
        self.open_ledger(Access::ReadWrite)
    }

    /// Opens the ledger for a command that only reads it, which works on a
    /// full disk too.
    pub(crate) fn ledger_for_reading(&self) -> Result<Box<dyn Ledger>, CommandError> {
        self.open_ledger(Access::Read)
    }

    fn open_ledger(&self, access: Access) -> Result<Box<dyn Ledger>, CommandError> {
        self.ensure_home()?;
        open_ledger(self.ledger_url.as_deref(), &self.home, access).map_err(|error| match error {
            LedgerError::BadUrl { .. } => CommandError::bad_input(error).hint(format!(
                "set {GRAVEN_LEDGER} (or --ledger-url) to a ledger URL graven knows, or unset it to use {}",
                self.home.ledger_path().display()
            )),
            LedgerError::Unavailable { retryable: false, .. } => CommandError::failed(error).hint(
                "check the ledger's URL, that its database exists, and the password (in the URL, PGPASSWORD or ~/.pgpass)",
            ),
            LedgerError::Unavailable { retryable: true, .. } => CommandError::failed(error)
                .hint("try again once the ledger answers: its server may be down, or its disk full"),
            other => CommandError::failed(other),
        })
    }

    /// Opens the store (`--store-url`, else the home's), creating the home if
    /// needed.
    pub(crate) fn store(&self) -> Result<Box<dyn Store>, CommandError> {
        self.ensure_home()?;
        open_store(self.store_url.as_deref(), &self.home, std::sync::Arc::new(crate::ui::TransferBar::new())).map_err(
            |error| match error {
                StoreError::BadUrl { .. } => CommandError::bad_input(error).hint(format!(
                    "set {GRAVEN_STORE} (or --store-url) to a store URL graven knows, or unset it to use {}",
                    self.home.store_dir().display()
                )),
                other => CommandError::failed(other),
            },
        )
    }

    /// The shared store's URL (without any password) when the store is one
    /// that transfers go to: an S3 bucket.
    pub(crate) fn shared_store(&self) -> Option<String> {
        let url = self.store_url.as_deref()?;
        (graven::url::scheme(url) == Some("s3")).then(|| graven::url::redacted(url))
    }

    /// The app, the ledger, the store and the author: what a release-stage
    /// command works with.
    pub(crate) fn open_stage(&self) -> Result<OpenStage, CommandError> {
        Ok(OpenStage {
            app: self.app()?,
            ledger: self.ledger()?,
            store: self.store()?,
            author: self.author(),
            host: host(),
        })
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
    pub(crate) ledger: Box<dyn Ledger>,
    pub(crate) store: Box<dyn Store>,
    pub(crate) author: String,
    pub(crate) host: String,
}

impl OpenStage {
    /// The release stage over these.
    pub(crate) fn stage(&self) -> graven::release::Stage<'_> {
        graven::release::Stage {
            ledger: &*self.ledger,
            store: &*self.store,
            app: &self.app,
            author: &self.author,
            host: &self.host,
        }
    }
}

/// This machine's host name.
pub(crate) fn host() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

fn absolute(cwd: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() { path.to_owned() } else { cwd.join(path) }
}
