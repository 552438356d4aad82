//! Time as the server sees it.
//!
//! `now` is the wall clock at start plus the *tokio* time elapsed since, plus whatever
//! a test added with [`Clock::advance`]. In production that is wall time; tests move it
//! forward by hand (or under `tokio::time::pause()`), so leases, heartbeats and grace
//! periods are tested without sleeping.

use chrono::{DateTime, TimeZone, Utc};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct Clock {
    base_ms: i64,
    base: Instant,
    offset_ms: Arc<AtomicI64>,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            base_ms: Utc::now().timestamp_millis(),
            base: Instant::now(),
            offset_ms: Arc::default(),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> i64 {
        self.base_ms
            + self.base.elapsed().as_millis() as i64
            + self.offset_ms.load(Ordering::Relaxed)
    }

    /// Moves this clock (and its clones) forward: for tests.
    pub fn advance(&self, by: Duration) {
        self.offset_ms
            .fetch_add(by.as_millis() as i64, Ordering::Relaxed);
    }
}

pub fn to_datetime(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}
