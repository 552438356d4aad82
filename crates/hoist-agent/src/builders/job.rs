//! The in-cluster engines (`builder.type: kaniko` and hoist's `buildah`): the build
//! runs as a Kubernetes Job whose executor fetches the context from an object store,
//! builds the Dockerfile and pushes the image; no Docker daemon anywhere.
//!
//! For one build ([`JobEngine`]'s [`Engine::build`], after the pipeline found the tag
//! missing from the registry):
//! 1. Upload the packed context (`.tar.gz`) to `<build-context-store>/<tag>.tar.gz`
//!    ([`ContextStore`]); an object already there with the same size is not uploaded
//!    again. Large contexts go in parts, with progress lines in the run's logs.
//! 2. Create a per-build `kubernetes.io/dockerconfigjson` Secret with the registry's
//!    credentials (when it has any: ECR/GAR/ACR through workload identity have none to
//!    give), mounted as `/kaniko/.docker/config.json`.
//! 3. Create the Job ([`job_object`]): `<build-job-name>-<first 12 hex of the tag>`
//!    in the build namespace (`builder.namespace`, else the agent's default
//!    namespace), `backoffLimit: 0`, `activeDeadlineSeconds` = `builder.build-timeout`,
//!    the executor image, its arguments, the cloud credentials of `secret-name` /
//!    `secret-key` mounted as each cloud's SDK reads them, no service-account token;
//!    then `kaniko-config` deep-merged over all of it ([`merge_kaniko_config`]). The
//!    merged Job goes through the agent's Kubernetes policy, like a run's.
//! 4. Follow the executor's output into the run's logs as it comes (system stream),
//!    noting the Dockerfile step running; the container's end decides: exit 0 is
//!    built and pushed, anything else fails the build naming the step and quoting the
//!    output's tail; the deadline fails it as a timeout; an executor image that cannot
//!    be pulled fails it after [`START_FAILURE_WINDOW`].
//! 5. Delete the Job (its pods with it), the Secret and, unless
//!    `builder.keep-build-context`, the context object: after success, failure and
//!    timeout, and when the build is dropped (a cancelled run: the deletion runs in a
//!    task of its own). An agent that restarts deletes what its earlier process left
//!    ([`Engine::sweep`]): no build is adopted.
//!
//! The requests, for the RBAC rules (`deploy/kubernetes/rbac.yaml`, ClusterRole
//! `hoist-agent-builder`, bound in the build namespace; change both together):
//!
//! | resource | verbs | for |
//! |---|---|---|
//! | `batch` jobs | create, get, list, watch, delete | the build Job; a leftover replaced on 409; the sweep |
//! | pods | get, list, watch, deletecollection | the executor's pod; clean-up |
//! | pods/log | get | the executor's output |
//! | secrets | create, get, list, delete | the per-build registry Secret; the sweep |
//!
//! Build objects carry `hoist.dev/agent`, `hoist.dev/queue`, `hoist.dev/entity` and
//! `hoist.dev/build` (the tag's first 12 hex) labels and the run in a
//! `hoist.dev/build-for` annotation, but never `hoist.dev/run-id`: the run's own
//! objects are found by that label, and a build pod is not one of them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use hoist_context::human_bytes;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret as KubeSecret};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams, PropagationPolicy};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

use super::engine::{BuildRequest, ContextFormat, Engine};
use super::output::Progress;
use super::stores::ContextStore;
use super::{BuildError, job_label};
use crate::config::{Executor, KanikoSecret, KanikoSettings, KubernetesSettings};
use crate::logs::LogSink;
use crate::registries::Registry;
use crate::runners::kubernetes::execution::START_FAILURE_WINDOW;
use crate::runners::kubernetes::spec::{self, LABEL_AGENT, LABEL_ENTITY, LABEL_QUEUE};
use crate::runners::kubernetes::{api, policy};

/// Label of build objects: the first 12 hex digits of the tag.
pub const LABEL_BUILD: &str = "hoist.dev/build";
/// Annotation of build objects: the run the build was started for.
pub const ANNOTATION_BUILD_FOR: &str = "hoist.dev/build-for";
/// Annotation of build Jobs: the context object's URL (deleted by the sweep).
pub const ANNOTATION_CONTEXT: &str = "hoist.dev/context";
/// The executor container's name.
pub const EXECUTOR_CONTAINER: &str = "executor";
/// How much longer than the Job's deadline the agent waits for the build's end.
const DEADLINE_SLACK: Duration = Duration::from_secs(60);
/// Hex digits of the tag in a build Job's name.
const NAME_HEX: usize = 12;

/// What a build Job needs besides the request.
#[derive(Debug, Clone)]
pub struct JobBuild<'a> {
    pub executor: Executor,
    pub image: &'a str,
    pub name: &'a str,
    pub namespace: &'a str,
    pub context_url: &'a str,
    pub dockerfile: &'a str,
    pub destination: &'a str,
    /// The registry is spoken to over plain HTTP (a loopback registry).
    pub insecure_registry: bool,
    pub cache: bool,
    /// Kaniko's `--cache-repo` (a repository next to the image's).
    pub cache_repo: Option<String>,
    pub platform: Option<&'a str>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The per-build registry Secret, if the registry has credentials to give.
    pub registry_secret: Option<&'a str>,
    /// `secret-name` / `secret-key`: the cloud credentials for the context store.
    pub cloud_secret: Option<(&'a KanikoSecret, StoreCloud)>,
    pub deadline: Duration,
    pub kaniko_config: Option<&'a Value>,
}

/// Which cloud's SDK reads the mounted credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreCloud {
    Aws,
    Gcp,
    Azure,
}

/// The executor's arguments, each `--flag=value` (`--flag` alone for booleans).
///
/// Kaniko: its own command line. Buildah: hoist's executor (`deploy/executor/`) in
/// `buildah` mode: `buildah --context=URL --destination=REF [--insecure]
/// --digest-file=PATH -- <buildah bud arguments> .` (the context is fetched as kaniko
/// fetches it; the arguments after `--` go to `buildah bud`).
pub fn executor_args(b: &JobBuild<'_>) -> Vec<String> {
    let mut args = Vec::new();
    if b.executor == Executor::Buildah {
        args.push("buildah".to_string());
    }
    args.push(format!("--context={}", b.context_url));
    if b.executor == Executor::Kaniko {
        args.push(format!("--dockerfile={}", b.dockerfile));
    }
    args.push(format!("--destination={}", b.destination));
    if b.executor == Executor::Kaniko {
        args.push(format!("--cache={}", b.cache));
        if let (true, Some(repo)) = (b.cache, &b.cache_repo) {
            args.push(format!("--cache-repo={repo}"));
        }
        args.push("--snapshot-mode=redo".into());
        args.push("--compressed-caching=false".into());
        if let Some(p) = b.platform {
            args.push(format!("--custom-platform={p}"));
        }
    }
    if b.insecure_registry {
        args.push("--insecure".into());
        if b.executor == Executor::Kaniko {
            args.push("--insecure-pull".into());
        }
    }
    args.push("--digest-file=/dev/termination-log".into());
    if b.executor == Executor::Buildah {
        args.push("--".into());
        args.push("--isolation=chroot".into());
        args.push(format!("--file={}", b.dockerfile));
        if let Some(p) = b.platform {
            args.push(format!("--platform={p}"));
        }
        if !b.cache {
            args.push("--no-cache".into());
        }
        if b.insecure_registry {
            args.push("--tls-verify=false".into());
        }
        args.push(".".into());
    }
    args
}

/// The build Job as hoist writes it, `kaniko-config` merged over it.
pub fn job_object(b: &JobBuild<'_>) -> Result<Value, BuildError> {
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    let mut env = Vec::new();
    if let Some(secret) = b.registry_secret {
        volumes.push(json!({
            "name": "docker-config",
            "secret": {"secretName": secret, "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}
        }));
        mounts.push(
            json!({"name": "docker-config", "mountPath": "/kaniko/.docker", "readOnly": true}),
        );
        env.push(json!({"name": "DOCKER_CONFIG", "value": "/kaniko/.docker"}));
    }
    if let Some((secret, cloud)) = b.cloud_secret {
        match cloud {
            StoreCloud::Aws => {
                volumes.push(json!({
                    "name": "cloud-credentials",
                    "secret": {"secretName": secret.name, "items": [{"key": secret.key, "path": "credentials"}]}
                }));
                mounts.push(json!({"name": "cloud-credentials", "mountPath": "/root/.aws", "readOnly": true}));
                env.push(json!({"name": "AWS_SHARED_CREDENTIALS_FILE", "value": "/root/.aws/credentials"}));
            }
            StoreCloud::Gcp => {
                volumes.push(json!({
                    "name": "cloud-credentials",
                    "secret": {"secretName": secret.name, "items": [{"key": secret.key, "path": "credentials.json"}]}
                }));
                mounts.push(
                    json!({"name": "cloud-credentials", "mountPath": "/secret", "readOnly": true}),
                );
                env.push(json!({"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/secret/credentials.json"}));
            }
            StoreCloud::Azure => {
                // Kaniko reads the storage account key from this variable.
                env.push(json!({
                    "name": "AZURE_STORAGE_ACCESS_KEY",
                    "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key}}
                }));
            }
        }
    }
    let container = json!({
        "name": EXECUTOR_CONTAINER,
        "image": b.image,
        "imagePullPolicy": "IfNotPresent",
        "args": executor_args(b),
        "env": env,
        "volumeMounts": mounts,
        "terminationMessagePolicy": "File",
    });
    let mut job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": b.name,
            "namespace": b.namespace,
            "labels": b.labels,
            "annotations": b.annotations,
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": b.deadline.as_secs().max(1),
            "template": {
                "metadata": {"labels": b.labels, "annotations": b.annotations},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": false,
                    "containers": [container],
                    "volumes": volumes,
                }
            }
        }
    });
    if let Some(over) = b.kaniko_config {
        merge_kaniko_config(&mut job, over)?;
    }
    // Whatever the config says, the Job is the one named here, in this namespace,
    // carrying hoist's labels (the clean-up finds it by them).
    job["metadata"]["name"] = json!(b.name);
    job["metadata"]["namespace"] = json!(b.namespace);
    for (k, v) in &b.labels {
        job["metadata"]["labels"][k] = json!(v);
        job["spec"]["template"]["metadata"]["labels"][k] = json!(v);
    }
    Ok(job)
}

/// Merges `kaniko-config` (a partial Job) over hoist's Job. Its first container is the
/// executor, whatever its name (W&B's examples name none); its `args` (`--key=value`,
/// or `key=value` as W&B writes them) replace hoist's argument of the same flag and add
/// the others; everything else deep-merges ([`hoist_core::merge::deep_merge`]).
pub fn merge_kaniko_config(job: &mut Value, over: &Value) -> Result<(), BuildError> {
    if !over.is_object() {
        return Err(BuildError::Source(
            "builder.kaniko-config: expected a mapping (a partial Kubernetes Job)".into(),
        ));
    }
    let mut over = over.clone();
    let mut extra_args: Option<Vec<String>> = None;
    if let Some(containers) = over
        .pointer_mut("/spec/template/spec/containers")
        .and_then(Value::as_array_mut)
        && let Some(first) = containers.first_mut().and_then(Value::as_object_mut)
    {
        first.insert("name".into(), json!(EXECUTOR_CONTAINER));
        if let Some(args) = first.remove("args") {
            let list = args.as_array().ok_or_else(|| {
                BuildError::Source(
                    "builder.kaniko-config.spec.template.spec.containers[0].args: expected a list of strings".into(),
                )
            })?;
            let mut out = Vec::new();
            for (i, a) in list.iter().enumerate() {
                let s = a.as_str().ok_or_else(|| {
                    BuildError::Source(format!(
                        "builder.kaniko-config.spec.template.spec.containers[0].args[{i}]: expected a string (\"--key=value\")"
                    ))
                })?;
                out.push(normalize_arg(s));
            }
            extra_args = Some(out);
        }
    }
    hoist_core::merge::deep_merge(job, &over);
    if let Some(extra) = extra_args {
        let executor = job
            .pointer_mut("/spec/template/spec/containers/0/args")
            .and_then(Value::as_array_mut);
        if let Some(args) = executor {
            for a in extra {
                let flag = flag_of(&a).to_string();
                args.retain(|x| x.as_str().is_none_or(|x| flag_of(x) != flag));
                // The executor's own flags come before a `--` (buildah mode).
                let at = args
                    .iter()
                    .position(|x| x.as_str() == Some("--"))
                    .unwrap_or(args.len());
                args.insert(at, json!(a));
            }
        }
    }
    Ok(())
}

/// What buildah's chroot isolation needs (mounting `/proc` and bind mounts for `RUN`
/// steps): `SYS_ADMIN` on the executor, and no AppArmor confinement (Debian's and
/// Ubuntu's default profile refuses those mounts). Added by hoist after the agent's
/// policy has checked `kaniko-config` (the policy's allow-lists are for runs; this is
/// hoist's own executor), so the namespace of buildah builds must admit it: pod
/// security `privileged` (`deploy/overlays/buildah`).
fn add_buildah_privilege(job: &mut Value) {
    let c = &mut job["spec"]["template"]["spec"]["containers"][0];
    let caps = &mut c["securityContext"]["capabilities"]["add"];
    if !caps.is_array() {
        *caps = json!([]);
    }
    if let Some(list) = caps.as_array_mut()
        && !list.iter().any(|x| x == "SYS_ADMIN")
    {
        list.push(json!("SYS_ADMIN"));
    }
    let key = format!("container.apparmor.security.beta.kubernetes.io/{EXECUTOR_CONTAINER}");
    let ann = &mut job["spec"]["template"]["metadata"]["annotations"];
    if ann.get(&key).is_none() {
        ann[key.as_str()] = json!("unconfined");
    }
}

/// `key=value` (W&B's form) → `--key=value`.
fn normalize_arg(a: &str) -> String {
    let a = a.trim();
    if a.starts_with('-') {
        a.to_string()
    } else {
        format!("--{a}")
    }
}

/// `--cache=false` → `--cache`.
fn flag_of(a: &str) -> &str {
    a.split_once('=').map_or(a, |(f, _)| f)
}

/// An in-cluster engine: kaniko or buildah.
pub struct JobEngine {
    settings: Arc<KanikoSettings>,
    agent: String,
    client: kube::Client,
    namespace: String,
    registry: Arc<dyn Registry>,
    store: Arc<dyn ContextStore>,
    kubernetes: KubernetesSettings,
    secure_mode: bool,
    cache: bool,
    platform: Option<String>,
}

impl std::fmt::Debug for JobEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobEngine")
            .field("executor", &self.settings.executor)
            .field("namespace", &self.namespace)
            .field("store", &self.store.describe())
            .finish_non_exhaustive()
    }
}

/// What a [`JobEngine`] is made of.
pub struct JobEngineParts {
    pub settings: KanikoSettings,
    /// The agent's name (the `hoist.dev/agent` label of build objects).
    pub agent: String,
    pub client: kube::Client,
    /// Where build Jobs go (`builder.namespace`, else the cluster's default).
    pub namespace: String,
    pub registry: Arc<dyn Registry>,
    pub store: Arc<dyn ContextStore>,
    pub kubernetes: KubernetesSettings,
    pub secure_mode: bool,
    pub cache: bool,
    pub platform: Option<String>,
}

impl JobEngine {
    pub fn new(p: JobEngineParts) -> JobEngine {
        JobEngine {
            settings: Arc::new(p.settings),
            agent: p.agent,
            client: p.client,
            namespace: p.namespace,
            registry: p.registry,
            store: p.store,
            kubernetes: p.kubernetes,
            secure_mode: p.secure_mode,
            cache: p.cache,
            platform: p.platform,
        }
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn secrets(&self) -> Api<KubeSecret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn cluster_error(&self, what: String, e: kube::Error) -> BuildError {
        if api::status_code(&e) == Some(403) {
            let message = format!(
                "{what} in namespace {ns}: {} (the agent's Kubernetes identity needs the ClusterRole hoist-agent-builder of deploy/kubernetes/rbac.yaml bound in namespace {ns}, the build namespace: builder.namespace, else kubernetes.namespace)",
                api::describe(&e),
                ns = self.namespace
            );
            let source = crate::runners::RunnerError::Api {
                message: message.clone(),
                source: Box::new(e),
                transient: false,
            };
            return BuildError::Cluster {
                message,
                source: Box::new(source),
            };
        }
        let source = api::api_error(format!("{what} in namespace {}", self.namespace), e);
        BuildError::Cluster {
            message: source.to_string(),
            source: Box::new(source),
        }
    }

    /// Step 1: the context in the store, unless it is there already.
    async fn upload(
        &self,
        req: &BuildRequest<'_>,
        key: &str,
        logs: &LogSink,
    ) -> Result<(), BuildError> {
        let url = self.store.object_url(key);
        let store_err = |e| BuildError::Store {
            message: format!("build context {url}: {e}"),
            source: e,
        };
        if self.store.size(key).await.map_err(store_err)? == Some(req.context_bytes) {
            logs.system(&format!(
                "[hoist: build context {url} is in the store already]"
            ));
            return Ok(());
        }
        logs.system(&format!(
            "[hoist: uploading the build context ({}) to {url}]",
            human_bytes(req.context_bytes)
        ));
        let started = Instant::now();
        let last = std::sync::Mutex::new((0u64, Instant::now()));
        let progress = |sent: u64, total: u64| {
            let mut l = last.lock().expect("progress");
            let tenth = total.max(1) / 10;
            if sent < total
                && sent.saturating_sub(l.0) < tenth
                && l.1.elapsed() < Duration::from_secs(5)
            {
                return;
            }
            *l = (sent, Instant::now());
            let pct = sent.saturating_mul(100) / total.max(1);
            logs.system(&format!(
                "[hoist: uploading the build context: {} of {} ({pct} %)]",
                human_bytes(sent),
                human_bytes(total)
            ));
        };
        self.store
            .upload(key, req.context, req.context_bytes, &progress)
            .await
            .map_err(store_err)?;
        logs.system(&format!(
            "[hoist: uploaded the build context in {:.1}s]",
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// Step 2: the per-build registry Secret, if the registry has credentials.
    async fn registry_secret(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Option<String>, BuildError> {
        let auth = self
            .registry
            .auth()
            .await
            .map_err(|source| BuildError::Registry {
                message: format!("the registry's credentials for the build: {source}"),
                source,
            })?;
        let Some(auth) = auth else {
            return Ok(None);
        };
        let secret_name = format!("{name}-docker");
        let secret: KubeSecret = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": secret_name, "labels": labels},
            "stringData": {".dockerconfigjson": auth.docker_config_json().expose()},
        }))
        .expect("a Secret");
        match self.secrets().create(&PostParams::default(), &secret).await {
            Ok(_) => {}
            // A leftover of a build of the same tag that was not cleaned up (the
            // agent died): replace it.
            Err(e) if api::status_code(&e) == Some(409) => {
                let _ = self
                    .secrets()
                    .delete(&secret_name, &DeleteParams::default())
                    .await;
                self.secrets()
                    .create(&PostParams::default(), &secret)
                    .await
                    .map_err(|e| {
                        self.cluster_error(
                            format!("creating the build's registry Secret {secret_name}"),
                            e,
                        )
                    })?;
            }
            Err(e) => {
                return Err(self.cluster_error(
                    format!("creating the build's registry Secret {secret_name}"),
                    e,
                ));
            }
        }
        Ok(Some(secret_name))
    }

    /// Steps 2–4 for a context already in the store.
    async fn run_job(
        &self,
        req: &BuildRequest<'_>,
        context_url: &str,
        name: &str,
        labels: BTreeMap<String, String>,
        logs: &LogSink,
    ) -> Result<(), BuildError> {
        let registry_secret = self.registry_secret(name, &labels).await?;
        let mut annotations = BTreeMap::new();
        annotations.insert(ANNOTATION_BUILD_FOR.to_string(), req.run.id.clone());
        annotations.insert(ANNOTATION_CONTEXT.to_string(), context_url.to_string());
        let host = req.image.split('/').next().unwrap_or("");
        let repo = req.image.rsplit_once(':').map_or(req.image, |(r, _)| r);
        let cloud = match self.settings.build_context_store.cloud() {
            crate::config::EnvironmentType::Aws => StoreCloud::Aws,
            crate::config::EnvironmentType::Gcp => StoreCloud::Gcp,
            crate::config::EnvironmentType::Azure => StoreCloud::Azure,
        };
        let b = JobBuild {
            executor: self.settings.executor,
            image: self.settings.executor_image(),
            name,
            namespace: &self.namespace,
            context_url,
            dockerfile: req.dockerfile,
            destination: req.image,
            insecure_registry: crate::environments::http::is_loopback_host(host),
            cache: self.cache,
            cache_repo: Some(format!("{repo}/cache")),
            platform: self.platform.as_deref(),
            labels,
            annotations,
            registry_secret: registry_secret.as_deref(),
            cloud_secret: self.settings.secret.as_ref().map(|s| (s, cloud)),
            deadline: self.settings.build_timeout,
            kaniko_config: self.settings.kaniko_config.as_ref(),
        };
        let mut object = job_object(&b)?;
        let refusals = policy::check(&object, &self.kubernetes, self.secure_mode);
        let refusals: Vec<String> = refusals
            .into_iter()
            .filter(|r| !r.contains("runs the container as root"))
            .collect();
        if !refusals.is_empty() {
            return Err(BuildError::Source(format!(
                "the build Job is refused by this agent's Kubernetes policy (builder.kaniko-config): {}",
                refusals.join("; ")
            )));
        }
        if b.executor == Executor::Buildah {
            add_buildah_privilege(&mut object);
        }
        let job: Job = serde_json::from_value(object).map_err(|e| {
            BuildError::Source(format!(
                "builder.kaniko-config does not make a valid Kubernetes Job: {e}"
            ))
        })?;
        match self.jobs().create(&PostParams::default(), &job).await {
            Ok(_) => {}
            Err(e) if api::status_code(&e) == Some(409) => {
                // A leftover Job of this tag (an agent that died mid-build): replace it.
                self.delete_job(name).await;
                wait_gone(&self.jobs(), name, Duration::from_secs(30)).await;
                self.jobs()
                    .create(&PostParams::default(), &job)
                    .await
                    .map_err(|e| self.cluster_error(format!("creating the build Job {name}"), e))?;
            }
            Err(e) => return Err(self.cluster_error(format!("creating the build Job {name}"), e)),
        }
        logs.system(&format!(
            "[hoist: building {} in the Kubernetes Job {}/{name} ({} executor {})]",
            req.image,
            self.namespace,
            match self.settings.executor {
                Executor::Kaniko => "kaniko",
                Executor::Buildah => "buildah",
            },
            b.image
        ));
        let within = self.settings.build_timeout + DEADLINE_SLACK;
        match tokio::time::timeout(within, self.follow(name, logs)).await {
            Ok(r) => r,
            Err(_) => Err(self.timeout(None)),
        }
    }

    fn timeout(&self, progress: Option<Progress>) -> BuildError {
        let t = self.settings.build_timeout;
        let (step, tail) = match progress {
            Some(p) => (p.step, p.tail.into_vec()),
            None => (None, Vec::new()),
        };
        let at = step
            .as_deref()
            .map(|s| format!(" (at step `{s}`)"))
            .unwrap_or_default();
        BuildError::Build {
            message: format!(
                "the image build did not finish within {}{at} (builder.build-timeout)",
                crate::config::format_duration(t)
            ),
            step,
            output_tail: tail,
            source: None,
        }
    }

    /// Step 4: waits for the executor to start, streams its output, reads its end.
    async fn follow(&self, name: &str, logs: &LogSink) -> Result<(), BuildError> {
        // The Job was created just before: its deadline runs from about now.
        let started = Instant::now();
        let pod = self.executor_pod(name).await?;
        let mut progress = Progress::default();
        // An executor that ended before it was seen running (a context it could not
        // fetch) has its whole output to give too.
        if matches!(pod.1, PodState::Started | PodState::Ended) {
            self.stream(&pod.0, &mut progress, logs).await;
        }
        let mut end = self.container_end(&pod.0, name).await?;
        let near_deadline =
            started.elapsed() + Duration::from_secs(2) >= self.settings.build_timeout;
        if matches!(end, End::Exited(c) if c != 0)
            && near_deadline
            && self.past_deadline(name).await
        {
            // Killed by the Job controller at the deadline, not failed by itself.
            end = End::DeadlineExceeded;
        }
        match end {
            End::Exited(0) => {
                if let Some(d) = end_message(&self.pods(), &pod.0).await {
                    logs.system(&format!("[hoist: pushed {d}]"));
                }
                Ok(())
            }
            End::DeadlineExceeded => Err(self.timeout(Some(progress))),
            End::Exited(code) => {
                let last = progress
                    .tail
                    .last()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("the executor exited with {code}"));
                let message = match &progress.step {
                    Some(step) => format!("the image build failed at step `{step}`: {last}"),
                    None => format!("the image build failed: {last}"),
                };
                Err(BuildError::Build {
                    message,
                    step: progress.step,
                    output_tail: progress.tail.into_vec(),
                    source: None,
                })
            }
            End::Failed(why) => Err(BuildError::Build {
                message: format!("the image build failed: {why}"),
                step: progress.step,
                output_tail: progress.tail.into_vec(),
                source: None,
            }),
        }
    }

    /// The build pod once its executor has started (or ended, or cannot start).
    async fn executor_pod(&self, job: &str) -> Result<(String, PodState), BuildError> {
        let cfg = watcher::Config::default().labels(&format!("job-name={job}"));
        let mut events = watcher(self.pods(), cfg)
            .default_backoff()
            .applied_objects()
            .boxed();
        let mut stuck_since: Option<Instant> = None;
        loop {
            let next = tokio::time::timeout(Duration::from_secs(2), events.next()).await;
            let pod = match next {
                Ok(Some(Ok(p))) => p,
                Ok(Some(Err(e))) => {
                    tracing::debug!(message = "Build pod watch error.", error = %e);
                    continue;
                }
                Ok(None) => {
                    return Err(BuildError::Build {
                        message: format!("the watch of the build Job {job}'s pods ended"),
                        step: None,
                        output_tail: Vec::new(),
                        source: None,
                    });
                }
                Err(_) => {
                    // No news: a stuck pull stays stuck without events.
                    if let Some(since) = stuck_since
                        && since.elapsed() > START_FAILURE_WINDOW
                    {
                        return self.stuck_failure(job).await;
                    }
                    continue;
                }
            };
            let name = pod.metadata.name.clone().unwrap_or_default();
            match pod_state(&pod) {
                PodState::Waiting(None) => {}
                PodState::Waiting(Some(reason)) => {
                    let since = *stuck_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > START_FAILURE_WINDOW {
                        return Err(BuildError::Build {
                            message: format!(
                                "the build's executor cannot start in pod {}/{name}: {reason} (image {}; set builder.{}-image to an image the cluster can pull)",
                                self.namespace,
                                self.settings.executor_image(),
                                match self.settings.executor {
                                    Executor::Kaniko => "kaniko",
                                    Executor::Buildah => "buildah",
                                }
                            ),
                            step: None,
                            output_tail: Vec::new(),
                            source: None,
                        });
                    }
                }
                s @ (PodState::Started | PodState::Ended) => return Ok((name, s)),
            }
        }
    }

    async fn stuck_failure(&self, job: &str) -> Result<(String, PodState), BuildError> {
        let lp = ListParams::default().labels(&format!("job-name={job}"));
        let pods = self.pods().list(&lp).await.map_err(|e| {
            self.cluster_error(format!("listing the pods of the build Job {job}"), e)
        })?;
        for p in pods.items {
            if let PodState::Waiting(Some(reason)) = pod_state(&p) {
                return Err(BuildError::Build {
                    message: format!(
                        "the build's executor cannot start in pod {}/{}: {reason} (image {})",
                        self.namespace,
                        p.metadata.name.unwrap_or_default(),
                        self.settings.executor_image()
                    ),
                    step: None,
                    output_tail: Vec::new(),
                    source: None,
                });
            }
            if matches!(pod_state(&p), PodState::Started | PodState::Ended) {
                let s = pod_state(&p);
                return Ok((p.metadata.name.unwrap_or_default(), s));
            }
        }
        Err(BuildError::Build {
            message: format!(
                "the build Job {}/{job} has no pod that started",
                self.namespace
            ),
            step: None,
            output_tail: Vec::new(),
            source: None,
        })
    }

    /// The executor's output, line by line into the run's logs, until it ends (a
    /// broken stream is reopened, from after the last line read).
    async fn stream(&self, pod: &str, progress: &mut Progress, logs: &LogSink) {
        let mut read = 0usize;
        for _ in 0..5 {
            let lp = LogParams {
                container: Some(EXECUTOR_CONTAINER.into()),
                follow: true,
                ..LogParams::default()
            };
            let Ok(reader) = self.pods().log_stream(pod, &lp).await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            let mut lines = reader.lines();
            let mut n = 0usize;
            let mut broken = false;
            loop {
                match lines.try_next().await {
                    Ok(Some(line)) => {
                        n += 1;
                        // A reopened stream starts from the beginning: skip what was read.
                        if n > read {
                            logs.system(&line);
                            progress.observe(&line);
                            read = n;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {
                        broken = true;
                        break;
                    }
                }
            }
            let ended = self
                .pods()
                .get(pod)
                .await
                .is_ok_and(|p| matches!(pod_state(&p), PodState::Ended));
            if ended || !broken {
                return;
            }
        }
    }

    /// How the executor ended (waiting briefly for the kubelet's status after the
    /// output ended).
    async fn container_end(&self, pod: &str, job: &str) -> Result<End, BuildError> {
        let deadline = Instant::now() + spec_status_lag();
        loop {
            let p = self
                .pods()
                .get_opt(pod)
                .await
                .map_err(|e| self.cluster_error(format!("reading the build pod {pod}"), e))?;
            let Some(p) = p else {
                // The Job controller deletes the pods of a Job past its deadline.
                if let Ok(j) = self.jobs().get(job).await
                    && job_deadline_exceeded(&j)
                {
                    return Ok(End::DeadlineExceeded);
                }
                if Instant::now() > deadline {
                    return Ok(End::Failed(format!(
                        "the build pod {pod} was deleted before its executor ended"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            };
            if let Some(end) = end_of(&p) {
                return Ok(end);
            }
            if Instant::now() > deadline {
                // The Job says why (a deadline) when the pod does not.
                if let Ok(j) = self.jobs().get(job).await
                    && job_deadline_exceeded(&j)
                {
                    return Ok(End::DeadlineExceeded);
                }
                if Instant::now() > deadline + Duration::from_secs(30) {
                    return Ok(End::Failed(format!(
                        "the build pod {pod} reports no end of its executor"
                    )));
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The Job `name` failed at its deadline (the controller records it as it deletes
    /// the pods; waited for briefly).
    async fn past_deadline(&self, name: &str) -> bool {
        let until = Instant::now() + spec_status_lag();
        loop {
            if let Ok(j) = self.jobs().get(name).await
                && job_deadline_exceeded(&j)
            {
                return true;
            }
            if Instant::now() > until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn delete_job(&self, name: &str) {
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        let _ = self.jobs().delete(name, &dp).await;
    }
}

fn spec_status_lag() -> Duration {
    crate::runners::kubernetes::logs::STATUS_LAG
}

/// Where a build pod is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PodState {
    /// Not started; `Some(reason)` when it cannot (an image that cannot be pulled).
    Waiting(Option<String>),
    Started,
    Ended,
}

const STUCK: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "ErrImageNeverPull",
];

fn pod_state(p: &Pod) -> PodState {
    let status = p.status.as_ref();
    if matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Failed" | "Succeeded")
    ) {
        return PodState::Ended;
    }
    let cs = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == EXECUTOR_CONTAINER));
    let Some(state) = cs.and_then(|c| c.state.as_ref()) else {
        return PodState::Waiting(None);
    };
    if state.terminated.is_some() {
        PodState::Ended
    } else if state.running.is_some() {
        PodState::Started
    } else {
        let w = state.waiting.as_ref();
        let reason = w.and_then(|w| w.reason.clone()).unwrap_or_default();
        if STUCK.contains(&reason.as_str()) {
            let msg = w.and_then(|w| w.message.clone()).unwrap_or_default();
            PodState::Waiting(Some(if msg.is_empty() {
                reason
            } else {
                format!("{reason}: {msg}")
            }))
        } else {
            PodState::Waiting(None)
        }
    }
}

/// How the executor ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    Exited(i32),
    DeadlineExceeded,
    Failed(String),
}

fn end_of(p: &Pod) -> Option<End> {
    let status = p.status.as_ref()?;
    if status.reason.as_deref() == Some("DeadlineExceeded") {
        return Some(End::DeadlineExceeded);
    }
    let t = status
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == EXECUTOR_CONTAINER)?
        .state
        .as_ref()?
        .terminated
        .as_ref()?;
    Some(End::Exited(t.exit_code))
}

fn job_deadline_exceeded(j: &Job) -> bool {
    j.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "Failed" && c.reason.as_deref() == Some("DeadlineExceeded"))
        })
}

/// The executor's termination message (the image digest, from `--digest-file`).
async fn end_message(pods: &Api<Pod>, pod: &str) -> Option<String> {
    let p = pods.get(pod).await.ok()?;
    let t = p
        .status?
        .container_statuses?
        .into_iter()
        .find(|c| c.name == EXECUTOR_CONTAINER)?
        .state?
        .terminated?;
    t.message
        .map(|m| m.trim().to_string())
        .filter(|m| m.starts_with("sha256:"))
}

async fn wait_gone(jobs: &Api<Job>, name: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match jobs.get_opt(name).await {
            Ok(None) => return,
            Ok(Some(_)) | Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The build's labels: agent, queue, entity (label-safe) and the tag's prefix.
fn build_labels(agent: &str, req: &BuildRequest<'_>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert(LABEL_AGENT.to_string(), spec::label_value(agent));
    l.insert(LABEL_QUEUE.to_string(), spec::label_value(&req.run.queue));
    l.insert(LABEL_ENTITY.to_string(), spec::label_value(&req.run.entity));
    l.insert(
        LABEL_BUILD.to_string(),
        req.tag[..NAME_HEX.min(req.tag.len())].to_string(),
    );
    l
}

/// Deletes a build's objects: awaited by [`Cleanup::finish`], or in a task of its own
/// when the build is dropped.
struct Cleanup {
    jobs: Api<Job>,
    pods: Api<Pod>,
    secrets: Api<KubeSecret>,
    name: String,
    store: Option<(Arc<dyn ContextStore>, String)>,
    done: bool,
}

impl Cleanup {
    async fn run(
        jobs: Api<Job>,
        pods: Api<Pod>,
        secrets: Api<KubeSecret>,
        name: String,
        store: Option<(Arc<dyn ContextStore>, String)>,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        if let Err(e) = jobs.delete(&name, &dp).await
            && api::status_code(&e) != Some(404)
        {
            problems.push(format!("the build Job {name}: {}", api::describe(&e)));
        }
        let lp = ListParams::default().labels(&format!("job-name={name}"));
        if let Err(e) = pods.delete_collection(&dp, &lp).await
            && api::status_code(&e) != Some(404)
        {
            problems.push(format!(
                "the build Job {name}'s pods: {}",
                api::describe(&e)
            ));
        }
        let secret = format!("{name}-docker");
        if let Err(e) = secrets.delete(&secret, &DeleteParams::default()).await
            && api::status_code(&e) != Some(404)
        {
            problems.push(format!("the build Secret {secret}: {}", api::describe(&e)));
        }
        if let Some((store, key)) = store
            && let Err(e) = store.delete(&key).await
        {
            problems.push(format!("the build context {}: {e}", store.object_url(&key)));
        }
        problems
    }

    async fn finish(mut self, logs: &LogSink) {
        self.done = true;
        let problems = Self::run(
            self.jobs.clone(),
            self.pods.clone(),
            self.secrets.clone(),
            self.name.clone(),
            self.store.take(),
        )
        .await;
        for p in problems {
            logs.warn(&format!("could not delete {p}; delete it by hand"));
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (jobs, pods, secrets, name, store) = (
            self.jobs.clone(),
            self.pods.clone(),
            self.secrets.clone(),
            self.name.clone(),
            self.store.take(),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                for p in Self::run(jobs, pods, secrets, name, store).await {
                    tracing::warn!(message = "A cancelled build's objects could not be deleted.", what = %p);
                }
            });
        }
    }
}

#[async_trait]
impl Engine for JobEngine {
    fn kind(&self) -> &'static str {
        match self.settings.executor {
            Executor::Kaniko => "kaniko",
            Executor::Buildah => "buildah",
        }
    }

    fn context_format(&self) -> ContextFormat {
        ContextFormat::TarGz
    }

    async fn build(&self, req: &BuildRequest<'_>, logs: &LogSink) -> Result<(), BuildError> {
        if !req.push {
            return Err(BuildError::Unsupported(format!(
                "job {}: the {} builder pushes what it builds, and this agent has no registry; configure `registry` (or builder.destination)",
                job_label(req.run),
                self.kind()
            )));
        }
        let key = format!("{}.tar.gz", req.tag);
        let context_url = self.store.object_url(&key);
        let name = spec::object_name(
            Some(&self.settings.build_job_name),
            &req.tag[..NAME_HEX.min(req.tag.len())],
        );
        let cleanup = Cleanup {
            jobs: self.jobs(),
            pods: self.pods(),
            secrets: self.secrets(),
            name: name.clone(),
            store: (!self.settings.keep_build_context).then(|| (self.store.clone(), key.clone())),
            done: false,
        };
        let result = async {
            self.upload(req, &key, logs).await?;
            self.run_job(
                req,
                &context_url,
                &name,
                build_labels(&self.agent, req),
                logs,
            )
            .await
        }
        .await;
        cleanup.finish(logs).await;
        result
    }

    async fn sweep(&self, agent: &str) -> Result<usize, BuildError> {
        let selector = format!("{LABEL_AGENT}={},{LABEL_BUILD}", spec::label_value(agent));
        let lp = ListParams::default().labels(&selector);
        let jobs = self
            .jobs()
            .list(&lp)
            .await
            .map_err(|e| self.cluster_error("listing this agent's build Jobs".into(), e))?;
        let mut n = 0;
        for j in jobs.items {
            let name = j.metadata.name.clone().unwrap_or_default();
            let context = j
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_CONTEXT))
                .cloned();
            let store = match context {
                Some(url) if !self.settings.keep_build_context => url
                    .rsplit('/')
                    .next()
                    .map(|k| (self.store.clone(), k.to_string())),
                _ => None,
            };
            for p in Cleanup::run(self.jobs(), self.pods(), self.secrets(), name, store).await {
                tracing::warn!(message = "A build's leftover could not be deleted.", what = %p);
            }
            n += 1;
        }
        // Registry Secrets whose Job is gone already.
        let secrets = self
            .secrets()
            .list(&lp)
            .await
            .map_err(|e| self.cluster_error("listing this agent's build Secrets".into(), e))?;
        for s in secrets.items {
            if let Some(name) = s.metadata.name {
                let _ = self.secrets().delete(&name, &DeleteParams::default()).await;
            }
        }
        Ok(n)
    }
}

/// The in-cluster builder of an agent config with `builder.type: kaniko|buildah`: the
/// build pipeline with a [`JobEngine`] on the cluster of `kubernetes:` and the store of
/// `build-context-store` (credentials from the agent's environment). Errs with why it
/// cannot be made (no cluster answered, a store that cannot be used), for the agent to
/// say at start and in each build's failure.
pub async fn job_builder(
    cfg: &crate::config::AgentConfig,
    settings: &KanikoSettings,
    registry: Arc<dyn Registry>,
    artifacts: Arc<dyn super::ArtifactSource>,
    env: Option<&Arc<dyn crate::environments::Environment>>,
    agent: String,
) -> Result<super::Pipeline, String> {
    use crate::runners::kubernetes::Cluster;
    const WITHIN: Duration = Duration::from_secs(10);
    let what = match settings.executor {
        Executor::Kaniko => "kaniko",
        Executor::Buildah => "buildah",
    };
    let (cluster, _) = Cluster::connect_checked(&cfg.kubernetes, WITHIN)
        .await
        .map_err(|e| format!("the {what} builder runs builds as Kubernetes Jobs, and no Kubernetes cluster answered when the agent started: {e}"))?;
    let store = super::stores::from_config(&settings.build_context_store, env).map_err(|e| {
        format!(
            "the {what} builder's build-context-store {}: {e}",
            settings.build_context_store.uri()
        )
    })?;
    if let Err(e) = store.check().await {
        tracing::warn!(message = "The build context store cannot be used now; builds will fail until it can.", store = %store.describe(), error = %e);
    }
    let namespace = settings
        .namespace
        .clone()
        .unwrap_or_else(|| cluster.default_namespace.clone());
    let engine = JobEngine::new(JobEngineParts {
        settings: settings.clone(),
        agent,
        client: cluster.client.clone(),
        namespace,
        registry: registry.clone(),
        store,
        kubernetes: cfg.kubernetes.clone(),
        secure_mode: cfg.secure_mode,
        cache: cfg.builder.cache,
        platform: cfg.builder.platform.clone(),
    });
    Ok(super::Pipeline::new(
        Arc::new(engine),
        registry,
        artifacts,
        super::BuildSettings::from_config(&cfg.builder),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The executor's arguments in a build Job.
    fn args_of(job: &Value) -> Vec<&str> {
        job["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect()
    }

    fn build<'a>(
        executor: Executor,
        secret: &'a KanikoSecret,
        config: Option<&'a Value>,
    ) -> JobBuild<'a> {
        let mut labels = BTreeMap::new();
        labels.insert(LABEL_AGENT.to_string(), "a1".to_string());
        labels.insert(LABEL_BUILD.to_string(), "0123456789ab".to_string());
        JobBuild {
            executor,
            image: "cgr.dev/chainguard/kaniko:latest",
            name: "wandb-image-build-0123456789ab",
            namespace: "hoist-runs",
            context_url: "s3://bucket/contexts/0123.tar.gz",
            dockerfile: ".hoist.Dockerfile",
            destination: "127.0.0.1:5001/team/app:0123",
            insecure_registry: true,
            cache: true,
            cache_repo: Some("127.0.0.1:5001/team/app/cache".into()),
            platform: Some("linux/amd64"),
            labels,
            annotations: BTreeMap::new(),
            registry_secret: Some("wandb-image-build-0123456789ab-docker"),
            cloud_secret: Some((secret, StoreCloud::Aws)),
            deadline: Duration::from_secs(1800),
            kaniko_config: config,
        }
    }

    fn secret() -> KanikoSecret {
        KanikoSecret {
            name: "aws-creds".into(),
            key: "credentials".into(),
        }
    }

    #[test]
    fn the_kaniko_job_has_hoists_defaults() {
        let s = secret();
        let job = job_object(&build(Executor::Kaniko, &s, None)).unwrap();
        assert_eq!(job["spec"]["backoffLimit"], 0);
        assert_eq!(job["spec"]["activeDeadlineSeconds"], 1800);
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(pod["automountServiceAccountToken"], false);
        let c = &pod["containers"][0];
        assert_eq!(c["name"], EXECUTOR_CONTAINER);
        let args = args_of(&job);
        assert_eq!(
            args,
            [
                "--context=s3://bucket/contexts/0123.tar.gz",
                "--dockerfile=.hoist.Dockerfile",
                "--destination=127.0.0.1:5001/team/app:0123",
                "--cache=true",
                "--cache-repo=127.0.0.1:5001/team/app/cache",
                "--snapshot-mode=redo",
                "--compressed-caching=false",
                "--custom-platform=linux/amd64",
                "--insecure",
                "--insecure-pull",
                "--digest-file=/dev/termination-log",
            ]
        );
        // Credentials are mounted from Secrets, never literal.
        assert_eq!(c["volumeMounts"][0]["mountPath"], "/kaniko/.docker");
        assert_eq!(
            pod["volumes"][0]["secret"]["secretName"],
            "wandb-image-build-0123456789ab-docker"
        );
        assert_eq!(pod["volumes"][1]["secret"]["secretName"], "aws-creds");
        assert_eq!(c["volumeMounts"][1]["mountPath"], "/root/.aws");
        // Labels on the Job and its pods; never the run's own label.
        assert_eq!(job["metadata"]["labels"][LABEL_BUILD], "0123456789ab");
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"][LABEL_AGENT],
            "a1"
        );
        assert!(job.pointer("/metadata/labels/hoist.dev~1run-id").is_none());
    }

    #[test]
    fn the_buildah_job_passes_bud_arguments_after_the_separator() {
        let s = secret();
        let job = job_object(&build(Executor::Buildah, &s, None)).unwrap();
        let args = args_of(&job);
        assert_eq!(
            args,
            [
                "buildah",
                "--context=s3://bucket/contexts/0123.tar.gz",
                "--destination=127.0.0.1:5001/team/app:0123",
                "--insecure",
                "--digest-file=/dev/termination-log",
                "--",
                "--isolation=chroot",
                "--file=.hoist.Dockerfile",
                "--platform=linux/amd64",
                "--tls-verify=false",
                ".",
            ]
        );
    }

    #[test]
    fn buildah_gets_its_privilege_from_hoist_not_from_the_runs_allow_lists() {
        let s = secret();
        let mut job = job_object(&build(Executor::Buildah, &s, None)).unwrap();
        // What the policy sees: nothing privileged.
        let settings = KubernetesSettings::default();
        assert!(policy::check(&job, &settings, false).is_empty());
        add_buildah_privilege(&mut job);
        add_buildah_privilege(&mut job);
        let c = &job["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            c["securityContext"]["capabilities"]["add"],
            json!(["SYS_ADMIN"])
        );
        assert_eq!(
            job["spec"]["template"]["metadata"]["annotations"]["container.apparmor.security.beta.kubernetes.io/executor"],
            "unconfined"
        );
    }

    /// Seed `002_*`'s `kaniko-config`: an unnamed container with `--cache=false` and an
    /// env var, merged over hoist's Job.
    #[test]
    fn kaniko_config_as_the_seed_writes_it_merges_deeply() {
        let s = secret();
        let config = json!({"spec": {"template": {"spec": {"containers": [{
            "args": ["--cache=false", "verbosity=debug"],
            "env": [{"name": "MY_ENV_VAR", "value": "my-env-var-value"}]
        }]}}}});
        let mut over = config.clone();
        over["metadata"] = json!({"name": "other", "labels": {"team": "ml"}});
        let job = job_object(&build(Executor::Kaniko, &s, Some(&over))).unwrap();
        let c = &job["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            job["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        // The image and mounts of hoist's container are kept.
        assert_eq!(c["image"], "cgr.dev/chainguard/kaniko:latest");
        assert_eq!(c["volumeMounts"].as_array().unwrap().len(), 2);
        let args = args_of(&job);
        assert!(args.contains(&"--cache=false"), "{args:?}");
        assert!(!args.contains(&"--cache=true"), "{args:?}");
        assert!(args.contains(&"--verbosity=debug"), "{args:?}");
        assert!(args.contains(&"--destination=127.0.0.1:5001/team/app:0123"));
        let env = c["env"].as_array().unwrap();
        assert!(env.iter().any(|e| e["name"] == "MY_ENV_VAR"));
        assert!(env.iter().any(|e| e["name"] == "DOCKER_CONFIG"));
        // Name, namespace and hoist's labels stay hoist's; other labels are added.
        assert_eq!(job["metadata"]["name"], "wandb-image-build-0123456789ab");
        assert_eq!(job["metadata"]["labels"]["team"], "ml");
        assert_eq!(job["metadata"]["labels"][LABEL_BUILD], "0123456789ab");
    }

    #[test]
    fn bad_kaniko_config_is_refused_with_its_path() {
        let s = secret();
        let e = job_object(&build(Executor::Kaniko, &s, Some(&json!(["x"])))).unwrap_err();
        assert!(
            e.to_string()
                .contains("builder.kaniko-config: expected a mapping"),
            "{e}"
        );
        let bad = json!({"spec": {"template": {"spec": {"containers": [{"args": ["--a=1", 3]}]}}}});
        let e = job_object(&build(Executor::Kaniko, &s, Some(&bad))).unwrap_err();
        assert!(
            e.to_string()
                .contains("containers[0].args[1]: expected a string"),
            "{e}"
        );
    }

    #[test]
    fn each_cloud_gets_its_credentials_the_way_its_sdk_reads_them() {
        let s = secret();
        for (cloud, check) in [
            (StoreCloud::Gcp, "GOOGLE_APPLICATION_CREDENTIALS"),
            (StoreCloud::Azure, "AZURE_STORAGE_ACCESS_KEY"),
            (StoreCloud::Aws, "AWS_SHARED_CREDENTIALS_FILE"),
        ] {
            let mut b = build(Executor::Kaniko, &s, None);
            b.cloud_secret = Some((&s, cloud));
            let job = job_object(&b).unwrap();
            let env = job["spec"]["template"]["spec"]["containers"][0]["env"]
                .as_array()
                .unwrap()
                .clone();
            let e = env
                .iter()
                .find(|e| e["name"] == check)
                .unwrap_or_else(|| panic!("{check}: {env:?}"));
            if cloud == StoreCloud::Azure {
                assert_eq!(e["valueFrom"]["secretKeyRef"]["name"], "aws-creds");
                assert!(e.get("value").is_none(), "never a literal");
            }
        }
    }

    #[test]
    fn pod_states_and_ends_are_read_from_the_status() {
        let pod = |status: Value| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
        };
        assert_eq!(
            pod_state(&pod(json!({"phase": "Pending"}))),
            PodState::Waiting(None)
        );
        let pulling = pod(json!({"phase": "Pending", "containerStatuses": [{
            "name": EXECUTOR_CONTAINER, "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"x\""}}}]}));
        assert_eq!(
            pod_state(&pulling),
            PodState::Waiting(Some(
                "ImagePullBackOff: Back-off pulling image \"x\"".into()
            ))
        );
        let ended = pod(json!({"phase": "Failed", "containerStatuses": [{
            "name": EXECUTOR_CONTAINER, "image": "x", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 1}}}]}));
        assert_eq!(pod_state(&ended), PodState::Ended);
        assert_eq!(end_of(&ended), Some(End::Exited(1)));
        let deadline = pod(json!({"phase": "Failed", "reason": "DeadlineExceeded"}));
        assert_eq!(end_of(&deadline), Some(End::DeadlineExceeded));
    }
}
