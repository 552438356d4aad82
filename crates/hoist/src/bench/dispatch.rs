//! `hoist bench dispatch`: server and agent as child processes on 127.0.0.1 with the
//! default store.
//!
//! - dispatch latency: from sending the launch to the job's process having started.
//!   The job stamps its own start (`date +%s%N` for local processes, busybox
//!   `$EPOCHREALTIME` in containers) into its log; sequential launches.
//! - for docker, the floor: the same container created and started directly through
//!   the Engine API, stamped the same way.
//! - for local processes, the floor: the same command spawned directly.
//! - short-job throughput: N runs of `true` through one agent at `-j 16`.
//! - agent idle: RSS and CPU over a window with its claim open.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures::StreamExt;
use hoist_client::{Client, RunQuery};
use hoist_core::api::*;
use hoist_core::run::RunState;

use super::{Memory, Samples, ServerProcess, Target, cpu_time, line, mb, memory, ms, rss_bytes};

#[derive(Debug, Clone, clap::Args)]
pub struct DispatchBench {
    /// Sequential launches per dispatch-latency figure.
    #[arg(long, default_value_t = 200)]
    pub samples: usize,
    /// Runs of `true` in the throughput figure.
    #[arg(long, default_value_t = 1000)]
    pub runs: usize,
    /// Seconds the idle agent is watched.
    #[arg(long, default_value_t = 60)]
    pub idle_secs: u64,
    /// Docker image for the container figures (must have busybox `sh`).
    #[arg(long, default_value = "hoist-test/busybox:latest")]
    pub image: String,
    /// Skip the Docker figures.
    #[arg(long)]
    pub no_docker: bool,
    /// Also measure Kubernetes dispatch against the cluster of `KUBECONFIG` (the image
    /// must be on the node already: it is not pulled).
    #[cfg(feature = "kubernetes")]
    #[arg(long)]
    pub kubernetes: bool,
    /// Sequential launches per Kubernetes dispatch figure (and as many for its floor).
    #[cfg(feature = "kubernetes")]
    #[arg(long, default_value_t = 50)]
    pub kube_samples: usize,
    /// Measure only these cloud targets, against the scripted fakes of `hoist-fakes`
    /// served by the bench (launch → create call, against the create call sent
    /// directly; API calls per run). Repeatable.
    #[arg(long, value_enum)]
    pub resource: Vec<super::cloud::CloudResource>,
    /// Sequential launches per cloud dispatch figure (and as many floor calls).
    #[arg(long, default_value_t = 50)]
    pub cloud_samples: usize,
    /// How long the cloud figures' long job trains, in seconds.
    #[arg(long, default_value_t = 60)]
    pub cloud_long_secs: u64,
}

pub(crate) struct AgentProcess(pub(crate) Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let t0 = Instant::now();
        while let Ok(None) = self.0.try_wait() {
            if t0.elapsed() > Duration::from_secs(20) {
                let _ = self.0.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.wait();
    }
}

pub(crate) fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as i128
}

/// Parses `1700000000123456789` (date +%s%N) or `1700000000.123456` ($EPOCHREALTIME).
pub(crate) fn parse_stamp(s: &str) -> Option<i128> {
    let s = s.trim();
    match s.split_once('.') {
        Some((sec, frac)) => {
            let sec: i128 = sec.parse().ok()?;
            let mut frac = frac.to_string();
            frac.truncate(9);
            while frac.len() < 9 {
                frac.push('0');
            }
            Some(sec * 1_000_000_000 + frac.parse::<i128>().ok()?)
        }
        None => s.parse().ok(),
    }
}

pub(crate) async fn create_queue(
    c: &Client,
    name: &str,
    resource: &str,
    config: serde_json::Value,
) -> anyhow::Result<()> {
    c.create_queue(&CreateQueue {
        name: name.into(),
        entity: None,
        resource: resource.into(),
        config: Some(config),
        template_variables: vec![],
        prioritize: false,
        description: None,
    })
    .await?;
    Ok(())
}

/// Launch → the job's own start stamp, sequentially.
pub(crate) async fn dispatch(
    c: &Client,
    req: &LaunchRequest,
    samples: usize,
) -> anyhow::Result<Samples> {
    let mut out = Samples::default();
    for _ in 0..samples {
        let sent = now_ns();
        let run = c.launch(req).await?;
        let stream = c.follow_logs(&run.id, 0).await?;
        futures::pin_mut!(stream);
        let mut stamp = None;
        while let Some(l) = stream.next().await {
            let l = l?;
            if let Some(s) = parse_stamp(&l.text) {
                stamp = Some(s);
            }
        }
        let Some(stamp) = stamp else {
            let r = c.get_run(&run.id).await?;
            bail!(
                "run {} printed no start stamp (state {}, {:?})",
                run.id,
                r.state,
                r.failure
            );
        };
        out.push(Duration::from_nanos((stamp - sent).max(0) as u64));
    }
    Ok(out)
}

/// The same container, created and started directly through the Engine API.
async fn docker_floor(image: &str, samples: usize) -> anyhow::Result<Samples> {
    use bollard::models::{ContainerCreateBody, HostConfig};
    use bollard::query_parameters::{
        CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
        WaitContainerOptions,
    };
    let docker = bollard::Docker::connect_with_unix_defaults()?
        .negotiate_version()
        .await?;
    let mut out = Samples::default();
    for i in 0..samples {
        let name = format!("hoist-bench-floor-{}-{i}", std::process::id());
        let sent = now_ns();
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: Some(vec!["sh".into(), "-c".into(), "echo $EPOCHREALTIME".into()]),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = docker
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                body,
            )
            .await?;
        docker
            .start_container(
                &created.id,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await?;
        let mut wait = docker.wait_container(&created.id, None::<WaitContainerOptions>);
        while wait.next().await.is_some() {}
        let mut logs = docker.logs(
            &created.id,
            Some(LogsOptionsBuilder::new().stdout(true).build()),
        );
        let mut stamp = None;
        while let Some(chunk) = logs.next().await {
            if let Some(s) = parse_stamp(&chunk?.to_string()) {
                stamp = Some(s);
            }
        }
        docker
            .remove_container(
                &created.id,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await?;
        let stamp = stamp.context("the floor container printed no stamp")?;
        out.push(Duration::from_nanos((stamp - sent).max(0) as u64));
    }
    Ok(out)
}

/// The same command spawned directly.
async fn local_floor(samples: usize) -> anyhow::Result<Samples> {
    let mut out = Samples::default();
    for _ in 0..samples {
        let sent = now_ns();
        let o = tokio::process::Command::new("date")
            .arg("+%s%N")
            .output()
            .await?;
        let stamp =
            parse_stamp(&String::from_utf8_lossy(&o.stdout)).context("date printed no stamp")?;
        out.push(Duration::from_nanos((stamp - sent).max(0) as u64));
    }
    Ok(out)
}

/// Watches a process for `secs` and prints its peak RSS and CPU share.
async fn idle(pid: u32, secs: u64, when: &str) {
    let cpu0 = cpu_time(pid).unwrap_or_default();
    let w0 = Instant::now();
    let mut peak = Memory::default();
    while w0.elapsed() < Duration::from_secs(secs) {
        if let Some(m) = memory(pid)
            && m.rss >= peak.rss
        {
            peak = m;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let cpu = cpu_time(pid).unwrap_or_default().saturating_sub(cpu0);
    let pct = cpu.as_secs_f64() / w0.elapsed().as_secs_f64() * 100.0;
    line(
        &format!("agent RSS idle, {when} (peak over {secs} s)"),
        &mb(peak.rss),
        peak.rss as f64 / 1e6,
        Some(Target::AtMost(15.0, "15 MB")),
    );
    line(
        "  of which the agent's own memory (heap, stacks)",
        &mb(peak.anon),
        peak.anon as f64 / 1e6,
        None,
    );
    line(
        "  of which mapped pages of the binary and libc (shared)",
        &mb(peak.file),
        peak.file as f64 / 1e6,
        None,
    );
    line(
        &format!("agent CPU idle, {when}"),
        &format!("{pct:.2} %"),
        pct,
        None,
    );
}

pub(crate) async fn wait_registered(c: &Client, name: &str) -> anyhow::Result<Agent> {
    let t0 = Instant::now();
    loop {
        if let Some(a) = c
            .list_agents()
            .await?
            .into_iter()
            .find(|a| a.name == name && a.status != AgentStatus::Stopped)
        {
            return Ok(a);
        }
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("the agent did not register within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn run(b: DispatchBench) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    println!(
        "hoist bench dispatch: server and agent on 127.0.0.1, SQLite store in {}",
        data.display()
    );
    let srv = ServerProcess::start(&data)?;
    let c = srv.client()?;
    if !b.resource.is_empty() {
        for r in &b.resource {
            super::cloud::run(&c, &srv, dir.path(), *r, b.cloud_samples, b.cloud_long_secs).await?;
        }
        srv.stop()?;
        return Ok(());
    }
    create_queue(&c, "lp", "local-process", serde_json::json!({})).await?;
    let docker = !b.no_docker && super::docker_answers().await;
    if docker {
        create_queue(&c, "dk", "docker", serde_json::json!({"network": "none"})).await?;
    } else if !b.no_docker {
        println!("  (no Docker daemon answers: the docker figures are skipped)");
    }
    let mut args = vec![
        "agent".to_string(),
        "--name".into(),
        "bench".into(),
        "-j".into(),
        "16".into(),
        "-q".into(),
        "lp".into(),
    ];
    if docker {
        args.extend(["-q".into(), "dk".into()]);
    }
    let agent = AgentProcess(
        Command::new(std::env::current_exe()?)
            .args(&args)
            .env("HOIST_HOST", &srv.url)
            .env("HOIST_API_KEY", &srv.key)
            .env("HOIST_LOG", "warn")
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start `hoist agent`")?,
    );
    wait_registered(&c, "bench").await?;
    // Agent idle, fresh: registered, its claim open, nothing run yet.
    tokio::time::sleep(Duration::from_secs(1)).await;
    idle(agent.0.id(), b.idle_secs, "fresh").await;

    // Dispatch latency.
    let lp = LaunchRequest {
        queue: "lp".into(),
        entry_point: Some(vec!["date".into(), "+%s%N".into()]),
        ..Default::default()
    };
    dispatch(&c, &lp, 10).await?; // warm up
    let d = dispatch(&c, &lp, b.samples).await?;
    let f = local_floor(b.samples).await?;
    let (p50, p99) = (d.pct(50.0), d.pct(99.0));
    line(
        "local-process dispatch p50 (launch → job start)",
        &ms(p50),
        p50.as_secs_f64() * 1e3,
        Some(Target::AtMost(10.0, "10 ms")),
    );
    line(
        "local-process dispatch p99",
        &ms(p99),
        p99.as_secs_f64() * 1e3,
        Some(Target::AtMost(50.0, "50 ms")),
    );
    line(
        "  floor: the same command spawned directly, p50",
        &ms(f.pct(50.0)),
        0.0,
        None,
    );
    if docker {
        let dk = LaunchRequest {
            queue: "dk".into(),
            image: Some(b.image.clone()),
            entry_point: Some(vec!["sh".into(), "-c".into(), "echo $EPOCHREALTIME".into()]),
            ..Default::default()
        };
        dispatch(&c, &dk, 5).await?;
        let dd = dispatch(&c, &dk, b.samples).await?;
        let floor = docker_floor(&b.image, b.samples).await?;
        let ratio50 = dd.pct(50.0).as_secs_f64() / floor.pct(50.0).as_secs_f64().max(1e-9);
        let ratio99 = dd.pct(99.0).as_secs_f64() / floor.pct(99.0).as_secs_f64().max(1e-9);
        line(
            "docker dispatch p50 (launch → container start)",
            &ms(dd.pct(50.0)),
            dd.pct(50.0).as_secs_f64() * 1e3,
            None,
        );
        line(
            "docker dispatch p99",
            &ms(dd.pct(99.0)),
            dd.pct(99.0).as_secs_f64() * 1e3,
            None,
        );
        line(
            "  floor: Engine API create+start directly, p50",
            &ms(floor.pct(50.0)),
            floor.pct(50.0).as_secs_f64() * 1e3,
            None,
        );
        line(
            "  floor p99",
            &ms(floor.pct(99.0)),
            floor.pct(99.0).as_secs_f64() * 1e3,
            None,
        );
        line(
            "docker dispatch / floor, p50",
            &format!("{ratio50:.2}×"),
            ratio50,
            Some(Target::AtMost(1.2, "1.2×")),
        );
        line(
            "docker dispatch / floor, p99",
            &format!("{ratio99:.2}×"),
            ratio99,
            None,
        );
    }

    #[cfg(feature = "kubernetes")]
    if b.kubernetes {
        super::kubernetes::run(&c, &srv.url, &srv.key, dir.path(), &b.image, b.kube_samples)
            .await?;
    }

    // Short-job throughput through one agent at -j 16.
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..16 {
        let (c, next, n) = (c.clone(), next.clone(), b.runs);
        tasks.push(tokio::spawn(async move {
            let req = LaunchRequest {
                queue: "lp".into(),
                entry_point: Some(vec!["true".into()]),
                ..Default::default()
            };
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                c.launch(&req).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    loop {
        let queued = c
            .list_runs(&RunQuery {
                queue: Some("lp".into()),
                state: Some(RunState::Queued),
                limit: Some(1),
                ..Default::default()
            })
            .await?;
        let active = c
            .get_agent(&wait_registered(&c, "bench").await?.id)
            .await?
            .running;
        if queued.runs.is_empty() && active == 0 {
            break;
        }
        if t0.elapsed() > Duration::from_secs(600) {
            bail!("the throughput runs did not finish within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let tput = b.runs as f64 / secs;
    line(
        &format!("short-job throughput, {} runs of `true`, -j 16", b.runs),
        &format!("{tput:.0} runs/s"),
        tput,
        Some(Target::AtLeast(200.0, "200/s")),
    );

    // Agent idle, after the bursts above.
    tokio::time::sleep(Duration::from_secs(2)).await;
    idle(agent.0.id(), b.idle_secs, "after the runs above").await;
    let srv_rss = rss_bytes(srv.pid()).unwrap_or(0);
    line(
        "server RSS after the bench",
        &mb(srv_rss),
        srv_rss as f64 / 1e6,
        None,
    );
    drop(agent);
    srv.stop()?;
    Ok(())
}
