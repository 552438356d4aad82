//! Runners: one per target resource. A runner turns a prepared [`JobSpec`] into an
//! [`Execution`] it can wait for, stop and clean up, and finds executions again after
//! an agent restart ([`Runner::adopt_resuming`]).
//!
//! - [`local_process`]: the command on the agent's machine, in its own process group.
//! - [`docker`]: a container through the Docker Engine API.
//!
//! - [`kubernetes`]: a Job or any custom object on a cluster (feature `kubernetes`).
//! - `sagemaker` (feature `aws`): a SageMaker training job.
//! - `vertex` (feature `gcp`): a Vertex AI CustomJob.
//!
//! The agent loop only ever sees `dyn Runner`, and decides by a runner's
//! [`Capabilities`], never by its resource type.
//!
//! How an execution ended is an [`Exit`]: an exit code, a signal, a failure the backend
//! explains, or a preemption (the run goes back to its queue). The run task maps an
//! [`Exit`] onto the run's final state in one place (`run.rs`, `outcome`).
//!
//! Errors are [`RunnerError`]s: each variant keeps its cause, says in which stage the
//! run failed ([`RunnerError::stage`]) and whether trying again may help
//! ([`RunnerError::is_transient`]: the run task retries those with backoff).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hoist_core::resource::ResourceType;
use hoist_core::run::FailureStage;
use hoist_core::secret::EnvVars;
use serde_json::Value;

use crate::builders::BuildError;
use crate::logs::LogSink;

pub mod docker;
pub mod kubernetes;
pub mod local_process;
mod progress;
mod resume;
#[cfg(feature = "aws")]
pub mod sagemaker;
#[cfg(feature = "gcp")]
pub mod vertex;

pub use resume::{LogResume, SourceResume, StreamResume, TailScan};

/// Labels every container and cloud object hoist creates carries.
pub const LABEL_RUN_ID: &str = "hoist.run-id";
pub const LABEL_AGENT: &str = "hoist.agent";
pub const LABEL_QUEUE: &str = "hoist.queue";
pub const LABEL_ENTITY: &str = "hoist.entity";
pub const LABEL_PROJECT: &str = "hoist.project";

/// A run, prepared by the agent for a runner: macros substituted, environment built.
///
/// Its `Debug` shows what identifies the run, never values: the environment holds the
/// run token and whatever a person passed with `--env`, and the resource config and
/// the arguments may hold credentials too.
#[derive(Clone)]
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
    /// hoist's `HOIST_*` variables (`HOIST_RUN_TOKEN` among them) over the run's own
    /// env. Runners add what the queue config says (docker `env`, local-process `env`)
    /// underneath; hoist's variables always win.
    pub env: EnvVars,
    /// The queue's resource config for this run, macros applied.
    pub resource_config: Value,
    /// `hoist.*` labels naming the run and the agent.
    pub labels: BTreeMap<String, String>,
    /// A git or code job's source, for runners that run it from a source tree (the
    /// local-process runner checks it out into the run's directory). Container runners
    /// get the built image in `image` instead.
    pub source: Option<hoist_core::api::JobSource>,
}

impl std::fmt::Debug for JobSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let config_keys: Vec<&str> = match &self.resource_config {
            Value::Object(o) => o.keys().map(String::as_str).collect(),
            _ => Vec::new(),
        };
        f.debug_struct("JobSpec")
            .field("run_id", &self.run_id)
            .field("run_name", &self.run_name)
            .field("queue", &self.queue)
            .field("agent_name", &self.agent_name)
            .field("image", &self.image)
            .field("command_words", &self.command().len())
            .field("env", &self.env)
            .field("resource_config_keys", &config_keys)
            .field("source", &self.source.as_ref().map(source_kind))
            .finish_non_exhaustive()
    }
}

fn source_kind(s: &hoist_core::api::JobSource) -> &'static str {
    match s {
        hoist_core::api::JobSource::Image { .. } => "image",
        hoist_core::api::JobSource::Git { .. } => "git",
        hoist_core::api::JobSource::Code { .. } => "code",
    }
}

impl JobSpec {
    /// The command: entry point followed by the args.
    pub fn command(&self) -> Vec<String> {
        let mut c = self.entry_point.clone().unwrap_or_default();
        c.extend(self.args.iter().cloned());
        c
    }
}

/// What a runner's target does, as far as the run task is concerned. The run task and
/// the agent loop decide by these, never by the resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Runs need an image: a git or code job is built into one before it starts.
    /// Without it, the runner gets the job's source ([`JobSpec::source`]) and checks
    /// it out itself.
    pub needs_image: bool,
    /// An execution outlives the agent process (a container does, a local process does
    /// not): an agent shutting down leaves it running, and the next process of the same
    /// agent re-adopts it. Executions that do not survive are stopped on shutdown.
    pub survives_restart: bool,
    /// The target pulls the image from a registry itself (a cluster, a cloud service),
    /// so an image only in the agent's local Docker daemon will not do: the agent must
    /// have a `registry` configured to serve such queues.
    pub needs_registry: bool,
    /// A started execution may wait before it runs (scheduling, capacity, image
    /// pulls): the run stays `starting` until [`Execution::running`] resolves.
    pub reports_pending: bool,
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The job exited with this code.
    Code(i32),
    /// The job was killed by this signal.
    Signal(i32),
    /// The backend ended the job and says why (evicted, a deadline exceeded, the run's
    /// disk budget outgrown), with the job's exit code when it has one.
    Failed { reason: String, code: Option<i32> },
    /// The backend took the job's resources back (a spot instance reclaimed, a node
    /// drained): the run goes back to its queue (the server bounds how often).
    Preempted { reason: String },
}

impl Exit {
    pub fn success(&self) -> bool {
        *self == Exit::Code(0)
    }

    /// The exit code to record (128+N for a signal, as shells do); none for a
    /// preemption or a failure without one.
    pub fn code(&self) -> Option<i32> {
        match self {
            Exit::Code(c) => Some(*c),
            Exit::Signal(s) => Some(128 + s),
            Exit::Failed { code, .. } => *code,
            Exit::Preempted { .. } => None,
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "killed by signal {s}"),
            Exit::Failed {
                reason,
                code: Some(c),
            } => write!(f, "{reason} (exit code {c})"),
            Exit::Failed { reason, code: None } => f.write_str(reason),
            Exit::Preempted { reason } => write!(f, "preempted: {reason}"),
        }
    }
}

/// The cause of a start failure that is not a Docker or IO error.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why a runner could not do what it was asked. The message is what people see (in the
/// run's failure and log); the cause, when there is one, is kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The agent's policy refuses the run's config (privileged options, an invalid
    /// queue config). Stage `agent`; never retried.
    #[error("{0}")]
    Refused(String),
    /// The job cannot start as given (no command, no image, an image that cannot be
    /// pulled, a command not found, a container the daemon will not create). Stage
    /// `run`; never retried.
    #[error("{message}")]
    Start {
        message: String,
        #[source]
        source: Option<Cause>,
    },
    /// The Docker daemon failed or did not answer. Stage `agent`; transient when the
    /// daemon could not be reached, timed out or answered 502-504.
    #[error("{message}")]
    Docker {
        message: String,
        #[source]
        source: bollard::errors::Error,
    },
    /// A local operation of the agent failed (a run directory, a process). Stage
    /// `agent`.
    #[error("{message}")]
    Io {
        message: String,
        #[source]
        source: std::io::Error,
    },
    /// The job's source could not be fetched or unpacked. Stage `build`. (Boxed: a
    /// build error is large and this variant is rare.)
    #[error("{message}")]
    Source {
        message: String,
        #[source]
        source: Box<BuildError>,
    },
    /// A backend's API (a cluster's API server, a cloud service) failed, refused or
    /// did not answer. Stage `agent`; `transient` when trying again may help (no
    /// answer, a timeout, 429, 5xx, a conflict with a concurrent change).
    #[error("{message}")]
    Api {
        message: String,
        #[source]
        source: Cause,
        transient: bool,
    },
    /// The runner cannot work as configured (an unsupported `DOCKER_HOST`).
    #[error("{0}")]
    Setup(String),
    /// The execution is gone: removed behind the agent's back, or no longer
    /// supervised. Stage `agent`.
    #[error("{0}")]
    Gone(String),
    /// One error seen by several waiters of the same execution.
    #[error(transparent)]
    Shared(Arc<RunnerError>),
}

impl RunnerError {
    /// A start failure without a cause of its own.
    pub fn start(message: impl Into<String>) -> RunnerError {
        RunnerError::Start {
            message: message.into(),
            source: None,
        }
    }

    /// The stage a run failing with this error failed in.
    pub fn stage(&self) -> FailureStage {
        match self {
            RunnerError::Refused(_)
            | RunnerError::Docker { .. }
            | RunnerError::Io { .. }
            | RunnerError::Api { .. }
            | RunnerError::Setup(_)
            | RunnerError::Gone(_) => FailureStage::Agent,
            RunnerError::Start { .. } => FailureStage::Run,
            RunnerError::Source { .. } => FailureStage::Build,
            RunnerError::Shared(e) => e.stage(),
        }
    }

    /// True when the same call may succeed later (the backend was unreachable or
    /// overloaded); refusals and the job's own faults are not.
    pub fn is_transient(&self) -> bool {
        match self {
            RunnerError::Docker { source, .. } => docker_transient(source),
            RunnerError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
            ),
            RunnerError::Api { transient, .. } => *transient,
            RunnerError::Shared(e) => e.is_transient(),
            RunnerError::Refused(_)
            | RunnerError::Start { .. }
            | RunnerError::Source { .. }
            | RunnerError::Setup(_)
            | RunnerError::Gone(_) => false,
        }
    }

    /// A copy for another waiter of the same execution (the cause is shared).
    pub(crate) fn share(self: &Arc<RunnerError>) -> RunnerError {
        RunnerError::Shared(Arc::clone(self))
    }
}

/// Docker errors worth trying again: the daemon unreachable (restarting, socket gone),
/// a timeout, or a gateway-style answer.
fn docker_transient(e: &bollard::errors::Error) -> bool {
    use bollard::errors::Error as E;
    match e {
        E::DockerResponseServerError { status_code, .. } => (502..=504).contains(status_code),
        E::RequestTimeoutError
        | E::IOError { .. }
        | E::HyperResponseError { .. }
        | E::HyperLegacyError { .. }
        | E::HttpClientError { .. }
        | E::SocketNotFoundError(_) => true,
        _ => false,
    }
}

/// What [`Runner::adopt_resuming`] found.
pub enum Adopted {
    /// Still there (running, or ended and not yet collected): supervise it.
    Found(Box<dyn Execution>),
    /// Nothing to adopt; the reason is reported as the run's failure.
    Gone(String),
}

/// What a run would submit, for `hoist launch --dry-run`: nothing is created.
#[derive(Debug, Clone, PartialEq)]
pub struct DryRun {
    /// The objects the runner would submit, in order, as JSON: a container config, a
    /// Kubernetes Job and its Secrets, a training job request. Secret values are masked.
    pub objects: Vec<Value>,
    /// What the backend said when asked to check them without creating anything
    /// (Kubernetes `dryRun=All`): `None` when it was not asked (no backend reachable,
    /// or the backend has no such check), `Some(Err(message))` when it refused.
    pub backend_check: Option<Result<(), String>>,
}

#[async_trait]
pub trait Runner: Send + Sync {
    fn resource(&self) -> ResourceType;

    /// What the target does (see [`Capabilities`]).
    fn capabilities(&self) -> Capabilities;

    /// Starts the run: returns once the target has accepted it (a process spawned, a
    /// container started, a cluster object created). Output goes to `logs` as it comes.
    async fn start(&self, job: &JobSpec, logs: LogSink) -> Result<Box<dyn Execution>, RunnerError>;

    /// Finds a run started by an earlier process of this agent (by its `hoist.run-id`
    /// label) and resumes its log stream where the server's copy of it ends (see
    /// [`LogResume`]).
    async fn adopt_resuming(
        &self,
        job: &JobSpec,
        logs: LogSink,
        resume: LogResume,
    ) -> Result<Adopted, RunnerError>;

    /// [`Runner::adopt_resuming`], resuming the log after the exact time `logs_since`.
    async fn adopt(
        &self,
        job: &JobSpec,
        logs: LogSink,
        logs_since: Option<DateTime<Utc>>,
    ) -> Result<Adopted, RunnerError> {
        self.adopt_resuming(job, logs, LogResume::after(logs_since))
            .await
    }

    /// Deletes what an earlier process of agent `agent` left in the backend for runs
    /// that are not in `keep` (the runs the server still assigns to the agent: they
    /// are re-adopted). Called once, after registering and before the first claim.
    /// Returns the run ids whose objects were deleted. Runners whose executions do not
    /// outlive the agent, or that leave nothing behind, need not implement it.
    async fn sweep(&self, agent: &str, keep: &[String]) -> Result<Vec<String>, RunnerError> {
        let _ = (agent, keep);
        Ok(Vec::new())
    }

    /// What [`Runner::start`] would submit for `job`, checked by the runner's own
    /// rules (the agent's policy, the backend's when it can be asked), creating
    /// nothing.
    async fn dry_run(&self, job: &JobSpec) -> Result<DryRun, RunnerError> {
        let _ = job;
        Err(RunnerError::Setup(format!(
            "the {} runner cannot show a dry run",
            self.resource()
        )))
    }
}

#[async_trait]
pub trait Execution: Send + Sync {
    /// `pid 1234`, `container 3f2a…`: for messages.
    fn describe(&self) -> String;

    /// Resolves once the job actually runs. Executions that run as soon as they are
    /// started (local processes, containers) resolve at once, which is the default;
    /// runners whose [`Capabilities::reports_pending`] is set resolve it when the
    /// backend says the job runs. An execution that ends before it ran resolves
    /// [`Execution::wait`] instead.
    async fn running(&self) -> Result<(), RunnerError> {
        Ok(())
    }

    /// Why the job is not running yet, when the backend says (a pod that cannot be
    /// scheduled): the run task adds it to the start timeout's failure.
    fn pending_reason(&self) -> Option<String> {
        None
    }

    /// Waits for the end, and for its output to be read to the end. May be called
    /// again (and by several callers): every call gets the same outcome.
    async fn wait(&self) -> Result<Exit, RunnerError>;

    /// SIGTERM (container stop), then kill after `grace`. Returns once it was sent;
    /// [`Execution::wait`] tells when it ended.
    async fn stop(&self, grace: Duration) -> Result<(), RunnerError>;

    /// Releases what the execution holds (removes the container, the run's directory)
    /// once its logs are shipped, and ends the tasks it runs.
    async fn cleanup(&self);
}

/// Resolves `.` and `..` without touching the filesystem (`..` at the root stays at
/// the root): for paths of another machine (a cluster node) or before a lookup.
pub(crate) fn normalize_path(p: &std::path::Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// `path` is `dir` or inside it, component by component (`/data2` is not under
/// `/data`), after [`normalize_path`] of both.
pub(crate) fn path_under(path: &std::path::Path, dir: &std::path::Path) -> bool {
    normalize_path(path).starts_with(normalize_path(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_spec_debug_shows_no_values() {
        let job = JobSpec {
            run_id: "r1".into(),
            run_name: "n".into(),
            project: "p".into(),
            entity: "e".into(),
            queue: "e/q".into(),
            agent_name: "a".into(),
            image: Some("img".into()),
            entry_point: Some(vec!["train".into()]),
            args: vec!["--token=arg-s3cret".into()],
            env: [
                ("HOIST_RUN_TOKEN", "hrt_token-s3cret"),
                ("DB", "postgres://a:env-s3cret@db/x"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            resource_config: serde_json::json!({"env": ["X=config-s3cret"]}),
            labels: BTreeMap::new(),
            source: None,
        };
        let d = format!("{job:?}");
        assert!(d.contains("r1") && d.contains("HOIST_RUN_TOKEN"), "{d}");
        assert!(!d.contains("s3cret"), "{d}");
    }

    #[test]
    fn transient_errors_are_the_backends_not_the_jobs() {
        let refused = RunnerError::Refused("privileged".into());
        assert!(!refused.is_transient());
        assert_eq!(refused.stage(), FailureStage::Agent);
        let timeout = RunnerError::Docker {
            message: "no answer".into(),
            source: bollard::errors::Error::RequestTimeoutError,
        };
        assert!(timeout.is_transient());
        let shared = Arc::new(timeout);
        assert!(shared.share().is_transient());
        assert_eq!(shared.share().to_string(), "no answer");
        let gone = RunnerError::Docker {
            message: "no such container".into(),
            source: bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                message: "no such container".into(),
            },
        };
        assert!(!gone.is_transient());
        assert_eq!(RunnerError::start("no command").stage(), FailureStage::Run);
    }
}
