//! Jobs and their versions.
//!
//! A job is `(entity, name)`; its versions are numbered 0, 1, 2, … (shown `v0`, `v1`,
//! …) and never change. Creating a job whose source equals its latest version's adds
//! nothing and answers that version; any other source becomes the next version.

use hoist_core::api::{Job, JobSource, JobVersion};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::rows::{corrupt, corrupt_from, json_col};
use super::{Conn, Store, StoreError};
use crate::clock::to_datetime;

/// A job version to create (and the job with it, when it is new).
#[derive(Debug, Clone)]
pub struct NewJobVersion {
    pub entity: String,
    pub name: String,
    /// Replaces the job's description when given.
    pub description: Option<String>,
    pub source: JobSource,
    pub created_by: String,
}

/// Which version of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSel {
    Latest,
    Number(i64),
}

impl VersionSel {
    /// `latest` or `vN`.
    pub fn parse(s: &str) -> Option<VersionSel> {
        if s == "latest" {
            return Some(VersionSel::Latest);
        }
        let n = s.strip_prefix('v')?;
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || n.len() > 9 {
            return None;
        }
        n.parse().ok().map(VersionSel::Number)
    }
}

/// `v3`.
pub fn version_label(n: i64) -> String {
    format!("v{n}")
}

fn version_from_row(row: &AnyRow) -> Result<JobVersion, StoreError> {
    Ok(JobVersion {
        version: version_label(row.try_get("version")?),
        source: json_col(row, "source")?,
        created_by: row.try_get("created_by")?,
        created_at: to_datetime(row.try_get("created_at")?),
    })
}

const JOB_COLUMNS: &str = "id, entity, name, description, latest, created_at";

struct JobRow {
    id: String,
    job: Job,
}

fn job_from_row(row: &AnyRow) -> Result<JobRow, StoreError> {
    Ok(JobRow {
        id: row.try_get("id")?,
        job: Job {
            entity: row.try_get("entity")?,
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            created_at: to_datetime(row.try_get("created_at")?),
            latest: version_label(row.try_get("latest")?),
            versions: Vec::new(),
        },
    })
}

async fn versions_of(c: &mut Conn, job_id: &str) -> Result<Vec<JobVersion>, StoreError> {
    let rows = sqlx::query(
        "SELECT version, source, created_by, created_at FROM job_versions WHERE job_id = $1 ORDER BY version DESC",
    )
    .bind(job_id)
    .fetch_all(&mut *c)
    .await?;
    rows.iter().map(version_from_row).collect()
}

impl Store {
    /// Creates the job, or a new version of it when `source` differs from its latest
    /// version's. Returns the job with all its versions (newest first) and whether a
    /// version was added.
    pub async fn create_job_version(
        &self,
        v: NewJobVersion,
        now: i64,
    ) -> Result<(Job, bool), StoreError> {
        let id = crate::secrets::new_id(12);
        let source = serde_json::to_string(&v.source).map_err(corrupt)?;
        self.write(move |c| {
            Box::pin(async move {
                // The job row exists after this statement (created with no version
                // yet: latest = -1); concurrent creators of the same name wait here.
                sqlx::query(
                    "INSERT INTO jobs (id, entity, name, description, latest, created_by, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, -1, $5, $6, $6) ON CONFLICT (entity, name) DO NOTHING",
                )
                .bind(&id)
                .bind(&v.entity)
                .bind(&v.name)
                .bind(v.description.as_deref().unwrap_or(""))
                .bind(&v.created_by)
                .bind(now)
                .execute(&mut *c)
                .await?;
                // Locks the row (PostgreSQL) so that versions are numbered one at a
                // time; the SQLite writer is alone anyway.
                sqlx::query(
                    "UPDATE jobs SET description = COALESCE($1, description) WHERE entity = $2 AND name = $3",
                )
                .bind(v.description.as_deref())
                .bind(&v.entity)
                .bind(&v.name)
                .execute(&mut *c)
                .await?;
                let row = sqlx::query(dynsql!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE entity = $1 AND name = $2"
                ))
                .bind(&v.entity)
                .bind(&v.name)
                .fetch_one(&mut *c)
                .await?;
                let JobRow { id: job_id, mut job } = job_from_row(&row)?;
                let latest: i64 = row.try_get("latest")?;
                if latest >= 0 {
                    let current: String = sqlx::query_scalar(
                        "SELECT source FROM job_versions WHERE job_id = $1 AND version = $2",
                    )
                    .bind(&job_id)
                    .bind(latest)
                    .fetch_one(&mut *c)
                    .await?;
                    let current: JobSource = serde_json::from_str(&current)
                        .map_err(|e| corrupt_from("job_versions.source", e))?;
                    if current == v.source {
                        job.versions = versions_of(c, &job_id).await?;
                        return Ok((job, false));
                    }
                }
                let next = latest + 1;
                sqlx::query(
                    "INSERT INTO job_versions (job_id, version, source, created_by, created_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&job_id)
                .bind(next)
                .bind(&source)
                .bind(&v.created_by)
                .bind(now)
                .execute(&mut *c)
                .await?;
                sqlx::query("UPDATE jobs SET latest = $1, updated_at = $2 WHERE id = $3")
                    .bind(next)
                    .bind(now)
                    .bind(&job_id)
                    .execute(&mut *c)
                    .await?;
                job.latest = version_label(next);
                job.versions = versions_of(c, &job_id).await?;
                Ok((job, true))
            })
        })
        .await
    }

    /// A job with all its versions, newest first.
    pub async fn get_job(&self, entity: &str, name: &str) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query(dynsql!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE entity = $1 AND name = $2 AND latest >= 0"
        ))
        .bind(entity)
        .bind(name)
        .fetch_optional(self.reader())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let JobRow { id, mut job } = job_from_row(&row)?;
        let mut conn = self.reader().acquire().await?;
        job.versions = versions_of(&mut conn, &id).await?;
        Ok(Some(job))
    }

    /// One version of a job (`None` when the job or the version does not exist).
    pub async fn get_job_version(
        &self,
        entity: &str,
        name: &str,
        sel: VersionSel,
    ) -> Result<Option<JobVersion>, StoreError> {
        let (sql, n) = match sel {
            VersionSel::Latest => (
                "SELECT v.version, v.source, v.created_by, v.created_at FROM jobs j \
                 JOIN job_versions v ON v.job_id = j.id AND v.version = j.latest \
                 WHERE j.entity = $1 AND j.name = $2",
                None,
            ),
            VersionSel::Number(n) => (
                "SELECT v.version, v.source, v.created_by, v.created_at FROM jobs j \
                 JOIN job_versions v ON v.job_id = j.id AND v.version = $3 \
                 WHERE j.entity = $1 AND j.name = $2",
                Some(n),
            ),
        };
        let mut q = sqlx::query(sql).bind(entity).bind(name);
        if let Some(n) = n {
            q = q.bind(n);
        }
        let row = q.fetch_optional(self.reader()).await?;
        row.as_ref().map(version_from_row).transpose()
    }

    /// Jobs of the given entities (all when `None`), by entity and name, each with its
    /// latest version only.
    pub async fn list_jobs(&self, entities: Option<&[String]>) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(
            "SELECT j.id, j.entity, j.name, j.description, j.latest, j.created_at, \
             v.version, v.source, v.created_by, v.created_at AS version_created_at \
             FROM jobs j JOIN job_versions v ON v.job_id = j.id AND v.version = j.latest \
             ORDER BY j.entity, j.name",
        )
        .fetch_all(self.reader())
        .await?;
        let mut out = Vec::new();
        for row in &rows {
            let entity: String = row.try_get("entity")?;
            if let Some(es) = entities
                && !es.contains(&entity)
            {
                continue;
            }
            let mut job = job_from_row(row)?.job;
            job.versions.push(JobVersion {
                version: version_label(row.try_get("version")?),
                source: json_col(row, "source")?,
                created_by: row.try_get("created_by")?,
                created_at: to_datetime(row.try_get("version_created_at")?),
            });
            out.push(job);
        }
        Ok(out)
    }

    /// Deletes a job and its versions (runs keep their copy of the source).
    pub async fn delete_job(&self, entity: &str, name: &str) -> Result<(), StoreError> {
        let (entity, name) = (entity.to_string(), name.to_string());
        self.write(move |c| {
            Box::pin(async move {
                let id: Option<String> =
                    sqlx::query_scalar("SELECT id FROM jobs WHERE entity = $1 AND name = $2")
                        .bind(&entity)
                        .bind(&name)
                        .fetch_optional(&mut *c)
                        .await?;
                let Some(id) = id else {
                    return Err(StoreError::NotFound(format!(
                        "no job {entity}/{name}; it was deleted already"
                    )));
                };
                sqlx::query("DELETE FROM job_versions WHERE job_id = $1")
                    .bind(&id)
                    .execute(&mut *c)
                    .await?;
                sqlx::query("DELETE FROM jobs WHERE id = $1")
                    .bind(&id)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        })
        .await
    }
}
