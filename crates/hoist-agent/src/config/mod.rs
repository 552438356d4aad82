//! The agent's configuration: `launch-config.yaml`, `HOIST_*` variables and flags.
//!
//! A W&B user's `launch-config.yaml` works unchanged: every key the W&B Launch
//! documentation shows is read with the same meaning (`entity`, `max_jobs`, `queues`,
//! `base_url`, `environment`, `registry`, `builder`), and so is every key of W&B's
//! agent-config schema (`project`, `max_schedulers`, `secure_mode`, `verbosity`,
//! `stopped_run_timeout`, `builder.destination`, `builder.platform`,
//! `builder.kaniko-image`), with kebab-case and snake_case both accepted where W&B uses
//! either. hoist adds its own keys, documented on [`AgentConfig`].
//!
//! # Example
//!
//! ```yaml
//! entity: ml-team
//! max_jobs: 4                  # -1 = no limit
//! queues: [default, gpu]
//! base_url: https://hoist.example.com
//! environment: {type: aws, region: us-east-1}
//! registry: {type: ecr, repository: launch-images}
//! builder: {type: docker}
//! ```
//!
//! # Loading
//!
//! [`load`] reads the file (default `~/.config/hoist/launch-config.yaml`), then
//! applies `HOIST_*` environment variables, then flags ([`ConfigOverrides`]):
//! defaults < file < environment < flags. The file is first parsed into a generic
//! YAML tree that keeps every node's line and column, then checked key by key, so
//! every problem is reported at once ([`ConfigErrors`]), each as
//! `FILE:LINE:COLUMN: KEY.PATH: what is wrong; expected …`. An unknown key gets a
//! "did you mean" suggestion.
//!
//! Keys of features that come later (kaniko, cloud registries and environments) are
//! parsed and checked now; whether the feature is available is decided where it is
//! used.
//!
//! # Decisions where the W&B documentation is ambiguous
//!
//! - `environment.project` (gcp) is optional: W&B's own Kubernetes example leaves it
//!   out; the project then comes from the registry URI or the default credentials.
//! - An ecr, gcr or acr registry needs the matching environment (as W&B refuses it
//!   otherwise). A registry without `type` is inferred from its URI
//!   (`*.dkr.ecr.*.amazonaws.com` → ecr, `*-docker.pkg.dev` → gcr, `*.azurecr.io` →
//!   acr, anything else → a generic OCI registry).
//! - The ECR URI is accepted both as `ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO` and
//!   in the documentation's `ACCOUNT.ecr.REGION.amazonaws.com/REPO` form; the region
//!   in a registry URI must match the environment's.
//! - The kaniko builder needs `build-context-store`; when an environment is
//!   configured the store's scheme must match it (`s3://` aws, `gs://` gcp,
//!   `https://ACCOUNT.blob.core.windows.net/…` azure). Without an environment the
//!   store's scheme names the cloud (W&B's own kaniko example has no environment).
//! - Keys that the chosen type does not use (`region` on an azure environment,
//!   `secret-name` on a docker builder, …) are ignored with a warning, as W&B ignores
//!   them, rather than refused.
//! - `queues` defaults to `[default]`, `max_jobs` to 1, as in W&B.
//! - Strings like `<aws-region>` are refused as documentation placeholders.
//! - `builder.destination` (W&B's newer spelling of the registry: "an image repository
//!   URI") is read exactly as `registry: {uri: DESTINATION}` — type inferred from the
//!   URI, the same environment checks — and becomes [`AgentConfig::registry`], for
//!   every builder; giving both `registry` and `builder.destination` is an error.
//! - `secure_mode` keeps W&B's name; in hoist it means that every privileged setting of
//!   a queue config is refused, whatever the `docker` / `kubernetes` allow-lists say.
//!   No `HOIST_*` variable sets it (an environment variable should not be able to turn
//!   it off behind the file's back), nor `max_requeues` (`HOIST_MAX_REQUEUES` is the
//!   server's, and `hoist up` runs both in one environment).

mod error;
mod read;
mod render;
mod resolve;
mod tree;
mod values;

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

pub use error::{ConfigError, ConfigErrors, Origin};
pub use values::{format_duration, parse_duration};

/// The config file's name.
pub const CONFIG_FILE_NAME: &str = "launch-config.yaml";
/// Base image of the Dockerfiles hoist generates.
pub const DEFAULT_BASE_IMAGE: &str = "python:3.12-slim";
/// Default name prefix of kaniko build Jobs.
pub const DEFAULT_BUILD_JOB_NAME: &str = "hoist-image-build";
/// Default queue polled when none is configured.
pub const DEFAULT_QUEUE: &str = "default";
/// Default grace period between a stop request and a kill.
pub const DEFAULT_STOPPED_RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Default bound on how often a preempted run goes back to its queue.
pub const DEFAULT_MAX_REQUEUES: u32 = 3;
/// Default time a run may take to start before it is failed.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(300);

/// The environment variables [`load`] reads, in the order they are applied.
pub const ENV_VARS: &[&str] = &[
    "HOIST_ENTITY",
    "HOIST_QUEUES",
    "HOIST_MAX_JOBS",
    "HOIST_AGENT_NAME",
    "HOIST_HOST",
    "HOIST_BASE_URL",
    "HOIST_BUILDER",
    "HOIST_STOPPED_RUN_TIMEOUT",
    "HOIST_START_TIMEOUT",
];

/// The resolved, typed agent configuration.
///
/// Keys, as written in `launch-config.yaml` (W&B's first, then hoist's own):
///
/// | key | type | default |
/// |-----|------|---------|
/// | `entity` | entity name | the logged-in user |
/// | `project` | project name; accepted for W&B compatibility (W&B logs the agent's own run there), unused: every run names its own project | none |
/// | `max_jobs` (`max-jobs`) | positive integer, or -1 = no limit | 1 |
/// | `queues` | list of `QUEUE` or `ENTITY/QUEUE` (a single string is a list of one) | `[default]` |
/// | `base_url` (`base-url`) | `http(s)://HOST[:PORT][/PATH]` of the hoist server | the logged-in server |
/// | `environment` | [`EnvironmentConfig`] | none |
/// | `registry` | [`RegistryConfig`] | the local Docker daemon |
/// | `builder` | [`BuilderConfig`] | docker |
/// | `verbosity` | 0–3 | 0 |
/// | `max_schedulers` (`max-schedulers`) | as `max_jobs`; accepted for W&B compatibility (sweep schedulers), unused | 1 |
/// | `name` | agent name | [`default_agent_name`] |
/// | `docker` | [`DockerSettings`] | nothing dangerous allowed |
/// | `kubernetes` | [`KubernetesSettings`] | inferred client config; nothing dangerous allowed |
/// | `secure_mode` (`secure-mode`) | bool: refuse every privileged setting of a queue config (docker and kubernetes), whatever the allow-lists say | false |
/// | `max_requeues` (`max-requeues`) | integer ≥ 0: a run preempted on this agent goes back to its queue only while it was handed to agents at most this many times (`Run::attempts`); then it fails | 3 |
/// | `local-process` (`local_process`) | [`LocalProcessSettings`] | |
/// | `env-allow-list` (`env_allow_list`) | list of agent environment variable names that queue-config macros may use even though their names look secret | empty |
/// | `stopped_run_timeout` (`stopped-run-timeout`) | duration: grace period between stop and kill | 60s |
/// | `start_timeout` (`start-timeout`) | duration: a run not running after this long fails | 5m |
/// | `heartbeat_interval` (`heartbeat-interval`) | duration: heartbeat at least this often | what the server asks for |
///
/// Durations are integers (seconds) or strings such as `"90s"`, `"5m"`, `"1h30m"`.
/// Credentials never go in this file: they come from `~/.config/hoist/credentials.yaml`
/// (`hoist login`) or `HOIST_API_KEY`.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// `name`: the agent's name; `None` = [`default_agent_name`].
    pub name: Option<String>,
    /// `entity`: the entity whose queues are meant by bare queue names.
    pub entity: Option<String>,
    /// W&B's `project` (where W&B's agent logs itself); accepted, not used by hoist.
    pub project: Option<String>,
    /// `queues`: `QUEUE` or `ENTITY/QUEUE`, without duplicates.
    pub queues: Vec<String>,
    pub max_jobs: MaxJobs,
    /// W&B's `max_schedulers` (sweep schedulers); accepted, not used by hoist.
    pub max_schedulers: MaxJobs,
    /// `base_url`, without a trailing slash.
    pub base_url: Option<String>,
    pub environment: Option<EnvironmentConfig>,
    pub registry: RegistryConfig,
    pub builder: BuilderConfig,
    pub docker: DockerSettings,
    pub kubernetes: KubernetesSettings,
    /// W&B's `secure_mode`: every privileged setting is refused, whatever the
    /// `docker`/`kubernetes` allow-lists say.
    pub secure_mode: bool,
    /// A run preempted more often than this fails instead of going back to its queue.
    pub max_requeues: u32,
    pub local_process: LocalProcessSettings,
    pub env_allow_list: Vec<String>,
    pub stopped_run_timeout: Duration,
    pub start_timeout: Duration,
    pub heartbeat_interval: Option<Duration>,
    /// 0 = warnings, 1 = info, 2 = debug, 3 = trace.
    pub verbosity: u8,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            name: None,
            entity: None,
            project: None,
            queues: vec![DEFAULT_QUEUE.to_string()],
            max_jobs: MaxJobs::default(),
            max_schedulers: MaxJobs::default(),
            base_url: None,
            environment: None,
            registry: RegistryConfig::Local,
            builder: BuilderConfig::default(),
            docker: DockerSettings::default(),
            kubernetes: KubernetesSettings::default(),
            secure_mode: false,
            max_requeues: DEFAULT_MAX_REQUEUES,
            local_process: LocalProcessSettings::default(),
            env_allow_list: Vec::new(),
            stopped_run_timeout: DEFAULT_STOPPED_RUN_TIMEOUT,
            start_timeout: DEFAULT_START_TIMEOUT,
            heartbeat_interval: None,
            verbosity: 0,
        }
    }
}

impl AgentConfig {
    /// The configured name, or [`default_agent_name`] for `host`.
    pub fn agent_name(&self, host: &str) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| default_agent_name(host, self))
    }

    /// The resolved configuration as YAML that [`load`] reads back, with every value
    /// that looks secret masked (for `hoist agent --check-config`).
    pub fn render_resolved(&self) -> String {
        render::render(self)
    }
}

/// How many runs an agent runs at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxJobs {
    /// `-1`.
    Unlimited,
    Limit(NonZeroU32),
}

impl Default for MaxJobs {
    fn default() -> Self {
        MaxJobs::Limit(NonZeroU32::MIN)
    }
}

impl MaxJobs {
    /// The W&B / wire form: the limit, or -1.
    pub fn as_i64(self) -> i64 {
        match self {
            MaxJobs::Unlimited => -1,
            MaxJobs::Limit(n) => i64::from(n.get()),
        }
    }

    /// Whether one more run may start when `running` are running.
    pub fn allows_another(self, running: usize) -> bool {
        match self {
            MaxJobs::Unlimited => true,
            MaxJobs::Limit(n) => running < n.get() as usize,
        }
    }

    /// From the W&B form: a positive integer or -1.
    pub fn from_i64(n: i64) -> Result<Self, String> {
        const FORM: &str = "expected a positive integer, or -1 for no limit";
        match n {
            -1 => Ok(MaxJobs::Unlimited),
            n if n >= 1 => u32::try_from(n)
                .ok()
                .and_then(NonZeroU32::new)
                .map(MaxJobs::Limit)
                .ok_or_else(|| format!("{n} is too large; {FORM}")),
            n => Err(format!("invalid value {n}; {FORM}")),
        }
    }
}

/// The cloud the agent runs in (`environment.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvironmentType {
    Aws,
    Gcp,
    Azure,
}

impl EnvironmentType {
    pub const ALL: [EnvironmentType; 3] = [Self::Aws, Self::Gcp, Self::Azure];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aws => "aws",
            Self::Gcp => "gcp",
            Self::Azure => "azure",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// `environment`: the cloud whose default credential chain the agent uses.
///
/// ```yaml
/// environment: {type: aws, region: us-east-1}          # region required
/// environment: {type: gcp, region: us-central1, project: my-project}
/// environment: {type: azure}                          # no other keys
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvironmentConfig {
    Aws {
        region: String,
    },
    /// `project` may be left out (W&B's Kubernetes example does): it then comes from
    /// the registry URI or from the default credentials.
    Gcp {
        region: String,
        project: Option<String>,
    },
    Azure,
}

impl EnvironmentConfig {
    pub fn kind(&self) -> EnvironmentType {
        match self {
            Self::Aws { .. } => EnvironmentType::Aws,
            Self::Gcp { .. } => EnvironmentType::Gcp,
            Self::Azure => EnvironmentType::Azure,
        }
    }
}

/// `registry.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryType {
    Ecr,
    Gcr,
    Acr,
    /// Any OCI registry (`type: oci`, or no `type` and a URI of no known cloud).
    Oci,
}

impl RegistryType {
    pub const ALL: [RegistryType; 4] = [Self::Ecr, Self::Gcr, Self::Acr, Self::Oci];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ecr => "ecr",
            Self::Gcr => "gcr",
            Self::Acr => "acr",
            Self::Oci => "oci",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// `registry`: where built images are pushed. Absent: images stay in the local
/// Docker daemon.
///
/// ```yaml
/// registry: {type: ecr, uri: 123456789012.dkr.ecr.us-east-1.amazonaws.com/my-repo}  # or repository: my-repo
/// registry: {type: gcr, uri: us-central1-docker.pkg.dev/my-project/my-repo/my-image} # or repository + image-name
/// registry: {type: acr, uri: https://my-registry.azurecr.io/my-repository}
/// registry: {uri: 127.0.0.1:5000/hoist, credentials-file: ~/.docker/config.json}      # any OCI registry
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryConfig {
    Local,
    Ecr(EcrRegistry),
    Gcr(GcrRegistry),
    Acr(AcrRegistry),
    Oci(OciRegistry),
}

impl RegistryConfig {
    pub fn kind(&self) -> Option<RegistryType> {
        match self {
            Self::Local => None,
            Self::Ecr(_) => Some(RegistryType::Ecr),
            Self::Gcr(_) => Some(RegistryType::Gcr),
            Self::Acr(_) => Some(RegistryType::Acr),
            Self::Oci(_) => Some(RegistryType::Oci),
        }
    }

    /// The repository URI images are pushed to, when known without asking the cloud.
    pub fn uri(&self) -> Option<String> {
        match self {
            Self::Local => None,
            Self::Ecr(r) => r.uri(),
            Self::Gcr(r) => r.uri(),
            Self::Acr(r) => Some(r.uri()),
            Self::Oci(r) => Some(r.uri()),
        }
    }
}

/// An AWS Elastic Container Registry repository (needs an aws environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrRegistry {
    /// The environment's region (equal to the URI's, when a URI is given).
    pub region: String,
    /// From the URI; `None` when only `repository` is given (then the account of the
    /// agent's credentials).
    pub account_id: Option<String>,
    pub repository: String,
}

impl EcrRegistry {
    pub fn host(&self) -> Option<String> {
        self.account_id
            .as_ref()
            .map(|a| format!("{a}.dkr.ecr.{}.amazonaws.com", self.region))
    }

    pub fn uri(&self) -> Option<String> {
        self.host().map(|h| format!("{h}/{}", self.repository))
    }
}

/// A GCP Artifact Registry image (needs a gcp environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcrRegistry {
    pub region: String,
    /// From the URI or the environment; `None` = the default credentials' project.
    pub project: Option<String>,
    pub repository: String,
    pub image_name: String,
}

impl GcrRegistry {
    pub fn uri(&self) -> Option<String> {
        self.project.as_ref().map(|p| {
            format!(
                "{}-docker.pkg.dev/{p}/{}/{}",
                self.region, self.repository, self.image_name
            )
        })
    }
}

/// An Azure Container Registry repository (needs an azure environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcrRegistry {
    /// `NAME` in `NAME.azurecr.io`.
    pub registry: String,
    pub repository: String,
}

impl AcrRegistry {
    pub fn host(&self) -> String {
        format!("{}.azurecr.io", self.registry)
    }

    pub fn uri(&self) -> String {
        format!("{}/{}", self.host(), self.repository)
    }
}

/// Any OCI registry, e.g. a self-hosted `registry:2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciRegistry {
    /// `HOST[:PORT]`.
    pub host: String,
    pub repository: String,
    /// The URI was written `http://…` (allowed for loopback hosts only; checked when
    /// the registry is used).
    pub plain_http: bool,
    /// `credentials-file` (alias `secret-file`): a Docker `config.json` with the
    /// registry's credentials.
    pub credentials_file: Option<PathBuf>,
}

impl OciRegistry {
    pub fn uri(&self) -> String {
        let scheme = if self.plain_http { "http://" } else { "" };
        format!("{scheme}{}/{}", self.host, self.repository)
    }
}

/// `builder.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuilderType {
    Docker,
    Kaniko,
    Buildah,
    Noop,
}

impl BuilderType {
    pub const ALL: [BuilderType; 4] = [Self::Docker, Self::Kaniko, Self::Buildah, Self::Noop];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Kaniko => "kaniko",
            Self::Buildah => "buildah",
            Self::Noop => "noop",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// `builder`: how images are built for jobs from code.
///
/// ```yaml
/// builder:
///   type: kaniko                       # docker (default) | kaniko | buildah | noop
///   destination: 123456789012.dkr.ecr.us-east-1.amazonaws.com/my-repo  # = registry: {uri: …}
///   platform: linux/amd64              # what kaniko builds for (docker: the daemon's)
///   build-context-store: s3://my-bucket/build-contexts/
///   build-job-name: wandb-image-build  # name prefix of the build Jobs (≤ 50 characters)
///   secret-name: kaniko-credentials    # Kubernetes secret with cloud credentials…
///   secret-key: credentials            # …and the key in it (both or neither)
///   kaniko-config: {spec: …}           # a partial Job, merged into the build Job
///   kaniko-image: gcr.io/kaniko-project/executor:v1.23.2  # the kaniko executor image
///   buildah-image: registry.example.com/hoist-executor:1  # hoist: the buildah executor image
///   build-timeout: 30m                 # hoist: the build Job's deadline (1s to 24h)
///   keep-build-context: false          # hoist: leave the context in the store
///   namespace: hoist-runs              # hoist: where build Jobs run
///   base-image: python:3.12-slim       # hoist: base of generated Dockerfiles
///   cache: true                        # hoist: use layer caches
/// ```
///
/// Every key from `build-context-store` to `namespace` is for the in-cluster builders
/// (`kaniko`, `buildah`); the docker and noop builders ignore them with a warning, and
/// each in-cluster builder ignores the other's executor image with a warning.
///
/// `destination` is not kept here: it is the registry ([`AgentConfig::registry`]), read
/// as `registry: {uri: …}` would be.
#[derive(Debug, Clone, PartialEq)]
pub struct BuilderConfig {
    pub kind: BuilderKind,
    /// `platform` (W&B): `OS/ARCH[/VARIANT]` the images are built for (`linux/amd64`,
    /// `linux/arm64`); `None`: the build machine's. For the kaniko builder; the docker
    /// builder builds for its daemon's platform and warns that it ignores it.
    pub platform: Option<String>,
    /// `base-image` (hoist): the base image of the Dockerfiles hoist generates.
    pub base_image: String,
    /// `cache` (hoist): whether builds may reuse cached layers. Default true.
    pub cache: bool,
}

impl Default for BuilderConfig {
    fn default() -> Self {
        BuilderConfig {
            kind: BuilderKind::Docker,
            platform: None,
            base_image: DEFAULT_BASE_IMAGE.to_string(),
            cache: true,
        }
    }
}

impl BuilderConfig {
    pub fn kind_type(&self) -> BuilderType {
        match &self.kind {
            BuilderKind::Docker => BuilderType::Docker,
            BuilderKind::Kaniko(k) => match k.executor {
                Executor::Kaniko => BuilderType::Kaniko,
                Executor::Buildah => BuilderType::Buildah,
            },
            BuilderKind::Noop => BuilderType::Noop,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum BuilderKind {
    /// Builds through the local Docker Engine API.
    Docker,
    /// Builds in a Kubernetes Job (`kaniko` or `buildah`: [`KanikoSettings::executor`]).
    Kaniko(Box<KanikoSettings>),
    /// Prebuilt images only.
    Noop,
}

/// The in-cluster builders (`kaniko`, and hoist's `buildah`): the context goes to an
/// object store, the build runs as a Kubernetes Job.
#[derive(Debug, Clone, PartialEq)]
pub struct KanikoSettings {
    /// Which executor the build Job runs (`builder.type`).
    pub executor: Executor,
    pub build_context_store: BuildContextStore,
    pub build_job_name: String,
    pub secret: Option<KanikoSecret>,
    /// `kaniko-config`: a partial Kubernetes Job, merged into the build Job.
    pub kaniko_config: Option<serde_json::Value>,
    /// `kaniko-image` (W&B): the kaniko executor image; `None`: the builder's default
    /// ([`DEFAULT_KANIKO_IMAGE`]).
    pub kaniko_image: Option<String>,
    /// `buildah-image` (hoist): the buildah executor image; `None`: the builder's
    /// default ([`DEFAULT_BUILDAH_IMAGE`]).
    pub buildah_image: Option<String>,
    /// `build-timeout` (hoist): the build Job's active deadline.
    pub build_timeout: Duration,
    /// `keep-build-context` (hoist): leave the uploaded context in the store after the
    /// build (default: deleted).
    pub keep_build_context: bool,
    /// `namespace` (hoist): where build Jobs run; `None`: `kubernetes.namespace`, else
    /// the agent's service account's namespace, else `default`.
    pub namespace: Option<String>,
}

impl KanikoSettings {
    /// The executor image the build Job runs.
    pub fn executor_image(&self) -> &str {
        match self.executor {
            Executor::Kaniko => self.kaniko_image.as_deref().unwrap_or(DEFAULT_KANIKO_IMAGE),
            Executor::Buildah => self
                .buildah_image
                .as_deref()
                .unwrap_or(DEFAULT_BUILDAH_IMAGE),
        }
    }
}

/// The executor of an in-cluster build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executor {
    /// Kaniko's command line (`--context`, `--dockerfile`, `--destination`, …).
    Kaniko,
    /// `buildah bud` + `buildah push`, through hoist's executor script
    /// (`deploy/executor/`).
    Buildah,
}

/// Default executor image of `builder.type: kaniko`: Chainguard's maintained Kaniko
/// fork (upstream `gcr.io/kaniko-project/executor` was archived in June 2025; its
/// last image, v1.23.2, still works with `builder.kaniko-image`). Pin it by digest in
/// production (`builder.kaniko-image: cgr.dev/chainguard/kaniko@sha256:…`).
pub const DEFAULT_KANIKO_IMAGE: &str = "cgr.dev/chainguard/kaniko:latest";
/// Default executor image of `builder.type: buildah`: hoist's executor
/// (`deploy/executor/Dockerfile`), which operators build and push themselves; change
/// it with `builder.buildah-image`.
pub const DEFAULT_BUILDAH_IMAGE: &str = "hoist-executor:latest";
/// Default active deadline of a build Job (`builder.build-timeout`).
pub const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// `secret-name` + `secret-key`: a Kubernetes secret holding cloud credentials for
/// kaniko on clusters without workload identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KanikoSecret {
    pub name: String,
    pub key: String,
}

/// Where build contexts are uploaded for kaniko.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildContextStore {
    S3 {
        bucket: String,
        prefix: String,
    },
    Gcs {
        bucket: String,
        prefix: String,
    },
    AzureBlob {
        account: String,
        container: String,
        prefix: String,
    },
}

impl BuildContextStore {
    /// The cloud the store belongs to.
    pub fn cloud(&self) -> EnvironmentType {
        match self {
            Self::S3 { .. } => EnvironmentType::Aws,
            Self::Gcs { .. } => EnvironmentType::Gcp,
            Self::AzureBlob { .. } => EnvironmentType::Azure,
        }
    }

    /// The store as a URI (prefix with a trailing slash).
    pub fn uri(&self) -> String {
        let with = |base: String, prefix: &str| {
            if prefix.is_empty() {
                base
            } else {
                format!("{base}{prefix}/")
            }
        };
        match self {
            Self::S3 { bucket, prefix } => with(format!("s3://{bucket}/"), prefix),
            Self::Gcs { bucket, prefix } => with(format!("gs://{bucket}/"), prefix),
            Self::AzureBlob {
                account,
                container,
                prefix,
            } => with(
                format!("https://{account}.blob.core.windows.net/{container}/"),
                prefix,
            ),
        }
    }
}

/// `docker` (hoist): what the docker runner may do. Everything dangerous is off
/// unless listed here; a queue config asking for more is refused.
///
/// ```yaml
/// docker:
///   host: unix:///var/run/docker.sock   # or tcp://127.0.0.1:2375 (loopback only)
///   allow-privileged: false
///   allow-cap-add: [SYS_PTRACE]
///   allow-devices: [/dev/nvidia0]
///   allow-host-network: false
///   allow-host-pid: false
///   allow-host-ipc: false
///   volume-allow-list: [/data/datasets]  # host path prefixes volumes may mount
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DockerSettings {
    /// `None`: `DOCKER_HOST`, else the default socket.
    pub host: Option<DockerHost>,
    pub allow_privileged: bool,
    /// Capabilities, upper case without `CAP_`.
    pub allow_cap_add: Vec<String>,
    pub allow_devices: Vec<PathBuf>,
    pub allow_host_network: bool,
    pub allow_host_pid: bool,
    pub allow_host_ipc: bool,
    pub volume_allow_list: Vec<PathBuf>,
    /// Not a key of this section: the top-level `secure_mode`, copied here so that the
    /// docker runner refuses every privileged option whatever the lists above say.
    pub secure_mode: bool,
}

/// `kubernetes` (hoist): the Kubernetes runner's client and what it lets a queue config
/// do. Everything privileged is refused unless allowed here (and `secure_mode` refuses
/// it whatever these say).
///
/// ```yaml
/// kubernetes:
///   kubeconfig: ~/.kube/config      # else in-cluster, KUBECONFIG, ~/.kube/config
///                                   # (absolute, or ~/…)
///   context: my-cluster             # a context of that kubeconfig
///   namespace: ml-jobs              # runs' namespace when the queue config names none
///   allow-privileged: false         # securityContext.privileged, procMount, unconfined profiles
///   allow-privilege-escalation: false
///   allow-cap-add: [SYS_PTRACE]     # capabilities a container may add (CAP_ and case
///                                   # are normalised: cap_sys_ptrace = SYS_PTRACE; ALL)
///   allow-host-network: false
///   allow-host-pid: false
///   allow-host-ipc: false
///   host-path-allow-list: [/data]   # hostPath volumes under these absolute paths
///   require-non-root: false         # refuse pods that may run as root
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KubernetesSettings {
    /// `None`: in-cluster, else `KUBECONFIG`, else `~/.kube/config` (as kube-rs infers).
    pub kubeconfig: Option<PathBuf>,
    /// A context of the kubeconfig; `None`: its current context.
    pub context: Option<String>,
    /// A DNS label; `None`: the context's namespace, else `default`.
    pub namespace: Option<String>,
    pub allow_privileged: bool,
    pub allow_privilege_escalation: bool,
    /// Capabilities, upper case without `CAP_`.
    pub allow_cap_add: Vec<String>,
    pub allow_host_network: bool,
    pub allow_host_pid: bool,
    pub allow_host_ipc: bool,
    pub host_path_allow_list: Vec<PathBuf>,
    pub require_non_root: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerHost {
    Unix(PathBuf),
    /// Loopback only.
    Tcp {
        host: String,
        port: u16,
    },
}

impl std::fmt::Display for DockerHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DockerHost::Unix(p) => write!(f, "unix://{}", p.display()),
            DockerHost::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

/// `local-process` (hoist): the local-process runner.
///
/// ```yaml
/// local-process:
///   work-dir: ~/hoist-runs          # base of each run's working directory
///   allow-env-passthrough: false    # whether runs inherit the agent's environment
///   keep-failed-run-dirs: false     # keep a failed run's directory for a look
///   max-run-dir-bytes: 10g          # a run's directory may hold this much
/// ```
///
/// - `allow-env-passthrough: false` (the default): a job gets only a minimal base of
///   the agent's environment ([`BASE_ENV`] and `LC_*`), plus the queue config's `env`,
///   the run's own env and hoist's `HOIST_*` variables. `true`: the agent's whole
///   environment, minus the variables whose names look secret or whose values look like
///   credentials, unless `env-allow-list` names them.
/// - Each run's directory (`<work-dir>/<run id>`: its checked-out source, its default
///   working directory) is deleted when the run ends; after a failure only when
///   `keep-failed-run-dirs` is false.
/// - `max-run-dir-bytes` (bytes, or a number with a unit: `512m`, `10g`) caps a code
///   artifact's unpacked size, and a running job whose directory grows beyond it is
///   stopped and failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalProcessSettings {
    /// `None`: a directory under the agent's data directory.
    pub work_dir: Option<PathBuf>,
    pub allow_env_passthrough: bool,
    pub keep_failed_run_dirs: bool,
    pub max_run_dir_bytes: u64,
}

/// What a local job gets of the agent's environment when `allow-env-passthrough` is
/// false (besides every `LC_*` variable): enough for programs to find each other, to
/// know who and where they are, and to speak the right language.
pub const BASE_ENV: &[&str] = &[
    "PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL",
];

/// Default of `local-process.max-run-dir-bytes`: 10 GiB.
pub const DEFAULT_MAX_RUN_DIR_BYTES: u64 = 10 << 30;

impl Default for LocalProcessSettings {
    fn default() -> Self {
        LocalProcessSettings {
            work_dir: None,
            allow_env_passthrough: false,
            keep_failed_run_dirs: false,
            max_run_dir_bytes: DEFAULT_MAX_RUN_DIR_BYTES,
        }
    }
}

/// What command-line flags give; `None` / empty = not given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigOverrides {
    pub entity: Option<String>,
    /// Empty = not given.
    pub queues: Vec<String>,
    /// -1 = no limit.
    pub max_jobs: Option<i64>,
    pub name: Option<String>,
    pub base_url: Option<String>,
    /// `docker`, `kaniko` or `noop`.
    pub builder: Option<String>,
    pub stopped_run_timeout: Option<Duration>,
    pub start_timeout: Option<Duration>,
    pub heartbeat_interval: Option<Duration>,
    pub verbosity: Option<u8>,
}

/// A successfully loaded configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedConfig {
    pub config: AgentConfig,
    /// The file that was read, if any.
    pub path: Option<PathBuf>,
    /// Things that are accepted but probably not what was meant (keys the chosen type
    /// ignores, a queue listed twice, …).
    pub warnings: Vec<ConfigError>,
}

/// `~/.config/hoist/launch-config.yaml`, from `HOME` as `env` gives it.
pub fn default_config_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let home = env("HOME").filter(|h| !h.is_empty())?;
    Some(
        Path::new(&home)
            .join(".config")
            .join("hoist")
            .join(CONFIG_FILE_NAME),
    )
}

/// Loads the agent configuration: defaults < `path` (or the default file, when it
/// exists) < `HOIST_*` variables (read through `env`) < `overrides`.
///
/// A missing default file means defaults; a missing file given explicitly is an error.
/// Every problem found is returned at once.
pub fn load(
    path: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    overrides: &ConfigOverrides,
) -> Result<LoadedConfig, ConfigErrors> {
    let (file, explicit) = match path {
        Some(p) => (Some(p.to_path_buf()), true),
        None => (default_config_path(env), false),
    };
    let Some(file) = file else {
        return resolve::load_text(None, "", env, overrides);
    };
    let shown = file.display().to_string();
    match std::fs::read(&file) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => {
                let mut loaded = resolve::load_text(Some(&shown), &text, env, overrides)?;
                loaded.path = Some(file);
                Ok(loaded)
            }
            Err(_) => Err(ConfigErrors(vec![file_error(
                &shown,
                "the file is not UTF-8 text".to_string(),
            )])),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            resolve::load_text(None, "", env, overrides)
        }
        Err(e) => Err(ConfigErrors(vec![file_error(
            &shown,
            format!("cannot read the config file: {e}"),
        )])),
    }
}

/// [`load`] for a config given as text; `source` names it in messages (usually the
/// file's path).
pub fn load_str(
    text: &str,
    source: &str,
    env: &dyn Fn(&str) -> Option<String>,
    overrides: &ConfigOverrides,
) -> Result<LoadedConfig, ConfigErrors> {
    resolve::load_text(Some(source), text, env, overrides)
}

fn file_error(path: &str, message: String) -> ConfigError {
    ConfigError {
        origin: Origin::File {
            path: path.to_string(),
            line: 0,
            column: 0,
        },
        key: String::new(),
        message,
    }
}

/// A stable agent name for `host` and `cfg`: the host name (reduced to the characters
/// names allow) and the first 6 hex digits of a SHA-256 of the entity and the sorted
/// queues, e.g. `gpu-box-3f9a1c`. A restarted agent with the same config gets the same
/// name, so the server recognises it and hands back its runs.
pub fn default_agent_name(host: &str, cfg: &AgentConfig) -> String {
    let mut queues: Vec<String> = cfg
        .queues
        .iter()
        .map(|q| match (&cfg.entity, q.contains('/')) {
            (Some(e), false) => format!("{e}/{q}"),
            _ => q.clone(),
        })
        .collect();
    queues.sort();
    queues.dedup();
    let mut hasher = Sha256::new();
    hasher.update(cfg.entity.as_deref().unwrap_or("").as_bytes());
    for q in &queues {
        hasher.update(b"\n");
        hasher.update(q.as_bytes());
    }
    let digest = hasher.finalize();
    let hex: String = digest[..3].iter().map(|b| format!("{b:02x}")).collect();

    let mut base: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = base.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
    base = trimmed.to_string();
    let max_base = hoist_core::names::MAX_NAME_LEN - 1 - hex.len();
    base.truncate(max_base);
    let base = base.trim_end_matches(['-', '.', '_']);
    if base.is_empty() {
        format!("agent-{hex}")
    } else {
        format!("{base}-{hex}")
    }
}
