//! Agents: registration, sessions, heartbeats, lost agents.
//!
//! # Sessions
//! Every registration starts a session (`agent_sessions`); a re-registration of the
//! same agent (owner and name) supersedes the previous one. A session can also be
//! ended by the server, when the agent's owner loses access to one of its queues
//! (removed from the team, the API key it registered with revoked, the user deleted):
//! that is checked on every claim and heartbeat, fresh from the database, and the
//! revoking request ends the sessions it affects at once. A request naming a session
//! is answered accordingly: superseded, ended (with the reason), or unknown (never
//! issued to this agent).

use hoist_core::api::{Agent, AgentStatus, ClaimedRun, HeartbeatResponse};
use hoist_core::run::{Actor, RunState};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::rows::{corrupt, corrupt_from, json_col};
use super::runs::{Effects, HELD, HELD_LIVE, HELD_UNSTARTED, held_by, requeue, transition};
use super::{Conn, Store, StoreError};
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
    /// The API key the agent registers with: revoking it ends the agent's session.
    pub key_id: String,
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
        other => return Err(corrupt(format!("column agents.status: {other:?}"))),
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
        let max_requeues = self.options().max_requeues;
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
                             session = $5, started_at = $6, last_heartbeat_at = $6, key_id = $7 WHERE id = $8",
                        )
                        .bind(&a.host)
                        .bind(&a.version)
                        .bind(&queues_json)
                        .bind(a.max_jobs)
                        .bind(&session)
                        .bind(now)
                        .bind(&a.key_id)
                        .bind(&id)
                        .execute(&mut *c)
                        .await?;
                        sqlx::query(
                            "UPDATE agent_sessions SET ended_at = $1, end_code = 'superseded', \
                             end_reason = 'replaced by a newer registration' WHERE agent_id = $2 AND ended_at IS NULL",
                        )
                        .bind(now)
                        .bind(&id)
                        .execute(&mut *c)
                        .await?;
                        id
                    }
                    None => {
                        let id = format!("ag-{}", crate::secrets::new_id(10));
                        sqlx::query(dynsql!(
                            "INSERT INTO agents ({AGENT_COLUMNS}, key_id) VALUES ($1, $2, $3, $4, $5, $6, $7, 'polling', $8, $9, $9, $10)"
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
                        .bind(&a.key_id)
                        .execute(&mut *c)
                        .await?;
                        id
                    }
                };
                sqlx::query(
                    "INSERT INTO agent_sessions (session, agent_id, started_at) VALUES ($1, $2, $3)",
                )
                .bind(&session)
                .bind(&id)
                .bind(now)
                .execute(&mut *c)
                .await?;
                // Runs an earlier session held.
                let mut adopt = Vec::new();
                let mut requeued_queues = Vec::new();
                for (run, qid) in held_by(c, &id, &HELD).await? {
                    if run.state.may_be_executing() {
                        let token = super::runs::issue_token(c, &run.id, now, token_ttl_ms).await?;
                        adopt.push(ClaimedRun { run, token, lease_expires_at: None });
                    } else {
                        let reason = format!("agent {} restarted before starting the run", a.name);
                        if requeue(c, &run, Actor::Server, &reason, now, max_requeues).await? == Some(RunState::Queued) {
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
        let n: i64 = sqlx::query_scalar(dynsql!(
            "SELECT COUNT(*) FROM runs WHERE agent_id = $1 AND state IN {}",
            *HELD
        ))
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
        let counts = sqlx::query(dynsql!(
            "SELECT agent_id, COUNT(*) AS n FROM runs WHERE agent_id IS NOT NULL \
             AND state IN {} GROUP BY agent_id",
            *HELD
        ))
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

    /// Records a heartbeat; answers the stop requests and the runs to let go of. The
    /// session and the owner's access are checked as for a claim
    /// ([`Store::claim`](super::Store::claim)).
    pub async fn heartbeat(
        &self,
        agent_id: &str,
        session: &str,
        running: Vec<String>,
        now: i64,
    ) -> Result<HeartbeatResponse, StoreError> {
        let agent_id = agent_id.to_string();
        let session = session.to_string();
        let max_requeues = self.options().max_requeues;
        self.write(move |c| {
            Box::pin(async move {
                if let Standing::Ended(e) =
                    check_agent(c, &agent_id, &session, Check::Access, now, max_requeues).await?
                {
                    return Ok(Err(e));
                }
                sqlx::query(
                    "UPDATE agents SET last_heartbeat_at = $1, status = CASE WHEN status = 'stopped' THEN status ELSE 'polling' END WHERE id = $2",
                )
                .bind(now)
                .bind(&agent_id)
                .execute(&mut *c)
                .await?;
                let stop: Vec<String> = sqlx::query_scalar(dynsql!(
                    "SELECT id FROM runs WHERE agent_id = $1 AND stop_requested = 1 AND state IN {}",
                    *HELD
                ))
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
                            let st: RunState =
                                st.parse().map_err(|e| corrupt_from("column runs.state", e))?;
                            !st.is_terminal() && holder.as_deref() == Some(agent_id.as_str())
                        }
                        None => false,
                    };
                    if !keep {
                        drop.push(rid);
                    }
                }
                Ok(Ok(HeartbeatResponse { stop, drop }))
            })
        })
        .await?
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
        let max_requeues = self.options().max_requeues;
        self.write(move |c| {
            Box::pin(async move {
                check_agent(c, &agent_id, &session, Check::Session, now, max_requeues).await?;
                sqlx::query(
                    "UPDATE agents SET status = 'stopped', last_heartbeat_at = $1 WHERE id = $2",
                )
                .bind(now)
                .bind(&agent_id)
                .execute(&mut *c)
                .await?;
                let mut queues = Vec::new();
                for (run, qid) in held_by(c, &agent_id, &HELD_UNSTARTED).await? {
                    let reason = "agent shut down before starting the run";
                    if requeue(c, &run, Actor::Server, reason, now, max_requeues).await?
                        == Some(RunState::Queued)
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
        let ids: Vec<String> = sqlx::query_scalar(dynsql!(
            "SELECT id FROM agents WHERE status <> 'lost' AND last_heartbeat_at < $1 ORDER BY id LIMIT {}",
            super::runs::REAP_PAGE
        ))
        .bind(now - lost_after_ms)
        .fetch_all(self.reader())
        .await?;
        let done = self
            .each_row("mark an agent lost", ids, |id| {
                self.mark_agent_lost(id, now, lost_after_ms)
            })
            .await;
        let mut out = LostAgents::default();
        for (id, queues) in done.into_iter().flatten() {
            out.agents.push(id);
            out.requeued_queues.extend(queues);
        }
        out.agents.sort();
        Ok(out)
    }

    /// One agent of [`Store::mark_lost_agents`], checked again inside its own write:
    /// the agent and the queues that got runs back, if it was marked lost.
    async fn mark_agent_lost(
        &self,
        id: String,
        now: i64,
        lost_after_ms: i64,
    ) -> Result<Option<(String, Vec<String>)>, StoreError> {
        let max_requeues = self.options().max_requeues;
        let dialect = self.dialect();
        self.write(move |c| {
            Box::pin(async move {
                super::runs::reaper_row_write(c, dialect).await?;
                let status: Option<String> = sqlx::query_scalar(
                    "SELECT status FROM agents WHERE id = $1 AND status <> 'lost' AND last_heartbeat_at < $2",
                )
                .bind(&id)
                .bind(now - lost_after_ms)
                .fetch_optional(&mut *c)
                .await?;
                let Some(status) = status else {
                    return Ok(None);
                };
                let held = held_by(c, &id, &HELD_LIVE).await?;
                // A cleanly stopped agent with nothing left running stays `stopped`.
                if status == "stopped" && held.is_empty() {
                    return Ok(None);
                }
                sqlx::query("UPDATE agents SET status = 'lost' WHERE id = $1")
                    .bind(&id)
                    .execute(&mut *c)
                    .await?;
                let mut queues = Vec::new();
                for (run, qid) in held {
                    let agent = run.agent.as_ref().map(|a| a.name.clone()).unwrap_or_default();
                    if run.state.may_be_executing() {
                        let reason = format!("agent {agent} lost (no heartbeat for {}s); waiting for it to come back", lost_after_ms / 1000);
                        transition(c, (&run).into(), RunState::Unknown, Actor::Server, &reason, now, &Effects::default()).await?;
                    } else {
                        let reason = format!("agent {agent} lost before starting the run");
                        if requeue(c, &run, Actor::Server, &reason, now, max_requeues).await? == Some(RunState::Queued) {
                            queues.push(qid);
                        }
                    }
                }
                Ok(Some((id, queues)))
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

/// How much of an agent's standing [`check_agent`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// The session only (run reports, deregistration).
    Session,
    /// The session, and that the owner may still use every queue the agent serves
    /// (claims, heartbeats).
    Access,
}

/// The outcome of [`check_agent`] when the session itself was valid.
#[derive(Debug)]
pub(crate) enum Standing {
    Live,
    /// The owner lost access: the session was ended in this transaction. The caller
    /// commits, then answers this error.
    Ended(StoreError),
}

const STANDING_SQL: &str = "SELECT a.session AS current_session, a.owner, a.name, a.queues, \
    u.admin, u.deleted_at, k.revoked_at, s.agent_id AS session_agent, s.ended_at, s.end_code, s.end_reason \
    FROM agents a JOIN users u ON u.name = a.owner \
    LEFT JOIN api_keys k ON k.id = a.key_id \
    LEFT JOIN agent_sessions s ON s.session = $2 \
    WHERE a.id = $1";

/// Checks, inside a write transaction, that `session` is the agent's live session
/// (else: `NotFound`, `Superseded`, `SessionEnded` or `UnknownSession`), and with
/// [`Check::Access`] that its owner still exists, the key it registered with is not
/// revoked, and the owner may use the entity of every queue it serves (their own, a
/// team they belong to, or any as an admin), all read fresh. An owner who lost access
/// ends the session here ([`end_session`]) and gets [`Standing::Ended`].
pub(crate) async fn check_agent(
    c: &mut Conn,
    agent_id: &str,
    session: &str,
    check: Check,
    now: i64,
    max_requeues: u32,
) -> Result<Standing, StoreError> {
    let row = sqlx::query(STANDING_SQL)
        .bind(agent_id)
        .bind(session)
        .fetch_optional(&mut *c)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no agent with id {agent_id:?}")))?;
    let name: String = row.try_get("name")?;
    let session_agent: Option<String> = row.try_get("session_agent")?;
    if session_agent.as_deref() != Some(agent_id) {
        return Err(StoreError::UnknownSession(format!(
            "agent {name} has no such session: this server never issued it to this agent (a made-up session, or one from another server); register the agent again"
        )));
    }
    if row.try_get::<Option<i64>, _>("ended_at")?.is_some() {
        let code: Option<String> = row.try_get("end_code")?;
        let reason: Option<String> = row.try_get("end_reason")?;
        return Err(match code.as_deref() {
            Some("access") => session_ended(&name, reason.as_deref().unwrap_or("access lost")),
            _ => superseded(),
        });
    }
    let current: String = row.try_get("current_session")?;
    if current != session {
        return Err(superseded());
    }
    if check == Check::Session {
        return Ok(Standing::Live);
    }
    let owner: String = row.try_get("owner")?;
    let lost = if row.try_get::<Option<i64>, _>("deleted_at")?.is_some() {
        Some(format!("its owner, user {owner}, was deleted"))
    } else if row.try_get::<Option<i64>, _>("revoked_at")?.is_some() {
        Some(format!(
            "the API key it registered with was revoked (user {owner})"
        ))
    } else if row.try_get::<i64, _>("admin")? != 0 {
        None
    } else {
        let queues: Vec<AgentQueue> = json_col(&row, "queues")?;
        let mut lost = None;
        let mut teams: Option<Vec<String>> = None;
        for q in queues.iter().filter(|q| q.entity != owner) {
            if teams.is_none() {
                teams = Some(
                    sqlx::query_scalar("SELECT team FROM team_members WHERE user_name = $1")
                        .bind(&owner)
                        .fetch_all(&mut *c)
                        .await?,
                );
            }
            if !teams.as_ref().is_some_and(|t| t.contains(&q.entity)) {
                lost = Some(format!(
                    "its owner, user {owner}, may no longer use queue {}/{} (not a member of team {})",
                    q.entity, q.name, q.entity
                ));
                break;
            }
        }
        lost
    };
    let Some(reason) = lost else {
        return Ok(Standing::Live);
    };
    end_session(c, agent_id, &name, &reason, now, max_requeues).await?;
    Ok(Standing::Ended(session_ended(&name, &reason)))
}

fn superseded() -> StoreError {
    StoreError::Superseded(
        "this agent session was replaced by a newer registration under the same name; this process must stop".into(),
    )
}

fn session_ended(agent: &str, reason: &str) -> StoreError {
    StoreError::SessionEnded(format!(
        "the server ended the session of agent {agent}: {reason}; this agent process must stop (register it again with queues its owner may use)"
    ))
}

/// Ends an agent's live session because its owner lost access (`reason`): the agent
/// becomes `stopped`, runs it claimed but did not start go back to their queues, and
/// runs that may be executing become `unknown` (failed after the grace period unless
/// the agent re-registers and re-adopts them). Returns the ids of queues that got runs
/// back.
pub(crate) async fn end_session(
    c: &mut Conn,
    agent_id: &str,
    agent_name: &str,
    reason: &str,
    now: i64,
    max_requeues: u32,
) -> Result<Vec<String>, StoreError> {
    sqlx::query(
        "UPDATE agent_sessions SET ended_at = $1, end_code = 'access', end_reason = $2 \
         WHERE agent_id = $3 AND ended_at IS NULL",
    )
    .bind(now)
    .bind(reason)
    .bind(agent_id)
    .execute(&mut *c)
    .await?;
    sqlx::query("UPDATE agents SET status = 'stopped' WHERE id = $1")
        .bind(agent_id)
        .execute(&mut *c)
        .await?;
    let why = format!("agent {agent_name}'s session was ended: {reason}");
    let mut queues = Vec::new();
    for (run, qid) in held_by(c, agent_id, &HELD).await? {
        if !run.state.may_be_executing() {
            if requeue(c, &run, Actor::Server, &why, now, max_requeues).await?
                == Some(RunState::Queued)
            {
                queues.push(qid);
            }
        } else if run.state != RunState::Unknown {
            transition(
                c,
                (&run).into(),
                RunState::Unknown,
                Actor::Server,
                &why,
                now,
                &Effects::default(),
            )
            .await?;
        }
    }
    Ok(queues)
}

/// Agents whose sessions a revocation ended: wake them (their waiting claims answer
/// the error) and the queues that got runs back.
#[derive(Debug, Default)]
pub struct EndedSessions {
    pub agents: Vec<String>,
    pub requeued_queues: Vec<String>,
}

/// Which agents a revocation concerns.
pub(crate) enum Revoked<'a> {
    /// Agents registered with this API key.
    Key(&'a str),
    /// Every agent of this user (deleted).
    User(&'a str),
    /// Agents of this user serving queues of this team (removed from it).
    Membership { user: &'a str, team: &'a str },
}

/// Ends the live sessions a revocation affects, in the revoking transaction.
pub(crate) async fn end_sessions(
    c: &mut Conn,
    which: Revoked<'_>,
    reason: &str,
    now: i64,
    max_requeues: u32,
) -> Result<EndedSessions, StoreError> {
    let live = "SELECT a.id, a.name, a.queues, a.owner FROM agents a \
        JOIN agent_sessions s ON s.session = a.session AND s.ended_at IS NULL";
    let rows = match which {
        Revoked::Key(k) => {
            sqlx::query(dynsql!("{live} WHERE a.key_id = $1"))
                .bind(k)
                .fetch_all(&mut *c)
                .await?
        }
        Revoked::User(u) | Revoked::Membership { user: u, .. } => {
            sqlx::query(dynsql!("{live} WHERE a.owner = $1"))
                .bind(u)
                .fetch_all(&mut *c)
                .await?
        }
    };
    if let Revoked::Membership { user, .. } = which {
        let admin: Option<i64> = sqlx::query_scalar("SELECT admin FROM users WHERE name = $1")
            .bind(user)
            .fetch_optional(&mut *c)
            .await?;
        if admin.unwrap_or(0) != 0 {
            // Admins may use every entity, member or not.
            return Ok(EndedSessions::default());
        }
    }
    let mut out = EndedSessions::default();
    for row in rows {
        if let Revoked::Membership { team, .. } = which {
            let queues: Vec<AgentQueue> = json_col(&row, "queues")?;
            if !queues.iter().any(|q| q.entity == team) {
                continue;
            }
        }
        let id: String = row.try_get("id")?;
        let name: String = row.try_get("name")?;
        out.requeued_queues
            .extend(end_session(c, &id, &name, reason, now, max_requeues).await?);
        out.agents.push(id);
    }
    Ok(out)
}
