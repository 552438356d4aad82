//! Reading the file's YAML tree key by key, collecting every problem.

use std::path::PathBuf;
use std::time::Duration;

use serde_saphyr::Spanned;

use super::error::{ConfigError, Origin};
use super::tree::{Node, Pos, describe, pos_of};
use super::values::{self, DURATION_FORM, REPOSITORY_FORM};
use super::{
    AcrRegistry, BuildContextStore, BuilderType, DockerSettings, EcrRegistry, EnvironmentConfig,
    EnvironmentType, GcrRegistry, KubernetesSettings, LocalProcessSettings, MaxJobs, OciRegistry,
    RegistryConfig, RegistryType,
};

/// Where a value came from, and its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct At {
    pub origin: Origin,
    pub key: String,
}

impl At {
    pub fn new(origin: Origin, key: &str) -> Self {
        At {
            origin,
            key: key.to_string(),
        }
    }

    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        self.error_key(&self.key, message)
    }

    /// The line in the file (0 when not from the file).
    pub fn line(&self) -> u32 {
        match &self.origin {
            Origin::File { line, .. } => *line,
            _ => 0,
        }
    }

    /// An error at this place about another key (e.g. a missing one).
    pub fn error_key(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            origin: self.origin.clone(),
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Val<T> {
    pub v: T,
    pub at: At,
}

/// A key's canonical spelling and the other spellings accepted.
type Spec = (&'static str, &'static [&'static str]);

const TOP: &[Spec] = &[
    ("entity", &[]),
    ("project", &[]),
    ("max_jobs", &["max-jobs"]),
    ("queues", &[]),
    ("base_url", &["base-url"]),
    ("environment", &[]),
    ("registry", &[]),
    ("builder", &[]),
    ("verbosity", &[]),
    ("max_schedulers", &["max-schedulers"]),
    ("name", &[]),
    ("docker", &[]),
    ("kubernetes", &[]),
    ("secure_mode", &["secure-mode"]),
    ("max_requeues", &["max-requeues"]),
    ("local-process", &["local_process"]),
    ("env-allow-list", &["env_allow_list"]),
    ("stopped_run_timeout", &["stopped-run-timeout"]),
    ("start_timeout", &["start-timeout"]),
    ("heartbeat_interval", &["heartbeat-interval"]),
];

const ENVIRONMENT: &[Spec] = &[("type", &[]), ("region", &[]), ("project", &[])];

const REGISTRY: &[Spec] = &[
    ("type", &[]),
    ("uri", &[]),
    ("repository", &[]),
    ("image-name", &["image_name"]),
    (
        "credentials-file",
        &["credentials_file", "secret-file", "secret_file"],
    ),
];

const BUILDER: &[Spec] = &[
    ("type", &[]),
    ("build-context-store", &["build_context_store"]),
    ("build-job-name", &["build_job_name"]),
    ("secret-name", &["secret_name"]),
    ("secret-key", &["secret_key"]),
    ("kaniko-config", &["kaniko_config"]),
    ("kaniko-image", &["kaniko_image"]),
    ("buildah-image", &["buildah_image"]),
    ("build-timeout", &["build_timeout"]),
    ("keep-build-context", &["keep_build_context"]),
    ("namespace", &[]),
    ("destination", &[]),
    ("platform", &[]),
    ("base-image", &["base_image"]),
    ("cache", &[]),
];

const DOCKER: &[Spec] = &[
    ("host", &[]),
    ("allow-privileged", &["allow_privileged"]),
    ("allow-cap-add", &["allow_cap_add"]),
    ("allow-devices", &["allow_devices"]),
    ("allow-host-network", &["allow_host_network"]),
    ("allow-host-pid", &["allow_host_pid"]),
    ("allow-host-ipc", &["allow_host_ipc"]),
    ("volume-allow-list", &["volume_allow_list"]),
];

const KUBERNETES: &[Spec] = &[
    ("kubeconfig", &[]),
    ("context", &[]),
    ("namespace", &[]),
    ("allow-privileged", &["allow_privileged"]),
    (
        "allow-privilege-escalation",
        &["allow_privilege_escalation"],
    ),
    ("allow-cap-add", &["allow_cap_add"]),
    ("allow-host-network", &["allow_host_network"]),
    ("allow-host-pid", &["allow_host_pid"]),
    ("allow-host-ipc", &["allow_host_ipc"]),
    ("host-path-allow-list", &["host_path_allow_list"]),
    ("require-non-root", &["require_non_root"]),
];

/// The top of `builder.kaniko-config`: a partial `batch/v1` Job.
const KANIKO_CONFIG: &[Spec] = &[
    ("apiVersion", &[]),
    ("kind", &[]),
    ("metadata", &[]),
    ("spec", &[]),
];

const LOCAL_PROCESS: &[Spec] = &[
    ("work-dir", &["work_dir"]),
    ("allow-env-passthrough", &["allow_env_passthrough"]),
    ("keep-failed-run-dirs", &["keep_failed_run_dirs"]),
    ("max-run-dir-bytes", &["max_run_dir_bytes"]),
];

/// A key present in a mapping.
struct Entry<'t> {
    canonical: &'static str,
    /// Where the key is, with its path as written.
    at: At,
    node: &'t Spanned<Node>,
}

impl Entry<'_> {
    /// `v`, read from this entry.
    fn val<T>(&self, v: T) -> Val<T> {
        Val {
            v,
            at: self.at.clone(),
        }
    }
}

struct Fields<'t> {
    entries: Vec<Entry<'t>>,
}

impl<'t> Fields<'t> {
    /// The entry, unless absent or null (null = not set, as in W&B).
    fn get(&self, canonical: &str) -> Option<&Entry<'t>> {
        self.entries
            .iter()
            .find(|e| e.canonical == canonical && !matches!(e.node.value, Node::Null))
    }
}

/// The state of the `environment` section.
#[derive(Debug, Clone)]
pub(crate) enum EnvState {
    Absent,
    /// Present but wrong; checks that depend on it are skipped.
    Invalid,
    Valid(EnvironmentConfig),
}

/// The `builder` section, each value checked on its own; the combination is checked
/// once flags and environment variables have had their say on `type`.
#[derive(Debug, Clone, Default)]
pub(crate) struct RawBuilder {
    pub ty: Option<Val<BuilderType>>,
    pub ty_invalid: bool,
    pub store: Option<Val<BuildContextStore>>,
    pub store_invalid: bool,
    pub build_job_name: Option<Val<String>>,
    pub secret_name: Option<Val<String>>,
    pub secret_key: Option<Val<String>>,
    pub kaniko_config: Option<Val<serde_json::Value>>,
    pub kaniko_image: Option<Val<String>>,
    pub buildah_image: Option<Val<String>>,
    pub build_timeout: Option<Val<Duration>>,
    pub keep_build_context: Option<Val<bool>>,
    pub namespace: Option<Val<String>>,
    /// `kaniko-config`'s `metadata.namespace` (W&B reads the build namespace there),
    /// taken out of `kaniko_config`: the build namespace when `namespace` is not set.
    pub kaniko_config_namespace: Option<Val<String>>,
    /// Already turned into the registry by [`Reader::read`]; kept for messages.
    pub destination: Option<Val<String>>,
    pub platform: Option<Val<String>>,
    pub base_image: Option<Val<String>>,
    pub cache: Option<Val<bool>>,
}

impl RawBuilder {
    /// The keys of the in-cluster builders (kaniko, buildah) present, with where they
    /// are: what the docker and noop builders ignore.
    pub fn in_cluster_keys_present(&self) -> Vec<&At> {
        [
            self.store.as_ref().map(|v| &v.at),
            self.build_job_name.as_ref().map(|v| &v.at),
            self.secret_name.as_ref().map(|v| &v.at),
            self.secret_key.as_ref().map(|v| &v.at),
            self.kaniko_config.as_ref().map(|v| &v.at),
            self.kaniko_image.as_ref().map(|v| &v.at),
            self.buildah_image.as_ref().map(|v| &v.at),
            self.build_timeout.as_ref().map(|v| &v.at),
            self.keep_build_context.as_ref().map(|v| &v.at),
            self.namespace.as_ref().map(|v| &v.at),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// `builder.type`'s values, for messages: `one of docker, kaniko, buildah, noop`.
pub(crate) fn builder_types() -> String {
    let names: Vec<&str> = BuilderType::ALL.iter().map(|t| t.as_str()).collect();
    format!("one of {}", names.join(", "))
}

/// The longest `builder.build-job-name`: a build Job is named
/// `<build-job-name>-<12 hex digits of the image tag>`, and a Job name that is also a
/// pod label value must not pass 63 characters.
pub(crate) const BUILD_JOB_NAME_MAX: usize = 63 - 13;

/// The longest `builder.build-timeout`.
pub(crate) const BUILD_TIMEOUT_MAX: Duration = Duration::from_secs(24 * 3600);

/// What `kubernetes.namespace` and `builder.namespace` must be.
const NAMESPACE_FORM: &str = "a DNS label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit";

/// The file, each key checked.
#[derive(Debug, Clone)]
pub(crate) struct RawConfig {
    pub entity: Option<Val<String>>,
    pub project: Option<Val<String>>,
    pub max_jobs: Option<Val<MaxJobs>>,
    pub max_schedulers: Option<Val<MaxJobs>>,
    pub queues: Option<Val<Vec<String>>>,
    pub base_url: Option<Val<String>>,
    pub name: Option<Val<String>>,
    pub environment: EnvState,
    pub registry: RegistryConfig,
    pub builder: RawBuilder,
    pub docker: DockerSettings,
    pub kubernetes: KubernetesSettings,
    pub secure_mode: Option<Val<bool>>,
    pub max_requeues: Option<Val<u32>>,
    pub local_process: LocalProcessSettings,
    pub env_allow_list: Vec<String>,
    pub stopped_run_timeout: Option<Val<Duration>>,
    pub start_timeout: Option<Val<Duration>>,
    pub heartbeat_interval: Option<Val<Duration>>,
    pub verbosity: Option<Val<u8>>,
}

impl Default for RawConfig {
    fn default() -> Self {
        RawConfig {
            entity: None,
            project: None,
            max_jobs: None,
            max_schedulers: None,
            queues: None,
            base_url: None,
            name: None,
            environment: EnvState::Absent,
            registry: RegistryConfig::Local,
            builder: RawBuilder::default(),
            docker: DockerSettings::default(),
            kubernetes: KubernetesSettings::default(),
            secure_mode: None,
            max_requeues: None,
            local_process: LocalProcessSettings::default(),
            env_allow_list: Vec::new(),
            stopped_run_timeout: None,
            start_timeout: None,
            heartbeat_interval: None,
            verbosity: None,
        }
    }
}

pub(crate) const MAX_JOBS_FORM: &str = "a positive integer, or -1 for no limit";
pub(crate) const QUEUE_FORM: &str = "QUEUE or ENTITY/QUEUE";

/// Checks a queue reference: `QUEUE` or `ENTITY/QUEUE`.
pub(crate) fn check_queue(q: &str) -> Result<(), String> {
    let check = |kind, name: &str| {
        check_name(kind, name)
            .map(drop)
            .map_err(|e| format!("{e}; expected {QUEUE_FORM}"))
    };
    match q.split_once('/') {
        Some((entity, queue)) => {
            check("entity", entity)?;
            check("queue", queue)
        }
        None => check("queue", q),
    }
}

/// A name (`entity`, `agent`, `queue`) checked by [`hoist_core::names::validate`]; the
/// error quotes it masked ([`values::shown`]).
pub(crate) fn check_name(kind: &'static str, name: &str) -> Result<String, String> {
    match hoist_core::names::validate(kind, name) {
        Ok(()) => Ok(name.to_string()),
        Err(e) => Err(format!(
            "invalid {} name {:?}: {}",
            e.kind,
            values::shown(name),
            e.why
        )),
    }
}

/// The check of a value that is valid as written or not at all: the value when
/// `valid`, else `invalid WHAT "value"; expected EXPECTED` (the value masked by
/// [`values::shown`]). For [`Reader::parsed`] and [`Reader::string_list`].
pub(crate) fn valid_if<'a>(
    valid: impl Fn(&str) -> bool + 'a,
    what: &'a str,
    expected: &'a str,
) -> impl Fn(&str) -> Result<String, String> + 'a {
    move |s| {
        if valid(s) {
            Ok(s.to_string())
        } else {
            Err(format!(
                "invalid {what} {:?}; expected {expected}",
                values::shown(s)
            ))
        }
    }
}

pub(crate) struct Reader<'f> {
    file: &'f str,
    home: Option<String>,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

fn article(env: EnvironmentType) -> &'static str {
    match env {
        EnvironmentType::Aws | EnvironmentType::Azure => "an",
        EnvironmentType::Gcp => "a",
    }
}

impl<'f> Reader<'f> {
    pub fn new(file: &'f str, home: Option<String>) -> Self {
        Reader {
            file,
            home,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn at(&self, pos: Pos, key: &str) -> At {
        At::new(
            Origin::File {
                path: self.file.to_string(),
                line: pos.line,
                column: pos.column,
            },
            key,
        )
    }

    fn err(&mut self, e: ConfigError) {
        self.errors.push(e);
    }

    fn warn(&mut self, e: ConfigError) {
        self.warnings.push(e);
    }

    fn type_error(&mut self, e: &Entry<'_>, form: &str) {
        let found = describe(&e.node.value);
        self.err(e.at.error(format!("found {found}; expected {form}")));
    }

    /// The entries of a mapping; unknown keys, keys given twice under two spellings
    /// and keys that are not strings are reported.
    fn fields<'t>(
        &mut self,
        path: &str,
        at: &At,
        node: &'t Spanned<Node>,
        specs: &[Spec],
        form: &str,
    ) -> Option<Fields<'t>> {
        let Node::Map(entries) = &node.value else {
            let found = describe(&node.value);
            self.err(at.error(format!("found {found}; expected {form}")));
            return None;
        };
        let mut out: Vec<Entry<'t>> = Vec::new();
        for (k, v) in entries {
            let kpos = pos_of(k);
            let Some(name) = k.value.scalar_text() else {
                self.err(
                    self.at(kpos, path)
                        .error("a list or a mapping cannot be a key; expected a key name"),
                );
                continue;
            };
            let spec = specs
                .iter()
                .find(|(c, aliases)| *c == name || aliases.contains(&name.as_str()));
            let Some((canonical, _)) = spec else {
                self.unknown_key(path, kpos, &name, specs);
                continue;
            };
            if let Some(prev) = out.iter().find(|e| e.canonical == *canonical) {
                let prev_line = match &prev.at.origin {
                    Origin::File { line, .. } => *line,
                    _ => 0,
                };
                let prev_key = prev.at.key.rsplit('.').next().unwrap_or("").to_string();
                self.err(self.at(kpos, &join(path, &name)).error(format!(
                    "the same key as {prev_key:?} on line {prev_line}; give only one of them"
                )));
                continue;
            }
            out.push(Entry {
                canonical,
                at: self.at(kpos, &join(path, &name)),
                node: v,
            });
        }
        Some(Fields { entries: out })
    }

    fn unknown_key(&mut self, path: &str, pos: Pos, name: &str, specs: &[Spec]) {
        let norm = name.to_ascii_lowercase().replace('-', "_");
        if path.is_empty() && matches!(norm.as_str(), "api_key" | "apikey") {
            self.err(self.at(pos, name).error(
                "credentials do not belong in launch-config.yaml; use `hoist login` \
                 (~/.config/hoist/credentials.yaml) or HOIST_API_KEY",
            ));
            return;
        }
        let all: Vec<&str> = specs
            .iter()
            .flat_map(|(c, a)| std::iter::once(*c).chain(a.iter().copied()))
            .collect();
        let message = match values::closest(name, &all) {
            Some(s) => format!("unknown key {:?}; did you mean {s:?}?", values::shown(name)),
            None => {
                let known: Vec<&str> = specs.iter().map(|(c, _)| *c).collect();
                format!(
                    "unknown key {:?}; expected one of {}",
                    values::shown(name),
                    known.join(", ")
                )
            }
        };
        self.err(self.at(pos, path).error(message));
    }

    fn string(&mut self, e: &Entry<'_>, form: &str) -> Option<Val<String>> {
        let v = match &e.node.value {
            Node::Str(s) => s.trim().to_string(),
            Node::Int(i) => i.to_string(),
            _ => {
                self.type_error(e, form);
                return None;
            }
        };
        if v.is_empty() {
            self.err(e.at.error(format!("empty value; expected {form}")));
            return None;
        }
        if let Some(p) = values::placeholder(&v) {
            self.err(e.at.error(format!(
                "{p:?} is a placeholder from the documentation; replace it with {form}"
            )));
            return None;
        }
        Some(e.val(v))
    }

    /// A string checked by `parse`, whose error is reported as is.
    fn parsed<T>(
        &mut self,
        e: &Entry<'_>,
        form: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<Val<T>> {
        let s = self.string(e, form)?;
        match parse(&s.v) {
            Ok(v) => Some(Val { v, at: s.at }),
            Err(msg) => {
                self.err(s.at.error(msg));
                None
            }
        }
    }

    fn integer(&mut self, e: &Entry<'_>, form: &str) -> Option<Val<i128>> {
        let v = match &e.node.value {
            Node::Int(i) => *i,
            Node::Str(s) if s.trim().parse::<i128>().is_ok() => s.trim().parse().ok()?,
            _ => {
                self.type_error(e, form);
                return None;
            }
        };
        Some(e.val(v))
    }

    fn boolean(&mut self, e: &Entry<'_>) -> Option<Val<bool>> {
        match &e.node.value {
            Node::Bool(b) => Some(e.val(*b)),
            _ => {
                self.type_error(e, "true or false");
                None
            }
        }
    }

    fn duration(&mut self, e: &Entry<'_>) -> Option<Val<Duration>> {
        let v = match &e.node.value {
            Node::Int(i) if *i > 0 => match u64::try_from(*i) {
                Ok(secs) => Duration::from_secs(secs),
                Err(_) => {
                    self.err(e.at.error(format!(
                        "invalid duration {i} (too long); expected {DURATION_FORM}"
                    )));
                    return None;
                }
            },
            Node::Int(i) => {
                self.err(e.at.error(format!(
                    "invalid duration {i}: must be more than zero; expected {DURATION_FORM}"
                )));
                return None;
            }
            Node::Str(s) => match values::parse_duration(s) {
                Ok(d) => d,
                Err(msg) => {
                    self.err(e.at.error(msg));
                    return None;
                }
            },
            _ => {
                self.type_error(e, DURATION_FORM);
                return None;
            }
        };
        Some(e.val(v))
    }

    /// A list of strings (`single_ok`: a lone string is a list of one), each item
    /// checked by `check`.
    fn string_list<T>(
        &mut self,
        e: &Entry<'_>,
        form: &str,
        single_ok: bool,
        mut check: impl FnMut(&str) -> Result<T, String>,
    ) -> Option<Vec<Val<T>>> {
        let items: Vec<(At, &Node)> = match &e.node.value {
            Node::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, n)| (self.at(pos_of(n), &format!("{}[{i}]", e.at.key)), &n.value))
                .collect(),
            Node::Str(_) | Node::Int(_) if single_ok => vec![(e.at.clone(), &e.node.value)],
            _ => {
                self.type_error(e, &format!("a list of {form}"));
                return None;
            }
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (at, node) in items {
            let text = match node {
                Node::Str(s) => s.trim().to_string(),
                Node::Int(i) => i.to_string(),
                other => {
                    let found = describe(other);
                    self.err(at.error(format!("found {found}; expected {form}")));
                    ok = false;
                    continue;
                }
            };
            if let Some(p) = values::placeholder(&text) {
                self.err(at.error(format!(
                    "{p:?} is a placeholder from the documentation; replace it with {form}"
                )));
                ok = false;
                continue;
            }
            match check(&text) {
                Ok(v) => out.push(Val { v, at }),
                Err(msg) => {
                    self.err(at.error(msg));
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// The values of [`Reader::string_list`] (no lone string), without their places;
    /// empty when the list is refused (the errors are recorded).
    fn list_values<T>(
        &mut self,
        e: &Entry<'_>,
        form: &str,
        check: impl FnMut(&str) -> Result<T, String>,
    ) -> Vec<T> {
        self.string_list(e, form, false, check)
            .map(|v| v.into_iter().map(|v| v.v).collect())
            .unwrap_or_default()
    }

    fn path(&mut self, e: &Entry<'_>) -> Option<Val<PathBuf>> {
        let home = self.home.clone();
        self.parsed(e, "an absolute path", |s| {
            values::parse_abs_path(s, home.as_deref())
        })
    }

    // ---------------------------------------------------------------------------------

    /// Reads the whole document.
    pub fn read(&mut self, tree: &Spanned<Node>) -> RawConfig {
        let mut raw = RawConfig::default();
        if matches!(tree.value, Node::Null) {
            return raw;
        }
        let root_at = self.at(pos_of(tree), "");
        let Some(f) = self.fields(
            "",
            &root_at,
            tree,
            TOP,
            "a mapping of agent settings (entity, max_jobs, queues, …)",
        ) else {
            return raw;
        };

        raw.entity = f
            .get("entity")
            .and_then(|e| self.parsed(e, "an entity name", |s| check_name("entity", s)));
        raw.project = f
            .get("project")
            .and_then(|e| self.parsed(e, "a project name", |s| check_name("project", s)));
        raw.max_jobs = f.get("max_jobs").and_then(|e| self.max_jobs(e));
        raw.max_schedulers = f.get("max_schedulers").and_then(|e| self.max_jobs(e));
        raw.queues = f.get("queues").and_then(|e| self.queues(e));
        raw.base_url = f
            .get("base_url")
            .and_then(|e| self.parsed(e, "the hoist server's URL", values::parse_base_url));
        raw.name = f
            .get("name")
            .and_then(|e| self.parsed(e, "an agent name", |s| check_name("agent", s)));
        raw.verbosity = f.get("verbosity").and_then(|e| self.verbosity(e));
        if let Some(e) = f.get("environment") {
            raw.environment = self.environment(e);
        }
        if let Some(e) = f.get("registry") {
            raw.registry = self.registry(e, &raw.environment);
        }
        if let Some(e) = f.get("builder") {
            raw.builder = self.builder(e);
        }
        if let Some(d) = raw.builder.destination.clone() {
            // W&B's newer spelling of the registry: read as `registry: {uri: …}`.
            match f.get("registry") {
                Some(r) => self.err(d.at.error(format!(
                    "give either registry (line {}) or builder.destination, not both; builder.destination is the registry's URI",
                    r.at.line()
                ))),
                None => {
                    raw.registry = self.registry_of(
                        d.at.clone(),
                        None,
                        Some(d),
                        None,
                        None,
                        None,
                        &raw.environment,
                    )
                }
            }
        }
        if let Some(e) = f.get("docker") {
            raw.docker = self.docker(e);
        }
        if let Some(e) = f.get("kubernetes") {
            raw.kubernetes = self.kubernetes(e);
        }
        raw.secure_mode = f.get("secure_mode").and_then(|e| self.boolean(e));
        raw.max_requeues = f.get("max_requeues").and_then(|e| self.max_requeues(e));
        if let Some(e) = f.get("local-process") {
            raw.local_process = self.local_process(e);
        }
        if let Some(e) = f.get("env-allow-list") {
            raw.env_allow_list = self.list_values(
                e,
                "environment variable names",
                valid_if(
                    values::is_env_name,
                    "environment variable name",
                    "letters, digits and '_', not starting with a digit",
                ),
            );
        }
        raw.stopped_run_timeout = f.get("stopped_run_timeout").and_then(|e| self.duration(e));
        raw.start_timeout = f.get("start_timeout").and_then(|e| self.duration(e));
        raw.heartbeat_interval = f.get("heartbeat_interval").and_then(|e| self.duration(e));
        raw
    }

    fn max_jobs(&mut self, e: &Entry<'_>) -> Option<Val<MaxJobs>> {
        let n = self.integer(e, MAX_JOBS_FORM)?;
        let parsed = i64::try_from(n.v)
            .map_err(|_| format!("{} is too large; expected {MAX_JOBS_FORM}", n.v))
            .and_then(MaxJobs::from_i64);
        match parsed {
            Ok(v) => Some(Val { v, at: n.at }),
            Err(msg) => {
                self.err(n.at.error(msg));
                None
            }
        }
    }

    fn max_requeues(&mut self, e: &Entry<'_>) -> Option<Val<u32>> {
        const FORM: &str = "an integer, 0 or more (0: a preempted run fails at once)";
        let n = self.integer(e, FORM)?;
        match u32::try_from(n.v) {
            Ok(v) => Some(Val { v, at: n.at }),
            Err(_) if n.v < 0 => {
                self.err(n.at.error(format!("invalid value {}; expected {FORM}", n.v)));
                None
            }
            Err(_) => {
                self.err(n.at.error(format!("{} is too large; expected {FORM}", n.v)));
                None
            }
        }
    }

    fn verbosity(&mut self, e: &Entry<'_>) -> Option<Val<u8>> {
        const FORM: &str = "0 (warnings), 1 (info), 2 (debug) or 3 (trace)";
        let n = self.integer(e, FORM)?;
        match u8::try_from(n.v) {
            Ok(v) if v <= 3 => Some(Val { v, at: n.at }),
            _ => {
                self.err(n.at.error(format!("invalid value {}; expected {FORM}", n.v)));
                None
            }
        }
    }

    fn queues(&mut self, e: &Entry<'_>) -> Option<Val<Vec<String>>> {
        let items = self.string_list(e, "queue names", true, |s| {
            check_queue(s).map(|()| s.to_string())
        })?;
        if items.is_empty() {
            self.err(
                e.at.error("empty list; expected at least one queue name (QUEUE or ENTITY/QUEUE)"),
            );
            return None;
        }
        let mut out: Vec<String> = Vec::new();
        for item in items {
            if out.contains(&item.v) {
                self.warn(
                    item.at
                        .error(format!("queue {:?} is listed twice; ignored", item.v)),
                );
            } else {
                out.push(item.v);
            }
        }
        Some(Val {
            v: out,
            at: e.at.clone(),
        })
    }

    fn environment(&mut self, e: &Entry<'_>) -> EnvState {
        let before = self.errors.len();
        let Some(f) = self.fields(
            "environment",
            &e.at,
            e.node,
            ENVIRONMENT,
            "a mapping such as {type: aws, region: us-east-1}",
        ) else {
            return EnvState::Invalid;
        };
        let types = "one of aws, gcp, azure";
        let ty = match f.get("type") {
            Some(t) => {
                let s = self.string(t, types);
                match s {
                    Some(s) => match EnvironmentType::parse(&s.v) {
                        Some(ty) => Some(Val { v: ty, at: s.at }),
                        None => {
                            self.err(s.at.error(format!(
                                "unknown environment {:?}; expected {types}",
                                values::shown(&s.v)
                            )));
                            None
                        }
                    },
                    None => None,
                }
            }
            None => {
                self.err(e.at.error_key("environment.type", format!("missing; expected {types}")));
                None
            }
        };
        let region = f.get("region");
        let project = f.get("project");
        let Some(ty) = ty else {
            return EnvState::Invalid;
        };
        let ignored = |r: &mut Self, entry: Option<&Entry<'_>>| {
            if let Some(entry) = entry {
                r.warn(entry.at.error(format!(
                    "not used by {} {} environment; ignored",
                    article(ty.v),
                    ty.v.as_str()
                )));
            }
        };
        let config = match ty.v {
            EnvironmentType::Aws => {
                ignored(self, project);
                let region = self.region(
                    region,
                    &ty,
                    "an AWS region such as us-east-1",
                    values::is_aws_region,
                );
                region.map(|region| EnvironmentConfig::Aws { region })
            }
            EnvironmentType::Gcp => {
                let region = self.region(
                    region,
                    &ty,
                    "a GCP region such as us-central1",
                    values::is_gcp_region,
                );
                let project = project.and_then(|p| {
                    self.parsed(
                        p,
                        "a GCP project id",
                        valid_if(
                            values::is_gcp_project,
                            "GCP project id",
                            "6 to 30 lowercase letters, digits and '-', starting with a letter",
                        ),
                    )
                });
                region.map(|region| EnvironmentConfig::Gcp {
                    region,
                    project: project.map(|p| p.v),
                })
            }
            EnvironmentType::Azure => {
                ignored(self, region);
                ignored(self, project);
                Some(EnvironmentConfig::Azure)
            }
        };
        match config {
            Some(c) if self.errors.len() == before => EnvState::Valid(c),
            _ => EnvState::Invalid,
        }
    }

    fn region(
        &mut self,
        entry: Option<&Entry<'_>>,
        ty: &Val<EnvironmentType>,
        form: &str,
        valid: fn(&str) -> bool,
    ) -> Option<String> {
        let Some(entry) = entry else {
            self.err(ty.at.error_key(
                "environment.region",
                format!(
                    "required for {} {} environment; expected {form}",
                    article(ty.v),
                    ty.v.as_str()
                ),
            ));
            return None;
        };
        self.parsed(entry, form, valid_if(valid, "region", form))
            .map(|v| v.v)
    }

    fn registry(&mut self, e: &Entry<'_>, env: &EnvState) -> RegistryConfig {
        let Some(f) = self.fields(
            "registry",
            &e.at,
            e.node,
            REGISTRY,
            "a mapping such as {type: ecr, repository: my-repo}",
        ) else {
            return RegistryConfig::Local;
        };
        let types = "one of ecr, gcr, acr, oci";
        let explicit = match f.get("type") {
            Some(t) => match self.string(t, types) {
                Some(s) => match RegistryType::parse(&s.v) {
                    Some(ty) => Some(Val { v: ty, at: s.at }),
                    None => {
                        self.err(s.at.error(format!(
                            "unknown registry type {:?}; expected {types}",
                            values::shown(&s.v)
                        )));
                        return RegistryConfig::Local;
                    }
                },
                None => return RegistryConfig::Local,
            },
            None => None,
        };
        let uri = f.get("uri").and_then(|u| self.string(u, "a registry URI"));
        let repository = f
            .get("repository")
            .and_then(|r| self.string(r, "a repository name"));
        let image_name = f
            .get("image-name")
            .and_then(|r| self.string(r, "an image name"));
        let credentials_file = f.get("credentials-file").and_then(|c| self.path(c));
        self.registry_of(
            e.at.clone(),
            explicit,
            uri,
            repository,
            image_name,
            credentials_file,
            env,
        )
    }

    /// The registry from its keys (`at`: the section, for missing keys), checked
    /// against the environment. `registry: {…}` and `builder.destination` (a lone URI)
    /// both come here.
    #[allow(clippy::too_many_arguments)]
    fn registry_of(
        &mut self,
        at: At,
        explicit: Option<Val<RegistryType>>,
        uri: Option<Val<String>>,
        repository: Option<Val<String>>,
        image_name: Option<Val<String>>,
        credentials_file: Option<Val<PathBuf>>,
        env: &EnvState,
    ) -> RegistryConfig {
        let ty = match (explicit, &uri) {
            (Some(t), _) => t,
            (None, Some(u)) => {
                let v = if values::looks_ecr(&u.v) {
                    RegistryType::Ecr
                } else if values::looks_gcr(&u.v) {
                    RegistryType::Gcr
                } else if values::looks_acr(&u.v) {
                    RegistryType::Acr
                } else {
                    RegistryType::Oci
                };
                Val {
                    v,
                    at: u.at.clone(),
                }
            }
            (None, None) => {
                self.err(at.error_key(
                    "registry.uri",
                    format!(
                        "missing; expected the URI of a registry repository ({}), or a type (ecr, gcr, acr) with its keys",
                        values::OCI_URI_FORM
                    ),
                ));
                return RegistryConfig::Local;
            }
        };
        let what = format!(
            "{} {} registry",
            if ty.v == RegistryType::Gcr { "a" } else { "an" },
            ty.v.as_str()
        );
        let ignored = |r: &mut Self, v: &Option<Val<String>>, why: &str| {
            if let Some(v) = v {
                r.warn(v.at.error(format!("not used by {what}{why}; ignored")));
            }
        };

        // The environment each cloud registry needs.
        let needs = match ty.v {
            RegistryType::Ecr => Some(EnvironmentType::Aws),
            RegistryType::Gcr => Some(EnvironmentType::Gcp),
            RegistryType::Acr => Some(EnvironmentType::Azure),
            RegistryType::Oci => None,
        };
        let mut env_config = None;
        if let Some(need) = needs {
            let hint = match need {
                EnvironmentType::Aws => "environment: {type: aws, region: REGION}",
                EnvironmentType::Gcp => {
                    "environment: {type: gcp, region: REGION, project: PROJECT}"
                }
                EnvironmentType::Azure => "environment: {type: azure}",
            };
            match env {
                EnvState::Absent => self.err(ty.at.error(format!(
                    "{what} needs {} {} environment ({hint}); none is configured",
                    article(need),
                    need.as_str()
                ))),
                EnvState::Valid(c) if c.kind() != need => self.err(ty.at.error(format!(
                    "{what} needs {} {} environment ({hint}); environment.type is {}",
                    article(need),
                    need.as_str(),
                    c.kind().as_str()
                ))),
                EnvState::Valid(c) => env_config = Some(c.clone()),
                EnvState::Invalid => {}
            }
        }
        if credentials_file.is_some() && ty.v != RegistryType::Oci {
            let cf = credentials_file.as_ref().map(|c| Val {
                v: String::new(),
                at: c.at.clone(),
            });
            ignored(self, &cf, " (its credentials come from the environment)");
        }

        let both = |r: &mut Self, uri: &Option<Val<String>>, other: &Option<Val<String>>| {
            if let (Some(_), Some(o)) = (uri, other) {
                r.err(o.at.error(format!(
                    "give either registry.uri or {}, not both",
                    o.at.key
                )));
            }
        };

        let config = match ty.v {
            RegistryType::Ecr => {
                ignored(self, &image_name, "");
                both(self, &uri, &repository);
                let env_region = match &env_config {
                    Some(EnvironmentConfig::Aws { region }) => Some(region.clone()),
                    _ => None,
                };
                if let Some(u) = &uri {
                    match values::parse_ecr_uri(&u.v) {
                        Ok(p) => {
                            if let Some(er) = &env_region
                                && *er != p.region
                            {
                                self.err(u.at.error(format!(
                                    "the URI's region {:?} does not match environment.region {er:?}",
                                    p.region
                                )));
                            }
                            Some(RegistryConfig::Ecr(EcrRegistry {
                                region: p.region,
                                account_id: Some(p.account_id),
                                repository: p.repository,
                            }))
                        }
                        Err(msg) => {
                            self.err(u.at.error(msg));
                            None
                        }
                    }
                } else if let Some(r) = &repository {
                    self.repository_name(r).map(|repository| {
                        RegistryConfig::Ecr(EcrRegistry {
                            region: env_region.clone().unwrap_or_default(),
                            account_id: None,
                            repository,
                        })
                    })
                } else {
                    self.err(ty.at.error_key(
                        "registry.repository",
                        format!(
                            "required for an ecr registry: give registry.uri ({}) or registry.repository",
                            values::ECR_URI_FORM
                        ),
                    ));
                    None
                }
            }
            RegistryType::Gcr => {
                both(self, &uri, &repository);
                let (env_region, env_project) = match &env_config {
                    Some(EnvironmentConfig::Gcp { region, project }) => {
                        (Some(region.clone()), project.clone())
                    }
                    _ => (None, None),
                };
                if let Some(u) = &uri {
                    match values::parse_gcr_uri(&u.v) {
                        Ok(p) => {
                            if let Some(er) = &env_region
                                && *er != p.region
                            {
                                self.err(u.at.error(format!(
                                    "the URI's region {:?} does not match environment.region {er:?}",
                                    p.region
                                )));
                            }
                            if let Some(ep) = &env_project
                                && *ep != p.project
                            {
                                self.err(u.at.error(format!(
                                    "the URI's project {:?} does not match environment.project {ep:?}",
                                    p.project
                                )));
                            }
                            let image = match (p.image_name, &image_name) {
                                (Some(i), None) => Some(i),
                                (None, Some(i)) => self.image_name(i),
                                (Some(_), Some(i)) => {
                                    self.err(i.at.error(
                                        "the image name is already in registry.uri; give it once",
                                    ));
                                    None
                                }
                                (None, None) => {
                                    self.err(u.at.error(format!(
                                        "no image name; expected {} (or set registry.image-name)",
                                        values::GCR_URI_FORM
                                    )));
                                    None
                                }
                            };
                            image.map(|image_name| {
                                RegistryConfig::Gcr(GcrRegistry {
                                    region: p.region,
                                    project: Some(p.project),
                                    repository: p.repository,
                                    image_name,
                                })
                            })
                        }
                        Err(msg) => {
                            self.err(u.at.error(msg));
                            None
                        }
                    }
                } else {
                    let missing = |r: &mut Self, key: &str| {
                        r.err(ty.at.error_key(
                            key,
                            format!(
                                "required for a gcr registry without registry.uri; expected registry.uri ({}) or registry.repository and registry.image-name",
                                values::GCR_URI_FORM
                            ),
                        ));
                    };
                    let repo = match &repository {
                        Some(r) if r.v.contains('/') => {
                            self.err(r.at.error(format!(
                                "invalid Artifact Registry repository {:?}; expected a name without '/' (the image goes in registry.image-name)",
                                values::shown(&r.v)
                            )));
                            None
                        }
                        Some(r) => self.repository_name(r),
                        None => {
                            missing(self, "registry.repository");
                            None
                        }
                    };
                    let image = match &image_name {
                        Some(i) => self.image_name(i),
                        None => {
                            missing(self, "registry.image-name");
                            None
                        }
                    };
                    match (repo, image) {
                        (Some(repository), Some(image_name)) => {
                            Some(RegistryConfig::Gcr(GcrRegistry {
                                region: env_region.unwrap_or_default(),
                                project: env_project,
                                repository,
                                image_name,
                            }))
                        }
                        _ => None,
                    }
                }
            }
            RegistryType::Acr => {
                ignored(
                    self,
                    &repository,
                    " (the repository is part of registry.uri)",
                );
                ignored(self, &image_name, "");
                match &uri {
                    Some(u) => match values::parse_acr_uri(&u.v) {
                        Ok((registry, repository)) => Some(RegistryConfig::Acr(AcrRegistry {
                            registry,
                            repository,
                        })),
                        Err(msg) => {
                            self.err(u.at.error(msg));
                            None
                        }
                    },
                    None => {
                        self.err(ty.at.error_key(
                            "registry.uri",
                            format!(
                                "required for an acr registry; expected {}",
                                values::ACR_URI_FORM
                            ),
                        ));
                        None
                    }
                }
            }
            RegistryType::Oci => {
                ignored(
                    self,
                    &repository,
                    " (the repository is part of registry.uri)",
                );
                ignored(self, &image_name, "");
                match &uri {
                    Some(u) => match values::parse_oci_uri(&u.v) {
                        Ok(p) => Some(RegistryConfig::Oci(OciRegistry {
                            host: p.host,
                            repository: p.repository,
                            plain_http: p.plain_http,
                            credentials_file: credentials_file.map(|c| c.v),
                        })),
                        Err(msg) => {
                            self.err(u.at.error(msg));
                            None
                        }
                    },
                    None => {
                        self.err(ty.at.error_key(
                            "registry.uri",
                            format!(
                                "required for an oci registry; expected {}",
                                values::OCI_URI_FORM
                            ),
                        ));
                        None
                    }
                }
            }
        };
        config.unwrap_or(RegistryConfig::Local)
    }

    fn repository_name(&mut self, r: &Val<String>) -> Option<String> {
        if values::is_repository_path(&r.v) && !r.v.contains(':') {
            Some(r.v.clone())
        } else {
            self.err(r.at.error(format!(
                "invalid repository name {:?}; expected {REPOSITORY_FORM}",
                values::shown(&r.v)
            )));
            None
        }
    }

    fn image_name(&mut self, i: &Val<String>) -> Option<String> {
        if values::is_repository_path(&i.v) {
            Some(i.v.clone())
        } else {
            self.err(i.at.error(format!(
                "invalid image name {:?}; expected {REPOSITORY_FORM}",
                values::shown(&i.v)
            )));
            None
        }
    }

    fn builder(&mut self, e: &Entry<'_>) -> RawBuilder {
        let mut b = RawBuilder::default();
        let Some(f) = self.fields(
            "builder",
            &e.at,
            e.node,
            BUILDER,
            "a mapping such as {type: docker}",
        ) else {
            b.ty_invalid = true;
            return b;
        };
        let types = builder_types();
        if let Some(t) = f.get("type") {
            match self.string(t, &types) {
                Some(s) => match BuilderType::parse(&s.v) {
                    Some(ty) => b.ty = Some(Val { v: ty, at: s.at }),
                    None => {
                        self.err(s.at.error(format!(
                            "unknown builder {:?}; expected {types}",
                            values::shown(&s.v)
                        )));
                        b.ty_invalid = true;
                    }
                },
                None => b.ty_invalid = true,
            }
        }
        if let Some(s) = f.get("build-context-store") {
            b.store = self.parsed(s, values::STORE_FORM, values::parse_build_context_store);
            b.store_invalid = b.store.is_none();
        }
        b.build_job_name = f.get("build-job-name").and_then(|n| {
            self.parsed(
                n,
                "a Kubernetes Job name prefix",
                valid_if(
                    |s| values::is_k8s_label(s, BUILD_JOB_NAME_MAX),
                    "Job name prefix",
                    "lowercase letters, digits and '-', starting and ending with a letter or digit, at most 50 characters (a build Job is named PREFIX-<12 hex digits>, at most 63)",
                ),
            )
        });
        b.secret_name = f.get("secret-name").and_then(|n| {
            self.parsed(
                n,
                "a Kubernetes secret name",
                valid_if(
                    values::is_k8s_name,
                    "Kubernetes secret name",
                    "lowercase letters, digits, '-' and '.'",
                ),
            )
        });
        b.secret_key = f.get("secret-key").and_then(|n| {
            self.parsed(
                n,
                "a key of the Kubernetes secret",
                valid_if(
                    values::is_k8s_secret_key,
                    "secret key",
                    "letters, digits, '-', '_' and '.'",
                ),
            )
        });
        if let Some(c) = f.get("kaniko-config") {
            if matches!(c.node.value, Node::Map(_)) {
                let (config, namespace) = self.kaniko_config(c);
                b.kaniko_config = config;
                b.kaniko_config_namespace = namespace;
            } else {
                self.type_error(c, "a mapping (a partial Kubernetes Job spec)");
            }
        }
        b.kaniko_image = f
            .get("kaniko-image")
            .and_then(|i| self.parsed(i, "an image reference", values::parse_image_ref));
        b.buildah_image = f
            .get("buildah-image")
            .and_then(|i| self.parsed(i, "an image reference", values::parse_image_ref));
        b.build_timeout = f.get("build-timeout").and_then(|t| self.build_timeout(t));
        b.keep_build_context = f.get("keep-build-context").and_then(|k| self.boolean(k));
        b.namespace = f.get("namespace").and_then(|n| self.namespace(n));
        // Checked as the registry's URI (in `read`).
        b.destination = f
            .get("destination")
            .and_then(|d| self.string(d, "an image repository URI"));
        b.platform = f
            .get("platform")
            .and_then(|p| self.parsed(p, values::PLATFORM_FORM, values::parse_platform));
        b.base_image = f
            .get("base-image")
            .and_then(|i| self.parsed(i, "an image reference", values::parse_image_ref));
        b.cache = f.get("cache").and_then(|c| self.boolean(c));
        b
    }

    /// A Kubernetes namespace (`kubernetes.namespace`, `builder.namespace`).
    fn namespace(&mut self, e: &Entry<'_>) -> Option<Val<String>> {
        self.parsed(
            e,
            "a Kubernetes namespace",
            valid_if(|s| values::is_k8s_label(s, 63), "namespace", NAMESPACE_FORM),
        )
    }

    /// `builder.build-timeout`: a duration from one second to [`BUILD_TIMEOUT_MAX`]
    /// (the build Job's `activeDeadlineSeconds`).
    fn build_timeout(&mut self, e: &Entry<'_>) -> Option<Val<Duration>> {
        let d = self.duration(e)?;
        let written = match &e.node.value {
            Node::Str(s) => format!("{:?}", values::shown(s.trim())),
            other => other.scalar_text().unwrap_or_default(),
        };
        let why = if d.v < Duration::from_secs(1) {
            "less than a second (a Job's deadline is in whole seconds)"
        } else if d.v > BUILD_TIMEOUT_MAX {
            "longer than 24h, the most a build may take"
        } else {
            return Some(d);
        };
        self.err(d.at.error(format!(
            "invalid build timeout {written}: {why}; expected {DURATION_FORM}, from 1s to 24h"
        )));
        None
    }

    /// `builder.kaniko-config` (a mapping): a partial `batch/v1` Job that the build Job
    /// is merged with. What hoist and the executor rely on is checked here, each problem
    /// with its field path (`builder.kaniko-config.spec.template.spec.containers[0].args[1]`);
    /// the rest is left to the API server. Returns the config as JSON without
    /// `metadata.name` (hoist names build Jobs; a warning says so) and
    /// `metadata.namespace` (returned apart: W&B reads the build namespace there, hoist
    /// makes it `builder.namespace`).
    fn kaniko_config(
        &mut self,
        c: &Entry<'_>,
    ) -> (Option<Val<serde_json::Value>>, Option<Val<String>>) {
        let before = self.errors.len();
        let base = c.at.key.clone();
        let mut namespace = None;
        let mut drop_name = false;
        let Node::Map(top) = &c.node.value else {
            return (None, None);
        };
        for (k, v) in top {
            let kpos = pos_of(k);
            let key = k.value.scalar_text().unwrap_or_default();
            let at = self.at(kpos, &join(&base, &key));
            match key.as_str() {
                "apiVersion" => self.fixed_value(v, &at, "batch/v1"),
                "kind" => self.fixed_value(v, &at, "Job"),
                "metadata" => {
                    let Some(meta) = self.sub_map(v, &at, "a mapping (the Job's metadata)") else {
                        continue;
                    };
                    for (mk, mv) in meta {
                        let mkey = mk.value.scalar_text().unwrap_or_default();
                        let mat = self.at(pos_of(mk), &join(&at.key, &mkey));
                        match mkey.as_str() {
                            "name" => {
                                drop_name = true;
                                self.warn(mat.error(
                                    "not used: each build Job is named <builder.build-job-name>-<12 hex digits of the image tag> (builder.build-job-name sets the prefix); ignored",
                                ));
                            }
                            "namespace" => {
                                namespace = self.config_namespace(mv, &mat);
                            }
                            "labels" | "annotations" => self.string_map(mv, &mat),
                            _ => {}
                        }
                    }
                }
                "spec" => self.kaniko_job_spec(v, &at),
                _ => self.unknown_key(&base, kpos, &key, KANIKO_CONFIG),
            }
        }
        if self.errors.len() != before {
            return (None, None);
        }
        let mut json = c.node.value.to_json();
        if let Some(meta) = json.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            if drop_name {
                meta.remove("name");
            }
            meta.remove("namespace");
        }
        (
            Some(Val {
                v: json,
                at: c.at.clone(),
            }),
            namespace,
        )
    }

    /// `kaniko-config.spec`: the pod template's metadata and containers.
    fn kaniko_job_spec(&mut self, node: &Spanned<Node>, at: &At) {
        let Some(spec) = self.sub_map(node, at, "a mapping (the Job's spec)") else {
            return;
        };
        let Some((tk, template)) = Self::entry(spec, "template") else {
            return;
        };
        let tat = self.at(pos_of(tk), &join(&at.key, "template"));
        let Some(template) = self.sub_map(template, &tat, "a mapping (the pod template)") else {
            return;
        };
        if let Some((mk, meta)) = Self::entry(template, "metadata") {
            let mat = self.at(pos_of(mk), &join(&tat.key, "metadata"));
            if let Some(meta) = self.sub_map(meta, &mat, "a mapping (the pod's metadata)") {
                for key in ["labels", "annotations"] {
                    if let Some((lk, lv)) = Self::entry(meta, key) {
                        let lat = self.at(pos_of(lk), &join(&mat.key, key));
                        self.string_map(lv, &lat);
                    }
                }
            }
        }
        let Some((pk, pod)) = Self::entry(template, "spec") else {
            return;
        };
        let pat = self.at(pos_of(pk), &join(&tat.key, "spec"));
        let Some(pod) = self.sub_map(pod, &pat, "a mapping (the pod's spec)") else {
            return;
        };
        let Some((ck, containers)) = Self::entry(pod, "containers") else {
            return;
        };
        let cat = self.at(pos_of(ck), &join(&pat.key, "containers"));
        let Node::Seq(items) = &containers.value else {
            let found = describe(&containers.value);
            self.err(cat.error(format!(
                "found {found}; expected a list of containers (the first one is the executor's)"
            )));
            return;
        };
        for (i, item) in items.iter().enumerate() {
            let iat = self.at(pos_of(item), &format!("{}[{i}]", cat.key));
            let Some(container) = self.sub_map(item, &iat, "a mapping (a container)") else {
                continue;
            };
            for (k, v) in container {
                let key = k.value.scalar_text().unwrap_or_default();
                let kat = self.at(pos_of(k), &join(&iat.key, &key));
                match key.as_str() {
                    "name" | "image" if !matches!(v.value, Node::Str(_)) => {
                        self.type_error_at(v, &kat, "a string");
                    }
                    "args" => self.kaniko_args(v, &kat),
                    "env" => self.container_env(v, &kat),
                    _ => {}
                }
            }
        }
    }

    /// A container's `args`: strings. W&B's documentation writes them `--flag=value`
    /// and its code reads `flag=value` as well; both are accepted, and a lone `--flag`.
    fn kaniko_args(&mut self, node: &Spanned<Node>, at: &At) {
        const FORM: &str = "--flag=value (or flag=value, or a lone --flag)";
        let Node::Seq(items) = &node.value else {
            self.type_error_at(
                node,
                at,
                &format!("a list of executor flags, each a string: {FORM}"),
            );
            return;
        };
        for (i, item) in items.iter().enumerate() {
            let iat = self.at(pos_of(item), &format!("{}[{i}]", at.key));
            match &item.value {
                Node::Str(s) if s.trim().is_empty() || s.trim() == "--" => {
                    self.err(iat.error(format!("empty flag; expected {FORM}")));
                }
                Node::Str(_) => {}
                other => {
                    let found = describe(other);
                    self.err(iat.error(format!(
                        "found {found}; expected an executor flag as a string: {FORM}"
                    )));
                }
            }
        }
    }

    /// A container's `env`: `{name: NAME, value: "…"}` or `{name: NAME, valueFrom: …}`.
    fn container_env(&mut self, node: &Spanned<Node>, at: &At) {
        let Node::Seq(items) = &node.value else {
            self.type_error_at(node, at, "a list of {name: NAME, value: VALUE} entries");
            return;
        };
        for (i, item) in items.iter().enumerate() {
            let iat = self.at(pos_of(item), &format!("{}[{i}]", at.key));
            let Some(entry) =
                self.sub_map(item, &iat, "a mapping such as {name: NAME, value: VALUE}")
            else {
                continue;
            };
            match Self::entry(entry, "name") {
                Some((_, n)) if matches!(&n.value, Node::Str(s) if values::is_env_name(s)) => {}
                Some((nk, n)) => {
                    let nat = self.at(pos_of(nk), &join(&iat.key, "name"));
                    match &n.value {
                        Node::Str(s) => self.err(nat.error(format!(
                            "invalid environment variable name {:?}; expected letters, digits and '_', not starting with a digit",
                            values::shown(s)
                        ))),
                        _ => self.type_error_at(n, &nat, "an environment variable name"),
                    }
                }
                None => self.err(iat.error_key(
                    &join(&iat.key, "name"),
                    "missing; expected the variable's name",
                )),
            }
            if let Some((vk, v)) = Self::entry(entry, "value")
                && !matches!(v.value, Node::Str(_) | Node::Null)
            {
                let vat = self.at(pos_of(vk), &join(&iat.key, "value"));
                self.type_error_at(v, &vat, "a string (quote numbers and booleans in YAML)");
            }
        }
    }

    /// `metadata.labels` / `annotations`: string values, none under `hoist.dev/`.
    fn string_map(&mut self, node: &Spanned<Node>, at: &At) {
        let Some(entries) = self.sub_map(node, at, "a mapping of names to strings") else {
            return;
        };
        for (k, v) in entries {
            let key = k.value.scalar_text().unwrap_or_default();
            let kat = self.at(pos_of(k), &join(&at.key, &key));
            if key.starts_with("hoist.dev/") {
                self.err(kat.error(
                    "hoist.dev/ names are hoist's own (they mark the objects the agent cleans up); use another prefix",
                ));
            } else if !matches!(v.value, Node::Str(_)) {
                self.type_error_at(v, &kat, "a string (quote numbers and booleans in YAML)");
            }
        }
    }

    /// `kaniko-config.metadata.namespace`: a namespace, as `builder.namespace`.
    fn config_namespace(&mut self, node: &Spanned<Node>, at: &At) -> Option<Val<String>> {
        match &node.value {
            Node::Str(s) if values::is_k8s_label(s.trim(), 63) => Some(Val {
                v: s.trim().to_string(),
                at: at.clone(),
            }),
            Node::Str(s) => {
                self.err(at.error(format!(
                    "invalid namespace {:?}; expected {NAMESPACE_FORM}",
                    values::shown(s)
                )));
                None
            }
            _ => {
                self.type_error_at(node, at, "a Kubernetes namespace");
                None
            }
        }
    }

    /// `apiVersion` / `kind` of kaniko-config: absent, or the one value a build Job has.
    fn fixed_value(&mut self, node: &Spanned<Node>, at: &At, want: &str) {
        match &node.value {
            Node::Str(s) if s.trim() == want => {}
            Node::Null => {}
            other => {
                let found = describe(other);
                self.err(at.error(format!(
                    "found {found}; expected {want}, or nothing: kaniko-config is merged into the build Job (apiVersion batch/v1, kind Job)"
                )));
            }
        }
    }

    /// The entries of a mapping in kaniko-config, or a type error at `at`.
    #[allow(clippy::type_complexity)]
    fn sub_map<'n>(
        &mut self,
        node: &'n Spanned<Node>,
        at: &At,
        form: &str,
    ) -> Option<&'n Vec<(Spanned<Node>, Spanned<Node>)>> {
        match &node.value {
            Node::Map(entries) => Some(entries),
            _ => {
                self.type_error_at(node, at, form);
                None
            }
        }
    }

    /// The entry `key` of a mapping's entries.
    fn entry<'n>(
        entries: &'n [(Spanned<Node>, Spanned<Node>)],
        key: &str,
    ) -> Option<(&'n Spanned<Node>, &'n Spanned<Node>)> {
        entries
            .iter()
            .find(|(k, _)| k.value.scalar_text().as_deref() == Some(key))
            .map(|(k, v)| (k, v))
    }

    fn type_error_at(&mut self, node: &Spanned<Node>, at: &At, form: &str) {
        let found = describe(&node.value);
        self.err(at.error(format!("found {found}; expected {form}")));
    }

    fn docker(&mut self, e: &Entry<'_>) -> DockerSettings {
        let mut d = DockerSettings::default();
        let Some(f) = self.fields(
            "docker",
            &e.at,
            e.node,
            DOCKER,
            "a mapping such as {allow-privileged: false}",
        ) else {
            return d;
        };
        if let Some(h) = f.get("host") {
            d.host = self
                .parsed(h, values::DOCKER_HOST_FORM, values::parse_docker_host)
                .map(|v| v.v);
        }
        let flag = |r: &mut Self, key: &str, slot: &mut bool| {
            if let Some(x) = f.get(key).and_then(|x| r.boolean(x)) {
                *slot = x.v;
            }
        };
        flag(self, "allow-privileged", &mut d.allow_privileged);
        flag(self, "allow-host-network", &mut d.allow_host_network);
        flag(self, "allow-host-pid", &mut d.allow_host_pid);
        flag(self, "allow-host-ipc", &mut d.allow_host_ipc);
        if let Some(c) = f.get("allow-cap-add") {
            d.allow_cap_add = self.list_values(c, "capability names", values::parse_capability);
        }
        let home = self.home.clone();
        if let Some(c) = f.get("allow-devices") {
            d.allow_devices = self.list_values(c, "device paths", |s| {
                let p = values::parse_abs_path(s, home.as_deref())?;
                if p.starts_with("/dev") && p != std::path::Path::new("/dev") {
                    Ok(p)
                } else {
                    Err(format!(
                        "{:?} is not a device; expected a path under /dev, such as /dev/nvidia0",
                        values::shown(s)
                    ))
                }
            });
        }
        if let Some(c) = f.get("volume-allow-list") {
            d.volume_allow_list = self.list_values(c, "absolute host paths", |s| {
                values::parse_abs_path(s, home.as_deref())
            });
        }
        d
    }

    fn kubernetes(&mut self, e: &Entry<'_>) -> KubernetesSettings {
        let mut k = KubernetesSettings::default();
        let Some(f) = self.fields(
            "kubernetes",
            &e.at,
            e.node,
            KUBERNETES,
            "a mapping such as {namespace: ml-jobs}",
        ) else {
            return k;
        };
        if let Some(p) = f.get("kubeconfig") {
            k.kubeconfig = self.path(p).map(|v| v.v);
        }
        k.context = f.get("context").and_then(|c| {
            self.parsed(c, "a context of the kubeconfig", |s| {
                if s.chars().any(char::is_control) || s.len() > 253 {
                    Err(format!(
                        "invalid context name {:?}; expected the name of a context in the kubeconfig (`kubectl config get-contexts`)",
                        values::shown(s)
                    ))
                } else {
                    Ok(s.to_string())
                }
            })
            .map(|v| v.v)
        });
        k.namespace = f
            .get("namespace")
            .and_then(|n| self.namespace(n))
            .map(|v| v.v);
        let flag = |r: &mut Self, key: &str, slot: &mut bool| {
            if let Some(x) = f.get(key).and_then(|x| r.boolean(x)) {
                *slot = x.v;
            }
        };
        flag(self, "allow-privileged", &mut k.allow_privileged);
        flag(
            self,
            "allow-privilege-escalation",
            &mut k.allow_privilege_escalation,
        );
        flag(self, "allow-host-network", &mut k.allow_host_network);
        flag(self, "allow-host-pid", &mut k.allow_host_pid);
        flag(self, "allow-host-ipc", &mut k.allow_host_ipc);
        flag(self, "require-non-root", &mut k.require_non_root);
        if let Some(c) = f.get("allow-cap-add") {
            k.allow_cap_add = self.list_values(c, "capability names", values::parse_capability);
        }
        if let Some(c) = f.get("host-path-allow-list") {
            let home = self.home.clone();
            k.host_path_allow_list = self.list_values(c, "absolute host paths", |s| {
                values::parse_abs_path(s, home.as_deref())
            });
        }
        k
    }

    fn local_process(&mut self, e: &Entry<'_>) -> LocalProcessSettings {
        let mut l = LocalProcessSettings::default();
        let Some(f) = self.fields(
            "local-process",
            &e.at,
            e.node,
            LOCAL_PROCESS,
            "a mapping such as {work-dir: /var/lib/hoist/runs}",
        ) else {
            return l;
        };
        if let Some(w) = f.get("work-dir") {
            l.work_dir = self.path(w).map(|v| v.v);
        }
        if let Some(a) = f.get("allow-env-passthrough").and_then(|a| self.boolean(a)) {
            l.allow_env_passthrough = a.v;
        }
        if let Some(k) = f.get("keep-failed-run-dirs").and_then(|k| self.boolean(k)) {
            l.keep_failed_run_dirs = k.v;
        }
        if let Some(m) = f.get("max-run-dir-bytes") {
            let size = match &m.node.value {
                Node::Int(i) => u64::try_from(*i).ok(),
                Node::Str(s) => {
                    hoist_core::resource::docker::parse_size(s).and_then(|b| u64::try_from(b).ok())
                }
                _ => None,
            };
            match size {
                Some(b) if b > 0 => l.max_run_dir_bytes = b,
                _ => self.type_error(
                    m,
                    "a positive size: bytes, or a number with a unit such as 512m or 10g",
                ),
            }
        }
        l
    }
}
