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
//! # Reads
//! A pool of connections; under SQLite WAL they never block the writer.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Connection, Executor};
use tokio::sync::{mpsc, oneshot};

/// `format!` for SQL assembled from constants and `$n` placeholders only (never from
/// input): sqlx wants dynamic SQL marked as audited.
macro_rules! dynsql {
    ($($t:tt)*) => { sqlx::AssertSqlSafe(format!($($t)*)) };
}

pub mod agents;
pub mod identity;
pub mod logs;
pub mod queues;
pub mod rows;
pub mod runs;

pub use crate::error::StoreError;

/// The connection type write closures receive.
pub type Conn = AnyConnection;
/// A boxed future borrowing the connection.
pub type BoxFut<'c, T> = Pin<Box<dyn Future<Output = T> + Send + 'c>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

const MIGRATIONS_SQLITE: &[(i64, &str)] =
    &[(1, include_str!("../../migrations/sqlite/0001_init.sql"))];
const MIGRATIONS_POSTGRES: &[(i64, &str)] =
    &[(1, include_str!("../../migrations/postgres/0001_init.sql"))];

/// Longest group of writes committed together.
const MAX_BATCH: usize = 512;

#[derive(Clone)]
pub struct Store {
    inner: std::sync::Arc<Inner>,
}

struct Inner {
    dialect: Dialect,
    read: AnyPool,
    writer: WritePath,
}

enum WritePath {
    Sqlite(mpsc::Sender<WriterMsg>),
    Postgres(AnyPool),
}

enum WriterMsg {
    Op(Box<dyn WriteOp>),
    Close(oneshot::Sender<()>),
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
    /// `postgres://…`) and applies pending migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
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
            Dialect::Sqlite => Self::open_sqlite(url).await,
            Dialect::Postgres => Self::open_postgres(url).await,
        }
    }

    async fn open_sqlite(url: &str) -> Result<Store, StoreError> {
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
                read,
                writer: WritePath::Sqlite(tx),
            }),
        })
    }

    async fn open_postgres(url: &str) -> Result<Store, StoreError> {
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
        Ok(Store {
            inner: std::sync::Arc::new(Inner {
                dialect: Dialect::Postgres,
                read: pool.clone(),
                writer: WritePath::Postgres(pool),
            }),
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.inner.dialect
    }

    /// The read pool.
    pub fn reader(&self) -> &AnyPool {
        &self.inner.read
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
    }
}

async fn sqlite_writer(mut conn: AnyConnection, mut rx: mpsc::Receiver<WriterMsg>) {
    let mut batch: Vec<Box<dyn WriteOp>> = Vec::with_capacity(MAX_BATCH);
    let mut closing = None;
    while closing.is_none() {
        match rx.recv().await {
            Some(WriterMsg::Op(op)) => batch.push(op),
            Some(WriterMsg::Close(done)) => closing = Some(done),
            None => break,
        }
        while batch.len() < MAX_BATCH && closing.is_none() {
            match rx.try_recv() {
                Ok(WriterMsg::Op(op)) => batch.push(op),
                Ok(WriterMsg::Close(done)) => closing = Some(done),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let committed = run_batch(&mut conn, &mut batch).await;
        metrics::histogram!("hoist_store_batch_size").record(batch.len() as f64);
        for op in batch.drain(..) {
            op.finish(committed.clone());
        }
    }
    // Refuse what is still queued, then checkpoint so the WAL is folded back.
    rx.close();
    while let Ok(msg) = rx.try_recv() {
        if let WriterMsg::Op(op) = msg {
            op.finish(Err(StoreError::Closed));
        }
    }
    let _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").await;
    let _ = conn.close().await;
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

async fn run_batch(
    conn: &mut AnyConnection,
    batch: &mut [Box<dyn WriteOp>],
) -> Result<(), StoreError> {
    conn.execute("BEGIN IMMEDIATE").await?;
    let single = batch.len() == 1;
    for op in batch.iter_mut() {
        if single {
            if !op.apply(conn).await {
                let _ = conn.execute("ROLLBACK").await;
                return Ok(());
            }
            continue;
        }
        conn.execute("SAVEPOINT w").await?;
        if op.apply(conn).await {
            conn.execute("RELEASE w").await?;
        } else {
            conn.execute("ROLLBACK TO w").await?;
            conn.execute("RELEASE w").await?;
        }
    }
    match conn.execute("COMMIT").await {
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
