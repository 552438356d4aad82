//! GCS build contexts: Cloud Storage's JSON API on reqwest, with the `gcp`
//! environment's OAuth access token (hoist's GCP environment and Artifact Registry are
//! hand-written the same way; the official client would add tonic, prost and its own
//! auth).
//!
//! - bucket check: `GET /storage/v1/b/B?fields=name`;
//! - size: `GET /storage/v1/b/B/o/NAME?fields=size`;
//! - upload below [`PART_SIZE`]: `POST /upload/storage/v1/b/B/o?uploadType=media`;
//!   above: a resumable upload (`POST …?uploadType=resumable` gives a session URL, then
//!   `PUT`s of [`PART_SIZE`] with `Content-Range`, answered `308` until the last,
//!   `200`/`201`). A chunk that fails transiently is resumed from the offset the
//!   session says it persisted. A failed or dropped upload's session is cancelled
//!   (`DELETE` on the session URL); an unfinished session never becomes an object;
//! - delete: `DELETE /storage/v1/b/B/o/NAME` (404: absent, fine).
//!
//! `STORAGE_EMULATOR_HOST` (`host:port` or a URL; Google's variable) points the client
//! at an emulator, to which, as Google's libraries do, no token is sent. Errors come
//! from Google's JSON error bodies (`{"error": {"code": …, "message": …}}`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use tokio::sync::OnceCell;

use super::{
    ContextStore, ContextStoreError, Operation, PART_SIZE, Parts, doing, http_client, object_name,
};
use crate::environments::gcp::GcpEnvironment;
use crate::environments::http::{
    RETRY_ATTEMPTS, cause, endpoint_url, google_error_body, retry_transient,
};
use crate::environments::{Ambient, Secret};

/// Cloud Storage's endpoint.
pub const GOOGLE_BASE: &str = "https://storage.googleapis.com";
const CONTENT_TYPE: &str = "application/gzip";
/// Google's emulator variable.
pub const EMULATOR_VAR: &str = "STORAGE_EMULATOR_HOST";

/// How requests are authorized.
#[derive(Clone)]
pub enum Auth {
    /// No token (an emulator).
    Anonymous,
    /// The `gcp` environment's OAuth access token.
    Environment(GcpEnvironment),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Anonymous => f.write_str("Anonymous"),
            Auth::Environment(g) => write!(f, "Environment({})", g.credentials_from()),
        }
    }
}

/// `STORAGE_EMULATOR_HOST` as a base URL (`host:port` means `http://host:port`), when
/// set: https, or http to a loopback host only.
pub fn emulator_base(ambient: &Ambient) -> Result<Option<String>, ContextStoreError> {
    let Some(v) = ambient.var(EMULATOR_VAR) else {
        return Ok(None);
    };
    let v = v.trim();
    let with_scheme = if v.contains("://") {
        v.to_string()
    } else {
        format!("http://{v}")
    };
    let url = endpoint_url(&with_scheme, EMULATOR_VAR).map_err(|e| ContextStoreError::Config {
        message: format!("gs:// build context store: {e}"),
        source: Some(Box::new(e)),
    })?;
    Ok(Some(url.as_str().trim_end_matches('/').to_string()))
}

/// A bucket and prefix in Cloud Storage.
pub struct GcsStore {
    bucket: String,
    prefix: String,
    base: url::Url,
    auth: Auth,
    ca_file: Option<PathBuf>,
    http: OnceCell<reqwest::Client>,
}

impl std::fmt::Debug for GcsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsStore")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("base", &self.base.as_str())
            .field("auth", &self.auth)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

/// What the store says about a failed answer: Google's message, else the start of the
/// body.
fn reason(status: StatusCode, body: &str) -> String {
    if let Some(b) = google_error_body(body) {
        let code = b.code.unwrap_or_else(|| status.as_u16().to_string());
        return format!("HTTP {code}: {}", b.message.trim());
    }
    let snippet: String = body.trim().chars().take(200).collect();
    if snippet.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {snippet}")
    }
}

impl GcsStore {
    /// The store `gs://bucket/prefix/` on `base` (Cloud Storage's endpoint or an
    /// emulator's). Calls nothing yet.
    pub fn new(
        bucket: String,
        prefix: String,
        base: &str,
        auth: Auth,
        ca_file: Option<PathBuf>,
    ) -> Result<GcsStore, ContextStoreError> {
        let base = endpoint_url(base, "the Cloud Storage endpoint").map_err(|e| {
            ContextStoreError::Config {
                message: format!("gs://{bucket}/: {e}"),
                source: Some(Box::new(e)),
            }
        })?;
        Ok(GcsStore {
            bucket,
            prefix: prefix.trim_matches('/').to_string(),
            base,
            auth,
            ca_file,
            http: OnceCell::new(),
        })
    }

    fn store_url(&self) -> String {
        if self.prefix.is_empty() {
            format!("gs://{}/", self.bucket)
        } else {
            format!("gs://{}/{}/", self.bucket, self.prefix)
        }
    }

    async fn http(&self) -> Result<&reqwest::Client, ContextStoreError> {
        self.http
            .get_or_try_init(|| http_client(self.ca_file.as_deref(), self.store_url()))
            .await
    }

    /// `base` + the path segments (each percent-encoded, `/` included).
    fn url(&self, segments: &[&str]) -> url::Url {
        let mut u = self.base.clone();
        if let Ok(mut p) = u.path_segments_mut() {
            p.pop_if_empty();
            p.extend(segments);
        }
        u
    }

    fn bucket_url(&self) -> url::Url {
        self.url(&["storage", "v1", "b", &self.bucket])
    }

    fn object_api_url(&self, key: &str) -> url::Url {
        let name = object_name(&self.prefix, key);
        self.url(&["storage", "v1", "b", &self.bucket, "o", &name])
    }

    fn upload_url(&self, key: &str, kind: &str) -> url::Url {
        let mut u = self.url(&["upload", "storage", "v1", "b", &self.bucket, "o"]);
        u.query_pairs_mut()
            .append_pair("uploadType", kind)
            .append_pair("name", &object_name(&self.prefix, key));
        u
    }

    async fn token(
        &self,
        op: Operation,
        key: Option<&str>,
    ) -> Result<Option<Secret>, ContextStoreError> {
        match &self.auth {
            Auth::Anonymous => Ok(None),
            Auth::Environment(g) => {
                g.access_token()
                    .await
                    .map(Some)
                    .map_err(|source| ContextStoreError::Credentials {
                        message: format!(
                            "{}: no access token from the gcp environment: {source}",
                            self.doing(op, key)
                        ),
                        source,
                    })
            }
        }
    }

    fn doing(&self, op: Operation, key: Option<&str>) -> String {
        let object = key.map(|k| self.object_url(k)).unwrap_or_default();
        doing(
            op,
            &format!("bucket `{}`", self.bucket),
            &self.store_url(),
            &object,
        )
    }

    /// Sends one request (built afresh by `build`), authorized; a request that got no
    /// answer is [`ContextStoreError::Unreachable`].
    async fn send(
        &self,
        op: Operation,
        key: Option<&str>,
        build: impl FnOnce(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ContextStoreError> {
        let token = self.token(op, key).await?;
        let http = self.http().await?;
        let mut req = build(http);
        if let Some(t) = &token {
            req = req.bearer_auth(t.expose());
        }
        req.send().await.map_err(|e| self.unreachable(op, key, e))
    }

    fn unreachable(
        &self,
        op: Operation,
        key: Option<&str>,
        e: reqwest::Error,
    ) -> ContextStoreError {
        let endpoint = match &self.auth {
            Auth::Anonymous => format!(
                "{} ({EMULATOR_VAR})",
                self.base.as_str().trim_end_matches('/')
            ),
            Auth::Environment(_) => self.base.as_str().trim_end_matches('/').to_string(),
        };
        ContextStoreError::Unreachable {
            message: format!(
                "{}: {endpoint} could not be reached ({}); check the network and the endpoint",
                self.doing(op, key),
                cause(&e)
            ),
            source: Box::new(e),
        }
    }

    /// The error for a non-success answer `status` with `body` to `op`.
    fn status_error(
        &self,
        op: Operation,
        key: Option<&str>,
        status: StatusCode,
        body: &str,
    ) -> ContextStoreError {
        let what = self.doing(op, key);
        let why = reason(status, body);
        match status.as_u16() {
            // For a check or an upload, a 404 is the bucket (an object need not exist).
            404 if matches!(op, Operation::Check | Operation::Upload) => {
                ContextStoreError::MissingBucket {
                    message: format!(
                        "bucket `{}` does not exist ({}): create it or fix builder.build-context-store ({why})",
                        self.bucket,
                        self.store_url()
                    ),
                    source: None,
                }
            }
            401 | 403 => {
                let who = match &self.auth {
                    Auth::Anonymous => {
                        format!("an anonymous request ({EMULATOR_VAR} is set, so no token is sent)")
                    }
                    Auth::Environment(g) => {
                        format!("the credentials from {}", g.credentials_from())
                    }
                };
                let permission = match op {
                    Operation::Check => "storage.buckets.get",
                    Operation::Size => "storage.objects.get",
                    Operation::Upload => {
                        "storage.objects.create (and storage.objects.delete, to replace)"
                    }
                    Operation::Delete => "storage.objects.delete",
                };
                ContextStoreError::Denied {
                    message: format!(
                        "{what}: Cloud Storage refused {who} ({why}); grant {permission} on the bucket to that identity (e.g. roles/storage.objectAdmin), or fix builder.build-context-store"
                    ),
                    source: None,
                }
            }
            s => {
                let hint = if crate::environments::http::transient_status(s) {
                    "; try again later"
                } else {
                    ""
                };
                ContextStoreError::Status {
                    message: format!("{what}: Cloud Storage answered {why}{hint}"),
                    status: s,
                    source: None,
                }
            }
        }
    }

    /// The body of a failed answer (empty if it cannot be read).
    async fn fail(
        &self,
        op: Operation,
        key: Option<&str>,
        resp: reqwest::Response,
    ) -> ContextStoreError {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        self.status_error(op, key, status, &body)
    }

    /// A resumable upload of `parts` in chunks of [`PART_SIZE`].
    async fn resumable(
        &self,
        key: &str,
        mut parts: Parts,
        len: u64,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<(), ContextStoreError> {
        let op = Operation::Upload;
        let init = self.upload_url(key, "resumable");
        let resp = self
            .send(op, Some(key), |h| {
                h.post(init)
                    .header("X-Upload-Content-Type", CONTENT_TYPE)
                    .header("X-Upload-Content-Length", len.to_string())
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/json; charset=UTF-8",
                    )
                    .body("{}")
            })
            .await?;
        if !resp.status().is_success() {
            return Err(self.fail(op, Some(key), resp).await);
        }
        let session = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| url::Url::parse(v).ok());
        // The session URL is where the context's bytes go: it must be the store's own
        // endpoint.
        let session = match session {
            Some(s) if s.origin() == self.base.origin() => s,
            other => {
                return Err(ContextStoreError::Unreadable {
                    message: format!(
                        "{}: Cloud Storage answered the resumable upload without a session URL on {} ({})",
                        self.doing(op, Some(key)),
                        self.base.origin().ascii_serialization(),
                        match other {
                            Some(u) => format!("got one on {}", u.origin().ascii_serialization()),
                            None => "none".to_string(),
                        }
                    ),
                    source: None,
                });
            }
        };
        let http = self.http().await?.clone();
        let mut guard = CancelOnDrop {
            http: http.clone(),
            session: Some(session.clone()),
        };
        match self
            .chunks(&http, key, &session, &mut parts, len, progress)
            .await
        {
            Ok(()) => {
                guard.session = None;
                Ok(())
            }
            Err(e) => {
                if let Some(s) = guard.session.take() {
                    cancel(&http, s).await;
                }
                Err(e)
            }
        }
    }

    async fn chunks(
        &self,
        http: &reqwest::Client,
        key: &str,
        session: &url::Url,
        parts: &mut Parts,
        len: u64,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<(), ContextStoreError> {
        let op = Operation::Upload;
        let mut failures = 0;
        let mut pause = Duration::from_millis(200);
        loop {
            let start = parts.offset();
            let Some(chunk) = parts.next(PART_SIZE).await? else {
                return Err(ContextStoreError::Unreadable {
                    message: format!(
                        "{}: Cloud Storage did not finish the upload after all {len} bytes were sent",
                        self.doing(op, Some(key))
                    ),
                    source: None,
                });
            };
            let end = start + chunk.len() as u64;
            let sent = http
                .put(session.clone())
                .header(
                    reqwest::header::CONTENT_RANGE,
                    format!("bytes {start}-{}/{len}", end - 1),
                )
                .body(chunk)
                .send()
                .await;
            let outcome = match sent {
                Ok(resp) if resp.status().is_success() => {
                    progress(len, len);
                    return Ok(());
                }
                Ok(resp) if resp.status().as_u16() == 308 => Ok(persisted(&resp)),
                Ok(resp) => Err(self.fail(op, Some(key), resp).await),
                Err(e) => Err(self.unreachable(op, Some(key), e)),
            };
            match outcome {
                Ok(at) => {
                    failures = 0;
                    if at != end {
                        parts.seek(at).await?;
                    }
                    progress(at, len);
                }
                Err(e) if e.is_transient() && failures + 1 < RETRY_ATTEMPTS => {
                    failures += 1;
                    tracing::debug!(
                        message = "A chunk of a resumable upload failed; resuming.",
                        error = %e,
                        failures,
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                    // Where the session stands: `bytes */len` asks without data.
                    let status = http
                        .put(session.clone())
                        .header(reqwest::header::CONTENT_RANGE, format!("bytes */{len}"))
                        .body(Vec::new())
                        .send()
                        .await;
                    match status {
                        Ok(resp) if resp.status().is_success() => {
                            progress(len, len);
                            return Ok(());
                        }
                        Ok(resp) if resp.status().as_u16() == 308 => {
                            parts.seek(persisted(&resp)).await?;
                        }
                        // Ask again on the next turn, from where we were.
                        _ => parts.seek(start).await?,
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The bytes a resumable session persisted, from a 308's `Range: bytes=0-N` (none: 0).
fn persisted(resp: &reqwest::Response) -> u64 {
    resp.headers()
        .get(reqwest::header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes=0-"))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .map_or(0, |last| last + 1)
}

/// Cancels a resumable session when dropped unfinished (the upload's future was
/// dropped): in a task of its own, since a drop cannot wait.
struct CancelOnDrop {
    http: reqwest::Client,
    session: Option<url::Url>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let http = self.http.clone();
            rt.spawn(async move { cancel(&http, session).await });
        }
    }
}

/// `DELETE` on a resumable session's URL: Cloud Storage forgets the bytes it has
/// (answering 499). An unfinished session is never an object, so a failure here
/// leaves nothing visible either.
async fn cancel(http: &reqwest::Client, session: url::Url) {
    let r = http
        .request(Method::DELETE, session)
        .header(reqwest::header::CONTENT_LENGTH, "0")
        .send()
        .await;
    if let Err(e) = r {
        tracing::debug!(message = "A resumable upload could not be cancelled.", error = %cause(&e));
    }
}

#[async_trait]
impl ContextStore for GcsStore {
    fn describe(&self) -> String {
        self.store_url()
    }

    fn object_url(&self, key: &str) -> String {
        format!("gs://{}/{}", self.bucket, object_name(&self.prefix, key))
    }

    async fn check(&self) -> Result<(), ContextStoreError> {
        let op = Operation::Check;
        retry_transient(
            "gcs bucket check",
            ContextStoreError::is_transient,
            || async {
                let mut url = self.bucket_url();
                url.query_pairs_mut().append_pair("fields", "name");
                let resp = self.send(op, None, |h| h.get(url)).await?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(self.fail(op, None, resp).await)
                }
            },
        )
        .await
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, ContextStoreError> {
        let op = Operation::Size;
        retry_transient(
            "gcs object size",
            ContextStoreError::is_transient,
            || async {
                let mut url = self.object_api_url(key);
                url.query_pairs_mut().append_pair("fields", "size");
                let resp = self.send(op, Some(key), |h| h.get(url)).await?;
                if resp.status() == StatusCode::NOT_FOUND {
                    return Ok(None);
                }
                if !resp.status().is_success() {
                    return Err(self.fail(op, Some(key), resp).await);
                }
                #[derive(serde::Deserialize)]
                struct Object {
                    size: serde_json::Value,
                }
                let unreadable = |why: String| ContextStoreError::Unreadable {
                    message: format!(
                        "{}: Cloud Storage answered an object without a size ({why})",
                        self.doing(op, Some(key))
                    ),
                    source: None,
                };
                let body = resp
                    .text()
                    .await
                    .map_err(|e| self.unreachable(op, Some(key), e))?;
                let o: Object =
                    serde_json::from_str(&body).map_err(|e| unreadable(e.to_string()))?;
                // The JSON API writes 64-bit integers as strings.
                let n = match &o.size {
                    serde_json::Value::String(s) => s.parse::<u64>().ok(),
                    serde_json::Value::Number(n) => n.as_u64(),
                    _ => None,
                };
                n.map(Some)
                    .ok_or_else(|| unreadable(format!("size {}", o.size)))
            },
        )
        .await
    }

    async fn upload(
        &self,
        key: &str,
        file: &Path,
        len: u64,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<(), ContextStoreError> {
        let mut parts = Parts::open(file, len).await?;
        if len > PART_SIZE {
            return self.resumable(key, parts, len, progress).await;
        }
        let op = Operation::Upload;
        let body = parts.next(PART_SIZE).await?.unwrap_or_default();
        let url = self.upload_url(key, "media");
        let resp = self
            .send(op, Some(key), |h| {
                h.post(url)
                    .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                    .body(body)
            })
            .await?;
        if !resp.status().is_success() {
            return Err(self.fail(op, Some(key), resp).await);
        }
        progress(len, len);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), ContextStoreError> {
        let op = Operation::Delete;
        retry_transient("gcs delete", ContextStoreError::is_transient, || async {
            let url = self.object_api_url(key);
            let resp = self.send(op, Some(key), |h| h.delete(url)).await?;
            // 404: absent (or no bucket): nothing is there.
            if resp.status().is_success() || resp.status() == StatusCode::NOT_FOUND {
                Ok(())
            } else {
                Err(self.fail(op, Some(key), resp).await)
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_error_bodies() {
        assert_eq!(
            reason(
                StatusCode::FORBIDDEN,
                r#"{"error":{"code":403,"message":"sa@p.iam.gserviceaccount.com does not have storage.objects.create access to the Google Cloud Storage object.","errors":[{"reason":"forbidden"}]}}"#
            ),
            "HTTP 403: sa@p.iam.gserviceaccount.com does not have storage.objects.create access to the Google Cloud Storage object."
        );
        assert_eq!(reason(StatusCode::BAD_GATEWAY, ""), "HTTP 502 Bad Gateway");
    }

    #[test]
    fn emulator_hosts() {
        let amb = |v: &str| Ambient::new([(EMULATOR_VAR, v)], None);
        assert_eq!(
            emulator_base(&amb("127.0.0.1:4443")).unwrap().as_deref(),
            Some("http://127.0.0.1:4443")
        );
        assert_eq!(
            emulator_base(&amb("http://localhost:9023/"))
                .unwrap()
                .as_deref(),
            Some("http://localhost:9023")
        );
        let e = emulator_base(&amb("gcs.example.com:4443")).unwrap_err();
        assert!(e.to_string().contains("plain HTTP to a remote host"), "{e}");
        assert_eq!(emulator_base(&Ambient::default()).unwrap(), None);
    }

    #[test]
    fn object_urls_encode_the_name() {
        let s = GcsStore::new(
            "b".into(),
            "ctx/x".into(),
            "http://127.0.0.1:1",
            Auth::Anonymous,
            None,
        )
        .unwrap();
        assert_eq!(
            s.object_api_url("k.tar.gz").as_str(),
            "http://127.0.0.1:1/storage/v1/b/b/o/ctx%2Fx%2Fk.tar.gz"
        );
        assert_eq!(
            s.upload_url("k.tar.gz", "media").as_str(),
            "http://127.0.0.1:1/upload/storage/v1/b/b/o?uploadType=media&name=ctx%2Fx%2Fk.tar.gz"
        );
        assert_eq!(s.object_url("k.tar.gz"), "gs://b/ctx/x/k.tar.gz");
    }
}
