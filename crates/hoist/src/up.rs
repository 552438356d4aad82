//! `hoist up`: a server on the embedded SQLite store, one agent serving a `default`
//! queue (local-process) and, when a Docker daemon answers, a `docker` queue, and the
//! CLI logged in to it. One command for one machine.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use hoist_agent::config::{ConfigOverrides, MaxJobs};
use hoist_client::{Client, Secret};
use hoist_core::api::CreateQueue;
use hoist_core::resource::ResourceType;
use hoist_server::{Server, ServerConfig};

use crate::cli::credentials;

#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Address the server listens on.
    #[arg(long, default_value = "127.0.0.1:7480", env = "HOIST_BIND")]
    pub bind: SocketAddr,
    /// Data directory (store, admin key, run directories). Default: ~/.local/share/hoist.
    #[arg(long, env = "HOIST_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Runs the agent runs at once (-1 = no limit).
    #[arg(short = 'j', long, default_value_t = 4, allow_negative_numbers = true)]
    pub max_jobs: i64,
}

async fn ensure_queue(
    c: &Client,
    name: &str,
    resource: ResourceType,
    config: serde_json::Value,
    description: &str,
) -> anyhow::Result<()> {
    if c.get_queue("admin", name).await.is_ok() {
        return Ok(());
    }
    c.create_queue(&CreateQueue {
        name: name.into(),
        entity: Some("admin".into()),
        resource: resource.as_str().into(),
        config: Some(config),
        template_variables: vec![],
        prioritize: false,
        description: Some(description.into()),
    })
    .await
    .with_context(|| format!("cannot create the `{name}` queue"))?;
    Ok(())
}

/// `hoist` when the `hoist` on PATH is this binary, else this binary's path.
fn cli_name() -> String {
    let me = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok());
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("hoist"))
            .find(|p| p.is_file())
            .and_then(|p| p.canonicalize().ok())
    });
    match (me, on_path) {
        (Some(me), Some(p)) if me == p => "hoist".into(),
        (Some(me), _) => me.display().to_string(),
        _ => "hoist".into(),
    }
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(crate::server_cmd::default_data_dir);
    let max_jobs = MaxJobs::from_i64(args.max_jobs)
        .map_err(|e| crate::cli::invalid(format!("--max-jobs: {e}")))?;
    let server = Server::start(ServerConfig::new(args.bind, data_dir.clone()))
        .await
        .context("hoist up: the server could not start")?;
    let host = format!("http://{}", server.addr);
    let key_path = data_dir.join("admin.key");
    let key = match tokio::fs::read_to_string(&key_path).await {
        Ok(k) => k.trim().to_string(),
        Err(_) => {
            // The key file was removed: make a new key for the admin.
            let k = server
                .state
                .store
                .create_key("admin", "hoist up", server.state.now())
                .await?;
            hoist_server::server::write_secret_file(&key_path, k.secret.expose())?;
            k.secret.expose().to_string()
        }
    };
    let client = Client::new(&host, Some(Secret::new(key.clone())))?;

    // The CLI: log in unless it is logged in to another server.
    let login_note = match credentials::load() {
        Ok(Some(s)) if s.host != host => format!(
            "the CLI stays logged in to {} (not changed); use HOIST_HOST={host} HOIST_API_KEY=$(cat {}) or `hoist login --host {host} --key-file {}`",
            s.host,
            key_path.display(),
            key_path.display()
        ),
        _ => {
            let p = credentials::save(&host, &Secret::new(key.clone()))?;
            format!("the CLI is logged in as admin ({})", p.display())
        }
    };

    // The agent's config: the embedded defaults plus HOIST_* variables, no file.
    let env = |k: &str| std::env::var(k).ok();
    let loaded = hoist_agent::config::load_str("", "hoist up", &env, &ConfigOverrides::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut cfg = loaded.config;
    cfg.max_jobs = max_jobs;
    let work_root = data_dir.join("runs");
    let name = format!("{}-up", crate::agent_start::hostname());
    let parts = crate::agent_start::components(&cfg, work_root, &client, &name).await?;
    let docker = parts.docker.clone();
    ensure_queue(
        &client,
        "default",
        ResourceType::LocalProcess,
        serde_json::json!({}),
        "local processes on this machine (hoist up)",
    )
    .await?;
    cfg.queues = vec!["admin/default".into()];
    let docker_line = match &docker {
        Ok(note) => {
            // Daemons started with --bridge=none have no default network.
            let config = if crate::agent_start::docker_has_bridge(&cfg).await {
                serde_json::json!({})
            } else {
                serde_json::json!({"network": "none"})
            };
            ensure_queue(
                &client,
                "docker",
                ResourceType::Docker,
                config,
                "containers on this machine's Docker daemon (hoist up)",
            )
            .await?;
            cfg.queues.push("admin/docker".into());
            format!("docker     containers ({note})")
        }
        Err(e) => format!("(no `docker` queue: {e})"),
    };
    cfg.name = Some(name.clone());

    println!("hoist is up.");
    println!(
        "  web UI     {host}/   (sign in with the admin key: the contents of {})",
        key_path.display()
    );
    println!(
        "  API        {host}/api/v1   (OpenAPI: {host}/api/v1/openapi.json, metrics: {host}/metrics)"
    );
    println!(
        "  admin key  {}   (readable by you only)",
        key_path.display()
    );
    println!("  CLI        {login_note}");
    println!(
        "  agent      {name}, up to {} runs at once",
        if args.max_jobs < 0 {
            "unlimited".to_string()
        } else {
            args.max_jobs.to_string()
        }
    );
    println!("  queues     default    local processes");
    println!("             {docker_line}");
    println!("  data       {}", data_dir.display());
    println!();
    println!(
        "Try:  {} launch --queue default --wait -- python3 -c 'print(6 * 7)'",
        cli_name()
    );
    println!("Stop with Ctrl-C.");

    let stop = crate::agent_start::signal_watch();
    let agent = tokio::spawn(crate::agent_start::run(
        cfg,
        client,
        name,
        host.clone(),
        parts,
        false,
        stop.clone(),
    ));
    let mut stop_wait = stop.clone();
    let _ = stop_wait.wait_for(|s| *s).await;
    eprintln!("hoist up: stopping the agent and the server");
    match agent.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("hoist up: agent: {e:#}"),
        Err(e) => eprintln!("hoist up: agent task: {e}"),
    }
    server.shutdown().await;
    Ok(())
}
