//! `hoist launch` and `hoist run list|show|logs|stop|cancel` against a real server
//! (no agent: runs stay queued until cancelled).

mod cli_support;

use std::time::{Duration, Instant};

use cli_support::{World, field};

fn world_with_queue() -> World {
    let w = World::start();
    w.login_admin();
    w.run(&["queue", "create", "default", "--resource", "local-process"])
        .ok();
    w
}

#[test]
fn launch_list_show_cancel() {
    let w = world_with_queue();
    let r = w
        .run(&[
            "launch", "--queue", "default", "--name", "train-1", "--env", "EPOCHS=3", "--",
            "python3", "train.py",
        ])
        .ok();
    let id = r.stdout.trim().to_string();
    assert_eq!(r.stdout, format!("{id}\n"), "stdout must be the id alone");
    assert!(
        !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()),
        "{id:?}"
    );

    let list = w.run(&["run", "list"]).ok();
    let header = list.stdout.lines().next().unwrap();
    for col in ["ID", "STATE", "QUEUE", "PROJECT", "NAME", "AGE"] {
        assert!(header.contains(col), "{header}");
    }
    let row = list
        .stdout
        .lines()
        .find(|l| l.starts_with(&id))
        .expect("run listed");
    assert!(
        row.contains("queued") && row.contains("admin/default") && row.contains("train-1"),
        "{row}"
    );
    let j = w
        .run(&["run", "list", "--state", "queued", "-o", "json"])
        .ok()
        .json();
    assert_eq!(j["runs"][0]["id"], id.as_str());
    let qs = w.run(&["queue", "list"]).ok();
    let row: Vec<&str> = qs
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(row, ["admin/default", "local-process", "1", "no"]);

    let show = w.run(&["run", "show", &id]).ok();
    assert!(
        field(&show.stdout, "state").unwrap().starts_with("queued"),
        "{}",
        show.stdout
    );
    assert_eq!(
        field(&show.stdout, "entry point").as_deref(),
        Some("python3 train.py")
    );
    assert_eq!(field(&show.stdout, "env").as_deref(), Some("EPOCHS=3"));
    assert!(show.stdout.contains("timeline (UTC):"), "{}", show.stdout);
    let j = w.run(&["run", "show", &id, "-o", "json"]).ok().json();
    assert_eq!(j["entry_point"], serde_json::json!(["python3", "train.py"]));
    assert_eq!(j["timeline"][0]["to"], "queued");

    // No log yet; reading is fine.
    w.run(&["run", "logs", &id]).ok();

    // A queued run cannot be stopped: it has to be cancelled.
    w.run(&["run", "stop", &id, "--reason", "changed my mind"])
        .code(1)
        .stderr_has("cancel it instead");
    w.run(&["run", "cancel", &id]).ok().stdout_has("cancelled");
    let j = w.run(&["run", "show", &id, "-o", "json"]).ok().json();
    assert_eq!(j["state"], "cancelled");
    assert!(
        j["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["to"] == "cancelled")
    );
    w.run(&["run", "cancel", &id])
        .code(1)
        .stderr_has("already ended");
    // A finished log of a cancelled run can be followed: it ends at once.
    w.run(&["run", "logs", "--follow", &id]).ok();
    w.run(&["run", "show", "nosuchrun"])
        .code(1)
        .stderr_has("no run with id");
}

#[test]
fn launch_inputs() {
    let w = world_with_queue();
    let cfg = w.file("run.yaml", "lr: 0.1\nlayers: [1, 2]\n");
    let id = w
        .run(&[
            "launch",
            "-q",
            "admin/default",
            "--entry-point",
            "python3 -c 'print(\"hi there\")'",
            "--config",
            cfg.to_str().unwrap(),
            "--priority",
            "high",
            "--project",
            "proj",
            "--",
            "--flag",
        ])
        .ok()
        .stdout
        .trim()
        .to_string();
    let j = w.run(&["run", "show", &id, "-o", "json"]).ok().json();
    assert_eq!(
        j["entry_point"],
        serde_json::json!(["python3", "-c", "print(\"hi there\")"])
    );
    assert_eq!(j["args"], serde_json::json!(["--flag"]));
    assert_eq!(
        j["config"],
        serde_json::json!({"lr": 0.1, "layers": [1, 2]})
    );
    assert_eq!(j["priority"], "high");
    assert_eq!(j["project"], "proj");

    // JSON output of a launch is the run.
    let j = w
        .run(&[
            "launch",
            "-q",
            "default",
            "-o",
            "json",
            "--config",
            r#"{"a": 1}"#,
            "--",
            "true",
        ])
        .ok()
        .json();
    assert_eq!(j["state"], "queued");
    assert_eq!(j["config"]["a"], 1);

    // Invalid input: exit 2.
    w.run(&["launch", "-q", "default", "--entry-point", "echo 'oops"])
        .code(2)
        .stderr_has("unbalanced single quote");
    w.run(&[
        "launch",
        "-q",
        "default",
        "--config",
        "{\"a\": [}",
        "--",
        "true",
    ])
    .code(2)
    .stderr_has("--config: line 1");
    w.run(&["launch", "-q", "default"])
        .code(2)
        .stderr_has("needs a command");
    w.run(&["launch", "-q", "default", "--env", "1BAD=x", "--", "true"])
        .code(2);
    w.run(&[
        "launch",
        "-q",
        "default",
        "--set-var",
        "nope=1",
        "--",
        "true",
    ])
    .code(2);
    w.run(&[
        "launch", "-q", "default", "--image", "a", "--job", "b", "--", "true",
    ])
    .code(2);
    // A queue that does not exist: not found, exit 1.
    w.run(&["launch", "-q", "elsewhere", "--", "true"])
        .code(1)
        .stderr_has("no queue named \"elsewhere\"");
}

#[test]
fn launch_wait_reports_a_cancelled_run() {
    let w = world_with_queue();
    let child = w
        .cmd(&["launch", "-q", "default", "--wait", "--", "sleep", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        let j = w.run(&["run", "list", "-o", "json"]).ok().json();
        if let Some(id) = j["runs"][0]["id"].as_str() {
            break id.to_string();
        }
        assert!(Instant::now() < deadline, "the run never appeared");
        std::thread::sleep(Duration::from_millis(50));
    };
    // The waiting CLI has read the (empty) log and waits for more: from now on only
    // the cancel's wake-up tells it (its own re-check comes after 15 s, after the
    // deadline below).
    w.wait_gauge("hoist_log_followers", 1.0);
    w.run(&["run", "cancel", &id]).ok();
    let out = cli_support::exit_within(child, Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("launched run {id}")), "{stderr}");
    assert!(stderr.contains(&format!("run {id} cancelled")), "{stderr}");
}
