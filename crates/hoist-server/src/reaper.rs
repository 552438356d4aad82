//! Time-driven state changes: lapsed claim leases, lost agents, `unknown` runs whose
//! grace period ran out. One pass per tick; every pass is safe to repeat. Each row is
//! changed in its own write, checked again there: a transient failure of one row (a
//! lost race with a claim, a deadlock) is retried for that row, and a row that still
//! fails is logged and left to the next pass while the others go on.
//!
//! With several replicas on one PostgreSQL database, one replica reaps at a time: the
//! one holding the session advisory lock [`REAPER_LOCK`] on a connection of its own (a
//! lease that ends with the replica's process or connection). The others try to take
//! it on every tick, so a replica that dies is replaced within a tick of PostgreSQL
//! noticing its connection closed. `hoist_reaper_leader` on `/metrics` says which
//! replica holds it.

use std::time::Duration;

use crate::api::AppState;
use crate::store::pg::AdvisoryLease;
use crate::store::retry_transient;

/// The advisory lock key of the reaper's lease (the migrations use 7480).
pub const REAPER_LOCK: i64 = 7481;

/// One pass. Returns how many things changed (for tests and logs).
pub async fn reap_once(state: &AppState) -> usize {
    let now = state.clock.now_ms();
    let cfg = &state.cfg;
    let until = tokio::time::Instant::now() + cfg.reaper_interval.max(Duration::from_millis(200));
    let mut changed = 0;
    match retry_transient(until, "expire leases", || state.store.expire_leases(now)).await {
        Ok(queues) => {
            changed += queues.len();
            for q in queues {
                state.dispatch.wake_queue(&q);
            }
        }
        Err(e) => tracing::warn!(message = "Lease reaper failed.", error = %e),
    }
    let lost_after = cfg.agent_lost_after.as_millis() as i64;
    match retry_transient(until, "mark lost agents", || {
        state.store.mark_lost_agents(now, lost_after)
    })
    .await
    {
        Ok(lost) => {
            for a in &lost.agents {
                tracing::warn!(message = "Agent lost: no heartbeat.", agent = %a);
            }
            changed += lost.agents.len();
            for q in lost.requeued_queues {
                state.dispatch.wake_queue(&q);
            }
        }
        Err(e) => tracing::warn!(message = "Lost-agent reaper failed.", error = %e),
    }
    let grace = cfg.unknown_grace.as_millis() as i64;
    match retry_transient(until, "fail unknown runs", || {
        state.store.fail_unknown(now, grace)
    })
    .await
    {
        Ok(n) => changed += n,
        Err(e) => tracing::warn!(message = "Unknown-run reaper failed.", error = %e),
    }
    changed
}

/// Runs [`reap_once`] every `every` until shutdown, while this replica holds the
/// reaper's lease.
pub async fn run(
    state: AppState,
    every: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut lease = Lease::new(&state.store);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if lease.held().await {
                    reap_once(&state).await;
                }
            }
            _ = shutdown.changed() => break,
        }
    }
    lease.release().await;
}

/// The reaper's lease ([`REAPER_LOCK`]), with its log lines and the
/// `hoist_reaper_leader` gauge.
pub struct Lease {
    lock: AdvisoryLease,
    leader: bool,
}

impl Lease {
    pub fn new(store: &crate::store::Store) -> Lease {
        Lease {
            lock: store.advisory_lease(REAPER_LOCK),
            leader: false,
        }
    }

    /// Whether this replica may reap now: it still holds the lock (its session is
    /// alive), or it has just taken it.
    pub async fn held(&mut self) -> bool {
        let now = match self.lock.try_hold().await {
            Ok(now) => now,
            Err(e) => {
                if self.leader {
                    tracing::warn!(message = "Lost the reaper's lease with its connection; another replica takes over.", error = %e);
                } else {
                    tracing::debug!(message = "Could not try the reaper's lease.", error = %e);
                }
                false
            }
        };
        if now != self.leader {
            if now {
                tracing::info!(message = "This replica now runs the reaper.");
            } else {
                tracing::warn!(message = "This replica no longer runs the reaper.");
            }
        }
        self.set_leader(now);
        now
    }

    fn set_leader(&mut self, leader: bool) {
        self.leader = leader;
        metrics::gauge!("hoist_reaper_leader").set(if leader { 1.0 } else { 0.0 });
    }

    /// Gives the lease up (shutdown): another replica takes it on its next tick.
    pub async fn release(&mut self) {
        self.lock.release().await;
        self.set_leader(false);
    }
}
