//! The `local-process` queue config: how the agent runs a job's entrypoint on its own
//! machine.
//!
//! ```yaml
//! env:                    # a map, or a list of "NAME=VALUE" / "NAME" strings
//!   OMP_NUM_THREADS: "4"
//! working_dir: /srv/jobs  # alias: workdir (kebab-case and camelCase spellings too)
//! shell: false            # run the entrypoint through `sh -c`
//! ```
//!
//! Every key is optional; an empty config is fine. Unknown keys are refused.

use serde_json::Value;

use super::ConfigProblem;
use super::schema::{Checker, KeyStyle, env_entries, sort_problems};

/// The keys of a `local-process` queue config.
pub const FIELDS: &[&str] = &["env", "working_dir", "shell"];

/// A `local-process` queue config, normalised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalProcessOptions {
    /// Environment variables in document order; `None` passes the variable through from
    /// the agent's environment.
    pub env: Vec<(String, Option<String>)>,
    /// The directory the entrypoint runs in.
    pub working_dir: Option<String>,
    /// Run the entrypoint through `sh -c`.
    pub shell: bool,
}

fn read(c: &mut Checker, config: &Value) -> LocalProcessOptions {
    let mut out = LocalProcessOptions::default();
    let Some(obj) = c.object(config, "") else {
        return out;
    };
    let fields = c.fields_with(
        obj,
        "",
        FIELDS,
        KeyStyle::Snake,
        &[("workdir", "working_dir")],
    );
    for f in &fields {
        match f.name {
            "env" => out.env = env_entries(c, f.value, &f.path),
            "working_dir" => {
                if let Some(s) = c.nonempty(f.value, &f.path) {
                    out.working_dir = Some(s.to_string());
                }
            }
            _ => out.shell = c.bool(f.value, &f.path).ok().unwrap_or(false),
        }
    }
    out
}

/// The `env` entries that pass a variable of the agent's environment through to the
/// process (`NAME` without a value), as `(path, name)`, in document order.
pub fn env_passthrough(config: &Value) -> Vec<(String, String)> {
    let Some(obj) = config.as_object() else {
        return Vec::new();
    };
    // Every spelling counts, even one the schema refuses as a duplicate.
    obj.iter()
        .filter(|(k, _)| KeyStyle::Snake.normalize(k) == "env")
        .flat_map(|(k, v)| super::schema::env_passthrough_entries(v, &super::path::key_path("", k)))
        .collect()
}

/// Checks a `local-process` queue config; returns every problem.
pub fn validate(config: &Value) -> Vec<ConfigProblem> {
    let mut c = Checker::new();
    read(&mut c, config);
    sort_problems(config, &mut c.problems);
    c.problems
}

/// Parses a `local-process` config whose macros were substituted.
pub fn parse(config: &Value) -> Result<LocalProcessOptions, Vec<ConfigProblem>> {
    let mut c = Checker::new();
    c.macros = false;
    let out = read(&mut c, config);
    sort_problems(config, &mut c.problems);
    if c.problems.is_empty() {
        Ok(out)
    } else {
        Err(c.problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_spellings() {
        let o = parse(&json!({"env": ["A=1", "B"], "workdir": "/tmp", "shell": true})).unwrap();
        assert_eq!(
            o.env,
            vec![("A".into(), Some("1".into())), ("B".into(), None)]
        );
        assert_eq!(o.working_dir.as_deref(), Some("/tmp"));
        assert!(o.shell);
        let o = parse(&json!({"env": {"A": 1, "B": null}, "workingDir": "x"})).unwrap();
        assert_eq!(
            o.env,
            vec![("A".into(), Some("1".into())), ("B".into(), None)]
        );
        assert_eq!(o.working_dir.as_deref(), Some("x"));
        assert_eq!(parse(&json!({})).unwrap(), LocalProcessOptions::default());
    }
}
