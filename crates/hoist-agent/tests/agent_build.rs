//! Jobs through the whole agent, in process: a real server (temporary SQLite store)
//! and a real agent. A code job on a local-process queue runs in its checked-out
//! source; on a docker queue it is built by the docker builder against the real
//! daemon, and launched again it is a cache hit with no build.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hoist_agent::agent::{self, AgentOptions};
use hoist_agent::builders::{self, Builder};
use hoist_agent::config::{AgentConfig, MaxJobs};
use hoist_agent::registries::local::LocalRegistry;
use hoist_agent::runners::Runner;
use hoist_agent::runners::docker::DockerRunner;
use hoist_agent::runners::local_process::LocalProcessRunner;
use hoist_client::{Client, Secret};
use hoist_core::api::*;
use hoist_core::resource::ResourceType;
use hoist_core::run::{FailureStage, RunState};
use hoist_server::{Server, ServerConfig};
use hoist_testkit::docker_available;
use serde_json::json;
use tokio::sync::watch;

struct Env {
    server: Server,
    dir: tempfile::TempDir,
    client: Client,
    stop: watch::Sender<bool>,
    agent: tokio::task::JoinHandle<Result<(), agent::AgentError>>,
}

async fn start(with_docker: bool) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        dir.path().join("data"),
    ))
    .await
    .unwrap();
    let key = std::fs::read_to_string(dir.path().join("data/admin.key")).unwrap();
    let url = format!("http://{}", server.addr);
    let client = Client::new(&url, Some(Secret::new(key.trim()))).unwrap();
    let mut queues = vec!["lp".to_string()];
    client
        .create_queue(&CreateQueue {
            name: "lp".into(),
            entity: None,
            resource: "local-process".into(),
            config: None,
            template_variables: vec![],
            prioritize: false,
            description: None,
        })
        .await
        .unwrap();
    let mut config = AgentConfig {
        max_jobs: MaxJobs::Limit(NonZeroU32::new(4).unwrap()),
        stopped_run_timeout: Duration::from_secs(3),
        ..Default::default()
    };
    let work = dir.path().join("work");
    let mut runners: HashMap<ResourceType, Arc<dyn Runner>> = HashMap::new();
    runners.insert(
        ResourceType::LocalProcess,
        Arc::new(
            LocalProcessRunner::new(work.clone(), vec![])
                .with_settings(&hoist_agent::config::LocalProcessSettings {
                    max_run_dir_bytes: 1 << 20,
                    ..Default::default()
                })
                .with_artifacts(Arc::new(client.clone())),
        ),
    );
    let builder: Arc<dyn Builder> = if with_docker {
        client
            .create_queue(&CreateQueue {
                name: "dk".into(),
                entity: None,
                resource: "docker".into(),
                config: Some(json!({"network": "none"})),
                template_variables: vec![],
                prioritize: false,
                description: None,
            })
            .await
            .unwrap();
        queues.push("dk".into());
        let d = DockerRunner::connect(&config.docker).await.unwrap();
        let docker = d.client().clone();
        runners.insert(ResourceType::Docker, Arc::new(d));
        builders::builder_from_config(
            &config,
            Some(&docker),
            Arc::new(LocalRegistry::new(docker.clone())),
            client.clone(),
        )
    } else {
        Arc::new(builders::noop::NoopBuilder)
    };
    config.queues = queues;
    let (stop, rx) = watch::channel(false);
    let agent = tokio::spawn(agent::run(
        AgentOptions {
            config,
            client: client.clone(),
            name: "builder-agent".into(),
            host: "test".into(),
            base_url: url,
            runners,
            unavailable: HashMap::new(),
            builder,
            host_env: Arc::new(hoist_agent::host_env::HostEnv::capture()),
            drain: false,
        },
        rx,
    ));
    Env {
        server,
        dir,
        client,
        stop,
        agent,
    }
}

impl Env {
    async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(30), self.agent).await;
        self.server.shutdown().await;
    }
}

/// Packs `files` as a code artifact, uploads it and creates job `name`.
async fn code_job(
    c: &Client,
    dir: &std::path::Path,
    name: &str,
    files: &[(&str, &str)],
    entry: &[&str],
) -> Job {
    let src = dir.join(format!("src-{name}"));
    let _ = std::fs::remove_dir_all(&src);
    for (path, text) in files {
        let p = src.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let packed = hoist_context::pack_dir(&src, &Default::default()).unwrap();
    let blob = c
        .upload_blob(std::fs::read(&packed.path).unwrap(), None)
        .await
        .unwrap();
    let (job, _) = c
        .create_job(&CreateJob {
            name: name.into(),
            entity: None,
            source: JobSource::Code {
                artifact: blob.digest,
                size: blob.size,
                entry_point: entry.iter().map(|s| s.to_string()).collect(),
                dockerfile: None,
            },
            description: None,
        })
        .await
        .unwrap();
    job
}

async fn launch_job(c: &Client, queue: &str, job: &str) -> Run {
    c.launch(&LaunchRequest {
        queue: queue.into(),
        job: Some(JobRef::parse(job).unwrap()),
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn ended(c: &Client, id: &str) -> Run {
    let t0 = Instant::now();
    loop {
        let r = c.get_run(id).await.unwrap();
        if r.state.is_terminal() {
            return r;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "run {id} still {}",
            r.state
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn logs(c: &Client, id: &str) -> Vec<String> {
    c.read_logs(id, 0, Some(10_000))
        .await
        .unwrap()
        .lines
        .into_iter()
        .map(|l| l.text)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn code_job_runs_in_its_source_on_a_local_process_queue() {
    let e = start(false).await;
    code_job(
        &e.client,
        e.dir.path(),
        "hello",
        &[("data/msg.txt", "hello from the artifact\n")],
        &["cat", "data/msg.txt"],
    )
    .await;
    let run = launch_job(&e.client, "lp", "hello").await;
    let r = ended(&e.client, &run.id).await;
    assert_eq!(
        r.state,
        RunState::Finished,
        "{:?} {:?}",
        r.failure,
        logs(&e.client, &run.id).await
    );
    assert!(
        logs(&e.client, &run.id)
            .await
            .contains(&"hello from the artifact".to_string())
    );
    assert_eq!(r.job.as_ref().unwrap().version.as_deref(), Some("v0"));
    // A noop builder refuses git/code jobs on container queues with what to configure;
    // on local-process queues it is not needed.
    e.shutdown().await;
}

/// A code artifact unpacks into at most the run's disk budget
/// (`local-process.max-run-dir-bytes`, 1 MiB here): 3 MiB of zeros (a few KiB packed)
/// fail the run at stage `build`, naming the setting, and leave no directory behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_code_artifact_unpacks_within_the_run_budget() {
    let e = start(false).await;
    let zeros = "\0".repeat(3 << 20);
    code_job(
        &e.client,
        e.dir.path(),
        "bomb",
        &[("zeros.bin", &zeros)],
        &["true"],
    )
    .await;
    let run = launch_job(&e.client, "lp", "bomb").await;
    let r = ended(&e.client, &run.id).await;
    assert_eq!(r.state, RunState::Failed);
    let f = r.failure.expect("failure");
    assert_eq!(f.stage, FailureStage::Build);
    assert!(
        f.message.contains("over the limit")
            && f.message.contains("local-process.max-run-dir-bytes, 1 MiB"),
        "{}",
        f.message
    );
    let dir = e.dir.path().join("work").join(&run.id);
    let t0 = Instant::now();
    while dir.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{} is left",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_code_job_is_built_then_a_cache_hit() {
    if !docker_available() {
        return;
    }
    let image = hoist_testkit::busybox_image();
    let e = start(true).await;
    let nonce = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let dockerfile = format!("FROM {image}\nCOPY msg.txt /msg.txt\n");
    code_job(
        &e.client,
        e.dir.path(),
        "built",
        &[
            ("Dockerfile", &dockerfile),
            ("msg.txt", &format!("built {nonce}\n")),
        ],
        &["cat", "/msg.txt"],
    )
    .await;
    let first = launch_job(&e.client, "dk", "built").await;
    let r = ended(&e.client, &first.id).await;
    assert_eq!(
        r.state,
        RunState::Finished,
        "{:?} {:?}",
        r.failure,
        logs(&e.client, &first.id).await
    );
    let tl = r.timeline.unwrap();
    assert!(tl.iter().any(|t| t.to == RunState::Building), "{tl:?}");
    let starting = tl.iter().find(|t| t.to == RunState::Starting).unwrap();
    assert!(
        starting.reason.contains("built image hoist-build:"),
        "{}",
        starting.reason
    );
    // The run records the image and that it was built, by the docker builder.
    let built = r.built.clone().expect("the run records its built image");
    assert!(built.image.starts_with("hoist-build:"), "{built:?}");
    assert!(!built.cache_hit, "{built:?}");
    assert_eq!(built.builder, "docker");
    assert!(
        starting.reason.contains(&built.image),
        "{}",
        starting.reason
    );
    assert!(
        logs(&e.client, &first.id)
            .await
            .contains(&format!("built {nonce}"))
    );

    // The same job again: the image exists, nothing is built.
    let second = launch_job(&e.client, "dk", "built").await;
    let r = ended(&e.client, &second.id).await;
    assert_eq!(r.state, RunState::Finished);
    let tl = r.timeline.unwrap();
    let starting = tl.iter().find(|t| t.to == RunState::Starting).unwrap();
    assert!(
        starting.reason.contains("exists: no build"),
        "{}",
        starting.reason
    );
    // The same image, recorded as a cache hit.
    let hit = r.built.clone().expect("the relaunch records its image");
    assert_eq!(hit.image, built.image);
    assert!(hit.cache_hit, "{hit:?}");
    assert_eq!(hit.builder, "docker");

    // A failing build fails the run at stage `build`, naming the step.
    code_job(
        &e.client,
        e.dir.path(),
        "broken",
        &[(
            "Dockerfile",
            &format!("FROM {image}\nRUN echo about to fail; exit 3\n"),
        )],
        &["true"],
    )
    .await;
    let bad = launch_job(&e.client, "dk", "broken").await;
    let r = ended(&e.client, &bad.id).await;
    assert_eq!(r.state, RunState::Failed);
    let f = r.failure.unwrap();
    assert_eq!(f.stage, FailureStage::Build);
    assert!(f.message.contains("exit 3"), "{}", f.message);
    assert_eq!(r.built, None, "a failed build records no image");
    // Clean up the built image.
    let d = bollard::Docker::connect_with_unix_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();
    let _ = d
        .remove_image(
            &built.image,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await;
    e.shutdown().await;
}
