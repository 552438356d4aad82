//! The Vertex AI runner through its public API against the scripted fake of Vertex AI,
//! Cloud Logging and Google's token endpoint (`hoist_fakes::vertex`): the create body,
//! the states, the logs (paged), stop, errors (429 retried, 400 shown with its
//! message), re-adoption by a new runner instance, sweep. Nothing here needs a service.

use std::collections::BTreeMap;
use std::time::Duration;

use hoist_agent::config::EnvironmentConfig;
use hoist_agent::environments::gcp::GcpEnvironment;
use hoist_agent::environments::{Ambient, from_config_with};
use hoist_agent::logs::LogSink;
use hoist_agent::runners::vertex::{Timing, VertexRunner};
use hoist_agent::runners::{Adopted, Execution, Exit, JobSpec, LogResume, Runner, RunnerError};
use hoist_core::api::LogStream;
use hoist_fakes::vertex::{End, FakeVertex, Script};
use hoist_testkit::wait_until_async;
use serde_json::{Value, json};

const IMAGE: &str = "us-central1-docker.pkg.dev/hoist-fake-project/launch/train:abc";
const WITHIN: Duration = Duration::from_secs(30);

struct Setup {
    fake: FakeVertex,
    _dir: tempfile::TempDir,
    env: GcpEnvironment,
    ambient: Ambient,
}

fn fast() -> Timing {
    Timing {
        poll_first: Duration::from_millis(20),
        poll_max: Duration::from_millis(100),
        log_interval: Duration::from_millis(50),
        log_settle: Duration::from_millis(50),
        give_up_after: Duration::from_secs(20),
        pending_warn_after: Duration::from_secs(600),
    }
}

async fn setup(script: Script) -> Setup {
    let fake = FakeVertex::start(script).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("adc.json");
    fake.write_credentials(&creds).unwrap();
    let ambient = Ambient::new(
        [
            (
                "GOOGLE_APPLICATION_CREDENTIALS",
                creds.display().to_string(),
            ),
            ("HOIST_VERTEX_ENDPOINT", fake.url()),
            ("HOIST_LOGGING_ENDPOINT", fake.url()),
        ],
        Some(dir.path().to_path_buf()),
    );
    let env = from_config_with(
        &EnvironmentConfig::Gcp {
            region: "us-central1".into(),
            project: Some("proj-1".into()),
        },
        &ambient,
    )
    .await
    .unwrap();
    let env = env
        .as_any()
        .downcast_ref::<GcpEnvironment>()
        .unwrap()
        .clone();
    Setup {
        fake,
        _dir: dir,
        env,
        ambient,
    }
}

impl Setup {
    async fn runner(&self) -> VertexRunner {
        VertexRunner::new(self.env.clone(), &self.ambient)
            .await
            .unwrap()
            .with_timing(fast())
    }
}

fn seed_config() -> Value {
    json!({
        "spec": {
            "worker_pool_specs": [{
                "machine_spec": {"machine_type": "n1-standard-4", "accelerator_type": "ACCELERATOR_TYPE_UNSPECIFIED", "accelerator_count": 0},
                "replica_count": 1,
                "container_spec": {"image_uri": IMAGE},
            }],
            "staging_bucket": "gs://my-launch-bucket/staging",
        },
        "run": {"restart_job_on_worker_restart": false, "timeout": 3600},
    })
}

fn job(run_id: &str, config: Value) -> JobSpec {
    JobSpec {
        run_id: run_id.into(),
        run_name: "swift-fox".into(),
        project: "proj".into(),
        entity: "team".into(),
        queue: "team/vertex".into(),
        agent_name: "agent-v".into(),
        image: Some(IMAGE.into()),
        entry_point: Some(vec!["python".into(), "train.py".into()]),
        args: vec!["--epochs".into(), "3".into()],
        env: [
            ("HOIST_RUN_ID", run_id),
            ("HOIST_RUN_TOKEN", "hrt_0123456789abcdefghij"),
            ("EPOCHS", "3"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        resource_config: config,
        labels: BTreeMap::new(),
        source: None,
    }
}

fn job_lines(sink: &LogSink) -> Vec<String> {
    sink.snapshot()
        .into_iter()
        .filter(|l| l.stream != LogStream::System)
        .map(|l| l.text)
        .collect()
}

fn system_lines(sink: &LogSink) -> String {
    sink.snapshot()
        .into_iter()
        .filter(|l| l.stream == LogStream::System)
        .map(|l| l.text)
        .collect::<Vec<_>>()
        .join("\n")
}

async fn ended(exec: &dyn Execution) -> Result<Exit, RunnerError> {
    tokio::time::timeout(WITHIN, exec.wait())
        .await
        .expect("the job ends")
}

fn lines(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("line {i}")).collect()
}

#[tokio::test]
async fn a_run_becomes_a_custom_job_whose_states_and_paged_logs_are_followed() {
    let s = setup(Script::default().training(Duration::from_millis(600), 7)).await;
    let runner = s.runner().await;
    let sink = LogSink::new();
    let exec = runner
        .start(&job("r1abc", seed_config()), sink.clone())
        .await
        .unwrap();
    assert!(
        exec.describe()
            .contains("projects/proj-1/locations/us-central1/customJobs/")
    );
    tokio::time::timeout(WITHIN, exec.running())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended(exec.as_ref()).await.unwrap(), Exit::Code(0));
    assert_eq!(job_lines(&sink), lines(7), "every line once, in order");
    let sys = system_lines(&sink);
    for st in [
        "JOB_STATE_QUEUED",
        "JOB_STATE_RUNNING",
        "JOB_STATE_SUCCEEDED",
    ] {
        assert!(sys.contains(st), "{sys}");
    }
    // The create body, as sent.
    let bodies = s.fake.created_bodies();
    assert_eq!(bodies.len(), 1);
    let b = &bodies[0];
    assert_eq!(b["displayName"], "hoist swift-fox r1abc");
    let p0 = &b["jobSpec"]["workerPoolSpecs"][0];
    assert_eq!(p0["machineSpec"]["machineType"], "n1-standard-4");
    assert_eq!(p0["containerSpec"]["imageUri"], IMAGE);
    assert_eq!(
        p0["containerSpec"]["command"],
        json!(["python", "train.py"])
    );
    assert_eq!(p0["containerSpec"]["args"], json!(["--epochs", "3"]));
    let env = p0["containerSpec"]["env"].as_array().unwrap();
    for n in ["HOIST_RUN_ID", "HOIST_RUN_TOKEN", "EPOCHS"] {
        assert!(env.iter().any(|e| e["name"] == n), "{n}");
    }
    assert_eq!(
        b["jobSpec"]["scheduling"],
        json!({"restartJobOnWorkerRestart": false, "timeout": "3600s"})
    );
    assert!(
        b["jobSpec"]["baseOutputDirectory"]["outputUriPrefix"]
            .as_str()
            .unwrap()
            .starts_with("gs://my-launch-bucket/staging/aiplatform-custom-job-")
    );
    assert_eq!(b["labels"]["hoist-run-id"], "r1abc");
    assert_eq!(b["labels"]["hoist-agent"], "agent-v");
    assert!(
        b["labels"]["hoist-queue"]
            .as_str()
            .unwrap()
            .starts_with("team-vertex-")
    );
    // Paging: seven entries, pages of three.
    let calls = s.fake.calls();
    assert!(calls.count("entries.list") >= 3, "{:?}", calls.all());
    assert_eq!(calls.count("customJobs.create"), 1);
    exec.cleanup().await;
}

#[tokio::test]
async fn a_failed_job_fails_with_its_message_and_an_expired_one_as_a_timeout() {
    let s = setup(Script::default().ending(End::Failed(
        "The replica workerpool0-0 exited with a non-zero status of 3.".into(),
    )))
    .await;
    let runner = s.runner().await;
    let exec = runner
        .start(&job("rfail", seed_config()), LogSink::new())
        .await
        .unwrap();
    match ended(exec.as_ref()).await.unwrap() {
        Exit::Failed { reason, .. } => assert!(reason.contains("non-zero status of 3"), "{reason}"),
        other => panic!("{other:?}"),
    }
    s.fake.set_script(Script::default().ending(End::Expired));
    let exec = runner
        .start(&job("rexp", seed_config()), LogSink::new())
        .await
        .unwrap();
    match ended(exec.as_ref()).await.unwrap() {
        Exit::Failed { reason, .. } => assert!(reason.contains("expired"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn stop_cancels_the_job_and_it_ends_cancelled() {
    let s = setup(Script::default().training(Duration::from_secs(60), 600)).await;
    let runner = s.runner().await;
    let sink = LogSink::new();
    let exec = runner
        .start(&job("rstop", seed_config()), sink.clone())
        .await
        .unwrap();
    tokio::time::timeout(WITHIN, exec.running())
        .await
        .unwrap()
        .unwrap();
    wait_until_async("a first log line", WITHIN, || {
        let n = job_lines(&sink).len();
        async move { n > 0 }
    })
    .await;
    exec.stop(Duration::from_secs(5)).await.unwrap();
    match ended(exec.as_ref()).await.unwrap() {
        Exit::Failed { reason, .. } => {
            assert!(
                reason.contains("cancelled") && !reason.contains("outside"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(system_lines(&sink).contains("JOB_STATE_CANCELLING"));
    assert_eq!(s.fake.jobs()[0]["state"], "JOB_STATE_CANCELLED");
    assert_eq!(s.fake.calls().count("customJobs.cancel"), 1);
    // A second stop of an ended job is fine (FAILED_PRECONDITION is "already ended").
    exec.stop(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_cancel_outside_hoist_is_a_failure_and_a_deleted_job_is_gone() {
    let s = setup(Script::default().training(Duration::from_secs(60), 10)).await;
    let runner = s.runner().await;
    let exec = runner
        .start(&job("rout", seed_config()), LogSink::new())
        .await
        .unwrap();
    tokio::time::timeout(WITHIN, exec.running())
        .await
        .unwrap()
        .unwrap();
    let id = s.fake.jobs()[0]["name"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    s.fake.cancel_outside(&id);
    match ended(exec.as_ref()).await.unwrap() {
        Exit::Failed { reason, .. } => assert!(reason.contains("outside hoist"), "{reason}"),
        other => panic!("{other:?}"),
    }
    let exec = runner
        .start(&job("rdel", seed_config()), LogSink::new())
        .await
        .unwrap();
    tokio::time::timeout(WITHIN, exec.running())
        .await
        .unwrap()
        .unwrap();
    let id = s.fake.jobs()[1]["name"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    s.fake.delete_job(&id);
    let e = ended(exec.as_ref()).await.unwrap_err();
    assert!(
        matches!(e, RunnerError::Shared(ref x) if matches!(**x, RunnerError::Gone(_))),
        "{e:?}"
    );
}

#[tokio::test]
async fn throttling_is_retried_and_a_refused_body_shows_vertexs_message() {
    let script = Script::default()
        .failing("customJobs.create", 429, 2)
        .failing("customJobs.get", 429, 2)
        .failing("entries.list", 503, 1);
    let s = setup(script).await;
    let runner = s.runner().await;
    let sink = LogSink::new();
    let exec = runner
        .start(&job("r429", seed_config()), sink.clone())
        .await
        .unwrap();
    assert_eq!(ended(exec.as_ref()).await.unwrap(), Exit::Code(0));
    assert_eq!(job_lines(&sink).len(), 4, "{:?}", job_lines(&sink));
    let calls = s.fake.calls().all();
    let statuses = |op: &str| {
        calls
            .iter()
            .filter(|c| c.operation == op)
            .map(|c| c.status)
            .collect::<Vec<_>>()
    };
    assert_eq!(statuses("customJobs.create"), vec![429, 429, 200]);
    assert!(
        statuses("customJobs.get").starts_with(&[429, 429, 200]),
        "{calls:?}"
    );

    // A field Vertex does not know: refused by Vertex (400), shown with its message.
    let mut config = seed_config();
    config["spec"]["worker_pool_specs"][0]["machine_spec"]["machine_typo"] = json!("x");
    let e = runner
        .start(&job("r400", config), LogSink::new())
        .await
        .err()
        .unwrap();
    let m = e.to_string();
    assert!(matches!(e, RunnerError::Start { .. }), "{e:?}");
    assert!(
        m.contains("400 INVALID_ARGUMENT") && m.contains("Unknown name \"machineTypo\""),
        "{m}"
    );
    assert!(!e.is_transient());
}

#[tokio::test]
async fn a_new_runner_readopts_the_job_and_the_log_resumes_without_repeats() {
    let s = setup(Script::default().training(Duration::from_secs(3), 12)).await;
    let first = s.runner().await;
    let j = job("radopt", seed_config());
    let sink1 = LogSink::new();
    let exec = first.start(&j, sink1.clone()).await.unwrap();
    wait_until_async("some lines", WITHIN, || {
        let n = job_lines(&sink1).len();
        async move { n >= 3 }
    })
    .await;
    // The agent goes away: the supervision ends, the job goes on.
    drop(exec);
    drop(first);
    let shipped = sink1.snapshot();
    let last = shipped
        .iter()
        .filter(|l| l.stream != LogStream::System)
        .map(|l| l.ts)
        .max();
    let second = s.runner().await;
    let sink2 = LogSink::new();
    let Adopted::Found(exec) = second
        .adopt_resuming(&j, sink2.clone(), LogResume::after(last))
        .await
        .unwrap()
    else {
        panic!("not found");
    };
    assert_eq!(ended(exec.as_ref()).await.unwrap(), Exit::Code(0));
    let mut all = job_lines(&sink1);
    all.extend(job_lines(&sink2));
    assert_eq!(all, lines(12), "the whole log, once");
    assert_eq!(s.fake.calls().count("customJobs.create"), 1);

    // Another run: nothing to adopt.
    match second
        .adopt_resuming(
            &job("rnone", seed_config()),
            LogSink::new(),
            LogResume::default(),
        )
        .await
        .unwrap()
    {
        Adopted::Gone(why) => assert!(why.contains("hoist-run-id=rnone"), "{why}"),
        Adopted::Found(_) => panic!("found a job of another run"),
    }
}

#[tokio::test]
async fn a_start_retried_after_its_create_adopts_the_job_instead_of_a_second_one() {
    let s = setup(Script::default().training(Duration::from_secs(60), 3)).await;
    let runner = s.runner().await;
    let j = job("rtwice", seed_config());
    let a = runner.start(&j, LogSink::new()).await.unwrap();
    let sink = LogSink::new();
    let b = runner.start(&j, sink.clone()).await.unwrap();
    assert_eq!(a.describe(), b.describe());
    assert_eq!(s.fake.calls().count("customJobs.create"), 1);
    assert!(system_lines(&sink).contains("earlier attempt"));
    // Sweep: the agent no longer holds this run → its job is cancelled.
    let swept = runner.sweep("agent-v", &[]).await.unwrap();
    assert_eq!(swept, vec!["rtwice".to_string()]);
    assert_eq!(s.fake.calls().count("customJobs.cancel"), 1);
    assert!(
        runner
            .sweep("agent-v", &["rtwice".into()])
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn pools_without_an_image_run_the_runs_image_and_others_keep_theirs() {
    let s = setup(Script::default()).await;
    let runner = s.runner().await;
    let config = json!({
        "spec": {
            "workerPoolSpecs": [
                {"machineSpec": {"machineType": "n1-standard-4"}, "replicaCount": "1", "containerSpec": {"imageUri": IMAGE}},
                {},
                {"machineSpec": {"machineType": "n1-standard-8"}, "replicaCount": 2, "containerSpec": {"args": ["--role", "worker"]}},
                {"machine_spec": {"machine_type": "n1-standard-2"}, "replica_count": 1, "container_spec": {"image_uri": "us-docker.pkg.dev/vertex-ai/ps:1", "command": ["ps"]}},
            ],
            "baseOutputDir": "gs://b/out",
        },
        "run": {"timeout": "600s"},
    });
    let sink = LogSink::new();
    let exec = runner
        .start(&job("rpools", config), sink.clone())
        .await
        .unwrap();
    assert_eq!(ended(exec.as_ref()).await.unwrap(), Exit::Code(0));
    let b = &s.fake.created_bodies()[0];
    let pools = b["jobSpec"]["workerPoolSpecs"].as_array().unwrap();
    assert_eq!(pools[1], json!({}));
    assert_eq!(pools[2]["containerSpec"]["imageUri"], IMAGE);
    assert_eq!(
        pools[2]["containerSpec"]["command"],
        json!(["python", "train.py"])
    );
    assert_eq!(
        pools[2]["containerSpec"]["args"],
        json!(["--role", "worker"])
    );
    assert_eq!(
        pools[3]["containerSpec"]["imageUri"],
        "us-docker.pkg.dev/vertex-ai/ps:1"
    );
    assert_eq!(pools[3]["containerSpec"]["command"], json!(["ps"]));
    assert!(
        pools[3]["containerSpec"]["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "HOIST_RUN_ID")
    );
    assert_eq!(b["jobSpec"]["scheduling"]["timeout"], "600s");
    // Several replicas: each line says which one wrote it.
    assert!(
        job_lines(&sink)
            .iter()
            .all(|l| l.starts_with("[workerpool0-0] ")),
        "{:?}",
        job_lines(&sink)
    );
}

#[tokio::test]
async fn refusals_before_anything_is_created() {
    let s = setup(Script::default()).await;
    let runner = s.runner().await;
    let mut j = job("rsecret", seed_config());
    j.env.insert("WANDB_API_KEY".into(), "abcdef".into());
    let e = runner.start(&j, LogSink::new()).await.err().unwrap();
    assert!(
        matches!(e, RunnerError::Refused(_)) && e.to_string().contains("Secret Manager"),
        "{e}"
    );
    let mut j = job("rhub", seed_config());
    j.image = Some("python:3.12".into());
    let e = runner.start(&j, LogSink::new()).await.err().unwrap();
    assert!(e.to_string().contains("`registry`"), "{e}");
    let mut config = seed_config();
    config["spec"]
        .as_object_mut()
        .unwrap()
        .remove("staging_bucket");
    let e = runner
        .start(&job("rnob", config), LogSink::new())
        .await
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("spec.staging_bucket: required"),
        "{e}"
    );
    assert_eq!(s.fake.calls().count("customJobs.create"), 0);
    // The dry run shows the body, masked.
    let d = runner.dry_run(&job("rdry", seed_config())).await.unwrap();
    let text = d.objects[0].to_string();
    assert!(
        text.contains("workerPoolSpecs") && !text.contains("hrt_0123456789"),
        "{text}"
    );
}
