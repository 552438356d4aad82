//! GCP Artifact Registry (`registry: {type: gcr, uri:
//! REGION-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE}` or `{type: gcr, repository: …,
//! image-name: …}` with region and project from the `gcp` environment): the generic
//! [`OciRegistry`] over [`GoogleTokens`].
//!
//! Credentials: user `oauth2accesstoken`, password = an OAuth2 access token from the
//! environment's application default credentials (Google's documented Docker
//! credential for Artifact Registry; the environment caches it). "Does the image
//! exist": a manifest HEAD, whose `Bearer` challenge is answered with those
//! credentials at the registry's token endpoint.
//!
//! The images of a registry go to `HOST/PROJECT/REPOSITORY/IMAGE:TAG`, the tag being the
//! build's content hash. [`GcrRegistry::connect`] takes an optional other host (the
//! tests' fake registry), as `ecr` does; it is not a config key.

use async_trait::async_trait;

use super::RegistryError;
use super::oci::{Credential, Credentials, Issued, ManifestClient, OciRegistry, TokenSource};
use crate::config;
use crate::environments::gcp::GcpEnvironment;

/// The Docker user name whose password is an OAuth2 access token.
pub const OAUTH2_USER: &str = "oauth2accesstoken";

/// An Artifact Registry image repository.
pub type GcrRegistry = OciRegistry<GoogleTokens>;

/// Access tokens of the `gcp` environment, as `oauth2accesstoken`'s password.
#[derive(Debug)]
pub struct GoogleTokens {
    env: GcpEnvironment,
}

impl GcrRegistry {
    /// The repository of `cfg`; the project, when the config has none, from `env`.
    pub async fn connect(
        cfg: &config::GcrRegistry,
        env: &GcpEnvironment,
        registry_host: Option<&str>,
    ) -> Result<GcrRegistry, RegistryError> {
        let project = match &cfg.project {
            Some(p) => p.clone(),
            None => env.project().await?,
        };
        let host = match registry_host {
            Some(h) => h.to_string(),
            None => format!("{}-docker.pkg.dev", cfg.region),
        };
        let path = format!("{project}/{}/{}", cfg.repository, cfg.image_name);
        OciRegistry::with_source(&host, false, &path, GoogleTokens { env: env.clone() })
    }
}

#[async_trait]
impl TokenSource for GoogleTokens {
    fn kind(&self) -> &'static str {
        "gcr"
    }

    /// `oauth2accesstoken` + a fresh (or the environment's cached) access token.
    async fn issue(&self, _: &ManifestClient) -> Result<Issued, RegistryError> {
        let token = self.env.access_token().await?;
        Ok(Issued {
            credentials: Credentials {
                credential: Credential::Basic {
                    username: OAUTH2_USER.to_string(),
                    password: token,
                },
                from: format!("an access token of {}", self.env.credentials_from()),
            },
            // The environment caches the token for its lifetime.
            lifetime: None,
        })
    }
}
