//! The queue pages without a browser: create through the form (problems at their
//! lines), validation as you type, access, edit, delete, escaping.

mod common;

use common::TestServer;
use common::web::WebClient;
use hoist_core::api::{CreateQueue, CreateTeam};
use reqwest::StatusCode;
use serde_json::json;

const BAD_K8S: &str =
    "spec:\n  template:\n    spec:\n      containers:\n        - image: 5\n          name: main\n";

#[tokio::test]
async fn a_queue_created_through_the_form_exists_and_is_listed() {
    let ts = TestServer::start().await;
    let mut c = WebClient::sign_in(&ts.url, &ts.admin_key).await;
    let form = c.get("/queues/new").await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(
        form.body.contains("A team queue is shared"),
        "the seed's hint"
    );
    assert!(
        form.body.contains("gpus: all"),
        "prefilled with the docker example"
    );
    let p = c
        .post_form(
            "/queues/new",
            &[
                ("entity", "admin"),
                ("name", "gpu"),
                ("resource", "docker"),
                ("config", "gpus: all\nenv:\n  - MODE=${mode}\n"),
                ("description", "GPU box"),
                ("prioritize", "true"),
                ("var_name", "mode"),
                ("var_type", "string"),
                ("var_default", "fast"),
                ("var_enum", "fast, slow"),
                ("var_name", ""),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert_eq!(p.location.as_deref(), Some("/queues/admin/gpu"));
    let q = ts.admin().get_queue("admin", "gpu").await.unwrap();
    assert!(q.prioritize);
    assert_eq!(q.template_variables.len(), 1);
    assert_eq!(q.template_variables[0].choices.as_ref().unwrap().len(), 2);
    assert_eq!(q.config["gpus"], "all");

    let list = c.get("/queues").await;
    assert!(
        list.body.contains("data-queue=\"admin/gpu\""),
        "{}",
        list.body
    );
    let page = c.get("/queues/admin/gpu?tab=config").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("gpus: all"));
    assert!(page.body.contains("one of fast, slow"));
}

#[tokio::test]
async fn a_bad_config_comes_back_with_each_problem_at_its_line() {
    let ts = TestServer::start().await;
    let c = WebClient::sign_in(&ts.url, &ts.admin_key).await;
    let mut c = c;
    c.get("/queues/new").await;
    let p = c
        .post_form(
            "/queues/new",
            &[
                ("entity", "admin"),
                ("name", "k"),
                ("resource", "kubernetes"),
                ("config", BAD_K8S),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", p.body);
    assert!(
        p.body
            .contains("line 5: spec.template.spec.containers[0].image"),
        "{}",
        p.body
    );
    assert!(p.body.contains("image: 5"), "the typed config is kept");
    assert!(
        ts.admin().get_queue("admin", "k").await.is_err(),
        "nothing stored"
    );

    // Not YAML at all: the parser's line.
    let p = c
        .post_form(
            "/queues/new",
            &[
                ("entity", "admin"),
                ("name", "k"),
                ("resource", "docker"),
                ("config", "gpus: all\nenv: [a\n"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(p.body.contains("data-line=\""), "{}", p.body);

    // A bad name and a bad config: both shown, not only the first the API met.
    let p = c
        .post_form(
            "/queues/new",
            &[
                ("entity", "admin"),
                ("name", "x y"),
                ("resource", "kubernetes"),
                ("config", BAD_K8S),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(p.body.contains("invalid queue name"), "{}", p.body);
    assert!(
        p.body
            .contains("line 5: spec.template.spec.containers[0].image"),
        "{}",
        p.body
    );

    // A bad name and a bad variable, with the other fields kept.
    let p = c
        .post_form(
            "/queues/new",
            &[
                ("entity", "admin"),
                ("name", "bad name!"),
                ("resource", "docker"),
                ("config", "{}"),
                ("var_name", "n"),
                ("var_type", "int"),
                ("var_min", "ten"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(p.body.contains("min must be a number"), "{}", p.body);
}

#[tokio::test]
async fn validation_as_you_type_answers_problems_with_lines() {
    let ts = TestServer::start().await;
    let mut c = WebClient::sign_in(&ts.url, &ts.admin_key).await;
    c.get("/queues/new").await;
    let body = json!({"entity": "admin", "name": "k", "resource": "kubernetes", "config": BAD_K8S, "vars": []});
    let p = c.post_json("/queues/validate", &body).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    let v: serde_json::Value = serde_json::from_str(&p.body).unwrap();
    assert_eq!(v["ok"], false);
    let first = &v["problems"][0];
    assert_eq!(first["line"], 5, "{v}");
    assert_eq!(first["path"], "spec.template.spec.containers[0].image");
    let good =
        json!({"entity": "admin", "name": "k", "resource": "docker", "config": "gpus: all\n"});
    let v: serde_json::Value =
        serde_json::from_str(&c.post_json("/queues/validate", &good).await.body).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert!(
        ts.admin().get_queue("admin", "k").await.is_err(),
        "validation stores nothing"
    );

    // Without the CSRF header: refused.
    let mut other = WebClient::sign_in(&ts.url, &ts.admin_key).await;
    other.csrf = "wrong".into();
    assert_eq!(
        other.post_json("/queues/validate", &good).await.status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn a_personal_queue_is_invisible_to_another_user_and_a_team_queue_is_shared() {
    let ts = TestServer::start().await;
    let admin = ts.admin();
    let bob = ts.user("bob").await;
    ts.user("carol").await;
    admin
        .create_team(&CreateTeam {
            name: "ml".into(),
            members: vec!["bob".into(), "carol".into()],
        })
        .await
        .unwrap();
    let mk = |entity: &str, name: &str| CreateQueue {
        name: name.into(),
        entity: Some(entity.into()),
        resource: "docker".into(),
        config: None,
        template_variables: vec![],
        prioritize: false,
        description: None,
    };
    bob.create_queue(&mk("bob", "private")).await.unwrap();
    bob.create_queue(&mk("ml", "shared")).await.unwrap();
    let carol_key = admin
        .create_key(&hoist_core::api::CreateApiKey {
            name: "web".into(),
            user: Some("carol".into()),
        })
        .await
        .unwrap();
    let mut carol = WebClient::sign_in(&ts.url, carol_key.secret.expose()).await;
    let list = carol.get("/queues").await;
    assert!(list.body.contains("data-queue=\"ml/shared\""));
    assert!(!list.body.contains("bob/private"), "{}", list.body);
    assert_eq!(
        carol.get("/queues/bob/private").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        carol.get("/queues/bob/private/edit").await.status,
        StatusCode::NOT_FOUND
    );
    let del = carol.post_form("/queues/bob/private/delete", &[]).await;
    assert_eq!(del.status, StatusCode::NOT_FOUND);
    assert!(bob.get_queue("bob", "private").await.is_ok());
    assert_eq!(
        carol.get("/queues/ml/shared?tab=agents").await.status,
        StatusCode::OK
    );
    // The entity dropdown offers carol's own entity and her team.
    let form = carol.get("/queues/new").await;
    assert!(
        form.body.contains("<option value=\"carol\"") && form.body.contains("<option value=\"ml\"")
    );
    assert!(!form.body.contains("<option value=\"bob\""));
}

#[tokio::test]
async fn edit_and_delete_go_through_the_api_checks_and_need_the_csrf_token() {
    let ts = TestServer::start().await;
    let mut c = WebClient::sign_in(&ts.url, &ts.admin_key).await;
    c.get("/queues/new").await;
    let p = c
        .post_form(
            "/queues/new",
            &[
                ("entity", "admin"),
                ("name", "q"),
                ("resource", "docker"),
                ("config", "gpus: all\n"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let edit = c.get("/queues/admin/q/edit").await;
    assert!(edit.body.contains("gpus: all"), "{}", edit.body);
    let p = c
        .post_form(
            "/queues/admin/q/edit",
            &[("config", "memory: 8g\n"), ("description", "d")],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert_eq!(
        ts.admin().get_queue("admin", "q").await.unwrap().config["memory"],
        "8g"
    );
    let p = c
        .post_form("/queues/admin/q/edit", &[("config", "privileged: true\n")])
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(p.body.contains("line 1: privileged"), "{}", p.body);
    assert_eq!(
        c.post_raw("/queues/admin/q/delete", &[]).await.status,
        StatusCode::FORBIDDEN
    );
    assert!(ts.admin().get_queue("admin", "q").await.is_ok());
    assert_eq!(
        c.post_form("/queues/admin/q/delete", &[("force", "1")])
            .await
            .status,
        StatusCode::SEE_OTHER
    );
    assert!(ts.admin().get_queue("admin", "q").await.is_err());
}

#[tokio::test]
async fn html_in_a_description_or_a_config_value_shows_as_text() {
    let ts = TestServer::start().await;
    let mut c = WebClient::sign_in(&ts.url, &ts.admin_key).await;
    c.get("/queues/new").await;
    let evil = "<script>alert(1)</script>";
    let p = c
        .post_form(
            "/queues/new",
            &[
                ("entity", "admin"),
                ("name", "x"),
                ("resource", "docker"),
                ("config", &format!("env:\n  - NOTE={evil}\n")),
                ("description", evil),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    for path in [
        "/queues/admin/x?tab=config",
        "/queues/admin/x/edit",
        "/queues",
    ] {
        let page = c.get(path).await;
        assert!(!page.body.contains(evil), "{path}: {}", page.body);
    }
    let page = c.get("/queues/admin/x?tab=config").await.body;
    assert!(
        page.contains("&lt;script&gt;alert(1)") || page.contains("&#60;script&#62;alert(1)"),
        "shown, escaped: {page}"
    );
}

#[tokio::test]
async fn the_list_shows_depth_agents_and_the_oldest_wait() {
    let ts = TestServer::start().await;
    let admin = ts.admin();
    admin
        .create_queue(&CreateQueue {
            name: "lq".into(),
            entity: None,
            resource: "local-process".into(),
            config: None,
            template_variables: vec![],
            prioritize: false,
            description: None,
        })
        .await
        .unwrap();
    for _ in 0..2 {
        admin
            .launch(&common::launch_cmd("lq", &["true"]))
            .await
            .unwrap();
    }
    common::register(&admin, "a1", &["admin/lq"], 4).await;
    let mut c = WebClient::sign_in(&ts.url, &ts.admin_key).await;
    let list = c.get("/queues").await.body;
    let row = &list[list.find("data-queue=\"admin/lq\"").expect("the row")..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(row.contains("queue-queued\">2<"), "{row}");
    assert!(row.contains("queue-agents\">1<"), "{row}");
    assert!(
        !row.contains("none waiting"),
        "the oldest run's wait is shown: {row}"
    );
    assert!(row.contains("<time datetime="), "last activity: {row}");
}
