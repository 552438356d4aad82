//! What the cluster says about a run's objects, read into what the run task needs:
//! whether the top object (a Job or a custom object) is pending, running or over
//! ([`job_status`], [`custom_status`]), and what one pod shows ([`pod_view`]: scheduled
//! or not and why, pulling, running, failed to start, containers ended, disrupted).
//!
//! Pure functions over the objects as JSON (`serde_json::Value`), exactly as the API
//! server serves them, so they work for every Kubernetes version and every custom kind,
//! need no client, and are tested with real-shaped objects. The IO half
//! (`runners/kubernetes`: watch, logs, stop) feeds them what its watches deliver.
//!
//! A `batch/v1` Job is over when it carries a `Complete` or `Failed` condition with
//! status `True` (the Job controller adds them once every pod is done); a Job whose
//! `Failed` condition says `BackoffLimitExceeded` or `DeadlineExceeded` failed for that
//! reason. Custom objects are read by a table of known kinds:
//!
//! | group | kinds | read from |
//! |-------|-------|-----------|
//! | `batch.volcano.sh` | `Job` | `status.state.phase`: `Completed` succeeded; `Failed`, `Aborted`, `Terminated` failed; `Running`, `Restarting`, `Completing`, `Aborting`, `Terminating` running |
//! | `kubeflow.org` | `PyTorchJob`, `TFJob`, `MPIJob`, `XGBoostJob`, `PaddleJob`, `MXJob`, `JAXJob` | conditions `Succeeded` / `Failed` / `Running` / `Restarting` (`Created` is pending) |
//! | `jobset.x-k8s.io` | `JobSet` | conditions `Completed` / `Failed` (`Suspended` is pending); running while a replicated job has active or ready pods |
//! | `ray.io` | `RayJob` | `status.jobStatus` (`SUCCEEDED`, `FAILED`, `STOPPED`, `RUNNING`), then `status.jobDeploymentStatus` (`Failed`, `Complete`, `Running`) |
//!
//! Any other kind falls back to: a condition `Complete`, `Completed` or `Succeeded`
//! with status `True` → succeeded; `Failed` → failed (its reason and message); `Running`
//! → running; else the string `status.phase`, `status.state` or `status.state.phase`
//! (case-insensitive: `Succeeded`/`Completed`/`Complete`/`Success` succeeded,
//! `Failed`/`Failure`/`Error`/`Aborted` failed, `Running`/`Active` running); else
//! pending. When several terminal conditions are `True`, the last in the list wins.

use serde_json::Value;

/// Where a run's top object stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopStatus {
    /// Created; nothing runs yet (or the object says nothing yet).
    Pending,
    /// Its pods exist or its controller says it runs. The run's own `running` state
    /// comes from its pods ([`PodView::running`]), not from this.
    Running,
    Succeeded,
    /// Over without success: the object's reason (`BackoffLimitExceeded`,
    /// `DeadlineExceeded`, a custom controller's) and message.
    Failed {
        reason: String,
        message: String,
    },
}

impl TopStatus {
    /// True when the object will not change any more (succeeded or failed).
    pub fn is_over(&self) -> bool {
        matches!(self, TopStatus::Succeeded | TopStatus::Failed { .. })
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

fn int_at(v: &Value, path: &[&str]) -> i64 {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(x) => cur = x,
            None => return 0,
        }
    }
    cur.as_i64().unwrap_or(0)
}

/// The conditions of `obj.status` (or of a pod's status) as (type, status, reason,
/// message), in list order.
fn conditions(obj: &Value) -> Vec<Condition<'_>> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| {
            Some(Condition {
                kind: c.get("type")?.as_str()?,
                is_true: c.get("status").and_then(Value::as_str) == Some("True"),
                reason: c.get("reason").and_then(Value::as_str).unwrap_or(""),
                message: c.get("message").and_then(Value::as_str).unwrap_or(""),
            })
        })
        .collect()
}

struct Condition<'a> {
    kind: &'a str,
    is_true: bool,
    reason: &'a str,
    message: &'a str,
}

impl Condition<'_> {
    fn failed(&self, default_reason: &str) -> TopStatus {
        TopStatus::Failed {
            reason: if self.reason.is_empty() {
                default_reason.to_string()
            } else {
                self.reason.to_string()
            },
            message: self.message.to_string(),
        }
    }
}

/// The last `True` condition whose type is in `succeeded` or `failed`, as a status.
fn terminal_condition(obj: &Value, succeeded: &[&str], failed: &[&str]) -> Option<TopStatus> {
    conditions(obj)
        .iter()
        .rev()
        .filter(|c| c.is_true)
        .filter_map(|c| {
            if succeeded.contains(&c.kind) {
                Some(TopStatus::Succeeded)
            } else if failed.contains(&c.kind) {
                Some(c.failed(c.kind))
            } else {
                None
            }
        })
        .next()
}

fn has_true_condition(obj: &Value, kinds: &[&str]) -> bool {
    conditions(obj)
        .iter()
        .any(|c| c.is_true && kinds.contains(&c.kind))
}

/// A `batch/v1` Job: `Complete`/`Failed` conditions decide; before them, running once
/// it has pods (active, succeeded or failed ones).
pub fn job_status(job: &Value) -> TopStatus {
    if let Some(t) = terminal_condition(job, &["Complete"], &["Failed"]) {
        return t;
    }
    if has_true_condition(job, &["Suspended"]) {
        return TopStatus::Pending;
    }
    let pods = int_at(job, &["status", "active"])
        + int_at(job, &["status", "succeeded"])
        + int_at(job, &["status", "failed"]);
    if pods > 0 {
        TopStatus::Running
    } else {
        TopStatus::Pending
    }
}

/// A custom object, by its `apiVersion` and `kind` (see the table in the module docs).
pub fn custom_status(api_version: &str, kind: &str, obj: &Value) -> TopStatus {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    match (group, kind) {
        ("batch", "Job") => job_status(obj),
        ("batch.volcano.sh", "Job") => volcano(obj),
        (
            "kubeflow.org",
            "PyTorchJob" | "TFJob" | "MPIJob" | "XGBoostJob" | "PaddleJob" | "MXJob" | "JAXJob",
        ) => kubeflow(obj),
        ("jobset.x-k8s.io", "JobSet") => jobset(obj),
        ("ray.io", "RayJob") => ray_job(obj),
        _ => fallback(obj),
    }
}

fn volcano(obj: &Value) -> TopStatus {
    let phase = str_at(obj, &["status", "state", "phase"]).unwrap_or("");
    match phase {
        "Completed" => TopStatus::Succeeded,
        "Failed" | "Aborted" | "Terminated" => TopStatus::Failed {
            reason: str_at(obj, &["status", "state", "reason"])
                .filter(|r| !r.is_empty())
                .unwrap_or(phase)
                .to_string(),
            message: str_at(obj, &["status", "state", "message"])
                .unwrap_or("")
                .to_string(),
        },
        "Running" | "Restarting" | "Completing" | "Aborting" | "Terminating" => TopStatus::Running,
        _ => TopStatus::Pending,
    }
}

fn kubeflow(obj: &Value) -> TopStatus {
    if let Some(t) = terminal_condition(obj, &["Succeeded"], &["Failed"]) {
        return t;
    }
    if has_true_condition(obj, &["Running", "Restarting"]) {
        TopStatus::Running
    } else {
        TopStatus::Pending
    }
}

fn jobset(obj: &Value) -> TopStatus {
    if let Some(t) = terminal_condition(obj, &["Completed"], &["Failed"]) {
        return t;
    }
    if has_true_condition(obj, &["Suspended"]) {
        return TopStatus::Pending;
    }
    let busy = obj
        .pointer("/status/replicatedJobsStatus")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|r| int_at(r, &["active"]) > 0 || int_at(r, &["ready"]) > 0);
    if busy {
        TopStatus::Running
    } else {
        TopStatus::Pending
    }
}

fn ray_job(obj: &Value) -> TopStatus {
    let message = || {
        str_at(obj, &["status", "message"])
            .unwrap_or("")
            .to_string()
    };
    match str_at(obj, &["status", "jobStatus"]).unwrap_or("") {
        "SUCCEEDED" => return TopStatus::Succeeded,
        s @ ("FAILED" | "STOPPED") => {
            return TopStatus::Failed {
                reason: s.to_string(),
                message: message(),
            };
        }
        "RUNNING" => return TopStatus::Running,
        _ => {}
    }
    match str_at(obj, &["status", "jobDeploymentStatus"]).unwrap_or("") {
        "Failed" => TopStatus::Failed {
            reason: str_at(obj, &["status", "reason"])
                .filter(|r| !r.is_empty())
                .unwrap_or("Failed")
                .to_string(),
            message: message(),
        },
        "Complete" => TopStatus::Succeeded,
        "Running" => TopStatus::Running,
        _ => TopStatus::Pending,
    }
}

fn fallback(obj: &Value) -> TopStatus {
    if let Some(t) = terminal_condition(obj, &["Complete", "Completed", "Succeeded"], &["Failed"]) {
        return t;
    }
    if has_true_condition(obj, &["Running"]) {
        return TopStatus::Running;
    }
    let phase = str_at(obj, &["status", "phase"])
        .or_else(|| str_at(obj, &["status", "state"]))
        .or_else(|| str_at(obj, &["status", "state", "phase"]))
        .unwrap_or("");
    match phase.to_ascii_lowercase().as_str() {
        "succeeded" | "completed" | "complete" | "success" => TopStatus::Succeeded,
        "failed" | "failure" | "error" | "aborted" => TopStatus::Failed {
            reason: phase.to_string(),
            message: str_at(obj, &["status", "message"])
                .unwrap_or("")
                .to_string(),
        },
        "running" | "active" => TopStatus::Running,
        _ => TopStatus::Pending,
    }
}

/// A container that terminated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEnd {
    pub pod: String,
    pub container: String,
    pub exit_code: i32,
    /// `Completed`, `Error`, `OOMKilled`, `ContainerCannotRun`, `DeadlineExceeded`, …
    pub reason: Option<String>,
    pub message: Option<String>,
}

/// What one pod shows, as far as the run is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodView {
    pub name: String,
    /// `status.phase` (`Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`); empty
    /// before the API server wrote one.
    pub phase: String,
    /// Bound to a node (`PodScheduled` is `True`, or `spec.nodeName` is set).
    pub scheduled: bool,
    /// `PodScheduled` is `False` with reason `Unschedulable`: the scheduler's message
    /// (`0/1 nodes are available: 1 Insufficient cpu.`).
    pub unschedulable: Option<String>,
    /// A container (init or main) is waiting in `ContainerCreating` or
    /// `PodInitializing` (images are pulled then), or the pod is scheduled and its
    /// containers have no status yet.
    pub pulling: bool,
    /// A container (init or main) is running.
    pub running: bool,
    /// A container cannot start (reason, message): `ErrImagePull`, `ImagePullBackOff`,
    /// `ErrImageNeverPull`, `InvalidImageName`, `CreateContainerConfigError`,
    /// `CreateContainerError`, `RunContainerError`. Image pulls are retried by the
    /// kubelet, so the runner gives these a short window before failing the run.
    pub start_failure: Option<(String, String)>,
    /// Terminated containers, init containers first, in the pod's order.
    pub ended: Vec<ContainerEnd>,
    /// The pod was preempted or evicted: a `DisruptionTarget` condition (clusters ≥
    /// 1.26), or `status.reason` `Evicted`, `Preempting`, `Shutdown`, `NodeShutdown`,
    /// `Terminated` or `NodeLost`. Reason and message, as `reason: message`.
    pub disrupted: Option<String>,
}

/// Waiting reasons that mean a container will not start without a change.
const START_FAILURES: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Pod `status.reason`s set when a node takes a pod's resources back or goes away.
const DISRUPTIONS: &[&str] = &[
    "Evicted",
    "Preempting",
    "Shutdown",
    "NodeShutdown",
    "Terminated",
    "NodeLost",
];

fn reason_message(reason: &str, message: &str) -> String {
    if message.is_empty() {
        reason.to_string()
    } else {
        format!("{reason}: {message}")
    }
}

/// Reads one pod.
pub fn pod_view(pod: &Value) -> PodView {
    let name = str_at(pod, &["metadata", "name"]).unwrap_or("").to_string();
    let mut view = PodView {
        phase: str_at(pod, &["status", "phase"]).unwrap_or("").to_string(),
        ..PodView::default()
    };
    let conds = conditions(pod);
    let node = str_at(pod, &["spec", "nodeName"]).is_some_and(|n| !n.is_empty());
    view.scheduled = node || conds.iter().any(|c| c.kind == "PodScheduled" && c.is_true);
    if !view.scheduled {
        view.unschedulable = conds
            .iter()
            .find(|c| c.kind == "PodScheduled" && !c.is_true && c.reason == "Unschedulable")
            .map(|c| c.message.to_string());
    }
    let statuses: Vec<&Value> = ["initContainerStatuses", "containerStatuses"]
        .iter()
        .filter_map(|k| pod.get("status")?.get(k)?.as_array())
        .flatten()
        .collect();
    if view.scheduled && statuses.is_empty() && matches!(view.phase.as_str(), "" | "Pending") {
        view.pulling = true;
    }
    for s in statuses {
        let container = s.get("name").and_then(Value::as_str).unwrap_or("");
        let Some(state) = s.get("state") else {
            continue;
        };
        if let Some(w) = state.get("waiting") {
            let reason = w.get("reason").and_then(Value::as_str).unwrap_or("");
            let message = w.get("message").and_then(Value::as_str).unwrap_or("");
            if matches!(reason, "ContainerCreating" | "PodInitializing") {
                view.pulling = true;
            } else if START_FAILURES.contains(&reason) && view.start_failure.is_none() {
                view.start_failure = Some((reason.to_string(), message.to_string()));
            }
        }
        if state.get("running").is_some() {
            view.running = true;
        }
        if let Some(t) = state.get("terminated") {
            let text = |k: &str| {
                t.get(k)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            };
            view.ended.push(ContainerEnd {
                pod: name.clone(),
                container: container.to_string(),
                exit_code: t
                    .get("exitCode")
                    .and_then(Value::as_i64)
                    .and_then(|c| i32::try_from(c).ok())
                    .unwrap_or(-1),
                reason: text("reason"),
                message: text("message"),
            });
        }
    }
    view.disrupted = conds
        .iter()
        .find(|c| c.kind == "DisruptionTarget" && c.is_true)
        .map(|c| reason_message(c.reason, c.message))
        .or_else(|| {
            let reason = str_at(pod, &["status", "reason"])?;
            DISRUPTIONS
                .contains(&reason)
                .then(|| reason_message(reason, str_at(pod, &["status", "message"]).unwrap_or("")))
        });
    view.name = name;
    view
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn failed(reason: &str, message: &str) -> TopStatus {
        TopStatus::Failed {
            reason: reason.into(),
            message: message.into(),
        }
    }

    #[test]
    fn jobs() {
        // As a v1.20 API server serves them.
        let created = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": {}, "status": {}});
        assert_eq!(job_status(&created), TopStatus::Pending);
        let active = json!({"status": {"startTime": "2024-01-01T00:00:00Z", "active": 2}});
        assert_eq!(job_status(&active), TopStatus::Running);
        let complete = json!({"status": {
            "conditions": [{"type": "Complete", "status": "True", "lastProbeTime": "2024-01-01T00:01:00Z", "lastTransitionTime": "2024-01-01T00:01:00Z"}],
            "startTime": "2024-01-01T00:00:00Z", "completionTime": "2024-01-01T00:01:00Z", "succeeded": 1,
        }});
        assert_eq!(job_status(&complete), TopStatus::Succeeded);
        assert!(job_status(&complete).is_over());
        let backoff = json!({"status": {
            "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}],
            "failed": 1,
        }});
        assert_eq!(
            job_status(&backoff),
            failed(
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit"
            )
        );
        let deadline = json!({"status": {
            "conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}],
            "active": 1,
        }});
        assert_eq!(
            job_status(&deadline),
            failed(
                "DeadlineExceeded",
                "Job was active longer than specified deadline"
            )
        );
        // Newer clusters add FailureTarget first; the Job is over only once Failed is set.
        let failing = json!({"status": {"conditions": [{"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded"}], "failed": 1, "active": 1}});
        assert_eq!(job_status(&failing), TopStatus::Running);
        let suspended =
            json!({"status": {"conditions": [{"type": "Suspended", "status": "True"}]}});
        assert_eq!(job_status(&suspended), TopStatus::Pending);
        let false_complete = json!({"status": {"conditions": [{"type": "Complete", "status": "False"}], "active": 1}});
        assert_eq!(job_status(&false_complete), TopStatus::Running);
        let no_reason = json!({"status": {"conditions": [{"type": "Failed", "status": "True"}]}});
        assert_eq!(job_status(&no_reason), failed("Failed", ""));
        assert_eq!(
            custom_status("batch/v1", "Job", &complete),
            TopStatus::Succeeded
        );
    }

    #[test]
    fn volcano_jobs() {
        let at = |phase: &str| json!({"status": {"state": {"phase": phase, "lastTransitionTime": "2024-01-01T00:00:00Z"}, "minAvailable": 1, "running": 1}});
        let v = |o: &Value| custom_status("batch.volcano.sh/v1alpha1", "Job", o);
        assert_eq!(v(&json!({"status": {}})), TopStatus::Pending);
        assert_eq!(v(&at("Pending")), TopStatus::Pending);
        assert_eq!(v(&at("Running")), TopStatus::Running);
        assert_eq!(v(&at("Completing")), TopStatus::Running);
        assert_eq!(v(&at("Completed")), TopStatus::Succeeded);
        assert_eq!(v(&at("Aborted")), failed("Aborted", ""));
        let f = json!({"status": {"state": {"phase": "Failed", "reason": "PodFailed", "message": "task worker failed"}}});
        assert_eq!(v(&f), failed("PodFailed", "task worker failed"));
    }

    #[test]
    fn kubeflow_jobs() {
        let k = |o: &Value| custom_status("kubeflow.org/v1", "PyTorchJob", o);
        let created = json!({"status": {"conditions": [
            {"type": "Created", "status": "True", "reason": "PyTorchJobCreated", "message": "PyTorchJob p is created."},
        ], "replicaStatuses": {"Master": {}}}});
        assert_eq!(k(&created), TopStatus::Pending);
        let running = json!({"status": {"conditions": [
            {"type": "Created", "status": "True", "reason": "PyTorchJobCreated"},
            {"type": "Running", "status": "True", "reason": "PyTorchJobRunning", "message": "PyTorchJob p is running."},
        ], "replicaStatuses": {"Master": {"active": 1}, "Worker": {"active": 2}}}});
        assert_eq!(k(&running), TopStatus::Running);
        let succeeded = json!({"status": {"conditions": [
            {"type": "Created", "status": "True"},
            {"type": "Running", "status": "False"},
            {"type": "Succeeded", "status": "True", "reason": "PyTorchJobSucceeded", "message": "PyTorchJob p is successfully completed."},
        ]}});
        assert_eq!(k(&succeeded), TopStatus::Succeeded);
        let f = json!({"status": {"conditions": [
            {"type": "Created", "status": "True"},
            {"type": "Running", "status": "False"},
            {"type": "Failed", "status": "True", "reason": "PyTorchJobFailed", "message": "PyTorchJob p is failed because 1 Master replica(s) failed."},
        ]}});
        assert_eq!(
            k(&f),
            failed(
                "PyTorchJobFailed",
                "PyTorchJob p is failed because 1 Master replica(s) failed."
            )
        );
        for kind in ["TFJob", "MPIJob", "XGBoostJob"] {
            assert_eq!(
                custom_status("kubeflow.org/v1", kind, &succeeded),
                TopStatus::Succeeded
            );
        }
        assert_eq!(
            custom_status("kubeflow.org/v2beta1", "MPIJob", &running),
            TopStatus::Running
        );
    }

    #[test]
    fn jobsets() {
        let j = |o: &Value| custom_status("jobset.x-k8s.io/v1alpha2", "JobSet", o);
        assert_eq!(
            j(
                &json!({"status": {"replicatedJobsStatus": [{"name": "w", "ready": 0, "succeeded": 0, "failed": 0, "active": 0}]}})
            ),
            TopStatus::Pending
        );
        assert_eq!(
            j(
                &json!({"status": {"replicatedJobsStatus": [{"name": "w", "ready": 1, "succeeded": 0, "failed": 0}]}})
            ),
            TopStatus::Running
        );
        let done = json!({"status": {"conditions": [{"type": "Completed", "status": "True", "reason": "AllJobsCompleted", "message": "jobset completed successfully"}]}});
        assert_eq!(j(&done), TopStatus::Succeeded);
        let f = json!({"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "FailedJobs", "message": "jobset failed due to one or more job failures"}], "restarts": 0}});
        assert_eq!(
            j(&f),
            failed(
                "FailedJobs",
                "jobset failed due to one or more job failures"
            )
        );
        let suspended = json!({"status": {"conditions": [{"type": "Suspended", "status": "True"}], "replicatedJobsStatus": [{"name": "w", "active": 1}]}});
        assert_eq!(j(&suspended), TopStatus::Pending);
    }

    #[test]
    fn ray_jobs() {
        let r = |o: &Value| custom_status("ray.io/v1", "RayJob", o);
        assert_eq!(
            r(&json!({"status": {"jobDeploymentStatus": "Initializing"}})),
            TopStatus::Pending
        );
        assert_eq!(
            r(&json!({"status": {"jobDeploymentStatus": "Running", "jobStatus": "PENDING"}})),
            TopStatus::Running
        );
        assert_eq!(
            r(&json!({"status": {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}})),
            TopStatus::Running
        );
        assert_eq!(
            r(&json!({"status": {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}})),
            TopStatus::Succeeded
        );
        assert_eq!(
            r(
                &json!({"status": {"jobDeploymentStatus": "Complete", "jobStatus": "FAILED", "message": "Job entrypoint command failed with exit code 1"}})
            ),
            failed("FAILED", "Job entrypoint command failed with exit code 1")
        );
        assert_eq!(
            r(
                &json!({"status": {"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded", "message": "The RayJob has passed the activeDeadlineSeconds."}})
            ),
            failed(
                "DeadlineExceeded",
                "The RayJob has passed the activeDeadlineSeconds."
            )
        );
    }

    #[test]
    fn unknown_kinds_fall_back_to_conditions_then_phase() {
        let c = |o: Value| custom_status("example.com/v1", "Trainer", &o);
        assert_eq!(c(json!({})), TopStatus::Pending);
        assert_eq!(
            c(json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}})),
            TopStatus::Pending
        );
        assert_eq!(
            c(json!({"status": {"conditions": [{"type": "Running", "status": "True"}]}})),
            TopStatus::Running
        );
        for t in ["Complete", "Completed", "Succeeded"] {
            assert_eq!(
                c(json!({"status": {"conditions": [{"type": t, "status": "True"}]}})),
                TopStatus::Succeeded,
                "{t}"
            );
        }
        assert_eq!(
            c(
                json!({"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "OOM", "message": "worker 0"}]}})
            ),
            failed("OOM", "worker 0")
        );
        // The last terminal condition wins.
        assert_eq!(
            c(
                json!({"status": {"conditions": [{"type": "Failed", "status": "True"}, {"type": "Succeeded", "status": "True"}]}})
            ),
            TopStatus::Succeeded
        );
        assert_eq!(
            c(json!({"status": {"phase": "Running"}})),
            TopStatus::Running
        );
        assert_eq!(
            c(json!({"status": {"phase": "SUCCEEDED"}})),
            TopStatus::Succeeded
        );
        assert_eq!(
            c(json!({"status": {"state": "Failed", "message": "boom"}})),
            failed("Failed", "boom")
        );
        assert_eq!(
            c(json!({"status": {"state": {"phase": "Completed"}}})),
            TopStatus::Succeeded
        );
        assert_eq!(
            c(json!({"status": {"phase": "Queued"}})),
            TopStatus::Pending
        );
    }

    #[test]
    fn pending_pods() {
        let unschedulable = json!({
            "metadata": {"name": "j-abc"},
            "spec": {"containers": [{"name": "main"}]},
            "status": {"phase": "Pending", "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 Insufficient cpu.",
            }]},
        });
        let v = pod_view(&unschedulable);
        assert_eq!(v.name, "j-abc");
        assert_eq!(v.phase, "Pending");
        assert!(!v.scheduled && !v.pulling && !v.running);
        assert_eq!(
            v.unschedulable.as_deref(),
            Some("0/1 nodes are available: 1 Insufficient cpu.")
        );
        let fresh = json!({"metadata": {"name": "p"}, "status": {"phase": "Pending"}});
        assert_eq!(
            pod_view(&fresh),
            PodView {
                name: "p".into(),
                phase: "Pending".into(),
                ..PodView::default()
            }
        );
        let scheduled = json!({
            "metadata": {"name": "p"}, "spec": {"nodeName": "localhost"},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]},
        });
        let v = pod_view(&scheduled);
        assert!(v.scheduled && v.pulling && !v.running);
        let creating = json!({
            "metadata": {"name": "p"}, "spec": {"nodeName": "localhost"},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [{"name": "main", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                    "state": {"waiting": {"reason": "ContainerCreating"}}}]},
        });
        let v = pod_view(&creating);
        assert!(v.scheduled && v.pulling && !v.running && v.start_failure.is_none());
        let init = json!({
            "metadata": {"name": "p"},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}],
                "initContainerStatuses": [{"name": "fetch", "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}}}],
                "containerStatuses": [{"name": "main", "state": {"waiting": {"reason": "PodInitializing"}}}]},
        });
        let v = pod_view(&init);
        assert!(v.pulling && v.running);
    }

    #[test]
    fn start_failures() {
        for (reason, message) in [
            (
                "ErrImagePull",
                "rpc error: code = Unknown desc = Error response from daemon: pull access denied for nope/nope",
            ),
            ("ImagePullBackOff", "Back-off pulling image \"nope/nope\""),
            (
                "InvalidImageName",
                "Failed to apply default image tag \"Bad::\": couldn't parse image reference",
            ),
            ("CreateContainerConfigError", "secret \"x-env\" not found"),
            ("CreateContainerError", "failed to create"),
            (
                "ErrImageNeverPull",
                "Container image \"x\" is not present with pull policy of Never",
            ),
        ] {
            let pod = json!({
                "metadata": {"name": "p"},
                "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}],
                    "containerStatuses": [
                        {"name": "side", "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}}},
                        {"name": "main", "state": {"waiting": {"reason": reason, "message": message}}},
                    ]},
            });
            let v = pod_view(&pod);
            assert_eq!(
                v.start_failure,
                Some((reason.to_string(), message.to_string())),
                "{reason}"
            );
            assert!(v.running);
        }
        let crash = json!({"status": {"containerStatuses": [{"name": "m", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        assert_eq!(pod_view(&crash).start_failure, None);
    }

    #[test]
    fn ended_containers() {
        let pod = json!({
            "metadata": {"name": "j-1"},
            "status": {"phase": "Failed",
                "initContainerStatuses": [{"name": "fetch", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
                "containerStatuses": [
                    {"name": "main", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "message": "", "startedAt": "x", "finishedAt": "y"}}},
                    {"name": "side", "state": {"terminated": {"exitCode": 2, "reason": "Error", "message": "bad flag"}}},
                ]},
        });
        let v = pod_view(&pod);
        assert_eq!(v.phase, "Failed");
        assert_eq!(
            v.ended,
            [
                ContainerEnd {
                    pod: "j-1".into(),
                    container: "fetch".into(),
                    exit_code: 0,
                    reason: Some("Completed".into()),
                    message: None
                },
                ContainerEnd {
                    pod: "j-1".into(),
                    container: "main".into(),
                    exit_code: 137,
                    reason: Some("OOMKilled".into()),
                    message: None
                },
                ContainerEnd {
                    pod: "j-1".into(),
                    container: "side".into(),
                    exit_code: 2,
                    reason: Some("Error".into()),
                    message: Some("bad flag".into())
                },
            ]
        );
        assert!(!v.running && v.disrupted.is_none());
    }

    #[test]
    fn disruptions() {
        let evicted = json!({
            "metadata": {"name": "p"},
            "status": {"phase": "Failed", "reason": "Evicted",
                "message": "The node was low on resource: memory. Container main was using 1Gi, which exceeds its request of 0."},
        });
        assert_eq!(
            pod_view(&evicted).disrupted.as_deref(),
            Some(
                "Evicted: The node was low on resource: memory. Container main was using 1Gi, which exceeds its request of 0."
            )
        );
        let preempted = json!({"status": {"phase": "Running", "conditions": [
            {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler", "message": "default-scheduler: preempting to accommodate a higher priority pod"},
        ]}});
        assert_eq!(
            pod_view(&preempted).disrupted.as_deref(),
            Some(
                "PreemptionByScheduler: default-scheduler: preempting to accommodate a higher priority pod"
            )
        );
        let node_lost = json!({"status": {"phase": "Unknown", "reason": "NodeLost"}});
        assert_eq!(pod_view(&node_lost).disrupted.as_deref(), Some("NodeLost"));
        let ok = json!({"status": {"phase": "Failed", "reason": "DeadlineExceeded", "conditions": [{"type": "DisruptionTarget", "status": "False"}]}});
        assert_eq!(pod_view(&ok).disrupted, None);
    }
}
