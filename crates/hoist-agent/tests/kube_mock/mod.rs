//! A scripted Kubernetes API server, for the error paths a real cluster gives rarely
//! (a 410 in the middle of a watch, a 409 on create, a 403, a 503).
//!
//! Plain HTTP on 127.0.0.1:0, speaking the API server's wire protocol for what the
//! runner sends (as kube-rs sends it), with an object store behind it:
//!
//! - discovery: `/version`, `/api`, `/apis`, `/api/v1`, `/apis/GROUP/VERSION` (`batch/v1`
//!   and the custom groups a test installs with [`KubeMock::install_crd`]); a group the
//!   server does not serve is a 404 `Status`.
//! - objects: create (201; `dryRun=All` stores nothing; a name taken is a 409
//!   `AlreadyExists`), get, list (with the list's `resourceVersion`), merge patch,
//!   delete (propagation `Foreground`/`Background` delete the dependents by owner
//!   uid; `Orphan`, batch/v1's default, leaves them), deletecollection; label and field
//!   selectors; Secrets' `stringData` becomes `data`. Errors are `Status` objects
//!   (`kind: Status`, `reason`, `code`, `details`) worded as the API server words them.
//! - watches (`watch=true`): newline-delimited `{"type":…,"object":…}` events, from a
//!   `resourceVersion` (events after it are replayed) or from `0` (the current objects as
//!   `ADDED`); `timeoutSeconds` ends the stream. [`KubeMock::expire_watches`] compacts the
//!   history (every older `resourceVersion` is too old from then on) and ends the open
//!   watches with an `ERROR` event holding a 410 `Expired` Status, or by closing them,
//!   after which a watch from a too-old version is answered with a plain HTTP 410.
//!   [`KubeMock::freeze_watches`] makes the events that follow reach no watch (as when a
//!   watch falls behind, before the server expires it).
//! - `pods/NAME/log` (`container`, `follow`, `timestamps`, `sinceTime`): the lines a test
//!   wrote with [`KubeMock::log`], followed until [`KubeMock::end_log`]; a container that
//!   has not started is a 400 as the kubelet says it.
//!
//! A script ([`KubeMock::on`]) answers chosen requests instead ([`Rule`], [`Reply`]);
//! every request is recorded ([`KubeMock::requests`]) for assertions. There is no
//! controller: the test creates a Job's pods and sets their status (helpers below).
//! Requests must carry the kubeconfig's bearer token ([`TOKEN`]), else 401.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State as AxState;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use chrono::{DateTime, SecondsFormat, Utc};
use hoist_agent::config::KubernetesSettings;
use hoist_agent::runners::kubernetes::{Cluster, KubernetesRunner};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// The bearer token of the mock's kubeconfig.
pub const TOKEN: &str = "mock-bearer-token";
/// The namespace of the kubeconfig's context (the runs' default namespace).
pub const NAMESPACE: &str = "hoist-runs";
/// How long the waits of this module wait.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A kind the server serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub kind: String,
    pub namespaced: bool,
    /// `log`, `status`.
    pub subresources: Vec<String>,
}

impl Resource {
    fn new(
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
        subs: &[&str],
    ) -> Self {
        Resource {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            kind: kind.into(),
            namespaced,
            subresources: subs.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `jobs.batch`, `pods`: how the API server names the resource in messages.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `/apis/batch/v1/namespaces/NS/jobs`, `/api/v1/pods` (no namespace).
    pub fn collection(&self, ns: Option<&str>) -> String {
        let base = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match ns {
            Some(ns) if self.namespaced => format!("{base}/namespaces/{ns}/{}", self.plural),
            _ => format!("{base}/{}", self.plural),
        }
    }

    fn details(&self, name: &str) -> Value {
        let mut d = json!({"name": name, "kind": self.plural});
        if !self.group.is_empty() {
            d["group"] = json!(self.group);
        }
        d
    }
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Request {
    pub seq: usize,
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub body: Option<Value>,
    /// The HTTP status answered (0 while a stream is being set up).
    pub status: u16,
}

impl Request {
    pub fn is(&self, method: &str, path: &str) -> bool {
        self.method == method && self.path == path
    }

    pub fn is_watch(&self) -> bool {
        matches!(
            self.query.get("watch").map(String::as_str),
            Some("true" | "1")
        )
    }

    /// A GET of a collection that is not a watch (the caller says which path).
    pub fn is_list_of(&self, collection: &str) -> bool {
        self.is("GET", collection) && !self.is_watch()
    }

    pub fn summary(&self) -> String {
        let q: Vec<String> = self.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(
            "#{} {} {}?{} -> {}",
            self.seq,
            self.method,
            self.path,
            q.join("&"),
            self.status
        )
    }
}

/// What a scripted request gets.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A `Status` object with this HTTP code.
    Status {
        code: u16,
        reason: String,
        message: String,
        details: Option<Value>,
    },
    /// A body that is not JSON (a proxy's error page).
    Text { code: u16, body: String },
    /// The request is carried out as usual, and its answer replaced by this one (a
    /// create whose answer was lost on the way back).
    AfterEffect(Box<Reply>),
}

impl Reply {
    pub fn status(code: u16, reason: &str, message: &str) -> Reply {
        Reply::Status {
            code,
            reason: reason.into(),
            message: message.into(),
            details: None,
        }
    }

    /// A 403 as the API server's RBAC authorizer words it.
    pub fn forbidden(verb: &str, res: &Resource, ns: &str, name: Option<&str>) -> Reply {
        let user = "system:serviceaccount:hoist:hoist-agent";
        let subject = match name {
            Some(n) => format!("{} \"{n}\"", res.group_resource()),
            None => res.group_resource(),
        };
        let resource = if verb == "get" && name.is_some() && res.plural == "pods" {
            // A log read is `get` on the subresource.
            "pods/log".to_string()
        } else {
            res.plural.clone()
        };
        Reply::Status {
            code: 403,
            reason: "Forbidden".into(),
            message: format!(
                "{subject} is forbidden: User \"{user}\" cannot {verb} resource \"{resource}\" in API group \"{}\" in the namespace \"{ns}\"",
                res.group
            ),
            details: Some(res.details(name.unwrap_or(""))),
        }
    }

    pub fn unavailable() -> Reply {
        Reply::status(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        )
    }

    pub fn internal_error() -> Reply {
        Reply::status(
            500,
            "InternalError",
            "Internal error occurred: etcdserver: request timed out",
        )
    }
}

/// Which requests a [`Rule`] answers.
#[derive(Clone, Debug)]
pub struct Rule {
    pub method: Method,
    /// The exact path, or a prefix ending in `*`.
    pub path: String,
    /// Only watches (`Some(true)`), only other requests (`Some(false)`), or both.
    pub watch: Option<bool>,
    /// How many matching requests it answers (`None`: all of them).
    pub times: Option<usize>,
    pub reply: Reply,
}

impl Rule {
    pub fn new(method: Method, path: impl Into<String>, reply: Reply) -> Rule {
        Rule {
            method,
            path: path.into(),
            watch: None,
            times: None,
            reply,
        }
    }

    pub fn times(mut self, n: usize) -> Rule {
        self.times = Some(n);
        self
    }

    pub fn watches_only(mut self) -> Rule {
        self.watch = Some(true);
        self
    }

    fn matches(&self, method: &Method, path: &str, watch: bool) -> bool {
        let path_ok = match self.path.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == self.path,
        };
        *method == self.method
            && path_ok
            && self.watch.is_none_or(|w| w == watch)
            && self.times != Some(0)
    }
}

/// How a watch from a compacted `resourceVersion` is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// HTTP 200, then one `ERROR` event holding a 410 `Expired` Status (what an API
    /// server does for a watch it serves from its cache or etcd).
    ErrorEvent,
    /// A plain HTTP 410 `Gone` on the watch request itself.
    Http410,
}

struct Watch {
    id: u64,
    res: Resource,
    ns: Option<String>,
    labels: Option<String>,
    fields: Option<String>,
    tx: mpsc::UnboundedSender<Bytes>,
}

#[derive(Clone)]
struct Event {
    rv: u64,
    res: Resource,
    ns: String,
    kind: &'static str,
    obj: Value,
}

#[derive(Default)]
struct LogBuf {
    lines: Vec<(DateTime<Utc>, String)>,
    ended: bool,
    subs: Vec<mpsc::UnboundedSender<Bytes>>,
}

struct Store {
    rv: u64,
    compacted: u64,
    expiry: Expiry,
    frozen: bool,
    resources: Vec<Resource>,
    /// (group/plural, namespace, name) → object.
    objects: BTreeMap<(String, String, String), Value>,
    history: Vec<Event>,
    watches: Vec<Watch>,
    next_watch: u64,
    /// (namespace, pod, container) → its log.
    logs: BTreeMap<(String, String, String), LogBuf>,
    rules: Vec<Rule>,
    requests: Vec<Request>,
    uids: u64,
}

type Shared = Arc<Mutex<Store>>;

/// The mock server; stopped when dropped.
pub struct KubeMock {
    store: Shared,
    pub url: String,
    dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KubeMock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn core(plural: &str, kind: &str, namespaced: bool, subs: &[&str]) -> Resource {
    Resource::new("", "v1", plural, kind, namespaced, subs)
}

pub fn pods() -> Resource {
    core("pods", "Pod", true, &["log", "status"])
}

pub fn secrets() -> Resource {
    core("secrets", "Secret", true, &[])
}

pub fn jobs() -> Resource {
    Resource::new("batch", "v1", "jobs", "Job", true, &["status"])
}

impl KubeMock {
    pub async fn start() -> KubeMock {
        let store = Arc::new(Mutex::new(Store {
            rv: 100,
            compacted: 0,
            expiry: Expiry::ErrorEvent,
            frozen: false,
            resources: vec![
                core("namespaces", "Namespace", false, &[]),
                pods(),
                secrets(),
                core("configmaps", "ConfigMap", true, &[]),
                core("serviceaccounts", "ServiceAccount", true, &[]),
                jobs(),
            ],
            objects: BTreeMap::new(),
            history: Vec::new(),
            watches: Vec::new(),
            next_watch: 0,
            logs: BTreeMap::new(),
            rules: Vec::new(),
            requests: Vec::new(),
            uids: 0,
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().fallback(handle).with_state(store.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("http://{addr}");
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: mock\n  cluster:\n    server: {url}\nusers:\n- name: agent\n  user:\n    token: {TOKEN}\ncontexts:\n- name: mock\n  context:\n    cluster: mock\n    user: agent\n    namespace: {NAMESPACE}\ncurrent-context: mock\n"
        );
        std::fs::write(dir.path().join("kubeconfig"), kubeconfig).expect("kubeconfig");
        let mock = KubeMock {
            store,
            url,
            dir,
            task,
        };
        mock.put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}));
        mock
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// Agent settings that point at this server through its kubeconfig.
    pub fn settings(&self) -> KubernetesSettings {
        KubernetesSettings {
            kubeconfig: Some(self.kubeconfig()),
            ..KubernetesSettings::default()
        }
    }

    /// A runner configured the way the agent configures one.
    pub async fn runner(&self) -> KubernetesRunner {
        let settings = self.settings();
        let cluster = Cluster::connect(&settings)
            .await
            .expect("the mock's kubeconfig loads");
        assert_eq!(cluster.default_namespace, NAMESPACE);
        cluster.check().await.expect("the mock answers /version");
        KubernetesRunner::new(cluster, settings, false)
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().expect("mock store")
    }

    /// Serves a custom kind (as an installed CRD does).
    pub fn install_crd(&self, group: &str, version: &str, plural: &str, kind: &str) -> Resource {
        let r = Resource::new(group, version, plural, kind, true, &["status"]);
        self.lock().resources.push(r.clone());
        r
    }

    /// Answers the next matching requests with the rule's reply (rules are tried in
    /// the order they were added).
    pub fn on(&self, rule: Rule) {
        self.lock().rules.push(rule);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    pub fn count(&self, f: impl Fn(&Request) -> bool) -> usize {
        self.lock().requests.iter().filter(|r| f(r)).count()
    }

    /// Every request, one per line, for assertion messages.
    pub fn journal(&self) -> String {
        self.lock()
            .requests
            .iter()
            .map(Request::summary)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until a request (answered) satisfies `f`; returns it.
    pub async fn wait_request(&self, what: &str, f: impl Fn(&Request) -> bool) -> Request {
        let f = &f;
        self.wait_for(what, || {
            self.lock()
                .requests
                .iter()
                .find(|r| r.status != 0 && f(r))
                .cloned()
        })
        .await
    }

    /// Polls `f` until it gives a value, within [`DEADLINE`].
    pub async fn wait_for<T>(&self, what: &str, f: impl Fn() -> Option<T>) -> T {
        let t0 = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                t0.elapsed() < DEADLINE,
                "timed out waiting for {what}; requests so far:\n{}",
                self.journal()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The number of open watches on `res`.
    pub fn open_watches(&self, res: &Resource) -> usize {
        let mut st = self.lock();
        st.watches.retain(|w| !w.tx.is_closed());
        st.watches.iter().filter(|w| w.res == *res).count()
    }

    pub async fn wait_watching(&self, res: &Resource) {
        self.wait_for(&format!("a watch on {}", res.group_resource()), || {
            (self.open_watches(res) > 0).then_some(())
        })
        .await
    }

    // ---- the object store, as a test (or a controller) changes it ----

    fn resource_of(&self, obj: &Value) -> Resource {
        let av = obj["apiVersion"].as_str().unwrap_or("");
        let kind = obj["kind"].as_str().unwrap_or("");
        self.lock()
            .resources
            .iter()
            .find(|r| r.api_version() == av && r.kind == kind)
            .cloned()
            .unwrap_or_else(|| panic!("the mock serves no {av} {kind}"))
    }

    /// Creates or replaces an object (its `apiVersion`/`kind` say where it goes);
    /// watches see `ADDED`/`MODIFIED`. Returns it as stored.
    pub fn put(&self, mut obj: Value) -> Value {
        let res = self.resource_of(&obj);
        let ns = if res.namespaced {
            obj.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or(NAMESPACE)
                .to_string()
        } else {
            String::new()
        };
        let name = obj["metadata"]["name"]
            .as_str()
            .expect("a name")
            .to_string();
        let mut st = self.lock();
        let key = (res.group_resource(), ns.clone(), name);
        let existed = st.objects.get(&key).cloned();
        match &existed {
            Some(old) => {
                obj["metadata"]["uid"] = old["metadata"]["uid"].clone();
                obj["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
            }
            None => fill_new_metadata(&mut st, &mut obj, &ns),
        }
        st.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
        st.objects.insert(key, obj.clone());
        let kind = if existed.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        emit(&mut st, &res, &ns, kind, &obj);
        obj
    }

    pub fn get(&self, res: &Resource, ns: &str, name: &str) -> Option<Value> {
        let ns = if res.namespaced { ns } else { "" };
        self.lock()
            .objects
            .get(&(res.group_resource(), ns.to_string(), name.to_string()))
            .cloned()
    }

    /// The objects of a kind in `ns`, by name.
    pub fn list(&self, res: &Resource, ns: &str) -> Vec<Value> {
        let gr = res.group_resource();
        self.lock()
            .objects
            .iter()
            .filter(|((g, n, _), _)| *g == gr && n == ns)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Changes a stored object; watches see `MODIFIED`.
    pub fn update(
        &self,
        res: &Resource,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Value {
        let mut obj = self
            .get(res, ns, name)
            .unwrap_or_else(|| panic!("no {} {ns}/{name}", res.group_resource()));
        f(&mut obj);
        self.put(obj)
    }

    /// Deletes a stored object (as someone else would); watches see `DELETED`.
    pub fn remove(&self, res: &Resource, ns: &str, name: &str) {
        let mut st = self.lock();
        delete_one(&mut st, res, ns, name, Some("Background"));
    }

    /// From now on, changes reach no open or new watch (a watch that fell behind its
    /// server's window): until [`KubeMock::expire_watches`].
    pub fn freeze_watches(&self) {
        self.lock().frozen = true;
    }

    /// Compacts the history: every `resourceVersion` seen so far is too old from now
    /// on. The open watches end: with an `ERROR` event holding a 410 `Expired` Status
    /// ([`Expiry::ErrorEvent`]), or by their connection closing, after which watching
    /// from a too-old version is a plain HTTP 410 ([`Expiry::Http410`]). Thaws frozen
    /// watches.
    pub fn expire_watches(&self, how: Expiry) {
        let mut st = self.lock();
        st.rv += 1;
        st.compacted = st.rv;
        let compacted = st.compacted;
        st.history.retain(|e| e.rv > compacted);
        st.expiry = how;
        st.frozen = false;
        let watches = std::mem::take(&mut st.watches);
        if how == Expiry::ErrorEvent {
            let line = error_event_line(compacted - 1, compacted);
            for w in &watches {
                let _ = w.tx.send(line.clone());
            }
        }
        // Dropping the senders ends the streams.
    }

    /// Ends every open watch without an error (as `timeoutSeconds` does): the client
    /// watches again from the last version it saw.
    pub fn close_watches(&self) {
        self.lock().watches.clear();
    }

    // ---- logs ----

    /// Appends a line to a container's log (stamped `ts`).
    pub fn log(&self, ns: &str, pod: &str, container: &str, ts: DateTime<Utc>, text: &str) {
        let mut st = self.lock();
        let buf = st
            .logs
            .entry((ns.into(), pod.into(), container.into()))
            .or_default();
        buf.lines.push((ts, text.to_string()));
        let line = Bytes::from(format!("{} {text}\n", stamp(ts)));
        buf.subs.retain(|s| s.send(line.clone()).is_ok());
    }

    /// The container's log ends: following streams close.
    pub fn end_log(&self, ns: &str, pod: &str, container: &str) {
        let mut st = self.lock();
        let buf = st
            .logs
            .entry((ns.into(), pod.into(), container.into()))
            .or_default();
        buf.ended = true;
        buf.subs.clear();
    }

    /// Every open log stream breaks off (its connection closes); the logs go on.
    pub fn break_log_streams(&self) {
        for buf in self.lock().logs.values_mut() {
            buf.subs.clear();
        }
    }

    pub fn open_log_streams(&self) -> usize {
        let mut st = self.lock();
        st.logs
            .values_mut()
            .map(|b| {
                b.subs.retain(|s| !s.is_closed());
                b.subs.len()
            })
            .sum()
    }

    // ---- a Job controller and a kubelet, by hand ----

    /// A pod of `job` (a stored Job): its template's labels, owned by the Job, in the
    /// given state.
    pub fn job_pod(&self, job: &Value, pod: &str, state: PodState) -> Value {
        let tpl = &job["spec"]["template"];
        let mut labels = tpl["metadata"]["labels"].clone();
        if !labels.is_object() {
            labels = json!({});
        }
        labels["job-name"] = job["metadata"]["name"].clone();
        labels["controller-uid"] = job["metadata"]["uid"].clone();
        let mut p = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod,
                "namespace": job["metadata"]["namespace"],
                "labels": labels,
                "annotations": tpl["metadata"]["annotations"],
                "ownerReferences": [{
                    "apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"],
                    "uid": job["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true,
                }],
            },
            "spec": tpl["spec"],
        });
        set_pod_state(&mut p, state);
        self.put(p)
    }

    pub fn set_pod(&self, ns: &str, pod: &str, state: PodState) -> Value {
        self.update(&pods(), ns, pod, |p| set_pod_state(p, state))
    }

    /// The Job's status says it completed.
    pub fn complete_job(&self, ns: &str, name: &str) -> Value {
        self.update(&jobs(), ns, name, |j| {
            j["status"] = json!({
                "succeeded": 1,
                "startTime": stamp_s(Utc::now()),
                "completionTime": stamp_s(Utc::now()),
                "conditions": [{"type": "Complete", "status": "True",
                    "lastProbeTime": stamp_s(Utc::now()), "lastTransitionTime": stamp_s(Utc::now())}],
            });
        })
    }

    /// The Job's status says it has an active pod.
    pub fn job_active(&self, ns: &str, name: &str) -> Value {
        self.update(&jobs(), ns, name, |j| {
            j["status"] = json!({"active": 1, "startTime": stamp_s(Utc::now())});
        })
    }
}

/// A pod's state, as its status shows it (one container per pod template container).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodState {
    /// Scheduled, containers being created.
    Creating,
    Running,
    /// Every container exited with this code (phase `Succeeded` for 0).
    Exited(i32),
}

fn set_pod_state(p: &mut Value, state: PodState) {
    let now = stamp_s(Utc::now());
    let containers: Vec<String> = p["spec"]["containers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let (phase, cstate, ready) = match state {
        PodState::Creating => (
            "Pending",
            json!({"waiting": {"reason": "ContainerCreating"}}),
            false,
        ),
        PodState::Running => ("Running", json!({"running": {"startedAt": now}}), true),
        PodState::Exited(code) => (
            if code == 0 { "Succeeded" } else { "Failed" },
            json!({"terminated": {
                "exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                "startedAt": now, "finishedAt": now,
            }}),
            false,
        ),
    };
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| {
            json!({"name": c, "state": cstate, "ready": ready, "restartCount": 0,
                "image": "hoist-test/busybox:latest", "imageID": "docker://sha256:0"})
        })
        .collect();
    p["status"] = json!({
        "phase": phase,
        "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": now}],
        "hostIP": "127.0.0.1",
        "podIP": "198.18.0.7",
        "startTime": now,
        "containerStatuses": statuses,
    });
}

/// RFC 3339 with nanoseconds, as the kubelet stamps log lines.
pub fn stamp(ts: DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn stamp_s(ts: DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn fill_new_metadata(st: &mut Store, obj: &mut Value, ns: &str) {
    st.uids += 1;
    let uid = format!("00000000-0000-4000-8000-{:012x}", st.uids);
    let meta = &mut obj["metadata"];
    if !ns.is_empty() {
        meta["namespace"] = json!(ns);
    }
    meta["uid"] = json!(uid);
    meta["creationTimestamp"] = json!(stamp_s(Utc::now()));
    if obj["kind"] == "Secret"
        && let Some(sd) = obj.as_object_mut().and_then(|o| o.remove("stringData"))
    {
        use base64::Engine;
        let data = obj
            .as_object_mut()
            .expect("object")
            .entry("data")
            .or_insert(json!({}));
        for (k, v) in sd.as_object().into_iter().flatten() {
            let s = v.as_str().unwrap_or("");
            data[k] = json!(base64::engine::general_purpose::STANDARD.encode(s));
        }
    }
}

fn error_event_line(asked: u64, current: u64) -> Bytes {
    let status = status_json(
        410,
        "Expired",
        &format!("too old resource version: {asked} ({current})"),
        None,
    );
    Bytes::from(format!("{}\n", json!({"type": "ERROR", "object": status})))
}

fn event_line(kind: &str, obj: &Value) -> Bytes {
    Bytes::from(format!("{}\n", json!({"type": kind, "object": obj})))
}

/// Records the event and sends it to the watches that see it.
fn emit(st: &mut Store, res: &Resource, ns: &str, kind: &'static str, obj: &Value) {
    let rv = st.rv;
    st.history.push(Event {
        rv,
        res: res.clone(),
        ns: ns.to_string(),
        kind,
        obj: obj.clone(),
    });
    if st.frozen {
        return;
    }
    let line = event_line(kind, obj);
    st.watches.retain(|w| {
        if w.res != *res
            || !in_scope(w.ns.as_deref(), ns)
            || !selected(obj, w.labels.as_deref(), w.fields.as_deref())
        {
            return !w.tx.is_closed();
        }
        w.tx.send(line.clone()).is_ok()
    });
}

fn in_scope(scope: Option<&str>, ns: &str) -> bool {
    scope.is_none_or(|s| s == ns)
}

/// Label selector (`a=b`, `a==b`, `a!=b`, `a`, `!a`, comma-separated) and field selector
/// (`metadata.name`, `metadata.namespace`, `=`/`==`/`!=`).
fn selected(obj: &Value, labels: Option<&str>, fields: Option<&str>) -> bool {
    let label = |k: &str| obj["metadata"]["labels"][k].as_str().map(str::to_string);
    let field = |k: &str| match k {
        "metadata.name" => obj["metadata"]["name"].as_str().map(str::to_string),
        "metadata.namespace" => obj["metadata"]["namespace"].as_str().map(str::to_string),
        other => panic!("the mock supports no field selector on {other}"),
    };
    let check = |sel: &str, get: &dyn Fn(&str) -> Option<String>| {
        sel.split(',').filter(|t| !t.is_empty()).all(|term| {
            if let Some((k, v)) = term.split_once("!=") {
                get(k.trim()).as_deref() != Some(v.trim())
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                get(k.trim()).as_deref() == Some(v.trim())
            } else if let Some(k) = term.strip_prefix('!') {
                get(k.trim()).is_none()
            } else {
                get(term.trim()).is_some()
            }
        })
    };
    labels.is_none_or(|s| check(s, &label)) && fields.is_none_or(|s| check(s, &field))
}

fn status_json(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut s = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    if let Some(d) = details {
        s["details"] = d;
    }
    s
}

fn list_response(st: &Store, res: &Resource, items: Vec<Value>) -> Response {
    json_response(
        200,
        &json!({"kind": format!("{}List", res.kind), "apiVersion": res.api_version(),
            "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
    )
}

fn json_response(code: u16, body: &Value) -> Response {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("response")
}

fn status_response(code: u16, reason: &str, message: &str, details: Option<Value>) -> Response {
    json_response(code, &status_json(code, reason, message, details))
}

fn not_found_path() -> Response {
    status_response(
        404,
        "NotFound",
        "the server could not find the requested resource",
        Some(json!({})),
    )
}

fn reply_response(r: &Reply) -> Response {
    match r {
        Reply::Status {
            code,
            reason,
            message,
            details,
        } => status_response(*code, reason, message, details.clone()),
        Reply::Text { code, body } => Response::builder()
            .status(*code)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Body::from(body.clone()))
            .expect("response"),
        Reply::AfterEffect(inner) => reply_response(inner),
    }
}

fn streaming(rx: mpsc::UnboundedReceiver<Bytes>, content_type: &str) -> Response {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from_stream(stream))
        .expect("response")
}

fn parse_query(q: &str) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Where a request goes.
enum Route {
    Version,
    CoreVersions,
    Groups,
    GroupVersion(String),
    Object {
        res: Resource,
        ns: Option<String>,
        name: Option<String>,
        sub: Option<String>,
    },
    NotFound,
}

fn route(st: &Store, path: &str) -> Route {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Route::Version,
        ["api"] => return Route::CoreVersions,
        ["apis"] => return Route::Groups,
        ["api", v] => return Route::GroupVersion((*v).to_string()),
        ["apis", g, v] => return Route::GroupVersion(format!("{g}/{v}")),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Route::NotFound,
    };
    let (ns, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_string()), rest),
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [p] => (*p, None, None),
        [p, n] => (*p, Some((*n).to_string()), None),
        [p, n, s] => (*p, Some((*n).to_string()), Some((*s).to_string())),
        _ => return Route::NotFound,
    };
    let Some(res) = st
        .resources
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
        .cloned()
    else {
        return Route::NotFound;
    };
    if sub.as_ref().is_some_and(|s| !res.subresources.contains(s)) {
        return Route::NotFound;
    }
    if ns.is_some() && !res.namespaced {
        return Route::NotFound;
    }
    Route::Object { res, ns, name, sub }
}

async fn handle(
    AxState(store): AxState<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().map(parse_query).unwrap_or_default();
    let json_body: Option<Value> = serde_json::from_slice(&body).ok();
    let seq = {
        let mut st = store.lock().expect("store");
        let seq = st.requests.len();
        st.requests.push(Request {
            seq,
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            body: json_body.clone(),
            status: 0,
        });
        seq
    };
    let resp = respond(&store, &method, &path, &query, &headers, json_body);
    store.lock().expect("store").requests[seq].status = resp.status().as_u16();
    resp
}

fn respond(
    store: &Shared,
    method: &Method,
    path: &str,
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: Option<Value>,
) -> Response {
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"));
    if !authorized {
        return status_response(401, "Unauthorized", "Unauthorized", None);
    }
    let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let scripted = {
        let mut st = store.lock().expect("store");
        st.rules
            .iter_mut()
            .find(|r| r.matches(method, path, watch))
            .map(|r| {
                if let Some(n) = r.times.as_mut() {
                    *n -= 1;
                }
                r.reply.clone()
            })
    };
    match scripted {
        Some(Reply::AfterEffect(inner)) => {
            let _ = serve(store, method, path, query, headers, body);
            reply_response(&inner)
        }
        Some(r) => reply_response(&r),
        None => serve(store, method, path, query, headers, body),
    }
}

/// What the API server does with the request.
fn serve(
    store: &Shared,
    method: &Method,
    path: &str,
    query: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: Option<Value>,
) -> Response {
    let mut st = store.lock().expect("store");
    let route = route(&st, path);
    match (route, method.as_str()) {
        (Route::Version, "GET") => json_response(
            200,
            &json!({
                "major": "1", "minor": "20", "gitVersion": "v1.20.2-mock", "gitCommit": "0",
                "gitTreeState": "clean", "buildDate": "2021-01-13T13:20:00Z",
                "goVersion": "go1.15.5", "compiler": "gc", "platform": "linux/amd64",
            }),
        ),
        (Route::CoreVersions, "GET") => json_response(
            200,
            &json!({"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}),
        ),
        (Route::Groups, "GET") => {
            let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for r in st.resources.iter().filter(|r| !r.group.is_empty()) {
                let vs = groups.entry(r.group.clone()).or_default();
                if !vs.contains(&r.version) {
                    vs.push(r.version.clone());
                }
            }
            let groups: Vec<Value> = groups
                .iter()
                .map(|(g, vs)| {
                    let versions: Vec<Value> = vs
                        .iter()
                        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                        .collect();
                    json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
                })
                .collect();
            json_response(
                200,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            )
        }
        (Route::GroupVersion(gv), "GET") => {
            let served: Vec<&Resource> = st
                .resources
                .iter()
                .filter(|r| r.api_version() == gv)
                .collect();
            if served.is_empty() {
                return not_found_path();
            }
            let verbs = json!([
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch"
            ]);
            let mut list = Vec::new();
            for r in served {
                list.push(
                    json!({"name": r.plural, "singularName": "", "namespaced": r.namespaced,
                    "kind": r.kind, "verbs": verbs}),
                );
                for s in &r.subresources {
                    let sverbs = if s == "log" {
                        json!(["get"])
                    } else {
                        json!(["get", "patch", "update"])
                    };
                    list.push(
                        json!({"name": format!("{}/{s}", r.plural), "singularName": "",
                        "namespaced": r.namespaced, "kind": r.kind, "verbs": sverbs}),
                    );
                }
            }
            json_response(
                200,
                &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
            )
        }
        (
            Route::Object {
                res,
                ns,
                name: None,
                sub: None,
            },
            "GET",
        ) => {
            let labels = query.get("labelSelector").cloned();
            let fields = query.get("fieldSelector").cloned();
            if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) {
                return start_watch(&mut st, store, &res, ns, labels, fields, query);
            }
            let items = matching(
                &st,
                &res,
                ns.as_deref(),
                labels.as_deref(),
                fields.as_deref(),
            );
            list_response(&st, &res, items)
        }
        (
            Route::Object {
                res,
                ns,
                name: None,
                sub: None,
            },
            "POST",
        ) => {
            let dry = query.get("dryRun").is_some_and(|v| v == "All");
            create(&mut st, &res, ns.as_deref().unwrap_or(""), body, dry)
        }
        (
            Route::Object {
                res,
                ns,
                name: None,
                sub: None,
            },
            "DELETE",
        ) => {
            let labels = query.get("labelSelector").cloned();
            let fields = query.get("fieldSelector").cloned();
            let policy = body
                .as_ref()
                .and_then(|b| b["propagationPolicy"].as_str().map(str::to_string));
            let ns = ns.unwrap_or_default();
            let items = matching(&st, &res, Some(&ns), labels.as_deref(), fields.as_deref());
            let mut deleted = Vec::new();
            for it in items {
                let name = it["metadata"]["name"].as_str().unwrap_or("").to_string();
                if let Some(d) = delete_one(&mut st, &res, &ns, &name, policy.as_deref()) {
                    deleted.push(d);
                }
            }
            list_response(&st, &res, deleted)
        }
        (
            Route::Object {
                res,
                ns,
                name: Some(name),
                sub: None,
            },
            m,
        ) => {
            let ns = if res.namespaced {
                ns.unwrap_or_default()
            } else {
                String::new()
            };
            let key = (res.group_resource(), ns.clone(), name.clone());
            let Some(existing) = st.objects.get(&key).cloned() else {
                return status_response(
                    404,
                    "NotFound",
                    &format!("{} \"{name}\" not found", res.group_resource()),
                    Some(res.details(&name)),
                );
            };
            match m {
                "GET" => json_response(200, &existing),
                "DELETE" => {
                    let policy = body
                        .as_ref()
                        .and_then(|b| b["propagationPolicy"].as_str().map(str::to_string));
                    let foreground = policy.as_deref() == Some("Foreground");
                    let last = delete_one(&mut st, &res, &ns, &name, policy.as_deref())
                        .unwrap_or(existing);
                    if foreground || res.plural == "pods" {
                        json_response(200, &last)
                    } else {
                        let mut details = res.details(&name);
                        details["uid"] = last["metadata"]["uid"].clone();
                        json_response(
                            200,
                            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                "status": "Success", "details": details}),
                        )
                    }
                }
                "PATCH" => {
                    let ct = headers
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    if !(ct.starts_with("application/merge-patch+json")
                        || ct.starts_with("application/strategic-merge-patch+json"))
                    {
                        return status_response(
                            415,
                            "UnsupportedMediaType",
                            &format!(
                                "the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json (got {ct})"
                            ),
                            None,
                        );
                    }
                    let mut obj = existing;
                    merge_patch(&mut obj, &body.unwrap_or(Value::Null));
                    st.rv += 1;
                    obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
                    st.objects.insert(key, obj.clone());
                    emit(&mut st, &res, &ns, "MODIFIED", &obj);
                    json_response(200, &obj)
                }
                _ => status_response(
                    405,
                    "MethodNotAllowed",
                    &format!("{m} is not supported on {}", res.group_resource()),
                    None,
                ),
            }
        }
        (
            Route::Object {
                res,
                ns,
                name: Some(name),
                sub: Some(sub),
            },
            "GET",
        ) if sub == "log" => pod_log(&mut st, &ns.unwrap_or_default(), &name, &res, query),
        (Route::NotFound, _) => not_found_path(),
        (_, m) => status_response(
            405,
            "MethodNotAllowed",
            &format!("{m} is not supported here"),
            None,
        ),
    }
}

fn matching(
    st: &Store,
    res: &Resource,
    ns: Option<&str>,
    labels: Option<&str>,
    fields: Option<&str>,
) -> Vec<Value> {
    let gr = res.group_resource();
    st.objects
        .iter()
        .filter(|((g, n, _), o)| *g == gr && in_scope(ns, n) && selected(o, labels, fields))
        .map(|(_, o)| o.clone())
        .collect()
}

fn create(
    st: &mut Store,
    res: &Resource,
    ns: &str,
    body: Option<Value>,
    dry_run: bool,
) -> Response {
    let Some(mut obj) = body.filter(Value::is_object) else {
        return status_response(
            400,
            "BadRequest",
            "the body of the request was not an object",
            None,
        );
    };
    if obj["kind"].as_str() != Some(res.kind.as_str())
        || obj["apiVersion"].as_str() != Some(&res.api_version())
    {
        return status_response(
            400,
            "BadRequest",
            &format!(
                "the API version in the data ({}) does not match the expected API version ({})",
                obj["apiVersion"],
                res.api_version()
            ),
            None,
        );
    }
    let Some(name) = obj["metadata"]["name"].as_str().map(str::to_string) else {
        return status_response(
            422,
            "Invalid",
            &format!(
                "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                res.kind
            ),
            Some(
                json!({"kind": res.kind, "causes": [{"reason": "FieldValueRequired", "message": "Required value: name or generateName is required", "field": "metadata.name"}]}),
            ),
        );
    };
    if let Some(bns) = obj["metadata"]["namespace"].as_str()
        && bns != ns
    {
        return status_response(
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
            None,
        );
    }
    let key = (res.group_resource(), ns.to_string(), name.clone());
    if st.objects.contains_key(&key) {
        return status_response(
            409,
            "AlreadyExists",
            &format!("{} \"{name}\" already exists", res.group_resource()),
            Some(res.details(&name)),
        );
    }
    fill_new_metadata(st, &mut obj, ns);
    if dry_run {
        return json_response(201, &obj);
    }
    st.rv += 1;
    obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
    st.objects.insert(key, obj.clone());
    emit(st, res, ns, "ADDED", &obj);
    json_response(201, &obj)
}

/// Deletes an object; `Foreground`/`Background` delete its dependents (by owner uid)
/// too. Returns the object as it was last.
fn delete_one(
    st: &mut Store,
    res: &Resource,
    ns: &str,
    name: &str,
    policy: Option<&str>,
) -> Option<Value> {
    let key = (res.group_resource(), ns.to_string(), name.to_string());
    let mut obj = st.objects.remove(&key)?;
    let uid = obj["metadata"]["uid"].clone();
    st.rv += 1;
    if policy == Some("Foreground") {
        obj["metadata"]["deletionTimestamp"] = json!(stamp_s(Utc::now()));
        obj["metadata"]["finalizers"] = json!(["foregroundDeletion"]);
        obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
        emit(st, res, ns, "MODIFIED", &obj);
        st.rv += 1;
    }
    if matches!(policy, Some("Foreground" | "Background")) {
        let dependents: Vec<(Resource, String, String)> = st
            .objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .filter_map(|((gr, n, name), _)| {
                let r = st
                    .resources
                    .iter()
                    .find(|r| r.group_resource() == *gr)?
                    .clone();
                Some((r, n.clone(), name.clone()))
            })
            .collect();
        for (r, n, dn) in dependents {
            delete_one(st, &r, &n, &dn, Some("Background"));
        }
    }
    obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
    emit(st, res, ns, "DELETED", &obj);
    Some(obj)
}

fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn start_watch(
    st: &mut Store,
    store: &Shared,
    res: &Resource,
    ns: Option<String>,
    labels: Option<String>,
    fields: Option<String>,
    query: &BTreeMap<String, String>,
) -> Response {
    let rv = query
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or("");
    let (tx, rx) = mpsc::unbounded_channel();
    if rv.is_empty() || rv == "0" {
        for o in matching(st, res, ns.as_deref(), labels.as_deref(), fields.as_deref()) {
            let _ = tx.send(event_line("ADDED", &o));
        }
    } else {
        let Ok(from) = rv.parse::<u64>() else {
            return status_response(
                400,
                "BadRequest",
                &format!("invalid resource version: {rv}"),
                None,
            );
        };
        if from < st.compacted {
            let message = format!("too old resource version: {from} ({})", st.compacted);
            match st.expiry {
                Expiry::Http410 => return status_response(410, "Gone", &message, None),
                Expiry::ErrorEvent => {
                    let _ = tx.send(error_event_line(from, st.compacted));
                    drop(tx);
                    return streaming(rx, "application/json");
                }
            }
        }
        if !st.frozen {
            for e in st.history.iter().filter(|e| {
                e.rv > from
                    && e.res == *res
                    && in_scope(ns.as_deref(), &e.ns)
                    && selected(&e.obj, labels.as_deref(), fields.as_deref())
            }) {
                let _ = tx.send(event_line(e.kind, &e.obj));
            }
        }
    }
    st.next_watch += 1;
    let id = st.next_watch;
    st.watches.push(Watch {
        id,
        res: res.clone(),
        ns,
        labels,
        fields,
        tx,
    });
    if let Some(secs) = query
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
    {
        let store = store.clone();
        tokio::spawn(async move {
            // tidy: allow(sleep) because this is the mock server's `timeoutSeconds`, not a test waiting
            tokio::time::sleep(Duration::from_secs(secs)).await;
            store.lock().expect("store").watches.retain(|w| w.id != id);
        });
    }
    streaming(rx, "application/json")
}

fn pod_log(
    st: &mut Store,
    ns: &str,
    pod: &str,
    res: &Resource,
    query: &BTreeMap<String, String>,
) -> Response {
    let key = (res.group_resource(), ns.to_string(), pod.to_string());
    let Some(p) = st.objects.get(&key).cloned() else {
        return status_response(
            404,
            "NotFound",
            &format!("pods \"{pod}\" not found"),
            Some(res.details(pod)),
        );
    };
    let names: Vec<String> = p["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    let container = match query.get("container") {
        Some(c) => c.clone(),
        None if names.len() == 1 => names[0].clone(),
        None => {
            return status_response(
                400,
                "BadRequest",
                &format!(
                    "a container name must be specified for pod {pod}, choose one of: {names:?}"
                ),
                None,
            );
        }
    };
    if !names.contains(&container) {
        return status_response(
            400,
            "BadRequest",
            &format!("container {container} is not valid for pod {pod}"),
            None,
        );
    }
    let state = p["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == container.as_str())
        .map(|s| s["state"].clone())
        .unwrap_or(Value::Null);
    if state.get("running").is_none() && state.get("terminated").is_none() {
        let reason = state["waiting"]["reason"]
            .as_str()
            .unwrap_or("ContainerCreating");
        return status_response(
            400,
            "BadRequest",
            &format!("container \"{container}\" in pod \"{pod}\" is waiting to start: {reason}"),
            None,
        );
    }
    let since = query
        .get("sinceTime")
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc));
    let timestamps = query.get("timestamps").is_some_and(|v| v == "true");
    let follow = query.get("follow").is_some_and(|v| v == "true");
    let buf = st
        .logs
        .entry((ns.to_string(), pod.to_string(), container))
        .or_default();
    let (tx, rx) = mpsc::unbounded_channel();
    for (ts, text) in &buf.lines {
        if since.is_some_and(|s| *ts < s) {
            continue;
        }
        let line = if timestamps {
            format!("{} {text}\n", stamp(*ts))
        } else {
            format!("{text}\n")
        };
        let _ = tx.send(Bytes::from(line));
    }
    if follow && !buf.ended {
        // Lines written later are stamped by `log`; without `timestamps` they would
        // need another format, which the runner never asks for.
        assert!(timestamps, "the mock follows logs with timestamps only");
        buf.subs.push(tx);
    }
    streaming(rx, "text/plain")
}
