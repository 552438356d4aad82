//! Starting an agent, shared by `hoist agent` and `hoist up`: the runners this machine
//! can offer, and the run loop with signal handling.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use hoist_agent::agent::{self, AgentOptions};
use hoist_agent::config::AgentConfig;
use hoist_agent::runners::Runner;
use hoist_agent::runners::docker::DockerRunner;
use hoist_agent::runners::local_process::LocalProcessRunner;
use hoist_client::Client;
use hoist_core::resource::ResourceType;
use tokio::sync::watch;

/// The runners of this agent: local processes always, Docker when a daemon answers.
/// Returns them and a note about Docker for the operator.
pub async fn runners(
    cfg: &AgentConfig,
    work_root: PathBuf,
) -> (
    HashMap<ResourceType, Arc<dyn Runner>>,
    Result<String, String>,
) {
    let mut m: HashMap<ResourceType, Arc<dyn Runner>> = HashMap::new();
    m.insert(
        ResourceType::LocalProcess,
        Arc::new(LocalProcessRunner::new(
            work_root,
            cfg.env_allow_list.clone(),
        )),
    );
    let docker = match DockerRunner::connect(&cfg.docker).await {
        Ok(d) => match d.ping().await {
            Ok(()) => {
                let note = format!("Docker daemon answers (API {})", d.api_version());
                m.insert(
                    ResourceType::Docker,
                    Arc::new(d.with_env_allow_list(cfg.env_allow_list.clone())),
                );
                Ok(note)
            }
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e.to_string()),
    };
    (m, docker)
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
    runners: HashMap<ResourceType, Arc<dyn Runner>>,
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
        runners,
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
