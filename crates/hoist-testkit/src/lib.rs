//! What hoist's tests share across crates (a dev-dependency of the crates whose tests
//! use it, never of the binary):
//!
//! - skipping a test that lacks the services it needs ([`service_missing`],
//!   [`service_url`], [`require_k8s!`], [`require_docker!`]): `scripts/test-env.sh`
//!   starts them and writes `~/.cache/hoist/test-env.sh` (source it); without them a
//!   test is skipped with a note on stderr, unless `HOIST_TEST_REQUIRE_SERVICES` is set
//!   (then it fails);
//! - names no other test (or earlier run of one) uses ([`unique`]), the locally built
//!   test images ([`busybox_image`], [`python_image`]), a required variable ([`env()`]),
//!   a polling wait with a deadline ([`wait_until`], [`wait_until_async`]);
//! - [`kubectl`]: the test cluster through its own kubectl ([`Kubectl`]) and a
//!   namespace per test ([`TestNamespace`]), so tests run in parallel;
//! - [`proxy`]: a proxy in front of the test cluster's API server that holds chosen
//!   requests ([`HoldingProxy`]), for a test that must act while a request is in
//!   flight (a start given up midway);
//! - [`pg`]: a fresh PostgreSQL database per test ([`pg::PgDb`]), dropped after use;
//! - [`browser`] (feature `browser`): a headless Chromium driven over WebDriver
//!   ([`browser::Browser`], [`require_browser!`]), for the web UI's tests.
//!
//! Each crate's own test support stays in its `tests/` (the `hoist` CLI's world in
//! `crates/hoist/tests/cli_support`, the scripted API server in
//! `crates/hoist-agent/tests/kube_mock`).

use std::future::Future;
use std::time::{Duration, Instant};

#[cfg(feature = "browser")]
pub mod browser;
pub mod kubectl;
pub mod pg;
pub mod proxy;

pub use kubectl::{Kubectl, TestNamespace, show_output};
pub use proxy::{Hold, HoldingProxy};

/// How long the cluster and the services may take to do what they are expected to do
/// (a loaded 2-core machine).
pub const LONG: Duration = Duration::from_secs(180);

/// True when one of the `(variable, value)` pairs is not set so: the test returns
/// (skipped, with a note on stderr). Under `HOIST_TEST_REQUIRE_SERVICES` it panics
/// instead, naming what is missing.
pub fn service_missing(needed: &[(&str, &str)]) -> bool {
    let absent: Vec<String> = needed
        .iter()
        .filter(|(var, want)| std::env::var(var).ok().as_deref() != Some(want))
        .map(|(var, want)| format!("{var}={want}"))
        .collect();
    if absent.is_empty() {
        return false;
    }
    let why = format!(
        "not set: {} (run scripts/test-env.sh and source ~/.cache/hoist/test-env.sh)",
        absent.join(", ")
    );
    if std::env::var_os("HOIST_TEST_REQUIRE_SERVICES").is_some() {
        panic!("HOIST_TEST_REQUIRE_SERVICES is set, but {why}");
    }
    eprintln!("skipping: {why}");
    true
}

/// The test cluster (`HOIST_TEST_K8S=1`); see [`service_missing`].
pub fn k8s_available() -> bool {
    !service_missing(&[("HOIST_TEST_K8S", "1")])
}

/// The test Docker daemon (`HOIST_TEST_DOCKER=1`); see [`service_missing`].
pub fn docker_available() -> bool {
    !service_missing(&[("HOIST_TEST_DOCKER", "1")])
}

/// The URL of a test service in `var` (`HOIST_TEST_GCS_URL`, `HOIST_TEST_AZURITE_URL`,
/// `HOIST_TEST_MOTO_URL`…), or `None` (the test returns, skipped with a note on
/// stderr); under `HOIST_TEST_REQUIRE_SERVICES` a missing one panics instead.
pub fn service_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(u) if !u.trim().is_empty() => Some(u.trim().to_string()),
        _ => {
            let why = format!(
                "not set: {var} (run scripts/test-env.sh and source ~/.cache/hoist/test-env.sh)"
            );
            if std::env::var_os("HOIST_TEST_REQUIRE_SERVICES").is_some() {
                panic!("HOIST_TEST_REQUIRE_SERVICES is set, but {why}");
            }
            eprintln!("skipping: {why}");
            None
        }
    }
}

/// Returns from the test (skipped) without the test cluster; see [`service_missing`].
#[macro_export]
macro_rules! require_k8s {
    () => {
        if !$crate::k8s_available() {
            return;
        }
    };
}

/// Returns from the test (skipped) without the test Docker daemon; see
/// [`service_missing`].
#[macro_export]
macro_rules! require_docker {
    () => {
        if !$crate::docker_available() {
            return;
        }
    };
}

/// A variable of the test environment that must be set.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set (source test-env.sh)"))
}

/// The busybox image built locally by `scripts/test-env.sh` (never pulled).
pub fn busybox_image() -> String {
    std::env::var("HOIST_TEST_BUSYBOX_IMAGE")
        .unwrap_or_else(|_| "hoist-test/busybox:latest".to_string())
}

/// The Python image built locally by `scripts/test-env.sh` (never pulled).
pub fn python_image() -> String {
    std::env::var("HOIST_TEST_PYTHON_IMAGE")
        .unwrap_or_else(|_| "hoist-test/python:3-slim".to_string())
}

/// A name no other test (or earlier run of this one) uses: `PREFIX-PID-NANOS`, a DNS
/// label when `prefix` is one and short.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    format!("{prefix}-{}-{nanos:08x}", std::process::id())
}

/// Polls `f` until it holds; panics naming `what` after `within`.
pub fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// [`wait_until`] for async conditions.
pub async fn wait_until_async<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let t0 = Instant::now();
    while !f().await {
        assert!(t0.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
