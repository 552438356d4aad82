//! The `aws` environment: a region and the AWS default credential chain.
//!
//! The chain is boto3's and the AWS SDKs', in their order, each link reading its
//! inputs from the [`Ambient`] (so tests can run it on an explicit environment map
//! and home directory):
//!
//! 1. environment variables `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and
//!    `AWS_SESSION_TOKEN`);
//! 2. the profile `AWS_PROFILE` (else `default`) in `AWS_SHARED_CREDENTIALS_FILE` (else
//!    `~/.aws/credentials`) and `AWS_CONFIG_FILE` (else `~/.aws/config`): static keys,
//!    `role_arn` + `source_profile`, `credential_process`, …;
//! 3. web identity: `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN` (EKS IRSA);
//! 4. container credentials: `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` or `…_FULL_URI`
//!    (ECS, SageMaker);
//! 5. the instance role from IMDS (`AWS_EC2_METADATA_SERVICE_ENDPOINT`, default
//!    `http://169.254.169.254`; skipped when `AWS_EC2_METADATA_DISABLED=true`).
//!
//! The first link that has credentials wins; a link that has none says why, and when
//! no link has any, [`Environment::verify`] lists them all. The profile, container and
//! IMDS links are aws-config's providers, given explicit files and endpoints; the
//! environment-variable and web-identity links are hoist's (aws-config's read the
//! process environment, and its web-identity STS client ignores a configured
//! endpoint). The container link's provider still reads the process environment: it
//! is built only when the ambient has its variables (always true outside tests).
//!
//! [`Environment::verify`] resolves the chain and calls `sts:GetCallerIdentity` with
//! the credentials found: a refusal names where they came from.
//!
//! Endpoints: `AWS_ENDPOINT_URL_STS`, `AWS_ENDPOINT_URL_ECR`, `AWS_ENDPOINT_URL_S3`,
//! `AWS_ENDPOINT_URL_SAGEMAKER`, `AWS_ENDPOINT_URL_CLOUDWATCH_LOGS` or `AWS_ENDPOINT_URL`
//! (the SDKs' own variables; `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true` ignores them)
//! point the STS, ECR, S3 (build contexts), SageMaker and CloudWatch Logs (the
//! SageMaker runner's hand-signed calls) clients elsewhere, e.g. at moto in tests.
//! Plain HTTP is accepted for loopback endpoints only.
//!
//! Callers that sign their own requests (the SageMaker runner: SigV4 with `aws-sigv4`,
//! no SDK client) get the chain's credentials from
//! [`AwsEnvironment::signing_credentials`], cached until shortly before they expire.
//!
//! SSO profiles (`sso_session`) are not supported: aws-config's `sso` feature would
//! add two more SDK clients to the build; an agent uses a role, not a person's login.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::ecs::EcsCredentialsProvider;
use aws_config::identity::IdentityCache;
use aws_config::imds::credentials::ImdsCredentialsProvider;
use aws_config::profile::ProfileFileCredentialsProvider;
// aws-config's names for aws-runtime's `EnvConfigFile{s,Kind}` (deprecated aliases:
// aws-runtime is not a direct dependency).
#[allow(deprecated)]
use aws_config::profile::profile_file::{ProfileFileKind, ProfileFiles};
use aws_config::provider_config::ProviderConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};

use super::http::{endpoint_url, error_chain};
use super::{Ambient, EnvError, Environment, Verified};
use crate::config::EnvironmentType;

const DEFAULT_IMDS: &str = "http://169.254.169.254";

/// The agent's AWS account and identity (`sts:GetCallerIdentity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity {
    pub account: String,
    pub arn: String,
}

/// The `aws` environment. Cheap to clone (a shared chain and SDK configuration).
#[derive(Clone)]
pub struct AwsEnvironment {
    region: String,
    chain: Arc<Chain>,
    sdk: SdkConfig,
    sts_endpoint: Option<String>,
    ecr_endpoint: Option<String>,
    s3_endpoint: Option<String>,
    sagemaker_endpoint: Option<String>,
    logs_endpoint: Option<String>,
    /// The chain's last credentials, for [`AwsEnvironment::signing_credentials`].
    signing: Arc<tokio::sync::Mutex<Option<Credentials>>>,
}

/// How long before their expiry cached signing credentials are resolved again.
const CREDENTIALS_REFRESH_BEFORE: Duration = Duration::from_secs(300);

impl std::fmt::Debug for AwsEnvironment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsEnvironment")
            .field("region", &self.region)
            .field("chain", &self.chain)
            .field("sts_endpoint", &self.sts_endpoint)
            .field("ecr_endpoint", &self.ecr_endpoint)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("sagemaker_endpoint", &self.sagemaker_endpoint)
            .field("logs_endpoint", &self.logs_endpoint)
            .finish_non_exhaustive()
    }
}

impl AwsEnvironment {
    /// The environment for `region`, its credential chain and endpoints read from
    /// `ambient`. Reads no file and calls nothing yet.
    pub async fn new(region: &str, ambient: &Ambient) -> Result<AwsEnvironment, EnvError> {
        let ignore_endpoints = ambient
            .var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let endpoint = |service_var: &str| -> Result<Option<String>, EnvError> {
            if ignore_endpoints {
                return Ok(None);
            }
            let (var, value) = match ambient.var(service_var) {
                Some(v) => (service_var, v),
                None => match ambient.var("AWS_ENDPOINT_URL") {
                    Some(v) => ("AWS_ENDPOINT_URL", v),
                    None => return Ok(None),
                },
            };
            endpoint_url(value, var)
                .map(|u| Some(u.as_str().trim_end_matches('/').to_string()))
                .map_err(|e| EnvError::config_because(format!("aws: {e}"), e))
        };
        let sts_endpoint = endpoint("AWS_ENDPOINT_URL_STS")?;
        let ecr_endpoint = endpoint("AWS_ENDPOINT_URL_ECR")?;
        let s3_endpoint = endpoint("AWS_ENDPOINT_URL_S3")?;
        let sagemaker_endpoint = endpoint("AWS_ENDPOINT_URL_SAGEMAKER")?;
        let logs_endpoint = endpoint("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS")?;

        let region_v = Region::new(region.to_string());
        let provider_config = ProviderConfig::without_region().with_region(Some(region_v.clone()));
        let profile_files = ProfileInputs::find(ambient).await;
        let chain = Arc::new(Chain::new(
            ambient,
            &provider_config,
            region,
            sts_endpoint.as_deref(),
            profile_files,
        )?);
        let sdk = SdkConfig::builder()
            .region(region_v)
            .behavior_version(BehaviorVersion::latest())
            .credentials_provider(SharedCredentialsProvider::new(ChainProvider(chain.clone())))
            .identity_cache(IdentityCache::lazy().build())
            .build();
        Ok(AwsEnvironment {
            region: region.to_string(),
            chain,
            sdk,
            sts_endpoint,
            ecr_endpoint,
            s3_endpoint,
            sagemaker_endpoint,
            logs_endpoint,
            signing: Arc::new(tokio::sync::Mutex::new(None)),
        })
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// The SDK configuration (region, the credential chain with a cache).
    pub fn sdk_config(&self) -> &SdkConfig {
        &self.sdk
    }

    /// An STS client on the configured endpoint.
    pub fn sts_client(&self) -> aws_sdk_sts::Client {
        let mut b = aws_sdk_sts::config::Builder::from(&self.sdk);
        if let Some(e) = &self.sts_endpoint {
            b = b.endpoint_url(e);
        }
        aws_sdk_sts::Client::from_conf(b.build())
    }

    /// An ECR client on the configured endpoint.
    pub fn ecr_client(&self) -> aws_sdk_ecr::Client {
        let mut b = aws_sdk_ecr::config::Builder::from(&self.sdk);
        if let Some(e) = &self.ecr_endpoint {
            b = b.endpoint_url(e);
        }
        aws_sdk_ecr::Client::from_conf(b.build())
    }

    /// The S3 endpoint configured by `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` (checked
    /// like the others: https, or http to a loopback host); `None`: AWS's regional one.
    pub fn s3_endpoint(&self) -> Option<&str> {
        self.s3_endpoint.as_deref()
    }

    /// SageMaker's endpoint: `AWS_ENDPOINT_URL_SAGEMAKER` / `AWS_ENDPOINT_URL` when set,
    /// else the region's `https://api.sagemaker.REGION.amazonaws.com` (no trailing slash).
    pub fn sagemaker_endpoint(&self) -> String {
        self.sagemaker_endpoint
            .clone()
            .unwrap_or_else(|| regional_endpoint("api.sagemaker", &self.region))
    }

    /// CloudWatch Logs' endpoint: `AWS_ENDPOINT_URL_CLOUDWATCH_LOGS` /
    /// `AWS_ENDPOINT_URL` when set, else `https://logs.REGION.amazonaws.com`.
    pub fn logs_endpoint(&self) -> String {
        self.logs_endpoint
            .clone()
            .unwrap_or_else(|| regional_endpoint("logs", &self.region))
    }

    /// The chain's credentials, for requests signed by their caller (SigV4 with
    /// `aws-sigv4`). Cached: resolved again only when they expire within five minutes
    /// (credentials without an expiry are kept).
    pub async fn signing_credentials(&self) -> Result<Credentials, EnvError> {
        let mut cached = self.signing.lock().await;
        if let Some(c) = cached.as_ref() {
            let fresh = c.expiry().is_none_or(|at| {
                at.duration_since(std::time::SystemTime::now())
                    .is_ok_and(|left| left > CREDENTIALS_REFRESH_BEFORE)
            });
            if fresh {
                return Ok(c.clone());
            }
        }
        let (c, _) = self.chain.resolve().await?;
        *cached = Some(c.clone());
        Ok(c)
    }

    /// Where the chain finds its credentials now (`environment variables
    /// (AWS_ACCESS_KEY_ID, …)`, a profile…), for messages about a refusal. Resolves
    /// the chain (a link may call IMDS or STS) but asks no other service.
    pub async fn credentials_from(&self) -> Result<String, EnvError> {
        self.chain.resolve().await.map(|(_, from)| from)
    }

    /// `sts:GetCallerIdentity` with the chain's credentials.
    pub async fn caller_identity(&self) -> Result<CallerIdentity, EnvError> {
        let (creds, from) = self.chain.resolve().await?;
        self.caller_identity_with(creds, &from).await
    }

    async fn caller_identity_with(
        &self,
        creds: Credentials,
        from: &str,
    ) -> Result<CallerIdentity, EnvError> {
        let mut b = aws_sdk_sts::config::Builder::from(&self.sdk)
            .credentials_provider(SharedCredentialsProvider::new(creds));
        if let Some(e) = &self.sts_endpoint {
            b = b.endpoint_url(e);
        }
        let sts = aws_sdk_sts::Client::from_conf(b.build());
        let where_ = self
            .sts_endpoint
            .as_deref()
            .unwrap_or("the regional endpoint");
        match sts.get_caller_identity().send().await {
            Ok(out) => Ok(CallerIdentity {
                account: out.account().unwrap_or_default().to_string(),
                arn: out.arn().unwrap_or_default().to_string(),
            }),
            Err(e) => Err(sdk_error(
                e,
                &format!("STS GetCallerIdentity ({where_})"),
                from,
            )),
        }
    }
}

/// Maps an SDK error, keeping it as the source: the service's refusals (bad keys,
/// expired tokens, denied) to [`EnvError::Refused`] naming the credentials' source;
/// everything else to [`EnvError::Sdk`], transient when no answer came (a timeout, a
/// failed dispatch: the SDK has already retried those itself).
pub(crate) fn sdk_error<E, R>(
    e: aws_sdk_sts::error::SdkError<E, R>,
    call: &str,
    from: &str,
) -> EnvError
where
    E: aws_sdk_sts::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    use aws_sdk_sts::error::SdkError;
    match &e {
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("error");
            let msg = se.err().message().unwrap_or_default();
            EnvError::Refused {
                message: format!("aws: {call} refused the credentials from {from}: {code}: {msg}"),
                source: Some(Box::new(e)),
            }
        }
        other => EnvError::Sdk {
            message: format!(
                "aws: {call} failed: {}",
                error_chain(other as &(dyn std::error::Error + 'static))
            ),
            transient: matches!(
                other,
                SdkError::TimeoutError(_) | SdkError::DispatchFailure(_)
            ),
            source: Box::new(e),
        },
    }
}

#[async_trait]
impl Environment for AwsEnvironment {
    fn kind(&self) -> EnvironmentType {
        EnvironmentType::Aws
    }

    async fn verify(&self) -> Result<Verified, EnvError> {
        let (creds, from) = self.chain.resolve().await?;
        let id = self.caller_identity_with(creds, &from).await?;
        Ok(Verified {
            credentials_from: from,
            principal: Some(id.arn),
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// One link of the chain: its description, and its provider or why it has none.
#[derive(Debug)]
struct Link {
    name: String,
    provider: Result<SharedCredentialsProvider, String>,
}

/// The default credential chain, with a record of what each link said.
#[derive(Debug)]
struct Chain {
    links: Vec<Link>,
}

/// The profile link's inputs: the profile, and the credentials and config files with
/// whether each exists (looked up with `tokio::fs`, off the runtime's thread).
struct ProfileInputs {
    profile: String,
    credentials: Option<(std::path::PathBuf, bool)>,
    config: Option<(std::path::PathBuf, bool)>,
}

impl ProfileInputs {
    async fn find(ambient: &Ambient) -> ProfileInputs {
        async fn with_presence(
            p: Option<std::path::PathBuf>,
        ) -> Option<(std::path::PathBuf, bool)> {
            let p = p?;
            let is_file = tokio::fs::metadata(&p).await.is_ok_and(|m| m.is_file());
            Some((p, is_file))
        }
        let creds_file = ambient
            .var("AWS_SHARED_CREDENTIALS_FILE")
            .map(std::path::PathBuf::from)
            .or_else(|| ambient.in_home(".aws/credentials"));
        let config_file = ambient
            .var("AWS_CONFIG_FILE")
            .map(std::path::PathBuf::from)
            .or_else(|| ambient.in_home(".aws/config"));
        ProfileInputs {
            profile: ambient.var("AWS_PROFILE").unwrap_or("default").to_string(),
            credentials: with_presence(creds_file).await,
            config: with_presence(config_file).await,
        }
    }
}

impl Chain {
    #[allow(deprecated)]
    fn new(
        ambient: &Ambient,
        pc: &ProviderConfig,
        region: &str,
        sts_endpoint: Option<&str>,
        profile_files: ProfileInputs,
    ) -> Result<Chain, EnvError> {
        let mut links = Vec::new();

        // 1. Environment variables.
        let env_name = "environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)";
        let provider = match (
            ambient.var("AWS_ACCESS_KEY_ID"),
            ambient.var("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Some(id), Some(secret)) => Ok(SharedCredentialsProvider::new(Credentials::new(
                id,
                secret,
                ambient.var("AWS_SESSION_TOKEN").map(str::to_string),
                None,
                "environment",
            ))),
            (Some(_), None) => {
                return Err(EnvError::config(
                    "aws: AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not; set both or neither",
                ));
            }
            (None, Some(_)) => {
                return Err(EnvError::config(
                    "aws: AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not; set both or neither",
                ));
            }
            (None, None) => Err("not set".to_string()),
        };
        links.push(Link {
            name: env_name.to_string(),
            provider,
        });

        // 2. Profile files.
        let ProfileInputs {
            profile,
            credentials: creds_file,
            config: config_file,
        } = profile_files;
        let shown = |p: &Option<(std::path::PathBuf, bool)>| {
            p.as_ref()
                .map(|(p, _)| p.display().to_string())
                .unwrap_or_else(|| "(no home directory)".to_string())
        };
        let name = format!(
            "profile `{profile}` in {} and {}",
            shown(&creds_file),
            shown(&config_file)
        );
        let existing: Vec<(ProfileFileKind, &std::path::PathBuf)> = [
            (ProfileFileKind::Credentials, creds_file.as_ref()),
            (ProfileFileKind::Config, config_file.as_ref()),
        ]
        .into_iter()
        .filter_map(|(k, p)| p.filter(|(_, is_file)| *is_file).map(|(p, _)| (k, p)))
        .collect();
        let provider = if existing.is_empty() {
            Err("neither file exists".to_string())
        } else {
            let mut files = ProfileFiles::builder()
                .include_default_credentials_file(false)
                .include_default_config_file(false);
            for (kind, path) in existing {
                files = files.with_file(kind, path);
            }
            Ok(SharedCredentialsProvider::new(
                ProfileFileCredentialsProvider::builder()
                    .configure(pc)
                    .profile_files(files.build())
                    .profile_name(profile)
                    .build(),
            ))
        };
        links.push(Link { name, provider });

        // 3. Web identity (hoist's link: aws-config's would call the regional STS
        // endpoint even when another is configured).
        let provider = match (
            ambient.var("AWS_WEB_IDENTITY_TOKEN_FILE"),
            ambient.var("AWS_ROLE_ARN"),
        ) {
            (Some(file), Some(role)) => {
                let mut b = aws_sdk_sts::config::Builder::new()
                    .behavior_version(BehaviorVersion::latest())
                    .region(Region::new(region.to_string()));
                if let Some(e) = sts_endpoint {
                    b = b.endpoint_url(e);
                }
                Ok(SharedCredentialsProvider::new(WebIdentity {
                    token_file: file.into(),
                    role_arn: role.to_string(),
                    session_name: ambient
                        .var("AWS_ROLE_SESSION_NAME")
                        .unwrap_or("hoist-agent")
                        .to_string(),
                    sts: aws_sdk_sts::Client::from_conf(b.build()),
                }))
            }
            (Some(_), None) => Err("AWS_ROLE_ARN is not set".to_string()),
            (None, _) => Err("not set".to_string()),
        };
        links.push(Link {
            name: "web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN)".to_string(),
            provider,
        });

        // 4. Container credentials. aws-config's provider reads the process
        // environment itself, so it is only used when the ambient is the process's
        // view too (it is, outside tests).
        let provider = if ambient
            .var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            .or(ambient.var("AWS_CONTAINER_CREDENTIALS_FULL_URI"))
            .is_some()
        {
            Ok(SharedCredentialsProvider::new(
                EcsCredentialsProvider::builder().configure(pc).build(),
            ))
        } else {
            Err("not set".to_string())
        };
        links.push(Link {
            name: "container credentials (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI)".to_string(),
            provider,
        });

        // 5. Instance role.
        let imds = ambient
            .var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
            .unwrap_or(DEFAULT_IMDS)
            .trim_end_matches('/')
            .to_string();
        let name = format!("instance role (IMDS at {imds})");
        let provider = if ambient
            .var("AWS_EC2_METADATA_DISABLED")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            Err("disabled by AWS_EC2_METADATA_DISABLED".to_string())
        } else {
            let client = aws_config::imds::Client::builder()
                .configure(pc)
                .endpoint(&imds)
                .map_err(|e| {
                    EnvError::config_because(
                        format!(
                            "aws: AWS_EC2_METADATA_SERVICE_ENDPOINT `{imds}` is not usable: {e}"
                        ),
                        e,
                    )
                })?
                .max_attempts(2)
                .connect_timeout(Duration::from_secs(1))
                .read_timeout(Duration::from_secs(2))
                .build();
            Ok(SharedCredentialsProvider::new(
                ImdsCredentialsProvider::builder()
                    .configure(pc)
                    .imds_client(client)
                    .build(),
            ))
        };
        links.push(Link { name, provider });

        Ok(Chain { links })
    }

    /// The first link's credentials and that link's description.
    async fn resolve(&self) -> Result<(Credentials, String), EnvError> {
        let mut tried = Vec::new();
        for link in &self.links {
            let provider = match &link.provider {
                Ok(p) => p,
                Err(why) => {
                    tried.push(format!("{}: {why}", link.name));
                    continue;
                }
            };
            match provider.provide_credentials().await {
                Ok(c) => return Ok((c, link.name.clone())),
                Err(e @ CredentialsError::CredentialsNotLoaded(_)) => {
                    // (CredentialsNotLoaded says "the credential provider was not
                    // enabled" before the reason; the reason is what helps.)
                    let why = error_chain(&e as &(dyn std::error::Error + 'static));
                    let why = why
                        .strip_prefix("the credential provider was not enabled: ")
                        .unwrap_or(&why);
                    tried.push(format!("{}: {}", link.name, short(why)));
                }
                Err(e) => {
                    return Err(EnvError::Refused {
                        message: format!(
                            "aws: the credentials from {} could not be loaded: {}",
                            link.name,
                            short(&error_chain(&e as &(dyn std::error::Error + 'static)))
                        ),
                        source: Some(Box::new(e)),
                    });
                }
            }
        }
        Err(EnvError::no_credentials(format!(
            "aws: no credentials: tried {}; set one of them",
            tried.join("; ")
        )))
    }
}

/// `https://PREFIX.REGION.amazonaws.com` (`.amazonaws.com.cn` in China's regions).
fn regional_endpoint(prefix: &str, region: &str) -> String {
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://{prefix}.{region}.{suffix}")
}

/// The first 300 characters of a reason (SDK errors can be long).
fn short(s: &str) -> String {
    let mut out: String = s.chars().take(300).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// The chain as the SDK's credentials provider (the SDK caches what it returns).
#[derive(Debug)]
struct ChainProvider(Arc<Chain>);

impl ProvideCredentials for ChainProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            match self.0.resolve().await {
                Ok((c, _)) => Ok(c),
                Err(EnvError::NoCredentials { message }) => {
                    Err(CredentialsError::not_loaded(message))
                }
                Err(e) => Err(CredentialsError::provider_error(e.to_string())),
            }
        })
    }
}

/// `sts:AssumeRoleWithWebIdentity` with the token in `AWS_WEB_IDENTITY_TOKEN_FILE`
/// (read afresh each time: it is rotated), on the configured STS endpoint.
#[derive(Debug)]
struct WebIdentity {
    token_file: std::path::PathBuf,
    role_arn: String,
    session_name: String,
    sts: aws_sdk_sts::Client,
}

impl WebIdentity {
    async fn load(&self) -> aws_credential_types::provider::Result {
        let token = tokio::fs::read_to_string(&self.token_file)
            .await
            .map_err(|e| {
                CredentialsError::invalid_configuration(format!(
                    "AWS_WEB_IDENTITY_TOKEN_FILE ({}) cannot be read: {e}",
                    self.token_file.display()
                ))
            })?;
        let out = self
            .sts
            .assume_role_with_web_identity()
            .role_arn(&self.role_arn)
            .role_session_name(&self.session_name)
            .web_identity_token(token.trim())
            .send()
            .await
            .map_err(|e| {
                CredentialsError::provider_error(sdk_error(
                    e,
                    "STS AssumeRoleWithWebIdentity",
                    "AWS_WEB_IDENTITY_TOKEN_FILE",
                ))
            })?;
        let c = out.credentials().ok_or_else(|| {
            CredentialsError::provider_error(
                "STS AssumeRoleWithWebIdentity answered no credentials",
            )
        })?;
        Ok(Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_string()),
            std::time::SystemTime::try_from(*c.expiration()).ok(),
            "web identity",
        ))
    }
}

impl ProvideCredentials for WebIdentity {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.load())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn env(vars: &[(&str, &str)], region: &str) -> Result<AwsEnvironment, EnvError> {
        let ambient = Ambient::new(
            vars.iter()
                .copied()
                .chain([("AWS_EC2_METADATA_DISABLED", "true")]),
            None,
        );
        AwsEnvironment::new(region, &ambient).await
    }

    #[tokio::test]
    async fn sagemaker_and_logs_endpoints_follow_the_sdks_variables() {
        let e = env(&[], "eu-west-1").await.unwrap();
        assert_eq!(
            e.sagemaker_endpoint(),
            "https://api.sagemaker.eu-west-1.amazonaws.com"
        );
        assert_eq!(e.logs_endpoint(), "https://logs.eu-west-1.amazonaws.com");
        let cn = env(&[], "cn-north-1").await.unwrap();
        assert_eq!(
            cn.logs_endpoint(),
            "https://logs.cn-north-1.amazonaws.com.cn"
        );
        let vars = [
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5010/"),
            ("AWS_ENDPOINT_URL_SAGEMAKER", "http://127.0.0.1:6000"),
        ];
        let e = env(&vars, "us-east-1").await.unwrap();
        assert_eq!(e.sagemaker_endpoint(), "http://127.0.0.1:6000");
        assert_eq!(e.logs_endpoint(), "http://127.0.0.1:5010");
        let e = env(
            &[
                vars[0],
                (
                    "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS",
                    "https://logs.example.com",
                ),
                ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true"),
            ],
            "us-east-1",
        )
        .await
        .unwrap();
        assert_eq!(e.logs_endpoint(), "https://logs.us-east-1.amazonaws.com");
        let err = env(
            &[("AWS_ENDPOINT_URL_SAGEMAKER", "http://sagemaker.example.com")],
            "us-east-1",
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string().contains("AWS_ENDPOINT_URL_SAGEMAKER"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn signing_credentials_come_from_the_chain_and_are_kept() {
        let e = env(
            &[
                ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
                ("AWS_SECRET_ACCESS_KEY", "secret-value"),
            ],
            "us-east-1",
        )
        .await
        .unwrap();
        let c = e.signing_credentials().await.unwrap();
        assert_eq!(c.access_key_id(), "AKIDEXAMPLE");
        assert!(e.signing.lock().await.is_some());
        assert!(!format!("{e:?}").contains("secret-value"));
        let none = env(&[], "us-east-1").await.unwrap();
        assert!(matches!(
            none.signing_credentials().await,
            Err(EnvError::NoCredentials { .. })
        ));
    }
}
