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
//! [`from_config`] builds the environment (reading credential files, never the
//! network); [`Environment::verify`] is the start-up check: it proves the credentials
//! work, and when none are found its error names every source that was tried.
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

/// Why an environment cannot be used. Messages start with the environment's type and
/// name what was tried; they never contain a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EnvError {
    /// No credential source had credentials. The message lists every source tried.
    #[error("{0}")]
    NoCredentials(String),
    /// Credentials were found but are invalid, expired or refused.
    #[error("{0}")]
    Refused(String),
    /// A credential or cloud endpoint could not be reached or answered nonsense.
    #[error("{0}")]
    Unavailable(String),
    /// The configuration cannot work (a credential file of an unsupported type, a
    /// feature this build lacks…).
    #[error("{0}")]
    Config(String),
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
        EnvironmentConfig::Gcp { region, project } => Ok(Arc::new(gcp::GcpEnvironment::new(
            region,
            project.as_deref(),
            ambient,
        )?)),
        #[cfg(feature = "azure")]
        EnvironmentConfig::Azure => Ok(Arc::new(azure::AzureEnvironment::new(ambient)?)),
        #[allow(unreachable_patterns)]
        other => {
            let _ = ambient;
            Err(not_built(other.kind()))
        }
    }
}

/// The error for an environment whose cargo feature this build lacks.
#[allow(dead_code)]
fn not_built(kind: EnvironmentType) -> EnvError {
    let k = kind.as_str();
    EnvError::Config(format!(
        "{k}: this hoist was built without the `{k}` feature of hoist-agent; rebuild with `--features {k}` (it is on by default)"
    ))
}
