//! Docker runner: each run is a container, created and supervised through the Docker
//! Engine API (bollard, over the daemon's unix socket or a loopback TCP port; never
//! the `docker` CLI).
//!
//! - [`DockerRunner::connect`] negotiates the API version with the daemon (bollard
//!   speaks a newer version than many daemons; requests are made in the daemon's).
//! - `start`: the queue config is parsed ([`hoist_core::resource::docker::parse`]),
//!   checked against the agent's allow-list (`policy.rs`), mapped onto a create request
//!   (`spec.rs`); the image is pulled once when the daemon does not have it; the
//!   container `hoist-<run id>` is created, started and its output followed
//!   (`stream.rs`) from the beginning, so nothing is lost.
//! - `adopt`: after an agent restart, the container is found by its `hoist.run-id`
//!   label and its output resumed after the last line already shipped.
//! - The [`Execution`] (`execution.rs`) waits for the exit (asking again, with
//!   backoff, while the daemon does not answer) and the end of the output, stops with
//!   the stop signal then SIGKILL after the grace period (`docker stop -t`), and
//!   removes the container.
//! - Capabilities: runs need an image (git and code jobs are built first); containers
//!   survive an agent restart (left running on shutdown, re-adopted); the image comes
//!   from the local daemon (no registry needed); a started container runs at once.
//! - `env: [NAME]` takes the agent's variable only under [`crate::host_env`]'s rule.
//! - [`dry_run`] (and `Runner::dry_run`): the policy check and the create request of
//!   `start`, without a daemon: the container's name, platform and create body, env
//!   values that look secret masked.

mod execution;
mod policy;
mod spec;
mod stream;

use std::collections::HashMap;

use async_trait::async_trait;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, RemoveContainerOptions,
};
use bollard::{API_DEFAULT_VERSION, Docker};
use futures::StreamExt;
use hoist_core::resource::ResourceType;
use hoist_core::resource::docker::{self as options, DockerOptions};

use self::execution::{DockerExecution, short};
pub use self::spec::container_name;
use std::sync::Arc;

use crate::config::{DockerHost, DockerSettings};
use crate::host_env::HostEnv;
use crate::logs::LogSink;
use crate::runners::{
    Adopted, Capabilities, DryRun, Execution, JobSpec, LABEL_AGENT, LABEL_RUN_ID, LogResume,
    Runner, RunnerError,
};

/// What the docker runner's target does: runs need an image, containers survive an
/// agent restart, images come from the local daemon, a started container runs.
pub const CAPABILITIES: Capabilities = Capabilities {
    needs_image: true,
    survives_restart: true,
    needs_registry: false,
    reports_pending: false,
};

/// Seconds bollard waits for the daemon to answer a request (streams excepted once
/// they have started).
const REQUEST_TIMEOUT_SECS: u64 = 120;

const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Runs jobs as containers of a Docker daemon.
#[derive(Clone)]
pub struct DockerRunner {
    docker: Docker,
    settings: DockerSettings,
    /// Where the daemon is, for messages.
    endpoint: String,
    env_allow_list: Vec<String>,
    host_env: Arc<HostEnv>,
}

impl std::fmt::Debug for DockerRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerRunner")
            .field("endpoint", &self.endpoint)
            .field("api_version", &self.docker.client_version().to_string())
            .finish_non_exhaustive()
    }
}

impl DockerRunner {
    /// Connects to the daemon `settings.host` names (else `DOCKER_HOST`, else
    /// `/var/run/docker.sock`) and agrees on the API version with it.
    pub async fn connect(settings: &DockerSettings) -> Result<DockerRunner, RunnerError> {
        let host = match &settings.host {
            Some(h) => h.clone(),
            None => match std::env::var("DOCKER_HOST") {
                Ok(v) if !v.trim().is_empty() => parse_docker_host_env(v.trim())?,
                _ => DockerHost::Unix(DEFAULT_SOCKET.into()),
            },
        };
        let endpoint = host.to_string();
        let client = match &host {
            DockerHost::Unix(path) => Docker::connect_with_unix(
                &path.to_string_lossy(),
                REQUEST_TIMEOUT_SECS,
                API_DEFAULT_VERSION,
            ),
            DockerHost::Tcp { host, port } => Docker::connect_with_http(
                &format!("http://{host}:{port}"),
                REQUEST_TIMEOUT_SECS,
                API_DEFAULT_VERSION,
            ),
        }
        .map_err(|e| unreachable(&endpoint, e))?;
        let docker = client
            .negotiate_version()
            .await
            .map_err(|e| unreachable(&endpoint, e))?;
        tracing::debug!(message = "Connected to Docker.", endpoint = %endpoint, api_version = %docker.client_version());
        Ok(DockerRunner {
            docker,
            settings: settings.clone(),
            endpoint,
            env_allow_list: Vec::new(),
            host_env: Arc::new(HostEnv::capture()),
        })
    }

    /// Agent environment variables that `env: [NAME]` entries (no value: taken from
    /// the agent's environment) may pass to containers although their names look
    /// secret or their values look like credentials (the agent config's
    /// `env-allow-list`).
    pub fn with_env_allow_list(mut self, names: Vec<String>) -> DockerRunner {
        self.env_allow_list = names;
        self
    }

    /// The agent's environment `env: [NAME]` entries take values from (instead of the
    /// process's).
    pub fn with_host_env(mut self, env: Arc<HostEnv>) -> DockerRunner {
        self.host_env = env;
        self
    }

    /// Checks that the daemon answers.
    pub async fn ping(&self) -> Result<(), RunnerError> {
        self.docker
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| RunnerError::Docker {
                message: format!(
                    "the Docker daemon at {} does not answer: {}",
                    self.endpoint,
                    daemon_message(&e)
                ),
                source: e,
            })
    }

    /// The API version in use (the lower of bollard's and the daemon's).
    pub fn api_version(&self) -> String {
        self.docker.client_version().to_string()
    }

    /// The bollard client (for builders sharing the connection, and tests).
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// Removes the stopped containers (exited, dead, or created and never started)
    /// labelled `hoist.agent=<agent_name>` whose run is not in `keep`. Returns how
    /// many were removed. Failures are logged.
    pub async fn cleanup_orphans(&self, agent_name: &str, keep: &[String]) -> usize {
        let filters = HashMap::from([
            (
                "label".to_string(),
                vec![format!("{LABEL_AGENT}={agent_name}")],
            ),
            (
                "status".to_string(),
                vec![
                    "exited".to_string(),
                    "dead".to_string(),
                    "created".to_string(),
                ],
            ),
        ]);
        let list = match self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                limit: None,
                size: false,
                filters: Some(filters),
            }))
            .await
        {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(message = "Listing the agent's old containers failed.", error = %e);
                return 0;
            }
        };
        let mut removed = 0;
        for c in list {
            let Some(id) = c.id else { continue };
            let run = c
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_RUN_ID))
                .cloned()
                .unwrap_or_default();
            if keep.contains(&run) {
                continue;
            }
            match self.docker.remove_container(&id, Some(remove_opts())).await {
                Ok(()) => {
                    tracing::info!(message = "Removed an old container.", container = %short(&id), run = %run);
                    removed += 1;
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    tracing::warn!(message = "Removing an old container failed.", container = %short(&id), error = %e)
                }
            }
        }
        removed
    }

    /// Makes sure the daemon has `image`, pulling it once if not.
    async fn ensure_image(
        &self,
        image: &str,
        platform: &str,
        logs: &LogSink,
    ) -> Result<(), RunnerError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                return Err(RunnerError::Docker {
                    message: format!("cannot inspect image {image}: {}", daemon_message(&e)),
                    source: e,
                });
            }
        }
        logs.system(&format!(
            "[hoist: image {image} is not in the local Docker daemon; pulling it]"
        ));
        let (from, tag) = split_tag(image);
        let opts = CreateImageOptions {
            from_image: Some(from),
            tag,
            platform: platform.to_string(),
            ..Default::default()
        };
        let mut pull = self.docker.create_image(Some(opts), None, None);
        let mut failure = None;
        while let Some(item) = pull.next().await {
            if let Err(e) = item {
                failure = Some(e);
                break;
            }
        }
        drop(pull);
        // A pull that "succeeds" without the image (odd registries) still fails here.
        if failure.is_none()
            && let Err(e) = self.docker.inspect_image(image).await
        {
            failure = Some(e);
        }
        match failure {
            None => {
                logs.system(&format!("[hoist: pulled {image}]"));
                Ok(())
            }
            Some(e) => Err(RunnerError::Start {
                message: format!(
                    "image {image} is not available: not present in the local Docker daemon and pulling it failed: {}; build or load it on the agent's host, or check the name",
                    daemon_message(&e)
                ),
                source: Some(Box::new(e)),
            }),
        }
    }

    /// Creates the container; a stopped leftover of the same run (a re-queued run on
    /// the same daemon) is removed first.
    async fn create(
        &self,
        name: &str,
        platform: &str,
        body: bollard::models::ContainerCreateBody,
        job: &JobSpec,
    ) -> Result<String, RunnerError> {
        let opts = || CreateContainerOptions {
            name: Some(name.to_string()),
            platform: platform.to_string(),
        };
        match self
            .docker
            .create_container(Some(opts()), body.clone())
            .await
        {
            Ok(r) => return Ok(r.id),
            Err(e) if status(&e) == Some(409) => {
                let existing = self.docker.inspect_container(name, None).await.ok();
                let running = existing
                    .as_ref()
                    .and_then(|c| c.state.as_ref())
                    .map(|s| s.running.unwrap_or(false) || s.restarting.unwrap_or(false))
                    .unwrap_or(false);
                let same_run = existing
                    .as_ref()
                    .and_then(|c| c.config.as_ref())
                    .and_then(|c| c.labels.as_ref())
                    .and_then(|l| l.get(LABEL_RUN_ID))
                    .is_some_and(|r| *r == job.run_id);
                if running || !same_run {
                    return Err(RunnerError::Start {
                        message: format!(
                            "a container named {name} already exists{}; remove it or wait for it to end",
                            if running { " and is running" } else { "" }
                        ),
                        source: Some(Box::new(e)),
                    });
                }
                tracing::info!(message = "Removing a stopped container left by an earlier attempt of the run.", container = %name);
                if let Err(e) = self
                    .docker
                    .remove_container(name, Some(remove_opts()))
                    .await
                    && !is_not_found(&e)
                {
                    return Err(RunnerError::Docker {
                        message: format!(
                            "cannot remove the old container {name}: {}",
                            daemon_message(&e)
                        ),
                        source: e,
                    });
                }
            }
            Err(e) => return Err(create_error(e, job)),
        }
        self.docker
            .create_container(Some(opts()), body)
            .await
            .map(|r| r.id)
            .map_err(|e| create_error(e, job))
    }
}

fn unreachable(endpoint: &str, e: DockerError) -> RunnerError {
    RunnerError::Docker {
        message: format!(
            "cannot reach the Docker daemon at {endpoint}: {}; is dockerd running, and may the agent use its socket?",
            daemon_message(&e)
        ),
        source: e,
    }
}

fn create_error(e: DockerError, job: &JobSpec) -> RunnerError {
    let message = format!(
        "cannot create the container for run {}: {}",
        job.run_id,
        daemon_message(&e)
    );
    match status(&e) {
        Some(400 | 404 | 409) => RunnerError::Start {
            message,
            source: Some(Box::new(e)),
        },
        _ => RunnerError::Docker { message, source: e },
    }
}

fn remove_opts() -> RemoveContainerOptions {
    RemoveContainerOptions {
        v: true,
        force: true,
        link: false,
    }
}

#[async_trait]
impl Runner for DockerRunner {
    fn resource(&self) -> ResourceType {
        ResourceType::Docker
    }

    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    async fn dry_run(&self, job: &JobSpec) -> Result<DryRun, RunnerError> {
        let (job, settings, env, allow) = (
            job.clone(),
            self.settings.clone(),
            self.host_env.clone(),
            self.env_allow_list.clone(),
        );
        tokio::task::spawn_blocking(move || dry_run(&job, &settings, &env, &allow))
            .await
            .map_err(|e| RunnerError::start(format!("the docker dry run failed: {e}")))?
    }

    async fn start(&self, job: &JobSpec, logs: LogSink) -> Result<Box<dyn Execution>, RunnerError> {
        let image = image_of(job)?;
        // The policy resolves host paths (symbolic links): a filesystem walk, so off the
        // runtime.
        let (config, settings) = (job.resource_config.clone(), self.settings.clone());
        let opts = tokio::task::spawn_blocking(move || options(&config, &settings))
            .await
            .map_err(|e| {
                RunnerError::start(format!("checking the queue's docker config failed: {e}"))
            })??;
        let prepared = spec::prepare(job, image, &opts, &self.host_env, &self.env_allow_list)
            .map_err(|e| {
                RunnerError::start(format!("the queue's docker config cannot be applied: {e}"))
            })?;
        for note in &prepared.notes {
            logs.system(&format!("[hoist: {note}]"));
        }
        self.ensure_image(image, &prepared.platform, &logs).await?;

        let name = spec::container_name(&job.run_id);
        let id = self
            .create(&name, &prepared.platform, prepared.body, job)
            .await?;
        if let Err(e) = self.docker.start_container(&id, None).await {
            let msg = daemon_message(&e);
            // Keep nothing behind: the run failed to start.
            let _ = self.docker.remove_container(&id, Some(remove_opts())).await;
            return Err(RunnerError::Start {
                message: format!("container {} did not start: {msg}", short(&id)),
                source: Some(Box::new(e)),
            });
        }
        let read_logs = opts.log_driver.as_deref() != Some("none");
        if !read_logs {
            logs.system("[hoist: the queue config sets log-driver: none; the container's output is not collected]");
        }
        tracing::debug!(message = "Container started.", container = %short(&id), run = %job.run_id);
        Ok(Box::new(DockerExecution::follow(
            self.docker.clone(),
            id,
            logs,
            LogResume::default(),
            read_logs,
        )))
    }

    async fn adopt_resuming(
        &self,
        job: &JobSpec,
        logs: LogSink,
        resume: LogResume,
    ) -> Result<Adopted, RunnerError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_RUN_ID}={}", job.run_id)],
        )]);
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                limit: None,
                size: false,
                filters: Some(filters),
            }))
            .await
            .map_err(|e| RunnerError::Docker {
                message: format!("cannot list containers: {}", daemon_message(&e)),
                source: e,
            })?;
        let Some(found) = list.into_iter().max_by_key(|c| c.created.unwrap_or(0)) else {
            return Ok(Adopted::Gone(format!(
                "container for run {} no longer exists (removed while the agent was down)",
                job.run_id
            )));
        };
        let Some(id) = found.id else {
            return Ok(Adopted::Gone(format!(
                "container for run {} has no id",
                job.run_id
            )));
        };
        let state = self
            .docker
            .inspect_container(&id, None)
            .await
            .map_err(|e| RunnerError::Docker {
                message: format!(
                    "cannot inspect container {}: {}",
                    short(&id),
                    daemon_message(&e)
                ),
                source: e,
            })?;
        let st = state.state.unwrap_or_default();
        let never_started = st
            .started_at
            .as_deref()
            .is_none_or(|s| s.starts_with("0001-01-01"))
            && !st.running.unwrap_or(false);
        if never_started {
            let _ = self.docker.remove_container(&id, Some(remove_opts())).await;
            return Ok(Adopted::Gone(format!(
                "container for run {} was created but never started (the agent stopped before starting it)",
                job.run_id
            )));
        }
        let read_logs = state
            .host_config
            .and_then(|h| h.log_config)
            .and_then(|l| l.typ)
            .as_deref()
            != Some("none");
        tracing::info!(message = "Adopted a container.", container = %short(&id), run = %job.run_id);
        Ok(Adopted::Found(Box::new(DockerExecution::follow(
            self.docker.clone(),
            id,
            logs,
            resume,
            read_logs,
        ))))
    }
}

/// The run's image, or why it has none.
fn image_of(job: &JobSpec) -> Result<&str, RunnerError> {
    job.image
        .as_deref()
        .filter(|i| !i.trim().is_empty())
        .ok_or_else(|| {
            RunnerError::start(format!(
                "run {} has no image to run: a docker queue needs the job's image (or a build)",
                job.run_id
            ))
        })
}

/// What `start` would send to the daemon for `job` under `settings`, checked the same
/// way (the agent's policy, the queue config's mapping), without a daemon: one object
/// `{name, platform, body}` (`POST /containers/create?name=…&platform=…` with `body`),
/// env values that look secret masked. Blocking: the policy resolves host paths.
pub fn dry_run(
    job: &JobSpec,
    settings: &DockerSettings,
    host_env: &HostEnv,
    env_allow_list: &[String],
) -> Result<DryRun, RunnerError> {
    let image = image_of(job)?;
    let opts = options(&job.resource_config, settings)?;
    let prepared = spec::prepare(job, image, &opts, host_env, env_allow_list).map_err(|e| {
        RunnerError::start(format!("the queue's docker config cannot be applied: {e}"))
    })?;
    let mut body = prepared.body;
    if let Some(env) = body.env.as_mut() {
        for e in env.iter_mut() {
            *e = crate::dry_run::mask_env_entry(e);
        }
    }
    let mut body = serde_json::to_value(&body)
        .map_err(|e| RunnerError::start(format!("the container config is not JSON: {e}")))?;
    crate::dry_run::mask_value_tree(&mut body);
    let mut object = serde_json::json!({
        "name": spec::container_name(&job.run_id),
        "platform": prepared.platform,
        "body": body,
    });
    if !prepared.notes.is_empty() {
        object["notes"] = serde_json::json!(prepared.notes);
    }
    Ok(DryRun {
        objects: vec![object],
        backend_check: None,
    })
}

/// `DOCKER_HOST`: `unix:///path`, or `tcp://HOST:PORT` / `http://HOST:PORT`
/// (plain HTTP; TLS is not supported).
fn parse_docker_host_env(v: &str) -> Result<DockerHost, RunnerError> {
    if let Some(p) = v.strip_prefix("unix://") {
        return Ok(DockerHost::Unix(p.into()));
    }
    if v.starts_with('/') {
        return Ok(DockerHost::Unix(v.into()));
    }
    if let Some(rest) = v
        .strip_prefix("tcp://")
        .or_else(|| v.strip_prefix("http://"))
    {
        let rest = rest.trim_end_matches('/');
        if let Some((host, port)) = rest.rsplit_once(':')
            && let Ok(port) = port.parse::<u16>()
        {
            return Ok(DockerHost::Tcp {
                host: host.to_string(),
                port,
            });
        }
    }
    Err(RunnerError::Setup(format!(
        "DOCKER_HOST={v:?} is not supported; expected unix:///path/to/docker.sock or tcp://127.0.0.1:PORT (or set docker.host in the agent config)"
    )))
}

/// `repo[:tag]` → (`repo`, tag) for a pull; a digest reference is pulled as is;
/// no tag means `latest` (an empty tag would pull every tag).
fn split_tag(image: &str) -> (String, Option<String>) {
    if image.contains('@') {
        return (image.to_string(), None);
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            (image[..at].to_string(), Some(image[at + 1..].to_string()))
        }
        None => (image.to_string(), Some("latest".to_string())),
    }
}

/// The HTTP status the daemon answered with, if it answered.
fn status(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

pub(crate) fn is_not_found(e: &DockerError) -> bool {
    status(e) == Some(404)
}

/// The daemon's own message, without bollard's wrapping.
pub(crate) fn daemon_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.trim().to_string(),
        DockerError::DockerStreamError { error } => error.trim().to_string(),
        other => other.to_string(),
    }
}

/// Parses and checks a queue's docker config against the agent's policy (blocking: it
/// may resolve host paths).
fn options(
    config: &serde_json::Value,
    settings: &crate::config::DockerSettings,
) -> Result<DockerOptions, RunnerError> {
    let empty = serde_json::Value::Object(Default::default());
    let config = if config.is_null() { &empty } else { config };
    let parsed = options::parse(config);
    let refusals = policy::refusals(&options::privileged_options(config), settings);
    if !refusals.is_empty() {
        return Err(RunnerError::Refused(refusals.join("; ")));
    }
    parsed.map_err(|problems| {
        RunnerError::start(format!(
            "the queue's docker config is invalid for this run: {}",
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        assert_eq!(
            split_tag("busybox"),
            ("busybox".into(), Some("latest".into()))
        );
        assert_eq!(split_tag("a/b:1.0"), ("a/b".into(), Some("1.0".into())));
        assert_eq!(
            split_tag("127.0.0.1:5000/x"),
            ("127.0.0.1:5000/x".into(), Some("latest".into()))
        );
        assert_eq!(
            split_tag("127.0.0.1:5000/x:v2"),
            ("127.0.0.1:5000/x".into(), Some("v2".into()))
        );
        assert_eq!(split_tag("x@sha256:abc"), ("x@sha256:abc".into(), None));
    }

    #[test]
    fn docker_host_env() {
        assert!(
            matches!(parse_docker_host_env("unix:///run/d.sock").unwrap(), DockerHost::Unix(p) if p.to_str() == Some("/run/d.sock"))
        );
        assert!(matches!(
            parse_docker_host_env("tcp://127.0.0.1:2375").unwrap(),
            DockerHost::Tcp { port: 2375, .. }
        ));
        assert!(parse_docker_host_env("ssh://x").is_err());
    }
}
