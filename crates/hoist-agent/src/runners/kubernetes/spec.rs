//! TEMPORARY stand-in with the interface agreed with wp/k8sspec (which owns this
//! file): replaced by its version at the merge. Minimal: enough for the IO half to run.

use std::collections::BTreeMap;

use hoist_core::resource::kubernetes::privileged_settings;
use hoist_core::secret::{Secret, looks_secret};
use serde_json::{Value, json};

use super::policy;
use crate::config::KubernetesSettings;
use crate::runners::{JobSpec, RunnerError};

pub const LABEL_RUN_ID: &str = "hoist.dev/run-id";
pub const LABEL_AGENT: &str = "hoist.dev/agent";
pub const LABEL_QUEUE: &str = "hoist.dev/queue";

pub struct SpecContext<'a> {
    pub default_namespace: &'a str,
    pub settings: &'a KubernetesSettings,
    pub secure_mode: bool,
    pub docker_config_json: Option<&'a Secret>,
}

#[derive(Debug, Clone)]
pub struct Submission {
    pub namespace: String,
    pub name: String,
    pub api_version: String,
    pub kind: String,
    pub object: Value,
    pub secrets: Vec<Value>,
    pub labels: BTreeMap<String, String>,
}

impl Submission {
    pub fn masked(&self) -> Vec<Value> {
        let mut out: Vec<Value> = self
            .secrets
            .iter()
            .map(|s| {
                let mut s = s.clone();
                if let Some(d) = s.get_mut("stringData").and_then(Value::as_object_mut) {
                    for v in d.values_mut() {
                        *v = json!("****");
                    }
                }
                s
            })
            .collect();
        out.push(self.object.clone());
        out
    }

    pub fn selector(&self) -> String {
        run_selector(&self.labels[LABEL_RUN_ID])
    }
}

pub fn run_selector(run_id: &str) -> String {
    format!("{LABEL_RUN_ID}={}", label_safe(run_id))
}

pub fn label_safe(s: &str) -> String {
    let mut v: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    while v.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        v.pop();
    }
    while v.starts_with(|c: char| !c.is_ascii_alphanumeric()) {
        v.remove(0);
    }
    v
}

fn dns_name(prefix: &str, run_id: &str) -> String {
    let id = run_id.to_ascii_lowercase();
    let mut p: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    p.truncate(62usize.saturating_sub(id.len()));
    let p = p.trim_matches('-');
    if p.is_empty() {
        id
    } else {
        format!("{p}-{id}")
    }
}

pub fn build(job: &JobSpec, cx: &SpecContext<'_>) -> Result<Submission, RunnerError> {
    let mut obj = job.resource_config.clone();
    if !obj.is_object() {
        return Err(RunnerError::Refused(
            "the queue config is not an object".into(),
        ));
    }
    let refusals = policy::refusals(&privileged_settings(&obj), cx.settings, cx.secure_mode);
    if !refusals.is_empty() {
        return Err(RunnerError::Refused(refusals.join("; ")));
    }
    let api_version = obj["apiVersion"].as_str().unwrap_or("batch/v1").to_string();
    let kind = obj["kind"].as_str().unwrap_or("Job").to_string();
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    let prefix = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("hoist")
        .to_string();
    let name = dns_name(&prefix, &job.run_id);
    let namespace = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or(cx.default_namespace)
        .to_string();
    let labels: BTreeMap<String, String> = [
        (LABEL_RUN_ID, label_safe(&job.run_id)),
        (LABEL_AGENT, label_safe(&job.agent_name)),
        (LABEL_QUEUE, label_safe(&job.queue)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let annotations = json!({
        "hoist.dev/run-id": job.run_id, "hoist.dev/agent": job.agent_name, "hoist.dev/queue": job.queue,
    });
    let meta = obj
        .as_object_mut()
        .unwrap()
        .entry("metadata")
        .or_insert(json!({}));
    meta["name"] = json!(name);
    meta["namespace"] = json!(namespace);
    add_labels(meta, &labels);
    meta["annotations"] = annotations.clone();
    let secret_name = format!("{}-env", &name[..name.len().min(58)]);
    let mut secret_data = serde_json::Map::new();
    let mut env = Vec::new();
    for (k, v) in job.env.iter() {
        if k == "HOIST_RUN_TOKEN" || looks_secret(k) {
            secret_data.insert(k.to_string(), json!(v));
            env.push(
                json!({"name": k, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": k}}}),
            );
        } else {
            env.push(json!({"name": k, "value": v}));
        }
    }
    if kind == "Job" {
        if obj.pointer("/spec/backoffLimit").is_none() {
            obj["spec"]["backoffLimit"] = json!(0);
        }
        let tpl = &mut obj["spec"]["template"];
        if tpl.pointer("/spec/restartPolicy").is_none() {
            tpl["spec"]["restartPolicy"] = json!("Never");
        }
    }
    let mut templates = Vec::new();
    find_pod_specs(&mut obj, &mut templates);
    for path in templates {
        let tpl = obj.pointer_mut(&path).unwrap();
        let m = tpl
            .as_object_mut()
            .unwrap()
            .entry("metadata")
            .or_insert(json!({}));
        add_labels(m, &labels);
        m["annotations"] = annotations.clone();
        if let Some(cs) = tpl
            .pointer_mut("/spec/containers")
            .and_then(Value::as_array_mut)
        {
            for (i, c) in cs.iter_mut().enumerate() {
                let img = c.get("image").and_then(Value::as_str);
                if (img.is_none() || img == Some("${image_uri}"))
                    && let Some(i) = &job.image
                {
                    c["image"] = json!(i);
                }
                if i == 0 {
                    if let Some(ep) = &job.entry_point {
                        c["command"] = json!(ep);
                    }
                    if !job.args.is_empty() {
                        c["args"] = json!(job.args);
                    }
                }
                let mut e = c
                    .get("env")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                e.retain(|x| !job.env.contains_key(x["name"].as_str().unwrap_or("")));
                e.extend(env.iter().cloned());
                c["env"] = json!(e);
            }
        }
    }
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": secret_name, "namespace": namespace, "labels": labels, "annotations": annotations},
        "type": "Opaque",
        "stringData": secret_data,
    });
    Ok(Submission {
        namespace,
        name,
        api_version,
        kind,
        object: obj,
        secrets: vec![secret],
        labels,
    })
}

fn add_labels(meta: &mut Value, labels: &BTreeMap<String, String>) {
    let l = meta
        .as_object_mut()
        .unwrap()
        .entry("labels")
        .or_insert(json!({}));
    for (k, v) in labels {
        l[k] = json!(v);
    }
}

/// JSON pointers of every pod template (an object with `spec.containers`).
fn find_pod_specs(v: &mut Value, out: &mut Vec<String>) {
    fn walk(v: &Value, path: String, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if m.get("spec").and_then(|s| s.get("containers")).is_some() {
                    out.push(path.clone());
                }
                for (k, x) in m {
                    walk(x, format!("{path}/{k}"), out);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, format!("{path}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    walk(v, String::new(), out);
}
