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
use std::time::{Duration, Instant};

use cli_support::{AgentProc, World, agents_log, launched_id};
use hoist_testkit::{
    HoldingProxy, Kubectl, TestNamespace, busybox_image as image, env, require_k8s, unique,
    wait_until,
};

/// How long a run may take to reach a state it is expected to reach.
const LONG: Duration = hoist_testkit::LONG;

/// A server, an agent serving kubernetes queues, the test's namespace.
struct K8sE2e {
    w: World,
    ns: TestNamespace,
    agents: Vec<AgentProc>,
    agent_name: String,
    config: std::path::PathBuf,
    /// The agent's kubeconfig: the test cluster's admin one, or a proxy's.
    kubeconfig: std::path::PathBuf,
}

/// The seed's queue config (W&B's "Kubernetes" tab), placeholders filled: the test
/// image, never pulled, in the test's namespace.
fn seed_job(ns: &str, extra_spec: &str, extra_pod: &str) -> String {
    seed_job_with(ns, extra_spec, extra_pod, "")
}

/// [`seed_job`] with `more` (YAML lines) after the run's container, at its indentation:
/// more containers.
fn seed_job_with(ns: &str, extra_spec: &str, extra_pod: &str, more: &str) -> String {
    format!(
        "kind: Job
spec:
{extra_spec}  template:
    spec:
{extra_pod}      containers:
        - name: main
          image: {img}
          imagePullPolicy: IfNotPresent
{more}      restartPolicy: Never
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
        let ns = TestNamespace::create(prefix);
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
            kubeconfig: env("HOIST_TEST_KUBECONFIG").into(),
        }
    }

    fn queue(&self, name: &str, config: &str, flags: &[&str]) {
        self.w
            .create_queue_from(name, "kubernetes", &format!("{name}.yaml"), config, flags);
    }

    /// Starts (or restarts) the agent on `queues` and waits until it polls.
    fn agent(&mut self, queues: &[&str]) {
        self.agent_env(queues, &[]);
    }

    /// [`K8sE2e::agent`] with more environment variables.
    fn agent_env(&mut self, queues: &[&str], extra: &[(&str, &str)]) {
        let kubeconfig = self.kubeconfig.to_string_lossy().to_string();
        let mut env = vec![("KUBECONFIG", kubeconfig.as_str())];
        env.extend_from_slice(extra);
        self.w.start_agent(
            &mut self.agents,
            &self.agent_name,
            &self.config,
            queues,
            &env,
        );
    }

    fn agent_log(&self) -> String {
        agents_log(&self.agents)
    }

    fn launch(&self, queue: &str, args: &[&str]) -> String {
        self.w.launch_image(queue, &image(), args)
    }

    /// Waits until nothing hoist created for run `id` is left: Jobs, pods, Secrets,
    /// ConfigMaps.
    fn wait_nothing_left(&self, id: &str) {
        self.ns.wait_run_gone(id);
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
    let r = e.w.show_run(&id);
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
    let r = e.w.show_run(&bad);
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
    assert!(e.w.job_lines(&bad).iter().any(|l| l == "about to fail"));
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
    let r = e.w.wait_ended(&id);
    assert_eq!(r["state"], "finished", "{r:#}\n{:#?}", e.w.run_logs(&id));
    let lines = e.w.job_lines(&id);
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
    e.w.wait_state(&id, "running");
    e.w.wait_run(&id, "logging", |_| {
        e.w.job_lines(&id).iter().any(|l| l == "started")
    });
    e.w.run(&["run", "stop", &id]).ok();
    let r = e.w.wait_ended(&id);
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
    e.w.wait_run(&id, "logging", |_| {
        e.w.job_lines(&id).iter().any(|l| l == "line 5")
    });
    e.agents.last_mut().expect("agent").kill_9();
    e.agent(&["kr"]);
    let r = e.w.wait_ended(&id);
    assert_eq!(r["state"], "finished", "{r:#}\n{}", e.agent_log());
    let lines: Vec<String> =
        e.w.job_lines(&id)
            .into_iter()
            .filter(|l| l.starts_with("line "))
            .collect();
    let want: Vec<String> = (0..40).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, want, "every line once, in order");
    assert!(
        e.w.run_logs(&id)
            .iter()
            .any(|(_, t)| t.contains("re-adopted")),
        "{:#?}",
        e.w.run_logs(&id)
    );
    e.wait_nothing_left(&id);
}

/// A Job with two containers writing numbered lines at different rates, one of them
/// behind: the agent talks to the cluster through a proxy that holds the `slow`
/// container's log stream, so at the `kill -9` the server has `main`'s lines up to
/// some time T and none of `slow`'s, though `slow` wrote lines before T. The restarted
/// agent (same name) re-adopts the run, and every line of each container is in the
/// run's log exactly once, in order: each container's follower resumes after its own
/// source's last line on the server (`[pod/container] ` lines, `LogResume::for_source`;
/// a source the server has nothing of resumes by the absent-stream rule), where
/// resuming every follower after the run's last line (T) lost `slow`'s early lines.
#[test]
fn two_containers_readopt_with_every_line_once() {
    require_k8s!();
    let mut e = K8sE2e::new("k8s-readopt2", "");
    let proxy = HoldingProxy::start_blocking(&e.kubeconfig);
    e.kubeconfig = proxy.kubeconfig();
    let slow = format!(
        "        - name: slow
          image: {img}
          imagePullPolicy: IfNotPresent
          command: [sh, -c, 'i=0; while [ $i -lt 24 ]; do echo slow $i; i=$((i+1)); sleep 0.5; done']
",
        img = image()
    );
    e.queue("k2", &seed_job_with(&e.ns.name, "", "", &slow), &[]);
    e.agent(&["k2"]);
    let held = proxy.hold("GET", |p, q| {
        p.ends_with("/log") && q.split('&').any(|kv| kv == "container=slow")
    });
    let id = e.launch(
        "k2",
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 240 ]; do echo fast $i; i=$((i+1)); sleep 0.05; done",
        ],
    );
    wait_until("slow's log stream held", LONG, || held.held().is_some());
    // `slow` has written lines; then `main`'s lines written after them reach the server.
    let pod =
        e.ns.kubectl
            .names(&e.ns.name, "pods", &format!("hoist.dev/run-id={id}"))[0]
            .split('/')
            .nth(1)
            .expect("pod name")
            .to_string();
    wait_until("slow's first lines", LONG, || {
        e.ns.kubectl
            .ok(&["-n", &e.ns.name, "logs", &pod, "-c", "slow"])
            .contains("slow 3")
    });
    let shipped = |w: &World| {
        w.job_lines(&id)
            .iter()
            .filter(|l| l.contains("/main] fast "))
            .count()
    };
    let then = shipped(&e.w);
    wait_until("main's later lines on the server", LONG, || {
        shipped(&e.w) >= then + 10
    });
    let before = e.w.job_lines(&id);
    assert!(
        !before.iter().any(|l| l.contains("/slow] ")),
        "slow's log was held, yet: {before:?}"
    );
    e.agents.last_mut().expect("agent").kill_9();
    e.agent(&["k2"]);
    let r = e.w.wait_ended(&id);
    assert_eq!(r["state"], "finished", "{r:#}\n{}", e.agent_log());
    assert!(
        e.w.run_logs(&id)
            .iter()
            .any(|(_, t)| t.contains("re-adopted")),
        "{:#?}",
        e.w.run_logs(&id)
    );
    let lines = e.w.job_lines(&id);
    for (container, word, n) in [("main", "fast", 240), ("slow", "slow", 24)] {
        let infix = format!("{pod}/{container}] {word} ");
        let got: Vec<String> = lines
            .iter()
            .filter_map(|l| l.split_once(&infix).map(|(_, n)| n.to_string()))
            .collect();
        let want: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        assert_eq!(
            got, want,
            "container {container}: every line once, in order"
        );
    }
    e.wait_nothing_left(&id);
}

/// `hoist run cancel` on a run the agent is starting: its Secret exists and the Job's
/// create is in flight (the agent talks to the cluster through a proxy that holds that
/// request). The run is `cancelled` and stays so; the held create then reaches the API
/// server (the Job is created after the cancel), and the agent deletes everything of
/// the run all the same.
#[test]
fn cancel_while_starting_leaves_nothing() {
    require_k8s!();
    let mut e = K8sE2e::new("k8s-cancel", "");
    let proxy = HoldingProxy::start_blocking(&e.kubeconfig);
    e.kubeconfig = proxy.kubeconfig();
    e.queue("kc", &seed_job(&e.ns.name, "", ""), &[]);
    e.agent(&["kc"]);
    let hold = proxy.hold("POST", |p, _| p.ends_with("/jobs"));
    let id = e.launch("kc", &["sh", "-c", "echo never seen; exec sleep 600"]);
    wait_until("the Job's create held", LONG, || hold.held().is_some());
    let sel = format!("hoist.dev/run-id={id}");
    let secrets = e.ns.kubectl.names(&e.ns.name, "secrets", &sel);
    assert!(
        !secrets.is_empty(),
        "no Secret while the Job's create is held"
    );
    e.w.run(&["run", "cancel", &id]).ok();
    assert_eq!(e.w.show_run(&id)["state"], "cancelled");
    hold.release();
    wait_until("the held create answered", LONG, || hold.answer().is_some());
    assert_eq!(
        hold.answer(),
        Some(201),
        "the Job was created after the cancel"
    );
    e.wait_nothing_left(&id);
    let r = e.w.show_run(&id);
    assert_eq!(r["state"], "cancelled", "{r:#}\n{}", e.agent_log());
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
    let r = e.w.wait_ended(&id);
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
    let r = e.w.wait_run(&id, "warned", |r| {
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
        e.w.run_logs(&id)
            .iter()
            .any(|(s, t)| s == "system" && t.contains("cannot be scheduled"))
    );
    let r = e.w.wait_ended(&id);
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
        let r = e.w.wait_ended(&id);
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
    let k = Kubectl::from_env();
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
    k.ok_with_input(&["apply", "-f", "-"], crd);
    let t0 = Instant::now();
    while !k
        .ok(&["api-resources", "--api-group=e2e.hoist.dev"])
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
    k.ok_with_input(&["create", "-f", "-"], &pod.to_string());
    k.ok(&[
        "-n",
        &ns,
        "patch",
        "training",
        &name,
        "--type",
        "merge",
        "-p",
        r#"{"status":{"phase":"Running"}}"#,
    ]);
    e.w.wait_state(&id, "running");
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
    k.ok(&[
        "-n",
        &ns,
        "patch",
        "training",
        &name,
        "--type",
        "merge",
        "-p",
        r#"{"status":{"phase":"Succeeded","conditions":[{"type":"Succeeded","status":"True"}]}}"#,
    ]);
    let r = e.w.wait_ended(&id);
    assert_eq!(r["state"], "finished", "{r:#}\n{}", e.agent_log());
    let lines = e.w.job_lines(&id);
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
    e.w.wait_state(&id, "running");
    let sel = format!("hoist.dev/run-id={id}");
    let pods = e.ns.kubectl.names(&e.ns.name, "pods", &sel);
    assert_eq!(pods.len(), 1, "{pods:?}");
    let pod = pods[0].split('/').nth(1).expect("pod name").to_string();
    e.ns.kubectl.ok(&[
        "-n",
        &e.ns.name,
        "delete",
        "pod",
        &pod,
        "--grace-period=1",
        "--wait=false",
    ]);
    let r = e.w.wait_run(&id, "re-queued", |r| {
        r["timeline"].as_array().into_iter().flatten().any(|t| {
            t["to"] == "queued"
                && t["reason"]
                    .as_str()
                    .is_some_and(|s| s.contains("preempted") && s.contains(&pod))
        })
    });
    assert!(r["attempts"].as_i64().unwrap_or(0) >= 1, "{r:#}");
    // Taken again and running in a new pod.
    let r = e.w.wait_run(&id, "running again", |r| {
        r["state"] == "running"
            && r["timeline"]
                .as_array()
                .is_some_and(|t| t.iter().filter(|x| x["to"] == "running").count() == 2)
    });
    assert_eq!(r["state"], "running");
    e.w.run(&["run", "stop", &id]).ok();
    let r = e.w.wait_ended(&id);
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
        let o = std::process::Command::new("docker")
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
            let _ = std::process::Command::new("docker")
                .args(["rmi", &self.0])
                .output();
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
    assert_eq!(e.w.show_run(&id)["state"], "finished");
    e.wait_nothing_left(&id);
    assert!(
        !e.agent_log().contains(&password),
        "the registry password is in the agent's log"
    );
}

/// A code job on a kubernetes queue of an agent whose builder is kaniko, end to end
/// through the CLI: the context goes to moto's S3, the stand-in executor
/// (`HOIST_TEST_KANIKO_IMAGE`: kaniko's command line, a real buildah build) builds it
/// in a Job and pushes to the password-protected registry, and the run's pod pulls
/// the pushed image with the run's pull Secret and prints what the build copied in.
/// The relaunch finds the tag in the registry: no build Job. Nothing of the builds is
/// left in the namespace or in the bucket.
#[test]
fn code_job_is_built_in_the_cluster_then_runs_from_the_pushed_image() {
    require_k8s!();
    let executor = env("HOIST_TEST_KANIKO_IMAGE");
    let moto = env("HOIST_TEST_MOTO_URL");
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
    let bucket = unique("ctx");
    let curl = |args: &[&str]| {
        std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .expect("curl")
    };
    assert_eq!(curl(&["-X", "PUT", &format!("{moto}/{bucket}")]), "200");
    let registry = format!(
        "registry:\n  type: oci\n  uri: {host}/hoist-e2e/{}\n  credentials-file: {}\n",
        unique("app"),
        docker_dir.path().join("config.json").display()
    );
    let agent_config = format!(
        r#"environment: {{type: aws, region: us-east-1}}
builder:
  type: kaniko
  build-context-store: s3://{bucket}/contexts
  secret-name: aws-creds
  secret-key: credentials
  kaniko-image: {executor}
  kaniko-config:
    spec:
      template:
        spec:
          hostNetwork: true
          containers:
          - securityContext: {{capabilities: {{add: [SYS_ADMIN]}}}}
            env:
            - {{name: S3_ENDPOINT, value: "{moto}"}}
            - {{name: S3_FORCE_PATH_STYLE, value: "true"}}
            - {{name: AWS_REGION, value: us-east-1}}
kubernetes:
  allow-host-network: true
  allow-cap-add: [SYS_ADMIN]
"#
    );
    let mut e = K8sE2e::with_registry("k8s-kaniko", &registry, &agent_config);
    // Builds go to the agent's default namespace: the test's.
    let config = std::fs::read_to_string(&e.config).unwrap().replace(
        "kubernetes:\n",
        &format!("kubernetes:\n  namespace: {}\n", e.ns.name),
    );
    std::fs::write(&e.config, config).unwrap();
    e.ns.kubectl.ok_with_input(
        &[
            "-n",
            &e.ns.name,
            "create",
            "secret",
            "generic",
            "aws-creds",
            "--from-file=credentials=/dev/stdin",
        ],
        "[default]\naws_access_key_id = AKIAHOISTTEST0000001\naws_secret_access_key = hoist-test-secret-key-value\n",
    );
    e.queue(
        "kq",
        &seed_job(&e.ns.name, "", "")
            .replace(&format!("image: {}", image()), "image: ${image_uri}"),
        &[],
    );
    e.agent_env(
        &["kq"],
        &[
            ("AWS_ACCESS_KEY_ID", "AKIAHOISTTEST0000001"),
            ("AWS_SECRET_ACCESS_KEY", "hoist-test-secret-key-value"),
            ("AWS_ENDPOINT_URL", &moto),
        ],
    );
    let nonce = unique("hello");
    let src = tempfile::tempdir().unwrap();
    std::fs::write(
        src.path().join("Dockerfile"),
        "FROM 127.0.0.1:5000/hoist-test/busybox:latest\nCOPY hello.txt /hello.txt\nRUN cat /hello.txt\n",
    )
    .unwrap();
    std::fs::write(src.path().join("hello.txt"), format!("{nonce}\n")).unwrap();
    let srcs = src.path().to_string_lossy().to_string();
    e.w.run(&[
        "job",
        "create",
        "code",
        "app",
        &srcs,
        "--entry-point",
        "cat /hello.txt",
    ])
    .ok();

    let r =
        e.w.run(&["launch", "--queue", "kq", "--job", "app", "--wait"]);
    let id = launched_id(&r.stderr);
    assert!(
        r.stdout.lines().any(|l| l == nonce),
        "{}\n{}\nlogs: {:#?}\nagent:\n{}",
        r.stdout,
        r.stderr,
        e.w.run_logs(&id),
        e.agent_log()
    );
    let shown = e.w.show_run(&id);
    assert_eq!(shown["state"], "finished");
    // The run records the image, built by kaniko; `run show` says so.
    let built = &shown["built"];
    assert_eq!(built["builder"], "kaniko", "{shown:#}");
    assert_eq!(built["cache_hit"], false, "{shown:#}");
    let built_image = built["image"].as_str().unwrap().to_string();
    e.w.run(&["run", "show", &id])
        .ok()
        .stdout_has(&format!("{built_image} (built by kaniko)"));
    let logs: Vec<String> = e.w.run_logs(&id).into_iter().map(|(_, l)| l).collect();
    assert!(
        logs.iter().any(|l| l.contains("in the Kubernetes Job")),
        "{logs:#?}"
    );
    assert!(logs.iter().any(|l| l.starts_with("STEP ")), "{logs:#?}");
    e.wait_nothing_left(&id);
    e.ns.kubectl
        .wait_none(&e.ns.name, "jobs,pods", "hoist.dev/build");
    assert!(
        e.ns.kubectl
            .names(&e.ns.name, "secrets", "hoist.dev/build")
            .is_empty()
    );
    let listing = std::process::Command::new("curl")
        .args(["-s", &format!("{moto}/{bucket}?list-type=2")])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&listing.stdout).contains(".tar.gz"),
        "the context is left in the bucket: {}",
        String::from_utf8_lossy(&listing.stdout)
    );

    // The relaunch: the registry has the tag, nothing is built.
    let r =
        e.w.run(&["launch", "--queue", "kq", "--job", "app", "--wait"]);
    let again = launched_id(&r.stderr);
    assert!(
        r.stdout.lines().any(|l| l == nonce),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    let logs: Vec<String> = e.w.run_logs(&again).into_iter().map(|(_, l)| l).collect();
    assert!(
        logs.iter().any(|l| l.contains("exists; no build")),
        "{logs:#?}"
    );
    assert!(
        !logs.iter().any(|l| l.contains("Kubernetes Job")),
        "{logs:#?}"
    );
    let shown = e.w.show_run(&again);
    assert_eq!(shown["built"]["image"], built_image.as_str(), "{shown:#}");
    assert_eq!(shown["built"]["cache_hit"], true, "{shown:#}");
    e.w.run(&["run", "show", &again])
        .ok()
        .stdout_has(&format!("{built_image} (cache hit: not rebuilt)"));
    assert!(!e.agent_log().contains(&password));
    assert!(!e.agent_log().contains("hoist-test-secret-key-value"));
}
