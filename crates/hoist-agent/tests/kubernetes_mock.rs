//! The Kubernetes runner against a scripted API server, for the answers a real cluster
//! gives rarely: a watch that ends with `410 Gone` (the watcher lists again and the
//! run still ends by its status), and a `403 Forbidden` on create (a clear,
//! non-transient error that names the permission, and nothing more is attempted).
//! Every other case runs against the real test cluster (`kubernetes_runner.rs`).

#![cfg(feature = "kubernetes")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use hoist_agent::config::KubernetesSettings;
use hoist_agent::logs::LogSink;
use hoist_agent::runners::kubernetes::{Cluster, KubernetesRunner};
use hoist_agent::runners::{Exit, JobSpec, Runner, RunnerError};
use serde_json::{Value, json};

const NS: &str = "mock-ns";
const RUN: &str = "runmock";
const JOB: &str = "seed-job-runmock";
const POD: &str = "seed-job-runmock-abcde";
const CREATED: &str = "2024-01-01T00:00:00Z";

#[derive(Default)]
struct Script {
    /// Answer 403 to creating a Secret.
    forbid_secrets: bool,
    /// Every request, `METHOD path?query`.
    seen: Vec<String>,
    job_lists: usize,
    job_watches: usize,
}

type Mock = Arc<Mutex<Script>>;

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn reply(code: u16, v: Value) -> Response {
    (
        StatusCode::from_u16(code).expect("status"),
        [("content-type", "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// A response that never ends (a watch with nothing to say).
fn silent() -> Response {
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(futures::stream::pending::<
            Result<Bytes, std::io::Error>,
        >()))
        .expect("response")
}

fn job(complete: bool, rv: &str) -> Value {
    let mut status = json!({"active": 1});
    if complete {
        status = json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]});
    }
    json!({"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": JOB, "namespace": NS, "uid": "uid-job", "resourceVersion": rv,
                        "creationTimestamp": CREATED,
                        "labels": {"hoist.dev/run-id": RUN}},
           "spec": {}, "status": status})
}

fn pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": POD, "namespace": NS, "uid": "uid-pod", "resourceVersion": "20",
                        "creationTimestamp": CREATED, "labels": {"hoist.dev/run-id": RUN}},
           "spec": {"containers": [{"name": "main"}]},
           "status": {"phase": "Succeeded",
                      "conditions": [{"type": "PodScheduled", "status": "True"}],
                      "containerStatuses": [{"name": "main", "ready": false, "restartCount": 0,
                          "image": "i", "imageID": "",
                          "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}})
}

async fn api(State(m): State<Mock>, method: Method, uri: Uri, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    let watch = query.contains("watch=true");
    let mut s = m.lock().expect("script");
    s.seen.push(format!("{method} {path}?{query}"));
    let jobs = format!("/apis/batch/v1/namespaces/{NS}/jobs");
    let secrets = format!("/api/v1/namespaces/{NS}/secrets");
    let pods = format!("/api/v1/namespaces/{NS}/pods");
    match (method.as_str(), path.as_str()) {
        ("GET", "/apis/batch/v1") => reply(
            200,
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "batch/v1",
                   "resources": [
                       {"name": "jobs", "singularName": "", "namespaced": true, "kind": "Job",
                        "verbs": ["create", "delete", "get", "list", "patch", "watch"]},
                       {"name": "jobs/status", "singularName": "", "namespaced": true, "kind": "Job",
                        "verbs": ["get"]}]}),
        ),
        ("POST", p) if p == secrets => {
            if s.forbid_secrets {
                return reply(
                    403,
                    status(
                        403,
                        "Forbidden",
                        &format!(
                            "secrets is forbidden: User \"system:serviceaccount:hoist:agent\" cannot create resource \"secrets\" in API group \"\" in the namespace \"{NS}\""
                        ),
                    ),
                );
            }
            let mut v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            v["metadata"]["uid"] = json!("uid-secret");
            v["metadata"]["resourceVersion"] = json!("1");
            reply(201, v)
        }
        ("PATCH", p) if p.starts_with(&format!("{secrets}/")) => reply(
            200,
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": p.rsplit('/').next(), "namespace": NS}}),
        ),
        ("POST", p) if p == jobs => reply(201, job(false, "10")),
        ("GET", p) if p == jobs && watch => {
            s.job_watches += 1;
            if s.job_watches == 1 {
                // The watch's resource version is too old: the watcher must list again.
                let ev = json!({"type": "ERROR", "object": status(410, "Expired", "too old resource version: 10 (15)")});
                return (
                    StatusCode::OK,
                    [("content-type", "application/json")],
                    format!("{ev}\n"),
                )
                    .into_response();
            }
            silent()
        }
        ("GET", p) if p == jobs => {
            s.job_lists += 1;
            // Running at first; complete when listed again after the 410.
            let (complete, rv) = if s.job_lists == 1 {
                (false, "10")
            } else {
                (true, "16")
            };
            reply(
                200,
                json!({"apiVersion": "batch/v1", "kind": "JobList",
                       "metadata": {"resourceVersion": rv}, "items": [job(complete, rv)]}),
            )
        }
        ("GET", p) if p == pods && watch => silent(),
        ("GET", p) if p == pods => reply(
            200,
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "20"},
                   "items": [pod()]}),
        ),
        ("GET", p) if p == format!("{pods}/{POD}/log") => (
            StatusCode::OK,
            "2024-01-01T00:00:01.000000001Z hello from the mock\n",
        )
            .into_response(),
        ("GET", p) if p == format!("{pods}/{POD}") => reply(200, pod()),
        ("DELETE", _) => reply(
            200,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 200}),
        ),
        _ => reply(404, status(404, "NotFound", &format!("{path} not found"))),
    }
}

async fn serve(script: Script) -> (Mock, KubernetesRunner) {
    let mock: Mock = Arc::new(Mutex::new(script));
    let app = axum::Router::new().fallback(api).with_state(mock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let config = kube::Config::new(url.parse().expect("url"));
    let client = kube::Client::try_from(config).expect("client");
    let cluster = Cluster {
        client,
        default_namespace: NS.into(),
        source: "the scripted API server".into(),
        url,
    };
    (
        mock,
        KubernetesRunner::new(cluster, KubernetesSettings::default(), false),
    )
}

fn job_spec() -> JobSpec {
    JobSpec {
        run_id: RUN.into(),
        run_name: RUN.into(),
        project: "p".into(),
        entity: "admin".into(),
        queue: "admin/kq".into(),
        agent_name: "mock-agent".into(),
        image: Some("hoist-test/busybox:latest".into()),
        entry_point: None,
        args: vec!["true".into()],
        env: [("HOIST_RUN_TOKEN", "hrt_s3cret")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        resource_config: json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "seed-job", "namespace": NS},
            "spec": {"template": {"spec": {"containers": [{"name": "main"}], "restartPolicy": "Never"}}},
        }),
        labels: BTreeMap::new(),
        source: None,
    }
}

/// The Job's watch ends with 410 Gone: the watcher lists again, finds the Job
/// complete, and the run ends with exit code 0 and its log.
#[tokio::test]
async fn a_410_on_the_watch_relists_and_the_run_still_ends() {
    let (mock, runner) = serve(Script::default()).await;
    let sink = LogSink::new();
    let exec = runner
        .start(&job_spec(), sink.clone())
        .await
        .expect("start");
    let exit = tokio::time::timeout(Duration::from_secs(60), exec.wait())
        .await
        .expect("ends in time")
        .expect("exit");
    assert_eq!(exit, Exit::Code(0));
    let lines: Vec<String> = sink.snapshot().into_iter().map(|l| l.text).collect();
    assert!(
        lines.contains(&"hello from the mock".to_string()),
        "{lines:?}"
    );
    {
        let s = mock.lock().expect("script");
        assert!(s.job_watches >= 1, "{:#?}", s.seen);
        assert!(s.job_lists >= 2, "no relist after the 410: {:#?}", s.seen);
    }
    exec.cleanup().await;
    let s = mock.lock().expect("script");
    assert!(
        s.seen
            .iter()
            .any(|r| r.starts_with(&format!("DELETE /apis/batch/v1/namespaces/{NS}/jobs/{JOB}"))),
        "{:#?}",
        s.seen
    );
}

/// A 403 on creating the run's Secret: the start fails with the server's message and
/// a pointer to the RBAC rules, is not retried as transient, and no Job is created.
#[tokio::test]
async fn a_403_on_create_is_a_clear_permanent_error() {
    let (mock, runner) = serve(Script {
        forbid_secrets: true,
        ..Script::default()
    })
    .await;
    let err = runner
        .start(&job_spec(), LogSink::new())
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, RunnerError::Api { .. }), "{err:?}");
    assert!(!err.is_transient());
    let msg = err.to_string();
    assert!(
        msg.contains("cannot create resource \"secrets\"") && msg.contains("RBAC"),
        "{msg}"
    );
    assert!(!msg.contains("s3cret"), "{msg}");
    let s = mock.lock().expect("script");
    assert!(
        !s.seen.iter().any(|r| r.starts_with("POST /apis/batch/v1")),
        "a Job was created after the Secret was refused: {:#?}",
        s.seen
    );
}
