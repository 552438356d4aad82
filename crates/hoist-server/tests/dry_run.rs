//! `POST /api/v1/runs` with `dry_run`: checked exactly as a launch, answered with the
//! run it would create, and nothing is stored or handed to an agent.

mod common;

use common::*;
use hoist_core::api::*;
use hoist_core::run::RunState;
use serde_json::{Value, json};

fn queue_req(name: &str, resource: &str, config: Value) -> CreateQueue {
    CreateQueue {
        name: name.into(),
        entity: None,
        resource: resource.into(),
        config: Some(config),
        template_variables: vec![],
        prioritize: false,
        description: None,
    }
}

fn dry(req: &LaunchRequest) -> LaunchRequest {
    LaunchRequest {
        dry_run: true,
        ..req.clone()
    }
}

/// The status and body of a raw `POST /api/v1/runs`.
async fn post_launch(t: &TestServer, key: &str, body: &Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/runs", t.url))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

async fn run_count(c: &hoist_client::Client) -> usize {
    c.list_runs(&Default::default()).await.unwrap().runs.len()
}

#[tokio::test]
async fn a_dry_run_answers_the_run_a_launch_would_create_and_stores_nothing() {
    let t = TestServer::start().await;
    let c = t.admin();
    let mut q = queue_req(
        "dq",
        "docker",
        json!({"network": "none", "memory": "{{mem}}", "env": ["A=1"], "labels": {"team": "${entity_name}"}}),
    );
    q.template_variables = vec![hoist_core::template::parse_spec("mem:string=1g").unwrap()];
    c.create_queue(&q).await.unwrap();
    let agent = register(&c, "a1", &["dq"], 1).await;

    let req = LaunchRequest {
        queue: "dq".into(),
        image: Some("busybox:1".into()),
        name: Some("trial".into()),
        env: [
            ("EPOCHS".to_string(), "3".to_string()),
            ("WANDB_API_KEY".to_string(), "s3cr3t-value".to_string()),
        ]
        .into_iter()
        .collect(),
        template_values: [("mem".to_string(), json!("2g"))].into(),
        resource_args: Some(json!({"env": ["B=${HOME}"], "cpus": 2})),
        config: Some(json!({"lr": 0.1})),
        ..Default::default()
    };
    // 200, not 201: nothing was created.
    let (status, body) =
        post_launch(&t, &t.admin_key, &serde_json::to_value(dry(&req)).unwrap()).await;
    assert_eq!(status, 200, "{body}");
    let would: Run = serde_json::from_value(body).unwrap();
    assert_eq!(would.state, RunState::Queued);
    assert_eq!(would.state_reason, "dry run: nothing was enqueued");
    assert_eq!(would.attempts, 0);
    assert_eq!(would.name, "trial");
    assert_eq!(
        would.env["WANDB_API_KEY"], MASKED,
        "masked as in any answer"
    );
    assert_eq!(would.env["EPOCHS"], "3");
    // Templates filled, resource args merged (and escaped for the agent's macros), the
    // queue owner's macros left for the agent.
    assert_eq!(
        would.resource_config,
        json!({"network": "none", "memory": "2g", "env": ["B=$${HOME}"], "cpus": 2, "labels": {"team": "${entity_name}"}})
    );

    // Stored nowhere: no run, the id unknown, no agent is handed anything.
    assert_eq!(run_count(&c).await, 0);
    let e = c.get_run(&would.id).await.unwrap_err();
    assert!(
        matches!(e, hoist_client::ClientError::Api { status: 404, .. }),
        "{e}"
    );
    let claimed = c
        .claim(
            &agent.agent.id,
            &ClaimRequest {
                session: agent.session.clone(),
                max: 1,
                wait_ms: 0,
            },
        )
        .await
        .unwrap();
    assert!(claimed.runs.is_empty(), "a dry run reached an agent");

    // The real launch of the same request makes the same run.
    let real = c.launch(&req).await.unwrap();
    assert_ne!(real.id, would.id);
    assert_eq!(real.resource_config, would.resource_config);
    assert_eq!(real.resource_args, would.resource_args);
    assert_eq!(real.template_values, would.template_values);
    assert_eq!(
        (&real.image, &real.entry_point, &real.args),
        (&would.image, &would.entry_point, &would.args)
    );
    assert_eq!(real.env.0, would.env.0);
    assert_eq!(real.config, would.config);
    assert_eq!(
        (
            real.entity.as_str(),
            real.queue.as_str(),
            real.project.as_str()
        ),
        (
            would.entity.as_str(),
            would.queue.as_str(),
            would.project.as_str()
        )
    );
    assert_eq!(run_count(&c).await, 1);
    t.stop().await;
}

/// Bad input gets exactly the answer a real launch gets, and nothing is stored.
#[tokio::test]
async fn a_dry_run_refuses_what_a_launch_refuses() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let mut dq = queue_req("dq", "docker", json!({"network": "{{net}}"}));
    dq.template_variables = vec![
        hoist_core::template::parse_spec("net:string=none").unwrap(),
        hoist_core::template::parse_spec("gpus:int=1,min=0,max=8").unwrap(),
    ];
    alice.create_queue(&dq).await.unwrap();
    alice
        .create_queue(&queue_req("lp", "local-process", json!({})))
        .await
        .unwrap();
    let docker = LaunchRequest {
        queue: "dq".into(),
        image: Some("busybox:1".into()),
        ..Default::default()
    };
    let local = launch_cmd("lp", &["true"]);
    let cases: Vec<(&str, LaunchRequest)> = vec![
        (
            "no such queue",
            LaunchRequest {
                queue: "nope".into(),
                ..docker.clone()
            },
        ),
        (
            "no image",
            LaunchRequest {
                image: None,
                ..docker.clone()
            },
        ),
        (
            "image and job",
            LaunchRequest {
                job: Some(JobRef {
                    name: "j".into(),
                    version: None,
                    entity: None,
                }),
                ..docker.clone()
            },
        ),
        (
            "no such job",
            LaunchRequest {
                image: None,
                job: Some(JobRef {
                    name: "j".into(),
                    version: None,
                    entity: None,
                }),
                ..docker.clone()
            },
        ),
        (
            "bad image",
            LaunchRequest {
                image: Some("--privileged".into()),
                ..docker.clone()
            },
        ),
        (
            "reserved env",
            LaunchRequest {
                env: [("HOIST_RUN_ID".to_string(), "x".to_string())]
                    .into_iter()
                    .collect(),
                ..local.clone()
            },
        ),
        (
            "bad project",
            LaunchRequest {
                project: Some("no spaces".into()),
                ..local.clone()
            },
        ),
        (
            "no command",
            LaunchRequest {
                entry_point: None,
                ..local.clone()
            },
        ),
        (
            "config not an object",
            LaunchRequest {
                config: Some(json!([1])),
                ..local.clone()
            },
        ),
        (
            "template value out of range",
            LaunchRequest {
                template_values: [("gpus".to_string(), json!(9))].into(),
                ..docker.clone()
            },
        ),
        (
            "privileged resource args",
            LaunchRequest {
                resource_args: Some(json!({"privileged": true, "volume": ["/:/host"]})),
                ..docker.clone()
            },
        ),
        (
            "privileged template value",
            LaunchRequest {
                template_values: [("net".to_string(), json!("host"))].into(),
                ..docker.clone()
            },
        ),
        (
            "agent variable passed through",
            LaunchRequest {
                resource_args: Some(json!({"env": ["GITHUB_PAT"]})),
                ..docker.clone()
            },
        ),
        (
            "schema",
            LaunchRequest {
                resource_args: Some(json!({"memroy": "1g"})),
                ..docker.clone()
            },
        ),
    ];
    for (what, req) in cases {
        let launched = alice.launch(&req).await;
        let dried = alice.launch(&dry(&req)).await;
        match (launched, dried) {
            (
                Err(hoist_client::ClientError::Api {
                    status,
                    code,
                    message,
                    details,
                }),
                Err(hoist_client::ClientError::Api {
                    status: s2,
                    code: c2,
                    message: m2,
                    details: d2,
                }),
            ) => {
                assert!((400..500).contains(&status), "{what}: {status} {message}");
                assert_eq!(
                    (status, code, &message, &details),
                    (s2, c2, &m2, &d2),
                    "{what}"
                );
            }
            (a, b) => panic!("{what}: launch {a:?}, dry run {b:?}"),
        }
    }
    assert_eq!(run_count(&alice).await, 0);
    t.stop().await;
}

/// A request without `dry_run` does not carry the field, so a server that does not
/// know it still takes it; one that does not know it refuses a dry run (unknown field)
/// instead of enqueueing it.
#[tokio::test]
async fn dry_run_is_only_sent_when_asked_for() {
    let plain = serde_json::to_value(launch_cmd("q", &["true"])).unwrap();
    assert!(plain.get("dry_run").is_none(), "{plain}");
    let d = serde_json::to_value(dry(&launch_cmd("q", &["true"]))).unwrap();
    assert_eq!(d["dry_run"], true);
    // And the server refuses a misspelt flag rather than launching for real.
    let t = TestServer::start().await;
    let c = t.admin();
    local_queue(&c, "q").await;
    let mut body = plain.clone();
    body["dryrun"] = json!(true);
    let (status, answer) = post_launch(&t, &t.admin_key, &body).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(run_count(&c).await, 0);
    t.stop().await;
}
