//! The HTTP API: `/api/v1/…` (JSON), `/healthz`, `/readyz`, `/metrics`, and the OpenAPI
//! document at `/api/v1/openapi.json`, generated from the handlers' annotations.
//!
//! One module per resource: [`identity`] (me, users, teams, keys), [`queues`],
//! [`runs`] (launch, list, show, cancel, stop, logs), [`agents`] (register, claim,
//! heartbeat, run updates), [`stats`] (aggregates for the web UI's overview and
//! queues pages). Errors are [`ApiError`]s, turned into
//! `{"error": {"code", "message", "details"}}` in one place.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use hoist_core::api::{ErrorCode, Health};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

use crate::auth::AuthCache;
use crate::blobstore::BlobStore;
use crate::clock::Clock;
use crate::cluster::Outbox;
use crate::dispatch::{Dispatch, Waiter};
use crate::error::ApiError;
use crate::logs::LogStore;
use crate::server::ServerConfig;
use crate::store::Store;

pub mod agents;
pub mod blobs;
pub mod identity;
pub mod jobs;
pub mod queues;
pub mod runs;
pub mod stats;

/// Largest request body in general.
pub const BODY_LIMIT: usize = 1 << 20;
/// Largest log batch.
pub const LOG_BODY_LIMIT: usize = 8 << 20;

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub clock: Clock,
    pub cfg: Arc<ServerConfig>,
    pub dispatch: Arc<Dispatch>,
    pub auth: Arc<AuthCache>,
    pub shutdown: watch::Receiver<bool>,
    pub metrics: PrometheusHandle,
    /// Per-agent rotation of the queue it is served from first (fairness).
    pub claim_cursor: Arc<Mutex<HashMap<String, usize>>>,
    /// Queues by `(entity, name)`, for the launch path; see [`queues::QueueCache`].
    pub queues: Arc<queues::QueueCache>,
    /// Run logs (segments in the blob store).
    pub logs: Arc<LogStore>,
    /// What the other replicas of the database are told, and whether this one hears
    /// them ([`crate::cluster`]).
    pub cluster: Arc<Outbox>,
    /// Code artifacts and log segments.
    pub blobs: Arc<BlobStore>,
}

impl AppState {
    /// With the blob directory of `cfg` (tests); the server opens its configured store
    /// and uses [`AppState::with_blobs`].
    pub fn new(
        store: Store,
        clock: Clock,
        cfg: Arc<ServerConfig>,
        shutdown: watch::Receiver<bool>,
    ) -> AppState {
        let blobs = Arc::new(BlobStore::dir(cfg.blob_dir()));
        Self::with_blobs(store, clock, cfg, blobs, shutdown)
    }

    pub fn with_blobs(
        store: Store,
        clock: Clock,
        cfg: Arc<ServerConfig>,
        blobs: Arc<BlobStore>,
        shutdown: watch::Receiver<bool>,
    ) -> AppState {
        let logs = Arc::new(LogStore::new(
            store.clone(),
            blobs.segments(),
            cfg.max_log_bytes_per_run,
        ));
        let cluster = Arc::new(Outbox::default());
        AppState {
            logs,
            blobs,
            store,
            clock,
            cfg,
            dispatch: Arc::new(Dispatch::with_outbox(cluster.clone())),
            auth: Arc::new(AuthCache::with_outbox(cluster.clone())),
            shutdown,
            metrics: prometheus(),
            claim_cursor: Arc::default(),
            queues: Arc::new(queues::QueueCache::with_outbox(cluster.clone())),
            cluster,
        }
    }

    /// How long a waiting claim or log follower goes without re-reading the store when
    /// nothing wakes it: the safety net under the wake-ups
    /// ([`ServerConfig::recheck`](crate::ServerConfig::recheck)), 250 ms while this
    /// replica may be missing other replicas' signals.
    pub fn recheck(&self) -> Duration {
        let every = self.cfg.recheck.unwrap_or(match self.store.dialect() {
            crate::store::Dialect::Sqlite => Duration::from_secs(3600),
            crate::store::Dialect::Postgres => Duration::from_secs(5),
        });
        if self.cluster.coherent() {
            every
        } else {
            every.min(Duration::from_millis(250))
        }
    }

    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }
}

fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder().handle())
        })
        .clone()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hoist API",
        description = "Queues, runs, agents, users and teams of a hoist server. Authenticate with `Authorization: Bearer <API key>`."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;
impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let c = openapi.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let (api, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(identity::routes())
        .merge(queues::routes())
        .merge(runs::routes())
        .merge(agents::routes())
        .merge(jobs::routes())
        .merge(blobs::routes())
        .merge(stats::routes())
        .split_for_parts();
    let doc = Arc::new(doc);
    Router::new()
        .merge(api)
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .route("/healthz", axum::routing::get(healthz))
        .route("/readyz", axum::routing::get(readyz))
        .route("/metrics", axum::routing::get(metrics_endpoint))
        .merge(crate::web::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(track))
        .with_state(state)
}

/// Unknown API paths answer JSON; any other unknown path is a web page.
async fn not_found(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") {
        ApiError::not_found(
            "no such endpoint; the API lives under /api/v1 (see /api/v1/openapi.json)",
        )
        .into_response()
    } else {
        crate::web::not_found_page().await
    }
}

async fn healthz() -> axum::Json<Health> {
    axum::Json(Health {
        status: "ok".into(),
        version: hoist_core::VERSION.into(),
    })
}

async fn readyz(State(s): State<AppState>) -> Response {
    if *s.shutdown.borrow() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "shutting down",
        )
        .into_response();
    }
    match s.store.ping().await {
        Ok(()) => axum::Json(Health {
            status: "ready".into(),
            version: hoist_core::VERSION.into(),
        })
        .into_response(),
        Err(e) => {
            tracing::warn!(message = "Not ready: the store does not answer.", error = %e);
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "the store does not answer; the server log has the details",
            )
            .into_response()
        }
    }
}

/// Prometheus text. Everyone gets aggregates: runs by state, agents by status, the
/// total queue depth, parked claims and log followers (`hoist_claim_waiters`,
/// `hoist_log_followers`), request counters and latencies, claims and launches. Only
/// a caller with an admin API key also gets the depth of each queue (queue names are
/// not for everyone). A request with a credential that is not valid is refused.
async fn metrics_endpoint(State(s): State<AppState>, parts: Parts) -> Response {
    let admin = if parts
        .headers
        .contains_key(axum::http::header::AUTHORIZATION)
    {
        match crate::auth::authenticate(&s, &parts).await {
            Ok(crate::auth::Principal::User(u)) => u.admin,
            Ok(crate::auth::Principal::RunToken { .. }) => false,
            Err(e) => return e.into_response(),
        }
    } else {
        false
    };
    let mut out = String::new();
    if let Ok(depths) = s.store.queue_depths().await {
        let total: u64 = depths.values().sum();
        gauge(
            &mut out,
            "hoist_queue_depth_total",
            "Queued runs, all queues together.",
            &[(None, total as f64)],
        );
        if admin && let Ok(queues) = s.store.list_queues(None).await {
            let rows: Vec<_> = queues
                .iter()
                .map(|q| {
                    let d = depths.get(&q.id).copied().unwrap_or(0);
                    (
                        Some(("queue", format!("{}/{}", q.entity, q.name))),
                        d as f64,
                    )
                })
                .collect();
            gauge(
                &mut out,
                "hoist_queue_depth",
                "Queued runs per queue (admins only).",
                &rows,
            );
        }
    }
    if let Ok(states) = s.store.runs_by_state().await {
        let rows: Vec<_> = hoist_core::run::RunState::ALL
            .iter()
            .map(|st| {
                let n = states
                    .iter()
                    .find(|(name, _)| name == st.as_str())
                    .map(|(_, n)| *n)
                    .unwrap_or(0);
                (Some(("state", st.as_str().to_string())), n as f64)
            })
            .collect();
        gauge(&mut out, "hoist_runs", "Runs by state.", &rows);
    }
    if let Ok(agents) = s.store.agents_by_status().await {
        let rows: Vec<_> = ["polling", "running", "stopped", "lost"]
            .iter()
            .map(|st| {
                let n = agents
                    .iter()
                    .find(|(name, _)| name == st)
                    .map(|(_, n)| *n)
                    .unwrap_or(0);
                (Some(("status", st.to_string())), n as f64)
            })
            .collect();
        gauge(&mut out, "hoist_agents", "Agents by status.", &rows);
    }
    let claims = s.dispatch.parked(Waiter::Claim) as f64;
    gauge(
        &mut out,
        "hoist_claim_waiters",
        "Claim long polls waiting for a run.",
        &[(None, claims)],
    );
    let followers = s.dispatch.parked(Waiter::LogFollower) as f64;
    gauge(
        &mut out,
        "hoist_log_followers",
        "Log streams waiting for lines.",
        &[(None, followers)],
    );
    // Counters and histograms (process-wide, no names in their labels).
    out.push_str(&s.metrics.render());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response()
}

/// Appends one gauge in the Prometheus text format. These gauges are read from this
/// server's store and memory at scrape time, so they are rendered here rather than
/// kept in the process-wide recorder (which would show one caller what another may
/// see, and mix up servers sharing a process in tests).
fn gauge(out: &mut String, name: &str, help: &str, rows: &[(Option<(&str, String)>, f64)]) {
    use std::fmt::Write;
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (label, v) in rows {
        match label {
            Some((k, val)) => {
                let val = val
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = writeln!(out, "{name}{{{k}=\"{val}\"}} {v}");
            }
            None => {
                let _ = writeln!(out, "{name} {v}");
            }
        }
    }
}

/// Counts and times every request by route template and status.
async fn track(req: Request, next: Next) -> Response {
    let start = std::time::Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("hoist_http_requests_total", "method" => method.to_string(), "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("hoist_http_request_duration_seconds", "method" => method.to_string(), "route" => route)
        .record(start.elapsed().as_secs_f64());
    resp
}

/// A JSON body extractor whose errors use the API error shape and name the field.
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(ct) = req.headers().get(axum::http::header::CONTENT_TYPE)
            && !ct
                .to_str()
                .map(|v| {
                    v.starts_with("application/json")
                        || v.starts_with("application/") && v.contains("+json")
                })
                .unwrap_or(false)
        {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::BadRequest,
                "the request body must be JSON (Content-Type: application/json)",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorCode::PayloadTooLarge,
                    "the request body is larger than this endpoint accepts",
                )
            } else {
                ApiError::bad_request(format!("could not read the request body: {e}"))
            }
        })?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        let v = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                ApiError::bad_request(format!("invalid JSON body: {inner}"))
            } else {
                ApiError::bad_request(format!("invalid JSON body at `{path}`: {inner}"))
            }
        })?;
        Ok(Json(v))
    }
}

/// A query-string extractor with API-shaped errors.
pub struct Query<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {}", e.body_text())))
    }
}
