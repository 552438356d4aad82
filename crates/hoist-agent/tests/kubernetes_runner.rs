//! The Kubernetes runner against the real test cluster (`source
//! ~/.cache/hoist/test-env.sh`, written by `scripts/test-env.sh`), driven directly
//! (no server): create/409, a start given up midway, dry runs, discovery failures, the
//! sweep of a dead agent's leftovers, logs and exits.
//!
//! Without `HOIST_TEST_K8S=1` each test is skipped with a note, unless
//! `HOIST_TEST_REQUIRE_SERVICES` is set (then it fails). Each test uses its own
//! namespace, created and deleted by the test (`hoist_testkit::TestNamespace`).

#![cfg(feature = "kubernetes")]

mod kube_support;

use std::path::Path;
use std::time::Duration;

use hoist_agent::config::KubernetesSettings;
use hoist_agent::logs::LogSink;
use hoist_agent::runners::kubernetes::{Cluster, KubernetesRunner, offline_dry_run};
use hoist_agent::runners::{Adopted, Exit, JobSpec, Runner, RunnerError};
use hoist_testkit::{HoldingProxy, TestNamespace, busybox_image as image, require_k8s, unique};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};

const LONG: Duration = hoist_testkit::LONG;

fn admin_kubeconfig() -> std::path::PathBuf {
    hoist_testkit::env("HOIST_TEST_KUBECONFIG").into()
}

/// A namespace of one test (deleted when dropped) and a runner.
struct Env {
    runner: KubernetesRunner,
    /// The admin's client, straight to the API server.
    client: kube::Client,
    ns: TestNamespace,
    agent: String,
}

impl Env {
    async fn new(prefix: &str) -> Env {
        Env::via(prefix, &admin_kubeconfig()).await
    }

    /// A runner whose client configuration is `kubeconfig` (a [`HoldingProxy`]'s).
    async fn via(prefix: &str, kubeconfig: &Path) -> Env {
        let connect = |kubeconfig: &Path| {
            let settings = KubernetesSettings {
                kubeconfig: Some(kubeconfig.to_path_buf()),
                ..KubernetesSettings::default()
            };
            async move {
                let cluster = Cluster::connect(&settings).await.expect("cluster config");
                cluster.check().await.expect("the test cluster answers");
                cluster
            }
        };
        let client = connect(&admin_kubeconfig()).await.client;
        let cluster = connect(kubeconfig).await;
        let p = prefix.to_string();
        let ns = tokio::task::spawn_blocking(move || TestNamespace::create(&p))
            .await
            .expect("namespace");
        Env {
            runner: KubernetesRunner::new(cluster, KubernetesSettings::default(), false),
            client,
            agent: unique(&format!("{prefix}-agent")),
            ns,
        }
    }

    fn job(&self, run_id: &str, config: Value, args: &[&str]) -> JobSpec {
        kube_support::job_spec(run_id, &self.agent, config, args)
    }

    fn seed(&self) -> Value {
        json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "seed-job", "namespace": self.ns.name},
            "spec": {"template": {"spec": {
                "containers": [{"name": "main", "image": image(), "imagePullPolicy": "IfNotPresent"}],
                "restartPolicy": "Never",
            }}},
        })
    }

    /// Names of the run's Jobs, pods, Secrets and ConfigMaps.
    async fn left(&self, run_id: &str) -> Vec<String> {
        let lp = ListParams::default().labels(&format!("hoist.dev/run-id={run_id}"));
        let ns = &self.ns.name;
        let mut out = Vec::new();
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), ns);
        for j in jobs.list(&lp).await.expect("jobs").items {
            out.push(format!("job/{}", j.metadata.name.unwrap_or_default()));
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        for p in pods.list(&lp).await.expect("pods").items {
            out.push(format!("pod/{}", p.metadata.name.unwrap_or_default()));
        }
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        for s in secrets.list(&lp).await.expect("secrets").items {
            out.push(format!("secret/{}", s.metadata.name.unwrap_or_default()));
        }
        let maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        for m in maps.list(&lp).await.expect("configmaps").items {
            out.push(format!("configmap/{}", m.metadata.name.unwrap_or_default()));
        }
        out
    }

    async fn wait_nothing_left(&self, run_id: &str) {
        let t0 = std::time::Instant::now();
        loop {
            let left = self.left(run_id).await;
            if left.is_empty() {
                return;
            }
            assert!(t0.elapsed() < LONG, "left behind: {left:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

async fn wait_until<F, Fut>(what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    hoist_testkit::wait_until_async(what, LONG, f).await
}

fn texts(sink: &LogSink) -> Vec<String> {
    sink.snapshot().into_iter().map(|l| l.text).collect()
}

/// A Job runs: `running` resolves, the exit code comes from the container, its log is
/// complete when `wait` returns, the run token is in a Secret (never literal in the
/// Job), and cleanup deletes everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_logs_and_is_cleaned_up() {
    require_k8s!();
    let env = Env::new("k8s-run").await;
    let id = "run1ok";
    let job = env.job(id, env.seed(), &["sh", "-c", "echo one; echo two; exit 4"]);
    let sink = LogSink::new();
    let exec = env.runner.start(&job, sink.clone()).await.expect("start");
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), &env.ns.name);
    let created = jobs
        .list(&ListParams::default().labels(&format!("hoist.dev/run-id={id}")))
        .await
        .expect("jobs");
    let text = serde_json::to_string(&created.items).expect("json");
    assert!(
        !text.contains("s3cret"),
        "the run token is literal in the Job: {text}"
    );
    tokio::time::timeout(LONG, exec.running())
        .await
        .expect("running in time")
        .expect("runs");
    let exit = tokio::time::timeout(LONG, exec.wait())
        .await
        .expect("ends in time")
        .expect("exit");
    match &exit {
        Exit::Failed {
            code: Some(4),
            reason,
        } => assert!(reason.contains("exit code 4"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let lines = texts(&sink);
    assert!(
        lines.contains(&"one".to_string()) && lines.contains(&"two".to_string()),
        "{lines:?}"
    );
    exec.cleanup().await;
    env.wait_nothing_left(id).await;
}

/// A 409 on create: an object of the same name that is this run's (an earlier attempt)
/// is adopted; one that is not is refused, named, and left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_conflict_adopts_its_own_and_refuses_others() {
    require_k8s!();
    let env = Env::new("k8s-409").await;
    let id = "run409";
    let job = env.job(id, env.seed(), &["sh", "-c", "echo once; sleep 2"]);
    let first = env
        .runner
        .start(&job, LogSink::new())
        .await
        .expect("first start");
    // The same run started again (an attempt whose answer was lost): adopted.
    let sink = LogSink::new();
    let second = env
        .runner
        .start(&job, sink.clone())
        .await
        .expect("second start adopts");
    let exit = tokio::time::timeout(LONG, second.wait())
        .await
        .expect("in time")
        .expect("exit");
    assert_eq!(exit, Exit::Code(0));
    assert!(texts(&sink).contains(&"once".to_string()));
    drop(first);
    second.cleanup().await;
    env.wait_nothing_left(id).await;

    // Someone else's Job under the name this run would use.
    let other = "run409other";
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), &env.ns.name);
    let theirs: Job = serde_json::from_value(json!({
        "metadata": {"name": format!("seed-job-{other}"), "namespace": env.ns.name},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": image(), "imagePullPolicy": "IfNotPresent", "args": ["true"]}], "restartPolicy": "Never"}}},
    }))
    .expect("job");
    jobs.create(&PostParams::default(), &theirs)
        .await
        .expect("create theirs");
    let err = env
        .runner
        .start(&env.job(other, env.seed(), &["true"]), LogSink::new())
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, RunnerError::Start { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("already exists") && msg.contains(&format!("seed-job-{other}")),
        "{msg}"
    );
    assert!(
        jobs.get_opt(&format!("seed-job-{other}"))
            .await
            .expect("get")
            .is_some(),
        "theirs was deleted"
    );
    // What this start created (its Secret) is deleted again.
    wait_until("the failed start's Secret to go", || async {
        env.left(other).await.is_empty()
    })
    .await;
}

/// A start given up while the runner creates the run's objects (its future dropped, as
/// when `start_timeout` fires or the run task ends) leaves nothing behind, whichever
/// request was in flight. The runner talks to the cluster through a proxy that holds
/// one request until the test releases it, so the start is given up at a known step:
/// - the Job's create in flight (the Secret exists): the API server creates the Job
///   after its client went away; the start's undo must delete it too;
/// - the Secret's ownership patch in flight (the Secret and the Job exist).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_given_up_midway_leaves_nothing() {
    require_k8s!();
    let proxy = HoldingProxy::start(&admin_kubeconfig()).await;
    let env = Env::via("k8s-giveup", &proxy.kubeconfig()).await;
    /// Where the start is given up: while `method` of a request that `held` matches
    /// is in flight, with `existing` objects there; the API server's answer to it.
    struct Step {
        id: &'static str,
        method: &'static str,
        held: fn(&str, &str) -> bool,
        existing: &'static [&'static str],
        status: u16,
    }
    let steps = [
        Step {
            id: "rungiveupjob",
            method: "POST",
            held: |path, _| path.ends_with("/jobs"),
            existing: &["secret/"],
            status: 201,
        },
        Step {
            id: "rungiveupown",
            method: "PATCH",
            held: |path, _| path.contains("/secrets/"),
            existing: &["secret/", "job/"],
            status: 200,
        },
    ];
    for Step {
        id,
        method,
        held,
        existing,
        status,
    } in steps
    {
        let hold = proxy.hold(method, held);
        let job = env.job(id, env.seed(), &["sh", "-c", "echo never seen; sleep 600"]);
        let mut start = Box::pin(env.runner.start(&job, LogSink::new()));
        let what = format!("{id}: a {method} held");
        tokio::select! {
            r = &mut start => panic!("{id}: the start ended before {method} was held: {:?}", r.err()),
            _ = wait_until(&what, || async { hold.held().is_some() }) => {}
        }
        let before = env.left(id).await;
        for kind in existing {
            assert!(
                before.iter().any(|o| o.starts_with(kind)),
                "{id}: no {kind} while {:?} is held: {before:?}",
                hold.held()
            );
        }
        // The caller gives up; then the API server gets the request in flight.
        drop(start);
        hold.release();
        wait_until(&format!("{id}: the held {method} answered"), || async {
            hold.answer().is_some()
        })
        .await;
        assert_eq!(hold.answer(), Some(status), "{id}: {:?}", hold.held());
        env.wait_nothing_left(id).await;
    }
}

/// A kind the cluster does not serve fails the start with a clear message; a dry run
/// shows the masked objects and the API server's verdict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kinds_and_dry_runs() {
    require_k8s!();
    let env = Env::new("k8s-dry").await;
    let mut cfg = env.seed();
    cfg["apiVersion"] = json!("nosuch.hoist.dev/v1");
    cfg["kind"] = json!("Nothing");
    let err = env
        .runner
        .start(&env.job("rununknown", cfg, &["true"]), LogSink::new())
        .await
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("Nothing")
            && msg.contains("nosuch.hoist.dev/v1")
            && msg.contains("CRD installed"),
        "{msg}"
    );

    let job = env.job("rundry", env.seed(), &["true"]);
    let dry = env.runner.dry_run(&job).await.expect("dry run");
    assert_eq!(dry.backend_check, Some(Ok(())), "{dry:?}");
    let text = serde_json::to_string(&dry.objects).expect("json");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains("seed-job-rundry"), "{text}");
    assert!(
        env.left("rundry").await.is_empty(),
        "a dry run created objects"
    );
    let offline = offline_dry_run(&job, &KubernetesSettings::default(), false).expect("offline");
    assert_eq!(offline.backend_check, None);
    assert_eq!(offline.objects.len(), dry.objects.len());

    let mut bad = env.seed();
    bad["spec"]["template"]["spec"]["containers"][0]["name"] = json!("Not_A_DNS_Label");
    let dry = env
        .runner
        .dry_run(&env.job("rundrybad", bad, &["true"]))
        .await
        .expect("dry run");
    match &dry.backend_check {
        Some(Err(m)) => assert!(m.contains("Not_A_DNS_Label") || m.contains("name"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// An agent that died leaves a running Job behind; its next process sweeps the
/// objects of runs the server no longer assigns to it, and keeps the others, which it
/// re-adopts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_deletes_only_runs_that_are_over() {
    require_k8s!();
    let env = Env::new("k8s-sweep").await;
    let stale = env.job("runstale", env.seed(), &["sleep", "600"]);
    let kept = env.job("runkept", env.seed(), &["sh", "-c", "echo kept; sleep 3"]);
    let a = env
        .runner
        .start(&stale, LogSink::new())
        .await
        .expect("start stale");
    let b = env
        .runner
        .start(&kept, LogSink::new())
        .await
        .expect("start kept");
    // The agent dies: its executions are dropped, the objects stay.
    drop(a);
    drop(b);
    let swept = env
        .runner
        .sweep(&env.agent, &["runkept".to_string()])
        .await
        .expect("sweep");
    assert_eq!(swept, vec!["runstale".to_string()]);
    env.wait_nothing_left("runstale").await;
    assert!(
        !env.left("runkept").await.is_empty(),
        "the kept run's objects were swept"
    );
    let sink = LogSink::new();
    let Adopted::Found(exec) = env
        .runner
        .adopt(&kept, sink.clone(), None)
        .await
        .expect("adopt")
    else {
        panic!("not found");
    };
    let exit = tokio::time::timeout(LONG, exec.wait())
        .await
        .expect("in time")
        .expect("exit");
    assert_eq!(exit, Exit::Code(0));
    assert!(texts(&sink).contains(&"kept".to_string()));
    exec.cleanup().await;
    env.wait_nothing_left("runkept").await;
    // Another agent's name sweeps nothing of these.
    assert!(
        env.runner
            .sweep("someone-else", &[])
            .await
            .expect("sweep")
            .is_empty()
    );
}

/// A pod deleted by someone else while it runs (a drain, an eviction through the API):
/// the execution ends preempted, naming the pod, even though the Job's controller
/// starts a replacement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_deleted_behind_hoists_back_is_a_preemption() {
    require_k8s!();
    let env = Env::new("k8s-preempt").await;
    let id = "runpreempt";
    let job = env.job(id, env.seed(), &["sh", "-c", "echo up; exec sleep 600"]);
    let exec = env.runner.start(&job, LogSink::new()).await.expect("start");
    tokio::time::timeout(LONG, exec.running())
        .await
        .expect("running in time")
        .expect("runs");
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns.name);
    let lp = ListParams::default().labels(&format!("hoist.dev/run-id={id}"));
    let pod = pods.list(&lp).await.expect("pods").items[0]
        .metadata
        .name
        .clone()
        .expect("name");
    pods.delete(
        &pod,
        &DeleteParams {
            grace_period_seconds: Some(1),
            ..DeleteParams::default()
        },
    )
    .await
    .expect("delete the pod");
    let exit = tokio::time::timeout(LONG, exec.wait())
        .await
        .expect("ends in time")
        .expect("exit");
    match &exit {
        Exit::Preempted { reason } => assert!(reason.contains(&pod), "{reason}"),
        other => panic!("{other:?}"),
    }
    exec.cleanup().await;
    env.wait_nothing_left(id).await;
}
