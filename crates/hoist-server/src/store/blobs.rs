//! The blob index: which blobs the blob directory holds, and which entities each was
//! uploaded for (`blob_refs`). The bytes themselves are files (see `api::blobs`).

use super::{Conn, Store, StoreError};

/// Adds a reference to a known blob from `entity`, inside a write: a code job launched
/// onto another entity's queue hands its artifact to that entity's agents (see
/// [`super::runs::NewRun::hand_over`]). Nothing happens for an unknown blob.
pub(crate) async fn insert_blob_ref(
    c: &mut Conn,
    digest: &str,
    entity: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO blob_refs (digest, entity, created_at) \
         SELECT digest, $2, $3 FROM blobs WHERE digest = $1 \
         ON CONFLICT (digest, entity) DO NOTHING",
    )
    .bind(digest)
    .bind(entity)
    .bind(now)
    .execute(&mut *c)
    .await?;
    Ok(())
}

impl Store {
    /// Records a stored blob and a reference to it from `entity`. Returns whether the
    /// reference is new.
    pub async fn record_blob(
        &self,
        digest: &str,
        size: u64,
        entity: &str,
        created_by: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (digest, entity, by) = (
            digest.to_string(),
            entity.to_string(),
            created_by.to_string(),
        );
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO blobs (digest, size, created_by, created_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (digest) DO NOTHING",
                )
                .bind(&digest)
                .bind(size as i64)
                .bind(&by)
                .bind(now)
                .execute(&mut *c)
                .await?;
                let n = sqlx::query(
                    "INSERT INTO blob_refs (digest, entity, created_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (digest, entity) DO NOTHING",
                )
                .bind(&digest)
                .bind(&entity)
                .bind(now)
                .execute(&mut *c)
                .await?
                .rows_affected();
                Ok(n > 0)
            })
        })
        .await
    }

    /// A blob's size, if the index knows it.
    pub async fn blob_size(&self, digest: &str) -> Result<Option<u64>, StoreError> {
        let n: Option<i64> = sqlx::query_scalar("SELECT size FROM blobs WHERE digest = $1")
            .bind(digest)
            .fetch_optional(self.reader())
            .await?;
        Ok(n.map(|n| n as u64))
    }

    /// The entities that reference a blob (empty when it is unknown).
    pub async fn blob_entities(&self, digest: &str) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT entity FROM blob_refs WHERE digest = $1 ORDER BY entity")
                .bind(digest)
                .fetch_all(self.reader())
                .await?,
        )
    }
}
