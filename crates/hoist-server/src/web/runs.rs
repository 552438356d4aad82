//! The runs pages: `/runs` (the runs a user may see, newest first, by state and queue,
//! paged by cursor) and `/runs/{id}` (state and timeline, what was launched, the
//! backend object, Stop / Cancel, and the log: its tail rendered at once, followed live
//! over server-sent events by `assets/logs.js`, earlier lines by pages).
//!
//! Every read and change goes through the API's handlers (`api::runs`): the list, the
//! run, stop and cancel, log pages (`tail`/`before`) and the log follower
//! ([`runs::follow_log`], the same loop as `logs?follow=true`).

use askama::Template;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use futures::StreamExt;
use hoist_core::api::{JobSource, LogPage, LogStream, Run};
use hoist_core::names::shell_join;
use hoist_core::resource::ResourceType;
use hoist_core::run::{FailureStage, RunState};
use serde::Deserialize;

use super::view::{Base, Ts, duration, pretty, seg, state_class, urlencode};
use super::{Posted, WebError, WebResult, WebUser, assets, page};
use crate::api::runs::{self, FollowEvent, LogParams, RunListParams};
use crate::api::{AppState, Query};
use crate::auth::{Principal, User};
use crate::error::ApiError;

/// Lines of a log page: the first view's tail and each "Load earlier lines".
pub const LOG_PAGE_LINES: u64 = 500;
/// Runs per page of `/runs`.
const RUNS_PER_PAGE: i64 = 50;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/runs", get(list))
        .route("/runs/{id}", get(show))
        .route("/runs/{id}/stop", post(stop))
        .route("/runs/{id}/cancel", post(cancel))
        .route("/runs/{id}/log/events", get(log_events))
        .route("/runs/{id}/log/page", get(log_page))
}

// ---------------------------------------------------------------------------------
// /runs

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    queue: String,
    #[serde(default)]
    before: String,
}

struct RunRow {
    href: String,
    id: String,
    name: String,
    state: RunState,
    class: &'static str,
    queue: String,
    queue_href: String,
    priority: &'static str,
    created: Ts,
    created_by: String,
    duration: String,
}

struct StateOption {
    value: &'static str,
    selected: bool,
}

#[derive(Template)]
#[template(path = "runs.html")]
struct RunsPage {
    base: Base,
    rows: Vec<RunRow>,
    states: Vec<StateOption>,
    queue: String,
    /// The filter's query string (`state=…&queue=…`), for the paging links.
    filter: String,
    older: Option<String>,
    paged: bool,
}

/// `entity/name` → (entity, name); a bare name is looked up among the user's entities.
fn split_queue(q: &str) -> (Option<String>, String) {
    match q.split_once('/') {
        Some((e, n)) => (Some(e.to_string()), n.to_string()),
        None => (None, q.to_string()),
    }
}

/// How long a run ran (or has been running), if it started.
fn run_duration(run: &Run, now: i64) -> String {
    match (run.started_at, run.ended_at) {
        (Some(s), Some(e)) => duration(e.timestamp_millis() - s.timestamp_millis()),
        (Some(s), None) if !run.state.is_terminal() => {
            format!("{} so far", duration(now - s.timestamp_millis()))
        }
        _ => "—".into(),
    }
}

async fn list(
    State(s): State<AppState>,
    who: WebUser,
    axum::extract::Query(q): axum::extract::Query<ListQuery>,
) -> WebResult {
    let state = match q.state.trim() {
        "" => None,
        st => Some(
            st.parse::<RunState>()
                .map_err(|e| WebError::BadInput(e.to_string()))?,
        ),
    };
    let queue = q.queue.trim().to_string();
    let (entity, queue_name) = if queue.is_empty() {
        (None, None)
    } else {
        let (e, n) = split_queue(&queue);
        (e, Some(n))
    };
    let before = Some(q.before.trim().to_string()).filter(|b| !b.is_empty());
    let params = RunListParams {
        queue: queue_name,
        entity,
        state,
        limit: Some(RUNS_PER_PAGE),
        before: before.clone(),
    };
    let list = runs::list_runs(State(s.clone()), User(who.user.clone()), Query(params))
        .await?
        .0;
    let now = s.now();
    let rows = list
        .runs
        .iter()
        .map(|r| {
            let queue = format!("{}/{}", r.entity, r.queue);
            RunRow {
                href: format!("/runs/{}", seg(&r.id)),
                id: r.id.clone(),
                name: r.name.clone(),
                state: r.state,
                class: state_class(r.state),
                queue_href: format!("/runs?queue={}", urlencode(&queue)),
                queue,
                priority: r.priority.as_str(),
                created: Ts(r.created_at.timestamp_millis()),
                created_by: r.created_by.clone(),
                duration: run_duration(r, now),
            }
        })
        .collect();
    let mut filter = Vec::new();
    if let Some(st) = state {
        filter.push(format!("state={}", st.as_str()));
    }
    if !queue.is_empty() {
        filter.push(format!("queue={}", urlencode(&queue)));
    }
    let filter = filter.join("&");
    let older = list.next_cursor.map(|c| {
        let sep = if filter.is_empty() { "" } else { "&" };
        format!("/runs?{filter}{sep}before={}", urlencode(&c))
    });
    page(&RunsPage {
        base: Base::new(&who, "runs", "Runs"),
        rows,
        states: RunState::ALL
            .iter()
            .map(|st| StateOption {
                value: st.as_str(),
                selected: state == Some(*st),
            })
            .collect(),
        queue,
        filter,
        older,
        paged: before.is_some(),
    })
}

// ---------------------------------------------------------------------------------
// /runs/{id}

#[derive(Deserialize)]
struct ShowQuery {
    /// Show the log page that ends before this line (scrolling back without JS).
    before: Option<u64>,
    /// What a Stop or Cancel just did (a fixed message, never echoed text).
    done: Option<String>,
}

struct Flash {
    ok: bool,
    message: String,
}

struct Step {
    at: Ts,
    from: String,
    to: RunState,
    class: &'static str,
    actor: String,
    reason: String,
    /// The failure's stage, on the step into `failed`.
    stage: Option<FailureStage>,
}

struct Warn {
    at: Ts,
    message: String,
}

/// One `<dt>`/`<dd>` pair; `code` shows the value in monospace.
struct Field {
    label: &'static str,
    value: String,
    code: bool,
}

fn field(label: &'static str, value: impl Into<String>) -> Field {
    Field {
        label,
        value: value.into(),
        code: false,
    }
}

fn code(label: &'static str, value: impl Into<String>) -> Field {
    Field {
        label,
        value: value.into(),
        code: true,
    }
}

struct LogRow {
    offset: u64,
    /// 1-based, as people count lines.
    number: u64,
    class: &'static str,
    text: String,
}

struct LogView {
    lines: Vec<LogRow>,
    /// Offset of the first line shown (where earlier lines end).
    first: u64,
    /// Offset after the last line shown (where following continues).
    next: u64,
    /// The view ends at the log's end (else it is a page scrolled back to).
    tail: bool,
    /// Follow live: the tail of a run that has not ended.
    live: bool,
    complete: bool,
    quota_reached: bool,
    earlier_href: String,
    newer_href: String,
    events: String,
    page: String,
}

#[derive(Template)]
#[template(path = "run.html")]
struct RunPage {
    base: Base,
    run: Run,
    href: String,
    state_class: &'static str,
    flash: Option<Flash>,
    summary: Vec<Field>,
    times: Vec<(&'static str, Ts)>,
    timeline: Vec<Step>,
    warnings: Vec<Warn>,
    failure_tail: String,
    launched: Vec<Field>,
    env: Vec<(String, String)>,
    config: String,
    resource_args: String,
    template_values: String,
    resource_config: String,
    backend: Vec<Field>,
    can_stop: bool,
    can_cancel: bool,
    log: LogView,
    logs_js: String,
}

fn is_empty_json(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::Object(m) => m.is_empty(),
        serde_json::Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// What was launched: image or job, its source, the command.
fn launched(run: &Run) -> Vec<Field> {
    let mut out = Vec::new();
    if let Some(img) = &run.image {
        out.push(code("Image", img.clone()));
    }
    if let Some(j) = &run.job {
        out.push(code("Job", j.to_string()));
    }
    match &run.job_source {
        Some(JobSource::Image { image }) if run.image.as_ref() != Some(image) => {
            out.push(code("Job image", image.clone()));
        }
        Some(JobSource::Git {
            repo,
            git_ref,
            commit,
            build_context,
            dockerfile,
            ..
        }) => {
            out.push(code("Git repository", repo.clone()));
            if let Some(r) = git_ref {
                out.push(code("Git ref", r.clone()));
            }
            out.push(code("Commit", commit.clone()));
            if let Some(c) = build_context {
                out.push(code("Build context", c.clone()));
            }
            if let Some(d) = dockerfile {
                out.push(code("Dockerfile", d.clone()));
            }
        }
        Some(JobSource::Code {
            artifact,
            size,
            dockerfile,
            ..
        }) => {
            out.push(code("Code artifact", format!("{artifact} ({size} bytes)")));
            if let Some(d) = dockerfile {
                out.push(code("Dockerfile", d.clone()));
            }
        }
        _ => {}
    }
    out.push(match &run.entry_point {
        Some(ep) => code("Entry point", shell_join(ep)),
        None => field("Entry point", "the image's own"),
    });
    if !run.args.is_empty() {
        out.push(code("Arguments", shell_join(&run.args)));
    }
    out.push(field("Project", run.project.clone()));
    out
}

/// The object the run became on its backend, as the server knows it: the agent
/// names and labels it after the run id (the run does not record the backend's own
/// ids), so these say how to find it.
fn backend(run: &Run) -> Vec<Field> {
    let id = &run.id;
    let mut out = vec![field("Resource", run.resource.as_str())];
    match &run.agent {
        Some(a) => out.push(field("Agent", format!("{} ({})", a.name, a.id))),
        None => out.push(field("Agent", "none has claimed it yet")),
    }
    out.push(field("Attempts", run.attempts.to_string()));
    if let Some(b) = &run.built {
        let how = if b.cache_hit {
            "already built"
        } else {
            "built"
        };
        out.push(code(
            "Built image",
            format!("{} ({how} by {})", b.image, b.builder),
        ));
    }
    let started = run.started_at.is_some() || run.state.may_be_executing();
    match run.resource {
        ResourceType::LocalProcess => {
            out.push(field(
                "Process",
                "a process group on the agent's host, with HOIST_RUN_ID in its environment",
            ));
            out.push(code(
                "Find it",
                format!("grep -lzx HOIST_RUN_ID={id} /proc/*/environ"),
            ));
        }
        ResourceType::Docker => {
            out.push(code("Container", format!("hoist-{id}")));
            out.push(code(
                "Find it",
                format!("docker ps -a --filter label=hoist.run-id={id}"),
            ));
        }
        ResourceType::Kubernetes => {
            out.push(code("Objects labelled", format!("hoist.dev/run-id={id}")));
            out.push(code(
                "Find them",
                format!("kubectl get jobs,pods -l hoist.dev/run-id={id}"),
            ));
        }
        ResourceType::Sagemaker => {
            let name = match run.resource_config.get("TrainingJobName") {
                Some(serde_json::Value::String(n)) => n.clone(),
                _ => format!("hoist-{}", id.to_ascii_lowercase()),
            };
            out.push(code("Training job", name));
        }
        ResourceType::Vertex => {
            out.push(code("CustomJob labelled", format!("hoist-run-id={id}")));
            out.push(code(
                "Find it",
                format!("gcloud ai custom-jobs list --filter='labels.hoist-run-id={id}'"),
            ));
        }
    }
    if !started {
        out.push(field(
            "Note",
            "the backend object exists once an agent starts the run",
        ));
    }
    if let Some(c) = run.exit_code {
        out.push(field("Exit code", c.to_string()));
    }
    out
}

fn summary(run: &Run, now: i64) -> Vec<Field> {
    let mut out = vec![
        field("Queue", format!("{}/{}", run.entity, run.queue)),
        field("Priority", run.priority.as_str()),
        field("Launched by", run.created_by.clone()),
        field("Duration", run_duration(run, now)),
    ];
    if !run.state_reason.is_empty() {
        out.push(field("Reason", run.state_reason.clone()));
    }
    if run.stop_requested && !run.state.is_terminal() {
        out.push(field("Stop", "requested; the agent is stopping it"));
    }
    out
}

fn timeline(run: &Run) -> Vec<Step> {
    let steps = run.timeline.as_deref().unwrap_or_default();
    steps
        .iter()
        .map(|t| Step {
            at: Ts(t.at.timestamp_millis()),
            from: t.from.map(|f| f.as_str().to_string()).unwrap_or_default(),
            to: t.to,
            class: state_class(t.to),
            actor: t.actor.to_string(),
            reason: t.reason.clone(),
            stage: (t.to == RunState::Failed)
                .then(|| run.failure.as_ref().map(|f| f.stage))
                .flatten(),
        })
        .collect()
}

/// A page of the run's log through the API: its tail, or the page before a line.
async fn log_page_of(
    s: &AppState,
    who: &WebUser,
    id: &str,
    before: Option<u64>,
) -> Result<LogPage, WebError> {
    let params = LogParams {
        tail: Some(LOG_PAGE_LINES),
        before,
        ..Default::default()
    };
    let res = runs::read_logs(
        State(s.clone()),
        Principal::User(who.user.clone()),
        Path(id.to_string()),
        Query(params),
    )
    .await?;
    let body = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .map_err(|e| internal(format!("a log page could not be read: {e}")))?;
    serde_json::from_slice(&body).map_err(|e| internal(format!("a log page is not a LogPage: {e}")))
}

fn internal(what: String) -> WebError {
    tracing::error!(message = "The run page could not read its log.", error = %what);
    WebError::Api(ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        hoist_core::api::ErrorCode::Internal,
        "the run's log could not be shown; the server log has the details",
    ))
}

fn log_class(s: LogStream) -> &'static str {
    match s {
        LogStream::Stdout => "stdout",
        LogStream::Stderr => "stderr",
        LogStream::System => "system",
    }
}

async fn run_page(
    s: &AppState,
    who: &WebUser,
    id: &str,
    before: Option<u64>,
    flash: Option<Flash>,
) -> WebResult<RunPage> {
    let run = runs::get_run(
        State(s.clone()),
        Principal::User(who.user.clone()),
        Path(id.to_string()),
    )
    .await?
    .0;
    let page = log_page_of(s, who, id, before).await?;
    let first = page
        .lines
        .first()
        .map(|l| l.offset)
        .unwrap_or(page.next_offset);
    let tail = before.is_none();
    let href = format!("/runs/{}", seg(&run.id));
    let log = LogView {
        lines: page
            .lines
            .into_iter()
            .map(|l| LogRow {
                offset: l.offset,
                number: l.offset + 1,
                class: log_class(l.stream),
                text: l.text,
            })
            .collect(),
        first,
        next: page.next_offset,
        tail,
        live: tail && !run.state.is_terminal(),
        complete: page.complete,
        quota_reached: page.quota_reached,
        earlier_href: format!("{href}?before={first}#log"),
        newer_href: format!("{href}?before={}#log", page.next_offset + LOG_PAGE_LINES),
        events: format!("{href}/log/events"),
        page: format!("{href}/log/page"),
    };
    let env = run
        .env
        .0
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let json_or_empty = |v: &serde_json::Value| {
        if is_empty_json(v) {
            String::new()
        } else {
            pretty(v)
        }
    };
    let template_values = if run.template_values.is_empty() {
        String::new()
    } else {
        serde_json::to_string_pretty(&run.template_values).unwrap_or_default()
    };
    let now = s.now();
    Ok(RunPage {
        base: Base::new(who, "runs", format!("Run {}", run.name)),
        href,
        state_class: state_class(run.state),
        flash,
        summary: summary(&run, now),
        times: [
            ("Created", Some(run.created_at)),
            ("Started", run.started_at),
            ("Ended", run.ended_at),
        ]
        .into_iter()
        .filter_map(|(l, t)| Some((l, Ts(t?.timestamp_millis()))))
        .collect(),
        timeline: timeline(&run),
        warnings: run
            .warnings
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|w| Warn {
                at: Ts(w.at.timestamp_millis()),
                message: w.message.clone(),
            })
            .collect(),
        failure_tail: run
            .failure
            .as_ref()
            .map(|f| f.log_tail.join("\n"))
            .unwrap_or_default(),
        launched: launched(&run),
        env,
        config: json_or_empty(&run.config),
        resource_args: json_or_empty(&run.resource_args),
        template_values,
        resource_config: json_or_empty(&run.resource_config),
        backend: backend(&run),
        can_stop: matches!(
            run.state,
            RunState::Building | RunState::Starting | RunState::Running | RunState::Unknown
        ),
        can_cancel: matches!(run.state, RunState::Queued | RunState::Claimed),
        log,
        logs_js: assets::url("logs.js"),
        run,
    })
}

async fn show(
    State(s): State<AppState>,
    who: WebUser,
    Path(id): Path<String>,
    axum::extract::Query(q): axum::extract::Query<ShowQuery>,
) -> WebResult {
    let flash = match q.done.as_deref() {
        Some("stop") => Some(Flash {
            ok: true,
            message: "Stop requested: the agent stops the run (SIGTERM, then a kill after its grace period).".into(),
        }),
        Some("cancel") => Some(Flash {
            ok: true,
            message: "The run was cancelled.".into(),
        }),
        _ => None,
    };
    page(&run_page(&s, &who, &id, q.before, flash).await?)
}

#[derive(Deserialize)]
struct ActionForm {}

/// After a Stop or Cancel: back to the run's page (303), or the page with the API's
/// refusal (a run that has already ended: 409) as a flash.
async fn after_action(
    s: &AppState,
    who: &WebUser,
    id: &str,
    done: &str,
    r: Result<axum::Json<Run>, ApiError>,
) -> WebResult {
    match r {
        Ok(_) => Ok(Redirect::to(&format!("/runs/{}?done={done}", seg(id))).into_response()),
        Err(e) if e.status == StatusCode::CONFLICT => {
            let flash = Flash {
                ok: false,
                message: e.message,
            };
            let p = run_page(s, who, id, None, Some(flash)).await?;
            Ok((StatusCode::CONFLICT, page(&p)?).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

async fn stop(
    State(s): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<ActionForm>,
) -> WebResult {
    let who = posted.who;
    let r = runs::stop_run(
        State(s.clone()),
        User(who.user.clone()),
        Path(id.clone()),
        Bytes::new(),
    )
    .await;
    after_action(&s, &who, &id, "stop", r).await
}

async fn cancel(
    State(s): State<AppState>,
    Path(id): Path<String>,
    posted: Posted<ActionForm>,
) -> WebResult {
    let who = posted.who;
    let r = runs::cancel_run(State(s.clone()), User(who.user.clone()), Path(id.clone())).await;
    after_action(&s, &who, &id, "cancel", r).await
}

// ---------------------------------------------------------------------------------
// The log, for logs.js

#[derive(Deserialize)]
struct PageQuery {
    before: u64,
}

/// `GET /runs/{id}/log/page?before=N`: the API's log page (JSON `LogPage`) of the
/// [`LOG_PAGE_LINES`] lines before line N.
async fn log_page(
    State(s): State<AppState>,
    who: WebUser,
    Path(id): Path<String>,
    q: Result<axum::extract::Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> WebResult {
    let axum::extract::Query(q) = q.map_err(|_| {
        WebError::BadInput("`before` must be a line number (the first line loaded)".into())
    })?;
    let params = LogParams {
        tail: Some(LOG_PAGE_LINES),
        before: Some(q.before),
        ..Default::default()
    };
    Ok(runs::read_logs(State(s), Principal::User(who.user), Path(id), Query(params)).await?)
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    offset: u64,
}

/// `GET /runs/{id}/log/events?offset=N`: the log from line N as server-sent events,
/// live until the run ends. Each line is one event whose data is the stored line's
/// JSON (a `StoredLogLine`) and whose id is the next line's offset, so a reconnecting
/// `EventSource` (`Last-Event-ID`) resumes where it stopped; a comment every 15 s of
/// silence; `event: state` (data: the state and its badge class) when following
/// starts and whenever the state changes; `event: end` (data: the run's final state and its badge class, and the
/// log's length) once the run has ended and every line was sent. The follower is the
/// API's ([`runs::follow_log`]).
async fn log_events(
    State(s): State<AppState>,
    who: WebUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: Result<axum::extract::Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> WebResult {
    let axum::extract::Query(q) =
        q.map_err(|_| WebError::BadInput("`offset` must be a line number".into()))?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let start = resume.unwrap_or(q.offset);
    let events = runs::follow_log(State(s), Principal::User(who.user), Path(id), start).await?;
    let body = async_stream::stream! {
        yield Ok::<_, std::convert::Infallible>(Bytes::from(format!(
            "retry: 3000\n: following from line {start}\n\n"
        )));
        let mut next = start;
        futures::pin_mut!(events);
        while let Some(ev) = events.next().await {
            match ev {
                FollowEvent::Lines(r) => {
                    let first = r.next_offset - r.count;
                    let mut out = Vec::with_capacity(r.data.len() + 24 * r.count as usize);
                    for (i, rec) in r.data.split(|b| *b == b'\n').filter(|x| !x.is_empty()).enumerate() {
                        out.extend_from_slice(format!("id: {}\ndata: ", first + i as u64 + 1).as_bytes());
                        out.extend_from_slice(rec);
                        out.extend_from_slice(b"\n\n");
                    }
                    next = r.next_offset;
                    yield Ok(Bytes::from(out));
                }
                FollowEvent::Idle => yield Ok(Bytes::from_static(b": still running\n\n")),
                FollowEvent::State(st) => {
                    let data = serde_json::json!({"state": st.as_str(), "class": state_class(st)});
                    yield Ok(Bytes::from(format!("event: state\ndata: {data}\n\n")));
                }
                FollowEvent::Ended(state) => {
                    if let Some(st) = state {
                        let data = serde_json::json!({
                            "state": st.as_str(),
                            "class": state_class(st),
                            "next_offset": next,
                        });
                        yield Ok(Bytes::from(format!("event: end\ndata: {data}\n\n")));
                    }
                }
            }
        }
    };
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        [("x-accel-buffering", "no")],
        Body::from_stream(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_read_as_a_shell_would_take_them() {
        let w = |v: &[&str]| shell_join(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            w(&["python", "train.py", "--lr=0.1"]),
            "python train.py --lr=0.1"
        );
        assert_eq!(w(&["sh", "-c", "echo it's"]), "sh -c 'echo it'\\''s'");
        assert_eq!(w(&[""]), "''");
    }

    #[test]
    fn queue_filters_name_an_entity_or_not() {
        assert_eq!(split_queue("team/gpu"), (Some("team".into()), "gpu".into()));
        assert_eq!(split_queue("gpu"), (None, "gpu".into()));
    }
}
