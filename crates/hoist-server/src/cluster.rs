//! Replicas of one database telling each other what changed.
//!
//! Several `hoist server` processes may share one PostgreSQL database behind a load
//! balancer. What one of them changes, the others must learn at once: a launch wakes
//! the claims waiting on its queue on every replica, new log lines wake the followers,
//! a revoked key or a changed queue leaves every replica's cache. Each of those is a
//! [`Signal`], published through the [`Outbox`] that [`Dispatch`](crate::dispatch) and
//! the caches share; this module carries the signals over PostgreSQL's
//! `LISTEN`/`NOTIFY` on the channel [`CHANNEL`].
//!
//! - **Sending.** One task takes every signal waiting in the outbox, drops repeats,
//!   and sends them as few `pg_notify` calls as fit (a payload holds up to
//!   [`MAX_PAYLOAD`] bytes: the sender's replica id, then one signal per line). A
//!   launch burst therefore costs a handful of notifications, not one per launch.
//!   [`Outbox::flush`] waits until what was published before it has been sent: a
//!   revocation answers only once every replica has been told.
//! - **Receiving.** One connection `LISTEN`s ([`crate::store::pg::Listener`]). Each signal is applied locally ([`apply`]); the
//!   replica's own are skipped. When that connection is lost, notifications sent
//!   meanwhile are lost with it: the replica marks itself incoherent at once (caches
//!   are bypassed, waiters fall back to a 250 ms poll), reconnects with a growing
//!   pause, and once it listens again drops every cache entry and wakes every waiter
//!   so that each re-reads the store.
//!
//! Architecture Invariant: a lost signal only delays, never loses, work or lets a
//! stale credential through: every waiter re-reads the store with a deadline
//! ([`crate::dispatch`]), and a cache entry is used only while the replica is coherent
//! and no reconnect happened since it was read ([`Outbox::generation`]).
//!
//! With SQLite (one process) the outbox has no sender: signals stay local, and the
//! replica is always coherent.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::api::AppState;
use crate::store::pg::Listener;
use crate::store::{Store, StoreError};

/// The notification channel every replica listens on.
pub const CHANNEL: &str = "hoist";
/// Largest payload sent in one notification (PostgreSQL's limit is 8000 bytes).
pub const MAX_PAYLOAD: usize = 7_600;

/// Something another replica must know.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Signal {
    /// A queue got runs: wake its waiting claims.
    Queue(String),
    /// An agent has something to hear (a stop request, an ended session).
    Agent(String),
    /// A run has new log lines or a new state: wake its followers.
    Run(String),
    /// An API key changed (revoked): forget it.
    Key(String),
    /// A user was deleted: forget their keys and entities.
    User(String),
    /// A user's team memberships changed.
    UserEntities(String),
    /// Teams were created or deleted.
    AllEntities,
    /// A queue definition changed or was deleted: `(entity, name)`.
    QueueDef(String, String),
}

impl Signal {
    /// One line: a tag and the signal's fields, separated by spaces (ids and names
    /// never hold whitespace; see [`hoist_core::names`]).
    fn encode(&self) -> String {
        match self {
            Signal::Queue(id) => format!("q {id}"),
            Signal::Agent(id) => format!("a {id}"),
            Signal::Run(id) => format!("r {id}"),
            Signal::Key(id) => format!("k {id}"),
            Signal::User(u) => format!("u {u}"),
            Signal::UserEntities(u) => format!("e {u}"),
            Signal::AllEntities => "E".to_string(),
            Signal::QueueDef(e, n) => format!("Q {e} {n}"),
        }
    }

    /// The signal a line encodes; `None` for anything else (a newer replica's signal
    /// kind, garbage), which is ignored.
    pub fn decode(line: &str) -> Option<Signal> {
        let mut parts = line.split(' ');
        let tag = parts.next()?;
        let mut arg = || {
            parts
                .next()
                .filter(|a| !a.is_empty() && a.len() <= 256)
                .map(str::to_string)
        };
        let sig = match tag {
            "q" => Signal::Queue(arg()?),
            "a" => Signal::Agent(arg()?),
            "r" => Signal::Run(arg()?),
            "k" => Signal::Key(arg()?),
            "u" => Signal::User(arg()?),
            "e" => Signal::UserEntities(arg()?),
            "E" => Signal::AllEntities,
            "Q" => Signal::QueueDef(arg()?, arg()?),
            _ => return None,
        };
        parts.next().is_none().then_some(sig)
    }
}

enum Out {
    Signal(Signal),
    Flush(oneshot::Sender<()>),
}

/// The publishing side, shared by the dispatcher and the caches, and the replica's
/// coherence (whether signals from the others reach it).
pub struct Outbox {
    tx: OnceLock<mpsc::UnboundedSender<Out>>,
    /// Signals from the other replicas arrive (always, without other replicas).
    live: AtomicBool,
    /// Bumped whenever signals may have been missed (a reconnect): cache entries read
    /// before it are not used.
    generation: AtomicU64,
    /// This replica's id, on every payload it sends (its own are skipped).
    replica: String,
}

impl Default for Outbox {
    fn default() -> Self {
        Outbox {
            tx: OnceLock::new(),
            live: AtomicBool::new(true),
            generation: AtomicU64::new(0),
            replica: crate::secrets::new_id(12),
        }
    }
}

impl Outbox {
    /// Publishes a signal to the other replicas (nothing without them). Applying it
    /// here is the caller's business.
    pub fn publish(&self, sig: Signal) {
        if let Some(tx) = self.tx.get() {
            let _ = tx.send(Out::Signal(sig));
        }
    }

    /// Waits until every signal published before this call has been sent (or the
    /// sender has given up on it). Immediate without other replicas.
    pub async fn flush(&self) {
        let Some(tx) = self.tx.get() else { return };
        let (done, wait) = oneshot::channel();
        if tx.send(Out::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Whether signals from the other replicas reach this one now.
    pub fn coherent(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// Changes whenever signals may have been missed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn set_live(&self, live: bool) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.live.store(live, Ordering::Release);
        metrics::gauge!("hoist_cluster_listener_up").set(if live { 1.0 } else { 0.0 });
    }
}

/// A cache of values read from the store that follows this replica's coherence: an
/// entry is used only while the replica hears the others, in the [`Outbox::generation`]
/// it was read in, and for at most `ttl`; a value read while the map changed (a
/// `remove`, `retain` or `clear` since [`CoherentMap::mark`]) is not kept, so a read
/// that raced a change cannot bring the old value back.
pub struct CoherentMap<K, V> {
    out: Arc<Outbox>,
    ttl: Duration,
    /// Entries kept before the map is emptied.
    max: usize,
    changes: AtomicU64,
    map: Mutex<HashMap<K, (V, Instant, u64)>>,
}

/// Where a read from the store started (see [`CoherentMap::put`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    changes: u64,
    generation: u64,
}

impl<K: Hash + Eq, V: Clone> CoherentMap<K, V> {
    pub fn new(out: Arc<Outbox>, ttl: Duration, max: usize) -> CoherentMap<K, V> {
        CoherentMap {
            out,
            ttl,
            max,
            changes: AtomicU64::new(0),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The value, if it may be used now.
    pub fn get<Q>(&self, k: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let m = self.map.lock().expect("coherent map");
        let (v, at, generation) = m.get(k)?;
        (self.out.coherent() && *generation == self.out.generation() && at.elapsed() < self.ttl)
            .then(|| v.clone())
    }

    /// Call before reading a value from the store; pass it to [`CoherentMap::put`].
    pub fn mark(&self) -> Mark {
        Mark {
            changes: self.changes.load(Ordering::Acquire),
            generation: self.out.generation(),
        }
    }

    /// Keeps a value read since `mark`, unless the map changed meanwhile or the
    /// replica may be missing signals.
    pub fn put(&self, mark: Mark, k: K, v: V) {
        let mut m = self.map.lock().expect("coherent map");
        if !(self.out.coherent() && self.mark() == mark) {
            return;
        }
        if m.len() >= self.max {
            m.clear();
        }
        m.insert(k, (v, Instant::now(), mark.generation));
    }

    pub fn remove<Q>(&self, k: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.changes.fetch_add(1, Ordering::AcqRel);
        self.map.lock().expect("coherent map").remove(k);
    }

    pub fn retain(&self, mut keep: impl FnMut(&V) -> bool) {
        self.changes.fetch_add(1, Ordering::AcqRel);
        self.map
            .lock()
            .expect("coherent map")
            .retain(|_, (v, _, _)| keep(v));
    }

    pub fn clear(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
        self.map.lock().expect("coherent map").clear();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "cannot listen for other replicas' notifications on the database: {source}; check that the database user may connect more than once"
    )]
    Listen {
        #[source]
        source: StoreError,
    },
}

/// Applies a signal from another replica here: wake-ups and cache entries only.
pub fn apply(state: &AppState, sig: &Signal) {
    match sig {
        Signal::Queue(id) => state.dispatch.wake_queue_here(id),
        Signal::Agent(id) => state.dispatch.wake_agent_here(id),
        Signal::Run(id) => state.dispatch.wake_run_here(id),
        Signal::Key(id) => state.auth.forget_key_here(id),
        Signal::User(u) => state.auth.forget_user_here(u),
        Signal::UserEntities(u) => state.auth.forget_user_entities_here(u),
        Signal::AllEntities => state.auth.forget_all_entities_here(),
        Signal::QueueDef(e, n) => state.queues.forget_here(e, n),
    }
}

/// Connects this replica to the others when its store is shared (PostgreSQL):
/// `LISTEN`s (returns once listening, so that a server serves only when it hears the
/// others) and starts the sender and the listener tasks, which stop at shutdown.
pub async fn start(state: AppState, shutdown: watch::Receiver<bool>) -> Result<(), ClusterError> {
    let Some(listener) = state
        .store
        .listen(CHANNEL)
        .await
        .map_err(|source| ClusterError::Listen { source })?
    else {
        return Ok(());
    };
    let (tx, rx) = mpsc::unbounded_channel();
    if state.cluster.tx.set(tx).is_err() {
        tracing::warn!(message = "Cluster notifications were already started.");
        return Ok(());
    }
    state.cluster.set_live(true);
    tokio::spawn(send_task(
        state.store.clone(),
        state.cluster.replica.clone(),
        rx,
        shutdown.clone(),
    ));
    tokio::spawn(listen_task(state, listener, shutdown));
    Ok(())
}

/// Sends what the outbox holds, a batch at a time.
async fn send_task(
    store: Store,
    replica: String,
    mut rx: mpsc::UnboundedReceiver<Out>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let first = tokio::select! {
            m = rx.recv() => match m { Some(m) => m, None => return },
            _ = shutdown.wait_for(|v| *v) => return,
        };
        let mut batch = vec![first];
        while batch.len() < 10_000 {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let mut seen = HashSet::new();
        let mut lines = Vec::new();
        let mut flushes = Vec::new();
        for m in batch {
            match m {
                Out::Signal(s) => {
                    if seen.insert(s.clone()) {
                        lines.push(s.encode());
                    }
                }
                Out::Flush(done) => flushes.push(done),
            }
        }
        for payload in payloads(&replica, &lines) {
            if let Err(e) = store.notify(CHANNEL, &payload).await {
                // The others fall back to their periodic re-read.
                metrics::counter!("hoist_cluster_notify_failures_total").increment(1);
                tracing::warn!(message = "Could not notify the other replicas; they will notice on their next re-read.", error = %e);
            } else {
                metrics::counter!("hoist_cluster_notifications_sent_total").increment(1);
            }
        }
        for f in flushes {
            let _ = f.send(());
        }
    }
}

/// Splits lines into payloads of at most [`MAX_PAYLOAD`] bytes, each starting with
/// the sender's replica id.
fn payloads(replica: &str, lines: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for l in lines {
        if !cur.is_empty() && cur.len() + 1 + l.len() > MAX_PAYLOAD {
            out.push(std::mem::take(&mut cur));
        }
        if cur.is_empty() {
            cur.push_str(replica);
        }
        cur.push('\n');
        cur.push_str(l);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Receives the others' signals; on a lost connection, reconnects and makes the
/// replica re-read everything (see the module docs).
async fn listen_task(state: AppState, mut listener: Listener, mut shutdown: watch::Receiver<bool>) {
    let own = state.cluster.replica.clone();
    loop {
        let got = tokio::select! {
            r = listener.recv() => r,
            _ = shutdown.wait_for(|v| *v) => return,
        };
        match got {
            Ok(Some(payload)) => {
                metrics::counter!("hoist_cluster_notifications_received_total").increment(1);
                let mut lines = payload.split('\n');
                if lines.next() == Some(own.as_str()) {
                    continue;
                }
                for line in lines {
                    match Signal::decode(line) {
                        Some(sig) => apply(&state, &sig),
                        None => {
                            tracing::debug!(message = "Ignored an unknown cluster signal.", line)
                        }
                    }
                }
                continue;
            }
            Ok(None) => {
                tracing::warn!(
                    message = "Lost the connection that hears other replicas; reconnecting. Until then caches are bypassed and waiters re-read the store every 250 ms."
                );
            }
            Err(e) => {
                tracing::warn!(message = "Listening for other replicas failed; reconnecting. Until then caches are bypassed and waiters re-read the store every 250 ms.", error = %e);
            }
        }
        state.cluster.set_live(false);
        drop(listener);
        let mut pause = Duration::from_millis(100);
        listener = loop {
            match state.store.listen(CHANNEL).await {
                Ok(Some(l)) => break l,
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(message = "Reconnecting the listener failed.", error = %e, retry_in_ms = pause.as_millis() as u64);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = shutdown.wait_for(|v| *v) => return,
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        };
        // Whatever was sent while we did not listen is lost: start over from the store.
        state.cluster.set_live(true);
        state.auth.clear_here();
        state.queues.clear_here();
        state.dispatch.wake_all_here();
        tracing::info!(message = "Listening for other replicas again.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn signals_round_trip() {
        for s in [
            Signal::Queue("q_1".into()),
            Signal::Agent("a1".into()),
            Signal::Run("r1".into()),
            Signal::Key("k1".into()),
            Signal::User("bob".into()),
            Signal::UserEntities("bob".into()),
            Signal::AllEntities,
            Signal::QueueDef("team-a".into(), "gpu".into()),
        ] {
            assert_eq!(Signal::decode(&s.encode()), Some(s));
        }
        for bad in ["", "x 1", "q", "q ", "q a b", "Q e", "E x", "k  "] {
            assert_eq!(Signal::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn payloads_stay_under_the_limit_and_keep_every_line() {
        let lines: Vec<String> = (0..5000).map(|i| format!("q queue-{i:06}")).collect();
        let ps = payloads("rep1", &lines);
        assert!(ps.len() > 1);
        let mut back = vec![];
        for p in &ps {
            assert!(p.len() <= MAX_PAYLOAD, "{}", p.len());
            let mut it = p.split('\n');
            assert_eq!(it.next(), Some("rep1"));
            back.extend(it.map(str::to_string));
        }
        assert_eq!(back, lines);
        assert!(payloads("rep1", &[]).is_empty());
    }

    #[test]
    fn a_read_that_raced_a_change_is_not_kept() {
        let out = Arc::new(Outbox::default());
        let m: CoherentMap<String, u32> = CoherentMap::new(out.clone(), Duration::from_secs(60), 2);
        let mark = m.mark();
        m.put(mark, "a".into(), 1);
        assert_eq!(m.get("a"), Some(1));
        // Read started, then the value changed: the old read is not kept.
        let mark = m.mark();
        m.remove("a");
        m.put(mark, "a".into(), 1);
        assert_eq!(m.get("a"), None);
        // A replica that may have missed signals keeps and uses nothing.
        let mark = m.mark();
        m.put(mark, "b".into(), 2);
        out.set_live(false);
        assert_eq!(m.get("b"), None);
        let mark = m.mark();
        m.put(mark, "c".into(), 3);
        out.set_live(true);
        assert_eq!(m.get("c"), None);
        // Entries from before a reconnect stay unused.
        assert_eq!(m.get("b"), None);
    }

    proptest! {
        #[test]
        fn decode_never_panics(s in "\\PC{0,80}") {
            let _ = Signal::decode(&s);
        }
    }
}
