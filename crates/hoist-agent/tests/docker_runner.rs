//! The docker runner against the real Docker daemon of the test environment
//! (`source ~/.cache/hoist/test-env.sh`, written by `scripts/test-env.sh`).
//!
//! Without `HOIST_TEST_DOCKER=1` each test is skipped with a note, unless
//! `HOIST_TEST_REQUIRE_SERVICES` is set (then it fails). The daemon has no bridge
//! network and no internet: containers use `network: none` (or `host`), and the image
//! is the locally built `hoist-test/busybox:latest`.
//!
//! Every container a test creates carries its run id; a guard removes them by label
//! whatever the test's outcome. Timeouts are generous (a loaded 2-core machine).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptions, RemoveContainerOptions,
};
use hoist_agent::config::DockerSettings;
use hoist_agent::logs::LogSink;
use hoist_agent::runners::docker::DockerRunner;
use hoist_agent::runners::{
    Adopted, Execution, Exit, JobSpec, LABEL_AGENT, LABEL_ENTITY, LABEL_PROJECT, LABEL_QUEUE,
    LABEL_RUN_ID, Runner, RunnerError,
};
use hoist_core::api::{LogLine, LogStream};
use hoist_testkit::{busybox_image as image, require_docker};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(120);
const AGENT: &str = "hoist-test-docker-runner";

fn run_id(name: &str) -> String {
    format!("dt-{name}-{:08x}", rand::random::<u32>())
}

/// Removes every container of the registered runs when dropped.
struct Guard {
    runs: Vec<String>,
    agents: Vec<String>,
}

impl Guard {
    fn new() -> Guard {
        Guard {
            runs: Vec::new(),
            agents: Vec::new(),
        }
    }

    fn run(&mut self, name: &str) -> String {
        let id = run_id(name);
        self.runs.push(id.clone());
        id
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut labels: Vec<String> = self
            .runs
            .iter()
            .map(|r| format!("{LABEL_RUN_ID}={r}"))
            .collect();
        labels.extend(self.agents.iter().map(|a| format!("{LABEL_AGENT}={a}")));
        // Drop is synchronous and may run inside the test's runtime: use a thread with
        // its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let Ok(runner) = DockerRunner::connect(&DockerSettings::default()).await else {
                    return;
                };
                let docker = runner.client();
                for label in labels {
                    for id in containers_with_label(docker, &label).await {
                        let opts = RemoveContainerOptions {
                            force: true,
                            v: true,
                            link: false,
                        };
                        let _ = docker.remove_container(&id, Some(opts)).await;
                    }
                }
            });
        })
        .join();
    }
}

async fn containers_with_label(docker: &Docker, label: &str) -> Vec<String> {
    let filters = std::collections::HashMap::from([("label".to_string(), vec![label.to_string()])]);
    docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            limit: None,
            size: false,
            filters: Some(filters),
        }))
        .await
        .expect("list containers")
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

fn job(run_id: &str, args: &[&str], config: Value) -> JobSpec {
    let labels = BTreeMap::from([
        (LABEL_RUN_ID.to_string(), run_id.to_string()),
        (LABEL_AGENT.to_string(), AGENT.to_string()),
        (LABEL_QUEUE.to_string(), "team/q".to_string()),
        (LABEL_ENTITY.to_string(), "team".to_string()),
        (LABEL_PROJECT.to_string(), "proj".to_string()),
    ]);
    JobSpec {
        run_id: run_id.to_string(),
        run_name: format!("name-{run_id}"),
        project: "proj".to_string(),
        entity: "team".to_string(),
        queue: "team/q".to_string(),
        agent_name: AGENT.to_string(),
        image: Some(image()),
        entry_point: None,
        args: args.iter().map(|s| s.to_string()).collect(),
        env: [
            ("HOIST_RUN_ID".to_string(), run_id.to_string()),
            ("SHARED".to_string(), "from-job".to_string()),
        ]
        .into_iter()
        .collect(),
        resource_config: config,
        labels,
        source: None,
    }
}

async fn runner(settings: &DockerSettings) -> DockerRunner {
    DockerRunner::connect(settings)
        .await
        .expect("connect to the test Docker daemon")
}

fn lines(sink: &LogSink, stream: LogStream) -> Vec<String> {
    sink.snapshot()
        .into_iter()
        .filter(|l| l.stream == stream)
        .map(|l| l.text)
        .collect()
}

fn dump(sink: &LogSink) -> String {
    sink.snapshot()
        .iter()
        .map(|l| format!("{:?} {}", l.stream, l.text))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn wait_exit(exec: &dyn Execution) -> Exit {
    tokio::time::timeout(LONG, exec.wait())
        .await
        .expect("the container ends in time")
        .expect("wait succeeds")
}

async fn start(runner: &DockerRunner, job: &JobSpec, sink: &LogSink) -> Box<dyn Execution> {
    match runner.start(job, sink.clone()).await {
        Ok(e) => e,
        Err(e) => panic!("start failed: {e}\nlog:\n{}", dump(sink)),
    }
}

async fn start_err(runner: &DockerRunner, job: &JobSpec) -> RunnerError {
    match runner.start(job, LogSink::new()).await {
        Ok(e) => {
            e.stop(Duration::ZERO).await.ok();
            e.cleanup().await;
            panic!("start of {:?} should have failed", job.resource_config);
        }
        Err(e) => e,
    }
}

async fn inspect(runner: &DockerRunner, name: &str) -> bollard::models::ContainerInspectResponse {
    runner
        .client()
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
        .expect("inspect container")
}

/// Polls `f` until it is true (or fails after a generous timeout).
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < LONG, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn docker_start_wait_logs_and_cleanup() {
    require_docker!();
    let mut g = Guard::new();
    let r = runner(&DockerSettings::default()).await;
    let id = g.run("basic");
    let sink = LogSink::new();
    let j = job(
        &id,
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
        json!({"network": "none"}),
    );
    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    let exec = start(&r, &j, &sink).await;
    let d = exec.describe();
    assert!(
        d.starts_with("container ") && d.len() == "container ".len() + 12,
        "{d}"
    );

    assert_eq!(wait_exit(exec.as_ref()).await, Exit::Code(3));
    // wait() is idempotent.
    assert_eq!(wait_exit(exec.as_ref()).await, Exit::Code(3));
    assert_eq!(lines(&sink, LogStream::Stdout), ["out"], "{}", dump(&sink));
    assert_eq!(lines(&sink, LogStream::Stderr), ["err"], "{}", dump(&sink));
    let after = chrono::Utc::now() + chrono::Duration::seconds(5);
    for l in sink.snapshot() {
        assert!(
            l.ts > before && l.ts < after,
            "docker's timestamp kept: {l:?}"
        );
    }

    let c = inspect(&r, &format!("hoist-{id}")).await;
    assert_eq!(c.name.as_deref(), Some(format!("/hoist-{id}").as_str()));
    exec.cleanup().await;
    assert!(
        containers_with_label(r.client(), &format!("{LABEL_RUN_ID}={id}"))
            .await
            .is_empty(),
        "cleanup removes the container"
    );
    // Cleaning up twice is harmless.
    exec.cleanup().await;
}

#[tokio::test]
async fn docker_output_partial_and_long_lines() {
    require_docker!();
    let mut g = Guard::new();
    let r = runner(&DockerSettings::default()).await;
    let id = g.run("lines");
    let sink = LogSink::new();
    // A 40000-character line (docker splits it into 16 KiB frames), CRLF, a progress
    // bar drawn with \r, and a last line without a newline.
    let script = "head -c 40000 /dev/zero | tr '\\0' x; echo; printf 'crlf\\r\\n'; printf '10%%\\r20%%\\r\\n'; printf 'no-newline'";
    let j = job(&id, &["sh", "-c", script], json!({"network": "none"}));
    let exec = start(&r, &j, &sink).await;
    assert_eq!(wait_exit(exec.as_ref()).await, Exit::Code(0));
    let out = lines(&sink, LogStream::Stdout);
    let xs: String = out
        .iter()
        .take_while(|l| l.starts_with('x'))
        .cloned()
        .collect();
    assert_eq!(
        xs.len(),
        40000,
        "no byte of the long line lost: {:?}",
        out.iter().map(String::len).collect::<Vec<_>>()
    );
    let rest: Vec<&str> = out
        .iter()
        .skip_while(|l| l.starts_with('x'))
        .map(String::as_str)
        .collect();
    assert_eq!(rest, ["crlf", "10%", "20%", "no-newline"]);
    exec.cleanup().await;
}

#[tokio::test]
async fn docker_options_mapped_onto_the_container() {
    require_docker!();
    let mut g = Guard::new();
    let r = runner(&DockerSettings::default()).await;
    let id = g.run("opts");
    let sink = LogSink::new();
    let config = json!({
        "network": "none",
        "env": ["FROM_QUEUE=q", "HOIST_RUN_ID=queue-tries-to-override", "SHARED=from-queue"],
        "label": {"team": "ml", "hoist.run-id": "spoofed"},
        "memory": "64m",
        "memory-swap": "128m",
        "memory-reservation": "32m",
        "cpus": 0.5,
        "cpu-shares": 512,
        "cpuset-cpus": "0",
        "shm-size": "16m",
        "pids-limit": 100,
        "ulimit": ["nofile=1024:2048"],
        "user": "1000:1000",
        "group-add": ["123"],
        "workdir": "/tmp",
        "entrypoint": ["sh", "-c"],
        "tmpfs": ["/scratch:size=1m,mode=1777"],
        "read-only": true,
        "cap-drop": ["NET_RAW"],
        "init": true,
        "hostname": "trainer",
        "domainname": "example.test",
        "add-host": ["db:10.0.0.5"],
        "expose": ["8080", "9000-9001/udp"],
        "stop-signal": "SIGUSR1",
        "stop-timeout": 7,
        "security-opt": ["no-new-privileges"],
        "oom-score-adj": 100,
        "health-cmd": "true",
        "health-interval": "30s",
        "health-retries": 2,
        "name": "my-own-name",
        "restart": "no",
        "rm": true,
    });
    let j = job(
        &id,
        &[
            "echo \"q=$FROM_QUEUE run=$HOIST_RUN_ID shared=$SHARED\"; id -u; pwd; hostname; ulimit -n; touch /scratch/ok && echo tmpfs-ok; touch /rootfs 2>/dev/null || echo read-only-ok",
        ],
        config,
    );
    let exec = start(&r, &j, &sink).await;
    let code = wait_exit(exec.as_ref()).await;
    assert_eq!(code, Exit::Code(0), "{}", dump(&sink));
    assert_eq!(
        lines(&sink, LogStream::Stdout),
        [
            format!("q=q run={id} shared=from-queue"),
            "1000".to_string(),
            "/tmp".to_string(),
            "trainer".to_string(),
            "1024".to_string(),
            "tmpfs-ok".to_string(),
            "read-only-ok".to_string(),
        ],
        "{}",
        dump(&sink)
    );
    let system = lines(&sink, LogStream::System);
    assert!(
        system
            .iter()
            .any(|l| l.contains("my-own-name") && l.contains("ignored")),
        "the ignored name is noted: {system:?}"
    );

    let c = inspect(&r, &format!("hoist-{id}")).await;
    let cfg = c.config.expect("config");
    let hc = c.host_config.expect("host config");
    let env = cfg.env.unwrap_or_default();
    assert!(env.contains(&"FROM_QUEUE=q".to_string()), "{env:?}");
    assert!(
        env.contains(&format!("HOIST_RUN_ID={id}")),
        "the run's HOIST_* win: {env:?}"
    );
    assert!(env.contains(&"SHARED=from-queue".to_string()), "{env:?}");
    let labels = cfg.labels.unwrap_or_default();
    assert_eq!(labels.get("team").map(String::as_str), Some("ml"));
    assert_eq!(labels.get(LABEL_RUN_ID), Some(&id), "hoist.* labels win");
    assert_eq!(labels.get(LABEL_AGENT).map(String::as_str), Some(AGENT));
    assert_eq!(labels.get(LABEL_QUEUE).map(String::as_str), Some("team/q"));
    assert_eq!(cfg.user.as_deref(), Some("1000:1000"));
    assert_eq!(cfg.working_dir.as_deref(), Some("/tmp"));
    assert_eq!(
        cfg.entrypoint,
        Some(vec!["sh".to_string(), "-c".to_string()])
    );
    assert_eq!(cfg.cmd.as_ref().map(Vec::len), Some(1));
    assert_eq!(cfg.hostname.as_deref(), Some("trainer"));
    assert_eq!(cfg.domainname.as_deref(), Some("example.test"));
    assert_eq!(cfg.stop_signal.as_deref(), Some("SIGUSR1"));
    assert_eq!(cfg.stop_timeout, Some(7));
    let mut exposed = cfg.exposed_ports.unwrap_or_default();
    exposed.sort();
    assert_eq!(exposed, ["8080/tcp", "9000/udp", "9001/udp"]);
    let health = cfg.healthcheck.expect("healthcheck");
    assert_eq!(
        health.test,
        Some(vec!["CMD-SHELL".to_string(), "true".to_string()])
    );
    assert_eq!(health.interval, Some(30_000_000_000));
    assert_eq!(health.retries, Some(2));

    assert_eq!(hc.network_mode.as_deref(), Some("none"));
    assert_eq!(hc.memory, Some(64 << 20));
    assert_eq!(hc.memory_swap, Some(128 << 20));
    assert_eq!(hc.memory_reservation, Some(32 << 20));
    assert_eq!(hc.nano_cpus, Some(500_000_000));
    assert_eq!(hc.cpu_shares, Some(512));
    assert_eq!(hc.cpuset_cpus.as_deref(), Some("0"));
    assert_eq!(hc.shm_size, Some(16 << 20));
    assert_eq!(hc.pids_limit, Some(100));
    let ul = hc.ulimits.unwrap_or_default();
    assert_eq!(ul.len(), 1);
    assert_eq!(
        (ul[0].name.as_deref(), ul[0].soft, ul[0].hard),
        (Some("nofile"), Some(1024), Some(2048))
    );
    assert_eq!(hc.group_add, Some(vec!["123".to_string()]));
    assert_eq!(
        hc.tmpfs
            .unwrap_or_default()
            .get("/scratch")
            .map(String::as_str),
        Some("size=1m,mode=1777")
    );
    assert_eq!(hc.readonly_rootfs, Some(true));
    let dropped = hc.cap_drop.unwrap_or_default();
    assert!(
        dropped.iter().any(|c| c.ends_with("NET_RAW")),
        "{dropped:?}"
    );
    assert_eq!(hc.init, Some(true));
    assert_eq!(hc.extra_hosts, Some(vec!["db:10.0.0.5".to_string()]));
    assert_eq!(
        hc.security_opt,
        Some(vec!["no-new-privileges=true".to_string()])
    );
    assert_eq!(hc.oom_score_adj, Some(100));
    assert!(
        hc.restart_policy
            .and_then(|p| p.name)
            .is_none_or(|n| n.to_string() == "no" || n.to_string().is_empty())
    );
    assert_ne!(
        hc.auto_remove,
        Some(true),
        "the agent removes the container itself"
    );
    exec.cleanup().await;
}

#[tokio::test]
async fn docker_entry_point_precedence() {
    require_docker!();
    let mut g = Guard::new();
    let r = runner(&DockerSettings::default()).await;

    // The job's entry point beats the queue config's.
    let id = g.run("ep-job");
    let sink = LogSink::new();
    let mut j = job(
        &id,
        &["echo from-job"],
        json!({"network": "none", "entrypoint": "/bin/false"}),
    );
    j.entry_point = Some(vec!["sh".to_string(), "-c".to_string()]);
    let exec = start(&r, &j, &sink).await;
    assert_eq!(
        wait_exit(exec.as_ref()).await,
        Exit::Code(0),
        "{}",
        dump(&sink)
    );
    assert_eq!(lines(&sink, LogStream::Stdout), ["from-job"]);
    let cfg = inspect(&r, &format!("hoist-{id}"))
        .await
        .config
        .expect("config");
    assert_eq!(
        cfg.entrypoint,
        Some(vec!["sh".to_string(), "-c".to_string()])
    );
    assert_eq!(cfg.cmd, Some(vec!["echo from-job".to_string()]));
    exec.cleanup().await;

    // The queue config's entry point beats the image's (none here; CMD is sh).
    let id = g.run("ep-queue");
    let sink = LogSink::new();
    let j = job(
        &id,
        &["from-queue"],
        json!({"network": "none", "entrypoint": ["echo"]}),
    );
    let exec = start(&r, &j, &sink).await;
    assert_eq!(
        wait_exit(exec.as_ref()).await,
        Exit::Code(0),
        "{}",
        dump(&sink)
    );
    assert_eq!(lines(&sink, LogStream::Stdout), ["from-queue"]);
    exec.cleanup().await;
}

#[tokio::test]
async fn docker_privileged_options_refused_by_default() {
    require_docker!();
    let mut g = Guard::new();
    let r = runner(&DockerSettings::default()).await;
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (
            json!({"privileged": true}),
            vec![
                "`privileged: true`",
                "set docker.allow-privileged: true in the agent config to allow it",
            ],
        ),
        (
            json!({"cap-add": ["SYS_ADMIN"]}),
            vec![
                "`cap-add: SYS_ADMIN`",
                "cap-add[0]",
                "add SYS_ADMIN to docker.allow-cap-add",
            ],
        ),
        (
            json!({"pid": "host"}),
            vec!["`pid: host`", "docker.allow-host-pid: true"],
        ),
        (
            json!({"ipc": "host"}),
            vec!["`ipc: host`", "docker.allow-host-ipc: true"],
        ),
        (
            json!({"network": "host"}),
            vec!["`network: host`", "docker.allow-host-network: true"],
        ),
        (
            json!({"uts": "host"}),
            vec!["`uts: host`", "docker.allow-privileged: true"],
        ),
        (
            json!({"network": "none", "device": ["/dev/null"]}),
            vec![
                "`device: /dev/null`",
                "add /dev/null to docker.allow-devices",
            ],
        ),
        (
            json!({"network": "none", "volume": ["/etc:/host-etc:ro"]}),
            vec!["host path /etc", "docker.volume-allow-list", "is empty"],
        ),
        (
            json!({"network": "none", "mount": "type=bind,source=/etc,target=/x"}),
            vec!["host path /etc", "`mount`"],
        ),
        (
            json!({"network": "none", "security-opt": ["seccomp=unconfined"]}),
            vec![
                "`security-opt: seccomp=unconfined`",
                "docker.allow-privileged: true",
            ],
        ),
        (
            json!({"network": "none", "mount": "type=volume,source=v,target=/x,volume-opt=device=/etc"}),
            vec!["volume-opt", "docker.allow-privileged: true"],
        ),
    ];
    for (config, expected) in cases {
        let id = g.run("refused");
        let err = start_err(&r, &job(&id, &["true"], config.clone())).await;
        let RunnerError::Refused(msg) = &err else {
            panic!("{config}: expected a refusal, got {err:?}");
        };
        assert!(msg.starts_with("queue config asks"), "{config}: {msg}");
        for e in expected {
            assert!(msg.contains(e), "{config}: {msg:?} should contain {e:?}");
        }
        assert!(
            containers_with_label(r.client(), &format!("{LABEL_RUN_ID}={id}"))
                .await
                .is_empty(),
            "{config}: nothing created"
        );
    }

    // Several at once: every one is named.
    let id = g.run("refused");
    let err = start_err(
        &r,
        &job(
            &id,
            &["true"],
            json!({"privileged": true, "pid": "host", "cap-add": "NET_ADMIN"}),
        ),
    )
    .await;
    let msg = err.to_string();
    assert!(
        msg.contains("privileged") && msg.contains("pid: host") && msg.contains("NET_ADMIN"),
        "{msg}"
    );
    assert_eq!(err.stage(), hoist_core::run::FailureStage::Agent);
}

#[tokio::test]
async fn docker_privileged_options_allowed_by_settings() {
    require_docker!();
    let mut g = Guard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("hello.txt"), "from-host\n").expect("write");
    let settings = DockerSettings {
        allow_cap_add: vec!["NET_ADMIN".to_string()],
        allow_devices: vec![PathBuf::from("/dev/null")],
        allow_host_network: true,
        volume_allow_list: vec![dir.path().to_path_buf()],
        ..DockerSettings::default()
    };
    let r = runner(&settings).await;

    // An allowed capability, device and bind mount.
    let id = g.run("allowed");
    let sink = LogSink::new();
    let src = dir.path().display().to_string();
    let config = json!({
        "network": "none",
        "cap-add": ["NET_ADMIN"],
        "device": ["/dev/null:/dev/hoist-null"],
        "volume": [format!("{src}:/data:ro")],
        "mount": [format!("type=bind,source={src},target=/data2")],
    });
    let j = job(
        &id,
        &[
            "sh",
            "-c",
            "cat /data/hello.txt; cat /data2/hello.txt; test -c /dev/hoist-null && echo dev-ok",
        ],
        config,
    );
    let exec = start(&r, &j, &sink).await;
    assert_eq!(
        wait_exit(exec.as_ref()).await,
        Exit::Code(0),
        "{}",
        dump(&sink)
    );
    assert_eq!(
        lines(&sink, LogStream::Stdout),
        ["from-host", "from-host", "dev-ok"]
    );
    let hc = inspect(&r, &format!("hoist-{id}"))
        .await
        .host_config
        .expect("host config");
    assert!(
        hc.cap_add
            .unwrap_or_default()
            .iter()
            .any(|c| c.ends_with("NET_ADMIN"))
    );
    assert_eq!(hc.binds, Some(vec![format!("{src}:/data:ro")]));
    assert_eq!(hc.mounts.unwrap_or_default().len(), 1);
    exec.cleanup().await;

    // Host network, allowed.
    let id = g.run("hostnet");
    let sink = LogSink::new();
    let exec = start(&r, &job(&id, &["true"], json!({"network": "host"})), &sink).await;
    assert_eq!(
        wait_exit(exec.as_ref()).await,
        Exit::Code(0),
        "{}",
        dump(&sink)
    );
    exec.cleanup().await;

    // Still refused: what the settings do not list.
    let cases = [
        json!({"network": "none", "cap-add": ["SYS_ADMIN"]}),
        json!({"network": "none", "device": ["/dev/zero"]}),
        json!({"network": "none", "volume": [format!("{src}/../:/up")]}),
        json!({"network": "none", "volume": [format!("{src}-sibling:/x")]}),
        json!({"pid": "host"}),
    ];
    for config in cases {
        let id = g.run("still-refused");
        let err = start_err(&r, &job(&id, &["true"], config.clone())).await;
        assert!(matches!(err, RunnerError::Refused(_)), "{config}: {err:?}");
    }
}

#[tokio::test]
async fn docker_stop_with_trap_exits_with_its_own_code() {
    require_docker!();
    let mut g = Guard::new();
    let r = runner(&DockerSettings::default()).await;
    let id = g.run("stop-trap");
    let sink = LogSink::new();
    let script = "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 1; done";
    let exec: Arc<dyn Execution> = Arc::from(
        start(
            &r,
            &job(&id, &["sh", "-c", script], json!({"network": "none"})),
            &sink,
        )
        .await,
    );
    eventually("the script to be ready", || {
        lines(&sink, LogStream::Stdout).contains(&"ready".to_string())
    })
    .await;
    // wait() runs concurrently with stop().
    let waiter = tokio::spawn({
        let exec = exec.clone();
        async move { exec.wait().await }
    });
    let t0 = Instant::now();
    exec.stop(Duration::from_secs(2)).await.expect("stop");
    let exit = tokio::time::timeout(LONG, waiter)
        .await
        .expect("ends")
        .expect("join")
        .expect("wait");
    assert_eq!(exit, Exit::Code(7), "{}", dump(&sink));
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "took {:?}",
        t0.elapsed()
    );
    assert!(
        lines(&sink, LogStream::Stdout).contains(&"got-term".to_string()),
        "{}",
        dump(&sink)
    );
    exec.cleanup().await;
}

#[tokio::test]
async fn docker_stop_without_trap_kills_after_grace() {
    require_docker!();
    let mut g = Guard::new();
    let r = runner(&DockerSettings::default()).await;
    let id = g.run("stop-kill");
    let sink = LogSink::new();
    // PID 1 without a handler ignores SIGTERM: only the SIGKILL after the grace ends it.
    let exec: Arc<dyn Execution> = Arc::from(
        start(
            &r,
            &job(&id, &["sleep", "300"], json!({"network": "none"})),
            &sink,
        )
        .await,
    );
    let waiter = tokio::spawn({
        let exec = exec.clone();
        async move { exec.wait().await }
    });
    let t0 = Instant::now();
    exec.stop(Duration::from_secs(2)).await.expect("stop");
    let exit = tokio::time::timeout(LONG, waiter)
        .await
        .expect("ends")
        .expect("join")
        .expect("wait");
    let took = t0.elapsed();
    assert_eq!(exit, Exit::Code(137), "SIGKILL");
    assert!(
        took >= Duration::from_millis(1500),
        "the grace period was given: {took:?}"
    );
    assert!(took < Duration::from_secs(60), "took {took:?}");
    // Stopping what has ended is fine.
    exec.stop(Duration::from_secs(1))
        .await
        .expect("second stop");
    exec.cleanup().await;
    // Stopping what is gone says so.
    let err = exec.stop(Duration::from_secs(1)).await.expect_err("gone");
    assert!(err.to_string().contains("no longer exists"), "{err}");
}

#[tokio::test]
async fn docker_missing_image_is_a_start_error() {
    require_docker!();
    let mut g = Guard::new();
    let r = runner(&DockerSettings::default()).await;
    let id = g.run("noimage");
    let mut j = job(&id, &["true"], json!({"network": "none"}));
    // A registry nobody listens on: the pull fails at once.
    j.image = Some("127.0.0.1:9/hoist-test/missing:v1".to_string());
    let sink = LogSink::new();
    let err = match r.start(&j, sink.clone()).await {
        Ok(_) => panic!("should fail"),
        Err(e) => e,
    };
    let RunnerError::Start { message: msg, .. } = &err else {
        panic!("expected a start error, got {err:?}");
    };
    assert!(!err.is_transient(), "a missing image is not retried");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the daemon's error is kept as the cause"
    );
    assert!(
        msg.starts_with(
            "image 127.0.0.1:9/hoist-test/missing:v1 is not available: not present in the local Docker daemon and pulling it failed: "
        ),
        "{msg}"
    );
    assert!(
        msg.ends_with("; build or load it on the agent's host, or check the name"),
        "{msg}"
    );
    assert_eq!(err.stage(), hoist_core::run::FailureStage::Run);
    assert!(
        lines(&sink, LogStream::System)
            .iter()
            .any(|l| l.contains("pulling")),
        "{}",
        dump(&sink)
    );

    // No image at all.
    j.image = None;
    let err = start_err(&r, &j).await;
    assert!(
        matches!(err, RunnerError::Start { ref message, .. } if message.contains("no image")),
        "{err:?}"
    );
}

#[tokio::test]
async fn docker_adopt_resumes_logs_after_since() {
    require_docker!();
    let mut g = Guard::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = DockerSettings {
        volume_allow_list: vec![dir.path().to_path_buf()],
        ..DockerSettings::default()
    };
    let id = g.run("adopt");
    // Writes two lines, then waits for a file the test creates once the run has been
    // adopted, then two more lines.
    let script = "echo one; echo two >&2; while [ ! -f /ctl/go ]; do sleep 0.2; done; echo three; echo four >&2; exit 5";
    let config = json!({"network": "none", "volume": [format!("{}:/ctl", dir.path().display())]});
    let j = job(&id, &["sh", "-c", script], config);

    let since = {
        let r1 = runner(&settings).await;
        let sink1 = LogSink::new();
        let exec = start(&r1, &j, &sink1).await;
        eventually("the first two lines", || sink1.snapshot().len() >= 2).await;
        let shipped: Vec<LogLine> = sink1.snapshot();
        // stdout and stderr are read by separate goroutines of the daemon: their
        // relative order is not kept.
        assert_eq!(
            lines(&sink1, LogStream::Stdout),
            ["one"],
            "{}",
            dump(&sink1)
        );
        assert_eq!(
            lines(&sink1, LogStream::Stderr),
            ["two"],
            "{}",
            dump(&sink1)
        );
        // The agent goes away: runner and execution dropped, container left running.
        drop(exec);
        drop(r1);
        shipped.iter().map(|l| l.ts).max()
    };

    let r2 = runner(&settings).await;
    let sink2 = LogSink::new();
    let exec = match r2.adopt(&j, sink2.clone(), since).await.expect("adopt") {
        Adopted::Found(e) => e,
        Adopted::Gone(why) => panic!("gone: {why}"),
    };
    assert!(exec.describe().starts_with("container "));
    std::fs::write(dir.path().join("go"), "").expect("write");
    assert_eq!(wait_exit(exec.as_ref()).await, Exit::Code(5));
    assert_eq!(
        sink2.snapshot().len(),
        2,
        "resumed after `since`, no line twice: {}",
        dump(&sink2)
    );
    assert_eq!(
        lines(&sink2, LogStream::Stdout),
        ["three"],
        "{}",
        dump(&sink2)
    );
    assert_eq!(
        lines(&sink2, LogStream::Stderr),
        ["four"],
        "{}",
        dump(&sink2)
    );

    // Adopting again once it has ended: the exit code at once, the lines after `since`.
    let ts_of = |sink: &LogSink, text: &str| {
        sink.snapshot()
            .into_iter()
            .find(|l| l.text == text)
            .map(|l| l.ts)
    };
    let (three, four) = (
        ts_of(&sink2, "three").expect("three"),
        ts_of(&sink2, "four").expect("four"),
    );
    let (first, second) = if three <= four {
        ("three", "four")
    } else {
        ("four", "three")
    };
    let since_first = Some(three.min(four));
    let sink3 = LogSink::new();
    let Adopted::Found(again) = r2
        .adopt(&j, sink3.clone(), since_first)
        .await
        .expect("adopt")
    else {
        panic!("gone");
    };
    assert_eq!(wait_exit(again.as_ref()).await, Exit::Code(5));
    let texts: Vec<String> = sink3.snapshot().into_iter().map(|l| l.text).collect();
    assert_eq!(
        texts,
        [second],
        "only what came after {first}: {}",
        dump(&sink3)
    );

    // From the start when nothing was shipped.
    let sink4 = LogSink::new();
    let Adopted::Found(all) = r2.adopt(&j, sink4.clone(), None).await.expect("adopt") else {
        panic!("gone");
    };
    assert_eq!(wait_exit(all.as_ref()).await, Exit::Code(5));
    assert_eq!(sink4.snapshot().len(), 4, "{}", dump(&sink4));
    all.cleanup().await;

    // Removed: gone.
    match r2.adopt(&j, LogSink::new(), None).await.expect("adopt") {
        Adopted::Gone(why) => assert_eq!(
            why,
            format!("container for run {id} no longer exists (removed while the agent was down)")
        ),
        Adopted::Found(_) => panic!("found a removed container"),
    }
}

#[tokio::test]
async fn docker_adopt_unknown_run_is_gone() {
    require_docker!();
    let r = runner(&DockerSettings::default()).await;
    let id = run_id("unknown");
    match r
        .adopt(&job(&id, &[], json!({})), LogSink::new(), None)
        .await
        .expect("adopt")
    {
        Adopted::Gone(why) => {
            assert!(
                why.contains(&id) && why.contains("no longer exists"),
                "{why}"
            );
        }
        Adopted::Found(e) => panic!("found {}", e.describe()),
    }
}

#[tokio::test]
async fn docker_cleanup_orphans_removes_stopped_containers_of_the_agent() {
    require_docker!();
    let mut g = Guard::new();
    let agent = format!("hoist-test-orphans-{:08x}", rand::random::<u32>());
    g.agents.push(agent.clone());
    let r = runner(&DockerSettings::default()).await;
    let keep = g.run("orphan-keep");
    let drop_me = g.run("orphan-drop");
    let running = g.run("orphan-running");
    for (id, args) in [
        (&keep, vec!["true"]),
        (&drop_me, vec!["true"]),
        (&running, vec!["sleep", "300"]),
    ] {
        let mut j = job(id, &args, json!({"network": "none"}));
        j.agent_name = agent.clone();
        let exec = start(&r, &j, &LogSink::new()).await;
        if id != &running {
            wait_exit(exec.as_ref()).await;
        }
    }
    let removed = r.cleanup_orphans(&agent, std::slice::from_ref(&keep)).await;
    assert_eq!(removed, 1);
    let with = |id: &str| format!("{LABEL_RUN_ID}={id}");
    assert_eq!(
        containers_with_label(r.client(), &with(&keep)).await.len(),
        1
    );
    assert!(
        containers_with_label(r.client(), &with(&drop_me))
            .await
            .is_empty()
    );
    assert_eq!(
        containers_with_label(r.client(), &with(&running))
            .await
            .len(),
        1,
        "running containers stay"
    );
}

#[tokio::test]
async fn docker_connect_reports_an_unreachable_daemon() {
    // Needs no daemon.
    let settings = DockerSettings {
        host: Some(hoist_agent::config::DockerHost::Unix(PathBuf::from(
            "/nonexistent/hoist-docker.sock",
        ))),
        ..DockerSettings::default()
    };
    let err = DockerRunner::connect(&settings)
        .await
        .expect_err("no daemon there");
    assert!(
        matches!(&err, RunnerError::Docker { message, .. } if message.contains("cannot reach the Docker daemon at unix:///nonexistent/hoist-docker.sock")),
        "{err:?}"
    );
    assert!(
        err.is_transient(),
        "an unreachable daemon may come back: {err:?}"
    );
}

#[tokio::test]
async fn docker_connect_negotiates_the_api_version() {
    require_docker!();
    let r = runner(&DockerSettings::default()).await;
    r.ping().await.expect("ping");
    let v = r.api_version();
    let daemon = r
        .client()
        .version()
        .await
        .expect("version")
        .api_version
        .expect("api version");
    let parse = |s: &str| -> (u32, u32) {
        let (a, b) = s.split_once('.').expect("x.y");
        (a.parse().expect("major"), b.parse().expect("minor"))
    };
    assert!(
        parse(&v) <= parse(&daemon),
        "client {v} must not be newer than the daemon's {daemon}"
    );
}

#[tokio::test]
async fn docker_out_of_memory_is_noted() {
    require_docker!();
    let mut g = Guard::new();
    let r = runner(&DockerSettings::default()).await;
    let id = g.run("oom");
    let sink = LogSink::new();
    // The shell holds 64 MB in a variable under an 8 MiB limit without swap.
    let script = "x=$(head -c 64000000 /dev/zero | tr '\\0' x); echo ${#x}";
    let config = json!({"network": "none", "memory": "8m", "memory-swap": "8m"});
    let exec = start(&r, &job(&id, &["sh", "-c", script], config), &sink).await;
    let exit = wait_exit(exec.as_ref()).await;
    assert!(!exit.success(), "{exit}");
    let c = inspect(&r, &format!("hoist-{id}")).await;
    if c.state.and_then(|s| s.oom_killed).unwrap_or(false) {
        let system = lines(&sink, LogStream::System);
        assert!(
            system
                .iter()
                .any(|l| l.contains("ran out of memory") && l.contains("8 MiB")),
            "{system:?}"
        );
    } else {
        // Some kernels kill only the `tr`/subshell; the run still fails.
        eprintln!("note: the daemon did not report an OOM kill; exit {exit}");
    }
    exec.cleanup().await;
}

#[tokio::test]
async fn docker_log_driver_none_still_waits() {
    require_docker!();
    let mut g = Guard::new();
    let r = runner(&DockerSettings::default()).await;
    let id = g.run("nolog");
    let sink = LogSink::new();
    let config = json!({"network": "none", "log-driver": "none"});
    let exec = start(
        &r,
        &job(&id, &["sh", "-c", "echo invisible; exit 2"], config),
        &sink,
    )
    .await;
    assert_eq!(wait_exit(exec.as_ref()).await, Exit::Code(2));
    assert!(lines(&sink, LogStream::Stdout).is_empty());
    assert!(
        lines(&sink, LogStream::System)
            .iter()
            .any(|l| l.contains("log-driver: none")),
        "{}",
        dump(&sink)
    );
    exec.cleanup().await;
}

/// docker 20.10 sometimes ends a followed log stream before the last message of a
/// container whose output does not end with a newline; the runner reads the end again.
#[tokio::test]
async fn docker_last_line_without_newline_is_never_lost() {
    require_docker!();
    let mut g = Guard::new();
    let r = runner(&DockerSettings::default()).await;
    for i in 0..15 {
        let id = g.run("tail");
        let sink = LogSink::new();
        let exec = start(
            &r,
            &job(
                &id,
                &["sh", "-c", "echo first; echo err >&2; printf last"],
                json!({"network": "none"}),
            ),
            &sink,
        )
        .await;
        assert_eq!(wait_exit(exec.as_ref()).await, Exit::Code(0));
        assert_eq!(
            lines(&sink, LogStream::Stdout),
            ["first", "last"],
            "attempt {i}: {}",
            dump(&sink)
        );
        assert_eq!(lines(&sink, LogStream::Stderr), ["err"], "attempt {i}");
        exec.cleanup().await;
    }
}

#[tokio::test]
async fn docker_missing_command_is_a_start_error_and_leaves_nothing() {
    require_docker!();
    let mut g = Guard::new();
    let r = runner(&DockerSettings::default()).await;
    let id = g.run("nocmd");
    let mut j = job(&id, &[], json!({"network": "none"}));
    j.entry_point = Some(vec!["/no/such/program".to_string()]);
    let err = start_err(&r, &j).await;
    let RunnerError::Start { message: msg, .. } = &err else {
        panic!("expected a start error, got {err:?}");
    };
    assert!(
        msg.contains("did not start") && msg.contains("/no/such/program"),
        "{msg}"
    );
    assert!(
        containers_with_label(r.client(), &format!("{LABEL_RUN_ID}={id}"))
            .await
            .is_empty(),
        "the failed container is removed"
    );
}

/// `env: [NAME]` entries take the agent's variable, except those whose names look
/// secret or whose values look like credentials (unless `env-allow-list` names them):
/// the container gets the plain ones, and the run's log says which were not passed.
#[tokio::test]
async fn docker_env_passthrough_withholds_credentials() {
    require_docker!();
    let mut g = Guard::new();
    let host = hoist_agent::host_env::HostEnv::from_vars([
        ("PLAIN_VAR", "plain"),
        ("DB_URL", "postgres://app:db-s3cret@db/app"),
        ("GH", "ghp_0123456789abcdefghijABCDEFGHIJ012345"),
        ("MYSQL_PWD", "mysql-s3cret"),
        ("ALLOWED_URL", "https://robot:allowed@example.com/x"),
    ]);
    let r = runner(&DockerSettings::default())
        .await
        .with_env_allow_list(vec!["ALLOWED_URL".into()])
        .with_host_env(Arc::new(host));
    let id = g.run("envpass");
    let sink = LogSink::new();
    let j = job(
        &id,
        &["env"],
        json!({"network": "none", "env": ["PLAIN_VAR", "DB_URL", "GH", "MYSQL_PWD", "ALLOWED_URL"]}),
    );
    let exec = start(&r, &j, &sink).await;
    assert_eq!(wait_exit(exec.as_ref()).await, Exit::Code(0));
    let out = lines(&sink, LogStream::Stdout);
    assert!(out.contains(&"PLAIN_VAR=plain".to_string()), "{out:?}");
    assert!(
        out.contains(&"ALLOWED_URL=https://robot:allowed@example.com/x".to_string()),
        "{out:?}"
    );
    for name in ["DB_URL=", "GH=", "MYSQL_PWD="] {
        assert!(
            !out.iter().any(|l| l.starts_with(name)),
            "{name} reached the container: {out:?}"
        );
    }
    let system = lines(&sink, LogStream::System);
    assert!(
        system
            .iter()
            .any(|l| l.contains("DB_URL") && l.contains("looks like a credential")),
        "{system:?}"
    );
    assert!(
        system
            .iter()
            .any(|l| l.contains("GH ") && l.contains("looks like a credential")),
        "{system:?}"
    );
    assert!(
        system
            .iter()
            .any(|l| l.contains("MYSQL_PWD") && l.contains("name looks secret")),
        "{system:?}"
    );
    exec.cleanup().await;
}

/// `dry_run` shows what `start` creates: the same name, image, command, environment
/// (secret-looking values masked), labels and host config; it creates nothing, and
/// refuses what `start` refuses (under `secure_mode` whatever the allow-lists say).
#[tokio::test]
async fn docker_dry_run_is_what_start_creates() {
    require_docker!();
    let mut g = Guard::new();
    let r = runner(&DockerSettings::default()).await;
    let id = g.run("dry");
    let mut j = job(
        &id,
        &["sh", "-c", "exit 0"],
        json!({
            "network": "none",
            "memory": "64m",
            "workdir": "/tmp",
            "env": ["A=1", "API_TOKEN=tok-s3cret"],
            "labels": {"team": "ml"},
        }),
    );
    j.env
        .insert("DB".into(), "postgres://app:pw-s3cret@db/x".into());
    let dry = r.dry_run(&j).await.expect("dry run");
    assert_eq!(dry.backend_check, None);
    assert_eq!(dry.objects.len(), 1);
    let d = &dry.objects[0];
    let shown = d.to_string();
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(
        containers_with_label(r.client(), &format!("{LABEL_RUN_ID}={id}"))
            .await
            .is_empty(),
        "the dry run created a container"
    );

    let sink = LogSink::new();
    let exec = start(&r, &j, &sink).await;
    let name = d["name"].as_str().unwrap();
    let c = inspect(&r, name).await;
    assert_eq!(c.name.as_deref(), Some(format!("/{name}").as_str()));
    let config = c.config.expect("config");
    let body = &d["body"];
    assert_eq!(config.image.as_deref(), body["Image"].as_str());
    assert_eq!(
        json!(config.cmd.unwrap_or_default()),
        body["Cmd"],
        "the command"
    );
    assert_eq!(config.working_dir.as_deref(), body["WorkingDir"].as_str());
    let labels: Value = json!(config.labels.unwrap_or_default());
    for (k, v) in body["Labels"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "label {k}");
    }
    let env = config.env.unwrap_or_default();
    for e in body["Env"].as_array().unwrap() {
        let e = e.as_str().unwrap();
        let (k, v) = e.split_once('=').unwrap();
        let real = env
            .iter()
            .find_map(|x| x.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} not in the container's env {env:?}"));
        if v == "********" {
            assert!(matches!(k, "API_TOKEN" | "DB"), "{k} masked for no reason");
            assert!(real.contains("s3cret"), "{k}={real}");
        } else {
            assert_eq!(real, v, "{k}");
        }
    }
    let host = c.host_config.expect("host config");
    assert_eq!(json!(host.memory), body["HostConfig"]["Memory"]);
    assert_eq!(
        host.network_mode.as_deref(),
        body["HostConfig"]["NetworkMode"].as_str()
    );
    assert_eq!(wait_exit(exec.as_ref()).await, Exit::Code(0));
    exec.cleanup().await;

    // Refused as `start` refuses, creating nothing: by default, and under secure_mode
    // even when the allow-list says yes.
    let id = g.run("dry-priv");
    let privileged = job(
        &id,
        &["true"],
        json!({"privileged": true, "network": "none"}),
    );
    let e = r.dry_run(&privileged).await.unwrap_err();
    assert!(matches!(e, RunnerError::Refused(_)), "{e}");
    let allowing = runner(&DockerSettings {
        allow_privileged: true,
        ..DockerSettings::default()
    })
    .await;
    allowing.dry_run(&privileged).await.expect("allowed");
    let secure = runner(&DockerSettings {
        allow_privileged: true,
        secure_mode: true,
        ..DockerSettings::default()
    })
    .await;
    let e = secure.dry_run(&privileged).await.unwrap_err();
    assert!(
        matches!(&e, RunnerError::Refused(m) if m.contains("secure_mode: true")),
        "{e}"
    );
    let e = start_err(&secure, &privileged).await;
    assert!(matches!(e, RunnerError::Refused(_)), "{e}");
    assert!(
        containers_with_label(r.client(), &format!("{LABEL_RUN_ID}={id}"))
            .await
            .is_empty()
    );
}
