//! `hoist bench queue` runs end to end with tiny sizes: the one-replica SQLite figures,
//! and, with a PostgreSQL server (`HOIST_TEST_DATABASE_URL`), two replicas over a
//! database it creates and drops, side by side with SQLite (a proof that it works, not
//! a timing assertion: the numbers are whatever this machine gives).

use std::process::Command;

const HOIST: &str = env!("CARGO_BIN_EXE_hoist");

#[test]
fn bench_queue_runs_with_tiny_sizes() {
    let pg = std::env::var("HOIST_TEST_DATABASE_URL").ok();
    if pg.is_none() && std::env::var("HOIST_TEST_REQUIRE_SERVICES").is_ok() {
        panic!("HOIST_TEST_DATABASE_URL is not set but services are required");
    }
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(HOIST);
    cmd.args([
        "bench",
        "queue",
        "--depth",
        "100",
        "--launches",
        "200",
        "--claims",
        "40",
        "--samples",
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
        "HOIST_BENCH_DATABASE_URL",
        "RUST_LOG",
    ] {
        cmd.env_remove(v);
    }
    // The URL goes in the environment, as a URL with a password should.
    if let Some(url) = &pg {
        cmd.env("HOIST_BENCH_DATABASE_URL", url);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "hoist bench queue failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for l in [
        "floor: GET /healthz p50",
        "launch throughput, 32 clients",
        "claim+complete throughput, 8 agents",
        "wake latency p50 (launch sent → claim answered)",
        "claim latency p50, queue depth 100",
    ] {
        assert!(stdout.contains(l), "no line {l:?}:\n{stdout}");
    }
    let Some(pg) = pg else {
        assert!(
            stdout.contains("two replicas on PostgreSQL: skipped"),
            "{stdout}"
        );
        eprintln!("skipping the PostgreSQL replicas: HOIST_TEST_DATABASE_URL is not set");
        return;
    };
    for l in [
        "launch throughput, 32 clients over 2 replicas",
        "claim+complete throughput, 8 agents over 2",
        "wake latency p50, claim and launch on A",
        "wake latency p50, claim on B, launch on A",
    ] {
        assert!(stdout.contains(l), "no line {l:?}:\n{stdout}");
    }
    // The side-by-side table: every row has both columns and a ratio.
    assert!(
        stdout.contains("1 replica SQLite") && stdout.contains("2 replicas PostgreSQL"),
        "{stdout}"
    );
    for row in [
        "launch throughput, 32 clients ",
        "claim+complete throughput, 8 agents ",
        "wake p50, claim on B, launch on A (*)",
        "wake p99, claim and launch on one replica",
        "floor: launch round trip p50, 1 client",
    ] {
        let l = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(row) && l.trim_end().ends_with('×'))
            .unwrap_or_else(|| panic!("no table row {row:?}:\n{stdout}"));
        assert!(
            l.matches(" ms").count() == 2 || l.matches("runs/s").count() == 2,
            "{l}"
        );
    }
    let verdict = stdout
        .lines()
        .find(|l| l.contains("cross-replica wake p50"))
        .unwrap_or_else(|| panic!("no verdict line:\n{stdout}"));
    assert!(
        verdict.ends_with("PASS") || verdict.ends_with("FAIL"),
        "{verdict}"
    );
    // The database it created is gone.
    let name = stdout
        .split("(database ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or_else(|| panic!("no database name:\n{stdout}"))
        .to_string();
    assert!(name.starts_with("hoist_bench_"), "{name}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let left: i64 = rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&pg).await.unwrap();
        sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_one(&mut c)
            .await
            .unwrap()
    });
    assert_eq!(left, 0, "database {name} was not dropped");
}
