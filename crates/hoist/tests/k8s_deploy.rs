//! The agent inside a cluster: `deploy/kubernetes` and `deploy/docker/agent.Dockerfile`
//! on the test cluster of `scripts/test-env.sh` (Kubernetes v1.20 in its own network
//! namespace, its API server also on the host's 127.0.0.1:6443; `source
//! ~/.cache/hoist/test-env.sh`).
//!
//! - The base, rendered by kubectl's own (old) kustomize, keeps what it promises
//!   (labels, the agent's security context, the API key only by reference, nothing granted
//!   cluster-wide, the builders' role exactly their requests), and the API server accepts
//!   it, the example overlay and the buildah overlay (server-side dry run).
//! - The base's placeholders stop the agent (its config and its API key).
//! - The agent image, built from the Dockerfile's `prebuilt` target on the local Debian
//!   base, runs as the base's Deployment and serves a hoist server's queues.
//!
//! Without `HOIST_TEST_K8S=1` (and, for the image, `HOIST_TEST_DOCKER=1` and the host's
//! API forward `HOIST_TEST_K8S_HOST_API=1`) each test is skipped with a note, unless
//! `HOIST_TEST_REQUIRE_SERVICES` is set (then it fails).
//!
//! Namespaces: a server-side dry run does not create the namespaces it is given, and
//! tests run in parallel (several people share the cluster), so each test renders the
//! base, renames its namespaces (and its cluster-wide ClusterRoles) to names of its own,
//! creates those namespaces and deletes them when it ends, whatever its outcome.
//!
//! Networking: the kubelet's Docker daemon runs in the host's network namespace, so a
//! `hostNetwork` pod is on the host's loopback, not the cluster's: the in-cluster agent
//! reaches the API server at 127.0.0.1:6443 (test-env's forwarder) and the test's hoist
//! server, which therefore runs on the host like every other CLI test's.

mod cli_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use cli_support::{HOIST, World, is_terminal};
use hoist_testkit::{Kubectl as Cluster, service_missing, show_output as show};
use serde_json::{Value, json};

/// How long the cluster may take to do something it is expected to do.
const LONG: Duration = hoist_testkit::LONG;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A name no other test (or earlier run of this one) uses: a DNS label.
fn unique(prefix: &str) -> String {
    hoist_testkit::unique(&format!("k8sdeploy-{prefix}"))
}

// ---------------------------------------------------------------------------------
// The cluster, through the test environment's kubectl 1.20 and admin kubeconfig.

/// `kubectl kustomize DIR` as objects.
fn render(cluster: &Cluster, dir: &Path) -> Vec<Value> {
    let text = cluster.ok(&["kustomize", &dir.to_string_lossy()]);
    let docs: Vec<Value> = serde_saphyr::from_str_multiple(&text)
        .unwrap_or_else(|e| panic!("kubectl kustomize printed no YAML objects: {e}\n{text}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// `kubectl apply -f` of `objects` (as one List), with `extra` flags: stdout.
fn apply(cluster: &Cluster, objects: &[Value], extra: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("objects.json");
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    std::fs::write(&file, serde_json::to_vec_pretty(&list).expect("json")).expect("write");
    let file = file.to_string_lossy().into_owned();
    let mut args = vec!["apply", "-f", file.as_str()];
    args.extend_from_slice(extra);
    cluster.ok(&args)
}

/// Namespaces and cluster roles of one test: created by it, deleted when it ends
/// (waiting until the namespaces' pods are gone).
struct Owned<'a> {
    cluster: &'a Cluster,
    namespaces: Vec<String>,
    cluster_roles: Vec<String>,
}

impl<'a> Owned<'a> {
    fn new(cluster: &'a Cluster) -> Owned<'a> {
        Owned {
            cluster,
            namespaces: Vec::new(),
            cluster_roles: Vec::new(),
        }
    }

    fn namespace(&mut self, name: &str) {
        self.namespaces.push(name.to_string());
        self.cluster.ok(&["create", "namespace", name]);
    }
}

impl Drop for Owned<'_> {
    fn drop(&mut self) {
        for r in &self.cluster_roles {
            let o = self
                .cluster
                .output(&["delete", "clusterrole", r, "--ignore-not-found"]);
            if !o.status.success() {
                eprintln!("cleanup: could not delete clusterrole {r}: {}", show(&o));
            }
        }
        if self.namespaces.is_empty() {
            return;
        }
        let mut args = vec![
            "delete",
            "namespace",
            "--ignore-not-found",
            "--timeout=180s",
        ];
        args.extend(self.namespaces.iter().map(String::as_str));
        let o = self.cluster.output(&args);
        if !o.status.success() {
            eprintln!(
                "cleanup: could not delete namespaces {:?}: {}",
                self.namespaces,
                show(&o)
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// The rendered manifests.

fn kind_name(o: &Value) -> (String, String) {
    (
        o["kind"].as_str().unwrap_or_default().to_string(),
        o["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

fn find<'v>(objs: &'v [Value], kind: &str) -> Vec<&'v Value> {
    objs.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'v>(objs: &'v [Value], kind: &str) -> &'v Value {
    match find(objs, kind).as_slice() {
        [o] => o,
        other => panic!("expected one {kind}, found {}", other.len()),
    }
}

fn one_mut<'v>(objs: &'v mut [Value], kind: &str) -> &'v mut Value {
    let mut it = objs.iter_mut().filter(|o| o["kind"] == kind);
    let o = it.next().unwrap_or_else(|| panic!("no {kind}"));
    assert!(it.next().is_none(), "more than one {kind}");
    o
}

/// Renames namespaces (`map`: old → new) wherever the manifests name one: Namespace
/// objects, `metadata.namespace`, RoleBinding subjects. Fails when an old name is left
/// in any other field that holds a namespace.
fn rename_namespaces(objs: &mut [Value], map: &BTreeMap<&str, String>) {
    let rename = |v: &mut Value| {
        if let Some(new) = v.as_str().and_then(|s| map.get(s)) {
            *v = Value::String(new.clone());
        }
    };
    for o in objs.iter_mut() {
        if o["kind"] == "Namespace" {
            rename(&mut o["metadata"]["name"]);
        }
        if o["metadata"].get("namespace").is_some() {
            rename(&mut o["metadata"]["namespace"]);
        }
        if let Some(subjects) = o.get_mut("subjects").and_then(Value::as_array_mut) {
            for s in subjects {
                if s.get("namespace").is_some() {
                    rename(&mut s["namespace"]);
                }
            }
        }
    }
    for o in objs.iter() {
        let text = serde_json::to_string(o).expect("json");
        for old in map.keys() {
            assert!(
                !text.contains(&format!("\"namespace\":\"{old}\"")),
                "namespace {old} left in {text}"
            );
        }
    }
}

/// Renames the cluster-wide ClusterRole `from` (and every roleRef to it).
fn rename_cluster_role(objs: &mut [Value], from: &str, to: &str) {
    let mut found = false;
    for o in objs.iter_mut() {
        if o["kind"] == "ClusterRole" && o["metadata"]["name"] == from {
            o["metadata"]["name"] = json!(to);
            found = true;
        }
        if o["roleRef"]["kind"] == "ClusterRole" && o["roleRef"]["name"] == from {
            o["roleRef"]["name"] = json!(to);
        }
    }
    assert!(found, "no ClusterRole {from}");
}

/// The base's ClusterRoles (the runner's and the builders'), cluster-wide objects that
/// tests running at once would share: renamed `TAG-runner` and `TAG-builder`. Their new
/// names.
fn rename_cluster_roles(objs: &mut [Value], tag: &str) -> Vec<String> {
    ["runner", "builder"]
        .into_iter()
        .map(|what| {
            let to = format!("{tag}-{what}");
            rename_cluster_role(objs, &format!("hoist-agent-{what}"), &to);
            to
        })
        .collect()
}

/// The rules of a ClusterRole as resource → verbs (`"batch/jobs"`, `"pods/log"`).
fn rules_of(role: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for rule in role["rules"].as_array().expect("rules") {
        let strings = |k: &str| -> Vec<String> {
            rule[k]
                .as_array()
                .unwrap_or_else(|| panic!("{k} in {rule}"))
                .iter()
                .map(|v| v.as_str().expect("a string").to_string())
                .collect()
        };
        for group in strings("apiGroups") {
            for resource in strings("resources") {
                let key = if group.is_empty() {
                    resource
                } else {
                    format!("{group}/{resource}")
                };
                out.entry(key).or_default().extend(strings("verbs"));
            }
        }
    }
    out
}

fn decode(b64: &Value) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.as_str().expect("a base64 string"))
        .expect("base64");
    String::from_utf8(bytes).expect("utf-8")
}

/// What the base promises, checked on its rendered objects.
fn check_base(objs: &[Value]) {
    let names: BTreeSet<(String, String)> = objs.iter().map(kind_name).collect();
    let cm = one(objs, "ConfigMap");
    let secret = one(objs, "Secret");
    let cm_name = cm["metadata"]["name"].as_str().expect("config map name");
    let secret_name = secret["metadata"]["name"].as_str().expect("secret name");
    let want: BTreeSet<(String, String)> = [
        ("Namespace", "hoist"),
        ("Namespace", "hoist-runs"),
        ("ServiceAccount", "hoist-agent"),
        ("ClusterRole", "hoist-agent-runner"),
        ("RoleBinding", "hoist-agent-runner"),
        ("ClusterRole", "hoist-agent-builder"),
        ("RoleBinding", "hoist-agent-builder"),
        ("ConfigMap", cm_name),
        ("Secret", secret_name),
        ("Deployment", "hoist-agent"),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), n.to_string()))
    .collect();
    assert_eq!(names, want);
    assert!(
        cm_name.starts_with("hoist-agent-config-") && secret_name.starts_with("hoist-api-key-"),
        "generated names (a hash of the content, so a change rolls the Deployment): {cm_name}, {secret_name}"
    );

    // Labels: every object, generated ones included.
    for o in objs {
        let labels = &o["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/part-of"], "hoist", "{o}");
        assert!(labels["app.kubernetes.io/name"].is_string(), "{o}");
        assert!(labels["app.kubernetes.io/component"].is_string(), "{o}");
    }

    // Namespaces: the agent's restricted, the runs' baseline; everything namespaced of
    // the agent in `hoist`, only the runner's and the builders' RoleBindings in
    // `hoist-runs` (the builds' default namespace is the runs').
    for ns in find(objs, "Namespace") {
        let level = match ns["metadata"]["name"].as_str() {
            Some("hoist") => "restricted",
            _ => "baseline",
        };
        let labels = &ns["metadata"]["labels"];
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], level, "{ns}");
        assert_eq!(labels["pod-security.kubernetes.io/warn"], level, "{ns}");
    }
    for o in objs {
        let (kind, _) = kind_name(o);
        let ns = o["metadata"]["namespace"].as_str();
        match kind.as_str() {
            "Namespace" | "ClusterRole" => assert_eq!(ns, None, "{o}"),
            "RoleBinding" => assert_eq!(ns, Some("hoist-runs"), "{o}"),
            _ => assert_eq!(ns, Some("hoist"), "{o}"),
        }
    }

    // RBAC: granted per namespace, never cluster-wide; no wildcard; nothing that
    // creates pods or edits RBAC. Each RoleBinding grants the ClusterRole of its name
    // to the agent's service account.
    assert!(find(objs, "ClusterRoleBinding").is_empty());
    let rbs = find(objs, "RoleBinding");
    assert_eq!(rbs.len(), 2);
    for rb in rbs {
        assert_eq!(
            rb["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": rb["metadata"]["name"]}),
            "{rb}"
        );
        assert_eq!(
            rb["subjects"],
            json!([{"kind": "ServiceAccount", "name": "hoist-agent", "namespace": "hoist"}])
        );
    }
    // The builders' role is exactly the build engine's requests (builders/job).
    let builder = find(objs, "ClusterRole")
        .into_iter()
        .find(|r| r["metadata"]["name"] == "hoist-agent-builder")
        .expect("the ClusterRole hoist-agent-builder");
    let verbs = |v: &[&str]| -> BTreeSet<String> { v.iter().map(|s| s.to_string()).collect() };
    assert_eq!(
        rules_of(builder),
        BTreeMap::from([
            (
                "batch/jobs".to_string(),
                verbs(&["create", "get", "list", "watch", "delete"])
            ),
            (
                "pods".to_string(),
                verbs(&["get", "list", "watch", "delete", "deletecollection"])
            ),
            ("pods/log".to_string(), verbs(&["get"])),
            (
                "secrets".to_string(),
                verbs(&["create", "get", "list", "delete"])
            ),
        ])
    );
    let rules: Vec<&Value> = find(objs, "ClusterRole")
        .into_iter()
        .flat_map(|role| role["rules"].as_array().expect("rules"))
        .collect();
    assert!(!rules.is_empty());
    for rule in rules {
        let list = |k: &str| -> Vec<&str> {
            rule[k]
                .as_array()
                .unwrap_or_else(|| panic!("{k} in {rule}"))
                .iter()
                .map(|v| v.as_str().expect("a string"))
                .collect()
        };
        let (groups, resources, verbs) = (list("apiGroups"), list("resources"), list("verbs"));
        assert!(rule.get("nonResourceURLs").is_none(), "{rule}");
        for v in groups.iter().chain(&resources).chain(&verbs) {
            assert!(!v.contains('*'), "wildcard in {rule}");
        }
        for v in &verbs {
            assert!(
                [
                    "create",
                    "get",
                    "list",
                    "watch",
                    "delete",
                    "patch",
                    "deletecollection"
                ]
                .contains(v),
                "verb {v} in {rule}"
            );
        }
        assert!(
            !groups.contains(&"rbac.authorization.k8s.io"),
            "RBAC rule {rule}"
        );
        if groups.contains(&"") && resources.contains(&"pods") {
            assert!(!verbs.contains(&"create"), "creates pods: {rule}");
        }
    }

    // The Deployment: one replica replaced, not rolled, with the seed's security context.
    let d = one(objs, "Deployment");
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "hoist-agent");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert!(pod.get("hostNetwork").is_none() && pod.get("hostPID").is_none());
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 1000);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert!(sc["capabilities"].get("add").is_none());
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert!(c["resources"]["limits"]["memory"].is_string(), "{c}");
    assert!(c["resources"]["requests"]["cpu"].is_string(), "{c}");

    // The API key only by reference to the generated Secret; no literal secret values.
    let env = c["env"].as_array().expect("env");
    let key = env
        .iter()
        .find(|e| e["name"] == "HOIST_API_KEY")
        .expect("HOIST_API_KEY in the agent's env");
    assert!(key.get("value").is_none(), "{key}");
    let r = &key["valueFrom"]["secretKeyRef"];
    assert_eq!(r["name"], secret_name);
    let k = r["key"].as_str().expect("secretKeyRef.key");
    assert!(
        secret["data"][k].is_string(),
        "the Secret has no {k}: {secret}"
    );
    for e in env {
        let name = e["name"].as_str().expect("env name");
        if e.get("value").is_some() {
            assert!(
                !hoist_core::secret::looks_secret(name),
                "a literal value for {name}"
            );
        }
    }

    // The config at ~/.config/hoist/launch-config.yaml, read-only; HOME writable.
    let mounts = c["volumeMounts"].as_array().expect("volumeMounts");
    let vols = pod["volumes"].as_array().expect("volumes");
    let mount = |path: &str| {
        mounts
            .iter()
            .find(|m| m["mountPath"] == path)
            .unwrap_or_else(|| panic!("nothing mounted at {path}"))
    };
    let volume = |name: &Value| {
        vols.iter()
            .find(|v| &v["name"] == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    };
    let cfg = mount("/home/hoist/.config/hoist");
    assert_eq!(cfg["readOnly"], true);
    assert_eq!(volume(&cfg["name"])["configMap"]["name"], cm_name);
    assert!(cm["data"]["launch-config.yaml"].is_string(), "{cm}");
    for writable in ["/home/hoist", "/tmp"] {
        let m = mount(writable);
        assert!(volume(&m["name"])["emptyDir"].is_object(), "{m}");
    }
}

/// A copy of `deploy/` (the base and the overlays) with the overlays' `api-key` files,
/// which version control does not hold.
fn deploy_copy() -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for e in std::fs::read_dir(from).expect("read_dir") {
            let e = e.expect("entry");
            let t = to.join(e.file_name());
            if e.file_type().expect("file type").is_dir() {
                copy(&e.path(), &t);
            } else {
                std::fs::copy(e.path(), &t).expect("copy");
            }
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    copy(&repo_root().join("deploy"), &dir.path().join("deploy"));
    for overlay in ["example", "buildah"] {
        std::fs::write(
            dir.path()
                .join(format!("deploy/overlays/{overlay}/api-key")),
            "hoist_not_a_real_key\n",
        )
        .expect("write api-key");
    }
    dir
}

/// The server-side dry run of `objs` after moving them to namespaces of this test:
/// every object accepted, nothing created.
fn dry_run(cluster: &Cluster, objs: &[Value], namespaces: &[&str]) {
    let mut owned = Owned::new(cluster);
    let tag = unique("dry");
    let map: BTreeMap<&str, String> = namespaces
        .iter()
        .map(|ns| (*ns, format!("{tag}-{ns}")))
        .collect();
    let mut objs = objs.to_vec();
    rename_namespaces(&mut objs, &map);
    let roles = rename_cluster_roles(&mut objs, &tag);
    for ns in map.values() {
        owned.namespace(ns);
    }
    let out = apply(cluster, &objs, &["--dry-run=server"]);
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), objs.len(), "one line per object:\n{out}");
    for (kind, name) in objs.iter().map(kind_name) {
        // `deployment.apps/hoist-agent created (server dry run)`
        let (kind, name) = (kind.to_lowercase(), format!("/{name} "));
        assert!(
            lines.iter().any(|l| l.starts_with(&kind)
                && l.contains(&name)
                && l.ends_with("(server dry run)")),
            "{kind} {name} not accepted:\n{out}"
        );
    }
    let agent_ns = &map["hoist"];
    assert!(!cluster.exists(&["get", "deployment", "hoist-agent", "-n", agent_ns]));
    assert!(!cluster.exists(&["get", "serviceaccount", "hoist-agent", "-n", agent_ns]));
    for role in &roles {
        assert!(!cluster.exists(&["get", "clusterrole", role]));
    }
}

#[test]
fn kustomize_base_and_example_overlay_pass_a_server_dry_run() {
    if service_missing(&[("HOIST_TEST_K8S", "1")]) {
        return;
    }
    let cluster = Cluster::from_env();
    let base = render(&cluster, &repo_root().join("deploy/kubernetes"));
    check_base(&base);
    dry_run(&cluster, &base, &["hoist", "hoist-runs"]);

    // The example overlay: the base plus a run namespace, its own config, key and image.
    let copy = deploy_copy();
    let example = render(&cluster, &copy.path().join("deploy/overlays/example"));
    let d = one(&example, "Deployment");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/ml/hoist-agent:0.1.0"
    );
    let secret = one(&example, "Secret");
    assert_eq!(decode(&secret["data"]["api-key"]), "hoist_not_a_real_key\n");
    let rbs: BTreeSet<&str> = find(&example, "RoleBinding")
        .iter()
        .map(|rb| rb["metadata"]["namespace"].as_str().expect("namespace"))
        .collect();
    assert_eq!(rbs, BTreeSet::from(["hoist-runs", "ml-jobs"]));
    dry_run(&cluster, &example, &["hoist", "hoist-runs", "ml-jobs"]);

    // The buildah overlay: the base plus a `privileged` build namespace where the
    // builders' role (only) is granted, and a config that builds there.
    let buildah = render(&cluster, &copy.path().join("deploy/overlays/buildah"));
    let ns = find(&buildah, "Namespace")
        .into_iter()
        .find(|n| n["metadata"]["name"] == "hoist-builds")
        .expect("the namespace hoist-builds");
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    let rbs: BTreeSet<(&str, &str)> = find(&buildah, "RoleBinding")
        .iter()
        .map(|rb| {
            (
                rb["metadata"]["namespace"].as_str().expect("namespace"),
                rb["roleRef"]["name"].as_str().expect("roleRef"),
            )
        })
        .collect();
    assert_eq!(
        rbs,
        BTreeSet::from([
            ("hoist-runs", "hoist-agent-runner"),
            ("hoist-runs", "hoist-agent-builder"),
            ("hoist-builds", "hoist-agent-builder"),
        ])
    );
    let config = one(&buildah, "ConfigMap")["data"]["launch-config.yaml"]
        .as_str()
        .expect("launch-config.yaml");
    assert!(
        config.contains("type: buildah") && config.contains("namespace: hoist-builds"),
        "{config}"
    );
    assert_eq!(
        decode(&one(&buildah, "Secret")["data"]["api-key"]),
        "hoist_not_a_real_key\n"
    );
    dry_run(&cluster, &buildah, &["hoist", "hoist-runs", "hoist-builds"]);
}

/// `hoist agent` as the Deployment starts it, with `config` and `HOIST_API_KEY=key`, in
/// a home of its own; `--check-config` when `check`.
fn agent_with(config: &str, key: &str, check: bool) -> Output {
    let home = tempfile::tempdir().expect("tempdir");
    let file = home.path().join("launch-config.yaml");
    std::fs::write(&file, config).expect("write config");
    let mut c = Command::new(HOIST);
    c.arg("agent");
    if check {
        c.arg("--check-config");
    }
    c.arg("--config")
        .arg(&file)
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join(".config"))
        .env("HOIST_API_KEY", key)
        .env_remove("HOIST_HOST")
        .stdin(Stdio::null());
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hoist agent");
    let t0 = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let o = child.wait_with_output().expect("agent output");
            panic!("hoist agent did not exit within 60 s: {}", show(&o));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("agent output")
}

#[test]
fn the_base_placeholders_stop_the_agent() {
    if service_missing(&[("HOIST_TEST_K8S", "1")]) {
        return;
    }
    let cluster = Cluster::from_env();
    let base = render(&cluster, &repo_root().join("deploy/kubernetes"));
    let config = one(&base, "ConfigMap")["data"]["launch-config.yaml"]
        .as_str()
        .expect("launch-config.yaml")
        .to_string();
    let key = decode(&one(&base, "Secret")["data"]["api-key"]);

    // The base's config: every placeholder named, with its line.
    let o = agent_with(&config, "hoist_not_a_real_key", true);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    for p in [
        "base_url: \"<your-hoist-server>\" is a placeholder",
        "queues[0]: \"<your-kubernetes-queue>\" is a placeholder",
        "registry.uri: \"<your-registry-host>\" is a placeholder",
    ] {
        assert!(err.contains(p), "no {p:?} in:\n{}", show(&o));
    }
    assert_eq!(err.matches("is a placeholder").count(), 3, "{}", show(&o));

    // The example overlay's config is complete.
    let example =
        std::fs::read_to_string(repo_root().join("deploy/overlays/example/launch-config.yaml"))
            .expect("the example's launch-config.yaml");
    let o = agent_with(&example, "hoist_not_a_real_key", true);
    assert!(o.status.success(), "{}", show(&o));
    // So is the buildah overlay's, without a warning.
    let buildah =
        std::fs::read_to_string(repo_root().join("deploy/overlays/buildah/launch-config.yaml"))
            .expect("the buildah overlay's launch-config.yaml");
    let o = agent_with(&buildah, "hoist_not_a_real_key", true);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("warning"),
        "{}",
        show(&o)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("type: buildah") && out.contains("namespace: hoist-builds"),
        "{out}"
    );

    // The base's API key stops the agent before it talks to any server (the URL
    // below would refuse the connection; the agent would retry, not exit).
    let reachable_nowhere = example.replace("https://hoist.example.com", "http://127.0.0.1:9");
    assert_ne!(reachable_nowhere, example);
    let o = agent_with(&reachable_nowhere, &key, false);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("the agent's API key is {key:?}, a placeholder"))
            && err.contains("hoist-api-key"),
        "{}",
        show(&o)
    );
}

// ---------------------------------------------------------------------------------
// The agent image in the cluster.

/// The agent image, built from `deploy/docker/agent.Dockerfile` (target `prebuilt`, the
/// test's own binary with its debug info stripped, on the local Debian base); removed
/// when dropped.
struct AgentImage {
    tag: String,
}

impl AgentImage {
    fn build(base_image: &str) -> AgentImage {
        let ctx = tempfile::tempdir().expect("tempdir");
        let bin = ctx.path().join("hoist");
        let o = Command::new("objcopy")
            .arg("--strip-debug")
            .arg(HOIST)
            .arg(&bin)
            .output()
            .expect("run objcopy (binutils)");
        assert!(o.status.success(), "objcopy: {}", show(&o));
        let tag = format!("hoist-test/agent:{}", unique("image"));
        // The legacy builder: this engine has no BuildKit, and it builds every stage
        // before the target, which `prebuilt` is laid out for.
        let o = Command::new("docker")
            .args(["build", "--network", "none", "--target", "prebuilt"])
            .args(["--build-arg", &format!("BASE_IMAGE={base_image}")])
            .arg("-f")
            .arg(repo_root().join("deploy/docker/agent.Dockerfile"))
            .args(["-t", &tag])
            .arg(ctx.path())
            .env("DOCKER_BUILDKIT", "0")
            .stdin(Stdio::null())
            .output()
            .expect("run docker build");
        assert!(o.status.success(), "docker build: {}", show(&o));
        AgentImage { tag }
    }
}

impl Drop for AgentImage {
    fn drop(&mut self) {
        let o = Command::new("docker")
            .args(["rmi", "--force", &self.tag])
            .output();
        if let Ok(o) = o
            && !o.status.success()
        {
            eprintln!("cleanup: docker rmi {}: {}", self.tag, show(&o));
        }
    }
}

/// The agent's pod, described with its logs when the test fails.
struct AgentPod<'a> {
    cluster: &'a Cluster,
    namespace: String,
}

impl AgentPod<'_> {
    /// The agent's log so far (the kubelet's view of the container may lag behind the
    /// agent itself: until it shows the container started, kubectl has no log).
    fn logs(&self) -> String {
        let t0 = Instant::now();
        loop {
            let o = self.cluster.output(&[
                "logs",
                "-n",
                &self.namespace,
                "deployment/hoist-agent",
                "--tail=-1",
            ]);
            if o.status.success() {
                return String::from_utf8_lossy(&o.stdout).into_owned();
            }
            if t0.elapsed() > Duration::from_secs(30) {
                return format!("(no log: {})", show(&o));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The pod's phase and its container's state, as JSON.
    fn state(&self) -> Value {
        let out = self.cluster.ok(&[
            "get",
            "pods",
            "-n",
            &self.namespace,
            "-l",
            "app.kubernetes.io/name=hoist-agent",
            "-o",
            "json",
        ]);
        serde_json::from_str(&out).expect("pods as JSON")
    }

    /// Fails at once when the agent's container ended (it crashed or refused to start).
    fn assert_alive(&self) {
        let pods = self.state();
        for p in pods["items"].as_array().into_iter().flatten() {
            for cs in p["status"]["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let ended = cs["state"]["terminated"].is_object()
                    || cs["lastState"]["terminated"].is_object()
                    || cs["state"]["waiting"]["reason"]
                        .as_str()
                        .is_some_and(|r| r != "ContainerCreating");
                assert!(!ended, "the agent's container is not running: {cs}");
            }
        }
    }
}

impl Drop for AgentPod<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let o = self
                .cluster
                .output(&["describe", "pods", "-n", &self.namespace]);
            eprintln!(
                "--- kubectl describe pods -n {}\n{}{}",
                self.namespace,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            eprintln!("--- the agent's log\n{}", self.logs());
        }
    }
}

/// Polls `hoist run show` until the run ended (the agent's pod still running): its
/// JSON.
fn wait_ended(w: &World, id: &str, pod: &AgentPod) -> Value {
    w.wait_run(id, "ended", |r| {
        pod.assert_alive();
        is_terminal(r)
    })
}

/// The seed's Job (W&B's Kubernetes queue config), without a namespace: the run goes to
/// the agent's default one. The image comes with the run.
const SEED_JOB: &str = "\
apiVersion: batch/v1
kind: Job
metadata:
  name: in-cluster
spec:
  template:
    spec:
      containers:
        - name: main
          imagePullPolicy: IfNotPresent
      restartPolicy: Never
";

#[test]
fn agent_image_runs_as_the_deployment_and_serves_queues() {
    if service_missing(&[
        ("HOIST_TEST_K8S", "1"),
        ("HOIST_TEST_K8S_HOST_API", "1"),
        ("HOIST_TEST_DOCKER", "1"),
    ]) {
        return;
    }
    let base_image = std::env::var("HOIST_TEST_PYTHON_IMAGE")
        .unwrap_or_else(|_| "hoist-test/python:3-slim".to_string());
    let job_image = std::env::var("HOIST_TEST_BUSYBOX_IMAGE")
        .unwrap_or_else(|_| "hoist-test/busybox:latest".to_string());
    let registry =
        std::env::var("HOIST_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".to_string());
    let cluster = Cluster::from_env();

    // The base's two namespaces, as this test's.
    let tag = unique("agent");
    let map = BTreeMap::from([
        ("hoist", format!("{tag}-hoist")),
        ("hoist-runs", format!("{tag}-runs")),
    ]);
    let (agent_ns, runs_ns) = (map["hoist"].clone(), map["hoist-runs"].clone());

    // A hoist server (on the host's loopback, where the hostNetwork pod is too) with a
    // local-process and a kubernetes queue, and an API key for the agent.
    let w = World::start();
    w.login_admin();
    w.run(&[
        "queue",
        "create",
        "in-cluster",
        "--resource",
        "local-process",
    ])
    .ok();
    let queue_config = w.file("in-cluster-k8s.yaml", SEED_JOB);
    w.run(&[
        "queue",
        "create",
        "in-cluster-k8s",
        "--resource",
        "kubernetes",
        "--config",
        &queue_config.to_string_lossy(),
    ])
    .ok();
    let key = w
        .run(&["key", "create", "--name", "k8s-agent"])
        .ok()
        .stdout
        .trim()
        .to_string();
    assert!(!key.is_empty());

    // Dropped last: after the namespaces (and so the agent's container) are gone.
    let image = AgentImage::build(&base_image);

    // The base, in namespaces of this test, with the test's image, config and key.
    let mut objs = render(&cluster, &repo_root().join("deploy/kubernetes"));
    rename_namespaces(&mut objs, &map);
    let roles = rename_cluster_roles(&mut objs, &tag);
    let config = format!(
        "base_url: http://127.0.0.1:{port}\n\
         name: k8s-agent\n\
         queues: [in-cluster, in-cluster-k8s]\n\
         max_jobs: 2\n\
         registry:\n  uri: {registry}/k8sdeploy\n\
         builder:\n  type: noop\n\
         kubernetes:\n  namespace: {runs_ns}\n",
        port = w.port
    );
    one_mut(&mut objs, "ConfigMap")["data"] = json!({"launch-config.yaml": config});
    // As a person would write the key file: with a newline at the end.
    one_mut(&mut objs, "Secret")["data"] = json!({
        "api-key": base64::engine::general_purpose::STANDARD.encode(format!("{key}\n")),
    });
    {
        let pod = &mut one_mut(&mut objs, "Deployment")["spec"]["template"]["spec"];
        pod["hostNetwork"] = json!(true);
        let c = &mut pod["containers"][0];
        c["image"] = json!(image.tag);
        c["imagePullPolicy"] = json!("Never");
        let env = c["env"].as_array_mut().expect("env");
        env.push(json!({"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"}));
        env.push(json!({"name": "KUBERNETES_SERVICE_PORT", "value": "6443"}));
    }

    let mut owned = Owned::new(&cluster);
    for ns in map.values() {
        owned.namespace(ns);
    }
    owned.cluster_roles.extend(roles);
    apply(&cluster, &objs, &[]);
    let pod = AgentPod {
        cluster: &cluster,
        namespace: agent_ns.clone(),
    };

    // The agent registers with the server.
    let t0 = Instant::now();
    loop {
        let list = w.run(&["agent", "list", "-o", "json"]).ok().json();
        let up = list.as_array().expect("agents").iter().any(|a| {
            a["name"] == "k8s-agent" && matches!(a["status"].as_str(), Some("polling" | "running"))
        });
        if up {
            break;
        }
        pod.assert_alive();
        assert!(
            t0.elapsed() < LONG,
            "the in-cluster agent did not register within {LONG:?}: {list:#}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Its Kubernetes client is the pod's service account, its runs' namespace the
    // configured one.
    let log = pod.logs();
    assert!(
        log.contains("Kubernetes runner ready.")
            && log.contains("in-cluster")
            && log.contains(&format!("runs go to namespace {runs_ns}")),
        "{log}"
    );

    // A local-process run: it runs inside the agent's container, as uid 1000, on a
    // read-only root file system, with the pod's service account mounted.
    let id = w
        .run(&[
            "launch",
            "--queue",
            "in-cluster",
            "--",
            "sh",
            "-c",
            "echo uid=$(id -u); \
             echo rootfs=$(awk '$2 == \"/\" {split($4, o, \",\"); print o[1]}' /proc/mounts); \
             echo ns=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace)",
        ])
        .ok()
        .stdout
        .trim()
        .to_string();
    let r = wait_ended(&w, &id, &pod);
    assert_eq!(r["state"], "finished", "{r:#}");
    let lines = w.job_lines(&id);
    for want in [
        "uid=1000".to_string(),
        "rootfs=ro".to_string(),
        format!("ns={agent_ns}"),
    ] {
        assert!(
            lines.contains(&want),
            "no {want:?} in the run's log: {lines:?}"
        );
    }

    // A kubernetes run: a Job in the runs' namespace, created, watched, its log
    // followed and its objects deleted by the agent, with the base's RBAC only. Pods
    // need the namespace's default service account (made by the controller manager).
    let t0 = Instant::now();
    while !cluster.exists(&["get", "serviceaccount", "default", "-n", &runs_ns]) {
        assert!(
            t0.elapsed() < LONG,
            "no default service account in {runs_ns}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let id = w
        .run(&[
            "launch",
            "--queue",
            "in-cluster-k8s",
            "--image",
            &job_image,
            "--",
            "sh",
            "-c",
            "echo hello-from-a-job; echo ns=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace)",
        ])
        .ok()
        .stdout
        .trim()
        .to_string();
    let r = wait_ended(&w, &id, &pod);
    assert_eq!(r["state"], "finished", "{r:#}");
    let lines = w.job_lines(&id);
    for want in ["hello-from-a-job".to_string(), format!("ns={runs_ns}")] {
        assert!(
            lines.contains(&want),
            "no {want:?} in the run's log: {lines:?}"
        );
    }
    cluster.wait_none(
        &runs_ns,
        "jobs,pods,secrets",
        &format!("hoist.dev/run-id={id}"),
    );

    // The base's RBAC was enough: the API server refused the agent nothing.
    let log = pod.logs();
    let lower = log.to_lowercase();
    assert!(
        !lower.contains("403") && !lower.contains("forbidden"),
        "the agent was refused something:\n{log}"
    );
    drop(pod);
    drop(owned);
    drop(image);
}
