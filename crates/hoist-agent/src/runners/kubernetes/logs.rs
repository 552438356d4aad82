//! Following the logs of a run's containers: one follower per container as its pod
//! shows it started (`follow=true`, `timestamps=true`), each line shipped with the
//! container's own timestamp, prefixed `[pod/container]` when the run has more than one
//! container.
//!
//! A follow stream ends when its container ends (the kubelet closes it), or when the
//! connection breaks: then the follower looks at the pod as the execution's pod watch
//! sees it (waiting up to [`STATUS_LAG`] for the kubelet to report the container
//! terminated, and reading the pod once only when the watch says nothing), and
//! reconnects from the last line's time (skipping what it shipped) unless the
//! container has ended or the pod is gone. So a run's log costs one request per
//! container, however long it runs. A re-adopted run's followers skip what the server already has
//! ([`LogResume`]): with several containers, each after its own container's last line
//! there ([`LogResume::for_source`]; the prefix is the line's source), since one
//! container's follower may have shipped further than another's. A log the agent may
//! not read (403) gets a note in the run's log, once, and no retries.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{AsyncBufReadExt, TryStreamExt};
use hoist_core::api::LogStream;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use tokio_util::sync::CancellationToken;

use super::api::{server_message, status_code};
use crate::logs::LogSink;
use crate::runners::LogResume;

/// Reconnects after a broken stream at most this often in a row without a line.
const MAX_RECONNECTS: u32 = 20;

/// How long a follower whose stream ended waits for the pod watch to show the
/// container terminated (the kubelet reports it shortly after the log closes) before
/// it reads the pod itself.
pub const STATUS_LAG: Duration = Duration::from_secs(3);

/// What a follower whose stream ended learnt of its container.
enum Container {
    Ended,
    /// Running (or not known to have ended): reconnect.
    Running,
    /// The pod is gone, or the follower is cancelled.
    Gone,
}

/// What one follower needs.
pub struct Follower {
    pub pods: Api<Pod>,
    pub pod: String,
    pub container: String,
    /// `[pod/container] ` (the line's source) or nothing.
    pub prefix: String,
    pub sink: LogSink,
    /// What a re-adopted run's server copy holds of this follower's lines: its own
    /// source's, or (no prefix) the stream's, shared by the run's followers.
    pub resume: Arc<Mutex<LogResume>>,
    pub cancel: CancellationToken,
    /// The pod as the execution's watch last saw it (`None`: deleted).
    pub pod_state: tokio::sync::watch::Receiver<Option<Pod>>,
}

/// Splits `2024-01-02T03:04:05.123456789Z text` into its time and text.
fn split_line(line: &str) -> (Option<DateTime<Utc>>, &str) {
    match line.split_once(' ') {
        Some((ts, rest)) => match DateTime::parse_from_rfc3339(ts) {
            Ok(t) => (Some(t.with_timezone(&Utc)), rest),
            Err(_) => (None, line),
        },
        None => match DateTime::parse_from_rfc3339(line) {
            // An empty line: only its timestamp.
            Ok(t) => (Some(t.with_timezone(&Utc)), ""),
            Err(_) => (None, line),
        },
    }
}

impl Follower {
    /// Follows until the container ended and its log was read to the end, the pod is
    /// gone, or `cancel`.
    pub async fn run(mut self) {
        let mut last: Option<DateTime<Utc>> = None;
        let mut quiet_reconnects = 0;
        loop {
            // Read from where the last stream stopped (the API takes whole seconds:
            // the lines up to `last` are skipped below), or from where the server's
            // copy ends (a re-adopted run).
            let from = last.or_else(|| self.resume.lock().expect("resume").from());
            let lp = LogParams {
                container: Some(self.container.clone()),
                follow: true,
                timestamps: true,
                since_time: from.and_then(to_jiff),
                ..LogParams::default()
            };
            let mut got_line = false;
            // Lines of this stream at or before `seen` were read by an earlier stream.
            // Within one stream nothing is skipped: a container's stdout and stderr are
            // stamped by separate copiers, so the stamps of a stream are not monotonic
            // (skipping by `last` there dropped a stderr line stamped before the stdout
            // line read just before it).
            let seen = last;
            let opened = tokio::select! {
                r = self.pods.log_stream(&self.pod, &lp) => r,
                _ = self.cancel.cancelled() => return,
            };
            match opened {
                Ok(reader) => {
                    let mut lines = reader.lines();
                    loop {
                        let next = tokio::select! {
                            l = lines.try_next() => l,
                            _ = self.cancel.cancelled() => return,
                        };
                        match next {
                            Ok(Some(line)) => {
                                let (ts, text) = split_line(&line);
                                let ts = ts.unwrap_or_else(Utc::now);
                                if seen.is_some_and(|l| ts <= l) {
                                    continue;
                                }
                                last = last.max(Some(ts));
                                if self.resume.lock().expect("resume").skip(ts, false) {
                                    continue;
                                }
                                got_line = true;
                                self.sink.push_at(
                                    LogStream::Stdout,
                                    &format!("{}{text}", self.prefix),
                                    ts,
                                );
                            }
                            Ok(None) => break,
                            Err(e) => {
                                tracing::debug!(message = "A container's log stream broke.", pod = %self.pod, container = %self.container, error = %e);
                                break;
                            }
                        }
                    }
                }
                Err(e) if status_code(&e) == Some(404) => return,
                Err(e) if status_code(&e) == Some(403) => {
                    // RBAC does not change while the run runs: said once, not retried.
                    self.sink.system(&format!(
                        "[hoist: cannot read the log of {}/{}: the agent's Kubernetes identity may not get pods/log in namespace {} ({}); it needs the ClusterRole hoist-agent-runner of deploy/kubernetes/rbac.yaml bound in that namespace. The run is still followed by its status.]",
                        self.pod,
                        self.container,
                        self.pods.namespace().unwrap_or("?"),
                        server_message(&e),
                    ));
                    return;
                }
                Err(e) => {
                    tracing::debug!(message = "Could not open a container's log.", pod = %self.pod, container = %self.container, error = %e);
                }
            }
            // The stream ended: over when the container is, else reconnect.
            match self.container_after_stream().await {
                Container::Gone => return,
                Container::Ended => {
                    if got_line || last.is_some() {
                        return;
                    }
                    // Ended before its log could be opened: one more read.
                    if quiet_reconnects > 0 {
                        return;
                    }
                }
                Container::Running => {}
            }
            quiet_reconnects = if got_line { 0 } else { quiet_reconnects + 1 };
            if quiet_reconnects > MAX_RECONNECTS {
                self.sink.system(&format!(
                    "[hoist: stopped following the log of {}/{}: its stream keeps breaking]",
                    self.pod, self.container
                ));
                return;
            }
            let pause = Duration::from_millis(200 * u64::from(quiet_reconnects.min(10)));
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.cancel.cancelled() => return,
            }
        }
    }
}

impl Follower {
    /// Whether the container ended, after its log stream did: from the pod watch
    /// within [`STATUS_LAG`], else from the pod read once.
    async fn container_after_stream(&mut self) -> Container {
        let give_up = tokio::time::sleep(STATUS_LAG);
        tokio::pin!(give_up);
        loop {
            match &*self.pod_state.borrow_and_update() {
                None => return Container::Gone,
                Some(p) if container_ended(p, &self.container) => return Container::Ended,
                Some(_) => {}
            }
            tokio::select! {
                changed = self.pod_state.changed() => {
                    if changed.is_err() {
                        // The execution no longer watches.
                        break;
                    }
                }
                _ = &mut give_up => break,
                _ = self.cancel.cancelled() => return Container::Gone,
            }
        }
        match self.pods.get_opt(&self.pod).await {
            Ok(None) => Container::Gone,
            Ok(Some(p)) if container_ended(&p, &self.container) => Container::Ended,
            Ok(Some(_)) | Err(_) => Container::Running,
        }
    }
}

/// True when the pod's status shows `container` terminated (and not restarted).
pub fn container_ended(pod: &Pod, container: &str) -> bool {
    let Some(st) = pod.status.as_ref() else {
        return false;
    };
    if matches!(st.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return true;
    }
    st.container_statuses
        .iter()
        .flatten()
        .chain(st.init_container_statuses.iter().flatten())
        .filter(|c| c.name == container)
        .any(|c| c.state.as_ref().is_some_and(|s| s.terminated.is_some()))
}

fn to_jiff(t: DateTime<Utc>) -> Option<k8s_openapi::jiff::Timestamp> {
    k8s_openapi::jiff::Timestamp::from_second(t.timestamp()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_into_time_and_text() {
        let (t, text) = split_line("2024-01-02T03:04:05.123456789Z hello world");
        assert_eq!(text, "hello world");
        assert_eq!(t.unwrap().timestamp_subsec_nanos(), 123_456_789);
        let (t, text) = split_line("2024-01-02T03:04:05Z");
        assert!(t.is_some());
        assert_eq!(text, "");
        let (t, text) = split_line("no time here");
        assert!(t.is_none());
        assert_eq!(text, "no time here");
    }
}
