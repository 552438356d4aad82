//! `hoist agent` (alias `hoist launch-agent`): the long-running agent.
//!
//! Configuration: `~/.config/hoist/launch-config.yaml` (or `--config`), then `HOIST_*`
//! variables, then these flags. The server and API key: the config's `base_url` (or
//! `HOIST_HOST`) and `HOIST_API_KEY`, else what `hoist login` stored.

use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// A queue to poll: NAME (in the agent's entity) or ENTITY/NAME. Repeatable.
    #[arg(short, long = "queue", value_name = "QUEUE")]
    pub queues: Vec<String>,
    /// The entity of queue names given without one.
    #[arg(short, long)]
    pub entity: Option<String>,
    /// Most runs at once (-1 = no limit).
    #[arg(short = 'j', long, allow_negative_numbers = true, value_name = "N")]
    pub max_jobs: Option<i64>,
    /// The agent config file (default: ~/.config/hoist/launch-config.yaml).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The agent's name (default: derived from the host).
    #[arg(long)]
    pub name: Option<String>,
    /// Check the config (and the environment it names), print it, and exit.
    #[arg(long)]
    pub check_config: bool,
    /// On SIGTERM/SIGINT, wait for running runs to end instead of leaving containers
    /// running for the next agent to re-adopt.
    #[arg(long)]
    pub drain: bool,
}

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    use hoist_agent::config::{self, ConfigOverrides};
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let overrides = ConfigOverrides {
        entity: args.entity.clone(),
        queues: args.queues.clone(),
        max_jobs: args.max_jobs,
        name: args.name.clone(),
        ..Default::default()
    };
    // Loading reads the file: off the runtime's (single) thread.
    let path = args.config.clone();
    let loaded =
        tokio::task::spawn_blocking(move || config::load(path.as_deref(), &env, &overrides))
            .await?
            .map_err(|e| {
                crate::cli::invalid(format!("the agent configuration is not valid:\n{e}"))
            })?;
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let cfg = loaded.config;
    if args.check_config {
        match &loaded.path {
            Some(p) => println!(
                "# agent configuration from {}, resolved (secrets masked)",
                p.display()
            ),
            None => {
                println!("# agent configuration (no file; defaults, HOIST_* and flags), resolved")
            }
        }
        print!("{}", cfg.render_resolved());
        return Ok(());
    }

    let target = crate::cli::credentials::Target::resolve()?;
    let host = cfg
        .base_url
        .clone()
        .map(|u| crate::cli::credentials::normalize_host(&u))
        .unwrap_or_else(|| target.host.clone());
    let key = if host == target.host {
        target.key.clone()
    } else {
        // Trimmed as `Target::resolve` does: a key file written with `echo` (the
        // Secret of deploy/kubernetes) ends with a newline.
        env("HOIST_API_KEY")
            .map(|k| hoist_client::Secret::new(k.trim()))
            .or_else(|| {
                crate::cli::credentials::load()
                    .ok()
                    .flatten()
                    .filter(|s| s.host == host)
                    .map(|s| s.api_key)
            })
    };
    let Some(key) = key else {
        anyhow::bail!(
            "no API key for {host}: log in with `hoist login --host {host}` or set HOIST_API_KEY for the agent"
        );
    };
    if let Some(p) = placeholder_key(key.expose()) {
        anyhow::bail!(
            "the agent's API key is {p:?}, a placeholder from the documentation: put your key (`hoist key create`) in HOIST_API_KEY; in Kubernetes, in the Secret hoist-api-key (README, \"Run the agent in Kubernetes\")"
        );
    }
    let client = crate::cli::make_client(&host, Some(key))?;
    let name = cfg.agent_name(&crate::agent_start::hostname());
    let work_root = cfg
        .local_process
        .work_dir
        .clone()
        .unwrap_or_else(crate::agent_start::default_work_root);
    let parts = crate::agent_start::components(&cfg, work_root, &client, &name).await?;
    match &parts.docker {
        Ok(note) => tracing::info!(message = "Docker runner ready.", %note),
        Err(e) => {
            tracing::warn!(message = "No Docker runner: the agent skips docker queues.", reason = %e)
        }
    }
    match &parts.kubernetes {
        Ok(note) => tracing::info!(message = "Kubernetes runner ready.", %note),
        Err(e) => {
            tracing::info!(message = "No Kubernetes runner: the agent skips kubernetes queues.", reason = %e)
        }
    }
    if let Some(env) = &parts.environment {
        tracing::info!(message = "Cloud environment checked.", environment = %env);
    }
    tracing::info!(
        message = "Starting agent.",
        agent = %name,
        server = %host,
        queues = ?cfg.queues,
        max_jobs = cfg.max_jobs.as_i64()
    );
    let stop = crate::agent_start::signal_watch();
    crate::agent_start::run(cfg, client, name, host, parts, args.drain, stop).await
}

/// The key itself when it is a documentation placeholder such as `<your-hoist-api-key>`
/// (deploy/kubernetes ships one): safe to quote, as it is no key.
fn placeholder_key(key: &str) -> Option<&str> {
    let inner = key.strip_prefix('<')?.strip_suffix('>')?;
    (!inner.is_empty()
        && inner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ' ' | '.')))
    .then_some(key)
}

#[cfg(test)]
mod tests {
    use super::placeholder_key;

    #[test]
    fn placeholder_keys() {
        assert_eq!(
            placeholder_key("<your-hoist-api-key>"),
            Some("<your-hoist-api-key>")
        );
        assert_eq!(placeholder_key("<API key>"), Some("<API key>"));
        assert_eq!(placeholder_key("hoist_0123456789abcdef"), None);
        assert_eq!(placeholder_key("<>"), None);
        assert_eq!(placeholder_key("<a/b>"), None);
        assert_eq!(placeholder_key("x<key>"), None);
    }
}
