//! Names and launch input chosen by people: entities (users, teams), queues,
//! projects, agents ([`validate`]); container image references
//! ([`validate_image_ref`]); a run's environment ([`validate_env`]) and command
//! ([`validate_command`]). The server checks jobs and launches with the same functions,
//! and the CLI checks with them before it sends anything. And how far apart two names
//! are ([`edit_distance`], for "did you mean" suggestions).

use std::collections::BTreeMap;

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

/// Why an image reference, an environment or a command was refused. The message
/// shows at most the first 100 characters of what was given, and never an environment
/// variable's value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InputError {
    #[error("image reference {} is not valid: {why}", clip(reference))]
    ImageRef { reference: String, why: String },
    #[error("environment variable name {} is not valid: {why}", clip(name))]
    EnvName { name: String, why: &'static str },
    /// The value is not kept: it may be a secret.
    #[error("the value of environment variable {name} {why}")]
    EnvValue { name: String, why: &'static str },
    #[error("the environment is too large: {why}")]
    EnvSize { why: String },
    /// `what` names the word: `the entry point`, `argument 3`.
    #[error("{what} {why}")]
    Command { what: String, why: String },
}

/// At most 100 characters of `s`, JSON-quoted, with `…` when cut.
fn clip(s: &str) -> String {
    const MAX: usize = 100;
    if s.chars().count() > MAX {
        let head: String = s.chars().take(MAX).collect();
        let q = serde_json::to_string(&head).unwrap_or_default();
        format!(
            "{}…\" ({} characters)",
            &q[..q.len() - 1],
            s.chars().count()
        )
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

/// Longest image reference accepted (a repository name of up to 255 characters, a tag
/// and a digest).
pub const MAX_IMAGE_REF_LEN: usize = 512;
/// Longest repository name (registry and path), as Docker allows.
const MAX_REPOSITORY_LEN: usize = 255;

/// Checks a container image reference as Docker and OCI registries read it:
/// `[HOST[:PORT]/]PATH[:TAG][@DIGEST]`, where `PATH` is `/`-separated lowercase
/// components (letters and digits, joined by `.`, `_`, `__` or dashes), the tag is
/// up to 128 letters, digits, `_`, `.` and `-` (not starting with `.` or `-`), and the
/// digest is `ALGORITHM:HEX` (`sha256:` + 64 lowercase hex digits). Refuses anything
/// else: options in disguise (`--privileged`, `-v/:/host`), whitespace and control
/// characters, absurd lengths.
pub fn validate_image_ref(reference: &str) -> Result<(), InputError> {
    let bad = |why: &str| {
        Err(InputError::ImageRef {
            reference: reference.to_string(),
            why: why.to_string(),
        })
    };
    if reference.is_empty() {
        return bad("it is empty");
    }
    if reference.len() > MAX_IMAGE_REF_LEN {
        return bad(&format!(
            "it is {} bytes long; an image reference is at most {MAX_IMAGE_REF_LEN}",
            reference.len()
        ));
    }
    if reference
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return bad("it contains whitespace or control characters (such as NUL or a line break)");
    }
    if reference.starts_with('-') {
        return bad("it starts with '-' (it would be read as an option)");
    }
    let (rest, digest) = match reference.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (reference, None),
    };
    if let Some(d) = digest
        && let Err(why) = image_digest(d)
    {
        return bad(&why);
    }
    // A tag follows the last `:` after the last `/` (a `:` before it is a port).
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag
        && !image_tag(t)
    {
        return bad(&format!(
            "the tag {} must be 1 to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'",
            clip(t)
        ));
    }
    if name.is_empty() {
        return bad("it names no repository");
    }
    if name.len() > MAX_REPOSITORY_LEN {
        return bad(&format!(
            "the repository name is {} characters long; at most {MAX_REPOSITORY_LEN} are allowed",
            name.len()
        ));
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    // The first part is a registry when it looks like a host: it has a `.` or a `:`,
    // is `localhost`, or has upper-case letters (which a path never has).
    if parts.len() > 1 {
        let first = parts[0];
        if first.contains(['.', ':'])
            || first == "localhost"
            || first.chars().any(|c| c.is_ascii_uppercase())
        {
            if let Err(why) = registry_host(first) {
                return bad(&why);
            }
            parts.remove(0);
        }
    }
    for p in parts {
        if !path_component(p) {
            return bad(&format!(
                "the path component {} must be lowercase letters and digits, separated by '.', '_', '__' or '-'",
                clip(p)
            ));
        }
    }
    Ok(())
}

/// `[a-z0-9]+` joined by `.`, `_`, `__` or one or more `-`.
fn path_component(p: &str) -> bool {
    let b = p.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: `.`, `_`, `__` or dashes.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &p[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
            return false;
        }
    }
    true
}

fn image_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn image_digest(d: &str) -> Result<(), String> {
    let expected =
        "the digest must be ALGORITHM:HEX, such as sha256: followed by 64 lowercase hex digits";
    let Some((alg, hex)) = d.split_once(':') else {
        return Err(expected.to_string());
    };
    let alg_ok = !alg.is_empty()
        && alg.split(['+', '.', '_', '-']).all(|part| {
            let mut c = part.bytes();
            matches!(c.next(), Some(x) if x.is_ascii_alphabetic())
                && c.all(|x| x.is_ascii_alphanumeric())
        });
    let hex_ok = hex.len() >= 32 && hex.bytes().all(|c| c.is_ascii_hexdigit());
    let sha256_ok = alg != "sha256"
        || (hex.len() == 64 && hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
    if alg_ok && hex_ok && sha256_ok {
        Ok(())
    } else {
        Err(expected.to_string())
    }
}

/// `HOST[:PORT]`: DNS labels joined by `.`, or an IPv6 address in brackets.
fn registry_host(h: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "the registry {} is not a host name with an optional port (such as ghcr.io or localhost:5000)",
            clip(h)
        ))
    };
    let (host, port) = if let Some(after) = h.strip_prefix('[') {
        let Some((ip, tail)) = after.split_once(']') else {
            return bad();
        };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return bad();
        }
        match tail {
            "" => ("", None),
            t => match t.strip_prefix(':') {
                Some(p) => ("", Some(p)),
                None => return bad(),
            },
        }
    } else {
        match h.split_once(':') {
            Some((host, p)) => (host, Some(p)),
            None => (h, None),
        }
    };
    if let Some(p) = port
        && !(!p.is_empty() && p.len() <= 5 && p.bytes().all(|c| c.is_ascii_digit()))
    {
        return bad();
    }
    if !h.starts_with('[') {
        let label_ok = |l: &str| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        };
        if !host.split('.').all(label_ok) {
            return bad();
        }
    }
    Ok(())
}

/// The longest value of one environment variable (Linux refuses a `NAME=VALUE`
/// string over 128 KiB), and of the whole environment.
pub const MAX_ENV_VALUE_BYTES: usize = 128 * 1024 - 1024;
pub const MAX_ENV_TOTAL_BYTES: usize = 1024 * 1024;

/// Checks one environment variable name: a letter or `_`, then letters, digits or
/// `_`, at most 256 characters, and not `HOIST_*` (hoist sets those itself).
pub fn validate_env_name(name: &str) -> Result<(), InputError> {
    let bad = |why| {
        Err(InputError::EnvName {
            name: name.to_string(),
            why,
        })
    };
    let mut b = name.bytes();
    let ok = matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_');
    if !ok {
        return bad("use letters, digits and '_', not starting with a digit");
    }
    if name.len() > 256 {
        return bad("it is longer than 256 characters");
    }
    if name.starts_with("HOIST_") {
        return bad("HOIST_* variables are reserved: hoist sets them itself");
    }
    Ok(())
}

/// Checks a run's environment: every name ([`validate_env_name`]); values without NUL
/// bytes or line breaks (which cannot travel in a process environment or a container
/// config line), at most [`MAX_ENV_VALUE_BYTES`] each and [`MAX_ENV_TOTAL_BYTES`] in
/// all. Errors never show a value.
pub fn validate_env(env: &BTreeMap<String, String>) -> Result<(), InputError> {
    let mut total = 0usize;
    for (k, v) in env {
        validate_env_name(k)?;
        let why = if v.contains('\0') {
            Some("contains a NUL byte")
        } else if v.contains(['\n', '\r']) {
            Some("contains a line break")
        } else if v.len() > MAX_ENV_VALUE_BYTES {
            Some("is longer than 127 KiB")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(InputError::EnvValue {
                name: k.clone(),
                why,
            });
        }
        total += k.len() + v.len() + 2;
    }
    if total > MAX_ENV_TOTAL_BYTES {
        return Err(InputError::EnvSize {
            why: format!(
                "{total} bytes of names and values, over the limit of {MAX_ENV_TOTAL_BYTES}"
            ),
        });
    }
    Ok(())
}

/// The longest word of a command (Linux refuses a longer argument), and the longest
/// command in all.
pub const MAX_ARG_BYTES: usize = 128 * 1024;
pub const MAX_COMMAND_BYTES: usize = 1024 * 1024;

/// Checks a command's words (an entry point, a run's arguments): no NUL bytes (a
/// process argument cannot hold one), at most [`MAX_ARG_BYTES`] each and
/// [`MAX_COMMAND_BYTES`] in all. `what` names the list in messages (`the entry point`,
/// `the arguments`).
pub fn validate_command(what: &str, words: &[String]) -> Result<(), InputError> {
    let mut total = 0usize;
    for (i, w) in words.iter().enumerate() {
        let why = if w.contains('\0') {
            Some("contains a NUL byte".to_string())
        } else if w.len() > MAX_ARG_BYTES {
            Some(format!("is longer than {} KiB", MAX_ARG_BYTES / 1024))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(InputError::Command {
                what: format!("word {} of {what}", i + 1),
                why,
            });
        }
        total += w.len() + 1;
    }
    if total > MAX_COMMAND_BYTES {
        return Err(InputError::Command {
            what: what.to_string(),
            why: format!("is {total} bytes long, over the limit of {MAX_COMMAND_BYTES}"),
        });
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

/// Words as one POSIX shell command line: each word as is when it holds only
/// characters the shell leaves alone, else single-quoted (for showing a command).
pub fn shell_join(words: &[String]) -> String {
    let plain = |w: &str| {
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-./=:,+@%".contains(&b))
    };
    words
        .iter()
        .map(|w| {
            if plain(w) {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_refs() {
        for ok in [
            "busybox",
            "busybox:1.36",
            "library/busybox:latest",
            "hoist-test/busybox:latest",
            "ghcr.io/me/train:1",
            "localhost:5000/a/b",
            "127.0.0.1:5000/x_y__z.w-v:v1.2-rc_3",
            "[::1]:5000/img",
            "registry.example.com/a---b/c@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "img:tag@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "Example.COM/team/img",
        ] {
            assert!(
                validate_image_ref(ok).is_ok(),
                "{ok}: {:?}",
                validate_image_ref(ok)
            );
        }
        let long = "a".repeat(5000);
        for (bad, why) in [
            ("", "empty"),
            ("--privileged", "starts with '-'"),
            ("-v/:/host", "starts with '-'"),
            ("img\0:1", "control characters"),
            ("img 1", "whitespace"),
            ("img\nx", "control characters"),
            (long.as_str(), "5000 bytes long"),
            (&"a".repeat(300), "at most 255"),
            ("Img", "lowercase"),
            ("a//b", "path component \"\""),
            ("a/b:", "the tag \"\""),
            ("a:.x", "the tag"),
            ("a@sha256:xyz", "digest"),
            (
                "a@sha256:ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789",
                "digest",
            ),
            ("bad_host.com:x/img", "registry"),
            ("-x.io/img", "starts with '-'"),
            ("x..y.io/img", "registry"),
            (":tag", "no repository"),
        ] {
            let e = validate_image_ref(bad).expect_err(bad);
            assert!(e.to_string().contains(why), "{bad:?}: {e}");
        }
        // A long reference is cut in the message.
        let e = validate_image_ref(&long).unwrap_err().to_string();
        assert!(e.len() < 300 && e.contains("(5000 characters)"), "{e}");
    }

    #[test]
    fn env_and_commands() {
        let env = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        assert!(validate_env(&env("A_1", "x=y ${Z} é")).is_ok());
        for (k, v, why) in [
            ("1A", "x", "not starting with a digit"),
            ("A B", "x", "use letters"),
            ("A\0", "x", "use letters"),
            ("HOIST_RUN_ID", "x", "reserved"),
            ("A", "a\0b", "A contains a NUL byte"),
            ("A", "a\nb", "A contains a line break"),
            ("A", "a\rb", "A contains a line break"),
        ] {
            let e = validate_env(&env(k, v)).unwrap_err().to_string();
            assert!(e.contains(why), "{k:?}={v:?}: {e}");
        }
        let secret = "hunter2\nsecret";
        let e = validate_env(&env("PASSWORD", secret))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
        let big = "x".repeat(100_000);
        let many: BTreeMap<String, String> =
            (0..20).map(|i| (format!("V{i}"), big.clone())).collect();
        assert!(
            validate_env(&many)
                .unwrap_err()
                .to_string()
                .contains("too large")
        );

        assert!(validate_command("the arguments", &["a".into(), "b\nc".into()]).is_ok());
        let e = validate_command("the arguments", &["a".into(), "b\0".into()]).unwrap_err();
        assert_eq!(e.to_string(), "word 2 of the arguments contains a NUL byte");
    }

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
