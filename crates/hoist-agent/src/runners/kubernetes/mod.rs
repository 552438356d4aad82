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

pub mod policy;
pub mod spec;
pub mod status;
