//! The Kubernetes runner: a run becomes a `batch/v1` Job or any custom object (resolved
//! through API discovery), with a per-run Secret for its credentials, watched for its
//! status and followed for the logs of every container of every pod.
//!
//! The pure half (no client, no Kubernetes types: JSON in, JSON out; it builds without
//! the `kubernetes` feature, so `hoist launch --dry-run` uses it offline):
//! - [`spec`]: a run and its queue config → a [`spec::Submission`]: the top object
//!   (named `<prefix>-<run id>`, labelled `hoist.dev/*` down to every pod template, the
//!   run's image, command, env and hoist's default securityContext injected) and the
//!   per-run Secrets it refers to (`<name>-env` for the run token and secret-looking
//!   values, `<name>-pull` for registry credentials). [`spec::run_selector`] selects
//!   every object of a run.
//! - [`status`]: what the cluster says → run progress: a Job's or a known custom
//!   kind's status ([`status::TopStatus`], a documented fallback for unknown kinds) and
//!   what a pod shows ([`status::PodView`]: unschedulable, pulling, running, start
//!   failures such as `ImagePullBackOff`, ended containers, eviction/preemption).
//! - [`policy`]: what the agent's `kubernetes` settings (and `secure_mode`) let a queue
//!   config do, checked on the object about to be submitted.
//!
//! The IO half (feature `kubernetes`: kube-rs and k8s-openapi):
//! - `client`: the cluster (kube-rs client config, the default namespace).
//! - `api`: discovery, create (Secrets, the top object, ownership), delete; the list
//!   of every request the runner sends (for RBAC).
//! - `runner`: `KubernetesRunner`: start, adopt, sweep, dry run.
//! - `execution`: supervision by watching; stop; cleanup.
//! - `logs`: one log follower per container.

use crate::config::KubernetesSettings;
use crate::runners::{Capabilities, DryRun, JobSpec, RunnerError};

/// What the Kubernetes runner does: runs need an image, and one that the cluster can
/// pull (a registry, unless the nodes share the agent's daemon); the objects outlive
/// the agent; a pod waits to be scheduled and pulled before it runs.
pub const CAPABILITIES: Capabilities = Capabilities {
    needs_image: true,
    survives_restart: true,
    needs_registry: true,
    reports_pending: true,
};

pub mod policy;
pub mod spec;
pub mod status;

#[cfg(feature = "kubernetes")]
pub mod api;
#[cfg(feature = "kubernetes")]
pub mod client;
#[cfg(feature = "kubernetes")]
pub mod execution;
#[cfg(feature = "kubernetes")]
pub mod logs;
#[cfg(feature = "kubernetes")]
pub mod runner;

#[cfg(feature = "kubernetes")]
pub use client::{Cluster, ClusterError};
#[cfg(feature = "kubernetes")]
pub use execution::START_FAILURE_WINDOW;
#[cfg(feature = "kubernetes")]
pub use runner::KubernetesRunner;

/// [`crate::runners::Runner::dry_run`] without a cluster (for the CLI when none answers): the objects
/// as they would be submitted, masked, checked by the agent's policy only. Namespace:
/// the queue config's, else `settings.namespace`, else `default`.
pub fn offline_dry_run(
    job: &JobSpec,
    settings: &KubernetesSettings,
    secure_mode: bool,
) -> Result<DryRun, RunnerError> {
    let default_namespace = settings
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let cx = spec::SpecContext {
        default_namespace: &default_namespace,
        settings,
        secure_mode,
        docker_config_json: None,
    };
    let sub = spec::build(job, &cx)?;
    Ok(DryRun {
        objects: sub.masked(),
        backend_check: None,
    })
}
