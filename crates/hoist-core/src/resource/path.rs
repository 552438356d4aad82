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

/// One step of a path as [`key_path`] and [`index_path`] write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathStep {
    /// A key of a mapping: `.key`, or `["key"]` (JSON-quoted) when not an identifier.
    Key(String),
    /// An item of a list: `[3]`.
    Index(usize),
}

/// Reads `path` back into its steps (`""`, the document root, has none). Reading stops
/// at the first step not written as [`key_path`] and [`index_path`] write it (an
/// unterminated quote, `[x]`): the steps before it are returned, so a path that is
/// not understood names its nearest readable ancestor.
pub fn path_steps(path: &str) -> Vec<PathStep> {
    let mut out = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if rest.starts_with("[\"") {
            // A quoted key: a JSON string followed by `]`.
            let mut stream = serde_json::Deserializer::from_str(&rest[1..]).into_iter::<String>();
            let Some(Ok(key)) = stream.next() else {
                break;
            };
            let consumed = 1 + stream.byte_offset();
            out.push(PathStep::Key(key));
            let Some(tail) = rest[consumed..].strip_prefix(']') else {
                break;
            };
            rest = tail;
        } else if let Some(after) = rest.strip_prefix('[') {
            let Some((digits, tail)) = after.split_once(']') else {
                break;
            };
            // Digits only (`usize::from_str` would take a `+`).
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                break;
            }
            let Ok(i) = digits.parse::<usize>() else {
                break;
            };
            out.push(PathStep::Index(i));
            rest = tail;
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            out.push(PathStep::Key(rest[..end].to_string()));
            rest = &rest[end..];
        }
        rest = rest.strip_prefix('.').unwrap_or(rest);
    }
    out
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
        for (key, index) in [
            ("spec", 0),
            ("shm-size", 3),
            ("app.kubernetes.io/name", 12),
            ("1x", 0),
            ("", 1),
            ("say \"hi\" [0].x", 2),
            ("ü", 0),
        ] {
            let p = key_path(&index_path(&key_path("a", key), index), "b");
            assert_eq!(
                path_steps(&p),
                [
                    PathStep::Key("a".into()),
                    PathStep::Key(key.into()),
                    PathStep::Index(index),
                    PathStep::Key("b".into()),
                ],
                "{p}"
            );
        }
        assert_eq!(path_steps(""), []);
        assert_eq!(
            path_steps("[1][\"x.y\"]"),
            [PathStep::Index(1), PathStep::Key("x.y".into())]
        );
        // Read as far as it can be.
        assert_eq!(path_steps("a[x].b"), [PathStep::Key("a".into())]);
        assert_eq!(path_steps("a[+1]"), [PathStep::Key("a".into())]);
        assert_eq!(path_steps("a[\"b"), [PathStep::Key("a".into())]);
        assert_eq!(
            path_steps("a[\"b\"c"),
            [PathStep::Key("a".into()), PathStep::Key("b".into())]
        );
        assert_eq!(
            ConfigProblem::new("", "expected object, found list").to_string(),
            "(document): expected object, found list"
        );
    }
}
