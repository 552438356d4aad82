//! hoist-testkit's `browser` (feature `browser`) against Debian's chromium and
//! chromedriver: a page served on 127.0.0.1 is read, clicked (a same-origin script
//! changes a text) and photographed, at the desktop and at a phone's size; a test that
//! panics leaves no process behind.
//!
//! Run: `HOIST_TEST_CHROMEDRIVER=/usr/bin/chromedriver HOIST_TEST_CHROMIUM=/usr/bin/chromium
//! cargo test -p hoist-testkit --features browser --test browser` (skipped without them).

use std::path::Path;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::response::Html;
use axum::routing::get;
use hoist_testkit::browser::{Browser, WINDOW};
use hoist_testkit::require_browser;

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>hoist-testkit browser self-test</title>
<style>
  body { font-family: "DejaVu Sans", sans-serif; margin: 2rem; }
  #status { font-size: 1.5rem; color: #0a5; }
  button { font-size: 1.2rem; padding: 0.5rem 1rem; }
</style>
<script src="/app.js" defer></script>
</head>
<body>
<h1 id="greeting">Hello from hoist</h1>
<p id="status">not clicked</p>
<button id="go" type="button">Click me</button>
</body>
</html>
"#;

const SCRIPT: &str = r#"let clicks = 0;
document.getElementById("go").addEventListener("click", () => {
  clicks += 1;
  document.getElementById("status").textContent = `clicked ${clicks} time(s)`;
});
document.body.dataset.ready = "yes";
"#;

/// Serves the page and its script on 127.0.0.1 until the task is dropped.
async fn serve() -> (String, tokio::task::JoinHandle<()>) {
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route(
            "/app.js",
            get(|| async { ([(CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let url = format!("http://{}/", listener.local_addr().expect("address"));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

/// The PNG's width and height, after checking its signature.
fn png_size(path: &Path) -> (u32, u32) {
    let png = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
    assert_eq!(&png[12..16], b"IHDR", "{}: no IHDR first", path.display());
    let be = |b: &[u8]| u32::from_be_bytes(b.try_into().expect("4 bytes"));
    (be(&png[16..20]), be(&png[20..24]))
}

#[tokio::test]
async fn reads_clicks_and_screenshots_a_page() {
    require_browser!();
    let t0 = Instant::now();
    let (url, server) = serve().await;
    let browser = Browser::start("reads_clicks_and_screenshots_a_page")
        .await
        .expect("browser");
    let started = t0.elapsed();

    browser.goto(&url).await.expect("goto");
    browser
        .wait_for("body[data-ready]", Duration::from_secs(30))
        .await
        .expect("the script ran");
    let greeting = browser
        .wait_for("#greeting", Duration::from_secs(30))
        .await
        .expect("greeting");
    assert_eq!(greeting.text().await.expect("text"), "Hello from hoist");
    assert_eq!(
        browser
            .wait_for("#status", Duration::from_secs(5))
            .await
            .expect("status")
            .text()
            .await
            .expect("text"),
        "not clicked"
    );

    let button = browser
        .wait_for("#go", Duration::from_secs(5))
        .await
        .expect("button");
    button.click().await.expect("click");
    browser
        .wait_for_text("#status", "clicked 1 time(s)")
        .await
        .expect("the click changed the text");
    button.click().await.expect("click");
    let status = browser
        .wait_for_text("p", "clicked 2")
        .await
        .expect("a second click");
    assert_eq!(
        status.attr("id").await.expect("id").as_deref(),
        Some("status")
    );

    // Failures say what was looked for and what was there.
    let err = browser
        .wait_for("#nothing-here", Duration::from_millis(300))
        .await
        .expect_err("no such element");
    assert!(err.to_string().contains("#nothing-here"), "{err}");

    let desktop = browser.screenshot("desktop").await.expect("screenshot");
    assert!(desktop.starts_with(browser.output_dir()), "{desktop:?}");
    assert!(desktop.ends_with("reads_clicks_and_screenshots_a_page/desktop.png"));
    let viewport = browser.viewport_size().await.expect("viewport");
    assert_eq!(viewport.0, WINDOW.0);
    assert_eq!(png_size(&desktop), viewport);

    browser
        .set_viewport_size(390, 844)
        .await
        .expect("phone size");
    let phone = browser.screenshot("phone").await.expect("screenshot");
    assert_eq!(png_size(&phone), (390, 844));
    browser
        .set_window_size(WINDOW.0, WINDOW.1)
        .await
        .expect("desktop size");
    assert_eq!(browser.viewport_size().await.expect("viewport"), viewport);

    // The fantoccini client is there too (Deref).
    assert_eq!(
        browser.title().await.expect("title"),
        "hoist-testkit browser self-test"
    );

    let pids = browser.pids();
    assert!(
        pids.len() >= 3,
        "watchdog, chromedriver, chromium: {pids:?}"
    );
    browser.close().await.expect("close");
    for pid in pids {
        assert!(!alive(pid), "pid {pid} still running after close");
    }
    server.abort();
    eprintln!(
        "self-test: browser started in {started:?}, whole test {:?}",
        t0.elapsed()
    );
}

/// A live (not zombie) process.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let state = s.get(s.rfind(')')? + 1..)?.split_whitespace().next()?;
            Some(state != "Z")
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn a_panicking_test_leaves_no_process() {
    require_browser!();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let test = tokio::spawn(async move {
        let browser = Browser::start("a_panicking_test_leaves_no_process")
            .await
            .expect("browser");
        tx.send(browser.pids()).expect("send");
        panic!("this panic is the test's (the browser must go with it)");
    });
    let err = test.await.expect_err("the task panicked");
    assert!(err.is_panic());
    let pids = rx.await.expect("the browser started");
    assert!(
        pids.len() >= 3,
        "watchdog, chromedriver, chromium: {pids:?}"
    );
    for pid in pids {
        assert!(!alive(pid), "pid {pid} still running after the panic");
    }
}
