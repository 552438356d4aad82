//! The stats behind the web UI's overview and queues pages: the store's aggregates on
//! SQLite and PostgreSQL (a scripted set of runs at known times), and the API's
//! `/api/v1/stats/*` (values and the access rule: other entities' queues and runs are
//! absent).

#[macro_use]
mod common;

use std::time::Duration;

use common::{TestServer, api_err, claim, launch_cmd, local_queue, register, report};
use hoist_core::api::{ErrorCode, GroupCounts, RunUpdate, StateGroup};
use hoist_core::resource::ResourceType;
use hoist_core::run::{Priority, RunState};
use hoist_server::store::Store;
use hoist_server::store::agents::{AgentQueue, NewAgent};
use hoist_server::store::queues::NewQueue;
use hoist_server::store::rows::RunSpec;
use hoist_server::store::runs::{ClaimParams, Claimer, NewRun};
use hoist_server::store::stats::{BUCKETS, HOUR_MS, bucket_range};
use serde_json::json;

/// On the hour, so that the scripted runs fall in known hours.
const H0: i64 = 1_700_000_000_000 / HOUR_MS * HOUR_MS;
const MIN: i64 = 60_000;

async fn queue(s: &Store, entity: &str, name: &str) -> String {
    if s.get_user(entity).await.unwrap().is_none() {
        s.create_user(entity, false, "k", H0 - HOUR_MS)
            .await
            .unwrap();
    }
    s.create_queue(
        NewQueue {
            entity: entity.into(),
            name: name.into(),
            resource: ResourceType::LocalProcess,
            config: json!({}),
            template_variables: vec![],
            prioritize: false,
            description: String::new(),
        },
        H0 - HOUR_MS,
    )
    .await
    .unwrap()
    .id
}

async fn launch(s: &Store, qid: &str, entity: &str, queue: &str, at: i64) -> String {
    let id = hoist_server::secrets::new_id(12);
    s.launch(
        NewRun {
            name: id.clone(),
            id: id.clone(),
            queue_id: qid.into(),
            entity: entity.into(),
            queue_name: queue.into(),
            project: "p".into(),
            spec: RunSpec {
                entry_point: Some(vec!["true".into()]),
                ..Default::default()
            },
            resource: ResourceType::LocalProcess,
            resource_config: json!({}),
            priority: Priority::Medium,
            prioritize: false,
            created_by: entity.into(),
            hand_over: None,
        },
        at,
    )
    .await
    .unwrap();
    id
}

async fn agent(s: &Store, owner: &str, queues: &[(&str, &str)]) -> Claimer {
    let key = s.list_keys(Some(owner)).await.unwrap().remove(0).id;
    let (rec, _, _) = s
        .register_agent(
            NewAgent {
                owner: owner.into(),
                key_id: key,
                name: format!("agent-{owner}"),
                host: "h".into(),
                version: "v".into(),
                queues: queues
                    .iter()
                    .map(|(id, n)| AgentQueue {
                        id: id.to_string(),
                        entity: owner.into(),
                        name: n.to_string(),
                    })
                    .collect(),
                max_jobs: -1,
            },
            H0 - HOUR_MS,
            365 * 24 * HOUR_MS,
        )
        .await
        .unwrap();
    Claimer {
        agent_id: rec.agent.id,
        agent_name: rec.agent.name,
        session: rec.session,
    }
}

/// Claims the head of `qid` at `at`; returns its id.
async fn claim_at(s: &Store, a: &Claimer, qid: &str, at: i64) -> String {
    let got = s
        .claim(
            a.clone(),
            ClaimParams {
                queue_ids: vec![qid.into()],
                max: 1,
                lease_ms: 365 * 24 * HOUR_MS,
                token_ttl_ms: 365 * 24 * HOUR_MS,
            },
            at,
        )
        .await
        .unwrap();
    got[0].run.id.clone()
}

async fn moved(s: &Store, a: &Claimer, run: &str, to: RunState, at: i64) {
    s.agent_update(
        run,
        &a.agent_id,
        RunUpdate {
            session: a.session.clone(),
            state: to,
            reason: String::new(),
            exit_code: None,
            failure: None,
            built: None,
        },
        at,
    )
    .await
    .unwrap();
}

/// A run claimed at `start - 30 s`, running from `start`; ended as `end_state` at `end`
/// (when given).
async fn run_through(
    s: &Store,
    a: &Claimer,
    qid: &str,
    start: i64,
    end: Option<(RunState, i64)>,
) -> String {
    let id = claim_at(s, a, qid, start - 30_000).await;
    moved(s, a, &id, RunState::Starting, start - 20_000).await;
    moved(s, a, &id, RunState::Running, start).await;
    if let Some((st, at)) = end {
        moved(s, a, &id, st, at).await;
    }
    id
}

fn bucket_of(ms: i64) -> usize {
    (0..BUCKETS)
        .find(|i| bucket_range(*i).1.is_none_or(|to| ms < to))
        .unwrap()
}

both!(window_aggregates);
async fn window_aggregates(s: Store) {
    let a = queue(&s, "u", "a").await;
    let b = queue(&s, "u", "b").await;
    let v = queue(&s, "v", "vq").await;
    let ua = agent(&s, "u", &[(&a, "a"), (&b, "b")]).await;
    let va = agent(&s, "v", &[(&v, "vq")]).await;
    let from = H0;

    // Before the window: counted nowhere.
    launch(&s, &a, "u", "a", from - 10 * MIN).await;
    run_through(
        &s,
        &ua,
        &a,
        from - 5 * MIN,
        Some((RunState::Finished, from + MIN)),
    )
    .await;
    // Hour 0: launched at +10 min, waited 2 min, ran 30 min, finished.
    launch(&s, &a, "u", "a", from + 10 * MIN).await;
    run_through(
        &s,
        &ua,
        &a,
        from + 12 * MIN,
        Some((RunState::Finished, from + 42 * MIN)),
    )
    .await;
    // Hour 1: launched at +70 min, waited 5 s, ran 10 min, failed.
    launch(&s, &b, "u", "b", from + 70 * MIN).await;
    run_through(
        &s,
        &ua,
        &b,
        from + 70 * MIN + 5_000,
        Some((RunState::Failed, from + 80 * MIN + 5_000)),
    )
    .await;
    // Hour 2: one queued, one cancelled before it started.
    launch(&s, &a, "u", "a", from + 130 * MIN).await;
    let c = launch(&s, &b, "u", "b", from + 131 * MIN).await;
    s.cancel_run(&c, "u", from + 132 * MIN).await.unwrap();
    // Another entity's run: launched at +20 min, waited 1 s, still running.
    launch(&s, &v, "v", "vq", from + 20 * MIN).await;
    run_through(&s, &va, &v, from + 20 * MIN + 1_000, None).await;

    let state = |st: RunState| RunState::ALL.iter().position(|x| *x == st).unwrap();
    let all = s.runs_per_hour(from, 3, None).await.unwrap();
    assert_eq!(all.len(), 3);
    let mut want = [[0u64; 11]; 3];
    want[0][state(RunState::Finished)] = 1;
    want[0][state(RunState::Running)] = 1;
    want[1][state(RunState::Failed)] = 1;
    want[2][state(RunState::Queued)] = 1;
    want[2][state(RunState::Cancelled)] = 1;
    assert_eq!(all, want.to_vec());
    let u_only = s
        .runs_per_hour(from, 3, Some(&["u".to_string()]))
        .await
        .unwrap();
    want[0][state(RunState::Running)] = 0;
    assert_eq!(u_only, want.to_vec());
    assert_eq!(
        s.runs_per_hour(from, 2, Some(&[])).await.unwrap(),
        vec![[0; 11]; 2]
    );

    let waits = s.queue_wait_buckets(from, None).await.unwrap();
    let names: Vec<_> = waits
        .iter()
        .map(|w| format!("{}/{}", w.entity, w.name))
        .collect();
    assert_eq!(names, ["u/a", "u/b", "v/vq"]);
    let mut wa = vec![0u64; BUCKETS];
    wa[bucket_of(2 * MIN)] = 1;
    assert_eq!(waits[0].counts, wa, "u/a: one run waited 2 min");
    let mut wb = vec![0u64; BUCKETS];
    wb[bucket_of(5_000)] = 1;
    assert_eq!(waits[1].counts, wb, "u/b: one run waited 5 s");
    assert_eq!(waits[2].counts.iter().sum::<u64>(), 1);
    let v_hidden = s
        .queue_wait_buckets(from, Some(&["u".to_string()]))
        .await
        .unwrap();
    assert_eq!(v_hidden.len(), 2, "only u's queues");

    let d = s.duration_buckets(from, None).await.unwrap();
    let mut wd = vec![0u64; BUCKETS];
    wd[bucket_of(30 * MIN)] += 1;
    wd[bucket_of(10 * MIN)] += 1;
    assert_eq!(d, wd, "30 min and 10 min; the running one has not ended");
    assert_eq!(
        s.duration_buckets(from, Some(&["v".to_string()]))
            .await
            .unwrap()
            .iter()
            .sum::<u64>(),
        0
    );
}

both!(queues_now);
async fn queues_now(s: Store) {
    let a = queue(&s, "u", "a").await;
    let b = queue(&s, "u", "b").await;
    let v = queue(&s, "v", "vq").await;
    let ua = agent(&s, "u", &[(&a, "a")]).await;
    let t = H0;
    // u/a: one finished, one running, one claimed, two queued (the older at t + 3 min).
    launch(&s, &a, "u", "a", t).await;
    run_through(
        &s,
        &ua,
        &a,
        t + MIN,
        Some((RunState::Finished, t + 2 * MIN)),
    )
    .await;
    launch(&s, &a, "u", "a", t + MIN).await;
    run_through(&s, &ua, &a, t + 2 * MIN, None).await;
    launch(&s, &a, "u", "a", t + 2 * MIN).await;
    claim_at(&s, &ua, &a, t + 150_000).await;
    launch(&s, &a, "u", "a", t + 3 * MIN).await;
    launch(&s, &a, "u", "a", t + 4 * MIN).await;
    // u/b: nothing. v/vq: one queued.
    launch(&s, &v, "v", "vq", t + 5 * MIN).await;

    let all = s.queues_now(None).await.unwrap();
    let names: Vec<_> = all
        .iter()
        .map(|q| format!("{}/{}", q.entity, q.name))
        .collect();
    assert_eq!(names, ["u/a", "u/b", "v/vq"]);
    let qa = &all[0];
    assert_eq!(qa.id, a);
    assert_eq!(
        (qa.depth.queued, qa.depth.claimed, qa.depth.running),
        (2, 1, 1)
    );
    assert_eq!(qa.depth.total(), 4);
    assert_eq!(qa.agents, 1);
    assert_eq!(qa.oldest_queued_ms, Some(t + 3 * MIN));
    assert_eq!(qa.last_activity_ms, Some(t + 4 * MIN));
    let qb = &all[1];
    assert_eq!(qb.id, b);
    assert_eq!(
        (qb.depth.total(), qb.agents, qb.oldest_queued_ms),
        (0, 0, None)
    );
    assert_eq!(qb.last_activity_ms, None);
    assert_eq!(all[2].oldest_queued_ms, Some(t + 5 * MIN));

    let mine = s.queues_now(Some(&["u".to_string()])).await.unwrap();
    assert_eq!(mine.len(), 2, "v's queue is not u's");
    assert!(s.queues_now(Some(&[])).await.unwrap().is_empty());

    // Prioritized queues: the oldest queued run is the oldest of every rank's head.
    let p = s
        .create_queue(
            NewQueue {
                entity: "u".into(),
                name: "prio".into(),
                resource: ResourceType::LocalProcess,
                config: json!({}),
                template_variables: vec![],
                prioritize: true,
                description: String::new(),
            },
            t,
        )
        .await
        .unwrap();
    for (prio, at) in [(Priority::Low, t + MIN), (Priority::Critical, t + 2 * MIN)] {
        let id = hoist_server::secrets::new_id(12);
        s.launch(
            NewRun {
                name: id.clone(),
                id,
                queue_id: p.id.clone(),
                entity: "u".into(),
                queue_name: "prio".into(),
                project: "p".into(),
                spec: RunSpec::default(),
                resource: ResourceType::LocalProcess,
                resource_config: json!({}),
                priority: prio,
                prioritize: true,
                created_by: "u".into(),
                hand_over: None,
            },
            at,
        )
        .await
        .unwrap();
    }
    let mine = s.queues_now(Some(&["u".to_string()])).await.unwrap();
    let qp = mine.iter().find(|q| q.name == "prio").unwrap();
    assert_eq!(qp.depth.queued, 2);
    assert_eq!(
        qp.oldest_queued_ms,
        Some(t + MIN),
        "the low-priority run waits longest"
    );
}

// ---------------------------------------------------------------------------------
// The API.

fn total(c: &GroupCounts) -> u64 {
    StateGroup::ALL.iter().map(|g| c.get(*g)).sum()
}

#[tokio::test]
async fn overview_counts_a_scripted_set_of_runs() {
    let ts = TestServer::start().await;
    let alice = ts.user("alice").await;
    local_queue(&alice, "train").await;
    let clock = ts.state().clock.clone();

    // r1: waits 90 s, runs 20 s, finishes.
    let r1 = alice.launch(&launch_cmd("train", &["true"])).await.unwrap();
    clock.advance(Duration::from_secs(90));
    let s = register(&alice, "gpu-1", &["train"], -1).await;
    let got = claim(&alice, &s, 1, Duration::ZERO).await;
    assert_eq!(got.runs[0].run.id, r1.id);
    report(&alice, &s, &r1.id, RunState::Starting)
        .await
        .unwrap();
    report(&alice, &s, &r1.id, RunState::Running).await.unwrap();
    clock.advance(Duration::from_secs(20));
    report(&alice, &s, &r1.id, RunState::Finished)
        .await
        .unwrap();
    // r2: starts at once and fails.
    let r2 = alice.launch(&launch_cmd("train", &["true"])).await.unwrap();
    claim(&alice, &s, 1, Duration::ZERO).await;
    report(&alice, &s, &r2.id, RunState::Starting)
        .await
        .unwrap();
    report(&alice, &s, &r2.id, RunState::Running).await.unwrap();
    report(&alice, &s, &r2.id, RunState::Failed).await.unwrap();
    // r3: claimed and held; r4: queued.
    let r3 = alice.launch(&launch_cmd("train", &["true"])).await.unwrap();
    claim(&alice, &s, 1, Duration::ZERO).await;
    alice.launch(&launch_cmd("train", &["true"])).await.unwrap();

    let o = alice.stats_overview(None).await.unwrap();
    assert_eq!(o.hours.len(), 24);
    assert_eq!(
        o.from.timestamp_millis() % HOUR_MS,
        0,
        "the window starts on the hour"
    );
    let mut sum = GroupCounts::default();
    for h in &o.hours {
        for g in StateGroup::ALL {
            sum.add(g, h.runs.get(g));
        }
    }
    assert_eq!(
        sum,
        GroupCounts {
            queued: 2,
            active: 0,
            ok: 1,
            bad: 1,
            off: 0
        },
        "r3 (claimed) and r4 wait; r1 finished; r2 failed"
    );
    assert_eq!(o.queue_waits.len(), 1);
    let w = &o.queue_waits[0];
    assert_eq!(
        (w.entity.as_str(), w.queue.as_str(), w.started),
        ("alice", "train", 2)
    );
    assert!(w.p50_ms <= 100, "r2 started at once: p50 {}", w.p50_ms);
    assert!(
        (60_000..120_000).contains(&w.p95_ms),
        "r1 waited 90 s: p95 {}",
        w.p95_ms
    );
    let ran: u64 = o.durations.iter().map(|b| b.runs).sum();
    assert_eq!(ran, 2);
    let twenty = o
        .durations
        .iter()
        .find(|b| b.from_ms <= 20_000 && b.to_ms.is_none_or(|t| 20_000 < t))
        .unwrap();
    assert_eq!(twenty.runs, 1, "r1 ran 20 s");
    assert_eq!(o.durations.len(), BUCKETS);
    assert_eq!(o.durations.last().unwrap().to_ms, None);

    let q = alice.queue_stats(None).await.unwrap();
    assert_eq!(q.queues.len(), 1);
    let t = &q.queues[0];
    assert_eq!((t.entity.as_str(), t.name.as_str()), ("alice", "train"));
    assert_eq!(
        (t.depth.queued, t.depth.claimed, t.depth.total()),
        (1, 1, 2)
    );
    assert_eq!(t.agents, 1, "gpu-1 serves it");
    assert!(t.oldest_queued_wait_ms.unwrap() >= 0);
    assert!(t.oldest_queued_at.unwrap() >= r3.created_at);
    assert!(t.last_activity_at.unwrap() >= t.oldest_queued_at.unwrap());

    // An agent that deregisters no longer counts.
    alice.deregister(&s.agent.id, &s.session).await.unwrap();
    assert_eq!(alice.queue_stats(None).await.unwrap().queues[0].agents, 0);
    ts.stop().await;
}

#[tokio::test]
async fn stats_hold_only_the_callers_entities() {
    let ts = TestServer::start().await;
    let alice = ts.user("alice").await;
    let bob = ts.user("bob").await;
    local_queue(&alice, "mine").await;
    local_queue(&bob, "secret").await;
    alice.launch(&launch_cmd("mine", &["true"])).await.unwrap();
    for _ in 0..3 {
        bob.launch(&launch_cmd("secret", &["true"])).await.unwrap();
    }
    let s = register(&bob, "bobs-agent", &["secret"], -1).await;
    let r = claim(&bob, &s, 1, Duration::ZERO).await.runs.remove(0);
    report(&bob, &s, &r.run.id, RunState::Starting)
        .await
        .unwrap();
    report(&bob, &s, &r.run.id, RunState::Running)
        .await
        .unwrap();
    report(&bob, &s, &r.run.id, RunState::Finished)
        .await
        .unwrap();

    let o = alice.stats_overview(Some(6)).await.unwrap();
    assert_eq!(o.hours.len(), 6);
    assert_eq!(o.hours.iter().map(|h| total(&h.runs)).sum::<u64>(), 1);
    assert!(o.queue_waits.is_empty(), "{:?}", o.queue_waits);
    assert_eq!(o.durations.iter().map(|b| b.runs).sum::<u64>(), 0);
    let q = alice.queue_stats(None).await.unwrap();
    let names: Vec<_> = q.queues.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["mine"], "bob's queue is absent");
    api_err(
        alice.queue_stats(Some("bob")).await,
        404,
        ErrorCode::NotFound,
    );

    // Bob sees his own; the admin sees everything.
    let o = bob.stats_overview(None).await.unwrap();
    assert_eq!(o.hours.iter().map(|h| total(&h.runs)).sum::<u64>(), 3);
    assert_eq!(o.queue_waits.len(), 1);
    let admin = ts.admin();
    let o = admin.stats_overview(None).await.unwrap();
    assert_eq!(o.hours.iter().map(|h| total(&h.runs)).sum::<u64>(), 4);
    let q = admin.queue_stats(None).await.unwrap();
    assert_eq!(q.queues.len(), 2);
    let q = admin.queue_stats(Some("bob")).await.unwrap();
    assert_eq!(q.queues.len(), 1);
    assert_eq!(q.queues[0].agents, 1);
    assert_eq!(q.queues[0].depth.queued, 2);
    ts.stop().await;
}

#[tokio::test]
async fn stats_refuse_bad_windows_and_strangers() {
    let ts = TestServer::start().await;
    let alice = ts.user("alice").await;
    for h in [0, 169] {
        let m = api_err(
            alice.stats_overview(Some(h)).await,
            400,
            ErrorCode::BadRequest,
        );
        assert!(m.contains("hours"), "{m}");
    }
    let anon = reqwest::get(format!("{}/api/v1/stats/overview", ts.url))
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
    let unknown = reqwest::Client::new()
        .get(format!("{}/api/v1/stats/queues?colour=red", ts.url))
        .bearer_auth(&ts.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
    // Documented in the OpenAPI document.
    let doc: serde_json::Value = reqwest::get(format!("{}/api/v1/openapi.json", ts.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/api/v1/stats/overview"]["get"].is_object());
    assert!(doc["paths"]["/api/v1/stats/queues"]["get"].is_object());
    assert!(doc["components"]["schemas"]["OverviewStats"].is_object());
    ts.stop().await;
}
