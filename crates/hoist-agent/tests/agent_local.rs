//! The agent end to end, in process: a real server on 127.0.0.1:0 (temporary SQLite
//! store), a real agent with the local-process runner, real processes.
//!
//! `GatedRunner` stands in for the runners still to come (Kubernetes, the clouds): a
//! [`Runner`] for the kubernetes resource that runs the job as a real local process,
//! declares a pending phase (its execution runs only once the test opens a gate) and,
//! optionally, that it needs a registry. It exercises the seams those runners will use;
//! there is no real cluster behind it.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hoist_agent::agent::{self, AgentOptions};
use hoist_agent::config::{AgentConfig, MaxJobs, OciRegistry, RegistryConfig};
use hoist_agent::host_env::HostEnv;
use hoist_agent::logs::LogSink;
use hoist_agent::runners::local_process::LocalProcessRunner;
use hoist_agent::runners::{
    Adopted, Capabilities, Execution, Exit, JobSpec, LogResume, Runner, RunnerError,
};
use hoist_client::{Client, Secret};
use hoist_core::api::*;
use hoist_core::resource::ResourceType;
use hoist_core::run::{FailureStage, RunState};
use hoist_server::{Server, ServerConfig};
use serde_json::json;
use tokio::sync::watch;

const LONG: Duration = Duration::from_secs(60);

struct Env {
    server: Option<Server>,
    dir: tempfile::TempDir,
    client: Client,
    url: String,
}

async fn server_at(dir: &Path, bind: &str) -> Server {
    server_with(dir, bind, |_| {}).await
}

async fn server_with(dir: &Path, bind: &str, tweak: impl FnOnce(&mut ServerConfig)) -> Server {
    let mut cfg = ServerConfig::new(bind.parse().unwrap(), dir.join("data"));
    tweak(&mut cfg);
    Server::start(cfg).await.unwrap()
}

async fn env() -> Env {
    env_with(|_| {}).await
}

async fn env_with(tweak: impl FnOnce(&mut ServerConfig)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let server = server_with(dir.path(), "127.0.0.1:0", tweak).await;
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

    /// The agent's result when it ends by itself (a refusal at start).
    async fn ended(self) -> Result<(), agent::AgentError> {
        tokio::time::timeout(LONG, self.task)
            .await
            .expect("the agent ends by itself")
            .unwrap()
    }
}

/// What an agent is started with besides its config.
struct Setup {
    /// The agent's environment (default: the test process's).
    host_env: HostEnv,
    /// Runners besides the local-process one.
    runners: Vec<Arc<dyn Runner>>,
    unavailable: HashMap<ResourceType, String>,
    /// The agent's API client (default: the admin's).
    client: Option<Client>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            host_env: HostEnv::capture(),
            runners: Vec::new(),
            unavailable: HashMap::new(),
            client: None,
        }
    }
}

fn work_dir(e: &Env, agent: &str) -> PathBuf {
    e.dir.path().join(format!("work-{agent}"))
}

fn start_agent(
    e: &Env,
    name: &str,
    queues: &[&str],
    max_jobs: u32,
    tweak: impl FnOnce(&mut AgentConfig),
) -> AgentHandle {
    start_agent_with(e, name, queues, max_jobs, tweak, Setup::default())
}

fn start_agent_with(
    e: &Env,
    name: &str,
    queues: &[&str],
    max_jobs: u32,
    tweak: impl FnOnce(&mut AgentConfig),
    setup: Setup,
) -> AgentHandle {
    let mut config = AgentConfig {
        queues: queues.iter().map(|s| s.to_string()).collect(),
        max_jobs: MaxJobs::Limit(NonZeroU32::new(max_jobs).unwrap()),
        stopped_run_timeout: Duration::from_secs(3),
        ..Default::default()
    };
    tweak(&mut config);
    let host_env = Arc::new(setup.host_env);
    let mut runners: HashMap<ResourceType, Arc<dyn Runner>> = HashMap::new();
    runners.insert(
        ResourceType::LocalProcess,
        Arc::new(
            LocalProcessRunner::new(work_dir(e, name), config.env_allow_list.clone())
                .with_settings(&config.local_process)
                .with_host_env(host_env.clone()),
        ),
    );
    for r in setup.runners {
        runners.insert(r.resource(), r);
    }
    let opts = AgentOptions {
        config,
        client: setup.client.unwrap_or_else(|| e.client.clone()),
        name: name.into(),
        host: "test".into(),
        base_url: e.url.clone(),
        runners,
        unavailable: setup.unavailable,
        builder: Arc::new(hoist_agent::builders::noop::NoopBuilder),
        host_env,
        drain: false,
    };
    let (stop, rx) = watch::channel(false);
    AgentHandle {
        stop,
        task: tokio::spawn(agent::run(opts, rx)),
    }
}

async fn queue(c: &Client, name: &str, config: serde_json::Value) {
    queue_of(c, name, "local-process", config).await
}

async fn queue_of(c: &Client, name: &str, resource: &str, config: serde_json::Value) {
    c.create_queue(&CreateQueue {
        name: name.into(),
        entity: None,
        resource: resource.into(),
        config: Some(config),
        template_variables: vec![],
        prioritize: false,
        description: None,
    })
    .await
    .unwrap();
}

async fn launch(c: &Client, queue: &str, cmd: &[&str]) -> Run {
    launch_env(c, queue, cmd, &[]).await
}

/// A run of `cmd` with an image (the kubernetes queues of [`GatedRunner`] need one;
/// it runs the command as a local process).
async fn launch_k8s(c: &Client, queue: &str, cmd: &[&str]) -> Run {
    c.launch(&LaunchRequest {
        queue: queue.into(),
        image: Some("example.invalid/unused:1".into()),
        entry_point: Some(cmd.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn launch_env(c: &Client, queue: &str, cmd: &[&str], env: &[(&str, &str)]) -> Run {
    c.launch(&LaunchRequest {
        queue: queue.into(),
        entry_point: Some(cmd.iter().map(|s| s.to_string()).collect()),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
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

/// Waits until the run's log holds the line `text`.
async fn wait_log_line(c: &Client, id: &str, text: &str) {
    let t0 = Instant::now();
    while !log_text(c, id).await.iter().any(|l| l == text) {
        assert!(
            t0.elapsed() < LONG,
            "run {id}: no log line {text:?}: {:?}",
            log_text(c, id).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `path` exists (`true`) or is gone (`false`).
async fn wait_path(path: &Path, exists: bool) {
    let t0 = Instant::now();
    while path.exists() != exists {
        assert!(
            t0.elapsed() < LONG,
            "{} {} after {LONG:?}",
            path.display(),
            if exists {
                "does not exist"
            } else {
                "still exists"
            }
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn entered(r: &Run, state: RunState) -> chrono::DateTime<chrono::Utc> {
    r.timeline
        .as_ref()
        .expect("timeline")
        .iter()
        .find(|t| t.to == state)
        .unwrap_or_else(|| panic!("run {} never entered {state}", r.id))
        .at
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
    // The run's directory goes once the run has ended.
    wait_path(&work_dir(&e, "a1").join(&ok.id), false).await;

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

/// A stop sends SIGTERM to the job's process group: a job that traps it ends with its
/// own code; one that ignores it keeps running (it says so, and goes on writing) until
/// the kill after the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_sends_term_then_kills_after_the_grace_period() {
    let e = env().await;
    queue(&e.client, "lp", json!({})).await;
    let a = start_agent(&e, "a1", &["lp"], 4, |c| {
        c.stopped_run_timeout = Duration::from_secs(2)
    });
    // Traps TERM: ends at once with its own message.
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
    // Ignores TERM (says so, then keeps writing): killed after the grace period.
    let stubborn = launch(
        &e.client,
        "lp",
        &[
            "sh",
            "-c",
            "trap 'echo term-ignored; T=1' TERM; echo ready; while true; do [ -n \"$T\" ] && echo alive-after-term; sleep 0.1; done",
        ],
    )
    .await;
    for id in [&polite.id, &stubborn.id] {
        wait_state(&e.client, id, RunState::Running, LONG).await;
        wait_log_line(&e.client, id, "ready").await;
    }
    e.client.stop_run(&polite.id, None).await.unwrap();
    let r = ended(&e.client, &polite.id, LONG).await;
    assert_eq!(r.state, RunState::Stopped);
    assert_eq!(r.exit_code, Some(0), "the job's own exit code");
    assert!(
        log_text(&e.client, &polite.id)
            .await
            .contains(&"got TERM".to_string())
    );

    e.client.stop_run(&stubborn.id, None).await.unwrap();
    let r = ended(&e.client, &stubborn.id, LONG).await;
    assert_eq!(r.state, RunState::Stopped);
    assert_eq!(r.exit_code, Some(128 + 9), "killed by SIGKILL");
    let logs = log_text(&e.client, &stubborn.id).await;
    let term = logs
        .iter()
        .position(|l| l == "term-ignored")
        .unwrap_or_else(|| panic!("TERM came first: {logs:?}"));
    assert!(
        logs[term..].iter().any(|l| l == "alive-after-term"),
        "the job ran on after TERM until the kill: {logs:?}"
    );
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

/// At `max_jobs: 1` a busy agent takes no second run: a run launched meanwhile is
/// claimed only after the first has ended (the server's own transition times say so);
/// a queued run can be cancelled and never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_a_queued_run_and_capacity_is_respected() {
    let e = env().await;
    queue(&e.client, "lp", json!({})).await;
    let a = start_agent(&e, "one", &["lp"], 1, |_| {});
    let first = launch(
        &e.client,
        "lp",
        &[
            "sh",
            "-c",
            "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.05; done",
        ],
    )
    .await;
    wait_state(&e.client, &first.id, RunState::Running, LONG).await;
    wait_log_line(&e.client, &first.id, "ready").await;
    let victim = launch(&e.client, "lp", &["true"]).await;
    let second = launch(&e.client, "lp", &["echo", "second"]).await;
    let c = e.client.cancel_run(&victim.id).await.unwrap();
    assert_eq!(c.state, RunState::Cancelled);
    // The first run's stop wakes the agent's claim (a stop request is an answer to it):
    // an agent ignoring its capacity would take the second run in that same claim.
    e.client.stop_run(&first.id, None).await.unwrap();
    let f = ended(&e.client, &first.id, LONG).await;
    assert_eq!(f.state, RunState::Stopped);
    let r = ended(&e.client, &second.id, LONG).await;
    assert_eq!(r.state, RunState::Finished, "{:?}", r.failure);
    assert!(
        entered(&r, RunState::Claimed) >= entered(&f, RunState::Stopped),
        "max_jobs 1: the second run was claimed before the first ended:\nfirst {:?}\nsecond {:?}",
        f.timeline,
        r.timeline
    );
    let v = e.client.get_run(&victim.id).await.unwrap();
    assert_eq!(v.state, RunState::Cancelled);
    assert!(v.agent.is_none(), "no agent ever held it");
    let states: Vec<RunState> = v.timeline.unwrap().iter().map(|t| t.to).collect();
    assert_eq!(states, [RunState::Queued, RunState::Cancelled]);
    a.shutdown().await.unwrap();
    e.server.unwrap().shutdown().await;
}

/// The server goes away while a job runs and the job ends while it is away: the agent
/// keeps the end and the output, and delivers both once the server is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_restart_while_jobs_run_loses_nothing() {
    let e = env().await;
    queue(&e.client, "lp", json!({})).await;
    let a = start_agent(&e, "r1", &["lp"], 4, |_| {});
    let go = e.dir.path().join("go");
    let done = e.dir.path().join("done");
    let script = format!(
        "echo before; while [ ! -f {go} ]; do sleep 0.05; done; echo after; touch {done}",
        go = go.display(),
        done = done.display()
    );
    let run = launch(&e.client, "lp", &["sh", "-c", &script]).await;
    wait_state(&e.client, &run.id, RunState::Running, LONG).await;
    wait_log_line(&e.client, &run.id, "before").await;
    let addr = e.server.as_ref().unwrap().addr;
    let mut e = e;
    e.server.take().unwrap().shutdown().await;
    // The job ends while the server is down.
    std::fs::write(&go, "").unwrap();
    wait_path(&done, true).await;
    let server = server_at(e.dir.path(), &addr.to_string()).await;
    e.server = Some(server);
    // A launch made after the restart is served too.
    let later = launch(&e.client, "lp", &["echo", "later"]).await;
    let r = ended(&e.client, &run.id, LONG).await;
    assert_eq!(r.state, RunState::Finished, "{:?}", r.failure);
    let logs = log_text(&e.client, &run.id).await;
    assert_eq!(logs, vec!["before", "after"]);
    assert_eq!(
        ended(&e.client, &later.id, LONG).await.state,
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

/// What a test agent's environment holds besides the test process's own: credentials
/// by name and by value, and plain variables.
fn leaky_host_env() -> HostEnv {
    let mut vars: Vec<(String, String)> = std::env::vars().collect();
    for (k, v) in [
        ("DATABASE_URL", "postgres://app:db-s3cret@db.internal/app"),
        (
            "GITHUB_PAT",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
        ),
        ("MYSQL_PWD", "mysql-s3cret"),
        ("PLAIN_BY_QUEUE", "listed-by-the-queue"),
        ("AGENT_ONLY_PLAIN", "agent-only"),
        ("ALLOWED_URL", "https://robot:allowed-s3cret@example.com/x"),
        ("HOIST_API_KEY", "hk_the-agents-own-key"),
    ] {
        vars.push((k.into(), v.into()));
    }
    HostEnv::from_vars(vars)
}

/// `local-process.allow-env-passthrough: false` (the default): a job gets a minimal
/// base of the agent's environment, what the queue config lists (never a credential
/// unless allow-listed), its own env and `HOIST_*`; `true`: the agent's environment
/// without its credentials (by name or by value) unless allow-listed. Real processes
/// print what they got.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_jobs_never_get_the_agents_credentials() {
    let e = env().await;
    queue(
        &e.client,
        "lp",
        json!({"env": ["PLAIN_BY_QUEUE", "DATABASE_URL", "MYSQL_PWD", "FROM_QUEUE=q"]}),
    )
    .await;
    let cmd = ["sh", "-c", "env | sort"];
    let secrets = [
        "db-s3cret",
        "github_pat_11ABCDEFG",
        "mysql-s3cret",
        "hk_the-agents-own-key",
    ];
    let names = |logs: &[String]| -> Vec<String> {
        logs.iter()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_string()))
            .collect()
    };

    // Passthrough off.
    let a = start_agent_with(
        &e,
        "off",
        &["lp"],
        2,
        |c| c.env_allow_list = vec!["ALLOWED_URL".into()],
        Setup {
            host_env: leaky_host_env(),
            ..Setup::default()
        },
    );
    let run = launch_env(&e.client, "lp", &cmd, &[("FROM_RUN", "r")]).await;
    let r = ended(&e.client, &run.id, LONG).await;
    assert_eq!(r.state, RunState::Finished, "{:?}", r.failure);
    let logs = log_text(&e.client, &run.id).await;
    for s in secrets {
        assert!(
            !logs.iter().any(|l| l.contains(s)),
            "{s} reached the job: {logs:?}"
        );
    }
    let got = names(&logs);
    for want in [
        "PATH",
        "PLAIN_BY_QUEUE",
        "FROM_QUEUE",
        "FROM_RUN",
        "HOIST_RUN_ID",
        "HOIST_RUN_TOKEN",
    ] {
        assert!(got.iter().any(|n| n == want), "{want} missing: {got:?}");
    }
    for not in [
        "AGENT_ONLY_PLAIN",
        "ALLOWED_URL",
        "DATABASE_URL",
        "GITHUB_PAT",
        "MYSQL_PWD",
        "HOIST_API_KEY",
    ] {
        assert!(
            !got.iter().any(|n| n == not),
            "{not} passed through: {got:?}"
        );
    }
    assert!(
        logs.iter().any(|l| l.contains("DATABASE_URL")
            && l.contains("looks like a credential")
            && l.contains("env-allow-list")),
        "the run's log says why DATABASE_URL was not passed: {logs:?}"
    );
    assert!(
        logs.iter()
            .any(|l| l.contains("MYSQL_PWD") && l.contains("name looks secret")),
        "{logs:?}"
    );
    a.shutdown().await.unwrap();

    // Passthrough on.
    let a = start_agent_with(
        &e,
        "on",
        &["lp"],
        2,
        |c| {
            c.env_allow_list = vec!["ALLOWED_URL".into()];
            c.local_process.allow_env_passthrough = true;
        },
        Setup {
            host_env: leaky_host_env(),
            ..Setup::default()
        },
    );
    let run = launch(&e.client, "lp", &cmd).await;
    let r = ended(&e.client, &run.id, LONG).await;
    assert_eq!(r.state, RunState::Finished, "{:?}", r.failure);
    let logs = log_text(&e.client, &run.id).await;
    for s in secrets {
        assert!(
            !logs.iter().any(|l| l.contains(s)),
            "{s} reached the job: {logs:?}"
        );
    }
    assert!(
        logs.contains(&"AGENT_ONLY_PLAIN=agent-only".to_string()),
        "passthrough: {logs:?}"
    );
    assert!(
        logs.contains(&"ALLOWED_URL=https://robot:allowed-s3cret@example.com/x".to_string()),
        "allow-listed: {logs:?}"
    );
    a.shutdown().await.unwrap();
    e.server.unwrap().shutdown().await;
}

/// A run's directory is deleted when the run ends, kept after a failure only with
/// `keep-failed-run-dirs`; a job whose directory outgrows `max-run-dir-bytes` is
/// stopped and fails saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_directories_are_removed_and_their_disk_budget_enforced() {
    let e = env().await;
    queue(&e.client, "keep", json!({})).await;
    queue(&e.client, "tidy", json!({})).await;
    let keep = start_agent(&e, "keep", &["keep"], 4, |c| {
        c.local_process.keep_failed_run_dirs = true;
        c.local_process.max_run_dir_bytes = 1 << 20;
    });
    let tidy = start_agent(&e, "tidy", &["tidy"], 4, |_| {});

    let ok = launch(&e.client, "keep", &["sh", "-c", "echo data > out.txt"]).await;
    let failed = launch(
        &e.client,
        "keep",
        &["sh", "-c", "echo data > out.txt; exit 3"],
    )
    .await;
    let tidy_failed = launch(
        &e.client,
        "tidy",
        &["sh", "-c", "echo data > out.txt; exit 3"],
    )
    .await;
    let hog = launch(
        &e.client,
        "keep",
        &[
            "sh",
            "-c",
            "head -c 3000000 /dev/urandom > big; echo written; while true; do sleep 0.1; done",
        ],
    )
    .await;

    assert_eq!(
        ended(&e.client, &ok.id, LONG).await.state,
        RunState::Finished
    );
    wait_path(&work_dir(&e, "keep").join(&ok.id), false).await;

    assert_eq!(
        ended(&e.client, &failed.id, LONG).await.state,
        RunState::Failed
    );
    assert_eq!(
        ended(&e.client, &tidy_failed.id, LONG).await.state,
        RunState::Failed
    );
    wait_path(&work_dir(&e, "tidy").join(&tidy_failed.id), false).await;

    let r = ended(&e.client, &hog.id, LONG).await;
    assert_eq!(r.state, RunState::Failed);
    let f = r.failure.expect("failure");
    assert_eq!(f.stage, FailureStage::Run);
    assert!(
        f.message
            .contains("local-process.max-run-dir-bytes (1 MiB)")
            && f.message.contains("stopped"),
        "{}",
        f.message
    );
    assert!(
        log_text(&e.client, &hog.id)
            .await
            .contains(&"written".to_string())
    );

    // Cleanup happens after the final report: once the agents are down, it is done.
    keep.shutdown().await.unwrap();
    tidy.shutdown().await.unwrap();
    assert!(
        work_dir(&e, "keep")
            .join(&failed.id)
            .join("out.txt")
            .exists(),
        "the failed run's directory is kept"
    );
    assert!(
        work_dir(&e, "keep").join(&hog.id).join("big").exists(),
        "the over-budget run's directory is kept"
    );
    e.server.unwrap().shutdown().await;
}

/// An agent registers only the queues it has a runner for, and refuses to start when
/// none is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queues_without_a_runner_are_skipped() {
    let e = env().await;
    queue(&e.client, "lp", json!({})).await;
    queue_of(&e.client, "dk", "docker", json!({"network": "none"})).await;
    let no_docker = || Setup {
        unavailable: HashMap::from([(
            ResourceType::Docker,
            "no Docker daemon answered when it started".to_string(),
        )]),
        ..Setup::default()
    };
    let a = start_agent_with(&e, "mixed", &["lp", "dk"], 1, |_| {}, no_docker());
    let t0 = Instant::now();
    let registered = loop {
        let agents = e.client.list_agents().await.unwrap();
        if let Some(x) = agents.into_iter().find(|x| x.name == "mixed") {
            break x;
        }
        assert!(t0.elapsed() < LONG, "the agent did not register");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(registered.queues, ["admin/lp"]);
    a.shutdown().await.unwrap();

    let a = start_agent_with(&e, "docker-only", &["dk"], 1, |_| {}, no_docker());
    let err = a.ended().await.expect_err("nothing to serve");
    let msg = err.to_string();
    assert!(
        msg.contains("queue admin/dk targets docker; this agent has no docker runner: no Docker daemon answered"),
        "{msg}"
    );
    assert!(
        !e.client
            .list_agents()
            .await
            .unwrap()
            .iter()
            .any(|x| x.name == "docker-only"),
        "it never registered"
    );
    e.server.unwrap().shutdown().await;
}

/// An agent whose owner loses access to its team's queue stops by itself with the
/// server's reason, and stops the team run it was executing: the owner's machine does
/// not keep running a team's job after leaving the team.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_stops_when_its_session_is_ended() {
    let e = env().await;
    let bob = e
        .client
        .create_user(&CreateUser {
            name: "bob".into(),
            admin: false,
        })
        .await
        .unwrap();
    e.client
        .create_team(&CreateTeam {
            name: "lab".into(),
            members: vec!["bob".into()],
        })
        .await
        .unwrap();
    e.client
        .create_queue(&CreateQueue {
            name: "lq".into(),
            entity: Some("lab".into()),
            resource: "local-process".into(),
            config: Some(json!({})),
            template_variables: vec![],
            prioritize: false,
            description: None,
        })
        .await
        .unwrap();
    let bob_client = Client::new(&e.url, Some(bob.api_key.secret.clone())).unwrap();
    let marker = e.dir.path().join("still-running");
    let a = start_agent_with(
        &e,
        "bobs-agent",
        &["lab/lq"],
        1,
        |_| {},
        Setup {
            client: Some(bob_client.clone()),
            ..Setup::default()
        },
    );
    let run = bob_client
        .launch(&LaunchRequest {
            queue: "lq".into(),
            entity: Some("lab".into()),
            entry_point: Some(vec![
                "sh".into(),
                "-c".into(),
                format!(
                    "echo ready; while true; do touch {}; sleep 0.1; done",
                    marker.display()
                ),
            ]),
            ..Default::default()
        })
        .await
        .unwrap();
    wait_log_line(&e.client, &run.id, "ready").await;

    e.client.remove_member("lab", "bob").await.unwrap();
    let err = a.ended().await.expect_err("the session ended");
    assert!(matches!(err, agent::AgentError::SessionEnded(_)), "{err:?}");
    assert!(err.to_string().contains("session"), "{err}");
    // The job was stopped: its marker file stops being touched.
    let t0 = Instant::now();
    loop {
        let before = std::fs::metadata(&marker).unwrap().modified().unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = std::fs::metadata(&marker).unwrap().modified().unwrap();
        if before == after {
            break;
        }
        assert!(t0.elapsed() < LONG, "the team's job kept running");
    }
    let r = e.client.get_run(&run.id).await.unwrap();
    assert_ne!(r.state, RunState::Running, "{:?}", r.state);
    e.server.unwrap().shutdown().await;
}

// ---------------------------------------------------------------------------------
// A runner with a pending phase (see the module documentation).

/// Runs jobs of `kubernetes` queues as local processes; an execution runs only once
/// the file `<gates>/<run id>` exists (when `gates` is set); a start returns only once
/// `<start_gates>/<run id>` exists (when set); exit code 75 is reported as a
/// preemption.
struct GatedRunner {
    inner: LocalProcessRunner,
    gates: Option<PathBuf>,
    start_gates: Option<PathBuf>,
    needs_registry: bool,
}

async fn wait_file(path: &Path) {
    while !tokio::fs::try_exists(path).await.unwrap_or(false) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct GatedExecution {
    inner: Box<dyn Execution>,
    gate: Option<PathBuf>,
}

#[async_trait]
impl Runner for GatedRunner {
    fn resource(&self) -> ResourceType {
        ResourceType::Kubernetes
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            needs_image: false,
            survives_restart: false,
            needs_registry: self.needs_registry,
            reports_pending: true,
        }
    }

    async fn start(&self, job: &JobSpec, logs: LogSink) -> Result<Box<dyn Execution>, RunnerError> {
        if let Some(g) = &self.start_gates {
            wait_file(&g.join(&job.run_id)).await;
        }
        let mut local = job.clone();
        local.resource_config = json!({});
        Ok(Box::new(GatedExecution {
            inner: self.inner.start(&local, logs).await?,
            gate: self.gates.as_ref().map(|g| g.join(&job.run_id)),
        }))
    }

    async fn adopt_resuming(
        &self,
        job: &JobSpec,
        logs: LogSink,
        resume: LogResume,
    ) -> Result<Adopted, RunnerError> {
        self.inner.adopt_resuming(job, logs, resume).await
    }
}

#[async_trait]
impl Execution for GatedExecution {
    fn describe(&self) -> String {
        format!("gated {}", self.inner.describe())
    }

    async fn running(&self) -> Result<(), RunnerError> {
        if let Some(g) = &self.gate {
            wait_file(g).await;
        }
        Ok(())
    }

    async fn wait(&self) -> Result<Exit, RunnerError> {
        match self.inner.wait().await {
            Ok(Exit::Code(75)) => Ok(Exit::Preempted {
                reason: "the test node was reclaimed".into(),
            }),
            other => other,
        }
    }

    async fn stop(&self, grace: Duration) -> Result<(), RunnerError> {
        self.inner.stop(grace).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

fn gated(e: &Env, name: &str, gates: Option<PathBuf>, needs_registry: bool) -> Setup {
    Setup {
        runners: vec![Arc::new(GatedRunner {
            inner: LocalProcessRunner::new(work_dir(e, &format!("{name}-gated")), vec![]),
            gates,
            start_gates: None,
            needs_registry,
        })],
        ..Setup::default()
    }
}

/// A run accepted by its runner but not yet running is `starting`; it becomes
/// `running` when the runner says so. Its job already writes output meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pending_runs_are_starting_until_their_runner_says_they_run() {
    let e = env().await;
    queue_of(&e.client, "k8s", "kubernetes", json!({})).await;
    let gates = e.dir.path().join("gates");
    std::fs::create_dir_all(&gates).unwrap();
    let done = e.dir.path().join("done");
    let a = start_agent_with(
        &e,
        "pend",
        &["k8s"],
        1,
        |_| {},
        gated(&e, "pend", Some(gates.clone()), false),
    );
    let script = format!(
        "echo ready; while [ ! -f {} ]; do sleep 0.05; done; echo finished",
        done.display()
    );
    let run = launch_k8s(&e.client, "k8s", &["sh", "-c", &script]).await;
    wait_log_line(&e.client, &run.id, "ready").await;
    let r = e.client.get_run(&run.id).await.unwrap();
    assert_eq!(
        r.state,
        RunState::Starting,
        "accepted, and the runner has not said it runs"
    );
    std::fs::write(gates.join(&run.id), "").unwrap();
    wait_state(&e.client, &run.id, RunState::Running, LONG).await;
    std::fs::write(&done, "").unwrap();
    let r = ended(&e.client, &run.id, LONG).await;
    assert_eq!(r.state, RunState::Finished, "{:?}", r.failure);
    let states: Vec<RunState> = r.timeline.unwrap().iter().map(|t| t.to).collect();
    assert_eq!(
        states,
        [
            RunState::Queued,
            RunState::Claimed,
            RunState::Starting,
            RunState::Running,
            RunState::Finished
        ]
    );
    a.shutdown().await.unwrap();
    e.server.unwrap().shutdown().await;
}

/// A preempted execution sends its run back to the queue; the next attempt runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_preempted_run_goes_back_to_its_queue() {
    let e = env().await;
    queue_of(&e.client, "k8s", "kubernetes", json!({})).await;
    let a = start_agent_with(
        &e,
        "pre",
        &["k8s"],
        1,
        |_| {},
        gated(&e, "pre", None, false),
    );
    let mark = e.dir.path().join("first-attempt");
    let script = format!(
        "if [ -f {m} ]; then echo second; else touch {m}; echo first; exit 75; fi",
        m = mark.display()
    );
    let run = launch_k8s(&e.client, "k8s", &["sh", "-c", &script]).await;
    let r = ended(&e.client, &run.id, LONG).await;
    assert_eq!(r.state, RunState::Finished, "{:?}", r.failure);
    assert_eq!(r.attempts, 2, "handed out again after the preemption");
    let tl = r.timeline.unwrap();
    let requeued = tl
        .iter()
        .find(|t| t.to == RunState::Queued && t.from == Some(RunState::Running))
        .unwrap_or_else(|| panic!("no running → queued transition: {tl:?}"));
    assert!(
        requeued
            .reason
            .contains("preempted: the test node was reclaimed; back to the queue"),
        "{}",
        requeued.reason
    );
    let logs = log_text(&e.client, &run.id).await;
    assert!(logs.contains(&"first".to_string()) && logs.contains(&"second".to_string()));
    a.shutdown().await.unwrap();
    e.server.unwrap().shutdown().await;
}

/// A run preempted more often than the agent's `max_requeues` allows fails instead of
/// going back to its queue again; the failure names the preemption and the key. (The
/// server's own bound is higher, so this is the agent's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_preempted_beyond_max_requeues_fails() {
    let e = env().await;
    queue_of(&e.client, "k8s", "kubernetes", json!({})).await;
    let a = start_agent_with(
        &e,
        "prebound",
        &["k8s"],
        1,
        |c| c.max_requeues = 1,
        gated(&e, "prebound", None, false),
    );
    // Preempted on every attempt.
    let run = launch_k8s(&e.client, "k8s", &["sh", "-c", "echo attempt; exit 75"]).await;
    let r = ended(&e.client, &run.id, LONG).await;
    assert_eq!(r.state, RunState::Failed, "{:?}", r.state_reason);
    assert_eq!(r.attempts, 2, "one re-queue, then failed");
    let failure = r.failure.expect("a failure");
    assert_eq!(failure.stage, FailureStage::Run);
    assert!(
        failure.message.starts_with(
            "preempted: the test node was reclaimed; the run was handed to agents 2 times"
        ) && failure.message.contains("max_requeues is 1"),
        "{}",
        failure.message
    );
    let tl = r.timeline.unwrap();
    let requeued = tl
        .iter()
        .filter(|t| t.to == RunState::Queued && t.from == Some(RunState::Running))
        .count();
    assert_eq!(requeued, 1, "{tl:?}");
    let logs = log_text(&e.client, &run.id).await;
    assert_eq!(
        logs.iter().filter(|l| *l == "attempt").count(),
        2,
        "{logs:?}"
    );
    a.shutdown().await.unwrap();
    e.server.unwrap().shutdown().await;
}

/// A queue whose target pulls images from a registry is refused at agent start when the
/// agent config has no `registry`, naming the queue and the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runner_that_needs_a_registry_needs_one_configured() {
    let e = env().await;
    queue(&e.client, "lp", json!({})).await;
    queue_of(&e.client, "k8s", "kubernetes", json!({})).await;
    let a = start_agent_with(
        &e,
        "noreg",
        &["lp", "k8s"],
        1,
        |_| {},
        gated(&e, "noreg", None, true),
    );
    let msg = a.ended().await.expect_err("refused").to_string();
    assert!(
        msg.contains("queue admin/k8s targets kubernetes")
            && msg.contains("no `registry`")
            && msg.contains("set `registry` in the agent config"),
        "{msg}"
    );

    let a = start_agent_with(
        &e,
        "withreg",
        &["lp", "k8s"],
        1,
        |c| {
            c.registry = RegistryConfig::Oci(OciRegistry {
                host: "127.0.0.1:5000".into(),
                repository: "hoist".into(),
                plain_http: true,
                credentials_file: None,
            })
        },
        gated(&e, "withreg", None, true),
    );
    let run = launch_k8s(&e.client, "k8s", &["echo", "served"]).await;
    let r = ended(&e.client, &run.id, LONG).await;
    assert_eq!(r.state, RunState::Finished, "{:?}", r.failure);
    a.shutdown().await.unwrap();
    e.server.unwrap().shutdown().await;
}

/// A start that takes long (an image pull) still confirms the claim before its lease
/// lapses: `starting` is reported halfway through the lease, before the start returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_start_confirms_the_claim_in_time() {
    let e = env_with(|c| c.lease = Duration::from_secs(2)).await;
    queue_of(&e.client, "k8s", "kubernetes", json!({})).await;
    let start_gates = e.dir.path().join("start-gates");
    std::fs::create_dir_all(&start_gates).unwrap();
    let setup = Setup {
        runners: vec![Arc::new(GatedRunner {
            inner: LocalProcessRunner::new(work_dir(&e, "slow-gated"), vec![]),
            gates: None,
            start_gates: Some(start_gates.clone()),
            needs_registry: false,
        })],
        ..Setup::default()
    };
    let a = start_agent_with(&e, "slow", &["k8s"], 1, |_| {}, setup);
    let run = launch_k8s(&e.client, "k8s", &["echo", "started"]).await;
    // The start is held: only the early confirmation can make the run `starting`.
    wait_state(&e.client, &run.id, RunState::Starting, LONG).await;
    std::fs::write(start_gates.join(&run.id), "").unwrap();
    let r = ended(&e.client, &run.id, LONG).await;
    assert_eq!(r.state, RunState::Finished, "{:?}", r.failure);
    assert_eq!(r.attempts, 1, "the claim never lapsed");
    let tl = r.timeline.unwrap();
    let starting = tl.iter().find(|t| t.to == RunState::Starting).unwrap();
    assert!(
        starting.reason.contains("the job is still being started"),
        "{}",
        starting.reason
    );
    a.shutdown().await.unwrap();
    e.server.unwrap().shutdown().await;
}
