//! Environments: the cloud the agent runs in (`aws`, `gcp`, `azure`), its default
//! credential chain, and the check made when the agent starts.
//!
//! - [`aws`] (feature `aws`): region + the AWS default credential chain (environment
//!   variables, profile files, web identity, container credentials, instance role),
//!   checked with `sts:GetCallerIdentity`.
//! - [`gcp`] (feature `gcp`): region, project + application default credentials
//!   (`GOOGLE_APPLICATION_CREDENTIALS`, the gcloud ADC file, the metadata server),
//!   checked by fetching an OAuth access token.
//! - [`azure`] (feature `azure`): the default Azure credential (client secret or
//!   certificate from the environment, workload identity, managed identity), checked
//!   by fetching an Azure AD token for Azure Resource Manager.
//!
//! Every credential chain reads its inputs (environment variables, the home
//! directory) from an [`Ambient`], which is the agent's own process in production
//! ([`Ambient::process`]) and an explicit map in tests: nothing here calls
//! `std::env::var` behind the caller's back.
//!
//! [`from_config`] builds the environment (reading credential files on the blocking
//! pool, never the network); [`Environment::verify`] is the start-up check: it proves the credentials
//! work, and when none are found its error names every source that was tried.
//!
//! Errors are [`EnvError`]s that keep their cause (the request error, the SDK error,
//! the unreadable answer) and say whether asking again may help
//! ([`EnvError::is_transient`]); the registries retry token fetches on that.
//!
//! Architecture Invariant: secrets (keys, tokens, passwords) are held in [`Secret`],
//! whose `Debug` hides them; they are sent only in request bodies or `Authorization`
//! headers and never appear in a log line or an error message. Errors name variables
//! and files, never their contents.

use std::any::Any;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use crate::config::{EnvironmentConfig, EnvironmentType};

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "azure")]
pub mod azure;
#[cfg(feature = "gcp")]
pub mod gcp;
pub(crate) mod http;
#[cfg(any(feature = "gcp", feature = "azure"))]
pub(crate) mod jwt;

/// What credential chains read from the agent's process: environment variables and
/// the home directory. Tests pass an explicit one instead of the process's.
#[derive(Clone, Default)]
pub struct Ambient {
    vars: BTreeMap<String, String>,
    home: Option<PathBuf>,
}

impl std::fmt::Debug for Ambient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: values may be secrets.
        f.debug_struct("Ambient")
            .field("vars", &self.vars.keys().collect::<Vec<_>>())
            .field("home", &self.home)
            .finish()
    }
}

impl Ambient {
    /// The agent process's environment variables (those with UTF-8 names and values)
    /// and `HOME`.
    pub fn process() -> Ambient {
        let vars: BTreeMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        let home = vars
            .get("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from);
        Ambient { vars, home }
    }

    /// Exactly these variables and this home directory.
    pub fn new<K, V>(vars: impl IntoIterator<Item = (K, V)>, home: Option<PathBuf>) -> Ambient
    where
        K: Into<String>,
        V: Into<String>,
    {
        Ambient {
            vars: vars
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            home,
        }
    }

    /// The same, with `name` set to `value`.
    pub fn with_var(mut self, name: impl Into<String>, value: impl Into<String>) -> Ambient {
        self.vars.insert(name.into(), value.into());
        self
    }

    /// A variable's value; unset and empty are the same.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    pub fn home(&self) -> Option<&Path> {
        self.home.as_deref()
    }

    /// `~/REL` (`None` without a home directory).
    pub fn in_home(&self, rel: &str) -> Option<PathBuf> {
        self.home.as_ref().map(|h| h.join(rel))
    }
}

/// A credential (token, key, password): the one `Secret` of hoist-core.
pub use hoist_core::secret::Secret;

/// A cause whose type depends on the call: the AWS SDK's `SdkError<OperationError, _>`,
/// aws-config's `CredentialsError`, a key parser's error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why an environment cannot be used. Messages start with the environment's type and
/// name what was tried; they never contain a secret. Each variant keeps its cause as
/// [`std::error::Error::source`] (the message already quotes it).
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// No credential source had credentials. The message lists every source tried.
    #[error("{message}")]
    NoCredentials { message: String },
    /// Credentials were found but are invalid, expired or refused (an OAuth 4xx, an AWS
    /// service error).
    #[error("{message}")]
    Refused {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// A credential or cloud endpoint gave no answer (connect, TLS, timeout).
    #[error("{message}")]
    Unreachable {
        message: String,
        #[source]
        source: reqwest::Error,
    },
    /// An endpoint answered an HTTP status other than a refusal (5xx, 429, …).
    #[error("{message}")]
    Status { message: String, status: u16 },
    /// An endpoint answered something that is not what it documents (not a token).
    #[error("{message}")]
    Unreadable {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// An AWS SDK call failed without a refusal (no connection, a timeout, an
    /// unreadable response); `transient` is the SDK's verdict.
    #[error("{message}")]
    Sdk {
        message: String,
        transient: bool,
        #[source]
        source: BoxError,
    },
    /// A credential file (key, certificate, token file) cannot be read.
    #[error("{message}")]
    File {
        message: String,
        #[source]
        source: std::io::Error,
    },
    /// The configuration cannot work (a credential file of an unsupported type, an
    /// endpoint that is not an allowed URL, a feature this build lacks…).
    #[error("{message}")]
    Config {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
}

impl EnvError {
    pub(crate) fn no_credentials(message: impl Into<String>) -> EnvError {
        EnvError::NoCredentials {
            message: message.into(),
        }
    }

    pub(crate) fn refused(message: impl Into<String>) -> EnvError {
        EnvError::Refused {
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> EnvError {
        EnvError::Config {
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn config_because(
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> EnvError {
        EnvError::Config {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// Worth asking again shortly: no answer, a 5xx/429 status, a transient SDK
    /// failure. Never a refusal, missing credentials or a configuration problem.
    pub fn is_transient(&self) -> bool {
        match self {
            EnvError::Unreachable { source, .. } => http::transient_request(source),
            EnvError::Status { status, .. } => http::transient_status(*status),
            EnvError::Sdk { transient, .. } => *transient,
            EnvError::NoCredentials { .. }
            | EnvError::Refused { .. }
            | EnvError::Unreadable { .. }
            | EnvError::File { .. }
            | EnvError::Config { .. } => false,
        }
    }

    /// Missing or refused credentials: what a person must fix, never retried.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            EnvError::NoCredentials { .. } | EnvError::Refused { .. }
        )
    }

    /// The configuration (or a credential file) cannot work as it is.
    pub fn is_config(&self) -> bool {
        matches!(self, EnvError::Config { .. } | EnvError::File { .. })
    }
}

/// What [`Environment::verify`] established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Where the credentials came from (`environment variables (AWS_ACCESS_KEY_ID…)`,
    /// `GOOGLE_APPLICATION_CREDENTIALS (/path/key.json)`, …).
    pub credentials_from: String,
    /// Who the cloud says the agent is (an ARN, a service-account e-mail, a client id),
    /// when it says.
    pub principal: Option<String>,
}

impl std::fmt::Display for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.principal {
            Some(p) => write!(f, "{p} (credentials from {})", self.credentials_from),
            None => write!(f, "credentials from {}", self.credentials_from),
        }
    }
}

/// The cloud the agent runs in.
#[async_trait]
pub trait Environment: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> EnvironmentType;

    /// The start-up check: finds credentials and proves that the cloud accepts them.
    /// Missing credentials give [`EnvError::NoCredentials`] listing what was tried;
    /// refused ones [`EnvError::Refused`] naming where they came from.
    async fn verify(&self) -> Result<Verified, EnvError>;

    /// For registries that need the concrete environment (`ecr` the AWS SDK
    /// configuration, `gcr` the OAuth token source, `acr` the Azure AD credential).
    fn as_any(&self) -> &dyn Any;
}

/// The environment `cfg` describes, with the agent process's variables and home.
pub async fn from_config(cfg: &EnvironmentConfig) -> Result<Arc<dyn Environment>, EnvError> {
    from_config_with(cfg, &Ambient::process()).await
}

/// The environment `cfg` describes, with credential-chain inputs from `ambient`.
pub async fn from_config_with(
    cfg: &EnvironmentConfig,
    ambient: &Ambient,
) -> Result<Arc<dyn Environment>, EnvError> {
    match cfg {
        #[cfg(feature = "aws")]
        EnvironmentConfig::Aws { region } => {
            Ok(Arc::new(aws::AwsEnvironment::new(region, ambient).await?))
        }
        #[cfg(feature = "gcp")]
        EnvironmentConfig::Gcp { region, project } => {
            let (region, project, ambient) = (region.clone(), project.clone(), ambient.clone());
            let env = off_runtime(move || {
                gcp::GcpEnvironment::new(&region, project.as_deref(), &ambient)
            })
            .await?;
            Ok(Arc::new(env))
        }
        #[cfg(feature = "azure")]
        EnvironmentConfig::Azure => {
            let ambient = ambient.clone();
            let env = off_runtime(move || azure::AzureEnvironment::new(&ambient)).await?;
            Ok(Arc::new(env))
        }
        #[allow(unreachable_patterns)]
        other => {
            let _ = ambient;
            Err(not_built(other.kind()))
        }
    }
}

/// Runs a constructor that reads credential files on tokio's blocking pool, so the
/// agent's single-threaded runtime never waits on the disk.
#[cfg(any(feature = "gcp", feature = "azure"))]
async fn off_runtime<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, EnvError> + Send + 'static,
) -> Result<T, EnvError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(EnvError::config_because(
            "the environment could not be set up: the agent is shutting down",
            e,
        )),
    }
}

/// The error for an environment whose cargo feature this build lacks.
#[allow(dead_code)]
fn not_built(kind: EnvironmentType) -> EnvError {
    let k = kind.as_str();
    EnvError::config(format!(
        "{k}: this hoist was built without the `{k}` feature of hoist-agent; rebuild with `--features {k}` (it is on by default)"
    ))
}
