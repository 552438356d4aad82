//! Jobs and the blob store: the store part on SQLite and PostgreSQL
//! (`HOIST_TEST_DATABASE_URL`), the API part against a real server.

#[macro_use]
mod common;

use common::*;
use hoist_core::api::*;
use hoist_core::resource::ResourceType;
use hoist_server::store::Store;
use hoist_server::store::jobs::{NewJobVersion, VersionSel};
use hoist_server::store::queues::NewQueue;
use hoist_server::store::rows::RunSpec;
use hoist_server::store::runs::NewRun;

const T0: i64 = 1_700_000_000_000;

// ---------------------------------------------------------------------------------
// Store (both dialects)

fn image(i: &str) -> JobSource {
    JobSource::Image { image: i.into() }
}

fn new_version(entity: &str, name: &str, src: JobSource) -> NewJobVersion {
    NewJobVersion {
        entity: entity.into(),
        name: name.into(),
        description: None,
        source: src,
        created_by: "u".into(),
    }
}

both!(store_versions_and_dedupe);
async fn store_versions_and_dedupe(s: Store) {
    s.create_user("u", false, "k", T0).await.unwrap();
    let (j, created) = s
        .create_job_version(new_version("u", "train", image("a:1")), T0)
        .await
        .unwrap();
    assert!(created);
    assert_eq!(j.latest, "v0");
    assert_eq!(j.versions.len(), 1);
    // The same source again: nothing new.
    let (j, created) = s
        .create_job_version(new_version("u", "train", image("a:1")), T0 + 1)
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(j.latest, "v0");
    assert_eq!(j.versions.len(), 1);
    let (j, created) = s
        .create_job_version(new_version("u", "train", image("a:2")), T0 + 2)
        .await
        .unwrap();
    assert!(created);
    assert_eq!(j.latest, "v1");
    // Back to the first source: a new version (only the latest is compared).
    let mut v = new_version("u", "train", image("a:1"));
    v.description = Some("trains".into());
    let (j, _) = s.create_job_version(v, T0 + 3).await.unwrap();
    assert_eq!(j.latest, "v2");
    assert_eq!(j.description, "trains");
    let names: Vec<&str> = j.versions.iter().map(|v| v.version.as_str()).collect();
    assert_eq!(names, ["v2", "v1", "v0"]);

    let got = s.get_job("u", "train").await.unwrap().unwrap();
    assert_eq!(got.versions.len(), 3);
    assert_eq!(got.versions[1].source, image("a:2"));
    let latest = s
        .get_job_version("u", "train", VersionSel::Latest)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(latest.version, "v2");
    let v1 = s
        .get_job_version("u", "train", VersionSel::Number(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v1.source, image("a:2"));
    assert!(
        s.get_job_version("u", "train", VersionSel::Number(7))
            .await
            .unwrap()
            .is_none()
    );
    assert!(s.get_job("u", "nope").await.unwrap().is_none());

    // Lists carry the latest version only, filtered by entity.
    s.create_job_version(new_version("u", "eval", image("e:1")), T0)
        .await
        .unwrap();
    let all = s.list_jobs(None).await.unwrap();
    assert_eq!(
        all.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(),
        ["eval", "train"]
    );
    assert!(all.iter().all(|j| j.versions.len() == 1));
    assert_eq!(all[1].versions[0].version, "v2");
    assert!(s.list_jobs(Some(&["x".into()])).await.unwrap().is_empty());

    // Concurrent creators: each distinct source gets its own number, no gaps.
    let mut tasks = Vec::new();
    for i in 0..12 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.create_job_version(new_version("u", "par", image(&format!("p:{i}"))), T0)
                .await
                .unwrap()
                .1
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap());
    }
    let par = s.get_job("u", "par").await.unwrap().unwrap();
    assert_eq!(par.latest, "v11");
    assert_eq!(par.versions.len(), 12);

    s.delete_job("u", "par").await.unwrap();
    assert!(s.get_job("u", "par").await.unwrap().is_none());
    assert!(s.delete_job("u", "par").await.is_err());
    // A re-created job starts again at v0.
    let (j, _) = s
        .create_job_version(new_version("u", "par", image("p:0")), T0)
        .await
        .unwrap();
    assert_eq!(j.latest, "v0");
}

both!(store_blob_refs);
async fn store_blob_refs(s: Store) {
    s.create_user("u", false, "k", T0).await.unwrap();
    s.create_user("w", false, "k", T0).await.unwrap();
    let d = format!("sha256:{}", "ab".repeat(32));
    assert!(s.blob_entities(&d).await.unwrap().is_empty());
    assert_eq!(s.blob_size(&d).await.unwrap(), None);
    assert!(s.record_blob(&d, 10, "u", "u", T0).await.unwrap());
    assert!(!s.record_blob(&d, 10, "u", "u", T0).await.unwrap());
    assert_eq!(s.blob_size(&d).await.unwrap(), Some(10));
    assert_eq!(s.blob_entities(&d).await.unwrap(), ["u"]);
    assert!(s.record_blob(&d, 10, "w", "w", T0).await.unwrap());
    assert_eq!(s.blob_entities(&d).await.unwrap(), ["u", "w"]);
    // A launch that hands an artifact over references it for the queue's entity, in
    // the launch's transaction; an unknown artifact is not referenced.
    s.create_team("t", vec![], T0).await.unwrap();
    let q = s
        .create_queue(
            NewQueue {
                entity: "t".into(),
                name: "q".into(),
                resource: ResourceType::LocalProcess,
                config: serde_json::json!({}),
                template_variables: vec![],
                prioritize: false,
                description: String::new(),
            },
            T0,
        )
        .await
        .unwrap();
    let other = format!("sha256:{}", "cd".repeat(32));
    s.launch(handing_over(&q.id, "x1", &other), T0)
        .await
        .unwrap();
    assert!(s.blob_entities(&other).await.unwrap().is_empty());
    s.launch(handing_over(&q.id, "x2", &d), T0).await.unwrap();
    s.launch(handing_over(&q.id, "x3", &d), T0).await.unwrap();
    assert_eq!(s.blob_entities(&d).await.unwrap(), ["t", "u", "w"]);
    // A launch that fails after its reference was written leaves no reference: here
    // its run id is taken, so the run's INSERT fails after the blob_refs one.
    let e = format!("sha256:{}", "ef".repeat(32));
    assert!(s.record_blob(&e, 10, "u", "u", T0).await.unwrap());
    let err = s
        .launch(handing_over(&q.id, "x3", &e), T0)
        .await
        .unwrap_err();
    assert!(err.is_unique_violation(), "{err:?}");
    assert_eq!(s.blob_entities(&e).await.unwrap(), ["u"]);
    // Onto a queue deleted meanwhile: refused, no reference either.
    assert_eq!(s.delete_queue(&q.id, true, "u", T0).await.unwrap(), 3);
    assert!(s.launch(handing_over(&q.id, "x4", &e), T0).await.is_err());
    assert_eq!(s.blob_entities(&e).await.unwrap(), ["u"]);
    // A deleted team takes its references (and jobs) with it.
    s.create_job_version(new_version("t", "j", image("x")), T0)
        .await
        .unwrap();
    s.delete_team("t").await.unwrap();
    assert_eq!(s.blob_entities(&d).await.unwrap(), ["u", "w"]);
    assert!(s.get_job("t", "j").await.unwrap().is_none());
}

/// A launch onto team `t`'s queue of a code job of user `u`, handing its artifact over.
fn handing_over(queue_id: &str, id: &str, artifact: &str) -> NewRun {
    NewRun {
        id: id.into(),
        queue_id: queue_id.into(),
        entity: "t".into(),
        queue_name: "q".into(),
        project: "p".into(),
        name: id.into(),
        spec: RunSpec::default(),
        resource: ResourceType::LocalProcess,
        resource_config: serde_json::json!({}),
        priority: Default::default(),
        prioritize: false,
        created_by: "u".into(),
        hand_over: Some(artifact.into()),
    }
}

// ---------------------------------------------------------------------------------
// API

/// Bytes that pass for gzip (the server checks the magic bytes only).
/// A real `.tar.gz` holding `main.py` with `content` (uploads are checked as the agent
/// would unpack them).
fn gz(content: &str) -> Vec<u8> {
    tar_gz(content.as_bytes())
}

fn tar_gz(content: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "main.py", content).unwrap();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&b.into_inner().unwrap()).unwrap();
    e.finish().unwrap()
}

/// Bytes that do not compress.
fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn digest_of(bytes: &[u8]) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(bytes);
    format!(
        "sha256:{}",
        h.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn create(name: &str, source: JobSource) -> CreateJob {
    CreateJob {
        name: name.into(),
        entity: None,
        source,
        description: None,
    }
}

fn git(repo: &str) -> JobSource {
    JobSource::Git {
        repo: repo.into(),
        git_ref: Some("main".into()),
        commit: "0123456789abcdef0123456789abcdef01234567".into(),
        entry_point: vec!["python".into(), "train.py".into()],
        build_context: None,
        dockerfile: None,
    }
}

fn code(artifact: &str, size: u64) -> JobSource {
    JobSource::Code {
        artifact: artifact.into(),
        size,
        entry_point: vec!["python3".into(), "main.py".into()],
        dockerfile: None,
    }
}

#[tokio::test]
async fn blobs_upload_once_head_get_and_access() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    let bytes = gz("the code");
    let d = digest_of(&bytes);

    assert!(!alice.head_blob(&d, None).await.unwrap().exists);
    let b = alice.upload_blob(bytes.clone(), None).await.unwrap();
    assert_eq!(
        (b.digest.as_str(), b.size),
        (d.as_str(), bytes.len() as u64)
    );
    let again = alice.upload_blob(bytes.clone(), None).await.unwrap();
    assert_eq!((again.digest, again.size), (b.digest.clone(), b.size));
    let blobs = t.dir.path().join("data/blobs");
    let stored = files_under(&blobs.join("sha256"));
    assert_eq!(stored.len(), 1, "{stored:?}");
    let hex = d.strip_prefix("sha256:").unwrap();
    assert_eq!(
        stored[0],
        blobs.join("sha256").join(&hex[..2]).join(&hex[2..])
    );
    assert_eq!(std::fs::read(&stored[0]).unwrap(), bytes);
    assert!(files_under(&blobs.join("tmp")).is_empty());

    let head = alice.head_blob(&d, None).await.unwrap();
    assert!(head.exists);
    assert_eq!(head.max_bytes, Some(512 << 20));
    let dl = t.dir.path().join("dl.tar.gz");
    assert_eq!(
        alice.download_blob_to(&d, &dl).await.unwrap(),
        bytes.len() as u64
    );
    assert_eq!(std::fs::read(&dl).unwrap(), bytes);

    // Bob cannot see it, exactly as if it did not exist.
    assert!(!bob.head_blob(&d, None).await.unwrap().exists);
    assert!(!bob.head_blob(&d, Some("alice")).await.unwrap().exists);
    api_err(
        bob.download_blob_to(&d, &dl).await,
        404,
        ErrorCode::NotFound,
    );
    api_err(
        bob.upload_blob(bytes.clone(), Some("alice")).await,
        404,
        ErrorCode::NotFound,
    );
    // Uploading the same bytes makes it his too (stored once still).
    bob.upload_blob(bytes.clone(), None).await.unwrap();
    assert!(bob.head_blob(&d, None).await.unwrap().exists);
    bob.download_blob_to(&d, &dl).await.unwrap();
    assert_eq!(files_under(&blobs.join("sha256")).len(), 1);

    // Digests are checked strictly.
    for bad in [
        "sha256:XYZ",
        &format!("sha256:{}", hex.to_uppercase()),
        &format!("md5:{hex}"),
        &format!("sha256:{hex}0"),
        hex,
    ] {
        api_err(
            alice.download_blob_to(bad, &dl).await,
            400,
            ErrorCode::BadRequest,
        );
        assert!(alice.head_blob(bad, None).await.is_err(), "{bad}");
    }
    // The OpenAPI document has the new endpoints.
    let doc: serde_json::Value = reqwest::get(format!("{}/api/v1/openapi.json", t.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for p in [
        "/api/v1/blobs",
        "/api/v1/blobs/{digest}",
        "/api/v1/jobs",
        "/api/v1/jobs/{entity}/{name}",
        "/api/v1/jobs/{entity}/{name}/versions/{version}",
    ] {
        assert!(doc["paths"][p].is_object(), "{p} missing");
    }
    assert!(doc["paths"]["/api/v1/blobs/{digest}"]["head"].is_object());
    t.stop().await;
}

#[tokio::test]
async fn blob_uploads_refused() {
    // A limit-sized upload is fine; one byte more is not.
    let ok = tar_gz(&noise(900));
    let limit = ok.len() as u64;
    let t = TestServer::start_with(|c| c.max_artifact_bytes = limit).await;
    let alice = t.user("alice").await;
    let m = api_err(
        alice.upload_blob(b"PK\x03\x04 a zip".to_vec(), None).await,
        400,
        ErrorCode::BadRequest,
    );
    assert!(m.contains("not gzip"), "{m}");
    let m = api_err(
        alice.upload_blob(vec![], None).await,
        400,
        ErrorCode::BadRequest,
    );
    assert!(m.contains("empty"), "{m}");
    // Too large, with a Content-Length: refused before reading.
    let big = tar_gz(&noise(2000));
    assert!(big.len() as u64 > limit);
    let m = api_err(
        alice.upload_blob(big.clone(), None).await,
        413,
        ErrorCode::PayloadTooLarge,
    );
    assert!(m.contains(&format!("{limit} bytes")), "{m}");
    // Too large, streamed without a length: cut off while streaming.
    let http = reqwest::Client::new();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(100).map(|c| Ok(c.to_vec())).collect();
    let r = http
        .post(format!("{}/api/v1/blobs", t.url))
        .bearer_auth(alice_key(&t, "alice2").await)
        .header("content-type", "application/gzip")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await;
    {
        let r = r.expect("the server answers the cut-off upload");
        assert_eq!(r.status().as_u16(), 413);
        let body: ErrorBody = r.json().await.unwrap();
        assert!(
            body.error.message.contains(&limit.to_string()),
            "{}",
            body.error.message
        );
    }
    alice.upload_blob(ok, None).await.unwrap();
    // Wrong content type.
    let r = http
        .post(format!("{}/api/v1/blobs", t.url))
        .bearer_auth(alice_key(&t, "alice3").await)
        .header("content-type", "application/json")
        .body(gz("z"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
    // Nothing half-written stays behind.
    let blobs = t.dir.path().join("data/blobs");
    assert!(files_under(&blobs.join("tmp")).is_empty());
    assert_eq!(files_under(&blobs.join("sha256")).len(), 1);
    // Without a key: 401.
    api_err(
        t.anonymous().upload_blob(gz("a"), None).await,
        401,
        ErrorCode::Unauthenticated,
    );
    t.stop().await;
}

/// A user with a raw API key (for requests made without the client).
async fn alice_key(t: &TestServer, name: &str) -> String {
    t.admin()
        .create_user(&CreateUser {
            name: name.into(),
            admin: false,
        })
        .await
        .unwrap()
        .api_key
        .secret
        .expose()
        .to_string()
}

#[tokio::test]
async fn jobs_versions_list_show() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let mut req = create("train", image("ghcr.io/me/train:1"));
    req.description = Some("trains things".into());
    let (j, created) = alice.create_job(&req).await.unwrap();
    assert!(created);
    assert_eq!((j.entity.as_str(), j.latest.as_str()), ("alice", "v0"));
    assert_eq!(j.description, "trains things");
    // Same source: the existing version, 200.
    let (j, created) = alice
        .create_job(&create("train", image("ghcr.io/me/train:1")))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(j.latest, "v0");
    assert_eq!(j.versions.len(), 1);
    assert_eq!(j.description, "trains things");
    let (j, created) = alice
        .create_job(&create("train", image("ghcr.io/me/train:2")))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(j.latest, "v1");
    let (j, _) = alice
        .create_job(&create("train", git("https://github.com/me/train.git")))
        .await
        .unwrap();
    assert_eq!(j.latest, "v2");
    alice
        .create_job(&create("eval", git("git@github.com:me/eval.git")))
        .await
        .unwrap();

    let list = alice.list_jobs(None).await.unwrap();
    assert_eq!(
        list.iter()
            .map(|j| (j.name.as_str(), j.latest.as_str(), j.versions.len()))
            .collect::<Vec<_>>(),
        [("eval", "v0", 1), ("train", "v2", 1)]
    );
    assert_eq!(list[1].versions[0].source.kind(), "git");
    assert_eq!(alice.list_jobs(Some("alice")).await.unwrap().len(), 2);

    let j = alice.get_job("alice", "train").await.unwrap();
    let vs: Vec<&str> = j.versions.iter().map(|v| v.version.as_str()).collect();
    assert_eq!(vs, ["v2", "v1", "v0"]);
    assert_eq!(j.versions[2].created_by, "alice");
    let v = alice.get_job_version("alice", "train", "v1").await.unwrap();
    assert_eq!(v.source, image("ghcr.io/me/train:2"));
    let v = alice
        .get_job_version("alice", "train", "latest")
        .await
        .unwrap();
    assert_eq!(v.version, "v2");
    let m = api_err(
        alice.get_job_version("alice", "train", "v9").await,
        404,
        ErrorCode::NotFound,
    );
    assert!(m.contains("versions v0..v2") && m.contains("v9"), "{m}");
    api_err(
        alice.get_job_version("alice", "train", "9").await,
        400,
        ErrorCode::BadRequest,
    );
    api_err(
        alice.get_job("alice", "nope").await,
        404,
        ErrorCode::NotFound,
    );

    alice.delete_job("alice", "eval").await.unwrap();
    api_err(
        alice.get_job("alice", "eval").await,
        404,
        ErrorCode::NotFound,
    );
    assert_eq!(alice.list_jobs(None).await.unwrap().len(), 1);
    t.stop().await;
}

#[tokio::test]
async fn job_sources_validated() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bad_repos = [
        "file:///srv/repo.git",
        "ext::sh -c touch% /tmp/pwned",
        "ext::ssh",
        "http://example.com/repo.git",
        "git://example.com/repo.git",
        "-oProxyCommand=touch /tmp/x",
        "--upload-pack=touch /tmp/x",
        "ssh://-oProxyCommand=x/r",
        "https://me:secret@github.com/me/r.git",
        "/srv/repo.git",
        "",
    ];
    for r in bad_repos {
        let m = api_err(
            alice.create_job(&create("j", git(r))).await,
            400,
            ErrorCode::BadRequest,
        );
        assert!(m.contains("not accepted"), "{r}: {m}");
    }
    // Loopback http/git remotes are fine (tests, local mirrors).
    for r in [
        "http://127.0.0.1:8080/r.git",
        "git://127.0.0.1:9418/r.git",
        "git://localhost/r.git",
        "ssh://git@example.com/r.git",
        "git@example.com:me/r.git",
    ] {
        alice.create_job(&create("ok", git(r))).await.unwrap();
    }
    let mut bad_sources = Vec::new();
    let gitsrc = |f: &dyn Fn(&mut JobSource)| {
        let mut s = git("https://github.com/me/r.git");
        f(&mut s);
        s
    };
    bad_sources.push(gitsrc(&|s| {
        if let JobSource::Git { commit, .. } = s {
            *commit = "main".into();
        }
    }));
    bad_sources.push(gitsrc(&|s| {
        if let JobSource::Git { commit, .. } = s {
            *commit = "0123456789ABCDEF0123456789ABCDEF01234567".into();
        }
    }));
    bad_sources.push(gitsrc(&|s| {
        if let JobSource::Git { entry_point, .. } = s {
            entry_point.clear();
        }
    }));
    bad_sources.push(gitsrc(&|s| {
        if let JobSource::Git { build_context, .. } = s {
            *build_context = Some("../outside".into());
        }
    }));
    bad_sources.push(gitsrc(&|s| {
        if let JobSource::Git { dockerfile, .. } = s {
            *dockerfile = Some("/etc/passwd".into());
        }
    }));
    bad_sources.push(gitsrc(&|s| {
        if let JobSource::Git { git_ref, .. } = s {
            *git_ref = Some("--upload-pack=x".into());
        }
    }));
    bad_sources.push(image(""));
    bad_sources.push(image("my image"));
    bad_sources.push(code("sha256:abc", 1));
    for s in bad_sources {
        api_err(
            alice.create_job(&create("j", s.clone())).await,
            400,
            ErrorCode::BadRequest,
        );
    }
    api_err(
        alice.create_job(&create("bad name", image("x"))).await,
        400,
        ErrorCode::BadRequest,
    );
    // A code job needs an artifact uploaded for its entity, of the right size.
    let bytes = gz("code");
    let d = digest_of(&bytes);
    let n = bytes.len() as u64;
    let m = api_err(
        alice.create_job(&create("c", code(&d, n - 2))).await,
        404,
        ErrorCode::NotFound,
    );
    assert!(m.contains("upload it first"), "{m}");
    let bob = t.user("bob").await;
    bob.upload_blob(bytes.clone(), None).await.unwrap();
    api_err(
        alice.create_job(&create("c", code(&d, n))).await,
        404,
        ErrorCode::NotFound,
    );
    alice.upload_blob(bytes, None).await.unwrap();
    api_err(
        alice.create_job(&create("c", code(&d, n - 1))).await,
        400,
        ErrorCode::BadRequest,
    );
    let (j, _) = alice.create_job(&create("c", code(&d, n))).await.unwrap();
    assert_eq!(j.latest, "v0");
    // Unknown fields are refused.
    let http = reqwest::Client::new();
    let key = alice_key(&t, "carol").await;
    let r = http
        .post(format!("{}/api/v1/jobs", t.url))
        .bearer_auth(&key)
        .json(&serde_json::json!({"name": "x", "source": {"type": "image", "image": "a", "imgae": "b"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = http
        .post(format!("{}/api/v1/jobs", t.url))
        .bearer_auth(&key)
        .json(&serde_json::json!({"name": "x", "source": {"type": "file", "path": "/"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // Nothing refused was created.
    let names: Vec<String> = alice
        .list_jobs(None)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.name)
        .collect();
    assert_eq!(names, ["c", "ok"]);
    t.stop().await;
}

#[tokio::test]
async fn jobs_access_control() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    alice
        .create_job(&create("train", image("a:1")))
        .await
        .unwrap();
    api_err(
        bob.get_job("alice", "train").await,
        404,
        ErrorCode::NotFound,
    );
    api_err(
        bob.get_job_version("alice", "train", "v0").await,
        404,
        ErrorCode::NotFound,
    );
    api_err(
        bob.delete_job("alice", "train").await,
        404,
        ErrorCode::NotFound,
    );
    api_err(bob.list_jobs(Some("alice")).await, 404, ErrorCode::NotFound);
    assert!(bob.list_jobs(None).await.unwrap().is_empty());
    let mut req = create("train", image("evil:1"));
    req.entity = Some("alice".into());
    api_err(bob.create_job(&req).await, 404, ErrorCode::NotFound);
    assert_eq!(alice.get_job("alice", "train").await.unwrap().latest, "v0");

    // Team jobs are the members'.
    admin
        .create_team(&CreateTeam {
            name: "ml".into(),
            members: vec!["alice".into()],
        })
        .await
        .unwrap();
    let mut req = create("shared", image("s:1"));
    req.entity = Some("ml".into());
    alice.create_job(&req).await.unwrap();
    api_err(bob.get_job("ml", "shared").await, 404, ErrorCode::NotFound);
    admin.add_member("ml", "bob").await.unwrap();
    assert_eq!(bob.get_job("ml", "shared").await.unwrap().latest, "v0");
    assert_eq!(bob.list_jobs(None).await.unwrap().len(), 1);
    // The admin sees every job.
    assert_eq!(admin.list_jobs(None).await.unwrap().len(), 2);
    t.stop().await;
}

#[tokio::test]
async fn launch_with_jobs() {
    let t = TestServer::start().await;
    let admin = t.admin();
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    local_queue(&alice, "lp").await;
    alice
        .create_job(&create("img", image("ghcr.io/me/train:1")))
        .await
        .unwrap();
    alice
        .create_job(&create("img", image("ghcr.io/me/train:2")))
        .await
        .unwrap();

    // An image job: the run's image is the job's; the version is resolved.
    let req = LaunchRequest {
        queue: "lp".into(),
        job: Some(JobRef::parse("img").unwrap()),
        ..Default::default()
    };
    let run = alice.launch(&req).await.unwrap();
    assert_eq!(run.image.as_deref(), Some("ghcr.io/me/train:2"));
    assert_eq!(run.job, Some(JobRef::parse("img:v1").unwrap()));
    assert_eq!(run.job_source, Some(image("ghcr.io/me/train:2")));
    assert_eq!(run.entry_point, None);
    let run = alice
        .launch(&LaunchRequest {
            job: Some(JobRef::parse("img:latest").unwrap()),
            ..req.clone()
        })
        .await
        .unwrap();
    assert_eq!(run.job.unwrap().version.as_deref(), Some("v1"));
    let run = alice
        .launch(&LaunchRequest {
            job: Some(JobRef::parse("img:v0").unwrap()),
            ..req.clone()
        })
        .await
        .unwrap();
    assert_eq!(run.image.as_deref(), Some("ghcr.io/me/train:1"));
    // Stored as launched.
    let shown = alice.get_run(&run.id).await.unwrap();
    assert_eq!(shown.job, Some(JobRef::parse("img:v0").unwrap()));
    assert_eq!(shown.job_source, Some(image("ghcr.io/me/train:1")));
    // --image with --job stays refused.
    api_err(
        alice
            .launch(&LaunchRequest {
                image: Some("x:1".into()),
                ..req.clone()
            })
            .await,
        400,
        ErrorCode::BadRequest,
    );
    // Unknown job, unknown version.
    let m = api_err(
        alice
            .launch(&LaunchRequest {
                job: Some(JobRef::parse("nope").unwrap()),
                ..req.clone()
            })
            .await,
        404,
        ErrorCode::NotFound,
    );
    assert!(m.contains("no job named \"nope\""), "{m}");
    let m = api_err(
        alice
            .launch(&LaunchRequest {
                job: Some(JobRef::parse("img:v7").unwrap()),
                ..req.clone()
            })
            .await,
        404,
        ErrorCode::NotFound,
    );
    assert!(m.contains("has versions v0..v1") && m.contains("v7"), "{m}");

    // A code job: job_source set, entry point defaulted (or overridden).
    let bytes = gz("print(42)");
    let d = digest_of(&bytes);
    alice.upload_blob(bytes.clone(), None).await.unwrap();
    alice
        .create_job(&create("code", code(&d, bytes.len() as u64)))
        .await
        .unwrap();
    let creq = LaunchRequest {
        queue: "lp".into(),
        job: Some(JobRef::parse("code").unwrap()),
        args: vec!["--lr".into(), "0.1".into()],
        ..Default::default()
    };
    let run = alice.launch(&creq).await.unwrap();
    assert_eq!(run.image, None);
    assert_eq!(run.job_source, Some(code(&d, bytes.len() as u64)));
    assert_eq!(
        run.entry_point,
        Some(vec!["python3".to_string(), "main.py".to_string()])
    );
    assert_eq!(run.args, ["--lr", "0.1"]);
    let run = alice
        .launch(&LaunchRequest {
            entry_point: Some(vec!["python3".into(), "other.py".into()]),
            ..creq.clone()
        })
        .await
        .unwrap();
    assert_eq!(run.entry_point.unwrap()[1], "other.py");

    // On a team queue, a job is looked up in the team first, then in the caller's own
    // entity; the team's agents may then fetch the artifact.
    admin
        .create_team(&CreateTeam {
            name: "ml".into(),
            members: vec!["alice".into(), "bob".into()],
        })
        .await
        .unwrap();
    alice
        .create_queue(&CreateQueue {
            name: "gpu".into(),
            entity: Some("ml".into()),
            resource: "local-process".into(),
            config: None,
            template_variables: vec![],
            prioritize: false,
            description: None,
        })
        .await
        .unwrap();
    assert!(!bob.head_blob(&d, Some("ml")).await.unwrap().exists);
    let run = alice
        .launch(&LaunchRequest {
            queue: "gpu".into(),
            ..creq.clone()
        })
        .await
        .unwrap();
    assert_eq!(run.entity, "ml");
    assert_eq!(run.job_source, Some(code(&d, bytes.len() as u64)));
    assert!(bob.head_blob(&d, Some("ml")).await.unwrap().exists);
    let dl = t.dir.path().join("agent-dl.tar.gz");
    bob.download_blob_to(&d, &dl).await.unwrap();
    // The team's job of the same name wins over the caller's own.
    let mut team_img = create("img", image("team/img:1"));
    team_img.entity = Some("ml".into());
    bob.create_job(&team_img).await.unwrap();
    let run = alice
        .launch(&LaunchRequest {
            queue: "gpu".into(),
            ..req.clone()
        })
        .await
        .unwrap();
    assert_eq!(run.image.as_deref(), Some("team/img:1"));
    assert_eq!(run.job.unwrap().version.as_deref(), Some("v0"));
    // Bob cannot launch Alice's personal job (it is not his, nor the team's).
    let m = api_err(
        bob.launch(&LaunchRequest {
            queue: "gpu".into(),
            ..creq.clone()
        })
        .await,
        404,
        ErrorCode::NotFound,
    );
    assert!(m.contains("ml or bob"), "{m}");
    t.stop().await;
}

/// A launch may name the job's entity: the job is then looked up there only (an
/// entity the caller may use), so a team's job can run on a personal queue.
#[tokio::test]
async fn launch_names_the_jobs_entity() {
    let t = TestServer::start().await;
    let alice = t.user("alice").await;
    let bob = t.user("bob").await;
    t.admin()
        .create_team(&CreateTeam {
            name: "ml".into(),
            members: vec!["alice".into()],
        })
        .await
        .unwrap();
    local_queue(&alice, "lp").await;
    local_queue(&bob, "lp").await;
    let mut team = create("img", image("team/img:1"));
    team.entity = Some("ml".into());
    alice.create_job(&team).await.unwrap();
    alice
        .create_job(&create("img", image("own/img:1")))
        .await
        .unwrap();
    let named = |e: &str| LaunchRequest {
        queue: "lp".into(),
        job: Some(JobRef {
            name: "img".into(),
            version: None,
            entity: Some(e.into()),
        }),
        ..Default::default()
    };
    // Not named: the queue's entity (alice's own) first, as before.
    let run = alice
        .launch(&LaunchRequest {
            queue: "lp".into(),
            job: Some(JobRef::parse("img").unwrap()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(run.image.as_deref(), Some("own/img:1"));
    assert_eq!(run.job.unwrap().entity, None);
    // Named: the team's, on alice's personal queue; the run records the entity.
    let run = alice.launch(&named("ml")).await.unwrap();
    assert_eq!(run.image.as_deref(), Some("team/img:1"));
    assert_eq!(
        run.job,
        Some(JobRef {
            name: "img".into(),
            version: Some("v0".into()),
            entity: Some("ml".into()),
        })
    );
    assert_eq!(
        alice
            .get_run(&run.id)
            .await
            .unwrap()
            .job
            .unwrap()
            .to_string(),
        "ml/img:v0"
    );
    // Bob is not in ml: not found, as a job that does not exist.
    let m = api_err(bob.launch(&named("ml")).await, 404, ErrorCode::NotFound);
    assert!(m.contains("no job ml/img"), "{m}");
    api_err(
        alice.launch(&named("nobody")).await,
        404,
        ErrorCode::NotFound,
    );
    t.stop().await;
}
