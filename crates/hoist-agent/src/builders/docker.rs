//! The docker engine: builds a packed context through the Docker Engine API (bollard,
//! the connection the docker runner negotiated; never the `docker` CLI), and pushes
//! with the registry's credentials. The pipeline around it (source, Dockerfile,
//! context, tag, cache check) is [`super::pipeline`]; [`DockerBuilder`] is that
//! pipeline with this engine.
//!
//! `POST /build` with the tar as body (classic builder; `rm` and `forcerm`, so no
//! intermediate container survives, even on failure), every output line to the run's
//! logs as it comes. No label is added (with the classic builder each label is one
//! more step, a container and a commit: about 0.1 s per build). A failed step is
//! reported with the step as written (`RUN pip install -r requirements.txt`), the
//! daemon's error and the output tail; the untagged intermediate images the failed
//! build committed are removed (those that other images do not use), so a failure
//! leaves no dangling image. With a registry, `<repository>:<tag>` is pushed
//! ([`crate::registries::push`]: the registry's credentials in the Engine API's auth
//! header, never logged).
//!
//! The build's network ([`BuildSettings::network_mode`]) is the daemon's default
//! unless set: a daemon without a bridge network (like the test machine's
//! `--bridge=none`) builds with no network at all, so steps that download (`pip
//! install` from PyPI) need `host` there. There is no config key for it yet
//! (`builder.network` would belong in `config/`); [`BuildSettings::from_config`]
//! leaves it to the daemon.
//!
//! Cancelling (dropping the future) closes the `POST /build` request: the daemon
//! stops the build and removes its container; the intermediate images of the steps
//! already done stay as build cache.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{BuildImageOptions, RemoveImageOptions};
use bytes::Bytes;
use futures::StreamExt;
use hoist_core::api::Run;
use tokio::io::AsyncReadExt;

use super::engine::{BuildRequest, ContextFormat, Engine};
use super::output::Progress;
use super::pipeline::{BuildSettings, Pipeline, pack_context};
use super::source::resolve_inside;
use super::{ArtifactSource, BuildError, Builder, Built, off_runtime};
use crate::logs::LogSink;
use crate::registries::Registry;

pub use super::pipeline::{DEFAULT_GIT_TIMEOUT, DEFAULT_MAX_CONTEXT_BYTES};

/// The Docker Engine API as a build [`Engine`].
pub struct DockerEngine {
    docker: Docker,
    registry: Arc<dyn Registry>,
    network_mode: Option<String>,
    nocache: bool,
}

impl DockerEngine {
    pub fn new(docker: Docker, registry: Arc<dyn Registry>, settings: &BuildSettings) -> Self {
        DockerEngine {
            docker,
            registry,
            network_mode: settings.network_mode.clone(),
            nocache: !settings.cache,
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

#[async_trait]
impl Engine for DockerEngine {
    fn kind(&self) -> &'static str {
        "docker"
    }

    fn context_format(&self) -> ContextFormat {
        ContextFormat::Tar
    }

    async fn build(&self, req: &BuildRequest<'_>, logs: &LogSink) -> Result<(), BuildError> {
        let params = EngineBuild {
            image: req.image,
            dockerfile: req.dockerfile,
            network_mode: self.network_mode.as_deref(),
            nocache: self.nocache,
            labels: HashMap::new(),
        };
        engine_build(&self.docker, req.context, &params, logs).await?;
        if req.push {
            self.push(req.image, logs).await?;
        }
        Ok(())
    }
}

/// The build pipeline with the [`DockerEngine`].
#[derive(Debug)]
pub struct DockerBuilder(Pipeline);

impl DockerBuilder {
    pub fn new(
        docker: Docker,
        registry: Arc<dyn Registry>,
        artifacts: Arc<dyn ArtifactSource>,
        settings: BuildSettings,
    ) -> DockerBuilder {
        let engine = DockerEngine::new(docker, registry.clone(), &settings);
        DockerBuilder(Pipeline::new(
            Arc::new(engine),
            registry,
            artifacts,
            settings,
        ))
    }

    pub fn settings(&self) -> &BuildSettings {
        self.0.settings()
    }
}

#[async_trait]
impl Builder for DockerBuilder {
    fn kind(&self) -> &'static str {
        "docker"
    }

    async fn build(&self, run: &Run, logs: &LogSink) -> Result<Built, BuildError> {
        self.0.build(run, logs).await
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
                    progress.tail.last().unwrap_or_default()
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
    let packed = pack_context(
        dir,
        Vec::new(),
        u64::MAX,
        std::env::temp_dir(),
        ContextFormat::Tar,
    )
    .await?;
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
