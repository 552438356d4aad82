//! The in-cluster builders on the real test cluster. The build context goes to an
//! object store on 127.0.0.1 (moto's S3, fake-gcs-server, Azurite), the build Job runs
//! the stand-in executor image (`HOIST_TEST_KANIKO_IMAGE`, built by
//! `scripts/test-env.sh`: Kaniko's command line and hoist's buildah mode, a real
//! buildah build) which fetches the context with the credentials mounted the way the
//! real executor reads them and pushes to the htpasswd registry with the per-build
//! Secret; then the registry has the image. Also: a cache hit starts no Job; a failing
//! step, a store the executor cannot reach, a store the agent cannot reach, a wrong
//! registry password and a build timeout each fail with their message; no build
//! leaves anything in the namespace nor in the store; and every seed agent config that
//! uses kaniko builds once its endpoints point at the services here.
//!
//! The stand-in needs `hostNetwork` (the cluster's pods run in the test network
//! namespace and reach its loopback services that way) and `SYS_ADMIN` (buildah's
//! chroot isolation): the test's `kaniko-config` asks for both and its agent config
//! allows them.

#![cfg(all(
    feature = "kubernetes",
    feature = "aws",
    feature = "gcp",
    feature = "azure"
))]

mod registry_fakes;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hoist_agent::builders::job::{JobEngine, JobEngineParts};
use hoist_agent::builders::{
    BuildError, BuildSettings, Builder, Built, DirArtifacts, Pipeline, stores,
};
use hoist_agent::config::{BuilderKind, ConfigOverrides, load_str};
use hoist_agent::environments::{Ambient, from_config_with};
use hoist_agent::logs::LogSink;
use hoist_agent::registries;
use hoist_agent::runners::kubernetes::Cluster;
use hoist_context::{PackOptions, pack_dir};
use hoist_core::api::{JobSource, Run};
use hoist_testkit::kubectl::TestNamespace;
use hoist_testkit::{env, require_k8s, unique};
use registry_fakes::{Server, closed_port};
use serde_json::{Value, json};

/// How long one build may take here (buildah with vfs storage on 2 cores).
const BUILD_WITHIN: Duration = Duration::from_secs(300);

const AWS_KEY_ID: &str = "AKIAHOISTTEST0000001";
const AWS_SECRET: &str = "hoist-test-secret-key-value";
const TENANT: &str = "8f2b0c4e-hoist-test-tenant";
const CLIENT: &str = "5d0e9a61-hoist-test-client";
const AZ_SECRET: &str = "hoist-test-azure-client-secret";

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

/// A small job whose image says `nonce`, on the busybox base the test env pushed.
fn hello_job(artifacts: &Path, nonce: &str) -> JobSource {
    let base = env("HOIST_TEST_REGISTRY_BUSYBOX");
    code_job(
        artifacts,
        &[
            (
                "Dockerfile",
                &format!("FROM {base}\nCOPY hello.txt /hello.txt\nRUN cat /hello.txt\n"),
            ),
            ("hello.txt", &format!("hello from {nonce}\n")),
        ],
    )
}

/// The object store a test builds with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StoreKind {
    S3,
    Gcs,
    Azure,
}

/// The services of the test environment and a namespace of the test's own.
struct Services {
    ns: TestNamespace,
    registry_host: String,
    registry_user: String,
    registry_password: String,
    executor: String,
    /// The fake Azure AD of the azure environment (kept alive with the setup).
    aad: Option<Server>,
    dirs: Vec<tempfile::TempDir>,
}

impl Services {
    fn new() -> Services {
        let password = std::fs::read_to_string(env("HOIST_TEST_AUTH_REGISTRY_PASSWORD_FILE"))
            .unwrap()
            .trim()
            .to_string();
        Services {
            ns: TestNamespace::create("kaniko"),
            registry_host: env("HOIST_TEST_AUTH_REGISTRY"),
            registry_user: env("HOIST_TEST_AUTH_REGISTRY_USER"),
            registry_password: password,
            executor: env("HOIST_TEST_KANIKO_IMAGE"),
            aad: None,
            dirs: Vec::new(),
        }
    }

    fn tempdir(&mut self) -> std::path::PathBuf {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().to_path_buf();
        self.dirs.push(d);
        p
    }

    /// A Docker `config.json` for the htpasswd registry with `password`.
    fn docker_config(&mut self, password: &str) -> std::path::PathBuf {
        use base64::Engine as _;
        let dir = self.tempdir();
        let auth = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{password}", self.registry_user));
        let path = dir.join("config.json");
        std::fs::write(
            &path,
            json!({"auths": {self.registry_host.as_str(): {"auth": auth}}}).to_string(),
        )
        .unwrap();
        // The test's own pods pull what the builds pushed with it.
        let _ = self
            .ns
            .kubectl
            .output(&["-n", &self.ns.name, "delete", "secret", "test-pull"]);
        self.ns.kubectl.ok(&[
            "-n",
            &self.ns.name,
            "create",
            "secret",
            "generic",
            "test-pull",
            "--type=kubernetes.io/dockerconfigjson",
            &format!("--from-file=.dockerconfigjson={}", path.display()),
        ]);
        path
    }

    fn secret(&self, name: &str, key: &str, value: &str) {
        let kubectl = &self.ns.kubectl;
        kubectl.ok_with_input(
            &[
                "-n",
                &self.ns.name,
                "create",
                "secret",
                "generic",
                name,
                &format!("--from-file={key}=/dev/stdin"),
            ],
            value,
        );
    }

    /// Makes `bucket` (or container) in the store, and says what the agent and the
    /// executor need to reach it ([`StoreSetup`]).
    async fn store(&mut self, kind: StoreKind, bucket: &str) -> StoreSetup {
        match kind {
            StoreKind::S3 => {
                let moto = env("HOIST_TEST_MOTO_URL");
                let r = reqwest::Client::new()
                    .put(format!("{moto}/{bucket}"))
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "{r:?}");
                StoreSetup {
                    ambient: Ambient::new(
                        [
                            ("AWS_ACCESS_KEY_ID", AWS_KEY_ID.to_string()),
                            ("AWS_SECRET_ACCESS_KEY", AWS_SECRET.to_string()),
                            ("AWS_ENDPOINT_URL", moto.clone()),
                        ],
                        None,
                    ),
                    secret: Some(format!(
                        "[default]\naws_access_key_id = {AWS_KEY_ID}\naws_secret_access_key = {AWS_SECRET}\n"
                    )),
                    env: vec![
                        json!({"name": "S3_ENDPOINT", "value": moto}),
                        json!({"name": "S3_FORCE_PATH_STYLE", "value": "true"}),
                        json!({"name": "AWS_REGION", "value": "us-east-1"}),
                    ],
                    volumes: vec![],
                    mounts: vec![],
                    environment: json!({"type": "aws", "region": "us-east-1"}),
                }
            }
            StoreKind::Gcs => {
                let url = env("HOIST_TEST_GCS_URL");
                let r = reqwest::Client::new()
                    .post(format!("{url}/storage/v1/b?project=hoist"))
                    .json(&json!({"name": bucket}))
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "create bucket: {}", r.status());
                StoreSetup {
                    // As Google's libraries do, nothing signs requests to an emulator.
                    ambient: Ambient::new([("STORAGE_EMULATOR_HOST", url.clone())], None),
                    secret: None,
                    env: vec![json!({"name": "STORAGE_EMULATOR_HOST", "value": url})],
                    volumes: vec![],
                    mounts: vec![],
                    environment: json!({"type": "gcp", "region": "us-central1", "project": "my-gcp-project"}),
                }
            }
            StoreKind::Azure => {
                let url = env("HOIST_TEST_AZURITE_URL");
                let ca_file = env("HOIST_TEST_AZURITE_CA");
                let key = std::fs::read_to_string(env("HOIST_TEST_AZURITE_KEY_FILE"))
                    .unwrap()
                    .trim()
                    .to_string();
                let aad = Server::start(|f| {
                    f.aad_clients.get_mut().unwrap().push((
                        TENANT.into(),
                        CLIENT.into(),
                        AZ_SECRET.into(),
                    ));
                })
                .await;
                let ca = std::fs::read(&ca_file).unwrap();
                let token = aad.azure_storage_token(TENANT, CLIENT, AZ_SECRET).await;
                let http = reqwest::Client::builder()
                    .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&ca).unwrap())
                    .build()
                    .unwrap();
                let r = http
                    .put(format!("{url}/{bucket}?restype=container"))
                    .bearer_auth(token)
                    .header("x-ms-version", "2021-08-06")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 201, "create container");
                // The executor trusts Azurite's CA through a ConfigMap.
                self.ns.kubectl.ok(&[
                    "-n",
                    &self.ns.name,
                    "create",
                    "configmap",
                    "azurite-ca",
                    &format!("--from-file=ca.crt={ca_file}"),
                ]);
                let ambient = Ambient::new(
                    [
                        ("AZURE_TENANT_ID", TENANT.to_string()),
                        ("AZURE_CLIENT_ID", CLIENT.to_string()),
                        ("AZURE_CLIENT_SECRET", AZ_SECRET.to_string()),
                        ("AZURE_AUTHORITY_HOST", aad.base.clone()),
                        (
                            "AZURE_POD_IDENTITY_AUTHORITY_HOST",
                            format!("http://{}", closed_port()),
                        ),
                        ("AZURE_STORAGE_BLOB_ENDPOINT", url.clone()),
                        ("HOIST_STORE_CA_FILE", ca_file),
                    ],
                    None,
                );
                self.aad = Some(aad);
                StoreSetup {
                    ambient,
                    secret: Some(key),
                    env: vec![
                        json!({"name": "AZURE_STORAGE_BLOB_ENDPOINT", "value": url}),
                        json!({"name": "SSL_CERT_FILE", "value": "/etc/azurite/ca.crt"}),
                    ],
                    volumes: vec![
                        json!({"name": "azurite-ca", "configMap": {"name": "azurite-ca"}}),
                    ],
                    mounts: vec![
                        json!({"name": "azurite-ca", "mountPath": "/etc/azurite", "readOnly": true}),
                    ],
                    environment: json!({"type": "azure"}),
                }
            }
        }
    }
}

/// What [`Services::store`] made.
struct StoreSetup {
    ambient: Ambient,
    /// What the executor's `secret-name`/`secret-key` Secret holds for this store.
    secret: Option<String>,
    env: Vec<Value>,
    volumes: Vec<Value>,
    mounts: Vec<Value>,
    environment: Value,
}

impl StoreSetup {
    /// The test's part of `kaniko-config`: host network, buildah's capability, the
    /// emulator's endpoint.
    fn kaniko_config(&self) -> Value {
        let mut c = json!({
            "name": "executor",
            "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}},
            "env": self.env,
        });
        let mut spec = json!({"hostNetwork": true});
        // An empty list would replace hoist's (deep_merge replaces lists without names).
        if !self.mounts.is_empty() {
            c["volumeMounts"] = json!(self.mounts);
            spec["volumes"] = json!(self.volumes);
        }
        spec["containers"] = json!([c]);
        json!({"spec": {"template": {"spec": spec}}})
    }
}

struct Setup {
    services: Services,
    pipeline: Pipeline,
    store: Arc<dyn stores::ContextStore>,
    artifacts: std::path::PathBuf,
    /// What made the pipeline, to make another (an agent's next process).
    config: hoist_agent::config::AgentConfig,
    registry: Arc<dyn registries::Registry>,
    client: kube::Client,
}

/// A pipeline of the setup's config over a new engine: what the next process of the
/// same agent has.
fn pipeline_of(
    config: &hoist_agent::config::AgentConfig,
    client: kube::Client,
    namespace: &str,
    registry: Arc<dyn registries::Registry>,
    store: Arc<dyn stores::ContextStore>,
    artifacts: &Path,
) -> Pipeline {
    let BuilderKind::Kaniko(settings) = &config.builder.kind else {
        panic!("not an in-cluster builder: {:?}", config.builder.kind)
    };
    let engine = JobEngine::new(JobEngineParts {
        settings: (**settings).clone(),
        agent: "kaniko-test-agent".into(),
        client,
        namespace: namespace.to_string(),
        registry: registry.clone(),
        store,
        kubernetes: config.kubernetes.clone(),
        secure_mode: false,
        cache: true,
        platform: None,
    });
    Pipeline::new(
        Arc::new(engine),
        registry,
        Arc::new(DirArtifacts {
            dir: artifacts.to_path_buf(),
        }),
        BuildSettings::from_config(&config.builder),
    )
}

async fn setup_again(s: &Setup) -> Pipeline {
    pipeline_of(
        &s.config,
        s.client.clone(),
        &s.services.ns.name,
        s.registry.clone(),
        s.store.clone(),
        &s.artifacts,
    )
}

/// An agent config over `builder` (the builder section as a test or a seed wrote it):
/// `environment` and the store's emulator, the htpasswd registry with `password`, the
/// test's `kaniko-config` merged under the builder's own, the cluster's namespace.
async fn setup_with(
    kind: StoreKind,
    builder: Value,
    password: Option<&str>,
    ambient_extra: &[(&str, &str)],
) -> Setup {
    let mut s = Services::new();
    let store_url = builder["build-context-store"].as_str().unwrap().to_string();
    let bucket = bucket_of(&store_url);
    let st = s.store(kind, &bucket).await;
    let password = password.map_or_else(|| s.registry_password.clone(), str::to_string);
    let docker_config = s.docker_config(&password);
    let mut builder = builder;
    // The test's own kaniko-config first, the builder's own over it.
    let mut kaniko_config = st.kaniko_config();
    if let Some(own) = builder.get("kaniko-config") {
        // Its first container is the executor, whatever its name (as hoist reads it).
        let mut own = own.clone();
        if let Some(first) = own.pointer_mut("/spec/template/spec/containers/0") {
            first["name"] = json!("executor");
        }
        hoist_core::merge::deep_merge(&mut kaniko_config, &own);
    }
    builder["kaniko-config"] = kaniko_config;
    if builder.get("kaniko-image").is_none() && builder.get("buildah-image").is_none() {
        let key = if builder["type"] == "buildah" {
            "buildah-image"
        } else {
            "kaniko-image"
        };
        builder[key] = json!(s.executor);
    }
    // The cloud credentials' Secret, under the names the builder gives (a seed's),
    // else the test's.
    if let Some(value) = &st.secret {
        if builder.get("secret-name").is_none() {
            builder["secret-name"] = json!("store-credentials");
            builder["secret-key"] = json!("credentials");
        }
        s.secret(
            builder["secret-name"].as_str().unwrap(),
            builder["secret-key"].as_str().unwrap(),
            value,
        );
    }
    let cfg = json!({
        "environment": st.environment,
        "registry": {
            "type": "oci",
            "uri": format!("{}/hoist-test/{}", s.registry_host, unique("app")),
            "credentials-file": docker_config,
        },
        "builder": builder,
        "kubernetes": {
            "kubeconfig": env("HOIST_TEST_KUBECONFIG"),
            "namespace": s.ns.name,
            "allow-host-network": true,
            "allow-cap-add": ["SYS_ADMIN"],
        },
    });
    // YAML is a superset of JSON: the config as the agent reads it.
    let loaded = load_str(
        &cfg.to_string(),
        "launch-config.yaml",
        &|_| None,
        &ConfigOverrides::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
    .config;
    let BuilderKind::Kaniko(settings) = &loaded.builder.kind else {
        panic!("not an in-cluster builder: {:?}", loaded.builder.kind)
    };
    let mut ambient = st.ambient;
    for (k, v) in ambient_extra {
        ambient = ambient.with_var(*k, *v);
    }
    let environment = from_config_with(loaded.environment.as_ref().unwrap(), &ambient)
        .await
        .unwrap();
    let store =
        stores::from_config_with(&settings.build_context_store, Some(&environment), &ambient)
            .unwrap();
    let registry = registries::from_config(&loaded.registry, Some(&environment), None)
        .await
        .unwrap();
    let cluster = Cluster::connect(&loaded.kubernetes).await.unwrap();
    let artifacts = s.tempdir();
    let pipeline = pipeline_of(
        &loaded,
        cluster.client.clone(),
        &s.ns.name,
        registry.clone(),
        store.clone(),
        &artifacts,
    );
    Setup {
        services: s,
        pipeline,
        store,
        artifacts,
        config: loaded,
        registry,
        client: cluster.client.clone(),
    }
}

/// `s3://b/p`, `gs://b/p` → `b`; `https://acct.blob.core.windows.net/c/p` → `c`.
fn bucket_of(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    let mut parts = rest.split('/');
    if url.starts_with("https://") {
        parts.next();
    }
    parts.next().unwrap().to_string()
}

/// A builder section of a test's own: a fresh bucket of `kind`, `extra` keys on top.
fn builder(kind: StoreKind, extra: Value) -> Value {
    let bucket = unique("ctx");
    let store = match kind {
        StoreKind::S3 => format!("s3://{bucket}/contexts"),
        StoreKind::Gcs => format!("gs://{bucket}/contexts"),
        StoreKind::Azure => format!(
            "https://{}.blob.core.windows.net/{bucket}/contexts/",
            env("HOIST_TEST_AZURITE_ACCOUNT")
        ),
    };
    let mut b = json!({"type": "kaniko", "build-context-store": store});
    hoist_core::merge::deep_merge(&mut b, &extra);
    b
}

fn lines(logs: &LogSink) -> Vec<String> {
    logs.snapshot().into_iter().map(|l| l.text).collect()
}

impl Setup {
    async fn build(&self, source: JobSource, logs: &LogSink) -> Result<Built, BuildError> {
        tokio::time::timeout(BUILD_WITHIN, self.pipeline.build(&run_for(source), logs))
            .await
            .expect("the build ends")
    }

    /// Nothing of the agent's builds is left in the namespace: no Job, pod or Secret.
    fn assert_clean(&self) {
        let (kubectl, ns) = (&self.services.ns.kubectl, &self.services.ns.name);
        kubectl.wait_none(ns, "jobs,pods", "hoist.dev/build");
        let secrets = kubectl.names(ns, "secrets", "hoist.dev/build");
        assert!(secrets.is_empty(), "left: {secrets:?}");
    }

    /// No object under the store's prefix.
    async fn assert_store_empty(&self, key: &str) {
        assert_eq!(
            self.store.size(key).await.unwrap(),
            None,
            "the context {key} is deleted"
        );
    }

    /// The pushed image runs in the cluster and prints what it was built with.
    fn run_image(&self, image: &str, nonce: &str) {
        let (kubectl, ns) = (&self.services.ns.kubectl, &self.services.ns.name);
        let pod = unique("from-image");
        let spec = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "namespace": ns},
            "spec": {"restartPolicy": "Never", "hostNetwork": true,
                "imagePullSecrets": [{"name": "test-pull"}], "containers": [{
                "name": "c", "image": image, "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "cat /hello.txt"],
            }]}
        });
        kubectl.ok_with_input(&["apply", "-f", "-"], &spec.to_string());
        // The kubelet may try its first pull before its Secret cache has the pull
        // Secret ("no basic auth credentials"), then retries: a pull error fails the
        // test only when it lasts, as hoist's own runner judges it.
        let mut pull_error_since: Option<std::time::Instant> = None;
        hoist_testkit::wait_until("the pod from the pushed image ends", BUILD_WITHIN, || {
            let p = kubectl.json(&["-n", ns, "get", "pod", &pod, "-o", "json"]);
            let waiting = &p["status"]["containerStatuses"][0]["state"]["waiting"];
            if let Some(r @ ("ErrImagePull" | "ImagePullBackOff")) = waiting["reason"].as_str() {
                let since = *pull_error_since.get_or_insert_with(std::time::Instant::now);
                assert!(
                    since.elapsed() < Duration::from_secs(90),
                    "the pushed image {image} cannot be pulled: {r}: {}",
                    waiting["message"]
                );
            }
            matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
        });
        let out = kubectl.ok(&["-n", ns, "logs", &pod]);
        assert_eq!(out.trim(), format!("hello from {nonce}"));
    }
}

/// Builds a fresh job, checks what reached the logs, the image runs, nothing is left.
async fn builds_and_runs(s: &Setup, executor_line: &str) -> Built {
    let nonce = unique("n");
    let logs = LogSink::new();
    let built = s
        .build(hello_job(&s.artifacts, &nonce), &logs)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{:#?}", lines(&logs)));
    assert!(!built.cache_hit);
    let text = lines(&logs);
    assert!(
        text.iter()
            .any(|l| l.contains("uploading the build context")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|l| l.contains("in the Kubernetes Job") && l.contains(executor_line)),
        "{text:#?}"
    );
    // The executor's own output reached the run's logs, the RUN step's output with it.
    assert!(
        text.iter()
            .any(|l| l.contains(&format!("hello from {nonce}"))),
        "{text:#?}"
    );
    assert!(
        text.iter().any(|l| l.starts_with("[hoist: pushed sha256:")),
        "{text:#?}"
    );
    s.assert_clean();
    s.assert_store_empty(&format!("{}.tar.gz", built.tag)).await;
    s.run_image(&built.image, &nonce);
    built
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kaniko_build_pushes_and_leaves_nothing_then_a_relaunch_is_a_cache_hit() {
    require_k8s!();
    let s = setup_with(StoreKind::S3, builder(StoreKind::S3, json!({})), None, &[]).await;
    let nonce = unique("n");
    let source = hello_job(&s.artifacts, &nonce);
    let logs = LogSink::new();
    let built = s
        .build(source.clone(), &logs)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{:#?}", lines(&logs)));
    assert!(!built.cache_hit);
    s.assert_clean();

    // The same source again: the registry has the tag; no Job, no upload.
    let logs = LogSink::new();
    let again = s.build(source, &logs).await.unwrap();
    assert!(again.cache_hit);
    assert_eq!(again.image, built.image);
    let text = lines(&logs);
    assert!(
        !text
            .iter()
            .any(|l| l.contains("Kubernetes Job") || l.contains("uploading")),
        "{text:#?}"
    );
    assert!(
        s.services
            .ns
            .kubectl
            .names(&s.services.ns.name, "jobs", "hoist.dev/build")
            .is_empty()
    );
    s.run_image(&built.image, &nonce);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_is_named_with_the_executors_tail_and_nothing_is_left() {
    require_k8s!();
    let s = setup_with(StoreKind::S3, builder(StoreKind::S3, json!({})), None, &[]).await;
    let base = env("HOIST_TEST_REGISTRY_BUSYBOX");
    let source = code_job(
        &s.artifacts,
        &[(
            "Dockerfile",
            &format!("FROM {base}\nRUN echo {} && exit 3\n", unique("boom")),
        )],
    );
    let logs = LogSink::new();
    let e = s.build(source, &logs).await.unwrap_err();
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
    s.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_the_executor_cannot_reach_fails_the_build_naming_it() {
    require_k8s!();
    // The agent uploads to moto; the executor is sent to a closed port.
    let dead = format!("http://{}", closed_port());
    let over = json!({"kaniko-config": {"spec": {"template": {"spec": {"containers": [{
        "env": [{"name": "S3_ENDPOINT", "value": dead}]
    }]}}}}});
    let s = setup_with(StoreKind::S3, builder(StoreKind::S3, over), None, &[]).await;
    let logs = LogSink::new();
    let e = s
        .build(hello_job(&s.artifacts, &unique("n")), &logs)
        .await
        .unwrap_err();
    let text = lines(&logs);
    let m = e.to_string();
    assert!(
        m.contains("error resolving source context"),
        "{m}\n{text:#?}"
    );
    // Where it tried, and what: the endpoint and the context's bucket and key.
    assert!(
        m.contains(&format!("could not reach S3 at {dead}/ctx-")),
        "{m}"
    );
    assert!(m.contains(".tar.gz"), "{m}");
    s.assert_clean();
    // The context the agent uploaded is gone too.
    let key = text
        .iter()
        .find_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("s3://") && w.ends_with(".tar.gz"))
        })
        .unwrap_or_else(|| panic!("no context URL logged: {text:#?}"));
    let key = key.rsplit('/').next().unwrap().trim_end_matches(']');
    s.assert_store_empty(key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_the_agent_cannot_reach_fails_at_once_and_starts_no_job() {
    require_k8s!();
    let dead = format!("http://{}", closed_port());
    let s = setup_with(
        StoreKind::S3,
        builder(StoreKind::S3, json!({})),
        None,
        &[("AWS_ENDPOINT_URL", dead.as_str())],
    )
    .await;
    let logs = LogSink::new();
    let e = s
        .build(hello_job(&s.artifacts, &unique("n")), &logs)
        .await
        .unwrap_err();
    let m = e.to_string();
    assert!(m.contains("build context s3://"), "{m}");
    assert!(m.contains(&dead), "{m}");
    assert!(
        s.services
            .ns
            .kubectl
            .names(&s.services.ns.name, "jobs,secrets", "hoist.dev/build")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_registry_password_fails_before_any_job_naming_the_registry() {
    require_k8s!();
    let s = setup_with(
        StoreKind::S3,
        builder(StoreKind::S3, json!({})),
        Some("not-the-password"),
        &[],
    )
    .await;
    let logs = LogSink::new();
    let e = s
        .build(hello_job(&s.artifacts, &unique("n")), &logs)
        .await
        .unwrap_err();
    let m = e.to_string();
    assert!(m.contains(&s.services.registry_host), "{m}");
    assert!(
        m.contains("401") || m.to_lowercase().contains("credentials"),
        "{m}"
    );
    assert!(!m.contains("not-the-password"), "{m}");
    assert!(
        s.services
            .ns
            .kubectl
            .names(&s.services.ns.name, "jobs,secrets", "hoist.dev/build")
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_past_build_timeout_is_stopped_and_named_and_nothing_is_left() {
    require_k8s!();
    let s = setup_with(
        StoreKind::S3,
        builder(StoreKind::S3, json!({"build-timeout": "20s"})),
        None,
        &[],
    )
    .await;
    let base = env("HOIST_TEST_REGISTRY_BUSYBOX");
    let source = code_job(
        &s.artifacts,
        &[(
            "Dockerfile",
            &format!("FROM {base}\nRUN echo {} && sleep 600\n", unique("slow")),
        )],
    );
    let logs = LogSink::new();
    let e = s.build(source, &logs).await.unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains("did not finish within 20s") && m.contains("builder.build-timeout"),
        "{m}\n{:#?}",
        lines(&logs)
    );
    s.assert_clean();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildah_builds_the_same_pipeline_and_the_image_runs() {
    require_k8s!();
    let s = setup_with(
        StoreKind::S3,
        builder(StoreKind::S3, json!({"type": "buildah"})),
        None,
        &[],
    )
    .await;
    builds_and_runs(&s, "buildah executor").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kaniko_builds_from_gcs() {
    require_k8s!();
    let s = setup_with(
        StoreKind::Gcs,
        builder(StoreKind::Gcs, json!({})),
        None,
        &[],
    )
    .await;
    builds_and_runs(&s, "kaniko executor").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kaniko_builds_from_azure_blob() {
    require_k8s!();
    let s = setup_with(
        StoreKind::Azure,
        builder(StoreKind::Azure, json!({})),
        None,
        &[],
    )
    .await;
    builds_and_runs(&s, "kaniko executor").await;
}

/// A seed's agent config (from `tests/fixtures/agent-configs`), its builder section as
/// written, the store's bucket made in the emulator (an Azure account name becomes
/// Azurite's: the endpoint's account is what signs).
async fn seed(file: &str, kind: StoreKind) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/agent-configs")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    // Accepted as written.
    load_str(&text, file, &|_| None, &ConfigOverrides::default())
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    let cfg: Value = serde_saphyr::from_str(&text).unwrap();
    let mut b = cfg["builder"].clone();
    let url = b["build-context-store"].as_str().unwrap().to_string();
    // A bucket of the test's own, under the seed's prefix.
    let bucket = bucket_of(&url);
    let fresh = unique("seed");
    let mut url = url.replacen(&format!("/{bucket}"), &format!("/{fresh}"), 1);
    if kind == StoreKind::Azure {
        let account = url
            .trim_start_matches("https://")
            .split('.')
            .next()
            .unwrap()
            .to_string();
        url = url.replacen(&account, &env("HOIST_TEST_AZURITE_ACCOUNT"), 1);
    }
    b["build-context-store"] = json!(url);
    let s = setup_with(kind, b, None, &[]).await;
    builds_and_runs(&s, "kaniko executor").await;
}

/// One test per seed config with a kaniko builder (run side by side by nextest).
macro_rules! seed_builds {
    ($($name:ident: $file:literal, $kind:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            require_k8s!();
            seed($file, $kind).await;
        }
    )*};
}

seed_builds! {
    seed_000_kaniko_s3_builds: "000-05-builder-kaniko-s3.yaml", StoreKind::S3;
    seed_000_kaniko_secret_builds: "000-06-builder-kaniko-secret.yaml", StoreKind::S3;
    seed_001_azure_structure_builds: "001-03-structure-azure.yaml", StoreKind::Azure;
    seed_001_kaniko_s3_builds: "001-05-builder-kaniko-s3.yaml", StoreKind::S3;
    seed_001_kaniko_secret_builds: "001-06-builder-kaniko-secret.yaml", StoreKind::S3;
    seed_001_gcs_store_builds: "001-08-kaniko-store-gcs+environment-gcp.yaml", StoreKind::Gcs;
    seed_001_s3_store_builds: "001-09-kaniko-store-s3+environment-aws.yaml", StoreKind::S3;
    seed_001_azure_store_builds: "001-10-kaniko-store-azure+environment-azure.yaml", StoreKind::Azure;
    seed_002_kaniko_s3_builds: "002-02-builder-kaniko-s3.yaml", StoreKind::S3;
    seed_002_kaniko_with_secret_builds: "002-03-builder-kaniko-secret.yaml", StoreKind::S3;
    seed_002_kaniko_config_builds: "002-04-builder-kaniko-config.yaml", StoreKind::S3;
    seed_003_kaniko_gcs_builds: "003-03-builder-kaniko-gcs.yaml", StoreKind::Gcs;
    seed_003_steps_combined_builds: "003-04-steps-combined.yaml", StoreKind::Gcs;
    seed_004_configmap_builds: "004-01-kubernetes-configmap.yaml", StoreKind::Gcs;
}

/// An agent that dies mid-build (here: the build's future is leaked, so none of its
/// clean-up runs, as after `kill -9`) leaves its Job, pod, Secret and context; the next
/// process of the same agent deletes them when it starts (`Builder::sweep`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_died_mid_build_has_its_leftovers_swept_at_restart() {
    require_k8s!();
    let s = setup_with(StoreKind::S3, builder(StoreKind::S3, json!({})), None, &[]).await;
    let base = env("HOIST_TEST_REGISTRY_BUSYBOX");
    let source = code_job(
        &s.artifacts,
        &[(
            "Dockerfile",
            &format!("FROM {base}\nRUN echo {} && sleep 600\n", unique("long")),
        )],
    );
    let logs = LogSink::new();
    let run = run_for(source);
    let mut build = Box::pin(s.pipeline.build(&run, &logs));
    let (kubectl, ns) = (&s.services.ns.kubectl, &s.services.ns.name);
    let running = async {
        hoist_testkit::wait_until_async("the build's executor runs", BUILD_WITHIN, || async {
            let pods = kubectl.json(&[
                "-n",
                ns,
                "get",
                "pods",
                "-l",
                "hoist.dev/build",
                "-o",
                "json",
            ]);
            pods["items"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["status"]["phase"] == "Running"))
        })
        .await;
    };
    tokio::select! {
        r = &mut build => panic!("the build ended: {:?}\n{:#?}", r.map(|b| b.image), lines(&logs)),
        () = running => {}
    }
    // The "crash": nothing of the build's future runs again, its drop neither.
    std::mem::forget(build);
    assert!(!kubectl.names(ns, "jobs", "hoist.dev/build").is_empty());
    assert!(!kubectl.names(ns, "secrets", "hoist.dev/build").is_empty());
    let context = lines(&logs)
        .iter()
        .find_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("s3://") && w.contains(".tar.gz"))
                .map(|w| {
                    w.rsplit('/')
                        .next()
                        .unwrap()
                        .trim_end_matches(']')
                        .to_string()
                })
        })
        .expect("the context's URL is in the log");
    assert!(s.store.size(&context).await.unwrap().is_some());

    // The restarted agent (same name, a new engine) sweeps.
    let again = setup_again(&s).await;
    let n = again.sweep("kaniko-test-agent").await.unwrap();
    assert_eq!(n, 1, "one build Job swept");
    s.assert_clean();
    s.assert_store_empty(&context).await;
}
