//! What an execution's supervisor task has seen, shared with the execution's waiters.
//!
//! The Kubernetes, SageMaker and Vertex executions each run one task that watches or
//! polls the backend and publishes a [`Progress`] on a `watch` channel; their
//! [`Execution::running`](super::Execution::running) and
//! [`Execution::wait`](super::Execution::wait) wait on it here, so every waiter gets the
//! same outcome, however often and by however many callers it is asked.

use std::sync::Arc;

use tokio::sync::watch;

use super::{Exit, RunnerError};

/// The supervisor's findings: set once each, never unset.
#[derive(Clone, Default)]
pub(crate) struct Progress {
    /// The job runs (or could not start).
    pub(crate) running: Option<Result<(), Arc<RunnerError>>>,
    /// The job ended, its output read to the end (or supervising it failed).
    pub(crate) exit: Option<Result<Exit, Arc<RunnerError>>>,
}

/// Resolves when the job runs. A job that ended without running never resolves it
/// (the run task learns the end from [`exit`]); a supervisor that went away without
/// an end is [`RunnerError::Gone`], `what` naming the job.
pub(crate) async fn running(
    rx: &watch::Receiver<Progress>,
    what: impl FnOnce() -> String,
) -> Result<(), RunnerError> {
    wait_for(rx, |p| p.running.clone(), what).await
}

/// Resolves when the job ended (see [`running`]).
pub(crate) async fn exit(
    rx: &watch::Receiver<Progress>,
    what: impl FnOnce() -> String,
) -> Result<Exit, RunnerError> {
    wait_for(rx, |p| p.exit.clone(), what).await
}

async fn wait_for<T>(
    rx: &watch::Receiver<Progress>,
    pick: impl Fn(&Progress) -> Option<Result<T, Arc<RunnerError>>>,
    what: impl FnOnce() -> String,
) -> Result<T, RunnerError> {
    let mut rx = rx.clone();
    let r = rx
        .wait_for(|p| pick(p).is_some())
        .await
        .map(|p| pick(&p).expect("checked"));
    let ended = rx.borrow().exit.is_some();
    match r {
        Ok(r) => r.map_err(|e| e.share()),
        // The job ended without this (it never ran): `running` never resolves, `exit`
        // has the end.
        Err(_) if ended => std::future::pending().await,
        Err(_) => Err(RunnerError::Gone(format!(
            "{} is no longer supervised",
            what()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_end_without_running_leaves_running_pending_and_a_lost_supervisor_is_gone() {
        let (tx, rx) = watch::channel(Progress::default());
        tx.send_modify(|p| p.exit = Some(Ok(Exit::Code(3))));
        drop(tx);
        assert_eq!(exit(&rx, || "job".into()).await.unwrap(), Exit::Code(3));
        let pending = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            running(&rx, || "job".into()),
        )
        .await;
        assert!(
            pending.is_err(),
            "running resolved for a job that never ran"
        );

        let (tx, rx) = watch::channel(Progress::default());
        drop(tx);
        let e = running(&rx, || "training job j".into()).await.unwrap_err();
        assert_eq!(e.to_string(), "training job j is no longer supervised");
        assert!(matches!(e, RunnerError::Gone(_)));
    }

    #[tokio::test]
    async fn every_waiter_gets_the_same_outcome() {
        let (tx, rx) = watch::channel(Progress::default());
        let a = tokio::spawn({
            let rx = rx.clone();
            async move { exit(&rx, || "job".into()).await }
        });
        tx.send_modify(|p| {
            p.running = Some(Ok(()));
            p.exit = Some(Err(Arc::new(RunnerError::start("no image"))));
        });
        let b = exit(&rx, || "job".into()).await.unwrap_err();
        assert_eq!(a.await.unwrap().unwrap_err().to_string(), "no image");
        assert_eq!(b.to_string(), "no image");
        running(&rx, || "job".into()).await.unwrap();
    }
}
