//! `hoist launch --dry-run`, the agent's half: what this machine's agent would submit
//! for a run, created nowhere.
//!
//! The server checks a dry-run launch exactly as a real one and answers with the run it
//! would create (`POST /api/v1/runs` with `dry_run`). [`dry_run`] takes that answer and
//! the agent config this machine would use, and goes through what an agent does with a
//! claimed run up to the runner's start: the prepare phase ([`crate::run::dry_run_job`]:
//! macros, `HOIST_*` variables with a placeholder run token, the [`JobSpec`]), then the
//! runner's own checks and mapping ([`Runner::dry_run`]): the agent's policy for the
//! queue config, the container create body, the command line. Nothing is started,
//! pulled or created.
//!
//! Everything shown is masked: environment values whose names look secret or that look
//! like credentials, values under secret-looking keys, passwords in URLs
//! ([`mask_value_tree`], [`mask_env_entry`]).

use std::path::PathBuf;
use std::sync::Arc;

use hoist_core::api::Run;
use hoist_core::resource::ResourceType;
use hoist_core::secret::{MASKED, looks_secret, masked_value};
use serde_json::Value;

use crate::config::AgentConfig;
use crate::host_env::HostEnv;
use crate::run::{DryRunJob, dry_run_job};
use crate::runners::local_process::LocalProcessRunner;
use crate::runners::{Capabilities, DryRun, JobSpec, Runner, RunnerError, docker, kubernetes};

/// The agent this machine would run, as far as a dry run needs it.
#[derive(Debug, Clone)]
pub struct DryRunAgent<'a> {
    pub config: &'a AgentConfig,
    /// The agent's environment (for `${NAME}` macros and passed-through variables).
    pub host_env: Arc<HostEnv>,
    pub agent_name: &'a str,
    /// `HOIST_BASE_URL`: the server as the agent would reach it.
    pub base_url: &'a str,
    /// Where local-process runs would get their directories.
    pub work_root: PathBuf,
}

/// What [`dry_run`] found.
#[derive(Debug, Clone)]
pub struct DryRunReport {
    /// The spec the runner was given (its `Debug` shows no values).
    pub job: JobSpec,
    /// What the agent would do besides (a build, macros), for people.
    pub notes: Vec<String>,
    /// The runner's answer: the objects, masked, and the backend's check.
    pub result: DryRun,
}

/// What the agent with `agent` would submit for `run` (the answer of a dry-run
/// launch). A refusal of the runner's checks is [`RunnerError::Refused`] (the agent's
/// policy) or [`RunnerError::Start`] (a run that cannot start as given); a resource
/// this build has no dry run for is [`RunnerError::Setup`].
pub async fn dry_run(run: &Run, agent: &DryRunAgent<'_>) -> Result<DryRunReport, RunnerError> {
    let cfg = agent.config;
    let prepare = |caps: Capabilities| -> DryRunJob {
        dry_run_job(
            run,
            cfg,
            &agent.host_env,
            agent.agent_name,
            agent.base_url,
            caps,
        )
    };
    let (prepared, result) = match run.resource {
        ResourceType::LocalProcess => {
            let runner =
                LocalProcessRunner::new(agent.work_root.clone(), cfg.env_allow_list.clone())
                    .with_settings(&cfg.local_process)
                    .with_host_env(agent.host_env.clone());
            let prepared = prepare(runner.capabilities());
            let result = runner.dry_run(&prepared.job).await?;
            (prepared, result)
        }
        ResourceType::Docker => {
            let prepared = prepare(docker::CAPABILITIES);
            let (job, settings, env, allow) = (
                prepared.job.clone(),
                cfg.docker.clone(),
                agent.host_env.clone(),
                cfg.env_allow_list.clone(),
            );
            // The policy resolves host paths (symbolic links): off the runtime.
            let result =
                tokio::task::spawn_blocking(move || docker::dry_run(&job, &settings, &env, &allow))
                    .await
                    .map_err(|e| RunnerError::Setup(format!("the docker dry run failed: {e}")))??;
            (prepared, result)
        }
        ResourceType::Kubernetes => {
            let mut prepared = prepare(kubernetes::CAPABILITIES);
            let (result, notes) = kubernetes_dry_run(&prepared.job, cfg).await?;
            prepared.notes.extend(notes);
            (prepared, result)
        }
        #[cfg(feature = "aws")]
        ResourceType::Sagemaker => {
            let mut prepared = prepare(crate::runners::sagemaker::CAPABILITIES);
            let (result, notes) = sagemaker_dry_run(&prepared.job, cfg)?;
            prepared.notes.extend(notes);
            (prepared, result)
        }
        #[cfg(feature = "gcp")]
        ResourceType::Vertex => {
            let mut prepared = prepare(crate::runners::vertex::CAPABILITIES);
            let (project, region) = match &cfg.environment {
                Some(crate::config::EnvironmentConfig::Gcp { region, project }) => (
                    project.clone().unwrap_or_else(|| "PROJECT".into()),
                    region.clone(),
                ),
                _ => {
                    return Err(RunnerError::Setup(
                        "a vertex queue needs the agent's `environment: {type: gcp, region: …, project: …}`".into(),
                    ));
                }
            };
            if project == "PROJECT" {
                prepared.notes.push("the gcp project comes from the credentials when the agent starts; shown as PROJECT".into());
            }
            prepared.notes.push("Vertex AI has no validate-only create: the CustomJob was checked by the agent's rules only".into());
            let result = crate::runners::vertex::offline_dry_run(&prepared.job, &project, &region)?;
            (prepared, result)
        }
        // Reached in builds without the `aws` or `gcp` feature.
        #[allow(unreachable_patterns)]
        other => {
            return Err(RunnerError::Setup(format!(
                "this hoist has no {other} runner, so it cannot show what a {other} run would submit: the server's checks passed, the runner's were not made"
            )));
        }
    };
    let DryRunJob { job, notes } = prepared;
    Ok(DryRunReport { job, notes, result })
}

/// How long a dry run waits for a Kubernetes API server to answer before it shows the
/// objects without the server's own check.
pub const KUBERNETES_DRY_RUN_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// A Kubernetes run's objects: checked by the API server too (`dryRun=All`) when the
/// agent config's cluster answers within [`KUBERNETES_DRY_RUN_WITHIN`], by the
/// agent's policy only otherwise (with a note saying why). The registry's pull Secret
/// is not made: a dry run fetches no registry credentials.
async fn kubernetes_dry_run(
    job: &JobSpec,
    cfg: &AgentConfig,
) -> Result<(DryRun, Vec<String>), RunnerError> {
    let mut notes = Vec::new();
    if !matches!(cfg.registry, crate::config::RegistryConfig::Local) {
        notes.push(
            "a run whose image is in the agent's registry also gets a pull Secret `<name>-pull` with the registry's credentials (not fetched by a dry run)"
                .to_string(),
        );
    }
    #[cfg(feature = "kubernetes")]
    {
        use kubernetes::{Cluster, KubernetesRunner};
        match Cluster::connect_checked(&cfg.kubernetes, KUBERNETES_DRY_RUN_WITHIN).await {
            Ok((cluster, version)) => {
                notes.push(format!(
                    "asked the Kubernetes {version} API server at {} ({}) to check the objects (dryRun=All)",
                    cluster.url, cluster.source
                ));
                let runner = KubernetesRunner::new(cluster, cfg.kubernetes.clone(), cfg.secure_mode);
                return Ok((runner.dry_run(job).await?, notes));
            }
            Err(e) => notes.push(format!(
                "no Kubernetes cluster answered ({e}): the objects were checked by the agent's policy only, not by an API server"
            )),
        }
    }
    #[cfg(not(feature = "kubernetes"))]
    notes.push(
        "this hoist was built without the `kubernetes` feature: the objects were checked by the agent's policy only, not by an API server"
            .to_string(),
    );
    let result = kubernetes::offline_dry_run(job, &cfg.kubernetes, cfg.secure_mode)?;
    Ok((result, notes))
}

/// A SageMaker run's `CreateTrainingJob` request, built offline (no STS: a role name
/// keeps `ACCOUNT_ID` in its ARN) in the agent environment's region.
#[cfg(feature = "aws")]
fn sagemaker_dry_run(
    job: &JobSpec,
    cfg: &AgentConfig,
) -> Result<(DryRun, Vec<String>), RunnerError> {
    let Some(crate::config::EnvironmentConfig::Aws { region }) = &cfg.environment else {
        return Err(RunnerError::Setup(
            "a sagemaker queue needs the agent's `environment: {type: aws, region: …}`; this agent config has none, so its agent would not serve the queue".into(),
        ));
    };
    let mut notes = Vec::new();
    if crate::runners::sagemaker::spec::needs_account(&job.resource_config) {
        notes.push("RoleArn is a role name: the agent expands it with its account (STS GetCallerIdentity); shown here as ACCOUNT_ID".to_string());
    }
    notes.push(format!(
        "the request was built offline, not checked by SageMaker (region {region})"
    ));
    Ok((
        crate::runners::sagemaker::offline_dry_run(job, region)?,
        notes,
    ))
}

/// `NAME=VALUE` with the value masked when the name looks secret or the value looks
/// like a credential.
pub fn mask_env_entry(entry: &str) -> String {
    match entry.split_once('=') {
        Some((k, v)) => match masked_value(k, v) {
            Some(m) => format!("{k}={m}"),
            None => entry.to_string(),
        },
        None => entry.to_string(),
    }
}

/// Masks, in a free-form tree, values under keys that look secret, the `value` of
/// `{name: SECRET_LOOKING, value: …}` pairs (Kubernetes env), strings that look like
/// credentials (a URL's password, a DSN, a token) and passwords in URLs.
pub fn mask_value_tree(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let secret_pair = map
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(looks_secret);
            for (k, child) in map.iter_mut() {
                if looks_secret(k) || (secret_pair && k == "value") {
                    if !child.is_null() && !child.is_object() && !child.is_array() {
                        *child = Value::String(MASKED.to_string());
                    } else {
                        mask_secret_leaves(child);
                    }
                } else {
                    mask_value_tree(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_value_tree),
        Value::String(s) => {
            if hoist_core::secret::looks_like_credential(s) {
                *s = MASKED.to_string();
            } else {
                *s = crate::environments::http::masked_url(s);
            }
        }
        _ => {}
    }
}

/// Every scalar under a secret-looking key.
fn mask_secret_leaves(v: &mut Value) {
    match v {
        Value::Object(map) => map.values_mut().for_each(mask_secret_leaves),
        Value::Array(items) => items.iter_mut().for_each(mask_secret_leaves),
        Value::Null => {}
        other => *other = Value::String(MASKED.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masking() {
        assert_eq!(mask_env_entry("EPOCHS=3"), "EPOCHS=3");
        assert_eq!(mask_env_entry("HF_TOKEN=abc"), format!("HF_TOKEN={MASKED}"));
        assert_eq!(
            mask_env_entry("DB=postgres://a:pw@db/x"),
            format!("DB={MASKED}")
        );
        assert_eq!(mask_env_entry("NOVALUE"), "NOVALUE");
        let mut v = json!({
            "env": [{"name": "MY_TOKEN", "value": "abc"}, {"name": "EPOCHS", "value": "3"}],
            "password": "x",
            "secrets": {"a": ["b", {"c": 1}]},
            "url": "https://a:b@h",
            "args": ["--lr", "0.1"],
        });
        mask_value_tree(&mut v);
        assert_eq!(v["env"][0]["value"], MASKED);
        assert_eq!(v["env"][1]["value"], "3");
        assert_eq!(v["password"], MASKED);
        assert_eq!(v["secrets"], json!({"a": [MASKED, {"c": MASKED}]}));
        assert!(!v["url"].as_str().unwrap().contains(":b@"), "{v}");
        assert_eq!(v["args"], json!(["--lr", "0.1"]));
    }
}
