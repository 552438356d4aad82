//! Launch-time input cannot read the agent's environment: a run launched through a real
//! server with `${…}` in its template values and resource args is claimed like an agent
//! claims it, and the agent's own macro expansion ([`hoist_agent::macros::apply`]) gives
//! the text back as written, while the queue owner's macros still expand.

use std::time::Duration;

use hoist_agent::macros::{self, MacroContext};
use hoist_client::{Client, Secret};
use hoist_core::api::*;
use hoist_core::template::parse_spec;
use hoist_server::{Server, ServerConfig};
use serde_json::json;

#[tokio::test]
async fn template_values_and_resource_args_are_not_expanded() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        dir.path().join("data"),
    ))
    .await
    .unwrap();
    let key = std::fs::read_to_string(server.admin_key_created.clone().unwrap()).unwrap();
    let c = Client::new(
        &format!("http://{}", server.addr),
        Some(Secret::new(key.trim())),
    )
    .unwrap();
    c.create_queue(&CreateQueue {
        name: "lp".into(),
        entity: None,
        resource: "local-process".into(),
        config: Some(json!({"env": {
            "FROM_VALUE": "{{v}}",
            "OWNER": "${run_id}:{{v}}",
            "EDGE": "{{dollar}}{MY_PLAIN}",
        }})),
        template_variables: vec![
            parse_spec("v:string=x").unwrap(),
            parse_spec("dollar:string=").unwrap(),
        ],
        prioritize: false,
        description: None,
    })
    .await
    .unwrap();
    let run = c
        .launch(&LaunchRequest {
            queue: "lp".into(),
            entry_point: Some(vec!["true".into()]),
            template_values: [
                ("v".to_string(), json!("${MY_PLAIN}")),
                ("dollar".to_string(), json!("$")),
            ]
            .into(),
            resource_args: Some(json!({"env": {"FROM_ARGS": "${PATH}"}})),
            ..Default::default()
        })
        .await
        .unwrap();

    // Claimed as an agent claims it.
    let session = c
        .register_agent(&RegisterAgent {
            name: "macros".into(),
            host: "test".into(),
            version: hoist_core::VERSION.into(),
            queues: vec!["lp".into()],
            entity: None,
            max_jobs: 1,
        })
        .await
        .unwrap();
    let claimed = c
        .claim(
            &session.agent.id,
            &ClaimRequest {
                session: session.session.clone(),
                max: 1,
                wait_ms: Duration::from_secs(10).as_millis() as u64,
            },
        )
        .await
        .unwrap();
    assert_eq!(claimed.runs.len(), 1);
    let claimed = &claimed.runs[0].run;
    assert_eq!(claimed.id, run.id);

    // The agent's environment has every variable asked for.
    let env = |name: &str| match name {
        "MY_PLAIN" => Some("agent-plain-value".to_string()),
        "PATH" => Some("/agent/bin".to_string()),
        _ => None,
    };
    let ctx = MacroContext {
        project: "default",
        entity: "admin",
        run_id: &claimed.id,
        run_name: &claimed.name,
        image_uri: None,
        env: &env,
        allow: &[],
    };
    let (config, report) = macros::apply(&claimed.resource_config, &ctx);
    assert_eq!(
        config["env"],
        json!({
            "FROM_VALUE": "${MY_PLAIN}",
            "OWNER": format!("{}:${{MY_PLAIN}}", claimed.id),
            "EDGE": "${MY_PLAIN}",
            "FROM_ARGS": "${PATH}",
        })
    );
    assert_eq!(
        report.substituted.iter().collect::<Vec<_>>(),
        ["run_id"],
        "only the owner's macro: {}",
        report.summary()
    );
    server.shutdown().await;
}
