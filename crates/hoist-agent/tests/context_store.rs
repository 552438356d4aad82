//! The build-context stores against their emulators, started by `scripts/test-env.sh`:
//! S3 on moto (`HOIST_TEST_MOTO_URL`), GCS on fake-gcs-server (`HOIST_TEST_GCS_URL`),
//! Azure Blob on Azurite over https with `--oauth basic` (`HOIST_TEST_AZURITE_URL`, its
//! CA in `HOIST_TEST_AZURITE_CA`), whose Azure AD tokens come from the scripted Azure AD
//! of `registry_fakes`. The refusals moto and fake-gcs-server cannot give (they check no
//! credentials) come from scripted endpoints answering as S3 and Cloud Storage do.
//!
//! A test whose emulator is not configured is skipped with a note, unless
//! `HOIST_TEST_REQUIRE_SERVICES` is set (then it fails).

#![cfg(all(feature = "aws", feature = "gcp", feature = "azure"))]

mod registry_fakes;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use hoist_agent::builders::stores::gcs::{Auth, GcsStore};
use hoist_agent::builders::stores::{
    ContextStore, ContextStoreError, PART_SIZE, ensure_uploaded, from_config_with,
};
use hoist_agent::config::{BuildContextStore, EnvironmentConfig};
use hoist_agent::environments::gcp::GcpEnvironment;
use hoist_agent::environments::{Ambient, Environment};
use rand::RngCore;
use registry_fakes::{Server, closed_port};

const AWS_KEY_ID: &str = "AKIAHOISTSTORE000001";
const AWS_SECRET: &str = "hoist-store-secret-key-value-0001";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "0c1b2a3d-1111-2222-3333-444455556666";
const AZ_SECRET: &str = "store~secret.value.from.portal";
const AZ_ACCOUNT: &str = "devstoreaccount1";
const PREFIX: &str = "ctx/k10";

/// 1 MiB and a bit: one request.
const SMALL: usize = (1 << 20) + 7;
/// 9 MiB: two parts.
const LARGE: usize = 9 << 20;

// ---------------------------------------------------------------------------
// Shared checks, run against each store.

/// Every `progress(sent, total)` call.
#[derive(Clone, Default)]
struct Progress(Arc<Mutex<Vec<(u64, u64)>>>);

impl Progress {
    fn callback(&self) -> impl Fn(u64, u64) + Send + Sync + use<> {
        let calls = self.0.clone();
        move |sent, total| calls.lock().unwrap().push((sent, total))
    }

    fn calls(&self) -> Vec<(u64, u64)> {
        self.0.lock().unwrap().clone()
    }

    /// Monotonic, of `total` throughout, ending at `total`, with at least `min` calls.
    fn assert_complete(&self, total: u64, min: usize) {
        let calls = self.calls();
        assert!(
            calls.len() >= min,
            "{} progress calls: {calls:?}",
            calls.len()
        );
        assert!(calls.iter().all(|(_, t)| *t == total), "{calls:?}");
        assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0), "{calls:?}");
        assert_eq!(calls.last().map(|c| c.0), Some(total), "{calls:?}");
    }
}

async fn random_file(dir: &Path, name: &str, len: usize) -> (PathBuf, Vec<u8>) {
    let mut data = vec![0u8; len];
    rand::rng().fill_bytes(&mut data);
    let path = dir.join(name);
    tokio::fs::write(&path, &data).await.unwrap();
    (path, data)
}

fn key(what: &str) -> String {
    format!("{}.tar.gz", hoist_testkit::unique(what))
}

fn object(key: &str) -> String {
    format!("{PREFIX}/{key}")
}

/// The bucket check passes; a small and a two-part upload arrive byte for byte (read
/// back by `get`, a plain download of the object name), with their sizes; progress is
/// monotonic and ends at the total.
async fn round_trip(store: &dyn ContextStore, get: impl AsyncFn(&str) -> Option<Vec<u8>>) {
    store.check().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (len, min_calls) in [(SMALL, 1), (LARGE, 2)] {
        let (path, data) = random_file(dir.path(), "context.tar.gz", len).await;
        let k = key("rt");
        assert_eq!(store.size(&k).await.unwrap(), None);
        let p = Progress::default();
        store
            .upload(&k, &path, len as u64, &p.callback())
            .await
            .unwrap();
        p.assert_complete(len as u64, min_calls);
        if len > PART_SIZE as usize {
            assert_eq!(p.calls()[0].0, PART_SIZE, "{:?}", p.calls());
        }
        assert_eq!(store.size(&k).await.unwrap(), Some(len as u64));
        let back = get(&object(&k)).await.expect("the uploaded object");
        assert!(
            back == data,
            "{len} bytes uploaded, {} read back differ",
            back.len()
        );
    }
}

/// `ensure_uploaded` uploads once; the second call sees the same key and size and
/// sends nothing: no progress, and the object's version (`version`: its ETag or
/// generation) is the same.
async fn dedup(store: &dyn ContextStore, version: impl AsyncFn(&str) -> String) {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = random_file(dir.path(), "context.tar.gz", SMALL).await;
    let k = key("dedup");
    let first = Progress::default();
    assert!(
        ensure_uploaded(store, &k, &path, SMALL as u64, &first.callback())
            .await
            .unwrap()
    );
    first.assert_complete(SMALL as u64, 1);
    let before = version(&object(&k)).await;
    let second = Progress::default();
    assert!(
        !ensure_uploaded(store, &k, &path, SMALL as u64, &second.callback())
            .await
            .unwrap(),
        "uploaded again"
    );
    assert_eq!(second.calls(), vec![]);
    assert_eq!(
        version(&object(&k)).await,
        before,
        "the object was rewritten"
    );
}

/// Delete removes the object; deleting it again is fine.
async fn delete_twice(store: &dyn ContextStore, get: impl AsyncFn(&str) -> Option<Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = random_file(dir.path(), "context.tar.gz", 1000).await;
    let k = key("del");
    store.upload(&k, &path, 1000, &|_, _| {}).await.unwrap();
    assert!(get(&object(&k)).await.is_some());
    store.delete(&k).await.unwrap();
    assert_eq!(store.size(&k).await.unwrap(), None);
    assert!(get(&object(&k)).await.is_none());
    store.delete(&k).await.unwrap();
}

/// A three-part upload dropped after its first part (the second in flight) leaves no
/// object, and `leftovers()` (unfinished uploads the store keeps) comes to nothing.
/// Three parts, not two: with two, the part in flight at the drop is the last one,
/// and a service may still commit it (fake-gcs-server did, once in CI), which is a
/// finished upload, not a dropped one.
async fn dropped_upload(
    store: &dyn ContextStore,
    get: impl AsyncFn(&str) -> Option<Vec<u8>>,
    leftovers: impl AsyncFn() -> usize,
) {
    let dir = tempfile::tempdir().unwrap();
    let size = 2 * PART_SIZE as usize + (1 << 20);
    let (path, _) = random_file(dir.path(), "context.tar.gz", size).await;
    let k = key("drop");
    let (tx, rx) = tokio::sync::oneshot::channel::<u64>();
    let tx = Mutex::new(Some(tx));
    let first_part = move |sent: u64, total: u64| {
        if sent < total
            && let Some(tx) = tx.lock().unwrap().take()
        {
            let _ = tx.send(sent);
        }
    };
    tokio::select! {
        r = store.upload(&k, &path, size as u64, &first_part) => {
            panic!("the upload ended before it was dropped: {r:?}")
        }
        sent = rx => assert_eq!(sent.unwrap(), PART_SIZE),
    }
    // (The upload's future is dropped here, a part sent and the next in flight.)
    hoist_testkit::wait_until_async("no unfinished upload left", hoist_testkit::LONG, || async {
        leftovers().await == 0
    })
    .await;
    assert!(
        get(&object(&k)).await.is_none(),
        "a dropped upload left an object"
    );
    assert_eq!(store.size(&k).await.unwrap(), None);
}

fn assert_no_secret(texts: &[&str], secrets: &[&str]) {
    for t in texts {
        for s in secrets {
            assert!(!t.contains(s), "a secret appears in: {t}");
        }
    }
}

/// Everything `tracing` writes, at every level, while the guard lives (the tests run
/// on a current-thread runtime: every task of the test polls on its thread).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn start() -> (Captured, tracing::subscriber::DefaultGuard) {
        let c = Captured::default();
        let mut filter = tracing_subscriber::EnvFilter::new("trace");
        for d in hoist_agent::logs::SECRET_SAFE_LOG_DIRECTIVES {
            filter = filter.add_directive(d.parse().unwrap());
        }
        let w = c.clone();
        let sub = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(move || w.clone())
            .finish();
        (c.clone(), tracing::subscriber::set_default(sub))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A scripted endpoint: every request gets `status`, `body` (with `content_type`);
/// the requests' `Authorization` headers are kept.
struct Scripted {
    base: String,
    authorizations: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn scripted(status: u16, content_type: &'static str, body: &'static str) -> Scripted {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let authorizations = Arc::new(Mutex::new(Vec::new()));
    let seen = authorizations.clone();
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let seen = seen.clone();
        async move {
            if let Some(a) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
                seen.lock().unwrap().push(a.to_string());
            }
            (
                StatusCode::from_u16(status).unwrap(),
                [("content-type", content_type)],
                body,
            )
                .into_response()
        }
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Scripted {
        base,
        authorizations,
        task,
    }
}

fn plain() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------
// S3 on moto.

async fn aws_env(endpoint: &str) -> Arc<dyn Environment> {
    let ambient = Ambient::new(
        [
            ("AWS_ACCESS_KEY_ID", AWS_KEY_ID.to_string()),
            ("AWS_SECRET_ACCESS_KEY", AWS_SECRET.to_string()),
            ("AWS_ENDPOINT_URL", endpoint.to_string()),
            (
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                format!("http://{}", closed_port()),
            ),
        ],
        None,
    );
    hoist_agent::environments::from_config_with(
        &EnvironmentConfig::Aws {
            region: "us-east-1".into(),
        },
        &ambient,
    )
    .await
    .unwrap()
}

struct Moto {
    url: String,
    bucket: String,
    store: Arc<dyn ContextStore>,
}

/// A new bucket on moto and the store on it.
async fn moto() -> Option<Moto> {
    let url = hoist_testkit::service_url("HOIST_TEST_MOTO_URL")?;
    let bucket = hoist_testkit::unique("ctx");
    let r = plain().put(format!("{url}/{bucket}")).send().await.unwrap();
    assert!(r.status().is_success(), "create bucket: {}", r.status());
    let env = aws_env(&url).await;
    let store = from_config_with(
        &BuildContextStore::S3 {
            bucket: bucket.clone(),
            prefix: PREFIX.into(),
        },
        Some(&env),
        &Ambient::default(),
    )
    .unwrap();
    let m = Moto { url, bucket, store };
    // Plain GETs read the objects back (moto, like S3, refuses anonymous reads
    // otherwise).
    m.policy(None).await;
    Some(m)
}

impl Moto {
    /// Sets the bucket's policy: anonymous reads, and `statement`.
    async fn policy(&self, statement: Option<serde_json::Value>) {
        let read = serde_json::json!({
            "Effect": "Allow",
            "Principal": "*",
            "Action": "s3:GetObject",
            "Resource": format!("arn:aws:s3:::{}/*", self.bucket),
        });
        let statements: Vec<serde_json::Value> =
            [Some(read), statement].into_iter().flatten().collect();
        let policy = serde_json::json!({"Version": "2012-10-17", "Statement": statements});
        let r = plain()
            .put(format!("{}/{}?policy", self.url, self.bucket))
            .body(policy.to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "put bucket policy: {}", r.status());
    }

    async fn get(&self, name: &str) -> Option<Vec<u8>> {
        let r = plain()
            .get(format!("{}/{}/{name}", self.url, self.bucket))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => Some(r.bytes().await.unwrap().to_vec()),
            404 => None,
            s => panic!("GET {name}: {s}"),
        }
    }

    async fn etag(&self, name: &str) -> String {
        let r = plain()
            .get(format!("{}/{}/{name}", self.url, self.bucket))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.headers()["etag"].to_str().unwrap().to_string()
    }

    /// `ListMultipartUploads`: how many are unfinished.
    async fn multipart_uploads(&self) -> usize {
        let r = plain()
            .get(format!("{}/{}?uploads", self.url, self.bucket))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.text().await.unwrap().matches("<Upload>").count()
    }
}

#[tokio::test]
async fn s3_small_and_multipart_uploads_arrive_byte_for_byte() {
    let Some(m) = moto().await else { return };
    let (logs, _g) = Captured::start();
    assert_eq!(m.store.describe(), format!("s3://{}/{PREFIX}/", m.bucket));
    assert_eq!(
        m.store.object_url("k.tar.gz"),
        format!("s3://{}/{PREFIX}/k.tar.gz", m.bucket)
    );
    round_trip(m.store.as_ref(), async |n: &str| m.get(n).await).await;
    // (The SDK's trace lines were captured: the check below is not vacuous.)
    assert!(
        logs.text().contains("S3.UploadPart"),
        "no SDK trace captured"
    );
    assert_no_secret(&[&logs.text(), &format!("{:?}", m.store)], &[AWS_SECRET]);
}

#[tokio::test]
async fn s3_same_key_and_size_is_not_uploaded_again() {
    let Some(m) = moto().await else { return };
    dedup(m.store.as_ref(), async |n: &str| m.etag(n).await).await;
}

#[tokio::test]
async fn s3_delete_twice_is_ok() {
    let Some(m) = moto().await else { return };
    delete_twice(m.store.as_ref(), async |n: &str| m.get(n).await).await;
}

#[tokio::test]
async fn s3_dropped_multipart_upload_is_aborted() {
    let Some(m) = moto().await else { return };
    dropped_upload(
        m.store.as_ref(),
        async |n: &str| m.get(n).await,
        async || m.multipart_uploads().await,
    )
    .await;
}

#[tokio::test]
async fn s3_missing_bucket_is_named_with_the_fix() {
    let Some(url) = hoist_testkit::service_url("HOIST_TEST_MOTO_URL") else {
        return;
    };
    let bucket = hoist_testkit::unique("nobucket");
    let env = aws_env(&url).await;
    let store = from_config_with(
        &BuildContextStore::S3 {
            bucket: bucket.clone(),
            prefix: PREFIX.into(),
        },
        Some(&env),
        &Ambient::default(),
    )
    .unwrap();
    let want = format!(
        "bucket `{bucket}` does not exist (s3://{bucket}/{PREFIX}/): create it or fix builder.build-context-store"
    );
    let e = store.check().await.unwrap_err();
    assert!(
        matches!(e, ContextStoreError::MissingBucket { .. }),
        "{e:?}"
    );
    assert_eq!(e.to_string(), want);
    assert!(!e.is_transient());
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = random_file(dir.path(), "c.tar.gz", 100).await;
    let e = store
        .upload("k.tar.gz", &path, 100, &|_, _| {})
        .await
        .unwrap_err();
    assert!(
        matches!(e, ContextStoreError::MissingBucket { .. }),
        "{e:?}"
    );
    assert_eq!(e.to_string(), want);
    // Nothing there to delete: fine.
    store.delete("k.tar.gz").await.unwrap();
}

/// moto applies a bucket policy's Deny to object requests, as S3 does.
#[tokio::test]
async fn s3_refusal_names_the_credentials_and_the_action() {
    let Some(m) = moto().await else { return };
    m.policy(Some(serde_json::json!({
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:PutObject",
        "Resource": format!("arn:aws:s3:::{}/*", m.bucket),
    })))
    .await;
    let dir = tempfile::tempdir().unwrap();
    for len in [100, LARGE] {
        let (path, _) = random_file(dir.path(), "c.tar.gz", len).await;
        let e = m
            .store
            .upload("k.tar.gz", &path, len as u64, &|_, _| {})
            .await
            .unwrap_err();
        assert!(matches!(e, ContextStoreError::Denied { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!(
                "uploading s3://{}/{PREFIX}/k.tar.gz: S3 refused the credentials from environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) (",
                m.bucket
            )),
            "{msg}"
        );
        assert!(
            msg.ends_with("); allow s3:PutObject (and s3:AbortMultipartUpload) on the prefix for that identity, or fix builder.build-context-store"),
            "{msg}"
        );
        assert!(!e.is_transient());
        assert_no_secret(
            &[&msg, &format!("{e:?}"), &format!("{:?}", m.store)],
            &[AWS_SECRET],
        );
    }
    // The refused multipart upload was aborted.
    assert_eq!(m.multipart_uploads().await, 0);
}

/// No credentials in the chain: the message lists what was tried (the chain's own).
#[tokio::test]
async fn s3_without_credentials_says_what_was_tried() {
    let Some(url) = hoist_testkit::service_url("HOIST_TEST_MOTO_URL") else {
        return;
    };
    let ambient = Ambient::new(
        [
            ("AWS_ENDPOINT_URL", url),
            (
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                format!("http://{}", closed_port()),
            ),
        ],
        None,
    );
    let env = hoist_agent::environments::from_config_with(
        &EnvironmentConfig::Aws {
            region: "us-east-1".into(),
        },
        &ambient,
    )
    .await
    .unwrap();
    let store = from_config_with(
        &BuildContextStore::S3 {
            bucket: "ctx-bucket".into(),
            prefix: PREFIX.into(),
        },
        Some(&env),
        &Ambient::default(),
    )
    .unwrap();
    let e = store.check().await.unwrap_err();
    assert!(matches!(e, ContextStoreError::Credentials { .. }), "{e:?}");
    let m = e.to_string();
    assert!(
        m.starts_with(&format!(
            "checking bucket `ctx-bucket` (s3://ctx-bucket/{PREFIX}/): no credentials from the aws environment: aws: no credentials: tried environment variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY): not set;"
        )),
        "{m}"
    );
    assert!(m.ends_with("; set one of them"), "{m}");
    assert!(!e.is_transient());
}

#[tokio::test]
async fn s3_unreachable_endpoint_is_named() {
    let port = closed_port();
    let env = aws_env(&format!("http://{port}")).await;
    let store = from_config_with(
        &BuildContextStore::S3 {
            bucket: "ctx-bucket".into(),
            prefix: PREFIX.into(),
        },
        Some(&env),
        &Ambient::default(),
    )
    .unwrap();
    let e = store.check().await.unwrap_err();
    assert!(matches!(e, ContextStoreError::Unreachable { .. }), "{e:?}");
    let m = e.to_string();
    assert!(
        m.starts_with(&format!(
            "checking bucket `ctx-bucket` (s3://ctx-bucket/{PREFIX}/): http://{port} (AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL) could not be reached ("
        )),
        "{m}"
    );
    assert!(m.ends_with("); check the network and the endpoint"), "{m}");
    assert!(e.is_transient());
}

// ---------------------------------------------------------------------------
// GCS on fake-gcs-server.

struct FakeGcs {
    url: String,
    bucket: String,
    store: Arc<dyn ContextStore>,
}

async fn fake_gcs() -> Option<FakeGcs> {
    let url = hoist_testkit::service_url("HOIST_TEST_GCS_URL")?;
    let bucket = hoist_testkit::unique("ctx");
    let r = plain()
        .post(format!("{url}/storage/v1/b?project=hoist"))
        .json(&serde_json::json!({"name": bucket}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "create bucket: {}", r.status());
    let store = from_config_with(
        &BuildContextStore::Gcs {
            bucket: bucket.clone(),
            prefix: PREFIX.into(),
        },
        None,
        &Ambient::new([("STORAGE_EMULATOR_HOST", url.as_str())], None),
    )
    .unwrap();
    Some(FakeGcs { url, bucket, store })
}

impl FakeGcs {
    fn object_api(&self, name: &str) -> String {
        let mut u = url::Url::parse(&self.url).unwrap();
        u.path_segments_mut()
            .unwrap()
            .extend(["storage", "v1", "b", &self.bucket, "o", name]);
        u.to_string()
    }

    async fn get(&self, name: &str) -> Option<Vec<u8>> {
        let r = plain()
            .get(format!("{}?alt=media", self.object_api(name)))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => Some(r.bytes().await.unwrap().to_vec()),
            404 => None,
            s => panic!("GET {name}: {s}"),
        }
    }

    async fn generation(&self, name: &str) -> String {
        let r = plain().get(self.object_api(name)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        format!("{} {}", v["generation"], v["updated"])
    }
}

#[tokio::test]
async fn gcs_small_and_resumable_uploads_arrive_byte_for_byte() {
    let Some(g) = fake_gcs().await else { return };
    assert_eq!(g.store.describe(), format!("gs://{}/{PREFIX}/", g.bucket));
    assert_eq!(
        g.store.object_url("k.tar.gz"),
        format!("gs://{}/{PREFIX}/k.tar.gz", g.bucket)
    );
    round_trip(g.store.as_ref(), async |n: &str| g.get(n).await).await;
}

#[tokio::test]
async fn gcs_same_key_and_size_is_not_uploaded_again() {
    let Some(g) = fake_gcs().await else { return };
    dedup(g.store.as_ref(), async |n: &str| g.generation(n).await).await;
}

#[tokio::test]
async fn gcs_delete_twice_is_ok() {
    let Some(g) = fake_gcs().await else { return };
    delete_twice(g.store.as_ref(), async |n: &str| g.get(n).await).await;
}

/// An unfinished resumable session is never an object; the store also cancels it.
#[tokio::test]
async fn gcs_dropped_resumable_upload_leaves_nothing() {
    let Some(g) = fake_gcs().await else { return };
    let list = async || {
        let r = plain()
            .get(format!("{}/storage/v1/b/{}/o", g.url, g.bucket))
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        v["items"].as_array().map_or(0, Vec::len)
    };
    dropped_upload(g.store.as_ref(), async |n: &str| g.get(n).await, list).await;
}

/// A proxy in front of fake-gcs-server that answers the first chunk after the first
/// of a resumable upload with a 503 (a transient failure mid-upload) and forwards
/// everything else, pointing session URLs at itself. It answers the status query
/// (`Content-Range: bytes */TOTAL`) itself, as Cloud Storage does (308 and the
/// persisted `Range`): fake-gcs-server takes that query for the end of a streaming
/// upload and commits what it has. Keeps each PUT's `Content-Range`.
struct FlakyProxy {
    base: String,
    ranges: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn flaky_proxy(upstream: &str) -> FlakyProxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let ranges = Arc::new(Mutex::new(Vec::<String>::new()));
    let failed = Arc::new(Mutex::new(false));
    // The `Range` of the last 308 fake-gcs-server answered.
    let persisted = Arc::new(Mutex::new(None::<String>));
    let (up, me, seen) = (upstream.to_string(), base.clone(), ranges.clone());
    let app = axum::Router::new()
        .fallback(move |req: axum::extract::Request| {
            let (up, me, seen, failed, persisted) = (
                up.clone(),
                me.clone(),
                seen.clone(),
                failed.clone(),
                persisted.clone(),
            );
            async move {
                let (parts, body) = req.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                let range = parts
                    .headers
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                if parts.method == axum::http::Method::PUT
                    && let Some(r) = &range
                {
                    seen.lock().unwrap().push(r.clone());
                    if r.starts_with("bytes */") {
                        let mut out = axum::http::Response::builder().status(308);
                        if let Some(range) = persisted.lock().unwrap().clone() {
                            out = out.header("range", range);
                        }
                        return out.body(axum::body::Body::empty()).unwrap();
                    }
                    let later_chunk = !r.starts_with("bytes 0-") && !r.starts_with("bytes */");
                    let mut failed = failed.lock().unwrap();
                    if later_chunk && !*failed {
                        *failed = true;
                        return StatusCode::SERVICE_UNAVAILABLE.into_response();
                    }
                }
                let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                let mut fwd = plain().request(parts.method.clone(), format!("{up}{pq}"));
                for (k, v) in &parts.headers {
                    if k != "host" && k != "content-length" {
                        fwd = fwd.header(k, v);
                    }
                }
                let resp = fwd.body(body).send().await.unwrap();
                if resp.status().as_u16() == 308
                    && let Some(r) = resp.headers().get("range")
                {
                    *persisted.lock().unwrap() = Some(r.to_str().unwrap().to_string());
                }
                let mut out = axum::http::Response::builder().status(resp.status().as_u16());
                for (k, v) in resp.headers() {
                    if k == "location" {
                        let l = v.to_str().unwrap().replace(&up, &me);
                        out = out.header(k, l);
                    } else if k != "content-length" && k != "transfer-encoding" {
                        out = out.header(k, v);
                    }
                }
                out.body(axum::body::Body::from(resp.bytes().await.unwrap()))
                    .unwrap()
            }
        })
        .layer(axum::extract::DefaultBodyLimit::disable());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    FlakyProxy { base, ranges, task }
}

/// A chunk that fails transiently is sent again from where the session stands, and
/// the object is whole.
#[tokio::test]
async fn gcs_resumable_upload_resumes_after_a_failed_chunk() {
    let Some(g) = fake_gcs().await else { return };
    let proxy = flaky_proxy(&g.url).await;
    let store = from_config_with(
        &BuildContextStore::Gcs {
            bucket: g.bucket.clone(),
            prefix: PREFIX.into(),
        },
        None,
        &Ambient::new([("STORAGE_EMULATOR_HOST", proxy.base.as_str())], None),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = random_file(dir.path(), "context.tar.gz", LARGE).await;
    let k = key("resume");
    let p = Progress::default();
    store
        .upload(&k, &path, LARGE as u64, &p.callback())
        .await
        .unwrap();
    p.assert_complete(LARGE as u64, 2);
    let (total, part) = (LARGE as u64, PART_SIZE);
    let ranges = proxy.ranges.lock().unwrap().clone();
    let second = format!("bytes {part}-{}/{total}", total - 1);
    assert_eq!(
        ranges[0],
        format!("bytes 0-{}/{total}", part - 1),
        "{ranges:?}"
    );
    assert_eq!(ranges[1], second, "{ranges:?}");
    // Where does the session stand, then the second chunk again.
    assert_eq!(ranges[2], format!("bytes */{total}"), "{ranges:?}");
    assert_eq!(ranges.last(), Some(&second), "{ranges:?}");
    assert!(
        g.get(&object(&k)).await.unwrap() == data,
        "the object differs"
    );
}

#[tokio::test]
async fn gcs_missing_bucket_is_named_with_the_fix() {
    let Some(url) = hoist_testkit::service_url("HOIST_TEST_GCS_URL") else {
        return;
    };
    let bucket = hoist_testkit::unique("nobucket");
    let store = from_config_with(
        &BuildContextStore::Gcs {
            bucket: bucket.clone(),
            prefix: PREFIX.into(),
        },
        None,
        &Ambient::new([("STORAGE_EMULATOR_HOST", url.as_str())], None),
    )
    .unwrap();
    let want = format!(
        "bucket `{bucket}` does not exist (gs://{bucket}/{PREFIX}/): create it or fix builder.build-context-store"
    );
    let e = store.check().await.unwrap_err();
    assert!(
        matches!(e, ContextStoreError::MissingBucket { .. }),
        "{e:?}"
    );
    assert!(e.to_string().starts_with(&want), "{e}");
    let dir = tempfile::tempdir().unwrap();
    for len in [100, LARGE] {
        let (path, _) = random_file(dir.path(), "c.tar.gz", len).await;
        let e = store
            .upload("k.tar.gz", &path, len as u64, &|_, _| {})
            .await
            .unwrap_err();
        assert!(
            matches!(e, ContextStoreError::MissingBucket { .. }),
            "{e:?}"
        );
        assert!(e.to_string().starts_with(&want), "{e}");
    }
    store.delete("k.tar.gz").await.unwrap();
}

/// fake-gcs-server checks no credentials: Cloud Storage's refusal comes from a
/// scripted endpoint, reached with the gcp environment's token (user credentials
/// exchanged at the scripted Google token endpoint).
#[tokio::test]
async fn gcs_refusal_names_the_credentials_and_the_permission() {
    const REFRESH: &str = "1//0store-refresh-token";
    const CLIENT_SECRET: &str = "d-FL95Q19q7MQmFpd7hHD0Ty";
    let google = Server::start(|f| {
        *f.google_user.get_mut().unwrap() = Some((
            "764086051850-store.apps.googleusercontent.com".into(),
            CLIENT_SECRET.into(),
            REFRESH.into(),
        ));
    })
    .await;
    let gcs = scripted(
        403,
        "application/json; charset=UTF-8",
        r#"{"error":{"code":403,"message":"764086051850-store does not have storage.buckets.get access to the Google Cloud Storage bucket. Permission 'storage.buckets.get' denied on resource (or it may not exist).","errors":[{"message":"denied","domain":"global","reason":"forbidden"}]}}"#,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("adc.json");
    tokio::fs::write(
        &creds,
        serde_json::json!({
            "type": "authorized_user",
            "client_id": "764086051850-store.apps.googleusercontent.com",
            "client_secret": CLIENT_SECRET,
            "refresh_token": REFRESH,
            "token_uri": format!("{}/token", google.base),
        })
        .to_string(),
    )
    .await
    .unwrap();
    let ambient = Ambient::new(
        [(
            "GOOGLE_APPLICATION_CREDENTIALS",
            creds.display().to_string(),
        )],
        None,
    );
    let env = tokio::task::spawn_blocking(move || {
        GcpEnvironment::new("europe-west4", Some("p"), &ambient).unwrap()
    })
    .await
    .unwrap();
    let store = GcsStore::new(
        "ctx-bucket".into(),
        PREFIX.into(),
        &gcs.base,
        Auth::Environment(env),
        None,
    )
    .unwrap();
    let (logs, _g) = Captured::start();
    let e = store.check().await.unwrap_err();
    assert!(matches!(e, ContextStoreError::Denied { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        format!(
            "checking bucket `ctx-bucket` (gs://ctx-bucket/{PREFIX}/): Cloud Storage refused the credentials from GOOGLE_APPLICATION_CREDENTIALS ({}) (HTTP 403: 764086051850-store does not have storage.buckets.get access to the Google Cloud Storage bucket. Permission 'storage.buckets.get' denied on resource (or it may not exist).); grant storage.buckets.get on the bucket to that identity (e.g. roles/storage.objectAdmin), or fix builder.build-context-store",
            creds.display()
        )
    );
    let path = dir.path().join("c.tar.gz");
    tokio::fs::write(&path, b"0123456789").await.unwrap();
    let e2 = store
        .upload("k.tar.gz", &path, 10, &|_, _| {})
        .await
        .unwrap_err();
    assert!(
        e2.to_string().contains("grant storage.objects.create"),
        "{e2}"
    );
    // Both requests carried the token Google issued; nothing shows a secret.
    let auths = gcs.authorizations.lock().unwrap().clone();
    assert_eq!(auths.len(), 2, "{auths:?}");
    let issued = google.access_tokens.lock().unwrap().clone();
    for a in &auths {
        let t = a.strip_prefix("Bearer ").expect("a bearer token");
        assert!(issued.contains(t), "{a} was not issued");
    }
    let token = auths[0].strip_prefix("Bearer ").unwrap().to_string();
    assert_no_secret(
        &[
            &e.to_string(),
            &e2.to_string(),
            &format!("{e:?} {store:?}"),
            &logs.text(),
        ],
        &[&token, REFRESH, CLIENT_SECRET],
    );
    assert_eq!(google.problems(), Vec::<String>::new());
}

#[tokio::test]
async fn gcs_unreachable_endpoint_is_named() {
    let port = closed_port();
    let store = from_config_with(
        &BuildContextStore::Gcs {
            bucket: "ctx-bucket".into(),
            prefix: PREFIX.into(),
        },
        None,
        &Ambient::new([("STORAGE_EMULATOR_HOST", port.as_str())], None),
    )
    .unwrap();
    let e = store.size("k.tar.gz").await.unwrap_err();
    assert!(matches!(e, ContextStoreError::Unreachable { .. }), "{e:?}");
    let m = e.to_string();
    assert!(
        m.starts_with(&format!(
            "looking up gs://ctx-bucket/{PREFIX}/k.tar.gz: http://{port} (STORAGE_EMULATOR_HOST) could not be reached ("
        )),
        "{m}"
    );
    assert!(m.ends_with("); check the network and the endpoint"), "{m}");
    assert!(e.is_transient());
}

// ---------------------------------------------------------------------------
// Azure Blob on Azurite (https, --oauth basic), tokens from the scripted Azure AD.

async fn azure_env(aad: &Server) -> Arc<dyn Environment> {
    let ambient = Ambient::new(
        [
            ("AZURE_TENANT_ID", TENANT.to_string()),
            ("AZURE_CLIENT_ID", CLIENT.to_string()),
            ("AZURE_CLIENT_SECRET", AZ_SECRET.to_string()),
            ("AZURE_AUTHORITY_HOST", aad.base.clone()),
            (
                "AZURE_POD_IDENTITY_AUTHORITY_HOST",
                format!("http://{}", closed_port()),
            ),
        ],
        None,
    );
    hoist_agent::environments::from_config_with(&EnvironmentConfig::Azure, &ambient)
        .await
        .unwrap()
}

async fn aad() -> Server {
    Server::start(|f| {
        f.aad_clients
            .get_mut()
            .unwrap()
            .push((TENANT.into(), CLIENT.into(), AZ_SECRET.into()));
    })
    .await
}

struct Azurite {
    url: String,
    ca: String,
    container: String,
    aad: Server,
    store: Arc<dyn ContextStore>,
}

fn store_ambient(url: &str, ca: &str) -> Ambient {
    Ambient::new(
        [
            ("AZURE_STORAGE_BLOB_ENDPOINT", url),
            ("HOIST_STORE_CA_FILE", ca),
        ],
        None,
    )
}

async fn azurite() -> Option<Azurite> {
    let url = hoist_testkit::service_url("HOIST_TEST_AZURITE_URL")?;
    let ca = hoist_testkit::service_url("HOIST_TEST_AZURITE_CA")?;
    let aad = aad().await;
    let container = hoist_testkit::unique("ctx");
    let env = azure_env(&aad).await;
    let store = from_config_with(
        &BuildContextStore::AzureBlob {
            account: AZ_ACCOUNT.into(),
            container: container.clone(),
            prefix: PREFIX.into(),
        },
        Some(&env),
        &store_ambient(&url, &ca),
    )
    .unwrap();
    let a = Azurite {
        url,
        ca,
        container,
        aad,
        store,
    };
    let r = a
        .request(
            reqwest::Method::PUT,
            &format!("{}?restype=container", a.container),
        )
        .await
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "create container");
    Some(a)
}

impl Azurite {
    /// A request to `path` under the account, with a token of the scripted Azure AD.
    async fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let pem = tokio::fs::read(&self.ca).await.unwrap();
        let http = reqwest::Client::builder()
            .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
            .build()
            .unwrap();
        let token = self
            .aad
            .azure_storage_token(TENANT, CLIENT, AZ_SECRET)
            .await;
        http.request(method, format!("{}/{path}", self.url))
            .bearer_auth(token)
            .header("x-ms-version", "2021-08-06")
    }

    async fn get(&self, name: &str) -> Option<Vec<u8>> {
        let r = self
            .request(reqwest::Method::GET, &format!("{}/{name}", self.container))
            .await
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => Some(r.bytes().await.unwrap().to_vec()),
            404 => None,
            s => panic!("GET {name}: {s}"),
        }
    }

    async fn etag(&self, name: &str) -> String {
        let r = self
            .request(reqwest::Method::HEAD, &format!("{}/{name}", self.container))
            .await
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.headers()["etag"].to_str().unwrap().to_string()
    }
}

#[tokio::test]
async fn azure_small_and_block_uploads_arrive_byte_for_byte() {
    let Some(a) = azurite().await else { return };
    let (logs, _g) = Captured::start();
    assert_eq!(
        a.store.describe(),
        format!(
            "https://{AZ_ACCOUNT}.blob.core.windows.net/{}/{PREFIX}/",
            a.container
        )
    );
    assert_eq!(
        a.store.object_url("k.tar.gz"),
        format!(
            "https://{AZ_ACCOUNT}.blob.core.windows.net/{}/{PREFIX}/k.tar.gz",
            a.container
        )
    );
    round_trip(a.store.as_ref(), async |n: &str| a.get(n).await).await;
    let issued: Vec<String> = a
        .aad
        .access_tokens
        .lock()
        .unwrap()
        .iter()
        .cloned()
        .collect();
    assert!(!issued.is_empty());
    let mut secrets: Vec<&str> = issued.iter().map(String::as_str).collect();
    secrets.push(AZ_SECRET);
    assert!(
        logs.text().contains("authorization: REDACTED"),
        "no SDK request log captured"
    );
    assert_no_secret(&[&logs.text(), &format!("{:?}", a.store)], &secrets);
    assert_eq!(a.aad.problems(), Vec::<String>::new());
}

#[tokio::test]
async fn azure_same_key_and_size_is_not_uploaded_again() {
    let Some(a) = azurite().await else { return };
    dedup(a.store.as_ref(), async |n: &str| a.etag(n).await).await;
}

#[tokio::test]
async fn azure_delete_twice_is_ok() {
    let Some(a) = azurite().await else { return };
    delete_twice(a.store.as_ref(), async |n: &str| a.get(n).await).await;
}

/// Staged blocks are no blob until their list is committed.
#[tokio::test]
async fn azure_dropped_block_upload_leaves_no_blob() {
    let Some(a) = azurite().await else { return };
    let blobs = async || {
        let r = a
            .request(
                reqwest::Method::GET,
                &format!("{}?restype=container&comp=list", a.container),
            )
            .await
            .send()
            .await
            .unwrap();
        r.text().await.unwrap().matches("<Blob>").count()
    };
    dropped_upload(a.store.as_ref(), async |n: &str| a.get(n).await, blobs).await;
}

#[tokio::test]
async fn azure_missing_container_is_named_with_the_fix() {
    let Some(url) = hoist_testkit::service_url("HOIST_TEST_AZURITE_URL") else {
        return;
    };
    let Some(ca) = hoist_testkit::service_url("HOIST_TEST_AZURITE_CA") else {
        return;
    };
    let aad = aad().await;
    let env = azure_env(&aad).await;
    let container = hoist_testkit::unique("nocontainer");
    let store = from_config_with(
        &BuildContextStore::AzureBlob {
            account: AZ_ACCOUNT.into(),
            container: container.clone(),
            prefix: PREFIX.into(),
        },
        Some(&env),
        &store_ambient(&url, &ca),
    )
    .unwrap();
    let want = format!(
        "container `{container}` does not exist in storage account `{AZ_ACCOUNT}` (https://{AZ_ACCOUNT}.blob.core.windows.net/{container}/{PREFIX}/): create it or fix builder.build-context-store"
    );
    let e = store.check().await.unwrap_err();
    assert!(
        matches!(e, ContextStoreError::MissingBucket { .. }),
        "{e:?}"
    );
    assert_eq!(e.to_string(), want);
    let dir = tempfile::tempdir().unwrap();
    for len in [100, LARGE] {
        let (path, _) = random_file(dir.path(), "c.tar.gz", len).await;
        let e = store
            .upload("k.tar.gz", &path, len as u64, &|_, _| {})
            .await
            .unwrap_err();
        assert!(
            matches!(e, ContextStoreError::MissingBucket { .. }),
            "{e:?}"
        );
        assert_eq!(e.to_string(), want);
    }
    store.delete("k.tar.gz").await.unwrap();
}

/// Azurite refuses a token for another audience, as Azure Storage does.
#[tokio::test]
async fn azure_refusal_names_the_credentials_and_the_role() {
    let Some(a) = azurite().await else { return };
    *a.aad.aad_storage_audience.lock().unwrap() = Some("https://management.azure.com".into());
    // A new store: a new environment, whose token cache is empty.
    let env = azure_env(&a.aad).await;
    let store = from_config_with(
        &BuildContextStore::AzureBlob {
            account: AZ_ACCOUNT.into(),
            container: a.container.clone(),
            prefix: PREFIX.into(),
        },
        Some(&env),
        &store_ambient(&a.url, &a.ca),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = random_file(dir.path(), "c.tar.gz", 100).await;
    let e = store
        .upload("k.tar.gz", &path, 100, &|_, _| {})
        .await
        .unwrap_err();
    assert!(matches!(e, ContextStoreError::Denied { .. }), "{e:?}");
    let m = e.to_string();
    assert!(
        m.starts_with(&format!(
            "uploading https://{AZ_ACCOUNT}.blob.core.windows.net/{}/{PREFIX}/k.tar.gz: Azure Storage refused the credentials from environment variables (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH) (",
            a.container
        )),
        "{m}"
    );
    assert!(
        m.ends_with("); give that identity a role with the blob write data action on the container (Storage Blob Data Contributor), or fix builder.build-context-store"),
        "{m}"
    );
    assert!(!e.is_transient());
    let issued: Vec<String> = a
        .aad
        .access_tokens
        .lock()
        .unwrap()
        .iter()
        .cloned()
        .collect();
    let mut secrets: Vec<&str> = issued.iter().map(String::as_str).collect();
    secrets.push(AZ_SECRET);
    assert_no_secret(&[&m, &format!("{e:?}"), &format!("{store:?}")], &secrets);
}

#[tokio::test]
async fn azure_unreachable_endpoint_is_named() {
    let aad = aad().await;
    let env = azure_env(&aad).await;
    let port = closed_port();
    let endpoint = format!("https://{port}/{AZ_ACCOUNT}");
    let store = from_config_with(
        &BuildContextStore::AzureBlob {
            account: AZ_ACCOUNT.into(),
            container: "ctx".into(),
            prefix: PREFIX.into(),
        },
        Some(&env),
        &Ambient::new([("AZURE_STORAGE_BLOB_ENDPOINT", endpoint.as_str())], None),
    )
    .unwrap();
    let e = store.check().await.unwrap_err();
    assert!(matches!(e, ContextStoreError::Unreachable { .. }), "{e:?}");
    let m = e.to_string();
    assert!(
        m.starts_with(&format!(
            "checking container `ctx` (https://{AZ_ACCOUNT}.blob.core.windows.net/ctx/{PREFIX}/): {endpoint} (AZURE_STORAGE_BLOB_ENDPOINT) could not be reached ("
        )),
        "{m}"
    );
    assert!(m.ends_with("); check the network and the endpoint"), "{m}");
    assert!(e.is_transient());
}

/// The store's endpoint variables follow the loopback rule, and an Azure endpoint
/// takes tokens over https only.
#[tokio::test]
async fn endpoint_overrides_are_checked() {
    let e = from_config_with(
        &BuildContextStore::Gcs {
            bucket: "b".into(),
            prefix: String::new(),
        },
        None,
        &Ambient::new([("STORAGE_EMULATOR_HOST", "gcs.example.com:4443")], None),
    )
    .unwrap_err();
    assert!(matches!(e, ContextStoreError::Config { .. }), "{e:?}");
    assert!(e.to_string().contains("plain HTTP to a remote host"), "{e}");
    let aad = aad().await;
    let env = azure_env(&aad).await;
    let e = from_config_with(
        &BuildContextStore::AzureBlob {
            account: AZ_ACCOUNT.into(),
            container: "ctx".into(),
            prefix: String::new(),
        },
        Some(&env),
        &Ambient::new(
            [(
                "AZURE_STORAGE_BLOB_ENDPOINT",
                "http://127.0.0.1:10000/devstoreaccount1",
            )],
            None,
        ),
    )
    .unwrap_err();
    assert!(e.to_string().contains("must be https://"), "{e}");
}
