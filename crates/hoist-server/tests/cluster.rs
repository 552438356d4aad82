//! Two replicas on one PostgreSQL database, in one process: wake-ups, cache
//! invalidation and the reaper's lease go between them by the database
//! (`LISTEN`/`NOTIFY`, advisory locks), with every periodic re-read (the safety net)
//! set far beyond each test's deadlines, so that only a signal can pass them.
//! (crates/hoist/tests/replicas.rs runs replicas as separate processes.)

mod common;

use std::time::Duration;

use common::db::PgDb;
use common::*;
use hoist_core::api::*;
use hoist_core::run::RunState;
use hoist_server::dispatch::Waiter;
use hoist_server::reaper::Lease;

/// The safety net: longer than any deadline here.
const NO_RECHECK: Duration = Duration::from_secs(600);
/// How long a signal may take in these tests (it takes milliseconds).
const DEADLINE: Duration = Duration::from_secs(15);

/// Replica A (it creates the admin) and replica B on a fresh database, sharing one
/// blob directory.
async fn two_replicas() -> Option<(PgDb, TestServer, TestServer)> {
    let pg = PgDb::create().await?;
    let url = pg.url.clone();
    let a = TestServer::start_with(|c| {
        c.database_url = Some(url);
        c.recheck = Some(NO_RECHECK);
        c.blob_dir = Some(c.data_dir.join("shared-blobs"));
    })
    .await;
    let blobs = a.state().cfg.blob_dir();
    let b = a
        .join(|c| {
            c.recheck = Some(NO_RECHECK);
            c.blob_dir = Some(blobs);
        })
        .await;
    Some((pg, a, b))
}

async fn stop_all(pg: PgDb, a: TestServer, b: TestServer) {
    b.stop().await;
    a.stop().await;
    pg.drop_db().await;
}

/// Polls `f` until it is true, for up to [`DEADLINE`].
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + DEADLINE;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < until,
            "{what}: not within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_launch_on_one_replica_wakes_a_claim_waiting_on_the_other() {
    let Some((pg, a, b)) = two_replicas().await else {
        return;
    };
    local_queue(&a.admin(), "q").await;
    let agent = register(&b.admin(), "agent-b", &["q"], -1).await;
    for round in 0..3 {
        let (cb, s) = (b.admin(), agent.clone());
        let waiting = tokio::spawn(async move { claim(&cb, &s, 1, Duration::from_secs(60)).await });
        b.wait_parked(Waiter::Claim, 1).await;
        let t0 = std::time::Instant::now();
        let run = a.admin().launch(&launch_cmd("q", &["true"])).await.unwrap();
        let got = tokio::time::timeout(DEADLINE, waiting)
            .await
            .expect("the claim on B was not woken by the launch on A")
            .unwrap();
        eprintln!(
            "round {round}: launch on A → claim on B answered in {:?}",
            t0.elapsed()
        );
        assert_eq!(got.runs.len(), 1);
        assert_eq!(got.runs[0].run.id, run.id);
    }
    stop_all(pg, a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_log_lines_on_one_replica_reach_a_follower_on_the_other() {
    use futures::StreamExt;
    let Some((pg, a, b)) = two_replicas().await else {
        return;
    };
    let admin_a = a.admin();
    local_queue(&admin_a, "q").await;
    let run = admin_a.launch(&launch_cmd("q", &["true"])).await.unwrap();
    let agent = register(&admin_a, "agent-a", &["q"], -1).await;
    assert_eq!(
        claim(&admin_a, &agent, 1, Duration::from_secs(5))
            .await
            .runs
            .len(),
        1
    );
    report(&admin_a, &agent, &run.id, RunState::Starting)
        .await
        .unwrap();
    // The follower on B waits for lines, and the end, that only A is told about.
    let mut follow = Box::pin(b.admin().follow_logs(&run.id, 0).await.unwrap());
    for round in 0..3 {
        b.wait_parked(Waiter::LogFollower, 1).await;
        let text = format!("line {round} from A");
        admin_a
            .append_logs(
                &run.id,
                &LogBatch {
                    warnings: Vec::new(),
                    session: None,
                    lines: vec![LogLine {
                        ts: chrono::Utc::now(),
                        stream: LogStream::Stdout,
                        text: text.clone(),
                    }],
                },
            )
            .await
            .unwrap();
        let got = tokio::time::timeout(DEADLINE, follow.next())
            .await
            .expect("the follower on B did not see A's line")
            .expect("the stream went on")
            .unwrap();
        assert_eq!(got.text, text);
        assert_eq!(got.offset, round);
    }
    b.wait_parked(Waiter::LogFollower, 1).await;
    report(&admin_a, &agent, &run.id, RunState::Running)
        .await
        .unwrap();
    report(&admin_a, &agent, &run.id, RunState::Finished)
        .await
        .unwrap();
    let end = tokio::time::timeout(DEADLINE, follow.next())
        .await
        .expect("the follow on B did not end with the run ended on A");
    assert!(end.is_none(), "no more lines: {end:?}");
    stop_all(pg, a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_revoked_on_one_replica_is_refused_by_the_other() {
    let Some((pg, a, b)) = two_replicas().await else {
        return;
    };
    let created = a
        .admin()
        .create_user(&CreateUser {
            name: "bob".into(),
            admin: false,
        })
        .await
        .unwrap();
    let bob_b = b.client(created.api_key.secret.expose());
    // B has the key cached now (the cache keeps it for a minute).
    bob_b.me().await.unwrap();
    bob_b.me().await.unwrap();
    a.admin().revoke_key(&created.api_key.key.id).await.unwrap();
    eventually("B refuses the revoked key", || {
        let c = bob_b.clone();
        async move { c.me().await.is_err() }
    })
    .await;
    stop_all(pg, a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queue_changed_on_one_replica_is_used_by_the_other() {
    let Some((pg, a, b)) = two_replicas().await else {
        return;
    };
    let q = local_queue(&a.admin(), "q").await;
    let with_n = || {
        let mut l = launch_cmd("q", &["true"]);
        l.template_values.insert("n".into(), serde_json::json!(3));
        l
    };
    // B caches the queue with a launch; `n` is no variable of it yet.
    let b_admin = b.admin();
    b_admin.launch(&launch_cmd("q", &["true"])).await.unwrap();
    assert!(b_admin.launch(&with_n()).await.is_err());
    a.admin()
        .update_queue(
            &q.entity,
            "q",
            &UpdateQueue {
                config: None,
                template_variables: Some(vec![hoist_core::template::TemplateVariable {
                    name: "n".into(),
                    kind: hoist_core::template::VarType::Int,
                    default: None,
                    min: Some(1.0),
                    max: Some(8.0),
                    choices: None,
                    description: None,
                }]),
                prioritize: None,
                description: None,
            },
        )
        .await
        .unwrap();
    eventually("B launches with the variable A added", || {
        let c = b_admin.clone();
        let l = with_n();
        async move { c.launch(&l).await.is_ok() }
    })
    .await;
    stop_all(pg, a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_replica_holds_the_reaper_lease_and_another_takes_it_over() {
    let Some(pg) = PgDb::create().await else {
        return;
    };
    let store = hoist_server::store::Store::open(&pg.url).await.unwrap();
    let pool = sqlx::postgres::PgPool::connect(&pg.url).await.unwrap();
    let mut one = Lease::new(&store);
    let mut two = Lease::new(&store);
    assert!(one.held().await);
    assert!(!two.held().await);
    assert!(one.held().await, "the holder keeps its lease");
    assert!(!two.held().await);
    // The holder's connection dies (its process killed): the other takes over.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1 AND granted",
    )
    .bind(hoist_server::reaper::REAPER_LOCK as i32)
    .execute(&pool)
    .await
    .unwrap();
    let until = tokio::time::Instant::now() + DEADLINE;
    while !two.held().await {
        assert!(
            tokio::time::Instant::now() < until,
            "the other replica did not take the lease"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!one.held().await, "the old holder knows it lost the lease");
    two.release().await;
    let until = tokio::time::Instant::now() + DEADLINE;
    while !one.held().await {
        assert!(
            tokio::time::Instant::now() < until,
            "a released lease was not taken"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    one.release().await;
    pool.close().await;
    store.close().await;
    pg.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_whose_listener_was_cut_catches_up_and_hears_again() {
    let Some((pg, a, b)) = two_replicas().await else {
        return;
    };
    local_queue(&a.admin(), "q").await;
    let agent = register(&b.admin(), "agent-b", &["q"], -1).await;
    let cluster = b.state().cluster.clone();
    let before = cluster.generation();
    // A claim parked on B while its listener is cut (and what A sends meanwhile is
    // lost): B must still answer once it listens again.
    let (cb, s) = (b.admin(), agent.clone());
    let waiting = tokio::spawn(async move { claim(&cb, &s, 1, Duration::from_secs(60)).await });
    b.wait_parked(Waiter::Claim, 1).await;
    let mut raw = sqlx::postgres::PgConnection::connect(&pg.url)
        .await
        .unwrap();
    use sqlx::Connection;
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_all(&mut raw)
    .await
    .unwrap();
    assert!(
        cut.len() >= 2,
        "both replicas' listeners were found: {cut:?}"
    );
    let run = a.admin().launch(&launch_cmd("q", &["true"])).await.unwrap();
    let got = tokio::time::timeout(DEADLINE, waiting)
        .await
        .expect("the claim on B was never answered after its listener came back")
        .unwrap();
    assert_eq!(got.runs[0].run.id, run.id);
    eventually("B listens again", || {
        let c = cluster.clone();
        async move { c.coherent() && c.generation() > before }
    })
    .await;
    // And the next wake-up goes by a signal again.
    let (cb, s) = (b.admin(), agent.clone());
    let waiting = tokio::spawn(async move { claim(&cb, &s, 1, Duration::from_secs(60)).await });
    b.wait_parked(Waiter::Claim, 1).await;
    let run = a.admin().launch(&launch_cmd("q", &["true"])).await.unwrap();
    let got = tokio::time::timeout(DEADLINE, waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.runs[0].run.id, run.id);
    stop_all(pg, a, b).await;
}
