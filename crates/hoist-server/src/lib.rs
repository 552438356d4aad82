//! hoist-server: the control plane.
//!
//! # Layout
//! - [`store`]: the durable store (SQLite or PostgreSQL) and every query; group commit
//!   for SQLite writes; the one state-changing function of runs; agent sessions; the
//!   store's error with its database-code classification.
//! - [`api`]: the `/api/v1` HTTP API (axum), its OpenAPI document, health and metrics.
//! - [`auth`]: API keys and run tokens → the caller ([`auth::Principal`]); access rules.
//! - [`dispatch`]: in-memory wake-ups: waiting claims, stop requests, log followers;
//!   the count of parked waiters (`/metrics`, tests).
//! - [`cluster`]: replicas of one PostgreSQL database telling each other about
//!   wake-ups and changed cache entries (`LISTEN`/`NOTIFY`).
//! - [`reaper`]: leases that lapse, agents that go silent, runs left `unknown`.
//! - [`blobstore`]: code artifacts and log segments in a directory or an object store
//!   (S3, GCS, Azure Blob; feature `blob-cloud`), checked at start.
//! - [`logs`]: run logs: segments in the blob store indexed in the store, quota,
//!   byte-capped pages, retention.
//! - [`serve`]: HTTP/1.1 connections: header and idle timeouts, the connection limit.
//! - [`server`]: configuration, start-up (admin bootstrap), graceful shutdown.
//! - [`clock`], [`secrets`], [`error`]: time, credentials, the error boundary.

pub mod api;
pub mod auth;
pub mod blobstore;
pub mod clock;
pub mod cluster;
pub mod dispatch;
pub mod error;
pub mod logs;
pub mod reaper;
pub mod secrets;
pub mod serve;
pub mod server;
pub mod store;
pub mod web;

pub use server::{Server, ServerConfig};
