//! `hoist bench queue`: the control plane against a `hoist server` child process on
//! 127.0.0.1 with the default SQLite store.
//!
//! Measures: the floors (`GET /healthz` and a 1-client launch, round trips); launch
//! throughput with 1 and 32 clients (every launch answered only once durable);
//! claim+complete throughput with 1 and 8 agents; the wake latency of a waiting claim
//! when a run is launched (launch sent → claim answered, the claim parked first: the
//! server's `hoist_claim_waiters` gauge says so); claim latency with an empty queue
//! and with `--depth` runs queued (seeded in bulk while the server is stopped); server
//! RSS idle and with the deep queue.
//!
//! With `--database-url` (or `HOIST_BENCH_DATABASE_URL`) naming a PostgreSQL server
//! (issue 13): a fresh database `hoist_bench_<random>` on it, two `hoist server`
//! replicas A and B over it (the URL reaches them in their environment, not their
//! arguments), and the same measurement functions over both: launch throughput with 32
//! clients split over both, claim+complete throughput with 8 agents split over both,
//! the wake latency of a claim parked on B for a launch on A (target p50 ≤ 5 ms) and on
//! A for a launch on A, and the floors. Then a table beside the one-replica SQLite
//! figures of the same run. The database is dropped afterwards, also after an error or
//! Ctrl-C.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hoist_client::{Client, Secret};
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
    /// A PostgreSQL server for the two-replica figures: postgres://USER@HOST:PORT/DB.
    /// The bench creates a fresh database on it (`hoist_bench_<random>`), runs two
    /// `hoist server` replicas over it, and drops it afterwards. Prefer the variable
    /// when the URL holds a password. Without it, that section is skipped.
    #[arg(long, env = "HOIST_BENCH_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<Secret>,
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

/// One server as the measurements see it: its API client, and its base URL for
/// `/metrics`.
#[derive(Clone)]
struct Replica {
    c: Client,
    url: String,
    http: reqwest::Client,
}

impl Replica {
    fn of(srv: &ServerProcess) -> anyhow::Result<Replica> {
        Ok(Replica {
            c: srv.client()?,
            url: srv.url.clone(),
            http: reqwest::Client::new(),
        })
    }

    /// The `hoist_claim_waiters` gauge: claims parked on this server.
    async fn claim_waiters(&self) -> anyhow::Result<u64> {
        let body = self
            .http
            .get(format!("{}/metrics", self.url))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        body.lines()
            .find_map(|l| l.strip_prefix("hoist_claim_waiters "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
            .with_context(|| format!("{}/metrics has no hoist_claim_waiters gauge", self.url))
    }
}

/// Launches `n` runs from `conns` concurrent clients, spread over `servers` in turn;
/// returns runs/s.
async fn launch_throughput(
    servers: &[Replica],
    q: &str,
    n: usize,
    conns: usize,
) -> anyhow::Result<f64> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..conns {
        let (c, q, next) = (
            servers[i % servers.len()].c.clone(),
            q.to_string(),
            next.clone(),
        );
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

/// `agents` agents, spread over `servers` in turn, claim one run at a time and
/// complete it; returns runs/s.
async fn claim_throughput(
    servers: &[Replica],
    q: &str,
    n: usize,
    agents: usize,
) -> anyhow::Result<f64> {
    launch_throughput(servers, q, n, 32).await?;
    let mut sessions = Vec::new();
    for i in 0..agents {
        let c = servers[i % servers.len()].c.clone();
        sessions.push((agent(&c, &format!("bench-{q}-{i}"), q).await?, c));
    }
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (s, c) in sessions {
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

/// Time from sending a launch to `launcher` to the answer of a claim waiting on
/// `waiter` (the same server or another replica), as the client sees it. Each claim
/// is parked (the waiter's `hoist_claim_waiters` gauge says so) before the launch is
/// sent, so only the wake-up can answer it; each claimed run is completed outside
/// the timing (no lease lapses and comes back).
async fn wake_latency(
    waiter: &Replica,
    launcher: &Replica,
    q: &str,
    samples: usize,
) -> anyhow::Result<Samples> {
    let s = agent(&waiter.c, &format!("bench-wake-{q}"), q).await?;
    let mut out = Samples::default();
    for _ in 0..samples {
        let (c2, s2) = (waiter.c.clone(), s.clone());
        let mut claim = tokio::spawn(async move {
            let got = c2
                .claim(
                    &s2.agent.id,
                    &ClaimRequest {
                        session: s2.session.clone(),
                        max: 1,
                        wait_ms: 30_000,
                    },
                )
                .await;
            (got, Instant::now())
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while waiter.claim_waiters().await? < 1 {
            anyhow::ensure!(
                !claim.is_finished(),
                "the claim on {} answered before any launch (is something else queued on `{q}`?)",
                waiter.url
            );
            anyhow::ensure!(
                Instant::now() < deadline,
                "the claim on {} was not parked within 10 s (hoist_claim_waiters stayed 0)",
                waiter.url
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let sent = Instant::now();
        launcher.c.launch(&launch_req(q)).await?;
        let (got, at) = tokio::time::timeout(Duration::from_secs(60), &mut claim)
            .await
            .with_context(|| {
                format!(
                    "the claim waiting on {} was not answered within 60 s of a launch on {}",
                    waiter.url, launcher.url
                )
            })??;
        let got = got?;
        let Some(r) = got.runs.first() else {
            anyhow::bail!("the waiting claim on {} got no run", waiter.url);
        };
        out.push(at.saturating_duration_since(sent));
        complete(&waiter.c, &s, &r.run.id).await?;
    }
    Ok(out)
}

/// The floors: `GET /healthz` (the server's cheapest answer) and a launch with 1
/// client (what every wake-up includes), round trips.
async fn floors(srv: &Replica, q: &str, samples: usize) -> anyhow::Result<(Samples, Samples)> {
    let (mut health, mut launch) = (Samples::default(), Samples::default());
    for _ in 0..samples {
        let t0 = Instant::now();
        srv.c.health().await?;
        health.push(t0.elapsed());
        let t0 = Instant::now();
        srv.c.launch(&launch_req(q)).await?;
        launch.push(t0.elapsed());
    }
    Ok((health, launch))
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
    let one = Replica::of(&srv)?;
    let one = std::slice::from_ref(&one);
    let c = one[0].c.clone();
    c.health().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_bytes(srv.pid()).unwrap_or(0);
    line(
        "server RSS, idle",
        &mb(idle),
        idle as f64 / 1e6,
        Some(Target::AtMost(30.0, "30 MB")),
    );

    for q in ["l1", "l32", "c1", "c8", "wake", "claim0", "floor"] {
        queue(&c, q).await?;
    }
    let (health, launch_rt) = floors(&one[0], "floor", b.samples).await?;
    line(
        "floor: GET /healthz p50",
        &ms(health.pct(50.0)),
        health.pct(50.0).as_secs_f64() * 1e3,
        None,
    );
    line(
        "floor: launch round trip p50, 1 client",
        &ms(launch_rt.pct(50.0)),
        launch_rt.pct(50.0).as_secs_f64() * 1e3,
        None,
    );
    let warm = launch_throughput(one, "l1", 200, 1).await?;
    let _ = warm;
    let r1 = launch_throughput(one, "l1", (b.launches / 10).max(500), 1).await?;
    line(
        "launch throughput, 1 client",
        &format!("{r1:.0} runs/s"),
        r1,
        None,
    );
    let r32 = launch_throughput(one, "l32", b.launches, 32).await?;
    line(
        "launch throughput, 32 clients",
        &format!("{r32:.0} runs/s"),
        r32,
        Some(Target::AtLeast(5000.0, "5000/s")),
    );

    let c1 = claim_throughput(one, "c1", b.claims / 4, 1).await?;
    line(
        "claim+complete throughput, 1 agent",
        &format!("{c1:.0} runs/s"),
        c1,
        None,
    );
    let c8 = claim_throughput(one, "c8", b.claims, 8).await?;
    line(
        "claim+complete throughput, 8 agents",
        &format!("{c8:.0} runs/s"),
        c8,
        None,
    );

    let w = wake_latency(&one[0], &one[0], "wake", b.samples).await?;
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
    let sqlite = Figures {
        launch32: r32,
        claim8: c8,
        wake_same: w.clone(),
        wake_cross: w,
        health,
        launch_rt,
    };

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
        let deep = Replica::of(&srv)?;
        let c = deep.c.clone();
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
        let l32d =
            launch_throughput(std::slice::from_ref(&deep), "deep", b.launches / 2, 32).await?;
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

    let Some(base) = &b.database_url else {
        println!(
            "  (two replicas on PostgreSQL: skipped; to measure them, set \
             HOIST_BENCH_DATABASE_URL or pass --database-url to a PostgreSQL server \
             where the bench may create a database)"
        );
        return Ok(());
    };
    let pg = replicas(&b, base, dir.path()).await?;
    compare(&sqlite, &pg);
    Ok(())
}

/// What the side-by-side table compares, from one setup.
struct Figures {
    launch32: f64,
    claim8: f64,
    /// The waiting claim and the launch on the same server.
    wake_same: Samples,
    /// The waiting claim on replica B, the launch on replica A (on one replica: the
    /// same as `wake_same`).
    wake_cross: Samples,
    health: Samples,
    launch_rt: Samples,
}

/// A fresh database on the PostgreSQL server of `--database-url`, dropped by
/// [`BenchDb::drop_db`].
struct BenchDb {
    /// The server's URL, for the drop.
    base: Secret,
    name: String,
    /// The new database's URL (may hold a password).
    url: Secret,
}

impl BenchDb {
    async fn create(base: &Secret) -> anyhow::Result<BenchDb> {
        let shown = hoist_server::store::redact_url(base.expose());
        let mut url = reqwest::Url::parse(base.expose()).with_context(|| {
            format!("--database-url {shown} is not a URL (postgres://USER@HOST:PORT/DB)")
        })?;
        anyhow::ensure!(
            matches!(url.scheme(), "postgres" | "postgresql"),
            "--database-url {shown} is not a PostgreSQL URL (postgres://USER@HOST:PORT/DB)"
        );
        let name = format!(
            "hoist_bench_{}",
            hoist_server::secrets::new_id(10).to_lowercase()
        );
        hoist_server::store::pg::create_database(base.expose(), &name)
            .await
            .with_context(|| {
                format!(
                    "cannot create database {name} on the PostgreSQL at {shown} (check \
                     --database-url or HOIST_BENCH_DATABASE_URL; the user needs the \
                     CREATEDB privilege)"
                )
            })?;
        url.set_path(&format!("/{name}"));
        Ok(BenchDb {
            base: base.clone(),
            name,
            url: Secret::new(url.to_string()),
        })
    }

    /// Drops the database, closing what still uses it; says so when it cannot.
    async fn drop_db(self) {
        let res = hoist_server::store::pg::drop_database(self.base.expose(), &self.name).await;
        if let Err(e) = res {
            eprintln!(
                "hoist bench queue: could not drop the bench database {} ({e}); drop it \
                 with: DROP DATABASE {} WITH (FORCE);",
                self.name, self.name
            );
        }
    }
}

/// Two replicas over a fresh PostgreSQL database: creates it, measures, and drops it
/// (also after an error or Ctrl-C).
async fn replicas(b: &QueueBench, base: &Secret, tmp: &Path) -> anyhow::Result<Figures> {
    let db = BenchDb::create(base).await?;
    println!(
        "hoist bench queue: two replicas on PostgreSQL {} (database {}, dropped at the end)",
        hoist_server::store::redact_url(base.expose()),
        db.name
    );
    let res = tokio::select! {
        r = replica_figures(b, &db.url, tmp) => r,
        // (A handler that cannot be installed disables this branch.)
        Ok(()) = tokio::signal::ctrl_c() => Err(anyhow::anyhow!(
            "interrupted; the replicas were stopped and database {} dropped",
            db.name
        )),
    };
    // The servers are stopped (or killed, when dropped) by now.
    db.drop_db().await;
    res
}

async fn replica_figures(b: &QueueBench, url: &Secret, tmp: &Path) -> anyhow::Result<Figures> {
    let blobs = tmp.join("pg-blobs");
    // The URL (and its password) goes in the environment, not the arguments.
    let env = [
        ("HOIST_DATABASE_URL", url.expose().to_string()),
        ("HOIST_BLOB_DIR", blobs.display().to_string()),
    ];
    let a = ServerProcess::start_with(&tmp.join("pg-a"), None, &env)
        .context("replica A on PostgreSQL")?;
    let bsrv = ServerProcess::start_replica(&tmp.join("pg-b"), &env, &a.key)
        .context("replica B on PostgreSQL")?;
    let ra = Replica::of(&a)?;
    let rb = Replica::of(&bsrv)?;
    ra.c.health().await?;
    rb.c.health().await?;
    let both = [ra.clone(), rb.clone()];
    for q in ["l32", "c8", "wake", "wakex", "floor"] {
        queue(&ra.c, q).await?;
    }
    let (health, launch_rt) = floors(&ra, "floor", b.samples).await?;
    line(
        "floor: GET /healthz p50, replica A",
        &ms(health.pct(50.0)),
        health.pct(50.0).as_secs_f64() * 1e3,
        None,
    );
    line(
        "floor: launch round trip p50, replica A",
        &ms(launch_rt.pct(50.0)),
        launch_rt.pct(50.0).as_secs_f64() * 1e3,
        None,
    );
    launch_throughput(&both, "l32", 200, 2).await?;
    let r32 = launch_throughput(&both, "l32", b.launches, 32).await?;
    line(
        "launch throughput, 32 clients over 2 replicas",
        &format!("{r32:.0} runs/s"),
        r32,
        None,
    );
    let c8 = claim_throughput(&both, "c8", b.claims, 8).await?;
    line(
        "claim+complete throughput, 8 agents over 2",
        &format!("{c8:.0} runs/s"),
        c8,
        None,
    );
    let same = wake_latency(&ra, &ra, "wake", b.samples).await?;
    line(
        "wake latency p50, claim and launch on A",
        &ms(same.pct(50.0)),
        same.pct(50.0).as_secs_f64() * 1e3,
        None,
    );
    line(
        "wake latency p99, claim and launch on A",
        &ms(same.pct(99.0)),
        same.pct(99.0).as_secs_f64() * 1e3,
        None,
    );
    let cross = wake_latency(&rb, &ra, "wakex", b.samples).await?;
    line(
        "wake latency p50, claim on B, launch on A",
        &ms(cross.pct(50.0)),
        cross.pct(50.0).as_secs_f64() * 1e3,
        Some(Target::AtMost(5.0, "5 ms")),
    );
    line(
        "wake latency p99, claim on B, launch on A",
        &ms(cross.pct(99.0)),
        cross.pct(99.0).as_secs_f64() * 1e3,
        None,
    );
    tokio::task::spawn_blocking(move || {
        bsrv.stop()?;
        a.stop()
    })
    .await??;
    Ok(Figures {
        launch32: r32,
        claim8: c8,
        wake_same: same,
        wake_cross: cross,
        health,
        launch_rt,
    })
}

/// The side-by-side table: one replica on SQLite, two on PostgreSQL, measured in this
/// run; the ratio is PostgreSQL's over SQLite's.
fn compare(sqlite: &Figures, pg: &Figures) {
    println!();
    println!(
        "  {:<44} {:>16} {:>22} {:>8}",
        "metric", "1 replica SQLite", "2 replicas PostgreSQL", "ratio"
    );
    let rate = |name: &str, s: f64, p: f64| {
        println!(
            "  {name:<44} {:>16} {:>22} {:>7.2}×",
            format!("{s:.0} runs/s"),
            format!("{p:.0} runs/s"),
            p / s.max(1e-9)
        )
    };
    let lat = |name: &str, s: Duration, p: Duration| {
        println!(
            "  {name:<44} {:>16} {:>22} {:>7.2}×",
            ms(s),
            ms(p),
            p.as_secs_f64() / s.as_secs_f64().max(1e-9)
        )
    };
    rate(
        "launch throughput, 32 clients",
        sqlite.launch32,
        pg.launch32,
    );
    rate(
        "claim+complete throughput, 8 agents",
        sqlite.claim8,
        pg.claim8,
    );
    for p in [50.0, 99.0] {
        lat(
            &format!("wake p{p:.0}, claim on B, launch on A (*)"),
            sqlite.wake_cross.pct(p),
            pg.wake_cross.pct(p),
        );
    }
    for p in [50.0, 99.0] {
        lat(
            &format!("wake p{p:.0}, claim and launch on one replica"),
            sqlite.wake_same.pct(p),
            pg.wake_same.pct(p),
        );
    }
    lat(
        "floor: GET /healthz p50",
        sqlite.health.pct(50.0),
        pg.health.pct(50.0),
    );
    lat(
        "floor: launch round trip p50, 1 client",
        sqlite.launch_rt.pct(50.0),
        pg.launch_rt.pct(50.0),
    );
    println!("  (*) one replica on SQLite: its claim and launch are on the same server");
    let p50 = pg.wake_cross.pct(50.0);
    println!(
        "  cross-replica wake p50 {} against the target ≤ 5 ms: {}",
        ms(p50),
        if p50 <= Duration::from_millis(5) {
            "PASS"
        } else {
            "FAIL"
        }
    );
}
