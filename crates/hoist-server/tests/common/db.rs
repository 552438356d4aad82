//! The store on both dialects: SQLite in a temporary directory, and PostgreSQL
//! (`HOIST_TEST_DATABASE_URL`; each test gets a fresh database, dropped after use).

use hoist_server::store::Store;

pub struct Db {
    pub store: Store,
    /// The database URL the store was opened with.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<PgDb>,
}

impl Db {
    pub async fn drop_pg(self) {
        self.store.close().await;
        if let Some(pg) = self.pg {
            pg.drop_db().await;
        }
    }
}

/// A fresh, empty PostgreSQL database per test (the one helper, in hoist-testkit).
pub use hoist_testkit::pg::PgDb;

pub async fn sqlite() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    Db {
        store: Store::open(&url).await.unwrap(),
        url,
        _dir: Some(dir),
        pg: None,
    }
}

/// A fresh PostgreSQL database with the store opened on it, or None (see
/// [`PgDb::create`]).
pub async fn postgres() -> Option<Db> {
    let pg = PgDb::create().await?;
    Some(Db {
        store: Store::open(&pg.url).await.unwrap(),
        url: pg.url.clone(),
        _dir: None,
        pg: Some(pg),
    })
}

/// A plain connection to a test database, for what no store method does (breaking
/// the schema's rules on purpose, changing rows behind the server's back).
pub async fn raw(url: &str) -> sqlx::AnyConnection {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(url).await.unwrap()
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

/// `both_db!(f)`: tests `f(&db)` on SQLite and on PostgreSQL, for tests that need the
/// database URL too.
#[allow(unused_macros)]
macro_rules! both_db {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name(&$crate::common::db::sqlite().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if let Some(db) = $crate::common::db::postgres().await {
                    super::$name(&db).await;
                    db.drop_pg().await;
                }
            }
        }
    };
}
