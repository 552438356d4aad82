//! A generic YAML tree that remembers where every node came from.
//!
//! Any YAML (or JSON) that parses at all parses into it. The agent reads its
//! `launch-config.yaml` through it, key by key, so that every problem in the file is
//! reported at once with its line and column; [`locate`] finds where a
//! [`ConfigProblem`](crate::resource::ConfigProblem)'s path is in a queue config's text.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::resource::path::{PathStep, path_steps};

/// A 1-based line and column (0 when unknown). The column counts characters (Unicode
/// scalar values), not bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

/// One YAML node.
#[derive(Debug, Clone)]
pub enum Node {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    /// Entries in document order.
    Map(Vec<(Spanned<Node>, Spanned<Node>)>),
}

impl Node {
    /// The text of a scalar (for keys written as numbers or booleans).
    pub fn scalar_text(&self) -> Option<String> {
        match self {
            Node::Null => Some("null".to_string()),
            Node::Bool(b) => Some(b.to_string()),
            Node::Int(i) => Some(i.to_string()),
            Node::Float(f) => Some(f.to_string()),
            Node::Str(s) => Some(s.clone()),
            Node::Seq(_) | Node::Map(_) => None,
        }
    }

    /// The node as JSON (for free-form sections such as `builder.kaniko-config`).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(i) => {
                if let Ok(v) = i64::try_from(*i) {
                    Value::from(v)
                } else if let Ok(v) = u64::try_from(*i) {
                    Value::from(v)
                } else {
                    Value::String(i.to_string())
                }
            }
            Node::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(f.to_string())),
            Node::Str(s) => Value::String(s.clone()),
            Node::Seq(items) => Value::Array(items.iter().map(|n| n.value.to_json()).collect()),
            Node::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| {
                        let key = k.value.scalar_text().unwrap_or_else(|| "?".to_string());
                        (key, v.value.to_json())
                    })
                    .collect(),
            ),
        }
    }
}

/// Where `s` is written (for a value reached through an alias, where the alias is).
pub fn pos_of<T>(s: &Spanned<T>) -> Pos {
    Pos {
        line: clamp(s.referenced.line()),
        column: clamp(s.referenced.column()),
    }
}

fn clamp(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        Ok(i128::try_from(v).map_or(Node::Float(v as f64), Node::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_char<E: de::Error>(self, v: char) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Node, E> {
        Ok(Node::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = a.next_element::<Spanned<Node>>()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = a.next_key::<Spanned<Node>>()? {
            let value = a.next_value::<Spanned<Node>>()?;
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

/// A document that is not YAML at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Deepest nesting of lists and mappings accepted. A launch config needs about 10
/// (a `kaniko-config` Job spec), a Kubernetes queue config about 12 (node affinity);
/// the limit keeps the recursive walk far from the end of a 2 MiB thread stack, even
/// in a debug build. ([`parse_document`](super::parse_document) accepts up to the
/// parser's default, 64.)
pub const MAX_DEPTH: usize = 32;

/// Parses `text` into a tree. On a syntax error, tab characters in indentation (the
/// usual cause when a config is pasted from a web page) are reported one per line;
/// otherwise the parser's own message.
pub fn parse(text: &str) -> Result<Spanned<Node>, Vec<SyntaxError>> {
    let max = super::MAX_DOCUMENT_BYTES;
    if text.len() > max {
        return Err(vec![SyntaxError {
            pos: Pos::default(),
            message: format!("the file is {} bytes; the limit is {max}", text.len()),
        }]);
    }
    let mut options = super::yaml_options();
    let mut budget = options.budget.take().unwrap_or_default();
    budget.max_depth = MAX_DEPTH;
    let max_nodes = budget.max_nodes;
    options.budget = Some(budget);
    match serde_saphyr::from_str_with_options::<Spanned<Node>>(text, options) {
        Ok(tree) => Ok(tree),
        Err(e) => {
            let markup = page_markup(text);
            if !markup.is_empty() {
                return Err(markup);
            }
            let pos = e
                .location()
                .map(|l| Pos {
                    line: clamp(l.line()),
                    column: clamp(l.column()),
                })
                .unwrap_or_default();
            let raw = e.to_string();
            // The budget's own words are Rust debug output (`Nodes { nodes: 250001 }`):
            // say what it means. Very deep flow collections trip the parser's own
            // recursion limit before the depth budget.
            let message = if raw.contains("budget breached: Depth")
                || raw.contains("recursion limit exceeded")
            {
                format!("the document nests deeper than {MAX_DEPTH} levels")
            } else if [
                "budget breached: Nodes",
                "budget breached: Aliases",
                "budget breached: Events",
            ]
            .iter()
            .any(|b| raw.contains(b))
            {
                format!(
                    "the document expands to more than {max_nodes} values; aliases (`*name`) that repeat aliases multiply what is read: write the values out"
                )
            } else if raw.contains("budget breached:") {
                "the document is too large to read (too many anchors, documents, merge keys or bytes)"
                    .to_string()
            } else {
                format!("invalid YAML: {}", clean_parser_message(&raw))
            };
            Err(vec![SyntaxError { pos, message }])
        }
    }
}

/// What a config copied from a web page often carries and YAML refuses: tabs in
/// indentation, and `// highlight-start`-style lines.
fn page_markup(text: &str) -> Vec<SyntaxError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let indent = line
            .char_indices()
            .take_while(|(_, c)| *c == ' ' || *c == '\t')
            .find(|(_, c)| *c == '\t');
        if let Some((byte, _)) = indent {
            let column = line[..byte].chars().count() + 1;
            out.push(SyntaxError {
                pos: Pos {
                    line: line_no,
                    column: u32::try_from(column).unwrap_or(u32::MAX),
                },
                message: "tab character in indentation; YAML indents with spaces only".to_string(),
            });
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            let column = line.chars().count() - trimmed.chars().count() + 1;
            let shown: String = trimmed.trim_end().chars().take(40).collect();
            out.push(SyntaxError {
                pos: Pos {
                    line: line_no,
                    column: u32::try_from(column).unwrap_or(u32::MAX),
                },
                message: format!(
                    "{shown:?} is not YAML (page markup?); remove the line (YAML comments start with #)"
                ),
            });
        }
    }
    out
}

/// The parser's first line without its trailing " at line L, column C" (the location
/// is printed in front instead) and without its hints for Rust programmers.
fn clean_parser_message(msg: &str) -> String {
    let first = msg.lines().next().unwrap_or("").trim();
    let first = match first.rfind(" at line ") {
        Some(i) => &first[..i],
        None => first,
    };
    let first = match first.find(", set DuplicateKeyPolicy") {
        Some(i) => &first[..i],
        None => first,
    };
    let first = match first.find("; use from_str_multiple") {
        Some(i) => &first[..i],
        None => first,
    };
    if first.is_empty() {
        "cannot parse the document".to_string()
    } else {
        first.to_string()
    }
}

/// Where the node at `path` (written as [`ConfigProblem`](crate::resource::ConfigProblem)
/// paths are: `spec.template.spec.containers[0].image`, `metadata.labels["a.b/c"]`,
/// `[2]`; `""` is the document) starts in `text`, YAML or JSON. A mapping's entry is
/// located at its key (the line `image: …` is on, also when the value is a block that
/// starts on the next line), a list's item at the item, the document at its first
/// node (line 1, column 1 when it has none).
///
/// When the path goes further than the document (a missing key, an index past the end,
/// a step into a scalar), or has a step that cannot be read, the position is that of
/// the nearest ancestor that exists: a "missing required field" problem points at the
/// mapping that should hold the field.
///
/// `None` when `text` does not parse into a tree ([`parse`]: it is not YAML, or nests
/// deeper than [`MAX_DEPTH`]). Keys are matched exactly, as
/// [`parse_document`](super::parse_document) reads them: a key written as a number or
/// boolean (`1:`, `0x10:`) is matched by the text it is written with.
pub fn locate(text: &str, path: &str) -> Option<Pos> {
    let tree = parse(text).ok()?;
    Some(locate_in(&tree, path))
}

/// [`locate`] in a tree already parsed (to locate many paths in one document).
pub fn locate_in(tree: &Spanned<Node>, path: &str) -> Pos {
    let mut pos = match tree.value {
        // An empty document (or only comments) is "at" its end: point at its start.
        Node::Null => Pos { line: 1, column: 1 },
        _ => pos_of(tree),
    };
    let mut cur = &tree.value;
    for step in path_steps(path) {
        let (at, next) = match (step, cur) {
            (PathStep::Index(i), Node::Seq(items)) => match items.get(i) {
                Some(item) => (pos_of(item), &item.value),
                None => break,
            },
            (PathStep::Key(key), Node::Map(entries)) => match entry(entries, &key) {
                Some((k, v)) => (pos_of(k), &v.value),
                None => break,
            },
            _ => break,
        };
        pos = at;
        cur = next;
    }
    pos
}

/// The entry of `key`: a string key equal to it, else a key written as a number or
/// boolean that reads as the same value (`0x10` is the integer 16 in the tree, but
/// `"0x10"` in a parsed document's JSON; duplicate keys are refused, so at most one
/// entry has that value).
fn entry<'n>(
    entries: &'n [(Spanned<Node>, Spanned<Node>)],
    key: &str,
) -> Option<&'n (Spanned<Node>, Spanned<Node>)> {
    if let Some(e) = entries
        .iter()
        .find(|(k, _)| matches!(&k.value, Node::Str(s) if s == key))
    {
        return Some(e);
    }
    // Numbers and booleans are written with these characters only (`-1.5e3`, `0x1F`,
    // `.inf`); anything else is not read as one.
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-' | '_');
    if key.is_empty()
        || !key.chars().all(plain)
        || !entries
            .iter()
            .any(|(k, _)| matches!(k.value, Node::Int(_) | Node::Float(_) | Node::Bool(_)))
    {
        return None;
    }
    let written = serde_saphyr::from_str_with_options::<Node>(key, super::yaml_options()).ok()?;
    entries.iter().find(|(k, _)| match (&k.value, &written) {
        (Node::Int(a), Node::Int(b)) => a == b,
        (Node::Float(a), Node::Float(b)) => a == b,
        (Node::Bool(a), Node::Bool(b)) => a == b,
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::path::{index_path, key_path};

    fn at(line: u32, column: u32) -> Option<Pos> {
        Some(Pos { line, column })
    }

    const JOB: &str = "\
apiVersion: batch/v1
kind: Job
metadata:
  labels:
    app.kubernetes.io/name: train
    'quoted.key': a
    \"say \\\"hi\\\"\": b
spec:
  template:
    spec:
      containers:
        - name: main
          image: python:3.12
          resources: {limits: {cpu: 2, \"nvidia.com/gpu\": 1}, requests: {}}
        - name: side
          args:
            - [a, b]
            - - c
              - d
";

    #[test]
    fn yaml() {
        for (path, expected) in [
            ("", at(1, 1)),
            ("kind", at(2, 1)),
            ("metadata.labels", at(4, 3)),
            (r#"metadata.labels["app.kubernetes.io/name"]"#, at(5, 5)),
            (r#"metadata.labels["quoted.key"]"#, at(6, 5)),
            (r#"metadata.labels["say \"hi\""]"#, at(7, 5)),
            ("spec.template.spec.containers", at(11, 7)),
            ("spec.template.spec.containers[0]", at(12, 11)),
            ("spec.template.spec.containers[0].image", at(13, 11)),
            ("spec.template.spec.containers[1].name", at(15, 11)),
            // Into flow mappings.
            ("spec.template.spec.containers[0].resources", at(14, 11)),
            (
                "spec.template.spec.containers[0].resources.limits.cpu",
                at(14, 32),
            ),
            (
                r#"spec.template.spec.containers[0].resources.limits["nvidia.com/gpu"]"#,
                at(14, 40),
            ),
            (
                "spec.template.spec.containers[0].resources.requests",
                at(14, 62),
            ),
            // Nested lists, flow and block.
            ("spec.template.spec.containers[1].args[0]", at(17, 15)),
            ("spec.template.spec.containers[1].args[0][1]", at(17, 19)),
            ("spec.template.spec.containers[1].args[1]", at(18, 15)),
            ("spec.template.spec.containers[1].args[1][1]", at(19, 17)),
        ] {
            assert_eq!(locate(JOB, path), expected, "{path}");
        }
    }

    #[test]
    fn missing_steps_point_at_the_nearest_ancestor() {
        for (path, expected) in [
            // A missing last key: the mapping that should hold it.
            ("spec.template.spec.restartPolicy", at(10, 5)),
            ("spec.template.spec.containers[0].command", at(12, 11)),
            (
                "spec.template.spec.containers[0].resources.limits.memory",
                at(14, 23),
            ),
            (
                "spec.template.spec.containers[0].resources.requests.cpu",
                at(14, 62),
            ),
            ("backoffLimit", at(1, 1)),
            // Missing further up, an index past the end, a step into a scalar or
            // into the wrong kind of node.
            ("spec.template.metadata.labels.x", at(9, 3)),
            ("spec.template.spec.containers[2].image", at(11, 7)),
            ("spec.template.spec.containers[0].image.tag", at(13, 11)),
            ("spec.template.spec.containers.image", at(11, 7)),
            ("spec.template[0]", at(9, 3)),
            // Keys match exactly.
            ("Kind", at(1, 1)),
            ("metadata.labels.quoted", at(4, 3)),
            (r#"metadata.labels["'quoted.key'"]"#, at(4, 3)),
            // Steps that cannot be read: the part before them.
            ("spec.template[x].spec", at(9, 3)),
            ("metadata[\"labels", at(3, 1)),
        ] {
            assert_eq!(locate(JOB, path), expected, "{path}");
        }
    }

    #[test]
    fn json() {
        let pretty = r#"{
  "RoleArn": "arn:aws:iam::1:role/r",
  "ResourceConfig": {
    "InstanceType": "ml.m5.large",
    "InstanceCount": "two"
  },
	"Tags": [{"Key": "a.b", "Value": "x"}, {"Key": "c"}]
}
"#;
        for (path, expected) in [
            ("", at(1, 1)),
            ("ResourceConfig", at(3, 3)),
            ("ResourceConfig.InstanceCount", at(5, 5)),
            ("ResourceConfig.VolumeSizeInGB", at(3, 3)),
            ("Tags[1]", at(7, 41)),
            ("Tags[1].Key", at(7, 42)),
            ("Tags[1].Value", at(7, 41)),
        ] {
            assert_eq!(locate(pretty, path), expected, "{path}");
        }
        let line = r#"{"display_name": "x", "spec": {"worker_pool_specs": [{"replica_count": 1}, {"machine_spec": {"machine_type": "n1"}, "x.y": [[1, 2]]}]}}"#;
        for (path, expected) in [
            ("spec", at(1, 23)),
            ("spec.worker_pool_specs", at(1, 32)),
            ("spec.worker_pool_specs[1]", at(1, 76)),
            ("spec.worker_pool_specs[1].machine_spec", at(1, 77)),
            (
                "spec.worker_pool_specs[1].machine_spec.machine_type",
                at(1, 94),
            ),
            (r#"spec.worker_pool_specs[1]["x.y"][0][1]"#, at(1, 129)),
            ("spec.worker_pool_specs[0].machine_spec", at(1, 54)),
        ] {
            assert_eq!(locate(line, path), expected, "{path}");
        }
    }

    #[test]
    fn problems_of_the_schema_checks_are_located() {
        use crate::resource::{ResourceType, validate_config};
        let text = "\
spec:
  template:
    spec:
      containers:
        - name: main
          image: 5
";
        let config = crate::yaml::parse_document(text).unwrap();
        let problems = validate_config(ResourceType::Kubernetes, &config).unwrap_err();
        let image = problems
            .iter()
            .find(|p| p.path == "spec.template.spec.containers[0].image")
            .unwrap_or_else(|| panic!("{problems:?}"));
        assert_eq!(locate(text, &image.path), at(6, 11));
        for p in &problems {
            assert!(locate(text, &p.path).is_some(), "{p}");
        }

        let text = "{\n  \"ResourceConfig\": {\"InstanceCount\": 0}\n}";
        let config = crate::yaml::parse_document(text).unwrap();
        let problems = validate_config(ResourceType::Sagemaker, &config).unwrap_err();
        let p = problems
            .iter()
            .find(|p| p.path.starts_with("ResourceConfig"))
            .unwrap_or_else(|| panic!("{problems:?}"));
        assert_eq!(locate(text, &p.path).map(|p| p.line), Some(2), "{p}");
    }

    #[test]
    fn keys_written_as_numbers_or_booleans() {
        let text = "1: a\ntrue: b\n0x10: c\n1.50: d\n\"2\": e\n2: f\n";
        // The keys as parse_document holds them.
        let doc = crate::yaml::parse_document(text).unwrap();
        let keys: Vec<&str> = doc
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(keys, ["1", "true", "0x10", "1.50", "2", "2"][..keys.len()]);
        for (path, expected) in [
            (r#"["1"]"#, at(1, 1)),
            ("true", at(2, 1)),
            (r#"["0x10"]"#, at(3, 1)),
            (r#"["1.50"]"#, at(4, 1)),
            (r#"["2"]"#, at(5, 1)),
            ("false", at(1, 1)),
        ] {
            assert_eq!(locate(text, path), expected, "{path}");
        }
    }

    #[test]
    fn anchors_and_aliases() {
        let text = "base: &b\n  x: 1\nuse:\n  <<: *b\n  y: 2\nalias: *b\n";
        assert_eq!(locate(text, "base.x"), at(2, 3));
        assert_eq!(locate(text, "use.y"), at(5, 3));
        // A merged or aliased value is where the alias is.
        assert_eq!(locate(text, "use.x"), at(4, 7));
        assert_eq!(locate(text, "alias.x"), at(6, 8));
    }

    #[test]
    fn empty_and_unparsable_documents() {
        for text in ["", "  \n", "# nothing\n", "---\n"] {
            assert_eq!(locate(text, ""), at(1, 1), "{text:?}");
            assert_eq!(locate(text, "spec.x"), at(1, 1), "{text:?}");
        }
        assert_eq!(locate("---\na: 1\n", "a"), at(2, 1));
        for text in [
            "a: [1, 2\nb: 3\n",
            "{\"a\": [}",
            "a:\n\tb: 1\n",
            "a: 1\na: 2\n",
            "a: 1\n---\nb: 2\n",
            "key: \"unterminated\n",
            &"[".repeat(40),
            &format!(
                "{}1{}",
                "[".repeat(MAX_DEPTH + 1),
                "]".repeat(MAX_DEPTH + 1)
            ),
        ] {
            assert_eq!(locate(text, "a"), None, "{text:?}");
        }
        let huge = format!("a: \"{}\"", "x".repeat(crate::yaml::MAX_DOCUMENT_BYTES));
        assert_eq!(locate(&huge, "a"), None);
    }

    #[test]
    fn columns_count_characters() {
        let text = "ü: {é: 1, \"😀\": [x, y]}\n";
        assert_eq!(locate(text, r#"["é"]"#), at(1, 1));
        assert_eq!(locate(text, r#"["ü"]["é"]"#), at(1, 5));
        assert_eq!(locate(text, r#"["ü"]["😀"][1]"#), at(1, 20));
    }

    /// The text at `pos` (1-based line and column in characters).
    fn text_at(text: &str, pos: Pos) -> String {
        let line = text.split('\n').nth(pos.line as usize - 1).unwrap_or("");
        line.chars().skip(pos.column as usize - 1).collect()
    }

    /// Every path of `v` as `ConfigProblem`s write them, with what starts there when `v`
    /// is written as JSON: the quoted key, or the item.
    fn paths(v: &serde_json::Value, base: &str, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    let p = key_path(base, k);
                    out.push((p.clone(), serde_json::to_string(k).unwrap()));
                    paths(x, &p, out);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, x) in items.iter().enumerate() {
                    let p = index_path(base, i);
                    out.push((p.clone(), serde_json::to_string(x).unwrap()));
                    paths(x, &p, out);
                }
            }
            _ => {}
        }
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i32>().prop_map(serde_json::Value::from),
            "[a-z .\"\\\\/ü😀\t-]{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(5, 40, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-zA-Z0-9_ .\"\\[\\]/ü-]{0,6}", inner, 0..5)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Any text and path: a position or None, never a panic.
        #[test]
        fn never_panics(text in "(?s).{0,300}", path in "(?s).{0,40}") {
            if let Some(p) = locate(&text, &path) {
                proptest::prop_assert!(p.line >= 1 && p.column >= 1, "{p:?}");
            }
        }

        /// YAML-looking text and path-looking paths.
        #[test]
        fn never_panics_on_yaml_shapes(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    "a: ", "b: ", "- ", "  ", "\n", "{", "}", "[", "]", ", ", "&x ", "*x", "<<: ",
                    "'q.r'", "\"s\"", "1: ", "0x1: ", "1.5", "yes", "~", "|\n  t", "? ", "!!str ",
                    "#c", "\t", "key: value\n",
                ]),
                0..60,
            ),
            path in proptest::collection::vec(
                proptest::sample::select(vec![
                    "a", "b", ".", "[0]", "[1]", "[\"q.r\"]", "[\"s\"]", "[\"1\"]", "[\"0x1\"]",
                    "[", "]", "[\"", "key", "[99999999999999999999999]",
                ]),
                0..8,
            ),
        ) {
            let text: String = parts.concat();
            let _ = locate(&text, &path.concat());
        }

        /// Every path of a JSON document, compact or pretty-printed, is located at its
        /// key or item.
        #[test]
        fn json_paths_are_located_at_their_node(v in json_value()) {
            let mut all = Vec::new();
            paths(&v, "", &mut all);
            for text in [serde_json::to_string(&v).unwrap(), serde_json::to_string_pretty(&v).unwrap()] {
                let tree = parse(&text);
                proptest::prop_assert!(tree.is_ok(), "{text}: {:?}", tree.err());
                let tree = tree.unwrap();
                proptest::prop_assert_eq!(locate_in(&tree, ""), Pos { line: 1, column: 1 });
                for (path, starts) in &all {
                    let pos = locate_in(&tree, path);
                    let there = text_at(&text, pos);
                    // Pretty-printed, an item that is a list or object starts with its
                    // bracket only.
                    let first = starts.chars().next().unwrap();
                    proptest::prop_assert!(
                        there.starts_with(starts.as_str()) || (matches!(first, '[' | '{') && there.starts_with(first)),
                        "{path} at {pos:?} in\n{text}\nis {there:?}, not {starts:?}"
                    );
                }
            }
        }
    }
}
