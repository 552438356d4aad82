//! The web UI in a real browser: Debian's Chromium driven over WebDriver, against a
//! real `hoist server` (and a real agent) on 127.0.0.1. Each test saves screenshots
//! under `$CARGO_TARGET_DIR/test-output/<test>/` for a reviewer to look at.

mod cli_support;

use std::time::Duration;

use cli_support::{AgentProc, World};
use fantoccini::Locator;
use hoist_testkit::browser::{Browser, WAIT};
use hoist_testkit::require_browser;

/// A browser signed in to a world's server.
struct Ui {
    b: Browser,
    host: String,
}

impl Ui {
    async fn start(test: &str, host: &str) -> Ui {
        Ui {
            b: Browser::start(test).await.expect("browser starts"),
            host: host.to_string(),
        }
    }

    async fn go(&self, path: &str) {
        self.b
            .goto(&format!("{}{path}", self.host))
            .await
            .expect("navigates");
    }

    async fn sign_in(&self, key: &str) {
        self.go("/login").await;
        let field = self
            .b
            .wait_for("#api_key", WAIT)
            .await
            .expect("sign-in form");
        field.send_keys(key).await.expect("types the key");
        self.click("#sign-in").await;
        self.b
            .wait_for("#signed-in-as", WAIT)
            .await
            .expect("signed in: the header names the user");
    }

    async fn click(&self, css: &str) {
        self.b
            .wait_for(css, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Sets a field's value as typing would (an `input` event follows).
    async fn set(&self, css: &str, value: &str) {
        self.b
            .wait_for(css, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        self.b
            .execute(
                "const el = document.querySelector(arguments[0]); el.value = arguments[1]; el.dispatchEvent(new Event('input', {bubbles: true})); el.dispatchEvent(new Event('change', {bubbles: true}));",
                vec![css.into(), value.into()],
            )
            .await
            .unwrap_or_else(|e| panic!("set {css}: {e}"));
    }

    async fn text(&self, css: &str) -> String {
        self.b
            .wait_for(css, WAIT)
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .text()
            .await
            .expect("text")
    }

    async fn path(&self) -> String {
        let url = self.b.current_url().await.expect("url");
        let mut p = url.path().to_string();
        if let Some(q) = url.query() {
            p.push('?');
            p.push_str(q);
        }
        p
    }

    /// Waits until the page's path (and query) is `want`.
    async fn wait_path(&self, want: &str) {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let p = self.path().await;
            if p == want {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still at {p}, not {want}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn shot(&self, name: &str) {
        self.b.screenshot(name).await.expect("screenshot");
    }
}

fn world() -> World {
    let w = World::start();
    w.login_admin();
    w
}

const BAD_K8S: &str =
    "spec:\n  template:\n    spec:\n      containers:\n        - image: 5\n          name: main\n";

#[tokio::test(flavor = "multi_thread")]
async fn sign_in_and_create_a_queue_through_the_form_with_its_problems_at_their_lines() {
    require_browser!();
    let w = world();
    let ui = Ui::start("web_ui_create_queue", &w.host).await;
    ui.go("/queues").await;
    ui.wait_path("/login?next=/queues").await;
    ui.shot("sign-in").await;
    ui.sign_in(&w.admin_key_text()).await;
    ui.wait_path("/").await;
    ui.shot("overview").await;

    ui.go("/queues/new").await;
    ui.shot("create-queue-form").await;
    ui.set("#resource", "kubernetes").await;
    ui.set("#name", "trainer").await;
    ui.set("#config", BAD_K8S).await;
    // Validation as you type: the problem at its line, the line marked in the gutter.
    ui.b.wait_for_text(
        "#config-problems li",
        "line 5: spec.template.spec.containers[0].image",
    )
    .await
    .expect("the problem at its line");
    assert_eq!(ui.text("#config-gutter .bad").await, "5");
    ui.shot("create-queue-problem-at-line").await;
    // Saved anyway: refused by the server, the form back with the problem and the text.
    ui.click("#save-queue").await;
    ui.b.wait_for_text("#form-error", "not saved")
        .await
        .expect("refused");
    ui.b.wait_for_text("#config-problems li", "line 5")
        .await
        .expect("at its line");
    let kept =
        ui.b.find(Locator::Css("#config"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap();
    assert_eq!(kept.as_deref(), Some(BAD_K8S), "the typed config is kept");

    ui.set("#config", &BAD_K8S.replace("image: 5", "image: busybox"))
        .await;
    ui.b.wait_for_text("#validation-status", "valid")
        .await
        .expect("valid now");
    ui.click("#save-queue").await;
    ui.wait_path("/queues/admin/trainer").await;
    assert_eq!(ui.text("#queue-name").await, "trainer");
    ui.click("#tab-config").await;
    ui.b.wait_for_text("#queue-config", "busybox")
        .await
        .expect("config tab");
    ui.shot("queue-config-tab").await;
    ui.go("/queues").await;
    ui.b.wait_for_text("#queues", "trainer")
        .await
        .expect("listed");
    ui.b.set_viewport_size(390, 844).await.expect("phone size");
    ui.shot("queues-phone").await;
    ui.b.close().await.expect("browser closes");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_personal_queue_is_invisible_to_another_user() {
    require_browser!();
    let w = world();
    w.run(&["queue", "create", "mine", "--resource", "local-process"])
        .ok();
    let bob_key = w
        .run(&["user", "create", "bob"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let ui = Ui::start("web_ui_personal_queue", &w.host).await;
    ui.sign_in(&bob_key).await;
    assert_eq!(ui.text("#signed-in-as").await, "bob");
    ui.go("/queues").await;
    ui.b.wait_for("main h1", WAIT).await.unwrap();
    let body = ui.text("main").await;
    assert!(
        !body.contains("mine"),
        "bob's list shows admin's queue: {body}"
    );
    ui.go("/queues/admin/mine").await;
    ui.b.wait_for_text("h1", "Not found")
        .await
        .expect("a 404 page");
    ui.shot("others-queue-not-found").await;
    ui.b.close().await.expect("browser closes");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agents_tab_shows_the_agent_with_its_host_and_status() {
    require_browser!();
    let w = world();
    w.run(&["queue", "create", "lq", "--resource", "local-process"])
        .ok();
    let name = hoist_testkit::unique("web-agent");
    let mut agents: Vec<AgentProc> = vec![w.spawn_agent(&name, &["-q", "lq"])];
    w.wait_agents(&mut agents, &[&name]);
    let ui = Ui::start("web_ui_agents_tab", &w.host).await;
    ui.sign_in(&w.admin_key_text()).await;
    ui.go("/queues/admin/lq?tab=agents").await;
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    ui.b.wait_for_text("#agents td", &name)
        .await
        .expect("the agent's row");
    assert_eq!(ui.text("#agents .agent-host").await, host);
    assert_eq!(ui.text("#agents .agent-status").await, "polling");
    ui.shot("queue-agents-tab").await;
    ui.go("/agents").await;
    ui.b.wait_for_text("#agents td", &name)
        .await
        .expect("on the agents page");
    ui.shot("agents").await;
    ui.b.close().await.expect("browser closes");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_form_without_its_csrf_token_is_refused_and_sign_out_ends_the_session() {
    require_browser!();
    let w = world();
    let ui = Ui::start("web_ui_csrf_sign_out", &w.host).await;
    ui.sign_in(&w.admin_key_text()).await;
    // The sign-out form, stripped of its token, posted as a forged form would be.
    ui.b.execute(
        "const f = document.querySelector('form.signout'); f.querySelector('[name=_csrf]').remove(); f.submit();",
        vec![],
    )
    .await
    .unwrap();
    ui.b.wait_for_text("#error-message", "CSRF")
        .await
        .expect("refused");
    ui.shot("csrf-refused").await;
    ui.go("/").await;
    ui.b.wait_for("#signed-in-as", WAIT)
        .await
        .expect("still signed in");
    ui.click("#sign-out").await;
    ui.wait_path("/login").await;
    ui.go("/queues").await;
    ui.wait_path("/login?next=/queues").await;
    ui.shot("signed-out").await;
    ui.b.close().await.expect("browser closes");
}

const TICKER: &str = "echo '<b>bold</b><script>alert(1)</script>'\ni=0\nwhile [ $i -lt 600 ]; do i=$((i+1)); echo \"tick $i\"; sleep 0.2; done\n";

#[tokio::test(flavor = "multi_thread")]
async fn launch_from_the_drawer_watch_the_log_live_and_stop_the_run() {
    require_browser!();
    let w = world();
    w.run(&["queue", "create", "lq", "--resource", "local-process"])
        .ok();
    let src = w.dir.path().join("ticker");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("main.sh"), TICKER).unwrap();
    w.run(&[
        "job",
        "create",
        "code",
        "ticker",
        &src.to_string_lossy(),
        "--entry-point",
        "sh main.sh",
    ])
    .ok();
    let name = hoist_testkit::unique("web-runner");
    let mut agents: Vec<AgentProc> = vec![w.spawn_agent(&name, &["-q", "lq"])];
    w.wait_agents(&mut agents, &[&name]);

    let ui = Ui::start("web_ui_launch_logs_stop", &w.host).await;
    ui.sign_in(&w.admin_key_text()).await;
    ui.go("/jobs").await;
    ui.click("a[data-testid=\"launch-open\"][data-job=\"admin/ticker\"]")
        .await;
    ui.b.wait_for("#launch-drawer[open]", WAIT)
        .await
        .expect("the drawer opens");
    ui.set("#launch-queue", "admin/lq").await;
    let evil = "<img src=x id=injected>run";
    ui.set("#launch-name", evil).await;
    ui.shot("launch-drawer").await;
    ui.click("#launch-submit").await;

    // The run's page: its name as text, its log arriving while it runs.
    ui.b.wait_for_text("#run-name", evil)
        .await
        .expect("the name, as text");
    assert!(
        ui.b.find(Locator::Css("#injected")).await.is_err(),
        "a run name became an element"
    );
    ui.b.wait_for_text("#run-state", "running")
        .await
        .expect("running");
    ui.b.wait_for_text("#log .log-line", "tick 3")
        .await
        .expect("lines arrive");
    ui.b.wait_for_text("#log .log-line", "<b>bold</b><script>alert(1)</script>")
        .await
        .expect("the HTML line, as text");
    assert!(
        ui.b.find(Locator::Css("#log b")).await.is_err(),
        "a log line became markup"
    );
    let later =
        ui.b.wait_for_text("#log .log-line", "tick 15")
            .await
            .expect("live: more lines without a reload");
    assert!(later.text().await.unwrap().contains("tick 15"));
    ui.shot("run-live-log").await;

    // Stop, with its confirmation.
    ui.click("#stop-run").await;
    ui.b.accept_alert()
        .await
        .expect("the confirmation is accepted");
    ui.b.wait_for_text("#run-state", "stopped")
        .await
        .expect("stopped");
    ui.shot("run-stopped").await;
    let id = ui
        .path()
        .await
        .trim_start_matches("/runs/")
        .split(['?', '/'])
        .next()
        .unwrap()
        .to_string();
    assert_eq!(w.show_run(&id)["state"], "stopped");
    ui.b.close().await.expect("browser closes");
}
