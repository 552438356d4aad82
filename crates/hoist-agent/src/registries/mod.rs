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

use async_trait::async_trait;

pub mod local;

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
