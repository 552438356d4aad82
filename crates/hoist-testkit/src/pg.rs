//! A fresh PostgreSQL database per test, on the test server named by
//! `HOIST_TEST_DATABASE_URL`, dropped after use.

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Connection;

/// A fresh, empty PostgreSQL database (no schema yet). Drop it with
/// [`PgDb::drop_db`]; a `PgDb` dropped without it (a test that panicked) drops its
/// database on a thread of its own, so nothing is left behind either way.
pub struct PgDb {
    /// The database's URL (the test server's URL with this database's name).
    pub url: String,
    base: String,
    name: String,
    dropped: bool,
}

impl std::fmt::Debug for PgDb {
    // The URL may hold the test server's password: the name only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDb").field("name", &self.name).finish()
    }
}

impl PgDb {
    /// A new database, or `None` when `HOIST_TEST_DATABASE_URL` is not set (the test
    /// returns, skipped with a note on stderr; under `HOIST_TEST_REQUIRE_SERVICES` it
    /// panics instead, see [`crate::service_url`]).
    pub async fn create() -> Option<PgDb> {
        let base = crate::service_url("HOIST_TEST_DATABASE_URL")?;
        let mut admin = sqlx::PgConnection::connect(&base)
            .await
            .expect("connect to the test PostgreSQL at $HOIST_TEST_DATABASE_URL");
        let name = fresh_name();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let _ = admin.close().await;
        let (prefix, _) = base
            .split_once('?')
            .map_or(base.as_str(), |(u, _)| u)
            .rsplit_once('/')
            .expect("HOIST_TEST_DATABASE_URL is postgres://USER@HOST:PORT/DB");
        let query = base.split_once('?').map(|(_, q)| format!("?{q}"));
        Some(PgDb {
            url: format!("{prefix}/{name}{}", query.unwrap_or_default()),
            base,
            name,
            dropped: false,
        })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database, closing the connections still open to it.
    pub async fn drop_db(mut self) {
        self.dropped = true;
        drop_database(&self.base, &self.name).await;
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (base, name) = (self.base.clone(), self.name.clone());
        // A runtime of its own: this may run inside (or outside) the test's runtime.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(drop_database(&base, &name));
            }
        })
        .join();
    }
}

async fn drop_database(base: &str, name: &str) {
    if let Ok(mut c) = sqlx::PgConnection::connect(base).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut c)
        .await;
        let _ = c.close().await;
    }
}

/// `hoist_t_PID_N_NANOS`: unique across the tests of a process and across runs, and a
/// plain SQL identifier.
fn fresh_name() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .subsec_nanos();
    format!(
        "hoist_t_{}_{}_{nanos:08x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
