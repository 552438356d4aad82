//! The web UI: server-rendered pages (askama templates in `templates/`) at the same
//! address as the API, for people signed in with a session (see [`session`]).
//!
//! Pages read and change things through the API's own handlers (`crate::api::…`),
//! called in-process with the session's [`UserPrincipal`](crate::auth::UserPrincipal):
//! every page enforces exactly the API's access rules (another entity's object is a
//! 404), and the UI holds no SQL and no access rule of its own (tidy: web-via-api).
//!
//! Progressive enhancement: every page works as plain HTML forms; `assets/hoist.js`
//! (served from the binary, cacheable by content hash, no build step) adds live logs
//! (server-sent events), validation as you type, local time zones and confirmations.
//! The Content-Security-Policy forbids inline script and inline style.

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::api::AppState;
use crate::error::ApiError;

mod agents;
pub mod assets;
mod jobs;
mod login;
mod overview;
mod queues;
mod runs;
pub mod session;
mod view;

pub use session::{Posted, WebUser};

/// What the UI answers when something goes wrong: an HTML page (or a redirect to
/// sign-in), never a stack trace.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("{}", .0.message)]
    Api(#[source] ApiError),
    #[error("a page could not be rendered")]
    Render(#[source] askama::Error),
    #[error("sign in first")]
    SignIn { next: String },
    #[error(
        "the form was not sent by this page (its CSRF token is missing or stale); reload the page and try again"
    )]
    Csrf,
    #[error("{0}")]
    BadInput(String),
}

impl From<ApiError> for WebError {
    fn from(e: ApiError) -> Self {
        WebError::Api(e)
    }
}
impl From<askama::Error> for WebError {
    fn from(e: askama::Error) -> Self {
        WebError::Render(e)
    }
}

pub type WebResult<T = Response> = Result<T, WebError>;

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, title) = match &self {
            WebError::SignIn { next } => {
                let to = format!("/login?next={}", view::urlencode(next));
                return Redirect::to(&to).into_response();
            }
            WebError::Api(e) => (e.status, status_title(e.status)),
            WebError::Render(e) => {
                tracing::error!(message = "A web page could not be rendered.", error = %e);
                (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong")
            }
            WebError::Csrf => (StatusCode::FORBIDDEN, "Refused"),
            WebError::BadInput(_) => (StatusCode::BAD_REQUEST, "Bad request"),
        };
        let message = match &self {
            WebError::Render(_) => {
                "the page could not be rendered; the server log has the details".to_string()
            }
            other => other.to_string(),
        };
        let page = view::ErrorPage {
            title,
            message: &message,
            status: status.as_u16(),
        };
        (status, view::html(&page)).into_response()
    }
}

fn status_title(s: StatusCode) -> &'static str {
    match s {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::CONFLICT => "Not possible now",
        StatusCode::UNAUTHORIZED => "Sign in",
        s if s.is_client_error() => "Not accepted",
        _ => "Something went wrong",
    }
}

/// The UI's routes (merged into the server's router beside `/api/v1`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(login::routes())
        .merge(overview::routes())
        .merge(queues::routes())
        .merge(runs::routes())
        .merge(jobs::routes())
        .merge(agents::routes())
        .route("/assets/{file}", get(assets::serve))
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn(server_timing))
}

/// A page for paths nothing serves (the API's unknown paths answer JSON instead).
pub async fn not_found_page() -> Response {
    WebError::Api(ApiError::not_found("there is no page at this address")).into_response()
}

/// Headers of every UI response: no inline script or style, no framing, no sniffing.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// `Server-Timing: app;dur=<ms>` on every UI response: the time from the request
/// reaching the UI's routes to its response (a page is rendered in full by then; a
/// stream's body follows), for the browser's developer tools and `hoist bench ui`.
async fn server_timing(req: Request, next: Next) -> Response {
    let start = std::time::Instant::now();
    let mut res = next.run(req).await;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    if let Ok(v) = HeaderValue::from_str(&format!("app;dur={ms:.2}")) {
        res.headers_mut().insert("server-timing", v);
    }
    res
}

/// The UI's Content-Security-Policy: scripts, styles and connections from this
/// server only; no inline script or style, no plugins, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Renders a template into an HTML response.
pub fn page<T: askama::Template>(t: &T) -> WebResult {
    Ok(Html(t.render()?).into_response())
}
