//! Names chosen by people: entities (users, teams), queues, projects, agents; and how
//! far apart two names are ([`edit_distance`], for "did you mean" suggestions).

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

/// Edit distance between `a` and `b` in characters, counting a swap of two
/// neighbouring characters as one edit (optimal string alignment). For "did you mean"
/// suggestions: the agent's config keys and the queue-config schemas both use it.
/// Memory is three rows of the shorter word, so a long input costs time, not space.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let (a, b) = if a.len() < b.len() { (b, a) } else { (a, b) };
    let m = b.len();
    // Rows i-2, i-1 and i of the (n+1) x (m+1) table.
    let mut before: Vec<usize> = vec![0; m + 1];
    let mut prev: Vec<usize> = (0..=m).collect();
    let mut cur: Vec<usize> = vec![0; m + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(before[j - 2] + 1);
            }
            cur[j] = d;
        }
        std::mem::swap(&mut before, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[m]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("image", "image"), 0);
        assert_eq!(edit_distance("imagee", "image"), 1);
        assert_eq!(edit_distance("nmae", "name"), 1, "a swap is one edit");
        assert_eq!(edit_distance("enviroment", "environment"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(
            edit_distance("ca", "abc"),
            3,
            "optimal string alignment, not Damerau"
        );
        assert_eq!(edit_distance("é", "e"), 1, "characters, not bytes");
        assert_eq!(
            edit_distance("max_jobs", "max-job"),
            edit_distance("max-job", "max_jobs")
        );
    }

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
