//! Secrets and what looks like one.
//!
//! - [`Secret`]: a credential (API key, run token, registry password, cloud token). Its
//!   `Debug` and `Display` never show it; [`Secret::expose`] is the one way to read it,
//!   so every place that hands a secret on is greppable. It serialises as the plain
//!   string, because the wire is where a secret has to travel.
//! - [`EnvVars`]: a job's environment. Its `Debug` shows the names only, since any value
//!   may be a credential a person passed with `--env`.
//! - [`looks_secret`] (by name) and [`looks_like_credential`] (by value): what the
//!   agent never hands out and what responses to people mask.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Deref, DerefMut};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a masked secret value is shown as.
pub const MASKED: &str = "********";

/// A credential. `Debug`/`Display` print `****`; read it with [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = String)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for an `Authorization` header, a request body or a file of
    /// mode 0600. Never for a log line, an error message or a process argument.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_string())
    }
}

/// A job's environment variables, by name. `Debug` shows the names, never the values.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = BTreeMap<String, String>)]
pub struct EnvVars(pub BTreeMap<String, String>);

impl EnvVars {
    pub fn new() -> EnvVars {
        EnvVars::default()
    }
    pub fn into_inner(self) -> BTreeMap<String, String> {
        self.0
    }
}

impl Deref for EnvVars {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for EnvVars {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl fmt::Debug for EnvVars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "****")))
            .finish()
    }
}

impl From<BTreeMap<String, String>> for EnvVars {
    fn from(m: BTreeMap<String, String>) -> EnvVars {
        EnvVars(m)
    }
}

impl FromIterator<(String, String)> for EnvVars {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> EnvVars {
        EnvVars(iter.into_iter().collect())
    }
}

impl IntoIterator for EnvVars {
    type Item = (String, String);
    type IntoIter = std::collections::btree_map::IntoIter<String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a EnvVars {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Environment variable names that look like they hold a secret: any name containing
/// KEY, SECRET, TOKEN, PASSWORD, PASSWD or CREDENTIAL, or with a word (between `_`)
/// AUTH, PWD, PASS or DSN (`MYSQL_PWD`, `BASIC_AUTH`, `SENTRY_DSN`; not `PWD` alone,
/// the shell's working directory).
pub fn looks_secret(name: &str) -> bool {
    let up = name.to_ascii_uppercase();
    if ["KEY", "SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL"]
        .iter()
        .any(|w| up.contains(w))
    {
        return true;
    }
    if matches!(up.as_str(), "PWD" | "OLDPWD") {
        return false;
    }
    up.split(['_', '-', '.'])
        .any(|w| matches!(w, "AUTH" | "PWD" | "PASS" | "DSN"))
}

/// Values that carry a credential whatever their variable is called: a URL with a
/// password in its userinfo (`postgres://app:pw@db/x`), a key-value DSN or connection
/// string with a password (`host=db password=pw`, `Server=db;Password=pw`), or a token
/// with a well-known prefix (GitHub, GitLab, Slack, OpenAI-style, AWS access keys, JWTs).
pub fn looks_like_credential(value: &str) -> bool {
    url_has_password(value) || dsn_has_password(value) || has_token_prefix(value)
}

/// True for `scheme://user:password@host…` (a non-empty password).
fn url_has_password(v: &str) -> bool {
    let mut rest = v;
    while let Some(i) = rest.find("://") {
        let after = &rest[i + 3..];
        let authority_end = after.find(['/', '?', '#', ' ']).unwrap_or(after.len());
        let authority = &after[..authority_end];
        if let Some(at) = authority.rfind('@')
            && let Some((_, pw)) = authority[..at].split_once(':')
            && !pw.is_empty()
        {
            return true;
        }
        rest = after;
    }
    false
}

/// True for `password=…` / `pwd=…` / `passwd=…` pairs in a DSN or connection string.
fn dsn_has_password(v: &str) -> bool {
    let low = v.to_ascii_lowercase();
    for key in ["password", "passwd", "pwd"] {
        let mut from = 0;
        while let Some(i) = low[from..].find(key) {
            let at = from + i;
            let before_ok = at == 0 || {
                let b = low.as_bytes()[at - 1];
                matches!(b, b' ' | b';' | b'&' | b'?' | b'\t' | b',')
            };
            let rest = low[at + key.len()..].trim_start();
            if before_ok
                && let Some(val) = rest.strip_prefix('=')
                && val
                    .trim_start()
                    .chars()
                    .next()
                    .is_some_and(|c| !matches!(c, ';' | '&' | ' ' | ','))
            {
                return true;
            }
            from = at + key.len();
        }
    }
    false
}

fn has_token_prefix(v: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "ghp_",
        "gho_",
        "ghu_",
        "ghs_",
        "ghr_",
        "github_pat_",
        "glpat-",
        "xoxb-",
        "xoxp-",
        "xapp-",
        "sk-",
        "hk_",
        "hrt_",
    ];
    let t = v.trim();
    if t.contains(char::is_whitespace) {
        return false;
    }
    if PREFIXES
        .iter()
        .any(|p| t.starts_with(p) && t.len() >= p.len() + 16)
    {
        return true;
    }
    // AWS access key ids.
    if (t.starts_with("AKIA") || t.starts_with("ASIA"))
        && t.len() == 20
        && t.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return true;
    }
    // JWTs: three base64url parts, the first a JSON header (`eyJ`).
    t.starts_with("eyJ")
        && t.split('.').count() == 3
        && t.len() > 40
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
}

/// Masks a value for a response to a person: when its name looks secret or the value
/// looks like a credential.
pub fn masked_value(name: &str, value: &str) -> Option<&'static str> {
    (looks_secret(name) || looks_like_credential(value)).then_some(MASKED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hk_abc.def");
        assert_eq!(format!("{s:?}"), "Secret(****)");
        assert_eq!(format!("{s}"), "****");
        assert_eq!(s.expose(), "hk_abc.def");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"hk_abc.def\"");
        let back: Secret = serde_json::from_str("\"x\"").unwrap();
        assert_eq!(back.expose(), "x");
    }

    #[test]
    fn env_debug_shows_names_only() {
        let e: EnvVars = [("DATABASE_URL".to_string(), "postgres://a:b@c".to_string())]
            .into_iter()
            .collect();
        let d = format!("{e:?}");
        assert!(d.contains("DATABASE_URL") && !d.contains("a:b"), "{d}");
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"DATABASE_URL":"postgres://a:b@c"}"#
        );
    }

    #[test]
    fn secret_names() {
        for s in [
            "WANDB_API_KEY",
            "aws_secret_access_key",
            "GITHUB_TOKEN",
            "GITHUB_PAT_TOKEN",
            "DB_PASSWORD",
            "MYSQL_PWD",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "SENTRY_DSN",
            "BASIC_AUTH",
        ] {
            assert!(looks_secret(s), "{s}");
        }
        for s in [
            "PATH",
            "HOME",
            "EPOCHS",
            "CUDA_VISIBLE_DEVICES",
            "PWD",
            "OLDPWD",
        ] {
            assert!(!looks_secret(s), "{s}");
        }
    }

    #[test]
    fn credential_values() {
        for v in [
            "postgres://app:s3cret@db.internal:5432/app",
            "mysql://root:pw@127.0.0.1/x",
            "https://user:tok@github.com/org/repo.git",
            "redis://:pw@cache:6379/0",
            "host=db user=app password=s3cret dbname=x",
            "Server=tcp:db;Database=x;User Id=a;Password=p@ss;",
            "ghp_0123456789abcdefghijABCDEFGHIJ012345",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
            "AKIAIOSFODNN7EXAMPLE",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abcdefghijklmnopqrstuv",
        ] {
            assert!(looks_like_credential(v), "{v}");
        }
        for v in [
            "postgres://db.internal:5432/app",
            "https://user@github.com/org/repo.git",
            "http://127.0.0.1:7480",
            "/usr/bin:/bin",
            "3",
            "password=",
            "sk-short",
            "a passwd b",
            "--lr=0.1",
        ] {
            assert!(!looks_like_credential(v), "{v}");
        }
    }
}
