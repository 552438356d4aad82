//! Exactly-once claims over the wire: 8 concurrent agents × 10,000 runs on one queue,
//! every run claimed by exactly one agent.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use hoist_core::api::ClaimRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_agents_ten_thousand_runs_each_claimed_once() {
    const RUNS: usize = 10_000;
    let t = TestServer::start().await;
    let c = t.admin();
    local_queue(&c, "q").await;
    let next = Arc::new(AtomicUsize::new(0));
    let mut launchers = vec![];
    for _ in 0..32 {
        let (c, next) = (c.clone(), next.clone());
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
        let s = register(&c, &format!("agent-{i}"), &["q"], -1).await;
        let c = c.clone();
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
    t.stop().await;
}
