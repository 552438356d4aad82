//! The jobs pages and the launch drawer.
//!
//! - `GET /jobs`: the jobs the user may see (`api::jobs::list_jobs`), each with a
//!   **Launch** button that opens the launch drawer (`assets/launch.js`); without
//!   JavaScript the button is a link to `/launch?job=ENTITY/NAME`.
//! - `GET /jobs/{entity}/{name}`: a job's versions (`api::jobs::get_job`).
//! - `GET /launch?job=ENTITY/NAME[:VERSION]` (or `?image=REF`): the launch form as a
//!   page. `POST /launch` ([`Posted`] with CSRF) builds a [`LaunchRequest`], calls
//!   `api::runs::launch` in-process and answers 303 to `/runs/{id}`; when the API
//!   refuses, the form comes back with the user's input and each problem next to the
//!   field it concerns (a template variable's next to the variable).
//!
//! The queue dropdown lists `api::queues::list_queues`; each queue's template-variable
//! fields are rendered server-side (the chosen queue's live, the others' in
//! `<template>` elements that `launch.js` swaps in when the queue changes).

use hoist_core::names::shell_join;
use std::collections::BTreeMap;

use askama::Template;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect};
use axum::routing::get;
use hoist_core::api::{
    EnvVars, ErrorCode, Job, JobRef, JobSource, JobVersion, LaunchRequest, Queue,
};
use hoist_core::names;
use hoist_core::run::Priority;
use hoist_core::template::{TemplateVariable, VarType};
use serde::Deserialize;
use serde_json::Value;

use super::view::{Base, Ts, seg, urlencode};
use super::{Posted, WebError, WebResult, WebUser, assets, page};
use crate::api::{AppState, Json, Query, jobs, queues, runs};
use crate::auth::User;
use crate::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/jobs", get(jobs_page))
        .route("/jobs/{entity}/{name}", get(job_page))
        .route("/launch", get(launch_page).post(launch_post))
}

// ---------------------------------------------------------------------------------
// How jobs and their sources read

/// A job version's source, for people.
struct SourceView {
    /// `image`, `git commit`, `code digest`.
    kind: &'static str,
    /// One line: the image, `remote @ commit`, the digest.
    summary: String,
    /// Every part, labelled.
    details: Vec<(&'static str, String)>,
}

fn short_commit(c: &str) -> &str {
    c.get(..12).unwrap_or(c)
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut x = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if x < 1024.0 {
            break;
        }
        x /= 1024.0;
        unit = u;
    }
    format!("{x:.1} {unit}")
}

fn source_view(src: &JobSource) -> SourceView {
    match src {
        JobSource::Image { image } => SourceView {
            kind: "image",
            summary: image.clone(),
            details: vec![("image", image.clone())],
        },
        JobSource::Git {
            repo,
            git_ref,
            commit,
            build_context,
            dockerfile,
            ..
        } => {
            let mut details = vec![("remote", repo.clone())];
            if let Some(r) = git_ref {
                details.push(("ref", r.clone()));
            }
            details.push(("commit", commit.clone()));
            if let Some(b) = build_context {
                details.push(("build context", b.clone()));
            }
            if let Some(d) = dockerfile {
                details.push(("dockerfile", d.clone()));
            }
            SourceView {
                kind: "git commit",
                summary: format!("{repo} @ {}", short_commit(commit)),
                details,
            }
        }
        JobSource::Code {
            artifact,
            size,
            dockerfile,
            ..
        } => {
            let mut details = vec![("digest", artifact.clone()), ("size", human_bytes(*size))];
            if let Some(d) = dockerfile {
                details.push(("dockerfile", d.clone()));
            }
            let hex = artifact.strip_prefix("sha256:").unwrap_or(artifact);
            SourceView {
                kind: "code digest",
                summary: format!("sha256:{}", hex.get(..16).unwrap_or(hex)),
                details,
            }
        }
    }
}

fn entry_point_text(src: &JobSource) -> String {
    match src.entry_point() {
        Some(ep) => shell_join(ep),
        None => String::new(),
    }
}

/// `vN` → N.
fn version_number(v: &str) -> Option<u32> {
    v.strip_prefix('v')?.parse().ok()
}

/// Versions `v0`…`latest` are made in order and never reused (api::jobs), so a job
/// whose latest is `vN` has `vN`…`v0`: the drawer offers them, newest first.
fn versions_down_from(latest: &str) -> Vec<String> {
    match version_number(latest) {
        Some(n) => (0..=n).rev().map(|i| format!("v{i}")).collect(),
        None => vec![latest.to_string()],
    }
}

// ---------------------------------------------------------------------------------
// /jobs

struct JobRow {
    entity: String,
    name: String,
    /// `entity/name`
    job: String,
    href: String,
    /// `/launch?job=entity/name`: the Launch button without JavaScript.
    launch_href: String,
    description: String,
    latest: String,
    /// `v3 v2 v1 v0` for the drawer's version list.
    versions: String,
    source: SourceView,
    entry_point: String,
    updated: Ts,
}

fn job_row(j: &Job) -> JobRow {
    let latest = j.versions.iter().find(|v| v.version == j.latest);
    let (source, entry_point, updated) = match latest {
        Some(v) => (
            source_view(&v.source),
            entry_point_text(&v.source),
            Ts(v.created_at.timestamp_millis()),
        ),
        None => (
            SourceView {
                kind: "",
                summary: String::new(),
                details: vec![],
            },
            String::new(),
            Ts(j.created_at.timestamp_millis()),
        ),
    };
    JobRow {
        entity: j.entity.clone(),
        name: j.name.clone(),
        job: format!("{}/{}", j.entity, j.name),
        href: format!("/jobs/{}/{}", seg(&j.entity), seg(&j.name)),
        launch_href: format!(
            "/launch?job={}",
            urlencode(&format!("{}/{}", j.entity, j.name))
        ),
        description: j.description.clone(),
        latest: j.latest.clone(),
        versions: versions_down_from(&j.latest).join(" "),
        source,
        entry_point,
        updated,
    }
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct JobsPage {
    base: Base,
    launch_js: String,
    jobs: Vec<JobRow>,
    launch: LaunchView,
}

async fn jobs_page(State(s): State<AppState>, who: WebUser) -> WebResult {
    let mut list = jobs::list_jobs(
        State(s.clone()),
        User(who.user.clone()),
        Query(jobs::JobListParams {
            entity: None,
            name: None,
        }),
    )
    .await?
    .0;
    list.sort_by(|a, b| (&a.entity, &a.name).cmp(&(&b.entity, &b.name)));
    let qs = usable_queues(&s, &who).await?;
    let launch = LaunchView::drawer(qs);
    page(&JobsPage {
        base: Base::new(&who, "jobs", "Jobs"),
        launch_js: assets::url("launch.js"),
        jobs: list.iter().map(job_row).collect(),
        launch,
    })
}

// ---------------------------------------------------------------------------------
// /jobs/{entity}/{name}

struct VersionRow {
    version: String,
    source: SourceView,
    entry_point: String,
    created: Ts,
    created_by: String,
    launch_href: String,
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    base: Base,
    launch_js: String,
    job: JobRow,
    created: Ts,
    versions: Vec<VersionRow>,
    launch: LaunchView,
}

fn version_row(j: &Job, v: &JobVersion) -> VersionRow {
    VersionRow {
        version: v.version.clone(),
        source: source_view(&v.source),
        entry_point: entry_point_text(&v.source),
        created: Ts(v.created_at.timestamp_millis()),
        created_by: v.created_by.clone(),
        launch_href: format!(
            "/launch?job={}",
            urlencode(&format!("{}/{}:{}", j.entity, j.name, v.version))
        ),
    }
}

async fn job_page(
    State(s): State<AppState>,
    who: WebUser,
    Path((entity, name)): Path<(String, String)>,
) -> WebResult {
    let job = jobs::get_job(
        State(s.clone()),
        User(who.user.clone()),
        Path((entity, name)),
    )
    .await?
    .0;
    let qs = usable_queues(&s, &who).await?;
    let mut launch = LaunchView::drawer(qs);
    launch.job = format!("{}/{}", job.entity, job.name);
    launch.versions = job.versions.iter().map(|v| v.version.clone()).collect();
    let mut row = job_row(&job);
    row.versions = launch.versions.join(" ");
    page(&JobPage {
        base: Base::new(&who, "jobs", format!("{}/{}", job.entity, job.name)),
        launch_js: assets::url("launch.js"),
        created: Ts(job.created_at.timestamp_millis()),
        versions: job.versions.iter().map(|v| version_row(&job, v)).collect(),
        job: row,
        launch,
    })
}

// ---------------------------------------------------------------------------------
// The launch form

const PRIORITIES: [&str; 4] = ["critical", "high", "medium", "low"];

/// One template variable's field.
struct VarField {
    name: String,
    /// `select`, `number` or `text`.
    input: &'static str,
    min: Option<String>,
    max: Option<String>,
    /// `1` for int, `any` for float.
    step: &'static str,
    /// For `select`: each choice as text, and whether it is the value.
    options: Vec<(String, bool)>,
    value: String,
    /// `(int, min 1, max 8, default 2)`
    hint: String,
    description: String,
    /// No default: a value must be given.
    required: bool,
    error: String,
}

/// A queue the user may launch on, with its variables' fields.
struct QueueOpt {
    /// `entity/name`
    value: String,
    resource: String,
    description: String,
    prioritize: bool,
    defs: Vec<TemplateVariable>,
    vars: Vec<VarField>,
}

/// The launch form's state: what it shows, what the user typed, what went wrong.
struct LaunchView {
    /// The job as `entity/name` (empty: an image launch, or a drawer the script fills).
    job: String,
    /// Show the job fields (a drawer or a job launch) rather than the image field.
    job_mode: bool,
    /// The job's versions, newest first (the select also offers `latest`).
    versions: Vec<String>,
    /// The chosen version; empty means latest.
    version: String,
    image: String,
    entry_point: String,
    queues: Vec<QueueOpt>,
    /// The chosen queue (`entity/name`).
    queue: String,
    project: String,
    args: String,
    env: String,
    config: String,
    priority: String,
    name: String,
    priorities: [&'static str; 4],
    /// Problems by field (`queue`, `project`, `var.NAME`…).
    errors: BTreeMap<String, Vec<String>>,
    /// Problems of the launch as a whole.
    general: Vec<String>,
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(x)) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{}", x as i64),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

fn bound_text(x: f64) -> String {
    value_text(&Value::from(x))
}

/// The fields of a queue's variables, holding `given` values (else the defaults).
fn var_fields(vars: &[TemplateVariable], given: &BTreeMap<String, String>) -> Vec<VarField> {
    vars.iter()
        .map(|v| {
            let default = v.default.as_ref().map(value_text);
            let value = given
                .get(&v.name)
                .cloned()
                .or_else(|| default.clone())
                .unwrap_or_default();
            let mut hint = vec![v.kind.as_str().to_string()];
            if let Some(m) = v.min {
                hint.push(format!("min {}", bound_text(m)));
            }
            if let Some(m) = v.max {
                hint.push(format!("max {}", bound_text(m)));
            }
            match &default {
                Some(d) => hint.push(format!("default {d}")),
                None => hint.push("required".into()),
            }
            let (input, options) = match &v.choices {
                Some(choices) => {
                    let mut opts: Vec<(String, bool)> = choices
                        .iter()
                        .map(value_text)
                        .map(|c| {
                            let sel = c == value;
                            (c, sel)
                        })
                        .collect();
                    if !value.is_empty() && !opts.iter().any(|(_, s)| *s) {
                        // A value that is not a choice stays visible (the API says why).
                        opts.push((value.clone(), true));
                    } else if value.is_empty() {
                        opts.insert(0, (String::new(), true));
                    }
                    ("select", opts)
                }
                None if v.kind == VarType::String => ("text", vec![]),
                None => ("number", vec![]),
            };
            VarField {
                name: v.name.clone(),
                input,
                min: v.min.map(bound_text),
                max: v.max.map(bound_text),
                step: if v.kind == VarType::Int { "1" } else { "any" },
                options,
                value,
                hint: format!("({})", hint.join(", ")),
                description: v.description.clone().unwrap_or_default(),
                required: v.default.is_none(),
                error: String::new(),
            }
        })
        .collect()
}

fn queue_value(q: &Queue) -> String {
    format!("{}/{}", q.entity, q.name)
}

impl LaunchView {
    fn new(queues: Vec<Queue>) -> LaunchView {
        let opts: Vec<QueueOpt> = queues
            .iter()
            .map(|q| QueueOpt {
                value: queue_value(q),
                resource: q.resource.to_string(),
                description: q.description.clone(),
                prioritize: q.prioritize,
                defs: q.template_variables.clone(),
                vars: var_fields(&q.template_variables, &BTreeMap::new()),
            })
            .collect();
        LaunchView {
            job: String::new(),
            job_mode: false,
            versions: vec![],
            version: String::new(),
            image: String::new(),
            entry_point: String::new(),
            queue: opts.first().map(|q| q.value.clone()).unwrap_or_default(),
            queues: opts,
            project: "default".into(),
            args: String::new(),
            env: String::new(),
            config: String::new(),
            priority: "medium".into(),
            name: String::new(),
            priorities: PRIORITIES,
            errors: BTreeMap::new(),
            general: vec![],
        }
    }

    /// The form in a drawer: the script sets the job when a Launch button opens it.
    fn drawer(queues: Vec<Queue>) -> LaunchView {
        LaunchView {
            job_mode: true,
            ..LaunchView::new(queues)
        }
    }

    /// Chooses a queue (if the user may use it) and puts `given` values into its
    /// variables' fields, with their problems.
    fn choose_queue(&mut self, queue: &str, given: &BTreeMap<String, String>) {
        if self.queues.iter().any(|q| q.value == queue) {
            self.queue = queue.to_string();
        }
        let errors = &self.errors;
        if let Some(q) = self.queues.iter_mut().find(|q| q.value == self.queue) {
            q.vars = var_fields(&q.defs, given);
            for f in q.vars.iter_mut() {
                if let Some(e) = errors.get(&format!("var.{}", f.name)) {
                    f.error = e.join("; ");
                }
            }
        }
    }

    /// The chosen queue's option (its variables are the live fields).
    fn live(&self) -> Option<&QueueOpt> {
        self.queues.iter().find(|q| q.value == self.queue)
    }

    /// The problems of one field, for the template.
    fn err(&self, field: &str) -> String {
        self.errors
            .get(field)
            .map(|e| e.join("; "))
            .unwrap_or_default()
    }

    fn invalid(&self, field: &str) -> &'static str {
        if self.errors.contains_key(field) {
            "true"
        } else {
            "false"
        }
    }

    fn has_errors(&self) -> bool {
        !self.errors.is_empty() || !self.general.is_empty()
    }

    fn add(&mut self, field: &str, msg: impl Into<String>) {
        self.errors
            .entry(field.to_string())
            .or_default()
            .push(msg.into());
    }

    /// The job's page.
    fn job_href(&self) -> String {
        match self.job.split_once('/') {
            Some((e, n)) => format!("/jobs/{}/{}", seg(e), seg(n)),
            None => "/jobs".into(),
        }
    }

    /// `v3` when the version select should show it as chosen.
    fn version_selected(&self, v: &str) -> bool {
        self.version == v
    }
}

async fn usable_queues(s: &AppState, who: &WebUser) -> Result<Vec<Queue>, WebError> {
    let mut qs = queues::list_queues(
        State(s.clone()),
        User(who.user.clone()),
        Query(queues::QueueListParams {
            entity: None,
            name: None,
        }),
    )
    .await?
    .0;
    // The user's own queues first, then their teams', then (admins) everyone's.
    let rank = |e: &str| {
        who.user
            .entities
            .iter()
            .position(|x| x == e)
            .unwrap_or(usize::MAX)
    };
    qs.sort_by(|a, b| {
        (rank(&a.entity), &a.entity, &a.name).cmp(&(rank(&b.entity), &b.entity, &b.name))
    });
    Ok(qs)
}

#[derive(Template)]
#[template(path = "launch.html")]
struct LaunchPage {
    base: Base,
    launch_js: String,
    launch: LaunchView,
}

#[derive(Deserialize, Default)]
struct LaunchQuery {
    /// `entity/name[:version]`
    job: Option<String>,
    image: Option<String>,
    /// `entity/name`
    queue: Option<String>,
    project: Option<String>,
}

/// `entity/name[:version]` → (`entity/name`, version).
fn split_job(s: &str) -> (String, String) {
    match s.rsplit_once(':') {
        Some((j, v)) => (j.to_string(), v.to_string()),
        None => (s.to_string(), String::new()),
    }
}

/// The job a form names (`entity/name`), looked up through the API (404 for others').
async fn form_job(s: &AppState, who: &WebUser, job: &str) -> Result<Job, WebError> {
    let Some((entity, name)) = job.split_once('/') else {
        return Err(ApiError::not_found(format!("no job {job:?}: name it as ENTITY/NAME")).into());
    };
    Ok(jobs::get_job(
        State(s.clone()),
        User(who.user.clone()),
        Path((entity.to_string(), name.to_string())),
    )
    .await?
    .0)
}

async fn launch_page(State(s): State<AppState>, who: WebUser, RawQuery(q): RawQuery) -> WebResult {
    let q: LaunchQuery = serde_urlencoded::from_str(q.as_deref().unwrap_or(""))
        .map_err(|e| WebError::BadInput(format!("the address could not be read: {e}")))?;
    let mut launch = LaunchView::new(usable_queues(&s, &who).await?);
    if let Some(j) = q.job.as_deref().filter(|j| !j.is_empty()) {
        let (job, version) = split_job(j);
        let found = form_job(&s, &who, &job).await?;
        launch.job = job;
        launch.job_mode = true;
        launch.versions = found.versions.iter().map(|v| v.version.clone()).collect();
        launch.version = if version == "latest" {
            String::new()
        } else {
            version
        };
    }
    if let Some(i) = q.image {
        launch.image = i;
    }
    if let Some(p) = q.project.filter(|p| !p.is_empty()) {
        launch.project = p;
    }
    let queue = q.queue.unwrap_or_default();
    launch.choose_queue(&queue, &BTreeMap::new());
    let title = if launch.job.is_empty() {
        "Launch".to_string()
    } else {
        format!("Launch {}", launch.job)
    };
    page(&LaunchPage {
        base: Base::new(&who, "jobs", title),
        launch_js: assets::url("launch.js"),
        launch,
    })
}

/// The launch form as posted. Template variables come as `var.NAME` fields; every
/// other field is text as typed.
#[derive(Deserialize, Default)]
struct LaunchForm {
    #[serde(default)]
    job: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    image: String,
    #[serde(default)]
    entry_point: String,
    #[serde(default)]
    queue: String,
    #[serde(default)]
    project: String,
    #[serde(default)]
    args: String,
    #[serde(default)]
    env: String,
    #[serde(default)]
    config: String,
    #[serde(default)]
    priority: String,
    #[serde(default)]
    name: String,
    /// The queue whose variables the form showed (the script keeps it in step).
    #[serde(default)]
    vars_for: String,
    /// `refresh`: show the chosen queue's variables without launching.
    #[serde(default)]
    action: String,
    /// `var.NAME` fields (and `_csrf`).
    #[serde(flatten)]
    rest: BTreeMap<String, String>,
}

/// Non-blank lines, trimmed: one argument (or entry-point word) per line.
fn parse_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// `KEY=VALUE` per line (blank lines skipped; the value is kept as typed).
fn parse_env(text: &str) -> Result<EnvVars, String> {
    let mut env = EnvVars::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!(
                "line {}: expected KEY=VALUE, got no '=' in it",
                i + 1
            ));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("line {}: the variable name is empty", i + 1));
        }
        if env.insert(k.to_string(), v.to_string()).is_some() {
            return Err(format!("line {}: {k} is set twice", i + 1));
        }
    }
    Ok(env)
}

/// The run config: blank for none, else a JSON object.
fn parse_config(text: &str) -> Result<Option<Value>, String> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(Some(v)),
        Ok(_) => Err("the run config must be a JSON object, such as {\"lr\": 0.01}".into()),
        Err(e) => Err(format!("the run config is not valid JSON: {e}")),
    }
}

/// The template values a form gives (blank fields left out: their defaults apply).
fn form_values(rest: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    rest.iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("var.")?.to_string(), v.trim().to_string())))
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

/// Reads the form into a launch request; problems of its own text go into `view`.
fn build_request(f: &LaunchForm, view: &mut LaunchView) -> LaunchRequest {
    let mut req = LaunchRequest::default();
    let queue = f.queue.trim();
    match queue.split_once('/') {
        Some((e, n)) => {
            req.entity = Some(e.to_string());
            req.queue = n.to_string();
        }
        None => req.queue = queue.to_string(),
    }
    if req.queue.is_empty() {
        view.add("queue", "choose a queue");
    }
    let project = f.project.trim();
    req.project = Some(if project.is_empty() {
        "default".to_string()
    } else {
        project.to_string()
    });
    let job = f.job.trim();
    if !job.is_empty() {
        let (entity, name) = match job.split_once('/') {
            Some((e, n)) => (Some(e.to_string()), n.to_string()),
            None => (None, job.to_string()),
        };
        let version = f.version.trim();
        req.job = Some(JobRef {
            name,
            version: (!version.is_empty()).then(|| version.to_string()),
            entity,
        });
    }
    let image = f.image.trim();
    if !image.is_empty() {
        req.image = Some(image.to_string());
    }
    let ep = parse_lines(&f.entry_point);
    if !ep.is_empty() {
        req.entry_point = Some(ep);
    }
    req.args = parse_lines(&f.args);
    match parse_env(&f.env) {
        Ok(env) => req.env = env,
        Err(e) => view.add("env", e),
    }
    match parse_config(&f.config) {
        Ok(c) => req.config = c,
        Err(e) => view.add("config", e),
    }
    let priority = f.priority.trim();
    if !priority.is_empty() {
        match priority.parse::<Priority>() {
            Ok(p) => req.priority = Some(p),
            Err(e) => view.add("priority", e),
        }
    }
    let name = f.name.trim();
    if !name.is_empty() {
        req.name = Some(name.to_string());
    }
    req.template_values = form_values(&f.rest)
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    req
}

/// Which field an API problem concerns: `(field, message)`, `None` for the launch as a
/// whole. The API stays the judge; this only places its messages.
fn place_problems(
    e: &ApiError,
    req: &LaunchRequest,
    vars: &[String],
) -> Vec<(Option<String>, String)> {
    let msg = e.message.clone();
    let field = |f: &str| vec![(Some(f.to_string()), msg.clone())];
    match e.code {
        ErrorCode::InvalidTemplate => {
            let problems = e
                .details
                .as_ref()
                .and_then(|d| d.get("problems"))
                .and_then(Value::as_array);
            match problems {
                Some(ps) if !ps.is_empty() => ps
                    .iter()
                    .map(|p| {
                        let var = p.get("variable").and_then(Value::as_str).unwrap_or("");
                        let text = p
                            .get("message")
                            .and_then(Value::as_str)
                            .unwrap_or(&msg)
                            .to_string();
                        let f = vars.iter().any(|v| v == var).then(|| format!("var.{var}"));
                        (f, text)
                    })
                    .collect(),
                _ => vec![(None, msg)],
            }
        }
        ErrorCode::NotFound if msg.starts_with("no queue") => field("queue"),
        ErrorCode::NotFound if msg.starts_with("no job") || msg.contains("there is no") => {
            if req.job.is_some() && msg.contains("there is no") {
                field("version")
            } else if req.job.is_some() {
                field("job")
            } else {
                vec![(None, msg)]
            }
        }
        ErrorCode::BadRequest => {
            let same = |r: Result<(), String>| r.err().is_some_and(|m| m == msg);
            let project = req.project.as_deref().unwrap_or("default");
            if msg.contains("job version") {
                field("version")
            } else if msg.contains("run name") {
                field("name")
            } else if msg.contains("several of your teams") {
                field("queue")
            } else if same(names::validate("project", project).map_err(|e| e.to_string())) {
                field("project")
            } else if req
                .image
                .as_deref()
                .is_some_and(|i| same(names::validate_image_ref(i).map_err(|e| e.to_string())))
            {
                field("image")
            } else if req.entry_point.as_deref().is_some_and(|ep| {
                same(names::validate_command("the entry point", ep).map_err(|e| e.to_string()))
            }) {
                field("entry_point")
            } else if same(
                names::validate_command("the arguments", &req.args).map_err(|e| e.to_string()),
            ) {
                field("args")
            } else if same(names::validate_env(&req.env).map_err(|e| e.to_string())) {
                field("env")
            } else if msg.contains("run config") {
                field("config")
            } else if msg.contains("needs a command") {
                field("entry_point")
            } else if msg.contains("an image (--image) or a job") && req.job.is_none() {
                field("image")
            } else {
                vec![(None, msg)]
            }
        }
        _ => vec![(None, msg)],
    }
}

async fn launch_post(State(s): State<AppState>, posted: Posted<LaunchForm>) -> WebResult {
    let Posted { who, body: f } = posted;
    let mut view = LaunchView::new(usable_queues(&s, &who).await?);
    view.job = f.job.trim().to_string();
    view.job_mode = !view.job.is_empty();
    view.version = f.version.trim().to_string();
    if view.version == "latest" {
        view.version.clear();
    }
    view.image = f.image.clone();
    view.entry_point = f.entry_point.clone();
    view.project = f.project.clone();
    view.args = f.args.clone();
    view.env = f.env.clone();
    view.config = f.config.clone();
    view.priority = f.priority.clone();
    view.name = f.name.clone();
    if view.job_mode {
        // The version list (and a 404 for a job the user may not see).
        let job = form_job(&s, &who, &view.job).await?;
        view.versions = job.versions.iter().map(|v| v.version.clone()).collect();
    }
    let given = form_values(&f.rest);
    let queue = f.queue.trim().to_string();
    let refresh = f.action == "refresh";
    let stale_vars = !f.vars_for.is_empty() && f.vars_for != queue;
    if refresh || stale_vars {
        // Show the chosen queue's variables (their defaults) before launching.
        let status = if refresh {
            StatusCode::OK
        } else {
            view.general.push(format!(
                "the template variables shown were those of queue {}; check the values for {queue} and launch again",
                f.vars_for
            ));
            StatusCode::UNPROCESSABLE_ENTITY
        };
        view.choose_queue(&queue, &BTreeMap::new());
        return render_launch(&who, view, status);
    }
    let mut req = build_request(&f, &mut view);
    let mut status = StatusCode::UNPROCESSABLE_ENTITY;
    let chosen_vars: Vec<String> = view
        .queues
        .iter()
        .find(|q| q.value == queue)
        .map(|q| q.vars.iter().map(|v| v.name.clone()).collect())
        .unwrap_or_default();
    // Problems of the form's own text: the API still checks the rest (a dry run), so
    // every problem shows at once.
    req.dry_run = view.has_errors();
    let dry_run = req.dry_run;
    let res = runs::launch(State(s.clone()), User(who.user.clone()), Json(req.clone())).await;
    match res {
        Ok((_, run)) if !dry_run => {
            let to = format!("/runs/{}", seg(&run.0.id));
            return Ok(Redirect::to(&to).into_response());
        }
        Ok(_) => {}
        Err(e) => {
            if e.status.is_server_error() {
                tracing::warn!(message = "A launch from the web UI failed.", error = %e);
            }
            status = e.status;
            for (field, m) in place_problems(&e, &req, &chosen_vars) {
                match field {
                    Some(fl) => view.add(&fl, m),
                    None => view.general.push(m),
                }
            }
        }
    }
    view.choose_queue(&queue, &given);
    if !view.queues.iter().any(|q| q.value == queue) && !view.errors.contains_key("queue") {
        view.add("queue", format!("{queue:?} is not a queue you can use"));
    }
    render_launch(&who, view, status)
}

fn render_launch(who: &WebUser, launch: LaunchView, status: StatusCode) -> WebResult {
    let title = if launch.job.is_empty() {
        "Launch".to_string()
    } else {
        format!("Launch {}", launch.job)
    };
    let p = LaunchPage {
        base: Base::new(who, "jobs", title),
        launch_js: assets::url("launch.js"),
        launch,
    };
    Ok((status, Html(p.render()?)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_lines() {
        let env = parse_env("A=1\n\n B = x=y\r\nC=\n").unwrap();
        assert_eq!(env.get("A").map(String::as_str), Some("1"));
        assert_eq!(env.get("B").map(String::as_str), Some(" x=y"));
        assert_eq!(env.get("C").map(String::as_str), Some(""));
        assert!(parse_env("A=1\nnope").unwrap_err().starts_with("line 2:"));
        assert!(parse_env("=1").is_err());
        assert!(parse_env("A=1\nA=2").unwrap_err().contains("twice"));
    }

    #[test]
    fn config_text() {
        assert_eq!(parse_config("  ").unwrap(), None);
        assert!(parse_config("{\"lr\": 0.1}").unwrap().is_some());
        assert!(parse_config("[1]").unwrap_err().contains("object"));
        assert!(parse_config("{lr").unwrap_err().contains("not valid JSON"));
    }

    #[test]
    fn lines_and_words() {
        assert_eq!(parse_lines(" --lr \n\n0.1\r\n"), ["--lr", "0.1"]);
        assert_eq!(
            shell_join(&["python".into(), "a b.py".into(), "it's".into(), "".into()]),
            r"python 'a b.py' 'it'\''s' ''"
        );
        assert_eq!(versions_down_from("v2"), ["v2", "v1", "v0"]);
        assert_eq!(split_job("a/b:v3"), ("a/b".to_string(), "v3".to_string()));
        assert_eq!(split_job("a/b"), ("a/b".to_string(), String::new()));
        assert_eq!(human_bytes(2048), "2.0 KiB");
    }

    #[test]
    fn var_fields_follow_the_rules() {
        let vars = vec![
            TemplateVariable {
                name: "gpus".into(),
                kind: VarType::Int,
                default: Some(Value::from(1)),
                min: Some(0.0),
                max: Some(8.0),
                choices: None,
                description: None,
            },
            TemplateVariable {
                name: "size".into(),
                kind: VarType::String,
                default: None,
                min: None,
                max: None,
                choices: Some(vec![Value::from("small"), Value::from("large")]),
                description: None,
            },
        ];
        let f = var_fields(&vars, &BTreeMap::new());
        assert_eq!(f[0].input, "number");
        assert_eq!(f[0].min.as_deref(), Some("0"));
        assert_eq!(f[0].max.as_deref(), Some("8"));
        assert_eq!(f[0].value, "1");
        assert_eq!(f[1].input, "select");
        assert!(f[1].required);
        assert_eq!(f[1].options[0], (String::new(), true));
    }
}
