//! GCP Artifact Registry (`registry: {type: gcr, uri:
//! REGION-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE}` or `{type: gcr, repository: …,
//! image-name: …}` with region and project from the `gcp` environment).
//!
//! Credentials: user `oauth2accesstoken`, password = an OAuth2 access token from the
//! environment's application default credentials (Google's documented Docker
//! credential for Artifact Registry). "Does the image exist": a manifest HEAD, whose
//! `Bearer` challenge is answered with those credentials at the registry's token
//! endpoint.
//!
//! The images of a registry go to `HOST/PROJECT/REPOSITORY/IMAGE:TAG`, the tag being the
//! build's content hash. [`GcrRegistry::connect`] takes an optional other host (the
//! tests' fake registry), as `ecr` does; it is not a config key.

use async_trait::async_trait;

use super::oci::{Credential, Credentials, ManifestClient, env_to_registry, reference_in};
use super::{Registry, RegistryAuth, RegistryError};
use crate::config;
use crate::environments::gcp::GcpEnvironment;

/// The Docker user name whose password is an OAuth2 access token.
pub const OAUTH2_USER: &str = "oauth2accesstoken";

/// An Artifact Registry image repository.
#[derive(Debug)]
pub struct GcrRegistry {
    env: GcpEnvironment,
    /// `PROJECT/REPOSITORY/IMAGE`.
    path: String,
    client: ManifestClient,
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
            None => env.project().await.map_err(env_to_registry)?,
        };
        let host = match registry_host {
            Some(h) => h.to_string(),
            None => format!("{}-docker.pkg.dev", cfg.region),
        };
        Ok(GcrRegistry {
            env: env.clone(),
            path: format!("{project}/{}/{}", cfg.repository, cfg.image_name),
            client: ManifestClient::new(&host, false)?,
        })
    }

    pub fn host(&self) -> &str {
        self.client.host()
    }

    /// `oauth2accesstoken` + a fresh (or cached) access token.
    pub async fn credentials(&self) -> Result<Credentials, RegistryError> {
        let token = self.env.access_token().await.map_err(env_to_registry)?;
        Ok(Credentials {
            credential: Credential::Basic {
                username: OAUTH2_USER.to_string(),
                password: token,
            },
            from: format!("an access token of {}", self.env.credentials_from()),
        })
    }
}

#[async_trait]
impl Registry for GcrRegistry {
    fn kind(&self) -> &'static str {
        "gcr"
    }

    fn repository(&self) -> Option<String> {
        Some(format!("{}/{}", self.host(), self.path))
    }

    async fn auth(&self) -> Result<Option<RegistryAuth>, RegistryError> {
        Ok(self.credentials().await?.to_registry_auth(self.host()))
    }

    async fn has_image(&self, image: &str) -> Result<bool, RegistryError> {
        let (repo, reference) = reference_in(image, self.host())?;
        let creds = self.credentials().await?;
        self.client.manifest_exists(&repo, &reference, &creds).await
    }
}
