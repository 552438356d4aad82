//! `/api/v1/runs`: launch, list, show, cancel, stop, logs, and agents' state reports.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hoist_core::api::{
    ErrorBody, JobRef, JobSource, LaunchRequest, LogBatch, LogPage, Run, RunList, RunUpdate,
    StopRequest,
};
use hoist_core::merge::deep_merge;
use hoist_core::resource::{self, ResourceType};
use hoist_core::run::RunState;
use hoist_core::secret::masked_value;
use hoist_core::{names, template};
use serde::Deserialize;
use serde_json::Value;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::jobs::resolve_for_launch;
use super::queues::{config_from_input, config_problems, resolve_queue, template_problems};
use super::{AppState, Json, LOG_BODY_LIMIT, Query};
use crate::auth::{Principal, User, UserPrincipal, entity_for};
use crate::dispatch::Waiter;
use crate::error::{ApiError, ApiResult};
use crate::logs::MAX_PAGE_BYTES;
use crate::store::rows::RunSpec;
use crate::store::runs::{NewRun, RunFilter, queued_run};

/// Most lines in one log batch.
pub const MAX_LOG_BATCH: usize = 10_000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(launch, list_runs))
        .routes(routes!(get_run))
        .routes(routes!(cancel_run))
        .routes(routes!(stop_run))
        .routes(routes!(update_run))
        .merge(
            // Log batches may be larger than other bodies.
            OpenApiRouter::new()
                .routes(routes!(read_logs, append_logs))
                .layer(DefaultBodyLimit::max(LOG_BODY_LIMIT)),
        )
}

/// Hides env values whose names look secret or that look like credentials (a URL
/// with a password, a DSN, a well-known token), for responses to people.
pub fn mask(mut run: Run) -> Run {
    for (k, v) in run.env.iter_mut() {
        if let Some(m) = masked_value(k, v) {
            *v = m.to_string();
        }
    }
    run
}

fn run_not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no run with id {id:?}"))
}

/// A run the caller may see, with its queue id.
async fn visible_run(s: &AppState, u: &UserPrincipal, id: &str) -> ApiResult<(Run, String)> {
    match s.store.get_run(id).await? {
        Some((run, qid)) if u.can_use(&run.entity) => Ok((run, qid)),
        _ => Err(run_not_found(id)),
    }
}

/// Enqueue a run. Answered once the run is durable. With `dry_run`, the launch is
/// checked exactly as a real one and answered with the run it would create (its id is
/// fresh and used nowhere); nothing is stored and no agent hears of it.
#[utoipa::path(post, path = "/api/v1/runs", tag = "runs", request_body = LaunchRequest,
    responses((status = 201, body = Run), (status = 200, body = Run, description = "dry_run: the run a launch would create; nothing was stored"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub(crate) async fn launch(
    State(s): State<AppState>,
    User(u): User,
    Json(req): Json<LaunchRequest>,
) -> ApiResult<(StatusCode, axum::Json<Run>)> {
    let dry_run = req.dry_run;
    let (new, queue_id) = checked_launch(&s, &u, req).await?;
    if dry_run {
        let mut run = queued_run(new, s.now());
        run.state_reason = hoist_core::api::DRY_RUN_REASON.to_string();
        return Ok((StatusCode::OK, axum::Json(mask(run))));
    }
    let run = s.store.launch(new, s.now()).await?;
    metrics::counter!("hoist_launches_total").increment(1);
    s.dispatch.wake_queue(&queue_id);
    Ok((StatusCode::CREATED, axum::Json(mask(run))))
}

/// Every check of a launch, in order, and the run it makes (with its queue's id):
/// the queue, the input, the job, template values, resource args merged and checked
/// against the schema and the privileged-settings policy. Writes nothing: a real launch
/// and a dry run share it, and differ only in whether the run is then stored.
async fn checked_launch(
    s: &AppState,
    u: &UserPrincipal,
    req: LaunchRequest,
) -> ApiResult<(NewRun, String)> {
    let queue = resolve_queue(s, u, req.entity.as_deref(), &req.queue).await?;
    let project = req.project.clone().unwrap_or_else(|| "default".into());
    names::validate("project", &project).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if let Some(n) = &req.name
        && (n.is_empty() || n.len() > 128 || n.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(
            "a run name must be 1 to 128 printable characters",
        ));
    }
    match (&req.image, &req.job) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give either an image or a job, not both",
            ));
        }
        (None, None) if queue.resource != ResourceType::LocalProcess => {
            return Err(ApiError::bad_request(format!(
                "a run on a {} queue needs an image (--image) or a job (--job)",
                queue.resource
            )));
        }
        (None, None) if req.entry_point.as_ref().is_none_or(|e| e.is_empty()) => {
            return Err(ApiError::bad_request(
                "a local-process run needs a command: pass it after `--` or with --entry-point",
            ));
        }
        _ => {}
    }
    // The same checks as `POST /jobs` (hoist-core's `names`).
    let bad_input = |e: names::InputError| ApiError::bad_request(e.to_string());
    if let Some(img) = &req.image {
        names::validate_image_ref(img).map_err(bad_input)?;
    }
    if let Some(ep) = &req.entry_point {
        names::validate_command("the entry point", ep).map_err(bad_input)?;
    }
    names::validate_command("the arguments", &req.args).map_err(bad_input)?;
    names::validate_env(&req.env).map_err(bad_input)?;
    // A job is looked up in the queue's entity, then in the caller's own; the run
    // records the resolved version (never `latest`) and a copy of its source.
    let mut image = req.image.clone();
    let mut entry_point = req.entry_point.clone();
    let mut job = None;
    let mut job_source = None;
    // A code artifact of the caller's own job, launched onto another entity's queue.
    let mut hand_over = None;
    if let Some(jr) = &req.job {
        let (job_entity, version) = resolve_for_launch(s, u, &queue.entity, jr).await?;
        match &version.source {
            JobSource::Image { image: img } => image = Some(img.clone()),
            JobSource::Code { artifact, .. } if job_entity != queue.entity => {
                hand_over = Some(artifact.clone());
            }
            JobSource::Code { .. } => {}
            JobSource::Git { .. } => {}
        }
        if entry_point.is_none() {
            entry_point = version.source.entry_point().map(<[String]>::to_vec);
        }
        job = Some(JobRef {
            name: jr.name.clone(),
            version: Some(version.version.clone()),
            // Recorded when the launch named it (unchanged runs otherwise).
            entity: jr.entity.as_ref().map(|_| job_entity.clone()),
        });
        job_source = Some(version.source);
    }
    let config = match req.config.clone() {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(v @ Value::Object(_)) => v,
        Some(_) => {
            return Err(ApiError::bad_request(
                "the run config must be a JSON object",
            ));
        }
    };
    // Template variables, then resource args, then the schema check of the result.
    // Launch-time text is escaped for the agent's macro expansion (macros come only
    // from the queue owner's config), and may not add privileged settings or pass the
    // agent's environment variables through.
    let values = template::resolve_values(&queue.template_variables, &req.template_values)
        .map_err(|p| {
            template_problems(
                &format!(
                    "template values for queue {}/{} are not acceptable",
                    queue.entity, queue.name
                ),
                p,
            )
        })?;
    let templated = template::substitute(&queue.config, &values);
    let resource_args = match req.resource_args.clone() {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(v) => config_from_input(Some(v))?,
    };
    let mut resource_config = templated.clone();
    deep_merge(
        &mut resource_config,
        &template::escape_macros_in(&resource_args),
    );
    resource::validate_config(queue.resource, &resource_config)
        .map_err(|p| config_problems(queue.resource, p))?;
    let refused = resource::policy::launch_problems(
        queue.resource,
        &queue.config,
        &templated,
        &resource_config,
    );
    if !refused.is_empty() {
        return Err(config_problems(queue.resource, refused));
    }
    let id = crate::secrets::new_id(12);
    Ok((
        NewRun {
            name: req.name.clone().unwrap_or_else(|| id.clone()),
            id,
            queue_id: queue.id.clone(),
            entity: queue.entity.clone(),
            queue_name: queue.name.clone(),
            project,
            spec: RunSpec {
                image,
                job,
                job_source,
                entry_point,
                args: req.args,
                env: req.env,
                config,
                resource_args,
                template_values: values,
            },
            resource: queue.resource,
            resource_config,
            priority: req.priority.unwrap_or_default(),
            prioritize: queue.prioritize,
            created_by: u.name.clone(),
            // The queue's agents fetch the artifact with their own keys; the
            // reference is recorded with the launch, or not at all.
            hand_over,
        },
        queue.id,
    ))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunListParams {
    /// Queue name (with `entity`, or among your entities).
    pub(crate) queue: Option<String>,
    pub(crate) entity: Option<String>,
    pub(crate) state: Option<RunState>,
    /// At most this many runs (default 50, max 1000).
    pub(crate) limit: Option<i64>,
    /// Cursor from a previous page's `next_cursor`.
    pub(crate) before: Option<String>,
}

/// Runs the caller may see, newest first.
#[utoipa::path(get, path = "/api/v1/runs", tag = "runs", params(RunListParams),
    responses((status = 200, body = RunList), (status = 400, body = ErrorBody)))]
pub(crate) async fn list_runs(
    State(s): State<AppState>,
    User(u): User,
    Query(p): Query<RunListParams>,
) -> ApiResult<axum::Json<RunList>> {
    let mut f = RunFilter {
        limit: p.limit.unwrap_or(50),
        ..Default::default()
    };
    if !(1..=1000).contains(&f.limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    f.state = p.state;
    if let Some(b) = &p.before {
        f.before =
            Some(b.parse().map_err(|_| {
                ApiError::bad_request("`before` is not a cursor from a previous page")
            })?);
    }
    if let Some(q) = &p.queue {
        let queue = resolve_queue(&s, &u, p.entity.as_deref(), q).await?;
        f.queue_id = Some(queue.id);
    } else if let Some(e) = &p.entity {
        f.entities = Some(vec![entity_for(&s, &u, Some(e), false).await?]);
    } else {
        f.entities = u.visible();
    }
    let (runs, next) = s.store.list_runs(&f).await?;
    Ok(axum::Json(RunList {
        runs: runs.into_iter().map(mask).collect(),
        next_cursor: next.map(|c| c.to_string()),
    }))
}

/// One run with its timeline. A job may read its own run with its run token.
#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "runs", params(("id" = String, Path)),
    responses((status = 200, body = Run), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_run(
    State(s): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Run>> {
    let (mut run, _) = match &who {
        Principal::User(u) => visible_run(&s, u, &id).await?,
        Principal::RunToken { run_id } if *run_id == id => s
            .store
            .get_run(&id)
            .await?
            .ok_or_else(|| run_not_found(&id))?,
        Principal::RunToken { .. } => return Err(run_not_found(&id)),
    };
    run.timeline = Some(s.store.timeline(&id).await?);
    run.warnings = Some(s.store.warnings(&id).await?);
    Ok(axum::Json(mask(run)))
}

/// Cancel a run that has not started.
#[utoipa::path(post, path = "/api/v1/runs/{id}/cancel", tag = "runs", params(("id" = String, Path)),
    responses((status = 200, body = Run), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn cancel_run(
    State(s): State<AppState>,
    User(u): User,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Run>> {
    visible_run(&s, &u, &id).await?;
    let ch = s.store.cancel_run(&id, &u.name, s.now()).await?;
    if let Some(a) = &ch.run.agent {
        s.dispatch.wake_agent(&a.id);
    }
    s.dispatch.wake_run(&id);
    Ok(axum::Json(mask(ch.run)))
}

/// Ask the agent holding a run to stop it (SIGTERM, then kill after its grace period).
#[utoipa::path(post, path = "/api/v1/runs/{id}/stop", tag = "runs", params(("id" = String, Path)),
    request_body = StopRequest,
    responses((status = 200, body = Run), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn stop_run(
    State(s): State<AppState>,
    User(u): User,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<axum::Json<Run>> {
    visible_run(&s, &u, &id).await?;
    let reason = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<StopRequest>(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?
            .reason
    };
    let ch = s.store.request_stop(&id, &u.name, reason, s.now()).await?;
    if let Some(a) = &ch.run.agent {
        s.dispatch.wake_agent(&a.id);
    }
    s.dispatch.wake_run(&id);
    Ok(axum::Json(mask(ch.run)))
}

/// An agent reports a run's progress (the agent that holds the run, with its session).
#[utoipa::path(post, path = "/api/v1/runs/{id}/state", tag = "agents", params(("id" = String, Path)),
    request_body = RunUpdate,
    responses((status = 200, body = Run), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn update_run(
    State(s): State<AppState>,
    User(u): User,
    Path(id): Path<String>,
    Json(req): Json<RunUpdate>,
) -> ApiResult<axum::Json<Run>> {
    if let Some(b) = &req.built {
        names::validate_image_ref(&b.image)
            .map_err(|e| ApiError::bad_request(format!("built: {e}")))?;
        names::validate("builder", &b.builder)
            .map_err(|e| ApiError::bad_request(format!("built: {e}")))?;
    }
    let (run, _) = visible_run(&s, &u, &id).await?;
    let agent = run.agent.ok_or_else(|| {
        ApiError::conflict(format!(
            "run {id} is not held by any agent (it is {})",
            run.state
        ))
    })?;
    let rec = s
        .store
        .agent_record(&agent.id)
        .await?
        .ok_or_else(|| ApiError::conflict("the run's agent no longer exists"))?;
    if rec.agent.owner != u.name && !u.admin {
        return Err(ApiError::conflict(format!(
            "run {id} is held by another agent"
        )));
    }
    let ch = s.store.agent_update(&id, &agent.id, req, s.now()).await?;
    if ch.run.state == RunState::Queued {
        s.dispatch.wake_queue(&ch.queue_id);
    }
    s.dispatch.wake_run(&id);
    Ok(axum::Json(ch.run))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogParams {
    /// First line to return (0-based; default 0). Not with `tail`.
    pub(crate) offset: Option<u64>,
    /// Most lines to return (default 1000, max 10000); a page also stops before 1 MiB
    /// of lines, whatever the limit (continue from `next_offset`). Ignored with
    /// `follow`; not with `tail`.
    pub(crate) limit: Option<u64>,
    /// Stream lines as NDJSON as they arrive, until the run ends.
    #[serde(default)]
    pub(crate) follow: bool,
    /// The last `tail` lines of the log (max 10000), or with `before` the last ones
    /// before that line: the page ends at the log's end (or at `before`) and starts
    /// where it must to hold them. Like every page it holds at most 1 MiB of lines,
    /// the latest ones: the first line's `offset` says where it starts, so the page
    /// before it is `tail=N&before=<that offset>`. Reads only around the lines
    /// returned, never the whole log, however long it is.
    pub(crate) tail: Option<u64>,
    /// With `tail`: the page ends before this line (0-based).
    pub(crate) before: Option<u64>,
}

/// Most lines of a `tail` page.
pub const MAX_TAIL: u64 = 10_000;

/// Read a run's log from an offset, its last lines (`tail`, with `before` the lines
/// before a line), or follow it live (`follow=true`: an NDJSON stream of lines that
/// ends when the run has ended and every line was sent). A page holds at most `limit`
/// (or `tail`) lines and at most 1 MiB of them (always at least one line when there is
/// one); `next_offset` says where to continue.
#[utoipa::path(get, path = "/api/v1/runs/{id}/logs", tag = "runs", params(("id" = String, Path), LogParams),
    responses((status = 200, body = LogPage, description = "a page (with tail: the last lines, next_offset is the line after the last one), or with follow=true an NDJSON stream of StoredLogLine"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn read_logs(
    State(s): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Query(p): Query<LogParams>,
) -> ApiResult<Response> {
    log_reader_may_see(&s, &who, &id).await?;
    if p.tail.is_some() && (p.offset.is_some() || p.limit.is_some() || p.follow) {
        return Err(ApiError::bad_request(
            "`tail` reads the last lines: it goes with `before` only, not with `offset`, `limit` or `follow`",
        ));
    }
    if p.before.is_some() && p.tail.is_none() {
        return Err(ApiError::bad_request(
            "`before` goes with `tail` (the last `tail` lines before line `before`)",
        ));
    }
    let offset = p.offset.unwrap_or(0);
    if p.follow {
        let stream = follow_events(s, id, offset).filter_map(|ev| async move {
            match ev {
                FollowEvent::Lines(r) => Some(Ok::<_, Infallible>(Bytes::from(r.data))),
                FollowEvent::Idle => Some(Ok(Bytes::from_static(b"\n"))),
                FollowEvent::Ended(_) | FollowEvent::State(_) => None,
            }
        });
        return Ok((
            [
                (header::CONTENT_TYPE, "application/x-ndjson"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            Body::from_stream(stream),
        )
            .into_response());
    }
    // The run's state first: a run that has ended has all its lines by then.
    let (run, _) = s
        .store
        .get_run(&id)
        .await?
        .ok_or_else(|| run_not_found(&id))?;
    let records = match p.tail {
        Some(tail) => {
            let (total, _) = s.logs.len(&id).await?.unwrap_or((0, false));
            let end = p.before.map_or(total, |b| b.min(total));
            tail_records(&s, &id, end, tail.clamp(1, MAX_TAIL)).await?
        }
        None => {
            let limit = p.limit.unwrap_or(1000).clamp(1, 10_000);
            s.logs.read(&id, offset, limit, MAX_PAGE_BYTES).await?
        }
    };
    let (total, quota_reached) = s.logs.len(&id).await?.unwrap_or((0, false));
    let complete = run.state.is_terminal() && records.next_offset >= total;
    // The stored records are the lines' JSON already: the page is built around
    // them (as `LogPage` serialises) instead of parsing and re-serialising them.
    let items = records.json_array_items();
    let mut body = Vec::with_capacity(items.len() + 96);
    body.extend_from_slice(b"{\"lines\":[");
    body.extend_from_slice(&items);
    body.extend_from_slice(
        format!(
            "],\"next_offset\":{},\"complete\":{complete}{}}}",
            records.next_offset,
            if quota_reached {
                ",\"quota_reached\":true"
            } else {
                ""
            }
        )
        .as_bytes(),
    );
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(body),
    )
        .into_response())
}

/// Whether `who` may read the run's log: a person who may see the run, or the run's
/// own job with its run token.
async fn log_reader_may_see(s: &AppState, who: &Principal, id: &str) -> ApiResult<()> {
    match who {
        Principal::User(u) => {
            visible_run(s, u, id).await?;
        }
        Principal::RunToken { run_id } if run_id == id => {}
        Principal::RunToken { .. } => return Err(run_not_found(id)),
    }
    Ok(())
}

/// Up to `n` lines ending before line `end`, within [`MAX_PAGE_BYTES`]. A read from
/// `end - n` that stops at the byte cap before `end` is tried again from later on
/// (with as many lines as fitted, or fewer): every attempt reads at most about a page
/// and the chunk it starts in, so the last lines of a huge log cost what any page does.
async fn tail_records(
    s: &AppState,
    id: &str,
    end: u64,
    n: u64,
) -> Result<crate::logs::Records, crate::logs::LogError> {
    let mut want = n.min(end);
    if want == 0 {
        return Ok(crate::logs::Records {
            next_offset: end,
            ..Default::default()
        });
    }
    loop {
        let start = end - want;
        let r = s.logs.read(id, start, want, MAX_PAGE_BYTES).await?;
        if r.next_offset >= end || want <= 1 || r.count == 0 {
            return Ok(r);
        }
        // The byte cap stopped the read early: the last lines are fewer.
        want = r.count.min(want - want.div_ceil(4)).max(1);
    }
}

/// What a log follower sees next.
pub(crate) enum FollowEvent {
    /// Stored records (each the JSON of a `StoredLogLine` and a newline), in order.
    Lines(crate::logs::Records),
    /// 15 s without lines: the run goes on (time for a keep-alive).
    Idle,
    /// The run's state, first when following starts and then whenever it changed
    /// (a state change wakes the follower as new lines do).
    State(RunState),
    /// The run has ended (its final state, when known) and every line was sent: the
    /// stream ends after this.
    Ended(Option<RunState>),
}

/// Follows a run's log from `offset` for a reader that may see it: the API's NDJSON
/// stream (`logs?follow=true`) and the web UI's server-sent events share it.
pub(crate) async fn follow_log(
    State(s): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    offset: u64,
) -> ApiResult<impl futures::Stream<Item = FollowEvent> + use<>> {
    log_reader_may_see(&s, &who, &id).await?;
    Ok(follow_events(s, id, offset))
}

/// How long a follow stream may be silent before it sends [`FollowEvent::Idle`].
const IDLE_EVERY: Duration = Duration::from_secs(15);

/// The one follower loop: stored records as they are, at most [`MAX_PAGE_BYTES`] read
/// per step (the next step is read only once the consumer has taken the previous
/// one), [`FollowEvent::Idle`] every 15 s of silence, ending with
/// [`FollowEvent::Ended`] when the run has ended and every line was sent, or with
/// nothing at shutdown or when the log cannot be read.
fn follow_events(
    s: AppState,
    id: String,
    mut offset: u64,
) -> impl futures::Stream<Item = FollowEvent> {
    async_stream::stream! {
        let mut shutdown = s.shutdown.clone();
        let mut told: Option<RunState> = None;
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            let notify = s.dispatch.run(&id);
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let ended = match s.store.get_run(&id).await {
                Ok(Some((run, _))) => {
                    if told != Some(run.state) {
                        told = Some(run.state);
                        yield FollowEvent::State(run.state);
                    }
                    run.state.is_terminal().then_some(Some(run.state))
                }
                _ => Some(None),
            };
            let records = match s.logs.read(&id, offset, 10_000, MAX_PAGE_BYTES).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(message = "Log follow read failed.", run = %id, error = %e);
                    break;
                }
            };
            offset = records.next_offset;
            let more = records.more;
            if !records.data.is_empty() {
                quiet_since = tokio::time::Instant::now();
                yield FollowEvent::Lines(records);
            }
            if more {
                continue;
            }
            if let Some(state) = ended {
                yield FollowEvent::Ended(state);
                break;
            }
            // Read up to date, waiting for a wake-up: counted as a parked follower. The
            // safety net re-reads the store now and then; silence is reported every
            // IDLE_EVERY.
            let _parked = s.dispatch.park(Waiter::LogFollower);
            let idle_in = IDLE_EVERY.saturating_sub(quiet_since.elapsed());
            let recheck = s.recheck();
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(idle_in.min(recheck)) => {
                    if quiet_since.elapsed() >= IDLE_EVERY {
                        quiet_since = tokio::time::Instant::now();
                        yield FollowEvent::Idle;
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
    }
}

/// Append a batch of log lines: the agent holding the run, or the job with its run token.
/// Once the run's log has reached the server's per-run quota, the lines that do not
/// fit are dropped (after one marker line) and the answer says `quota_reached`.
#[utoipa::path(post, path = "/api/v1/runs/{id}/logs", tag = "agents", params(("id" = String, Path)),
    request_body = LogBatch,
    responses((status = 200, body = LogPage, description = "next_offset is the log length after the batch; lines is empty; quota_reached says later lines are dropped"),
              (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn append_logs(
    State(s): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    Json(batch): Json<LogBatch>,
) -> ApiResult<axum::Json<LogPage>> {
    match &who {
        Principal::User(u) => {
            visible_run(&s, u, &id).await?;
        }
        Principal::RunToken { run_id } if *run_id == id => {
            let r = s
                .store
                .get_run(&id)
                .await?
                .ok_or_else(|| run_not_found(&id))?;
            if r.0.state.is_terminal() {
                return Err(ApiError::conflict("the run has ended; its log is closed"));
            }
        }
        Principal::RunToken { .. } => return Err(run_not_found(&id)),
    }
    if batch.lines.len() > MAX_LOG_BATCH {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            hoist_core::api::ErrorCode::PayloadTooLarge,
            format!("a log batch holds at most {MAX_LOG_BATCH} lines; send smaller batches"),
        ));
    }
    if !batch.warnings.is_empty() {
        // Only the agent holding the run warns about it (a job's own lines are log
        // lines, nothing more).
        let (Principal::User(_), Some(_)) = (&who, &batch.session) else {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                hoist_core::api::ErrorCode::Forbidden,
                "only the agent holding a run may send warnings about it (with its session)",
            ));
        };
        if batch.warnings.len() > hoist_core::api::MAX_RUN_WARNINGS {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                hoist_core::api::ErrorCode::PayloadTooLarge,
                format!(
                    "a log batch holds at most {} warnings",
                    hoist_core::api::MAX_RUN_WARNINGS
                ),
            ));
        }
    }
    let stored = !batch.lines.is_empty();
    let r = s.logs.append(&id, batch.lines).await?;
    if let (false, Some(session)) = (batch.warnings.is_empty(), &batch.session) {
        // Advisory: lines already stored stay stored whatever happens to these.
        if let Err(e) = s
            .store
            .add_warnings(&id, session, batch.warnings, s.now())
            .await
        {
            tracing::info!(message = "An agent's warnings about a run were not stored.", run = %id, error = %e);
        }
    }
    if stored {
        s.dispatch.wake_run(&id);
    }
    Ok(axum::Json(LogPage {
        lines: vec![],
        next_offset: r.next_offset,
        complete: false,
        quota_reached: r.quota_reached,
    }))
}
