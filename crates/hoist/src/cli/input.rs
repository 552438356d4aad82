//! Reading what people give on the command line: YAML/JSON documents from files,
//! stdin or inline text, and `KEY=VALUE` pairs. Every problem is an [`invalid`] error
//! (exit code 2) naming where it came from.

use std::collections::BTreeMap;
use std::io::Read;

use serde_json::Value;

use super::invalid;

/// Reads a file (`-` = stdin), naming it in errors.
pub fn read_text(path: &str) -> anyhow::Result<String> {
    if path == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| invalid(format!("cannot read stdin: {e}")))?;
        return Ok(s);
    }
    std::fs::read_to_string(path).map_err(|e| invalid(format!("cannot read {path}: {e}")))
}

/// Parses a YAML or JSON document; errors read `SOURCE: line L, column C: message`.
pub fn parse_doc(source: &str, text: &str) -> anyhow::Result<Value> {
    hoist_core::yaml::parse_document(text).map_err(|e| invalid(format!("{source}: {e}")))
}

/// A YAML/JSON mapping from a file (`-` = stdin).
pub fn object_from_file(path: &str) -> anyhow::Result<Value> {
    let source = if path == "-" { "<stdin>" } else { path };
    let v = parse_doc(source, &read_text(path)?)?;
    require_object(source, v)
}

/// Inline JSON/YAML when `arg` starts with `{`, else a file path (`-` = stdin).
pub fn object_inline_or_file(flag: &str, arg: &str) -> anyhow::Result<Value> {
    if arg.trim_start().starts_with('{') {
        let v = parse_doc(flag, arg)?;
        return require_object(flag, v);
    }
    object_from_file(arg)
}

fn require_object(source: &str, v: Value) -> anyhow::Result<Value> {
    if v.is_object() {
        Ok(v)
    } else {
        Err(invalid(format!(
            "{source}: expected a mapping (KEY: VALUE pairs) at the top level"
        )))
    }
}

/// `KEY=VALUE` flags into a map; `KEY` alone takes the value from this process's
/// environment when `from_env` (as `docker run -e KEY` does).
pub fn pairs(
    flag: &str,
    items: &[String],
    from_env: bool,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items {
        let (k, v) = match item.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None if from_env => {
                let v = std::env::var(item).map_err(|_| {
                    invalid(format!(
                        "{flag} {item}: no `=` and no variable {item} in this environment; use {flag} KEY=VALUE"
                    ))
                })?;
                (item.clone(), v)
            }
            None => return Err(invalid(format!("{flag} {item:?}: expected KEY=VALUE"))),
        };
        if k.is_empty() {
            return Err(invalid(format!("{flag} {item:?}: the key is empty")));
        }
        if out.insert(k.clone(), v).is_some() {
            return Err(invalid(format!("{flag}: {k} is given twice")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values() {
        let m = pairs("--env", &["A=1".into(), "B=x=y".into(), "C=".into()], false).unwrap();
        assert_eq!(m["A"], "1");
        assert_eq!(m["B"], "x=y");
        assert_eq!(m["C"], "");
        assert!(pairs("--env", &["A".into()], false).is_err());
        assert!(pairs("--env", &["=1".into()], false).is_err());
        assert!(pairs("--env", &["A=1".into(), "A=2".into()], false).is_err());
    }

    #[test]
    fn inline_docs() {
        assert_eq!(
            object_inline_or_file("--config", r#"{"lr": 0.1}"#).unwrap(),
            serde_json::json!({"lr": 0.1})
        );
        let e = object_inline_or_file("--config", "{\"lr\": [}").unwrap_err();
        assert!(e.to_string().starts_with("--config: line 1"), "{e}");
        let e = object_inline_or_file("--config", "/nonexistent/file.yaml").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/file.yaml"), "{e}");
    }
}
