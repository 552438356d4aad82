//! The agent loop.
//!
//! ```text
//! look the queues up ──► register ──► re-adopt held runs ──► loop {
//!     one long-poll claim over all queues (max = free capacity, 0 when full: the
//!     claim then only brings stop requests)
//!     each claimed run ──► its own task (run.rs): start, supervise, report
//! }
//! heartbeat task: every interval, the running runs ──► stop requests, runs to drop
//! ```
//!
//! Before registering, the agent looks each configured queue up and keeps only those
//! it has a runner for, saying which it skips and why; it refuses to start when none is
//! left, or when a queue's runner needs a registry the target can pull from
//! ([`Capabilities::needs_registry`]) and the agent config has no `registry`.
//!
//! Shutdown reaches the run tasks through cancellation tokens (see `run.rs`): the
//! agent's `shutdown` token (a parent of every run's), or, when another process took
//! over the agent's name, its `abandon` token. Draining cancels neither: the loop stops
//! claiming and waits for the runs to end.
//!
//! Architecture Invariant: nothing sleeps between a run arriving and the agent acting
//! on it: the claim answers the moment a run is queued, and the run task starts the
//! job before it reports `starting`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hoist_client::{Client, ClientError};
use hoist_core::api::{AgentSession, ClaimRequest, ErrorCode, Heartbeat, Queue, RegisterAgent};
use hoist_core::resource::ResourceType;
use rand::Rng;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{AgentConfig, MaxJobs, RegistryConfig};
use crate::host_env::HostEnv;
use crate::run::{RunSignal, RunSignals, supervise};
use crate::runners::Runner;

/// Most runs asked for in one claim when there is no limit.
const UNLIMITED_CLAIM: u32 = 64;
/// Longest long poll the agent asks for.
const CLAIM_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the hoist server refused the agent: {0}")]
    Refused(#[source] ClientError),
    #[error(
        "another agent process registered under the name {0:?} and took over its runs; this one stops (use --name to run two agents)"
    )]
    Superseded(String),
    /// The server ended the session: the owner lost access to a queue, the key was
    /// revoked or the user deleted. The runs it held were taken back by the server.
    #[error(
        "the hoist server ended this agent's session: {0}; this agent stops (restore the access, then start it again)"
    )]
    SessionEnded(String),
    /// The server does not know the session (its data was reset, or another server).
    #[error(
        "the hoist server does not know this agent's session: {0}; this agent stops (start it again to register anew; running containers are re-adopted)"
    )]
    UnknownSession(String),
    #[error("the agent cannot start: {0}")]
    Setup(String),
    /// A configured queue could not be looked up.
    #[error("the agent cannot serve queue {queue}: {source}")]
    Queue {
        queue: String,
        #[source]
        source: ClientError,
    },
}

/// What the agent needs besides its config.
pub struct AgentOptions {
    pub config: AgentConfig,
    pub client: Client,
    /// The agent's name (stable across restarts).
    pub name: String,
    pub host: String,
    /// The server URL jobs use to report back (`HOIST_BASE_URL`).
    pub base_url: String,
    pub runners: HashMap<ResourceType, Arc<dyn Runner>>,
    /// Why a resource has no runner here (`no Docker daemon answered: …`), for the
    /// messages about queues the agent skips.
    pub unavailable: HashMap<ResourceType, String>,
    /// Turns git and code jobs into images.
    pub builder: Arc<dyn crate::builders::Builder>,
    /// The agent's environment, for queue-config macros.
    pub host_env: Arc<HostEnv>,
    /// On shutdown, wait for running runs instead of leaving them to a restarted agent.
    pub drain: bool,
}

/// Why the agent's session is over, as the server said it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOver {
    /// A newer registration under the same name took over.
    Superseded,
    /// The server ended the session (access lost, key revoked, user deleted).
    Ended(String),
    /// The server does not know the session.
    Unknown(String),
}

/// State shared by the loop, the heartbeat and the run tasks.
pub struct Shared {
    pub client: Client,
    pub config: AgentConfig,
    pub name: String,
    pub agent_id: String,
    pub session: String,
    pub base_url: String,
    pub runners: HashMap<ResourceType, Arc<dyn Runner>>,
    pub unavailable: HashMap<ResourceType, String>,
    pub builder: Arc<dyn crate::builders::Builder>,
    pub host_env: Arc<HostEnv>,
    /// How long a claimed run may stay unconfirmed.
    pub lease: Duration,
    /// The signals of each run task, by run id.
    pub runs: Mutex<HashMap<String, RunSignals>>,
    /// A run task ended: capacity freed.
    pub slot_freed: Notify,
    /// Set when the server says this session is over.
    pub fatal: watch::Sender<Option<SessionOver>>,
    /// Parent of every run's `shutdown` token.
    pub shutdown: CancellationToken,
    /// Parent of every run's `abandon` token.
    pub abandon: CancellationToken,
}

impl Shared {
    pub fn running(&self) -> usize {
        self.runs.lock().expect("runs").len()
    }

    fn signal(&self, run: &str, s: RunSignal) {
        if let Some(c) = self.runs.lock().expect("runs").get(run) {
            c.signal(s);
        }
    }

    /// Why this agent has no runner for `resource`, if it says.
    pub fn no_runner(&self, resource: ResourceType) -> String {
        no_runner(&self.runners, &self.unavailable, resource)
    }

    /// When the server's answer says this session is over (superseded, ended, or
    /// unknown to it), records why and returns true: the agent then stops.
    pub fn session_over(&self, e: &ClientError) -> bool {
        let why = match e.code() {
            Some(ErrorCode::Superseded) => SessionOver::Superseded,
            Some(ErrorCode::SessionEnded) => SessionOver::Ended(e.to_string()),
            Some(ErrorCode::UnknownSession) => SessionOver::Unknown(e.to_string()),
            _ => return false,
        };
        tracing::error!(message = "The server says this agent's session is over; stopping.", reason = ?why);
        self.fatal.send_if_modified(|f| {
            if f.is_none() {
                *f = Some(why);
                true
            } else {
                false
            }
        });
        true
    }
}

/// Retries a registration-time call on transient errors with capped, jittered backoff.
async fn with_backoff<T, F, Fut>(
    what: &str,
    shutdown: &mut watch::Receiver<bool>,
    mut f: F,
) -> Option<Result<T, ClientError>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut delay = Duration::from_millis(200);
    loop {
        match f().await {
            Err(e) if e.is_transient() => {
                tracing::warn!(message = "Server unreachable; retrying.", what, error = %e, retry_in_ms = delay.as_millis() as u64);
                let jitter = rand::rng().random_range(0..=delay.as_millis() as u64 / 2);
                tokio::select! {
                    _ = tokio::time::sleep(delay + Duration::from_millis(jitter)) => {}
                    _ = shutdown.wait_for(|s| *s) => return None,
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            other => return Some(other),
        }
    }
}

/// `has no kubernetes runner` / `has no docker runner (no Docker daemon answered…)`.
fn no_runner(
    runners: &HashMap<ResourceType, Arc<dyn Runner>>,
    unavailable: &HashMap<ResourceType, String>,
    resource: ResourceType,
) -> String {
    let mut have: Vec<&str> = runners.keys().map(|k| k.as_str()).collect();
    have.sort();
    let why = unavailable
        .get(&resource)
        .map(|w| format!(": {w}"))
        .unwrap_or_default();
    format!(
        "has no {resource} runner{why} (it runs: {})",
        if have.is_empty() {
            "nothing".to_string()
        } else {
            have.join(", ")
        }
    )
}

/// Looks one configured queue (`NAME` or `ENTITY/NAME`) up, as the server resolves it
/// at registration: a bare name in the config's entity, else in the user's entities
/// (their own first).
async fn lookup_queue(
    client: &Client,
    spec: &str,
    entity: Option<&str>,
) -> Result<Queue, ClientError> {
    if let Some((e, n)) = spec.split_once('/') {
        return client.get_queue(e, n).await;
    }
    if let Some(e) = entity {
        return client.get_queue(e, spec).await;
    }
    let me = client.me().await?;
    let mut found = Vec::new();
    for e in &me.entities {
        match client.get_queue(e, spec).await {
            Ok(q) => found.push(q),
            Err(err) if err.status() == Some(404) => {}
            Err(err) => return Err(err),
        }
    }
    let refusal = |code, status, message| ClientError::Api {
        status,
        code,
        message,
        details: None,
    };
    match found.len() {
        0 => Err(refusal(
            ErrorCode::NotFound,
            404,
            format!(
                "no queue named {spec:?} in your entities ({}); `hoist queue list` shows the queues you can use",
                me.entities.join(", ")
            ),
        )),
        1 => Ok(found.remove(0)),
        _ if found[0].entity == me.user.name => Ok(found.remove(0)),
        _ => Err(refusal(
            ErrorCode::BadRequest,
            400,
            format!(
                "queue {spec:?} exists in several of your teams ({}); name one as ENTITY/{spec} in the agent's queues",
                found
                    .iter()
                    .map(|q| q.entity.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// The configured queues this agent can serve, as `ENTITY/NAME`. Says which it skips
/// and why; refuses when none is left, or when a queue's target pulls images from a
/// registry and the agent has none. `None`: shut down while looking.
async fn usable_queues(
    opts: &AgentOptions,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<Vec<String>>, AgentError> {
    let mut keep: Vec<String> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    for spec in &opts.config.queues {
        let entity = opts.config.entity.as_deref();
        let q = match with_backoff("look up a queue", shutdown, || {
            lookup_queue(&opts.client, spec, entity)
        })
        .await
        {
            None => return Ok(None),
            Some(Ok(q)) => q,
            Some(Err(source)) => {
                return Err(AgentError::Queue {
                    queue: spec.clone(),
                    source,
                });
            }
        };
        let name = format!("{}/{}", q.entity, q.name);
        let Some(runner) = opts.runners.get(&q.resource) else {
            let why = format!(
                "queue {name} targets {}; this agent {}",
                q.resource,
                no_runner(&opts.runners, &opts.unavailable, q.resource)
            );
            tracing::warn!(message = "Skipping a queue this agent cannot serve.", queue = %name, reason = %why);
            skipped.push(why);
            continue;
        };
        if runner.capabilities().needs_registry
            && matches!(opts.config.registry, RegistryConfig::Local)
        {
            refused.push(format!(
                "queue {name} targets {}, which pulls its images from a registry, and the agent config has no `registry` (images would stay in the local Docker daemon): set `registry` in the agent config to a registry the {} target can pull from (an OCI registry `uri`, or ecr, gcr or acr)",
                q.resource, q.resource
            ));
            continue;
        }
        if !keep.contains(&name) {
            keep.push(name);
        }
    }
    if !refused.is_empty() {
        return Err(AgentError::Setup(refused.join("; ")));
    }
    if keep.is_empty() {
        return Err(AgentError::Setup(format!(
            "none of its queues can be served: {}",
            skipped.join("; ")
        )));
    }
    Ok(Some(keep))
}

/// Lets each runner delete what an earlier process of this agent left for runs the
/// server no longer assigns to it (runs that ended or went back to their queues while
/// the agent was away). Before the first claim, so that no new run is mistaken for a
/// stale one; bounded in time, and a failure only delays the clean-up to the next start.
async fn sweep(shared: &Arc<Shared>, keep: &[String]) {
    const SWEEP_WITHIN: Duration = Duration::from_secs(30);
    // No build survives its agent: what an earlier process left of its builds goes.
    match tokio::time::timeout(SWEEP_WITHIN, shared.builder.sweep(&shared.name)).await {
        Ok(Ok(n)) if n > 0 => {
            tracing::info!(
                message = "Deleted what an earlier process of this agent left of its image builds.",
                builds = n
            );
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(message = "Could not delete what an earlier process of this agent left of its image builds; the next start tries again.", error = %e);
        }
        Err(_) => {
            tracing::warn!(
                message = "Deleting what an earlier process of this agent left of its image builds took too long; the next start tries again."
            );
        }
    }
    for (resource, runner) in &shared.runners {
        match tokio::time::timeout(SWEEP_WITHIN, runner.sweep(&shared.name, keep)).await {
            Ok(Ok(swept)) if !swept.is_empty() => {
                tracing::info!(message = "Deleted what an earlier process of this agent left for runs that are over.", resource = %resource, runs = ?swept);
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(message = "Could not delete what an earlier process of this agent left; the next start tries again.", resource = %resource, error = %e);
            }
            Err(_) => {
                tracing::warn!(message = "Deleting what an earlier process of this agent left took too long; the next start tries again.", resource = %resource);
            }
        }
    }
}

/// Runs the agent until `shutdown` turns true (or the session is superseded).
pub async fn run(
    opts: AgentOptions,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let queues = match usable_queues(&opts, &mut shutdown).await? {
        Some(q) => q,
        None => return Ok(()),
    };
    let reg = RegisterAgent {
        name: opts.name.clone(),
        host: opts.host.clone(),
        version: hoist_core::VERSION.into(),
        queues,
        entity: opts.config.entity.clone(),
        max_jobs: opts.config.max_jobs.as_i64(),
    };
    let client = opts.client.clone();
    let session: AgentSession =
        match with_backoff("register", &mut shutdown, || client.register_agent(&reg)).await {
            None => return Ok(()),
            Some(Ok(s)) => s,
            Some(Err(e)) => return Err(AgentError::Refused(e)),
        };
    tracing::info!(
        message = "Agent registered.",
        agent = %session.agent.name,
        id = %session.agent.id,
        queues = ?session.agent.queues,
        max_jobs = opts.config.max_jobs.as_i64(),
        readopt = session.held_runs.len()
    );
    let (fatal, mut fatal_rx) = watch::channel(None);
    let shared = Arc::new(Shared {
        client: opts.client.clone(),
        config: opts.config.clone(),
        name: opts.name.clone(),
        agent_id: session.agent.id.clone(),
        session: session.session.clone(),
        base_url: opts.base_url.clone(),
        runners: opts.runners,
        unavailable: opts.unavailable,
        builder: opts.builder,
        host_env: opts.host_env,
        lease: Duration::from_millis(session.lease_ms.max(1000)),
        runs: Mutex::default(),
        slot_freed: Notify::new(),
        fatal,
        shutdown: CancellationToken::new(),
        abandon: CancellationToken::new(),
    });
    let mut tasks = JoinSet::new();
    let held: Vec<String> = session.held_runs.iter().map(|r| r.run.id.clone()).collect();
    for held in session.held_runs {
        spawn_run(&shared, &mut tasks, held, true);
    }
    sweep(&shared, &held).await;
    let hb_every = opts
        .config
        .heartbeat_interval
        .unwrap_or(Duration::from_millis(
            session.heartbeat_interval_ms.max(500),
        ))
        .min(Duration::from_millis(
            session.heartbeat_interval_ms.max(500),
        ));
    let hb = tokio::spawn(heartbeat_loop(shared.clone(), hb_every, shutdown.clone()));
    let claim_wait = CLAIM_WAIT.min(Duration::from_millis(session.max_claim_wait_ms.max(1000)));

    let mut backoff = Duration::from_millis(100);
    loop {
        // Reap finished run tasks.
        while let Some(r) = tasks.try_join_next() {
            if let Err(e) = r {
                tracing::error!(message = "A run task panicked.", error = %e);
            }
        }
        if *shutdown.borrow() || fatal_rx.borrow().is_some() {
            break;
        }
        let free = free_capacity(shared.config.max_jobs, shared.running());
        let req = ClaimRequest {
            session: shared.session.clone(),
            max: free,
            wait_ms: claim_wait.as_millis() as u64,
        };
        let freed = shared.slot_freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        let result = tokio::select! {
            r = shared.client.claim(&shared.agent_id, &req) => r,
            // A max=0 claim carries no runs: dropping it to ask again with room is safe.
            _ = &mut freed, if free == 0 => continue,
            _ = shutdown.wait_for(|s| *s) => break,
            _ = fatal_rx.wait_for(|f| f.is_some()) => break,
        };
        match result {
            Ok(resp) => {
                backoff = Duration::from_millis(100);
                for run in &resp.stop {
                    shared.signal(run, RunSignal::Stop);
                }
                for claimed in resp.runs {
                    spawn_run(&shared, &mut tasks, claimed, false);
                }
            }
            Err(e) if shared.session_over(&e) => break,
            Err(e) if e.is_transient() => {
                let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
                tracing::warn!(message = "Claim failed; the server is unreachable. Retrying.", error = %e, retry_in_ms = backoff.as_millis() as u64);
                tokio::select! {
                    _ = tokio::time::sleep(backoff + Duration::from_millis(jitter)) => {}
                    _ = shutdown.wait_for(|s| *s) => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
            Err(e) => {
                // A refusal (queue deleted, key revoked…): say it, and keep trying slowly
                // so that a fixed server is picked up again.
                tracing::error!(message = "The server refused the claim.", error = %e);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = shutdown.wait_for(|s| *s) => break,
                }
            }
        }
    }

    let over = fatal_rx.borrow().clone();
    // Shutdown: tell run tasks; they release what has not started, stop what cannot
    // outlive the agent, and leave the rest running for the next agent (or, draining,
    // wait for the runs to end).
    if matches!(over, Some(SessionOver::Superseded | SessionOver::Ended(_))) {
        // The server gave the runs to someone else, or took them back.
        shared.abandon.cancel();
    } else if over.is_some() {
        // Unknown to this server: leave what runs for an agent that registers anew.
        shared.shutdown.cancel();
    } else if opts.drain {
        if !tasks.is_empty() {
            tracing::info!(
                message = "Draining: waiting for running runs to end.",
                runs = tasks.len()
            );
        }
    } else {
        shared.shutdown.cancel();
    }
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            tracing::error!(message = "A run task panicked.", error = %e);
        }
    }
    hb.abort();
    let _ = hb.await;
    match over {
        Some(SessionOver::Superseded) => return Err(AgentError::Superseded(shared.name.clone())),
        Some(SessionOver::Ended(m)) => return Err(AgentError::SessionEnded(m)),
        Some(SessionOver::Unknown(m)) => return Err(AgentError::UnknownSession(m)),
        None => {}
    }
    if let Err(e) = shared
        .client
        .deregister(&shared.agent_id, &shared.session)
        .await
    {
        tracing::warn!(message = "Could not deregister; the server will mark the agent lost.", error = %e);
    }
    tracing::info!(message = "Agent stopped.");
    Ok(())
}

fn free_capacity(max: MaxJobs, running: usize) -> u32 {
    match max {
        MaxJobs::Unlimited => UNLIMITED_CLAIM,
        MaxJobs::Limit(n) => (n.get() as usize).saturating_sub(running) as u32,
    }
}

fn spawn_run(
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<()>,
    claimed: hoist_core::api::ClaimedRun,
    adopted: bool,
) {
    let signals = RunSignals::for_run(&shared.abandon, &shared.shutdown);
    let id = claimed.run.id.clone();
    shared
        .runs
        .lock()
        .expect("runs")
        .insert(id.clone(), signals.clone());
    let shared = shared.clone();
    tasks.spawn(async move {
        supervise(shared.clone(), claimed, adopted, signals).await;
        shared.runs.lock().expect("runs").remove(&id);
        shared.slot_freed.notify_waiters();
    });
}

async fn heartbeat_loop(shared: Arc<Shared>, every: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let running: Vec<String> = shared.runs.lock().expect("runs").keys().cloned().collect();
        let hb = Heartbeat {
            session: shared.session.clone(),
            running,
        };
        match shared.client.heartbeat(&shared.agent_id, &hb).await {
            Ok(r) => {
                for id in r.stop {
                    shared.signal(&id, RunSignal::Stop);
                }
                for id in r.drop {
                    shared.signal(&id, RunSignal::Abandon);
                }
            }
            Err(e) if shared.session_over(&e) => return,
            Err(e) => {
                tracing::warn!(message = "Heartbeat failed; runs keep going and the agent keeps retrying.", error = %e);
            }
        }
    }
}
