//! Launch-time input never reaches the agent's macro expansion as a macro.
//!
//! The server builds a run's resource config from the queue owner's config, the
//! launch's template values ([`template::substitute`]) and its resource args
//! ([`template::escape_macros_in`], then [`merge::deep_merge`]). The agent then expands
//! `${NAME}` from its own environment (`hoist-agent/src/macros.rs`). `agent_expand`
//! below is that expansion, written again from its documented grammar: `$${` is a
//! literal `${`; `${NAME}` (NAME = a letter or `_`, then letters, digits or `_`) is
//! looked up; any other `$` is itself.

use std::collections::BTreeMap;

use hoist_core::merge::deep_merge;
use hoist_core::template::{self, escape_macros, escape_macros_in};
use proptest::prelude::*;
use regex::Regex;
use serde_json::{Value, json};

fn is_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// The agent's expansion with an environment that has every variable (`<NAME>`), so any
/// macro it sees is substituted and recorded.
fn agent_expand(s: &str, substituted: &mut Vec<String>) -> String {
    let mut out = String::new();
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
            substituted.push(body[..end].to_string());
            out.push_str(&format!("<{}>", &body[..end]));
            rest = &body[end + 1..];
            continue;
        }
        out.push('$');
        rest = &after[1..];
    }
    out.push_str(rest);
    out
}

/// Every string value (not key) of a document, expanded as the agent does.
fn expand_all(v: &Value, substituted: &mut Vec<String>) -> Value {
    match v {
        Value::String(s) => Value::String(agent_expand(s, substituted)),
        Value::Array(a) => Value::Array(a.iter().map(|x| expand_all(x, substituted)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), expand_all(x, substituted)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn owner_has_macros(v: &Value) -> bool {
    let mut found = Vec::new();
    expand_all(v, &mut found);
    !found.is_empty()
}

/// Text made of what matters to the agent's grammar: `$`, braces, name characters.
fn tricky() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("$"),
            Just("{"),
            Just("}"),
            Just("${"),
            Just("$${"),
            Just("HOME"),
            Just("_a1"),
            Just("PATH}"),
            Just("-"),
            Just("é"),
        ],
        0..8,
    )
    .prop_map(|v| v.concat())
}

/// An owner string: tricky text with placeholders of `a`, `b` (and one without a value).
fn owner_text(dollars: bool) -> impl Strategy<Value = String> {
    let text = if dollars {
        tricky().boxed()
    } else {
        tricky().prop_map(|s| s.replace('$', "")).boxed()
    };
    proptest::collection::vec(
        prop_oneof![
            text,
            Just("{{a}}".to_string()),
            Just("{{ b }}".to_string()),
            Just("{{missing}}".to_string()),
        ],
        0..6,
    )
    .prop_map(|v| v.concat())
}

fn owner_config(dollars: bool) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        owner_text(dollars).prop_map(Value::String),
        any::<i32>().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec(("[a-z]{1,3}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn args_config() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        tricky().prop_map(Value::String),
        any::<bool>().prop_map(Value::Bool)
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec(("[a-z]{1,3}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn values(a: String, b: String) -> BTreeMap<String, Value> {
    BTreeMap::from([("a".to_string(), json!(a)), ("b".to_string(), json!(b))])
}

/// The text substitution a person expects: placeholders replaced by their values.
fn naive(owner: &Value, values: &BTreeMap<String, Value>) -> Value {
    let re = Regex::new(r"\{\{\s*([^{}\s](?:[^{}]*[^{}\s])?)\s*\}\}").unwrap();
    match owner {
        Value::String(s) => Value::String(
            re.replace_all(s, |c: &regex::Captures<'_>| match values.get(&c[1]) {
                Some(Value::String(v)) => v.clone(),
                Some(v) => v.to_string(),
                None => c[0].to_string(),
            })
            .into_owned(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|x| naive(x, values)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), naive(x, values)))
                .collect(),
        ),
        other => other.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    /// For any owner config without macros and any template values and resource args,
    /// the agent substitutes nothing.
    #[test]
    fn launch_input_is_never_a_macro(
        owner in owner_config(true),
        a in tricky(),
        b in tricky(),
        args in args_config(),
    ) {
        prop_assume!(!owner_has_macros(&owner));
        let mut config = template::substitute(&owner, &values(a, b));
        deep_merge(&mut config, &escape_macros_in(&args));
        let mut substituted = Vec::new();
        expand_all(&config, &mut substituted);
        prop_assert!(substituted.is_empty(), "{config} expands {substituted:?}");
    }

    /// And what the agent makes of it is the text itself: the owner's (without `$` here,
    /// so it has no escapes of its own) with the values put in, and the args as given.
    #[test]
    fn launch_input_comes_out_literally(
        owner in owner_config(false),
        a in tricky(),
        b in tricky(),
        args in tricky(),
    ) {
        let values = values(a, b);
        let config = template::substitute(&owner, &values);
        let mut none = Vec::new();
        prop_assert_eq!(expand_all(&config, &mut none), naive(&owner, &values));
        prop_assert_eq!(agent_expand(&escape_macros(&args), &mut none), args);
        prop_assert!(none.is_empty());
    }
}

#[test]
fn boundaries_between_owner_text_and_values() {
    let cases: &[(&str, &str, &str)] = &[
        // A value ending in `$` before owner text starting with `{`.
        ("{{a}}{HOME}", "$", "${HOME}"),
        // Owner text ending in `$` before a value starting with `{`.
        ("cost$", "", "cost$"),
        ("cost${{a}}", "{HOME}", "cost${HOME}"),
        ("$${{a}}", "{HOME}", "$${HOME}"),
        // Owner text opening a macro that the value would close.
        ("${HO{{a}}", "ME}", "${HOME}"),
        ("${{{a}}}", "PATH", "${PATH}"),
        // A value that is a macro, or the agent's escape.
        ("x={{a}}", "${PATH}", "x=${PATH}"),
        ("{{a}}", "$${PATH}", "$${PATH}"),
        // The owner's own macros keep working next to values.
        ("${run_id}-{{a}}", "${HOME}", "<run_id>-${HOME}"),
        ("{{a}}/${run_id}", "x", "x/<run_id>"),
        // A value ending in `$` right before an owner macro: the agent's syntax cannot
        // say "a `$`, then a macro", so the macro is written literally.
        ("{{a}}${run_id}", "$", "$${run_id}"),
    ];
    for (owner, a, expected) in cases {
        let config = template::substitute(
            &json!({ "k": owner }),
            &values(a.to_string(), String::new()),
        );
        let mut substituted = Vec::new();
        let got = expand_all(&config, &mut substituted);
        assert_eq!(got["k"], *expected, "owner {owner:?}, a = {a:?}: {config}");
        assert!(
            substituted.iter().all(|n| n == "run_id"),
            "owner {owner:?}, a = {a:?}: {substituted:?}"
        );
    }
}
