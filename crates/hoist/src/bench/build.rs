//! `hoist bench build`: image builds through server + agent child processes.
//!
//! - cache-hit path: an unchanged code job launched again: from the launch to the job's
//!   process start (the build check included), against the same run of the prebuilt
//!   image (`--image`); target ≤ 1.5×.
//! - cold build: a small job with new content each round, hoist's build (from the run's
//!   `building` transition to `starting`: fetching the artifact, packing, hashing,
//!   checking the destination, building) against `docker build` of the same directory
//!   and Dockerfile; medians of interleaved rounds; target ≤ 1.1×.
//! - with `--kaniko-agent-config` and `--kaniko-queue-config`, the in-cluster builder
//!   against the docker builder on the same small code job: a second agent (this
//!   process's environment passed through, so `KUBECONFIG` and `AWS_*` reach it) serves
//!   a kubernetes queue with `builder.type: kaniko`. Each round uploads a new version of
//!   the job and launches it on both queues (cold builds: for kaniko the context upload,
//!   the build Job, the push, then the run's pod from the pushed image; for docker the
//!   build on the local daemon, then the container), then relaunches it unchanged on
//!   both (cache hits). Every figure is launch → the job's own start stamp; the order of
//!   the two builders swaps each round so that drift weighs on both. Medians (p90 from
//!   five samples on), the ratios kaniko / docker, and where a cold build's time goes
//!   (the run's timeline and the times of its log lines). A first round warms both up
//!   and is shown apart.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures::StreamExt;
use hoist_client::Client;
use hoist_core::api::*;
use hoist_core::run::RunState;

use super::dispatch::{AgentProcess, create_queue, dispatch, now_ns, parse_stamp, wait_registered};
use super::{Samples, ServerProcess, Target, line, ms};

#[derive(Debug, Clone, clap::Args)]
pub struct BuildBench {
    /// Sequential launches per cache-hit figure.
    #[arg(long, default_value_t = 100)]
    pub samples: usize,
    /// Cold-build rounds (each variant once per round, interleaved).
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    /// Base image of the job's Dockerfile (must have busybox `sh`). With the kaniko
    /// figures both builders build on it: the executor must be able to pull it.
    #[arg(long, default_value = "hoist-test/busybox:latest")]
    pub image: String,
    /// Also compare the in-cluster builder with the docker builder: the
    /// launch-config.yaml of an agent with `builder.type: kaniko` (its registry,
    /// environment and `kubernetes:` settings). That agent talks to the cluster of
    /// `KUBECONFIG` and gets this process's environment.
    #[arg(long, value_name = "FILE", requires = "kaniko_queue_config")]
    pub kaniko_agent_config: Option<PathBuf>,
    /// The config of the kubernetes queue for the kaniko figures (YAML or JSON): a
    /// batch/v1 Job whose container's image is `${image_uri}`.
    #[arg(long, value_name = "FILE", requires = "kaniko_agent_config")]
    pub kaniko_queue_config: Option<PathBuf>,
    /// Counted kaniko rounds (after one warm-up round): each builds a new version of the
    /// job cold on both builders, then relaunches it unchanged.
    #[arg(long, default_value_t = 3)]
    pub kaniko_rounds: usize,
    /// Cache-hit relaunches per builder in each kaniko round.
    #[arg(long, default_value_t = 3)]
    pub kaniko_hits: usize,
    /// Only the kaniko comparison (skips the cache-hit/prebuilt and `docker build`
    /// figures).
    #[arg(long, requires = "kaniko_agent_config")]
    pub kaniko_only: bool,
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
    // The images are removed whatever the outcome.
    let result = async {
        if !b.kaniko_only {
            docker_figures(&b, &c, dir.path(), &mut made_images).await?;
        }
        if let (Some(agent_config), Some(queue_config)) =
            (&b.kaniko_agent_config, &b.kaniko_queue_config)
        {
            kaniko_figures(
                &b,
                &c,
                &srv,
                dir.path(),
                agent_config,
                queue_config,
                &mut made_images,
            )
            .await?;
        }
        anyhow::Ok(())
    }
    .await;

    drop(agent);
    srv.stop()?;
    if let Ok(d) = bollard::Docker::connect_with_unix_defaults()
        && let Ok(d) = d.negotiate_version().await
    {
        made_images.sort();
        made_images.dedup();
        // An image the kubelet pulled for a run is in use until the kubelet has removed
        // the run's exited container, some time after the pod went: a conflict is
        // retried for a while, then the image is removed by force (the container keeps
        // its layers until it goes).
        let deadline = Instant::now() + Duration::from_secs(30);
        for img in made_images {
            loop {
                let force = Instant::now() >= deadline;
                let r = d
                    .remove_image(
                        &img,
                        Some(
                            bollard::query_parameters::RemoveImageOptionsBuilder::new()
                                .force(force)
                                .build(),
                        ),
                        None,
                    )
                    .await;
                match r {
                    Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 409,
                        ..
                    }) if !force => {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    _ => break,
                }
            }
        }
    }
    result
}

/// The cache-hit path against the prebuilt image, and cold builds against `docker
/// build`.
async fn docker_figures(
    b: &BuildBench,
    c: &Client,
    dir: &Path,
    made: &mut Vec<String>,
) -> anyhow::Result<()> {
    // Cache-hit path.
    let job_dir = dir.join("job");
    write_job_dir(&job_dir, &b.image, &nonce())?;
    upload_job(c, &job_dir, "cached").await?;
    let job_req = LaunchRequest {
        queue: "dk".into(),
        job: Some(JobRef::parse("cached").map_err(anyhow::Error::msg)?),
        ..Default::default()
    };
    // The first launch builds; its image is the prebuilt one to compare with.
    let first = c.launch(&job_req).await?;
    let r = wait_ended(c, &first.id).await?;
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
    made.push(built.clone());
    let prebuilt_req = LaunchRequest {
        queue: "dk".into(),
        image: Some(built.clone()),
        entry_point: Some(vec!["sh".into(), "-c".into(), "echo $EPOCHREALTIME".into()]),
        ..Default::default()
    };
    dispatch(c, &job_req, 3).await?;
    dispatch(c, &prebuilt_req, 3).await?;
    let mut hit = Samples::default();
    let mut pre = Samples::default();
    // Interleaved in blocks, so drift in the daemon's speed hits both alike.
    for _ in 0..b.samples.div_ceil(10) {
        hit.0.extend(dispatch(c, &job_req, 10).await?.0);
        pre.0.extend(dispatch(c, &prebuilt_req, 10).await?.0);
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
        let d = dir.join(format!("cold-{round}"));
        write_job_dir(&d, &b.image, &nonce())?;
        upload_job(c, &d, "cold").await?;
        let run = c
            .launch(&LaunchRequest {
                queue: "dk".into(),
                job: Some(JobRef::parse("cold").map_err(anyhow::Error::msg)?),
                ..Default::default()
            })
            .await?;
        let r = wait_ended(c, &run.id).await?;
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
            made.push(img.to_string());
        }
        hoist_builds.push((starting.at - building.at).to_std().unwrap_or_default());

        let d2 = dir.join(format!("cold-docker-{round}"));
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
        made.push(tag);
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

    Ok(())
}

/// One launch followed to its end: the time it was sent, the job's own start stamp, the
/// run as it ended and its log.
struct Launched {
    sent: i128,
    stamp: i128,
    run: Run,
    log: Vec<StoredLogLine>,
}

impl Launched {
    /// Launch sent → the job's process started.
    fn latency(&self) -> Duration {
        Duration::from_nanos((self.stamp - self.sent).max(0) as u64)
    }

    /// The image the agent built or found for the run (the run records it).
    fn built(&self) -> anyhow::Result<&BuiltImage> {
        self.run
            .built
            .as_ref()
            .with_context(|| format!("run {} records no built image", self.run.id))
    }

    fn system_line(&self, want: impl Fn(&str) -> bool) -> Option<usize> {
        self.log
            .iter()
            .position(|l| l.stream == LogStream::System && want(&l.text))
    }

    fn transition(&self, to: RunState) -> Option<i128> {
        let tl = self.run.timeline.as_deref().unwrap_or_default();
        let at = tl.iter().find(|t| t.to == to)?.at;
        at.timestamp_nanos_opt().map(i128::from)
    }

    fn line_at(&self, i: Option<usize>) -> Option<i128> {
        self.log[i?].ts.timestamp_nanos_opt().map(i128::from)
    }

    /// The moments of the run that are known, in order: its transitions and the log
    /// lines of the build's steps (a docker build has no upload, Job or push lines).
    fn events(&self) -> Vec<(&'static str, i128)> {
        let job_created = self.system_line(|t| t.contains(" in the Kubernetes Job "));
        // The executor's first line of output: the first line after the Job's that is
        // not hoist's own.
        let executor = job_created.and_then(|j| {
            self.log
                .iter()
                .skip(j + 1)
                .position(|l| l.stream == LogStream::System && !l.text.contains("[hoist: "))
                .map(|k| j + 1 + k)
        });
        let all =
            [
                ("launch", Some(self.sent)),
                ("claimed", self.transition(RunState::Claimed)),
                ("building", self.transition(RunState::Building)),
                (
                    "packed+checked",
                    self.line_at(self.system_line(|t| {
                        t.contains("[hoist: building ") && t.contains(" for job ")
                    })),
                ),
                (
                    "uploaded",
                    self.line_at(self.system_line(|t| {
                        t.contains("[hoist: uploaded the build context")
                            || (t.contains("[hoist: build context ")
                                && t.contains("in the store already"))
                    })),
                ),
                ("build Job made", self.line_at(job_created)),
                ("executor 1st line", self.line_at(executor)),
                (
                    "pushed",
                    self.line_at(self.system_line(|t| t.contains("[hoist: pushed "))),
                ),
                (
                    "built",
                    self.line_at(self.system_line(|t| t.contains("[hoist: built "))),
                ),
                ("starting", self.transition(RunState::Starting)),
                ("job process", Some(self.stamp)),
            ];
        all.into_iter()
            .filter_map(|(what, at)| at.map(|at| (what, at)))
            .collect()
    }
}

/// Launches `req`, follows the run's log to its end and reads the run; the run must
/// have finished and printed its start stamp (build output is on the system stream,
/// so a number the build printed is not taken for it).
async fn launch_followed(
    c: &Client,
    req: &LaunchRequest,
    agent_log: Option<&Path>,
) -> anyhow::Result<Launched> {
    let sent = now_ns();
    let launched = c.launch(req).await?;
    let follow = async {
        let stream = c.follow_logs(&launched.id, 0).await?;
        futures::pin_mut!(stream);
        let mut log = Vec::new();
        while let Some(l) = stream.next().await {
            log.push(l?);
        }
        anyhow::Ok(log)
    };
    let log = tokio::time::timeout(Duration::from_secs(900), follow)
        .await
        .map_err(|_| anyhow!("run {} did not end within 15 minutes", launched.id))??;
    let run = c.get_run(&launched.id).await?;
    let stamp = log
        .iter()
        .filter(|l| l.stream != LogStream::System)
        .find_map(|l| parse_stamp(&l.text));
    match stamp {
        Some(stamp) if run.state == RunState::Finished => Ok(Launched {
            sent,
            stamp,
            run,
            log,
        }),
        _ => {
            let mut msg = format!(
                "run {} on queue {} ended {} without a start stamp: {}\nits log's last lines:",
                run.id,
                req.queue,
                run.state,
                run.failure
                    .as_ref()
                    .map_or("no failure recorded", |f| f.message.as_str())
            );
            for l in log.iter().rev().take(30).rev() {
                msg.push_str("\n  ");
                msg.push_str(&l.text);
            }
            if let Some(p) = agent_log {
                msg.push_str(&format!(
                    "\nthe agent's log ({}):\n{}",
                    p.display(),
                    tail(p)
                ));
            }
            Err(anyhow!(msg))
        }
    }
}

/// The last lines of a file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Seconds, for figures of seconds.
fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Each phase of a run (between two consecutive known moments of [`Launched::events`]),
/// in the order first seen.
#[derive(Default)]
struct Phases(Vec<(String, Samples)>);

impl Phases {
    fn add(&mut self, l: &Launched) {
        for w in l.events().windows(2) {
            let name = format!("{} → {}", w[0].0, w[1].0);
            let d = Duration::from_nanos((w[1].1 - w[0].1).max(0) as u64);
            match self.0.iter_mut().find(|(n, _)| *n == name) {
                Some((_, s)) => s.push(d),
                None => self.0.push((name, Samples(vec![d]))),
            }
        }
    }

    fn print(&self, who: &str) {
        for (name, s) in &self.0 {
            line(&format!("  {who} {name}"), &secs(s.pct(50.0)), 0.0, None);
        }
    }
}

/// Median, and p90 from five samples on.
fn print_figure(name: &str, s: &Samples, show: fn(Duration) -> String) {
    line(&format!("{name}, median"), &show(s.pct(50.0)), 0.0, None);
    if s.0.len() >= 5 {
        line(&format!("{name}, p90"), &show(s.pct(90.0)), 0.0, None);
    }
}

fn ratio_line(name: &str, a: &Samples, b: &Samples) {
    let r = a.pct(50.0).as_secs_f64() / b.pct(50.0).as_secs_f64().max(1e-9);
    line(name, &format!("{r:.2}×"), r, None);
}

/// The kaniko builder against the docker builder on the same job: cold builds and
/// cache-hit relaunches, launch → the job's process start.
async fn kaniko_figures(
    b: &BuildBench,
    c: &Client,
    srv: &ServerProcess,
    dir: &Path,
    agent_config: &Path,
    queue_config: &Path,
    made: &mut Vec<String>,
) -> anyhow::Result<()> {
    let queue_text = std::fs::read_to_string(queue_config)
        .with_context(|| format!("cannot read {}", queue_config.display()))?;
    create_queue(c, "kq", "kubernetes", serde_json::Value::String(queue_text)).await?;
    let agent_log = dir.join("kaniko-agent.log");
    let log_file = std::fs::File::create(&agent_log)?;
    // This process's environment goes through (KUBECONFIG, AWS_*, …).
    let _agent = AgentProcess(
        Command::new(std::env::current_exe()?)
            .args(["agent", "--name", "bench-kaniko", "-j", "4", "--config"])
            .arg(agent_config)
            .args(["-q", "kq"])
            .env("HOIST_HOST", &srv.url)
            .env("HOIST_API_KEY", &srv.key)
            .env("HOIST_LOG", "info")
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file.try_clone()?))
            .stderr(Stdio::from(log_file))
            .spawn()
            .context("cannot start the kaniko `hoist agent`")?,
    );
    if let Err(e) = wait_registered(c, "bench-kaniko").await {
        bail!(
            "the kaniko agent: {e}; its log ({}):\n{}",
            agent_log.display(),
            tail(&agent_log)
        );
    }
    println!(
        "  kaniko builder (queue kq, agent config {}) against the docker builder (queue dk), \
         the same job on {}: 1 warm-up round, then {} rounds of a cold build and {} cache-hit \
         relaunches on each, launch → the job's process start",
        agent_config.display(),
        b.image,
        b.kaniko_rounds,
        b.kaniko_hits
    );
    let job = JobRef::parse("kaniko-vs-docker").map_err(anyhow::Error::msg)?;
    let req = |queue: &str| LaunchRequest {
        queue: queue.into(),
        job: Some(job.clone()),
        ..Default::default()
    };
    let (kreq, dreq) = (req("kq"), req("dk"));
    let (mut k_cold, mut d_cold) = (Samples::default(), Samples::default());
    let (mut k_hit, mut d_hit) = (Samples::default(), Samples::default());
    let (mut k_phases, mut d_phases) = (Phases::default(), Phases::default());
    let t0 = Instant::now();
    for round in 0..=b.kaniko_rounds {
        let warm_up = round == 0;
        let d = dir.join(format!("kaniko-{round}"));
        write_job_dir(&d, &b.image, &nonce())?;
        upload_job(c, &d, "kaniko-vs-docker").await?;
        // Which builder goes first swaps every round.
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for kaniko in order {
            let (r, log, who) = if kaniko {
                (&kreq, Some(agent_log.as_path()), "kaniko")
            } else {
                (&dreq, None, "docker")
            };
            let l = launch_followed(c, r, log).await?;
            let built = l.built()?;
            if built.cache_hit {
                bail!(
                    "run {} ({who}) of a new job version found its image: no cold build",
                    l.run.id
                );
            }
            made.push(built.image.clone());
            if warm_up {
                line(
                    &format!("warm-up cold build, {who} ({} builder)", built.builder),
                    &secs(l.latency()),
                    0.0,
                    None,
                );
                continue;
            }
            if kaniko {
                k_cold.push(l.latency());
                k_phases.add(&l);
            } else {
                d_cold.push(l.latency());
                d_phases.add(&l);
            }
        }
        for _ in 0..b.kaniko_hits {
            for kaniko in order {
                let (r, log, who) = if kaniko {
                    (&kreq, Some(agent_log.as_path()), "kaniko")
                } else {
                    (&dreq, None, "docker")
                };
                let l = launch_followed(c, r, log).await?;
                if !l.built()?.cache_hit {
                    bail!(
                        "run {} ({who}) of an unchanged job built its image again",
                        l.run.id
                    );
                }
                if warm_up {
                    continue;
                }
                if kaniko {
                    k_hit.push(l.latency());
                } else {
                    d_hit.push(l.latency());
                }
            }
        }
    }
    print_figure("cold build, kaniko: launch → start", &k_cold, secs);
    print_figure("cold build, docker: launch → start", &d_cold, secs);
    ratio_line("cold build kaniko / docker, median", &k_cold, &d_cold);
    print_figure("cache hit, kaniko: launch → start", &k_hit, ms);
    print_figure("cache hit, docker: launch → start", &d_hit, ms);
    ratio_line("cache hit kaniko / docker, median", &k_hit, &d_hit);
    println!(
        "  where a cold build's time goes (medians; the run's timeline, its log lines' times):"
    );
    k_phases.print("kaniko");
    d_phases.print("docker");
    println!(
        "  (the kaniko figures took {:.0} s in all)",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
