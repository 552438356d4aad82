//! Shared by the `cli_*` end-to-end tests: a real `hoist server` subprocess on a free
//! loopback port with its own data dir, and the real `hoist` binary run with its own
//! HOME / XDG_CONFIG_HOME so credentials never leak between tests.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const HOIST: &str = env!("CARGO_BIN_EXE_hoist");

/// Environment variables from the developer's shell that would change what the CLI
/// does.
const SCRUB: &[&str] = &[
    "HOIST_HOST",
    "HOIST_API_KEY",
    "HOIST_LOG",
    "HOIST_BIND",
    "HOIST_DATA_DIR",
    "HOIST_DATABASE_URL",
    "XDG_DATA_HOME",
    "RUST_LOG",
];

/// A server subprocess, killed when dropped.
pub struct ServerProc {
    child: Child,
}

impl ServerProc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One isolated world: a server, a home directory, the admin key file.
pub struct World {
    pub dir: tempfile::TempDir,
    pub host: String,
    pub admin_key: PathBuf,
    /// The server's port (stable across [`World::restart_server`]).
    pub port: u16,
    /// The server's data directory.
    pub data: PathBuf,
    /// The server's log level (`HOIST_LOG`).
    log_level: String,
    server: Option<ServerProc>,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

fn healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().expect("addr"),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200")
}

/// Starts `hoist server` on `port` with `data`, its stderr appended to `log`; `None`
/// when it exited before answering (the port was taken, most likely).
fn spawn_server(
    home: &Path,
    data: &Path,
    port: u16,
    log_level: &str,
    log: &Path,
    up_within: Duration,
) -> Option<ServerProc> {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("server log file");
    let mut cmd = Command::new(HOIST);
    cmd.args([
        "server",
        "--bind",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
    ])
    .arg(data)
    .env("HOME", home)
    .env("XDG_CONFIG_HOME", home.join(".config"))
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(stderr);
    for v in SCRUB {
        cmd.env_remove(v);
    }
    cmd.env("HOIST_LOG", log_level);
    let child = cmd.spawn().expect("spawn hoist server");
    let mut server = ServerProc { child };
    let deadline = Instant::now() + up_within;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = server.child.try_wait() {
            return None;
        }
        if healthy(port) {
            return Some(server);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

impl World {
    /// Starts a server on a free port (retrying if another process took the port).
    pub fn start() -> World {
        World::start_with_log_level("warn")
    }

    /// [`World::start`] with the server's `HOIST_LOG` level (its stderr goes to
    /// [`World::server_log_path`]).
    pub fn start_with_log_level(level: &str) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("home")).expect("home");
        let data = dir.path().join("data");
        let log = dir.path().join("server.log");
        for _attempt in 0..5 {
            let port = free_port();
            let home = dir.path().join("home");
            if let Some(server) =
                spawn_server(&home, &data, port, level, &log, Duration::from_secs(20))
            {
                let admin_key = data.join("admin.key");
                assert!(admin_key.exists(), "the server wrote no admin.key");
                return World {
                    host: format!("http://127.0.0.1:{port}"),
                    admin_key,
                    dir,
                    port,
                    data,
                    log_level: level.to_string(),
                    server: Some(server),
                };
            }
        }
        panic!("the hoist server did not start");
    }

    /// Where the server's stderr goes (every start appends to it).
    pub fn server_log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The server's stderr so far.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.server_log_path()).unwrap_or_default()
    }

    /// The server's process id, while it runs.
    pub fn server_pid(&self) -> Option<u32> {
        self.server.as_ref().map(ServerProc::pid)
    }

    /// Stops the server with SIGTERM and waits for it to exit (SIGKILL after
    /// `within`). Returns how long it took to exit.
    pub fn stop_server(&mut self, within: Duration) -> Duration {
        let mut s = self.server.take().expect("the server is not running");
        let t0 = Instant::now();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(s.pid() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        while t0.elapsed() < within {
            if let Ok(Some(_)) = s.child.try_wait() {
                return t0.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(s); // SIGKILL
        t0.elapsed()
    }

    /// Starts the server again on the same port and data directory (after
    /// [`World::stop_server`]); retries while the port is not free yet.
    pub fn restart_server(&mut self) {
        assert!(self.server.is_none(), "the server is still running");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(s) = spawn_server(
                &self.home(),
                &self.data,
                self.port,
                &self.log_level,
                &self.server_log_path(),
                Duration::from_secs(20),
            ) {
                self.server = Some(s);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "the hoist server did not restart on port {}\n--- server log\n{}",
            self.port,
            self.server_log()
        );
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn config_home(&self) -> PathBuf {
        self.home().join(".config")
    }

    pub fn credentials(&self) -> PathBuf {
        self.config_home().join("hoist/credentials.yaml")
    }

    /// Writes a file in the test's directory and returns its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write file");
        p
    }

    /// `hoist ARGS` with this world's home; nothing on stdin.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(HOIST);
        c.args(args)
            .env("HOME", self.home())
            .env("XDG_CONFIG_HOME", self.config_home())
            .stdin(Stdio::null());
        for v in SCRUB {
            c.env_remove(v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd(args).output().expect("run hoist"), args)
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut c = self.cmd(args);
        for (k, v) in env {
            c.env(k, v);
        }
        Run::from(c.output().expect("run hoist"), args)
    }

    /// `hoist ARGS` as someone else: another home (and so other credentials).
    pub fn run_home(&self, home: &Path, args: &[&str]) -> Run {
        let mut c = self.cmd(args);
        c.env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join(".config"));
        Run::from(c.output().expect("run hoist"), args)
    }

    /// `hoist login` as the admin (with the server's admin.key).
    pub fn login_admin(&self) {
        let key = self.admin_key.to_string_lossy().to_string();
        self.run(&["login", "--host", &self.host, "--key-file", &key])
            .ok();
    }

    /// An aggregate gauge of the server's `/metrics` (no key needed), e.g.
    /// `hoist_log_followers`.
    pub fn gauge(&self, name: &str) -> f64 {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .expect("send");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read /metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no gauge {name} in /metrics:\n{text}"))
    }

    /// Waits (up to 20 s) until the gauge `name` is at least `n`: e.g. until a
    /// `--wait`ing CLI has read the log and parked, waiting for a wake-up.
    pub fn wait_gauge(&self, name: &str, n: f64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.gauge(name) < n {
            assert!(
                Instant::now() < deadline,
                "{name} stayed below {n} for 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn admin_key_text(&self) -> String {
        std::fs::read_to_string(&self.admin_key)
            .expect("admin key")
            .trim()
            .to_string()
    }
}

/// A `hoist agent` subprocess with its own home, killed (SIGKILL, by its pid) when
/// dropped; its stderr (`HOIST_LOG=info`) goes to a file that is printed when the
/// test panics.
pub struct AgentProc {
    child: Child,
    pub name: String,
    pub log_path: PathBuf,
    pub home: PathBuf,
}

impl AgentProc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The agent's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `kill -9` and reap.
    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM; waits up to `within` for the exit (then SIGKILL). The exit status,
    /// if it exited by itself.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let t0 = Instant::now();
        while t0.elapsed() < within {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill_9();
        None
    }

    /// The exit status if the process has ended.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- agent {} (pid {}) log {}\n{}",
                self.name,
                self.child.id(),
                self.log_path.display(),
                self.log()
            );
        }
    }
}

static AGENT_SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl World {
    /// Starts `hoist agent --name NAME ARGS…` with its own HOME / XDG_CONFIG_HOME
    /// (nothing logged in there), `HOIST_HOST` this world's server and `HOIST_API_KEY`
    /// the admin's key, `HOIST_LOG=info`.
    pub fn spawn_agent(&self, name: &str, args: &[&str]) -> AgentProc {
        self.spawn_agent_env(name, args, &[])
    }

    /// [`World::spawn_agent`] with more environment variables.
    pub fn spawn_agent_env(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> AgentProc {
        let seq = AGENT_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // One home per agent name: a restarted agent finds what its predecessor left
        // (its run directories), as on a real machine.
        let base = self.dir.path().join(format!("agent-{name}"));
        let home = base.join("home");
        std::fs::create_dir_all(home.join(".config")).expect("agent home");
        let log_path = base.join(format!("agent-{seq}.log"));
        let stderr = std::fs::File::create(&log_path).expect("agent log file");
        let mut cmd = Command::new(HOIST);
        cmd.arg("agent").arg("--name").arg(name).args(args);
        for v in SCRUB {
            cmd.env_remove(v);
        }
        cmd.env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("HOIST_HOST", &self.host)
            .env("HOIST_API_KEY", self.admin_key_text())
            .env("HOIST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn hoist agent");
        AgentProc {
            child,
            name: name.to_string(),
            log_path,
            home,
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            drop(s);
        }
        if std::thread::panicking() {
            eprintln!(
                "--- server log {}\n{}",
                self.server_log_path().display(),
                self.server_log()
            );
        }
    }
}

/// The outcome of one `hoist` invocation.
pub struct Run {
    pub args: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output, args: &[&str]) -> Run {
        Run {
            args: args.join(" "),
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn show(&self) -> String {
        format!(
            "`hoist {}` exited {}\n--- stdout\n{}\n--- stderr\n{}",
            self.args, self.code, self.stdout, self.stderr
        )
    }

    /// Asserts success; returns self for chaining.
    pub fn ok(self) -> Run {
        assert_eq!(self.code, 0, "{}", self.show());
        self
    }

    /// Asserts the exit code.
    pub fn code(self, code: i32) -> Run {
        assert_eq!(self.code, code, "{}", self.show());
        self.no_debug_output();
        self
    }

    pub fn stderr_has(self, needle: &str) -> Run {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}\n{}",
            self.show()
        );
        self
    }

    pub fn stdout_has(self, needle: &str) -> Run {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}\n{}",
            self.show()
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", self.show()))
    }

    /// Errors are `error: message`, never Rust debug output or a panic.
    fn no_debug_output(&self) {
        for bad in [
            "panicked",
            "Api {",
            "Transport {",
            "RUST_BACKTRACE",
            "Error {",
        ] {
            assert!(
                !self.stderr.contains(bad),
                "debug output {bad:?}\n{}",
                self.show()
            );
        }
        if self.code != 0 {
            assert!(
                self.stderr.contains("error: ") || self.stderr.contains("hoist: "),
                "no error line\n{}",
                self.show()
            );
        }
    }
}

/// The child's output once it exits; a failure if it is still running after `within`
/// (then it was not woken).
/// The logs of every process in `agents`, oldest first.
pub fn agents_log(agents: &[AgentProc]) -> String {
    agents
        .iter()
        .map(AgentProc::log)
        .collect::<Vec<_>>()
        .join("\n---\n")
}

pub fn exit_within(mut child: Child, within: Duration) -> Output {
    let deadline = Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the waiting CLI was not woken: still running after {within:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

pub fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

/// The value of a `label:  value` line of a `show` command.
pub fn field(text: &str, label: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{label}:")))
        .map(|v| v.trim().to_string())
}

// ---------------------------------------------------------------------------------
// Runs and agents as the CLI shows them (the end-to-end tests').

/// How long a run may take to reach a state it is expected to reach (a loaded 2-core
/// machine, a cluster starting pods).
pub const RUN_WAIT: Duration = Duration::from_secs(180);
/// How long an agent may take to register.
pub const AGENT_WAIT: Duration = Duration::from_secs(60);

/// A run that ended (its state is final).
pub fn is_terminal(r: &serde_json::Value) -> bool {
    matches!(
        r["state"].as_str(),
        Some("finished" | "failed" | "stopped" | "cancelled")
    )
}

/// The run id a `hoist launch --wait` names on stderr.
pub fn launched_id(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("hoist: launched run "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no `launched run` line in:\n{stderr}"))
        .to_string()
}

impl World {
    /// `hoist launch --queue Q --image IMAGE -- ARGS…`: the run id.
    pub fn launch_image(&self, queue: &str, image: &str, args: &[&str]) -> String {
        let mut a = vec!["launch", "--queue", queue, "--image", image, "--"];
        a.extend_from_slice(args);
        let r = self.run(&a).ok();
        let id = r.stdout.trim().to_string();
        assert!(!id.is_empty(), "no run id printed");
        id
    }

    /// `hoist run show ID -o json`.
    pub fn show_run(&self, id: &str) -> serde_json::Value {
        self.run(&["run", "show", id, "-o", "json"]).ok().json()
    }

    /// The run's log as (stream, text) pairs (`hoist run logs -o json`).
    pub fn run_logs(&self, id: &str) -> Vec<(String, String)> {
        let r = self.run(&["run", "logs", id, "-o", "json"]).ok();
        r.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"));
                (
                    v["stream"].as_str().unwrap_or_default().to_string(),
                    v["text"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// The lines the job wrote (stdout and stderr, not hoist's own).
    pub fn job_lines(&self, id: &str) -> Vec<String> {
        self.run_logs(id)
            .into_iter()
            .filter(|(s, _)| s != "system")
            .map(|(_, t)| t)
            .collect()
    }

    /// Polls the run until `pred` holds: its JSON. Panics with the run and its log
    /// after [`RUN_WAIT`].
    pub fn wait_run(
        &self,
        id: &str,
        what: &str,
        mut pred: impl FnMut(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let within = RUN_WAIT;
        let t0 = Instant::now();
        loop {
            let r = self.show_run(id);
            if pred(&r) {
                return r;
            }
            assert!(
                t0.elapsed() < within,
                "run {id}: not {what} after {within:?}:\n{}\nlogs:\n{:#?}",
                serde_json::to_string_pretty(&r).unwrap_or_default(),
                self.run_logs(id)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn wait_state(&self, id: &str, state: &str) -> serde_json::Value {
        self.wait_run(id, state, |r| r["state"] == state)
    }

    pub fn wait_ended(&self, id: &str) -> serde_json::Value {
        self.wait_run(id, "ended", is_terminal)
    }

    /// Waits until the run's log holds a line equal to `text`.
    pub fn wait_log_line(&self, id: &str, text: &str) {
        self.wait_run(id, &format!("logging {text:?}"), |_| {
            self.run_logs(id).iter().any(|(_, t)| t == text)
        });
    }

    /// `hoist queue create NAME --resource RESOURCE --config FILE FLAGS…` with `config`
    /// written to `FILE` in the world's directory; it must succeed.
    pub fn create_queue_from(
        &self,
        name: &str,
        resource: &str,
        file: &str,
        config: &str,
        flags: &[&str],
    ) {
        let path = self.file(file, config);
        let path = path.to_string_lossy();
        let mut args = vec![
            "queue",
            "create",
            name,
            "--resource",
            resource,
            "--config",
            &path,
        ];
        args.extend_from_slice(flags);
        self.run(&args).ok();
    }

    /// Starts (or restarts) agent `name` with `-c CONFIG -q QUEUE…` and `env`, adds its
    /// process to `agents`, and waits until it polls (see [`World::wait_agents`]).
    pub fn start_agent(
        &self,
        agents: &mut Vec<AgentProc>,
        name: &str,
        config: &Path,
        queues: &[&str],
        env: &[(&str, &str)],
    ) {
        let config = config.to_string_lossy();
        let mut args = vec!["-c", config.as_ref()];
        for q in queues {
            args.extend(["-q", q]);
        }
        agents.push(self.spawn_agent_env(name, &args, env));
        self.wait_agents(agents, &[name]);
    }

    /// Waits until every agent of `names` is registered and connected (`hoist agent
    /// list`), by its newest process in `agents`, which must still run (a restarted
    /// agent's name is listed before the new process registered: its log says when).
    pub fn wait_agents(&self, agents: &mut [AgentProc], names: &[&str]) {
        let within = AGENT_WAIT;
        let t0 = Instant::now();
        loop {
            let list = self.run(&["agent", "list", "-o", "json"]).ok().json();
            let up: std::collections::BTreeSet<String> = list
                .as_array()
                .expect("agent list is an array")
                .iter()
                .filter(|a| matches!(a["status"].as_str(), Some("polling" | "running")))
                .filter_map(|a| a["name"].as_str().map(str::to_string))
                .collect();
            let mut all = true;
            for n in names {
                let newest = agents
                    .iter_mut()
                    .rev()
                    .find(|a| a.name == *n)
                    .unwrap_or_else(|| panic!("no process of agent {n}"));
                if let Some(st) = newest.try_wait() {
                    panic!("agent {n} exited early ({st})\n{}", newest.log());
                }
                all &= up.contains(*n) && newest.log().contains("Agent registered");
            }
            if all {
                return;
            }
            assert!(
                t0.elapsed() < within,
                "agents {names:?} did not register; registered: {up:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
