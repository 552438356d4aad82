//! Stored credentials: `$XDG_CONFIG_HOME/hoist/credentials.yaml` (or
//! `~/.config/hoist/credentials.yaml`), written by `hoist login`.
//!
//! ```yaml
//! host: "http://127.0.0.1:7480"
//! api_key: "…"
//! ```
//!
//! The directory is created with mode 0700, the file with mode 0600 from the start
//! (never widened and narrowed later), and replaced atomically. `HOIST_HOST` and
//! `HOIST_API_KEY` override the stored values. A stored key is only ever sent to the
//! host it was stored with.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use hoist_client::Secret;

/// Where `hoist` talks to when nothing says otherwise.
pub const DEFAULT_HOST: &str = "http://127.0.0.1:7480";

/// `$XDG_CONFIG_HOME/hoist` or `~/.config/hoist`.
pub fn config_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("hoist");
    }
    crate::server_cmd::home_dir().join(".config/hoist")
}

pub fn credentials_path() -> PathBuf {
    config_dir().join("credentials.yaml")
}

/// What `hoist login` stored.
#[derive(Debug, Clone)]
pub struct Stored {
    pub host: String,
    pub api_key: Secret,
}

/// `http://HOST:PORT` from what a person typed (`127.0.0.1:7480`, a trailing `/`…).
pub fn normalize_host(text: &str) -> String {
    let t = text.trim().trim_end_matches('/');
    if t.contains("://") {
        t.to_string()
    } else {
        format!("http://{t}")
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Reads the stored credentials; `None` when there are none.
pub fn load() -> anyhow::Result<Option<Stored>> {
    let path = credentials_path();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read {}", path.display()));
        }
    };
    let doc = hoist_core::yaml::parse_document(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}; log in again with `hoist login`", path.display()))?;
    let field = |k: &str| {
        doc.get(k)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: `{k}` is missing; log in again with `hoist login`",
                    path.display()
                )
            })
    };
    Ok(Some(Stored {
        host: normalize_host(&field("host")?),
        api_key: Secret::new(field("api_key")?),
    }))
}

/// Stores host and key (atomically, mode 0600).
pub fn save(host: &str, key: &Secret) -> anyhow::Result<PathBuf> {
    let path = credentials_path();
    let dir = path.parent().expect("credentials path has a parent");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    // JSON strings are valid YAML double-quoted scalars.
    let text = format!(
        "# hoist credentials, written by `hoist login`. Keep this file private.\nhost: {}\napi_key: {}\n",
        serde_json::to_string(host)?,
        serde_json::to_string(key.expose())?
    );
    write_private(&path, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Writes `path` through a temporary file created with mode 0600, then renames it.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes the stored credentials; false when there were none.
pub fn remove() -> anyhow::Result<bool> {
    let path = credentials_path();
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// The server and key a command uses.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub key: Option<Secret>,
    /// The stored credentials are for another host than `host` (HOIST_HOST differs).
    pub stored_for: Option<String>,
}

impl Target {
    pub fn resolve() -> anyhow::Result<Target> {
        let env_host = env_var("HOIST_HOST").map(|h| normalize_host(&h));
        let env_key = env_var("HOIST_API_KEY").map(|k| Secret::new(k.trim()));
        if let (Some(host), Some(key)) = (&env_host, &env_key) {
            return Ok(Target {
                host: host.clone(),
                key: Some(key.clone()),
                stored_for: None,
            });
        }
        let stored = load()?;
        let host = env_host
            .or_else(|| stored.as_ref().map(|s| s.host.clone()))
            .unwrap_or_else(|| DEFAULT_HOST.to_string());
        let (key, stored_for) = match (env_key, stored) {
            (Some(k), _) => (Some(k), None),
            (None, Some(s)) if s.host == host => (Some(s.api_key), None),
            (None, Some(s)) => (None, Some(s.host)),
            (None, None) => (None, None),
        };
        Ok(Target {
            host,
            key,
            stored_for,
        })
    }

    pub fn no_key_message(&self) -> String {
        match &self.stored_for {
            Some(other) => format!(
                "no API key for {}: the stored credentials are for {other}; log in with `hoist login --host {}` or set HOIST_API_KEY",
                self.host, self.host
            ),
            None => format!(
                "not logged in to {}: log in with `hoist login`, or set HOIST_API_KEY",
                self.host
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(normalize_host("127.0.0.1:7480"), "http://127.0.0.1:7480");
        assert_eq!(normalize_host("https://h.example/ "), "https://h.example");
        assert_eq!(normalize_host("http://h:1/"), "http://h:1");
    }
}
