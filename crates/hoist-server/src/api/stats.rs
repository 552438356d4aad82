//! `/api/v1/stats`: aggregates of the caller's entities, for the web UI's overview
//! and queues pages (and anyone's dashboards). Only the entities the caller may use
//! are counted (admins: all), like every list of the API.

use axum::extract::State;
use hoist_core::api::{
    DurationBucket, ErrorBody, GroupCounts, HourRuns, OverviewStats, QueueStats, QueueStatsList,
    QueueWait, StateGroup,
};
use hoist_core::run::RunState;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, Query};
use crate::auth::{User, entity_for};
use crate::clock::to_datetime;
use crate::error::{ApiError, ApiResult};
use crate::store::stats::{BUCKETS, HOUR_MS, bucket_range, quantile};

/// Longest overview window: a week.
pub const MAX_HOURS: u32 = 168;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(overview))
        .routes(routes!(queue_stats))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct OverviewParams {
    /// The window in hours: the current hour and the `hours - 1` before it (default 24,
    /// at most 168).
    pub hours: Option<u32>,
}

/// Runs launched per hour by state group, queue waits (launch to start) p50/p95 per
/// queue, and run durations (start to end) as a histogram with log-spaced buckets,
/// over the last `hours` hours, for the entities the caller may use.
#[utoipa::path(get, path = "/api/v1/stats/overview", tag = "stats", params(OverviewParams),
    responses((status = 200, body = OverviewStats), (status = 400, body = ErrorBody)))]
pub(crate) async fn overview(
    State(s): State<AppState>,
    User(u): User,
    Query(p): Query<OverviewParams>,
) -> ApiResult<axum::Json<OverviewStats>> {
    let hours = p.hours.unwrap_or(24);
    if !(1..=MAX_HOURS).contains(&hours) {
        return Err(ApiError::bad_request(format!(
            "hours must be between 1 and {MAX_HOURS}"
        )));
    }
    let now = s.now();
    let from = (now.div_euclid(HOUR_MS) - i64::from(hours - 1)) * HOUR_MS;
    let visible = u.visible();
    let entities = visible.as_deref();
    // Three independent reads, on three of the pool's connections at once.
    let (per_hour, waits, durations) = tokio::try_join!(
        s.store.runs_per_hour(from, hours, entities),
        s.store.queue_wait_buckets(from, entities),
        s.store.duration_buckets(from, entities),
    )?;

    let hours = per_hour
        .iter()
        .enumerate()
        .map(|(k, by_state)| {
            let mut runs = GroupCounts::default();
            for (st, n) in RunState::ALL.iter().zip(by_state) {
                runs.add(StateGroup::of(*st), *n);
            }
            HourRuns {
                start: to_datetime(from + k as i64 * HOUR_MS),
                runs,
            }
        })
        .collect();
    let queue_waits = waits
        .into_iter()
        .filter_map(|q| {
            let started: u64 = q.counts.iter().sum();
            Some(QueueWait {
                p50_ms: quantile(&q.counts, 0.5)?,
                p95_ms: quantile(&q.counts, 0.95)?,
                started,
                entity: q.entity,
                queue: q.name,
            })
        })
        .collect();
    let durations = (0..BUCKETS)
        .map(|i| {
            let (from_ms, to_ms) = bucket_range(i);
            DurationBucket {
                from_ms,
                to_ms,
                runs: durations.get(i).copied().unwrap_or(0),
            }
        })
        .collect();
    Ok(axum::Json(OverviewStats {
        at: to_datetime(now),
        from: to_datetime(from),
        hours,
        queue_waits,
        durations,
    }))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueueStatsParams {
    /// Only this entity's queues.
    pub entity: Option<String>,
    /// Only queues with this name (in any of your entities).
    pub name: Option<String>,
}

/// Where each queue the caller may use stands now: runs in each state that is not
/// final, connected agents serving it, the wait of its oldest queued run, its last
/// activity.
#[utoipa::path(get, path = "/api/v1/stats/queues", tag = "stats", params(QueueStatsParams),
    responses((status = 200, body = QueueStatsList), (status = 404, body = ErrorBody)))]
pub(crate) async fn queue_stats(
    State(s): State<AppState>,
    User(u): User,
    Query(p): Query<QueueStatsParams>,
) -> ApiResult<axum::Json<QueueStatsList>> {
    let entities = match &p.entity {
        Some(e) => Some(vec![entity_for(&s, &u, Some(e), false).await?]),
        None => u.visible(),
    };
    let now = s.now();
    let mut queues = s.store.queues_now(entities.as_deref()).await?;
    if let Some(n) = &p.name {
        queues.retain(|q| &q.name == n);
    }
    Ok(axum::Json(QueueStatsList {
        at: to_datetime(now),
        queues: queues
            .into_iter()
            .map(|q| QueueStats {
                id: q.id,
                entity: q.entity,
                name: q.name,
                depth: q.depth,
                agents: q.agents,
                oldest_queued_at: q.oldest_queued_ms.map(to_datetime),
                oldest_queued_wait_ms: q.oldest_queued_ms.map(|t| (now - t).max(0)),
                last_activity_at: q.last_activity_ms.map(to_datetime),
            })
            .collect(),
    }))
}
