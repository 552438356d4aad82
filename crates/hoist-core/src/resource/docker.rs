//! The `docker` queue config: the named options of `docker run`, as W&B Launch takes
//! them, applied by the agent through the Docker Engine API.
//!
//! ```yaml
//! env:                      # list of "NAME=VALUE" / "NAME", or a map
//!   - WANDB_PROJECT=${project_name}
//! volume:                   # alias: volumes, v
//!   - /data/datasets:/datasets:ro
//! gpus: all                 # or 2, or "device=0,1"
//! memory: 16g
//! cpus: 4
//! shm-size: 2g
//! network: none
//! ```
//!
//! Keys are the long option names of `docker run` in kebab-case; the snake_case
//! spelling is the same key (`shm_size`), and so are the plural spellings `volumes`,
//! `labels`, `devices`, `mounts`, `ulimits`, `sysctls` and the one-letter short options
//! (`e`, `v`, `l`, `m`, `u`, `w`, `h`, `p`, `c`, `P`). A repeatable option takes one
//! value or a list. Options of the CLI itself that make no sense for an agent
//! (`detach`, `interactive`, `tty`, `env-file`, `pull`, …) are refused with the
//! reason. `restart` accepts only `"no"`: the agent supervises the container and
//! reports its exit, and a restart policy would restart a failed run behind its back
//! (re-running a run is the queue's business). `rm` is accepted and ignored: the agent
//! removes each container itself once it has collected its logs.
//!
//! The check covers shape and format only. [`privileged_options`] lists every option
//! that gives a run more than an ordinary container (privileged mode, added
//! capabilities, host namespaces, devices, unconfined security options, host paths,
//! volume driver options, a cgroup parent, a runtime, network sysctls): the server
//! refuses a queue config holding one unless an admin allows it, and the agent runs it
//! only when its own config allows it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use super::ConfigProblem;
use super::path::index_path;
use super::schema::{Checker, Got, KeyStyle, env_entries, has_macro, quote};

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static regex")
}

static SIZE: LazyLock<Regex> =
    LazyLock::new(|| re(r"^(\d+(?:\.\d+)?) ?([kKmMgGtTpP])?[iI]?[bB]?$"));
static CONTAINER_NAME: LazyLock<Regex> = LazyLock::new(|| re(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$"));
static VOLUME_NAME: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"));
static HOSTNAME: LazyLock<Regex> =
    LazyLock::new(|| re(r"^[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?$"));
static PLATFORM: LazyLock<Regex> =
    LazyLock::new(|| re(r"^[a-z0-9_]+(/[a-z0-9_]+(/[a-z0-9_]+)?)?$"));
static SIGNAL: LazyLock<Regex> = LazyLock::new(|| re(r"^([0-9]+|(SIG)?[A-Z][A-Z0-9+-]*)$"));
static CPUSET: LazyLock<Regex> = LazyLock::new(|| re(r"^\d+(-\d+)?(,\d+(-\d+)?)*$"));
static DURATION: LazyLock<Regex> = LazyLock::new(|| re(r"^((\d+(\.\d+)?)(ns|us|µs|ms|s|m|h))+$"));
static DURATION_PART: LazyLock<Regex> = LazyLock::new(|| re(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)"));
static CGROUP_RULE: LazyLock<Regex> = LazyLock::new(|| re(r"^[acb] (\d+|\*):(\d+|\*) [rwm]{1,3}$"));
static PORTS: LazyLock<Regex> = LazyLock::new(|| re(r"^(\d+)(?:-(\d+))?$"));

/// Every option a docker queue config may hold, by its canonical (kebab-case) name.
pub const OPTIONS: &[&str] = &[
    "add-host",
    "blkio-weight",
    "cap-add",
    "cap-drop",
    "cgroup-parent",
    "cgroupns",
    "cpu-period",
    "cpu-quota",
    "cpu-shares",
    "cpus",
    "cpuset-cpus",
    "cpuset-mems",
    "device",
    "device-cgroup-rule",
    "dns",
    "dns-option",
    "dns-search",
    "domainname",
    "entrypoint",
    "env",
    "expose",
    "gpus",
    "group-add",
    "health-cmd",
    "health-interval",
    "health-retries",
    "health-start-period",
    "health-timeout",
    "hostname",
    "init",
    "ipc",
    "label",
    "log-driver",
    "log-opt",
    "memory",
    "memory-reservation",
    "memory-swap",
    "memory-swappiness",
    "mount",
    "name",
    "network",
    "network-alias",
    "no-healthcheck",
    "oom-kill-disable",
    "oom-score-adj",
    "pid",
    "pids-limit",
    "platform",
    "privileged",
    "publish",
    "publish-all",
    "read-only",
    "restart",
    "rm",
    "runtime",
    "security-opt",
    "shm-size",
    "stop-signal",
    "stop-timeout",
    "storage-opt",
    "sysctl",
    "tmpfs",
    "ulimit",
    "user",
    "userns",
    "uts",
    "volume",
    "workdir",
];

/// Other spellings of options: plurals, short options, docker's own aliases.
const ALIASES: &[(&str, &str)] = &[
    ("volumes", "volume"),
    ("labels", "label"),
    ("devices", "device"),
    ("mounts", "mount"),
    ("ulimits", "ulimit"),
    ("sysctls", "sysctl"),
    ("net", "network"),
    ("net-alias", "network-alias"),
    ("dns-opt", "dns-option"),
    ("e", "env"),
    ("v", "volume"),
    ("l", "label"),
    ("m", "memory"),
    ("u", "user"),
    ("w", "workdir"),
    ("h", "hostname"),
    ("p", "publish"),
    ("c", "cpu-shares"),
    ("P", "publish-all"),
];

/// `docker run` options refused with a reason.
fn refused(option: &str) -> Option<String> {
    let why = match option {
        "detach" | "d" => {
            "the agent always starts the container in the background and supervises it"
        }
        "interactive" | "i" | "tty" | "t" | "attach" | "a" | "sig-proxy" | "detach-keys" => {
            "jobs run without a terminal; the agent streams their logs"
        }
        "cidfile" => "the agent tracks the container itself",
        "env-file" => "files on the agent's machine are not read; list the variables under `env`",
        "label-file" => "files on the agent's machine are not read; list the labels under `label`",
        "pull" => "the agent pulls or builds the run's image itself",
        "image" => "the image comes from the job or the run, not from the queue",
        "disable-content-trust" | "quiet" | "q" | "help" => {
            "it is an option of the docker CLI, not of the container"
        }
        "link" => "legacy container links are not supported; use a user-defined network",
        "volumes-from" => "mounting the volumes of another container is not supported",
        _ => return None,
    };
    Some(format!("`{option}` is not supported: {why}"))
}

// ---------------------------------------------------------------------------------
// Typed options

/// A `--volume`: `[source:]target[:options]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    /// A host path or a named volume; `None` for an anonymous volume.
    pub source: Option<String>,
    /// The absolute path in the container.
    pub target: String,
    /// Mount options (`ro`, `z`, `rshared`, `nocopy`, …), as written.
    pub options: Vec<String>,
}

impl VolumeMount {
    /// True when the source is a path on the host rather than a named volume.
    pub fn is_host_path(&self) -> bool {
        self.source.as_deref().is_some_and(is_host_path)
    }

    /// True when mounted read-only.
    pub fn read_only(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }

    /// The Engine API `HostConfig.Binds` entry (`src:dst[:opts]`), for a volume with a
    /// source.
    pub fn bind(&self) -> Option<String> {
        let src = self.source.as_deref()?;
        Some(if self.options.is_empty() {
            format!("{src}:{}", self.target)
        } else {
            format!("{src}:{}:{}", self.target, self.options.join(","))
        })
    }
}

/// A `--mount`: `type=bind,source=/a,target=/b,readonly`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `bind`, `volume`, `tmpfs`, `image`, … (`volume` when not given).
    pub kind: String,
    pub source: Option<String>,
    pub target: String,
    pub read_only: bool,
    /// Every other `key=value` (`bind-propagation`, `volume-opt`, `tmpfs-size`, …).
    pub options: BTreeMap<String, String>,
}

/// A `--gpus` request, as the Engine API's `DeviceRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuRequest {
    /// Number of GPUs; `-1` for all. `None` when devices are named.
    pub count: Option<i64>,
    /// Device ids or UUIDs (`device=0,1`).
    pub device_ids: Vec<String>,
    /// Capabilities; `["gpu"]` unless given.
    pub capabilities: Vec<String>,
    /// The device driver, when given (`driver=nvidia`).
    pub driver: Option<String>,
}

/// A `--ulimit`: `nofile=1024:2048`. `-1` is unlimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

/// A `--publish`: `[ip:][host_port:]container_port[/protocol]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortBinding {
    pub host_ip: Option<String>,
    /// A port or a range (`8000-8010`); `None` lets the daemon choose.
    pub host_port: Option<String>,
    /// A port or a range.
    pub container_port: String,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
}

/// A `--device`: `host_path[:container_path][:permissions]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMapping {
    pub path_on_host: String,
    pub path_in_container: String,
    /// Cgroup permissions, `rwm` unless given.
    pub cgroup_permissions: String,
}

/// A docker queue config, normalised: every spelling resolved, sizes in bytes, CPUs in
/// nano-CPUs, durations in nanoseconds. Options not given are `None` or empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerOptions {
    /// `--env`, in document order; `None` passes the variable through from the agent's
    /// environment (the agent decides whether it may).
    pub env: Vec<(String, Option<String>)>,
    pub volumes: Vec<VolumeMount>,
    pub mounts: Vec<Mount>,
    /// `--tmpfs`: container path and mount options (empty when none).
    pub tmpfs: Vec<(String, String)>,
    pub gpus: Option<GpuRequest>,
    /// `--memory` in bytes.
    pub memory: Option<i64>,
    /// `--memory-swap` in bytes; `-1` is unlimited.
    pub memory_swap: Option<i64>,
    pub memory_reservation: Option<i64>,
    pub memory_swappiness: Option<i64>,
    /// `--shm-size` in bytes.
    pub shm_size: Option<i64>,
    /// `--cpus` × 10⁹.
    pub nano_cpus: Option<i64>,
    pub cpu_shares: Option<i64>,
    pub cpu_period: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub blkio_weight: Option<u16>,
    pub pids_limit: Option<i64>,
    pub ulimits: Vec<Ulimit>,
    pub network: Option<String>,
    pub network_aliases: Vec<String>,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    /// `--add-host` as `host:ip`.
    pub extra_hosts: Vec<String>,
    pub dns: Vec<String>,
    pub dns_options: Vec<String>,
    pub dns_search: Vec<String>,
    /// `--expose` as `port/protocol` (`80/tcp`, `8000-8010/udp`).
    pub expose: Vec<String>,
    pub publish: Vec<PortBinding>,
    pub publish_all: bool,
    pub user: Option<String>,
    pub group_add: Vec<String>,
    pub workdir: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub labels: BTreeMap<String, String>,
    pub name: Option<String>,
    pub read_only: bool,
    pub privileged: bool,
    pub init: Option<bool>,
    /// Added capabilities, `CAP_`-prefixed upper case, or `ALL`.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub security_opts: Vec<String>,
    pub pid: Option<String>,
    pub ipc: Option<String>,
    pub uts: Option<String>,
    pub userns: Option<String>,
    pub cgroupns: Option<String>,
    pub cgroup_parent: Option<String>,
    pub devices: Vec<DeviceMapping>,
    pub device_cgroup_rules: Vec<String>,
    pub runtime: Option<String>,
    pub platform: Option<String>,
    pub stop_signal: Option<String>,
    /// Seconds.
    pub stop_timeout: Option<i64>,
    pub sysctls: BTreeMap<String, String>,
    pub log_driver: Option<String>,
    pub log_opts: BTreeMap<String, String>,
    pub storage_opts: BTreeMap<String, String>,
    pub oom_kill_disable: Option<bool>,
    pub oom_score_adj: Option<i64>,
    /// `--health-cmd`, run with the container's shell.
    pub health_cmd: Option<String>,
    /// Nanoseconds.
    pub health_interval: Option<i64>,
    pub health_timeout: Option<i64>,
    pub health_start_period: Option<i64>,
    pub health_retries: Option<i64>,
    pub no_healthcheck: bool,
}

/// What kind of privilege a [`PrivilegedUse`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PrivilegeKind {
    /// `privileged: true`.
    Privileged,
    /// An added Linux capability.
    CapAdd,
    /// A namespace of the host: `pid`, `ipc`, `uts`, `userns`, `cgroupns` or `network`
    /// set to `host`.
    HostNamespace,
    /// A namespace of another container (`container:<name>`).
    ContainerNamespace,
    /// A host device (`device`, `device-cgroup-rule`).
    Device,
    /// A security option that lifts confinement (`seccomp=unconfined`,
    /// `apparmor=unconfined`, `label=disable`, `systempaths=unconfined`,
    /// `no-new-privileges=false`).
    SecurityOpt,
    /// A volume or bind mount whose source is a path on the host.
    HostPath,
    /// A `mount` of a volume with `volume-opt` (the `local` driver mounts any host
    /// path or device with them).
    VolumeOptions,
    /// `cgroup-parent`: the container's cgroup is placed anywhere in the host's tree.
    CgroupParent,
    /// `runtime`: another OCI runtime than the daemon's default.
    Runtime,
    /// A `net.*` sysctl: with the host's network namespace it changes the host.
    Sysctl,
}

impl PrivilegeKind {
    /// A stable name: `privileged`, `cap-add`, `host-namespace`, `container-namespace`,
    /// `device`, `security-opt`, `host-path`, `volume-options`, `cgroup-parent`,
    /// `runtime`, `sysctl`.
    pub fn as_str(self) -> &'static str {
        match self {
            PrivilegeKind::Privileged => "privileged",
            PrivilegeKind::CapAdd => "cap-add",
            PrivilegeKind::HostNamespace => "host-namespace",
            PrivilegeKind::ContainerNamespace => "container-namespace",
            PrivilegeKind::Device => "device",
            PrivilegeKind::SecurityOpt => "security-opt",
            PrivilegeKind::HostPath => "host-path",
            PrivilegeKind::VolumeOptions => "volume-options",
            PrivilegeKind::CgroupParent => "cgroup-parent",
            PrivilegeKind::Runtime => "runtime",
            PrivilegeKind::Sysctl => "sysctl",
        }
    }

    /// What the option gives the run, for people.
    pub fn describe(self) -> &'static str {
        match self {
            PrivilegeKind::Privileged => {
                "runs the container privileged: every capability and every device of the host"
            }
            PrivilegeKind::CapAdd => "adds a Linux capability to the container",
            PrivilegeKind::HostNamespace => "shares a namespace of the host with the container",
            PrivilegeKind::ContainerNamespace => "joins a namespace of another container",
            PrivilegeKind::Device => "gives the container a device of the host",
            PrivilegeKind::SecurityOpt => {
                "lifts the container's confinement (seccomp, AppArmor, SELinux or masked paths)"
            }
            PrivilegeKind::HostPath => "mounts a path of the host into the container",
            PrivilegeKind::VolumeOptions => {
                "passes volume driver options, with which the local driver mounts any host path or device"
            }
            PrivilegeKind::CgroupParent => {
                "places the container's cgroup anywhere in the host's cgroup tree"
            }
            PrivilegeKind::Runtime => {
                "runs the container with another OCI runtime than the daemon's default"
            }
            PrivilegeKind::Sysctl => {
                "sets a network sysctl (which changes the host when the network is the host's)"
            }
        }
    }
}

/// One privileged option in a docker config, where it is and what it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivilegedUse {
    /// Path of the value in the config (`cap_add[0]`, `volumes[1]`).
    pub path: String,
    /// The canonical option name (`cap-add`, `volume`, `pid`, …).
    pub option: &'static str,
    pub kind: PrivilegeKind,
    /// What is asked: the capability (`CAP_SYS_ADMIN`), the host path (`/var/run`),
    /// `host`, the security option, …
    pub value: String,
}

// ---------------------------------------------------------------------------------
// Entry points

/// Checks a docker queue config (macros allowed); returns every problem.
pub fn validate(config: &Value) -> Vec<ConfigProblem> {
    read(config, true).c.problems
}

/// Parses a docker config whose macros were substituted into typed options, or
/// returns every problem. (A macro left where a number is expected is a problem.)
pub fn parse(config: &Value) -> Result<DockerOptions, Vec<ConfigProblem>> {
    let r = read(config, false);
    if r.c.problems.is_empty() {
        Ok(r.options)
    } else {
        Err(r.c.problems)
    }
}

/// Every privileged option in a docker config, with its path, in document order, for
/// the agent to check against its allow-list. Works on invalid configs too (it reports
/// what it can read); call it on the config after macro substitution. A volume whose
/// source starts with a macro is reported as a possible host path.
pub fn privileged_options(config: &Value) -> Vec<PrivilegedUse> {
    read(config, true).privileged
}

/// The `env` entries that pass a variable of the agent's environment through to the
/// container (`NAME` without a value), as `(path, name)`, in document order.
pub fn env_passthrough(config: &Value) -> Vec<(String, String)> {
    let Some(obj) = config.as_object() else {
        return Vec::new();
    };
    // Every spelling counts, even one the schema refuses as a duplicate.
    obj.iter()
        .filter(|(k, _)| {
            let n = KeyStyle::Kebab.normalize(k);
            n == "env" || ALIASES.iter().any(|(a, c)| *a == n && *c == "env")
        })
        .flat_map(|(k, v)| super::schema::env_passthrough_entries(v, &super::path::key_path("", k)))
        .collect()
}

struct Reader {
    c: Checker,
    options: DockerOptions,
    privileged: Vec<PrivilegedUse>,
}

impl Reader {
    fn privilege(
        &mut self,
        path: &str,
        option: &'static str,
        kind: PrivilegeKind,
        value: impl Into<String>,
    ) {
        self.privileged.push(PrivilegedUse {
            path: path.to_string(),
            option,
            kind,
            value: value.into(),
        });
    }

    /// True when this string holds a macro that is not checked now.
    fn lenient(&self, s: &str) -> bool {
        self.c.macros && has_macro(s)
    }
}

fn read(config: &Value, macros: bool) -> Reader {
    let mut r = Reader {
        c: Checker::new(),
        options: DockerOptions::default(),
        privileged: Vec::new(),
    };
    r.c.macros = macros;
    let Some(obj) = r.c.object(config, "") else {
        return r;
    };
    let fields =
        r.c.fields_hinted(obj, "", OPTIONS, KeyStyle::Kebab, ALIASES, &refused);
    for f in &fields {
        option(&mut r, f.name, f.value, &f.path);
    }
    cross_checks(&mut r, &fields);
    super::schema::sort_problems(config, &mut r.c.problems);
    r
}

fn cross_checks(r: &mut Reader, fields: &[super::schema::Field<'_>]) {
    let path_of = |name: &str| super::schema::get(fields, name).map(|f| f.path.clone());
    let o = &r.options;
    if let Some(swap) = o.memory_swap
        && swap != -1
    {
        match o.memory {
            // A `memory` that is there but unreadable was reported already.
            None if super::schema::get(fields, "memory").is_none() => {
                let p = path_of("memory-swap").unwrap_or_default();
                r.c.report(&p, "needs `memory` to be set too");
            }
            Some(mem) if swap < mem => {
                let p = path_of("memory-swap").unwrap_or_default();
                r.c.report(
                    &p,
                    "must be at least `memory` (it is memory plus swap), or -1 for unlimited",
                );
            }
            _ => {}
        }
    }
    if let (Some(res), Some(mem)) = (r.options.memory_reservation, r.options.memory)
        && res > mem
    {
        let p = path_of("memory-reservation").unwrap_or_default();
        r.c.report(&p, "must not be above `memory`");
    }
    if r.options.no_healthcheck {
        for name in [
            "health-cmd",
            "health-interval",
            "health-retries",
            "health-start-period",
            "health-timeout",
        ] {
            if let Some(p) = path_of(name) {
                r.c.report(&p, "conflicts with `no-healthcheck`");
            }
        }
    }
}

/// The items of a repeatable option: a list, or one value.
fn items<'v>(v: &'v Value, path: &str) -> Vec<(&'v Value, String)> {
    match v {
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, x)| (x, index_path(path, i)))
            .collect(),
        other => vec![(other, path.to_string())],
    }
}

/// A string, or an integer written as a number (ports, ids).
fn text(c: &mut Checker, v: &Value, path: &str) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        other => {
            c.type_error(path, "string", other);
            None
        }
    }
}

fn string_items(r: &mut Reader, v: &Value, path: &str) -> Vec<(String, String)> {
    if let Value::Object(_) = v {
        r.c.type_error(path, "string or list of strings", v);
        return Vec::new();
    }
    items(v, path)
        .into_iter()
        .filter_map(|(x, p)| text(&mut r.c, x, &p).map(|s| (s, p)))
        .collect()
}

/// Docker's `RAMInBytes`: `4g`, `512m`, `1.5GiB`, `1024`.
pub fn parse_size(s: &str) -> Option<i64> {
    let caps = SIZE.captures(s.trim())?;
    let n: f64 = caps.get(1)?.as_str().parse().ok()?;
    let mult: f64 = match caps.get(2).map(|m| m.as_str().to_ascii_lowercase()) {
        None => 1.0,
        Some(u) => match u.as_str() {
            "k" => 1024f64,
            "m" => 1024f64.powi(2),
            "g" => 1024f64.powi(3),
            "t" => 1024f64.powi(4),
            _ => 1024f64.powi(5),
        },
    };
    let bytes = n * mult;
    (bytes < i64::MAX as f64).then_some(bytes as i64)
}

const SIZE_HELP: &str =
    "expected bytes as an integer, or a number with a unit b, k, m, g, t or p (such as 512m or 4g)";

fn size(c: &mut Checker, v: &Value, path: &str, allow_unlimited: bool) -> Got<i64> {
    match v {
        Value::Number(n) => match n.as_i64() {
            Some(-1) if allow_unlimited => Got::Val(-1),
            Some(b) if b >= 0 => Got::Val(b),
            _ => {
                c.report(path, format!("invalid size {n}; {SIZE_HELP}"));
                Got::Bad
            }
        },
        Value::String(s) => {
            if c.macros && has_macro(s) {
                return Got::Macro;
            }
            if allow_unlimited && s.trim() == "-1" {
                return Got::Val(-1);
            }
            match parse_size(s) {
                Some(b) => Got::Val(b),
                None => {
                    c.report(path, format!("invalid size {}; {SIZE_HELP}", quote(s)));
                    Got::Bad
                }
            }
        }
        other => {
            c.type_error(path, "size (string or integer)", other);
            Got::Bad
        }
    }
}

/// Go's `time.ParseDuration` subset docker uses: `30s`, `1m30s`, `500ms`.
pub fn parse_duration(s: &str) -> Option<i64> {
    if !DURATION.is_match(s) {
        return None;
    }
    let mut total = 0f64;
    for caps in DURATION_PART.captures_iter(s) {
        let n: f64 = caps[1].parse().ok()?;
        let unit = match &caps[2] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            _ => 3600e9,
        };
        total += n * unit;
    }
    (total < i64::MAX as f64).then_some(total as i64)
}

fn duration(c: &mut Checker, v: &Value, path: &str) -> Option<i64> {
    c.formatted(v, path, |s| {
        parse_duration(s).map(|_| ()).ok_or_else(|| {
            format!(
                "invalid duration {}; expected a duration such as 30s, 1m30s or 500ms",
                quote(s)
            )
        })
    })
    .ok()
    .and_then(parse_duration)
}

/// An optional string whose format `check` accepts.
fn checked_string(
    r: &mut Reader,
    v: &Value,
    path: &str,
    check: impl FnOnce(&str) -> Result<(), String>,
) -> Option<String> {
    match r.c.formatted(v, path, check) {
        Got::Val(s) => Some(s.to_string()),
        Got::Macro => v.as_str().map(str::to_string),
        Got::Bad => None,
    }
}

fn is_host_path(source: &str) -> bool {
    source.starts_with('/')
        || source.starts_with('~')
        || source.starts_with('.')
        || source.starts_with("${")
}

fn absolute(what: &str, s: &str) -> Result<(), String> {
    if s.starts_with('/') {
        Ok(())
    } else {
        Err(format!(
            "{what} must be an absolute path, found {}",
            quote(s)
        ))
    }
}

fn key_values(
    r: &mut Reader,
    v: &Value,
    path: &str,
    value_required: bool,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Value::Object(m) = v {
        for (k, val) in m {
            let p = super::path::key_path(path, k);
            match val {
                Value::String(s) => {
                    out.insert(k.clone(), s.clone());
                }
                Value::Number(_) | Value::Bool(_) => {
                    out.insert(k.clone(), val.to_string());
                }
                Value::Null if !value_required => {
                    out.insert(k.clone(), String::new());
                }
                other => r.c.type_error(&p, "string", other),
            }
        }
        return out;
    }
    for (s, p) in string_items(r, v, path) {
        match s.split_once('=') {
            Some((k, val)) if !k.is_empty() => {
                out.insert(k.to_string(), val.to_string());
            }
            None if !value_required && !s.is_empty() => {
                out.insert(s, String::new());
            }
            _ => {
                r.c.report(&p, format!("expected \"KEY=VALUE\", found {}", quote(&s)))
            }
        }
    }
    out
}

fn namespace_mode(
    r: &mut Reader,
    option: &'static str,
    v: &Value,
    path: &str,
    allowed: &[&str],
) -> Option<String> {
    let s = checked_string(r, v, path, |s| {
        if allowed.contains(&s)
            || (allowed.contains(&"container:") && s.starts_with("container:") && s.len() > 10)
        {
            Ok(())
        } else {
            let shown: Vec<String> = allowed
                .iter()
                .map(|a| {
                    if *a == "container:" {
                        "container:<name>".to_string()
                    } else {
                        format!("{a:?}")
                    }
                })
                .collect();
            Err(format!("expected {}, found {}", shown.join(", "), quote(s)))
        }
    })?;
    if s == "host" {
        r.privilege(path, option, PrivilegeKind::HostNamespace, "host");
    } else if s.starts_with("container:") {
        r.privilege(path, option, PrivilegeKind::ContainerNamespace, s.clone());
    }
    Some(s)
}

const CAPABILITIES: &[&str] = &[
    "ALL",
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "SYSLOG",
    "WAKE_ALARM",
];

fn capabilities(r: &mut Reader, option: &'static str, v: &Value, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (s, p) in string_items(r, v, path) {
        if r.lenient(&s) {
            out.push(s);
            continue;
        }
        let upper = s.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
        if !CAPABILITIES.contains(&bare) {
            let msg = match super::schema::closest(bare, CAPABILITIES) {
                Some(c) => format!("unknown capability {}; did you mean `{c}`?", quote(&s)),
                None => format!("unknown capability {}", quote(&s)),
            };
            r.c.report(&p, msg);
            continue;
        }
        let name = if bare == "ALL" {
            "ALL".to_string()
        } else {
            format!("CAP_{bare}")
        };
        if option == "cap-add" {
            r.privilege(&p, option, PrivilegeKind::CapAdd, name.clone());
        }
        out.push(name);
    }
    out
}

fn volume(r: &mut Reader, s: &str, p: &str) -> Option<VolumeMount> {
    let lenient = r.lenient(s);
    let parts: Vec<&str> = s.split(':').collect();
    let (source, target, opts) = match parts.as_slice() {
        [t] => (None, *t, None),
        [src, t] => (Some(*src), *t, None),
        [src, t, o] => (Some(*src), *t, Some(*o)),
        _ => {
            if !lenient {
                r.c.report(
                    p,
                    format!(
                        "invalid volume {}; expected [SOURCE:]TARGET[:OPTIONS]",
                        quote(s)
                    ),
                );
            }
            return None;
        }
    };
    if let Some(src) = source
        && is_host_path(src)
    {
        r.privilege(p, "volume", PrivilegeKind::HostPath, src);
    }
    let mut problems = Vec::new();
    if let Some(src) = source
        && !(lenient && has_macro(src))
        && !is_host_path(src)
        && !VOLUME_NAME.is_match(src)
    {
        problems.push(format!(
            "invalid volume source {}: expected an absolute host path or a volume name (letters, digits, `_`, `.`, `-`)",
            quote(src)
        ));
    }
    if !(lenient && has_macro(target))
        && let Err(e) = absolute("the volume target", target)
    {
        problems.push(e);
    }
    let mut options = Vec::new();
    if let Some(o) = opts {
        const MODES: &[&str] = &[
            "ro",
            "rw",
            "z",
            "Z",
            "shared",
            "rshared",
            "slave",
            "rslave",
            "private",
            "rprivate",
            "nocopy",
            "consistent",
            "cached",
            "delegated",
        ];
        for opt in o.split(',') {
            if !(MODES.contains(&opt) || lenient && has_macro(opt)) {
                problems.push(format!(
                    "unknown volume option {}; expected {}",
                    quote(opt),
                    MODES.join(", ")
                ));
            }
            options.push(opt.to_string());
        }
        if options.iter().any(|x| x == "ro") && options.iter().any(|x| x == "rw") {
            problems.push("`ro` and `rw` cannot both be set".to_string());
        }
    }
    if source.is_none() && opts.is_none() && !target.starts_with('/') && !lenient {
        // `-v name` alone is not a mount.
        problems.clear();
        problems.push(format!(
            "invalid volume {}; expected SOURCE:TARGET[:OPTIONS] or an absolute path for an anonymous volume",
            quote(s)
        ));
    }
    let ok = problems.is_empty();
    for msg in problems {
        r.c.report(p, msg);
    }
    ok.then(|| VolumeMount {
        source: source.map(str::to_string),
        target: target.to_string(),
        options,
    })
}

fn mount(r: &mut Reader, s: &str, p: &str) -> Option<Mount> {
    const KEYS: &[&str] = &[
        "type",
        "source",
        "src",
        "target",
        "destination",
        "dst",
        "readonly",
        "ro",
        "bind-propagation",
        "bind-nonrecursive",
        "bind-recursive",
        "bind-create-src",
        "consistency",
        "volume-driver",
        "volume-label",
        "volume-nocopy",
        "volume-opt",
        "volume-subpath",
        "tmpfs-size",
        "tmpfs-mode",
        "image-subpath",
    ];
    let lenient = r.lenient(s);
    let mut m = Mount {
        kind: "volume".to_string(),
        source: None,
        target: String::new(),
        read_only: false,
        options: BTreeMap::new(),
    };
    let mut problems = Vec::new();
    for field in s.split(',') {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (field.trim(), None),
        };
        if !KEYS.contains(&k) {
            let hint = super::schema::closest(k, KEYS)
                .map(|c| format!("; did you mean `{c}`?"))
                .unwrap_or_default();
            problems.push(format!("unknown mount field `{k}`{hint}"));
            continue;
        }
        match (k, v) {
            ("type", Some(t)) => {
                if !["bind", "volume", "tmpfs", "image", "npipe", "cluster"].contains(&t)
                    && !has_macro(t)
                {
                    problems.push(format!(
                        "unknown mount type {}; expected bind, volume, tmpfs, image, npipe or cluster",
                        quote(t)
                    ));
                }
                m.kind = t.to_string();
            }
            ("source" | "src", Some(v)) => m.source = Some(v.to_string()),
            ("target" | "destination" | "dst", Some(v)) => m.target = v.to_string(),
            ("readonly" | "ro", None | Some("true" | "1")) => m.read_only = true,
            ("readonly" | "ro", Some("false" | "0")) => m.read_only = false,
            (k, Some(v)) if !matches!(k, "readonly" | "ro") => {
                m.options.insert(k.to_string(), v.to_string());
            }
            (k, None) if k.starts_with("bind-") || k == "volume-nocopy" => {
                m.options.insert(k.to_string(), "true".to_string());
            }
            (k, v) => problems.push(format!(
                "invalid value {} for mount field `{k}`",
                quote(v.unwrap_or(""))
            )),
        }
    }
    if m.target.is_empty() {
        problems.push("missing `target` (the path in the container)".to_string());
    } else if !(lenient && has_macro(&m.target))
        && let Err(e) = absolute("the mount target", &m.target)
    {
        problems.push(e);
    }
    if m.kind == "bind" {
        match &m.source {
            None => problems.push("a bind mount needs a `source`".to_string()),
            Some(src) => r.privilege(p, "mount", PrivilegeKind::HostPath, src.clone()),
        }
    }
    if let Some(opt) = m.options.get("volume-opt") {
        r.privilege(
            p,
            "mount",
            PrivilegeKind::VolumeOptions,
            format!("volume-opt={opt}"),
        );
    }
    if lenient {
        problems.clear();
    }
    let ok = problems.is_empty();
    for msg in problems {
        r.c.report(p, msg);
    }
    ok.then_some(m)
}

/// Parses a `--gpus` value: `all`, a count, or `count=N|all`, `device=0,1`,
/// `capabilities=compute,utility`, `driver=nvidia` separated by commas (docker's CSV,
/// surrounding double quotes allowed).
pub fn parse_gpus(s: &str) -> Result<GpuRequest, String> {
    let mut g = GpuRequest {
        count: None,
        device_ids: Vec::new(),
        capabilities: Vec::new(),
        driver: None,
    };
    let text = s.trim();
    if text == "all" {
        g.count = Some(-1);
        g.capabilities = vec!["gpu".into()];
        return Ok(g);
    }
    if let Ok(n) = text.parse::<i64>() {
        if n < 1 {
            return Err(format!("expected a GPU count of at least 1, found {n}"));
        }
        g.count = Some(n);
        g.capabilities = vec!["gpu".into()];
        return Ok(g);
    }
    let mut current: Option<&str> = None;
    for raw in text.split(',') {
        let token = raw.trim().trim_matches('"').trim();
        if token.is_empty() {
            return Err(format!("empty item in gpus {}", quote(s)));
        }
        match token.split_once('=') {
            Some(("count", v)) => {
                current = None;
                g.count = Some(if v == "all" {
                    -1
                } else {
                    match v.parse::<i64>() {
                        Ok(n) if n >= 1 => n,
                        _ => {
                            return Err(format!(
                                "invalid GPU count {}; expected a number of at least 1 or `all`",
                                quote(v)
                            ));
                        }
                    }
                });
            }
            Some(("device", v)) => {
                current = Some("device");
                g.device_ids.push(v.to_string());
            }
            Some(("capabilities", v)) => {
                current = Some("capabilities");
                g.capabilities.push(v.to_string());
            }
            Some(("driver", v)) => {
                current = None;
                g.driver = Some(v.to_string());
            }
            Some((k, _)) => {
                return Err(format!(
                    "unknown gpus field `{k}`; expected `count`, `device`, `capabilities` or `driver`"
                ));
            }
            None => match current {
                Some("device") => g.device_ids.push(token.to_string()),
                Some(_) => g.capabilities.push(token.to_string()),
                None => {
                    return Err(format!(
                        "invalid gpus {}; expected `all`, a count, or fields like \"device=0,1\"",
                        quote(s)
                    ));
                }
            },
        }
    }
    if g.count.is_some() && !g.device_ids.is_empty() {
        return Err("`count` and `device` cannot both be set".to_string());
    }
    if g.device_ids.iter().any(String::is_empty) {
        return Err("empty device id".to_string());
    }
    if g.count.is_none() && g.device_ids.is_empty() {
        g.count = Some(-1);
    }
    if g.capabilities.is_empty() {
        g.capabilities = vec!["gpu".into()];
    }
    Ok(g)
}

fn gpus(r: &mut Reader, v: &Value, path: &str) -> Option<GpuRequest> {
    match v {
        Value::Number(n) => match n.as_i64() {
            Some(c) if c >= 1 => Some(GpuRequest {
                count: Some(c),
                device_ids: Vec::new(),
                capabilities: vec!["gpu".into()],
                driver: None,
            }),
            _ => {
                r.c.report(
                    path,
                    format!("expected a GPU count of at least 1, found {n}"),
                );
                None
            }
        },
        Value::String(s) => {
            if r.lenient(s) {
                return None;
            }
            match parse_gpus(s) {
                Ok(g) => Some(g),
                Err(e) => {
                    r.c.report(path, e);
                    None
                }
            }
        }
        other => {
            r.c.type_error(
                path,
                "\"all\", a GPU count or a string like \"device=0,1\"",
                other,
            );
            None
        }
    }
}

fn ulimit_value(s: &str) -> Option<i64> {
    let n: i64 = s.trim().parse().ok()?;
    (n >= -1).then_some(n)
}

const ULIMITS: &[&str] = &[
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// Parses `name=soft[:hard]` (`nofile=1024:2048`).
pub fn parse_ulimit(s: &str) -> Result<Ulimit, String> {
    let Some((name, limits)) = s.split_once('=') else {
        return Err(format!(
            "invalid ulimit {}; expected NAME=SOFT[:HARD], such as nofile=1024:2048",
            quote(s)
        ));
    };
    ulimit_parts(name, limits)
}

fn ulimit_parts(name: &str, limits: &str) -> Result<Ulimit, String> {
    if !ULIMITS.contains(&name) {
        return Err(match super::schema::closest(name, ULIMITS) {
            Some(c) => format!("unknown ulimit `{name}`; did you mean `{c}`?"),
            None => format!(
                "unknown ulimit `{name}`; expected one of {}",
                ULIMITS.join(", ")
            ),
        });
    }
    let (soft, hard) = match limits.split_once(':') {
        Some((s, h)) => (ulimit_value(s), ulimit_value(h)),
        None => (ulimit_value(limits), ulimit_value(limits)),
    };
    let (Some(soft), Some(hard)) = (soft, hard) else {
        return Err(format!(
            "invalid limits {} for ulimit `{name}`; expected SOFT[:HARD] as integers (-1 for unlimited)",
            quote(limits)
        ));
    };
    if hard != -1 && (soft == -1 || soft > hard) {
        return Err(format!(
            "the soft limit {soft} of ulimit `{name}` is above its hard limit {hard}"
        ));
    }
    Ok(Ulimit {
        name: name.to_string(),
        soft,
        hard,
    })
}

fn ulimits(r: &mut Reader, v: &Value, path: &str) -> Vec<Ulimit> {
    let mut out = Vec::new();
    if let Value::Object(m) = v {
        for (name, val) in m {
            let p = super::path::key_path(path, name);
            let limits = match val {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                Value::Object(o) => {
                    let get = |k: &str| {
                        o.get(k)
                            .map(|x| x.to_string().trim_matches('"').to_string())
                    };
                    match (get("soft"), get("hard")) {
                        (Some(s), Some(h)) if o.len() == 2 => format!("{s}:{h}"),
                        _ => {
                            r.c.report(&p, "expected an object with `soft` and `hard`");
                            continue;
                        }
                    }
                }
                other => {
                    r.c.type_error(&p, "integer, \"SOFT:HARD\" string or object", other);
                    continue;
                }
            };
            if r.lenient(&limits) {
                continue;
            }
            match ulimit_parts(name, &limits) {
                Ok(u) => out.push(u),
                Err(e) => r.c.report(&p, e),
            }
        }
        return out;
    }
    for (s, p) in string_items(r, v, path) {
        if r.lenient(&s) {
            continue;
        }
        match parse_ulimit(&s) {
            Ok(u) => out.push(u),
            Err(e) => r.c.report(&p, e),
        }
    }
    out
}

fn port_range(s: &str) -> Result<(), String> {
    let caps = PORTS
        .captures(s)
        .ok_or_else(|| format!("invalid port {}", quote(s)))?;
    let lo: u32 = caps[1]
        .parse()
        .map_err(|_| format!("invalid port {}", quote(s)))?;
    let hi: u32 = match caps.get(2) {
        Some(h) => h
            .as_str()
            .parse()
            .map_err(|_| format!("invalid port {}", quote(s)))?,
        None => lo,
    };
    if lo == 0 || hi > 65535 || lo > hi {
        return Err(format!("invalid port {}; expected 1 to 65535", quote(s)));
    }
    Ok(())
}

fn split_protocol(s: &str) -> Result<(&str, String), String> {
    match s.rsplit_once('/') {
        Some((rest, proto)) => {
            let proto = proto.to_ascii_lowercase();
            if ["tcp", "udp", "sctp"].contains(&proto.as_str()) {
                Ok((rest, proto))
            } else {
                Err(format!(
                    "unknown protocol {}; expected tcp, udp or sctp",
                    quote(&proto)
                ))
            }
        }
        None => Ok((s, "tcp".to_string())),
    }
}

/// Parses `[ip:][host_port:]container_port[/protocol]` (`127.0.0.1:8080:80/tcp`,
/// `[::1]:8080:80`, `8000-8010:8000-8010`).
pub fn parse_publish(s: &str) -> Result<PortBinding, String> {
    let (rest, protocol) = split_protocol(s)?;
    let (host_ip, rest) = if let Some(after) = rest.strip_prefix('[') {
        let (ip, tail) = after
            .split_once("]:")
            .ok_or_else(|| format!("invalid published port {}", quote(s)))?;
        (Some(ip.to_string()), tail)
    } else {
        (None, rest)
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, host, container) = match (host_ip, parts.as_slice()) {
        (None, [c]) => (None, None, *c),
        (None, [h, c]) => (None, Some(*h), *c),
        (None, [ip, h, c]) => (Some(ip.to_string()), Some(*h), *c),
        (Some(ip), [h, c]) => (Some(ip), Some(*h), *c),
        _ => {
            return Err(format!(
                "invalid published port {}; expected [IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]",
                quote(s)
            ));
        }
    };
    if let Some(ip) = &ip
        && ip.parse::<IpAddr>().is_err()
    {
        return Err(format!(
            "invalid IP address {} in published port",
            quote(ip)
        ));
    }
    let host = host.filter(|h| !h.is_empty());
    if let Some(h) = host {
        port_range(h)?;
    }
    port_range(container)?;
    Ok(PortBinding {
        host_ip: ip,
        host_port: host.map(str::to_string),
        container_port: container.to_string(),
        protocol,
    })
}

/// Parses `host_path[:container_path][:permissions]`.
pub fn parse_device(s: &str) -> Result<DeviceMapping, String> {
    let valid_mode =
        |m: &str| !m.is_empty() && m.len() <= 3 && m.chars().all(|ch| "rwm".contains(ch));
    let parts: Vec<&str> = s.split(':').collect();
    let (src, dst, perms) = match parts.as_slice() {
        [src] => (*src, *src, "rwm"),
        [src, x] if valid_mode(x) => (*src, *src, *x),
        [src, dst] => (*src, *dst, "rwm"),
        [src, dst, m] => (*src, *dst, *m),
        _ => {
            return Err(format!(
                "invalid device {}; expected HOST_PATH[:CONTAINER_PATH][:PERMISSIONS]",
                quote(s)
            ));
        }
    };
    absolute("the device path", src)?;
    absolute("the device path in the container", dst)?;
    if !valid_mode(perms) {
        return Err(format!(
            "invalid device permissions {}; expected letters of rwm",
            quote(perms)
        ));
    }
    Ok(DeviceMapping {
        path_on_host: src.to_string(),
        path_in_container: dst.to_string(),
        cgroup_permissions: perms.to_string(),
    })
}

fn security_opt(r: &mut Reader, s: &str, p: &str) -> Option<String> {
    if r.lenient(s) {
        return Some(s.to_string());
    }
    let (key, value) = match s.find(['=', ':']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    const KEYS: &[&str] = &[
        "apparmor",
        "seccomp",
        "label",
        "no-new-privileges",
        "systempaths",
    ];
    if !KEYS.contains(&key) {
        let msg = match super::schema::closest(key, KEYS) {
            Some(c) => format!("unknown security option {}; did you mean `{c}`?", quote(s)),
            None => format!(
                "unknown security option {}; expected one of {}",
                quote(s),
                KEYS.join(", ")
            ),
        };
        r.c.report(p, msg);
        return None;
    }
    let lifts = match (key, value) {
        ("no-new-privileges", None | Some("true")) => false,
        ("no-new-privileges", Some("false")) => true,
        ("no-new-privileges", Some(v)) => {
            r.c.report(
                p,
                format!(
                    "invalid value {} for no-new-privileges; expected true or false",
                    quote(v)
                ),
            );
            return None;
        }
        (_, None | Some("")) => {
            r.c.report(p, format!("security option {} needs a value", quote(s)));
            return None;
        }
        ("label", Some(v)) => v == "disable",
        ("systempaths", Some(v)) => {
            if v != "unconfined" {
                r.c.report(
                    p,
                    format!(
                        "invalid value {} for systempaths; expected unconfined",
                        quote(v)
                    ),
                );
                return None;
            }
            true
        }
        (_, Some(v)) => v == "unconfined",
    };
    if lifts {
        r.privilege(p, "security-opt", PrivilegeKind::SecurityOpt, s);
    }
    Some(s.to_string())
}

/// The sysctls docker sets in a container: those of the namespaces it has. Others are
/// refused by the daemon.
fn namespaced_sysctl(k: &str) -> bool {
    matches!(
        k,
        "kernel.msgmax"
            | "kernel.msgmnb"
            | "kernel.msgmni"
            | "kernel.sem"
            | "kernel.shmall"
            | "kernel.shmmax"
            | "kernel.shmmni"
            | "kernel.shm_rmid_forced"
    ) || k.starts_with("fs.mqueue.")
        || k.starts_with("net.")
}

/// Checks each sysctl name (with its path) and reports `net.*` ones as privileged.
fn sysctls(r: &mut Reader, v: &Value, path: &str) {
    let named: Vec<(String, String, String)> = match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, val)| {
                let shown = val.as_str().map_or_else(|| val.to_string(), str::to_string);
                (k.clone(), shown, super::path::key_path(path, k))
            })
            .collect(),
        Value::Array(_) | Value::String(_) => items(v, path)
            .into_iter()
            .filter_map(|(x, p)| {
                let s = x.as_str()?;
                let (k, val) = s.split_once('=')?;
                Some((k.to_string(), val.to_string(), p))
            })
            .collect(),
        _ => Vec::new(),
    };
    for (k, val, p) in named {
        if r.lenient(&k) {
            continue;
        }
        if !namespaced_sysctl(&k) {
            r.c.report(
                &p,
                format!(
                    "`{k}` is not a sysctl docker sets in a container; expected kernel.msgmax, kernel.msgmnb, kernel.msgmni, kernel.sem, kernel.shmall, kernel.shmmax, kernel.shmmni, kernel.shm_rmid_forced, fs.mqueue.* or net.*"
                ),
            );
        } else if k.starts_with("net.") {
            r.privilege(&p, "sysctl", PrivilegeKind::Sysctl, format!("{k}={val}"));
        }
    }
}

fn int_option(r: &mut Reader, v: &Value, path: &str, min: i64, max: i64) -> Option<i64> {
    r.c.int(v, path, min, max).ok()
}

fn option(r: &mut Reader, name: &'static str, v: &Value, p: &str) {
    match name {
        "env" => r.options.env = env_entries(&mut r.c, v, p),
        "volume" => {
            for (s, ip) in string_items(r, v, p) {
                if let Some(m) = volume(r, &s, &ip) {
                    r.options.volumes.push(m);
                }
            }
        }
        "mount" => {
            for (s, ip) in string_items(r, v, p) {
                if let Some(m) = mount(r, &s, &ip) {
                    r.options.mounts.push(m);
                }
            }
        }
        "tmpfs" => {
            for (s, ip) in string_items(r, v, p) {
                let (path, opts) = s.split_once(':').unwrap_or((&s, ""));
                if !r.lenient(&s)
                    && let Err(e) = absolute("the tmpfs path", path)
                {
                    r.c.report(&ip, e);
                    continue;
                }
                r.options.tmpfs.push((path.to_string(), opts.to_string()));
            }
        }
        "gpus" => r.options.gpus = gpus(r, v, p),
        "memory" => {
            if let Got::Val(b) = size(&mut r.c, v, p, false) {
                if b > 0 && b < 6 * 1024 * 1024 {
                    r.c.report(p, "must be at least 6m (docker's minimum)");
                } else {
                    r.options.memory = Some(b);
                }
            }
        }
        "memory-swap" => r.options.memory_swap = size(&mut r.c, v, p, true).ok(),
        "memory-reservation" => r.options.memory_reservation = size(&mut r.c, v, p, false).ok(),
        "shm-size" => r.options.shm_size = size(&mut r.c, v, p, false).ok(),
        "memory-swappiness" => r.options.memory_swappiness = int_option(r, v, p, -1, 100),
        "cpus" => {
            let cpus = match v {
                Value::String(s) if !(r.c.macros && has_macro(s)) => {
                    match s.trim().parse::<f64>() {
                        Ok(n) if n.is_finite() => Got::Val(n),
                        _ => {
                            r.c.report(
                                p,
                                format!(
                                    "expected a number of CPUs such as 1.5, found {}",
                                    quote(s)
                                ),
                            );
                            Got::Bad
                        }
                    }
                }
                Value::String(_) => Got::Macro,
                other => r.c.number(other, p),
            };
            if let Got::Val(n) = cpus {
                if n <= 0.0 || n * 1e9 > i64::MAX as f64 {
                    r.c.report(p, format!("must be a positive number of CPUs, found {n}"));
                } else {
                    r.options.nano_cpus = Some((n * 1e9).round() as i64);
                }
            }
        }
        "cpu-shares" => r.options.cpu_shares = int_option(r, v, p, 0, i64::MAX),
        "cpu-period" => {
            if let Some(n) = int_option(r, v, p, 0, 1_000_000) {
                if n != 0 && n < 1000 {
                    r.c.report(
                        p,
                        format!("must be 0 or between 1000 and 1000000 microseconds, found {n}"),
                    );
                } else {
                    r.options.cpu_period = Some(n);
                }
            }
        }
        "cpu-quota" => {
            if let Some(n) = int_option(r, v, p, -1, i64::MAX) {
                if n > 0 && n < 1000 {
                    r.c.report(
                        p,
                        format!("must be -1, 0 or at least 1000 microseconds, found {n}"),
                    );
                } else {
                    r.options.cpu_quota = Some(n);
                }
            }
        }
        "cpuset-cpus" | "cpuset-mems" => {
            let s = checked_string(r, v, p, |s| {
                if CPUSET.is_match(s) {
                    Ok(())
                } else {
                    Err(format!(
                        "expected a list of CPUs or ranges such as 0-3,5, found {}",
                        quote(s)
                    ))
                }
            });
            if name == "cpuset-cpus" {
                r.options.cpuset_cpus = s;
            } else {
                r.options.cpuset_mems = s;
            }
        }
        "blkio-weight" => {
            if let Some(n) = int_option(r, v, p, 0, 1000) {
                if n != 0 && n < 10 {
                    r.c.report(p, format!("must be 0 or between 10 and 1000, found {n}"));
                } else {
                    r.options.blkio_weight = u16::try_from(n).ok();
                }
            }
        }
        "pids-limit" => r.options.pids_limit = int_option(r, v, p, -1, i64::MAX),
        "ulimit" => r.options.ulimits = ulimits(r, v, p),
        "network" => {
            let s = checked_string(r, v, p, |s| {
                if ["none", "host", "bridge", "default"].contains(&s)
                    || (s.starts_with("container:") && s.len() > 10)
                    || VOLUME_NAME.is_match(s)
                {
                    Ok(())
                } else {
                    Err(format!(
                        "expected none, host, bridge, container:<name> or a network name, found {}",
                        quote(s)
                    ))
                }
            });
            if let Some(s) = &s {
                if s == "host" {
                    r.privilege(p, "network", PrivilegeKind::HostNamespace, "host");
                } else if s.starts_with("container:") {
                    r.privilege(p, "network", PrivilegeKind::ContainerNamespace, s.clone());
                }
            }
            r.options.network = s;
        }
        "network-alias" => {
            r.options.network_aliases = string_items(r, v, p).into_iter().map(|(s, _)| s).collect()
        }
        "hostname" => {
            r.options.hostname = checked_string(r, v, p, |s| {
                if s.len() <= 64 && HOSTNAME.is_match(s) {
                    Ok(())
                } else {
                    Err(format!("invalid hostname {}", quote(s)))
                }
            });
        }
        "domainname" => r.options.domainname = r.c.nonempty(v, p).map(str::to_string),
        "add-host" => {
            for (s, ip) in string_items(r, v, p) {
                if r.lenient(&s) {
                    r.options.extra_hosts.push(s);
                    continue;
                }
                let split = s.find([':', '=']).map(|i| (&s[..i], &s[i + 1..]));
                match split {
                    Some((host, addr))
                        if !host.is_empty()
                            && (addr == "host-gateway" || addr.parse::<IpAddr>().is_ok()) =>
                    {
                        r.options.extra_hosts.push(format!("{host}:{addr}"));
                    }
                    _ => r.c.report(
                        &ip,
                        format!(
                            "invalid extra host {}; expected HOST:IP, such as db:10.0.0.5",
                            quote(&s)
                        ),
                    ),
                }
            }
        }
        "dns" => {
            for (s, ip) in string_items(r, v, p) {
                if !r.lenient(&s) && s.parse::<IpAddr>().is_err() {
                    r.c.report(&ip, format!("expected an IP address, found {}", quote(&s)));
                } else {
                    r.options.dns.push(s);
                }
            }
        }
        "dns-option" => {
            r.options.dns_options = string_items(r, v, p).into_iter().map(|(s, _)| s).collect()
        }
        "dns-search" => {
            r.options.dns_search = string_items(r, v, p).into_iter().map(|(s, _)| s).collect()
        }
        "expose" => {
            for (s, ip) in string_items(r, v, p) {
                if r.lenient(&s) {
                    r.options.expose.push(s);
                    continue;
                }
                match split_protocol(&s)
                    .and_then(|(port, proto)| port_range(port).map(|()| format!("{port}/{proto}")))
                {
                    Ok(e) => r.options.expose.push(e),
                    Err(e) => r.c.report(&ip, e),
                }
            }
        }
        "publish" => {
            for (s, ip) in string_items(r, v, p) {
                if r.lenient(&s) {
                    continue;
                }
                match parse_publish(&s) {
                    Ok(b) => r.options.publish.push(b),
                    Err(e) => r.c.report(&ip, e),
                }
            }
        }
        "user" => {
            let s = match v {
                Value::Number(n) if n.is_u64() => Some(n.to_string()),
                _ => r.c.nonempty(v, p).map(str::to_string),
            };
            if let Some(s) = s {
                if s.chars().any(char::is_whitespace) {
                    r.c.report(
                        p,
                        format!("invalid user {}; expected NAME|UID[:GROUP|GID]", quote(&s)),
                    );
                } else {
                    r.options.user = Some(s);
                }
            }
        }
        "group-add" => {
            r.options.group_add = string_items(r, v, p).into_iter().map(|(s, _)| s).collect()
        }
        "workdir" => {
            r.options.workdir = checked_string(r, v, p, |s| absolute("the working directory", s))
        }
        "entrypoint" => {
            r.options.entrypoint = match v {
                Value::String(s) => Some(vec![s.clone()]),
                Value::Array(_) => Some(
                    r.c.string_list(v, p)
                        .into_iter()
                        .map(str::to_string)
                        .collect(),
                ),
                other => {
                    r.c.type_error(p, "string or list of strings", other);
                    None
                }
            }
        }
        "label" => r.options.labels = key_values(r, v, p, false),
        "name" => {
            r.options.name = checked_string(r, v, p, |s| {
                if CONTAINER_NAME.is_match(s) {
                    Ok(())
                } else {
                    Err(format!(
                        "invalid container name {}; expected at least 2 letters, digits, `_`, `.` or `-`, starting with a letter or digit",
                        quote(s)
                    ))
                }
            });
        }
        "read-only" | "privileged" | "init" | "publish-all" | "oom-kill-disable"
        | "no-healthcheck" | "rm" => {
            let b = r.c.bool(v, p).ok();
            match name {
                "read-only" => r.options.read_only = b.unwrap_or(false),
                "privileged" => {
                    if b == Some(true) {
                        r.privilege(p, "privileged", PrivilegeKind::Privileged, "true");
                    }
                    r.options.privileged = b.unwrap_or(false);
                }
                "init" => r.options.init = b,
                "publish-all" => r.options.publish_all = b.unwrap_or(false),
                "oom-kill-disable" => r.options.oom_kill_disable = b,
                "no-healthcheck" => r.options.no_healthcheck = b.unwrap_or(false),
                _ => {}
            }
        }
        "restart" => {
            if let Some(s) = r.c.string(v, p)
                && s != "no"
            {
                r.c.report(
                    p,
                    format!(
                        "restart policy {} is not supported: the agent supervises the container and reports its exit; only \"no\" is accepted",
                        quote(s)
                    ),
                );
            }
        }
        "cap-add" => r.options.cap_add = capabilities(r, "cap-add", v, p),
        "cap-drop" => r.options.cap_drop = capabilities(r, "cap-drop", v, p),
        "security-opt" => {
            for (s, ip) in string_items(r, v, p) {
                if let Some(o) = security_opt(r, &s, &ip) {
                    r.options.security_opts.push(o);
                }
            }
        }
        "pid" => r.options.pid = namespace_mode(r, "pid", v, p, &["host", "container:"]),
        "ipc" => {
            r.options.ipc = namespace_mode(
                r,
                "ipc",
                v,
                p,
                &["none", "private", "shareable", "host", "container:"],
            );
        }
        "uts" => r.options.uts = namespace_mode(r, "uts", v, p, &["host"]),
        "userns" => r.options.userns = namespace_mode(r, "userns", v, p, &["host"]),
        "cgroupns" => {
            r.options.cgroupns = namespace_mode(r, "cgroupns", v, p, &["host", "private"])
        }
        "cgroup-parent" => {
            r.options.cgroup_parent = r.c.nonempty(v, p).map(str::to_string);
            if let Some(c) = &r.options.cgroup_parent {
                let c = c.clone();
                r.privilege(p, "cgroup-parent", PrivilegeKind::CgroupParent, c);
            }
        }
        "device" => {
            for (s, ip) in string_items(r, v, p) {
                let lenient = r.lenient(&s);
                match parse_device(&s) {
                    Ok(d) => {
                        r.privilege(&ip, "device", PrivilegeKind::Device, d.path_on_host.clone());
                        r.options.devices.push(d);
                    }
                    Err(_) if lenient => {
                        let host = s.split(':').next().unwrap_or_default().to_string();
                        r.privilege(&ip, "device", PrivilegeKind::Device, host);
                    }
                    Err(e) => r.c.report(&ip, e),
                }
            }
        }
        "device-cgroup-rule" => {
            for (s, ip) in string_items(r, v, p) {
                if !r.lenient(&s) && !CGROUP_RULE.is_match(&s) {
                    r.c.report(
                        &ip,
                        format!("invalid device cgroup rule {}; expected TYPE MAJOR:MINOR PERMS, such as \"c 1:3 mr\"", quote(&s)),
                    );
                    continue;
                }
                r.privilege(&ip, "device-cgroup-rule", PrivilegeKind::Device, s.clone());
                r.options.device_cgroup_rules.push(s);
            }
        }
        "runtime" => {
            r.options.runtime = r.c.nonempty(v, p).map(str::to_string);
            if let Some(rt) = &r.options.runtime {
                let rt = rt.clone();
                r.privilege(p, "runtime", PrivilegeKind::Runtime, rt);
            }
        }
        "platform" => {
            r.options.platform = checked_string(r, v, p, |s| {
                if PLATFORM.is_match(s) {
                    Ok(())
                } else {
                    Err(format!(
                        "expected OS[/ARCH[/VARIANT]] such as linux/amd64, found {}",
                        quote(s)
                    ))
                }
            });
        }
        "stop-signal" => {
            r.options.stop_signal = checked_string(r, v, p, |s| {
                if SIGNAL.is_match(s) {
                    Ok(())
                } else {
                    Err(format!(
                        "expected a signal such as SIGTERM or 15, found {}",
                        quote(s)
                    ))
                }
            });
        }
        "stop-timeout" => r.options.stop_timeout = int_option(r, v, p, -1, i64::from(i32::MAX)),
        "sysctl" => {
            r.options.sysctls = key_values(r, v, p, true);
            sysctls(r, v, p);
        }
        "log-driver" => r.options.log_driver = r.c.nonempty(v, p).map(str::to_string),
        "log-opt" => r.options.log_opts = key_values(r, v, p, true),
        "storage-opt" => r.options.storage_opts = key_values(r, v, p, true),
        "oom-score-adj" => r.options.oom_score_adj = int_option(r, v, p, -1000, 1000),
        "health-cmd" => r.options.health_cmd = r.c.nonempty(v, p).map(str::to_string),
        "health-interval" => r.options.health_interval = duration(&mut r.c, v, p),
        "health-timeout" => r.options.health_timeout = duration(&mut r.c, v, p),
        "health-start-period" => r.options.health_start_period = duration(&mut r.c, v, p),
        "health-retries" => r.options.health_retries = int_option(r, v, p, 0, i64::from(i32::MAX)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_normalises() {
        let o = parse(&json!({
            "env": {"A": "1", "B": 2, "C": null},
            "volumes": ["/data:/data:ro", "cache:/cache", "/anon"],
            "shm_size": "512m",
            "memory": "4g",
            "memory-swap": -1,
            "cpus": "1.5",
            "gpus": "\"device=0,1\",capabilities=compute,utility",
            "labels": ["a=b", "flag"],
            "entrypoint": "python",
            "ulimit": {"nofile": "1024:2048", "memlock": -1, "nproc": {"soft": 10, "hard": 20}},
            "cap_add": ["sys_ptrace", "CAP_NET_ADMIN"],
            "publish": ["127.0.0.1:6006:6006", 8888, "[::1]::80/udp"],
            "expose": [9000, "53/udp"],
            "add-host": ["db=10.0.0.5", "gw:host-gateway"],
            "health-interval": "1m30s",
            "u": 1000,
            "w": "/work",
            "net": "none",
            "tmpfs": "/tmp:size=64m",
            "device": ["/dev/fuse", "/dev/sda:/dev/xvda:r"],
            "mount": "type=bind,src=/host,dst=/in,readonly,bind-propagation=rslave",
            "rm": true,
        }))
        .unwrap();
        assert_eq!(
            o.env,
            vec![
                ("A".into(), Some("1".into())),
                ("B".into(), Some("2".into())),
                ("C".into(), None)
            ]
        );
        assert_eq!(o.volumes.len(), 3);
        assert_eq!(o.volumes[0].bind().as_deref(), Some("/data:/data:ro"));
        assert!(o.volumes[0].is_host_path() && o.volumes[0].read_only());
        assert!(!o.volumes[1].is_host_path());
        assert_eq!(o.volumes[2].source, None);
        assert_eq!(o.shm_size, Some(512 << 20));
        assert_eq!(o.memory, Some(4 << 30));
        assert_eq!(o.memory_swap, Some(-1));
        assert_eq!(o.nano_cpus, Some(1_500_000_000));
        assert_eq!(
            o.gpus,
            Some(GpuRequest {
                count: None,
                device_ids: vec!["0".into(), "1".into()],
                capabilities: vec!["compute".into(), "utility".into()],
                driver: None,
            })
        );
        assert_eq!(
            o.labels,
            BTreeMap::from([("a".into(), "b".into()), ("flag".into(), String::new())])
        );
        assert_eq!(o.entrypoint, Some(vec!["python".to_string()]));
        assert_eq!(
            o.ulimits,
            vec![
                Ulimit {
                    name: "nofile".into(),
                    soft: 1024,
                    hard: 2048
                },
                Ulimit {
                    name: "memlock".into(),
                    soft: -1,
                    hard: -1
                },
                Ulimit {
                    name: "nproc".into(),
                    soft: 10,
                    hard: 20
                },
            ]
        );
        assert_eq!(o.cap_add, ["CAP_SYS_PTRACE", "CAP_NET_ADMIN"]);
        assert_eq!(o.publish[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(o.publish[1].container_port, "8888");
        assert_eq!(o.publish[1].host_port, None);
        assert_eq!(
            o.publish[2],
            PortBinding {
                host_ip: Some("::1".into()),
                host_port: None,
                container_port: "80".into(),
                protocol: "udp".into()
            }
        );
        assert_eq!(o.expose, ["9000/tcp", "53/udp"]);
        assert_eq!(o.extra_hosts, ["db:10.0.0.5", "gw:host-gateway"]);
        assert_eq!(o.health_interval, Some(90_000_000_000));
        assert_eq!(o.user.as_deref(), Some("1000"));
        assert_eq!(o.workdir.as_deref(), Some("/work"));
        assert_eq!(o.network.as_deref(), Some("none"));
        assert_eq!(o.tmpfs, [("/tmp".to_string(), "size=64m".to_string())]);
        assert_eq!(o.devices[0].path_in_container, "/dev/fuse");
        assert_eq!(o.devices[0].cgroup_permissions, "rwm");
        assert_eq!(o.devices[1].path_in_container, "/dev/xvda");
        assert_eq!(o.devices[1].cgroup_permissions, "r");
        assert_eq!(
            o.mounts,
            [Mount {
                kind: "bind".into(),
                source: Some("/host".into()),
                target: "/in".into(),
                read_only: true,
                options: BTreeMap::from([("bind-propagation".into(), "rslave".into())]),
            }]
        );
    }

    #[test]
    fn parse_refuses_leftover_macros_where_numbers_go() {
        let problems =
            parse(&json!({"memory": "${MEM}", "cpus": "${CPUS}", "env": ["A=${B}"]})).unwrap_err();
        let msgs: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            msgs,
            [
                "memory: invalid size \"${MEM}\"; expected bytes as an integer, or a number with a unit b, k, m, g, t or p (such as 512m or 4g)",
                "cpus: expected a number of CPUs such as 1.5, found \"${CPUS}\"",
            ]
        );
        assert!(validate(&json!({"memory": "${MEM}", "cpus": "${CPUS}"})).is_empty());
    }

    #[test]
    fn value_parsers() {
        assert_eq!(parse_size("4g"), Some(4 << 30));
        assert_eq!(parse_size("1.5GiB"), Some(3 << 29));
        assert_eq!(parse_size("512 MB"), Some(512 << 20));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("10x"), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_duration("1h2m3s"), Some(3_723_000_000_000));
        assert_eq!(parse_duration("500ms"), Some(500_000_000));
        assert_eq!(parse_duration("30"), None);
        assert_eq!(parse_gpus("all").unwrap().count, Some(-1));
        assert_eq!(parse_gpus("2").unwrap().count, Some(2));
        assert_eq!(
            parse_gpus("count=all,driver=nvidia")
                .unwrap()
                .driver
                .as_deref(),
            Some("nvidia")
        );
        assert_eq!(
            parse_gpus("device=GPU-3a23c669").unwrap().device_ids,
            ["GPU-3a23c669"]
        );
        assert!(parse_gpus("0").is_err());
        assert!(parse_gpus("devices=0").is_err());
        assert!(parse_gpus("0,1").is_err());
        assert_eq!(
            parse_ulimit("nofile=1024").unwrap(),
            Ulimit {
                name: "nofile".into(),
                soft: 1024,
                hard: 1024
            }
        );
        assert!(parse_ulimit("nofile").is_err());
        assert!(parse_ulimit("nofile=a:b").is_err());
        assert!(parse_ulimit("nofile=-1:10").is_err());
        assert_eq!(
            parse_publish("8000-8010:8000-8010")
                .unwrap()
                .host_port
                .as_deref(),
            Some("8000-8010")
        );
        assert!(parse_publish("8010-8000").is_err());
        assert!(parse_publish("0").is_err());
        assert!(parse_device("dev/fuse").is_err());
        assert!(parse_device("/dev/fuse:rwx").is_err());
    }

    #[test]
    fn lists_privileged_options() {
        let config = json!({
            "privileged": true,
            "cap_add": ["SYS_ADMIN", "net_raw"],
            "cap-drop": ["ALL"],
            "pid": "host",
            "ipc": "container:other",
            "uts": "host",
            "network": "host",
            "devices": ["/dev/kvm"],
            "device-cgroup-rule": "c 10:200 rwm",
            "security-opt": ["seccomp=unconfined", "no-new-privileges:false", "label=disable", "apparmor=docker-default", "no-new-privileges"],
            "volumes": ["/var/run/docker.sock:/var/run/docker.sock", "named:/x", "~/data:/data", "./rel:/rel", "${DATA}:/d"],
            "mount": ["type=bind,source=/etc,target=/host-etc", "type=volume,source=v,target=/v"],
            "memory": "not a size",
        });
        let uses: Vec<(String, &str, &str, String)> = privileged_options(&config)
            .into_iter()
            .map(|u| (u.path, u.option, u.kind.as_str(), u.value))
            .collect();
        let want: Vec<(&str, &str, &str, &str)> = vec![
            ("privileged", "privileged", "privileged", "true"),
            ("cap_add[0]", "cap-add", "cap-add", "CAP_SYS_ADMIN"),
            ("cap_add[1]", "cap-add", "cap-add", "CAP_NET_RAW"),
            ("pid", "pid", "host-namespace", "host"),
            ("ipc", "ipc", "container-namespace", "container:other"),
            ("uts", "uts", "host-namespace", "host"),
            ("network", "network", "host-namespace", "host"),
            ("devices[0]", "device", "device", "/dev/kvm"),
            (
                "device-cgroup-rule",
                "device-cgroup-rule",
                "device",
                "c 10:200 rwm",
            ),
            (
                "security-opt[0]",
                "security-opt",
                "security-opt",
                "seccomp=unconfined",
            ),
            (
                "security-opt[1]",
                "security-opt",
                "security-opt",
                "no-new-privileges:false",
            ),
            (
                "security-opt[2]",
                "security-opt",
                "security-opt",
                "label=disable",
            ),
            ("volumes[0]", "volume", "host-path", "/var/run/docker.sock"),
            ("volumes[2]", "volume", "host-path", "~/data"),
            ("volumes[3]", "volume", "host-path", "./rel"),
            ("volumes[4]", "volume", "host-path", "${DATA}"),
            ("mount[0]", "mount", "host-path", "/etc"),
        ];
        let want: Vec<(String, &str, &str, String)> = want
            .into_iter()
            .map(|(p, o, k, v)| (p.to_string(), o, k, v.to_string()))
            .collect();
        assert_eq!(uses, want);
        assert!(
            privileged_options(&json!({"gpus": "all", "volume": "cache:/cache", "userns": ""}))
                .is_empty()
        );
        let uses: Vec<(String, &str, String)> = privileged_options(&json!({
            "cgroup-parent": "/system.slice",
            "runtime": "nvidia",
            "sysctls": {"net.core.somaxconn": 1024, "kernel.shmmax": "1"},
            "mount": "type=volume,source=v,target=/x,volume-opt=device=/dev/sda",
        }))
        .into_iter()
        .map(|u| (u.path, u.kind.as_str(), u.value))
        .collect();
        assert_eq!(
            uses,
            [
                (
                    "cgroup-parent".to_string(),
                    "cgroup-parent",
                    "/system.slice".to_string()
                ),
                ("runtime".to_string(), "runtime", "nvidia".to_string()),
                (
                    "sysctls[\"net.core.somaxconn\"]".to_string(),
                    "sysctl",
                    "net.core.somaxconn=1024".to_string()
                ),
                (
                    "mount".to_string(),
                    "volume-options",
                    "volume-opt=device=/dev/sda".to_string()
                ),
            ]
        );
    }

    #[test]
    fn only_namespaced_sysctls() {
        let uses =
            privileged_options(&json!({"sysctl": ["net.ipv4.ip_forward=1", "kernel.sem=1"]}));
        assert_eq!(uses.len(), 1);
        assert_eq!(
            (uses[0].path.as_str(), uses[0].value.as_str()),
            ("sysctl[0]", "net.ipv4.ip_forward=1")
        );
        let problems = validate(&json!({
            "sysctl": {"kernel.shmmax": "1", "fs.mqueue.msg_max": "10", "net.ipv4.tcp_syncookies": "1", "vm.swappiness": "10", "kernel.panic": "1"}
        }));
        let msgs: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(msgs.len(), 2, "{msgs:#?}");
        assert!(msgs[0].starts_with("sysctl[\"vm.swappiness\"]: `vm.swappiness` is not a sysctl docker sets in a container"), "{msgs:#?}");
        assert!(
            msgs[1].starts_with("sysctl[\"kernel.panic\"]: "),
            "{msgs:#?}"
        );
    }

    #[test]
    fn env_passthrough_entries() {
        assert_eq!(
            env_passthrough(
                &json!({"env": ["A=1", "HOME"], "e": {"B": null, "C": "x"}, "memory": "1g"})
            ),
            [
                ("env[1]".to_string(), "HOME".to_string()),
                ("e.B".to_string(), "B".to_string())
            ]
        );
        assert!(env_passthrough(&json!({"env": "A=1"})).is_empty());
        assert_eq!(env_passthrough(&json!({"env": "TOKEN"})).len(), 1);
    }
}
