//! The run pages without a browser: `/runs` (filters, paging), `/runs/{id}` (what was
//! launched, timeline, backend, log tail), Stop / Cancel with CSRF, access (others'
//! runs are 404s), escaping, the log's server-sent events and its pages.

mod common;

use std::time::{Duration, Instant};

use common::web::WebClient;
use common::{TestServer, claim, launch_cmd, local_queue, register, report};
use futures::StreamExt;
use hoist_core::api::*;
use hoist_core::run::RunState;
use hoist_server::dispatch::Waiter;
use reqwest::StatusCode;
use serde_json::json;

const XSS: &str = "<script>alert(1)</script>";
/// As askama escapes it.
const XSS_ESCAPED: &str = "&#60;script&#62;alert(1)&#60;/script&#62;";

fn line(text: &str, stream: LogStream) -> LogLine {
    LogLine {
        ts: chrono::Utc::now(),
        stream,
        text: text.to_string(),
    }
}

fn batch(session: &AgentSession, lines: Vec<LogLine>) -> LogBatch {
    LogBatch {
        session: Some(session.session.clone()),
        lines,
        warnings: vec![],
    }
}

/// A running run on queue `q` of the admin, held by agent `a1`.
async fn running_run(ts: &TestServer, req: LaunchRequest) -> (Run, AgentSession) {
    let c = ts.admin();
    let run = c.launch(&req).await.unwrap();
    let s = register(&c, "a1", &["q"], 1).await;
    let claimed = claim(&c, &s, 1, Duration::from_secs(5)).await;
    assert_eq!(claimed.runs.len(), 1);
    report(&c, &s, &run.id, RunState::Starting).await.unwrap();
    report(&c, &s, &run.id, RunState::Running).await.unwrap();
    (run, s)
}

/// The text of the first element with `id="…"` up to its closing tag's `<`.
fn text_of(html: &str, id: &str) -> String {
    let needle = format!("id=\"{id}\"");
    let i = html
        .find(&needle)
        .unwrap_or_else(|| panic!("no #{id} in {html}"));
    let open_end = html[i..].find('>').unwrap() + i + 1;
    let close = html[open_end..].find('<').unwrap() + open_end;
    html[open_end..close].to_string()
}

/// The `data-o` offsets of the log lines of a page, in order.
fn log_offsets(html: &str) -> Vec<u64> {
    html.split("class=\"line log-line ")
        .skip(1)
        .map(|l| {
            let i = l.find("data-o=\"").unwrap() + 8;
            let j = l[i..].find('"').unwrap() + i;
            l[i..j].parse().unwrap()
        })
        .collect()
}

#[tokio::test]
async fn the_run_page_shows_the_launch_timeline_backend_and_log() {
    let ts = TestServer::start().await;
    let c = ts.admin();
    local_queue(&c, "q").await;
    let mut req = launch_cmd("q", &["python", "train.py"]);
    req.name = Some(XSS.into());
    req.args = vec!["--lr".into(), "0.1".into(), "it's".into()];
    req.env = [
        ("API_TOKEN".to_string(), "sup3r-s3cret-value".to_string()),
        ("PLAIN".to_string(), "visible-value".to_string()),
    ]
    .into_iter()
    .collect();
    req.config = Some(json!({"lr": 0.1, "note": "<b>bold</b>"}));
    req.priority = Some(hoist_core::run::Priority::High);
    let (run, s) = running_run(&ts, req).await;
    c.append_logs(
        &run.id,
        &batch(
            &s,
            vec![
                line("hello from the job", LogStream::Stdout),
                line(XSS, LogStream::Stderr),
                line("agent note", LogStream::System),
            ],
        ),
    )
    .await
    .unwrap();

    let mut w = WebClient::sign_in(&ts.url, &ts.admin_key).await;
    let p = w.get(&format!("/runs/{}", run.id)).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    let b = &p.body;
    // HTML in the name and in log lines is text.
    assert!(!b.contains(XSS), "raw HTML from the run: {b}");
    assert_eq!(text_of(b, "run-name"), XSS_ESCAPED);
    assert!(
        b.contains(&format!("<span class=\"n\">2</span>{XSS_ESCAPED}</div>")),
        "{b}"
    );
    assert!(
        b.contains("&#60;b&#62;bold&#60;/b&#62;"),
        "config escaped: {b}"
    );
    assert_eq!(text_of(b, "run-state"), "running");
    assert!(b.contains("class=\"badge st-active\" data-state=\"running\""));
    // Log lines: numbered, with their stream's class.
    assert_eq!(log_offsets(b), vec![0, 1, 2]);
    assert!(b.contains("class=\"line log-line stderr\" data-o=\"1\""));
    assert!(b.contains("class=\"line log-line system\" data-o=\"2\""));
    assert!(
        b.contains("data-live=\"1\""),
        "a running run's log is followed"
    );
    // What was launched; the secret is masked.
    assert!(b.contains("python train.py"), "{b}");
    assert!(
        b.contains("--lr 0.1 &#39;it&#39;\\&#39;&#39;s&#39;"),
        "arguments as a shell takes them: {b}"
    );
    assert!(b.contains("API_TOKEN") && !b.contains("sup3r-s3cret-value"));
    assert!(b.contains("visible-value"));
    assert!(b.contains("high"), "priority");
    // The timeline: every state with its actor and reason.
    let timeline = &b[b.find("id=\"timeline\"").unwrap()..];
    for st in ["queued", "claimed", "starting", "running"] {
        assert!(
            timeline.contains(&format!("data-to=\"{st}\"")),
            "{st}: {timeline}"
        );
    }
    assert!(timeline.contains("by agent") && timeline.contains("by server"));
    // The backend: the agent holding it and how to find the process.
    let backend = &b[b.find("id=\"run-backend\"").unwrap()..];
    assert!(backend.contains("a1 ("), "{backend}");
    assert!(backend.contains(&format!("HOIST_RUN_ID={}", run.id)));
    // Stop, not Cancel, for a running run; both forms carry the CSRF token.
    assert!(shown(b, "stop-form") && !shown(b, "cancel-form"));
    assert!(b.contains(&format!(
        "action=\"/runs/{}/stop\" id=\"stop-form\" data-confirm=",
        run.id
    )));
    assert!(b.contains(&format!("name=\"_csrf\" value=\"{}\"", w.csrf)));
    for id in ["timeline", "log", "log-search", "load-earlier"] {
        assert!(b.contains(&format!("id=\"{id}\"")), "#{id}");
    }
    // The script is served under its hashed name.
    let js = b
        .split("<script src=\"")
        .filter_map(|s| s.split('"').next())
        .find(|s| s.contains("/logs."))
        .expect("logs.js is included");
    assert_eq!(w.get(js).await.status, StatusCode::OK);

    // The list shows it, escaped, with its queue, priority and who launched it.
    let list = w.get("/runs").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(!list.body.contains(XSS));
    assert!(list.body.contains(XSS_ESCAPED));
    assert!(list.body.contains(&format!("href=\"/runs/{}\"", run.id)));
    assert!(list.body.contains("admin/q") && list.body.contains(">admin<"));

    // A failed run shows the stage of its failure on its timeline.
    report_failure(&c, &s, &run.id).await;
    let p = w.get(&format!("/runs/{}", run.id)).await;
    assert!(p.body.contains("build stage"), "{}", p.body);
    assert!(p.body.contains("id=\"run-failure\""));
    assert!(
        p.body.contains("data-live=\"0\""),
        "an ended run is not followed"
    );
    assert!(!shown(&p.body, "stop-form"));
    ts.stop().await;
}

async fn report_failure(c: &hoist_client::Client, s: &AgentSession, run: &str) {
    c.update_run(
        run,
        &RunUpdate {
            session: s.session.clone(),
            state: RunState::Failed,
            reason: "the image build failed".into(),
            exit_code: None,
            failure: Some(Failure {
                stage: hoist_core::run::FailureStage::Build,
                message: "docker build exited with 1".into(),
                log_tail: vec!["step 3/7 failed".into()],
            }),
            built: None,
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn another_users_run_is_not_found_anywhere() {
    let ts = TestServer::start().await;
    let c = ts.admin();
    local_queue(&c, "q").await;
    let run = c.launch(&launch_cmd("q", &["true"])).await.unwrap();
    let bob = ts.user("bob").await;
    let key = bob
        .create_key(&CreateApiKey {
            name: "web".into(),
            user: None,
        })
        .await
        .unwrap();
    let mut w = WebClient::sign_in(&ts.url, key.secret.expose()).await;
    for path in [
        format!("/runs/{}", run.id),
        format!("/runs/{}/log/page?before=10", run.id),
        format!("/runs/{}/log/events?offset=0", run.id),
    ] {
        let p = w.get(&path).await;
        assert_eq!(p.status, StatusCode::NOT_FOUND, "{path}: {}", p.body);
        assert!(p.body.contains("no run with id"), "{path}: {}", p.body);
    }
    for action in ["stop", "cancel"] {
        let p = w
            .post_form(&format!("/runs/{}/{action}", run.id), &[])
            .await;
        assert_eq!(p.status, StatusCode::NOT_FOUND, "{action}");
    }
    assert_eq!(
        c.get_run(&run.id).await.unwrap().state,
        RunState::Queued,
        "bob changed nothing"
    );
    let list = w.get("/runs").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(!list.body.contains(&run.id), "{}", list.body);
    assert!(list.body.contains("id=\"runs-empty\""));
    // Nor by naming the queue.
    let p = w.get("/runs?queue=admin/q").await;
    assert_eq!(p.status, StatusCode::NOT_FOUND, "{}", p.body);
    ts.stop().await;
}

#[tokio::test]
async fn stop_and_cancel_need_the_csrf_token_and_come_back_to_the_run() {
    let ts = TestServer::start().await;
    let c = ts.admin();
    local_queue(&c, "q").await;
    let queued = c.launch(&launch_cmd("q", &["true"])).await.unwrap();
    let mut w = WebClient::sign_in(&ts.url, &ts.admin_key).await;
    let page = w.get(&format!("/runs/{}", queued.id)).await;
    assert!(shown(&page.body, "cancel-form") && !shown(&page.body, "stop-form"));

    // Without the token: refused, nothing changes.
    let cancel = format!("/runs/{}/cancel", queued.id);
    let p = w.post_raw(&cancel, &[]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    let p = w.post_raw(&cancel, &[("_csrf", "forged")]).await;
    assert_eq!(p.status, StatusCode::FORBIDDEN);
    assert_eq!(c.get_run(&queued.id).await.unwrap().state, RunState::Queued);
    // With it: cancelled, and back on the run's page.
    let p = w.post_form(&cancel, &[]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    let back = p.location.unwrap();
    assert_eq!(back, format!("/runs/{}?done=cancel", queued.id));
    assert_eq!(
        c.get_run(&queued.id).await.unwrap().state,
        RunState::Cancelled
    );
    let after = w.get(&back).await;
    assert_eq!(text_of(&after.body, "run-state"), "cancelled");
    assert!(after.body.contains("id=\"run-flash\""));
    assert!(!shown(&after.body, "cancel-form"));
    // Again: the API's refusal, on the run's page.
    let p = w.post_form(&cancel, &[]).await;
    assert_eq!(p.status, StatusCode::CONFLICT);
    assert!(p.body.contains("class=\"flash bad\""), "{}", p.body);
    assert!(p.body.contains("already ended"), "{}", p.body);
    assert_eq!(text_of(&p.body, "run-name"), queued.id);

    // Stop a running run.
    let (run, _s) = running_run(&ts, launch_cmd("q", &["sleep", "100"])).await;
    let stop = format!("/runs/{}/stop", run.id);
    assert_eq!(w.post_raw(&stop, &[]).await.status, StatusCode::FORBIDDEN);
    assert_eq!(c.get_run(&run.id).await.unwrap().state, RunState::Running);
    w.get(&format!("/runs/{}", run.id)).await;
    let p = w.post_form(&stop, &[]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER, "{}", p.body);
    assert_eq!(
        p.location.as_deref(),
        Some(format!("/runs/{}?done=stop", run.id).as_str())
    );
    let got = c.get_run(&run.id).await.unwrap();
    assert_eq!(got.state, RunState::Stopping);
    let t = got.timeline.unwrap();
    assert!(
        t.last().unwrap().reason.contains("stop requested by admin"),
        "{t:?}"
    );
    ts.stop().await;
}

/// Reads server-sent events from a response until `until` says stop (or the stream
/// ends); fails after 20 s.
async fn read_events(
    res: reqwest::Response,
    mut until: impl FnMut(&[(String, String)]) -> bool,
) -> (Vec<(String, String)>, bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut body = res.bytes_stream();
    let mut buf = String::new();
    let mut events: Vec<(String, String)> = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, body.next())
            .await
            .unwrap_or_else(|_| panic!("events so far: {events:?}"));
        let Some(chunk) = chunk else {
            return (events, true);
        };
        buf.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let ev: String = buf.drain(..end + 2).collect();
            let mut kind = "message".to_string();
            let mut data = String::new();
            for l in ev.lines() {
                if let Some(k) = l.strip_prefix("event: ") {
                    kind = k.to_string();
                } else if let Some(d) = l.strip_prefix("data: ") {
                    data = d.to_string();
                }
            }
            if !data.is_empty() {
                events.push((kind, data));
            }
        }
        if until(&events) {
            return (events, false);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_events_stream_lines_as_they_come_then_end_with_the_run() {
    let ts = TestServer::start().await;
    let c = ts.admin();
    local_queue(&c, "q").await;
    let (run, s) = running_run(&ts, launch_cmd("q", &["x"])).await;
    c.append_logs(&run.id, &batch(&s, vec![line("before", LogStream::Stdout)]))
        .await
        .unwrap();
    let w = WebClient::sign_in(&ts.url, &ts.admin_key).await;
    let http = reqwest::Client::new();
    let url = format!("{}/runs/{}/log/events?offset=1", ts.url, run.id);
    let res = http
        .get(&url)
        .header("cookie", w.session.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    // The follower has read the log up to date and waits for a wake-up.
    ts.wait_parked(Waiter::LogFollower, 1).await;
    let reader = tokio::spawn(read_events(res, |evs| evs.iter().any(|(k, _)| k == "end")));
    for i in 0..3 {
        c.append_logs(
            &run.id,
            &batch(
                &s,
                (0..50)
                    .map(|j| line(&format!("{i}-{j} {XSS}"), LogStream::Stderr))
                    .collect(),
            ),
        )
        .await
        .unwrap();
    }
    report(&c, &s, &run.id, RunState::Finished).await.unwrap();
    let (events, closed) = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .unwrap()
        .unwrap();
    // The state when following starts and each change, as `state` events.
    let states: Vec<String> = events
        .iter()
        .filter(|(k, _)| k == "state")
        .map(|(_, d)| {
            serde_json::from_str::<serde_json::Value>(d).unwrap()["state"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        states.first().map(String::as_str),
        Some("running"),
        "{states:?}"
    );
    assert_eq!(
        states.last().map(String::as_str),
        Some("finished"),
        "{states:?}"
    );
    let events: Vec<(String, String)> = events.into_iter().filter(|(k, _)| k != "state").collect();
    let (end, lines) = events.split_last().unwrap();
    assert_eq!(end.0, "end");
    let end: serde_json::Value = serde_json::from_str(&end.1).unwrap();
    assert_eq!(end["state"], "finished");
    assert_eq!(end["class"], "st-ok");
    assert_eq!(end["next_offset"], 151);
    assert_eq!(
        lines.len(),
        150,
        "from offset 1: the line before is not sent"
    );
    for (i, (kind, data)) in lines.iter().enumerate() {
        assert_eq!(kind, "message");
        let l: StoredLogLine = serde_json::from_str(data).unwrap();
        assert_eq!(l.offset, i as u64 + 1);
        assert_eq!(l.stream, LogStream::Stderr);
        assert_eq!(l.text, format!("{}-{} {XSS}", i / 50, i % 50));
    }
    // The stream closes after `end` (EventSource would reconnect otherwise).
    if !closed {
        let res = http
            .get(&url)
            .header("cookie", w.session.clone().unwrap())
            .send()
            .await
            .unwrap();
        let (evs, closed) = read_events(res, |_| false).await;
        assert!(closed, "{evs:?}");
        assert_eq!(evs.last().unwrap().0, "end");
    }

    // A reconnecting EventSource resumes after the last id it saw.
    let res = http
        .get(&url)
        .header("cookie", w.session.clone().unwrap())
        .header("last-event-id", "149")
        .send()
        .await
        .unwrap();
    let (evs, closed) = read_events(res, |_| false).await;
    assert!(closed);
    let offsets: Vec<u64> = evs
        .iter()
        .filter(|(k, _)| k == "message")
        .map(|(_, d)| serde_json::from_str::<StoredLogLine>(d).unwrap().offset)
        .collect();
    assert_eq!(offsets, vec![149, 150]);

    // Without a session: no stream (a redirect to sign in).
    let res = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_log_opens_at_its_tail_and_pages_back_without_reading_the_rest() {
    const N: u64 = 200_000;
    let ts = TestServer::start().await;
    let c = ts.admin();
    local_queue(&c, "q").await;
    let (run, _s) = running_run(&ts, launch_cmd("q", &["x"])).await;
    let logs = &ts.state().logs;
    for b in 0..N / 10_000 {
        let lines = (b * 10_000..(b + 1) * 10_000)
            .map(|i| line(&format!("line {i:06} of a long log"), LogStream::Stdout))
            .collect();
        logs.append(&run.id, lines).await.unwrap();
    }
    // Spoil every stored chunk that ends before line 199,000: a view that read any
    // of them would fail (the reader checks each chunk's record count).
    let store = &ts.state().store;
    let chunks = store.log_chunks_from(&run.id, 0, 100_000).await.unwrap();
    assert!(chunks.len() > 20, "{} chunks", chunks.len());
    let dir = ts.state().cfg.log_dir();
    let mut spoiled = 0;
    for ch in chunks.iter().filter(|ch| ch.end_line() <= N - 1000) {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join(&ch.seg_key))
            .unwrap();
        f.seek(SeekFrom::Start(ch.seg_offset)).unwrap();
        f.write_all(&vec![b'#'; ch.bytes as usize]).unwrap();
        spoiled += 1;
    }
    assert!(spoiled > 10);
    let early = c.read_logs(&run.id, 0, Some(10)).await;
    assert!(
        early.is_err(),
        "the spoiled start of the log cannot be read"
    );

    let mut w = WebClient::sign_in(&ts.url, &ts.admin_key).await;
    let p = w.get(&format!("/runs/{}", run.id)).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    let offsets = log_offsets(&p.body);
    assert_eq!(offsets.len(), 500);
    assert_eq!(offsets[0], N - 500);
    assert_eq!(*offsets.last().unwrap(), N - 1);
    assert!(p.body.contains(&format!("data-first=\"{}\"", N - 500)));
    assert!(p.body.contains(&format!("data-next=\"{N}\"")));
    assert!(p.body.contains(&format!(
        "<span class=\"n\">{N}</span>line {:06} of a long log",
        N - 1
    )));
    assert!(
        p.body
            .contains(&format!("href=\"/runs/{}?before={}#log\"", run.id, N - 500))
    );

    // Earlier lines by pages, as logs.js asks for them (JSON)…
    let page = w
        .get(&format!("/runs/{}/log/page?before={}", run.id, N - 500))
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let page: LogPage = serde_json::from_str(&page.body).unwrap();
    assert_eq!(page.lines.len(), 500);
    assert_eq!(page.lines[0].offset, N - 1000);
    assert_eq!(page.lines[499].offset, N - 501);
    assert_eq!(page.next_offset, N - 500);
    // …and without JS (the link's page).
    let p = w.get(&format!("/runs/{}?before={}", run.id, N - 500)).await;
    assert_eq!(p.status, StatusCode::OK);
    let offsets = log_offsets(&p.body);
    assert_eq!((offsets[0], offsets[499]), (N - 1000, N - 501));
    assert!(
        p.body.contains("data-live=\"0\""),
        "a page back is not followed"
    );
    assert!(p.body.contains("id=\"load-newer\""));
    ts.stop().await;
}

#[tokio::test]
async fn the_runs_list_filters_by_state_and_queue_and_pages_by_cursor() {
    let ts = TestServer::start().await;
    let c = ts.admin();
    local_queue(&c, "q").await;
    local_queue(&c, "other").await;
    let mut ids = Vec::new();
    for i in 0..55 {
        let mut req = launch_cmd("q", &["true"]);
        req.name = Some(format!("run-{i:02}"));
        ids.push(c.launch(&req).await.unwrap().id);
    }
    let o = c.launch(&launch_cmd("other", &["true"])).await.unwrap();
    c.cancel_run(&o.id).await.unwrap();

    let mut w = WebClient::sign_in(&ts.url, &ts.admin_key).await;
    let p = w.get("/runs?queue=admin/q").await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);
    let rows = p.body.matches("class=\"run-row\"").count();
    assert_eq!(rows, 50);
    // Newest first.
    let first = p.body.find("run-54").unwrap();
    assert!(first < p.body.find("run-53").unwrap());
    assert!(!p.body.contains(&o.id));
    assert!(p.body.contains("value=\"admin/q\""), "the filter is kept");
    let at = p
        .body
        .find("\" id=\"runs-older\"")
        .expect("a link to older runs");
    let href = p.body[..at].rfind("href=\"").unwrap() + 6;
    let older = p.body[href..at].replace("&#38;", "&").replace("&amp;", "&");
    assert!(
        older.contains("queue=admin/q") && older.contains("before="),
        "{older}"
    );
    let p2 = w.get(&older).await;
    assert_eq!(p2.status, StatusCode::OK);
    assert_eq!(p2.body.matches("class=\"run-row\"").count(), 5);
    assert!(p2.body.contains("run-00") && !p2.body.contains("run-54"));
    assert!(!p2.body.contains("id=\"runs-older\""));
    assert!(p2.body.contains("id=\"runs-newest\""));

    // By state: the select auto-submits the plain GET form.
    let p = w.get("/runs?state=cancelled").await;
    assert!(p.body.contains("data-autosubmit"));
    assert_eq!(p.body.matches("class=\"run-row\"").count(), 1);
    assert!(p.body.contains(&o.id));
    assert!(p.body.contains("<option value=\"cancelled\" selected>"));
    let p = w.get("/runs?state=cancelled&queue=q").await;
    assert_eq!(p.body.matches("class=\"run-row\"").count(), 0);
    assert!(p.body.contains("No runs match."));

    // Bad input: a clear page, not a crash.
    for (path, status, says) in [
        (
            "/runs?state=nope",
            StatusCode::BAD_REQUEST,
            "unknown run state",
        ),
        ("/runs?before=zzz", StatusCode::BAD_REQUEST, "not a cursor"),
        ("/runs?queue=admin/none", StatusCode::NOT_FOUND, "none"),
        ("/runs/nope", StatusCode::NOT_FOUND, "no run with id"),
        (
            &format!("/runs/{}/log/page?before=x", ids[0]),
            StatusCode::BAD_REQUEST,
            "line number",
        ),
        (
            &format!("/runs/{}/log/events?offset=-1", ids[0]),
            StatusCode::BAD_REQUEST,
            "line number",
        ),
    ] {
        let p = w.get(path).await;
        assert_eq!(p.status, status, "{path}: {}", p.body);
        assert!(p.body.contains("<!doctype html>"), "{path}");
        assert!(p.body.contains(says), "{path}: {}", p.body);
    }
    ts.stop().await;
}

/// Whether the form `id` is on the page and not `hidden` (the page's script shows
/// Stop or Cancel as the run's state changes; the server renders the one that applies).
fn shown(body: &str, id: &str) -> bool {
    body.contains(&format!("id=\"{id}\" data-confirm="))
}
