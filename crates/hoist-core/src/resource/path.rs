//! Problems found in a configuration document, each with the path to the offending value.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One problem in a config: `spec.template.spec.containers[0].image: expected string`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConfigProblem {
    /// Dotted path with `[i]` for list items; empty for the document root.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "(document): {}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}
