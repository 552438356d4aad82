//! `hoist queue create|list|show|update|delete`, config files and their errors.

mod cli_support;

use cli_support::{World, field};

#[test]
fn queue_lifecycle_with_a_yaml_config() {
    let w = World::start();
    w.login_admin();
    let cfg = w.file("docker.yaml", "env: [A=1]\nmemory: 1g\n");
    w.run(&[
        "queue",
        "create",
        "gpu",
        "--resource",
        "docker",
        "--config",
        cfg.to_str().unwrap(),
        "--template-var",
        "gpus:int=1,min=0,max=8",
        "--description",
        "the GPU box",
    ])
    .ok()
    .stdout_has("Created queue admin/gpu (docker)");

    let list = w.run(&["queue", "list"]).ok();
    let header = list.stdout.lines().next().unwrap();
    for col in ["ENTITY/NAME", "RESOURCE", "DEPTH", "PRIORITIZE"] {
        assert!(header.contains(col), "{header}");
    }
    assert!(list.stdout.contains("admin/gpu") && list.stdout.contains("docker"));

    let show = w.run(&["queue", "show", "gpu"]).ok();
    for needle in ["admin/gpu", "memory: 1g", "- A=1", "gpus", "the GPU box"] {
        assert!(
            show.stdout.contains(needle),
            "{needle:?} missing:\n{}",
            show.stdout
        );
    }
    assert_eq!(field(&show.stdout, "prioritize").as_deref(), Some("no"));
    assert_eq!(field(&show.stdout, "resource").as_deref(), Some("docker"));
    let j = w
        .run(&["queue", "show", "admin/gpu", "-o", "json"])
        .ok()
        .json();
    assert_eq!(
        j["config"],
        serde_json::json!({"env": ["A=1"], "memory": "1g"})
    );
    assert_eq!(j["template_variables"][0]["name"], "gpus");

    // A template value out of range: the server's message, each problem once.
    let r = w
        .run(&[
            "launch",
            "-q",
            "gpu",
            "--image",
            "img:1",
            "--set-var",
            "gpus=99",
        ])
        .code(2)
        .stderr_has("above its max");
    assert_eq!(r.stderr.matches("above its max").count(), 1, "{}", r.stderr);

    let cfg2 = w.file("docker2.json", r#"{"memory": "2g", "cpus": 2}"#);
    w.run(&[
        "queue",
        "update",
        "gpu",
        "--config",
        cfg2.to_str().unwrap(),
        "--prioritize",
        "true",
        "--clear-template-vars",
    ])
    .ok()
    .stdout_has("Updated queue admin/gpu");
    let j = w.run(&["queue", "show", "gpu", "-o", "json"]).ok().json();
    assert_eq!(j["config"]["memory"], "2g");
    assert_eq!(j["prioritize"], true);
    assert_eq!(j["template_variables"], serde_json::json!([]));
    w.run(&["queue", "list"]).ok().stdout_has("yes");

    w.run(&["queue", "delete", "gpu"])
        .ok()
        .stdout_has("Deleted queue admin/gpu");
    w.run(&["queue", "show", "gpu"])
        .code(1)
        .stderr_has("no queue named \"gpu\"");
    w.run(&["queue", "list", "-o", "json"]).ok();
}

#[test]
fn config_errors_name_the_file_and_line() {
    let w = World::start();
    w.login_admin();
    let bad = w.file("bad.yaml", "env:\n  - A=1\nmemory: [1g\ncpus: 2\n");
    let path = bad.to_str().unwrap().to_string();
    let r = w
        .run(&[
            "queue",
            "create",
            "q",
            "--resource",
            "docker",
            "--config",
            &path,
        ])
        .code(2)
        .stderr_has(&format!("error: {path}: line "));
    assert!(r.stderr.lines().count() <= 3, "{}", r.stderr);

    let missing = w.dir.path().join("nope.yaml");
    w.run(&[
        "queue",
        "create",
        "q",
        "--resource",
        "docker",
        "--config",
        missing.to_str().unwrap(),
    ])
    .code(2)
    .stderr_has("nope.yaml");

    let list = w.file("list.yaml", "- a\n- b\n");
    w.run(&[
        "queue",
        "create",
        "q",
        "--resource",
        "docker",
        "--config",
        list.to_str().unwrap(),
    ])
    .code(2)
    .stderr_has("expected a mapping");

    // Valid YAML, invalid for the resource: the server's problems, exit 2.
    let wrong = w.file("wrong.yaml", "memory: lots\ndetach: true\n");
    w.run(&[
        "queue",
        "create",
        "q",
        "--resource",
        "docker",
        "--config",
        wrong.to_str().unwrap(),
    ])
    .code(2)
    .stderr_has("memory")
    .stderr_has("detach");

    w.run(&["queue", "create", "q", "--resource", "mainframe"])
        .code(2)
        .stderr_has("unknown resource \"mainframe\"");
    w.run(&[
        "queue",
        "create",
        "q",
        "--resource",
        "docker",
        "--template-var",
        "gpus:integer-ish",
    ])
    .code(2)
    .stderr_has("--template-var");
    w.run(&["queue", "create", "bad name", "--resource", "docker"])
        .code(2)
        .stderr_has("invalid queue name");
    // Nothing was created along the way.
    assert_eq!(
        w.run(&["queue", "list", "-o", "json"]).ok().json(),
        serde_json::json!([])
    );
    // A duplicate is a conflict (exit 1).
    w.run(&["queue", "create", "q", "--resource", "local-process"])
        .ok();
    w.run(&["queue", "create", "q", "--resource", "local-process"])
        .code(1);
}

#[test]
fn config_from_stdin() {
    use std::io::Write;
    let w = World::start();
    w.login_admin();
    let mut child = w
        .cmd(&[
            "queue",
            "create",
            "lp",
            "--resource",
            "local-process",
            "--config",
            "-",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"env:\n  OMP_NUM_THREADS: \"4\"\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j = w.run(&["queue", "show", "lp", "-o", "json"]).ok().json();
    assert_eq!(j["config"]["env"]["OMP_NUM_THREADS"], "4");
}
