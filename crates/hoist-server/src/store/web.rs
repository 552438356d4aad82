//! Web UI sessions (`web_sessions`): opened with an API key, looked up by id, ended at
//! sign-out or expiry. The secret is stored hashed, like API keys'.

use sqlx::Row;

use super::{Store, StoreError};

/// A stored session: which key it acts with, and until when.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: String,
    pub secret_hash: String,
    pub key_id: String,
    pub expires_at: i64,
}

impl Store {
    pub async fn create_web_session(
        &self,
        id: &str,
        secret_hash: &str,
        key_id: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let (id, hash, key) = (id.to_string(), secret_hash.to_string(), key_id.to_string());
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO web_sessions (id, secret_hash, key_id, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&id)
                .bind(&hash)
                .bind(&key)
                .bind(now)
                .bind(expires_at)
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        })
        .await
    }

    pub async fn web_session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, secret_hash, key_id, expires_at FROM web_sessions WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.reader())
        .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(SessionRecord {
            id: row.try_get("id")?,
            secret_hash: row.try_get("secret_hash")?,
            key_id: row.try_get("key_id")?,
            expires_at: row.try_get("expires_at")?,
        }))
    }

    /// Ends a session (sign-out). Ending one that is gone already is not an error.
    pub async fn delete_web_session(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_string();
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query("DELETE FROM web_sessions WHERE id = $1")
                    .bind(&id)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        })
        .await
    }

    /// Deletes expired sessions; returns how many.
    pub async fn sweep_web_sessions(&self, now: i64) -> Result<u64, StoreError> {
        self.write(move |c| {
            Box::pin(async move {
                Ok(
                    sqlx::query("DELETE FROM web_sessions WHERE expires_at <= $1")
                        .bind(now)
                        .execute(&mut *c)
                        .await?
                        .rows_affected(),
                )
            })
        })
        .await
    }
}
