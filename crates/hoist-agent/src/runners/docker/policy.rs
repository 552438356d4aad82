//! What the agent lets a docker queue config do.
//!
//! [`hoist_core::resource::docker::privileged_options`] lists every option that asks
//! for more than an ordinary container gets (the same list the server refuses at queue
//! creation unless an admin allows it); each one is checked here again, against the
//! agent's `docker` settings ([`DockerSettings`]), so a queue an admin approved still
//! runs only on agents whose owner allows it. Everything is refused unless allowed:
//!
//! | asked for | allowed by |
//! |-----------|-----------|
//! | `privileged: true` | `docker.allow-privileged` |
//! | `cap-add: X` | `docker.allow-cap-add` listing X (or `ALL`), or `allow-privileged` |
//! | `network: host` | `docker.allow-host-network` |
//! | `pid: host` | `docker.allow-host-pid` |
//! | `ipc: host` | `docker.allow-host-ipc` |
//! | `uts`/`userns`/`cgroupns: host`, `*: container:<name>` | `docker.allow-privileged` |
//! | `device: /dev/X` | `docker.allow-devices` listing it (or a parent directory), or `allow-privileged` |
//! | `device-cgroup-rule` | `docker.allow-privileged` |
//! | `security-opt` lifting confinement | `docker.allow-privileged` |
//! | a host path in `volume` / `mount` | `docker.volume-allow-list` holding a parent of it |
//! | `mount: …,volume-opt=…` (the local driver can bind any host path) | `docker.allow-privileged` |
//! | `cgroup-parent`, `runtime`, a `net.*` `sysctl` | `docker.allow-privileged` |
//!
//! A privileged container already has every capability and device, so
//! `allow-privileged` also lets those through; it does not open host namespaces or
//! host paths, which have their own keys.
//!
//! With `secure_mode: true` in the agent config, every one of them is refused, whatever
//! the `docker` keys say.

use std::path::{Path, PathBuf};

use crate::runners::{normalize_path as normalize, path_under as under};

use hoist_core::resource::docker::{PrivilegeKind, PrivilegedUse};

use crate::config::DockerSettings;

/// Every refusal for `uses` (in document order), or nothing when all are allowed.
pub(crate) fn refusals(uses: &[PrivilegedUse], settings: &DockerSettings) -> Vec<String> {
    if settings.secure_mode {
        return uses
            .iter()
            .map(|u| {
                format!(
                    "queue config asks for `{}: {}`{}; the agent runs with secure_mode: true, which refuses every privileged setting whatever its docker allow-lists say",
                    u.option,
                    u.value,
                    at(u)
                )
            })
            .collect();
    }
    uses.iter().filter_map(|u| refusal(u, settings)).collect()
}

fn at(u: &PrivilegedUse) -> String {
    if u.path.is_empty() {
        String::new()
    } else {
        format!(" (at `{}`)", u.path)
    }
}

fn refusal(u: &PrivilegedUse, s: &DockerSettings) -> Option<String> {
    let privileged_hint = "set docker.allow-privileged: true in the agent config to allow it";
    match u.kind {
        PrivilegeKind::Privileged => (!s.allow_privileged).then(|| {
            format!(
                "queue config asks for `privileged: true`{}; the agent does not allow privileged containers ({privileged_hint})",
                at(u)
            )
        }),
        PrivilegeKind::CapAdd => {
            let bare = u.value.strip_prefix("CAP_").unwrap_or(&u.value).to_ascii_uppercase();
            let allowed = s.allow_privileged
                || s.allow_cap_add.iter().any(|c| {
                    let c = c.trim().to_ascii_uppercase();
                    let c = c.strip_prefix("CAP_").unwrap_or(&c);
                    c == bare || c == "ALL"
                });
            (!allowed).then(|| {
                format!(
                    "queue config asks for `cap-add: {bare}`{}; the agent does not allow adding this capability (add {bare} to docker.allow-cap-add in the agent config to allow it)",
                    at(u)
                )
            })
        }
        PrivilegeKind::HostNamespace => {
            let (allowed, key) = match u.option {
                "network" => (s.allow_host_network, "docker.allow-host-network: true"),
                "pid" => (s.allow_host_pid, "docker.allow-host-pid: true"),
                "ipc" => (s.allow_host_ipc, "docker.allow-host-ipc: true"),
                _ => (s.allow_privileged, "docker.allow-privileged: true"),
            };
            (!allowed).then(|| {
                format!(
                    "queue config asks for `{}: host`{}; the agent does not allow containers to share the host's {} namespace (set {key} in the agent config to allow it)",
                    u.option,
                    at(u),
                    namespace_name(u.option)
                )
            })
        }
        PrivilegeKind::ContainerNamespace => (!s.allow_privileged).then(|| {
            format!(
                "queue config asks for `{}: {}`{}; the agent does not allow joining another container's {} namespace ({privileged_hint})",
                u.option,
                u.value,
                at(u),
                namespace_name(u.option)
            )
        }),
        PrivilegeKind::Device => {
            if u.option == "device" {
                let allowed = s.allow_privileged
                    || s.allow_devices.iter().any(|d| under(Path::new(&u.value), d));
                (!allowed).then(|| {
                    format!(
                        "queue config asks for `device: {}`{}; the agent does not allow this host device (add {} to docker.allow-devices in the agent config to allow it)",
                        u.value,
                        at(u),
                        u.value
                    )
                })
            } else {
                (!s.allow_privileged).then(|| {
                    format!(
                        "queue config asks for `{}: {}`{}; the agent does not allow device cgroup rules ({privileged_hint})",
                        u.option,
                        u.value,
                        at(u)
                    )
                })
            }
        }
        PrivilegeKind::SecurityOpt => (!s.allow_privileged).then(|| {
            format!(
                "queue config asks for `security-opt: {}`{}; the agent does not allow lifting the container's confinement ({privileged_hint})",
                u.value,
                at(u)
            )
        }),
        PrivilegeKind::HostPath => host_path_refusal(u, s),
        PrivilegeKind::VolumeOptions => (!s.allow_privileged).then(|| {
            format!(
                "queue config asks for a volume mount with `{}`{}; the agent does not allow volume driver options, which can mount any host path or device ({privileged_hint})",
                u.value,
                at(u)
            )
        }),
        PrivilegeKind::CgroupParent | PrivilegeKind::Runtime | PrivilegeKind::Sysctl => {
            (!s.allow_privileged).then(|| {
                format!(
                    "queue config asks for `{}: {}`{}; the agent does not allow it: it {} ({privileged_hint})",
                    u.option,
                    u.value,
                    at(u),
                    u.kind.describe()
                )
            })
        }
    }
}

fn namespace_name(option: &str) -> &'static str {
    match option {
        "network" => "network",
        "pid" => "process (pid)",
        "ipc" => "IPC",
        "uts" => "UTS (hostname)",
        "userns" => "user",
        "cgroupns" => "cgroup",
        _ => "",
    }
}

fn host_path_refusal(u: &PrivilegedUse, s: &DockerSettings) -> Option<String> {
    let src = u.value.as_str();
    let listed = if s.volume_allow_list.is_empty() {
        "is empty".to_string()
    } else {
        format!(
            "holds {}",
            s.volume_allow_list
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    if !src.starts_with('/') {
        return Some(format!(
            "queue config asks to mount the host path {src:?} with `{}`{}; host paths must be absolute (the agent does not resolve `~`, `.` or macros in them)",
            u.option,
            at(u)
        ));
    }
    if allowed_host_path(Path::new(src), &s.volume_allow_list) {
        return None;
    }
    Some(format!(
        "queue config asks to mount the host path {src} with `{}`{}; the agent only mounts host paths under docker.volume-allow-list, which {listed} (add {src} or a parent directory to docker.volume-allow-list in the agent config to allow it)",
        u.option,
        at(u)
    ))
}

/// True when `path` is under one of `allowed`, both lexically (`..` resolved) and,
/// when the path exists, after following symbolic links.
pub(crate) fn allowed_host_path(path: &Path, allowed: &[PathBuf]) -> bool {
    let lexical = normalize(path);
    let lexical_ok = allowed.iter().any(|a| under(&lexical, a));
    if !lexical_ok {
        return false;
    }
    match std::fs::canonicalize(&lexical) {
        Ok(real) => allowed.iter().any(|a| {
            let a_real = std::fs::canonicalize(a).unwrap_or_else(|_| normalize(a));
            under(&real, &a_real)
        }),
        // Not there (yet): docker creates it, inside the allowed directory.
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoist_core::resource::docker::privileged_options;
    use serde_json::json;

    #[test]
    fn cgroup_parent_runtime_net_sysctls_and_volume_options_need_allow_privileged() {
        let config = json!({
            "cgroup-parent": "/system.slice",
            "runtime": "runsc",
            "sysctl": {"net.ipv4.ip_forward": "1", "kernel.shmmax": "1024"},
            "mount": "type=volume,source=v,target=/x,volume-opt=device=/dev/sda",
        });
        let uses = privileged_options(&config);
        let refused = refusals(&uses, &DockerSettings::default());
        let expected = [
            "`cgroup-parent: /system.slice` (at `cgroup-parent`)",
            "`runtime: runsc` (at `runtime`)",
            "`sysctl: net.ipv4.ip_forward=1` (at `sysctl[\"net.ipv4.ip_forward\"]`)",
            "`volume-opt=device=/dev/sda` (at `mount`)",
        ];
        assert_eq!(refused.len(), expected.len(), "{refused:#?}");
        for (msg, what) in refused.iter().zip(expected) {
            assert!(msg.contains(what), "{msg:?} should name {what}");
            assert!(msg.contains("docker.allow-privileged: true"), "{msg}");
        }
        let allowed = DockerSettings {
            allow_privileged: true,
            ..DockerSettings::default()
        };
        assert!(refusals(&uses, &allowed).is_empty());
        // secure_mode refuses them all the same.
        let secure = DockerSettings {
            secure_mode: true,
            ..allowed
        };
        let refused = refusals(&uses, &secure);
        assert_eq!(refused.len(), expected.len(), "{refused:#?}");
        for msg in &refused {
            assert!(msg.contains("secure_mode: true"), "{msg}");
        }
    }

    #[test]
    fn paths_under() {
        let allow = vec![PathBuf::from("/nonexistent-hoist/data")];
        assert!(allowed_host_path(
            Path::new("/nonexistent-hoist/data"),
            &allow
        ));
        assert!(allowed_host_path(
            Path::new("/nonexistent-hoist/data/x/y"),
            &allow
        ));
        assert!(!allowed_host_path(
            Path::new("/nonexistent-hoist/data2"),
            &allow
        ));
        assert!(!allowed_host_path(
            Path::new("/nonexistent-hoist/data/../etc"),
            &allow
        ));
        assert!(!allowed_host_path(Path::new("/etc"), &allow));
        assert!(!allowed_host_path(Path::new("/etc"), &[]));
    }
}
