//! The store suite, run on SQLite and on PostgreSQL (`HOIST_TEST_DATABASE_URL`; each
//! test gets a fresh database). Times are passed explicitly, so leases, heartbeats and
//! grace periods are tested without sleeping.

#[macro_use]
mod common;

use std::collections::HashSet;
use std::time::Duration;

use hoist_core::api::{BuiltImage, RunUpdate};
use hoist_core::resource::ResourceType;
use hoist_core::run::{Priority, RunState};
use hoist_server::error::Constraint;
use hoist_server::store::agents::{AgentQueue, NewAgent};
use hoist_server::store::queues::{NewQueue, QueueChanges};
use hoist_server::store::rows::RunSpec;
use hoist_server::store::runs::{ClaimParams, Claimer, NewRun, RunFilter};
use hoist_server::store::{Store, StoreError};
use serde_json::json;

const T0: i64 = 1_700_000_000_000;

async fn setup_queue(s: &Store, name: &str, prioritize: bool) -> String {
    if s.get_user("u").await.unwrap().is_none() {
        s.create_user("u", false, "k", T0).await.unwrap();
    }
    s.create_queue(
        NewQueue {
            entity: "u".into(),
            name: name.into(),
            resource: ResourceType::LocalProcess,
            config: json!({}),
            template_variables: vec![],
            prioritize,
            description: String::new(),
        },
        T0,
    )
    .await
    .unwrap()
    .id
}

fn new_run(queue_id: &str, queue: &str, prio: Priority, prioritize: bool) -> NewRun {
    let id = hoist_server::secrets::new_id(12);
    NewRun {
        name: id.clone(),
        id,
        queue_id: queue_id.into(),
        entity: "u".into(),
        queue_name: queue.into(),
        project: "p".into(),
        spec: RunSpec {
            entry_point: Some(vec!["true".into()]),
            ..Default::default()
        },
        resource: ResourceType::LocalProcess,
        resource_config: json!({}),
        priority: prio,
        prioritize,
        created_by: "u".into(),
        hand_over: None,
    }
}

async fn agent(s: &Store, name: &str, queues: &[(&str, &str)]) -> Claimer {
    let key = s.list_keys(Some("u")).await.unwrap().remove(0).id;
    let (rec, _, _) = s
        .register_agent(
            NewAgent {
                owner: "u".into(),
                key_id: key,
                name: name.into(),
                host: "h".into(),
                version: "v".into(),
                queues: queues
                    .iter()
                    .map(|(id, n)| AgentQueue {
                        id: id.to_string(),
                        entity: "u".into(),
                        name: n.to_string(),
                    })
                    .collect(),
                max_jobs: -1,
            },
            T0,
            3_600_000,
        )
        .await
        .unwrap();
    Claimer {
        agent_id: rec.agent.id,
        agent_name: rec.agent.name,
        session: rec.session,
    }
}

fn params(queues: &[&str], max: usize) -> ClaimParams {
    ClaimParams {
        queue_ids: queues.iter().map(|s| s.to_string()).collect(),
        max,
        lease_ms: 30_000,
        token_ttl_ms: 3_600_000,
    }
}

fn update(session: &str, state: RunState) -> RunUpdate {
    RunUpdate {
        session: session.into(),
        state,
        reason: String::new(),
        exit_code: None,
        failure: None,
        built: None,
    }
}

both!(identity);
async fn identity(s: Store) {
    let (u, k) = s.create_user("alice", false, "first", T0).await.unwrap();
    assert_eq!(u.name, "alice");
    assert!(k.secret.expose().starts_with("hk_"));
    assert!(s.create_user("alice", true, "x", T0).await.is_err());
    s.create_team("ml", vec!["alice".into()], T0).await.unwrap();
    assert!(
        s.create_user("ml", false, "x", T0).await.is_err(),
        "team and user names share one namespace"
    );
    assert_eq!(s.teams_of("alice").await.unwrap(), vec!["ml".to_string()]);
    assert!(s.add_member("ml", "nobody", T0).await.is_err());
    let rec = s.key_record(&k.key.id).await.unwrap().unwrap();
    assert!(!rec.revoked);
    assert_ne!(rec.secret_hash, k.secret.expose(), "keys are stored hashed");
    s.revoke_key(&k.key.id, T0 + 1).await.unwrap();
    assert!(s.key_record(&k.key.id).await.unwrap().unwrap().revoked);
    assert!(s.revoke_key(&k.key.id, T0 + 2).await.is_err());
    s.remove_member("ml", "alice", T0).await.unwrap();
    s.delete_team("ml").await.unwrap();
    assert!(s.get_team("ml").await.unwrap().is_none());
}

both!(order_priority_fifo_and_toggle);
async fn order_priority_fifo_and_toggle(s: Store) {
    let q = setup_queue(&s, "q", true).await;
    let mut names = vec![];
    for p in [
        Priority::Low,
        Priority::High,
        Priority::Critical,
        Priority::High,
    ] {
        let r = s.launch(new_run(&q, "q", p, true), T0).await.unwrap();
        names.push(r.id);
    }
    let a = agent(&s, "a", &[(&q, "q")]).await;
    let got: Vec<_> = s
        .claim(a.clone(), params(&[&q], 2), T0)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.run.id)
        .collect();
    assert_eq!(got, vec![names[2].clone(), names[1].clone()]);
    // Turning prioritization off makes the rest FIFO.
    let low_late = s
        .launch(new_run(&q, "q", Priority::Critical, true), T0)
        .await
        .unwrap()
        .id;
    s.update_queue(
        &q,
        QueueChanges {
            config: json!({}),
            template_variables: vec![],
            prioritize: false,
            description: String::new(),
        },
        T0,
    )
    .await
    .unwrap();
    let got: Vec<_> = s
        .claim(a, params(&[&q], 10), T0)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.run.id)
        .collect();
    assert_eq!(got, vec![names[0].clone(), names[3].clone(), low_late]);
}

both!(lease_lapse_requeues_then_fails);
async fn lease_lapse_requeues_then_fails(s: Store) {
    let q = setup_queue(&s, "q", false).await;
    let run = s
        .launch(new_run(&q, "q", Priority::Medium, false), T0)
        .await
        .unwrap();
    let a = agent(&s, "a", &[(&q, "q")]).await;
    let mut now = T0;
    for lapse in 1..=5 {
        let got = s.claim(a.clone(), params(&[&q], 1), now).await.unwrap();
        assert_eq!(got.len(), 1, "lapse {lapse}");
        // Not yet expired.
        assert!(s.expire_leases(now + 29_999).await.unwrap().is_empty());
        now += 30_001;
        let requeued = s.expire_leases(now).await.unwrap();
        let (r, _) = s.get_run(&run.id).await.unwrap().unwrap();
        if lapse < 5 {
            assert_eq!(requeued, vec![q.clone()]);
            assert_eq!(r.state, RunState::Queued);
            assert!(
                r.state_reason.contains("lease lapsed"),
                "{}",
                r.state_reason
            );
            assert!(r.agent.is_none());
        } else {
            assert!(requeued.is_empty());
            assert_eq!(r.state, RunState::Failed);
            assert_eq!(
                r.failure.unwrap().stage,
                hoist_core::run::FailureStage::Agent
            );
        }
    }
    // A confirmed claim does not lapse.
    let run2 = s
        .launch(new_run(&q, "q", Priority::Medium, false), now)
        .await
        .unwrap();
    s.claim(a.clone(), params(&[&q], 1), now).await.unwrap();
    s.agent_update(
        &run2.id,
        &a.agent_id,
        update(&a.session, RunState::Starting),
        now + 10,
    )
    .await
    .unwrap();
    assert!(s.expire_leases(now + 100_000).await.unwrap().is_empty());
}

both!(built_image_is_kept_until_rebuilt);
/// The image an agent reports with `starting` is stored; later reports without it keep
/// it, also across a re-queue; the next attempt's build replaces it.
async fn built_image_is_kept_until_rebuilt(s: Store) {
    let q = setup_queue(&s, "q", false).await;
    let run = s
        .launch(new_run(&q, "q", Priority::Medium, false), T0)
        .await
        .unwrap();
    assert_eq!(run.built, None);
    let a = agent(&s, "a", &[(&q, "q")]).await;
    let stored = |s: Store, id: String| async move { s.get_run(&id).await.unwrap().unwrap().0 };
    let up = |st: RunState, built: Option<&BuiltImage>, at: i64| {
        let (s, a, id) = (s.clone(), a.clone(), run.id.clone());
        let built = built.cloned();
        async move {
            s.agent_update(
                &id,
                &a.agent_id,
                RunUpdate {
                    built,
                    ..update(&a.session, st)
                },
                at,
            )
            .await
            .unwrap()
            .run
        }
    };
    let first = BuiltImage {
        image: "registry.example:5000/jobs/j:0123456789ab".into(),
        cache_hit: false,
        builder: "kaniko".into(),
    };
    s.claim(a.clone(), params(&[&q], 1), T0).await.unwrap();
    assert_eq!(up(RunState::Building, None, T0 + 1).await.built, None);
    let answered = up(RunState::Starting, Some(&first), T0 + 2).await;
    assert_eq!(answered.built.as_ref(), Some(&first));
    assert_eq!(
        stored(s.clone(), run.id.clone()).await.built,
        Some(first.clone())
    );
    // Reports without it keep it, in the answer and in the store.
    let answered = up(RunState::Running, None, T0 + 3).await;
    assert_eq!(answered.built.as_ref(), Some(&first));
    assert_eq!(
        stored(s.clone(), run.id.clone()).await.built,
        Some(first.clone())
    );
    // Preempted: back in the queue with the last attempt's image, handed out with it.
    up(RunState::Queued, None, T0 + 4).await;
    assert_eq!(
        stored(s.clone(), run.id.clone()).await.built,
        Some(first.clone())
    );
    let again = s.claim(a.clone(), params(&[&q], 1), T0 + 5).await.unwrap();
    assert_eq!(again[0].run.built, Some(first.clone()));
    let listed = s
        .list_runs(&RunFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.0[0].built, Some(first.clone()));
    // The next attempt's build (a cache hit now) replaces it; the end keeps that.
    let second = BuiltImage {
        cache_hit: true,
        ..first.clone()
    };
    up(RunState::Building, None, T0 + 6).await;
    assert_eq!(
        up(RunState::Starting, Some(&second), T0 + 7)
            .await
            .built
            .as_ref(),
        Some(&second)
    );
    up(RunState::Running, None, T0 + 8).await;
    let ended = up(RunState::Finished, None, T0 + 9).await;
    assert_eq!(ended.built.as_ref(), Some(&second));
    assert_eq!(stored(s.clone(), run.id.clone()).await.built, Some(second));
}

both!(lost_agents_and_unknown_grace);
async fn lost_agents_and_unknown_grace(s: Store) {
    let q = setup_queue(&s, "q", false).await;
    let running = s
        .launch(new_run(&q, "q", Priority::Medium, false), T0)
        .await
        .unwrap();
    let claimed = s
        .launch(new_run(&q, "q", Priority::Medium, false), T0)
        .await
        .unwrap();
    let a = agent(&s, "a", &[(&q, "q")]).await;
    s.claim(a.clone(), params(&[&q], 2), T0).await.unwrap();
    s.agent_update(
        &running.id,
        &a.agent_id,
        update(&a.session, RunState::Starting),
        T0,
    )
    .await
    .unwrap();
    s.agent_update(
        &running.id,
        &a.agent_id,
        update(&a.session, RunState::Running),
        T0,
    )
    .await
    .unwrap();
    // Heartbeats keep it alive.
    s.heartbeat(
        &a.agent_id,
        &a.session,
        vec![running.id.clone()],
        T0 + 20_000,
    )
    .await
    .unwrap();
    assert!(
        s.mark_lost_agents(T0 + 40_000, 30_000)
            .await
            .unwrap()
            .agents
            .is_empty()
    );
    // Silence: lost.
    let lost = s.mark_lost_agents(T0 + 50_001, 30_000).await.unwrap();
    assert_eq!(lost.agents, vec![a.agent_id.clone()]);
    assert_eq!(lost.requeued_queues, vec![q.clone()]);
    assert_eq!(
        s.get_run(&claimed.id).await.unwrap().unwrap().0.state,
        RunState::Queued
    );
    assert_eq!(
        s.get_run(&running.id).await.unwrap().unwrap().0.state,
        RunState::Unknown
    );
    let agents = s.list_agents().await.unwrap();
    assert_eq!(agents[0].agent.status, hoist_core::api::AgentStatus::Lost);
    // Within the grace period nothing fails.
    assert_eq!(s.fail_unknown(T0 + 60_000, 600_000).await.unwrap(), 0);
    // The agent comes back under the same name and re-adopts.
    let b = agent(&s, "a", &[(&q, "q")]).await;
    assert_eq!(b.agent_id, a.agent_id);
    s.agent_update(
        &running.id,
        &b.agent_id,
        update(&b.session, RunState::Running),
        T0 + 70_000,
    )
    .await
    .unwrap();
    s.agent_update(
        &running.id,
        &b.agent_id,
        update(&b.session, RunState::Finished),
        T0 + 80_000,
    )
    .await
    .unwrap();
    // Another lost agent whose runs are never re-adopted: failed after the grace period.
    let r3 = s
        .launch(new_run(&q, "q", Priority::Medium, false), T0)
        .await
        .unwrap();
    let c = agent(&s, "c", &[(&q, "q")]).await;
    let got = s
        .claim(c.clone(), params(&[&q], 5), T0 + 80_000)
        .await
        .unwrap();
    assert!(got.iter().any(|g| g.run.id == r3.id));
    for g in &got {
        s.agent_update(
            &g.run.id,
            &c.agent_id,
            update(&c.session, RunState::Starting),
            T0 + 80_000,
        )
        .await
        .unwrap();
    }
    s.mark_lost_agents(T0 + 200_000, 30_000).await.unwrap();
    assert_eq!(
        s.get_run(&r3.id).await.unwrap().unwrap().0.state,
        RunState::Unknown
    );
    let n = s
        .fail_unknown(T0 + 200_000 + 600_001, 600_000)
        .await
        .unwrap();
    assert!(n >= 1);
    let (r, _) = s.get_run(&r3.id).await.unwrap().unwrap();
    assert_eq!(r.state, RunState::Failed);
    assert!(r.failure.unwrap().message.contains("agent lost"));
    let tl = s.timeline(&r3.id).await.unwrap();
    assert_eq!(tl.last().unwrap().to, RunState::Failed);
}

both!(exactly_once_under_concurrent_claims);
async fn exactly_once_under_concurrent_claims(s: Store) {
    let q = setup_queue(&s, "q", false).await;
    const N: usize = 2_000;
    let mut launches = Vec::new();
    for _ in 0..N {
        let s = s.clone();
        let q = q.clone();
        launches.push(tokio::spawn(async move {
            s.launch(new_run(&q, "q", Priority::Medium, false), T0)
                .await
                .unwrap()
                .id
        }));
    }
    let mut all = HashSet::new();
    for l in launches {
        all.insert(l.await.unwrap());
    }
    assert_eq!(all.len(), N);
    let mut claimers = Vec::new();
    for i in 0..8 {
        let a = agent(&s, &format!("a{i}"), &[(&q, "q")]).await;
        let s = s.clone();
        let q = q.clone();
        claimers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = s.claim(a.clone(), params(&[&q], 7), T0).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|c| c.run.id));
            }
        }));
    }
    let mut seen = HashSet::new();
    for c in claimers {
        for id in c.await.unwrap() {
            assert!(seen.insert(id.clone()), "run {id} claimed twice");
        }
    }
    assert_eq!(seen, all);
    let (runs, _) = s
        .list_runs(&RunFilter {
            state: Some(RunState::Queued),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(runs.is_empty());
}

#[tokio::test]
async fn reopening_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let s = Store::open(&url).await.unwrap();
    let q = setup_queue(&s, "q", false).await;
    let r = s
        .launch(new_run(&q, "q", Priority::Medium, false), T0)
        .await
        .unwrap();
    s.close().await;
    let s = Store::open(&url).await.unwrap();
    assert_eq!(
        s.get_run(&r.id).await.unwrap().unwrap().0.state,
        RunState::Queued
    );
    assert_eq!(s.queue_depth(&q).await.unwrap(), 1);
    // A closed store refuses writes with a clear error instead of hanging.
    s.close().await;
    let e = s
        .launch(new_run(&q, "q", Priority::Medium, false), T0)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("shutting down"), "{e}");
    let _ = Duration::ZERO;
}

// ---------------------------------------------------------------------------------
// The state machine as the database holds it.

both_db!(state_check_is_run_state_all);
async fn state_check_is_run_state_all(db: &common::db::Db) {
    let s = &db.store;
    let declared = s.state_constraint().await.unwrap();
    let all: Vec<String> = RunState::ALL
        .iter()
        .map(|s| s.as_str().to_string())
        .collect();
    assert_eq!(
        declared, all,
        "the CHECK on runs.state must list RunState::ALL"
    );
    // And it is enforced, and classified from the database's error code.
    let q = setup_queue(s, "q", false).await;
    let run = s
        .launch(new_run(&q, "q", Priority::Medium, false), T0)
        .await
        .unwrap();
    let mut raw = common::db::raw(&db.url).await;
    let e = sqlx::query("UPDATE runs SET state = 'bogus' WHERE id = $1")
        .bind(&run.id)
        .execute(&mut raw)
        .await
        .unwrap_err();
    let e = StoreError::from(e);
    assert_eq!(e.constraint(), Some(Constraint::Check), "{e:?}");
    assert!(!e.is_transient());
    // A foreign key: a queue of an entity that does not exist.
    let e = s
        .create_queue(
            NewQueue {
                entity: "nobody".into(),
                name: "q".into(),
                resource: ResourceType::LocalProcess,
                config: json!({}),
                template_variables: vec![],
                prioritize: false,
                description: String::new(),
            },
            T0,
        )
        .await
        .unwrap_err();
    assert_eq!(e.constraint(), Some(Constraint::ForeignKey), "{e:?}");
    assert!(
        std::error::Error::source(&e).is_some(),
        "the database error is kept as the cause"
    );
}

both_db!(migration_0003_keeps_existing_runs);
async fn migration_0003_keeps_existing_runs(db: &common::db::Db) {
    // A database as hoist left it before migration 0003: build it next to the test's.
    let (url, fresh) = if db.url.starts_with("sqlite:") {
        let dir = db.url.strip_suffix("t.db").unwrap();
        (format!("{dir}old.db?mode=rwc"), None)
    } else {
        let pg = common::db::PgDb::create().await.unwrap();
        (pg.url.clone(), Some(pg))
    };
    let sqlite = url.starts_with("sqlite:");
    let (m1, m2) = if sqlite {
        (
            include_str!("../migrations/sqlite/0001_init.sql"),
            include_str!("../migrations/sqlite/0002_jobs.sql"),
        )
    } else {
        (
            include_str!("../migrations/postgres/0001_init.sql"),
            include_str!("../migrations/postgres/0002_jobs.sql"),
        )
    };
    let mut raw = common::db::raw(&url).await;
    for sql in [
        m1,
        m2,
        "CREATE TABLE hoist_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        "INSERT INTO hoist_migrations (version, applied_at) VALUES (1, 0), (2, 0)",
        "INSERT INTO entities (name, kind, created_at) VALUES ('u', 'user', 0)",
        "INSERT INTO users (name, admin, created_at) VALUES ('u', 0, 0)",
        "INSERT INTO queues (id, entity, name, resource, config, template_vars, prioritize, description, created_at, updated_at) \
         VALUES ('q1', 'u', 'q', 'local-process', '{}', '[]', 0, '', 0, 0)",
        "INSERT INTO runs (id, queue_id, entity, queue_name, project, name, spec, resource, resource_config, \
         priority, eff_prio, state, state_reason, state_actor, created_by, created_at, updated_at, lapses) \
         VALUES ('old1', 'q1', 'u', 'q', 'p', 'n', '{}', 'local-process', '{}', 2, 0, 'queued', 'launched', 'user', 'u', 0, 0, 1), \
                ('old2', 'q1', 'u', 'q', 'p', 'n', '{}', 'local-process', '{}', 2, 0, 'finished', 'done', 'agent', 'u', 0, 0, 0)",
        "INSERT INTO agents (id, owner, name, host, version, queues, max_jobs, status, session, started_at, last_heartbeat_at) \
         VALUES ('ag-1', 'u', 'a', 'h', 'v', '[]', 1, 'polling', 'sess-1', 0, 0)",
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut raw)
            .await
            .unwrap();
    }
    drop(raw);
    let s = Store::open(&url).await.unwrap();
    let (r1, qid) = s.get_run("old1").await.unwrap().unwrap();
    assert_eq!((r1.state, qid.as_str()), (RunState::Queued, "q1"));
    assert_eq!(
        s.get_run("old2").await.unwrap().unwrap().0.state,
        RunState::Finished
    );
    let all: Vec<String> = RunState::ALL
        .iter()
        .map(|s| s.as_str().to_string())
        .collect();
    assert_eq!(s.state_constraint().await.unwrap(), all);
    // The claim index, the sequence and the transition triggers work after the rebuild.
    let newer = s
        .launch(new_run("q1", "q", Priority::Medium, false), T0)
        .await
        .unwrap();
    let (runs, _) = s
        .list_runs(&RunFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(runs[0].id, newer.id, "new runs come after the kept ones");
    assert_eq!(runs.len(), 3);
    let tl = s.timeline(&newer.id).await.unwrap();
    assert_eq!(tl.len(), 1);
    assert_eq!(s.queue_depth("q1").await.unwrap(), 2);
    // The agent's session was carried over into agent_sessions.
    let a = Claimer {
        agent_id: "ag-1".into(),
        agent_name: "a".into(),
        session: "sess-1".into(),
    };
    let got = s.claim(a, params(&["q1"], 5), T0).await.unwrap();
    assert_eq!(got.len(), 2, "the kept queued run and the new one");
    s.close().await;
    if let Some(pg) = fresh {
        pg.drop_db().await;
    }
}

both!(every_recorded_transition_is_legal);
/// A busy scenario through every path that changes a run's state, then a walk over
/// `run_transitions`: every recorded row is a move `check_transition` allows (or a
/// launch), and the scenario made many different ones.
async fn every_recorded_transition_is_legal(s: Store) {
    let q = setup_queue(&s, "q", false).await;
    let mut now = T0;
    let launch = |n: usize| {
        let s = s.clone();
        let q = q.clone();
        async move {
            let mut ids = vec![];
            for _ in 0..n {
                ids.push(
                    s.launch(new_run(&q, "q", Priority::Medium, false), T0)
                        .await
                        .unwrap()
                        .id,
                );
            }
            ids
        }
    };
    let a = agent(&s, "a", &[(&q, "q")]).await;
    let up = |a: &Claimer, id: &str, st: RunState, at: i64| {
        let (s, a, id) = (s.clone(), a.clone(), id.to_string());
        async move {
            s.agent_update(&id, &a.agent_id, update(&a.session, st), at)
                .await
                .unwrap();
        }
    };
    let r = launch(7).await;
    assert_eq!(
        s.claim(a.clone(), params(&[&q], 7), now)
            .await
            .unwrap()
            .len(),
        7
    );
    // finished
    up(&a, &r[0], RunState::Starting, now).await;
    up(&a, &r[0], RunState::Running, now).await;
    up(&a, &r[0], RunState::Finished, now).await;
    // built, stopped by the agent
    up(&a, &r[1], RunState::Building, now).await;
    up(&a, &r[1], RunState::Starting, now).await;
    up(&a, &r[1], RunState::Running, now).await;
    up(&a, &r[1], RunState::Stopping, now).await;
    up(&a, &r[1], RunState::Stopped, now).await;
    // cancelled while claimed
    s.cancel_run(&r[2], "u", now).await.unwrap();
    // preempted: back in the queue
    up(&a, &r[3], RunState::Starting, now).await;
    up(&a, &r[3], RunState::Running, now).await;
    up(&a, &r[3], RunState::Queued, now).await;
    // failed at start
    up(&a, &r[4], RunState::Starting, now).await;
    up(&a, &r[4], RunState::Failed, now).await;
    // stopped on request
    up(&a, &r[5], RunState::Starting, now).await;
    up(&a, &r[5], RunState::Running, now).await;
    s.request_stop(&r[5], "u", None, now).await.unwrap();
    up(&a, &r[5], RunState::Stopped, now).await;
    // r[6]: the lease lapses
    now += 60_000;
    assert_eq!(s.expire_leases(now).await.unwrap().len(), 1);
    // A queued run cancelled.
    let c1 = launch(1).await;
    s.cancel_run(&c1[0], "u", now).await.unwrap();
    // Lost agent: executing runs become unknown (a stop request on one records no
    // transition), unstarted ones go back; unknown ones fail after the grace period.
    launch(1).await;
    let b = agent(&s, "b", &[(&q, "q")]).await;
    let got = s.claim(b.clone(), params(&[&q], 3), now).await.unwrap();
    assert_eq!(got.len(), 3);
    up(&b, &got[0].run.id, RunState::Starting, now).await;
    up(&b, &got[1].run.id, RunState::Starting, now).await;
    up(&b, &got[1].run.id, RunState::Running, now).await;
    now += 60_000;
    s.mark_lost_agents(now, 30_000).await.unwrap();
    let unknown = got[1].run.id.clone();
    assert_eq!(
        s.get_run(&unknown).await.unwrap().unwrap().0.state,
        RunState::Unknown
    );
    let before = s.timeline(&unknown).await.unwrap().len();
    let stopped = s
        .request_stop(&unknown, "u", Some("why".into()), now)
        .await
        .unwrap();
    assert!(stopped.run.stop_requested && stopped.run.state_reason.contains("why"));
    assert_eq!(s.timeline(&unknown).await.unwrap().len(), before);
    now += 700_000;
    assert!(s.fail_unknown(now, 600_000).await.unwrap() >= 2);
    // A restart re-queues what was claimed; a clean shutdown too.
    let c = agent(&s, "c", &[(&q, "q")]).await;
    assert!(
        !s.claim(c.clone(), params(&[&q], 2), now)
            .await
            .unwrap()
            .is_empty()
    );
    agent(&s, "c", &[(&q, "q")]).await;
    let c = agent(&s, "c", &[(&q, "q")]).await;
    assert!(
        !s.claim(c.clone(), params(&[&q], 2), now)
            .await
            .unwrap()
            .is_empty()
    );
    s.deregister_agent(&c.agent_id, &c.session, now)
        .await
        .unwrap();
    // Handed out too often: failed instead of re-queued.
    let d = agent(&s, "d", &[(&q, "q")]).await;
    for _ in 0..8 {
        s.claim(d.clone(), params(&[&q], 10), now).await.unwrap();
        now += 60_000;
        s.expire_leases(now).await.unwrap();
    }
    // A queue deleted with its queued runs.
    let q2 = setup_queue(&s, "q2", false).await;
    for _ in 0..3 {
        s.launch(new_run(&q2, "q2", Priority::Medium, false), now)
            .await
            .unwrap();
    }
    assert_eq!(s.delete_queue(&q2, true, "u", now).await.unwrap(), 3);

    // The walk.
    let (runs, _) = s
        .list_runs(&RunFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(runs.len() >= 11);
    let mut kinds = HashSet::new();
    let mut rows = 0;
    for run in &runs {
        let tl = s.timeline(&run.id).await.unwrap();
        assert_eq!(tl[0].from, None, "run {} starts with its launch", run.id);
        assert_eq!(tl[0].to, RunState::Queued);
        for t in &tl[1..] {
            let from = t.from.expect("only the launch has no from-state");
            hoist_core::run::check_transition(from, t.to, t.actor)
                .unwrap_or_else(|e| panic!("run {}: recorded transition is illegal: {e}", run.id));
            kinds.insert((from, t.to));
            rows += 1;
        }
        assert_eq!(
            tl.last().unwrap().to,
            run.state,
            "the timeline ends in the state"
        );
    }
    assert!(rows > 40, "only {rows} transitions");
    assert!(
        kinds.len() >= 15,
        "only {} kinds of transition: {kinds:?}",
        kinds.len()
    );
    for k in [
        (RunState::Queued, RunState::Claimed),
        (RunState::Claimed, RunState::Queued),
        (RunState::Claimed, RunState::Cancelled),
        (RunState::Queued, RunState::Cancelled),
        (RunState::Running, RunState::Queued),
        (RunState::Running, RunState::Unknown),
        (RunState::Unknown, RunState::Failed),
        (RunState::Claimed, RunState::Failed),
        (RunState::Running, RunState::Stopping),
    ] {
        assert!(kinds.contains(&k), "the scenario made no {k:?}");
    }
}

/// One row the reaper cannot change now (another transaction holds it locked, as a
/// slow claim or report would) does not hold up or undo the rest of the pass: the
/// other lapsed leases are requeued, and the locked one on a later pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_locked_row_does_not_stop_the_reaper_pass() {
    use sqlx::Connection;
    let Some(db) = common::db::postgres().await else {
        return;
    };
    let s = db.store.clone();
    let q = setup_queue(&s, "q", false).await;
    let mut ids = vec![];
    for _ in 0..5 {
        ids.push(
            s.launch(new_run(&q, "q", Priority::Medium, false), T0)
                .await
                .unwrap()
                .id,
        );
    }
    let a = agent(&s, "a", &[(&q, "q")]).await;
    assert_eq!(s.claim(a, params(&[&q], 5), T0).await.unwrap().len(), 5);
    // Another session holds the first run's row.
    let mut other = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut tx = other.begin().await.unwrap();
    sqlx::query("SELECT id FROM runs WHERE id = $1 FOR UPDATE")
        .bind(&ids[0])
        .execute(&mut *tx)
        .await
        .unwrap();
    let now = T0 + 60_000;
    let requeued = s.expire_leases(now).await.unwrap();
    assert_eq!(requeued.len(), 4, "the four free rows are requeued");
    let state = |id: String| {
        let s = s.clone();
        async move { s.get_run(&id).await.unwrap().unwrap().0.state }
    };
    assert_eq!(state(ids[0].clone()).await, RunState::Claimed);
    for id in &ids[1..] {
        assert_eq!(state(id.clone()).await, RunState::Queued);
    }
    tx.rollback().await.unwrap();
    assert_eq!(s.expire_leases(now).await.unwrap().len(), 1);
    assert_eq!(state(ids[0].clone()).await, RunState::Queued);
    db.drop_pg().await;
}
