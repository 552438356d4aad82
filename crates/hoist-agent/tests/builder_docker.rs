//! The docker builder against the real Docker daemon of the test environment
//! (`source ~/.cache/hoist/test-env.sh`, written by `scripts/test-env.sh`): git jobs
//! served by a real `git daemon` on 127.0.0.1, code jobs served by a real hoist server
//! (in process) or a directory, Dockerfile and generated-Dockerfile jobs, the content
//! hash cache, and failures.
//!
//! Without `HOIST_TEST_DOCKER=1` the docker tests are skipped with a note, unless
//! `HOIST_TEST_REQUIRE_SERVICES` is set (then they fail). Nothing can be pulled: the
//! bases are `hoist-test/busybox:latest` and `hoist-test/python:3-slim`
//! (`HOIST_TEST_PYTHON_IMAGE`), both built locally by the script. Builds run one at a
//! time (a process-wide lock) so that each test can check what the daemon holds.
//! Every image a test builds is removed by a guard, whatever the outcome; every source
//! carries a random nonce, so tags never collide with an earlier run's.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, LogsOptions, RemoveContainerOptions, RemoveImageOptions,
    WaitContainerOptions,
};
use futures::StreamExt;
use hoist_agent::builders::docker::{DirBuildOptions, DockerBuilder, build_dockerfile_dir};
use hoist_agent::builders::noop::NoopBuilder;
use hoist_agent::builders::{
    ArtifactSource, BuildError, BuildSettings, Builder, Built, DirArtifacts, GitError,
    builder_from_config,
};
use hoist_agent::config::{AgentConfig, BuilderKind, DockerSettings};
use hoist_agent::logs::LogSink;
use hoist_agent::registries::Registry;
use hoist_agent::registries::local::LocalRegistry;
use hoist_agent::runners::docker::DockerRunner;
use hoist_client::{Client, Secret};
use hoist_context::{PackOptions, pack_dir};
use hoist_core::api::{JobSource, Run};
use hoist_testkit::{python_image, require_docker};
use serde_json::json;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn busybox() -> String {
    hoist_testkit::busybox_image()
}

fn nonce() -> String {
    format!("{:016x}", rand::random::<u64>())
}

async fn docker() -> Docker {
    DockerRunner::connect(&DockerSettings::default())
        .await
        .expect("Docker daemon")
        .client()
        .clone()
}

/// Removes the images it was told about (and their untagged parents) when dropped.
struct Images {
    refs: Vec<String>,
}

impl Images {
    fn new() -> Images {
        Images { refs: Vec::new() }
    }
    fn add(&mut self, r: &str) {
        self.refs.push(r.to_string());
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        let refs = std::mem::take(&mut self.refs);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let d = docker().await;
                for r in refs {
                    let opts = RemoveImageOptions {
                        force: true,
                        noprune: false,
                        ..Default::default()
                    };
                    let _ = d.remove_image(&r, Some(opts), None).await;
                }
            });
        })
        .join();
    }
}

fn run_for(source: JobSource) -> Run {
    serde_json::from_value(json!({
        "id": format!("bt-{}", nonce()),
        "entity": "alice",
        "queue": "q",
        "project": "p",
        "name": "n",
        "image": null,
        "job": {"name": "train", "version": "v0"},
        "job_source": source,
        "entry_point": null,
        "args": [],
        "env": {},
        "config": {},
        "resource_args": {},
        "template_values": {},
        "priority": "medium",
        "resource": "docker",
        "resource_config": {},
        "state": "claimed",
        "state_reason": "",
        "stop_requested": false,
        "created_by": "alice",
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "started_at": null,
        "ended_at": null,
        "agent": null,
        "attempts": 1,
        "exit_code": null,
        "failure": null
    }))
    .expect("run")
}

fn write(root: &Path, rel: &str, contents: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, contents).unwrap();
}

fn lines(logs: &LogSink) -> Vec<String> {
    logs.snapshot().into_iter().map(|l| l.text).collect()
}

/// Runs `image` (network none) with `cmd` (or its default command) and returns its
/// output.
async fn run_image(d: &Docker, image: &str, cmd: Option<Vec<&str>>) -> String {
    let name = format!("hoist-bt-{}", nonce());
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: cmd.map(|c| c.into_iter().map(str::to_string).collect()),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let opts = CreateContainerOptions {
        name: Some(name.clone()),
        ..Default::default()
    };
    d.create_container(Some(opts), body).await.unwrap();
    d.start_container(&name, None).await.unwrap();
    let _ = d
        .wait_container(&name, None::<WaitContainerOptions>)
        .collect::<Vec<_>>()
        .await;
    let logs = LogsOptions {
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let out: Vec<String> = d
        .logs(&name, Some(logs))
        .map(|c| c.map(|c| c.to_string()).unwrap_or_default())
        .collect()
        .await;
    let _ = d
        .remove_container(
            &name,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await;
    out.concat()
}

async fn image_id(d: &Docker, image: &str) -> Option<String> {
    d.inspect_image(image).await.ok().and_then(|i| i.id)
}

fn settings(work: &Path) -> BuildSettings {
    BuildSettings {
        base_image: python_image(),
        network_mode: Some("none".into()),
        work_dir: Some(work.to_path_buf()),
        ..Default::default()
    }
}

fn local_builder(d: &Docker, artifacts: Arc<dyn ArtifactSource>, work: &Path) -> DockerBuilder {
    DockerBuilder::new(
        d.clone(),
        Arc::new(LocalRegistry::new(d.clone())),
        artifacts,
        settings(work),
    )
}

fn assert_empty_dir(p: &Path) {
    let left: Vec<PathBuf> = std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left behind in the work dir: {left:?}");
}

/// Packs `dir` into `store` as a code artifact named by its digest.
fn store_artifact(dir: &Path, store: &Path) -> (String, u64) {
    let p = pack_dir(dir, &PackOptions::default()).unwrap();
    let hex = p.digest.strip_prefix("sha256:").unwrap().to_string();
    std::fs::copy(&p.path, store.join(&hex)).unwrap();
    (p.digest, p.compressed)
}

fn code(artifact: &str, size: u64, entry_point: &[&str], dockerfile: Option<&str>) -> JobSource {
    JobSource::Code {
        artifact: artifact.to_string(),
        size,
        entry_point: entry_point.iter().map(|s| s.to_string()).collect(),
        dockerfile: dockerfile.map(str::to_string),
    }
}

// ------------------------------------------------------------------------ git daemon

struct GitDaemon {
    child: Child,
    port: u16,
}

impl GitDaemon {
    fn start(base: &Path) -> GitDaemon {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = Command::new("git")
            .arg("daemon")
            .arg("--reuseaddr")
            .arg(format!("--base-path={}", base.display()))
            .arg("--export-all")
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(base)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "git daemon did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        GitDaemon { child, port }
    }

    fn url(&self, repo: &str) -> String {
        format!("git://127.0.0.1:{}/{repo}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        // By PID: the child we started.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=hoist test",
            "-c",
            "user.email=test@hoist.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Commits everything in `work` and pushes to the bare `repo`; returns the commit.
fn commit_and_push(work: &Path, repo: &Path, msg: &str) -> String {
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", msg]);
    git(
        work,
        &[
            "push",
            "-q",
            &repo.display().to_string(),
            "HEAD:refs/heads/main",
        ],
    );
    git(work, &["rev-parse", "HEAD"])
}

fn git_source(
    repo: &str,
    commit: &str,
    build_context: Option<&str>,
    dockerfile: Option<&str>,
) -> JobSource {
    JobSource::Git {
        repo: repo.to_string(),
        git_ref: Some("main".into()),
        commit: commit.to_string(),
        entry_point: vec!["sh".into(), "/app/run.sh".into()],
        build_context: build_context.map(str::to_string),
        dockerfile: dockerfile.map(str::to_string),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_git_job_from_a_git_daemon() {
    require_docker!();
    let _serial = SERIAL.lock().await;
    let d = docker().await;
    let mut images = Images::new();
    let t = tempfile::tempdir().unwrap();
    let (work, served, scratch) = (
        t.path().join("work"),
        t.path().join("served"),
        t.path().join("scratch"),
    );
    for p in [&work, &served, &scratch] {
        std::fs::create_dir(p).unwrap();
    }
    let n = nonce();
    // The build context is `sub/`, the Dockerfile `docker/Dockerfile` inside it.
    write(&work, "README.md", "not in the context\n");
    write(&work, "sub/hello.txt", &format!("hello from git {n}\n"));
    write(&work, "sub/run.sh", "cat /app/hello.txt\n");
    write(
        &work,
        "sub/docker/Dockerfile",
        &format!(
            "FROM {}\nCOPY hello.txt run.sh /app/\nCMD [\"sh\", \"/app/run.sh\"]\n",
            busybox()
        ),
    );
    git(&work, &["init", "-q"]);
    let repo = served.join("repo.git");
    git(
        t.path(),
        &["init", "-q", "--bare", &repo.display().to_string()],
    );
    let c1 = commit_and_push(&work, &repo, "first");
    let daemon = GitDaemon::start(&served);
    let url = daemon.url("repo.git");

    let builder = local_builder(
        &d,
        Arc::new(DirArtifacts {
            dir: scratch.clone(),
        }),
        &scratch,
    );
    let run = run_for(git_source(
        &url,
        &c1,
        Some("sub"),
        Some("docker/Dockerfile"),
    ));
    let logs = LogSink::new();
    let started = Instant::now();
    let built = builder
        .build(&run, &logs)
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    eprintln!("git build: {:?}", started.elapsed());
    images.add(&built.image);
    assert!(!built.cache_hit);
    assert_eq!(built.image, format!("hoist-build:{}", built.tag));
    let out = lines(&logs);
    assert!(
        out.iter()
            .any(|l| l.contains(&format!("fetching {url} at {c1}"))),
        "{out:#?}"
    );
    assert!(
        out.iter()
            .any(|l| l.starts_with("Step 2/") && l.ends_with(" : COPY hello.txt run.sh /app/")),
        "{out:#?}"
    );
    assert_eq!(
        run_image(&d, &built.image, None).await,
        format!("hello from git {n}\n")
    );

    // A second commit that changes one byte of the context: another tag. The first
    // commit is no longer the branch tip: it is fetched by id all the same.
    write(&work, "sub/hello.txt", &format!("hello from git {n}!\n"));
    let c2 = commit_and_push(&work, &repo, "second");
    let logs2 = LogSink::new();
    let built2 = builder
        .build(
            &run_for(git_source(
                &url,
                &c2,
                Some("sub"),
                Some("docker/Dockerfile"),
            )),
            &logs2,
        )
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    images.add(&built2.image);
    assert_ne!(built2.tag, built.tag);
    assert_eq!(
        run_image(&d, &built2.image, None).await,
        format!("hello from git {n}!\n")
    );

    // A change outside the build context (README) gives the same tag: a new commit,
    // the same content. With a fresh builder (nothing remembered), it is found.
    write(&work, "README.md", "still not in the context\n");
    let c3 = commit_and_push(&work, &repo, "third");
    let fresh = local_builder(
        &d,
        Arc::new(DirArtifacts {
            dir: scratch.clone(),
        }),
        &scratch,
    );
    let logs3 = LogSink::new();
    let built3 = fresh
        .build(
            &run_for(git_source(
                &url,
                &c3,
                Some("sub"),
                Some("docker/Dockerfile"),
            )),
            &logs3,
        )
        .await
        .unwrap();
    assert_eq!(built3.tag, built2.tag);
    assert!(built3.cache_hit);

    // The old commit again (not a tip any more).
    let logs4 = LogSink::new();
    let again = fresh
        .build(
            &run_for(git_source(
                &url,
                &c1,
                Some("sub"),
                Some("docker/Dockerfile"),
            )),
            &logs4,
        )
        .await
        .unwrap();
    assert_eq!(again.tag, built.tag);
    assert!(again.cache_hit);

    // Errors: a commit the server does not have; a build context outside the repo; a
    // Dockerfile outside the build context.
    let bad = "0123456789abcdef0123456789abcdef01234567";
    let e = fresh
        .build(&run_for(git_source(&url, bad, None, None)), &LogSink::new())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains(bad) && e.to_string().contains(&url),
        "{e:?}"
    );
    assert!(!e.output_tail().is_empty());
    // The cause is kept: git's exit status and what it said.
    assert!(
        matches!(&e, BuildError::Git { source: GitError::Exited { status, stderr }, .. }
            if !status.success() && stderr.last() == e.output_tail().last()),
        "{e:?}"
    );
    assert!(
        !e.is_transient(),
        "a commit the server does not have is not retried"
    );
    let e = fresh
        .build(
            &run_for(git_source(&url, &c1, Some("../.."), None)),
            &LogSink::new(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("outside the build context"), "{e:?}");
    let e = fresh
        .build(
            &run_for(git_source(&url, &c1, Some("sub"), Some("../README.md"))),
            &LogSink::new(),
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("\"../README.md\" points outside the build context"),
        "{e:?}"
    );
    drop(daemon);
    assert_empty_dir(&scratch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_code_job_through_the_server_and_the_cache() {
    require_docker!();
    let _serial = SERIAL.lock().await;
    let d = docker().await;
    let mut images = Images::new();
    let t = tempfile::tempdir().unwrap();
    let server = hoist_server::Server::start(hoist_server::ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        t.path().join("data"),
    ))
    .await
    .unwrap();
    let key = std::fs::read_to_string(t.path().join("data/admin.key")).unwrap();
    let client = Client::new(
        &format!("http://{}", server.addr),
        Some(Secret::new(key.trim())),
    )
    .unwrap();

    let src = t.path().join("src");
    let work = t.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let n = nonce();
    write(&src, "app/main.sh", &format!("echo code job {n}\n"));
    write(&src, "data/ignored.bin", "big\n");
    write(&src, ".hoistignore", "data/\n");
    write(
        &src,
        "Dockerfile",
        &format!(
            "FROM {}\nCOPY app /app\nRUN test ! -e /app/data\nCMD [\"sh\", \"/app/main.sh\"]\n",
            busybox()
        ),
    );
    let upload = |dir: PathBuf| {
        let client = client.clone();
        async move {
            let p = pack_dir(&dir, &PackOptions::default()).unwrap();
            let blob = client
                .upload_blob_file(&p.path, None, |_| {})
                .await
                .unwrap();
            assert_eq!(blob.digest, p.digest);
            (p.digest, p.compressed)
        }
    };
    let (digest, size) = upload(src.clone()).await;
    let builder = DockerBuilder::new(
        d.clone(),
        Arc::new(LocalRegistry::new(d.clone())),
        Arc::new(client.clone()),
        settings(&work),
    );
    let run = run_for(code(&digest, size, &["sh", "/app/main.sh"], None));
    let logs = LogSink::new();
    let started = Instant::now();
    let built = builder
        .build(&run, &logs)
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    eprintln!("code build (cold): {:?}", started.elapsed());
    images.add(&built.image);
    assert!(!built.cache_hit);
    assert_eq!(
        run_image(&d, &built.image, None).await,
        format!("code job {n}\n")
    );
    let id1 = image_id(&d, &built.image).await.unwrap();
    let out = lines(&logs);
    assert!(
        out.iter()
            .any(|l| l.contains(&format!("downloading code artifact {digest}"))),
        "{out:#?}"
    );
    assert!(
        out.iter()
            .any(|l| l.starts_with("[hoist: building hoist-build:")),
        "{out:#?}"
    );

    // Second launch: a cache hit, no build, the same image.
    let logs2 = LogSink::new();
    let started = Instant::now();
    let hit = builder.build(&run, &logs2).await.unwrap();
    eprintln!(
        "code build (cache hit, remembered): {:?}",
        started.elapsed()
    );
    assert_eq!(
        hit,
        Built {
            cache_hit: true,
            ..built.clone()
        }
    );
    let out2 = lines(&logs2);
    assert_eq!(
        out2,
        [format!("[hoist: image {} exists; no build]", built.image)]
    );
    assert_eq!(
        image_id(&d, &built.image).await.unwrap(),
        id1,
        "no new image"
    );

    // A fresh builder (another agent process): it downloads and hashes, then finds it.
    let fresh = DockerBuilder::new(
        d.clone(),
        Arc::new(LocalRegistry::new(d.clone())),
        Arc::new(client.clone()),
        settings(&work),
    );
    let logs3 = LogSink::new();
    let started = Instant::now();
    let hit = fresh.build(&run, &logs3).await.unwrap();
    eprintln!(
        "code build (cache hit, fresh builder): {:?}",
        started.elapsed()
    );
    assert!(hit.cache_hit);
    assert_eq!(hit.tag, built.tag);
    assert!(!lines(&logs3).iter().any(|l| l.starts_with("Step ")));
    assert_eq!(image_id(&d, &built.image).await.unwrap(), id1);

    // One byte changed in the source: another artifact, another tag.
    write(&src, "app/main.sh", &format!("echo code job {n}?\n"));
    let (digest2, size2) = upload(src.clone()).await;
    assert_ne!(digest2, digest);
    let built2 = builder
        .build(
            &run_for(code(&digest2, size2, &["sh", "/app/main.sh"], None)),
            &LogSink::new(),
        )
        .await
        .unwrap();
    images.add(&built2.image);
    assert_ne!(built2.tag, built.tag);
    assert!(!built2.cache_hit);
    // A change in an ignored file changes nothing.
    write(&src, "app/main.sh", &format!("echo code job {n}\n"));
    write(&src, "data/ignored.bin", "bigger\n");
    let (digest3, _) = upload(src.clone()).await;
    assert_eq!(digest3, digest);

    // An artifact the server does not have.
    let missing = format!("sha256:{}", "0".repeat(64));
    let e = builder
        .build(
            &run_for(code(&missing, 1, &["true"], None)),
            &LogSink::new(),
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("cannot download the code artifact {missing}")),
        "{e:?}"
    );
    assert_empty_dir(&work);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_generated_dockerfile_for_a_python_job() {
    require_docker!();
    let _serial = SERIAL.lock().await;
    let d = docker().await;
    let mut images = Images::new();
    let t = tempfile::tempdir().unwrap();
    let (src, store, work) = (
        t.path().join("src"),
        t.path().join("store"),
        t.path().join("work"),
    );
    std::fs::create_dir(&store).unwrap();
    std::fs::create_dir(&work).unwrap();
    let n = nonce();
    // No packages: pip has nothing to fetch (the build has no network here).
    write(
        &src,
        "requirements.txt",
        &format!("# no dependencies ({n})\n"),
    );
    write(
        &src,
        "train.py",
        "import os, sys\nprint('train', os.getcwd(), sys.argv[1:], open('requirements.txt').read().strip())\n",
    );
    let (digest, size) = store_artifact(&src, &store);
    let builder = local_builder(&d, Arc::new(DirArtifacts { dir: store.clone() }), &work);
    let run = run_for(code(
        &digest,
        size,
        &["python", "train.py", "--epochs", "1"],
        None,
    ));
    let logs = LogSink::new();
    let started = Instant::now();
    let built = builder
        .build(&run, &logs)
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    eprintln!("generated python build: {:?}", started.elapsed());
    images.add(&built.image);
    let out = lines(&logs);
    assert!(
        out.iter()
            .any(|l| l.contains("no Dockerfile in code artifact") && l.contains(&python_image())),
        "{out:#?}"
    );
    assert!(
        out.iter()
            .any(|l| l.ends_with(": RUN pip install -r requirements.txt")),
        "{out:#?}"
    );
    assert_eq!(
        run_image(&d, &built.image, None).await,
        format!("train /workspace ['--epochs', '1'] # no dependencies ({n})\n")
    );
    let config = d.inspect_image(&built.image).await.unwrap().config.unwrap();
    assert_eq!(config.working_dir.as_deref(), Some("/workspace"));
    assert_eq!(
        config.cmd,
        Some(vec![
            "python".into(),
            "train.py".into(),
            "--epochs".into(),
            "1".into()
        ])
    );

    // Another base image is another tag, for the same source.
    let mut other = settings(&work);
    other.base_image = busybox();
    let b2 = DockerBuilder::new(
        d.clone(),
        Arc::new(LocalRegistry::new(d.clone())),
        Arc::new(DirArtifacts { dir: store.clone() }),
        other,
    );
    let e = b2.build(&run, &LogSink::new()).await.unwrap_err();
    // (busybox has no pip: the generated step fails, naming it.)
    assert_eq!(
        e.step(),
        Some("RUN pip install -r requirements.txt"),
        "{e:?}"
    );

    // No Dockerfile, no requirements.txt, no pyproject.toml: a clear error, no build.
    let bare = t.path().join("bare");
    write(&bare, "train.py", "print(1)\n");
    let (digest, size) = store_artifact(&bare, &store);
    let e = builder
        .build(
            &run_for(code(&digest, size, &["python", "train.py"], None)),
            &LogSink::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "no Dockerfile and no requirements.txt/pyproject.toml in code artifact {digest}; add a Dockerfile (or name one with --dockerfile), or a requirements.txt or pyproject.toml for hoist to build a Python image on {}",
            python_image()
        )
    );
    assert_empty_dir(&work);
}

/// What a failed build must not leave: the intermediate images it committed and the
/// containers it ran (both named in its output).
async fn assert_nothing_left(d: &Docker, base: &str, out: &[String]) {
    let base_id = image_id(d, base).await.unwrap();
    let mut checked = 0;
    for l in out {
        let l = l.trim();
        if let Some(c) = l.strip_prefix("---> Running in ") {
            let gone = d.inspect_container(c.trim(), None).await.is_err();
            assert!(gone, "container {c} left behind");
            checked += 1;
        } else if let Some(id) = l.strip_prefix("---> ")
            && id.bytes().all(|b| b.is_ascii_hexdigit())
            && !base_id.contains(id)
        {
            assert!(
                image_id(d, id).await.is_none(),
                "intermediate image {id} left behind"
            );
            checked += 1;
        }
    }
    assert!(
        checked > 0,
        "the output names no container or image: {out:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_failing_step_is_named_and_nothing_is_left() {
    require_docker!();
    let _serial = SERIAL.lock().await;
    let d = docker().await;
    let t = tempfile::tempdir().unwrap();
    let (src, store, work) = (
        t.path().join("src"),
        t.path().join("store"),
        t.path().join("work"),
    );
    std::fs::create_dir(&store).unwrap();
    std::fs::create_dir(&work).unwrap();
    let n = nonce();
    write(
        &src,
        "Dockerfile",
        &format!(
            "FROM {}\nRUN echo preparing {n} > /prep\nRUN echo about to fail && exit 3\nCMD [\"true\"]\n",
            busybox()
        ),
    );
    let (digest, size) = store_artifact(&src, &store);
    let builder = local_builder(&d, Arc::new(DirArtifacts { dir: store.clone() }), &work);
    let logs = LogSink::new();
    let started = Instant::now();
    let e: BuildError = builder
        .build(&run_for(code(&digest, size, &["true"], None)), &logs)
        .await
        .unwrap_err();
    eprintln!("failing build: {:?}", started.elapsed());
    assert_eq!(e.step(), Some("RUN echo about to fail && exit 3"));
    assert!(
        e.to_string()
            .starts_with("the image build failed at step `RUN echo about to fail && exit 3`: ")
            && e.to_string().contains("returned a non-zero code: 3"),
        "{e:?}"
    );
    assert!(
        e.output_tail().iter().any(|l| l == "about to fail"),
        "{e:?}"
    );
    assert!(
        e.output_tail().last().unwrap().contains("non-zero code: 3"),
        "{e:?}"
    );
    let f = e.failure();
    assert_eq!(f.stage, hoist_core::run::FailureStage::Build);
    let out = lines(&logs);
    assert!(
        out.iter().any(|l| l.starts_with("[hoist: removed ")),
        "{out:#?}"
    );
    assert_nothing_left(&d, &busybox(), &out).await;
    assert_empty_dir(&work);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_missing_requirements_file_names_the_copy_step() {
    require_docker!();
    let _serial = SERIAL.lock().await;
    let d = docker().await;
    let t = tempfile::tempdir().unwrap();
    let (src, store, work) = (
        t.path().join("src"),
        t.path().join("store"),
        t.path().join("work"),
    );
    std::fs::create_dir(&store).unwrap();
    std::fs::create_dir(&work).unwrap();
    let n = nonce();
    write(&src, "train.py", "print(1)\n");
    write(
        &src,
        "docker/train.Dockerfile",
        &format!(
            "FROM {}\nRUN echo {n} > /nonce\nCOPY requirements.txt /app/\nRUN pip install -r /app/requirements.txt\n",
            python_image()
        ),
    );
    let (digest, size) = store_artifact(&src, &store);
    let builder = local_builder(&d, Arc::new(DirArtifacts { dir: store.clone() }), &work);
    let logs = LogSink::new();
    let e = builder
        .build(
            &run_for(code(
                &digest,
                size,
                &["python", "train.py"],
                Some("docker/train.Dockerfile"),
            )),
            &logs,
        )
        .await
        .unwrap_err();
    assert_eq!(e.step(), Some("COPY requirements.txt /app/"), "{e:?}");
    assert!(e.to_string().contains("requirements.txt"), "{e:?}");
    assert!(!e.output_tail().is_empty());
    assert_nothing_left(&d, &python_image(), &lines(&logs)).await;
    assert_empty_dir(&work);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_build_dockerfile_dir_is_the_plain_engine_build() {
    require_docker!();
    let _serial = SERIAL.lock().await;
    let d = docker().await;
    let mut images = Images::new();
    let t = tempfile::tempdir().unwrap();
    let n = nonce();
    write(t.path(), "f.txt", &n);
    write(
        t.path(),
        "Dockerfile",
        &format!("FROM {}\nCOPY f.txt /f.txt\n", busybox()),
    );
    let image = format!("hoist-bench-test:{n}");
    images.add(&image);
    let opts = DirBuildOptions {
        network_mode: Some("none".into()),
        ..Default::default()
    };
    let logs = LogSink::new();
    let b = build_dockerfile_dir(&d, t.path(), "Dockerfile", &image, &opts, &logs)
        .await
        .unwrap();
    eprintln!("plain engine build: {:?}", b.duration);
    assert_eq!(
        image_id(&d, &image).await.as_deref(),
        Some(b.image_id.as_str())
    );
    assert_eq!(run_image(&d, &image, Some(vec!["cat", "/f.txt"])).await, n);
}

/// The test registry with htpasswd auth (`scripts/test-env.sh`), through the `oci`
/// registry with a Docker config file holding `password`.
fn auth_registry(dir: &Path, repository: &str, password: &str) -> Arc<dyn Registry> {
    use base64::Engine;
    let host = std::env::var("HOIST_TEST_AUTH_REGISTRY").expect("HOIST_TEST_AUTH_REGISTRY");
    let user =
        std::env::var("HOIST_TEST_AUTH_REGISTRY_USER").expect("HOIST_TEST_AUTH_REGISTRY_USER");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let file = dir.join(format!("config-{}.json", nonce()));
    std::fs::write(
        &file,
        json!({"auths": {host.clone(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let cfg = hoist_agent::config::OciRegistry {
        host,
        repository: repository.to_string(),
        plain_http: true,
        credentials_file: Some(file),
    };
    Arc::new(
        hoist_agent::registries::oci::OciRegistry::new(
            &cfg,
            &hoist_agent::environments::Ambient::process(),
        )
        .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_build_is_pushed_and_found_in_the_registry() {
    require_docker!();
    let _serial = SERIAL.lock().await;
    let d = docker().await;
    let mut images = Images::new();
    let t = tempfile::tempdir().unwrap();
    let (src, store, work) = (
        t.path().join("src"),
        t.path().join("store"),
        t.path().join("work"),
    );
    std::fs::create_dir(&store).unwrap();
    std::fs::create_dir(&work).unwrap();
    let password = std::fs::read_to_string(
        std::env::var("HOIST_TEST_AUTH_REGISTRY_PASSWORD_FILE").expect("password file"),
    )
    .unwrap()
    .trim()
    .to_string();
    let n = nonce();
    let repository = format!("hoist-builder-test/{n}");
    write(
        &src,
        "Dockerfile",
        &format!("FROM {}\nRUN echo {n} > /n\n", busybox()),
    );
    let (digest, size) = store_artifact(&src, &store);
    let run = run_for(code(&digest, size, &["cat", "/n"], None));
    let registry = auth_registry(t.path(), &repository, &password);
    let host = std::env::var("HOIST_TEST_AUTH_REGISTRY").unwrap();
    let builder = DockerBuilder::new(
        d.clone(),
        registry.clone(),
        Arc::new(DirArtifacts { dir: store.clone() }),
        settings(&work),
    );
    let logs = LogSink::new();
    let started = Instant::now();
    let built = builder
        .build(&run, &logs)
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    eprintln!("build + push: {:?}", started.elapsed());
    images.add(&built.image);
    assert_eq!(built.image, format!("{host}/{repository}:{}", built.tag));
    assert!(!built.cache_hit);
    assert!(registry.has_image(&built.image).await.unwrap());
    let out = lines(&logs);
    assert!(
        !out.iter().any(|l| l.contains(&password)),
        "the password was logged"
    );

    // Without the local copy, a fresh builder still finds it: it asks the registry.
    d.remove_image(
        &built.image,
        Some(RemoveImageOptions {
            force: true,
            ..Default::default()
        }),
        None,
    )
    .await
    .unwrap();
    let fresh = DockerBuilder::new(
        d.clone(),
        registry.clone(),
        Arc::new(DirArtifacts { dir: store.clone() }),
        settings(&work),
    );
    let logs2 = LogSink::new();
    let hit = fresh.build(&run, &logs2).await.unwrap();
    assert!(hit.cache_hit, "{:#?}", lines(&logs2));
    assert_eq!(hit.image, built.image);

    // A wrong password: a clear failure naming the registry, the password nowhere.
    let wrong = "not-the-password";
    let bad = DockerBuilder::new(
        d.clone(),
        auth_registry(t.path(), &repository, wrong),
        Arc::new(DirArtifacts { dir: store.clone() }),
        settings(&work),
    );
    write(
        &src,
        "Dockerfile",
        &format!("FROM {}\nRUN echo {n}! > /n\n", busybox()),
    );
    let (digest, size) = store_artifact(&src, &store);
    let logs3 = LogSink::new();
    let e = bad
        .build(&run_for(code(&digest, size, &["cat", "/n"], None)), &logs3)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("registry {host} refused the credentials")),
        "{e:?}"
    );
    assert!(e.step().is_none() && e.output_tail().is_empty());
    assert!(
        matches!(&e, BuildError::Registry { source, .. } if source.is_refusal()),
        "{e:?}"
    );
    for l in lines(&logs3)
        .iter()
        .chain([&e.to_string(), &format!("{e:?}")])
    {
        assert!(
            !l.contains(wrong) && !l.contains(&password),
            "secret in {l:?}"
        );
    }
    // It failed asking the registry, before building anything.
    assert!(!lines(&logs3).iter().any(|l| l.starts_with("Step ")));
    assert_empty_dir(&work);
}

// ------------------------------------------------------------- builders that refuse

fn git_run() -> Run {
    run_for(git_source(
        "https://example.invalid/repo.git",
        "0123456789abcdef0123456789abcdef01234567",
        None,
        None,
    ))
}

#[tokio::test]
async fn noop_builder_refuses_git_and_code_jobs() {
    let logs = LogSink::new();
    let e = NoopBuilder.build(&git_run(), &logs).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "this agent's builder is `noop` (prebuilt images only): job alice/train:v0 needs an image built from its git source; configure `builder: {type: docker}` (or kaniko) on an agent that serves this queue"
    );
    assert_eq!(lines(&logs), [format!("[hoist: {e}]")]);
    let e = NoopBuilder
        .build(
            &run_for(code("sha256:00", 1, &["x"], None)),
            &LogSink::new(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("from its code source"), "{e:?}");
    let e = NoopBuilder
        .build(
            &run_for(JobSource::Image {
                image: "busybox".into(),
            }),
            &LogSink::new(),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nothing to build"), "{e:?}");
}

#[tokio::test]
async fn builder_from_config_picks_the_configured_one() {
    struct NoRegistry;
    #[async_trait::async_trait]
    impl Registry for NoRegistry {
        fn kind(&self) -> &'static str {
            "none"
        }
        fn repository(&self) -> Option<String> {
            None
        }
        async fn auth(
            &self,
        ) -> Result<
            Option<hoist_agent::registries::RegistryAuth>,
            hoist_agent::registries::RegistryError,
        > {
            Ok(None)
        }
        async fn has_image(&self, _: &str) -> Result<bool, hoist_agent::registries::RegistryError> {
            Ok(false)
        }
    }
    let client = Client::new("http://127.0.0.1:9", None).unwrap();
    let mut cfg = AgentConfig::default();
    cfg.builder.kind = BuilderKind::Noop;
    assert_eq!(
        builder_from_config(&cfg, None, Arc::new(NoRegistry), client.clone()).kind(),
        "noop"
    );
    cfg.builder.kind = BuilderKind::Docker;
    let b = builder_from_config(&cfg, None, Arc::new(NoRegistry), client);
    assert_eq!(b.kind(), "docker");
    let e = b.build(&git_run(), &LogSink::new()).await.unwrap_err();
    assert!(e.to_string().contains("needs a Docker daemon"), "{e:?}");

    // An in-cluster builder is made by the agent's start, which has the cluster.
    let text = "builder:\n  type: kaniko\n  build-context-store: s3://bucket/contexts\nregistry:\n  type: oci\n  uri: 127.0.0.1:5001/team/app\n";
    let cfg = hoist_agent::config::load_str(
        text,
        "launch-config.yaml",
        &|_| None,
        &hoist_agent::config::ConfigOverrides::default(),
    )
    .unwrap()
    .config;
    let b = builder_from_config(
        &cfg,
        None,
        Arc::new(NoRegistry),
        Client::new("http://127.0.0.1:9", None).unwrap(),
    );
    assert_eq!(b.kind(), "kaniko");
    let e = b.build(&git_run(), &LogSink::new()).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("need the agent's Kubernetes cluster"),
        "{e:?}"
    );
    assert_eq!(e.failure().stage, hoist_core::run::FailureStage::Build);
}
