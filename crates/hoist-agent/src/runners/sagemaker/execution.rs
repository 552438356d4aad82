//! A training job, supervised by POLLING `DescribeTrainingJob` (SageMaker has no watch)
//! with backoff, and its CloudWatch log streams followed ([`super::logs`]).
//!
//! Polling starts at [`Polling::first`] and grows by half each time nothing changed, up
//! to [`Polling::cap`]; any change (a status, a new secondary-status transition) starts
//! it over, a stop request polls at once, and throttling or no answer waits longer (up
//! to a minute) without ending the supervision. A job that `DescribeTrainingJob` does
//! not know (after [`NOT_FOUND_GRACE`], for SageMaker's eventual consistency right
//! after the create) or a refusal (access denied) ends it with an error.
//!
//! The mapping of what SageMaker says is [`super::status`]'s. The end is reported once
//! the logs are read to their end ([`super::logs::follow`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::api::{Api, Service};
use super::logs;
use super::status::{JobStatus, Phase};
use crate::logs::LogSink;
use crate::runners::progress::{self, Progress};
use crate::runners::{Execution, Exit, LogResume, RunnerError};

/// How long a job just created may be unknown to `DescribeTrainingJob`.
pub const NOT_FOUND_GRACE: Duration = Duration::from_secs(30);

/// The longest wait between two polls after throttling or no answer.
const TROUBLE_CAP: Duration = Duration::from_secs(60);

/// How often the runner asks SageMaker and CloudWatch Logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Polling {
    /// The first wait between two `DescribeTrainingJob` calls, and after each change.
    pub first: Duration,
    /// The longest wait while nothing changes.
    pub cap: Duration,
    /// The first and longest wait between two passes over the log streams.
    pub log_first: Duration,
    pub log_cap: Duration,
    /// After the end, the logs are read again until a pass finds nothing new at least
    /// this long after the end (CloudWatch Logs takes the last lines in a moment after
    /// the container exits).
    pub log_settle: Duration,
}

impl Default for Polling {
    fn default() -> Polling {
        Polling {
            first: Duration::from_millis(250),
            cap: Duration::from_secs(15),
            // CloudWatch Logs shows a line a second or so after it was written, and
            // allows GetLogEvents 25 times a second per account: every 2 s at most
            // per run while lines come.
            log_first: Duration::from_secs(2),
            log_cap: Duration::from_secs(10),
            log_settle: Duration::from_secs(3),
        }
    }
}

/// What to supervise.
pub struct Target {
    pub api: Api,
    pub name: String,
    /// Prefix log lines with their stream (several instances).
    pub prefixed: bool,
    /// Secondary-status transitions already in the run's log (a re-adopted job's).
    pub reported: usize,
    pub polling: Polling,
}

pub struct SageMakerExecution {
    name: String,
    api: Api,
    progress: watch::Receiver<Progress>,
    pending: Arc<Mutex<Option<String>>>,
    stop_sent: Arc<AtomicBool>,
    poke: Arc<Notify>,
    cancel: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl SageMakerExecution {
    /// Starts supervising `target`; log lines go to `sink`, skipping what `resume`
    /// says the server has.
    pub fn supervise(target: Target, sink: LogSink, resume: LogResume) -> SageMakerExecution {
        let (tx, rx) = watch::channel(Progress::default());
        let pending = Arc::new(Mutex::new(None));
        let stop_sent = Arc::new(AtomicBool::new(false));
        let poke = Arc::new(Notify::new());
        let cancel = CancellationToken::new();
        let sup = Supervisor {
            api: target.api.clone(),
            name: target.name.clone(),
            prefixed: target.prefixed,
            reported: target.reported,
            polling: target.polling,
            sink,
            resume: Some(resume),
            tx,
            pending: pending.clone(),
            stop_sent: stop_sent.clone(),
            poke: poke.clone(),
            cancel: cancel.clone(),
        };
        let task = tokio::spawn(sup.run());
        SageMakerExecution {
            name: target.name,
            api: target.api,
            progress: rx,
            pending,
            stop_sent,
            poke,
            cancel,
            task: Mutex::new(Some(task)),
        }
    }
}

#[async_trait]
impl Execution for SageMakerExecution {
    fn describe(&self) -> String {
        format!("training job {}", self.name)
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

    /// `StopTrainingJob` (SageMaker sends the container SIGTERM and gives it 120 s; the
    /// grace is SageMaker's, not `grace`). A job no longer in progress is not an error.
    async fn stop(&self, _grace: Duration) -> Result<(), RunnerError> {
        self.stop_sent.store(true, Ordering::SeqCst);
        let r = self
            .api
            .call(
                Service::SageMaker,
                "StopTrainingJob",
                &json!({"TrainingJobName": self.name}),
            )
            .await;
        self.poke.notify_one();
        match r {
            Ok(_) => Ok(()),
            // Already stopping or ended: the next poll says how it ended.
            Err(e) if e.code() == Some("ValidationException") && !e.is_not_found() => {
                tracing::debug!(message = "StopTrainingJob refused; the job is no longer in progress.", job = %self.name, error = %e);
                Ok(())
            }
            Err(e) => Err(e.into_runner()),
        }
    }

    /// Ends the polling and the log followers. A training job cannot be deleted: what
    /// SageMaker keeps of it (its description, logs, model) stays.
    async fn cleanup(&self) {
        self.cancel.cancel();
        let task = self.task.lock().expect("task").take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

impl Drop for SageMakerExecution {
    fn drop(&mut self) {
        // Ends the polling (the training job is left as it is).
        self.cancel.cancel();
    }
}

struct Supervisor {
    api: Api,
    name: String,
    prefixed: bool,
    reported: usize,
    polling: Polling,
    sink: LogSink,
    resume: Option<LogResume>,
    tx: watch::Sender<Progress>,
    pending: Arc<Mutex<Option<String>>>,
    stop_sent: Arc<AtomicBool>,
    poke: Arc<Notify>,
    cancel: CancellationToken,
}

impl Supervisor {
    async fn run(mut self) {
        let started = tokio::time::Instant::now();
        let mut backoff = self.polling.first;
        let mut last = String::new();
        let mut seen = false;
        let (ended_tx, ended_rx) = watch::channel(false);
        let mut follower: Option<tokio::task::JoinHandle<()>> = None;
        let mut warned_capacity = false;
        loop {
            let answer = self
                .api
                .call(
                    Service::SageMaker,
                    "DescribeTrainingJob",
                    &json!({"TrainingJobName": self.name}),
                )
                .await;
            match answer {
                Ok(v) => {
                    seen = true;
                    let st = JobStatus::parse(&v);
                    let changed = st.label() != last || st.transitions.len() != self.reported;
                    self.report(&st, &last, &mut warned_capacity);
                    last = st.label();
                    let phase = st.phase();
                    if (st.has_run() || phase == Phase::Ended) && follower.is_none() {
                        follower = Some(tokio::spawn(logs::follow(
                            self.api.clone(),
                            self.name.clone(),
                            self.prefixed,
                            self.sink.clone(),
                            self.resume.take().unwrap_or_default(),
                            ended_rx.clone(),
                            self.cancel.clone(),
                            self.polling,
                        )));
                    }
                    if st.has_run() {
                        *self.pending.lock().expect("pending") = None;
                        self.tx.send_if_modified(|p| {
                            let first = p.running.is_none();
                            if first {
                                p.running = Some(Ok(()));
                            }
                            first
                        });
                    }
                    if phase == Phase::Ended {
                        let _ = ended_tx.send(true);
                        if let Some(f) = follower.take() {
                            tokio::select! {
                                _ = f => {}
                                _ = self.cancel.cancelled() => return,
                            }
                        }
                        let exit = st
                            .exit(self.stop_sent.load(Ordering::SeqCst))
                            .expect("ended");
                        self.tx.send_modify(|p| p.exit = Some(Ok(exit)));
                        return;
                    }
                    backoff = if changed {
                        self.polling.first
                    } else {
                        (backoff * 3 / 2).min(self.polling.cap)
                    };
                }
                Err(e) if e.is_not_found() && (seen || started.elapsed() > NOT_FOUND_GRACE) => {
                    self.end(RunnerError::Gone(format!(
                        "training job {} is gone: SageMaker no longer knows it ({e})",
                        self.name
                    )));
                    return;
                }
                Err(e) if e.is_not_found() || e.is_transient() => {
                    tracing::warn!(message = "DescribeTrainingJob failed; polling again later.", job = %self.name, error = %e);
                    backoff = (backoff * 2).clamp(Duration::from_secs(1), TROUBLE_CAP);
                }
                Err(e) => {
                    self.end(e.into_runner());
                    return;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.poke.notified() => {}
                _ = self.cancel.cancelled() => return,
            }
        }
    }

    /// The new secondary-status transitions as system lines; warnings; the pending
    /// reason.
    fn report(&mut self, st: &JobStatus, last: &str, warned_capacity: &mut bool) {
        if st.transitions.len() > self.reported {
            for t in &st.transitions[self.reported..] {
                match &t.message {
                    Some(m) => self
                        .sink
                        .system(&format!("[hoist: SageMaker: {}: {m}]", t.status)),
                    None => self
                        .sink
                        .system(&format!("[hoist: SageMaker: {}]", t.status)),
                }
            }
            self.reported = st.transitions.len();
        }
        let label = st.label();
        if label != last && matches!(st.phase(), Phase::Stopping | Phase::Ended) {
            self.sink
                .system(&format!("[hoist: training job {}: {label}]", self.name));
        }
        match st.phase() {
            Phase::Interrupted if label != last => {
                let within = st
                    .max_wait
                    .map(|s| format!(" (StoppingCondition.MaxWaitTimeInSeconds: {s}s)"))
                    .unwrap_or_default();
                self.sink.warn(&format!(
                    "the training job's spot instances were interrupted; SageMaker resumes it when capacity is back, within its maximum wait time{within}"
                ));
            }
            Phase::Starting => {
                let message = st.pending_message();
                if let Some(m) = &message
                    && m.to_ascii_lowercase().contains("insufficient capacity")
                    && !*warned_capacity
                {
                    *warned_capacity = true;
                    self.sink.warn(&format!(
                        "training job {} is waiting for capacity: {m}",
                        self.name
                    ));
                }
                *self.pending.lock().expect("pending") = Some(match message {
                    Some(m) => format!("training job {} is {label}: {m}", self.name),
                    None => format!("training job {} is {label}", self.name),
                });
            }
            _ => {}
        }
    }

    fn end(&self, e: RunnerError) {
        let e = Arc::new(e);
        self.tx.send_modify(|p| {
            if p.running.is_none() {
                p.running = Some(Err(e.clone()));
            }
            p.exit = Some(Err(e));
        });
    }
}
