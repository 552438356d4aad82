//! The cloud figures of `hoist bench dispatch --resource sagemaker|vertex`, against the
//! scripted fakes of `hoist-fakes` served by this process (nothing real can run here):
//!
//! - dispatch latency: launch sent → the training job's create call reached the cloud
//!   API (the fake records when each call arrived), sequential launches on a queue
//!   whose config is the seed's;
//! - the floor: the same create call sent directly by this process to the same fake,
//!   measured the same way (one after each hoist run, so the machine's other load weighs
//!   on both alike). The difference is hoist's own path: the launch, the claim, the
//!   agent preparing the request (macros, the role and the image checks, signing);
//! - API calls per run, by operation: for a quick job and for a job that trains for
//!   `--cloud-long-secs`, side by side, and the calls per minute while the long job
//!   runs. These APIs have no watch: status is polled with backoff, so a longer job
//!   must cost only a few calls more, never a call per poll interval of a fixed rate.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use hoist_client::Client;
use hoist_core::api::LaunchRequest;
use hoist_fakes::Calls;
use serde_json::{Value, json};

use super::dispatch::{AgentProcess, create_queue, wait_registered};
use super::{Samples, ServerProcess, line, ms};

/// The cloud targets the bench measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CloudResource {
    Sagemaker,
    Vertex,
}

impl CloudResource {
    fn as_str(self) -> &'static str {
        match self {
            CloudResource::Sagemaker => "sagemaker",
            CloudResource::Vertex => "vertex",
        }
    }

    /// The operation that creates a run's job.
    fn create_op(self) -> &'static str {
        match self {
            CloudResource::Sagemaker => "CreateTrainingJob",
            CloudResource::Vertex => "customJobs.create",
        }
    }

    /// The seed's queue config (placeholders filled).
    fn queue_config(self) -> Value {
        match self {
            CloudResource::Sagemaker => json!({
                "RoleArn": "arn:aws:iam::123456789012:role/SageMakerRole",
                "ResourceConfig": {"InstanceType": "ml.m4.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 2},
                "OutputDataConfig": {"S3OutputPath": "s3://bench-bucket/output"},
                "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
            }),
            CloudResource::Vertex => json!({
                "spec": {
                    "worker_pool_specs": [{
                        "machine_spec": {"machine_type": "n1-standard-4"},
                        "replica_count": 1,
                        "container_spec": {"image_uri": "${image_uri}"},
                    }],
                    "staging_bucket": "gs://bench-bucket/staging",
                },
                "run": {"restart_job_on_worker_restart": false},
            }),
        }
    }

    /// An image of the matching cloud's registry (nothing pulls it).
    fn image(self) -> &'static str {
        match self {
            CloudResource::Sagemaker => {
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/bench/train:v1"
            }
            CloudResource::Vertex => "us-central1-docker.pkg.dev/bench-project/bench/train:v1",
        }
    }
}

/// A fake cloud served by this process, and what an agent needs to reach it.
struct Cloud {
    fake: Fake,
    /// The agent's launch-config.
    config: String,
    /// The agent's environment variables (endpoints, dummy credentials).
    env: Vec<(String, String)>,
}

enum Fake {
    Sagemaker(hoist_fakes::sagemaker::FakeSageMaker),
    Vertex(hoist_fakes::vertex::FakeVertex),
}

impl Fake {
    fn calls(&self) -> Calls {
        match self {
            Fake::Sagemaker(f) => f.calls(),
            Fake::Vertex(f) => f.calls(),
        }
    }
}

/// Calls of `calls` after `since`, by operation.
fn by_operation(calls: &Calls, since: DateTime<Utc>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for c in calls.all().into_iter().filter(|c| c.at >= since) {
        *out.entry(c.operation).or_default() += 1;
    }
    out
}

fn total(m: &BTreeMap<String, u64>) -> u64 {
    m.values().sum()
}

/// The first `op` call that arrived at or after `since`.
async fn first_call_after(
    calls: &Calls,
    op: &str,
    since: DateTime<Utc>,
    within: Duration,
) -> anyhow::Result<DateTime<Utc>> {
    let t0 = Instant::now();
    loop {
        if let Some(c) = calls
            .all()
            .into_iter()
            .find(|c| c.operation == op && c.at >= since)
        {
            return Ok(c.at);
        }
        if t0.elapsed() > within {
            bail!("no {op} call reached the fake within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits for a run to end; its final state.
async fn wait_ended(c: &Client, id: &str, within: Duration) -> anyhow::Result<String> {
    let t0 = Instant::now();
    loop {
        let r = c.get_run(id).await?;
        if r.state.is_terminal() {
            return Ok(format!("{} ({})", r.state, r.state_reason));
        }
        if t0.elapsed() > within {
            bail!("run {id} did not end within {within:?} (it is {})", r.state);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn millis(a: DateTime<Utc>, b: DateTime<Utc>) -> Duration {
    (b - a).to_std().unwrap_or_default()
}

/// One cloud's figures.
pub async fn run(
    c: &Client,
    srv: &ServerProcess,
    dir: &std::path::Path,
    resource: CloudResource,
    samples: usize,
    long_secs: u64,
) -> anyhow::Result<()> {
    let name = resource.as_str();
    println!("{name} (against hoist-fakes' scripted {name} API on 127.0.0.1):");
    let cloud = start_cloud(resource, dir).await?;
    let queue = format!("bench-{name}");
    create_queue(c, &queue, name, resource.queue_config()).await?;
    let config_path = dir.join(format!("{name}-launch-config.yaml"));
    tokio::fs::write(&config_path, &cloud.config).await?;
    let agent_name = format!("bench-{name}");
    let agent = AgentProcess(
        Command::new(std::env::current_exe()?)
            .args([
                "agent",
                "--name",
                &agent_name,
                "-j",
                "4",
                "-q",
                &queue,
                "--config",
            ])
            .arg(&config_path)
            .env("HOIST_HOST", &srv.url)
            .env("HOIST_API_KEY", &srv.key)
            .env("HOIST_LOG", "warn")
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("HOME", dir)
            .envs(cloud.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start `hoist agent`")?,
    );
    wait_registered(c, &agent_name).await?;
    let calls = cloud.fake.calls();
    let quick = LaunchRequest {
        queue: queue.clone(),
        image: Some(resource.image().into()),
        entry_point: Some(vec!["python".into(), "train.py".into()]),
        ..Default::default()
    };

    // Warm up (the agent's first request resolves credentials).
    for _ in 0..3 {
        let r = c.launch(&quick).await?;
        wait_ended(c, &r.id, Duration::from_secs(120)).await?;
    }

    // Dispatch latency against the direct create call, interleaved. A run's calls are
    // counted from its launch to its end, before the floor's call.
    let direct = Direct::new(&cloud.fake).await?;
    let mut hoist = Samples::default();
    let mut floor = Samples::default();
    let mut per_run: BTreeMap<String, u64> = BTreeMap::new();
    let mut ended = BTreeMap::<String, u64>::new();
    for i in 0..samples {
        let sent = Utc::now();
        let r = c.launch(&quick).await?;
        let created =
            first_call_after(&calls, resource.create_op(), sent, Duration::from_secs(60)).await?;
        hoist.push(millis(sent, created));
        let end = wait_ended(c, &r.id, Duration::from_secs(120)).await?;
        *ended
            .entry(end.split(' ').next().unwrap_or("").to_string())
            .or_default() += 1;
        for (op, n) in by_operation(&calls, sent) {
            *per_run.entry(op).or_default() += n;
        }
        let sent = Utc::now();
        direct.create(&cloud.fake, i).await?;
        let created =
            first_call_after(&calls, resource.create_op(), sent, Duration::from_secs(10)).await?;
        floor.push(millis(sent, created));
    }
    let ends: Vec<String> = ended.iter().map(|(s, n)| format!("{n} {s}")).collect();
    println!("  ({samples} quick runs ended: {})", ends.join(", "));
    let (p50, p99) = (hoist.pct(50.0), hoist.pct(99.0));
    let (f50, f99) = (floor.pct(50.0), floor.pct(99.0));
    line(
        &format!("{name} dispatch p50 (launch → create call)"),
        &ms(p50),
        p50.as_secs_f64() * 1e3,
        None,
    );
    line(
        &format!("{name} dispatch p99"),
        &ms(p99),
        p99.as_secs_f64() * 1e3,
        None,
    );
    line(
        "  floor: the create call sent directly, p50",
        &ms(f50),
        0.0,
        None,
    );
    line("  floor p99", &ms(f99), 0.0, None);
    line(
        "  hoist's own path (dispatch − floor), p50",
        &ms(p50.saturating_sub(f50)),
        p50.saturating_sub(f50).as_secs_f64() * 1e3,
        None,
    );
    let ratio = p50.as_secs_f64() / f50.as_secs_f64().max(1e-9);
    line(
        &format!("{name} dispatch / floor, p50"),
        &format!("{ratio:.1}×"),
        ratio,
        None,
    );
    let quick_calls = total(&per_run) as f64 / samples.max(1) as f64;
    line(
        "  API calls per quick run",
        &format!("{quick_calls:.1}"),
        quick_calls,
        None,
    );
    for (op, n) in &per_run {
        line(
            &format!("    {op}"),
            &format!("{:.1}", *n as f64 / samples.max(1) as f64),
            0.0,
            None,
        );
    }

    // One long job: calls per run and per minute while it trains.
    long_script(&cloud.fake, long_secs);
    let long = LaunchRequest {
        name: Some("long".into()),
        ..quick.clone()
    };
    let sent = Utc::now();
    let t0 = Instant::now();
    let r = c.launch(&long).await?;
    let end = wait_ended(c, &r.id, Duration::from_secs(long_secs + 300)).await?;
    let secs = t0.elapsed().as_secs_f64();
    let long_calls = by_operation(&calls, sent);
    let n = total(&long_calls) as f64;
    line(
        &format!("  API calls for a run training {long_secs} s ({secs:.0} s in all)"),
        &format!("{n:.0}"),
        n,
        None,
    );
    for (op, k) in &long_calls {
        line(&format!("    {op}"), &format!("{k}"), 0.0, None);
    }
    let per_min = n / (secs / 60.0);
    line(
        "  API calls per minute while it runs",
        &format!("{per_min:.1}"),
        per_min,
        None,
    );
    line(
        "  long run / quick run, API calls",
        &format!("{:.2}×", n / quick_calls.max(1e-9)),
        n / quick_calls.max(1e-9),
        None,
    );
    println!("  (the long run ended {end})");
    drop(agent);
    Ok(())
}

/// Serves the fake of `resource` in this process and describes how an agent reaches it:
/// the agent's launch-config (the cloud's environment, and a registry: the target pulls
/// from one, though the bench's image jobs never push) and its variables (endpoints,
/// dummy credentials). Quick jobs follow the fakes' default script.
async fn start_cloud(resource: CloudResource, dir: &std::path::Path) -> anyhow::Result<Cloud> {
    let registry = "registry: {uri: 127.0.0.1:1/hoist-bench}\n";
    match resource {
        CloudResource::Sagemaker => {
            let fake = hoist_fakes::sagemaker::FakeSageMaker::start(Default::default()).await?;
            let url = fake.url();
            Ok(Cloud {
                config: format!("environment: {{type: aws, region: us-east-1}}\n{registry}"),
                env: vec![
                    // SageMaker, CloudWatch Logs and STS (the agent's start-up check)
                    // all answered by the fake.
                    ("AWS_ENDPOINT_URL".into(), url),
                    ("AWS_ACCESS_KEY_ID".into(), "AKIDHOISTBENCH".into()),
                    (
                        "AWS_SECRET_ACCESS_KEY".into(),
                        "hoist-bench-not-a-secret".into(),
                    ),
                    ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
                ],
                fake: Fake::Sagemaker(fake),
            })
        }
        CloudResource::Vertex => {
            // Cloud Logging's own page size (the fake's default is small, to exercise paging).
            let fake = hoist_fakes::vertex::FakeVertex::start(realistic_vertex()).await?;
            let creds = dir.join("vertex-credentials.json");
            tokio::fs::write(&creds, fake.credentials_json()).await?;
            let url = fake.url();
            Ok(Cloud {
                config: format!(
                    "environment: {{type: gcp, region: us-central1, project: {}}}\n{registry}",
                    hoist_fakes::vertex::FAKE_PROJECT
                ),
                env: vec![
                    (
                        "GOOGLE_APPLICATION_CREDENTIALS".into(),
                        creds.display().to_string(),
                    ),
                    ("HOIST_VERTEX_ENDPOINT".into(), url.clone()),
                    ("HOIST_LOGGING_ENDPOINT".into(), url),
                ],
                fake: Fake::Vertex(fake),
            })
        }
    }
}

/// The Vertex fake's default job, with Cloud Logging's page size (up to 1000 entries).
fn realistic_vertex() -> hoist_fakes::vertex::Script {
    hoist_fakes::vertex::Script {
        page_size: 1000,
        ..Default::default()
    }
}

/// The script of the long job: training for `secs`, a line a second.
fn long_script(fake: &Fake, secs: u64) {
    let d = Duration::from_secs(secs);
    match fake {
        Fake::Sagemaker(f) => f.set_script(
            hoist_fakes::sagemaker::Script::default()
                .training(d)
                .lines((1..=secs).map(|i| format!("step {i}"))),
        ),
        Fake::Vertex(f) => f.set_script(realistic_vertex().training(d, secs as usize)),
    }
}

/// `application/x-www-form-urlencoded` escaping of a value.
fn percent(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The create call of a run's job, sent straight to the fake by this process (the
/// floor), with what it needs prepared beforehand (a client, Vertex's bearer token), so
/// that only the call itself is timed. Its body is what the agent sends for the seed's
/// config.
struct Direct {
    http: reqwest::Client,
    token: String,
}

impl Direct {
    async fn new(fake: &Fake) -> anyhow::Result<Direct> {
        let http = reqwest::Client::new();
        let token = match fake {
            Fake::Sagemaker(_) => String::new(),
            Fake::Vertex(f) => {
                // The refresh-token grant of the fake's own credentials file.
                let creds: Value = serde_json::from_str(&f.credentials_json())?;
                let field = |k: &str| creds[k].as_str().unwrap_or_default().to_string();
                let form: String = [
                    ("grant_type", "refresh_token".to_string()),
                    ("client_id", field("client_id")),
                    ("client_secret", field("client_secret")),
                    ("refresh_token", field("refresh_token")),
                ]
                .iter()
                .map(|(k, v)| format!("{k}={}", percent(v)))
                .collect::<Vec<_>>()
                .join("&");
                let t: Value = http
                    .post(field("token_uri"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(form)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                t["access_token"]
                    .as_str()
                    .context("the fake's token endpoint gave no access_token")?
                    .to_string()
            }
        };
        Ok(Direct { http, token })
    }

    async fn create(&self, fake: &Fake, i: usize) -> anyhow::Result<()> {
        let pid = std::process::id();
        let resp = match fake {
            Fake::Sagemaker(f) => {
                let mut body = CloudResource::Sagemaker.queue_config();
                body["TrainingJobName"] = json!(format!("bench-floor-{pid}-{i}"));
                body["AlgorithmSpecification"] = json!({
                    "TrainingImage": CloudResource::Sagemaker.image(),
                    "TrainingInputMode": "File",
                    "ContainerEntrypoint": ["python", "train.py"],
                });
                let date = Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
                // The fake checks the signature's shape, not its value.
                let auth = format!(
                    "AWS4-HMAC-SHA256 Credential=AKIDHOISTBENCH/{}/us-east-1/sagemaker/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature={}",
                    &date[..8],
                    "0".repeat(64)
                );
                self.http
                    .post(f.url())
                    .header("content-type", "application/x-amz-json-1.1")
                    .header("x-amz-target", "SageMaker.CreateTrainingJob")
                    .header("x-amz-date", date)
                    .header("authorization", auth)
                    .body(body.to_string())
                    .send()
                    .await?
            }
            Fake::Vertex(f) => {
                let body = json!({
                    "displayName": format!("bench-floor-{pid}-{i}"),
                    "jobSpec": {
                        "workerPoolSpecs": [{
                            "machineSpec": {"machineType": "n1-standard-4"},
                            "replicaCount": "1",
                            "containerSpec": {
                                "imageUri": CloudResource::Vertex.image(),
                                "command": ["python", "train.py"],
                            },
                        }],
                        "baseOutputDirectory": {"outputUriPrefix": "gs://bench-bucket/staging"},
                    },
                    "labels": {"hoist-bench": "floor"},
                });
                self.http
                    .post(format!(
                        "{}/v1/projects/{}/locations/us-central1/customJobs",
                        f.url(),
                        hoist_fakes::vertex::FAKE_PROJECT
                    ))
                    .bearer_auth(&self.token)
                    .json(&body)
                    .send()
                    .await?
            }
        };
        let status = resp.status();
        if !status.is_success() {
            bail!(
                "the floor's direct create call was refused: {status} {}",
                resp.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }
}
