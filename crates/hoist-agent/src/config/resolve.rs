//! Applying environment variables and flags over the file, then the checks that
//! involve several keys.

use std::time::Duration;

use super::error::{ConfigError, ConfigErrors, Origin};
use super::read::{
    At, EnvState, MAX_JOBS_FORM, RawConfig, Reader, Val, builder_types, check_name, check_queue,
};
use super::tree;
use super::values::{self, STORE_FORM};
use super::{
    AgentConfig, BuildContextStore, BuilderConfig, BuilderKind, BuilderType, ConfigOverrides,
    DEFAULT_BASE_IMAGE, DEFAULT_BUILD_JOB_NAME, DEFAULT_BUILD_TIMEOUT, DEFAULT_QUEUE,
    DEFAULT_START_TIMEOUT, DEFAULT_STOPPED_RUN_TIMEOUT, EnvironmentType, Executor, KanikoSecret,
    KanikoSettings, LoadedConfig, MaxJobs, RegistryConfig,
};

/// Loads from `text` (`source` = its name; `None` = no file at all).
pub(crate) fn load_text(
    source: Option<&str>,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    overrides: &ConfigOverrides,
) -> Result<LoadedConfig, ConfigErrors> {
    let home = env("HOME").filter(|h| !h.is_empty());
    let file = source.unwrap_or("");
    let mut reader = Reader::new(file, home);
    let raw = match source {
        None => RawConfig::default(),
        Some(_) => match tree::parse(text) {
            Ok(t) => reader.read(&t),
            Err(syntax) => {
                for s in syntax {
                    reader.errors.push(ConfigError {
                        origin: Origin::File {
                            path: file.to_string(),
                            line: s.pos.line,
                            column: s.pos.column,
                        },
                        key: String::new(),
                        message: s.message,
                    });
                }
                RawConfig::default()
            }
        },
    };
    let Reader {
        mut errors,
        mut warnings,
        ..
    } = reader;
    let mut r = Resolver {
        errors: &mut errors,
        warnings: &mut warnings,
    };
    let config = r.resolve(raw, env, overrides);
    if errors.is_empty() {
        Ok(LoadedConfig {
            config,
            path: None,
            warnings: ConfigErrors::sorted(warnings).0,
        })
    } else {
        Err(ConfigErrors::sorted(errors))
    }
}

struct Resolver<'a> {
    errors: &'a mut Vec<ConfigError>,
    warnings: &'a mut Vec<ConfigError>,
}

/// One override source: a variable or a flag, with its key.
fn env_at(var: &str, key: &str) -> At {
    At::new(Origin::Env(var.to_string()), key)
}

fn flag_at(flag: &str, key: &str) -> At {
    At::new(Origin::Flag(flag.to_string()), key)
}

fn article(env: EnvironmentType) -> &'static str {
    match env {
        EnvironmentType::Aws | EnvironmentType::Azure => "an",
        EnvironmentType::Gcp => "a",
    }
}

fn store_name(store: &BuildContextStore) -> &'static str {
    match store {
        BuildContextStore::S3 { .. } => "an s3://",
        BuildContextStore::Gcs { .. } => "a gs://",
        BuildContextStore::AzureBlob { .. } => "an Azure Blob (https://…blob.core.windows.net)",
    }
}

fn store_form(env: EnvironmentType) -> &'static str {
    match env {
        EnvironmentType::Aws => "s3://BUCKET/PREFIX",
        EnvironmentType::Gcp => "gs://BUCKET/PREFIX",
        EnvironmentType::Azure => "https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX",
    }
}

impl Resolver<'_> {
    /// Sets `slot` from `value` (already taken from the environment or a flag) when it
    /// parses; reports it otherwise.
    fn apply<T>(
        &mut self,
        slot: &mut Option<Val<T>>,
        value: Option<String>,
        at: At,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) {
        if let Some(text) = value {
            self.set(slot, parse(&text), at);
        }
    }

    /// Sets `slot` to an already parsed value, or reports why it is refused.
    fn set<T>(&mut self, slot: &mut Option<Val<T>>, value: Result<T, String>, at: At) {
        match value {
            Ok(v) => *slot = Some(Val { v, at }),
            Err(msg) => self.errors.push(at.error(msg)),
        }
    }

    fn resolve(
        &mut self,
        mut raw: RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
        ov: &ConfigOverrides,
    ) -> AgentConfig {
        let var = |name: &str| {
            env(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let entity = |s: &str| check_name("entity", s);
        let agent = |s: &str| check_name("agent", s);
        let max_jobs = |s: &str| {
            s.parse::<i64>()
                .map_err(|_| {
                    format!(
                        "invalid value {:?}; expected {MAX_JOBS_FORM}",
                        values::shown(s)
                    )
                })
                .and_then(MaxJobs::from_i64)
        };
        let queues = |s: &str| -> Result<Vec<String>, String> {
            let mut out: Vec<String> = Vec::new();
            for q in s.split(',').map(str::trim).filter(|q| !q.is_empty()) {
                check_queue(q)?;
                if !out.iter().any(|x| x == q) {
                    out.push(q.to_string());
                }
            }
            if out.is_empty() {
                return Err(
                    "no queue names; expected a comma-separated list of QUEUE or ENTITY/QUEUE"
                        .to_string(),
                );
            }
            Ok(out)
        };
        let builder_type = |s: &str| {
            BuilderType::parse(s).ok_or_else(|| {
                format!(
                    "unknown builder {:?}; expected {}",
                    values::shown(s),
                    builder_types()
                )
            })
        };
        let positive = |d: Duration| {
            if d.is_zero() {
                Err(format!(
                    "invalid duration 0: must be more than zero; expected {}",
                    values::DURATION_FORM
                ))
            } else {
                Ok(d)
            }
        };

        // Environment variables.
        self.apply(
            &mut raw.entity,
            var("HOIST_ENTITY"),
            env_at("HOIST_ENTITY", "entity"),
            entity,
        );
        self.apply(
            &mut raw.queues,
            var("HOIST_QUEUES"),
            env_at("HOIST_QUEUES", "queues"),
            queues,
        );
        self.apply(
            &mut raw.max_jobs,
            var("HOIST_MAX_JOBS"),
            env_at("HOIST_MAX_JOBS", "max_jobs"),
            max_jobs,
        );
        self.apply(
            &mut raw.name,
            var("HOIST_AGENT_NAME"),
            env_at("HOIST_AGENT_NAME", "name"),
            agent,
        );
        self.apply(
            &mut raw.base_url,
            var("HOIST_HOST"),
            env_at("HOIST_HOST", "base_url"),
            values::parse_base_url,
        );
        self.apply(
            &mut raw.base_url,
            var("HOIST_BASE_URL"),
            env_at("HOIST_BASE_URL", "base_url"),
            values::parse_base_url,
        );
        self.apply(
            &mut raw.builder.ty,
            var("HOIST_BUILDER"),
            env_at("HOIST_BUILDER", "builder.type"),
            builder_type,
        );
        self.apply(
            &mut raw.stopped_run_timeout,
            var("HOIST_STOPPED_RUN_TIMEOUT"),
            env_at("HOIST_STOPPED_RUN_TIMEOUT", "stopped_run_timeout"),
            values::parse_duration,
        );
        self.apply(
            &mut raw.start_timeout,
            var("HOIST_START_TIMEOUT"),
            env_at("HOIST_START_TIMEOUT", "start_timeout"),
            values::parse_duration,
        );

        // Flags.
        self.apply(
            &mut raw.entity,
            ov.entity.clone(),
            flag_at("--entity", "entity"),
            entity,
        );
        if !ov.queues.is_empty() {
            let joined = ov.queues.join(",");
            self.apply(
                &mut raw.queues,
                Some(joined),
                flag_at("--queue", "queues"),
                queues,
            );
        }
        self.apply(
            &mut raw.max_jobs,
            ov.max_jobs.map(|n| n.to_string()),
            flag_at("--max-jobs", "max_jobs"),
            max_jobs,
        );
        self.apply(
            &mut raw.name,
            ov.name.clone(),
            flag_at("--name", "name"),
            agent,
        );
        self.apply(
            &mut raw.base_url,
            ov.base_url.clone(),
            flag_at("--base-url", "base_url"),
            values::parse_base_url,
        );
        self.apply(
            &mut raw.builder.ty,
            ov.builder.clone(),
            flag_at("--builder", "builder.type"),
            builder_type,
        );
        if let Some(d) = ov.stopped_run_timeout {
            let at = flag_at("--stopped-run-timeout", "stopped_run_timeout");
            self.set(&mut raw.stopped_run_timeout, positive(d), at);
        }
        if let Some(d) = ov.start_timeout {
            let at = flag_at("--start-timeout", "start_timeout");
            self.set(&mut raw.start_timeout, positive(d), at);
        }
        if let Some(d) = ov.heartbeat_interval {
            let at = flag_at("--heartbeat-interval", "heartbeat_interval");
            self.set(&mut raw.heartbeat_interval, positive(d), at);
        }
        if let Some(v) = ov.verbosity {
            raw.verbosity = Some(Val {
                v: v.min(3),
                at: flag_at("--verbose", "verbosity"),
            });
        }

        let builder = self.builder(&raw);
        let secure_mode = raw.secure_mode.is_some_and(|v| v.v);
        AgentConfig {
            name: raw.name.map(|v| v.v),
            entity: raw.entity.map(|v| v.v),
            project: raw.project.map(|v| v.v),
            queues: raw
                .queues
                .map(|v| v.v)
                .unwrap_or_else(|| vec![DEFAULT_QUEUE.to_string()]),
            max_jobs: raw.max_jobs.map(|v| v.v).unwrap_or_default(),
            max_schedulers: raw.max_schedulers.map(|v| v.v).unwrap_or_default(),
            base_url: raw.base_url.map(|v| v.v),
            environment: match raw.environment {
                EnvState::Valid(e) => Some(e),
                EnvState::Absent | EnvState::Invalid => None,
            },
            registry: raw.registry,
            builder,
            docker: super::DockerSettings {
                secure_mode,
                ..raw.docker
            },
            kubernetes: raw.kubernetes,
            secure_mode,
            max_requeues: raw
                .max_requeues
                .map_or(super::DEFAULT_MAX_REQUEUES, |v| v.v),
            local_process: raw.local_process,
            env_allow_list: raw.env_allow_list,
            stopped_run_timeout: raw
                .stopped_run_timeout
                .map_or(DEFAULT_STOPPED_RUN_TIMEOUT, |v| v.v),
            start_timeout: raw.start_timeout.map_or(DEFAULT_START_TIMEOUT, |v| v.v),
            heartbeat_interval: raw.heartbeat_interval.map(|v| v.v),
            verbosity: raw.verbosity.map_or(0, |v| v.v),
        }
    }

    /// The builder, once its type is final.
    fn builder(&mut self, raw: &RawConfig) -> BuilderConfig {
        let b = &raw.builder;
        let base_image = b
            .base_image
            .as_ref()
            .map_or_else(|| DEFAULT_BASE_IMAGE.to_string(), |v| v.v.clone());
        let cache = b.cache.as_ref().is_none_or(|v| v.v);
        let platform = b.platform.as_ref().map(|v| v.v.clone());
        let done = |kind| BuilderConfig {
            kind,
            platform: platform.clone(),
            base_image: base_image.clone(),
            cache,
        };
        let ty = match &b.ty {
            Some(t) => t.clone(),
            // An unknown type was reported; checking the rest against a guess would
            // only add noise.
            None if b.ty_invalid => return done(BuilderKind::Docker),
            None => Val {
                v: BuilderType::Docker,
                at: At::new(Origin::Default, "builder.type"),
            },
        };
        match ty.v {
            BuilderType::Docker | BuilderType::Noop => {
                let why = if ty.at.origin == Origin::Default {
                    " (builder.type is not set; the default is docker)"
                } else {
                    ""
                };
                for at in b.in_cluster_keys_present() {
                    self.warnings.push(at.error(format!(
                        "not used by the {} builder{why}; ignored",
                        ty.v.as_str()
                    )));
                }
                if let Some(p) = &b.platform {
                    // Kept (and rendered): the kaniko builder is the one that uses it.
                    self.warnings.push(p.at.error(if ty.v == BuilderType::Docker {
                        format!(
                            "not used by the docker builder{why}: it builds for the Docker daemon's own platform; ignored"
                        )
                    } else {
                        "not used by the noop builder; ignored".to_string()
                    }));
                }
                done(if ty.v == BuilderType::Docker {
                    BuilderKind::Docker
                } else {
                    BuilderKind::Noop
                })
            }
            BuilderType::Kaniko | BuilderType::Buildah => {
                let name = ty.v.as_str();
                let before = self.errors.len();
                let store = match &b.store {
                    Some(s) => Some(s),
                    None if b.store_invalid => None,
                    None => {
                        self.errors.push(ty.at.error_key(
                            "builder.build-context-store",
                            format!("required by the {name} builder; expected {STORE_FORM}"),
                        ));
                        None
                    }
                };
                if let (Some(store), EnvState::Valid(env)) = (store, &raw.environment)
                    && store.v.cloud() != env.kind()
                {
                    let env = env.kind();
                    self.errors.push(store.at.error(format!(
                        "{} store needs {} {} environment, but environment.type is {}; expected {} with {} {} environment",
                        store_name(&store.v),
                        article(store.v.cloud()),
                        store.v.cloud().as_str(),
                        env.as_str(),
                        store_form(env),
                        article(env),
                        env.as_str(),
                    )));
                }
                let secret = match (&b.secret_name, &b.secret_key) {
                    (Some(n), Some(k)) => Some(KanikoSecret {
                        name: n.v.clone(),
                        key: k.v.clone(),
                    }),
                    (None, None) => None,
                    (Some(n), None) => {
                        self.errors.push(n.at.error_key(
                            "builder.secret-key",
                            "missing; secret-name and secret-key go together (the key of the credentials file in the secret)",
                        ));
                        None
                    }
                    (None, Some(k)) => {
                        self.errors.push(k.at.error_key(
                            "builder.secret-name",
                            "missing; secret-name and secret-key go together (the Kubernetes secret holding the credentials)",
                        ));
                        None
                    }
                };
                if matches!(raw.registry, RegistryConfig::Local) && b.destination.is_none() {
                    self.warnings.push(ty.at.error(format!(
                        "the {name} builder pushes the images it builds to a registry, but neither registry nor builder.destination is set; builds will fail"
                    )));
                }
                let executor = if ty.v == BuilderType::Buildah {
                    Executor::Buildah
                } else {
                    Executor::Kaniko
                };
                // The other executor's image key: kept by neither.
                let (unused_image, used_key) = match executor {
                    Executor::Kaniko => (&b.buildah_image, "builder.kaniko-image"),
                    Executor::Buildah => (&b.kaniko_image, "builder.buildah-image"),
                };
                if let Some(i) = unused_image {
                    self.warnings.push(i.at.error(format!(
                        "not used by the {name} builder, whose executor image is {used_key}; ignored"
                    )));
                }
                // W&B reads the build namespace from kaniko-config's metadata.namespace;
                // hoist from builder.namespace. Either, or both when they agree.
                let namespace = match (&b.namespace, &b.kaniko_config_namespace) {
                    (Some(n), Some(k)) if n.v != k.v => {
                        self.errors.push(k.at.error(format!(
                            "namespace {:?} differs from builder.namespace {:?} (line {}); give the build namespace once, as builder.namespace",
                            k.v,
                            n.v,
                            n.at.line()
                        )));
                        None
                    }
                    (Some(n), _) => Some(n.v.clone()),
                    (None, k) => k.as_ref().map(|k| k.v.clone()),
                };
                match store {
                    Some(store) if self.errors.len() == before => {
                        done(BuilderKind::Kaniko(Box::new(KanikoSettings {
                            build_context_store: store.v.clone(),
                            build_job_name: b.build_job_name.as_ref().map_or_else(
                                || DEFAULT_BUILD_JOB_NAME.to_string(),
                                |v| v.v.clone(),
                            ),
                            secret,
                            kaniko_config: b.kaniko_config.as_ref().map(|v| v.v.clone()),
                            kaniko_image: match executor {
                                Executor::Kaniko => b.kaniko_image.as_ref().map(|v| v.v.clone()),
                                Executor::Buildah => None,
                            },
                            executor,
                            buildah_image: match executor {
                                Executor::Buildah => b.buildah_image.as_ref().map(|v| v.v.clone()),
                                Executor::Kaniko => None,
                            },
                            build_timeout: b
                                .build_timeout
                                .as_ref()
                                .map_or(DEFAULT_BUILD_TIMEOUT, |v| v.v),
                            keep_build_context: b.keep_build_context.as_ref().is_some_and(|v| v.v),
                            namespace,
                        })))
                    }
                    _ => done(BuilderKind::Docker),
                }
            }
        }
    }
}
