//! From a run and its queue's docker options to an Engine API container create
//! request.
//!
//! | queue config option | Engine API field |
//! |---------------------|------------------|
//! | `env` (+ the run's env, its `HOIST_*` variables winning) | `Env` |
//! | `volume` with a source | `HostConfig.Binds` |
//! | `volume` without a source (anonymous) | `Volumes` |
//! | `mount` | `HostConfig.Mounts` (`BindOptions`, `VolumeOptions`, `TmpfsOptions`, `ImageOptions`) |
//! | `tmpfs` | `HostConfig.Tmpfs` |
//! | `gpus` | `HostConfig.DeviceRequests` |
//! | `memory`, `memory-swap`, `memory-reservation`, `memory-swappiness` | `HostConfig.Memory`, `MemorySwap`, `MemoryReservation`, `MemorySwappiness` |
//! | `shm-size` | `HostConfig.ShmSize` |
//! | `cpus` | `HostConfig.NanoCpus` |
//! | `cpu-shares`, `cpu-period`, `cpu-quota`, `cpuset-cpus`, `cpuset-mems` | `HostConfig.CpuShares`, `CpuPeriod`, `CpuQuota`, `CpusetCpus`, `CpusetMems` |
//! | `blkio-weight` | `HostConfig.BlkioWeight` |
//! | `pids-limit` | `HostConfig.PidsLimit` |
//! | `ulimit` | `HostConfig.Ulimits` |
//! | `network` | `HostConfig.NetworkMode` |
//! | `network-alias` | `NetworkingConfig.EndpointsConfig[network].Aliases` |
//! | `hostname`, `domainname` | `Hostname`, `Domainname` |
//! | `add-host` | `HostConfig.ExtraHosts` |
//! | `dns`, `dns-option`, `dns-search` | `HostConfig.Dns`, `DnsOptions`, `DnsSearch` |
//! | `expose` | `ExposedPorts` (ranges expanded) |
//! | `publish` | `HostConfig.PortBindings` + `ExposedPorts` |
//! | `publish-all` | `HostConfig.PublishAllPorts` |
//! | `user`, `group-add`, `workdir` | `User`, `HostConfig.GroupAdd`, `WorkingDir` |
//! | `entrypoint` (the run's entry point wins) | `Entrypoint` |
//! | the run's args | `Cmd` |
//! | `label` (+ the run's `hoist.*` labels, which win) | `Labels` |
//! | `read-only` | `HostConfig.ReadonlyRootfs` |
//! | `privileged` | `HostConfig.Privileged` |
//! | `init` | `HostConfig.Init` |
//! | `cap-add`, `cap-drop` | `HostConfig.CapAdd`, `CapDrop` |
//! | `security-opt` | `HostConfig.SecurityOpt` (`systempaths=unconfined` → empty `MaskedPaths` and `ReadonlyPaths`, as the CLI does) |
//! | `pid`, `ipc`, `uts`, `userns`, `cgroupns` | `HostConfig.PidMode`, `IpcMode`, `UTSMode`, `UsernsMode`, `CgroupnsMode` |
//! | `cgroup-parent` | `HostConfig.CgroupParent` |
//! | `device`, `device-cgroup-rule` | `HostConfig.Devices`, `DeviceCgroupRules` |
//! | `runtime` | `HostConfig.Runtime` |
//! | `platform` | the `platform` query parameter of create (and of the pull) |
//! | `stop-signal`, `stop-timeout` | `StopSignal`, `StopTimeout` |
//! | `sysctl` | `HostConfig.Sysctls` |
//! | `log-driver`, `log-opt` | `HostConfig.LogConfig` |
//! | `storage-opt` | `HostConfig.StorageOpt` |
//! | `oom-kill-disable`, `oom-score-adj` | `HostConfig.OomKillDisable`, `OomScoreAdj` |
//! | `health-*`, `no-healthcheck` | `Healthcheck` (`CMD-SHELL`, or `NONE`) |
//! | `name` | ignored (the container is always `hoist-<run id>`), with a note in the run's log |
//! | `restart: "no"`, `rm` | nothing: the agent supervises and removes the container |

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ContainerCreateBody, DeviceMapping, DeviceRequest, EndpointSettings, HealthConfig, HostConfig,
    HostConfigCgroupnsModeEnum, HostConfigLogConfig, Mount, MountBindOptions,
    MountBindOptionsPropagationEnum, MountImageOptions, MountTmpfsOptions, MountType,
    MountVolumeOptions, MountVolumeOptionsDriverConfig, NetworkingConfig, PortBinding,
    ResourcesUlimits,
};
use hoist_core::resource::docker::{DockerOptions, parse_size};

use crate::host_env::{HostEnv, Lookup};

use crate::runners::{
    JobSpec, LABEL_AGENT, LABEL_ENTITY, LABEL_PROJECT, LABEL_QUEUE, LABEL_RUN_ID,
};

/// A create request and what the run's log should say about it.
pub(crate) struct Prepared {
    pub body: ContainerCreateBody,
    /// `platform` query parameter of create (empty: the daemon's).
    pub platform: String,
    /// Notes for the run's log (options ignored, variables not passed).
    pub notes: Vec<String>,
}

/// The container name hoist gives a run: `hoist-<run id>`, with characters docker does
/// not accept replaced by `-`.
pub fn container_name(run_id: &str) -> String {
    let clean: String = run_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("hoist-{clean}")
}

/// Builds the create request. `agent_env` is the agent's environment (for `env`
/// entries without a value: never a variable whose name looks secret or whose value
/// looks like a credential, see [`crate::host_env`]); `env_allow_list` names those that
/// may still be passed that way.
pub(crate) fn prepare(
    job: &JobSpec,
    image: &str,
    o: &DockerOptions,
    agent_env: &HostEnv,
    env_allow_list: &[String],
) -> Result<Prepared, String> {
    let mut notes = Vec::new();

    // Environment: the run's, then the queue config's on top; the run's HOIST_* win.
    let mut env: Vec<(String, String)> = Vec::new();
    fn set(env: &mut Vec<(String, String)>, k: &str, v: String) {
        if let Some(e) = env.iter_mut().find(|(n, _)| n == k) {
            e.1 = v;
        } else {
            env.push((k.to_string(), v));
        }
    }
    for (k, v) in &job.env {
        set(&mut env, k, v.clone());
    }
    for (k, v) in &o.env {
        if k.starts_with("HOIST_") && job.env.contains_key(k) {
            notes.push(format!(
                "queue config env {k} ignored: hoist sets it for the run"
            ));
            continue;
        }
        let value = match v {
            Some(v) => v.clone(),
            None => match agent_env.lookup(k, env_allow_list) {
                Lookup::Value(v) => v.to_string(),
                Lookup::Unset => continue,
                Lookup::Withheld(w) => {
                    notes.push(format!(
                        "queue config env {k} not passed from the agent's environment: {} (list it in env-allow-list in the agent config to pass it)",
                        w.why()
                    ));
                    continue;
                }
            },
        };
        set(&mut env, k, value);
    }

    // Labels: the queue config's, then the run's hoist.* labels.
    let mut labels: HashMap<String, String> = o.labels.clone().into_iter().collect();
    let derived: BTreeMap<&str, &str> = [
        (LABEL_QUEUE, job.queue.as_str()),
        (LABEL_ENTITY, job.entity.as_str()),
        (LABEL_PROJECT, job.project.as_str()),
    ]
    .into_iter()
    .collect();
    for (k, v) in derived {
        labels.insert(k.to_string(), v.to_string());
    }
    for (k, v) in &job.labels {
        labels.insert(k.clone(), v.clone());
    }
    // adopt() and cleanup_orphans() find containers by these two.
    labels.insert(LABEL_RUN_ID.to_string(), job.run_id.clone());
    labels.insert(LABEL_AGENT.to_string(), job.agent_name.clone());

    if let Some(n) = &o.name {
        notes.push(format!(
            "queue config `name: {n}` ignored: hoist names the container {} so that runs never clash",
            container_name(&job.run_id)
        ));
    }

    // Entry point and command.
    let entrypoint = match (&job.entry_point, &o.entrypoint) {
        (Some(ep), _) => Some(reset_if_empty(ep.clone())),
        (None, Some(ep)) => Some(reset_if_empty(ep.clone())),
        (None, None) => None,
    };
    let cmd = (!job.args.is_empty()).then(|| job.args.clone());

    // Volumes.
    let mut binds = Vec::new();
    let mut anonymous = Vec::new();
    for v in &o.volumes {
        match v.bind() {
            Some(b) => binds.push(b),
            None => anonymous.push(v.target.clone()),
        }
    }
    let mut mounts = Vec::new();
    for m in &o.mounts {
        mounts.push(mount(m)?);
    }
    let tmpfs: HashMap<String, String> = o.tmpfs.iter().cloned().collect();

    // Ports.
    let mut exposed: Vec<String> = Vec::new();
    for e in &o.expose {
        let (ports, proto) = e.rsplit_once('/').unwrap_or((e.as_str(), "tcp"));
        for p in expand(ports)? {
            push_unique(&mut exposed, format!("{p}/{proto}"));
        }
    }
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in &o.publish {
        let container = expand(&p.container_port)?;
        let host: Vec<Option<String>> = match &p.host_port {
            None => vec![None; container.len()],
            Some(h) => {
                let hs = expand(h)?;
                if hs.len() == container.len() {
                    hs.into_iter().map(|x| Some(x.to_string())).collect()
                } else if container.len() == 1 {
                    vec![Some(h.clone())]
                } else {
                    return Err(format!(
                        "published port {}:{}: the host range and the container range differ in size",
                        h, p.container_port
                    ));
                }
            }
        };
        for (c, h) in container.into_iter().zip(host) {
            let key = format!("{c}/{}", p.protocol);
            push_unique(&mut exposed, key.clone());
            bindings
                .entry(key)
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(PortBinding {
                    host_ip: p.host_ip.clone(),
                    host_port: h,
                });
        }
    }

    // Security options.
    let mut security_opt = Vec::new();
    let mut unconfined_paths = false;
    for s in &o.security_opts {
        let (key, value) = match s.find(['=', ':']) {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s.as_str(), None),
        };
        match (key, value) {
            ("systempaths", Some("unconfined")) => unconfined_paths = true,
            ("no-new-privileges", None) => security_opt.push("no-new-privileges=true".to_string()),
            ("seccomp", Some(v))
                if v != "unconfined" && v != "builtin" && !v.trim_start().starts_with('{') =>
            {
                return Err(format!(
                    "security-opt {s:?}: the agent does not read seccomp profile files; give the profile's JSON inline (seccomp={{...}}), or use unconfined"
                ));
            }
            (k, Some(v)) => security_opt.push(format!("{k}={v}")),
            (k, None) => security_opt.push(k.to_string()),
        }
    }

    let gpus = o.gpus.as_ref().map(|g| {
        vec![DeviceRequest {
            driver: g.driver.clone(),
            count: g.count,
            device_ids: (!g.device_ids.is_empty()).then(|| g.device_ids.clone()),
            capabilities: Some(vec![g.capabilities.clone()]),
            options: None,
        }]
    });

    let healthcheck = if o.no_healthcheck {
        Some(HealthConfig {
            test: Some(vec!["NONE".to_string()]),
            ..Default::default()
        })
    } else if o.health_cmd.is_some()
        || o.health_interval.is_some()
        || o.health_timeout.is_some()
        || o.health_start_period.is_some()
        || o.health_retries.is_some()
    {
        Some(HealthConfig {
            test: o
                .health_cmd
                .as_ref()
                .map(|c| vec!["CMD-SHELL".to_string(), c.clone()]),
            interval: o.health_interval,
            timeout: o.health_timeout,
            retries: o.health_retries,
            start_period: o.health_start_period,
            start_interval: None,
        })
    } else {
        None
    };

    let cgroupns_mode = match o.cgroupns.as_deref() {
        Some("host") => Some(HostConfigCgroupnsModeEnum::HOST),
        Some("private") => Some(HostConfigCgroupnsModeEnum::PRIVATE),
        Some(other) => return Err(format!("cgroupns {other:?}: expected host or private")),
        None => None,
    };

    let log_config =
        (o.log_driver.is_some() || !o.log_opts.is_empty()).then(|| HostConfigLogConfig {
            typ: o.log_driver.clone(),
            config: (!o.log_opts.is_empty()).then(|| o.log_opts.clone().into_iter().collect()),
        });

    let networking_config = match (&o.network, o.network_aliases.is_empty()) {
        (_, true) => None,
        (Some(net), false) => Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                net.clone(),
                EndpointSettings {
                    aliases: Some(o.network_aliases.clone()),
                    ..Default::default()
                },
            )])),
        }),
        (None, false) => {
            return Err(
                "`network-alias` needs `network` set to a user-defined network".to_string(),
            );
        }
    };

    let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let host_config = HostConfig {
        binds: non_empty(&binds),
        mounts: (!mounts.is_empty()).then_some(mounts),
        tmpfs: (!tmpfs.is_empty()).then_some(tmpfs),
        device_requests: gpus,
        memory: o.memory,
        memory_swap: o.memory_swap,
        memory_reservation: o.memory_reservation,
        memory_swappiness: o.memory_swappiness,
        shm_size: o.shm_size,
        nano_cpus: o.nano_cpus,
        cpu_shares: o.cpu_shares,
        cpu_period: o.cpu_period,
        cpu_quota: o.cpu_quota,
        cpuset_cpus: o.cpuset_cpus.clone(),
        cpuset_mems: o.cpuset_mems.clone(),
        blkio_weight: o.blkio_weight,
        pids_limit: o.pids_limit,
        ulimits: (!o.ulimits.is_empty()).then(|| {
            o.ulimits
                .iter()
                .map(|u| ResourcesUlimits {
                    name: Some(u.name.clone()),
                    soft: Some(u.soft),
                    hard: Some(u.hard),
                })
                .collect()
        }),
        network_mode: o.network.clone(),
        extra_hosts: non_empty(&o.extra_hosts),
        dns: non_empty(&o.dns),
        dns_options: non_empty(&o.dns_options),
        dns_search: non_empty(&o.dns_search),
        port_bindings: (!bindings.is_empty()).then_some(bindings),
        publish_all_ports: o.publish_all.then_some(true),
        group_add: non_empty(&o.group_add),
        readonly_rootfs: o.read_only.then_some(true),
        privileged: o.privileged.then_some(true),
        init: o.init,
        cap_add: non_empty(&o.cap_add),
        cap_drop: non_empty(&o.cap_drop),
        security_opt: non_empty(&security_opt),
        masked_paths: unconfined_paths.then(Vec::new),
        readonly_paths: unconfined_paths.then(Vec::new),
        pid_mode: o.pid.clone(),
        ipc_mode: o.ipc.clone(),
        uts_mode: o.uts.clone(),
        userns_mode: o.userns.clone(),
        cgroupns_mode,
        cgroup_parent: o.cgroup_parent.clone(),
        devices: (!o.devices.is_empty()).then(|| {
            o.devices
                .iter()
                .map(|d| DeviceMapping {
                    path_on_host: Some(d.path_on_host.clone()),
                    path_in_container: Some(d.path_in_container.clone()),
                    cgroup_permissions: Some(d.cgroup_permissions.clone()),
                })
                .collect()
        }),
        device_cgroup_rules: non_empty(&o.device_cgroup_rules),
        runtime: o.runtime.clone(),
        sysctls: (!o.sysctls.is_empty()).then(|| o.sysctls.clone().into_iter().collect()),
        log_config,
        storage_opt: (!o.storage_opts.is_empty())
            .then(|| o.storage_opts.clone().into_iter().collect()),
        oom_kill_disable: o.oom_kill_disable,
        oom_score_adj: o.oom_score_adj,
        ..Default::default()
    };

    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        env: Some(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()),
        cmd,
        entrypoint,
        labels: Some(labels),
        hostname: o.hostname.clone(),
        domainname: o.domainname.clone(),
        user: o.user.clone(),
        working_dir: o.workdir.clone(),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        volumes: (!anonymous.is_empty()).then_some(anonymous),
        stop_signal: o.stop_signal.clone(),
        stop_timeout: o.stop_timeout,
        healthcheck,
        attach_stdin: Some(false),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        tty: Some(false),
        open_stdin: Some(false),
        host_config: Some(host_config),
        networking_config,
        ..Default::default()
    };
    Ok(Prepared {
        body,
        platform: o.platform.clone().unwrap_or_default(),
        notes,
    })
}

/// An empty entry point list resets the image's, as `--entrypoint ""` does.
fn reset_if_empty(ep: Vec<String>) -> Vec<String> {
    if ep.is_empty() {
        vec![String::new()]
    } else {
        ep
    }
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

/// `8000-8002` → 8000, 8001, 8002.
fn expand(ports: &str) -> Result<Vec<u16>, String> {
    let bad = || format!("invalid port {ports:?}");
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let p = ports.parse::<u16>().map_err(|_| bad())?;
            (p, p)
        }
    };
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    Ok((lo..=hi).collect())
}

fn mount(m: &hoist_core::resource::docker::Mount) -> Result<Mount, String> {
    let typ = match m.kind.as_str() {
        "bind" => MountType::BIND,
        "volume" => MountType::VOLUME,
        "tmpfs" => MountType::TMPFS,
        "image" => MountType::IMAGE,
        "npipe" => MountType::NPIPE,
        "cluster" => MountType::CLUSTER,
        other => {
            return Err(format!(
                "mount to {}: unknown mount type {other:?}",
                m.target
            ));
        }
    };
    let opt = |k: &str| m.options.get(k).map(String::as_str);
    let flag = |k: &str| opt(k).map(|v| matches!(v, "true" | "1" | ""));
    let mut out = Mount {
        target: Some(m.target.clone()),
        source: m.source.clone(),
        typ: Some(typ),
        read_only: m.read_only.then_some(true),
        consistency: opt("consistency").map(str::to_string),
        ..Default::default()
    };
    match typ {
        MountType::BIND => {
            let propagation = match opt("bind-propagation") {
                None => None,
                Some("private") => Some(MountBindOptionsPropagationEnum::PRIVATE),
                Some("rprivate") => Some(MountBindOptionsPropagationEnum::RPRIVATE),
                Some("shared") => Some(MountBindOptionsPropagationEnum::SHARED),
                Some("rshared") => Some(MountBindOptionsPropagationEnum::RSHARED),
                Some("slave") => Some(MountBindOptionsPropagationEnum::SLAVE),
                Some("rslave") => Some(MountBindOptionsPropagationEnum::RSLAVE),
                Some(other) => {
                    return Err(format!(
                        "mount to {}: unknown bind-propagation {other:?}",
                        m.target
                    ));
                }
            };
            let mut non_recursive = flag("bind-nonrecursive");
            let mut ro_non_recursive = None;
            let mut ro_force_recursive = None;
            match opt("bind-recursive") {
                None | Some("enabled") => {}
                Some("disabled") => non_recursive = Some(true),
                Some("writable") => ro_non_recursive = Some(true),
                Some("readonly") => ro_force_recursive = Some(true),
                Some(other) => {
                    return Err(format!(
                        "mount to {}: unknown bind-recursive {other:?}; expected enabled, disabled, writable or readonly",
                        m.target
                    ));
                }
            }
            let b = MountBindOptions {
                propagation,
                non_recursive,
                create_mountpoint: flag("bind-create-src"),
                read_only_non_recursive: ro_non_recursive,
                read_only_force_recursive: ro_force_recursive,
            };
            if b != MountBindOptions::default() {
                out.bind_options = Some(b);
            }
        }
        MountType::VOLUME => {
            let kv = |s: &str| -> HashMap<String, String> {
                s.split(',')
                    .filter(|x| !x.is_empty())
                    .map(|x| match x.split_once('=') {
                        Some((k, v)) => (k.to_string(), v.to_string()),
                        None => (x.to_string(), String::new()),
                    })
                    .collect()
            };
            let driver = opt("volume-driver").map(str::to_string);
            let driver_opts = opt("volume-opt").map(kv);
            let v = MountVolumeOptions {
                no_copy: flag("volume-nocopy"),
                labels: opt("volume-label").map(kv),
                driver_config: (driver.is_some() || driver_opts.is_some()).then_some(
                    MountVolumeOptionsDriverConfig {
                        name: driver,
                        options: driver_opts,
                    },
                ),
                subpath: opt("volume-subpath").map(str::to_string),
            };
            if v != MountVolumeOptions::default() {
                out.volume_options = Some(v);
            }
        }
        MountType::TMPFS => {
            let size =
                match opt("tmpfs-size") {
                    None => None,
                    Some(s) => Some(parse_size(s).ok_or_else(|| {
                        format!("mount to {}: invalid tmpfs-size {s:?}", m.target)
                    })?),
                };
            let mode = match opt("tmpfs-mode") {
                None => None,
                Some(s) => Some(i64::from_str_radix(s.trim_start_matches("0o"), 8).map_err(
                    |_| {
                        format!(
                            "mount to {}: invalid tmpfs-mode {s:?}; expected octal such as 1777",
                            m.target
                        )
                    },
                )?),
            };
            if size.is_some() || mode.is_some() {
                out.tmpfs_options = Some(MountTmpfsOptions {
                    size_bytes: size,
                    mode,
                    options: None,
                });
            }
        }
        MountType::IMAGE => {
            if let Some(sp) = opt("image-subpath") {
                out.image_options = Some(MountImageOptions {
                    subpath: Some(sp.to_string()),
                });
            }
        }
        _ => {}
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job() -> JobSpec {
        JobSpec {
            run_id: "r1".into(),
            run_name: "n".into(),
            project: "p".into(),
            entity: "e".into(),
            queue: "e/q".into(),
            agent_name: "a".into(),
            image: Some("img".into()),
            entry_point: None,
            args: vec!["x".into()],
            env: [("HOIST_RUN_ID", "r1"), ("EPOCHS", "10")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            resource_config: json!({}),
            labels: BTreeMap::from([("hoist.run-id".to_string(), "r1".to_string())]),
            source: None,
        }
    }

    fn prep(config: serde_json::Value) -> Result<Prepared, String> {
        let o = hoist_core::resource::docker::parse(&config).expect("valid config");
        let agent_env = HostEnv::from_vars([
            ("PLAIN_ME", "passed"),
            ("HF_TOKEN", "secret"),
            ("DB_URL", "postgres://app:pw@db/app"),
            ("ALLOWED_URL", "postgres://app:pw@db/app"),
        ]);
        prepare(
            &job(),
            "img",
            &o,
            &agent_env,
            &["ALLOWED_TOKEN".to_string(), "ALLOWED_URL".to_string()],
        )
    }

    #[test]
    fn env_precedence_and_passthrough() {
        let p = prep(json!({"env": ["HOIST_RUN_ID=x", "EPOCHS=5", "PLAIN_ME", "HF_TOKEN", "DB_URL", "ALLOWED_URL", "UNSET_VAR", "A=1"]})).unwrap();
        let env = p.body.env.unwrap();
        assert_eq!(
            env,
            [
                "EPOCHS=5",
                "HOIST_RUN_ID=r1",
                "PLAIN_ME=passed",
                "ALLOWED_URL=postgres://app:pw@db/app",
                "A=1"
            ]
        );
        assert!(
            p.notes
                .iter()
                .any(|n| n.contains("DB_URL") && n.contains("looks like a credential")),
            "{:?}",
            p.notes
        );
        assert!(
            p.notes.iter().any(|n| n.contains("HOIST_RUN_ID ignored")),
            "{:?}",
            p.notes
        );
        assert!(
            p.notes
                .iter()
                .any(|n| n.contains("HF_TOKEN") && n.contains("env-allow-list")),
            "{:?}",
            p.notes
        );
    }

    #[test]
    fn labels_entrypoint_ports_security() {
        let p = prep(json!({
            "label": ["hoist.run-id=spoof", "team=ml"],
            "entrypoint": "",
            "publish": ["127.0.0.1:8000-8001:80-81/udp", "9000"],
            "security-opt": ["systempaths=unconfined", "no-new-privileges", "apparmor:unconfined"],
            "gpus": "device=0,1",
            "name": "mine",
        }))
        .unwrap();
        let b = p.body;
        let labels = b.labels.unwrap();
        assert_eq!(labels["hoist.run-id"], "r1");
        assert_eq!(labels["hoist.agent"], "a");
        assert_eq!(labels["team"], "ml");
        assert_eq!(b.entrypoint, Some(vec![String::new()]));
        assert_eq!(b.cmd, Some(vec!["x".to_string()]));
        let hc = b.host_config.unwrap();
        let pb = hc.port_bindings.unwrap();
        let one = |k: &str| pb[k].clone().unwrap()[0].clone();
        assert_eq!(one("80/udp").host_port.as_deref(), Some("8000"));
        assert_eq!(one("81/udp").host_port.as_deref(), Some("8001"));
        assert_eq!(one("81/udp").host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(one("9000/tcp").host_port, None);
        assert_eq!(
            hc.security_opt,
            Some(vec![
                "no-new-privileges=true".to_string(),
                "apparmor=unconfined".to_string()
            ])
        );
        assert_eq!(hc.masked_paths, Some(vec![]));
        assert_eq!(hc.readonly_paths, Some(vec![]));
        let gpu = &hc.device_requests.unwrap()[0];
        assert_eq!(gpu.device_ids, Some(vec!["0".to_string(), "1".to_string()]));
        assert_eq!(gpu.capabilities, Some(vec![vec!["gpu".to_string()]]));
        assert!(p.notes.iter().any(|n| n.contains("`name: mine` ignored")));
    }

    #[test]
    fn refused_mappings() {
        let e = prep(json!({"security-opt": ["seccomp=/etc/profile.json"]}))
            .err()
            .unwrap();
        assert!(e.contains("does not read seccomp profile files"), "{e}");
        let e = prep(json!({"network-alias": ["x"]})).err().unwrap();
        assert!(e.contains("network-alias"), "{e}");
    }

    #[test]
    fn names_and_ports() {
        assert_eq!(container_name("01HX-abc_d.e"), "hoist-01HX-abc_d.e");
        assert_eq!(container_name("a/b c"), "hoist-a-b-c");
        assert_eq!(expand("8000-8002").unwrap(), vec![8000, 8001, 8002]);
        assert_eq!(expand("80").unwrap(), vec![80]);
        assert!(expand("0").is_err());
        assert!(expand("9-8").is_err());
    }
}
