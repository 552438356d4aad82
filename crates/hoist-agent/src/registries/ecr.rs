//! Amazon ECR (`registry: {type: ecr, uri: ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO}`
//! or `{type: ecr, repository: REPO}`), with the `aws` environment's credentials.
//!
//! - The account is the URI's, else the agent's own (`sts:GetCallerIdentity`).
//! - [`EcrRegistry::connect`] checks that the repository exists
//!   (`ecr:DescribeRepositories`), so a typo stops the agent at start-up rather than
//!   failing the first push.
//! - Credentials: `ecr:GetAuthorizationToken` gives base64 `AWS:<password>` valid for
//!   12 hours; it is cached until five minutes before it expires.
//! - "Does the image exist": a manifest HEAD against the registry host with those
//!   credentials (ECR answers the `Basic` challenge), like every other registry.
//!
//! The registry host is `ACCOUNT.dkr.ecr.REGION.amazonaws.com`. [`EcrRegistry::connect`]
//! takes an optional other host that the token is presented to instead (a
//! pull-through mirror, or the tests' local registry: moto implements the ECR API but
//! has no registry behind it, so the tests get the token from moto and push to
//! `127.0.0.1:5000`, which ignores it). It is not a config key.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::oci::{Credential, Credentials, ManifestClient, env_to_registry, reference_in};
use super::{Registry, RegistryAuth, RegistryError};
use crate::config;
use crate::environments::Secret;
use crate::environments::aws::{AwsEnvironment, sdk_error};

/// An ECR repository.
pub struct EcrRegistry {
    ecr: aws_sdk_ecr::Client,
    account: String,
    region: String,
    repository: String,
    client: ManifestClient,
    cache: tokio::sync::Mutex<Option<(Credentials, SystemTime)>>,
}

impl std::fmt::Debug for EcrRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcrRegistry")
            .field("account", &self.account)
            .field("region", &self.region)
            .field("repository", &self.repository)
            .field("host", &self.client.host())
            .finish_non_exhaustive()
    }
}

impl EcrRegistry {
    /// The repository of `cfg` in `env`'s account (or the URI's), checked to exist.
    /// `registry_host`: where the token is used instead of the account's registry
    /// host (see the module documentation).
    pub async fn connect(
        cfg: &config::EcrRegistry,
        env: &AwsEnvironment,
        registry_host: Option<&str>,
    ) -> Result<EcrRegistry, RegistryError> {
        let account = match &cfg.account_id {
            Some(a) => a.clone(),
            None => {
                env.caller_identity()
                    .await
                    .map_err(env_to_registry)?
                    .account
            }
        };
        let ecr = env.ecr_client();
        let described = ecr
            .describe_repositories()
            .registry_id(&account)
            .repository_names(&cfg.repository)
            .send()
            .await;
        if let Err(e) = described {
            let not_found = e
                .as_service_error()
                .is_some_and(|se| se.is_repository_not_found_exception());
            if not_found {
                return Err(RegistryError::Config(format!(
                    "ecr: repository `{}` does not exist in account {account}, region {}; create it (aws ecr create-repository --repository-name {})",
                    cfg.repository, cfg.region, cfg.repository
                )));
            }
            return Err(env_to_registry(sdk_error(
                &e,
                "ECR DescribeRepositories",
                "the aws environment",
            )));
        }
        let host = match registry_host {
            Some(h) => h.to_string(),
            None => format!("{account}.dkr.ecr.{}.amazonaws.com", cfg.region),
        };
        Ok(EcrRegistry {
            ecr,
            account,
            region: cfg.region.clone(),
            repository: cfg.repository.clone(),
            client: ManifestClient::new(&host, false)?,
            cache: tokio::sync::Mutex::new(None),
        })
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    pub fn host(&self) -> &str {
        self.client.host()
    }

    /// `AWS` + the password from `GetAuthorizationToken` (cached).
    pub async fn credentials(&self) -> Result<Credentials, RegistryError> {
        let mut cache = self.cache.lock().await;
        if let Some((c, refresh_at)) = cache.as_ref()
            && SystemTime::now() < *refresh_at
        {
            return Ok(c.clone());
        }
        let out = self
            .ecr
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| {
                env_to_registry(sdk_error(
                    &e,
                    "ECR GetAuthorizationToken",
                    "the aws environment",
                ))
            })?;
        let data = out.authorization_data().first().ok_or_else(|| {
            RegistryError::Unavailable(
                "ecr: GetAuthorizationToken answered no authorization data".to_string(),
            )
        })?;
        let bad = || {
            RegistryError::Unavailable(
                "ecr: GetAuthorizationToken answered a token that is not base64 of AWS:PASSWORD"
                    .to_string(),
            )
        };
        let token = data.authorization_token().ok_or_else(bad)?;
        let decoded = String::from_utf8(STANDARD.decode(token.trim()).map_err(|_| bad())?)
            .map_err(|_| bad())?;
        let (user, password) = decoded.split_once(':').ok_or_else(bad)?;
        let creds = Credentials {
            credential: Credential::Basic {
                username: user.to_string(),
                password: Secret::new(password),
            },
            from: format!(
                "ECR GetAuthorizationToken (account {}, region {})",
                self.account, self.region
            ),
        };
        let refresh_at = data
            .expires_at()
            .and_then(|t| SystemTime::try_from(*t).ok())
            .and_then(|t| t.checked_sub(Duration::from_secs(300)));
        match refresh_at {
            Some(t) if t > SystemTime::now() => *cache = Some((creds.clone(), t)),
            _ => *cache = None,
        }
        Ok(creds)
    }
}

#[async_trait]
impl Registry for EcrRegistry {
    fn kind(&self) -> &'static str {
        "ecr"
    }

    fn repository(&self) -> Option<String> {
        Some(format!("{}/{}", self.host(), self.repository))
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
