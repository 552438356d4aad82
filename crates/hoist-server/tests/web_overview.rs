//! The overview page (`/`) without a browser: its three SVG charts hold the user's
//! numbers (and only theirs), names are escaped inside the SVG, the window can be
//! chosen, and bad input gets an error page.

mod common;

use std::time::Duration;

use common::web::WebClient;
use common::{TestServer, claim, launch_cmd, local_queue, register, report};
use hoist_core::api::CreateApiKey;
use hoist_core::resource::ResourceType;
use hoist_core::run::RunState;
use hoist_server::store::queues::NewQueue;
use hoist_server::store::stats::BenchQueue;
use reqwest::StatusCode;

/// The text of the element with `id="…"` (up to the next `<`).
fn text_of(html: &str, id: &str) -> String {
    let needle = format!("id=\"{id}\"");
    let i = html
        .find(&needle)
        .unwrap_or_else(|| panic!("no #{id} in the page"));
    let rest = &html[i..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest[start..].find('<').unwrap() + start;
    rest[start..end].trim().to_string()
}

/// A new API key of the client's user, to sign in with.
async fn key_of(c: &hoist_client::Client) -> String {
    c.create_key(&CreateApiKey {
        name: "web".into(),
        user: None,
    })
    .await
    .unwrap()
    .secret
    .expose()
    .to_string()
}

/// The `<section id="…">…</section>` of a chart.
fn section<'a>(html: &'a str, id: &str) -> &'a str {
    let i = html
        .find(&format!("<section class=\"card chart-card\" id=\"{id}\""))
        .unwrap_or_else(|| panic!("no chart {id}"));
    let end = html[i..].find("</section>").unwrap() + i;
    &html[i..end]
}

#[tokio::test]
async fn the_overview_draws_the_users_runs() {
    let ts = TestServer::start().await;
    let alice = ts.user("alice").await;
    local_queue(&alice, "train").await;
    let clock = ts.state().clock.clone();
    // One run waits 2 min, runs 30 s and finishes; one fails at once; one waits.
    let r1 = alice.launch(&launch_cmd("train", &["true"])).await.unwrap();
    clock.advance(Duration::from_secs(120));
    let s = register(&alice, "gpu-1", &["train"], -1).await;
    assert_eq!(
        claim(&alice, &s, 1, Duration::ZERO).await.runs[0].run.id,
        r1.id
    );
    report(&alice, &s, &r1.id, RunState::Starting)
        .await
        .unwrap();
    report(&alice, &s, &r1.id, RunState::Running).await.unwrap();
    clock.advance(Duration::from_secs(25));
    report(&alice, &s, &r1.id, RunState::Finished)
        .await
        .unwrap();
    let r2 = alice
        .launch(&launch_cmd("train", &["false"]))
        .await
        .unwrap();
    claim(&alice, &s, 1, Duration::ZERO).await;
    report(&alice, &s, &r2.id, RunState::Starting)
        .await
        .unwrap();
    report(&alice, &s, &r2.id, RunState::Running).await.unwrap();
    report(&alice, &s, &r2.id, RunState::Failed).await.unwrap();
    alice.launch(&launch_cmd("train", &["true"])).await.unwrap();
    // Bob's runs are not Alice's business.
    let bob = ts.user("bob").await;
    local_queue(&bob, "bobs-queue").await;
    for _ in 0..5 {
        bob.launch(&launch_cmd("bobs-queue", &["true"]))
            .await
            .unwrap();
    }

    let mut web = WebClient::sign_in(&ts.url, &key_of(&alice).await).await;
    let p = web.get("/").await;
    assert_eq!(p.status, StatusCode::OK);
    let html = &p.body;
    assert!(
        p.headers
            .get("server-timing")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("app;dur=")),
        "{:?}",
        p.headers
    );
    assert!(!html.contains("style="), "no inline style");
    assert!(!html.contains("<script>"), "no inline script");

    assert_eq!(text_of(html, "kpi-launched"), "3");
    assert_eq!(text_of(html, "kpi-queued"), "1");
    assert_eq!(text_of(html, "kpi-ok"), "1");
    assert_eq!(text_of(html, "kpi-bad"), "1");

    // 1. Runs by state per hour: stacked bars of three groups, 24 hours.
    let runs = section(html, "chart-runs");
    assert!(runs.contains("<svg class=\"chart\""), "{runs}");
    assert!(runs.contains("role=\"img\""));
    assert!(runs.contains("aria-labelledby=\"chart-runs-title chart-runs-desc\""));
    assert!(
        runs.contains("<title id=\"chart-runs-title\">Runs launched per hour in the last 24 hours")
    );
    assert!(
        runs.contains("3 runs launched in the last 24 hours"),
        "{runs}"
    );
    for class in ["bar-queued", "bar-ok", "bar-bad"] {
        assert_eq!(
            runs.matches(&format!("<rect class=\"{class}\"")).count(),
            1,
            "{class}: {runs}"
        );
    }
    assert!(!runs.contains("<rect class=\"bar-active\""));
    assert!(runs.contains("hour launched (UTC)"), "x axis label");
    assert!(runs.contains(">runs</text>"), "y axis label");
    assert!(runs.contains("class=\"legend\""));
    assert!(runs.contains("<details id=\"chart-runs-table\">"));
    assert_eq!(runs.matches("<tr><td>").count(), 24, "a table row per hour");

    // 2. Waits: Alice's queue, p95 about 2 min (the 2-minute wait), p50 short.
    let waits = section(html, "chart-waits");
    assert!(waits.contains("data-queue=\"alice/train\""), "{waits}");
    assert!(!waits.contains("bobs-queue"));
    assert!(waits.contains("<rect class=\"p95\""));
    assert!(waits.contains("<rect class=\"p50\""));
    assert!(waits.contains("alice/train: p95 2 min"), "{waits}");
    assert!(
        waits.contains("<td>alice/train</td><td class=\"num\">2</td>"),
        "{waits}"
    );
    assert!(waits.contains("wait from launch to start (log scale)"));

    // 3. Durations: two runs ended, one of 25 s.
    let durs = section(html, "chart-durations");
    assert_eq!(durs.matches("<rect class=\"bar-ok\"").count(), 2, "{durs}");
    assert!(durs.contains("20 s – 30 s: 1 runs"), "{durs}");
    assert!(durs.contains("How long the 2 runs launched"), "{durs}");

    // The admin sees Bob's runs too.
    let mut admin = WebClient::sign_in(&ts.url, &ts.admin_key).await;
    let p = admin.get("/").await;
    assert_eq!(text_of(&p.body, "kpi-launched"), "8");
    ts.stop().await;
}

#[tokio::test]
async fn names_are_escaped_inside_the_svg() {
    let ts = TestServer::start().await;
    let alice = ts.user("alice").await;
    // The API refuses such names; the store takes anything, and the page must not trust it.
    let store = &ts.state().store;
    let evil = "<script>alert(1)</script>";
    let q = store
        .create_queue(
            NewQueue {
                entity: "alice".into(),
                name: evil.into(),
                resource: ResourceType::LocalProcess,
                config: serde_json::json!({}),
                template_variables: vec![],
                prioritize: false,
                description: String::new(),
            },
            ts.state().now(),
        )
        .await
        .unwrap();
    store
        .bench_seed_runs(
            &[BenchQueue {
                id: q.id,
                entity: "alice".into(),
                name: evil.into(),
                launched_by: "alice".into(),
            }],
            200,
            ts.state().now(),
        )
        .await
        .unwrap();
    let mut web = WebClient::sign_in(&ts.url, &key_of(&alice).await).await;
    let p = web.get("/").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(!p.body.contains("<script>alert"), "{}", p.body);
    let waits = section(&p.body, "chart-waits");
    assert!(
        waits.contains("alice/&#60;script&#62;alert(1)&#60;/script&#62;")
            || waits.contains("alice/&lt;script&gt;alert(1)&lt;/script&gt;"),
        "the name shows as text: {waits}"
    );
    assert!(
        !waits.contains("<script"),
        "not in the label, its title or the table"
    );
    // Seeded over the last 24 hours; the window starts on the hour 23 hours ago.
    let launched: u64 = text_of(&p.body, "kpi-launched").parse().unwrap();
    assert!((180..=200).contains(&launched), "{launched}");
    ts.stop().await;
}

#[tokio::test]
async fn the_window_can_be_chosen_and_bad_ones_get_an_error_page() {
    let ts = TestServer::start().await;
    let mut web = WebClient::sign_in(&ts.url, &ts.admin_key).await;
    let p = web.get("/?hours=6").await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.body.contains("Runs launched in the last 6 hours"));
    assert!(p.body.contains("href=\"/?hours=6\" aria-current=\"page\""));
    assert_eq!(
        section(&p.body, "chart-runs").matches("<tr><td>").count(),
        6
    );
    // Nothing launched: the charts say so.
    assert!(p.body.contains("No runs launched in the last 6 hours"));
    assert!(p.body.contains("has started yet"));
    let p = web.get("/?hours=168").await;
    assert!(p.body.contains("the last 7 days"));

    for bad in ["/?hours=abc", "/?hours=0", "/?hours=1000", "/?hours=-1"] {
        let p = web.get(bad).await;
        assert_eq!(p.status, StatusCode::BAD_REQUEST, "{bad}: {}", p.body);
        assert!(p.body.contains("hours"), "{bad}: {}", p.body);
        assert!(p.body.contains("id=\"error-message\""), "an error page");
    }
    // Not signed in: to the sign-in page.
    let mut anon = WebClient::new(&ts.url);
    let p = anon.get("/?hours=6").await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    ts.stop().await;
}
