//! In-memory wake-ups. The store is the truth; these only tell waiting requests to
//! look again: a claim waiting on its queues, an agent waiting for stop requests, a
//! log follower waiting for lines.
//!
//! Architecture Invariant: losing a wake-up only delays, never loses, work: every
//! waiter re-reads the store after waking and waits with a deadline.
//!
//! Each `wake_*` wakes the waiters of this replica and publishes the wake-up to the
//! other replicas of the database ([`crate::cluster`]); `wake_*_here` (for signals
//! that came from another replica) wakes this replica's only.
//!
//! Waiters say when they are parked (they have read the store and wait for a
//! wake-up) with [`Dispatch::park`]; the counts are the `hoist_claim_waiters` and
//! `hoist_log_followers` gauges of `/metrics`, so that a test can act only once the
//! waiter can be reached by nothing but the wake-up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::cluster::{Outbox, Signal};

#[derive(Default)]
pub struct Dispatch {
    out: Arc<Outbox>,
    queues: Registry,
    agents: Registry,
    runs: Registry,
    claim_waiters: AtomicUsize,
    log_followers: AtomicUsize,
}

#[derive(Default)]
struct Registry(Mutex<HashMap<String, Arc<Notify>>>);

impl Registry {
    fn get(&self, key: &str) -> Arc<Notify> {
        let mut m = self.0.lock().expect("dispatch lock");
        if m.len() > 4096 {
            // Drop entries nobody waits on.
            m.retain(|_, n| Arc::strong_count(n) > 1);
        }
        m.entry(key.to_string()).or_default().clone()
    }

    fn wake(&self, key: &str) {
        let m = self.0.lock().expect("dispatch lock");
        if let Some(n) = m.get(key) {
            n.notify_waiters();
        }
    }

    fn wake_all(&self) {
        for n in self.0.lock().expect("dispatch lock").values() {
            n.notify_waiters();
        }
    }
}

/// Who is parked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiter {
    /// An agent's claim long poll.
    Claim,
    /// A `logs?follow=true` stream.
    LogFollower,
}

/// Counts a parked waiter while it lives; see [`Dispatch::park`].
#[must_use = "the waiter counts as parked only while the guard lives"]
pub struct Parked<'a>(&'a AtomicUsize);

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Dispatch {
    /// A dispatcher publishing its wake-ups through `out`.
    pub fn with_outbox(out: Arc<Outbox>) -> Dispatch {
        Dispatch {
            out,
            ..Dispatch::default()
        }
    }

    /// Wakes claims waiting on this queue.
    pub fn queue(&self, queue_id: &str) -> Arc<Notify> {
        self.queues.get(queue_id)
    }
    pub fn wake_queue(&self, queue_id: &str) {
        self.queues.wake(queue_id);
        self.out.publish(Signal::Queue(queue_id.to_string()));
    }
    pub fn wake_queue_here(&self, queue_id: &str) {
        self.queues.wake(queue_id)
    }
    /// Wakes the agent's waiting claim (stop requests, an ended session).
    pub fn agent(&self, agent_id: &str) -> Arc<Notify> {
        self.agents.get(agent_id)
    }
    pub fn wake_agent(&self, agent_id: &str) {
        self.agents.wake(agent_id);
        self.out.publish(Signal::Agent(agent_id.to_string()));
    }
    pub fn wake_agent_here(&self, agent_id: &str) {
        self.agents.wake(agent_id)
    }
    /// Wakes followers of a run (new log lines, state changes).
    pub fn run(&self, run_id: &str) -> Arc<Notify> {
        self.runs.get(run_id)
    }
    pub fn wake_run(&self, run_id: &str) {
        self.runs.wake(run_id);
        self.out.publish(Signal::Run(run_id.to_string()));
    }
    pub fn wake_run_here(&self, run_id: &str) {
        self.runs.wake(run_id)
    }
    /// Wakes every waiter of this replica (after signals may have been missed).
    pub fn wake_all_here(&self) {
        self.queues.wake_all();
        self.agents.wake_all();
        self.runs.wake_all();
    }

    /// Marks a waiter parked until the guard drops. Take it after the waiter's
    /// notifications are enabled and it has read the store, right before it awaits
    /// them: while it is counted, only a wake-up (or its deadline) moves it.
    pub fn park(&self, who: Waiter) -> Parked<'_> {
        let n = self.counter(who);
        n.fetch_add(1, Ordering::Relaxed);
        Parked(n)
    }

    /// How many waiters of a kind are parked now.
    pub fn parked(&self, who: Waiter) -> usize {
        self.counter(who).load(Ordering::Relaxed)
    }

    fn counter(&self, who: Waiter) -> &AtomicUsize {
        match who {
            Waiter::Claim => &self.claim_waiters,
            Waiter::LogFollower => &self.log_followers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parked_counts_while_the_guard_lives() {
        let d = Dispatch::default();
        let a = d.park(Waiter::Claim);
        let b = d.park(Waiter::Claim);
        let f = d.park(Waiter::LogFollower);
        assert_eq!(d.parked(Waiter::Claim), 2);
        assert_eq!(d.parked(Waiter::LogFollower), 1);
        drop(a);
        drop(f);
        assert_eq!(d.parked(Waiter::Claim), 1);
        assert_eq!(d.parked(Waiter::LogFollower), 0);
        drop(b);
        assert_eq!(d.parked(Waiter::Claim), 0);
    }
}
