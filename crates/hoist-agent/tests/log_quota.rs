//! The log shipper against a real server whose per-run log quota is small: once the
//! server answers that the quota is reached, the shipper stops sending for that run
//! and drops later lines (keeping the tail for failure reports).

use std::time::Duration;

use hoist_agent::logs::{LogSink, ship};
use hoist_client::{Client, Secret};
use hoist_core::api::*;
use hoist_server::{Server, ServerConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipper_stops_sending_once_the_quota_is_reached() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("data"));
    cfg.max_log_bytes_per_run = 8 << 10;
    let server = Server::start(cfg).await.unwrap();
    let key = std::fs::read_to_string(dir.path().join("data/admin.key")).unwrap();
    let c = Client::new(
        &format!("http://{}", server.addr),
        Some(Secret::new(key.trim())),
    )
    .unwrap();
    c.create_queue(&CreateQueue {
        name: "q".into(),
        entity: None,
        resource: "local-process".into(),
        config: None,
        template_variables: vec![],
        prioritize: false,
        description: None,
    })
    .await
    .unwrap();
    let run = c
        .launch(&LaunchRequest {
            queue: "q".into(),
            entry_point: Some(vec!["true".into()]),
            ..Default::default()
        })
        .await
        .unwrap();

    let sink = LogSink::new();
    let shipper = tokio::spawn(ship(sink.clone(), c.clone(), run.id.clone(), "s".into()));
    for i in 0..300 {
        sink.push(
            LogStream::Stdout,
            &format!("line {i:04} {}", "x".repeat(100)),
        );
    }
    tokio::time::timeout(Duration::from_secs(30), sink.flushed())
        .await
        .expect("shipped within 30 s");
    let page = c.read_logs(&run.id, 0, Some(10_000)).await.unwrap();
    assert!(page.quota_reached);
    let last = page.lines.last().unwrap();
    assert!(
        last.text.contains("log quota of 8192 bytes reached"),
        "{last:?}"
    );
    let len = page.next_offset;
    assert!(len < 300, "{len}");

    // Later lines are neither buffered nor sent; the tail still has them.
    sink.push(LogStream::Stderr, "after the quota");
    assert!(sink.snapshot().is_empty());
    assert_eq!(sink.tail().last().unwrap(), "after the quota");
    sink.close();
    tokio::time::timeout(Duration::from_secs(30), shipper)
        .await
        .expect("the shipper ends once closed")
        .unwrap();
    assert_eq!(
        c.read_logs(&run.id, 0, Some(10_000))
            .await
            .unwrap()
            .next_offset,
        len
    );
    server.shutdown().await;
}
