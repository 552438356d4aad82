//! The OCI registry and the push helper against the real components of the test
//! environment (`source ~/.cache/hoist/test-env.sh`, written by
//! `scripts/test-env.sh`): Debian's `docker-registry` without auth
//! (`$HOIST_TEST_REGISTRY`) and with htpasswd (`$HOIST_TEST_AUTH_REGISTRY`, user
//! `$HOIST_TEST_AUTH_REGISTRY_USER`, password in `$HOIST_TEST_AUTH_REGISTRY_PASSWORD_FILE`),
//! and the Docker daemon (`HOIST_TEST_DOCKER=1`) with `hoist-test/busybox:latest`.
//!
//! A test whose services are missing is skipped with a note, unless
//! `HOIST_TEST_REQUIRE_SERVICES` is set (then it fails). Every local tag a test makes
//! is removed by a guard, whatever the outcome. (Tags pushed to the test registries
//! stay there: the registry API deletes manifests by digest, and every test pushes the
//! same busybox digest, so deleting one would delete the others' tags.)

use std::path::{Path, PathBuf};

use base64::Engine;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, LogsOptions, RemoveContainerOptions, RemoveImageOptions,
    StartContainerOptions, TagImageOptions, WaitContainerOptions,
};
use futures::StreamExt;
use hoist_agent::config::{OciRegistry as OciConfig, RegistryConfig};
use hoist_agent::environments::Ambient;
use hoist_agent::logs::LogSink;
use hoist_agent::registries::oci::OciRegistry;
use hoist_agent::registries::push::{pull, push};
use hoist_agent::registries::{Registry, RegistryAuth, RegistryError, from_config};

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
        "skipping: {} not set (run scripts/test-env.sh)",
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

fn var(name: &str) -> String {
    std::env::var(name).unwrap()
}

fn busybox() -> String {
    std::env::var("HOIST_TEST_BUSYBOX_IMAGE")
        .unwrap_or_else(|_| "hoist-test/busybox:latest".to_string())
}

fn tag() -> String {
    format!("t{:012x}", rand::random::<u64>() >> 16)
}

async fn docker() -> Docker {
    Docker::connect_with_local_defaults()
        .unwrap()
        .negotiate_version()
        .await
        .unwrap()
}

/// The auth registry's host, user and password.
fn auth_registry() -> (String, String, String) {
    let pw = std::fs::read_to_string(var("HOIST_TEST_AUTH_REGISTRY_PASSWORD_FILE")).unwrap();
    (
        var("HOIST_TEST_AUTH_REGISTRY"),
        var("HOIST_TEST_AUTH_REGISTRY_USER"),
        pw.trim().to_string(),
    )
}

/// A Docker `config.json` with `user:password` for `host`.
fn docker_config(dir: &Path, host: &str, user: &str, password: &str) -> PathBuf {
    let path = dir.join("config.json");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    std::fs::write(
        &path,
        serde_json::json!({"auths": {host: {"auth": auth}}}).to_string(),
    )
    .unwrap();
    path
}

fn oci(host: &str, repo: &str, credentials_file: Option<PathBuf>) -> OciConfig {
    OciConfig {
        host: host.to_string(),
        repository: repo.to_string(),
        plain_http: false,
        credentials_file,
    }
}

/// An ambient with an empty home: no Docker config of the test machine leaks in.
fn empty_home(dir: &Path) -> Ambient {
    Ambient::new(Vec::<(String, String)>::new(), Some(dir.to_path_buf()))
}

/// Removes the local tags (and containers) a test made, whatever happens.
struct Cleanup {
    images: Vec<String>,
    containers: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let images = std::mem::take(&mut self.images);
        let containers = std::mem::take(&mut self.containers);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let d = docker().await;
                for c in containers {
                    let _ = d
                        .remove_container(
                            &c,
                            Some(RemoveContainerOptions {
                                force: true,
                                ..Default::default()
                            }),
                        )
                        .await;
                }
                for i in images {
                    let _ = d
                        .remove_image(
                            &i,
                            Some(RemoveImageOptions {
                                noprune: true,
                                ..Default::default()
                            }),
                            None,
                        )
                        .await;
                }
            });
        })
        .join();
    }
}

async fn retag(d: &Docker, image: &str) {
    let (repo, tag) = image.rsplit_once(':').unwrap();
    d.tag_image(
        &busybox(),
        Some(TagImageOptions {
            repo: Some(repo.to_string()),
            tag: Some(tag.to_string()),
        }),
    )
    .await
    .unwrap();
}

/// Runs `image` (network none) and returns its output.
async fn run(d: &Docker, image: &str, cleanup: &mut Cleanup) -> String {
    let name = format!("hoist-test-registry-{}", tag());
    cleanup.containers.push(name.clone());
    d.create_container(
        Some(CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        }),
        ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: Some(vec!["echo".into(), "hello from the registry".into()]),
            host_config: Some(HostConfig {
                network_mode: Some("none".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    d.start_container(&name, None::<StartContainerOptions>)
        .await
        .unwrap();
    let mut wait = d.wait_container(&name, None::<WaitContainerOptions>);
    while let Some(w) = wait.next().await {
        w.unwrap();
    }
    let mut out = String::new();
    let mut logs = d.logs(
        &name,
        Some(LogsOptions {
            stdout: true,
            stderr: true,
            ..Default::default()
        }),
    );
    while let Some(l) = logs.next().await {
        out.push_str(&l.unwrap().to_string());
    }
    out
}

fn lines(sink: &LogSink) -> Vec<String> {
    sink.snapshot().into_iter().map(|l| l.text).collect()
}

#[tokio::test]
async fn docker_push_to_htpasswd_registry_then_has_image_then_run_from_it() {
    require!(
        "HOIST_TEST_DOCKER",
        "HOIST_TEST_AUTH_REGISTRY",
        "HOIST_TEST_AUTH_REGISTRY_USER",
        "HOIST_TEST_AUTH_REGISTRY_PASSWORD_FILE"
    );
    let (host, user, password) = auth_registry();
    let dir = tempfile::tempdir().unwrap();
    let file = docker_config(dir.path(), &host, &user, &password);
    let reg = OciRegistry::new(
        &oci(&host, "hoist/test", Some(file.clone())),
        &empty_home(dir.path()),
    )
    .unwrap();
    assert_eq!(reg.repository(), Some(format!("{host}/hoist/test")));
    let image = format!("{host}/hoist/test:{}", tag());
    let d = docker().await;
    let mut cleanup = Cleanup {
        images: vec![image.clone()],
        containers: vec![],
    };

    assert!(!reg.has_image(&image).await.unwrap(), "not pushed yet");
    retag(&d, &image).await;
    let auth = reg
        .auth()
        .await
        .unwrap()
        .expect("credentials from the file");
    assert_eq!(
        (auth.server.as_str(), auth.username.as_str()),
        (host.as_str(), user.as_str())
    );
    let sink = LogSink::new();
    push(&d, &image, Some(&auth), &sink).await.unwrap();
    let log = lines(&sink);
    eprintln!("push log: {log:#?}");
    assert_eq!(log.first(), Some(&format!("pushing {image}")));
    assert!(
        log.last()
            .unwrap()
            .starts_with(&format!("pushed {image} (sha256:")),
        "{log:?}"
    );
    assert!(
        log.len() <= 8,
        "one line per status change, not per tick: {log:?}"
    );
    assert!(log.iter().all(|l| !l.contains(&password)));

    assert!(reg.has_image(&image).await.unwrap());

    // The run starts from the pushed image: the local copy is gone, the daemon pulls it
    // with the registry's credentials.
    d.remove_image(&image, None::<RemoveImageOptions>, None)
        .await
        .unwrap();
    assert!(d.inspect_image(&image).await.is_err());
    let sink = LogSink::new();
    pull(&d, &image, Some(&auth), &sink).await.unwrap();
    assert_eq!(lines(&sink).last(), Some(&format!("pulled {image}")));
    let out = run(&d, &image, &mut cleanup).await;
    assert!(out.contains("hello from the registry"), "{out}");
}

#[tokio::test]
async fn docker_wrong_password_is_an_auth_error_naming_the_registry() {
    require!(
        "HOIST_TEST_DOCKER",
        "HOIST_TEST_AUTH_REGISTRY",
        "HOIST_TEST_AUTH_REGISTRY_USER",
        "HOIST_TEST_AUTH_REGISTRY_PASSWORD_FILE"
    );
    let (host, user, _) = auth_registry();
    let dir = tempfile::tempdir().unwrap();
    let wrong = "definitely-not-the-password";
    let file = docker_config(dir.path(), &host, &user, wrong);
    let reg = OciRegistry::new(
        &oci(&host, "hoist/test", Some(file.clone())),
        &empty_home(dir.path()),
    )
    .unwrap();
    let image = format!("{host}/hoist/test:{}", tag());

    let e = reg.has_image(&image).await.unwrap_err();
    assert!(e.is_refusal(), "expected a refusal, got {e:?}");
    let msg = &e.to_string();
    assert_eq!(
        msg,
        &format!(
            "registry {host} refused the credentials of user {user} (from {}): unauthorized: authentication required",
            file.display()
        )
    );

    let d = docker().await;
    let _cleanup = Cleanup {
        images: vec![image.clone()],
        containers: vec![],
    };
    retag(&d, &image).await;
    let auth = reg.auth().await.unwrap();
    let e = push(&d, &image, auth.as_ref(), &LogSink::new())
        .await
        .unwrap_err();
    assert!(e.is_refusal(), "expected a refusal, got {e:?}");
    let msg = &e.to_string();
    assert!(
        msg.starts_with(&format!("push of {image} (registry {host}) failed: ")),
        "{msg}"
    );
    assert!(
        msg.contains("unauthorized") || msg.contains("authentication required"),
        "{msg}"
    );
    assert!(!msg.contains(wrong), "{msg}");

    // Pulling without credentials: refused, naming the registry.
    let e = pull(
        &d,
        &format!("{host}/hoist/test:none"),
        None,
        &LogSink::new(),
    )
    .await
    .unwrap_err();
    assert!(
        e.is_refusal() && e.to_string().contains(&format!("registry {host}")),
        "{e:?}"
    );
}

#[tokio::test]
async fn unknown_tag_is_absent_and_missing_credentials_are_named() {
    require!(
        "HOIST_TEST_AUTH_REGISTRY",
        "HOIST_TEST_AUTH_REGISTRY_USER",
        "HOIST_TEST_AUTH_REGISTRY_PASSWORD_FILE"
    );
    let (host, user, password) = auth_registry();
    let dir = tempfile::tempdir().unwrap();

    // Credentials from the agent's own Docker config (~/.docker/config.json).
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".docker")).unwrap();
    docker_config(
        &home.join(".docker"),
        &format!("https://{host}"),
        &user,
        &password,
    );
    let reg = OciRegistry::new(
        &oci(&host, "hoist/test", None),
        &Ambient::new(Vec::<(String, String)>::new(), Some(home.clone())),
    )
    .unwrap();
    assert!(
        !reg.has_image(&format!("{host}/hoist/test:no-such-tag-{}", tag()))
            .await
            .unwrap()
    );
    assert!(
        !reg.has_image(&format!("{host}/hoist/never-pushed:latest"))
            .await
            .unwrap()
    );

    // DOCKER_CONFIG wins over the home directory; an empty config means anonymous.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("config.json"), "{}").unwrap();
    let reg = OciRegistry::new(
        &oci(&host, "hoist/test", None),
        &Ambient::new(
            [("DOCKER_CONFIG", empty.display().to_string())],
            Some(home.clone()),
        ),
    )
    .unwrap();
    assert!(reg.auth().await.unwrap().is_none());
    let e = reg
        .has_image(&format!("{host}/hoist/test:x"))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "registry {host} requires authentication and no credentials for it were found ({} has no entry for {host})",
            empty.join("config.json").display()
        )
    );

    // A configured credentials file that does not exist is a config error.
    let reg = OciRegistry::new(
        &oci(&host, "hoist/test", Some(dir.path().join("nope.json"))),
        &empty_home(dir.path()),
    )
    .unwrap();
    let e = reg.auth().await.unwrap_err();
    assert!(e.is_config() && !e.is_transient(), "{e:?}");
    assert!(
        matches!(&e, RegistryError::CredentialsFile { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "the io error is kept: {e:?}"
    );

    // credsStore: a helper that is not installed is named.
    let helper = dir.path().join("helper.json");
    std::fs::write(&helper, r#"{"credsStore": "hoist-test-absent"}"#).unwrap();
    let reg = OciRegistry::new(
        &oci(&host, "hoist/test", Some(helper)),
        &empty_home(dir.path()),
    )
    .unwrap();
    let e = reg.auth().await.unwrap_err();
    assert!(
        e.to_string()
            .contains("the credential helper docker-credential-hoist-test-absent"),
        "{e}"
    );
}

#[tokio::test]
async fn docker_no_auth_registry_works_without_credentials() {
    require!("HOIST_TEST_DOCKER", "HOIST_TEST_REGISTRY");
    let host = var("HOIST_TEST_REGISTRY");
    let dir = tempfile::tempdir().unwrap();
    let reg = from_config(
        &RegistryConfig::Oci(oci(&host, "hoist/test-noauth", None)),
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(reg.kind(), "oci");
    // No registry: the local daemon, when there is one.
    let d = docker().await;
    let local = from_config(&RegistryConfig::Local, None, Some(&d))
        .await
        .unwrap();
    assert_eq!((local.kind(), local.repository()), ("local", None));
    assert!(local.has_image(&busybox()).await.unwrap());
    assert!(
        from_config(&RegistryConfig::Local, None, None)
            .await
            .is_err()
    );
    // (from_config reads the process's Docker config; use an explicit empty home for
    // the rest.)
    let reg = OciRegistry::new(
        &oci(&host, "hoist/test-noauth", None),
        &empty_home(dir.path()),
    )
    .unwrap();
    assert!(reg.auth().await.unwrap().is_none());
    let image = format!("{host}/hoist/test-noauth:{}", tag());
    let _cleanup = Cleanup {
        images: vec![image.clone()],
        containers: vec![],
    };
    assert!(!reg.has_image(&image).await.unwrap());
    retag(&d, &image).await;
    push(&d, &image, None, &LogSink::new()).await.unwrap();
    assert!(reg.has_image(&image).await.unwrap());
}

#[tokio::test]
async fn plain_http_to_a_remote_host_is_refused_by_config() {
    let mut cfg = oci("registry.example.com", "team/images", None);
    cfg.plain_http = true;
    let Err(e) = from_config(&RegistryConfig::Oci(cfg.clone()), None, None).await else {
        panic!("plain HTTP to a remote host was accepted")
    };
    let RegistryError::Config(msg) = &e else {
        panic!("expected Config, got {e:?}")
    };
    assert!(
        msg.starts_with("registry registry.example.com: plain HTTP (http://) is allowed for loopback addresses only"),
        "{msg}"
    );
    // Loopback hosts may be plain HTTP.
    for host in ["127.0.0.1:5000", "localhost:5000", "[::1]:5000"] {
        cfg.host = host.to_string();
        assert!(
            from_config(&RegistryConfig::Oci(cfg.clone()), None, None)
                .await
                .is_ok(),
            "{host}"
        );
    }
}

#[tokio::test]
async fn registry_auth_debug_hides_the_password() {
    let a = RegistryAuth {
        server: "127.0.0.1:5001".into(),
        username: "hoist".into(),
        password: "pw-123".into(),
    };
    assert!(!format!("{a:?}").contains("pw-123"));
}
