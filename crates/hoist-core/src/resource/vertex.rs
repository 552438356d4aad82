//! The `vertex` queue config: a Vertex AI `CustomJob`, shaped as W&B Launch takes it.
//!
//! ```yaml
//! spec:                          # arguments of the CustomJob
//!   worker_pool_specs:
//!     - machine_spec:
//!         machine_type: n1-standard-4
//!         accelerator_type: NVIDIA_TESLA_T4
//!         accelerator_count: 1
//!       replica_count: 1
//!       container_spec:
//!         image_uri: ${image_uri}  # the agent sets the first pool's image
//!   staging_bucket: gs://my-bucket/staging
//! run:                           # arguments of CustomJob.run
//!   restart_job_on_worker_restart: false
//!   timeout: 3600
//! ```
//!
//! Keys are snake_case as in the Python SDK; the REST API's camelCase spelling of the
//! same key (`workerPoolSpecs`, `machineSpec`, `imageUri`, …) is accepted too, and
//! integers may be decimal strings as in the REST API's JSON. `spec.worker_pool_specs`
//! (at least one) and `spec.staging_bucket` (`gs://…`) are required, as W&B requires
//! them. Machine types are checked loosely (a non-empty string), accelerator types
//! against the REST enum, and the accelerator count against the type.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

use super::ConfigProblem;
use super::path::key_path;
use super::schema::{Checker, Field, Got, KeyStyle, get, has_macro, quote};

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static regex")
}

static GCS_URL: LazyLock<Regex> =
    LazyLock::new(|| re(r"^gs://[a-z0-9][a-z0-9._-]*[a-z0-9](/\S*)?$"));
static LABEL_KEY: LazyLock<Regex> =
    LazyLock::new(|| re(r"^[\p{Ll}\p{Lo}][\p{Ll}\p{Lo}\p{N}_-]{0,62}$"));
static LABEL_VALUE: LazyLock<Regex> = LazyLock::new(|| re(r"^[\p{Ll}\p{Lo}\p{N}_-]{0,63}$"));
static DURATION: LazyLock<Regex> = LazyLock::new(|| re(r"^[0-9]+(\.[0-9]{1,9})?s$"));
static EMAIL: LazyLock<Regex> = LazyLock::new(|| re(r"^[^@\s]+@[^@\s]+\.[^@\s]+$"));

/// The accelerator types of the Vertex AI REST API (`AcceleratorType`).
pub const ACCELERATOR_TYPES: &[&str] = &[
    "ACCELERATOR_TYPE_UNSPECIFIED",
    "NVIDIA_TESLA_K80",
    "NVIDIA_TESLA_P100",
    "NVIDIA_TESLA_V100",
    "NVIDIA_TESLA_P4",
    "NVIDIA_TESLA_T4",
    "NVIDIA_TESLA_A100",
    "NVIDIA_A100_80GB",
    "NVIDIA_L4",
    "NVIDIA_H100_80GB",
    "NVIDIA_H100_MEGA_80GB",
    "NVIDIA_H200_141GB",
    "NVIDIA_B200",
    "TPU_V2",
    "TPU_V3",
    "TPU_V4_POD",
    "TPU_V5_LITEPOD",
];

const TOP_FIELDS: &[&str] = &["spec", "run"];

const SPEC_FIELDS: &[&str] = &[
    "worker_pool_specs",
    "staging_bucket",
    "base_output_dir",
    "display_name",
    "encryption_spec_key_name",
    "labels",
    "persistent_resource_id",
];

const RUN_FIELDS: &[&str] = &[
    "service_account",
    "network",
    "timeout",
    "restart_job_on_worker_restart",
    "enable_web_access",
    "enable_dashboard_access",
    "experiment",
    "experiment_run",
    "tensorboard",
    "sync",
    "create_request_timeout",
    "disable_retries",
    "scheduling_strategy",
    "max_wait_duration",
    "reserved_ip_ranges",
    "persistent_resource_id",
];

/// Checks a `vertex` queue config; returns every problem.
pub fn validate(config: &Value) -> Vec<ConfigProblem> {
    let mut c = Checker::new();
    let Some(obj) = c.object(config, "") else {
        return c.problems;
    };
    let fields = c.fields(obj, "", TOP_FIELDS, KeyStyle::Snake);
    c.require(&fields, "", &["spec"]);
    for f in &fields {
        match f.name {
            "spec" => spec(&mut c, f),
            _ => run(&mut c, f),
        }
    }
    super::schema::sort_problems(config, &mut c.problems);
    c.problems
}

/// Known fields of a section (`spec` or `run`), reporting a field of the other section
/// as misplaced rather than unknown.
fn section_fields<'v>(
    c: &mut Checker,
    obj: &'v Map<String, Value>,
    path: &str,
    known: &[&'static str],
    other: (&str, &[&'static str]),
) -> Vec<Field<'v>> {
    let (other_name, other_known) = other;
    let hint = |key: &str| {
        other_known
            .contains(&key)
            .then(|| format!("`{key}` belongs under `{other_name}`"))
    };
    c.fields_hinted(obj, path, known, KeyStyle::Snake, &[], &hint)
}

fn gcs_url(c: &mut Checker, f: &Field<'_>) {
    c.matching(
        f.value,
        &f.path,
        &GCS_URL,
        "a Cloud Storage URL such as gs://my-bucket/staging",
    );
}

fn spec(c: &mut Checker, f: &Field<'_>) {
    let Some(obj) = c.object(f.value, &f.path) else {
        return;
    };
    let fields = section_fields(c, obj, &f.path, SPEC_FIELDS, ("run", RUN_FIELDS));
    c.require(&fields, &f.path, &["worker_pool_specs", "staging_bucket"]);
    for g in &fields {
        let p = g.path.as_str();
        match g.name {
            "worker_pool_specs" => {
                let Some(items) = c.list(g.value, p) else {
                    continue;
                };
                if items.is_empty() {
                    c.report(p, "must have at least one worker pool");
                }
                for (i, item) in items.iter().enumerate() {
                    let ip = super::path::index_path(p, i);
                    if let Some(m) = c.object(item, &ip) {
                        worker_pool(c, m, &ip);
                    }
                }
            }
            "staging_bucket" | "base_output_dir" => gcs_url(c, g),
            "display_name" => {
                if let Some(s) = c.nonempty(g.value, p)
                    && s.chars().count() > 128
                    && !has_macro(s)
                {
                    c.report(p, "must be at most 128 characters");
                }
            }
            "encryption_spec_key_name" | "persistent_resource_id" => {
                c.nonempty(g.value, p);
            }
            _ => labels(c, g),
        }
    }
}

fn labels(c: &mut Checker, f: &Field<'_>) {
    let Some(m) = c.object(f.value, &f.path) else {
        return;
    };
    if m.len() > 64 {
        c.report(
            &f.path,
            format!("must have at most 64 labels, found {}", m.len()),
        );
    }
    for (k, v) in m {
        let p = key_path(&f.path, k);
        if !has_macro(k) && !LABEL_KEY.is_match(k) {
            c.report(
                &p,
                format!("invalid label key {}: expected 1 to 63 lowercase letters, digits, `_` or `-`, starting with a letter", quote(k)),
            );
        }
        if let Some(s) = c.string(v, &p)
            && !has_macro(s)
            && !LABEL_VALUE.is_match(s)
        {
            c.report(
                &p,
                format!("invalid label value {}: expected at most 63 lowercase letters, digits, `_` or `-`", quote(s)),
            );
        }
    }
}

const POOL_FIELDS: &[&str] = &[
    "machine_spec",
    "replica_count",
    "container_spec",
    "python_package_spec",
    "disk_spec",
    "nfs_mounts",
];

fn worker_pool(c: &mut Checker, obj: &Map<String, Value>, path: &str) {
    let fields = c.fields(obj, path, POOL_FIELDS, KeyStyle::Snake);
    // An empty pool is a placeholder that keeps the indices of the following pools.
    if obj.is_empty() {
        return;
    }
    c.require(&fields, path, &["machine_spec"]);
    c.at_most_one(&fields, path, &["container_spec", "python_package_spec"]);
    for f in &fields {
        let p = f.path.as_str();
        match f.name {
            "machine_spec" => machine_spec(c, f),
            "replica_count" => {
                c.int_or_string(f.value, p, 0, i64::MAX);
            }
            "container_spec" => {
                let Some(m) = c.object(f.value, p) else {
                    continue;
                };
                for g in c.fields(
                    m,
                    p,
                    &["image_uri", "command", "args", "env"],
                    KeyStyle::Snake,
                ) {
                    match g.name {
                        "image_uri" => image(c, &g),
                        "env" => env(c, &g),
                        _ => {
                            c.string_list(g.value, &g.path);
                        }
                    }
                }
            }
            "python_package_spec" => {
                let Some(m) = c.object(f.value, p) else {
                    continue;
                };
                let fs = c.fields(
                    m,
                    p,
                    &[
                        "executor_image_uri",
                        "package_uris",
                        "python_module",
                        "args",
                        "env",
                    ],
                    KeyStyle::Snake,
                );
                c.require(
                    &fs,
                    p,
                    &["executor_image_uri", "package_uris", "python_module"],
                );
                for g in &fs {
                    match g.name {
                        "executor_image_uri" => image(c, g),
                        "python_module" => {
                            c.nonempty(g.value, &g.path);
                        }
                        "env" => env(c, g),
                        _ => {
                            c.string_list(g.value, &g.path);
                        }
                    }
                }
            }
            "disk_spec" => {
                let Some(m) = c.object(f.value, p) else {
                    continue;
                };
                for g in c.fields(
                    m,
                    p,
                    &["boot_disk_type", "boot_disk_size_gb"],
                    KeyStyle::Snake,
                ) {
                    if g.name == "boot_disk_type" {
                        c.nonempty(g.value, &g.path);
                    } else {
                        c.int_or_string(g.value, &g.path, 1, i64::MAX);
                    }
                }
            }
            _ => c.each_object(f.value, p, |c, m, ip| {
                let fs = c.fields(m, ip, &["server", "path", "mount_point"], KeyStyle::Snake);
                c.require(&fs, ip, &["server", "path", "mount_point"]);
                for g in fs {
                    c.nonempty(g.value, &g.path);
                }
            }),
        }
    }
}

fn image(c: &mut Checker, f: &Field<'_>) {
    if let Some(s) = c.nonempty(f.value, &f.path)
        && s.chars().any(char::is_whitespace)
    {
        c.report(
            &f.path,
            format!(
                "invalid image URI {}: must not contain whitespace",
                quote(s)
            ),
        );
    }
}

fn env(c: &mut Checker, f: &Field<'_>) {
    c.each_object(f.value, &f.path, |c, m, p| {
        let fs = c.fields(m, p, &["name", "value"], KeyStyle::Snake);
        c.require(&fs, p, &["name"]);
        for g in fs {
            if g.name == "name" {
                c.nonempty(g.value, &g.path);
            } else {
                c.string(g.value, &g.path);
            }
        }
    });
}

fn machine_spec(c: &mut Checker, f: &Field<'_>) {
    let Some(m) = c.object(f.value, &f.path) else {
        return;
    };
    let fields = c.fields(
        m,
        &f.path,
        &[
            "machine_type",
            "accelerator_type",
            "accelerator_count",
            "tpu_topology",
            "reservation_affinity",
        ],
        KeyStyle::Snake,
    );
    c.require(&fields, &f.path, &["machine_type"]);
    let mut accelerator: Got<&str> = Got::Val("ACCELERATOR_TYPE_UNSPECIFIED");
    let mut count: Got<i64> = Got::Val(0);
    for g in &fields {
        let p = g.path.as_str();
        match g.name {
            "machine_type" | "tpu_topology" => {
                c.nonempty(g.value, p);
            }
            "accelerator_type" => accelerator = c.enumerated(g.value, p, ACCELERATOR_TYPES),
            "accelerator_count" => count = c.int_or_string(g.value, p, 0, i64::from(i32::MAX)),
            _ => {
                c.object(g.value, p);
            }
        }
    }
    match (accelerator, count) {
        (Got::Val("ACCELERATOR_TYPE_UNSPECIFIED"), Got::Val(n)) if n > 0 => {
            let at = get(&fields, "accelerator_count").map_or(f.path.clone(), |g| g.path.clone());
            c.report(
                &at,
                format!("{n} accelerator(s) requested but no `accelerator_type` is set"),
            );
        }
        (Got::Val(t), Got::Val(0)) if t != "ACCELERATOR_TYPE_UNSPECIFIED" => {
            c.report(
                &f.path,
                format!("`accelerator_count` must be at least 1 with accelerator_type {t}"),
            );
        }
        _ => {}
    }
}

fn duration(c: &mut Checker, f: &Field<'_>) {
    match f.value {
        Value::String(s) if c.macros && has_macro(s) => {}
        Value::String(s) => {
            if !DURATION.is_match(s) {
                c.report(
                    &f.path,
                    format!(
                        "expected seconds as an integer or a duration such as \"3600s\", found {}",
                        quote(s)
                    ),
                );
            }
        }
        v => {
            c.int(v, &f.path, 1, i64::MAX);
        }
    }
}

fn run(c: &mut Checker, f: &Field<'_>) {
    let Some(obj) = c.object(f.value, &f.path) else {
        return;
    };
    let fields = section_fields(c, obj, &f.path, RUN_FIELDS, ("spec", SPEC_FIELDS));
    for g in &fields {
        let p = g.path.as_str();
        match g.name {
            "service_account" => {
                c.matching(
                    g.value,
                    p,
                    &EMAIL,
                    "a service account email such as trainer@my-project.iam.gserviceaccount.com",
                );
            }
            "network"
            | "experiment"
            | "experiment_run"
            | "tensorboard"
            | "persistent_resource_id" => {
                c.nonempty(g.value, p);
            }
            "timeout" | "max_wait_duration" => duration(c, g),
            "restart_job_on_worker_restart"
            | "enable_web_access"
            | "enable_dashboard_access"
            | "sync"
            | "disable_retries" => {
                c.bool(g.value, p);
            }
            "create_request_timeout" => {
                if let Got::Val(n) = c.number(g.value, p)
                    && n <= 0.0
                {
                    c.report(p, format!("must be positive, found {n}"));
                }
            }
            "scheduling_strategy" => {
                c.enumerated(
                    g.value,
                    p,
                    &[
                        "STRATEGY_UNSPECIFIED",
                        "ON_DEMAND",
                        "LOW_COST",
                        "STANDARD",
                        "SPOT",
                        "FLEX_START",
                    ],
                );
            }
            _ => {
                c.string_list(g.value, p);
            }
        }
    }
}
