//! The `azure` environment: the default Azure credential (what
//! `azure.identity.DefaultAzureCredential()` uses), as an Azure AD token source.
//!
//! Sources, in `DefaultAzureCredential`'s order:
//!
//! 1. environment: `AZURE_TENANT_ID` + `AZURE_CLIENT_ID` + `AZURE_CLIENT_SECRET`, or
//!    `AZURE_CLIENT_CERTIFICATE_PATH` (a PEM file with the certificate and its RSA
//!    key; the client assertion is a JWT signed with the key, `x5t` = the
//!    certificate's SHA-1 thumbprint);
//! 2. workload identity: `AZURE_FEDERATED_TOKEN_FILE` + `AZURE_CLIENT_ID` +
//!    `AZURE_TENANT_ID` (AKS), the file's token used as the client assertion;
//! 3. managed identity: App Service / Functions (`IDENTITY_ENDPOINT` +
//!    `IDENTITY_HEADER`), else IMDS (`http://169.254.169.254`, or
//!    `AZURE_POD_IDENTITY_AUTHORITY_HOST`); `AZURE_CLIENT_ID` picks a user-assigned
//!    identity.
//!
//! A source that is not configured, or (managed identity) cannot be reached, passes
//! to the next; a source that is configured and refused stops the chain with that
//! refusal, as `DefaultAzureCredential` does. The Azure CLI and PowerShell sources
//! are not included (an agent runs with a service principal or a managed identity).
//!
//! Azure AD is at `AZURE_AUTHORITY_HOST` (default `https://login.microsoftonline.com`;
//! plain HTTP only to loopback addresses, which is how tests reach their fake).

use std::any::Any;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::signature::RsaKeyPair;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::http::{self, CachedToken, TokenFailure, cause, endpoint_url, error_chain};
use super::{Ambient, BoxError, EnvError, Environment, Secret, Verified, jwt};
use crate::config::EnvironmentType;

/// Azure Resource Manager: the scope [`Environment::verify`] asks a token for, and the
/// audience ACR's token exchange accepts.
pub const ARM_SCOPE: &str = "https://management.azure.com/.default";
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
const DEFAULT_IMDS: &str = "http://169.254.169.254";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The `azure` environment. Cheap to clone (shared token cache).
#[derive(Clone)]
pub struct AzureEnvironment {
    inner: Arc<Inner>,
}

struct Inner {
    authority: url::Url,
    links: Vec<Link>,
    tenant: Option<String>,
    http: reqwest::Client,
    /// Tokens by scope, with the index of the link that gave them.
    cache: tokio::sync::Mutex<HashMap<String, (CachedToken, usize)>>,
}

struct Link {
    name: String,
    source: Result<Source, String>,
}

enum Source {
    ClientSecret {
        tenant: String,
        client_id: String,
        secret: Secret,
    },
    ClientCertificate {
        tenant: String,
        client_id: String,
        key: RsaKeyPair,
        x5t: String,
    },
    WorkloadIdentity {
        tenant: String,
        client_id: String,
        token_file: PathBuf,
    },
    AppService {
        endpoint: url::Url,
        header: Secret,
        client_id: Option<String>,
    },
    Imds {
        base: String,
        client_id: Option<String>,
    },
}

/// Why a source gave no token: `Absent` passes to the next source; the others stop
/// the chain (as `DefaultAzureCredential` does), keeping their cause.
enum Failure {
    /// The source has no credentials here (not configured, no identity assigned).
    Absent(String),
    /// The credentials were refused, or cannot be presented.
    Refused {
        why: String,
        source: Option<BoxError>,
    },
    /// Azure AD gave no answer.
    Unreachable { why: String, source: reqwest::Error },
    /// Azure AD answered "later" (5xx, 429).
    Status { why: String, status: u16 },
}

impl Failure {
    fn refused(why: impl Into<String>) -> Failure {
        Failure::Refused {
            why: why.into(),
            source: None,
        }
    }

    /// Why the source `link` had nothing (`Ok`: try the next), or the error that
    /// stops the chain there.
    fn stop(self, link: &str) -> Result<String, EnvError> {
        let unusable =
            |why: &str| format!("azure: the credentials from {link} could not be used: {why}");
        Err(match self {
            Failure::Absent(why) => return Ok(why),
            Failure::Refused { why, source } => EnvError::Refused {
                message: format!("azure: the credentials from {link} were refused: {why}"),
                source,
            },
            Failure::Unreachable { why, source } => EnvError::Unreachable {
                message: unusable(&why),
                source,
            },
            Failure::Status { why, status } => EnvError::Status {
                message: unusable(&why),
                status,
            },
        })
    }
}

/// How a client proves who it is in Azure AD's client-credentials grant.
enum Proof<'a> {
    Secret(&'a Secret),
    /// A signed JWT (a certificate's) or a federated token (workload identity).
    Assertion(&'a str),
}

impl std::fmt::Debug for AzureEnvironment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureEnvironment")
            .field("authority", &self.inner.authority.as_str())
            .field(
                "sources",
                &self
                    .inner
                    .links
                    .iter()
                    .map(|l| (&l.name, l.source.is_ok()))
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn env_source(ambient: &Ambient) -> Result<Result<Source, String>, EnvError> {
    let tenant = ambient.var("AZURE_TENANT_ID");
    let client = ambient.var("AZURE_CLIENT_ID");
    let secret = ambient.var("AZURE_CLIENT_SECRET");
    let cert = ambient.var("AZURE_CLIENT_CERTIFICATE_PATH");
    if secret.is_none() && cert.is_none() {
        return Ok(Err("not set".to_string()));
    }
    let (Some(tenant), Some(client_id)) = (tenant, client) else {
        return Ok(Err(
            "AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH is set, but AZURE_TENANT_ID or AZURE_CLIENT_ID is not"
                .to_string(),
        ));
    };
    if let Some(secret) = secret {
        return Ok(Ok(Source::ClientSecret {
            tenant: tenant.to_string(),
            client_id: client_id.to_string(),
            secret: Secret::new(secret),
        }));
    }
    let path = cert.unwrap_or_default();
    // (Runs on the blocking pool: see `environments::from_config_with`.)
    let bytes = std::fs::read(path).map_err(|e| EnvError::File {
        message: format!("azure: AZURE_CLIENT_CERTIFICATE_PATH ({path}) cannot be read: {e}"),
        source: e,
    })?;
    let text = Secret::new(String::from_utf8(bytes).map_err(|e| {
        EnvError::config_because(
            format!(
                "azure: AZURE_CLIENT_CERTIFICATE_PATH ({path}) is not a PEM file (PKCS#12 is not supported; convert it with `openssl pkcs12 -nodes`)"
            ),
            e.utf8_error(),
        )
    })?);
    let cert = CertificateDer::pem_slice_iter(text.expose().as_bytes())
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| {
            EnvError::config(format!(
                "azure: AZURE_CLIENT_CERTIFICATE_PATH ({path}) has no PEM certificate"
            ))
        })?;
    let key = jwt::rsa_key_from_pem(text.expose()).map_err(|e| {
        EnvError::config_because(
            format!(
                "azure: AZURE_CLIENT_CERTIFICATE_PATH ({path}): {e} (an encrypted key is not supported)"
            ),
            e,
        )
    })?;
    let thumb = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &cert);
    Ok(Ok(Source::ClientCertificate {
        tenant: tenant.to_string(),
        client_id: client_id.to_string(),
        key,
        x5t: URL_SAFE_NO_PAD.encode(thumb.as_ref()),
    }))
}

impl AzureEnvironment {
    /// Finds the configured sources in `ambient` (reading a certificate file, if
    /// any; no network). Blocking: from async code, call
    /// [`crate::environments::from_config_with`], which runs it on the blocking pool.
    pub fn new(ambient: &Ambient) -> Result<AzureEnvironment, EnvError> {
        let authority = endpoint_url(
            ambient
                .var("AZURE_AUTHORITY_HOST")
                .unwrap_or(DEFAULT_AUTHORITY),
            "AZURE_AUTHORITY_HOST",
        )
        .map_err(|e| EnvError::config_because(format!("azure: {e}"), e))?;
        let mut links = vec![Link {
            name: "environment variables (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH)".to_string(),
            source: env_source(ambient)?,
        }];
        let wi = match (
            ambient.var("AZURE_FEDERATED_TOKEN_FILE"),
            ambient.var("AZURE_CLIENT_ID"),
            ambient.var("AZURE_TENANT_ID"),
        ) {
            (Some(file), Some(client_id), Some(tenant)) => Ok(Source::WorkloadIdentity {
                tenant: tenant.to_string(),
                client_id: client_id.to_string(),
                token_file: PathBuf::from(file),
            }),
            (Some(_), _, _) => Err("AZURE_CLIENT_ID or AZURE_TENANT_ID is not set".to_string()),
            (None, _, _) => Err("not set".to_string()),
        };
        links.push(Link {
            name: "workload identity (AZURE_FEDERATED_TOKEN_FILE)".to_string(),
            source: wi,
        });
        let client_id = ambient.var("AZURE_CLIENT_ID").map(str::to_string);
        match (
            ambient.var("IDENTITY_ENDPOINT"),
            ambient.var("IDENTITY_HEADER"),
        ) {
            (Some(endpoint), Some(header)) => {
                // App Service's and Arc's endpoints are plain HTTP on loopback.
                let endpoint = endpoint_url(endpoint, "IDENTITY_ENDPOINT")
                    .map_err(|e| EnvError::config_because(format!("azure: {e}"), e))?;
                links.push(Link {
                    name: "managed identity (IDENTITY_ENDPOINT)".to_string(),
                    source: Ok(Source::AppService {
                        endpoint,
                        header: Secret::new(header),
                        client_id,
                    }),
                });
            }
            _ => {
                let base = ambient
                    .var("AZURE_POD_IDENTITY_AUTHORITY_HOST")
                    .unwrap_or(DEFAULT_IMDS)
                    .trim_end_matches('/')
                    .to_string();
                links.push(Link {
                    name: format!("managed identity (IMDS at {base})"),
                    source: Ok(Source::Imds { base, client_id }),
                });
            }
        }
        Ok(AzureEnvironment {
            inner: Arc::new(Inner {
                authority,
                links,
                tenant: ambient.var("AZURE_TENANT_ID").map(str::to_string),
                http: http::client(Duration::from_secs(2), Duration::from_secs(30)),
                cache: tokio::sync::Mutex::new(HashMap::new()),
            }),
        })
    }

    /// `AZURE_TENANT_ID`, when set.
    pub fn tenant_id(&self) -> Option<&str> {
        self.inner.tenant.as_deref()
    }

    /// An Azure AD access token for `scope` (`https://management.azure.com/.default`),
    /// and the description of the source that gave it. Cached until five minutes
    /// before it expires.
    pub async fn token(&self, scope: &str) -> Result<(Secret, String), EnvError> {
        let mut cache = self.inner.cache.lock().await;
        if let Some((t, i)) = cache.get(scope).filter(|(t, _)| t.is_fresh()) {
            return Ok((t.token.clone(), self.inner.links[*i].name.clone()));
        }
        let mut tried = Vec::new();
        for (i, link) in self.inner.links.iter().enumerate() {
            let source = match &link.source {
                Ok(s) => s,
                Err(why) => {
                    tried.push(format!("{}: {why}", link.name));
                    continue;
                }
            };
            match self.fetch(source, scope).await {
                Ok(t) => {
                    let token = t.token.clone();
                    cache.insert(scope.to_string(), (t, i));
                    return Ok((token, link.name.clone()));
                }
                Err(failure) => match failure.stop(&link.name) {
                    Ok(why) => tried.push(format!("{}: {why}", link.name)),
                    Err(e) => return Err(e),
                },
            }
        }
        Err(EnvError::no_credentials(format!(
            "azure: no credentials: tried {}; set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (or AZURE_CLIENT_CERTIFICATE_PATH), use workload identity, or run with a managed identity",
            tried.join("; ")
        )))
    }

    async fn fetch(&self, source: &Source, scope: &str) -> Result<CachedToken, Failure> {
        match source {
            Source::ClientSecret {
                tenant,
                client_id,
                secret,
            } => {
                self.client_credentials(tenant, client_id, Proof::Secret(secret), scope)
                    .await
            }
            Source::ClientCertificate {
                tenant,
                client_id,
                key,
                x5t,
            } => {
                let url = self.token_url(tenant)?;
                let now = jwt::now_epoch();
                let jti = format!("{:032x}", rand::random::<u128>());
                let assertion = jwt::sign_rs256(
                    key,
                    &serde_json::json!({"alg": "RS256", "typ": "JWT", "x5t": x5t}),
                    &serde_json::json!({
                        "aud": url.as_str(),
                        "iss": client_id,
                        "sub": client_id,
                        "jti": jti,
                        "nbf": now,
                        "iat": now,
                        "exp": now + 600,
                    }),
                )
                .map_err(|e| Failure::Refused {
                    why: e.to_string(),
                    source: Some(Box::new(e)),
                })?;
                self.client_credentials(tenant, client_id, Proof::Assertion(&assertion), scope)
                    .await
            }
            Source::WorkloadIdentity {
                tenant,
                client_id,
                token_file,
            } => {
                let token =
                    Secret::new(tokio::fs::read_to_string(token_file).await.map_err(|e| {
                        Failure::Absent(format!(
                            "AZURE_FEDERATED_TOKEN_FILE ({}) cannot be read: {e}",
                            token_file.display()
                        ))
                    })?);
                let assertion = Proof::Assertion(token.expose().trim());
                self.client_credentials(tenant, client_id, assertion, scope)
                    .await
            }
            Source::AppService {
                endpoint,
                header,
                client_id,
            } => {
                let mut url = endpoint.clone();
                {
                    let mut q = url.query_pairs_mut();
                    q.append_pair("api-version", "2019-08-01");
                    q.append_pair("resource", resource_of(scope));
                    if let Some(c) = client_id {
                        q.append_pair("client_id", c);
                    }
                }
                let req = self
                    .inner
                    .http
                    .get(url)
                    .header("X-IDENTITY-HEADER", header.expose());
                self.managed_identity(req).await
            }
            Source::Imds { base, client_id } => {
                let mut url = url::Url::parse(&format!("{base}/metadata/identity/oauth2/token"))
                    .map_err(|e| Failure::Absent(format!("bad IMDS address: {e}")))?;
                {
                    let mut q = url.query_pairs_mut();
                    q.append_pair("api-version", "2018-02-01");
                    q.append_pair("resource", resource_of(scope));
                    if let Some(c) = client_id {
                        q.append_pair("client_id", c);
                    }
                }
                let req = self.inner.http.get(url).header("Metadata", "true");
                self.managed_identity(req).await
            }
        }
    }

    fn token_url(&self, tenant: &str) -> Result<url::Url, Failure> {
        let base = self.inner.authority.as_str().trim_end_matches('/');
        url::Url::parse(&format!("{base}/{tenant}/oauth2/v2.0/token")).map_err(|e| {
            Failure::Refused {
                why: format!("AZURE_TENANT_ID `{tenant}` makes no valid URL: {e}"),
                source: Some(Box::new(e)),
            }
        })
    }

    /// A token for `scope` from Azure AD's v2.0 endpoint of `tenant`: the
    /// client-credentials grant of `client_id`, which proves itself with `proof`.
    async fn client_credentials(
        &self,
        tenant: &str,
        client_id: &str,
        proof: Proof<'_>,
        scope: &str,
    ) -> Result<CachedToken, Failure> {
        let mut pairs = vec![
            ("client_id", client_id),
            ("scope", scope),
            ("grant_type", "client_credentials"),
        ];
        match proof {
            Proof::Secret(secret) => pairs.push(("client_secret", secret.expose())),
            Proof::Assertion(assertion) => {
                pairs.push(("client_assertion_type", ASSERTION_TYPE));
                pairs.push(("client_assertion", assertion));
            }
        }
        let url = self.token_url(tenant)?;
        let req = http::post_form(&self.inner.http, url.clone(), &pairs);
        http::request_token(req).await.map_err(|f| match f {
            TokenFailure::Unreachable(source) => Failure::Unreachable {
                why: format!("{url} could not be reached: {}", error_chain(&source)),
                source,
            },
            TokenFailure::Status { status, reason } if http::transient_status(status.as_u16()) => {
                Failure::Status {
                    why: format!("Azure AD ({url}) answered {reason}"),
                    status: status.as_u16(),
                }
            }
            TokenFailure::Status { reason, .. } => {
                Failure::refused(format!("Azure AD ({url}) answered {reason}"))
            }
            TokenFailure::Unreadable(e) => Failure::Refused {
                why: format!("Azure AD ({url}) answered an unreadable token ({e})"),
                source: Some(Box::new(e)),
            },
        })
    }

    async fn managed_identity(&self, req: reqwest::RequestBuilder) -> Result<CachedToken, Failure> {
        http::request_token(req).await.map_err(|f| match f {
            TokenFailure::Unreachable(e) => Failure::Absent(format!("unreachable ({})", cause(&e))),
            // IMDS: "Identity not found" — no identity is assigned to this machine.
            TokenFailure::Status { status, reason }
                if status == reqwest::StatusCode::BAD_REQUEST
                    || status == reqwest::StatusCode::NOT_FOUND =>
            {
                Failure::Absent(format!("no managed identity: {reason}"))
            }
            TokenFailure::Status { status, reason } if http::transient_status(status.as_u16()) => {
                Failure::Status {
                    why: format!("the managed identity endpoint answered {reason}"),
                    status: status.as_u16(),
                }
            }
            TokenFailure::Status { reason, .. } => {
                Failure::refused(format!("the managed identity endpoint answered {reason}"))
            }
            TokenFailure::Unreadable(e) => Failure::Refused {
                why: format!("the managed identity endpoint answered an unreadable token ({e})"),
                source: Some(Box::new(e)),
            },
        })
    }
}

/// `https://management.azure.com/.default` → `https://management.azure.com/`.
fn resource_of(scope: &str) -> &str {
    scope.strip_suffix(".default").unwrap_or(scope)
}

#[async_trait]
impl Environment for AzureEnvironment {
    fn kind(&self) -> EnvironmentType {
        EnvironmentType::Azure
    }

    async fn verify(&self) -> Result<Verified, EnvError> {
        let (_, from) = self.token(ARM_SCOPE).await?;
        let i = self
            .inner
            .links
            .iter()
            .position(|l| l.name == from)
            .unwrap_or_default();
        let principal = match &self.inner.links[i].source {
            Ok(
                Source::ClientSecret {
                    tenant, client_id, ..
                }
                | Source::ClientCertificate {
                    tenant, client_id, ..
                }
                | Source::WorkloadIdentity {
                    tenant, client_id, ..
                },
            ) => Some(format!("client {client_id} in tenant {tenant}")),
            Ok(Source::AppService { client_id, .. } | Source::Imds { client_id, .. }) => {
                Some(match client_id {
                    Some(c) => format!("user-assigned managed identity {c}"),
                    None => "system-assigned managed identity".to_string(),
                })
            }
            Err(_) => None,
        };
        Ok(Verified {
            credentials_from: from,
            principal,
        })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
