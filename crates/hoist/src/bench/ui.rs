//! `hoist bench ui`: the web UI's pages against a `hoist server` child process on
//! 127.0.0.1 whose SQLite store holds `--runs` runs over `--queues` queues of several
//! entities (launched over the last 24 hours, in every state, some with logs, one
//! with a `--log-mb` MB log).
//!
//! Signs in through the sign-in form (as the admin, who sees everything, and as a
//! user of two teams), then requests every page of [`PAGES`] `--samples` times over
//! HTTP on loopback, one request at a time, and prints per page the client time to
//! the full body and the server's own time (`Server-Timing: app;dur=…`) as
//! p50/p95/max, the ratio of the client p50 to the floor measured in the same run
//! (`GET /healthz`, the server's cheapest answer), and the issue's target "server time
//! p95 ≤ 50 ms" as PASS/FAIL (printed, not asserted: the machine is shared). A page
//! that answers 404 is not on this build yet: it is listed and skipped (run the bench
//! again after merging). Then the API reads behind the pages, and the big log's tail.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hoist_client::Client;
use hoist_core::api::*;
use hoist_core::run::RunState;
use hoist_server::logs::{FsSegments, LogStore};
use hoist_server::store::Store;
use hoist_server::store::runs::RunFilter;
use hoist_server::store::stats::BenchQueue;
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};

use super::{Samples, ServerProcess};

#[derive(Debug, Clone, clap::Args)]
pub struct UiBench {
    /// Runs in the store (launched over the last 24 hours).
    #[arg(long, default_value_t = 100_000)]
    pub runs: u64,
    /// Queues they are spread over (over 6 entities: 3 users, 2 teams, the admin).
    #[arg(long, default_value_t = 50)]
    pub queues: usize,
    /// Requests per page (after one warm-up request).
    #[arg(long, default_value_t = 30)]
    pub samples: usize,
    /// Megabytes (10^6 bytes) of line text in the one big log.
    #[arg(long, default_value_t = 100)]
    pub log_mb: u64,
    /// Runs that get a small log (200 lines each).
    #[arg(long, default_value_t = 200)]
    pub logged_runs: u64,
    /// The `hoist` binary whose server is measured (default: this one).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
}

/// Pages requested, with placeholders: `{entity}`/`{queue}` a team's queue,
/// `{run}` a running run of it, `{failed}` a failed run, `{big}` the run with the big
/// log and `{mid}` a line in its middle, `{job}` a job of the team. Pages not on this
/// build answer 404 and are skipped with a note. Add pages here.
pub const PAGES: &[&str] = &[
    "/",
    "/?hours=168",
    "/queues",
    "/queues/new",
    "/queues/{entity}/{queue}",
    "/queues/{entity}/{queue}?tab=runs",
    "/queues/{entity}/{queue}?tab=runs&state=queued",
    "/queues/{entity}/{queue}?tab=agents",
    "/queues/{entity}/{queue}?tab=config",
    "/queues/{entity}/{queue}/edit",
    "/runs",
    "/runs?state=queued",
    "/runs?state=running",
    "/runs?state=failed",
    "/runs?queue={entity}/{queue}",
    "/runs/{run}",
    "/runs/{failed}",
    "/runs/{big}",
    "/runs/{big}?before={mid}",
    "/runs/{big}/log/page?before={mid}",
    "/jobs",
    "/jobs/{entity}/{job}",
    "/agents",
    "/launch?job={entity}/{job}&queue={entity}/{queue}",
];

/// Pages also requested as a user (entity-filtered queries), not the admin.
pub const USER_PAGES: &[&str] = &["/", "/queues", "/runs", "/agents"];

/// API reads behind the pages (with the admin's key).
pub const API_READS: &[&str] = &[
    "/api/v1/stats/overview",
    "/api/v1/stats/queues",
    "/api/v1/queues",
    "/api/v1/runs?limit=50",
    "/api/v1/agents",
];

/// The target for a page's server time, p95.
const TARGET_MS: f64 = 50.0;
/// Bytes of text per line of the seeded logs.
const LINE_BYTES: usize = 100;
/// Lines per append while seeding the big log.
const BATCH_LINES: usize = 10_000;

const USERS: [&str; 3] = ["alice", "bob", "carol"];
/// Teams and their members.
const TEAMS: [(&str, &[&str]); 2] = [("vision", &["alice", "bob"]), ("nlp", &["bob", "carol"])];
/// Entities queues are spread over, in turn.
const ENTITIES: [&str; 6] = ["vision", "nlp", "alice", "bob", "carol", "admin"];

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A signed-in browser without a browser: the session cookie.
struct Session {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

impl Session {
    /// Signs in through the sign-in form, as a browser would.
    async fn sign_in(base: &str, api_key: &str) -> anyhow::Result<Session> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let form = http.get(format!("{base}/login")).send().await?;
        let login_cookie = set_cookie(&form, "hoist_login")
            .context("the sign-in form set no hoist_login cookie")?;
        let html = form.text().await?;
        let csrf = html
            .split("name=\"_csrf\" value=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .context("the sign-in form has no _csrf field")?
            .to_string();
        let res = http
            .post(format!("{base}/login"))
            .header(COOKIE, login_cookie)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(format!(
                "_csrf={}&api_key={}&next=%2F",
                urlencode(&csrf),
                urlencode(api_key)
            ))
            .send()
            .await?;
        let status = res.status();
        let cookie = set_cookie(&res, "hoist_session");
        match (status.as_u16(), cookie) {
            (303, Some(cookie)) => Ok(Session {
                http,
                base: base.to_string(),
                cookie,
            }),
            _ => bail!(
                "signing in through the form failed: HTTP {status}, location {:?}",
                res.headers().get(LOCATION)
            ),
        }
    }
}

/// A label that fits the table's first column (long ids and queries are cut).
fn cut_label(s: &str) -> String {
    if s.chars().count() <= 52 {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(51).collect();
        out.push('…');
        out
    }
}

fn set_cookie(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_string())
        .find(|kv| kv.starts_with(&format!("{name}=")))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One measured request: client time to the full body, the server's time if it said.
struct Timed {
    status: u16,
    client: Duration,
    server: Option<Duration>,
    bytes: usize,
}

async fn timed(req: reqwest::RequestBuilder) -> anyhow::Result<Timed> {
    let t0 = Instant::now();
    let res = req.send().await?;
    let status = res.status().as_u16();
    let server = res
        .headers()
        .get("server-timing")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("dur=").nth(1))
        .and_then(|v| v.split([',', ';']).next())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|ms| Duration::from_secs_f64(ms / 1e3));
    let body = res.bytes().await?;
    Ok(Timed {
        status,
        client: t0.elapsed(),
        server,
        bytes: body.len(),
    })
}

/// Samples of one page or read.
struct Measured {
    client: Samples,
    server: Samples,
    bytes: usize,
}

/// `samples` requests after a warm-up; `Err(status)` when the warm-up is not a 200.
async fn measure(
    mk: impl Fn() -> reqwest::RequestBuilder,
    samples: usize,
) -> anyhow::Result<Result<Measured, u16>> {
    let warm = timed(mk()).await?;
    if warm.status != 200 {
        return Ok(Err(warm.status));
    }
    let mut m = Measured {
        client: Samples::default(),
        server: Samples::default(),
        bytes: warm.bytes,
    };
    for _ in 0..samples.max(1) {
        let t = timed(mk()).await?;
        anyhow::ensure!(
            t.status == 200,
            "HTTP {} on a page that answered 200",
            t.status
        );
        m.client.push(t.client);
        if let Some(s) = t.server {
            m.server.push(s);
        }
    }
    Ok(Ok(m))
}

fn triple(s: &Samples) -> String {
    if s.0.is_empty() {
        return "-".into();
    }
    format!(
        "{:.1} / {:.1} / {:.1}",
        ms(s.pct(50.0)),
        ms(s.pct(95.0)),
        ms(s.pct(100.0))
    )
}

fn header(what: &str) {
    println!();
    println!(
        "  {what:<52} {:>22} {:>22} {:>9} {:>9}  p95 ≤ {TARGET_MS:.0} ms",
        "client ms p50/p95/max", "server ms p50/p95/max", "p50÷floor", "body"
    );
}

/// One result line; returns whether it meets the target (`None`: skipped).
fn report(label: &str, r: &Result<Measured, u16>, floor: Duration) -> Option<bool> {
    match r {
        Err(404) => {
            println!("  {label:<52} not on this build (404): skipped; run again after merging");
            None
        }
        Err(status) => {
            println!("  {label:<52} HTTP {status}: skipped");
            None
        }
        Ok(m) => {
            // The server's own time when it says, else what the client saw.
            let p95 = if m.server.0.is_empty() {
                m.client.pct(95.0)
            } else {
                m.server.pct(95.0)
            };
            let pass = ms(p95) <= TARGET_MS;
            println!(
                "  {label:<52} {:>22} {:>22} {:>8.1}× {:>6.1} KB  {}",
                triple(&m.client),
                triple(&m.server),
                ms(m.client.pct(50.0)) / ms(floor).max(1e-3),
                m.bytes as f64 / 1e3,
                if pass { "PASS" } else { "FAIL" }
            );
            Some(pass)
        }
    }
}

fn log_batch(first: u64, n: usize) -> Vec<LogLine> {
    let ts = chrono::Utc::now();
    (0..n as u64)
        .map(|i| {
            let mut text = format!("step {:09} loss=0.{:04} ", first + i, (first + i) % 9973);
            while text.len() < LINE_BYTES {
                text.push_str("lorem ipsum dolor sit amet ");
            }
            text.truncate(LINE_BYTES);
            LogLine {
                ts,
                stream: if (first + i).is_multiple_of(17) {
                    LogStream::Stderr
                } else {
                    LogStream::Stdout
                },
                text,
            }
        })
        .collect()
}

/// What the seeding made, for the pages' placeholders.
struct Seeded {
    entity: String,
    queue: String,
    run: String,
    failed: String,
    big: String,
    big_lines: u64,
    job: String,
}

/// Users, teams, queues and a job through the API.
async fn create_entities(c: &Client, b: &UiBench) -> anyhow::Result<(Vec<Queue>, String)> {
    for u in USERS {
        c.create_user(&CreateUser {
            name: u.into(),
            admin: false,
        })
        .await?;
    }
    for (t, members) in TEAMS {
        c.create_team(&CreateTeam {
            name: t.into(),
            members: members.iter().map(|m| m.to_string()).collect(),
        })
        .await?;
    }
    let mut queues = Vec::with_capacity(b.queues);
    for i in 0..b.queues {
        let entity = ENTITIES[i % ENTITIES.len()];
        let kind = ["gpu-a100", "gpu-h100", "cpu", "gpu-l4", "tpu"][(i / ENTITIES.len()) % 5];
        queues.push(
            c.create_queue(&CreateQueue {
                name: format!("{kind}-{i:03}"),
                entity: Some(entity.into()),
                resource: "local-process".into(),
                config: None,
                template_variables: vec![],
                prioritize: i % 3 == 0,
                description: Some(format!("bench queue {i}")),
            })
            .await?,
        );
    }
    let (job, _) = c
        .create_job(&CreateJob {
            name: "train-resnet".into(),
            entity: Some(ENTITIES[0].into()),
            source: JobSource::Image {
                image: "python:3.12-slim".into(),
            },
            description: Some("ResNet-50 on ImageNet".into()),
        })
        .await?;
    Ok((queues, job.name))
}

/// Seeds runs and logs into the (stopped) server's store.
async fn seed(
    data: &Path,
    b: &UiBench,
    queues: &[Queue],
    quota: u64,
) -> anyhow::Result<(Seeded, f64, f64)> {
    let store = Store::open(&format!("sqlite://{}", data.join("hoist.db").display()))
        .await
        .context("open the bench store")?;
    let member = |entity: &str| -> String {
        TEAMS
            .iter()
            .find(|(t, _)| *t == entity)
            .map(|(_, m)| m[0].to_string())
            .unwrap_or_else(|| entity.to_string())
    };
    let bench_queues: Vec<BenchQueue> = queues
        .iter()
        .map(|q| BenchQueue {
            id: q.id.clone(),
            entity: q.entity.clone(),
            name: q.name.clone(),
            launched_by: member(&q.entity),
        })
        .collect();
    let t0 = Instant::now();
    store
        .bench_seed_runs(&bench_queues, b.runs, chrono::Utc::now().timestamp_millis())
        .await?;
    let runs_secs = t0.elapsed().as_secs_f64();

    let first = &queues[0];
    let pick = |state: RunState, queue: Option<String>, limit: i64| {
        let store = store.clone();
        async move {
            let (runs, _) = store
                .list_runs(&RunFilter {
                    queue_id: queue,
                    state: Some(state),
                    limit,
                    ..Default::default()
                })
                .await?;
            anyhow::Ok(runs)
        }
    };
    // A run in `state` of the first queue, or (few runs seeded) its newest run.
    let (newest, _) = store
        .list_runs(&RunFilter {
            queue_id: Some(first.id.clone()),
            limit: 1,
            ..Default::default()
        })
        .await?;
    let newest = newest
        .into_iter()
        .next()
        .map(|r| r.id)
        .context("the seeding made no run in the first queue (try more --runs)")?;
    let run_in = |runs: Vec<Run>| runs.into_iter().next().map_or(newest.clone(), |r| r.id);
    let run = run_in(pick(RunState::Running, Some(first.id.clone()), 1).await?);
    let failed = run_in(pick(RunState::Failed, Some(first.id.clone()), 1).await?);
    let finished = pick(
        RunState::Finished,
        Some(first.id.clone()),
        (b.logged_runs as i64 + 1).clamp(1, 1000),
    )
    .await?;
    let big = finished.first().map_or(newest.clone(), |r| r.id.clone());

    let t0 = Instant::now();
    let logs = Arc::new(LogStore::new(
        store.clone(),
        Arc::new(FsSegments::new(data.join("blobs").join("logs"))),
        quota,
    ));
    std::fs::create_dir_all(data.join("blobs").join("logs"))?;
    for r in finished.iter().skip(1).take(b.logged_runs as usize) {
        logs.append(&r.id, log_batch(0, 200)).await?;
    }
    let big_lines = (b.log_mb * 1_000_000).div_ceil(LINE_BYTES as u64).max(1);
    let mut at = 0u64;
    while at < big_lines {
        let n = (big_lines - at).min(BATCH_LINES as u64) as usize;
        logs.append(&big, log_batch(at, n)).await?;
        at += n as u64;
    }
    let logs_secs = t0.elapsed().as_secs_f64();
    store.close().await;
    Ok((
        Seeded {
            entity: first.entity.clone(),
            queue: first.name.clone(),
            run,
            failed,
            big,
            big_lines,
            job: String::new(),
        },
        runs_secs,
        logs_secs,
    ))
}

/// Agents serving every queue, kept `polling` by heartbeats until the bench ends.
async fn agents(c: &Client, queues: &[Queue]) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut sessions = Vec::new();
    for (i, chunk) in queues.chunks(20).enumerate() {
        sessions.push(
            c.register_agent(&RegisterAgent {
                name: format!("bench-ui-{i}"),
                host: format!("gpu-node-{i:02}.bench"),
                version: hoist_core::VERSION.into(),
                queues: chunk
                    .iter()
                    .map(|q| format!("{}/{}", q.entity, q.name))
                    .collect(),
                entity: None,
                max_jobs: 8,
            })
            .await?,
        );
    }
    let c = c.clone();
    Ok(tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            for s in &sessions {
                let _ = c
                    .heartbeat(
                        &s.agent.id,
                        &Heartbeat {
                            session: s.session.clone(),
                            running: vec![],
                        },
                    )
                    .await;
            }
        }
    }))
}

pub async fn run(b: UiBench) -> anyhow::Result<()> {
    anyhow::ensure!(b.queues >= 1, "--queues must be at least 1");
    anyhow::ensure!(b.runs >= 1, "--runs must be at least 1");
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let quota = (b.log_mb * 4_000_000).max(1 << 30);
    let env = [("HOIST_MAX_LOG_BYTES_PER_RUN", quota.to_string())];
    println!(
        "hoist bench ui: server on 127.0.0.1, SQLite store in {}",
        data.display()
    );
    println!(
        "  machine: {} CPUs; {} samples per page after one warm-up, one request at a time",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        b.samples
    );

    // Users, teams, queues, a job; then the runs and logs, seeded with the server
    // stopped; then the server again over the same store.
    let srv = ServerProcess::start_with(&data, b.server_bin.as_deref(), &env)?;
    let admin = srv.client()?;
    admin.health().await?;
    let (queues, job) = create_entities(&admin, &b).await?;
    srv.stop()?;
    let (mut seeded, runs_secs, logs_secs) = seed(&data, &b, &queues, quota).await?;
    seeded.job = job;
    println!(
        "  seeded {} runs over {} queues of {} entities in {runs_secs:.1} s; logs ({} runs × 200 lines, one of {} MB: {} lines) in {logs_secs:.1} s",
        b.runs,
        queues.len(),
        ENTITIES.len().min(queues.len()),
        b.logged_runs,
        b.log_mb,
        seeded.big_lines
    );
    let srv = ServerProcess::start_with(&data, b.server_bin.as_deref(), &env)?;
    let admin = srv.client()?;
    admin.health().await?;
    let heartbeats = agents(&admin, &queues).await?;
    let user = USERS[1];
    let user_key = admin
        .create_key(&CreateApiKey {
            name: "bench-ui".into(),
            user: Some(user.into()),
        })
        .await?
        .secret;
    let as_admin = Session::sign_in(&srv.url, &srv.key).await?;
    let as_user = Session::sign_in(&srv.url, user_key.expose()).await?;
    let api = reqwest::Client::new();

    // The floor: the server's cheapest answer, over the same loopback.
    let floor = measure(|| api.get(format!("{}/healthz", srv.url)), b.samples)
        .await?
        .map_err(|s| anyhow::anyhow!("GET /healthz answered {s}"))?;
    let floor_p50 = floor.client.pct(50.0);
    println!(
        "  floor: GET /healthz, client ms p50/p95/max {}",
        triple(&floor.client)
    );

    let fill = |p: &str| {
        p.replace("{entity}", &seeded.entity)
            .replace("{queue}", &seeded.queue)
            .replace("{run}", &seeded.run)
            .replace("{failed}", &seeded.failed)
            .replace("{big}", &seeded.big)
            .replace("{mid}", &(seeded.big_lines / 2).to_string())
            .replace("{job}", &seeded.job)
    };
    let (mut passed, mut failed, mut skipped) = (0, 0, Vec::new());
    let mut tally = |label: String, r: Option<bool>| match r {
        Some(true) => passed += 1,
        Some(false) => failed += 1,
        None => skipped.push(label),
    };
    header("page (as admin: every entity)");
    for p in PAGES {
        let path = fill(p);
        let s = &as_admin;
        let r = measure(
            || {
                s.http
                    .get(format!("{}{path}", s.base))
                    .header(COOKIE, &s.cookie)
            },
            b.samples,
        )
        .await?;
        let label = if p.contains("{big}") {
            format!("{path} ({} MB log)", b.log_mb)
        } else {
            path.clone()
        };
        let label = cut_label(&label);
        tally(path, report(&label, &r, floor_p50));
    }
    header(&format!("page (as {user}: own entity and two teams)"));
    for p in USER_PAGES {
        let path = fill(p);
        let s = &as_user;
        let r = measure(
            || {
                s.http
                    .get(format!("{}{path}", s.base))
                    .header(COOKIE, &s.cookie)
            },
            b.samples,
        )
        .await?;
        tally(format!("{path} as {user}"), report(&path, &r, floor_p50));
    }

    header("API read (admin key; client time only)");
    let tail_from = seeded.big_lines.saturating_sub(1000);
    let tail = format!(
        "/api/v1/runs/{}/logs?offset={tail_from}&limit=1000",
        seeded.big
    );
    let head = format!("/api/v1/runs/{}/logs?offset=0&limit=1000", seeded.big);
    let mut reads: Vec<(String, String)> = API_READS
        .iter()
        .map(|p| (p.to_string(), p.to_string()))
        .collect();
    reads.push((
        format!("{} MB log, last 1000 lines (tail)", b.log_mb),
        tail.clone(),
    ));
    reads.push((
        format!("{} MB log, ?tail=1000 (where it exists)", b.log_mb),
        format!("/api/v1/runs/{}/logs?tail=1000", seeded.big),
    ));
    reads.push((format!("{} MB log, first 1000 lines", b.log_mb), head));
    for (label, path) in &reads {
        let r = measure(
            || api.get(format!("{}{path}", srv.url)).bearer_auth(&srv.key),
            b.samples,
        )
        .await?;
        report(label, &r, floor_p50);
    }
    // The tail read must be the log's tail.
    let page = admin.read_logs(&seeded.big, tail_from, Some(1000)).await?;
    anyhow::ensure!(
        page.lines.last().map(|l| l.offset + 1) == Some(seeded.big_lines),
        "the tail read did not end at the log's last line"
    );

    println!();
    println!(
        "  pages: {passed} meet the target, {failed} miss it, {} skipped (not on this build){}",
        skipped.len(),
        if skipped.is_empty() {
            String::new()
        } else {
            format!(": {}", skipped.join(", "))
        }
    );
    heartbeats.abort();
    srv.stop()?;
    Ok(())
}
