//! Queues.

use hoist_core::api::Queue;
use hoist_core::resource::ResourceType;
use hoist_core::template::TemplateVariable;
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use hoist_core::run::{Actor, RunState};

use super::rows::{corrupt, json_col};
use super::runs::{Current, Effects, HELD, state_lit, transition};
use super::{Dialect, Store, StoreError};
use crate::clock::to_datetime;

const QUEUE_COLUMNS: &str = "id, entity, name, resource, config, template_vars, prioritize, description, created_at, updated_at";

#[derive(Debug, Clone)]
pub struct NewQueue {
    pub entity: String,
    pub name: String,
    pub resource: ResourceType,
    pub config: Value,
    pub template_variables: Vec<TemplateVariable>,
    pub prioritize: bool,
    pub description: String,
}

/// A full replacement of a queue's mutable fields.
#[derive(Debug, Clone)]
pub struct QueueChanges {
    pub config: Value,
    pub template_variables: Vec<TemplateVariable>,
    pub prioritize: bool,
    pub description: String,
}

fn queue_from_row(row: &AnyRow) -> Result<Queue, StoreError> {
    let resource: String = row.try_get("resource")?;
    Ok(Queue {
        id: row.try_get("id")?,
        entity: row.try_get("entity")?,
        name: row.try_get("name")?,
        resource: resource.parse().map_err(corrupt)?,
        config: json_col(row, "config")?,
        template_variables: json_col(row, "template_vars")?,
        prioritize: row.try_get::<i64, _>("prioritize")? != 0,
        description: row.try_get("description")?,
        created_at: to_datetime(row.try_get("created_at")?),
        updated_at: to_datetime(row.try_get("updated_at")?),
        depth: 0,
    })
}

/// Serving rank of a run: its priority when the queue prioritizes, else all equal.
pub fn effective_priority(prioritize: bool, rank: i64) -> i64 {
    if prioritize { rank } else { 0 }
}

impl Store {
    pub async fn create_queue(&self, q: NewQueue, now: i64) -> Result<Queue, StoreError> {
        let id = crate::secrets::new_id(12);
        self.write(move |c| {
            Box::pin(async move {
                let exists: Option<String> =
                    sqlx::query_scalar("SELECT id FROM queues WHERE entity = $1 AND name = $2")
                        .bind(&q.entity)
                        .bind(&q.name)
                        .fetch_optional(&mut *c)
                        .await?;
                if exists.is_some() {
                    return Err(StoreError::Conflict(format!(
                        "queue {}/{} exists already; use `hoist queue update` to change it",
                        q.entity, q.name
                    )));
                }
                sqlx::query(dynsql!(
                    "INSERT INTO queues ({QUEUE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)"
                ))
                .bind(&id)
                .bind(&q.entity)
                .bind(&q.name)
                .bind(q.resource.as_str())
                .bind(q.config.to_string())
                .bind(serde_json::to_string(&q.template_variables).expect("serialisable"))
                .bind(q.prioritize as i64)
                .bind(&q.description)
                .bind(now)
                .execute(&mut *c)
                .await?;
                Ok(Queue {
                    id,
                    entity: q.entity,
                    name: q.name,
                    resource: q.resource,
                    config: q.config,
                    template_variables: q.template_variables,
                    prioritize: q.prioritize,
                    description: q.description,
                    created_at: to_datetime(now),
                    updated_at: to_datetime(now),
                    depth: 0,
                })
            })
        })
        .await
    }

    pub async fn get_queue(&self, entity: &str, name: &str) -> Result<Option<Queue>, StoreError> {
        let row = sqlx::query(dynsql!(
            "SELECT {QUEUE_COLUMNS} FROM queues WHERE entity = $1 AND name = $2"
        ))
        .bind(entity)
        .bind(name)
        .fetch_optional(self.reader())
        .await?;
        row.as_ref().map(queue_from_row).transpose()
    }

    pub async fn get_queue_by_id(&self, id: &str) -> Result<Option<Queue>, StoreError> {
        let row = sqlx::query(dynsql!("SELECT {QUEUE_COLUMNS} FROM queues WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.reader())
            .await?;
        row.as_ref().map(queue_from_row).transpose()
    }

    /// Queues named `name` in any of `entities`.
    pub async fn find_queues_named(
        &self,
        name: &str,
        entities: &[String],
    ) -> Result<Vec<Queue>, StoreError> {
        let mut out = Vec::new();
        for e in entities {
            if let Some(q) = self.get_queue(e, name).await? {
                out.push(q);
            }
        }
        Ok(out)
    }

    /// Queues of the given entities (all when `None`), with their depths.
    pub async fn list_queues(&self, entities: Option<&[String]>) -> Result<Vec<Queue>, StoreError> {
        let rows = sqlx::query(dynsql!(
            "SELECT {QUEUE_COLUMNS} FROM queues ORDER BY entity, name"
        ))
        .fetch_all(self.reader())
        .await?;
        let depths = self.queue_depths().await?;
        let mut out = Vec::new();
        for row in &rows {
            let mut q = queue_from_row(row)?;
            if let Some(es) = entities
                && !es.contains(&q.entity)
            {
                continue;
            }
            q.depth = depths.get(&q.id).copied().unwrap_or(0);
            out.push(q);
        }
        Ok(out)
    }

    /// Number of queued runs per queue id.
    pub async fn queue_depths(&self) -> Result<std::collections::HashMap<String, u64>, StoreError> {
        let rows = sqlx::query(dynsql!(
            "SELECT queue_id, COUNT(*) AS n FROM runs WHERE state = {} GROUP BY queue_id",
            state_lit(RunState::Queued)
        ))
        .fetch_all(self.reader())
        .await?;
        let mut m = std::collections::HashMap::new();
        for r in rows {
            m.insert(r.try_get("queue_id")?, r.try_get::<i64, _>("n")? as u64);
        }
        Ok(m)
    }

    pub async fn queue_depth(&self, queue_id: &str) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(dynsql!(
            "SELECT COUNT(*) FROM runs WHERE queue_id = $1 AND state = {}",
            state_lit(RunState::Queued)
        ))
        .bind(queue_id)
        .fetch_one(self.reader())
        .await?;
        Ok(n as u64)
    }

    pub async fn update_queue(
        &self,
        id: &str,
        ch: QueueChanges,
        now: i64,
    ) -> Result<Queue, StoreError> {
        let id = id.to_string();
        self.write(move |c| {
            Box::pin(async move {
                let before: Option<i64> =
                    sqlx::query_scalar("SELECT prioritize FROM queues WHERE id = $1")
                        .bind(&id)
                        .fetch_optional(&mut *c)
                        .await?;
                let Some(before) = before else {
                    return Err(StoreError::NotFound("the queue was deleted".into()));
                };
                sqlx::query(
                    "UPDATE queues SET config = $1, template_vars = $2, prioritize = $3, description = $4, updated_at = $5 WHERE id = $6",
                )
                .bind(ch.config.to_string())
                .bind(serde_json::to_string(&ch.template_variables).expect("serialisable"))
                .bind(ch.prioritize as i64)
                .bind(&ch.description)
                .bind(now)
                .bind(&id)
                .execute(&mut *c)
                .await?;
                if (before != 0) != ch.prioritize {
                    let eff = if ch.prioritize { "priority" } else { "0" };
                    sqlx::query(dynsql!(
                        "UPDATE runs SET eff_prio = {eff} WHERE queue_id = $1 AND state = {}",
                        state_lit(RunState::Queued)
                    ))
                    .bind(&id)
                    .execute(&mut *c)
                    .await?;
                }
                let row = sqlx::query(dynsql!("SELECT {QUEUE_COLUMNS} FROM queues WHERE id = $1"))
                    .bind(&id)
                    .fetch_one(&mut *c)
                    .await?;
                queue_from_row(&row)
            })
        })
        .await
    }

    /// Deletes a queue. Refused while runs are queued or held by agents, unless
    /// `cancel_queued` (then queued runs are cancelled; held runs still refuse). Each
    /// run is cancelled conditionally, so a claim committed meanwhile by another
    /// replica wins: the deletion is then refused as a whole.
    pub async fn delete_queue(
        &self,
        id: &str,
        cancel_queued: bool,
        actor_name: &str,
        now: i64,
    ) -> Result<u64, StoreError> {
        let id = id.to_string();
        let reason = format!("queue deleted by {actor_name}");
        let dialect = self.dialect();
        self.write(move |c| {
            Box::pin(async move {
                if dialect == Dialect::Postgres {
                    // Wait for launches onto the queue in flight (they hold it `FOR
                    // SHARE`) and keep new ones out, so that the runs read below are
                    // all of them.
                    sqlx::query("SELECT id FROM queues WHERE id = $1 FOR UPDATE")
                        .bind(&id)
                        .fetch_optional(&mut *c)
                        .await?;
                }
                let held: i64 = sqlx::query_scalar(dynsql!(
                    "SELECT COUNT(*) FROM runs WHERE queue_id = $1 AND state IN {}",
                    *HELD
                ))
                .bind(&id)
                .fetch_one(&mut *c)
                .await?;
                if held > 0 {
                    return Err(held_refusal(held));
                }
                let queued: Vec<String> = sqlx::query_scalar(dynsql!(
                    "SELECT id FROM runs WHERE queue_id = $1 AND state = {}",
                    state_lit(RunState::Queued)
                ))
                .bind(&id)
                .fetch_all(&mut *c)
                .await?;
                if !queued.is_empty() && !cancel_queued {
                    return Err(StoreError::Conflict(format!(
                        "{} run(s) are still queued; cancel them or pass force to cancel them with the queue",
                        queued.len()
                    )));
                }
                for run in &queued {
                    let cur = Current {
                        id: run,
                        state: RunState::Queued,
                        started: false,
                    };
                    let fx = Effects::default();
                    if !transition(c, cur, RunState::Cancelled, Actor::User, &reason, now, &fx)
                        .await?
                    {
                        // Claimed meanwhile (another replica): it is held now.
                        return Err(held_refusal(1));
                    }
                }
                let n = sqlx::query("DELETE FROM queues WHERE id = $1")
                    .bind(&id)
                    .execute(&mut *c)
                    .await?
                    .rows_affected();
                if n == 0 {
                    return Err(StoreError::NotFound("the queue was deleted already".into()));
                }
                Ok(queued.len() as u64)
            })
        })
        .await
    }
}

fn held_refusal(held: i64) -> StoreError {
    StoreError::Conflict(format!(
        "{held} run(s) of this queue are held by agents; stop them or wait for them to end"
    ))
}
