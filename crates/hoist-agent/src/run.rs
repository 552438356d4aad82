//! One run's life on the agent, in phases, each a function with its own input and
//! output:
//!
//! ```text
//! prepare ─► build ─► start | adopt ─► supervise ─► report
//!  runner,    image    execution,       the end,     final state, logs,
//!  build?     (if a    `starting`,      a stop,      cleanup
//!             build)   `running`        the agent
//!                                       going away
//! ```
//!
//! - [`prepare`]: the runner for the run's resource and its [`Capabilities`]: a git or
//!   code job is built into an image only for runners that need one.
//! - [`build`]: the builder finds or builds the image (`building`).
//! - [`start`]: macros applied and the environment built ([`job_spec`]), the runner
//!   starts the job, and only then is `starting` reported (or halfway through the
//!   claim's lease, when starting takes that long, so the claim does not lapse). A
//!   start that failed transiently (the Docker daemon restarting) is tried again with
//!   backoff within `start_timeout`. `running` is reported when the execution says the
//!   job runs ([`Execution::running`]: at once for local processes and containers,
//!   later for runners with a pending phase); `start_timeout` covers both.
//!   [`adopt`] is the same for a run an earlier agent process left executing.
//! - [`supervise`]: waits for the end, a stop request, the agent shutting down, or the
//!   server letting the run go.
//! - [`report`]: the final state ([`outcome`] maps an [`Exit`] onto it, in this one
//!   place), after the logs are flushed; then the execution is cleaned up.
//!
//! The agent drives a run through [`RunSignals`]: one
//! [`CancellationToken`] per concern. `stop` (a person asked), `abandon` (the server no
//! longer assigns the run to this agent: stop it, report nothing; a child of the
//! agent's own abandon token, cancelled when another process took over the agent's
//! name) and `shutdown` (a child of the agent's shutdown token: executions that survive
//! an agent restart are left running, others are stopped). The run's [`Reporter`] may
//! cancel `stop` and `abandon` too (a refused report).
//!
//! Reports go out in order through the [`Reporter`], which retries while the server is
//! unreachable. Every task a run spawns (the reporter, the log shipper, the runner's
//! own) is joined, or aborted after a bounded wait, before the run task ends.

use std::sync::Arc;
use std::time::Duration;

use hoist_client::Client;
use hoist_core::api::{BuiltImage, ClaimedRun, Failure, JobSource, LogBatch, Run, RunUpdate};
use hoist_core::run::{FailureStage, RunState};
use hoist_core::secret::{EnvVars, Secret};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::agent::Shared;
use crate::host_env::HostEnv;
use crate::logs::{LogSink, ship};
use crate::macros::{self, MacroContext};
use crate::runners::{
    self, Adopted, Capabilities, Execution, Exit, JobSpec, LogResume, Runner, RunnerError, TailScan,
};

/// What the agent tells one run task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunSignal {
    /// A person asked for a stop: SIGTERM, grace, kill; report `stopped`.
    Stop,
    /// The server no longer assigns this run to this agent: stop it, report nothing.
    Abandon,
}

/// The tokens a run task watches (see the module documentation).
#[derive(Debug, Clone)]
pub struct RunSignals {
    pub stop: CancellationToken,
    pub abandon: CancellationToken,
    pub shutdown: CancellationToken,
}

impl RunSignals {
    /// A run's tokens: `abandon` and `shutdown` are children of the agent's, `stop` is
    /// the run's own.
    pub fn for_run(agent_abandon: &CancellationToken, agent_shutdown: &CancellationToken) -> Self {
        RunSignals {
            stop: CancellationToken::new(),
            abandon: agent_abandon.child_token(),
            shutdown: agent_shutdown.child_token(),
        }
    }

    pub fn signal(&self, s: RunSignal) {
        match s {
            RunSignal::Stop => self.stop.cancel(),
            RunSignal::Abandon => self.abandon.cancel(),
        }
    }

    /// Resolves when any of the three is cancelled.
    async fn interrupted(&self) {
        tokio::select! {
            _ = self.stop.cancelled() => {}
            _ = self.abandon.cancelled() => {}
            _ = self.shutdown.cancelled() => {}
        }
    }
}

/// Sends a run's state reports in order, retrying transient failures.
struct Reporter {
    tx: mpsc::UnboundedSender<RunUpdate>,
    task: JoinHandle<()>,
}

impl Reporter {
    fn new(shared: Arc<Shared>, run_id: String, signals: RunSignals) -> Reporter {
        let (tx, mut rx) = mpsc::unbounded_channel::<RunUpdate>();
        let task = tokio::spawn(async move {
            let mut refused = false;
            while let Some(u) = rx.recv().await {
                if refused {
                    continue;
                }
                let mut delay = Duration::from_millis(100);
                loop {
                    match shared.client.update_run(&run_id, &u).await {
                        Ok(_) => break,
                        Err(e) if e.is_transient() => {
                            tracing::warn!(message = "Could not report a run's state; retrying.", run = %run_id, state = %u.state, error = %e);
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(10));
                        }
                        Err(e) if shared.session_over(&e) => {
                            refused = true;
                            break;
                        }
                        Err(e) => {
                            // Find out why: the run may have been stopped meanwhile (go
                            // on, stopping), or is no longer ours (let go).
                            match shared.client.get_run(&run_id).await {
                                Ok(r)
                                    if r.state == RunState::Stopping && !u.state.is_terminal() =>
                                {
                                    signals.stop.cancel();
                                }
                                Ok(r) if u.state.is_terminal() && r.state.is_terminal() => {}
                                _ => {
                                    tracing::warn!(message = "The server refused a run report; letting the run go.", run = %run_id, state = %u.state, error = %e);
                                    signals.abandon.cancel();
                                    refused = true;
                                }
                            }
                            break;
                        }
                    }
                }
            }
        });
        Reporter { tx, task }
    }

    fn send(&self, session: &str, r: Report) {
        let _ = self.tx.send(RunUpdate {
            session: session.to_string(),
            state: r.state,
            reason: r.reason,
            exit_code: r.exit_code,
            failure: r.failure,
            built: r.built.map(|b| *b),
        });
    }

    /// Waits until every report was delivered (or refused); with `within`, gives up
    /// after that long (the agent is going away) and aborts the task.
    async fn finish(self, within: Option<Duration>) {
        drop(self.tx);
        let mut task = self.task;
        match within {
            None => {
                let _ = (&mut task).await;
            }
            Some(d) => {
                if tokio::time::timeout(d, &mut task).await.is_err() {
                    task.abort();
                    let _ = task.await;
                }
            }
        }
    }
}

/// A report of the run's state.
#[derive(Debug, Clone, PartialEq)]
struct Report {
    state: RunState,
    reason: String,
    exit_code: Option<i32>,
    failure: Option<Failure>,
    /// The image built for the run (with `starting`, after a build); boxed to keep
    /// reports (and the `Result`s carrying them) small.
    built: Option<Box<BuiltImage>>,
}

impl Report {
    fn progress(state: RunState, reason: impl Into<String>) -> Report {
        Report {
            state,
            reason: reason.into(),
            exit_code: None,
            failure: None,
            built: None,
        }
    }

    /// `failed` at `stage`, the message also being the reason.
    fn failed(stage: FailureStage, message: String, log_tail: Vec<String>) -> Report {
        Report {
            state: RunState::Failed,
            reason: message.clone(),
            exit_code: None,
            failure: Some(Failure {
                stage,
                message,
                log_tail,
            }),
            built: None,
        }
    }
}

/// How the run task ends, for [`report`].
enum Ending {
    /// Report this final state (or `queued`), then clean the execution up, if any.
    Report(Report, Option<Box<dyn Execution>>),
    /// Left running for a restarted agent: nothing more is reported.
    LeftRunning(Box<dyn Execution>),
    /// The server let the run go: stopped, nothing reported.
    Abandoned(Option<Box<dyn Execution>>),
}

/// Everything one run task holds.
struct RunCtx {
    shared: Arc<Shared>,
    run: Run,
    token: Secret,
    signals: RunSignals,
    reporter: Reporter,
    sink: LogSink,
    shipper: JoinHandle<()>,
    /// When the claim arrived (the lease runs from about then).
    claimed_at: Instant,
    /// The claim was confirmed already (by `building`).
    confirmed: bool,
}

impl RunCtx {
    fn report(&self, r: Report) {
        self.reporter.send(&self.shared.session, r);
    }

    /// A failure, also written into the run's log.
    fn failure(&self, stage: FailureStage, message: String) -> Report {
        self.sink.system(&format!("[hoist: {message}]"));
        Report::failed(stage, message, self.sink.tail())
    }

    fn agent(&self) -> &str {
        &self.shared.name
    }
}

/// Runs one claimed (or re-adopted) run to its end.
pub async fn supervise(
    shared: Arc<Shared>,
    claimed: ClaimedRun,
    adopted: bool,
    signals: RunSignals,
) {
    let run = claimed.run;
    let reporter = Reporter::new(shared.clone(), run.id.clone(), signals.clone());
    let sink = LogSink::new();
    let shipper = tokio::spawn(ship(
        sink.clone(),
        shared.client.clone(),
        run.id.clone(),
        shared.session.clone(),
    ));
    let mut ctx = RunCtx {
        shared,
        run,
        token: claimed.token,
        signals,
        reporter,
        sink,
        shipper,
        claimed_at: Instant::now(),
        confirmed: adopted,
    };
    let ending = drive(&mut ctx, adopted).await;
    report(ctx, ending).await;
}

/// The phases up to the end of the execution.
async fn drive(ctx: &mut RunCtx, adopted: bool) -> Ending {
    let plan = match prepare(ctx, adopted) {
        Ok(p) => p,
        Err(r) => return Ending::Report(r, None),
    };
    let (build_note, built) = if plan.build {
        match build(ctx).await {
            Ok((note, built)) => (Some(note), Some(built)),
            Err(ending) => return ending,
        }
    } else {
        (None, None)
    };
    let (job, macro_summary) = job_spec(ctx);
    let started = if adopted {
        adopt(ctx, plan.runner.as_ref(), &job).await
    } else {
        let mut reason = format!("starting on agent {}", ctx.agent());
        for note in build_note.iter().chain(Some(&macro_summary)) {
            if !note.is_empty() {
                reason.push_str("; ");
                reason.push_str(note);
            }
        }
        start(ctx, plan.runner.as_ref(), plan.caps, &job, reason, built).await
    };
    match started {
        Ok((exec, stopping)) => supervise_execution(ctx, exec, stopping, plan.caps).await,
        Err(ending) => ending,
    }
}

/// What [`prepare`] decided.
struct Plan {
    runner: Arc<dyn Runner>,
    caps: Capabilities,
    /// The job's image must be built (or found) first.
    build: bool,
}

/// The runner for the run, and whether its job needs an image built.
fn prepare(ctx: &RunCtx, adopted: bool) -> Result<Plan, Report> {
    let resource = ctx.run.resource;
    let Some(runner) = ctx.shared.runners.get(&resource).cloned() else {
        return Err(ctx.failure(
            FailureStage::Agent,
            format!("agent {} {}", ctx.agent(), ctx.shared.no_runner(resource)),
        ));
    };
    let caps = runner.capabilities();
    // Git and code jobs need their image built (or found) for runners that run images;
    // the others check the source out themselves. An adopted run has its image.
    let build = !adopted
        && caps.needs_image
        && matches!(
            ctx.run.job_source,
            Some(JobSource::Git { .. } | JobSource::Code { .. })
        );
    Ok(Plan {
        runner,
        caps,
        build,
    })
}

/// Finds or builds the job's image; returns the note and the image for the `starting`
/// report.
async fn build(ctx: &mut RunCtx) -> Result<(String, BuiltImage), Ending> {
    let shared = ctx.shared.clone();
    let job_name = ctx
        .run
        .job
        .as_ref()
        .map(|j| j.to_string())
        .unwrap_or_default();
    ctx.report(Report::progress(
        RunState::Building,
        format!(
            "building the image of job {job_name} on agent {} ({} builder)",
            shared.name,
            shared.builder.kind()
        ),
    ));
    ctx.confirmed = true;
    let outcome = tokio::select! {
        biased;
        r = shared.builder.build(&ctx.run, &ctx.sink) => Some(r),
        // The build is interrupted (its future dropped: the daemon stops it).
        _ = ctx.signals.interrupted() => None,
    };
    match outcome {
        Some(Ok(built)) => {
            let note = if built.cache_hit {
                format!("image {} exists: no build", built.image)
            } else {
                format!("built image {}", built.image)
            };
            ctx.run.image = Some(built.image.clone());
            Ok((
                note,
                BuiltImage {
                    image: built.image,
                    cache_hit: built.cache_hit,
                    builder: shared.builder.kind().to_string(),
                },
            ))
        }
        Some(Err(e)) => {
            let failure = e.failure();
            ctx.sink
                .system(&format!("[hoist: build failed: {}]", failure.message));
            let log_tail = if failure.log_tail.is_empty() {
                ctx.sink.tail()
            } else {
                failure.log_tail.clone()
            };
            Err(Ending::Report(
                Report {
                    state: RunState::Failed,
                    reason: failure.message.clone(),
                    exit_code: None,
                    failure: Some(Failure {
                        log_tail,
                        ..failure
                    }),
                    built: None,
                },
                None,
            ))
        }
        None => Err(interrupted_before_start(ctx, "during the image build")),
    }
}

/// A run interrupted before its job started: abandoned (nothing to report), stopped,
/// or back to the queue (the agent shuts down).
fn interrupted_before_start(ctx: &RunCtx, when: &str) -> Ending {
    if ctx.signals.abandon.is_cancelled() {
        return Ending::Abandoned(None);
    }
    let r = if ctx.signals.stop.is_cancelled() {
        Report::progress(RunState::Stopped, format!("stopped {when}"))
    } else {
        Report::progress(
            RunState::Queued,
            format!("agent {} shut down {when}; back to the queue", ctx.agent()),
        )
    };
    Ending::Report(r, None)
}

/// What the runner needs from the claimed run: macros substituted, the environment
/// built. Returns the spec and what the macros did (for the `starting` report).
fn job_spec(ctx: &RunCtx) -> (JobSpec, String) {
    let shared = &ctx.shared;
    prepare_job(&Preparation {
        run: &ctx.run,
        token: &ctx.token,
        agent_name: &shared.name,
        base_url: &shared.base_url,
        host_env: &shared.host_env,
        env_allow_list: &shared.config.env_allow_list,
    })
}

/// What [`prepare_job`] works from: a run as the server hands it out, and the agent.
#[derive(Debug, Clone, Copy)]
pub struct Preparation<'a> {
    pub run: &'a Run,
    /// The run token handed to the job as `HOIST_RUN_TOKEN`.
    pub token: &'a Secret,
    pub agent_name: &'a str,
    /// `HOIST_BASE_URL`: the server as the agent reaches it.
    pub base_url: &'a str,
    /// The agent's environment (for `${NAME}` macros).
    pub host_env: &'a HostEnv,
    /// The agent config's `env-allow-list`.
    pub env_allow_list: &'a [String],
}

/// The prepare phase's pure part: the queue config's macros filled, hoist's `HOIST_*`
/// variables over the run's env, the `hoist.*` labels: the [`JobSpec`] a runner gets.
/// Returns it and what the macros did. A claimed run and a dry run
/// ([`dry_run_job`]) both come here.
pub fn prepare_job(p: &Preparation<'_>) -> (JobSpec, String) {
    let run = p.run;
    let env_lookup = |n: &str| p.host_env.raw(n).map(str::to_string);
    let mctx = MacroContext {
        project: &run.project,
        entity: &run.entity,
        run_id: &run.id,
        run_name: &run.name,
        image_uri: run.image.as_deref(),
        env: &env_lookup,
        allow: p.env_allow_list,
    };
    let (resource_config, report) = macros::apply(&run.resource_config, &mctx);
    let queue = format!("{}/{}", run.entity, run.queue);
    let mut env: EnvVars = run.env.clone();
    for (k, v) in [
        ("HOIST_RUN_ID", run.id.clone()),
        ("HOIST_RUN_NAME", run.name.clone()),
        ("HOIST_PROJECT", run.project.clone()),
        ("HOIST_ENTITY", run.entity.clone()),
        ("HOIST_QUEUE", queue.clone()),
        ("HOIST_BASE_URL", p.base_url.to_string()),
        ("HOIST_RUN_TOKEN", p.token.expose().to_string()),
        ("HOIST_RUN_CONFIG", run.config.to_string()),
    ] {
        env.insert(k.to_string(), v);
    }
    let labels = [
        (runners::LABEL_RUN_ID, run.id.clone()),
        (runners::LABEL_AGENT, p.agent_name.to_string()),
        (runners::LABEL_QUEUE, run.queue.clone()),
        (runners::LABEL_ENTITY, run.entity.clone()),
        (runners::LABEL_PROJECT, run.project.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let job = JobSpec {
        run_id: run.id.clone(),
        run_name: run.name.clone(),
        project: run.project.clone(),
        entity: run.entity.clone(),
        queue,
        agent_name: p.agent_name.to_string(),
        image: run.image.clone(),
        entry_point: run.entry_point.clone(),
        args: run.args.clone(),
        env,
        resource_config,
        labels,
        source: run
            .job_source
            .clone()
            .filter(|s| !matches!(s, JobSource::Image { .. })),
    };
    (job, report.summary())
}

/// `HOIST_RUN_TOKEN` in a dry run: a placeholder, never a real token (a dry-run launch
/// issues none), and masked wherever the dry run is shown.
pub const DRY_RUN_TOKEN: &str = "dry-run-placeholder-not-a-run-token";

/// What an agent would hand its runner for a run, without a claim.
#[derive(Debug, Clone)]
pub struct DryRunJob {
    pub job: JobSpec,
    /// What the agent would do besides (an image build, the macros it filled or
    /// withheld), for people.
    pub notes: Vec<String>,
}

/// The prepare phase of [`supervise`] for `run` as a dry-run launch answers it (`POST
/// /api/v1/runs` with `dry_run`), for an agent with `config`, named `agent_name`,
/// reaching the server at `base_url`, in `host_env`, whose runner for the run has
/// `caps`. The run token is [`DRY_RUN_TOKEN`]. A git or code job that the agent would
/// build first (`caps.needs_image`) gets a placeholder image naming the job, and a note:
/// its tag is a hash of the source, known only once it is fetched.
pub fn dry_run_job(
    run: &Run,
    config: &crate::config::AgentConfig,
    host_env: &HostEnv,
    agent_name: &str,
    base_url: &str,
    caps: Capabilities,
) -> DryRunJob {
    let mut run = run.clone();
    let mut notes = Vec::new();
    let build = caps.needs_image
        && matches!(
            run.job_source,
            Some(JobSource::Git { .. } | JobSource::Code { .. })
        );
    if build {
        let job = run
            .job
            .as_ref()
            .map(|j| j.to_string())
            .unwrap_or_else(|| "of the run".to_string());
        let image = format!("hoist-dry-run/image-of-job-{}", placeholder_name(&job));
        notes.push(format!(
            "the {} builder would first build (or find) the image of job {job}: its tag is a hash of the job's source, so it is shown as {image}",
            config.builder.kind_type().as_str()
        ));
        run.image = Some(image);
    }
    let token = Secret::new(DRY_RUN_TOKEN);
    let (job, macros) = prepare_job(&Preparation {
        run: &run,
        token: &token,
        agent_name,
        base_url,
        host_env,
        env_allow_list: &config.env_allow_list,
    });
    if !macros.is_empty() {
        notes.push(macros);
    }
    notes.push(
        "HOIST_RUN_TOKEN is a placeholder: a real run gets a run-scoped token when an agent claims it"
            .to_string(),
    );
    DryRunJob { job, notes }
}

/// `name:v3` → `name-v3`, lowercase, for a placeholder image reference.
fn placeholder_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// Starts the job (retrying transient failures), reports `starting`, waits until it
/// runs and reports `running`. Returns the execution and whether it is being stopped.
async fn start(
    ctx: &RunCtx,
    runner: &dyn Runner,
    caps: Capabilities,
    job: &JobSpec,
    reason: String,
    built: Option<BuiltImage>,
) -> Result<(Box<dyn Execution>, bool), Ending> {
    let timeout = ctx.shared.config.start_timeout;
    let deadline = Instant::now() + timeout;
    let timed_out = || {
        Ending::Report(
            ctx.failure(
                FailureStage::Run,
                format!(
                    "the run did not start within start_timeout ({}s)",
                    timeout.as_secs()
                ),
            ),
            None,
        )
    };
    // An unconfirmed claim is confirmed by `starting`: when starting takes long (an
    // image pull), halfway through the lease instead of once the job started.
    let confirm_at = ctx.claimed_at + ctx.shared.lease / 2;
    let confirm_early = !ctx.confirmed;
    let mut confirmed = false;
    let mut backoff = Duration::from_secs(1);
    let exec = loop {
        let attempt = runner.start(job, ctx.sink.clone());
        tokio::pin!(attempt);
        let result = loop {
            tokio::select! {
                biased;
                r = &mut attempt => break Some(r),
                _ = tokio::time::sleep_until(confirm_at), if confirm_early && !confirmed => {
                    confirmed = true;
                    ctx.report(Report {
                        built: built.clone().map(Box::new),
                        ..Report::progress(
                            RunState::Starting,
                            format!("{reason}; the job is still being started"),
                        )
                    });
                }
                _ = tokio::time::sleep_until(deadline) => break None,
            }
        };
        match result {
            None => return Err(timed_out()),
            Some(Ok(exec)) => break exec,
            Some(Err(e)) if e.is_transient() && Instant::now() + backoff < deadline => {
                ctx.sink.system(&format!(
                    "[hoist: could not start the job: {e}; trying again in {}s]",
                    backoff.as_secs()
                ));
                tracing::warn!(message = "Starting a run failed; retrying.", run = %ctx.run.id, error = %e, retry_in_s = backoff.as_secs());
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = ctx.signals.interrupted() => {
                        return Err(interrupted_before_start(ctx, "while its start was retried"));
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Some(Err(e)) => {
                let msg = match &e {
                    RunnerError::Refused(m) => format!("refused by agent {}: {m}", ctx.agent()),
                    other => format!("could not start: {other}"),
                };
                return Err(Ending::Report(ctx.failure(e.stage(), msg), None));
            }
        }
    };
    if !confirmed {
        ctx.report(Report {
            built: built.map(Box::new),
            ..Report::progress(RunState::Starting, reason)
        });
    }
    if caps.reports_pending {
        ctx.sink.system(&format!(
            "[hoist: {} accepted the run; waiting for it to run]",
            exec.describe()
        ));
    }
    let note = format!("running as {}", exec.describe());
    wait_running(ctx, exec, deadline, note).await
}

/// Waits until the execution runs, then reports `running` with `note`. An execution
/// that ends first, or a signal, goes on to [`supervise`], which reports them.
async fn wait_running(
    ctx: &RunCtx,
    exec: Box<dyn Execution>,
    deadline: Instant,
    note: String,
) -> Result<(Box<dyn Execution>, bool), Ending> {
    enum Seen {
        Running(Result<(), RunnerError>),
        Other,
        TimedOut,
    }
    // In this order: an execution that runs at once is reported `running` even when
    // it has already ended.
    let seen = tokio::select! {
        biased;
        r = exec.running() => Seen::Running(r),
        _ = exec.wait() => Seen::Other,
        _ = ctx.signals.interrupted() => Seen::Other,
        _ = tokio::time::sleep_until(deadline) => Seen::TimedOut,
    };
    let failed = match seen {
        Seen::Running(Ok(())) => {
            ctx.report(Report::progress(RunState::Running, note));
            return Ok((exec, false));
        }
        Seen::Other => return Ok((exec, false)),
        Seen::Running(Err(e)) => ctx.failure(e.stage(), format!("could not start: {e}")),
        Seen::TimedOut => ctx.failure(
            FailureStage::Run,
            format!(
                "the run did not start running within start_timeout ({}s){}",
                ctx.shared.config.start_timeout.as_secs(),
                exec.pending_reason()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
        ),
    };
    if let Err(e) = exec.stop(ctx.shared.config.stopped_run_timeout).await {
        tracing::warn!(message = "Stopping a run that did not start failed.", run = %ctx.run.id, error = %e);
    }
    Err(Ending::Report(failed, Some(exec)))
}

/// Finds the execution an earlier process of this agent left (after a restart).
/// Returns it and whether it is being stopped.
async fn adopt(
    ctx: &RunCtx,
    runner: &dyn Runner,
    job: &JobSpec,
) -> Result<(Box<dyn Execution>, bool), Ending> {
    let resume = log_resume(&ctx.shared.client, &ctx.run.id).await;
    let mut backoff = Duration::from_secs(1);
    let deadline = Instant::now() + ctx.shared.config.start_timeout;
    let found = loop {
        match runner
            .adopt_resuming(job, ctx.sink.clone(), resume.clone())
            .await
        {
            Err(e) if e.is_transient() && Instant::now() + backoff < deadline => {
                tracing::warn!(message = "Finding a run's execution failed; retrying.", run = %ctx.run.id, error = %e, retry_in_s = backoff.as_secs());
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = ctx.signals.interrupted() => {
                        if ctx.signals.abandon.is_cancelled() {
                            return Err(Ending::Abandoned(None));
                        }
                    }
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            other => break other,
        }
    };
    let exec = match found {
        Ok(Adopted::Found(exec)) => exec,
        Ok(Adopted::Gone(reason)) => {
            return Err(Ending::Report(
                ctx.failure(FailureStage::Agent, reason),
                None,
            ));
        }
        Err(e) => {
            let msg = format!("could not re-adopt the run after an agent restart: {e}");
            return Err(Ending::Report(ctx.failure(e.stage(), msg), None));
        }
    };
    let note = format!(
        "re-adopted {} by agent {} after a restart",
        exec.describe(),
        ctx.agent()
    );
    ctx.sink.system(&format!("[hoist: {note}]"));
    match ctx.run.state {
        RunState::Stopping => {
            if let Err(e) = exec.stop(ctx.shared.config.stopped_run_timeout).await {
                tracing::warn!(message = "Stopping a re-adopted run failed.", run = %ctx.run.id, error = %e);
            }
            Ok((exec, true))
        }
        RunState::Starting | RunState::Unknown => {
            if ctx.run.stop_requested {
                ctx.signals.stop.cancel();
            }
            wait_running(ctx, exec, deadline, note).await
        }
        _ => {
            if ctx.run.stop_requested {
                ctx.signals.stop.cancel();
            }
            Ok((exec, false))
        }
    }
}

/// Supervises the execution until it ends, the server lets it go, or the agent shuts
/// down. `stopping`: a stop was already sent.
async fn supervise_execution(
    ctx: &RunCtx,
    exec: Box<dyn Execution>,
    mut stopping: bool,
    caps: Capabilities,
) -> Ending {
    let grace = ctx.shared.config.stopped_run_timeout;
    let signals = &ctx.signals;
    loop {
        if signals.abandon.is_cancelled() {
            if let Err(e) = exec.stop(grace).await {
                tracing::debug!(message = "Stopping an abandoned run failed.", run = %ctx.run.id, error = %e);
            }
            let _ = tokio::time::timeout(grace + Duration::from_secs(10), exec.wait()).await;
            return Ending::Abandoned(Some(exec));
        }
        if signals.shutdown.is_cancelled() {
            if caps.survives_restart {
                return Ending::LeftRunning(exec);
            }
            // An execution that cannot outlive the agent's supervision is stopped.
            if !stopping {
                stopping = true;
                ctx.report(Report::progress(
                    RunState::Stopping,
                    format!("agent {} shutting down", ctx.agent()),
                ));
            }
            if let Err(e) = exec.stop(grace).await {
                tracing::warn!(message = "Stopping a run failed.", run = %ctx.run.id, error = %e);
            }
            let result = exec.wait().await;
            return Ending::Report(
                outcome(result, stopping, requeues(ctx), ctx.sink.tail()),
                Some(exec),
            );
        }
        if signals.stop.is_cancelled() && !stopping {
            stopping = true;
            ctx.sink.system(&format!(
                "[hoist: stop requested; sending SIGTERM, killing after {}s]",
                grace.as_secs()
            ));
            if let Err(e) = exec.stop(grace).await {
                tracing::warn!(message = "Stopping a run failed.", run = %ctx.run.id, error = %e);
            }
        }
        tokio::select! {
            biased;
            r = exec.wait() => {
                return Ending::Report(outcome(r, stopping, requeues(ctx), ctx.sink.tail()), Some(exec));
            }
            _ = signals.abandon.cancelled() => {}
            _ = signals.shutdown.cancelled() => {}
            _ = signals.stop.cancelled(), if !stopping => {}
        }
    }
}

/// How often a preempted run may still go back to its queue: [`Run::attempts`] (how
/// many times the server handed the run to an agent, this time included) against the
/// agent config's `max_requeues`. The server has its own bound (`--max-requeues`) on
/// every kind of re-queue; this one is the agent owner's, for preemptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Requeues {
    attempts: u32,
    max: u32,
}

impl Requeues {
    /// Re-queuing now would be re-queue number `attempts`: allowed up to `max`.
    fn allowed(self) -> bool {
        self.attempts <= self.max
    }
}

fn requeues(ctx: &RunCtx) -> Requeues {
    Requeues {
        attempts: ctx.run.attempts,
        max: ctx.shared.config.max_requeues,
    }
}

/// How an execution's end is reported: the one place an [`Exit`] (or a lost
/// execution) becomes the run's final state.
///
/// | the execution | reported |
/// |---|---|
/// | any end after a stop was sent | `stopped` |
/// | exit code 0 | `finished` |
/// | another exit code, a signal | `failed` (stage run), "the job ended with …" |
/// | failed, the backend saying why | `failed` (stage run), the backend's reason |
/// | preempted, handed out at most `max_requeues` times so far | `queued` (the server re-queues it, within its own bound) |
/// | preempted, handed out more often | `failed` (stage run), naming the preemption and `max_requeues` |
/// | lost (removed, the backend gone) | `failed`, the error's stage |
fn outcome(
    result: Result<Exit, RunnerError>,
    stopping: bool,
    requeues: Requeues,
    log_tail: Vec<String>,
) -> Report {
    match result {
        Ok(Exit::Preempted { reason }) if !stopping && requeues.allowed() => Report::progress(
            RunState::Queued,
            format!("preempted: {reason}; back to the queue"),
        ),
        Ok(Exit::Preempted { reason }) if !stopping => Report::failed(
            FailureStage::Run,
            format!(
                "preempted: {reason}; the run was handed to agents {} times (re-queued {} times already), and the agent's max_requeues is {}, so it fails instead of going back to its queue (raise max_requeues in the agent config to allow more)",
                requeues.attempts,
                requeues.attempts.saturating_sub(1),
                requeues.max
            ),
            log_tail,
        ),
        Ok(exit) if stopping => Report {
            state: RunState::Stopped,
            reason: format!("stopped ({exit})"),
            exit_code: exit.code(),
            failure: None,
            built: None,
        },
        Ok(exit) if exit.success() => Report {
            state: RunState::Finished,
            reason: exit.to_string(),
            exit_code: Some(0),
            failure: None,
            built: None,
        },
        Ok(exit) => {
            let message = match &exit {
                Exit::Failed { .. } => exit.to_string(),
                _ => format!("the job ended with {exit}"),
            };
            Report {
                exit_code: exit.code(),
                ..Report::failed(FailureStage::Run, message, log_tail)
            }
        }
        Err(e) => Report::failed(e.stage(), format!("lost track of the job: {e}"), log_tail),
    }
}

/// The last phase: the final report (after the run's logs, so that a follower sees
/// every line before the end), then the execution cleaned up and the run's tasks
/// joined.
async fn report(ctx: RunCtx, ending: Ending) {
    let RunCtx {
        shared,
        reporter,
        sink,
        shipper,
        ..
    } = ctx;
    match ending {
        Ending::Report(r, exec) => {
            sink.close();
            let _ = tokio::time::timeout(Duration::from_secs(30), sink.flushed()).await;
            reporter.send(&shared.session, r);
            reporter.finish(None).await;
            if let Some(exec) = exec {
                exec.cleanup().await;
            }
            join_within(shipper, Duration::from_secs(5)).await;
        }
        Ending::LeftRunning(exec) => {
            sink.system(&format!(
                "[hoist: agent {} stopped; the run keeps running and will be re-adopted]",
                shared.name
            ));
            sink.close();
            let _ = tokio::time::timeout(Duration::from_secs(3), sink.flushed()).await;
            join_within(shipper, Duration::ZERO).await;
            reporter.finish(Some(Duration::from_secs(3))).await;
            // Dropping the execution ends its tasks; what it runs is left running.
            drop(exec);
        }
        Ending::Abandoned(exec) => {
            sink.close();
            let _ = tokio::time::timeout(Duration::from_secs(3), sink.flushed()).await;
            join_within(shipper, Duration::ZERO).await;
            if let Some(exec) = exec {
                exec.cleanup().await;
            }
            reporter.finish(Some(Duration::from_secs(10))).await;
        }
    }
}

/// Waits up to `d` for a task to end, then aborts it and waits for that.
async fn join_within(mut task: JoinHandle<()>, d: Duration) {
    if tokio::time::timeout(d, &mut task).await.is_err() {
        task.abort();
        let _ = task.await;
    }
}

/// Lines read back per request when looking for where a log resumes.
const RESUME_PAGE: u64 = 1000;
/// Pages read back at most (a stream not seen in them is taken as shipped up to them).
const RESUME_PAGES: u64 = 10;

/// Lines `start..end` of a run's log, over as many pages as the server's byte cap per
/// page takes; `None` when a read fails.
async fn read_log_range(
    client: &Client,
    run_id: &str,
    start: u64,
    end: u64,
) -> Option<Vec<hoist_core::api::StoredLogLine>> {
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let page = client.read_logs(run_id, at, Some(end - at)).await.ok()?;
        if page.lines.is_empty() || page.next_offset <= at {
            break;
        }
        at = page.next_offset;
        out.extend(page.lines);
    }
    Some(out)
}

/// Which of a run's lines the server has (to resume after them), per stream and per
/// source ([`TailScan`]): read back from the log's end, page by page, until the last
/// millisecond of every stream and source seen is counted (or [`RESUME_PAGES`] pages).
async fn log_resume(client: &Client, run_id: &str) -> LogResume {
    let Ok(len) = client
        .append_logs(
            run_id,
            &LogBatch {
                warnings: Vec::new(),
                session: None,
                lines: vec![],
            },
        )
        .await
        .map(|p| p.next_offset)
    else {
        return LogResume::default();
    };
    let mut scan = TailScan::default();
    let mut end = len;
    for _ in 0..RESUME_PAGES {
        if end == 0 || scan.done() {
            break;
        }
        let start = end.saturating_sub(RESUME_PAGE);
        let Some(lines) = read_log_range(client, run_id, start, end).await else {
            break;
        };
        if lines.is_empty() {
            break;
        }
        scan.page(&lines);
        end = start;
    }
    scan.finish(end == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A first attempt, under the default bound.
    const FIRST: Requeues = Requeues {
        attempts: 1,
        max: crate::config::DEFAULT_MAX_REQUEUES,
    };

    fn reported(
        r: Result<Exit, RunnerError>,
        stopping: bool,
    ) -> (RunState, String, Option<i32>, Option<FailureStage>) {
        reported_after(r, stopping, FIRST)
    }

    fn reported_after(
        r: Result<Exit, RunnerError>,
        stopping: bool,
        requeues: Requeues,
    ) -> (RunState, String, Option<i32>, Option<FailureStage>) {
        let r = outcome(r, stopping, requeues, vec!["tail".into()]);
        (r.state, r.reason, r.exit_code, r.failure.map(|f| f.stage))
    }

    #[test]
    fn every_exit_maps_onto_one_state() {
        assert_eq!(
            reported(Ok(Exit::Code(0)), false),
            (RunState::Finished, "exit code 0".into(), Some(0), None)
        );
        assert_eq!(
            reported(Ok(Exit::Code(3)), false),
            (
                RunState::Failed,
                "the job ended with exit code 3".into(),
                Some(3),
                Some(FailureStage::Run)
            )
        );
        assert_eq!(
            reported(Ok(Exit::Signal(9)), false),
            (
                RunState::Failed,
                "the job ended with killed by signal 9".into(),
                Some(137),
                Some(FailureStage::Run)
            )
        );
        let evicted = Exit::Failed {
            reason: "the pod was evicted: the node ran out of memory".into(),
            code: None,
        };
        assert_eq!(
            reported(Ok(evicted), false),
            (
                RunState::Failed,
                "the pod was evicted: the node ran out of memory".into(),
                None,
                Some(FailureStage::Run)
            )
        );
        let preempted = || Exit::Preempted {
            reason: "the spot instance was reclaimed".into(),
        };
        assert_eq!(
            reported(Ok(preempted()), false),
            (
                RunState::Queued,
                "preempted: the spot instance was reclaimed; back to the queue".into(),
                None,
                None
            )
        );
        // Preempted again and again: back to the queue while the run was handed out at
        // most max_requeues times, then failed, naming the preemption and the key.
        for attempts in 1..=3 {
            let bound = Requeues { attempts, max: 3 };
            assert_eq!(
                reported_after(Ok(preempted()), false, bound).0,
                RunState::Queued,
                "attempt {attempts}"
            );
        }
        assert_eq!(
            reported_after(Ok(preempted()), false, Requeues { attempts: 4, max: 3 }),
            (
                RunState::Failed,
                "preempted: the spot instance was reclaimed; the run was handed to agents 4 times (re-queued 3 times already), and the agent's max_requeues is 3, so it fails instead of going back to its queue (raise max_requeues in the agent config to allow more)".into(),
                None,
                Some(FailureStage::Run)
            )
        );
        // max_requeues: 0 fails a preempted run at once.
        assert_eq!(
            reported_after(
                Ok(preempted()),
                false,
                Requeues {
                    attempts: 1,
                    max: 0
                }
            )
            .0,
            RunState::Failed
        );
        // A stop wins over how the job happened to end, and over the bound.
        assert_eq!(reported(Ok(preempted()), true).0, RunState::Stopped);
        assert_eq!(
            reported_after(
                Ok(preempted()),
                true,
                Requeues {
                    attempts: 9,
                    max: 0
                }
            )
            .0,
            RunState::Stopped
        );
        assert_eq!(
            reported(Ok(Exit::Signal(9)), true),
            (
                RunState::Stopped,
                "stopped (killed by signal 9)".into(),
                Some(137),
                None
            )
        );
        assert_eq!(
            reported(
                Err(RunnerError::Gone("container abc was removed".into())),
                false
            ),
            (
                RunState::Failed,
                "lost track of the job: container abc was removed".into(),
                None,
                Some(FailureStage::Agent)
            )
        );
    }
}
