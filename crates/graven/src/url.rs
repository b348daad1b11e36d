//! The URLs that choose a backend (`GRAVEN_LEDGER`, `GRAVEN_STORE`): their
//! scheme, and how they are shown. A URL may hold a password
//! (`postgres://user:secret@host/db`, `?password=…`): it is never shown
//! as given, only [`redacted`].

/// The scheme of `url` (`postgres` in `postgres://…`), if it has one.
pub fn scheme(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once(':')?;
    let valid = scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}

/// The path of a local URL (`sqlite:PATH`, `file:PATH`, `file:///PATH`):
/// what follows the scheme, without the empty authority of `//`. `None`
/// if it names no path.
pub fn local_path(url: &str) -> Option<std::path::PathBuf> {
    let (_, rest) = url.split_once(':')?;
    let path = rest.strip_prefix("//").unwrap_or(rest);
    (!path.is_empty()).then(|| std::path::PathBuf::from(path))
}

/// `url` as it may be shown: without the password of its user part, and
/// without its query (where drivers also accept passwords).
pub fn redacted(url: &str) -> String {
    let without_query = url.split_once('?').map_or(url, |(before, _)| before);
    let Some((scheme, rest)) = without_query.split_once("://") else { return without_query.to_owned() };
    let (authority, path) = rest.split_once('/').map_or((rest, None), |(authority, path)| (authority, Some(path)));
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split_once(':').map_or(user, |(name, _)| name);
            format!("{user}@{host}")
        }
        None => authority.to_owned(),
    };
    match path {
        Some(path) => format!("{scheme}://{authority}/{path}"),
        None => format!("{scheme}://{authority}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(redacted("postgres://graven:secret@db.example/graven"), "postgres://graven@db.example/graven");
        assert_eq!(redacted("postgres://db.example:5432/graven?password=secret"), "postgres://db.example:5432/graven");
        assert_eq!(redacted("postgresql://u:p:q@h"), "postgresql://u@h");
        assert_eq!(redacted("s3://bucket/prefix"), "s3://bucket/prefix");
        assert_eq!(redacted("sqlite:/srv/ledger.sqlite"), "sqlite:/srv/ledger.sqlite");
    }

    #[test]
    fn local_urls_name_paths() {
        assert_eq!(local_path("sqlite:/srv/ledger.sqlite"), Some("/srv/ledger.sqlite".into()));
        assert_eq!(local_path("file:///srv/store"), Some("/srv/store".into()));
        assert_eq!(local_path("file:relative/store"), Some("relative/store".into()));
        assert_eq!(local_path("file:"), None);
        assert_eq!(local_path("sqlite://"), None);
    }

    #[test]
    fn schemes_are_read_as_rfc_3986_says() {
        assert_eq!(scheme("postgres://x"), Some("postgres"));
        assert_eq!(scheme("sqlite:/a"), Some("sqlite"));
        assert_eq!(scheme("/just/a/path"), None);
        assert_eq!(scheme("1x:y"), None);
    }
}
