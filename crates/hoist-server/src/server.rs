//! Server configuration, start-up and graceful shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::watch;

use crate::api::{self, AppState};
use crate::blobstore::{BlobEnv, BlobStore, BlobStoreError, BlobStoreUrl};
use crate::clock::Clock;
use crate::store::{Store, StoreError, StoreOptions};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    /// `None`: SQLite file `hoist.db` in the data dir.
    pub database_url: Option<String>,
    /// How long an agent has to confirm a claimed run.
    pub lease: Duration,
    /// How often agents are asked to send heartbeats.
    pub heartbeat_interval: Duration,
    /// Silence after which an agent is `lost`.
    pub agent_lost_after: Duration,
    /// How long a lost agent's running runs stay `unknown` before they fail.
    pub unknown_grace: Duration,
    /// Longest claim long-poll.
    pub max_claim_wait: Duration,
    /// Lifetime of run tokens.
    pub run_token_ttl: Duration,
    /// How often the reaper looks at leases and heartbeats.
    pub reaper_interval: Duration,
    /// How long in-flight requests get to finish at shutdown.
    pub shutdown_grace: Duration,
    /// Where code artifacts are stored; `None`: `blobs/` in the data dir. Several
    /// replicas sharing one database must share this directory too.
    pub blob_dir: Option<PathBuf>,
    /// Where code artifacts and log segments are stored, when not in
    /// [`blob_dir`](Self::blob_dir): a directory or an object store shared by every
    /// replica (see [`crate::blobstore`]).
    pub blob_store: Option<BlobStoreUrl>,
    /// Where the blob store's credentials and endpoints are read from (the process's
    /// environment unless a test says otherwise).
    pub blob_env: BlobEnv,
    /// Largest code artifact (upload body) accepted, in bytes.
    pub max_artifact_bytes: u64,
    /// How many times a run may go back to its queue (lease lapses, releases, lost
    /// agents, preemptions) before it is failed instead.
    pub max_requeues: u32,
    /// Keep queues looked up by launches for a few seconds (`api::queues::QueueCache`).
    /// Off (`--no-queue-cache`) only to measure or debug the launch path.
    pub queue_cache: bool,
    /// Longest time a connection may take to send a complete request head (counted
    /// from its start, or from the first byte of a later request); then it is closed.
    pub header_timeout: Duration,
    /// Longest time a keep-alive connection may stay open with no request in flight
    /// (long polls and log follow streams are in flight, not idle).
    pub idle_timeout: Duration,
    /// Most HTTP connections open at once; at the limit, new ones wait in the listen
    /// backlog until one closes.
    pub max_connections: usize,
    /// Most bytes stored for one run's log (each line as a JSON record: its text plus
    /// about 70 bytes); then a marker line, and later lines are dropped.
    pub max_log_bytes_per_run: u64,
    /// How long a run's log is kept after the run ended.
    pub log_retention: Duration,
    /// How often expired logs are looked for.
    pub log_sweep_interval: Duration,
    /// How long a web UI session lasts after sign-in (sign-out ends it sooner).
    pub web_session_ttl: Duration,
    /// Where the first start on a fresh database writes the admin key; `None`:
    /// `admin.key` in the data dir.
    pub admin_key_file: Option<PathBuf>,
    /// How long a waiting claim or log follower goes without re-reading the store when
    /// no wake-up comes (the safety net under the wake-ups); `None`: an hour with
    /// SQLite (every wake-up is in-process), 5 s with PostgreSQL.
    pub recheck: Option<Duration>,
}

/// Default [`ServerConfig::max_artifact_bytes`]: 512 MiB.
pub const DEFAULT_MAX_ARTIFACT_BYTES: u64 = 512 << 20;

impl ServerConfig {
    pub fn new(bind: SocketAddr, data_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            bind,
            data_dir,
            database_url: None,
            lease: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            agent_lost_after: Duration::from_secs(30),
            unknown_grace: Duration::from_secs(600),
            max_claim_wait: Duration::from_secs(60),
            run_token_ttl: Duration::from_secs(7 * 24 * 3600),
            reaper_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(10),
            blob_dir: None,
            blob_store: None,
            blob_env: BlobEnv::process(),
            max_artifact_bytes: DEFAULT_MAX_ARTIFACT_BYTES,
            max_requeues: crate::store::DEFAULT_MAX_REQUEUES,
            queue_cache: true,
            header_timeout: crate::serve::DEFAULT_HEADER_TIMEOUT,
            idle_timeout: crate::serve::DEFAULT_IDLE_TIMEOUT,
            max_connections: crate::serve::DEFAULT_MAX_CONNECTIONS,
            max_log_bytes_per_run: crate::logs::DEFAULT_MAX_LOG_BYTES_PER_RUN,
            log_retention: crate::logs::DEFAULT_LOG_RETENTION,
            log_sweep_interval: Duration::from_secs(600),
            web_session_ttl: Duration::from_secs(12 * 3600),
            admin_key_file: None,
            recheck: None,
        }
    }

    /// The blob store's directory.
    pub fn blob_dir(&self) -> PathBuf {
        self.blob_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("blobs"))
    }

    /// The blob store: [`blob_store`](Self::blob_store), else the blob directory.
    pub fn blob_store_url(&self) -> BlobStoreUrl {
        self.blob_store
            .clone()
            .unwrap_or_else(|| BlobStoreUrl::File(self.blob_dir()))
    }

    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", self.data_dir.join("hoist.db").display()),
        }
    }

    /// Where run log segments are stored with a directory store: `logs/` in the blob
    /// directory.
    pub fn log_dir(&self) -> PathBuf {
        self.blob_dir().join("logs")
    }

    /// The connection limits of [`crate::serve`].
    pub fn conn_limits(&self) -> crate::serve::ConnLimits {
        crate::serve::ConnLimits {
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
        }
    }

    /// Where the bootstrap writes the admin key.
    pub fn admin_key_path(&self) -> PathBuf {
        self.admin_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("admin.key"))
    }
}

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the store at {url}: {source}")]
    Store {
        url: String,
        #[source]
        source: StoreError,
    },
    #[error(
        "cannot listen on {addr}: {source}; is another server running there? pick another address with --bind"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot write the admin key to {path}: {source}; the admin user was not created: make sure the directory exists and is writable, or pick another file with --admin-key-file"
    )]
    AdminKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    BlobStore(#[source] BlobStoreError),
    #[error("bootstrap failed: {0}")]
    Bootstrap(#[source] StoreError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// A started server.
pub struct Server {
    pub addr: SocketAddr,
    pub state: AppState,
    /// Set when this start created the admin user.
    pub admin_key_created: Option<PathBuf>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Opens the store, creates the admin on first start, binds and serves.
    pub async fn start(cfg: ServerConfig) -> Result<Server, ServerError> {
        Self::start_with_clock(cfg, Clock::new()).await
    }

    pub async fn start_with_clock(cfg: ServerConfig, clock: Clock) -> Result<Server, ServerError> {
        std::fs::create_dir_all(&cfg.data_dir).map_err(|source| ServerError::DataDir {
            path: cfg.data_dir.clone(),
            source,
        })?;
        restrict_dir(&cfg.data_dir);
        let blobs = BlobStore::open(&cfg.blob_store_url(), &cfg.data_dir, &cfg.blob_env)
            .await
            .map_err(ServerError::BlobStore)?;
        blobs.check().await.map_err(ServerError::BlobStore)?;
        let url = cfg.database_url();
        let opts = StoreOptions {
            max_requeues: cfg.max_requeues,
        };
        let store = Store::open_with(&url, opts)
            .await
            .map_err(|source| ServerError::Store {
                url: crate::store::redact_url(&url),
                source,
            })?;
        let admin_key_created = bootstrap_admin(&store, &cfg, &clock).await?;
        let listener = tokio::net::TcpListener::bind(cfg.bind)
            .await
            .map_err(|source| ServerError::Bind {
                addr: cfg.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: cfg.bind,
            source,
        })?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let state = AppState::with_blobs(
            store,
            clock,
            Arc::new(cfg),
            Arc::new(blobs),
            shutdown_rx.clone(),
        );
        // Serve only once this replica hears the others (with a shared store).
        crate::cluster::start(state.clone(), shutdown_rx.clone()).await?;
        let app = api::router(state.clone());
        tokio::spawn(crate::reaper::run(
            state.clone(),
            state.cfg.reaper_interval,
            shutdown_rx.clone(),
        ));
        tokio::spawn(crate::logs::retention_task(
            state.logs.clone(),
            state.clock.clone(),
            state.cfg.log_retention,
            state.cfg.log_sweep_interval,
            shutdown_rx.clone(),
        ));
        let task = tokio::spawn(crate::serve::serve(
            listener,
            app,
            state.cfg.conn_limits(),
            shutdown_rx,
        ));
        tracing::info!(message = "hoist server listening.", %addr, store = %crate::store::redact_url(&state.cfg.database_url()), blobs = %state.blobs.url());
        Ok(Server {
            addr,
            state,
            admin_key_created,
            shutdown,
            task,
        })
    }

    /// Stops accepting, releases long polls and log follow streams, closes idle
    /// connections, lets in-flight requests finish (up to the grace period), then
    /// closes the store.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let grace = self.state.cfg.shutdown_grace;
        if tokio::time::timeout(grace, self.task).await.is_err() {
            tracing::warn!(
                message = "Requests still running after the shutdown grace period; closing anyway."
            );
        }
        self.state.store.close().await;
        tracing::info!(message = "hoist server stopped.");
    }

    /// Waits until the server stops by itself (it does not; used by `hoist server`).
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

fn restrict_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
}

async fn bootstrap_admin(
    store: &Store,
    cfg: &ServerConfig,
    clock: &Clock,
) -> Result<Option<PathBuf>, ServerError> {
    if store.count_users().await.map_err(ServerError::Bootstrap)? > 0 {
        return Ok(None);
    }
    // The file is made before the admin, so that a key is never created with nowhere
    // to go.
    let path = cfg.admin_key_path();
    let admin_key_error = |source| ServerError::AdminKey {
        path: path.clone(),
        source,
    };
    let file = SecretFile::create(&path).map_err(admin_key_error)?;
    // Replicas starting at once serialise in the store: one creates the admin, the
    // others find it (and write nothing).
    let Some(key) = store
        .bootstrap_admin(clock.now_ms())
        .await
        .map_err(ServerError::Bootstrap)?
    else {
        return Ok(None);
    };
    file.write(key.secret.expose()).map_err(admin_key_error)?;
    Ok(Some(path))
}

/// A file readable by its owner only, written under a temporary name and renamed
/// into place once complete (dropped unwritten: removed).
struct SecretFile {
    tmp: PathBuf,
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl SecretFile {
    fn create(path: &Path) -> std::io::Result<SecretFile> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".{}.tmp", std::process::id()));
        let tmp = path.with_file_name(name);
        let _ = std::fs::remove_file(&tmp);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        Ok(SecretFile {
            tmp,
            path: path.to_path_buf(),
            file: Some(file),
        })
    }

    fn write(mut self, secret: &str) -> std::io::Result<()> {
        let r = self.write_inner(secret);
        if r.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        r
    }

    fn write_inner(&mut self, secret: &str) -> std::io::Result<()> {
        use std::io::Write;
        let mut f = self.file.take().expect("written once");
        f.write_all(secret.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&self.tmp, &self.path)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes a file readable by its owner only (mode 0600 from creation).
pub fn write_secret_file(path: &Path, secret: &str) -> std::io::Result<()> {
    SecretFile::create(path)?.write(secret)
}
