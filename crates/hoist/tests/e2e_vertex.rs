//! End-to-end tests of the Vertex AI runner through the CLI: a `hoist server`
//! subprocess, `hoist agent` subprocesses with `environment: {type: gcp, …}` whose
//! `GOOGLE_APPLICATION_CREDENTIALS` is the fake's credentials file and whose
//! `HOIST_VERTEX_ENDPOINT` / `HOIST_LOGGING_ENDPOINT` point at the scripted fake of
//! Vertex AI, Cloud Logging and Google's token endpoint (`hoist_fakes::vertex`, served
//! in this test process on 127.0.0.1). Nothing else is needed: these never skip.
//! Waits have deadlines; no test asserts how long something took.

mod cli_support;

use std::time::Duration;

use cli_support::{AgentProc, World, agents_log};
use hoist_fakes::vertex::{FAKE_PROJECT, FakeVertex, Script};
use hoist_testkit::unique;

const IMAGE: &str = "us-central1-docker.pkg.dev/hoist-fake-project/launch/train:e2e";

/// A server, the fake, an agent serving vertex queues.
struct VertexE2e {
    w: World,
    fake: FakeVertex,
    /// Serves the fake (the test thread blocks on the CLI).
    _rt: tokio::runtime::Runtime,
    agents: Vec<AgentProc>,
    agent_name: String,
    config: std::path::PathBuf,
    credentials: std::path::PathBuf,
}

impl Drop for VertexE2e {
    fn drop(&mut self) {
        for a in &mut self.agents {
            a.kill_9();
        }
    }
}

fn fixture(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../hoist-core/tests/fixtures/queue-configs")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

impl VertexE2e {
    fn new(script: Script) -> VertexE2e {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let fake = rt.block_on(FakeVertex::start(script)).expect("fake vertex");
        let w = World::start_with_log_level("info");
        w.login_admin();
        let credentials = w.file("adc.json", &fake.credentials_json());
        let config = w.file(
            "launch-config.yaml",
            &format!(
                "environment:
  type: gcp
  region: us-central1
  project: {FAKE_PROJECT}
registry:
  type: gcr
  uri: us-central1-docker.pkg.dev/{FAKE_PROJECT}/launch/train
builder:
  type: noop
env-allow-list: [GPU_COUNT]
stopped_run_timeout: 5s
"
            ),
        );
        VertexE2e {
            w,
            fake,
            _rt: rt,
            agents: Vec::new(),
            agent_name: unique("vertex-agent"),
            config,
            credentials,
        }
    }

    fn queue(&self, name: &str, file: &str, config: &str) {
        self.w.create_queue_from(name, "vertex", file, config, &[]);
    }

    /// Starts (or restarts) the agent on `queues` and waits until it polls.
    fn agent(&mut self, queues: &[&str]) {
        let creds = self.credentials.to_string_lossy().to_string();
        let url = self.fake.url();
        let env = [
            ("GOOGLE_APPLICATION_CREDENTIALS", creds.as_str()),
            ("HOIST_VERTEX_ENDPOINT", url.as_str()),
            ("HOIST_LOGGING_ENDPOINT", url.as_str()),
            ("GPU_COUNT", "1"),
        ];
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
}

fn lines(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("line {i}")).collect()
}

/// Every Vertex queue config of the seeds runs to `finished`, its job's log complete.
#[test]
fn e2e_vertex_seed_queue_configs_run_to_the_end() {
    let mut e = VertexE2e::new(Script::default().training(Duration::from_millis(800), 5));
    let configs = [
        ("seed003", "vertex.003-launch-on-vertex.yaml"),
        ("gpupools", "vertex.gpu-pools.yaml"),
        ("camel", "vertex.rest-camel-case.json"),
    ];
    for (q, f) in configs {
        e.queue(q, f, &fixture(f));
    }
    e.agent(&["seed003", "gpupools", "camel"]);
    let ids: Vec<String> = configs
        .iter()
        .map(|(q, _)| e.w.launch_image(q, IMAGE, &["python", "train.py"]))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let r = e.w.wait_ended(id);
        assert_eq!(r["state"], "finished", "{r:#}\n{}", e.agent_log());
        // gpu-pools has three replicas: each line says which one wrote it.
        let prefix = if i == 1 { "[workerpool0-0] " } else { "" };
        let want: Vec<String> = lines(5).iter().map(|l| format!("{prefix}{l}")).collect();
        assert_eq!(e.w.job_lines(id), want, "run {id}");
    }
    let bodies = e.fake.created_bodies();
    assert_eq!(bodies.len(), 3);
    for id in &ids {
        let b = bodies
            .iter()
            .find(|b| b["labels"]["hoist-run-id"] == id.as_str())
            .unwrap_or_else(|| panic!("no CustomJob labelled with run {id}"));
        assert_eq!(b["labels"]["hoist-agent"], e.agent_name.as_str());
        assert_eq!(
            b["jobSpec"]["workerPoolSpecs"][0]["containerSpec"]["imageUri"],
            IMAGE
        );
    }
    // gpu-pools: the placeholder pool kept, the third pool's GPU count from the macro.
    let gpu = bodies
        .iter()
        .find(|b| b["jobSpec"]["workerPoolSpecs"].as_array().unwrap().len() == 3)
        .expect("the gpu-pools job");
    assert_eq!(gpu["jobSpec"]["workerPoolSpecs"][1], serde_json::json!({}));
    assert_eq!(
        gpu["jobSpec"]["workerPoolSpecs"][2]["machineSpec"]["acceleratorCount"],
        "1"
    );
    assert_eq!(gpu["jobSpec"]["scheduling"]["strategy"], "SPOT");
}

/// Lines arrive while the job runs; `hoist run stop` cancels the CustomJob and the run
/// ends `stopped`.
#[test]
fn e2e_vertex_logs_arrive_live_and_stop_cancels() {
    let mut e = VertexE2e::new(Script::default().training(Duration::from_secs(120), 240));
    e.queue(
        "vq",
        "vq.yaml",
        &fixture("vertex.003-launch-on-vertex.yaml"),
    );
    e.agent(&["vq"]);
    let id = e.w.launch_image("vq", IMAGE, &["python", "train.py"]);
    e.w.wait_state(&id, "running");
    e.w.wait_log_line(&id, "line 3");
    assert_eq!(
        e.w.show_run(&id)["state"],
        "running",
        "lines came while it ran"
    );
    e.w.run(&["run", "stop", &id]).ok();
    let r = e.w.wait_ended(&id);
    assert_eq!(r["state"], "stopped", "{r:#}\n{}", e.agent_log());
    assert_eq!(e.fake.jobs()[0]["state"], "JOB_STATE_CANCELLED");
    assert_eq!(e.fake.calls().count("customJobs.cancel"), 1);
}

/// An agent killed with SIGKILL while its job runs: the next process of the same agent
/// re-adopts the CustomJob (by its labels) and the run's log is complete, each line once.
#[test]
fn e2e_vertex_agent_kill_9_readopts_with_the_whole_log_once() {
    let mut e = VertexE2e::new(Script::default().training(Duration::from_secs(10), 20));
    e.queue("vq", "vq.yaml", &fixture("vertex.rest-camel-case.json"));
    e.agent(&["vq"]);
    let id = e.w.launch_image("vq", IMAGE, &["python", "train.py"]);
    e.w.wait_log_line(&id, "line 3");
    e.agents[0].kill_9();
    e.agent(&["vq"]);
    let r = e.w.wait_ended(&id);
    assert_eq!(r["state"], "finished", "{r:#}\n{}", e.agent_log());
    assert_eq!(e.w.job_lines(&id), lines(20));
    assert_eq!(e.fake.calls().count("customJobs.create"), 1);
    assert!(
        e.agent_log().contains("re-adopted")
            || e.w
                .run_logs(&id)
                .iter()
                .any(|(_, t)| t.contains("re-adopted"))
    );
}
