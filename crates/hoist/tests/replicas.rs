//! Several `hoist server` processes on one PostgreSQL database (issue 13): a launch on
//! one replica wakes a claim parked on another, a log follower on one replica sees
//! lines appended on another, replicas bootstrap one admin together, deleting a queue
//! races a claim cleanly, and `kill -9` of a replica during a launch burst loses and
//! duplicates nothing.
//!
//! Each test gets a fresh database (`hoist_testkit::pg::PgDb`) and is skipped without
//! `HOIST_TEST_DATABASE_URL` (required under `HOIST_TEST_REQUIRE_SERVICES`). Replicas
//! share one blob directory, as the README asks of replicas, and each has its own
//! data directory. Every process is killed when its `Replica` is dropped.
//!
//! The wake-up tests run the replicas with `--recheck-ms 600000`, so the safety-net
//! re-read cannot be what answers within the tests' deadlines: only the cross-replica
//! notification can.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hoist_client::{Client, ClientError, RunQuery, Secret};
use hoist_core::api::{
    AgentSession, ClaimRequest, ClaimResponse, CreateQueue, ErrorCode, LaunchRequest, LogBatch,
    LogLine, LogStream, RegisterAgent, Run, RunUpdate,
};
use hoist_core::run::RunState;
use hoist_testkit::pg::PgDb;
use hoist_testkit::wait_until_async;

/// How long a replica may take to start, and a condition that needs no more than a
/// wake-up may take to hold, on a loaded 2-core machine.
const START: Duration = Duration::from_secs(60);
const SOON: Duration = Duration::from_secs(10);
/// The safety-net re-read of the wake-up tests: longer than any of their deadlines.
const NO_RECHECK_MS: &str = "600000";

// --- replicas -------------------------------------------------------------------------

/// One `hoist server` process, killed (SIGKILL) and reaped on drop.
struct Replica {
    child: Option<Child>,
    name: String,
    url: String,
    log: PathBuf,
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Replica {
    fn client(&self, key: &str) -> Client {
        Client::new(&self.url, Some(Secret::new(key.to_string()))).unwrap()
    }

    /// `kill -9`, and reaped.
    fn kill_9(&mut self) {
        let mut c = self.child.take().expect("running");
        c.kill().unwrap(); // SIGKILL
        c.wait().unwrap();
    }

    /// The end of the process's stderr, for failure messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Waits until `/readyz` answers 200 (on PostgreSQL only once the replica's
    /// LISTEN connection is up); panics with the process's stderr if it exits first.
    async fn ready(&mut self) {
        let http = reqwest::Client::new();
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "replica {} exited at start ({st}):\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if let Ok(r) = http.get(format!("{}/readyz", self.url)).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                t0.elapsed() < START,
                "replica {} not ready after {START:?}:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A gauge or counter of `/metrics` (no labels), 0 when absent.
    async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .filter_map(|v| v.trim().parse::<f64>().ok())
            .sum()
    }

    /// Waits until `name` on `/metrics` reads `want`.
    async fn wait_metric(&self, name: &str, want: f64) {
        let what = format!("{name} = {want} on replica {}", self.name);
        wait_until_async(&what, SOON, || async { self.metric(name).await == want }).await;
    }
}

/// Replicas of one database: a fresh database, a shared blob directory, a data
/// directory per replica.
struct Cluster {
    pg: Option<PgDb>,
    dir: tempfile::TempDir,
}

#[derive(Default, Clone)]
struct Opts {
    /// `--recheck-ms` (the safety-net re-read of parked claims and followers).
    recheck_ms: Option<&'static str>,
    /// `--admin-key-file`.
    admin_key_file: Option<PathBuf>,
    /// More arguments (`--lease-secs 2`…).
    args: Vec<String>,
    /// Listen on this port (a replacement of a killed replica), else a free one.
    port: Option<u16>,
}

impl Cluster {
    async fn new() -> Option<Cluster> {
        let pg = PgDb::create().await?;
        Some(Cluster {
            pg: Some(pg),
            dir: tempfile::tempdir().unwrap(),
        })
    }

    fn url(&self) -> &str {
        &self.pg.as_ref().unwrap().url
    }

    fn blob_dir(&self) -> PathBuf {
        self.dir.path().join("blobs")
    }

    fn data_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("data-{name}"))
    }

    /// Spawns replica `name` (not yet ready: see [`Replica::ready`]). The database URL
    /// goes in the environment, never in argv.
    fn spawn(&self, name: &str, opts: &Opts) -> Replica {
        let port = opts.port.unwrap_or_else(free_port);
        let log = self.dir.path().join(format!("{name}-{port}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hoist"));
        cmd.args(["server", "--bind", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(self.data_dir(name))
            .arg("--blob-dir")
            .arg(self.blob_dir());
        if let Some(ms) = opts.recheck_ms {
            cmd.args(["--recheck-ms", ms]);
        }
        if let Some(f) = &opts.admin_key_file {
            cmd.arg("--admin-key-file").arg(f);
        }
        cmd.args(&opts.args)
            .env("HOIST_DATABASE_URL", self.url())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        Replica {
            child: Some(cmd.spawn().unwrap()),
            name: name.to_string(),
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// Starts replica `name` and waits until it is ready.
    async fn start(&self, name: &str, opts: &Opts) -> Replica {
        let mut r = self.spawn(name, opts);
        r.ready().await;
        r
    }

    /// Starts the first replica of the database, which writes the admin key
    /// (to `--admin-key-file` when `opts` has one, else `<data-dir>/admin.key`);
    /// returns it with the key.
    async fn first(&self, name: &str, opts: &Opts) -> (Replica, String) {
        let r = self.start(name, opts).await;
        let path = opts
            .admin_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir(name).join("admin.key"));
        let key = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("the admin key at {}: {e}", path.display()));
        (r, key.trim().to_string())
    }

    /// Drops the database (after the replicas: drop them first).
    async fn drop_db(mut self) {
        if let Some(pg) = self.pg.take() {
            pg.drop_db().await;
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// --- API helpers ----------------------------------------------------------------------

async fn local_queue(c: &Client, name: &str) {
    c.create_queue(&CreateQueue {
        name: name.into(),
        entity: None,
        resource: "local-process".into(),
        config: None,
        template_variables: vec![],
        prioritize: false,
        description: None,
    })
    .await
    .unwrap();
}

fn launch_req(queue: &str, name: String) -> LaunchRequest {
    LaunchRequest {
        queue: queue.into(),
        name: Some(name),
        entry_point: Some(vec!["true".into()]),
        ..Default::default()
    }
}

async fn register(c: &Client, name: &str, queues: &[&str]) -> AgentSession {
    c.register_agent(&RegisterAgent {
        name: name.into(),
        host: "test-host".into(),
        version: hoist_core::VERSION.into(),
        queues: queues.iter().map(|s| s.to_string()).collect(),
        entity: None,
        max_jobs: -1,
    })
    .await
    .unwrap()
}

async fn claim(
    c: &Client,
    s: &AgentSession,
    max: u32,
    wait: Duration,
) -> Result<ClaimResponse, ClientError> {
    c.claim(
        &s.agent.id,
        &ClaimRequest {
            session: s.session.clone(),
            max,
            wait_ms: wait.as_millis() as u64,
        },
    )
    .await
}

fn update(s: &AgentSession, state: RunState) -> RunUpdate {
    RunUpdate {
        session: s.session.clone(),
        state,
        reason: String::new(),
        exit_code: (state == RunState::Finished).then_some(0),
        failure: None,
        built: None,
    }
}

/// Every run of the database, newest first, through `c`.
async fn all_runs(c: &Client) -> Vec<Run> {
    let mut out = Vec::new();
    let mut before = None;
    loop {
        let page = c
            .list_runs(&RunQuery {
                limit: Some(1000),
                before: before.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        out.extend(page.runs);
        match page.next_cursor {
            Some(cur) => before = Some(cur),
            None => return out,
        }
    }
}

/// A server error (5xx) is never an acceptable answer in these tests.
fn assert_not_5xx(e: &ClientError, what: &str) {
    if let Some(st) = e.status() {
        assert!(st < 500, "{what}: the server answered {st}: {e}");
    }
}

fn is_connection_error(e: &ClientError) -> bool {
    matches!(e, ClientError::Transport { .. })
}

// --- 1. cross-replica claim wake-up ---------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_on_one_replica_wakes_a_claim_parked_on_another() {
    let Some(cl) = Cluster::new().await else {
        return;
    };
    let opts = Opts {
        recheck_ms: Some(NO_RECHECK_MS),
        ..Default::default()
    };
    let (a, key) = cl.first("a", &opts).await;
    let b = cl.start("b", &opts).await;
    let (ca, cb) = (a.client(&key), b.client(&key));
    local_queue(&ca, "q").await;
    let agent = register(&cb, "agent-b", &["q"]).await;

    let received_before = b.metric("hoist_cluster_notifications_received_total").await;
    let parked = {
        let (cb, agent) = (cb.clone(), agent.clone());
        tokio::spawn(async move {
            let got = claim(&cb, &agent, 1, Duration::from_secs(30)).await;
            (got, Instant::now())
        })
    };
    // Parked on B: only a wake-up (or its 30 s deadline) answers it now.
    b.wait_metric("hoist_claim_waiters", 1.0).await;
    let t0 = Instant::now();
    let run = ca.launch(&launch_req("q", "woken".into())).await.unwrap();
    let (got, answered) = parked.await.unwrap();
    let got = got.unwrap();
    let ids: Vec<&str> = got.runs.iter().map(|r| r.run.id.as_str()).collect();
    assert_eq!(
        ids,
        [run.id.as_str()],
        "the claim on B got the run launched on A"
    );
    eprintln!(
        "cross-replica wake latency (launch sent on A → claim answered on B): {:?}",
        answered - t0
    );
    assert!(
        b.metric("hoist_cluster_notifications_received_total").await > received_before,
        "B counted the notification that woke it"
    );
    drop((a, b));
    cl.drop_db().await;
}

// --- 2. log follow across replicas ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_on_one_replica_sees_lines_appended_on_another_until_the_run_ends() {
    let Some(cl) = Cluster::new().await else {
        return;
    };
    let opts = Opts {
        recheck_ms: Some(NO_RECHECK_MS),
        ..Default::default()
    };
    let (a, key) = cl.first("a", &opts).await;
    let b = cl.start("b", &opts).await;
    let (ca, cb) = (a.client(&key), b.client(&key));
    local_queue(&ca, "q").await;
    let agent = register(&ca, "agent-a", &["q"]).await;
    let run = ca.launch(&launch_req("q", "logged".into())).await.unwrap();
    let got = claim(&ca, &agent, 1, SOON).await.unwrap();
    assert_eq!(got.runs.len(), 1);
    let token = got.runs[0].token.clone();
    for st in [RunState::Starting, RunState::Running] {
        ca.update_run(&run.id, &update(&agent, st)).await.unwrap();
    }

    let seen = Arc::new(Mutex::new(Vec::<(u64, String)>::new()));
    let follower = {
        let (cb, id, seen) = (cb.clone(), run.id.clone(), seen.clone());
        tokio::spawn(async move {
            let stream = cb.follow_logs(&id, 0).await.unwrap();
            futures::pin_mut!(stream);
            while let Some(line) = stream.next().await {
                let line = line.unwrap();
                seen.lock().unwrap().push((line.offset, line.text));
            }
        })
    };
    // The job appends with its run token on A, three batches; each after the follower
    // on B has read everything and parked again, so each batch needs a wake-up.
    let job = ca.with_key(token);
    let mut sent = Vec::new();
    for batch in 0..3 {
        b.wait_metric("hoist_log_followers", 1.0).await;
        let lines: Vec<LogLine> = (0..5)
            .map(|i| LogLine {
                ts: chrono::Utc::now(),
                stream: LogStream::Stdout,
                text: format!("batch {batch} line {i}"),
            })
            .collect();
        sent.extend(lines.iter().map(|l| l.text.clone()));
        job.append_logs(
            &run.id,
            &LogBatch {
                session: None,
                lines,
                warnings: vec![],
            },
        )
        .await
        .unwrap();
        let want = sent.len();
        wait_until_async("the batch on the follower on B", SOON, || async {
            seen.lock().unwrap().len() >= want
        })
        .await;
    }
    // The run ends on A: the follow on B ends (it was parked, so by a wake-up).
    b.wait_metric("hoist_log_followers", 1.0).await;
    ca.update_run(&run.id, &update(&agent, RunState::Finished))
        .await
        .unwrap();
    tokio::time::timeout(SOON, follower)
        .await
        .expect("the follow on B ends when the run ends on A")
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    let offsets: Vec<u64> = seen.iter().map(|(o, _)| *o).collect();
    let texts: Vec<String> = seen.into_iter().map(|(_, t)| t).collect();
    assert_eq!(texts, sent, "every line, in order, once");
    assert_eq!(offsets, (0..sent.len() as u64).collect::<Vec<_>>());
    drop((a, b));
    cl.drop_db().await;
}

// --- 3. concurrent bootstrap ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_at_once_on_a_fresh_database_write_one_admin_key() {
    let Some(cl) = Cluster::new().await else {
        return;
    };
    let names = ["a", "b", "c", "d"];
    let key_file = |n: &str| cl.dir.path().join(format!("keys-{n}")).join("admin.key");
    for n in names {
        std::fs::create_dir_all(key_file(n).parent().unwrap()).unwrap();
    }
    // Spawned together, then waited for: they race for the bootstrap.
    let mut replicas: Vec<Replica> = names
        .iter()
        .map(|n| {
            cl.spawn(
                n,
                &Opts {
                    admin_key_file: Some(key_file(n)),
                    ..Default::default()
                },
            )
        })
        .collect();
    for r in replicas.iter_mut() {
        r.ready().await; // panics if the replica exited
    }
    let written: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| key_file(n).exists())
        .collect();
    assert_eq!(
        written.len(),
        1,
        "exactly one key file is written: {written:?}"
    );
    for n in names {
        assert!(
            !cl.data_dir(n).join("admin.key").exists(),
            "replica {n} wrote nothing at the default path"
        );
    }
    let key = std::fs::read_to_string(key_file(written[0])).unwrap();
    for r in &replicas {
        let users = r.client(key.trim()).list_users().await.unwrap();
        assert_eq!(users.len(), 1, "one admin, seen from replica {}", r.name);
    }
    for r in replicas.iter_mut() {
        assert!(
            r.child.as_mut().unwrap().try_wait().unwrap().is_none(),
            "replica {} still runs",
            r.name
        );
    }
    drop(replicas);
    cl.drop_db().await;
}

// --- 4. delete-queue racing a claim ---------------------------------------------------

/// One claim of the racing agent: when it was sent, and what came back.
struct ClaimSeen {
    sent: Instant,
    runs: Vec<String>,
    error: Option<(Option<u16>, Option<ErrorCode>, String)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_queue_on_one_replica_races_claims_on_another_cleanly() {
    let Some(cl) = Cluster::new().await else {
        return;
    };
    let opts = Opts::default();
    let (a, key) = cl.first("a", &opts).await;
    let b = cl.start("b", &opts).await;
    let (ca, cb) = (a.client(&key), b.client(&key));
    // Rounds, each on a queue of its own: each is one race of a claim against the
    // delete, won by either.
    for round in 0..4 {
        delete_race_round(&ca, &cb, &format!("doomed-{round}")).await;
    }
    let runs = all_runs(&cb).await;
    let ids: HashSet<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), runs.len(), "no run listed twice");
    drop((a, b));
    cl.drop_db().await;
}

/// Launches onto `queue` through `ca` while an agent claims from it through `cb`, and
/// deletes it through `ca` with runs still queued; checks what the agent was handed
/// and what the store holds afterwards.
async fn delete_race_round(ca: &Client, cb: &Client, queue: &str) {
    local_queue(ca, queue).await;
    let agent = register(cb, &format!("agent-{queue}"), &[queue]).await;
    let mut acked: Vec<String> = Vec::new();
    for i in 0..40 {
        acked.push(
            ca.launch(&launch_req(queue, format!("pre-{i}")))
                .await
                .unwrap()
                .id,
        );
    }

    let deleted = Arc::new(AtomicBool::new(false));
    let deleted_wake = Arc::new(tokio::sync::Notify::new());
    // A delete meeting a run the agent holds is refused (409), so an agent that always
    // holds one would starve it. After its first claim, the agent completes what it
    // got and meets the deleter here, and each sends its request at once: every delete
    // attempt races one claim, and either may win.
    let together = Arc::new(tokio::sync::Barrier::new(2));
    let claims = Arc::new(Mutex::new(Vec::<ClaimSeen>::new()));
    let agent_task = {
        let (cb, agent, claims, deleted, deleted_wake, together) = (
            cb.clone(),
            agent.clone(),
            claims.clone(),
            deleted.clone(),
            deleted_wake.clone(),
            together.clone(),
        );
        tokio::spawn(async move {
            let mut after_delete = 0;
            let mut first = true;
            while after_delete < 3 {
                let woken = deleted_wake.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                let was_deleted = deleted.load(Ordering::SeqCst);
                if !was_deleted && !first {
                    tokio::select! {
                        _ = together.wait() => {}
                        _ = woken => {}
                    }
                }
                first = false;
                let sent = Instant::now();
                let got = claim(&cb, &agent, 2, Duration::from_millis(200)).await;
                let mut seen = ClaimSeen {
                    sent,
                    runs: vec![],
                    error: None,
                };
                match got {
                    Ok(got) => {
                        for r in got.runs {
                            seen.runs.push(r.run.id.clone());
                            for st in [RunState::Starting, RunState::Running, RunState::Finished] {
                                cb.update_run(&r.run.id, &update(&agent, st)).await.unwrap();
                            }
                        }
                    }
                    Err(e) => {
                        assert_not_5xx(&e, "a claim racing the delete");
                        seen.error = Some((e.status(), e.code(), e.to_string()));
                    }
                }
                claims.lock().unwrap().push(seen);
                if was_deleted {
                    after_delete += 1;
                }
            }
        })
    };
    // Launches on A racing the delete, until the queue is gone.
    let launcher = {
        let (ca, queue) = (ca.clone(), queue.to_string());
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0.. {
                match ca.launch(&launch_req(&queue, format!("racing-{i}"))).await {
                    Ok(r) => ids.push(r.id),
                    Err(e) => {
                        assert_not_5xx(&e, "a launch racing the delete");
                        assert_eq!(e.status(), Some(404), "a launch on a deleted queue: {e}");
                        break;
                    }
                }
            }
            ids
        })
    };
    // Delete once the agent is busy; a delete that meets a run held by the agent is
    // refused (409) and tried again.
    wait_until_async("the agent on B claims", SOON, || async {
        claims.lock().unwrap().iter().any(|c| !c.runs.is_empty())
    })
    .await;
    let mut refusals = 0;
    let t0 = Instant::now();
    let deleted_at = loop {
        together.wait().await;
        match ca.delete_queue("admin", queue, true).await {
            Ok(()) => break Instant::now(),
            Err(e) => {
                assert_not_5xx(&e, "the delete");
                assert_eq!(
                    e.status(),
                    Some(409),
                    "only a held run refuses the delete: {e}"
                );
                refusals += 1;
                assert!(
                    t0.elapsed() < Duration::from_secs(30),
                    "the delete never went through"
                );
            }
        }
    };
    deleted.store(true, Ordering::SeqCst);
    deleted_wake.notify_waiters();
    acked.extend(launcher.await.unwrap());
    tokio::time::timeout(Duration::from_secs(30), agent_task)
        .await
        .expect("the agent's claims end")
        .unwrap();

    let claims = std::mem::take(&mut *claims.lock().unwrap());
    let handed: Vec<String> = claims.iter().flat_map(|c| c.runs.clone()).collect();
    let after: Vec<&ClaimSeen> = claims.iter().filter(|c| c.sent > deleted_at).collect();
    eprintln!(
        "{queue}: {} runs launched, {} handed out over {} claims, {} delete refusals; after the delete: {:?}",
        acked.len(),
        handed.len(),
        claims.len(),
        refusals,
        after
            .iter()
            .map(|c| c
                .error
                .clone()
                .map_or("ok, no runs".into(), |e| format!("{e:?}")))
            .collect::<Vec<_>>()
    );
    assert!(!after.is_empty());
    for c in &after {
        assert!(
            c.runs.is_empty(),
            "a claim sent after the delete got runs: {:?}",
            c.runs
        );
        // A clear answer: nothing to do, or the agent is told its queue is gone.
        if let Some((status, _, msg)) = &c.error {
            assert!(
                matches!(status, Some(403 | 404 | 409 | 410)),
                "unclear answer to a claim after the delete: {status:?} {msg}"
            );
        }
    }
    let handed_set: HashSet<&String> = handed.iter().collect();
    assert_eq!(handed_set.len(), handed.len(), "no run handed out twice");

    // The store afterwards: every acknowledged launch once, each either completed by
    // the agent (the runs it was handed) or cancelled with the queue.
    let runs: Vec<Run> = all_runs(cb)
        .await
        .into_iter()
        .filter(|r| r.queue == queue)
        .collect();
    let by_id: HashMap<&str, &Run> = runs.iter().map(|r| (r.id.as_str(), r)).collect();
    assert_eq!(runs.len(), acked.len(), "every launch stored once");
    for id in &acked {
        let r = by_id
            .get(id.as_str())
            .unwrap_or_else(|| panic!("run {id} is gone"));
        if handed_set.contains(id) {
            assert_eq!(r.state, RunState::Finished, "run {id}");
        } else {
            assert_eq!(r.state, RunState::Cancelled, "run {id}: {}", r.state_reason);
        }
    }
}

// --- 5. kill -9 of a replica during a launch burst ------------------------------------

/// What the launching clients saw.
#[derive(Default)]
struct Launches {
    /// Acknowledged: run id by launch name.
    acked: BTreeMap<String, String>,
    /// Sent, answer lost with the connection: may or may not exist.
    unknown: Vec<String>,
}

/// Sends `req` to `primary`, and on a connection error to `fallback` from then on
/// (`on_fallback` says which one a task uses).
fn pick<'a>(on_fallback: &AtomicBool, primary: &'a Client, fallback: &'a Client) -> &'a Client {
    if on_fallback.load(Ordering::SeqCst) {
        fallback
    } else {
        primary
    }
}

/// Reports `state` for a claimed run, failing over on a connection error. A report
/// whose answer was lost is sent again to the fallback; if that one is refused (the
/// first had gone through), the run is read to see which. Returns false when the run
/// is no longer this agent's (its lease lapsed and it went back to its queue).
async fn report(
    on_fallback: &AtomicBool,
    primary: &Client,
    fallback: &Client,
    agent: &AgentSession,
    run: &str,
    state: RunState,
) -> bool {
    let mut retried = false;
    loop {
        let c = pick(on_fallback, primary, fallback);
        let via_fallback = c.base_url() == fallback.base_url();
        match c.update_run(run, &update(agent, state)).await {
            Ok(_) => return true,
            Err(e) if is_connection_error(&e) && !via_fallback => {
                on_fallback.store(true, Ordering::SeqCst);
                retried = true;
            }
            Err(e) if is_connection_error(&e) => panic!("the fallback replica is unreachable: {e}"),
            Err(e) => {
                assert_not_5xx(&e, "a run report");
                let now = fallback.get_run(run).await.unwrap();
                let mine =
                    now.agent.as_ref().map(|a| a.id.as_str()) == Some(agent.agent.id.as_str());
                // A report sent again after a lost answer is refused when the first
                // had gone through.
                return retried && mine && now.state == state;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_one_replica_during_a_launch_burst_loses_and_duplicates_nothing() {
    let Some(cl) = Cluster::new().await else {
        return;
    };
    const TOTAL: usize = 600;
    const KILL_AT: usize = 200;
    let opts = Opts {
        args: [
            "--lease-secs",
            "2",
            "--max-requeues",
            "1000",
            "--agent-lost-after-secs",
            "300",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    };
    // B starts first: it is the likelier holder of the reaper's lease, which A must
    // then take over for B's lapsed claims to go back to the queue.
    let (mut b, key) = cl.first("b", &opts).await;
    let a = cl.start("a", &opts).await;
    let (ca, cb) = (a.client(&key), b.client(&key));
    local_queue(&ca, "q").await;

    let launches = Arc::new(Mutex::new(Launches::default()));
    let next = Arc::new(AtomicUsize::new(0));
    let mut clients = vec![];
    for i in 0..16 {
        let (primary, fallback) = if i % 2 == 0 {
            (ca.clone(), ca.clone())
        } else {
            (cb.clone(), ca.clone())
        };
        let (launches, next) = (launches.clone(), next.clone());
        clients.push(tokio::spawn(async move {
            let on_fallback = AtomicBool::new(false);
            while next.load(Ordering::SeqCst) < TOTAL {
                let name = format!("c{i}-{}", next.fetch_add(1, Ordering::SeqCst));
                let c = pick(&on_fallback, &primary, &fallback);
                match c.launch(&launch_req("q", name.clone())).await {
                    Ok(run) => {
                        launches.lock().unwrap().acked.insert(name, run.id);
                    }
                    Err(e) if is_connection_error(&e) && c.base_url() != fallback.base_url() => {
                        // A launch is not idempotent (no key): its fate is checked
                        // by name at the end, and it is not sent again.
                        launches.lock().unwrap().unknown.push(name);
                        on_fallback.store(true, Ordering::SeqCst);
                    }
                    Err(e) => panic!("launch {name} failed: {e}"),
                }
            }
        }));
    }

    // Agents: two registered on each replica; B's fail over to A.
    let stop = Arc::new(AtomicBool::new(false));
    let finished_by = Arc::new(Mutex::new(HashMap::<String, Vec<String>>::new()));
    let mut agents = vec![];
    for i in 0..4 {
        let (primary, fallback) = if i % 2 == 0 {
            (ca.clone(), ca.clone())
        } else {
            (cb.clone(), ca.clone())
        };
        let session = register(&primary, &format!("agent-{i}"), &["q"]).await;
        let (stop, finished_by) = (stop.clone(), finished_by.clone());
        agents.push(tokio::spawn(async move {
            let on_fallback = AtomicBool::new(false);
            while !stop.load(Ordering::SeqCst) {
                let c = pick(&on_fallback, &primary, &fallback);
                let got = match claim(c, &session, 4, Duration::from_millis(500)).await {
                    Ok(got) => got,
                    Err(e) if is_connection_error(&e) && c.base_url() != fallback.base_url() => {
                        // Runs claimed by a lost answer come back when their lease lapses.
                        on_fallback.store(true, Ordering::SeqCst);
                        continue;
                    }
                    Err(e) => panic!("agent-{i}'s claim failed: {e}"),
                };
                'runs: for r in got.runs {
                    for st in [RunState::Starting, RunState::Running, RunState::Finished] {
                        if !report(&on_fallback, &primary, &fallback, &session, &r.run.id, st).await
                        {
                            continue 'runs;
                        }
                    }
                    finished_by
                        .lock()
                        .unwrap()
                        .entry(r.run.id.clone())
                        .or_default()
                        .push(format!("agent-{i}"));
                }
            }
        }));
    }

    wait_until_async(
        "the burst reaches the kill",
        Duration::from_secs(60),
        || async { launches.lock().unwrap().acked.len() >= KILL_AT },
    )
    .await;
    // Claims whose answers are lost with B: an agent on B claims and never reports
    // (its process went with B, say); only the lease lapsing brings these runs back.
    let victim = register(&cb, "agent-victim", &["q"]).await;
    let lost: Vec<String> = claim(&cb, &victim, 4, SOON)
        .await
        .unwrap()
        .runs
        .into_iter()
        .map(|r| r.run.id)
        .collect();
    assert!(!lost.is_empty(), "the victim claimed runs");
    eprintln!(
        "reaper leader before the kill: A {}, B {}",
        a.metric("hoist_reaper_leader").await,
        b.metric("hoist_reaper_leader").await
    );
    b.kill_9();
    for c in clients {
        c.await.unwrap();
    }
    let (acked, unknown) = {
        let l = launches.lock().unwrap();
        (l.acked.clone(), l.unknown.clone())
    };
    eprintln!(
        "{} launches acknowledged, {} lost with B (unknown)",
        acked.len(),
        unknown.len()
    );

    // Every stored run ends `finished` (lapsed claims are requeued and claimed again).
    wait_until_async("every run finished", Duration::from_secs(90), || async {
        let runs = all_runs(&ca).await;
        runs.iter().all(|r| r.state == RunState::Finished) && runs.len() >= acked.len()
    })
    .await;
    wait_until_async(
        "A holds the reaper's lease",
        Duration::from_secs(30),
        || async { a.metric("hoist_reaper_leader").await == 1.0 },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for ag in agents {
        ag.await.unwrap();
    }

    let runs = all_runs(&ca).await;
    let mut by_name: HashMap<&str, Vec<&Run>> = HashMap::new();
    for r in &runs {
        by_name.entry(r.name.as_str()).or_default().push(r);
    }
    let ids: HashSet<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), runs.len(), "no run stored twice");
    for (name, id) in &acked {
        let stored = by_name
            .get(name.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        assert_eq!(stored.len(), 1, "acknowledged launch {name} stored once");
        assert_eq!(&stored[0].id, id, "launch {name}");
    }
    let mut unknown_stored = 0;
    for name in &unknown {
        let n = by_name.get(name.as_str()).map_or(0, Vec::len);
        assert!(
            n <= 1,
            "a launch whose answer was lost is stored at most once: {name}"
        );
        unknown_stored += n;
    }
    assert_eq!(
        runs.len(),
        acked.len() + unknown_stored,
        "only the launches sent are stored"
    );
    eprintln!(
        "{unknown_stored} of {} unknown launches were stored",
        unknown.len()
    );
    eprintln!(
        "{} runs were handed out more than once (lapsed claims requeued)",
        runs.iter().filter(|r| r.attempts > 1).count()
    );
    for id in &lost {
        let r = ca.get_run(id).await.unwrap();
        assert!(
            r.attempts >= 2,
            "run {id}, claimed by the victim, was handed out again"
        );
        assert_ne!(
            r.agent.map(|a| a.name).as_deref(),
            Some("agent-victim"),
            "run {id} was completed by another agent"
        );
    }
    let finished_by = finished_by.lock().unwrap().clone();
    for r in &runs {
        assert_eq!(r.state, RunState::Finished, "run {} is not stuck", r.id);
        let by = finished_by.get(&r.id).cloned().unwrap_or_default();
        assert_eq!(by.len(), 1, "run {} completed exactly once: {by:?}", r.id);
        let timeline = ca
            .get_run(&r.id)
            .await
            .unwrap()
            .timeline
            .unwrap_or_default();
        let ends = timeline
            .iter()
            .filter(|t| t.to == RunState::Finished)
            .count();
        assert_eq!(ends, 1, "run {} reached finished once", r.id);
    }

    // A replacement B serves: launch on it, claim on it, complete on it.
    let b2 = cl.start("b2", &opts).await;
    let cb2 = b2.client(&key);
    let run = cb2.launch(&launch_req("q", "after".into())).await.unwrap();
    let agent = register(&cb2, "agent-b2", &["q"]).await;
    let got = claim(&cb2, &agent, 1, SOON).await.unwrap();
    assert_eq!(got.runs.len(), 1);
    assert_eq!(got.runs[0].run.id, run.id);
    for st in [RunState::Starting, RunState::Running, RunState::Finished] {
        cb2.update_run(&run.id, &update(&agent, st)).await.unwrap();
    }
    assert_eq!(ca.get_run(&run.id).await.unwrap().state, RunState::Finished);
    drop((a, b, b2));
    cl.drop_db().await;
}
