//! The blob store (`--blob-store`) with each backend, through a real in-process server:
//! a directory, S3 on moto (`HOIST_TEST_MOTO_URL`), GCS on fake-gcs-server
//! (`HOIST_TEST_GCS_URL`), Azure Blob on Azurite over https with its own CA
//! (`HOIST_TEST_AZURITE_URL`, `HOIST_TEST_AZURITE_CA`, the account key in
//! `HOIST_TEST_AZURITE_KEY_FILE`). For each: artifacts uploaded and downloaded through
//! the API, log lines appended and read back across several segments, a run's log
//! deleted, start refused on a missing bucket. What the server stored is read back with
//! a client of its own (`object_store`, or the directory), not through the server.
//!
//! A test whose emulator is not configured is skipped with a note, unless
//! `HOIST_TEST_REQUIRE_SERVICES` is set (then it fails).

#![cfg(feature = "blob-cloud")]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestServer, launch_cmd, local_queue};
use futures::TryStreamExt;
use hoist_core::api::{LogBatch, LogLine, LogStream};
use hoist_server::blobstore::{BlobEnv, BlobStoreUrl};
use hoist_server::{Server, ServerConfig};
use object_store::ObjectStore;
use object_store::path::Path as ObjPath;
use rand::RngCore;

const AWS_KEY_ID: &str = "AKIAHOISTBLOBS000001";
const AWS_SECRET: &str = "hoist-blob-store-secret-0001";

/// One backend: the URL and environment the server gets, and an independent view of
/// the bucket (`None` for a directory).
struct Backend {
    url: BlobStoreUrl,
    env: BlobEnv,
    raw: Option<Arc<dyn ObjectStore>>,
    /// The same backend with a bucket/container that does not exist.
    missing: BlobStoreUrl,
    _dir: Option<tempfile::TempDir>,
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn fs_backend() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    Backend {
        url: BlobStoreUrl::File(dir.path().join("blobs")),
        env: BlobEnv::only::<&str, &str>([]),
        raw: None,
        // Nobody, not even root, creates a directory in /proc.
        missing: BlobStoreUrl::File("/proc/hoist-no-such-dir/blobs".into()),
        _dir: Some(dir),
    }
}

async fn moto() -> Option<Backend> {
    let url = hoist_testkit::service_url("HOIST_TEST_MOTO_URL")?;
    let bucket = hoist_testkit::unique("blobs");
    let r = http().put(format!("{url}/{bucket}")).send().await.unwrap();
    assert!(r.status().is_success(), "create bucket: {}", r.status());
    let raw = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&url)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id(AWS_KEY_ID)
        .with_secret_access_key(AWS_SECRET)
        .with_bucket_name(&bucket)
        .build()
        .unwrap();
    Some(Backend {
        url: BlobStoreUrl::parse(&format!("s3://{bucket}/hoist/prod")).unwrap(),
        env: BlobEnv::only([
            ("AWS_ACCESS_KEY_ID", AWS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", AWS_SECRET),
            ("AWS_ENDPOINT_URL", url.as_str()),
            ("AWS_REGION", "us-east-1"),
        ]),
        raw: Some(Arc::new(raw)),
        missing: BlobStoreUrl::parse(&format!("s3://{}-none/hoist", bucket)).unwrap(),
        _dir: None,
    })
}

async fn fake_gcs() -> Option<Backend> {
    let url = hoist_testkit::service_url("HOIST_TEST_GCS_URL")?;
    let bucket = hoist_testkit::unique("blobs");
    let r = http()
        .post(format!("{url}/storage/v1/b?project=hoist"))
        .json(&serde_json::json!({"name": bucket}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "create bucket: {}", r.status());
    let raw = object_store::gcp::GoogleCloudStorageBuilder::new()
        .with_base_url(&url)
        .with_skip_signature(true)
        .with_client_options(object_store::ClientOptions::new().with_allow_http(true))
        .with_bucket_name(&bucket)
        .build()
        .unwrap();
    Some(Backend {
        url: BlobStoreUrl::parse(&format!("gs://{bucket}/hoist")).unwrap(),
        env: BlobEnv::only([("STORAGE_EMULATOR_HOST", url.as_str())]),
        raw: Some(Arc::new(raw)),
        missing: BlobStoreUrl::parse(&format!("gs://{bucket}-none/hoist")).unwrap(),
        _dir: None,
    })
}

struct AzuriteEnv {
    url: String,
    ca: String,
    account: String,
    key: String,
}

fn azurite_env() -> Option<AzuriteEnv> {
    let url = hoist_testkit::service_url("HOIST_TEST_AZURITE_URL")?;
    let ca = hoist_testkit::service_url("HOIST_TEST_AZURITE_CA")?;
    let account = hoist_testkit::service_url("HOIST_TEST_AZURITE_ACCOUNT")?;
    let key_file = hoist_testkit::service_url("HOIST_TEST_AZURITE_KEY_FILE")?;
    let key = std::fs::read_to_string(key_file)
        .unwrap()
        .trim()
        .to_string();
    Some(AzuriteEnv {
        url,
        ca,
        account,
        key,
    })
}

impl AzuriteEnv {
    fn blob_env(&self, key: &str) -> BlobEnv {
        BlobEnv::only([
            ("AZURE_STORAGE_ACCOUNT_KEY", key),
            ("AZURE_STORAGE_BLOB_ENDPOINT", self.url.as_str()),
            ("HOIST_STORE_CA_FILE", self.ca.as_str()),
        ])
    }

    /// Creates a container: `PUT ?restype=container`, signed with the account key
    /// (SharedKey, path-style as Azurite wants it).
    async fn create_container(&self, container: &str) {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let date = httpdate(std::time::SystemTime::now());
        let version = "2021-08-06";
        let path = url_path(&self.url);
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{}{path}/{container}\nrestype:container",
            self.account
        );
        let key = aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            &b64.decode(&self.key).unwrap(),
        );
        let sig = b64.encode(aws_lc_rs::hmac::sign(&key, to_sign.as_bytes()).as_ref());
        let pem = std::fs::read(&self.ca).unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
            .build()
            .unwrap();
        let r = client
            .put(format!("{}/{container}?restype=container", self.url))
            .header("x-ms-date", date)
            .header("x-ms-version", version)
            .header("content-length", "0")
            .header("authorization", format!("SharedKey {}:{sig}", self.account))
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert_eq!(
            status.as_u16(),
            201,
            "create container: {}",
            r.text().await.unwrap()
        );
    }
}

fn url_path(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    rest.find('/')
        .map(|i| rest[i..].trim_end_matches('/').to_string())
        .unwrap_or_default()
}

fn httpdate(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

async fn azurite() -> Option<Backend> {
    let a = azurite_env()?;
    let container = hoist_testkit::unique("blobs");
    a.create_container(&container).await;
    let pem = std::fs::read(&a.ca).unwrap();
    let mut opts = object_store::ClientOptions::new();
    for c in object_store::Certificate::from_pem_bundle(&pem).unwrap() {
        opts = opts.with_root_certificate(c);
    }
    let raw = object_store::azure::MicrosoftAzureBuilder::new()
        .with_account(&a.account)
        .with_access_key(&a.key)
        .with_endpoint(a.url.clone())
        .with_container_name(&container)
        .with_client_options(opts)
        .build()
        .unwrap();
    Some(Backend {
        url: BlobStoreUrl::parse(&format!("az://{}/{container}/hoist", a.account)).unwrap(),
        env: a.blob_env(&a.key),
        raw: Some(Arc::new(raw)),
        missing: BlobStoreUrl::parse(&format!("az://{}/{container}-none/hoist", a.account))
            .unwrap(),
        _dir: None,
    })
}

impl Backend {
    async fn server(&self) -> TestServer {
        let (url, env) = (self.url.clone(), self.env.clone());
        TestServer::start_with(move |c| {
            c.blob_store = Some(url);
            c.blob_env = env;
        })
        .await
    }

    /// The objects (or files) under `dir` of the store, as keys relative to it.
    async fn list(&self, dir: &str) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        match (&self.raw, &self.url) {
            (Some(raw), url) => {
                let prefix = ObjPath::from(format!("{}/{dir}", url.prefix()));
                let found: Vec<_> = raw.list(Some(&prefix)).try_collect().await.unwrap();
                for m in found {
                    let key = m.location.to_string();
                    let rel = key.strip_prefix(&format!("{}/", url.prefix())).unwrap();
                    out.push((rel.to_string(), m.size));
                }
            }
            (None, BlobStoreUrl::File(root)) => {
                let mut stack = vec![root.join(dir)];
                while let Some(d) = stack.pop() {
                    if d.is_file() {
                        let rel = d.strip_prefix(root).unwrap().to_string_lossy().to_string();
                        out.push((rel, d.metadata().unwrap().len()));
                    }
                    let Ok(rd) = std::fs::read_dir(&d) else {
                        continue;
                    };
                    for e in rd {
                        let p = e.unwrap().path();
                        if p.is_dir() {
                            stack.push(p);
                        } else {
                            let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
                            out.push((rel, p.metadata().unwrap().len()));
                        }
                    }
                }
            }
            _ => unreachable!(),
        }
        out.sort();
        out
    }

    /// The key an artifact must be stored under.
    fn artifact_key(&self, digest: &str) -> String {
        let hex = digest.strip_prefix("sha256:").unwrap();
        match self.url {
            BlobStoreUrl::File(_) => format!("sha256/{}/{}", &hex[..2], &hex[2..]),
            _ => format!("sha256/{hex}"),
        }
    }
}

fn tar_gz(name: &str, content: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, name, content).unwrap();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&b.into_inner().unwrap()).unwrap();
    e.finish().unwrap()
}

fn digest_of(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

fn lines(n: usize, tag: &str) -> Vec<LogLine> {
    (0..n)
        .map(|i| LogLine {
            ts: chrono::Utc::now(),
            stream: LogStream::Stdout,
            text: format!("{tag}-{i:04}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The checks, run against each backend.

/// A small artifact (one request) and one of 9 MiB of random bytes (a multipart upload
/// in object stores) are stored under their digest and downloaded byte for byte through
/// the API; the same bytes again are stored once; HEAD sees them.
async fn artifacts_round_trip(b: &Backend) {
    let t = b.server().await;
    let c = t.admin();
    let small = tar_gz("main.py", b"print('hello')\n");
    let mut noise = vec![0u8; 9 << 20];
    rand::rng().fill_bytes(&mut noise);
    let large = tar_gz("weights.bin", &noise);
    assert!(large.len() > hoist_server::blobstore::PART_SIZE);
    let dl = t.dir.path().join("dl.tar.gz");
    for bytes in [&small, &large] {
        let d = digest_of(bytes);
        assert!(!c.head_blob(&d, None).await.unwrap().exists);
        let blob = c.upload_blob(bytes.clone(), None).await.unwrap();
        assert_eq!(
            (blob.digest.as_str(), blob.size),
            (d.as_str(), bytes.len() as u64)
        );
        c.upload_blob(bytes.clone(), None).await.unwrap();
        assert!(c.head_blob(&d, None).await.unwrap().exists);
        let stored = b.list("sha256").await;
        assert!(
            stored.contains(&(b.artifact_key(&d), bytes.len() as u64)),
            "not stored under its digest: {stored:?}"
        );
        assert_eq!(
            c.download_blob_to(&d, &dl).await.unwrap(),
            bytes.len() as u64
        );
        assert!(
            std::fs::read(&dl).unwrap() == *bytes,
            "downloaded bytes differ"
        );
    }
    assert_eq!(b.list("sha256").await.len(), 2, "each stored once");
    // Nothing is left in the upload directory, and the start-up probe is gone.
    let tmp = t
        .server
        .as_ref()
        .unwrap()
        .state
        .blobs
        .tmp_dir()
        .to_path_buf();
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "{tmp:?}");
    assert_eq!(b.list("probe").await, vec![]);
    t.stop().await;
}

/// Log lines appended in several batches are read back in order; in an object store
/// each batch is a segment of its own under `logs/<run id>/`. Then the run's log is
/// deleted (as retention does) and nothing of it is left.
async fn logs_across_segments_and_deleted(b: &Backend) {
    let t = b.server().await;
    let c = t.admin();
    local_queue(&c, "q").await;
    let run = c.launch(&launch_cmd("q", &["true"])).await.unwrap();
    for batch in 0..4 {
        c.append_logs(
            &run.id,
            &LogBatch {
                warnings: Vec::new(),
                session: None,
                lines: lines(50, &format!("b{batch}")),
            },
        )
        .await
        .unwrap();
    }
    let mut got = Vec::new();
    let mut at = 0;
    loop {
        let page = c.read_logs(&run.id, at, Some(70)).await.unwrap();
        if page.lines.is_empty() {
            break;
        }
        got.extend(page.lines.iter().map(|l| l.text.clone()));
        at = page.next_offset;
    }
    let want: Vec<String> = (0..4)
        .flat_map(|b| (0..50).map(move |i| format!("b{b}-{i:04}")))
        .collect();
    assert_eq!(got, want);
    let segments = b.list(&format!("logs/{}", run.id)).await;
    let expected = if b.raw.is_some() { 4 } else { 1 };
    assert_eq!(segments.len(), expected, "{segments:?}");
    // A page from the middle of a later segment.
    let page = c.read_logs(&run.id, 120, Some(3)).await.unwrap();
    let texts: Vec<&str> = page.lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, ["b2-0020", "b2-0021", "b2-0022"]);

    let state = &t.server.as_ref().unwrap().state;
    state.store.forget_log(&run.id, state.now()).await.unwrap();
    state.logs.sweep(0, state.now()).await.unwrap();
    assert_eq!(b.list(&format!("logs/{}", run.id)).await, vec![]);
    assert!(
        c.read_logs(&run.id, 0, None)
            .await
            .unwrap()
            .lines
            .is_empty()
    );
    assert!(
        state
            .store
            .pending_log_deletions(10)
            .await
            .unwrap()
            .is_empty()
    );
    t.stop().await;
}

/// A store that cannot be used (a missing bucket, container or directory) stops the
/// start with an error naming the URL and the fix.
async fn start_refused_when_missing(b: &Backend, fix: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("data"));
    cfg.blob_store = Some(b.missing.clone());
    cfg.blob_env = b.env.clone();
    let e = match Server::start(cfg).await {
        Ok(_) => panic!("the server started on {}", b.missing),
        Err(e) => e,
    };
    let msg = error_chain(&e);
    assert!(msg.contains(&b.missing.to_string()), "{msg}");
    assert!(msg.contains("is not usable"), "{msg}");
    assert!(msg.contains(fix), "{msg}");
    msg
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(" | ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

// ---------------------------------------------------------------------------
// A directory.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_artifacts_round_trip() {
    artifacts_round_trip(&fs_backend()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_logs_across_segments_and_deleted() {
    logs_across_segments_and_deleted(&fs_backend()).await;
}

#[tokio::test]
async fn fs_start_refused_when_the_directory_cannot_be_made() {
    let b = fs_backend();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("data"));
    cfg.blob_store = Some(b.missing.clone());
    let e = Server::start(cfg).await.err().expect("refused");
    let msg = error_chain(&e);
    assert!(
        msg.contains("file:///proc/hoist-no-such-dir/blobs"),
        "{msg}"
    );
    assert!(msg.contains("cannot create the blob directory"), "{msg}");
    assert!(
        msg.contains("is a directory the server's user may write"),
        "{msg}"
    );
}

// ---------------------------------------------------------------------------
// S3 on moto.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_artifacts_round_trip() {
    let Some(b) = moto().await else { return };
    artifacts_round_trip(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_logs_across_segments_and_deleted() {
    let Some(b) = moto().await else { return };
    logs_across_segments_and_deleted(&b).await;
}

#[tokio::test]
async fn s3_start_refused_on_a_missing_bucket() {
    let Some(b) = moto().await else { return };
    let msg = start_refused_when_missing(&b, "does not exist").await;
    assert!(!msg.contains(AWS_SECRET), "{msg}");
}

// ---------------------------------------------------------------------------
// GCS on fake-gcs-server.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_artifacts_round_trip() {
    let Some(b) = fake_gcs().await else { return };
    artifacts_round_trip(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_logs_across_segments_and_deleted() {
    let Some(b) = fake_gcs().await else { return };
    logs_across_segments_and_deleted(&b).await;
}

#[tokio::test]
async fn gcs_start_refused_on_a_missing_bucket() {
    let Some(b) = fake_gcs().await else { return };
    start_refused_when_missing(&b, "does not exist").await;
}

// ---------------------------------------------------------------------------
// Azure Blob on Azurite.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_artifacts_round_trip() {
    let Some(b) = azurite().await else { return };
    artifacts_round_trip(&b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_logs_across_segments_and_deleted() {
    let Some(b) = azurite().await else { return };
    logs_across_segments_and_deleted(&b).await;
}

#[tokio::test]
async fn azure_start_refused_on_a_missing_container() {
    let Some(b) = azurite().await else { return };
    start_refused_when_missing(&b, "does not exist").await;
}

/// The account key is in no error (missing container, wrong key, unreadable CA file)
/// and in no `Debug` output (the config, the store).
#[tokio::test]
async fn azure_key_never_shown() {
    let Some(a) = azurite_env() else { return };
    let Some(b) = azurite().await else { return };
    let key_b64_body = a.key.trim_end_matches('=');
    let leaks = |what: &str, s: &str| {
        assert!(
            !s.contains(key_b64_body),
            "{what} shows the account key: {s}"
        );
    };
    // A missing container.
    let msg = start_refused_when_missing(&b, "does not exist").await;
    leaks("the missing-container error", &msg);
    // A wrong key (the right length, other bytes): refused, the key not shown.
    let wrong = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut k = b64.decode(&a.key).unwrap();
        k.iter_mut().for_each(|x| *x ^= 0x5a);
        b64.encode(k)
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("data"));
    cfg.blob_store = Some(b.url.clone());
    cfg.blob_env = a.blob_env(&wrong);
    leaks("ServerConfig's Debug", &format!("{cfg:?}"));
    assert!(!format!("{cfg:?}").contains(wrong.trim_end_matches('=')));
    let e = Server::start(cfg.clone())
        .await
        .err()
        .expect("refused with a wrong key");
    let msg = error_chain(&e);
    assert!(msg.contains("is not usable"), "{msg}");
    assert!(msg.contains("AZURE_STORAGE_ACCOUNT_KEY"), "{msg}");
    assert!(!msg.contains(wrong.trim_end_matches('=')), "{msg}");
    assert!(
        !format!("{e:?}").contains(wrong.trim_end_matches('=')),
        "{e:?}"
    );
    // The store's Debug, with the right key.
    let store = hoist_server::blobstore::BlobStore::open(&b.url, dir.path(), &b.env)
        .await
        .unwrap();
    store.check().await.unwrap();
    leaks("BlobStore's Debug", &format!("{store:?}"));
    leaks("BlobEnv's Debug", &format!("{:?}", b.env));
    // An unreadable CA file is named, the key is not.
    let bad = BlobEnv::only([
        ("AZURE_STORAGE_ACCOUNT_KEY", a.key.as_str()),
        ("AZURE_STORAGE_BLOB_ENDPOINT", a.url.as_str()),
        ("HOIST_STORE_CA_FILE", "/nonexistent/ca.pem"),
    ]);
    let e = hoist_server::blobstore::BlobStore::open(&b.url, dir.path(), &bad)
        .await
        .unwrap_err();
    let msg = error_chain(&e);
    assert!(
        msg.contains("HOIST_STORE_CA_FILE (/nonexistent/ca.pem) cannot be read"),
        "{msg}"
    );
    leaks("the CA file error", &msg);
    leaks("the CA file error's Debug", &format!("{e:?}"));
}

/// Malformed URLs and endpoints are refused before anything is contacted.
#[tokio::test]
async fn bad_urls_and_endpoints_are_refused() {
    for (url, why) in [
        ("s3:/bucket", "expected one of"),
        ("gs://UPPER/x", "is not a GCS bucket name"),
        ("az://acct1/c1c/p?sv=2020&sig=abc", "no query"),
    ] {
        let e = BlobStoreUrl::parse(url).unwrap_err().to_string();
        assert!(e.contains(why), "{url}: {e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let url = BlobStoreUrl::parse("s3://some-bucket/p").unwrap();
    let env = BlobEnv::only([("AWS_ENDPOINT_URL", "http://s3.example.com")]);
    let e = hoist_server::blobstore::BlobStore::open(&url, dir.path(), &env)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("AWS_ENDPOINT_URL: plain http is allowed to a loopback host only"),
        "{e}"
    );
}

/// S3 credentials from a profile in a shared credentials file (no key in the
/// environment, no instance role here: without the profile the probe fails).
#[tokio::test]
async fn s3_credentials_from_a_profile() {
    let Some(b) = moto().await else { return };
    let BlobStoreUrl::S3 { .. } = &b.url else {
        unreachable!()
    };
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::write(
        &creds,
        format!(
            "[hoist]\naws_access_key_id = {AWS_KEY_ID}\naws_secret_access_key = {AWS_SECRET}\n"
        ),
    )
    .unwrap();
    let endpoint = hoist_testkit::service_url("HOIST_TEST_MOTO_URL").unwrap();
    let env = |profile: &str| {
        BlobEnv::only([
            ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap()),
            ("AWS_PROFILE", profile),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            // No instance role to fall back on.
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ])
    };
    let store = hoist_server::blobstore::BlobStore::open(&b.url, dir.path(), &env("hoist"))
        .await
        .unwrap();
    store.check().await.unwrap();
    // A profile that is not in the file: refused, naming it, showing no key.
    let store = hoist_server::blobstore::BlobStore::open(&b.url, dir.path(), &env("nope"))
        .await
        .unwrap();
    let msg = error_chain(&store.check().await.unwrap_err());
    assert!(msg.contains("AWS profile `nope`"), "{msg}");
    assert!(!msg.contains(AWS_SECRET), "{msg}");
}
