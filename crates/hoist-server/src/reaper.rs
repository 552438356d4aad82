//! Time-driven state changes: lapsed claim leases, lost agents, `unknown` runs whose
//! grace period ran out. One pass per tick; every pass is safe to repeat. A transient
//! store failure (busy, locked, a lost serialization race) is retried within the
//! tick; another failure is logged and the next tick tries again.

use std::time::Duration;

use crate::api::AppState;
use crate::store::retry_transient;

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

/// Runs [`reap_once`] every `every` until shutdown.
pub async fn run(
    state: AppState,
    every: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => { reap_once(&state).await; }
            _ = shutdown.changed() => return,
        }
    }
}
