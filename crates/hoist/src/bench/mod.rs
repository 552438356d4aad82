//! `hoist bench …`: the project's benchmarks. Each prints numbers, and ratios against
//! the targets of its issue; none is a pass/fail test (machines here are shared and
//! noisy).
//!
//! - [`queue`]: the control plane alone (launch and claim throughput, wake and claim
//!   latency, server memory), `hoist bench queue`. With `--database-url` (a PostgreSQL
//!   server): two replicas over one database, side by side with one on SQLite.
//! - [`dispatch`]: server + agent (launch-to-process latency for local processes and
//!   containers against their floors, short-job throughput, idle agent), `hoist bench
//!   dispatch`.
//!   With `--kubernetes` ([`kubernetes`]): Kubernetes dispatch against the same Job
//!   created directly, and the API requests each run costs. With `--resource
//!   sagemaker|vertex` ([`cloud`]): only the cloud targets, against the scripted fakes
//!   (launch → create call against the call sent directly; API calls per run).
//! - [`logs`]: run logs (append and concurrent paging throughput, server peak memory
//!   against raw file IO), `hoist bench logs`.
//! - [`ui`]: the web UI's pages over a store of 100,000 runs (server time per page
//!   against the floor of `GET /healthz` and the target p95 ≤ 50 ms; a 100 MB log's
//!   tail), `hoist bench ui`.
//! - [`build`]: image builds (the cache-hit path against a prebuilt image, cold builds
//!   against `docker build`), `hoist bench build`. With `--kaniko-agent-config` and
//!   `--kaniko-queue-config`: the in-cluster (kaniko) builder against the docker builder
//!   on the same job, cold and cache hit (`scripts/bench-kaniko.sh`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hoist_client::{Client, Secret};

pub mod build;
pub mod cloud;
pub mod dispatch;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod logs;
pub mod queue;
pub mod ui;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub which: BenchWhich,
}

#[derive(Debug, clap::Subcommand)]
pub enum BenchWhich {
    /// Control plane: launches, claims, wake-ups, memory (issue "Control plane").
    Queue(queue::QueueBench),
    /// Server + agent: launch-to-process latency, short-job throughput, idle agent.
    Dispatch(dispatch::DispatchBench),
    /// Image builds: the cache-hit path and cold builds against `docker build`.
    Build(build::BuildBench),
    /// Run logs: a large log appended through the API, then paged by 12 clients at once
    /// (throughput and server peak memory against raw file IO).
    Logs(logs::LogsBench),
    /// The web UI: every page's server time with 100,000 runs over 50 queues, against
    /// the target p95 ≤ 50 ms, and a 100 MB log opened at its tail.
    Ui(ui::UiBench),
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.which {
        BenchWhich::Queue(q) => queue::run(q).await,
        BenchWhich::Dispatch(d) => dispatch::run(d).await,
        BenchWhich::Build(b) => build::run(b).await,
        BenchWhich::Logs(l) => logs::run(l).await,
        BenchWhich::Ui(u) => ui::run(u).await,
    }
}

/// A `hoist server` child process on 127.0.0.1 over a data directory.
pub struct ServerProcess {
    pub child: Child,
    pub url: String,
    pub key: String,
}

impl ServerProcess {
    pub fn start(data_dir: &Path) -> anyhow::Result<ServerProcess> {
        Self::start_with(data_dir, None, &[])
    }

    /// A server from `exe` (default: this binary), with extra environment variables
    /// (settings an older binary does not know are ignored by it).
    pub fn start_with(
        data_dir: &Path,
        exe: Option<&Path>,
        env: &[(&str, String)],
    ) -> anyhow::Result<ServerProcess> {
        Self::spawn(data_dir, exe, env, None)
    }

    /// Another replica over a store that already has its admin (it writes no key file):
    /// ready once its port answers, and used with `key`. Its settings (the database
    /// URL, which may hold a password) go in `env`, never in its arguments.
    pub fn start_replica(
        data_dir: &Path,
        env: &[(&str, String)],
        key: &str,
    ) -> anyhow::Result<ServerProcess> {
        Self::spawn(data_dir, None, env, Some(key))
    }

    fn spawn(
        data_dir: &Path,
        exe: Option<&Path>,
        env: &[(&str, String)],
        key: Option<&str>,
    ) -> anyhow::Result<ServerProcess> {
        let port = free_port()?;
        let exe = match exe {
            Some(p) => p.to_path_buf(),
            None => std::env::current_exe().context("cannot find the hoist binary")?,
        };
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        // Its warnings and errors, to say why it stopped if it does.
        let log_path = data_dir.join("server.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut cmd = Command::new(&exe);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let child = cmd
            .args([
                "server",
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(data_dir)
            .env("HOIST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start `{} server`", exe.display()))?;
        let url = format!("http://127.0.0.1:{port}");
        let mut p = ServerProcess {
            child,
            url,
            key: key.unwrap_or_default().to_string(),
        };
        let t0 = Instant::now();
        loop {
            let key_ready = key.is_some() || {
                match std::fs::read_to_string(data_dir.join("admin.key")) {
                    Ok(k) => {
                        p.key = k.trim().to_string();
                        true
                    }
                    Err(_) => false,
                }
            };
            if key_ready && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Some(status) = p.child.try_wait()? {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "`hoist server` exited at start ({status}); its last lines ({}):\n{}",
                    log_path.display(),
                    tail.join("\n")
                );
            }
            if t0.elapsed() > Duration::from_secs(60) {
                bail!(
                    "`hoist server` did not start within 60 s (its log: {})",
                    log_path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(p)
    }

    pub fn client(&self) -> anyhow::Result<Client> {
        Ok(Client::new(&self.url, Some(Secret::new(self.key.clone())))?)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let t0 = Instant::now();
        while self.child.try_wait()?.is_none() {
            if t0.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Whether a Docker daemon answers on the default socket.
pub async fn docker_answers() -> bool {
    match bollard::Docker::connect_with_unix_defaults() {
        Ok(d) => match d.negotiate_version().await {
            Ok(d) => d.ping().await.is_ok(),
            Err(_) => false,
        },
        Err(_) => false,
    }
}

/// Resident memory of a process, in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    memory(pid).map(|m| m.rss)
}

/// Resident memory of a process, split as the kernel accounts it: `anon` is the
/// process's own (heap, stacks), `file` the mapped pages of its binary and libraries
/// (shared with every other process running the same binary).
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss: u64,
    pub anon: u64,
    pub file: u64,
}

pub fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
    };
    Some(Memory {
        rss: kb("VmRSS:")?,
        anon: kb("RssAnon:").unwrap_or(0),
        file: kb("RssFile:").unwrap_or(0),
    })
}

/// Peak resident memory of a process (`VmHWM`), in bytes.
pub fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// Resets a process's peak resident memory to its current one (`clear_refs` 5);
/// false when the kernel refuses.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// CPU time (user + system) of a process so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // Clock ticks are 100 Hz on Linux.
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Latency samples.
#[derive(Debug, Default, Clone)]
pub struct Samples(pub Vec<Duration>);

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }
    pub fn pct(&self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let mut v = self.0.clone();
        v.sort();
        let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        v[i.min(v.len() - 1)]
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

pub fn mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1_000_000.0)
}

/// A target from the issue.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    AtLeast(f64, &'static str),
    AtMost(f64, &'static str),
}

/// One result line: name, value, and its target with the ratio.
pub fn line(name: &str, shown: &str, value: f64, target: Option<Target>) {
    match target {
        Some(Target::AtLeast(t, label)) => {
            let verdict = if value >= t { "meets" } else { "MISSES" };
            println!(
                "  {name:<44} {shown:>14}   target ≥ {label:<10} {:.2}× ({verdict})",
                value / t
            )
        }
        Some(Target::AtMost(t, label)) => {
            let verdict = if value <= t { "meets" } else { "MISSES" };
            println!(
                "  {name:<44} {shown:>14}   target ≤ {label:<10} {:.2}× ({verdict})",
                value / t
            )
        }
        None => println!("  {name:<44} {shown:>14}"),
    }
}
