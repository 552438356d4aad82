//! HTTP helpers shared by the credential chains and the registries: the client, the
//! loopback rule for plain HTTP, OAuth2 token responses and errors, token caching.

// The token parts serve the gcp and azure environments only.
#![cfg_attr(not(any(feature = "gcp", feature = "azure")), allow(dead_code))]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::Secret;

pub(crate) const USER_AGENT: &str = concat!("hoist-agent/", env!("CARGO_PKG_VERSION"));

/// A client for credential and registry endpoints: bounded connect and total times.
pub(crate) fn client(connect: Duration, total: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(connect)
        .timeout(total)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// The host part of `HOST`, `HOST:PORT`, `[V6]` or `[V6]:PORT`.
pub(crate) fn host_only(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        // A bare IPv6 address has several colons and no port.
        Some((h, p)) if !h.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// Whether `authority` (`HOST[:PORT]`) names this machine: `localhost`, 127.0.0.0/8
/// or `::1`. Only such hosts may be spoken to in plain HTTP.
pub fn is_loopback_host(authority: &str) -> bool {
    let host = host_only(authority);
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Why a URL taken from a credential file or variable cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EndpointError {
    #[error("{what} `{url}` is not a URL: {source}")]
    NotAUrl {
        what: String,
        url: String,
        #[source]
        source: url::ParseError,
    },
    #[error(
        "{what} `{url}` uses plain HTTP to a remote host; only https:// is allowed (http:// for loopback addresses only)"
    )]
    PlainHttp { what: String, url: String },
    #[error("{what} `{url}` has scheme `{scheme}`; expected https://")]
    Scheme {
        what: String,
        url: String,
        scheme: String,
    },
}

/// An endpoint URL taken from a credential file or variable (`token_uri`,
/// `AZURE_AUTHORITY_HOST`…): `https://`, or `http://` to a loopback host. Errors quote
/// the URL with any user-info password masked.
pub(crate) fn endpoint_url(s: &str, what: &str) -> Result<url::Url, EndpointError> {
    let shown = masked_url(s);
    let url = url::Url::parse(s).map_err(|source| EndpointError::NotAUrl {
        what: what.to_string(),
        url: shown.clone(),
        source,
    })?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if url.host_str().is_some_and(is_loopback_host) => Ok(url),
        "http" => Err(EndpointError::PlainHttp {
            what: what.to_string(),
            url: shown,
        }),
        other => Err(EndpointError::Scheme {
            what: what.to_string(),
            url: shown,
            scheme: other.to_string(),
        }),
    }
}

/// `scheme://user:password@host…` with the password (or a lone token) masked.
pub(crate) fn masked_url(s: &str) -> String {
    let Some(scheme_end) = s.find("://") else {
        return s.to_string();
    };
    let rest = &s[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return s.to_string();
    };
    let masked = match rest[..at].split_once(':') {
        Some((user, _)) => format!("{user}:{}", hoist_core::secret::MASKED),
        None => hoist_core::secret::MASKED.to_string(),
    };
    format!("{}{masked}{}", &s[..scheme_end + 3], &rest[at..])
}

/// `a=1&b=2`, URL-encoded (`application/x-www-form-urlencoded`).
pub(crate) fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// A `POST` of `pairs` as `application/x-www-form-urlencoded` (OAuth2 token requests:
/// the secrets go in the body, never in the URL).
pub(crate) fn post_form(
    http: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    pairs: &[(&str, &str)],
) -> reqwest::RequestBuilder {
    http.post(url)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(form(pairs))
}

/// An error with its causes, `a: b: c` (reqwest's errors hide the interesting part,
/// "connection refused", in their sources).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out
}

/// The innermost causes of a request error ("tcp connect error: Connection refused"),
/// without reqwest's "error sending request for url (…)" wrapper.
pub(crate) fn cause(e: &reqwest::Error) -> String {
    use std::error::Error;
    match e.source() {
        Some(s) if e.is_connect() || e.is_request() => error_chain(s),
        _ => error_chain(e),
    }
}

/// A number that some token endpoints send as a string (Azure managed identity).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum NumOrString {
    Num(u64),
    Str(String),
}

impl NumOrString {
    pub(crate) fn get(&self) -> Option<u64> {
        match self {
            NumOrString::Num(n) => Some(*n),
            NumOrString::Str(s) => s.trim().parse().ok(),
        }
    }
}

/// An OAuth2 access-token response (RFC 6749 §5.1, plus Azure's `expires_on`).
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    pub(crate) access_token: String,
    #[serde(default)]
    pub(crate) expires_in: Option<NumOrString>,
    /// Seconds since the epoch (Azure managed identity).
    #[serde(default)]
    pub(crate) expires_on: Option<NumOrString>,
}

impl TokenResponse {
    pub(crate) fn into_cached(self) -> CachedToken {
        let now_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let lifetime = self
            .expires_in
            .as_ref()
            .and_then(NumOrString::get)
            .or_else(|| {
                self.expires_on
                    .as_ref()
                    .and_then(NumOrString::get)
                    .map(|on| on.saturating_sub(now_epoch))
            });
        CachedToken::new(Secret::new(self.access_token), lifetime)
    }
}

/// Google's JSON error body (`{"error": {"code": 403, "message": "…", "status":
/// "PERMISSION_DENIED"}}`), as Cloud Storage, Vertex AI and Cloud Logging answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GoogleErrorBody {
    /// `error.message` (empty when absent).
    pub message: String,
    /// `error.status`, the canonical code name (empty when absent).
    pub status: String,
    /// `error.code`, as written (a number or a string).
    pub code: Option<String>,
}

/// Reads Google's error body; `None` when `body` is not one.
pub(crate) fn google_error_body(body: &str) -> Option<GoogleErrorBody> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let e = v.get("error")?.as_object()?;
    let text = |k: &str| {
        e.get(k)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Some(GoogleErrorBody {
        message: text("message"),
        status: text("status"),
        code: e
            .get("code")
            .map(|c| c.to_string().trim_matches('"').to_string()),
    })
}

/// An OAuth2 error body (`{"error": …, "error_description": …}`), or the start of
/// whatever came instead. Token endpoints never echo secrets in errors.
pub(crate) fn oauth_error(status: reqwest::StatusCode, body: &str) -> String {
    #[derive(Deserialize)]
    struct OAuthError {
        error: serde_json::Value,
        #[serde(default)]
        error_description: Option<String>,
    }
    if let Ok(e) = serde_json::from_str::<OAuthError>(body) {
        let code = match &e.error {
            serde_json::Value::String(s) => s.clone(),
            // Some endpoints nest: {"error": {"code": …, "message": …}}.
            serde_json::Value::Object(o) => {
                let code = o.get("code").and_then(|v| v.as_str()).unwrap_or("error");
                let msg = o.get("message").and_then(|v| v.as_str()).unwrap_or("");
                return format!("HTTP {status}: {code}: {msg}");
            }
            other => other.to_string(),
        };
        return match e.error_description {
            Some(d) => format!("HTTP {status}: {code}: {d}"),
            None => format!("HTTP {status}: {code}"),
        };
    }
    let snippet: String = body.chars().take(200).collect();
    if snippet.trim().is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {}", snippet.trim())
    }
}

/// When to stop using a credential that lives `lifetime_secs` from now: five minutes
/// (or half the lifetime, if shorter) before it expires; `None` (fetch each time) when
/// the lifetime is unknown or zero.
pub(crate) fn refresh_at(lifetime_secs: Option<u64>) -> Option<Instant> {
    lifetime_secs.filter(|s| *s > 0).map(|s| {
        let margin = (s / 2).min(300);
        Instant::now() + Duration::from_secs(s - margin)
    })
}

/// An access token and when to stop using it.
#[derive(Clone, Debug)]
pub(crate) struct CachedToken {
    pub(crate) token: Secret,
    /// When to fetch a new one: five minutes (or half the lifetime, if shorter)
    /// before the token expires. `None`: the lifetime is unknown; fetch each time.
    refresh_at: Option<Instant>,
}

impl CachedToken {
    pub(crate) fn new(token: Secret, lifetime_secs: Option<u64>) -> CachedToken {
        CachedToken {
            token,
            refresh_at: refresh_at(lifetime_secs),
        }
    }

    pub(crate) fn is_fresh(&self) -> bool {
        self.refresh_at.is_some_and(|t| Instant::now() < t)
    }
}

/// Why a token request gave no token.
#[derive(Debug)]
pub(crate) enum TokenFailure {
    /// No answer: connect, TLS, timeout, a broken connection.
    Unreachable(reqwest::Error),
    /// An answer other than 2xx; `reason` is [`oauth_error`] of the body.
    Status {
        status: reqwest::StatusCode,
        reason: String,
    },
    /// A 2xx whose body is not a token response.
    Unreadable(serde_json::Error),
}

/// Sends a token request and reads an OAuth2 token response (RFC 6749 §5.1).
pub(crate) async fn request_token(
    req: reqwest::RequestBuilder,
) -> Result<CachedToken, TokenFailure> {
    let resp = req.send().await.map_err(TokenFailure::Unreachable)?;
    let status = resp.status();
    let body = resp.text().await.map_err(TokenFailure::Unreachable)?;
    if !status.is_success() {
        return Err(TokenFailure::Status {
            status,
            reason: oauth_error(status, &body),
        });
    }
    serde_json::from_str::<TokenResponse>(&body)
        .map(TokenResponse::into_cached)
        .map_err(TokenFailure::Unreadable)
}

/// Whether an HTTP status says "try again later": 408, 429, 500, 502, 503, 504.
pub(crate) fn transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// Whether a request error is worth retrying: no answer came (connect, timeout, a
/// connection closed mid-way); not a request that could not be built.
pub(crate) fn transient_request(e: &reqwest::Error) -> bool {
    !e.is_builder() && !e.is_redirect() && !e.is_decode()
}

/// Attempts of [`retry_transient`], and its first and longest pause.
pub(crate) const RETRY_ATTEMPTS: u32 = 4;
const RETRY_FIRST_PAUSE: Duration = Duration::from_millis(200);
const RETRY_MAX_PAUSE: Duration = Duration::from_secs(2);

/// Runs `op` until it succeeds, fails for good, or [`RETRY_ATTEMPTS`] attempts failed
/// transiently (`transient(&error)`): pauses of 200 ms, doubling, capped at 2 s, each
/// with up to a quarter of random jitter. A refusal is never transient, so it is
/// never asked twice. `what` names the operation in the debug log.
pub(crate) async fn retry_transient<T, E, F, Fut>(
    what: &str,
    transient: impl Fn(&E) -> bool,
    mut op: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut pause = RETRY_FIRST_PAUSE;
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if attempt < RETRY_ATTEMPTS && transient(&e) => {
                let jitter = pause.mul_f64(rand::random::<f64>() / 4.0);
                tracing::debug!(
                    message = "Transient failure; retrying.",
                    what,
                    attempt,
                    error = %e,
                    pause_ms = (pause + jitter).as_millis() as u64,
                );
                tokio::time::sleep(pause + jitter).await;
                pause = (pause * 2).min(RETRY_MAX_PAUSE);
                attempt += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1",
            "127.0.0.1:5000",
            "127.3.4.5:80",
            "localhost",
            "LOCALHOST:5000",
            "[::1]:5000",
            "::1",
            "[::1]",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "10.0.0.1:5000",
            "registry.example.com",
            "localhost.example.com:5000",
            "[fe80::1]:5000",
            "0.0.0.0:5000",
            "128.0.0.1",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn endpoint_urls() {
        assert!(endpoint_url("https://oauth2.googleapis.com/token", "token_uri").is_ok());
        assert!(endpoint_url("http://127.0.0.1:8080/token", "token_uri").is_ok());
        let e = endpoint_url("http://evil.example.com/token", "token_uri").unwrap_err();
        assert!(e.to_string().contains("plain HTTP to a remote host"), "{e}");
        assert!(endpoint_url("ftp://x/y", "token_uri").is_err());
        // A password in the URL is never quoted.
        let e = endpoint_url("http://user:hunter2@evil.example.com/t", "token_uri").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(
            e.to_string().contains("user:********@evil.example.com"),
            "{e}"
        );
    }

    #[test]
    fn oauth_errors() {
        let s = reqwest::StatusCode::BAD_REQUEST;
        assert_eq!(
            oauth_error(
                s,
                r#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#
            ),
            "HTTP 400 Bad Request: invalid_grant: Invalid JWT Signature."
        );
        assert_eq!(oauth_error(s, ""), "HTTP 400 Bad Request");
    }

    #[test]
    fn token_lifetimes() {
        assert!(CachedToken::new(Secret::new("t"), Some(3600)).is_fresh());
        assert!(!CachedToken::new(Secret::new("t"), None).is_fresh());
        assert!(!CachedToken::new(Secret::new("t"), Some(0)).is_fresh());
        let r: TokenResponse =
            serde_json::from_str(r#"{"access_token":"a","expires_in":"3599"}"#).unwrap();
        assert!(r.into_cached().is_fresh());
    }
}
