//! The Kubernetes runner's rare error paths, against a scripted API server
//! ([`kube_mock`]): what a real v1.20 cluster gives seldom or never on demand — a 410
//! in the middle of a watch (an `ERROR` event, or a plain HTTP 410 on the watch
//! request), a 409 on create (an earlier attempt's object, or someone else's), a 403
//! (RBAC) on create and on a pod's log, 5xx on create, a custom kind whose CRD is not
//! installed. The runner is driven through its public API (`start`, `adopt`, the
//! execution's `running`/`wait`/`stop`/`cleanup`), and, for the run task's retry rule,
//! by a real agent and server in process. The real-cluster tests are in
//! `kubernetes_runner.rs`.
//!
//! These need no external service and always run.

#![cfg(feature = "kubernetes")]

mod kube_mock;
mod kube_support;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use hoist_agent::logs::LogSink;
use hoist_agent::runners::kubernetes::KubernetesRunner;
use hoist_agent::runners::{Adopted, Exit, JobSpec, Runner, RunnerError};
use hoist_core::api::LogStream;
use hoist_core::run::FailureStage;
use kube_mock::{
    DEADLINE, Expiry, KubeMock, NAMESPACE, PodState, Reply, Request, Rule, jobs, pods, secrets,
};
use serde_json::{Value, json};

const NS: &str = NAMESPACE;

/// The queue config: the seed's Job, named `train` (a prefix: `train-<run id>`).
fn seed() -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "train"},
        "spec": {"template": {"spec": {
            "containers": [{"name": "main", "imagePullPolicy": "IfNotPresent"}],
            "restartPolicy": "Never",
        }}},
    })
}

fn job(run_id: &str, config: Value) -> JobSpec {
    kube_support::job_spec(run_id, "mock-agent", config, &["sh", "-c", "echo hi"])
}

fn job_path() -> String {
    jobs().collection(Some(NS))
}

fn secret_path() -> String {
    secrets().collection(Some(NS))
}

fn pod_path() -> String {
    pods().collection(Some(NS))
}

fn log_path(pod: &str) -> String {
    format!("{}/{pod}/log", pod_path())
}

/// The job's own output lines (no notes of hoist's).
fn output(sink: &LogSink) -> Vec<String> {
    sink.snapshot()
        .into_iter()
        .filter(|l| l.stream != LogStream::System)
        .map(|l| l.text)
        .collect()
}

fn notes(sink: &LogSink) -> Vec<String> {
    sink.snapshot()
        .into_iter()
        .filter(|l| l.stream == LogStream::System)
        .map(|l| l.text)
        .collect()
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A whole second in the past: log lines stamped within it share the second a
/// `sinceTime` is cut to.
fn base_second() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(0) - TimeDelta::seconds(5)
}

fn ms(base: DateTime<Utc>, n: i64) -> DateTime<Utc> {
    base + TimeDelta::milliseconds(n)
}

/// The run's objects (by its run-id label) still in the mock.
/// Fails with what is left when anything of run `run_id` is.
fn assert_nothing_left(mock: &KubeMock, run_id: &str) {
    let left = left(mock, run_id);
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn left(mock: &KubeMock, run_id: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (res, what) in [(jobs(), "job"), (pods(), "pod"), (secrets(), "secret")] {
        for o in mock.list(&res, NS) {
            if o["metadata"]["labels"]["hoist.dev/run-id"] == run_id {
                out.push(format!(
                    "{what}/{}",
                    o["metadata"]["name"].as_str().unwrap_or("")
                ));
            }
        }
    }
    out
}

/// The requests numbered from `from` on.
fn since(mock: &KubeMock, from: usize) -> Vec<Request> {
    mock.requests()
        .into_iter()
        .filter(|r| r.seq >= from)
        .collect()
}

/// Started: the Job stored, both watches open, a pod running (`running` resolved).
async fn started_and_running(
    mock: &KubeMock,
    runner: &KubernetesRunner,
    run_id: &str,
    sink: &LogSink,
) -> (Box<dyn hoist_agent::runners::Execution>, String) {
    let exec = runner
        .start(&job(run_id, seed()), sink.clone())
        .await
        .expect("start");
    let name = format!("train-{run_id}");
    let stored = mock.get(&jobs(), NS, &name).expect("the Job was created");
    mock.wait_watching(&jobs()).await;
    mock.wait_watching(&pods()).await;
    let pod = format!("{name}-x7k2q");
    mock.job_pod(&stored, &pod, PodState::Running);
    mock.job_active(NS, &name);
    within("running", exec.running()).await.expect("runs");
    (exec, pod)
}

/// An `ERROR` event with a 410 `Expired` Status ends both watches while the Job
/// completes: the completion reaches the runner only through the relist that the 410
/// calls for. The run ends `Code(0)`; the Job was created once; a log stream that broke
/// in between resumed without doubling a line; cleanup deletes everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_watch_relists_and_the_run_ends_by_what_the_relist_shows() {
    let mock = KubeMock::start().await;
    let runner = mock.runner().await;
    let id = "run410event";
    let sink = LogSink::new();
    let (exec, pod) = started_and_running(&mock, &runner, id, &sink).await;
    let base = base_second();
    mock.log(NS, &pod, "main", ms(base, 100), "one");
    mock.log(NS, &pod, "main", ms(base, 200), "two");
    mock.wait_for("both lines shipped", || {
        (output(&sink).len() == 2).then_some(())
    })
    .await;
    // The log connection breaks: the follower reconnects from the last line's second
    // (the API takes whole seconds), so the server sends `one` and `two` again.
    let logs_before = mock.count(|r| r.is("GET", &log_path(&pod)));
    mock.break_log_streams();
    mock.wait_for("the log followed again", || {
        (mock.count(|r| r.is("GET", &log_path(&pod)) && r.status == 200) > logs_before
            && mock.open_log_streams() == 1)
            .then_some(())
    })
    .await;
    mock.log(NS, &pod, "main", ms(base, 300), "three");
    mock.wait_for("the third line shipped", || {
        output(&sink).contains(&"three".to_string()).then_some(())
    })
    .await;

    // The watches fall behind: the pod's end and the Job's completion reach no watch,
    // then the server expires them.
    mock.freeze_watches();
    mock.set_pod(NS, &pod, PodState::Exited(0));
    mock.end_log(NS, &pod, "main");
    mock.complete_job(NS, &format!("train-{id}"));
    let mark = mock.requests().len();
    mock.expire_watches(Expiry::ErrorEvent);

    let exit = within("the end", exec.wait()).await.expect("exit");
    assert_eq!(exit, Exit::Code(0), "{}", mock.journal());
    let after = since(&mock, mark);
    assert!(
        after.iter().any(|r| r.is_list_of(&job_path())),
        "no relist of the Job after the 410:\n{}",
        mock.journal()
    );
    assert!(
        after.iter().any(|r| r.is_list_of(&pod_path())),
        "no relist of the pods after the 410:\n{}",
        mock.journal()
    );
    assert_eq!(
        mock.count(|r| r.is("POST", &job_path())),
        1,
        "{}",
        mock.journal()
    );
    assert_eq!(
        output(&sink),
        ["one", "two", "three"],
        "every line once, in order"
    );
    exec.cleanup().await;
    assert_nothing_left(&mock, id);
}

/// A restarted agent adopts a running Job (its log resumes after what the server has),
/// then its watches end and watching again from the last version is answered with a
/// plain HTTP 410: the runner relists instead of retrying the expired version forever,
/// and sees the Job complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_410_on_a_watch_request_relists() {
    let mock = KubeMock::start().await;
    let id = "run410http";
    let first = LogSink::new();
    let base = base_second();
    let pod = {
        let runner = mock.runner().await;
        let (exec, pod) = started_and_running(&mock, &runner, id, &first).await;
        mock.log(NS, &pod, "main", ms(base, 100), "before-1");
        mock.log(NS, &pod, "main", ms(base, 200), "before-2");
        mock.wait_for("the first lines shipped", || {
            (output(&first).len() == 2).then_some(())
        })
        .await;
        // The agent dies: its execution goes, the Job stays.
        drop(exec);
        pod
    };
    let runner = mock.runner().await;
    let sink = LogSink::new();
    let adopted = runner
        .adopt(&job(id, seed()), sink.clone(), Some(ms(base, 200)))
        .await
        .expect("adopt");
    let Adopted::Found(exec) = adopted else {
        panic!("the running Job was not found");
    };
    mock.wait_for("the adopted run's log followed", || {
        (mock.open_log_streams() == 1).then_some(())
    })
    .await;
    mock.log(NS, &pod, "main", ms(base, 300), "after");
    mock.wait_for("the new line shipped", || {
        (!output(&sink).is_empty()).then_some(())
    })
    .await;

    mock.freeze_watches();
    mock.set_pod(NS, &pod, PodState::Exited(0));
    mock.end_log(NS, &pod, "main");
    mock.complete_job(NS, &format!("train-{id}"));
    let mark = mock.requests().len();
    mock.expire_watches(Expiry::Http410);

    let exit = within("the end after an HTTP 410", exec.wait())
        .await
        .expect("exit");
    assert_eq!(exit, Exit::Code(0));
    let after = since(&mock, mark);
    assert!(
        after.iter().any(|r| r.is_watch() && r.status == 410),
        "the test did not exercise an HTTP 410:\n{}",
        mock.journal()
    );
    assert!(
        after.iter().any(|r| r.is_list_of(&job_path())),
        "{}",
        mock.journal()
    );
    assert_eq!(
        output(&sink),
        ["after"],
        "the adopted run re-shipped lines the server has"
    );
    assert_eq!(
        mock.count(|r| r.method == "POST"),
        2,
        "one Secret and one Job, by the first start"
    );
    exec.cleanup().await;
    assert_nothing_left(&mock, id);
}

/// A stop whose deletions happen while the watches have fallen behind: the pod's
/// `DELETED` never arrives, the 410's relist shows it gone, and the stop ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_seen_only_through_a_relist_ends() {
    let mock = KubeMock::start().await;
    let runner = mock.runner().await;
    let id = "run410stop";
    let sink = LogSink::new();
    let (exec, pod) = started_and_running(&mock, &runner, id, &sink).await;
    mock.freeze_watches();
    exec.stop(Duration::from_secs(1)).await.expect("stop");
    assert!(
        mock.get(&pods(), NS, &pod).is_none(),
        "the stop deleted the pod"
    );
    assert!(mock.get(&jobs(), NS, &format!("train-{id}")).is_none());
    mock.end_log(NS, &pod, "main");
    mock.expire_watches(Expiry::ErrorEvent);
    let exit = within("the stop's end", exec.wait()).await.expect("exit");
    assert!(
        matches!(&exit, Exit::Failed { reason, .. } if reason.contains("deleted")),
        "{exit:?}"
    );
    exec.cleanup().await;
    assert_nothing_left(&mock, id);
}

/// The Job is created but the answer is lost (a 504): the start fails transiently, and
/// what it created is deleted before the error comes back: its Secret, and the Job it
/// never saw created (the run's by its labels, deleted by its uid), so that nothing is
/// left when the run task does not try again (a stop or a cancel meanwhile,
/// `start_timeout`). The next start creates them anew, owned as usual, and runs to the
/// end. (An object of an earlier attempt that is still there is adopted on a 409: the
/// cluster test `a_name_conflict_adopts_its_own_and_refuses_others`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_answer_was_lost_is_undone_and_retried() {
    let mock = KubeMock::start().await;
    let runner = mock.runner().await;
    let id = "run504lost";
    let name = format!("train-{id}");
    mock.on(Rule::new(
        Method::POST,
        job_path(),
        Reply::AfterEffect(Box::new(Reply::status(
            504,
            "Timeout",
            "Timeout: request did not complete within requested timeout 34s",
        ))),
    )
    .times(1));
    let err = runner
        .start(&job(id, seed()), LogSink::new())
        .await
        .err()
        .expect("the lost answer fails the start");
    assert!(err.is_transient(), "a 504 is worth another try: {err}");
    assert!(
        left(&mock, id).is_empty(),
        "left behind by the failed start: {:?}\n{}",
        left(&mock, id),
        mock.journal()
    );
    assert_eq!(
        mock.count(|r| r.is("DELETE", &format!("{}/{name}", job_path()))),
        1,
        "the Job of the lost answer was not deleted by name:\n{}",
        mock.journal()
    );

    let mark = mock.requests().len();
    let sink = LogSink::new();
    let exec = runner
        .start(&job(id, seed()), sink.clone())
        .await
        .expect("the retry starts");
    let after = since(&mock, mark);
    let creates: Vec<&Request> = after.iter().filter(|r| r.is("POST", &job_path())).collect();
    assert_eq!(creates.len(), 1, "{}", mock.journal());
    assert_eq!(creates[0].status, 201, "{}", mock.journal());
    let stored = mock.get(&jobs(), NS, &name).expect("job");
    let secret = mock
        .list(&secrets(), NS)
        .into_iter()
        .find(|s| s["metadata"]["labels"]["hoist.dev/run-id"] == id)
        .expect("the retry's Secret");
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["uid"], stored["metadata"]["uid"],
        "the Secret is owned by the new Job"
    );

    mock.wait_watching(&jobs()).await;
    mock.wait_watching(&pods()).await;
    let pod = format!("{name}-p0d01");
    mock.job_pod(&stored, &pod, PodState::Running);
    within("running", exec.running()).await.expect("runs");
    mock.log(NS, &pod, "main", Utc::now(), "adopted");
    mock.set_pod(NS, &pod, PodState::Exited(0));
    mock.end_log(NS, &pod, "main");
    mock.complete_job(NS, &name);
    let exit = within("the end", exec.wait()).await.expect("exit");
    assert_eq!(exit, Exit::Code(0));
    assert_eq!(output(&sink), ["adopted"]);
    assert_eq!(
        mock.count(|r| r.is("POST", &job_path())),
        2,
        "{}",
        mock.journal()
    );
    exec.cleanup().await;
    assert_nothing_left(&mock, id);
}

/// Someone else's Job holds the name the run would use: the start fails, naming the
/// object and what to do; what the start created (its Secret) is deleted; theirs is
/// left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_object_with_the_runs_name_is_refused_and_nothing_is_left() {
    let mock = KubeMock::start().await;
    let runner = mock.runner().await;
    let id = "runforeign";
    let name = format!("train-{id}");
    mock.put(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": NS, "labels": {"team": "vision"}},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "theirs"}], "restartPolicy": "Never"}}},
    }));
    let err = runner
        .start(&job(id, seed()), LogSink::new())
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, RunnerError::Start { .. }), "{err:?}");
    assert!(!err.is_transient());
    let msg = err.to_string();
    for part in [
        "Job",
        name.as_str(),
        NS,
        "already exists",
        "not this run's",
        "metadata.name",
    ] {
        assert!(msg.contains(part), "{part:?} missing from: {msg}");
    }
    let secrets_deleted = mock
        .wait_request("the start's Secrets deleted", |r| {
            r.is("DELETE", &secret_path())
        })
        .await;
    assert_eq!(secrets_deleted.status, 200);
    assert_eq!(
        secrets_deleted
            .query
            .get("labelSelector")
            .map(String::as_str),
        Some(format!("hoist.dev/run-id={id}").as_str()),
        "only this run's Secrets"
    );
    mock.wait_request("the start's pods deleted", |r| r.is("DELETE", &pod_path()))
        .await;
    assert_nothing_left(&mock, id);
    let theirs = mock.get(&jobs(), NS, &name).expect("theirs is still there");
    assert_eq!(theirs["metadata"]["labels"]["team"], "vision");
    assert_eq!(
        mock.count(|r| r.method == "DELETE" && r.path.ends_with(&format!("/jobs/{name}"))),
        0,
        "theirs was deleted:\n{}",
        mock.journal()
    );
    assert_eq!(
        mock.count(|r| r.is("POST", &job_path())),
        1,
        "{}",
        mock.journal()
    );
}

/// RBAC refuses the create: a start failure that says which verb on which resource in
/// which namespace was refused and which Role grants it (deploy/kubernetes), not
/// transient (one request, no retry); the Secret created before it is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_create_names_the_verb_the_resource_the_namespace_and_the_role() {
    let mock = KubeMock::start().await;
    let runner = mock.runner().await;
    let id = "run403";
    mock.on(Rule::new(
        Method::POST,
        job_path(),
        Reply::forbidden("create", &jobs(), NS, None),
    ));
    let err = runner
        .start(&job(id, seed()), LogSink::new())
        .await
        .err()
        .expect("forbidden");
    assert!(!err.is_transient(), "RBAC does not repair itself: {err}");
    assert_eq!(
        err.stage(),
        FailureStage::Agent,
        "the agent's permissions, not the job"
    );
    let msg = err.to_string();
    for part in [
        "create",
        "jobs",
        "batch",
        &format!("namespace {NS}"),
        "hoist-agent-runner",
        "RoleBinding",
        "deploy/kubernetes",
    ] {
        assert!(msg.contains(part), "{part:?} missing from: {msg}");
    }
    assert!(!msg.contains("s3cret"), "{msg}");
    assert_eq!(
        mock.count(|r| r.is("POST", &job_path())),
        1,
        "{}",
        mock.journal()
    );
    mock.wait_request("the start's Secrets deleted", |r| {
        r.is("DELETE", &secret_path())
    })
    .await;
    assert_nothing_left(&mock, id);

    // A custom kind's 403 says to add its resource to the role too.
    let tj = mock.install_crd("training.hoist.dev", "v1", "trainjobs", "TrainJob");
    mock.on(Rule::new(
        Method::POST,
        tj.collection(Some(NS)),
        Reply::forbidden("create", &tj, NS, None),
    ));
    let custom = json!({
        "apiVersion": "training.hoist.dev/v1", "kind": "TrainJob",
        "metadata": {"name": "train"},
        "spec": {"template": {"spec": {"containers": [{"name": "main"}]}}},
    });
    let msg = runner
        .start(&job("run403custom", custom), LogSink::new())
        .await
        .err()
        .expect("forbidden")
        .to_string();
    for part in [
        "create",
        "trainjobs",
        "training.hoist.dev",
        "hoist-agent-runner",
        "rules",
    ] {
        assert!(msg.contains(part), "{part:?} missing from: {msg}");
    }
}

/// A container's stdout and stderr are stamped by separate copiers, so a log stream's
/// stamps are not monotonic: a stderr line may be stamped before the stdout line that
/// precedes it. Every line of one stream is shipped, in the stream's order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_stamped_out_of_order_in_one_stream_are_all_shipped() {
    let mock = KubeMock::start().await;
    let runner = mock.runner().await;
    let id = "runorder";
    let sink = LogSink::new();
    let (exec, pod) = started_and_running(&mock, &runner, id, &sink).await;
    let base = base_second();
    mock.log(NS, &pod, "main", ms(base, 200), "stdout first");
    mock.log(NS, &pod, "main", ms(base, 150), "stderr, stamped earlier");
    mock.log(NS, &pod, "main", ms(base, 300), "stdout last");
    mock.set_pod(NS, &pod, PodState::Exited(0));
    mock.end_log(NS, &pod, "main");
    mock.complete_job(NS, &format!("train-{id}"));
    let exit = within("the end", exec.wait()).await.expect("exit");
    assert_eq!(exit, Exit::Code(0), "{}", mock.journal());
    assert_eq!(
        output(&sink),
        ["stdout first", "stderr, stamped earlier", "stdout last"],
        "every line once, in the stream's order"
    );
    exec.cleanup().await;
}

/// RBAC refuses the pod's log: the log is not retried in a loop, the run's log says
/// why it has no output, and the run still ends by the Job's status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_log_leaves_a_note_and_the_run_ends_by_status() {
    let mock = KubeMock::start().await;
    let runner = mock.runner().await;
    let id = "run403log";
    let name = format!("train-{id}");
    let pod = format!("{name}-x7k2q");
    mock.on(Rule::new(
        Method::GET,
        log_path(&pod),
        Reply::forbidden("get", &pods(), NS, Some(&pod)),
    ));
    let sink = LogSink::new();
    let (exec, started_pod) = started_and_running(&mock, &runner, id, &sink).await;
    assert_eq!(started_pod, pod);
    mock.log(NS, &pod, "main", Utc::now(), "unreadable");
    let note = mock
        .wait_for("a note about the log", || {
            notes(&sink).into_iter().find(|n| n.contains("pods/log"))
        })
        .await;
    for part in [pod.as_str(), "main", NS, "deploy/kubernetes"] {
        assert!(note.contains(part), "{part:?} missing from: {note}");
    }
    mock.set_pod(NS, &pod, PodState::Exited(0));
    mock.end_log(NS, &pod, "main");
    mock.complete_job(NS, &name);
    let exit = within("the end", exec.wait()).await.expect("exit");
    assert_eq!(exit, Exit::Code(0));
    assert!(output(&sink).is_empty());
    assert_eq!(
        mock.count(|r| r.is("GET", &log_path(&pod))),
        1,
        "a forbidden log was asked for again:\n{}",
        mock.journal()
    );
    exec.cleanup().await;
    assert_nothing_left(&mock, id);
}

/// 500 and 503 on create (the API server's own, or a proxy's plain-text page) are
/// transient; each failed start deletes what it created; the next start succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_on_create_are_transient() {
    let mock = KubeMock::start().await;
    let runner = mock.runner().await;
    let id = "run5xx";
    // The Secrets and the Job are created at once: a failed Secret create fails the
    // start (and its Job, created meanwhile, is deleted again), as does a failed Job
    // create.
    let failures = [
        (
            Rule::new(Method::POST, secret_path(), Reply::internal_error()),
            "etcdserver",
        ),
        (
            Rule::new(Method::POST, job_path(), Reply::unavailable()),
            "unable to handle",
        ),
        (
            Rule::new(
                Method::POST,
                job_path(),
                Reply::Text {
                    code: 503,
                    body: "upstream connect error or disconnect/reset before headers. reset reason: connection failure".into(),
                },
            ),
            "upstream connect error",
        ),
    ];
    for (i, (rule, expect)) in failures.into_iter().enumerate() {
        mock.on(rule.times(1));
        let err = runner
            .start(&job(id, seed()), LogSink::new())
            .await
            .err()
            .unwrap_or_else(|| panic!("attempt {i} should fail"));
        assert!(err.is_transient(), "attempt {i}: {err}");
        assert!(
            matches!(err, RunnerError::Api { .. }),
            "attempt {i}: {err:?}"
        );
        assert!(err.to_string().contains(expect), "attempt {i}: {err}");
        mock.wait_for("the failed start's leftovers deleted", || {
            left(&mock, id).is_empty().then_some(())
        })
        .await;
    }
    let exec = runner
        .start(&job(id, seed()), LogSink::new())
        .await
        .expect("the fourth start");
    assert!(mock.get(&jobs(), NS, &format!("train-{id}")).is_some());
    // One per start: the first start's Job was created, then deleted with the start.
    assert_eq!(
        mock.count(|r| r.is("POST", &job_path())),
        4,
        "{}",
        mock.journal()
    );
    exec.cleanup().await;
    assert_nothing_left(&mock, id);
}

/// A custom kind the cluster does not serve (its group answers 404, or the group is
/// served without that kind) fails the start before anything is created, asking
/// whether the CRD is installed; once served, the kind's plural comes from discovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uninstalled_crd_is_named() {
    let mock = KubeMock::start().await;
    let runner = mock.runner().await;
    let custom = |api_version: &str, kind: &str| {
        json!({
            "apiVersion": api_version, "kind": kind,
            "metadata": {"name": "train"},
            "spec": {"pytorchReplicaSpecs": {"Master": {"replicas": 1, "template": {"spec": {
                "containers": [{"name": "pytorch"}]}}}}},
        })
    };
    let err = runner
        .start(
            &job("runcrd", custom("kubeflow.org/v1", "PyTorchJob")),
            LogSink::new(),
        )
        .await
        .err()
        .expect("not served");
    let msg = err.to_string();
    assert!(
        msg.contains("PyTorchJob")
            && msg.contains("kubeflow.org/v1")
            && msg.contains("CRD installed"),
        "{msg}"
    );
    assert!(!err.is_transient());
    let discovery = mock
        .requests()
        .into_iter()
        .find(|r| r.is("GET", "/apis/kubeflow.org/v1"))
        .expect("asked discovery");
    assert_eq!(discovery.status, 404);

    mock.install_crd("kubeflow.org", "v1", "tfjobs", "TFJob");
    let err = runner
        .start(
            &job("runcrd", custom("kubeflow.org/v1", "PyTorchJob")),
            LogSink::new(),
        )
        .await
        .err()
        .expect("group served, kind not");
    let msg = err.to_string();
    assert!(
        msg.contains("PyTorchJob") && msg.contains("CRD installed"),
        "{msg}"
    );
    assert_eq!(mock.count(|r| r.method == "POST"), 0, "{}", mock.journal());

    let served = mock.install_crd("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob");
    let exec = runner
        .start(
            &job("runcrd", custom("kubeflow.org/v1", "PyTorchJob")),
            LogSink::new(),
        )
        .await
        .expect("served now");
    assert!(
        mock.get(&served, NS, "train-runcrd").is_some(),
        "created under the plural discovery gave:\n{}",
        mock.journal()
    );
    exec.cleanup().await;
    assert!(mock.get(&served, NS, "train-runcrd").is_none());
}

/// RBAC lets the agent create the Job but not watch its pods: the supervision ends at
/// once with the missing permission (instead of retrying a watch that cannot work
/// while the run is never seen to end), and cleanup deletes what the run created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_watch_ends_the_supervision_with_the_missing_permission() {
    let mock = KubeMock::start().await;
    let runner = mock.runner().await;
    let id = "run403watch";
    mock.on(Rule::new(
        Method::GET,
        pod_path(),
        Reply::forbidden("watch", &pods(), NS, None),
    )
    .watches_only());
    let exec = runner
        .start(&job(id, seed()), LogSink::new())
        .await
        .expect("start");
    let err = within("the end", exec.wait())
        .await
        .expect_err("cannot be supervised");
    assert!(!err.is_transient(), "{err}");
    let msg = err.to_string();
    for part in [
        "watch",
        "pods",
        &format!("namespace {NS}"),
        "hoist-agent-runner",
    ] {
        assert!(msg.contains(part), "{part:?} missing from: {msg}");
    }
    assert_eq!(
        mock.count(|r| r.is("GET", &pod_path()) && r.is_watch()),
        1,
        "the forbidden watch was retried:\n{}",
        mock.journal()
    );
    exec.cleanup().await;
    assert_nothing_left(&mock, id);
}

// ---- the run task's retry rule, with a real agent and server ----

mod agent_level {
    use super::*;
    use hoist_agent::agent::{self, AgentOptions};
    use hoist_agent::config::{AgentConfig, MaxJobs, OciRegistry, RegistryConfig};
    use hoist_agent::host_env::HostEnv;
    use hoist_client::{Client, Secret};
    use hoist_core::api::{CreateQueue, LaunchRequest, Run};
    use hoist_core::resource::ResourceType;
    use hoist_core::run::RunState;
    use hoist_server::{Server, ServerConfig};
    use tokio::sync::watch;

    struct Env {
        server: Server,
        _dir: tempfile::TempDir,
        client: Client,
        stop: watch::Sender<bool>,
        agent: tokio::task::JoinHandle<Result<(), agent::AgentError>>,
    }

    /// A server, a `kubernetes` queue `k8s` with the seed's Job, and an agent serving
    /// it with the Kubernetes runner pointed at `mock`.
    async fn env(mock: &KubeMock) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = Server::start(ServerConfig::new(
            "127.0.0.1:0".parse().expect("addr"),
            dir.path().join("data"),
        ))
        .await
        .expect("server");
        let key = std::fs::read_to_string(dir.path().join("data/admin.key")).expect("admin key");
        let url = format!("http://{}", server.addr);
        let client = Client::new(&url, Some(Secret::new(key.trim()))).expect("client");
        client
            .create_queue(&CreateQueue {
                name: "k8s".into(),
                entity: None,
                resource: "kubernetes".into(),
                config: Some(seed()),
                template_variables: vec![],
                prioritize: false,
                description: None,
            })
            .await
            .expect("queue");
        let config = AgentConfig {
            queues: vec!["k8s".into()],
            max_jobs: MaxJobs::Limit(NonZeroU32::new(1).expect("1")),
            stopped_run_timeout: Duration::from_secs(3),
            kubernetes: mock.settings(),
            registry: RegistryConfig::Oci(OciRegistry {
                host: "127.0.0.1:5000".into(),
                repository: "hoist".into(),
                plain_http: true,
                credentials_file: None,
            }),
            ..Default::default()
        };
        let mut runners: HashMap<ResourceType, Arc<dyn Runner>> = HashMap::new();
        runners.insert(ResourceType::Kubernetes, Arc::new(mock.runner().await));
        let opts = AgentOptions {
            config,
            client: client.clone(),
            name: "mock-agent".into(),
            host: "test".into(),
            base_url: url,
            runners,
            unavailable: HashMap::new(),
            builder: Arc::new(hoist_agent::builders::noop::NoopBuilder),
            host_env: Arc::new(HostEnv::capture()),
            drain: false,
        };
        let (stop, rx) = watch::channel(false);
        let agent = tokio::spawn(agent::run(opts, rx));
        Env {
            server,
            _dir: dir,
            client,
            stop,
            agent,
        }
    }

    impl Env {
        async fn launch(&self) -> Run {
            self.client
                .launch(&LaunchRequest {
                    queue: "k8s".into(),
                    image: Some("hoist-test/busybox:latest".into()),
                    entry_point: Some(vec!["sh".into(), "-c".into(), "echo hi".into()]),
                    ..Default::default()
                })
                .await
                .expect("launch")
        }

        async fn wait_ended(&self, id: &str) -> Run {
            let t0 = std::time::Instant::now();
            loop {
                let r = self.client.get_run(id).await.expect("run");
                if r.state.is_terminal() {
                    return r;
                }
                assert!(t0.elapsed() < DEADLINE, "run {id} still {}", r.state);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        async fn logs(&self, id: &str) -> Vec<String> {
            self.client
                .read_logs(id, 0, Some(10_000))
                .await
                .expect("logs")
                .lines
                .into_iter()
                .map(|l| l.text)
                .collect()
        }

        async fn shutdown(self) {
            let _ = self.stop.send(true);
            within("the agent stops", self.agent)
                .await
                .expect("agent task")
                .expect("agent");
            self.server.shutdown().await;
        }
    }

    /// The first create answers 503: the run task tries again (its rule for transient
    /// failures) and the run finishes; the run's log says it was retried.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_run_task_retries_a_create_answered_503() {
        let mock = KubeMock::start().await;
        mock.on(Rule::new(Method::POST, job_path(), Reply::unavailable()).times(1));
        let e = env(&mock).await;
        let run = e.launch().await;
        let stored = mock
            .wait_for("the Job created", || {
                mock.list(&jobs(), NS).into_iter().next()
            })
            .await;
        let name = stored["metadata"]["name"]
            .as_str()
            .expect("name")
            .to_string();
        assert_eq!(
            stored["metadata"]["annotations"]["hoist.dev/run-id"],
            run.id.as_str()
        );
        mock.wait_watching(&jobs()).await;
        mock.wait_watching(&pods()).await;
        let pod = format!("{name}-x7k2q");
        mock.job_pod(&stored, &pod, PodState::Running);
        mock.log(NS, &pod, "main", Utc::now(), "hi");
        mock.set_pod(NS, &pod, PodState::Exited(0));
        mock.end_log(NS, &pod, "main");
        mock.complete_job(NS, &name);
        let r = e.wait_ended(&run.id).await;
        assert_eq!(r.state, RunState::Finished, "{:?}", r.failure);
        assert_eq!(
            mock.count(|r| r.is("POST", &job_path())),
            2,
            "{}",
            mock.journal()
        );
        let logs = e.logs(&run.id).await;
        assert!(logs.contains(&"hi".to_string()), "{logs:?}");
        assert!(
            logs.iter()
                .any(|l| l.contains("could not start the job") && l.contains("trying again")),
            "{logs:?}"
        );
        mock.wait_for("the run's objects deleted", || {
            left(&mock, &run.id).is_empty().then_some(())
        })
        .await;
        e.shutdown().await;
    }

    /// A create forbidden by RBAC fails the run at once, with the message naming the
    /// Role: the run task does not try again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_run_task_does_not_retry_a_forbidden_create() {
        let mock = KubeMock::start().await;
        mock.on(Rule::new(
            Method::POST,
            job_path(),
            Reply::forbidden("create", &jobs(), NS, None),
        ));
        let e = env(&mock).await;
        let run = e.launch().await;
        let r = e.wait_ended(&run.id).await;
        assert_eq!(r.state, RunState::Failed);
        let failure = r.failure.expect("failure");
        assert_eq!(failure.stage, FailureStage::Agent);
        assert!(
            failure.message.contains("hoist-agent-runner") && failure.message.contains(NS),
            "{}",
            failure.message
        );
        assert_eq!(
            mock.count(|r| r.is("POST", &job_path())),
            1,
            "{}",
            mock.journal()
        );
        mock.wait_for("the Secret deleted", || {
            mock.list(&secrets(), NS).is_empty().then_some(())
        })
        .await;
        e.shutdown().await;
    }
}
