//! The resolved configuration as YAML, secrets masked (`hoist agent --check-config`).

use hoist_core::api::{MASKED, looks_secret};
use serde_json::{Map, Value, json};

use super::values::format_duration;
use super::{
    AgentConfig, BuilderKind, EnvironmentConfig, Executor, KanikoSettings, RegistryConfig,
};

/// `scheme://user:password@host…` with the password (or a lone token) masked.
pub(crate) use crate::environments::http::masked_url as mask_url;

/// Masks, in a free-form tree, values under keys that look secret, `value`s of
/// `{name: SECRET_LOOKING, value: …}` pairs, and passwords in URLs.
fn mask_tree(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let secret_pair = map
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(looks_secret);
            for (k, child) in map.iter_mut() {
                if looks_secret(k) || (secret_pair && k == "value") {
                    if !child.is_null() {
                        *child = Value::String(MASKED.to_string());
                    }
                } else {
                    mask_tree(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_tree),
        Value::String(s) => *s = mask_url(s),
        _ => {}
    }
}

fn put(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        map.insert(key.to_string(), v);
    }
}

fn paths(p: &[std::path::PathBuf]) -> Value {
    Value::Array(
        p.iter()
            .map(|p| Value::String(p.display().to_string()))
            .collect(),
    )
}

pub(crate) fn render(cfg: &AgentConfig) -> String {
    let mut top = Map::new();
    put(&mut top, "name", cfg.name.clone().map(Value::String));
    put(&mut top, "entity", cfg.entity.clone().map(Value::String));
    put(&mut top, "project", cfg.project.clone().map(Value::String));
    top.insert("max_jobs".into(), json!(cfg.max_jobs.as_i64()));
    top.insert("queues".into(), json!(cfg.queues));
    put(
        &mut top,
        "base_url",
        cfg.base_url.as_deref().map(|u| json!(mask_url(u))),
    );

    top.insert("verbosity".into(), json!(cfg.verbosity));
    top.insert("max_schedulers".into(), json!(cfg.max_schedulers.as_i64()));

    if let Some(env) = &cfg.environment {
        let v = match env {
            EnvironmentConfig::Aws { region } => json!({"type": "aws", "region": region}),
            EnvironmentConfig::Gcp { region, project } => {
                let mut m = Map::new();
                m.insert("type".into(), json!("gcp"));
                m.insert("region".into(), json!(region));
                put(&mut m, "project", project.clone().map(Value::String));
                Value::Object(m)
            }
            EnvironmentConfig::Azure => json!({"type": "azure"}),
        };
        top.insert("environment".into(), v);
    }

    let registry = match &cfg.registry {
        RegistryConfig::Local => None,
        RegistryConfig::Ecr(r) => Some(match r.uri() {
            Some(uri) => json!({"type": "ecr", "uri": uri}),
            None => json!({"type": "ecr", "repository": r.repository}),
        }),
        RegistryConfig::Gcr(r) => Some(match r.uri() {
            Some(uri) => json!({"type": "gcr", "uri": uri}),
            None => json!({"type": "gcr", "repository": r.repository, "image-name": r.image_name}),
        }),
        RegistryConfig::Acr(r) => {
            Some(json!({"type": "acr", "uri": format!("https://{}", r.uri())}))
        }
        RegistryConfig::Oci(r) => {
            let mut m = Map::new();
            m.insert("type".into(), json!("oci"));
            m.insert("uri".into(), json!(mask_url(&r.uri())));
            put(
                &mut m,
                "credentials-file",
                r.credentials_file
                    .as_ref()
                    .map(|p| json!(p.display().to_string())),
            );
            Some(Value::Object(m))
        }
    };
    put(&mut top, "registry", registry);

    let mut b = Map::new();
    b.insert("type".into(), json!(cfg.builder.kind_type().as_str()));
    put(
        &mut b,
        "platform",
        cfg.builder.platform.clone().map(Value::String),
    );
    if let BuilderKind::Kaniko(k) = &cfg.builder.kind {
        b.insert(
            "build-context-store".into(),
            json!(k.build_context_store.uri()),
        );
        b.insert("build-job-name".into(), json!(k.build_job_name));
        if let Some(s) = &k.secret {
            b.insert("secret-name".into(), json!(s.name));
            b.insert("secret-key".into(), json!(s.key));
        }
        if let Some(c) = &k.kaniko_config {
            let mut c = c.clone();
            mask_tree(&mut c);
            b.insert("kaniko-config".into(), c);
        }
        put(
            &mut b,
            "kaniko-image",
            k.kaniko_image.clone().map(Value::String),
        );
        put(
            &mut b,
            "buildah-image",
            k.buildah_image.clone().map(Value::String),
        );
        b.insert(
            "build-timeout".into(),
            json!(format_duration(k.build_timeout)),
        );
        b.insert("keep-build-context".into(), json!(k.keep_build_context));
        put(&mut b, "namespace", k.namespace.clone().map(Value::String));
    }
    b.insert("base-image".into(), json!(cfg.builder.base_image));
    b.insert("cache".into(), json!(cfg.builder.cache));
    top.insert("builder".into(), Value::Object(b));

    let d = &cfg.docker;
    let mut docker = Map::new();
    put(
        &mut docker,
        "host",
        d.host.as_ref().map(|h| json!(h.to_string())),
    );
    docker.insert("allow-privileged".into(), json!(d.allow_privileged));
    docker.insert("allow-cap-add".into(), json!(d.allow_cap_add));
    docker.insert("allow-devices".into(), paths(&d.allow_devices));
    docker.insert("allow-host-network".into(), json!(d.allow_host_network));
    docker.insert("allow-host-pid".into(), json!(d.allow_host_pid));
    docker.insert("allow-host-ipc".into(), json!(d.allow_host_ipc));
    docker.insert("volume-allow-list".into(), paths(&d.volume_allow_list));
    top.insert("docker".into(), Value::Object(docker));

    let k = &cfg.kubernetes;
    let mut kube = Map::new();
    put(
        &mut kube,
        "kubeconfig",
        k.kubeconfig
            .as_ref()
            .map(|p| json!(p.display().to_string())),
    );
    put(&mut kube, "context", k.context.clone().map(Value::String));
    put(
        &mut kube,
        "namespace",
        k.namespace.clone().map(Value::String),
    );
    kube.insert("allow-privileged".into(), json!(k.allow_privileged));
    kube.insert(
        "allow-privilege-escalation".into(),
        json!(k.allow_privilege_escalation),
    );
    kube.insert("allow-cap-add".into(), json!(k.allow_cap_add));
    kube.insert("allow-host-network".into(), json!(k.allow_host_network));
    kube.insert("allow-host-pid".into(), json!(k.allow_host_pid));
    kube.insert("allow-host-ipc".into(), json!(k.allow_host_ipc));
    kube.insert(
        "host-path-allow-list".into(),
        paths(&k.host_path_allow_list),
    );
    kube.insert("require-non-root".into(), json!(k.require_non_root));
    top.insert("kubernetes".into(), Value::Object(kube));
    top.insert("secure_mode".into(), json!(cfg.secure_mode));
    top.insert("max_requeues".into(), json!(cfg.max_requeues));

    let mut local = Map::new();
    put(
        &mut local,
        "work-dir",
        cfg.local_process
            .work_dir
            .as_ref()
            .map(|p| json!(p.display().to_string())),
    );
    local.insert(
        "allow-env-passthrough".into(),
        json!(cfg.local_process.allow_env_passthrough),
    );
    local.insert(
        "keep-failed-run-dirs".into(),
        json!(cfg.local_process.keep_failed_run_dirs),
    );
    local.insert(
        "max-run-dir-bytes".into(),
        json!(cfg.local_process.max_run_dir_bytes),
    );
    top.insert("local-process".into(), Value::Object(local));
    top.insert("env-allow-list".into(), json!(cfg.env_allow_list));
    top.insert(
        "stopped_run_timeout".into(),
        json!(format_duration(cfg.stopped_run_timeout)),
    );
    top.insert(
        "start_timeout".into(),
        json!(format_duration(cfg.start_timeout)),
    );
    put(
        &mut top,
        "heartbeat_interval",
        cfg.heartbeat_interval.map(|d| json!(format_duration(d))),
    );

    let body = serde_saphyr::to_string(&Value::Object(top))
        .unwrap_or_else(|e| format!("# cannot render the configuration: {e}\n"));
    let body = match &cfg.builder.kind {
        BuilderKind::Kaniko(k) => with_executor_note(&body, k),
        _ => body,
    };
    format!(
        "# hoist agent configuration as resolved (defaults < file < HOIST_* < flags);\n# values that look secret are shown as {MASKED}\n{body}"
    )
}

/// `body` with a comment under `builder:` naming the executor image the build Jobs
/// run, so that the default shows without being written as a setting (the rendering
/// reads back to the same configuration).
fn with_executor_note(body: &str, k: &KanikoSettings) -> String {
    let (key, set) = match k.executor {
        Executor::Kaniko => ("kaniko-image", k.kaniko_image.is_some()),
        Executor::Buildah => ("buildah-image", k.buildah_image.is_some()),
    };
    let how = if set {
        format!("builder.{key}")
    } else {
        format!("the default; set builder.{key} to change or pin it")
    };
    let note = format!(
        "  # the build Jobs run the executor image {} ({how})\n",
        k.executor_image()
    );
    let mut out = String::with_capacity(body.len() + note.len());
    let mut done = false;
    for line in body.split_inclusive('\n') {
        out.push_str(line);
        if !done && line.trim_end() == "builder:" {
            out.push_str(&note);
            done = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            mask_url("https://u:pw@h/x"),
            format!("https://u:{MASKED}@h/x")
        );
        assert_eq!(mask_url("https://tok@h"), format!("https://{MASKED}@h"));
        assert_eq!(mask_url("https://h/x@y"), "https://h/x@y");
        assert_eq!(mask_url("plain"), "plain");
    }

    #[test]
    fn trees() {
        let mut v = json!({"env": [{"name": "MY_TOKEN", "value": "abc"}, {"name": "EPOCHS", "value": "3"}],
                           "password": "x", "url": "https://a:b@h"});
        mask_tree(&mut v);
        assert_eq!(v["env"][0]["value"], MASKED);
        assert_eq!(v["env"][1]["value"], "3");
        assert_eq!(v["password"], MASKED);
        assert_eq!(v["url"], format!("https://a:{MASKED}@h"));
    }
}
