//! What only PostgreSQL does, for replicas sharing one database: notifications
//! (`LISTEN`/`NOTIFY`, for [`crate::cluster`]) and session advisory locks (the
//! reaper's lease). sqlx's `Any` driver can do neither, so these use the store's native pool.

use sqlx::postgres::{PgConnection, PgListener, PgPool};
use sqlx::{Connection, Executor};

use super::{Store, StoreError};

/// A connection listening on one channel.
pub struct Listener(PgListener);

impl Listener {
    /// The next notification's payload; `Ok(None)` when the connection was lost
    /// (notifications sent meanwhile are lost with it: listen again).
    pub async fn recv(&mut self) -> Result<Option<String>, StoreError> {
        Ok(self.0.try_recv().await?.map(|n| n.payload().to_string()))
    }
}

/// A session advisory lock, held as long as the connection that took it lives. Always
/// held with SQLite (one process).
pub struct AdvisoryLease {
    pool: Option<PgPool>,
    key: i64,
    conn: Option<PgConnection>,
    held: bool,
}

impl AdvisoryLease {
    /// Whether this process holds the lock now: it still does (its connection
    /// answers), or it has just taken it. An error means it does not (and the
    /// connection is dropped, releasing the lock if it was held).
    pub async fn try_hold(&mut self) -> Result<bool, StoreError> {
        let r = self.check().await;
        match &r {
            Ok(held) => self.held = *held,
            Err(_) => {
                self.conn = None;
                self.held = false;
            }
        }
        r
    }

    async fn check(&mut self) -> Result<bool, StoreError> {
        let Some(pool) = &self.pool else {
            return Ok(true);
        };
        if self.conn.is_none() {
            // A connection of its own, outside the pool: the lock lives with it.
            self.conn = Some(pool.acquire().await?.detach());
        }
        let conn = self.conn.as_mut().expect("connection just set");
        if self.held {
            conn.execute("SELECT 1").await?;
            return Ok(true);
        }
        Ok(sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(self.key)
            .fetch_one(&mut *conn)
            .await?)
    }

    /// Gives the lock up by closing its connection.
    pub async fn release(&mut self) {
        if let Some(c) = self.conn.take() {
            let _ = c.close().await;
        }
        self.held = self.pool.is_none();
    }
}

impl Store {
    /// Listens on `channel` (PostgreSQL only; `None` on SQLite).
    pub async fn listen(&self, channel: &str) -> Result<Option<Listener>, StoreError> {
        let Some(pool) = &self.inner.pg else {
            return Ok(None);
        };
        let mut l = PgListener::connect_with(pool).await?;
        // Reconnecting is the caller's (it must know notifications were lost).
        l.ignore_pool_close_event(true);
        l.listen(channel).await?;
        Ok(Some(Listener(l)))
    }

    /// Sends a notification on `channel` (PostgreSQL only; nothing on SQLite).
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        let Some(pool) = &self.inner.pg else {
            return Ok(());
        };
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// The session advisory lock `key`, not yet taken (see [`AdvisoryLease::try_hold`]).
    pub fn advisory_lease(&self, key: i64) -> AdvisoryLease {
        AdvisoryLease {
            pool: self.inner.pg.clone(),
            key,
            conn: None,
            held: false,
        }
    }
}

/// Creates the empty database `name` on the PostgreSQL server of `server_url` (whose
/// user needs `CREATEDB`): a scratch database for `hoist bench`. `name` is lowercase
/// letters, digits and `_`, starting with a letter.
pub async fn create_database(server_url: &str, name: &str) -> Result<(), StoreError> {
    database_ddl(server_url, name, "CREATE DATABASE").await
}

/// Drops the database `name` on the server of `server_url`, closing the connections
/// that still use it; nothing to drop is not an error.
pub async fn drop_database(server_url: &str, name: &str) -> Result<(), StoreError> {
    database_ddl(server_url, name, "DROP DATABASE IF EXISTS").await
}

async fn database_ddl(server_url: &str, name: &str, verb: &str) -> Result<(), StoreError> {
    let plain = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !plain || name.len() > 63 {
        return Err(StoreError::Config(format!(
            "{name:?} is not a plain database name (lowercase letters, digits, _)"
        )));
    }
    let force = if verb.starts_with("DROP") {
        " WITH (FORCE)"
    } else {
        ""
    };
    let mut c = PgConnection::connect(server_url).await?;
    let r = sqlx::query(sqlx::AssertSqlSafe(format!("{verb} {name}{force}")))
        .execute(&mut c)
        .await;
    let _ = c.close().await;
    r?;
    Ok(())
}
