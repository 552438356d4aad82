//! Queue-config macros, applied by the agent when it takes a run (W&B semantics):
//! `${project_name} ${entity_name} ${run_id} ${run_name} ${image_uri}`, and `${NAME}`
//! from the agent's environment.
//!
//! - A variable whose name looks secret (KEY, SECRET, TOKEN, PASSWORD, CREDENTIAL…) or
//!   whose value looks like a credential (a URL with a password, a DSN, a token) is
//!   never handed out unless the agent config lists it in `env-allow-list`, and the
//!   agent's own `HOIST_*` settings never are (see [`crate::host_env`]): the queue
//!   config is written by queue owners, the environment belongs to the agent's owner.
//! - A `${NAME}` that is neither a macro nor an allowed variable stays as written, so
//!   shell variables meant for the container survive.
//! - `$${…}` is always the literal `${…}`.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::host_env::withheld;

/// The values macros expand to.
pub struct MacroContext<'a> {
    pub project: &'a str,
    pub entity: &'a str,
    pub run_id: &'a str,
    pub run_name: &'a str,
    pub image_uri: Option<&'a str>,
    /// The agent's environment (raw: [`apply`] decides what it hands out).
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Names the agent may hand out although they or their values look secret.
    pub allow: &'a [String],
}

/// What [`apply`] did, for the run's timeline.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MacroReport {
    /// Macros and variables substituted.
    pub substituted: BTreeSet<String>,
    /// Variables left as written because their names or values look secret.
    pub withheld: BTreeSet<String>,
}

impl MacroReport {
    /// `macros: ${run_id}, ${HOME}; withheld: ${AWS_SECRET_ACCESS_KEY}`, or empty.
    pub fn summary(&self) -> String {
        let fmt = |s: &BTreeSet<String>| {
            s.iter()
                .map(|n| format!("${{{n}}}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = Vec::new();
        if !self.substituted.is_empty() {
            parts.push(format!("macros substituted: {}", fmt(&self.substituted)));
        }
        if !self.withheld.is_empty() {
            parts.push(format!(
                "variables not substituted because they look secret (add them to env-allow-list to allow): {}",
                fmt(&self.withheld)
            ));
        }
        parts.join("; ")
    }
}

/// Applies macros to every string (values, not keys) of a config.
pub fn apply(config: &Value, ctx: &MacroContext<'_>) -> (Value, MacroReport) {
    let mut report = MacroReport::default();
    let v = walk(config, ctx, &mut report);
    (v, report)
}

fn walk(v: &Value, ctx: &MacroContext<'_>, r: &mut MacroReport) -> Value {
    match v {
        Value::String(s) => Value::String(expand(s, ctx, r)),
        Value::Array(a) => Value::Array(a.iter().map(|x| walk(x, ctx, r)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), walk(x, ctx, r)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn is_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Expands the macros of one string.
pub fn expand(s: &str, ctx: &MacroContext<'_>, r: &mut MacroReport) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(lit) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = lit;
            continue;
        }
        if let Some(body) = after.strip_prefix("${")
            && let Some(end) = body.find('}')
            && is_name(&body[..end])
        {
            let name = &body[..end];
            if let Some(val) = lookup(name, ctx, r) {
                out.push_str(&val);
                r.substituted.insert(name.to_string());
            } else {
                out.push_str(&after[..end + 3]);
            }
            rest = &body[end + 1..];
            continue;
        }
        out.push('$');
        rest = &after[1..];
    }
    out.push_str(rest);
    out
}

fn lookup(name: &str, ctx: &MacroContext<'_>, r: &mut MacroReport) -> Option<String> {
    match name {
        "project_name" => return Some(ctx.project.to_string()),
        "entity_name" => return Some(ctx.entity.to_string()),
        "run_id" => return Some(ctx.run_id.to_string()),
        "run_name" => return Some(ctx.run_name.to_string()),
        "image_uri" => return ctx.image_uri.map(str::to_string),
        _ => {}
    }
    let val = (ctx.env)(name)?;
    if withheld(name, &val, ctx.allow).is_some() {
        r.withheld.insert(name.to_string());
        return None;
    }
    Some(val)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx<'a>(env: &'a dyn Fn(&str) -> Option<String>, allow: &'a [String]) -> MacroContext<'a> {
        MacroContext {
            project: "proj",
            entity: "team",
            run_id: "r123",
            run_name: "first",
            image_uri: Some("reg/img:v1"),
            env,
            allow,
        }
    }

    fn check(input: &str, expected: &str) {
        let env = |n: &str| match n {
            "HOME" => Some("/home/a".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("shh".to_string()),
            "HF_TOKEN" => Some("tok".to_string()),
            "DB" => Some("postgres://app:pw@db/app".to_string()),
            "HOIST_API_KEY" => Some("hk_agent".to_string()),
            _ => None,
        };
        let allow = vec!["HF_TOKEN".to_string()];
        let mut r = MacroReport::default();
        assert_eq!(
            expand(input, &ctx(&env, &allow), &mut r),
            expected,
            "input {input:?}"
        );
    }

    #[test]
    fn expansion_table() {
        check("${project_name}/${entity_name}", "proj/team");
        check("job-${run_id}-${run_name}", "job-r123-first");
        check("${image_uri}", "reg/img:v1");
        check("${HOME}/data", "/home/a/data");
        check("${AWS_SECRET_ACCESS_KEY}", "${AWS_SECRET_ACCESS_KEY}");
        check("${HF_TOKEN}", "tok");
        check("${DB}", "${DB}");
        check("${HOIST_API_KEY}", "${HOIST_API_KEY}");
        check("${UNSET_VAR}", "${UNSET_VAR}");
        check("$${run_id}", "${run_id}");
        check("$$${run_id}", "$${run_id}");
        check("cost $5 ${", "cost $5 ${");
        check("${not a name}", "${not a name}");
        check("${}", "${}");
        check("$", "$");
        check("a$b${run_id}", "a$br123");
        check("é${run_id}ü", "ér123ü");
    }

    #[test]
    fn report_names_what_happened() {
        let env = |n: &str| (n == "GITHUB_TOKEN" || n == "USER").then(|| "x".to_string());
        let (v, r) = apply(
            &json!({"a": ["${run_id}", {"b": "${GITHUB_TOKEN} ${USER}"}], "n": 3}),
            &ctx(&env, &[]),
        );
        assert_eq!(
            v,
            json!({"a": ["r123", {"b": "${GITHUB_TOKEN} x"}], "n": 3})
        );
        assert_eq!(
            r.summary(),
            "macros substituted: ${USER}, ${run_id}; variables not substituted because they look secret (add them to env-allow-list to allow): ${GITHUB_TOKEN}"
        );
    }
}
