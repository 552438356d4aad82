//! A run's objects in the cluster, supervised by WATCHING them (kube-runtime watchers
//! on the top object by name and on the run's pods by label; a 410 Gone makes the
//! watcher relist, whether it comes as an `ERROR` event or as the watch request's own
//! HTTP status; pods missing from the new list are forgotten), never by polling. A 403
//! on a list or watch ends the supervision with the missing permission.
//!
//! | seen | means |
//! |---|---|
//! | a pod scheduled, pulling, creating containers | still starting |
//! | a container running (or already ended) | [`Execution::running`] resolves |
//! | `ErrImagePull`, `ImagePullBackOff`, `CreateContainerConfigError`… for [`START_FAILURE_WINDOW`] | `running` fails with the reason (the run fails at `starting`) |
//! | a pod unschedulable | a warning in the run's log; the reason is the start timeout's |
//! | the top object succeeded | `Exit::Code(0)` |
//! | the top object failed | `Exit::Failed` with the failing container's exit code and reason |
//! | a pod evicted, disrupted or deleted by someone else | `Exit::Preempted` |
//! | after a stop: the top object and the pods gone | the end (`stopped`) |
//! | the top object deleted outside hoist | `RunnerError::Gone` |
//!
//! The end is reported only once every container's log has been read to its end, so
//! cleanup (which deletes the objects) never loses a line.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff;
use kube::api::{Api, DeleteParams, DynamicObject, PropagationPolicy};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::api::{self, Kind};
use super::logs::Follower;
use super::status::{self, TopStatus};
use crate::logs::{LogSink, source_prefix};
use crate::runners::progress::{self, Progress};
use crate::runners::{Execution, Exit, LogResume, RunnerError};

/// How long a pod may keep failing to start its containers (an image that cannot be
/// pulled, a missing Secret or ConfigMap) before the run fails at `starting`: the
/// kubelet retries these, and a registry's brief hiccup should not fail a run, but a
/// wrong image name should fail it in seconds, not at `start_timeout`.
pub const START_FAILURE_WINDOW: Duration = Duration::from_secs(10);

/// How long a disruption (a pod evicted, or deleted by someone other than hoist) waits
/// for the top object's verdict before it counts as a preemption: a Job's controller
/// deletes the pods of a Job past its `activeDeadlineSeconds` before it marks the Job
/// failed (`DeadlineExceeded`), which is a failure, not a preemption.
const DISRUPTION_SETTLE: Duration = Duration::from_secs(5);

/// How long the end waits for the containers' logs to be read to their end.
const LOG_DRAIN: Duration = Duration::from_secs(60);

/// How long a preempted or lost run's logs are still read (its containers may go on).
const PARTIAL_LOG_DRAIN: Duration = Duration::from_secs(3);

/// What identifies a run's objects.
#[derive(Clone)]
pub struct Target {
    pub client: kube::Client,
    pub kind: Kind,
    pub api_version: String,
    pub kind_name: String,
    pub namespace: String,
    pub name: String,
    /// `hoist.dev/run-id=…`.
    pub selector: String,
    /// Prefix log lines with their source, `[pod/container] `
    /// ([`crate::logs::source_prefix`]).
    pub prefixed: bool,
}

impl Target {
    fn describe(&self) -> String {
        format!("{} {}/{}", self.kind_name, self.namespace, self.name)
    }

    fn top(&self) -> Api<DynamicObject> {
        self.kind.api(&self.client, &self.namespace)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Deletes everything of the run: the top object (the pods and Secrets it owns go
    /// with it), and the Secrets and pods by label (in case they are not owned yet).
    pub async fn delete_all(&self, dp: &DeleteParams) -> Result<(), RunnerError> {
        api::delete_named(&self.top(), &self.name, dp, &self.describe()).await?;
        api::delete_by_label(&self.client, &self.namespace, &self.selector, dp).await
    }
}

pub struct KubeExecution {
    target: Target,
    progress: watch::Receiver<Progress>,
    /// Why the run is still pending (unschedulable…), for the start timeout's message.
    pending: Arc<Mutex<Option<String>>>,
    stopping: Arc<AtomicBool>,
    cancel: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl KubeExecution {
    /// Starts supervising `target`; log lines go to `sink`, skipping what `resume`
    /// says the server has.
    pub fn supervise(target: Target, sink: LogSink, resume: LogResume) -> KubeExecution {
        let (tx, rx) = watch::channel(Progress::default());
        let cancel = CancellationToken::new();
        let stopping = Arc::new(AtomicBool::new(false));
        let pending = Arc::new(Mutex::new(None));
        let sup = Supervisor {
            target: target.clone(),
            sink,
            resume: Arc::new(Mutex::new(resume)),
            tx,
            stopping: stopping.clone(),
            pending: pending.clone(),
            cancel: cancel.clone(),
            pods: BTreeMap::new(),
            pod_states: HashMap::new(),
            followed: HashSet::new(),
            followers: JoinSet::new(),
            failing_since: None,
            warned: HashSet::new(),
            disrupted: None,
            disrupted_at: None,
            top_created: None,
            deleted: Vec::new(),
        };
        let task = tokio::spawn(sup.run());
        KubeExecution {
            target,
            progress: rx,
            pending,
            stopping,
            cancel,
            task: Mutex::new(Some(task)),
        }
    }
}

#[async_trait]
impl Execution for KubeExecution {
    fn describe(&self) -> String {
        self.target.describe()
    }

    async fn running(&self) -> Result<(), RunnerError> {
        progress::running(&self.progress, || self.target.describe()).await
    }

    async fn wait(&self) -> Result<Exit, RunnerError> {
        progress::exit(&self.progress, || self.target.describe()).await
    }

    fn pending_reason(&self) -> Option<String> {
        self.pending.lock().expect("pending").clone()
    }

    /// Deletes the top object with foreground propagation and the pods with the grace
    /// period; the execution ends when they are gone.
    async fn stop(&self, grace: Duration) -> Result<(), RunnerError> {
        self.stopping.store(true, Ordering::SeqCst);
        let secs = u32::try_from(grace.as_secs()).unwrap_or(u32::MAX);
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Foreground),
            grace_period_seconds: Some(secs),
            ..DeleteParams::default()
        };
        api::delete_named(
            &self.target.top(),
            &self.target.name,
            &dp,
            &self.target.describe(),
        )
        .await?;
        // The owner's grace period does not reach its pods: give it to them directly.
        let pod_dp = DeleteParams {
            grace_period_seconds: Some(secs),
            ..DeleteParams::default()
        };
        let pods = self.target.pods();
        let lp = kube::api::ListParams::default().labels(&self.target.selector);
        if let Err(e) = pods.delete_collection(&pod_dp, &lp).await
            && api::status_code(&e) != Some(404)
        {
            return Err(api::api_error(
                format!("deleting the pods of {}", self.target.describe()),
                e,
            ));
        }
        Ok(())
    }

    /// Ends the watchers and followers, then deletes the run's objects (background
    /// propagation: the pods go with their owner).
    async fn cleanup(&self) {
        self.cancel.cancel();
        let task = self.task.lock().expect("task").take();
        if let Some(t) = task {
            let _ = t.await;
        }
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        if let Err(e) = self.target.delete_all(&dp).await {
            tracing::warn!(message = "Could not delete a run's Kubernetes objects; the agent's next start deletes them.", objects = %self.target.describe(), error = %e);
        }
    }
}

impl Drop for KubeExecution {
    fn drop(&mut self) {
        // Ends the watchers and followers (what runs in the cluster is left as it is).
        self.cancel.cancel();
    }
}

struct Supervisor {
    target: Target,
    sink: LogSink,
    resume: Arc<Mutex<LogResume>>,
    tx: watch::Sender<Progress>,
    stopping: Arc<AtomicBool>,
    pending: Arc<Mutex<Option<String>>>,
    cancel: CancellationToken,
    /// The run's pods as last seen, by name.
    pods: BTreeMap<String, Pod>,
    /// What the followers of a pod's containers see of it (`None`: deleted).
    pod_states: HashMap<String, watch::Sender<Option<Pod>>>,
    /// `pod/container` with a follower.
    followed: HashSet<String>,
    followers: JoinSet<()>,
    /// Since when a pod keeps failing to start its containers.
    failing_since: Option<tokio::time::Instant>,
    /// Warnings written once each.
    warned: HashSet<String>,
    disrupted: Option<String>,
    /// When the disruption was seen.
    disrupted_at: Option<tokio::time::Instant>,
    /// When the top object was created: pods created before it belong to an earlier
    /// attempt of the run (being deleted) and are ignored.
    top_created: Option<jiff::Timestamp>,
    /// Pods deleted before they ended, judged once the top object is known.
    deleted: Vec<Pod>,
}

/// What to do after a watcher's error.
enum Watching {
    /// Start a new watcher (it lists first).
    Relist,
    /// The watcher backs off and tries again itself.
    Retry,
    End(End),
}

/// How long a new watcher waits before listing after a plain HTTP 410 (a server that
/// keeps answering so is not hammered).
const RELIST_AFTER_410: Duration = Duration::from_secs(1);

type Events<K> = futures::stream::BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>;

/// The watcher of the run's top object (by name), starting after `delay`.
fn top_watch(target: &Target, delay: Duration) -> Events<DynamicObject> {
    let cfg = watcher::Config::default().fields(&format!("metadata.name={}", target.name));
    delayed(delay, watcher(target.top(), cfg).default_backoff())
}

/// The watcher of the run's pods (by label), starting after `delay`.
fn pod_watch(target: &Target, delay: Duration) -> Events<Pod> {
    let cfg = watcher::Config::default().labels(&target.selector);
    delayed(delay, watcher(target.pods(), cfg).default_backoff())
}

fn delayed<S>(delay: Duration, s: S) -> futures::stream::BoxStream<'static, S::Item>
where
    S: futures::Stream + Send + 'static,
{
    if delay.is_zero() {
        return s.boxed();
    }
    futures::stream::once(async move {
        tokio::time::sleep(delay).await;
        s
    })
    .flatten()
    .boxed()
}

/// How the supervision ends.
enum End {
    Exit(Exit),
    /// The top object failed: the exit is worked out from the pods' final statuses.
    TopFailed {
        reason: String,
        message: String,
    },
    Lost(RunnerError),
}

impl Supervisor {
    async fn run(mut self) {
        let mut top = top_watch(&self.target, Duration::ZERO);
        let mut pods = pod_watch(&self.target, Duration::ZERO);
        let mut top_status = TopStatus::Pending;
        let mut top_seen = false;
        let mut top_gone = false;
        // The pods of the listing in progress (after a 410, the watcher lists again:
        // pods not in the new list went while nobody watched).
        let mut pods_listed: Option<HashSet<String>> = None;
        let end = loop {
            let fail_at = self.failing_since.map(|t| t + START_FAILURE_WINDOW);
            let settle_at = self.disrupted_at.map(|t| t + DISRUPTION_SETTLE);
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                ev = top.next() => match ev {
                    Some(Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o))) => {
                        top_seen = true;
                        if let Some(t) = &o.metadata.creation_timestamp {
                            self.top_created = Some(t.0);
                        }
                        let v = serde_json::to_value(&o).unwrap_or(Value::Null);
                        top_status = status::custom_status(&self.target.api_version, &self.target.kind_name, &v);
                    }
                    Some(Ok(watcher::Event::Delete(_))) => top_gone = true,
                    Some(Ok(watcher::Event::InitDone)) => {
                        // Listed and not there: deleted while nobody watched.
                        if !top_seen {
                            top_gone = true;
                        }
                    }
                    Some(Ok(watcher::Event::Init)) => top_seen = false,
                    Some(Err(e)) => match self.watch_failed(e, &self.target.top()) {
                        Watching::Relist => top = top_watch(&self.target, RELIST_AFTER_410),
                        Watching::Retry => continue,
                        Watching::End(end) => break end,
                    },
                    None => break End::Lost(RunnerError::Gone(format!("the watch of {} ended", self.target.describe()))),
                },
                ev = pods.next() => match ev {
                    Some(Ok(watcher::Event::Apply(p))) => self.saw_pod(p),
                    Some(Ok(watcher::Event::InitApply(p))) => {
                        let name = p.metadata.name.clone().unwrap_or_default();
                        if let Some(listed) = pods_listed.as_mut() {
                            listed.insert(name);
                        }
                        self.saw_pod(p);
                    }
                    Some(Ok(watcher::Event::Init)) => pods_listed = Some(HashSet::new()),
                    Some(Ok(watcher::Event::InitDone)) => {
                        // Pods that went while the watch was down are forgotten: how
                        // they ended is not known, the top object's status says how
                        // the run did.
                        if let Some(listed) = pods_listed.take() {
                            self.pods.retain(|name, _| listed.contains(name));
                            for (name, tx) in &self.pod_states {
                                if !listed.contains(name) {
                                    tx.send_replace(None);
                                }
                            }
                        }
                    }
                    Some(Ok(watcher::Event::Delete(p))) => {
                        let name = p.metadata.name.clone().unwrap_or_default();
                        self.pods.remove(&name);
                        if let Some(tx) = self.pod_states.get(&name) {
                            tx.send_replace(None);
                        }
                        if !self.stopping.load(Ordering::SeqCst) && !pod_done(&p) {
                            self.deleted.push(p);
                        }
                    }
                    Some(Err(e)) => match self.watch_failed(e, &self.target.pods()) {
                        Watching::Relist => pods = pod_watch(&self.target, RELIST_AFTER_410),
                        Watching::Retry => continue,
                        Watching::End(end) => break end,
                    },
                    None => break End::Lost(RunnerError::Gone(format!("the watch of the pods of {} ended", self.target.describe()))),
                },
                _ = sleep_until_opt(fail_at) => {}
                _ = sleep_until_opt(settle_at) => {}
            }
            if let Some(end) = self.evaluate(&top_status, top_gone) {
                break end;
            }
        };
        self.finish(end).await;
    }

    /// What a watcher's error means. A 410 on the watch request itself (kube-runtime
    /// only relists after a 410 `ERROR` event; on a plain HTTP 410 it would retry the
    /// expired version forever): a new watcher, which lists again. A 403 (list or
    /// watch): the run cannot be supervised, the end. Anything else: the watcher backs
    /// off and tries again.
    fn watch_failed<K: kube::Resource>(&self, e: watcher::Error, api: &Api<K>) -> Watching {
        use watcher::Error as W;
        let (verb, cause) = match e {
            W::WatchStartFailed(k) if api::status_code(&k) == Some(410) => {
                tracing::info!(message = "A watch was answered 410 Gone; listing again.", objects = %self.target.describe(), error = %k);
                return Watching::Relist;
            }
            W::InitialListFailed(k) if api::status_code(&k) == Some(403) => ("list", k),
            W::WatchStartFailed(k) | W::WatchFailed(k) if api::status_code(&k) == Some(403) => {
                ("watch", k)
            }
            W::WatchError(s) if s.code == 403 => ("watch", kube::Error::Api(s)),
            other => {
                tracing::warn!(message = "Watching a run's objects failed; retrying.", objects = %self.target.describe(), error = %other);
                return Watching::Retry;
            }
        };
        Watching::End(End::Lost(api::forbidden(
            verb,
            api.resource_url(),
            &self.target.namespace,
            format!("supervising {}", self.target.describe()),
            cause,
        )))
    }

    /// After each event: what the pods and the top object say.
    fn evaluate(&mut self, top: &TopStatus, top_gone: bool) -> Option<End> {
        let stopping = self.stopping.load(Ordering::SeqCst);
        let mut any_running = false;
        let mut failure: Option<String> = None;
        let mut to_follow = Vec::new();
        // Nothing is judged before the top object is known (its creation time tells
        // this attempt's pods from an earlier one's).
        if self.top_created.is_none() && !top_gone {
            return None;
        }
        // Deleted, not by hoist, before they ended: a disruption (a drain, an eviction
        // through the API, a person).
        let mut disruptions = Vec::new();
        for p in std::mem::take(&mut self.deleted) {
            if self.current(&p) {
                disruptions.push(p.metadata.name.clone().unwrap_or_default());
            }
        }
        for p in self.pods.values() {
            if p.metadata.deletion_timestamp.is_some() && !pod_done(p) && self.current(p) {
                disruptions.push(p.metadata.name.clone().unwrap_or_default());
            }
        }
        if !stopping {
            for name in disruptions {
                self.disrupt(format!("pod {name} was deleted before it ended"));
            }
        }
        let views: Vec<(String, status::PodView)> = self
            .pods
            .iter()
            .filter(|(_, p)| self.current(p))
            .map(|(n, p)| {
                (
                    n.clone(),
                    status::pod_view(&serde_json::to_value(p).unwrap_or(Value::Null)),
                )
            })
            .collect();
        for (name, view) in &views {
            if view.running || !view.ended.is_empty() {
                any_running = true;
            }
            if let Some((reason, message)) = &view.start_failure {
                failure.get_or_insert(format!(
                    "pod {name} cannot start its containers: {reason}: {message}"
                ));
            }
            if let Some(msg) = &view.unschedulable {
                let warning = format!("pod {name} cannot be scheduled: {msg}");
                *self.pending.lock().expect("pending") = Some(warning.clone());
                if self.warned.insert(warning.clone()) {
                    self.sink.warn(&format!(
                        "{warning} (the run stays starting until it is scheduled or start_timeout fires)"
                    ));
                }
            }
            if let Some(d) = &view.disrupted
                && !stopping
            {
                self.disrupt(format!("pod {name} was disrupted: {d}"));
            }
            if let Some(pod) = self.pods.get(name) {
                for c in started_containers(pod) {
                    to_follow.push((name.clone(), c));
                }
            }
        }
        for (pod, c) in to_follow {
            self.follow(&pod, &c);
        }
        let running_unset = self.tx.borrow().running.is_none();
        if running_unset {
            if any_running {
                *self.pending.lock().expect("pending") = None;
                self.tx.send_modify(|p| p.running = Some(Ok(())));
            } else if let Some(f) = failure {
                let since = *self
                    .failing_since
                    .get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= START_FAILURE_WINDOW {
                    self.tx.send_modify(|p| {
                        p.running = Some(Err(Arc::new(RunnerError::start(f))));
                    });
                }
            } else {
                self.failing_since = None;
            }
        }
        if self.tx.borrow().running.is_some() {
            // Decided: no start-failure deadline to wake up for.
            self.failing_since = None;
        }
        if stopping {
            if top_gone && self.pods.is_empty() {
                return Some(End::Exit(Exit::Failed {
                    reason: format!("{} and its pods deleted", self.target.describe()),
                    code: self.last_failed_code(&views),
                }));
            }
            return None;
        }
        if let Some(d) = self.disrupted.clone() {
            return match top {
                TopStatus::Succeeded => Some(End::Exit(Exit::Code(0))),
                TopStatus::Failed { reason, message } if reason == "DeadlineExceeded" => {
                    Some(End::TopFailed {
                        reason: reason.clone(),
                        message: message.clone(),
                    })
                }
                // The disrupted pod counted as a failure (a Job with `backoffLimit: 0`).
                TopStatus::Failed { .. } => Some(End::Exit(Exit::Preempted { reason: d })),
                _ if top_gone => Some(End::Lost(RunnerError::Gone(format!(
                    "{} was deleted outside hoist",
                    self.target.describe()
                )))),
                _ if self
                    .disrupted_at
                    .is_some_and(|t| t.elapsed() >= DISRUPTION_SETTLE) =>
                {
                    Some(End::Exit(Exit::Preempted { reason: d }))
                }
                _ => None,
            };
        }
        match top {
            TopStatus::Succeeded => return Some(End::Exit(Exit::Code(0))),
            TopStatus::Failed { reason, message } => {
                return Some(End::TopFailed {
                    reason: reason.clone(),
                    message: message.clone(),
                });
            }
            TopStatus::Pending | TopStatus::Running => {}
        }
        if top_gone {
            return Some(End::Lost(RunnerError::Gone(format!(
                "{} was deleted outside hoist",
                self.target.describe()
            ))));
        }
        None
    }

    /// True when `pod` belongs to this attempt: created no earlier than the top object
    /// (timestamps have whole seconds; an earlier attempt's object was deleted before
    /// this one was created).
    fn current(&self, pod: &Pod) -> bool {
        match (&self.top_created, &pod.metadata.creation_timestamp) {
            (Some(top), Some(p)) => p.0 >= *top,
            _ => true,
        }
    }

    /// Records the first disruption seen.
    fn disrupt(&mut self, why: String) {
        if self.disrupted.is_none() {
            self.disrupted = Some(why);
            self.disrupted_at = Some(tokio::time::Instant::now());
        }
    }

    fn last_failed_code(&self, views: &[(String, status::PodView)]) -> Option<i32> {
        views
            .iter()
            .flat_map(|(_, v)| v.ended.iter())
            .find(|e| e.exit_code != 0)
            .map(|e| e.exit_code)
    }

    /// A failed top object: the failing container's exit code and reason when a pod
    /// shows one.
    fn failed(&self, reason: &str, message: &str, views: &[(String, status::PodView)]) -> Exit {
        let ended = views
            .iter()
            .flat_map(|(_, v)| v.ended.iter())
            .find(|e| e.exit_code != 0);
        let top = if message.is_empty() {
            reason.to_string()
        } else {
            format!("{reason}: {message}")
        };
        match ended {
            Some(e) => {
                let why = match e.reason.as_deref() {
                    None | Some("" | "Error") => format!("ended with exit code {}", e.exit_code),
                    Some(r) => format!("{r} (exit code {})", e.exit_code),
                };
                Exit::Failed {
                    reason: format!(
                        "{} {}/{}: container {} of pod {} {why}",
                        self.target.kind_name,
                        self.target.namespace,
                        self.target.name,
                        e.container,
                        e.pod
                    ) + &format!("; {top}"),
                    code: Some(e.exit_code),
                }
            }
            None => Exit::Failed {
                reason: format!("{} failed: {top}", self.target.describe()),
                code: None,
            },
        }
    }

    /// Records a pod as seen, and tells its followers.
    fn saw_pod(&mut self, p: Pod) {
        let name = p.metadata.name.clone().unwrap_or_default();
        if let Some(tx) = self.pod_states.get(&name) {
            tx.send_replace(Some(p.clone()));
        }
        self.pods.insert(name, p);
    }

    fn follow(&mut self, pod: &str, container: &str) {
        let key = format!("{pod}/{container}");
        if !self.followed.insert(key.clone()) {
            return;
        }
        // Several containers: each line names its source (`[pod/container] `), and each
        // follower resumes after its own source's last line on the server. One
        // container: the stream-wide point, shared by the pods of later attempts.
        let (prefix, resume) = if self.target.prefixed {
            let own = self.resume.lock().expect("resume").for_source(&key);
            (source_prefix(&key), Arc::new(Mutex::new(own)))
        } else {
            (String::new(), self.resume.clone())
        };
        let f = Follower {
            pods: self.target.pods(),
            pod: pod.to_string(),
            container: container.to_string(),
            prefix,
            sink: self.sink.clone(),
            resume,
            cancel: self.cancel.clone(),
            pod_state: self
                .pod_states
                .entry(pod.to_string())
                .or_insert_with(|| watch::channel(self.pods.get(pod).cloned()).0)
                .subscribe(),
        };
        self.followers.spawn(f.run());
    }

    /// Reads every container's log to its end, then publishes the end.
    async fn finish(mut self, end: End) {
        // The pods as they are now: the watch may lag behind the top object's status
        // (a pod that ran and ended in between must still have its log read).
        let lp = kube::api::ListParams::default().labels(&self.target.selector);
        match self.target.pods().list(&lp).await {
            Ok(list) => {
                for p in list.items {
                    self.saw_pod(p);
                }
            }
            Err(e) => {
                tracing::warn!(message = "Could not list a run's pods at its end; following the pods already seen.", objects = %self.target.describe(), error = %e);
            }
        }
        let end = match end {
            End::TopFailed { reason, message } => {
                let views: Vec<(String, status::PodView)> = self
                    .pods
                    .iter()
                    .filter(|(_, p)| self.current(p))
                    .map(|(n, p)| {
                        (
                            n.clone(),
                            status::pod_view(&serde_json::to_value(p).unwrap_or(Value::Null)),
                        )
                    })
                    .collect();
                End::Exit(self.failed(&reason, &message, &views))
            }
            other => other,
        };
        // Containers that ended since the last look.
        let names: Vec<(String, Vec<String>)> = self
            .pods
            .iter()
            .filter(|(_, p)| self.current(p))
            .map(|(n, p)| (n.clone(), started_containers(p)))
            .collect();
        for (pod, cs) in names {
            for c in cs {
                self.follow(&pod, &c);
            }
        }
        // A run that ended by its top object's status has its containers ended: their
        // logs end. A preemption or a lost object may leave containers running (a
        // replacement pod): their logs are read for a moment only.
        let drain = match &end {
            End::Exit(Exit::Preempted { .. }) | End::Lost(_) => PARTIAL_LOG_DRAIN,
            _ => LOG_DRAIN,
        };
        let drained = tokio::select! {
            r = tokio::time::timeout(drain, async {
                while self.followers.join_next().await.is_some() {}
            }) => r.is_ok(),
            _ = self.cancel.cancelled() => return,
        };
        if !drained {
            if drain == LOG_DRAIN {
                self.sink.system(&format!(
                    "[hoist: the logs of {} did not end within {}s of the run's end; they may be incomplete]",
                    self.target.describe(),
                    LOG_DRAIN.as_secs()
                ));
            }
            self.followers.abort_all();
        }
        let result = match end {
            End::Exit(e) => Ok(e),
            End::Lost(e) => Err(Arc::new(e)),
            End::TopFailed { reason, .. } => Ok(Exit::Failed { reason, code: None }),
        };
        self.tx.send_modify(|p| {
            if p.running.is_none() {
                // Ended before it ran (a start failure is reported by `wait`).
                p.running = Some(match &result {
                    Ok(_) => Ok(()),
                    Err(e) => Err(e.clone()),
                });
            }
            p.exit = Some(result);
        });
        // Keep the channel open until the execution is done with it.
        self.cancel.cancelled().await;
    }
}

/// A pod that ended on its own (its phase is final).
fn pod_done(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|ph| ph == "Succeeded" || ph == "Failed")
}

/// The containers of `pod` that started (running or ended): their logs can be read.
fn started_containers(pod: &Pod) -> Vec<String> {
    let Some(st) = pod.status.as_ref() else {
        return Vec::new();
    };
    st.init_container_statuses
        .iter()
        .flatten()
        .chain(st.container_statuses.iter().flatten())
        .filter(|c| {
            c.state
                .as_ref()
                .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
        })
        .map(|c| c.name.clone())
        .collect()
}

async fn sleep_until_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Whether a run's log lines get a `[pod/container]` prefix: when it may have more
/// than one container (a Job with parallelism or completions above one, a pod template
/// with several containers or init containers, any custom object).
pub fn prefixed(api_version: &str, kind: &str, object: &Value) -> bool {
    if !(api_version == "batch/v1" && kind == "Job") {
        return true;
    }
    let n = |p: &str| object.pointer(p).and_then(Value::as_i64).unwrap_or(1);
    if n("/spec/parallelism") > 1 || n("/spec/completions") > 1 {
        return true;
    }
    let count = |p: &str| {
        object
            .pointer(p)
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    };
    count("/spec/template/spec/containers") + count("/spec/template/spec/initContainers") > 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_are_prefixed_when_a_run_may_have_several_containers() {
        let job = |spec: Value| json!({"spec": spec});
        let one = job(json!({"template": {"spec": {"containers": [{"name": "main"}]}}}));
        assert!(!prefixed("batch/v1", "Job", &one));
        let par = job(
            json!({"parallelism": 2, "template": {"spec": {"containers": [{"name": "main"}]}}}),
        );
        assert!(prefixed("batch/v1", "Job", &par));
        let comp = job(
            json!({"completions": 3, "template": {"spec": {"containers": [{"name": "main"}]}}}),
        );
        assert!(prefixed("batch/v1", "Job", &comp));
        let two = job(json!({"template": {"spec": {
            "initContainers": [{"name": "fetch"}], "containers": [{"name": "main"}]}}}));
        assert!(prefixed("batch/v1", "Job", &two));
        assert!(prefixed("kubeflow.org/v1", "PyTorchJob", &one));
    }
}
