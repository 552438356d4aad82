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
    _server: ServerProc,
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

impl World {
    /// Starts a server on a free port (retrying if another process took the port).
    pub fn start() -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("home")).expect("home");
        let data = dir.path().join("data");
        for _attempt in 0..5 {
            let port = free_port();
            let mut cmd = Command::new(HOIST);
            cmd.args([
                "server",
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(&data)
            .env("HOME", dir.path().join("home"))
            .env("XDG_CONFIG_HOME", dir.path().join("home/.config"))
            .env("HOIST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
            for v in SCRUB {
                if *v != "HOIST_LOG" {
                    cmd.env_remove(v);
                }
            }
            let child = cmd.spawn().expect("spawn hoist server");
            let mut server = ServerProc { child };
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut up = false;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = server.child.try_wait() {
                    break; // exited: the port was taken, most likely
                }
                if healthy(port) {
                    up = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if up {
                let admin_key = data.join("admin.key");
                assert!(admin_key.exists(), "the server wrote no admin.key");
                return World {
                    host: format!("http://127.0.0.1:{port}"),
                    admin_key,
                    dir,
                    _server: server,
                };
            }
        }
        panic!("the hoist server did not start");
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

    pub fn admin_key_text(&self) -> String {
        std::fs::read_to_string(&self.admin_key)
            .expect("admin key")
            .trim()
            .to_string()
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
