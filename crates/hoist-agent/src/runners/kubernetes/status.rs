//! TEMPORARY stand-in with the interface agreed with wp/k8sspec (which owns this
//! file): replaced by its version at the merge.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopStatus {
    Pending,
    Running,
    Succeeded,
    Failed { reason: String, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEnd {
    pub pod: String,
    pub container: String,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodView {
    pub name: String,
    pub phase: String,
    pub scheduled: bool,
    pub unschedulable: Option<String>,
    pub pulling: bool,
    pub running: bool,
    pub start_failure: Option<(String, String)>,
    pub ended: Vec<ContainerEnd>,
    pub disrupted: Option<String>,
}

fn cond<'a>(v: &'a Value, t: &str) -> Option<&'a Value> {
    v.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == t && c["status"] == "True")
}

pub fn job_status(v: &Value) -> TopStatus {
    if cond(v, "Complete").is_some() {
        return TopStatus::Succeeded;
    }
    if let Some(c) = cond(v, "Failed") {
        return TopStatus::Failed {
            reason: c["reason"].as_str().unwrap_or("Failed").into(),
            message: c["message"].as_str().unwrap_or("").into(),
        };
    }
    if v.pointer("/status/active")
        .and_then(Value::as_i64)
        .unwrap_or(0)
        > 0
    {
        return TopStatus::Running;
    }
    TopStatus::Pending
}

pub fn custom_status(api_version: &str, kind: &str, v: &Value) -> TopStatus {
    if api_version == "batch/v1" && kind == "Job" {
        return job_status(v);
    }
    for t in ["Succeeded", "Complete", "Completed"] {
        if cond(v, t).is_some() {
            return TopStatus::Succeeded;
        }
    }
    if let Some(c) = cond(v, "Failed") {
        return TopStatus::Failed {
            reason: c["reason"].as_str().unwrap_or("Failed").into(),
            message: c["message"].as_str().unwrap_or("").into(),
        };
    }
    match v.pointer("/status/phase").and_then(Value::as_str) {
        Some("Succeeded" | "Completed") => TopStatus::Succeeded,
        Some("Failed") => TopStatus::Failed {
            reason: "Failed".into(),
            message: String::new(),
        },
        Some("Running") => TopStatus::Running,
        _ => TopStatus::Pending,
    }
}

pub fn pod_view(v: &Value) -> PodView {
    let name = v
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut p = PodView {
        name: name.clone(),
        phase: v
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or("")
            .into(),
        ..PodView::default()
    };
    if let Some(cs) = v.pointer("/status/conditions").and_then(Value::as_array) {
        for c in cs {
            if c["type"] == "PodScheduled" {
                if c["status"] == "True" {
                    p.scheduled = true;
                } else if c["reason"] == "Unschedulable" {
                    p.unschedulable = Some(c["message"].as_str().unwrap_or("").into());
                }
            }
        }
    }
    if p.phase == "Failed" && v.pointer("/status/reason").and_then(Value::as_str) == Some("Evicted")
    {
        p.disrupted = Some(format!(
            "pod {name} was evicted: {}",
            v.pointer("/status/message")
                .and_then(Value::as_str)
                .unwrap_or("")
        ));
    }
    for key in ["/status/initContainerStatuses", "/status/containerStatuses"] {
        for s in v
            .pointer(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let st = &s["state"];
            let cname = s["name"].as_str().unwrap_or("").to_string();
            if st.get("running").is_some() && key.ends_with("/containerStatuses") {
                p.running = true;
            }
            if let Some(w) = st.get("waiting") {
                let r = w["reason"].as_str().unwrap_or("");
                if r == "ContainerCreating" || r == "PodInitializing" {
                    p.pulling = true;
                }
                if matches!(
                    r,
                    "ErrImagePull"
                        | "ImagePullBackOff"
                        | "CreateContainerConfigError"
                        | "InvalidImageName"
                ) {
                    p.start_failure = Some((r.into(), w["message"].as_str().unwrap_or("").into()));
                }
            }
            if let Some(t) = st.get("terminated") {
                p.ended.push(ContainerEnd {
                    pod: name.clone(),
                    container: cname,
                    exit_code: t["exitCode"].as_i64().unwrap_or(0) as i32,
                    reason: t["reason"].as_str().unwrap_or("").into(),
                    message: t["message"].as_str().unwrap_or("").into(),
                });
            }
        }
    }
    p
}
