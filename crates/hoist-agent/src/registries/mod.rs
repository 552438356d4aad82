//! Registries: where built images go and how the agent proves it may push and pull.
//!
//! - [`local`]: no registry; images stay in the agent's Docker daemon.
//! - `oci`: any OCI registry (`registry: {uri: HOST[:PORT]/REPO}`).
//! - `ecr`, `gcr`, `acr`: the clouds' registries, with tokens from their environments.
//!
//! Every remote registry is the one [`oci::OciRegistry`], generic over where its
//! credentials come from ([`oci::TokenSource`]: a Docker config, ECR's
//! `GetAuthorizationToken`, a Google access token, ACR's token exchange); `ecr.rs`,
//! `gcr.rs` and `acr.rs` hold only their token source and how the config names the
//! repository.
//!
//! "Does the image exist" always asks where the image is meant to be (the registry's
//! manifest endpoint, or the local daemon for [`local`]), never a cache. Token fetches
//! and manifest checks are retried, with capped backoff, when the failure is transient
//! ([`RegistryError::is_transient`]); refused credentials are never asked twice.
//!
//! Architecture Invariant: registry credentials travel only in the Engine API's
//! `X-Registry-Auth` header or an HTTP `Authorization` header; never on a command line,
//! in a log line or in an error message.

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::RegistryConfig;
use crate::environments::{BoxError, EnvError, Environment, Secret, http};

#[cfg(feature = "azure")]
pub mod acr;
#[cfg(feature = "aws")]
pub mod ecr;
#[cfg(feature = "gcp")]
pub mod gcr;
pub mod local;
pub mod oci;
pub mod push;

/// How many times a token fetch or a manifest check is tried when it keeps failing
/// transiently (with pauses of 200 ms, doubling, at most 2 s).
pub const RETRY_ATTEMPTS: u32 = http::RETRY_ATTEMPTS;

/// Credentials for one registry, as the Docker Engine API takes them. The password
/// (or identity token) is a [`Secret`]: `Debug` never shows it.
#[derive(Clone, Debug)]
pub struct RegistryAuth {
    /// `HOST[:PORT]` the credentials are for.
    pub server: String,
    pub username: String,
    pub password: Secret,
}

impl RegistryAuth {
    /// The credentials as a Docker `config.json` document (`{"auths": {HOST: {…}}}`),
    /// the form of a Kubernetes `kubernetes.io/dockerconfigjson` Secret and of Kaniko's
    /// `/kaniko/.docker/config.json`. A secret itself.
    pub fn docker_config_json(&self) -> Secret {
        use base64::Engine as _;
        let pair = format!("{}:{}", self.username, self.password.expose());
        let doc = serde_json::json!({
            "auths": {
                self.server.as_str(): {
                    "username": self.username,
                    "password": self.password.expose(),
                    "auth": base64::engine::general_purpose::STANDARD.encode(pair),
                }
            }
        });
        Secret::new(doc.to_string())
    }
}

/// Why a registry could not be used. Each variant keeps its cause as
/// [`std::error::Error::source`] (the message, which a person reads in the run's
/// failure, already quotes it) and never contains a credential.
///
/// Three questions callers ask: [`RegistryError::is_transient`] (worth asking again
/// shortly: token fetches and manifest checks are retried on it),
/// [`RegistryError::is_refusal`] (credentials missing or refused: never retried) and
/// [`RegistryError::is_config`] (the configuration cannot work as it is).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry or its token endpoint refused the credentials, or wants some and
    /// none were found (HTTP 401/403). The message names the registry, the user and
    /// where the credentials came from.
    #[error("{message}")]
    Refused { message: String },
    /// The registry or its token endpoint gave no answer (connect, TLS, timeout).
    #[error("{message}")]
    Unreachable {
        message: String,
        #[source]
        source: reqwest::Error,
    },
    /// An HTTP status other than the ones the protocol expects (5xx, 429, …).
    #[error("{message}")]
    Status { message: String, status: u16 },
    /// An answer that is not what the protocol documents (no challenge, no token,
    /// unreadable JSON).
    #[error("{message}")]
    Unreadable {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The environment the registry's tokens come from (aws, gcp, azure) failed.
    #[error("{0}")]
    Environment(#[source] EnvError),
    /// A Docker config (`credentials-file`, `~/.docker/config.json`) cannot be read.
    #[error("{message}")]
    CredentialsFile {
        message: String,
        #[source]
        source: std::io::Error,
    },
    /// A Docker config that is not one, or an entry in it that cannot be decoded.
    #[error("{message}")]
    CredentialsFormat {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// A `docker-credential-*` helper could not be run, timed out or failed.
    #[error("{message}")]
    Helper {
        message: String,
        /// It could not be started (not installed): a configuration problem.
        missing: bool,
        #[source]
        source: Option<std::io::Error>,
    },
    /// The Docker daemon failed a push, a pull or an image inspection; `refused`
    /// when the registry behind it refused the credentials.
    #[error("{message}")]
    Daemon {
        message: String,
        refused: bool,
        #[source]
        source: bollard::errors::Error,
    },
    /// The configuration cannot work (plain HTTP to a remote host, an image outside
    /// the registry, a missing environment, a feature this build lacks…).
    #[error("{0}")]
    Config(String),
}

impl RegistryError {
    /// Worth asking again shortly: no answer, a 5xx/429 status, a helper that timed
    /// out, a daemon connection that broke, a transient environment failure. Never a
    /// refusal or a configuration problem.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Unreachable { source, .. } => http::transient_request(source),
            RegistryError::Status { status, .. } => http::transient_status(*status),
            RegistryError::Environment(e) => e.is_transient(),
            RegistryError::Helper { source, .. } => source
                .as_ref()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut),
            RegistryError::Daemon {
                refused, source, ..
            } => !refused && daemon_transient(source),
            RegistryError::Refused { .. }
            | RegistryError::Unreadable { .. }
            | RegistryError::CredentialsFile { .. }
            | RegistryError::CredentialsFormat { .. }
            | RegistryError::Config(_) => false,
        }
    }

    /// Credentials missing or refused, by the registry, its token endpoint, the
    /// daemon's push, or the cloud environment: a person has to act.
    pub fn is_refusal(&self) -> bool {
        match self {
            RegistryError::Refused { .. } => true,
            RegistryError::Daemon { refused, .. } => *refused,
            RegistryError::Environment(e) => e.is_refusal(),
            _ => false,
        }
    }

    /// The configuration cannot work as it is: a credentials file that cannot be read
    /// or parsed, a helper that is not installed, a setting refused.
    pub fn is_config(&self) -> bool {
        match self {
            RegistryError::Config(_)
            | RegistryError::CredentialsFile { .. }
            | RegistryError::CredentialsFormat { .. } => true,
            RegistryError::Helper { missing, .. } => *missing,
            RegistryError::Environment(e) => e.is_config(),
            _ => false,
        }
    }
}

/// A daemon error that may go away: the connection to the daemon broke or timed out.
fn daemon_transient(e: &bollard::errors::Error) -> bool {
    use bollard::errors::Error;
    match e {
        Error::RequestTimeoutError | Error::IOError { .. } | Error::HyperResponseError { .. } => {
            true
        }
        // (A 500 from the daemon is usually a refusal of what was asked.)
        Error::DockerResponseServerError { status_code, .. } => {
            matches!(*status_code, 502..=504)
        }
        _ => false,
    }
}

impl From<EnvError> for RegistryError {
    fn from(e: EnvError) -> RegistryError {
        RegistryError::Environment(e)
    }
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
