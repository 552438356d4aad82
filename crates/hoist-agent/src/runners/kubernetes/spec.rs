//! From a run and its queue's Kubernetes config to what the runner submits: the top
//! object (a `batch/v1` Job or any custom object) and the per-run Secrets it refers
//! to ([`build`] → [`Submission`]).
//!
//! Pure: JSON in, JSON out, no client and no Kubernetes types, so `hoist launch
//! --dry-run` shows exactly what the runner would create, offline. The run's
//! `resource_config` has its macros filled and the run's resource args deep-merged over
//! the queue config already (lists of named objects merged by `name`).
//!
//! What [`build`] does:
//! - **Kind.** A config without `apiVersion`/`kind`, or with `batch/v1` `Job`, is a Job
//!   (W&B's form: just `metadata` and `spec`); anything else with both is a custom
//!   object (Volcano `Job`, Kubeflow `PyTorchJob`, `JobSet`, `RayJob`, …), submitted as
//!   written plus hoist's injections. Anything else is refused.
//! - **Name.** `metadata.name` (else `metadata.generateName`) is a prefix: the object is
//!   `<prefix>-<run id>`, lowercased and DNS-label-safe, at most 63 characters (the
//!   prefix is cut, never the run id); without one, `hoist-<run id>`. The name is always
//!   known, so a restarted agent finds the object again. **Namespace**: the config's,
//!   else [`SpecContext::default_namespace`].
//! - **Pod templates.** A Job's `spec.template` (a container named `main` when it has
//!   none); in a custom object, every object with `spec.containers` anywhere in the
//!   document (`spec.pytorchReplicaSpecs.*.template`,
//!   `spec.replicatedJobs[].template.spec.template`, `spec.tasks[].template`, …). A
//!   custom object without one is submitted with its labels only. Each template gets
//!   hoist's labels and annotations and `restartPolicy: Never` unless it says otherwise;
//!   a Job gets `backoffLimit: 0` unless set. `ttlSecondsAfterFinished` is never set:
//!   the runner deletes the objects itself once it has every log.
//! - **Containers** (and init containers) of every template:
//!   - the run's image when the container has none or `${image_uri}`; a container left
//!     without an image is refused (named by its path);
//!   - the run's entry point and args as `command`/`args` of the first container of the
//!     first template, each only when the run has one (a Ray `RayJob` gets them as its
//!     `spec.entrypoint` command line instead: its pods run the Ray cluster);
//!   - the environment, in this order (so a config value can refer to hoist's with
//!     `$(HOIST_RUN_ID)`): hoist's `HOIST_*` variables, then the run's own env, then the
//!     config's `env`. **Rule**: a `HOIST_*` variable hoist sets overrides a config entry
//!     of the same name; a config entry overrides a run variable of the same name (the
//!     queue's owner decides, e.g. a `valueFrom` of their own);
//!   - `HOIST_RUN_TOKEN`, and every value whose name [`looks_secret`] or whose value
//!     [`looks_like_credential`] (from the run or written literally in the config,
//!     unless it refers to other variables with `$(…)`), goes into one per-run Secret
//!     `<name>-env` (type `Opaque`, base64 `data`) and is referenced with
//!     `valueFrom.secretKeyRef`, never written into the object;
//!   - a default `securityContext` merged under the config's (the config wins):
//!     `allowPrivilegeEscalation: false` (not when the container is privileged or adds
//!     `SYS_ADMIN`, which the API server refuses together), `capabilities.drop: [ALL]`,
//!     `seccompProfile: RuntimeDefault` (unless the pod's securityContext sets one), and
//!     with `require-non-root` or `secure_mode`, `runAsNonRoot: true` (unless the pod's
//!     sets it). Windows pods (`spec.os.name: windows`) get none of these.
//! - **Pull secret.** With the agent's registry credentials for the run's image
//!   ([`SpecContext::docker_config_json`]), a Secret `<name>-pull` of type
//!   `kubernetes.io/dockerconfigjson`, added to every template's `imagePullSecrets`.
//! - **Labels.** [`LABEL_RUN_ID`], [`LABEL_AGENT`], [`LABEL_QUEUE`], [`LABEL_ENTITY`] on
//!   the top object, every pod template and every Secret, with values made label-safe
//!   ([`label_value`]); the exact values in `hoist.dev/*` annotations (plus
//!   `hoist.dev/project`).
//! - **Policy.** Last, the finished object goes through [`policy::check`] (so hoist's own
//!   defaults never trip it): every refusal, with every problem found above, becomes one
//!   [`RunnerError::Refused`] naming each path.

use hoist_core::names::shell_join;
use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hoist_core::resource::path::{index_path, key_path};
use hoist_core::secret::{Secret, looks_like_credential, looks_secret};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::policy;
use crate::config::KubernetesSettings;
use crate::runners::{JobSpec, RunnerError};

/// Labels (and annotations, with exact values) on everything hoist creates.
pub const LABEL_RUN_ID: &str = "hoist.dev/run-id";
pub const LABEL_AGENT: &str = "hoist.dev/agent";
pub const LABEL_QUEUE: &str = "hoist.dev/queue";
pub const LABEL_ENTITY: &str = "hoist.dev/entity";
/// An annotation only (the project's exact name).
pub const ANNOTATION_PROJECT: &str = "hoist.dev/project";

/// What [`Submission::masked`] shows instead of a Secret's value.
pub const MASK: &str = "****";

/// The image placeholder a container may hold for the run's image.
const IMAGE_MACRO: &str = "${image_uri}";

/// What [`build`] needs besides the run.
pub struct SpecContext<'a> {
    /// Namespace when the config names none (the runner resolves: agent config's, else
    /// the kubeconfig context's, else "default").
    pub default_namespace: &'a str,
    pub settings: &'a KubernetesSettings,
    pub secure_mode: bool,
    /// The agent's registry credentials for the run's image as a `.dockerconfigjson`
    /// document, when it has any.
    pub docker_config_json: Option<&'a Secret>,
}

/// What the runner submits for a run.
pub struct Submission {
    pub namespace: String,
    /// The top object's `metadata.name`.
    pub name: String,
    /// e.g. `batch/v1`.
    pub api_version: String,
    /// e.g. `Job`.
    pub kind: String,
    /// The complete top object.
    pub object: Value,
    /// v1 Secrets to create BEFORE the top object (the run's env secret; the pull
    /// secret), labelled; the runner adds an ownerReference to the top object once it
    /// exists.
    pub secrets: Vec<Value>,
    /// The `hoist.dev/*` labels.
    pub labels: BTreeMap<String, String>,
}

impl std::fmt::Debug for Submission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secrets: Vec<&str> = self
            .secrets
            .iter()
            .map(|s| {
                s.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            })
            .collect();
        f.debug_struct("Submission")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("api_version", &self.api_version)
            .field("kind", &self.kind)
            .field("secrets", &secrets)
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl Submission {
    /// For `--dry-run`: the secrets (every data value replaced by a mask) then the
    /// object.
    pub fn masked(&self) -> Vec<Value> {
        let mut out: Vec<Value> = self
            .secrets
            .iter()
            .map(|s| {
                let mut s = s.clone();
                for key in ["data", "stringData"] {
                    if let Some(Value::Object(m)) = s.get_mut(key) {
                        for v in m.values_mut() {
                            *v = Value::String(MASK.to_string());
                        }
                    }
                }
                s
            })
            .collect();
        out.push(self.object.clone());
        out
    }

    /// `hoist.dev/run-id=<run id>`: selects every object of the run.
    pub fn selector(&self) -> String {
        format!(
            "{LABEL_RUN_ID}={}",
            self.labels.get(LABEL_RUN_ID).map_or("", String::as_str)
        )
    }
}

/// The label selector of every object of a run: `hoist.dev/run-id=<run id>`.
pub fn run_selector(run_id: &str) -> String {
    format!("{LABEL_RUN_ID}={}", label_value(run_id))
}

/// The label selector of every object an agent created: `hoist.dev/agent=<name>`.
pub fn agent_selector(agent_name: &str) -> String {
    format!("{LABEL_AGENT}={}", label_value(agent_name))
}

/// `s` as a label value: itself when it is one already (at most 63 letters, digits,
/// `-`, `_`, `.`, starting and ending with a letter or digit); else its label-safe
/// characters (others become `-`), cut to 54, then `-` and 8 hex digits of its SHA-256,
/// so different values stay different.
pub fn label_value(s: &str) -> String {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let valid = s.is_empty()
        || (s.len() <= 63
            && s.chars().all(ok_char)
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric()));
    if valid {
        return s.to_string();
    }
    let digest = Sha256::digest(s.as_bytes());
    let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    let clean: String = s
        .chars()
        .map(|c| if ok_char(c) { c } else { '-' })
        .take(54)
        .collect();
    let clean = clean.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if clean.is_empty() {
        hash
    } else {
        format!("{clean}-{hash}")
    }
}

/// Lowercase letters, digits and `-` only (others become `-`), no `-` at either end.
fn dns_clean(s: &str) -> String {
    let lower: String = s
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    lower.trim_matches('-').to_string()
}

/// The top object's name: `<prefix>-<run id>` (or `hoist-<run id>`), a DNS label of
/// at most 63 characters; the prefix is cut to fit, never the run id.
pub fn object_name(prefix: Option<&str>, run_id: &str) -> String {
    let mut id = dns_clean(run_id);
    if id.len() > 53 {
        // Not a hoist run id (12 characters); keep it unique anyway.
        let digest = Sha256::digest(run_id.as_bytes());
        let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        id = format!("{}-{hash}", id[..44].trim_end_matches('-'));
    }
    let prefix = prefix.map(dns_clean).filter(|p| !p.is_empty());
    let prefix = prefix.as_deref().unwrap_or("hoist");
    let room = 63usize.saturating_sub(id.len() + 1);
    let cut = prefix[..prefix.len().min(room)].trim_end_matches('-');
    match (cut.is_empty(), id.is_empty()) {
        (_, true) => cut.to_string(),
        (true, false) => id,
        (false, false) => format!("{cut}-{id}"),
    }
}

/// The `hoist.dev/*` labels of a run's objects (label-safe values).
pub fn run_labels(job: &JobSpec) -> BTreeMap<String, String> {
    exact_values(job)
        .into_iter()
        .filter(|(k, _)| k != ANNOTATION_PROJECT)
        .map(|(k, v)| (k, label_value(&v)))
        .collect()
}

/// The `hoist.dev/*` annotations: the exact values.
fn exact_values(job: &JobSpec) -> BTreeMap<String, String> {
    let queue = job
        .queue
        .rsplit_once('/')
        .map_or(job.queue.as_str(), |(_, q)| q);
    [
        (LABEL_RUN_ID, job.run_id.as_str()),
        (LABEL_AGENT, job.agent_name.as_str()),
        (LABEL_QUEUE, queue),
        (LABEL_ENTITY, job.entity.as_str()),
        (ANNOTATION_PROJECT, job.project.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The per-run env Secret being filled: key → value.
struct EnvSecret {
    name: String,
    data: BTreeMap<String, String>,
}

impl EnvSecret {
    /// The key holding `value` for variable `var`: the variable's name (made a valid
    /// Secret key), or `NAME.2`, `NAME.3`, … when containers give the same name
    /// different values.
    fn key_for(&mut self, var: &str, value: &str) -> String {
        let base: String = var
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let base = if base.is_empty() {
            "_".to_string()
        } else {
            base
        };
        let mut key = base.clone();
        let mut n = 1;
        loop {
            match self.data.get(&key) {
                Some(v) if v == value => return key,
                Some(_) => {
                    n += 1;
                    key = format!("{base}.{n}");
                }
                None => {
                    self.data.insert(key.clone(), value.to_string());
                    return key;
                }
            }
        }
    }

    fn reference(&mut self, var: &str, value: &str) -> Value {
        let key = self.key_for(var, value);
        json!({
            "name": var,
            "valueFrom": {"secretKeyRef": {"name": self.name, "key": key}},
        })
    }
}

/// True when an env value must not be written into the object.
fn is_secret(name: &str, value: &str) -> bool {
    name == "HOIST_RUN_TOKEN" || looks_secret(name) || looks_like_credential(value)
}

fn shown_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A JSON pointer segment.
fn pointer_escape(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

/// The object at `ptr`, created (as `{}`) along the way when missing or null; `None`
/// (with a problem) when something else is in the way.
fn object_at<'v>(
    root: &'v mut Value,
    keys: &[&str],
    base_path: &str,
    problems: &mut Vec<String>,
) -> Option<&'v mut Map<String, Value>> {
    let mut cur = root;
    let mut path = base_path.to_string();
    for k in keys {
        let Value::Object(m) = cur else {
            return None;
        };
        path = key_path(&path, k);
        let slot = m.entry(k.to_string()).or_insert(Value::Null);
        if slot.is_null() {
            *slot = Value::Object(Map::new());
        }
        if !slot.is_object() {
            problems.push(format!(
                "{path}: expected an object, found {}",
                shown_type(slot)
            ));
            return None;
        }
        cur = slot;
    }
    cur.as_object_mut()
}

/// Every pod template (an object with `spec.containers`) in `v`, as (JSON pointer,
/// path), in document order. `metadata` and `status` are not searched.
fn find_templates(v: &Value, ptr: &str, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            if m.get("spec")
                .and_then(|s| s.get("containers"))
                .is_some_and(Value::is_array)
            {
                out.push((ptr.to_string(), path.to_string()));
                return;
            }
            for (k, x) in m {
                if k == "metadata" || k == "status" {
                    continue;
                }
                find_templates(
                    x,
                    &format!("{ptr}/{}", pointer_escape(k)),
                    &key_path(path, k),
                    out,
                );
            }
        }
        Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                find_templates(x, &format!("{ptr}/{i}"), &index_path(path, i), out);
            }
        }
        _ => {}
    }
}

/// Merges `add` into the string map at `metadata.<key>` of `meta` (`add` wins).
fn merge_string_map(
    meta: &mut Map<String, Value>,
    key: &str,
    add: &BTreeMap<String, String>,
    path: &str,
    problems: &mut Vec<String>,
) {
    let slot = meta.entry(key.to_string()).or_insert(Value::Null);
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    let Value::Object(m) = slot else {
        problems.push(format!(
            "{}: expected an object of strings, found {}",
            key_path(path, key),
            shown_type(slot)
        ));
        return;
    };
    for (k, v) in add {
        m.insert(k.clone(), Value::String(v.clone()));
    }
}

/// The run's view for one container pass.
struct Injection<'a> {
    job: &'a JobSpec,
    env_secret: &'a mut EnvSecret,
    non_root: bool,
    problems: &'a mut Vec<String>,
}

/// Builds what to submit for `job` (see the module docs).
pub fn build(job: &JobSpec, cx: &SpecContext<'_>) -> Result<Submission, RunnerError> {
    let refused = |problems: Vec<String>| {
        RunnerError::Refused(format!(
            "the kubernetes queue config cannot run on this agent:\n  - {}",
            problems.join("\n  - ")
        ))
    };
    let Value::Object(config) = &job.resource_config else {
        return Err(refused(vec![format!(
            "(document): expected an object (a batch/v1 Job, or a custom object with apiVersion and kind), found {}",
            shown_type(&job.resource_config)
        )]));
    };
    let mut problems = Vec::new();
    let text = |key: &str, problems: &mut Vec<String>| -> Option<String> {
        match config.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                problems.push(format!(
                    "{key}: expected a string, found {}",
                    shown_type(other)
                ));
                None
            }
        }
    };
    let api = text("apiVersion", &mut problems);
    let kind = text("kind", &mut problems);
    if !problems.is_empty() {
        return Err(refused(problems));
    }
    let (api_version, kind) = match (api.as_deref(), kind.as_deref()) {
        (None | Some("batch/v1"), None | Some("Job")) => {
            ("batch/v1".to_string(), "Job".to_string())
        }
        (Some(a), Some("Job")) if a == "v1" || a.starts_with("batch/") => {
            return Err(refused(vec![format!(
                "apiVersion: a Job is served as batch/v1, not {a:?}"
            )]));
        }
        (Some(a), Some(k)) => (a.to_string(), k.to_string()),
        (None, Some(k)) => {
            return Err(refused(vec![format!(
                "apiVersion: missing; a {k} other than a batch/v1 Job needs its apiVersion (e.g. kubeflow.org/v1)"
            )]));
        }
        (Some(a), None) => {
            return Err(refused(vec![format!(
                "kind: missing; an object of {a} other than a batch/v1 Job needs its kind"
            )]));
        }
    };
    let is_job = api_version == "batch/v1" && kind == "Job";

    // The top object, keys in the usual order.
    let mut top = Map::new();
    top.insert("apiVersion".into(), Value::String(api_version.clone()));
    top.insert("kind".into(), Value::String(kind.clone()));
    for (k, v) in config {
        if k != "apiVersion" && k != "kind" {
            top.insert(k.clone(), v.clone());
        }
    }
    let mut object = Value::Object(top);

    let meta_in = config.get("metadata").and_then(Value::as_object);
    let meta_str = |k: &str| {
        meta_in
            .and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
    };
    let prefix = meta_str("name").or(meta_str("generateName"));
    let name = object_name(prefix, &job.run_id);
    let namespace = meta_str("namespace")
        .unwrap_or(cx.default_namespace)
        .to_string();
    let labels = run_labels(job);
    let annotations = exact_values(job);
    let env_name = format!("{name}-env");
    let pull_name = format!("{name}-pull");

    if let Some(meta) = object_at(&mut object, &["metadata"], "", &mut problems) {
        meta.remove("generateName");
        meta.insert("name".into(), Value::String(name.clone()));
        meta.insert("namespace".into(), Value::String(namespace.clone()));
        merge_string_map(meta, "labels", &labels, "metadata", &mut problems);
        merge_string_map(meta, "annotations", &annotations, "metadata", &mut problems);
    }

    let mut templates = Vec::new();
    if is_job {
        if let Some(spec) = object_at(&mut object, &["spec"], "", &mut problems) {
            set_default(spec, "backoffLimit", json!(0));
        }
        if let Some(pod) = object_at(
            &mut object,
            &["spec", "template", "spec"],
            "",
            &mut problems,
        ) {
            let containers = pod.entry("containers").or_insert(Value::Null);
            match containers {
                Value::Null => *containers = json!([{"name": "main"}]),
                Value::Array(a) if a.is_empty() => a.push(json!({"name": "main"})),
                _ => {}
            }
        }
        templates.push(("/spec/template".to_string(), "spec.template".to_string()));
    } else {
        find_templates(&object, "", "", &mut templates);
    }

    let mut env_secret = EnvSecret {
        name: env_name,
        data: BTreeMap::new(),
    };
    let non_root = cx.settings.require_non_root || cx.secure_mode;
    // A RayJob runs its command through `spec.entrypoint` on a Ray cluster whose head
    // and workers must keep their own commands.
    let ray_job = api_version.starts_with("ray.io/") && kind == "RayJob";
    if ray_job {
        ray_entrypoint(&mut object, job, &mut problems);
    }
    for (i, (ptr, path)) in templates.iter().enumerate() {
        let Some(template) = object.pointer_mut(ptr) else {
            continue;
        };
        if let Some(meta) = object_at(template, &["metadata"], path, &mut problems) {
            merge_string_map(
                meta,
                "labels",
                &labels,
                &key_path(path, "metadata"),
                &mut problems,
            );
            merge_string_map(
                meta,
                "annotations",
                &annotations,
                &key_path(path, "metadata"),
                &mut problems,
            );
        }
        let spec_path = key_path(path, "spec");
        let Some(pod) = object_at(template, &["spec"], path, &mut problems) else {
            continue;
        };
        let mut inj = Injection {
            job,
            env_secret: &mut env_secret,
            non_root,
            problems: &mut problems,
        };
        pod_spec(pod, &spec_path, i == 0 && !ray_job, &mut inj);
        if cx.docker_config_json.is_some() {
            pull_secret_ref(pod, &spec_path, &pull_name, &mut problems);
        }
    }

    let mut secrets = Vec::new();
    let secret_meta = |name: &str| {
        json!({
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
        })
    };
    if !env_secret.data.is_empty() {
        let data: Map<String, Value> = env_secret
            .data
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(BASE64.encode(v))))
            .collect();
        secrets.push(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": secret_meta(&env_secret.name),
            "type": "Opaque",
            "data": data,
        }));
    }
    if let Some(dcj) = cx.docker_config_json {
        secrets.push(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": secret_meta(&pull_name),
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": BASE64.encode(dcj.expose())},
        }));
    }

    problems.extend(policy::check(&object, cx.settings, cx.secure_mode));
    if !problems.is_empty() {
        return Err(refused(problems));
    }
    Ok(Submission {
        namespace,
        name,
        api_version,
        kind,
        object,
        secrets,
        labels,
    })
}

/// Sets `key` to `value` unless the map has a non-null value for it.
fn set_default(m: &mut Map<String, Value>, key: &str, value: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_string(), value);
    }
}

/// Fills one pod spec: `restartPolicy`, then every init container and container.
fn pod_spec(
    pod: &mut Map<String, Value>,
    path: &str,
    first_template: bool,
    inj: &mut Injection<'_>,
) {
    set_default(pod, "restartPolicy", json!("Never"));
    let windows = pod
        .get("os")
        .and_then(|o| o.get("name"))
        .and_then(Value::as_str)
        == Some("windows");
    let pod_sc = pod.get("securityContext").cloned().unwrap_or(Value::Null);
    let pod_seccomp = pod_sc.get("seccompProfile").is_some_and(|v| !v.is_null());
    let pod_non_root = pod_sc.get("runAsNonRoot").is_some_and(|v| !v.is_null());
    for list in ["initContainers", "containers"] {
        let list_path = key_path(path, list);
        let items = match pod.get_mut(list) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(items)) => items,
            Some(other) => {
                inj.problems.push(format!(
                    "{list_path}: expected a list of containers, found {}",
                    shown_type(other)
                ));
                continue;
            }
        };
        let mut taken: Vec<String> = items
            .iter()
            .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
            .collect();
        for (i, c) in items.iter_mut().enumerate() {
            let cpath = index_path(&list_path, i);
            let Value::Object(c) = c else {
                inj.problems.push(format!(
                    "{cpath}: expected a container (an object), found {}",
                    shown_type(c)
                ));
                continue;
            };
            if c.get("name").is_none_or(Value::is_null) {
                let base = if list == "containers" { "main" } else { "init" };
                let mut name = base.to_string();
                let mut n = 0;
                while taken.contains(&name) {
                    n += 1;
                    name = format!("{base}-{n}");
                }
                taken.push(name.clone());
                c.insert("name".into(), Value::String(name));
            }
            image(c, &cpath, inj);
            if first_template && list == "containers" && i == 0 {
                command(c, inj.job);
            }
            env(c, &cpath, inj);
            if !windows {
                security_context(c, inj.non_root && !pod_non_root, !pod_seccomp);
            }
        }
    }
}

fn image(c: &mut Map<String, Value>, path: &str, inj: &mut Injection<'_>) {
    let wants = match c.get("image") {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty() || s.trim() == IMAGE_MACRO,
        Some(other) => {
            inj.problems.push(format!(
                "{}: expected an image reference (a string), found {}",
                key_path(path, "image"),
                shown_type(other)
            ));
            return;
        }
    };
    if !wants {
        return;
    }
    match &inj.job.image {
        Some(img) => {
            c.insert("image".into(), Value::String(img.clone()));
        }
        None => inj.problems.push(format!(
            "{}: the container has no image and the run has none (launch the run with an image, or set `image` in the queue config)",
            key_path(path, "image")
        )),
    }
}

/// A RayJob's `spec.entrypoint` (a shell command line): the run's entry point and
/// args when it has an entry point; its args appended to the config's entrypoint when
/// it has only args.
fn ray_entrypoint(object: &mut Value, job: &JobSpec, problems: &mut Vec<String>) {
    let ep = job.entry_point.as_ref().filter(|e| !e.is_empty());
    if ep.is_none() && job.args.is_empty() {
        return;
    }
    let Some(spec) = object_at(object, &["spec"], "", problems) else {
        return;
    };
    let line = match (ep, spec.get("entrypoint")) {
        (Some(_), _) => shell_join(&job.command()),
        (None, Some(Value::String(base))) if !base.trim().is_empty() => {
            format!("{} {}", base.trim_end(), shell_join(&job.args))
        }
        (None, _) => shell_join(&job.args),
    };
    spec.insert("entrypoint".into(), Value::String(line));
}

fn command(c: &mut Map<String, Value>, job: &JobSpec) {
    if let Some(ep) = job.entry_point.as_ref().filter(|e| !e.is_empty()) {
        c.insert("command".into(), json!(ep));
    }
    if !job.args.is_empty() {
        c.insert("args".into(), json!(job.args));
    }
}

fn env(c: &mut Map<String, Value>, path: &str, inj: &mut Injection<'_>) {
    let config_env: Vec<Value> = match c.remove("env") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(other) => {
            inj.problems.push(format!(
                "{}: expected a list of {{name, value}} entries, found {}",
                key_path(path, "env"),
                shown_type(&other)
            ));
            c.insert("env".into(), other);
            return;
        }
    };
    let config_names: Vec<&str> = config_env
        .iter()
        .filter_map(|e| e.get("name").and_then(Value::as_str))
        .collect();
    let mut out = Vec::new();
    let hoist = inj.job.env.iter().filter(|(k, _)| k.starts_with("HOIST_"));
    let run = inj.job.env.iter().filter(|(k, _)| !k.starts_with("HOIST_"));
    for (k, v) in hoist {
        out.push(env_entry(k, v, inj.env_secret));
    }
    for (k, v) in run {
        if !config_names.contains(&k.as_str()) {
            out.push(env_entry(k, v, inj.env_secret));
        }
    }
    for e in &config_env {
        let name = e.get("name").and_then(Value::as_str);
        if let Some(n) = name
            && n.starts_with("HOIST_")
            && inj.job.env.contains_key(n)
        {
            continue;
        }
        // A literal secret of the config's own moves into the Secret too.
        if let (Some(n), Some(Value::String(v))) = (name, e.get("value"))
            && is_secret(n, v)
            && !v.contains("$(")
            && e.get("valueFrom").is_none_or(Value::is_null)
        {
            out.push(inj.env_secret.reference(n, v));
            continue;
        }
        out.push(e.clone());
    }
    c.insert("env".into(), Value::Array(out));
}

fn env_entry(name: &str, value: &str, secret: &mut EnvSecret) -> Value {
    if is_secret(name, value) {
        secret.reference(name, value)
    } else {
        json!({"name": name, "value": value})
    }
}

/// hoist's default container securityContext, merged under the config's.
fn security_context(c: &mut Map<String, Value>, non_root: bool, seccomp: bool) {
    let config = c.get("securityContext").cloned().unwrap_or(Value::Null);
    let privileged = config.get("privileged").and_then(Value::as_bool) == Some(true);
    let sys_admin = config
        .pointer("/capabilities/add")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|cap| {
            let up = cap.to_ascii_uppercase();
            up.strip_prefix("CAP_").unwrap_or(&up) == "SYS_ADMIN"
        });
    let mut sc = Map::new();
    if !privileged && !sys_admin {
        sc.insert("allowPrivilegeEscalation".into(), json!(false));
    }
    sc.insert("capabilities".into(), json!({"drop": ["ALL"]}));
    if seccomp {
        sc.insert("seccompProfile".into(), json!({"type": "RuntimeDefault"}));
    }
    if non_root {
        sc.insert("runAsNonRoot".into(), json!(true));
    }
    let mut sc = Value::Object(sc);
    if config.is_object() {
        hoist_core::merge::deep_merge(&mut sc, &config);
    }
    c.insert("securityContext".into(), sc);
}

fn pull_secret_ref(
    pod: &mut Map<String, Value>,
    path: &str,
    name: &str,
    problems: &mut Vec<String>,
) {
    let slot = pod.entry("imagePullSecrets").or_insert(Value::Null);
    if slot.is_null() {
        *slot = json!([]);
    }
    let Value::Array(list) = slot else {
        problems.push(format!(
            "{}: expected a list of {{name}} entries, found {}",
            key_path(path, "imagePullSecrets"),
            shown_type(slot)
        ));
        return;
    };
    if !list
        .iter()
        .any(|s| s.get("name").and_then(Value::as_str) == Some(name))
    {
        list.push(json!({"name": name}));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoist_core::secret::EnvVars;

    const RUN: &str = "k7m2x9p4q1ab";
    const TOKEN: &str = "hrt_0123456789abcdefghijklmnopqrstuv";
    const API_KEY: &str = "not-a-pattern-but-named-like-a-key";
    const DB_URL: &str = "postgres://app:s3cretpw@db:5432/app";
    const REGISTRY_AUTH: &str =
        r#"{"auths":{"registry.local:5000":{"auth":"dXNlcjpyZWdpc3RyeXB3"}}}"#;

    fn env(pairs: &[(&str, &str)]) -> EnvVars {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn job(config: Value) -> JobSpec {
        JobSpec {
            run_id: RUN.into(),
            run_name: "bright-river-7".into(),
            project: "mnist".into(),
            entity: "ml-team".into(),
            queue: "ml-team/k8s".into(),
            agent_name: "gpu-agent-1".into(),
            image: Some("registry.local/mnist:3f2a".into()),
            entry_point: Some(vec!["python".into(), "train.py".into()]),
            args: vec!["--epochs".into(), "3".into()],
            env: env(&[
                ("HOIST_RUN_ID", RUN),
                ("HOIST_BASE_URL", "http://hoist.example:8080"),
                ("HOIST_RUN_TOKEN", TOKEN),
                ("EPOCHS", "3"),
            ]),
            resource_config: config,
            labels: BTreeMap::new(),
            source: None,
        }
    }

    fn settings() -> KubernetesSettings {
        KubernetesSettings::default()
    }

    fn cx(settings: &KubernetesSettings) -> SpecContext<'_> {
        SpecContext {
            default_namespace: "default",
            settings,
            secure_mode: false,
            docker_config_json: None,
        }
    }

    fn build_ok(job: &JobSpec) -> Submission {
        build(job, &cx(&settings())).expect("builds")
    }

    fn refused(job: &JobSpec, cx: &SpecContext<'_>) -> String {
        match build(job, cx) {
            Err(RunnerError::Refused(m)) => m,
            Err(e) => panic!("expected a refusal, got {e:?}"),
            Ok(s) => panic!("expected a refusal, got {:#}", s.object),
        }
    }

    fn labels() -> Value {
        json!({
            "hoist.dev/agent": "gpu-agent-1",
            "hoist.dev/entity": "ml-team",
            "hoist.dev/queue": "k8s",
            "hoist.dev/run-id": RUN,
        })
    }

    fn annotations() -> Value {
        let mut a = labels();
        a["hoist.dev/project"] = json!("mnist");
        a
    }

    fn secure_defaults() -> Value {
        json!({
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        })
    }

    fn b64(s: &str) -> Value {
        Value::String(BASE64.encode(s))
    }

    /// The queue config of W&B's docs (seed `000_*`, the Kubernetes tab), as written.
    const SEED_JOB: &str = "
kind: Job
spec:
  template:
    spec:
      containers:
        - name: image-name
          image: image-name:latest
      restartPolicy: Never
metadata:
  name: image-name
apiVersion: batch/v1
";

    #[test]
    fn the_seed_job_config_becomes_the_expected_job() {
        let config = hoist_core::yaml::parse_document(SEED_JOB).unwrap();
        let s = build_ok(&job(config));
        let name = format!("image-name-{RUN}");
        assert_eq!(
            (s.api_version.as_str(), s.kind.as_str()),
            ("batch/v1", "Job")
        );
        assert_eq!(
            (s.name.as_str(), s.namespace.as_str()),
            (name.as_str(), "default")
        );
        let env_secret = format!("{name}-env");
        assert_eq!(
            s.object,
            json!({
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {
                    "name": name,
                    "namespace": "default",
                    "labels": labels(),
                    "annotations": annotations(),
                },
                "spec": {
                    "backoffLimit": 0,
                    "template": {
                        "metadata": {"labels": labels(), "annotations": annotations()},
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [{
                                "name": "image-name",
                                // The config names an image: it stays.
                                "image": "image-name:latest",
                                "command": ["python", "train.py"],
                                "args": ["--epochs", "3"],
                                "env": [
                                    {"name": "HOIST_BASE_URL", "value": "http://hoist.example:8080"},
                                    {"name": "HOIST_RUN_ID", "value": RUN},
                                    {"name": "HOIST_RUN_TOKEN", "valueFrom": {"secretKeyRef": {"name": env_secret, "key": "HOIST_RUN_TOKEN"}}},
                                    {"name": "EPOCHS", "value": "3"},
                                ],
                                "securityContext": secure_defaults(),
                            }],
                        },
                    },
                },
            })
        );
        assert_eq!(
            s.secrets,
            [json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": env_secret, "namespace": "default", "labels": labels(), "annotations": annotations()},
                "type": "Opaque",
                "data": {"HOIST_RUN_TOKEN": b64(TOKEN)},
            })]
        );
        assert_eq!(
            s.labels,
            serde_json::from_value::<BTreeMap<String, String>>(labels()).unwrap()
        );
        assert_eq!(s.selector(), format!("hoist.dev/run-id={RUN}"));
        assert_eq!(run_selector(RUN), s.selector());
        // Keys in the order people expect to read them.
        let keys: Vec<&String> = s.object.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["apiVersion", "kind", "spec", "metadata"]);
        // hoist never sets a TTL: it deletes the Job once it has the logs.
        assert!(!s.object.to_string().contains("ttlSecondsAfterFinished"));
    }

    #[test]
    fn the_minimal_form_gets_a_main_container_with_the_run_image() {
        for config in [
            json!({}),
            json!({"spec": {"template": {"spec": {"containers": []}}}}),
            json!({"metadata": {}, "spec": null}),
            json!({"spec": {"backoffLimit": null, "template": {"spec": {"restartPolicy": null}}}}),
        ] {
            let s = build_ok(&job(config));
            assert_eq!(s.name, format!("hoist-{RUN}"));
            let c = &s.object["spec"]["template"]["spec"]["containers"];
            assert_eq!(c.as_array().unwrap().len(), 1);
            assert_eq!(c[0]["name"], "main");
            assert_eq!(c[0]["image"], "registry.local/mnist:3f2a");
            assert_eq!(c[0]["command"], json!(["python", "train.py"]));
            assert_eq!(s.object["spec"]["backoffLimit"], 0);
            assert_eq!(
                s.object["spec"]["template"]["spec"]["restartPolicy"],
                "Never"
            );
        }
        // What the config sets stays.
        let s = build_ok(&job(
            json!({"spec": {"backoffLimit": 3, "template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "x"}]}}}}),
        ));
        assert_eq!(s.object["spec"]["backoffLimit"], 3);
        assert_eq!(
            s.object["spec"]["template"]["spec"]["restartPolicy"],
            "OnFailure"
        );
    }

    #[test]
    fn names_are_prefixes_cut_to_fit_never_the_run_id() {
        assert_eq!(object_name(Some("train"), RUN), format!("train-{RUN}"));
        assert_eq!(
            object_name(Some("My_Train.Job"), RUN),
            format!("my-train-job-{RUN}")
        );
        assert_eq!(object_name(None, RUN), format!("hoist-{RUN}"));
        assert_eq!(object_name(Some("---"), RUN), format!("hoist-{RUN}"));
        let long = "a".repeat(80);
        let n = object_name(Some(&long), RUN);
        assert_eq!(n.len(), 63);
        assert!(n.ends_with(&format!("-{RUN}")), "{n}");
        // A cut that ends on `-` loses it.
        let dashy = format!("{}-b", "a".repeat(49));
        let n = object_name(Some(&dashy), RUN);
        assert_eq!(n, format!("{}-{RUN}", "a".repeat(49)));
        for prefix in [None, Some("x"), Some(long.as_str()), Some("Ünïcode name!")] {
            let n = object_name(prefix, RUN);
            assert!(n.len() <= 63, "{n}");
            assert!(
                n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{n}"
            );
            assert!(!n.starts_with('-') && !n.ends_with('-'), "{n}");
        }
        // Through build: metadata.name, else generateName, is the prefix.
        let s = build_ok(&job(json!({"metadata": {"generateName": "sweep-"}})));
        assert_eq!(s.name, format!("sweep-{RUN}"));
        assert!(s.object["metadata"].get("generateName").is_none());
        assert_eq!(s.object["metadata"]["name"], s.name);
    }

    #[test]
    fn namespace_precedence() {
        let s = build_ok(&job(json!({"metadata": {"namespace": "ml-jobs"}})));
        assert_eq!(s.namespace, "ml-jobs");
        assert_eq!(s.object["metadata"]["namespace"], "ml-jobs");
        assert_eq!(s.secrets[0]["metadata"]["namespace"], "ml-jobs");
        let settings = settings();
        let c = SpecContext {
            default_namespace: "from-agent",
            ..cx(&settings)
        };
        let s = build(&job(json!({"metadata": {"name": "x"}})), &c).unwrap();
        assert_eq!(s.namespace, "from-agent");
        assert_eq!(s.object["metadata"]["namespace"], "from-agent");
        let s = build(&job(json!({"metadata": {"namespace": "ml-jobs"}})), &c).unwrap();
        assert_eq!(s.namespace, "ml-jobs");
    }

    #[test]
    fn image_injection_rules() {
        let config = json!({"spec": {"template": {"spec": {
            "initContainers": [{"name": "fetch"}],
            "containers": [
                {"name": "a"},
                {"name": "b", "image": "${image_uri}"},
                {"name": "c", "image": "own/sidecar:1"},
                {"image": ""},
            ],
        }}}});
        let s = build_ok(&job(config.clone()));
        let pod = &s.object["spec"]["template"]["spec"];
        let run_image = "registry.local/mnist:3f2a";
        assert_eq!(pod["initContainers"][0]["image"], run_image);
        assert_eq!(pod["containers"][0]["image"], run_image);
        assert_eq!(pod["containers"][1]["image"], run_image);
        assert_eq!(pod["containers"][2]["image"], "own/sidecar:1");
        assert_eq!(pod["containers"][3]["image"], run_image);
        // Unnamed containers get a free name.
        assert_eq!(pod["containers"][3]["name"], "main");
        // The command goes to the first container only.
        assert_eq!(
            pod["containers"][0]["command"],
            json!(["python", "train.py"])
        );
        for i in 1..4 {
            assert!(pod["containers"][i].get("command").is_none());
            assert!(pod["containers"][i].get("args").is_none());
        }
        assert!(pod["initContainers"][0].get("command").is_none());

        // A run without an image: every container left without one is refused, by path.
        let mut no_image = job(config);
        no_image.image = None;
        let m = refused(&no_image, &cx(&settings()));
        for p in [
            "spec.template.spec.initContainers[0].image",
            "spec.template.spec.containers[0].image",
            "spec.template.spec.containers[1].image",
            "spec.template.spec.containers[3].image",
        ] {
            assert!(
                m.contains(&format!(
                    "{p}: the container has no image and the run has none"
                )),
                "{p} in {m}"
            );
        }
        assert!(!m.contains("containers[2]"), "{m}");
    }

    #[test]
    fn run_command_only_when_the_run_has_one() {
        let config = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "i", "command": ["sh", "-c"], "args": ["echo hi"]}]}}}});
        let mut j = job(config);
        j.entry_point = None;
        j.args = vec![];
        let s = build_ok(&j);
        let c = &s.object["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["command"], json!(["sh", "-c"]));
        assert_eq!(c["args"], json!(["echo hi"]));
        j.args = vec!["echo bye".into()];
        let s = build_ok(&j);
        let c = &s.object["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["command"], json!(["sh", "-c"]));
        assert_eq!(c["args"], json!(["echo bye"]));
    }

    #[test]
    fn env_precedence() {
        let config = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "env": [
            {"name": "HOIST_RUN_ID", "value": "spoofed"},
            {"name": "EPOCHS", "value": "5"},
            {"name": "OUT", "value": "/out/$(HOIST_RUN_ID)"},
            {"name": "HOIST_OWN", "value": "kept"},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ]}]}}}});
        let s = build_ok(&job(config));
        let env = &s.object["spec"]["template"]["spec"]["containers"][0]["env"];
        let names: Vec<&str> = env
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "HOIST_BASE_URL",
                "HOIST_RUN_ID",
                "HOIST_RUN_TOKEN",
                "EPOCHS",
                "OUT",
                "HOIST_OWN",
                "POD_IP"
            ]
        );
        // hoist's own variable wins over the config's; the config's wins over the run's.
        assert_eq!(env[1], json!({"name": "HOIST_RUN_ID", "value": RUN}));
        assert_eq!(env[3], json!({"name": "EPOCHS", "value": "5"}));
        assert_eq!(env[6]["valueFrom"]["fieldRef"]["fieldPath"], "status.podIP");
    }

    #[test]
    fn secrets_never_appear_literally() {
        let mut j = job(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "env": [{"name": "HF_TOKEN", "value": "hf_literal_in_config_123"}, {"name": "DSN", "value": "host=db password=$(DB_PASS)"}]},
            {"name": "b", "image": "side", "env": [{"name": "HF_TOKEN", "value": "another_value_456"}]},
        ]}}}}));
        j.env.insert("API_KEY".into(), API_KEY.into());
        j.env.insert("DATABASE_URL".into(), DB_URL.into());
        let dcj = Secret::new(REGISTRY_AUTH);
        let settings = settings();
        let c = SpecContext {
            docker_config_json: Some(&dcj),
            ..cx(&settings)
        };
        let s = build(&j, &c).unwrap();
        let object = s.object.to_string();
        for secret in [
            TOKEN,
            API_KEY,
            DB_URL,
            "s3cretpw",
            "hf_literal_in_config_123",
            "another_value_456",
            "dXNlcjpyZWdpc3RyeXB3",
            REGISTRY_AUTH,
        ] {
            assert!(!object.contains(secret), "{secret} in {object}");
            assert!(
                !object.contains(&BASE64.encode(secret)),
                "base64 of {secret} in {object}"
            );
        }
        let name = format!("hoist-{RUN}");
        let env_name = format!("{name}-env");
        let reference = |var: &str, key: &str| json!({"name": var, "valueFrom": {"secretKeyRef": {"name": env_name, "key": key}}});
        for c in 0..2 {
            let env = &s.object["spec"]["template"]["spec"]["containers"][c]["env"];
            let get = |n: &str| {
                env.as_array()
                    .unwrap()
                    .iter()
                    .find(|e| e["name"] == n)
                    .cloned()
                    .unwrap()
            };
            assert_eq!(
                get("HOIST_RUN_TOKEN"),
                reference("HOIST_RUN_TOKEN", "HOIST_RUN_TOKEN")
            );
            assert_eq!(get("API_KEY"), reference("API_KEY", "API_KEY"));
            assert_eq!(
                get("DATABASE_URL"),
                reference("DATABASE_URL", "DATABASE_URL")
            );
            assert_eq!(get("EPOCHS"), json!({"name": "EPOCHS", "value": "3"}));
        }
        let env0 = &s.object["spec"]["template"]["spec"]["containers"][0]["env"];
        let env1 = &s.object["spec"]["template"]["spec"]["containers"][1]["env"];
        // Same name, different values: different keys.
        assert!(
            env0.as_array()
                .unwrap()
                .contains(&reference("HF_TOKEN", "HF_TOKEN"))
        );
        assert!(
            env1.as_array()
                .unwrap()
                .contains(&reference("HF_TOKEN", "HF_TOKEN.2"))
        );
        // A value that refers to other variables stays, so Kubernetes expands it.
        assert!(
            env0.as_array()
                .unwrap()
                .contains(&json!({"name": "DSN", "value": "host=db password=$(DB_PASS)"}))
        );

        assert_eq!(s.secrets.len(), 2);
        let data = &s.secrets[0]["data"];
        assert_eq!(s.secrets[0]["metadata"]["name"], env_name);
        assert_eq!(s.secrets[0]["type"], "Opaque");
        assert_eq!(
            data,
            &json!({
                "API_KEY": b64(API_KEY),
                "DATABASE_URL": b64(DB_URL),
                "HF_TOKEN": b64("hf_literal_in_config_123"),
                "HF_TOKEN.2": b64("another_value_456"),
                "HOIST_RUN_TOKEN": b64(TOKEN),
            })
        );
        let pull = &s.secrets[1];
        assert_eq!(pull["metadata"]["name"], format!("{name}-pull"));
        assert_eq!(pull["type"], "kubernetes.io/dockerconfigjson");
        assert_eq!(pull["data"][".dockerconfigjson"], b64(REGISTRY_AUTH));
        assert_eq!(pull["metadata"]["labels"], labels());
        assert_eq!(
            s.object["spec"]["template"]["spec"]["imagePullSecrets"],
            json!([{"name": format!("{name}-pull")}])
        );

        // Debug and the dry-run view show no secret either.
        let shown = format!("{s:?}{}", serde_json::to_string(&s.masked()).unwrap());
        for secret in [
            TOKEN,
            API_KEY,
            DB_URL,
            "hf_literal_in_config_123",
            "another_value_456",
            REGISTRY_AUTH,
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
            assert!(
                !shown.contains(&BASE64.encode(secret)),
                "base64 of {secret} in {shown}"
            );
        }
        let masked = s.masked();
        assert_eq!(masked.len(), 3);
        assert_eq!(masked[0]["data"]["HOIST_RUN_TOKEN"], MASK);
        assert_eq!(masked[1]["data"][".dockerconfigjson"], MASK);
        assert_eq!(masked[2], s.object);
        assert!(format!("{s:?}").contains(&env_name));
    }

    #[test]
    fn labels_are_label_safe_and_annotations_exact() {
        assert_eq!(label_value("gpu-agent_1.x"), "gpu-agent_1.x");
        assert_eq!(label_value(""), "");
        let long = format!("agent-{}", "x".repeat(58));
        let l = label_value(&long);
        assert!(l.len() <= 63 && l.starts_with("agent-xxx"), "{l}");
        assert_ne!(
            label_value(&format!("{long}a")),
            label_value(&format!("{long}b"))
        );
        let odd = label_value("team/queue name");
        assert!(
            odd.starts_with("team-queue-name-") && odd.len() == "team-queue-name-".len() + 8,
            "{odd}"
        );
        assert_eq!(label_value("-x-").len(), "x-".len() + 8);
        for v in [long.as_str(), "team/queue name", "-x-", "_", "ünï"] {
            let l = label_value(v);
            hoist_core::resource::kubernetes::label_value(&l)
                .unwrap_or_else(|e| panic!("{v}: {e}"));
        }

        let mut j = job(json!({}));
        j.agent_name = long.clone();
        let s = build_ok(&j);
        assert_eq!(s.labels[LABEL_AGENT], label_value(&long));
        assert_eq!(
            s.object["metadata"]["labels"][LABEL_AGENT],
            label_value(&long)
        );
        assert_eq!(s.object["metadata"]["annotations"][LABEL_AGENT], long);
        assert_eq!(
            s.object["spec"]["template"]["metadata"]["annotations"][LABEL_AGENT],
            long
        );
        assert_eq!(
            agent_selector(&long),
            format!("hoist.dev/agent={}", label_value(&long))
        );
        // The config's own labels stay; hoist's win.
        let s = build_ok(&job(
            json!({"metadata": {"labels": {"team": "ml", "hoist.dev/run-id": "fake"}},
            "spec": {"template": {"metadata": {"labels": {"app": "trainer"}}}}}),
        ));
        assert_eq!(s.object["metadata"]["labels"]["team"], "ml");
        assert_eq!(s.object["metadata"]["labels"][LABEL_RUN_ID], RUN);
        assert_eq!(
            s.object["spec"]["template"]["metadata"]["labels"]["app"],
            "trainer"
        );
        assert_eq!(
            s.object["spec"]["template"]["metadata"]["labels"][LABEL_QUEUE],
            "k8s"
        );
    }

    fn check_template(s: &Submission, ptr: &str, first: bool) {
        let t = s.object.pointer(ptr).unwrap_or_else(|| panic!("no {ptr}"));
        assert_eq!(t["metadata"]["labels"], labels(), "{ptr}");
        assert_eq!(t["metadata"]["annotations"], annotations(), "{ptr}");
        let pod = &t["spec"];
        assert!(pod.get("restartPolicy").is_some(), "{ptr}");
        let c = &pod["containers"][0];
        assert_eq!(c["image"], "registry.local/mnist:3f2a", "{ptr}");
        assert_eq!(
            c["env"][1],
            json!({"name": "HOIST_RUN_ID", "value": RUN}),
            "{ptr}"
        );
        assert_eq!(
            c["env"][2]["valueFrom"]["secretKeyRef"]["key"], "HOIST_RUN_TOKEN",
            "{ptr}"
        );
        assert_eq!(
            c["securityContext"]["capabilities"]["drop"],
            json!(["ALL"]),
            "{ptr}"
        );
        assert_eq!(c.get("command").is_some(), first, "{ptr}");
    }

    #[test]
    fn pytorch_jobs_get_injections_in_every_replica() {
        let config = json!({
            "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
            "metadata": {"name": "ddp"},
            "spec": {"pytorchReplicaSpecs": {
                "Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": {"spec": {"containers": [{"name": "pytorch"}]}}},
                "Worker": {"replicas": 2, "restartPolicy": "OnFailure", "template": {"metadata": {"labels": {"role": "w"}}, "spec": {"containers": [{"name": "pytorch", "image": "${image_uri}"}]}}},
            }},
        });
        let s = build_ok(&job(config));
        assert_eq!(
            (s.api_version.as_str(), s.kind.as_str(), s.name.as_str()),
            (
                "kubeflow.org/v1",
                "PyTorchJob",
                format!("ddp-{RUN}").as_str()
            )
        );
        assert_eq!(s.object["metadata"]["labels"], labels());
        check_template(&s, "/spec/pytorchReplicaSpecs/Master/template", true);
        let w = &s.object["spec"]["pytorchReplicaSpecs"]["Worker"]["template"];
        assert_eq!(w["metadata"]["labels"]["role"], "w");
        assert_eq!(
            w["spec"]["containers"][0]["image"],
            "registry.local/mnist:3f2a"
        );
        assert!(w["spec"]["containers"][0].get("command").is_none());
        // Only a Job gets a backoffLimit.
        assert!(s.object["spec"].get("backoffLimit").is_none());
        assert_eq!(
            s.object["spec"]["pytorchReplicaSpecs"]["Master"]["restartPolicy"],
            "OnFailure"
        );
    }

    #[test]
    fn jobsets_get_injections_in_every_replicated_job() {
        let config = json!({
            "apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "metadata": {"name": "js", "namespace": "team"},
            "spec": {"replicatedJobs": [
                {"name": "leader", "replicas": 1, "template": {"spec": {"parallelism": 1, "template": {"spec": {"containers": [{"name": "l"}]}}}}},
                {"name": "workers", "replicas": 2, "template": {"spec": {"parallelism": 2, "backoffLimit": 2, "template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "w"}]}}}}},
            ]},
        });
        let s = build_ok(&job(config));
        assert_eq!(s.namespace, "team");
        check_template(&s, "/spec/replicatedJobs/0/template/spec/template", true);
        let w = &s.object["spec"]["replicatedJobs"][1]["template"]["spec"];
        assert_eq!(w["template"]["spec"]["restartPolicy"], "OnFailure");
        assert_eq!(
            w["template"]["spec"]["containers"][0]["image"],
            "registry.local/mnist:3f2a"
        );
        assert_eq!(w["template"]["metadata"]["labels"], labels());
        assert_eq!(w["backoffLimit"], 2);
        assert_eq!(
            s.object["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["restartPolicy"],
            "Never"
        );
    }

    #[test]
    fn volcano_jobs_get_injections_in_every_task() {
        let config = json!({
            "apiVersion": "batch.volcano.sh/v1alpha1", "kind": "Job",
            "spec": {"minAvailable": 2, "schedulerName": "volcano", "tasks": [
                {"name": "ps", "replicas": 1, "template": {"spec": {"containers": [{"name": "ps"}]}}},
                {"name": "worker", "replicas": 2, "template": {"spec": {"containers": [{"name": "worker"}]}}},
            ]},
        });
        let s = build_ok(&job(config));
        assert_eq!(
            (s.api_version.as_str(), s.kind.as_str()),
            ("batch.volcano.sh/v1alpha1", "Job")
        );
        assert_eq!(s.name, format!("hoist-{RUN}"));
        check_template(&s, "/spec/tasks/0/template", true);
        check_template(&s, "/spec/tasks/1/template", false);
        assert!(s.object["spec"].get("backoffLimit").is_none());
    }

    #[test]
    fn ray_jobs_get_the_command_as_their_entrypoint() {
        let config = json!({
            "apiVersion": "ray.io/v1", "kind": "RayJob",
            "spec": {
                "entrypoint": "python old.py",
                "rayClusterSpec": {
                    "headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": [{"name": "ray-head"}]}}},
                    "workerGroupSpecs": [{"groupName": "w", "replicas": 2, "rayStartParams": {}, "template": {"spec": {"containers": [{"name": "ray-worker"}]}}}],
                },
            },
        });
        let mut j = job(config);
        j.args = vec!["--lr".into(), "0.1".into(), "it's".into(), "a b".into()];
        let s = build_ok(&j);
        assert_eq!(
            s.object["spec"]["entrypoint"],
            r#"python train.py --lr 0.1 'it'\''s' 'a b'"#
        );
        for ptr in [
            "/spec/rayClusterSpec/headGroupSpec/template",
            "/spec/rayClusterSpec/workerGroupSpecs/0/template",
        ] {
            check_template(&s, ptr, false);
        }
        // Only args: appended to the config's entrypoint.
        j.entry_point = None;
        j.args = vec!["--epochs".into(), "3".into()];
        assert_eq!(
            build_ok(&j).object["spec"]["entrypoint"],
            "python old.py --epochs 3"
        );
        // No command: the config's stays.
        j.args = vec![];
        assert_eq!(build_ok(&j).object["spec"]["entrypoint"], "python old.py");
    }

    #[test]
    fn custom_object_without_pod_templates_gets_labels_only() {
        let s = build_ok(&job(
            json!({"apiVersion": "example.com/v1", "kind": "Trainer", "spec": {"steps": 3}}),
        ));
        assert_eq!(s.object["metadata"]["labels"], labels());
        assert_eq!(s.object["spec"], json!({"steps": 3}));
    }

    #[test]
    fn security_context_defaults_sit_under_the_config() {
        let config = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "securityContext": {"runAsUser": 1000, "capabilities": {"add": ["NET_BIND_SERVICE"]}, "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"}}},
            {"name": "b", "securityContext": {"privileged": true}},
            {"name": "c", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}},
            {"name": "d", "securityContext": {"allowPrivilegeEscalation": true}},
        ]}}}});
        let allow = KubernetesSettings {
            allow_privileged: true,
            allow_cap_add: vec!["NET_BIND_SERVICE".into()],
            require_non_root: true,
            ..settings()
        };
        let s = build(&job(config), &cx(&allow)).unwrap();
        let c = &s.object["spec"]["template"]["spec"]["containers"];
        assert_eq!(
            c[0]["securityContext"],
            json!({
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                "seccompProfile": {"type": "Localhost", "localhostProfile": "p.json"},
                "runAsNonRoot": true,
                "runAsUser": 1000,
            })
        );
        // The API server refuses escalation off with privileged or SYS_ADMIN.
        assert!(
            c[1]["securityContext"]
                .get("allowPrivilegeEscalation")
                .is_none()
        );
        assert_eq!(c[1]["securityContext"]["privileged"], true);
        assert!(
            c[2]["securityContext"]
                .get("allowPrivilegeEscalation")
                .is_none()
        );
        assert_eq!(c[3]["securityContext"]["allowPrivilegeEscalation"], true);

        // Pod-level settings are not shadowed by container defaults.
        let config = json!({"spec": {"template": {"spec": {
            "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "x"}, "runAsNonRoot": true, "runAsUser": 1000},
            "containers": [{"name": "a"}],
        }}}});
        let strict = KubernetesSettings {
            require_non_root: true,
            ..settings()
        };
        let s = build(&job(config), &cx(&strict)).unwrap();
        assert_eq!(
            s.object["spec"]["template"]["spec"]["containers"][0]["securityContext"],
            json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}})
        );
        // secure_mode asks for non-root too.
        let plain = settings();
        let secure = SpecContext {
            secure_mode: true,
            ..cx(&plain)
        };
        let s = build(&job(json!({})), &secure).unwrap();
        assert_eq!(
            s.object["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonRoot"],
            true
        );
        // Windows pods get no Linux defaults.
        let s = build_ok(&job(
            json!({"spec": {"template": {"spec": {"os": {"name": "windows"}, "containers": [{"name": "w"}]}}}}),
        ));
        assert!(
            s.object["spec"]["template"]["spec"]["containers"][0]
                .get("securityContext")
                .is_none()
        );
    }

    #[test]
    fn refusals_name_every_path() {
        let config = json!({"spec": {"template": {"spec": {
            "hostNetwork": true,
            "containers": [{"name": "a", "securityContext": {"privileged": true, "runAsUser": 0}}],
            "volumes": [{"name": "v", "hostPath": {"path": "/var/run/docker.sock"}}],
        }}}});
        let strict = KubernetesSettings {
            require_non_root: true,
            ..settings()
        };
        let m = refused(&job(config), &cx(&strict));
        for p in [
            "spec.template.spec.hostNetwork: not allowed on this queue (set kubernetes.allow-host-network: true in the agent config to allow it)",
            "spec.template.spec.containers[0].securityContext.privileged: not allowed on this queue (set kubernetes.allow-privileged: true",
            "spec.template.spec.containers[0].securityContext.runAsUser: not allowed on this queue",
            "spec.template.spec.volumes[0].hostPath: not allowed on this queue",
        ] {
            assert!(m.contains(p), "{p} in {m}");
        }
        assert_eq!(m.lines().count(), 5, "{m}");

        for (config, expected) in [
            (json!([1]), "(document): expected an object"),
            (json!("Job"), "(document): expected an object"),
            (json!({"kind": "PyTorchJob"}), "apiVersion: missing"),
            (json!({"apiVersion": "kubeflow.org/v1"}), "kind: missing"),
            (
                json!({"apiVersion": "v1", "kind": "Job"}),
                "apiVersion: a Job is served as batch/v1",
            ),
            (
                json!({"apiVersion": 1, "kind": "Job"}),
                "apiVersion: expected a string, found a number",
            ),
            (
                json!({"metadata": []}),
                "metadata: expected an object, found a list",
            ),
            (
                json!({"spec": {"template": {"spec": {"containers": {"name": "a"}}}}}),
                "spec.template.spec.containers: expected a list of containers",
            ),
            (
                json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "env": {"A": "1"}}]}}}}),
                "spec.template.spec.containers[0].env: expected a list",
            ),
            (
                json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": 3}]}}}}),
                "spec.template.spec.containers[0].image: expected an image reference",
            ),
            (
                json!({"spec": {"template": {"spec": {"containers": ["a"]}}}}),
                "spec.template.spec.containers[0]: expected a container",
            ),
        ] {
            let m = refused(&job(config.clone()), &cx(&settings()));
            assert!(m.contains(expected), "{config}: {m}");
        }
    }

    #[test]
    fn allowed_settings_pass_and_hoist_defaults_never_trip_the_policy() {
        let config = json!({"spec": {"template": {"spec": {
            "hostNetwork": true,
            "containers": [{"name": "a"}],
        }}}});
        let allow = KubernetesSettings {
            allow_host_network: true,
            require_non_root: true,
            ..settings()
        };
        let s = build(&job(config.clone()), &cx(&allow)).unwrap();
        assert_eq!(s.object["spec"]["template"]["spec"]["hostNetwork"], true);
        // secure_mode refuses it whatever the settings say.
        let secure = SpecContext {
            secure_mode: true,
            ..cx(&allow)
        };
        assert!(refused(&job(config), &secure).contains("secure_mode"));
        // hoist's own defaults are fine in secure mode.
        assert!(build(&job(json!({})), &secure).is_ok());
    }
}
