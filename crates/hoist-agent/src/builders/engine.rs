//! The seam between the build pipeline ([`super::pipeline`]) and what builds: an
//! [`Engine`] takes a packed build context and a destination and builds (and pushes)
//! the image; everything before (fetching the source, the Dockerfile, packing, the
//! content-hash tag, the registry's cache check, the per-tag lock) is the pipeline's
//! and the same for every engine.

use std::path::Path;

use async_trait::async_trait;
use hoist_core::api::Run;

use super::BuildError;
use crate::logs::LogSink;

/// How an engine wants the build context packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextFormat {
    /// A plain tar ([`hoist_context::pack_for_build`]): the Docker Engine API's body.
    Tar,
    /// The same tar, gzip-compressed ([`hoist_context::pack_for_build_gz`]): what an
    /// in-cluster executor fetches from an object store.
    TarGz,
}

/// One build, as the pipeline hands it to an engine.
#[derive(Debug, Clone, Copy)]
pub struct BuildRequest<'a> {
    /// The run the image is for (names, labels, messages).
    pub run: &'a Run,
    /// The packed context, in the engine's [`ContextFormat`].
    pub context: &'a Path,
    /// Size of the file at `context`.
    pub context_bytes: u64,
    /// The Dockerfile's path inside the context.
    pub dockerfile: &'a str,
    /// The reference to build: `<repository>:<tag>`, or `hoist-build:<tag>` without a
    /// registry.
    pub image: &'a str,
    /// The content hash ([`super::TAG_HEX_LEN`] hex digits).
    pub tag: &'a str,
    /// Whether to push `image` to the agent's registry once built.
    pub push: bool,
}

/// What builds and pushes images.
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// `docker`, `kaniko`, `buildah`.
    fn kind(&self) -> &'static str;

    fn context_format(&self) -> ContextFormat;

    /// Builds `req.image` from `req.context` and pushes it when `req.push`. Output goes
    /// to `logs` as it comes. Dropping the future cancels the build: the engine removes
    /// what it created for it.
    async fn build(&self, req: &BuildRequest<'_>, logs: &LogSink) -> Result<(), BuildError>;

    /// Deletes what an earlier process of the agent `agent` left of its builds; see
    /// [`super::Builder::sweep`].
    async fn sweep(&self, agent: &str) -> Result<usize, BuildError> {
        let _ = agent;
        Ok(0)
    }
}
