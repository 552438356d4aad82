//! A run's CustomJob, supervised by POLLING `customJobs.get` (Vertex AI has no watch)
//! and following its Cloud Logging entries.
//!
//! | `state` | run |
//! |---|---|
//! | `JOB_STATE_QUEUED`, `JOB_STATE_PENDING` | still starting ([`Execution::pending_reason`] says so; a warning once it waited [`Timing::pending_warn_after`]) |
//! | `JOB_STATE_RUNNING` | [`Execution::running`] resolves |
//! | `JOB_STATE_SUCCEEDED` | `Exit::Code(0)` (finished) |
//! | `JOB_STATE_FAILED` | `Exit::Failed` with the job's `error.message` |
//! | `JOB_STATE_CANCELLING` | stopping: keep polling |
//! | `JOB_STATE_CANCELLED` | `Exit::Failed` ("cancelled"): `stopped` when hoist asked for the stop (the run task decides by its own stop flag), failed when someone else cancelled |
//! | `JOB_STATE_EXPIRED` | `Exit::Failed` (timed out) |
//! | `JOB_STATE_PAUSED`, `JOB_STATE_UPDATING`, anything new | keep waiting |
//! | `customJobs.get` answers 404 | `RunnerError::Gone` (deleted outside hoist) |
//!
//! Every change of state is a system line of the run's log (`[hoist: Vertex AI:
//! JOB_STATE_PENDING]`).
//!
//! Polling backs off: [`Timing::poll_first`] after a change, doubling to
//! [`Timing::poll_max`] while nothing changes; a stop resets it. A transient failure
//! (no answer, 429, 5xx, after the client's own retries) doubles the pause up to a
//! minute; the supervision gives up after [`Timing::give_up_after`] of failures only.
//!
//! Logs: Cloud Logging `entries:list` with `resource.type="ml_job" AND
//! resource.labels.job_id="ID" AND timestamp>="T"`, `timestamp asc`, every page. While
//! the job runs they are read every [`Timing::log_interval`] (growing to
//! [`Timing::poll_max`] or 30 s while no line comes: Cloud Logging allows 60 reads a
//! minute per project); after the job ended they are read to the end, then again after
//! [`Timing::log_settle`] until a read brings nothing new (entries become readable a
//! little after they are written). Each read starts [`LOG_LOOKBACK`] before the newest
//! entry seen (late entries of another replica are not missed) and skips entries whose
//! `insertId` it has already shipped. A line is an entry's `textPayload`, or its
//! `jsonPayload.message`; severity `ERROR` and above is stderr. A job of several
//! replicas writes each line as `[workerpool0-0] text` (the entry's task name). A
//! re-adopted run starts reading where the server's copy of the log ends
//! ([`LogResume`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use hoist_core::api::LogStream;
use serde_json::Value;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::api::{GoogleError, VertexApi};
use super::spec::{Phase, phase};
use crate::logs::{LogSink, source_prefix};
use crate::runners::progress::{self, Progress};
use crate::runners::{Execution, Exit, LogResume, RunnerError};

/// How far before the newest entry seen a log read starts again.
pub const LOG_LOOKBACK: Duration = Duration::from_secs(5);

/// How many times, at most, the log is read again after the job ended.
const SETTLE_READS: usize = 5;

/// The pauses of the supervision (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub poll_first: Duration,
    pub poll_max: Duration,
    pub log_interval: Duration,
    pub log_settle: Duration,
    pub give_up_after: Duration,
    pub pending_warn_after: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            poll_first: Duration::from_millis(250),
            poll_max: Duration::from_secs(10),
            // Cloud Logging allows 60 reads a minute per project: a run reads at most
            // 12 a minute, so a few busy runs share the quota (a 429 is retried).
            log_interval: Duration::from_secs(5),
            log_settle: Duration::from_secs(3),
            give_up_after: Duration::from_secs(300),
            pending_warn_after: Duration::from_secs(600),
        }
    }
}

/// A CustomJob being supervised.
pub struct VertexExecution {
    api: VertexApi,
    /// `projects/P/locations/R/customJobs/ID`.
    name: String,
    progress: watch::Receiver<Progress>,
    pending: Arc<Mutex<Option<String>>>,
    stopping: Arc<AtomicBool>,
    wake: Arc<Notify>,
    cancel: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The last segment of a resource name.
pub fn job_id(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

fn state_of(job: &Value) -> &str {
    job.get("state")
        .and_then(Value::as_str)
        .unwrap_or("JOB_STATE_UNSPECIFIED")
}

fn time_of(job: &Value, key: &str) -> Option<DateTime<Utc>> {
    job.get(key)
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// How many replicas the job's pools have in all.
fn replicas(job: &Value) -> u64 {
    job.pointer("/jobSpec/workerPoolSpecs")
        .and_then(Value::as_array)
        .map(|pools| {
            pools
                .iter()
                .filter(|p| p.as_object().is_some_and(|m| !m.is_empty()))
                .map(|p| match p.get("replicaCount") {
                    Some(Value::Number(n)) => n.as_u64().unwrap_or(1),
                    Some(Value::String(s)) => s.parse().unwrap_or(1),
                    _ => 1,
                })
                .sum()
        })
        .unwrap_or(1)
}

impl VertexExecution {
    /// Starts supervising `job` (as `create`, `get` or `list` answered it); its log
    /// goes to `sink`, skipping what `resume` says the server has.
    pub fn supervise(
        api: VertexApi,
        job: Value,
        sink: LogSink,
        resume: LogResume,
        timing: Timing,
        stop_requested: bool,
    ) -> VertexExecution {
        let name = job
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let (tx, rx) = watch::channel(Progress::default());
        let cancel = CancellationToken::new();
        let stopping = Arc::new(AtomicBool::new(stop_requested));
        let pending = Arc::new(Mutex::new(None));
        let wake = Arc::new(Notify::new());
        let since = resume
            .from()
            .or_else(|| time_of(&job, "createTime"))
            .unwrap_or_else(|| Utc::now() - TimeDelta::minutes(5));
        let logs = LogReader {
            filter_base: format!(
                "resource.type=\"ml_job\" AND resource.labels.job_id=\"{}\"",
                job_id(&name)
            ),
            since,
            newest: None,
            seen: HashMap::new(),
            resume,
            prefixed: replicas(&job) > 1,
            broken: false,
        };
        let sup = Supervisor {
            api: api.clone(),
            name: name.clone(),
            sink,
            tx,
            stopping: stopping.clone(),
            pending: pending.clone(),
            wake: wake.clone(),
            cancel: cancel.clone(),
            timing,
            logs,
        };
        let task = tokio::spawn(sup.run(job));
        VertexExecution {
            api,
            name,
            progress: rx,
            pending,
            stopping,
            wake,
            cancel,
            task: Mutex::new(Some(task)),
        }
    }
}

#[async_trait]
impl Execution for VertexExecution {
    fn describe(&self) -> String {
        format!("Vertex AI CustomJob {}", self.name)
    }

    async fn running(&self) -> Result<(), RunnerError> {
        progress::running(&self.progress, || self.describe()).await
    }

    async fn wait(&self) -> Result<Exit, RunnerError> {
        progress::exit(&self.progress, || self.describe()).await
    }

    fn pending_reason(&self) -> Option<String> {
        self.pending.lock().expect("pending").clone()
    }

    /// `customJobs.cancel` (Vertex AI stops the containers itself; `grace` is not
    /// its to take). A job that already ended answers FAILED_PRECONDITION: nothing to
    /// stop. The execution ends when the job is `JOB_STATE_CANCELLED` (or ended
    /// otherwise meanwhile).
    async fn stop(&self, _grace: Duration) -> Result<(), RunnerError> {
        self.stopping.store(true, Ordering::SeqCst);
        let r = match self.api.cancel(&self.name).await {
            Ok(()) => Ok(()),
            Err(e) if e.status() == Some("FAILED_PRECONDITION") => Ok(()),
            Err(e) => Err(e.into_runner(&format!("cancelling {}", self.name))),
        };
        self.wake.notify_one();
        r
    }

    /// Ends the supervision. The CustomJob stays in Vertex AI as the run's record (an
    /// ended job holds no resources).
    async fn cleanup(&self) {
        self.cancel.cancel();
        let task = self.task.lock().expect("task").take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

impl Drop for VertexExecution {
    fn drop(&mut self) {
        // Ends the supervision (the job is left as it is).
        self.cancel.cancel();
    }
}

struct Supervisor {
    api: VertexApi,
    name: String,
    sink: LogSink,
    tx: watch::Sender<Progress>,
    stopping: Arc<AtomicBool>,
    pending: Arc<Mutex<Option<String>>>,
    wake: Arc<Notify>,
    cancel: CancellationToken,
    timing: Timing,
    logs: LogReader,
}

impl Supervisor {
    async fn run(mut self, mut job: Value) {
        let t = self.timing;
        let mut seen_state = String::new();
        let mut delay = t.poll_first;
        let mut log_delay = t.log_interval;
        let mut next_log = Instant::now();
        let mut next_poll = Instant::now() + delay;
        let mut failing_since: Option<Instant> = None;
        let mut starting_since = Instant::now();
        let mut warned_pending = false;
        let end: Result<Exit, RunnerError> = loop {
            let state = state_of(&job).to_string();
            if state != seen_state {
                self.sink.system(&format!("[hoist: Vertex AI: {}]", state));
                seen_state = state.clone();
                delay = t.poll_first;
                next_poll = Instant::now() + delay;
                starting_since = Instant::now();
            }
            let error = job.pointer("/error/message").and_then(Value::as_str);
            match phase(&state, error, self.stopping.load(Ordering::SeqCst)) {
                Phase::Starting => {
                    *self.pending.lock().expect("pending") = Some(format!(
                        "the Vertex AI CustomJob is {state} (Vertex AI is finding and provisioning its machines)"
                    ));
                    if !warned_pending && starting_since.elapsed() >= t.pending_warn_after {
                        warned_pending = true;
                        self.sink.warn(&format!(
                            "the Vertex AI CustomJob has been {state} for {} min: Vertex AI may be waiting for capacity of its machine type or accelerators in {}",
                            starting_since.elapsed().as_secs() / 60,
                            self.api.region
                        ));
                    }
                }
                Phase::Running => {
                    *self.pending.lock().expect("pending") = None;
                    self.send_running();
                }
                Phase::Stopping | Phase::Waiting => {}
                Phase::Ended(exit) => {
                    if job.get("startTime").is_some() {
                        self.send_running();
                    }
                    self.drain_logs().await;
                    break Ok(exit);
                }
            }
            let following = matches!(
                state.as_str(),
                "JOB_STATE_RUNNING"
                    | "JOB_STATE_CANCELLING"
                    | "JOB_STATE_PAUSED"
                    | "JOB_STATE_UPDATING"
            );
            if following && Instant::now() >= next_log {
                let n = self.logs.read(&self.api, &self.sink).await;
                log_delay = if n > 0 {
                    t.log_interval
                } else {
                    log_delay
                        .mul_f64(1.5)
                        .min(t.poll_max.max(t.log_interval * 6))
                };
                next_log = Instant::now() + log_delay;
            }
            let mut until = next_poll;
            if following {
                until = until.min(next_log);
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep_until(until) => {}
                _ = self.wake.notified() => {
                    delay = t.poll_first;
                    next_poll = Instant::now();
                }
            }
            if Instant::now() < next_poll {
                // Woken for a log read only.
                continue;
            }
            match self.api.get(&self.name).await {
                Ok(j) => {
                    failing_since = None;
                    if state_of(&j) == state {
                        delay = (delay * 2).min(t.poll_max);
                    }
                    job = j;
                    next_poll = Instant::now() + delay;
                }
                Err(e) if e.code() == Some(404) => {
                    break Err(RunnerError::Gone(format!(
                        "the Vertex AI CustomJob {} no longer exists (deleted outside hoist)",
                        self.name
                    )));
                }
                Err(e) if e.is_transient() => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= t.give_up_after {
                        break Err(e.into_runner(&format!(
                            "reading the state of {} (failing for {}s)",
                            self.name,
                            since.elapsed().as_secs()
                        )));
                    }
                    tracing::warn!(message = "Reading a CustomJob failed; trying again.", job = %self.name, error = %e);
                    delay = (delay * 2).clamp(t.poll_first, Duration::from_secs(60));
                    next_poll = Instant::now() + delay;
                }
                Err(e) => break Err(e.into_runner(&format!("reading the state of {}", self.name))),
            }
        };
        self.tx.send_modify(|p| {
            p.exit = Some(end.map_err(Arc::new));
        });
    }

    fn send_running(&self) {
        self.tx.send_if_modified(|p| {
            if p.running.is_none() {
                p.running = Some(Ok(()));
                true
            } else {
                false
            }
        });
    }

    /// Reads the log to its end, then again until a read after a pause brings nothing.
    async fn drain_logs(&mut self) {
        self.logs.read(&self.api, &self.sink).await;
        for _ in 0..SETTLE_READS {
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(self.timing.log_settle) => {}
            }
            if self.logs.read(&self.api, &self.sink).await == 0 {
                break;
            }
        }
    }
}

/// Follows a job's Cloud Logging entries (see the module docs).
struct LogReader {
    filter_base: String,
    /// Where the first read starts.
    since: DateTime<Utc>,
    newest: Option<DateTime<Utc>>,
    /// insertIds shipped, with their timestamps (pruned past the lookback).
    seen: HashMap<String, DateTime<Utc>>,
    resume: LogResume,
    prefixed: bool,
    /// A refusal other than a transient one: logs are not read any more.
    broken: bool,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

impl LogReader {
    /// Reads every page of entries from the cursor; returns how many new lines were
    /// pushed. A failure is a warning (transient ones are tried again at the next
    /// read).
    async fn read(&mut self, api: &VertexApi, sink: &LogSink) -> usize {
        if self.broken {
            return 0;
        }
        match self.read_pages(api, sink).await {
            Ok(n) => n,
            Err((n, e)) if e.is_transient() => {
                tracing::warn!(message = "Reading a CustomJob's log failed; trying again later.", error = %e);
                n
            }
            Err((n, e)) => {
                self.broken = true;
                sink.warn(&format!(
                    "the job's log cannot be read from Cloud Logging: {e} (the agent's credentials need logging.logEntries.list, e.g. roles/logging.viewer); the run goes on without it"
                ));
                n
            }
        }
    }

    async fn read_pages(
        &mut self,
        api: &VertexApi,
        sink: &LogSink,
    ) -> Result<usize, (usize, GoogleError)> {
        let lookback = TimeDelta::from_std(LOG_LOOKBACK).unwrap_or_default();
        let from = self
            .newest
            .map_or(self.since, |n| (n - lookback).max(self.since));
        let filter = format!("{} AND timestamp>=\"{}\"", self.filter_base, rfc3339(from));
        let mut pushed = 0;
        let mut token: Option<String> = None;
        for _ in 0..1000 {
            let (entries, next) = api
                .entries(&filter, token.as_deref())
                .await
                .map_err(|e| (pushed, e))?;
            for e in &entries {
                pushed += self.entry(e, sink);
            }
            token = next;
            if token.is_none() {
                break;
            }
        }
        if let Some(n) = self.newest {
            let keep_from = n - lookback - TimeDelta::seconds(1);
            self.seen.retain(|_, t| *t >= keep_from);
        }
        Ok(pushed)
    }

    /// Ships one entry unless seen or resumed past; how many lines it pushed.
    fn entry(&mut self, e: &Value, sink: &LogSink) -> usize {
        let Some(ts) = time_of(e, "timestamp") else {
            return 0;
        };
        let id = e
            .get("insertId")
            .and_then(Value::as_str)
            .map_or_else(|| format!("{ts:?}/{e}"), str::to_string);
        if self.seen.contains_key(&id) {
            return 0;
        }
        self.seen.insert(id, ts);
        self.newest = Some(self.newest.map_or(ts, |n| n.max(ts)));
        let stderr = matches!(
            e.get("severity").and_then(Value::as_str),
            Some("ERROR" | "CRITICAL" | "ALERT" | "EMERGENCY")
        );
        if self.resume.skip(ts, stderr) {
            return 0;
        }
        let text = match (e.get("textPayload"), e.pointer("/jsonPayload/message")) {
            (Some(Value::String(s)), _) => s.clone(),
            (_, Some(Value::String(s))) => s.clone(),
            _ => match e.get("jsonPayload") {
                Some(v) => v.to_string(),
                None => return 0,
            },
        };
        let prefix = if self.prefixed {
            e.pointer("/resource/labels/task_name")
                .or_else(|| e.pointer("/labels/ml.googleapis.com~1task_name"))
                .and_then(Value::as_str)
                .filter(|s| {
                    !s.is_empty()
                        && !s.contains(|c: char| c.is_whitespace() || c == '[' || c == ']')
                })
                .map(source_prefix)
                .unwrap_or_default()
        } else {
            String::new()
        };
        let stream = if stderr {
            LogStream::Stderr
        } else {
            LogStream::Stdout
        };
        let text = text.strip_suffix('\n').unwrap_or(&text);
        let mut n = 0;
        for line in text.split('\n') {
            sink.push_at(stream, &format!("{prefix}{line}"), ts);
            n += 1;
        }
        n
    }
}
