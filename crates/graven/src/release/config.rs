//! Config changes: what `graven config set|unset|import` turn into, checked
//! before anything is written.

use std::collections::{BTreeMap, BTreeSet};

use super::ReleaseError;
use crate::app::is_variable_name;

/// How secret values are shown unless `--reveal`.
pub const MASK: &str = "••••••";

/// Secret values shorter than this are not searched for in artifacts: too
/// many false alarms (`true`, `8080`).
pub const SECRET_SCAN_MIN_LEN: usize = 8;

/// The most bytes one config value may have. Heroku allows 32 kB for all
/// of an app's config together; graven allows that per value and twice it
/// for an environment's whole config ([`MAX_CONFIG_BYTES`]), which keeps
/// every process's environment far below the kernel's limits (a single
/// string may have 128 KiB, all of argv and the environment 2 MiB or a
/// quarter of the stack limit) and every config version small.
pub const MAX_VALUE_BYTES: usize = 32 * 1024;

/// The most bytes an environment's whole config may have, counted as the
/// processes get it: `KEY=VALUE` and a terminating NUL per variable.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;

/// The size of `vars` as the processes' environment holds it.
pub fn config_bytes(vars: &BTreeMap<String, String>) -> usize {
    vars.iter().map(|(key, value)| key.len() + 1 + value.len() + 1).sum()
}

/// One call's worth of changes to an environment's config: it becomes
/// exactly one new config version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigChange {
    /// Variables to set, in the order given.
    pub set: Vec<(String, String)>,
    /// Variables to remove.
    pub unset: Vec<String>,
    /// Mark the variables set as secret.
    pub secret: bool,
}

impl ConfigChange {
    /// Checks every key and value; the first problem is an error naming it.
    pub fn validate(&self) -> Result<(), ReleaseError> {
        for (key, value) in &self.set {
            check_key(key)?;
            if value.contains('\0') {
                return Err(ReleaseError::BadValue { key: key.clone(), why: "it contains a NUL byte" });
            }
            if value.len() > MAX_VALUE_BYTES {
                return Err(ReleaseError::ValueTooLarge { key: key.clone(), bytes: value.len() });
            }
        }
        for key in &self.unset {
            check_key(key)?;
        }
        Ok(())
    }

    /// Applies the change to `vars` and `secret`; returns the description
    /// of the new version ("Set A, B; unset C").
    pub fn apply(
        &self,
        env: &str,
        vars: &mut BTreeMap<String, String>,
        secret: &mut BTreeSet<String>,
    ) -> Result<String, ReleaseError> {
        for key in &self.unset {
            if vars.remove(key).is_none() {
                return Err(ReleaseError::UnknownKey { key: key.clone(), env: env.to_owned() });
            }
            secret.remove(key);
        }
        for (key, value) in &self.set {
            vars.insert(key.clone(), value.clone());
            if self.secret {
                secret.insert(key.clone());
            }
        }
        let bytes = config_bytes(vars);
        if bytes > MAX_CONFIG_BYTES {
            return Err(ReleaseError::ConfigTooLarge { env: env.to_owned(), bytes });
        }
        let mut parts = Vec::new();
        if !self.set.is_empty() {
            let keys: Vec<&str> = dedup(self.set.iter().map(|(k, _)| k.as_str()));
            parts.push(format!("Set {}", keys.join(", ")));
        }
        if !self.unset.is_empty() {
            let keys: Vec<&str> = dedup(self.unset.iter().map(String::as_str));
            parts.push(format!("{} {}", if parts.is_empty() { "Unset" } else { "unset" }, keys.join(", ")));
        }
        Ok(parts.join("; "))
    }
}

fn dedup<'a>(keys: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = Vec::new();
    for key in keys {
        if !seen.contains(&key) {
            seen.push(key);
        }
    }
    seen
}

/// Checks a config key: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn check_key(key: &str) -> Result<(), ReleaseError> {
    if is_variable_name(key) { Ok(()) } else { Err(ReleaseError::BadKey { key: key.to_owned() }) }
}

/// The value to show for `key`: masked if secret, unless `reveal`.
pub fn shown<'a>(key: &str, value: &'a str, secret: &BTreeSet<String>, reveal: bool) -> &'a str {
    if secret.contains(key) && !reveal { MASK } else { value }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_change_describes_itself() {
        let mut vars = BTreeMap::from([("OLD".to_owned(), "1".to_owned())]);
        let mut secret = BTreeSet::from(["OLD".to_owned()]);
        let change = ConfigChange {
            set: vec![
                ("B".to_owned(), "2".to_owned()),
                ("A".to_owned(), "1".to_owned()),
                ("B".to_owned(), "3".to_owned()),
            ],
            unset: vec!["OLD".to_owned()],
            secret: true,
        };
        assert_eq!(change.apply("production", &mut vars, &mut secret).unwrap(), "Set B, A; unset OLD");
        assert_eq!(vars, BTreeMap::from([("A".to_owned(), "1".to_owned()), ("B".to_owned(), "3".to_owned())]));
        assert_eq!(secret, BTreeSet::from(["A".to_owned(), "B".to_owned()]));
    }

    #[test]
    fn bad_keys_and_values_are_refused() {
        let bad_key = ConfigChange { set: vec![("1X".to_owned(), "v".to_owned())], ..ConfigChange::default() };
        assert!(matches!(bad_key.validate(), Err(ReleaseError::BadKey { .. })));
        let nul = ConfigChange { set: vec![("X".to_owned(), "a\0b".to_owned())], ..ConfigChange::default() };
        assert!(matches!(nul.validate(), Err(ReleaseError::BadValue { .. })));
        let unknown = ConfigChange { unset: vec!["NOPE".to_owned()], ..ConfigChange::default() };
        assert!(matches!(
            unknown.apply("production", &mut BTreeMap::new(), &mut BTreeSet::new()),
            Err(ReleaseError::UnknownKey { .. })
        ));
    }

    #[test]
    fn values_and_configs_have_limits() {
        let at_limit =
            ConfigChange { set: vec![("BIG".to_owned(), "x".repeat(MAX_VALUE_BYTES))], ..ConfigChange::default() };
        assert!(at_limit.validate().is_ok());
        let over =
            ConfigChange { set: vec![("BIG".to_owned(), "x".repeat(MAX_VALUE_BYTES + 1))], ..ConfigChange::default() };
        let error = over.validate().unwrap_err().to_string();
        assert_eq!(error, "the value of BIG has 32769 bytes: a config value may have at most 32768 (32 KiB)");

        let mut vars: BTreeMap<String, String> =
            (0..2).map(|n| (format!("V{n}"), "x".repeat(MAX_VALUE_BYTES - 8))).collect();
        let third = ConfigChange { set: vec![("V2".to_owned(), "x".repeat(100))], ..ConfigChange::default() };
        let error = third.apply("production", &mut vars, &mut BTreeSet::new()).unwrap_err().to_string();
        assert!(error.starts_with("the config of production would have 65"), "{error}");
        assert!(error.contains("at most 65536 (64 KiB)"), "{error}");
    }

    #[test]
    fn secrets_are_masked_unless_revealed() {
        let secret = BTreeSet::from(["TOKEN".to_owned()]);
        assert_eq!(shown("TOKEN", "abc", &secret, false), MASK);
        assert_eq!(shown("TOKEN", "abc", &secret, true), "abc");
        assert_eq!(shown("PORT", "80", &secret, false), "80");
    }
}
