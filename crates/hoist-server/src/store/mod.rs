//! The durable store: SQLite (default) or PostgreSQL, one schema, one code path.
//!
//! # Writes
//! Every change goes through [`Store::write`], which runs a closure inside a
//! transaction and answers only after the transaction is durable.
//!
//! - SQLite: one writer task owns the only write connection. It takes every write
//!   waiting in its channel, runs them in one `BEGIN IMMEDIATE … COMMIT` (each inside a
//!   savepoint so one failing write does not undo the others), and answers them all
//!   after the single commit (`synchronous=FULL`, so one fsync per batch). Concurrent
//!   launches therefore share fsyncs instead of queueing behind each other
//!   ("group commit"), and writes never meet `SQLITE_BUSY`.
//! - PostgreSQL: each write is its own transaction on the pool; claims use
//!   `FOR UPDATE SKIP LOCKED` so several server replicas can share the database.
//!
//! Queries go through sqlx's `Any` driver on both dialects (one SQL code path). What
//! only PostgreSQL has and `Any` cannot do (`LISTEN` for other replicas' signals, the
//! reaper's session advisory lock) uses a small native [`PgPool`] beside it
//! ([`pg`]).
//!
//! # Reads
//! A pool of connections; under SQLite WAL they never block the writer. The pool is
//! private to the store: the rest of the server reads through store methods
//! ([`Store::ping`] for readiness).
//!
//! # Run states
//! Every change of a run's state goes through one function, `runs::transition`: it
//! checks the move with `check_transition`, writes it with a conditional
//! `UPDATE … WHERE id = $id AND state = $from` (a concurrent writer that moved the run
//! first wins cleanly), and revokes the run's tokens when the run ends or goes back to
//! its queue. The database records every transition itself (triggers), and a `CHECK`
//! constraint holds `runs.state` to [`hoist_core::run::RunState::ALL`]. Lists of
//! states in SQL are generated from `RunState` ([`runs::state_list`]), never written
//! out by hand.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AnyConnection, AnyPool, Connection, Executor};
use tokio::sync::{mpsc, oneshot};

/// `format!` for SQL assembled from constants and `$n` placeholders only (never from
/// input): sqlx wants dynamic SQL marked as audited.
macro_rules! dynsql {
    ($($t:tt)*) => { sqlx::AssertSqlSafe(format!($($t)*)) };
}

pub mod agents;
pub mod blobs;
pub mod error;
pub mod identity;
pub mod jobs;
pub mod logs;
pub mod pg;
pub mod queues;
pub mod rows;
pub mod runs;
pub mod stats;
pub mod web;

pub use error::StoreError;

/// The connection type write closures receive.
pub type Conn = AnyConnection;
/// A boxed future borrowing the connection.
pub type BoxFut<'c, T> = Pin<Box<dyn Future<Output = T> + Send + 'c>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

const MIGRATIONS_SQLITE: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../../migrations/sqlite/0002_jobs.sql")),
    (
        3,
        include_str!("../../migrations/sqlite/0003_integrity.sql"),
    ),
    (
        4,
        include_str!("../../migrations/sqlite/0004_log_segments.sql"),
    ),
    (
        5,
        include_str!("../../migrations/sqlite/0005_run_warnings.sql"),
    ),
    (
        6,
        include_str!("../../migrations/sqlite/0006_run_built.sql"),
    ),
    (
        7,
        include_str!("../../migrations/sqlite/0007_web_sessions.sql"),
    ),
    (8, include_str!("../../migrations/sqlite/0008_stats.sql")),
];
const MIGRATIONS_POSTGRES: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (2, include_str!("../../migrations/postgres/0002_jobs.sql")),
    (
        3,
        include_str!("../../migrations/postgres/0003_integrity.sql"),
    ),
    (
        4,
        include_str!("../../migrations/postgres/0004_log_segments.sql"),
    ),
    (
        5,
        include_str!("../../migrations/postgres/0005_run_warnings.sql"),
    ),
    (
        6,
        include_str!("../../migrations/postgres/0006_run_built.sql"),
    ),
    (
        7,
        include_str!("../../migrations/postgres/0007_web_sessions.sql"),
    ),
    (8, include_str!("../../migrations/postgres/0008_stats.sql")),
];

/// Longest group of writes committed together.
const MAX_BATCH: usize = 512;

/// Default [`StoreOptions::max_requeues`].
pub const DEFAULT_MAX_REQUEUES: u32 = 4;

/// Settings of the store's rules.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// How many times a run may go back to its queue (lease lapses, releases, lost
    /// agents, preemptions) before it is failed instead: a run is handed to agents at
    /// most `max_requeues + 1` times.
    pub max_requeues: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_requeues: DEFAULT_MAX_REQUEUES,
        }
    }
}

#[derive(Clone)]
pub struct Store {
    inner: std::sync::Arc<Inner>,
}

struct Inner {
    dialect: Dialect,
    opts: StoreOptions,
    read: AnyPool,
    writer: WritePath,
    /// PostgreSQL only: native connections for `LISTEN` and advisory locks.
    pg: Option<PgPool>,
}

enum WritePath {
    Sqlite(mpsc::Sender<WriterMsg>),
    Postgres(AnyPool),
}

enum WriterMsg {
    Op(Box<dyn WriteOp>),
    /// Launches are common and uniform: the writer inserts all those of a batch with
    /// multi-row statements.
    Launch(Box<LaunchMsg>),
    Close(oneshot::Sender<()>),
}

struct LaunchMsg {
    run: runs::NewRun,
    now: i64,
    reply: oneshot::Sender<Result<hoist_core::api::Run, StoreError>>,
}

/// One group commit: launches and other writes.
#[derive(Default)]
struct Batch {
    ops: Vec<Box<dyn WriteOp>>,
    launches: Vec<LaunchMsg>,
}

impl Batch {
    fn len(&self) -> usize {
        self.ops.len() + self.launches.len()
    }
    fn push(&mut self, m: WriterMsg, closing: &mut Option<oneshot::Sender<()>>) {
        match m {
            WriterMsg::Op(op) => self.ops.push(op),
            WriterMsg::Launch(l) => self.launches.push(*l),
            WriterMsg::Close(done) => *closing = Some(done),
        }
    }
}

trait WriteOp: Send {
    fn apply<'c>(&'c mut self, conn: &'c mut Conn) -> BoxFut<'c, bool>;
    fn finish(self: Box<Self>, committed: Result<(), StoreError>);
}

struct Op<T, F> {
    f: Option<F>,
    out: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> WriteOp for Op<T, F>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut Conn) -> BoxFut<'c, Result<T, StoreError>> + Send + 'static,
{
    fn apply<'c>(&'c mut self, conn: &'c mut Conn) -> BoxFut<'c, bool> {
        let f = self.f.take().expect("write op applied twice");
        Box::pin(async move {
            let r = f(conn).await;
            let ok = r.is_ok();
            self.out = Some(r);
            ok
        })
    }

    fn finish(self: Box<Self>, committed: Result<(), StoreError>) {
        let out = match (self.out, committed) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (_, Err(e)) => Err(e),
            (None, Ok(())) => Err(StoreError::Closed),
        };
        let _ = self.reply.send(out);
    }
}

impl Store {
    /// Opens (creating if needed) the store at `url` (`sqlite://PATH` or
    /// `postgres://…`) with the default [`StoreOptions`] and applies pending migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Self::open_with(url, StoreOptions::default()).await
    }

    /// [`Store::open`] with options.
    pub async fn open_with(url: &str, opts: StoreOptions) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Dialect::Postgres
        } else {
            return Err(StoreError::Config(format!(
                "unsupported database URL scheme in {:?}; expected sqlite://PATH or postgres://…",
                redact_url(url)
            )));
        };
        match dialect {
            Dialect::Sqlite => Self::open_sqlite(url, opts).await,
            Dialect::Postgres => Self::open_postgres(url, opts).await,
        }
    }

    async fn open_sqlite(url: &str, options: StoreOptions) -> Result<Store, StoreError> {
        let url = if url.contains('?') {
            url.to_string()
        } else {
            format!("{url}?mode=rwc")
        };
        let opts: AnyConnectOptions = url.parse()?;
        let mut wconn = AnyConnection::connect_with(&opts).await?;
        for pragma in [
            "PRAGMA journal_mode = WAL",
            "PRAGMA synchronous = FULL",
            "PRAGMA foreign_keys = ON",
            "PRAGMA busy_timeout = 10000",
            "PRAGMA wal_autocheckpoint = 4000",
        ] {
            wconn.execute(pragma).await?;
        }
        migrate(&mut wconn, Dialect::Sqlite).await?;
        let read = AnyPoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    conn.execute("PRAGMA query_only = ON").await?;
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(sqlite_writer(wconn, rx));
        Ok(Store {
            inner: std::sync::Arc::new(Inner {
                dialect: Dialect::Sqlite,
                opts: options,
                read,
                writer: WritePath::Sqlite(tx),
                pg: None,
            }),
        })
    }

    async fn open_postgres(url: &str, options: StoreOptions) -> Result<Store, StoreError> {
        let opts: AnyConnectOptions = url.parse()?;
        let pool = AnyPoolOptions::new()
            .max_connections(16)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        {
            let mut conn = pool.acquire().await?;
            // Several replicas may start at once: serialise their migrations.
            conn.execute("SELECT pg_advisory_lock(7480)").await?;
            let r = migrate(&mut conn, Dialect::Postgres).await;
            conn.execute("SELECT pg_advisory_unlock(7480)").await?;
            r?;
        }
        let pg_opts: PgConnectOptions = url.parse()?;
        let pg = PgPoolOptions::new()
            .max_connections(4)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(pg_opts);
        Ok(Store {
            inner: std::sync::Arc::new(Inner {
                dialect: Dialect::Postgres,
                opts: options,
                read: pool.clone(),
                writer: WritePath::Postgres(pool),
                pg: Some(pg),
            }),
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.inner.dialect
    }

    pub fn options(&self) -> StoreOptions {
        self.inner.opts
    }

    /// The read pool (for the store's modules only).
    fn reader(&self) -> &AnyPool {
        &self.inner.read
    }

    /// Readiness: the store answers a query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(self.reader()).await?;
        Ok(())
    }

    /// Sends a launch to the SQLite writer, which inserts it with the others of its
    /// batch.
    pub(crate) async fn launch_via_writer(
        &self,
        run: runs::NewRun,
        now: i64,
    ) -> Result<hoist_core::api::Run, StoreError> {
        let WritePath::Sqlite(tx) = &self.inner.writer else {
            unreachable!("launch_via_writer is for SQLite");
        };
        let (reply, rx) = oneshot::channel();
        tx.send(WriterMsg::Launch(Box::new(LaunchMsg { run, now, reply })))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` in a write transaction; returns once the transaction is durable. An
    /// error from `f` rolls back `f`'s changes only.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut Conn) -> BoxFut<'c, Result<T, StoreError>> + Send + 'static,
    {
        match &self.inner.writer {
            WritePath::Sqlite(tx) => {
                let (reply, rx) = oneshot::channel();
                let op = Box::new(Op {
                    f: Some(f),
                    out: None,
                    reply,
                });
                tx.send(WriterMsg::Op(op))
                    .await
                    .map_err(|_| StoreError::Closed)?;
                rx.await.map_err(|_| StoreError::Closed)?
            }
            WritePath::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                match f(&mut tx).await {
                    Ok(v) => {
                        tx.commit().await?;
                        Ok(v)
                    }
                    Err(e) => {
                        let _ = tx.rollback().await;
                        Err(e)
                    }
                }
            }
        }
    }

    /// Finishes pending writes and closes every connection.
    pub async fn close(&self) {
        if let WritePath::Sqlite(tx) = &self.inner.writer {
            let (done, wait) = oneshot::channel();
            if tx.send(WriterMsg::Close(done)).await.is_ok() {
                let _ = wait.await;
            }
        }
        self.inner.read.close().await;
        if let WritePath::Postgres(pool) = &self.inner.writer {
            pool.close().await;
        }
        if let Some(pg) = &self.inner.pg {
            // The listener gives its connection back when it sees the shutdown; do not
            // wait on one that has not yet.
            let _ = tokio::time::timeout(Duration::from_secs(2), pg.close()).await;
        }
    }
}

async fn sqlite_writer(mut conn: AnyConnection, mut rx: mpsc::Receiver<WriterMsg>) {
    let mut closing = None;
    while closing.is_none() {
        let mut batch = Batch::default();
        match rx.recv().await {
            Some(m) => batch.push(m, &mut closing),
            None => break,
        }
        // Let requests that are already running reach the channel before the batch
        // is closed: a few microseconds here buy far fewer fsyncs under load.
        tokio::task::yield_now().await;
        while batch.len() < MAX_BATCH && closing.is_none() {
            match rx.try_recv() {
                Ok(m) => batch.push(m, &mut closing),
                Err(_) => break,
            }
        }
        if batch.len() == 0 {
            continue;
        }
        metrics::histogram!("hoist_store_batch_size").record(batch.len() as f64);
        let (committed, launched) = run_batch(&mut conn, &mut batch).await;
        for (l, r) in batch.launches.into_iter().zip(launched) {
            let r = match (r, &committed) {
                (Ok(run), Ok(())) => Ok(run),
                (Err(e), _) => Err(e),
                (_, Err(e)) => Err(e.clone()),
            };
            let _ = l.reply.send(r);
        }
        for op in batch.ops.drain(..) {
            op.finish(committed.clone());
        }
    }
    // Refuse what is still queued, then checkpoint so the WAL is folded back.
    rx.close();
    while let Ok(msg) = rx.try_recv() {
        match msg {
            WriterMsg::Op(op) => op.finish(Err(StoreError::Closed)),
            WriterMsg::Launch(l) => {
                let _ = l.reply.send(Err(StoreError::Closed));
            }
            WriterMsg::Close(_) => {}
        }
    }
    let _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").await;
    let _ = conn.close().await;
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

type Launched = Vec<Result<hoist_core::api::Run, StoreError>>;

async fn run_batch(
    conn: &mut AnyConnection,
    batch: &mut Batch,
) -> (Result<(), StoreError>, Launched) {
    let mut launched: Launched = Vec::new();
    if let Err(e) = conn.execute("BEGIN IMMEDIATE").await {
        let e = StoreError::from(e);
        return (
            Err(e.clone()),
            batch.launches.iter().map(|_| Err(e.clone())).collect(),
        );
    }
    if batch.launches.is_empty()
        && let [op] = &mut batch.ops[..]
    {
        // Alone in its transaction: no savepoint needed.
        if !op.apply(conn).await {
            let _ = conn.execute("ROLLBACK").await;
            return (Ok(()), launched);
        }
        return (commit(conn, "COMMIT").await, launched);
    }
    if !batch.launches.is_empty() {
        let items = batch
            .launches
            .iter()
            .map(|l| (l.run.clone(), l.now))
            .collect();
        match runs::insert_launches(conn, items).await {
            Ok(r) => launched = r,
            Err(e) => {
                // Some launches may be written already: none of the batch commits.
                let _ = conn.execute("ROLLBACK").await;
                let launched = batch.launches.iter().map(|_| Err(e.clone())).collect();
                return (Err(e), launched);
            }
        }
    }
    match run_ops(conn, &mut batch.ops).await {
        Ok(()) => (commit(conn, "COMMIT").await, launched),
        Err(e) => {
            let _ = conn.execute("ROLLBACK").await;
            (Err(e), launched)
        }
    }
}

/// Runs the batch's other writes, each in its own savepoint so that a failing one is
/// undone alone; the savepoint statements between two writes go in one round trip.
async fn run_ops(conn: &mut AnyConnection, ops: &mut [Box<dyn WriteOp>]) -> Result<(), StoreError> {
    if ops.is_empty() {
        return Ok(());
    }
    conn.execute("SAVEPOINT w").await?;
    let last = ops.len() - 1;
    for (i, op) in ops.iter_mut().enumerate() {
        if !op.apply(conn).await {
            conn.execute("ROLLBACK TO w").await?;
        }
        if i < last {
            sqlx::raw_sql("RELEASE w; SAVEPOINT w")
                .execute(&mut *conn)
                .await?;
        }
    }
    conn.execute("RELEASE w").await?;
    Ok(())
}

async fn commit(conn: &mut AnyConnection, sql: &'static str) -> Result<(), StoreError> {
    match sqlx::raw_sql(sql).execute(&mut *conn).await {
        Ok(_) => Ok(()),
        Err(e) => {
            let _ = conn.execute("ROLLBACK").await;
            Err(e.into())
        }
    }
}

async fn migrate(conn: &mut AnyConnection, dialect: Dialect) -> Result<(), StoreError> {
    conn.execute(
        "CREATE TABLE IF NOT EXISTS hoist_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .await?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM hoist_migrations")
        .fetch_all(&mut *conn)
        .await?;
    let all = match dialect {
        Dialect::Sqlite => MIGRATIONS_SQLITE,
        Dialect::Postgres => MIGRATIONS_POSTGRES,
    };
    if let Some(newer) = applied.iter().find(|v| !all.iter().any(|(m, _)| m == *v)) {
        return Err(StoreError::Config(format!(
            "the database has schema version {newer}, newer than this hoist knows; upgrade hoist"
        )));
    }
    for (version, sql) in all {
        if applied.contains(version) {
            continue;
        }
        let mut tx = conn.begin().await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO hoist_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(*version)
            .bind(chrono::Utc::now().timestamp_millis())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(message = "Applied store migration.", version);
    }
    Ok(())
}

/// Runs `f` until it succeeds, fails for good, or `until` passes: a transient failure
/// ([`StoreError::is_transient`]: busy, locked, a lost serialization race, a pool
/// timeout) is retried after a short, growing pause. The last error is returned.
pub async fn retry_transient<T, F, Fut>(
    until: tokio::time::Instant,
    what: &str,
    mut f: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut pause = Duration::from_millis(20);
    loop {
        match f().await {
            Err(e) if e.is_transient() && tokio::time::Instant::now() + pause < until => {
                tracing::debug!(message = "Transient store failure; retrying.", what, error = %e, retry_in_ms = pause.as_millis() as u64);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            r => return r,
        }
    }
}

/// A database URL with its password replaced, for messages.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((creds, host)) = rest.split_once('@')
    {
        let user = creds.split(':').next().unwrap_or("");
        return format!("{scheme}://{user}:****@{host}");
    }
    url.to_string()
}
