//! Runs: launch, claim, transitions, cancel and stop, the lease and grace reapers.
//!
//! # The one state-changing function
//! [`transition`] is the only code that writes `runs.state`. Every path goes through
//! it: the claim (queued → claimed, by the server), agents' reports, cancels and
//! stops, re-queues (lease lapses, releases, restarts, lost agents, preemptions), the
//! reapers and queue deletion. It checks the move with [`check_transition`], writes it
//! with `UPDATE … WHERE id = $id AND state = $from` (so a concurrent writer — another
//! server replica — that moved the run first wins cleanly), and in the same statement
//! sets what goes with the new state (holder and lease, end time, …). A run that ends
//! or goes back to its queue loses its run tokens in the same transaction. The
//! transition itself is recorded by the database's triggers.

use std::sync::LazyLock;

use hoist_core::api::{
    BuiltImage, ClaimedRun, Failure, MAX_RUN_WARNING_BYTES, MAX_RUN_WARNINGS, Run, RunUpdate,
    RunWarning, Transition,
};
use hoist_core::resource::ResourceType;
use hoist_core::run::{Actor, FailureStage, Priority, RunState, check_transition};
use serde_json::Value;
use sqlx::Row;

use super::agents::{Check, Standing, check_agent};
use super::rows::{RUN_COLUMNS, RunSpec, corrupt, corrupt_from, run_from_row};
use super::{Conn, Dialect, Store, StoreError};
use crate::clock::to_datetime;
use crate::secrets::{CredentialKind, new_credential};

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
    /// A code artifact (digest) to hand to the queue's entity with the launch, so that
    /// the queue's agents may fetch it: a job of another entity launched onto this
    /// queue. Recorded in the launch's transaction, or not at all.
    pub hand_over: Option<String>,
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
    /// Most runs to hand out; 0 only checks the agent's session and access.
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

// ---------------------------------------------------------------------------------
// States in SQL, generated from `RunState`.

/// A state as an SQL string literal (`RunState::Queued` gives the quoted word). Used
/// rather than a parameter where a partial index is to be used: SQLite matches an
/// index's `WHERE` clause only against the same literal in the query.
pub fn state_lit(s: RunState) -> String {
    format!("'{}'", s.as_str())
}

/// The states of [`RunState::ALL`] that `keep` selects, as a parenthesised SQL list of
/// literals in `RunState::ALL` order, for `state IN …`.
pub fn state_list(keep: impl Fn(RunState) -> bool) -> String {
    let items: Vec<String> = RunState::ALL
        .into_iter()
        .filter(|s| keep(*s))
        .map(state_lit)
        .collect();
    format!("({})", items.join(", "))
}

/// States in which an agent holds the run.
pub(crate) static HELD: LazyLock<String> = LazyLock::new(|| state_list(RunState::is_held_by_agent));
/// Held, but nothing can be executing yet (claimed, building): safe to re-queue.
pub(crate) static HELD_UNSTARTED: LazyLock<String> =
    LazyLock::new(|| state_list(|s| s.is_held_by_agent() && !s.may_be_executing()));
/// Held and reported alive by the agent (every held state but `unknown`).
pub(crate) static HELD_LIVE: LazyLock<String> =
    LazyLock::new(|| state_list(|s| s.is_held_by_agent() && s != RunState::Unknown));

static CLAIM_CANDIDATES_SQLITE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE queue_id = $1 AND state = {} ORDER BY eff_prio, seq LIMIT $2",
        state_lit(RunState::Queued)
    )
});
static CLAIM_CANDIDATES_POSTGRES: LazyLock<String> =
    LazyLock::new(|| format!("{} FOR UPDATE SKIP LOCKED", *CLAIM_CANDIDATES_SQLITE));
static LAPSED_LEASES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT id FROM runs WHERE state = {} AND lease_expires_at < $1 ORDER BY seq LIMIT {REAP_PAGE}",
        state_lit(RunState::Claimed)
    )
});
static LAPSED_LEASE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 AND state = {} AND lease_expires_at < $2",
        state_lit(RunState::Claimed)
    )
});
static UNKNOWN_PAST_GRACE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT id FROM runs WHERE state = {} AND unknown_since < $1 ORDER BY seq LIMIT {REAP_PAGE}",
        state_lit(RunState::Unknown)
    )
});
static UNKNOWN_PAST_GRACE_ONE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 AND state = {} AND unknown_since < $2",
        state_lit(RunState::Unknown)
    )
});

/// Most rows one reaper pass looks at per kind (the next pass takes the rest).
pub(crate) const REAP_PAGE: usize = 5_000;

/// Starts a reaper's write of one row: with PostgreSQL, a row another transaction
/// holds locked makes the write fail after [`REAPER_LOCK_WAIT`] (a transient failure,
/// retried, then left to the next pass) instead of holding up the pass.
pub(crate) async fn reaper_row_write(c: &mut Conn, dialect: Dialect) -> Result<(), StoreError> {
    if dialect == Dialect::Postgres {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SET LOCAL lock_timeout = {}",
            REAPER_LOCK_WAIT.as_millis()
        )))
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

/// The longest a reaper's write waits for a row lock (PostgreSQL).
pub(crate) const REAPER_LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(500);
static REQUESTED_STOPS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT id FROM runs WHERE agent_id = $1 AND stop_requested = 1 AND state IN {}",
        *HELD
    )
});

// ---------------------------------------------------------------------------------
// The state-changing function.

/// What [`transition`] needs to know about a run, read in the same transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Current<'a> {
    pub id: &'a str,
    pub state: RunState,
    /// It has been `running` once (its start time is set).
    pub started: bool,
}

impl<'a> From<&'a Run> for Current<'a> {
    fn from(r: &'a Run) -> Self {
        Current {
            id: &r.id,
            state: r.state,
            started: r.started_at.is_some(),
        }
    }
}

/// The agent a claim hands the run to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Holder<'a> {
    pub agent_id: &'a str,
    pub agent_name: &'a str,
    pub lease_expires_at: i64,
}

/// What a transition writes along with the state. The rest follows from the target
/// state: `claimed` sets the holder, the lease and one more attempt; `queued` clears
/// the holder and undelivered stops; a terminal state sets the end time; `running`
/// the start time (once); `unknown` the time it became unknown.
#[derive(Debug, Default)]
pub(crate) struct Effects<'a> {
    /// Required for `claimed`, refused otherwise.
    pub holder: Option<Holder<'a>>,
    pub exit_code: Option<i32>,
    pub failure: Option<Failure>,
    /// The image the agent built for the run; like `exit_code` and `failure`, kept
    /// when absent (a later report does not clear it, a rebuild replaces it).
    pub built: Option<&'a BuiltImage>,
    /// Sets `stop_requested` (it is never cleared).
    pub stop_requested: bool,
    /// Sets or clears `stop_pending` (a stop not yet delivered to the agent).
    pub stop_pending: Option<bool>,
}

/// Moves a run from `cur.state` to `to`: checked by [`check_transition`], written only
/// if the run is still in `cur.state`. Returns `false` when another writer moved the
/// run first (nothing was written). The only `UPDATE` of `runs.state` in hoist.
pub(crate) async fn transition(
    c: &mut Conn,
    cur: Current<'_>,
    to: RunState,
    actor: Actor,
    reason: &str,
    now: i64,
    fx: &Effects<'_>,
) -> Result<bool, StoreError> {
    check_transition(cur.state, to, actor)?;
    if fx.holder.is_some() != (to == RunState::Claimed) {
        return Err(StoreError::Bug(format!(
            "a move to {to} {} a holder",
            if fx.holder.is_some() {
                "cannot take"
            } else {
                "needs"
            }
        )));
    }
    let ended = to.is_terminal().then_some(now);
    let started = (to == RunState::Running && !cur.started).then_some(now);
    let unknown_since = (to == RunState::Unknown).then_some(now);
    // 1: set agent_id/agent_name (to the holder, or NULL when back in the queue).
    let set_holder = i64::from(fx.holder.is_some() || to == RunState::Queued);
    let stop_pending: i64 = match (fx.stop_pending, to) {
        (Some(p), _) => i64::from(p),
        (None, RunState::Queued | RunState::Claimed) => 0,
        (None, _) => -1,
    };
    let failure = fx
        .failure
        .as_ref()
        .map(|f| serde_json::to_string(f).expect("serialisable"));
    let n = sqlx::query(
        "UPDATE runs SET state = $1, state_reason = $2, state_actor = $3, updated_at = $4, \
         ended_at = COALESCE($5, ended_at), started_at = COALESCE($6, started_at), \
         lease_expires_at = $7, unknown_since = $8, \
         exit_code = COALESCE($9, exit_code), failure = COALESCE($10, failure), \
         stop_requested = CASE WHEN $11 = 1 THEN 1 ELSE stop_requested END, \
         stop_pending = CASE WHEN $12 < 0 THEN stop_pending ELSE $12 END, \
         agent_id = CASE WHEN $13 = 1 THEN $14 ELSE agent_id END, \
         agent_name = CASE WHEN $13 = 1 THEN $15 ELSE agent_name END, \
         attempts = attempts + $16, \
         built_image = COALESCE($17, built_image), \
         built_cache_hit = COALESCE($18, built_cache_hit), \
         built_builder = COALESCE($19, built_builder) \
         WHERE id = $20 AND state = $21",
    )
    .bind(to.as_str())
    .bind(reason)
    .bind(actor.to_string())
    .bind(now)
    .bind(ended)
    .bind(started)
    .bind(fx.holder.map(|h| h.lease_expires_at))
    .bind(unknown_since)
    .bind(fx.exit_code.map(i64::from))
    .bind(failure)
    .bind(i64::from(fx.stop_requested))
    .bind(stop_pending)
    .bind(set_holder)
    .bind(fx.holder.map(|h| h.agent_id))
    .bind(fx.holder.map(|h| h.agent_name))
    .bind(i64::from(to == RunState::Claimed))
    .bind(fx.built.map(|b| b.image.as_str()))
    .bind(fx.built.map(|b| i64::from(b.cache_hit)))
    .bind(fx.built.map(|b| b.builder.as_str()))
    .bind(cur.id)
    .bind(cur.state.as_str())
    .execute(&mut *c)
    .await?
    .rows_affected();
    if n == 0 {
        return Ok(false);
    }
    if to.is_terminal() || to == RunState::Queued {
        // The run ended, or its next attempt gets a new token.
        sqlx::query(
            "UPDATE run_tokens SET revoked_at = $1 WHERE run_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(cur.id)
        .execute(&mut *c)
        .await?;
    }
    Ok(true)
}

/// The error for a run another writer moved first.
pub(crate) fn changed_meanwhile(run_id: &str) -> StoreError {
    StoreError::Conflict(format!(
        "run {run_id} changed while this request was handled; retry"
    ))
}

/// [`transition`] for a request about one run: another writer moving the run first is
/// a conflict to retry.
async fn transition_or_conflict(
    c: &mut Conn,
    run: &Run,
    to: RunState,
    actor: Actor,
    reason: &str,
    now: i64,
    fx: &Effects<'_>,
) -> Result<(), StoreError> {
    if transition(c, run.into(), to, actor, reason, now, fx).await? {
        Ok(())
    } else {
        Err(changed_meanwhile(&run.id))
    }
}

/// The run as stored after a change, for the caller's answer and notifications.
async fn reread(c: &mut Conn, run_id: &str, from: RunState) -> Result<Changed, StoreError> {
    let (run, queue_id) = fetch_run(c, run_id).await?;
    Ok(Changed {
        run,
        queue_id,
        from,
    })
}

/// Puts a held run back in its queue (lease lapse, release, restart, lost agent,
/// preemption), or fails it when it was handed to agents more than `max_requeues`
/// times over. Returns the state it went to, `None` if another writer moved it first.
pub(crate) async fn requeue(
    c: &mut Conn,
    run: &Run,
    actor: Actor,
    reason: &str,
    now: i64,
    max_requeues: u32,
) -> Result<Option<RunState>, StoreError> {
    if run.attempts > max_requeues {
        let msg = format!(
            "{reason}; the run was handed to agents {} times without completing, so it is failed instead of re-queued (this server re-queues a run at most {max_requeues} times)",
            run.attempts
        );
        return fail(c, run, &msg, now).await;
    }
    let moved = transition(
        c,
        run.into(),
        RunState::Queued,
        actor,
        reason,
        now,
        &Effects::default(),
    )
    .await?;
    Ok(moved.then_some(RunState::Queued))
}

/// Fails a run for the server, with an agent-stage failure saying why.
async fn fail(
    c: &mut Conn,
    run: &Run,
    msg: &str,
    now: i64,
) -> Result<Option<RunState>, StoreError> {
    let fx = Effects {
        failure: Some(Failure {
            stage: FailureStage::Agent,
            message: msg.to_string(),
            log_tail: vec![],
        }),
        ..Effects::default()
    };
    let moved = transition(
        c,
        run.into(),
        RunState::Failed,
        Actor::Server,
        msg,
        now,
        &fx,
    )
    .await?;
    Ok(moved.then_some(RunState::Failed))
}

// ---------------------------------------------------------------------------------
// Launches.

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
        built: None,
        timeline: None,
        warnings: None,
    }
}

/// One multi-row INSERT of launches. (The transitions come from the trigger.)
async fn insert_runs(c: &mut Conn, rows: &[(&NewRun, i64)]) -> Result<(), StoreError> {
    let mut sql = String::from(
        "INSERT INTO runs (id, queue_id, entity, queue_name, project, name, spec, resource, resource_config, \
         priority, eff_prio, state, state_reason, state_actor, created_by, created_at, updated_at) VALUES ",
    );
    let queued = state_lit(RunState::Queued);
    for n in 0..rows.len() {
        let b = n * 14;
        if n > 0 {
            sql.push_str(", ");
        }
        let p: Vec<String> = (1..=14).map(|i| format!("${}", b + i)).collect();
        sql += &format!(
            "({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {queued}, {}, 'user', {}, {}, {})",
            p[0],
            p[1],
            p[2],
            p[3],
            p[4],
            p[5],
            p[6],
            p[7],
            p[8],
            p[9],
            p[10],
            p[11],
            p[12],
            p[13],
            p[13]
        );
    }
    let mut q = sqlx::query(sqlx::AssertSqlSafe(&sql[..]));
    for (r, now) in rows {
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
    q.execute(&mut *c).await?;
    Ok(())
}

/// One launch that hands an artifact over: the run and the blob reference together,
/// in a savepoint, so that a failure leaves neither.
async fn insert_with_hand_over(c: &mut Conn, r: &NewRun, now: i64) -> Result<(), StoreError> {
    sqlx::raw_sql("SAVEPOINT launch_hand_over")
        .execute(&mut *c)
        .await?;
    let r2 = async {
        if let Some(digest) = &r.hand_over {
            super::blobs::insert_blob_ref(c, digest, &r.entity, now).await?;
        }
        insert_runs(c, &[(r, now)]).await
    }
    .await;
    match r2 {
        Ok(()) => {
            sqlx::raw_sql("RELEASE launch_hand_over")
                .execute(&mut *c)
                .await?;
            Ok(())
        }
        Err(e) => {
            sqlx::raw_sql("ROLLBACK TO launch_hand_over; RELEASE launch_hand_over")
                .execute(&mut *c)
                .await?;
            Err(e)
        }
    }
}

/// Inserts launches with as few statements as possible: one query for which of their
/// queues still exist, then multi-row INSERTs (a launch that hands an artifact over
/// goes alone, with its blob reference). A launch onto a deleted queue gets its own
/// error; the others go through.
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
    let mut plain: Vec<(usize, NewRun, i64)> = Vec::new();
    for (i, (r, now)) in launches.into_iter().enumerate() {
        if !existing.contains(&r.queue_id) {
            out.push(Some(Err(StoreError::NotFound(format!(
                "queue {}/{} was deleted; launch onto another queue",
                r.entity, r.queue_name
            )))));
        } else if r.hand_over.is_some() {
            let res = insert_with_hand_over(c, &r, now).await;
            out.push(Some(res.map(|()| queued_run(r, now))));
        } else {
            out.push(None);
            plain.push((i, r, now));
        }
    }
    for chunk in plain.chunks(LAUNCH_CHUNK) {
        let rows: Vec<(&NewRun, i64)> = chunk.iter().map(|(_, r, now)| (r, *now)).collect();
        match insert_runs(c, &rows).await {
            Ok(()) => {
                for (i, r, now) in chunk {
                    out[*i] = Some(Ok(queued_run(r.clone(), *now)));
                }
            }
            Err(e) => {
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

pub(crate) async fn fetch_run(c: &mut Conn, id: &str) -> Result<(Run, String), StoreError> {
    let row = sqlx::query(dynsql!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *c)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("no run with id {id:?}")))?;
    Ok((run_from_row(&row)?, row.try_get("queue_id")?))
}

/// The runs an agent holds in one of `states` (a list from [`state_list`], e.g.
/// [`HELD`]), oldest first, with their queue ids.
pub(crate) async fn held_by(
    c: &mut Conn,
    agent_id: &str,
    states: &str,
) -> Result<Vec<(Run, String)>, StoreError> {
    let rows = sqlx::query(dynsql!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE agent_id = $1 AND state IN {states} ORDER BY seq"
    ))
    .bind(agent_id)
    .fetch_all(&mut *c)
    .await?;
    rows.iter()
        .map(|r| Ok((run_from_row(r)?, r.try_get("queue_id")?)))
        .collect()
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

/// A run token as the authenticator needs it.
#[derive(Debug, Clone)]
pub struct RunTokenRecord {
    pub run_id: String,
    pub secret_hash: String,
    pub expires_at: i64,
    /// Revoked: its run ended, or went back to its queue (the next attempt has its own).
    pub revoked: bool,
}

impl Store {
    /// Enqueues a run (with its artifact hand-over, if any). Durable when this returns.
    pub async fn launch(&self, r: NewRun, now: i64) -> Result<Run, StoreError> {
        if self.dialect() == Dialect::Sqlite {
            // Launches waiting together go into one multi-row INSERT.
            return self.launch_via_writer(r, now).await;
        }
        self.write(move |c| {
            Box::pin(async move {
                // Hold the queue against a delete on another replica until this run is
                // committed: without the lock, a delete that read the queue's runs
                // before this insert would leave it queued on a deleted queue.
                sqlx::query("SELECT id FROM queues WHERE id = $1 FOR SHARE")
                    .bind(&r.queue_id)
                    .fetch_optional(&mut *c)
                    .await?;
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
                    from: from
                        .map(|f| {
                            f.parse()
                                .map_err(|e| corrupt_from("run_transitions.from_state", e))
                        })
                        .transpose()?,
                    to: to
                        .parse()
                        .map_err(|e| corrupt_from("run_transitions.to_state", e))?,
                    at: to_datetime(r.try_get("at")?),
                    actor: serde_json::from_value(Value::String(actor))
                        .map_err(|e| corrupt_from("run_transitions.actor", e))?,
                    reason: r.try_get("reason")?,
                })
            })
            .collect()
    }

    /// The warnings agents reported about run `id`, oldest first.
    pub async fn warnings(&self, id: &str) -> Result<Vec<RunWarning>, StoreError> {
        let rows =
            sqlx::query("SELECT at, message FROM run_warnings WHERE run_id = $1 ORDER BY seq")
                .bind(id)
                .fetch_all(self.reader())
                .await?;
        rows.iter()
            .map(|r| {
                Ok(RunWarning {
                    at: to_datetime(r.try_get("at")?),
                    message: r.try_get("message")?,
                })
            })
            .collect()
    }

    /// Records `messages` as warnings about run `run_id`, from the agent holding it
    /// with `session` (else the session's error, or a conflict). A message the run
    /// already has is not stored again; beyond [`MAX_RUN_WARNINGS`] nothing more is
    /// stored; each is cut to [`MAX_RUN_WARNING_BYTES`]. Returns how many were stored.
    pub async fn add_warnings(
        &self,
        run_id: &str,
        session: &str,
        messages: Vec<String>,
        now: i64,
    ) -> Result<usize, StoreError> {
        let run_id = run_id.to_string();
        let session = session.to_string();
        let max_requeues = self.options().max_requeues;
        self.write(move |c| {
            Box::pin(async move {
                let (run, _) = fetch_run(c, &run_id).await?;
                let Some(agent) = run.agent else {
                    return Err(StoreError::Conflict(format!(
                        "run {run_id} is not held by any agent (it is {}): no agent may warn about it",
                        run.state
                    )));
                };
                check_agent(c, &agent.id, &session, Check::Session, now, max_requeues).await?;
                let have: Vec<String> =
                    sqlx::query_scalar("SELECT message FROM run_warnings WHERE run_id = $1")
                        .bind(&run_id)
                        .fetch_all(&mut *c)
                        .await?;
                let mut have: std::collections::HashSet<String> = have.into_iter().collect();
                let mut stored = 0;
                for m in messages {
                    if have.len() >= MAX_RUN_WARNINGS {
                        break;
                    }
                    let m = cut_to(m, MAX_RUN_WARNING_BYTES);
                    if m.is_empty() || !have.insert(m.clone()) {
                        continue;
                    }
                    sqlx::query(
                        "INSERT INTO run_warnings (run_id, at, message) VALUES ($1, $2, $3)",
                    )
                    .bind(&run_id)
                    .bind(now)
                    .bind(&m)
                    .execute(&mut *c)
                    .await?;
                    stored += 1;
                }
                Ok(stored)
            })
        })
        .await
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
    /// run token. First, in the same transaction, the agent's session is checked and
    /// its owner's access to every queue it serves, fresh from the database: an owner
    /// who lost access (removed from a team, key revoked, user deleted) ends the
    /// session here ([`StoreError::SessionEnded`]) and gets nothing. Durable when this
    /// returns.
    pub async fn claim(
        &self,
        who: Claimer,
        p: ClaimParams,
        now: i64,
    ) -> Result<Vec<ClaimedRun>, StoreError> {
        let dialect = self.dialect();
        let max_requeues = self.options().max_requeues;
        self.write(move |c| {
            Box::pin(async move {
                let standing = check_agent(
                    c,
                    &who.agent_id,
                    &who.session,
                    Check::Access,
                    now,
                    max_requeues,
                )
                .await?;
                if let Standing::Ended(e) = standing {
                    // Commit the ending, then refuse.
                    return Ok(Err(e));
                }
                if p.max == 0 {
                    return Ok(Ok(vec![]));
                }
                let sql = match dialect {
                    Dialect::Postgres => CLAIM_CANDIDATES_POSTGRES.as_str(),
                    Dialect::Sqlite => CLAIM_CANDIDATES_SQLITE.as_str(),
                };
                let mut candidates: Vec<std::collections::VecDeque<Run>> = Vec::new();
                for qid in &p.queue_ids {
                    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
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
                let fx = Effects {
                    holder: Some(Holder {
                        agent_id: &who.agent_id,
                        agent_name: &who.agent_name,
                        lease_expires_at: lease,
                    }),
                    ..Effects::default()
                };
                let mut out = Vec::with_capacity(picked.len());
                for mut run in picked {
                    let moved = transition(
                        c,
                        (&run).into(),
                        RunState::Claimed,
                        Actor::Server,
                        &reason,
                        now,
                        &fx,
                    )
                    .await?;
                    if !moved {
                        continue;
                    }
                    let token = issue_token(c, &run.id, now, p.token_ttl_ms).await?;
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
                Ok(Ok(out))
            })
        })
        .await?
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
        let max_requeues = self.options().max_requeues;
        self.write(move |c| {
            Box::pin(async move {
                check_agent(c, &agent_id, &u.session, Check::Session, now, max_requeues).await?;
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
                    requeue(c, &run, Actor::Agent, &reason, now, max_requeues)
                        .await?
                        .ok_or_else(|| changed_meanwhile(&run_id))?;
                    return reread(c, &run_id, from).await;
                }
                let fx = Effects {
                    exit_code: u.exit_code,
                    failure: u.failure.clone(),
                    built: u.built.as_ref(),
                    stop_requested: u.state == RunState::Stopping,
                    ..Effects::default()
                };
                transition_or_conflict(c, &run, u.state, Actor::Agent, &reason, now, &fx).await?;

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
                r.built = u.built.or(r.built);
                r.stop_requested |= u.state == RunState::Stopping;
                Ok(Changed {
                    run: r,
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
                let (run, _) = fetch_run(c, &run_id).await?;
                let from = run.state;
                // A claimed run's agent may be about to start it: tell it.
                let tell = from == RunState::Claimed;
                let fx = Effects {
                    stop_requested: tell,
                    stop_pending: tell.then_some(true),
                    ..Effects::default()
                };
                transition_or_conflict(
                    c,
                    &run,
                    RunState::Cancelled,
                    Actor::User,
                    &reason,
                    now,
                    &fx,
                )
                .await?;
                reread(c, &run_id, from).await
            })
        })
        .await
    }

    /// Asks the agent holding a run to stop it. A run already `stopping` keeps its
    /// state; an `unknown` one (its agent is away) keeps its state too and records the
    /// request (the flag and the reason, not a transition): the agent sees it when it
    /// re-adopts the run.
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
                let (run, _) = fetch_run(c, &run_id).await?;
                let from = run.state;
                match run.state {
                    RunState::Stopping | RunState::Unknown => {
                        let note = if run.state == RunState::Unknown {
                            Some(reason.as_str())
                        } else {
                            None
                        };
                        let n = sqlx::query(
                            "UPDATE runs SET stop_requested = 1, stop_pending = 1, \
                             state_reason = COALESCE($1, state_reason), updated_at = $2 \
                             WHERE id = $3 AND state = $4",
                        )
                        .bind(note)
                        .bind(now)
                        .bind(&run_id)
                        .bind(run.state.as_str())
                        .execute(&mut *c)
                        .await?
                        .rows_affected();
                        if n == 0 {
                            return Err(changed_meanwhile(&run_id));
                        }
                    }
                    _ => {
                        let fx = Effects {
                            stop_requested: true,
                            stop_pending: Some(true),
                            ..Effects::default()
                        };
                        let to = RunState::Stopping;
                        transition_or_conflict(c, &run, to, Actor::User, &reason, now, &fx).await?;
                    }
                }
                reread(c, &run_id, from).await
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
        Ok(
            sqlx::query_scalar(sqlx::AssertSqlSafe(REQUESTED_STOPS.as_str()))
                .bind(agent_id)
                .fetch_all(self.reader())
                .await?,
        )
    }

    /// Returns runs whose claim lease lapsed to their queue (or fails those handed out
    /// too often). Returns the queue ids that got runs back.
    pub async fn expire_leases(&self, now: i64) -> Result<Vec<String>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(LAPSED_LEASES.as_str()))
            .bind(now)
            .fetch_all(self.reader())
            .await?;
        let done = self
            .each_row("requeue a run whose lease lapsed", ids, |id| {
                self.expire_lease(id, now)
            })
            .await;
        Ok(done.into_iter().flatten().collect())
    }

    /// One run of [`Store::expire_leases`], checked again inside its own write: the
    /// queue it went back to, if it did.
    async fn expire_lease(&self, id: String, now: i64) -> Result<Option<String>, StoreError> {
        let max_requeues = self.options().max_requeues;
        let dialect = self.dialect();
        self.write(move |c| {
            Box::pin(async move {
                reaper_row_write(c, dialect).await?;
                let Some(row) = sqlx::query(sqlx::AssertSqlSafe(LAPSED_LEASE.as_str()))
                    .bind(&id)
                    .bind(now)
                    .fetch_optional(&mut *c)
                    .await?
                else {
                    return Ok(None);
                };
                let run = run_from_row(&row)?;
                let qid: String = row.try_get("queue_id")?;
                let agent = run
                    .agent
                    .as_ref()
                    .map(|a| a.name.clone())
                    .unwrap_or_default();
                let reason =
                    format!("lease lapsed: agent {agent} did not confirm the claim in time");
                let requeued = requeue(c, &run, Actor::Server, &reason, now, max_requeues).await?
                    == Some(RunState::Queued);
                Ok(requeued.then_some(qid))
            })
        })
        .await
    }

    /// Fails runs that stayed `unknown` (their agent lost) longer than `grace_ms`.
    pub async fn fail_unknown(&self, now: i64, grace_ms: i64) -> Result<usize, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(UNKNOWN_PAST_GRACE.as_str()))
            .bind(now - grace_ms)
            .fetch_all(self.reader())
            .await?;
        let done = self
            .each_row("fail a run left unknown", ids, |id| {
                self.fail_unknown_run(id, now, grace_ms)
            })
            .await;
        Ok(done.into_iter().filter(|failed| *failed).count())
    }

    async fn fail_unknown_run(
        &self,
        id: String,
        now: i64,
        grace_ms: i64,
    ) -> Result<bool, StoreError> {
        self.write(move |c| {
            Box::pin(async move {
                let Some(row) = sqlx::query(sqlx::AssertSqlSafe(UNKNOWN_PAST_GRACE_ONE.as_str()))
                    .bind(&id)
                    .bind(now - grace_ms)
                    .fetch_optional(&mut *c)
                    .await?
                else {
                    return Ok(false);
                };
                let run = run_from_row(&row)?;
                let msg = format!(
                    "agent lost: agent {} stopped sending heartbeats and did not come back within {}s",
                    run.agent.as_ref().map(|a| a.name.as_str()).unwrap_or("?"),
                    grace_ms / 1000
                );
                Ok(fail(c, &run, &msg, now).await?.is_some())
            })
        })
        .await
    }

    /// Runs `one` for every row id, a few at a time, each in its own write with its
    /// own retries of transient failures (a lost race with a claim, a deadlock): one
    /// row that fails is logged and left for the next pass, and the others go on. The
    /// results of the rows that succeeded.
    pub(crate) async fn each_row<T, F, Fut>(&self, what: &str, ids: Vec<String>, one: F) -> Vec<T>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        use futures::StreamExt;
        let one = &one;
        futures::stream::iter(ids)
            .map(|id| async move {
                let until = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
                let r = super::retry_transient(until, what, || one(id.clone())).await;
                (id, r)
            })
            .buffer_unordered(16)
            .filter_map(|(id, r)| async move {
                match r {
                    Ok(v) => Some(v),
                    Err(e) => {
                        metrics::counter!("hoist_reaper_row_failures_total").increment(1);
                        tracing::warn!(message = "Reaper: one row failed; the next pass tries it again.", what, row = %id, error = %e);
                        None
                    }
                }
            })
            .collect()
            .await
    }

    /// A run token by its id.
    pub async fn run_token(&self, id: &str) -> Result<Option<RunTokenRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT run_id, secret_hash, expires_at, revoked_at FROM run_tokens WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.reader())
        .await?;
        match row {
            Some(r) => Ok(Some(RunTokenRecord {
                run_id: r.try_get("run_id")?,
                secret_hash: r.try_get("secret_hash")?,
                expires_at: r.try_get("expires_at")?,
                revoked: r.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
            })),
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

    /// The states the database's `CHECK` constraint on `runs.state` admits, as the
    /// schema declares them (for tests and diagnostics: it must equal
    /// [`RunState::ALL`]).
    pub async fn state_constraint(&self) -> Result<Vec<String>, StoreError> {
        let def: Option<String> = match self.dialect() {
            Dialect::Sqlite => {
                let sql: Option<String> = sqlx::query_scalar(
                    "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'runs'",
                )
                .fetch_optional(self.reader())
                .await?;
                sql.and_then(|s| {
                    let start = s.find("runs_state_check")?;
                    let rest = &s[start..];
                    let end = rest.find("))")?;
                    Some(rest[..end].to_string())
                })
            }
            Dialect::Postgres => {
                sqlx::query_scalar(
                    "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'runs_state_check'",
                )
                .fetch_optional(self.reader())
                .await?
            }
        };
        let def =
            def.ok_or_else(|| corrupt("the runs table has no runs_state_check constraint"))?;
        // Every quoted literal of the definition, in order.
        Ok(def
            .split('\'')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect())
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
                    sqlx::query(dynsql!(
                        "WITH RECURSIVE cnt(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM cnt WHERE x < $1) \
                         INSERT INTO runs (id, queue_id, entity, queue_name, project, name, spec, resource, resource_config, \
                         priority, eff_prio, state, state_reason, state_actor, created_by, created_at, updated_at) \
                         SELECT 'seed-' || $2 || '-' || x, $3, $4, $5, 'bench', 'seed', $6, 'local-process', '{{}}', \
                         2, 0, {queued}, 'seeded by hoist bench', 'server', 'bench', $7, $7 FROM cnt",
                        queued = state_lit(RunState::Queued)
                    ))
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

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut_to(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}
