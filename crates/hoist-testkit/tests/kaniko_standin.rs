//! The Kaniko stand-in executor (`scripts/kaniko-standin/executor.py` in the image
//! `$HOIST_TEST_KANIKO_IMAGE`, built by `scripts/test-env.sh`) against the real parts:
//! bare Jobs on the test cluster read a build context from moto (S3), fake-gcs-server
//! (GCS) and Azurite (Azure Blob, https with its test CA), build with buildah and push
//! to the test registries; the pushed image is then pulled and run by the test's Docker
//! daemon. Further contract checks run the image with `docker run` (no cluster needed).
//!
//! What the stand-in's pod needs (and real Kaniko does not): `hostNetwork: true`, so
//! that it reaches the services on the host's 127.0.0.1 (a hostNetwork pod runs in the
//! tests' dockerd's network namespace, the host's), and root with `CAP_SYS_ADMIN`
//! (buildah's chroot isolation mounts /proc, /sys and binds for RUN steps); not
//! `privileged`.
//!
//! A test whose services are missing is skipped with a note, unless
//! `HOIST_TEST_REQUIRE_SERVICES` is set (then it fails). Each cluster test has a
//! namespace of its own; buckets, containers and image repositories have unique names.
//! (Pushed images stay in the test registries: they are a few hundred bytes over the
//! shared busybox layers.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hoist_testkit::{Kubectl, LONG, TestNamespace, show_output, unique};
use serde_json::{Value, json};

// ------------------------------------------------------------------------ services

fn require(vars: &[&str]) -> bool {
    let missing: Vec<&str> = vars
        .iter()
        .copied()
        .filter(|v| std::env::var(v).map_or(true, |x| x.is_empty()))
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("HOIST_TEST_REQUIRE_SERVICES").is_some() {
        panic!(
            "HOIST_TEST_REQUIRE_SERVICES is set but {} not: run scripts/test-env.sh and source ~/.cache/hoist/test-env.sh",
            missing.join(", ")
        );
    }
    eprintln!(
        "skipping: {} not set (run scripts/test-env.sh; HOIST_TEST_SKIP_CLOUD, HOIST_TEST_SKIP_K8S and HOIST_TEST_SKIP_KANIKO leave them out)",
        missing.join(", ")
    );
    false
}

macro_rules! require {
    ($($v:expr),*) => {
        if !require(&[$($v),*]) {
            return;
        }
    };
}

/// What every test here needs: the daemon, the image, the bases in the plain registry.
const BASE: &[&str] = &[
    "HOIST_TEST_DOCKER",
    "HOIST_TEST_KANIKO_IMAGE",
    "HOIST_TEST_REGISTRY",
    "HOIST_TEST_REGISTRY_BUSYBOX",
];

fn var(name: &str) -> String {
    hoist_testkit::env(name)
}

fn image() -> String {
    var("HOIST_TEST_KANIKO_IMAGE")
}

// ------------------------------------------------------------------------ commands

fn run(program: &str, args: &[&str], input: Option<&[u8]>) -> Output {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    if let Some(bytes) = input {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(bytes)
            .expect("write stdin");
    }
    child.wait_with_output().expect("wait")
}

/// `program args`, which must succeed: its stdout.
fn ok(program: &str, args: &[&str]) -> String {
    let o = run(program, args, None);
    assert!(
        o.status.success(),
        "{program} {}: {}",
        args.join(" "),
        show_output(&o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

// ------------------------------------------------------------------ build contexts

/// A packed build context (`.tar.gz`, as hoist uploads it): a Dockerfile and
/// `files/message.txt`, whose content is unique to the test.
struct Context {
    _dir: tempfile::TempDir,
    tarball: PathBuf,
    message: String,
}

fn context(dockerfile: &str) -> Context {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("files")).expect("mkdir");
    std::fs::write(src.join("Dockerfile"), dockerfile).expect("Dockerfile");
    let message = format!("copied from the context {}", unique("msg"));
    std::fs::write(src.join("files/message.txt"), format!("{message}\n")).expect("message");
    let tarball = dir.path().join("context.tar.gz");
    ok("tar", &["-czf", path(&tarball), "-C", path(&src), "."]);
    Context {
        _dir: dir,
        tarball,
        message,
    }
}

/// FROM the busybox base in the plain registry, a RUN (what it writes is in the image
/// only if it ran) and a COPY of the context's file.
fn two_step_dockerfile() -> String {
    format!(
        "FROM {}\nRUN echo ran-in-the-build > /ran.txt\nCOPY files/message.txt /message.txt\nCMD [\"cat\", \"/message.txt\", \"/ran.txt\"]\n",
        var("HOIST_TEST_REGISTRY_BUSYBOX")
    )
}

// --------------------------------------------------------------------- the stores

const CURL: [&str; 4] = ["-sS", "--fail-with-body", "--max-time", "60"];

/// A bucket in moto with `key` holding the file (moto reads any signature; curl sends
/// none). The octet-stream type matters: moto hangs on a form-encoded body.
fn s3_upload(bucket: &str, key: &str, file: &Path) {
    let base = var("HOIST_TEST_MOTO_URL");
    let curl = |args: &[&str]| ok("curl", &[&CURL[..], args].concat());
    curl(&["-X", "PUT", &format!("{base}/{bucket}")]);
    curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", path(file)),
        &format!("{base}/{bucket}/{key}"),
    ]);
}

/// A bucket in fake-gcs-server with `key` holding the file (JSON API).
fn gcs_upload(bucket: &str, key: &str, file: &Path) {
    let base = var("HOIST_TEST_GCS_URL");
    let curl = |args: &[&str]| ok("curl", &[&CURL[..], args].concat());
    curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data",
        &json!({ "name": bucket }).to_string(),
        &format!("{base}/storage/v1/b?project=hoist"),
    ]);
    curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/gzip",
        "--data-binary",
        &format!("@{}", path(file)),
        &format!(
            "{base}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={}",
            key.replace('/', "%2F")
        ),
    ]);
}

fn b64(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut s = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            s.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
        if pad {
            s.push_str(&"=".repeat(3 - chunk.len()));
        }
    }
    s
}

const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A container in Azurite with blob `key` holding the file. The test uploads with a
/// bearer token (Azurite's `--oauth basic` checks its audience, issuer and lifetime,
/// not a signature), the stand-in reads with the account's Shared Key: two schemes.
fn azure_upload(container: &str, key: &str, file: &Path) {
    let base = var("HOIST_TEST_AZURITE_URL");
    let ca = var("HOIST_TEST_AZURITE_CA");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = json!({
        "aud": "https://storage.azure.com",
        "iss": "https://sts.windows.net/ab1f708d-50f6-404c-a006-d71b2ac7a606/",
        "iat": now - 60, "nbf": now - 60, "exp": now + 600,
    });
    let token = format!(
        "{}.{}.c2ln",
        b64(br#"{"alg":"RS256","typ":"JWT"}"#, URL, false),
        b64(claims.to_string().as_bytes(), URL, false)
    );
    // The token goes on stdin (a curl config), not in the arguments.
    let auth = format!("header = \"Authorization: Bearer {token}\"\n");
    let curl = |args: &[&str]| {
        let a = [
            &CURL[..],
            &[
                "--cacert",
                ca.as_str(),
                "-K",
                "-",
                "-H",
                "x-ms-version: 2021-08-06",
            ],
            args,
        ]
        .concat();
        let o = run("curl", &a, Some(auth.as_bytes()));
        assert!(
            o.status.success(),
            "curl {}: {}",
            a.join(" "),
            show_output(&o)
        );
    };
    curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Length: 0",
        &format!("{base}/{container}?restype=container"),
    ]);
    curl(&[
        "-X",
        "PUT",
        "-H",
        "x-ms-blob-type: BlockBlob",
        "-H",
        "Content-Type: application/gzip",
        "--data-binary",
        &format!("@{}", path(file)),
        &format!("{base}/{container}/{key}"),
    ]);
}

// ---------------------------------------------------------------------- registries

/// Docker's `config.json` for the htpasswd registry, in `dir`.
fn registry_config(dir: &Path, password: &str) -> PathBuf {
    let user = var("HOIST_TEST_AUTH_REGISTRY_USER");
    let auth = b64(format!("{user}:{password}").as_bytes(), STD, true);
    let file = dir.join("config.json");
    let cfg = json!({ "auths": { var("HOIST_TEST_AUTH_REGISTRY"): { "auth": auth } } });
    std::fs::write(&file, cfg.to_string()).expect("config.json");
    file
}

fn auth_registry_password() -> String {
    std::fs::read_to_string(var("HOIST_TEST_AUTH_REGISTRY_PASSWORD_FILE"))
        .expect("registry password")
        .trim()
        .to_string()
}

/// Pulls `reference` with the test's daemon (logged in to the htpasswd registry
/// through a config directory of its own), runs it (its CMD), removes it: (what it
/// printed, the digest the pull reported).
fn pull_and_run(reference: &str) -> (String, String) {
    let cfg = tempfile::tempdir().expect("tempdir");
    let d = path(cfg.path()).to_string();
    if reference.starts_with(&var("HOIST_TEST_AUTH_REGISTRY")) {
        let o = run(
            "docker",
            &[
                "--config",
                &d,
                "login",
                "--username",
                &var("HOIST_TEST_AUTH_REGISTRY_USER"),
                "--password-stdin",
                &var("HOIST_TEST_AUTH_REGISTRY"),
            ],
            Some(auth_registry_password().as_bytes()),
        );
        assert!(o.status.success(), "docker login: {}", show_output(&o));
    }
    let pulled = ok("docker", &["--config", &d, "pull", reference]);
    let digest = pulled
        .lines()
        .find_map(|l| l.strip_prefix("Digest: "))
        .unwrap_or_else(|| panic!("no digest in docker pull's output: {pulled}"))
        .trim()
        .to_string();
    let o = run(
        "docker",
        &["run", "--rm", "--network", "none", reference],
        None,
    );
    let _ = run("docker", &["rmi", reference], None);
    assert!(
        o.status.success(),
        "docker run {reference}: {}",
        show_output(&o)
    );
    (String::from_utf8_lossy(&o.stdout).into_owned(), digest)
}

// -------------------------------------------------------------------- the cluster

/// A Secret `name` in `ns` from files (`key`, file), so that no value is in an
/// argument.
fn secret_from_files(k: &Kubectl, ns: &str, name: &str, files: &[(&str, &Path)]) {
    let mut args = vec![
        "-n".to_string(),
        ns.to_string(),
        "create".to_string(),
        "secret".to_string(),
        "generic".to_string(),
        name.to_string(),
    ];
    for (key, file) in files {
        args.push(format!("--from-file={key}={}", path(file)));
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    k.ok(&a);
}

/// How the executor's container ended.
struct End {
    succeeded: bool,
    exit_code: i64,
    /// The termination message (`--digest-file=/dev/termination-log`).
    message: String,
    logs: String,
}

/// Runs the stand-in as a bare Job (`backoffLimit: 0`) in `ns` with `args`, extra
/// `env` entries and (volume, mount) pairs, and waits for its end.
fn run_job(
    ns: &TestNamespace,
    args: &[String],
    env: Vec<Value>,
    mounts: Vec<(Value, Value)>,
) -> End {
    let k = &ns.kubectl;
    let name = "standin";
    let (mut volumes, mut volume_mounts) = (
        vec![json!({ "name": "storage", "emptyDir": {} })],
        vec![json!({ "name": "storage", "mountPath": "/var/lib/containers" })],
    );
    for (v, m) in mounts {
        volumes.push(v);
        volume_mounts.push(m);
    }
    let job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": { "name": name, "namespace": ns.name },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": 600,
            "template": { "spec": {
                "restartPolicy": "Never",
                "hostNetwork": true,
                "automountServiceAccountToken": false,
                "terminationGracePeriodSeconds": 5,
                "containers": [{
                    "name": "executor",
                    "image": image(),
                    "imagePullPolicy": "IfNotPresent",
                    "args": args,
                    "env": env,
                    "securityContext": { "runAsUser": 0, "capabilities": { "add": ["SYS_ADMIN"] } },
                    "volumeMounts": volume_mounts,
                }],
                "volumes": volumes,
            }},
        },
    });
    k.ok_with_input(&["apply", "-f", "-"], &job.to_string());

    let t0 = Instant::now();
    let pod = loop {
        let pods = k.json(&[
            "-n",
            &ns.name,
            "get",
            "pods",
            "-l",
            &format!("job-name={name}"),
        ]);
        let state = &pods["items"][0]["status"]["containerStatuses"][0]["state"];
        if state["terminated"].is_object() {
            break pods["items"][0].clone();
        }
        if t0.elapsed() > LONG {
            let describe = k.output(&["-n", &ns.name, "describe", "job,pods"]);
            panic!(
                "the stand-in's Job did not end within {LONG:?}: {}",
                show_output(&describe)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let pod_name = pod["metadata"]["name"]
        .as_str()
        .expect("pod name")
        .to_string();
    let term = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    let logs = k.ok(&["-n", &ns.name, "logs", &pod_name, "-c", "executor"]);
    let exit_code = term["exitCode"].as_i64().expect("exit code");
    // The Job's own verdict follows the pod's.
    let want = if exit_code == 0 { "Complete" } else { "Failed" };
    hoist_testkit::wait_until(&format!("Job {name} {want}"), LONG, || {
        let j = k.json(&["-n", &ns.name, "get", "job", name]);
        j["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == want && c["status"] == "True")
    });
    End {
        succeeded: exit_code == 0,
        exit_code,
        message: term["message"].as_str().unwrap_or("").to_string(),
        logs,
    }
}

/// The Secret with the htpasswd registry's `config.json`, mounted where Kaniko reads it.
fn registry_secret(ns: &TestNamespace, password: &str) -> (Value, Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = registry_config(dir.path(), password);
    secret_from_files(&ns.kubectl, &ns.name, "registry", &[("config.json", &cfg)]);
    (
        json!({ "name": "docker-config", "secret": { "secretName": "registry" } }),
        json!({ "name": "docker-config", "mountPath": "/kaniko/.docker", "readOnly": true }),
    )
}

fn kaniko_args(context: &str, destination: &str) -> Vec<String> {
    vec![
        format!("--context={context}"),
        "--dockerfile=Dockerfile".to_string(),
        format!("--destination={destination}"),
        "--digest-file=/dev/termination-log".to_string(),
        "--cache=true".to_string(),
        format!("--cache-repo={destination}-cache"),
        "--snapshot-mode=redo".to_string(),
        "--compressed-caching=false".to_string(),
        "--cleanup".to_string(),
    ]
}

/// What every successful build shows: buildah's steps, the digest in the termination
/// message (the one the registry serves), and the image prints the context's file and
/// what its RUN step wrote.
fn assert_built(end: &End, destination: &str, ctx: &Context) {
    assert!(
        end.succeeded,
        "the stand-in exited {}:\n{}",
        end.exit_code, end.logs
    );
    for step in [
        "STEP 1/4: FROM ",
        "STEP 2/4: RUN echo ran-in-the-build",
        "STEP 3/4: COPY files/message.txt",
    ] {
        assert!(
            end.logs.contains(step),
            "no `{step}` in the logs:\n{}",
            end.logs
        );
    }
    assert!(
        end.logs.contains("ignored by the stand-in"),
        "cache flags were not reported as ignored:\n{}",
        end.logs
    );
    assert!(
        end.message.starts_with("sha256:") && end.message.len() == 71,
        "the termination message is not a digest: {:?}\n{}",
        end.message,
        end.logs
    );
    let (printed, digest) = pull_and_run(destination);
    assert_eq!(printed, format!("{}\nran-in-the-build\n", ctx.message));
    assert_eq!(
        digest, end.message,
        "the pushed digest is not the one reported"
    );
}

// -------------------------------------------------------------- tests on the cluster

#[test]
fn s3_context_builds_and_pushes_to_the_htpasswd_registry() {
    require!(
        "HOIST_TEST_K8S",
        "HOIST_TEST_MOTO_URL",
        "HOIST_TEST_AUTH_REGISTRY"
    );
    require!(BASE[0], BASE[1], BASE[2], BASE[3]);
    let ns = TestNamespace::create("kaniko-s3");
    let ctx = context(&two_step_dockerfile());
    let bucket = unique("kaniko-s3");
    s3_upload(&bucket, "contexts/abc.tar.gz", &ctx.tarball);

    // A credentials file, as the seed's `secret-name`/`secret-key` mounts it.
    let dir = tempfile::tempdir().expect("tempdir");
    let creds = dir.path().join("credentials");
    std::fs::write(
        &creds,
        "[default]\naws_access_key_id = AKIAHOISTTEST\naws_secret_access_key = hoist-test-secret\n",
    )
    .expect("credentials");
    secret_from_files(&ns.kubectl, &ns.name, "aws", &[("credentials", &creds)]);
    let destination = format!(
        "{}/{}:v1",
        var("HOIST_TEST_AUTH_REGISTRY"),
        unique("kaniko-s3")
    );
    let end = run_job(
        &ns,
        &kaniko_args(&format!("s3://{bucket}/contexts/abc.tar.gz"), &destination),
        vec![
            json!({ "name": "AWS_REGION", "value": "us-east-1" }),
            json!({ "name": "S3_ENDPOINT", "value": var("HOIST_TEST_MOTO_URL") }),
            json!({ "name": "S3_FORCE_PATH_STYLE", "value": "true" }),
        ],
        vec![
            (
                json!({ "name": "aws", "secret": { "secretName": "aws" } }),
                json!({ "name": "aws", "mountPath": "/root/.aws", "readOnly": true }),
            ),
            registry_secret(&ns, &auth_registry_password()),
        ],
    );
    assert!(
        end.logs
            .contains("credentials from /root/.aws/credentials [default]"),
        "the context was not read with the mounted credentials:\n{}",
        end.logs
    );
    assert_built(&end, &destination, &ctx);
}

#[test]
fn gcs_context_builds_and_pushes() {
    require!("HOIST_TEST_K8S", "HOIST_TEST_GCS_URL");
    require!(BASE[0], BASE[1], BASE[2], BASE[3]);
    let ns = TestNamespace::create("kaniko-gcs");
    let ctx = context(&two_step_dockerfile());
    let bucket = unique("kaniko-gcs");
    gcs_upload(&bucket, "contexts/abc.tar.gz", &ctx.tarball);
    let destination = format!("{}/{}:v1", var("HOIST_TEST_REGISTRY"), unique("kaniko-gcs"));
    let mut args = kaniko_args(&format!("gs://{bucket}/contexts/abc.tar.gz"), &destination);
    args.extend(["--insecure".to_string(), "--insecure-pull".to_string()]);
    let end = run_job(
        &ns,
        &args,
        vec![json!({ "name": "STORAGE_EMULATOR_HOST", "value": var("HOIST_TEST_GCS_URL") })],
        vec![],
    );
    assert_built(&end, &destination, &ctx);
}

#[test]
fn azure_blob_context_builds_and_pushes() {
    require!(
        "HOIST_TEST_K8S",
        "HOIST_TEST_AZURITE_URL",
        "HOIST_TEST_AZURITE_KEY_FILE"
    );
    require!("HOIST_TEST_AUTH_REGISTRY", "HOIST_TEST_AZURITE_ACCOUNT");
    require!(BASE[0], BASE[1], BASE[2], BASE[3]);
    let ns = TestNamespace::create("kaniko-azure");
    let ctx = context(&two_step_dockerfile());
    let container = unique("kaniko-azure");
    azure_upload(&container, "contexts/abc.tar.gz", &ctx.tarball);
    // The account key from a Secret, as hoist passes it (secretKeyRef, never a literal).
    let key_file = PathBuf::from(var("HOIST_TEST_AZURITE_KEY_FILE"));
    secret_from_files(&ns.kubectl, &ns.name, "azure", &[("key", &key_file)]);
    let destination = format!(
        "{}/{}:v1",
        var("HOIST_TEST_AUTH_REGISTRY"),
        unique("kaniko-azure")
    );
    let account = var("HOIST_TEST_AZURITE_ACCOUNT");
    let end = run_job(
        &ns,
        &kaniko_args(
            &format!("https://{account}.blob.core.windows.net/{container}/contexts/abc.tar.gz"),
            &destination,
        ),
        vec![
            json!({ "name": "AZURE_STORAGE_ACCESS_KEY",
                    "valueFrom": { "secretKeyRef": { "name": "azure", "key": "key" } } }),
            json!({ "name": "AZURE_STORAGE_BLOB_ENDPOINT", "value": var("HOIST_TEST_AZURITE_URL") }),
        ],
        vec![registry_secret(&ns, &auth_registry_password())],
    );
    assert!(
        end.logs
            .contains(&format!("Shared Key of account {account}")),
        "{}",
        end.logs
    );
    assert_built(&end, &destination, &ctx);
}

#[test]
fn failing_run_step_fails_the_job_naming_the_step() {
    require!("HOIST_TEST_K8S", "HOIST_TEST_MOTO_URL");
    require!(BASE[0], BASE[1], BASE[2], BASE[3]);
    let ns = TestNamespace::create("kaniko-fail");
    let ctx = context(&format!(
        "FROM {}\nCOPY files/message.txt /message.txt\nRUN echo about to fail && exit 3\nRUN echo never\n",
        var("HOIST_TEST_REGISTRY_BUSYBOX")
    ));
    let bucket = unique("kaniko-fail");
    s3_upload(&bucket, "ctx.tar.gz", &ctx.tarball);
    let repo = unique("kaniko-fail");
    let destination = format!("{}/{repo}:v1", var("HOIST_TEST_REGISTRY"));
    // Credentials in the environment this time, from a Secret.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("id"), "AKIAHOISTTEST").expect("id");
    std::fs::write(dir.path().join("secret"), "hoist-test-secret").expect("secret");
    secret_from_files(
        &ns.kubectl,
        &ns.name,
        "aws",
        &[
            ("id", &dir.path().join("id")),
            ("secret", &dir.path().join("secret")),
        ],
    );
    let from = |key: &str| json!({ "secretKeyRef": { "name": "aws", "key": key } });
    let end = run_job(
        &ns,
        &kaniko_args(&format!("s3://{bucket}/ctx.tar.gz"), &destination),
        vec![
            json!({ "name": "AWS_ACCESS_KEY_ID", "valueFrom": from("id") }),
            json!({ "name": "AWS_SECRET_ACCESS_KEY", "valueFrom": from("secret") }),
            json!({ "name": "S3_ENDPOINT", "value": var("HOIST_TEST_MOTO_URL") }),
            json!({ "name": "S3_FORCE_PATH_STYLE", "value": "true" }),
        ],
        vec![],
    );
    assert_eq!(end.exit_code, 1, "{}", end.logs);
    assert!(
        end.logs.contains("credentials from AWS_ACCESS_KEY_ID"),
        "{}",
        end.logs
    );
    assert!(end.logs.contains("about to fail"), "{}", end.logs);
    assert!(
        end.logs
            .contains("STEP 3/4: RUN echo about to fail && exit 3"),
        "{}",
        end.logs
    );
    assert!(!end.logs.contains("STEP 4/4"), "{}", end.logs);
    let last = end.logs.lines().last().unwrap_or("");
    assert_eq!(
        last,
        "error building image: error building stage: failed to execute command: STEP 3/4: RUN echo about to fail && exit 3: exit status 3"
    );
    // Nothing was pushed.
    let code = ok(
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!(
                "http://{}/v2/{repo}/manifests/v1",
                var("HOIST_TEST_REGISTRY")
            ),
        ],
    );
    assert_eq!(code, "404", "the failed build pushed {destination}");
}

// ------------------------------------------------------------- tests with docker run

/// `docker run` of the stand-in on the host's network with CAP_SYS_ADMIN, `dir`
/// mounted at /in, `env` as `-e NAME=VALUE` (test values only).
fn docker_standin(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let mount = format!("{}:/in:ro", path(dir));
    let mut a: Vec<String> = [
        "run",
        "--rm",
        "--network",
        "host",
        "--cap-add",
        "SYS_ADMIN",
        "-v",
        &mount,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (k, v) in env {
        a.push("-e".into());
        a.push(format!("{k}={v}"));
    }
    a.push(image());
    a.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let o = run("docker", &refs, None);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code().unwrap_or(-1), text)
}

fn last_line(s: &str) -> &str {
    s.lines()
        .rfind(|l| !l.starts_with("WARNING: IPv4 forwarding"))
        .unwrap_or("")
}

#[test]
fn bad_flags_and_unsafe_contexts_are_refused() {
    require!(BASE[0], BASE[1], BASE[2], BASE[3]);
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();

    let (code, out) = docker_standin(
        d,
        &[],
        &["--context=tar:///in/x.tar.gz", "--destinaton=r/x:1"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("Error: unknown flag: --destinaton"), "{out}");
    let (code, out) = docker_standin(d, &[], &["--context=dir:///in"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("you must provide --destination, or use --no-push"),
        "{out}"
    );
    let (code, out) = docker_standin(d, &[], &["--context=git://github.com/x/y", "--no-push"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        last_line(&out).contains("unsupported context git://"),
        "{out}"
    );

    // Archives that would write outside the context, made with Python's tarfile in
    // the image itself.
    let craft = r#"
import io, tarfile
def tar(name, members):
    with tarfile.open("/out/" + name, "w:gz") as t:
        for m, data in members:
            t.addfile(m, io.BytesIO(data) if data is not None else None)
def f(name, data=b"x"):
    m = tarfile.TarInfo(name); m.size = len(data); return (m, data)
def link(name, target, kind=tarfile.SYMTYPE):
    m = tarfile.TarInfo(name); m.type = kind; m.linkname = target; return (m, None)
tar("dotdot.tar.gz", [f("Dockerfile"), f("../escaped")])
tar("absolute.tar.gz", [f("Dockerfile"), f("/etc/escaped")])
tar("symlink.tar.gz", [f("Dockerfile"), link("up", "/etc"), f("up/escaped")])
tar("hardlink.tar.gz", [f("Dockerfile"), link("h", "/etc/passwd", tarfile.LNKTYPE)])
"#;
    let out_mount = format!("{}:/out", path(d));
    let o = run(
        "docker",
        &[
            "run",
            "--rm",
            "-v",
            &out_mount,
            "--entrypoint",
            "python3",
            &image(),
            "-c",
            craft,
        ],
        None,
    );
    assert!(o.status.success(), "crafting archives: {}", show_output(&o));
    for (name, why) in [
        ("dotdot", "'../escaped': absolute or with a '..' component"),
        (
            "absolute",
            "'/etc/escaped': absolute or with a '..' component",
        ),
        (
            "symlink",
            "'up/escaped': its directory leads out of the context through a symlink",
        ),
        (
            "hardlink",
            "'h': a hard link to '/etc/passwd', outside the archive",
        ),
    ] {
        let (code, out) = docker_standin(
            d,
            &[],
            &[&format!("--context=tar:///in/{name}.tar.gz"), "--no-push"],
        );
        assert_eq!(code, 1, "{name}: {out}");
        assert_eq!(
            last_line(&out),
            format!(
                "error building image: error resolving source context: refusing context member {why}"
            ),
            "{name}: {out}"
        );
    }
}

#[test]
fn wrong_registry_password_fails_the_push() {
    require!("HOIST_TEST_AUTH_REGISTRY");
    require!(BASE[0], BASE[1], BASE[2], BASE[3]);
    let ctx = context(&two_step_dockerfile());
    let d = ctx.tarball.parent().expect("dir").to_path_buf();
    let docker = d.join("docker");
    std::fs::create_dir(&docker).expect("mkdir");
    registry_config(&docker, "not-the-password");
    let destination = format!(
        "{}/{}:v1",
        var("HOIST_TEST_AUTH_REGISTRY"),
        unique("kaniko-pw")
    );
    let (code, out) = docker_standin(
        &d,
        &[("DOCKER_CONFIG", "/in/docker")],
        &[
            "--context=tar:///in/context.tar.gz",
            &format!("--destination={destination}"),
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("STEP 3/4: COPY files/message.txt"),
        "the build did not run: {out}"
    );
    let last = last_line(&out);
    assert!(
        last.starts_with(&format!(
            "error pushing image: failed to push to destination {destination}: "
        )) && last.contains("authentication required"),
        "{out}"
    );
}

#[test]
fn buildah_mode_builds_with_the_given_arguments_and_pushes() {
    require!(BASE[0], BASE[1], BASE[2], BASE[3]);
    let ctx = context(&format!(
        "FROM {}\nARG GREETING\nRUN echo \"$GREETING\" > /ran.txt\nCOPY files/message.txt /message.txt\nCMD [\"cat\", \"/message.txt\", \"/ran.txt\"]\n",
        var("HOIST_TEST_REGISTRY_BUSYBOX")
    ));
    std::fs::rename(&ctx.tarball, ctx.tarball.with_file_name("c.tar.gz")).expect("rename");
    let d = ctx.tarball.parent().expect("dir").to_path_buf();
    let destination = format!(
        "{}/{}:v1",
        var("HOIST_TEST_REGISTRY"),
        unique("buildah-mode")
    );
    let (code, out) = docker_standin(
        &d,
        &[],
        &[
            "buildah",
            "--context=tar:///in/c.tar.gz",
            &format!("--destination={destination}"),
            "--digest-file=/dev/stdout",
            "--",
            "--build-arg",
            "GREETING=hello-from-buildah-mode",
            "-f",
            "Dockerfile",
            ".",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(": COPY files/message.txt /message.txt"),
        "{out}"
    );
    let (printed, digest) = pull_and_run(&destination);
    assert_eq!(
        printed,
        format!("{}\nhello-from-buildah-mode\n", ctx.message)
    );
    assert!(
        out.contains(&digest),
        "the digest {digest} was not written: {out}"
    );
}

#[test]
fn web_identity_credentials_come_from_sts() {
    require!("HOIST_TEST_MOTO_URL");
    require!(BASE[0], BASE[1], BASE[2], BASE[3]);
    let ctx = context(&two_step_dockerfile());
    let d = ctx.tarball.parent().expect("dir").to_path_buf();
    std::fs::write(
        d.join("token"),
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6aG9pc3Q6a2FuaWtvIn0.",
    )
    .expect("token");
    let bucket = unique("kaniko-irsa");
    s3_upload(&bucket, "ctx.tar.gz", &ctx.tarball);
    let moto = var("HOIST_TEST_MOTO_URL");
    let (code, out) = docker_standin(
        &d,
        &[
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/in/token"),
            (
                "AWS_ROLE_ARN",
                "arn:aws:iam::123456789012:role/hoist-kaniko",
            ),
            ("AWS_ENDPOINT_URL_STS", &moto),
            ("S3_ENDPOINT", &moto),
            ("S3_FORCE_PATH_STYLE", "true"),
        ],
        &[&format!("--context=s3://{bucket}/ctx.tar.gz"), "--no-push"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("credentials from web identity (arn:aws:iam::123456789012:role/hoist-kaniko)"),
        "{out}"
    );
    assert!(out.contains("STEP 3/4: COPY files/message.txt"), "{out}");
}

/// The request signatures the stand-in computes itself: AWS's published Signature V4
/// example, and the service-account JWT grant against a scripted token endpoint (Google's
/// cannot be reached here) that checks the RS256 signature with openssl.
#[test]
fn signatures_match_published_examples_and_verify() {
    require!(BASE[0], BASE[1]);
    let script = r#"
import http.server, importlib.util, importlib.machinery, json, os, subprocess, threading, urllib.parse, base64
loader = importlib.machinery.SourceFileLoader("executor", "/kaniko/executor")
spec = importlib.util.spec_from_loader("executor", loader)
ex = importlib.util.module_from_spec(spec); loader.exec_module(ex)

# AWS S3 docs, "Example: GET Object" (Signature Version 4, header-based).
h = ex.sigv4_headers("GET", "https://examplebucket.s3.amazonaws.com/test.txt", "us-east-1", "s3",
    ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", None), "20130524T000000Z",
    extra={"Range": "bytes=0-9"})
assert h["authorization"] == ("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
    "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
    "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"), h["authorization"]

run = lambda *a: subprocess.run(a, check=True, capture_output=True)
run("openssl", "genrsa", "-out", "/tmp/sa.pem", "2048")
run("openssl", "rsa", "-in", "/tmp/sa.pem", "-pubout", "-out", "/tmp/sa.pub")
seen = {}
def unb64(s): return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
class Token(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        head, claims, sig = form["assertion"][0].split(".")
        open("/tmp/sig", "wb").write(unb64(sig))
        v = subprocess.run(["openssl", "dgst", "-sha256", "-verify", "/tmp/sa.pub", "-signature", "/tmp/sig"],
                           input=(head + "." + claims).encode(), capture_output=True)
        seen.update(grant=form["grant_type"][0], verified=v.stdout.decode().strip(),
                    header=json.loads(unb64(head)), claims=json.loads(unb64(claims)))
        body = json.dumps({"access_token": "token-from-the-grant", "expires_in": 3599}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
srv = http.server.HTTPServer(("127.0.0.1", 0), Token)
threading.Thread(target=srv.serve_forever, daemon=True).start()
uri = "http://127.0.0.1:%d/token" % srv.server_port
json.dump({"type": "service_account", "client_email": "builder@hoist-test.iam.gserviceaccount.com",
           "private_key_id": "k1", "private_key": open("/tmp/sa.pem").read(), "token_uri": uri}, open("/tmp/sa.json", "w"))
os.environ["GOOGLE_APPLICATION_CREDENTIALS"] = "/tmp/sa.json"
token, where = ex.gcp_token()
assert token == "token-from-the-grant", token
assert seen["verified"] == "Verified OK", seen
assert seen["grant"] == "urn:ietf:params:oauth:grant-type:jwt-bearer", seen
assert seen["header"] == {"alg": "RS256", "typ": "JWT", "kid": "k1"}, seen
c = seen["claims"]
assert c["iss"] == "builder@hoist-test.iam.gserviceaccount.com" and c["aud"] == uri, c
assert c["scope"] == "https://www.googleapis.com/auth/devstorage.read_only" and c["exp"] - c["iat"] == 3600, c
assert not [f for f in os.listdir("/tmp") if f.startswith("hoist-executor-")], "the key file was left behind"
print("signatures ok")
"#;
    let o = run(
        "docker",
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "python3",
            &image(),
            "-c",
            script,
        ],
        None,
    );
    assert!(o.status.success(), "{}", show_output(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "signatures ok");
}
