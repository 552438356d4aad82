//! Registries: where built images go and how the agent proves it may push and pull.
//!
//! - [`local`]: no registry; images stay in the agent's Docker daemon.
//! - `oci`: any OCI registry (`registry: {uri: HOST[:PORT]/REPO}`).
//! - `ecr`, `gcr`, `acr`: the clouds' registries, with tokens from their environments.
//!
//! "Does the image exist" always asks where the image is meant to be (the registry's
//! manifest endpoint, or the local daemon for [`local`]), never a cache.
//!
//! Architecture Invariant: registry credentials travel only in the Engine API's
//! `X-Registry-Auth` header or an HTTP `Authorization` header; never on a command line,
//! in a log line or in an error message.

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::RegistryConfig;
use crate::environments::Environment;

#[cfg(feature = "azure")]
pub mod acr;
#[cfg(feature = "aws")]
pub mod ecr;
#[cfg(feature = "gcp")]
pub mod gcr;
pub mod local;
pub mod oci;
pub mod push;

/// Credentials for one registry. `Debug` never shows the password.
#[derive(Clone)]
pub struct RegistryAuth {
    /// `HOST[:PORT]` the credentials are for.
    pub server: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("password", &"****")
            .finish()
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// Credentials missing, expired or refused; the message names the registry.
    #[error("{0}")]
    Auth(String),
    /// The registry could not be reached or answered something unexpected.
    #[error("{0}")]
    Unavailable(String),
    /// The configuration cannot work (plain HTTP to a remote host, bad URI…).
    #[error("{0}")]
    Config(String),
}

#[async_trait]
pub trait Registry: Send + Sync {
    /// `local`, `oci`, `ecr`, `gcr`, `acr`.
    fn kind(&self) -> &'static str;

    /// The repository built images are tagged into (`127.0.0.1:5000/hoist/jobs`), or
    /// `None` when images stay in the local daemon.
    fn repository(&self) -> Option<String>;

    /// Credentials to push and pull, fetched fresh when they are short-lived tokens.
    async fn auth(&self) -> Result<Option<RegistryAuth>, RegistryError>;

    /// Whether `image` (a full reference inside [`Registry::repository`], or a local
    /// name for `local`) exists where runs will pull it from.
    async fn has_image(&self, image: &str) -> Result<bool, RegistryError>;
}

/// The registry `cfg` describes.
///
/// - `env`: the agent's environment (from [`crate::environments::from_config`]);
///   `ecr`, `gcr` and `acr` need the matching one (the config loader already insists
///   on it). ECR checks here that its repository exists (an AWS call); GCR asks the
///   environment for its project when the config names none.
/// - `docker`: the daemon of the docker builder/runner, which the local registry
///   (no `registry` configured) asks; without one, `RegistryConfig::Local` is a
///   [`RegistryError::Config`].
///
/// The OCI registry's Docker config is found through the agent process's
/// `DOCKER_CONFIG` / `HOME` (use [`oci::OciRegistry::new`] to pass others).
pub async fn from_config(
    cfg: &RegistryConfig,
    env: Option<&Arc<dyn Environment>>,
    docker: Option<&bollard::Docker>,
) -> Result<Arc<dyn Registry>, RegistryError> {
    match cfg {
        RegistryConfig::Local => match docker {
            Some(d) => Ok(Arc::new(local::LocalRegistry::new(d.clone()))),
            None => Err(RegistryError::Config(
                "no registry is configured, so images must stay in the local Docker daemon, but this agent has no Docker connection; configure `registry`"
                    .to_string(),
            )),
        },
        RegistryConfig::Oci(c) => Ok(Arc::new(oci::OciRegistry::new(
            c,
            &crate::environments::Ambient::process(),
        )?)),
        #[cfg(feature = "aws")]
        RegistryConfig::Ecr(c) => {
            let aws = environment::<crate::environments::aws::AwsEnvironment>(env, "ecr")?;
            Ok(Arc::new(ecr::EcrRegistry::connect(c, aws, None).await?))
        }
        #[cfg(feature = "gcp")]
        RegistryConfig::Gcr(c) => {
            let gcp = environment::<crate::environments::gcp::GcpEnvironment>(env, "gcr")?;
            Ok(Arc::new(gcr::GcrRegistry::connect(c, gcp, None).await?))
        }
        #[cfg(feature = "azure")]
        RegistryConfig::Acr(c) => {
            let azure =
                environment::<crate::environments::azure::AzureEnvironment>(env, "acr")?;
            Ok(Arc::new(acr::AcrRegistry::connect(c, azure, None)?))
        }
        #[allow(unreachable_patterns)]
        other => {
            let _ = env;
            let kind = other.kind().map(|k| k.as_str()).unwrap_or("local");
            let feature = match kind {
                "ecr" => "aws",
                "gcr" => "gcp",
                _ => "azure",
            };
            Err(RegistryError::Config(format!(
                "a {kind} registry needs the `{feature}` feature of hoist-agent, which this build lacks; rebuild with `--features {feature}` (it is on by default)"
            )))
        }
    }
}

/// The concrete environment a cloud registry needs.
#[cfg(any(feature = "aws", feature = "gcp", feature = "azure"))]
fn environment<'a, E: 'static>(
    env: Option<&'a Arc<dyn Environment>>,
    kind: &str,
) -> Result<&'a E, RegistryError> {
    let needed = match kind {
        "ecr" => "an aws",
        "gcr" => "a gcp",
        _ => "an azure",
    };
    let env = env.ok_or_else(|| {
        RegistryError::Config(format!("a {kind} registry needs {needed} environment"))
    })?;
    env.as_any().downcast_ref::<E>().ok_or_else(|| {
        RegistryError::Config(format!(
            "a {kind} registry needs {needed} environment, not {}",
            env.kind().as_str()
        ))
    })
}
