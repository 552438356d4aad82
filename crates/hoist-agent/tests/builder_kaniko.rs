//! The in-cluster builders on the real test cluster: the build context goes to moto's
//! S3, the executor Job runs the stand-in executor image (`HOIST_TEST_KANIKO_IMAGE`,
//! built by `scripts/test-env.sh`: kaniko's command line, a real buildah build) which
//! fetches the context with the mounted credentials and pushes to the htpasswd registry
//! with the per-build Secret; then the registry has the image. Also: a cache hit starts
//! no Job, a failing step is named, and each build leaves nothing in the namespace nor
//! in the store.
//!
//! The stand-in needs `hostNetwork` (to reach the host's loopback services through the
//! cluster namespace's forwards) and `SYS_ADMIN` (buildah's chroot isolation): the
//! test's `kaniko-config` asks for both and its agent config allows them.

#![cfg(feature = "kubernetes")]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hoist_agent::builders::job::{JobEngine, JobEngineParts};
use hoist_agent::builders::{BuildSettings, Builder, DirArtifacts, Pipeline, stores};
use hoist_agent::config::{ConfigOverrides, load_str};
use hoist_agent::environments::{Ambient, from_config_with};
use hoist_agent::logs::LogSink;
use hoist_agent::registries;
use hoist_agent::runners::kubernetes::Cluster;
use hoist_context::{PackOptions, pack_dir};
use hoist_core::api::{JobSource, Run};
use hoist_testkit::kubectl::TestNamespace;
use hoist_testkit::{env, require_k8s, unique};
use serde_json::json;

fn run_for(source: JobSource) -> Run {
    serde_json::from_value(json!({
        "id": unique("kb"), "entity": "alice", "queue": "q", "project": "p", "name": "n",
        "image": null, "job": {"name": "train", "version": "v0"}, "job_source": source,
        "entry_point": null, "args": [], "env": {}, "config": {}, "resource_args": {},
        "template_values": {}, "priority": "medium", "resource": "kubernetes",
        "resource_config": {}, "state": "claimed", "state_reason": "",
        "stop_requested": false, "created_by": "alice",
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
        "started_at": null, "ended_at": null, "agent": null, "attempts": 1,
        "exit_code": null, "failure": null
    }))
    .unwrap()
}

/// A code job with `files`, stored in `store` as an artifact.
fn code_job(store: &Path, files: &[(&str, &str)]) -> JobSource {
    let src = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(src.path().join(name), text).unwrap();
    }
    let p = pack_dir(src.path(), &PackOptions::default()).unwrap();
    let hex = p.digest.strip_prefix("sha256:").unwrap().to_string();
    std::fs::copy(&p.path, store.join(&hex)).unwrap();
    JobSource::Code {
        artifact: p.digest.clone(),
        size: p.compressed,
        entry_point: vec!["sh".into(), "-c".into(), "cat /hello.txt".into()],
        dockerfile: Some("Dockerfile".into()),
    }
}

struct Setup {
    ns: TestNamespace,
    pipeline: Pipeline,
    store: Arc<dyn stores::ContextStore>,
    _dirs: Vec<tempfile::TempDir>,
    artifacts: std::path::PathBuf,
}

async fn setup() -> Setup {
    let moto = env("HOIST_TEST_MOTO_URL");
    let registry_host = env("HOIST_TEST_AUTH_REGISTRY");
    let user = env("HOIST_TEST_AUTH_REGISTRY_USER");
    let password = std::fs::read_to_string(env("HOIST_TEST_AUTH_REGISTRY_PASSWORD_FILE"))
        .unwrap()
        .trim()
        .to_string();
    let executor = env("HOIST_TEST_KANIKO_IMAGE");
    let ns = TestNamespace::create("kaniko");
    let bucket = unique("ctx");
    // The bucket, in moto (which takes any signature).
    let r = reqwest::Client::new()
        .put(format!("{moto}/{bucket}"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{r:?}");
    // The cloud credentials of the executor, as `secret-name`/`secret-key`.
    let creds = "[default]\naws_access_key_id = AKIAHOISTTEST0000001\naws_secret_access_key = hoist-test-secret-key-value\n";
    ns.kubectl.ok_with_input(
        &[
            "-n",
            &ns.name,
            "create",
            "secret",
            "generic",
            "aws-creds",
            "--from-file=credentials=/dev/stdin",
        ],
        creds,
    );
    let docker_dir = tempfile::tempdir().unwrap();
    {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        std::fs::write(
            docker_dir.path().join("config.json"),
            json!({"auths": {registry_host.as_str(): {"auth": auth}}}).to_string(),
        )
        .unwrap();
    }
    let yaml = format!(
        r#"
environment: {{type: aws, region: us-east-1}}
registry:
  type: oci
  uri: {registry_host}/hoist-test/{repo}
  credentials-file: {creds_file}
builder:
  type: kaniko
  build-context-store: s3://{bucket}/contexts
  secret-name: aws-creds
  secret-key: credentials
  kaniko-image: {executor}
  kaniko-config:
    spec:
      template:
        spec:
          hostNetwork: true
          containers:
          - securityContext: {{capabilities: {{add: [SYS_ADMIN]}}}}
            env:
            - {{name: S3_ENDPOINT, value: "{moto}"}}
            - {{name: S3_FORCE_PATH_STYLE, value: "true"}}
            - {{name: AWS_REGION, value: us-east-1}}
kubernetes:
  kubeconfig: {kubeconfig}
  namespace: {ns}
  allow-host-network: true
  allow-cap-add: [SYS_ADMIN]
"#,
        repo = unique("app"),
        creds_file = docker_dir.path().join("config.json").display(),
        kubeconfig = env("HOIST_TEST_KUBECONFIG"),
        ns = ns.name,
    );
    let cfg = load_str(
        &yaml,
        "launch-config.yaml",
        &|_| None,
        &ConfigOverrides::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .config;
    let hoist_agent::config::BuilderKind::Kaniko(settings) = &cfg.builder.kind else {
        panic!("not kaniko: {:?}", cfg.builder.kind)
    };
    let ambient = Ambient::new(
        [
            ("AWS_ACCESS_KEY_ID", "AKIAHOISTTEST0000001".to_string()),
            (
                "AWS_SECRET_ACCESS_KEY",
                "hoist-test-secret-key-value".to_string(),
            ),
            ("AWS_ENDPOINT_URL", moto.clone()),
        ],
        None,
    );
    let environment = from_config_with(cfg.environment.as_ref().unwrap(), &ambient)
        .await
        .unwrap();
    let store =
        stores::from_config_with(&settings.build_context_store, Some(&environment), &ambient)
            .unwrap();
    let registry = registries::from_config(&cfg.registry, Some(&environment), None)
        .await
        .unwrap();
    let cluster = Cluster::connect(&cfg.kubernetes).await.unwrap();
    let engine = JobEngine::new(JobEngineParts {
        settings: (**settings).clone(),
        agent: "kaniko-test-agent".into(),
        client: cluster.client.clone(),
        namespace: ns.name.clone(),
        registry: registry.clone(),
        store: store.clone(),
        kubernetes: cfg.kubernetes.clone(),
        secure_mode: false,
        cache: true,
        platform: None,
    });
    let artifacts = tempfile::tempdir().unwrap();
    let pipeline = Pipeline::new(
        Arc::new(engine),
        registry,
        Arc::new(DirArtifacts {
            dir: artifacts.path().to_path_buf(),
        }),
        BuildSettings::from_config(&cfg.builder),
    );
    Setup {
        ns,
        pipeline,
        store,
        artifacts: artifacts.path().to_path_buf(),
        _dirs: vec![docker_dir, artifacts],
    }
}

fn lines(logs: &LogSink) -> Vec<String> {
    logs.snapshot().into_iter().map(|l| l.text).collect()
}

/// Nothing of the agent's builds is left in the namespace but the test's own Secret.
fn assert_clean(s: &Setup) {
    s.ns.kubectl
        .wait_none(&s.ns.name, "jobs,pods", "hoist.dev/build");
    let secrets = s.ns.kubectl.names(&s.ns.name, "secrets", "hoist.dev/build");
    assert!(secrets.is_empty(), "left: {secrets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kaniko_build_pushes_and_leaves_nothing_then_a_relaunch_is_a_cache_hit() {
    require_k8s!();
    let s = setup().await;
    let nonce = unique("n");
    let source = code_job(
        &s.artifacts,
        &[
            (
                "Dockerfile",
                "FROM 127.0.0.1:5000/hoist-test/busybox:latest\nCOPY hello.txt /hello.txt\nRUN cat /hello.txt\n",
            ),
            ("hello.txt", &format!("hello from {nonce}\n")),
        ],
    );
    let logs = LogSink::new();
    let built = tokio::time::timeout(
        Duration::from_secs(300),
        s.pipeline.build(&run_for(source.clone()), &logs),
    )
    .await
    .expect("the build ends")
    .unwrap_or_else(|e| panic!("{e}\n{:#?}", lines(&logs)));
    assert!(!built.cache_hit);
    let text = lines(&logs);
    assert!(
        text.iter()
            .any(|l| l.contains("uploading the build context")),
        "{text:#?}"
    );
    assert!(
        text.iter().any(|l| l.contains("in the Kubernetes Job")),
        "{text:#?}"
    );
    // The executor's own output reached the run's logs, the RUN step's output with it.
    assert!(
        text.iter()
            .any(|l| l.contains(&format!("hello from {nonce}"))),
        "{text:#?}"
    );
    assert_clean(&s);
    let key = format!("{}.tar.gz", built.tag);
    assert_eq!(
        s.store.size(&key).await.unwrap(),
        None,
        "the context is deleted"
    );

    // The same source again: the registry has the tag; no Job, no upload.
    let logs = LogSink::new();
    let again = s.pipeline.build(&run_for(source), &logs).await.unwrap();
    assert!(again.cache_hit);
    assert_eq!(again.image, built.image);
    let text = lines(&logs);
    assert!(
        !text.iter().any(|l| l.contains("Kubernetes Job")),
        "{text:#?}"
    );
    assert!(
        s.ns.kubectl
            .names(&s.ns.name, "jobs", "hoist.dev/build")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_is_named_with_the_executors_tail_and_nothing_is_left() {
    require_k8s!();
    let s = setup().await;
    let source = code_job(
        &s.artifacts,
        &[(
            "Dockerfile",
            &format!(
                "FROM 127.0.0.1:5000/hoist-test/busybox:latest\nRUN echo {} && exit 3\n",
                unique("boom")
            ),
        )],
    );
    let logs = LogSink::new();
    let e = tokio::time::timeout(
        Duration::from_secs(300),
        s.pipeline.build(&run_for(source), &logs),
    )
    .await
    .expect("the build ends")
    .unwrap_err();
    let step = e
        .step()
        .unwrap_or_else(|| panic!("no step: {e}\n{:#?}", lines(&logs)));
    assert!(step.starts_with("RUN echo boom"), "{step}");
    assert!(
        e.to_string()
            .contains("the image build failed at step `RUN echo"),
        "{e}"
    );
    assert!(!e.output_tail().is_empty());
    assert!(!e.is_transient());
    assert_clean(&s);
}
