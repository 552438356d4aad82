//! Azure Container Registry (`registry: {type: acr, uri:
//! https://NAME.azurecr.io/REPOSITORY}`), with the `azure` environment's credential.
//!
//! Credentials (ACR's documented AAD flow):
//! 1. an Azure AD access token for Azure Resource Manager from the environment;
//! 2. exchanged for an ACR refresh token: `POST https://NAME.azurecr.io/oauth2/exchange`,
//!    form `grant_type=access_token&service=NAME.azurecr.io&tenant=…&access_token=…`
//!    → `{"refresh_token": …}` (cached for an hour; ACR's last three);
//! 3. Docker logs in with user `00000000-0000-0000-0000-000000000000` and the refresh
//!    token as password.
//!
//! "Does the image exist": a manifest HEAD; the `Bearer` challenge is answered with an
//! ACR access token from `POST https://NAME.azurecr.io/oauth2/token`, form
//! `grant_type=refresh_token&service=…&scope=repository:REPO:pull&refresh_token=…`.
//!
//! [`AcrRegistry::connect`] takes an optional other host (the tests' fake ACR), as
//! `ecr` does; it is not a config key.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::oci::{Credential, Credentials, ManifestClient, env_to_registry, reference_in};
use super::{Registry, RegistryAuth, RegistryError};
use crate::config;
use crate::environments::azure::{ARM_SCOPE, AzureEnvironment};
use crate::environments::http::{self, CachedToken, error_chain};

/// The user name of ACR's AAD refresh tokens.
pub const ACR_USER: &str = "00000000-0000-0000-0000-000000000000";

/// An ACR repository.
#[derive(Debug)]
pub struct AcrRegistry {
    env: AzureEnvironment,
    repository: String,
    client: ManifestClient,
    http: reqwest::Client,
    cache: tokio::sync::Mutex<Option<(CachedToken, String)>>,
}

impl AcrRegistry {
    pub fn connect(
        cfg: &config::AcrRegistry,
        env: &AzureEnvironment,
        registry_host: Option<&str>,
    ) -> Result<AcrRegistry, RegistryError> {
        let host = registry_host
            .map(str::to_string)
            .unwrap_or_else(|| cfg.host());
        Ok(AcrRegistry {
            env: env.clone(),
            repository: cfg.repository.trim_matches('/').to_string(),
            client: ManifestClient::new(&host, false)?,
            http: http::client(Duration::from_secs(5), Duration::from_secs(30)),
            cache: tokio::sync::Mutex::new(None),
        })
    }

    pub fn host(&self) -> &str {
        self.client.host()
    }

    /// An ACR refresh token for the environment's Azure AD identity (cached).
    pub async fn credentials(&self) -> Result<Credentials, RegistryError> {
        let mut cache = self.cache.lock().await;
        if let Some((t, from)) = cache.as_ref().filter(|(t, _)| t.is_fresh()) {
            return Ok(Credentials {
                credential: Credential::IdentityToken(t.token.clone()),
                from: from.clone(),
            });
        }
        let host = self.host();
        let (aad, source) = self.env.token(ARM_SCOPE).await.map_err(env_to_registry)?;
        let url = format!("{}/oauth2/exchange", self.client.base_url().await?);
        let mut pairs = vec![
            ("grant_type", "access_token"),
            ("service", host),
            ("access_token", aad.expose()),
        ];
        if let Some(t) = self.env.tenant_id() {
            pairs.push(("tenant", t));
        }
        let resp = self
            .http
            .post(&url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(http::form(&pairs))
            .send()
            .await
            .map_err(|e| {
                RegistryError::Unavailable(format!(
                    "acr: {url} could not be reached: {}",
                    error_chain(&e)
                ))
            })?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(RegistryError::Auth(format!(
                "registry {host} refused the Azure AD token of {source} at /oauth2/exchange: {}",
                acr_reason(status, &body)
            )));
        }
        if !status.is_success() {
            return Err(RegistryError::Unavailable(format!(
                "registry {host}: /oauth2/exchange answered {}",
                acr_reason(status, &body)
            )));
        }
        #[derive(Deserialize)]
        struct Exchange {
            refresh_token: String,
        }
        let ex: Exchange = serde_json::from_str(&body).map_err(|e| {
            RegistryError::Unavailable(format!(
                "registry {host}: /oauth2/exchange answered no refresh token ({e})"
            ))
        })?;
        let from = format!("the ACR token exchange for {source}");
        let token = CachedToken::new(
            crate::environments::Secret::new(ex.refresh_token),
            Some(3600),
        );
        let creds = Credentials {
            credential: Credential::IdentityToken(token.token.clone()),
            from: from.clone(),
        };
        *cache = Some((token, from));
        Ok(creds)
    }
}

/// ACR's error bodies: `{"errors":[{"code":…,"message":…}]}` or OAuth2 style.
fn acr_reason(status: reqwest::StatusCode, body: &str) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<E>,
    }
    #[derive(Deserialize)]
    struct E {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_str::<Errors>(body) {
        Ok(e) if !e.errors.is_empty() => format!(
            "HTTP {status}: {}",
            e.errors
                .iter()
                .map(|e| format!("{}: {}", e.code, e.message))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        _ => http::oauth_error(status, body),
    }
}

#[async_trait]
impl Registry for AcrRegistry {
    fn kind(&self) -> &'static str {
        "acr"
    }

    fn repository(&self) -> Option<String> {
        Some(format!("{}/{}", self.host(), self.repository))
    }

    /// User `00000000-0000-0000-0000-000000000000`, password = the refresh token.
    async fn auth(&self) -> Result<Option<RegistryAuth>, RegistryError> {
        let creds = self.credentials().await?;
        Ok(match creds.credential {
            Credential::IdentityToken(t) => Some(RegistryAuth {
                server: self.host().to_string(),
                username: ACR_USER.to_string(),
                password: t.expose().to_string(),
            }),
            _ => None,
        })
    }

    async fn has_image(&self, image: &str) -> Result<bool, RegistryError> {
        let (repo, reference) = reference_in(image, self.host())?;
        let creds = self.credentials().await?;
        self.client.manifest_exists(&repo, &reference, &creds).await
    }
}
