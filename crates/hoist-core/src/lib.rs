//! hoist-core: everything the server, the agent and the CLI agree on, with no IO.
//!
//! # Layout
//! - [`api`]: the JSON wire types of the `/api/v1` HTTP API (requests, responses, the
//!   error envelope). Shared verbatim by the server, the client and the agent.
//! - [`run`]: the run lifecycle: states, priorities, who may move a run where.
//! - [`secret`]: the [`secret::Secret`] type every credential travels in, job
//!   environments ([`secret::EnvVars`]), and what looks like a secret.
//! - [`merge`]: deep merge of JSON documents (resource args over queue configs).
//! - [`names`]: validation of user-chosen names (entities, queues, projects, agents),
//!   and the edit distance behind every "did you mean" suggestion.
//! - [`resource`]: resource types (`local-process`, `docker`, …) and the schema checks
//!   of each resource's queue configuration, with path-bearing problems.
//! - [`template`]: typed queue template variables (`{{name}}`): parsing, checking and
//!   substitution.
//! - [`yaml`]: YAML/JSON documents parsed into `serde_json::Value` with line-aware errors,
//!   or into a tree of positioned nodes ([`yaml::locate`]: where a problem's path is).

pub mod api;
pub mod merge;
pub mod names;
pub mod resource;
pub mod run;
pub mod secret;
pub mod template;
pub mod yaml;

/// The version every hoist component reports (agents register with it).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
