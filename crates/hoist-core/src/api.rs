//! Wire types of the `/api/v1` HTTP API.
//!
//! Every request body refuses unknown fields, so a typo in a script is an error and not
//! a silently ignored option. Timestamps are RFC 3339 in UTC.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::resource::ResourceType;
use crate::run::{Actor, FailureStage, Priority, RunState};
pub use crate::secret::{EnvVars, MASKED, Secret, looks_secret};
use crate::template::TemplateVariable;

pub type Timestamp = DateTime<Utc>;

// ---------------------------------------------------------------------------------
// Errors

/// Every error response: `{"error": {"code": …, "message": …, "details": …}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// Stable machine-readable code (see [`ErrorCode`]).
    pub code: ErrorCode,
    /// What went wrong and what to do, for a person.
    pub message: String,
    /// Structured extras, e.g. the list of config problems with their paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// Stable error codes. New codes may be added; existing ones never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request body or query is malformed (bad JSON, unknown field, wrong type).
    BadRequest,
    /// A queue's resource config does not match the resource's schema.
    InvalidConfig,
    /// A template variable definition or value is not acceptable.
    InvalidTemplate,
    /// No credentials, or credentials that are not valid.
    Unauthenticated,
    /// The caller is known but may not do this (only for actions on visible objects,
    /// e.g. a non-admin creating users).
    Forbidden,
    /// The object does not exist or is not visible to the caller.
    NotFound,
    /// The object exists already, or the request conflicts with its current state.
    Conflict,
    /// The requested run state change is not allowed.
    IllegalTransition,
    /// The agent session was replaced by a newer registration under the same name.
    Superseded,
    /// The server ended the agent session: the agent's owner lost access to one of its
    /// queues (removed from the team), its API key was revoked, or the user was deleted.
    /// The process must stop; it may register again once access is restored.
    SessionEnded,
    /// The agent has no such session (made up, or from another server): register again.
    UnknownSession,
    /// The request body is larger than the server accepts.
    PayloadTooLarge,
    /// An uploaded code artifact is not a safe `.tar.gz` (entries outside the archive,
    /// links out, devices, a decompression bomb…).
    InvalidArtifact,
    /// The server is shutting down or its store is unavailable.
    Unavailable,
    /// A bug or an unexpected failure on the server; details are in its log.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidConfig => "invalid_config",
            ErrorCode::InvalidTemplate => "invalid_template",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::IllegalTransition => "illegal_transition",
            ErrorCode::Superseded => "superseded",
            ErrorCode::SessionEnded => "session_ended",
            ErrorCode::UnknownSession => "unknown_session",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::InvalidArtifact => "invalid_artifact",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

// ---------------------------------------------------------------------------------
// Identity

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub name: String,
    pub admin: bool,
    pub created_at: DateTime<Utc>,
    /// Teams the user belongs to.
    pub teams: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub name: String,
    #[serde(default)]
    pub admin: bool,
}

/// A new user and its first API key (shown once).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedUser {
    pub user: User,
    pub api_key: CreatedApiKey,
}

/// The caller: who they are and which entities they may use.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Me {
    pub user: User,
    /// The user's own entity first, then their teams.
    pub entities: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Team {
    pub name: String,
    pub members: Vec<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTeam {
    pub name: String,
    /// Initial members (user names).
    #[serde(default)]
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    pub user: String,
}

/// An API key's metadata. The secret itself is never returned after creation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub user: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    pub name: String,
    /// Create the key for another user (admins only). Defaults to the caller.
    #[serde(default)]
    pub user: Option<String>,
}

/// A freshly created key. `secret` is shown this once and stored only hashed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiKey {
    pub key: ApiKey,
    pub secret: Secret,
}

// ---------------------------------------------------------------------------------
// Queues

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Queue {
    pub id: String,
    pub entity: String,
    pub name: String,
    pub resource: ResourceType,
    /// The resource configuration as stored (template placeholders not substituted).
    pub config: Value,
    pub template_variables: Vec<TemplateVariable>,
    pub prioritize: bool,
    pub description: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Runs waiting in the queue now.
    pub depth: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateQueue {
    pub name: String,
    /// Owner: a user or a team. Defaults to the caller's own entity.
    #[serde(default)]
    pub entity: Option<String>,
    /// `local-process`, `docker`, `kubernetes`, `sagemaker`, `vertex`
    /// (W&B aliases `local-container`, `gcp-vertex` accepted).
    pub resource: String,
    /// A JSON object, or a string holding a YAML or JSON document.
    #[serde(default)]
    pub config: Option<Value>,
    #[serde(default)]
    pub template_variables: Vec<TemplateVariable>,
    #[serde(default)]
    pub prioritize: bool,
    #[serde(default)]
    pub description: Option<String>,
}

/// Fields left out are unchanged.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateQueue {
    #[serde(default)]
    pub config: Option<Value>,
    #[serde(default)]
    pub template_variables: Option<Vec<TemplateVariable>>,
    #[serde(default)]
    pub prioritize: Option<bool>,
    #[serde(default)]
    pub description: Option<String>,
}

// ---------------------------------------------------------------------------------
// Runs

/// A reference to a stored job: `NAME` or `NAME:VERSION` (`v3`, `latest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRef {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
    /// The job's entity. In a launch, left out means: the queue's entity, then the
    /// caller's own; given, the job is looked up there only (any entity the caller may
    /// use, so a team's job can run on a personal queue). Left out of requests when
    /// not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
}

impl JobRef {
    /// Parses `NAME[:VERSION]`.
    pub fn parse(s: &str) -> Result<JobRef, String> {
        let (name, version) = match s.split_once(':') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (s, None),
        };
        crate::names::validate("job", name).map_err(|e| e.to_string())?;
        if let Some(v) = &version
            && (v.is_empty()
                || !(v == "latest" || (v.starts_with('v') && v[1..].parse::<u32>().is_ok())))
        {
            return Err(format!(
                "invalid job version {v:?} in {s:?}; expected vN (v0, v1, …) or latest"
            ));
        }
        Ok(JobRef {
            name: name.to_string(),
            version,
            entity: None,
        })
    }
}

impl std::fmt::Display for JobRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(e) = &self.entity {
            write!(f, "{e}/")?;
        }
        match &self.version {
            Some(v) => write!(f, "{}:{v}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

// ---------------------------------------------------------------------------------
// Jobs

/// Where a job's code comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum JobSource {
    /// A prebuilt image: nothing to build.
    Image { image: String },
    /// A git repository at a commit. `git_ref` is what was asked for (branch, tag or
    /// commit); `commit` is what it resolved to when the job version was created.
    Git {
        repo: String,
        #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
        git_ref: Option<String>,
        commit: String,
        entry_point: Vec<String>,
        /// Sub-directory of the repository used as the build context.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        build_context: Option<String>,
        /// Dockerfile path, relative to the build context.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dockerfile: Option<String>,
    },
    /// An uploaded code artifact: a tar.gz stored by the server, by content hash.
    Code {
        /// `sha256:<hex>` of the artifact.
        artifact: String,
        size: u64,
        entry_point: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dockerfile: Option<String>,
    },
}

impl JobSource {
    pub fn kind(&self) -> &'static str {
        match self {
            JobSource::Image { .. } => "image",
            JobSource::Git { .. } => "git",
            JobSource::Code { .. } => "code",
        }
    }
    /// The entry point a job of this source runs by default.
    pub fn entry_point(&self) -> Option<&[String]> {
        match self {
            JobSource::Image { .. } => None,
            JobSource::Git { entry_point, .. } | JobSource::Code { entry_point, .. } => {
                Some(entry_point)
            }
        }
    }
}

/// Create a job, or a new version of it when the source differs from its latest.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    pub name: String,
    #[serde(default)]
    pub entity: Option<String>,
    pub source: JobSource,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobVersion {
    /// `v0`, `v1`, …
    pub version: String,
    pub source: JobSource,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub entity: String,
    pub name: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
    /// The newest version (`latest` resolves to it).
    pub latest: String,
    /// Newest first. Present in `GET /jobs/{entity}/{name}`; lists carry only the latest.
    pub versions: Vec<JobVersion>,
}

/// A stored blob (code artifact).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Blob {
    /// `sha256:<hex>`.
    pub digest: String,
    pub size: u64,
}

/// Enqueue a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LaunchRequest {
    /// Queue name; with `entity`, or resolved among the caller's entities.
    pub queue: String,
    #[serde(default)]
    pub entity: Option<String>,
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// A container image to run (exactly one of `image` and `job`). For a
    /// `local-process` queue, leave both out and give an entry point.
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub job: Option<JobRef>,
    #[serde(default)]
    pub entry_point: Option<Vec<String>>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: EnvVars,
    /// The run config, handed to the job as `HOIST_RUN_CONFIG`.
    #[serde(default)]
    pub config: Option<Value>,
    /// Deep-merged over the queue's resource config for this run only.
    #[serde(default)]
    pub resource_args: Option<Value>,
    /// Values for the queue's template variables (strings are converted to the
    /// variable's type).
    #[serde(default)]
    pub template_values: BTreeMap<String, Value>,
    #[serde(default)]
    pub priority: Option<Priority>,
    /// Check the launch exactly as a real one and answer (200) with the run it would
    /// create, storing nothing (`hoist launch --dry-run`). Left out of requests when
    /// false, so a server that does not know it refuses it (an unknown field) rather
    /// than enqueueing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

/// The `state_reason` of the run a dry-run launch answers with.
pub const DRY_RUN_REASON: &str = "dry run: nothing was enqueued";

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    pub stage: FailureStage,
    pub message: String,
    /// The last lines of the run's logs when it failed.
    #[serde(default)]
    pub log_tail: Vec<String>,
}

/// One state change of a run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Transition {
    pub from: Option<RunState>,
    pub to: RunState,
    pub at: DateTime<Utc>,
    pub actor: Actor,
    pub reason: String,
}

/// The agent that holds (or last held) a run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunAgent {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Run {
    pub id: String,
    pub entity: String,
    pub queue: String,
    pub project: String,
    pub name: String,
    pub image: Option<String>,
    /// The job and its resolved version (`v3`, never `latest`).
    pub job: Option<JobRef>,
    /// The resolved job version's source, when the run names a job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_source: Option<JobSource>,
    pub entry_point: Option<Vec<String>>,
    pub args: Vec<String>,
    /// Environment for the job. In responses to people, values of variables whose
    /// names look secret are masked.
    pub env: EnvVars,
    pub config: Value,
    pub resource_args: Value,
    pub template_values: BTreeMap<String, Value>,
    pub priority: Priority,
    pub resource: ResourceType,
    /// The queue's config with template variables substituted and resource args
    /// merged, as of launch; agent-side macros (`${run_id}`…) are not yet applied.
    pub resource_config: Value,
    pub state: RunState,
    pub state_reason: String,
    pub stop_requested: bool,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub agent: Option<RunAgent>,
    /// How many times the run was handed to an agent.
    pub attempts: u32,
    pub exit_code: Option<i32>,
    pub failure: Option<Failure>,
    /// The image the agent built (or found already built) for the run's git or code
    /// job; absent until then, and for runs that name an image. A later attempt that
    /// builds again replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built: Option<BuiltImage>,
    /// Every state change; present in `GET /runs/{id}`, absent in lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Vec<Transition>>,
    /// What the agent noticed without the state changing (a pod that cannot be
    /// scheduled…), oldest first; present in `GET /runs/{id}`, absent in lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<RunWarning>>,
}

/// The image an agent's builder produced for a run's job source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuiltImage {
    /// The reference the runner started (`hoist-build:<tag>`, `<repository>:<tag>`).
    pub image: String,
    /// The destination had the image already: nothing was built or pushed.
    pub cache_hit: bool,
    /// The agent's builder: `docker`, `kaniko`, `buildah`…
    pub builder: String,
}

/// Something the agent holding a run noticed about it that did not change its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunWarning {
    pub at: DateTime<Utc>,
    pub message: String,
}

/// Most warnings kept per run (the agent's first ones; later ones are dropped).
pub const MAX_RUN_WARNINGS: usize = 50;
/// Longest warning kept, in bytes (longer ones are cut at a character boundary).
pub const MAX_RUN_WARNING_BYTES: usize = 2048;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<Run>,
    /// Pass as `before` to get the next (older) page.
    pub next_cursor: Option<String>,
}

/// An agent's report of a run's progress.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunUpdate {
    /// The agent session that holds the run.
    pub session: String,
    pub state: RunState,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub failure: Option<Failure>,
    /// The image the run's job was built into (with `starting`, after a build). Once
    /// stored, a report without it leaves it as it is. Left out when absent, so that
    /// servers from before it still accept the reports without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built: Option<BuiltImage>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StopRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

// ---------------------------------------------------------------------------------
// Logs

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
    /// Lines written by hoist itself (build output, agent notes).
    System,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogLine {
    pub ts: DateTime<Utc>,
    pub stream: LogStream,
    pub text: String,
}

/// A batch of log lines from the agent (or the job itself, with its run token).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogBatch {
    #[serde(default)]
    pub session: Option<String>,
    pub lines: Vec<LogLine>,
    /// Warnings about the run (see [`RunWarning`]): only from the agent holding the
    /// run, with its `session`; each is also a line of the log.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A line as stored, with its position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StoredLogLine {
    /// 0-based index of the line in the run's log.
    pub offset: u64,
    pub ts: DateTime<Utc>,
    pub stream: LogStream,
    pub text: String,
}

/// A page of a run's log (at most `limit` lines and about 1 MiB), or the answer to an
/// append.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogPage {
    pub lines: Vec<StoredLogLine>,
    /// Offset to ask for next.
    pub next_offset: u64,
    /// The run has ended and every line has been read.
    pub complete: bool,
    /// The run's log reached the server's per-run quota: its last line says so, and
    /// later lines are dropped (an append is still answered normally). Absent (false)
    /// from servers without a quota.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quota_reached: bool,
}

// ---------------------------------------------------------------------------------
// Agents

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    /// Connected, no job running.
    Polling,
    /// Connected, at least one job running.
    Running,
    /// Deregistered cleanly.
    Stopped,
    /// Missed its heartbeats.
    Lost,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Polling => "polling",
            AgentStatus::Running => "running",
            AgentStatus::Stopped => "stopped",
            AgentStatus::Lost => "lost",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterAgent {
    pub name: String,
    pub host: String,
    pub version: String,
    /// `QUEUE` (in `entity`) or `ENTITY/QUEUE`.
    pub queues: Vec<String>,
    /// Default entity for queue names without one; defaults to the caller's own.
    #[serde(default)]
    pub entity: Option<String>,
    /// Concurrent runs; -1 = no limit.
    pub max_jobs: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Agent {
    pub id: String,
    pub name: String,
    pub owner: String,
    pub host: String,
    pub version: String,
    pub status: AgentStatus,
    pub started_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
    /// `ENTITY/QUEUE`.
    pub queues: Vec<String>,
    pub max_jobs: i64,
    pub running: u32,
}

/// Answer to a registration.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AgentSession {
    pub agent: Agent,
    /// Identifies this registration; a later registration under the same name
    /// supersedes it.
    pub session: String,
    /// Send a heartbeat at least this often.
    pub heartbeat_interval_ms: u64,
    /// Confirm a claimed run (move it past `claimed`) within this time.
    pub lease_ms: u64,
    /// Longest `wait_ms` a claim may ask for.
    pub max_claim_wait_ms: u64,
    /// Runs that an earlier session of this agent left running (to re-adopt or fail).
    pub held_runs: Vec<ClaimedRun>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    pub session: String,
    /// Claim at most this many runs (the agent's free capacity).
    pub max: u32,
    /// Wait up to this long for a run (or a stop request) before answering empty.
    pub wait_ms: u64,
}

/// A run handed to an agent, with everything it needs to execute it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClaimedRun {
    /// The run, env unmasked.
    pub run: Run,
    /// A run-scoped token for the job to report back (`HOIST_RUN_TOKEN`).
    pub token: Secret,
    pub lease_expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClaimResponse {
    pub runs: Vec<ClaimedRun>,
    /// Runs of this agent whose stop was requested.
    pub stop: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub session: String,
    /// Runs the agent is executing now.
    #[serde(default)]
    pub running: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatResponse {
    /// Runs of this agent whose stop was requested.
    pub stop: Vec<String>,
    /// Runs the agent reported that the server no longer assigns to it (ended,
    /// cancelled, or handed to someone else): the agent should let go of them.
    pub drop: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Deregister {
    pub session: String,
}

/// Release claimed runs the agent will not start (shutdown).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRuns {
    pub session: String,
    pub runs: Vec<String>,
    #[serde(default)]
    pub reason: String,
}

// ---------------------------------------------------------------------------------
// Stats

/// How the UI groups run states (and colours them): waiting for an agent, held by
/// one, ended well, ended badly, ended by someone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StateGroup {
    /// `queued`, `claimed`.
    Queued,
    /// `building`, `starting`, `running`, `stopping`.
    Active,
    /// `finished`.
    Ok,
    /// `failed`, `unknown`.
    Bad,
    /// `stopped`, `cancelled`.
    Off,
}

impl StateGroup {
    pub const ALL: [StateGroup; 5] = [
        StateGroup::Queued,
        StateGroup::Active,
        StateGroup::Ok,
        StateGroup::Bad,
        StateGroup::Off,
    ];

    pub fn of(state: RunState) -> StateGroup {
        match state {
            RunState::Queued | RunState::Claimed => StateGroup::Queued,
            RunState::Building | RunState::Starting | RunState::Running | RunState::Stopping => {
                StateGroup::Active
            }
            RunState::Finished => StateGroup::Ok,
            RunState::Failed | RunState::Unknown => StateGroup::Bad,
            RunState::Stopped | RunState::Cancelled => StateGroup::Off,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StateGroup::Queued => "queued",
            StateGroup::Active => "active",
            StateGroup::Ok => "ok",
            StateGroup::Bad => "bad",
            StateGroup::Off => "off",
        }
    }
}

/// Runs by [`StateGroup`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GroupCounts {
    pub queued: u64,
    pub active: u64,
    pub ok: u64,
    pub bad: u64,
    pub off: u64,
}

impl GroupCounts {
    pub fn get(&self, g: StateGroup) -> u64 {
        match g {
            StateGroup::Queued => self.queued,
            StateGroup::Active => self.active,
            StateGroup::Ok => self.ok,
            StateGroup::Bad => self.bad,
            StateGroup::Off => self.off,
        }
    }
    pub fn add(&mut self, g: StateGroup, n: u64) {
        match g {
            StateGroup::Queued => self.queued += n,
            StateGroup::Active => self.active += n,
            StateGroup::Ok => self.ok += n,
            StateGroup::Bad => self.bad += n,
            StateGroup::Off => self.off += n,
        }
    }
    pub fn total(&self) -> u64 {
        self.queued + self.active + self.ok + self.bad + self.off
    }
}

/// The runs launched in one hour, by the state group they are in now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HourRuns {
    /// Start of the hour (UTC, on the hour).
    pub start: DateTime<Utc>,
    pub runs: GroupCounts,
}

/// How long a queue's runs waited from launch to start (their first `running`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueWait {
    pub entity: String,
    pub queue: String,
    /// Runs launched in the window that have started.
    pub started: u64,
    /// Median wait, in ms (estimated from log-spaced buckets; see [`OverviewStats`]).
    pub p50_ms: i64,
    /// 95th percentile wait, in ms (estimated likewise).
    pub p95_ms: i64,
}

/// One bucket of the run-duration histogram: runs that took from `from_ms` up to (not
/// including) `to_ms` from start (first `running`) to end.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DurationBucket {
    pub from_ms: i64,
    /// Absent for the last bucket (no upper bound).
    pub to_ms: Option<i64>,
    pub runs: u64,
}

/// `GET /api/v1/stats/overview`: what happened lately in the caller's entities. The
/// window is the current hour and the `hours - 1` before it; waits and durations are
/// of the runs launched in the window. Percentiles are estimated from log-spaced
/// buckets (the durations' buckets), linearly within a bucket.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OverviewStats {
    /// When the numbers were taken.
    pub at: DateTime<Utc>,
    /// Start of the window (the first hour).
    pub from: DateTime<Utc>,
    /// Runs launched per hour, oldest hour first (the last one is the current hour).
    pub hours: Vec<HourRuns>,
    /// Queues with runs launched in the window that have started, by entity and name.
    pub queue_waits: Vec<QueueWait>,
    /// Every bucket, shortest first.
    pub durations: Vec<DurationBucket>,
}

/// Runs of a queue in each state that is not final.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QueueDepth {
    pub queued: u64,
    pub claimed: u64,
    pub building: u64,
    pub starting: u64,
    pub running: u64,
    pub stopping: u64,
    pub unknown: u64,
}

impl QueueDepth {
    /// The count of a state that is not final (`None` for final states).
    pub fn get_mut(&mut self, s: RunState) -> Option<&mut u64> {
        Some(match s {
            RunState::Queued => &mut self.queued,
            RunState::Claimed => &mut self.claimed,
            RunState::Building => &mut self.building,
            RunState::Starting => &mut self.starting,
            RunState::Running => &mut self.running,
            RunState::Stopping => &mut self.stopping,
            RunState::Unknown => &mut self.unknown,
            _ => return None,
        })
    }
    pub fn total(&self) -> u64 {
        self.queued
            + self.claimed
            + self.building
            + self.starting
            + self.running
            + self.stopping
            + self.unknown
    }
}

/// Where a queue stands now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueStats {
    pub id: String,
    pub entity: String,
    pub name: String,
    pub depth: QueueDepth,
    /// Agents serving the queue that are connected (`polling` or `running`).
    pub agents: u32,
    /// Launch time of the oldest queued run (the lowest sequence number queued).
    pub oldest_queued_at: Option<DateTime<Utc>>,
    /// How long that run has waited so far (`at` minus its launch), in ms.
    pub oldest_queued_wait_ms: Option<i64>,
    /// The latest change of the queue's runs: the newest run's last update, or a later
    /// update of a run that has not ended.
    pub last_activity_at: Option<DateTime<Utc>>,
}

/// `GET /api/v1/stats/queues`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueStatsList {
    /// When the numbers were taken.
    pub at: DateTime<Utc>,
    /// By entity and name.
    pub queues: Vec<QueueStats>,
}

// ---------------------------------------------------------------------------------
// Health

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_refs() {
        assert_eq!(JobRef::parse("train").unwrap().version, None);
        assert_eq!(
            JobRef::parse("train:v3").unwrap().version.as_deref(),
            Some("v3")
        );
        assert_eq!(
            JobRef::parse("train:latest").unwrap().to_string(),
            "train:latest"
        );
        assert!(JobRef::parse("train:3").is_err());
        assert!(JobRef::parse(":v1").is_err());
        assert!(JobRef::parse("a b").is_err());
    }

    #[test]
    fn unknown_fields_refused() {
        let e = serde_json::from_str::<LaunchRequest>(r#"{"queue":"q","imgae":"x"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `imgae`"), "{e}");
    }
}
