//! The cluster calls the runner makes, with their errors turned into [`RunnerError`]s:
//! discovery of a kind, creating a run's objects (the Secrets and the top object at once,
//! then the Secrets owned by it), deleting them by name or by label.
//!
//! Every request the runner sends, for the RBAC rules (`deploy/kubernetes`):
//!
//! | resource | verbs | what for |
//! |---|---|---|
//! | the top object's kind (`batch` `jobs`; a custom kind's plural) | create, get, list, watch, delete | start (and `dryRun=All`), a 409's owner check, adopt, the watch, stop and cleanup, the undo of a failed start (get, delete) |
//! | `secrets` | create, get, list, patch, deletecollection | the run's Secrets, a 409's owner check, ownership, the sweep, cleanup |
//! | `pods` | get, list, watch, deletecollection | the watch, the end's final look, a log stream's end, stop (grace period) and cleanup |
//! | `pods/log` | get | the log followers |
//! | discovery (`/api`, `/apis/GROUP/VERSION`) | get (non-resource URLs, granted to every authenticated user by `system:discovery`) | resolving `apiVersion`/`kind` |
//!
//! The sweep at agent start lists `secrets` and `batch` `jobs` across namespaces
//! (a ClusterRole); where that is forbidden it lists the default namespace only.

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{ApiCapabilities, Scope};
use serde_json::{Value, json};

use super::client::chain;
use crate::runners::RunnerError;

/// `kube::Error` as a [`RunnerError::Api`], with what was being done.
pub(crate) fn api_error(what: impl Into<String>, e: kube::Error) -> RunnerError {
    let what = what.into();
    let (transient, hint) = match &e {
        kube::Error::Api(s) => (
            s.code == 429 || s.code >= 500,
            if s.code == 403 {
                " (the agent's Kubernetes identity lacks this permission: it needs the ClusterRole hoist-agent-runner of deploy/kubernetes/rbac.yaml, bound in the run's namespace)"
            } else {
                ""
            },
        ),
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => {
            (true, "")
        }
        _ => (false, ""),
    };
    RunnerError::Api {
        message: format!("{what}: {}{hint}", describe(&e)),
        source: Box::new(e),
        transient,
    }
}

/// What an API error says, for people: the API server's message, reason and code (not
/// the whole `Status` debug dump of `kube::Error`'s display), else the error's chain.
pub(crate) fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => {
            if s.reason.is_empty() || s.reason == "Failed to parse error data" {
                format!("{} (HTTP {})", s.message, s.code)
            } else {
                format!("{} ({}, HTTP {})", s.message, s.reason, s.code)
            }
        }
        other => chain(other),
    }
}

/// A 403 on `verb` of the resource at `url` (an [`Api::resource_url`]) in `namespace`:
/// which permission is missing, and where deploy/kubernetes grants it. Not transient.
pub(crate) fn forbidden(
    verb: &str,
    url: &str,
    namespace: &str,
    what: impl Into<String>,
    e: kube::Error,
) -> RunnerError {
    let (group, resource) = group_resource_of(url);
    // The core and batch resources are in the ClusterRole as shipped; a custom kind's
    // may have to be added.
    let rules = if !matches!(group.as_str(), "" | "batch") {
        format!(
            ", with resource `{resource}` of API group `{group}` in that ClusterRole's rules (custom kinds are listed there)"
        )
    } else {
        String::new()
    };
    RunnerError::Api {
        message: format!(
            "{}: the agent's Kubernetes identity may not {verb} {resource} (API group \"{group}\") in namespace {namespace}: {}. It needs the ClusterRole hoist-agent-runner of deploy/kubernetes/rbac.yaml bound to it in namespace {namespace} by a RoleBinding (deploy/overlays/example/run-namespace.yaml shows one){rules}",
            what.into(),
            server_message(&e)
        ),
        source: Box::new(e),
        transient: false,
    }
}

/// `("batch", "jobs")` of `/apis/batch/v1/namespaces/ns/jobs`; `("", "pods")` of
/// `/api/v1/namespaces/ns/pods`.
fn group_resource_of(url: &str) -> (String, String) {
    let segs: Vec<&str> = url.trim_matches('/').split('/').collect();
    let group = match segs.as_slice() {
        ["apis", g, ..] => (*g).to_string(),
        _ => String::new(),
    };
    (group, segs.last().copied().unwrap_or("").to_string())
}

/// The HTTP status of an API error.
pub(crate) fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// A kind resolved through discovery.
#[derive(Debug, Clone)]
pub struct Kind {
    pub resource: ApiResource,
    pub namespaced: bool,
}

impl Kind {
    /// The API for objects of this kind in `namespace` (ignored for cluster-scoped
    /// kinds).
    pub fn api(&self, client: &kube::Client, namespace: &str) -> Api<DynamicObject> {
        if self.namespaced {
            Api::namespaced_with(client.clone(), namespace, &self.resource)
        } else {
            Api::all_with(client.clone(), &self.resource)
        }
    }
}

/// Resolves `apiVersion`/`kind` through the API server's discovery (never a guessed
/// plural). An unknown kind is a start failure that says so.
pub async fn resolve(
    client: &kube::Client,
    api_version: &str,
    kind: &str,
) -> Result<Kind, RunnerError> {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let gvk = GroupVersionKind::gvk(group, version, kind);
    match kube::discovery::pinned_kind(client, &gvk).await {
        Ok((resource, caps)) => Ok(Kind {
            resource,
            namespaced: matches!(
                caps,
                ApiCapabilities {
                    scope: Scope::Namespaced,
                    ..
                }
            ),
        }),
        Err(e) if unknown_kind(&e) => Err(RunnerError::Start {
            message: format!(
                "the cluster does not serve kind {kind} of apiVersion {api_version}: is the CRD installed? (queue config `apiVersion`/`kind`)"
            ),
            source: Some(Box::new(e)),
        }),
        Err(e) => Err(api_error(
            format!("discovering kind {kind} of apiVersion {api_version}"),
            e,
        )),
    }
}

/// How long a kind found by discovery is used without asking again. A CRD removed
/// meanwhile makes the create fail with 404 (and the entry is dropped).
pub const KIND_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// Kinds found by discovery, by (apiVersion, kind), for [`KIND_CACHE_TTL`]: a start
/// costs no discovery request when the queue's kind was resolved recently.
#[derive(Debug, Default)]
pub struct KindCache {
    kinds:
        std::sync::Mutex<std::collections::HashMap<(String, String), (Kind, tokio::time::Instant)>>,
}

impl KindCache {
    /// [`resolve`], answered from the cache when fresh. Unknown kinds are not cached.
    pub async fn resolve(
        &self,
        client: &kube::Client,
        api_version: &str,
        kind: &str,
    ) -> Result<Kind, RunnerError> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some((k, at)) = self.kinds.lock().expect("kinds").get(&key)
            && at.elapsed() < KIND_CACHE_TTL
        {
            return Ok(k.clone());
        }
        let k = resolve(client, api_version, kind).await?;
        self.kinds
            .lock()
            .expect("kinds")
            .insert(key, (k.clone(), tokio::time::Instant::now()));
        Ok(k)
    }

    /// Forgets `kind` of `api_version` (its objects cannot be created: the CRD may
    /// have gone).
    pub fn forget(&self, api_version: &str, kind: &str) {
        self.kinds
            .lock()
            .expect("kinds")
            .remove(&(api_version.to_string(), kind.to_string()));
    }
}

fn unknown_kind(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Discovery(_)) || status_code(e) == Some(404)
}

/// The `hoist.dev/run-id` of an object: the exact annotation, else the label.
pub(crate) fn run_id_of(obj: &Value) -> Option<String> {
    obj.pointer("/metadata/annotations/hoist.dev~1run-id")
        .or_else(|| obj.pointer("/metadata/labels/hoist.dev~1run-id"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// True when `obj` carries the labels of the run (`labels`: the submission's).
pub(crate) fn is_ours(obj: &Value, labels: &std::collections::BTreeMap<String, String>) -> bool {
    labels.iter().all(|(k, v)| {
        obj.pointer(&format!("/metadata/labels/{}", k.replace('/', "~1")))
            .and_then(Value::as_str)
            == Some(v.as_str())
    })
}

/// `metadata` of a created object.
pub(crate) fn uid_of(obj: &DynamicObject) -> Option<String> {
    obj.metadata.uid.clone()
}

/// Creates `object`; a 409 (same name) is answered with the existing object when it is
/// this run's (an earlier attempt), and refused otherwise. The flag says whether the
/// object existed already.
pub async fn create_or_adopt(
    api: &Api<DynamicObject>,
    object: &Value,
    labels: &std::collections::BTreeMap<String, String>,
    dry_run: bool,
) -> Result<(DynamicObject, bool), RunnerError> {
    let kind = object["kind"].as_str().unwrap_or("object").to_string();
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let ns = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let obj: DynamicObject =
        serde_json::from_value(object.clone()).map_err(|e| RunnerError::Start {
            message: format!("the {kind} {name} is not a Kubernetes object: {e}"),
            source: Some(Box::new(e)),
        })?;
    let pp = PostParams {
        dry_run,
        field_manager: Some("hoist".into()),
    };
    match api.create(&pp, &obj).await {
        Ok(o) => Ok((o, false)),
        Err(e) if status_code(&e) == Some(409) && !dry_run => {
            let existing = api
                .get_opt(&name)
                .await
                .map_err(|e| api_error(format!("reading the existing {kind} {ns}/{name}"), e))?;
            let Some(existing) = existing else {
                return Err(api_error(
                    format!("creating the {kind} {ns}/{name} (it was deleted meanwhile)"),
                    e,
                ));
            };
            let v = serde_json::to_value(&existing).unwrap_or(Value::Null);
            if !is_ours(&v, labels) {
                return Err(RunnerError::Start {
                    message: format!(
                        "a {kind} named {name} already exists in namespace {ns} and is not this run's (its hoist.dev labels differ): rename it, or change `metadata.name` in the queue config"
                    ),
                    source: Some(Box::new(e)),
                });
            }
            if existing.metadata.deletion_timestamp.is_some() {
                // An earlier attempt's object, being deleted: try again once it is gone.
                return Err(RunnerError::Api {
                    message: format!(
                        "the {kind} {ns}/{name} of an earlier attempt of this run is still being deleted"
                    ),
                    source: Box::new(e),
                    transient: true,
                });
            }
            Ok((existing, true))
        }
        Err(e) if dry_run => Err(RunnerError::Start {
            message: format!(
                "the API server refused the {kind} {ns}/{name}: {}",
                server_message(&e)
            ),
            source: Some(Box::new(e)),
        }),
        Err(e) if status_code(&e) == Some(403) => Err(forbidden(
            "create",
            api.resource_url(),
            &ns,
            format!("creating the {kind} {ns}/{name}"),
            e,
        )),
        Err(e) if matches!(status_code(&e), Some(400 | 422)) => Err(RunnerError::Start {
            message: format!(
                "the API server refused the {kind} {ns}/{name}: {}",
                server_message(&e)
            ),
            source: Some(Box::new(e)),
        }),
        Err(e) => Err(api_error(format!("creating the {kind} {ns}/{name}"), e)),
    }
}

/// What the API server said (its message), else the whole error.
pub(crate) fn server_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
        other => chain(other),
    }
}

/// Replaces the data of an existing Secret of the run with `secret`'s (an earlier
/// attempt's Secret holds that attempt's run token).
pub async fn refresh_secret(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    secret: &Value,
) -> Result<(), RunnerError> {
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), namespace);
    let mut body = json!({"data": null, "stringData": null});
    for key in ["data", "stringData"] {
        if let Some(v) = secret.get(key) {
            body[key] = v.clone();
        }
    }
    let pp = PatchParams::default();
    api.patch(name, &pp, &Patch::Merge(&body))
        .await
        .map_err(|e| api_error(format!("updating Secret {namespace}/{name}"), e))?;
    Ok(())
}

/// Makes each Secret owned by the top object, so that deleting it deletes them.
pub async fn own_secrets(
    client: &kube::Client,
    namespace: &str,
    secrets: &[String],
    owner: &DynamicObject,
    api_version: &str,
    kind: &str,
) -> Result<(), RunnerError> {
    let Some(uid) = uid_of(owner) else {
        return Ok(());
    };
    let name = owner.metadata.name.clone().unwrap_or_default();
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), namespace);
    let patch = json!({"metadata": {"ownerReferences": [{
        "apiVersion": api_version, "kind": kind, "name": name, "uid": uid,
    }]}});
    for s in secrets {
        api.patch(s, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| {
                api_error(
                    format!("making Secret {namespace}/{s} owned by {kind} {name}"),
                    e,
                )
            })?;
    }
    Ok(())
}

/// Deletes one object by name; a 404 is success.
pub async fn delete_named(
    api: &Api<DynamicObject>,
    name: &str,
    dp: &DeleteParams,
    what: &str,
) -> Result<(), RunnerError> {
    match api.delete(name, dp).await {
        Ok(_) => Ok(()),
        Err(e) if status_code(&e) == Some(404) => Ok(()),
        Err(e) => Err(api_error(format!("deleting {what}"), e)),
    }
}

/// Deletes every Secret and Pod of a run in `namespace` (by its label selector).
pub async fn delete_by_label(
    client: &kube::Client,
    namespace: &str,
    selector: &str,
    dp: &DeleteParams,
) -> Result<(), RunnerError> {
    use k8s_openapi::api::core::v1::{Pod, Secret};
    let lp = ListParams::default().labels(selector);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    if let Err(e) = secrets.delete_collection(dp, &lp).await
        && status_code(&e) != Some(404)
    {
        return Err(api_error(
            format!("deleting the Secrets {selector} in {namespace}"),
            e,
        ));
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    if let Err(e) = pods.delete_collection(dp, &lp).await
        && status_code(&e) != Some(404)
    {
        return Err(api_error(
            format!("deleting the pods {selector} in {namespace}"),
            e,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_and_resource_of_an_api_url() {
        let of = |u: &str| group_resource_of(u);
        assert_eq!(
            of("/apis/batch/v1/namespaces/ns/jobs"),
            ("batch".into(), "jobs".into())
        );
        assert_eq!(
            of("/api/v1/namespaces/ns/pods"),
            (String::new(), "pods".into())
        );
        assert_eq!(of("/api/v1/secrets"), (String::new(), "secrets".into()));
        assert_eq!(
            of("/apis/kubeflow.org/v1/namespaces/ns/pytorchjobs"),
            ("kubeflow.org".into(), "pytorchjobs".into())
        );
    }

    #[test]
    fn api_errors_read_as_the_server_worded_them() {
        let status =
            kube::core::Status::failure("jobs.batch \"x\" already exists", "AlreadyExists")
                .with_code(409);
        let msg = describe(&kube::Error::Api(status.boxed()));
        assert_eq!(
            msg,
            "jobs.batch \"x\" already exists (AlreadyExists, HTTP 409)"
        );
        let forbidden = forbidden(
            "create",
            "/apis/kubeflow.org/v1/namespaces/ml/pytorchjobs",
            "ml",
            "creating the PyTorchJob ml/x",
            kube::Error::Api(
                kube::core::Status::failure("pytorchjobs.kubeflow.org is forbidden", "Forbidden")
                    .with_code(403)
                    .boxed(),
            ),
        );
        assert!(!forbidden.is_transient());
        let msg = forbidden.to_string();
        assert!(
            msg.starts_with("creating the PyTorchJob ml/x: the agent's Kubernetes identity may not create pytorchjobs (API group \"kubeflow.org\") in namespace ml")
                && msg.contains("RoleBinding")
                && msg.contains("`pytorchjobs` of API group `kubeflow.org`"),
            "{msg}"
        );
    }
}
