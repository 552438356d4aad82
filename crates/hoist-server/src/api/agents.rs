//! `/api/v1/agents`: the agent protocol (register, claim, heartbeat, deregister) and
//! the agent list. Run progress and logs are under `/api/v1/runs/{id}/…`.
//!
//! A claim is a long poll over all of the agent's queues: it answers the moment a run
//! is available or a stop request for one of the agent's runs arrives, or empty after
//! `wait_ms`.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use hoist_core::api::{
    Agent, AgentSession, ClaimRequest, ClaimResponse, Deregister, ErrorBody, Heartbeat,
    HeartbeatResponse, RegisterAgent,
};
use hoist_core::names;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::queues::resolve_queue;
use super::{AppState, Json};
use crate::auth::{User, UserPrincipal};
use crate::dispatch::Waiter;
use crate::error::{ApiError, ApiResult};
use crate::store::agents::{AgentQueue, AgentRecord, NewAgent};
use crate::store::runs::{ClaimParams, Claimer};
use crate::store::{StoreError, retry_transient};

/// Most queues one agent may serve.
pub const MAX_AGENT_QUEUES: usize = 64;
/// Most runs one claim may return.
pub const MAX_CLAIM: u32 = 256;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register, list_agents))
        .routes(routes!(get_agent))
        .routes(routes!(claim))
        .routes(routes!(heartbeat))
        .routes(routes!(deregister))
}

fn agent_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no agent with id {id:?}"))
}

/// The agent, if the caller owns it.
async fn own_agent(s: &AppState, u: &UserPrincipal, id: &str) -> ApiResult<AgentRecord> {
    match s.store.agent_record(id).await? {
        Some(rec) if rec.agent.owner == u.name || u.admin => Ok(rec),
        _ => Err(agent_not_found(id)),
    }
}

/// A store answer for the agent: an ended session also wakes the agent's queues (its
/// unstarted runs went back to them).
fn agent_answer<T>(s: &AppState, rec: &AgentRecord, r: Result<T, StoreError>) -> ApiResult<T> {
    if let Err(StoreError::SessionEnded(m)) = &r {
        tracing::warn!(message = "Agent session ended: its owner lost access.", agent = %rec.agent.name, id = %rec.agent.id, reason = %m);
        for q in &rec.queues {
            s.dispatch.wake_queue(&q.id);
        }
    }
    Ok(r?)
}

/// Register an agent (or re-register after a restart, under the same name).
#[utoipa::path(post, path = "/api/v1/agents", tag = "agents", request_body = RegisterAgent,
    responses((status = 201, body = AgentSession), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn register(
    State(s): State<AppState>,
    User(u): User,
    Json(req): Json<RegisterAgent>,
) -> ApiResult<(StatusCode, axum::Json<AgentSession>)> {
    names::validate("agent", &req.name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if req.host.is_empty() || req.host.len() > 255 || req.version.len() > 64 {
        return Err(ApiError::bad_request(
            "host must be 1 to 255 characters and version at most 64",
        ));
    }
    if req.max_jobs == 0 || req.max_jobs < -1 {
        return Err(ApiError::bad_request(format!(
            "max_jobs {} is not valid: use a positive number, or -1 for no limit",
            req.max_jobs
        )));
    }
    if req.queues.is_empty() || req.queues.len() > MAX_AGENT_QUEUES {
        return Err(ApiError::bad_request(format!(
            "an agent serves 1 to {MAX_AGENT_QUEUES} queues; got {}",
            req.queues.len()
        )));
    }
    let mut queues: Vec<AgentQueue> = Vec::new();
    for spec in &req.queues {
        let (entity, name) = match spec.split_once('/') {
            Some((e, n)) => (Some(e), n),
            None => (req.entity.as_deref(), spec.as_str()),
        };
        let q = resolve_queue(&s, &u, entity, name).await?;
        if !queues.iter().any(|x| x.id == q.id) {
            queues.push(AgentQueue {
                id: q.id,
                entity: q.entity,
                name: q.name,
            });
        }
    }
    let (rec, held, requeued) = s
        .store
        .register_agent(
            NewAgent {
                owner: u.name.clone(),
                key_id: u.key_id.clone(),
                name: req.name,
                host: req.host,
                version: req.version,
                queues,
                max_jobs: req.max_jobs,
            },
            s.now(),
            s.cfg.run_token_ttl.as_millis() as i64,
        )
        .await?;
    for q in requeued {
        s.dispatch.wake_queue(&q);
    }
    tracing::info!(message = "Agent registered.", agent = %rec.agent.name, id = %rec.agent.id, held = held.len());
    Ok((
        StatusCode::CREATED,
        axum::Json(AgentSession {
            agent: rec.agent,
            session: rec.session,
            heartbeat_interval_ms: s.cfg.heartbeat_interval.as_millis() as u64,
            lease_ms: s.cfg.lease.as_millis() as u64,
            max_claim_wait_ms: s.cfg.max_claim_wait.as_millis() as u64,
            held_runs: held,
        }),
    ))
}

/// Agents the caller owns or that serve queues of the caller's entities.
#[utoipa::path(get, path = "/api/v1/agents", tag = "agents",
    responses((status = 200, body = Vec<Agent>)))]
pub(crate) async fn list_agents(
    State(s): State<AppState>,
    User(u): User,
) -> ApiResult<axum::Json<Vec<Agent>>> {
    let all = s.store.list_agents().await?;
    Ok(axum::Json(
        all.into_iter()
            .filter(|r| {
                u.admin || r.agent.owner == u.name || r.queues.iter().any(|q| u.can_use(&q.entity))
            })
            .map(|r| r.agent)
            .collect(),
    ))
}

#[utoipa::path(get, path = "/api/v1/agents/{id}", tag = "agents", params(("id" = String, Path)),
    responses((status = 200, body = Agent), (status = 404, body = ErrorBody)))]
async fn get_agent(
    State(s): State<AppState>,
    User(u): User,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Agent>> {
    match s.store.get_agent(&id).await? {
        Some(r)
            if u.admin
                || r.agent.owner == u.name
                || r.queues.iter().any(|q| u.can_use(&q.entity)) =>
        {
            Ok(axum::Json(r.agent))
        }
        _ => Err(agent_not_found(&id)),
    }
}

/// Claim up to `max` runs over all of the agent's queues, waiting up to `wait_ms` for
/// one (or for a stop request). Runs come with a lease: confirm them (move them past
/// `claimed`) before it lapses. Every look at the queues first checks the session and
/// that the agent's owner may still use every queue it serves; if not, the session
/// ends (`session_ended`).
#[utoipa::path(post, path = "/api/v1/agents/{id}/claim", tag = "agents", params(("id" = String, Path)),
    request_body = ClaimRequest,
    responses((status = 200, body = ClaimResponse), (status = 403, body = ErrorBody, description = "session_ended"),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "superseded or unknown_session")))]
async fn claim(
    State(s): State<AppState>,
    User(u): User,
    Path(id): Path<String>,
    Json(req): Json<ClaimRequest>,
) -> ApiResult<axum::Json<ClaimResponse>> {
    let rec = own_agent(&s, &u, &id).await?;
    let max = req.max.min(MAX_CLAIM) as usize;
    let wait = Duration::from_millis(req.wait_ms).min(s.cfg.max_claim_wait);
    let deadline = tokio::time::Instant::now() + wait;
    // Serve the queues from a rotating start, so none starves another.
    let mut queue_ids: Vec<String> = rec.queues.iter().map(|q| q.id.clone()).collect();
    {
        let mut cur = s.claim_cursor.lock().expect("claim cursor");
        let c = cur.entry(id.clone()).or_insert(0);
        let n = queue_ids.len();
        if n > 0 {
            queue_ids.rotate_left(*c % n);
        }
        *c = c.wrapping_add(1);
    }
    let claimer = Claimer {
        agent_id: rec.agent.id.clone(),
        agent_name: rec.agent.name.clone(),
        session: req.session.clone(),
    };
    let mut shutdown = s.shutdown.clone();
    // A transient store failure is retried for up to this long (past the deadline if
    // need be) before the claim answers 503.
    let patience = Duration::from_secs(5);
    // Stop requests are looked up first, and again only when the agent's own wake-up
    // fired (a queue's wake-up means a launch).
    let mut check_stops = true;
    loop {
        let notifies: Vec<_> = queue_ids
            .iter()
            .map(|q| s.dispatch.queue(q))
            .chain(std::iter::once(s.dispatch.agent(&id)))
            .collect();
        let mut waits: Vec<_> = notifies.iter().map(|n| Box::pin(n.notified())).collect();
        for w in waits.iter_mut() {
            w.as_mut().enable();
        }
        // The claim checks the session and the owner's access even when `max` is 0.
        let params = ClaimParams {
            queue_ids: queue_ids.clone(),
            max,
            lease_ms: s.cfg.lease.as_millis() as i64,
            token_ttl_ms: s.cfg.run_token_ttl.as_millis() as i64,
        };
        let until = tokio::time::Instant::now() + patience;
        let runs = retry_transient(until, "claim", || {
            s.store.claim(claimer.clone(), params.clone(), s.now())
        })
        .await;
        let runs = agent_answer(&s, &rec, runs)?;
        let stop = if check_stops {
            retry_transient(until, "take stop requests", || {
                s.store.take_pending_stops(&id)
            })
            .await?
        } else {
            vec![]
        };
        let now = tokio::time::Instant::now();
        if !runs.is_empty() || !stop.is_empty() || now >= deadline || *shutdown.borrow() {
            metrics::counter!("hoist_claimed_runs_total").increment(runs.len() as u64);
            return Ok(axum::Json(ClaimResponse { runs, stop }));
        }
        // The safety net: look again this often even if nothing wakes us.
        let until = deadline.min(now + s.recheck());
        let agent_wake = waits.len() - 1;
        // Up to date with the store, waiting for a wake-up.
        let parked = s.dispatch.park(Waiter::Claim);
        check_stops = tokio::select! {
            (_, which, _) = futures::future::select_all(waits) => which == agent_wake,
            _ = tokio::time::sleep_until(until) => true,
            _ = shutdown.changed() => false,
        };
        drop(parked);
    }
}

/// Report liveness and the runs the agent executes; answers stop requests and runs to
/// let go of. The session and the owner's access are checked as for a claim.
#[utoipa::path(post, path = "/api/v1/agents/{id}/heartbeat", tag = "agents", params(("id" = String, Path)),
    request_body = Heartbeat,
    responses((status = 200, body = HeartbeatResponse), (status = 403, body = ErrorBody, description = "session_ended"),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "superseded or unknown_session")))]
async fn heartbeat(
    State(s): State<AppState>,
    User(u): User,
    Path(id): Path<String>,
    Json(req): Json<Heartbeat>,
) -> ApiResult<axum::Json<HeartbeatResponse>> {
    let rec = own_agent(&s, &u, &id).await?;
    if req.running.len() > 100_000 {
        return Err(ApiError::bad_request(
            "too many running runs in one heartbeat",
        ));
    }
    let r = s
        .store
        .heartbeat(&id, &req.session, req.running, s.now())
        .await;
    Ok(axum::Json(agent_answer(&s, &rec, r)?))
}

/// Clean shutdown: unstarted claims go back to their queues.
#[utoipa::path(post, path = "/api/v1/agents/{id}/deregister", tag = "agents", params(("id" = String, Path)),
    request_body = Deregister,
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn deregister(
    State(s): State<AppState>,
    User(u): User,
    Path(id): Path<String>,
    Json(req): Json<Deregister>,
) -> ApiResult<StatusCode> {
    own_agent(&s, &u, &id).await?;
    let queues = s.store.deregister_agent(&id, &req.session, s.now()).await?;
    for q in queues {
        s.dispatch.wake_queue(&q);
    }
    s.dispatch.wake_agent(&id);
    Ok(StatusCode::NO_CONTENT)
}
