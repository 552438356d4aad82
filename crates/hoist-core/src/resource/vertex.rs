//! (schema checks to be written)

use super::ConfigProblem;

pub fn validate(_config: &serde_json::Value) -> Vec<ConfigProblem> {
    Vec::new()
}
