//! What the agent lets a Kubernetes queue config do.
//!
//! [`hoist_core::resource::kubernetes::privileged_settings`] lists every setting of the
//! object that gives its pods more than an ordinary, confined pod (the same list the
//! server refuses at queue creation unless an admin allows it), with its path, anywhere
//! in the document (so pod templates inside custom objects count). Each one is checked
//! here again against the agent's `kubernetes` settings ([`KubernetesSettings`]), so a
//! queue an admin approved still runs only on agents whose owner allows it. Everything
//! is refused unless allowed:
//!
//! | asked for | allowed by |
//! |-----------|-----------|
//! | `securityContext.privileged: true` | `kubernetes.allow-privileged` |
//! | `securityContext.allowPrivilegeEscalation: true` | `kubernetes.allow-privilege-escalation` (or `allow-privileged`) |
//! | `securityContext.capabilities.add: [X]` | `kubernetes.allow-cap-add` listing X (or `ALL`), or `allow-privileged` |
//! | `hostNetwork: true` | `kubernetes.allow-host-network` |
//! | `hostPID: true` | `kubernetes.allow-host-pid` |
//! | `hostIPC: true` | `kubernetes.allow-host-ipc` |
//! | a `hostPath` volume | `kubernetes.host-path-allow-list` holding the path or a parent of it |
//! | `procMount: Unmasked`, an `Unconfined` seccomp or AppArmor profile, `windowsOptions.hostProcess` | `kubernetes.allow-privileged` |
//! | `runAsUser: 0` or `runAsNonRoot: false` in any securityContext | refused with `kubernetes.require-non-root` |
//!
//! Host paths are compared lexically, component by component, after resolving `.` and
//! `..` (`/data/../etc` is `/etc`, and `/data2` is not under `/data`); they name paths
//! on the cluster's nodes, which the agent cannot look at. A relative host path is
//! refused. A privileged container already has every capability, so
//! `allow-privileged` also lets added capabilities and escalation through; host
//! namespaces and host paths have their own keys.
//!
//! With `secure_mode` (W&B's key) every privileged setting and running as root is
//! refused, whatever the lists say.

use std::path::{Path, PathBuf};

use hoist_core::resource::kubernetes::{PrivilegedField, privileged_settings};
use hoist_core::resource::path::key_path;
use serde_json::Value;

use crate::config::KubernetesSettings;

/// Every refusal for `object` (the object about to be submitted), in document order,
/// each naming its path: `spec.template.spec.hostNetwork: not allowed on this queue
/// (set kubernetes.allow-host-network: true in the agent config to allow it)`.
/// Nothing when all is allowed.
pub fn check(object: &Value, settings: &KubernetesSettings, secure_mode: bool) -> Vec<String> {
    let mut out: Vec<(String, String)> = privileged_settings(object)
        .iter()
        .filter_map(|f| refusal(f, settings, secure_mode).map(|r| (f.path.clone(), r)))
        .collect();
    if settings.require_non_root || secure_mode {
        let mut roots = Vec::new();
        find_root(object, "", &mut roots);
        let why = if secure_mode {
            "the agent runs in secure_mode, which refuses running as root"
        } else {
            "the agent config sets kubernetes.require-non-root: true"
        };
        for (path, shown) in roots {
            let msg = format!(
                "{path}: not allowed on this queue ({why}); `{shown}` runs the container as root"
            );
            out.push((path, msg));
        }
    }
    sort_by_document_order(object, &mut out);
    out.into_iter().map(|(_, m)| m).collect()
}

fn refusal(f: &PrivilegedField, s: &KubernetesSettings, secure_mode: bool) -> Option<String> {
    let not_allowed = |hint: String| {
        Some(format!(
            "{}: not allowed on this queue ({hint}); `{}` {}",
            f.path,
            f.shown,
            f.describe()
        ))
    };
    if secure_mode {
        return not_allowed(
            "the agent runs in secure_mode, which refuses every privileged setting".into(),
        );
    }
    let set = |key: &str| format!("set kubernetes.{key}: true in the agent config to allow it");
    match f.kind {
        "privileged" | "proc-mount" | "unconfined" | "host-process" => {
            (!s.allow_privileged).then_some(())?;
            not_allowed(set("allow-privileged"))
        }
        "privilege-escalation" => {
            (!s.allow_privilege_escalation && !s.allow_privileged).then_some(())?;
            not_allowed(set("allow-privilege-escalation"))
        }
        "cap-add" => {
            let up = f.value.trim().to_ascii_uppercase();
            let bare = up.strip_prefix("CAP_").unwrap_or(&up);
            let listed = s.allow_cap_add.iter().any(|c| {
                let c = c.trim().to_ascii_uppercase();
                let c = c.strip_prefix("CAP_").unwrap_or(&c);
                c == bare || c == "ALL"
            });
            (!listed && !s.allow_privileged).then_some(())?;
            not_allowed(format!(
                "add {bare} to kubernetes.allow-cap-add in the agent config to allow it"
            ))
        }
        "host-namespace" => {
            let (allowed, key) = if f.path.ends_with("hostNetwork") {
                (s.allow_host_network, "allow-host-network")
            } else if f.path.ends_with("hostPID") {
                (s.allow_host_pid, "allow-host-pid")
            } else {
                (s.allow_host_ipc, "allow-host-ipc")
            };
            (!allowed).then_some(())?;
            not_allowed(set(key))
        }
        "host-path" => host_path_refusal(f, s),
        // A kind added to the core list later: refused until this table knows it.
        _ => {
            (!s.allow_privileged).then_some(())?;
            not_allowed(set("allow-privileged"))
        }
    }
}

fn host_path_refusal(f: &PrivilegedField, s: &KubernetesSettings) -> Option<String> {
    let p = f.value.as_str();
    if !p.starts_with('/') {
        return Some(format!(
            "{}: not allowed on this queue (host paths must be absolute); `hostPath: {p}` is relative",
            f.path
        ));
    }
    if allowed_host_path(Path::new(p), &s.host_path_allow_list) {
        return None;
    }
    let listed = if s.host_path_allow_list.is_empty() {
        "the list is empty".to_string()
    } else {
        format!(
            "the list holds {}",
            s.host_path_allow_list
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Some(format!(
        "{}: not allowed on this queue (add {p} or a parent directory to kubernetes.host-path-allow-list in the agent config to allow it; {listed}); `{}` {}",
        f.path,
        f.shown,
        f.describe()
    ))
}

/// True when `path` is one of `allowed` or inside one, after resolving `.` and `..`
/// lexically (the paths are on the cluster's nodes, not on the agent's machine).
pub fn allowed_host_path(path: &Path, allowed: &[PathBuf]) -> bool {
    allowed
        .iter()
        .filter(|a| a.is_absolute())
        .any(|a| crate::runners::path_under(path, a))
}

/// `runAsUser: 0` and `runAsNonRoot: false` in any `securityContext`, as (path, shown).
fn find_root(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = key_path(path, k);
                if k == "securityContext"
                    && let Value::Object(sc) = x
                {
                    if sc.get("runAsUser").and_then(Value::as_i64) == Some(0) {
                        out.push((key_path(&p, "runAsUser"), "runAsUser: 0".into()));
                    }
                    if sc.get("runAsNonRoot").and_then(Value::as_bool) == Some(false) {
                        out.push((key_path(&p, "runAsNonRoot"), "runAsNonRoot: false".into()));
                    }
                }
                find_root(x, &p, out);
            }
        }
        Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                find_root(x, &hoist_core::resource::path::index_path(path, i), out);
            }
        }
        _ => {}
    }
}

/// Orders refusals as their paths appear in `object` (stable for equal positions).
fn sort_by_document_order(object: &Value, out: &mut [(String, String)]) {
    let mut order = Vec::new();
    all_paths(object, "", &mut order);
    let pos = |p: &str| order.iter().position(|q| q == p).unwrap_or(usize::MAX);
    out.sort_by_key(|(p, _)| pos(p));
}

fn all_paths(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = key_path(path, k);
                out.push(p.clone());
                all_paths(x, &p, out);
            }
        }
        Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                let p = hoist_core::resource::path::index_path(path, i);
                out.push(p.clone());
                all_paths(x, &p, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: Value) -> Value {
        json!({"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": spec}}})
    }

    fn container(sc: Value) -> Value {
        pod(json!({"containers": [{"name": "main", "image": "i", "securityContext": sc}]}))
    }

    fn none() -> KubernetesSettings {
        KubernetesSettings::default()
    }

    #[test]
    fn host_network_refusal_names_the_path_and_the_key() {
        let job = pod(json!({"hostNetwork": true, "containers": [{"name": "main"}]}));
        let r = check(&job, &none(), false);
        assert_eq!(r.len(), 1, "{r:#?}");
        assert!(
            r[0].starts_with(
                "spec.template.spec.hostNetwork: not allowed on this queue (set kubernetes.allow-host-network: true in the agent config to allow it)"
            ),
            "{}",
            r[0]
        );
        let allowed = KubernetesSettings {
            allow_host_network: true,
            ..none()
        };
        assert!(check(&job, &allowed, false).is_empty());
        // secure_mode refuses whatever the settings say.
        let r = check(&job, &allowed, true);
        assert_eq!(r.len(), 1);
        assert!(r[0].contains("secure_mode"), "{}", r[0]);
    }

    #[test]
    fn host_pid_and_ipc_have_their_own_keys() {
        let job =
            pod(json!({"hostPID": true, "hostIPC": true, "hostNetwork": false, "containers": []}));
        let r = check(&job, &none(), false);
        assert_eq!(r.len(), 2, "{r:#?}");
        assert!(r[0].starts_with("spec.template.spec.hostPID: not allowed on this queue (set kubernetes.allow-host-pid: true"), "{}", r[0]);
        assert!(r[1].starts_with("spec.template.spec.hostIPC: not allowed on this queue (set kubernetes.allow-host-ipc: true"), "{}", r[1]);
        let pid = KubernetesSettings {
            allow_host_pid: true,
            ..none()
        };
        let r = check(&job, &pid, false);
        assert_eq!(r.len(), 1);
        assert!(r[0].starts_with("spec.template.spec.hostIPC"));
        let both = KubernetesSettings {
            allow_host_pid: true,
            allow_host_ipc: true,
            ..none()
        };
        assert!(check(&job, &both, false).is_empty());
    }

    #[test]
    fn privileged_and_confinement_need_allow_privileged() {
        let job = pod(json!({
            "securityContext": {"seccompProfile": {"type": "Unconfined"}},
            "containers": [{"name": "a", "securityContext": {"privileged": true, "procMount": "Unmasked"}}],
            "initContainers": [{"name": "i", "securityContext": {"windowsOptions": {"hostProcess": true}}}],
        }));
        let r = check(&job, &none(), false);
        let paths: Vec<&str> = r.iter().map(|m| m.split(':').next().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "spec.template.spec.securityContext.seccompProfile.type",
                "spec.template.spec.containers[0].securityContext.privileged",
                "spec.template.spec.containers[0].securityContext.procMount",
                "spec.template.spec.initContainers[0].securityContext.windowsOptions.hostProcess",
            ]
        );
        for m in &r {
            assert!(
                m.contains("set kubernetes.allow-privileged: true in the agent config"),
                "{m}"
            );
        }
        let allowed = KubernetesSettings {
            allow_privileged: true,
            ..none()
        };
        assert!(check(&job, &allowed, false).is_empty());
        assert_eq!(check(&job, &allowed, true).len(), 4);
    }

    #[test]
    fn escalation_needs_its_key_or_allow_privileged() {
        let job = container(json!({"allowPrivilegeEscalation": true}));
        let r = check(&job, &none(), false);
        assert_eq!(r.len(), 1);
        assert!(r[0].starts_with("spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation: not allowed on this queue (set kubernetes.allow-privilege-escalation: true"), "{}", r[0]);
        for s in [
            KubernetesSettings {
                allow_privilege_escalation: true,
                ..none()
            },
            KubernetesSettings {
                allow_privileged: true,
                ..none()
            },
        ] {
            assert!(check(&job, &s, false).is_empty());
        }
        // Escalation explicitly off is no privilege.
        assert!(
            check(
                &container(json!({"allowPrivilegeEscalation": false})),
                &none(),
                false
            )
            .is_empty()
        );
    }

    #[test]
    fn added_capabilities_are_checked_one_by_one() {
        let job = container(
            json!({"capabilities": {"add": ["NET_ADMIN", "cap_sys_ptrace"], "drop": ["ALL"]}}),
        );
        let r = check(&job, &none(), false);
        assert_eq!(r.len(), 2, "{r:#?}");
        assert!(r[0].starts_with("spec.template.spec.containers[0].securityContext.capabilities.add[0]: not allowed on this queue (add NET_ADMIN to kubernetes.allow-cap-add"), "{}", r[0]);
        assert!(
            r[1].contains("add SYS_PTRACE to kubernetes.allow-cap-add"),
            "{}",
            r[1]
        );
        let one = KubernetesSettings {
            allow_cap_add: vec!["CAP_SYS_PTRACE".into()],
            ..none()
        };
        let r = check(&job, &one, false);
        assert_eq!(r.len(), 1);
        assert!(r[0].contains("NET_ADMIN"));
        let all = KubernetesSettings {
            allow_cap_add: vec!["ALL".into()],
            ..none()
        };
        assert!(check(&job, &all, false).is_empty());
        let privileged = KubernetesSettings {
            allow_privileged: true,
            ..none()
        };
        assert!(check(&job, &privileged, false).is_empty());
        assert_eq!(check(&job, &all, true).len(), 2);
    }

    #[test]
    fn host_paths_must_be_under_the_allow_list() {
        let vol = |p: &str| {
            pod(json!({"containers": [], "volumes": [{"name": "v", "hostPath": {"path": p}}]}))
        };
        let list = KubernetesSettings {
            host_path_allow_list: vec![PathBuf::from("/data"), PathBuf::from("/mnt/models/")],
            ..none()
        };
        for ok in [
            "/data",
            "/data/",
            "/data/a/b",
            "/mnt/models/x",
            "/data/./x",
            "/data/a/../b",
        ] {
            assert!(
                check(&vol(ok), &list, false).is_empty(),
                "{ok} should be allowed"
            );
        }
        for bad in [
            "/data2",
            "/data/../etc",
            "/data/a/../../etc",
            "/",
            "/mnt",
            "data/x",
            "../data",
            "/etc/passwd",
        ] {
            let r = check(&vol(bad), &list, false);
            assert_eq!(r.len(), 1, "{bad} should be refused");
            assert!(
                r[0].starts_with(
                    "spec.template.spec.volumes[0].hostPath: not allowed on this queue"
                ),
                "{}",
                r[0]
            );
        }
        let r = check(&vol("/var/run/docker.sock"), &none(), false);
        assert!(
            r[0].contains(
                "add /var/run/docker.sock or a parent directory to kubernetes.host-path-allow-list"
            ),
            "{}",
            r[0]
        );
        assert!(r[0].contains("the list is empty"), "{}", r[0]);
        assert!(
            r[0].contains(
                "`hostPath: /var/run/docker.sock` mounts a path of the node into the pod"
            ),
            "{}",
            r[0]
        );
        // A relative allow-list entry allows nothing.
        let relative = KubernetesSettings {
            host_path_allow_list: vec![PathBuf::from("data")],
            ..none()
        };
        assert_eq!(check(&vol("/data"), &relative, false).len(), 1);
        assert_eq!(check(&vol("/data/x"), &list, true).len(), 1);
    }

    #[test]
    fn root_is_refused_with_require_non_root_and_in_secure_mode() {
        let job = pod(json!({
            "securityContext": {"runAsNonRoot": false},
            "containers": [
                {"name": "a", "securityContext": {"runAsUser": 0}},
                {"name": "b", "securityContext": {"runAsUser": 1000, "runAsNonRoot": true}},
            ],
        }));
        assert!(check(&job, &none(), false).is_empty());
        let strict = KubernetesSettings {
            require_non_root: true,
            ..none()
        };
        let r = check(&job, &strict, false);
        assert_eq!(r.len(), 2, "{r:#?}");
        assert!(r[0].starts_with("spec.template.spec.securityContext.runAsNonRoot: not allowed on this queue (the agent config sets kubernetes.require-non-root: true); `runAsNonRoot: false`"), "{}", r[0]);
        assert!(r[1].starts_with("spec.template.spec.containers[0].securityContext.runAsUser: not allowed on this queue"), "{}", r[1]);
        let r = check(&job, &none(), true);
        assert_eq!(r.len(), 2);
        assert!(r[0].contains("secure_mode"), "{}", r[0]);
    }

    #[test]
    fn refusals_come_in_document_order_across_kinds() {
        let job = pod(json!({
            "hostNetwork": true,
            "containers": [{"name": "a", "securityContext": {"runAsUser": 0, "privileged": true}}],
            "volumes": [{"name": "v", "hostPath": {"path": "/etc"}}],
        }));
        let strict = KubernetesSettings {
            require_non_root: true,
            ..none()
        };
        let paths: Vec<String> = check(&job, &strict, false)
            .iter()
            .map(|m| m.split(": not allowed").next().unwrap().to_string())
            .collect();
        assert_eq!(
            paths,
            [
                "spec.template.spec.hostNetwork",
                "spec.template.spec.containers[0].securityContext.runAsUser",
                "spec.template.spec.containers[0].securityContext.privileged",
                "spec.template.spec.volumes[0].hostPath",
            ]
        );
    }

    #[test]
    fn custom_objects_are_checked_in_every_template() {
        let obj = json!({
            "apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "spec": {"replicatedJobs": [
                {"name": "a", "template": {"spec": {"template": {"spec": {"containers": [{"name": "c"}]}}}}},
                {"name": "b", "template": {"spec": {"template": {"spec": {"hostPID": true, "containers": [{"name": "c"}]}}}}},
            ]},
        });
        let r = check(&obj, &none(), false);
        assert_eq!(r.len(), 1);
        assert!(r[0].starts_with("spec.replicatedJobs[1].template.spec.template.spec.hostPID: not allowed on this queue"), "{}", r[0]);
    }
}
