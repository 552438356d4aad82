//! `hoist launch --dry-run` against a real server: what the runner would submit for
//! local-process and docker queues (no Docker daemon needed: nothing is created),
//! refusals of the agent's policy (exit 2), bad input, and never a run enqueued.

mod cli_support;

use cli_support::World;
use serde_json::Value;

fn world() -> World {
    let w = World::start();
    w.login_admin();
    w
}

fn run_count(w: &World) -> usize {
    w.run(&["run", "list", "-o", "json"]).ok().json()["runs"]
        .as_array()
        .unwrap()
        .len()
}

/// The YAML documents the dry run printed on stdout, as JSON values.
fn documents(stdout: &str) -> Vec<Value> {
    stdout
        .split("\n---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_saphyr::from_str::<Value>(d).unwrap_or_else(|e| panic!("{e}:\n{d}")))
        .collect()
}

#[test]
fn dry_run_of_a_local_process_run_shows_the_command_and_enqueues_nothing() {
    let w = world();
    let qcfg = w.file(
        "lp.yaml",
        "env:\n  STAGE: '${project_name}-${run_id}'\n  PLAIN: fixed\nworking_dir: /srv/jobs\n",
    );
    w.run(&[
        "queue",
        "create",
        "lp",
        "--resource",
        "local-process",
        "--config",
        qcfg.to_str().unwrap(),
    ])
    .ok();
    let work = w.dir.path().join("runs");
    let agent_cfg = w.file(
        "launch-config.yaml",
        &format!(
            "name: box-agent\nlocal-process:\n  work-dir: {}\n",
            work.display()
        ),
    );
    let r = w
        .run(&[
            "launch",
            "-q",
            "lp",
            "--project",
            "vision",
            "--env",
            "EPOCHS=3",
            "--env",
            "WANDB_API_KEY=s3cr3t-key",
            "--dry-run",
            "--agent-config",
            agent_cfg.to_str().unwrap(),
            "--",
            "python3",
            "train.py",
            "--lr",
            "0.1",
        ])
        .ok()
        .stderr_has("checked by the server: ok")
        .stderr_has("checked by the runner: ok")
        .stderr_has("nothing was enqueued")
        .stderr_has("as agent box-agent would");
    let docs = documents(&r.stdout);
    assert_eq!(docs.len(), 1, "{}", r.stdout);
    let d = &docs[0];
    assert_eq!(
        d["command"],
        serde_json::json!(["python3", "train.py", "--lr", "0.1"])
    );
    assert_eq!(d["working_dir"], "/srv/jobs");
    let env = &d["env"];
    assert_eq!(env["EPOCHS"], "3");
    assert_eq!(env["PLAIN"], "fixed");
    assert_eq!(env["HOIST_PROJECT"], "vision");
    assert_eq!(env["HOIST_QUEUE"], "admin/lp");
    let run_id = env["HOIST_RUN_ID"].as_str().unwrap().to_string();
    // The queue owner's macros are filled as an agent would.
    assert_eq!(env["STAGE"], format!("vision-{run_id}"));
    // Secrets masked: the run's own, and the placeholder run token.
    assert_eq!(env["WANDB_API_KEY"], "********");
    assert_eq!(env["HOIST_RUN_TOKEN"], "********");
    for out in [&r.stdout, &r.stderr] {
        assert!(!out.contains("s3cr3t-key"), "{out}");
        assert!(!out.contains("dry-run-placeholder"), "{out}");
    }
    // Nothing enqueued, and the run id shown exists nowhere.
    assert_eq!(run_count(&w), 0);
    w.run(&["run", "show", &run_id])
        .code(1)
        .stderr_has("no run with id");
    // Nothing created on the agent's side either.
    assert!(!work.exists(), "the dry run created {}", work.display());

    // -o json: one document for scripts.
    let j = w
        .run(&[
            "launch",
            "-q",
            "lp",
            "--dry-run",
            "-o",
            "json",
            "--agent-config",
            agent_cfg.to_str().unwrap(),
            "--",
            "true",
        ])
        .ok()
        .json();
    assert_eq!(j["enqueued"], false);
    assert_eq!(j["runner_check"], "ok");
    assert!(j["backend_check"].is_null(), "{j}");
    assert_eq!(j["objects"][0]["command"], serde_json::json!(["true"]));
    assert_eq!(j["run"]["state_reason"], "dry run: nothing was enqueued");
    let id = j["run"]["id"].as_str().unwrap();
    // Without a working_dir, the run's own directory under the agent's work-dir.
    let lp2 = w.file("lp2.yaml", "{}\n");
    w.run(&["queue", "update", "lp", "--config", lp2.to_str().unwrap()])
        .ok();
    let j = w
        .run(&[
            "launch",
            "-q",
            "lp",
            "--dry-run",
            "-o",
            "json",
            "--agent-config",
            agent_cfg.to_str().unwrap(),
            "--",
            "true",
        ])
        .ok()
        .json();
    let id2 = j["run"]["id"].as_str().unwrap();
    assert_ne!(id, id2);
    assert_eq!(
        j["objects"][0]["working_dir"],
        work.join(id2).display().to_string()
    );
    assert_eq!(run_count(&w), 0);
}

#[test]
fn dry_run_of_a_docker_run_shows_the_container_config() {
    let w = world();
    let qcfg = w.file(
        "dq.yaml",
        "network: none\nmemory: 1g\nenv:\n  - A=1\n  - DB_URL=postgres://app:pw-in-config@db/app\nlabels:\n  team: ${entity_name}\n",
    );
    w.run(&[
        "queue",
        "create",
        "dq",
        "--resource",
        "docker",
        "--config",
        qcfg.to_str().unwrap(),
    ])
    .ok();
    let agent_cfg = w.file("launch-config.yaml", "name: dock\n");
    let r = w
        .run(&[
            "launch",
            "-q",
            "dq",
            "--image",
            "busybox:1",
            "--env",
            "HF_TOKEN=hf_abcdefghijklmnopqrstuvwxyz0123",
            "--dry-run",
            "--agent-config",
            agent_cfg.to_str().unwrap(),
            "--",
            "echo",
            "hi",
        ])
        .ok()
        .stderr_has("checked by the runner: ok")
        .stderr_has("nothing was enqueued");
    let docs = documents(&r.stdout);
    assert_eq!(docs.len(), 1, "{}", r.stdout);
    let d = &docs[0];
    let body = &d["body"];
    assert_eq!(body["Image"], "busybox:1");
    assert_eq!(body["Cmd"], serde_json::json!(["echo", "hi"]));
    assert_eq!(body["HostConfig"]["NetworkMode"], "none");
    assert_eq!(body["HostConfig"]["Memory"], 1_073_741_824);
    assert_eq!(body["Labels"]["team"], "admin");
    let run_id = body["Labels"]["hoist.run-id"].as_str().unwrap();
    assert_eq!(d["name"], format!("hoist-{run_id}"));
    let env: Vec<&str> = body["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for want in [
        "A=1",
        "DB_URL=********",
        "HF_TOKEN=********",
        "HOIST_RUN_TOKEN=********",
        "HOIST_QUEUE=admin/dq",
    ] {
        assert!(env.contains(&want), "{want} not in {env:?}");
    }
    for secret in ["pw-in-config", "hf_abcdefghij", "dry-run-placeholder"] {
        assert!(!r.stdout.contains(secret), "{secret} shown:\n{}", r.stdout);
    }
    assert_eq!(run_count(&w), 0);
}

/// A privileged queue config (stored by an admin) is refused by the agent's policy in
/// the dry run exactly as the agent would refuse the run: exit 2, the refusal naming the
/// agent-config key. An agent config that allows it passes; `secure_mode` refuses it
/// whatever the allow-list says.
#[test]
fn dry_run_reports_the_agents_refusal_of_a_privileged_config() {
    let w = world();
    let qcfg = w.file("pq.yaml", "privileged: true\nnetwork: none\n");
    w.run(&[
        "queue",
        "create",
        "pq",
        "--resource",
        "docker",
        "--allow-privileged",
        "--config",
        qcfg.to_str().unwrap(),
    ])
    .ok();
    let plain = w.file("plain.yaml", "name: plain\n");
    let r = w
        .run(&[
            "launch",
            "-q",
            "pq",
            "--image",
            "busybox:1",
            "--dry-run",
            "--agent-config",
            plain.to_str().unwrap(),
        ])
        .code(2)
        .stderr_has("checked by the server: ok")
        .stderr_has("refused by the runner: queue config asks for `privileged: true`")
        .stderr_has("docker.allow-privileged")
        .stderr_has("nothing was enqueued");
    assert!(r.stdout.trim().is_empty(), "{}", r.stdout);
    let j = w
        .run(&[
            "launch",
            "-q",
            "pq",
            "--image",
            "busybox:1",
            "--dry-run",
            "-o",
            "json",
            "--agent-config",
            plain.to_str().unwrap(),
        ])
        .code(2)
        .json();
    assert!(
        j["runner_check"]["refused"]
            .as_str()
            .unwrap()
            .contains("privileged"),
        "{j}"
    );
    let allowing = w.file("allowing.yaml", "docker:\n  allow-privileged: true\n");
    let r = w
        .run(&[
            "launch",
            "-q",
            "pq",
            "--image",
            "busybox:1",
            "--dry-run",
            "--agent-config",
            allowing.to_str().unwrap(),
        ])
        .ok()
        .stderr_has("checked by the runner: ok");
    assert_eq!(
        documents(&r.stdout)[0]["body"]["HostConfig"]["Privileged"],
        true
    );
    let secure = w.file(
        "secure.yaml",
        "secure_mode: true\ndocker:\n  allow-privileged: true\n",
    );
    w.run(&[
        "launch",
        "-q",
        "pq",
        "--image",
        "busybox:1",
        "--dry-run",
        "--agent-config",
        secure.to_str().unwrap(),
    ])
    .code(2)
    .stderr_has("secure_mode: true");
    assert_eq!(run_count(&w), 0);
}

/// A Kubernetes run when no cluster answers: the Job and its Secret as the runner
/// would submit them (masked), checked by the agent's policy, with a note that no API
/// server checked them; a setting the agent refuses is exit 2 with its path.
#[test]
fn dry_run_of_a_kubernetes_run_without_a_cluster() {
    let w = world();
    let qcfg = w.file(
        "kq.yaml",
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: train\n  namespace: ml\nspec:\n  template:\n    spec:\n      containers:\n        - name: main\n          image: ${image_uri}\n",
    );
    w.run(&[
        "queue",
        "create",
        "kq",
        "--resource",
        "kubernetes",
        "--config",
        qcfg.to_str().unwrap(),
    ])
    .ok();
    // A cluster that does not answer: nothing listens on port 9 here.
    let kubeconfig = w.file(
        "kubeconfig",
        "apiVersion: v1\nkind: Config\nclusters:\n- name: down\n  cluster:\n    server: https://127.0.0.1:9\n    insecure-skip-tls-verify: true\ncontexts:\n- name: down\n  context:\n    cluster: down\n    user: u\ncurrent-context: down\nusers:\n- name: u\n  user:\n    token: kube-token-never-shown\n",
    );
    let agent_cfg = w.file(
        "launch-config.yaml",
        &format!("kubernetes:\n  kubeconfig: {}\n", kubeconfig.display()),
    );
    let r = w
        .run(&[
            "launch",
            "-q",
            "kq",
            "--image",
            "busybox:1",
            "--env",
            "HF_TOKEN=hf_abcdefghijklmnopqrstuvwxyz0123",
            "--env",
            "EPOCHS=3",
            "--dry-run",
            "--agent-config",
            agent_cfg.to_str().unwrap(),
            "--",
            "echo",
            "hi",
        ])
        .ok()
        .stderr_has("no Kubernetes cluster answered")
        .stderr_has("checked by the runner: ok")
        .stderr_has("nothing was enqueued");
    assert!(!r.stderr.contains("checked by the backend"), "{}", r.stderr);
    let docs = documents(&r.stdout);
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Secret", "Job"], "{}", r.stdout);
    let job = &docs[1];
    let run_id = job["metadata"]["labels"]["hoist.dev/run-id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(job["metadata"]["namespace"], "ml");
    assert_eq!(
        job["metadata"]["name"].as_str().unwrap(),
        format!("train-{}", run_id.to_ascii_lowercase())
    );
    assert_eq!(job["spec"]["backoffLimit"], 0);
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(
        job["spec"]["template"]["metadata"]["labels"]["hoist.dev/run-id"],
        run_id.as_str()
    );
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "busybox:1");
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    let cmd: Vec<&str> = c["command"]
        .as_array()
        .into_iter()
        .chain(c["args"].as_array())
        .flatten()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(cmd, ["echo", "hi"], "{c:#}");
    let env = c["env"].as_array().unwrap();
    let by_name = |n: &str| {
        env.iter()
            .find(|e| e["name"] == n)
            .unwrap_or_else(|| panic!("no {n} in {env:?}"))
    };
    // Credentials by reference to the run's Secret, never as values.
    for secret in ["HOIST_RUN_TOKEN", "HF_TOKEN"] {
        let e = by_name(secret);
        assert!(e.get("value").is_none(), "{e}");
        assert_eq!(
            e["valueFrom"]["secretKeyRef"]["name"],
            docs[0]["metadata"]["name"]
        );
    }
    assert_eq!(by_name("EPOCHS")["value"], "3");
    for leaked in [
        "hf_abcdefghij",
        "dry-run-placeholder",
        "kube-token-never-shown",
    ] {
        assert!(
            !r.stdout.contains(leaked) && !r.stderr.contains(leaked),
            "{leaked} shown:\n{}\n{}",
            r.stdout,
            r.stderr
        );
    }
    // hostNetwork, let into a queue by an admin, is refused by this agent's policy.
    let hcfg = w.file(
        "hq.yaml",
        "apiVersion: batch/v1\nkind: Job\nspec:\n  template:\n    spec:\n      hostNetwork: true\n      containers:\n        - name: main\n",
    );
    w.run(&[
        "queue",
        "create",
        "hq",
        "--resource",
        "kubernetes",
        "--allow-privileged",
        "--config",
        hcfg.to_str().unwrap(),
    ])
    .ok();
    w.run(&[
        "launch",
        "-q",
        "hq",
        "--image",
        "busybox:1",
        "--dry-run",
        "--agent-config",
        agent_cfg.to_str().unwrap(),
    ])
    .code(2)
    .stderr_has("refused by the runner")
    .stderr_has("spec.template.spec.hostNetwork")
    .stderr_has("nothing was enqueued");
    assert_eq!(run_count(&w), 0);
}

#[test]
fn dry_run_bad_input() {
    let w = world();
    let qcfg = w.file("dq.yaml", "network: '{{net}}'\n");
    w.run(&[
        "queue",
        "create",
        "dq",
        "--resource",
        "docker",
        "--config",
        qcfg.to_str().unwrap(),
        "--template-var",
        "net:string=none",
        "--template-var",
        "gpus:int=1,min=0,max=8",
    ])
    .ok();
    // The server's refusals, as for a real launch (exit 2).
    w.run(&[
        "launch",
        "-q",
        "dq",
        "--image",
        "busybox:1",
        "--set-var",
        "gpus=9",
        "--dry-run",
    ])
    .code(2)
    .stderr_has("gpus");
    let args = w.file("args.yaml", "privileged: true\n");
    w.run(&[
        "launch",
        "-q",
        "dq",
        "--image",
        "busybox:1",
        "--resource-args",
        args.to_str().unwrap(),
        "--dry-run",
    ])
    .code(2)
    .stderr_has("privileged");
    w.run(&["launch", "-q", "nope", "--image", "busybox:1", "--dry-run"])
        .code(1)
        .stderr_has("no queue named");
    // A bad agent config is reported with its file, line and key, before anything is
    // sent.
    let bad = w.file(
        "bad-launch-config.yaml",
        "queues: [dq]\nkubernetes:\n  namespace: Not_A_Label\nmax_requeues: -1\n",
    );
    let r = w
        .run(&[
            "launch",
            "-q",
            "dq",
            "--image",
            "busybox:1",
            "--dry-run",
            "--agent-config",
            bad.to_str().unwrap(),
        ])
        .code(2)
        .stderr_has("the agent configuration is not valid")
        .stderr_has(
            "bad-launch-config.yaml:3:3: kubernetes.namespace: invalid namespace \"Not_A_Label\"",
        )
        .stderr_has("bad-launch-config.yaml:4:1: max_requeues: invalid value -1");
    assert!(!r.stderr.contains("checked by the server"), "{}", r.stderr);
    w.run(&[
        "launch",
        "-q",
        "dq",
        "--image",
        "busybox:1",
        "--dry-run",
        "--agent-config",
        w.dir.path().join("missing.yaml").to_str().unwrap(),
    ])
    .code(2)
    .stderr_has("cannot read the config file");
    // Usage: --dry-run does not wait; --agent-config needs --dry-run.
    w.run(&[
        "launch",
        "-q",
        "dq",
        "--image",
        "busybox:1",
        "--dry-run",
        "--wait",
    ])
    .code(2);
    w.run(&[
        "launch",
        "-q",
        "dq",
        "--image",
        "busybox:1",
        "--agent-config",
        bad.to_str().unwrap(),
    ])
    .code(2);
    assert_eq!(run_count(&w), 0);
}

/// A code job is built into an image before a container runner starts it: the dry run
/// shows a placeholder image naming the job and says so; a local-process runner runs
/// it in its checked-out source instead.
#[test]
fn dry_run_of_a_code_job() {
    let w = world();
    let src = w.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("main.py"), "print('hi')\n").unwrap();
    w.run(&[
        "job",
        "create",
        "code",
        "app",
        src.to_str().unwrap(),
        "--entry-point",
        "python3 main.py",
    ])
    .ok();
    let dq = w.file("dq.yaml", "network: none\n");
    w.run(&[
        "queue",
        "create",
        "dq",
        "--resource",
        "docker",
        "--config",
        dq.to_str().unwrap(),
    ])
    .ok();
    w.run(&["queue", "create", "lp", "--resource", "local-process"])
        .ok();
    let agent_cfg = w.file("launch-config.yaml", "builder: {type: docker}\n");
    let r = w
        .run(&[
            "launch",
            "-q",
            "dq",
            "--job",
            "app",
            "--dry-run",
            "--agent-config",
            agent_cfg.to_str().unwrap(),
        ])
        .ok()
        .stderr_has("note: the docker builder would first build (or find) the image of job app:v0");
    let d = &documents(&r.stdout)[0];
    assert_eq!(d["body"]["Image"], "hoist-dry-run/image-of-job-app-v0");
    assert_eq!(
        d["body"]["Entrypoint"],
        serde_json::json!(["python3", "main.py"])
    );
    let r = w
        .run(&[
            "launch",
            "-q",
            "lp",
            "--job",
            "app",
            "--dry-run",
            "--agent-config",
            agent_cfg.to_str().unwrap(),
        ])
        .ok();
    let d = &documents(&r.stdout)[0];
    assert_eq!(d["command"], serde_json::json!(["python3", "main.py"]));
    assert!(
        d["working_dir"]
            .as_str()
            .unwrap()
            .ends_with("/src/<the job's source>"),
        "{d}"
    );
    assert!(
        d["notes"][0]
            .as_str()
            .unwrap()
            .starts_with("the job's code source would be checked out into"),
        "{d}"
    );
    assert_eq!(run_count(&w), 0);
}
