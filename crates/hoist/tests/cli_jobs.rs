//! `hoist job create image|git|code`, `job list|show|delete` and `launch --job` against
//! a real server; git jobs against a local bare repository served by `git daemon`.

mod cli_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cli_support::{World, field};

fn world() -> World {
    let w = World::start();
    w.login_admin();
    w.run(&["queue", "create", "default", "--resource", "local-process"])
        .ok();
    w
}

fn blob_files(w: &World) -> Vec<PathBuf> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(&w.data.join("blobs/sha256"), &mut out);
    out
}

#[test]
fn image_jobs_versions_show_and_launch() {
    let w = world();
    w.run(&[
        "job",
        "create",
        "image",
        "train",
        "--image",
        "ghcr.io/me/train:1",
        "--description",
        "trains",
    ])
    .ok()
    .stdout_has("Created job admin/train v0 (ghcr.io/me/train:1).");
    w.run(&[
        "job",
        "create",
        "image",
        "train",
        "--image",
        "ghcr.io/me/train:1",
    ])
    .ok()
    .stdout_has("unchanged: its latest version v0 has this source");
    w.run(&[
        "job",
        "create",
        "image",
        "train",
        "--image",
        "ghcr.io/me/train:2",
    ])
    .ok()
    .stdout_has("Created version v1 of job admin/train");

    let list = w.run(&["job", "list"]).ok();
    let header = list.stdout.lines().next().unwrap();
    for col in ["ENTITY/NAME", "LATEST", "TYPE", "SOURCE", "UPDATED"] {
        assert!(header.contains(col), "{header}");
    }
    let row: Vec<&str> = list
        .stdout
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..4],
        ["admin/train", "v1", "image", "ghcr.io/me/train:2"]
    );
    let j = w.run(&["job", "list", "-o", "json"]).ok().json();
    assert_eq!(j[0]["latest"], "v1");

    let show = w.run(&["job", "show", "train"]).ok();
    assert_eq!(field(&show.stdout, "job").as_deref(), Some("admin/train"));
    assert_eq!(
        field(&show.stdout, "description").as_deref(),
        Some("trains")
    );
    assert_eq!(
        field(&show.stdout, "version").as_deref(),
        Some("v1 (latest)")
    );
    assert_eq!(field(&show.stdout, "type").as_deref(), Some("image"));
    assert_eq!(
        field(&show.stdout, "image").as_deref(),
        Some("ghcr.io/me/train:2")
    );
    assert!(show.stdout.contains("versions:"), "{}", show.stdout);
    let versions: Vec<&str> = show
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("versions:"))
        .skip(2)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(versions, ["v1", "v0"]);
    let show = w.run(&["job", "show", "train:v0"]).ok();
    assert_eq!(field(&show.stdout, "version").as_deref(), Some("v0"));
    assert_eq!(
        field(&show.stdout, "image").as_deref(),
        Some("ghcr.io/me/train:1")
    );
    let j = w
        .run(&["job", "show", "admin/train", "-o", "json"])
        .ok()
        .json();
    assert_eq!(j["versions"].as_array().unwrap().len(), 2);
    let j = w
        .run(&["job", "show", "train:latest", "-o", "json"])
        .ok()
        .json();
    assert_eq!(j["version"], "v1");
    assert_eq!(j["source"]["image"], "ghcr.io/me/train:2");

    // Launch by job: the version is resolved and recorded.
    let id = w
        .run(&["launch", "-q", "default", "--job", "train"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let run = w.run(&["run", "show", &id, "-o", "json"]).ok().json();
    assert_eq!(run["image"], "ghcr.io/me/train:2");
    assert_eq!(run["job"]["name"], "train");
    assert_eq!(run["job"]["version"], "v1");
    assert_eq!(run["job_source"]["type"], "image");
    let id = w
        .run(&["launch", "-q", "default", "--job", "train:v0"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let run = w.run(&["run", "show", &id, "-o", "json"]).ok().json();
    assert_eq!(run["image"], "ghcr.io/me/train:1");
    w.run(&["launch", "-q", "default", "--job", "train:v9"])
        .code(1)
        .stderr_has("has versions v0..v1");
    w.run(&["launch", "-q", "default", "--job", "nope"])
        .code(1)
        .stderr_has("no job named \"nope\"");

    // Mistakes.
    w.run(&["job", "show", "nope"])
        .code(1)
        .stderr_has("no job named \"nope\"");
    w.run(&["job", "show", "train:v9"])
        .code(1)
        .stderr_has("has versions v0..v1");
    w.run(&["job", "show", "train:9"]).code(2);
    w.run(&["job", "create", "image", "bad name", "--image", "x"])
        .code(2)
        .stderr_has("invalid job name");
    w.run(&["job", "create", "image", "x", "--image", "a b"])
        .code(2);
    w.run(&["job", "create", "image", "x"]).code(2);

    w.run(&["job", "delete", "train"])
        .ok()
        .stdout_has("Deleted job admin/train.");
    w.run(&["job", "list"]).ok().stdout_has("No jobs.");
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[test]
fn code_jobs_pack_upload_once_and_launch() {
    let w = world();
    let src = w.dir.path().join("src");
    write(&src, "main.py", "print(42)\n");
    write(&src, "lib/util.py", "X = 1\n");
    write(&src, ".gitignore", "data/\n*.pyc\n");
    write(&src, ".hoistignore", "secret.txt\n");
    write(&src, "data/big.csv", &"1,2,3\n".repeat(1000));
    write(&src, "secret.txt", "hush\n");
    write(&src, "lib/util.pyc", "junk");
    let srcs = src.to_string_lossy().to_string();

    let r = w
        .run(&[
            "job",
            "create",
            "code",
            "app",
            &srcs,
            "--entry-point",
            "python3 main.py",
        ])
        .ok()
        .stdout_has("Created job admin/app v0");
    assert!(r.stderr.contains("hoist: packed"), "{}", r.stderr);
    assert!(r.stderr.contains("hoist: uploaded"), "{}", r.stderr);
    let files = blob_files(&w);
    assert_eq!(files.len(), 1, "{files:?}");

    // What was uploaded: the files minus the ignored ones.
    let out = w.dir.path().join("unpacked");
    std::fs::create_dir_all(&out).unwrap();
    let f = std::fs::File::open(&files[0]).unwrap();
    hoist_context::unpack(f, &out, Some(1 << 20)).unwrap();
    assert!(out.join("main.py").is_file());
    assert!(out.join("lib/util.py").is_file());
    assert!(out.join(".gitignore").is_file());
    for gone in ["data", "secret.txt", "lib/util.pyc"] {
        assert!(!out.join(gone).exists(), "{gone} was uploaded");
    }

    // The same directory again: nothing uploaded, nothing new.
    let r = w
        .run(&[
            "job",
            "create",
            "code",
            "app",
            &srcs,
            "--entry-point",
            "python3 main.py",
        ])
        .ok()
        .stdout_has("unchanged");
    assert!(
        r.stderr
            .contains("has this artifact already; nothing to upload"),
        "{}",
        r.stderr
    );
    assert_eq!(blob_files(&w).len(), 1);

    // A changed file: a new artifact and a new version.
    write(&src, "main.py", "print(43)\n");
    w.run(&[
        "job",
        "create",
        "code",
        "app",
        &srcs,
        "--entry-point",
        "python3 main.py --fast",
    ])
    .ok()
    .stdout_has("Created version v1 of job admin/app");
    assert_eq!(blob_files(&w).len(), 2);
    let show = w.run(&["job", "show", "app"]).ok();
    assert_eq!(field(&show.stdout, "type").as_deref(), Some("code"));
    assert!(
        field(&show.stdout, "artifact")
            .unwrap()
            .starts_with("sha256:"),
        "{}",
        show.stdout
    );
    assert_eq!(
        field(&show.stdout, "entry point").as_deref(),
        Some("python3 main.py --fast")
    );
    let j = w.run(&["job", "show", "app", "-o", "json"]).ok().json();
    let v1 = &j["versions"][0]["source"];
    let size = v1["size"].as_u64().unwrap();
    let artifact = v1["artifact"].as_str().unwrap();
    let hex = artifact.strip_prefix("sha256:").unwrap();
    let stored = w.data.join("blobs/sha256").join(&hex[..2]).join(&hex[2..]);
    assert_eq!(std::fs::metadata(&stored).unwrap().len(), size);

    // Launch: the run carries the source; the entry point is the job's.
    let id = w
        .run(&[
            "launch", "-q", "default", "--job", "app", "--", "--lr", "0.1",
        ])
        .ok()
        .stdout
        .trim()
        .to_string();
    let run = w.run(&["run", "show", &id, "-o", "json"]).ok().json();
    assert_eq!(run["job_source"]["type"], "code");
    assert_eq!(run["job_source"]["artifact"], artifact);
    assert_eq!(
        run["entry_point"],
        serde_json::json!(["python3", "main.py", "--fast"])
    );
    assert_eq!(run["args"], serde_json::json!(["--lr", "0.1"]));
    assert_eq!(run["image"], serde_json::Value::Null);

    // Over the size limit: refused before uploading, naming the biggest files.
    let big = w.dir.path().join("big");
    write(&big, "main.py", "print(1)\n");
    let noise: String = (0..200_000u32)
        .map(|i| char::from(b'a' + (i.wrapping_mul(2_654_435_761) >> 27) as u8 % 26))
        .collect();
    write(&big, "weights.bin", &noise);
    let bigs = big.to_string_lossy().to_string();
    w.run(&[
        "job",
        "create",
        "code",
        "big",
        &bigs,
        "--entry-point",
        "python3 main.py",
        "--max-size",
        "100000",
    ])
    .code(2)
    .stderr_has("weights.bin")
    .stderr_has("over the limit");
    assert_eq!(blob_files(&w).len(), 2);
    w.run(&["job", "show", "big"]).code(1);

    // Not a directory; a Dockerfile that is not there.
    let main = src.join("main.py").to_string_lossy().to_string();
    w.run(&[
        "job",
        "create",
        "code",
        "x",
        &main,
        "--entry-point",
        "python3 main.py",
    ])
    .code(2)
    .stderr_has("not a directory");
    w.run(&[
        "job",
        "create",
        "code",
        "x",
        &srcs,
        "--entry-point",
        "python3 main.py",
        "--dockerfile",
        "Dockerfile",
    ])
    .code(2)
    .stderr_has("no such file");
    w.run(&[
        "job",
        "create",
        "code",
        "x",
        &srcs,
        "--entry-point",
        "python3 main.py",
        "--dockerfile",
        "../Dockerfile",
    ])
    .code(2);
    // JSON output is the job, and nothing else on stdout.
    let j = w
        .run(&[
            "job",
            "create",
            "code",
            "app",
            &srcs,
            "--entry-point",
            "python3 main.py --fast",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(j["latest"], "v1");
}

// ---------------------------------------------------------------------------------
// git

/// `git daemon` on a free loopback port, killed by its pid when dropped.
struct GitDaemon {
    child: Child,
    port: u16,
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=hoist test",
            "-c",
            "user.email=test@hoist.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn serve(base: &Path) -> GitDaemon {
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
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
            .expect("spawn git daemon");
        let mut d = GitDaemon { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = d.child.try_wait() {
                break;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return d;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(d);
    }
    panic!("git daemon did not start");
}

#[test]
fn git_jobs_resolve_refs_over_git_daemon() {
    let w = world();
    let base = w.dir.path().join("git");
    std::fs::create_dir_all(&base).unwrap();
    git(&base, &["init", "--bare", "-b", "main", "repo.git"]);
    let work = w.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-b", "main"]);
    write(&work, "train.py", "print('v1')\n");
    git(&work, &["add", "."]);
    git(&work, &["commit", "-m", "one"]);
    let first = git(&work, &["rev-parse", "HEAD"]);
    git(&work, &["tag", "-a", "v1", "-m", "release 1"]);
    write(&work, "train.py", "print('v2')\n");
    git(&work, &["commit", "-am", "two"]);
    let second = git(&work, &["rev-parse", "HEAD"]);
    let remote = base.join("repo.git").to_string_lossy().to_string();
    git(&work, &["push", &remote, "main", "v1"]);
    let daemon = serve(&base);
    let url = format!("git://127.0.0.1:{}/repo.git", daemon.port);

    let r = w
        .run(&[
            "job",
            "create",
            "git",
            "g",
            "--repo",
            &url,
            "--ref",
            "main",
            "--entry-point",
            "python train.py",
            "--dockerfile",
            "docker/Dockerfile",
        ])
        .ok()
        .stdout_has("Created job admin/g v0");
    assert!(r.stderr.contains(&second), "{}", r.stderr);
    let j = w.run(&["job", "show", "g", "-o", "json"]).ok().json();
    let src = &j["versions"][0]["source"];
    assert_eq!(src["type"], "git");
    assert_eq!(src["repo"], url.as_str());
    assert_eq!(src["ref"], "main");
    assert_eq!(src["commit"], second.as_str());
    assert_eq!(src["dockerfile"], "docker/Dockerfile");
    assert_eq!(
        src["entry_point"],
        serde_json::json!(["python", "train.py"])
    );
    // The same ref, same commit: unchanged.
    w.run(&[
        "job",
        "create",
        "git",
        "g",
        "--repo",
        &url,
        "--ref",
        "main",
        "--entry-point",
        "python train.py",
        "--dockerfile",
        "docker/Dockerfile",
    ])
    .ok()
    .stdout_has("unchanged");
    // An annotated tag resolves to its commit; no ref means the remote's HEAD.
    w.run(&[
        "job",
        "create",
        "git",
        "g",
        "--repo",
        &url,
        "--ref",
        "v1",
        "--entry-point",
        "python train.py",
    ])
    .ok()
    .stdout_has("Created version v1");
    let j = w.run(&["job", "show", "g:v1", "-o", "json"]).ok().json();
    assert_eq!(j["source"]["commit"], first.as_str());
    w.run(&[
        "job",
        "create",
        "git",
        "head",
        "--repo",
        &url,
        "--entry-point",
        "python train.py",
    ])
    .ok();
    let j = w.run(&["job", "show", "head:v0", "-o", "json"]).ok().json();
    assert_eq!(j["source"]["commit"], second.as_str());
    let show = w.run(&["job", "show", "head"]).ok();
    assert_eq!(
        field(&show.stdout, "ref").as_deref(),
        Some("HEAD (default)")
    );
    assert_eq!(field(&show.stdout, "commit"), Some(second.clone()));
    // A full commit is used as is (the remote is not asked).
    let upper = first.to_uppercase();
    w.run(&[
        "job",
        "create",
        "git",
        "pinned",
        "--repo",
        "git://127.0.0.1:1/nowhere.git",
        "--ref",
        &upper,
        "--entry-point",
        "python train.py",
    ])
    .ok();
    let j = w
        .run(&["job", "show", "pinned:v0", "-o", "json"])
        .ok()
        .json();
    assert_eq!(j["source"]["commit"], first.as_str());

    // A ref that does not exist: exit 2, saying so.
    w.run(&[
        "job",
        "create",
        "git",
        "g",
        "--repo",
        &url,
        "--ref",
        "nope",
        "--entry-point",
        "python train.py",
    ])
    .code(2)
    .stderr_has("no branch or tag \"nope\"");
    w.run(&[
        "job",
        "create",
        "git",
        "g",
        "--repo",
        &url,
        "--ref",
        &first[..7],
        "--entry-point",
        "python train.py",
    ])
    .code(2)
    .stderr_has("40 hex digits");
    // A repository that is not there: exit 1 with git's message.
    w.run(&[
        "job",
        "create",
        "git",
        "g",
        "--repo",
        &format!("git://127.0.0.1:{}/missing.git", daemon.port),
        "--entry-point",
        "python train.py",
    ])
    .code(1)
    .stderr_has("git ls-remote");
    // Refused remotes never reach git.
    let marker = w.dir.path().join("pwned");
    for bad in [
        format!("file://{remote}"),
        format!("ext::sh -c touch% {}", marker.display()),
        "ext::sh".to_string(),
        "http://example.com/repo.git".to_string(),
        "-oProxyCommand=touch /tmp/x".to_string(),
        remote.clone(),
    ] {
        w.run(&[
            "job",
            "create",
            "git",
            "bad",
            &format!("--repo={bad}"),
            "--entry-point",
            "python train.py",
        ])
        .code(2)
        .stderr_has("not accepted");
    }
    assert!(!marker.exists());
    w.run(&[
        "job",
        "create",
        "git",
        "bad",
        "--repo",
        &url,
        "--ref",
        "--upload-pack=touch",
        "--entry-point",
        "python train.py",
    ])
    .code(2);
    w.run(&[
        "job",
        "create",
        "git",
        "bad",
        "--repo",
        &url,
        "--build-context",
        "../up",
        "--entry-point",
        "python train.py",
    ])
    .code(2);

    // Launch a git job: the commit travels with the run.
    let id = w
        .run(&["launch", "-q", "default", "--job", "g:v0"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let run = w.run(&["run", "show", &id, "-o", "json"]).ok().json();
    assert_eq!(run["job_source"]["commit"], second.as_str());
    assert_eq!(
        run["entry_point"],
        serde_json::json!(["python", "train.py"])
    );
    drop(daemon);
}
