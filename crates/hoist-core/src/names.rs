//! Names chosen by people: entities (users, teams), queues, projects, agents.

use thiserror::Error;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid {kind} name {name:?}: {why}")]
pub struct NameError {
    pub kind: &'static str,
    pub name: String,
    pub why: &'static str,
}

/// Longest accepted name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Checks an entity, queue, project or agent name: 1 to 64 characters, ASCII letters,
/// digits, `-`, `_` and `.`, starting with a letter or digit.
///
/// The rule is deliberately narrow: names end up in URLs, Kubernetes labels, container
/// labels and file names, and each of those would otherwise need its own escaping.
pub fn validate(kind: &'static str, name: &str) -> Result<(), NameError> {
    let err = |why| NameError {
        kind,
        name: name.to_string(),
        why,
    };
    if name.is_empty() {
        return Err(err("must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(err("must be at most 64 characters"));
    }
    let first = name.as_bytes()[0];
    if !first.is_ascii_alphanumeric() {
        return Err(err("must start with a letter or a digit"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(err(
            "may contain only ASCII letters, digits, '-', '_' and '.'",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses() {
        for ok in ["default", "a", "team-ml.gpu_01", "A1"] {
            assert!(validate("queue", ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", ".x", "a b", "a/b", "é", &"x".repeat(65), "a\n"] {
            let e = validate("queue", bad).unwrap_err();
            assert!(e.to_string().starts_with("invalid queue name"), "{e}");
        }
    }
}
