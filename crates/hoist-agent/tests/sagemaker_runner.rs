//! The SageMaker runner against moto (`$HOIST_TEST_MOTO_URL`: create, describe, tags,
//! the role-name expansion through STS, the S3 output rule, the seeds' configs) and
//! against hoist-fakes' scripted SageMaker + CloudWatch Logs (what moto does not do:
//! state sequences, stop, spot interruptions, log paging over several streams, the
//! services' error bodies, re-adoption and sweep).
//!
//! moto tests are skipped without moto (they fail under HOIST_TEST_REQUIRE_SERVICES).

use std::collections::BTreeMap;
use std::time::Duration;

use hoist_agent::environments::Ambient;
use hoist_agent::environments::aws::AwsEnvironment;
use hoist_agent::logs::LogSink;
use hoist_agent::runners::sagemaker::api::Service;
use hoist_agent::runners::sagemaker::{Polling, SageMakerRunner};
use hoist_agent::runners::{Adopted, Execution, Exit, JobSpec, LogResume, Runner, RunnerError};
use hoist_fakes::sagemaker::{End, FakeSageMaker, FaultKind, Script};
use hoist_testkit::{service_url, unique, wait_until_async};
use serde_json::{Value, json};

const IMAGE: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/train:v1";

fn polling() -> Polling {
    Polling {
        first: Duration::from_millis(50),
        cap: Duration::from_millis(300),
        log_first: Duration::from_millis(50),
        log_cap: Duration::from_millis(300),
        log_settle: Duration::from_millis(100),
    }
}

async fn env_at(url: &str) -> AwsEnvironment {
    let ambient = Ambient::new(
        [
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing-secret-value"),
            ("AWS_ENDPOINT_URL", url),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
        None,
    );
    AwsEnvironment::new("us-east-1", &ambient).await.unwrap()
}

async fn runner_at(url: &str) -> SageMakerRunner {
    SageMakerRunner::new(env_at(url).await).with_polling(polling())
}

/// A run id unique across test runs (moto keeps its jobs).
fn run_id() -> String {
    unique("r").replace('-', "")
}

fn seed_config() -> Value {
    serde_json::from_str(include_str!(
        "../../hoist-core/tests/fixtures/queue-configs/sagemaker.000-set-up-launch.json"
    ))
    .unwrap()
}

fn job(run_id: &str, config: Value) -> JobSpec {
    JobSpec {
        run_id: run_id.to_string(),
        run_name: "n".into(),
        project: "p".into(),
        entity: "e".into(),
        queue: "e/sm".into(),
        agent_name: "agent-1".into(),
        image: Some(IMAGE.into()),
        entry_point: Some(vec!["python".into(), "train.py".into()]),
        args: vec![],
        env: [
            ("HOIST_RUN_ID", run_id),
            ("HOIST_RUN_TOKEN", "hrt_placeholder-token-for-tests"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        resource_config: config,
        labels: BTreeMap::new(),
        source: None,
    }
}

fn lines(sink: &LogSink) -> Vec<String> {
    sink.snapshot().into_iter().map(|l| l.text).collect()
}

async fn wait_exit(exec: &dyn Execution) -> Exit {
    tokio::time::timeout(Duration::from_secs(60), exec.wait())
        .await
        .expect("the training job ends within a minute")
        .unwrap()
}

async fn tags(r: &SageMakerRunner, name: &str) -> Vec<Value> {
    let d = r
        .api()
        .call(
            Service::SageMaker,
            "DescribeTrainingJob",
            &json!({"TrainingJobName": name}),
        )
        .await
        .unwrap();
    let t = r
        .api()
        .call(
            Service::SageMaker,
            "ListTags",
            &json!({"ResourceArn": d["TrainingJobArn"]}),
        )
        .await
        .unwrap();
    t["Tags"].as_array().cloned().unwrap_or_default()
}

// ---- moto ----

#[tokio::test]
async fn moto_the_seed_config_creates_a_tagged_job_that_completes_and_is_found_again() {
    let Some(moto) = service_url("HOIST_TEST_MOTO_URL") else {
        return;
    };
    let r = runner_at(&moto).await;
    let id = run_id();
    let j = job(&id, seed_config());
    let sink = LogSink::new();
    let exec = r.start(&j, sink.clone()).await.unwrap();
    let name = format!("hoist-{id}");
    assert_eq!(exec.describe(), format!("training job {name}"));
    // moto completes jobs at once (never through `Training`): `running` does not
    // resolve, `wait` does.
    tokio::select! {
        biased;
        r = exec.running() => panic!("running resolved for a job that never ran: {r:?}"),
        e = exec.wait() => assert_eq!(e.unwrap(), Exit::Code(0)),
    }
    assert_eq!(wait_exit(exec.as_ref()).await, Exit::Code(0));
    assert!(
        lines(&sink)
            .iter()
            .any(|l| l.contains("rewritten to s3://bucket-name/key-name")),
        "{:?}",
        lines(&sink)
    );
    let d = r
        .api()
        .call(
            Service::SageMaker,
            "DescribeTrainingJob",
            &json!({"TrainingJobName": name}),
        )
        .await
        .unwrap();
    assert_eq!(
        d["OutputDataConfig"]["S3OutputPath"],
        "s3://bucket-name/key-name"
    );
    assert_eq!(d["AlgorithmSpecification"]["TrainingImage"], IMAGE);
    assert_eq!(d["AlgorithmSpecification"]["TrainingInputMode"], "File");
    let t = tags(&r, &name).await;
    for (k, v) in [
        ("hoist:run-id", id.as_str()),
        ("hoist:agent", "agent-1"),
        ("hoist:queue", "e/sm"),
    ] {
        assert!(t.contains(&json!({"Key": k, "Value": v})), "{t:?}");
    }
    // A restarted agent finds it by name and tag; another run does not claim it.
    match r
        .adopt_resuming(&j, LogSink::new(), LogResume::default())
        .await
        .unwrap()
    {
        Adopted::Found(e) => assert_eq!(wait_exit(e.as_ref()).await, Exit::Code(0)),
        Adopted::Gone(why) => panic!("not re-adopted: {why}"),
    }
    let mut other = job(&run_id(), seed_config());
    other.resource_config["TrainingJobName"] = json!(name);
    match r
        .adopt_resuming(&other, LogSink::new(), LogResume::default())
        .await
        .unwrap()
    {
        Adopted::Gone(why) => assert!(why.contains("not this run's"), "{why}"),
        Adopted::Found(_) => panic!("another run's job adopted"),
    }
    // Starting it again as another run: the name is taken by a job that is not its.
    // (moto does not refuse a taken name; the fake test covers ResourceInUse.)
}

#[tokio::test]
async fn moto_a_role_name_is_expanded_with_the_account_from_sts() {
    let Some(moto) = service_url("HOIST_TEST_MOTO_URL") else {
        return;
    };
    let r = runner_at(&moto).await;
    let id = run_id();
    let mut c = seed_config();
    c["RoleArn"] = json!("service-role/SageMakerRole");
    let exec = r.start(&job(&id, c), LogSink::new()).await.unwrap();
    wait_exit(exec.as_ref()).await;
    let d = r
        .api()
        .call(
            Service::SageMaker,
            "DescribeTrainingJob",
            &json!({"TrainingJobName": format!("hoist-{id}")}),
        )
        .await
        .unwrap();
    assert_eq!(
        d["RoleArn"],
        "arn:aws:iam::123456789012:role/service-role/SageMakerRole"
    );
}

#[tokio::test]
async fn moto_an_output_path_that_is_not_s3_is_refused_before_anything_is_created() {
    let Some(moto) = service_url("HOIST_TEST_MOTO_URL") else {
        return;
    };
    let r = runner_at(&moto).await;
    let id = run_id();
    let mut c = seed_config();
    c["OutputDataConfig"]["S3OutputPath"] = json!("https://storage.example.com/bucket/key");
    let e = r.start(&job(&id, c), LogSink::new()).await.err().unwrap();
    assert!(matches!(e, RunnerError::Refused(_)), "{e:?}");
    assert!(e.to_string().contains("s3://BUCKET/PREFIX"), "{e}");
    let mut j = job(&id, seed_config());
    j.image = Some("docker.io/library/python:3.12".into());
    let e = r.start(&j, LogSink::new()).await.err().unwrap();
    assert!(e.to_string().contains("registry"), "{e}");
    let listed = r
        .api()
        .call(
            Service::SageMaker,
            "ListTrainingJobs",
            &json!({"NameContains": id}),
        )
        .await
        .unwrap();
    assert_eq!(listed["TrainingJobSummaries"], json!([]), "{listed}");
}

#[tokio::test]
async fn moto_the_full_seed_config_runs() {
    let Some(moto) = service_url("HOIST_TEST_MOTO_URL") else {
        return;
    };
    let r = runner_at(&moto).await;
    let id = run_id();
    let yaml = include_str!("../../hoist-core/tests/fixtures/queue-configs/sagemaker.full.yaml")
        .replace("${run_id}", &id)
        .replace("${image_uri}", IMAGE)
        .replace("${project_name}", "p");
    let c: Value = serde_saphyr::from_str(&yaml).unwrap();
    let mut j = job(&id, c);
    j.entry_point = None;
    let exec = r.start(&j, LogSink::new()).await.unwrap();
    assert_eq!(exec.describe(), format!("training job launch-{id}"));
    assert_eq!(wait_exit(exec.as_ref()).await, Exit::Code(0));
    let t = tags(&r, &format!("launch-{id}")).await;
    assert!(t.contains(&json!({"Key": "team", "Value": "ml"})), "{t:?}");
    assert!(
        t.contains(&json!({"Key": "hoist:run-id", "Value": id})),
        "{t:?}"
    );
}

// ---- the scripted fake ----

async fn fake(script: Script) -> (FakeSageMaker, SageMakerRunner) {
    let f = FakeSageMaker::start(script).await.unwrap();
    let r = runner_at(&f.url()).await;
    (f, r)
}

#[tokio::test]
async fn fake_a_job_goes_through_its_states_and_every_stream_is_read_across_pages() {
    let lines_written: Vec<String> = (1..=5).map(|i| format!("step {i}")).collect();
    let (f, r) = fake(
        Script::default()
            .lines(lines_written.clone())
            .streams(2)
            .page_size(2),
    )
    .await;
    let mut c = seed_config();
    c["ResourceConfig"]["InstanceCount"] = json!(2);
    let id = run_id();
    let sink = LogSink::new();
    let exec = r.start(&job(&id, c), sink.clone()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), exec.running())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(wait_exit(exec.as_ref()).await, Exit::Code(0));
    let got = lines(&sink);
    for stream in ["algo-1-", "algo-2-"] {
        let of_stream: Vec<String> = got
            .iter()
            .filter(|l| l.starts_with(&format!("[{stream}")))
            .map(|l| l.split_once("] ").unwrap().1.to_string())
            .collect();
        assert_eq!(of_stream, lines_written, "{got:?}");
    }
    for status in [
        "Starting",
        "Downloading",
        "Training",
        "Uploading",
        "Completed",
    ] {
        assert!(
            got.iter()
                .any(|l| l.contains(&format!("SageMaker: {status}"))),
            "{status}: {got:?}"
        );
    }
    // The request as SageMaker got it.
    let req = f.request(&format!("hoist-{id}")).unwrap();
    assert_eq!(req["Environment"]["HOIST_RUN_ID"], id);
    let calls = f.calls();
    assert_eq!(calls.count("CreateTrainingJob"), 1);
    assert!(calls.count("GetLogEvents") >= 6, "{:?}", calls.all());
}

#[tokio::test]
async fn fake_a_failed_job_fails_with_its_failure_reason() {
    let (_f, r) = fake(Script::default().ending(End::Failed(
        "AlgorithmError: ExecuteUserScriptError: exit code 2".into(),
    )))
    .await;
    let exec = r
        .start(&job(&run_id(), seed_config()), LogSink::new())
        .await
        .unwrap();
    match wait_exit(exec.as_ref()).await {
        Exit::Failed { reason, .. } => {
            assert!(
                reason.contains("ExecuteUserScriptError: exit code 2"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn fake_a_stop_stops_the_job_and_a_stop_outside_hoist_is_a_failure() {
    let (f, r) = fake(
        Script::default()
            .training(Duration::from_secs(60))
            .lines((0..100).map(|i| format!("tick {i}"))),
    )
    .await;
    let sink = LogSink::new();
    let exec = r
        .start(&job(&run_id(), seed_config()), sink.clone())
        .await
        .unwrap();
    wait_until_async("the first log line", Duration::from_secs(30), || {
        let s = sink.clone();
        async move { lines(&s).iter().any(|l| l == "tick 0") }
    })
    .await;
    exec.stop(Duration::from_secs(1)).await.unwrap();
    match wait_exit(exec.as_ref()).await {
        Exit::Failed { reason, .. } => {
            assert!(reason.contains("SageMaker stopped"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(f.calls().count("StopTrainingJob"), 1);
    assert!(lines(&sink).iter().any(|l| l.contains("Stopping")));

    let id = run_id();
    let exec = r
        .start(&job(&id, seed_config()), LogSink::new())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), exec.running())
        .await
        .unwrap()
        .unwrap();
    assert!(f.stop_outside(&format!("hoist-{id}")));
    match wait_exit(exec.as_ref()).await {
        Exit::Failed { reason, .. } => assert!(reason.contains("outside hoist"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn fake_a_spot_interruption_is_a_warning_and_max_wait_a_failure() {
    let ms = Duration::from_millis;
    let phases = [
        ("Starting", ms(100)),
        ("Training", ms(200)),
        ("Interrupted", ms(300)),
        ("Starting", ms(100)),
        ("Training", ms(200)),
        ("Uploading", ms(50)),
    ];
    let (f, r) = fake(Script::default().phases(&phases)).await;
    let mut c = seed_config();
    c["EnableManagedSpotTraining"] = json!(true);
    c["StoppingCondition"]["MaxWaitTimeInSeconds"] = json!(7200);
    let sink = LogSink::new();
    let exec = r
        .start(&job(&run_id(), c.clone()), sink.clone())
        .await
        .unwrap();
    assert_eq!(wait_exit(exec.as_ref()).await, Exit::Code(0));
    assert!(
        lines(&sink).iter().any(|l| l
            .contains("warning: the training job's spot instances were interrupted")
            && l.contains("7200s")),
        "{:?}",
        lines(&sink)
    );
    f.set_script(
        Script::default()
            .phases(&phases[..3])
            .ending(End::Stopped("MaxWaitTimeExceeded".into())),
    );
    let exec = r.start(&job(&run_id(), c), LogSink::new()).await.unwrap();
    match wait_exit(exec.as_ref()).await {
        Exit::Failed { reason, .. } => {
            assert!(reason.contains("MaxWaitTimeInSeconds (7200s)"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn fake_refusals_keep_the_apis_message_and_throttling_is_retried() {
    let (f, r) = fake(
        Script::default()
            .fault("CreateTrainingJob", 1, FaultKind::ResourceLimitExceeded)
            .fault("DescribeTrainingJob", 2, FaultKind::Throttling)
            .fault("GetLogEvents", 1, FaultKind::InternalFailure),
    )
    .await;
    let e = r
        .start(&job(&run_id(), seed_config()), LogSink::new())
        .await
        .err()
        .unwrap();
    assert!(matches!(e, RunnerError::Start { .. }), "{e:?}");
    assert!(!e.is_transient());
    let m = e.to_string();
    assert!(
        m.contains("ResourceLimitExceeded") && m.contains("Service Quotas"),
        "{m}"
    );
    // Throttled describes and a failed log read are tried again.
    let sink = LogSink::new();
    let exec = r
        .start(&job(&run_id(), seed_config()), sink.clone())
        .await
        .unwrap();
    assert_eq!(wait_exit(exec.as_ref()).await, Exit::Code(0));
    assert!(lines(&sink).iter().any(|l| l == "epoch 3 loss=0.2"));
    let statuses: Vec<u16> = f
        .calls()
        .all()
        .iter()
        .filter(|c| c.operation == "DescribeTrainingJob")
        .map(|c| c.status)
        .collect();
    assert_eq!(&statuses[..3], &[400, 400, 200], "{statuses:?}");

    // SageMaker's own validation, as the API words it.
    let mut c = seed_config();
    c["EnableManagedSpotTraining"] = json!(true);
    let e = r
        .start(&job(&run_id(), c), LogSink::new())
        .await
        .err()
        .unwrap();
    assert!(matches!(e, RunnerError::Start { .. }), "{e:?}");
    assert!(
        e.to_string().contains(
            "ValidationException: 1 validation error detected: MaxWaitTimeInSeconds is required"
        ),
        "{e}"
    );
}

#[tokio::test]
async fn fake_a_taken_name_is_followed_when_it_is_the_runs_and_refused_otherwise() {
    let (f, r) = fake(Script::default()).await;
    let id = run_id();
    let first = r
        .start(&job(&id, seed_config()), LogSink::new())
        .await
        .unwrap();
    // The start tried again (a create that went through but got no answer).
    let again = r
        .start(&job(&id, seed_config()), LogSink::new())
        .await
        .unwrap();
    assert_eq!(wait_exit(again.as_ref()).await, Exit::Code(0));
    assert_eq!(wait_exit(first.as_ref()).await, Exit::Code(0));
    let mut c = seed_config();
    c["TrainingJobName"] = json!(format!("hoist-{id}"));
    let e = r
        .start(&job(&run_id(), c), LogSink::new())
        .await
        .err()
        .unwrap();
    assert!(
        e.to_string()
            .contains("exists already and is not this run's"),
        "{e}"
    );
    assert_eq!(f.jobs().len(), 1);
}

#[tokio::test]
async fn fake_a_readopted_job_resumes_its_log_without_repeating_a_line() {
    let written: Vec<String> = (0..10).map(|i| format!("line {i}")).collect();
    let (_f, r) = fake(
        Script::default()
            .training(Duration::from_secs(3))
            .lines(written.clone()),
    )
    .await;
    let id = run_id();
    let j = job(&id, seed_config());
    let before = LogSink::new();
    let exec = r.start(&j, before.clone()).await.unwrap();
    wait_until_async("a few lines", Duration::from_secs(30), || {
        let s = before.clone();
        async move { lines(&s).iter().filter(|l| l.starts_with("line ")).count() >= 3 }
    })
    .await;
    // The agent dies: its supervision ends, the job goes on.
    drop(exec);
    let shipped: Vec<_> = before
        .snapshot()
        .into_iter()
        .filter(|l| l.text.starts_with("line "))
        .collect();
    let last = shipped.last().unwrap().ts;
    let after = LogSink::new();
    let exec = match r
        .adopt_resuming(&j, after.clone(), LogResume::after(Some(last)))
        .await
        .unwrap()
    {
        Adopted::Found(e) => e,
        Adopted::Gone(why) => panic!("{why}"),
    };
    assert_eq!(wait_exit(exec.as_ref()).await, Exit::Code(0));
    let mut all: Vec<String> = shipped.into_iter().map(|l| l.text).collect();
    all.extend(lines(&after).into_iter().filter(|l| l.starts_with("line ")));
    assert_eq!(all, written);
    // A run whose job does not exist is gone.
    match r
        .adopt_resuming(
            &job(&run_id(), seed_config()),
            LogSink::new(),
            LogResume::default(),
        )
        .await
        .unwrap()
    {
        Adopted::Gone(why) => assert!(why.contains("does not exist"), "{why}"),
        Adopted::Found(_) => panic!("found a job that does not exist"),
    }
}

#[tokio::test]
async fn fake_sweep_stops_in_progress_jobs_of_runs_the_agent_no_longer_holds() {
    let (f, r) = fake(Script::default().training(Duration::from_secs(60))).await;
    let (kept, dropped) = (run_id(), run_id());
    for id in [&kept, &dropped] {
        let exec = r
            .start(&job(id, seed_config()), LogSink::new())
            .await
            .unwrap();
        drop(exec);
    }
    let mut other_agent = job(&run_id(), seed_config());
    other_agent.agent_name = "agent-2".into();
    drop(r.start(&other_agent, LogSink::new()).await.unwrap());
    let stopped = r
        .sweep("agent-1", std::slice::from_ref(&kept))
        .await
        .unwrap();
    assert_eq!(stopped, vec![dropped.clone()]);
    assert_eq!(f.calls().count("StopTrainingJob"), 1);
}

#[tokio::test]
async fn fake_requests_must_be_signed() {
    let f = FakeSageMaker::start(Script::default()).await.unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/", f.url()))
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", "SageMaker.DescribeTrainingJob")
        .body(r#"{"TrainingJobName":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["__type"], "MissingAuthenticationTokenException");
    // Signed (by the runner's client) but unknown: SageMaker's not-found.
    let r = runner_at(&f.url()).await;
    let e = r
        .api()
        .call(
            Service::SageMaker,
            "DescribeTrainingJob",
            &json!({"TrainingJobName": "nope"}),
        )
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert_eq!(e.code(), Some("ResourceNotFound"));
}

#[tokio::test]
async fn dry_run_shows_the_request_with_the_token_masked() {
    let (_f, r) = fake(Script::default()).await;
    let d = r.dry_run(&job(&run_id(), seed_config())).await.unwrap();
    let body = &d.objects[0];
    assert_eq!(body["Environment"]["HOIST_RUN_TOKEN"], "********");
    assert_eq!(
        body["OutputDataConfig"]["S3OutputPath"],
        "s3://bucket-name/key-name"
    );
}
