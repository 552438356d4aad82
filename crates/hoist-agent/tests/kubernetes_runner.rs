//! The Kubernetes runner against the real test cluster (`source
//! ~/.cache/hoist/test-env.sh`, written by `scripts/test-env.sh`), driven directly
//! (no server): create/409, dry runs, discovery failures, the sweep of a dead agent's
//! leftovers, logs and exits.
//!
//! Without `HOIST_TEST_K8S=1` each test is skipped with a note, unless
//! `HOIST_TEST_REQUIRE_SERVICES` is set (then it fails). Each test uses its own
//! namespace, created and deleted by the test (through the runner's own client).

#![cfg(feature = "kubernetes")]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hoist_agent::config::KubernetesSettings;
use hoist_agent::logs::LogSink;
use hoist_agent::runners::kubernetes::{Cluster, KubernetesRunner, offline_dry_run};
use hoist_agent::runners::{Adopted, Exit, JobSpec, Runner, RunnerError};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(120);

fn k8s_available() -> bool {
    if std::env::var("HOIST_TEST_K8S").is_ok_and(|v| v == "1") {
        return true;
    }
    if std::env::var_os("HOIST_TEST_REQUIRE_SERVICES").is_some() {
        panic!(
            "HOIST_TEST_REQUIRE_SERVICES is set but HOIST_TEST_K8S is not: run scripts/test-env.sh and source ~/.cache/hoist/test-env.sh"
        );
    }
    eprintln!(
        "skipping: no Kubernetes cluster for tests (HOIST_TEST_K8S is not 1; run scripts/test-env.sh)"
    );
    false
}

macro_rules! require_k8s {
    () => {
        if !k8s_available() {
            return;
        }
    };
}

fn image() -> String {
    std::env::var("HOIST_TEST_BUSYBOX_IMAGE")
        .unwrap_or_else(|_| "hoist-test/busybox:latest".to_string())
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    format!("{prefix}-{}-{nanos:08x}", std::process::id())
}

fn settings() -> KubernetesSettings {
    KubernetesSettings {
        kubeconfig: Some(
            std::env::var("HOIST_TEST_KUBECONFIG")
                .expect("HOIST_TEST_KUBECONFIG")
                .into(),
        ),
        ..KubernetesSettings::default()
    }
}

/// A namespace of one test (deleted when dropped) and a runner.
struct Env {
    runner: KubernetesRunner,
    client: kube::Client,
    ns: String,
    agent: String,
}

impl Env {
    async fn new(prefix: &str) -> Env {
        let cluster = Cluster::connect(&settings()).await.expect("cluster config");
        cluster.check().await.expect("the test cluster answers");
        let client = cluster.client.clone();
        let ns = unique(prefix);
        let nss: Api<Namespace> = Api::all(client.clone());
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).expect("namespace"),
        )
        .await
        .expect("create namespace");
        // Pods are admitted once the namespace has its default service account.
        let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &ns);
        wait_until("the default service account", || async {
            sas.get_opt("default").await.ok().flatten().is_some()
        })
        .await;
        Env {
            runner: KubernetesRunner::new(cluster, KubernetesSettings::default(), false),
            client,
            agent: unique(&format!("{prefix}-agent")),
            ns,
        }
    }

    fn job(&self, run_id: &str, config: Value, args: &[&str]) -> JobSpec {
        JobSpec {
            run_id: run_id.into(),
            run_name: run_id.into(),
            project: "p".into(),
            entity: "admin".into(),
            queue: "admin/kq".into(),
            agent_name: self.agent.clone(),
            image: Some(image()),
            entry_point: None,
            args: args.iter().map(|s| s.to_string()).collect(),
            env: [
                ("HOIST_RUN_ID", run_id),
                ("HOIST_RUN_TOKEN", "hrt_s3cret-run-token"),
                ("PLAIN", "visible"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            resource_config: config,
            labels: BTreeMap::new(),
            source: None,
        }
    }

    fn seed(&self) -> Value {
        json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "seed-job", "namespace": self.ns},
            "spec": {"template": {"spec": {
                "containers": [{"name": "main", "image": image(), "imagePullPolicy": "IfNotPresent"}],
                "restartPolicy": "Never",
            }}},
        })
    }

    /// Names of the run's Jobs, pods and Secrets.
    async fn left(&self, run_id: &str) -> Vec<String> {
        let lp = ListParams::default().labels(&format!("hoist.dev/run-id={run_id}"));
        let mut out = Vec::new();
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &self.ns);
        for j in jobs.list(&lp).await.expect("jobs").items {
            out.push(format!("job/{}", j.metadata.name.unwrap_or_default()));
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.ns);
        for p in pods.list(&lp).await.expect("pods").items {
            out.push(format!("pod/{}", p.metadata.name.unwrap_or_default()));
        }
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
        for s in secrets.list(&lp).await.expect("secrets").items {
            out.push(format!("secret/{}", s.metadata.name.unwrap_or_default()));
        }
        out
    }

    async fn wait_nothing_left(&self, run_id: &str) {
        let t0 = Instant::now();
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

impl Drop for Env {
    fn drop(&mut self) {
        let client = self.client.clone();
        let ns = self.ns.clone();
        // A runtime of its own: the test's is being torn down.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let nss: Api<Namespace> = Api::all(client);
                let _ = nss.delete(&ns, &DeleteParams::default()).await;
            });
        })
        .join();
    }
}

async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while !f().await {
        assert!(t0.elapsed() < LONG, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), &env.ns);
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
    let jobs: Api<Job> = Api::namespaced(env.client.clone(), &env.ns);
    let theirs: Job = serde_json::from_value(json!({
        "metadata": {"name": format!("seed-job-{other}"), "namespace": env.ns},
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
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
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
