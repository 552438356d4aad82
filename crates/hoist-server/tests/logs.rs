//! Run logs: segments in the blob store indexed in the database (both dialects), the
//! per-run quota, the byte cap of a page, follow across segments, lines stored before
//! segments, and retention.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, launch_cmd, local_queue};
use futures::StreamExt;
use hoist_core::api::*;
use hoist_core::resource::ResourceType;
use hoist_core::run::Priority;
use hoist_server::logs::{FsSegments, LogError, LogStore, MAX_LINE_BYTES, MAX_PAGE_BYTES};
use hoist_server::store::Store;
use hoist_server::store::queues::NewQueue;
use hoist_server::store::rows::RunSpec;
use hoist_server::store::runs::NewRun;
use serde_json::json;

const T0: i64 = 1_700_000_000_000;

async fn new_run(s: &Store) -> String {
    if s.get_user("u").await.unwrap().is_none() {
        s.create_user("u", false, "k", T0).await.unwrap();
    }
    let q = match s
        .create_queue(
            NewQueue {
                entity: "u".into(),
                name: "q".into(),
                resource: ResourceType::LocalProcess,
                config: json!({}),
                template_variables: vec![],
                prioritize: false,
                description: String::new(),
            },
            T0,
        )
        .await
    {
        Ok(q) => q.id,
        Err(_) => s.list_queues(None).await.unwrap()[0].id.clone(),
    };
    let id = hoist_server::secrets::new_id(12);
    s.launch(
        NewRun {
            name: id.clone(),
            id,
            queue_id: q,
            entity: "u".into(),
            queue_name: "q".into(),
            project: "p".into(),
            spec: RunSpec {
                entry_point: Some(vec!["true".into()]),
                ..Default::default()
            },
            resource: ResourceType::LocalProcess,
            resource_config: json!({}),
            priority: Priority::Medium,
            prioritize: false,
            created_by: "u".into(),
            hand_over: None,
        },
        T0,
    )
    .await
    .unwrap()
    .id
}

fn lines(n: usize, tag: &str, width: usize) -> Vec<LogLine> {
    let ts = chrono::Utc::now();
    (0..n)
        .map(|i| LogLine {
            ts,
            stream: if i % 2 == 0 {
                LogStream::Stdout
            } else {
                LogStream::Stderr
            },
            text: format!("{tag}{i:06}{}", "x".repeat(width)),
        })
        .collect()
}

/// Reads a whole log in pages of at most `max_bytes`; returns the texts.
async fn read_all(logs: &LogStore, run: &str, max_bytes: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let r = logs.read(run, at, 10_000, max_bytes).await.unwrap();
        assert!(
            r.data.len() <= max_bytes || r.count == 1,
            "page of {} bytes",
            r.data.len()
        );
        for l in r.lines().unwrap() {
            assert_eq!(l.offset, out.len() as u64, "offsets in order");
            out.push(l.text);
        }
        if r.count == 0 {
            return out;
        }
        at = r.next_offset;
    }
}

both!(segments_append_read_and_resume_in_a_new_segment);
async fn segments_append_read_and_resume_in_a_new_segment(s: Store) {
    let dir = tempfile::tempdir().unwrap();
    let seg = Arc::new(FsSegments::new(dir.path().join("logs")));
    let logs = LogStore::new(s.clone(), seg.clone(), 1 << 30);
    let run = new_run(&s).await;

    let a = logs.append(&run, lines(250, "a", 10)).await.unwrap();
    assert_eq!((a.next_offset, a.quota_reached), (250, false));
    assert_eq!(
        logs.append(&run, lines(3, "b", 0))
            .await
            .unwrap()
            .next_offset,
        253
    );
    let got = logs.read_lines(&run, 249, 10).await.unwrap();
    assert_eq!(
        got.iter().map(|l| &l.text[..4]).collect::<Vec<_>>(),
        vec!["a000", "b000", "b000", "b000"]
    );
    assert_eq!(
        got.iter().map(|l| l.offset).collect::<Vec<_>>(),
        vec![249, 250, 251, 252]
    );
    assert_eq!(got[0].stream, LogStream::Stderr);
    // An empty append says the length.
    assert_eq!(logs.append(&run, vec![]).await.unwrap().next_offset, 253);

    // Giant lines are cut, not refused.
    let big = vec![LogLine {
        ts: chrono::Utc::now(),
        stream: LogStream::Stdout,
        text: "é".repeat(20_000),
    }];
    logs.append(&run, big).await.unwrap();
    let got = logs.read_lines(&run, 253, 1).await.unwrap();
    assert!(got[0].text.len() < MAX_LINE_BYTES + 100 && got[0].text.ends_with("bytes]"));

    // About 3 MiB more in batches of various sizes: several chunks of one segment.
    for (i, n) in [700usize, 1, 3000, 50, 9000].into_iter().enumerate() {
        logs.append(&run, lines(n, &format!("c{i}-"), 200))
            .await
            .unwrap();
    }
    let chunks = s.log_chunks_from(&run, 0, 1000).await.unwrap();
    assert!(chunks.len() > 4, "{} chunks", chunks.len());
    assert_eq!(
        chunks
            .iter()
            .map(|c| &c.seg_key)
            .collect::<std::collections::HashSet<_>>()
            .len(),
        1,
        "one process appends to one segment"
    );

    // Another process (a restarted server, a replica) starts its own segment.
    let other = LogStore::new(s.clone(), seg.clone(), 1 << 30);
    let r = other.append(&run, lines(10, "d", 5)).await.unwrap();
    let total = 254 + 700 + 1 + 3000 + 50 + 9000 + 10;
    assert_eq!(r.next_offset, total as u64);
    logs.append(&run, lines(5, "e", 5)).await.unwrap();
    let chunks = s.log_chunks_from(&run, 0, 1000).await.unwrap();
    let keys: Vec<_> = chunks.iter().map(|c| c.seg_key.clone()).collect();
    let mut distinct = keys.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{distinct:?}");
    // Chunks are contiguous.
    for w in chunks.windows(2) {
        assert_eq!(w[0].end_line(), w[1].first_line);
    }

    // Everything reads back in order, whatever the page size.
    for cap in [MAX_PAGE_BYTES, 10_000] {
        let texts = read_all(&logs, &run, cap).await;
        assert_eq!(texts.len(), total + 5);
        assert!(texts[0].starts_with("a000000"));
        assert!(texts[254].starts_with("c0-000000"));
        assert!(texts[total - 10].starts_with("d000000"));
        assert!(texts[total + 4].starts_with("e000004"));
    }
    assert!(matches!(
        logs.append("nope", lines(1, "x", 0)).await,
        Err(LogError::NoRun(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_stores_a_marker_then_drops_lines_and_answers_normally() {
    const QUOTA: u64 = 64 << 10;
    let srv = TestServer::start_with(|c| c.max_log_bytes_per_run = QUOTA).await;
    let c = srv.admin();
    local_queue(&c, "q").await;
    let run = c.launch(&launch_cmd("q", &["true"])).await.unwrap();
    let batch = |tag: &str| LogBatch {
        warnings: Vec::new(),
        session: None,
        lines: lines(100, tag, 200),
    };
    let mut capped_at = None;
    for i in 0..10 {
        let page = c
            .append_logs(&run.id, &batch(&format!("b{i}-")))
            .await
            .unwrap();
        if page.quota_reached {
            capped_at = Some((i, page.next_offset));
            break;
        }
        assert_eq!(page.next_offset, 100 * (i + 1));
    }
    let (i, end) = capped_at.expect("the quota is reached within 10 batches");
    assert!(
        i >= 2 && end > 100 * i && end <= 100 * (i + 1) + 1,
        "{i} {end}"
    );
    // Later appends are answered normally, store nothing, and say so.
    let page = c.append_logs(&run.id, &batch("late-")).await.unwrap();
    assert!(page.quota_reached);
    assert_eq!(page.next_offset, end);
    // The log ends with the marker; nothing after it; it says the quota.
    let mut all = Vec::new();
    let mut at = 0;
    loop {
        let p = c.read_logs(&run.id, at, Some(10_000)).await.unwrap();
        assert!(p.quota_reached);
        if p.lines.is_empty() {
            break;
        }
        at = p.next_offset;
        all.extend(p.lines);
    }
    assert_eq!(all.len() as u64, end);
    let last = all.last().unwrap();
    assert_eq!(last.stream, LogStream::System);
    assert_eq!(
        last.text,
        "[hoist: log quota of 65536 bytes reached; later lines are dropped]"
    );
    assert!(all.iter().all(|l| !l.text.starts_with("late-")));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_never_exceeds_the_byte_cap_whatever_the_limit() {
    let srv = TestServer::start().await;
    let c = srv.admin();
    local_queue(&c, "q").await;
    let run = c.launch(&launch_cmd("q", &["true"])).await.unwrap();
    // 3 batches of 250 lines of 10 KiB: about 7.5 MiB.
    for i in 0..3 {
        c.append_logs(
            &run.id,
            &LogBatch {
                warnings: Vec::new(),
                session: None,
                lines: lines(250, &format!("p{i}-"), 10 << 10),
            },
        )
        .await
        .unwrap();
    }
    let http = reqwest::Client::new();
    let mut at = 0;
    let mut pages = 0;
    while at < 750 {
        let resp = http
            .get(format!("{}/api/v1/runs/{}/logs", srv.url, run.id))
            .query(&[("offset", at.to_string()), ("limit", "10000".into())])
            .bearer_auth(&srv.admin_key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.bytes().await.unwrap();
        assert!(
            body.len() <= MAX_PAGE_BYTES + 200,
            "a page of {} bytes",
            body.len()
        );
        let page: LogPage = serde_json::from_slice(&body).unwrap();
        assert!(!page.lines.is_empty());
        for (k, l) in page.lines.iter().enumerate() {
            assert_eq!(l.offset, at + k as u64);
        }
        assert!(!page.complete);
        at = page.next_offset;
        pages += 1;
    }
    assert_eq!(at, 750);
    assert!(pages >= 7, "{pages} pages");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_pages_end_at_the_end_and_page_backwards_within_the_byte_cap() {
    let srv = TestServer::start().await;
    let c = srv.admin();
    local_queue(&c, "q").await;
    let run = c.launch(&launch_cmd("q", &["true"])).await.unwrap();
    // Empty: an empty page at 0.
    let p = c.read_logs_tail(&run.id, 10, None).await.unwrap();
    assert!(p.lines.is_empty());
    assert_eq!(p.next_offset, 0);
    // 3000 small lines, then 200 of 10 KiB: the last 200 do not fit one page.
    for i in 0..3 {
        c.append_logs(
            &run.id,
            &LogBatch {
                warnings: Vec::new(),
                session: None,
                lines: lines(1000, &format!("s{i}-"), 10),
            },
        )
        .await
        .unwrap();
    }
    let p = c.read_logs_tail(&run.id, 10, None).await.unwrap();
    let offsets: Vec<u64> = p.lines.iter().map(|l| l.offset).collect();
    assert_eq!(offsets, (2990..3000).collect::<Vec<_>>());
    assert_eq!(p.next_offset, 3000);
    assert!(!p.complete);
    // The page before line 100, and before line 5 (fewer lines than asked for).
    let p = c.read_logs_tail(&run.id, 50, Some(100)).await.unwrap();
    assert_eq!(p.lines.first().unwrap().offset, 50);
    assert_eq!(p.lines.last().unwrap().offset, 99);
    assert_eq!(p.next_offset, 100);
    let p = c.read_logs_tail(&run.id, 50, Some(5)).await.unwrap();
    assert_eq!(
        p.lines.iter().map(|l| l.offset).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    let p = c.read_logs_tail(&run.id, 50, Some(0)).await.unwrap();
    assert!(p.lines.is_empty());
    assert_eq!(p.next_offset, 0);
    // `before` past the end is the end.
    let p = c.read_logs_tail(&run.id, 5, Some(1 << 40)).await.unwrap();
    assert_eq!(p.lines.last().unwrap().offset, 2999);

    c.append_logs(
        &run.id,
        &LogBatch {
            warnings: Vec::new(),
            session: None,
            lines: lines(200, "big-", 10 << 10),
        },
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let resp = http
        .get(format!("{}/api/v1/runs/{}/logs", srv.url, run.id))
        .query(&[("tail", "10000")])
        .bearer_auth(&srv.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await.unwrap();
    assert!(
        body.len() <= MAX_PAGE_BYTES + 200,
        "a page of {} bytes",
        body.len()
    );
    let page: LogPage = serde_json::from_slice(&body).unwrap();
    let n = page.lines.len() as u64;
    assert!((50..=100).contains(&n), "{n} lines of 10 KiB");
    assert_eq!(
        page.lines.last().unwrap().offset,
        3199,
        "the page ends at the end"
    );
    assert_eq!(page.next_offset, 3200);
    for (k, l) in page.lines.iter().enumerate() {
        assert_eq!(l.offset, 3200 - n + k as u64);
    }
    // Paging back from the first line reaches the start, each page ending where the
    // next one starts.
    let mut before = page.lines[0].offset;
    let mut pages = 1;
    while before > 0 {
        let p = c
            .read_logs_tail(&run.id, 10_000, Some(before))
            .await
            .unwrap();
        assert_eq!(p.next_offset, before);
        assert_eq!(p.lines.last().unwrap().offset, before - 1);
        before = p.lines[0].offset;
        pages += 1;
    }
    assert!(pages >= 3, "{pages}");

    // `tail` goes with `before` only; `before` needs `tail`.
    for q in [
        &[("tail", "5"), ("offset", "3")][..],
        &[("tail", "5"), ("limit", "3")],
        &[("tail", "5"), ("follow", "true")],
        &[("before", "5")],
        &[("tail", "x")],
    ] {
        let resp = http
            .get(format!("{}/api/v1/runs/{}/logs", srv.url, run.id))
            .query(q)
            .bearer_auth(&srv.admin_key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{q:?}");
    }
    // Someone who may not see the run gets a 404, as for any page.
    let bob = srv.user("bob").await;
    let e = bob.read_logs_tail(&run.id, 5, None).await.unwrap_err();
    assert!(
        matches!(e, hoist_client::ClientError::Api { status: 404, .. }),
        "{e:?}"
    );
    // The parameters are documented.
    let doc: serde_json::Value = http
        .get(format!("{}/api/v1/openapi.json", srv.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let params = doc["paths"]["/api/v1/runs/{id}/logs"]["get"]["parameters"]
        .as_array()
        .unwrap();
    for name in ["tail", "before", "offset", "limit", "follow"] {
        assert!(
            params
                .iter()
                .any(|p| p["name"] == name && p["description"].is_string()),
            "{name}: {params:?}"
        );
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_reads_across_chunks_and_segments() {
    let srv = TestServer::start().await;
    let c = srv.admin();
    local_queue(&c, "q").await;
    let run = c.launch(&launch_cmd("q", &["true"])).await.unwrap();
    let follow = c.follow_logs(&run.id, 0).await.unwrap();
    let mut follow = Box::pin(follow);
    let state = &srv.server.as_ref().unwrap().state;
    // Another writer process with its own segments, on the same store and directory.
    let other = LogStore::new(
        state.store.clone(),
        Arc::new(FsSegments::new(state.cfg.log_dir())),
        1 << 30,
    );
    let mut expected = Vec::new();
    for round in 0..3 {
        // More than a chunk each time.
        let a = lines(1500, &format!("s{round}-"), 300);
        expected.extend(a.iter().map(|l| l.text.clone()));
        c.append_logs(
            &run.id,
            &LogBatch {
                warnings: Vec::new(),
                session: None,
                lines: a,
            },
        )
        .await
        .unwrap();
        let b = lines(700, &format!("o{round}-"), 300);
        expected.extend(b.iter().map(|l| l.text.clone()));
        other.append(&run.id, b).await.unwrap();
    }
    // The API append wakes the follower; the other writer's lines come with it.
    let tail = lines(1, "last", 0);
    expected.extend(tail.iter().map(|l| l.text.clone()));
    c.append_logs(
        &run.id,
        &LogBatch {
            warnings: Vec::new(),
            session: None,
            lines: tail,
        },
    )
    .await
    .unwrap();
    let chunks = state.store.log_chunks_from(&run.id, 0, 1000).await.unwrap();
    let mut keys: Vec<_> = chunks.iter().map(|c| c.seg_key.clone()).collect();
    keys.dedup();
    assert!(keys.len() >= 7, "{keys:?}");
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let l = tokio::time::timeout(Duration::from_secs(30), follow.next())
            .await
            .expect("lines within 30 s")
            .expect("the stream is open")
            .unwrap();
        assert_eq!(l.offset, got.len() as u64);
        got.push(l.text);
    }
    assert_eq!(got, expected);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_the_logs_of_runs_that_ended_long_ago() {
    let srv = TestServer::start_with(|c| {
        c.log_retention = Duration::from_secs(3600);
        c.log_sweep_interval = Duration::from_millis(100);
    })
    .await;
    let c = srv.admin();
    local_queue(&c, "q").await;
    let ended = c.launch(&launch_cmd("q", &["true"])).await.unwrap();
    let live = c.launch(&launch_cmd("q", &["true"])).await.unwrap();
    for r in [&ended, &live] {
        c.append_logs(
            &r.id,
            &LogBatch {
                warnings: Vec::new(),
                session: None,
                lines: lines(500, "r", 100),
            },
        )
        .await
        .unwrap();
    }
    c.cancel_run(&ended.id).await.unwrap();
    let state = &srv.server.as_ref().unwrap().state;
    let dir = state.cfg.log_dir();
    assert!(dir.join(&ended.id).is_dir());
    // Not yet expired: kept.
    assert_eq!(
        c.read_logs(&ended.id, 0, None).await.unwrap().lines.len(),
        500
    );
    state.clock.advance(Duration::from_secs(7200));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while dir.join(&ended.id).exists()
        || !c
            .read_logs(&ended.id, 0, None)
            .await
            .unwrap()
            .lines
            .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "expired log not deleted within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        state
            .store
            .log_chunks_from(&ended.id, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let page = c.read_logs(&ended.id, 0, None).await.unwrap();
    assert_eq!(page.next_offset, 0);
    assert!(page.complete);
    // The run that has not ended keeps its log.
    assert!(dir.join(&live.id).is_dir());
    assert_eq!(
        c.read_logs(&live.id, 0, None).await.unwrap().lines.len(),
        500
    );
    srv.stop().await;
}

/// A deletion interrupted after its first step (the index forgotten, the files still
/// there: a crash) reads as an empty log and is finished by the next sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_log_deletion_is_finished_by_the_next_sweep() {
    let srv = TestServer::start().await;
    let c = srv.admin();
    local_queue(&c, "q").await;
    let run = c.launch(&launch_cmd("q", &["true"])).await.unwrap();
    c.append_logs(
        &run.id,
        &LogBatch {
            warnings: Vec::new(),
            session: None,
            lines: lines(300, "x", 100),
        },
    )
    .await
    .unwrap();
    let state = &srv.server.as_ref().unwrap().state;
    let dir = state.cfg.log_dir().join(&run.id);
    assert!(dir.is_dir());
    // The first step only, as a crash would leave it.
    state.store.forget_log(&run.id, state.now()).await.unwrap();
    assert!(dir.is_dir(), "the files are still there");
    let page = c.read_logs(&run.id, 0, None).await.unwrap();
    assert!(page.lines.is_empty(), "a forgotten log reads as empty");
    assert_eq!(
        state.store.pending_log_deletions(10).await.unwrap(),
        vec![run.id.clone()]
    );
    // The next sweep (nothing else expired) finishes it.
    let swept = state.logs.sweep(0, state.now()).await.unwrap();
    assert_eq!(swept, 0, "no new expiry: only the interrupted one finished");
    assert!(!dir.exists(), "the segment files are gone");
    assert!(
        state
            .store
            .pending_log_deletions(10)
            .await
            .unwrap()
            .is_empty()
    );
    srv.stop().await;
}

/// Lines stored in `run_logs` before segments existed stay readable, and new lines
/// follow them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_stored_before_segments_stay_readable() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let s = Store::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let run = new_run(&s).await;
    {
        // As the previous version stored them.
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        for i in 0..1200i64 {
            sqlx::query("INSERT INTO run_logs (run_id, line_no, ts, stream, text) VALUES ($1, $2, $3, 'stdout', $4)")
                .bind(&run)
                .bind(i)
                .bind(T0 + i)
                .bind(format!("old{i:04}"))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        sqlx::query("UPDATE runs SET log_lines = 1200 WHERE id = $1")
            .bind(&run)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let logs = LogStore::new(
        s.clone(),
        Arc::new(FsSegments::new(dir.path().join("logs"))),
        1 << 30,
    );
    assert_eq!(
        logs.append(&run, lines(10, "new", 0))
            .await
            .unwrap()
            .next_offset,
        1210
    );
    let texts = read_all(&logs, &run, 4096).await;
    assert_eq!(texts.len(), 1210);
    assert_eq!(texts[0], "old0000");
    assert_eq!(texts[1199], "old1199");
    assert!(texts[1200].starts_with("new000000"));
    // Pages over the old lines stop at the limit, then continue into the segments.
    let first = logs.read(&run, 0, 1000, MAX_PAGE_BYTES).await.unwrap();
    assert_eq!(
        (first.count, first.next_offset, first.more),
        (1000, 1000, true)
    );
    let second = logs.read(&run, 1000, 1000, MAX_PAGE_BYTES).await.unwrap();
    assert_eq!(
        (second.count, second.next_offset, second.more),
        (210, 1210, false)
    );
    let got = logs.read_lines(&run, 1195, 10).await.unwrap();
    assert_eq!(got[0].offset, 1195);
    assert_eq!(got[5].offset, 1200);
    assert_eq!(got[0].ts.timestamp_millis(), T0 + 1195);
}
