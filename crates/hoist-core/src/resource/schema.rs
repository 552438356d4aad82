//! Shared machinery of the queue-config schema checks: typed reads that record a
//! [`ConfigProblem`] with its path instead of stopping, object field dispatch with
//! unknown-field detection and typo suggestions, and hoist `${…}` macros.
//!
//! Conventions every checker follows:
//! - type mismatches read `expected string, found number`;
//! - a string containing a macro (`${run_id}`) is accepted wherever a string is, and
//!   its format is not checked (the agent checks again after substituting);
//! - where a number or a boolean is expected, a string that is exactly one macro
//!   (`"${GPU_COUNT}"`) is accepted too;
//! - unknown fields read ``unknown field `imagee`; did you mean `image`?`` or
//!   ``unknown field `foo`; expected one of `a`, `b```.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

use super::path::{ConfigProblem, PathStep, index_path, key_path, path_steps};

static EXACT_MACRO: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$").expect("macro regex"));

/// True when `s` contains a hoist macro such as `${run_id}` or `${MY_ENV}` that the
/// agent would expand (not the literal `$${run_id}`).
pub(crate) fn has_macro(s: &str) -> bool {
    crate::template::contains_macro(s)
}

/// True when `s` is exactly one macro, e.g. `${GPU_COUNT}`.
pub(crate) fn is_macro(s: &str) -> bool {
    EXACT_MACRO.is_match(s)
}

/// The JSON kind of a value as messages name it.
pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

/// A string JSON-quoted for a message, shortened past 80 characters.
pub(crate) fn quote(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() > MAX {
        let head: String = s.chars().take(MAX).collect();
        let q = serde_json::to_string(&head).unwrap_or_default();
        format!("{}…\"", &q[..q.len() - 1])
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

/// A scalar value as a message shows it: numbers and booleans as written, strings
/// quoted, other values by their kind.
pub(crate) fn show(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::String(s) => quote(s),
        other => kind_of(other).to_string(),
    }
}

/// `` `a`, `b`, `c` ``.
pub(crate) fn one_of(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| {
            if n.is_empty() {
                "\"\"".to_string()
            } else {
                format!("`{n}`")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn loose(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '-' && *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// The candidate closest to `word` when it is an obvious typo: the same ignoring case,
/// `-` and `_`, or within edit distance 2 (1 for words of up to 4 letters; a swap of
/// two letters is one edit).
pub(crate) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let w = loose(word);
    if w.is_empty() {
        return None;
    }
    let limit = if w.chars().count() <= 4 { 1 } else { 2 };
    candidates
        .iter()
        .map(|c| (crate::names::edit_distance(&w, &loose(c)), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// How the keys of an object are spelled, and which spellings are the same field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyStyle {
    /// Keys must match exactly (Kubernetes, SageMaker).
    Exact,
    /// Canonical names are kebab-case; `snake_case` is the same key (docker options).
    Kebab,
    /// Canonical names are snake_case; `camelCase` and `kebab-case` are the same key
    /// (Vertex AI, local-process).
    Snake,
}

impl KeyStyle {
    pub fn normalize(self, key: &str) -> Cow<'_, str> {
        match self {
            KeyStyle::Exact => Cow::Borrowed(key),
            KeyStyle::Kebab => {
                if key.contains('_') {
                    Cow::Owned(key.replace('_', "-"))
                } else {
                    Cow::Borrowed(key)
                }
            }
            KeyStyle::Snake => {
                if key.chars().any(|c| c.is_ascii_uppercase() || c == '-') {
                    let mut out = String::with_capacity(key.len() + 4);
                    for c in key.chars() {
                        if c.is_ascii_uppercase() {
                            if !out.is_empty() && !out.ends_with('_') {
                                out.push('_');
                            }
                            out.push(c.to_ascii_lowercase());
                        } else if c == '-' {
                            out.push('_');
                        } else {
                            out.push(c);
                        }
                    }
                    Cow::Owned(out)
                } else {
                    Cow::Borrowed(key)
                }
            }
        }
    }
}

/// A known field found in an object: its canonical name, its value and its path.
pub(crate) struct Field<'v> {
    pub name: &'static str,
    pub value: &'v Value,
    pub path: String,
}

/// Finds a field by canonical name.
pub(crate) fn get<'a, 'v>(fields: &'a [Field<'v>], name: &str) -> Option<&'a Field<'v>> {
    fields.iter().find(|f| f.name == name)
}

/// The outcome of reading a scalar.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Got<T> {
    /// The value, of the expected type and format.
    Val(T),
    /// A macro stands here; its value is known only once the agent substitutes it.
    Macro,
    /// A problem was recorded.
    Bad,
}

impl<T> Got<T> {
    /// The value when there is one.
    pub fn ok(self) -> Option<T> {
        match self {
            Got::Val(v) => Some(v),
            _ => None,
        }
    }
}

/// Collects problems while a checker walks a document.
pub(crate) struct Checker {
    pub problems: Vec<ConfigProblem>,
    /// Accept `${…}` macros (true when checking a stored queue config; false when
    /// parsing a config whose macros were substituted).
    pub macros: bool,
    /// A field whose value is `null` counts as absent (as the Kubernetes API server
    /// treats it).
    pub null_is_absent: bool,
}

impl Checker {
    /// A checker that accepts macros and reports `null` values.
    pub fn new() -> Self {
        Checker {
            problems: Vec::new(),
            macros: true,
            null_is_absent: false,
        }
    }

    /// Records a problem.
    pub fn report(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(ConfigProblem::new(path, message));
    }

    /// Records `expected {expected}, found {kind}`, with a hint when a string holds
    /// what was expected.
    pub fn type_error(&mut self, path: &str, expected: &str, v: &Value) {
        let mut msg = format!("expected {expected}, found {}", kind_of(v));
        if let Value::String(s) = v {
            let t = s.trim();
            let numeric = t.parse::<f64>().is_ok_and(f64::is_finite);
            let boolean = t == "true" || t == "false";
            if ((expected.starts_with("integer") || expected.starts_with("number")) && numeric)
                || (expected.starts_with("boolean") && boolean)
            {
                msg.push_str(&format!(" {}; write it without quotes", quote(s)));
            }
        }
        self.report(path, msg);
    }

    /// An object, or a recorded problem.
    pub fn object<'v>(&mut self, v: &'v Value, path: &str) -> Option<&'v Map<String, Value>> {
        match v {
            Value::Object(m) => Some(m),
            other => {
                self.type_error(path, "object", other);
                None
            }
        }
    }

    /// A list, or a recorded problem.
    pub fn list<'v>(&mut self, v: &'v Value, path: &str) -> Option<&'v [Value]> {
        match v {
            Value::Array(a) => Some(a),
            other => {
                self.type_error(path, "list", other);
                None
            }
        }
    }

    /// A string (macros included), or a recorded problem.
    pub fn string<'v>(&mut self, v: &'v Value, path: &str) -> Option<&'v str> {
        match v {
            Value::String(s) => Some(s),
            other => {
                self.type_error(path, "string", other);
                None
            }
        }
    }

    /// A non-empty string.
    pub fn nonempty<'v>(&mut self, v: &'v Value, path: &str) -> Option<&'v str> {
        let s = self.string(v, path)?;
        if s.trim().is_empty() {
            self.report(path, "must not be empty");
            return None;
        }
        Some(s)
    }

    /// A string whose format `check` accepts (not checked when it contains a macro).
    /// `check` returns the message of the problem.
    pub fn formatted<'v>(
        &mut self,
        v: &'v Value,
        path: &str,
        check: impl FnOnce(&str) -> Result<(), String>,
    ) -> Got<&'v str> {
        let Some(s) = self.string(v, path) else {
            return Got::Bad;
        };
        if self.macros && has_macro(s) {
            return Got::Macro;
        }
        match check(s) {
            Ok(()) => Got::Val(s),
            Err(msg) => {
                self.report(path, msg);
                Got::Bad
            }
        }
    }

    /// A string matching `re` (anchored by the caller); `what` describes the format.
    pub fn matching<'v>(
        &mut self,
        v: &'v Value,
        path: &str,
        re: &Regex,
        what: &str,
    ) -> Got<&'v str> {
        self.formatted(v, path, |s| {
            if re.is_match(s) {
                Ok(())
            } else {
                Err(format!("expected {what}, found {}", quote(s)))
            }
        })
    }

    fn macro_scalar(&mut self, v: &Value) -> bool {
        self.macros && matches!(v, Value::String(s) if is_macro(s))
    }

    /// A boolean, or a string that is exactly one macro.
    pub fn bool(&mut self, v: &Value, path: &str) -> Got<bool> {
        match v {
            Value::Bool(b) => Got::Val(*b),
            _ if self.macro_scalar(v) => Got::Macro,
            other => {
                self.type_error(path, "boolean", other);
                Got::Bad
            }
        }
    }

    fn range_check(&mut self, path: &str, n: i64, min: i64, max: i64) -> Got<i64> {
        if n < min {
            self.report(path, format!("must be at least {min}, found {n}"));
            Got::Bad
        } else if n > max {
            self.report(path, format!("must be at most {max}, found {n}"));
            Got::Bad
        } else {
            Got::Val(n)
        }
    }

    /// An integer in `min..=max`, or a string that is exactly one macro.
    pub fn int(&mut self, v: &Value, path: &str, min: i64, max: i64) -> Got<i64> {
        match v {
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    self.range_check(path, i, min, max)
                } else if n.is_u64() {
                    self.report(path, format!("must be at most {max}, found {n}"));
                    Got::Bad
                } else {
                    self.report(path, format!("expected integer, found {n}"));
                    Got::Bad
                }
            }
            _ if self.macro_scalar(v) => Got::Macro,
            other => {
                self.type_error(path, "integer", other);
                Got::Bad
            }
        }
    }

    /// Like [`Checker::int`], also accepting a decimal string (`"3"`), as protobuf's
    /// JSON mapping does for 64-bit integers.
    pub fn int_or_string(&mut self, v: &Value, path: &str, min: i64, max: i64) -> Got<i64> {
        match v {
            Value::String(s) if !(self.macros && is_macro(s)) => match s.trim().parse::<i64>() {
                Ok(i) => self.range_check(path, i, min, max),
                Err(_) => {
                    self.report(path, format!("expected integer, found string {}", quote(s)));
                    Got::Bad
                }
            },
            _ => self.int(v, path, min, max),
        }
    }

    /// A number, or a string that is exactly one macro.
    pub fn number(&mut self, v: &Value, path: &str) -> Got<f64> {
        match v {
            Value::Number(n) => Got::Val(n.as_f64().unwrap_or(f64::NAN)),
            _ if self.macro_scalar(v) => Got::Macro,
            other => {
                self.type_error(path, "number", other);
                Got::Bad
            }
        }
    }

    /// One of the `allowed` strings (a macro is accepted).
    pub fn enumerated<'v>(&mut self, v: &'v Value, path: &str, allowed: &[&str]) -> Got<&'v str> {
        self.formatted(v, path, |s| {
            if allowed.contains(&s) {
                return Ok(());
            }
            Err(match closest(s, allowed) {
                Some(c) => format!("unknown value {}; did you mean `{c}`?", quote(s)),
                None => format!("expected one of {}, found {}", one_of(allowed), quote(s)),
            })
        })
    }

    /// A list of strings; returns the strings that are strings.
    pub fn string_list<'v>(&mut self, v: &'v Value, path: &str) -> Vec<&'v str> {
        let mut out = Vec::new();
        if let Some(items) = self.list(v, path) {
            for (i, item) in items.iter().enumerate() {
                if let Some(s) = self.string(item, &index_path(path, i)) {
                    out.push(s);
                }
            }
        }
        out
    }

    /// Calls `f` on each item of a list, with the item's path.
    pub fn each<'v>(
        &mut self,
        v: &'v Value,
        path: &str,
        mut f: impl FnMut(&mut Self, &'v Value, &str),
    ) {
        if let Some(items) = self.list(v, path) {
            for (i, item) in items.iter().enumerate() {
                f(self, item, &index_path(path, i));
            }
        }
    }

    /// Calls `f` on each item of a list that is an object.
    pub fn each_object<'v>(
        &mut self,
        v: &'v Value,
        path: &str,
        mut f: impl FnMut(&mut Self, &'v Map<String, Value>, &str),
    ) {
        self.each(v, path, |c, item, p| {
            if let Some(m) = c.object(item, p) {
                f(c, m, p);
            }
        });
    }

    /// Checks that a value is an object or a list of objects without looking inside
    /// (for deep, rarely written structures).
    pub fn object_list_shape(&mut self, v: &Value, path: &str) {
        self.each_object(v, path, |_, _, _| {});
    }

    /// An object whose values are strings (`labels`, `nodeSelector`, …); calls
    /// `check` on each key and string value with the entry's path.
    pub fn string_map<'v>(
        &mut self,
        v: &'v Value,
        path: &str,
        mut check: impl FnMut(&mut Self, &'v str, &'v str, &str),
    ) {
        if let Some(m) = self.object(v, path) {
            for (k, val) in m {
                let p = key_path(path, k);
                if let Some(s) = self.string(val, &p) {
                    check(self, k, s, &p);
                }
            }
        }
    }

    /// The known fields of an object, in document order. Unknown keys are recorded as
    /// problems (with a suggestion when one is an obvious typo), and so is the same
    /// field spelled twice (`machine_type` and `machineType`).
    pub fn fields<'v>(
        &mut self,
        obj: &'v Map<String, Value>,
        path: &str,
        known: &[&'static str],
        style: KeyStyle,
    ) -> Vec<Field<'v>> {
        self.fields_with(obj, path, known, style, &[])
    }

    /// [`Checker::fields`] with extra spellings: `aliases` maps an alias (in the
    /// style's canonical spelling) to a name of `known`.
    pub fn fields_with<'v>(
        &mut self,
        obj: &'v Map<String, Value>,
        path: &str,
        known: &[&'static str],
        style: KeyStyle,
        aliases: &[(&str, &'static str)],
    ) -> Vec<Field<'v>> {
        self.fields_hinted(obj, path, known, style, aliases, &|_| None)
    }

    /// [`Checker::fields_with`] where `hint` may give the message for an unknown key
    /// (given in the style's canonical spelling), e.g. why an option is not supported.
    pub fn fields_hinted<'v>(
        &mut self,
        obj: &'v Map<String, Value>,
        path: &str,
        known: &[&'static str],
        style: KeyStyle,
        aliases: &[(&str, &'static str)],
        hint: &dyn Fn(&str) -> Option<String>,
    ) -> Vec<Field<'v>> {
        let mut found: Vec<(Field<'v>, &'v str)> = Vec::new();
        for (key, value) in obj {
            let p = key_path(path, key);
            if self.null_is_absent && value.is_null() {
                continue;
            }
            let norm = style.normalize(key);
            let name = known
                .iter()
                .find(|k| **k == norm)
                .copied()
                .or_else(|| aliases.iter().find(|(a, _)| *a == norm).map(|(_, n)| *n));
            match name {
                Some(name) => {
                    if let Some((_, first)) = found.iter().find(|(f, _)| f.name == name) {
                        let msg = format!(
                            "`{key}` is the same field as `{first}`, which is set already; set it once"
                        );
                        self.report(&p, msg);
                    } else {
                        found.push((
                            Field {
                                name,
                                value,
                                path: p,
                            },
                            key,
                        ));
                    }
                }
                None => {
                    if let Some(msg) = hint(&norm) {
                        self.report(&p, msg);
                        continue;
                    }
                    let mut candidates: Vec<&str> = known.to_vec();
                    candidates.extend(aliases.iter().map(|(a, _)| *a));
                    let msg = match closest(key, &candidates) {
                        Some(c) => format!("unknown field `{key}`; did you mean `{c}`?"),
                        None => format!("unknown field `{key}`; expected one of {}", one_of(known)),
                    };
                    self.report(&p, msg);
                }
            }
        }
        found.into_iter().map(|(f, _)| f).collect()
    }

    /// Records `missing required field` for each of `names` not among `fields`.
    pub fn require(&mut self, fields: &[Field<'_>], path: &str, names: &[&str]) {
        for name in names {
            if get(fields, name).is_none() {
                self.report(path, format!("missing required field `{name}`"));
            }
        }
    }

    /// Records a problem when more than one of `names` is set.
    pub fn at_most_one(&mut self, fields: &[Field<'_>], path: &str, names: &[&str]) {
        let set: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| get(fields, n).is_some())
            .collect();
        if set.len() > 1 {
            self.report(path, format!("only one of {} may be set", one_of(&set)));
        }
    }
}

/// The position of the value at `path` in the document: for each step, the index of
/// the key in its object or the index in its list. Steps that do not resolve end the
/// key (the problem then sorts with the last value that does).
fn document_position(config: &Value, path: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut cur = config;
    for step in path_steps(path) {
        let (i, next) = match (step, cur) {
            (PathStep::Index(i), Value::Array(items)) => match items.get(i) {
                Some(item) => (i, item),
                None => break,
            },
            (PathStep::Key(key), Value::Object(m)) => match m.iter().position(|(k, _)| *k == key) {
                Some(i) => (i, &m[&key]),
                None => break,
            },
            _ => break,
        };
        out.push(i);
        cur = next;
    }
    out
}

/// Sorts problems into document order (stable: problems at the same place keep the
/// order the checker found them in; a problem about an object comes before those
/// inside it).
pub(crate) fn sort_problems(config: &Value, problems: &mut [ConfigProblem]) {
    problems.sort_by_cached_key(|p| document_position(config, &p.path));
}

/// Reads environment variables given as a map (`K: V`; a `null` value passes the
/// variable through from the agent's environment), a list of `K=V` or `K` strings, or
/// one such string. Returns `(name, value)` pairs in document order.
pub(crate) fn env_entries(c: &mut Checker, v: &Value, path: &str) -> Vec<(String, Option<String>)> {
    fn check_name(c: &mut Checker, name: &str, path: &str) -> bool {
        if name.is_empty() {
            c.report(path, "environment variable name must not be empty");
            false
        } else if name.contains('\0') {
            c.report(path, "environment variable name must not contain NUL");
            false
        } else {
            true
        }
    }
    fn from_string(c: &mut Checker, s: &str, path: &str) -> Option<(String, Option<String>)> {
        let (name, value) = match s.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (s, None),
        };
        check_name(c, name, path).then(|| (name.to_string(), value))
    }
    let mut out = Vec::new();
    match v {
        Value::Object(m) => {
            for (k, val) in m {
                let p = key_path(path, k);
                if k.contains('=') {
                    c.report(
                        &p,
                        format!("environment variable name `{k}` must not contain `=`"),
                    );
                    continue;
                }
                if !check_name(c, k, &p) {
                    continue;
                }
                match val {
                    Value::String(s) => out.push((k.clone(), Some(s.clone()))),
                    Value::Number(n) => out.push((k.clone(), Some(n.to_string()))),
                    Value::Bool(b) => out.push((k.clone(), Some(b.to_string()))),
                    Value::Null => out.push((k.clone(), None)),
                    other => c.type_error(&p, "string", other),
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let p = index_path(path, i);
                if let Some(s) = c.string(item, &p)
                    && let Some(e) = from_string(c, s, &p)
                {
                    out.push(e);
                }
            }
        }
        Value::String(s) => {
            if let Some(e) = from_string(c, s, path) {
                out.push(e);
            }
        }
        other => c.type_error(path, "object or list of \"NAME=VALUE\" strings", other),
    }
    out
}

/// The entries of an `env` value (as [`env_entries`] reads it) that pass a variable
/// through from the agent's environment: `NAME` without `=` in a list or a string, a
/// `null` value in a map. Returns `(path, name)` pairs in document order.
pub(crate) fn env_passthrough_entries(v: &Value, path: &str) -> Vec<(String, String)> {
    match v {
        Value::Object(m) => m
            .iter()
            .filter(|(_, val)| val.is_null())
            .map(|(k, _)| (key_path(path, k), k.clone()))
            .collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let s = item.as_str()?;
                (!s.contains('=') && !s.is_empty()).then(|| (index_path(path, i), s.to_string()))
            })
            .collect(),
        Value::String(s) if !s.contains('=') && !s.is_empty() => {
            vec![(path.to_string(), s.clone())]
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn macros() {
        assert!(has_macro("launch-${run_id}"));
        assert!(has_macro("${A}${B}"));
        assert!(!has_macro("$run_id"));
        assert!(!has_macro("${}"));
        // The agent's literal `${…}` is not a macro.
        assert!(!has_macro("$${run_id}"));
        assert!(has_macro("$$$${A}x${B}"));
        assert!(is_macro("${GPU_COUNT}"));
        assert!(!is_macro("${A}${B}"));
        assert!(!is_macro(" ${A}"));
    }

    #[test]
    fn typos() {
        let known = ["image", "imagePullPolicy", "name", "env", "envFrom"];
        assert_eq!(closest("imagee", &known), Some("image"));
        assert_eq!(closest("imagepullpolicy", &known), Some("imagePullPolicy"));
        assert_eq!(
            closest("image_pull_policy", &known),
            Some("imagePullPolicy")
        );
        assert_eq!(closest("nmae", &known), Some("name"));
        assert_eq!(closest("foo", &known), None);
        assert_eq!(closest("", &known), None);
    }

    #[test]
    fn styles() {
        assert_eq!(KeyStyle::Snake.normalize("imageUri"), "image_uri");
        assert_eq!(
            KeyStyle::Snake.normalize("restartJobOnWorkerRestart"),
            "restart_job_on_worker_restart"
        );
        assert_eq!(KeyStyle::Snake.normalize("working-dir"), "working_dir");
        assert_eq!(KeyStyle::Kebab.normalize("shm_size"), "shm-size");
        assert_eq!(KeyStyle::Exact.normalize("shm_size"), "shm_size");
    }

    #[test]
    fn reads() {
        let mut c = Checker::new();
        assert_eq!(c.int(&json!("${N}"), "a", 0, 5), Got::Macro);
        assert_eq!(c.int(&json!(7), "a", 0, 5), Got::Bad);
        assert_eq!(c.int(&json!(1.5), "b", 0, 5), Got::Bad);
        assert_eq!(c.int(&json!("3"), "c", 0, 5), Got::Bad);
        assert_eq!(c.int_or_string(&json!("3"), "d", 0, 5), Got::Val(3));
        assert_eq!(c.bool(&json!("true"), "e"), Got::Bad);
        let msgs: Vec<String> = c.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            msgs,
            [
                "a: must be at most 5, found 7",
                "b: expected integer, found 1.5",
                "c: expected integer, found string \"3\"; write it without quotes",
                "e: expected boolean, found string \"true\"; write it without quotes",
            ]
        );
        c.macros = false;
        assert_eq!(c.int(&json!("${N}"), "f", 0, 5), Got::Bad);
    }
}
