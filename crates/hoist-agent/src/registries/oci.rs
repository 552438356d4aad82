//! Any OCI registry (`registry: {uri: HOST[:PORT]/REPO}`), and the Distribution API
//! client the cloud registries share.
//!
//! # Transport
//! A remote host is always spoken to over HTTPS. A loopback host (`localhost`,
//! 127.0.0.0/8, `::1`) is tried over HTTPS first and then plain HTTP, as the Docker
//! daemon does for its default insecure registries; `uri: http://…` is accepted for
//! loopback hosts only and refused for any other ([`RegistryError::Config`]).
//!
//! # Credentials
//! From the `credentials-file` (alias `secret-file`) of the registry config, else the
//! agent's Docker config (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`),
//! both in Docker's `config.json` format: `credHelpers[HOST]`, else `credsStore` (a
//! `docker-credential-NAME get` helper, the host on its standard input), else
//! `auths[HOST]` (`auth` = base64 of `user:password`, or `username` + `password`, or an
//! `identitytoken`). No entry means anonymous access.
//!
//! # Does the image exist
//! [`ManifestClient::manifest_exists`]: `HEAD /v2/<repo>/manifests/<ref>` accepting the
//! OCI and Docker v2 manifest and index types; on `401` the `WWW-Authenticate`
//! challenge is answered: `Basic` with the credentials, `Bearer realm=…,service=…,
//! scope=…` with a token from the realm (`GET` with Basic credentials or anonymously;
//! `POST grant_type=refresh_token` for an identity token, as ACR wants). `200` → the
//! image exists, `404` → it does not, `401`/`403` with credentials → a
//! [`RegistryError::Auth`] naming the registry, the user and where the credentials
//! came from.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use super::{Registry, RegistryAuth, RegistryError};
use crate::config;
use crate::environments::http::{self, error_chain, is_loopback_host};
use crate::environments::{Ambient, EnvError, Secret};

/// The manifest media types a manifest HEAD accepts.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// The user name Docker's credential helpers use for an identity (refresh) token.
pub const IDENTITY_TOKEN_USER: &str = "<token>";

/// A credential for one registry.
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
                password: password.expose().to_string(),
            }),
            Credential::IdentityToken(t) => Some(RegistryAuth {
                server: server.to_string(),
                username: IDENTITY_TOKEN_USER.to_string(),
                password: t.expose().to_string(),
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

/// `unauthorized: authentication required` from a registry's error body
/// (`{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`).
fn registry_reason(status: reqwest::StatusCode, body: &str) -> String {
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
    if let Ok(e) = serde_json::from_str::<Errors>(body)
        && !e.errors.is_empty()
    {
        return e
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code.to_ascii_lowercase(), e.message))
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
                            Err(e) => Err(RegistryError::Unavailable(format!(
                                "registry {host} could not be reached over HTTPS ({}) nor HTTP ({})",
                                error_chain(&tls_err),
                                error_chain(&e)
                            ))),
                        }
                    }
                }
            })
            .await
            .cloned()
    }

    fn unreachable(&self, e: &reqwest::Error) -> RegistryError {
        RegistryError::Unavailable(format!(
            "registry {} could not be reached: {}",
            self.host,
            error_chain(e)
        ))
    }

    /// Whether `repo:reference` exists (a manifest HEAD, answering the auth challenge).
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
            .ok_or_else(|| {
                RegistryError::Unavailable(format!(
                    "registry {} answered 401 without a Basic or Bearer challenge",
                    self.host
                ))
            })?;
        let header = match challenge {
            Challenge::Basic => match &creds.credential {
                Credential::Basic { username, password } => basic(username, password.expose()),
                Credential::IdentityToken(_) => {
                    return Err(RegistryError::Auth(format!(
                        "registry {} asks for a user name and password, but {} is an identity token",
                        self.host,
                        creds.describe()
                    )));
                }
                Credential::Anonymous => {
                    return Err(RegistryError::Auth(format!(
                        "registry {} requires authentication and no credentials for it were found ({})",
                        self.host, creds.from
                    )));
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
                format!("Bearer {}", token.expose())
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
        auth: Option<&str>,
    ) -> Result<reqwest::Response, RegistryError> {
        let mut req = self
            .http
            .head(url)
            .header(reqwest::header::ACCEPT, MANIFEST_ACCEPT);
        if let Some(a) = auth {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        req.send().await.map_err(|e| self.unreachable(&e))
    }

    /// The error for an answer other than 200/404: the reason comes from a GET of the
    /// same URL (a HEAD has no body).
    async fn unexpected(
        &self,
        url: &str,
        auth: Option<&str>,
        status: reqwest::StatusCode,
        creds: &Credentials,
    ) -> RegistryError {
        let mut req = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, MANIFEST_ACCEPT);
        if let Some(a) = auth {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        let body = match req.send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let reason = registry_reason(status, &body);
        match status.as_u16() {
            401 | 403 if matches!(creds.credential, Credential::Anonymous) => {
                RegistryError::Auth(format!(
                    "registry {} refused anonymous access and no credentials for it were found ({}): {reason}",
                    self.host, creds.from
                ))
            }
            401 | 403 => RegistryError::Auth(format!(
                "registry {} refused {}: {reason}",
                self.host,
                creds.describe()
            )),
            _ => RegistryError::Unavailable(format!(
                "registry {} answered HTTP {status} for a manifest: {reason}",
                self.host
            )),
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
        let realm_url = http::endpoint_url(realm, "token realm")
            .map_err(|e| RegistryError::Unavailable(format!("registry {}: {e}", self.host)))?;
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
                self.http
                    .post(realm_url.clone())
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(http::form(&pairs))
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
        let resp = req.send().await.map_err(|e| {
            RegistryError::Unavailable(format!(
                "the token endpoint {realm_url} of registry {} could not be reached: {}",
                self.host,
                error_chain(&e)
            ))
        })?;
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            let reason = registry_reason(status, &body);
            return Err(RegistryError::Auth(match creds.credential {
                Credential::Anonymous => format!(
                    "registry {} requires authentication and no credentials for it were found ({}): {reason}",
                    self.host, creds.from
                ),
                _ => format!(
                    "registry {} refused {}: {reason}",
                    self.host,
                    creds.describe()
                ),
            }));
        }
        if !status.is_success() {
            return Err(RegistryError::Unavailable(format!(
                "the token endpoint {realm_url} of registry {} answered {}",
                self.host,
                registry_reason(status, &body)
            )));
        }
        #[derive(Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Token = serde_json::from_str(&body).map_err(|e| {
            RegistryError::Unavailable(format!(
                "the token endpoint {realm_url} of registry {} answered an unreadable token ({e})",
                self.host
            ))
        })?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .map(Secret::new)
            .ok_or_else(|| {
                RegistryError::Unavailable(format!(
                    "the token endpoint {realm_url} of registry {} answered no token",
                    self.host
                ))
            })
    }
}

/// An environment's error as a registry's: missing or refused credentials are
/// [`RegistryError::Auth`].
pub fn env_to_registry(e: EnvError) -> RegistryError {
    match e {
        EnvError::Refused(m) | EnvError::NoCredentials(m) => RegistryError::Auth(m),
        EnvError::Config(m) => RegistryError::Config(m),
        EnvError::Unavailable(m) => RegistryError::Unavailable(m),
    }
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
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
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
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
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(Credentials::anonymous(format!("{shown} does not exist")));
        }
        Err(e) => {
            return Err(RegistryError::Config(format!(
                "registry {host}: the credentials file {shown} cannot be read: {e}"
            )));
        }
    };
    let cfg: DockerConfigFile = serde_json::from_str(&text).map_err(|e| {
        RegistryError::Config(format!(
            "registry {host}: the credentials file {shown} is not a Docker config.json ({e})"
        ))
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
    if let Some(t) = entry.identitytoken.as_deref().filter(|t| !t.is_empty()) {
        return Ok(Credentials {
            credential: Credential::IdentityToken(Secret::new(t)),
            from,
        });
    }
    let (username, password) = match (&entry.auth, &entry.username, &entry.password) {
        (Some(a), _, _) if !a.is_empty() => {
            let bad = || {
                RegistryError::Config(format!(
                    "registry {host}: auths.\"{host}\".auth in {shown} is not base64 of USER:PASSWORD"
                ))
            };
            let decoded = STANDARD.decode(a.trim()).map_err(|_| bad())?;
            let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
            let (u, p) = decoded.split_once(':').ok_or_else(bad)?;
            (u.to_string(), p.to_string())
        }
        (_, Some(u), Some(p)) => (u.clone(), p.clone()),
        _ => {
            return Ok(Credentials::anonymous(format!(
                "the entry for {host} in {shown} has no credentials"
            )));
        }
    };
    Ok(Credentials {
        credential: Credential::Basic {
            username,
            password: Secret::new(password),
        },
        from,
    })
}

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
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            RegistryError::Config(format!(
                "registry {host}: the credential helper {program} ({key} in {file}) cannot be run: {e}; install it or remove `{key}`"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(host.as_bytes()).await;
    }
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .map_err(|_| {
            RegistryError::Unavailable(format!(
                "registry {host}: the credential helper {program} did not answer within 30s"
            ))
        })?
        .map_err(|e| {
            RegistryError::Unavailable(format!(
                "registry {host}: the credential helper {program} failed: {e}"
            ))
        })?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if said.contains("credentials not found") {
            return Ok(Credentials::anonymous(format!(
                "{from} has none for {host}"
            )));
        }
        return Err(RegistryError::Unavailable(format!(
            "registry {host}: the credential helper {program} failed ({}): {}",
            out.status,
            said.chars().take(200).collect::<String>()
        )));
    }
    #[derive(Deserialize)]
    struct HelperOut {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let o: HelperOut = serde_json::from_slice(&out.stdout).map_err(|e| {
        RegistryError::Unavailable(format!(
            "registry {host}: the credential helper {program} answered unreadable JSON ({e})"
        ))
    })?;
    let credential = if o.username == IDENTITY_TOKEN_USER {
        Credential::IdentityToken(Secret::new(o.secret))
    } else {
        Credential::Basic {
            username: o.username,
            password: Secret::new(o.secret),
        }
    };
    Ok(Credentials { credential, from })
}

/// A generic OCI registry.
#[derive(Debug)]
pub struct OciRegistry {
    repository: String,
    client: ManifestClient,
    credentials_file: PathBuf,
    explicit_file: bool,
}

impl OciRegistry {
    /// The registry of `cfg`, its Docker config found through `ambient`
    /// (`DOCKER_CONFIG`, the home directory).
    pub fn new(cfg: &config::OciRegistry, ambient: &Ambient) -> Result<OciRegistry, RegistryError> {
        let client = ManifestClient::new(&cfg.host, cfg.plain_http)?;
        let (credentials_file, explicit_file) = match &cfg.credentials_file {
            Some(p) => (expand_home(p, ambient), true),
            None => (
                ambient
                    .var("DOCKER_CONFIG")
                    .map(|d| PathBuf::from(d).join("config.json"))
                    .or_else(|| ambient.in_home(".docker/config.json"))
                    .unwrap_or_else(|| PathBuf::from(".docker/config.json")),
                false,
            ),
        };
        let repository = cfg.repository.trim_matches('/').to_string();
        if repository.is_empty() {
            return Err(RegistryError::Config(format!(
                "registry {}: the URI names no repository; expected HOST[:PORT]/REPOSITORY",
                cfg.host
            )));
        }
        Ok(OciRegistry {
            repository,
            client,
            credentials_file,
            explicit_file,
        })
    }

    pub fn host(&self) -> &str {
        self.client.host()
    }

    /// The credentials for this registry, read afresh.
    pub async fn credentials(&self) -> Result<Credentials, RegistryError> {
        docker_config_credentials(&self.credentials_file, self.explicit_file, self.host()).await
    }
}

fn expand_home(p: &Path, ambient: &Ambient) -> PathBuf {
    match (p.strip_prefix("~"), ambient.home()) {
        (Ok(rest), Some(home)) => home.join(rest),
        _ => p.to_path_buf(),
    }
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

#[async_trait]
impl Registry for OciRegistry {
    fn kind(&self) -> &'static str {
        "oci"
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
