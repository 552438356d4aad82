//! Build-context stores: where an in-cluster builder (kaniko, buildah) reads the packed
//! build context from (`builder.build-context-store`).
//!
//! - [`s3`] (feature `aws`): aws-sdk-s3 with the `aws` environment's credential chain;
//!   multipart uploads (aborted when they fail or are dropped).
//! - [`gcs`] (feature `gcp`): Cloud Storage's JSON API on reqwest with the `gcp`
//!   environment's OAuth token; resumable uploads (cancelled when they fail or are
//!   dropped).
//! - [`azure`] (feature `azure`): azure_storage_blob with the `azure` environment's
//!   Azure AD token for `https://storage.azure.com/.default`; block blobs (staged
//!   blocks are never visible until the block list is committed).
//!
//! [`from_config`] builds the store for the configured URL and the agent's
//! environment; a store that does not match the environment (`gs://` with
//! `environment: aws`), or that needs an environment the config lacks, is refused
//! with the fix. [`ensure_uploaded`] is the dedup the builders use: an object of the
//! same key and size is not uploaded again (keys are content hashes, `<tag>.tar.gz`).
//!
//! Uploads below [`PART_SIZE`] are one request; larger ones go in parts of
//! [`PART_SIZE`], the progress callback called after each. An upload that fails or is
//! dropped leaves no object behind.
//!
//! Endpoint overrides (tests, emulators, private endpoints), read from the
//! [`Ambient`] like the environments' own (https, or plain http to a loopback host
//! only):
//! - S3: `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL` (the SDKs' variables, as the
//!   `aws` environment reads them), with path-style addressing;
//! - GCS: `STORAGE_EMULATOR_HOST` (Google's variable; as Google's libraries do, no
//!   token is sent to an emulator);
//! - Azure: `AZURE_STORAGE_BLOB_ENDPOINT` (hoist's), the account's blob endpoint, e.g.
//!   `https://127.0.0.1:10000/devstoreaccount1`.
//!
//! `HOIST_STORE_CA_FILE` names a PEM file of extra root certificates trusted for the
//! store's endpoint, on top of the system's (a private endpoint, an emulator with its
//! own CA). `SSL_CERT_FILE` replaces the system's roots for every HTTPS client of the
//! agent instead.
//!
//! Errors ([`ContextStoreError`]) name the store's URL, the operation and what to do;
//! they never contain a credential (the stores' `Debug` neither).

// The shared helpers serve the stores of the features built.
#![cfg_attr(not(all(feature = "aws", feature = "gcp")), allow(dead_code))]

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::config::{BuildContextStore, EnvironmentType};
use crate::environments::{Ambient, BoxError, EnvError, Environment};

#[cfg(feature = "azure")]
pub mod azure;
#[cfg(feature = "gcp")]
pub mod gcs;
#[cfg(feature = "aws")]
pub mod s3;

/// The size of an upload's parts; smaller contexts go in one request.
pub const PART_SIZE: u64 = 8 << 20;

/// The variable naming extra root certificates (PEM) for the store's endpoint.
pub const CA_FILE_VAR: &str = "HOIST_STORE_CA_FILE";

/// Where a build context goes for an in-cluster builder (`builder.build-context-store`).
#[async_trait]
pub trait ContextStore: Send + Sync + std::fmt::Debug {
    /// The store as configured (`s3://bucket/prefix/`), for messages.
    fn describe(&self) -> String;
    /// The URL the executor reads `key` from (kaniko's `--context`): `s3://b/p/key`,
    /// `gs://b/p/key`, `https://acct.blob.core.windows.net/c/p/key` (with an endpoint
    /// override in tests, still this canonical form).
    fn object_url(&self, key: &str) -> String;
    /// The bucket/container exists and we may use it (agent start; a failure is a
    /// warning there).
    async fn check(&self) -> Result<(), ContextStoreError>;
    /// Size of `key` if present (dedup: present with the same size → no upload).
    async fn size(&self, key: &str) -> Result<Option<u64>, ContextStoreError>;
    /// Uploads `file` (`len` bytes) as `key`: one request below [`PART_SIZE`], else
    /// parts of [`PART_SIZE`] (GCS: a resumable upload in chunks of that size);
    /// `progress(sent, total)` after each part. A failed or dropped upload leaves no
    /// partial object (the multipart upload is aborted, etc.).
    async fn upload(
        &self,
        key: &str,
        file: &Path,
        len: u64,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<(), ContextStoreError>;
    /// Deletes `key`; absent is Ok (so is a missing bucket: nothing is there).
    async fn delete(&self, key: &str) -> Result<(), ContextStoreError>;
}

/// Uploads `file` as `key` unless the store already has an object of that key and
/// `len` bytes (keys are content hashes). Returns whether it uploaded.
pub async fn ensure_uploaded(
    store: &dyn ContextStore,
    key: &str,
    file: &Path,
    len: u64,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<bool, ContextStoreError> {
    if store.size(key).await? == Some(len) {
        return Ok(false);
    }
    store.upload(key, file, len, progress).await?;
    Ok(true)
}

/// What a store was doing when it failed, for messages and for the permission it
/// needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// The bucket/container check.
    Check,
    /// Reading an object's size.
    Size,
    Upload,
    Delete,
}

/// Why a store could not do what was asked. Messages name the store's URL, the
/// operation and what to do; they never hold a credential. Each variant keeps its
/// cause as [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
pub enum ContextStoreError {
    /// The store cannot be used as configured: it does not match the environment, this
    /// build lacks its feature, an endpoint override or CA file is not usable.
    #[error("{message}")]
    Config {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The bucket (container) does not exist.
    #[error("{message}")]
    MissingBucket {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The store refused the credentials or the action (401, 403).
    #[error("{message}")]
    Denied {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The environment gave no credentials (none found, refused by the token service,
    /// its endpoint unreachable).
    #[error("{message}")]
    Credentials {
        message: String,
        #[source]
        source: EnvError,
    },
    /// No answer from the store: connect, TLS, timeout, a connection broken mid-way.
    #[error("{message}")]
    Unreachable {
        message: String,
        #[source]
        source: BoxError,
    },
    /// The store answered another error (a 5xx, a 429, an unexpected status).
    #[error("{message}")]
    Status {
        message: String,
        status: u16,
        #[source]
        source: Option<BoxError>,
    },
    /// The store answered something that is not what its API documents.
    #[error("{message}")]
    Unreadable {
        message: String,
        #[source]
        source: Option<BoxError>,
    },
    /// The local file to upload could not be read (or is shorter than said).
    #[error("{message}")]
    File {
        message: String,
        #[source]
        source: std::io::Error,
    },
}

impl ContextStoreError {
    /// Worth trying again shortly: no answer, a 5xx/429/408, a transient failure to
    /// get a token. Never a missing bucket, a refusal or a configuration problem.
    pub fn is_transient(&self) -> bool {
        match self {
            ContextStoreError::Unreachable { .. } => true,
            ContextStoreError::Status { status, .. } => {
                crate::environments::http::transient_status(*status)
            }
            ContextStoreError::Credentials { source, .. } => source.is_transient(),
            ContextStoreError::Config { .. }
            | ContextStoreError::MissingBucket { .. }
            | ContextStoreError::Denied { .. }
            | ContextStoreError::Unreadable { .. }
            | ContextStoreError::File { .. } => false,
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> ContextStoreError {
        ContextStoreError::Config {
            message: message.into(),
            source: None,
        }
    }
}

/// The store `store` describes, with credentials from `env` and endpoint overrides
/// from the agent process's environment.
pub fn from_config(
    store: &BuildContextStore,
    env: Option<&Arc<dyn Environment>>,
) -> Result<Arc<dyn ContextStore>, ContextStoreError> {
    from_config_with(store, env, &Ambient::process())
}

/// [`from_config`] with endpoint overrides and the CA file read from `ambient`. Reads
/// no file and calls nothing yet (the CA file is read on first use).
pub fn from_config_with(
    store: &BuildContextStore,
    env: Option<&Arc<dyn Environment>>,
    ambient: &Ambient,
) -> Result<Arc<dyn ContextStore>, ContextStoreError> {
    let cloud = store.cloud();
    let env = match env {
        Some(e) if e.kind() == cloud => Some(e),
        Some(e) => return Err(mismatch(store, Some(e.kind()))),
        None => None,
    };
    let ca_file = ambient.var(CA_FILE_VAR).map(std::path::PathBuf::from);
    match store {
        #[cfg(feature = "aws")]
        BuildContextStore::S3 { bucket, prefix } => {
            let env = env.ok_or_else(|| mismatch(store, None))?;
            let aws = env
                .as_any()
                .downcast_ref::<crate::environments::aws::AwsEnvironment>()
                .ok_or_else(|| mismatch(store, None))?;
            Ok(Arc::new(s3::S3Store::new(
                aws,
                bucket.clone(),
                prefix.clone(),
                ca_file,
            )))
        }
        #[cfg(feature = "gcp")]
        BuildContextStore::Gcs { bucket, prefix } => {
            let emulator = gcs::emulator_base(ambient)?;
            let gcp = env.and_then(|e| {
                e.as_any()
                    .downcast_ref::<crate::environments::gcp::GcpEnvironment>()
                    .cloned()
            });
            let auth = match (emulator.is_some(), gcp) {
                // Google's libraries send no token to an emulator.
                (true, _) => gcs::Auth::Anonymous,
                (false, Some(g)) => gcs::Auth::Environment(g),
                (false, None) => return Err(mismatch(store, None)),
            };
            let base = emulator.unwrap_or_else(|| gcs::GOOGLE_BASE.to_string());
            gcs::GcsStore::new(bucket.clone(), prefix.clone(), &base, auth, ca_file)
                .map(|s| Arc::new(s) as Arc<dyn ContextStore>)
        }
        #[cfg(feature = "azure")]
        BuildContextStore::AzureBlob {
            account,
            container,
            prefix,
        } => {
            let env = env.ok_or_else(|| mismatch(store, None))?;
            let az = env
                .as_any()
                .downcast_ref::<crate::environments::azure::AzureEnvironment>()
                .cloned()
                .ok_or_else(|| mismatch(store, None))?;
            let endpoint = azure::endpoint(account, ambient)?;
            Ok(Arc::new(azure::AzureBlobStore::new(
                account.clone(),
                container.clone(),
                prefix.clone(),
                endpoint,
                az,
                ca_file,
            )))
        }
        #[allow(unreachable_patterns)]
        other => {
            let _ = (env, ca_file);
            let k = other.cloud().as_str();
            Err(ContextStoreError::config(format!(
                "build context store {}: this hoist was built without the `{k}` feature of hoist-agent; rebuild with `--features {k}` (it is on by default)",
                other.uri()
            )))
        }
    }
}

/// A store whose cloud is not the environment's (`have`), or that needs an
/// environment the config lacks (`None`).
fn mismatch(store: &BuildContextStore, have: Option<EnvironmentType>) -> ContextStoreError {
    let need = store.cloud();
    let what = match store {
        BuildContextStore::S3 { .. } => "an S3 bucket",
        BuildContextStore::Gcs { .. } => "a GCS bucket",
        BuildContextStore::AzureBlob { .. } => "an Azure Blob container",
    };
    let message = match have {
        Some(have) => format!(
            "builder.build-context-store {} is {what}, but environment.type is {}, whose credentials cannot use it; use {} with {} {} environment, or set environment.type: {}",
            store.uri(),
            have.as_str(),
            form(have),
            article(have),
            have.as_str(),
            need.as_str(),
        ),
        None => format!(
            "builder.build-context-store {} is {what}, which hoist reaches with the credentials of {} `{}` environment, but the agent config has none; add `environment: {{type: {}, …}}`",
            store.uri(),
            article(need),
            need.as_str(),
            need.as_str(),
        ),
    };
    ContextStoreError::config(message)
}

fn form(env: EnvironmentType) -> &'static str {
    match env {
        EnvironmentType::Aws => "s3://BUCKET/PREFIX",
        EnvironmentType::Gcp => "gs://BUCKET/PREFIX",
        EnvironmentType::Azure => "https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX",
    }
}

fn article(env: EnvironmentType) -> &'static str {
    match env {
        EnvironmentType::Aws | EnvironmentType::Azure => "an",
        EnvironmentType::Gcp => "a",
    }
}

/// `prefix/key` (`key` alone without a prefix).
pub(crate) fn object_name(prefix: &str, key: &str) -> String {
    let key = key.trim_start_matches('/');
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{}/{key}", prefix.trim_end_matches('/'))
    }
}

/// Reads the CA file (PEM) for the store's endpoint; `what` names the store.
pub(crate) async fn read_ca_file(path: &Path, what: &str) -> Result<Vec<u8>, ContextStoreError> {
    let pem = tokio::fs::read(path)
        .await
        .map_err(|source| ContextStoreError::File {
            message: format!(
                "{what}: {CA_FILE_VAR} ({}) cannot be read: {source}; point it at a PEM file of CA certificates or unset it",
                path.display()
            ),
            source,
        })?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(ContextStoreError::config(format!(
            "{what}: {CA_FILE_VAR} ({}) holds no PEM certificate (-----BEGIN CERTIFICATE-----); point it at a PEM file of CA certificates or unset it",
            path.display()
        )));
    }
    Ok(pem)
}

/// A reqwest client for a store: bounded connect time, a generous total (8 MiB parts
/// on a slow link), no redirects, the CA file's roots added to the system's.
#[cfg(any(feature = "gcp", feature = "azure"))]
pub(crate) async fn http_client(
    ca_file: Option<&Path>,
    what: String,
) -> Result<reqwest::Client, ContextStoreError> {
    let mut b = reqwest::Client::builder()
        .user_agent(crate::environments::http::USER_AGENT)
        .connect_timeout(std::time::Duration::from_secs(5))
        .read_timeout(std::time::Duration::from_secs(120))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(path) = ca_file {
        let pem = read_ca_file(path, &what).await?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ContextStoreError::Config {
                message: format!(
                    "{what}: {CA_FILE_VAR} ({}) is not a PEM bundle of certificates: {e}",
                    path.display()
                ),
                source: Some(Box::new(e)),
            })?;
        b = b.tls_certs_merge(certs);
    }
    b.build().map_err(|e| ContextStoreError::Config {
        message: format!("{what}: the HTTP client cannot be set up: {e}"),
        source: Some(Box::new(e)),
    })
}

/// The file being uploaded, read part by part. A file shorter than the length the
/// caller gave is an error (it changed under the upload).
pub(crate) struct Parts {
    file: tokio::fs::File,
    path: std::path::PathBuf,
    len: u64,
    offset: u64,
}

impl Parts {
    pub(crate) async fn open(path: &Path, len: u64) -> Result<Parts, ContextStoreError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|source| ContextStoreError::File {
                message: format!(
                    "the build context {} cannot be opened for upload: {source}",
                    path.display()
                ),
                source,
            })?;
        Ok(Parts {
            file,
            path: path.to_path_buf(),
            len,
            offset: 0,
        })
    }

    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Continues from `offset` (a resumable upload that persisted less than sent).
    pub(crate) async fn seek(&mut self, offset: u64) -> Result<(), ContextStoreError> {
        self.file
            .seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|source| self.io_error(source))?;
        self.offset = offset;
        Ok(())
    }

    /// The next part of at most `size` bytes; `None` at the end.
    pub(crate) async fn next(&mut self, size: u64) -> Result<Option<Bytes>, ContextStoreError> {
        let n = size.min(self.len - self.offset);
        if n == 0 {
            return Ok(None);
        }
        let mut buf = vec![0u8; n as usize];
        self.file
            .read_exact(&mut buf)
            .await
            .map_err(|source| self.io_error(source))?;
        self.offset += n;
        Ok(Some(Bytes::from(buf)))
    }

    fn io_error(&self, source: std::io::Error) -> ContextStoreError {
        let message = if source.kind() == std::io::ErrorKind::UnexpectedEof {
            format!(
                "the build context {} is shorter than the {} bytes to upload: it changed during the upload",
                self.path.display(),
                self.len
            )
        } else {
            format!(
                "the build context {} cannot be read for upload: {source}",
                self.path.display()
            )
        };
        ContextStoreError::File { message, source }
    }
}

/// Describes an operation on a store for messages: `checking bucket `b` (s3://b/p/)`,
/// `uploading s3://b/p/k.tar.gz`.
pub(crate) fn doing(op: Operation, container: &str, store_url: &str, object_url: &str) -> String {
    match op {
        Operation::Check => format!("checking {container} ({store_url})"),
        Operation::Size => format!("looking up {object_url}"),
        Operation::Upload => format!("uploading {object_url}"),
        Operation::Delete => format!("deleting {object_url}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_join_the_prefix() {
        assert_eq!(object_name("", "a.tar.gz"), "a.tar.gz");
        assert_eq!(object_name("ctx", "a.tar.gz"), "ctx/a.tar.gz");
        assert_eq!(object_name("ctx/deep/", "/a.tar.gz"), "ctx/deep/a.tar.gz");
    }

    #[test]
    fn transient_errors() {
        let status = |s| ContextStoreError::Status {
            message: String::new(),
            status: s,
            source: None,
        };
        assert!(status(503).is_transient());
        assert!(status(429).is_transient());
        assert!(!status(400).is_transient());
        assert!(!ContextStoreError::config("x").is_transient());
        assert!(
            !ContextStoreError::MissingBucket {
                message: String::new(),
                source: None
            }
            .is_transient()
        );
    }

    #[tokio::test]
    async fn mismatched_environments_are_refused_with_the_fix() {
        let store = BuildContextStore::Gcs {
            bucket: "b".into(),
            prefix: "p".into(),
        };
        #[derive(Debug)]
        struct Fake(EnvironmentType);
        #[async_trait]
        impl Environment for Fake {
            fn kind(&self) -> EnvironmentType {
                self.0
            }
            async fn verify(&self) -> Result<crate::environments::Verified, EnvError> {
                unreachable!()
            }
            fn as_any(&self) -> &dyn std::any::Any {
                self
            }
        }
        let aws: Arc<dyn Environment> = Arc::new(Fake(EnvironmentType::Aws));
        let e = from_config_with(&store, Some(&aws), &Ambient::default()).unwrap_err();
        assert!(matches!(e, ContextStoreError::Config { .. }));
        assert_eq!(
            e.to_string(),
            "builder.build-context-store gs://b/p/ is a GCS bucket, but environment.type is aws, whose credentials cannot use it; use s3://BUCKET/PREFIX with an aws environment, or set environment.type: gcp"
        );
        let s3 = BuildContextStore::S3 {
            bucket: "b".into(),
            prefix: String::new(),
        };
        let e = from_config_with(&s3, None, &Ambient::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "builder.build-context-store s3://b/ is an S3 bucket, which hoist reaches with the credentials of an `aws` environment, but the agent config has none; add `environment: {type: aws, …}`"
        );
    }
}
