//! Who is signed in: the session cookie, its CSRF token, sign-in and sign-out.
//!
//! A session is opened with an API key (the sign-in form) and acts with exactly that
//! key's rights: every request looks the key up again (through the same cache as the
//! API's bearer keys), so revoking the key or deleting its user ends the session. The
//! cookie (`hoist_session`, `HttpOnly`, `SameSite=Strict`, `Secure` when the request
//! came over TLS) holds `hs_ID_SECRET`; the store keeps only a hash of the secret.
//!
//! Every state-changing request carries the session's CSRF token: forms in a hidden
//! `_csrf` field, scripts in an `X-CSRF-Token` header. The token is derived from the
//! session secret, so it is never stored. [`Posted`] is the one extractor of
//! state-changing web requests: it authenticates and checks the token before the
//! handler runs, so a handler cannot forget the check.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use serde::de::DeserializeOwned;

use super::WebError;
use crate::api::AppState;
use crate::auth::{UserPrincipal, session_principal};
use crate::secrets::{csrf_token, same_token};

pub const SESSION_COOKIE: &str = "hoist_session";
/// The sign-in form's CSRF cookie (there is no session yet to derive a token from).
pub const LOGIN_COOKIE: &str = "hoist_login";
pub const CSRF_HEADER: &str = "x-csrf-token";
pub const CSRF_FIELD: &str = "_csrf";

/// A signed-in user of the web UI, with the session's CSRF token for the page's forms.
#[derive(Clone)]
pub struct WebUser {
    pub user: UserPrincipal,
    pub session_id: String,
    pub csrf: String,
}

impl std::fmt::Debug for WebUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebUser")
            .field("user", &self.user.name)
            .field("session_id", &self.session_id)
            .field("csrf", &"<redacted>")
            .finish()
    }
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the request reached us over TLS (directly or through a proxy that says so).
pub fn is_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value with the attributes every hoist cookie has.
pub fn set_cookie(name: &str, value: &str, max_age_secs: i64, tls: bool) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    ))
    .expect("cookie values are ASCII tokens")
}

/// The session of a request, if it has a valid one.
pub async fn session_user(s: &AppState, headers: &HeaderMap) -> Result<Option<WebUser>, WebError> {
    let Some(value) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    Ok(session_principal(s, value).await?.map(|w| WebUser {
        csrf: csrf_token(&w.secret),
        user: w.user,
        session_id: w.id,
    }))
}

fn sign_in_again(parts: &Parts) -> WebError {
    let next = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    WebError::SignIn { next }
}

impl FromRequestParts<AppState> for WebUser {
    type Rejection = WebError;
    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, WebError> {
        session_user(s, &parts.headers)
            .await?
            .ok_or_else(|| sign_in_again(parts))
    }
}

/// A state-changing web request: a signed-in user whose request carries the session's
/// CSRF token (form field `_csrf` or header `X-CSRF-Token`), and its body `T` (a form,
/// or JSON when the request says `Content-Type: application/json`).
pub struct Posted<T> {
    pub who: WebUser,
    pub body: T,
}

impl<T: DeserializeOwned> FromRequest<AppState> for Posted<T> {
    type Rejection = WebError;
    async fn from_request(req: Request, s: &AppState) -> Result<Self, WebError> {
        let (mut parts, body) = req.into_parts();
        let who = WebUser::from_request_parts(&mut parts, s).await?;
        let json = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let header_token = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = axum::body::to_bytes(body, crate::api::BODY_LIMIT)
            .await
            .map_err(|_| WebError::BadInput("the form is larger than the server accepts".into()))?;
        let (token, body) = if json {
            let body = serde_json::from_slice(&bytes)
                .map_err(|e| WebError::BadInput(format!("the request is not valid JSON: {e}")))?;
            (header_token, body)
        } else {
            let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
                .map_err(|e| WebError::BadInput(format!("the form could not be read: {e}")))?;
            let token = fields
                .iter()
                .find(|(k, _)| k == CSRF_FIELD)
                .map(|(_, v)| v.clone())
                .or(header_token);
            let body = serde_urlencoded::from_bytes(&bytes)
                .map_err(|e| WebError::BadInput(format!("the form could not be read: {e}")))?;
            (token, body)
        };
        match token {
            Some(t) if same_token(&t, &who.csrf) => Ok(Posted { who, body }),
            _ => Err(WebError::Csrf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cookies_are_found_by_name_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; hoist_session=hs_x_y"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("hoist_login=n"));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("hs_x_y"));
        assert_eq!(cookie(&h, LOGIN_COOKIE), Some("n"));
        assert_eq!(cookie(&h, "hoist"), None);
    }

    #[test]
    fn session_cookies_are_http_only_strict_and_secure_behind_tls() {
        let c = set_cookie(SESSION_COOKIE, "v", 60, true);
        let c = c.to_str().unwrap();
        for part in [
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Path=/",
            "Max-Age=60",
        ] {
            assert!(c.contains(part), "{c}");
        }
        assert!(
            !set_cookie(SESSION_COOKIE, "v", 60, false)
                .to_str()
                .unwrap()
                .contains("Secure")
        );
    }

    proptest! {
        #[test]
        fn any_cookie_header_is_read_without_panicking(v in "[ -~]{0,80}") {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.append(header::COOKIE, v);
            }
            let _ = cookie(&h, SESSION_COOKIE).map(crate::secrets::parse_session);
        }
    }
}
