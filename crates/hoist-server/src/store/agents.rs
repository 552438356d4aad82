//! Agents: registration, heartbeats, lost agents.

use hoist_core::api::{Agent, AgentStatus, ClaimedRun, HeartbeatResponse};
use hoist_core::run::{Actor, RunState};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::rows::{corrupt, json_col};
use super::runs::{check_session, fetch_run};
use super::{Store, StoreError};
use crate::clock::to_datetime;

const AGENT_COLUMNS: &str = "id, owner, name, host, version, queues, max_jobs, status, session, started_at, last_heartbeat_at";

/// A queue an agent serves.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AgentQueue {
    pub id: String,
    pub entity: String,
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct AgentRecord {
    pub agent: Agent,
    pub session: String,
    pub queues: Vec<AgentQueue>,
}

#[derive(Debug, Clone)]
pub struct NewAgent {
    pub owner: String,
    pub name: String,
    pub host: String,
    pub version: String,
    pub queues: Vec<AgentQueue>,
    pub max_jobs: i64,
}

fn parse_status(s: &str) -> Result<AgentStatus, StoreError> {
    Ok(match s {
        "polling" => AgentStatus::Polling,
        "running" => AgentStatus::Running,
        "stopped" => AgentStatus::Stopped,
        "lost" => AgentStatus::Lost,
        other => return Err(corrupt(format!("agent status {other:?}"))),
    })
}

fn agent_from_row(row: &AnyRow, running: u32) -> Result<AgentRecord, StoreError> {
    let queues: Vec<AgentQueue> = json_col(row, "queues")?;
    let status: String = row.try_get("status")?;
    let mut status = parse_status(&status)?;
    if status == AgentStatus::Polling && running > 0 {
        status = AgentStatus::Running;
    }
    Ok(AgentRecord {
        agent: Agent {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            owner: row.try_get("owner")?,
            host: row.try_get("host")?,
            version: row.try_get("version")?,
            status,
            started_at: to_datetime(row.try_get("started_at")?),
            last_heartbeat_at: to_datetime(row.try_get("last_heartbeat_at")?),
            queues: queues
                .iter()
                .map(|q| format!("{}/{}", q.entity, q.name))
                .collect(),
            max_jobs: row.try_get("max_jobs")?,
            running,
        },
        session: row.try_get("session")?,
        queues,
    })
}

/// Outcome of marking agents lost.
#[derive(Debug, Default)]
pub struct LostAgents {
    pub agents: Vec<String>,
    /// Queues that got runs back.
    pub requeued_queues: Vec<String>,
}

impl Store {
    /// Registers an agent, or re-registers one with the same owner and name (a
    /// restart): the new session supersedes the old one, claimed-but-unstarted runs go
    /// back to their queues, and runs that may still execute are returned for the agent
    /// to re-adopt (with fresh run tokens).
    pub async fn register_agent(
        &self,
        a: NewAgent,
        now: i64,
        token_ttl_ms: i64,
    ) -> Result<(AgentRecord, Vec<ClaimedRun>, Vec<String>), StoreError> {
        self.write(move |c| {
            Box::pin(async move {
                let existing: Option<String> =
                    sqlx::query_scalar("SELECT id FROM agents WHERE owner = $1 AND name = $2")
                        .bind(&a.owner)
                        .bind(&a.name)
                        .fetch_optional(&mut *c)
                        .await?;
                let session = crate::secrets::new_id(16);
                let queues_json = serde_json::to_string(&a.queues).expect("serialisable");
                let id = match existing {
                    Some(id) => {
                        sqlx::query(
                            "UPDATE agents SET host = $1, version = $2, queues = $3, max_jobs = $4, status = 'polling', \
                             session = $5, started_at = $6, last_heartbeat_at = $6 WHERE id = $7",
                        )
                        .bind(&a.host)
                        .bind(&a.version)
                        .bind(&queues_json)
                        .bind(a.max_jobs)
                        .bind(&session)
                        .bind(now)
                        .bind(&id)
                        .execute(&mut *c)
                        .await?;
                        id
                    }
                    None => {
                        let id = format!("ag-{}", crate::secrets::new_id(10));
                        sqlx::query(dynsql!(
                            "INSERT INTO agents ({AGENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, 'polling', $8, $9, $9)"
                        ))
                        .bind(&id)
                        .bind(&a.owner)
                        .bind(&a.name)
                        .bind(&a.host)
                        .bind(&a.version)
                        .bind(&queues_json)
                        .bind(a.max_jobs)
                        .bind(&session)
                        .bind(now)
                        .execute(&mut *c)
                        .await?;
                        id
                    }
                };
                // Runs an earlier session held.
                let held: Vec<String> = sqlx::query_scalar(
                    "SELECT id FROM runs WHERE agent_id = $1 AND state IN ('claimed','building','starting','running','stopping','unknown') ORDER BY seq",
                )
                .bind(&id)
                .fetch_all(&mut *c)
                .await?;
                let mut adopt = Vec::new();
                let mut requeued_queues = Vec::new();
                for rid in held {
                    let (run, qid) = fetch_run(c, &rid).await?;
                    if run.state.may_be_executing() {
                        let token = super::runs::issue_token(c, &rid, now, token_ttl_ms).await?;
                        adopt.push(ClaimedRun { run, token, lease_expires_at: None });
                    } else {
                        let reason = format!("agent {} restarted before starting the run", a.name);
                        if super::runs::requeue(c, &run, Actor::Server, &reason, now, false).await? == RunState::Queued {
                            requeued_queues.push(qid);
                        }
                    }
                }
                let row = sqlx::query(dynsql!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1"))
                    .bind(&id)
                    .fetch_one(&mut *c)
                    .await?;
                let rec = agent_from_row(&row, adopt.len() as u32)?;
                Ok((rec, adopt, requeued_queues))
            })
        })
        .await
    }

    pub async fn get_agent(&self, id: &str) -> Result<Option<AgentRecord>, StoreError> {
        let row = sqlx::query(dynsql!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.reader())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let running = self.agent_running(id).await?;
        Ok(Some(agent_from_row(&row, running)?))
    }

    /// The agent's record without its running count (one query; for the hot paths).
    pub async fn agent_record(&self, id: &str) -> Result<Option<AgentRecord>, StoreError> {
        let row = sqlx::query(dynsql!("SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.reader())
            .await?;
        row.as_ref().map(|r| agent_from_row(r, 0)).transpose()
    }

    async fn agent_running(&self, id: &str) -> Result<u32, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM runs WHERE agent_id = $1 AND state IN ('claimed','building','starting','running','stopping','unknown')",
        )
        .bind(id)
        .fetch_one(self.reader())
        .await?;
        Ok(n as u32)
    }

    pub async fn list_agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        let rows = sqlx::query(dynsql!(
            "SELECT {AGENT_COLUMNS} FROM agents ORDER BY name, id"
        ))
        .fetch_all(self.reader())
        .await?;
        let counts = sqlx::query(
            "SELECT agent_id, COUNT(*) AS n FROM runs WHERE agent_id IS NOT NULL \
             AND state IN ('claimed','building','starting','running','stopping','unknown') GROUP BY agent_id",
        )
        .fetch_all(self.reader())
        .await?;
        let mut m = std::collections::HashMap::new();
        for r in counts {
            m.insert(
                r.try_get::<String, _>("agent_id")?,
                r.try_get::<i64, _>("n")? as u32,
            );
        }
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                agent_from_row(r, m.get(&id).copied().unwrap_or(0))
            })
            .collect()
    }

    /// Records a heartbeat; answers the stop requests and the runs to let go of.
    pub async fn heartbeat(
        &self,
        agent_id: &str,
        session: &str,
        running: Vec<String>,
        now: i64,
    ) -> Result<HeartbeatResponse, StoreError> {
        let agent_id = agent_id.to_string();
        let session = session.to_string();
        self.write(move |c| {
            Box::pin(async move {
                check_session(c, &agent_id, &session).await?;
                sqlx::query(
                    "UPDATE agents SET last_heartbeat_at = $1, status = CASE WHEN status = 'stopped' THEN status ELSE 'polling' END WHERE id = $2",
                )
                .bind(now)
                .bind(&agent_id)
                .execute(&mut *c)
                .await?;
                let stop: Vec<String> = sqlx::query_scalar(
                    "SELECT id FROM runs WHERE agent_id = $1 AND stop_requested = 1 \
                     AND state IN ('claimed','building','starting','running','stopping','unknown')",
                )
                .bind(&agent_id)
                .fetch_all(&mut *c)
                .await?;
                let mut drop = Vec::new();
                for rid in running {
                    let row = sqlx::query("SELECT state, agent_id FROM runs WHERE id = $1")
                        .bind(&rid)
                        .fetch_optional(&mut *c)
                        .await?;
                    let keep = match row {
                        Some(r) => {
                            let st: String = r.try_get("state")?;
                            let holder: Option<String> = r.try_get("agent_id")?;
                            let st: RunState = st.parse().map_err(corrupt)?;
                            !st.is_terminal() && holder.as_deref() == Some(agent_id.as_str())
                        }
                        None => false,
                    };
                    if !keep {
                        drop.push(rid);
                    }
                }
                Ok(HeartbeatResponse { stop, drop })
            })
        })
        .await
    }

    /// Marks an agent stopped (clean shutdown). Its unstarted claims go back to their
    /// queues; running runs stay with it (a restarted agent re-adopts them), and become
    /// `unknown` only if it does not come back in time. Returns queue ids to wake.
    pub async fn deregister_agent(
        &self,
        agent_id: &str,
        session: &str,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        let agent_id = agent_id.to_string();
        let session = session.to_string();
        self.write(move |c| {
            Box::pin(async move {
                check_session(c, &agent_id, &session).await?;
                sqlx::query(
                    "UPDATE agents SET status = 'stopped', last_heartbeat_at = $1 WHERE id = $2",
                )
                .bind(now)
                .bind(&agent_id)
                .execute(&mut *c)
                .await?;
                let held: Vec<String> = sqlx::query_scalar(
                    "SELECT id FROM runs WHERE agent_id = $1 AND state IN ('claimed','building')",
                )
                .bind(&agent_id)
                .fetch_all(&mut *c)
                .await?;
                let mut queues = Vec::new();
                for rid in held {
                    let (run, qid) = fetch_run(c, &rid).await?;
                    if super::runs::requeue(
                        c,
                        &run,
                        Actor::Server,
                        "agent shut down before starting the run",
                        now,
                        false,
                    )
                    .await?
                        == RunState::Queued
                    {
                        queues.push(qid);
                    }
                }
                Ok(queues)
            })
        })
        .await
    }

    /// Agents silent for longer than `lost_after_ms` become `lost`; their unstarted
    /// claims are re-queued and their executing runs become `unknown`.
    pub async fn mark_lost_agents(
        &self,
        now: i64,
        lost_after_ms: i64,
    ) -> Result<LostAgents, StoreError> {
        self.write(move |c| {
            Box::pin(async move {
                let ids: Vec<String> = sqlx::query_scalar(
                    "SELECT id FROM agents WHERE status IN ('polling','running','stopped') AND last_heartbeat_at < $1",
                )
                .bind(now - lost_after_ms)
                .fetch_all(&mut *c)
                .await?;
                let mut out = LostAgents::default();
                for id in ids {
                    let status: String = sqlx::query_scalar("SELECT status FROM agents WHERE id = $1")
                        .bind(&id)
                        .fetch_one(&mut *c)
                        .await?;
                    let held: Vec<String> = sqlx::query_scalar(
                        "SELECT id FROM runs WHERE agent_id = $1 AND state IN ('claimed','building','starting','running','stopping')",
                    )
                    .bind(&id)
                    .fetch_all(&mut *c)
                    .await?;
                    // A cleanly stopped agent with nothing left running stays `stopped`.
                    if status == "stopped" && held.is_empty() {
                        continue;
                    }
                    sqlx::query("UPDATE agents SET status = 'lost' WHERE id = $1")
                        .bind(&id)
                        .execute(&mut *c)
                        .await?;
                    for rid in held {
                        let (run, qid) = fetch_run(c, &rid).await?;
                        let agent = run.agent.as_ref().map(|a| a.name.clone()).unwrap_or_default();
                        if run.state.may_be_executing() {
                            let reason = format!("agent {agent} lost (no heartbeat for {}s); waiting for it to come back", lost_after_ms / 1000);
                            super::runs::set_state(c, &run, RunState::Unknown, Actor::Server, &reason, now).await?;
                        } else {
                            let reason = format!("agent {agent} lost before starting the run");
                            if super::runs::requeue(c, &run, Actor::Server, &reason, now, false).await? == RunState::Queued {
                                out.requeued_queues.push(qid);
                            }
                        }
                    }
                    out.agents.push(id);
                }
                Ok(out)
            })
        })
        .await
    }

    /// Agents by status, for metrics.
    pub async fn agents_by_status(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM agents GROUP BY status")
            .fetch_all(self.reader())
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
            .collect()
    }
}
