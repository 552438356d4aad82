//! The jobs pages and the launch form without a browser: lists, access, launching
//! with overrides, problems shown at their fields, CSRF, safe rendering.
//! (`crates/hoist/tests/web_ui.rs` drives the drawer in Chromium.)

mod common;

use common::TestServer;
use common::web::{Page, WebClient};
use hoist_client::Client;
use hoist_core::api::*;
use hoist_core::run::Priority;
use hoist_core::template::{TemplateVariable, VarType};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A new user: an API client and the key (to sign in to the UI with).
async fn user(ts: &TestServer, name: &str) -> (Client, String) {
    let key = ts
        .admin()
        .create_user(&CreateUser {
            name: name.into(),
            admin: false,
        })
        .await
        .unwrap()
        .api_key
        .secret
        .expose()
        .to_string();
    (ts.client(&key), key)
}

fn job(name: &str, source: JobSource) -> CreateJob {
    CreateJob {
        name: name.into(),
        entity: None,
        source,
        description: None,
    }
}

fn image(i: &str) -> JobSource {
    JobSource::Image { image: i.into() }
}

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn git(entry_point: &[&str]) -> JobSource {
    JobSource::Git {
        repo: "https://github.com/me/train.git".into(),
        git_ref: Some("main".into()),
        commit: COMMIT.into(),
        entry_point: entry_point.iter().map(|s| s.to_string()).collect(),
        build_context: None,
        dockerfile: None,
    }
}

fn var(name: &str, kind: VarType, default: Option<Value>) -> TemplateVariable {
    TemplateVariable {
        name: name.into(),
        kind,
        default,
        min: None,
        max: None,
        choices: None,
        description: None,
    }
}

/// A local-process queue with typed template variables: gpus (int 0..8, default 1),
/// size (small|large, default small), lr (float 0..1, default 0.1), tag (string, no
/// default).
async fn queue_with_vars(c: &Client, name: &str) -> Queue {
    c.create_queue(&CreateQueue {
        name: name.into(),
        entity: None,
        resource: "local-process".into(),
        config: None,
        template_variables: vec![
            TemplateVariable {
                min: Some(0.0),
                max: Some(8.0),
                description: Some("GPUs per run".into()),
                ..var("gpus", VarType::Int, Some(json!(1)))
            },
            TemplateVariable {
                choices: Some(vec![json!("small"), json!("large")]),
                ..var("size", VarType::String, Some(json!("small")))
            },
            TemplateVariable {
                min: Some(0.0),
                max: Some(1.0),
                ..var("lr", VarType::Float, Some(json!(0.1)))
            },
            var("tag", VarType::String, None),
        ],
        prioritize: true,
        description: None,
    })
    .await
    .unwrap()
}

/// The markup of the first element with this id up to the end of its field (the
/// `<div class="field">` it sits in): what is shown next to it.
fn field_of<'a>(body: &'a str, id: &str) -> &'a str {
    let i = body
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in\n{body}"));
    let rest = &body[i..];
    let end = rest.find("</div>").unwrap_or(rest.len());
    &rest[..end]
}

/// Whether `raw` appears in the page as text: HTML-escaped (askama writes `&#60;`;
/// `&lt;` would do as well).
fn shows_as_text(body: &str, raw: &str) -> bool {
    let esc = |lt: &str, gt: &str, q: &str| {
        raw.replace('&', "&#38;")
            .replace('<', lt)
            .replace('>', gt)
            .replace('"', q)
    };
    body.contains(&esc("&#60;", "&#62;", "&#34;")) || body.contains(&esc("&lt;", "&gt;", "&quot;"))
}

fn run_id(p: &Page) -> String {
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let to = p.location.as_deref().expect("a redirect");
    to.strip_prefix("/runs/")
        .unwrap_or_else(|| panic!("redirected to {to}"))
        .to_string()
}

#[tokio::test]
async fn jobs_page_lists_jobs_and_a_job_page_its_versions() {
    let ts = TestServer::start().await;
    let (alice, key) = user(&ts, "alice").await;
    let (bob, _) = user(&ts, "bob").await;
    alice
        .create_job(&job("train", image("ghcr.io/me/train:1")))
        .await
        .unwrap();
    alice
        .create_job(&job("train", image("ghcr.io/me/train:2")))
        .await
        .unwrap();
    alice
        .create_job(&job("eval", git(&["python", "eval.py"])))
        .await
        .unwrap();
    bob.create_job(&job("secret-job", image("bob/x:1")))
        .await
        .unwrap();
    queue_with_vars(&alice, "q").await;

    let mut web = WebClient::sign_in(&ts.url, &key).await;
    let p = web.get("/jobs").await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    let b = &p.body;
    assert!(b.contains("href=\"/jobs/alice/train\""), "{b}");
    assert!(
        b.contains("ghcr.io/me/train:2"),
        "the latest version's image"
    );
    assert!(b.contains(">v1<"), "the latest version");
    assert!(b.contains("git commit"), "the source kind");
    assert!(
        b.contains("https://github.com/me/train.git @ 0123456789ab"),
        "{b}"
    );
    assert!(b.contains("<code>python eval.py</code>"), "the entry point");
    assert!(b.contains("<time datetime="), "updated");
    assert!(!b.contains("secret-job"), "bob's job is not listed");
    // The Launch button: a link without JavaScript, the drawer's opener with it.
    assert!(
        b.contains(
            "href=\"/launch?job=alice/train\" data-testid=\"launch-open\" data-job=\"alice/train\" data-versions=\"v1 v0\""
        ),
        "{b}"
    );
    assert!(b.contains("<dialog class=\"drawer launch\" id=\"launch-drawer\""));
    for id in [
        "launch-queue",
        "launch-project",
        "launch-args",
        "launch-env",
        "launch-config",
        "launch-priority",
        "launch-name",
        "launch-submit",
        "var-gpus",
    ] {
        assert!(b.contains(&format!("id=\"{id}\"")), "#{id} missing");
    }
    assert!(b.contains("src=\"/assets/launch."), "launch.js is included");

    let p = web.get("/jobs/alice/train").await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    let b = &p.body;
    assert!(b.contains("id=\"version-v0\"") && b.contains("id=\"version-v1\""));
    assert!(b.contains("ghcr.io/me/train:1") && b.contains("ghcr.io/me/train:2"));
    assert!(b.contains("id=\"launch-open\""), "{b}");
    assert!(b.contains("href=\"/launch?job=alice/train%3Av0\""), "{b}");
    let p = web.get("/jobs/alice/eval").await;
    assert!(p.body.contains(COMMIT), "the full commit");
    assert!(p.body.contains("https://github.com/me/train.git"));
    assert!(p.body.contains("main"), "the ref");

    // The form as a page (the button without JavaScript).
    let p = web.get("/launch?job=alice/train:v0").await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert!(
        p.body.contains("<option value=\"v0\" selected>v0</option>"),
        "{}",
        p.body
    );
    assert!(
        p.body
            .contains("name=\"job\" id=\"launch-job\" value=\"alice/train\"")
    );
    assert!(p.body.contains("type=\"number\" id=\"var-gpus\""));
    let gpus = field_of(&p.body, "var-gpus");
    assert!(
        gpus.contains("value=\"1\"") && gpus.contains("step=\"1\" min=\"0\" max=\"8\""),
        "{gpus}"
    );
    let size = field_of(&p.body, "var-size");
    assert!(
        size.starts_with("id=\"var-size\" name=\"var.size\""),
        "{size}"
    );
    assert!(size.contains("<option value=\"small\" selected>"), "{size}");
    let lr = field_of(&p.body, "var-lr");
    assert!(
        lr.contains("step=\"any\"") && lr.contains("value=\"0.1\""),
        "{lr}"
    );
    assert!(p.body.contains("type=\"text\" id=\"var-tag\""));
    assert!(
        field_of(&p.body, "var-tag").contains(" required "),
        "no default: required"
    );
    assert!(
        p.body
            .contains("<option value=\"alice/q\" selected>alice/q · local-process</option>")
    );
    ts.stop().await;
}

#[tokio::test]
async fn others_jobs_and_queues_are_not_found() {
    let ts = TestServer::start().await;
    let (alice, _) = user(&ts, "alice").await;
    let (bob, bob_key) = user(&ts, "bob").await;
    alice
        .create_job(&job("train", image("ghcr.io/me/train:1")))
        .await
        .unwrap();
    queue_with_vars(&alice, "q").await;
    queue_with_vars(&bob, "bq").await;
    let mut web = WebClient::sign_in(&ts.url, &bob_key).await;
    let p = web.get("/jobs/alice/train").await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    assert!(p.body.contains("no job alice/train"), "{}", p.body);
    assert_eq!(
        web.get("/jobs/nobody/x").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        web.get("/launch?job=alice/train").await.status,
        StatusCode::NOT_FOUND
    );
    let jobs = web.get("/jobs").await;
    assert!(!jobs.body.contains("alice/train"));
    assert!(
        !jobs.body.contains("alice/q"),
        "alice's queue is not offered"
    );
    // Posting her job anyway: 404, nothing launched.
    let p = web
        .post_form(
            "/launch",
            &[
                ("job", "alice/train"),
                ("queue", "bob/bq"),
                ("project", "p"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::NOT_FOUND, "{}", p.body);
    // Her queue, with an image: the form again, the problem at the queue.
    let p = web
        .post_form(
            "/launch",
            &[
                ("image", "ghcr.io/x/y:1"),
                ("queue", "alice/q"),
                ("project", "p"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::NOT_FOUND, "{}", p.body);
    let q = field_of(&p.body, "launch-queue");
    assert!(
        q.contains("id=\"launch-queue-error\">no queue alice/q"),
        "{q}"
    );
    assert!(p.body.contains("id=\"launch-error\""));
    assert!(
        p.body.contains("value=\"ghcr.io/x/y:1\""),
        "the input is kept"
    );
    let runs = bob.list_runs(&Default::default()).await.unwrap();
    assert!(runs.runs.is_empty());
    ts.stop().await;
}

#[tokio::test]
async fn launch_now_lands_on_the_run_with_every_override() {
    let ts = TestServer::start().await;
    let (alice, key) = user(&ts, "alice").await;
    alice
        .create_job(&job("train", image("ghcr.io/me/train:1")))
        .await
        .unwrap();
    alice
        .create_job(&job("train", image("ghcr.io/me/train:2")))
        .await
        .unwrap();
    queue_with_vars(&alice, "q").await;
    let mut web = WebClient::sign_in(&ts.url, &key).await;
    web.get("/jobs").await;
    let p = web
        .post_form(
            "/launch",
            &[
                ("job", "alice/train"),
                ("version", "v0"),
                ("queue", "alice/q"),
                ("vars_for", "alice/q"),
                ("project", "vision"),
                ("name", "web launch"),
                ("priority", "high"),
                ("entry_point", "python\ntrain.py\n"),
                ("args", "--epochs\n3\n\n--note\r\ntwo words\n"),
                ("env", "MODE=fast\nEXTRA=a=b\n"),
                ("config", "{\"lr\": 0.01, \"layers\": [1, 2]}"),
                ("var.gpus", "4"),
                ("var.size", "large"),
                ("var.lr", "0.5"),
                ("var.tag", "exp-1"),
            ],
        )
        .await;
    let id = run_id(&p);
    let run = alice.get_run(&id).await.unwrap();
    assert_eq!(
        run.image.as_deref(),
        Some("ghcr.io/me/train:1"),
        "v0 was chosen"
    );
    let jr = run.job.clone().unwrap();
    assert_eq!(
        (
            jr.name.as_str(),
            jr.version.as_deref(),
            jr.entity.as_deref()
        ),
        ("train", Some("v0"), Some("alice"))
    );
    assert_eq!((run.entity.as_str(), run.queue.as_str()), ("alice", "q"));
    assert_eq!(run.project, "vision");
    assert_eq!(run.name, "web launch");
    assert_eq!(run.priority, Priority::High);
    assert_eq!(
        run.entry_point,
        Some(vec!["python".to_string(), "train.py".to_string()])
    );
    assert_eq!(run.args, ["--epochs", "3", "--note", "two words"]);
    assert_eq!(run.env.get("MODE").map(String::as_str), Some("fast"));
    assert_eq!(run.env.get("EXTRA").map(String::as_str), Some("a=b"));
    assert_eq!(run.config, json!({"lr": 0.01, "layers": [1, 2]}));
    assert_eq!(run.template_values["gpus"], json!(4));
    assert_eq!(run.template_values["size"], json!("large"));
    assert_eq!(run.template_values["lr"], json!(0.5));
    assert_eq!(run.template_values["tag"], json!("exp-1"));

    // The least: the latest version, the defaults, project "default".
    let p = web
        .post_form(
            "/launch",
            &[
                ("job", "alice/train"),
                ("version", "latest"),
                ("queue", "alice/q"),
                ("project", ""),
                ("var.tag", "t"),
                ("var.gpus", ""),
            ],
        )
        .await;
    let run = alice.get_run(&run_id(&p)).await.unwrap();
    assert_eq!(run.image.as_deref(), Some("ghcr.io/me/train:2"));
    assert_eq!(run.project, "default");
    assert_eq!(run.priority, Priority::Medium);
    assert_eq!(run.template_values["gpus"], json!(1), "the default");
    assert_eq!(run.config, json!({}));

    // An image, without a job.
    let p = web.get("/launch?image=ghcr.io/me/other:3").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(
        p.body
            .contains("id=\"launch-image\" name=\"image\" value=\"ghcr.io/me/other:3\""),
        "{}",
        p.body
    );
    let p = web
        .post_form(
            "/launch",
            &[
                ("image", "ghcr.io/me/other:3"),
                ("queue", "alice/q"),
                ("var.tag", "t"),
            ],
        )
        .await;
    let run = alice.get_run(&run_id(&p)).await.unwrap();
    assert_eq!(run.image.as_deref(), Some("ghcr.io/me/other:3"));
    assert_eq!(run.job, None);
    ts.stop().await;
}

#[tokio::test]
async fn a_team_job_launches_on_a_personal_queue() {
    let ts = TestServer::start().await;
    let (alice, key) = user(&ts, "alice").await;
    ts.admin()
        .create_team(&CreateTeam {
            name: "ml".into(),
            members: vec!["alice".into()],
        })
        .await
        .unwrap();
    let mut team_job = job("train", image("team/train:1"));
    team_job.entity = Some("ml".into());
    alice.create_job(&team_job).await.unwrap();
    alice
        .create_job(&job("train", image("own/train:1")))
        .await
        .unwrap();
    queue_with_vars(&alice, "q").await;
    let mut web = WebClient::sign_in(&ts.url, &key).await;
    let jobs = web.get("/jobs").await;
    assert!(jobs.body.contains("data-job=\"ml/train\""));
    let p = web
        .post_form(
            "/launch",
            &[("job", "ml/train"), ("queue", "alice/q"), ("var.tag", "t")],
        )
        .await;
    let run = alice.get_run(&run_id(&p)).await.unwrap();
    assert_eq!(run.image.as_deref(), Some("team/train:1"), "the team's job");
    assert_eq!(run.entity, "alice");
    ts.stop().await;
}

#[tokio::test]
async fn problems_show_at_their_fields_and_keep_the_input() {
    let ts = TestServer::start().await;
    let (alice, key) = user(&ts, "alice").await;
    alice
        .create_job(&job("train", image("ghcr.io/me/train:1")))
        .await
        .unwrap();
    queue_with_vars(&alice, "q").await;
    let mut web = WebClient::sign_in(&ts.url, &key).await;
    web.get("/jobs").await;
    let base = [
        ("job", "alice/train"),
        ("queue", "alice/q"),
        ("vars_for", "alice/q"),
        ("project", "vision"),
        ("args", "--epochs\n3"),
        ("env", "MODE=fast"),
        ("name", "keep me"),
    ];
    // Out of bounds: 422, the problem next to the variable, the input kept.
    let mut fields = base.to_vec();
    fields.extend([("var.gpus", "99"), ("var.tag", "t"), ("var.size", "large")]);
    let p = web.post_form("/launch", &fields).await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", p.body);
    let gpus = field_of(&p.body, "var-gpus");
    assert!(gpus.contains("value=\"99\""), "{gpus}");
    assert!(gpus.contains("aria-invalid=\"true\""), "{gpus}");
    assert!(
        gpus.contains("id=\"var-gpus-error\">value 99 for `gpus` is above its max 8"),
        "{gpus}"
    );
    assert!(p.body.contains("id=\"launch-error\""));
    assert!(field_of(&p.body, "var-size").contains("<option value=\"large\" selected>"));
    assert!(field_of(&p.body, "var-tag").contains("value=\"t\""));
    assert!(p.body.contains("id=\"launch-args\" name=\"args\""));
    assert!(p.body.contains(">--epochs\n3</textarea>"), "{}", p.body);
    assert!(p.body.contains(">MODE=fast</textarea>"));
    assert!(p.body.contains("value=\"keep me\""));
    assert!(p.body.contains("value=\"vision\""));
    assert!(
        p.body
            .contains("name=\"job\" id=\"launch-job\" value=\"alice/train\"")
    );
    assert!(
        alice
            .list_runs(&Default::default())
            .await
            .unwrap()
            .runs
            .is_empty()
    );

    // Several problems at once: bad JSON, a bad env line, a missing variable: each
    // at its field, nothing launched.
    let mut fields: Vec<(&str, &str)> = base.iter().copied().filter(|(k, _)| *k != "env").collect();
    fields.extend([
        ("config", "{\"lr\": "),
        ("env", "MODE=fast\nNOEQUALS"),
        ("var.gpus", "2"),
    ]);
    let p = web.post_form("/launch", &fields).await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", p.body);
    let b = &p.body;
    assert!(
        b.contains("id=\"launch-config-error\">the run config is not valid JSON"),
        "{b}"
    );
    assert!(
        b.contains("id=\"launch-env-error\">line 2: expected KEY=VALUE"),
        "{b}"
    );
    assert!(
        field_of(b, "var-tag")
            .contains("id=\"var-tag-error\">missing value for template variable `tag`"),
        "{b}"
    );
    assert!(
        b.contains(">{&#34;lr&#34;: </textarea>"),
        "the JSON is kept: {b}"
    );
    assert!(
        alice
            .list_runs(&Default::default())
            .await
            .unwrap()
            .runs
            .is_empty()
    );
    let p = web
        .post_form(
            "/launch",
            &[
                ("job", "alice/train"),
                ("queue", "alice/q"),
                ("project", "bad project!"),
                ("var.tag", "t"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::BAD_REQUEST, "{}", p.body);
    assert!(
        shows_as_text(
            field_of(&p.body, "launch-project"),
            "invalid project name \"bad project!\""
        ),
        "{}",
        p.body
    );
    // A version that does not exist: at the version.
    let p = web
        .post_form(
            "/launch",
            &[
                ("job", "alice/train"),
                ("version", "v7"),
                ("queue", "alice/q"),
                ("var.tag", "t"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::NOT_FOUND, "{}", p.body);
    assert!(
        field_of(&p.body, "launch-version")
            .contains("id=\"launch-version-error\">job alice/train has version v0; there is no v7"),
        "{}",
        p.body
    );
    // The queue changed without its variables being shown (no script): the form
    // again with the new queue's fields, nothing launched.
    alice
        .create_queue(&CreateQueue {
            name: "plain".into(),
            entity: None,
            resource: "local-process".into(),
            config: None,
            template_variables: vec![],
            prioritize: false,
            description: None,
        })
        .await
        .unwrap();
    let p = web
        .post_form(
            "/launch",
            &[
                ("job", "alice/train"),
                ("queue", "alice/plain"),
                ("vars_for", "alice/q"),
                ("var.gpus", "2"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", p.body);
    assert!(
        p.body
            .contains("the template variables shown were those of queue alice/q")
    );
    assert!(p.body.contains("<option value=\"alice/plain\" selected>"));
    assert!(
        p.body
            .contains("Queue alice/plain has no template variables.")
    );
    assert!(
        alice
            .list_runs(&Default::default())
            .await
            .unwrap()
            .runs
            .is_empty()
    );
    // The no-script "show the variables" button: the form again, 200.
    let p = web
        .post_form(
            "/launch",
            &[
                ("job", "alice/train"),
                ("queue", "alice/q"),
                ("vars_for", "alice/plain"),
                ("action", "refresh"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    assert!(!p.body.contains("id=\"launch-error\""));
    assert!(field_of(&p.body, "var-gpus").contains("value=\"1\""));
    ts.stop().await;
}

#[tokio::test]
async fn a_launch_without_the_csrf_token_is_refused() {
    let ts = TestServer::start().await;
    let (alice, key) = user(&ts, "alice").await;
    alice
        .create_job(&job("train", image("ghcr.io/me/train:1")))
        .await
        .unwrap();
    queue_with_vars(&alice, "q").await;
    let mut web = WebClient::sign_in(&ts.url, &key).await;
    web.get("/jobs").await;
    let fields = [
        ("job", "alice/train"),
        ("queue", "alice/q"),
        ("var.tag", "t"),
    ];
    let p = web.post_raw("/launch", &fields).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN, "{}", p.body);
    let mut wrong = fields.to_vec();
    wrong.push(("_csrf", "not-the-token"));
    assert_eq!(
        web.post_raw("/launch", &wrong).await.status,
        StatusCode::FORBIDDEN
    );
    assert!(
        alice
            .list_runs(&Default::default())
            .await
            .unwrap()
            .runs
            .is_empty()
    );
    // Not signed in: to the sign-in page.
    let anon = WebClient::new(&ts.url);
    let p = anon.post_raw("/launch", &fields).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert!(p.location.unwrap().starts_with("/login"));
    ts.stop().await;
}

#[tokio::test]
async fn html_in_jobs_and_queues_shows_as_text() {
    let ts = TestServer::start().await;
    let (alice, key) = user(&ts, "alice").await;
    let mut j = job("train", git(&["python", "<b>bold</b>"]));
    j.description = Some("<script>alert(1)</script>".into());
    alice.create_job(&j).await.unwrap();
    alice
        .create_queue(&CreateQueue {
            name: "q".into(),
            entity: None,
            resource: "local-process".into(),
            config: None,
            template_variables: vec![TemplateVariable {
                choices: Some(vec![json!("<img src=x onerror=alert(2)>"), json!("ok")]),
                description: Some("<i>desc</i>".into()),
                ..var("pick", VarType::String, Some(json!("ok")))
            }],
            prioritize: false,
            description: Some("<script>alert(3)</script>".into()),
        })
        .await
        .unwrap();
    let mut web = WebClient::sign_in(&ts.url, &key).await;
    for path in ["/jobs", "/jobs/alice/train", "/launch?job=alice/train"] {
        let p = web.get(path).await;
        assert_eq!(p.status, StatusCode::OK, "{path}: {}", p.body);
        let b = &p.body;
        for raw in ["<script>alert", "<b>bold", "<img src=x", "<i>desc"] {
            assert!(!b.contains(raw), "{path}: {raw} unescaped");
        }
        // The queue's description, its variable's description and choices: in the
        // drawer or the form on every page.
        assert!(
            shows_as_text(b, "<img src=x onerror=alert(2)>"),
            "{path}: {b}"
        );
        assert!(shows_as_text(b, "<script>alert(3)</script>"), "{path}");
        assert!(shows_as_text(b, "<i>desc</i>"), "{path}");
        if path != "/launch?job=alice/train" {
            // The job's description and entry point.
            assert!(shows_as_text(b, "<script>alert(1)</script>"), "{path}");
            assert!(shows_as_text(b, "<b>bold</b>"), "{path}: {b}");
        }
    }
    // Typed input comes back as text too.
    let p = web
        .post_form(
            "/launch",
            &[
                ("job", "alice/train"),
                ("queue", "alice/q"),
                ("name", "</textarea><script>x</script>"),
                ("args", "</textarea><script>y</script>"),
                ("var.pick", "<svg onload=z>"),
            ],
        )
        .await;
    assert_eq!(p.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", p.body);
    assert!(!p.body.contains("<script>x") && !p.body.contains("<script>y"));
    assert!(!p.body.contains("<svg"));
    assert!(shows_as_text(&p.body, "</textarea><script>y</script>"));
    assert!(
        shows_as_text(&p.body, "<svg onload=z>"),
        "the value kept, as text"
    );
    ts.stop().await;
}
