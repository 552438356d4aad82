//! End-to-end tests of the SageMaker runner through the CLI: a `hoist server`
//! subprocess, `hoist agent` subprocesses with `environment: {type: aws, region:
//! us-east-1}` and an ECR registry in their launch-config, dummy keys, and
//! `AWS_ENDPOINT_URL` pointing at moto (`$HOIST_TEST_MOTO_URL`: STS, ECR, and for the
//! seeds' configs SageMaker itself) or `AWS_ENDPOINT_URL_SAGEMAKER` /
//! `AWS_ENDPOINT_URL_CLOUDWATCH_LOGS` at hoist-fakes' scripted SageMaker (served by
//! the test on its own runtime): a job that writes logs while training, stopped with
//! `hoist run stop`, and one re-adopted by an agent restarted after SIGKILL.
//!
//! Skipped without moto, unless `HOIST_TEST_REQUIRE_SERVICES` is set (then they fail).
//! Image references are ECR-shaped strings: nothing pulls them.

mod cli_support;

use std::time::Duration;

use cli_support::{AgentProc, World, agents_log, launched_id};
use hoist_fakes::sagemaker::{FakeSageMaker, Script};
use hoist_testkit::{service_url, unique};

const IMAGE: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/hoist-e2e:v1";

const SEED: &str =
    include_str!("../../hoist-core/tests/fixtures/queue-configs/sagemaker.000-set-up-launch.json");
const FULL: &str =
    include_str!("../../hoist-core/tests/fixtures/queue-configs/sagemaker.full.yaml");

struct SmE2e {
    w: World,
    agents: Vec<AgentProc>,
    agent_name: String,
    config: std::path::PathBuf,
    env: Vec<(String, String)>,
}

impl SmE2e {
    /// An agent whose STS and ECR are moto's, and SageMaker and CloudWatch Logs
    /// `sagemaker`'s (moto's when `None`).
    fn new(prefix: &str, moto: &str, sagemaker: Option<&str>) -> SmE2e {
        let w = World::start_with_log_level("info");
        w.login_admin();
        let config = w.file(
            "launch-config.yaml",
            "environment:\n  type: aws\n  region: us-east-1\nregistry:\n  type: ecr\n  uri: 123456789012.dkr.ecr.us-east-1.amazonaws.com/hoist-e2e\nstopped_run_timeout: 5s\n",
        );
        let mut env = vec![
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_SESSION_TOKEN", "testing"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_ENDPOINT_URL", moto),
        ];
        if let Some(url) = sagemaker {
            env.push(("AWS_ENDPOINT_URL_SAGEMAKER", url));
            env.push(("AWS_ENDPOINT_URL_CLOUDWATCH_LOGS", url));
        }
        SmE2e {
            w,
            agents: Vec::new(),
            agent_name: unique(&format!("{prefix}-agent")),
            config,
            env: env
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn queue(&self, name: &str, file: &str, config: &str) {
        self.w
            .create_queue_from(name, "sagemaker", file, config, &[]);
    }

    /// Starts (or restarts) the agent on `queues` and waits until it polls.
    fn agent(&mut self, queues: &[&str]) {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
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

    fn system_lines(&self, id: &str) -> Vec<String> {
        self.w
            .run_logs(id)
            .into_iter()
            .filter(|(s, _)| s == "system")
            .map(|(_, t)| t)
            .collect()
    }
}

/// A runtime for the fake (the test itself is synchronous, like the CLI it drives).
fn fake(script: Script) -> (tokio::runtime::Runtime, FakeSageMaker) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let f = rt.block_on(FakeSageMaker::start(script)).unwrap();
    (rt, f)
}

/// The seed's SageMaker queue config (its https:// S3OutputPath rewritten to s3://) and
/// the full config (its own TrainingJobName, spot training, tags) run end to end
/// against moto, which completes training jobs at once.
#[test]
fn seed_configs_run_end_to_end_against_moto() {
    let Some(moto) = service_url("HOIST_TEST_MOTO_URL") else {
        return;
    };
    let mut e = SmE2e::new("sm-seed", &moto, None);
    e.queue("sm-seed", "seed.json", SEED);
    e.queue("sm-full", "full.yaml", FULL);
    e.agent(&["sm-seed", "sm-full"]);
    // What the agent would send, created nowhere, the run token masked.
    let config = e.config.to_string_lossy().to_string();
    let dry =
        e.w.run(&[
            "launch",
            "-q",
            "sm-seed",
            "--image",
            IMAGE,
            "--dry-run",
            "--agent-config",
            &config,
            "--",
            "python",
            "train.py",
        ])
        .ok()
        .stderr_has("nothing was enqueued");
    for want in [
        "s3://bucket-name/key-name",
        "hoist:run-id",
        "TrainingInputMode: File",
    ] {
        assert!(dry.stdout.contains(want), "{want} not in:\n{}", dry.stdout);
    }
    assert!(
        !dry.stdout.contains("dry-run-placeholder"),
        "{}",
        dry.stdout
    );
    let ok =
        e.w.run(&[
            "launch", "--queue", "sm-seed", "--image", IMAGE, "--wait", "--", "python", "train.py",
        ])
        .ok();
    let id = launched_id(&ok.stderr);
    let r = e.w.show_run(&id);
    assert_eq!(r["state"], "finished", "{r:#}\n{}", e.agent_log());
    assert_eq!(r["exit_code"], 0);
    let sys = e.system_lines(&id);
    assert!(
        sys.iter()
            .any(|l| l.contains("rewritten to s3://bucket-name/key-name")),
        "{sys:#?}"
    );
    assert!(
        sys.iter()
            .any(|l| l.contains(&format!("training job hoist-{id}"))),
        "{sys:#?}"
    );

    let id = e.w.launch_image("sm-full", IMAGE, &[]);
    let r = e.w.wait_ended(&id);
    assert_eq!(r["state"], "finished", "{r:#}\n{}", e.agent_log());
    let sys = e.system_lines(&id);
    assert!(
        sys.iter()
            .any(|l| l.contains(&format!("training job launch-{id}"))),
        "{sys:#?}"
    );
}

/// Against the fake: the run is `running` while the job trains, its CloudWatch lines
/// come into the run's log as they are written, and `hoist run stop` stops the
/// training job: the run ends `stopped` (never `finished`).
#[test]
fn a_training_job_streams_its_logs_and_is_stopped_with_run_stop() {
    let Some(moto) = service_url("HOIST_TEST_MOTO_URL") else {
        return;
    };
    let (_rt, f) = fake(
        Script::default()
            .training(Duration::from_secs(300))
            .lines((0..600).map(|i| format!("tick {i}"))),
    );
    let mut e = SmE2e::new("sm-stop", &moto, Some(&f.url()));
    e.queue("sm-stop", "seed.json", SEED);
    e.agent(&["sm-stop"]);
    let id = e.w.launch_image("sm-stop", IMAGE, &["python", "train.py"]);
    e.w.wait_log_line(&id, "tick 1");
    let r = e.w.show_run(&id);
    assert_eq!(r["state"], "running", "{r:#}");
    e.w.run(&["run", "stop", &id]).ok();
    let r = e.w.wait_ended(&id);
    assert_eq!(r["state"], "stopped", "{r:#}\n{}", e.agent_log());
    assert_eq!(f.calls().count("StopTrainingJob"), 1);
    assert!(
        e.system_lines(&id)
            .iter()
            .any(|l| l.contains("SageMaker: Stopping")),
        "{:#?}",
        e.w.run_logs(&id)
    );
}

/// SIGKILL of the agent while a training job writes its log; the restarted agent (same
/// name) re-adopts the job by name and tags, and the run's log has every line once.
#[test]
fn a_restarted_agent_readopts_the_training_job_with_its_full_log() {
    let Some(moto) = service_url("HOIST_TEST_MOTO_URL") else {
        return;
    };
    let (_rt, f) = fake(
        Script::default()
            .training(Duration::from_secs(10))
            .lines((0..20).map(|i| format!("line {i}"))),
    );
    let mut e = SmE2e::new("sm-restart", &moto, Some(&f.url()));
    e.queue("sm-restart", "seed.json", SEED);
    e.agent(&["sm-restart"]);
    let id =
        e.w.launch_image("sm-restart", IMAGE, &["python", "train.py"]);
    e.w.wait_log_line(&id, "line 2");
    e.agents.last_mut().expect("agent").kill_9();
    e.agent(&["sm-restart"]);
    let r = e.w.wait_ended(&id);
    assert_eq!(r["state"], "finished", "{r:#}\n{}", e.agent_log());
    let lines: Vec<String> =
        e.w.job_lines(&id)
            .into_iter()
            .filter(|l| l.starts_with("line "))
            .collect();
    let want: Vec<String> = (0..20).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, want, "every line once, in order");
    assert!(
        e.system_lines(&id).iter().any(|l| l.contains("re-adopted")),
        "{:#?}",
        e.w.run_logs(&id)
    );
    assert_eq!(f.calls().count("CreateTrainingJob"), 1);
}
