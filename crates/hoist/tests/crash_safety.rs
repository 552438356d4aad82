//! Crash safety: `kill -9` the server in the middle of a launch burst; after a restart
//! every launch it acknowledged is there, and nothing is duplicated.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hoist_client::{Client, RunQuery, Secret};
use hoist_core::api::{CreateQueue, LaunchRequest};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(data: &std::path::Path, port: u16) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_hoist"))
        .args([
            "server",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Proc(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_a_launch_burst_loses_no_acknowledged_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let mut server = start(&data, port);
    let key = std::fs::read_to_string(data.join("admin.key")).unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let c = Client::new(&url, Some(Secret::new(key.trim()))).unwrap();
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

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = vec![];
    for i in 0..16 {
        let (c, acked) = (c.clone(), acked.clone());
        clients.push(tokio::spawn(async move {
            for j in 0.. {
                let req = LaunchRequest {
                    queue: "q".into(),
                    name: Some(format!("c{i}-{j}")),
                    entry_point: Some(vec!["true".into()]),
                    ..Default::default()
                };
                match c.launch(&req).await {
                    Ok(run) => acked.lock().unwrap().push(run.id),
                    Err(_) => return,
                }
            }
        }));
    }
    // Let the burst run, then pull the plug.
    let t0 = Instant::now();
    while acked.lock().unwrap().len() < 1500 && t0.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.0.kill().unwrap(); // SIGKILL
    server.0.wait().unwrap();
    for cl in clients {
        cl.await.unwrap();
    }
    let acked: Vec<String> = acked.lock().unwrap().clone();
    assert!(acked.len() >= 1500, "burst too small: {}", acked.len());

    let _server = start(&data, port);
    let mut stored = Vec::new();
    let mut before = None;
    loop {
        let page = c
            .list_runs(&RunQuery {
                limit: Some(1000),
                before: before.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        stored.extend(page.runs.into_iter().map(|r| (r.id, r.name)));
        match page.next_cursor {
            Some(cur) => before = Some(cur),
            None => break,
        }
    }
    let ids: HashSet<_> = stored.iter().map(|(id, _)| id.clone()).collect();
    let names: HashSet<_> = stored.iter().map(|(_, n)| n.clone()).collect();
    assert_eq!(ids.len(), stored.len(), "no run stored twice");
    assert_eq!(names.len(), stored.len(), "no launch stored twice");
    for id in &acked {
        assert!(ids.contains(id), "acknowledged run {id} was lost");
    }
    // At most the launches in flight at the kill are stored without an answer.
    assert!(
        stored.len() <= acked.len() + 16,
        "{} stored, {} acked",
        stored.len(),
        acked.len()
    );
}
