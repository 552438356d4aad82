//! Just enough Rust lexing for text checks: comments and literals blanked out of the
//! code (byte offsets and lines kept), string literals collected with their offsets, and
//! the spans of functions and async blocks found by brace matching.

use std::sync::LazyLock;

use regex::Regex;

/// A lexed file.
#[derive(Debug, Clone)]
pub struct Lexed {
    /// The source with every comment and the inside of every string, byte-string and
    /// char literal replaced by spaces (newlines kept). Same length as the source.
    pub code: String,
    /// String literals (normal and raw): (offset of the opening quote, contents as written).
    pub strings: Vec<(usize, String)>,
}

/// Lexes `src`. Never fails: unterminated constructs run to the end of the file.
pub fn lex(src: &str) -> Lexed {
    let b = src.as_bytes();
    let mut code = b.to_vec();
    let mut strings = Vec::new();
    let blank = |code: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut code[from..to.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = src[i..].find('\n').map(|e| i + e).unwrap_or(b.len());
                blank(&mut code, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 1;
                let mut j = i + 2;
                while j < b.len() && depth > 0 {
                    if b[j] == b'/' && b.get(j + 1) == Some(&b'*') {
                        depth += 1;
                        j += 2;
                    } else if b[j] == b'*' && b.get(j + 1) == Some(&b'/') {
                        depth -= 1;
                        j += 2;
                    } else {
                        j += 1;
                    }
                }
                blank(&mut code, i, j);
                i = j;
            }
            b'r' | b'b' if is_raw_string_start(b, i) => {
                // r"…", r#"…"#, br"…"
                let mut j = i + 1;
                if b[i] == b'b' {
                    j += 1;
                }
                let mut hashes = 0;
                while b.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                let open = j; // the quote
                let close: String = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let body_start = open + 1;
                let end = src[body_start..]
                    .find(&close)
                    .map(|e| body_start + e)
                    .unwrap_or(b.len());
                strings.push((open, src[body_start..end].to_string()));
                blank(&mut code, body_start, end);
                i = (end + close.len()).min(b.len());
            }
            b'"' => {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && b[j] != b'"' {
                    if b[j] == b'\\' {
                        j += 1;
                    }
                    j += 1;
                }
                let end = j.min(b.len());
                if !(i > 0 && b[i - 1] == b'b') {
                    strings.push((i, src[start..end].to_string()));
                }
                blank(&mut code, start, end);
                i = end + 1;
            }
            b'\'' => {
                // A char literal ('x', '\n', '\u{1F600}') or a lifetime ('a).
                if b.get(i + 1) == Some(&b'\\') {
                    let end = src[i + 2..]
                        .find('\'')
                        .map(|e| i + 2 + e)
                        .unwrap_or(b.len());
                    blank(&mut code, i + 1, end);
                    i = end + 1;
                } else if let Some(c) = src[i + 1..].chars().next() {
                    let after = i + 1 + c.len_utf8();
                    if b.get(after) == Some(&b'\'') {
                        blank(&mut code, i + 1, after);
                        i = after + 1;
                    } else {
                        i += 1;
                    }
                } else {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    Lexed {
        code: String::from_utf8(code).expect("only ASCII spaces replaced whole characters"),
        strings,
    }
}

fn is_raw_string_start(b: &[u8], i: usize) -> bool {
    // Not the tail of an identifier (`for"`, `bar"`).
    if i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_') {
        return false;
    }
    let mut j = i;
    if b[j] == b'b' {
        j += 1;
        if b.get(j) != Some(&b'r') {
            return false;
        }
    }
    j += 1;
    while b.get(j) == Some(&b'#') {
        j += 1;
    }
    b.get(j) == Some(&b'"')
}

/// The byte offset of the brace that closes the one at `open` (in blanked code).
pub fn matching_brace(code: &str, open: usize) -> Option<usize> {
    matching(code, open, b'{', b'}')
}

/// The byte offset of the parenthesis that closes the one at `open`.
pub fn matching_paren(code: &str, open: usize) -> Option<usize> {
    matching(code, open, b'(', b')')
}

fn matching(code: &str, open: usize, o: u8, c: u8) -> Option<usize> {
    let b = code.as_bytes();
    let mut depth = 0usize;
    for (j, &ch) in b.iter().enumerate().skip(open) {
        if ch == o {
            depth += 1;
        } else if ch == c {
            depth -= 1;
            if depth == 0 {
                return Some(j);
            }
        }
    }
    None
}

/// A function: its name, whether it is `async`, and its body's byte span (braces included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FnSpan {
    pub name: String,
    pub is_async: bool,
    pub body: (usize, usize),
}

/// Every function with a body, in source order (nested ones included).
pub fn functions(code: &str) -> Vec<FnSpan> {
    let re = regex::Regex::new(
        r"\b(async\s+)?(?:unsafe\s+)?(?:extern\s+\S+\s+)?fn\s+([A-Za-z_][A-Za-z0-9_]*)",
    )
    .expect("valid regex");
    let b = code.as_bytes();
    let mut out = Vec::new();
    for m in re.captures_iter(code) {
        let whole = m.get(0).expect("match");
        // The body starts at the first `{` after the signature at parenthesis depth 0;
        // a `;` first means a declaration without a body.
        let mut depth = 0i32;
        let mut j = whole.end();
        let mut body = None;
        while j < b.len() {
            match b[j] {
                b'(' | b'[' | b'<' => depth += 1,
                b')' | b']' => depth -= 1,
                b'>' if j > 0 && b[j - 1] != b'-' && b[j - 1] != b'=' => depth -= 1,
                b'{' if depth <= 0 => {
                    body = matching_brace(code, j).map(|e| (j, e));
                    break;
                }
                b';' if depth <= 0 => break,
                _ => {}
            }
            j += 1;
        }
        if let Some(body) = body {
            out.push(FnSpan {
                name: m[2].to_string(),
                is_async: m.get(1).is_some(),
                body,
            });
        }
    }
    out
}

/// The spans of `async { … }` / `async move { … }` blocks (braces included).
pub fn async_blocks(code: &str) -> Vec<(usize, usize)> {
    static RE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\basync\s+(?:move\s*)?\{").expect("valid regex"));
    RE.find_iter(code)
        .filter_map(|m| {
            let open = m.end() - 1;
            matching_brace(code, open).map(|e| (open, e))
        })
        .collect()
}

/// The innermost function whose body contains `offset`.
pub fn enclosing_fn(fns: &[FnSpan], offset: usize) -> Option<&FnSpan> {
    fns.iter()
        .filter(|f| f.body.0 <= offset && offset <= f.body.1)
        .min_by_key(|f| f.body.1 - f.body.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blanks_comments_and_literals() {
        let src = "let a = \"std::fs::read\"; // std::fs::read\nlet c = '\"'; /* std::process */ x";
        let l = lex(src);
        assert_eq!(l.code.len(), src.len());
        assert!(!l.code.contains("std::fs"), "{}", l.code);
        assert!(!l.code.contains("std::process"), "{}", l.code);
        assert!(l.code.contains("let c ="));
        assert_eq!(l.strings, vec![(8, "std::fs::read".to_string())]);
    }

    #[test]
    fn raw_strings_and_lifetimes() {
        let src = "fn f<'a>(x: &'a str) -> &'a str { r#\"UPDATE \"runs\" SET state\"# }";
        let l = lex(src);
        assert_eq!(l.strings.len(), 1);
        assert_eq!(l.strings[0].1, "UPDATE \"runs\" SET state");
        assert!(l.code.contains("fn f<'a>(x: &'a str)"));
        let fns = functions(&l.code);
        assert_eq!(fns.len(), 1);
        assert_eq!(fns[0].name, "f");
    }

    #[test]
    fn functions_and_async_blocks() {
        let src = "async fn a() -> Result<(), E> where E: X { let f = async move { 1 }; }\nfn b(v: Vec<u8>) { }\ntrait T { fn c(&self); }";
        let l = lex(src);
        let fns = functions(&l.code);
        let names: Vec<_> = fns.iter().map(|f| (f.name.as_str(), f.is_async)).collect();
        assert_eq!(names, vec![("a", true), ("b", false)]);
        assert_eq!(async_blocks(&l.code).len(), 1);
        let inner = src.find("1 }").unwrap();
        assert_eq!(enclosing_fn(&fns, inner).unwrap().name, "a");
    }
}
