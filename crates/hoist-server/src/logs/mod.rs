//! Run logs: numbered lines kept in segments in the blob store, indexed in the
//! database, with a per-run quota and retention.
//!
//! # Storage
//! Each line is stored as one record, the JSON of its [`StoredLogLine`] followed by a
//! newline, so pages and follow streams send stored bytes as they are. Records are
//! appended to a segment ([`SegmentStore`], files under `<blob dir>/logs/<run id>/`
//! today) and indexed in `log_chunks` (`store::logs`): a chunk is a run of consecutive
//! lines at a byte range of a segment, at most about [`CHUNK_BYTES`], so reading from
//! line N reads one chunk from where it starts, not a whole segment. A segment is
//! written by one server process only (its key carries the process's instance id) and
//! grows to about [`SEGMENT_BYTES`]; appends to one run are serialised in the process,
//! and the index commit is conditional on the log's length, so server replicas sharing
//! a database never interleave writes.
//!
//! An append is answered only once its records are durable (written and `fdatasync`ed)
//! and its index rows committed; records written before a crash and never indexed are
//! ignored and overwritten by the next append.
//!
//! Lines stored before segments existed (`run_logs`) stay where they are and are read
//! from there; no new line is written to that table.
//!
//! # Quota
//! A run's log stores at most `max_log_bytes_per_run` bytes of records. The append that
//! reaches the quota stores the lines that fit, then one marker line
//! (`[hoist: log quota of N MiB reached; later lines are dropped]`); later lines are
//! dropped and every append is answered normally with `quota_reached: true`.
//!
//! # Reads
//! A page holds at most `limit` lines and at most [`MAX_PAGE_BYTES`] of records
//! (always at least one line), whatever `limit` says; `next_offset` continues it.
//!
//! # Retention
//! [`retention_task`] deletes the logs of runs that ended more than `log_retention` ago:
//! first their index rows and old-table lines (readers then see an empty log), then
//! their segment files (`log_deletions` remembers what a crash interrupted).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use hoist_core::api::{LogLine, LogStream, StoredLogLine};
use serde::Serialize;
use thiserror::Error;
use tokio::sync::watch;

use crate::clock::{Clock, to_datetime};
use crate::store::logs::{LogChunk, LogCommit};
use crate::store::{Store, StoreError};

pub mod segments;

pub use segments::{FsSegments, SegmentStore};

/// Longest line kept; longer lines are cut and marked.
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// Most bytes of records in one page or one follow-stream write.
pub const MAX_PAGE_BYTES: usize = 1 << 20;
/// Target size of an index chunk.
pub const CHUNK_BYTES: u64 = 256 << 10;
/// A segment takes no more appends once this large.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Default per-run quota: 1 GiB of records.
pub const DEFAULT_MAX_LOG_BYTES_PER_RUN: u64 = 1 << 30;
/// Default retention after a run ends: 30 days.
pub const DEFAULT_LOG_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// Appends retried at most this often when another writer appended first.
const MAX_ATTEMPTS: usize = 16;

#[derive(Debug, Error)]
pub enum LogError {
    #[error("no run with id {0:?}")]
    NoRun(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("log segment {key}: {source}")]
    Segment {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("log of run {run}: {what}")]
    Corrupt { run: String, what: String },
    #[error("log of run {0}: other writers kept appending; retry")]
    Contended(String),
}

impl From<LogError> for crate::error::ApiError {
    fn from(e: LogError) -> Self {
        use axum::http::StatusCode;
        use hoist_core::api::ErrorCode;
        match e {
            LogError::NoRun(id) => {
                crate::error::ApiError::not_found(format!("no run with id {id:?}"))
            }
            LogError::Store(e) => e.into(),
            LogError::Contended(_) => crate::error::ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "the run's log is being appended to by other writers; retry",
            ),
            e @ (LogError::Segment { .. } | LogError::Corrupt { .. }) => {
                tracing::error!(message = "Log storage failure.", error = %e);
                crate::error::ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
                    "internal error in the server's log storage; the server log has the details",
                )
            }
        }
    }
}

/// The result of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The log's length after the append.
    pub next_offset: u64,
    /// The quota is reached: lines of this append (or all, for later appends) were
    /// dropped.
    pub quota_reached: bool,
}

/// Records read from a log.
#[derive(Debug, Clone, Default)]
pub struct Records {
    /// Records, each the JSON of a [`StoredLogLine`] and a newline.
    pub data: Vec<u8>,
    pub count: u64,
    /// The line after the last one read.
    pub next_offset: u64,
    /// The read stopped at `limit` or the byte cap, not at the end of the log.
    pub more: bool,
}

impl Records {
    /// The records as JSON values (tests, the agent-facing helpers).
    pub fn lines(&self) -> Result<Vec<StoredLogLine>, serde_json::Error> {
        self.data
            .split(|b| *b == b'\n')
            .filter(|r| !r.is_empty())
            .map(serde_json::from_slice)
            .collect()
    }

    /// The records as the elements of a JSON array (`a,b,c`).
    pub fn json_array_items(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len());
        for (i, r) in self
            .data
            .split(|b| *b == b'\n')
            .filter(|r| !r.is_empty())
            .enumerate()
        {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(r);
        }
        out
    }

    fn push(&mut self, record: &[u8]) {
        self.data.extend_from_slice(record);
        self.count += 1;
        self.next_offset += 1;
    }

    fn fits(&self, record: &[u8], limit: u64, max_bytes: usize) -> bool {
        self.count < limit && (self.count == 0 || self.data.len() + record.len() <= max_bytes)
    }
}

/// The stored form of a line; serialises exactly as [`StoredLogLine`].
#[derive(Serialize)]
struct Record<'a> {
    offset: u64,
    ts: DateTime<Utc>,
    stream: LogStream,
    text: &'a str,
}

fn clip(text: &str) -> Cow<'_, str> {
    if text.len() <= MAX_LINE_BYTES {
        return Cow::Borrowed(text);
    }
    let mut end = MAX_LINE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!(
        "{}… [line cut at {MAX_LINE_BYTES} bytes]",
        &text[..end]
    ))
}

fn encode(buf: &mut Vec<u8>, offset: u64, ts: DateTime<Utc>, stream: LogStream, text: &str) {
    let r = Record {
        offset,
        // Stored to the millisecond.
        ts: to_datetime(ts.timestamp_millis()),
        stream,
        text: &clip(text),
    };
    serde_json::to_writer(&mut *buf, &r).expect("a record serialises");
    buf.push(b'\n');
}

fn mib(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else {
        format!("{n} bytes")
    }
}

/// The line stored when a run's log reaches its quota.
pub fn quota_marker(quota: u64) -> String {
    format!(
        "[hoist: log quota of {} reached; later lines are dropped]",
        mib(quota)
    )
}

/// Run logs: appends, reads, retention. Cheap to share (`Arc`).
pub struct LogStore {
    store: Store,
    segments: Arc<dyn SegmentStore>,
    /// This process's segments end with `-<instance>.seg`.
    instance: String,
    quota: u64,
    /// Per-run append locks (entries removed when unused).
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("instance", &self.instance)
            .field("quota", &self.quota)
            .finish_non_exhaustive()
    }
}

/// Holds a run's append lock; drops the map entry when no one else wants it.
struct RunLock<'a> {
    logs: &'a LogStore,
    run_id: String,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Drop for RunLock<'_> {
    fn drop(&mut self) {
        let mut map = self.logs.locks.lock().expect("log locks");
        // Ours and the map's: nobody else waits for it.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.run_id);
        }
    }
}

impl LogStore {
    /// `quota`: most bytes of records per run.
    pub fn new(store: Store, segments: Arc<dyn SegmentStore>, quota: u64) -> LogStore {
        LogStore {
            store,
            segments,
            instance: crate::secrets::new_id(10),
            quota: quota.max(1),
            locks: Mutex::default(),
        }
    }

    pub fn quota(&self) -> u64 {
        self.quota
    }

    fn run_lock(&self, run_id: &str) -> RunLock<'_> {
        let lock = self
            .locks
            .lock()
            .expect("log locks")
            .entry(run_id.to_string())
            .or_default()
            .clone();
        RunLock {
            logs: self,
            run_id: run_id.to_string(),
            lock,
        }
    }

    fn ours(&self, key: &str) -> bool {
        key.strip_suffix(".seg")
            .and_then(|k| k.rsplit_once('-'))
            .is_some_and(|(_, inst)| inst == self.instance)
    }

    /// Appends lines to a run's log (within its quota); answers once they are durable.
    pub async fn append(&self, run_id: &str, lines: Vec<LogLine>) -> Result<Appended, LogError> {
        let guard = self.run_lock(run_id);
        let _held = guard.lock.lock().await;
        for _ in 0..MAX_ATTEMPTS {
            let head = self
                .store
                .log_head(run_id)
                .await?
                .ok_or_else(|| LogError::NoRun(run_id.to_string()))?;
            if head.capped || lines.is_empty() {
                return Ok(Appended {
                    next_offset: head.lines,
                    quota_reached: head.capped,
                });
            }
            // Where the records go: after the last chunk, when this process wrote its
            // segment and it has room; else a new segment.
            let (key, at, extend_room) = match &head.last {
                Some(c)
                    if self.segments.appendable()
                        && self.ours(&c.seg_key)
                        && c.end_line() == head.lines
                        && c.seg_offset + c.bytes < SEGMENT_BYTES =>
                {
                    (
                        c.seg_key.clone(),
                        c.seg_offset + c.bytes,
                        CHUNK_BYTES.saturating_sub(c.bytes),
                    )
                }
                _ => (
                    format!("{run_id}/{:020}-{}.seg", head.lines, self.instance),
                    0,
                    0,
                ),
            };
            let plan = self.encode(&head, &lines, at, extend_room, &key);
            self.segments
                .append(&key, at, Bytes::from(plan.data))
                .await
                .map_err(|source| LogError::Segment {
                    key: key.clone(),
                    source,
                })?;
            let extend = match (&head.last, plan.extended) {
                (Some(c), Some((lines, bytes))) => Some((c.first_line, lines, bytes)),
                _ => None,
            };
            let committed = self
                .store
                .commit_log_append(LogCommit {
                    run_id: run_id.to_string(),
                    old_lines: head.lines,
                    new_lines: plan.next_line,
                    added_bytes: plan.bytes,
                    capped: plan.capped,
                    extend,
                    new_chunks: plan.chunks,
                })
                .await?;
            if committed {
                if plan.capped {
                    tracing::info!(message = "A run's log reached its quota; later lines are dropped.", run = %run_id, quota = self.quota);
                }
                return Ok(Appended {
                    next_offset: plan.next_line,
                    quota_reached: plan.capped,
                });
            }
        }
        Err(LogError::Contended(run_id.to_string()))
    }

    /// Encodes `lines` after `head` for a write at byte `at` of segment `key`: the
    /// records that fit the quota (and the marker when it is reached), cut into chunks.
    fn encode(
        &self,
        head: &crate::store::logs::LogHead,
        lines: &[LogLine],
        at: u64,
        extend_room: u64,
        key: &str,
    ) -> Plan {
        let mut data = Vec::new();
        let mut next = head.lines;
        let mut capped = false;
        // Where new chunks start: (first line, start byte in `data`). Without room in
        // the last chunk, the first starts at once.
        let mut cuts: Vec<(u64, usize)> = Vec::new();
        let mut room = extend_room;
        if room == 0 {
            cuts.push((next, 0));
            room = CHUNK_BYTES;
        }
        let mut filled: u64 = 0;
        for l in lines {
            if filled >= room {
                cuts.push((next, data.len()));
                room = CHUNK_BYTES;
                filled = 0;
            }
            let start = data.len();
            encode(&mut data, next, l.ts, l.stream, &l.text);
            if head.bytes + data.len() as u64 > self.quota {
                data.truncate(start);
                let marker = quota_marker(self.quota);
                encode(&mut data, next, Utc::now(), LogStream::System, &marker);
                capped = true;
            }
            filled += (data.len() - start) as u64;
            next += 1;
            if capped {
                break;
            }
        }
        // Chunks: the bytes before the first cut extend the last chunk.
        let mut chunks = Vec::new();
        let extended = match cuts.first() {
            Some((_, 0)) => None,
            Some((line, start)) => Some((line - head.lines, *start as u64)),
            None => Some((next - head.lines, data.len() as u64)),
        };
        for (i, (first, start)) in cuts.iter().enumerate() {
            let (end_line, end) = cuts
                .get(i + 1)
                .map(|(l, s)| (*l, *s))
                .unwrap_or((next, data.len()));
            chunks.push(LogChunk {
                first_line: *first,
                lines: end_line - first,
                seg_key: key.to_string(),
                seg_offset: at + *start as u64,
                bytes: (end - start) as u64,
            });
        }
        Plan {
            bytes: data.len() as u64,
            data,
            next_line: next,
            capped,
            extended,
            chunks,
        }
    }

    /// Up to `limit` lines from `offset`, and no more than `max_bytes` of records
    /// (at least one line when there is one).
    pub async fn read(
        &self,
        run_id: &str,
        offset: u64,
        limit: u64,
        max_bytes: usize,
    ) -> Result<Records, LogError> {
        let mut out = Records {
            next_offset: offset,
            ..Default::default()
        };
        let limit = limit.max(1);
        let mut chunks = self.store.log_chunks_from(run_id, offset, 16).await?;
        // Lines below the first chunk are in the old table (if anywhere).
        let covered = chunks.first().is_some_and(|c| c.first_line <= offset);
        if !covered {
            let end = chunks.first().map(|c| c.first_line).unwrap_or(u64::MAX);
            let old = self
                .store
                .legacy_log_lines(run_id, offset, end, limit, max_bytes)
                .await?;
            let mut buf = Vec::new();
            for l in old {
                if l.offset != out.next_offset {
                    break;
                }
                buf.clear();
                encode(&mut buf, l.offset, l.ts, l.stream, &l.text);
                if !out.fits(&buf, limit, max_bytes) {
                    out.more = true;
                    return Ok(out);
                }
                out.push(&buf);
            }
            if out.next_offset < end {
                // The old table has more (or, with nothing read, lacks these lines).
                out.more = out.count > 0;
                return Ok(out);
            }
        }
        loop {
            let mut consumed = false;
            for c in &chunks {
                if c.end_line() <= out.next_offset {
                    continue;
                }
                if c.first_line > out.next_offset {
                    return Err(LogError::Corrupt {
                        run: run_id.to_string(),
                        what: format!(
                            "lines {} to {} are missing from the index",
                            out.next_offset, c.first_line
                        ),
                    });
                }
                let data = match self
                    .segments
                    .read(&c.seg_key, c.seg_offset, c.bytes as usize)
                    .await
                {
                    Ok(d) => d,
                    // Retention deleted the log after its index was read: the log
                    // ends here (its index rows are gone now).
                    Err(e)
                        if e.kind() == std::io::ErrorKind::NotFound
                            && !self.still_indexed(run_id, c).await? =>
                    {
                        return Ok(out);
                    }
                    Err(source) => {
                        return Err(LogError::Segment {
                            key: c.seg_key.clone(),
                            source,
                        });
                    }
                };
                let mut records = data.split_inclusive(|b| *b == b'\n');
                let skip = out.next_offset - c.first_line;
                let mut n = 0;
                for r in records.by_ref() {
                    if n >= skip {
                        if !out.fits(r, limit, max_bytes) {
                            out.more = true;
                            return Ok(out);
                        }
                        out.push(r);
                    }
                    n += 1;
                }
                if n != c.lines || !data.ends_with(b"\n") {
                    return Err(LogError::Corrupt {
                        run: run_id.to_string(),
                        what: format!(
                            "chunk at line {} of segment {} holds {n} records, not {}",
                            c.first_line, c.seg_key, c.lines
                        ),
                    });
                }
                consumed = true;
            }
            // Fewer chunks than asked for: that was the end of the log.
            if !consumed || chunks.len() < 16 {
                return Ok(out);
            }
            chunks = self
                .store
                .log_chunks_from(run_id, out.next_offset, 16)
                .await?;
        }
    }

    /// Whether the index still lists chunk `c` of the run.
    async fn still_indexed(&self, run_id: &str, c: &LogChunk) -> Result<bool, LogError> {
        Ok(self
            .store
            .log_chunks_from(run_id, c.first_line, 1)
            .await?
            .iter()
            .any(|x| x.first_line == c.first_line && x.seg_key == c.seg_key))
    }

    /// Up to `limit` lines from `offset` as values, within [`MAX_PAGE_BYTES`].
    pub async fn read_lines(
        &self,
        run_id: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<StoredLogLine>, LogError> {
        let r = self.read(run_id, offset, limit, MAX_PAGE_BYTES).await?;
        r.lines().map_err(|e| LogError::Corrupt {
            run: run_id.to_string(),
            what: format!("a record is not valid JSON: {e}"),
        })
    }

    /// The log's length and whether its quota was reached; `None`: no such run.
    pub async fn len(&self, run_id: &str) -> Result<Option<(u64, bool)>, LogError> {
        Ok(self.store.log_len(run_id).await?)
    }

    /// Deletes the logs of runs that ended before `cutoff_ms`; returns how many runs'.
    /// Each deletion first forgets the log in the store (readers see an empty log from
    /// then on), then deletes its segment files; deletions a crash interrupted are
    /// finished first.
    pub async fn sweep(&self, cutoff_ms: i64, now_ms: i64) -> Result<usize, LogError> {
        for id in self.store.pending_log_deletions(1000).await? {
            self.delete_segments(&id).await?;
        }
        let mut n = 0;
        loop {
            let ids = self.store.runs_with_expired_logs(cutoff_ms, 100).await?;
            if ids.is_empty() {
                return Ok(n);
            }
            for id in ids {
                self.store.forget_log(&id, now_ms).await?;
                self.delete_segments(&id).await?;
                n += 1;
            }
        }
    }

    async fn delete_segments(&self, run_id: &str) -> Result<(), LogError> {
        self.segments
            .delete_run(run_id)
            .await
            .map_err(|source| LogError::Segment {
                key: format!("{run_id}/"),
                source,
            })?;
        self.store.log_deletion_done(run_id).await?;
        Ok(())
    }
}

struct Plan {
    data: Vec<u8>,
    bytes: u64,
    next_line: u64,
    capped: bool,
    /// (lines, bytes) added to the last chunk.
    extended: Option<(u64, u64)>,
    chunks: Vec<LogChunk>,
}

/// Deletes expired logs every `every` until shutdown (first shortly after start).
pub async fn retention_task(
    logs: Arc<LogStore>,
    clock: Clock,
    retention: Duration,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut wait = Duration::from_secs(1).min(every);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait_for(|v| *v) => return,
        }
        wait = every;
        let now = clock.now_ms();
        let cutoff = now - retention.as_millis() as i64;
        match logs.sweep(cutoff, now).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(message = "Deleted expired run logs.", runs = n),
            Err(e) => {
                tracing::warn!(message = "Deleting expired run logs failed; retrying later.", error = %e)
            }
        }
    }
}
