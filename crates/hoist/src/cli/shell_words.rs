//! Splitting a command line written as one string (`--entry-point "python3 -c 'print(1)'"`)
//! into argv the way a POSIX shell would, without expanding anything, and joining argv
//! back for display.

/// Splits `text` into words: blanks separate words; `'…'` is literal; `"…"` is literal
/// except for `\"`, `\\`, `\$`, `` \` `` and `\<newline>`; outside quotes `\` takes the
/// next character literally. Unbalanced quotes and a trailing `\` are errors.
pub fn split(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    // A word has started (so that `''` yields an empty word).
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => cur.push(ch),
                        None => return Err("unbalanced single quote (')".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(ch @ ('"' | '\\' | '$' | '`')) => cur.push(ch),
                            Some('\n') => {}
                            Some(ch) => {
                                cur.push('\\');
                                cur.push(ch);
                            }
                            None => return Err("unbalanced double quote (\")".into()),
                        },
                        Some(ch) => cur.push(ch),
                        None => return Err("unbalanced double quote (\")".into()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(ch) => {
                    in_word = true;
                    cur.push(ch);
                }
                None => return Err("a trailing backslash escapes nothing".into()),
            },
            ch => {
                in_word = true;
                cur.push(ch);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Joins argv for display, single-quoting words a shell would otherwise split or expand.
pub fn join(words: &[String]) -> String {
    words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

fn quote(w: &str) -> String {
    let safe = !w.is_empty()
        && w.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '-' | '_' | '.' | '/' | ':' | '=' | ',' | '+' | '@' | '%')
        });
    if safe {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: &str) -> Vec<String> {
        split(t).unwrap()
    }

    #[test]
    fn splits() {
        assert_eq!(
            s("python3 train.py --lr 0.1"),
            ["python3", "train.py", "--lr", "0.1"]
        );
        assert_eq!(s("  a   b  "), ["a", "b"]);
        assert_eq!(
            s(r#"python3 -c 'print("hi there")'"#),
            ["python3", "-c", r#"print("hi there")"#]
        );
        assert_eq!(
            s(r#"echo "a \"b\" \$HOME \n""#),
            ["echo", r#"a "b" $HOME \n"#]
        );
        assert_eq!(s(r"a\ b c"), ["a b", "c"]);
        assert_eq!(s("x '' y"), ["x", "", "y"]);
        assert_eq!(s("a'b'\"c\"d"), ["abcd"]);
        assert!(s("").is_empty());
    }

    #[test]
    fn refuses_unbalanced() {
        assert!(split("echo 'oops").unwrap_err().contains("single quote"));
        assert!(split("echo \"oops").unwrap_err().contains("double quote"));
        assert!(split("echo \\").is_err());
    }

    #[test]
    fn joins_round_trip() {
        for words in [
            vec!["python3".to_string(), "-c".into(), "print('x y')".into()],
            vec!["a".into(), "".into(), "$HOME".into()],
        ] {
            assert_eq!(split(&join(&words)).unwrap(), words);
        }
        assert_eq!(
            join(&["python3".into(), "train.py".into()]),
            "python3 train.py"
        );
    }
}
