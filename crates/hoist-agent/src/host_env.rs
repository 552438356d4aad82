//! The agent's own environment, and what of it a job or a queue-config macro may see.
//!
//! The environment belongs to whoever runs the agent; queue configs and runs come from
//! the people who may use its queues. So a variable of the agent's environment is
//! handed out (to a local job, through a docker `env: [NAME]` entry, through a
//! `${NAME}` macro) only when neither its name looks secret ([`looks_secret`]: KEY,
//! TOKEN, PASSWORD…) nor its value looks like a credential ([`looks_like_credential`]:
//! a URL with a password, a DSN, a well-known token prefix), unless the agent config's
//! `env-allow-list` names it. `HOIST_*` variables of the agent (its own key, its
//! settings) are never handed out.
//!
//! The environment is captured once, when the agent starts ([`HostEnv::capture`]):
//! nothing in the agent changes it afterwards.

use std::collections::BTreeMap;

use hoist_core::secret::{looks_like_credential, looks_secret};

/// Why a variable of the agent's environment was not handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withheld {
    /// Its name looks secret.
    SecretName,
    /// Its value looks like a credential (a URL with a password, a DSN, a token).
    CredentialValue,
    /// It is one of the agent's own `HOIST_*` settings.
    Hoist,
}

impl Withheld {
    /// `its name looks secret`, for notes in a run's log.
    pub fn why(self) -> &'static str {
        match self {
            Withheld::SecretName => "its name looks secret",
            Withheld::CredentialValue => "its value looks like a credential",
            Withheld::Hoist => "the agent's HOIST_* settings are never passed on",
        }
    }
}

/// What looking a variable up found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Not in the agent's environment.
    Unset,
    /// May be handed out.
    Value(&'a str),
    /// Set, but not handed out.
    Withheld(Withheld),
}

/// A snapshot of the agent's environment.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HostEnv {
    vars: BTreeMap<String, String>,
}

/// Names only: the values are the agent owner's.
impl std::fmt::Debug for HostEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.vars.keys()).finish()
    }
}

impl HostEnv {
    /// The process's environment (variables that are not valid UTF-8 are left out).
    pub fn capture() -> HostEnv {
        HostEnv::from_vars(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// An environment given as pairs (tests, embedding).
    pub fn from_vars<I, K, V>(vars: I) -> HostEnv
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        HostEnv {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The raw value, whatever it is: only for the agent's own use, never for a job.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// `name`'s value if a job or a macro may have it (see the module documentation).
    pub fn lookup(&self, name: &str, allow: &[String]) -> Lookup<'_> {
        match self.vars.get(name) {
            None => Lookup::Unset,
            Some(v) => match withheld(name, v, allow) {
                Some(w) => Lookup::Withheld(w),
                None => Lookup::Value(v),
            },
        }
    }

    /// Every variable a job may have, in name order, and the names withheld.
    pub fn passable<'a>(&'a self, allow: &'a [String]) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.vars
            .iter()
            .filter(move |(k, v)| withheld(k, v, allow).is_none())
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The variables whose names `keep` accepts and that a job may have.
    pub fn passable_matching<'a>(
        &'a self,
        allow: &'a [String],
        keep: impl Fn(&str) -> bool + 'a,
    ) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.passable(allow).filter(move |(k, _)| keep(k))
    }
}

/// Why `name=value` may not be handed out, if it may not.
pub fn withheld(name: &str, value: &str, allow: &[String]) -> Option<Withheld> {
    if name.starts_with("HOIST_") {
        return Some(Withheld::Hoist);
    }
    if allow.iter().any(|a| a == name) {
        return None;
    }
    if looks_secret(name) {
        return Some(Withheld::SecretName);
    }
    if looks_like_credential(value) {
        return Some(Withheld::CredentialValue);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_values_and_the_allow_list() {
        let env = HostEnv::from_vars([
            ("PATH", "/usr/bin:/bin"),
            ("DATABASE_URL", "postgres://app:s3cret@db/app"),
            (
                "GITHUB_PAT",
                "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
            ),
            ("MYSQL_PWD", "hunter2"),
            ("HF_TOKEN", "hf_abc"),
            ("HOIST_API_KEY", "hk_x"),
            ("PLAIN_URL", "postgres://db/app"),
        ]);
        let allow = vec!["HF_TOKEN".to_string(), "HOIST_API_KEY".to_string()];
        assert_eq!(env.lookup("PATH", &allow), Lookup::Value("/usr/bin:/bin"));
        assert_eq!(
            env.lookup("DATABASE_URL", &allow),
            Lookup::Withheld(Withheld::CredentialValue)
        );
        assert_eq!(
            env.lookup("GITHUB_PAT", &allow),
            Lookup::Withheld(Withheld::CredentialValue)
        );
        assert_eq!(
            env.lookup("MYSQL_PWD", &allow),
            Lookup::Withheld(Withheld::SecretName)
        );
        assert_eq!(env.lookup("HF_TOKEN", &allow), Lookup::Value("hf_abc"));
        assert_eq!(
            env.lookup("HOIST_API_KEY", &allow),
            Lookup::Withheld(Withheld::Hoist),
            "the agent's own settings are never passed, even allow-listed"
        );
        assert_eq!(env.lookup("NOPE", &allow), Lookup::Unset);
        let names: Vec<&str> = env.passable(&allow).map(|(k, _)| k).collect();
        assert_eq!(names, ["HF_TOKEN", "PATH", "PLAIN_URL"]);
        let dbg = format!("{env:?}");
        assert!(
            dbg.contains("DATABASE_URL") && !dbg.contains("s3cret"),
            "{dbg}"
        );
    }
}
