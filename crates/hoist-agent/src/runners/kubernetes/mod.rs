//! The Kubernetes runner: a run becomes a `batch/v1` Job or any custom object (resolved
//! through API discovery), with a per-run Secret for its credentials, watched for its
//! status and followed for the logs of every container of every pod.
//!
//! - [`policy`]: what the agent's `kubernetes` settings let a queue config do.

pub mod policy;
