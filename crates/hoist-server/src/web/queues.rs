//! Queues: the list, create (with validation against the server as you type, each
//! problem shown at its line), the queue page with its Runs / Agents / Config tabs,
//! edit and delete. Everything goes through `api::queues` (and `api::runs`,
//! `api::agents` for the tabs), so the API's checks and access rules are the UI's.

use std::collections::HashMap;

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use hoist_core::api::{Agent, AgentStatus, CreateQueue, Queue, QueueStats, Run, UpdateQueue};
use hoist_core::resource::{ResourceType, example_config};
use hoist_core::run::RunState;
use hoist_core::template::{TemplateVariable, VarType};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::view::{Base, Ts, duration, seg, state_class};
use super::{Posted, WebError, WebResult, WebUser, page};
use crate::api::queues::{
    DeleteParams, QueueListParams, QueueWriteParams, create_queue, delete_queue, get_queue,
    list_queues, update_queue,
};
use crate::api::runs::{RunListParams, list_runs};
use crate::api::stats::{QueueStatsParams, queue_stats};
use crate::api::{AppState, Json, Query, agents::list_agents};
use crate::auth::User;
use crate::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/queues", get(queues_page))
        .route("/queues/new", get(new_queue_page).post(create))
        .route("/queues/validate", post(validate))
        .route("/queues/{entity}/{name}", get(queue_page))
        .route("/queues/{entity}/{name}/edit", get(edit_page).post(update))
        .route("/queues/{entity}/{name}/delete", post(delete))
}

// ---------------------------------------------------------------------------------
// The list

struct QueueRow {
    q: Queue,
    queued: u64,
    /// The other states that are not final with runs in them: (state, count, class).
    others: Vec<(&'static str, u64, &'static str)>,
    agents: u32,
    oldest_wait: Option<String>,
    last_activity: Option<Ts>,
}

#[derive(Template)]
#[template(path = "queues.html")]
struct QueuesPage {
    base: Base,
    rows: Vec<QueueRow>,
}

async fn queues_page(State(s): State<AppState>, who: WebUser) -> WebResult {
    let u = || User(who.user.clone());
    let (queues, stats) = tokio::try_join!(
        list_queues(
            State(s.clone()),
            u(),
            Query(QueueListParams {
                entity: None,
                name: None,
            }),
        ),
        queue_stats(
            State(s.clone()),
            u(),
            Query(QueueStatsParams {
                entity: None,
                name: None,
            }),
        ),
    )?;
    let stats: HashMap<String, QueueStats> = stats
        .0
        .queues
        .into_iter()
        .map(|q| (q.id.clone(), q))
        .collect();
    let rows = queues
        .0
        .into_iter()
        .map(|q| {
            let st = stats.get(&q.id);
            let d = st.map(|s| s.depth).unwrap_or_default();
            let others = [
                ("claimed", d.claimed, "st-queued"),
                ("building", d.building, "st-active"),
                ("starting", d.starting, "st-active"),
                ("running", d.running, "st-active"),
                ("stopping", d.stopping, "st-active"),
                ("unknown", d.unknown, "st-bad"),
            ]
            .into_iter()
            .filter(|(_, n, _)| *n > 0)
            .collect();
            QueueRow {
                queued: d.queued,
                others,
                agents: st.map_or(0, |s| s.agents),
                oldest_wait: st.and_then(|s| s.oldest_queued_wait_ms).map(duration),
                last_activity: st.and_then(|s| s.last_activity_at).map(|t| ts(&t)),
                q,
            }
        })
        .collect();
    page(&QueuesPage {
        base: Base::new(&who, "queues", "Queues"),
        rows,
    })
}

// ---------------------------------------------------------------------------------
// Create and edit

/// The create/edit form as typed (kept as text, so a refused form comes back as it was).
#[derive(Debug, Default, Clone, Deserialize)]
struct QueueInput {
    #[serde(default)]
    entity: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    config: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    prioritize: bool,
    #[serde(default)]
    vars: Vec<VarInput>,
}

/// One template variable row of the form.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
struct VarInput {
    #[serde(default)]
    name: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    default: String,
    #[serde(default)]
    min: String,
    #[serde(default)]
    max: String,
    /// Allowed values, comma-separated.
    #[serde(default, rename = "enum")]
    choices: String,
    #[serde(default)]
    description: String,
}

/// Rows of a form post: `var_name`, `var_type`, … repeat once per variable, in order.
fn input_from_pairs(pairs: Vec<(String, String)>) -> QueueInput {
    let mut f = QueueInput::default();
    for (k, v) in pairs {
        match k.as_str() {
            "entity" => f.entity = v,
            "name" => f.name = v.trim().to_string(),
            "resource" => f.resource = v,
            "config" => f.config = v,
            "description" => f.description = v,
            "prioritize" => f.prioritize = !v.is_empty() && v != "false",
            "var_name" => f.vars.push(VarInput {
                name: v.trim().to_string(),
                ..Default::default()
            }),
            _ => {
                if let Some(row) = f.vars.last_mut() {
                    let v = v.trim().to_string();
                    match k.as_str() {
                        "var_type" => row.kind = v,
                        "var_default" => row.default = v,
                        "var_min" => row.min = v,
                        "var_max" => row.max = v,
                        "var_enum" => row.choices = v,
                        "var_description" => row.description = v,
                        _ => {}
                    }
                }
            }
        }
    }
    f.vars
        .retain(|v| !v.name.is_empty() || !v.default.is_empty());
    f
}

/// A problem of the form: where (a config line, a variable, a field) and what.
#[derive(Debug, Clone, Serialize)]
struct Problem {
    /// 1-based line in the config text, when the problem is in the config.
    line: Option<u32>,
    column: Option<u32>,
    /// The config path (`spec.template…`), the variable, or the form field.
    path: String,
    message: String,
    /// `config`, `variables` or `form`.
    field: &'static str,
}

fn parse_number(what: &str, row: &str, s: &str) -> Result<Option<f64>, Problem> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse::<f64>().map(Some).map_err(|_| Problem {
        line: None,
        column: None,
        path: row.to_string(),
        message: format!("{what} must be a number, not {s:?}"),
        field: "variables",
    })
}

fn typed(kind: VarType, s: &str) -> Value {
    match kind {
        VarType::Int => s
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| json!(s)),
        VarType::Float => s
            .parse::<f64>()
            .map(Value::from)
            .unwrap_or_else(|_| json!(s)),
        VarType::String => json!(s),
    }
}

/// The template variables of the form, or the problems of its rows.
fn variables(input: &QueueInput) -> Result<Vec<TemplateVariable>, Vec<Problem>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for v in &input.vars {
        let row = if v.name.is_empty() {
            "(unnamed variable)"
        } else {
            &v.name
        };
        let kind = match v.kind.as_str() {
            "" | "string" => VarType::String,
            "int" => VarType::Int,
            "float" => VarType::Float,
            other => {
                problems.push(Problem {
                    line: None,
                    column: None,
                    path: row.to_string(),
                    message: format!("type must be string, int or float, not {other:?}"),
                    field: "variables",
                });
                continue;
            }
        };
        let (min, max) = match (
            parse_number("min", row, &v.min),
            parse_number("max", row, &v.max),
        ) {
            (Ok(a), Ok(b)) => (a, b),
            (a, b) => {
                problems.extend(a.err());
                problems.extend(b.err());
                continue;
            }
        };
        let choices: Vec<Value> = v
            .choices
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|c| typed(kind, c))
            .collect();
        out.push(TemplateVariable {
            name: v.name.clone(),
            kind,
            default: (!v.default.is_empty()).then(|| typed(kind, &v.default)),
            min,
            max,
            choices: (!choices.is_empty()).then_some(choices),
            description: (!v.description.is_empty()).then(|| v.description.clone()),
        });
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// The problems an API error holds, placed: config paths at their lines in `text`.
fn problems_of(e: &ApiError, text: &str) -> Vec<Problem> {
    let details = e.details.as_ref();
    if let (Some(line), Some(col)) = (
        details.and_then(|d| d.get("line")).and_then(Value::as_u64),
        details
            .and_then(|d| d.get("column"))
            .and_then(Value::as_u64),
    ) {
        return vec![Problem {
            line: Some(line as u32),
            column: Some(col as u32),
            path: String::new(),
            message: e.message.clone(),
            field: "config",
        }];
    }
    let listed = details
        .and_then(|d| d.get("problems"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if listed.is_empty() {
        let field = if e.status == StatusCode::CONFLICT || e.message.contains("queue name") {
            "name"
        } else {
            "form"
        };
        return vec![Problem {
            line: None,
            column: None,
            path: String::new(),
            message: e.message.clone(),
            field,
        }];
    }
    let tree = hoist_core::yaml::tree::parse(text).ok();
    listed
        .iter()
        .map(|p| {
            let message = p["message"].as_str().unwrap_or_default().to_string();
            if let Some(var) = p.get("variable").and_then(Value::as_str) {
                return Problem {
                    line: None,
                    column: None,
                    path: var.to_string(),
                    message,
                    field: "variables",
                };
            }
            let path = p["path"].as_str().unwrap_or_default().to_string();
            let pos = tree
                .as_ref()
                .map(|t| hoist_core::yaml::tree::locate_in(t, &path));
            Problem {
                line: pos.map(|p| p.line).filter(|l| *l > 0),
                column: pos.map(|p| p.column).filter(|c| *c > 0),
                path,
                message,
                field: "config",
            }
        })
        .collect()
}

/// What a form is for: a new queue, or changing `entity/name`.
#[derive(Clone)]
enum Target {
    New,
    Existing { entity: String, name: String },
}

/// Checks the form through the API (`dry_run` unless `store`), returning the queue.
/// A name no queue has, to check the rest of a form whose name the API refused.
const PROBE_NAME: &str = "hoist-form-check.";

async fn submit(
    s: &AppState,
    who: &WebUser,
    input: &QueueInput,
    target: &Target,
    store: bool,
) -> Result<Queue, Vec<Problem>> {
    let mut problems = match call_api(s, who, input, target, store).await {
        Ok(q) => return Ok(q),
        Err(p) => p,
    };
    // The API stops at a bad name; the form shows the config's problems too, found
    // by the same checks under a name that passes (storing nothing).
    if matches!(target, Target::New)
        && !problems.is_empty()
        && problems.iter().all(|p| p.field == "name")
    {
        let probe = QueueInput {
            name: PROBE_NAME.to_string(),
            ..input.clone()
        };
        if let Err(more) = call_api(s, who, &probe, target, false).await {
            problems.extend(more.into_iter().filter(|p| p.field != "name"));
        }
    }
    Err(problems)
}

/// One create or update through the API (`dry_run` unless `store`).
async fn call_api(
    s: &AppState,
    who: &WebUser,
    input: &QueueInput,
    target: &Target,
    store: bool,
) -> Result<Queue, Vec<Problem>> {
    let vars = variables(input)?;
    let params = QueueWriteParams {
        allow_privileged: false,
        dry_run: !store,
    };
    let config = (!input.config.trim().is_empty()).then(|| Value::String(input.config.clone()));
    let result = match target {
        Target::New => create_queue(
            State(s.clone()),
            User(who.user.clone()),
            Query(params),
            Json(CreateQueue {
                name: input.name.clone(),
                entity: (!input.entity.is_empty()).then(|| input.entity.clone()),
                resource: input.resource.clone(),
                config,
                template_variables: vars,
                prioritize: input.prioritize,
                description: Some(input.description.clone()),
            }),
        )
        .await
        .map(|(_, q)| q.0),
        Target::Existing { entity, name } => update_queue(
            State(s.clone()),
            User(who.user.clone()),
            Path((entity.clone(), name.clone())),
            Query(params),
            Json(UpdateQueue {
                config: Some(config.unwrap_or_else(|| json!({}))),
                template_variables: Some(vars),
                prioritize: Some(input.prioritize),
                description: Some(input.description.clone()),
            }),
        )
        .await
        .map(|q| q.0),
    };
    result.map_err(|e| problems_of(&e, &input.config))
}

#[derive(Template)]
#[template(path = "queue_form.html")]
struct QueueForm {
    base: Base,
    /// `None` when creating.
    editing: Option<(String, String)>,
    input: QueueInput,
    entities: Vec<(String, &'static str)>,
    resources: Vec<&'static str>,
    /// `(resource, example config)` for the editor's "example" button and prefill.
    examples: Vec<(&'static str, &'static str)>,
    problems: Vec<Problem>,
    validate_js: String,
}

impl QueueForm {
    fn new(
        who: &WebUser,
        editing: Option<(String, String)>,
        input: QueueInput,
        problems: Vec<Problem>,
    ) -> QueueForm {
        let title = match &editing {
            Some((e, n)) => format!("Edit {e}/{n}"),
            None => "Create queue".to_string(),
        };
        let entities = who
            .user
            .entities
            .iter()
            .enumerate()
            .map(|(i, e)| {
                (
                    e.clone(),
                    if i == 0 {
                        "personal: only you can use it"
                    } else {
                        "team: shared with the team's members"
                    },
                )
            })
            .collect();
        QueueForm {
            base: Base::new(who, "queues", title),
            editing,
            input,
            entities,
            resources: ResourceType::ALL.iter().map(|r| r.as_str()).collect(),
            examples: ResourceType::ALL
                .iter()
                .map(|r| (r.as_str(), example_config(*r)))
                .collect(),
            problems,
            validate_js: super::assets::url("queue-form.js"),
        }
    }
    /// Config lines (1-based) with a problem, for the gutter.
    fn bad_lines(&self) -> Vec<u32> {
        self.problems.iter().filter_map(|p| p.line).collect()
    }
    /// The gutter's line numbers (at least as many as the config has lines).
    fn gutter(&self) -> Vec<(u32, bool)> {
        let n = self.input.config.lines().count().max(1) as u32;
        let bad = self.bad_lines();
        (1..=n).map(|l| (l, bad.contains(&l))).collect()
    }
    fn problems_in(&self, field: &str) -> Vec<&Problem> {
        self.problems.iter().filter(|p| p.field == field).collect()
    }
    /// Form rows for the variables: the ones typed, then two empty ones.
    fn var_rows(&self) -> Vec<VarInput> {
        let mut rows = self.input.vars.clone();
        rows.push(VarInput::default());
        rows.push(VarInput::default());
        rows
    }
}

async fn new_queue_page(who: WebUser) -> WebResult {
    let r = ResourceType::Docker;
    let input = QueueInput {
        entity: who.user.name.clone(),
        resource: r.as_str().into(),
        config: example_config(r).to_string(),
        ..Default::default()
    };
    page(&QueueForm::new(&who, None, input, vec![]))
}

async fn create(State(s): State<AppState>, posted: Posted<Vec<(String, String)>>) -> WebResult {
    let input = input_from_pairs(posted.body);
    let who = posted.who;
    match submit(&s, &who, &input, &Target::New, true).await {
        Ok(q) => Ok(
            Redirect::to(&format!("/queues/{}/{}", seg(&q.entity), seg(&q.name))).into_response(),
        ),
        Err(problems) => refused(QueueForm::new(&who, None, input, problems)),
    }
}

fn refused(form: QueueForm) -> WebResult {
    let mut res = page(&form)?;
    *res.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    Ok(res)
}

/// What the editor's script sends as you type.
#[derive(Deserialize)]
struct ValidateRequest {
    #[serde(flatten)]
    input: QueueInput,
    /// `entity/name` when editing an existing queue.
    #[serde(default)]
    editing: Option<String>,
}

#[derive(Serialize)]
struct ValidateAnswer {
    ok: bool,
    problems: Vec<Problem>,
}

async fn validate(State(s): State<AppState>, posted: Posted<ValidateRequest>) -> Response {
    let req = posted.body;
    let target = match req.editing.as_deref().and_then(|e| e.split_once('/')) {
        Some((entity, name)) => Target::Existing {
            entity: entity.to_string(),
            name: name.to_string(),
        },
        None => Target::New,
    };
    let mut input = req.input;
    input
        .vars
        .retain(|v| !v.name.is_empty() || !v.default.is_empty());
    let problems = match submit(&s, &posted.who, &input, &target, false).await {
        Ok(_) => vec![],
        Err(p) => p,
    };
    axum::Json(ValidateAnswer {
        ok: problems.is_empty(),
        problems,
    })
    .into_response()
}

async fn find(s: &AppState, who: &WebUser, entity: &str, name: &str) -> Result<Queue, WebError> {
    Ok(get_queue(
        State(s.clone()),
        User(who.user.clone()),
        Path((entity.to_string(), name.to_string())),
    )
    .await?
    .0)
}

fn input_of(q: &Queue) -> QueueInput {
    let num = |n: Option<f64>| n.map(|n| n.to_string()).unwrap_or_default();
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    QueueInput {
        entity: q.entity.clone(),
        name: q.name.clone(),
        resource: q.resource.as_str().to_string(),
        config: hoist_core::yaml::to_yaml(&q.config),
        description: q.description.clone(),
        prioritize: q.prioritize,
        vars: q
            .template_variables
            .iter()
            .map(|v| VarInput {
                name: v.name.clone(),
                kind: v.kind.as_str().to_string(),
                default: v.default.as_ref().map(text).unwrap_or_default(),
                min: num(v.min),
                max: num(v.max),
                choices: v
                    .choices
                    .as_ref()
                    .map(|c| c.iter().map(text).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default(),
                description: v.description.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

async fn edit_page(
    State(s): State<AppState>,
    who: WebUser,
    Path((entity, name)): Path<(String, String)>,
) -> WebResult {
    let q = find(&s, &who, &entity, &name).await?;
    page(&QueueForm::new(
        &who,
        Some((q.entity.clone(), q.name.clone())),
        input_of(&q),
        vec![],
    ))
}

async fn update(
    State(s): State<AppState>,
    Path((entity, name)): Path<(String, String)>,
    posted: Posted<Vec<(String, String)>>,
) -> WebResult {
    let who = posted.who;
    let q = find(&s, &who, &entity, &name).await?;
    let mut input = input_from_pairs(posted.body);
    input.entity = q.entity.clone();
    input.name = q.name.clone();
    input.resource = q.resource.as_str().to_string();
    let target = Target::Existing {
        entity: q.entity.clone(),
        name: q.name.clone(),
    };
    match submit(&s, &who, &input, &target, true).await {
        Ok(q) => Ok(Redirect::to(&format!(
            "/queues/{}/{}?tab=config",
            seg(&q.entity),
            seg(&q.name)
        ))
        .into_response()),
        Err(problems) => refused(QueueForm::new(
            &who,
            Some((q.entity, q.name)),
            input,
            problems,
        )),
    }
}

#[derive(Deserialize)]
struct DeleteForm {
    #[serde(default)]
    force: Option<String>,
}

async fn delete(
    State(s): State<AppState>,
    Path((entity, name)): Path<(String, String)>,
    posted: Posted<DeleteForm>,
) -> WebResult {
    delete_queue(
        State(s.clone()),
        User(posted.who.user.clone()),
        Path((entity, name)),
        Query(DeleteParams {
            force: posted.body.force.is_some(),
        }),
    )
    .await?;
    Ok(Redirect::to("/queues").into_response())
}

// ---------------------------------------------------------------------------------
// The queue page

#[derive(Deserialize)]
struct QueueTab {
    #[serde(default)]
    tab: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    before: Option<String>,
}

#[derive(Template)]
#[template(path = "queue.html")]
struct QueuePage {
    base: Base,
    q: Queue,
    tab: &'static str,
    runs: Vec<Run>,
    next_cursor: Option<String>,
    state_filter: String,
    states: Vec<&'static str>,
    agents: Vec<Agent>,
    config_yaml: String,
    now: i64,
}

impl QueuePage {
    fn path(&self) -> String {
        format!("/queues/{}/{}", seg(&self.q.entity), seg(&self.q.name))
    }
    fn tab_current(&self, t: &str) -> &'static str {
        if self.tab == t { "page" } else { "false" }
    }
}

async fn queue_page(
    State(s): State<AppState>,
    who: WebUser,
    Path((entity, name)): Path<(String, String)>,
    axum::extract::Query(p): axum::extract::Query<QueueTab>,
) -> WebResult {
    let q = find(&s, &who, &entity, &name).await?;
    let tab = match p.tab.as_deref() {
        Some("agents") => "agents",
        Some("config") => "config",
        _ => "runs",
    };
    let state = match p.state.as_deref().filter(|s| !s.is_empty()) {
        Some(st) => Some(
            st.parse::<RunState>()
                .map_err(|_| WebError::BadInput(format!("no run state {st:?}")))?,
        ),
        None => None,
    };
    let (mut runs, mut next_cursor, mut agents) = (vec![], None, vec![]);
    match tab {
        "runs" => {
            let list = list_runs(
                State(s.clone()),
                User(who.user.clone()),
                Query(RunListParams {
                    queue: Some(q.name.clone()),
                    entity: Some(q.entity.clone()),
                    state,
                    limit: Some(50),
                    before: p.before.clone(),
                }),
            )
            .await?
            .0;
            runs = list.runs;
            next_cursor = list.next_cursor;
        }
        "agents" => {
            let key = format!("{}/{}", q.entity, q.name);
            agents = list_agents(State(s.clone()), User(who.user.clone()))
                .await?
                .0
                .into_iter()
                .filter(|a| a.queues.contains(&key))
                .collect();
        }
        _ => {}
    }
    page(&QueuePage {
        base: Base::new(&who, "queues", format!("{}/{}", q.entity, q.name)),
        config_yaml: hoist_core::yaml::to_yaml(&q.config),
        q,
        tab,
        runs,
        next_cursor,
        state_filter: p.state.unwrap_or_default(),
        states: RunState::ALL.iter().map(|s| s.as_str()).collect(),
        agents,
        now: s.now(),
    })
}

/// Template helpers shared by the queue and agent pages.
pub(super) fn agent_class(s: &AgentStatus) -> &'static str {
    match s {
        AgentStatus::Polling => "st-queued",
        AgentStatus::Running => "st-active",
        AgentStatus::Stopped => "st-off",
        AgentStatus::Lost => "st-bad",
    }
}

pub(super) fn ts(d: &chrono::DateTime<chrono::Utc>) -> Ts {
    Ts(d.timestamp_millis())
}

fn run_class(r: &Run) -> &'static str {
    state_class(r.state)
}

fn age(now: &i64, d: &chrono::DateTime<chrono::Utc>) -> String {
    duration(now - d.timestamp_millis())
}

fn shown(v: &Option<Value>) -> String {
    match v {
        None => "—".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn bounds(v: &TemplateVariable) -> String {
    let mut parts = vec![];
    if let Some(m) = v.min {
        parts.push(format!("≥ {m}"));
    }
    if let Some(m) = v.max {
        parts.push(format!("≤ {m}"));
    }
    if let Some(c) = &v.choices {
        let c: Vec<String> = c.iter().map(|x| shown(&Some(x.clone()))).collect();
        parts.push(format!("one of {}", c.join(", ")));
    }
    if parts.is_empty() {
        "any".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn form_rows_become_variables() {
        let pairs = [
            ("name", " q "),
            ("var_name", "n"),
            ("var_type", "int"),
            ("var_default", "3"),
            ("var_min", "1"),
            ("var_max", "10"),
            ("var_name", "mode"),
            ("var_enum", "fast, slow"),
            ("var_name", ""),
            ("var_type", "string"),
        ];
        let input = input_from_pairs(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        assert_eq!(input.name, "q");
        let vars = variables(&input).unwrap();
        assert_eq!(vars.len(), 2, "the empty row is dropped");
        assert_eq!(vars[0].default, Some(json!(3)));
        assert_eq!((vars[0].min, vars[0].max), (Some(1.0), Some(10.0)));
        assert_eq!(vars[1].choices, Some(vec![json!("fast"), json!("slow")]));
    }

    #[test]
    fn bad_rows_are_problems_named_by_their_variable() {
        let input = input_from_pairs(vec![
            ("var_name".into(), "n".into()),
            ("var_type".into(), "integer".into()),
            ("var_name".into(), "m".into()),
            ("var_min".into(), "ten".into()),
        ]);
        let problems = variables(&input).unwrap_err();
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[0].path, "n");
        assert!(problems[1].message.contains("min must be a number"));
    }

    proptest! {
        /// Whatever a form holds, reading it never panics, and every problem found
        /// concerns the variables.
        #[test]
        fn any_form_is_read_without_panicking(pairs in proptest::collection::vec(
            (prop_oneof![
                Just("name".to_string()), Just("config".to_string()), Just("var_name".to_string()),
                Just("var_type".to_string()), Just("var_default".to_string()), Just("var_min".to_string()),
                Just("var_max".to_string()), Just("var_enum".to_string()), Just("prioritize".to_string()),
                ".{0,8}",
            ], ".{0,24}"),
            0..24,
        )) {
            let input = input_from_pairs(pairs);
            if let Err(problems) = variables(&input) {
                prop_assert!(problems.iter().all(|p| p.field == "variables"));
            }
        }

        /// An API error's problems are placed in any text without panicking.
        #[test]
        fn problems_are_placed_in_any_text(text in ".{0,200}", path in "[a-z.\\[\\]0-9]{0,30}") {
            let e = ApiError::invalid_config("x").with_details(json!({"problems": [{"path": path, "message": "m"}]}));
            let p = problems_of(&e, &text);
            prop_assert_eq!(p.len(), 1);
        }
    }
}
