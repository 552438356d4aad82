//! Black-box tests of the HTTP API against a real server on 127.0.0.1:0 with a
//! temporary SQLite store.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use hoist_core::api::*;
use hoist_core::run::{Priority, RunState};
use hoist_core::template::{TemplateVariable, VarType};
use hoist_server::dispatch::Waiter;
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
    assert!(doc["components"]["schemas"]["BuiltImage"].is_object());
    local_queue(&t.admin(), "q").await;
    t.admin().launch(&launch_cmd("q", &["true"])).await.unwrap();
    // An admin key sees each queue's depth.
    let m = t.metrics(Some(&t.admin_key)).await;
    assert!(m.contains("hoist_queue_depth{queue=\"admin/q\"} 1"), "{m}");
    // Without a key, or with a key that is not an admin's: aggregates only, no names.
    let alice = t
        .admin()
        .create_user(&CreateUser {
            name: "alice".into(),
            admin: false,
        })
        .await
        .unwrap();
    for m in [
        t.metrics(None).await,
        t.metrics(Some(alice.api_key.secret.expose())).await,
    ] {
        assert!(
            !m.contains("admin/q") && !m.contains("hoist_queue_depth{"),
            "queue names leak: {m}"
        );
        for line in [
            "hoist_queue_depth_total 1",
            "hoist_runs{state=\"queued\"} 1",
            "hoist_agents{status=\"polling\"} 0",
            "hoist_claim_waiters 0",
            "hoist_log_followers 0",
            "hoist_http_requests_total",
        ] {
            assert!(m.contains(line), "missing {line}: {m}");
        }
    }
    // A credential that is not valid is refused, not treated as anonymous.
    let r = http
        .get(format!("{}/metrics", t.url))
        .bearer_auth("hk_nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
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
    // The image the agent built: checked like a launch's image before anything is
    // written, stored with `starting`, kept by later reports.
    let starting = |built: BuiltImage| RunUpdate {
        session: s.session.clone(),
        state: RunState::Starting,
        reason: String::new(),
        exit_code: None,
        failure: None,
        built: Some(built),
    };
    let built = BuiltImage {
        image: "hoist-build:0123456789ab".into(),
        cache_hit: false,
        builder: "docker".into(),
    };
    for bad in [
        BuiltImage {
            image: "--privileged".into(),
            ..built.clone()
        },
        BuiltImage {
            builder: "no such builder!".into(),
            ..built.clone()
        },
    ] {
        let m = api_err(
            c.update_run(&run.id, &starting(bad)).await,
            400,
            ErrorCode::BadRequest,
        );
        assert!(m.starts_with("built: "), "{m}");
    }
    assert_eq!(c.get_run(&run.id).await.unwrap().state, RunState::Claimed);
    let r = c
        .update_run(&run.id, &starting(built.clone()))
        .await
        .unwrap();
    assert_eq!(r.built.as_ref(), Some(&built));
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
            warnings: Vec::new(),
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
            built: None,
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
    assert_eq!(shown.built, Some(built));
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
    // Logs of an ended run are closed to the job: its token ended with the run.
    let msg = api_err(
        job.append_logs(
            &run.id,
            &LogBatch {
                warnings: Vec::new(),
                session: None,
                lines: vec![],
            },
        )
        .await,
        401,
        ErrorCode::Unauthenticated,
    );
    assert!(msg.contains("run has ended"), "{msg}");
    t.stop().await;
}

/// Warnings ride on the agent's log batches: stored once per message with the run,
/// shown by `GET /runs/{id}` (and each is a log line too, written by the agent). A
/// job's run token may not send any; a session that no longer holds the run adds
/// nothing; a flood is bounded.
#[tokio::test]
async fn agent_warnings_are_kept_with_the_run() {
    let t = TestServer::start().await;
    let c = t.admin();
    local_queue(&c, "lp").await;
    let run = c.launch(&launch_cmd("lp", &["true"])).await.unwrap();
    let s = register(&c, "warner", &["lp"], 1).await;
    let got = claim(&c, &s, 1, Duration::from_secs(1)).await;
    let cr = &got.runs[0];
    report(&c, &s, &run.id, RunState::Starting).await.unwrap();
    let warn = |session: Option<String>, ws: &[&str]| LogBatch {
        session,
        lines: vec![LogLine {
            ts: chrono::Utc::now(),
            stream: LogStream::System,
            text: "[hoist: warning: …]".into(),
        }],
        warnings: ws.iter().map(|w| w.to_string()).collect(),
    };
    let unschedulable = "pod p-1 cannot be scheduled: 0/1 nodes are available";
    c.append_logs(&run.id, &warn(Some(s.session.clone()), &[unschedulable]))
        .await
        .unwrap();
    // The same warning again (the agent saw the pod again) is one entry.
    c.append_logs(
        &run.id,
        &warn(
            Some(s.session.clone()),
            &[unschedulable, "image pulling slowly"],
        ),
    )
    .await
    .unwrap();
    let shown = c.get_run(&run.id).await.unwrap();
    assert_eq!(shown.state, RunState::Starting);
    let ws: Vec<_> = shown
        .warnings
        .unwrap()
        .into_iter()
        .map(|w| w.message)
        .collect();
    assert_eq!(ws, vec![unschedulable, "image pulling slowly"]);
    // Lists stay light.
    let listed = c.list_runs(&Default::default()).await.unwrap();
    assert!(listed.runs.iter().all(|r| r.warnings.is_none()));
    // The job itself may not warn: refused, and nothing stored.
    let job = t.client(cr.token.expose());
    api_err(
        job.append_logs(&run.id, &warn(None, &["fake hoist warning"]))
            .await,
        403,
        ErrorCode::Forbidden,
    );
    // Without a session, or with one that is not the holder's: the lines are stored,
    // the warnings are not.
    api_err(
        c.append_logs(&run.id, &warn(None, &["no session"])).await,
        403,
        ErrorCode::Forbidden,
    );
    c.append_logs(&run.id, &warn(Some("made-up".into()), &["wrong session"]))
        .await
        .unwrap();
    // A flood: bounded per batch and per run; long messages are cut.
    let many: Vec<String> = (0..MAX_RUN_WARNINGS + 1).map(|i| format!("w{i}")).collect();
    let many_refs: Vec<&str> = many.iter().map(String::as_str).collect();
    api_err(
        c.append_logs(&run.id, &warn(Some(s.session.clone()), &many_refs))
            .await,
        413,
        ErrorCode::PayloadTooLarge,
    );
    let long = "é".repeat(MAX_RUN_WARNING_BYTES);
    c.append_logs(&run.id, &warn(Some(s.session.clone()), &[long.as_str()]))
        .await
        .unwrap();
    c.append_logs(
        &run.id,
        &warn(Some(s.session.clone()), &many_refs[..MAX_RUN_WARNINGS]),
    )
    .await
    .unwrap();
    let ws = c.get_run(&run.id).await.unwrap().warnings.unwrap();
    assert_eq!(ws.len(), MAX_RUN_WARNINGS);
    assert!(ws[2].message.len() <= MAX_RUN_WARNING_BYTES && ws[2].message.starts_with('é'));
    let texts: Vec<&str> = ws.iter().map(|w| w.message.as_str()).collect();
    for absent in ["fake hoist warning", "no session", "wrong session"] {
        assert!(!texts.contains(&absent), "{absent} stored: {texts:?}");
    }
    t.stop().await;
}

#[tokio::test]
async fn claim_waits_and_wakes_on_launch() {
    let t = TestServer::start().await;
    let c = t.admin();
    local_queue(&c, "lp").await;
    let s = register(&c, "waiter", &["lp"], 1).await;
    // Empty queue: the claim answers empty when its wait is over.
    assert!(
        claim(&c, &s, 1, Duration::from_millis(50))
            .await
            .runs
            .is_empty()
    );
    // A launch while the claim is parked answers it: it waits up to a minute, so an
    // answer with the run can only come from the launch's wake-up.
    let (c2, s2) = (c.clone(), s.clone());
    let waiter = tokio::spawn(async move { claim(&c2, &s2, 1, Duration::from_secs(60)).await });
    t.wait_parked(Waiter::Claim, 1).await;
    let run = c.launch(&launch_cmd("lp", &["true"])).await.unwrap();
    let got = waiter.await.unwrap();
    assert_eq!(
        got.runs.len(),
        1,
        "the parked claim was not woken by the launch"
    );
    assert_eq!(got.runs[0].run.id, run.id);
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
    // A parked claim (waiting up to a minute) answers with the stop request: only the
    // stop's wake-up can make it answer before its wait is over.
    let (c2, s2) = (c.clone(), s.clone());
    let waiter = tokio::spawn(async move { claim(&c2, &s2, 1, Duration::from_secs(60)).await });
    t.wait_parked(Waiter::Claim, 1).await;
    let stopped = c.stop_run(&run.id, Some("enough".into())).await.unwrap();
    assert_eq!(stopped.state, RunState::Stopping);
    assert!(stopped.state_reason.contains("enough"));
    let got = waiter.await.unwrap();
    assert_eq!(
        got.stop,
        vec![run.id.clone()],
        "the parked claim missed the stop"
    );
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
    // The follower has read the (empty) log and waits: what follows reaches it only
    // through wake-ups (its own re-check comes after 15 s, past the deadline below).
    t.wait_parked(Waiter::LogFollower, 1).await;
    for i in 0..3 {
        c.append_logs(
            &run.id,
            &LogBatch {
                warnings: Vec::new(),
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
                wait_ms: 60_000,
            },
        )
        .await
    });
    t.wait_parked(Waiter::Claim, 1).await;
    // The claim would wait a minute, longer than the shutdown grace (10 s): only the
    // shutdown's release can answer it.
    t.stop().await;
    let r = waiter.await.unwrap();
    let r = r.expect("the waiting claim is answered (empty), not cut");
    assert!(r.runs.is_empty() && r.stop.is_empty());
}

// ---------------------------------------------------------------------------------
// Agents lose their sessions with their owner's access; sessions; run tokens.

/// A team `ml` with a queue `ml/gpu`, a member `bob` (their key returned) and bob's
/// agent serving the team's queue.
async fn team_agent(t: &TestServer) -> (String, hoist_client::Client, AgentSession) {
    let admin = t.admin();
    let bob = admin
        .create_user(&CreateUser {
            name: "bob".into(),
            admin: false,
        })
        .await
        .unwrap();
    let key = bob.api_key.secret.expose().to_string();
    admin
        .create_team(&CreateTeam {
            name: "ml".into(),
            members: vec!["bob".into()],
        })
        .await
        .unwrap();
    admin
        .create_queue(&CreateQueue {
            name: "gpu".into(),
            entity: Some("ml".into()),
            resource: "local-process".into(),
            config: None,
            template_variables: vec![],
            prioritize: false,
            description: None,
        })
        .await
        .unwrap();
    let bob = t.client(&key);
    let s = register(&bob, "bob-agent", &["ml/gpu"], 2).await;
    (key, bob, s)
}

fn team_launch() -> LaunchRequest {
    let mut r = launch_cmd("gpu", &["true"]);
    r.entity = Some("ml".into());
    r
}

/// The agent's waiting claim ends with `session_ended` as soon as the revocation is
/// made; afterwards a run launched on the team queue is not handed to it, and its
/// claims and heartbeats keep answering `session_ended`.
async fn session_ends_at_once(
    t: &TestServer,
    bob: &hoist_client::Client,
    s: &AgentSession,
    revoke: impl std::future::Future<Output = ()>,
    why: &str,
) {
    let (b2, s2) = (bob.clone(), s.clone());
    let waiter =
        tokio::spawn(async move { try_claim(&b2, &s2.agent.id, &s2.session, 60_000).await });
    t.wait_parked(Waiter::Claim, 1).await;
    revoke.await;
    let msg = api_err(waiter.await.unwrap(), 403, ErrorCode::SessionEnded);
    assert!(msg.contains(why), "{msg}");
    let run = t.admin().launch(&team_launch()).await.unwrap();
    // Another valid key of the owner (if any) cannot revive the session either.
    let r = try_claim(&t.admin(), &s.agent.id, &s.session, 0).await;
    api_err(r, 403, ErrorCode::SessionEnded);
    let hb = try_heartbeat(&t.admin(), &s.agent.id, &s.session).await;
    api_err(hb, 403, ErrorCode::SessionEnded);
    assert_eq!(
        t.admin().get_run(&run.id).await.unwrap().state,
        RunState::Queued,
        "the agent whose owner lost access got the run"
    );
}

#[tokio::test]
async fn removed_team_member_agent_gets_no_team_runs() {
    let t = TestServer::start().await;
    let (_key, bob, s) = team_agent(&t).await;
    // While bob is a member, his agent gets the team's runs.
    let first = t.admin().launch(&team_launch()).await.unwrap();
    let got = claim(&bob, &s, 1, Duration::from_secs(5)).await;
    assert_eq!(got.runs[0].run.id, first.id);
    let admin = t.admin();
    session_ends_at_once(
        &t,
        &bob,
        &s,
        async {
            admin.remove_member("ml", "bob").await.unwrap();
        },
        "removed from team ml",
    )
    .await;
    // The run it had claimed but not started went back to the queue.
    let first = admin.get_run(&first.id).await.unwrap();
    assert_eq!(first.state, RunState::Queued, "{}", first.state_reason);
    t.stop().await;
}

#[tokio::test]
async fn membership_is_checked_fresh_on_every_claim_and_heartbeat() {
    // Membership removed behind this server's back (another replica, an operator):
    // the next claim reads it fresh, ends the session and hands nothing out.
    let t = TestServer::start().await;
    let (_key, bob, s) = team_agent(&t).await;
    let url = format!("sqlite://{}", t.dir.path().join("data/hoist.db").display());
    let mut raw = common::db::raw(&url).await;
    sqlx::query("DELETE FROM team_members WHERE team = 'ml' AND user_name = 'bob'")
        .execute(&mut raw)
        .await
        .unwrap();
    let run = t.admin().launch(&team_launch()).await.unwrap();
    let msg = api_err(
        try_claim(&bob, &s.agent.id, &s.session, 0).await,
        403,
        ErrorCode::SessionEnded,
    );
    assert!(msg.contains("ml/gpu") && msg.contains("must stop"), "{msg}");
    assert_eq!(
        t.admin().get_run(&run.id).await.unwrap().state,
        RunState::Queued
    );
    // A heartbeat checks the same way (here: a second agent of bob's).
    sqlx::query("INSERT INTO team_members (team, user_name, added_at) VALUES ('ml', 'bob', 0)")
        .execute(&mut raw)
        .await
        .unwrap();
    let s2 = register(&bob, "bob-agent-2", &["ml/gpu"], 1).await;
    sqlx::query("DELETE FROM team_members WHERE team = 'ml' AND user_name = 'bob'")
        .execute(&mut raw)
        .await
        .unwrap();
    let hb = try_heartbeat(&bob, &s2.agent.id, &s2.session).await;
    api_err(hb, 403, ErrorCode::SessionEnded);
    t.stop().await;
}

#[tokio::test]
async fn revoked_key_ends_the_agent_session() {
    let t = TestServer::start().await;
    let (key, bob, s) = team_agent(&t).await;
    let key_id = hoist_server::secrets::parse_credential(&key)
        .unwrap()
        .1
        .to_string();
    let admin = t.admin();
    session_ends_at_once(
        &t,
        &bob,
        &s,
        async {
            admin.revoke_key(&key_id).await.unwrap();
        },
        "API key it registered with",
    )
    .await;
    // The revoked key itself is refused before any session is looked at.
    api_err(bob.me().await, 401, ErrorCode::Unauthenticated);
    t.stop().await;
}

#[tokio::test]
async fn deleted_user_agent_session_ends() {
    let t = TestServer::start().await;
    let (_key, bob, s) = team_agent(&t).await;
    let admin = t.admin();
    session_ends_at_once(
        &t,
        &bob,
        &s,
        async {
            admin.delete_user("bob").await.unwrap();
        },
        "user bob, was deleted",
    )
    .await;
    api_err(bob.me().await, 401, ErrorCode::Unauthenticated);
    api_err(admin.get_user("bob").await, 404, ErrorCode::NotFound);
    // The name stays reserved.
    let msg = api_err(
        admin
            .create_user(&CreateUser {
                name: "bob".into(),
                admin: false,
            })
            .await,
        409,
        ErrorCode::Conflict,
    );
    assert!(msg.contains("deleted user"), "{msg}");
    // An admin cannot delete themselves.
    api_err(admin.delete_user("admin").await, 400, ErrorCode::BadRequest);
    t.stop().await;
}

#[tokio::test]
async fn superseded_and_unknown_sessions_are_told_apart() {
    let t = TestServer::start().await;
    let c = t.admin();
    local_queue(&c, "lp").await;
    let s1 = register(&c, "same", &["lp"], 1).await;
    let s2 = register(&c, "same", &["lp"], 1).await;
    let id = &s1.agent.id;
    // The first session was replaced by a newer registration.
    let msg = api_err(
        try_claim(&c, id, &s1.session, 0).await,
        409,
        ErrorCode::Superseded,
    );
    assert!(msg.contains("newer registration"), "{msg}");
    // A session this agent never had is not "superseded".
    let msg = api_err(
        try_claim(&c, id, "made-up-session", 0).await,
        409,
        ErrorCode::UnknownSession,
    );
    assert!(
        msg.contains("never issued") && !msg.contains("newer registration"),
        "{msg}"
    );
    // Another agent's live session is not this agent's either.
    let other = register(&c, "other", &["lp"], 1).await;
    api_err(
        try_claim(&c, id, &other.session, 0).await,
        409,
        ErrorCode::UnknownSession,
    );
    let hb = try_heartbeat(&c, id, "made-up-session").await;
    api_err(hb, 409, ErrorCode::UnknownSession);
    // The current session works.
    claim(&c, &s2, 1, Duration::from_millis(10)).await;
    t.stop().await;
}

#[tokio::test]
async fn run_tokens_stop_working_when_the_run_ends_or_goes_back() {
    let t = TestServer::start().await;
    let c = t.admin();
    local_queue(&c, "lp").await;
    let run = c.launch(&launch_cmd("lp", &["x"])).await.unwrap();
    let s = register(&c, "tok", &["lp"], 1).await;
    let first = claim(&c, &s, 1, Duration::from_secs(5))
        .await
        .runs
        .remove(0);
    let job = t.client(first.token.expose());
    job.get_run(&run.id).await.unwrap();
    // Released before it started: back in the queue; the first token is dead.
    report(&c, &s, &run.id, RunState::Queued).await.unwrap();
    let msg = api_err(job.get_run(&run.id).await, 401, ErrorCode::Unauthenticated);
    assert!(msg.contains("no longer works"), "{msg}");
    // The next attempt has its own token, which works until the run ends.
    let second = claim(&c, &s, 1, Duration::from_secs(5))
        .await
        .runs
        .remove(0);
    assert_eq!(second.run.id, run.id);
    let job2 = t.client(second.token.expose());
    api_err(job.get_run(&run.id).await, 401, ErrorCode::Unauthenticated);
    report(&c, &s, &run.id, RunState::Starting).await.unwrap();
    report(&c, &s, &run.id, RunState::Running).await.unwrap();
    job2.get_run(&run.id).await.unwrap();
    report(&c, &s, &run.id, RunState::Finished).await.unwrap();
    api_err(job2.get_run(&run.id).await, 401, ErrorCode::Unauthenticated);
    t.stop().await;
}

#[tokio::test]
async fn a_busy_store_answers_503_with_a_retry_hint() {
    let t = TestServer::start().await;
    let c = t.admin();
    local_queue(&c, "lp").await;
    // Another process holds the SQLite write lock longer than the server waits for it
    // (busy_timeout, 10 s): the launch meets SQLITE_BUSY.
    let url = format!("sqlite://{}", t.dir.path().join("data/hoist.db").display());
    let mut raw = common::db::raw(&url).await;
    sqlx::raw_sql("BEGIN EXCLUSIVE")
        .execute(&mut raw)
        .await
        .unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/runs", t.url))
        .bearer_auth(&t.admin_key)
        .json(&launch_cmd("lp", &["true"]))
        .send()
        .await
        .unwrap();
    sqlx::raw_sql("ROLLBACK").execute(&mut raw).await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("retry"),
        "{body}"
    );
    // Once the lock is gone, the same launch goes through.
    c.launch(&launch_cmd("lp", &["true"])).await.unwrap();
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_starting_together_on_postgres_share_one_admin() {
    let Some(pg) = common::db::PgDb::create().await else {
        return;
    };
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let starts = dirs.iter().map(|d| {
        let mut cfg =
            hoist_server::ServerConfig::new("127.0.0.1:0".parse().unwrap(), d.path().join("data"));
        cfg.database_url = Some(pg.url.clone());
        hoist_server::Server::start(cfg)
    });
    let servers: Vec<_> = futures::future::join_all(starts)
        .await
        .into_iter()
        .map(|r| r.expect("every replica starts"))
        .collect();
    let created: Vec<_> = servers
        .iter()
        .filter_map(|s| s.admin_key_created.clone())
        .collect();
    assert_eq!(created.len(), 1, "exactly one replica creates the admin");
    let key = std::fs::read_to_string(&created[0]).unwrap();
    // The admin key works on every replica.
    for s in &servers {
        let c = hoist_client::Client::new(
            &format!("http://{}", s.addr),
            Some(hoist_client::Secret::new(key.trim().to_string())),
        )
        .unwrap();
        assert_eq!(c.list_users().await.unwrap().len(), 1);
    }
    for s in servers {
        s.shutdown().await;
    }
    pg.drop_db().await;
}

/// An admin key file that cannot be written refuses the start, saying what to do, and
/// creates no admin (whose key would be lost): the next start, with a writable path,
/// bootstraps.
#[tokio::test]
async fn an_unwritable_admin_key_file_creates_no_admin() {
    let d = tempfile::tempdir().unwrap();
    let cfg = |key: std::path::PathBuf| {
        let mut c =
            hoist_server::ServerConfig::new("127.0.0.1:0".parse().unwrap(), d.path().join("data"));
        c.admin_key_file = Some(key);
        c
    };
    let missing = d.path().join("no-such-dir/admin.key");
    let err = match hoist_server::Server::start(cfg(missing.clone())).await {
        Err(e) => e,
        Ok(_) => panic!("started with an admin key file in a missing directory"),
    };
    let msg = err.to_string();
    assert!(msg.contains(&missing.display().to_string()), "{msg}");
    assert!(msg.contains("the admin user was not created"), "{msg}");
    assert!(msg.contains("--admin-key-file"), "{msg}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the cause is kept"
    );
    let good = d.path().join("admin.key");
    let s = hoist_server::Server::start(cfg(good.clone()))
        .await
        .unwrap();
    assert_eq!(s.admin_key_created.as_deref(), Some(good.as_path()));
    assert_eq!(
        std::fs::read_dir(d.path()).unwrap().count(),
        2,
        "no temporary file left"
    );
    s.shutdown().await;
}

#[tokio::test]
async fn requeues_are_bounded_by_the_server_setting() {
    let t = TestServer::start_with(|c| c.max_requeues = 1).await;
    let c = t.admin();
    local_queue(&c, "lp").await;
    let run = c.launch(&launch_cmd("lp", &["x"])).await.unwrap();
    let s = register(&c, "pre", &["lp"], 1).await;
    // Preempted once: back in the queue.
    claim(&c, &s, 1, Duration::from_secs(5)).await;
    report(&c, &s, &run.id, RunState::Starting).await.unwrap();
    report(&c, &s, &run.id, RunState::Running).await.unwrap();
    let r = report(&c, &s, &run.id, RunState::Queued).await.unwrap();
    assert_eq!(r.state, RunState::Queued);
    // Preempted again: one re-queue is all this server allows, so it fails.
    claim(&c, &s, 1, Duration::from_secs(5)).await;
    report(&c, &s, &run.id, RunState::Starting).await.unwrap();
    let r = report(&c, &s, &run.id, RunState::Queued).await.unwrap();
    assert_eq!(r.state, RunState::Failed, "{}", r.state_reason);
    let f = r.failure.expect("a failure");
    assert!(
        f.message.contains("handed to agents 2 times") && f.message.contains("at most 1 times"),
        "{}",
        f.message
    );
    t.stop().await;
}
