//! Sign-in (an API key → a session) and sign-out.

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Redirect};
use axum::routing::{get, post};
use serde::Deserialize;

use super::session::{LOGIN_COOKIE, SESSION_COOKIE, cookie, is_tls, session_user, set_cookie};
use super::view::Base;
use super::{Posted, WebError, WebResult};
use crate::api::AppState;
use crate::auth::{end_session, key_principal, open_session};
use crate::secrets::{CredentialKind, new_nonce, parse_credential, same_token};

pub fn routes() -> Router<AppState> {
    Router::new()
        // tidy: allow(web-csrf) because there is no session yet: the form's nonce cookie is checked
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    base: Base,
    login_csrf: String,
    next: String,
    error: Option<String>,
}

#[derive(Deserialize)]
struct NextParam {
    next: Option<String>,
}

/// Only a path on this server (never `//host` or a scheme): no open redirect.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/".to_string(),
    }
}

fn login_form(headers: &HeaderMap, next: String, error: Option<String>) -> WebResult {
    let nonce = new_nonce();
    let page = LoginPage {
        base: Base::anonymous("Sign in"),
        login_csrf: nonce.clone(),
        next,
        error,
    };
    let status = if page.error.is_some() {
        axum::http::StatusCode::UNAUTHORIZED
    } else {
        axum::http::StatusCode::OK
    };
    let mut res = (status, Html(page.render()?)).into_response();
    res.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, &nonce, 3600, is_tls(headers)),
    );
    Ok(res)
}

async fn login_page(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<NextParam>,
) -> WebResult {
    let next = safe_next(p.next.as_deref());
    if session_user(&s, &headers).await?.is_some() {
        return Ok(Redirect::to(&next).into_response());
    }
    login_form(&headers, next, None)
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(rename = "_csrf", default)]
    csrf: String,
    #[serde(default)]
    api_key: String,
    next: Option<String>,
}

async fn login(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> WebResult {
    let form: LoginForm = serde_urlencoded::from_bytes(&body)
        .map_err(|e| WebError::BadInput(format!("the sign-in form could not be read: {e}")))?;
    let next = safe_next(form.next.as_deref());
    // Login CSRF: the form's token must match the cookie set with the form.
    match cookie(&headers, LOGIN_COOKIE) {
        Some(c) if same_token(c, &form.csrf) => {}
        _ => return Err(WebError::Csrf),
    }
    let key = form.api_key.trim();
    let principal = match parse_credential(key) {
        Some((CredentialKind::ApiKey, id, secret)) => key_principal(&s, id, secret).await,
        Some((CredentialKind::RunToken, ..)) => {
            return login_form(
                &headers,
                next,
                Some("a run token cannot sign in; paste an API key (hk_…)".into()),
            );
        }
        None => {
            return login_form(
                &headers,
                next,
                Some("that is not an API key: they look like hk_… (create one with `hoist key create`)".into()),
            );
        }
    };
    let user = match principal {
        Ok(u) => u,
        Err(e) if e.status == axum::http::StatusCode::UNAUTHORIZED => {
            return login_form(&headers, next, Some(e.message));
        }
        Err(e) => return Err(e.into()),
    };
    let token = open_session(&s, &user).await?;
    let ttl = s.cfg.web_session_ttl;
    let tls = is_tls(&headers);
    let mut res = Redirect::to(&next).into_response();
    let h = res.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, token.expose(), ttl.as_secs() as i64, tls),
    );
    h.append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, "", 0, tls));
    Ok(res)
}

#[derive(Deserialize)]
struct Empty {}

async fn logout(State(s): State<AppState>, headers: HeaderMap, posted: Posted<Empty>) -> WebResult {
    end_session(&s, &posted.who.session_id).await?;
    tracing::info!(message = "Signed out of the web UI.", user = %posted.who.user.name);
    let mut res = Redirect::to("/login").into_response();
    res.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", 0, is_tls(&headers)),
    );
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_stays_on_this_server() {
        assert_eq!(safe_next(Some("/runs/abc?x=1")), "/runs/abc?x=1");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
