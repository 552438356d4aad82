//! Runners: one per target resource. A runner turns a prepared [`JobSpec`] into an
//! [`Execution`] it can wait for, stop and clean up, and finds executions again after
//! an agent restart ([`Runner::adopt`]).
//!
//! - [`local_process`]: the command on the agent's machine, in its own process group.
//! - [`docker`]: a container through the Docker Engine API.
//!
//! Kubernetes, SageMaker and Vertex runners implement the same trait (later issues);
//! the agent loop only ever sees `dyn Runner`.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hoist_core::resource::ResourceType;
use hoist_core::run::FailureStage;
use serde_json::Value;

use crate::logs::LogSink;

pub mod docker;
pub mod local_process;

/// Labels every container and cloud object hoist creates carries.
pub const LABEL_RUN_ID: &str = "hoist.run-id";
pub const LABEL_AGENT: &str = "hoist.agent";
pub const LABEL_QUEUE: &str = "hoist.queue";
pub const LABEL_ENTITY: &str = "hoist.entity";
pub const LABEL_PROJECT: &str = "hoist.project";

/// A run, prepared by the agent for a runner: macros substituted, environment built.
#[derive(Debug, Clone)]
pub struct JobSpec {
    pub run_id: String,
    pub run_name: String,
    pub project: String,
    pub entity: String,
    /// `ENTITY/QUEUE`.
    pub queue: String,
    pub agent_name: String,
    /// The image to run (docker and cloud runners).
    pub image: Option<String>,
    pub entry_point: Option<Vec<String>>,
    pub args: Vec<String>,
    /// hoist's `HOIST_*` variables and the run's own env. Runners add what the queue
    /// config says (docker `env`, local-process `env`) on top.
    pub env: Vec<(String, String)>,
    /// The queue's resource config for this run, macros applied.
    pub resource_config: Value,
    /// `hoist.*` labels naming the run and the agent.
    pub labels: BTreeMap<String, String>,
    /// A git or code job's source, for runners that run it from a source tree (the
    /// local-process runner checks it out into the run's directory). Container runners
    /// get the built image in `image` instead.
    pub source: Option<hoist_core::api::JobSource>,
}

impl JobSpec {
    /// The command: entry point followed by the args.
    pub fn command(&self) -> Vec<String> {
        let mut c = self.entry_point.clone().unwrap_or_default();
        c.extend(self.args.iter().cloned());
        c
    }
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub fn success(&self) -> bool {
        *self == Exit::Code(0)
    }
    /// The exit code to record (128+N for a signal, as shells do).
    pub fn code(&self) -> i32 {
        match self {
            Exit::Code(c) => *c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RunnerError {
    /// The agent's policy refuses the run's config (privileged options…).
    #[error("{0}")]
    Refused(String),
    /// The run could not be started (image missing, command not found…).
    #[error("{0}")]
    Start(String),
    /// The backend (Docker daemon, cluster) failed.
    #[error("{0}")]
    Backend(String),
    /// The job's source could not be fetched (stage `build`).
    #[error("{0}")]
    Source(String),
}

impl RunnerError {
    pub fn stage(&self) -> FailureStage {
        match self {
            RunnerError::Refused(_) | RunnerError::Backend(_) => FailureStage::Agent,
            RunnerError::Start(_) => FailureStage::Run,
            RunnerError::Source(_) => FailureStage::Build,
        }
    }
}

/// Where one stream of a re-adopted run's log resumes: which of its lines the server
/// already has.
///
/// Lines stamped at or before `after` were shipped. The server keeps timestamps to the
/// millisecond, so its last line only tells in which millisecond that line was
/// written: of the lines stamped after `after` and before `until`, the first
/// `shipped` were shipped too, and the others were not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamResume {
    pub after: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub shipped: usize,
}

impl StreamResume {
    /// True when the next line (in the stream's order), stamped `ts`, was shipped.
    fn skip(&mut self, ts: DateTime<Utc>) -> bool {
        if self.after.is_some_and(|a| ts <= a) {
            return true;
        }
        if self.shipped > 0 && self.until.is_some_and(|u| ts < u) {
            self.shipped -= 1;
            return true;
        }
        false
    }
}

/// Where a re-adopted run's log resumes, per stream (each keeps its order; their
/// relative order is not kept by every runtime).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogResume {
    pub stdout: StreamResume,
    pub stderr: StreamResume,
}

impl LogResume {
    /// Both streams shipped up to and including the exact time `since`.
    pub fn after(since: Option<DateTime<Utc>>) -> LogResume {
        let s = StreamResume {
            after: since,
            ..StreamResume::default()
        };
        LogResume {
            stdout: s,
            stderr: s,
        }
    }

    /// Nothing before this was shipped that is not skipped by time: where to start
    /// reading (`None`: from the beginning).
    pub fn from(&self) -> Option<DateTime<Utc>> {
        Some(self.stdout.after?.min(self.stderr.after?))
    }

    /// True when the next line of a stream (stdout when `!stderr`), stamped `ts`, was
    /// shipped already. Call it for every line, in the stream's order.
    pub fn skip(&mut self, ts: DateTime<Utc>, stderr: bool) -> bool {
        if stderr {
            self.stderr.skip(ts)
        } else {
            self.stdout.skip(ts)
        }
    }
}

/// What [`Runner::adopt`] found.
pub enum Adopted {
    /// Still there (running, or ended and not yet collected): supervise it.
    Found(Box<dyn Execution>),
    /// Nothing to adopt; the reason is reported as the run's failure.
    Gone(String),
}

#[async_trait]
pub trait Runner: Send + Sync {
    fn resource(&self) -> ResourceType;

    /// Starts the run. Output goes to `logs` as it comes.
    async fn start(&self, job: &JobSpec, logs: LogSink) -> Result<Box<dyn Execution>, RunnerError>;

    /// Finds a run started by an earlier process of this agent (by its `hoist.run-id`
    /// label) and resumes its log stream after `logs_since`.
    async fn adopt(
        &self,
        job: &JobSpec,
        logs: LogSink,
        logs_since: Option<DateTime<Utc>>,
    ) -> Result<Adopted, RunnerError>;

    /// [`Runner::adopt`], resuming the log where the server's copy of it ends (see
    /// [`LogResume`]). Runners that cannot re-adopt need not implement it.
    async fn adopt_resuming(
        &self,
        job: &JobSpec,
        logs: LogSink,
        resume: LogResume,
    ) -> Result<Adopted, RunnerError> {
        self.adopt(job, logs, resume.from()).await
    }
}

#[async_trait]
pub trait Execution: Send + Sync {
    /// `pid 1234`, `container 3f2a…`: for messages.
    fn describe(&self) -> String;

    /// Waits for the end, and for its output to be read to the end.
    async fn wait(&self) -> Result<Exit, RunnerError>;

    /// SIGTERM (container stop), then kill after `grace`. Returns once it was sent;
    /// [`Execution::wait`] tells when it ended.
    async fn stop(&self, grace: Duration) -> Result<(), RunnerError>;

    /// Releases what the execution holds (removes the container) once its logs are
    /// shipped.
    async fn cleanup(&self);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_skips_what_the_server_has() {
        let ms = |n: i64| DateTime::<Utc>::from_timestamp_millis(1_700_000_000_000 + n).unwrap();
        let ns = |n: i64, sub: i64| ms(n) + chrono::TimeDelta::nanoseconds(sub);
        // The server holds stdout up to two lines stamped in millisecond 5, stderr
        // nothing.
        let mut r = LogResume {
            stdout: StreamResume {
                after: Some(ms(5) - chrono::TimeDelta::nanoseconds(1)),
                until: Some(ms(6)),
                shipped: 2,
            },
            stderr: StreamResume::default(),
        };
        assert_eq!(r.from(), None, "stderr is read from the start");
        assert!(r.skip(ns(4, 900_000), false));
        assert!(r.skip(ns(5, 100), false));
        assert!(r.skip(ns(5, 200), false));
        assert!(!r.skip(ns(5, 300), false), "the third line of ms 5 is new");
        assert!(!r.skip(ns(7, 0), false));
        assert!(!r.skip(ns(1, 0), true));
        // An exact time: that line and those before it.
        let mut r = LogResume::after(Some(ns(5, 100)));
        assert_eq!(r.from(), Some(ns(5, 100)));
        assert!(r.skip(ns(5, 100), true));
        assert!(!r.skip(ns(5, 101), false));
    }
}
