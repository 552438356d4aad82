//! A generic YAML tree that remembers where every node came from.
//!
//! The config is first parsed into this tree (any YAML that parses at all parses into
//! it), then validated key by key, so that every problem in the file is reported at
//! once with its line and column, instead of stopping at the first serde error.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A 1-based line and column (0 when unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Pos {
    pub line: u32,
    pub column: u32,
}

/// One YAML node.
#[derive(Debug, Clone)]
pub(crate) enum Node {
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
    /// How the node is described in "found …" messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Node::Null => "nothing (null)".to_string(),
            Node::Bool(b) => format!("the boolean {b}"),
            Node::Int(i) => format!("the integer {i}"),
            Node::Float(f) => format!("the number {f}"),
            Node::Str(s) => format!("the string {:?}", super::values::shown(s)),
            Node::Seq(_) => "a list".to_string(),
            Node::Map(_) => "a mapping".to_string(),
        }
    }

    /// The text of a scalar (for keys written as numbers or booleans).
    pub(crate) fn scalar_text(&self) -> Option<String> {
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
    pub(crate) fn to_json(&self) -> serde_json::Value {
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

pub(crate) fn pos_of<T>(s: &Spanned<T>) -> Pos {
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
pub(crate) struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Deepest nesting of lists and mappings accepted. A launch config needs about 10
/// (a `kaniko-config` Job spec); the limit keeps the recursive walk far from the end
/// of a 2 MiB thread stack, even in a debug build.
pub(crate) const MAX_DEPTH: usize = 32;

/// Parses `text` into a tree. On a syntax error, tab characters in indentation (the
/// usual cause when a config is pasted from a web page) are reported one per line;
/// otherwise the parser's own message.
pub(crate) fn parse(text: &str) -> Result<Spanned<Node>, Vec<SyntaxError>> {
    let max = hoist_core::yaml::MAX_DOCUMENT_BYTES;
    if text.len() > max {
        return Err(vec![SyntaxError {
            pos: Pos::default(),
            message: format!("the file is {} bytes; the limit is {max}", text.len()),
        }]);
    }
    let mut options = hoist_core::yaml::yaml_options();
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
