//! Shared test harness: a real server on 127.0.0.1:0 over a temporary store.
#![allow(dead_code)]

#[macro_use]
pub mod db;
pub mod web;

use std::path::PathBuf;
use std::time::Duration;

use hoist_client::{Client, Secret};
use hoist_core::api::*;
use hoist_server::{Server, ServerConfig};

pub struct TestServer {
    pub server: Option<Server>,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub admin_key: String,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("data"));
        tweak(&mut cfg);
        let server = Server::start(cfg).await.expect("server starts");
        let key_path: PathBuf = server.admin_key_created.clone().expect("admin key created");
        let admin_key = std::fs::read_to_string(&key_path)
            .unwrap()
            .trim()
            .to_string();
        let url = format!("http://{}", server.addr);
        TestServer {
            server: Some(server),
            dir,
            url,
            admin_key,
        }
    }

    /// Another replica on this server's database (PostgreSQL): it creates no admin;
    /// its `admin_key` is this server's.
    pub async fn join(&self, tweak: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("data"));
        cfg.database_url = self.state().cfg.database_url.clone();
        tweak(&mut cfg);
        let server = Server::start(cfg).await.expect("replica starts");
        assert!(
            server.admin_key_created.is_none(),
            "a replica made an admin"
        );
        let url = format!("http://{}", server.addr);
        TestServer {
            server: Some(server),
            dir,
            url,
            admin_key: self.admin_key.clone(),
        }
    }

    pub fn admin(&self) -> Client {
        Client::new(&self.url, Some(Secret::new(self.admin_key.clone()))).unwrap()
    }

    pub fn client(&self, key: &str) -> Client {
        Client::new(&self.url, Some(Secret::new(key.to_string()))).unwrap()
    }

    pub fn anonymous(&self) -> Client {
        Client::new(&self.url, None).unwrap()
    }

    /// Creates a user; returns a client logged in as them.
    pub async fn user(&self, name: &str) -> Client {
        let u = self
            .admin()
            .create_user(&CreateUser {
                name: name.into(),
                admin: false,
            })
            .await
            .unwrap();
        self.client(u.api_key.secret.expose())
    }

    /// The server's state (its store, dispatch, clock).
    pub fn state(&self) -> &hoist_server::api::AppState {
        &self.server.as_ref().expect("running").state
    }

    /// Waits (up to 20 s) until at least `n` waiters of a kind are parked: they have
    /// read the store and only a wake-up (or their deadline) moves them now.
    pub async fn wait_parked(&self, who: hoist_server::dispatch::Waiter, n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while self.state().dispatch.parked(who) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "fewer than {n} {who:?} waiters parked after 20 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// `/metrics`, with an optional bearer key.
    pub async fn metrics(&self, key: Option<&str>) -> String {
        let mut r = reqwest::Client::new().get(format!("{}/metrics", self.url));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        let resp = r.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

pub async fn local_queue(c: &Client, name: &str) -> Queue {
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
    .unwrap()
}

pub fn launch_cmd(queue: &str, cmd: &[&str]) -> LaunchRequest {
    LaunchRequest {
        queue: queue.into(),
        entry_point: Some(cmd.iter().map(|s| s.to_string()).collect()),
        ..Default::default()
    }
}

pub async fn register(c: &Client, name: &str, queues: &[&str], max_jobs: i64) -> AgentSession {
    c.register_agent(&RegisterAgent {
        name: name.into(),
        host: "test-host".into(),
        version: hoist_core::VERSION.into(),
        queues: queues.iter().map(|s| s.to_string()).collect(),
        entity: None,
        max_jobs,
    })
    .await
    .unwrap()
}

pub async fn claim(c: &Client, s: &AgentSession, max: u32, wait: Duration) -> ClaimResponse {
    c.claim(
        &s.agent.id,
        &ClaimRequest {
            session: s.session.clone(),
            max,
            wait_ms: wait.as_millis() as u64,
        },
    )
    .await
    .unwrap()
}

/// A claim as `session` of agent `agent_id` (any session, valid or not).
pub async fn try_claim(
    c: &Client,
    agent_id: &str,
    session: &str,
    wait_ms: u64,
) -> Result<ClaimResponse, hoist_client::ClientError> {
    c.claim(
        agent_id,
        &ClaimRequest {
            session: session.to_string(),
            max: 1,
            wait_ms,
        },
    )
    .await
}

/// A heartbeat with no running runs as `session` of agent `agent_id`.
pub async fn try_heartbeat(
    c: &Client,
    agent_id: &str,
    session: &str,
) -> Result<HeartbeatResponse, hoist_client::ClientError> {
    c.heartbeat(
        agent_id,
        &Heartbeat {
            session: session.to_string(),
            running: vec![],
        },
    )
    .await
}

pub async fn report(
    c: &Client,
    s: &AgentSession,
    run: &str,
    state: hoist_core::run::RunState,
) -> Result<Run, hoist_client::ClientError> {
    c.update_run(
        run,
        &RunUpdate {
            session: s.session.clone(),
            state,
            reason: String::new(),
            exit_code: None,
            failure: None,
            built: None,
        },
    )
    .await
}

/// Asserts an API error with the given status and code; returns its message.
pub fn api_err<T: std::fmt::Debug>(
    r: Result<T, hoist_client::ClientError>,
    status: u16,
    code: ErrorCode,
) -> String {
    match r {
        Err(hoist_client::ClientError::Api {
            status: s,
            code: c,
            message,
            ..
        }) => {
            assert_eq!((s, c), (status, code), "unexpected error: {message}");
            message
        }
        other => panic!("expected API error {status} {code:?}, got {other:?}"),
    }
}
