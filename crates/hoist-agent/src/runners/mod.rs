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
}

impl RunnerError {
    pub fn stage(&self) -> FailureStage {
        match self {
            RunnerError::Refused(_) | RunnerError::Backend(_) => FailureStage::Agent,
            RunnerError::Start(_) => FailureStage::Run,
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
