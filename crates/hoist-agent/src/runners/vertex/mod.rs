//! The Vertex AI runner: a run becomes a Vertex AI CustomJob, created with the REST API
//! (v1) and a bearer token of the agent's `gcp` environment, polled for its state and
//! followed for its Cloud Logging entries.
//!
//! The pure half (no client: JSON in, JSON out; `hoist launch --dry-run` uses it
//! offline):
//! - [`spec`]: a run and its queue config (W&B's shape: `spec` = `aiplatform.CustomJob`
//!   arguments, `run` = `CustomJob.run` arguments, snake_case or camelCase) → the REST
//!   `CustomJob` body: the mapping table, where the run's image, command and env go in
//!   the worker pools, the labels, the secrets rule; and what a job's `state` means.
//!
//! The IO half:
//! - [`api`]: the REST calls (CustomJob create/get/cancel/list, Cloud Logging
//!   `entries:list`), Google's error shape, the endpoints and their overrides
//!   (`HOIST_VERTEX_ENDPOINT`, `HOIST_LOGGING_ENDPOINT`).
//! - [`runner`]: [`VertexRunner`]: start, adopt (by labels), sweep, dry run.
//! - [`execution`]: supervision by polling with backoff; logs; stop (`:cancel`).
//!
//! Project and region come from the agent's `environment: {type: gcp, region, project}`.
//! W&B's Vertex runner is the model to do better than: it replaces the config's worker
//! pools with one of its own, maps `CANCELLED` to "unknown", reads no logs and cannot
//! find its jobs again after a restart.

use crate::runners::{Capabilities, DryRun, JobSpec, RunnerError};

/// What the Vertex AI runner does: runs need an image in a registry Vertex AI pulls
/// from; a CustomJob outlives the agent; it is queued and provisioned before it runs.
pub const CAPABILITIES: Capabilities = Capabilities {
    needs_image: true,
    survives_restart: true,
    needs_registry: true,
    reports_pending: true,
};

pub mod api;
pub mod execution;
pub mod runner;
pub mod spec;

pub use execution::Timing;
pub use runner::VertexRunner;

/// What a dry run shows of a submission: the create request, masked.
fn dry_run_object(sub: &spec::Submission) -> serde_json::Value {
    serde_json::json!({
        "method": "POST",
        "path": format!("v1/{}/customJobs", sub.parent),
        "body": sub.masked(),
    })
}

/// [`crate::runners::Runner::dry_run`] without credentials (for the CLI): the create
/// request for `project` and `region`, masked.
pub fn offline_dry_run(job: &JobSpec, project: &str, region: &str) -> Result<DryRun, RunnerError> {
    let sub = spec::build(
        job,
        &spec::SpecContext {
            project,
            region,
            now: chrono::Utc::now(),
        },
    )?;
    Ok(DryRun {
        objects: vec![dry_run_object(&sub)],
        backend_check: None,
    })
}
