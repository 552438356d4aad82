//! The store on both dialects: SQLite in a temporary directory, and PostgreSQL
//! (`HOIST_TEST_DATABASE_URL`; each test gets a fresh database, dropped after use).

use hoist_server::store::Store;

pub struct Db {
    pub store: Store,
    _dir: Option<tempfile::TempDir>,
    /// (server URL, database name) of a PostgreSQL test database, dropped after use.
    pg: Option<(String, String)>,
}

impl Db {
    pub async fn drop_pg(self) {
        self.store.close().await;
        if let Some((base, name)) = self.pg {
            use sqlx::Connection;
            if let Ok(mut c) = sqlx::PgConnection::connect(&base).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut c)
                .await;
            }
        }
    }
}

pub async fn sqlite() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    Db {
        store: Store::open(&url).await.unwrap(),
        _dir: Some(dir),
        pg: None,
    }
}

/// A fresh PostgreSQL database, or None when no server is configured (an error when
/// the test environment says services are required).
pub async fn postgres() -> Option<Db> {
    let Ok(base) = std::env::var("HOIST_TEST_DATABASE_URL") else {
        if std::env::var("HOIST_TEST_REQUIRE_SERVICES").is_ok() {
            panic!("HOIST_TEST_DATABASE_URL is not set but services are required");
        }
        eprintln!("skipping the PostgreSQL variant: HOIST_TEST_DATABASE_URL is not set");
        return None;
    };
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(&base)
        .await
        .expect("connect to test PostgreSQL");
    let name = format!("hoist_t_{}", hoist_server::secrets::new_id(10));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    let url = format!("{prefix}/{name}");
    Some(Db {
        store: Store::open(&url).await.unwrap(),
        _dir: None,
        pg: Some((base, name)),
    })
}

/// `both!(f)`: tests `f(store)` on SQLite and on PostgreSQL.
#[allow(unused_macros)]
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name($crate::common::db::sqlite().await.store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if let Some(db) = $crate::common::db::postgres().await {
                    super::$name(db.store.clone()).await;
                    db.drop_pg().await;
                }
            }
        }
    };
}
