//! The reaper against a clock the test moves by hand: leases lapse and agents get lost
//! when the clock says so, with no sleeping.

use std::sync::Arc;
use std::time::Duration;

use hoist_core::resource::ResourceType;
use hoist_core::run::{Priority, RunState};
use hoist_server::ServerConfig;
use hoist_server::api::AppState;
use hoist_server::clock::Clock;
use hoist_server::reaper::reap_once;
use hoist_server::store::Store;
use hoist_server::store::agents::{AgentQueue, NewAgent};
use hoist_server::store::queues::NewQueue;
use hoist_server::store::rows::RunSpec;
use hoist_server::store::runs::{ClaimParams, Claimer, NewRun};
use serde_json::json;

async fn state(dir: &std::path::Path) -> AppState {
    let store = Store::open(&format!("sqlite://{}", dir.join("t.db").display()))
        .await
        .unwrap();
    let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.to_path_buf());
    cfg.lease = Duration::from_secs(30);
    cfg.agent_lost_after = Duration::from_secs(30);
    cfg.unknown_grace = Duration::from_secs(600);
    let (_tx, rx) = tokio::sync::watch::channel(false);
    std::mem::forget(_tx);
    AppState::new(store, Clock::new(), Arc::new(cfg), rx)
}

#[tokio::test]
async fn leases_and_lost_agents_follow_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let st = state(dir.path()).await;
    let s = &st.store;
    let now = st.now();
    s.create_user("u", false, "k", now).await.unwrap();
    let q = s
        .create_queue(
            NewQueue {
                entity: "u".into(),
                name: "q".into(),
                resource: ResourceType::LocalProcess,
                config: json!({}),
                template_variables: vec![],
                prioritize: false,
                description: String::new(),
            },
            now,
        )
        .await
        .unwrap();
    let mk = || NewRun {
        id: hoist_server::secrets::new_id(12),
        name: "r".into(),
        queue_id: q.id.clone(),
        entity: "u".into(),
        queue_name: "q".into(),
        project: "p".into(),
        spec: RunSpec::default(),
        resource: ResourceType::LocalProcess,
        resource_config: json!({}),
        priority: Priority::Medium,
        prioritize: false,
        created_by: "u".into(),
        hand_over: None,
    };
    let r1 = s.launch(mk(), now).await.unwrap();
    let r2 = s.launch(mk(), now).await.unwrap();
    let (rec, _, _) = s
        .register_agent(
            NewAgent {
                owner: "u".into(),
                key_id: s.list_keys(Some("u")).await.unwrap().remove(0).id,
                name: "a".into(),
                host: "h".into(),
                version: "v".into(),
                queues: vec![AgentQueue {
                    id: q.id.clone(),
                    entity: "u".into(),
                    name: "q".into(),
                }],
                max_jobs: 2,
            },
            now,
            3_600_000,
        )
        .await
        .unwrap();
    let who = Claimer {
        agent_id: rec.agent.id.clone(),
        agent_name: "a".into(),
        session: rec.session.clone(),
    };
    let p = ClaimParams {
        queue_ids: vec![q.id.clone()],
        max: 2,
        lease_ms: 30_000,
        token_ttl_ms: 3_600_000,
    };
    s.claim(who, p, st.now()).await.unwrap();
    // r2 is confirmed and running; r1 stays claimed.
    let up = |state| hoist_core::api::RunUpdate {
        session: rec.session.clone(),
        state,
        reason: String::new(),
        exit_code: None,
        failure: None,
        built: None,
    };
    s.agent_update(&r2.id, &rec.agent.id, up(RunState::Starting), st.now())
        .await
        .unwrap();
    s.agent_update(&r2.id, &rec.agent.id, up(RunState::Running), st.now())
        .await
        .unwrap();

    st.clock.advance(Duration::from_secs(20));
    s.heartbeat(&rec.agent.id, &rec.session, vec![r2.id.clone()], st.now())
        .await
        .unwrap();
    reap_once(&st).await;
    assert_eq!(
        s.get_run(&r1.id).await.unwrap().unwrap().0.state,
        RunState::Claimed
    );

    st.clock.advance(Duration::from_secs(11));
    reap_once(&st).await;
    assert_eq!(
        s.get_run(&r1.id).await.unwrap().unwrap().0.state,
        RunState::Queued,
        "lease lapsed after 30 s"
    );
    assert_eq!(
        s.get_run(&r2.id).await.unwrap().unwrap().0.state,
        RunState::Running,
        "heartbeat 11 s ago"
    );

    st.clock.advance(Duration::from_secs(20));
    reap_once(&st).await;
    assert_eq!(
        s.get_run(&r2.id).await.unwrap().unwrap().0.state,
        RunState::Unknown,
        "agent silent for 31 s"
    );

    st.clock.advance(Duration::from_secs(599));
    reap_once(&st).await;
    assert_eq!(
        s.get_run(&r2.id).await.unwrap().unwrap().0.state,
        RunState::Unknown
    );
    st.clock.advance(Duration::from_secs(2));
    reap_once(&st).await;
    let (r, _) = s.get_run(&r2.id).await.unwrap().unwrap();
    assert_eq!(r.state, RunState::Failed);
    assert!(r.state_reason.contains("agent lost"), "{}", r.state_reason);
}
