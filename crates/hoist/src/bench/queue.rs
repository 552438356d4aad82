//! `hoist bench queue`: the control plane against a `hoist server` child process on
//! 127.0.0.1 with the default SQLite store.
//!
//! Measures: launch throughput with 1 and 32 clients (every launch answered only once
//! durable); claim+complete throughput with 1 and 8 agents; the wake latency of a
//! waiting claim when a run is launched; claim latency with an empty queue and with
//! `--depth` runs queued (seeded in bulk while the server is stopped); server RSS idle
//! and with the deep queue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hoist_client::Client;
use hoist_core::api::*;
use hoist_core::run::RunState;

use super::{Samples, ServerProcess, Target, line, mb, ms, rss_bytes};

#[derive(Debug, Clone, clap::Args)]
pub struct QueueBench {
    /// Runs queued for the deep-queue measurements.
    #[arg(long, default_value_t = 1_000_000)]
    pub depth: u64,
    /// Launches in the 32-client throughput run.
    #[arg(long, default_value_t = 20_000)]
    pub launches: usize,
    /// Runs claimed and completed in each claim-throughput run.
    #[arg(long, default_value_t = 4_000)]
    pub claims: usize,
    /// Samples for each latency figure.
    #[arg(long, default_value_t = 300)]
    pub samples: usize,
}

fn launch_req(queue: &str) -> LaunchRequest {
    LaunchRequest {
        queue: queue.into(),
        entry_point: Some(vec!["true".into()]),
        ..Default::default()
    }
}

async fn queue(c: &Client, name: &str) -> anyhow::Result<Queue> {
    Ok(c.create_queue(&CreateQueue {
        name: name.into(),
        entity: None,
        resource: "local-process".into(),
        config: None,
        template_variables: vec![],
        prioritize: false,
        description: None,
    })
    .await?)
}

async fn agent(c: &Client, name: &str, queue: &str) -> anyhow::Result<AgentSession> {
    Ok(c.register_agent(&RegisterAgent {
        name: name.into(),
        host: "bench".into(),
        version: hoist_core::VERSION.into(),
        queues: vec![queue.into()],
        entity: None,
        max_jobs: -1,
    })
    .await?)
}

async fn complete(c: &Client, s: &AgentSession, id: &str) -> anyhow::Result<()> {
    for st in [RunState::Starting, RunState::Finished] {
        c.update_run(
            id,
            &RunUpdate {
                session: s.session.clone(),
                state: st,
                reason: String::new(),
                exit_code: Some(0),
                failure: None,
                built: None,
            },
        )
        .await?;
    }
    Ok(())
}

/// Launches `n` runs from `clients` concurrent clients; returns runs/s.
async fn launch_throughput(c: &Client, q: &str, n: usize, clients: usize) -> anyhow::Result<f64> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (c, q, next) = (c.clone(), q.to_string(), next.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                c.launch(&launch_req(&q)).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

/// `agents` agents claim one run at a time and complete it; returns runs/s.
async fn claim_throughput(c: &Client, q: &str, n: usize, agents: usize) -> anyhow::Result<f64> {
    launch_throughput(c, q, n, 32).await?;
    let mut sessions = Vec::new();
    for i in 0..agents {
        sessions.push(agent(c, &format!("bench-{q}-{i}"), q).await?);
    }
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for s in sessions {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0usize;
            loop {
                let got = c
                    .claim(
                        &s.agent.id,
                        &ClaimRequest {
                            session: s.session.clone(),
                            max: 1,
                            wait_ms: 0,
                        },
                    )
                    .await?;
                let Some(r) = got.runs.first() else {
                    return anyhow::Ok(done);
                };
                complete(&c, &s, &r.run.id).await?;
                done += 1;
            }
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    anyhow::ensure!(total == n, "claimed {total} runs, expected {n}");
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

/// Time from sending a launch to the waiting claim's answer.
async fn wake_latency(c: &Client, q: &str, samples: usize) -> anyhow::Result<Samples> {
    let s = agent(c, &format!("bench-wake-{q}"), q).await?;
    let mut out = Samples::default();
    for _ in 0..samples {
        let (c2, s2) = (c.clone(), s.clone());
        let waiter = tokio::spawn(async move {
            let got = c2
                .claim(
                    &s2.agent.id,
                    &ClaimRequest {
                        session: s2.session.clone(),
                        max: 1,
                        wait_ms: 10_000,
                    },
                )
                .await;
            (got, Instant::now())
        });
        // Let the claim reach the server and start waiting.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let sent = Instant::now();
        c.launch(&launch_req(q)).await?;
        let (got, at) = waiter.await?;
        let got = got?;
        anyhow::ensure!(got.runs.len() == 1, "the waiting claim got no run");
        out.push(at.saturating_duration_since(sent));
    }
    Ok(out)
}

/// Round trip of a claim that takes the head of `q`.
async fn claim_latency(
    c: &Client,
    q: &str,
    samples: usize,
    refill: bool,
) -> anyhow::Result<Samples> {
    let s = agent(c, &format!("bench-claim-{q}"), q).await?;
    let mut out = Samples::default();
    for _ in 0..samples {
        if refill {
            c.launch(&launch_req(q)).await?;
        }
        let t0 = Instant::now();
        let got = c
            .claim(
                &s.agent.id,
                &ClaimRequest {
                    session: s.session.clone(),
                    max: 1,
                    wait_ms: 0,
                },
            )
            .await?;
        out.push(t0.elapsed());
        anyhow::ensure!(got.runs.len() == 1, "no run to claim");
    }
    Ok(out)
}

pub async fn run(b: QueueBench) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    println!(
        "hoist bench queue: server on 127.0.0.1, SQLite store in {}",
        data.display()
    );
    println!(
        "  machine: {} CPUs",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    let srv = ServerProcess::start(&data)?;
    let c = srv.client()?;
    c.health().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_bytes(srv.pid()).unwrap_or(0);
    line(
        "server RSS, idle",
        &mb(idle),
        idle as f64 / 1e6,
        Some(Target::AtMost(30.0, "30 MB")),
    );

    for q in ["l1", "l32", "c1", "c8", "wake", "claim0"] {
        queue(&c, q).await?;
    }
    let warm = launch_throughput(&c, "l1", 200, 1).await?;
    let _ = warm;
    let r1 = launch_throughput(&c, "l1", (b.launches / 10).max(500), 1).await?;
    line(
        "launch throughput, 1 client",
        &format!("{r1:.0} runs/s"),
        r1,
        None,
    );
    let r32 = launch_throughput(&c, "l32", b.launches, 32).await?;
    line(
        "launch throughput, 32 clients",
        &format!("{r32:.0} runs/s"),
        r32,
        Some(Target::AtLeast(5000.0, "5000/s")),
    );

    let c1 = claim_throughput(&c, "c1", b.claims / 4, 1).await?;
    line(
        "claim+complete throughput, 1 agent",
        &format!("{c1:.0} runs/s"),
        c1,
        None,
    );
    let c8 = claim_throughput(&c, "c8", b.claims, 8).await?;
    line(
        "claim+complete throughput, 8 agents",
        &format!("{c8:.0} runs/s"),
        c8,
        None,
    );

    let w = wake_latency(&c, "wake", b.samples).await?;
    let (p50, p99) = (w.pct(50.0), w.pct(99.0));
    line(
        "wake latency p50 (launch sent → claim answered)",
        &ms(p50),
        p50.as_secs_f64() * 1e3,
        Some(Target::AtMost(2.0, "2 ms")),
    );
    line(
        "wake latency p99",
        &ms(p99),
        p99.as_secs_f64() * 1e3,
        Some(Target::AtMost(10.0, "10 ms")),
    );

    let l0 = claim_latency(&c, "claim0", b.samples, true).await?;
    line(
        "claim latency p50, queue depth 0 (+1)",
        &ms(l0.pct(50.0)),
        l0.pct(50.0).as_secs_f64() * 1e3,
        None,
    );
    line(
        "claim latency p99, queue depth 0 (+1)",
        &ms(l0.pct(99.0)),
        l0.pct(99.0).as_secs_f64() * 1e3,
        None,
    );
    let busy = rss_bytes(srv.pid()).unwrap_or(0);
    line(
        "server RSS after the runs above",
        &mb(busy),
        busy as f64 / 1e6,
        None,
    );
    srv.stop()?;

    // Deep queue: seed while the server is stopped, then restart on the same store.
    if b.depth > 0 {
        let t0 = Instant::now();
        let store = hoist_server::store::Store::open(&format!(
            "sqlite://{}",
            data.join("hoist.db").display()
        ))
        .await
        .context("open the bench store")?;
        let q = store.get_queue("admin", "deep").await?;
        let q = match q {
            Some(q) => q,
            None => {
                store
                    .create_queue(
                        hoist_server::store::queues::NewQueue {
                            entity: "admin".into(),
                            name: "deep".into(),
                            resource: hoist_core::resource::ResourceType::LocalProcess,
                            config: serde_json::json!({}),
                            template_variables: vec![],
                            prioritize: false,
                            description: String::new(),
                        },
                        chrono::Utc::now().timestamp_millis(),
                    )
                    .await?
            }
        };
        store
            .seed_queued_runs(
                &q.id,
                "admin",
                "deep",
                b.depth,
                chrono::Utc::now().timestamp_millis(),
            )
            .await?;
        store.close().await;
        println!(
            "  (seeded {} queued runs in {:.1} s)",
            b.depth,
            t0.elapsed().as_secs_f64()
        );
        let srv = ServerProcess::start(&data)?;
        let c = srv.client()?;
        c.health().await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let deep_idle = rss_bytes(srv.pid()).unwrap_or(0);
        line(
            &format!("server RSS, {} runs queued", b.depth),
            &mb(deep_idle),
            deep_idle as f64 / 1e6,
            None,
        );
        let ld = claim_latency(&c, "deep", b.samples, false).await?;
        let (d50, d99) = (ld.pct(50.0), ld.pct(99.0));
        line(
            &format!("claim latency p50, queue depth {}", b.depth),
            &ms(d50),
            d50.as_secs_f64() * 1e3,
            None,
        );
        line(
            &format!("claim latency p99, queue depth {}", b.depth),
            &ms(d99),
            d99.as_secs_f64() * 1e3,
            None,
        );
        let ratio = d50.as_secs_f64() / l0.pct(50.0).as_secs_f64().max(1e-9);
        println!("  claim latency p50 deep/empty ratio: {ratio:.2}× (target: flat, ~1×)");
        let l32d = launch_throughput(&c, "deep", b.launches / 2, 32).await?;
        line(
            "launch throughput, 32 clients, deep queue",
            &format!("{l32d:.0} runs/s"),
            l32d,
            Some(Target::AtLeast(5000.0, "5000/s")),
        );
        let after = rss_bytes(srv.pid()).unwrap_or(0);
        line(
            "server RSS, deep queue, after claims",
            &mb(after),
            after as f64 / 1e6,
            None,
        );
        srv.stop()?;
    }
    Ok(())
}
