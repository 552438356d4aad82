//! A started (or adopted) container: wait, stop, clean up.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{
    RemoveContainerOptions, StopContainerOptions, WaitContainerOptions,
};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::{daemon_message, is_not_found};
use crate::logs::LogSink;
use crate::runners::{Execution, Exit, LogResume, RunnerError};

/// How long [`Execution::wait`] waits for the rest of the output once the container
/// has exited (the daemon ends the stream as soon as it has sent the last line).
const LOG_DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// How long the daemon may stay unreachable while a container is supervised before
/// the agent gives up on it (a daemon restart takes seconds; `live-restore` keeps the
/// container running meanwhile).
const MAX_UNREACHABLE: Duration = Duration::from_secs(300);
/// Longest pause between two attempts to reach the daemon again.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

pub(crate) struct DockerExecution {
    docker: Docker,
    id: String,
    /// The exit, once the container has ended and its output was read to the end.
    exit: watch::Receiver<Option<Result<Exit, Arc<RunnerError>>>>,
    follower: Option<AbortHandle>,
    waiter: AbortHandle,
    /// Stop requests still waiting for the daemon's answer.
    stops: Mutex<Vec<AbortHandle>>,
}

impl DockerExecution {
    /// Starts following the container's output (after `resume`) and waiting for its
    /// end, both in the background (so [`Execution::wait`] can be cancelled and called
    /// again, or by several callers), and returns the execution.
    pub(crate) fn follow(
        docker: Docker,
        id: String,
        sink: LogSink,
        resume: LogResume,
        read_logs: bool,
    ) -> DockerExecution {
        let (done_tx, done_rx) = watch::channel(!read_logs);
        let follower = read_logs.then(|| {
            let (d, i, s) = (docker.clone(), id.clone(), sink.clone());
            tokio::spawn(async move {
                super::stream::follow(d, i, s, resume).await;
                let _ = done_tx.send(true);
            })
            .abort_handle()
        });
        let (exit_tx, exit_rx) = watch::channel(None);
        let waiter = {
            let (docker, id, follower) = (docker.clone(), id.clone(), follower.clone());
            tokio::spawn(async move {
                let exit = wait_exit(&docker, &id).await;
                wait_logs(done_rx, &sink, follower.as_ref()).await;
                if let Ok(e) = &exit
                    && !e.success()
                {
                    note_oom(&docker, &id, &sink).await;
                }
                let _ = exit_tx.send(Some(exit.map_err(Arc::new)));
            })
            .abort_handle()
        };
        DockerExecution {
            docker,
            id,
            exit: exit_rx,
            follower,
            waiter,
            stops: Mutex::default(),
        }
    }

    fn abort_tasks(&self) {
        if let Some(f) = &self.follower {
            f.abort();
        }
        self.waiter.abort();
        for s in self.stops.lock().expect("stops").drain(..) {
            s.abort();
        }
    }
}

/// The container's exit code, once it is not running. A daemon that does not answer
/// (restarting, overloaded) is asked again with backoff for up to [`MAX_UNREACHABLE`];
/// a container removed behind the agent's back ends the wait at once.
async fn wait_exit(docker: &Docker, id: &str) -> Result<Exit, RunnerError> {
    let mut unreachable_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(250);
    loop {
        let opts = WaitContainerOptions {
            condition: "not-running".to_string(),
        };
        let mut s = docker.wait_container(id, Some(opts));
        let broke = match s.next().await {
            Some(Ok(r)) => return Ok(Exit::Code(exit_code(r.status_code))),
            // bollard turns a non-zero exit into an error that carries the code.
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => {
                return Ok(Exit::Code(exit_code(code)));
            }
            Some(Err(e)) => Some(e),
            None => None,
        };
        drop(s);
        // The wait broke (daemon restart, connection lost): ask the state.
        let failure = match docker.inspect_container(id, None).await {
            Ok(c) => {
                let state = c.state.unwrap_or_default();
                if !state.running.unwrap_or(false) && !state.restarting.unwrap_or(false) {
                    return Ok(Exit::Code(exit_code(state.exit_code.unwrap_or(-1))));
                }
                // Still running: the wait is asked again (bounded like an unreachable
                // daemon, in case the wait keeps breaking).
                broke.map(|e| {
                    (
                        true,
                        RunnerError::Docker {
                            message: format!(
                                "waiting for container {} keeps failing: {}",
                                short(id),
                                daemon_message(&e)
                            ),
                            source: e,
                        },
                    )
                })
            }
            Err(e) if is_not_found(&e) => {
                return Err(RunnerError::Gone(format!(
                    "container {} was removed before its exit code could be read",
                    short(id)
                )));
            }
            Err(e) => Some((
                false,
                RunnerError::Docker {
                    message: format!(
                        "lost track of container {}: {}",
                        short(id),
                        daemon_message(&e)
                    ),
                    source: e,
                },
            )),
        };
        match &failure {
            None => {
                unreachable_since = None;
                backoff = Duration::from_millis(250);
            }
            Some((still_running, err)) if !still_running && !err.is_transient() => {
                return Err(failure.expect("some").1);
            }
            Some(_) => {}
        }
        if let Some((_, err)) = failure {
            let since = *unreachable_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= MAX_UNREACHABLE {
                return Err(err);
            }
            tracing::debug!(message = "Waiting for the container failed; retrying.", container = %id, error = %err, retry_in_ms = backoff.as_millis() as u64);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Waits for the follower to reach the end of the output (bounded).
async fn wait_logs(
    mut done: watch::Receiver<bool>,
    sink: &LogSink,
    follower: Option<&AbortHandle>,
) {
    let drained = tokio::time::timeout(LOG_DRAIN_TIMEOUT, done.wait_for(|d| *d)).await;
    if drained.is_err() {
        sink.system(&format!(
            "[hoist: the container's output stream did not end within {}s of its exit; later output is not collected]",
            LOG_DRAIN_TIMEOUT.as_secs()
        ));
        if let Some(f) = follower {
            f.abort();
        }
    }
}

/// Notes an out-of-memory kill in the run's log.
async fn note_oom(docker: &Docker, id: &str, sink: &LogSink) {
    if let Ok(c) = docker.inspect_container(id, None).await
        && c.state.and_then(|s| s.oom_killed).unwrap_or(false)
    {
        let limit = c
            .host_config
            .and_then(|h| h.memory)
            .filter(|m| *m > 0)
            .map(|m| format!(" (memory limit {} MiB)", m / (1024 * 1024)))
            .unwrap_or_default();
        sink.system(&format!(
            "[hoist: the container was killed because it ran out of memory{limit}]"
        ));
    }
}

fn exit_code(code: i64) -> i32 {
    i32::try_from(code).unwrap_or(-1)
}

/// The first 12 characters of a container id, as docker shows it.
pub(crate) fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

impl Drop for DockerExecution {
    fn drop(&mut self) {
        self.abort_tasks();
    }
}

#[async_trait]
impl Execution for DockerExecution {
    fn describe(&self) -> String {
        format!("container {}", short(&self.id))
    }

    async fn wait(&self) -> Result<Exit, RunnerError> {
        let mut rx = self.exit.clone();
        let exit = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone(),
            Err(_) => None,
        };
        match exit {
            Some(Ok(e)) => Ok(e),
            Some(Err(e)) => Err(e.share()),
            None => Err(RunnerError::Gone(format!(
                "container {} is no longer supervised (cleaned up before it ended)",
                short(&self.id)
            ))),
        }
    }

    async fn stop(&self, grace: Duration) -> Result<(), RunnerError> {
        let t = i32::try_from(grace.as_secs() + u64::from(grace.subsec_nanos() > 0))
            .unwrap_or(i32::MAX);
        // Docker answers a stop once the container has stopped: give the request the
        // grace period and then some.
        let docker = self
            .docker
            .clone()
            .with_timeout(grace.saturating_add(Duration::from_secs(60)));
        let id = self.id.clone();
        let task = tokio::spawn(async move {
            let opts = StopContainerOptions {
                signal: None,
                t: Some(t),
            };
            let r = docker.stop_container(&id, Some(opts)).await;
            if let Err(e) = &r
                && !is_not_found(e)
            {
                tracing::warn!(message = "Stopping the container failed.", container = %id, error = %e);
            }
            r
        });
        // The stop signal goes at once; errors (no such container…) come back at once.
        // A stop that is merely waiting for the grace period runs on in the background
        // (aborted by cleanup, or when the execution is dropped).
        let mut task = task;
        let answered = tokio::time::timeout(Duration::from_secs(2), &mut task).await;
        if answered.is_err() {
            self.stops.lock().expect("stops").push(task.abort_handle());
        }
        match answered {
            Ok(Ok(Ok(()))) | Err(_) => Ok(()),
            Ok(Ok(Err(e))) if is_not_found(&e) => Err(RunnerError::Gone(format!(
                "container {} no longer exists",
                short(&self.id)
            ))),
            Ok(Ok(Err(e))) => Err(RunnerError::Docker {
                message: format!(
                    "could not stop container {}: {}",
                    short(&self.id),
                    daemon_message(&e)
                ),
                source: e,
            }),
            Ok(Err(e)) => Err(RunnerError::Gone(format!(
                "could not stop container {}: the stop request ended: {e}",
                short(&self.id)
            ))),
        }
    }

    async fn cleanup(&self) {
        self.abort_tasks();
        let opts = RemoveContainerOptions {
            v: true,
            force: true,
            link: false,
        };
        match self.docker.remove_container(&self.id, Some(opts)).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                tracing::warn!(message = "Removing the container failed.", container = %self.id, error = %e);
            }
        }
    }
}
