//! Aggregates for the web UI: runs per hour and state, waits per queue and run
//! durations over a recent window (the overview's pictures), and where each queue
//! stands now (the queues page).
//!
//! # Cost
//! Everything here is bounded by indexes, never by the number of runs kept:
//! - The window's aggregates are many small index range counts (correlated
//!   `COUNT(*)` subqueries: one per hour and state, per queue and wait bucket, per
//!   duration bucket), over the indexes of migration 0008. Each run launched in the
//!   window is one index entry counted once; nothing is sorted (SQLite sorts a
//!   `GROUP BY` of 100,000 rows in tens of milliseconds; it counts them in a few).
//! - Waits (launch to start, the first `running`) and durations (start to end) are
//!   counted in log-spaced buckets ([`BUCKET_BOUNDS_MS`]) by indexed expressions
//!   ([`bucket_expr`]); percentiles are estimated from the buckets ([`quantile`]).
//! - A queue's depth groups only the runs that have not ended (through the state
//!   index); its oldest queued run is the head of the claim index for each serving
//!   rank; its last activity is its newest run (`runs(queue_id, seq)`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::LazyLock;

use hoist_core::api::QueueDepth;
use hoist_core::run::RunState;
use sqlx::Row;

use super::agents::AgentQueue;
use super::rows::RunSpec;
use super::runs::{state_list, state_lit};
use super::{Store, StoreError};

pub const HOUR_MS: i64 = 3_600_000;

/// Upper bounds (exclusive) of the wait and duration buckets, in ms, about 1.5 apart
/// (so that a percentile estimated within a bucket is off by a third at most): bucket
/// `i` counts values below `BUCKET_BOUNDS_MS[i]` and not below the bound before it
/// (bucket 0 also counts negative values: clocks of replicas differ a little); the last
/// bucket counts everything from 2 days on. Indexed expressions use them (migration 0008): changing
/// them needs a migration.
pub const BUCKET_BOUNDS_MS: [i64; 38] = [
    100,
    200,
    300,
    500,
    750,
    1_000,
    1_500,
    2_000,
    3_000,
    5_000,
    7_500,
    10_000,
    15_000,
    20_000,
    30_000,
    45_000,
    60_000,
    90_000,
    120_000,
    180_000,
    300_000,
    450_000,
    600_000,
    900_000,
    1_200_000,
    1_800_000,
    2_700_000,
    3_600_000,
    5_400_000,
    7_200_000,
    10_800_000,
    14_400_000,
    21_600_000,
    28_800_000,
    43_200_000,
    64_800_000,
    86_400_000,
    172_800_000,
];
/// Number of buckets.
pub const BUCKETS: usize = BUCKET_BOUNDS_MS.len() + 1;

/// A run's wait in its queue, from launch to start, as SQL.
pub const WAIT: &str = "started_at - created_at";
/// A run's duration, from start to end, as SQL.
pub const DURATION: &str = "ended_at - started_at";

/// The bucket of `value` (SQL over `runs`' columns) as an SQL expression: exactly the
/// text of migration 0008's indexed expressions (a test compares them), so that both
/// databases count from those indexes.
pub fn bucket_expr(value: &str) -> String {
    let mut s = String::from("(CASE");
    for (i, b) in BUCKET_BOUNDS_MS.iter().enumerate() {
        let _ = write!(s, " WHEN {value} < {b} THEN {i}");
    }
    let _ = write!(s, " ELSE {} END)", BUCKET_BOUNDS_MS.len());
    s
}

/// `[from, to)` of bucket `i` in ms (`to` is `None` for the last bucket).
pub fn bucket_range(i: usize) -> (i64, Option<i64>) {
    let from = if i == 0 { 0 } else { BUCKET_BOUNDS_MS[i - 1] };
    (from, BUCKET_BOUNDS_MS.get(i).copied())
}

/// The `p`-quantile (0 to 1) of values counted in buckets, estimated linearly within
/// its bucket (the last bucket, unbounded, gives its lower bound); `None` when nothing
/// was counted.
pub fn quantile(counts: &[u64], p: f64) -> Option<i64> {
    let n: u64 = counts.iter().sum();
    if n == 0 {
        return None;
    }
    let rank = (p.clamp(0.0, 1.0) * n as f64).max(1.0);
    let mut below = 0u64;
    for (i, &c) in counts.iter().enumerate() {
        if c > 0 && (below + c) as f64 >= rank {
            let (from, to) = bucket_range(i);
            let Some(to) = to else { return Some(from) };
            let frac = (rank - below as f64) / c as f64;
            return Some(from + ((to - from) as f64 * frac).round() as i64);
        }
        below += c;
    }
    Some(bucket_range(counts.len().saturating_sub(1)).0)
}

/// `($first, $first+1, …)`: `n` placeholders.
fn placeholders(first: usize, n: usize) -> String {
    let ps: Vec<String> = (first..first + n).map(|i| format!("${i}")).collect();
    format!("({})", ps.join(", "))
}

/// ` AND {col} IN ($first, …)` for an entity filter, or nothing.
fn entity_filter(col: &str, first: usize, entities: Option<&[String]>) -> String {
    match entities {
        Some(es) => format!(" AND {col} IN {}", placeholders(first, es.len())),
        None => String::new(),
    }
}

/// States in which a run has not ended.
static NOT_FINAL: LazyLock<String> = LazyLock::new(|| state_list(|s| !s.is_terminal()));

/// Runs launched per hour, by state (`$1` the window's start, `$2` its hours, `$3…`
/// the entities).
pub(crate) fn runs_per_hour_sql(entities: Option<&[String]>) -> String {
    let ent = entity_filter("entity", 3, entities);
    let cols: Vec<String> = RunState::ALL
        .iter()
        .enumerate()
        .map(|(i, st)| {
            format!(
                "(SELECT COUNT(*) FROM runs WHERE state = {} AND created_at >= $1 + h.k * {HOUR_MS} \
                 AND created_at < $1 + (h.k + 1) * {HOUR_MS}{ent}) AS s{i}",
                state_lit(*st)
            )
        })
        .collect();
    format!(
        "WITH RECURSIVE h(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM h WHERE k + 1 < $2) \
         SELECT CAST(h.k AS BIGINT) AS k, {} FROM h",
        cols.join(", ")
    )
}

/// Started runs launched since `$1` per queue (of the entities `$2…`) and wait bucket.
pub(crate) fn wait_buckets_sql(entities: Option<&[String]>) -> String {
    let expr = bucket_expr(WAIT);
    let cols: Vec<String> = (0..BUCKETS)
        .map(|i| {
            format!(
                "(SELECT COUNT(*) FROM runs WHERE queue_id = q.id AND {expr} = {i} \
                 AND created_at >= $1 AND started_at IS NOT NULL) AS b{i}"
            )
        })
        .collect();
    let filter = match entities {
        Some(es) => format!(" WHERE q.entity IN {}", placeholders(2, es.len())),
        None => String::new(),
    };
    format!(
        "SELECT q.entity AS entity, q.name AS name, {} FROM queues q{filter} ORDER BY q.entity, q.name",
        cols.join(", ")
    )
}

/// Runs launched since `$1` (of the entities `$2…`) that ran and ended, per duration
/// bucket.
pub(crate) fn duration_buckets_sql(entities: Option<&[String]>) -> String {
    let expr = bucket_expr(DURATION);
    let ent = entity_filter("entity", 2, entities);
    let cols: Vec<String> = (0..BUCKETS)
        .map(|i| {
            format!(
                "(SELECT COUNT(*) FROM runs WHERE {expr} = {i} AND created_at >= $1 \
                 AND started_at IS NOT NULL AND ended_at IS NOT NULL{ent}) AS b{i}"
            )
        })
        .collect();
    format!("SELECT {}", cols.join(", "))
}

/// Runs that have not ended, per state and queue, with their latest update: of every
/// entity (the caller keeps its queues' rows). A filter on `entity` here would lead
/// SQLite to the entity index, through every run of the entities, ended or not.
pub(crate) static LIVE_RUNS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT state, queue_id, COUNT(*) AS n, MAX(updated_at) AS last FROM runs \
         WHERE state IN {} GROUP BY state, queue_id",
        *NOT_FINAL
    )
});

/// Queues (of the entities `$1…`) with the launch time of the head of each serving
/// rank (the claim index, `runs_queued`) and the last update of their newest run.
pub(crate) fn queue_heads_sql(entities: Option<&[String]>) -> String {
    let heads: Vec<String> = (0..=3)
        .map(|rank| {
            format!(
                "(SELECT created_at FROM runs WHERE queue_id = q.id AND state = {} AND eff_prio = {rank} \
                 ORDER BY seq LIMIT 1) AS head{rank}",
                state_lit(RunState::Queued)
            )
        })
        .collect();
    let filter = match entities {
        Some(es) => format!(" WHERE q.entity IN {}", placeholders(1, es.len())),
        None => String::new(),
    };
    format!(
        "SELECT q.id AS id, q.entity AS entity, q.name AS name, {}, \
         (SELECT updated_at FROM runs WHERE queue_id = q.id ORDER BY seq DESC LIMIT 1) AS newest \
         FROM queues q{filter} ORDER BY q.entity, q.name",
        heads.join(", ")
    )
}

/// A queue's wait buckets over the window.
#[derive(Debug, Clone)]
pub struct QueueWaitBuckets {
    pub entity: String,
    pub name: String,
    /// Started runs per bucket ([`BUCKETS`] of them).
    pub counts: Vec<u64>,
}

/// Where a queue stands now.
#[derive(Debug, Clone)]
pub struct QueueNow {
    pub id: String,
    pub entity: String,
    pub name: String,
    pub depth: QueueDepth,
    /// Connected agents (`polling` or `running`) serving it.
    pub agents: u32,
    /// Launch time of its oldest queued run (ms).
    pub oldest_queued_ms: Option<i64>,
    /// The latest update of its newest run, or of a run that has not ended (ms).
    pub last_activity_ms: Option<i64>,
}

fn count(row: &sqlx::any::AnyRow, col: &str) -> Result<u64, StoreError> {
    Ok(row.try_get::<i64, _>(col)?.max(0) as u64)
}

impl Store {
    /// Runs launched in each of `hours` hours from `from_ms` (of `entities`, all when
    /// `None`), by current state: one array per hour, in [`RunState::ALL`] order.
    pub async fn runs_per_hour(
        &self,
        from_ms: i64,
        hours: u32,
        entities: Option<&[String]>,
    ) -> Result<Vec<[u64; 11]>, StoreError> {
        if hours == 0 || entities.is_some_and(<[String]>::is_empty) {
            return Ok(vec![[0; 11]; hours as usize]);
        }
        let sql = runs_per_hour_sql(entities);
        let mut q = sqlx::query(sqlx::AssertSqlSafe(&sql[..]))
            .bind(from_ms)
            .bind(i64::from(hours));
        for e in entities.unwrap_or_default() {
            q = q.bind(e);
        }
        let rows = q.fetch_all(self.reader()).await?;
        let mut out = vec![[0u64; 11]; hours as usize];
        for r in &rows {
            let k: i64 = r.try_get("k")?;
            let Some(hour) = usize::try_from(k).ok().and_then(|k| out.get_mut(k)) else {
                continue;
            };
            for (i, n) in hour.iter_mut().enumerate() {
                *n = count(r, &format!("s{i}"))?;
            }
        }
        Ok(out)
    }

    /// Started runs launched since `since_ms`, per queue of `entities` (all when
    /// `None`) and wait bucket; every queue, by entity and name (a queue without such
    /// runs has only zeros).
    pub async fn queue_wait_buckets(
        &self,
        since_ms: i64,
        entities: Option<&[String]>,
    ) -> Result<Vec<QueueWaitBuckets>, StoreError> {
        if entities.is_some_and(<[String]>::is_empty) {
            return Ok(vec![]);
        }
        let sql = wait_buckets_sql(entities);
        let mut q = sqlx::query(sqlx::AssertSqlSafe(&sql[..])).bind(since_ms);
        for e in entities.unwrap_or_default() {
            q = q.bind(e);
        }
        let rows = q.fetch_all(self.reader()).await?;
        rows.iter()
            .map(|r| {
                Ok(QueueWaitBuckets {
                    entity: r.try_get("entity")?,
                    name: r.try_get("name")?,
                    counts: (0..BUCKETS)
                        .map(|i| count(r, &format!("b{i}")))
                        .collect::<Result<_, _>>()?,
                })
            })
            .collect()
    }

    /// Runs launched since `since_ms` (of `entities`, all when `None`) that ran and
    /// ended, per duration bucket ([`BUCKETS`] counts).
    pub async fn duration_buckets(
        &self,
        since_ms: i64,
        entities: Option<&[String]>,
    ) -> Result<Vec<u64>, StoreError> {
        if entities.is_some_and(<[String]>::is_empty) {
            return Ok(vec![0; BUCKETS]);
        }
        let sql = duration_buckets_sql(entities);
        let mut q = sqlx::query(sqlx::AssertSqlSafe(&sql[..])).bind(since_ms);
        for e in entities.unwrap_or_default() {
            q = q.bind(e);
        }
        let row = q.fetch_one(self.reader()).await?;
        (0..BUCKETS)
            .map(|i| count(&row, &format!("b{i}")))
            .collect()
    }

    /// Where each queue of `entities` (all when `None`) stands now, by entity and name.
    pub async fn queues_now(
        &self,
        entities: Option<&[String]>,
    ) -> Result<Vec<QueueNow>, StoreError> {
        if entities.is_some_and(<[String]>::is_empty) {
            return Ok(vec![]);
        }
        let binds = |sql: &str| {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()));
            for e in entities.unwrap_or_default() {
                q = q.bind(e.clone());
            }
            q
        };
        let heads_sql = queue_heads_sql(entities);
        // Three independent reads, on three of the pool's connections at once.
        let (heads, live, agents) = tokio::try_join!(
            binds(&heads_sql).fetch_all(self.reader()),
            sqlx::query(sqlx::AssertSqlSafe(LIVE_RUNS.as_str())).fetch_all(self.reader()),
            sqlx::query_scalar::<_, String>(
                "SELECT queues FROM agents WHERE status IN ('polling', 'running')"
            )
            .fetch_all(self.reader()),
        )?;

        let mut out = Vec::with_capacity(heads.len());
        let mut at: HashMap<String, usize> = HashMap::with_capacity(heads.len());
        for r in &heads {
            let id: String = r.try_get("id")?;
            let mut oldest: Option<i64> = None;
            for rank in 0..=3 {
                if let Some(t) = r.try_get::<Option<i64>, _>(format!("head{rank}").as_str())? {
                    oldest = Some(oldest.map_or(t, |o| o.min(t)));
                }
            }
            at.insert(id.clone(), out.len());
            out.push(QueueNow {
                id,
                entity: r.try_get("entity")?,
                name: r.try_get("name")?,
                depth: QueueDepth::default(),
                agents: 0,
                oldest_queued_ms: oldest,
                last_activity_ms: r.try_get("newest")?,
            });
        }
        for r in &live {
            let qid: String = r.try_get("queue_id")?;
            let Some(&i) = at.get(&qid) else { continue };
            let state: String = r.try_get("state")?;
            let Ok(state) = state.parse::<RunState>() else {
                continue;
            };
            let q = &mut out[i];
            if let Some(n) = q.depth.get_mut(state) {
                *n += count(r, "n")?;
            }
            let last: Option<i64> = r.try_get("last")?;
            q.last_activity_ms = q.last_activity_ms.max(last);
        }
        for json in agents {
            let Ok(queues) = serde_json::from_str::<Vec<AgentQueue>>(&json) else {
                continue;
            };
            for aq in queues {
                if let Some(&i) = at.get(&aq.id) {
                    out[i].agents += 1;
                }
            }
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------
// Benchmark support.

/// A queue that [`Store::bench_seed_runs`] fills.
#[derive(Debug, Clone)]
pub struct BenchQueue {
    pub id: String,
    pub entity: String,
    pub name: String,
    /// Who launched its runs.
    pub launched_by: String,
}

/// Runs per seeding transaction.
const BENCH_CHUNK: u64 = 25_000;

impl Store {
    /// Benchmark support (`hoist bench ui`): adds `n` runs spread evenly over the
    /// `queues` and over the 24 hours before `now`, in bulk, bypassing the launch
    /// checks. Their states follow from made-up (deterministic) waits and durations:
    /// queued while the wait has not passed, held while running, then mostly
    /// finished, some failed, cancelled or stopped. Held runs name agents that do not
    /// exist (`bench-agent-N`), so no reaper touches them. Returns the ids' prefix
    /// (`<prefix><i>` for run `i`).
    pub async fn bench_seed_runs(
        &self,
        queues: &[BenchQueue],
        n: u64,
        now: i64,
    ) -> Result<String, StoreError> {
        if queues.is_empty() || n == 0 {
            return Ok(String::new());
        }
        let spec = serde_json::to_string(&RunSpec {
            image: Some("python:3.12-slim".into()),
            entry_point: Some(vec!["python".into(), "train.py".into()]),
            args: vec!["--epochs".into(), "10".into()],
            ..Default::default()
        })
        .expect("serialisable");
        let prefix = format!("ui{}-", crate::secrets::new_id(6).to_lowercase());
        let nq = queues.len() as i64;
        // $1, $2: the chunk's first and last x; $3: n; $4: now; $5: spec; $6: prefix;
        // then 4 per queue.
        let values: Vec<String> = (0..queues.len())
            .map(|i| {
                let b = 7 + i * 4;
                format!("({i}, ${b}, ${}, ${}, ${})", b + 1, b + 2, b + 3)
            })
            .collect();
        // The states, generated from `RunState` like every list of states in SQL.
        use RunState as S;
        let st = |s: RunState| state_lit(s);
        let not_started = state_list(|s| matches!(s, S::Claimed | S::Building | S::Starting));
        let running_now = state_list(|s| matches!(s, S::Running | S::Stopping | S::Unknown));
        let never_ran = state_list(|s| {
            matches!(
                s,
                S::Queued | S::Claimed | S::Building | S::Starting | S::Cancelled
            )
        });
        let ran_and_ended = state_list(|s| s.is_terminal() && s != S::Cancelled);
        let no_agent = state_list(|s| matches!(s, S::Queued | S::Cancelled));
        let sql = format!(
            "WITH RECURSIVE cnt(x) AS (SELECT $1 UNION ALL SELECT x + 1 FROM cnt WHERE x < $2), \
             qs(i, id, entity, name, who) AS (VALUES {values}), \
             t AS (SELECT x, x % {nq} AS qi, \
                   $4 - 86400000 + (x * 86400000) / $3 AS created, \
                   (200 + ((x * 7919) % 1000) * ((x * 7919) % 1000) * ((x * 7919) % 1000) / 4000) * (1 + (x % {nq}) % 4) AS wait, \
                   3000 + ((x * 104729) % 1000) * ((x * 104729) % 1000) * ((x * 104729) % 1000) / 200 AS dur, \
                   (x * 1299709) % 1000 AS r FROM cnt), \
             u AS (SELECT t.*, CASE \
                     WHEN created + wait > $4 THEN {queued} \
                     WHEN created + wait + dur > $4 THEN (CASE WHEN r < 20 THEN {claimed} WHEN r < 40 THEN {building} \
                          WHEN r < 60 THEN {starting} WHEN r < 70 THEN {stopping} WHEN r < 75 THEN {unknown} ELSE {running} END) \
                     WHEN r < 780 THEN {finished} WHEN r < 900 THEN {failed} WHEN r < 960 THEN {cancelled} ELSE {stopped} END AS st \
                   FROM t) \
             INSERT INTO runs (id, queue_id, entity, queue_name, project, name, spec, resource, resource_config, \
               priority, eff_prio, state, state_reason, state_actor, created_by, created_at, updated_at, \
               started_at, ended_at, agent_id, agent_name, attempts, exit_code) \
             SELECT $6 || u.x, qs.id, qs.entity, qs.name, 'bench', 'train-' || u.x, $5, 'local-process', '{{}}', \
               2, 0, u.st, 'seeded by hoist bench ui', 'server', qs.who, u.created, \
               CASE WHEN u.st = {queued} THEN u.created WHEN u.st IN {not_started} THEN u.created + u.wait / 2 \
                    WHEN u.st = {cancelled} THEN u.created + u.wait / 2 \
                    WHEN u.st IN {running_now} THEN u.created + u.wait ELSE u.created + u.wait + u.dur END, \
               CASE WHEN u.st IN {never_ran} THEN NULL ELSE u.created + u.wait END, \
               CASE WHEN u.st IN {ran_and_ended} THEN u.created + u.wait + u.dur \
                    WHEN u.st = {cancelled} THEN u.created + u.wait / 2 ELSE NULL END, \
               CASE WHEN u.st IN {no_agent} THEN NULL ELSE 'bench-agent-' || (u.x % 8) END, \
               CASE WHEN u.st IN {no_agent} THEN NULL ELSE 'bench-agent-' || (u.x % 8) END, \
               CASE WHEN u.st IN {no_agent} THEN 0 ELSE 1 END, \
               CASE WHEN u.st = {finished} THEN 0 WHEN u.st = {failed} THEN 1 WHEN u.st = {stopped} THEN 143 ELSE NULL END \
             FROM u JOIN qs ON qs.i = u.qi",
            values = values.join(", "),
            queued = st(S::Queued),
            claimed = st(S::Claimed),
            building = st(S::Building),
            starting = st(S::Starting),
            running = st(S::Running),
            stopping = st(S::Stopping),
            unknown = st(S::Unknown),
            finished = st(S::Finished),
            failed = st(S::Failed),
            stopped = st(S::Stopped),
            cancelled = st(S::Cancelled),
        );
        let mut first = 0u64;
        while first < n {
            let last = (first + BENCH_CHUNK).min(n) - 1;
            let (sql, spec, prefix, queues) =
                (sql.clone(), spec.clone(), prefix.clone(), queues.to_vec());
            self.write(move |c| {
                Box::pin(async move {
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(first as i64)
                        .bind(last as i64)
                        .bind(n as i64)
                        .bind(now)
                        .bind(spec)
                        .bind(prefix);
                    for bq in &queues {
                        q = q
                            .bind(bq.id.clone())
                            .bind(bq.entity.clone())
                            .bind(bq.name.clone())
                            .bind(bq.launched_by.clone());
                    }
                    q.execute(&mut *c).await?;
                    Ok(())
                })
            })
            .await?;
            first = last + 1;
        }
        Ok(prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_indexed_expressions_are_the_queries() {
        for sql in [
            include_str!("../../migrations/sqlite/0008_stats.sql"),
            include_str!("../../migrations/postgres/0008_stats.sql"),
        ] {
            assert!(sql.contains(&bucket_expr(WAIT)), "wait bucket expression");
            assert!(
                sql.contains(&bucket_expr(DURATION)),
                "duration bucket expression"
            );
        }
    }

    /// SQLite plans every query of this module from indexes: no full scan of `runs`,
    /// and no sort except the grouping of runs that have not ended.
    #[tokio::test]
    async fn sqlite_plans_use_the_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("t.db").display()))
            .await
            .unwrap();
        let two = ["a".to_string(), "b".to_string()];
        for entities in [None, Some(&two[..])] {
            let n = entities.map_or(0, <[String]>::len);
            for (name, sql, params, may_sort, uses) in [
                (
                    "runs per hour",
                    runs_per_hour_sql(entities),
                    2 + n,
                    false,
                    &["runs_state_created"][..],
                ),
                (
                    "wait buckets",
                    wait_buckets_sql(entities),
                    1 + n,
                    false,
                    &["runs_wait_bucket"],
                ),
                (
                    "duration buckets",
                    duration_buckets_sql(entities),
                    1 + n,
                    false,
                    &["runs_duration_bucket"],
                ),
                (
                    "queue heads",
                    queue_heads_sql(entities),
                    n,
                    false,
                    &["runs_queued", "runs_queue_seq"],
                ),
                ("live runs", LIVE_RUNS.to_string(), 0, true, &[]),
            ] {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")));
                for i in 0..params {
                    q = q.bind(i as i64);
                }
                let rows = q.fetch_all(store.reader()).await.unwrap();
                let plan: Vec<String> = rows
                    .iter()
                    .map(|r| r.try_get::<String, _>("detail").unwrap())
                    .collect();
                let text = plan.join("\n");
                assert!(
                    !plan.iter().any(|l| l.starts_with("SCAN runs")),
                    "{name} scans runs:\n{text}"
                );
                assert!(
                    may_sort || !text.contains("TEMP B-TREE"),
                    "{name} sorts:\n{text}"
                );
                assert!(text.contains("runs USING"), "{name}:\n{text}");
                for index in uses {
                    assert!(
                        text.contains(&format!("INDEX {index} ")),
                        "{name} does not use {index}:\n{text}"
                    );
                }
            }
        }
        store.close().await;
    }

    #[test]
    fn buckets_and_quantiles() {
        assert_eq!(bucket_range(0), (0, Some(100)));
        assert_eq!(bucket_range(5), (750, Some(1_000)));
        assert_eq!(bucket_range(BUCKETS - 1), (172_800_000, None));
        let mut c = vec![0u64; BUCKETS];
        assert_eq!(quantile(&c, 0.5), None);
        // 10 runs between 1 s and 1.5 s: the median halfway.
        assert_eq!(bucket_range(6), (1_000, Some(1_500)));
        c[6] = 10;
        assert_eq!(quantile(&c, 0.5), Some(1_250));
        assert_eq!(quantile(&c, 0.95), Some(1_475));
        // One more, very long: the p95 stays, the max bucket gives its lower bound.
        c[BUCKETS - 1] = 1;
        assert_eq!(quantile(&c, 0.5), Some(1_275));
        assert_eq!(quantile(&c, 1.0), Some(172_800_000));
    }
}
