//! One run's life on the agent: prepare, start, supervise, report.
//!
//! The job starts *before* `starting` is reported (the claim already gives the agent
//! the run; the report confirms the lease); reports go out in order through a
//! [`Reporter`] that retries while the server is unreachable. A refused report means
//! the server no longer assigns the run to this agent (cancelled, handed elsewhere):
//! the execution is stopped and nothing more is reported.

use std::sync::Arc;
use std::time::Duration;

use hoist_client::Client;
use hoist_core::api::{ClaimedRun, ErrorCode, Failure, LogBatch, LogStream, Run, RunUpdate};
use hoist_core::resource::ResourceType;
use hoist_core::run::{FailureStage, RunState};
use tokio::sync::{mpsc, watch};

use crate::agent::Shared;
use crate::logs::{LogSink, ship};
use crate::macros::{self, MacroContext};
use crate::runners::{
    self, Adopted, Execution, Exit, JobSpec, LogResume, RunnerError, StreamResume,
};

/// What the agent tells a run task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunSignal {
    /// A person asked for a stop: SIGTERM, grace, kill; report `stopped`.
    Stop,
    /// The server no longer assigns this run to us: stop it, report nothing.
    Abandon,
    /// The agent is shutting down: leave containers running (a restarted agent
    /// re-adopts them), stop local processes.
    Shutdown,
    /// The agent is shutting down after its runs end: keep supervising.
    Drain,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Signals {
    stop: bool,
    abandon: bool,
    shutdown: bool,
}

/// The agent's handle on a run task.
pub struct RunControl {
    tx: watch::Sender<Signals>,
}

impl RunControl {
    pub fn new() -> (RunControl, watch::Receiver<Signals>) {
        let (tx, rx) = watch::channel(Signals::default());
        (RunControl { tx }, rx)
    }

    pub fn signal(&self, s: RunSignal) {
        self.tx.send_modify(|v| match s {
            RunSignal::Stop => v.stop = true,
            RunSignal::Abandon => v.abandon = true,
            RunSignal::Shutdown => v.shutdown = true,
            RunSignal::Drain => {}
        });
    }
}

/// Sends a run's state reports in order, retrying transient failures.
struct Reporter {
    tx: mpsc::UnboundedSender<RunUpdate>,
    task: tokio::task::JoinHandle<()>,
}

impl Reporter {
    fn new(shared: Arc<Shared>, run_id: String, control: watch::Sender<Signals>) -> Reporter {
        let (tx, mut rx) = mpsc::unbounded_channel::<RunUpdate>();
        let task = tokio::spawn(async move {
            let mut refused = false;
            while let Some(u) = rx.recv().await {
                if refused {
                    continue;
                }
                let mut delay = Duration::from_millis(100);
                loop {
                    match shared.client.update_run(&run_id, &u).await {
                        Ok(_) => break,
                        Err(e) if e.is_transient() => {
                            tracing::warn!(message = "Could not report a run's state; retrying.", run = %run_id, state = %u.state, error = %e);
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(10));
                        }
                        Err(e) if e.code() == Some(ErrorCode::Superseded) => {
                            shared.supersede();
                            refused = true;
                            break;
                        }
                        Err(e) => {
                            // Find out why: the run may have been stopped meanwhile (go
                            // on, stopping), or is no longer ours (let go).
                            match shared.client.get_run(&run_id).await {
                                Ok(r)
                                    if r.state == RunState::Stopping && !u.state.is_terminal() =>
                                {
                                    control.send_modify(|s| s.stop = true);
                                }
                                Ok(r) if u.state.is_terminal() && r.state.is_terminal() => {}
                                _ => {
                                    tracing::warn!(message = "The server refused a run report; letting the run go.", run = %run_id, state = %u.state, error = %e);
                                    control.send_modify(|s| s.abandon = true);
                                    refused = true;
                                }
                            }
                            break;
                        }
                    }
                }
            }
        });
        Reporter { tx, task }
    }

    fn send(
        &self,
        session: &str,
        state: RunState,
        reason: String,
        exit_code: Option<i32>,
        failure: Option<Failure>,
    ) {
        let _ = self.tx.send(RunUpdate {
            session: session.to_string(),
            state,
            reason,
            exit_code,
            failure,
        });
    }

    /// Waits until every report was delivered (or refused).
    async fn finish(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

/// Builds what the runner needs from the claimed run.
fn prepare(shared: &Shared, run: &Run, token: &str) -> (JobSpec, String) {
    let env_lookup = |n: &str| std::env::var(n).ok();
    let ctx = MacroContext {
        project: &run.project,
        entity: &run.entity,
        run_id: &run.id,
        run_name: &run.name,
        image_uri: run.image.as_deref(),
        env: &env_lookup,
        allow: &shared.config.env_allow_list,
    };
    let (resource_config, report) = macros::apply(&run.resource_config, &ctx);
    let queue = format!("{}/{}", run.entity, run.queue);
    let mut env: Vec<(String, String)> = run
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.extend([
        ("HOIST_RUN_ID".to_string(), run.id.clone()),
        ("HOIST_RUN_NAME".to_string(), run.name.clone()),
        ("HOIST_PROJECT".to_string(), run.project.clone()),
        ("HOIST_ENTITY".to_string(), run.entity.clone()),
        ("HOIST_QUEUE".to_string(), queue.clone()),
        ("HOIST_BASE_URL".to_string(), shared.base_url.clone()),
        ("HOIST_RUN_TOKEN".to_string(), token.to_string()),
        ("HOIST_RUN_CONFIG".to_string(), run.config.to_string()),
    ]);
    let labels = [
        (runners::LABEL_RUN_ID, run.id.clone()),
        (runners::LABEL_AGENT, shared.name.clone()),
        (runners::LABEL_QUEUE, run.queue.clone()),
        (runners::LABEL_ENTITY, run.entity.clone()),
        (runners::LABEL_PROJECT, run.project.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let job = JobSpec {
        run_id: run.id.clone(),
        run_name: run.name.clone(),
        project: run.project.clone(),
        entity: run.entity.clone(),
        queue,
        agent_name: shared.name.clone(),
        image: run.image.clone(),
        entry_point: run.entry_point.clone(),
        args: run.args.clone(),
        env,
        resource_config,
        labels,
        source: run
            .job_source
            .clone()
            .filter(|s| !matches!(s, hoist_core::api::JobSource::Image { .. })),
    };
    (job, report.summary())
}

/// Lines read back per request when looking for where a log resumes.
const RESUME_PAGE: u64 = 1000;
/// Pages read back at most (a stream not seen in them is taken as shipped up to them).
const RESUME_PAGES: u64 = 10;

/// Lines `start..end` of a run's log, over as many pages as the server's byte cap per
/// page takes; `None` when a read fails.
async fn read_log_range(
    client: &Client,
    run_id: &str,
    start: u64,
    end: u64,
) -> Option<Vec<hoist_core::api::StoredLogLine>> {
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        let page = client.read_logs(run_id, at, Some(end - at)).await.ok()?;
        if page.lines.is_empty() || page.next_offset <= at {
            break;
        }
        at = page.next_offset;
        out.extend(page.lines);
    }
    Some(out)
}

/// Which of a run's lines the server has (to resume after them), per stream: the time
/// of the last stdout and stderr line, and how many lines of that stream it holds from
/// that same millisecond. The server keeps timestamps to the millisecond, a runner's
/// are finer (Docker's are nanoseconds): resuming after the stored time alone would
/// ship that line again.
async fn log_resume(client: &Client, run_id: &str) -> LogResume {
    let Ok(len) = client
        .append_logs(
            run_id,
            &LogBatch {
                session: None,
                lines: vec![],
            },
        )
        .await
        .map(|p| p.next_offset)
    else {
        return LogResume::default();
    };
    // Per stream: the last line's time, and how many lines share it.
    let mut last: [Option<(chrono::DateTime<chrono::Utc>, usize)>; 2] = [None, None];
    let mut done = [false; 2];
    let mut end = len;
    // The oldest job line read back.
    let mut oldest = None;
    for _ in 0..RESUME_PAGES {
        if end == 0 || done.iter().all(|d| *d) {
            break;
        }
        let start = end.saturating_sub(RESUME_PAGE);
        let Some(lines) = read_log_range(client, run_id, start, end).await else {
            break;
        };
        if lines.is_empty() {
            break;
        }
        for l in lines.iter().rev() {
            let i = match l.stream {
                LogStream::Stdout => 0,
                LogStream::Stderr => 1,
                LogStream::System => continue,
            };
            oldest = Some(l.ts);
            if done[i] {
                continue;
            }
            match &mut last[i] {
                None => last[i] = Some((l.ts, 1)),
                Some((t, n)) if *t == l.ts => *n += 1,
                Some(_) => done[i] = true,
            }
        }
        end = start;
    }
    let stream = |i: usize| match last[i] {
        Some((t, n)) => StreamResume {
            after: Some(t - chrono::TimeDelta::nanoseconds(1)),
            until: Some(t + chrono::TimeDelta::milliseconds(1)),
            shipped: n,
        },
        // Not in the lines read back (the other stream is): nothing of it was shipped
        // since the oldest of them; what came well before would have been shipped
        // with it (and is in the log, before them, when it was not all read back).
        None => StreamResume {
            after: oldest.map(|t| {
                t - if end == 0 {
                    chrono::TimeDelta::seconds(1)
                } else {
                    chrono::TimeDelta::nanoseconds(1)
                }
            }),
            ..StreamResume::default()
        },
    };
    LogResume {
        stdout: stream(0),
        stderr: stream(1),
    }
}

enum Ending {
    Exited(Result<Exit, RunnerError>),
    /// Left running for a restarted agent.
    LeftRunning,
    Abandoned,
}

/// Runs one claimed (or re-adopted) run to its end.
pub async fn supervise(
    shared: Arc<Shared>,
    claimed: ClaimedRun,
    adopted: bool,
    mut signals: watch::Receiver<Signals>,
) {
    let mut run = claimed.run;
    let session = shared.session.clone();
    let control = {
        // The reporter may raise signals too (a refused report).
        let (tx, rx) = watch::channel(*signals.borrow());
        let mut upstream = signals.clone();
        let fwd = tx.clone();
        tokio::spawn(async move {
            while upstream.changed().await.is_ok() {
                let v = *upstream.borrow();
                fwd.send_modify(|s| {
                    s.stop |= v.stop;
                    s.abandon |= v.abandon;
                    s.shutdown |= v.shutdown;
                });
            }
        });
        signals = rx;
        tx
    };
    let own = control.clone();
    let reporter = Reporter::new(shared.clone(), run.id.clone(), control);
    let sink = LogSink::new();
    let shipper = tokio::spawn(ship(
        sink.clone(),
        shared.client.clone(),
        run.id.clone(),
        session.clone(),
    ));
    let fail = |stage: FailureStage, message: String, sink: &LogSink| Failure {
        stage,
        message,
        log_tail: sink.tail(),
    };

    let Some(runner) = shared.runners.get(&run.resource).cloned() else {
        let msg = match run.resource {
            ResourceType::Docker => format!(
                "agent {} cannot run docker queues: no Docker daemon answered when it started",
                shared.name
            ),
            r => format!("agent {} has no {r} runner (it runs: {})", shared.name, {
                let mut v: Vec<_> = shared.runners.keys().map(|k| k.as_str()).collect();
                v.sort();
                v.join(", ")
            }),
        };
        sink.system(&msg);
        reporter.send(
            &session,
            RunState::Failed,
            msg.clone(),
            None,
            Some(fail(FailureStage::Agent, msg, &sink)),
        );
        return finish(reporter, sink, shipper).await;
    };
    // Git and code jobs on container queues need their image built (or found) first;
    // local-process runs check the source out instead (see the runner).
    let needs_build = !adopted
        && run.resource != ResourceType::LocalProcess
        && matches!(
            run.job_source,
            Some(hoist_core::api::JobSource::Git { .. } | hoist_core::api::JobSource::Code { .. })
        );
    let mut build_note = String::new();
    if needs_build {
        let job_name = run.job.as_ref().map(|j| j.to_string()).unwrap_or_default();
        reporter.send(
            &session,
            RunState::Building,
            format!(
                "building the image of job {job_name} on agent {} ({} builder)",
                shared.name,
                shared.builder.kind()
            ),
            None,
            None,
        );
        let outcome = {
            let build = shared.builder.build(&run, &sink);
            tokio::pin!(build);
            loop {
                tokio::select! {
                    r = &mut build => break Some(r),
                    c = signals.changed() => {
                        let s = *signals.borrow();
                        if c.is_err() || s.stop || s.abandon || s.shutdown {
                            break None;
                        }
                    }
                }
            }
        };
        match outcome {
            Some(Ok(built)) => {
                build_note = if built.cache_hit {
                    format!("image {} exists: no build", built.image)
                } else {
                    format!("built image {}", built.image)
                };
                run.image = Some(built.image);
            }
            Some(Err(e)) => {
                let failure = e.failure();
                sink.system(&format!("[hoist: build failed: {}]", failure.message));
                reporter.send(
                    &session,
                    RunState::Failed,
                    failure.message.clone(),
                    None,
                    Some(Failure {
                        log_tail: if failure.log_tail.is_empty() {
                            sink.tail()
                        } else {
                            failure.log_tail.clone()
                        },
                        ..failure
                    }),
                );
                return finish(reporter, sink, shipper).await;
            }
            None => {
                // The build was interrupted (its future dropped: the daemon stops it).
                let s = *signals.borrow();
                if !s.abandon {
                    let (state, reason) = if s.stop {
                        (
                            RunState::Stopped,
                            "stopped during the image build".to_string(),
                        )
                    } else {
                        (
                            RunState::Queued,
                            format!(
                                "agent {} shut down during the image build; back to the queue",
                                shared.name
                            ),
                        )
                    };
                    reporter.send(&session, state, reason, None, None);
                }
                return finish(reporter, sink, shipper).await;
            }
        }
    }
    let (job, macro_summary) = prepare(&shared, &run, claimed.token.expose());
    let grace = shared.config.stopped_run_timeout;

    // Start (or find again) the execution.
    let exec: Box<dyn Execution> = if adopted {
        let resume = log_resume(&shared.client, &run.id).await;
        match runner.adopt_resuming(&job, sink.clone(), resume).await {
            Ok(Adopted::Found(exec)) => {
                let note = format!(
                    "re-adopted {} by agent {} after a restart",
                    exec.describe(),
                    shared.name
                );
                sink.system(&format!("[hoist: {note}]"));
                match run.state {
                    RunState::Starting | RunState::Unknown => {
                        reporter.send(&session, RunState::Running, note, None, None);
                    }
                    RunState::Stopping => {
                        let _ = exec.stop(grace).await;
                    }
                    _ => {}
                }
                if run.stop_requested && run.state != RunState::Stopping {
                    own.send_modify(|s| s.stop = true);
                }
                exec
            }
            Ok(Adopted::Gone(reason)) => {
                sink.system(&format!("[hoist: {reason}]"));
                reporter.send(
                    &session,
                    RunState::Failed,
                    reason.clone(),
                    None,
                    Some(fail(FailureStage::Agent, reason, &sink)),
                );
                return finish(reporter, sink, shipper).await;
            }
            Err(e) => {
                let msg = format!("could not re-adopt the run after an agent restart: {e}");
                reporter.send(
                    &session,
                    RunState::Failed,
                    msg.clone(),
                    None,
                    Some(fail(e.stage(), msg, &sink)),
                );
                return finish(reporter, sink, shipper).await;
            }
        }
    } else {
        let mut reason = format!("starting on agent {}", shared.name);
        if !build_note.is_empty() {
            reason.push_str("; ");
            reason.push_str(&build_note);
        }
        if !macro_summary.is_empty() {
            reason.push_str("; ");
            reason.push_str(&macro_summary);
        }
        let start = tokio::time::timeout(
            shared.config.start_timeout,
            runner.start(&job, sink.clone()),
        );
        // Confirm the claim while the job starts.
        reporter.send(&session, RunState::Starting, reason, None, None);
        match start.await {
            Ok(Ok(exec)) => {
                reporter.send(
                    &session,
                    RunState::Running,
                    format!("running as {}", exec.describe()),
                    None,
                    None,
                );
                exec
            }
            Ok(Err(e)) => {
                let msg = match &e {
                    RunnerError::Refused(m) => format!("refused by agent {}: {m}", shared.name),
                    other => format!("could not start: {other}"),
                };
                sink.system(&format!("[hoist: {msg}]"));
                reporter.send(
                    &session,
                    RunState::Failed,
                    msg.clone(),
                    None,
                    Some(fail(e.stage(), msg, &sink)),
                );
                return finish(reporter, sink, shipper).await;
            }
            Err(_) => {
                let msg = format!(
                    "the run did not start within start_timeout ({}s)",
                    shared.config.start_timeout.as_secs()
                );
                sink.system(&format!("[hoist: {msg}]"));
                reporter.send(
                    &session,
                    RunState::Failed,
                    msg.clone(),
                    None,
                    Some(fail(FailureStage::Run, msg, &sink)),
                );
                return finish(reporter, sink, shipper).await;
            }
        }
    };

    // Supervise until the end, a stop, or the agent going away.
    let mut stopping = run.state == RunState::Stopping;
    let ending = loop {
        let s = *signals.borrow_and_update();
        if s.abandon {
            let _ = exec.stop(grace).await;
            let _ = tokio::time::timeout(grace + Duration::from_secs(10), exec.wait()).await;
            break Ending::Abandoned;
        }
        if s.shutdown {
            if run.resource == ResourceType::LocalProcess {
                // A local process cannot outlive the agent's supervision.
                if !stopping {
                    stopping = true;
                    reporter.send(
                        &session,
                        RunState::Stopping,
                        format!("agent {} shutting down", shared.name),
                        None,
                        None,
                    );
                }
                let _ = exec.stop(grace).await;
                break Ending::Exited(exec.wait().await);
            }
            break Ending::LeftRunning;
        }
        if s.stop && !stopping {
            stopping = true;
            sink.system(&format!(
                "[hoist: stop requested; sending SIGTERM, killing after {}s]",
                grace.as_secs()
            ));
            if let Err(e) = exec.stop(grace).await {
                tracing::warn!(message = "Stopping a run failed.", run = %run.id, error = %e);
            }
        }
        tokio::select! {
            r = exec.wait() => break Ending::Exited(r),
            c = signals.changed() => {
                if c.is_err() {
                    // The agent dropped its handle: it is going away.
                    break Ending::LeftRunning;
                }
            }
        }
    };

    match ending {
        Ending::LeftRunning => {
            sink.system(&format!(
                "[hoist: agent {} stopped; the run keeps running and will be re-adopted]",
                shared.name
            ));
            sink.close();
            let _ = tokio::time::timeout(Duration::from_secs(3), sink.flushed()).await;
            shipper.abort();
            drop(reporter);
        }
        Ending::Abandoned => {
            sink.close();
            let _ = tokio::time::timeout(Duration::from_secs(3), sink.flushed()).await;
            shipper.abort();
            exec.cleanup().await;
            reporter.finish().await;
        }
        Ending::Exited(result) => {
            let (state, reason, code, failure) = match result {
                Ok(exit) if stopping => (
                    RunState::Stopped,
                    format!("stopped ({exit})"),
                    Some(exit.code()),
                    None,
                ),
                Ok(exit) if exit.success() => (RunState::Finished, exit.to_string(), Some(0), None),
                Ok(exit) => {
                    let msg = format!("the job ended with {exit}");
                    (
                        RunState::Failed,
                        msg.clone(),
                        Some(exit.code()),
                        Some(fail(FailureStage::Run, msg, &sink)),
                    )
                }
                Err(e) => {
                    let msg = format!("lost track of the job: {e}");
                    (
                        RunState::Failed,
                        msg.clone(),
                        None,
                        Some(fail(e.stage(), msg, &sink)),
                    )
                }
            };
            // Logs first, so that a follower sees every line before the end.
            sink.close();
            let _ = tokio::time::timeout(Duration::from_secs(30), sink.flushed()).await;
            reporter.send(&session, state, reason, code, failure);
            reporter.finish().await;
            exec.cleanup().await;
            let _ = shipper.await;
        }
    }
}

async fn finish(reporter: Reporter, sink: LogSink, shipper: tokio::task::JoinHandle<()>) {
    sink.close();
    let _ = tokio::time::timeout(Duration::from_secs(30), sink.flushed()).await;
    reporter.finish().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), shipper).await;
}
