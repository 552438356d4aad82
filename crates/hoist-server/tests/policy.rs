//! Nothing unsafe gets in at the door, through a real server: privileged queue
//! configs (unless an admin allows them), launch-time input that would add privilege,
//! read the agent's environment (macros, passed-through variables) or smuggle options
//! through an image reference; unsafe or bomb code artifacts; and a blob upload that
//! would tell who else holds the same bytes.

mod common;

use std::io::Write;

use common::*;
use hoist_core::api::*;
use serde_json::{Value, json};

fn queue_req(name: &str, resource: &str, config: Value) -> CreateQueue {
    CreateQueue {
        name: name.into(),
        entity: None,
        resource: resource.into(),
        config: Some(config),
        template_variables: vec![],
        prioritize: false,
        description: None,
    }
}

/// The paths of the problems an error lists (`details.problems[].path`).
fn problem_paths(
    r: Result<impl std::fmt::Debug, hoist_client::ClientError>,
    code: ErrorCode,
) -> Vec<String> {
    match r {
        Err(hoist_client::ClientError::Api {
            status,
            code: c,
            details,
            message,
        }) => {
            let expected = if code == ErrorCode::Forbidden {
                403
            } else {
                422
            };
            assert_eq!((status, c), (expected, code), "{message}");
            details
                .and_then(|d| d["problems"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .map(|p| p["path"].as_str().unwrap_or_default().to_string())
                .collect()
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn k8s_pod(spec: Value) -> Value {
    json!({"spec": {"template": {"spec": spec}}})
}

#[tokio::test]
async fn privileged_queue_configs_are_refused_when_created_or_updated() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("docker", json!({"privileged": true}), "privileged"),
        ("docker", json!({"cap-add": ["SYS_ADMIN"]}), "cap-add[0]"),
        ("docker", json!({"network": "host"}), "network"),
        ("docker", json!({"pid": "host"}), "pid"),
        ("docker", json!({"ipc": "host"}), "ipc"),
        ("docker", json!({"uts": "host"}), "uts"),
        ("docker", json!({"userns": "host"}), "userns"),
        ("docker", json!({"device": ["/dev/kvm"]}), "device[0]"),
        ("docker", json!({"volume": ["/:/host"]}), "volume[0]"),
        (
            "docker",
            json!({"mount": "type=bind,source=/etc,target=/e"}),
            "mount",
        ),
        (
            "docker",
            json!({"security-opt": ["seccomp=unconfined"]}),
            "security-opt[0]",
        ),
        ("docker", json!({"cgroup-parent": "/"}), "cgroup-parent"),
        ("docker", json!({"runtime": "runsc"}), "runtime"),
        (
            "docker",
            json!({"sysctl": ["net.ipv4.ip_forward=1"]}),
            "sysctl[0]",
        ),
        (
            "docker",
            json!({"mount": "type=volume,source=v,target=/x,volume-opt=device=/dev/sda"}),
            "mount",
        ),
        (
            "kubernetes",
            k8s_pod(json!({"containers": [{"securityContext": {"privileged": true}}]})),
            "spec.template.spec.containers[0].securityContext.privileged",
        ),
        (
            "kubernetes",
            k8s_pod(
                json!({"containers": [{"securityContext": {"allowPrivilegeEscalation": true}}]}),
            ),
            "spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation",
        ),
        (
            "kubernetes",
            k8s_pod(
                json!({"initContainers": [{"securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}]}),
            ),
            "spec.template.spec.initContainers[0].securityContext.capabilities.add[0]",
        ),
        (
            "kubernetes",
            k8s_pod(json!({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]})),
            "spec.template.spec.volumes[0].hostPath",
        ),
        (
            "kubernetes",
            k8s_pod(json!({"hostNetwork": true})),
            "spec.template.spec.hostNetwork",
        ),
        (
            "kubernetes",
            k8s_pod(json!({"hostPID": true})),
            "spec.template.spec.hostPID",
        ),
        (
            "kubernetes",
            k8s_pod(json!({"hostIPC": true})),
            "spec.template.spec.hostIPC",
        ),
    ];
    for (i, (resource, config, path)) in cases.iter().enumerate() {
        let r = alice
            .create_queue(&queue_req(&format!("q{i}"), resource, config.clone()))
            .await;
        assert_eq!(
            problem_paths(r, ErrorCode::InvalidConfig),
            [path.to_string()],
            "{resource} {config}"
        );
    }
    // Several at once: each with its path; the message says what to do.
    let e = alice
        .create_queue(&queue_req(
            "many",
            "docker",
            json!({"privileged": true, "pid": "host", "cap-add": "NET_ADMIN"}),
        ))
        .await
        .unwrap_err();
    let m = e.to_string();
    assert!(
        m.contains("3 privileged setting(s)") && m.contains("allow_privileged"),
        "{m}"
    );
    assert!(
        alice.list_queues(None).await.unwrap().is_empty(),
        "nothing was stored"
    );

    // An update that would add one is refused too, and changes nothing.
    alice
        .create_queue(&queue_req("dq", "docker", json!({"network": "none"})))
        .await
        .unwrap();
    let r = alice
        .update_queue(
            "alice",
            "dq",
            &UpdateQueue {
                config: Some(json!({"network": "none", "volume": ["/var/run/docker.sock:/s"]})),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(problem_paths(r, ErrorCode::InvalidConfig), ["volume[0]"]);
    let q = alice.get_queue("alice", "dq").await.unwrap();
    assert_eq!(q.config, json!({"network": "none"}));
    t.stop().await;
}

#[tokio::test]
async fn only_admins_may_allow_privileged_settings() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let alice = t.user("alice").await;
    let _bob = t.user("bob").await;
    admin
        .create_team(&CreateTeam {
            name: "ml".into(),
            members: vec!["alice".into(), "bob".into()],
        })
        .await
        .unwrap();
    let privileged = json!({"network": "none", "cap-add": ["SYS_PTRACE"]});
    let mut req = queue_req("gpu", "docker", privileged.clone());
    req.entity = Some("ml".into());

    // A non-admin asking is forbidden, whatever the config holds.
    for config in [privileged.clone(), json!({"network": "none"})] {
        let r = alice
            .create_queue_with(
                &CreateQueue {
                    config: Some(config),
                    ..req.clone()
                },
                true,
            )
            .await;
        let m = api_err(r, 403, ErrorCode::Forbidden);
        assert!(m.contains("only admins"), "{m}");
    }
    // An admin must ask explicitly.
    let r = admin.create_queue(&req).await;
    assert_eq!(problem_paths(r, ErrorCode::InvalidConfig), ["cap-add[0]"]);
    let q = admin.create_queue_with(&req, true).await.unwrap();
    assert_eq!(q.config, privileged);

    // Team members may still change what is not privileged…
    let q = alice
        .update_queue(
            "ml",
            "gpu",
            &UpdateQueue {
                description: Some("GPU jobs".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(q.description, "GPU jobs");
    // …but not add to the privileges, nor ask to.
    let more = json!({"network": "none", "cap-add": ["SYS_PTRACE", "SYS_ADMIN"]});
    let r = alice
        .update_queue(
            "ml",
            "gpu",
            &UpdateQueue {
                config: Some(more.clone()),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(problem_paths(r, ErrorCode::InvalidConfig), ["cap-add[1]"]);
    let r = alice
        .update_queue_with(
            "ml",
            "gpu",
            &UpdateQueue {
                config: Some(more.clone()),
                ..Default::default()
            },
            true,
        )
        .await;
    api_err(r, 403, ErrorCode::Forbidden);
    admin
        .update_queue_with(
            "ml",
            "gpu",
            &UpdateQueue {
                config: Some(more.clone()),
                ..Default::default()
            },
            true,
        )
        .await
        .unwrap();

    // A privileged setting made by a template variable is refused, even for an admin:
    // it must be written in the config, where the admin sees it.
    let mut templated = queue_req("net", "docker", json!({"network": "{{net}}"}));
    templated.template_variables =
        vec![hoist_core::template::parse_spec("net:string=host").unwrap()];
    let r = admin.create_queue_with(&templated, true).await;
    assert_eq!(problem_paths(r, ErrorCode::InvalidConfig), ["network"]);

    // Over HTTP the flag is a query parameter.
    let key = admin_key(&t);
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/queues?allow_privileged=true", t.url))
        .bearer_auth(&key)
        .json(&queue_req("http", "docker", json!({"privileged": true})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    t.stop().await;
}

fn admin_key(t: &TestServer) -> String {
    t.admin_key.clone()
}

#[tokio::test]
async fn launch_input_cannot_add_privileges_or_pass_agent_variables() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let mut dq = queue_req(
        "dq",
        "docker",
        json!({"network": "{{net}}", "env": ["A=1"]}),
    );
    dq.template_variables = vec![hoist_core::template::parse_spec("net:string=none").unwrap()];
    alice.create_queue(&dq).await.unwrap();
    alice
        .create_queue(&queue_req("lp", "local-process", json!({"env": ["A=1"]})))
        .await
        .unwrap();
    let base = LaunchRequest {
        queue: "dq".into(),
        image: Some("busybox:1".into()),
        ..Default::default()
    };
    // The default template value is fine.
    alice.launch(&base).await.unwrap();
    let cases: Vec<(LaunchRequest, Vec<&str>)> = vec![
        (
            LaunchRequest {
                resource_args: Some(json!({"privileged": true, "volume": ["/:/host"]})),
                ..base.clone()
            },
            vec!["privileged", "volume[0]"],
        ),
        (
            LaunchRequest {
                template_values: [("net".to_string(), json!("host"))].into(),
                ..base.clone()
            },
            vec!["network"],
        ),
        (
            LaunchRequest {
                resource_args: Some(json!({"env": ["A=1", "GITHUB_PAT"]})),
                ..base.clone()
            },
            vec!["env[1]"],
        ),
        (
            LaunchRequest {
                queue: "lp".into(),
                image: None,
                entry_point: Some(vec!["true".into()]),
                resource_args: Some(json!({"env": {"DATABASE_URL": null}})),
                ..base.clone()
            },
            vec!["env.DATABASE_URL"],
        ),
    ];
    for (req, paths) in cases {
        let r = alice.launch(&req).await;
        assert_eq!(problem_paths(r, ErrorCode::InvalidConfig), paths, "{req:?}");
    }
    let runs = alice.list_runs(&Default::default()).await.unwrap();
    assert_eq!(runs.runs.len(), 1, "only the first launch was queued");
    t.stop().await;
}

#[tokio::test]
async fn launch_input_reaches_the_agent_as_text_not_macros() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let mut q = queue_req(
        "lp",
        "local-process",
        json!({"env": {"X": "{{v}}", "W": "cost${{w}}", "R": "${run_id}-{{v}}"}}),
    );
    q.template_variables = vec![
        hoist_core::template::parse_spec("v:string=x").unwrap(),
        hoist_core::template::parse_spec("w:string=0").unwrap(),
    ];
    alice.create_queue(&q).await.unwrap();
    let run = alice
        .launch(&LaunchRequest {
            queue: "lp".into(),
            entry_point: Some(vec!["true".into()]),
            template_values: [
                ("v".to_string(), json!("${MY_PLAIN}")),
                ("w".to_string(), json!("{HOME}")),
            ]
            .into(),
            resource_args: Some(json!({"env": {"Z": "${PATH}", "Y": "$${HOME}"}})),
            ..Default::default()
        })
        .await
        .unwrap();
    // `$${` is the agent's literal `${`: each launch-time `${` is written so.
    assert_eq!(
        run.resource_config,
        json!({"env": {
            "X": "$${MY_PLAIN}",
            "W": "cost$${HOME}",
            "R": "${run_id}-$${MY_PLAIN}",
            "Z": "$${PATH}",
            "Y": "$$${HOME}",
        }})
    );
    // The run keeps the resource args as they were given.
    assert_eq!(
        run.resource_args,
        json!({"env": {"Z": "${PATH}", "Y": "$${HOME}"}})
    );
    t.stop().await;
}

#[tokio::test]
async fn launch_checks_what_jobs_check() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    alice
        .create_queue(&queue_req("dq", "docker", json!({"network": "none"})))
        .await
        .unwrap();
    let long = format!("a{}", "b".repeat(5000));
    for image in [
        "--privileged",
        "-v/:/host",
        "busybox\0:1",
        long.as_str(),
        "img\n",
        "Busy Box",
    ] {
        let m = api_err(
            alice
                .launch(&LaunchRequest {
                    queue: "dq".into(),
                    image: Some(image.into()),
                    ..Default::default()
                })
                .await,
            400,
            ErrorCode::BadRequest,
        );
        assert!(m.starts_with("image reference"), "{image:?}: {m}");
        assert!(m.len() < 400, "the reference is cut in the message: {m}");
        let m = api_err(
            alice
                .create_job(&CreateJob {
                    name: "j".into(),
                    entity: None,
                    source: JobSource::Image {
                        image: image.into(),
                    },
                    description: None,
                })
                .await,
            400,
            ErrorCode::BadRequest,
        );
        assert!(m.starts_with("image reference"), "job {image:?}: {m}");
    }
    let ok = LaunchRequest {
        queue: "dq".into(),
        image: Some("busybox:1".into()),
        ..Default::default()
    };
    let env = |k: &str, v: &str| -> hoist_core::secret::EnvVars {
        let mut e = hoist_core::secret::EnvVars::new();
        e.insert(k.into(), v.into());
        e
    };
    let bad: Vec<(LaunchRequest, &str)> = vec![
        (
            LaunchRequest {
                env: env("A\0B", "x"),
                ..ok.clone()
            },
            "environment variable name",
        ),
        (
            LaunchRequest {
                env: env("A\nB", "x"),
                ..ok.clone()
            },
            "environment variable name",
        ),
        (
            LaunchRequest {
                env: env("TOKEN", "s3cret\0x"),
                ..ok.clone()
            },
            "TOKEN contains a NUL byte",
        ),
        (
            LaunchRequest {
                env: env("TOKEN", "s3cret\nx"),
                ..ok.clone()
            },
            "TOKEN contains a line break",
        ),
        (
            LaunchRequest {
                args: vec!["ok".into(), "a\0b".into()],
                ..ok.clone()
            },
            "word 2 of the arguments contains a NUL byte",
        ),
        (
            LaunchRequest {
                entry_point: Some(vec!["sh\0".into()]),
                ..ok.clone()
            },
            "word 1 of the entry point contains a NUL byte",
        ),
    ];
    for (req, why) in bad {
        let m = api_err(alice.launch(&req).await, 400, ErrorCode::BadRequest);
        assert!(m.contains(why), "{req:?}: {m}");
        assert!(!m.contains("s3cret"), "a value is never echoed: {m}");
    }
    assert!(
        alice
            .list_runs(&Default::default())
            .await
            .unwrap()
            .runs
            .is_empty()
    );
    alice.launch(&ok).await.unwrap();
    t.stop().await;
}

// ---------------------------------------------------------------------------------
// Code artifacts

fn tar_gz(tar: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(tar).unwrap();
    e.finish().unwrap()
}

/// A tar written entry by entry, bypassing the tar crate's own path checks.
fn raw_tar(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, link, data) in entries {
        let mut h = tar::Header::new_old();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

fn stored_blobs(t: &TestServer) -> usize {
    fn walk(p: &std::path::Path) -> usize {
        match std::fs::read_dir(p) {
            Ok(rd) => rd.map(|e| walk(&e.unwrap().path())).sum(),
            Err(_) => usize::from(p.is_file()),
        }
    }
    walk(&t.dir.path().join("data/blobs/sha256"))
}

#[tokio::test]
async fn unsafe_artifacts_are_refused_at_upload() {
    use tar::EntryType::*;
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (
            raw_tar(&[("../evil.py", Regular, "", b"x")]),
            "../evil.py",
            "`..`",
        ),
        (
            raw_tar(&[("a/../../evil.py", Regular, "", b"x")]),
            "a/../../evil.py",
            "`..`",
        ),
        (
            raw_tar(&[("/etc/cron.d/x", Regular, "", b"x")]),
            "/etc/cron.d/x",
            "absolute path",
        ),
        (
            raw_tar(&[("etc", Symlink, "/etc", b"")]),
            "etc",
            "points outside",
        ),
        (
            raw_tar(&[("up", Symlink, "../../..", b"")]),
            "up",
            "points outside",
        ),
        (
            raw_tar(&[
                ("d", Directory, "", b""),
                ("l", Symlink, "d", b""),
                ("l/f", Regular, "", b"x"),
            ]),
            "l/f",
            "through the symbolic link l",
        ),
        (
            raw_tar(&[("h", Link, "../../etc/passwd", b"")]),
            "../../etc/passwd",
            "`..`",
        ),
        (raw_tar(&[("sda", Block, "", b"")]), "sda", "a block device"),
        (
            raw_tar(&[("null", Char, "", b"")]),
            "null",
            "a character device",
        ),
        (raw_tar(&[("p", Fifo, "", b"")]), "p", "a FIFO"),
    ];
    for (tar, path, why) in &cases {
        let bytes = tar_gz(tar);
        let r = alice.upload_blob(bytes.clone(), None).await;
        let Err(hoist_client::ClientError::Api {
            status,
            code,
            message,
            details,
        }) = r
        else {
            panic!("{path}: expected a refusal, got {r:?}");
        };
        assert_eq!(
            (status, code),
            (422, ErrorCode::InvalidArtifact),
            "{message}"
        );
        assert!(message.contains(why), "{path}: {message}");
        let problems = details.unwrap()["problems"].clone();
        assert_eq!(problems[0]["path"], *path, "{problems}");
    }
    // Every problem of one archive is listed.
    let bad = tar_gz(&raw_tar(&[
        ("main.py", Regular, "", b"print(1)"),
        ("../x", Regular, "", b"x"),
        ("dev", Char, "", b""),
        ("out", Symlink, "/", b""),
    ]));
    let r = alice.upload_blob(bad.clone(), None).await;
    let Err(hoist_client::ClientError::Api { details, .. }) = r else {
        panic!("{r:?}")
    };
    let paths: Vec<String> = details.unwrap()["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(paths, ["../x", "dev", "out"]);
    // Garbage behind the gzip magic is refused as well.
    let r = alice.upload_blob(tar_gz(b"not a tar at all"), None).await;
    api_err(r, 422, ErrorCode::InvalidArtifact);
    // Nothing was stored, nothing is left half-written.
    assert_eq!(stored_blobs(&t), 0);
    assert!(
        std::fs::read_dir(t.dir.path().join("data/blobs/tmp"))
            .unwrap()
            .next()
            .is_none()
    );
    // A sound archive is stored.
    let good = tar_gz(&raw_tar(&[
        ("pkg/", Directory, "", b""),
        ("pkg/main.py", Regular, "", b"print(1)"),
        ("main.py", Symlink, "pkg/main.py", b""),
    ]));
    alice.upload_blob(good, None).await.unwrap();
    assert_eq!(stored_blobs(&t), 1);
    t.stop().await;
}

/// Raw deflate blocks of `data` from a fresh compressor, ended by a full flush (so
/// they can be repeated inside one stream).
fn deflate_blocks(data: &[u8]) -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    let mut c = Compress::new(Compression::best(), false);
    let mut out = Vec::with_capacity(64 << 10);
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(64 << 10);
        }
        let done = c.total_in() as usize;
        c.compress_vec(&data[done..], &mut out, FlushCompress::Full)
            .unwrap();
        if c.total_in() as usize == data.len() && out.capacity() - out.len() >= 4096 {
            return out;
        }
    }
}

/// A `.tar.gz` of one file of `size` zeros, streamed to `path` (a 2 GiB file makes
/// about 2 MB).
fn write_bomb(path: &std::path::Path, size: u64) {
    use flate2::{Compress, Compression, Crc, FlushCompress};
    const CHUNK: usize = 1 << 20;
    let zeros = vec![0u8; CHUNK];
    let block = deflate_blocks(&zeros);
    let mut h = tar::Header::new_gnu();
    h.set_path("data.bin").unwrap();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    let mut crc = Crc::new();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])
        .unwrap();
    f.write_all(&deflate_blocks(h.as_bytes())).unwrap();
    crc.update(h.as_bytes());
    for _ in 0..size / CHUNK as u64 {
        f.write_all(&block).unwrap();
        crc.update(&zeros);
    }
    f.write_all(&deflate_blocks(&[0u8; 1024])).unwrap();
    crc.update(&[0u8; 1024]);
    let mut end = Vec::with_capacity(64);
    Compress::new(Compression::best(), false)
        .compress_vec(&[], &mut end, FlushCompress::Finish)
        .unwrap();
    f.write_all(&end).unwrap();
    f.write_all(&crc.sum().to_le_bytes()).unwrap();
    f.write_all(&crc.amount().to_le_bytes()).unwrap();
    f.flush().unwrap();
}

#[tokio::test]
async fn a_decompression_bomb_is_refused_at_upload() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bomb = t.dir.path().join("bomb.tar.gz");
    write_bomb(&bomb, 2 << 30);
    let packed = std::fs::metadata(&bomb).unwrap().len();
    assert!((1 << 20..4 << 20).contains(&packed), "{packed} bytes");
    let r = alice.upload_blob_file(&bomb, None, |_| {}).await;
    let m = api_err(r, 422, ErrorCode::InvalidArtifact);
    assert!(m.contains("decompression bomb"), "{m}");
    assert_eq!(stored_blobs(&t), 0);
    t.stop().await;
}

#[tokio::test]
async fn an_upload_does_not_tell_who_else_holds_the_same_bytes() {
    let t = TestServer::start().await;
    let keys: Vec<String> = {
        let mut v = Vec::new();
        for name in ["alice", "bob", "carol"] {
            let u = t
                .admin()
                .create_user(&CreateUser {
                    name: name.into(),
                    admin: false,
                })
                .await
                .unwrap();
            v.push(u.api_key.secret.expose().to_string());
        }
        v
    };
    let http = reqwest::Client::new();
    let upload = |key: String, bytes: Vec<u8>| {
        let http = http.clone();
        let url = format!("{}/api/v1/blobs", t.url);
        async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .header("content-type", "application/gzip")
                .body(bytes)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let shared = tar_gz(&raw_tar(&[(
        "train.py",
        tar::EntryType::Regular,
        "",
        b"print('secret plan')",
    )]));
    // Alice uploads first; Bob then uploads the same bytes: the answers are identical
    // (status and body), so Bob cannot tell that someone had them.
    let first = upload(keys[0].clone(), shared.clone()).await;
    let second = upload(keys[1].clone(), shared.clone()).await;
    assert_eq!(first.0, 201, "{}", first.1);
    assert_eq!(first, second);
    // And new bytes get the same kind of answer.
    let other = tar_gz(&raw_tar(&[("x.py", tar::EntryType::Regular, "", b"x")]));
    let third = upload(keys[2].clone(), other).await;
    assert_eq!(third.0, 201);
    let body: Value = serde_json::from_str(&third.1).unwrap();
    let keys_of = |s: &str| -> Vec<String> {
        let v: Value = serde_json::from_str(s).unwrap();
        v.as_object().unwrap().keys().cloned().collect()
    };
    assert_eq!(keys_of(&first.1), keys_of(&third.1), "{body}");
    // The content is still stored once.
    assert_eq!(stored_blobs(&t), 2);
    t.stop().await;
}
