//! The docker builder: job source → image, through the Docker Engine API (bollard,
//! the connection the docker runner negotiated; never the `docker` CLI).
//!
//! For one run ([`DockerBuilder`]'s [`Builder::build`]):
//! 1. Fetch the source into a temporary directory (removed whatever happens): a git
//!    commit (`source.rs`), or the code artifact from the server
//!    ([`ArtifactSource`]), unpacked with [`hoist_context::unpack`] (size-capped).
//! 2. Pick the Dockerfile (`dockerfile.rs`: the job's own, the context's `Dockerfile`,
//!    or one generated for a Python project on `builder.base-image`).
//! 3. Pack the build context with [`hoist_context::pack_for_build`] (deterministic
//!    tar, the generated Dockerfile included) and hash the inputs ([`image_tag`]).
//! 4. Ask the destination ([`Registry::has_image`]: the local daemon, or the
//!    registry's manifest endpoint) for that tag: when it is there, nothing is built
//!    (`[hoist: image … exists; no build]`, `cache_hit`).
//! 5. Else `POST /build` with the tar as body (classic builder; `rm` and `forcerm`, so
//!    no intermediate container survives, even on failure), every output line to the
//!    run's logs as it comes. No label is added (with the classic builder each label
//!    is one more step, a container and a commit: about 0.1 s per build). A failed
//!    step is reported with the step as written (`RUN pip install -r
//!    requirements.txt`), the daemon's error and the output tail; the untagged
//!    intermediate images the failed build committed are removed (those that other
//!    images do not use), so a failure leaves no dangling image.
//! 6. With a registry, push `<repository>:<tag>` ([`crate::registries::push`]: the
//!    registry's credentials in the Engine API's auth header, never logged).
//!
//! Repeated launches of the same job version skip steps 1–3: the builder remembers,
//! per process, which tag a source (artifact digest or repository + commit, build
//! context, Dockerfile path, entry point, base image) produced; it still asks the
//! destination whether the image is there. Two runs needing the same tag at once
//! build it once (the second waits, then finds it).
//!
//! The build's network ([`DockerBuildSettings::network_mode`]) is the daemon's default
//! unless set: a daemon without a bridge network (like the test machine's
//! `--bridge=none`) builds with no network at all, so steps that download (`pip
//! install` from PyPI) need `host` there. There is no config key for it yet
//! (`builder.network` would belong in `config/`); [`DockerBuildSettings::from_config`]
//! leaves it to the daemon.
//!
//! Cancelling (dropping the future) closes the `POST /build` request: the daemon
//! stops the build and removes its container; the intermediate images of the steps
//! already done stay as build cache.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{BuildImageOptions, RemoveImageOptions};
use bytes::Bytes;
use futures::StreamExt;
use hoist_context::{ExtraFile, PackOptions, human_bytes};
use hoist_core::api::{JobSource, Run};
use tokio::io::AsyncReadExt;

use super::dockerfile::{self, GENERATED_DOCKERFILE};
use super::source::{self, redact_url, resolve_inside};
use super::{
    ArtifactSource, BUILDER_VERSION, BuildError, BuildInputs, Builder, Built, Workspace,
    buildable_source, image_reference, image_tag, job_label, off_runtime, unpack_artifact,
};
use crate::config::BuilderConfig;
use crate::logs::{LogSink, TAIL_LINES};
use crate::registries::Registry;

/// Default cap on an unpacked code artifact and on a build context.
pub const DEFAULT_MAX_CONTEXT_BYTES: u64 = 4 << 30;
/// Default time a git command may take.
pub const DEFAULT_GIT_TIMEOUT: Duration = Duration::from_secs(600);
/// How many source → tag entries the builder remembers.
const MEMO_ENTRIES: usize = 4096;

/// What the docker builder does, beyond the Docker connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerBuildSettings {
    /// Base of generated Dockerfiles (`builder.base-image`).
    pub base_image: String,
    /// `networkmode` of builds (`host`, `none`, a network name); `None` = the daemon's
    /// default (`bridge` on a usual install).
    pub network_mode: Option<String>,
    /// Whether builds may reuse the daemon's layer cache (`builder.cache`).
    pub cache: bool,
    /// Where temporary source trees and contexts go; `None` = the system temp dir.
    pub work_dir: Option<PathBuf>,
    /// Cap on an unpacked code artifact and on a build context, in bytes.
    pub max_context_bytes: u64,
    /// Cap on each git command.
    pub git_timeout: Duration,
}

impl Default for DockerBuildSettings {
    fn default() -> Self {
        DockerBuildSettings {
            base_image: crate::config::DEFAULT_BASE_IMAGE.to_string(),
            network_mode: None,
            cache: true,
            work_dir: None,
            max_context_bytes: DEFAULT_MAX_CONTEXT_BYTES,
            git_timeout: DEFAULT_GIT_TIMEOUT,
        }
    }
}

impl DockerBuildSettings {
    /// `builder.base-image` and `builder.cache` from the agent config; the rest
    /// default.
    pub fn from_config(cfg: &BuilderConfig) -> DockerBuildSettings {
        DockerBuildSettings {
            base_image: cfg.base_image.clone(),
            cache: cfg.cache,
            ..Default::default()
        }
    }
}

/// Builds images with the Docker Engine API.
pub struct DockerBuilder {
    docker: Docker,
    registry: Arc<dyn Registry>,
    artifacts: Arc<dyn ArtifactSource>,
    settings: DockerBuildSettings,
    /// Source key → tag.
    memo: Mutex<HashMap<String, String>>,
    /// Tag → the lock its build holds.
    building: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for DockerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerBuilder")
            .field("registry", &self.registry.kind())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl DockerBuilder {
    pub fn new(
        docker: Docker,
        registry: Arc<dyn Registry>,
        artifacts: Arc<dyn ArtifactSource>,
        settings: DockerBuildSettings,
    ) -> DockerBuilder {
        DockerBuilder {
            docker,
            registry,
            artifacts,
            settings,
            memo: Mutex::new(HashMap::new()),
            building: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &DockerBuildSettings {
        &self.settings
    }

    fn memo_get(&self, key: &str) -> Option<String> {
        self.memo.lock().expect("memo").get(key).cloned()
    }

    fn memo_put(&self, key: String, tag: String) {
        let mut m = self.memo.lock().expect("memo");
        if m.len() >= MEMO_ENTRIES {
            m.clear();
        }
        m.insert(key, tag);
    }

    fn lock_for(&self, tag: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut b = self.building.lock().expect("build locks");
        b.retain(|_, l| Arc::strong_count(l) > 1);
        b.entry(tag.to_string()).or_default().clone()
    }

    /// Whether the destination has `image`. Refused credentials and a registry
    /// configuration that cannot work fail the build; a registry that cannot be asked
    /// (after the registry's own retries of transient failures) is logged and
    /// answered "no": the push will tell.
    async fn exists(&self, image: &str, logs: &LogSink) -> Result<bool, BuildError> {
        match self.registry.has_image(image).await {
            Ok(b) => Ok(b),
            Err(e) if e.is_refusal() || e.is_config() => Err(BuildError::Registry {
                message: format!("cannot check whether {image} exists: {e}"),
                source: e,
            }),
            Err(e) => {
                logs.system(&format!("[hoist: {e}; building]"));
                Ok(false)
            }
        }
    }

    fn hit(image: String, tag: String, logs: &LogSink) -> Built {
        logs.system(&format!("[hoist: image {image} exists; no build]"));
        Built {
            image,
            cache_hit: true,
            tag,
        }
    }

    /// Puts the source in `ws/src`; returns the build context directory, its
    /// description, the entry point and the requested Dockerfile.
    async fn fetch<'s>(
        &self,
        source: &'s JobSource,
        ws: &Path,
        logs: &LogSink,
    ) -> Result<(PathBuf, String, &'s [String], Option<&'s str>), BuildError> {
        let src = ws.join("src");
        match source {
            JobSource::Git {
                repo,
                commit,
                entry_point,
                build_context,
                dockerfile,
                ..
            } => {
                tokio::fs::create_dir(&src)
                    .await
                    .map_err(|source| BuildError::Io {
                        message: format!("{}: {source}", src.display()),
                        source,
                    })?;
                source::fetch_git(repo, commit, &src, self.settings.git_timeout, logs).await?;
                let describe = format!("{} at {commit}", redact_url(repo));
                let (context, describe) =
                    match build_context.as_deref().filter(|c| !c.trim().is_empty()) {
                        Some(bc) => {
                            let bc = bc.to_string();
                            off_runtime("resolving the build context", move || {
                                let (abs, rel) =
                                    resolve_inside(&src, &bc, "build context", &describe)?;
                                if !abs.is_dir() {
                                    return Err(BuildError::Source(format!(
                                        "the build context {bc:?} is not a directory in {describe}"
                                    )));
                                }
                                let describe = if rel.is_empty() {
                                    describe
                                } else {
                                    format!("{describe} (directory {rel})")
                                };
                                Ok((abs, describe))
                            })
                            .await?
                        }
                        None => (src, describe),
                    };
                Ok((context, describe, entry_point, dockerfile.as_deref()))
            }
            JobSource::Code {
                artifact,
                size,
                entry_point,
                dockerfile,
            } => {
                logs.system(&format!(
                    "[hoist: downloading code artifact {artifact} ({})]",
                    human_bytes(*size)
                ));
                let file = ws.join("artifact.tar.gz");
                self.artifacts
                    .fetch(artifact, &file)
                    .await
                    .map_err(|source| BuildError::Artifact {
                        message: format!("cannot download the code artifact {artifact}: {source}"),
                        source,
                    })?;
                let max = self.settings.max_context_bytes;
                let (file2, src2, digest) = (file.clone(), src.clone(), artifact.clone());
                let unpacked = off_runtime("unpacking the code artifact", move || {
                    unpack_artifact(&file2, &src2, max).map_err(|source| BuildError::Context {
                        message: format!("cannot unpack the code artifact {digest}: {source}"),
                        source,
                    })
                })
                .await?;
                logs.system(&format!(
                    "[hoist: unpacked {} files ({})]",
                    unpacked.files,
                    human_bytes(unpacked.bytes)
                ));
                Ok((
                    src,
                    format!("code artifact {artifact}"),
                    entry_point,
                    dockerfile.as_deref(),
                ))
            }
            JobSource::Image { .. } => unreachable!("checked by buildable_source"),
        }
    }

    /// Pushes `image` with the registry's credentials ([`crate::registries::push`]:
    /// they go in the Engine API's auth header only).
    async fn push(&self, image: &str, logs: &LogSink) -> Result<(), BuildError> {
        let host = image.split('/').next().unwrap_or(image);
        let auth = self
            .registry
            .auth()
            .await
            .map_err(|source| BuildError::Registry {
                message: format!("push to {host} failed: {source}"),
                source,
            })?;
        // Its errors name the image and the registry ("push of … (registry …) failed:
        // …").
        crate::registries::push::push(&self.docker, image, auth.as_ref(), logs)
            .await
            .map_err(|source| BuildError::Registry {
                message: source.to_string(),
                source,
            })
    }
}

/// A stable key for what determines a source's tag.
fn memo_key(source: &JobSource, base_image: &str) -> String {
    let v = serde_json::json!([BUILDER_VERSION, base_image, source]);
    v.to_string()
}

#[async_trait]
impl Builder for DockerBuilder {
    fn kind(&self) -> &'static str {
        "docker"
    }

    async fn build(&self, run: &Run, logs: &LogSink) -> Result<Built, BuildError> {
        let source = buildable_source(run)?;
        let started = Instant::now();
        let repository = self.registry.repository();
        let key = memo_key(source, &self.settings.base_image);
        if let Some(tag) = self.memo_get(&key) {
            let image = image_reference(repository.as_deref(), &tag);
            if self.exists(&image, logs).await? {
                return Ok(Self::hit(image, tag, logs));
            }
        }

        let ws = Workspace::new(self.settings.work_dir.clone()).await?;
        let result = self
            .build_in(&ws, run, source, key, repository, started, logs)
            .await;
        ws.remove().await;
        result
    }
}

impl DockerBuilder {
    /// Steps 1 to 6 (see the module documentation) in the workspace `ws`.
    #[allow(clippy::too_many_arguments)]
    async fn build_in(
        &self,
        ws: &Workspace,
        run: &Run,
        source: &JobSource,
        key: String,
        repository: Option<String>,
        started: Instant,
        logs: &LogSink,
    ) -> Result<Built, BuildError> {
        let (context, describe, entry_point, requested) =
            self.fetch(source, ws.path(), logs).await?;
        let chosen = {
            let (context, requested, entry_point) = (
                context.clone(),
                requested.map(str::to_string),
                entry_point.to_vec(),
            );
            let (base, describe) = (self.settings.base_image.clone(), describe.clone());
            off_runtime("choosing the Dockerfile", move || {
                dockerfile::choose(
                    &context,
                    requested.as_deref(),
                    &entry_point,
                    &base,
                    &describe,
                )
            })
            .await?
        };
        let extra: Vec<ExtraFile> = chosen
            .generated_base
            .as_ref()
            .map(|_| ExtraFile {
                name: GENERATED_DOCKERFILE.to_string(),
                contents: chosen.bytes.clone(),
                executable: false,
            })
            .into_iter()
            .collect();
        if chosen.generated_base.is_some() {
            logs.system(&format!(
                "[hoist: no Dockerfile in {describe}; generated one on {}:]",
                self.settings.base_image
            ));
            for l in String::from_utf8_lossy(&chosen.bytes).lines() {
                logs.system(&format!("    {l}"));
            }
        }
        let packed = pack_context(
            &context,
            extra,
            self.settings.max_context_bytes,
            ws.path().to_path_buf(),
        )
        .await?;
        // The tar is in the workspace, which the caller removes off the runtime (a
        // `TempPath` would delete it on the runtime's thread).
        let tar = packed.path.keep().map_err(|e| BuildError::Io {
            message: format!("cannot keep the packed build context: {}", e.error),
            source: e.error,
        })?;
        let tag = image_tag(&BuildInputs {
            context_digest: &packed.tar_digest,
            dockerfile_path: &chosen.path,
            dockerfile: &chosen.bytes,
            base_image: chosen.generated_base.as_deref(),
        });
        self.memo_put(key, tag.clone());
        let image = image_reference(repository.as_deref(), &tag);

        let lock = self.lock_for(&tag);
        let _building = lock.lock().await;
        if self.exists(&image, logs).await? {
            return Ok(Self::hit(image, tag, logs));
        }
        logs.system(&format!(
            "[hoist: building {image} for job {} from {describe}: {} files, {}, Dockerfile {}]",
            job_label(run),
            packed.files,
            human_bytes(packed.bytes),
            chosen.path
        ));
        let params = EngineBuild {
            image: &image,
            dockerfile: &chosen.path,
            network_mode: self.settings.network_mode.as_deref(),
            nocache: !self.settings.cache,
            labels: HashMap::new(),
        };
        engine_build(&self.docker, &tar, &params, logs).await?;
        if repository.is_some() {
            self.push(&image, logs).await?;
        }
        logs.system(&format!(
            "[hoist: built {image} in {:.1}s]",
            started.elapsed().as_secs_f64()
        ));
        Ok(Built {
            image,
            cache_hit: false,
            tag,
        })
    }
}

async fn pack_context(
    dir: &Path,
    extra: Vec<ExtraFile>,
    max_bytes: u64,
    temp_dir: PathBuf,
) -> Result<hoist_context::Packed, BuildError> {
    let dir = dir.to_path_buf();
    off_runtime("packing the build context", move || {
        let opts = PackOptions {
            max_bytes: Some(max_bytes),
            temp_dir: Some(temp_dir),
            ..Default::default()
        };
        hoist_context::pack_for_build(&dir, &extra, &opts).map_err(|source| BuildError::Context {
            message: format!("cannot pack the build context: {source}"),
            source,
        })
    })
    .await
}

/// The last lines of some output.
#[derive(Default)]
struct Tail(VecDeque<String>);

impl Tail {
    fn push(&mut self, line: String) {
        if self.0.len() == TAIL_LINES {
            self.0.pop_front();
        }
        self.0.push_back(line);
    }
    fn into_vec(self) -> Vec<String> {
        self.0.into()
    }
}

/// One `POST /build`.
pub(crate) struct EngineBuild<'a> {
    pub image: &'a str,
    pub dockerfile: &'a str,
    pub network_mode: Option<&'a str>,
    pub nocache: bool,
    pub labels: HashMap<String, String>,
}

/// What the build output says, line by line.
#[derive(Default)]
struct Progress {
    partial: String,
    tail: Tail,
    step: Option<String>,
    /// Images committed by the steps (` ---> <id>`), in order.
    layers: Vec<String>,
}

impl Progress {
    fn feed(&mut self, chunk: &str, logs: &LogSink) {
        self.partial.push_str(chunk);
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            self.line(line.trim_end_matches(['\n', '\r']), logs);
        }
    }

    fn finish(&mut self, logs: &LogSink) {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.line(rest.trim_end_matches('\r'), logs);
        }
    }

    fn line(&mut self, line: &str, logs: &LogSink) {
        if line.trim().is_empty() {
            return;
        }
        logs.system(line);
        self.tail.push(line.to_string());
        if let Some(rest) = line.strip_prefix("Step ")
            && let Some((_, step)) = rest.split_once(" : ")
        {
            self.step = Some(step.trim().to_string());
        } else if let Some(id) = line.trim().strip_prefix("---> ")
            && !id.is_empty()
            && id.bytes().all(|b| b.is_ascii_hexdigit())
        {
            self.layers.push(id.to_string());
        }
    }
}

/// Runs one build on the daemon, streaming its output into `logs`. Returns the image
/// id.
pub(crate) async fn engine_build(
    docker: &Docker,
    tar: &Path,
    p: &EngineBuild<'_>,
    logs: &LogSink,
) -> Result<String, BuildError> {
    let file = tokio::fs::File::open(tar)
        .await
        .map_err(|source| BuildError::Io {
            message: format!("{}: {source}", tar.display()),
            source,
        })?;
    let body = futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 256 << 10];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    let opts = BuildImageOptions {
        dockerfile: p.dockerfile.to_string(),
        t: Some(p.image.to_string()),
        rm: true,
        forcerm: true,
        nocache: p.nocache,
        networkmode: p.network_mode.map(str::to_string),
        labels: (!p.labels.is_empty()).then(|| p.labels.clone()),
        ..Default::default()
    };
    let mut stream = docker.build_image(opts, None, Some(bollard::body_try_stream(body)));
    let mut progress = Progress::default();
    let mut image_id = None;
    let mut failure: Option<(String, DockerError)> = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(s) = &info.stream {
                    progress.feed(s, logs);
                }
                if let Some(status) = &info.status {
                    let settled = info
                        .progress_detail
                        .as_ref()
                        .is_none_or(|d| d.current.is_none());
                    if settled {
                        let line = match &info.id {
                            Some(id) => format!("{id}: {status}"),
                            None => status.clone(),
                        };
                        progress.feed(&format!("{line}\n"), logs);
                    }
                }
                if let Some(id) = info.aux.and_then(|a| a.id) {
                    image_id = Some(id);
                }
            }
            Err(e) => {
                failure = Some((daemon_message(&e), e));
                break;
            }
        }
    }
    progress.finish(logs);
    if let Some((error, source)) = failure {
        // The run's log gets the whole message once, from the run's build stage.
        let error = error.trim().to_string();
        progress.tail.push(error.clone());
        remove_failed_layers(docker, &progress.layers, logs).await;
        let message = match &progress.step {
            Some(step) => format!("the image build failed at step `{step}`: {error}"),
            None => format!("the image build failed: {error}"),
        };
        return Err(BuildError::Build {
            message,
            step: progress.step,
            output_tail: progress.tail.into_vec(),
            source: Some(Box::new(source)),
        });
    }
    match image_id {
        Some(id) => Ok(id),
        // Older daemons say it only in the output; ask.
        None => docker
            .inspect_image(p.image)
            .await
            .ok()
            .and_then(|i| i.id)
            .ok_or_else(|| BuildError::Build {
                message: format!(
                    "the build ended without an image {}: {}",
                    p.image,
                    progress.tail.0.back().cloned().unwrap_or_default()
                ),
                step: None,
                output_tail: progress.tail.into_vec(),
                source: None,
            }),
    }
}

/// Removes the untagged images a failed build committed (the build cache of its
/// successful steps), unless other images use them: the last one, and with it its
/// untagged parents. Tagged images (the base) are never touched.
async fn remove_failed_layers(docker: &Docker, layers: &[String], logs: &LogSink) {
    let Some(last) = layers.last() else {
        return;
    };
    match docker.inspect_image(last).await {
        Ok(i) if i.repo_tags.as_ref().is_none_or(Vec::is_empty) => {}
        _ => return,
    }
    let opts = RemoveImageOptions {
        force: false,
        noprune: false,
        ..Default::default()
    };
    match docker.remove_image(last, Some(opts), None).await {
        Ok(removed) => {
            if removed.iter().any(|r| r.deleted.is_some()) {
                logs.system("[hoist: removed the intermediate images of the failed build]");
            }
        }
        Err(e) => tracing::debug!(message = "Intermediate image kept.", image = %last, error = %e),
    }
}

fn daemon_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerStreamError { error } => error.clone(),
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        other => format!("the Docker daemon: {other}"),
    }
}

/// Result of [`build_dockerfile_dir`].
#[derive(Debug, Clone)]
pub struct DirBuilt {
    pub image_id: String,
    /// Bytes of file data in the context sent.
    pub context_bytes: u64,
    /// From the start of packing to the end of the build.
    pub duration: Duration,
}

/// Options of [`build_dockerfile_dir`].
#[derive(Debug, Clone, Default)]
pub struct DirBuildOptions {
    /// `networkmode` (`host`, `none`); `None` = the daemon's default.
    pub network_mode: Option<String>,
    /// Build without the layer cache.
    pub nocache: bool,
    pub labels: HashMap<String, String>,
}

/// Builds `dir` (as it is: no ignore files, `.git` left out) with the Dockerfile at
/// `dockerfile` (relative to `dir`) into `image`, through the Engine API: packing and
/// `POST /build` only, none of the builder's source fetching, hashing or cache checks.
/// The floor a hoist build is compared with in benchmarks; output lines go to `logs`.
pub async fn build_dockerfile_dir(
    docker: &Docker,
    dir: &Path,
    dockerfile: &str,
    image: &str,
    opts: &DirBuildOptions,
    logs: &LogSink,
) -> Result<DirBuilt, BuildError> {
    let started = Instant::now();
    let rel = {
        let (dir, dockerfile) = (dir.to_path_buf(), dockerfile.to_string());
        off_runtime("resolving the Dockerfile", move || {
            resolve_inside(&dir, &dockerfile, "Dockerfile", &dir.display().to_string())
                .map(|(_, rel)| rel)
        })
        .await?
    };
    let packed = pack_context(dir, Vec::new(), u64::MAX, std::env::temp_dir()).await?;
    let params = EngineBuild {
        image,
        dockerfile: &rel,
        network_mode: opts.network_mode.as_deref(),
        nocache: opts.nocache,
        labels: opts.labels.clone(),
    };
    let image_id = engine_build(docker, &packed.path, &params, logs).await;
    let context_bytes = packed.bytes;
    // Deleting the tar is a blocking call too.
    off_runtime("removing the packed build context", move || {
        drop(packed);
        Ok(())
    })
    .await?;
    Ok(DirBuilt {
        image_id: image_id?,
        context_bytes,
        duration: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_split_into_lines_and_steps_found() {
        let logs = LogSink::new();
        let mut p = Progress::default();
        p.feed(
            "Step 1/3 : FROM busybox\n ---> 0e4e07ceef21\nStep 2/3 : RUN echo",
            &logs,
        );
        p.feed(" hi && exit 3\n ---> Running in 7c3d\nhi\n", &logs);
        p.feed("partial", &logs);
        p.finish(&logs);
        assert_eq!(p.step.as_deref(), Some("RUN echo hi && exit 3"));
        assert_eq!(p.layers, ["0e4e07ceef21"]);
        let lines: Vec<String> = logs.snapshot().into_iter().map(|l| l.text).collect();
        assert_eq!(
            lines,
            [
                "Step 1/3 : FROM busybox",
                " ---> 0e4e07ceef21",
                "Step 2/3 : RUN echo hi && exit 3",
                " ---> Running in 7c3d",
                "hi",
                "partial"
            ]
        );
    }

    #[test]
    fn the_tail_is_bounded() {
        let mut t = Tail::default();
        for i in 0..100 {
            t.push(i.to_string());
        }
        let v = t.into_vec();
        assert_eq!(v.len(), TAIL_LINES);
        assert_eq!(v.last().map(String::as_str), Some("99"));
    }

    #[test]
    fn memo_keys_follow_the_source() {
        let a = JobSource::Code {
            artifact: "sha256:aa".into(),
            size: 1,
            entry_point: vec!["python".into()],
            dockerfile: None,
        };
        let mut b = a.clone();
        if let JobSource::Code { entry_point, .. } = &mut b {
            entry_point.push("x".into());
        }
        assert_eq!(memo_key(&a, "base"), memo_key(&a.clone(), "base"));
        assert_ne!(memo_key(&a, "base"), memo_key(&b, "base"));
        assert_ne!(memo_key(&a, "base"), memo_key(&a, "other"));
    }
}
