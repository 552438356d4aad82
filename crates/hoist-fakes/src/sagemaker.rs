//! SageMaker (JSON 1.1, `X-Amz-Target: SageMaker.*`) and CloudWatch Logs
//! (`Logs_20140328.*`) on one server, for exactly the calls hoist's SageMaker runner
//! makes: `CreateTrainingJob`, `DescribeTrainingJob`, `StopTrainingJob`,
//! `ListTrainingJobs`, `ListTags`, `DescribeLogStreams`, `GetLogEvents`; and STS
//! `GetCallerIdentity` (the agent's start-up check and role-name expansion), so that an
//! agent can run against this fake alone.
//!
//! Faithful where the runner depends on it:
//! - every request must be a JSON 1.1 POST with a SigV4 `Authorization` header of the
//!   right shape for its service (`…/sagemaker/aws4_request` or `…/logs/aws4_request`,
//!   `SignedHeaders`, a 64-hex `Signature`) and `X-Amz-Date` (403
//!   `MissingAuthenticationTokenException`/`IncompleteSignatureException` otherwise; the
//!   signature itself is not verified);
//! - `CreateTrainingJob` checks the body as SageMaker does (required members, the
//!   `TrainingJobName` and `RoleArn` patterns, `S3OutputPath`, `Tags`' shape and
//!   limits, `Environment`'s limits, spot training's `MaxWaitTimeInSeconds`) and answers
//!   `ValidationException` listing every problem; a taken name is `ResourceInUse`;
//! - a job goes through the [`Script`]'s secondary statuses (`InProgress` with
//!   `Starting`, `Downloading`, `Training`, `Interrupted`…) as time passes, each listed in
//!   `SecondaryStatusTransitions`, then ends as scripted (`Completed`, `Failed` with a
//!   `FailureReason`, `Stopped` with `MaxWaitTimeExceeded`…); `StopTrainingJob` makes it
//!   `Stopping`, then `Stopped`;
//! - while training, the script's log lines appear in one CloudWatch stream per
//!   instance (`<job>/algo-N-<epoch>`), paged by `GetLogEvents` (`nextForwardToken`
//!   returned unchanged at the end) and `DescribeLogStreams` (`nextToken`);
//! - errors come in the services' shapes: `{"__type": …, "message"|"Message": …}`
//!   with status 400 (500 for `InternalFailure`), `x-amzn-ErrorType` on throttling;
//!   `DescribeTrainingJob` of an unknown job is `ResourceNotFound`.
//!
//! [`Script::faults`] injects errors (throttling, quotas, validation, internal failures)
//! for the first calls of an operation.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::{Calls, Served};

/// How a scripted job ends when it is not stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    Completed,
    /// `Failed` with this `FailureReason`.
    Failed(String),
    /// `Stopped` with this secondary status (`MaxRuntimeExceeded`,
    /// `MaxWaitTimeExceeded`, `Interrupted`, `Stopped`).
    Stopped(String),
}

/// An error answered instead of an operation's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// 400 `ThrottlingException` "Rate exceeded".
    Throttling,
    /// 400 `ResourceLimitExceeded` (an instance quota).
    ResourceLimitExceeded,
    /// 400 `ValidationException` with this message.
    Validation(String),
    /// 500 `InternalFailure`.
    InternalFailure,
}

/// The first `times` calls of `operation` answer `error`.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub operation: String,
    pub times: usize,
    pub error: FaultKind,
}

/// How every job of the fake progresses.
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    /// The secondary statuses of an `InProgress` job, in order, with how long each
    /// lasts. Log lines are written during the `Training` ones.
    pub phases: Vec<(String, Duration)>,
    pub end: End,
    /// Written while training, spread evenly over the training time (the first at its
    /// start), to every stream.
    pub log_lines: Vec<String>,
    /// Log streams (instances) per job.
    pub streams: usize,
    /// The most events in one `GetLogEvents` page (CloudWatch: 10,000).
    pub page_size: usize,
    /// The most streams in one `DescribeLogStreams` page (CloudWatch: 50).
    pub streams_page_size: usize,
    /// How long `Stopping` lasts after `StopTrainingJob`.
    pub stopping: Duration,
    pub faults: Vec<Fault>,
}

impl Default for Script {
    /// A short realistic job: starting ~200 ms, training ~300 ms writing three lines,
    /// uploading, completed.
    fn default() -> Script {
        Script {
            phases: vec![
                ("Starting".into(), Duration::from_millis(150)),
                ("Downloading".into(), Duration::from_millis(50)),
                ("Training".into(), Duration::from_millis(300)),
                ("Uploading".into(), Duration::from_millis(50)),
            ],
            end: End::Completed,
            log_lines: vec![
                "epoch 1 loss=0.9".into(),
                "epoch 2 loss=0.5".into(),
                "epoch 3 loss=0.2".into(),
            ],
            streams: 1,
            page_size: 10_000,
            streams_page_size: 50,
            stopping: Duration::from_millis(200),
            faults: Vec::new(),
        }
    }
}

impl Script {
    /// Training lasts `d` (the other phases as by default).
    pub fn training(mut self, d: Duration) -> Script {
        for (s, dur) in &mut self.phases {
            if s == "Training" {
                *dur = d;
            }
        }
        self
    }

    pub fn lines<S: Into<String>>(mut self, lines: impl IntoIterator<Item = S>) -> Script {
        self.log_lines = lines.into_iter().map(Into::into).collect();
        self
    }

    pub fn ending(mut self, end: End) -> Script {
        self.end = end;
        self
    }

    pub fn phases(mut self, phases: &[(&str, Duration)]) -> Script {
        self.phases = phases.iter().map(|(s, d)| (s.to_string(), *d)).collect();
        self
    }

    pub fn streams(mut self, n: usize) -> Script {
        self.streams = n.max(1);
        self
    }

    pub fn page_size(mut self, n: usize) -> Script {
        self.page_size = n.max(1);
        self
    }

    pub fn fault(mut self, operation: &str, times: usize, error: FaultKind) -> Script {
        self.faults.push(Fault {
            operation: operation.into(),
            times,
            error,
        });
        self
    }
}

const LOG_GROUP: &str = "/aws/sagemaker/TrainingJobs";
const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";

struct Job {
    name: String,
    arn: String,
    request: Value,
    created: Instant,
    created_at: DateTime<Utc>,
    /// Since creation, when `StopTrainingJob` came (by hoist or "outside").
    stop_at: Option<Duration>,
}

/// What a job looks like at some moment.
struct View {
    status: &'static str,
    secondary: String,
    /// (status, since creation)
    transitions: Vec<(String, Duration)>,
    failure_reason: Option<String>,
    /// Lines written so far, with when (since creation).
    lines: Vec<(usize, Duration)>,
    training_started: Option<Duration>,
}

impl Script {
    fn view(&self, elapsed: Duration, stop_at: Option<Duration>) -> View {
        let total: Duration = self.phases.iter().map(|(_, d)| *d).sum();
        let stop = stop_at.filter(|s| *s < total);
        let cutoff = elapsed.min(stop.unwrap_or(total));
        let mut transitions = Vec::new();
        let mut start = Duration::ZERO;
        let mut current = self
            .phases
            .first()
            .map(|(s, _)| s.clone())
            .unwrap_or_else(|| "Starting".into());
        // Training-time → wall-time (since creation) segments.
        let mut training: Vec<(Duration, Duration)> = Vec::new();
        for (s, d) in &self.phases {
            if start <= cutoff && (start < cutoff || transitions.is_empty()) {
                transitions.push((s.clone(), start));
                current = s.clone();
            }
            if s == "Training" {
                training.push((start, *d));
            }
            start += *d;
        }
        let training_total: Duration = training.iter().map(|(_, d)| *d).sum();
        let n = self.log_lines.len();
        let mut lines = Vec::new();
        let mut training_started = None;
        for k in 0..n {
            // Training time of line k.
            let t = if n == 0 {
                Duration::ZERO
            } else {
                training_total.mul_f64(k as f64 / n as f64)
            };
            // Its wall time.
            let mut acc = Duration::ZERO;
            let mut wall = None;
            for (s, d) in &training {
                if t < acc + *d || (*d == Duration::ZERO && t == acc) {
                    wall = Some(*s + (t - acc));
                    break;
                }
                acc += *d;
            }
            if let Some(w) = wall
                && w <= cutoff
                && (w < cutoff || cutoff == total)
            {
                lines.push((k, w));
            }
        }
        if let Some((s, _)) = training.first()
            && *s <= cutoff
        {
            training_started = Some(*s);
        }
        let (status, secondary, failure_reason) = match stop {
            Some(s) if elapsed >= s => {
                transitions.push(("Stopping".into(), s));
                if elapsed >= s + self.stopping {
                    transitions.push(("Stopped".into(), s + self.stopping));
                    ("Stopped", "Stopped".to_string(), None)
                } else {
                    ("Stopping", "Stopping".to_string(), None)
                }
            }
            _ if elapsed >= total => {
                let (status, sec, reason) = match &self.end {
                    End::Completed => ("Completed", "Completed".to_string(), None),
                    End::Failed(r) => ("Failed", "Failed".to_string(), Some(r.clone())),
                    End::Stopped(sec) => ("Stopped", sec.clone(), None),
                };
                transitions.push((sec.clone(), total));
                (status, sec, reason)
            }
            _ => ("InProgress", current, None),
        };
        View {
            status,
            secondary,
            transitions,
            failure_reason,
            lines,
            training_started,
        }
    }
}

struct State_ {
    script: Script,
    jobs: BTreeMap<String, Job>,
    faults_used: BTreeMap<String, usize>,
}

#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<State_>>,
    calls: Calls,
}

/// The fake, serving until dropped.
pub struct FakeSageMaker {
    served: Served,
    shared: Shared,
}

impl FakeSageMaker {
    /// Serves SageMaker and CloudWatch Logs on 127.0.0.1 (an ephemeral port).
    pub async fn start(script: Script) -> std::io::Result<FakeSageMaker> {
        let shared = Shared {
            state: Arc::new(Mutex::new(State_ {
                script,
                jobs: BTreeMap::new(),
                faults_used: BTreeMap::new(),
            })),
            calls: Calls::default(),
        };
        let app = axum::Router::new()
            .route("/", post(handle))
            .with_state(shared.clone());
        let served = Served::start(app).await?;
        Ok(FakeSageMaker { served, shared })
    }

    /// `http://127.0.0.1:PORT`: both services' endpoint.
    pub fn url(&self) -> String {
        self.served.url()
    }

    pub fn calls(&self) -> Calls {
        self.shared.calls.clone()
    }

    /// The `CreateTrainingJob` body received for `name`.
    pub fn request(&self, name: &str) -> Option<Value> {
        let st = self.shared.state.lock().expect("state");
        st.jobs.get(name).map(|j| j.request.clone())
    }

    /// Every job's name, in creation order.
    pub fn jobs(&self) -> Vec<String> {
        let st = self.shared.state.lock().expect("state");
        let mut v: Vec<(&Instant, &String)> =
            st.jobs.values().map(|j| (&j.created, &j.name)).collect();
        v.sort();
        v.into_iter().map(|(_, n)| n.clone()).collect()
    }

    /// Stops `name` as someone other than hoist would (the console): it goes
    /// `Stopping`, then `Stopped`. False when there is no such job.
    pub fn stop_outside(&self, name: &str) -> bool {
        let mut st = self.shared.state.lock().expect("state");
        match st.jobs.get_mut(name) {
            Some(j) => {
                j.stop_at.get_or_insert(j.created.elapsed());
                true
            }
            None => false,
        }
    }

    /// Replaces the script (jobs already created follow the new one too).
    pub fn set_script(&self, script: Script) {
        self.shared.state.lock().expect("state").script = script;
    }
}

fn error(status: u16, code: &str, message_key: &str, message: &str) -> Response {
    let body = json!({"__type": code, message_key: message}).to_string();
    let short = code.rsplit('#').next().unwrap_or(code).to_string();
    (
        StatusCode::from_u16(status).expect("status"),
        [
            ("content-type", "application/x-amz-json-1.1".to_string()),
            ("x-amzn-errortype", short),
        ],
        body,
    )
        .into_response()
}

fn ok(v: Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/x-amz-json-1.1")],
        v.to_string(),
    )
        .into_response()
}

fn fault_response(kind: &FaultKind) -> Response {
    match kind {
        FaultKind::Throttling => error(400, "ThrottlingException", "message", "Rate exceeded"),
        FaultKind::ResourceLimitExceeded => error(
            400,
            "ResourceLimitExceeded",
            "Message",
            "The account-level service limit 'ml.m5.xlarge for training job usage' is 0 Instances, with current utilization of 0 Instances and a request delta of 1 Instances. Please use AWS Service Quotas to request an increase for this quota.",
        ),
        FaultKind::Validation(m) => error(
            400,
            "com.amazon.coral.validate#ValidationException",
            "message",
            m,
        ),
        FaultKind::InternalFailure => error(
            500,
            "InternalFailure",
            "message",
            "We encountered an internal error. Please try again.",
        ),
    }
}

/// Checks the SigV4 `Authorization` header's shape for `service`.
fn check_auth(headers: &HeaderMap, service: &str) -> Result<(), Box<Response>> {
    let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Err(Box::new(error(
            403,
            "MissingAuthenticationTokenException",
            "message",
            "Missing Authentication Token",
        )));
    };
    let incomplete = |why: &str| {
        Box::new(error(
            403,
            "IncompleteSignatureException",
            "message",
            &format!(
                "{why} (Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…)"
            ),
        ))
    };
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or_else(|| incomplete("not a SigV4 Authorization header"))?;
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let credential = credential.ok_or_else(|| incomplete("no Credential"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[0].is_empty() || scope[1].len() != 8 || scope[4] != "aws4_request"
    {
        return Err(incomplete("a malformed Credential scope"));
    }
    if scope[3] != service {
        return Err(Box::new(error(
            403,
            "InvalidSignatureException",
            "message",
            &format!(
                "Credential should be scoped to correct service: '{service}', not '{}'",
                scope[3]
            ),
        )));
    }
    let signed = signed.ok_or_else(|| incomplete("no SignedHeaders"))?;
    if !signed.split(';').any(|h| h == "host") || !signed.split(';').any(|h| h == "x-amz-date") {
        return Err(incomplete("SignedHeaders must include host and x-amz-date"));
    }
    let signature = signature.ok_or_else(|| incomplete("no Signature"))?;
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(incomplete("a malformed Signature"));
    }
    if headers.get("x-amz-date").is_none() {
        return Err(incomplete("no X-Amz-Date"));
    }
    Ok(())
}

/// STS `GetCallerIdentity` (the query protocol: a form POST, an XML answer), which the
/// agent's `aws` environment calls when it starts and the runner to expand a role name:
/// answered here so that an agent can run against this fake alone (`hoist bench`).
fn is_sts_caller_identity(headers: &HeaderMap, body: &[u8]) -> bool {
    let form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    form && String::from_utf8_lossy(body)
        .split('&')
        .any(|p| p == "Action=GetCallerIdentity")
}

fn sts_caller_identity(shared: &Shared, headers: &HeaderMap) -> Response {
    if let Err(resp) = check_auth(headers, "sts") {
        shared
            .calls
            .record("GetCallerIdentity", None, resp.status().as_u16());
        return *resp;
    }
    shared.calls.record("GetCallerIdentity", None, 200);
    let xml = format!(
        "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
<GetCallerIdentityResult><Arn>arn:aws:iam::{ACCOUNT}:user/hoist-fake</Arn>\
<UserId>AIDAHOISTFAKE</UserId><Account>{ACCOUNT}</Account></GetCallerIdentityResult>\
<ResponseMetadata><RequestId>00000000-0000-0000-0000-000000000000</RequestId></ResponseMetadata>\
</GetCallerIdentityResponse>"
    );
    ([("content-type", "text/xml")], xml).into_response()
}

async fn handle(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if target.is_empty() && is_sts_caller_identity(&headers, &body) {
        return sts_caller_identity(&shared, &headers);
    }
    let (service, operation) = match target.split_once('.') {
        Some(("SageMaker", op)) => ("sagemaker", op.to_string()),
        Some(("Logs_20140328", op)) => ("logs", op.to_string()),
        _ => {
            shared.calls.record("unknown", None, 400);
            return error(
                400,
                "UnknownOperationException",
                "message",
                &format!("unknown X-Amz-Target {target:?}"),
            );
        }
    };
    let respond = |resp: Response, target: Option<&str>| {
        shared
            .calls
            .record(&operation, target, resp.status().as_u16());
        resp
    };
    let json_ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-amz-json-1.1"));
    if !json_ct {
        return respond(
            error(
                400,
                "SerializationException",
                "message",
                "expected Content-Type: application/x-amz-json-1.1",
            ),
            None,
        );
    }
    if let Err(resp) = check_auth(&headers, service) {
        return respond(*resp, None);
    }
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return respond(
                error(
                    400,
                    "SerializationException",
                    "message",
                    "the body is not a JSON object",
                ),
                None,
            );
        }
    };
    let target_name = req
        .get("TrainingJobName")
        .or_else(|| req.get("logStreamName"))
        .or_else(|| req.get("ResourceArn"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut st = shared.state.lock().expect("state");
    // Injected faults.
    let fault = st
        .script
        .faults
        .iter()
        .find(|f| f.operation == operation)
        .cloned();
    if let Some(f) = fault {
        let used = st.faults_used.entry(operation.clone()).or_insert(0);
        if *used < f.times {
            *used += 1;
            drop(st);
            return respond(fault_response(&f.error), target_name.as_deref());
        }
    }
    let resp = match operation.as_str() {
        "CreateTrainingJob" => create(&mut st, req),
        "DescribeTrainingJob" => describe(&st, &req),
        "StopTrainingJob" => stop(&mut st, &req),
        "ListTrainingJobs" => list_jobs(&st, &req),
        "ListTags" => list_tags(&st, &req),
        "DescribeLogStreams" => describe_streams(&st, &req),
        "GetLogEvents" => get_events(&st, &req),
        other => error(
            400,
            "UnknownOperationException",
            "message",
            &format!("the fake does not implement {other}"),
        ),
    };
    drop(st);
    respond(resp, target_name.as_deref())
}

fn validation(problems: &[String]) -> Response {
    let n = problems.len();
    let message = format!(
        "{n} validation error{} detected: {}",
        if n == 1 { "" } else { "s" },
        problems.join("; ")
    );
    error(
        400,
        "com.amazon.coral.validate#ValidationException",
        "message",
        &message,
    )
}

fn is_job_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

fn is_role_arn(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("arn:aws") else {
        return false;
    };
    let Some((partition_rest, after)) = rest.split_once(":iam::") else {
        return false;
    };
    let Some((account, role)) = after.split_once(":role/") else {
        return false;
    };
    (20..=2048).contains(&s.len())
        && partition_rest
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'-')
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && !role.is_empty()
        && role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@-_/".contains(&b))
}

fn tag_text_ok(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c))
}

/// SageMaker's checks of a `CreateTrainingJob` body.
fn check_create(req: &Value) -> Vec<String> {
    let mut p = Vec::new();
    let fail = |p: &mut Vec<String>, value: &Value, at: &str, constraint: &str| {
        p.push(format!(
            "Value '{}' at '{at}' failed to satisfy constraint: {constraint}",
            match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }
        ));
    };
    match req.get("TrainingJobName") {
        Some(Value::String(s)) if is_job_name(s) => {}
        Some(v) => fail(
            &mut p,
            v,
            "trainingJobName",
            "Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}",
        ),
        None => p.push(
            "Value null at 'trainingJobName' failed to satisfy constraint: Member must not be null"
                .into(),
        ),
    }
    match req.get("RoleArn") {
        Some(Value::String(s)) if is_role_arn(s) => {}
        Some(v) => fail(
            &mut p,
            v,
            "roleArn",
            "Member must satisfy regular expression pattern: ^arn:aws[a-z\\-]*:iam::\\d{12}:role/?[a-zA-Z_0-9+=,.@\\-_/]+$",
        ),
        None => p.push(
            "Value null at 'roleArn' failed to satisfy constraint: Member must not be null".into(),
        ),
    }
    match req.pointer("/OutputDataConfig/S3OutputPath") {
        Some(Value::String(s)) if s.starts_with("s3://") || s.starts_with("https://") => {}
        Some(v) => fail(
            &mut p,
            v,
            "outputDataConfig.s3OutputPath",
            "Member must satisfy regular expression pattern: ^(https|s3)://([^/]+)/?(.*)$",
        ),
        None => p.push("Value null at 'outputDataConfig' failed to satisfy constraint: Member must not be null".into()),
    }
    match req.get("AlgorithmSpecification") {
        Some(Value::Object(a)) => {
            match a.get("TrainingInputMode").and_then(Value::as_str) {
                Some("File" | "Pipe" | "FastFile") => {}
                Some(m) => fail(
                    &mut p,
                    &json!(m),
                    "algorithmSpecification.trainingInputMode",
                    "Member must satisfy enum value set: [Pipe, File, FastFile]",
                ),
                None => p.push("Value null at 'algorithmSpecification.trainingInputMode' failed to satisfy constraint: Member must not be null".into()),
            }
            if a.get("TrainingImage").is_none() && a.get("AlgorithmName").is_none() {
                p.push("You must specify either an AlgorithmName or a TrainingImage in AlgorithmSpecification".into());
            }
            for k in ["ContainerEntrypoint", "ContainerArguments"] {
                if let Some(v) = a.get(k)
                    && !v
                        .as_array()
                        .is_some_and(|l| l.len() <= 100 && l.iter().all(Value::is_string))
                {
                    fail(&mut p, v, &format!("algorithmSpecification.{k}"), "Member must be a list of at most 100 strings");
                }
            }
        }
        _ => p.push("Value null at 'algorithmSpecification' failed to satisfy constraint: Member must not be null".into()),
    }
    match req.get("ResourceConfig") {
        Some(Value::Object(r)) => {
            if !r.get("VolumeSizeInGB").is_some_and(Value::is_u64) {
                p.push("Value null at 'resourceConfig.volumeSizeInGB' failed to satisfy constraint: Member must not be null".into());
            }
            if r.get("InstanceType").is_none() && r.get("InstanceGroups").is_none() {
                p.push(
                    "You must specify either InstanceType or InstanceGroups in ResourceConfig"
                        .into(),
                );
            }
        }
        _ => p.push(
            "Value null at 'resourceConfig' failed to satisfy constraint: Member must not be null"
                .into(),
        ),
    }
    let max_run = req
        .pointer("/StoppingCondition/MaxRuntimeInSeconds")
        .and_then(Value::as_u64);
    let max_wait = req
        .pointer("/StoppingCondition/MaxWaitTimeInSeconds")
        .and_then(Value::as_u64);
    if req.get("EnableManagedSpotTraining") == Some(&Value::Bool(true)) {
        match (max_wait, max_run) {
            (None, _) => {
                p.push("MaxWaitTimeInSeconds is required for managed spot training jobs".into())
            }
            (Some(w), Some(r)) if w < r => p.push(
                "MaxWaitTimeInSeconds must be greater than or equal to MaxRuntimeInSeconds".into(),
            ),
            _ => {}
        }
    }
    match req.get("Tags") {
        None => {}
        Some(Value::Array(tags)) => {
            if tags.len() > 50 {
                p.push("Value at 'tags' failed to satisfy constraint: Member must have length less than or equal to 50".into());
            }
            let mut keys = std::collections::BTreeSet::new();
            for (i, t) in tags.iter().enumerate() {
                let key = t.get("Key").and_then(Value::as_str);
                let value = t.get("Value").and_then(Value::as_str);
                match key {
                    Some(k) if (1..=128).contains(&k.chars().count()) && tag_text_ok(k) && !k.starts_with("aws:") => {
                        if !keys.insert(k.to_string()) {
                            p.push(format!("Duplicate tag key '{k}'"));
                        }
                    }
                    _ => p.push(format!("Value at 'tags.{}.member.key' failed to satisfy constraint: Member must satisfy regular expression pattern: ^([\\p{{L}}\\p{{Z}}\\p{{N}}_.:/=+\\-@]*)$ and length 1-128", i + 1)),
                }
                match value {
                    Some(v) if v.chars().count() <= 256 && tag_text_ok(v) => {}
                    _ => p.push(format!("Value at 'tags.{}.member.value' failed to satisfy constraint: Member must satisfy regular expression pattern: ^([\\p{{L}}\\p{{Z}}\\p{{N}}_.:/=+\\-@]*)$ and length 0-256", i + 1)),
                }
            }
        }
        Some(v) => fail(&mut p, v, "tags", "Member must be a list of tags"),
    }
    match req.get("Environment") {
        None => {}
        Some(Value::Object(env)) => {
            if env.len() > 100 {
                p.push("Value at 'environment' failed to satisfy constraint: Member must have length less than or equal to 100".into());
            }
            for (k, v) in env {
                let key_ok = k.len() <= 512
                    && k.chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !key_ok {
                    p.push(format!("Value '{k}' at 'environment' failed to satisfy constraint: Map keys must satisfy constraints: [Member must satisfy regular expression pattern: [a-zA-Z_][a-zA-Z0-9_]*]"));
                }
                if v.as_str().is_none_or(|s| s.chars().count() > 512) {
                    p.push(format!("Value at 'environment' failed to satisfy constraint: Map value for key '{k}' must be a string of length less than or equal to 512"));
                }
            }
        }
        Some(v) => fail(&mut p, v, "environment", "Member must be a map"),
    }
    p
}

fn create(st: &mut State_, req: Value) -> Response {
    let problems = check_create(&req);
    if !problems.is_empty() {
        return validation(&problems);
    }
    let name = req["TrainingJobName"]
        .as_str()
        .expect("checked")
        .to_string();
    let arn = format!("arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{name}");
    if st.jobs.contains_key(&name) {
        return error(
            400,
            "ResourceInUse",
            "Message",
            &format!(
                "Training job names must be unique within an AWS account and region, and a training job with this name already exists ({arn})"
            ),
        );
    }
    st.jobs.insert(
        name.clone(),
        Job {
            name,
            arn: arn.clone(),
            request: req,
            created: Instant::now(),
            created_at: Utc::now(),
            stop_at: None,
        },
    );
    ok(json!({"TrainingJobArn": arn}))
}

fn epoch(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

fn at(job: &Job, since: Duration) -> DateTime<Utc> {
    job.created_at + chrono::Duration::from_std(since).expect("duration")
}

fn not_found() -> Response {
    error(
        400,
        "ResourceNotFound",
        "Message",
        "Requested resource not found.",
    )
}

fn describe(st: &State_, req: &Value) -> Response {
    let name = req["TrainingJobName"].as_str().unwrap_or_default();
    let Some(job) = st.jobs.get(name) else {
        return not_found();
    };
    let v = st.script.view(job.created.elapsed(), job.stop_at);
    let transitions: Vec<Value> = v
        .transitions
        .iter()
        .enumerate()
        .map(|(i, (s, since))| {
            let mut t = json!({
                "Status": s,
                "StartTime": epoch(at(job, *since)),
                "StatusMessage": status_message(s),
            });
            if let Some((_, next)) = v.transitions.get(i + 1) {
                t["EndTime"] = json!(epoch(at(job, *next)));
            }
            t
        })
        .collect();
    let mut out = Map::new();
    for k in [
        "AlgorithmSpecification",
        "RoleArn",
        "InputDataConfig",
        "OutputDataConfig",
        "ResourceConfig",
        "VpcConfig",
        "StoppingCondition",
        "HyperParameters",
        "Environment",
        "EnableManagedSpotTraining",
        "CheckpointConfig",
        "RetryStrategy",
    ] {
        if let Some(x) = job.request.get(k) {
            out.insert(k.into(), x.clone());
        }
    }
    out.insert("TrainingJobName".into(), json!(job.name));
    out.insert("TrainingJobArn".into(), json!(job.arn));
    out.insert("TrainingJobStatus".into(), json!(v.status));
    out.insert("SecondaryStatus".into(), json!(v.secondary));
    out.insert("CreationTime".into(), json!(epoch(job.created_at)));
    out.insert("LastModifiedTime".into(), json!(epoch(Utc::now())));
    out.insert(
        "SecondaryStatusTransitions".into(),
        Value::Array(transitions),
    );
    out.insert(
        "ModelArtifacts".into(),
        json!({"S3ModelArtifacts": format!(
            "{}/{}/output/model.tar.gz",
            job.request.pointer("/OutputDataConfig/S3OutputPath").and_then(Value::as_str).unwrap_or_default().trim_end_matches('/'),
            job.name
        )}),
    );
    if let Some(s) = v.training_started {
        out.insert("TrainingStartTime".into(), json!(epoch(at(job, s))));
    }
    if let Some(r) = v.failure_reason {
        out.insert("FailureReason".into(), json!(r));
    }
    ok(Value::Object(out))
}

fn status_message(s: &str) -> &'static str {
    match s {
        "Starting" => "Preparing the instances for training",
        "Downloading" => "Downloading input data",
        "Training" => "Training image download completed. Training in progress.",
        "Uploading" => "Uploading generated training model",
        "Interrupted" => "Spot instances were interrupted; waiting for capacity",
        "Completed" => "Training job completed",
        "Failed" => "Training job failed",
        "Stopping" => "Stopping the training job",
        "Stopped" => "The training job was stopped",
        "MaxWaitTimeExceeded" => "Training job exceeded MaxWaitTimeInSeconds",
        "MaxRuntimeExceeded" => "Training job exceeded MaxRuntimeInSeconds",
        _ => "",
    }
}

fn stop(st: &mut State_, req: &Value) -> Response {
    let name = req["TrainingJobName"].as_str().unwrap_or_default();
    let script = st.script.clone();
    let Some(job) = st.jobs.get_mut(name) else {
        return not_found();
    };
    let v = script.view(job.created.elapsed(), job.stop_at);
    if v.status != "InProgress" {
        return error(
            400,
            "com.amazon.coral.validate#ValidationException",
            "message",
            &format!(
                "The request was rejected because the training job is in status {}.",
                v.status
            ),
        );
    }
    job.stop_at = Some(job.created.elapsed());
    ok(json!({}))
}

fn page_token(req: &Value, key: &str) -> usize {
    req.get(key)
        .and_then(Value::as_str)
        .and_then(|t| t.rsplit('/').next()?.parse().ok())
        .unwrap_or(0)
}

fn list_jobs(st: &State_, req: &Value) -> Response {
    let status = req.get("StatusEquals").and_then(Value::as_str);
    let contains = req.get("NameContains").and_then(Value::as_str);
    let max = req.get("MaxResults").and_then(Value::as_u64).unwrap_or(10) as usize;
    let mut all: Vec<(&Job, View)> = st
        .jobs
        .values()
        .map(|j| (j, st.script.view(j.created.elapsed(), j.stop_at)))
        .filter(|(j, v)| {
            status.is_none_or(|s| v.status == s) && contains.is_none_or(|c| j.name.contains(c))
        })
        .collect();
    all.sort_by_key(|(j, _)| std::cmp::Reverse(j.created));
    let from = page_token(req, "NextToken");
    let page: Vec<Value> = all
        .iter()
        .skip(from)
        .take(max)
        .map(|(j, v)| {
            json!({
                "TrainingJobName": j.name,
                "TrainingJobArn": j.arn,
                "CreationTime": epoch(j.created_at),
                "TrainingJobStatus": v.status,
                "SecondaryStatus": v.secondary,
            })
        })
        .collect();
    let mut out = json!({"TrainingJobSummaries": page});
    if from + max < all.len() {
        out["NextToken"] = json!(format!("jobs/{}", from + max));
    }
    ok(out)
}

fn list_tags(st: &State_, req: &Value) -> Response {
    let arn = req["ResourceArn"].as_str().unwrap_or_default();
    let Some(job) = st.jobs.values().find(|j| j.arn == arn) else {
        return error(
            400,
            "com.amazon.coral.validate#ValidationException",
            "message",
            &format!("Resource {arn} does not exist"),
        );
    };
    ok(json!({"Tags": job.request.get("Tags").cloned().unwrap_or(json!([]))}))
}

/// Every stream of every job: (name, job, index).
fn streams(st: &State_) -> Vec<(String, &Job)> {
    let mut out = Vec::new();
    for j in st.jobs.values() {
        let v = st.script.view(j.created.elapsed(), j.stop_at);
        if v.training_started.is_none() {
            continue;
        }
        for i in 0..st.script.streams {
            out.push((
                format!("{}/algo-{}-{}", j.name, i + 1, j.created_at.timestamp()),
                j,
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn logs_not_found(what: &str) -> Response {
    error(
        400,
        "ResourceNotFoundException",
        "message",
        &format!("The specified {what} does not exist."),
    )
}

fn describe_streams(st: &State_, req: &Value) -> Response {
    let all = streams(st);
    if req["logGroupName"].as_str() != Some(LOG_GROUP) || all.is_empty() {
        return logs_not_found("log group");
    }
    let prefix = req["logStreamNamePrefix"].as_str().unwrap_or_default();
    let limit = req["limit"]
        .as_u64()
        .map(|l| l as usize)
        .unwrap_or(50)
        .min(st.script.streams_page_size);
    let matching: Vec<&(String, &Job)> =
        all.iter().filter(|(n, _)| n.starts_with(prefix)).collect();
    let from = page_token(req, "nextToken");
    let page: Vec<Value> = matching
        .iter()
        .skip(from)
        .take(limit)
        .map(|(n, j)| {
            json!({
                "logStreamName": n,
                "creationTime": j.created_at.timestamp_millis(),
                "arn": format!("arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{LOG_GROUP}:log-stream:{n}"),
                "storedBytes": 0,
            })
        })
        .collect();
    let mut out = json!({"logStreams": page});
    if from + limit < matching.len() {
        out["nextToken"] = json!(format!("streams/{}", from + limit));
    }
    ok(out)
}

fn get_events(st: &State_, req: &Value) -> Response {
    if req["logGroupName"].as_str() != Some(LOG_GROUP) {
        return logs_not_found("log group");
    }
    let name = req["logStreamName"].as_str().unwrap_or_default();
    let all = streams(st);
    let Some((_, job)) = all.iter().find(|(n, _)| n == name) else {
        return logs_not_found("log stream");
    };
    let v = st.script.view(job.created.elapsed(), job.stop_at);
    let limit = req["limit"]
        .as_u64()
        .map(|l| l as usize)
        .unwrap_or(10_000)
        .min(st.script.page_size);
    let token = req.get("nextToken").and_then(Value::as_str);
    let from_head = req.get("startFromHead") == Some(&Value::Bool(true));
    let visible = v.lines.len();
    let start = match token {
        Some(_) => page_token(req, "nextToken").min(visible),
        None if from_head => 0,
        None => visible.saturating_sub(limit),
    };
    let end = (start + limit).min(visible);
    let events: Vec<Value> = v.lines[start..end]
        .iter()
        .map(|(k, w)| {
            let ts = at(job, *w).timestamp_millis();
            json!({
                "timestamp": ts,
                "message": st.script.log_lines[*k],
                "ingestionTime": ts + 5,
            })
        })
        .collect();
    // At the end, the token asked with comes back.
    let next = match token {
        Some(t) if end == start => t.to_string(),
        _ => format!("f/{end:020}"),
    };
    ok(json!({
        "events": events,
        "nextForwardToken": next,
        "nextBackwardToken": format!("b/{start:020}"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_runs_its_phases_and_writes_lines_while_training() {
        let s = Script::default().lines(["a", "b", "c"]);
        let v = s.view(Duration::from_millis(10), None);
        assert_eq!((v.status, v.secondary.as_str()), ("InProgress", "Starting"));
        assert!(v.lines.is_empty());
        let v = s.view(Duration::from_millis(210), None);
        assert_eq!(v.secondary, "Training");
        assert_eq!(v.lines.len(), 1);
        let v = s.view(Duration::from_millis(2000), None);
        assert_eq!(v.status, "Completed");
        assert_eq!(v.lines.len(), 3);
        let names: Vec<&str> = v.transitions.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "Starting",
                "Downloading",
                "Training",
                "Uploading",
                "Completed"
            ]
        );
        // Stopped during training: the lines written so far stay, no more come.
        let v = s.view(
            Duration::from_millis(2000),
            Some(Duration::from_millis(210)),
        );
        assert_eq!((v.status, v.secondary.as_str()), ("Stopped", "Stopped"));
        assert_eq!(v.lines.len(), 1);
        let v = s.view(Duration::from_millis(300), Some(Duration::from_millis(210)));
        assert_eq!(v.status, "Stopping");
    }

    #[test]
    fn create_is_checked_as_sagemaker_does() {
        let good = json!({
            "TrainingJobName": "hoist-abc",
            "RoleArn": "arn:aws:iam::123456789012:role/SageMakerRole",
            "OutputDataConfig": {"S3OutputPath": "s3://b/k"},
            "AlgorithmSpecification": {"TrainingImage": "x", "TrainingInputMode": "File"},
            "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 5},
            "StoppingCondition": {"MaxRuntimeInSeconds": 60},
            "Tags": [{"Key": "hoist:run-id", "Value": "abc"}],
            "Environment": {"A": "b"}
        });
        assert!(check_create(&good).is_empty(), "{:?}", check_create(&good));
        let mut bad = good.clone();
        bad["TrainingJobName"] = json!("bad_name");
        bad["RoleArn"] = json!("SageMakerRole");
        bad["Tags"] = json!([{"Key": "a#b", "Value": "x"}, {"Key": "k"}]);
        bad["EnableManagedSpotTraining"] = json!(true);
        let p = check_create(&bad);
        assert_eq!(p.len(), 5, "{p:?}");
    }
}
