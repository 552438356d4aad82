//! The config's YAML tree: [`hoist_core::yaml::tree`] (every node with its line and
//! column), and how a node is described in the agent's "found …" messages.

pub(crate) use hoist_core::yaml::tree::{Node, Pos, parse, pos_of};

/// How the node is described in "found …" messages (strings masked as
/// [`super::values::shown`] masks them).
pub(crate) fn describe(node: &Node) -> String {
    match node {
        Node::Null => "nothing (null)".to_string(),
        Node::Bool(b) => format!("the boolean {b}"),
        Node::Int(i) => format!("the integer {i}"),
        Node::Float(f) => format!("the number {f}"),
        Node::Str(s) => format!("the string {:?}", super::values::shown(s)),
        Node::Seq(_) => "a list".to_string(),
        Node::Map(_) => "a mapping".to_string(),
    }
}
