//! What a queue config may ask for, and what launch-time input may add to it.
//!
//! [`privileged_settings`] lists, per resource, every setting that gives a run more than
//! an ordinary, confined container or pod (docker: [`super::docker::privileged_options`];
//! Kubernetes: [`super::kubernetes::privileged_settings`]; SageMaker, Vertex and local
//! processes have none a queue config can ask for). The server refuses a queue config
//! holding one unless an admin allows it explicitly, and the agent checks the same list
//! against its own allow-lists before it starts a run.
//!
//! A run's resource config is the queue owner's config with the launch's template
//! values substituted and its resource args deep-merged over it. Launch-time input
//! never adds privilege ([`launch_problems`]):
//! - template values may fill in a privileged setting the owner wrote (a host path with
//!   a `{{dataset}}` in it), but not make one where the owner's text has none;
//! - resource args may not add or change a privileged setting at all;
//! - neither may pass a variable of the agent's environment through to the run by name
//!   ([`env_passthrough`]: docker's and local-process's `env: [NAME]`);
//! - resource args may not add or change a reference to a Kubernetes Secret or service
//!   account ([`kubernetes::credential_refs`]).

use std::collections::BTreeSet;

use serde_json::Value;

use super::{ConfigProblem, ResourceType, docker, kubernetes, local_process};

/// One privileged setting of a queue config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivilegedSetting {
    /// Path of the value in the config (`cap_add[0]`,
    /// `spec.template.spec.containers[0].securityContext.privileged`).
    pub path: String,
    /// A stable name of what is asked for (`privileged`, `cap-add`, `host-path`, …).
    pub kind: &'static str,
    /// What is asked: `true`, the capability, the host path, `host`, …
    pub value: String,
    /// The setting as people read it: `cap-add: CAP_SYS_ADMIN`, `hostNetwork: true`.
    pub shown: String,
    /// What it gives the run: `adds a Linux capability to the container`.
    pub effect: &'static str,
}

impl PrivilegedSetting {
    fn key(&self) -> (&str, &str, &str) {
        (&self.path, self.kind, &self.value)
    }
}

/// Every privileged setting of a queue config, with its path, in document order. Works
/// on invalid configs too (what can be read is reported).
pub fn privileged_settings(resource: ResourceType, config: &Value) -> Vec<PrivilegedSetting> {
    match resource {
        ResourceType::Docker => docker::privileged_options(config)
            .into_iter()
            .map(|u| PrivilegedSetting {
                shown: format!("{}: {}", u.option, u.value),
                effect: u.kind.describe(),
                kind: u.kind.as_str(),
                path: u.path,
                value: u.value,
            })
            .collect(),
        ResourceType::Kubernetes => kubernetes::privileged_settings(config)
            .into_iter()
            .map(|f| PrivilegedSetting {
                effect: f.describe(),
                path: f.path,
                kind: f.kind,
                value: f.value,
                shown: f.shown,
            })
            .collect(),
        ResourceType::LocalProcess | ResourceType::Sagemaker | ResourceType::Vertex => Vec::new(),
    }
}

/// The `env` entries of a config that pass a variable of the agent's environment to the
/// run by name, as `(path, name)`.
pub fn env_passthrough(resource: ResourceType, config: &Value) -> Vec<(String, String)> {
    match resource {
        ResourceType::Docker => docker::env_passthrough(config),
        ResourceType::LocalProcess => local_process::env_passthrough(config),
        ResourceType::Kubernetes | ResourceType::Sagemaker | ResourceType::Vertex => Vec::new(),
    }
}

/// The privileged settings a queue's config holds, to be approved by an admin when it is
/// created or changed: those of the config as written (`raw`) and of the config with
/// sample template values (`resolved`). A privileged setting that only the template
/// values make (`network: "{{net}}"` with `net` = `host`) is a problem: privileged
/// settings must be written in the config itself, where the admin sees them.
pub fn queue_privileges(
    resource: ResourceType,
    raw: &Value,
    resolved: &Value,
) -> Result<Vec<PrivilegedSetting>, Vec<ConfigProblem>> {
    let written = privileged_settings(resource, raw);
    let places: BTreeSet<(&str, &str)> =
        written.iter().map(|s| (s.path.as_str(), s.kind)).collect();
    let mut problems = Vec::new();
    let mut all = written.clone();
    for s in privileged_settings(resource, resolved) {
        if !places.contains(&(s.path.as_str(), s.kind)) {
            problems.push(ConfigProblem::new(
                s.path.clone(),
                format!(
                    "`{}` would come from a template variable: it {}; write privileged settings in the config itself, where an admin can approve them",
                    s.shown, s.effect
                ),
            ));
        } else if !all.iter().any(|w| w.key() == s.key()) {
            all.push(s);
        }
    }
    if problems.is_empty() {
        Ok(all)
    } else {
        Err(problems)
    }
}

/// The settings of `after` that `before` does not hold (same path, kind and value).
pub fn added_privileges(
    before: &[PrivilegedSetting],
    after: &[PrivilegedSetting],
) -> Vec<PrivilegedSetting> {
    after
        .iter()
        .filter(|a| !before.iter().any(|b| b.key() == a.key()))
        .cloned()
        .collect()
}

/// What a launch's input adds that it may not: privileged settings and variables passed
/// through from the agent's environment. `queue_config` is the owner's config as
/// stored, `templated` the same with the launch's template values substituted, `merged`
/// that with the launch's resource args merged over it.
pub fn launch_problems(
    resource: ResourceType,
    queue_config: &Value,
    templated: &Value,
    merged: &Value,
) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    let owner = privileged_settings(resource, queue_config);
    let places: BTreeSet<(&str, &str)> = owner.iter().map(|s| (s.path.as_str(), s.kind)).collect();
    let filled = privileged_settings(resource, templated);
    for s in &filled {
        if !places.contains(&(s.path.as_str(), s.kind)) {
            problems.push(ConfigProblem::new(
                s.path.clone(),
                format!(
                    "a template value makes `{}`, which {}; launch-time input may not add privileged settings (only the queue's own config may hold them)",
                    s.shown, s.effect
                ),
            ));
        }
    }
    for s in added_privileges(&filled, &privileged_settings(resource, merged)) {
        problems.push(ConfigProblem::new(
            s.path.clone(),
            format!(
                "the resource args add `{}`, which {}; launch-time input may not add or change privileged settings (only the queue's own config may hold them)",
                s.shown, s.effect
            ),
        ));
    }
    if resource == ResourceType::Kubernetes {
        let before: BTreeSet<(String, String)> = kubernetes::credential_refs(templated)
            .into_iter()
            .map(|r| (r.path, r.shown))
            .collect();
        for r in kubernetes::credential_refs(merged) {
            if !before.contains(&(r.path.clone(), r.shown.clone())) {
                problems.push(ConfigProblem::new(
                    r.path,
                    format!(
                        "the resource args add `{}`; launch-time input may not reference Secrets or service accounts (a run could read another Secret of its namespace, such as an agent's API key): put the reference in the queue's own config",
                        r.shown
                    ),
                ));
            }
        }
    }
    let names = |v: &Value| -> BTreeSet<String> {
        env_passthrough(resource, v)
            .into_iter()
            .map(|(_, n)| n)
            .collect()
    };
    let owner_names = names(queue_config);
    let templated_names = names(templated);
    let mut report = |config: &Value, before: &BTreeSet<String>, by: &str| {
        for (path, name) in env_passthrough(resource, config) {
            if !before.contains(&name) {
                problems.push(ConfigProblem::new(
                    path,
                    format!(
                        "{by} pass the agent's own environment variable `{name}` to the run (`{name}` without a value); launch-time input may only set variables with a value (NAME=VALUE), and only the queue's own config may pass the agent's variables through"
                    ),
                ));
            }
        }
    };
    report(templated, &owner_names, "template values may not");
    report(merged, &templated_names, "the resource args may not");
    super::schema::sort_problems(merged, &mut problems);
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::substitute;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn launch(
        resource: ResourceType,
        owner: Value,
        values: &[(&str, Value)],
        args: Value,
    ) -> Vec<String> {
        let values: BTreeMap<String, Value> = values
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let templated = substitute(&owner, &values);
        let mut merged = templated.clone();
        crate::merge::deep_merge(&mut merged, &args);
        launch_problems(resource, &owner, &templated, &merged)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn launch_input_references_no_kubernetes_credentials() {
        use ResourceType::Kubernetes;
        let owner = json!({"spec": {"template": {"spec": {
            "serviceAccountName": "trainer",
            "containers": [{"name": "main", "env": [
                {"name": "DB", "valueFrom": {"secretKeyRef": {"name": "db", "key": "url"}}}
            ]}]
        }}}});
        // The owner's references, and launch input that adds none, are fine.
        let ok = launch(
            Kubernetes,
            owner.clone(),
            &[],
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "main", "env": [{"name": "LR", "value": "0.1"}]}
            ]}}}}),
        );
        assert!(ok.is_empty(), "{ok:#?}");
        let p = launch(
            Kubernetes,
            owner,
            &[],
            json!({"spec": {"template": {"spec": {
                "serviceAccountName": "hoist-agent",
                "automountServiceAccountToken": true,
                "containers": [{"name": "main",
                    "env": [{"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "hoist-api-key", "key": "key"}}}],
                    "envFrom": [{"secretRef": {"name": "hoist-api-key"}}]}],
                "volumes": [{"name": "k", "secret": {"secretName": "hoist-api-key"}}]
            }}}}),
        );
        let text = p.join("\n");
        for what in [
            "`serviceAccountName: hoist-agent`",
            "`automountServiceAccountToken: true`",
            "`secretKeyRef: hoist-api-key/key`",
            "`secretRef: hoist-api-key`",
            "`secret: hoist-api-key`",
        ] {
            assert!(text.contains(what), "{what} not refused: {p:#?}");
        }
        assert!(
            text.contains("spec.template.spec.containers[0].env[1].valueFrom.secretKeyRef: the resource args add"),
            "{p:#?}"
        );
        assert!(
            !text.contains("db/url"),
            "the owner's own reference is not refused: {p:#?}"
        );
    }

    #[test]
    fn launch_input_adds_no_privilege() {
        use ResourceType::*;
        // The owner's own privileged settings, filled in or not, are the owner's.
        assert!(
            launch(
                Docker,
                json!({"privileged": true, "volume": ["/data/{{ds}}:/data"]}),
                &[("ds", json!("imagenet"))],
                json!({"memory": "1g"}),
            )
            .is_empty()
        );
        let p = launch(
            Docker,
            json!({"network": "{{net}}", "env": ["A={{a}}"]}),
            &[("net", json!("host")), ("a", json!("1"))],
            json!({"cap-add": ["SYS_ADMIN"], "volume": ["/etc:/x"]}),
        );
        assert_eq!(p.len(), 3, "{p:#?}");
        assert!(
            p[0].starts_with("network: a template value makes `network: host`"),
            "{p:#?}"
        );
        assert!(
            p[1].starts_with("cap-add[0]: the resource args add `cap-add: CAP_SYS_ADMIN`"),
            "{p:#?}"
        );
        assert!(
            p[2].starts_with("volume[0]: the resource args add `volume: /etc`"),
            "{p:#?}"
        );
        // Changing the owner's host path is adding one.
        let p = launch(
            Docker,
            json!({"volume": ["/data:/data"]}),
            &[],
            json!({"volume": ["/:/data"]}),
        );
        assert_eq!(p.len(), 1, "{p:#?}");
        let p = launch(
            Kubernetes,
            json!({"spec": {"template": {"spec": {"containers": [{"name": "main"}]}}}}),
            &[],
            json!({"spec": {"template": {"spec": {"hostPID": true, "containers": [{"securityContext": {"privileged": true}}]}}}}),
        );
        assert_eq!(
            p.iter()
                .map(|m| m.split(':').next().unwrap())
                .collect::<Vec<_>>(),
            [
                "spec.template.spec.containers[0].securityContext.privileged",
                "spec.template.spec.hostPID"
            ],
            "{p:#?}"
        );
    }

    #[test]
    fn launch_input_passes_no_agent_variable() {
        use ResourceType::*;
        // The owner may pass variables through; launch input may not add any.
        assert!(launch(Docker, json!({"env": ["HOME"]}), &[], json!({})).is_empty());
        let p = launch(
            Docker,
            json!({"env": ["A=1", "{{v}}"]}),
            &[("v", json!("DATABASE_URL"))],
            json!({"e": ["GITHUB_PAT"]}),
        );
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(p[0].starts_with("env[1]: template values may not pass the agent's own environment variable `DATABASE_URL`"), "{p:#?}");
        assert!(p[1].starts_with("e[0]: the resource args may not pass the agent's own environment variable `GITHUB_PAT`"), "{p:#?}");
        // A map replacing a list keeps its nulls through the merge: still a passthrough.
        let p = launch(
            LocalProcess,
            json!({"env": ["A=1"]}),
            &[],
            json!({"env": {"MYSQL_PWD": null}}),
        );
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(p[0].starts_with("env.MYSQL_PWD: "), "{p:#?}");
        // Removing a variable of the owner's map is fine.
        assert!(
            launch(
                LocalProcess,
                json!({"env": {"A": "1"}}),
                &[],
                json!({"env": {"A": null}})
            )
            .is_empty()
        );
    }

    #[test]
    fn queue_privileges_come_from_the_config_itself() {
        use ResourceType::*;
        let raw = json!({"privileged": true, "network": "{{net}}"});
        let resolved = substitute(&raw, &BTreeMap::from([("net".to_string(), json!("host"))]));
        let e = queue_privileges(Docker, &raw, &resolved).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].path, "network");
        let raw = json!({"privileged": true, "volume": "/data/{{ds}}:/d"});
        let resolved = substitute(&raw, &BTreeMap::from([("ds".to_string(), json!("x"))]));
        let found = queue_privileges(Docker, &raw, &resolved).unwrap();
        let shown: Vec<&str> = found.iter().map(|s| s.shown.as_str()).collect();
        assert_eq!(
            shown,
            [
                "privileged: true",
                "volume: /data/{{ds}}",
                "volume: /data/x"
            ]
        );
        assert!(
            queue_privileges(Sagemaker, &raw, &resolved)
                .unwrap()
                .is_empty()
        );
    }
}
