//! The `kubernetes` queue config: a `batch/v1` Job, or a custom object.
//!
//! As in W&B Launch, a Job config may leave out `apiVersion` and `kind` and hold just
//! `metadata` and `spec`; it is a partial Job that the agent deep-merges with the run's
//! (the agent fills in the image, the entrypoint, the name). So no field is required
//! here that the agent sets: a container needs neither `name` nor `image`.
//!
//! What is checked for a Job:
//! - `metadata`: `name` (a DNS subdomain of at most 63 characters, as it becomes the
//!   `job-name` label), `generateName`, `namespace`, `labels` and `annotations`
//!   (string → string, with Kubernetes label key and value syntax), `finalizers`,
//!   `ownerReferences`;
//! - `spec`: the integer fields (≥ 0), the enums, `template`;
//! - the pod template's `metadata` and `spec`: containers and init containers (name,
//!   image, command/args, env, envFrom, resources with quantities, ports, volume
//!   mounts, security context, pull policy, …), `restartPolicy` (`Never` or
//!   `OnFailure`: a Job refuses `Always`), node selector, tolerations, volumes, image
//!   pull secrets, host namespaces, the pod security context;
//! - deep, rarely written objects (`affinity`, probes, `lifecycle`,
//!   `topologySpreadConstraints`, …) only for being objects (or lists of objects).
//!
//! Unknown keys inside the checked objects are problems, as the API server's strict
//! field validation makes them. `null` counts as absent, as the API server reads it.
//!
//! Any other `apiVersion`/`kind` is a custom object: it must be an object with string
//! `apiVersion` and `kind`, and `metadata`/`spec` objects when present.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

use super::ConfigProblem;
use super::path::{index_path, key_path};
use super::schema::{Checker, Field, Got, KeyStyle, get, has_macro, one_of, quote};

const INT32_MAX: i64 = i32::MAX as i64;

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static regex")
}

static DNS_LABEL: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"));
static DNS_SUBDOMAIN: LazyLock<Regex> =
    LazyLock::new(|| re(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"));
static QUALIFIED_NAME: LazyLock<Regex> =
    LazyLock::new(|| re(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$"));
static QUANTITY: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^([+-]?)([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")
});
static API_VERSION: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?v[0-9]+((alpha|beta)[0-9]+)?$",
    )
});
static IANA_SVC_NAME: LazyLock<Regex> = LazyLock::new(|| re(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"));

// ---------------------------------------------------------------------------------
// Syntax of names, labels and quantities

fn dns_label(s: &str) -> Result<(), String> {
    if s.len() <= 63 && DNS_LABEL.is_match(s) {
        Ok(())
    } else {
        Err(format!(
            "invalid name {}: expected a DNS label (at most 63 lowercase letters, digits and `-`, starting and ending with a letter or digit)",
            quote(s)
        ))
    }
}

fn dns_subdomain(s: &str, max: usize) -> Result<(), String> {
    if s.len() <= max && DNS_SUBDOMAIN.is_match(s) {
        Ok(())
    } else {
        Err(format!(
            "invalid name {}: expected a DNS subdomain (at most {max} lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit)",
            quote(s)
        ))
    }
}

/// Checks a label or annotation key: `[prefix/]name`, the prefix a DNS subdomain, the
/// name at most 63 characters of letters, digits, `-`, `_`, `.`.
pub fn label_key(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    let bad = |why: &str| Err(format!("invalid key {}: {why}", quote(s)));
    if let Some(p) = prefix
        && (p.is_empty() || p.len() > 253 || !DNS_SUBDOMAIN.is_match(p))
    {
        return bad("the prefix before `/` must be a DNS subdomain such as example.com");
    }
    if name.is_empty() || name.len() > 63 || !QUALIFIED_NAME.is_match(name) {
        return bad(
            "the name must be 1 to 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit",
        );
    }
    Ok(())
}

/// Checks a label value: empty, or at most 63 letters, digits, `-`, `_`, `.`, starting
/// and ending with a letter or digit.
pub fn label_value(s: &str) -> Result<(), String> {
    if s.is_empty() || (s.len() <= 63 && QUALIFIED_NAME.is_match(s)) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value {}: expected at most 63 letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit",
            quote(s)
        ))
    }
}

/// Parses a Kubernetes quantity (`500m`, `2Gi`, `1.5`, `1e3`) into its value.
pub fn parse_quantity(s: &str) -> Option<f64> {
    let caps = QUANTITY.captures(s)?;
    let number: f64 = caps.get(2)?.as_str().parse().ok()?;
    let sign = if caps.get(1).is_some_and(|m| m.as_str() == "-") {
        -1.0
    } else {
        1.0
    };
    let multiplier = match caps.get(3).map(|m| m.as_str()) {
        None => 1.0,
        Some("Ki") => 1024f64,
        Some("Mi") => 1024f64.powi(2),
        Some("Gi") => 1024f64.powi(3),
        Some("Ti") => 1024f64.powi(4),
        Some("Pi") => 1024f64.powi(5),
        Some("Ei") => 1024f64.powi(6),
        Some("m") => 1e-3,
        Some("k") => 1e3,
        Some("M") => 1e6,
        Some("G") => 1e9,
        Some("T") => 1e12,
        Some("P") => 1e15,
        Some("E") => 1e18,
        Some(exp) => 10f64.powi(exp[1..].parse::<i32>().ok()?),
    };
    Some(sign * number * multiplier)
}

const QUANTITY_HELP: &str = "expected a Kubernetes quantity: a number with an optional suffix m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi or Ei, e.g. 500m, 2Gi or 1.5";

/// Reads a non-negative quantity (a string or a number).
fn quantity(c: &mut Checker, v: &Value, path: &str) -> Got<f64> {
    let q = match v {
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::String(s) => {
            if c.macros && has_macro(s) {
                return Got::Macro;
            }
            match parse_quantity(s) {
                Some(q) => q,
                None => {
                    let mut msg = format!("invalid quantity {}; {QUANTITY_HELP}", quote(s));
                    if s.ends_with('B') || s.ends_with('b') {
                        msg.push_str(" (no trailing `B`: write 2Gi, not 2GiB or 2GB)");
                    }
                    c.report(path, msg);
                    return Got::Bad;
                }
            }
        }
        other => {
            c.type_error(path, "quantity (string or number)", other);
            return Got::Bad;
        }
    };
    if q < 0.0 {
        c.report(
            path,
            format!("must not be negative, found {}", super::schema::show(v)),
        );
        return Got::Bad;
    }
    Got::Val(q)
}

// ---------------------------------------------------------------------------------
// Entry point

/// Checks a `kubernetes` queue config; returns every problem.
pub fn validate(config: &Value) -> Vec<ConfigProblem> {
    let mut c = Checker::new();
    c.null_is_absent = true;
    let Some(obj) = c.object(config, "") else {
        return c.problems;
    };
    let api = obj.get("apiVersion").and_then(Value::as_str);
    let kind = obj.get("kind").and_then(Value::as_str);
    let is_job = matches!(api, None | Some("batch/v1")) && matches!(kind, None | Some("Job"));
    // Core `v1` has no Job; `batch/v1beta1` and the like are not served any more.
    let misversioned_job =
        kind == Some("Job") && api.is_some_and(|a| a == "v1" || a.starts_with("batch/"));
    if is_job || misversioned_job {
        job(&mut c, obj);
    } else {
        custom_object(&mut c, obj);
    }
    super::schema::sort_problems(config, &mut c.problems);
    c.problems
}

/// `batch/v1` is Kubernetes' own group: of its kinds only `Job` runs to an end (a
/// `CronJob` never does), so another kind there is a mistake, most often a typo.
fn batch_kind(c: &mut Checker, obj: &Map<String, Value>, kind: &Value) {
    let (Some("batch/v1"), Some(kind)) =
        (obj.get("apiVersion").and_then(Value::as_str), kind.as_str())
    else {
        return;
    };
    let hint = if crate::names::edit_distance(&kind.to_ascii_lowercase(), "job") <= 2 {
        " (did you mean `Job`?)"
    } else {
        ""
    };
    c.report(
        "kind",
        format!(
            "batch/v1 has no runnable kind `{kind}`{hint}: a run is a batch/v1 `Job`, or an object of a custom resource (its own apiVersion, e.g. kubeflow.org/v1 PyTorchJob)"
        ),
    );
}

fn custom_object(c: &mut Checker, obj: &Map<String, Value>) {
    for name in ["apiVersion", "kind"] {
        match obj.get(name) {
            None | Some(Value::Null) => {
                c.report("", format!("missing required field `{name}` (required for an object other than a batch/v1 Job)"))
            }
            Some(v) => {
                if name == "apiVersion" {
                    c.matching(v, name, &API_VERSION, "an apiVersion like v1, batch/v1 or example.com/v1alpha1");
                } else {
                    c.nonempty(v, name);
                    batch_kind(c, obj, v);
                }
            }
        }
    }
    for name in ["metadata", "spec"] {
        if let Some(v) = obj.get(name)
            && !v.is_null()
        {
            c.object(v, name);
        }
    }
}

const JOB_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec", "status"];

fn job(c: &mut Checker, obj: &Map<String, Value>) {
    for f in c.fields(obj, "", JOB_FIELDS, KeyStyle::Exact) {
        match f.name {
            "apiVersion" => {
                if let Some(s) = c.string(f.value, &f.path)
                    && s != "batch/v1"
                {
                    c.report(
                        &f.path,
                        format!("a Job is served as batch/v1, not {}", quote(s)),
                    );
                }
            }
            "kind" => {
                c.string(f.value, &f.path);
            }
            "metadata" => object_meta(c, f.value, &f.path, true),
            "spec" => job_spec(c, f.value, &f.path),
            "status" => c.report(&f.path, "`status` is written by Kubernetes; remove it"),
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------
// ObjectMeta

const META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "labels",
    "annotations",
    "finalizers",
    "ownerReferences",
    "creationTimestamp",
];

fn object_meta(c: &mut Checker, v: &Value, path: &str, top: bool) {
    let Some(obj) = c.object(v, path) else { return };
    for f in c.fields(obj, path, META_FIELDS, KeyStyle::Exact) {
        let p = f.path.as_str();
        match f.name {
            "name" => {
                // A Job's name becomes the value of its pods' `job-name` label.
                let max = if top { 63 } else { 253 };
                c.formatted(f.value, p, |s| dns_subdomain(s, max));
            }
            "generateName" => {
                c.formatted(f.value, p, |s| {
                    let base = s.trim_end_matches('-');
                    if s.len() <= 58 && (base.is_empty() && !s.is_empty() || DNS_SUBDOMAIN.is_match(base)) {
                        Ok(())
                    } else {
                        Err(format!(
                            "invalid generateName {}: expected a prefix of lowercase letters, digits, `-` and `.` (at most 58 characters)",
                            quote(s)
                        ))
                    }
                });
            }
            "namespace" => {
                c.formatted(f.value, p, dns_label);
            }
            "labels" => c.string_map(f.value, p, |c, k, val, p| {
                if !has_macro(k)
                    && let Err(e) = label_key(k)
                {
                    c.report(p, e);
                }
                if !has_macro(val)
                    && let Err(e) = label_value(val)
                {
                    c.report(p, e);
                }
            }),
            "annotations" => c.string_map(f.value, p, |c, k, _, p| {
                if !has_macro(k)
                    && let Err(e) = label_key(k)
                {
                    c.report(p, e);
                }
            }),
            "finalizers" => {
                c.string_list(f.value, p);
            }
            "ownerReferences" => c.object_list_shape(f.value, p),
            "creationTimestamp" => {
                c.report(p, "`creationTimestamp` is set by Kubernetes; remove it")
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------
// JobSpec

const JOB_SPEC_FIELDS: &[&str] = &[
    "activeDeadlineSeconds",
    "backoffLimit",
    "backoffLimitPerIndex",
    "completionMode",
    "completions",
    "managedBy",
    "manualSelector",
    "maxFailedIndexes",
    "parallelism",
    "podFailurePolicy",
    "podReplacementPolicy",
    "selector",
    "successPolicy",
    "suspend",
    "template",
    "ttlSecondsAfterFinished",
];

fn job_spec(c: &mut Checker, v: &Value, path: &str) {
    let Some(obj) = c.object(v, path) else { return };
    for f in c.fields(obj, path, JOB_SPEC_FIELDS, KeyStyle::Exact) {
        let p = f.path.as_str();
        match f.name {
            "activeDeadlineSeconds" => {
                c.int(f.value, p, 0, i64::MAX);
            }
            "backoffLimit"
            | "backoffLimitPerIndex"
            | "completions"
            | "maxFailedIndexes"
            | "parallelism"
            | "ttlSecondsAfterFinished" => {
                c.int(f.value, p, 0, INT32_MAX);
            }
            "completionMode" => {
                c.enumerated(f.value, p, &["NonIndexed", "Indexed"]);
            }
            "podReplacementPolicy" => {
                c.enumerated(f.value, p, &["TerminatingOrFailed", "Failed"]);
            }
            "managedBy" => {
                c.string(f.value, p);
            }
            "manualSelector" | "suspend" => {
                c.bool(f.value, p);
            }
            "podFailurePolicy" | "selector" | "successPolicy" => {
                c.object(f.value, p);
            }
            "template" => pod_template(c, f.value, p),
            _ => {}
        }
    }
}

fn pod_template(c: &mut Checker, v: &Value, path: &str) {
    let Some(obj) = c.object(v, path) else { return };
    for f in c.fields(obj, path, &["metadata", "spec"], KeyStyle::Exact) {
        match f.name {
            "metadata" => object_meta(c, f.value, &f.path, false),
            _ => pod_spec(c, f.value, &f.path),
        }
    }
}

// ---------------------------------------------------------------------------------
// PodSpec

const POD_SPEC_FIELDS: &[&str] = &[
    "activeDeadlineSeconds",
    "affinity",
    "automountServiceAccountToken",
    "containers",
    "dnsConfig",
    "dnsPolicy",
    "enableServiceLinks",
    "ephemeralContainers",
    "hostAliases",
    "hostIPC",
    "hostNetwork",
    "hostPID",
    "hostUsers",
    "hostname",
    "hostnameOverride",
    "imagePullSecrets",
    "initContainers",
    "nodeName",
    "nodeSelector",
    "os",
    "overhead",
    "preemptionPolicy",
    "priority",
    "priorityClassName",
    "readinessGates",
    "resourceClaims",
    "resources",
    "restartPolicy",
    "runtimeClassName",
    "schedulerName",
    "schedulingGates",
    "securityContext",
    "serviceAccount",
    "serviceAccountName",
    "setHostnameAsFQDN",
    "shareProcessNamespace",
    "subdomain",
    "terminationGracePeriodSeconds",
    "tolerations",
    "topologySpreadConstraints",
    "volumes",
];

fn pod_spec(c: &mut Checker, v: &Value, path: &str) {
    let Some(obj) = c.object(v, path) else { return };
    let mut container_names: BTreeMap<String, String> = BTreeMap::new();
    let fields = c.fields(obj, path, POD_SPEC_FIELDS, KeyStyle::Exact);
    for f in &fields {
        let p = f.path.as_str();
        match f.name {
            "activeDeadlineSeconds" => {
                c.int(f.value, p, 1, i64::MAX);
            }
            "terminationGracePeriodSeconds" => {
                c.int(f.value, p, 0, i64::MAX);
            }
            "priority" => {
                c.int(f.value, p, i32::MIN as i64, INT32_MAX);
            }
            "affinity" | "dnsConfig" | "os" => {
                c.object(f.value, p);
            }
            "ephemeralContainers"
            | "readinessGates"
            | "resourceClaims"
            | "schedulingGates"
            | "topologySpreadConstraints" => c.object_list_shape(f.value, p),
            "automountServiceAccountToken"
            | "enableServiceLinks"
            | "hostIPC"
            | "hostNetwork"
            | "hostPID"
            | "hostUsers"
            | "setHostnameAsFQDN"
            | "shareProcessNamespace" => {
                c.bool(f.value, p);
            }
            "containers" | "initContainers" => {
                let init = f.name == "initContainers";
                c.each_object(f.value, p, |c, m, p| {
                    container(c, m, p, init, &mut container_names);
                });
            }
            "dnsPolicy" => {
                c.enumerated(
                    f.value,
                    p,
                    &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"],
                );
            }
            "preemptionPolicy" => {
                c.enumerated(f.value, p, &["Never", "PreemptLowerPriority"]);
            }
            "restartPolicy" => {
                if f.value.as_str() == Some("Always") {
                    c.report(p, "a Job's pods cannot use restartPolicy `Always`; expected `Never` or `OnFailure`");
                } else {
                    c.enumerated(f.value, p, &["Never", "OnFailure"]);
                }
            }
            "hostAliases" => c.each_object(f.value, p, host_alias),
            "hostname" | "subdomain" => {
                c.formatted(f.value, p, dns_label);
            }
            "serviceAccount" | "serviceAccountName" => {
                c.formatted(f.value, p, |s| dns_subdomain(s, 253));
            }
            "hostnameOverride" | "nodeName" | "priorityClassName" | "runtimeClassName"
            | "schedulerName" => {
                c.nonempty(f.value, p);
            }
            "imagePullSecrets" => c.each_object(f.value, p, |c, m, p| {
                let fs = c.fields(m, p, &["name"], KeyStyle::Exact);
                c.require(&fs, p, &["name"]);
                for f in fs {
                    c.nonempty(f.value, &f.path);
                }
            }),
            "nodeSelector" => c.string_map(f.value, p, |c, k, val, p| {
                if !has_macro(k)
                    && let Err(e) = label_key(k)
                {
                    c.report(p, e);
                }
                if !has_macro(val)
                    && let Err(e) = label_value(val)
                {
                    c.report(p, e);
                }
            }),
            "overhead" => {
                if let Some(m) = c.object(f.value, p) {
                    for (k, q) in m {
                        quantity(c, q, &key_path(p, k));
                    }
                }
            }
            "resources" => resources(c, f.value, p),
            "securityContext" => pod_security_context(c, f.value, p),
            "tolerations" => c.each_object(f.value, p, toleration),
            "volumes" => {
                let mut names: BTreeMap<String, String> = BTreeMap::new();
                c.each_object(f.value, p, |c, m, p| volume(c, m, p, &mut names));
            }
            _ => {}
        }
    }
}

fn host_alias(c: &mut Checker, m: &Map<String, Value>, p: &str) {
    for f in c.fields(m, p, &["ip", "hostnames"], KeyStyle::Exact) {
        if f.name == "ip" {
            c.formatted(f.value, &f.path, |s| {
                s.parse::<std::net::IpAddr>()
                    .map(|_| ())
                    .map_err(|_| format!("expected an IP address, found {}", quote(s)))
            });
        } else {
            c.string_list(f.value, &f.path);
        }
    }
}

const TOLERATION_FIELDS: &[&str] = &["effect", "key", "operator", "tolerationSeconds", "value"];

fn toleration(c: &mut Checker, m: &Map<String, Value>, p: &str) {
    let fields = c.fields(m, p, TOLERATION_FIELDS, KeyStyle::Exact);
    let mut effect = None;
    for f in &fields {
        match f.name {
            "effect" => {
                effect = c
                    .enumerated(
                        f.value,
                        &f.path,
                        &["NoSchedule", "PreferNoSchedule", "NoExecute"],
                    )
                    .ok();
            }
            "key" => {
                c.formatted(f.value, &f.path, |s| {
                    if s.is_empty() { Ok(()) } else { label_key(s) }
                });
            }
            "operator" => {
                c.enumerated(f.value, &f.path, &["Exists", "Equal"]);
            }
            "tolerationSeconds" => {
                c.int(f.value, &f.path, i64::MIN, i64::MAX);
            }
            _ => {
                c.string(f.value, &f.path);
            }
        }
    }
    // `operator` defaults to `Equal`.
    let operator = get(&fields, "operator").map_or(Some("Equal"), |f| f.value.as_str());
    let key_empty = get(&fields, "key").is_none_or(|f| f.value.as_str() == Some(""));
    if key_empty && operator == Some("Equal") {
        c.report(p, "a toleration without `key` must have operator `Exists`");
    }
    if operator == Some("Exists")
        && let Some(v) = get(&fields, "value")
        && v.value.as_str().is_some_and(|s| !s.is_empty())
    {
        c.report(&v.path, "must be empty when operator is `Exists`");
    }
    if let Some(ts) = get(&fields, "tolerationSeconds")
        && effect.is_some_and(|e| e != "NoExecute")
    {
        c.report(&ts.path, "only allowed with effect `NoExecute`");
    }
}

// ---------------------------------------------------------------------------------
// Containers

const CONTAINER_FIELDS: &[&str] = &[
    "name",
    "image",
    "command",
    "args",
    "workingDir",
    "env",
    "envFrom",
    "resources",
    "resizePolicy",
    "restartPolicy",
    "volumeMounts",
    "volumeDevices",
    "ports",
    "securityContext",
    "imagePullPolicy",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "stdin",
    "stdinOnce",
    "tty",
];

fn container(
    c: &mut Checker,
    obj: &Map<String, Value>,
    path: &str,
    init: bool,
    names: &mut BTreeMap<String, String>,
) {
    for f in c.fields(obj, path, CONTAINER_FIELDS, KeyStyle::Exact) {
        let p = f.path.as_str();
        match f.name {
            "name" => {
                if let Got::Val(n) = c.formatted(f.value, p, dns_label) {
                    if let Some(first) = names.get(n) {
                        c.report(
                            p,
                            format!("duplicate container name {} (also at {first})", quote(n)),
                        );
                    } else {
                        names.insert(n.to_string(), p.to_string());
                    }
                }
            }
            "image" => {
                if let Some(s) = c.nonempty(f.value, p)
                    && s.chars().any(char::is_whitespace)
                {
                    c.report(
                        p,
                        format!(
                            "invalid image reference {}: must not contain whitespace",
                            quote(s)
                        ),
                    );
                }
            }
            "command" | "args" => {
                c.string_list(f.value, p);
            }
            "workingDir" | "terminationMessagePath" => {
                c.string(f.value, p);
            }
            "env" => {
                c.each_object(f.value, p, env_var);
            }
            "envFrom" => c.each_object(f.value, p, env_from),
            "resources" => resources(c, f.value, p),
            "restartPolicy" => {
                if init {
                    c.enumerated(f.value, p, &["Always"]);
                } else {
                    c.report(
                        p,
                        "only init containers may set restartPolicy (`Always`, for a sidecar)",
                    );
                }
            }
            "volumeMounts" => c.each_object(f.value, p, volume_mount),
            "ports" => c.each_object(f.value, p, container_port),
            "securityContext" => container_security_context(c, f.value, p),
            "imagePullPolicy" => {
                c.enumerated(f.value, p, &["Always", "IfNotPresent", "Never"]);
            }
            "terminationMessagePolicy" => {
                c.enumerated(f.value, p, &["File", "FallbackToLogsOnError"]);
            }
            "livenessProbe" | "readinessProbe" | "startupProbe" | "lifecycle" => {
                c.object(f.value, p);
            }
            "resizePolicy" | "volumeDevices" => c.object_list_shape(f.value, p),
            "stdin" | "stdinOnce" | "tty" => {
                c.bool(f.value, p);
            }
            _ => {}
        }
    }
}

const VALUE_FROM_SOURCES: &[&str] = &[
    "configMapKeyRef",
    "fieldRef",
    "fileKeyRef",
    "resourceFieldRef",
    "secretKeyRef",
];

/// An `env` entry. (The API server accepts a name given twice, the later one wins.)
fn env_var(c: &mut Checker, m: &Map<String, Value>, p: &str) {
    let fields = c.fields(m, p, &["name", "value", "valueFrom"], KeyStyle::Exact);
    c.require(&fields, p, &["name"]);
    c.at_most_one(&fields, p, &["value", "valueFrom"]);
    for f in &fields {
        match f.name {
            "name" => {
                if let Some(n) = c.nonempty(f.value, &f.path)
                    && n.contains('=')
                {
                    let msg = format!(
                        "invalid environment variable name {}: must not contain `=`",
                        quote(n)
                    );
                    c.report(&f.path, msg);
                }
            }
            "value" => {
                c.string(f.value, &f.path);
            }
            _ => {
                let Some(src) = c.object(f.value, &f.path) else {
                    continue;
                };
                let sources = c.fields(src, &f.path, VALUE_FROM_SOURCES, KeyStyle::Exact);
                if src.values().all(Value::is_null) {
                    c.report(
                        &f.path,
                        format!("expected one of {}", one_of(VALUE_FROM_SOURCES)),
                    );
                }
                c.at_most_one(&sources, &f.path, VALUE_FROM_SOURCES);
                for s in sources {
                    let Some(o) = c.object(s.value, &s.path) else {
                        continue;
                    };
                    match s.name {
                        "configMapKeyRef" | "secretKeyRef" => {
                            let fs =
                                c.fields(o, &s.path, &["name", "key", "optional"], KeyStyle::Exact);
                            c.require(&fs, &s.path, &["key"]);
                            for g in fs {
                                if g.name == "optional" {
                                    c.bool(g.value, &g.path);
                                } else {
                                    c.nonempty(g.value, &g.path);
                                }
                            }
                        }
                        "fieldRef" => {
                            let fs =
                                c.fields(o, &s.path, &["apiVersion", "fieldPath"], KeyStyle::Exact);
                            c.require(&fs, &s.path, &["fieldPath"]);
                            for g in fs {
                                c.nonempty(g.value, &g.path);
                            }
                        }
                        "resourceFieldRef" => {
                            let fs = c.fields(
                                o,
                                &s.path,
                                &["containerName", "divisor", "resource"],
                                KeyStyle::Exact,
                            );
                            c.require(&fs, &s.path, &["resource"]);
                            for g in fs {
                                if g.name == "divisor" {
                                    quantity(c, g.value, &g.path);
                                } else {
                                    c.nonempty(g.value, &g.path);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

fn env_from(c: &mut Checker, m: &Map<String, Value>, p: &str) {
    let fields = c.fields(
        m,
        p,
        &["prefix", "configMapRef", "secretRef"],
        KeyStyle::Exact,
    );
    if get(&fields, "configMapRef").is_none() && get(&fields, "secretRef").is_none() {
        c.report(p, "expected one of `configMapRef`, `secretRef`");
    }
    c.at_most_one(&fields, p, &["configMapRef", "secretRef"]);
    for f in fields {
        if f.name == "prefix" {
            c.string(f.value, &f.path);
            continue;
        }
        let Some(o) = c.object(f.value, &f.path) else {
            continue;
        };
        let fs = c.fields(o, &f.path, &["name", "optional"], KeyStyle::Exact);
        c.require(&fs, &f.path, &["name"]);
        for g in fs {
            if g.name == "optional" {
                c.bool(g.value, &g.path);
            } else {
                c.nonempty(g.value, &g.path);
            }
        }
    }
}

fn is_standard_resource(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage" | "storage")
        || name.starts_with("hugepages-")
}

fn resources(c: &mut Checker, v: &Value, path: &str) {
    let Some(obj) = c.object(v, path) else { return };
    let mut amounts: [BTreeMap<String, (f64, String)>; 2] = Default::default();
    for f in c.fields(
        obj,
        path,
        &["limits", "requests", "claims"],
        KeyStyle::Exact,
    ) {
        if f.name == "claims" {
            c.each_object(f.value, &f.path, |c, m, p| {
                let fs = c.fields(m, p, &["name", "request"], KeyStyle::Exact);
                c.require(&fs, p, &["name"]);
                for g in fs {
                    c.nonempty(g.value, &g.path);
                }
            });
            continue;
        }
        let slot = usize::from(f.name == "requests");
        let Some(m) = c.object(f.value, &f.path) else {
            continue;
        };
        for (name, q) in m {
            let p = key_path(&f.path, name);
            if q.is_null() {
                continue;
            }
            let named_ok = if name.contains('/') {
                label_key(name).map_err(|e| format!("invalid resource name: {e}"))
            } else if is_standard_resource(name) {
                Ok(())
            } else {
                let mut msg = format!(
                    "unknown resource `{name}`; expected cpu, memory, ephemeral-storage, hugepages-<size>, or a domain-qualified name such as nvidia.com/gpu"
                );
                if name.to_ascii_lowercase().contains("gpu") {
                    msg = format!("unknown resource `{name}`; did you mean `nvidia.com/gpu`?");
                } else if let Some(s) =
                    super::schema::closest(name, &["cpu", "memory", "ephemeral-storage"])
                {
                    msg = format!("unknown resource `{name}`; did you mean `{s}`?");
                }
                Err(msg)
            };
            if let Err(e) = named_ok {
                c.report(&p, e);
                continue;
            }
            if let Got::Val(amount) = quantity(c, q, &p) {
                if !is_standard_resource(name) && amount.fract() != 0.0 {
                    c.report(
                        &p,
                        format!(
                            "`{name}` must be a whole number, found {}",
                            super::schema::show(q)
                        ),
                    );
                    continue;
                }
                amounts[slot].insert(name.clone(), (amount, p));
            }
        }
    }
    let [limits, requests] = amounts;
    for (name, (req, p)) in &requests {
        let Some((lim, _)) = limits.get(name) else {
            continue;
        };
        if !is_standard_resource(name) && req != lim {
            c.report(p, format!("the request for `{name}` must equal its limit"));
        } else if req > lim {
            c.report(p, format!("the request for `{name}` is above its limit"));
        }
    }
}

const VOLUME_MOUNT_FIELDS: &[&str] = &[
    "name",
    "mountPath",
    "readOnly",
    "recursiveReadOnly",
    "mountPropagation",
    "subPath",
    "subPathExpr",
];

fn volume_mount(c: &mut Checker, m: &Map<String, Value>, p: &str) {
    let fields = c.fields(m, p, VOLUME_MOUNT_FIELDS, KeyStyle::Exact);
    c.require(&fields, p, &["name", "mountPath"]);
    c.at_most_one(&fields, p, &["subPath", "subPathExpr"]);
    for f in fields {
        let fp = f.path.as_str();
        match f.name {
            "name" | "mountPath" => {
                c.nonempty(f.value, fp);
            }
            "readOnly" => {
                c.bool(f.value, fp);
            }
            "recursiveReadOnly" => {
                c.enumerated(f.value, fp, &["Disabled", "IfPossible", "Enabled"]);
            }
            "mountPropagation" => {
                c.enumerated(f.value, fp, &["None", "HostToContainer", "Bidirectional"]);
            }
            _ => {
                c.formatted(f.value, fp, |s| {
                    if s.starts_with('/') || s.split('/').any(|part| part == "..") {
                        Err(format!(
                            "must be a relative path without `..`, found {}",
                            quote(s)
                        ))
                    } else {
                        Ok(())
                    }
                });
            }
        }
    }
}

fn container_port(c: &mut Checker, m: &Map<String, Value>, p: &str) {
    let fields = c.fields(
        m,
        p,
        &["containerPort", "hostIP", "hostPort", "name", "protocol"],
        KeyStyle::Exact,
    );
    c.require(&fields, p, &["containerPort"]);
    for f in fields {
        let fp = f.path.as_str();
        match f.name {
            "containerPort" | "hostPort" => {
                c.int(f.value, fp, 1, 65535);
            }
            "hostIP" => {
                c.formatted(f.value, fp, |s| {
                    s.parse::<std::net::IpAddr>()
                        .map(|_| ())
                        .map_err(|_| format!("expected an IP address, found {}", quote(s)))
                });
            }
            "name" => {
                c.formatted(f.value, fp, |s| {
                    if s.len() <= 15
                        && IANA_SVC_NAME.is_match(s)
                        && !s.contains("--")
                        && s.chars().any(|ch| ch.is_ascii_lowercase())
                    {
                        Ok(())
                    } else {
                        Err(format!(
                            "invalid port name {}: expected at most 15 lowercase letters, digits and `-`, with at least one letter",
                            quote(s)
                        ))
                    }
                });
            }
            _ => {
                c.enumerated(f.value, fp, &["TCP", "UDP", "SCTP"]);
            }
        }
    }
}

fn seccomp_profile(c: &mut Checker, v: &Value, p: &str) {
    let Some(m) = c.object(v, p) else { return };
    let fields = c.fields(m, p, &["type", "localhostProfile"], KeyStyle::Exact);
    c.require(&fields, p, &["type"]);
    for f in fields {
        if f.name == "type" {
            c.enumerated(
                f.value,
                &f.path,
                &["RuntimeDefault", "Unconfined", "Localhost"],
            );
        } else {
            c.nonempty(f.value, &f.path);
        }
    }
}

const CONTAINER_SC_FIELDS: &[&str] = &[
    "allowPrivilegeEscalation",
    "appArmorProfile",
    "capabilities",
    "privileged",
    "procMount",
    "readOnlyRootFilesystem",
    "runAsGroup",
    "runAsNonRoot",
    "runAsUser",
    "seLinuxOptions",
    "seccompProfile",
    "windowsOptions",
];

fn container_security_context(c: &mut Checker, v: &Value, path: &str) {
    let Some(obj) = c.object(v, path) else { return };
    for f in c.fields(obj, path, CONTAINER_SC_FIELDS, KeyStyle::Exact) {
        let p = f.path.as_str();
        match f.name {
            "allowPrivilegeEscalation"
            | "privileged"
            | "readOnlyRootFilesystem"
            | "runAsNonRoot" => {
                c.bool(f.value, p);
            }
            "runAsGroup" | "runAsUser" => {
                c.int(f.value, p, 0, i64::MAX);
            }
            "procMount" => {
                c.enumerated(f.value, p, &["Default", "Unmasked"]);
            }
            "capabilities" => {
                let Some(m) = c.object(f.value, p) else {
                    continue;
                };
                for g in c.fields(m, p, &["add", "drop"], KeyStyle::Exact) {
                    c.string_list(g.value, &g.path);
                }
            }
            "seccompProfile" => seccomp_profile(c, f.value, p),
            _ => {
                c.object(f.value, p);
            }
        }
    }
}

const POD_SC_FIELDS: &[&str] = &[
    "appArmorProfile",
    "fsGroup",
    "fsGroupChangePolicy",
    "runAsGroup",
    "runAsNonRoot",
    "runAsUser",
    "seLinuxChangePolicy",
    "seLinuxOptions",
    "seccompProfile",
    "supplementalGroups",
    "supplementalGroupsPolicy",
    "sysctls",
    "windowsOptions",
];

fn pod_security_context(c: &mut Checker, v: &Value, path: &str) {
    let Some(obj) = c.object(v, path) else { return };
    for f in c.fields(obj, path, POD_SC_FIELDS, KeyStyle::Exact) {
        let p = f.path.as_str();
        match f.name {
            "fsGroup" | "runAsGroup" | "runAsUser" => {
                c.int(f.value, p, 0, i64::MAX);
            }
            "runAsNonRoot" => {
                c.bool(f.value, p);
            }
            "fsGroupChangePolicy" => {
                c.enumerated(f.value, p, &["OnRootMismatch", "Always"]);
            }
            "seLinuxChangePolicy" => {
                c.enumerated(f.value, p, &["MountOption", "Recursive"]);
            }
            "supplementalGroupsPolicy" => {
                c.enumerated(f.value, p, &["Merge", "Strict"]);
            }
            "supplementalGroups" => c.each(f.value, p, |c, g, gp| {
                c.int(g, gp, 0, i64::MAX);
            }),
            "sysctls" => c.each_object(f.value, p, |c, m, sp| {
                let fs = c.fields(m, sp, &["name", "value"], KeyStyle::Exact);
                c.require(&fs, sp, &["name", "value"]);
                for g in fs {
                    c.string(g.value, &g.path);
                }
            }),
            "seccompProfile" => seccomp_profile(c, f.value, p),
            _ => {
                c.object(f.value, p);
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Volumes

const VOLUME_SOURCES: &[&str] = &[
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "gitRepo",
    "glusterfs",
    "hostPath",
    "image",
    "iscsi",
    "nfs",
    "persistentVolumeClaim",
    "photonPersistentDisk",
    "portworxVolume",
    "projected",
    "quobyte",
    "rbd",
    "scaleIO",
    "secret",
    "storageos",
    "vsphereVolume",
];

static VOLUME_FIELDS: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    let mut v = vec!["name"];
    v.extend_from_slice(VOLUME_SOURCES);
    v
});

fn file_mode(c: &mut Checker, v: &Value, p: &str) {
    c.int(v, p, 0, 0o777);
}

fn key_to_path_items(c: &mut Checker, v: &Value, p: &str) {
    c.each_object(v, p, |c, m, ip| {
        let fs = c.fields(m, ip, &["key", "path", "mode"], KeyStyle::Exact);
        c.require(&fs, ip, &["key", "path"]);
        for g in fs {
            if g.name == "mode" {
                file_mode(c, g.value, &g.path);
            } else {
                c.nonempty(g.value, &g.path);
            }
        }
    });
}

fn volume(c: &mut Checker, m: &Map<String, Value>, p: &str, names: &mut BTreeMap<String, String>) {
    let fields = c.fields(m, p, &VOLUME_FIELDS, KeyStyle::Exact);
    c.require(&fields, p, &["name"]);
    let sources: Vec<&Field<'_>> = fields.iter().filter(|f| f.name != "name").collect();
    if sources.is_empty() {
        c.report(p, "missing volume source, such as `emptyDir`, `configMap`, `secret`, `persistentVolumeClaim` or `hostPath`");
    } else if sources.len() > 1 {
        let set: Vec<&str> = sources.iter().map(|f| f.name).collect();
        c.report(
            p,
            format!("only one volume source may be set, found {}", one_of(&set)),
        );
    }
    for f in &fields {
        let fp = f.path.as_str();
        if f.name == "name" {
            if let Got::Val(n) = c.formatted(f.value, fp, dns_label) {
                if let Some(first) = names.get(n) {
                    c.report(
                        fp,
                        format!("duplicate volume name {} (also at {first})", quote(n)),
                    );
                } else {
                    names.insert(n.to_string(), fp.to_string());
                }
            }
            continue;
        }
        let Some(o) = c.object(f.value, fp) else {
            continue;
        };
        match f.name {
            "emptyDir" => {
                for g in c.fields(o, fp, &["medium", "sizeLimit"], KeyStyle::Exact) {
                    if g.name == "medium" {
                        c.enumerated(g.value, &g.path, &["", "Memory"]);
                    } else {
                        quantity(c, g.value, &g.path);
                    }
                }
            }
            "hostPath" => {
                let fs = c.fields(o, fp, &["path", "type"], KeyStyle::Exact);
                c.require(&fs, fp, &["path"]);
                for g in fs {
                    if g.name == "path" {
                        c.nonempty(g.value, &g.path);
                    } else {
                        c.enumerated(
                            g.value,
                            &g.path,
                            &[
                                "",
                                "DirectoryOrCreate",
                                "Directory",
                                "FileOrCreate",
                                "File",
                                "Socket",
                                "CharDevice",
                                "BlockDevice",
                            ],
                        );
                    }
                }
            }
            "configMap" | "secret" => {
                let name_key = if f.name == "secret" {
                    "secretName"
                } else {
                    "name"
                };
                for g in c.fields(
                    o,
                    fp,
                    &[name_key, "items", "defaultMode", "optional"],
                    KeyStyle::Exact,
                ) {
                    match g.name {
                        "items" => key_to_path_items(c, g.value, &g.path),
                        "defaultMode" => file_mode(c, g.value, &g.path),
                        "optional" => {
                            c.bool(g.value, &g.path);
                        }
                        _ => {
                            c.nonempty(g.value, &g.path);
                        }
                    }
                }
            }
            "persistentVolumeClaim" => {
                let fs = c.fields(o, fp, &["claimName", "readOnly"], KeyStyle::Exact);
                c.require(&fs, fp, &["claimName"]);
                for g in fs {
                    if g.name == "readOnly" {
                        c.bool(g.value, &g.path);
                    } else {
                        c.nonempty(g.value, &g.path);
                    }
                }
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------
// Privileged settings

/// One setting of a Kubernetes object that gives its pods more than an ordinary,
/// confined pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivilegedField {
    /// Path of the value (`spec.template.spec.containers[0].securityContext.privileged`).
    pub path: String,
    /// `privileged`, `privilege-escalation`, `cap-add`, `host-namespace`, `host-path`,
    /// `proc-mount`, `unconfined`, `host-process`.
    pub kind: &'static str,
    /// What is asked: `true`, the capability, the host path, …
    pub value: String,
    /// The field and its value as people read them: `hostNetwork: true`.
    pub shown: String,
}

impl PrivilegedField {
    /// What the setting gives the pod, for people.
    pub fn describe(&self) -> &'static str {
        match self.kind {
            "privileged" => {
                "runs the container privileged: every capability and every device of the node"
            }
            "privilege-escalation" => {
                "lets processes gain more privileges than their parent (setuid binaries)"
            }
            "cap-add" => "adds a Linux capability to the container",
            "host-namespace" => "shares a namespace of the node with the pod",
            "host-path" => "mounts a path of the node into the pod",
            "proc-mount" => "unmasks /proc in the container",
            "unconfined" => "lifts the container's seccomp or AppArmor confinement",
            _ => "runs the pod as a process of the (Windows) node",
        }
    }
}

/// Every privileged setting in a Kubernetes queue config, with its path, in document
/// order. The whole document is walked, so pod templates inside custom objects
/// (JobSets, PyTorchJobs, …) count too: a `securityContext` with `privileged: true`,
/// `allowPrivilegeEscalation: true`, `capabilities.add`, `procMount: Unmasked`, an
/// `Unconfined` seccomp or AppArmor profile or `windowsOptions.hostProcess: true`;
/// `hostNetwork`, `hostPID` or `hostIPC: true`; `hostPath` volumes. A macro where
/// `true` would go counts (the agent fills it in later).
pub fn privileged_settings(config: &Value) -> Vec<PrivilegedField> {
    let mut out = Vec::new();
    walk_privileges(config, "", &mut out);
    out
}

/// `true`, or a string with a macro (that may become `true`).
fn truthy(v: &Value) -> Option<String> {
    match v {
        Value::Bool(true) => Some("true".to_string()),
        Value::String(s) if has_macro(s) => Some(s.clone()),
        _ => None,
    }
}

fn found(
    out: &mut Vec<PrivilegedField>,
    path: String,
    kind: &'static str,
    field: &str,
    value: String,
) {
    out.push(PrivilegedField {
        shown: format!("{field}: {value}"),
        path,
        kind,
        value,
    });
}

fn walk_privileges(v: &Value, path: &str, out: &mut Vec<PrivilegedField>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = key_path(path, k);
                match k.as_str() {
                    "hostNetwork" | "hostPID" | "hostIPC" => {
                        if let Some(t) = truthy(x) {
                            found(out, p.clone(), "host-namespace", k, t);
                        }
                    }
                    "securityContext" => security_context_privileges(x, &p, out),
                    "volumes" => {
                        for (i, item) in x.as_array().into_iter().flatten().enumerate() {
                            if let Some(hp) = item.get("hostPath") {
                                let host = match hp.get("path") {
                                    Some(Value::String(s)) => s.clone(),
                                    Some(other) => other.to_string(),
                                    None => String::new(),
                                };
                                let at = key_path(&index_path(&p, i), "hostPath");
                                found(out, at, "host-path", "hostPath", host);
                            }
                        }
                    }
                    _ => {}
                }
                walk_privileges(x, &p, out);
            }
        }
        Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                walk_privileges(x, &index_path(path, i), out);
            }
        }
        _ => {}
    }
}

/// The privileged fields of one `securityContext` (a container's or a pod's).
fn security_context_privileges(v: &Value, path: &str, out: &mut Vec<PrivilegedField>) {
    let Value::Object(sc) = v else { return };
    for (k, x) in sc {
        let p = key_path(path, k);
        match k.as_str() {
            "privileged" => {
                if let Some(t) = truthy(x) {
                    found(out, p, "privileged", "privileged", t);
                }
            }
            "allowPrivilegeEscalation" => {
                if let Some(t) = truthy(x) {
                    found(
                        out,
                        p,
                        "privilege-escalation",
                        "allowPrivilegeEscalation",
                        t,
                    );
                }
            }
            "capabilities" => {
                let add = x.get("add").and_then(Value::as_array);
                for (i, cap) in add.into_iter().flatten().enumerate() {
                    let name = cap.as_str().map_or_else(|| cap.to_string(), str::to_string);
                    let at = index_path(&key_path(&p, "add"), i);
                    found(out, at, "cap-add", "capabilities.add", name);
                }
            }
            "procMount" if x.as_str() == Some("Unmasked") || x.as_str().is_some_and(has_macro) => {
                let v = x.as_str().unwrap_or_default().to_string();
                found(out, p, "proc-mount", "procMount", v);
            }
            "seccompProfile" | "appArmorProfile" => {
                if let Some(t) = x.get("type").and_then(Value::as_str)
                    && (t == "Unconfined" || has_macro(t))
                {
                    let field = if k == "seccompProfile" {
                        "seccompProfile.type"
                    } else {
                        "appArmorProfile.type"
                    };
                    found(
                        out,
                        key_path(&p, "type"),
                        "unconfined",
                        field,
                        t.to_string(),
                    );
                }
            }
            "windowsOptions" => {
                if let Some(h) = x.get("hostProcess")
                    && let Some(t) = truthy(h)
                {
                    let at = key_path(&p, "hostProcess");
                    found(out, at, "host-process", "windowsOptions.hostProcess", t);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileged_fields_anywhere_in_the_document() {
        let job = serde_json::json!({
            "spec": {"template": {"spec": {
                "hostNetwork": true,
                "hostPID": false,
                "hostIPC": "${SHARE_IPC}",
                "securityContext": {"seccompProfile": {"type": "Unconfined"}},
                "containers": [{
                    "name": "main",
                    "securityContext": {
                        "privileged": false,
                        "allowPrivilegeEscalation": true,
                        "capabilities": {"add": ["SYS_ADMIN"], "drop": ["ALL"]},
                        "procMount": "Unmasked",
                    },
                }],
                "initContainers": [{"securityContext": {"privileged": true, "windowsOptions": {"hostProcess": true}}}],
                "volumes": [{"name": "a", "emptyDir": {}}, {"name": "b", "hostPath": {"path": "/var/run"}}],
            }}},
        });
        let found: Vec<String> = privileged_settings(&job)
            .into_iter()
            .map(|f| format!("{} {} = {}", f.kind, f.path, f.shown))
            .collect();
        assert_eq!(
            found,
            [
                "host-namespace spec.template.spec.hostNetwork = hostNetwork: true",
                "host-namespace spec.template.spec.hostIPC = hostIPC: ${SHARE_IPC}",
                "unconfined spec.template.spec.securityContext.seccompProfile.type = seccompProfile.type: Unconfined",
                "privilege-escalation spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation = allowPrivilegeEscalation: true",
                "cap-add spec.template.spec.containers[0].securityContext.capabilities.add[0] = capabilities.add: SYS_ADMIN",
                "proc-mount spec.template.spec.containers[0].securityContext.procMount = procMount: Unmasked",
                "privileged spec.template.spec.initContainers[0].securityContext.privileged = privileged: true",
                "host-process spec.template.spec.initContainers[0].securityContext.windowsOptions.hostProcess = windowsOptions.hostProcess: true",
                "host-path spec.template.spec.volumes[1].hostPath = hostPath: /var/run",
            ]
        );
        // A custom object embedding pod templates counts too.
        let custom = serde_json::json!({
            "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
            "spec": {"pytorchReplicaSpecs": {"Master": {"template": {"spec": {"hostNetwork": true}}}}},
        });
        assert_eq!(
            privileged_settings(&custom)[0].path,
            "spec.pytorchReplicaSpecs.Master.template.spec.hostNetwork"
        );
        assert!(privileged_settings(&serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}]}}}})).is_empty());
    }

    #[test]
    fn quantities() {
        for (s, v) in [
            ("500m", 0.5),
            ("2Gi", 2.0 * 1024f64.powi(3)),
            ("1.5", 1.5),
            ("1e3", 1000.0),
            ("1E", 1e18),
            (".5", 0.5),
            ("5.", 5.0),
            ("+1k", 1000.0),
            ("-1", -1.0),
        ] {
            assert_eq!(parse_quantity(s), Some(v), "{s}");
        }
        for s in ["", "2GB", "1.2.3", "m", "Gi", "1 Gi", "1e", "0x10", "1Ki2"] {
            assert_eq!(parse_quantity(s), None, "{s}");
        }
    }

    #[test]
    fn labels() {
        assert!(label_key("app").is_ok());
        assert!(label_key("app.kubernetes.io/name").is_ok());
        assert!(label_key("a_b.c-d").is_ok());
        assert!(label_key("-a").is_err());
        assert!(label_key("Example.com/x").is_err());
        assert!(label_key("a/b/c").is_err());
        assert!(label_key(&"x".repeat(64)).is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("v1.2_x").is_ok());
        assert!(label_value("a b").is_err());
    }
}

// ---------------------------------------------------------------------------------
// References to credentials

/// One place of a Kubernetes object that hands a pod a credential of the cluster: a
/// Secret (`secretKeyRef`, `envFrom[].secretRef`, a `secret` volume or projected
/// source, `imagePullSecrets`) or a service account's identity (`serviceAccountName`,
/// `serviceAccount`, `automountServiceAccountToken: true`, a projected
/// `serviceAccountToken`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRef {
    /// Path of the reference (`spec.template.spec.containers[0].env[1].valueFrom.secretKeyRef`).
    pub path: String,
    /// The reference as people read it: `secretKeyRef: api-key/token`.
    pub shown: String,
}

/// Every credential reference in a Kubernetes object, in document order. Launch-time
/// input may not add one (it would read a Secret of the run's namespace, such as an
/// agent's API key, or act as another service account): only the queue's own config
/// may hold them.
pub fn credential_refs(config: &Value) -> Vec<CredentialRef> {
    let mut out = Vec::new();
    walk_credentials(config, "", &mut out);
    out
}

fn name_of(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

fn walk_credentials(v: &Value, path: &str, out: &mut Vec<CredentialRef>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = key_path(path, k);
                let shown = match k.as_str() {
                    "secretKeyRef" if x.is_object() => Some(format!(
                        "secretKeyRef: {}/{}",
                        name_of(x, "name"),
                        name_of(x, "key")
                    )),
                    "secretRef" if x.is_object() => {
                        Some(format!("secretRef: {}", name_of(x, "name")))
                    }
                    "secret" if x.is_object() => {
                        let name = match x.get("secretName") {
                            Some(_) => name_of(x, "secretName"),
                            None => name_of(x, "name"),
                        };
                        Some(format!("secret: {name}"))
                    }
                    "imagePullSecrets" if x.is_array() => Some(format!("imagePullSecrets: {x}")),
                    "serviceAccountName" | "serviceAccount" if !x.is_null() => Some(format!(
                        "{k}: {}",
                        x.as_str().map_or(x.to_string(), str::to_string)
                    )),
                    "automountServiceAccountToken" if *x == Value::Bool(true) => {
                        Some(format!("{k}: true"))
                    }
                    "serviceAccountToken" if x.is_object() => {
                        Some(format!("serviceAccountToken: {}", name_of(x, "audience")))
                    }
                    _ => None,
                };
                if let Some(shown) = shown {
                    out.push(CredentialRef {
                        path: p.clone(),
                        shown,
                    });
                }
                walk_credentials(x, &p, out);
            }
        }
        Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                walk_credentials(x, &index_path(path, i), out);
            }
        }
        _ => {}
    }
}
