//! Connections against a real server: silent and half-header connections are closed
//! after the header timeout while API requests keep being served, idle keep-alive
//! connections after the idle timeout, requests in flight (long polls, log follow
//! streams) survive both, and the connection limit makes new connections wait (with
//! one log line) instead of exhausting the process's file descriptors.

mod common;

use std::time::Duration;

use common::{TestServer, local_queue};
use hoist_core::api::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Raises this process's soft open-file limit to its hard limit (the test holds both
/// ends of thousands of connections).
fn raise_nofile_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    }
    hard
}

async fn connect(addr: std::net::SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("connect")
}

/// Opens `n` connections, `par` at a time (the listen backlog is finite), sending
/// `first` on each.
async fn open_many(addr: std::net::SocketAddr, n: usize, first: &'static [u8]) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    let mut left = n;
    while left > 0 {
        let k = left.min(64);
        let mut tasks = Vec::new();
        for _ in 0..k {
            tasks.push(tokio::spawn(async move {
                let mut s = connect(addr).await;
                if !first.is_empty() {
                    s.write_all(first).await.expect("write");
                }
                s
            }));
        }
        for t in tasks {
            out.push(t.await.unwrap());
        }
        left -= k;
    }
    out
}

/// Waits until the server has closed `s` (EOF or reset), failing after `within`.
async fn closed_by_server(mut s: TcpStream, within: Duration) {
    let mut buf = [0u8; 1024];
    let r = tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                // A response (there should be none) is read past.
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(
        r.is_ok(),
        "the server did not close the connection within {within:?}"
    );
}

/// Sends one request on a raw keep-alive connection and reads its whole response.
async fn request_on(s: &mut TcpStream, path: &str) -> String {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
            .await
            .expect("a response within 20 s")
            .unwrap();
        assert!(n > 0, "connection closed before the response was complete");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("a content-length");
            if body.len() >= len {
                return text;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_and_half_header_connections_are_closed_while_requests_succeed() {
    let hard = raise_nofile_limit();
    // Both ends of every connection are in this process.
    let per_kind = ((hard.saturating_sub(512)) / 4).min(1500) as usize;
    assert!(
        per_kind >= 500,
        "open-file limit {hard} too low for this test"
    );
    let header_timeout = Duration::from_secs(4);
    let srv = TestServer::start_with(|c| {
        c.header_timeout = header_timeout;
        c.idle_timeout = Duration::from_secs(300);
        c.max_connections = 10_000;
    })
    .await;
    let addr = srv.server.as_ref().unwrap().addr;
    let admin = srv.admin();
    local_queue(&admin, "q").await;

    // A keep-alive connection that has served a request: idle, not waiting for a head.
    let mut kept = connect(addr).await;
    assert!(
        request_on(&mut kept, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );

    let silent = open_many(addr, per_kind, b"").await;
    let half = open_many(
        addr,
        per_kind,
        b"GET /api/v1/me HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer x",
    )
    .await;

    // The API answers while thousands of connections are held open.
    for i in 0..20 {
        let me = admin.me().await.expect("me while connections are held");
        assert_eq!(me.user.name, "admin");
        admin
            .launch(&LaunchRequest {
                queue: "q".into(),
                entry_point: Some(vec!["true".into(), i.to_string()]),
                ..Default::default()
            })
            .await
            .expect("launch while connections are held");
    }

    // Every silent and half-header connection is closed by the server after the header
    // timeout.
    let within = header_timeout + Duration::from_secs(30);
    let mut waits = Vec::new();
    for s in silent.into_iter().chain(half) {
        waits.push(tokio::spawn(closed_by_server(s, within)));
    }
    for w in waits {
        w.await.unwrap();
    }
    // The idle keep-alive connection has its own (longer) timeout: it still serves.
    assert!(
        request_on(&mut kept, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_close_but_requests_in_flight_survive() {
    let srv = TestServer::start_with(|c| {
        c.header_timeout = Duration::from_secs(1);
        c.idle_timeout = Duration::from_secs(1);
    })
    .await;
    let addr = srv.server.as_ref().unwrap().addr;
    let admin = srv.admin();
    local_queue(&admin, "q").await;
    let run = admin
        .launch(&LaunchRequest {
            queue: "q".into(),
            entry_point: Some(vec!["true".into()]),
            ..Default::default()
        })
        .await
        .unwrap();

    // An idle keep-alive connection is closed after the idle timeout.
    let mut idle = connect(addr).await;
    assert!(
        request_on(&mut idle, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    closed_by_server(idle, Duration::from_secs(30)).await;

    // A follow stream and a long poll, each in flight for longer than both timeouts.
    local_queue(&admin, "empty").await;
    let follow = admin.follow_logs(&run.id, 0).await.unwrap();
    let mut follow = Box::pin(follow);
    let session = admin
        .register_agent(&RegisterAgent {
            name: "a".into(),
            host: "h".into(),
            version: hoist_core::VERSION.into(),
            queues: vec!["empty".into()],
            entity: None,
            max_jobs: 1,
        })
        .await
        .unwrap();
    let claimed = admin
        .claim(
            &session.agent.id,
            &ClaimRequest {
                session: session.session.clone(),
                max: 1,
                wait_ms: 3_000,
            },
        )
        .await
        .expect("a 3 s long poll outlives 1 s header and idle timeouts");
    assert!(claimed.runs.is_empty());
    // The follow stream, open all that time, still delivers.
    admin
        .append_logs(
            &run.id,
            &LogBatch {
                warnings: Vec::new(),
                session: None,
                lines: vec![LogLine {
                    ts: chrono::Utc::now(),
                    stream: LogStream::Stdout,
                    text: "still here".into(),
                }],
            },
        )
        .await
        .unwrap();
    use futures::StreamExt;
    let line = tokio::time::timeout(Duration::from_secs(20), follow.next())
        .await
        .expect("a line within 20 s")
        .expect("the stream is open")
        .expect("a line");
    assert_eq!(line.text, "still here");
    drop(follow);
    srv.stop().await;
}

/// Log output captured from the current thread's tracing events.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

// One thread: the server's tasks log into the subscriber set for it.
#[tokio::test(flavor = "current_thread")]
async fn at_the_connection_limit_new_connections_wait_and_one_line_is_logged() {
    let logs = Captured::default();
    let _sub = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish(),
    );
    const LIMIT: usize = 8;
    let srv = TestServer::start_with(|c| {
        c.header_timeout = Duration::from_secs(2);
        c.max_connections = LIMIT;
    })
    .await;
    let addr = srv.server.as_ref().unwrap().addr;
    // Fill every place with silent connections, then more of them.
    let held = open_many(addr, LIMIT * 3, b"").await;
    // A real request waits until the silent ones time out, then is served.
    let me = tokio::time::timeout(Duration::from_secs(60), srv.admin().me())
        .await
        .expect("served within 60 s")
        .expect("me after waiting for a place");
    assert_eq!(me.user.name, "admin");
    for s in held {
        closed_by_server(s, Duration::from_secs(60)).await;
    }
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Connection limit reached"))
        .collect();
    assert!(!lines.is_empty(), "no limit line in:\n{text}");
    assert!(
        lines[0].contains("limit=8") && lines[0].contains("--max-connections"),
        "{}",
        lines[0]
    );
    // One line per burst, not one per waiting connection.
    assert!(lines.len() < LIMIT, "{lines:#?}");
    srv.stop().await;
}
