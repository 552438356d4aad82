//! `hoist launch --wait`, `hoist run logs` and `hoist agent list` with a scripted fake
//! agent speaking the agent protocol through hoist-client.

mod cli_support;

use std::process::Stdio;
use std::time::Duration;

use chrono::Utc;
use hoist_client::{Client, Secret};
use hoist_core::api::{
    ClaimRequest, ClaimedRun, Failure, LogBatch, LogLine, LogStream, RegisterAgent, RunUpdate,
};
use hoist_core::run::{FailureStage, RunState};

use cli_support::World;

struct FakeAgent {
    client: Client,
    id: String,
    session: String,
}

impl FakeAgent {
    async fn register(w: &World) -> FakeAgent {
        let client = Client::new(&w.host, Some(Secret::new(w.admin_key_text()))).unwrap();
        let s = client
            .register_agent(&RegisterAgent {
                name: "fake".into(),
                host: "testhost".into(),
                version: "0.0.0-test".into(),
                queues: vec!["default".into()],
                entity: None,
                max_jobs: 2,
            })
            .await
            .unwrap();
        FakeAgent {
            client,
            id: s.agent.id,
            session: s.session,
        }
    }

    async fn claim(&self) -> ClaimedRun {
        for _ in 0..20 {
            let r = self
                .client
                .claim(
                    &self.id,
                    &ClaimRequest {
                        session: self.session.clone(),
                        max: 1,
                        wait_ms: 1000,
                    },
                )
                .await
                .unwrap();
            if let Some(run) = r.runs.into_iter().next() {
                return run;
            }
        }
        panic!("nothing to claim");
    }

    async fn set(
        &self,
        id: &str,
        state: RunState,
        exit_code: Option<i32>,
        failure: Option<Failure>,
    ) {
        self.client
            .update_run(
                id,
                &RunUpdate {
                    session: self.session.clone(),
                    state,
                    reason: String::new(),
                    exit_code,
                    failure,
                    built: None,
                },
            )
            .await
            .unwrap();
    }

    async fn log(&self, id: &str, lines: &[(LogStream, &str)]) {
        self.client
            .append_logs(
                id,
                &LogBatch {
                    warnings: Vec::new(),
                    session: Some(self.session.clone()),
                    lines: lines
                        .iter()
                        .map(|(stream, text)| LogLine {
                            ts: Utc::now(),
                            stream: *stream,
                            text: text.to_string(),
                        })
                        .collect(),
                },
            )
            .await
            .unwrap();
    }
}

fn spawn_wait(w: &World) -> std::process::Child {
    w.cmd(&[
        "launch", "-q", "default", "--wait", "--", "python3", "train.py",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap()
}

async fn finish(child: std::process::Child) -> (i32, String, String) {
    finish_within(child, Duration::from_secs(60)).await
}

/// [`finish`], failing when the CLI is still running after `within`.
async fn finish_within(child: std::process::Child, within: Duration) -> (i32, String, String) {
    let out = tokio::task::spawn_blocking(move || cli_support::exit_within(child, within))
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_streams_logs_and_reports_the_outcome() {
    let w = World::start();
    w.login_admin();
    w.run(&["queue", "create", "default", "--resource", "local-process"])
        .ok();
    let agent = FakeAgent::register(&w).await;

    let agents = w.run(&["agent", "list"]).ok();
    let header = agents.stdout.lines().next().unwrap().to_string();
    for col in [
        "ID",
        "NAME",
        "STATUS",
        "HOST",
        "STARTED",
        "LAST HEARTBEAT",
        "QUEUES",
        "RUNNING/MAX",
        "VERSION",
    ] {
        assert!(header.contains(col), "{header}");
    }
    assert!(agents.stdout.contains("testhost") && agents.stdout.contains("admin/default"));
    assert!(
        agents.stdout.contains("0/2") && agents.stdout.contains("0.0.0-test"),
        "{}",
        agents.stdout
    );

    // A run that finishes: its stdout on stdout, its stderr on stderr, exit 0.
    let child = spawn_wait(&w);
    let claimed = agent.claim().await;
    let id = claimed.run.id.clone();
    assert_eq!(
        claimed.run.entry_point.as_deref(),
        Some(&["python3".to_string(), "train.py".into()][..])
    );
    agent.set(&id, RunState::Starting, None, None).await;
    agent.set(&id, RunState::Running, None, None).await;
    // The waiting CLI has read the (empty) log and waits: the lines and the end reach
    // it only through wake-ups (its own re-check comes after 15 s, past the deadline).
    tokio::task::block_in_place(|| w.wait_gauge("hoist_log_followers", 1.0));
    agent
        .log(
            &id,
            &[
                (LogStream::Stdout, "epoch 1"),
                (LogStream::Stderr, "a warning"),
            ],
        )
        .await;
    agent.log(&id, &[(LogStream::Stdout, "epoch 2")]).await;
    agent.set(&id, RunState::Finished, Some(0), None).await;
    let (code, stdout, stderr) = finish_within(child, Duration::from_secs(10)).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, "epoch 1\nepoch 2\n");
    assert!(stderr.contains("a warning"), "{stderr}");
    assert!(
        stderr.contains(&format!("run {id} finished (exit code 0)")),
        "{stderr}"
    );

    // The log afterwards, as text and as NDJSON.
    let logs = w.run(&["run", "logs", &id]).ok();
    assert_eq!(logs.stdout, "epoch 1\nepoch 2\n");
    assert!(logs.stderr.contains("a warning"));
    let nd = w
        .run(&["run", "logs", &id, "-o", "json", "--offset", "1"])
        .ok();
    let lines: Vec<serde_json::Value> = nd
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["stream"], "stderr");
    assert_eq!(lines[1]["offset"], 2);
    w.run(&["run", "logs", "--follow", &id])
        .ok()
        .stdout_has("epoch 2");

    // A run that fails: exit 1 with the stage, the message and the log tail.
    let child = spawn_wait(&w);
    let claimed = agent.claim().await;
    let id = claimed.run.id.clone();
    agent.set(&id, RunState::Starting, None, None).await;
    agent.set(&id, RunState::Running, None, None).await;
    agent
        .log(&id, &[(LogStream::Stderr, "Traceback: boom")])
        .await;
    agent
        .set(
            &id,
            RunState::Failed,
            Some(3),
            Some(Failure {
                stage: FailureStage::Run,
                message: "the process exited with code 3".into(),
                log_tail: vec!["Traceback: boom".into()],
            }),
        )
        .await;
    let (code, _stdout, stderr) = finish(child).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("run {id} failed (exit code 3)")),
        "{stderr}"
    );
    assert!(
        stderr.contains("in the run stage: the process exited with code 3"),
        "{stderr}"
    );
    assert!(
        stderr.contains("last log lines:\n  Traceback: boom"),
        "{stderr}"
    );
    let show = w.run(&["run", "show", &id]).ok();
    assert!(
        show.stdout
            .contains("run stage: the process exited with code 3"),
        "{}",
        show.stdout
    );

    // `run stop` on a running run is accepted.
    let id = w
        .run(&["launch", "-q", "default", "--", "sleep", "60"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let claimed = agent.claim().await;
    assert_eq!(claimed.run.id, id);
    agent.set(&id, RunState::Starting, None, None).await;
    agent.set(&id, RunState::Running, None, None).await;
    w.run(&["run", "stop", &id, "--reason", "enough"])
        .ok()
        .stdout_has("stopping");
    let j = w.run(&["run", "show", &id, "-o", "json"]).ok().json();
    assert_eq!(j["state"], "stopping");
    assert_eq!(j["stop_requested"], true);
}
