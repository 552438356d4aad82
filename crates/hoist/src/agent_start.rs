//! Starting an agent, shared by `hoist agent` and `hoist up`: the runners this machine
//! can offer, and the run loop with signal handling.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use hoist_agent::agent::{self, AgentOptions};
use hoist_agent::builders::{self, Builder};
use hoist_agent::config::AgentConfig;
use hoist_agent::environments;
use hoist_agent::host_env::HostEnv;
use hoist_agent::registries;
use hoist_agent::runners::Runner;
use hoist_agent::runners::docker::DockerRunner;
use hoist_agent::runners::local_process::LocalProcessRunner;
use hoist_client::Client;
use hoist_core::resource::ResourceType;
use tokio::sync::watch;

/// What an agent works with: its runners, its builder, its cloud environment.
pub struct Components {
    pub runners: HashMap<ResourceType, Arc<dyn Runner>>,
    /// Why a resource has no runner (no Docker daemon answered…).
    pub unavailable: HashMap<ResourceType, String>,
    pub builder: Arc<dyn Builder>,
    /// The agent's environment, captured once.
    pub host_env: Arc<HostEnv>,
    /// `Ok(note)` when a Docker daemon answers, `Err(why)` otherwise.
    pub docker: Result<String, String>,
    /// `Ok(note)` when a Kubernetes API server answers, `Err(why)` otherwise.
    pub kubernetes: Result<String, String>,
    /// What the environment check found (`aws: credentials from …, arn:…`).
    pub environment: Option<String>,
}

/// Builds the agent's components. The cloud environment, when configured, is checked
/// here: missing or refused credentials stop the agent with what was tried. A registry
/// that cannot be set up only fails builds (with the reason), not the agent.
pub async fn components(
    cfg: &AgentConfig,
    work_root: PathBuf,
    client: &Client,
    name: &str,
) -> anyhow::Result<Components> {
    let artifacts: Arc<dyn hoist_agent::builders::ArtifactSource> = Arc::new(client.clone());
    let host_env = Arc::new(HostEnv::capture());
    let mut runners: HashMap<ResourceType, Arc<dyn Runner>> = HashMap::new();
    let mut unavailable: HashMap<ResourceType, String> = HashMap::new();
    runners.insert(
        ResourceType::LocalProcess,
        Arc::new(
            LocalProcessRunner::new(work_root, cfg.env_allow_list.clone())
                .with_settings(&cfg.local_process)
                .with_host_env(host_env.clone())
                .with_artifacts(artifacts),
        ),
    );
    let mut docker_client = None;
    let docker = match DockerRunner::connect(&cfg.docker).await {
        Ok(d) => match d.ping().await {
            Ok(()) => {
                let note = format!("Docker daemon answers (API {})", d.api_version());
                docker_client = Some(d.client().clone());
                runners.insert(
                    ResourceType::Docker,
                    Arc::new(
                        d.with_env_allow_list(cfg.env_allow_list.clone())
                            .with_host_env(host_env.clone()),
                    ),
                );
                Ok(note)
            }
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e.to_string()),
    };
    if let Err(why) = &docker {
        unavailable.insert(
            ResourceType::Docker,
            format!("no Docker daemon answered when it started: {why}"),
        );
    }
    let (env, environment) = match &cfg.environment {
        None => (None, None),
        Some(e) => {
            let env = environments::from_config(e).await.map_err(|err| {
                anyhow::anyhow!("the agent's {} environment: {err}", e.kind().as_str())
            })?;
            let v = env.verify().await.map_err(|err| {
                anyhow::anyhow!("the agent's {} environment: {err}", e.kind().as_str())
            })?;
            let note = match &v.principal {
                Some(p) => format!(
                    "{}: credentials from {} ({p})",
                    e.kind().as_str(),
                    v.credentials_from
                ),
                None => format!(
                    "{}: credentials from {}",
                    e.kind().as_str(),
                    v.credentials_from
                ),
            };
            (Some(env), Some(note))
        }
    };
    let registry = registries::from_config(&cfg.registry, env.as_ref(), docker_client.as_ref())
        .await
        .map_err(|e| format!("the agent's registry is not usable: {e}"));
    let kubernetes = kubernetes_runner(cfg, registry.as_ref().ok().cloned()).await;
    match &kubernetes {
        Ok((runner, _)) => {
            runners.insert(ResourceType::Kubernetes, runner.clone());
        }
        Err(why) => {
            unavailable.insert(ResourceType::Kubernetes, why.clone());
        }
    }
    let kubernetes = kubernetes.map(|(_, note)| note);
    match sagemaker_runner(env.as_ref()) {
        Ok(runner) => {
            runners.insert(ResourceType::Sagemaker, runner);
        }
        Err(why) => {
            unavailable.insert(ResourceType::Sagemaker, why);
        }
    }
    match vertex_runner(env.as_ref()).await {
        Ok(runner) => {
            runners.insert(ResourceType::Vertex, runner);
        }
        Err(why) => {
            unavailable.insert(ResourceType::Vertex, why);
        }
    }
    let builder = match (registry, &cfg.builder.kind) {
        (Ok(registry), hoist_agent::config::BuilderKind::Kaniko(k)) => {
            in_cluster_builder(cfg, k, registry, client, env.as_ref(), name).await
        }
        (Ok(registry), _) => {
            builders::builder_from_config(cfg, docker_client.as_ref(), registry, client.clone())
        }
        (Err(message), kind) => Arc::new(builders::UnavailableBuilder {
            kind: match kind {
                hoist_agent::config::BuilderKind::Kaniko(_) => cfg.builder.kind_type().as_str(),
                _ => "docker",
            },
            message,
        }) as Arc<dyn Builder>,
    };
    Ok(Components {
        runners,
        unavailable,
        builder,
        host_env,
        docker,
        kubernetes,
        environment,
    })
}

/// The kaniko or buildah builder (builds as Kubernetes Jobs), or why there is none.
#[cfg(feature = "kubernetes")]
async fn in_cluster_builder(
    cfg: &AgentConfig,
    settings: &hoist_agent::config::KanikoSettings,
    registry: Arc<dyn registries::Registry>,
    client: &Client,
    env: Option<&Arc<dyn environments::Environment>>,
    name: &str,
) -> Arc<dyn Builder> {
    let artifacts = Arc::new(client.clone());
    match builders::job::job_builder(cfg, settings, registry, artifacts, env, name.to_string())
        .await
    {
        Ok(p) => Arc::new(p),
        Err(message) => Arc::new(builders::UnavailableBuilder {
            kind: cfg.builder.kind_type().as_str(),
            message,
        }),
    }
}

#[cfg(not(feature = "kubernetes"))]
async fn in_cluster_builder(
    cfg: &AgentConfig,
    _settings: &hoist_agent::config::KanikoSettings,
    _registry: Arc<dyn registries::Registry>,
    _client: &Client,
    _env: Option<&Arc<dyn environments::Environment>>,
    _name: &str,
) -> Arc<dyn Builder> {
    Arc::new(builders::UnavailableBuilder {
        kind: cfg.builder.kind_type().as_str(),
        message:
            "this hoist was built without the `kubernetes` feature, which in-cluster builds need"
                .into(),
    })
}

/// How long the agent waits for a Kubernetes API server to answer when it starts.
#[cfg(feature = "kubernetes")]
const KUBERNETES_CHECK_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// The Kubernetes runner when a cluster answers (with a note saying which), else why
/// not. Runs whose image is in `registry` get its credentials as a pull Secret.
#[cfg(feature = "kubernetes")]
async fn kubernetes_runner(
    cfg: &AgentConfig,
    registry: Option<Arc<dyn registries::Registry>>,
) -> Result<(Arc<dyn Runner>, String), String> {
    use hoist_agent::runners::kubernetes::Cluster;
    use hoist_agent::runners::kubernetes::KubernetesRunner;
    let (cluster, version) = Cluster::connect_checked(&cfg.kubernetes, KUBERNETES_CHECK_WITHIN)
        .await
        .map_err(|e| format!("no Kubernetes cluster answered when it started: {e}"))?;
    let note = format!(
        "Kubernetes {version} at {} ({}; runs go to namespace {} by default)",
        cluster.url, cluster.source, cluster.default_namespace
    );
    let runner = KubernetesRunner::new(cluster, cfg.kubernetes.clone(), cfg.secure_mode)
        .with_registry(registry);
    Ok((Arc::new(runner), note))
}

#[cfg(not(feature = "kubernetes"))]
async fn kubernetes_runner(
    _cfg: &AgentConfig,
    _registry: Option<Arc<dyn registries::Registry>>,
) -> Result<(Arc<dyn Runner>, String), String> {
    Err("this hoist was built without the `kubernetes` feature".into())
}

/// The SageMaker runner on the agent's `aws` environment (its region, credentials and
/// endpoints), or why there is none.
fn sagemaker_runner(
    env: Option<&Arc<dyn environments::Environment>>,
) -> Result<Arc<dyn Runner>, String> {
    use hoist_agent::environments::aws::AwsEnvironment;
    use hoist_agent::runners::sagemaker::SageMakerRunner;
    let why = "a sagemaker queue needs the agent's `environment: {type: aws, region: …}`";
    let Some(env) = env else {
        return Err(format!("{why} (the agent config has no environment)"));
    };
    match env.as_any().downcast_ref::<AwsEnvironment>() {
        Some(aws) => Ok(Arc::new(SageMakerRunner::new(aws.clone()))),
        None => Err(format!(
            "{why} (the agent's environment is {})",
            env.kind().as_str()
        )),
    }
}

/// The Vertex AI runner, on the agent's `gcp` environment (project and region;
/// `HOIST_VERTEX_ENDPOINT` / `HOIST_LOGGING_ENDPOINT` from the agent's environment),
/// or why there is none. (hoist-agent's `gcp` feature is always on in this crate.)
async fn vertex_runner(
    env: Option<&Arc<dyn environments::Environment>>,
) -> Result<Arc<dyn Runner>, String> {
    use hoist_agent::environments::gcp::GcpEnvironment;
    use hoist_agent::runners::vertex::VertexRunner;
    let gcp = env
        .and_then(|e| e.as_any().downcast_ref::<GcpEnvironment>())
        .ok_or_else(|| {
            "a vertex queue needs the agent's `environment: {type: gcp, region: …, project: …}`"
                .to_string()
        })?;
    let runner = VertexRunner::new(gcp.clone(), &environments::Ambient::process())
        .await
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(runner))
}

/// Where local-process runs get their working directories by default.
pub fn default_work_root() -> PathBuf {
    crate::server_cmd::default_data_dir().join("runs")
}

/// Runs an agent until SIGTERM/SIGINT (first signal: shutdown as configured; the
/// agent leaves containers running unless `drain`).
pub async fn run(
    config: AgentConfig,
    client: Client,
    name: String,
    base_url: String,
    parts: Components,
    drain: bool,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let host = hostname();
    let opts = AgentOptions {
        config,
        client,
        name,
        host,
        base_url,
        runners: parts.runners,
        unavailable: parts.unavailable,
        builder: parts.builder,
        host_env: parts.host_env,
        drain,
    };
    agent::run(opts, stop).await?;
    Ok(())
}

/// This machine's host name.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A watch that turns true on SIGTERM or SIGINT.
pub fn signal_watch() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        crate::server_cmd::shutdown_signal().await;
        let _ = tx.send(true);
    });
    rx
}

/// Whether the Docker daemon has its default `bridge` network (daemons started with
/// `--bridge=none` do not, and containers must then use `network: none` or `host`).
pub async fn docker_has_bridge(cfg: &AgentConfig) -> bool {
    match DockerRunner::connect(&cfg.docker).await {
        Ok(d) => d
            .client()
            .inspect_network(
                "bridge",
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
            .is_ok(),
        Err(_) => false,
    }
}
