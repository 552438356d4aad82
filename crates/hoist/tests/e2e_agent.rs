//! End-to-end tests of the launch agent, through real processes only: a `hoist server`
//! subprocess, `hoist agent` subprocesses (each with its own home, `HOIST_HOST` /
//! `HOIST_API_KEY` in its environment, `HOIST_LOG=info` to a file printed on failure)
//! and the `hoist` CLI, against the real Docker daemon of the test environment
//! (`source ~/.cache/hoist/test-env.sh`, written by `scripts/test-env.sh`).
//!
//! Without `HOIST_TEST_DOCKER=1` each test is skipped with a note, unless
//! `HOIST_TEST_REQUIRE_SERVICES` is set (then it fails). The daemon has no bridge
//! network: every docker queue here uses `network: none`, and the image is the locally
//! built `hoist-test/busybox:latest`.
//!
//! Every process a test starts is killed by its pid when the test ends, whatever its
//! outcome; every container an agent of the test created is removed (found by its
//! `hoist.agent` label, through the Engine API). Timeouts are generous (a loaded 2-core
//! machine); no test asserts how long something took: they wait for events (a log
//! line, a state, the order of the server's own transition times).

mod cli_support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use cli_support::{AgentProc, World, is_terminal, launched_id};
use hoist_testkit::{busybox_image as image, require_docker};
use serde_json::Value;

/// How long a run may take to reach a state it is expected to reach.
const LONG: Duration = Duration::from_secs(120);

/// A name no other test (or earlier run of this one) uses.
fn unique(prefix: &str) -> String {
    hoist_testkit::unique(&format!("e2e-{prefix}"))
}

// ---------------------------------------------------------------------------------
// Docker, through the Engine API.

/// A bollard client with its own runtime (the tests themselves are synchronous).
struct DockerApi {
    rt: tokio::runtime::Runtime,
    docker: bollard::Docker,
}

impl DockerApi {
    fn connect() -> DockerApi {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let docker = rt.block_on(async {
            bollard::Docker::connect_with_local_defaults()
                .expect("docker client")
                .negotiate_version()
                .await
                .expect("the Docker daemon answers")
        });
        DockerApi { rt, docker }
    }

    /// Container ids (all states) carrying `label` (`key=value`).
    fn containers(&self, label: &str) -> Vec<String> {
        let filters = HashMap::from([("label".to_string(), vec![label.to_string()])]);
        self.rt
            .block_on(self.docker.list_containers(Some(ListContainersOptions {
                all: true,
                limit: None,
                size: false,
                filters: Some(filters),
            })))
            .expect("list containers")
            .into_iter()
            .filter_map(|c| c.id)
            .collect()
    }

    fn run_containers(&self, run: &str) -> Vec<String> {
        self.containers(&format!("hoist.run-id={run}"))
    }

    fn running(&self, id: &str) -> bool {
        self.rt
            .block_on(self.docker.inspect_container(id, None))
            .ok()
            .and_then(|c| c.state)
            .and_then(|s| s.running)
            .unwrap_or(false)
    }

    fn remove(&self, id: &str) {
        let _ = self.rt.block_on(self.docker.remove_container(
            id,
            Some(RemoveContainerOptions {
                v: true,
                force: true,
                link: false,
            }),
        ));
    }

    /// Waits until no container of `run` exists.
    fn wait_no_container(&self, run: &str, within: Duration) {
        let t0 = Instant::now();
        loop {
            let left = self.run_containers(run);
            if left.is_empty() {
                return;
            }
            assert!(
                t0.elapsed() < within,
                "the container(s) {left:?} of run {run} still exist {within:?} after the run ended"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

// ---------------------------------------------------------------------------------
// One test's world: a server, its agents, their containers.

/// Dropped in field order: agents killed first (by pid), then every container their
/// names labelled removed, then the server killed.
struct E2e {
    agents: Vec<AgentProc>,
    /// `hoist.agent` names whose containers are removed at the end.
    agent_names: Vec<String>,
    docker: Option<DockerApi>,
    w: World,
}

impl Drop for E2e {
    fn drop(&mut self) {
        for a in &mut self.agents {
            a.kill_9();
        }
        if let Some(d) = &self.docker {
            for name in &self.agent_names {
                for id in d.containers(&format!("hoist.agent={name}")) {
                    d.remove(&id);
                }
            }
        }
    }
}

impl E2e {
    /// A server (logged in as the admin) and, when `docker`, an Engine API client.
    fn new(docker: bool) -> E2e {
        let w = World::start_with_log_level("info");
        w.login_admin();
        E2e {
            agents: Vec::new(),
            agent_names: Vec::new(),
            docker: docker.then(DockerApi::connect),
            w,
        }
    }

    fn docker(&self) -> &DockerApi {
        self.docker.as_ref().expect("docker")
    }

    /// A docker queue: `network: none` and `extra` (YAML lines).
    fn docker_queue(&self, name: &str, extra: &str) {
        self.docker_queue_with(name, extra, &[]);
    }

    /// [`E2e::docker_queue`] with more `queue create` flags.
    fn docker_queue_with(&self, name: &str, extra: &str, flags: &[&str]) {
        let file = self
            .w
            .file(&format!("{name}.yaml"), &format!("network: none\n{extra}"));
        let file = file.to_string_lossy();
        let mut args = vec![
            "queue",
            "create",
            name,
            "--resource",
            "docker",
            "--config",
            &file,
        ];
        args.extend_from_slice(flags);
        self.w.run(&args).ok();
    }

    /// Starts an agent process named `name` (a name may be used by several processes
    /// in turn). Returns its index in `agents`.
    fn agent(&mut self, name: &str, args: &[&str]) -> usize {
        let a = self.w.spawn_agent(name, args);
        if !self.agent_names.iter().any(|n| n == name) {
            self.agent_names.push(name.to_string());
        }
        self.agents.push(a);
        self.agents.len() - 1
    }

    /// Waits until every named agent is registered and connected.
    fn wait_agents(&mut self, names: &[&str]) {
        self.w.wait_agents(&mut self.agents, names);
    }

    /// `hoist launch --queue Q --image IMG -- ARGS…`: the run id.
    fn launch(&self, queue: &str, args: &[&str]) -> String {
        self.w.launch_image(queue, &image(), args)
    }
}

/// The timeline's transitions as (to, at, reason).
fn timeline(r: &Value) -> Vec<(String, chrono::DateTime<chrono::Utc>, String)> {
    r["timeline"]
        .as_array()
        .expect("the run has a timeline")
        .iter()
        .map(|t| {
            (
                t["to"].as_str().unwrap_or_default().to_string(),
                t["at"]
                    .as_str()
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                    .expect("transition time")
                    .with_timezone(&chrono::Utc),
                t["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// When the run first entered `state`.
fn entered(r: &Value, state: &str) -> chrono::DateTime<chrono::Utc> {
    timeline(r)
        .into_iter()
        .find(|(to, _, _)| to == state)
        .map(|(_, at, _)| at)
        .unwrap_or_else(|| {
            panic!(
                "the run never entered {state}:\n{}",
                serde_json::to_string_pretty(r).unwrap_or_default()
            )
        })
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

// ---------------------------------------------------------------------------------
// Local processes left behind by a killed agent.

/// Process groups to SIGKILL when dropped.
#[derive(Default)]
struct ProcessGroups(Vec<i32>);

impl Drop for ProcessGroups {
    fn drop(&mut self) {
        let own = nix::unistd::getpgrp().as_raw();
        for pg in self.0.iter().filter(|pg| **pg > 1 && **pg != own) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(*pg),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Processes whose environment holds `HOIST_RUN_ID=<run>`: (pid, process group).
fn processes_of_run(run: &str) -> Vec<(i32, i32)> {
    let needle = format!("HOIST_RUN_ID={run}");
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if !env.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
            continue;
        }
        if let Ok(pg) = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid))) {
            out.push((pid, pg.as_raw()));
        }
    }
    out
}

// ---------------------------------------------------------------------------------
// The tests.

/// `hoist launch --wait` prints the job's output and exits with the run's outcome; a
/// failed run names its exit code, stage and log tail; `hoist run logs` shows both
/// streams; the container is removed once the run has ended.
#[test]
fn e2e_docker_launch_logs_exit_codes() {
    require_docker!();
    let mut e = E2e::new(true);
    let agent = unique("launch");
    e.docker_queue("dq", "");
    e.agent(&agent, &["-q", "dq"]);
    e.wait_agents(&[&agent]);
    let img = image();

    let ok =
        e.w.run(&[
            "launch",
            "--queue",
            "dq",
            "--image",
            &img,
            "--wait",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 0",
        ])
        .ok();
    assert!(
        ok.stdout.lines().any(|l| l == "out"),
        "stdout lacks `out`:\n{}",
        ok.stdout
    );
    assert!(
        ok.stderr.lines().any(|l| l == "err"),
        "stderr lacks `err`:\n{}",
        ok.stderr
    );
    let ok_id = launched_id(&ok.stderr);
    let r = e.w.show_run(&ok_id);
    assert_eq!(r["state"], "finished", "{}", pretty(&r));
    assert_eq!(r["exit_code"], 0, "{}", pretty(&r));

    let bad =
        e.w.run(&[
            "launch",
            "--queue",
            "dq",
            "--image",
            &img,
            "--wait",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 5",
        ])
        .code(1)
        .stdout_has("out")
        .stderr_has("exit code 5")
        .stderr_has("in the run stage");
    let bad_id = launched_id(&bad.stderr);
    let r = e.w.show_run(&bad_id);
    assert_eq!(r["state"], "failed", "{}", pretty(&r));
    assert_eq!(r["exit_code"], 5, "{}", pretty(&r));
    assert_eq!(r["failure"]["stage"], "run", "{}", pretty(&r));
    assert!(
        r["failure"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("exit code 5")),
        "{}",
        pretty(&r)
    );
    let tail: Vec<&str> = r["failure"]["log_tail"]
        .as_array()
        .expect("log tail")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        tail.iter().any(|l| l.contains("out")) && tail.iter().any(|l| l.contains("err")),
        "the log tail lacks the job's lines: {tail:?}"
    );
    // The human view shows the same.
    e.w.run(&["run", "show", &bad_id])
        .ok()
        .stdout_has("exit code:")
        .stdout_has("run stage")
        .stdout_has("log tail:");

    // `hoist run logs`: stdout lines on stdout, stderr lines on stderr.
    for id in [&ok_id, &bad_id] {
        let l = e.w.run(&["run", "logs", id]).ok();
        assert!(l.stdout.lines().any(|x| x == "out"), "{id}: {}", l.stdout);
        assert!(l.stderr.lines().any(|x| x == "err"), "{id}: {}", l.stderr);
        let streams: BTreeMap<String, String> =
            e.w.run_logs(id)
                .into_iter()
                .filter(|(s, _)| s != "system")
                .map(|(s, t)| (t, s))
                .collect();
        assert_eq!(streams.get("out").map(String::as_str), Some("stdout"));
        assert_eq!(streams.get("err").map(String::as_str), Some("stderr"));
    }

    // The containers are gone.
    for id in [&ok_id, &bad_id] {
        e.docker().wait_no_container(id, Duration::from_secs(30));
    }
}

/// `hoist run stop`: a job that exits on SIGTERM ends at once; one that ignores it is
/// killed after the agent's `stopped_run_timeout`; both end `stopped`.
#[test]
fn e2e_docker_stop_within_grace() {
    require_docker!();
    let mut e = E2e::new(true);
    let agent = unique("stop");
    e.docker_queue("dq", "");
    let cfg = e.w.file("launch-config.yaml", "stopped_run_timeout: 3s\n");
    e.agent(
        &agent,
        &["-q", "dq", "-j", "4", "-c", &cfg.to_string_lossy()],
    );
    e.wait_agents(&[&agent]);

    // `ready` once the trap is set: a TERM before that would be ignored (PID 1).
    let polite = e.launch(
        "dq",
        &[
            "sh",
            "-c",
            "trap \"echo bye; exit 0\" TERM; echo ready; while true; do sleep 0.1; done",
        ],
    );
    // Ignores TERM (says so, then keeps writing until the kill).
    let stubborn = e.launch(
        "dq",
        &[
            "sh",
            "-c",
            "trap \"echo term-ignored; T=1\" TERM; echo ready; while true; do [ -n \"$T\" ] && echo alive-after-term; sleep 0.1; done",
        ],
    );
    for id in [&polite, &stubborn] {
        e.w.wait_state(id, "running");
        e.w.wait_log_line(id, "ready");
    }

    let t0 = Instant::now();
    e.w.run(&["run", "stop", &polite])
        .ok()
        .stdout_has("Stop requested");
    e.w.run(&["run", "stop", &stubborn]).ok();

    let p = e.w.wait_state(&polite, "stopped");
    let polite_wall = t0.elapsed();
    let s = e.w.wait_state(&stubborn, "stopped");
    let stubborn_wall = t0.elapsed();

    // Server-side times: from the stop request to the end.
    let p_took = (entered(&p, "stopped") - entered(&p, "stopping"))
        .to_std()
        .expect("positive");
    let s_took = (entered(&s, "stopped") - entered(&s, "stopping"))
        .to_std()
        .expect("positive");
    eprintln!(
        "polite: stopped {p_took:?} after the request ({polite_wall:?} wall); stubborn: {s_took:?} ({stubborn_wall:?} wall)"
    );
    assert!(
        e.w.job_lines(&polite).iter().any(|l| l == "bye"),
        "no `bye` in the polite job's logs: {:?}",
        e.w.run_logs(&polite)
    );
    assert_eq!(p["exit_code"], 0, "{}", pretty(&p));
    // TERM first, then the job ran on until the kill after the grace period.
    let lines = e.w.job_lines(&stubborn);
    let term = lines
        .iter()
        .position(|l| l == "term-ignored")
        .unwrap_or_else(|| panic!("no TERM reached the stubborn job: {lines:?}"));
    assert!(
        lines[term..].iter().any(|l| l == "alive-after-term"),
        "the stubborn job was killed at once, not after the grace period: {lines:?}"
    );
    assert_eq!(s["exit_code"], 137, "killed by SIGKILL:\n{}", pretty(&s));
    for id in [&polite, &stubborn] {
        e.docker().wait_no_container(id, Duration::from_secs(30));
    }
}

/// A queued run (its agent is busy at `-j 1`) can be cancelled: it ends `cancelled`,
/// never runs, and the agent goes on with later launches, taking the next one only once
/// the busy run has ended (the server's transition times say so).
#[test]
fn e2e_cancel_queued_run() {
    require_docker!();
    let mut e = E2e::new(true);
    let agent = unique("cancel");
    e.docker_queue("dq", "");
    e.agent(&agent, &["-q", "dq", "-j", "1"]);
    e.wait_agents(&[&agent]);

    let busy = e.launch(
        "dq",
        &[
            "sh",
            "-c",
            "trap \"echo bye; exit 0\" TERM; echo busy; while true; do sleep 0.1; done",
        ],
    );
    e.w.wait_state(&busy, "running");
    e.w.wait_log_line(&busy, "busy");
    let victim = e.launch("dq", &["sh", "-c", "echo victim"]);
    e.w.run(&["run", "cancel", &victim])
        .ok()
        .stdout_has("cancelled");
    let v = e.w.show_run(&victim);
    assert_eq!(v["state"], "cancelled", "{}", pretty(&v));

    let later = e.launch("dq", &["sh", "-c", "echo later"]);
    // The stop answers the agent's claim: an agent ignoring its capacity would take
    // the later run in that same claim, before the busy one has stopped.
    e.w.run(&["run", "stop", &busy]).ok();
    // Until the later run is done, the cancelled one never gets a container.
    let t0 = Instant::now();
    loop {
        assert!(
            e.docker().run_containers(&victim).is_empty(),
            "the cancelled run {victim} got a container"
        );
        let l = e.w.show_run(&later);
        if is_terminal(&l) {
            assert_eq!(l["state"], "finished", "{}", pretty(&l));
            break;
        }
        assert!(
            t0.elapsed() < LONG,
            "the later run did not end:\n{}",
            pretty(&l)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(e.w.job_lines(&later), ["later"]);
    let b = e.w.wait_ended(&busy);
    assert_eq!(b["state"], "stopped", "{}", pretty(&b));
    let l = e.w.show_run(&later);
    assert!(
        entered(&l, "claimed") >= entered(&b, "stopped"),
        "-j 1: the later run was claimed before the busy one ended:\n{}\n{}",
        pretty(&b),
        pretty(&l)
    );

    let v = e.w.show_run(&victim);
    assert_eq!(v["state"], "cancelled", "{}", pretty(&v));
    assert!(
        v["agent"].is_null(),
        "no agent ever held it:\n{}",
        pretty(&v)
    );
    assert!(v["exit_code"].is_null(), "{}", pretty(&v));
    let states: Vec<String> = timeline(&v).into_iter().map(|(to, _, _)| to).collect();
    assert_eq!(states, ["queued", "cancelled"], "{}", pretty(&v));
    assert!(
        e.w.run_logs(&victim).is_empty(),
        "{:?}",
        e.w.run_logs(&victim)
    );
    assert!(e.docker().run_containers(&victim).is_empty());
}

/// `kill -9` of the agent leaves its container running; a new process under the same
/// name re-adopts it and ships the rest of its output: every line exactly once.
#[test]
fn e2e_docker_agent_kill_9_readopts() {
    require_docker!();
    let mut e = E2e::new(true);
    let agent = unique("readopt");
    e.docker_queue("dq", "");
    let first = e.agent(&agent, &["-q", "dq"]);
    e.wait_agents(&[&agent]);

    let id = e.launch(
        "dq",
        &[
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8; do echo line$i; sleep 0.5; done",
        ],
    );
    e.w.wait_log_line(&id, "line2");
    e.agents[first].kill_9();

    let containers = e.docker().run_containers(&id);
    assert_eq!(
        containers.len(),
        1,
        "one container for the run: {containers:?}"
    );
    assert!(
        e.docker().running(&containers[0]),
        "the container died with the agent"
    );

    e.agent(&agent, &["-q", "dq"]);
    let r = e.w.wait_ended(&id);
    assert_eq!(r["state"], "finished", "{}", pretty(&r));
    assert_eq!(r["exit_code"], 0, "{}", pretty(&r));

    let lines = e.w.job_lines(&id);
    for i in 1..=8 {
        let want = format!("line{i}");
        let n = lines.iter().filter(|l| **l == want).count();
        assert_eq!(n, 1, "{want} appears {n} times in {lines:?}");
    }
    let expected: Vec<String> = (1..=8).map(|i| format!("line{i}")).collect();
    assert_eq!(lines, expected, "the job's lines, in order");

    let in_timeline = timeline(&r)
        .iter()
        .any(|(_, _, why)| why.contains("re-adopted"));
    let in_logs =
        e.w.run_logs(&id)
            .iter()
            .any(|(s, t)| s == "system" && t.contains("re-adopted"));
    assert!(
        in_timeline || in_logs,
        "neither the timeline nor the log mentions the re-adoption:\n{}\n{:#?}",
        pretty(&r),
        e.w.run_logs(&id)
    );
    e.docker().wait_no_container(&id, Duration::from_secs(30));
}

/// A local process cannot outlive its agent's supervision: after `kill -9` and a
/// restart under the same name, the run fails with `agent restarted`.
#[test]
fn e2e_local_process_agent_kill_9_fails_with_agent_restarted() {
    let mut e = E2e::new(false);
    let mut orphans = ProcessGroups::default();
    let agent = unique("local");
    e.w.run(&["queue", "create", "lq", "--resource", "local-process"])
        .ok();
    let first = e.agent(&agent, &["-q", "lq"]);
    e.wait_agents(&[&agent]);

    let id =
        e.w.run(&["launch", "--queue", "lq", "--", "sleep", "30"])
            .ok()
            .stdout
            .trim()
            .to_string();
    e.w.wait_state(&id, "running");
    // The job's process (found by its environment), to clean up after.
    let t0 = Instant::now();
    let procs = loop {
        let p = processes_of_run(&id);
        if !p.is_empty() || t0.elapsed() > Duration::from_secs(10) {
            break p;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!procs.is_empty(), "no process of run {id} found");
    orphans.0.extend(procs.iter().map(|(_, pg)| *pg));

    e.agents[first].kill_9();
    e.agent(&agent, &["-q", "lq"]);
    let r = e.w.wait_ended(&id);
    assert_eq!(r["state"], "failed", "{}", pretty(&r));
    let reason = r["state_reason"].as_str().unwrap_or_default();
    let message = r["failure"]["message"].as_str().unwrap_or_default();
    assert!(
        reason.contains("agent restarted") || message.contains("agent restarted"),
        "{}",
        pretty(&r)
    );
    assert_eq!(r["failure"]["stage"], "agent", "{}", pretty(&r));
    // The restarted agent stopped what its killed predecessor left running.
    assert!(message.contains("was stopped"), "{}", pretty(&r));
    let t0 = Instant::now();
    let alive = || -> Vec<i32> {
        procs
            .iter()
            .map(|(pid, _)| *pid)
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| !s.contains(") Z "))
                    .unwrap_or(false)
            })
            .collect()
    };
    while !alive().is_empty() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        alive().is_empty(),
        "the job's processes {:?} outlived the restarted agent",
        alive()
    );
    drop(orphans);
}

/// A SIGTERM'd server restarted on the same port and data dir: the agent and the run
/// carry on; the run ends `finished` with its output, and new launches run.
#[test]
fn e2e_server_restart_while_docker_job_runs() {
    require_docker!();
    let mut e = E2e::new(true);
    let agent = unique("restart");
    e.docker_queue("dq", "");
    e.agent(&agent, &["-q", "dq"]);
    e.wait_agents(&[&agent]);

    let id = e.launch("dq", &["sh", "-c", "echo before; sleep 3; echo after"]);
    e.w.wait_state(&id, "running");
    e.w.wait_log_line(&id, "before");

    let t0 = Instant::now();
    let seen_before = e.agents[0]
        .log()
        .lines()
        .filter(|l| l.contains("unreachable"))
        .count();
    let stopped_in = e.w.stop_server(Duration::from_secs(30));
    // Down until the agent has found nobody there (a claim or a heartbeat failed).
    loop {
        let seen = e.agents[0]
            .log()
            .lines()
            .filter(|l| l.contains("unreachable"))
            .count();
        if seen > seen_before {
            break;
        }
        assert!(
            t0.elapsed() < LONG,
            "the agent never noticed the server was gone:\n{}",
            e.agents[0].log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    e.w.restart_server();
    eprintln!(
        "server: SIGTERM to exit {stopped_in:?}; down {:?} in all",
        t0.elapsed()
    );

    let r = e.w.wait_ended(&id);
    assert_eq!(r["state"], "finished", "{}", pretty(&r));
    assert_eq!(r["exit_code"], 0, "{}", pretty(&r));
    let lines = e.w.job_lines(&id);
    assert_eq!(lines, ["before", "after"], "{:#?}", e.w.run_logs(&id));
    let retries = e.agents[0]
        .log()
        .lines()
        .filter(|l| l.contains("unreachable"))
        .count();
    eprintln!("the agent logged {retries} `unreachable` warning(s) while the server was down");

    let img = image();
    e.w.run(&[
        "launch", "--queue", "dq", "--image", &img, "--wait", "--", "echo", "again",
    ])
    .ok()
    .stdout_has("again");
    e.docker().wait_no_container(&id, Duration::from_secs(30));
}

/// Three agents on one queue share twelve runs: every run ends `finished`, each ran
/// exactly once, and more than one agent took part.
#[test]
fn e2e_many_agents_one_queue_docker() {
    require_docker!();
    let mut e = E2e::new(true);
    let names: Vec<String> = (0..3).map(|i| unique(&format!("many{i}"))).collect();
    e.docker_queue("dq", "");
    for n in &names {
        e.agent(n, &["-q", "dq", "-j", "2"]);
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    e.wait_agents(&refs);

    let ids: Vec<String> = (0..12)
        .map(|_| e.launch("dq", &["sh", "-c", "echo ran-$HOIST_RUN_ID; sleep 1"]))
        .collect();
    let mut by_agent: BTreeMap<String, usize> = BTreeMap::new();
    for id in &ids {
        let r = e.w.wait_ended(id);
        assert_eq!(r["state"], "finished", "{}", pretty(&r));
        assert_eq!(r["exit_code"], 0, "{}", pretty(&r));
        assert_eq!(r["attempts"], 1, "handed out once:\n{}", pretty(&r));
        let runs = timeline(&r)
            .iter()
            .filter(|(to, _, _)| to == "running")
            .count();
        assert_eq!(runs, 1, "started once:\n{}", pretty(&r));
        assert_eq!(
            e.w.job_lines(id),
            [format!("ran-{id}")],
            "exactly one line, from this run's container"
        );
        let a = r["agent"]["name"].as_str().expect("agent").to_string();
        assert!(names.contains(&a), "run {id} ran on a stranger: {a}");
        *by_agent.entry(a).or_default() += 1;
    }
    eprintln!("runs per agent: {by_agent:?}");
    assert!(
        by_agent.len() >= 2,
        "one agent ran everything: {by_agent:?}"
    );
    for id in &ids {
        e.docker().wait_no_container(id, Duration::from_secs(30));
    }
}

/// `privileged: true` is accepted in a queue config only when an admin allows it; the
/// agent still refuses it (its config does not allow it) before creating anything.
#[test]
fn e2e_privileged_refused() {
    require_docker!();
    let mut e = E2e::new(true);
    let agent = unique("priv");
    e.docker_queue_with("pq", "privileged: true\n", &["--allow-privileged"]);
    e.agent(&agent, &["-q", "pq"]);
    e.wait_agents(&[&agent]);

    let id = e.launch("pq", &["sh", "-c", "echo should-not-run"]);
    let r = e.w.wait_ended(&id);
    assert_eq!(r["state"], "failed", "{}", pretty(&r));
    assert_eq!(r["failure"]["stage"], "agent", "{}", pretty(&r));
    let msg = r["failure"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("privileged"), "{msg}");
    assert!(
        msg.contains("docker.allow-privileged"),
        "the message names the agent-config key: {msg}"
    );
    assert!(r["exit_code"].is_null(), "{}", pretty(&r));
    assert!(
        !e.w.job_lines(&id)
            .iter()
            .any(|l| l.contains("should-not-run")),
        "{:?}",
        e.w.run_logs(&id)
    );
    assert!(e.docker().run_containers(&id).is_empty());
    assert!(
        e.docker()
            .containers(&format!("hoist.agent={agent}"))
            .is_empty(),
        "the agent created a container"
    );
}

/// `hoist agent` skips the queues it has no runner for (saying so), and the agent's
/// own environment never reaches a local job: not its credentials by name
/// (`MYSQL_PWD`), not those by value (`DATABASE_URL` with a password, a GitHub token),
/// not its own key, not even its plain variables (`allow-env-passthrough` is off by
/// default), unless the queue config lists a plain one.
#[test]
fn e2e_agent_environment_never_reaches_local_jobs() {
    let mut e = E2e::new(false);
    let agent = unique("env");
    let lq = e.w.file("lq.yaml", "env: [PLAIN_BY_QUEUE, DATABASE_URL]\n");
    e.w.run(&[
        "queue",
        "create",
        "lq",
        "--resource",
        "local-process",
        "--config",
        &lq.to_string_lossy(),
    ])
    .ok();
    e.w.run(&["queue", "create", "kq", "--resource", "kubernetes"])
        .ok();
    let a = e.w.spawn_agent_env(
        &agent,
        &["-q", "lq", "-q", "kq"],
        &[
            ("DATABASE_URL", "postgres://app:db-s3cret@db.internal/app"),
            ("GITHUB_PAT", "ghp_0123456789abcdefghijABCDEFGHIJ012345"),
            ("MYSQL_PWD", "mysql-s3cret"),
            ("PLAIN_BY_QUEUE", "listed"),
            ("AGENT_ONLY_PLAIN", "agent-only"),
        ],
    );
    e.agent_names.push(agent.clone());
    e.agents.push(a);
    e.wait_agents(&[&agent]);
    let log = e.agents[0].log();
    assert!(
        log.contains("queue admin/kq targets kubernetes; this agent has no kubernetes runner"),
        "the agent says which queue it skips and why:\n{log}"
    );
    let list = e.w.run(&["agent", "list", "-o", "json"]).ok().json();
    let me = list
        .as_array()
        .expect("agents")
        .iter()
        .find(|a| a["name"] == agent.as_str())
        .expect("registered");
    assert_eq!(
        me["queues"],
        serde_json::json!(["admin/lq"]),
        "{}",
        pretty(me)
    );

    let id =
        e.w.run(&["launch", "--queue", "lq", "--", "sh", "-c", "env | sort"])
            .ok()
            .stdout
            .trim()
            .to_string();
    let r = e.w.wait_ended(&id);
    assert_eq!(r["state"], "finished", "{}", pretty(&r));
    let lines = e.w.job_lines(&id);
    let admin_key = e.w.admin_key_text();
    for secret in [
        "db-s3cret",
        "ghp_0123456789",
        "mysql-s3cret",
        "agent-only",
        admin_key.trim(),
    ] {
        assert!(
            !lines.iter().any(|l| l.contains(secret)),
            "the job got {secret:?}: {lines:?}"
        );
    }
    assert!(
        lines.iter().any(|l| l == "PLAIN_BY_QUEUE=listed"),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.starts_with("PATH=")), "{lines:?}");
    assert!(
        e.w.run_logs(&id).iter().any(|(s, t)| s == "system"
            && t.contains("DATABASE_URL")
            && t.contains("looks like a credential")),
        "{:#?}",
        e.w.run_logs(&id)
    );
}
