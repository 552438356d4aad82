//! The agent configuration: the W&B documentation's examples, bad configs with their
//! exact messages, precedence, the default agent name, and the resolved rendering.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hoist_agent::config::{
    AgentConfig, BuildContextStore, BuilderKind, BuilderType, ConfigErrors, ConfigOverrides,
    DEFAULT_BUILD_TIMEOUT, DEFAULT_BUILDAH_IMAGE, DEFAULT_KANIKO_IMAGE, DockerHost,
    EnvironmentConfig, Executor, KanikoSecret, KanikoSettings, KubernetesSettings, LoadedConfig,
    MaxJobs, RegistryConfig, default_agent_name, load, load_str,
};
use serde_json::json;

const FILE: &str = "launch-config.yaml";

fn no_env(_: &str) -> Option<String> {
    None
}

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

fn parse(yaml: &str) -> Result<LoadedConfig, ConfigErrors> {
    load_str(yaml, FILE, &no_env, &ConfigOverrides::default())
}

fn ok(yaml: &str) -> AgentConfig {
    match parse(yaml) {
        Ok(l) => l.config,
        Err(e) => panic!("config refused:\n{e}\n--- config:\n{yaml}"),
    }
}

/// The config is refused with exactly these messages, in this order.
fn check(yaml: &str, expected: &[&str]) {
    match parse(yaml) {
        Ok(l) => panic!("config accepted: {:?}\n--- config:\n{yaml}", l.config),
        Err(e) => {
            assert_eq!(
                e.messages(),
                expected,
                "\n--- config:\n{yaml}\n--- got:\n{e}\n"
            );
            // Display lists them one per line.
            assert_eq!(e.to_string(), expected.join("\n"));
        }
    }
}

fn warnings(yaml: &str) -> Vec<String> {
    parse(yaml)
        .unwrap_or_else(|e| panic!("refused: {e}"))
        .warnings
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/agent-configs")
}

fn fixture(name: &str) -> LoadedConfig {
    let path = fixtures_dir().join(name);
    load(Some(&path), &no_env, &ConfigOverrides::default())
        .unwrap_or_else(|e| panic!("{name} refused:\n{e}"))
}

fn limit(n: u32) -> MaxJobs {
    MaxJobs::Limit(NonZeroU32::new(n).unwrap())
}

// ---------------------------------------------------------------------------------
// The seeds' examples

#[test]
fn every_seed_example_is_accepted() {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    assert!(names.len() >= 30, "{names:?}");
    for name in &names {
        let text = std::fs::read_to_string(fixtures_dir().join(name)).unwrap();
        assert!(!text.contains("highlight-"), "{name}: page markup left in");
        assert!(!text.contains('\t'), "{name}: tab left in");
        let loaded = fixture(name);
        assert_eq!(
            loaded.path.as_deref(),
            Some(fixtures_dir().join(name).as_path())
        );
        // The only warning a seed example gets: W&B's kaniko examples without a
        // registry to push to.
        for w in &loaded.warnings {
            assert!(
                w.message
                    .contains("neither registry nor builder.destination is set"),
                "{name}: unexpected warning {w}"
            );
        }
    }
}

#[test]
fn seed_core_keys() {
    for name in ["000-01-core-keys.yaml", "000-03-required-keys.yaml"] {
        let c = fixture(name).config;
        assert_eq!(c.max_jobs, MaxJobs::Unlimited, "{name}");
        assert_eq!(c.queues, ["default"], "{name}");
        assert_eq!(c.builder.kind, BuilderKind::Docker);
        assert_eq!(c.registry, RegistryConfig::Local);
        assert_eq!(c.environment, None);
    }
    assert_eq!(
        fixture("000-01-core-keys.yaml").config.entity.as_deref(),
        Some("my-team")
    );
    assert_eq!(
        fixture("000-03-required-keys.yaml")
            .config
            .entity
            .as_deref(),
        Some("entity-name")
    );
}

#[test]
fn seed_builders() {
    assert_eq!(
        fixture("000-04-builder-docker.yaml").config.builder.kind,
        BuilderKind::Docker
    );
    assert_eq!(
        fixture("000-07-builder-noop.yaml").config.builder.kind,
        BuilderKind::Noop
    );
    assert_eq!(
        fixture("001-07-builder-noop.yaml")
            .config
            .builder
            .kind_type(),
        BuilderType::Noop
    );

    let c = fixture("000-05-builder-kaniko-s3.yaml").config;
    let BuilderKind::Kaniko(k) = &c.builder.kind else {
        panic!("{:?}", c.builder)
    };
    assert_eq!(
        k.build_context_store,
        BuildContextStore::S3 {
            bucket: "my-bucket".into(),
            prefix: "build-contexts".into()
        }
    );
    assert_eq!(
        k.build_context_store.uri(),
        "s3://my-bucket/build-contexts/"
    );
    assert_eq!(k.build_job_name, "wandb-image-build");
    assert_eq!(k.secret, None);
    assert_eq!(c.builder.base_image, "python:3.12-slim");

    let c = fixture("002-03-builder-kaniko-secret.yaml").config;
    let BuilderKind::Kaniko(k) = &c.builder.kind else {
        panic!()
    };
    let s = k.secret.as_ref().unwrap();
    assert_eq!(
        (s.name.as_str(), s.key.as_str()),
        ("kaniko-cloud-credentials", "credentials")
    );
    assert_eq!(k.build_job_name, "hoist-image-build");

    let c = fixture("002-04-builder-kaniko-config.yaml").config;
    let BuilderKind::Kaniko(k) = &c.builder.kind else {
        panic!()
    };
    let kc = k.kaniko_config.as_ref().unwrap();
    let container = &kc["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"][0], "--cache=false");
    assert_eq!(container["env"][0]["value"], "my-env-var-value");

    let c = fixture("001-10-kaniko-store-azure+environment-azure.yaml").config;
    let BuilderKind::Kaniko(k) = &c.builder.kind else {
        panic!()
    };
    assert_eq!(
        k.build_context_store,
        BuildContextStore::AzureBlob {
            account: "my-bucket".into(),
            container: "build-contexts".into(),
            prefix: String::new()
        }
    );
}

#[test]
fn seed_environments_and_registries() {
    assert_eq!(
        fixture("000-08-environment-aws.yaml").config.environment,
        Some(EnvironmentConfig::Aws {
            region: "us-east-1".into()
        })
    );
    assert_eq!(
        fixture("000-09-environment-gcp.yaml").config.environment,
        Some(EnvironmentConfig::Gcp {
            region: "us-central1".into(),
            project: Some("my-gcp-project".into())
        })
    );
    assert_eq!(
        fixture("000-10-environment-azure.yaml").config.environment,
        Some(EnvironmentConfig::Azure)
    );

    // The documentation's `ACCOUNT.ecr.REGION…` form, normalised to the real host.
    let RegistryConfig::Ecr(ecr) = fixture("002-05-environment-aws+registry-ecr.yaml")
        .config
        .registry
    else {
        panic!()
    };
    assert_eq!(ecr.region, "us-east-1");
    assert_eq!(ecr.account_id.as_deref(), Some("123456789012"));
    assert_eq!(
        ecr.uri().as_deref(),
        Some("123456789012.dkr.ecr.us-east-1.amazonaws.com/my-repository")
    );

    let c = fixture("001-01-structure-aws.yaml").config;
    let RegistryConfig::Ecr(ecr) = c.registry else {
        panic!()
    };
    assert_eq!(
        (ecr.repository.as_str(), ecr.account_id),
        ("my-repository", None)
    );
    assert_eq!(ecr.region, "us-east-1");

    let RegistryConfig::Gcr(gcr) = fixture("002-06-environment-gcp+registry-gcr.yaml")
        .config
        .registry
    else {
        panic!()
    };
    assert_eq!(
        (
            gcr.region.as_str(),
            gcr.project.as_deref(),
            gcr.repository.as_str(),
            gcr.image_name.as_str()
        ),
        (
            "us-central1",
            Some("my-gcp-project"),
            "my-repository",
            "my-image"
        )
    );

    let RegistryConfig::Acr(acr) = fixture("002-07-environment-azure+registry-acr.yaml")
        .config
        .registry
    else {
        panic!()
    };
    assert_eq!(acr.uri(), "my-registry.azurecr.io/my-repository");
}

#[test]
fn seed_vertex_and_kubernetes() {
    let c = fixture("003-04-steps-combined.yaml").config;
    assert!(matches!(c.registry, RegistryConfig::Gcr(_)));
    assert!(
        matches!(&c.builder.kind, BuilderKind::Kaniko(k) if k.build_context_store.uri() == "gs://my-bucket/build-contexts/")
    );

    // W&B's Kubernetes ConfigMap: gcp without project, image_name in snake case.
    let c = fixture("004-01-kubernetes-configmap.yaml").config;
    assert_eq!(c.base_url.as_deref(), Some("https://api.wandb.ai"));
    assert_eq!(c.max_jobs, MaxJobs::Unlimited);
    assert_eq!(
        c.environment,
        Some(EnvironmentConfig::Gcp {
            region: "us-central1".into(),
            project: None
        })
    );
    let RegistryConfig::Gcr(gcr) = &c.registry else {
        panic!()
    };
    assert_eq!(
        (gcr.repository.as_str(), gcr.image_name.as_str()),
        ("launch-repository", "launch-images")
    );
    assert_eq!(gcr.project, None);
    assert_eq!(gcr.uri(), None);
    assert!(matches!(c.builder.kind, BuilderKind::Kaniko(_)));
}

#[test]
fn hoist_keys() {
    let c = fixture("hoist-01-all-keys.yaml").config;
    assert_eq!(c.name.as_deref(), Some("gpu-box-agent"));
    assert_eq!(c.max_jobs, limit(4));
    assert_eq!(c.max_schedulers, MaxJobs::Unlimited);
    assert_eq!(c.queues, ["gpu"]);
    assert_eq!(c.base_url.as_deref(), Some("http://127.0.0.1:8080"));
    assert_eq!(c.verbosity, 2);
    let RegistryConfig::Oci(oci) = &c.registry else {
        panic!("{:?}", c.registry)
    };
    assert_eq!(oci.host, "127.0.0.1:5000");
    assert_eq!(oci.repository, "hoist/images");
    assert!(oci.plain_http);
    assert_eq!(
        oci.credentials_file.as_deref(),
        Some(Path::new("/etc/hoist/registry-auth.json"))
    );
    assert_eq!(c.builder.base_image, "python:3.11-slim");
    assert!(!c.builder.cache);
    assert_eq!(
        c.docker.host,
        Some(DockerHost::Unix("/run/docker.sock".into()))
    );
    assert_eq!(c.docker.allow_cap_add, ["SYS_PTRACE", "NET_ADMIN"]);
    assert_eq!(c.docker.allow_devices, [PathBuf::from("/dev/nvidia0")]);
    assert!(c.docker.allow_host_network && c.docker.allow_host_ipc);
    assert!(!c.docker.allow_privileged && !c.docker.allow_host_pid);
    assert_eq!(
        c.docker.volume_allow_list,
        [PathBuf::from("/data/datasets"), PathBuf::from("/scratch")]
    );
    assert_eq!(
        c.local_process.work_dir.as_deref(),
        Some(Path::new("/var/lib/hoist/runs"))
    );
    assert!(c.local_process.allow_env_passthrough);
    assert_eq!(c.env_allow_list, ["HF_TOKEN", "WANDB_API_KEY"]);
    assert_eq!(c.stopped_run_timeout, Duration::from_secs(90));
    assert_eq!(c.start_timeout, Duration::from_secs(600));
    assert_eq!(c.heartbeat_interval, Some(Duration::from_secs(15)));
}

#[test]
fn kubernetes_and_wandb_schema_keys() {
    let loaded = fixture("hoist-02-kubernetes-and-wandb-schema-keys.yaml");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = loaded.config;
    assert_eq!(c.project.as_deref(), Some("launch-agents"));
    assert!(c.secure_mode);
    assert!(
        c.docker.secure_mode,
        "secure_mode reaches the docker runner's policy"
    );
    assert_eq!(c.max_requeues, 5);
    assert_eq!(c.max_jobs, limit(8));
    assert_eq!(c.max_schedulers, limit(2));
    assert_eq!(c.verbosity, 1);
    assert_eq!(c.stopped_run_timeout, Duration::from_secs(120));
    // builder.destination is the registry, read as `registry: {uri: …}` would be.
    let RegistryConfig::Ecr(ecr) = &c.registry else {
        panic!("{:?}", c.registry)
    };
    assert_eq!(
        ecr.uri().as_deref(),
        Some("123456789012.dkr.ecr.us-east-1.amazonaws.com/launch-images")
    );
    assert_eq!(c.builder.platform.as_deref(), Some("linux/arm64"));
    let BuilderKind::Kaniko(k) = &c.builder.kind else {
        panic!("{:?}", c.builder)
    };
    assert_eq!(
        k.kaniko_image.as_deref(),
        Some("gcr.io/kaniko-project/executor:v1.23.2")
    );
    assert_eq!(
        c.kubernetes,
        KubernetesSettings {
            kubeconfig: Some("/etc/hoist/kubeconfig".into()),
            context: Some("training-cluster".into()),
            namespace: Some("ml-jobs".into()),
            allow_privileged: false,
            allow_privilege_escalation: true,
            allow_cap_add: vec!["SYS_PTRACE".into(), "NET_ADMIN".into()],
            allow_host_network: true,
            allow_host_pid: false,
            allow_host_ipc: true,
            host_path_allow_list: vec!["/data/datasets".into(), "/scratch".into()],
            require_non_root: true,
        }
    );
}

/// Every field of W&B's agent-config schema (`wandb/sdk/launch/agent/config.py`), spelt
/// as W&B spells it, is accepted with its meaning.
#[test]
fn every_wandb_schema_key_is_accepted() {
    let c = ok("\
queues: [q1, q2]
project: my-project
entity: my-team
max_jobs: 2
max_schedulers: 3
secure_mode: true
registry:
  type: ecr
  uri: 123456789012.dkr.ecr.us-east-1.amazonaws.com/my-repo
environment:
  type: aws
  region: us-east-1
builder:
  type: docker
  platform: linux/amd64
verbosity: 2
stopped_run_timeout: 30
");
    assert_eq!(c.queues, ["q1", "q2"]);
    assert_eq!(c.project.as_deref(), Some("my-project"));
    assert_eq!(c.entity.as_deref(), Some("my-team"));
    assert_eq!((c.max_jobs, c.max_schedulers), (limit(2), limit(3)));
    assert!(c.secure_mode);
    assert!(matches!(c.registry, RegistryConfig::Ecr(_)));
    assert!(matches!(c.environment, Some(EnvironmentConfig::Aws { .. })));
    assert_eq!(c.builder.kind, BuilderKind::Docker);
    assert_eq!(c.builder.platform.as_deref(), Some("linux/amd64"));
    assert_eq!(c.verbosity, 2);
    assert_eq!(c.stopped_run_timeout, Duration::from_secs(30));
    // The builder keys W&B's schema has besides (its kaniko builder's).
    let c = ok("\
environment: {type: gcp, region: us-central1}
builder:
  type: kaniko
  destination: us-central1-docker.pkg.dev/my-gcp-project/my-repo/my-image
  platform: linux/arm64
  build-context-store: gs://my-bucket/ctx
  build-job-name: wandb-launch-container-build
  secret-name: kaniko-secret
  secret-key: credentials
  kaniko-image: gcr.io/kaniko-project/executor:latest
");
    let RegistryConfig::Gcr(gcr) = &c.registry else {
        panic!("{:?}", c.registry)
    };
    assert_eq!(
        gcr.uri().as_deref(),
        Some("us-central1-docker.pkg.dev/my-gcp-project/my-repo/my-image")
    );
    let BuilderKind::Kaniko(k) = &c.builder.kind else {
        panic!("{:?}", c.builder)
    };
    assert_eq!(k.build_job_name, "wandb-launch-container-build");
    assert!(k.secret.is_some() && k.kaniko_image.is_some());
}

#[test]
fn kubernetes_keys_small_forms() {
    let env = env_of(&[("HOME", "/home/ml")]);
    let c = load_str(
        "kubernetes:\n  kubeconfig: ~/.kube/config\n  host_path_allow_list: [~/data, /mnt/b]\n  allow-cap-add: [all, cap_sys_admin]\n",
        FILE,
        &env,
        &ConfigOverrides::default(),
    )
    .unwrap()
    .config;
    assert_eq!(
        c.kubernetes.kubeconfig.as_deref(),
        Some(Path::new("/home/ml/.kube/config"))
    );
    assert_eq!(c.kubernetes.allow_cap_add, ["ALL", "SYS_ADMIN"]);
    assert_eq!(
        c.kubernetes.host_path_allow_list,
        [PathBuf::from("/home/ml/data"), PathBuf::from("/mnt/b")]
    );
    // Nothing else changes: the defaults allow nothing.
    assert_eq!(
        c.kubernetes,
        KubernetesSettings {
            kubeconfig: c.kubernetes.kubeconfig.clone(),
            allow_cap_add: c.kubernetes.allow_cap_add.clone(),
            host_path_allow_list: c.kubernetes.host_path_allow_list.clone(),
            ..KubernetesSettings::default()
        }
    );
    // max_requeues: 0 is allowed (a preempted run fails at once); secure_mode off by
    // default, and then the docker policy is not in secure mode either.
    let c = ok("max-requeues: 0\nsecure-mode: false\n");
    assert_eq!(c.max_requeues, 0);
    assert!(!c.secure_mode && !c.docker.secure_mode);
    assert_eq!(ok("max_requeues: '7'").max_requeues, 7);
    // A destination without a type is any OCI registry, for every builder.
    let c = ok("builder: {destination: 'http://127.0.0.1:5000/hoist/images'}");
    assert!(
        matches!(&c.registry, RegistryConfig::Oci(r) if r.host == "127.0.0.1:5000" && r.repository == "hoist/images" && r.plain_http),
        "{:?}",
        c.registry
    );
    assert_eq!(c.builder.kind, BuilderKind::Docker);
    assert_eq!(
        ok("builder: {platform: linux/arm/v7}")
            .builder
            .platform
            .as_deref(),
        Some("linux/arm/v7")
    );
}

#[test]
fn defaults() {
    let c = ok("");
    assert_eq!(c, AgentConfig::default());
    assert_eq!(c.queues, ["default"]);
    assert_eq!(c.max_jobs, limit(1));
    assert_eq!(c.stopped_run_timeout, Duration::from_secs(60));
    assert_eq!(c.start_timeout, Duration::from_secs(300));
    assert_eq!(c.heartbeat_interval, None);
    assert_eq!(c.builder.kind, BuilderKind::Docker);
    assert_eq!(c.max_requeues, 3);
    assert!(!c.secure_mode);
    assert_eq!(c.kubernetes, KubernetesSettings::default());
    assert_eq!(c.project, None);
    assert_eq!(c.builder.platform, None);
    assert_eq!(ok("# just a comment\n"), AgentConfig::default());
    // null = not set, as in W&B.
    assert_eq!(
        ok("entity:\nregistry: ~\nbuilder:\n"),
        AgentConfig::default()
    );
}

#[test]
fn small_forms() {
    assert_eq!(ok("max_jobs: '3'").max_jobs, limit(3));
    assert_eq!(ok("max-jobs: 7").max_jobs, limit(7));
    assert_eq!(ok("queues: [a, team/b, a]").queues, ["a", "team/b"]);
    assert_eq!(ok("entity: 1234").entity.as_deref(), Some("1234"));
    assert_eq!(
        ok("start_timeout: 1h30m").start_timeout,
        Duration::from_secs(5400)
    );
    assert_eq!(
        ok("start-timeout: '45'").start_timeout,
        Duration::from_secs(45)
    );
    assert_eq!(
        ok("stopped_run_timeout: 500ms").stopped_run_timeout,
        Duration::from_millis(500)
    );
    // A registry without type is inferred from its URI.
    let c = ok(
        "environment: {type: aws, region: eu-west-1}\nregistry:\n  uri: https://123456789012.dkr.ecr.eu-west-1.amazonaws.com/launch\n",
    );
    assert!(matches!(c.registry, RegistryConfig::Ecr(ref r) if r.repository == "launch"));
    let c = ok("registry: {type: oci, uri: registry.example.com/ml/images}");
    assert!(
        matches!(c.registry, RegistryConfig::Oci(ref r) if !r.plain_http && r.host == "registry.example.com")
    );
    let c = ok("docker: {host: 'tcp://127.0.0.1'}");
    assert_eq!(
        c.docker.host,
        Some(DockerHost::Tcp {
            host: "127.0.0.1".into(),
            port: 2375
        })
    );
    // Anchors and merge keys work as in any YAML.
    let c = ok("entity: &e team\nname: *e\n");
    assert_eq!(c.name.as_deref(), Some("team"));
}

#[test]
fn ignored_keys_are_warnings() {
    assert_eq!(
        warnings("environment:\n  type: azure\n  region: eastus\n"),
        ["launch-config.yaml:3:3: environment.region: not used by an azure environment; ignored"]
    );
    assert_eq!(
        warnings("builder:\n  type: docker\n  build-context-store: s3://my-bucket/x\n"),
        [
            "launch-config.yaml:3:3: builder.build-context-store: not used by the docker builder; ignored"
        ]
    );
    assert_eq!(
        warnings("builder:\n  secret-name: creds\n"),
        [
            "launch-config.yaml:2:3: builder.secret-name: not used by the docker builder (builder.type is not set; the default is docker); ignored"
        ]
    );
    assert_eq!(
        warnings("builder: {type: noop, platform: linux/amd64}\n"),
        ["launch-config.yaml:1:23: builder.platform: not used by the noop builder; ignored"]
    );
    assert_eq!(
        warnings("builder:\n  platform: linux/amd64\n"),
        [
            "launch-config.yaml:2:3: builder.platform: not used by the docker builder (builder.type is not set; the default is docker): it builds for the Docker daemon's own platform; ignored"
        ]
    );
    assert_eq!(
        warnings("queues: [a, b, a]\n"),
        ["launch-config.yaml:1:16: queues[2]: queue \"a\" is listed twice; ignored"]
    );
    assert_eq!(
        warnings("builder: {type: kaniko, build-context-store: 's3://my-bucket/'}"),
        [
            "launch-config.yaml:1:11: builder.type: the kaniko builder pushes the images it builds to a registry, but neither registry nor builder.destination is set; builds will fail"
        ]
    );
}

// ---------------------------------------------------------------------------------
// The in-cluster builders (kaniko, buildah): hoist's keys

/// The kaniko/buildah settings of `c`.
fn in_cluster(c: &AgentConfig) -> &KanikoSettings {
    match &c.builder.kind {
        BuilderKind::Kaniko(k) => k,
        other => panic!("not an in-cluster builder: {other:?}"),
    }
}

const KANIKO: &str = "builder:\n  type: kaniko\n  build-context-store: s3://my-bucket/x\n";
const BUILDAH: &str = "builder:\n  type: buildah\n  build-context-store: s3://my-bucket/x\n";

#[test]
fn seed_kaniko_configs_keep_their_meaning() {
    // Every seed block with a kaniko builder (placeholders filled): still kaniko, with
    // hoist's defaults for what W&B does not have.
    for name in [
        "000-05-builder-kaniko-s3.yaml",
        "000-06-builder-kaniko-secret.yaml",
        "001-05-builder-kaniko-s3.yaml",
        "001-06-builder-kaniko-secret.yaml",
        "001-08-kaniko-store-gcs+environment-gcp.yaml",
        "001-09-kaniko-store-s3+environment-aws.yaml",
        "001-10-kaniko-store-azure+environment-azure.yaml",
        "002-02-builder-kaniko-s3.yaml",
        "002-03-builder-kaniko-secret.yaml",
        "002-04-builder-kaniko-config.yaml",
        "003-03-builder-kaniko-gcs.yaml",
        "003-04-steps-combined.yaml",
        "004-01-kubernetes-configmap.yaml",
    ] {
        let c = fixture(name).config;
        assert_eq!(c.builder.kind_type(), BuilderType::Kaniko, "{name}");
        let k = in_cluster(&c);
        assert_eq!(k.executor, Executor::Kaniko, "{name}");
        assert_eq!(k.executor_image(), DEFAULT_KANIKO_IMAGE, "{name}");
        assert_eq!(
            (
                &k.kaniko_image,
                &k.buildah_image,
                k.build_timeout,
                k.keep_build_context,
                &k.namespace
            ),
            (&None, &None, DEFAULT_BUILD_TIMEOUT, false, &None),
            "{name}"
        );
    }
    assert_eq!(DEFAULT_BUILD_TIMEOUT, Duration::from_secs(1800));
    // 002's kaniko-config as written: W&B's `--flag=value` args, an env literal.
    let c = fixture("002-04-builder-kaniko-config.yaml").config;
    assert_eq!(
        in_cluster(&c).kaniko_config,
        Some(json!({"spec": {"template": {"spec": {"containers": [{
            "args": ["--cache=false"],
            "env": [{"name": "MY_ENV_VAR", "value": "my-env-var-value"}]
        }]}}}}))
    );
}

#[test]
fn in_cluster_builder_keys() {
    // Every key, snake_case (the fixture), with the buildah executor.
    let loaded = fixture("hoist-03-buildah-builder.yaml");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let c = loaded.config;
    assert_eq!(c.builder.kind_type(), BuilderType::Buildah);
    assert_eq!(
        *in_cluster(&c),
        KanikoSettings {
            executor: Executor::Buildah,
            build_context_store: BuildContextStore::Gcs {
                bucket: "my-bucket".into(),
                prefix: "build-contexts".into()
            },
            build_job_name: "ml-image-build".into(),
            secret: Some(KanikoSecret {
                name: "build-credentials".into(),
                key: "service-account.json".into()
            }),
            kaniko_config: Some(json!({
                "metadata": {"labels": {"team": "ml"}},
                "spec": {"template": {"spec": {
                    "nodeSelector": {"pool": "builds"},
                    "containers": [{
                        "args": ["layers=false", "--format=docker"],
                        "env": [{"name": "HTTPS_PROXY", "value": "http://proxy.internal:3128"}]
                    }]
                }}}
            })),
            kaniko_image: None,
            buildah_image: Some("registry.example.com/ml/hoist-executor:1.0".into()),
            build_timeout: Duration::from_secs(45 * 60),
            keep_build_context: true,
            namespace: Some("hoist-builds".into()),
        }
    );
    assert_eq!(
        in_cluster(&c).executor_image(),
        "registry.example.com/ml/hoist-executor:1.0"
    );

    // The kebab-case spellings, with kaniko.
    let c = ok(&format!(
        "{KANIKO}  kaniko-image: cgr.dev/chainguard/kaniko@sha256:0123abcd\n  build-timeout: 90s\n  keep-build-context: false\n  namespace: ml-builds\n  build-job-name: {}\n",
        "b".repeat(50)
    ));
    let k = in_cluster(&c);
    assert_eq!(k.executor, Executor::Kaniko);
    assert_eq!(
        k.executor_image(),
        "cgr.dev/chainguard/kaniko@sha256:0123abcd"
    );
    assert_eq!(k.build_timeout, Duration::from_secs(90));
    assert!(!k.keep_build_context);
    assert_eq!(k.namespace.as_deref(), Some("ml-builds"));
    assert_eq!(k.build_job_name, "b".repeat(50));

    // Defaults: the executor images, 30 minutes, the context deleted, the namespace
    // decided by the engine (kubernetes.namespace, …).
    let k = in_cluster(&ok(KANIKO)).clone();
    assert_eq!(k.executor_image(), DEFAULT_KANIKO_IMAGE);
    assert_eq!(DEFAULT_KANIKO_IMAGE, "cgr.dev/chainguard/kaniko:latest");
    assert_eq!(
        (
            k.build_timeout,
            k.keep_build_context,
            k.namespace,
            k.build_job_name.as_str()
        ),
        (DEFAULT_BUILD_TIMEOUT, false, None, "hoist-image-build")
    );
    let c = ok(BUILDAH);
    assert_eq!(c.builder.kind_type(), BuilderType::Buildah);
    assert_eq!(in_cluster(&c).executor, Executor::Buildah);
    assert_eq!(in_cluster(&c).executor_image(), DEFAULT_BUILDAH_IMAGE);

    // Durations as every other duration key takes them, up to a day.
    for (written, secs) in [
        ("45", 45),
        ("'600'", 600),
        ("1h30m", 5400),
        ("24h", 86_400),
        ("1d", 86_400),
        ("86400", 86_400),
        ("1s", 1),
    ] {
        let c = ok(&format!("{BUILDAH}  build-timeout: {written}\n"));
        assert_eq!(
            in_cluster(&c).build_timeout,
            Duration::from_secs(secs),
            "{written}"
        );
    }
}

#[test]
fn in_cluster_builder_bad_values() {
    let duration_form = r#"seconds as an integer, or a number with a unit such as "90s", "5m", "1h", "1h30m", "500ms""#;
    let cases: Vec<(String, Vec<String>)> = vec![
        (
            format!("{BUILDAH}  build-timeout: 0\n"),
            vec![format!("launch-config.yaml:4:3: builder.build-timeout: invalid duration 0: must be more than zero; expected {duration_form}")],
        ),
        (
            format!("{BUILDAH}  build-timeout: 25h\n"),
            vec![format!(r#"launch-config.yaml:4:3: builder.build-timeout: invalid build timeout "25h": longer than 24h, the most a build may take; expected {duration_form}, from 1s to 24h"#)],
        ),
        (
            format!("{KANIKO}  build_timeout: 86401\n"),
            vec![format!("launch-config.yaml:4:3: builder.build_timeout: invalid build timeout 86401: longer than 24h, the most a build may take; expected {duration_form}, from 1s to 24h")],
        ),
        (
            format!("{KANIKO}  build-timeout: 500ms\n"),
            vec![format!(r#"launch-config.yaml:4:3: builder.build-timeout: invalid build timeout "500ms": less than a second (a Job's deadline is in whole seconds); expected {duration_form}, from 1s to 24h"#)],
        ),
        (
            format!("{KANIKO}  build-timeout: soon\n  keep-build-context: yes\n"),
            vec![
                format!(r#"launch-config.yaml:4:3: builder.build-timeout: invalid duration "soon"; expected {duration_form}"#),
                r#"launch-config.yaml:5:3: builder.keep-build-context: found the string "yes"; expected true or false"#.into(),
            ],
        ),
        (
            format!("{BUILDAH}  namespace: ML_Builds\n  buildah-image: 'my executor'\n"),
            vec![
                r#"launch-config.yaml:4:3: builder.namespace: invalid namespace "ML_Builds"; expected a DNS label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"#.into(),
                r#"launch-config.yaml:5:3: builder.buildah-image: invalid image reference "my executor"; expected an image reference such as python:3.12-slim"#.into(),
            ],
        ),
        (
            format!("{KANIKO}  build-job-name: {}\n", "b".repeat(51)),
            vec![format!(
                r#"launch-config.yaml:4:3: builder.build-job-name: invalid Job name prefix "{}"; expected lowercase letters, digits and '-', starting and ending with a letter or digit, at most 50 characters (a build Job is named PREFIX-<12 hex digits>, at most 63)"#,
                "b".repeat(51)
            )],
        ),
        (
            format!("{KANIKO}  build-job-name: Image_Build\n"),
            vec![r#"launch-config.yaml:4:3: builder.build-job-name: invalid Job name prefix "Image_Build"; expected lowercase letters, digits and '-', starting and ending with a letter or digit, at most 50 characters (a build Job is named PREFIX-<12 hex digits>, at most 63)"#.into()],
        ),
        (
            "builder:\n  type: buildah\n".into(),
            vec![format!("launch-config.yaml:2:3: builder.build-context-store: required by the buildah builder; expected {STORE_FORM}")],
        ),
    ];
    for (yaml, expected) in &cases {
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        check(yaml, &expected);
    }
}

#[test]
fn kaniko_config_is_checked_with_field_paths() {
    let top = format!(
        "{KANIKO}  kaniko-config:
    kind: Pod
    specs: {{}}
    metadata:
      namespace: Builds
      labels:
        hoist.dev/run-id: abc
        tier: 3
    spec:
      template:
        metadata:
          annotations: [a]
"
    );
    check(
        &top,
        &[
            r#"launch-config.yaml:5:5: builder.kaniko-config.kind: found the string "Pod"; expected Job, or nothing: kaniko-config is merged into the build Job (apiVersion batch/v1, kind Job)"#,
            r#"launch-config.yaml:6:5: builder.kaniko-config: unknown key "specs"; did you mean "spec"?"#,
            r#"launch-config.yaml:8:7: builder.kaniko-config.metadata.namespace: invalid namespace "Builds"; expected a DNS label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"#,
            "launch-config.yaml:10:9: builder.kaniko-config.metadata.labels.hoist.dev/run-id: hoist.dev/ names are hoist's own (they mark the objects the agent cleans up); use another prefix",
            "launch-config.yaml:11:9: builder.kaniko-config.metadata.labels.tier: found the integer 3; expected a string (quote numbers and booleans in YAML)",
            "launch-config.yaml:15:11: builder.kaniko-config.spec.template.metadata.annotations: found a list; expected a mapping of names to strings",
        ],
    );
    let containers = format!(
        "{KANIKO}  kaniko_config:
    apiVersion: batch/v1
    spec:
      template:
        spec:
          containers:
          - name: 7
            args:
            - --cache=false
            - 3
            - ''
            env:
            - name: EPOCHS
              value: 3
            - value: x
            - name: MY-VAR
          - args: --cache=false
"
    );
    let path = "builder.kaniko_config.spec.template.spec.containers";
    let flag = "--flag=value (or flag=value, or a lone --flag)";
    let expected = [
        format!("launch-config.yaml:10:13: {path}[0].name: found the integer 7; expected a string"),
        format!(
            "launch-config.yaml:13:15: {path}[0].args[1]: found the integer 3; expected an executor flag as a string: {flag}"
        ),
        format!("launch-config.yaml:14:15: {path}[0].args[2]: empty flag; expected {flag}"),
        format!(
            "launch-config.yaml:17:15: {path}[0].env[0].value: found the integer 3; expected a string (quote numbers and booleans in YAML)"
        ),
        format!(
            "launch-config.yaml:18:15: {path}[0].env[1].name: missing; expected the variable's name"
        ),
        format!(
            r#"launch-config.yaml:19:15: {path}[0].env[2].name: invalid environment variable name "MY-VAR"; expected letters, digits and '_', not starting with a digit"#
        ),
        format!(
            r#"launch-config.yaml:20:13: {path}[1].args: found the string "--cache=false"; expected a list of executor flags, each a string: {flag}"#
        ),
    ];
    check(
        &containers,
        &expected.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    check(
        &format!(
            "{KANIKO}  kaniko-config:\n    spec:\n      template:\n        spec:\n          containers: {{name: kaniko}}\n"
        ),
        &[
            "launch-config.yaml:8:11: builder.kaniko-config.spec.template.spec.containers: found a mapping; expected a list of containers (the first one is the executor's)",
        ],
    );
    check(
        &format!("{KANIKO}  kaniko-config:\n    metadata:\n    spec: [a]\n"),
        &[
            "launch-config.yaml:5:5: builder.kaniko-config.metadata: found nothing (null); expected a mapping (the Job's metadata)",
            "launch-config.yaml:6:5: builder.kaniko-config.spec: found a list; expected a mapping (the Job's spec)",
        ],
    );
    check(
        &format!("{KANIKO}  kaniko-config: [--cache=false]\n"),
        &[
            "launch-config.yaml:4:3: builder.kaniko-config: found a list; expected a mapping (a partial Kubernetes Job spec)",
        ],
    );

    // Args in both of W&B's forms, and a lone flag.
    let c = ok(&format!(
        "{KANIKO}  kaniko-config:\n    spec:\n      template:\n        spec:\n          containers:\n          - args: [cache=false, '--snapshot-mode=full', --no-push]\n"
    ));
    assert_eq!(
        in_cluster(&c).kaniko_config.as_ref().unwrap()["spec"]["template"]["spec"]["containers"][0]
            ["args"],
        json!(["cache=false", "--snapshot-mode=full", "--no-push"])
    );
}

#[test]
fn kaniko_config_metadata_name_and_namespace() {
    // W&B reads the build Job's name and namespace from kaniko-config's metadata. hoist
    // names build Jobs itself (a warning says so) and takes the namespace as
    // builder.namespace; neither stays in kaniko-config.
    let yaml = format!(
        "environment: {{type: aws, region: us-east-1}}\nregistry: {{type: ecr, repository: r}}\n{KANIKO}  kaniko-config:\n    metadata:\n      name: my-build\n      namespace: wandb\n      labels: {{team: ml}}\n"
    );
    assert_eq!(
        warnings(&yaml),
        [
            "launch-config.yaml:8:7: builder.kaniko-config.metadata.name: not used: each build Job is named <builder.build-job-name>-<12 hex digits of the image tag> (builder.build-job-name sets the prefix); ignored"
        ]
    );
    let c = ok(&yaml);
    let k = in_cluster(&c);
    assert_eq!(k.namespace.as_deref(), Some("wandb"));
    assert_eq!(
        k.kaniko_config,
        Some(json!({"metadata": {"labels": {"team": "ml"}}}))
    );
    // Both, the same: fine; different: which one is meant?
    let both = |ns: &str| {
        format!("{KANIKO}  namespace: {ns}\n  kaniko-config:\n    metadata: {{namespace: wandb}}\n")
    };
    assert_eq!(
        in_cluster(&ok(&both("wandb"))).namespace.as_deref(),
        Some("wandb")
    );
    check(
        &both("builds"),
        &[
            r#"launch-config.yaml:6:16: builder.kaniko-config.metadata.namespace: namespace "wandb" differs from builder.namespace "builds" (line 4); give the build namespace once, as builder.namespace"#,
        ],
    );
}

#[test]
fn in_cluster_builder_keys_other_builders_ignore() {
    // The other executor's image: a warning that names the key the builder uses.
    let registry = "registry: {uri: 127.0.0.1:5000/hoist}\n";
    assert_eq!(
        warnings(&format!(
            "{registry}{BUILDAH}  kaniko-image: gcr.io/kaniko-project/executor:v1.23.2\n"
        )),
        [
            "launch-config.yaml:5:3: builder.kaniko-image: not used by the buildah builder, whose executor image is builder.buildah-image; ignored"
        ]
    );
    let c = ok(&format!(
        "{registry}{BUILDAH}  kaniko-image: gcr.io/kaniko-project/executor:v1.23.2\n"
    ));
    assert_eq!(in_cluster(&c).kaniko_image, None);
    assert_eq!(in_cluster(&c).executor_image(), DEFAULT_BUILDAH_IMAGE);
    assert_eq!(
        warnings(&format!(
            "{registry}{KANIKO}  buildah_image: hoist-executor:1\n"
        )),
        [
            "launch-config.yaml:5:3: builder.buildah_image: not used by the kaniko builder, whose executor image is builder.kaniko-image; ignored"
        ]
    );
    assert_eq!(
        in_cluster(&ok(&format!(
            "{registry}{KANIKO}  buildah_image: hoist-executor:1\n"
        )))
        .buildah_image,
        None
    );
    // The docker and noop builders use none of them.
    assert_eq!(
        warnings(
            "builder:\n  type: docker\n  build-timeout: 10m\n  keep-build-context: true\n  namespace: builds\n  buildah-image: hoist-executor:1\n  kaniko-image: cgr.dev/chainguard/kaniko:latest\n"
        ),
        [
            "launch-config.yaml:3:3: builder.build-timeout: not used by the docker builder; ignored",
            "launch-config.yaml:4:3: builder.keep-build-context: not used by the docker builder; ignored",
            "launch-config.yaml:5:3: builder.namespace: not used by the docker builder; ignored",
            "launch-config.yaml:6:3: builder.buildah-image: not used by the docker builder; ignored",
            "launch-config.yaml:7:3: builder.kaniko-image: not used by the docker builder; ignored",
        ]
    );
    assert_eq!(
        warnings("builder:\n  type: noop\n  namespace: builds\n"),
        ["launch-config.yaml:3:3: builder.namespace: not used by the noop builder; ignored"]
    );
    assert_eq!(
        warnings("builder:\n  build_timeout: 10m\n"),
        [
            "launch-config.yaml:2:3: builder.build_timeout: not used by the docker builder (builder.type is not set; the default is docker); ignored"
        ]
    );
    assert_eq!(
        warnings("builder: {type: buildah, build-context-store: 's3://my-bucket/'}"),
        [
            "launch-config.yaml:1:11: builder.type: the buildah builder pushes the images it builds to a registry, but neither registry nor builder.destination is set; builds will fail"
        ]
    );
}

#[test]
fn buildah_from_the_environment_or_a_flag() {
    // The file's in-cluster keys apply once HOIST_BUILDER or --builder picks buildah;
    // its kaniko-image is then the one ignored.
    let file = "registry: {uri: 127.0.0.1:5000/hoist}\nbuilder:\n  build-context-store: s3://my-bucket/ctx\n  kaniko-image: gcr.io/kaniko-project/executor:v1.23.2\n  build-timeout: 20m\n";
    let env = env_of(&[("HOIST_BUILDER", "buildah")]);
    let loaded = load_str(file, FILE, &env, &ConfigOverrides::default()).unwrap();
    assert_eq!(loaded.config.builder.kind_type(), BuilderType::Buildah);
    assert_eq!(
        in_cluster(&loaded.config).build_timeout,
        Duration::from_secs(1200)
    );
    let warned: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warned,
        [
            "launch-config.yaml:4:3: builder.kaniko-image: not used by the buildah builder, whose executor image is builder.buildah-image; ignored"
        ]
    );
    let flags = ConfigOverrides {
        builder: Some("buildah".into()),
        ..Default::default()
    };
    let c = load_str(file, FILE, &no_env, &flags).unwrap().config;
    assert_eq!(c.builder.kind_type(), BuilderType::Buildah);
    // Without a store, the variable is named.
    let err = load_str("entity: team\n", FILE, &env, &ConfigOverrides::default()).unwrap_err();
    assert_eq!(
        err.messages(),
        [format!(
            "environment variable HOIST_BUILDER: builder.build-context-store: required by the buildah builder; expected {STORE_FORM}"
        )]
    );
}

#[test]
fn rendering_shows_the_in_cluster_builder() {
    let text = ok(KANIKO).render_resolved();
    for want in [
        "builder:\n  # the build Jobs run the executor image cgr.dev/chainguard/kaniko:latest (the default; set builder.kaniko-image to change or pin it)\n  type: kaniko\n",
        "  build-job-name: hoist-image-build\n",
        "  build-timeout: 30m\n",
        "  keep-build-context: false\n",
    ] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
    assert!(!text.contains("namespace: "), "{text}");
    let text = fixture("hoist-03-buildah-builder.yaml")
        .config
        .render_resolved();
    for want in [
        "  # the build Jobs run the executor image registry.example.com/ml/hoist-executor:1.0 (builder.buildah-image)\n  type: buildah\n",
        "  buildah-image: registry.example.com/ml/hoist-executor:1.0\n",
        "  build-timeout: 45m\n",
        "  keep-build-context: true\n",
        "  namespace: hoist-builds\n",
    ] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
    // Docker: no note, no in-cluster keys.
    let text = ok("builder: {type: docker}").render_resolved();
    assert!(
        !text.contains("executor image") && !text.contains("build-timeout"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------
// Bad configs, with their exact messages

const STORE_FORM: &str = "s3://BUCKET/PREFIX (aws), gs://BUCKET/PREFIX (gcp) or https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX (azure)";

#[test]
fn bad_configs() {
    let store_required = format!(
        "launch-config.yaml:2:3: builder.build-context-store: required by the kaniko builder; expected {STORE_FORM}"
    );
    let cases: Vec<(&str, Vec<String>)> = vec![
        // Unknown keys, with a suggestion when one is close.
        (
            "entity: team\nmax_job: 4\n",
            vec![r#"launch-config.yaml:2:1: unknown key "max_job"; did you mean "max_jobs"?"#.into()],
        ),
        (
            "enviroment:\n  type: aws\n",
            vec![r#"launch-config.yaml:1:1: unknown key "enviroment"; did you mean "environment"?"#.into()],
        ),
        (
            "builder:\n  type: kaniko\n  build-context-stor: s3://my-bucket/x\n",
            vec![
                store_required.clone(),
                r#"launch-config.yaml:3:3: builder: unknown key "build-context-stor"; did you mean "build-context-store"?"#.into(),
            ],
        ),
        (
            "registry:\n  type: gcr\n  image_nme: x\n",
            vec![
                "launch-config.yaml:2:3: registry.type: a gcr registry needs a gcp environment (environment: {type: gcp, region: REGION, project: PROJECT}); none is configured".into(),
                "launch-config.yaml:2:3: registry.repository: required for a gcr registry without registry.uri; expected registry.uri (REGION-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE) or registry.repository and registry.image-name".into(),
                "launch-config.yaml:2:3: registry.image-name: required for a gcr registry without registry.uri; expected registry.uri (REGION-docker.pkg.dev/PROJECT/REPOSITORY/IMAGE) or registry.repository and registry.image-name".into(),
                r#"launch-config.yaml:3:3: registry: unknown key "image_nme"; did you mean "image_name"?"#.into(),
            ],
        ),
        (
            "colour: blue\n",
            vec![r#"launch-config.yaml:1:1: unknown key "colour"; expected one of entity, project, max_jobs, queues, base_url, environment, registry, builder, verbosity, max_schedulers, name, docker, kubernetes, secure_mode, max_requeues, local-process, env-allow-list, stopped_run_timeout, start_timeout, heartbeat_interval"#.into()],
        ),
        (
            "api_key: 0123456789abcdef\n",
            vec!["launch-config.yaml:1:1: api_key: credentials do not belong in launch-config.yaml; use `hoist login` (~/.config/hoist/credentials.yaml) or HOIST_API_KEY".into()],
        ),
        (
            "max_jobs: 2\nmax-jobs: 3\n",
            vec![r#"launch-config.yaml:2:1: max-jobs: the same key as "max_jobs" on line 1; give only one of them"#.into()],
        ),
        // Wrong types.
        (
            "queues:\n  team: default\n",
            vec!["launch-config.yaml:1:1: queues: found a mapping; expected a list of queue names".into()],
        ),
        (
            "entity: [a, b]\n",
            vec!["launch-config.yaml:1:1: entity: found a list; expected an entity name".into()],
        ),
        (
            "builder: docker\n",
            vec![r#"launch-config.yaml:1:1: builder: found the string "docker"; expected a mapping such as {type: docker}"#.into()],
        ),
        (
            "docker:\n  allow-privileged: yes\n",
            vec![r#"launch-config.yaml:2:3: docker.allow-privileged: found the string "yes"; expected true or false"#.into()],
        ),
        (
            "queues:\n  - default\n  - [nested]\n",
            vec!["launch-config.yaml:3:5: queues[1]: found a list; expected queue names".into()],
        ),
        (
            "- entity: team\n",
            vec!["launch-config.yaml:1:1: found a list; expected a mapping of agent settings (entity, max_jobs, queues, …)".into()],
        ),
        // Bad enums.
        (
            "builder:\n  type: podman\n",
            vec![r#"launch-config.yaml:2:3: builder.type: unknown builder "podman"; expected one of docker, kaniko, buildah, noop"#.into()],
        ),
        (
            // 001's structure example taken literally.
            "environment:\n  type: aws|gcp|azure\nregistry:\n  type: ecr|gcr|acr\nbuilder:\n  type: docker|kaniko|noop\n",
            vec![
                r#"launch-config.yaml:2:3: environment.type: unknown environment "aws|gcp|azure"; expected one of aws, gcp, azure"#.into(),
                r#"launch-config.yaml:4:3: registry.type: unknown registry type "ecr|gcr|acr"; expected one of ecr, gcr, acr, oci"#.into(),
                r#"launch-config.yaml:6:3: builder.type: unknown builder "docker|kaniko|noop"; expected one of docker, kaniko, buildah, noop"#.into(),
            ],
        ),
        // max_jobs.
        (
            "max_jobs: 0\n",
            vec!["launch-config.yaml:1:1: max_jobs: invalid value 0; expected a positive integer, or -1 for no limit".into()],
        ),
        (
            "max_jobs: -2\n",
            vec!["launch-config.yaml:1:1: max_jobs: invalid value -2; expected a positive integer, or -1 for no limit".into()],
        ),
        (
            "max_jobs: five\n",
            vec![r#"launch-config.yaml:1:1: max_jobs: found the string "five"; expected a positive integer, or -1 for no limit"#.into()],
        ),
        (
            "max_jobs: 2.5\n",
            vec!["launch-config.yaml:1:1: max_jobs: found the number 2.5; expected a positive integer, or -1 for no limit".into()],
        ),
        (
            "max_jobs: 99999999999\n",
            vec!["launch-config.yaml:1:1: max_jobs: 99999999999 is too large; expected a positive integer, or -1 for no limit".into()],
        ),
        // Durations.
        (
            "stopped_run_timeout: 5 minutes\nstart_timeout: 0\nheartbeat_interval: 1.5\n",
            vec![
                r#"launch-config.yaml:1:1: stopped_run_timeout: invalid duration "5 minutes"; expected seconds as an integer, or a number with a unit such as "90s", "5m", "1h", "1h30m", "500ms""#.into(),
                r#"launch-config.yaml:2:1: start_timeout: invalid duration 0: must be more than zero; expected seconds as an integer, or a number with a unit such as "90s", "5m", "1h", "1h30m", "500ms""#.into(),
                r#"launch-config.yaml:3:1: heartbeat_interval: found the number 1.5; expected seconds as an integer, or a number with a unit such as "90s", "5m", "1h", "1h30m", "500ms""#.into(),
            ],
        ),
        // Environments.
        (
            "environment:\n  type: aws\n",
            vec!["launch-config.yaml:2:3: environment.region: required for an aws environment; expected an AWS region such as us-east-1".into()],
        ),
        (
            "environment:\n  type: gcp\n  region: us-east-1\n",
            vec![r#"launch-config.yaml:3:3: environment.region: invalid region "us-east-1"; expected a GCP region such as us-central1"#.into()],
        ),
        (
            "environment:\n  region: us-east-1\n",
            vec!["launch-config.yaml:1:1: environment.type: missing; expected one of aws, gcp, azure".into()],
        ),
        // Registries and their environments.
        (
            "registry:\n  type: ecr\n  repository: my-repo\n",
            vec!["launch-config.yaml:2:3: registry.type: an ecr registry needs an aws environment (environment: {type: aws, region: REGION}); none is configured".into()],
        ),
        (
            "environment:\n  type: gcp\n  region: us-central1\nregistry:\n  type: ecr\n  repository: my-repo\n",
            vec!["launch-config.yaml:5:3: registry.type: an ecr registry needs an aws environment (environment: {type: aws, region: REGION}); environment.type is gcp".into()],
        ),
        (
            // Without a type, the URI says it is ECR; the rule is the same.
            "registry:\n  uri: 123456789012.dkr.ecr.us-east-1.amazonaws.com/my-repo\n",
            vec!["launch-config.yaml:2:3: registry.uri: an ecr registry needs an aws environment (environment: {type: aws, region: REGION}); none is configured".into()],
        ),
        (
            "environment: {type: aws, region: us-east-1}\nregistry:\n  type: ecr\n  uri: 123456789012.dkr.ecr.us-west-2.amazonaws.com/my-repo\n",
            vec![r#"launch-config.yaml:4:3: registry.uri: the URI's region "us-west-2" does not match environment.region "us-east-1""#.into()],
        ),
        (
            "environment: {type: aws, region: us-east-1}\nregistry:\n  type: ecr\n",
            vec!["launch-config.yaml:3:3: registry.repository: required for an ecr registry: give registry.uri (ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY) or registry.repository".into()],
        ),
        (
            "environment: {type: aws, region: us-east-1}\nregistry:\n  type: ecr\n  uri: 123456789012.dkr.ecr.us-east-1.amazonaws.com/a\n  repository: b\n",
            vec!["launch-config.yaml:5:3: registry.repository: give either registry.uri or registry.repository, not both".into()],
        ),
        (
            "environment: {type: azure}\nregistry:\n  type: acr\n  uri: my-registry.example.com/repo\n",
            vec![r#"launch-config.yaml:4:3: registry.uri: invalid Azure Container Registry URI "my-registry.example.com/repo"; expected https://REGISTRY.azurecr.io/REPOSITORY"#.into()],
        ),
        (
            "registry:\n  credentials-file: /etc/hoist/docker-config.json\n",
            vec!["launch-config.yaml:1:1: registry.uri: missing; expected the URI of a registry repository (HOST[:PORT]/REPOSITORY), or a type (ecr, gcr, acr) with its keys".into()],
        ),
        (
            "registry:\n  uri: registry.example.com\n",
            vec![r#"launch-config.yaml:2:3: registry.uri: invalid registry URI "registry.example.com" (no repository); expected HOST[:PORT]/REPOSITORY"#.into()],
        ),
        // Builders.
        (
            "builder:\n  type: kaniko\n  build-job-name: wandb-image-build\n",
            vec![store_required.clone()],
        ),
        (
            "environment:\n  type: aws\n  region: us-east-1\nbuilder:\n  type: kaniko\n  build-context-store: gs://my-bucket/contexts\n",
            vec!["launch-config.yaml:6:3: builder.build-context-store: a gs:// store needs a gcp environment, but environment.type is aws; expected s3://BUCKET/PREFIX with an aws environment".into()],
        ),
        (
            "builder:\n  type: kaniko\n  build-context-store: file:///tmp/contexts\n",
            vec![format!(r#"launch-config.yaml:3:3: builder.build-context-store: unsupported build context store "file:///tmp/contexts"; expected {STORE_FORM}"#)],
        ),
        (
            "builder:\n  type: kaniko\n  build-context-store: s3://my-bucket/x\n  secret-name: creds\n",
            vec!["launch-config.yaml:4:3: builder.secret-key: missing; secret-name and secret-key go together (the key of the credentials file in the secret)".into()],
        ),
        // Placeholders and page markup left in.
        (
            "environment:\n  type: aws\n  region: <aws-region>\n",
            vec![r#"launch-config.yaml:3:3: environment.region: "<aws-region>" is a placeholder from the documentation; replace it with an AWS region such as us-east-1"#.into()],
        ),
        (
            "queues:\n  - default\n\n// highlight-start\nbuilder:\n  type: docker\n// highlight-end\n",
            vec![
                r#"launch-config.yaml:4:1: "// highlight-start" is not YAML (page markup?); remove the line (YAML comments start with #)"#.into(),
                r#"launch-config.yaml:7:1: "// highlight-end" is not YAML (page markup?); remove the line (YAML comments start with #)"#.into(),
            ],
        ),
        // Tabs (000's `builder:\n\ttype: docker | kaniko` snippet, as printed).
        (
            "builder:\n\ttype: docker | kaniko\n",
            vec!["launch-config.yaml:2:1: tab character in indentation; YAML indents with spaces only".into()],
        ),
        (
            "entity: [a\n",
            vec!["launch-config.yaml:1:9: invalid YAML: unclosed bracket '['".into()],
        ),
        // Other values.
        (
            "base_url: ftp://hoist.example.com\n",
            vec![r#"launch-config.yaml:1:1: base_url: invalid URL "ftp://hoist.example.com"; expected http://HOST[:PORT] or https://HOST[:PORT], optionally with a path"#.into()],
        ),
        (
            "base_url: https://admin:hunter2@hoist.example.com\n",
            vec![r#"launch-config.yaml:1:1: base_url: credentials do not belong in the URL "https://admin:********@hoist.example.com"; use `hoist login` or HOIST_API_KEY"#.into()],
        ),
        (
            "queues: [bad queue]\n",
            vec![r#"launch-config.yaml:1:10: queues[0]: invalid queue name "bad queue": may contain only ASCII letters, digits, '-', '_' and '.'; expected QUEUE or ENTITY/QUEUE"#.into()],
        ),
        (
            "queues: []\n",
            vec!["launch-config.yaml:1:1: queues: empty list; expected at least one queue name (QUEUE or ENTITY/QUEUE)".into()],
        ),
        (
            "docker:\n  host: tcp://10.0.0.5:2375\n",
            vec![r#"launch-config.yaml:2:3: docker.host: Docker host "tcp://10.0.0.5:2375" is not a loopback address (a plain-TCP Docker API gives root on its machine to anyone who reaches it); expected a unix socket (/var/run/docker.sock or unix:///var/run/docker.sock) or tcp://127.0.0.1:PORT"#.into()],
        ),
        (
            "docker:\n  volume-allow-list: [data/sets]\n",
            vec![r#"launch-config.yaml:2:23: docker.volume-allow-list[0]: relative path "data/sets"; expected an absolute path (or one starting with ~/)"#.into()],
        ),
        (
            "env-allow-list: [MY-TOKEN]\n",
            vec![r#"launch-config.yaml:1:18: env-allow-list[0]: invalid environment variable name "MY-TOKEN"; expected letters, digits and '_', not starting with a digit"#.into()],
        ),
        // The kubernetes section.
        (
            "kubernetes:\n  namespace: ML_Jobs\n",
            vec![r#"launch-config.yaml:2:3: kubernetes.namespace: invalid namespace "ML_Jobs"; expected a DNS label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"#.into()],
        ),
        (
            "kubernetes:\n  allow-host-netwrok: true\n",
            vec![r#"launch-config.yaml:2:3: kubernetes: unknown key "allow-host-netwrok"; did you mean "allow-host-network"?"#.into()],
        ),
        (
            "kubernetes:\n  host-path-allow-list: [/data, data/sets]\n",
            vec![r#"launch-config.yaml:2:33: kubernetes.host-path-allow-list[1]: relative path "data/sets"; expected an absolute path (or one starting with ~/)"#.into()],
        ),
        (
            "kubernetes:\n  allow-cap-add: [sys ptrace]\n",
            vec![r#"launch-config.yaml:2:19: kubernetes.allow-cap-add[0]: invalid capability "sys ptrace"; expected a Linux capability name such as SYS_PTRACE or NET_ADMIN"#.into()],
        ),
        (
            "kubernetes:\n  kubeconfig: kube/config\n",
            vec![r#"launch-config.yaml:2:3: kubernetes.kubeconfig: relative path "kube/config"; expected an absolute path (or one starting with ~/)"#.into()],
        ),
        (
            "kubernetes:\n  require-non-root: maybe\n  allow-privileged: 1\n",
            vec![
                r#"launch-config.yaml:2:3: kubernetes.require-non-root: found the string "maybe"; expected true or false"#.into(),
                "launch-config.yaml:3:3: kubernetes.allow-privileged: found the integer 1; expected true or false".into(),
            ],
        ),
        (
            "kubernetes: ml-jobs\n",
            vec![r#"launch-config.yaml:1:1: kubernetes: found the string "ml-jobs"; expected a mapping such as {namespace: ml-jobs}"#.into()],
        ),
        (
            "kubernetes:\n  context: ''\n",
            vec!["launch-config.yaml:2:3: kubernetes.context: empty value; expected a context of the kubeconfig".into()],
        ),
        // secure_mode, max_requeues, project.
        (
            "secure_mode: yes\n",
            vec![r#"launch-config.yaml:1:1: secure_mode: found the string "yes"; expected true or false"#.into()],
        ),
        (
            "secure-mode: true\nsecure_mode: false\n",
            vec![r#"launch-config.yaml:2:1: secure_mode: the same key as "secure-mode" on line 1; give only one of them"#.into()],
        ),
        (
            "max_requeues: -1\n",
            vec!["launch-config.yaml:1:1: max_requeues: invalid value -1; expected an integer, 0 or more (0: a preempted run fails at once)".into()],
        ),
        (
            "max-requeues: 2.5\n",
            vec!["launch-config.yaml:1:1: max-requeues: found the number 2.5; expected an integer, 0 or more (0: a preempted run fails at once)".into()],
        ),
        (
            "max_requeues: 99999999999\n",
            vec!["launch-config.yaml:1:1: max_requeues: 99999999999 is too large; expected an integer, 0 or more (0: a preempted run fails at once)".into()],
        ),
        (
            "max_requeue: 2\n",
            vec![r#"launch-config.yaml:1:1: unknown key "max_requeue"; did you mean "max_requeues"?"#.into()],
        ),
        (
            "project: my project\n",
            vec![r#"launch-config.yaml:1:1: project: invalid project name "my project": may contain only ASCII letters, digits, '-', '_' and '.'"#.into()],
        ),
        // builder.platform and builder.destination.
        (
            "builder:\n  platform: amd64\n",
            vec![r#"launch-config.yaml:2:3: builder.platform: invalid platform "amd64"; expected OS/ARCH or OS/ARCH/VARIANT, such as linux/amd64 or linux/arm64"#.into()],
        ),
        (
            "registry:\n  uri: 127.0.0.1:5000/a\nbuilder:\n  destination: 127.0.0.1:5000/b\n",
            vec!["launch-config.yaml:4:3: builder.destination: give either registry (line 1) or builder.destination, not both; builder.destination is the registry's URI".into()],
        ),
        (
            "builder:\n  destination: 123456789012.dkr.ecr.us-east-1.amazonaws.com/launch\n",
            vec!["launch-config.yaml:2:3: builder.destination: an ecr registry needs an aws environment (environment: {type: aws, region: REGION}); none is configured".into()],
        ),
        (
            "builder:\n  destination: registry.example.com\n",
            vec![r#"launch-config.yaml:2:3: builder.destination: invalid registry URI "registry.example.com" (no repository); expected HOST[:PORT]/REPOSITORY"#.into()],
        ),
        (
            "verbosity: 9\n",
            vec!["launch-config.yaml:1:1: verbosity: invalid value 9; expected 0 (warnings), 1 (info), 2 (debug) or 3 (trace)".into()],
        ),
        // Several errors at once, in file order.
        (
            "entity: my team\nmax_jobs: 0\nqueues: default\nenvironment:\n  type: aws\nregistry:\n  type: gcr\n  uri: us-central1-docker.pkg.dev/my-gcp-project/repo/image\nbuilder:\n  type: kaniko\n  build-context-store: gs://my-bucket/ctx\n  cache: sometimes\nstart_timeout: soon\n",
            vec![
                r#"launch-config.yaml:1:1: entity: invalid entity name "my team": may contain only ASCII letters, digits, '-', '_' and '.'"#.into(),
                "launch-config.yaml:2:1: max_jobs: invalid value 0; expected a positive integer, or -1 for no limit".into(),
                "launch-config.yaml:5:3: environment.region: required for an aws environment; expected an AWS region such as us-east-1".into(),
                r#"launch-config.yaml:12:3: builder.cache: found the string "sometimes"; expected true or false"#.into(),
                r#"launch-config.yaml:13:1: start_timeout: invalid duration "soon"; expected seconds as an integer, or a number with a unit such as "90s", "5m", "1h", "1h30m", "500ms""#.into(),
            ],
        ),
    ];
    for (yaml, expected) in &cases {
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        check(yaml, &expected);
    }
}

#[test]
fn missing_file_given_explicitly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.yaml");
    let err = load(Some(&path), &no_env, &ConfigOverrides::default()).unwrap_err();
    assert_eq!(
        err.messages(),
        [format!(
            "{}: cannot read the config file: No such file or directory (os error 2)",
            path.display()
        )]
    );
}

#[test]
fn errors_name_the_file_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("launch-config.yaml");
    std::fs::write(&path, "entity: team\nbuilder:\n  type: podman\n").unwrap();
    let err = load(Some(&path), &no_env, &ConfigOverrides::default()).unwrap_err();
    assert_eq!(
        err.messages(),
        [format!(
            r#"{}:3:3: builder.type: unknown builder "podman"; expected one of docker, kaniko, buildah, noop"#,
            path.display()
        )]
    );
    let e = &err.0[0];
    assert_eq!(e.key, "builder.type");
}

// ---------------------------------------------------------------------------------
// Precedence: defaults < file < HOIST_* < flags

const FILE_CFG: &str = "entity: file-team\nqueues: [file-q]\nmax_jobs: 2\nname: file-agent\nbase_url: https://file.example.com\nbuilder:\n  type: noop\nstopped_run_timeout: 30s\nstart_timeout: 2m\n";

#[test]
fn default_file_is_optional() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path().to_str().unwrap().to_string();
    let env = env_of(&[("HOME", &h)]);
    let loaded = load(None, &env, &ConfigOverrides::default()).unwrap();
    assert_eq!(loaded.config, AgentConfig::default());
    assert_eq!(loaded.path, None);

    let dir = home.path().join(".config/hoist");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("launch-config.yaml"), FILE_CFG).unwrap();
    let loaded = load(None, &env, &ConfigOverrides::default()).unwrap();
    assert_eq!(loaded.config.entity.as_deref(), Some("file-team"));
    assert_eq!(loaded.path, Some(dir.join("launch-config.yaml")));

    // No HOME at all: defaults.
    assert_eq!(
        load(None, &no_env, &ConfigOverrides::default())
            .unwrap()
            .config,
        AgentConfig::default()
    );
}

#[test]
fn file_over_defaults() {
    let c = load_str(FILE_CFG, FILE, &no_env, &ConfigOverrides::default())
        .unwrap()
        .config;
    assert_eq!(c.entity.as_deref(), Some("file-team"));
    assert_eq!(c.queues, ["file-q"]);
    assert_eq!(c.max_jobs, limit(2));
    assert_eq!(c.name.as_deref(), Some("file-agent"));
    assert_eq!(c.base_url.as_deref(), Some("https://file.example.com"));
    assert_eq!(c.builder.kind, BuilderKind::Noop);
    assert_eq!(c.stopped_run_timeout, Duration::from_secs(30));
    assert_eq!(c.start_timeout, Duration::from_secs(120));
}

#[test]
fn environment_over_file() {
    let env = env_of(&[
        ("HOIST_ENTITY", "env-team"),
        ("HOIST_QUEUES", "a, env-team/b ,,a"),
        ("HOIST_MAX_JOBS", "-1"),
        ("HOIST_AGENT_NAME", "env-agent"),
        ("HOIST_BASE_URL", "http://127.0.0.1:9000/"),
        ("HOIST_BUILDER", "docker"),
        ("HOIST_STOPPED_RUN_TIMEOUT", "5s"),
        ("HOIST_START_TIMEOUT", "600"),
    ]);
    let c = load_str(FILE_CFG, FILE, &env, &ConfigOverrides::default())
        .unwrap()
        .config;
    assert_eq!(c.entity.as_deref(), Some("env-team"));
    assert_eq!(c.queues, ["a", "env-team/b"]);
    assert_eq!(c.max_jobs, MaxJobs::Unlimited);
    assert_eq!(c.name.as_deref(), Some("env-agent"));
    assert_eq!(c.base_url.as_deref(), Some("http://127.0.0.1:9000"));
    assert_eq!(c.builder.kind, BuilderKind::Docker);
    assert_eq!(c.stopped_run_timeout, Duration::from_secs(5));
    assert_eq!(c.start_timeout, Duration::from_secs(600));

    // HOIST_HOST is a base URL too; HOIST_BASE_URL wins when both are set.
    let env = env_of(&[("HOIST_HOST", "http://127.0.0.1:1111")]);
    let c = load_str(FILE_CFG, FILE, &env, &ConfigOverrides::default())
        .unwrap()
        .config;
    assert_eq!(c.base_url.as_deref(), Some("http://127.0.0.1:1111"));
    let env = env_of(&[
        ("HOIST_HOST", "http://127.0.0.1:1111"),
        ("HOIST_BASE_URL", "http://127.0.0.1:2222"),
    ]);
    let c = load_str(FILE_CFG, FILE, &env, &ConfigOverrides::default())
        .unwrap()
        .config;
    assert_eq!(c.base_url.as_deref(), Some("http://127.0.0.1:2222"));

    // Empty variables are unset.
    let env = env_of(&[("HOIST_ENTITY", ""), ("HOIST_MAX_JOBS", "  ")]);
    let c = load_str(FILE_CFG, FILE, &env, &ConfigOverrides::default())
        .unwrap()
        .config;
    assert_eq!(c.entity.as_deref(), Some("file-team"));
    assert_eq!(c.max_jobs, limit(2));
}

#[test]
fn flags_over_environment() {
    let env = env_of(&[
        ("HOIST_ENTITY", "env-team"),
        ("HOIST_QUEUES", "env-q"),
        ("HOIST_MAX_JOBS", "3"),
        ("HOIST_AGENT_NAME", "env-agent"),
        ("HOIST_BASE_URL", "http://127.0.0.1:9000"),
        ("HOIST_BUILDER", "docker"),
        ("HOIST_START_TIMEOUT", "600"),
    ]);
    let flags = ConfigOverrides {
        entity: Some("flag-team".into()),
        queues: vec!["q1".into(), "q2".into()],
        max_jobs: Some(8),
        name: Some("flag-agent".into()),
        base_url: Some("https://flags.example.com".into()),
        builder: Some("noop".into()),
        stopped_run_timeout: Some(Duration::from_secs(1)),
        start_timeout: Some(Duration::from_secs(42)),
        heartbeat_interval: Some(Duration::from_secs(3)),
        verbosity: Some(7),
    };
    let c = load_str(FILE_CFG, FILE, &env, &flags).unwrap().config;
    assert_eq!(c.entity.as_deref(), Some("flag-team"));
    assert_eq!(c.queues, ["q1", "q2"]);
    assert_eq!(c.max_jobs, limit(8));
    assert_eq!(c.name.as_deref(), Some("flag-agent"));
    assert_eq!(c.base_url.as_deref(), Some("https://flags.example.com"));
    assert_eq!(c.builder.kind, BuilderKind::Noop);
    assert_eq!(c.stopped_run_timeout, Duration::from_secs(1));
    assert_eq!(c.start_timeout, Duration::from_secs(42));
    assert_eq!(c.heartbeat_interval, Some(Duration::from_secs(3)));
    assert_eq!(c.verbosity, 3);

    // Flags alone, no file.
    let c = load(None, &no_env, &flags).unwrap().config;
    assert_eq!(c.max_jobs, limit(8));
}

#[test]
fn bad_environment_and_flag_values_name_their_source() {
    let env = env_of(&[
        ("HOIST_MAX_JOBS", "five"),
        ("HOIST_QUEUES", ",,"),
        ("HOIST_BUILDER", "podman"),
        ("HOIST_START_TIMEOUT", "soon"),
        ("HOIST_BASE_URL", "hoist.example.com"),
        ("HOIST_ENTITY", "a b"),
    ]);
    let flags = ConfigOverrides {
        max_jobs: Some(0),
        queues: vec!["bad/queue/name".into()],
        start_timeout: Some(Duration::ZERO),
        ..Default::default()
    };
    let err = load_str("max_jobs: -3\n", FILE, &env, &flags).unwrap_err();
    assert_eq!(
        err.messages(),
        [
            "launch-config.yaml:1:1: max_jobs: invalid value -3; expected a positive integer, or -1 for no limit",
            r#"environment variable HOIST_ENTITY: entity: invalid entity name "a b": may contain only ASCII letters, digits, '-', '_' and '.'"#,
            "environment variable HOIST_QUEUES: queues: no queue names; expected a comma-separated list of QUEUE or ENTITY/QUEUE",
            r#"environment variable HOIST_MAX_JOBS: max_jobs: invalid value "five"; expected a positive integer, or -1 for no limit"#,
            r#"environment variable HOIST_BASE_URL: base_url: invalid URL "hoist.example.com"; expected http://HOST[:PORT] or https://HOST[:PORT], optionally with a path"#,
            r#"environment variable HOIST_BUILDER: builder.type: unknown builder "podman"; expected one of docker, kaniko, buildah, noop"#,
            r#"environment variable HOIST_START_TIMEOUT: start_timeout: invalid duration "soon"; expected seconds as an integer, or a number with a unit such as "90s", "5m", "1h", "1h30m", "500ms""#,
            r#"flag --queue: queues: invalid queue name "queue/name": may contain only ASCII letters, digits, '-', '_' and '.'; expected QUEUE or ENTITY/QUEUE"#,
            "flag --max-jobs: max_jobs: invalid value 0; expected a positive integer, or -1 for no limit",
            r#"flag --start-timeout: start_timeout: invalid duration 0: must be more than zero; expected seconds as an integer, or a number with a unit such as "90s", "5m", "1h", "1h30m", "500ms""#,
        ]
    );
}

#[test]
fn builder_type_from_environment_is_checked_against_the_file() {
    // The file's kaniko settings apply once HOIST_BUILDER picks kaniko…
    let env = env_of(&[("HOIST_BUILDER", "kaniko")]);
    let c = load_str(
        "environment: {type: aws, region: us-east-1}\nregistry: {type: ecr, repository: r}\nbuilder:\n  build-context-store: s3://my-bucket/ctx\n",
        FILE,
        &env,
        &ConfigOverrides::default(),
    )
    .unwrap()
    .config;
    assert!(matches!(c.builder.kind, BuilderKind::Kaniko(_)));
    // …and their absence is an error that names the variable.
    let err = load_str("entity: team\n", FILE, &env, &ConfigOverrides::default()).unwrap_err();
    assert_eq!(
        err.messages(),
        [format!(
            "environment variable HOIST_BUILDER: builder.build-context-store: required by the kaniko builder; expected {STORE_FORM}"
        )]
    );
    // A flag choosing docker over a kaniko file: the kaniko keys are ignored.
    let flags = ConfigOverrides {
        builder: Some("docker".into()),
        ..Default::default()
    };
    let loaded = load(
        Some(&fixtures_dir().join("000-05-builder-kaniko-s3.yaml")),
        &no_env,
        &flags,
    )
    .unwrap();
    assert_eq!(loaded.config.builder.kind, BuilderKind::Docker);
    assert_eq!(loaded.warnings.len(), 2, "{:?}", loaded.warnings);
}

// ---------------------------------------------------------------------------------
// Agent names

#[test]
fn default_agent_names_are_stable() {
    let a = ok("entity: team\nqueues: [gpu, cpu]\n");
    let b = ok("entity: team\nqueues: [cpu, team/gpu]\n");
    let c = ok("entity: team\nqueues: [cpu]\n");
    let name = default_agent_name("GPU-Box.local", &a);
    assert_eq!(name, default_agent_name("GPU-Box.local", &a));
    assert_eq!(
        name,
        default_agent_name("GPU-Box.local", &b),
        "order and spelling of queues"
    );
    assert_ne!(name, default_agent_name("GPU-Box.local", &c));
    assert!(name.starts_with("gpu-box.local-"), "{name}");
    assert_eq!(name.len(), "gpu-box.local-".len() + 6);
    assert!(
        name[name.len() - 6..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit())
    );
    hoist_core::names::validate("agent", &name).unwrap();

    for host in ["", "-", "höst name", &"x".repeat(200), "_a"] {
        let n = default_agent_name(host, &a);
        hoist_core::names::validate("agent", &n).unwrap_or_else(|e| panic!("{host:?}: {e}"));
    }
    assert_eq!(a.agent_name("box"), default_agent_name("box", &a));
    assert_eq!(ok("name: mine").agent_name("box"), "mine");
}

// ---------------------------------------------------------------------------------
// The resolved rendering (`hoist agent --check-config`)

#[test]
fn rendering_reads_back_to_the_same_config() {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    for name in names {
        let c = fixture(&name).config;
        let text = c.render_resolved();
        let back = load_str(&text, "rendered.yaml", &no_env, &ConfigOverrides::default())
            .unwrap_or_else(|e| panic!("{name}: rendering refused:\n{e}\n{text}"))
            .config;
        assert_eq!(back, c, "{name}:\n{text}");
    }
}

#[test]
fn rendering_masks_secrets() {
    let c = ok(r#"
environment: {type: aws, region: us-east-1}
registry: {type: ecr, repository: r}
builder:
  type: kaniko
  build-context-store: s3://my-bucket/ctx
  kaniko-config:
    spec:
      template:
        spec:
          containers:
          - env:
            - name: AWS_SECRET_ACCESS_KEY
              value: wJalrXUtnFEMI
            - name: EPOCHS
              value: "3"
            - name: PROXY
              value: http://user:p4ssw0rd@proxy:3128
            password: hunter2
"#);
    let text = c.render_resolved();
    for secret in ["wJalrXUtnFEMI", "p4ssw0rd", "hunter2"] {
        assert!(!text.contains(secret), "{secret} shown:\n{text}");
    }
    assert!(text.contains("********"), "{text}");
    assert!(text.contains("EPOCHS"), "{text}");
    assert!(text.contains("max_jobs: 1"), "{text}");
    assert!(
        text.contains("build-context-store: s3://my-bucket/ctx/"),
        "{text}"
    );
}

#[test]
fn bad_values_never_echo_a_credential() {
    // Every value here is refused, and every one carries the password `hunter2` (in URL
    // user-info, a query string, a DSN or as a token). The errors still name the file,
    // line, key and what is expected; the password is in none of them, nor in Debug.
    let yaml = "\
base_url: ftp://admin:hunter2@hoist.example.com
entity: postgres://app:hunter2@db.internal/x
max_jobs: 'host=db password=hunter2'
registry:
  uri: https://robot:hunter2@registry.example.com
builder:
  type: kaniko
  build-context-store: https://acct.blob.core.windows.net/c/ctx?sv=2024&sig=hunter2
  base-image: https://robot:hunter2@registry.example.com/base
docker:
  host: tcp://robot:hunter2@127.0.0.1:2375
";
    let env = env_of(&[
        ("HOIST_BASE_URL", "hoist.example.com?token=hunter2"),
        ("HOIST_BUILDER", "robot:hunter2@podman"),
    ]);
    let flags = ConfigOverrides {
        base_url: Some("https://admin:hunter2@hoist example.com".into()),
        ..Default::default()
    };
    let err = load_str(yaml, FILE, &env, &flags).unwrap_err();
    let debug = format!("{err:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert_eq!(
        err.messages(),
        [
            r#"launch-config.yaml:1:1: base_url: invalid URL "ftp://admin:********@hoist.example.com"; expected http://HOST[:PORT] or https://HOST[:PORT], optionally with a path"#,
            r#"launch-config.yaml:2:1: entity: invalid entity name "postgres://app:********@db.internal/x": may contain only ASCII letters, digits, '-', '_' and '.'"#,
            r#"launch-config.yaml:3:1: max_jobs: found the string "********"; expected a positive integer, or -1 for no limit"#,
            r#"launch-config.yaml:5:3: registry.uri: invalid registry URI "https://robot:********@registry.example.com" (no repository); expected HOST[:PORT]/REPOSITORY"#,
            r#"launch-config.yaml:8:3: builder.build-context-store: "https://acct.blob.core.windows.net/c/ctx?sv=********&sig=********" has a query string (a SAS token?); credentials come from the environment, not the URI; expected s3://BUCKET/PREFIX (aws), gs://BUCKET/PREFIX (gcp) or https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX (azure)"#,
            r#"launch-config.yaml:9:3: builder.base-image: invalid image reference "https://robot:********@registry.example.com/base"; expected an image reference such as python:3.12-slim"#,
            r#"launch-config.yaml:11:3: docker.host: invalid Docker host "tcp://robot:********@127.0.0.1:2375" (invalid host name "robot:********@127.0.0.1"); expected a unix socket (/var/run/docker.sock or unix:///var/run/docker.sock) or tcp://127.0.0.1:PORT"#,
            r#"environment variable HOIST_BASE_URL: base_url: invalid URL "hoist.example.com?token=********"; expected http://HOST[:PORT] or https://HOST[:PORT], optionally with a path"#,
            r#"environment variable HOIST_BUILDER: builder.type: unknown builder "robot:********@podman"; expected one of docker, kaniko, buildah, noop"#,
            r#"flag --base-url: base_url: invalid URL "https://admin:********@hoist example.com" (contains spaces); expected http://HOST[:PORT] or https://HOST[:PORT], optionally with a path"#,
        ]
    );
}
