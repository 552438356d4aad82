//! The server's blob store: code artifacts and run log segments, in a directory or in an
//! object store shared by every server replica.
//!
//! [`BlobStoreUrl`] is what `hoist server --blob-store` (`HOIST_BLOB_STORE`) names:
//! - `file:///PATH` (the default is `blobs/` in the data dir, or `--blob-dir`): a
//!   directory, [`fs`]. Artifacts at `sha256/<2 hex>/<62 hex>`, log segments at
//!   `logs/<run id>/<segment>` (appendable files, see [`crate::logs::FsSegments`]).
//! - `s3://BUCKET/PREFIX`, `gs://BUCKET/PREFIX`, `az://ACCOUNT/CONTAINER/PREFIX` (or
//!   `https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX`): an object store,
//!   `object` (feature `blob-cloud`, on in the `hoist` binary; without it such a URL is
//!   refused naming the feature). Objects `PREFIX/sha256/<64 hex>` and
//!   `PREFIX/logs/<run id>/<segment>`; a log segment is written once (object stores do
//!   not append), so every log append is a segment of its own.
//!
//! Uploads are first written to a local temporary file ([`BlobStore::tmp_dir`]: `tmp/`
//! in the blob directory, or `upload-tmp/` in the data dir for an object store), hashed
//! and inspected there, then handed to [`BlobStore::put_artifact`]: a directory renames
//! the file into place; an object store uploads it (one request up to
//! [`PART_SIZE`], else a multipart upload, aborted when it fails). Either way a blob is
//! complete or absent.
//!
//! Credentials and endpoints come from the environment ([`BlobEnv`]; the process's by
//! default), with each cloud's usual chain:
//! - S3: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, a profile
//!   (`AWS_PROFILE` in `~/.aws/credentials`/`config` or `AWS_SHARED_CREDENTIALS_FILE`/
//!   `AWS_CONFIG_FILE`, through aws-config), web identity
//!   (`AWS_WEB_IDENTITY_TOKEN_FILE`, EKS), the ECS container endpoint, then the instance
//!   role (IMDS); region `AWS_REGION` or `AWS_DEFAULT_REGION` (default `us-east-1`);
//!   endpoint `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL` (path-style requests).
//! - GCS: `GOOGLE_SERVICE_ACCOUNT`/`GOOGLE_APPLICATION_CREDENTIALS`, then application
//!   default credentials, then the metadata server; `STORAGE_EMULATOR_HOST` points at
//!   an emulator, which gets no token (as with Google's libraries).
//! - Azure: `AZURE_STORAGE_ACCOUNT_KEY`, else Azure AD (`AZURE_CLIENT_ID` with
//!   `AZURE_CLIENT_SECRET` or `AZURE_FEDERATED_TOKEN_FILE`, managed identity);
//!   endpoint `AZURE_STORAGE_BLOB_ENDPOINT` (the account's blob endpoint, e.g.
//!   `https://127.0.0.1:10000/devstoreaccount1`).
//!
//! Endpoint overrides are https, or plain http to a loopback host only.
//! `HOIST_STORE_CA_FILE` names a PEM file of extra root certificates for the store's
//! endpoint (a private endpoint, an emulator with its own CA). These are the variables
//! the agent's build-context stores read.
//!
//! At start the server writes, reads back and deletes a probe object
//! ([`BlobStore::check`]) and refuses to start, naming the URL and the fix, when that
//! fails. No credential is ever part of a URL, an error, a log line or `Debug` output.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use thiserror::Error;

use crate::logs::SegmentStore;

#[cfg(feature = "blob-cloud")]
mod aws_profile;
pub mod fs;
#[cfg(feature = "blob-cloud")]
mod gcs;
#[cfg(feature = "blob-cloud")]
mod object;
mod url;

pub use url::{BlobStoreUrl, FORMS};

/// Uploads up to this size are one request; larger ones go in parts of this size.
pub const PART_SIZE: usize = 8 << 20;

/// The variable naming extra root certificates (PEM) for the store's endpoint.
pub const CA_FILE_VAR: &str = "HOIST_STORE_CA_FILE";

/// A stream of a blob's bytes.
pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Error)]
pub enum BlobStoreError {
    #[error("invalid blob store URL {url}: {why}")]
    Url { url: String, why: String },
    #[error(
        "blob store {url}: this hoist server was built without the `blob-cloud` feature, so it keeps blobs in a directory only; rebuild with `--features blob-cloud` (the `hoist` binary has it by default), or use --blob-dir"
    )]
    NoCloudFeature { url: String },
    #[error("blob store {url}: {what}")]
    Config {
        url: String,
        what: String,
        #[source]
        source: Option<BoxError>,
    },
    #[error("blob store {url}: cannot {op} {key}: {source}")]
    Io {
        url: String,
        op: &'static str,
        key: String,
        #[source]
        source: io::Error,
    },
    #[error("blob store {url} is not usable: {what}: {source}; {fix}")]
    Unusable {
        url: String,
        what: &'static str,
        fix: String,
        #[source]
        source: Box<BlobStoreError>,
    },
}

impl BlobStoreError {
    /// The object or file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, BlobStoreError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// The environment the store's credentials and endpoints are read from: the process's
/// (the default), or exactly the given variables (tests). `Debug` shows names only.
#[derive(Clone, Default)]
pub struct BlobEnv {
    vars: Option<BTreeMap<String, String>>,
}

impl BlobEnv {
    /// The process's environment, read when the store is opened.
    pub fn process() -> BlobEnv {
        BlobEnv::default()
    }

    /// Exactly these variables, nothing from the process.
    pub fn only<K: Into<String>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> BlobEnv {
        BlobEnv {
            vars: Some(
                vars.into_iter()
                    .map(|(k, v)| (k.into(), v.into()))
                    .collect(),
            ),
        }
    }

    pub fn var(&self, name: &str) -> Option<String> {
        match &self.vars {
            Some(m) => m.get(name).cloned(),
            None => std::env::var(name).ok(),
        }
        .filter(|v| !v.trim().is_empty())
    }

    /// Every variable whose name starts with `prefix`.
    pub fn with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let all: Vec<(String, String)> = match &self.vars {
            Some(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            None => std::env::vars().collect(),
        };
        all.into_iter()
            .filter(|(k, v)| k.starts_with(prefix) && !v.trim().is_empty())
            .collect()
    }
}

impl fmt::Debug for BlobEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.vars {
            None => f.write_str("BlobEnv(process)"),
            Some(m) => f
                .debug_tuple("BlobEnv")
                .field(&m.keys().collect::<Vec<_>>())
                .finish(),
        }
    }
}

enum Backend {
    Fs(fs::FsBlobs),
    #[cfg(feature = "blob-cloud")]
    Object(object::ObjectBlobs),
}

/// Code artifacts and log segments, in a directory or an object store. Cheap to share
/// behind an `Arc`; `Debug` shows the URL only.
pub struct BlobStore {
    url: BlobStoreUrl,
    backend: Backend,
    tmp: PathBuf,
    segments: Arc<dyn SegmentStore>,
}

impl fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobStore")
            .field("url", &self.url.to_string())
            .finish_non_exhaustive()
    }
}

impl BlobStore {
    /// A directory store (no IO; [`BlobStore::open`] also creates its layout).
    pub fn dir(dir: impl Into<PathBuf>) -> BlobStore {
        let fs = fs::FsBlobs::new(dir.into());
        BlobStore {
            url: BlobStoreUrl::File(fs.dir().to_path_buf()),
            tmp: fs.tmp_dir(),
            segments: Arc::new(fs.segments()),
            backend: Backend::Fs(fs),
        }
    }

    /// Opens the store at `url`: a directory is created (and its stale temporary files
    /// removed); an object store client is built from `env`. `data_dir` holds the
    /// temporary files of uploads to an object store. Nothing is checked remotely; see
    /// [`BlobStore::check`].
    pub async fn open(
        url: &BlobStoreUrl,
        data_dir: &Path,
        env: &BlobEnv,
    ) -> Result<BlobStore, BlobStoreError> {
        match url {
            BlobStoreUrl::File(dir) => {
                let store = BlobStore::dir(dir.clone());
                if let Err(source) = fs::FsBlobs::new(dir.clone()).prepare().await {
                    let source = store.io_error("create", "the blob directory", source);
                    return Err(BlobStoreError::Unusable {
                        url: url.to_string(),
                        what: "the directory cannot be made ready",
                        fix: store.fix(&source),
                        source: Box::new(source),
                    });
                }
                Ok(store)
            }
            #[cfg(feature = "blob-cloud")]
            _ => {
                let tmp = data_dir.join("upload-tmp");
                fs::prepare_tmp(&tmp)
                    .await
                    .map_err(|source| BlobStoreError::Io {
                        url: url.to_string(),
                        op: "create",
                        key: format!("the upload directory {}", tmp.display()),
                        source,
                    })?;
                let obj = object::ObjectBlobs::open(url, env).await?;
                Ok(BlobStore {
                    url: url.clone(),
                    tmp,
                    segments: Arc::new(obj.segments()),
                    backend: Backend::Object(obj),
                })
            }
            #[cfg(not(feature = "blob-cloud"))]
            _ => {
                let _ = (data_dir, env);
                Err(BlobStoreError::NoCloudFeature {
                    url: url.to_string(),
                })
            }
        }
    }

    pub fn url(&self) -> &BlobStoreUrl {
        &self.url
    }

    /// Where uploads are written before [`put_artifact`](Self::put_artifact).
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Run log segments in this store.
    pub fn segments(&self) -> Arc<dyn SegmentStore> {
        self.segments.clone()
    }

    /// Writes, reads back and deletes a probe object (a directory: a probe file); the
    /// error says what failed, for which URL, and what to do.
    pub async fn check(&self) -> Result<(), BlobStoreError> {
        let key = format!("probe/{}", crate::secrets::new_id(12));
        let data = Bytes::from_static(b"hoist blob store probe\n");
        let unusable = |what: &'static str, source: BlobStoreError| {
            let fix = self.fix(&source);
            BlobStoreError::Unusable {
                url: self.url.to_string(),
                what,
                fix,
                source: Box::new(source),
            }
        };
        self.put(&key, data.clone())
            .await
            .map_err(|e| unusable("writing a probe object failed", e))?;
        let back = self
            .get_range(&key, 0..data.len() as u64)
            .await
            .map_err(|e| unusable("reading the probe object back failed", e))?;
        if back != data {
            return Err(unusable(
                "the probe object read back differs from what was written",
                self.io_error("read", &key, io::Error::other("different bytes")),
            ));
        }
        self.delete(&key)
            .await
            .map_err(|e| unusable("deleting the probe object failed", e))?;
        Ok(())
    }

    fn fix(&self, e: &BlobStoreError) -> String {
        let missing = e.is_not_found();
        match &self.url {
            BlobStoreUrl::File(p) => format!(
                "check that {} is a directory the server's user may write, or pick another with --blob-dir or --blob-store",
                p.display()
            ),
            BlobStoreUrl::S3 { bucket, .. } if missing => format!(
                "the bucket {bucket} does not exist (or is in another region: set AWS_REGION); create it or fix --blob-store"
            ),
            BlobStoreUrl::Gcs { bucket, .. } if missing => {
                format!("the bucket {bucket} does not exist; create it or fix --blob-store")
            }
            BlobStoreUrl::Azure { container, account, .. } if missing => format!(
                "the container {container} does not exist in account {account}; create it or fix --blob-store"
            ),
            BlobStoreUrl::S3 { .. } => "check the endpoint and that the server's AWS credentials (AWS_* variables, web identity or the instance role) may read, write and delete objects under the prefix".into(),
            BlobStoreUrl::Gcs { .. } => "check the endpoint and that the server's Google credentials (GOOGLE_APPLICATION_CREDENTIALS, application default credentials or the metadata server) may read, write and delete objects under the prefix (roles/storage.objectUser)".into(),
            BlobStoreUrl::Azure { .. } => "check the endpoint and that the server's Azure credentials (AZURE_STORAGE_ACCOUNT_KEY, or Azure AD with the Storage Blob Data Contributor role) may read, write and delete blobs under the prefix".into(),
        }
    }

    fn io_error(&self, op: &'static str, key: &str, source: io::Error) -> BlobStoreError {
        BlobStoreError::Io {
            url: self.url.to_string(),
            op,
            key: key.to_string(),
            source,
        }
    }

    /// The key of an artifact: `sha256/<hex>` (for a digest checked by
    /// [`crate::api::blobs::validate_digest`]).
    pub fn artifact_key(digest: &str) -> String {
        format!(
            "sha256/{}",
            digest.strip_prefix("sha256:").unwrap_or(digest)
        )
    }

    /// Stores the complete file `file` (`size` bytes, in [`tmp_dir`](Self::tmp_dir)) as
    /// the artifact `digest`, unless it is there already. Returns whether it is new.
    /// The file is moved or copied; the caller removes what is left.
    pub async fn put_artifact(
        &self,
        digest: &str,
        file: &Path,
        size: u64,
    ) -> Result<bool, BlobStoreError> {
        let key = Self::artifact_key(digest);
        let r = match &self.backend {
            Backend::Fs(fs) => fs.persist(&key, file).await,
            #[cfg(feature = "blob-cloud")]
            Backend::Object(o) => o.put_file(&key, file, size).await,
        };
        #[cfg(not(feature = "blob-cloud"))]
        let _ = size;
        r.map_err(|e| self.io_error("store", &key, e))
    }

    /// The size of an artifact, `None` when absent.
    pub async fn artifact_size(&self, digest: &str) -> Result<Option<u64>, BlobStoreError> {
        let key = Self::artifact_key(digest);
        self.size(&key).await
    }

    /// An artifact's bytes (`range`, or all), `None` when absent.
    pub async fn get_artifact(
        &self,
        digest: &str,
        range: Option<Range<u64>>,
    ) -> Result<Option<ByteStream>, BlobStoreError> {
        let key = Self::artifact_key(digest);
        let r = match &self.backend {
            Backend::Fs(fs) => fs.get(&key, range).await,
            #[cfg(feature = "blob-cloud")]
            Backend::Object(o) => o.get(&key, range).await,
        };
        match r {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_error("read", &key, e)),
        }
    }

    /// Deletes an artifact; absent is not an error.
    pub async fn delete_artifact(&self, digest: &str) -> Result<(), BlobStoreError> {
        let key = Self::artifact_key(digest);
        self.delete(&key).await
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, BlobStoreError> {
        let r = match &self.backend {
            Backend::Fs(fs) => fs.size(key).await,
            #[cfg(feature = "blob-cloud")]
            Backend::Object(o) => o.size(key).await,
        };
        r.map_err(|e| self.io_error("look up", key, e))
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), BlobStoreError> {
        let r = match &self.backend {
            Backend::Fs(fs) => fs.put(key, data).await,
            #[cfg(feature = "blob-cloud")]
            Backend::Object(o) => o.put(key, data).await,
        };
        r.map_err(|e| self.io_error("write", key, e))
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, BlobStoreError> {
        let r = match &self.backend {
            Backend::Fs(fs) => fs.get_range(key, range).await,
            #[cfg(feature = "blob-cloud")]
            Backend::Object(o) => o.get_range(key, range).await,
        };
        r.map_err(|e| self.io_error("read", key, e))
    }

    async fn delete(&self, key: &str) -> Result<(), BlobStoreError> {
        let r = match &self.backend {
            Backend::Fs(fs) => fs.delete(key).await,
            #[cfg(feature = "blob-cloud")]
            Backend::Object(o) => o.delete(key).await,
        };
        r.map_err(|e| self.io_error("delete", key, e))
    }
}

/// Checks a log segment key (`<run id>/<name>`) or run id: ASCII letters, digits, `-`,
/// `_`, `.`, no empty, `.` or `..` part. Keys are made by the server; this keeps
/// anything else out of the store all the same.
pub(crate) fn check_segment_key(key: &str, parts: usize) -> io::Result<()> {
    let ok = !key.is_empty()
        && key.split('/').count() == parts
        && key.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        });
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid log segment key {key:?}"),
        ))
    }
}

#[cfg(all(test, not(feature = "blob-cloud")))]
mod tests {
    use super::*;

    /// Without the feature, a cloud URL parses but is refused naming the feature.
    #[tokio::test]
    async fn cloud_urls_need_the_feature() {
        let dir = tempfile::tempdir().unwrap();
        for url in ["s3://bucket/p", "gs://bucket/p", "az://acct1/c1c/p"] {
            let url = BlobStoreUrl::parse(url).unwrap();
            let e = BlobStore::open(&url, dir.path(), &BlobEnv::only::<&str, &str>([]))
                .await
                .unwrap_err()
                .to_string();
            assert!(e.contains("without the `blob-cloud` feature"), "{e}");
            assert!(e.contains(&url.to_string()), "{e}");
        }
    }
}
