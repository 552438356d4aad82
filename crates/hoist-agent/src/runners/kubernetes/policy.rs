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

use std::path::{Component, Path, PathBuf};

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
            let msg =
                format!("{path}: `{shown}` (running as root) is not allowed on this queue ({why})");
            out.push((path, msg));
        }
    }
    sort_by_document_order(object, &mut out);
    out.into_iter().map(|(_, m)| m).collect()
}

fn refusal(f: &PrivilegedField, s: &KubernetesSettings, secure_mode: bool) -> Option<String> {
    let not_allowed = |hint: String| {
        Some(format!(
            "{}: `{}` is not allowed on this queue: it {} ({hint})",
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
            "{}: hostPath {p:?} is not allowed on this queue: host paths must be absolute",
            f.path
        ));
    }
    if allowed_host_path(Path::new(p), &s.host_path_allow_list) {
        return None;
    }
    let listed = if s.host_path_allow_list.is_empty() {
        "is empty".to_string()
    } else {
        format!(
            "holds {}",
            s.host_path_allow_list
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Some(format!(
        "{}: hostPath {p} is not allowed on this queue: it mounts a path of the node into the pod; kubernetes.host-path-allow-list {listed} (add {p} or a parent directory to it in the agent config to allow it)",
        f.path
    ))
}

/// True when `path` is one of `allowed` or inside one, after resolving `.` and `..`
/// lexically (the paths are on the cluster's nodes, not on the agent's machine).
pub fn allowed_host_path(path: &Path, allowed: &[PathBuf]) -> bool {
    let p = normalize(path);
    allowed
        .iter()
        .filter(|a| a.is_absolute())
        .any(|a| p.starts_with(normalize(a)))
}

/// Resolves `.` and `..` without touching the filesystem (`..` at the root stays at
/// the root).
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
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
