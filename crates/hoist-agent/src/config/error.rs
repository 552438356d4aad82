//! Config errors: where a bad value came from, which key, and what was expected.

use std::fmt;

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// hoist's built-in default.
    Default,
    /// The config file; `line` and `column` are 1-based, 0 when the error concerns the
    /// whole file (it cannot be read, …).
    File {
        path: String,
        line: u32,
        column: u32,
    },
    /// A `HOIST_*` environment variable.
    Env(String),
    /// A command-line flag, e.g. `--max-jobs`.
    Flag(String),
}

impl Origin {
    fn rank(&self) -> u8 {
        match self {
            Origin::File { .. } => 0,
            Origin::Env(_) => 1,
            Origin::Flag(_) => 2,
            Origin::Default => 3,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File { path, line, column } if *line > 0 => {
                write!(f, "{path}:{line}:{column}")
            }
            Origin::File { path, .. } => f.write_str(path),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// One problem with the agent's configuration, displayed as
/// `FILE:LINE:COLUMN: KEY.PATH: what is wrong; expected …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub origin: Origin,
    /// Dotted key path (`builder.build-context-store`, `queues[2]`); empty when the
    /// error is about the file as a whole or about a key that is itself unknown.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.origin != Origin::Default {
            write!(f, "{}: ", self.origin)?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one load, in file order (then environment, then flags).
/// Displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The errors' texts, one per entry.
    pub fn messages(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }

    pub(crate) fn sorted(mut errors: Vec<ConfigError>) -> Self {
        errors.sort_by_key(|e| match &e.origin {
            Origin::File { line, column, .. } => (e.origin.rank(), *line, *column),
            other => (other.rank(), 0, 0),
        });
        errors.dedup();
        ConfigErrors(errors)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}
