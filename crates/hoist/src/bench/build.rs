//! `hoist bench build`: image builds through server + agent child processes.
//!
//! - cache-hit path: an unchanged code job launched again: from the launch to the job's
//!   process start (the build check included), against the same run of the prebuilt
//!   image (`--image`); target ≤ 1.5×.
//! - cold build: a small job with new content each round, hoist's build (from the run's
//!   `building` transition to `starting`: fetching the artifact, packing, hashing,
//!   checking the destination, building) against `docker build` of the same directory
//!   and Dockerfile; medians of interleaved rounds; target ≤ 1.1×.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hoist_client::Client;
use hoist_core::api::*;
use hoist_core::run::RunState;

use super::dispatch::{AgentProcess, create_queue, dispatch, wait_registered};
use super::{Samples, ServerProcess, Target, line, ms};

#[derive(Debug, Clone, clap::Args)]
pub struct BuildBench {
    /// Sequential launches per cache-hit figure.
    #[arg(long, default_value_t = 100)]
    pub samples: usize,
    /// Cold-build rounds (each variant once per round, interleaved).
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    /// Base image of the job's Dockerfile (must have busybox `sh`).
    #[arg(long, default_value = "hoist-test/busybox:latest")]
    pub image: String,
}

fn write_job_dir(dir: &std::path::Path, base: &str, nonce: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM {base}\nCOPY src /app/src\nRUN cat /app/src/nonce.txt > /app/built.txt\nWORKDIR /app\n"
        ),
    )?;
    for i in 0..20 {
        std::fs::write(
            dir.join(format!("src/module_{i}.py")),
            format!("# module {i}\nVALUE = {i}\n"),
        )?;
    }
    std::fs::write(dir.join("src/nonce.txt"), nonce)?;
    Ok(())
}

async fn upload_job(c: &Client, dir: &std::path::Path, name: &str) -> anyhow::Result<()> {
    let packed = hoist_context::pack_dir(dir, &Default::default())?;
    let blob = c.upload_blob(std::fs::read(&packed.path)?, None).await?;
    c.create_job(&CreateJob {
        name: name.into(),
        entity: None,
        source: JobSource::Code {
            artifact: blob.digest,
            size: blob.size,
            entry_point: vec!["sh".into(), "-c".into(), "echo $EPOCHREALTIME".into()],
            dockerfile: None,
        },
        description: None,
    })
    .await?;
    Ok(())
}

async fn wait_ended(c: &Client, id: &str) -> anyhow::Result<Run> {
    let t0 = Instant::now();
    loop {
        let r = c.get_run(id).await?;
        if r.state.is_terminal() {
            return Ok(r);
        }
        if t0.elapsed() > Duration::from_secs(300) {
            bail!("run {id} did not end within 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn nonce() -> String {
    format!("{}", super::dispatch::now_ns())
}

pub async fn run(b: BuildBench) -> anyhow::Result<()> {
    if !super::docker_answers().await {
        bail!("hoist bench build needs a Docker daemon");
    }
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    println!(
        "hoist bench build: server and agent on 127.0.0.1, docker builder on the local daemon"
    );
    let srv = ServerProcess::start(&data)?;
    let c = srv.client()?;
    create_queue(&c, "dk", "docker", serde_json::json!({"network": "none"})).await?;
    let agent = AgentProcess(
        Command::new(std::env::current_exe()?)
            .args(["agent", "--name", "bench-build", "-j", "4", "-q", "dk"])
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
    wait_registered(&c, "bench-build").await?;
    let mut made_images: Vec<String> = Vec::new();

    // Cache-hit path.
    let job_dir = dir.path().join("job");
    write_job_dir(&job_dir, &b.image, &nonce())?;
    upload_job(&c, &job_dir, "cached").await?;
    let job_req = LaunchRequest {
        queue: "dk".into(),
        job: Some(JobRef::parse("cached").map_err(anyhow::Error::msg)?),
        ..Default::default()
    };
    // The first launch builds; its image is the prebuilt one to compare with.
    let first = c.launch(&job_req).await?;
    let r = wait_ended(&c, &first.id).await?;
    if r.state != RunState::Finished {
        bail!("the first build failed: {:?}", r.failure);
    }
    let built = r
        .timeline
        .unwrap_or_default()
        .iter()
        .find(|t| t.to == RunState::Starting)
        .and_then(|t| {
            t.reason
                .split_whitespace()
                .find(|w| w.starts_with("hoist-build:"))
                .map(str::to_string)
        })
        .context("the starting transition names no built image")?;
    made_images.push(built.clone());
    let prebuilt_req = LaunchRequest {
        queue: "dk".into(),
        image: Some(built.clone()),
        entry_point: Some(vec!["sh".into(), "-c".into(), "echo $EPOCHREALTIME".into()]),
        ..Default::default()
    };
    dispatch(&c, &job_req, 3).await?;
    dispatch(&c, &prebuilt_req, 3).await?;
    let mut hit = Samples::default();
    let mut pre = Samples::default();
    // Interleaved in blocks, so drift in the daemon's speed hits both alike.
    for _ in 0..b.samples.div_ceil(10) {
        hit.0.extend(dispatch(&c, &job_req, 10).await?.0);
        pre.0.extend(dispatch(&c, &prebuilt_req, 10).await?.0);
    }
    let ratio = hit.pct(50.0).as_secs_f64() / pre.pct(50.0).as_secs_f64().max(1e-9);
    line(
        "cache hit: code job launch → start, p50",
        &ms(hit.pct(50.0)),
        0.0,
        None,
    );
    line(
        "cache hit: code job launch → start, p99",
        &ms(hit.pct(99.0)),
        0.0,
        None,
    );
    line(
        "prebuilt image launch → start, p50",
        &ms(pre.pct(50.0)),
        0.0,
        None,
    );
    line(
        "prebuilt image launch → start, p99",
        &ms(pre.pct(99.0)),
        0.0,
        None,
    );
    line(
        "cache-hit / prebuilt, p50",
        &format!("{ratio:.2}×"),
        ratio,
        Some(Target::AtMost(1.5, "1.5×")),
    );

    // Cold builds: hoist vs `docker build`, new content each time, interleaved.
    let mut hoist_builds = Samples::default();
    let mut docker_builds = Samples::default();
    for round in 0..b.rounds {
        let d = dir.path().join(format!("cold-{round}"));
        write_job_dir(&d, &b.image, &nonce())?;
        upload_job(&c, &d, "cold").await?;
        let run = c
            .launch(&LaunchRequest {
                queue: "dk".into(),
                job: Some(JobRef::parse("cold").map_err(anyhow::Error::msg)?),
                ..Default::default()
            })
            .await?;
        let r = wait_ended(&c, &run.id).await?;
        let tl = r.timeline.unwrap_or_default();
        let building = tl
            .iter()
            .find(|t| t.to == RunState::Building)
            .context("no building transition")?;
        let starting = tl
            .iter()
            .find(|t| t.to == RunState::Starting)
            .context("the build failed")?;
        if let Some(img) = starting
            .reason
            .split_whitespace()
            .find(|w| w.starts_with("hoist-build:"))
        {
            made_images.push(img.to_string());
        }
        hoist_builds.push((starting.at - building.at).to_std().unwrap_or_default());

        let d2 = dir.path().join(format!("cold-docker-{round}"));
        write_job_dir(&d2, &b.image, &nonce())?;
        let tag = format!("hoist-bench-docker-build:{round}-{}", std::process::id());
        let t0 = Instant::now();
        let st = Command::new("docker")
            .args(["build", "-q", "--network", "none", "-t", &tag])
            .arg(&d2)
            .env("DOCKER_BUILDKIT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("cannot run `docker build` (the comparison needs the docker CLI)")?;
        docker_builds.push(t0.elapsed());
        if !st.success() {
            bail!("`docker build` failed");
        }
        made_images.push(tag);
    }
    let r50 =
        hoist_builds.pct(50.0).as_secs_f64() / docker_builds.pct(50.0).as_secs_f64().max(1e-9);
    line(
        "cold build, hoist (building → starting), median",
        &ms(hoist_builds.pct(50.0)),
        0.0,
        None,
    );
    line(
        "cold build, `docker build` of the same, median",
        &ms(docker_builds.pct(50.0)),
        0.0,
        None,
    );
    line(
        "cold build hoist / docker build, median",
        &format!("{r50:.2}×"),
        r50,
        Some(Target::AtMost(1.1, "1.1×")),
    );

    drop(agent);
    srv.stop()?;
    if let Ok(d) = bollard::Docker::connect_with_unix_defaults()
        && let Ok(d) = d.negotiate_version().await
    {
        for img in made_images {
            let _ = d
                .remove_image(
                    &img,
                    None::<bollard::query_parameters::RemoveImageOptions>,
                    None,
                )
                .await;
        }
    }
    Ok(())
}
