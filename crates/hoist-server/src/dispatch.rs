//! In-memory wake-ups. The store is the truth; these only tell waiting requests to
//! look again: a claim waiting on its queues, an agent waiting for stop requests, a
//! log follower waiting for lines.
//!
//! Architecture Invariant: losing a wake-up only delays, never loses, work: every
//! waiter re-reads the store after waking and waits with a deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Dispatch {
    queues: Registry,
    agents: Registry,
    runs: Registry,
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
}

impl Dispatch {
    /// Wakes claims waiting on this queue.
    pub fn queue(&self, queue_id: &str) -> Arc<Notify> {
        self.queues.get(queue_id)
    }
    pub fn wake_queue(&self, queue_id: &str) {
        self.queues.wake(queue_id)
    }
    /// Wakes the agent's waiting claim (stop requests).
    pub fn agent(&self, agent_id: &str) -> Arc<Notify> {
        self.agents.get(agent_id)
    }
    pub fn wake_agent(&self, agent_id: &str) {
        self.agents.wake(agent_id)
    }
    /// Wakes followers of a run (new log lines, state changes).
    pub fn run(&self, run_id: &str) -> Arc<Notify> {
        self.runs.get(run_id)
    }
    pub fn wake_run(&self, run_id: &str) {
        self.runs.wake(run_id)
    }
}
