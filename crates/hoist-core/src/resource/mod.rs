//! Resource types and the schema checks of their queue configurations.
//!
//! One module per resource: [`docker`], [`kubernetes`], [`sagemaker`], [`vertex`].
//! `local-process` takes a small config of its own (see [`local_process`]).
//! Each checker walks the whole document and reports *every* problem with its path
//! (`spec.template.spec.containers[0].image: expected string`).
//!
//! [`policy`] lists the privileged settings of a config (per resource) and what a
//! launch's input may not add to the queue owner's config.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;

pub mod docker;
mod examples;
pub mod kubernetes;
pub mod local_process;
pub mod path;
pub mod policy;
pub mod sagemaker;
pub(crate) mod schema;
pub mod vertex;

pub use examples::example_config;

pub use path::ConfigProblem;

/// The compute a queue targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceType {
    LocalProcess,
    #[serde(alias = "local-container")]
    Docker,
    Kubernetes,
    Sagemaker,
    #[serde(alias = "gcp-vertex")]
    Vertex,
}

impl ResourceType {
    pub const ALL: [ResourceType; 5] = [
        ResourceType::LocalProcess,
        ResourceType::Docker,
        ResourceType::Kubernetes,
        ResourceType::Sagemaker,
        ResourceType::Vertex,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::LocalProcess => "local-process",
            ResourceType::Docker => "docker",
            ResourceType::Kubernetes => "kubernetes",
            ResourceType::Sagemaker => "sagemaker",
            ResourceType::Vertex => "vertex",
        }
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ResourceType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "local-process" | "local_process" => ResourceType::LocalProcess,
            "docker" | "local-container" => ResourceType::Docker,
            "kubernetes" => ResourceType::Kubernetes,
            "sagemaker" => ResourceType::Sagemaker,
            "vertex" | "gcp-vertex" => ResourceType::Vertex,
            _ => {
                const NAMES: [&str; 8] = [
                    "local-process",
                    "docker",
                    "kubernetes",
                    "sagemaker",
                    "vertex",
                    "local-container",
                    "gcp-vertex",
                    "local_process",
                ];
                let lower = s.to_ascii_lowercase();
                let hint = NAMES
                    .iter()
                    .map(|n| (crate::names::edit_distance(&lower, n), *n))
                    .filter(|(d, n)| *d <= 2.max(n.len() / 4))
                    .min()
                    .map(|(_, n)| format!(" (did you mean {n:?}?)"))
                    .unwrap_or_default();
                return Err(format!(
                    "unknown resource {s:?}{hint}; expected one of local-process, docker (alias local-container), kubernetes, sagemaker, vertex (alias gcp-vertex)"
                ));
            }
        })
    }
}

/// Checks a queue's resource configuration (after template variables were substituted
/// with their defaults or launch values) against the resource's schema. Returns every
/// problem found, each with its path.
pub fn validate_config(
    resource: ResourceType,
    config: &serde_json::Value,
) -> Result<(), Vec<ConfigProblem>> {
    let problems = match resource {
        ResourceType::LocalProcess => local_process::validate(config),
        ResourceType::Docker => docker::validate(config),
        ResourceType::Kubernetes => kubernetes::validate(config),
        ResourceType::Sagemaker => sagemaker::validate(config),
        ResourceType::Vertex => vertex::validate(config),
    };
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::ResourceType;

    #[test]
    fn resource_names_and_suggestions() {
        assert_eq!("local-container".parse(), Ok(ResourceType::Docker));
        assert_eq!("gcp-vertex".parse(), Ok(ResourceType::Vertex));
        let e = "dockr".parse::<ResourceType>().unwrap_err();
        assert!(e.contains("did you mean \"docker\"?"), "{e}");
        let e = "Kubernets".parse::<ResourceType>().unwrap_err();
        assert!(e.contains("did you mean \"kubernetes\"?"), "{e}");
        let e = "slurm".parse::<ResourceType>().unwrap_err();
        assert!(!e.contains("did you mean"), "{e}");
        assert!(e.contains("expected one of local-process"), "{e}");
    }
}
