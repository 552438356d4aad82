//! In-process fakes of the cloud endpoints hoist's registries and environments call,
//! for the clouds that have no emulator here. Each speaks exactly the wire format of
//! the real service for the calls hoist makes, and checks what it is sent:
//!
//! - Google's OAuth2 token endpoint (`POST /token`): the JWT bearer grant (RS256
//!   signature checked against the service account's public key; `iss`, `aud`,
//!   `scope`, `iat`/`exp` checked) and the refresh-token grant; Google's error bodies
//!   (`{"error":"invalid_grant","error_description":…}`).
//! - The GCE metadata server (`/computeMetadata/v1/…`, `Metadata-Flavor: Google`).
//! - Azure AD's v2 token endpoint (`POST /{tenant}/oauth2/v2.0/token`, client
//!   credentials with a secret; for Azure Storage's scope an unsigned JWT of the
//!   claims Azurite's `--oauth basic` checks: `aud`, `iss`, `nbf`, `exp`), Azure IMDS managed identity
//!   (`GET /metadata/identity/oauth2/token`, `Metadata: true`).
//! - A registry's Distribution API (`/v2/`, `HEAD /v2/<repo>/manifests/<tag>`) behind a
//!   Bearer challenge, with either Artifact Registry's token endpoint
//!   (`GET /v2/token`, Basic `oauth2accesstoken:<access token>`) or ACR's
//!   (`POST /oauth2/exchange`, `POST /oauth2/token`).
//!
//! Any of them can be made to fail: [`Fake::faults`] answers the next requests to a
//! `METHOD PATH` with a status of the test's choosing (a 503 for "try again later").
//!
//! Bound to 127.0.0.1 on a free port; stopped when dropped.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

/// Which token endpoint the fake registry's Bearer challenge points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryFlavor {
    /// `realm="http://HOST/v2/token"`, Basic `oauth2accesstoken:<Google access token>`.
    ArtifactRegistry,
    /// `realm="http://HOST/oauth2/token"`, ACR refresh tokens from `/oauth2/exchange`.
    Acr,
}

#[derive(Default)]
pub struct Fake {
    pub base: String,
    pub host: String,
    /// PKCS#1 DER public key of the service account whose JWTs are accepted.
    pub google_public_key: Mutex<Option<Vec<u8>>>,
    pub google_email: Mutex<String>,
    /// `(client_id, client_secret, refresh_token)` of the accepted user credentials.
    pub google_user: Mutex<Option<(String, String, String)>>,
    /// Metadata server: the service account e-mail it serves tokens for, if any.
    pub metadata_account: Mutex<Option<String>>,
    /// `(tenant, client_id, client_secret)` that Azure AD accepts.
    pub aad_clients: Mutex<Vec<(String, String, String)>>,
    /// Azure IMDS serves tokens when true.
    pub azure_imds: Mutex<bool>,
    /// The `aud` of the Azure Storage tokens Azure AD issues (`None`:
    /// `https://storage.azure.com`, what Azurite accepts).
    pub aad_storage_audience: Mutex<Option<String>>,
    pub registry_flavor: Mutex<Option<RegistryFlavor>>,
    /// `repo:tag` the registry has.
    pub manifests: Mutex<HashSet<String>>,
    /// Access tokens issued by the Google / Azure AD fakes.
    pub access_tokens: Mutex<HashSet<String>>,
    /// ACR refresh tokens issued by `/oauth2/exchange`.
    pub refresh_tokens: Mutex<HashSet<String>>,
    /// Registry tokens issued, with their scope.
    pub registry_tokens: Mutex<BTreeMap<String, String>>,
    /// How many access tokens the OAuth endpoints issued.
    pub tokens_issued: AtomicUsize,
    /// `METHOD PATH` of every request (never bodies: they hold secrets).
    pub requests: Mutex<Vec<String>>,
    /// STS (query protocol): the error `(HTTP status, code, message)` every call
    /// gets.
    pub sts_error: Mutex<Option<(u16, String, String)>>,
    /// Problems the fake found in what it was sent (a test fails if not empty).
    pub problems: Mutex<Vec<String>>,
    /// `METHOD PATH` → (status, how many more requests get it instead of an answer).
    pub faults: Mutex<BTreeMap<String, (u16, usize)>>,
}

pub struct Server {
    pub fake: Arc<Fake>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::ops::Deref for Server {
    type Target = Fake;
    fn deref(&self) -> &Fake {
        &self.fake
    }
}

impl Server {
    /// An Azure Storage access token of this fake Azure AD, for a client it knows
    /// (client credentials with a secret): what a test sends to Azurite itself.
    pub async fn azure_storage_token(&self, tenant: &str, client: &str, secret: &str) -> String {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", client),
            ("client_secret", secret),
            ("scope", AZURE_STORAGE_SCOPE),
        ];
        let t: Value = reqwest::Client::new()
            .post(format!("{}/{tenant}/oauth2/v2.0/token", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form)
                    .finish(),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        t["access_token"].as_str().unwrap().to_string()
    }

    pub async fn start(configure: impl FnOnce(&mut Fake)) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let mut fake = Fake {
            base: format!("http://{addr}"),
            host: addr.to_string(),
            ..Fake::default()
        };
        configure(&mut fake);
        let fake = Arc::new(fake);
        let app = Router::new()
            .route("/token", post(google_token))
            .route(
                "/computeMetadata/v1/instance/service-accounts/default/token",
                get(metadata_token),
            )
            .route(
                "/computeMetadata/v1/instance/service-accounts/default/email",
                get(metadata_email),
            )
            .route(
                "/computeMetadata/v1/project/project-id",
                get(metadata_project),
            )
            .route("/{tenant}/oauth2/v2.0/token", post(aad_token))
            .route("/metadata/identity/oauth2/token", get(azure_imds))
            .route("/oauth2/exchange", post(acr_exchange))
            .route("/oauth2/token", post(acr_token))
            .route("/v2/token", get(gar_token))
            .route("/", post(sts))
            .route("/v2/", any(v2_root))
            .route("/v2/{*rest}", any(v2_rest))
            .layer(axum::middleware::from_fn_with_state(fake.clone(), faults))
            .with_state(fake.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Server { fake, task }
    }

    pub fn problems(&self) -> Vec<String> {
        self.fake.problems.lock().unwrap().clone()
    }

    pub fn issued(&self) -> usize {
        self.fake.tokens_issued.load(Ordering::SeqCst)
    }

    /// The next `times` requests to `METHOD PATH` are answered `status` (an empty body).
    pub fn fail(&self, method_path: &str, status: u16, times: usize) {
        self.fake
            .faults
            .lock()
            .unwrap()
            .insert(method_path.to_string(), (status, times));
    }

    /// How many requests `METHOD PATH` got (answered or failed).
    pub fn count(&self, method_path: &str) -> usize {
        self.fake
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| *r == method_path)
            .count()
    }
}

/// Answers a request with its injected fault, if one is pending.
async fn faults(
    State(f): S,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let key = format!("{} {}", req.method(), req.uri().path());
    let status = match f.faults.lock().unwrap().get_mut(&key) {
        Some((status, left)) if *left > 0 => {
            *left -= 1;
            Some(*status)
        }
        _ => None,
    };
    match status {
        Some(status) => {
            log(&f, req.method().as_str(), req.uri().path());
            StatusCode::from_u16(status).unwrap().into_response()
        }
        None => next.run(req).await,
    }
}

type S = State<Arc<Fake>>;

fn log(f: &Fake, method: &str, path: &str) {
    f.requests.lock().unwrap().push(format!("{method} {path}"));
}

fn problem(f: &Fake, p: String) {
    f.problems.lock().unwrap().push(p);
}

fn form(body: &Bytes) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn new_token(f: &Fake, prefix: &str) -> String {
    let n = f.tokens_issued.fetch_add(1, Ordering::SeqCst);
    let t = format!("{prefix}-{n}-{:016x}", rand::random::<u64>());
    f.access_tokens.lock().unwrap().insert(t.clone());
    t
}

fn json_status(status: StatusCode, v: Value) -> Response {
    (status, axum::Json(v)).into_response()
}

fn google_error(desc: &str) -> Response {
    json_status(
        StatusCode::BAD_REQUEST,
        json!({"error": "invalid_grant", "error_description": desc}),
    )
}

/// Google's token endpoint.
async fn google_token(State(f): S, headers: HeaderMap, body: Bytes) -> Response {
    log(&f, "POST", "/token");
    if headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        != Some("application/x-www-form-urlencoded")
    {
        problem(&f, "token request without a form content type".into());
    }
    let p = form(&body);
    match p.get("grant_type").map(String::as_str) {
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => {
            let Some(jwt) = p.get("assertion") else {
                return google_error("Missing required parameter: assertion");
            };
            let parts: Vec<&str> = jwt.split('.').collect();
            if parts.len() != 3 {
                return google_error("Invalid JWT: Token must be a short-lived token");
            }
            let header: Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap_or_default())
                    .unwrap_or(Value::Null);
            let claims: Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap_or_default())
                    .unwrap_or(Value::Null);
            if header["alg"] != "RS256" || header["typ"] != "JWT" {
                return google_error("Invalid JWT header");
            }
            let Some(key) = f.google_public_key.lock().unwrap().clone() else {
                return google_error("Invalid JWT Signature.");
            };
            let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap_or_default();
            let signed = format!("{}.{}", parts[0], parts[1]);
            if UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &key)
                .verify(signed.as_bytes(), &sig)
                .is_err()
            {
                return google_error("Invalid JWT Signature.");
            }
            let aud = format!("{}/token", f.base);
            if claims["aud"] != aud.as_str() {
                problem(&f, format!("JWT aud {} != {aud}", claims["aud"]));
                return google_error("Invalid JWT: Failed audience check.");
            }
            if claims["iss"] != f.google_email.lock().unwrap().as_str() {
                return google_error("Invalid grant: account not found");
            }
            if !claims["scope"]
                .as_str()
                .unwrap_or_default()
                .split(' ')
                .any(|s| s == "https://www.googleapis.com/auth/cloud-platform")
            {
                problem(&f, format!("JWT scope {}", claims["scope"]));
            }
            let (iat, exp) = (
                claims["iat"].as_u64().unwrap_or(0),
                claims["exp"].as_u64().unwrap_or(0),
            );
            let n = now();
            if iat > n + 60 || exp <= n || exp - iat > 3600 {
                return google_error(
                    "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.",
                );
            }
            let t = new_token(&f, "ya29.sa");
            json_status(
                StatusCode::OK,
                json!({"access_token": t, "expires_in": 3599, "token_type": "Bearer"}),
            )
        }
        Some("refresh_token") => {
            let ok = f
                .google_user
                .lock()
                .unwrap()
                .as_ref()
                .is_some_and(|(id, s, r)| {
                    p.get("client_id") == Some(id)
                        && p.get("client_secret") == Some(s)
                        && p.get("refresh_token") == Some(r)
                });
            if !ok {
                return google_error("Bad Request");
            }
            let t = new_token(&f, "ya29.user");
            json_status(
                StatusCode::OK,
                json!({"access_token": t, "expires_in": 3599, "token_type": "Bearer",
                       "scope": "https://www.googleapis.com/auth/cloud-platform"}),
            )
        }
        other => json_status(
            StatusCode::BAD_REQUEST,
            json!({"error": "unsupported_grant_type", "error_description": format!("Invalid grant_type: {}", other.unwrap_or(""))}),
        ),
    }
}

/// STS: every action fails with the configured error, in STS's XML error format.
async fn sts(State(f): S, headers: HeaderMap) -> Response {
    log(&f, "POST", "/");
    if !headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256 Credential="))
    {
        problem(
            &f,
            "STS request without a SigV4 Authorization header".into(),
        );
    }
    let (status, code, message) = f.sts_error.lock().unwrap().clone().unwrap_or((
        500,
        "InternalFailure".into(),
        "no error configured".into(),
    ));
    let body = format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>4f3a5e1c-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
    );
    (
        StatusCode::from_u16(status).unwrap(),
        [(header::CONTENT_TYPE, "text/xml")],
        body,
    )
        .into_response()
}

fn metadata_flavor(headers: &HeaderMap) -> bool {
    headers.get("Metadata-Flavor").and_then(|v| v.to_str().ok()) == Some("Google")
}

async fn metadata_token(State(f): S, headers: HeaderMap) -> Response {
    log(
        &f,
        "GET",
        "/computeMetadata/v1/instance/service-accounts/default/token",
    );
    if !metadata_flavor(&headers) {
        return (
            StatusCode::FORBIDDEN,
            "Missing Metadata-Flavor:Google header.",
        )
            .into_response();
    }
    if f.metadata_account.lock().unwrap().is_none() {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    let t = new_token(&f, "ya29.gce");
    json_status(
        StatusCode::OK,
        json!({"access_token": t, "expires_in": 3599, "token_type": "Bearer"}),
    )
}

async fn metadata_email(State(f): S, headers: HeaderMap) -> Response {
    if !metadata_flavor(&headers) {
        return StatusCode::FORBIDDEN.into_response();
    }
    match f.metadata_account.lock().unwrap().clone() {
        Some(a) => a.into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn metadata_project(headers: HeaderMap) -> Response {
    if !metadata_flavor(&headers) {
        return StatusCode::FORBIDDEN.into_response();
    }
    "fake-gce-project".into_response()
}

/// Azure AD v2.0 token endpoint, client-credentials grant with a secret.
async fn aad_token(State(f): S, Path(tenant): Path<String>, body: Bytes) -> Response {
    log(&f, "POST", &format!("/{tenant}/oauth2/v2.0/token"));
    let p = form(&body);
    if p.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return json_status(
            StatusCode::BAD_REQUEST,
            json!({"error": "unsupported_grant_type", "error_description": "AADSTS70003: The app requested an unsupported grant type.", "error_codes": [70003]}),
        );
    }
    let storage = p.get("scope").map(String::as_str) == Some(AZURE_STORAGE_SCOPE);
    if !storage
        && p.get("scope").map(String::as_str) != Some("https://management.azure.com/.default")
    {
        problem(&f, format!("AAD scope {:?}", p.get("scope")));
    }
    let clients = f.aad_clients.lock().unwrap().clone();
    let Some((_, _, secret)) = clients
        .iter()
        .find(|(t, c, _)| *t == tenant && Some(c) == p.get("client_id"))
    else {
        return json_status(
            StatusCode::BAD_REQUEST,
            json!({"error": "unauthorized_client", "error_description": "AADSTS700016: Application with identifier was not found in the directory.", "error_codes": [700016]}),
        );
    };
    if p.get("client_secret") != Some(secret) {
        return json_status(
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.", "error_codes": [7000215]}),
        );
    }
    let t = if storage {
        storage_token(&f, &tenant)
    } else {
        new_token(&f, "aad")
    };
    json_status(
        StatusCode::OK,
        json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": t}),
    )
}

pub const AZURE_STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

/// An Azure Storage access token as Azurite's `--oauth basic` reads it: a JWT whose
/// signature it does not check, with an Azure AD issuer, an audience and a lifetime.
fn storage_token(f: &Fake, tenant: &str) -> String {
    let n = f.tokens_issued.fetch_add(1, Ordering::SeqCst);
    let aud = f
        .aad_storage_audience
        .lock()
        .unwrap()
        .clone()
        .unwrap_or_else(|| "https://storage.azure.com".to_string());
    let now = now();
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string());
    let claims = URL_SAFE_NO_PAD.encode(
        json!({
            "aud": aud,
            "iss": format!("https://sts.windows.net/{tenant}/"),
            "iat": now - 60,
            "nbf": now - 60,
            "exp": now + 3600,
            "tid": tenant,
            "oid": format!("00000000-0000-0000-0000-{n:012}"),
            "jti": format!("{:016x}", rand::random::<u64>()),
        })
        .to_string(),
    );
    let t = format!("{header}.{claims}.");
    f.access_tokens.lock().unwrap().insert(t.clone());
    t
}

/// Azure IMDS managed identity.
async fn azure_imds(
    State(f): S,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    log(&f, "GET", "/metadata/identity/oauth2/token");
    if headers.get("Metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return json_status(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_request", "error_description": "Required metadata header not specified"}),
        );
    }
    if q.get("api-version").map(String::as_str) != Some("2018-02-01") {
        problem(&f, format!("IMDS api-version {:?}", q.get("api-version")));
    }
    if !*f.azure_imds.lock().unwrap() {
        return json_status(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_request", "error_description": "Identity not found"}),
        );
    }
    let resource = q.get("resource").cloned().unwrap_or_default();
    let t = new_token(&f, "aad-mi");
    let on = now() + 3599;
    json_status(
        StatusCode::OK,
        json!({"access_token": t, "expires_in": "3599", "expires_on": on.to_string(), "resource": resource, "token_type": "Bearer"}),
    )
}

fn acr_error(status: StatusCode, message: &str) -> Response {
    json_status(
        status,
        json!({"errors": [{"code": "UNAUTHORIZED", "message": message, "detail": null}]}),
    )
}

/// ACR: AAD access token → ACR refresh token.
async fn acr_exchange(State(f): S, body: Bytes) -> Response {
    log(&f, "POST", "/oauth2/exchange");
    let p = form(&body);
    if p.get("grant_type").map(String::as_str) != Some("access_token") {
        return acr_error(StatusCode::BAD_REQUEST, "grant_type must be access_token");
    }
    if p.get("service") != Some(&f.host) {
        problem(
            &f,
            format!("exchange service {:?} != {}", p.get("service"), f.host),
        );
    }
    let known = p
        .get("access_token")
        .is_some_and(|t| f.access_tokens.lock().unwrap().contains(t));
    if !known {
        return acr_error(
            StatusCode::UNAUTHORIZED,
            "Invalid AAD access token: the token could not be validated",
        );
    }
    let rt = format!("acr-refresh-{:016x}", rand::random::<u64>());
    f.refresh_tokens.lock().unwrap().insert(rt.clone());
    json_status(StatusCode::OK, json!({"refresh_token": rt}))
}

/// ACR: refresh token → access token for a scope.
async fn acr_token(State(f): S, body: Bytes) -> Response {
    log(&f, "POST", "/oauth2/token");
    let p = form(&body);
    if p.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return acr_error(StatusCode::BAD_REQUEST, "grant_type must be refresh_token");
    }
    let known = p
        .get("refresh_token")
        .is_some_and(|t| f.refresh_tokens.lock().unwrap().contains(t));
    if !known {
        return acr_error(StatusCode::UNAUTHORIZED, "Invalid refresh token");
    }
    let scope = p.get("scope").cloned().unwrap_or_default();
    let t = format!("acr-access-{:016x}", rand::random::<u64>());
    f.registry_tokens.lock().unwrap().insert(t.clone(), scope);
    json_status(StatusCode::OK, json!({"access_token": t}))
}

/// Artifact Registry: Basic `oauth2accesstoken:<access token>` → registry token.
async fn gar_token(
    State(f): S,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    log(&f, "GET", "/v2/token");
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let ok = basic
        .as_deref()
        .and_then(|b| b.split_once(':'))
        .is_some_and(|(u, p)| {
            u == "oauth2accesstoken" && f.access_tokens.lock().unwrap().contains(p)
        });
    if !ok {
        return json_status(
            StatusCode::UNAUTHORIZED,
            json!({"errors": [{"code": "UNAUTHORIZED", "message": "failed authentication"}]}),
        );
    }
    if q.get("service") != Some(&f.host) {
        problem(
            &f,
            format!("token service {:?} != {}", q.get("service"), f.host),
        );
    }
    let scope = q.get("scope").cloned().unwrap_or_default();
    let t = format!("gar-{:016x}", rand::random::<u64>());
    f.registry_tokens.lock().unwrap().insert(t.clone(), scope);
    json_status(StatusCode::OK, json!({"token": t, "expires_in": 3600}))
}

fn challenge(f: &Fake, scope: Option<&str>) -> Response {
    let realm = match *f.registry_flavor.lock().unwrap() {
        Some(RegistryFlavor::Acr) => format!("{}/oauth2/token", f.base),
        _ => format!("{}/v2/token", f.base),
    };
    let mut value = format!("Bearer realm=\"{realm}\",service=\"{}\"", f.host);
    if let Some(s) = scope {
        value.push_str(&format!(",scope=\"{s}\""));
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, value)],
        axum::Json(json!({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required", "detail": null}]})),
    )
        .into_response()
}

async fn v2_root(State(f): S, method: Method) -> Response {
    log(&f, method.as_str(), "/v2/");
    challenge(&f, None)
}

async fn v2_rest(
    State(f): S,
    method: Method,
    Path(rest): Path<String>,
    headers: HeaderMap,
) -> Response {
    log(&f, method.as_str(), &format!("/v2/{rest}"));
    let Some((repo, reference)) = rest.rsplit_once("/manifests/") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let scope = format!("repository:{repo}:pull");
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let granted = bearer
        .and_then(|t| f.registry_tokens.lock().unwrap().get(&t).cloned())
        .is_some_and(|s| {
            s.split(' ')
                .any(|s| s == scope || s.starts_with(&format!("{scope},")))
        });
    if !granted {
        return challenge(&f, Some(&scope));
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !accept.contains("application/vnd.oci.image.manifest.v1+json")
        || !accept.contains("application/vnd.docker.distribution.manifest.v2+json")
    {
        problem(&f, format!("manifest Accept: {accept}"));
    }
    if f.manifests
        .lock()
        .unwrap()
        .contains(&format!("{repo}:{reference}"))
    {
        (
            StatusCode::OK,
            [
                (
                    header::CONTENT_TYPE,
                    "application/vnd.oci.image.manifest.v1+json",
                ),
                (
                    header::HeaderName::from_static("docker-content-digest"),
                    "sha256:0000000000000000000000000000000000000000000000000000000000000000",
                ),
            ],
        )
            .into_response()
    } else {
        json_status(
            StatusCode::NOT_FOUND,
            json!({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}),
        )
    }
}

/// A fresh RSA key: (PKCS#8 PEM of the private key, PKCS#1 DER of the public key).
pub fn rsa_key() -> (String, Vec<u8>) {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
    use aws_lc_rs::signature::KeyPair;
    let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let der = AsDer::<Pkcs8V1Der>::as_der(&kp).unwrap();
    let b64 = STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    (pem, kp.public_key().as_ref().to_vec())
}

/// A loopback address where nothing listens (connection refused at once).
pub fn closed_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr.to_string()
}
