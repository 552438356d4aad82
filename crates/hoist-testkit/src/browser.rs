//! [`Browser`] (feature `browser`): a headless Chromium for a test, driven over
//! WebDriver with [`fantoccini`], for the web UI's tests.
//!
//! Debian's `chromium` and its `chromedriver` (packages `chromium`, `chromium-driver`,
//! installed by `scripts/test-env.sh`, which exports `HOIST_TEST_CHROMIUM` and
//! `HOIST_TEST_CHROMEDRIVER`): nothing is downloaded, at build or test time. Each
//! [`Browser::start`] starts a chromedriver of its own on a free port of 127.0.0.1 (it
//! takes local connections only; plain http, no TLS) and opens one session in a fresh
//! profile; the test's pages are served on 127.0.0.1 too.
//!
//! Skipping: [`require_browser!`](crate::require_browser) returns from a test (with a note
//! on stderr) when the two variables are not set, and fails it instead under
//! `HOIST_TEST_REQUIRE_SERVICES`; `HOIST_TEST_SKIP_BROWSER=1` (test-env.sh run with it)
//! skips the browser tests even then.
//!
//! Screenshots ([`Browser::screenshot`]) go to [`output_dir`]:
//! `$CARGO_TARGET_DIR/test-output/<test name>/<name>.png`, or, without
//! `CARGO_TARGET_DIR`, `<temp dir>/hoist-test-output/<test name>/<name>.png`; they are
//! kept after the test (the path is printed) so that a person can look at them.
//!
//! Processes: chromedriver runs in a process group of its own under a small `sh`
//! watchdog; chromium is chromedriver's child, in that group. Dropping the [`Browser`]
//! (also while a test panics) kills the group, chromium by its PID, and any process
//! still naming the browser's temporary directory (chromium's crash handlers leave the
//! group), and waits until they are gone. Should the test process die without dropping
//! it (killed by a test runner's timeout), the watchdog sees its end of a pipe close
//! and kills the group.
//!
//! ```no_run
//! # async fn example(url: &str) -> Result<(), hoist_testkit::browser::BrowserError> {
//! use hoist_testkit::browser::Browser;
//! // In a #[tokio::test], after hoist_testkit::require_browser!();
//! let browser = Browser::start("jobs_page_lists_jobs").await?;
//! browser.goto(url).await?;
//! let row = browser.wait_for_text("table.jobs td", "train-1").await?;
//! row.click().await?; // an Element of fantoccini
//! browser.screenshot("jobs").await?; // <output dir>/jobs.png
//! browser.set_viewport_size(390, 844).await?;
//! browser.screenshot("jobs-phone").await?;
//! browser.close().await
//! # }
//! ```

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The variable naming chromium's binary (Debian's: `/usr/bin/chromium`).
pub const CHROMIUM_VAR: &str = "HOIST_TEST_CHROMIUM";
/// The variable naming chromedriver's binary (Debian's: `/usr/bin/chromedriver`).
pub const CHROMEDRIVER_VAR: &str = "HOIST_TEST_CHROMEDRIVER";
/// Set to `1` by `scripts/test-env.sh` run with it: the browser tests are skipped.
pub const SKIP_VAR: &str = "HOIST_TEST_SKIP_BROWSER";

/// How long [`Browser::wait_for_text`] waits (a loaded 2-core machine).
pub const WAIT: Duration = Duration::from_secs(60);
/// How long chromedriver may take to answer, and chromium to open the session.
const START: Duration = Duration::from_secs(90);
/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(100);
/// The window's size at start ([`Browser::set_window_size`] changes it).
pub const WINDOW: (u32, u32) = (1280, 900);

/// True when the browser tests can run: `HOIST_TEST_CHROMEDRIVER` and
/// `HOIST_TEST_CHROMIUM` name executables. Otherwise false (skipped, with a note on
/// stderr), or a panic under `HOIST_TEST_REQUIRE_SERVICES`, unless
/// `HOIST_TEST_SKIP_BROWSER=1` (a test environment made without the browser on purpose).
pub fn browser_available() -> bool {
    if std::env::var(SKIP_VAR).is_ok_and(|v| v.trim() == "1") {
        eprintln!("skipping: {SKIP_VAR}=1 (the test environment has no browser)");
        return false;
    }
    let problems: Vec<String> = [CHROMEDRIVER_VAR, CHROMIUM_VAR]
        .iter()
        .filter_map(|var| match std::env::var(var) {
            Ok(path) if !path.trim().is_empty() => {
                let ok = std::fs::metadata(path.trim()).is_ok_and(|m| m.is_file());
                (!ok).then(|| format!("{var}={path} (no such file)"))
            }
            _ => Some(format!("{var} not set")),
        })
        .collect();
    if problems.is_empty() {
        return true;
    }
    let why = format!(
        "{} (run scripts/test-env.sh and source ~/.cache/hoist/test-env.sh)",
        problems.join(", ")
    );
    if std::env::var_os("HOIST_TEST_REQUIRE_SERVICES").is_some() {
        panic!("HOIST_TEST_REQUIRE_SERVICES is set, but {why}");
    }
    eprintln!("skipping: {why}");
    false
}

/// Returns from the test (skipped) without the browser; see
/// [`browser::browser_available`](crate::browser::browser_available).
#[macro_export]
macro_rules! require_browser {
    () => {
        if !$crate::browser::browser_available() {
            return;
        }
    };
}

/// What went wrong starting or driving the browser, with its context.
#[derive(Debug)]
pub struct BrowserError(String);

impl fmt::Display for BrowserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BrowserError {}

impl From<CmdError> for BrowserError {
    fn from(e: CmdError) -> Self {
        BrowserError(format!("webdriver: {e}"))
    }
}

fn fail(what: impl fmt::Display, e: impl fmt::Display) -> BrowserError {
    BrowserError(format!("{what}: {e}"))
}

/// The directory of a test's screenshots (created): `$CARGO_TARGET_DIR/test-output/
/// <test name>` or, without `CARGO_TARGET_DIR`, `<temp dir>/hoist-test-output/<test
/// name>`. Kept after the test.
pub fn output_dir(test_name: &str) -> std::io::Result<PathBuf> {
    let base = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) if !t.is_empty() => PathBuf::from(t).join("test-output"),
        _ => std::env::temp_dir().join("hoist-test-output"),
    };
    let dir = base.join(file_name(test_name));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// `name` as one path component: characters other than `[A-Za-z0-9._-]` become `_`.
fn file_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.chars().all(|c| c == '.') {
        format!("_{s}")
    } else {
        s
    }
}

/// A headless Chromium with its chromedriver, for one test; see the module's doc.
/// Derefs to the fantoccini [`Client`] for everything the helpers here do not cover.
pub struct Browser {
    // (fields drop in this order: the session's client, the processes, their files)
    client: Client,
    driver: Driver,
    output_dir: PathBuf,
    scratch: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port of 127.0.0.1 (waiting until it answers) and
    /// opens a session: chromium headless, in a fresh profile, its window
    /// [`WINDOW`]-sized. `test_name` names the directory of the screenshots
    /// ([`output_dir`]).
    pub async fn start(test_name: &str) -> Result<Browser, BrowserError> {
        let chromedriver = var(CHROMEDRIVER_VAR)?;
        let chromium = var(CHROMIUM_VAR)?;
        let output_dir =
            output_dir(test_name).map_err(|e| fail("browser: creating the output dir", e))?;
        // The profile, and chromium's HOME, config and cache (its crash handlers' database
        // included): nothing of the machine's user is read or written.
        let scratch = tempfile::Builder::new()
            .prefix("hoist-browser-")
            .tempdir()
            .map_err(|e| fail("browser: creating a temporary directory", e))?;
        for d in ["profile", "home", "config", "cache"] {
            std::fs::create_dir(scratch.path().join(d))
                .map_err(|e| fail("browser: creating a temporary directory", e))?;
        }

        // A port found free can be taken before chromedriver binds it: then try another.
        let mut attempt = 1;
        let (driver, port) = loop {
            let port = free_port()?;
            let mut driver = Driver::spawn(&chromedriver, port, scratch.path())?;
            match driver.ready(port).await {
                Ok(()) => break (driver, port),
                Err(Ready::Exited(_)) if attempt < 3 => attempt += 1,
                Err(Ready::Exited(e) | Ready::TimedOut(e)) => return Err(e),
            }
        };

        let args = [
            "--headless".to_string(),
            "--no-sandbox".to_string(),
            "--disable-gpu".to_string(),
            "--disable-background-networking".to_string(),
            "--disable-component-update".to_string(),
            "--no-first-run".to_string(),
            format!(
                "--user-data-dir={}",
                scratch.path().join("profile").display()
            ),
            format!("--window-size={},{}", WINDOW.0, WINDOW.1),
        ];
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium, "args": args },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("an object")
        };
        let url = format!("http://127.0.0.1:{port}");
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(capabilities);
        let session = builder.connect(&url);
        let client = match tokio::time::timeout(START, session).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                let why = format!("{e}{}", driver.log_tail());
                return Err(fail(format!("browser: opening a session at {url}"), why));
            }
            Err(_) => {
                let why = format!("no answer within {START:?}{}", driver.log_tail());
                return Err(fail(format!("browser: opening a session at {url}"), why));
            }
        };
        let mut driver = driver;
        driver.chromium = client
            .capabilities()
            .and_then(|c| c.get("goog:processID"))
            .and_then(|p| p.as_u64())
            .and_then(|p| i32::try_from(p).ok())
            .map(Pid::from_raw);
        eprintln!(
            "browser: chromedriver on {url} (process group {}), chromium pid {}, screenshots in {}",
            driver.group,
            driver
                .chromium
                .map_or_else(|| "unknown".to_string(), |p| p.to_string()),
            output_dir.display()
        );
        Ok(Browser {
            client,
            driver,
            output_dir,
            scratch,
        })
    }

    /// The WebDriver session (also through `Deref`).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Where [`Browser::screenshot`] saves: see [`output_dir`].
    pub fn output_dir(&self) -> &Path {
        &self.output_dir
    }

    /// Opens `url` and waits until it has loaded (WebDriver's "normal" page load).
    pub async fn goto(&self, url: &str) -> Result<(), BrowserError> {
        self.client
            .goto(url)
            .await
            .map_err(|e| fail(format!("browser: opening {url}"), e))
    }

    /// Sets the window's outer size in CSS pixels ([`WINDOW`] at start). Headless
    /// chromium keeps room for a window frame: the page's viewport is smaller (1280x757
    /// in a 1280x900 window); [`Browser::set_viewport_size`] sizes the viewport itself.
    pub async fn set_window_size(&self, width: u32, height: u32) -> Result<(), BrowserError> {
        self.client
            .set_window_size(width, height)
            .await
            .map_err(|e| {
                fail(
                    format!("browser: setting the window to {width}x{height}"),
                    e,
                )
            })
    }

    /// Sizes the window so that the page's viewport (what a screenshot shows) is
    /// `width`x`height` CSS pixels: `(390, 844)` for a phone's.
    pub async fn set_viewport_size(&self, width: u32, height: u32) -> Result<(), BrowserError> {
        self.set_window_size(width, height).await?;
        let (w, h) = self.viewport_size().await?;
        if (w, h) == (width, height) {
            return Ok(());
        }
        // The frame's size is the difference: grow the window by it.
        let grow = |want: u32, got: u32| (2 * want).saturating_sub(got);
        self.set_window_size(grow(width, w), grow(height, h))
            .await?;
        match self.viewport_size().await? {
            got if got == (width, height) => Ok(()),
            (w, h) => Err(BrowserError(format!(
                "browser: the viewport is {w}x{h}, not {width}x{height}, after resizing the window"
            ))),
        }
    }

    /// The page's viewport (`innerWidth`, `innerHeight`) in CSS pixels.
    pub async fn viewport_size(&self) -> Result<(u32, u32), BrowserError> {
        let v = self
            .client
            .execute(
                "return [window.innerWidth, window.innerHeight];",
                Vec::new(),
            )
            .await
            .map_err(|e| fail("browser: reading the viewport's size", e))?;
        let dim = |i: usize| {
            v.get(i)
                .and_then(|x| x.as_u64())
                .and_then(|x| u32::try_from(x).ok())
        };
        match (dim(0), dim(1)) {
            (Some(w), Some(h)) => Ok((w, h)),
            _ => Err(BrowserError(format!(
                "browser: the viewport's size is not [width, height]: {v}"
            ))),
        }
    }

    /// The first element matching the CSS selector `css`, once there is one; an error
    /// after `within`.
    pub async fn wait_for(&self, css: &str, within: Duration) -> Result<Element, BrowserError> {
        match self
            .client
            .wait()
            .at_most(within)
            .every(POLL)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => Ok(e),
            Err(CmdError::WaitTimeout) => Err(BrowserError(format!(
                "browser: nothing matches {css:?} after {within:?} on {}",
                self.current_url().await
            ))),
            Err(e) => Err(fail(format!("browser: finding {css:?}"), e)),
        }
    }

    /// The first element matching `css` whose text contains `substring`, once there is
    /// one; an error after [`WAIT`], naming the texts seen last.
    pub async fn wait_for_text(&self, css: &str, substring: &str) -> Result<Element, BrowserError> {
        let t0 = Instant::now();
        let mut seen = Vec::new();
        loop {
            seen.clear();
            // (an element replaced between the two calls is stale: look again)
            let found = self.client.find_all(Locator::Css(css)).await;
            for element in found.iter().flatten() {
                match element.text().await {
                    Ok(text) if text.contains(substring) => return Ok(element.clone()),
                    Ok(text) => seen.push(text),
                    Err(e) if e.is_stale_element_reference() => {}
                    Err(e) => return Err(fail(format!("browser: reading {css:?}"), e)),
                }
            }
            if let Err(e) = found
                && !e.is_stale_element_reference()
            {
                return Err(fail(format!("browser: finding {css:?}"), e));
            }
            if t0.elapsed() >= WAIT {
                return Err(BrowserError(format!(
                    "browser: no {css:?} with text containing {substring:?} after {WAIT:?} on {} \
                     (texts of {css:?}: {seen:?})",
                    self.current_url().await
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Saves a PNG of the viewport as `<output dir>/<name>.png` (see [`output_dir`]),
    /// prints its path and returns it.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf, BrowserError> {
        let png = self
            .client
            .screenshot()
            .await
            .map_err(|e| fail(format!("browser: screenshot {name:?}"), e))?;
        let path = self.output_dir.join(format!("{}.png", file_name(name)));
        std::fs::write(&path, &png).map_err(|e| fail(format!("writing {}", path.display()), e))?;
        eprintln!("browser: screenshot {}", path.display());
        Ok(path)
    }

    /// The processes of this browser still running: the watchdog, chromedriver,
    /// chromium and its helpers (all gone once the browser is dropped).
    pub fn pids(&self) -> Vec<u32> {
        self.driver.processes()
    }

    /// Ends the session (chromium quits), then stops chromedriver. Dropping the browser
    /// kills them all without the first step.
    pub async fn close(self) -> Result<(), BrowserError> {
        let Browser {
            client,
            driver,
            output_dir: _,
            scratch,
        } = self;
        let closed = client.close().await;
        drop(driver);
        drop(scratch);
        closed.map_err(|e| fail("browser: closing the session", e))
    }

    async fn current_url(&self) -> String {
        match self.client.current_url().await {
            Ok(u) => u.to_string(),
            Err(e) => format!("(current URL unknown: {e})"),
        }
    }
}

impl Deref for Browser {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl fmt::Debug for Browser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Browser")
            .field("group", &self.driver.group)
            .field("chromium", &self.driver.chromium)
            .field("output_dir", &self.output_dir)
            .field("scratch", &self.scratch.path())
            .finish()
    }
}

fn var(name: &str) -> Result<String, BrowserError> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        _ => Err(BrowserError(format!(
            "browser: {name} is not set (source ~/.cache/hoist/test-env.sh; require_browser!() skips)"
        ))),
    }
}

fn free_port() -> Result<u16, BrowserError> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| fail("browser: finding a free port on 127.0.0.1", e))
}

/// Runs chromedriver (`"$@"`), kills the process group when it exits or when the pipe
/// on stdin closes (the test process is gone, however it ended). `kill -KILL 0` kills
/// the caller's group, this shell included.
const WATCHDOG: &str = r#"exec 3<&0 </dev/null
"$@" 3<&- &
driver=$!
{ read -r _ <&3; kill -KILL 0; } &
exec 3<&-
wait "$driver"
echo "hoist-testkit: chromedriver exited with status $?" >&2
kill -KILL 0
"#;

/// chromedriver under its watchdog, leader of a process group of its own.
struct Driver {
    /// The watchdog shell (its PID is the group's).
    child: Child,
    /// The write end of the watchdog's pipe: closing it kills the group.
    watchdog: Option<ChildStdin>,
    group: Pid,
    chromium: Option<Pid>,
    /// The browser's temporary directory: every chromium process names it.
    scratch: PathBuf,
    log: PathBuf,
}

enum Ready {
    /// chromedriver is gone (its port taken?).
    Exited(BrowserError),
    TimedOut(BrowserError),
}

impl Driver {
    fn spawn(chromedriver: &str, port: u16, scratch: &Path) -> Result<Driver, BrowserError> {
        use std::os::unix::process::CommandExt;
        let log = scratch.join("chromedriver.log");
        let out = File::create(&log).map_err(|e| fail(format!("creating {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| fail(format!("opening {}", log.display()), e))?;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("hoist-chromedriver-watchdog")
            .arg(chromedriver)
            .arg(format!("--port={port}"))
            // chromium inherits these: its files stay in the temporary directory.
            .env("HOME", scratch.join("home"))
            .env("XDG_CONFIG_HOME", scratch.join("config"))
            .env("XDG_CACHE_HOME", scratch.join("cache"))
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|e| fail(format!("browser: starting {chromedriver}"), e))?;
        let watchdog = child.stdin.take();
        let group = Pid::from_raw(i32::try_from(child.id()).expect("a PID is an i32"));
        Ok(Driver {
            child,
            watchdog,
            group,
            chromium: None,
            scratch: scratch.to_path_buf(),
            log,
        })
    }

    /// Waits until chromedriver answers `GET /status` with `"ready": true`.
    async fn ready(&mut self, port: u16) -> Result<(), Ready> {
        let t0 = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Ready::Exited(BrowserError(format!(
                    "browser: chromedriver on port {port} exited ({status}){}",
                    self.log_tail()
                ))));
            }
            if status_ready(port).await {
                return Ok(());
            }
            if t0.elapsed() >= START {
                return Err(Ready::TimedOut(BrowserError(format!(
                    "browser: chromedriver on 127.0.0.1:{port} not ready after {START:?}{}",
                    self.log_tail()
                ))));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The end of chromedriver's output, for an error message.
    fn log_tail(&self) -> String {
        let mut text = String::new();
        if File::open(&self.log)
            .and_then(|mut f| f.read_to_string(&mut text))
            .is_err()
        {
            return String::new();
        }
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n  | ");
        format!("; chromedriver's output:\n  | {tail}")
    }

    /// The live (not zombie) processes of the group, and those naming the scratch dir.
    fn processes(&self) -> Vec<u32> {
        let needle = self.scratch.as_os_str().as_encoded_bytes();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| {
                let Some((state, pgid)) = stat(pid) else {
                    return false;
                };
                if state == 'Z' {
                    return false;
                }
                pgid == self.group.as_raw()
                    || std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| c.windows(needle.len()).any(|w| w == needle))
            })
            .collect()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        drop(self.watchdog.take());
        if let Some(pid) = self.chromium
            && u32::try_from(pid.as_raw()).is_ok_and(|p| self.processes().contains(&p))
        {
            let _ = kill(pid, Signal::SIGKILL);
        }
        let _ = killpg(self.group, Signal::SIGKILL);
        // Reap the watchdog (chromedriver and chromium, orphaned, are init's to reap).
        let _ = self.child.wait();
        // Chromium's crash handlers leave the group: they go by their --database in
        // the scratch dir. Then wait until nothing is left (SIGKILL is not instant).
        let t0 = Instant::now();
        loop {
            let left = self.processes();
            if left.is_empty() {
                break;
            }
            for pid in left {
                let _ = kill(
                    Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX)),
                    Signal::SIGKILL,
                );
            }
            if t0.elapsed() > Duration::from_secs(10) {
                eprintln!(
                    "browser: processes {:?} still there 10 s after SIGKILL",
                    self.processes()
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A process's state and process group, from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(char, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (COMM) STATE PPID PGRP ...": COMM may hold spaces and parentheses.
    let mut rest = s.get(s.rfind(')')? + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let _ppid = rest.next()?;
    let pgrp = rest.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// chromedriver's `GET /status` says `"ready": true`. (It keeps the connection open
/// despite `Connection: close`: the answer is read until it says so, or for 2 s.)
async fn status_ready(port: u16) -> bool {
    let ask = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                return std::io::Result::Ok(false);
            }
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer).replace([' ', '\n', '\r'], "");
            if text.contains("\"ready\":true") {
                return Ok(true);
            }
        }
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), ask).await,
        Ok(Ok(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_one_component() {
        assert_eq!(file_name("ui::login_page"), "ui__login_page");
        assert_eq!(file_name("phone-390x844.v2"), "phone-390x844.v2");
        assert_eq!(file_name("../x"), ".._x");
        assert_eq!(file_name(".."), "_..");
        assert_eq!(file_name(""), "_");
    }

    #[test]
    fn stat_reads_this_process() {
        let (state, pgrp) = stat(std::process::id()).expect("our own stat");
        assert!(state == 'R' || state == 'S', "state {state}");
        assert_eq!(pgrp, nix::unistd::getpgrp().as_raw());
    }
}
