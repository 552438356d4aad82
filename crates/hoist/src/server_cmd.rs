//! `hoist server`: run the control plane until SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use hoist_server::{Server, ServerConfig};

#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7480", env = "HOIST_BIND")]
    pub bind: SocketAddr,
    /// Data directory (SQLite store, admin key). Default: ~/.local/share/hoist.
    #[arg(long, env = "HOIST_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Use PostgreSQL instead of SQLite: postgres://USER@HOST:PORT/DB. Prefer the
    /// HOIST_DATABASE_URL variable when the URL holds a password (process arguments are
    /// visible to every user of the machine).
    #[arg(long, env = "HOIST_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Seconds an agent has to confirm a claimed run before it returns to its queue.
    #[arg(long, default_value_t = 30)]
    pub lease_secs: u64,
    /// Seconds without a heartbeat after which an agent is `lost`.
    #[arg(long, default_value_t = 30)]
    pub agent_lost_after_secs: u64,
    /// Seconds a lost agent's runs stay `unknown` before they fail.
    #[arg(long, default_value_t = 600)]
    pub unknown_grace_secs: u64,
    /// Largest code artifact accepted, in bytes.
    #[arg(long, env = "HOIST_MAX_ARTIFACT_BYTES", default_value_t = hoist_server::server::DEFAULT_MAX_ARTIFACT_BYTES)]
    pub max_artifact_bytes: u64,
    /// Where code artifacts are stored (default: <data-dir>/blobs). Server replicas
    /// sharing a PostgreSQL database must share this directory too.
    #[arg(long, env = "HOIST_BLOB_DIR", conflicts_with = "blob_store")]
    pub blob_dir: Option<PathBuf>,
    /// Where code artifacts and run logs are stored, shared by every server replica:
    /// file:///PATH, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://ACCOUNT/CONTAINER/PREFIX
    /// (or https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX). Credentials come
    /// from the cloud's usual environment (AWS_*, GOOGLE_APPLICATION_CREDENTIALS,
    /// AZURE_STORAGE_ACCOUNT_KEY or Azure AD), never from the URL; endpoints from
    /// AWS_ENDPOINT_URL_S3/AWS_ENDPOINT_URL, STORAGE_EMULATOR_HOST,
    /// AZURE_STORAGE_BLOB_ENDPOINT; extra root CAs from HOIST_STORE_CA_FILE. Checked at
    /// start (a probe object is written, read and deleted).
    #[arg(long, env = "HOIST_BLOB_STORE")]
    pub blob_store: Option<hoist_server::blobstore::BlobStoreUrl>,
    /// How many times a run may go back to its queue (lease lapses, lost agents,
    /// preemptions) before it is failed instead.
    #[arg(long, env = "HOIST_MAX_REQUEUES", default_value_t = hoist_server::store::DEFAULT_MAX_REQUEUES)]
    pub max_requeues: u32,
    /// Look queues up in the store on every launch instead of keeping them for a few
    /// seconds (to measure or debug the launch path).
    #[arg(long, env = "HOIST_NO_QCACHE")]
    pub no_queue_cache: bool,
    /// Seconds a connection may take to send a complete request head (from its start,
    /// or from the first byte of a later request); then it is closed.
    #[arg(long, env = "HOIST_HEADER_TIMEOUT_SECS", default_value_t = hoist_server::serve::DEFAULT_HEADER_TIMEOUT.as_secs())]
    pub header_timeout_secs: u64,
    /// Seconds a keep-alive connection may stay open with no request in flight (long
    /// polls and log follow streams are in flight, not idle).
    #[arg(long, env = "HOIST_IDLE_TIMEOUT_SECS", default_value_t = hoist_server::serve::DEFAULT_IDLE_TIMEOUT.as_secs())]
    pub idle_timeout_secs: u64,
    /// Most HTTP connections open at once; at the limit, new connections wait until one
    /// closes. The server raises its open-file limit to the system's maximum at start;
    /// keep this well below it.
    #[arg(long, env = "HOIST_MAX_CONNECTIONS", default_value_t = hoist_server::serve::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Most bytes stored for one run's log (each line counts its text plus about 70
    /// bytes); then one marker line, and later lines are dropped.
    #[arg(long, env = "HOIST_MAX_LOG_BYTES_PER_RUN", default_value_t = hoist_server::logs::DEFAULT_MAX_LOG_BYTES_PER_RUN)]
    pub max_log_bytes_per_run: u64,
    /// Where the first start on a fresh database writes the admin user's API key
    /// (default: <data-dir>/admin.key). With several replicas, exactly one writes it.
    #[arg(long, env = "HOIST_ADMIN_KEY_FILE")]
    pub admin_key_file: Option<PathBuf>,
    /// Milliseconds a waiting claim or log follower goes without re-reading the store
    /// when no wake-up comes (a safety net; default: 5000 with PostgreSQL).
    #[arg(long, env = "HOIST_RECHECK_MS", hide = true)]
    pub recheck_ms: Option<u64>,
    /// Days a run's log is kept after the run ended.
    #[arg(long, env = "HOIST_LOG_RETENTION_DAYS", default_value_t = hoist_server::logs::DEFAULT_LOG_RETENTION.as_secs() / 86_400)]
    pub log_retention_days: u64,
}

/// The default data directory: `$XDG_DATA_HOME/hoist` or `~/.local/share/hoist`.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("hoist");
    }
    home_dir().join(".local/share/hoist")
}

pub fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

impl ServerArgs {
    pub fn config(&self) -> ServerConfig {
        let mut cfg = ServerConfig::new(
            self.bind,
            self.data_dir.clone().unwrap_or_else(default_data_dir),
        );
        cfg.database_url = self.database_url.clone();
        cfg.lease = std::time::Duration::from_secs(self.lease_secs.max(1));
        cfg.agent_lost_after = std::time::Duration::from_secs(self.agent_lost_after_secs.max(1));
        cfg.unknown_grace = std::time::Duration::from_secs(self.unknown_grace_secs);
        cfg.max_artifact_bytes = self.max_artifact_bytes;
        cfg.max_requeues = self.max_requeues;
        cfg.queue_cache = !self.no_queue_cache;
        if let Some(d) = &self.blob_dir {
            cfg.blob_dir = Some(d.clone());
        }
        cfg.blob_store = self.blob_store.clone();
        cfg.header_timeout = std::time::Duration::from_secs(self.header_timeout_secs.max(1));
        cfg.idle_timeout = std::time::Duration::from_secs(self.idle_timeout_secs.max(1));
        cfg.max_connections = self.max_connections.max(1);
        cfg.max_log_bytes_per_run = self.max_log_bytes_per_run.max(1);
        cfg.log_retention = std::time::Duration::from_secs(self.log_retention_days * 86_400);
        cfg.admin_key_file = self.admin_key_file.clone();
        cfg.recheck = self
            .recheck_ms
            .map(|ms| std::time::Duration::from_millis(ms.max(1)));
        cfg
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Raises the soft open-file limit to the hard one (as Go programs do at start): every
/// connection is a file descriptor. Returns the limit in force.
fn raise_nofile_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let cfg = args.config();
    if let Some(limit) = raise_nofile_limit() {
        // Connections, the database, blob and log files: leave room for the rest.
        if cfg.max_connections as u64 + 256 > limit {
            tracing::warn!(
                message = "--max-connections is close to or above the process's open-file limit; connections beyond what the limit allows fail to be accepted. Lower --max-connections or raise the limit (ulimit -n).",
                max_connections = cfg.max_connections,
                open_file_limit = limit,
            );
        }
    }
    let server = Server::start(cfg.clone())
        .await
        .context("the hoist server could not start")?;
    let host = format!("http://{}", server.addr);
    if let Some(path) = &server.admin_key_created {
        eprintln!(
            "hoist: first start: created user `admin`; its API key is in {} (readable by you only).\n\
             hoist: log in with: hoist login --host {host} --key-file {}",
            path.display(),
            path.display()
        );
    }
    eprintln!(
        "hoist: server listening on {host} (web UI {host}/, API {host}/api/v1, OpenAPI {host}/api/v1/openapi.json)"
    );
    shutdown_signal().await;
    eprintln!("hoist: shutting down: finishing in-flight requests");
    server.shutdown().await;
    Ok(())
}
