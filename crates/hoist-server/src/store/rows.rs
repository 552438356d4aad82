//! Decoding rows into wire types.

use std::collections::BTreeMap;

use hoist_core::api::{BuiltImage, EnvVars, Failure, JobRef, JobSource, Run, RunAgent};
use hoist_core::resource::ResourceType;
use hoist_core::run::{Priority, RunState};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::StoreError;
use crate::clock::to_datetime;

/// What a launch asked for, stored as one JSON column.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunSpec {
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub job: Option<JobRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_source: Option<JobSource>,
    #[serde(default)]
    pub entry_point: Option<Vec<String>>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: EnvVars,
    #[serde(default)]
    pub config: Value,
    #[serde(default)]
    pub resource_args: Value,
    #[serde(default)]
    pub template_values: BTreeMap<String, Value>,
}

/// Columns selected for a run, in the order [`run_from_row`] reads them.
pub const RUN_COLUMNS: &str = "id, entity, queue_name, project, name, spec, resource, resource_config, \
    priority, state, state_reason, stop_requested, created_by, created_at, updated_at, started_at, \
    ended_at, agent_id, agent_name, attempts, exit_code, failure, built_image, built_cache_hit, \
    built_builder, queue_id, seq";

pub use super::error::{corrupt, corrupt_from};

pub fn json_col<T: serde::de::DeserializeOwned>(row: &AnyRow, col: &str) -> Result<T, StoreError> {
    let s: String = row.try_get(col)?;
    serde_json::from_str(&s).map_err(|e| corrupt_from(format!("column {col}"), e))
}

pub fn run_from_row(row: &AnyRow) -> Result<Run, StoreError> {
    let spec: RunSpec = json_col(row, "spec")?;
    let state: String = row.try_get("state")?;
    let resource: String = row.try_get("resource")?;
    let failure: Option<String> = row.try_get("failure")?;
    let failure: Option<Failure> = match failure {
        Some(f) => Some(serde_json::from_str(&f).map_err(|e| corrupt_from("column failure", e))?),
        None => None,
    };
    let agent_id: Option<String> = row.try_get("agent_id")?;
    let agent_name: Option<String> = row.try_get("agent_name")?;
    let priority: i64 = row.try_get("priority")?;
    // Written together by `store::runs::transition`: all three or none.
    let built = match (
        row.try_get::<Option<String>, _>("built_image")?,
        row.try_get::<Option<i64>, _>("built_cache_hit")?,
        row.try_get::<Option<String>, _>("built_builder")?,
    ) {
        (Some(image), Some(hit), Some(builder)) => Some(BuiltImage {
            image,
            cache_hit: hit != 0,
            builder,
        }),
        _ => None,
    };
    Ok(Run {
        id: row.try_get("id")?,
        entity: row.try_get("entity")?,
        queue: row.try_get("queue_name")?,
        project: row.try_get("project")?,
        name: row.try_get("name")?,
        image: spec.image,
        job: spec.job,
        job_source: spec.job_source,
        entry_point: spec.entry_point,
        args: spec.args,
        env: spec.env,
        config: spec.config,
        resource_args: spec.resource_args,
        template_values: spec.template_values,
        priority: Priority::from_rank(priority).ok_or_else(|| corrupt("priority"))?,
        resource: resource
            .parse::<ResourceType>()
            .map_err(|e| corrupt(format!("column resource: {e}")))?,
        resource_config: json_col(row, "resource_config")?,
        state: state
            .parse::<RunState>()
            .map_err(|e| corrupt_from("column state", e))?,
        state_reason: row.try_get("state_reason")?,
        stop_requested: row.try_get::<i64, _>("stop_requested")? != 0,
        created_by: row.try_get("created_by")?,
        created_at: to_datetime(row.try_get("created_at")?),
        updated_at: to_datetime(row.try_get("updated_at")?),
        started_at: row
            .try_get::<Option<i64>, _>("started_at")?
            .map(to_datetime),
        ended_at: row.try_get::<Option<i64>, _>("ended_at")?.map(to_datetime),
        agent: match (agent_id, agent_name) {
            (Some(id), Some(name)) => Some(RunAgent { id, name }),
            _ => None,
        },
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        exit_code: row
            .try_get::<Option<i64>, _>("exit_code")?
            .map(|c| c as i32),
        failure,
        built,
        timeline: None,
        warnings: None,
    })
}
