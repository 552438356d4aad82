//! Typed queue template variables: `{{name}}` placeholders in a queue's config.
//!
//! A queue defines its variables ([`TemplateVariable`]: a name, a type, and optionally
//! a default, a range, a list of allowed values); its config uses them as `{{name}}`
//! (spaces inside the braces allowed) in string values and in object keys. When a run
//! is launched, [`resolve_values`] turns the values given for it (typically
//! `--set-var gpus=2`) plus the defaults into typed values, and [`substitute`] puts them
//! into the config: a string that is exactly one placeholder becomes the typed value
//! (`replicas: "{{n}}"` → `replicas: 2`), a placeholder inside a longer string is
//! replaced by its text.
//!
//! Values are launch-time input: anyone who may launch on the queue gives them. The
//! agent expands `${NAME}` macros from its own environment in the resulting config, so
//! values are escaped for that expansion ([`escape_macros`]: the agent reads `$${` as a
//! literal `${`), including where a value meets the owner's text (a value ending in `$`
//! before owner text starting with `{`, owner text ending in `$` or opening `${`
//! before a value). Macros come only from the queue owner's text. A run's resource args
//! go through [`escape_macros_in`] before they are merged.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::LazyLock;

use regex::{Captures, Regex};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;
use utoipa::ToSchema;

use crate::resource::path::{index_path, key_path};

/// The type of a template variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VarType {
    String,
    Int,
    Float,
}

impl VarType {
    /// `string`, `int` or `float`.
    pub fn as_str(self) -> &'static str {
        match self {
            VarType::String => "string",
            VarType::Int => "int",
            VarType::Float => "float",
        }
    }
}

impl fmt::Display for VarType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A template variable of a queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateVariable {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: VarType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A problem with a template variable's definition, its value, or a placeholder. The
/// message names the variable and reads on its own.
#[derive(Debug, Clone, PartialEq, Eq, Error, Serialize, Deserialize, ToSchema)]
#[error("{message}")]
pub struct TemplateProblem {
    /// The variable (or placeholder) concerned.
    pub variable: String,
    pub message: String,
}

impl TemplateProblem {
    fn new(variable: &str, message: impl Into<String>) -> Self {
        TemplateProblem {
            variable: variable.to_string(),
            message: message.into(),
        }
    }
}

static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\{\{\s*([^{}\s](?:[^{}]*[^{}\s])?)\s*\}\}").expect("placeholder regex")
});
static IDENTIFIER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z0-9_]*$").expect("identifier regex"));

fn is_identifier(s: &str) -> bool {
    IDENTIFIER.is_match(s)
}

/// A number as people write it: `8`, not `8.0`.
fn num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// A value as messages show it: strings quoted, numbers as written.
fn show(v: &Value) -> String {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(x) if n.is_f64() => num(x),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// A value as it goes into text: strings as they are, other values as JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `(int, min 0, max 8)`, `(string, one of small|large)`.
fn describe(var: &TemplateVariable) -> String {
    let mut parts = vec![var.kind.as_str().to_string()];
    if let Some(min) = var.min {
        parts.push(format!("min {}", num(min)));
    }
    if let Some(max) = var.max {
        parts.push(format!("max {}", num(max)));
    }
    if let Some(choices) = &var.choices {
        parts.push(format!(
            "one of {}",
            choices.iter().map(text).collect::<Vec<_>>().join("|")
        ));
    }
    format!("({})", parts.join(", "))
}

/// Converts `v` to the variable type: numbers and numeric strings for int and float
/// (`"8"` → 8, `"0.5"` → 0.5), strings (and numbers, as text) for string. The error
/// reads "is not an int".
fn convert(kind: VarType, v: &Value) -> Result<Value, String> {
    match (kind, v) {
        (VarType::String, Value::String(_)) => Ok(v.clone()),
        (VarType::String, Value::Number(n)) => Ok(Value::String(n.to_string())),
        (VarType::Int, Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Value::from(i))
            } else {
                match n.as_f64() {
                    Some(x) if x.fract() == 0.0 && x.abs() < 9.0e15 => Ok(Value::from(x as i64)),
                    _ => Err("is not an int".to_string()),
                }
            }
        }
        (VarType::Int, Value::String(s)) => {
            let t = s.trim();
            if let Ok(i) = t.parse::<i64>() {
                Ok(Value::from(i))
            } else {
                Err("is not an int".to_string())
            }
        }
        (VarType::Float, Value::Number(n)) => match n.as_f64() {
            Some(x) if x.is_finite() => Ok(Value::from(x)),
            _ => Err("is not a float".to_string()),
        },
        (VarType::Float, Value::String(s)) => match s.trim().parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(Value::from(x)),
            _ => Err("is not a float".to_string()),
        },
        (VarType::String, _) => Err("is not a string".to_string()),
        (VarType::Int, _) => Err("is not an int".to_string()),
        (VarType::Float, _) => Err("is not a float".to_string()),
    }
}

/// True when `v` (already converted) is one of the variable's enum values.
fn in_choices(kind: VarType, v: &Value, choices: &[Value]) -> bool {
    choices.iter().any(|c| match (kind, convert(kind, c)) {
        (VarType::String, Ok(c)) => &c == v,
        (_, Ok(c)) => c.as_f64() == v.as_f64(),
        (_, Err(_)) => false,
    })
}

/// Checks a converted value against the variable's min, max and enum; the message
/// starts with "value … for `name`".
fn check_rules(var: &TemplateVariable, v: &Value) -> Result<(), String> {
    let name = &var.name;
    if let Some(x) = v.as_f64() {
        if let Some(min) = var.min
            && x < min
        {
            return Err(format!(
                "value {} for `{name}` is below its min {}",
                show(v),
                num(min)
            ));
        }
        if let Some(max) = var.max
            && x > max
        {
            return Err(format!(
                "value {} for `{name}` is above its max {}",
                show(v),
                num(max)
            ));
        }
    }
    if let Some(choices) = &var.choices
        && !in_choices(var.kind, v, choices)
    {
        return Err(format!(
            "value {} for `{name}` is not one of {}",
            show(v),
            choices.iter().map(text).collect::<Vec<_>>().join("|")
        ));
    }
    Ok(())
}

/// Checks variable definitions: names are identifiers (`[A-Za-z_][A-Za-z0-9_]*`) and
/// unique; `min`/`max` only on int and float variables, whole numbers on int ones, and
/// `min ≤ max`; enum values of the variable's type, within min/max, not repeated; the
/// default of the variable's type and within its own rules. Returns every problem.
pub fn check_definitions(vars: &[TemplateVariable]) -> Result<(), Vec<TemplateProblem>> {
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for var in vars {
        let name = var.name.as_str();
        let mut report = |msg: String| problems.push(TemplateProblem::new(name, msg));
        if !is_identifier(name) {
            report(format!(
                "template variable name {} is not valid: use letters, digits and `_`, not starting with a digit",
                Value::String(name.to_string())
            ));
        }
        if !seen.insert(name) {
            report(format!(
                "template variable `{name}` is defined more than once"
            ));
        }
        let numeric = var.kind != VarType::String;
        for (bound, value) in [("min", var.min), ("max", var.max)] {
            let Some(x) = value else { continue };
            if !numeric {
                report(format!(
                    "template variable `{name}`: {bound} applies only to int and float variables, not string"
                ));
            } else if !x.is_finite() {
                report(format!(
                    "template variable `{name}`: {bound} must be a finite number"
                ));
            } else if var.kind == VarType::Int && x.fract() != 0.0 {
                report(format!(
                    "template variable `{name}`: {bound} {x} of an int variable must be a whole number"
                ));
            }
        }
        if numeric
            && let (Some(min), Some(max)) = (var.min, var.max)
            && min > max
        {
            report(format!(
                "template variable `{name}`: min {} is above max {}",
                num(min),
                num(max)
            ));
        }
        let rules_only = TemplateVariable {
            choices: None,
            ..var.clone()
        };
        if let Some(choices) = &var.choices {
            if choices.is_empty() {
                report(format!(
                    "template variable `{name}`: enum must list at least one value"
                ));
            }
            let mut distinct: Vec<Value> = Vec::new();
            for c in choices {
                match typed(var.kind, c) {
                    Err(why) => report(format!(
                        "template variable `{name}`: enum value {} {why}",
                        show(c)
                    )),
                    Ok(v) => {
                        if let Err(e) = check_rules(&rules_only, &v) {
                            report(format!("template variable `{name}`: enum {e}"));
                        }
                        if distinct.contains(&v) {
                            report(format!(
                                "template variable `{name}`: enum value {} is listed twice",
                                show(c)
                            ));
                        } else {
                            distinct.push(v);
                        }
                    }
                }
            }
        }
        if let Some(d) = &var.default {
            match typed(var.kind, d) {
                Err(why) => report(format!(
                    "template variable `{name}`: default {} {why}",
                    show(d)
                )),
                Ok(v) => {
                    if let Err(e) = check_rules(var, &v) {
                        report(format!("template variable `{name}`: default {e}"));
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// The strict typing of definitions (defaults and enum values): a JSON value of the
/// variable's type, integral for int.
fn typed(kind: VarType, v: &Value) -> Result<Value, String> {
    match (kind, v) {
        (VarType::String, Value::String(_)) => Ok(v.clone()),
        (VarType::Int | VarType::Float, Value::Number(_)) => convert(kind, v),
        (VarType::String, _) => Err("is not a string".to_string()),
        (VarType::Int, _) => Err("is not an int".to_string()),
        (VarType::Float, _) => Err("is not a float".to_string()),
    }
}

/// Calls `f(name, path)` for every placeholder in string values and object keys.
fn walk_placeholders(config: &Value, path: &str, f: &mut dyn FnMut(&str, &str)) {
    match config {
        Value::String(s) => {
            for caps in PLACEHOLDER.captures_iter(s) {
                f(&caps[1], path);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_placeholders(item, &index_path(path, i), f);
            }
        }
        Value::Object(m) => {
            for (k, v) in m {
                let p = key_path(path, k);
                for caps in PLACEHOLDER.captures_iter(k) {
                    f(&caps[1], &p);
                }
                walk_placeholders(v, &p, f);
            }
        }
        _ => {}
    }
}

/// Every `{{ name }}` placeholder in the config's string values and object keys, by
/// name (whitespace inside the braces is not part of the name; `{{}}` is not a
/// placeholder).
pub fn placeholders(config: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    walk_placeholders(config, "", &mut |name, _| {
        out.insert(name.to_string());
    });
    out
}

/// Checks that every placeholder used in the config has a definition. Each problem
/// names the placeholder and the path where it is used.
pub fn check_usage(vars: &[TemplateVariable], config: &Value) -> Result<(), Vec<TemplateProblem>> {
    let defined: BTreeSet<&str> = vars.iter().map(|v| v.name.as_str()).collect();
    let mut problems = Vec::new();
    walk_placeholders(config, "", &mut |name, path| {
        if !defined.contains(name) {
            let at = if path.is_empty() {
                "the document root".to_string()
            } else {
                path.to_string()
            };
            let known = if defined.is_empty() {
                "the queue defines no template variables".to_string()
            } else {
                format!(
                    "defined: {}",
                    defined.iter().copied().collect::<Vec<_>>().join(", ")
                )
            };
            problems.push(TemplateProblem::new(
                name,
                format!("placeholder `{{{{{name}}}}}` at {at} has no template variable definition ({known})"),
            ));
        }
    });
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// The values of all variables for a run: the given value converted to the variable's
/// type (`"8"` → 8 for an int), else the default. A missing value, a value that does
/// not convert or breaks the variable's rules, and a value for a variable that does not
/// exist are problems; all are returned at once.
pub fn resolve_values(
    vars: &[TemplateVariable],
    given: &BTreeMap<String, Value>,
) -> Result<BTreeMap<String, Value>, Vec<TemplateProblem>> {
    let mut problems = Vec::new();
    let known: Vec<&str> = vars.iter().map(|v| v.name.as_str()).collect();
    for name in given.keys() {
        if !known.contains(&name.as_str()) {
            let msg = if known.is_empty() {
                format!("unknown template variable `{name}`: this queue has no template variables")
            } else {
                format!(
                    "unknown template variable `{name}`; known: {}",
                    known.join(", ")
                )
            };
            problems.push(TemplateProblem::new(name, msg));
        }
    }
    let mut values = BTreeMap::new();
    for var in vars {
        let name = &var.name;
        let (raw, origin) = match (given.get(name), &var.default) {
            (Some(v), _) => (v, "value"),
            (None, Some(d)) => (d, "default"),
            (None, None) => {
                problems.push(TemplateProblem::new(
                    name,
                    format!(
                        "missing value for template variable `{name}` {}: pass --set-var {name}=VALUE",
                        describe(var)
                    ),
                ));
                continue;
            }
        };
        let v = match convert(var.kind, raw) {
            Ok(v) => v,
            Err(why) => {
                problems.push(TemplateProblem::new(
                    name,
                    format!("{origin} {} for `{name}` {why}", show(raw)),
                ));
                continue;
            }
        };
        if let Err(e) = check_rules(var, &v) {
            let e = if origin == "default" {
                format!("default {e}")
            } else {
                e
            };
            problems.push(TemplateProblem::new(name, e));
            continue;
        }
        values.insert(name.clone(), v);
    }
    if problems.is_empty() {
        Ok(values)
    } else {
        Err(problems)
    }
}

/// Substitutes placeholders in an object key: plain text (the agent does not expand
/// macros in keys).
fn substitute_text(s: &str, values: &BTreeMap<String, Value>) -> String {
    PLACEHOLDER
        .replace_all(s, |caps: &Captures<'_>| match values.get(&caps[1]) {
            Some(v) => text(v),
            None => caps[0].to_string(),
        })
        .into_owned()
}

/// Substitutes placeholders in a string value: the owner's text keeps its macros, the
/// values are written so that the agent's macro expansion yields them literally (see
/// [`escape_macros`]).
fn substitute_value_text(s: &str, values: &BTreeMap<String, Value>) -> String {
    let mut atoms = Vec::new();
    let mut last = 0;
    let mut replaced = false;
    for caps in PLACEHOLDER.captures_iter(s) {
        let m = caps.get(0).expect("whole match");
        let Some(v) = values.get(&caps[1]) else {
            continue;
        };
        replaced = true;
        owner_atoms(&s[last..m.start()], &mut atoms);
        atoms.extend(text(v).chars().map(Atom::Lit));
        last = m.end();
    }
    if !replaced {
        return s.to_string();
    }
    owner_atoms(&s[last..], &mut atoms);
    encode(&atoms)
}

/// Puts the values into the config: a string that is exactly one placeholder (spaces
/// around it allowed) becomes the typed value, a placeholder inside a longer string or
/// in an object key is replaced by its text. Placeholders without a value stay as they
/// are. When two keys become the same, the later entry wins.
///
/// Values are launch-time input, never macros: in string values they are written so
/// that the agent's `${…}` expansion yields them as they are, even next to the queue
/// owner's text (see [`escape_macros`]); the owner's own macros keep working.
pub fn substitute(config: &Value, values: &BTreeMap<String, Value>) -> Value {
    match config {
        Value::String(s) => {
            if let Some(caps) = PLACEHOLDER.captures(s)
                && caps.get(0).is_some_and(|m| m.as_str() == s.trim())
                && let Some(v) = values.get(&caps[1])
            {
                return match v {
                    Value::String(text) => Value::String(escape_macros(text)),
                    other => other.clone(),
                };
            }
            Value::String(substitute_value_text(s, values))
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| substitute(v, values)).collect()),
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                out.insert(substitute_text(k, values), substitute(v, values));
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

// ---------------------------------------------------------------------------------
// Launch-time text and the agent's macros

/// One unit of a string value as the agent's macro expansion reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Atom<'a> {
    /// A character that comes out as it is.
    Lit(char),
    /// A macro of the queue owner's text, `${NAME}`, for the agent to expand.
    Macro(&'a str),
}

fn is_macro_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Reads text the way the agent expands it (`hoist-agent/src/macros.rs`): `$${` is a
/// literal `${`; `${NAME}` (a letter or `_`, then letters, digits or `_`) is a macro;
/// any other `$` is itself.
fn owner_atoms<'a>(s: &'a str, out: &mut Vec<Atom<'a>>) {
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.extend(rest[..i].chars().map(Atom::Lit));
        let after = &rest[i..];
        if let Some(lit) = after.strip_prefix("$${") {
            out.extend([Atom::Lit('$'), Atom::Lit('{')]);
            rest = lit;
            continue;
        }
        if let Some(body) = after.strip_prefix("${")
            && let Some(end) = body.find('}')
            && is_macro_name(&body[..end])
        {
            out.push(Atom::Macro(&after[..end + 3]));
            rest = &body[end + 1..];
            continue;
        }
        out.push(Atom::Lit('$'));
        rest = &after[1..];
    }
    out.extend(rest.chars().map(Atom::Lit));
}

/// Writes atoms so that the agent's expansion gives each literal character as it is
/// and expands each macro: a literal `$` before a `{` is written `$$` (the agent reads
/// `$${` as a literal `${`). The agent's syntax cannot say "a literal `$`, then a
/// macro" (`$${` is always the escape), so a macro right after a literal `$` is
/// written literally too.
fn encode(atoms: &[Atom<'_>]) -> String {
    let mut out = String::new();
    for (i, a) in atoms.iter().enumerate() {
        match a {
            Atom::Lit('$') => {
                if matches!(atoms.get(i + 1), Some(Atom::Lit('{'))) {
                    out.push_str("$$");
                } else {
                    out.push('$');
                }
            }
            Atom::Lit(c) => out.push(*c),
            Atom::Macro(m) => {
                if i > 0 && atoms[i - 1] == Atom::Lit('$') {
                    out.push('$');
                }
                out.push_str(m);
            }
        }
    }
    out
}

/// True when the agent would expand a macro in `s` (`${NAME}`, not after `$` as in
/// the literal `$${NAME}`).
pub(crate) fn contains_macro(s: &str) -> bool {
    if !s.contains("${") {
        return false;
    }
    let mut atoms = Vec::new();
    owner_atoms(s, &mut atoms);
    atoms.iter().any(|a| matches!(a, Atom::Macro(_)))
}

/// Escapes launch-time text (a template value, a string of a run's resource args) so
/// that the agent's macro expansion yields it exactly: every `$` followed by `{`
/// becomes `$$` (`$${` is the agent's literal `${`). Anyone who may launch on a queue
/// must not read the agent's environment: macros come only from the queue owner's
/// config.
pub fn escape_macros(text: &str) -> String {
    if !text.contains("${") {
        return text.to_string();
    }
    let atoms: Vec<Atom<'_>> = text.chars().map(Atom::Lit).collect();
    encode(&atoms)
}

/// [`escape_macros`] on every string value of a document (object keys are left as
/// they are: the agent does not expand them).
pub fn escape_macros_in(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(escape_macros(s)),
        Value::Array(items) => Value::Array(items.iter().map(escape_macros_in).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), escape_macros_in(x)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Parses a `--template-var` flag: `NAME:TYPE[=DEFAULT][,min=N][,max=N][,enum=a|b|c]
/// [,description=TEXT]` (such as `gpus:int=1,min=0,max=8` or
/// `size:string=small,enum=small|large`), or the same variable as JSON
/// (`{"name": "gpus", "type": "int", …}`, recognised by its leading `{`). The
/// description runs to the end of the spec, so it may hold commas; a default or enum
/// value holding a comma needs the JSON form. The variable is checked as
/// [`check_definitions`] does.
pub fn parse_spec(spec: &str) -> Result<TemplateVariable, String> {
    let trimmed = spec.trim();
    let var = if trimmed.starts_with('{') {
        serde_json::from_str::<TemplateVariable>(trimmed)
            .map_err(|e| format!("invalid template variable JSON: {e}"))?
    } else {
        parse_compact(trimmed)?
    };
    check_definitions(std::slice::from_ref(&var)).map_err(|problems| {
        problems
            .into_iter()
            .map(|p| p.message)
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    Ok(var)
}

fn parse_compact(spec: &str) -> Result<TemplateVariable, String> {
    let err = |msg: String| Err(format!("in template variable spec `{spec}`: {msg}"));
    if spec.is_empty() {
        return err("empty spec; expected NAME:TYPE[=DEFAULT][,min=N][,max=N][,enum=a|b|c][,description=TEXT]".into());
    }
    let (body, description) = match spec.find(",description=") {
        Some(i) => (
            &spec[..i],
            Some(spec[i + ",description=".len()..].to_string()),
        ),
        None => (spec, None),
    };
    let mut parts = body.split(',');
    let head = parts.next().unwrap_or_default();
    let Some((name, rest)) = head.split_once(':') else {
        return err(format!(
            "`{head}` has no type; expected NAME:TYPE[=DEFAULT], such as gpus:int=1"
        ));
    };
    let name = name.trim();
    if name.is_empty() {
        return err("the name before `:` is empty".into());
    }
    let (kind_text, default_text) = match rest.split_once('=') {
        Some((k, d)) => (k.trim(), Some(d)),
        None => (rest.trim(), None),
    };
    let kind = match kind_text {
        "string" | "str" => VarType::String,
        "int" | "integer" => VarType::Int,
        "float" | "number" => VarType::Float,
        other => {
            return err(format!(
                "unknown type `{other}`; expected string, int or float"
            ));
        }
    };
    let mut var = TemplateVariable {
        name: name.to_string(),
        kind,
        default: None,
        min: None,
        max: None,
        choices: None,
        description,
    };
    if let Some(d) = default_text {
        match convert(kind, &Value::String(d.to_string())) {
            Ok(v) => var.default = Some(v),
            Err(why) => return err(format!("default `{d}` {why}")),
        }
    }
    let mut seen = BTreeSet::new();
    for part in parts {
        let Some((key, value)) = part.split_once('=') else {
            return err(format!(
                "option `{part}` has no value; expected min=N, max=N, enum=a|b|c or description=TEXT"
            ));
        };
        let key = key.trim();
        if !seen.insert(key.to_string()) {
            return err(format!("option `{key}` is given twice"));
        }
        match key {
            "min" | "max" => {
                let x = match value.trim().parse::<f64>() {
                    Ok(x) if x.is_finite() => x,
                    _ => return err(format!("{key} `{value}` is not a number")),
                };
                if key == "min" {
                    var.min = Some(x);
                } else {
                    var.max = Some(x);
                }
            }
            "enum" => {
                let mut choices = Vec::new();
                for item in value.split('|') {
                    match convert(kind, &Value::String(item.to_string())) {
                        Ok(v) => choices.push(v),
                        Err(why) => return err(format!("enum value `{item}` {why}")),
                    }
                }
                var.choices = Some(choices);
            }
            other => {
                return err(format!(
                    "unknown option `{other}`; expected min, max, enum or description"
                ));
            }
        }
    }
    Ok(var)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn var(spec: &str) -> TemplateVariable {
        parse_spec(spec).unwrap_or_else(|e| panic!("{spec}: {e}"))
    }

    /// A variable as JSON, unchecked (to build bad definitions).
    fn raw(v: Value) -> TemplateVariable {
        serde_json::from_value(v).expect("variable JSON")
    }

    fn messages(r: Result<impl std::fmt::Debug, Vec<TemplateProblem>>) -> Vec<String> {
        match r {
            Ok(_) => Vec::new(),
            Err(ps) => ps.into_iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn parse_spec_accepts() {
        let cases: &[(&str, Value)] = &[
            ("gpus:int", json!({"name": "gpus", "type": "int"})),
            (
                "gpus:int=1,min=0,max=8",
                json!({"name": "gpus", "type": "int", "default": 1, "min": 0.0, "max": 8.0}),
            ),
            (
                "size:string=small,enum=small|large",
                json!({"name": "size", "type": "string", "default": "small", "enum": ["small", "large"]}),
            ),
            (
                "lr:float=0.5,max=1",
                json!({"name": "lr", "type": "float", "default": 0.5, "max": 1.0}),
            ),
            (
                "n:int,enum=1|2|4",
                json!({"name": "n", "type": "int", "enum": [1, 2, 4]}),
            ),
            (
                "tag:string=",
                json!({"name": "tag", "type": "string", "default": ""}),
            ),
            (
                "zone:string=eu,description=Where to run, as a region",
                json!({"name": "zone", "type": "string", "default": "eu", "description": "Where to run, as a region"}),
            ),
            (
                r#"{"name": "gpus", "type": "int", "default": 2, "min": 0}"#,
                json!({"name": "gpus", "type": "int", "default": 2, "min": 0.0}),
            ),
            (" _x9:str ", json!({"name": "_x9", "type": "string"})),
        ];
        for (spec, want) in cases {
            let got = serde_json::to_value(var(spec)).unwrap();
            assert_eq!(&got, want, "{spec}");
        }
    }

    #[test]
    fn parse_spec_refuses() {
        let cases: &[(&str, &str)] = &[
            (
                "",
                "in template variable spec ``: empty spec; expected NAME:TYPE[=DEFAULT][,min=N][,max=N][,enum=a|b|c][,description=TEXT]",
            ),
            (
                "gpus",
                "in template variable spec `gpus`: `gpus` has no type; expected NAME:TYPE[=DEFAULT], such as gpus:int=1",
            ),
            (
                "gpus:integr",
                "in template variable spec `gpus:integr`: unknown type `integr`; expected string, int or float",
            ),
            (
                ":int",
                "in template variable spec `:int`: the name before `:` is empty",
            ),
            (
                "gpus:int=x",
                "in template variable spec `gpus:int=x`: default `x` is not an int",
            ),
            (
                "gpus:int=1.5",
                "in template variable spec `gpus:int=1.5`: default `1.5` is not an int",
            ),
            (
                "lr:float=fast",
                "in template variable spec `lr:float=fast`: default `fast` is not a float",
            ),
            (
                "gpus:int,min=a",
                "in template variable spec `gpus:int,min=a`: min `a` is not a number",
            ),
            (
                "gpus:int,step=2",
                "in template variable spec `gpus:int,step=2`: unknown option `step`; expected min, max, enum or description",
            ),
            (
                "gpus:int,min",
                "in template variable spec `gpus:int,min`: option `min` has no value; expected min=N, max=N, enum=a|b|c or description=TEXT",
            ),
            (
                "gpus:int,min=1,min=2",
                "in template variable spec `gpus:int,min=1,min=2`: option `min` is given twice",
            ),
            (
                "n:int,enum=1|two",
                "in template variable spec `n:int,enum=1|two`: enum value `two` is not an int",
            ),
            (
                "gpus:int=9,max=8",
                "template variable `gpus`: default value 9 for `gpus` is above its max 8",
            ),
            (
                "gpus:int,min=8,max=0",
                "template variable `gpus`: min 8 is above max 0",
            ),
            (
                "size:string,min=1",
                "template variable `size`: min applies only to int and float variables, not string",
            ),
            (
                "2x:int",
                "template variable name \"2x\" is not valid: use letters, digits and `_`, not starting with a digit",
            ),
            (
                "s:string=xl,enum=s|m",
                "template variable `s`: default value \"xl\" for `s` is not one of s|m",
            ),
            (
                r#"{"name": "g", "type": "int", "maximum": 3}"#,
                "invalid template variable JSON: unknown field `maximum`, expected one of `name`, `type`, `default`, `min`, `max`, `enum`, `description` at line 1 column 38",
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(parse_spec(spec).unwrap_err(), *want, "{spec}");
        }
    }

    #[test]
    fn definitions() {
        let cases: Vec<(Vec<TemplateVariable>, Vec<&str>)> = vec![
            (
                vec![
                    var("gpus:int=1,min=0,max=8"),
                    var("size:string=small,enum=small|large"),
                ],
                vec![],
            ),
            (
                vec![var("a:int"), var("a:string")],
                vec!["template variable `a` is defined more than once"],
            ),
            (
                vec![raw(json!({"name": "a-b", "type": "int", "default": "1"}))],
                vec![
                    "template variable name \"a-b\" is not valid: use letters, digits and `_`, not starting with a digit",
                    "template variable `a-b`: default \"1\" is not an int",
                ],
            ),
            (
                vec![raw(
                    json!({"name": "g", "type": "int", "min": 0.5, "max": 0.25, "default": 1.5}),
                )],
                vec![
                    "template variable `g`: min 0.5 of an int variable must be a whole number",
                    "template variable `g`: max 0.25 of an int variable must be a whole number",
                    "template variable `g`: min 0.5 is above max 0.25",
                    "template variable `g`: default 1.5 is not an int",
                ],
            ),
            (
                vec![raw(
                    json!({"name": "g", "type": "int", "enum": [1, "2", 3, 1, 20], "max": 10}),
                )],
                vec![
                    "template variable `g`: enum value \"2\" is not an int",
                    "template variable `g`: enum value 1 is listed twice",
                    "template variable `g`: enum value 20 for `g` is above its max 10",
                ],
            ),
            (
                vec![raw(
                    json!({"name": "s", "type": "string", "enum": [], "default": 3}),
                )],
                vec![
                    "template variable `s`: enum must list at least one value",
                    "template variable `s`: default 3 is not a string",
                ],
            ),
            (
                vec![raw(
                    json!({"name": "f", "type": "float", "default": 2, "min": 0, "max": 1}),
                )],
                vec!["template variable `f`: default value 2 for `f` is above its max 1"],
            ),
        ];
        for (vars, want) in cases {
            assert_eq!(messages(check_definitions(&vars)), want, "{vars:?}");
        }
    }

    #[test]
    fn finds_placeholders() {
        let config = json!({
            "a": "{{x}}",
            "b": ["pre-{{ y }}-post", "{{x}}{{z}}"],
            "{{ k }}": {"deep": [{"c": "{{w}}"}]},
            "n": 3,
            "not": "{{}} { {a}} {{ }} {x}",
        });
        let got: Vec<String> = placeholders(&config).into_iter().collect();
        assert_eq!(got, ["k", "w", "x", "y", "z"]);
    }

    #[test]
    fn usage() {
        let vars = vec![var("x:int"), var("y:string")];
        let config =
            json!({"spec": {"n": "{{x}}", "labels": {"{{team}}": "{{ y }}"}, "l": ["{{gpu}}"]}});
        assert_eq!(
            messages(check_usage(&vars, &config)),
            [
                "placeholder `{{team}}` at spec.labels[\"{{team}}\"] has no template variable definition (defined: x, y)",
                "placeholder `{{gpu}}` at spec.l[0] has no template variable definition (defined: x, y)",
            ]
        );
        assert_eq!(
            messages(check_usage(&[], &json!("{{a}}"))),
            [
                "placeholder `{{a}}` at the document root has no template variable definition (the queue defines no template variables)"
            ]
        );
        assert!(check_usage(&vars, &json!({"a": "{{ x }}-{{y}}"})).is_ok());
    }

    #[test]
    fn resolves() {
        let vars = vec![
            var("gpus:int,min=0,max=8"),
            var("size:string=small,enum=small|large"),
            var("lr:float=0.1"),
        ];
        let given = |pairs: &[(&str, Value)]| -> BTreeMap<String, Value> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
        };
        let ok =
            resolve_values(&vars, &given(&[("gpus", json!("8")), ("lr", json!("0.5"))])).unwrap();
        assert_eq!(
            serde_json::to_value(&ok).unwrap(),
            json!({"gpus": 8, "lr": 0.5, "size": "small"})
        );
        let ok = resolve_values(
            &vars,
            &given(&[
                ("gpus", json!(2)),
                ("size", json!("large")),
                ("lr", json!(1)),
            ]),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&ok).unwrap(),
            json!({"gpus": 2, "lr": 1.0, "size": "large"})
        );

        let cases: Vec<(BTreeMap<String, Value>, Vec<&str>)> = vec![
            (
                given(&[]),
                vec![
                    "missing value for template variable `gpus` (int, min 0, max 8): pass --set-var gpus=VALUE",
                ],
            ),
            (
                given(&[("gpus", json!(16))]),
                vec!["value 16 for `gpus` is above its max 8"],
            ),
            (
                given(&[("gpus", json!("-1"))]),
                vec!["value -1 for `gpus` is below its min 0"],
            ),
            (
                given(&[("gpus", json!("abc"))]),
                vec!["value \"abc\" for `gpus` is not an int"],
            ),
            (
                given(&[("gpus", json!(1.5))]),
                vec!["value 1.5 for `gpus` is not an int"],
            ),
            (
                given(&[
                    ("gpus", json!(1)),
                    ("size", json!("huge")),
                    ("lr", json!("x")),
                    ("gpu", json!(1)),
                ]),
                vec![
                    "unknown template variable `gpu`; known: gpus, size, lr",
                    "value \"huge\" for `size` is not one of small|large",
                    "value \"x\" for `lr` is not a float",
                ],
            ),
        ];
        for (g, want) in cases {
            assert_eq!(messages(resolve_values(&vars, &g)), want, "{g:?}");
        }
        assert_eq!(
            messages(resolve_values(&[], &given(&[("a", json!(1))]))),
            ["unknown template variable `a`: this queue has no template variables"]
        );
        let enum_int = vec![var("n:int,enum=1|2|4")];
        assert_eq!(
            messages(resolve_values(&enum_int, &given(&[("n", json!("3"))]))),
            ["value 3 for `n` is not one of 1|2|4"]
        );
        assert!(resolve_values(&enum_int, &given(&[("n", json!("4"))])).is_ok());
    }

    #[test]
    fn substitutes() {
        let values: BTreeMap<String, Value> = [
            ("n", json!(3)),
            ("lr", json!(0.5)),
            ("team", json!("ml")),
            ("x", json!("a{{n}}")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let config = json!({
            "replicas": "{{n}}",
            "spaced": " {{ lr }} ",
            "name": "job-{{team}}-{{n}}",
            "labels": {"team-{{team}}": "yes", "{{team}}": "{{ team }}"},
            "args": ["--lr={{lr}}", "{{missing}}", "{{x}}"],
            "keep": 7,
        });
        assert_eq!(
            substitute(&config, &values),
            json!({
                "replicas": 3,
                "spaced": 0.5,
                "name": "job-ml-3",
                "labels": {"team-ml": "yes", "ml": "ml"},
                "args": ["--lr=0.5", "{{missing}}", "a{{n}}"],
                "keep": 7,
            })
        );
        assert_eq!(substitute(&config, &BTreeMap::new()), config);
    }

    fn arb_config(names: Vec<&'static str>) -> impl Strategy<Value = Value> {
        let piece = prop_oneof![
            "[a-z /:.-]{0,6}".prop_map(|s| s),
            proptest::sample::select(names).prop_map(|n| format!("{{{{{n}}}}}")),
            proptest::sample::select(vec!["a", "b", "c"]).prop_map(|n| format!("{{{{ {n} }}}}")),
        ];
        let string = proptest::collection::vec(piece, 0..4).prop_map(|ps| ps.concat());
        let leaf = prop_oneof![
            string.clone().prop_map(Value::String),
            any::<i32>().prop_map(Value::from),
            any::<bool>().prop_map(Value::Bool),
            Just(Value::Null),
        ];
        leaf.prop_recursive(4, 40, 5, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::vec((string.clone(), inner), 0..5)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    fn keys_collide(config: &Value, values: &BTreeMap<String, Value>) -> bool {
        match config {
            Value::Array(items) => items.iter().any(|v| keys_collide(v, values)),
            Value::Object(m) => {
                let keys: BTreeSet<String> = m.keys().map(|k| substitute_text(k, values)).collect();
                keys.len() != m.len() || m.values().any(|v| keys_collide(v, values))
            }
            _ => false,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn substitute_round_trip(
            config in arb_config(vec!["a", "b", "c", "d"]),
            a in any::<i32>(),
            b in "[a-z0-9]{0,5}",
        ) {
            let values: BTreeMap<String, Value> =
                [("a".to_string(), json!(a)), ("b".to_string(), json!(b.clone()))].into_iter().collect();
            // Two keys that become the same key lose an entry (documented); skip those.
            prop_assume!(!keys_collide(&config, &values));
            let before = placeholders(&config);
            let after = substitute(&config, &values);
            let expected: BTreeSet<String> =
                before.iter().filter(|n| !values.contains_key(*n)).cloned().collect();
            // Substituted placeholders are gone, the others are all still there.
            prop_assert_eq!(placeholders(&after), expected);
            // No values: nothing changes.
            prop_assert_eq!(&substitute(&config, &BTreeMap::new()), &config);
            // Substituting again changes nothing more.
            prop_assert_eq!(&substitute(&after, &values), &after);
            // Every defined variable used is accepted by check_usage.
            let vars: Vec<TemplateVariable> = before
                .iter()
                .map(|n| TemplateVariable {
                    name: n.clone(),
                    kind: VarType::String,
                    default: None,
                    min: None,
                    max: None,
                    choices: None,
                    description: None,
                })
                .collect();
            prop_assert!(check_usage(&vars, &config).is_ok());
        }

        #[test]
        fn exact_placeholder_becomes_typed(n in any::<i64>(), spaces in "[ ]{0,2}") {
            let config = json!({"k": [format!("{spaces}{{{{{spaces}n{spaces}}}}}{spaces}")]});
            let values: BTreeMap<String, Value> = [("n".to_string(), json!(n))].into_iter().collect();
            prop_assert_eq!(substitute(&config, &values), json!({"k": [n]}));
        }

        #[test]
        fn parse_spec_round_trips(
            name in "[A-Za-z_][A-Za-z0-9_]{0,8}",
            lo in -100i64..100,
            span in 0i64..100,
            pick in 0i64..100,
        ) {
            let hi = lo + span;
            let default = lo + pick % (span + 1);
            let spec = format!("{name}:int={default},min={lo},max={hi}");
            let v = parse_spec(&spec).map_err(TestCaseError::fail)?;
            prop_assert_eq!(&v.default, &Some(json!(default)));
            let again = parse_spec(&serde_json::to_string(&v).unwrap()).map_err(TestCaseError::fail)?;
            prop_assert_eq!(again, v);
        }
    }
}
