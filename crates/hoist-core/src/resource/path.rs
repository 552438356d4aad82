//! Problems found in a configuration document, each with the path to the offending value.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One problem in a config: `spec.template.spec.containers[0].image: expected string`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConfigProblem {
    /// Dotted path with `[i]` for list items; empty for the document root.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "(document): {}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl ConfigProblem {
    /// A problem at `path` (empty for the document root).
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigProblem {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// True when `key` can stand in a dotted path without quotes: an ASCII letter or `_`
/// followed by letters, digits, `_` or `-` (so docker's kebab-case option names such as
/// `shm-size` read naturally).
pub fn is_path_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The path of `key` inside the object at `base`: `base.key`, `key` at the root, or
/// `base["key"]` (JSON-quoted) when the key is not an identifier, as in
/// `metadata.labels["app.kubernetes.io/name"]`.
pub fn key_path(base: &str, key: &str) -> String {
    if is_path_identifier(key) {
        if base.is_empty() {
            key.to_string()
        } else {
            format!("{base}.{key}")
        }
    } else {
        let quoted = serde_json::to_string(key).unwrap_or_else(|_| format!("{key:?}"));
        format!("{base}[{quoted}]")
    }
}

/// The path of item `index` of the list at `base`: `base[3]`.
pub fn index_path(base: &str, index: usize) -> String {
    format!("{base}[{index}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(key_path("", "spec"), "spec");
        assert_eq!(key_path("spec", "template"), "spec.template");
        assert_eq!(key_path("", "shm-size"), "shm-size");
        assert_eq!(
            key_path("metadata.labels", "app.kubernetes.io/name"),
            r#"metadata.labels["app.kubernetes.io/name"]"#
        );
        assert_eq!(key_path("", "1x"), r#"["1x"]"#);
        assert_eq!(key_path("a", ""), r#"a[""]"#);
        assert_eq!(key_path("a", "say \"hi\""), r#"a["say \"hi\""]"#);
        assert_eq!(index_path("containers", 0), "containers[0]");
        assert_eq!(index_path("", 2), "[2]");
        assert_eq!(
            ConfigProblem::new("", "expected object, found list").to_string(),
            "(document): expected object, found list"
        );
    }
}
