//! Builders: turn a run's job source (a git commit, a code artifact) into an image.
//!
//! - [`pipeline`]: what every building builder does (source, Dockerfile, context, the
//!   content-hash tag, the registry's cache check, one build per tag at a time) around
//!   an [`Engine`] that builds and pushes; nothing is built when the destination
//!   already has the tag.
//! - [`docker`]: the pipeline with the Docker Engine API as its engine.
//! - [`noop`]: prebuilt images only; a git or code job fails at once, saying what to
//!   configure.
//! - [`job`]: the pipeline with an in-cluster engine (`kaniko`, or hoist's `buildah`):
//!   the context goes to an object store ([`stores`]), the build runs as a Kubernetes
//!   Job.
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
use std::time::Duration;

use async_trait::async_trait;
use hoist_client::Client;
use hoist_core::api::{Failure, JobSource, Run};
use hoist_core::run::FailureStage;
use sha2::{Digest, Sha256};

use crate::config::{AgentConfig, BuilderKind};
use crate::logs::LogSink;
use crate::registries::{Registry, RegistryError};

pub mod checkout;
pub mod docker;
mod dockerfile;
pub mod engine;
#[cfg(feature = "kubernetes")]
pub mod job;
pub mod noop;
mod output;
pub mod pipeline;
mod source;
pub mod stores;

pub use dockerfile::{GENERATED_DOCKERFILE, WORKDIR, generate_python_dockerfile};
pub use engine::{BuildRequest, ContextFormat, Engine};
pub use pipeline::{BuildSettings, Pipeline};

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

/// A failed build (stage `build`). Every variant keeps its cause as
/// [`std::error::Error::source`]; the message (`Display`), which becomes the run's
/// failure message, names the step, the registry or the path concerned and quotes the
/// cause, as a person needs it.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// This builder cannot build this run: `noop`, `kaniko` (until it lands), no Docker
    /// daemon, an image job (nothing to build), no job source.
    #[error("{0}")]
    Unsupported(String),
    /// The job's source cannot be built as it is: a commit id that is not one, a path
    /// outside the build context, no Dockerfile, a base image that is not one.
    #[error("{0}")]
    Source(String),
    /// `git` failed (fetch, checkout); `output_tail` is the end of its output.
    #[error("{message}")]
    Git {
        message: String,
        output_tail: Vec<String>,
        #[source]
        source: GitError,
    },
    /// The code artifact could not be fetched.
    #[error("{message}")]
    Artifact {
        message: String,
        #[source]
        source: ArtifactError,
    },
    /// The build context could not be unpacked or packed (an unsafe or oversized
    /// archive, an unreadable file).
    #[error("{message}")]
    Context {
        message: String,
        #[source]
        source: hoist_context::ContextError,
    },
    /// A file operation of the builder itself (its temporary directories, the
    /// Dockerfile).
    #[error("{message}")]
    Io {
        message: String,
        #[source]
        source: std::io::Error,
    },
    /// The daemon's build failed: a Dockerfile step (`step`), or the daemon itself.
    /// `output_tail` is the end of the build's output.
    #[error("{message}")]
    Build {
        message: String,
        step: Option<String>,
        output_tail: Vec<String>,
        #[source]
        source: Option<Box<bollard::errors::Error>>,
    },
    /// The registry: the existence check (refused or misconfigured), its credentials,
    /// the push.
    #[error("{message}")]
    Registry {
        message: String,
        #[source]
        source: RegistryError,
    },
    /// The object store of build contexts (`builder.build-context-store`): missing
    /// bucket, refused credentials, unreachable.
    #[error("{message}")]
    Store {
        message: String,
        #[source]
        source: stores::ContextStoreError,
    },
    /// The Kubernetes API server, for an in-cluster build (creating, watching or
    /// deleting the build Job and its Secret).
    #[error("{message}")]
    Cluster {
        message: String,
        #[source]
        source: Box<crate::runners::RunnerError>,
    },
    /// Blocking work of the build (unpacking, packing, reading the source tree) was
    /// cancelled or panicked.
    #[error("{message}")]
    Task {
        message: String,
        #[source]
        source: tokio::task::JoinError,
    },
}

impl BuildError {
    /// The Dockerfile step that failed, as written (`RUN pip install -r
    /// requirements.txt`).
    pub fn step(&self) -> Option<&str> {
        match self {
            BuildError::Build { step, .. } => step.as_deref(),
            _ => None,
        }
    }

    /// The last lines of the build's output (or of `git`'s); empty when the failure
    /// came before any.
    pub fn output_tail(&self) -> &[String] {
        match self {
            BuildError::Build { output_tail, .. } | BuildError::Git { output_tail, .. } => {
                output_tail
            }
            _ => &[],
        }
    }

    /// Whether building again shortly may succeed: the registry, the artifact's server
    /// or the git server did not answer, the daemon's connection broke. A failed step,
    /// a refusal or a bad source is not.
    pub fn is_transient(&self) -> bool {
        match self {
            BuildError::Git { source, .. } => source.is_transient(),
            BuildError::Artifact { source, .. } => source.is_transient(),
            BuildError::Registry { source, .. } => source.is_transient(),
            BuildError::Store { source, .. } => source.is_transient(),
            BuildError::Cluster { source, .. } => source.is_transient(),
            BuildError::Build {
                step: None,
                source: Some(e),
                ..
            } => matches!(
                **e,
                bollard::errors::Error::RequestTimeoutError
                    | bollard::errors::Error::IOError { .. }
                    | bollard::errors::Error::HyperResponseError { .. }
            ),
            _ => false,
        }
    }

    /// The run's failure record.
    pub fn failure(&self) -> Failure {
        Failure {
            stage: FailureStage::Build,
            message: self.to_string(),
            log_tail: self.output_tail().to_vec(),
        }
    }
}

/// Why `git` failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run git: {0} (is git installed on the agent?)")]
    Spawn(#[source] std::io::Error),
    #[error("git failed: {0}")]
    Wait(#[source] std::io::Error),
    #[error("git {command} did not finish within {}s", timeout.as_secs())]
    Timeout { command: String, timeout: Duration },
    /// git exited unsuccessfully; `stderr` is the end of what it said (the last line
    /// is the message).
    #[error("{}", GitError::last_line(stderr, *status))]
    Exited {
        status: std::process::ExitStatus,
        stderr: Vec<String>,
    },
}

impl GitError {
    fn last_line(stderr: &[String], status: std::process::ExitStatus) -> String {
        stderr
            .last()
            .cloned()
            .unwrap_or_else(|| format!("git exited with {status}"))
    }

    /// What git said, line by line (its message when it said nothing).
    pub fn lines(&self) -> Vec<String> {
        match self {
            GitError::Exited { stderr, .. } if !stderr.is_empty() => stderr.clone(),
            other => vec![other.to_string()],
        }
    }

    /// A timeout, or a server or network that did not answer (as git words it).
    pub fn is_transient(&self) -> bool {
        const NETWORK: &[&str] = &[
            "Could not resolve host",
            "Connection refused",
            "Connection timed out",
            "Connection reset",
            "Operation timed out",
            "early EOF",
            "The requested URL returned error: 50",
            "The requested URL returned error: 429",
        ];
        match self {
            GitError::Timeout { .. } => true,
            GitError::Exited { stderr, .. } => {
                stderr.iter().any(|l| NETWORK.iter().any(|n| l.contains(n)))
            }
            GitError::Spawn(_) | GitError::Wait(_) => false,
        }
    }
}

/// Why a code artifact could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("invalid artifact digest {0:?}")]
    BadDigest(String),
    #[error("artifact {digest} not found in {}", dir.display())]
    NotFound { digest: String, dir: PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} has digest sha256:{actual}, not {expected}", path.display())]
    DigestMismatch {
        path: PathBuf,
        actual: String,
        expected: String,
    },
    /// The hoist server's blob store.
    #[error("{0}")]
    Server(#[source] Box<hoist_client::ClientError>),
    #[error("copying the artifact failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

impl ArtifactError {
    /// The server did not answer, or answered "later".
    pub fn is_transient(&self) -> bool {
        matches!(self, ArtifactError::Server(e) if e.is_transient())
    }
}

/// Runs blocking filesystem work (reads, walks, deletes) on tokio's blocking pool:
/// the agent's runtime has a single thread, which must never wait on the disk.
/// `what` names the work in the error when the task is cancelled or panics.
pub(crate) async fn off_runtime<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T, BuildError> + Send + 'static,
) -> Result<T, BuildError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| BuildError::Task {
            message: format!("{what} failed: {source}"),
            source,
        })?
}

/// A temporary directory of a build (a source tree, a packed context), removed on
/// tokio's blocking pool when dropped: deleting a large tree would stall the runtime.
#[derive(Debug)]
pub(crate) struct Workspace(Option<tempfile::TempDir>);

impl Workspace {
    /// A new `hoist-build-*` directory in `parent` (the system's temp dir if `None`).
    pub(crate) async fn new(parent: Option<PathBuf>) -> Result<Workspace, BuildError> {
        off_runtime("creating a temporary directory", move || {
            let mut b = tempfile::Builder::new();
            b.prefix("hoist-build-");
            match &parent {
                Some(d) => b.tempdir_in(d),
                None => b.tempdir(),
            }
            .map(|d| Workspace(Some(d)))
            .map_err(|source| BuildError::Io {
                message: format!("cannot create a temporary directory: {source}"),
                source,
            })
        })
        .await
    }

    pub(crate) fn path(&self) -> &Path {
        self.0.as_ref().map(|d| d.path()).unwrap_or(Path::new(""))
    }

    /// Removes the directory now, on the blocking pool, and waits for it (dropping a
    /// workspace removes it too, but without waiting: for a cancelled build).
    pub(crate) async fn remove(mut self) {
        if let Some(dir) = self.0.take() {
            let path = dir.path().to_path_buf();
            match tokio::task::spawn_blocking(move || dir.close()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(
                    message = "A build's temporary directory could not be removed.",
                    path = %path.display(),
                    error = %e
                ),
                Err(e) => tracing::warn!(
                    message = "Removing a build's temporary directory failed.",
                    path = %path.display(),
                    error = %e
                ),
            }
        }
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            drop_off_runtime(dir);
        }
    }
}

/// Drops `value` on tokio's blocking pool (a temporary file or tree, whose drop
/// deletes it); at once when there is no runtime.
fn drop_off_runtime<T: Send + 'static>(value: T) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn_blocking(move || drop(value))),
        Err(_) => drop(value),
    }
}

/// Unpacks the code artifact `file` (a `.tar.gz`) into `dest`, at most `max_bytes`
/// unpacked, then deletes `file`. Blocking: call it from [`off_runtime`].
pub(crate) fn unpack_artifact(
    file: &Path,
    dest: &Path,
    max_bytes: u64,
) -> Result<hoist_context::Unpacked, hoist_context::ContextError> {
    let unpacked = std::fs::File::open(file)
        .map_err(|source| hoist_context::ContextError::Io {
            path: file.to_path_buf(),
            source,
        })
        .and_then(|f| hoist_context::unpack(std::io::BufReader::new(f), dest, Some(max_bytes)));
    let _ = std::fs::remove_file(file);
    unpacked
}

#[async_trait]
pub trait Builder: Send + Sync {
    /// `docker`, `kaniko`, `noop`.
    fn kind(&self) -> &'static str;

    /// The image of `run`'s job source (`run.job_source` git or code), built unless
    /// the destination has it already. Output goes to `logs`.
    async fn build(&self, run: &Run, logs: &LogSink) -> Result<Built, BuildError>;

    /// Deletes what an earlier process of the agent `agent` left of its builds (an
    /// in-cluster build's Job, Secret and context); before the agent's first claim.
    /// Returns how many builds were cleaned up.
    async fn sweep(&self, agent: &str) -> Result<usize, BuildError> {
        let _ = agent;
        Ok(0)
    }
}

/// Where the docker builder gets code artifacts (`JobSource::Code`) from.
#[async_trait]
pub trait ArtifactSource: Send + Sync {
    /// Writes the artifact `digest` (`sha256:<hex>`) into `dest` and checks that its
    /// content has that digest. Returns its size.
    async fn fetch(&self, digest: &str, dest: &Path) -> Result<u64, ArtifactError>;
}

/// The hoist server's blob store (`GET /api/v1/blobs/{digest}`), with the agent's key.
#[async_trait]
impl ArtifactSource for Client {
    async fn fetch(&self, digest: &str, dest: &Path) -> Result<u64, ArtifactError> {
        self.download_blob_to(digest, dest)
            .await
            .map_err(|e| ArtifactError::Server(Box::new(e)))
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
    async fn fetch(&self, digest: &str, dest: &Path) -> Result<u64, ArtifactError> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| ArtifactError::BadDigest(digest.to_string()))?;
        let mut src = None;
        for name in [hex.to_string(), format!("{hex}.tar.gz")] {
            let p = self.dir.join(name);
            if tokio::fs::metadata(&p).await.is_ok_and(|m| m.is_file()) {
                src = Some(p);
                break;
            }
        }
        let src = src.ok_or_else(|| ArtifactError::NotFound {
            digest: digest.to_string(),
            dir: self.dir.clone(),
        })?;
        let (src2, dest2) = (src.clone(), dest.to_path_buf());
        let (actual, size) =
            tokio::task::spawn_blocking(move || -> std::io::Result<(String, u64)> {
                std::fs::copy(&src2, &dest2)?;
                let mut h = Sha256::new();
                let mut f = std::fs::File::open(&dest2)?;
                let n = std::io::copy(&mut f, &mut h)?;
                Ok((hex_string(&h.finalize()), n))
            })
            .await
            .map_err(ArtifactError::Task)?
            .map_err(|source| ArtifactError::Io {
                path: src.clone(),
                source,
            })?;
        if actual != hex {
            let _ = tokio::fs::remove_file(dest).await;
            return Err(ArtifactError::DigestMismatch {
                path: src,
                actual,
                expected: digest.to_string(),
            });
        }
        Ok(size)
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
        Some(JobSource::Image { image }) => Err(BuildError::Unsupported(format!(
            "job {} runs the prebuilt image {image}: there is nothing to build",
            job_label(run)
        ))),
        None => Err(BuildError::Unsupported(format!(
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
        Err(BuildError::Unsupported(msg))
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
        // Made by the agent's start (`job::job_builder`), which has the cluster.
        BuilderKind::Kaniko(_) => Arc::new(UnavailableBuilder {
            kind: cfg.builder.kind_type().as_str(),
            message: "in-cluster builds (kaniko, buildah) need the agent's Kubernetes cluster and build-context store, which the agent connects when it starts (builders::job::job_builder)".into(),
        }),
        BuilderKind::Docker => match docker {
            Some(d) => Arc::new(docker::DockerBuilder::new(
                d.clone(),
                registry,
                Arc::new(client),
                BuildSettings::from_config(&cfg.builder),
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
        let e = BuildError::Build {
            message: "m".into(),
            step: Some("RUN exit 3".into()),
            output_tail: vec!["x".into()],
            source: None,
        };
        let f = e.failure();
        assert_eq!(f.stage, FailureStage::Build);
        assert_eq!(f.message, "m");
        assert_eq!(f.log_tail, ["x"]);
        assert_eq!(e.step(), Some("RUN exit 3"));
        assert!(!e.is_transient(), "a failed step is not retried");
    }

    #[tokio::test]
    async fn dir_artifacts_keep_their_causes() {
        let t = tempfile::tempdir().unwrap();
        let a = DirArtifacts {
            dir: t.path().to_path_buf(),
        };
        let dest = t.path().join("out");
        let e = a.fetch("sha256:nothex", &dest).await.unwrap_err();
        assert!(matches!(e, ArtifactError::BadDigest(_)), "{e}");
        let digest = format!("sha256:{}", "0".repeat(64));
        let e = a.fetch(&digest, &dest).await.unwrap_err();
        assert!(matches!(e, ArtifactError::NotFound { .. }), "{e}");
        tokio::fs::write(t.path().join("0".repeat(64)), b"not those bytes")
            .await
            .unwrap();
        let e = a.fetch(&digest, &dest).await.unwrap_err();
        assert!(matches!(e, ArtifactError::DigestMismatch { .. }), "{e}");
        assert!(
            !tokio::fs::try_exists(&dest).await.unwrap(),
            "a copy with the wrong digest is removed"
        );
        assert!(!e.is_transient());
    }
}
