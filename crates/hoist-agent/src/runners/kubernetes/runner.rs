//! [`KubernetesRunner`]: the [`Runner`] of kubernetes queues.
//!
//! A start creates the Secrets and the top object at once, then makes the Secrets owned by
//! it (deleting it deletes everything), in a task of its own: a start that fails or is
//! given up part-way (its future dropped) deletes what it created, including what the
//! request in flight at that moment created. A 409 on create is an earlier attempt of the
//! same run when the object carries the run's labels (adopted), a clear failure
//! otherwise. Objects are deleted by hoist once the logs are in (no TTL), or by
//! [`Runner::sweep`] at the next start of the agent when it died first.

use std::sync::Arc;

use async_trait::async_trait;
use hoist_core::resource::ResourceType;
use hoist_core::secret::Secret;
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::api::{Api, DeleteParams, ListParams, PropagationPolicy};
use kube::core::ApiResource;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::config::KubernetesSettings;
use crate::logs::LogSink;
use crate::registries::Registry;
use crate::runners::{
    Adopted, Capabilities, DryRun, Execution, JobSpec, LogResume, Runner, RunnerError,
};

use super::execution::{self, KubeExecution, Target};
use super::{Cluster, api, spec};

/// Runs jobs as Kubernetes objects.
pub struct KubernetesRunner {
    cluster: Cluster,
    settings: KubernetesSettings,
    secure_mode: bool,
    /// The agent's registry: a run whose image is in it gets the registry's credentials
    /// (fetched at the run's start, so short-lived tokens are fresh) as a per-run pull
    /// Secret.
    registry: Option<Arc<dyn Registry>>,
    /// Kinds found by discovery (a start needs no discovery request for a kind seen
    /// within a minute).
    kinds: api::KindCache,
}

impl KubernetesRunner {
    pub fn new(cluster: Cluster, settings: KubernetesSettings, secure_mode: bool) -> Self {
        KubernetesRunner {
            cluster,
            settings,
            secure_mode,
            registry: None,
            kinds: api::KindCache::default(),
        }
    }

    /// The agent's registry: runs whose image is in it get its credentials as a
    /// per-run `kubernetes.io/dockerconfigjson` Secret in `imagePullSecrets`.
    pub fn with_registry(mut self, registry: Option<Arc<dyn Registry>>) -> Self {
        self.registry = registry;
        self
    }

    /// The pull credentials for `job`'s image: the agent registry's, when the image
    /// is in that registry (same host) and it has credentials; `None` otherwise (an
    /// image from elsewhere, a registry without credentials, images in the node's own
    /// daemon).
    async fn pull_credentials(&self, job: &JobSpec) -> Result<Option<Secret>, RunnerError> {
        let (Some(registry), Some(image)) = (&self.registry, &job.image) else {
            return Ok(None);
        };
        let Some(repository) = registry.repository() else {
            return Ok(None);
        };
        let host = |r: &str| r.split('/').next().unwrap_or_default().to_string();
        if host(image) != host(&repository) || !image.contains('/') {
            return Ok(None);
        }
        let auth = registry.auth().await.map_err(|e| RunnerError::Api {
            message: format!(
                "the credentials of the agent's {} registry {} (for the run's pull Secret): {e}",
                registry.kind(),
                host(&repository)
            ),
            transient: e.is_transient(),
            source: Box::new(e),
        })?;
        Ok(auth.map(|a| a.docker_config_json()))
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The submission for `job`, with `pull` (a `.dockerconfigjson`) as its pull
    /// Secret.
    fn build(&self, job: &JobSpec, pull: Option<&Secret>) -> Result<spec::Submission, RunnerError> {
        let cx = spec::SpecContext {
            default_namespace: &self.cluster.default_namespace,
            settings: &self.settings,
            secure_mode: self.secure_mode,
            docker_config_json: pull,
        };
        spec::build(job, &cx)
    }

    async fn target(&self, sub: &spec::Submission) -> Result<Target, RunnerError> {
        let kind = self
            .kinds
            .resolve(&self.cluster.client, &sub.api_version, &sub.kind)
            .await?;
        Ok(Target {
            client: self.cluster.client.clone(),
            kind,
            api_version: sub.api_version.clone(),
            kind_name: sub.kind.clone(),
            namespace: sub.namespace.clone(),
            name: sub.name.clone(),
            selector: sub.selector(),
            prefixed: execution::prefixed(&sub.api_version, &sub.kind, &sub.object),
        })
    }

    /// Creates the submission's objects (Secrets, the top object, ownership) in a task
    /// of its own, so that every request sent is answered and the task knows what
    /// exists. When a step fails, what was created is deleted before the error is
    /// returned. When the caller gives up (the start future dropped: `start_timeout`,
    /// the run task ended), the task finishes the request in flight, sends no other, and
    /// deletes what was created, the object of that last request included.
    async fn create(&self, sub: spec::Submission, target: &Target) -> Result<(), RunnerError> {
        let (tx, rx) = oneshot::channel::<Result<Undo, RunnerError>>();
        let client = self.cluster.client.clone();
        let mut undo = Undo::new(target.clone(), sub.labels.clone());
        tokio::spawn(async move {
            match create_steps(&client, &sub, &mut undo, &tx).await {
                Ok(()) => {
                    // The caller gone meanwhile: the objects are nobody's.
                    if let Err(Ok(undo)) = tx.send(Ok(undo)) {
                        undo.run().await;
                    }
                }
                Err(e) => {
                    undo.run().await;
                    let _ = tx.send(Err(e));
                }
            }
        });
        match rx.await {
            Ok(Ok(undo)) => {
                undo.disarm();
                Ok(())
            }
            Ok(Err(e)) => {
                // The kind may be gone (a CRD removed): discover it again next time.
                self.kinds.forget(&target.api_version, &target.kind_name);
                Err(e)
            }
            Err(_) => Err(RunnerError::Gone(format!(
                "creating {} {}/{} ended without an answer",
                target.kind_name, target.namespace, target.name
            ))),
        }
    }
}

/// The steps of [`KubernetesRunner::create`]; `undo` learns what exists. Stops before
/// each request once nobody waits for the answer (`answer` closed).
async fn create_steps(
    client: &kube::Client,
    sub: &spec::Submission,
    undo: &mut Undo,
    answer: &oneshot::Sender<Result<Undo, RunnerError>>,
) -> Result<(), RunnerError> {
    let given_up = || {
        RunnerError::Gone(format!(
            "the start of {} {}/{} was given up",
            sub.kind, sub.namespace, sub.name
        ))
    };
    if answer.is_closed() {
        return Err(given_up());
    }
    // The Secrets and the top object are created at once: the pods that refer to the
    // Secrets come from the top object's controller, a scheduling and a sandbox later,
    // when the Secrets exist (should one not yet, the kubelet tries the container again
    // shortly: `CreateContainerConfigError` fails a run only when it lasts). One round
    // trip to the API server less before the job starts.
    let target = undo.target.clone().expect("armed");
    let top = target.kind.api(client, &sub.namespace);
    undo.top = Top::Sent;
    let (names, created) = tokio::join!(
        create_secrets(client, sub),
        api::create_or_adopt(&top, &sub.object, &sub.labels, false)
    );
    let created = match created {
        Ok((created, _)) => created,
        Err(e) => {
            // Refused: not created. A transient failure (no answer, a 5xx) may have
            // created it: the undo looks.
            if !e.is_transient() {
                undo.top = Top::NotCreated;
            }
            return Err(e);
        }
    };
    undo.top = Top::Created;
    let names = names?;
    if answer.is_closed() {
        return Err(given_up());
    }
    api::own_secrets(
        client,
        &sub.namespace,
        &names,
        &created,
        &sub.api_version,
        &sub.kind,
    )
    .await
}

/// Creates `sub`'s Secrets (or takes an earlier attempt's, with this attempt's
/// values); their names.
async fn create_secrets(
    client: &kube::Client,
    sub: &spec::Submission,
) -> Result<Vec<String>, RunnerError> {
    let secret_kind = api::Kind {
        resource: ApiResource::erase::<KubeSecret>(&()),
        namespaced: true,
    };
    let secrets = secret_kind.api(client, &sub.namespace);
    let mut names = Vec::new();
    for s in &sub.secrets {
        let (o, existed) = api::create_or_adopt(&secrets, s, &sub.labels, false).await?;
        let name = o.metadata.name.unwrap_or_default();
        if existed {
            // An earlier attempt's: it may hold an earlier run token.
            api::refresh_secret(client, &sub.namespace, &name, s).await?;
        }
        names.push(name);
    }
    Ok(names)
}

/// What a start knows of the run's top object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Top {
    /// Not asked for, or refused.
    NotCreated,
    /// Asked for, answer unknown (it may exist).
    Sent,
    /// Created (or an earlier attempt's adopted).
    Created,
}

/// Deletes a run's objects when a start failed or was given up part-way: its Secrets
/// and pods by label, and the top object once this start created (or adopted) it, or
/// may have (then only when it carries the run's labels: a same-named object of
/// someone else is never touched). [`Undo::run`] does it; dropped armed, it does it in
/// a task of its own.
struct Undo {
    target: Option<Target>,
    labels: std::collections::BTreeMap<String, String>,
    top: Top,
}

impl Undo {
    fn new(target: Target, labels: std::collections::BTreeMap<String, String>) -> Undo {
        Undo {
            target: Some(target),
            labels,
            top: Top::NotCreated,
        }
    }

    /// The start succeeded: nothing to undo.
    fn disarm(mut self) {
        self.target = None;
    }

    /// Deletes what the start created.
    async fn run(mut self) {
        let Some(target) = self.target.take() else {
            return;
        };
        undo(target, std::mem::take(&mut self.labels), self.top).await;
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        let Some(target) = self.target.take() else {
            return;
        };
        let labels = std::mem::take(&mut self.labels);
        let top = self.top;
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(undo(target, labels, top));
        }
    }
}

async fn undo(target: Target, labels: std::collections::BTreeMap<String, String>, top: Top) {
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    let r = match top {
        Top::Created => target.delete_all(&dp).await,
        Top::Sent => delete_if_ours(&target, &labels, &dp).await,
        Top::NotCreated => {
            api::delete_by_label(&target.client, &target.namespace, &target.selector, &dp).await
        }
    };
    if let Err(e) = r {
        tracing::warn!(message = "Could not delete what a failed start created; the agent's next start deletes it.", error = %e);
    }
}

/// Deletes the run's top object when it exists and is this run's (its create was sent
/// and not answered), then its Secrets and pods by label.
async fn delete_if_ours(
    target: &Target,
    labels: &std::collections::BTreeMap<String, String>,
    dp: &DeleteParams,
) -> Result<(), RunnerError> {
    let top = target.kind.api(&target.client, &target.namespace);
    let found = top.get_opt(&target.name).await.map_err(|e| {
        api::api_error(
            format!(
                "looking for {} {}/{}",
                target.kind_name, target.namespace, target.name
            ),
            e,
        )
    })?;
    if let Some(o) = found
        && api::is_ours(&serde_json::to_value(&o).unwrap_or(Value::Null), labels)
    {
        let dp = DeleteParams {
            preconditions: o.metadata.uid.map(|uid| kube::api::Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..dp.clone()
        };
        api::delete_named(
            &top,
            &target.name,
            &dp,
            &format!("{} {}/{}", target.kind_name, target.namespace, target.name),
        )
        .await?;
    }
    api::delete_by_label(&target.client, &target.namespace, &target.selector, dp).await
}

#[async_trait]
impl Runner for KubernetesRunner {
    fn resource(&self) -> ResourceType {
        ResourceType::Kubernetes
    }

    fn capabilities(&self) -> Capabilities {
        super::CAPABILITIES
    }

    async fn start(&self, job: &JobSpec, logs: LogSink) -> Result<Box<dyn Execution>, RunnerError> {
        let pull = self.pull_credentials(job).await?;
        let sub = self.build(job, pull.as_ref())?;
        let target = self.target(&sub).await?;
        self.create(sub, &target).await?;
        Ok(Box::new(KubeExecution::supervise(
            target,
            logs,
            LogResume::default(),
        )))
    }

    /// The run's objects have a name derived from the run (the same submission is
    /// built again): found by name, checked by label, supervised again; the logs
    /// resume after what the server has.
    async fn adopt_resuming(
        &self,
        job: &JobSpec,
        logs: LogSink,
        resume: LogResume,
    ) -> Result<Adopted, RunnerError> {
        // Only the names and labels matter here: no credentials are fetched.
        let sub = self.build(job, None)?;
        let target = self.target(&sub).await?;
        let found = target
            .kind
            .api(&self.cluster.client, &sub.namespace)
            .get_opt(&sub.name)
            .await
            .map_err(|e| {
                api::api_error(
                    format!("looking for {} {}/{}", sub.kind, sub.namespace, sub.name),
                    e,
                )
            })?;
        match found {
            Some(o)
                if api::is_ours(
                    &serde_json::to_value(&o).unwrap_or(Value::Null),
                    &sub.labels,
                ) =>
            {
                Ok(Adopted::Found(Box::new(KubeExecution::supervise(
                    target, logs, resume,
                ))))
            }
            Some(_) => Ok(Adopted::Gone(format!(
                "the {} {}/{} is not this run's any more (its hoist.dev labels differ)",
                sub.kind, sub.namespace, sub.name
            ))),
            None => Ok(Adopted::Gone(format!(
                "the {} {}/{} of this run no longer exists (deleted while the agent was away)",
                sub.kind, sub.namespace, sub.name
            ))),
        }
    }

    /// Deletes the objects of this agent's runs that the server no longer assigns to
    /// it: found through the run Secrets (every run has one; its owner reference names
    /// the top object) and Jobs labelled with the agent, across namespaces (or in the
    /// default namespace when the agent may not list cluster-wide).
    async fn sweep(&self, agent: &str, keep: &[String]) -> Result<Vec<String>, RunnerError> {
        let client = &self.cluster.client;
        let selector = spec::agent_selector(agent);
        let lp = ListParams::default().labels(&selector);
        let all: Api<KubeSecret> = Api::all(client.clone());
        let secrets = match all.list(&lp).await {
            Ok(l) => l.items,
            Err(e) if api::status_code(&e) == Some(403) => {
                let ns: Api<KubeSecret> =
                    Api::namespaced(client.clone(), &self.cluster.default_namespace);
                ns.list(&lp)
                    .await
                    .map_err(|e| api::api_error("listing this agent's Secrets", e))?
                    .items
            }
            Err(e) => return Err(api::api_error("listing this agent's Secrets", e)),
        };
        let jobs_kind = self.kinds.resolve(client, "batch/v1", "Job").await?;
        let jobs =
            match Api::<kube::api::DynamicObject>::all_with(client.clone(), &jobs_kind.resource)
                .list(&lp)
                .await
            {
                Ok(l) => l.items,
                Err(e) if api::status_code(&e) == Some(403) => {
                    jobs_kind
                        .api(client, &self.cluster.default_namespace)
                        .list(&lp)
                        .await
                        .map_err(|e| api::api_error("listing this agent's Jobs", e))?
                        .items
                }
                Err(e) => return Err(api::api_error("listing this agent's Jobs", e)),
            };
        // (namespace, run label) → the run and its top objects (apiVersion, kind, name).
        let mut stale = Stale::new();
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        for s in &secrets {
            if let Some(tops) = stale_tops(&mut stale, s, &s.metadata, keep) {
                tops.extend(
                    s.metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .map(|o| (o.api_version.clone(), o.kind.clone(), o.name.clone())),
                );
            }
        }
        for j in &jobs {
            if let Some(tops) = stale_tops(&mut stale, j, &j.metadata, keep) {
                tops.push((
                    "batch/v1".into(),
                    "Job".into(),
                    j.metadata.name.clone().unwrap_or_default(),
                ));
            }
        }
        let mut swept = Vec::new();
        for ((ns, label), (run, tops)) in stale {
            for (av, kind, name) in tops {
                let k = self.kinds.resolve(client, &av, &kind).await?;
                api::delete_named(
                    &k.api(client, &ns),
                    &name,
                    &dp,
                    &format!("{kind} {ns}/{name}"),
                )
                .await?;
            }
            if !label.is_empty() {
                api::delete_by_label(client, &ns, &format!("{}={label}", spec::LABEL_RUN_ID), &dp)
                    .await?;
            }
            swept.push(run);
        }
        Ok(swept)
    }

    /// The objects a start would create, masked, and the API server's own check of
    /// each (`dryRun=All`).
    async fn dry_run(&self, job: &JobSpec) -> Result<DryRun, RunnerError> {
        let pull = self.pull_credentials(job).await?;
        let sub = self.build(job, pull.as_ref())?;
        let check = async {
            let target = self.target(&sub).await?;
            let secret_kind = api::Kind {
                resource: ApiResource::erase::<KubeSecret>(&()),
                namespaced: true,
            };
            let secrets = secret_kind.api(&self.cluster.client, &sub.namespace);
            for s in &sub.secrets {
                api::create_or_adopt(&secrets, s, &sub.labels, true).await?;
            }
            let top = target.kind.api(&self.cluster.client, &sub.namespace);
            api::create_or_adopt(&top, &sub.object, &sub.labels, true).await?;
            Ok::<(), RunnerError>(())
        };
        let backend_check = Some(check.await.map_err(|e| e.to_string()));
        Ok(DryRun {
            objects: sub.masked(),
            backend_check,
        })
    }
}

/// Top objects (apiVersion, kind, name) of one run.
type Tops = Vec<(String, String, String)>;
/// Runs that are over, by (namespace, run label): the run's id and its top objects.
type Stale = std::collections::BTreeMap<(String, String), (String, Tops)>;

/// The top objects of the run `obj` (with metadata `meta`) belongs to, when that run is
/// over (not in `keep`); `None` for an object of a run to keep, or of no run.
fn stale_tops<'s>(
    stale: &'s mut Stale,
    obj: &impl serde::Serialize,
    meta: &kube::api::ObjectMeta,
    keep: &[String],
) -> Option<&'s mut Tops> {
    let run = api::run_id_of(&serde_json::to_value(obj).ok()?)?;
    let ns = meta.namespace.clone()?;
    if keep.contains(&run) {
        return None;
    }
    let label = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(spec::LABEL_RUN_ID))
        .cloned()
        .unwrap_or_default();
    Some(&mut stale.entry((ns, label)).or_insert((run, Vec::new())).1)
}
