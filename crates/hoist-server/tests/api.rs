//! Black-box tests of the HTTP API against a real server on 127.0.0.1:0 with a
//! temporary SQLite store.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use hoist_core::api::*;
use hoist_core::run::{Priority, RunState};
use hoist_core::template::{TemplateVariable, VarType};
use serde_json::json;

#[tokio::test]
async fn admin_key_file_is_private_and_works() {
    let t = TestServer::start().await;
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(t.dir.path().join("data/admin.key")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let me = t.admin().me().await.unwrap();
    assert_eq!(me.user.name, "admin");
    assert!(me.user.admin);
    t.stop().await;
}

#[tokio::test]
async fn health_openapi_metrics() {
    let t = TestServer::start().await;
    let http = reqwest::Client::new();
    let h: serde_json::Value = http
        .get(format!("{}/healthz", t.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["status"], "ok");
    let r = http.get(format!("{}/readyz", t.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let doc: serde_json::Value = http
        .get(format!("{}/api/v1/openapi.json", t.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for p in [
        "/api/v1/runs",
        "/api/v1/queues",
        "/api/v1/agents/{id}/claim",
        "/api/v1/runs/{id}/logs",
    ] {
        assert!(doc["paths"][p].is_object(), "openapi lacks {p}");
    }
    assert!(doc["components"]["schemas"]["LaunchRequest"].is_object());
    local_queue(&t.admin(), "q").await;
    t.admin().launch(&launch_cmd("q", &["true"])).await.unwrap();
    let m = http
        .get(format!("{}/metrics", t.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(m.contains("hoist_queue_depth{queue=\"admin/q\"} 1"), "{m}");
    assert!(m.contains("hoist_runs{state=\"queued\"}"), "{m}");
    assert!(m.contains("hoist_http_requests_total"), "{m}");
    assert!(m.contains("hoist_agents{status=\"polling\"} 0"), "{m}");
    t.stop().await;
}

#[tokio::test]
async fn authentication_errors() {
    let t = TestServer::start().await;
    api_err(t.anonymous().me().await, 401, ErrorCode::Unauthenticated);
    api_err(
        t.client("hk_nope").me().await,
        401,
        ErrorCode::Unauthenticated,
    );
    // Right id, wrong secret.
    let mut bad = t.admin_key.clone();
    let last = bad.pop().unwrap();
    bad.push(if last == 'a' { 'b' } else { 'a' });
    let msg = api_err(t.client(&bad).me().await, 401, ErrorCode::Unauthenticated);
    assert!(!msg.contains(&t.admin_key));
    // Revoked keys stop working at once.
    let k = t
        .admin()
        .create_key(&CreateApiKey {
            name: "tmp".into(),
            user: None,
        })
        .await
        .unwrap();
    t.client(k.secret.expose()).me().await.unwrap();
    t.admin().revoke_key(&k.key.id).await.unwrap();
    api_err(
        t.client(k.secret.expose()).me().await,
        401,
        ErrorCode::Unauthenticated,
    );
    // Listing keys never shows secrets.
    let keys = serde_json::to_string(&t.admin().list_keys(false).await.unwrap()).unwrap();
    assert!(!keys.contains(k.secret.expose()) && !keys.contains(&t.admin_key));
    t.stop().await;
}

#[tokio::test]
async fn access_control_between_users_and_teams() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    local_queue(&alice, "private").await;
    let run = alice
        .launch(&launch_cmd("private", &["true"]))
        .await
        .unwrap();

    // Bob sees nothing of Alice's.
    api_err(
        bob.get_queue("alice", "private").await,
        404,
        ErrorCode::NotFound,
    );
    let mut req = launch_cmd("private", &["true"]);
    req.entity = Some("alice".into());
    api_err(bob.launch(&req).await, 404, ErrorCode::NotFound);
    api_err(bob.get_run(&run.id).await, 404, ErrorCode::NotFound);
    api_err(bob.cancel_run(&run.id).await, 404, ErrorCode::NotFound);
    api_err(
        bob.delete_queue("alice", "private", true).await,
        404,
        ErrorCode::NotFound,
    );
    assert!(bob.list_queues(None).await.unwrap().is_empty());
    assert!(
        bob.list_runs(&Default::default())
            .await
            .unwrap()
            .runs
            .is_empty()
    );
    api_err(
        bob.read_logs(&run.id, 0, None).await,
        404,
        ErrorCode::NotFound,
    );
    // Bob cannot create queues in Alice's entity, nor users.
    let mut cq = CreateQueue {
        name: "x".into(),
        entity: Some("alice".into()),
        resource: "local-process".into(),
        config: None,
        template_variables: vec![],
        prioritize: false,
        description: None,
    };
    api_err(bob.create_queue(&cq).await, 404, ErrorCode::NotFound);
    api_err(
        bob.create_user(&CreateUser {
            name: "eve".into(),
            admin: true,
        })
        .await,
        403,
        ErrorCode::Forbidden,
    );

    // Teams: members share the team's queues, others don't.
    admin
        .create_team(&CreateTeam {
            name: "ml".into(),
            members: vec!["alice".into()],
        })
        .await
        .unwrap();
    cq.entity = Some("ml".into());
    cq.name = "gpu".into();
    alice.create_queue(&cq).await.unwrap();
    api_err(bob.get_queue("ml", "gpu").await, 404, ErrorCode::NotFound);
    api_err(bob.get_team("ml").await, 404, ErrorCode::NotFound);
    admin.add_member("ml", "bob").await.unwrap();
    let r = bob.launch(&launch_cmd("gpu", &["true"])).await.unwrap();
    assert_eq!(r.entity, "ml");
    assert_eq!(alice.get_run(&r.id).await.unwrap().created_by, "bob");
    admin.remove_member("ml", "bob").await.unwrap();
    api_err(bob.get_run(&r.id).await, 404, ErrorCode::NotFound);
    // The admin sees everything.
    assert_eq!(admin.list_queues(None).await.unwrap().len(), 2);
    t.stop().await;
}

#[tokio::test]
async fn queue_lifecycle_and_config_checks() {
    let t = TestServer::start().await;
    let c = t.admin();
    let q = c
        .create_queue(&CreateQueue {
            name: "docker-q".into(),
            entity: None,
            resource: "local-container".into(),
            config: Some(json!("env:\n  - A=1\nmemory: 1g\n")),
            template_variables: vec![],
            prioritize: true,
            description: Some("d".into()),
        })
        .await
        .unwrap();
    assert_eq!(q.resource.as_str(), "docker");
    assert_eq!(q.config["memory"], "1g");
    // Duplicate.
    let dup = CreateQueue {
        name: "docker-q".into(),
        entity: None,
        resource: "docker".into(),
        config: None,
        template_variables: vec![],
        prioritize: false,
        description: None,
    };
    api_err(c.create_queue(&dup).await, 409, ErrorCode::Conflict);
    // Unknown resource, bad name, bad YAML.
    let mut bad = dup.clone();
    bad.name = "other".into();
    bad.resource = "slurm".into();
    let m = api_err(c.create_queue(&bad).await, 400, ErrorCode::BadRequest);
    assert!(m.contains("unknown resource \"slurm\""), "{m}");
    bad.resource = "docker".into();
    bad.name = "bad name".into();
    api_err(c.create_queue(&bad).await, 400, ErrorCode::BadRequest);
    bad.name = "other".into();
    bad.config = Some(json!("a: [1, 2\nb: 3\n"));
    let m = api_err(c.create_queue(&bad).await, 422, ErrorCode::InvalidConfig);
    assert!(m.contains("line"), "{m}");
    bad.config = Some(json!([1, 2]));
    api_err(c.create_queue(&bad).await, 422, ErrorCode::InvalidConfig);
    // Schema problems come with their paths.
    bad.resource = "kubernetes".into();
    bad.config =
        Some(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": 5}]}}}}));
    let err = c.create_queue(&bad).await.unwrap_err();
    match err {
        hoist_client::ClientError::Api {
            status,
            code,
            message,
            details,
        } => {
            assert_eq!((status, code), (422, ErrorCode::InvalidConfig));
            assert!(
                message.contains("spec.template.spec.containers[0].image"),
                "{message}"
            );
            let problems = details.unwrap()["problems"].as_array().unwrap().clone();
            assert!(
                problems
                    .iter()
                    .any(|p| p["path"] == "spec.template.spec.containers[0].image")
            );
        }
        e => panic!("{e:?}"),
    }
    // Nothing was created by the failures.
    assert_eq!(c.list_queues(None).await.unwrap().len(), 1);

    // Update and delete.
    let u = c
        .update_queue(
            "admin",
            "docker-q",
            &UpdateQueue {
                prioritize: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!u.prioritize);
    assert_eq!(u.config, q.config);
    api_err(
        c.update_queue(
            "admin",
            "docker-q",
            &UpdateQueue {
                config: Some(json!({"memory": [1]})),
                ..Default::default()
            },
        )
        .await,
        422,
        ErrorCode::InvalidConfig,
    );
    let mut req = launch_cmd("docker-q", &[]);
    req.entry_point = None;
    req.image = Some("busybox".into());
    c.launch(&req).await.unwrap();
    let m = api_err(
        c.delete_queue("admin", "docker-q", false).await,
        409,
        ErrorCode::Conflict,
    );
    assert!(m.contains("still queued"), "{m}");
    c.delete_queue("admin", "docker-q", true).await.unwrap();
    api_err(
        c.get_queue("admin", "docker-q").await,
        404,
        ErrorCode::NotFound,
    );
    let runs = c.list_runs(&Default::default()).await.unwrap().runs;
    assert_eq!(runs[0].state, RunState::Cancelled);
    t.stop().await;
}

fn var(name: &str, kind: VarType) -> TemplateVariable {
    TemplateVariable {
        name: name.into(),
        kind,
        default: None,
        min: None,
        max: None,
        choices: None,
        description: None,
    }
}

#[tokio::test]
async fn template_variables_checked_and_substituted() {
    let t = TestServer::start().await;
    let c = t.admin();
    let mut gpus = var("gpus", VarType::Int);
    gpus.min = Some(0.0);
    gpus.max = Some(8.0);
    gpus.default = Some(json!(1));
    let mut size = var("size", VarType::String);
    size.choices = Some(vec![json!("small"), json!("large")]);
    c.create_queue(&CreateQueue {
        name: "tq".into(),
        entity: None,
        resource: "docker".into(),
        config: Some(json!({"gpus": "{{gpus}}", "labels": {"size": "{{size}}"}})),
        template_variables: vec![gpus, size],
        prioritize: false,
        description: None,
    })
    .await
    .unwrap();
    let mut req = LaunchRequest {
        queue: "tq".into(),
        image: Some("img".into()),
        ..Default::default()
    };
    // Missing value without default.
    let m = api_err(c.launch(&req).await, 422, ErrorCode::InvalidTemplate);
    assert!(m.contains("size"), "{m}");
    req.template_values.insert("size".into(), json!("huge"));
    let m = api_err(c.launch(&req).await, 422, ErrorCode::InvalidTemplate);
    assert!(m.contains("small") && m.contains("large"), "{m}");
    req.template_values.insert("size".into(), json!("large"));
    req.template_values.insert("gpus".into(), json!("16"));
    let m = api_err(c.launch(&req).await, 422, ErrorCode::InvalidTemplate);
    assert!(m.contains("8"), "{m}");
    req.template_values.insert("gpus".into(), json!("2"));
    let run = c.launch(&req).await.unwrap();
    assert_eq!(
        run.resource_config,
        json!({"gpus": 2, "labels": {"size": "large"}})
    );
    // Undefined placeholder in a queue config.
    let m = api_err(
        c.create_queue(&CreateQueue {
            name: "tq2".into(),
            entity: None,
            resource: "docker".into(),
            config: Some(json!({"memory": "{{mem}}"})),
            template_variables: vec![],
            prioritize: false,
            description: None,
        })
        .await,
        422,
        ErrorCode::InvalidTemplate,
    );
    assert!(m.contains("mem"), "{m}");
    t.stop().await;
}

#[tokio::test]
async fn bad_request_bodies() {
    let t = TestServer::start().await;
    let http = reqwest::Client::new();
    let auth = format!("Bearer {}", t.admin_key);
    let post = |path: &str, body: Vec<u8>| {
        http.post(format!("{}{path}", t.url))
            .header("Authorization", &auth)
            .header("Content-Type", "application/json")
            .body(body)
    };
    let check = |status: u16, code: &str, body: serde_json::Value| {
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().len() > 5);
        status
    };
    let r = post("/api/v1/queues", b"{not json".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        check(r.status().as_u16(), "bad_request", r.json().await.unwrap()),
        400
    );
    let r = post(
        "/api/v1/queues",
        br#"{"name":"q","resource":"docker","colour":"red"}"#.to_vec(),
    )
    .send()
    .await
    .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("colour"),
        "{body}"
    );
    let r = post("/api/v1/queues", br#"{"name":"q","resource":7}"#.to_vec())
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(check(s, "bad_request", body.clone()), 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("resource"),
        "{body}"
    );
    // Oversized body.
    let big = format!(
        r#"{{"name":"q","resource":"docker","description":"{}"}}"#,
        "x".repeat(2 << 20)
    );
    let r = post("/api/v1/queues", big.into_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
    // Wrong content type.
    let r = http
        .post(format!("{}/api/v1/queues", t.url))
        .header("Authorization", &auth)
        .header("Content-Type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    // Unknown endpoint and bad query.
    let r = http
        .get(format!("{}/api/v1/nope", t.url))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = http
        .get(format!("{}/api/v1/runs?state=dancing", t.url))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // None of it created anything.
    assert!(t.admin().list_queues(None).await.unwrap().is_empty());
    t.stop().await;
}

#[tokio::test]
async fn launch_validation() {
    let t = TestServer::start().await;
    let c = t.admin();
    local_queue(&c, "lp").await;
    let mut r = launch_cmd("lp", &[]);
    r.entry_point = None;
    let m = api_err(c.launch(&r).await, 400, ErrorCode::BadRequest);
    assert!(m.contains("command"), "{m}");
    let mut r = launch_cmd("lp", &["true"]);
    r.env.insert("HOIST_RUN_ID".into(), "x".into());
    api_err(c.launch(&r).await, 400, ErrorCode::BadRequest);
    let mut r = launch_cmd("lp", &["true"]);
    r.env.insert("1BAD".into(), "x".into());
    api_err(c.launch(&r).await, 400, ErrorCode::BadRequest);
    let mut r = launch_cmd("lp", &["true"]);
    r.project = Some("no spaces allowed".into());
    api_err(c.launch(&r).await, 400, ErrorCode::BadRequest);
    let r = launch_cmd("nope", &["true"]);
    api_err(c.launch(&r).await, 404, ErrorCode::NotFound);
    // Secret-looking env values are masked in responses.
    let mut r = launch_cmd("lp", &["true"]);
    r.env.insert("WANDB_API_KEY".into(), "s3cr3t".into());
    r.env.insert("EPOCHS".into(), "3".into());
    let run = c.launch(&r).await.unwrap();
    assert_eq!(run.env["WANDB_API_KEY"], MASKED);
    assert_eq!(run.env["EPOCHS"], "3");
    let shown = serde_json::to_string(&c.get_run(&run.id).await.unwrap()).unwrap();
    assert!(!shown.contains("s3cr3t"));
    t.stop().await;
}

#[tokio::test]
async fn lifecycle_claim_to_finish_with_timeline() {
    let t = TestServer::start().await;
    let c = t.admin();
    local_queue(&c, "lp").await;
    let run = c.launch(&launch_cmd("lp", &["echo", "hi"])).await.unwrap();
    assert_eq!(run.state, RunState::Queued);
    let s = register(&c, "a1", &["lp"], 4).await;
    let got = claim(&c, &s, 4, Duration::from_secs(1)).await;
    assert_eq!(got.runs.len(), 1);
    let cr = &got.runs[0];
    assert_eq!(cr.run.id, run.id);
    assert!(cr.token.expose().starts_with("hrt_"));
    assert_eq!(cr.run.state, RunState::Claimed);
    // Illegal moves are refused and change nothing.
    let m = api_err(
        report(&c, &s, &run.id, RunState::Finished).await,
        409,
        ErrorCode::IllegalTransition,
    );
    assert!(m.contains("claimed") && m.contains("finished"), "{m}");
    api_err(
        c.stop_run(&run.id, None).await,
        409,
        ErrorCode::IllegalTransition,
    );
    report(&c, &s, &run.id, RunState::Starting).await.unwrap();
    report(&c, &s, &run.id, RunState::Running).await.unwrap();
    api_err(
        c.cancel_run(&run.id).await,
        409,
        ErrorCode::IllegalTransition,
    );
    // The job reports logs with its run token; people read them.
    let job = t.client(cr.token.expose());
    job.append_logs(
        &run.id,
        &LogBatch {
            session: None,
            lines: vec![LogLine {
                ts: chrono::Utc::now(),
                stream: LogStream::Stdout,
                text: "hi".into(),
            }],
        },
    )
    .await
    .unwrap();
    // A run token reads only its own run.
    job.get_run(&run.id).await.unwrap();
    api_err(job.list_queues(None).await, 403, ErrorCode::Forbidden);
    let other = c.launch(&launch_cmd("lp", &["true"])).await.unwrap();
    api_err(job.get_run(&other.id).await, 404, ErrorCode::NotFound);
    c.update_run(
        &run.id,
        &RunUpdate {
            session: s.session.clone(),
            state: RunState::Finished,
            reason: "exit 0".into(),
            exit_code: Some(0),
            failure: None,
        },
    )
    .await
    .unwrap();
    api_err(
        report(&c, &s, &run.id, RunState::Running).await,
        409,
        ErrorCode::IllegalTransition,
    );
    let shown = c.get_run(&run.id).await.unwrap();
    assert_eq!(shown.state, RunState::Finished);
    assert_eq!(shown.exit_code, Some(0));
    assert!(shown.started_at.is_some() && shown.ended_at.is_some());
    let tl: Vec<_> = shown.timeline.unwrap().iter().map(|t| t.to).collect();
    assert_eq!(
        tl,
        vec![
            RunState::Queued,
            RunState::Claimed,
            RunState::Starting,
            RunState::Running,
            RunState::Finished
        ]
    );
    let page = c.read_logs(&run.id, 0, None).await.unwrap();
    assert_eq!(page.lines[0].text, "hi");
    assert!(page.complete);
    // Logs of an ended run are closed to the job.
    api_err(
        job.append_logs(
            &run.id,
            &LogBatch {
                session: None,
                lines: vec![],
            },
        )
        .await,
        409,
        ErrorCode::Conflict,
    );
    t.stop().await;
}

#[tokio::test]
async fn claim_waits_and_wakes_on_launch() {
    let t = TestServer::start().await;
    let c = t.admin();
    local_queue(&c, "lp").await;
    let s = register(&c, "waiter", &["lp"], 1).await;
    // Empty queue: the claim waits its full time.
    let t0 = Instant::now();
    assert!(
        claim(&c, &s, 1, Duration::from_millis(300))
            .await
            .runs
            .is_empty()
    );
    assert!(t0.elapsed() >= Duration::from_millis(290));
    // A launch during the wait answers it at once.
    let c2 = c.clone();
    let s2 = s.clone();
    let waiter = tokio::spawn(async move {
        let t0 = Instant::now();
        let got = claim(&c2, &s2, 1, Duration::from_secs(20)).await;
        (got, t0.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let run = c.launch(&launch_cmd("lp", &["true"])).await.unwrap();
    let (got, waited) = waiter.await.unwrap();
    assert_eq!(got.runs[0].run.id, run.id);
    assert!(
        waited < Duration::from_secs(10),
        "claim was not woken: {waited:?}"
    );
    t.stop().await;
}

#[tokio::test]
async fn stop_request_reaches_waiting_claim() {
    let t = TestServer::start().await;
    let c = t.admin();
    local_queue(&c, "lp").await;
    let run = c
        .launch(&launch_cmd("lp", &["sleep", "100"]))
        .await
        .unwrap();
    let s = register(&c, "stopper", &["lp"], 2).await;
    claim(&c, &s, 1, Duration::from_secs(1)).await;
    report(&c, &s, &run.id, RunState::Starting).await.unwrap();
    report(&c, &s, &run.id, RunState::Running).await.unwrap();
    let (c2, s2) = (c.clone(), s.clone());
    let waiter = tokio::spawn(async move {
        let t0 = Instant::now();
        (
            claim(&c2, &s2, 1, Duration::from_secs(20)).await,
            t0.elapsed(),
        )
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = c.stop_run(&run.id, Some("enough".into())).await.unwrap();
    assert_eq!(stopped.state, RunState::Stopping);
    assert!(stopped.state_reason.contains("enough"));
    let (got, waited) = waiter.await.unwrap();
    assert_eq!(got.stop, vec![run.id.clone()]);
    assert!(waited < Duration::from_secs(1), "stop took {waited:?}");
    // Delivered once on the claim channel; the heartbeat repeats it until the run ends.
    assert!(
        claim(&c, &s, 0, Duration::from_millis(50))
            .await
            .stop
            .is_empty()
    );
    let hb = c
        .heartbeat(
            &s.agent.id,
            &Heartbeat {
                session: s.session.clone(),
                running: vec![run.id.clone()],
            },
        )
        .await
        .unwrap();
    assert_eq!(hb.stop, vec![run.id.clone()]);
    report(&c, &s, &run.id, RunState::Stopped).await.unwrap();
    let hb = c
        .heartbeat(
            &s.agent.id,
            &Heartbeat {
                session: s.session.clone(),
                running: vec![run.id.clone()],
            },
        )
        .await
        .unwrap();
    assert!(hb.stop.is_empty());
    assert_eq!(hb.drop, vec![run.id.clone()]);
    t.stop().await;
}

#[tokio::test]
async fn priority_then_fifo_and_fair_across_queues() {
    let t = TestServer::start().await;
    let c = t.admin();
    c.create_queue(&CreateQueue {
        name: "prio".into(),
        entity: None,
        resource: "local-process".into(),
        config: None,
        template_variables: vec![],
        prioritize: true,
        description: None,
    })
    .await
    .unwrap();
    local_queue(&c, "fifo").await;
    let mut ids = vec![];
    for (i, p) in [
        Priority::Low,
        Priority::Medium,
        Priority::Critical,
        Priority::High,
        Priority::Critical,
    ]
    .iter()
    .enumerate()
    {
        let mut r = launch_cmd("prio", &["true"]);
        r.priority = Some(*p);
        r.name = Some(format!("p{i}"));
        ids.push(c.launch(&r).await.unwrap().name);
    }
    let s = register(&c, "order", &["prio"], 10).await;
    let got = claim(&c, &s, 10, Duration::from_millis(10)).await;
    let names: Vec<_> = got.runs.iter().map(|r| r.run.name.clone()).collect();
    assert_eq!(names, vec!["p2", "p4", "p3", "p1", "p0"]);
    // Without prioritization: FIFO whatever the priority.
    for (i, p) in [Priority::Low, Priority::Critical].iter().enumerate() {
        let mut r = launch_cmd("fifo", &["true"]);
        r.priority = Some(*p);
        r.name = Some(format!("f{i}"));
        c.launch(&r).await.unwrap();
    }
    let s2 = register(&c, "fifo-agent", &["fifo"], 10).await;
    let names: Vec<_> = claim(&c, &s2, 10, Duration::from_millis(10))
        .await
        .runs
        .iter()
        .map(|r| r.run.name.clone())
        .collect();
    assert_eq!(names, vec!["f0", "f1"]);
    // Fairness: a deep queue does not starve a shallow one.
    local_queue(&c, "deep").await;
    local_queue(&c, "shallow").await;
    for _ in 0..50 {
        c.launch(&launch_cmd("deep", &["true"])).await.unwrap();
    }
    for _ in 0..3 {
        c.launch(&launch_cmd("shallow", &["true"])).await.unwrap();
    }
    let s3 = register(&c, "fair", &["deep", "shallow"], 1).await;
    let mut shallow_seen = 0;
    for _ in 0..6 {
        let got = claim(&c, &s3, 1, Duration::from_millis(10)).await;
        if got.runs[0].run.queue == "shallow" {
            shallow_seen += 1;
        }
    }
    assert_eq!(
        shallow_seen, 3,
        "one-at-a-time claims must alternate between queues"
    );
    t.stop().await;
}

#[tokio::test]
async fn logs_follow_streams_until_run_ends() {
    let t = TestServer::start().await;
    let c = t.admin();
    local_queue(&c, "lp").await;
    let run = c.launch(&launch_cmd("lp", &["x"])).await.unwrap();
    let s = register(&c, "logger", &["lp"], 1).await;
    claim(&c, &s, 1, Duration::from_secs(1)).await;
    report(&c, &s, &run.id, RunState::Starting).await.unwrap();
    report(&c, &s, &run.id, RunState::Running).await.unwrap();
    let follower = {
        let c = c.clone();
        let id = run.id.clone();
        tokio::spawn(async move {
            let stream = c.follow_logs(&id, 0).await.unwrap();
            futures::pin_mut!(stream);
            let mut texts = vec![];
            while let Some(l) = stream.next().await {
                texts.push(l.unwrap().text);
            }
            texts
        })
    };
    for i in 0..3 {
        c.append_logs(
            &run.id,
            &LogBatch {
                session: Some(s.session.clone()),
                lines: (0..100)
                    .map(|j| LogLine {
                        ts: chrono::Utc::now(),
                        stream: LogStream::Stdout,
                        text: format!("{i}-{j}"),
                    })
                    .collect(),
            },
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    report(&c, &s, &run.id, RunState::Finished).await.unwrap();
    let texts = tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(texts.len(), 300);
    assert_eq!(texts[0], "0-0");
    assert_eq!(texts[299], "2-99");
    // Offsets page through.
    let page = c.read_logs(&run.id, 250, Some(10)).await.unwrap();
    assert_eq!(page.lines.len(), 10);
    assert_eq!(page.lines[0].offset, 250);
    assert_eq!(page.next_offset, 260);
    assert!(!page.complete);
    t.stop().await;
}

#[tokio::test]
async fn superseded_sessions_and_reregistration() {
    let t = TestServer::start().await;
    let c = t.admin();
    local_queue(&c, "lp").await;
    let a = c.launch(&launch_cmd("lp", &["a"])).await.unwrap();
    let b = c.launch(&launch_cmd("lp", &["b"])).await.unwrap();
    let s1 = register(&c, "same", &["lp"], 2).await;
    claim(&c, &s1, 2, Duration::from_secs(1)).await;
    report(&c, &s1, &a.id, RunState::Starting).await.unwrap();
    report(&c, &s1, &a.id, RunState::Running).await.unwrap();
    // The agent restarts: same name, new session.
    let s2 = register(&c, "same", &["lp"], 2).await;
    assert_eq!(s2.agent.id, s1.agent.id);
    assert_eq!(
        s2.held_runs.len(),
        1,
        "the running run is handed back for re-adoption"
    );
    assert_eq!(s2.held_runs[0].run.id, a.id);
    // The claimed-but-unstarted run went back to the queue.
    assert_eq!(c.get_run(&b.id).await.unwrap().state, RunState::Queued);
    // The old session is refused.
    api_err(
        report(&c, &s1, &a.id, RunState::Finished).await,
        409,
        ErrorCode::Superseded,
    );
    api_err(
        c.claim(
            &s1.agent.id,
            &ClaimRequest {
                session: s1.session.clone(),
                max: 1,
                wait_ms: 0,
            },
        )
        .await,
        409,
        ErrorCode::Superseded,
    );
    report(&c, &s2, &a.id, RunState::Finished).await.unwrap();
    // Clean deregistration releases claims.
    claim(&c, &s2, 1, Duration::from_secs(1)).await;
    assert_eq!(c.get_run(&b.id).await.unwrap().state, RunState::Claimed);
    c.deregister(&s2.agent.id, &s2.session).await.unwrap();
    assert_eq!(c.get_run(&b.id).await.unwrap().state, RunState::Queued);
    let agents = c.list_agents().await.unwrap();
    assert_eq!(agents[0].status, AgentStatus::Stopped);
    t.stop().await;
}

#[tokio::test]
async fn cancel_of_claimed_run_tells_the_agent() {
    let t = TestServer::start().await;
    let c = t.admin();
    local_queue(&c, "lp").await;
    let run = c.launch(&launch_cmd("lp", &["x"])).await.unwrap();
    let s = register(&c, "ag", &["lp"], 1).await;
    claim(&c, &s, 1, Duration::from_secs(1)).await;
    let cancelled = c.cancel_run(&run.id).await.unwrap();
    assert_eq!(cancelled.state, RunState::Cancelled);
    let got = claim(&c, &s, 0, Duration::from_secs(1)).await;
    assert_eq!(got.stop, vec![run.id.clone()]);
    api_err(
        report(&c, &s, &run.id, RunState::Starting).await,
        409,
        ErrorCode::IllegalTransition,
    );
    t.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_releases_long_polls() {
    let t = TestServer::start().await;
    let c = t.admin();
    local_queue(&c, "lp").await;
    let s = register(&c, "w", &["lp"], 1).await;
    let waiter = tokio::spawn(async move {
        c.claim(
            &s.agent.id,
            &ClaimRequest {
                session: s.session.clone(),
                max: 1,
                wait_ms: 30_000,
            },
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    t.stop().await;
    let r = waiter.await.unwrap();
    assert!(
        r.is_ok(),
        "the waiting claim is answered (empty), not cut: {r:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
}
