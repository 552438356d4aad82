//! hoist-agent: takes runs from queues and executes them.
//!
//! # Layout
//! - [`config`]: the agent's configuration (`launch-config.yaml`, W&B-compatible),
//!   `HOIST_*` variables and flags, resolved into a typed [`config::AgentConfig`].
//! - [`agent`]: registration, the long-poll claim loop, heartbeats, shutdown.
//! - [`run`]: one run's life in phases: prepare, build, start (or adopt), supervise,
//!   report; driven by cancellation tokens.
//! - [`dry_run`]: `hoist launch --dry-run` on this machine: the prepare phase and the
//!   runner's checks for a run that was never claimed, creating nothing.
//! - [`macros`]: `${project_name}`-style queue-config macros and their secret filter.
//! - [`host_env`]: the agent's own environment and what of it jobs and macros may see.
//! - [`logs`]: bounded log capture and batched shipping to the server.
//! - [`runners`]: one [`runners::Runner`] per target resource (`local_process`,
//!   `docker`).
//! - [`builders`]: job source → image (`docker`, `noop`, `kaniko`).
//! - [`registries`]: where images go (`local`, `oci`, `ecr`, `gcr`, `acr`).
//! - [`environments`]: the cloud the agent runs in (`aws`, `gcp`, `azure`).
//!
//! Architecture Invariant: the agent talks to the server over HTTP only (through
//! `hoist-client`); it never touches the database.

pub mod agent;
pub mod builders;
pub mod config;
pub mod dry_run;
pub mod environments;
pub mod host_env;
pub mod logs;
pub mod macros;
pub mod registries;
pub mod run;
pub mod runners;
