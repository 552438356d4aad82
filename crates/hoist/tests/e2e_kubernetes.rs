//! End-to-end tests of the Kubernetes runner on the real test cluster: a `hoist server`
//! subprocess, `hoist agent` subprocesses whose `KUBECONFIG` is the test cluster's
//! admin kubeconfig, and the `hoist` CLI; the cluster is read with the test kubectl.
//!
//! Without `HOIST_TEST_K8S=1` (`scripts/test-env.sh`, then `source
//! ~/.cache/hoist/test-env.sh`) each test is skipped with a note, unless
//! `HOIST_TEST_REQUIRE_SERVICES` is set (then it fails). Each test works in its own
//! namespace, created and deleted by the test, so tests run in parallel. Images come
//! from the local Docker daemon the kubelet uses (`imagePullPolicy: IfNotPresent`):
//! nothing is pulled. Waits have deadlines; no test asserts how long something took.

mod cli_support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use cli_support::{AgentProc, World};
use serde_json::Value;

/// How long a run may take to reach a state it is expected to reach.
const LONG: Duration = Duration::from_secs(180);

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

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set (source test-env.sh)"))
}

fn image() -> String {
    std::env::var("HOIST_TEST_BUSYBOX_IMAGE")
        .unwrap_or_else(|_| "hoist-test/busybox:latest".to_string())
}

/// A name no other test (or earlier run of this one) uses: DNS-safe.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    format!("{prefix}-{}-{nanos:08x}", std::process::id())
}

/// The run id in `hoist launch --wait`'s stderr.
fn launched_id(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("hoist: launched run "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no `launched run` line in:\n{stderr}"))
        .to_string()
}

/// The test cluster through its kubectl.
struct Kubectl {
    bin: String,
    kubeconfig: String,
}

impl Kubectl {
    fn new() -> Kubectl {
        Kubectl {
            bin: env("HOIST_TEST_KUBECTL"),
            kubeconfig: env("HOIST_TEST_KUBECONFIG"),
        }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        use std::io::Write;
        let mut c = Command::new(&self.bin);
        c.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        c.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().expect("run kubectl");
        if let Some(s) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(s.as_bytes())
                .expect("write kubectl stdin");
        }
        drop(child.stdin.take());
        child.wait_with_output().expect("kubectl output")
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let o = self.run(args, stdin);
        assert!(
            o.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a, None)).expect("kubectl JSON")
    }

    /// Names of the objects of `kinds` (comma-separated) in `ns` matching `selector`.
    fn names(&self, ns: &str, kinds: &str, selector: &str) -> Vec<String> {
        let v = self.json(&["-n", ns, "get", kinds, "-l", selector]);
        v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap_or("?"),
                    o["metadata"]["name"].as_str().unwrap_or("?")
                )
            })
            .collect()
    }

    /// Waits until nothing of `kinds` in `ns` matches `selector`.
    fn wait_none(&self, ns: &str, kinds: &str, selector: &str) {
        let t0 = Instant::now();
        loop {
            let left = self.names(ns, kinds, selector);
            if left.is_empty() {
                return;
            }
            assert!(
                t0.elapsed() < LONG,
                "still there after {LONG:?} ({selector} in {ns}): {left:?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// A namespace of one test, deleted when dropped.
struct Namespace {
    kubectl: Kubectl,
    name: String,
}

impl Namespace {
    fn create(prefix: &str) -> Namespace {
        let kubectl = Kubectl::new();
        let name = unique(prefix);
        kubectl.ok(&["create", "namespace", &name], None);
        // The namespace's default service account (pods need it to be admitted).
        let t0 = Instant::now();
        while kubectl
            .run(&["-n", &name, "get", "serviceaccount", "default"], None)
            .status
            .code()
            != Some(0)
        {
            assert!(t0.elapsed() < LONG, "no default service account in {name}");
            std::thread::sleep(Duration::from_millis(200));
        }
        Namespace { kubectl, name }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self
            .kubectl
            .run(&["delete", "namespace", &self.name, "--wait=false"], None);
    }
}

/// A server, an agent serving one kubernetes queue, the test's namespace.
struct K8sE2e {
    w: World,
    ns: Namespace,
    agents: Vec<AgentProc>,
    agent_name: String,
    config: std::path::PathBuf,
}

/// The seed's queue config (W&B's "Kubernetes" tab), placeholders filled: the test
/// image, never pulled, in the test's namespace.
fn seed_job(ns: &str, extra_spec: &str, extra_pod: &str) -> String {
    format!(
        "kind: Job
spec:
{extra_spec}  template:
    spec:
{extra_pod}      containers:
        - name: main
          image: {img}
          imagePullPolicy: IfNotPresent
      restartPolicy: Never
metadata:
  name: seed-job
  namespace: {ns}
apiVersion: batch/v1
",
        img = image()
    )
}

impl K8sE2e {
    fn new(prefix: &str, agent_config: &str) -> K8sE2e {
        let registry = format!(
            "registry:\n  type: oci\n  uri: {}/hoist-e2e\n",
            std::env::var("HOIST_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into())
        );
        K8sE2e::with_registry(prefix, &registry, agent_config)
    }

    /// With `registry` (the agent config's `registry:` block) instead of the test
    /// registry without auth.
    fn with_registry(prefix: &str, registry: &str, agent_config: &str) -> K8sE2e {
        let w = World::start_with_log_level("info");
        w.login_admin();
        let ns = Namespace::create(prefix);
        let config = w.file(
            "launch-config.yaml",
            &format!("{registry}stopped_run_timeout: 5s\n{agent_config}"),
        );
        K8sE2e {
            w,
            agent_name: unique(&format!("{prefix}-agent")),
            ns,
            agents: Vec::new(),
            config,
        }
    }

    fn queue(&self, name: &str, config: &str, flags: &[&str]) {
        let file = self.w.file(&format!("{name}.yaml"), config);
        let file = file.to_string_lossy();
        let mut args = vec![
            "queue",
            "create",
            name,
            "--resource",
            "kubernetes",
            "--config",
            &file,
        ];
        args.extend_from_slice(flags);
        self.w.run(&args).ok();
    }

    /// Starts (or restarts) the agent on `queues` and waits until it polls.
    fn agent(&mut self, queues: &[&str]) {
        let mut args = vec!["-c".to_string(), self.config.to_string_lossy().to_string()];
        for q in queues {
            args.push("-q".into());
            args.push(q.to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let kubeconfig = env("HOIST_TEST_KUBECONFIG");
        let a = self
            .w
            .spawn_agent_env(&self.agent_name, &args, &[("KUBECONFIG", &kubeconfig)]);
        self.agents.push(a);
        let t0 = Instant::now();
        loop {
            let list = self.w.run(&["agent", "list", "-o", "json"]).ok().json();
            let up = list.as_array().into_iter().flatten().any(|a| {
                a["name"] == self.agent_name.as_str()
                    && matches!(a["status"].as_str(), Some("polling" | "running"))
            });
            if up
                && self
                    .agents
                    .last()
                    .expect("agent")
                    .log()
                    .contains("Agent registered")
            {
                return;
            }
            if let Some(st) = self.agents.last_mut().expect("agent").try_wait() {
                panic!(
                    "the agent exited early ({st})\n{}",
                    self.agents.last().expect("agent").log()
                );
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "the agent did not register"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn agent_log(&self) -> String {
        self.agents
            .iter()
            .map(AgentProc::log)
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    fn launch(&self, queue: &str, args: &[&str]) -> String {
        let img = image();
        let mut a = vec!["launch", "--queue", queue, "--image", &img, "--"];
        a.extend_from_slice(args);
        let r = self.w.run(&a).ok();
        let id = r.stdout.trim().to_string();
        assert!(!id.is_empty(), "no run id printed");
        id
    }

    fn show(&self, id: &str) -> Value {
        self.w.run(&["run", "show", id, "-o", "json"]).ok().json()
    }

    fn wait_run(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let t0 = Instant::now();
        loop {
            let r = self.show(id);
            if pred(&r) {
                return r;
            }
            assert!(
                t0.elapsed() < LONG,
                "run {id}: not {what} after {LONG:?}:\n{}\nlogs:\n{:#?}\nagent:\n{}",
                serde_json::to_string_pretty(&r).unwrap_or_default(),
                self.logs(id),
                self.agent_log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn wait_state(&self, id: &str, state: &str) -> Value {
        self.wait_run(id, state, |r| r["state"] == state)
    }

    fn wait_ended(&self, id: &str) -> Value {
        self.wait_run(id, "ended", |r| {
            matches!(
                r["state"].as_str(),
                Some("finished" | "failed" | "stopped" | "cancelled")
            )
        })
    }

    /// The run's log as (stream, text).
    fn logs(&self, id: &str) -> Vec<(String, String)> {
        let r = self.w.run(&["run", "logs", id, "-o", "json"]);
        r.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| {
                (
                    v["stream"].as_str().unwrap_or_default().to_string(),
                    v["text"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    fn job_lines(&self, id: &str) -> Vec<String> {
        self.logs(id)
            .into_iter()
            .filter(|(s, _)| s != "system")
            .map(|(_, t)| t)
            .collect()
    }

    /// Waits until nothing hoist created for run `id` is left: Jobs, pods, Secrets,
    /// ConfigMaps.
    fn wait_nothing_left(&self, id: &str) {
        self.ns.kubectl.wait_none(
            &self.ns.name,
            "jobs,pods,secrets,configmaps",
            &format!("hoist.dev/run-id={}", id),
        );
    }
}

/// The seed's Job config end to end through the CLI: a run that exits 0 is `finished`
/// with its stdout and stderr lines in the log; one that exits 3 is `failed` with exit
/// code 3 and its output; nothing is left in the cluster after either.
#[test]
fn seed_job_runs_end_to_end() {
    require_k8s!();
    let mut e = K8sE2e::new("k8s-seed", "");
    e.queue("kq", &seed_job(&e.ns.name, "", ""), &[]);
    e.agent(&["kq"]);
    let img = image();
    let ok =
        e.w.run(&[
            "launch",
            "--queue",
            "kq",
            "--image",
            &img,
            "--wait",
            "--",
            "sh",
            "-c",
            "echo hello from kubernetes; echo to stderr >&2; echo token=${HOIST_RUN_TOKEN:+set}",
        ])
        .ok();
    // A container's log is one stream: stderr lines come with stdout's.
    for want in ["hello from kubernetes", "to stderr", "token=set"] {
        assert!(
            ok.stdout.lines().any(|l| l == want),
            "{want:?} not in:\n{}",
            ok.stdout
        );
    }
    let id = launched_id(&ok.stderr);
    let r = e.show(&id);
    assert_eq!(r["state"], "finished", "{r:#}");
    assert_eq!(r["exit_code"], 0);
    e.wait_nothing_left(&id);

    let bad =
        e.w.run(&[
            "launch",
            "--queue",
            "kq",
            "--image",
            &img,
            "--wait",
            "--",
            "sh",
            "-c",
            "echo about to fail; exit 3",
        ])
        .code(1)
        .stdout_has("about to fail")
        .stderr_has("exit code 3");
    let bad = launched_id(&bad.stderr);
    let r = e.show(&bad);
    assert_eq!(r["state"], "failed", "{r:#}");
    assert_eq!(r["exit_code"], 3, "{r:#}");
    assert_eq!(r["failure"]["stage"], "run", "{r:#}");
    assert!(
        r["failure"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("exit code 3"),
        "{r:#}"
    );
    assert!(e.job_lines(&bad).iter().any(|l| l == "about to fail"));
    e.wait_nothing_left(&bad);
}

/// `parallelism: 2`: both pods' lines are in the run's log, each prefixed with its
/// pod and container.
#[test]
fn parallel_pods_all_logs() {
    require_k8s!();
    let mut e = K8sE2e::new("k8s-par", "");
    e.queue(
        "kp",
        &seed_job(&e.ns.name, "  parallelism: 2\n  completions: 2\n", ""),
        &[],
    );
    e.agent(&["kp"]);
    let id = e.launch("kp", &["sh", "-c", "echo pod says hi; echo second line"]);
    let r = e.wait_ended(&id);
    assert_eq!(r["state"], "finished", "{r:#}\n{:#?}", e.logs(&id));
    let lines = e.job_lines(&id);
    let pods: BTreeSet<String> = lines
        .iter()
        .filter(|l| l.ends_with("] pod says hi"))
        .map(|l| l.split(']').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(pods.len(), 2, "two pods' lines, prefixed: {lines:?}");
    for p in &pods {
        assert!(p.starts_with('[') && p.ends_with("/main"), "{p}");
        assert!(
            lines.iter().any(|l| *l == format!("{p}] second line")),
            "{lines:?}"
        );
    }
    e.wait_nothing_left(&id);
}

/// A stop deletes the Job with foreground propagation: the run is `stopped` once its
/// pods are gone, and nothing is left.
#[test]
fn stop_deletes_in_the_foreground() {
    require_k8s!();
    let mut e = K8sE2e::new("k8s-stop", "");
    e.queue("ks", &seed_job(&e.ns.name, "", ""), &[]);
    e.agent(&["ks"]);
    let id = e.launch("ks", &["sh", "-c", "echo started; exec sleep 600"]);
    e.wait_state(&id, "running");
    e.wait_run(&id, "logging", |_| {
        e.job_lines(&id).iter().any(|l| l == "started")
    });
    e.w.run(&["run", "stop", &id]).ok();
    let r = e.wait_ended(&id);
    assert_eq!(r["state"], "stopped", "{r:#}");
    // The run ends only once its pods are gone.
    let pods =
        e.ns.kubectl
            .names(&e.ns.name, "pods", &format!("hoist.dev/run-id={}", id));
    let running: Vec<&String> = pods.iter().collect();
    assert!(
        running.is_empty(),
        "pods still there when the run was reported stopped: {running:?}"
    );
    e.wait_nothing_left(&id);
}

/// `kill -9` of the agent while a Job runs; the restarted agent (same name) re-adopts
/// it and its log is complete, no line lost or doubled; nothing is left afterwards.
/// A run that ended while the agent was away is swept at its start.
#[test]
fn restart_readopts_with_the_full_log() {
    require_k8s!();
    let mut e = K8sE2e::new("k8s-restart", "");
    e.queue("kr", &seed_job(&e.ns.name, "", ""), &[]);
    e.agent(&["kr"]);
    let id = e.launch(
        "kr",
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 40 ]; do echo line $i; i=$((i+1)); sleep 0.25; done",
        ],
    );
    e.wait_run(&id, "logging", |_| {
        e.job_lines(&id).iter().any(|l| l == "line 5")
    });
    e.agents.last_mut().expect("agent").kill_9();
    e.agent(&["kr"]);
    let r = e.wait_ended(&id);
    assert_eq!(r["state"], "finished", "{r:#}\n{}", e.agent_log());
    let lines: Vec<String> = e
        .job_lines(&id)
        .into_iter()
        .filter(|l| l.starts_with("line "))
        .collect();
    let want: Vec<String> = (0..40).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, want, "every line once, in order");
    assert!(
        e.logs(&id).iter().any(|(_, t)| t.contains("re-adopted")),
        "{:#?}",
        e.logs(&id)
    );
    e.wait_nothing_left(&id);
}

/// An image that cannot be pulled fails the run at `starting` with the reason, well
/// before the start timeout; a pod nothing can schedule shows a warning and fails when
/// `start_timeout` fires, with the reason.
#[test]
fn start_failures_are_reported_with_their_reason() {
    require_k8s!();
    let mut e = K8sE2e::new("k8s-fail", "start_timeout: 40s\n");
    // The run's image goes into a container whose image is `${image_uri}`.
    e.queue(
        "kf",
        &seed_job(&e.ns.name, "", "")
            .replace(&format!("image: {}", image()), "image: ${image_uri}"),
        &[],
    );
    e.queue(
        "kn",
        &seed_job(
            &e.ns.name,
            "",
            "      nodeSelector:\n        hoist.dev/no-such-node: \"true\"\n",
        ),
        &[],
    );
    e.agent(&["kf", "kn"]);
    let img = "hoist-test/no-such-image:never";
    let id =
        e.w.run(&["launch", "--queue", "kf", "--image", img, "--", "true"])
            .ok()
            .stdout
            .trim()
            .to_string();
    let r = e.wait_ended(&id);
    assert_eq!(r["state"], "failed", "{r:#}");
    let msg = r["failure"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.contains("ErrImagePull") || msg.contains("ImagePullBackOff"),
        "{msg}"
    );
    assert!(
        !msg.contains("start_timeout"),
        "failed by the reason, not the timeout: {msg}"
    );
    let states: Vec<&str> = r["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["to"].as_str())
        .collect();
    assert!(!states.contains(&"running"), "{states:?}");
    e.wait_nothing_left(&id);

    let id = e.launch("kn", &["true"]);
    // While the pod is pending: a warning on the run, and a line in its log.
    let r = e.wait_run(&id, "warned", |r| {
        r["warnings"].as_array().is_some_and(|ws| {
            ws.iter().any(|w| {
                w["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("cannot be scheduled"))
            })
        })
    });
    assert_eq!(r["state"], "starting", "{r:#}");
    let shown = e.w.run(&["run", "show", &id]).ok().stdout;
    let warnings = shown
        .split_once("warnings (UTC):")
        .map(|(_, w)| w.to_string())
        .unwrap_or_else(|| panic!("no warnings in `run show`:\n{shown}"));
    assert!(
        warnings.contains("cannot be scheduled") && warnings.contains("didn't match"),
        "{shown}"
    );
    assert!(
        e.logs(&id)
            .iter()
            .any(|(s, t)| s == "system" && t.contains("cannot be scheduled"))
    );
    let r = e.wait_ended(&id);
    assert_eq!(r["state"], "failed", "{r:#}");
    let msg = r["failure"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("start_timeout") && msg.contains("cannot be scheduled"),
        "{msg}"
    );
    let shown = e.w.run(&["run", "show", &id]).ok().stdout;
    assert!(shown.contains("cannot be scheduled"), "{shown}");
    e.wait_nothing_left(&id);
}

/// Privileged settings that an admin let into a queue config are still refused by an
/// agent whose config does not allow them: nothing is created.
#[test]
fn privileged_settings_are_refused_by_the_agent() {
    require_k8s!();
    let mut e = K8sE2e::new("k8s-priv", "");
    let ns = e.ns.name.clone();
    let configs = [
        ("kpriv", seed_job(&ns, "", "").replace(
            "          imagePullPolicy: IfNotPresent\n",
            "          imagePullPolicy: IfNotPresent\n          securityContext:\n            privileged: true\n",
        ), "privileged"),
        ("khost", seed_job(&ns, "", "      hostNetwork: true\n"), "hostNetwork"),
        ("kpath", seed_job(&ns, "", "      volumes:\n        - name: root\n          hostPath:\n            path: /\n"), "hostPath"),
    ];
    for (q, c, _) in &configs {
        e.queue(q, c, &["--allow-privileged"]);
    }
    e.agent(&["kpriv", "khost", "kpath"]);
    for (q, _, what) in &configs {
        let id = e.launch(q, &["true"]);
        let r = e.wait_ended(&id);
        assert_eq!(r["state"], "failed", "{q}: {r:#}");
        let msg = r["failure"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("refused") && msg.contains(what), "{q}: {msg}");
        assert!(
            e.ns.kubectl
                .names(
                    &ns,
                    "jobs,pods,secrets",
                    &format!("hoist.dev/run-id={}", id)
                )
                .is_empty(),
            "{q}: objects were created"
        );
    }
}

/// A custom object: a small CRD installed by the test, and the test as its controller
/// (it creates the pod from the object's template, labelled like it, then sets the
/// object's status). hoist resolves the kind by discovery, follows the pod's log and
/// ends the run from the object's status; deleting it deletes what it owns.
#[test]
fn custom_object_runs_through_its_status() {
    require_k8s!();
    let mut e = K8sE2e::new("k8s-crd", "");
    let ns = e.ns.name.clone();
    let k = Kubectl::new();
    // Cluster-scoped and shared by every run of this test: created when missing.
    let crd = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: trainings.e2e.hoist.dev
spec:
  group: e2e.hoist.dev
  scope: Namespaced
  names: {plural: trainings, singular: training, kind: Training}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
"#;
    k.ok(&["apply", "-f", "-"], Some(crd));
    let t0 = Instant::now();
    while !k
        .ok(&["api-resources", "--api-group=e2e.hoist.dev"], None)
        .contains("Training")
    {
        assert!(t0.elapsed() < LONG, "the CRD is not served");
        std::thread::sleep(Duration::from_millis(300));
    }
    let config = format!(
        "apiVersion: e2e.hoist.dev/v1
kind: Training
metadata:
  name: train
  namespace: {ns}
spec:
  workers: 1
  template:
    spec:
      containers:
        - name: worker
          image: {img}
          imagePullPolicy: IfNotPresent
      restartPolicy: Never
",
        img = image()
    );
    e.queue("kc", &config, &[]);
    e.agent(&["kc"]);
    let id = e.launch(
        "kc",
        &["sh", "-c", "echo training step 1; echo training done"],
    );
    let sel = format!("hoist.dev/run-id={id}");
    // The controller: the run's Training, then its pod.
    let t0 = Instant::now();
    let obj = loop {
        let v = k.json(&["-n", &ns, "get", "trainings", "-l", &sel]);
        if let Some(o) = v["items"].as_array().and_then(|a| a.first()) {
            break o.clone();
        }
        assert!(
            t0.elapsed() < LONG,
            "no Training for run {id}\n{}",
            e.agent_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let name = obj["metadata"]["name"].as_str().expect("name").to_string();
    let uid = obj["metadata"]["uid"].as_str().expect("uid").to_string();
    let tpl = &obj["spec"]["template"];
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": format!("{name}-worker-0"),
            "namespace": ns,
            "labels": tpl["metadata"]["labels"],
            "ownerReferences": [{"apiVersion": "e2e.hoist.dev/v1", "kind": "Training", "name": name, "uid": uid}],
        },
        "spec": tpl["spec"],
    });
    k.ok(&["create", "-f", "-"], Some(&pod.to_string()));
    k.ok(
        &[
            "-n",
            &ns,
            "patch",
            "training",
            &name,
            "--type",
            "merge",
            "-p",
            r#"{"status":{"phase":"Running"}}"#,
        ],
        None,
    );
    e.wait_state(&id, "running");
    // The pod ends; the controller says so on the object.
    let t0 = Instant::now();
    loop {
        let p = k.json(&["-n", &ns, "get", "pod", &format!("{name}-worker-0")]);
        if p["status"]["phase"] == "Succeeded" {
            break;
        }
        assert!(t0.elapsed() < LONG, "the pod did not succeed: {p:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
    k.ok(
        &["-n", &ns, "patch", "training", &name, "--type", "merge", "-p",
          r#"{"status":{"phase":"Succeeded","conditions":[{"type":"Succeeded","status":"True"}]}}"#],
        None,
    );
    let r = e.wait_ended(&id);
    assert_eq!(r["state"], "finished", "{r:#}\n{}", e.agent_log());
    let lines = e.job_lines(&id);
    let prefix = format!("[{name}-worker-0/worker] ");
    for want in ["training step 1", "training done"] {
        assert!(
            lines.iter().any(|l| *l == format!("{prefix}{want}")),
            "{want:?} not in {lines:?}"
        );
    }
    e.ns.kubectl.wait_none(&ns, "trainings,pods,secrets", &sel);
}

/// A pod deleted by someone else than hoist (a node drained, an eviction) while the
/// run runs: the run goes back to its queue with the reason, runs again (a new Job of
/// the same name once the old one is gone), and can be stopped.
#[test]
fn a_deleted_pod_requeues_the_run() {
    require_k8s!();
    let mut e = K8sE2e::new("k8s-preempt", "");
    e.queue("kd", &seed_job(&e.ns.name, "", ""), &[]);
    e.agent(&["kd"]);
    let id = e.launch("kd", &["sh", "-c", "echo attempt; exec sleep 600"]);
    e.wait_state(&id, "running");
    let sel = format!("hoist.dev/run-id={id}");
    let pods = e.ns.kubectl.names(&e.ns.name, "pods", &sel);
    assert_eq!(pods.len(), 1, "{pods:?}");
    let pod = pods[0].split('/').nth(1).expect("pod name").to_string();
    e.ns.kubectl.ok(
        &[
            "-n",
            &e.ns.name,
            "delete",
            "pod",
            &pod,
            "--grace-period=1",
            "--wait=false",
        ],
        None,
    );
    let r = e.wait_run(&id, "re-queued", |r| {
        r["timeline"].as_array().into_iter().flatten().any(|t| {
            t["to"] == "queued"
                && t["reason"]
                    .as_str()
                    .is_some_and(|s| s.contains("preempted") && s.contains(&pod))
        })
    });
    assert!(r["attempts"].as_i64().unwrap_or(0) >= 1, "{r:#}");
    // Taken again and running in a new pod.
    let r = e.wait_run(&id, "running again", |r| {
        r["state"] == "running"
            && r["timeline"]
                .as_array()
                .is_some_and(|t| t.iter().filter(|x| x["to"] == "running").count() == 2)
    });
    assert_eq!(r["state"], "running");
    e.w.run(&["run", "stop", &id]).ok();
    let r = e.wait_ended(&id);
    assert_eq!(r["state"], "stopped", "{r:#}");
    e.wait_nothing_left(&id);
}

/// `hoist launch --dry-run` when the cluster answers: the objects are also checked by
/// the API server (`dryRun=All`) and nothing is created; an object the API server
/// refuses (a namespace that does not exist) is exit 2 with its answer.
#[test]
fn dry_run_asks_the_api_server() {
    require_k8s!();
    let e = K8sE2e::new("k8s-dry", "");
    e.queue("kq", &seed_job(&e.ns.name, "", ""), &[]);
    e.queue("kgone", &seed_job("hoist-no-such-namespace", "", ""), &[]);
    let kubeconfig = env("HOIST_TEST_KUBECONFIG");
    let cfg = e.config.to_string_lossy().to_string();
    let img = image();
    let dry = |queue: &str| {
        e.w.run_env(
            &[
                "launch",
                "-q",
                queue,
                "--image",
                &img,
                "--dry-run",
                "--agent-config",
                &cfg,
                "--",
                "echo",
                "hi",
            ],
            &[("KUBECONFIG", &kubeconfig)],
        )
    };
    let r = dry("kq")
        .ok()
        .stderr_has("asked the Kubernetes v1.20")
        .stderr_has("checked by the runner: ok")
        .stderr_has("checked by the backend (server-side dry run): ok")
        .stderr_has("nothing was enqueued");
    let run_id = r
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("hoist.dev/run-id: "))
        .unwrap_or_else(|| panic!("no run-id label in:\n{}", r.stdout))
        .trim_matches('\'')
        .to_string();
    assert!(r.stdout.contains("kind: Job"), "{}", r.stdout);
    assert!(
        e.ns.kubectl
            .names(
                &e.ns.name,
                "jobs,pods,secrets",
                &format!("hoist.dev/run-id={run_id}")
            )
            .is_empty(),
        "the dry run created objects"
    );
    dry("kgone")
        .code(2)
        .stderr_has("checked by the runner: ok")
        .stderr_has("refused by the backend (server-side dry run)")
        .stderr_has("hoist-no-such-namespace")
        .stderr_has("nothing was enqueued");
    let runs = e.w.run(&["run", "list", "-o", "json"]).ok().json();
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(0), "{runs}");
}

/// The agent's registry credentials reach the cluster as the run's pull Secret: an
/// image that is only in the password-protected test registry (removed from the
/// node's daemon first) is pulled with them, the run finishes, and the Secret goes
/// with the run.
#[test]
fn image_in_the_agents_registry_is_pulled_with_its_credentials() {
    require_k8s!();
    let host = env("HOIST_TEST_AUTH_REGISTRY");
    let user = env("HOIST_TEST_AUTH_REGISTRY_USER");
    let password = std::fs::read_to_string(env("HOIST_TEST_AUTH_REGISTRY_PASSWORD_FILE"))
        .expect("registry password")
        .trim()
        .to_string();
    let docker_dir = tempfile::tempdir().expect("tempdir");
    {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        std::fs::write(
            docker_dir.path().join("config.json"),
            serde_json::json!({"auths": {host.as_str(): {"auth": auth}}}).to_string(),
        )
        .expect("docker config");
    }
    let image_ref = format!("{host}/hoist-e2e/{}:v1", unique("pull"));
    let docker = |args: &[&str]| {
        let o = Command::new("docker")
            .arg("--config")
            .arg(docker_dir.path())
            .args(args)
            .output()
            .expect("run docker");
        assert!(
            o.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    docker(&["tag", &image(), &image_ref]);
    docker(&["push", &image_ref]);
    // Only the registry has it now: the kubelet must pull it.
    docker(&["rmi", &image_ref]);
    struct Untag(String);
    impl Drop for Untag {
        fn drop(&mut self) {
            let _ = Command::new("docker").args(["rmi", &self.0]).output();
        }
    }
    let _untag = Untag(image_ref.clone());
    let registry = format!(
        "registry:\n  type: oci\n  uri: {host}/hoist-e2e\n  credentials-file: {}\n",
        docker_dir.path().join("config.json").display()
    );
    let mut e = K8sE2e::with_registry("k8s-pull", &registry, "");
    e.queue(
        "kq",
        &seed_job(&e.ns.name, "", "")
            .replace(&format!("image: {}", image()), "image: ${image_uri}"),
        &[],
    );
    e.agent(&["kq"]);
    let r = e.w.run(&[
        "launch",
        "--queue",
        "kq",
        "--image",
        &image_ref,
        "--wait",
        "--",
        "sh",
        "-c",
        "echo pulled with credentials",
    ]);
    let id = launched_id(&r.stderr);
    assert!(
        r.stdout.lines().any(|l| l == "pulled with credentials"),
        "{}\n{}\nagent:\n{}",
        r.stdout,
        r.stderr,
        e.agent_log()
    );
    assert_eq!(e.show(&id)["state"], "finished");
    e.wait_nothing_left(&id);
    assert!(
        !e.agent_log().contains(&password),
        "the registry password is in the agent's log"
    );
}
