//! Any OCI registry (`registry: {uri: HOST[:PORT]/REPO}`), and the one registry
//! implementation every remote registry is: [`OciRegistry`] over a [`TokenSource`].
//!
//! # One registry, four token sources
//! A remote registry is a host, a repository path under it, the Distribution API
//! ([`ManifestClient`]) and somewhere its credentials come from. Only the last differs
//! between kinds, so it is the one trait, [`TokenSource`] ("give me credentials for
//! this registry"), and [`OciRegistry<S>`] is the registry for all of them:
//! - [`DockerConfig`] (`oci`): a Docker `config.json`, read afresh each time;
//! - `ecr::EcrTokens`: `ecr:GetAuthorizationToken`;
//! - `gcr::GoogleTokens`: a Google OAuth2 access token as `oauth2accesstoken`'s password;
//! - `acr::AcrTokens`: ACR's exchange of an Azure AD token for a refresh token.
//!
//! [`OciRegistry`] caches what a source issues for as long as the source says it
//! lives (less five minutes), and retries a source, and a manifest check, when the
//! failure is transient ([`RegistryError::is_transient`]: no answer, a 5xx or 429)
//! with capped backoff; a refusal is never asked twice.
//!
//! # Transport
//! A remote host is always spoken to over HTTPS. A loopback host (`localhost`,
//! 127.0.0.0/8, `::1`) is tried over HTTPS first and then plain HTTP, as the Docker
//! daemon does for its default insecure registries; `uri: http://…` is accepted for
//! loopback hosts only and refused for any other ([`RegistryError::Config`]).
//!
//! # Credentials of an `oci` registry
//! From the `credentials-file` (alias `secret-file`) of the registry config, else the
//! agent's Docker config (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`),
//! both in Docker's `config.json` format: `credHelpers[HOST]`, else `credsStore` (a
//! `docker-credential-NAME get` helper, the host on its standard input), else
//! `auths[HOST]` (`auth` = base64 of `user:password`, or `username` + `password`, or an
//! `identitytoken`). No entry means anonymous access. Everything secret read from the
//! file or a helper is held as a [`Secret`].
//!
//! # Does the image exist
//! [`ManifestClient::manifest_exists`]: `HEAD /v2/<repo>/manifests/<ref>` accepting the
//! OCI and Docker v2 manifest and index types; on `401` the `WWW-Authenticate`
//! challenge is answered: `Basic` with the credentials, `Bearer realm=…,service=…,
//! scope=…` with a token from the realm (`GET` with Basic credentials or anonymously;
//! `POST grant_type=refresh_token` for an identity token, as ACR wants). `200` → the
//! image exists, `404` → it does not, `401`/`403` with credentials → a
//! [`RegistryError::Refused`] naming the registry, the user and where the credentials
//! came from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use super::{Registry, RegistryAuth, RegistryError};
use crate::config;
use crate::environments::http::{self, error_chain, is_loopback_host};
use crate::environments::{Ambient, Secret};

/// The manifest media types a manifest HEAD accepts.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// The user name Docker's credential helpers use for an identity (refresh) token.
pub const IDENTITY_TOKEN_USER: &str = "<token>";

/// A credential for one registry. `Debug` never shows a secret.
#[derive(Clone, Debug)]
pub enum Credential {
    Anonymous,
    Basic {
        username: String,
        password: Secret,
    },
    /// An OAuth2 refresh token for the registry's token endpoint (ACR, Docker's
    /// `identitytoken`).
    IdentityToken(Secret),
}

/// A credential and where it came from (for messages; never the secret).
#[derive(Clone, Debug)]
pub struct Credentials {
    pub credential: Credential,
    /// `/root/.docker/config.json`, `docker-credential-pass (credsStore in …)`,
    /// `ECR GetAuthorizationToken`…
    pub from: String,
}

impl Credentials {
    pub fn anonymous(from: impl Into<String>) -> Credentials {
        Credentials {
            credential: Credential::Anonymous,
            from: from.into(),
        }
    }

    /// The credentials as Docker wants them for a push or pull; `None` = anonymous.
    pub fn to_registry_auth(&self, server: &str) -> Option<RegistryAuth> {
        match &self.credential {
            Credential::Anonymous => None,
            Credential::Basic { username, password } => Some(RegistryAuth {
                server: server.to_string(),
                username: username.clone(),
                password: password.clone(),
            }),
            Credential::IdentityToken(t) => Some(RegistryAuth {
                server: server.to_string(),
                username: IDENTITY_TOKEN_USER.to_string(),
                password: t.clone(),
            }),
        }
    }

    /// "the credentials of user hoist (from FILE)", for messages.
    fn describe(&self) -> String {
        match &self.credential {
            Credential::Anonymous => format!("anonymous access ({})", self.from),
            Credential::Basic { username, .. } => {
                format!("the credentials of user {username} (from {})", self.from)
            }
            Credential::IdentityToken(_) => format!("the identity token (from {})", self.from),
        }
    }
}

/// `HOST[:PORT]/REPO[:TAG|@DIGEST]` → (`HOST[:PORT]`, `REPO`, `TAG` or `DIGEST`); the tag
/// defaults to `latest`.
pub fn split_reference(image: &str) -> Result<(String, String, String), RegistryError> {
    let bad = || {
        RegistryError::Config(format!(
            "image reference `{image}` is not of the form HOST[:PORT]/REPOSITORY[:TAG]"
        ))
    };
    let (name, reference) = match image.split_once('@') {
        Some((n, d)) => (n, d.to_string()),
        None => {
            let slash = image.rfind('/').unwrap_or(0);
            match image[slash..].rfind(':') {
                Some(i) => (&image[..slash + i], image[slash + i + 1..].to_string()),
                None => (image, "latest".to_string()),
            }
        }
    };
    let (host, repo) = name.split_once('/').ok_or_else(bad)?;
    if host.is_empty() || repo.is_empty() || reference.is_empty() {
        return Err(bad());
    }
    Ok((host.to_string(), repo.to_string(), reference))
}

/// A registry's Distribution API (`/v2/`), as far as hoist needs it.
pub struct ManifestClient {
    host: String,
    http: reqwest::Client,
    /// `https://HOST` or (loopback only) `http://HOST`, decided on first use.
    base: tokio::sync::OnceCell<String>,
    plain_http: bool,
}

impl std::fmt::Debug for ManifestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManifestClient")
            .field("host", &self.host)
            .field("base", &self.base.get())
            .finish_non_exhaustive()
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    // key="value" pairs; values may contain commas (scopes), so scan quotes.
    let mut params = BTreeMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (key, after) = s.split_once('=')?;
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (q[..end].to_string(), &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(key, value);
        s = tail.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

/// The `errors` of a Distribution API error body
/// (`{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`), as
/// (code, message) pairs; `None` when the body is something else.
pub(crate) fn distribution_errors(body: &str) -> Option<Vec<(String, String)>> {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<Error>,
    }
    #[derive(Deserialize)]
    struct Error {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    serde_json::from_str::<Errors>(body)
        .ok()
        .filter(|e| !e.errors.is_empty())
        .map(|e| e.errors.into_iter().map(|e| (e.code, e.message)).collect())
}

/// `unauthorized: authentication required` from a registry's error body.
fn registry_reason(status: reqwest::StatusCode, body: &str) -> String {
    if let Some(errors) = distribution_errors(body) {
        return errors
            .iter()
            .map(|(code, message)| format!("{}: {message}", code.to_ascii_lowercase()))
            .collect::<Vec<_>>()
            .join("; ");
    }
    match status.as_u16() {
        401 => "unauthorized: authentication required".to_string(),
        403 => "denied: requested access to the resource is denied".to_string(),
        _ => http::oauth_error(status, body),
    }
}

impl ManifestClient {
    /// A client for `host` (`HOST[:PORT]`). `plain_http` (the URI said `http://`) is
    /// refused for a remote host.
    pub fn new(host: &str, plain_http: bool) -> Result<ManifestClient, RegistryError> {
        if host.is_empty() || host.contains('/') {
            return Err(RegistryError::Config(format!(
                "registry host `{host}` is not of the form HOST[:PORT]"
            )));
        }
        if plain_http && !is_loopback_host(host) {
            return Err(RegistryError::Config(format!(
                "registry {host}: plain HTTP (http://) is allowed for loopback addresses only (localhost, 127.0.0.0/8, ::1); use https:// for a remote registry"
            )));
        }
        Ok(ManifestClient {
            host: host.to_string(),
            http: http::client(Duration::from_secs(5), Duration::from_secs(60)),
            base: tokio::sync::OnceCell::new(),
            plain_http,
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The HTTP client token sources share with the registry (bounded times).
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `https://HOST`, or `http://HOST` for a loopback host without TLS.
    pub async fn base_url(&self) -> Result<String, RegistryError> {
        self.base
            .get_or_try_init(|| async {
                let host = &self.host;
                if self.plain_http {
                    return Ok(format!("http://{host}"));
                }
                let https = format!("https://{host}");
                if !is_loopback_host(host) {
                    return Ok(https);
                }
                match self.http.get(format!("{https}/v2/")).send().await {
                    Ok(_) => Ok(https),
                    Err(tls_err) => {
                        let plain = format!("http://{host}");
                        match self.http.get(format!("{plain}/v2/")).send().await {
                            Ok(_) => Ok(plain),
                            Err(e) => Err(RegistryError::Unreachable {
                                message: format!(
                                    "registry {host} could not be reached over HTTPS ({}) nor HTTP ({})",
                                    error_chain(&tls_err),
                                    error_chain(&e)
                                ),
                                source: e,
                            }),
                        }
                    }
                }
            })
            .await
            .cloned()
    }

    fn unreachable(&self, source: reqwest::Error) -> RegistryError {
        RegistryError::Unreachable {
            message: format!(
                "registry {} could not be reached: {}",
                self.host,
                error_chain(&source)
            ),
            source,
        }
    }

    /// The refusal of `creds` by this registry (or its token endpoint), for `reason`.
    fn refused(&self, creds: &Credentials, reason: &str) -> RegistryError {
        RegistryError::Refused {
            message: match creds.credential {
                Credential::Anonymous => format!(
                    "registry {} requires authentication and no credentials for it were found ({}): {reason}",
                    self.host, creds.from
                ),
                _ => format!(
                    "registry {} refused {}: {reason}",
                    self.host,
                    creds.describe()
                ),
            },
        }
    }

    /// Whether `repo:reference` exists (a manifest HEAD, answering the auth challenge).
    /// One attempt: [`OciRegistry::has_image`] retries it when the failure is transient.
    pub async fn manifest_exists(
        &self,
        repo: &str,
        reference: &str,
        creds: &Credentials,
    ) -> Result<bool, RegistryError> {
        let base = self.base_url().await?;
        let url = format!("{base}/v2/{repo}/manifests/{reference}");
        let resp = self.head(&url, None).await?;
        let status = resp.status();
        match status.as_u16() {
            200 => return Ok(true),
            404 => return Ok(false),
            401 => {}
            _ => return Err(self.unexpected(&url, None, status, creds).await),
        }
        let challenge = resp
            .headers()
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(parse_challenge)
            .ok_or_else(|| RegistryError::Unreadable {
                message: format!(
                    "registry {} answered 401 without a Basic or Bearer challenge",
                    self.host
                ),
                source: None,
            })?;
        let header = match challenge {
            Challenge::Basic => match &creds.credential {
                Credential::Basic { username, password } => {
                    Secret::new(basic(username, password.expose()))
                }
                Credential::IdentityToken(_) => {
                    return Err(RegistryError::Refused {
                        message: format!(
                            "registry {} asks for a user name and password, but {} is an identity token",
                            self.host,
                            creds.describe()
                        ),
                    });
                }
                Credential::Anonymous => {
                    return Err(RegistryError::Refused {
                        message: format!(
                            "registry {} requires authentication and no credentials for it were found ({})",
                            self.host, creds.from
                        ),
                    });
                }
            },
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let scope = scope.unwrap_or_else(|| format!("repository:{repo}:pull"));
                let token = self
                    .bearer_token(&realm, service.as_deref(), &scope, creds)
                    .await?;
                Secret::new(format!("Bearer {}", token.expose()))
            }
        };
        let resp = self.head(&url, Some(&header)).await?;
        let status = resp.status();
        match status.as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.unexpected(&url, Some(&header), status, creds).await),
        }
    }

    async fn head(
        &self,
        url: &str,
        auth: Option<&Secret>,
    ) -> Result<reqwest::Response, RegistryError> {
        let mut req = self
            .http
            .head(url)
            .header(reqwest::header::ACCEPT, MANIFEST_ACCEPT);
        if let Some(a) = auth {
            req = req.header(reqwest::header::AUTHORIZATION, a.expose());
        }
        req.send().await.map_err(|e| self.unreachable(e))
    }

    /// The error for an answer other than 200/404: the reason comes from a GET of the
    /// same URL (a HEAD has no body).
    async fn unexpected(
        &self,
        url: &str,
        auth: Option<&Secret>,
        status: reqwest::StatusCode,
        creds: &Credentials,
    ) -> RegistryError {
        let mut req = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, MANIFEST_ACCEPT);
        if let Some(a) = auth {
            req = req.header(reqwest::header::AUTHORIZATION, a.expose());
        }
        let body = match req.send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let reason = registry_reason(status, &body);
        match status.as_u16() {
            401 | 403 if matches!(creds.credential, Credential::Anonymous) => {
                RegistryError::Refused {
                    message: format!(
                        "registry {} refused anonymous access and no credentials for it were found ({}): {reason}",
                        self.host, creds.from
                    ),
                }
            }
            401 | 403 => RegistryError::Refused {
                message: format!(
                    "registry {} refused {}: {reason}",
                    self.host,
                    creds.describe()
                ),
            },
            _ => RegistryError::Status {
                message: format!(
                    "registry {} answered HTTP {status} for a manifest: {reason}",
                    self.host
                ),
                status: status.as_u16(),
            },
        }
    }

    /// A registry token from the challenge's realm.
    async fn bearer_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        creds: &Credentials,
    ) -> Result<Secret, RegistryError> {
        let realm_url =
            http::endpoint_url(realm, "token realm").map_err(|e| RegistryError::Unreadable {
                message: format!("registry {}: {e}", self.host),
                source: Some(Box::new(e)),
            })?;
        let req = match &creds.credential {
            Credential::IdentityToken(rt) => {
                let mut pairs = vec![
                    ("grant_type", "refresh_token"),
                    ("scope", scope),
                    ("refresh_token", rt.expose()),
                    ("client_id", "hoist"),
                ];
                if let Some(s) = service {
                    pairs.push(("service", s));
                }
                http::post_form(&self.http, realm_url.clone(), &pairs)
            }
            other => {
                let mut url = realm_url.clone();
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    q.append_pair("scope", scope);
                }
                let req = self.http.get(url);
                match other {
                    Credential::Basic { username, password } => req.header(
                        reqwest::header::AUTHORIZATION,
                        basic(username, password.expose()),
                    ),
                    _ => req,
                }
            }
        };
        let resp = req
            .send()
            .await
            .map_err(|source| RegistryError::Unreachable {
                message: format!(
                    "the token endpoint {realm_url} of registry {} could not be reached: {}",
                    self.host,
                    error_chain(&source)
                ),
                source,
            })?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(self.refused(creds, &registry_reason(status, &body)));
        }
        if !status.is_success() {
            return Err(RegistryError::Status {
                message: format!(
                    "the token endpoint {realm_url} of registry {} answered {}",
                    self.host,
                    registry_reason(status, &body)
                ),
                status: status.as_u16(),
            });
        }
        #[derive(Deserialize)]
        struct Token {
            token: Option<Secret>,
            access_token: Option<Secret>,
        }
        let t: Token = serde_json::from_str(&body).map_err(|e| RegistryError::Unreadable {
            message: format!(
                "the token endpoint {realm_url} of registry {} answered an unreadable token ({e})",
                self.host
            ),
            source: Some(Box::new(e)),
        })?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| RegistryError::Unreadable {
                message: format!(
                    "the token endpoint {realm_url} of registry {} answered no token",
                    self.host
                ),
                source: None,
            })
    }
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// Where a registry's credentials come from: "give me credentials for this
/// registry". [`OciRegistry`] is generic over it; see the module documentation.
#[async_trait]
pub trait TokenSource: Send + Sync + std::fmt::Debug {
    /// `oci`, `ecr`, `gcr`, `acr`.
    fn kind(&self) -> &'static str;

    /// Credentials for `registry` (its host; its base URL, for a source that asks the
    /// registry itself), and how long they may be reused. One attempt:
    /// [`OciRegistry::credentials`] caches and retries.
    async fn issue(&self, registry: &ManifestClient) -> Result<Issued, RegistryError>;

    /// The credentials as Docker's `X-Registry-Auth` wants them (`None`: anonymous).
    fn registry_auth(&self, creds: &Credentials, server: &str) -> Option<RegistryAuth> {
        creds.to_registry_auth(server)
    }
}

/// Credentials a [`TokenSource`] issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub credentials: Credentials,
    /// How long they are valid from now; `None`: unknown, ask every time.
    pub lifetime: Option<Duration>,
}

/// A remote registry: `HOST/PATH` with credentials from `S` (a Docker config for an
/// `oci` registry; see the module documentation for the others).
#[derive(Debug)]
pub struct OciRegistry<S = DockerConfig> {
    /// The repository under the host (`hoist/jobs`, `PROJECT/REPOSITORY/IMAGE`).
    path: String,
    client: ManifestClient,
    source: S,
    /// What `source` issued last, and until when to reuse it.
    cache: tokio::sync::Mutex<Option<(Credentials, Instant)>>,
}

impl<S: TokenSource> OciRegistry<S> {
    /// The registry `HOST/PATH`, its credentials from `source`.
    pub(crate) fn with_source(
        host: &str,
        plain_http: bool,
        path: &str,
        source: S,
    ) -> Result<OciRegistry<S>, RegistryError> {
        let client = ManifestClient::new(host, plain_http)?;
        let path = path.trim_matches('/').to_string();
        if path.is_empty() {
            return Err(RegistryError::Config(format!(
                "registry {host}: the URI names no repository; expected HOST[:PORT]/REPOSITORY"
            )));
        }
        Ok(OciRegistry {
            path,
            client,
            source,
            cache: tokio::sync::Mutex::new(None),
        })
    }

    pub fn host(&self) -> &str {
        self.client.host()
    }

    /// Where the credentials come from.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// The credentials for this registry: the last ones while they live, else issued
    /// afresh (retried while the failure is transient).
    pub async fn credentials(&self) -> Result<Credentials, RegistryError> {
        let mut cache = self.cache.lock().await;
        if let Some((c, until)) = cache.as_ref()
            && Instant::now() < *until
        {
            return Ok(c.clone());
        }
        let issued =
            http::retry_transient("registry credentials", RegistryError::is_transient, || {
                self.source.issue(&self.client)
            })
            .await?;
        *cache = http::refresh_at(issued.lifetime.map(|d| d.as_secs()))
            .map(|until| (issued.credentials.clone(), until));
        Ok(issued.credentials)
    }
}

#[async_trait]
impl<S: TokenSource> Registry for OciRegistry<S> {
    fn kind(&self) -> &'static str {
        self.source.kind()
    }

    fn repository(&self) -> Option<String> {
        Some(format!("{}/{}", self.host(), self.path))
    }

    async fn auth(&self) -> Result<Option<RegistryAuth>, RegistryError> {
        let creds = self.credentials().await?;
        Ok(self.source.registry_auth(&creds, self.host()))
    }

    async fn has_image(&self, image: &str) -> Result<bool, RegistryError> {
        let (repo, reference) = reference_in(image, self.host())?;
        let creds = self.credentials().await?;
        http::retry_transient("manifest check", RegistryError::is_transient, || {
            self.client.manifest_exists(&repo, &reference, &creds)
        })
        .await
    }
}

/// Credentials from a Docker `config.json` (an `oci` registry's `credentials-file`,
/// or the agent's own), read afresh every time.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    file: PathBuf,
    /// The file was configured, so it must exist.
    explicit: bool,
}

impl DockerConfig {
    pub fn file(&self) -> &Path {
        &self.file
    }
}

#[async_trait]
impl TokenSource for DockerConfig {
    fn kind(&self) -> &'static str {
        "oci"
    }

    async fn issue(&self, registry: &ManifestClient) -> Result<Issued, RegistryError> {
        Ok(Issued {
            credentials: docker_config_credentials(&self.file, self.explicit, registry.host())
                .await?,
            lifetime: None,
        })
    }
}

impl OciRegistry<DockerConfig> {
    /// The registry of `cfg`, its Docker config found through `ambient`
    /// (`DOCKER_CONFIG`, the home directory).
    pub fn new(cfg: &config::OciRegistry, ambient: &Ambient) -> Result<OciRegistry, RegistryError> {
        let source = match &cfg.credentials_file {
            Some(p) => DockerConfig {
                file: expand_home(p, ambient),
                explicit: true,
            },
            None => DockerConfig {
                file: ambient
                    .var("DOCKER_CONFIG")
                    .map(|d| PathBuf::from(d).join("config.json"))
                    .or_else(|| ambient.in_home(".docker/config.json"))
                    .unwrap_or_else(|| PathBuf::from(".docker/config.json")),
                explicit: false,
            },
        };
        OciRegistry::with_source(&cfg.host, cfg.plain_http, &cfg.repository, source)
    }
}

fn expand_home(p: &Path, ambient: &Ambient) -> PathBuf {
    match (p.strip_prefix("~"), ambient.home()) {
        (Ok(rest), Some(home)) => home.join(rest),
        _ => p.to_path_buf(),
    }
}

/// Docker's `config.json`, the parts hoist reads.
#[derive(Deserialize, Default)]
struct DockerConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    auth: Option<Secret>,
    username: Option<String>,
    password: Option<Secret>,
    identitytoken: Option<Secret>,
}

/// `https://127.0.0.1:5001/v1/` → `127.0.0.1:5001`.
fn normalize_server(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

/// The credentials for `host` in the Docker config file `path` (`explicit`: the file
/// was configured, so it must exist).
pub async fn docker_config_credentials(
    path: &Path,
    explicit: bool,
    host: &str,
) -> Result<Credentials, RegistryError> {
    let shown = path.display().to_string();
    let text = match tokio::fs::read_to_string(path).await {
        Ok(t) => Secret::new(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(Credentials::anonymous(format!("{shown} does not exist")));
        }
        Err(e) => {
            return Err(RegistryError::CredentialsFile {
                message: format!(
                    "registry {host}: the credentials file {shown} cannot be read: {e}"
                ),
                source: e,
            });
        }
    };
    let cfg: DockerConfigFile =
        serde_json::from_str(text.expose()).map_err(|e| RegistryError::CredentialsFormat {
            message: format!(
                "registry {host}: the credentials file {shown} is not a Docker config.json ({e})"
            ),
            source: Some(Box::new(e)),
        })?;
    let helper = cfg
        .cred_helpers
        .iter()
        .find(|(k, _)| normalize_server(k) == host)
        .map(|(_, v)| (v.clone(), "credHelpers"))
        .or_else(|| cfg.creds_store.clone().map(|s| (s, "credsStore")));
    if let Some((name, key)) = helper.filter(|(n, _)| !n.is_empty()) {
        return credential_helper(&name, key, &shown, host).await;
    }
    let Some((_, entry)) = cfg.auths.iter().find(|(k, _)| normalize_server(k) == host) else {
        return Ok(Credentials::anonymous(format!(
            "{shown} has no entry for {host}"
        )));
    };
    let from = shown.clone();
    if let Some(t) = entry.identitytoken.as_ref().filter(|t| !t.is_empty()) {
        return Ok(Credentials {
            credential: Credential::IdentityToken(t.clone()),
            from,
        });
    }
    let (username, password) = match (&entry.auth, &entry.username, &entry.password) {
        (Some(a), _, _) if !a.is_empty() => {
            let bad = |source: Option<crate::environments::BoxError>| {
                RegistryError::CredentialsFormat {
                    message: format!(
                        "registry {host}: auths.\"{host}\".auth in {shown} is not base64 of USER:PASSWORD"
                    ),
                    source,
                }
            };
            let decoded = STANDARD
                .decode(a.expose().trim())
                .map_err(|e| bad(Some(Box::new(e))))?;
            let decoded = Secret::new(
                String::from_utf8(decoded).map_err(|e| bad(Some(Box::new(e.utf8_error()))))?,
            );
            let (u, p) = decoded.expose().split_once(':').ok_or_else(|| bad(None))?;
            (u.to_string(), Secret::new(p))
        }
        (_, Some(u), Some(p)) => (u.clone(), p.clone()),
        _ => {
            return Ok(Credentials::anonymous(format!(
                "the entry for {host} in {shown} has no credentials"
            )));
        }
    };
    Ok(Credentials {
        credential: Credential::Basic { username, password },
        from,
    })
}

/// Longest a credential helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// `docker-credential-NAME get`, the host on standard input (never on the command
/// line); `{"Username": …, "Secret": …}` on standard output.
async fn credential_helper(
    name: &str,
    key: &str,
    file: &str,
    host: &str,
) -> Result<Credentials, RegistryError> {
    use tokio::io::AsyncWriteExt;
    let program = format!("docker-credential-{name}");
    let from = format!("{program} ({key} in {file})");
    let failed = |message: String, source: Option<std::io::Error>| RegistryError::Helper {
        message,
        missing: false,
        source,
    };
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| RegistryError::Helper {
            message: format!(
                "registry {host}: the credential helper {program} ({key} in {file}) cannot be run: {e}; install it or remove `{key}`"
            ),
            missing: true,
            source: Some(e),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(host.as_bytes()).await;
    }
    let out = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            let message = format!(
                "registry {host}: the credential helper {program} did not answer within {}s",
                HELPER_TIMEOUT.as_secs()
            );
            let source = std::io::Error::new(std::io::ErrorKind::TimedOut, message.clone());
            failed(message, Some(source))
        })?
        .map_err(|e| {
            failed(
                format!("registry {host}: the credential helper {program} failed: {e}"),
                Some(e),
            )
        })?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if said.contains("credentials not found") {
            return Ok(Credentials::anonymous(format!(
                "{from} has none for {host}"
            )));
        }
        return Err(failed(
            format!(
                "registry {host}: the credential helper {program} failed ({}): {}",
                out.status,
                said.chars().take(200).collect::<String>()
            ),
            None,
        ));
    }
    #[derive(Deserialize)]
    struct HelperOut {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: Secret,
    }
    let o: HelperOut =
        serde_json::from_slice(&out.stdout).map_err(|e| RegistryError::Unreadable {
            message: format!(
                "registry {host}: the credential helper {program} answered unreadable JSON ({e})"
            ),
            source: Some(Box::new(e)),
        })?;
    let credential = if o.username == IDENTITY_TOKEN_USER {
        Credential::IdentityToken(o.secret)
    } else {
        Credential::Basic {
            username: o.username,
            password: o.secret,
        }
    };
    Ok(Credentials { credential, from })
}

/// Checks that `image` is in `host` and splits it into repository and reference.
pub fn reference_in(image: &str, host: &str) -> Result<(String, String), RegistryError> {
    let (h, repo, reference) = split_reference(image)?;
    if h != host {
        return Err(RegistryError::Config(format!(
            "image `{image}` is not in registry {host}"
        )));
    }
    Ok((repo, reference))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let s = |i: &str| split_reference(i).unwrap();
        assert_eq!(
            s("127.0.0.1:5001/hoist/test:abc"),
            ("127.0.0.1:5001".into(), "hoist/test".into(), "abc".into())
        );
        assert_eq!(
            s("127.0.0.1:5001/hoist/test"),
            (
                "127.0.0.1:5001".into(),
                "hoist/test".into(),
                "latest".into()
            )
        );
        assert_eq!(
            s("r.example.com/a/b@sha256:00ff"),
            ("r.example.com".into(), "a/b".into(), "sha256:00ff".into())
        );
        assert!(split_reference("busybox").is_err());
        assert!(reference_in("other:5000/x:1", "127.0.0.1:5000").is_err());
    }

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(r#"Basic realm="hoist-test""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://x.azurecr.io/oauth2/token",service="x.azurecr.io",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://x.azurecr.io/oauth2/token".into(),
                service: Some("x.azurecr.io".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
    }

    #[test]
    fn plain_http_only_for_loopback() {
        assert!(ManifestClient::new("127.0.0.1:5000", true).is_ok());
        assert!(ManifestClient::new("localhost:5000", true).is_ok());
        let e = ManifestClient::new("registry.example.com", true).unwrap_err();
        assert!(matches!(e, RegistryError::Config(_)));
        assert!(e.is_config() && !e.is_transient());
        assert!(ManifestClient::new("registry.example.com", false).is_ok());
    }

    #[test]
    fn server_keys() {
        assert_eq!(
            normalize_server("https://127.0.0.1:5001/v1/"),
            "127.0.0.1:5001"
        );
        assert_eq!(normalize_server("127.0.0.1:5001"), "127.0.0.1:5001");
        assert_eq!(normalize_server("http://localhost:5000"), "localhost:5000");
    }

    #[test]
    fn registry_reasons() {
        let s = reqwest::StatusCode::UNAUTHORIZED;
        assert_eq!(
            registry_reason(
                s,
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#
            ),
            "unauthorized: authentication required"
        );
        assert_eq!(
            registry_reason(s, ""),
            "unauthorized: authentication required"
        );
    }
}
