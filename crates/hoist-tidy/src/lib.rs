//! hoist-tidy: the invariants of `ARCHITECTURE.md`, checked by reading the tree.
//!
//! An invariant that no test checks is a wish. The checks here read the workspace's
//! sources as text (as rust-analyzer's `tidy` does) and fail the test suite when a change
//! breaks one; `tests/tidy.rs` runs them all over the repository in one `#[test]`.
//!
//! # Layout
//! - [`lex`]: a small Rust lexer: each file's code with comments and literals blanked
//!   out (so a check never matches inside a string or a comment), and its string
//!   literals (so SQL checks look only at SQL).
//! - [`Tree`]: the workspace's files, by crate and kind (src, tests, migrations, manifests).
//! - [`checks`]: one function per invariant, each returning the violations it found,
//!   with their file, line and what to do instead.
//!
//! A line may opt out of a check with a comment `tidy: allow(CHECK) because …` on it or on
//! the line above; the reason is required, and every opt-out is greppable.

pub mod checks;
pub mod lex;

use std::fmt;
use std::path::{Path, PathBuf};

/// One broken invariant at one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The check's name (what `tidy: allow(NAME)` names).
    pub check: &'static str,
    /// Path relative to the workspace root.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: [{}] {}",
            self.file, self.line, self.check, self.message
        )
    }
}

/// A source file, lexed.
pub struct SourceFile {
    /// Relative to the workspace root, with `/` separators.
    pub rel: String,
    pub text: String,
    pub lexed: lex::Lexed,
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn new(rel: impl Into<String>, text: impl Into<String>) -> SourceFile {
        let text = text.into();
        let lexed = lex::lex(&text);
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        SourceFile {
            rel: rel.into(),
            text,
            lexed,
            line_starts,
        }
    }

    /// 1-based line of a byte offset.
    pub fn line_of(&self, offset: usize) -> usize {
        match self.line_starts.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }

    /// The text of a 1-based line.
    pub fn line_text(&self, line: usize) -> &str {
        let start = self.line_starts[line - 1];
        let end = self
            .line_starts
            .get(line)
            .map(|e| e - 1)
            .unwrap_or(self.text.len());
        &self.text[start..end]
    }

    /// True when the line, or the one above it, carries `tidy: allow(check) because …`.
    pub fn allowed(&self, check: &str, line: usize) -> bool {
        let marker = format!("tidy: allow({check})");
        let has = |l: usize| {
            l >= 1 && l <= self.line_starts.len() && {
                let t = self.line_text(l);
                t.find(&marker)
                    .is_some_and(|i| t[i + marker.len()..].trim_start().starts_with("because"))
            }
        };
        has(line) || has(line.saturating_sub(1))
    }

    pub fn violation(&self, check: &'static str, offset: usize, message: String) -> Violation {
        Violation {
            check,
            file: self.rel.clone(),
            line: self.line_of(offset),
            message,
        }
    }
}

/// The workspace's files that the checks read (all crates but this one).
pub struct Tree {
    pub root: PathBuf,
    /// Every `.rs` file under `crates/`.
    pub rust: Vec<SourceFile>,
    /// Every `Cargo.toml` under `crates/`, as (relative path, text).
    pub manifests: Vec<(String, String)>,
    /// Every `.sql` file under `crates/`, as (relative path, text).
    pub sql: Vec<(String, String)>,
}

impl Tree {
    /// Reads the tree below `root` (the workspace root).
    pub fn read(root: &Path) -> std::io::Result<Tree> {
        let mut tree = Tree {
            root: root.to_path_buf(),
            rust: Vec::new(),
            manifests: Vec::new(),
            sql: Vec::new(),
        };
        let mut stack = vec![root.join("crates")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if entry.file_type()?.is_dir() {
                    // The checker's own fixtures would trip its checks.
                    if name != "target" && name != "hoist-tidy" && !name.starts_with('.') {
                        stack.push(path);
                    }
                    continue;
                }
                let rel = path
                    .strip_prefix(root)
                    .expect("below root")
                    .to_string_lossy()
                    .replace('\\', "/");
                if name.ends_with(".rs") {
                    tree.rust
                        .push(SourceFile::new(rel, std::fs::read_to_string(&path)?));
                } else if name == "Cargo.toml" {
                    tree.manifests.push((rel, std::fs::read_to_string(&path)?));
                } else if name.ends_with(".sql") {
                    tree.sql.push((rel, std::fs::read_to_string(&path)?));
                }
            }
        }
        tree.rust.sort_by(|a, b| a.rel.cmp(&b.rel));
        tree.manifests.sort();
        tree.sql.sort();
        Ok(tree)
    }

    /// Production sources (`crates/*/src/**`).
    pub fn src(&self) -> impl Iterator<Item = &SourceFile> {
        self.rust.iter().filter(|f| is_src(&f.rel))
    }

    /// Test sources (`crates/*/tests/**`).
    pub fn tests(&self) -> impl Iterator<Item = &SourceFile> {
        self.rust.iter().filter(|f| f.rel.contains("/tests/"))
    }
}

/// `crates/NAME/src/…`.
pub fn is_src(rel: &str) -> bool {
    let mut parts = rel.split('/');
    parts.next() == Some("crates") && parts.next().is_some() && parts.next() == Some("src")
}

/// The crate directory name of a path under `crates/`.
pub fn crate_of(rel: &str) -> Option<&str> {
    rel.strip_prefix("crates/")?.split('/').next()
}
