//! Runs: launch, claim, transitions, cancel and stop, the lease and grace reapers.

use hoist_core::api::{ClaimedRun, Failure, Run, RunUpdate, Transition};
use hoist_core::resource::ResourceType;
use hoist_core::run::{Actor, FailureStage, Priority, RunState, check_transition};
use serde_json::Value;
use sqlx::Row;

use super::rows::{RUN_COLUMNS, RunSpec, corrupt, run_from_row};
use super::{Conn, Dialect, Store, StoreError};
use crate::clock::to_datetime;
use crate::secrets::{CredentialKind, new_credential};

/// How many times a run may lose its lease before it is failed instead of re-queued.
pub const MAX_LEASE_LAPSES: i64 = 5;
/// How many times a run may be handed to an agent (preemptions included).
pub const MAX_ATTEMPTS: i64 = 5;

#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub queue_id: String,
    pub entity: String,
    pub queue_name: String,
    pub project: String,
    pub name: String,
    pub spec: RunSpec,
    pub resource: ResourceType,
    pub resource_config: Value,
    pub priority: Priority,
    pub prioritize: bool,
    pub created_by: String,
}

#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub queue_id: Option<String>,
    /// Only runs of these entities (`None`: all).
    pub entities: Option<Vec<String>>,
    pub state: Option<RunState>,
    pub limit: i64,
    /// Only runs launched before this cursor (a run sequence number).
    pub before: Option<i64>,
}

/// The agent asking, as the store needs it.
#[derive(Debug, Clone)]
pub struct Claimer {
    pub agent_id: String,
    pub agent_name: String,
    pub session: String,
}

#[derive(Debug, Clone)]
pub struct ClaimParams {
    /// Queue ids in the order they should be served this time.
    pub queue_ids: Vec<String>,
    pub max: usize,
    pub lease_ms: i64,
    pub token_ttl_ms: i64,
}

/// What a state change did, for the caller's notifications.
#[derive(Debug, Clone)]
pub struct Changed {
    pub run: Run,
    pub queue_id: String,
    pub from: RunState,
}

/// Runs per multi-row launch INSERT (14 parameters each).
const LAUNCH_CHUNK: usize = 64;

/// The run a launch stores, as it is stored.
pub(crate) fn queued_run(r: NewRun, now: i64) -> Run {
    Run {
        state_reason: format!("launched by {}", r.created_by),
        id: r.id,
        entity: r.entity,
        queue: r.queue_name,
        project: r.project,
        name: r.name,
        image: r.spec.image,
        job: r.spec.job,
        job_source: r.spec.job_source,
        entry_point: r.spec.entry_point,
        args: r.spec.args,
        env: r.spec.env,
        config: r.spec.config,
        resource_args: r.spec.resource_args,
        template_values: r.spec.template_values,
        priority: r.priority,
        resource: r.resource,
        resource_config: r.resource_config,
        state: RunState::Queued,
        stop_requested: false,
        created_by: r.created_by,
        created_at: to_datetime(now),
        updated_at: to_datetime(now),
        started_at: None,
        ended_at: None,
        agent: None,
        attempts: 0,
        exit_code: None,
        failure: None,
        timeline: None,
    }
}

/// Inserts launches with as few statements as possible: one query for which of their
/// queues still exist, then multi-row INSERTs. A launch onto a deleted queue gets its
/// own error; the others go through. (The transitions come from the trigger.)
pub(crate) async fn insert_launches(
    c: &mut Conn,
    launches: Vec<(NewRun, i64)>,
) -> Result<Vec<Result<Run, StoreError>>, StoreError> {
    let mut queue_ids: Vec<&str> = launches.iter().map(|(r, _)| r.queue_id.as_str()).collect();
    queue_ids.sort_unstable();
    queue_ids.dedup();
    let ps: Vec<String> = (1..=queue_ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!("SELECT id FROM queues WHERE id IN ({})", ps.join(", "));
    let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(&sql[..]));
    for id in &queue_ids {
        q = q.bind(*id);
    }
    let existing: std::collections::HashSet<String> =
        q.fetch_all(&mut *c).await?.into_iter().collect();
    let mut out: Vec<Option<Result<Run, StoreError>>> = Vec::with_capacity(launches.len());
    let mut ok: Vec<(usize, NewRun, i64)> = Vec::new();
    for (i, (r, now)) in launches.into_iter().enumerate() {
        if existing.contains(&r.queue_id) {
            out.push(None);
            ok.push((i, r, now));
        } else {
            out.push(Some(Err(StoreError::NotFound(format!(
                "queue {}/{} was deleted; launch onto another queue",
                r.entity, r.queue_name
            )))));
        }
    }
    for chunk in ok.chunks(LAUNCH_CHUNK) {
        let mut sql = String::from(
            "INSERT INTO runs (id, queue_id, entity, queue_name, project, name, spec, resource, resource_config, \
             priority, eff_prio, state, state_reason, state_actor, created_by, created_at, updated_at) VALUES ",
        );
        for (n, _) in chunk.iter().enumerate() {
            let b = n * 14;
            if n > 0 {
                sql.push_str(", ");
            }
            sql += &format!(
                "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, 'queued', ${}, 'user', ${}, ${}, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7,
                b + 8,
                b + 9,
                b + 10,
                b + 11,
                b + 12,
                b + 13,
                b + 14,
                b + 14
            );
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(&sql[..]));
        for (_, r, now) in chunk {
            let rank = r.priority.rank();
            q = q
                .bind(r.id.clone())
                .bind(r.queue_id.clone())
                .bind(r.entity.clone())
                .bind(r.queue_name.clone())
                .bind(r.project.clone())
                .bind(r.name.clone())
                .bind(serde_json::to_string(&r.spec).expect("serialisable"))
                .bind(r.resource.as_str())
                .bind(r.resource_config.to_string())
                .bind(rank)
                .bind(super::queues::effective_priority(r.prioritize, rank))
                .bind(format!("launched by {}", r.created_by))
                .bind(r.created_by.clone())
                .bind(*now);
        }
        match q.execute(&mut *c).await {
            Ok(_) => {
                for (i, r, now) in chunk {
                    out[*i] = Some(Ok(queued_run(r.clone(), *now)));
                }
            }
            Err(e) => {
                let e = StoreError::from(e);
                for (i, _, _) in chunk {
                    out[*i] = Some(Err(e.clone()));
                }
            }
        }
    }
    Ok(out
        .into_iter()
        .map(|o| o.expect("every launch answered"))
        .collect())
}

pub(crate) async fn insert_transition(
    c: &mut Conn,
    run_id: &str,
    from: Option<&str>,
    to: &str,
    at: i64,
    actor: &str,
    reason: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO run_transitions (run_id, from_state, to_state, at, actor, reason) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(run_id)
    .bind(from)
    .bind(to)
    .bind(at)
    .bind(actor)
    .bind(reason)
    .execute(&mut *c)
    .await?;
    Ok(())
}

pub(crate) async fn fetch_run(c: &mut Conn, id: &str) -> Result<(Run, String), StoreError> {
    let row = sqlx::query(dynsql!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *c)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no run with id {id:?}")))?;
    Ok((run_from_row(&row)?, row.try_get("queue_id")?))
}

/// Moves a run to `to`, recording the transition; `extra` sets further columns.
pub(crate) async fn set_state(
    c: &mut Conn,
    run: &Run,
    to: RunState,
    actor: Actor,
    reason: &str,
    now: i64,
) -> Result<(), StoreError> {
    set_state_full(c, run, to, actor, reason, now, &Extras::default()).await
}

/// Columns a state change may set along with the state.
#[derive(Debug, Default)]
pub(crate) struct Extras {
    pub exit_code: Option<i32>,
    pub failure: Option<String>,
    pub stop_requested: bool,
}

/// Moves a run to `to` (checked), sets `extras`, records the transition: two statements.
pub(crate) async fn set_state_full(
    c: &mut Conn,
    run: &Run,
    to: RunState,
    actor: Actor,
    reason: &str,
    now: i64,
    extras: &Extras,
) -> Result<(), StoreError> {
    check_transition(run.state, to, actor)?;
    let ended = to.is_terminal().then_some(now);
    let started = (to == RunState::Running && run.started_at.is_none()).then_some(now);
    let n = sqlx::query(
        "UPDATE runs SET state = $1, state_reason = $2, state_actor = $11, updated_at = $3, \
         ended_at = COALESCE($4, ended_at), started_at = COALESCE($5, started_at), \
         lease_expires_at = CASE WHEN $1 = 'claimed' THEN lease_expires_at ELSE NULL END, \
         unknown_since = CASE WHEN $1 = 'unknown' THEN $3 ELSE NULL END, \
         exit_code = COALESCE($8, exit_code), failure = COALESCE($9, failure), \
         stop_requested = CASE WHEN $10 = 1 THEN 1 ELSE stop_requested END \
         WHERE id = $6 AND state = $7",
    )
    .bind(to.as_str())
    .bind(reason)
    .bind(now)
    .bind(ended)
    .bind(started)
    .bind(&run.id)
    .bind(run.state.as_str())
    .bind(extras.exit_code.map(i64::from))
    .bind(extras.failure.as_deref())
    .bind(extras.stop_requested as i64)
    .bind(actor.to_string())
    .execute(&mut *c)
    .await?
    .rows_affected();
    if n == 0 {
        // Another writer (another server replica) moved the run first.
        return Err(StoreError::Conflict(format!(
            "run {} changed while this request was handled; retry",
            run.id
        )));
    }
    Ok(())
}

/// Puts a claimed/held run back in its queue (lease lapse, release, lost agent,
/// preemption), or fails it when it has been handed out too often.
pub(crate) async fn requeue(
    c: &mut Conn,
    run: &Run,
    actor: Actor,
    reason: &str,
    now: i64,
    count_lapse: bool,
) -> Result<RunState, StoreError> {
    let lapses: i64 = sqlx::query_scalar("SELECT lapses FROM runs WHERE id = $1")
        .bind(&run.id)
        .fetch_one(&mut *c)
        .await?;
    let lapses = lapses + count_lapse as i64;
    if lapses >= MAX_LEASE_LAPSES || run.attempts as i64 >= MAX_ATTEMPTS {
        let msg = format!(
            "{reason}; the run was handed to agents {} times without completing, so it is failed instead of re-queued",
            run.attempts
        );
        set_state(c, run, RunState::Failed, Actor::Server, &msg, now).await?;
        set_failure(c, &run.id, FailureStage::Agent, &msg).await?;
        return Ok(RunState::Failed);
    }
    set_state(c, run, RunState::Queued, actor, reason, now).await?;
    sqlx::query("UPDATE runs SET agent_id = NULL, agent_name = NULL, stop_pending = 0, lapses = $1 WHERE id = $2")
        .bind(lapses)
        .bind(&run.id)
        .execute(&mut *c)
        .await?;
    Ok(RunState::Queued)
}

async fn set_failure(
    c: &mut Conn,
    run_id: &str,
    stage: FailureStage,
    message: &str,
) -> Result<(), StoreError> {
    let f = Failure {
        stage,
        message: message.to_string(),
        log_tail: vec![],
    };
    sqlx::query("UPDATE runs SET failure = $1 WHERE id = $2")
        .bind(serde_json::to_string(&f).expect("serialisable"))
        .bind(run_id)
        .execute(&mut *c)
        .await?;
    Ok(())
}

pub(crate) async fn issue_token(
    c: &mut Conn,
    run_id: &str,
    now: i64,
    ttl_ms: i64,
) -> Result<hoist_core::secret::Secret, StoreError> {
    let (id, token, hash) = new_credential(CredentialKind::RunToken);
    sqlx::query(
        "INSERT INTO run_tokens (id, run_id, secret_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&id)
    .bind(run_id)
    .bind(&hash)
    .bind(now)
    .bind(now + ttl_ms)
    .execute(&mut *c)
    .await?;
    Ok(token)
}

impl Store {
    /// Enqueues a run. Durable when this returns.
    pub async fn launch(&self, r: NewRun, now: i64) -> Result<Run, StoreError> {
        if self.dialect() == Dialect::Sqlite {
            // Launches waiting together go into one multi-row INSERT.
            return self.launch_via_writer(r, now).await;
        }
        self.write(move |c| {
            Box::pin(async move {
                let mut out = insert_launches(c, vec![(r, now)]).await?;
                out.pop().expect("one result")
            })
        })
        .await
    }

    /// A run and the id of its queue.
    pub async fn get_run(&self, id: &str) -> Result<Option<(Run, String)>, StoreError> {
        let row = sqlx::query(dynsql!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.reader())
            .await?;
        match row {
            Some(row) => Ok(Some((run_from_row(&row)?, row.try_get("queue_id")?))),
            None => Ok(None),
        }
    }

    pub async fn timeline(&self, id: &str) -> Result<Vec<Transition>, StoreError> {
        let rows = sqlx::query(
            "SELECT from_state, to_state, at, actor, reason FROM run_transitions WHERE run_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|r| {
                let from: Option<String> = r.try_get("from_state")?;
                let to: String = r.try_get("to_state")?;
                let actor: String = r.try_get("actor")?;
                Ok(Transition {
                    from: from.map(|f| f.parse().map_err(corrupt)).transpose()?,
                    to: to.parse().map_err(corrupt)?,
                    at: to_datetime(r.try_get("at")?),
                    actor: serde_json::from_value(Value::String(actor)).map_err(corrupt)?,
                    reason: r.try_get("reason")?,
                })
            })
            .collect()
    }

    /// Newest first. Returns the runs and the cursor of the next page.
    pub async fn list_runs(&self, f: &RunFilter) -> Result<(Vec<Run>, Option<i64>), StoreError> {
        let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE 1 = 1");
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if f.queue_id.is_some() {
            sql += &format!(" AND queue_id = {}", next());
        }
        if f.state.is_some() {
            sql += &format!(" AND state = {}", next());
        }
        if f.before.is_some() {
            sql += &format!(" AND seq < {}", next());
        }
        if let Some(es) = &f.entities {
            if es.is_empty() {
                return Ok((vec![], None));
            }
            let ps: Vec<String> = es.iter().map(|_| next()).collect();
            sql += &format!(" AND entity IN ({})", ps.join(", "));
        }
        sql += &format!(" ORDER BY seq DESC LIMIT {}", next());
        let mut q = sqlx::query(sqlx::AssertSqlSafe(&sql[..]));
        if let Some(qid) = &f.queue_id {
            q = q.bind(qid);
        }
        if let Some(s) = f.state {
            q = q.bind(s.as_str());
        }
        if let Some(b) = f.before {
            q = q.bind(b);
        }
        if let Some(es) = &f.entities {
            for e in es {
                q = q.bind(e);
            }
        }
        let limit = f.limit.clamp(1, 1000);
        q = q.bind(limit + 1);
        let rows = q.fetch_all(self.reader()).await?;
        let mut runs = Vec::with_capacity(rows.len());
        let mut cursor = None;
        for (i, row) in rows.iter().enumerate() {
            if i as i64 == limit {
                break;
            }
            runs.push(run_from_row(row)?);
            cursor = Some(row.try_get::<i64, _>("seq")?);
        }
        let next_cursor = if rows.len() as i64 > limit {
            cursor
        } else {
            None
        };
        Ok((runs, next_cursor))
    }

    /// Hands up to `max` queued runs to an agent: in priority-then-FIFO order within a
    /// queue, interleaved across queues in the given order. Each gets a lease and a
    /// run token. Durable when this returns.
    pub async fn claim(
        &self,
        who: Claimer,
        p: ClaimParams,
        now: i64,
    ) -> Result<Vec<ClaimedRun>, StoreError> {
        let dialect = self.dialect();
        self.write(move |c| {
            Box::pin(async move {
                let lock = if dialect == Dialect::Postgres {
                    " FOR UPDATE SKIP LOCKED"
                } else {
                    ""
                };
                let sql = format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE queue_id = $1 AND state = 'queued' ORDER BY eff_prio, seq LIMIT $2{lock}"
                );
                let mut candidates: Vec<std::collections::VecDeque<Run>> = Vec::new();
                for qid in &p.queue_ids {
                    let rows = sqlx::query(sqlx::AssertSqlSafe(&sql[..]))
                        .bind(qid)
                        .bind(p.max as i64)
                        .fetch_all(&mut *c)
                        .await?;
                    let runs: Result<std::collections::VecDeque<Run>, StoreError> =
                        rows.iter().map(run_from_row).collect();
                    candidates.push(runs?);
                }
                // Round-robin over the queues: one run from each in turn.
                let mut picked = Vec::new();
                'outer: loop {
                    let mut any = false;
                    for q in candidates.iter_mut() {
                        if picked.len() >= p.max {
                            break 'outer;
                        }
                        if let Some(id) = q.pop_front() {
                            picked.push(id);
                            any = true;
                        }
                    }
                    if !any {
                        break;
                    }
                }
                let reason = format!("claimed by agent {}", who.agent_name);
                let lease = now + p.lease_ms;
                let mut out = Vec::with_capacity(picked.len());
                for mut run in picked {
                    let id = run.id.clone();
                    let n = sqlx::query(
                        "UPDATE runs SET state = 'claimed', state_reason = $1, state_actor = 'server', updated_at = $2, agent_id = $3, \
                         agent_name = $4, lease_expires_at = $5, attempts = attempts + 1, stop_pending = 0 \
                         WHERE id = $6 AND state = 'queued'",
                    )
                    .bind(&reason)
                    .bind(now)
                    .bind(&who.agent_id)
                    .bind(&who.agent_name)
                    .bind(lease)
                    .bind(&id)
                    .execute(&mut *c)
                    .await?
                    .rows_affected();
                    if n == 0 {
                        continue;
                    }
                    let token = issue_token(c, &id, now, p.token_ttl_ms).await?;
                    // The stored row, without reading it back.
                    run.state = RunState::Claimed;
                    run.state_reason = reason.clone();
                    run.updated_at = to_datetime(now);
                    run.attempts += 1;
                    run.agent = Some(hoist_core::api::RunAgent {
                        id: who.agent_id.clone(),
                        name: who.agent_name.clone(),
                    });
                    out.push(ClaimedRun {
                        run,
                        token,
                        lease_expires_at: Some(to_datetime(lease)),
                    });
                }
                Ok(out)
            })
        })
        .await
    }

    /// An agent reports progress on a run it holds.
    pub async fn agent_update(
        &self,
        run_id: &str,
        agent_id: &str,
        u: RunUpdate,
        now: i64,
    ) -> Result<Changed, StoreError> {
        let run_id = run_id.to_string();
        let agent_id = agent_id.to_string();
        self.write(move |c| {
            Box::pin(async move {
                check_session(c, &agent_id, &u.session).await?;
                let (run, queue_id) = fetch_run(c, &run_id).await?;
                if run.agent.as_ref().map(|a| a.id.as_str()) != Some(agent_id.as_str()) {
                    return Err(StoreError::Conflict(format!(
                        "run {run_id} is not held by this agent (it is {}); let go of it",
                        run.state
                    )));
                }
                let from = run.state;
                let reason = if u.reason.is_empty() {
                    format!(
                        "reported by agent {}",
                        run.agent.as_ref().map(|a| a.name.as_str()).unwrap_or("?")
                    )
                } else {
                    u.reason.clone()
                };
                if u.state == RunState::Queued {
                    // Preemption or release: back in the queue, or failed if handed out too often.
                    check_transition(run.state, RunState::Queued, Actor::Agent)?;
                    requeue(c, &run, Actor::Agent, &reason, now, false).await?;
                } else {
                    let extras = Extras {
                        exit_code: u.exit_code,
                        failure: u
                            .failure
                            .as_ref()
                            .map(|f| serde_json::to_string(f).expect("serialisable")),
                        stop_requested: u.state == RunState::Stopping,
                    };
                    set_state_full(c, &run, u.state, Actor::Agent, &reason, now, &extras).await?;
                    // The stored run, without reading it back.
                    let mut r = run;
                    let at = to_datetime(now);
                    if u.state == RunState::Running && r.started_at.is_none() {
                        r.started_at = Some(at);
                    }
                    if u.state.is_terminal() {
                        r.ended_at = Some(at);
                    }
                    r.state = u.state;
                    r.state_reason = reason;
                    r.updated_at = at;
                    r.exit_code = u.exit_code.or(r.exit_code);
                    r.failure = u.failure.or(r.failure);
                    r.stop_requested |= u.state == RunState::Stopping;
                    return Ok(Changed {
                        run: r,
                        queue_id,
                        from,
                    });
                }
                let (run, _) = fetch_run(c, &run_id).await?;
                Ok(Changed {
                    run,
                    queue_id,
                    from,
                })
            })
        })
        .await
    }

    /// Cancels a run that has not started (queued, or claimed but not confirmed).
    pub async fn cancel_run(
        &self,
        run_id: &str,
        by: &str,
        now: i64,
    ) -> Result<Changed, StoreError> {
        let run_id = run_id.to_string();
        let reason = format!("cancelled by {by}");
        self.write(move |c| {
            Box::pin(async move {
                let (run, queue_id) = fetch_run(c, &run_id).await?;
                let from = run.state;
                set_state(c, &run, RunState::Cancelled, Actor::User, &reason, now).await?;
                if from == RunState::Claimed {
                    // The agent may be about to start it: tell it.
                    sqlx::query(
                        "UPDATE runs SET stop_pending = 1, stop_requested = 1 WHERE id = $1",
                    )
                    .bind(&run_id)
                    .execute(&mut *c)
                    .await?;
                }
                let (run, _) = fetch_run(c, &run_id).await?;
                Ok(Changed {
                    run,
                    queue_id,
                    from,
                })
            })
        })
        .await
    }

    /// Asks the agent holding a run to stop it.
    pub async fn request_stop(
        &self,
        run_id: &str,
        by: &str,
        reason: Option<String>,
        now: i64,
    ) -> Result<Changed, StoreError> {
        let run_id = run_id.to_string();
        let reason = match reason {
            Some(r) if !r.is_empty() => format!("stop requested by {by}: {r}"),
            _ => format!("stop requested by {by}"),
        };
        self.write(move |c| {
            Box::pin(async move {
                let (run, queue_id) = fetch_run(c, &run_id).await?;
                let from = run.state;
                match run.state {
                    RunState::Stopping => {}
                    RunState::Unknown => {
                        // The agent is away; it will see the request when it re-adopts.
                        insert_transition(
                            c,
                            &run_id,
                            Some("unknown"),
                            "unknown",
                            now,
                            "user",
                            &reason,
                        )
                        .await?;
                    }
                    _ => set_state(c, &run, RunState::Stopping, Actor::User, &reason, now).await?,
                }
                sqlx::query("UPDATE runs SET stop_requested = 1, stop_pending = 1 WHERE id = $1")
                    .bind(&run_id)
                    .execute(&mut *c)
                    .await?;
                let (run, _) = fetch_run(c, &run_id).await?;
                Ok(Changed {
                    run,
                    queue_id,
                    from,
                })
            })
        })
        .await
    }

    /// Stop requests not yet delivered to the agent; marks them delivered.
    pub async fn take_pending_stops(&self, agent_id: &str) -> Result<Vec<String>, StoreError> {
        let pending: Vec<String> =
            sqlx::query_scalar("SELECT id FROM runs WHERE agent_id = $1 AND stop_pending = 1")
                .bind(agent_id)
                .fetch_all(self.reader())
                .await?;
        if pending.is_empty() {
            return Ok(pending);
        }
        let agent_id = agent_id.to_string();
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE runs SET stop_pending = 0 WHERE agent_id = $1 AND stop_pending = 1",
                )
                .bind(&agent_id)
                .execute(&mut *c)
                .await?;
                Ok(pending)
            })
        })
        .await
    }

    /// Every run of the agent whose stop was requested and which has not ended.
    pub async fn requested_stops(&self, agent_id: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM runs WHERE agent_id = $1 AND stop_requested = 1 \
             AND state IN ('claimed','building','starting','running','stopping','unknown')",
        )
        .bind(agent_id)
        .fetch_all(self.reader())
        .await?)
    }

    /// Returns runs whose claim lease lapsed to their queue. Returns the queue ids
    /// that got runs back.
    pub async fn expire_leases(&self, now: i64) -> Result<Vec<String>, StoreError> {
        self.write(move |c| {
            Box::pin(async move {
                let ids: Vec<String> = sqlx::query_scalar(
                    "SELECT id FROM runs WHERE state = 'claimed' AND lease_expires_at < $1",
                )
                .bind(now)
                .fetch_all(&mut *c)
                .await?;
                let mut queues = Vec::new();
                for id in ids {
                    let (run, qid) = fetch_run(c, &id).await?;
                    let agent = run
                        .agent
                        .as_ref()
                        .map(|a| a.name.clone())
                        .unwrap_or_default();
                    let reason =
                        format!("lease lapsed: agent {agent} did not confirm the claim in time");
                    if requeue(c, &run, Actor::Server, &reason, now, true).await?
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

    /// Fails runs that stayed `unknown` (their agent lost) longer than `grace_ms`.
    pub async fn fail_unknown(&self, now: i64, grace_ms: i64) -> Result<usize, StoreError> {
        self.write(move |c| {
            Box::pin(async move {
                let ids: Vec<String> = sqlx::query_scalar(
                    "SELECT id FROM runs WHERE state = 'unknown' AND unknown_since < $1",
                )
                .bind(now - grace_ms)
                .fetch_all(&mut *c)
                .await?;
                for id in &ids {
                    let (run, _) = fetch_run(c, id).await?;
                    let msg = format!(
                        "agent lost: agent {} stopped sending heartbeats and did not come back within {}s",
                        run.agent.as_ref().map(|a| a.name.as_str()).unwrap_or("?"),
                        grace_ms / 1000
                    );
                    set_state(c, &run, RunState::Failed, Actor::Server, &msg, now).await?;
                    set_failure(c, id, FailureStage::Agent, &msg).await?;
                }
                Ok(ids.len())
            })
        })
        .await
    }

    /// (run id, secret hash, expiry) of a run token.
    pub async fn run_token(&self, id: &str) -> Result<Option<(String, String, i64)>, StoreError> {
        let row =
            sqlx::query("SELECT run_id, secret_hash, expires_at FROM run_tokens WHERE id = $1")
                .bind(id)
                .fetch_optional(self.reader())
                .await?;
        match row {
            Some(r) => Ok(Some((
                r.try_get("run_id")?,
                r.try_get("secret_hash")?,
                r.try_get("expires_at")?,
            ))),
            None => Ok(None),
        }
    }

    /// Counts of runs by state.
    pub async fn runs_by_state(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM runs GROUP BY state")
            .fetch_all(self.reader())
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
            .collect()
    }
}

/// Checks that `session` is the agent's current registration.
pub(crate) async fn check_session(
    c: &mut Conn,
    agent_id: &str,
    session: &str,
) -> Result<(), StoreError> {
    let current: Option<String> = sqlx::query_scalar("SELECT session FROM agents WHERE id = $1")
        .bind(agent_id)
        .fetch_optional(&mut *c)
        .await?;
    match current {
        None => Err(StoreError::NotFound(format!("no agent with id {agent_id:?}"))),
        Some(s) if s == session => Ok(()),
        Some(_) => Err(StoreError::Superseded(
            "this agent session was replaced by a newer registration under the same name; this process must stop".into(),
        )),
    }
}

impl Store {
    /// Benchmark support: adds `n` queued runs of a bare `true` command to a queue in
    /// bulk (100,000 per transaction), bypassing the launch checks. Returns how many
    /// runs were added.
    pub async fn seed_queued_runs(
        &self,
        queue_id: &str,
        entity: &str,
        queue_name: &str,
        n: u64,
        now: i64,
    ) -> Result<u64, StoreError> {
        let spec = serde_json::to_string(&RunSpec {
            entry_point: Some(vec!["true".into()]),
            ..Default::default()
        })
        .expect("serialisable");
        let tag = crate::secrets::new_id(6);
        let mut done = 0u64;
        while done < n {
            let chunk = (n - done).min(100_000);
            let (qid, ent, qn, spec, tag) = (
                queue_id.to_string(),
                entity.to_string(),
                queue_name.to_string(),
                spec.clone(),
                format!("{tag}{done}"),
            );
            self.write(move |c| {
                Box::pin(async move {
                    sqlx::query(
                        "WITH RECURSIVE cnt(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM cnt WHERE x < $1) \
                         INSERT INTO runs (id, queue_id, entity, queue_name, project, name, spec, resource, resource_config, \
                         priority, eff_prio, state, state_reason, state_actor, created_by, created_at, updated_at) \
                         SELECT 'seed-' || $2 || '-' || x, $3, $4, $5, 'bench', 'seed', $6, 'local-process', '{}', \
                         2, 0, 'queued', 'seeded by hoist bench', 'server', 'bench', $7, $7 FROM cnt",
                    )
                    .bind(chunk as i64)
                    .bind(&tag)
                    .bind(&qid)
                    .bind(&ent)
                    .bind(&qn)
                    .bind(&spec)
                    .bind(now)
                    .execute(&mut *c)
                    .await?;
                    Ok(())
                })
            })
            .await?;
            done += chunk;
        }
        Ok(done)
    }
}
