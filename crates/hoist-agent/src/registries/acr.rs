//! Azure Container Registry (`registry: {type: acr, uri:
//! https://NAME.azurecr.io/REPOSITORY}`), with the `azure` environment's credential:
//! the generic [`OciRegistry`] over [`AcrTokens`].
//!
//! Credentials (ACR's documented AAD flow):
//! 1. an Azure AD access token for Azure Resource Manager from the environment;
//! 2. exchanged for an ACR refresh token: `POST https://NAME.azurecr.io/oauth2/exchange`,
//!    form `grant_type=access_token&service=NAME.azurecr.io&tenant=…&access_token=…`
//!    → `{"refresh_token": …}` (reused for an hour; ACR's last three);
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

use super::oci::{
    Credential, Credentials, Issued, ManifestClient, OciRegistry, TokenSource, distribution_errors,
};
use super::{RegistryAuth, RegistryError};
use crate::config;
use crate::environments::Secret;
use crate::environments::azure::{ARM_SCOPE, AzureEnvironment};
use crate::environments::http::{self, error_chain};

/// The user name of ACR's AAD refresh tokens.
pub const ACR_USER: &str = "00000000-0000-0000-0000-000000000000";

/// How long ACR's refresh tokens are reused.
const REFRESH_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// An ACR repository.
pub type AcrRegistry = OciRegistry<AcrTokens>;

/// ACR refresh tokens for the `azure` environment's Azure AD identity.
#[derive(Debug)]
pub struct AcrTokens {
    env: AzureEnvironment,
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
        OciRegistry::with_source(
            &host,
            false,
            &cfg.repository,
            AcrTokens { env: env.clone() },
        )
    }
}

#[async_trait]
impl TokenSource for AcrTokens {
    fn kind(&self) -> &'static str {
        "acr"
    }

    /// An ACR refresh token for the environment's Azure AD identity.
    async fn issue(&self, registry: &ManifestClient) -> Result<Issued, RegistryError> {
        let host = registry.host();
        let (aad, source) = self.env.token(ARM_SCOPE).await?;
        let url = format!("{}/oauth2/exchange", registry.base_url().await?);
        let mut pairs = vec![
            ("grant_type", "access_token"),
            ("service", host),
            ("access_token", aad.expose()),
        ];
        if let Some(t) = self.env.tenant_id() {
            pairs.push(("tenant", t));
        }
        let resp = http::post_form(registry.http(), &url, &pairs)
            .send()
            .await
            .map_err(|source| RegistryError::Unreachable {
                message: format!("acr: {url} could not be reached: {}", error_chain(&source)),
                source,
            })?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(RegistryError::Refused {
                message: format!(
                    "registry {host} refused the Azure AD token of {source} at /oauth2/exchange: {}",
                    acr_reason(status, &body)
                ),
            });
        }
        if !status.is_success() {
            return Err(RegistryError::Status {
                message: format!(
                    "registry {host}: /oauth2/exchange answered {}",
                    acr_reason(status, &body)
                ),
                status: status.as_u16(),
            });
        }
        #[derive(Deserialize)]
        struct Exchange {
            refresh_token: Secret,
        }
        let ex: Exchange = serde_json::from_str(&body).map_err(|e| RegistryError::Unreadable {
            message: format!("registry {host}: /oauth2/exchange answered no refresh token ({e})"),
            source: Some(Box::new(e)),
        })?;
        Ok(Issued {
            credentials: Credentials {
                credential: Credential::IdentityToken(ex.refresh_token),
                from: format!("the ACR token exchange for {source}"),
            },
            lifetime: Some(REFRESH_TOKEN_LIFETIME),
        })
    }

    /// User `00000000-0000-0000-0000-000000000000`, password = the refresh token.
    fn registry_auth(&self, creds: &Credentials, server: &str) -> Option<RegistryAuth> {
        match &creds.credential {
            Credential::IdentityToken(t) => Some(RegistryAuth {
                server: server.to_string(),
                username: ACR_USER.to_string(),
                password: t.clone(),
            }),
            _ => None,
        }
    }
}

/// ACR's error bodies: `{"errors":[{"code":…,"message":…}]}` or OAuth2 style.
fn acr_reason(status: reqwest::StatusCode, body: &str) -> String {
    match distribution_errors(body) {
        Some(errors) => format!(
            "HTTP {status}: {}",
            errors
                .iter()
                .map(|(code, message)| format!("{code}: {message}"))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        None => http::oauth_error(status, body),
    }
}
