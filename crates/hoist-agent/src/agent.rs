//! The agent loop.
//!
//! ```text
//! register ──► re-adopt held runs ──► loop {
//!     one long-poll claim over all queues (max = free capacity, 0 when full: the
//!     claim then only brings stop requests)
//!     each claimed run ──► its own task (run.rs): start, supervise, report
//! }
//! heartbeat task: every interval, the running runs ──► stop requests, runs to drop
//! ```
//!
//! Architecture Invariant: nothing sleeps between a run arriving and the agent acting
//! on it: the claim answers the moment a run is queued, and the run task starts the
//! job before it reports `starting`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hoist_client::{Client, ClientError};
use hoist_core::api::{AgentSession, ClaimRequest, ErrorCode, Heartbeat, RegisterAgent};
use hoist_core::resource::ResourceType;
use rand::Rng;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::config::{AgentConfig, MaxJobs};
use crate::run::{RunControl, RunSignal, supervise};
use crate::runners::Runner;

/// Most runs asked for in one claim when there is no limit.
const UNLIMITED_CLAIM: u32 = 64;
/// Longest long poll the agent asks for.
const CLAIM_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the hoist server refused the agent: {0}")]
    Refused(String),
    #[error(
        "another agent process registered under the name {0:?} and took over its runs; this one stops (use --name to run two agents)"
    )]
    Superseded(String),
    #[error("the agent cannot start: {0}")]
    Setup(String),
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
    /// Turns git and code jobs into images.
    pub builder: Arc<dyn crate::builders::Builder>,
    /// On shutdown, wait for running runs instead of leaving them to a restarted agent.
    pub drain: bool,
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
    pub builder: Arc<dyn crate::builders::Builder>,
    pub runs: Mutex<HashMap<String, RunControl>>,
    /// A run task ended: capacity freed.
    pub slot_freed: Notify,
    /// Set when the server says this session is superseded.
    pub fatal: watch::Sender<Option<String>>,
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

    /// Marks the session dead (another registration superseded it).
    pub fn supersede(&self) {
        let _ = self.fatal.send(Some(self.name.clone()));
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

/// Runs the agent until `shutdown` turns true (or the session is superseded).
pub async fn run(
    opts: AgentOptions,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let reg = RegisterAgent {
        name: opts.name.clone(),
        host: opts.host.clone(),
        version: hoist_core::VERSION.into(),
        queues: opts.config.queues.clone(),
        entity: opts.config.entity.clone(),
        max_jobs: opts.config.max_jobs.as_i64(),
    };
    let client = opts.client.clone();
    let session: AgentSession =
        match with_backoff("register", &mut shutdown, || client.register_agent(&reg)).await {
            None => return Ok(()),
            Some(Ok(s)) => s,
            Some(Err(e)) => return Err(AgentError::Refused(e.to_string())),
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
        builder: opts.builder,
        runs: Mutex::default(),
        slot_freed: Notify::new(),
        fatal,
    });
    let mut tasks = JoinSet::new();
    for held in session.held_runs {
        spawn_run(&shared, &mut tasks, held, true);
    }
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
            Err(e) if e.code() == Some(ErrorCode::Superseded) => {
                shared.supersede();
                break;
            }
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

    let superseded = fatal_rx.borrow().clone();
    // Shutdown: tell run tasks; they release what has not started, stop local
    // processes, and leave containers running for the next agent (or, draining, wait).
    let sig = if opts.drain {
        RunSignal::Drain
    } else {
        RunSignal::Shutdown
    };
    if superseded.is_some() {
        for c in shared.runs.lock().expect("runs").values() {
            c.signal(RunSignal::Abandon);
        }
    } else {
        for c in shared.runs.lock().expect("runs").values() {
            c.signal(sig);
        }
        if opts.drain && !tasks.is_empty() {
            tracing::info!(
                message = "Draining: waiting for running runs to end.",
                runs = tasks.len()
            );
        }
    }
    while let Some(r) = tasks.join_next().await {
        if let Err(e) = r {
            tracing::error!(message = "A run task panicked.", error = %e);
        }
    }
    hb.abort();
    if let Some(name) = superseded {
        return Err(AgentError::Superseded(name));
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
    let (control, signals) = RunControl::new();
    let id = claimed.run.id.clone();
    shared
        .runs
        .lock()
        .expect("runs")
        .insert(id.clone(), control);
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
            Err(e) if e.code() == Some(ErrorCode::Superseded) => {
                shared.supersede();
                return;
            }
            Err(e) => {
                tracing::warn!(message = "Heartbeat failed; runs keep going and the agent keeps retrying.", error = %e);
            }
        }
    }
}
