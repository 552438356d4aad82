//! Output: aligned tables and key/value blocks for people, pretty JSON for scripts,
//! relative times. Writes to stdout return errors (a closed pipe ends the command
//! quietly) instead of panicking as `println!` would.

use std::io::Write;

use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    // (No doc comments: they would turn `--help` into a long list.)
    Table,
    Json,
}

/// Writes `text` and a newline to stdout.
pub fn out(text: &str) -> std::io::Result<()> {
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes())?;
    o.write_all(b"\n")?;
    o.flush()
}

/// Writes `text` and a newline to stderr (errors ignored: there is nowhere to report
/// them).
pub fn err_line(text: &str) {
    let mut e = std::io::stderr().lock();
    let _ = e.write_all(text.as_bytes());
    let _ = e.write_all(b"\n");
    let _ = e.flush();
}

/// Prints a value as pretty JSON on stdout.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    out(&serde_json::to_string_pretty(value)?)?;
    Ok(())
}

/// A table with a header row; columns are padded to their widest cell.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(cols) {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let mut s = String::new();
        for r in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate().take(cols) {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(c);
                if i + 1 < cols {
                    let pad = widths[i] - c.chars().count();
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            s.push_str(line.trim_end());
            s.push('\n');
        }
        s.pop();
        s
    }

    pub fn print(&self) -> anyhow::Result<()> {
        out(&self.render())?;
        Ok(())
    }
}

/// `label:  value` lines, labels padded to the widest.
pub struct Fields(Vec<(String, String)>);

impl Fields {
    pub fn new() -> Fields {
        Fields(Vec::new())
    }
    pub fn add(&mut self, label: &str, value: impl Into<String>) {
        self.0.push((label.to_string(), value.into()));
    }
    pub fn render(&self) -> String {
        let w = self.0.iter().map(|(l, _)| l.len() + 1).max().unwrap_or(0);
        self.0
            .iter()
            .map(|(l, v)| {
                format!("{:<w$}  {v}", format!("{l}:"))
                    .trim_end()
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `3s ago`, `5m ago`, `2h ago`, `4d ago`.
pub fn ago(t: DateTime<Utc>) -> String {
    ago_from(t, Utc::now())
}

pub fn ago_from(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    if secs < 0 {
        return if secs > -5 {
            "just now".into()
        } else {
            format!("in {}", span(-secs))
        };
    }
    format!("{} ago", span(secs))
}

fn span(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// `2024-05-01 12:00:03 UTC (3s ago)`.
pub fn when(t: DateTime<Utc>) -> String {
    format!("{} ({})", t.format("%Y-%m-%d %H:%M:%S UTC"), ago(t))
}

pub fn opt_when(t: Option<DateTime<Utc>>) -> String {
    t.map(when).unwrap_or_else(|| "-".into())
}

/// A JSON value as an indented YAML block (for configs).
pub fn yaml_block(v: &serde_json::Value, indent: usize) -> String {
    let is_empty = match v {
        serde_json::Value::Object(m) => m.is_empty(),
        serde_json::Value::Array(a) => a.is_empty(),
        serde_json::Value::Null => true,
        _ => false,
    };
    let text = if is_empty {
        serde_json::to_string(v).unwrap_or_default()
    } else {
        serde_saphyr::to_string(v)
            .unwrap_or_else(|_| serde_json::to_string_pretty(v).unwrap_or_default())
    };
    let pad = " ".repeat(indent);
    text.trim_end()
        .lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

pub fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["ID", "STATE", "NAME"]);
        t.row(vec!["abc".into(), "queued".into(), "x".into()]);
        t.row(vec!["a".into(), "failed".into(), "".into()]);
        assert_eq!(t.render(), "ID   STATE   NAME\nabc  queued  x\na    failed");
    }

    #[test]
    fn relative_times() {
        let now = Utc::now();
        let s = |secs| ago_from(now - chrono::Duration::seconds(secs), now);
        assert_eq!(s(3), "3s ago");
        assert_eq!(s(125), "2m ago");
        assert_eq!(s(7200), "2h ago");
        assert_eq!(s(3 * 86400), "3d ago");
        assert_eq!(s(-2), "just now");
        assert_eq!(s(-120), "in 2m");
    }

    #[test]
    fn yaml() {
        let v = serde_json::json!({"env": ["A=1"], "memory": "1g"});
        let y = yaml_block(&v, 2);
        assert!(y.contains("  memory: 1g"), "{y}");
        assert_eq!(yaml_block(&serde_json::json!({}), 2), "  {}");
    }
}
