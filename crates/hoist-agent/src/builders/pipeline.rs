//! The build pipeline: job source → image, the same for every [`Engine`].
//!
//! For one run ([`Pipeline`]'s [`Builder::build`]):
//! 1. Fetch the source into a temporary directory (removed whatever happens): a git
//!    commit (`source.rs`), or the code artifact from the server
//!    ([`ArtifactSource`]), unpacked with [`hoist_context::unpack`] (size-capped).
//! 2. Pick the Dockerfile (`dockerfile.rs`: the job's own, the context's `Dockerfile`,
//!    or one generated for a Python project on `builder.base-image`).
//! 3. Pack the build context in the engine's [`ContextFormat`]
//!    ([`hoist_context::pack_for_build`]: a deterministic tar, the generated
//!    Dockerfile included; gzip-compressed for in-cluster engines) and hash the inputs
//!    ([`image_tag`]: over the uncompressed tar, so every engine gives a source the
//!    same tag).
//! 4. Ask the destination ([`Registry::has_image`]: the local daemon, or the
//!    registry's manifest endpoint) for that tag: when it is there, nothing is built
//!    (`[hoist: image … exists; no build]`, `cache_hit`), and no engine is asked.
//! 5. Else the engine builds the context into `<repository>:<tag>` and, with a
//!    registry, pushes it ([`Engine::build`]).
//!
//! Repeated launches of the same job version skip steps 1–3: the pipeline remembers,
//! per process, which tag a source (artifact digest or repository + commit, build
//! context, Dockerfile path, entry point, base image) produced; it still asks the
//! destination whether the image is there. Two runs needing the same tag at once
//! build it once (the second waits for the first's lock, then finds the image).
//!
//! Cancelling (dropping the future) cancels the engine's build (each engine removes
//! what it created) and removes the temporary directory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hoist_context::{ExtraFile, PackOptions, human_bytes};
use hoist_core::api::{JobSource, Run};

use super::dockerfile::{self, GENERATED_DOCKERFILE};
use super::engine::{BuildRequest, ContextFormat, Engine};
use super::source::{self, redact_url, resolve_inside};
use super::{
    ArtifactSource, BUILDER_VERSION, BuildError, BuildInputs, Builder, Built, Workspace,
    buildable_source, image_reference, image_tag, job_label, off_runtime, unpack_artifact,
};
use crate::config::BuilderConfig;
use crate::logs::LogSink;
use crate::registries::Registry;

/// Default cap on an unpacked code artifact and on a build context.
pub const DEFAULT_MAX_CONTEXT_BYTES: u64 = 4 << 30;
/// Default time a git command may take.
pub const DEFAULT_GIT_TIMEOUT: Duration = Duration::from_secs(600);
/// How many source → tag entries the builder remembers.
const MEMO_ENTRIES: usize = 4096;

/// What the build pipeline does, whatever the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSettings {
    /// Base of generated Dockerfiles (`builder.base-image`).
    pub base_image: String,
    /// The docker engine's `networkmode` of builds (`host`, `none`, a network name);
    /// `None` = the daemon's default (`bridge` on a usual install). Other engines build
    /// with their pod's network.
    pub network_mode: Option<String>,
    /// Whether builds may reuse a layer cache (`builder.cache`): the daemon's, or
    /// kaniko's cache repository.
    pub cache: bool,
    /// Where temporary source trees and contexts go; `None` = the system temp dir.
    pub work_dir: Option<PathBuf>,
    /// Cap on an unpacked code artifact and on a build context, in bytes.
    pub max_context_bytes: u64,
    /// Cap on each git command.
    pub git_timeout: Duration,
}

impl Default for BuildSettings {
    fn default() -> Self {
        BuildSettings {
            base_image: crate::config::DEFAULT_BASE_IMAGE.to_string(),
            network_mode: None,
            cache: true,
            work_dir: None,
            max_context_bytes: DEFAULT_MAX_CONTEXT_BYTES,
            git_timeout: DEFAULT_GIT_TIMEOUT,
        }
    }
}

impl BuildSettings {
    /// `builder.base-image` and `builder.cache` from the agent config; the rest
    /// default.
    pub fn from_config(cfg: &BuilderConfig) -> BuildSettings {
        BuildSettings {
            base_image: cfg.base_image.clone(),
            cache: cfg.cache,
            ..Default::default()
        }
    }
}

/// The build pipeline around one [`Engine`].
pub struct Pipeline {
    engine: Arc<dyn Engine>,
    registry: Arc<dyn Registry>,
    artifacts: Arc<dyn ArtifactSource>,
    settings: BuildSettings,
    /// Source key → tag.
    memo: Mutex<HashMap<String, String>>,
    /// Tag → the lock its build holds.
    building: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("engine", &self.engine.kind())
            .field("registry", &self.registry.kind())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    pub fn new(
        engine: Arc<dyn Engine>,
        registry: Arc<dyn Registry>,
        artifacts: Arc<dyn ArtifactSource>,
        settings: BuildSettings,
    ) -> Pipeline {
        Pipeline {
            engine,
            registry,
            artifacts,
            settings,
            memo: Mutex::new(HashMap::new()),
            building: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &BuildSettings {
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
}

/// A stable key for what determines a source's tag.
fn memo_key(source: &JobSource, base_image: &str) -> String {
    let v = serde_json::json!([BUILDER_VERSION, base_image, source]);
    v.to_string()
}

#[async_trait]
impl Builder for Pipeline {
    fn kind(&self) -> &'static str {
        self.engine.kind()
    }

    async fn sweep(&self, agent: &str) -> Result<usize, BuildError> {
        self.engine.sweep(agent).await
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

impl Pipeline {
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
            self.engine.context_format(),
        )
        .await?;
        // The packed file is in the workspace, which the caller removes off the runtime
        // (a `TempPath` would delete it on the runtime's thread).
        let context_file = packed.path.keep().map_err(|e| BuildError::Io {
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
        let request = BuildRequest {
            run,
            context: &context_file,
            context_bytes: packed.compressed,
            dockerfile: &chosen.path,
            image: &image,
            tag: &tag,
            push: repository.is_some(),
        };
        self.engine.build(&request, logs).await?;
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

/// Packs `dir` plus `extra` in `format` into a file in `temp_dir` (blocking work, off
/// the runtime).
pub(crate) async fn pack_context(
    dir: &Path,
    extra: Vec<ExtraFile>,
    max_bytes: u64,
    temp_dir: PathBuf,
    format: ContextFormat,
) -> Result<hoist_context::Packed, BuildError> {
    let dir = dir.to_path_buf();
    off_runtime("packing the build context", move || {
        let opts = PackOptions {
            max_bytes: Some(max_bytes),
            temp_dir: Some(temp_dir),
            ..Default::default()
        };
        let packed = match format {
            ContextFormat::Tar => hoist_context::pack_for_build(&dir, &extra, &opts),
            ContextFormat::TarGz => hoist_context::pack_for_build_gz(&dir, &extra, &opts),
        };
        packed.map_err(|source| BuildError::Context {
            message: format!("cannot pack the build context: {source}"),
            source,
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

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
