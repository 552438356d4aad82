//! The store's error ([`StoreError`]) and the classification of database failures.
//!
//! Database errors are classified once, when they enter the store's error type, from
//! the database's own error code and per dialect (SQLite extended result codes,
//! PostgreSQL SQLSTATEs), never from message text:
//!
//! | what | SQLite | PostgreSQL |
//! |---|---|---|
//! | unique | 2067 (`SQLITE_CONSTRAINT_UNIQUE`) | 23505 |
//! | primary key | 1555 (`SQLITE_CONSTRAINT_PRIMARYKEY`) | 23505 |
//! | foreign key | 787 (`SQLITE_CONSTRAINT_FOREIGNKEY`) | 23503 |
//! | check | 275 (`SQLITE_CONSTRAINT_CHECK`) | 23514 |
//! | transient | 5 `SQLITE_BUSY`, 6 `SQLITE_LOCKED` (and their extended codes) | 40001, 40P01, 55P03 (lock wait timed out), class 08, 57P01–57P03, 53300 |
//!
//! plus the driver's own transient failures (pool timeout, pool closed, a broken
//! connection). [`StoreError::is_transient`] is what retry decisions use.

use std::sync::Arc;

use hoist_core::run::IllegalTransition;
use sqlx::error::DatabaseError as _;
use thiserror::Error;

/// Which constraint of the schema refused a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Constraint {
    Unique,
    PrimaryKey,
    ForeignKey,
    Check,
}

impl std::fmt::Display for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Constraint::Unique => "unique",
            Constraint::PrimaryKey => "primary key",
            Constraint::ForeignKey => "foreign key",
            Constraint::Check => "check",
        })
    }
}

/// What a database failure means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFailure {
    /// A constraint refused the change.
    Constraint(Constraint),
    /// Worth retrying: busy, locked, a serialization failure or deadlock, a lost or
    /// unavailable connection.
    Transient,
    /// Anything else (a bug, a corrupt file, a schema mismatch).
    Other,
}

#[derive(Debug, Clone, Error)]
pub enum StoreError {
    /// The database failed or refused a statement.
    #[error("database error: {source}")]
    Db {
        kind: DbFailure,
        #[source]
        source: Arc<sqlx::Error>,
    },
    /// The store cannot be used as configured (URL scheme, schema version).
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    IllegalTransition(#[from] IllegalTransition),
    /// The agent session was replaced by a newer registration of the same agent.
    #[error("{0}")]
    Superseded(String),
    /// The agent session was ended by the server (its owner lost access).
    #[error("{0}")]
    SessionEnded(String),
    /// The agent never had this session.
    #[error("{0}")]
    UnknownSession(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the store is closed (the server is shutting down)")]
    Closed,
    /// A bug in the server: a store function called against its contract.
    #[error("internal error in the store: {0}")]
    Bug(String),
    /// A stored row does not decode.
    #[error("corrupt row in the store: {what}")]
    Corrupt {
        what: String,
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Db {
            kind: classify(&e),
            source: Arc::new(e),
        }
    }
}

impl StoreError {
    /// The constraint that refused the change, if that is what happened.
    pub fn constraint(&self) -> Option<Constraint> {
        match self {
            StoreError::Db {
                kind: DbFailure::Constraint(c),
                ..
            } => Some(*c),
            _ => None,
        }
    }

    /// A unique or primary-key violation: the object exists already.
    pub fn is_unique_violation(&self) -> bool {
        matches!(
            self.constraint(),
            Some(Constraint::Unique | Constraint::PrimaryKey)
        )
    }

    /// Worth retrying: the database was busy or unreachable, a transaction lost a
    /// serialization race or a deadlock, or the store is closing (another replica may
    /// answer).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Db {
                kind: DbFailure::Transient,
                ..
            } | StoreError::Closed
        )
    }
}

/// A corrupt row, without an underlying error.
pub fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what: what.to_string(),
        source: None,
    }
}

/// A corrupt row, with the error that decoding it gave.
pub fn corrupt_from<E>(what: impl std::fmt::Display, e: E) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
{
    StoreError::Corrupt {
        what: what.to_string(),
        source: Some(Arc::new(e)),
    }
}

fn classify(e: &sqlx::Error) -> DbFailure {
    match e {
        sqlx::Error::Database(d) => {
            if let Some(s) = d.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
                let code = s
                    .code()
                    .and_then(|c| c.parse::<i32>().ok())
                    .unwrap_or_default();
                classify_sqlite(code)
            } else if let Some(p) = d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                classify_postgres(p.code())
            } else {
                DbFailure::Other
            }
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::WorkerCrashed => DbFailure::Transient,
        _ => DbFailure::Other,
    }
}

/// SQLite extended result codes.
fn classify_sqlite(code: i32) -> DbFailure {
    const BUSY: i32 = 5;
    const LOCKED: i32 = 6;
    match code {
        2067 => DbFailure::Constraint(Constraint::Unique),
        1555 => DbFailure::Constraint(Constraint::PrimaryKey),
        787 => DbFailure::Constraint(Constraint::ForeignKey),
        275 => DbFailure::Constraint(Constraint::Check),
        // The primary code is the low byte of an extended one (SQLITE_BUSY_SNAPSHOT…).
        c if matches!(c & 0xff, BUSY | LOCKED) => DbFailure::Transient,
        _ => DbFailure::Other,
    }
}

/// PostgreSQL SQLSTATEs.
fn classify_postgres(sqlstate: &str) -> DbFailure {
    match sqlstate {
        // PostgreSQL reports primary keys and unique constraints alike.
        "23505" => DbFailure::Constraint(Constraint::Unique),
        "23503" => DbFailure::Constraint(Constraint::ForeignKey),
        "23514" => DbFailure::Constraint(Constraint::Check),
        // serialization_failure, deadlock_detected, too_many_connections,
        // admin_shutdown, crash_shutdown, cannot_connect_now, connection exceptions.
        "40001" | "40P01" | "55P03" | "53300" | "57P01" | "57P02" | "57P03" => DbFailure::Transient,
        s if s.starts_with("08") => DbFailure::Transient,
        _ => DbFailure::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(
            classify_sqlite(2067),
            DbFailure::Constraint(Constraint::Unique)
        );
        assert_eq!(
            classify_sqlite(1555),
            DbFailure::Constraint(Constraint::PrimaryKey)
        );
        assert_eq!(
            classify_sqlite(787),
            DbFailure::Constraint(Constraint::ForeignKey)
        );
        assert_eq!(
            classify_sqlite(275),
            DbFailure::Constraint(Constraint::Check)
        );
        // SQLITE_BUSY, SQLITE_BUSY_SNAPSHOT, SQLITE_LOCKED_SHAREDCACHE.
        for c in [5, 517, 262] {
            assert_eq!(classify_sqlite(c), DbFailure::Transient, "{c}");
        }
        // SQLITE_CONSTRAINT_NOTNULL, SQLITE_CORRUPT.
        assert_eq!(classify_sqlite(1299), DbFailure::Other);
        assert_eq!(classify_sqlite(11), DbFailure::Other);
        assert_eq!(
            classify_postgres("23505"),
            DbFailure::Constraint(Constraint::Unique)
        );
        assert_eq!(
            classify_postgres("23503"),
            DbFailure::Constraint(Constraint::ForeignKey)
        );
        assert_eq!(
            classify_postgres("23514"),
            DbFailure::Constraint(Constraint::Check)
        );
        for s in ["40001", "40P01", "08006", "57P01"] {
            assert_eq!(classify_postgres(s), DbFailure::Transient, "{s}");
        }
        assert_eq!(classify_postgres("42P01"), DbFailure::Other);
    }

    #[test]
    fn transient_and_sources() {
        let e = StoreError::from(sqlx::Error::PoolTimedOut);
        assert!(e.is_transient());
        assert!(std::error::Error::source(&e).is_some(), "keeps its cause");
        assert!(StoreError::Closed.is_transient());
        assert!(!StoreError::NotFound("x".into()).is_transient());
        let e = StoreError::from(sqlx::Error::RowNotFound);
        assert!(!e.is_transient());
        assert_eq!(e.constraint(), None);
    }
}
