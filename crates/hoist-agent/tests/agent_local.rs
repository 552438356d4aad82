//! The agent end to end, in process: a real server on 127.0.0.1:0 (temporary SQLite
//! store), a real agent with the local-process runner, real processes.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hoist_agent::agent::{self, AgentOptions};
use hoist_agent::config::{AgentConfig, MaxJobs};
use hoist_agent::runners::Runner;
use hoist_agent::runners::local_process::LocalProcessRunner;
use hoist_client::{Client, Secret};
use hoist_core::api::*;
use hoist_core::resource::ResourceType;
use hoist_core::run::{FailureStage, RunState};
use hoist_server::{Server, ServerConfig};
use serde_json::json;
use tokio::sync::watch;

struct Env {
    server: Option<Server>,
    dir: tempfile::TempDir,
    client: Client,
    url: String,
}

async fn server_at(dir: &Path, bind: &str) -> Server {
    let cfg = ServerConfig::new(bind.parse().unwrap(), dir.join("data"));
    Server::start(cfg).await.unwrap()
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let server = server_at(dir.path(), "127.0.0.1:0").await;
    let key = std::fs::read_to_string(dir.path().join("data/admin.key")).unwrap();
    let url = format!("http://{}", server.addr);
    let client = Client::new(&url, Some(Secret::new(key.trim()))).unwrap();
    Env {
        server: Some(server),
        dir,
        client,
        url,
    }
}

struct AgentHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), agent::AgentError>>,
}

impl AgentHandle {
    async fn shutdown(self) -> Result<(), agent::AgentError> {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("agent stops")
            .unwrap()
    }
}

fn start_agent(
    e: &Env,
    name: &str,
    queues: &[&str],
    max_jobs: u32,
    tweak: impl FnOnce(&mut AgentConfig),
) -> AgentHandle {
    let mut config = AgentConfig {
        queues: queues.iter().map(|s| s.to_string()).collect(),
        max_jobs: MaxJobs::Limit(NonZeroU32::new(max_jobs).unwrap()),
        stopped_run_timeout: Duration::from_secs(3),
        ..Default::default()
    };
    tweak(&mut config);
    let work = e.dir.path().join(format!("work-{name}"));
    let mut runners: HashMap<ResourceType, Arc<dyn Runner>> = HashMap::new();
    runners.insert(
        ResourceType::LocalProcess,
        Arc::new(LocalProcessRunner::new(work, config.env_allow_list.clone())),
    );
    let opts = AgentOptions {
        config,
        client: e.client.clone(),
        name: name.into(),
        host: "test".into(),
        base_url: e.url.clone(),
        runners,
        builder: Arc::new(hoist_agent::builders::noop::NoopBuilder),
        drain: false,
    };
    let (stop, rx) = watch::channel(false);
    AgentHandle {
        stop,
        task: tokio::spawn(agent::run(opts, rx)),
    }
}

async fn queue(c: &Client, name: &str, config: serde_json::Value) {
    c.create_queue(&CreateQueue {
        name: name.into(),
        entity: None,
        resource: "local-process".into(),
        config: Some(config),
        template_variables: vec![],
        prioritize: false,
        description: None,
    })
    .await
    .unwrap();
}

async fn launch(c: &Client, queue: &str, cmd: &[&str]) -> Run {
    c.launch(&LaunchRequest {
        queue: queue.into(),
        entry_point: Some(cmd.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// Waits until the run is in a terminal state.
async fn ended(c: &Client, id: &str, within: Duration) -> Run {
    let t0 = Instant::now();
    loop {
        let r = c.get_run(id).await.unwrap();
        if r.state.is_terminal() {
            return r;
        }
        assert!(
            t0.elapsed() < within,
            "run {id} still {} after {within:?}",
            r.state
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_state(c: &Client, id: &str, state: RunState, within: Duration) {
    let t0 = Instant::now();
    loop {
        let r = c.get_run(id).await.unwrap();
        if r.state == state {
            return;
        }
        assert!(
            t0.elapsed() < within,
            "run {id} is {} not {state} after {within:?}",
            r.state
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn log_text(c: &Client, id: &str) -> Vec<String> {
    c.read_logs(id, 0, Some(10_000))
        .await
        .unwrap()
        .lines
        .into_iter()
        .map(|l| l.text)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_report_exit_codes_logs_and_environment() {
    let e = env().await;
    queue(
        &e.client,
        "lp",
        json!({"env": {"FROM_QUEUE": "q-${project_name}"}}),
    )
    .await;
    let a = start_agent(&e, "a1", &["lp"], 4, |_| {});
    let ok = launch(
        &e.client,
        "lp",
        &["sh", "-c", "echo id=$HOIST_RUN_ID q=$HOIST_QUEUE p=$HOIST_PROJECT env=$FROM_QUEUE; echo cfg=$HOIST_RUN_CONFIG; echo tok=${HOIST_RUN_TOKEN%%_*}; echo key=${HOIST_API_KEY:-none}; pwd"],
    )
    .await;
    let bad = launch(
        &e.client,
        "lp",
        &["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"],
    )
    .await;
    let missing = launch(&e.client, "lp", &["definitely-not-a-command-xyz"]).await;

    let r = ended(&e.client, &ok.id, Duration::from_secs(20)).await;
    assert_eq!(r.state, RunState::Finished, "{:?}", r.failure);
    assert_eq!(r.exit_code, Some(0));
    let logs = log_text(&e.client, &ok.id).await;
    assert!(
        logs.contains(&format!("id={} q=admin/lp p=default env=q-default", ok.id)),
        "{logs:?}"
    );
    assert!(logs.contains(&"cfg={}".to_string()), "{logs:?}");
    assert!(
        logs.contains(&"tok=hrt".to_string()),
        "a run token, not the agent's key: {logs:?}"
    );
    assert!(logs.contains(&"key=none".to_string()), "{logs:?}");
    assert!(
        logs.iter()
            .any(|l| l.ends_with(&format!("work-a1/{}", ok.id))),
        "own working directory: {logs:?}"
    );
    let tl = r.timeline.unwrap();
    let states: Vec<_> = tl.iter().map(|t| t.to).collect();
    assert_eq!(
        states,
        vec![
            RunState::Queued,
            RunState::Claimed,
            RunState::Starting,
            RunState::Running,
            RunState::Finished
        ]
    );
    assert!(
        tl[2].reason.contains("macros substituted: ${project_name}"),
        "{}",
        tl[2].reason
    );

    let r = ended(&e.client, &bad.id, Duration::from_secs(20)).await;
    assert_eq!(r.state, RunState::Failed);
    assert_eq!(r.exit_code, Some(3));
    let f = r.failure.unwrap();
    assert_eq!(f.stage, FailureStage::Run);
    assert!(f.message.contains("exit code 3"), "{}", f.message);
    assert!(
        f.log_tail.contains(&"to-stderr".to_string()),
        "{:?}",
        f.log_tail
    );
    let page = e.client.read_logs(&bad.id, 0, None).await.unwrap();
    let err_line = page.lines.iter().find(|l| l.text == "to-stderr").unwrap();
    assert_eq!(err_line.stream, LogStream::Stderr);

    let r = ended(&e.client, &missing.id, Duration::from_secs(20)).await;
    assert_eq!(r.state, RunState::Failed);
    let f = r.failure.unwrap();
    assert_eq!(f.stage, FailureStage::Run);
    assert!(f.message.contains("not found"), "{}", f.message);

    a.shutdown().await.unwrap();
    let agents = e.client.list_agents().await.unwrap();
    assert_eq!(agents[0].status, AgentStatus::Stopped);
    e.server.unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_reaches_the_job_within_a_second_and_kill_follows_grace() {
    let e = env().await;
    queue(&e.client, "lp", json!({})).await;
    let a = start_agent(&e, "a1", &["lp"], 4, |c| {
        c.stopped_run_timeout = Duration::from_secs(2)
    });
    // Traps TERM: ends quickly with its own message.
    let polite = launch(
        &e.client,
        "lp",
        &[
            "sh",
            "-c",
            "trap 'echo got TERM; exit 0' TERM; echo ready; while true; do sleep 0.1; done",
        ],
    )
    .await;
    // Ignores TERM: killed after the grace period.
    let stubborn = launch(
        &e.client,
        "lp",
        &[
            "sh",
            "-c",
            "trap '' TERM; echo ready; while true; do sleep 0.1; done",
        ],
    )
    .await;
    for id in [&polite.id, &stubborn.id] {
        wait_state(&e.client, id, RunState::Running, Duration::from_secs(20)).await;
        let t0 = Instant::now();
        while !log_text(&e.client, id).await.contains(&"ready".to_string()) {
            assert!(t0.elapsed() < Duration::from_secs(10));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let t0 = Instant::now();
    e.client.stop_run(&polite.id, None).await.unwrap();
    let r = ended(&e.client, &polite.id, Duration::from_secs(10)).await;
    let polite_took = t0.elapsed();
    assert_eq!(r.state, RunState::Stopped);
    assert!(
        log_text(&e.client, &polite.id)
            .await
            .contains(&"got TERM".to_string())
    );
    assert!(
        polite_took < Duration::from_secs(2),
        "stop took {polite_took:?}"
    );

    let t0 = Instant::now();
    e.client.stop_run(&stubborn.id, None).await.unwrap();
    let r = ended(&e.client, &stubborn.id, Duration::from_secs(15)).await;
    let took = t0.elapsed();
    assert_eq!(r.state, RunState::Stopped);
    assert!(
        took >= Duration::from_secs(2),
        "killed before the grace period: {took:?}"
    );
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert_eq!(r.exit_code, Some(128 + 9));
    a.shutdown().await.unwrap();
    e.server.unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_agents_one_queue_each_run_runs_once() {
    let e = env().await;
    queue(&e.client, "lp", json!({})).await;
    let out = e.dir.path().join("ran.txt");
    let agents: Vec<_> = (0..4)
        .map(|i| start_agent(&e, &format!("m{i}"), &["lp"], 3, |_| {}))
        .collect();
    let mut ids = vec![];
    for _ in 0..60 {
        let cmd = format!("echo $HOIST_RUN_ID >> {}", out.display());
        ids.push(launch(&e.client, "lp", &["sh", "-c", &cmd]).await.id);
    }
    for id in &ids {
        assert_eq!(
            ended(&e.client, id, Duration::from_secs(60)).await.state,
            RunState::Finished
        );
    }
    let ran = std::fs::read_to_string(&out).unwrap();
    let mut lines: Vec<_> = ran.lines().collect();
    lines.sort();
    let mut expected: Vec<_> = ids.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(lines, expected, "every run ran exactly once");
    let runs = e
        .client
        .list_runs(&hoist_client::RunQuery {
            limit: Some(100),
            ..Default::default()
        })
        .await
        .unwrap()
        .runs;
    let agents_used: std::collections::HashSet<_> = runs
        .iter()
        .filter_map(|r| r.agent.as_ref().map(|a| a.name.clone()))
        .collect();
    assert!(
        agents_used.len() >= 2,
        "the work was shared: {agents_used:?}"
    );
    for a in agents {
        a.shutdown().await.unwrap();
    }
    e.server.unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_a_queued_run_and_capacity_is_respected() {
    let e = env().await;
    queue(&e.client, "lp", json!({})).await;
    let a = start_agent(&e, "one", &["lp"], 1, |_| {});
    let first = launch(&e.client, "lp", &["sleep", "2"]).await;
    wait_state(
        &e.client,
        &first.id,
        RunState::Running,
        Duration::from_secs(20),
    )
    .await;
    let second = launch(&e.client, "lp", &["true"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        e.client.get_run(&second.id).await.unwrap().state,
        RunState::Queued,
        "max_jobs 1: the second waits"
    );
    let c = e.client.cancel_run(&second.id).await.unwrap();
    assert_eq!(c.state, RunState::Cancelled);
    let third = launch(&e.client, "lp", &["true"]).await;
    // The slot frees when the first ends: the third starts at once, the cancelled never.
    assert_eq!(
        ended(&e.client, &third.id, Duration::from_secs(20))
            .await
            .state,
        RunState::Finished
    );
    assert_eq!(
        e.client.get_run(&second.id).await.unwrap().state,
        RunState::Cancelled
    );
    assert!(e.client.get_run(&second.id).await.unwrap().agent.is_none());
    a.shutdown().await.unwrap();
    e.server.unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_restart_while_jobs_run_loses_nothing() {
    let e = env().await;
    queue(&e.client, "lp", json!({})).await;
    let a = start_agent(&e, "r1", &["lp"], 4, |_| {});
    let run = launch(
        &e.client,
        "lp",
        &["sh", "-c", "echo before; sleep 3; echo after"],
    )
    .await;
    wait_state(
        &e.client,
        &run.id,
        RunState::Running,
        Duration::from_secs(20),
    )
    .await;
    let addr = e.server.as_ref().unwrap().addr;
    let mut e = e;
    e.server.take().unwrap().shutdown().await;
    // Down for a moment while the job runs, then back on the same address and store.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let server = server_at(e.dir.path(), &addr.to_string()).await;
    e.server = Some(server);
    // A launch made after the restart is served too.
    let later = launch(&e.client, "lp", &["echo", "later"]).await;
    let r = ended(&e.client, &run.id, Duration::from_secs(60)).await;
    assert_eq!(r.state, RunState::Finished, "{:?}", r.failure);
    let logs = log_text(&e.client, &run.id).await;
    assert_eq!(logs, vec!["before", "after"]);
    assert_eq!(
        ended(&e.client, &later.id, Duration::from_secs(60))
            .await
            .state,
        RunState::Finished
    );
    a.shutdown().await.unwrap();
    e.server.unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_shutdown_stops_local_processes_and_restart_fails_leftovers() {
    let e = env().await;
    queue(&e.client, "lp", json!({})).await;
    let a = start_agent(&e, "same", &["lp"], 2, |c| {
        c.stopped_run_timeout = Duration::from_secs(1)
    });
    let run = launch(&e.client, "lp", &["sleep", "300"]).await;
    wait_state(
        &e.client,
        &run.id,
        RunState::Running,
        Duration::from_secs(20),
    )
    .await;
    a.shutdown().await.unwrap();
    let r = ended(&e.client, &run.id, Duration::from_secs(10)).await;
    assert_eq!(r.state, RunState::Stopped);
    assert!(r.state_reason.contains("stopped"), "{}", r.state_reason);
    e.server.unwrap().shutdown().await;
}
