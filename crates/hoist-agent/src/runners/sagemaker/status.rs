//! What `DescribeTrainingJob` says → run progress. Pure.
//!
//! | `TrainingJobStatus` / `SecondaryStatus` | means |
//! |---|---|
//! | `InProgress` / `Starting`, `Pending`, `Downloading`, `Restarting`, `Updating`, (older: `LaunchingMLInstances`, `PreparingTrainingStack`, `DownloadingTrainingImage`) | still starting (the run stays `starting`) |
//! | `InProgress` / `Training`, `Uploading` | running ([`crate::runners::Execution::running`] resolves) |
//! | `InProgress` / `Interrupted` | spot instances reclaimed: a warning; SageMaker waits for capacity and resumes the job by itself (within `MaxWaitTimeInSeconds`), so the run is not re-queued |
//! | `Stopping` | stopping |
//! | `Completed` | `Exit::Code(0)` (finished) |
//! | `Failed` | `Exit::Failed` with `FailureReason` |
//! | `Stopped` / `MaxRuntimeExceeded` | `Exit::Failed`: `MaxRuntimeInSeconds` reached |
//! | `Stopped` / `MaxWaitTimeExceeded` | `Exit::Failed`: `MaxWaitTimeInSeconds` reached (waiting for spot capacity included) |
//! | `Stopped` / `Interrupted` | `Exit::Failed`: spot capacity lost and not resumed (never `Preempted`: a re-queued run would need a new training job name, and SageMaker's own retry already ran) |
//! | `Stopped` / anything else | stopped by hoist: the run is `stopped`; stopped by someone else: `Exit::Failed` ("stopped outside hoist"), never finished |
//!
//! Each secondary status the job passes through (`SecondaryStatusTransitions`, so a
//! short one between two polls is not missed) is a system line of the run's log; while
//! starting, the latest `StatusMessage` ("Insufficient capacity error from EC2 while
//! launching instances, retrying!") is the pending reason.

use serde_json::Value;

use crate::runners::Exit;

/// One `SecondaryStatusTransitions` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub status: String,
    pub message: Option<String>,
}

/// The parts of a `DescribeTrainingJob` answer the runner uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobStatus {
    pub status: String,
    pub secondary: String,
    pub failure_reason: Option<String>,
    pub transitions: Vec<Transition>,
    pub arn: Option<String>,
    /// `StoppingCondition.MaxWaitTimeInSeconds` / `MaxRuntimeInSeconds`, for messages.
    pub max_wait: Option<u64>,
    pub max_runtime: Option<u64>,
}

impl JobStatus {
    pub fn parse(v: &Value) -> JobStatus {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        JobStatus {
            status: s("TrainingJobStatus").unwrap_or_default(),
            secondary: s("SecondaryStatus").unwrap_or_default(),
            failure_reason: s("FailureReason").filter(|r| !r.is_empty()),
            transitions: v
                .get("SecondaryStatusTransitions")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|t| Transition {
                            status: t
                                .get("Status")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string(),
                            message: t
                                .get("StatusMessage")
                                .and_then(Value::as_str)
                                .filter(|m| !m.is_empty())
                                .map(str::to_string),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            arn: s("TrainingJobArn"),
            max_wait: v["StoppingCondition"]["MaxWaitTimeInSeconds"].as_u64(),
            max_runtime: v["StoppingCondition"]["MaxRuntimeInSeconds"].as_u64(),
        }
    }

    /// `InProgress/Training`, for the run's log.
    pub fn label(&self) -> String {
        if self.secondary.is_empty() || self.secondary == self.status {
            self.status.clone()
        } else {
            format!("{}/{}", self.status, self.secondary)
        }
    }

    /// Where the job is.
    pub fn phase(&self) -> Phase {
        match self.status.as_str() {
            "Completed" | "Failed" | "Stopped" => Phase::Ended,
            "Stopping" => Phase::Stopping,
            _ => match self.secondary.as_str() {
                "Training" | "Uploading" => Phase::Running,
                "Interrupted" => Phase::Interrupted,
                _ => Phase::Starting,
            },
        }
    }

    /// True once the job has trained at some point (a transition through `Training`),
    /// even if it ended between two polls.
    pub fn has_run(&self) -> bool {
        self.phase() == Phase::Running
            || self
                .transitions
                .iter()
                .any(|t| matches!(t.status.as_str(), "Training" | "Uploading"))
    }

    /// The latest status message while starting (why it is not running yet).
    pub fn pending_message(&self) -> Option<String> {
        self.transitions.last().and_then(|t| t.message.clone())
    }

    /// How an ended job ended; `stop_sent`: hoist asked SageMaker to stop it.
    pub fn exit(&self, stop_sent: bool) -> Option<Exit> {
        let failed = |reason: String| Exit::Failed { reason, code: None };
        let secs = |s: Option<u64>| s.map(|s| format!(" ({s}s)")).unwrap_or_default();
        Some(match self.status.as_str() {
            "Completed" => Exit::Code(0),
            "Failed" => failed(match &self.failure_reason {
                Some(r) => format!("the training job failed: {r}"),
                None => "the training job failed (SageMaker gave no FailureReason)".into(),
            }),
            "Stopped" => match self.secondary.as_str() {
                "MaxRuntimeExceeded" => failed(format!(
                    "the training job ran longer than StoppingCondition.MaxRuntimeInSeconds{} and SageMaker stopped it",
                    secs(self.max_runtime)
                )),
                "MaxWaitTimeExceeded" => failed(format!(
                    "the training job did not complete within StoppingCondition.MaxWaitTimeInSeconds{} (time waiting for spot capacity included) and SageMaker stopped it",
                    secs(self.max_wait)
                )),
                "Interrupted" => failed(
                    "the training job's spot instances were interrupted and SageMaker did not resume it".into(),
                ),
                _ if stop_sent => failed("SageMaker stopped the training job".into()),
                _ => failed(
                    "the training job was stopped outside hoist (StopTrainingJob by someone else, or the SageMaker console)".into(),
                ),
            },
            _ => return None,
        })
    }
}

/// Where a training job is, as far as the run is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Starting,
    Running,
    /// Spot capacity reclaimed; SageMaker resumes the job when it is back.
    Interrupted,
    Stopping,
    Ended,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn st(status: &str, secondary: &str) -> JobStatus {
        JobStatus::parse(&json!({
            "TrainingJobStatus": status,
            "SecondaryStatus": secondary,
            "FailureReason": "AlgorithmError: exit code 1",
            "StoppingCondition": {"MaxRuntimeInSeconds": 60, "MaxWaitTimeInSeconds": 120},
            "SecondaryStatusTransitions": [
                {"Status": "Starting", "StatusMessage": "Insufficient capacity error from EC2 while launching instances, retrying!"}
            ]
        }))
    }

    #[test]
    fn phases() {
        for (s, sec, p) in [
            ("InProgress", "Starting", Phase::Starting),
            ("InProgress", "Pending", Phase::Starting),
            ("InProgress", "Downloading", Phase::Starting),
            ("InProgress", "Training", Phase::Running),
            ("InProgress", "Uploading", Phase::Running),
            ("InProgress", "Interrupted", Phase::Interrupted),
            ("Stopping", "Stopping", Phase::Stopping),
            ("Completed", "Completed", Phase::Ended),
            ("Failed", "Failed", Phase::Ended),
            ("Stopped", "Stopped", Phase::Ended),
        ] {
            assert_eq!(st(s, sec).phase(), p, "{s}/{sec}");
        }
        assert_eq!(st("InProgress", "Training").label(), "InProgress/Training");
        assert_eq!(
            st("InProgress", "Starting").pending_message().unwrap(),
            "Insufficient capacity error from EC2 while launching instances, retrying!"
        );
    }

    #[test]
    fn ends() {
        assert_eq!(
            st("Completed", "Completed").exit(false),
            Some(Exit::Code(0))
        );
        let failed = st("Failed", "Failed").exit(false).unwrap();
        assert!(failed.to_string().contains("AlgorithmError: exit code 1"));
        assert!(!failed.success());
        let outside = st("Stopped", "Stopped").exit(false).unwrap();
        assert!(outside.to_string().contains("outside hoist"), "{outside}");
        let ours = st("Stopped", "Stopped").exit(true).unwrap();
        assert!(!ours.success() && !ours.to_string().contains("outside"));
        let wait = st("Stopped", "MaxWaitTimeExceeded").exit(false).unwrap();
        assert!(
            wait.to_string().contains("MaxWaitTimeInSeconds (120s)"),
            "{wait}"
        );
        let run = st("Stopped", "MaxRuntimeExceeded").exit(true).unwrap();
        assert!(
            run.to_string().contains("MaxRuntimeInSeconds (60s)"),
            "{run}"
        );
        let spot = st("Stopped", "Interrupted").exit(false).unwrap();
        assert!(matches!(spot, Exit::Failed { .. }), "{spot:?}");
        assert_eq!(st("InProgress", "Training").exit(false), None);
    }
}
