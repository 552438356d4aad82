//! Amazon ECR (`registry: {type: ecr, uri: ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO}`
//! or `{type: ecr, repository: REPO}`), with the `aws` environment's credentials: the
//! generic [`OciRegistry`] over [`EcrTokens`].
//!
//! - The account is the URI's, else the agent's own (`sts:GetCallerIdentity`).
//! - [`EcrRegistry::connect`] checks that the repository exists
//!   (`ecr:DescribeRepositories`), so a typo stops the agent at start-up rather than
//!   failing the first push.
//! - Credentials: `ecr:GetAuthorizationToken` gives base64 `AWS:<password>` valid for
//!   12 hours; it is reused until five minutes before it expires.
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

use super::RegistryError;
use super::oci::{Credential, Credentials, Issued, ManifestClient, OciRegistry, TokenSource};
use crate::config;
use crate::environments::Secret;
use crate::environments::aws::{AwsEnvironment, sdk_error};

/// An ECR repository.
pub type EcrRegistry = OciRegistry<EcrTokens>;

/// `ecr:GetAuthorizationToken` in the agent's account and region.
pub struct EcrTokens {
    ecr: aws_sdk_ecr::Client,
    account: String,
    region: String,
}

impl std::fmt::Debug for EcrTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcrTokens")
            .field("account", &self.account)
            .field("region", &self.region)
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
            None => env.caller_identity().await?.account,
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
            return Err(sdk_error(e, "ECR DescribeRepositories", "the aws environment").into());
        }
        let host = match registry_host {
            Some(h) => h.to_string(),
            None => format!("{account}.dkr.ecr.{}.amazonaws.com", cfg.region),
        };
        let tokens = EcrTokens {
            ecr,
            account,
            region: cfg.region.clone(),
        };
        OciRegistry::with_source(&host, false, &cfg.repository, tokens)
    }

    pub fn account(&self) -> &str {
        &self.source().account
    }
}

#[async_trait]
impl TokenSource for EcrTokens {
    fn kind(&self) -> &'static str {
        "ecr"
    }

    /// `AWS` + the password from `GetAuthorizationToken`, living until its
    /// `expiresAt`.
    async fn issue(&self, _: &ManifestClient) -> Result<Issued, RegistryError> {
        let out = self
            .ecr
            .get_authorization_token()
            .send()
            .await
            .map_err(|e| sdk_error(e, "ECR GetAuthorizationToken", "the aws environment"))?;
        let data = out
            .authorization_data()
            .first()
            .ok_or_else(|| RegistryError::Unreadable {
                message: "ecr: GetAuthorizationToken answered no authorization data".to_string(),
                source: None,
            })?;
        let bad = |source: Option<crate::environments::BoxError>| RegistryError::Unreadable {
            message:
                "ecr: GetAuthorizationToken answered a token that is not base64 of AWS:PASSWORD"
                    .to_string(),
            source,
        };
        let token = data.authorization_token().ok_or_else(|| bad(None))?;
        let decoded = STANDARD
            .decode(token.trim())
            .map_err(|e| bad(Some(Box::new(e))))?;
        let decoded = Secret::new(
            String::from_utf8(decoded).map_err(|e| bad(Some(Box::new(e.utf8_error()))))?,
        );
        let (user, password) = decoded.expose().split_once(':').ok_or_else(|| bad(None))?;
        let credentials = Credentials {
            credential: Credential::Basic {
                username: user.to_string(),
                password: Secret::new(password),
            },
            from: format!(
                "ECR GetAuthorizationToken (account {}, region {})",
                self.account, self.region
            ),
        };
        let lifetime = data
            .expires_at()
            .and_then(|t| SystemTime::try_from(*t).ok())
            .and_then(|t| t.duration_since(SystemTime::now()).ok())
            .filter(|d| *d > Duration::ZERO);
        Ok(Issued {
            credentials,
            lifetime,
        })
    }
}
