//! Vertex AI CustomJobs (REST v1), Cloud Logging `entries:list` (v2) and Google's OAuth
//! token endpoint, on one server: exactly the calls hoist's Vertex runner makes.
//!
//! | route | operation recorded |
//! |---|---|
//! | `POST /token` (refresh-token grant of [`FakeVertex::credentials_json`]) | `token` |
//! | `POST /v1/projects/P/locations/L/customJobs` | `customJobs.create` |
//! | `GET /v1/projects/P/locations/L/customJobs/ID` | `customJobs.get` |
//! | `POST /v1/projects/P/locations/L/customJobs/ID:cancel` | `customJobs.cancel` |
//! | `GET /v1/projects/P/locations/L/customJobs?filter=labels.K="V" AND …` | `customJobs.list` |
//! | `POST /v2/entries:list` | `entries.list` |
//!
//! Faithful where hoist depends on it: every call but `/token` needs `Authorization:
//! Bearer` with a token this server issued (else 401 UNAUTHENTICATED); errors are
//! Google's shape `{"error": {"code", "message", "status"}}`; a create body is checked
//! as Vertex checks it (unknown field names, in camelCase or the proto's snake_case as
//! Google's JSON parser accepts them, missing `displayName`, `workerPoolSpecs`,
//! `machineSpec.machineType`, an image or a python package, bad label syntax, a
//! malformed duration → 400 INVALID_ARGUMENT naming the field); an unknown job is 404
//! NOT_FOUND; cancelling an ended job is 400 FAILED_PRECONDITION.
//!
//! Jobs change state with time as the [`Script`] says (QUEUED → PENDING → RUNNING →
//! SUCCEEDED / FAILED / EXPIRED; a cancel → CANCELLING → CANCELLED) and write the
//! script's log lines, spread over RUNNING, as `ml_job` entries (`textPayload`, severity
//! `ERROR` for lines starting with `ERROR`), readable through `entries:list` with a
//! small page size so that paging is exercised. [`Script::failures`] injects errors
//! (429 RESOURCE_EXHAUSTED, 503 UNAVAILABLE, …) into the first calls of an operation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde_json::{Map, Value, json};

use crate::{Calls, Served};

/// The project of [`FakeVertex::credentials_json`] (`quota_project_id`).
pub const FAKE_PROJECT: &str = "hoist-fake-project";
const CLIENT_ID: &str = "hoist-fake.apps.googleusercontent.com";
const CLIENT_SECRET: &str = "fake-client-secret";
const REFRESH_TOKEN: &str = "1//fake-refresh-token";

/// How a job ends when nobody cancels it.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    Succeeded,
    /// `JOB_STATE_FAILED` with this `error.message`.
    Failed(String),
    Expired,
}

/// Errors to answer instead of doing an operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// `customJobs.create`, `customJobs.get`, `entries.list`, …
    pub operation: String,
    /// 429, 500, 503, 403…
    pub status: u16,
    /// How many calls (the first ones from now) fail.
    pub times: usize,
}

/// How jobs progress (applies to jobs created after it is set).
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    pub queued: Duration,
    pub pending: Duration,
    pub running: Duration,
    /// Written evenly over RUNNING (none after a cancel).
    pub log_lines: Vec<String>,
    pub end: End,
    /// How long CANCELLING lasts.
    pub cancelling: Duration,
    pub failures: Vec<Failure>,
    /// The most entries (and jobs) one page holds.
    pub page_size: usize,
}

impl Default for Script {
    /// A short realistic job: ~200 ms starting, ~300 ms training writing four lines,
    /// then success.
    fn default() -> Script {
        Script {
            queued: Duration::from_millis(100),
            pending: Duration::from_millis(100),
            running: Duration::from_millis(300),
            log_lines: vec![
                "epoch 1 loss 0.92".into(),
                "epoch 2 loss 0.51".into(),
                "epoch 3 loss 0.20".into(),
                "training done".into(),
            ],
            end: End::Succeeded,
            cancelling: Duration::from_millis(200),
            failures: Vec::new(),
            page_size: 3,
        }
    }
}

impl Script {
    /// Training lasts `d`, writing `n` lines `line 1` … `line n`.
    pub fn training(mut self, d: Duration, n: usize) -> Script {
        self.running = d;
        self.log_lines = (1..=n).map(|i| format!("line {i}")).collect();
        self
    }

    pub fn ending(mut self, end: End) -> Script {
        self.end = end;
        self
    }

    /// The first `times` calls of `operation` answer `status`.
    pub fn failing(mut self, operation: &str, status: u16, times: usize) -> Script {
        self.failures.push(Failure {
            operation: operation.into(),
            status,
            times,
        });
        self
    }
}

struct Job {
    id: String,
    parent: String,
    body: Map<String, Value>,
    created: Instant,
    created_at: DateTime<Utc>,
    cancelled: Option<Duration>,
    script: Script,
}

impl Job {
    fn run_start(&self) -> Duration {
        self.script.queued + self.script.pending
    }

    fn run_end(&self) -> Duration {
        self.run_start() + self.script.running
    }

    /// The state `e` after creation, and whether RUNNING was reached.
    fn state_at(&self, e: Duration) -> &'static str {
        if let Some(c) = self.cancelled
            && e >= c
        {
            return if e < c + self.script.cancelling {
                "JOB_STATE_CANCELLING"
            } else {
                "JOB_STATE_CANCELLED"
            };
        }
        if e < self.script.queued {
            "JOB_STATE_QUEUED"
        } else if e < self.run_start() {
            "JOB_STATE_PENDING"
        } else if e < self.run_end() {
            "JOB_STATE_RUNNING"
        } else {
            match self.script.end {
                End::Succeeded => "JOB_STATE_SUCCEEDED",
                End::Failed(_) => "JOB_STATE_FAILED",
                End::Expired => "JOB_STATE_EXPIRED",
            }
        }
    }

    fn elapsed(&self) -> Duration {
        self.created.elapsed()
    }

    fn at(&self, d: Duration) -> String {
        ts(self.created_at + TimeDelta::from_std(d).unwrap_or_default())
    }

    fn name(&self) -> String {
        format!("{}/customJobs/{}", self.parent, self.id)
    }

    fn render(&self) -> Value {
        let e = self.elapsed();
        let state = self.state_at(e);
        let mut j = self.body.clone();
        j.insert("name".into(), json!(self.name()));
        j.insert("state".into(), json!(state));
        j.insert("createTime".into(), json!(ts(self.created_at)));
        j.insert("updateTime".into(), json!(ts(Utc::now())));
        let ran = e >= self.run_start() && self.cancelled.is_none_or(|c| c > self.run_start());
        if ran {
            j.insert("startTime".into(), json!(self.at(self.run_start())));
        }
        let terminal = matches!(
            state,
            "JOB_STATE_SUCCEEDED"
                | "JOB_STATE_FAILED"
                | "JOB_STATE_EXPIRED"
                | "JOB_STATE_CANCELLED"
        );
        if terminal {
            let end = match self.cancelled {
                Some(c) => c + self.script.cancelling,
                None => self.run_end(),
            };
            j.insert("endTime".into(), json!(self.at(end)));
        }
        if state == "JOB_STATE_FAILED"
            && let End::Failed(m) = &self.script.end
        {
            j.insert("error".into(), json!({"code": 13, "message": m}));
        }
        if state == "JOB_STATE_CANCELLED" {
            j.insert("error".into(), json!({"code": 1, "message": "CANCELED"}));
        }
        Value::Object(j)
    }

    /// The log entries written so far, oldest first.
    fn entries(&self, project: &str) -> Vec<(DateTime<Utc>, Value)> {
        let e = self.elapsed();
        let n = self.script.log_lines.len() as u32;
        let mut out = Vec::new();
        for (i, line) in self.script.log_lines.iter().enumerate() {
            let at = self.run_start() + self.script.running * (i as u32 + 1) / (n + 1);
            if at > e || self.cancelled.is_some_and(|c| at >= c) {
                continue;
            }
            let t = self.created_at + TimeDelta::from_std(at).unwrap_or_default();
            let severity = if line.starts_with("ERROR") {
                "ERROR"
            } else {
                "INFO"
            };
            out.push((
                t,
                json!({
                    "insertId": format!("{}-{i:06}", self.id),
                    "logName": format!("projects/{project}/logs/workerpool0-0"),
                    "resource": {"type": "ml_job", "labels": {"job_id": self.id, "project_id": project, "task_name": "workerpool0-0"}},
                    "timestamp": ts(t),
                    "receiveTimestamp": ts(t),
                    "severity": severity,
                    "textPayload": format!("{line}\n"),
                }),
            ));
        }
        out
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

#[derive(Default)]
struct Inner {
    jobs: BTreeMap<String, Job>,
    next_id: u64,
    tokens: HashSet<String>,
    script: Script,
    failures: Vec<Failure>,
    bodies: Vec<Value>,
}

#[derive(Clone)]
struct Fake {
    inner: Arc<Mutex<Inner>>,
    calls: Calls,
}

/// The fake server. Stops when dropped.
pub struct FakeVertex {
    served: Served,
    fake: Fake,
}

impl FakeVertex {
    /// Serves on 127.0.0.1 with `script` for the jobs it creates.
    pub async fn start(script: Script) -> std::io::Result<FakeVertex> {
        let fake = Fake {
            inner: Arc::new(Mutex::new(Inner {
                next_id: 1_234_567_890_000,
                failures: script.failures.clone(),
                script,
                ..Inner::default()
            })),
            calls: Calls::default(),
        };
        let app = Router::new()
            .route("/token", post(token))
            .route(
                "/v1/projects/{project}/locations/{location}/customJobs",
                get(list).post(create),
            )
            .route(
                "/v1/projects/{project}/locations/{location}/customJobs/{job}",
                get(get_job).post(cancel),
            )
            .route("/v2/entries:list", post(entries))
            .fallback(|| async { google(404, "The requested URL was not found on this server.") })
            .with_state(fake.clone());
        Ok(FakeVertex {
            served: Served::start(app).await?,
            fake,
        })
    }

    /// `http://127.0.0.1:PORT`: `HOIST_VERTEX_ENDPOINT` and `HOIST_LOGGING_ENDPOINT`.
    pub fn url(&self) -> String {
        self.served.url()
    }

    pub fn calls(&self) -> Calls {
        self.fake.calls.clone()
    }

    /// The script of jobs created from now on (its failures replace the pending ones).
    pub fn set_script(&self, script: Script) {
        let mut i = self.fake.inner.lock().expect("fake");
        i.failures = script.failures.clone();
        i.script = script;
    }

    /// An `authorized_user` credentials file whose `token_uri` is this server's.
    pub fn credentials_json(&self) -> String {
        json!({
            "type": "authorized_user",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "refresh_token": REFRESH_TOKEN,
            "token_uri": format!("{}/token", self.url()),
            "quota_project_id": FAKE_PROJECT,
        })
        .to_string()
    }

    /// Writes [`FakeVertex::credentials_json`] to `path` (for
    /// `GOOGLE_APPLICATION_CREDENTIALS`).
    pub fn write_credentials(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.credentials_json())
    }

    /// Every create body received and accepted, in order.
    pub fn created_bodies(&self) -> Vec<Value> {
        self.fake.inner.lock().expect("fake").bodies.clone()
    }

    /// Every job as `customJobs.get` shows it now, oldest first.
    pub fn jobs(&self) -> Vec<Value> {
        let i = self.fake.inner.lock().expect("fake");
        i.jobs.values().map(Job::render).collect()
    }

    /// Cancels job `id` as someone in the console would.
    pub fn cancel_outside(&self, id: &str) {
        let mut i = self.fake.inner.lock().expect("fake");
        if let Some(j) = i.jobs.get_mut(id) {
            j.cancelled.get_or_insert(j.created.elapsed());
        }
    }

    /// Deletes job `id` (its `get` answers 404 from now on).
    pub fn delete_job(&self, id: &str) {
        self.fake.inner.lock().expect("fake").jobs.remove(id);
    }
}

fn status_name(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ALREADY_EXISTS",
        429 => "RESOURCE_EXHAUSTED",
        500 => "INTERNAL",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    }
}

fn google_with(code: u16, status: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(json!({"error": {"code": code, "message": message, "status": status}})),
    )
        .into_response()
}

fn google(code: u16, message: &str) -> Response {
    google_with(code, status_name(code), message)
}

impl Fake {
    /// Checks the bearer token and the injected failures; the error response, if any.
    fn admit(
        &self,
        op: &str,
        target: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<(), Box<Response>> {
        let mut i = self.inner.lock().expect("fake");
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !token.is_some_and(|t| i.tokens.contains(t)) {
            self.calls.record(op, target, 401);
            return Err(Box::new(google(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            )));
        }
        if let Some(f) = i
            .failures
            .iter_mut()
            .find(|f| f.operation == op && f.times > 0)
        {
            f.times -= 1;
            let code = f.status;
            self.calls.record(op, target, code);
            let msg = match code {
                429 => {
                    "Quota exceeded for aiplatform.googleapis.com/custom_job_requests (injected)."
                }
                _ => "The service is currently unavailable (injected).",
            };
            return Err(Box::new(google(code, msg)));
        }
        Ok(())
    }

    fn answer(&self, op: &str, target: Option<&str>, r: Response) -> Response {
        self.calls.record(op, target, r.status().as_u16());
        r
    }
}

/// `application/x-www-form-urlencoded` pairs.
fn form(body: &str) -> HashMap<String, String> {
    fn decode(s: &str) -> String {
        let s = s.replace('+', " ");
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%'
                && i + 2 < b.len()
                && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
            {
                out.push(v);
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    body.split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

async fn token(State(f): State<Fake>, body: String) -> Response {
    let p = form(&body);
    let ok = p.get("grant_type").map(String::as_str) == Some("refresh_token")
        && p.get("client_id").map(String::as_str) == Some(CLIENT_ID)
        && p.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET)
        && p.get("refresh_token").map(String::as_str) == Some(REFRESH_TOKEN);
    if !ok {
        f.calls.record("token", None, 400);
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant", "error_description": "Bad Request"})),
        )
            .into_response();
    }
    let mut i = f.inner.lock().expect("fake");
    i.next_id += 1;
    let t = format!("ya29.fake-{}", i.next_id);
    i.tokens.insert(t.clone());
    f.calls.record("token", None, 200);
    axum::Json(json!({"access_token": t, "expires_in": 3599, "token_type": "Bearer", "scope": "https://www.googleapis.com/auth/cloud-platform"}))
        .into_response()
}

// --- create: what Vertex accepts -----------------------------------------------

/// `snake_case` → `camelCase`, as Google's JSON parser maps proto field names.
fn camel(key: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in key.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The known fields of each message hoist sends (camelCase).
fn fields_of(message: &str) -> &'static [&'static str] {
    match message {
        "custom_job" => &["displayName", "jobSpec", "labels", "encryptionSpec"],
        "job_spec" => &[
            "workerPoolSpecs",
            "scheduling",
            "serviceAccount",
            "network",
            "reservedIpRanges",
            "baseOutputDirectory",
            "protectedArtifactLocationId",
            "tensorboard",
            "enableWebAccess",
            "enableDashboardAccess",
            "experiment",
            "experimentRun",
            "models",
            "persistentResourceId",
        ],
        "worker_pool_spec" => &[
            "containerSpec",
            "pythonPackageSpec",
            "machineSpec",
            "replicaCount",
            "nfsMounts",
            "diskSpec",
        ],
        "machine_spec" => &[
            "machineType",
            "acceleratorType",
            "acceleratorCount",
            "tpuTopology",
            "reservationAffinity",
        ],
        "container_spec" => &["imageUri", "command", "args", "env"],
        "python_package_spec" => &[
            "executorImageUri",
            "packageUris",
            "pythonModule",
            "args",
            "env",
        ],
        "env" => &["name", "value"],
        "disk_spec" => &["bootDiskType", "bootDiskSizeGb"],
        "scheduling" => &[
            "timeout",
            "restartJobOnWorkerRestart",
            "strategy",
            "disableRetries",
            "maxWaitDuration",
        ],
        "base_output_directory" => &["outputUriPrefix"],
        "encryption_spec" => &["kmsKeyName"],
        "nfs_mounts" => &["server", "path", "mountPoint"],
        "reservation_affinity" => &["reservationAffinityType", "key", "values"],
        _ => &[],
    }
}

/// The message type of field `f` (camelCase) of `message`, for nested checks.
fn child(message: &str, f: &str) -> Option<&'static str> {
    Some(match (message, f) {
        ("custom_job", "jobSpec") => "job_spec",
        ("custom_job", "encryptionSpec") => "encryption_spec",
        ("job_spec", "workerPoolSpecs") => "worker_pool_spec",
        ("job_spec", "scheduling") => "scheduling",
        ("job_spec", "baseOutputDirectory") => "base_output_directory",
        ("worker_pool_spec", "containerSpec") => "container_spec",
        ("worker_pool_spec", "pythonPackageSpec") => "python_package_spec",
        ("worker_pool_spec", "machineSpec") => "machine_spec",
        ("worker_pool_spec", "diskSpec") => "disk_spec",
        ("worker_pool_spec", "nfsMounts") => "nfs_mounts",
        ("container_spec" | "python_package_spec", "env") => "env",
        ("machine_spec", "reservationAffinity") => "reservation_affinity",
        _ => return None,
    })
}

/// Checks field names recursively and returns the message with camelCase keys.
fn normalize(v: &Value, message: &str, at: &str) -> Result<Value, String> {
    let Value::Object(m) = v else {
        return Err(format!(
            "Invalid JSON payload received. Invalid value at '{at}': expected an object."
        ));
    };
    let known = fields_of(message);
    let mut out = Map::new();
    for (k, x) in m {
        let c = camel(k);
        if !known.contains(&c.as_str()) {
            return Err(format!(
                "Invalid JSON payload received. Unknown name \"{k}\" at '{at}': Cannot find field."
            ));
        }
        let x = match (child(message, &c), x) {
            (Some(sub), Value::Array(items)) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, it)| normalize(it, sub, &format!("{at}.{}[{i}]", snake(&c))))
                    .collect::<Result<_, _>>()?,
            ),
            (Some(sub), x) => normalize(x, sub, &format!("{at}.{}", snake(&c)))?,
            (None, x) => x.clone(),
        };
        out.insert(c, x);
    }
    Ok(Value::Object(out))
}

fn snake(camel: &str) -> String {
    let mut out = String::new();
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn label_ok(k: &str, v: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
    !k.is_empty()
        && k.len() <= 63
        && k.starts_with(|c: char| c.is_ascii_lowercase())
        && k.chars().all(ok_char)
        && v.len() <= 63
        && v.chars().all(ok_char)
}

fn is_duration(s: &str) -> bool {
    let Some(d) = s.strip_suffix('s') else {
        return false;
    };
    let (a, b) = d.split_once('.').unwrap_or((d, "0"));
    !a.is_empty()
        && a.chars().all(|c| c.is_ascii_digit())
        && !b.is_empty()
        && b.len() <= 9
        && b.chars().all(|c| c.is_ascii_digit())
}

/// What Vertex would refuse in a (normalized) CustomJob.
fn check(job: &Value) -> Result<(), String> {
    let s = |p: &str| job.pointer(p).and_then(Value::as_str).unwrap_or("");
    if s("/displayName").trim().is_empty() {
        return Err("CustomJob.display_name is required.".into());
    }
    let pools = job
        .pointer("/jobSpec/workerPoolSpecs")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if pools.is_empty() {
        return Err("CustomJob.job_spec.worker_pool_specs is required.".into());
    }
    if pools
        .iter()
        .all(|p| p.as_object().is_some_and(Map::is_empty))
    {
        return Err("At least one worker pool must be specified.".into());
    }
    for (i, p) in pools.iter().enumerate() {
        if p.as_object().is_some_and(Map::is_empty) {
            continue;
        }
        let at = format!("job_spec.worker_pool_specs[{i}]");
        if p.pointer("/machineSpec/machineType")
            .and_then(Value::as_str)
            .is_none_or(|t| t.trim().is_empty())
        {
            return Err(format!("{at}.machine_spec.machine_type is required."));
        }
        let image = p.pointer("/containerSpec/imageUri").and_then(Value::as_str);
        let python = p.get("pythonPackageSpec");
        match (image, python) {
            (Some(i), None) if !i.trim().is_empty() => {}
            (None, Some(_)) if p.get("containerSpec").is_none() => {}
            (_, Some(_)) => {
                return Err(format!(
                    "{at}: only one of container_spec and python_package_spec may be set."
                ));
            }
            _ => return Err(format!("{at}.container_spec.image_uri is required.")),
        }
        if let Some(env) = p.pointer("/containerSpec/env").and_then(Value::as_array) {
            for (k, e) in env.iter().enumerate() {
                if e.get("name")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    return Err(format!("{at}.container_spec.env[{k}].name is required."));
                }
            }
        }
        match p.get("replicaCount") {
            None => {}
            Some(Value::Number(n)) if n.as_u64().is_some() => {}
            Some(Value::String(s)) if s.parse::<u64>().is_ok() => {}
            Some(_) => {
                return Err(format!(
                    "Invalid JSON payload received. Invalid value at '{at}.replica_count'."
                ));
            }
        }
    }
    for key in ["timeout", "maxWaitDuration"] {
        if let Some(v) = job.pointer(&format!("/jobSpec/scheduling/{key}"))
            && !v.as_str().is_some_and(is_duration)
        {
            return Err(format!(
                "Invalid JSON payload received. Invalid value at 'custom_job.job_spec.scheduling.{}' (type.googleapis.com/google.protobuf.Duration), {v}",
                snake(key)
            ));
        }
    }
    if let Some(labels) = job.get("labels") {
        let Value::Object(m) = labels else {
            return Err(
                "Invalid JSON payload received. Invalid value at 'custom_job.labels'.".into(),
            );
        };
        if m.len() > 64 {
            return Err("CustomJob.labels: at most 64 labels.".into());
        }
        for (k, v) in m {
            let v = v.as_str().unwrap_or("\u{0}");
            if !label_ok(k, v) {
                return Err(format!(
                    "Label key or value is invalid: \"{k}\": \"{v}\". Label keys must start with a lowercase letter and contain only lowercase letters, numbers, underscores and dashes (at most 63); values likewise, possibly empty."
                ));
            }
        }
    }
    Ok(())
}

async fn create(
    State(f): State<Fake>,
    UrlPath((project, location)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    const OP: &str = "customJobs.create";
    if let Err(r) = f.admit(OP, None, &headers) {
        return *r;
    }
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return f.answer(
                OP,
                None,
                google(400, &format!("Invalid JSON payload received. {e}")),
            );
        }
    };
    let job =
        match normalize(&parsed, "custom_job", "custom_job").and_then(|j| check(&j).map(|()| j)) {
            Ok(j) => j,
            Err(m) => return f.answer(OP, None, google(400, &m)),
        };
    let mut i = f.inner.lock().expect("fake");
    i.next_id += 1;
    let id = i.next_id.to_string();
    let script = i.script.clone();
    let Value::Object(body) = job else {
        unreachable!("normalize returns an object");
    };
    let j = Job {
        id: id.clone(),
        parent: format!("projects/{project}/locations/{location}"),
        body,
        created: Instant::now(),
        created_at: Utc::now(),
        cancelled: None,
        script,
    };
    let out = j.render();
    i.bodies.push(parsed);
    i.jobs.insert(id.clone(), j);
    drop(i);
    f.answer(OP, Some(&id), axum::Json(out).into_response())
}

fn find<'a>(i: &'a mut Inner, project: &str, location: &str, id: &str) -> Option<&'a mut Job> {
    let parent = format!("projects/{project}/locations/{location}");
    i.jobs.get_mut(id).filter(|j| j.parent == parent)
}

async fn get_job(
    State(f): State<Fake>,
    UrlPath((project, location, id)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    const OP: &str = "customJobs.get";
    if let Err(r) = f.admit(OP, Some(&id), &headers) {
        return *r;
    }
    let mut i = f.inner.lock().expect("fake");
    let r = match find(&mut i, &project, &location, &id) {
        Some(j) => axum::Json(j.render()).into_response(),
        None => google(
            404,
            &format!(
                "The CustomJob \"projects/{project}/locations/{location}/customJobs/{id}\" does not exist."
            ),
        ),
    };
    drop(i);
    f.answer(OP, Some(&id), r)
}

async fn cancel(
    State(f): State<Fake>,
    UrlPath((project, location, job)): UrlPath<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    const OP: &str = "customJobs.cancel";
    let Some(id) = job.strip_suffix(":cancel") else {
        return google(404, "The requested URL was not found on this server.");
    };
    if let Err(r) = f.admit(OP, Some(id), &headers) {
        return *r;
    }
    let mut i = f.inner.lock().expect("fake");
    let r = match find(&mut i, &project, &location, id) {
        None => google(404, &format!("The CustomJob {id} does not exist.")),
        Some(j) => {
            let e = j.elapsed();
            let state = j.state_at(e);
            match state {
                "JOB_STATE_SUCCEEDED"
                | "JOB_STATE_FAILED"
                | "JOB_STATE_EXPIRED"
                | "JOB_STATE_CANCELLED" => google_with(
                    400,
                    "FAILED_PRECONDITION",
                    &format!("Cannot cancel CustomJob {} in state {state}.", j.name()),
                ),
                _ => {
                    j.cancelled.get_or_insert(e);
                    axum::Json(json!({})).into_response()
                }
            }
        }
    };
    drop(i);
    f.answer(OP, Some(id), r)
}

/// `labels.K="V"` terms joined by ` AND ` (what hoist sends); `None` for anything else.
fn label_filter(filter: &str) -> Option<Vec<(String, String)>> {
    if filter.trim().is_empty() {
        return Some(Vec::new());
    }
    filter
        .split(" AND ")
        .map(|t| {
            let (k, v) = t.trim().strip_prefix("labels.")?.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

async fn list(
    State(f): State<Fake>,
    UrlPath((project, location)): UrlPath<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    const OP: &str = "customJobs.list";
    if let Err(r) = f.admit(OP, None, &headers) {
        return *r;
    }
    let filter = q.get("filter").cloned().unwrap_or_default();
    let Some(terms) = label_filter(&filter) else {
        return f.answer(
            OP,
            None,
            google(
                400,
                &format!("Unsupported filter: {filter} (the fake knows labels.K=\"V\" AND …)"),
            ),
        );
    };
    let i = f.inner.lock().expect("fake");
    let parent = format!("projects/{project}/locations/{location}");
    let all: Vec<Value> = i
        .jobs
        .values()
        .filter(|j| j.parent == parent)
        .filter(|j| {
            terms.iter().all(|(k, v)| {
                j.body
                    .get("labels")
                    .and_then(|l| l.get(k))
                    .and_then(Value::as_str)
                    == Some(v)
            })
        })
        .map(Job::render)
        .collect();
    let size = q
        .get("pageSize")
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(usize::MAX)
        .min(i.script.page_size.max(1));
    drop(i);
    let from = q
        .get("pageToken")
        .and_then(|t| t.strip_prefix("jobs-"))
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(0);
    let page: Vec<Value> = all.iter().skip(from).take(size).cloned().collect();
    let mut out = json!({"customJobs": page});
    if from + size < all.len() {
        out["nextPageToken"] = json!(format!("jobs-{}", from + size));
    }
    f.answer(OP, None, axum::Json(out).into_response())
}

/// The parts of an `ml_job` entries filter: job id, and the timestamp bound
/// (inclusive or not).
/// A timestamp bound and whether it is inclusive.
type Since = Option<(DateTime<Utc>, bool)>;

fn entries_filter(filter: &str) -> Option<(String, Since)> {
    let mut ml = false;
    let mut job = None;
    let mut since = None;
    for t in filter.split(" AND ") {
        let t = t.trim();
        let unq = |v: &str| v.trim().trim_matches('"').to_string();
        if let Some(v) = t.strip_prefix("resource.type=") {
            ml = unq(v) == "ml_job";
        } else if let Some(v) = t.strip_prefix("resource.labels.job_id=") {
            job = Some(unq(v));
        } else if let Some(v) = t.strip_prefix("timestamp>=") {
            since = Some((
                DateTime::parse_from_rfc3339(&unq(v))
                    .ok()?
                    .with_timezone(&Utc),
                true,
            ));
        } else if let Some(v) = t.strip_prefix("timestamp>") {
            since = Some((
                DateTime::parse_from_rfc3339(&unq(v))
                    .ok()?
                    .with_timezone(&Utc),
                false,
            ));
        } else {
            return None;
        }
    }
    ml.then_some(())?;
    Some((job?, since))
}

async fn entries(State(f): State<Fake>, headers: HeaderMap, body: Bytes) -> Response {
    const OP: &str = "entries.list";
    if let Err(r) = f.admit(OP, None, &headers) {
        return *r;
    }
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(project) = req
        .get("resourceNames")
        .and_then(Value::as_array)
        .and_then(|r| r.first())
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("projects/"))
        .map(str::to_string)
    else {
        return f.answer(
            OP,
            None,
            google(
                400,
                "resourceNames: at least one resource name is required.",
            ),
        );
    };
    let filter = req.get("filter").and_then(Value::as_str).unwrap_or("");
    let Some((job_id, since)) = entries_filter(filter) else {
        return f.answer(
            OP,
            None,
            google(400, &format!("Unsupported filter: {filter}")),
        );
    };
    if req.get("orderBy").and_then(Value::as_str) != Some("timestamp asc") {
        return f.answer(
            OP,
            Some(&job_id),
            google(400, "the fake serves orderBy \"timestamp asc\" only"),
        );
    }
    let i = f.inner.lock().expect("fake");
    let all: Vec<Value> = i
        .jobs
        .get(&job_id)
        .map(|j| j.entries(&project))
        .unwrap_or_default()
        .into_iter()
        .filter(|(t, _)| match since {
            Some((s, true)) => *t >= s,
            Some((s, false)) => *t > s,
            None => true,
        })
        .map(|(_, e)| e)
        .collect();
    let size = req
        .get("pageSize")
        .and_then(Value::as_u64)
        .map_or(50, |n| n as usize)
        .clamp(1, 1000)
        .min(i.script.page_size.max(1));
    drop(i);
    let from = req
        .get("pageToken")
        .and_then(Value::as_str)
        .and_then(|t| t.strip_prefix("entries-"))
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(0);
    let page: Vec<Value> = all.iter().skip(from).take(size).cloned().collect();
    let mut out = json!({"entries": page});
    if from + size < all.len() {
        out["nextPageToken"] = json!(format!("entries-{}", from + size));
    }
    f.answer(OP, Some(&job_id), axum::Json(out).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_checks() {
        let ok = json!({
            "displayName": "x",
            "jobSpec": {"workerPoolSpecs": [{"machineSpec": {"machineType": "n1"}, "replicaCount": "1", "containerSpec": {"imageUri": "gcr.io/p/i"}}, {}]},
            "labels": {"hoist-run-id": "abc"},
        });
        let n = normalize(&ok, "custom_job", "custom_job").unwrap();
        assert!(check(&n).is_ok());
        let snake = json!({"display_name": "x", "job_spec": {"worker_pool_specs": [{"machine_spec": {"machine_type": "n1"}, "container_spec": {"image_uri": "i"}}]}});
        assert!(check(&normalize(&snake, "custom_job", "custom_job").unwrap()).is_ok());
        let unknown = json!({"displayName": "x", "jobSpec": {"workerPoolSpecs": [{"machineSpec": {"machineTyp": "n1"}}]}});
        let e = normalize(&unknown, "custom_job", "custom_job").unwrap_err();
        assert!(e.contains("Unknown name \"machineTyp\" at 'custom_job.job_spec.worker_pool_specs[0].machine_spec'"), "{e}");
        let no_image = json!({"displayName": "x", "jobSpec": {"workerPoolSpecs": [{"machineSpec": {"machineType": "n1"}, "containerSpec": {}}]}});
        let e = check(&normalize(&no_image, "custom_job", "custom_job").unwrap()).unwrap_err();
        assert!(e.contains("image_uri is required"), "{e}");
        let bad_label = json!({"displayName": "x", "jobSpec": {"workerPoolSpecs": [{"machineSpec": {"machineType": "n1"}, "containerSpec": {"imageUri": "i"}}]}, "labels": {"Team": "x"}});
        assert!(check(&normalize(&bad_label, "custom_job", "custom_job").unwrap()).is_err());
        assert!(is_duration("3600s") && is_duration("1.5s") && !is_duration("3600"));
        assert_eq!(
            label_filter("labels.hoist-run-id=\"a1\" AND labels.x=y"),
            Some(vec![
                ("hoist-run-id".into(), "a1".into()),
                ("x".into(), "y".into())
            ])
        );
        assert!(entries_filter("resource.type=\"ml_job\" AND resource.labels.job_id=\"7\" AND timestamp>=\"2025-01-01T00:00:00Z\"").is_some());
        assert_eq!(form("a=b%20c&d=e+f")["a"], "b c");
    }

    #[tokio::test]
    async fn a_request_without_a_token_is_unauthenticated() {
        let fake = FakeVertex::start(Script::default()).await.unwrap();
        let http = reqwest_free_get(&fake).await;
        assert_eq!(http, 401);
        assert_eq!(fake.calls().count("customJobs.list"), 1);
    }

    /// A request without a token: the fake refuses it (no HTTP client here: a raw
    /// HTTP/1.1 request over TCP).
    async fn reqwest_free_get(fake: &FakeVertex) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = fake.url().trim_start_matches("http://").to_string();
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(
            format!("GET /v1/projects/p/locations/l/customJobs HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}
