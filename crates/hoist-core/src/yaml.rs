//! Parsing YAML or JSON documents (queue configs, resource args) into JSON values, or
//! into a [`tree`] that keeps every node's line and column ([`locate`]).

use thiserror::Error;

pub mod tree;

pub use tree::{Pos, locate};

/// A document that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}{message}", location_prefix(*line, *column))]
pub struct DocError {
    /// 1-based line, 0 when unknown.
    pub line: u64,
    /// 1-based column, 0 when unknown.
    pub column: u64,
    pub message: String,
}

fn location_prefix(line: u64, column: u64) -> String {
    if line == 0 {
        String::new()
    } else {
        format!("line {line}, column {column}: ")
    }
}

/// The YAML dialect hoist reads everywhere: YAML 1.2 core booleans (`yes`, `y`, `on`
/// stay strings, as in Kubernetes), duplicate keys refused, snippets off (messages
/// carry line and column instead).
pub fn yaml_options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    o.strict_booleans = true;
    o.with_snippet = false;
    o
}

/// Longest document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// Parses a YAML or JSON document (JSON is YAML, but JSON gets serde_json's exact
/// messages). An empty document is an empty object.
pub fn parse_document(text: &str) -> Result<serde_json::Value, DocError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(DocError {
            line: 0,
            column: 0,
            message: format!(
                "document is {} bytes; the limit is {MAX_DOCUMENT_BYTES}",
                text.len()
            ),
        });
    }
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Ok(serde_json::Value::Object(Default::default()));
    }
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        if let Ok(v) = serde_json::from_str(text) {
            return Ok(v);
        }
        // Flow-style YAML (`{a: 1}`) is valid here too; when the text is neither, the
        // JSON error is the one a person who wrote braces wants to see.
        if let Err(e) = serde_json::from_str::<serde_json::Value>(text)
            && serde_saphyr::from_str_with_options::<serde_json::Value>(text, yaml_options())
                .is_err()
        {
            return Err(DocError {
                line: e.line() as u64,
                column: e.column() as u64,
                message: strip_json_location(&e.to_string()),
            });
        }
    }
    serde_saphyr::from_str_with_options::<serde_json::Value>(text, yaml_options()).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        let msg = e.to_string();
        let first = msg.lines().next().unwrap_or("invalid YAML");
        DocError {
            line,
            column,
            // The location is in `line`/`column`; do not say it twice.
            message: strip_json_location(first),
        }
    })
}

fn strip_json_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_and_json() {
        assert_eq!(
            parse_document("a: 1\nb: [x, y]\n").unwrap(),
            json!({"a": 1, "b": ["x", "y"]})
        );
        assert_eq!(
            parse_document(r#"{"a": {"b": true}}"#).unwrap(),
            json!({"a": {"b": true}})
        );
        assert_eq!(parse_document("  \n").unwrap(), json!({}));
        assert_eq!(parse_document("{a: 1}").unwrap(), json!({"a": 1}));
    }

    proptest::proptest! {
        /// Any text gets a value or an error with a message, never a panic.
        #[test]
        fn never_panics(text in "(?s).{0,400}") {
            if let Err(e) = parse_document(&text) {
                proptest::prop_assert!(!e.message.is_empty());
            }
        }

        /// YAML-looking text, with nesting, anchors and flow collections.
        #[test]
        fn never_panics_on_yaml_shapes(parts in proptest::collection::vec(
            proptest::sample::select(vec![
                "a: ", "- ", "  ", "\n", "{", "}", "[", "]", ", ", "&x ", "*x", "<<: ", "'q'", "\"s\"",
                "1.5", "yes", "~", "|\n  t", "? ", "!!str ", "#c", "\t", "key: value\n",
            ]),
            0..60,
        )) {
            let text: String = parts.concat();
            let _ = parse_document(&text);
        }
    }

    #[test]
    fn errors_have_lines() {
        let e = parse_document("{\"a\": 1,\n \"b\": [}").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = parse_document("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert!(e.line >= 2, "{e:?}");
        assert!(e.to_string().starts_with("line "), "{e}");
        assert_eq!(
            e.to_string().matches("line").count(),
            1,
            "location said once: {e}"
        );
    }
}

/// A value as a YAML document (for showing and editing a stored config); `{}` for an
/// empty object. Falls back to pretty JSON (which is YAML too) if YAML cannot hold it.
pub fn to_yaml(v: &serde_json::Value) -> String {
    if v.as_object().is_some_and(|o| o.is_empty()) {
        return "{}\n".to_string();
    }
    serde_saphyr::to_string(v).unwrap_or_else(|_| {
        let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
        s.push('\n');
        s
    })
}

#[cfg(test)]
mod to_yaml_tests {
    use super::*;

    #[test]
    fn to_yaml_reads_back_as_the_same_value() {
        for v in [
            serde_json::json!({}),
            serde_json::json!({"spec": {"template": {"spec": {"containers": [{"image": "a:b", "args": ["--x", "1"]}]}}}}),
            serde_json::json!({"RoleArn": "arn:aws:iam::1:role/r", "n": 1.5, "on": true, "s": "yes", "empty": "", "null": null}),
            serde_json::json!({"multi": "line one\nline two\n", "quote": "it's \"quoted\" #not a comment"}),
        ] {
            let text = to_yaml(&v);
            assert_eq!(parse_document(&text).unwrap(), v, "{text}");
        }
    }
}
