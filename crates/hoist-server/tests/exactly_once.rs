//! Exactly-once claims over the wire: 8 concurrent agents × 10,000 runs on one queue,
//! every run claimed by exactly one agent; on SQLite (one server), and on PostgreSQL
//! with two servers sharing the database, where two replicas' claims can race for the
//! same row.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use hoist_core::api::ClaimRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_agents_ten_thousand_runs_each_claimed_once() {
    let t = TestServer::start().await;
    eight_agents_ten_thousand_runs(&[&t]).await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_agents_ten_thousand_runs_each_claimed_once_over_two_postgres_replicas() {
    let Some(pg) = hoist_testkit::pg::PgDb::create().await else {
        return;
    };
    let url = pg.url.clone();
    let a = TestServer::start_with(|cfg| cfg.database_url = Some(url.clone())).await;
    let b = a.join(|_| {}).await;
    eight_agents_ten_thousand_runs(&[&a, &b]).await;
    a.stop().await;
    b.stop().await;
    pg.drop_db().await;
}

/// 32 launching clients and 8 agents, split evenly over `servers`; every run launched
/// is claimed by exactly one agent.
async fn eight_agents_ten_thousand_runs(servers: &[&TestServer]) {
    const RUNS: usize = 10_000;
    let clients: Vec<_> = servers.iter().map(|t| t.admin()).collect();
    local_queue(&clients[0], "q").await;
    let next = Arc::new(AtomicUsize::new(0));
    let mut launchers = vec![];
    for i in 0..32 {
        let (c, next) = (clients[i % clients.len()].clone(), next.clone());
        launchers.push(tokio::spawn(async move {
            let mut ids = vec![];
            while next.fetch_add(1, Ordering::Relaxed) < RUNS {
                ids.push(c.launch(&launch_cmd("q", &["true"])).await.unwrap().id);
            }
            ids
        }));
    }
    // Agents start claiming while launches are still coming in.
    let mut agents = vec![];
    for i in 0..8 {
        let c = clients[i % clients.len()].clone();
        let s = register(&c, &format!("agent-{i}"), &["q"], -1).await;
        agents.push(tokio::spawn(async move {
            let mut mine = vec![];
            let mut empty = 0;
            while empty < 3 {
                let got = c
                    .claim(
                        &s.agent.id,
                        &ClaimRequest {
                            session: s.session.clone(),
                            max: 16,
                            wait_ms: 300,
                        },
                    )
                    .await
                    .unwrap();
                if got.runs.is_empty() {
                    empty += 1;
                } else {
                    empty = 0;
                }
                mine.extend(got.runs.into_iter().map(|r| r.run.id));
            }
            mine
        }));
    }
    let mut launched = HashSet::new();
    for l in launchers {
        launched.extend(l.await.unwrap());
    }
    assert_eq!(launched.len(), RUNS);
    let mut claimed = HashSet::new();
    let mut per_agent = vec![];
    for a in agents {
        let mine = tokio::time::timeout(Duration::from_secs(300), a)
            .await
            .unwrap()
            .unwrap();
        per_agent.push(mine.len());
        for id in mine {
            assert!(claimed.insert(id.clone()), "run {id} was claimed twice");
        }
    }
    assert_eq!(claimed, launched, "every run claimed exactly once");
    assert!(
        per_agent.iter().filter(|n| **n > 0).count() >= 4,
        "claims spread over agents: {per_agent:?}"
    );
    if servers.len() > 1 {
        // Agents 0, 2, 4, 6 claimed through the first server, the others through the
        // second: both served claims.
        let per_server: Vec<usize> = (0..servers.len())
            .map(|s| per_agent.iter().skip(s).step_by(servers.len()).sum())
            .collect();
        assert!(
            per_server.iter().all(|n| *n > 0),
            "every server handed out runs: {per_server:?}"
        );
    }
}
