//! Secrets never reach the logs: the tracing output of whole runs (a real server and a
//! real agent in process, a local process and a container), captured at TRACE with the
//! filter every hoist process applies on top of the one it is given
//! ([`SECRET_SAFE_LOG_DIRECTIVES`]) and with `log` records bridged in (as the binary
//! does), holds neither the run's secret-named env value, nor its credential-looking
//! one, nor its run token. The job hands its token to the test reversed, in its log
//! (so that the log line itself does not hold it).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hoist_agent::agent::{self, AgentOptions};
use hoist_agent::config::{AgentConfig, DockerSettings, MaxJobs};
use hoist_agent::host_env::HostEnv;
use hoist_agent::logs::SECRET_SAFE_LOG_DIRECTIVES;
use hoist_agent::runners::Runner;
use hoist_agent::runners::docker::DockerRunner;
use hoist_agent::runners::local_process::LocalProcessRunner;
use hoist_client::{Client, Secret};
use hoist_core::api::*;
use hoist_core::resource::ResourceType;
use hoist_core::run::RunState;
use hoist_server::{Server, ServerConfig};
use hoist_testkit::{busybox_image as image, docker_available};
use serde_json::json;
use tokio::sync::watch;

const LONG: Duration = Duration::from_secs(120);

/// Everything every test of this binary logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture() -> Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED
        .get_or_init(|| {
            let c = Captured::default();
            let mut filter = tracing_subscriber::EnvFilter::new("trace");
            for d in SECRET_SAFE_LOG_DIRECTIVES {
                filter = filter.add_directive(d.parse().expect("directive"));
            }
            let writer = c.clone();
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .try_init()
                .expect("the only subscriber of this test binary");
            c
        })
        .clone()
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("capture")).into_owned()
    }
}

struct World {
    server: Server,
    dir: tempfile::TempDir,
    client: Client,
    url: String,
}

async fn world() -> World {
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
    World {
        server,
        dir,
        client,
        url,
    }
}

/// A nonce, so that the values looked for cannot come from anywhere else.
fn nonce() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Launches `cmd` on `queue` with a secret-named and a credential-looking env value,
/// through an agent with `runner`, and returns what must never be logged: those two
/// values and the run token.
async fn whole_run(w: &World, queue: &str, runner: Arc<dyn Runner>) -> Vec<String> {
    let cmd = [
        "sh",
        "-c",
        "echo \"reversed-token:$(echo \"$HOIST_RUN_TOKEN\" | rev)\"",
    ];
    let n = nonce();
    let secret = format!("named-secret-{n}");
    let credential = format!("postgres://app:cred-{n}@db.internal/app");
    let mut runners: HashMap<ResourceType, Arc<dyn Runner>> = HashMap::new();
    runners.insert(runner.resource(), runner);
    let (stop, rx) = watch::channel(false);
    let agent = tokio::spawn(agent::run(
        AgentOptions {
            config: AgentConfig {
                queues: vec![queue.to_string()],
                max_jobs: MaxJobs::Limit(NonZeroU32::new(2).unwrap()),
                stopped_run_timeout: Duration::from_secs(3),
                ..Default::default()
            },
            client: w.client.clone(),
            name: format!("secrets-{queue}"),
            host: "test".into(),
            base_url: w.url.clone(),
            runners,
            unavailable: HashMap::new(),
            builder: Arc::new(hoist_agent::builders::noop::NoopBuilder),
            host_env: Arc::new(HostEnv::capture()),
            drain: false,
        },
        rx,
    ));
    let run = w
        .client
        .launch(&LaunchRequest {
            queue: queue.into(),
            image: Some(image()),
            entry_point: Some(cmd.iter().map(|s| s.to_string()).collect()),
            env: [
                ("API_SECRET_TOKEN".to_string(), secret.clone()),
                ("ANALYTICS_DB".to_string(), credential.clone()),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    let t0 = Instant::now();
    let r = loop {
        let r = w.client.get_run(&run.id).await.unwrap();
        if r.state.is_terminal() {
            break r;
        }
        assert!(t0.elapsed() < LONG, "run still {}", r.state);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(r.state, RunState::Finished, "{:?}", r.failure);
    let _ = stop.send(true);
    tokio::time::timeout(LONG, agent)
        .await
        .expect("the agent stops")
        .unwrap()
        .unwrap();
    let logs = w.client.read_logs(&run.id, 0, None).await.unwrap();
    let token: String = logs
        .lines
        .iter()
        .find_map(|l| l.text.strip_prefix("reversed-token:"))
        .expect("the job wrote its token")
        .chars()
        .rev()
        .collect();
    assert!(token.starts_with("hrt_"), "a run token: {}", token.len());
    vec![secret, credential, token]
}

fn assert_absent(captured: &str, secrets: &[String]) {
    assert!(
        captured.contains("Agent registered.") && captured.contains(" DEBUG "),
        "the capture holds the agent's and DEBUG events:\n{}",
        &captured[..captured.len().min(2000)]
    );
    for s in secrets {
        if let Some(i) = captured.find(s.as_str()) {
            let from = captured[..i].rfind('\n').map_or(0, |n| n + 1);
            let to = captured[i..].find('\n').map_or(captured.len(), |n| i + n);
            let line = secrets.iter().fold(captured[from..to].to_string(), |l, s| {
                l.replace(s.as_str(), "<SECRET>")
            });
            panic!("a secret reached the logs:\n{line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_local_run_logs_no_secret() {
    let captured = capture();
    let w = world().await;
    w.client
        .create_queue(&CreateQueue {
            name: "lp".into(),
            entity: None,
            resource: "local-process".into(),
            config: Some(json!({})),
            template_variables: vec![],
            prioritize: false,
            description: None,
        })
        .await
        .unwrap();
    let runner = Arc::new(LocalProcessRunner::new(w.dir.path().join("work"), vec![]));
    let secrets = whole_run(&w, "lp", runner).await;
    assert_absent(&captured.text(), &secrets);
    w.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_docker_run_logs_no_secret() {
    if !docker_available() {
        return;
    }
    let captured = capture();
    let w = world().await;
    w.client
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
    let runner = Arc::new(
        DockerRunner::connect(&DockerSettings::default())
            .await
            .expect("docker"),
    );
    let secrets = whole_run(&w, "dk", runner).await;
    let text = captured.text();
    assert!(
        text.contains("Container started."),
        "the docker runner's debug events are captured"
    );
    assert_absent(&text, &secrets);
    w.server.shutdown().await;
}
