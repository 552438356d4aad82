//! Builders: turn a run's job source (a git commit, a code artifact) into an image.
//!
//! - [`docker`]: builds through the Docker Engine API; the tag is a content hash of the
//!   build inputs, and nothing is built when the destination already has that tag.
//! - [`noop`]: prebuilt images only; a git or code job fails at once, saying what to
//!   configure.
//! - [`kaniko`]: configured and validated now (`config/`); it builds in Kubernetes (a
//!   later issue) and answers a clear error until then.
//!
//! [`builder_from_config`] picks one from the agent config. The agent calls
//! [`Builder::build`] for a run whose `job_source` is git or code, between `claimed`
//! and `starting`; a [`BuildError`] fails the run with stage `build`
//! ([`BuildError::failure`]). Dropping the future cancels the build: the Engine API
//! request is closed (the daemon stops the build and removes its containers), `git`
//! is killed, the temporary directories are removed.
//!
//! # The image tag
//!
//! [`image_hash`] is SHA-256 over, each on its own length-prefixed field: the builder
//! version [`BUILDER_VERSION`], the digest of the exact tar sent to the daemon (the
//! build context as [`hoist_context::pack_for_build`] writes it: sorted, fixed mtimes,
//! no owners, the generated Dockerfile included), the Dockerfile's path in the
//! context, the Dockerfile's bytes, and the base image when hoist generated the
//! Dockerfile. The tag is its first 32 hex digits: `hoist-build:<tag>` in the local
//! daemon, `<repository>:<tag>` with a registry. The same source, Dockerfile and base
//! give the same tag on any agent; one changed byte gives another.
//!
//! Not part of the hash: what `FROM` resolves to at build time (a moved base tag is
//! not noticed; pin base images by digest when it matters), the network, and
//! `builder.cache`.
//!
//! # Build output
//!
//! Every line the daemon sends is written to the run's logs as it comes, on the
//! `system` stream (hoist's own stream, as [`hoist_core::api::LogStream`] documents;
//! job output is stdout/stderr); hoist's notes are `[hoist: …]` lines on the same
//! stream. A failure keeps the last [`crate::logs::TAIL_LINES`] lines of the build in
//! [`BuildError::output_tail`], whatever the run's log tail holds.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use hoist_client::Client;
use hoist_core::api::{Failure, JobSource, Run};
use hoist_core::run::FailureStage;
use sha2::{Digest, Sha256};

use crate::config::{AgentConfig, BuilderKind};
use crate::logs::LogSink;
use crate::registries::Registry;

pub mod checkout;
pub mod docker;
mod dockerfile;
pub mod kaniko;
pub mod noop;
mod source;

pub use dockerfile::{GENERATED_DOCKERFILE, WORKDIR, generate_python_dockerfile};

/// Part of every image hash: bump it when what a build produces from the same inputs
/// changes (the generated Dockerfile, the context rules), so old tags are not reused.
pub const BUILDER_VERSION: &str = "hoist-builder/1";

/// The local repository of built images when no registry is configured.
pub const LOCAL_REPOSITORY: &str = "hoist-build";
/// Hex digits of the hash in a tag.
pub const TAG_HEX_LEN: usize = 32;

/// An image ready for the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// The reference the runner starts (`hoist-build:<tag>`, `<repository>:<tag>`).
    pub image: String,
    /// The destination already had the image: nothing was built or pushed.
    pub cache_hit: bool,
    /// The content hash ([`TAG_HEX_LEN`] hex digits).
    pub tag: String,
}

/// A failed build (stage `build`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BuildError {
    /// What went wrong, naming the step, the registry or the path concerned.
    pub message: String,
    /// The Dockerfile step that failed, as written (`RUN pip install -r requirements.txt`).
    pub step: Option<String>,
    /// The last lines of the build's output (or of `git`'s).
    pub output_tail: Vec<String>,
}

impl BuildError {
    pub fn new(message: impl Into<String>) -> BuildError {
        BuildError {
            message: message.into(),
            step: None,
            output_tail: Vec::new(),
        }
    }

    pub fn with_tail(mut self, tail: Vec<String>) -> BuildError {
        self.output_tail = tail;
        self
    }

    /// The run's failure record.
    pub fn failure(&self) -> Failure {
        Failure {
            stage: FailureStage::Build,
            message: self.message.clone(),
            log_tail: self.output_tail.clone(),
        }
    }
}

#[async_trait]
pub trait Builder: Send + Sync {
    /// `docker`, `kaniko`, `noop`.
    fn kind(&self) -> &'static str;

    /// The image of `run`'s job source (`run.job_source` git or code), built unless
    /// the destination has it already. Output goes to `logs`.
    async fn build(&self, run: &Run, logs: &LogSink) -> Result<Built, BuildError>;
}

/// Where the docker builder gets code artifacts (`JobSource::Code`) from.
#[async_trait]
pub trait ArtifactSource: Send + Sync {
    /// Writes the artifact `digest` (`sha256:<hex>`) into `dest` and checks that its
    /// content has that digest. Returns its size.
    async fn fetch(&self, digest: &str, dest: &Path) -> Result<u64, String>;
}

/// The hoist server's blob store (`GET /api/v1/blobs/{digest}`), with the agent's key.
#[async_trait]
impl ArtifactSource for Client {
    async fn fetch(&self, digest: &str, dest: &Path) -> Result<u64, String> {
        self.download_blob_to(digest, dest)
            .await
            .map_err(|e| e.to_string())
    }
}

/// Artifacts as files in a directory, named by their digest's hex (`<hex>`, or
/// `<hex>.tar.gz`); for tests and air-gapped agents.
#[derive(Debug, Clone)]
pub struct DirArtifacts {
    pub dir: PathBuf,
}

#[async_trait]
impl ArtifactSource for DirArtifacts {
    async fn fetch(&self, digest: &str, dest: &Path) -> Result<u64, String> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| format!("invalid artifact digest {digest:?}"))?;
        let src = [hex.to_string(), format!("{hex}.tar.gz")]
            .into_iter()
            .map(|n| self.dir.join(n))
            .find(|p| p.is_file())
            .ok_or_else(|| format!("artifact {digest} not found in {}", self.dir.display()))?;
        let (src2, dest2) = (src.clone(), dest.to_path_buf());
        let got = tokio::task::spawn_blocking(move || -> std::io::Result<(String, u64)> {
            std::fs::copy(&src2, &dest2)?;
            let mut h = Sha256::new();
            let mut f = std::fs::File::open(&dest2)?;
            let n = std::io::copy(&mut f, &mut h)?;
            Ok((hex_string(&h.finalize()), n))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{}: {e}", src.display()))?;
        if got.0 != hex {
            let _ = std::fs::remove_file(dest);
            return Err(format!(
                "{} has digest sha256:{}, not {digest}",
                src.display(),
                got.0
            ));
        }
        Ok(got.1)
    }
}

/// What an image's content hash is made of (see the module documentation).
#[derive(Debug, Clone, Copy)]
pub struct BuildInputs<'a> {
    /// `sha256:<hex>` of the tar sent to the daemon ([`hoist_context::Packed::tar_digest`]).
    pub context_digest: &'a str,
    /// The Dockerfile's path inside the context.
    pub dockerfile_path: &'a str,
    pub dockerfile: &'a [u8],
    /// The base image, when hoist generated the Dockerfile.
    pub base_image: Option<&'a str>,
}

/// The full SHA-256 (64 hex digits) of the build inputs, with [`BUILDER_VERSION`].
pub fn image_hash(inputs: &BuildInputs<'_>) -> String {
    let mut h = Sha256::new();
    let mut field = |name: &str, value: &[u8]| {
        h.update(name.as_bytes());
        h.update((value.len() as u64).to_be_bytes());
        h.update(value);
    };
    field("builder", BUILDER_VERSION.as_bytes());
    field("context", inputs.context_digest.as_bytes());
    field("dockerfile-path", inputs.dockerfile_path.as_bytes());
    field("dockerfile", inputs.dockerfile);
    field("base", inputs.base_image.unwrap_or("").as_bytes());
    hex_string(&h.finalize())
}

/// The image tag of the build inputs: the first [`TAG_HEX_LEN`] hex digits of
/// [`image_hash`].
pub fn image_tag(inputs: &BuildInputs<'_>) -> String {
    image_hash(inputs)[..TAG_HEX_LEN].to_string()
}

/// `repository:tag`, where the repository is the registry's or [`LOCAL_REPOSITORY`].
pub fn image_reference(repository: Option<&str>, tag: &str) -> String {
    format!("{}:{tag}", repository.unwrap_or(LOCAL_REPOSITORY))
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `entity/job:version` (or the run id) for messages.
pub(crate) fn job_label(run: &Run) -> String {
    match &run.job {
        Some(j) => match &j.version {
            Some(v) => format!("{}/{}:{v}", run.entity, j.name),
            None => format!("{}/{}", run.entity, j.name),
        },
        None => format!("of run {}", run.id),
    }
}

/// The run's git or code source, or the error that there is nothing to build.
pub(crate) fn buildable_source(run: &Run) -> Result<&JobSource, BuildError> {
    match &run.job_source {
        Some(s @ (JobSource::Git { .. } | JobSource::Code { .. })) => Ok(s),
        Some(JobSource::Image { image }) => Err(BuildError::new(format!(
            "job {} runs the prebuilt image {image}: there is nothing to build",
            job_label(run)
        ))),
        None => Err(BuildError::new(format!(
            "run {} has no job source to build an image from",
            run.id
        ))),
    }
}

/// A builder that refuses every build with one message (the configured builder cannot
/// work on this agent).
#[derive(Debug, Clone)]
pub struct UnavailableBuilder {
    pub kind: &'static str,
    pub message: String,
}

#[async_trait]
impl Builder for UnavailableBuilder {
    fn kind(&self) -> &'static str {
        self.kind
    }
    async fn build(&self, run: &Run, logs: &LogSink) -> Result<Built, BuildError> {
        buildable_source(run)?;
        let msg = format!("job {}: {}", job_label(run), self.message);
        logs.system(&format!("[hoist: {msg}]"));
        Err(BuildError::new(msg))
    }
}

/// The builder the agent config asks for. `docker` is the agent's negotiated Docker
/// connection (the docker runner's), `None` when no daemon answered; `registry` is
/// where images go (a [`crate::registries::local::LocalRegistry`] without one);
/// `client` fetches code artifacts from the server.
pub fn builder_from_config(
    cfg: &AgentConfig,
    docker: Option<&bollard::Docker>,
    registry: std::sync::Arc<dyn Registry>,
    client: Client,
) -> std::sync::Arc<dyn Builder> {
    use std::sync::Arc;
    match &cfg.builder.kind {
        BuilderKind::Noop => Arc::new(noop::NoopBuilder),
        BuilderKind::Kaniko(_) => Arc::new(kaniko::KanikoBuilder),
        BuilderKind::Docker => match docker {
            Some(d) => Arc::new(docker::DockerBuilder::new(
                d.clone(),
                registry,
                Arc::new(client),
                docker::DockerBuildSettings::from_config(&cfg.builder),
            )),
            None => Arc::new(UnavailableBuilder {
                kind: "docker",
                message: "the docker builder needs a Docker daemon, and none answered when this agent started; start one (or set docker.host), or configure `builder: {type: noop}` and use prebuilt images".into(),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs<'a>(ctx: &'a str, df: &'a [u8]) -> BuildInputs<'a> {
        BuildInputs {
            context_digest: ctx,
            dockerfile_path: "Dockerfile",
            dockerfile: df,
            base_image: None,
        }
    }

    #[test]
    fn the_tag_is_a_stable_content_hash() {
        let a = image_tag(&inputs("sha256:aa", b"FROM x\n"));
        assert_eq!(a.len(), TAG_HEX_LEN);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, image_tag(&inputs("sha256:aa", b"FROM x\n")));
        assert_ne!(a, image_tag(&inputs("sha256:ab", b"FROM x\n")));
        assert_ne!(a, image_tag(&inputs("sha256:aa", b"FROM y\n")));
        let mut other_path = inputs("sha256:aa", b"FROM x\n");
        other_path.dockerfile_path = "docker/Dockerfile";
        assert_ne!(a, image_tag(&other_path));
        let mut generated = inputs("sha256:aa", b"FROM x\n");
        generated.base_image = Some("python:3.12-slim");
        assert_ne!(a, image_tag(&generated));
        // Fields are length-prefixed: moving bytes between fields changes the hash.
        assert_ne!(
            image_tag(&inputs("sha256:aaF", b"ROM x\n")),
            image_tag(&inputs("sha256:aa", b"FROM x\n"))
        );
    }

    #[test]
    fn references() {
        assert_eq!(image_reference(None, "ab"), "hoist-build:ab");
        assert_eq!(
            image_reference(Some("127.0.0.1:5000/hoist/jobs"), "ab"),
            "127.0.0.1:5000/hoist/jobs:ab"
        );
    }

    #[test]
    fn failure_has_stage_build() {
        let e = BuildError {
            message: "m".into(),
            step: Some("RUN exit 3".into()),
            output_tail: vec!["x".into()],
        };
        let f = e.failure();
        assert_eq!(f.stage, FailureStage::Build);
        assert_eq!(f.log_tail, ["x"]);
    }
}
