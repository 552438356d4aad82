//! A run and its `vertex` queue config → the body of `customJobs.create` (pure: JSON in,
//! JSON out; no client).
//!
//! The queue config is W&B's Python-SDK shape (`spec`: the arguments of
//! `aiplatform.CustomJob`, `run`: those of `CustomJob.run`), each key in snake_case or
//! in the REST API's camelCase. The body is the REST `CustomJob`, camelCase:
//!
//! | queue config | CustomJob (REST v1) |
//! |---|---|
//! | `spec.worker_pool_specs` (every key below camelCased) | `jobSpec.workerPoolSpecs` |
//! | `spec.base_output_dir` | `jobSpec.baseOutputDirectory.outputUriPrefix` |
//! | `spec.staging_bucket` (without `base_output_dir`) | `jobSpec.baseOutputDirectory.outputUriPrefix` = `BUCKET/aiplatform-custom-job-<UTC time to the ms>`, as the Python SDK does |
//! | `spec.display_name` | `displayName` (default: `hoist <run name> <run id>`, at most 128 characters) |
//! | `spec.labels` | `labels`, with hoist's three over them |
//! | `spec.encryption_spec_key_name` | `encryptionSpec.kmsKeyName` |
//! | `spec.persistent_resource_id`, `run.persistent_resource_id` | `jobSpec.persistentResourceId` (`run` wins) |
//! | `run.service_account`, `network`, `reserved_ip_ranges`, `tensorboard`, `enable_web_access`, `enable_dashboard_access`, `experiment`, `experiment_run` | the same names under `jobSpec` |
//! | `run.timeout` (seconds, or `"3600s"`) | `jobSpec.scheduling.timeout` (`"3600s"`) |
//! | `run.restart_job_on_worker_restart`, `disable_retries`, `max_wait_duration` | `jobSpec.scheduling.*` |
//! | `run.scheduling_strategy` | `jobSpec.scheduling.strategy` |
//! | `run.sync`, `run.create_request_timeout` | nothing (client-side options of the SDK) |
//!
//! A config with neither `base_output_dir` nor `staging_bucket` is refused: the SDK
//! refuses it too, and a job without an output directory gets no `AIP_MODEL_DIR`.
//!
//! The run goes into the worker pools so (W&B writes one pool of its own and drops the
//! config's; hoist keeps every pool as configured):
//!
//! - An empty pool (`{}`) is a placeholder that keeps the indices of the pools after
//!   it (Vertex's TensorFlow roles: chief, workers, parameter servers, evaluators): it
//!   is sent as it is.
//! - The first pool runs the run: its `containerSpec.imageUri` is the run's image, its
//!   `command` the run's entry point and its `args` the run's arguments, each when the
//!   run has one (a run without an entry point keeps the config's `command`).
//! - Every other pool whose `containerSpec` has no `imageUri` (or that has no
//!   `containerSpec` and no `pythonPackageSpec`) runs the run's image too, with the
//!   run's entry point and arguments where the pool has no `command`/`args` of its own.
//!   A pool that names its own image keeps its image and command (a parameter server,
//!   an evaluator).
//! - Every non-empty pool gets the run's environment (`HOIST_*` and the run's own
//!   variables) in its `containerSpec.env` (or `pythonPackageSpec.env`), over the
//!   config's variables of the same names.
//!
//! Secrets: a CustomJob's `env` is readable by anyone who may `aiplatform.customJobs.get`
//! in the project (the console shows it). A run variable whose name looks secret or whose
//! value looks like a credential is therefore refused, pointing at Secret Manager (the
//! job reads the secret itself with its service account). `HOIST_RUN_TOKEN` is the
//! exception: the job needs it to talk to hoist and Vertex has no other way to hand a
//! value to a container. It is written into the env, with the risk said here: a reader
//! of the project's CustomJobs can act as the run (log, report, read its artifacts)
//! until the run ends, when the server revokes the token.
//!
//! Labels: `hoist-run-id`, `hoist-agent`, `hoist-queue` (Google's syntax: lowercase
//! letters, digits, `_` and `-`, at most 63 characters; other characters become `-`,
//! longer values are cut with a hash suffix). A run id is already such a value, and the
//! exact one is also in every pool's `HOIST_RUN_ID`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use hoist_core::resource::path::{index_path, key_path};
use hoist_core::secret::{looks_like_credential, looks_secret};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::runners::{JobSpec, RunnerError};

/// The labels on every CustomJob hoist creates.
pub const LABEL_RUN_ID: &str = "hoist-run-id";
pub const LABEL_AGENT: &str = "hoist-agent";
pub const LABEL_QUEUE: &str = "hoist-queue";

/// Where and when the job is created.
#[derive(Debug, Clone)]
pub struct SpecContext<'a> {
    pub project: &'a str,
    pub region: &'a str,
    /// For the SDK-style output directory under `staging_bucket`.
    pub now: DateTime<Utc>,
}

/// What `customJobs.create` gets.
#[derive(Debug, Clone)]
pub struct Submission {
    /// `projects/P/locations/R`.
    pub parent: String,
    /// The `CustomJob`, secrets in clear.
    pub body: Value,
    /// hoist's labels (sanitized), also in `body.labels`.
    pub labels: BTreeMap<String, String>,
}

impl Submission {
    /// The body with secret-looking values masked (for dry runs).
    pub fn masked(&self) -> Value {
        let mut b = self.body.clone();
        crate::dry_run::mask_value_tree(&mut b);
        b
    }
}

/// `snake_case` → `camelCase` (a camelCase key is left as it is).
pub fn camel(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut up = false;
    for c in key.chars() {
        if c == '_' && !out.is_empty() {
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

/// `v` with every object key camelCased, except the keys of `labels` maps (free-form).
pub fn camel_tree(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| {
                    let ck = camel(k);
                    let x = if ck == "labels" {
                        x.clone()
                    } else {
                        camel_tree(x)
                    };
                    (ck, x)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(camel_tree).collect()),
        other => other.clone(),
    }
}

/// Is `s` a valid label value (lowercase letters, digits, `_`, `-`; ≤ 63)?
pub fn valid_label_value(s: &str) -> bool {
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// `s` as a label value: itself when valid; else lowercased, other characters as `-`,
/// and when that changed it or it is too long, cut to 54 characters plus `-` and 8 hex
/// digits of its SHA-256 (distinct values stay distinct).
pub fn label_value(s: &str) -> String {
    if valid_label_value(s) {
        return s.to_string();
    }
    let mapped: String = s
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let hash = hex8(s);
    let keep: String = mapped.chars().take(54).collect();
    format!("{keep}-{hash}")
}

fn hex8(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// hoist's labels for `job`.
pub fn hoist_labels(job: &JobSpec) -> BTreeMap<String, String> {
    [
        (LABEL_RUN_ID, label_value(&job.run_id)),
        (LABEL_AGENT, label_value(&job.agent_name)),
        (LABEL_QUEUE, label_value(&job.queue)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The `customJobs.list` filter selecting the jobs of run `run_id`.
pub fn run_filter(run_id: &str) -> String {
    format!("labels.{LABEL_RUN_ID}=\"{}\"", label_value(run_id))
}

/// The `customJobs.list` filter selecting the jobs of agent `agent`.
pub fn agent_filter(agent: &str) -> String {
    format!("labels.{LABEL_AGENT}=\"{}\"", label_value(agent))
}

/// The registry host of an image reference (`docker.io` for a Docker Hub name).
fn image_host(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// Whether Vertex AI pulls `image` with the project's credentials: Artifact Registry
/// (`*-docker.pkg.dev`) or Container Registry (`gcr.io`, `*.gcr.io`).
pub fn pullable_by_vertex(image: &str) -> bool {
    let host = image_host(image);
    host.ends_with("-docker.pkg.dev") || host == "gcr.io" || host.ends_with(".gcr.io")
}

const SPEC_KEYS: &[&str] = &[
    "workerPoolSpecs",
    "stagingBucket",
    "baseOutputDir",
    "displayName",
    "encryptionSpecKeyName",
    "labels",
    "persistentResourceId",
];

const RUN_KEYS: &[&str] = &[
    "serviceAccount",
    "network",
    "timeout",
    "restartJobOnWorkerRestart",
    "enableWebAccess",
    "enableDashboardAccess",
    "experiment",
    "experimentRun",
    "tensorboard",
    "sync",
    "createRequestTimeout",
    "disableRetries",
    "schedulingStrategy",
    "maxWaitDuration",
    "reservedIpRanges",
    "persistentResourceId",
];

/// A section's fields by camelCase name, each with the path as written.
fn section<'v>(
    v: Option<(&'v Value, String)>,
    known: &[&str],
    problems: &mut Vec<String>,
) -> BTreeMap<String, (&'v Value, String)> {
    let mut out = BTreeMap::new();
    let Some((v, path)) = v else {
        return out;
    };
    let Value::Object(m) = v else {
        if !v.is_null() {
            problems.push(format!("{path}: expected an object"));
        }
        return out;
    };
    for (k, x) in m {
        let c = camel(k);
        let p = key_path(&path, k);
        if !known.contains(&c.as_str()) {
            problems.push(format!("{p}: unknown field"));
            continue;
        }
        if out.insert(c.clone(), (x, p.clone())).is_some() {
            problems.push(format!("{p}: given twice (in snake_case and in camelCase)"));
        }
    }
    out
}

fn string_of<'v>(v: &'v Value, path: &str, problems: &mut Vec<String>) -> Option<&'v str> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s),
        _ => {
            problems.push(format!("{path}: expected a non-empty string"));
            None
        }
    }
}

/// `3600`, `"3600"` or `"3600s"` → `"3600s"`.
fn duration(v: &Value, path: &str, problems: &mut Vec<String>) -> Option<String> {
    let s = match v {
        Value::Number(n) if n.as_u64().is_some() => return Some(format!("{}s", n)),
        Value::String(s) => s.trim(),
        _ => "",
    };
    let digits = s.strip_suffix('s').unwrap_or(s);
    let ok = !digits.is_empty()
        && digits.split_once('.').map_or_else(
            || digits.chars().all(|c| c.is_ascii_digit()),
            |(a, b)| {
                !a.is_empty()
                    && a.chars().all(|c| c.is_ascii_digit())
                    && (1..=9).contains(&b.len())
                    && b.chars().all(|c| c.is_ascii_digit())
            },
        );
    if ok {
        Some(format!("{digits}s"))
    } else {
        problems.push(format!(
            "{path}: expected seconds as an integer or a duration such as \"3600s\""
        ));
        None
    }
}

/// The names of `job.env` that must not go into a CustomJob's env (see the module
/// docs), with why.
fn secret_env(job: &JobSpec) -> Vec<String> {
    job.env
        .iter()
        .filter(|(k, v)| {
            k.as_str() != "HOIST_RUN_TOKEN" && (looks_secret(k) || looks_like_credential(v))
        })
        .map(|(k, _)| {
            if looks_secret(k) {
                format!("`{k}` (its name looks like a secret)")
            } else {
                format!("`{k}` (its value looks like a credential)")
            }
        })
        .collect()
}

/// Builds what to submit for `job` (see the module docs).
pub fn build(job: &JobSpec, cx: &SpecContext<'_>) -> Result<Submission, RunnerError> {
    let refused = |problems: Vec<String>| {
        RunnerError::Refused(format!(
            "the vertex queue config cannot run on this agent:\n  - {}",
            problems.join("\n  - ")
        ))
    };
    let secrets = secret_env(job);
    if !secrets.is_empty() {
        return Err(RunnerError::Refused(format!(
            "the run's environment has {}: a Vertex AI CustomJob's env is visible to anyone who may read the project's custom jobs (aiplatform.customJobs.get, the console), so hoist does not put secrets there; keep the value in Secret Manager and have the job read it with its service account (`run.service_account` in the queue config), then launch without it",
            secrets.join(", ")
        )));
    }
    if let Some(image) = &job.image
        && !pullable_by_vertex(image)
    {
        return Err(RunnerError::Refused(format!(
            "the run's image {image} is not in Artifact Registry (REGION-docker.pkg.dev) or Container Registry (gcr.io), where Vertex AI pulls from with the project's credentials: set the agent config's `registry` to a gcr registry (e.g. `registry: {{type: gcr, uri: {}-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE}}`) so the agent pushes images there, or launch an image that is there",
            cx.region
        )));
    }
    let mut problems = Vec::new();
    let Value::Object(top) = &job.resource_config else {
        return Err(refused(vec![
            "(document): expected an object with `spec` (and `run`)".into(),
        ]));
    };
    let mut spec_v = None;
    let mut run_v = None;
    for (k, v) in top {
        match k.as_str() {
            "spec" => spec_v = Some((v, k.clone())),
            "run" => run_v = Some((v, k.clone())),
            other => problems.push(format!("{other}: unknown field; expected `spec` and `run`")),
        }
    }
    if spec_v.is_none() {
        problems.push("spec: required (the CustomJob's arguments, with worker_pool_specs)".into());
    }
    let has_spec = spec_v.is_some();
    let spec = section(spec_v, SPEC_KEYS, &mut problems);
    let run = section(run_v, RUN_KEYS, &mut problems);

    // Worker pools.
    let mut pools = Vec::new();
    match spec.get("workerPoolSpecs") {
        Some((Value::Array(items), path)) if !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                let ip = index_path(path, i);
                match camel_tree(item) {
                    Value::Object(m) => pools.push((m, ip)),
                    _ => problems.push(format!("{ip}: expected an object")),
                }
            }
        }
        Some((_, path)) => problems.push(format!(
            "{path}: expected a list of at least one worker pool"
        )),
        None if has_spec => {
            problems.push("spec.worker_pool_specs: required (at least one worker pool)".into())
        }
        None => {}
    }
    let env_entries: Vec<Value> = job
        .env
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    let entry_point = job.entry_point.clone();
    let mut first = true;
    let mut out_pools = Vec::new();
    for (mut pool, path) in pools {
        if pool.is_empty() {
            out_pools.push(Value::Object(pool));
            continue;
        }
        let is_first = std::mem::take(&mut first);
        let python = pool.contains_key("pythonPackageSpec");
        if !python {
            let cs = pool
                .entry("containerSpec")
                .or_insert_with(|| Value::Object(Map::new()));
            let Value::Object(cs) = cs else {
                problems.push(format!(
                    "{}: expected an object",
                    key_path(&path, "containerSpec")
                ));
                continue;
            };
            let has_image = cs
                .get("imageUri")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.trim().is_empty());
            if is_first || !has_image {
                match &job.image {
                    Some(image) => {
                        cs.insert("imageUri".into(), Value::String(image.clone()));
                    }
                    None if !has_image => problems.push(format!(
                        "{}: the pool has no image and the run has none; launch an image job, or name `image_uri` in the pool",
                        key_path(&path, "container_spec")
                    )),
                    None => {}
                }
                let own_command = cs
                    .get("command")
                    .is_some_and(|c| c.as_array().is_some_and(|a| !a.is_empty()));
                let own_args = cs
                    .get("args")
                    .is_some_and(|c| c.as_array().is_some_and(|a| !a.is_empty()));
                if let Some(ep) = &entry_point
                    && (is_first || !own_command)
                {
                    cs.insert("command".into(), json!(ep));
                }
                if !job.args.is_empty() && (is_first || !own_args) {
                    cs.insert("args".into(), json!(job.args));
                }
            }
            merge_env(cs, &env_entries, &path, &mut problems);
        } else if let Some(Value::Object(ps)) = pool.get_mut("pythonPackageSpec") {
            merge_env(ps, &env_entries, &path, &mut problems);
        }
        out_pools.push(Value::Object(pool));
    }
    if !out_pools.is_empty() && first {
        problems.push(
            "spec.worker_pool_specs: every pool is empty; the first non-empty pool runs the run"
                .into(),
        );
    }

    // The job spec.
    let mut job_spec = Map::new();
    job_spec.insert("workerPoolSpecs".into(), Value::Array(out_pools));
    let output = match (spec.get("baseOutputDir"), spec.get("stagingBucket")) {
        (Some((v, p)), _) => string_of(v, p, &mut problems).map(str::to_string),
        (None, Some((v, p))) => string_of(v, p, &mut problems).map(|b| {
            format!(
                "{}/aiplatform-custom-job-{}",
                b.trim_end_matches('/'),
                cx.now.format("%Y-%m-%d-%H:%M:%S%.3f")
            )
        }),
        (None, None) => {
            problems.push("spec.staging_bucket: required (a gs:// bucket for the job's output, as the Vertex AI SDK requires), unless spec.base_output_dir names the output directory".into());
            None
        }
    };
    if let Some(o) = output {
        if !o.starts_with("gs://") {
            problems.push(format!("spec: the output directory {o} is not a gs:// URL"));
        }
        job_spec.insert("baseOutputDirectory".into(), json!({"outputUriPrefix": o}));
    }
    let persistent = run
        .get("persistentResourceId")
        .or_else(|| spec.get("persistentResourceId"));
    if let Some((v, p)) = persistent
        && let Some(s) = string_of(v, p, &mut problems)
    {
        job_spec.insert("persistentResourceId".into(), json!(s));
    }
    let mut scheduling = Map::new();
    for (key, (v, p)) in &run {
        match key.as_str() {
            "serviceAccount" | "network" | "tensorboard" | "experiment" | "experimentRun" => {
                if let Some(s) = string_of(v, p, &mut problems) {
                    job_spec.insert(key.clone(), json!(s));
                }
            }
            "enableWebAccess" | "enableDashboardAccess" => match v {
                Value::Bool(_) => {
                    job_spec.insert(key.clone(), (*v).clone());
                }
                _ => problems.push(format!("{p}: expected true or false")),
            },
            "reservedIpRanges" => match v {
                Value::Array(a) if a.iter().all(Value::is_string) => {
                    job_spec.insert(key.clone(), (*v).clone());
                }
                _ => problems.push(format!("{p}: expected a list of strings")),
            },
            "timeout" | "maxWaitDuration" => {
                if let Some(d) = duration(v, p, &mut problems) {
                    scheduling.insert(key.clone(), json!(d));
                }
            }
            "restartJobOnWorkerRestart" | "disableRetries" => match v {
                Value::Bool(_) => {
                    scheduling.insert(key.clone(), (*v).clone());
                }
                _ => problems.push(format!("{p}: expected true or false")),
            },
            "schedulingStrategy" => {
                if let Some(s) = string_of(v, p, &mut problems) {
                    scheduling.insert("strategy".into(), json!(s));
                }
            }
            // persistentResourceId: above; sync, createRequestTimeout: the SDK's own.
            _ => {}
        }
    }
    if !scheduling.is_empty() {
        job_spec.insert("scheduling".into(), Value::Object(scheduling));
    }

    // The CustomJob.
    let labels = hoist_labels(job);
    let mut all_labels = Map::new();
    if let Some((v, p)) = spec.get("labels") {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    match x {
                        Value::String(s) => {
                            all_labels.insert(k.clone(), json!(s));
                        }
                        _ => problems.push(format!("{}: expected a string", key_path(p, k))),
                    }
                }
            }
            _ => problems.push(format!("{p}: expected an object of strings")),
        }
    }
    for (k, v) in &labels {
        all_labels.insert(k.clone(), json!(v));
    }
    let display_name = match spec.get("displayName") {
        Some((v, p)) => string_of(v, p, &mut problems)
            .unwrap_or_default()
            .to_string(),
        None => format!("hoist {} {}", job.run_name, job.run_id),
    };
    let display_name: String = display_name.chars().take(128).collect();
    let mut body = Map::new();
    body.insert("displayName".into(), json!(display_name));
    body.insert("jobSpec".into(), Value::Object(job_spec));
    body.insert("labels".into(), Value::Object(all_labels));
    if let Some((v, p)) = spec.get("encryptionSpecKeyName")
        && let Some(s) = string_of(v, p, &mut problems)
    {
        body.insert("encryptionSpec".into(), json!({"kmsKeyName": s}));
    }
    if !problems.is_empty() {
        return Err(refused(problems));
    }
    Ok(Submission {
        parent: format!("projects/{}/locations/{}", cx.project, cx.region),
        body: Value::Object(body),
        labels,
    })
}

/// Puts `entries` into the `env` list of `spec` (a container or python package spec),
/// replacing the config's entries of the same names.
fn merge_env(
    spec: &mut Map<String, Value>,
    entries: &[Value],
    path: &str,
    problems: &mut Vec<String>,
) {
    let names: Vec<&str> = entries
        .iter()
        .filter_map(|e| e.get("name").and_then(Value::as_str))
        .collect();
    let env = spec
        .entry("env")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Value::Array(list) = env else {
        problems.push(format!("{path}: `env` must be a list of {{name, value}}"));
        return;
    };
    list.retain(|e| {
        !e.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| names.contains(&n))
    });
    list.extend(entries.iter().cloned());
}

/// What a CustomJob's `state` means for the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Queued or provisioning (`JOB_STATE_QUEUED`, `JOB_STATE_PENDING`).
    Starting,
    /// `JOB_STATE_RUNNING`.
    Running,
    /// `JOB_STATE_CANCELLING`: ends soon.
    Stopping,
    /// `JOB_STATE_PAUSED`, `JOB_STATE_UPDATING`, an unknown state: keep waiting.
    Waiting,
    /// Ended, with how.
    Ended(crate::runners::Exit),
}

/// The phase of a job in `state`, with its `error.message` and whether hoist asked
/// for the cancel. A cancel hoist did not ask for is a failure (someone cancelled the
/// job in the console or with gcloud), never a success; a stop hoist asked for ends the
/// run as `stopped` (the run task decides by its own stop flag).
pub fn phase(state: &str, error: Option<&str>, cancel_requested: bool) -> Phase {
    use crate::runners::Exit;
    let why = |default: &str| {
        error
            .filter(|m| !m.trim().is_empty())
            .map_or_else(|| default.to_string(), str::to_string)
    };
    match state {
        "JOB_STATE_QUEUED" | "JOB_STATE_PENDING" => Phase::Starting,
        "JOB_STATE_RUNNING" => Phase::Running,
        "JOB_STATE_SUCCEEDED" | "JOB_STATE_PARTIALLY_SUCCEEDED" => Phase::Ended(Exit::Code(0)),
        "JOB_STATE_FAILED" => Phase::Ended(Exit::Failed {
            reason: format!("the Vertex AI CustomJob failed: {}", why("no error message")),
            code: None,
        }),
        "JOB_STATE_CANCELLING" => Phase::Stopping,
        "JOB_STATE_CANCELLED" if cancel_requested => Phase::Ended(Exit::Failed {
            reason: "the Vertex AI CustomJob was cancelled".into(),
            code: None,
        }),
        "JOB_STATE_CANCELLED" => Phase::Ended(Exit::Failed {
            reason: "the Vertex AI CustomJob was cancelled outside hoist (the console, gcloud or the API)".into(),
            code: None,
        }),
        "JOB_STATE_EXPIRED" => Phase::Ended(Exit::Failed {
            reason: format!(
                "the Vertex AI CustomJob expired (its timeout passed): {}",
                why("raise `run.timeout` in the queue config if the job needs longer")
            ),
            code: None,
        }),
        _ => Phase::Waiting,
    }
}

/// Whether `state` is one a job never leaves.
pub fn is_terminal(state: &str) -> bool {
    matches!(
        state,
        "JOB_STATE_SUCCEEDED"
            | "JOB_STATE_PARTIALLY_SUCCEEDED"
            | "JOB_STATE_FAILED"
            | "JOB_STATE_CANCELLED"
            | "JOB_STATE_EXPIRED"
    )
}

/// The exact run id of a job hoist created: `HOIST_RUN_ID` of its first non-empty
/// pool (labels are sanitized; this is not).
pub fn run_id_of(job: &Value) -> Option<String> {
    job.pointer("/jobSpec/workerPoolSpecs")?
        .as_array()?
        .iter()
        .filter_map(|p| {
            p.pointer("/containerSpec/env")
                .or_else(|| p.pointer("/pythonPackageSpec/env"))
        })
        .flat_map(|e| e.as_array().into_iter().flatten())
        .find(|e| e.get("name").and_then(Value::as_str) == Some("HOIST_RUN_ID"))
        .and_then(|e| e.get("value")?.as_str().map(str::to_string))
}

/// Whether `job` carries `labels` (hoist's labels of a run).
pub fn is_ours(job: &Value, labels: &BTreeMap<String, String>) -> bool {
    labels.iter().all(|(k, v)| {
        job.get("labels")
            .and_then(|l| l.get(k))
            .and_then(Value::as_str)
            == Some(v.as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runners::Exit;

    fn job(config: Value) -> JobSpec {
        JobSpec {
            run_id: "r1abc".into(),
            run_name: "swift-fox".into(),
            project: "p".into(),
            entity: "e".into(),
            queue: "e/Vertex Q".into(),
            agent_name: "agent-1".into(),
            image: Some("us-central1-docker.pkg.dev/proj/repo/img:abc".into()),
            entry_point: Some(vec!["python".into(), "run.py".into()]),
            args: vec!["--lr".into(), "0.1".into()],
            env: [
                ("HOIST_RUN_ID", "r1abc"),
                ("HOIST_RUN_TOKEN", "hrt_xyz"),
                ("EPOCHS", "3"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            resource_config: config,
            labels: BTreeMap::new(),
            source: None,
        }
    }

    fn cx() -> SpecContext<'static> {
        SpecContext {
            project: "proj",
            region: "us-central1",
            now: DateTime::parse_from_rfc3339("2025-01-02T03:04:05.678Z")
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    fn pool(image: Option<&str>) -> Value {
        let mut p = json!({"machine_spec": {"machine_type": "n1-standard-4"}, "replica_count": 1, "container_spec": {}});
        if let Some(i) = image {
            p["container_spec"]["image_uri"] = json!(i);
        }
        p
    }

    #[test]
    fn seed_shape_maps_to_rest() {
        let config = json!({
            "spec": {
                "worker_pool_specs": [pool(Some("us-central1-docker.pkg.dev/proj/repo/img:abc"))],
                "staging_bucket": "gs://b/staging/",
                "labels": {"team": "ml"},
            },
            "run": {"restart_job_on_worker_restart": false, "timeout": 3600, "service_account": "sa@p.iam.gserviceaccount.com", "sync": true},
        });
        let s = build(&job(config), &cx()).unwrap();
        assert_eq!(s.parent, "projects/proj/locations/us-central1");
        let b = &s.body;
        assert_eq!(b["displayName"], "hoist swift-fox r1abc");
        assert_eq!(
            b["jobSpec"]["baseOutputDirectory"]["outputUriPrefix"],
            "gs://b/staging/aiplatform-custom-job-2025-01-02-03:04:05.678"
        );
        assert_eq!(
            b["jobSpec"]["scheduling"],
            json!({"restartJobOnWorkerRestart": false, "timeout": "3600s"})
        );
        assert_eq!(
            b["jobSpec"]["serviceAccount"],
            "sa@p.iam.gserviceaccount.com"
        );
        let p0 = &b["jobSpec"]["workerPoolSpecs"][0];
        assert_eq!(p0["machineSpec"]["machineType"], "n1-standard-4");
        assert_eq!(p0["containerSpec"]["command"], json!(["python", "run.py"]));
        assert_eq!(p0["containerSpec"]["args"], json!(["--lr", "0.1"]));
        assert_eq!(b["labels"]["team"], "ml");
        assert_eq!(b["labels"]["hoist-run-id"], "r1abc");
        assert_eq!(b["labels"]["hoist-agent"], "agent-1");
        let q = b["labels"]["hoist-queue"].as_str().unwrap();
        assert!(valid_label_value(q) && q.starts_with("e-vertex-q-"), "{q}");
        assert_eq!(run_id_of(b).as_deref(), Some("r1abc"));
        assert!(is_ours(b, &s.labels));
        assert!(b.get("jobSpec").unwrap().get("sync").is_none());
    }

    #[test]
    fn pools_keep_their_own_image_and_command() {
        let mut other = pool(Some("us-docker.pkg.dev/vertex-ai/ps:1"));
        other["container_spec"]["command"] = json!(["ps"]);
        let mut no_image = pool(None);
        no_image["container_spec"]["args"] = json!(["--role", "worker"]);
        let config = json!({"spec": {
            "workerPoolSpecs": [pool(Some("gcr.io/p/fixed:1")), {}, no_image, other],
            "baseOutputDir": "gs://b/out",
        }});
        let s = build(&job(config), &cx()).unwrap();
        let pools = s.body["jobSpec"]["workerPoolSpecs"]
            .as_array()
            .unwrap()
            .clone();
        // The first pool runs the run's image and command.
        assert_eq!(
            pools[0]["containerSpec"]["imageUri"],
            "us-central1-docker.pkg.dev/proj/repo/img:abc"
        );
        assert_eq!(pools[1], json!({}));
        // A pool without an image gets the run's, its own args kept.
        assert_eq!(
            pools[2]["containerSpec"]["imageUri"],
            "us-central1-docker.pkg.dev/proj/repo/img:abc"
        );
        assert_eq!(
            pools[2]["containerSpec"]["command"],
            json!(["python", "run.py"])
        );
        assert_eq!(
            pools[2]["containerSpec"]["args"],
            json!(["--role", "worker"])
        );
        // A pool with its own image keeps it and its command; env everywhere.
        assert_eq!(
            pools[3]["containerSpec"]["imageUri"],
            "us-docker.pkg.dev/vertex-ai/ps:1"
        );
        assert_eq!(pools[3]["containerSpec"]["command"], json!(["ps"]));
        assert!(pools[3]["containerSpec"].get("args").is_none());
        for i in [0, 2, 3] {
            let env = pools[i]["containerSpec"]["env"].as_array().unwrap();
            assert!(env.iter().any(|e| e["name"] == "HOIST_RUN_TOKEN"), "{i}");
        }
        assert_eq!(
            s.body["jobSpec"]["baseOutputDirectory"]["outputUriPrefix"],
            "gs://b/out"
        );
    }

    #[test]
    fn refusals_name_the_path() {
        let e = build(
            &job(json!({"spec": {"worker_pool_specs": [pool(None)]}})),
            &cx(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("spec.staging_bucket: required"),
            "{e}"
        );
        let e = build(&job(json!({"spec": {"worker_pool_specs": [pool(None)], "staging_bucket": "gs://b", "bogus": 1}, "run": {"timeout": "1h"}})), &cx()).unwrap_err();
        assert!(e.to_string().contains("spec.bogus: unknown field"), "{e}");
        assert!(
            e.to_string().contains("run.timeout: expected seconds"),
            "{e}"
        );
        let mut j =
            job(json!({"spec": {"worker_pool_specs": [pool(None)], "staging_bucket": "gs://b"}}));
        j.env.insert("HF_TOKEN".into(), "abc".into());
        let e = build(&j, &cx()).unwrap_err();
        assert!(
            e.to_string().contains("`HF_TOKEN`") && e.to_string().contains("Secret Manager"),
            "{e}"
        );
        assert!(!e.to_string().contains("abc"), "{e}");
        let mut j =
            job(json!({"spec": {"worker_pool_specs": [pool(None)], "staging_bucket": "gs://b"}}));
        j.image = Some("docker.io/library/python:3".into());
        let e = build(&j, &cx()).unwrap_err();
        assert!(e.to_string().contains("`registry`"), "{e}");
    }

    #[test]
    fn masked_body_hides_the_run_token() {
        let s = build(
            &job(json!({"spec": {"worker_pool_specs": [pool(None)], "staging_bucket": "gs://b"}})),
            &cx(),
        )
        .unwrap();
        let m = s.masked().to_string();
        assert!(!m.contains("hrt_xyz") && m.contains("EPOCHS"), "{m}");
        assert!(s.body.to_string().contains("hrt_xyz"));
    }

    #[test]
    fn labels_and_states() {
        assert_eq!(label_value("abc-1_2"), "abc-1_2");
        let v = label_value(&"X".repeat(100));
        assert!(valid_label_value(&v) && v.len() == 63, "{v}");
        assert_ne!(label_value("a/b"), label_value("a.b"));
        assert_eq!(camel("worker_pool_specs"), "workerPoolSpecs");
        assert_eq!(camel("imageUri"), "imageUri");
        assert_eq!(phase("JOB_STATE_PENDING", None, false), Phase::Starting);
        assert_eq!(
            phase("JOB_STATE_SUCCEEDED", None, false),
            Phase::Ended(Exit::Code(0))
        );
        assert!(
            matches!(phase("JOB_STATE_FAILED", Some("OOM"), false), Phase::Ended(Exit::Failed { reason, .. }) if reason.contains("OOM"))
        );
        assert!(
            matches!(phase("JOB_STATE_CANCELLED", None, false), Phase::Ended(Exit::Failed { reason, .. }) if reason.contains("outside hoist"))
        );
        assert_eq!(phase("JOB_STATE_PAUSED", None, false), Phase::Waiting);
        assert_eq!(phase("JOB_STATE_CANCELLING", None, true), Phase::Stopping);
    }
}
