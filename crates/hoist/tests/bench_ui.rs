//! `hoist bench ui` runs end to end with tiny sizes: it seeds, signs in through the
//! form, requests every page and prints a line for each (a proof that it works, not a
//! timing assertion: the numbers are whatever this machine gives).

use std::process::Command;

const HOIST: &str = env!("CARGO_BIN_EXE_hoist");

#[test]
fn bench_ui_runs_with_tiny_sizes() {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(HOIST);
    cmd.args([
        "bench",
        "ui",
        "--runs",
        "500",
        "--queues",
        "5",
        "--samples",
        "3",
        "--log-mb",
        "1",
        "--logged-runs",
        "5",
    ])
    .env("HOME", home.path())
    .env("XDG_CONFIG_HOME", home.path().join("config"))
    .env("XDG_DATA_HOME", home.path().join("data"));
    for v in [
        "HOIST_HOST",
        "HOIST_API_KEY",
        "HOIST_LOG",
        "HOIST_BIND",
        "HOIST_DATA_DIR",
        "HOIST_DATABASE_URL",
        "RUST_LOG",
    ] {
        cmd.env_remove(v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "hoist bench ui failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("seeded 500 runs over 5 queues"), "{stdout}");
    assert!(stdout.contains("floor: GET /healthz"), "{stdout}");
    // The overview is on this build: measured, with the server's own time.
    let overview = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("/ "))
        .unwrap_or_else(|| panic!("no line for the overview:\n{stdout}"));
    assert!(
        overview.ends_with("PASS") || overview.ends_with("FAIL"),
        "{overview}"
    );
    assert!(
        overview.matches(" / ").count() >= 4,
        "client and server p50/p95/max: {overview}"
    );
    assert!(stdout.contains("/api/v1/stats/overview"), "{stdout}");
    assert!(
        stdout.contains("1 MB log, last 1000 lines (tail)"),
        "{stdout}"
    );
    // Every page of the list has a line: measured or skipped with a note.
    for p in ["/queues", "/runs", "/jobs", "/agents", "/launch?job="] {
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with(p)),
            "no line for {p}:\n{stdout}"
        );
    }
    assert!(stdout.contains("pages: "), "{stdout}");
}
