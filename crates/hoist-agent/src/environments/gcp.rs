//! The `gcp` environment: region, project, and application default credentials
//! (what `google.auth.default()` finds), as an OAuth2 access-token source.
//!
//! Sources, in order (the first one present is used):
//!
//! 1. `GOOGLE_APPLICATION_CREDENTIALS`: a credentials JSON file, either a
//!    service-account key (`"type": "service_account"`: a JWT signed with its private
//!    key is exchanged at its `token_uri` with the JWT bearer grant, RFC 7523) or user
//!    credentials (`"type": "authorized_user"`: a refresh-token grant);
//! 2. the gcloud ADC file, `$CLOUDSDK_CONFIG/application_default_credentials.json`
//!    (else `~/.config/gcloud/…`), written by `gcloud auth application-default login`;
//! 3. the metadata server (GCE, GKE workload identity, Cloud Run), at
//!    `GCE_METADATA_HOST` (default `metadata.google.internal`).
//!
//! Workload identity federation files (`external_account`) and impersonation
//! (`impersonated_service_account`) are refused with a message saying so.
//!
//! The project is `environment.project`, else the credentials file's
//! (`project_id` / `quota_project_id`), else `GOOGLE_CLOUD_PROJECT` /
//! `CLOUDSDK_CORE_PROJECT`, else the metadata server's.
//!
//! Endpoints named by credential files (`token_uri`) must be `https://` (plain HTTP
//! only to loopback addresses, which is how the tests' fake token endpoint is named).

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::signature::RsaKeyPair;
use serde::Deserialize;

use super::http::{self, CachedToken, TokenFailure, cause, endpoint_url, error_chain};
use super::{Ambient, EnvError, Environment, Secret, Verified, jwt};
use crate::config::EnvironmentType;

/// The OAuth scope hoist asks for: everything the roles of the credentials allow.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Google's OAuth2 token endpoint.
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";

/// The `gcp` environment. Cheap to clone (shared token cache).
#[derive(Clone)]
pub struct GcpEnvironment {
    inner: Arc<Inner>,
}

struct Inner {
    region: String,
    /// Configured or found in the credentials / environment; else asked of the
    /// metadata server.
    project: Option<String>,
    source: Source,
    /// Sources that were looked for before `source` and absent ("…: not set").
    tried: Vec<String>,
    http: reqwest::Client,
    cache: tokio::sync::Mutex<Option<CachedToken>>,
}

enum Source {
    ServiceAccount {
        origin: String,
        email: String,
        key_id: Option<String>,
        key: RsaKeyPair,
        token_uri: url::Url,
    },
    AuthorizedUser {
        origin: String,
        client_id: String,
        client_secret: Secret,
        refresh_token: Secret,
        token_uri: url::Url,
    },
    Metadata {
        host: String,
    },
}

impl Source {
    fn origin(&self) -> String {
        match self {
            Source::ServiceAccount { origin, .. } | Source::AuthorizedUser { origin, .. } => {
                origin.clone()
            }
            Source::Metadata { host } => format!("the metadata server at {host}"),
        }
    }
}

impl std::fmt::Debug for GcpEnvironment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpEnvironment")
            .field("region", &self.inner.region)
            .field("project", &self.inner.project)
            .field("credentials_from", &self.inner.source.origin())
            .finish_non_exhaustive()
    }
}

/// A credentials JSON file, as far as hoist reads it.
#[derive(Deserialize)]
struct CredentialsFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    // service_account
    client_email: Option<String>,
    private_key: Option<Secret>,
    private_key_id: Option<String>,
    project_id: Option<String>,
    token_uri: Option<String>,
    // authorized_user
    client_id: Option<String>,
    client_secret: Option<Secret>,
    refresh_token: Option<Secret>,
    quota_project_id: Option<String>,
}

/// Loads a credentials file; `origin` describes where its path came from.
fn load_file(path: &Path, origin: &str) -> Result<(Source, Option<String>), EnvError> {
    // (Runs on the blocking pool: see `environments::from_config_with`.)
    let text = Secret::new(std::fs::read_to_string(path).map_err(|e| EnvError::File {
        message: format!("gcp: {origin} cannot be read: {e}"),
        source: e,
    })?);
    let f: CredentialsFile = serde_json::from_str(text.expose()).map_err(|e| {
        EnvError::config_because(
            format!("gcp: {origin} is not a Google credentials JSON file ({e})"),
            e,
        )
    })?;
    let missing = |key: &str| {
        EnvError::config(format!(
            "gcp: {origin} has no `{key}`; expected a service-account key or user credentials file"
        ))
    };
    let token_uri = |uri: Option<String>| -> Result<url::Url, EnvError> {
        endpoint_url(uri.as_deref().unwrap_or(GOOGLE_TOKEN_URI), "token_uri")
            .map_err(|e| EnvError::config_because(format!("gcp: {origin}: {e}"), e))
    };
    match f.kind.as_deref() {
        Some("service_account") => {
            let email = f.client_email.ok_or_else(|| missing("client_email"))?;
            let pem = f.private_key.ok_or_else(|| missing("private_key"))?;
            let key = jwt::rsa_key_from_pem(pem.expose()).map_err(|e| {
                EnvError::config_because(
                    format!("gcp: {origin}: `private_key` is unusable: {e}"),
                    e,
                )
            })?;
            Ok((
                Source::ServiceAccount {
                    origin: origin.to_string(),
                    email,
                    key_id: f.private_key_id,
                    key,
                    token_uri: token_uri(f.token_uri)?,
                },
                f.project_id,
            ))
        }
        Some("authorized_user") => Ok((
            Source::AuthorizedUser {
                origin: origin.to_string(),
                client_id: f.client_id.ok_or_else(|| missing("client_id"))?,
                client_secret: f.client_secret.ok_or_else(|| missing("client_secret"))?,
                refresh_token: f.refresh_token.ok_or_else(|| missing("refresh_token"))?,
                token_uri: token_uri(f.token_uri)?,
            },
            f.quota_project_id,
        )),
        Some(
            other @ ("external_account"
            | "impersonated_service_account"
            | "external_account_authorized_user"),
        ) => Err(EnvError::config(format!(
            "gcp: {origin} has credentials of type `{other}`, which hoist does not support; use a service-account key file, `gcloud auth application-default login`, or the metadata server (workload identity on GKE)"
        ))),
        Some(other) => Err(EnvError::config(format!(
            "gcp: {origin} has credentials of unknown type `{other}`; expected `service_account` or `authorized_user`"
        ))),
        None => Err(missing("type")),
    }
}

impl GcpEnvironment {
    /// Finds the application default credentials in `ambient` (reading the
    /// credentials file, if any; no network). Blocking: from async code, call
    /// [`crate::environments::from_config_with`], which runs it on the blocking pool.
    pub fn new(
        region: &str,
        project: Option<&str>,
        ambient: &Ambient,
    ) -> Result<GcpEnvironment, EnvError> {
        let mut tried = Vec::new();
        let mut file_project = None;
        let source = if let Some(path) = ambient.var("GOOGLE_APPLICATION_CREDENTIALS") {
            let (s, p) = load_file(
                Path::new(path),
                &format!("GOOGLE_APPLICATION_CREDENTIALS ({path})"),
            )?;
            file_project = p;
            s
        } else {
            tried.push("GOOGLE_APPLICATION_CREDENTIALS: not set".to_string());
            let adc = ambient
                .var("CLOUDSDK_CONFIG")
                .map(|d| PathBuf::from(d).join("application_default_credentials.json"))
                .or_else(|| ambient.in_home(".config/gcloud/application_default_credentials.json"));
            match adc {
                Some(p) if p.is_file() => {
                    let (s, proj) = load_file(&p, &format!("the gcloud ADC file {}", p.display()))?;
                    file_project = proj;
                    s
                }
                other => {
                    tried.push(match other {
                        Some(p) => format!("the gcloud ADC file {}: not found", p.display()),
                        None => "the gcloud ADC file: no home directory".to_string(),
                    });
                    Source::Metadata {
                        host: ambient
                            .var("GCE_METADATA_HOST")
                            .unwrap_or(DEFAULT_METADATA_HOST)
                            .to_string(),
                    }
                }
            }
        };
        let project = project
            .map(str::to_string)
            .or(file_project)
            .or_else(|| ambient.var("GOOGLE_CLOUD_PROJECT").map(str::to_string))
            .or_else(|| ambient.var("CLOUDSDK_CORE_PROJECT").map(str::to_string));
        Ok(GcpEnvironment {
            inner: Arc::new(Inner {
                region: region.to_string(),
                project,
                source,
                tried,
                http: http::client(Duration::from_secs(3), Duration::from_secs(30)),
                cache: tokio::sync::Mutex::new(None),
            }),
        })
    }

    pub fn region(&self) -> &str {
        &self.inner.region
    }

    /// Where the credentials come from (a variable and its file, the metadata server).
    pub fn credentials_from(&self) -> String {
        self.inner.source.origin()
    }

    /// The project: configured, from the credentials or the environment, else the
    /// metadata server's.
    pub async fn project(&self) -> Result<String, EnvError> {
        if let Some(p) = &self.inner.project {
            return Ok(p.clone());
        }
        if let Source::Metadata { host } = &self.inner.source {
            return self.metadata_get(host, "project/project-id").await;
        }
        Err(EnvError::config(format!(
            "gcp: no project: environment.project is not set and {} names none; set environment.project",
            self.inner.source.origin()
        )))
    }

    /// An OAuth2 access token for [`SCOPE`] (cached until five minutes before it
    /// expires).
    pub async fn access_token(&self) -> Result<Secret, EnvError> {
        let mut cache = self.inner.cache.lock().await;
        if let Some(t) = cache.as_ref().filter(|t| t.is_fresh()) {
            return Ok(t.token.clone());
        }
        let t = self.fetch_token().await?;
        let token = t.token.clone();
        *cache = Some(t);
        Ok(token)
    }

    async fn fetch_token(&self) -> Result<CachedToken, EnvError> {
        let inner = &self.inner;
        match &inner.source {
            Source::ServiceAccount {
                origin,
                email,
                key_id,
                key,
                token_uri,
            } => {
                let now = jwt::now_epoch();
                let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
                if let Some(kid) = key_id {
                    header["kid"] = serde_json::Value::String(kid.clone());
                }
                let claims = serde_json::json!({
                    "iss": email,
                    "scope": SCOPE,
                    "aud": token_uri.as_str(),
                    "iat": now,
                    "exp": now + 3600,
                });
                let assertion = jwt::sign_rs256(key, &header, &claims)
                    .map_err(|e| EnvError::config_because(format!("gcp: {origin}: {e}"), e))?;
                self.token_request(
                    token_uri,
                    &[("grant_type", JWT_BEARER), ("assertion", &assertion)],
                    &format!("the service account {email} (from {origin})"),
                )
                .await
            }
            Source::AuthorizedUser {
                origin,
                client_id,
                client_secret,
                refresh_token,
                token_uri,
            } => {
                self.token_request(
                    token_uri,
                    &[
                        ("grant_type", "refresh_token"),
                        ("client_id", client_id),
                        ("client_secret", client_secret.expose()),
                        ("refresh_token", refresh_token.expose()),
                    ],
                    &format!("the user credentials from {origin}"),
                )
                .await
            }
            Source::Metadata { host } => {
                let url = format!(
                    "http://{host}/computeMetadata/v1/instance/service-accounts/default/token"
                );
                let req = inner.http.get(&url).header("Metadata-Flavor", "Google");
                http::request_token(req).await.map_err(|f| match f {
                    TokenFailure::Unreachable(e) => {
                        self.none_found(&format!("unreachable ({})", cause(&e)))
                    }
                    TokenFailure::Status { status, .. }
                        if status == reqwest::StatusCode::NOT_FOUND =>
                    {
                        self.none_found("no service account is attached to this machine")
                    }
                    TokenFailure::Status { status, reason } => EnvError::Status {
                        message: format!(
                            "gcp: the metadata server at {host} refused a token: {reason}"
                        ),
                        status: status.as_u16(),
                    },
                    TokenFailure::Unreadable(e) => EnvError::Unreadable {
                        message: format!(
                            "gcp: the metadata server at {host} answered an unreadable token ({e})"
                        ),
                        source: Some(Box::new(e)),
                    },
                })
            }
        }
    }

    /// The error when the last source, the metadata server, failed too.
    fn none_found(&self, why: &str) -> EnvError {
        let mut tried = self.inner.tried.clone();
        tried.push(format!("{}: {why}", self.inner.source.origin()));
        EnvError::no_credentials(format!(
            "gcp: no credentials: tried {}; set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, run `gcloud auth application-default login`, or run on GCP with a service account",
            tried.join("; ")
        ))
    }

    /// A token from Google's OAuth2 endpoint for the form `pairs`; `who` names the
    /// credentials in messages.
    async fn token_request(
        &self,
        token_uri: &url::Url,
        pairs: &[(&str, &str)],
        who: &str,
    ) -> Result<CachedToken, EnvError> {
        let req = http::post_form(&self.inner.http, token_uri.clone(), pairs);
        http::request_token(req).await.map_err(|f| match f {
            TokenFailure::Unreachable(source) => EnvError::Unreachable {
                message: format!(
                    "gcp: the token endpoint {token_uri} could not be reached for {who}: {}",
                    error_chain(&source)
                ),
                source,
            },
            TokenFailure::Status { status, reason } if status.is_client_error() => {
                EnvError::refused(format!(
                    "gcp: the token endpoint {token_uri} refused {who}: {reason}"
                ))
            }
            TokenFailure::Status { status, reason } => EnvError::Status {
                message: format!("gcp: the token endpoint {token_uri} failed for {who}: {reason}"),
                status: status.as_u16(),
            },
            TokenFailure::Unreadable(e) => EnvError::Unreadable {
                message: format!(
                    "gcp: the token endpoint {token_uri} answered an unreadable token for {who} ({e})"
                ),
                source: Some(Box::new(e)),
            },
        })
    }

    async fn metadata_get(&self, host: &str, path: &str) -> Result<String, EnvError> {
        let url = format!("http://{host}/computeMetadata/v1/{path}");
        let resp = self
            .inner
            .http
            .get(&url)
            .header("Metadata-Flavor", "Google")
            .send()
            .await
            .map_err(|source| EnvError::Unreachable {
                message: format!(
                    "gcp: the metadata server at {host} could not be reached for {path}: {}",
                    error_chain(&source)
                ),
                source,
            })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(EnvError::Status {
                message: format!(
                    "gcp: the metadata server at {host} answered HTTP {status} for {path}"
                ),
                status: status.as_u16(),
            });
        }
        let body = resp.text().await.map_err(|source| EnvError::Unreachable {
            message: format!(
                "gcp: the metadata server at {host} broke off its answer for {path}: {}",
                error_chain(&source)
            ),
            source,
        })?;
        Ok(body.trim().to_string())
    }
}

#[async_trait]
impl Environment for GcpEnvironment {
    fn kind(&self) -> EnvironmentType {
        EnvironmentType::Gcp
    }

    async fn verify(&self) -> Result<Verified, EnvError> {
        self.access_token().await?;
        let principal = match &self.inner.source {
            Source::ServiceAccount { email, .. } => Some(email.clone()),
            Source::AuthorizedUser { client_id, .. } => {
                Some(format!("user credentials of OAuth client {client_id}"))
            }
            Source::Metadata { host } => self
                .metadata_get(host, "instance/service-accounts/default/email")
                .await
                .ok(),
        };
        Ok(Verified {
            credentials_from: self.inner.source.origin(),
            principal,
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
