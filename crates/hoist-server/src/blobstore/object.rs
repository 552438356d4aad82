//! Object stores (feature `blob-cloud`): S3 and Azure Blob through arrow-rs's
//! `object_store`, GCS through its JSON API ([`super::gcs`]), configured from a
//! [`BlobEnv`] (see the parent module for the variables). [`ObjectSegments`] keeps run log segments there: each segment is
//! written once.

use std::io;
use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
    WriteMultipart,
};
use tokio::io::AsyncReadExt;

use super::gcs::GcsJson;
use super::{BlobEnv, BlobStoreError, BlobStoreUrl, ByteStream, CA_FILE_VAR, PART_SIZE};
use crate::logs::SegmentStore;

#[derive(Clone)]
enum Client {
    Os(Arc<dyn ObjectStore>),
    Gcs(GcsJson),
}

#[derive(Clone)]
pub struct ObjectBlobs {
    client: Client,
    prefix: String,
}

fn to_io(e: object_store::Error) -> io::Error {
    let kind = match &e {
        object_store::Error::NotFound { .. } => io::ErrorKind::NotFound,
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

/// Whether `url` is https, or http to a loopback host.
fn endpoint_ok(url: &str) -> Result<bool, String> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Ok(false);
    }
    if let Some(rest) = lower.strip_prefix("http://") {
        let host = rest.split(['/', '?']).next().unwrap_or("");
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        let host = if host.starts_with('[') {
            host.split(']').next().unwrap_or("").trim_start_matches('[')
        } else {
            host.split(':').next().unwrap_or("")
        };
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if loopback {
            return Ok(true);
        }
        return Err("plain http is allowed to a loopback host only; use https".into());
    }
    Err("an endpoint is an https:// (or, on loopback, http://) URL".into())
}

impl ObjectBlobs {
    pub async fn open(url: &BlobStoreUrl, env: &BlobEnv) -> Result<ObjectBlobs, BlobStoreError> {
        let shown = url.to_string();
        let config = |what: String| BlobStoreError::Config {
            url: shown.clone(),
            what,
            source: None,
        };
        let mut opts = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(10))
            // Downloads stream to clients at their pace: no overall deadline, but a
            // stalled read fails.
            .with_timeout_disabled()
            .with_read_timeout(Duration::from_secs(60));
        let mut ca: Option<Vec<reqwest::Certificate>> = None;
        if let Some(path) = env.var(CA_FILE_VAR) {
            let pem = tokio::fs::read(&path).await.map_err(|source| BlobStoreError::Config {
                url: shown.clone(),
                what: format!(
                    "{CA_FILE_VAR} ({path}) cannot be read; point it at a PEM file of CA certificates or unset it"
                ),
                source: Some(Box::new(source)),
            })?;
            let certs = object_store::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    config(format!(
                        "{CA_FILE_VAR} ({path}) holds no PEM certificate; point it at a PEM file of CA certificates or unset it"
                    ))
                })?;
            for c in certs {
                opts = opts.with_root_certificate(c);
            }
            ca = Some(
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
                    BlobStoreError::Config {
                        url: shown.clone(),
                        what: format!("{CA_FILE_VAR} ({path}) holds no usable PEM certificate"),
                        source: Some(Box::new(source)),
                    }
                })?,
            );
        }
        let retry = RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(30),
            ..RetryConfig::default()
        };
        let endpoint = |vars: &[&str]| -> Result<Option<(String, bool)>, BlobStoreError> {
            for v in vars {
                if let Some(e) = env.var(v) {
                    let http = endpoint_ok(&e).map_err(|why| config(format!("{v}: {why}")))?;
                    return Ok(Some((e, http)));
                }
            }
            Ok(None)
        };
        let built: Result<Arc<dyn ObjectStore>, object_store::Error> = match url {
            BlobStoreUrl::File(_) => unreachable!("a directory is not an object store"),
            BlobStoreUrl::S3 { bucket, .. } => {
                use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
                let mut b = AmazonS3Builder::new();
                for (k, v) in env.with_prefix("AWS_") {
                    if let Ok(key) = k.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                        b = b.with_config(key, v);
                    }
                }
                let region = env
                    .var("AWS_REGION")
                    .or_else(|| env.var("AWS_DEFAULT_REGION"))
                    .unwrap_or_else(|| "us-east-1".into());
                if let Some((e, http)) = endpoint(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"])? {
                    b = b
                        .with_config(AmazonS3ConfigKey::S3Endpoint, e.clone())
                        .with_endpoint(e)
                        .with_virtual_hosted_style_request(false);
                    opts = opts.with_allow_http(http);
                }
                if let Some(p) = super::aws_profile::ProfileCredentials::from_env(env).await {
                    b = b.with_credentials(Arc::new(p));
                }
                b.with_region(region)
                    .with_bucket_name(bucket)
                    .with_client_options(opts)
                    .with_retry(retry)
                    .build()
                    .map(|s| Arc::new(s) as _)
            }
            BlobStoreUrl::Gcs { bucket, .. } => {
                let (base, credentials) = match env.var("STORAGE_EMULATOR_HOST") {
                    Some(host) => {
                        let base = if host.contains("://") {
                            host
                        } else {
                            format!("http://{host}")
                        };
                        endpoint_ok(&base)
                            .map_err(|why| config(format!("STORAGE_EMULATOR_HOST: {why}")))?;
                        // As Google's libraries do: no token to an emulator.
                        (base, None)
                    }
                    None => {
                        use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
                        let mut b = GoogleCloudStorageBuilder::new();
                        for (k, v) in env.with_prefix("GOOGLE_") {
                            if let Ok(key) = k.to_ascii_lowercase().parse::<GoogleConfigKey>() {
                                b = b.with_config(key, v);
                            }
                        }
                        let gcs = b.with_bucket_name(bucket).build().map_err(|source| {
                            BlobStoreError::Config {
                                url: shown.clone(),
                                what: "cannot set up Google credentials (GOOGLE_APPLICATION_CREDENTIALS, application default credentials or the metadata server)".into(),
                                source: Some(Box::new(source)),
                            }
                        })?;
                        (
                            super::gcs::GOOGLE_BASE.to_string(),
                            Some(gcs.credentials().clone()),
                        )
                    }
                };
                let mut http = reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .read_timeout(Duration::from_secs(60));
                if let Some(certs) = &ca {
                    http = http.tls_certs_merge(certs.clone());
                }
                let http = http.build().map_err(|source| BlobStoreError::Config {
                    url: shown.clone(),
                    what: "cannot set up the HTTP client".into(),
                    source: Some(Box::new(source)),
                })?;
                return Ok(ObjectBlobs {
                    client: Client::Gcs(GcsJson::new(http, &base, bucket, credentials)),
                    prefix: url.prefix().to_string(),
                });
            }
            BlobStoreUrl::Azure {
                account, container, ..
            } => {
                use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
                let mut b = MicrosoftAzureBuilder::new();
                for (k, v) in env.with_prefix("AZURE_") {
                    if k == "AZURE_STORAGE_BLOB_ENDPOINT" {
                        continue;
                    }
                    if let Ok(key) = k.to_ascii_lowercase().parse::<AzureConfigKey>() {
                        b = b.with_config(key, v);
                    }
                }
                if let Some((e, http)) = endpoint(&["AZURE_STORAGE_BLOB_ENDPOINT"])? {
                    b = b.with_endpoint(e.trim_end_matches('/').to_string());
                    opts = opts.with_allow_http(http);
                }
                b.with_account(account)
                    .with_container_name(container)
                    .with_client_options(opts)
                    .with_retry(retry)
                    .build()
                    .map(|s| Arc::new(s) as _)
            }
        };
        let store = built.map_err(|source| BlobStoreError::Config {
            url: shown.clone(),
            what: "cannot set up the client (check the credentials in the environment)".into(),
            source: Some(Box::new(source)),
        })?;
        Ok(ObjectBlobs {
            client: Client::Os(store),
            prefix: url.prefix().to_string(),
        })
    }

    fn path(&self, key: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        }
    }

    pub fn segments(&self) -> ObjectSegments {
        ObjectSegments {
            blobs: self.clone(),
        }
    }

    fn name(&self, key: &str) -> String {
        self.path(key).to_string()
    }

    pub async fn put(&self, key: &str, data: Bytes) -> io::Result<()> {
        match &self.client {
            Client::Os(s) => s
                .put(&self.path(key), PutPayload::from(data))
                .await
                .map(|_| ())
                .map_err(to_io),
            Client::Gcs(g) => g.put(&self.name(key), data).await,
        }
    }

    pub async fn size(&self, key: &str) -> io::Result<Option<u64>> {
        match &self.client {
            Client::Os(s) => match s.head(&self.path(key)).await {
                Ok(m) => Ok(Some(m.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(to_io(e)),
            },
            Client::Gcs(g) => g.size(&self.name(key)).await,
        }
    }

    /// Uploads `file` (`size` bytes) as `key` unless an object of that size is there.
    pub async fn put_file(&self, key: &str, file: &FsPath, size: u64) -> io::Result<bool> {
        if self.size(key).await? == Some(size) {
            return Ok(false);
        }
        let store = match &self.client {
            Client::Os(s) => s,
            Client::Gcs(g) => {
                g.put_file(&self.name(key), file, size).await?;
                return Ok(true);
            }
        };
        let path = self.path(key);
        let mut f = tokio::fs::File::open(file).await?;
        if size <= PART_SIZE as u64 {
            let mut buf = Vec::with_capacity(size as usize);
            f.read_to_end(&mut buf).await?;
            store
                .put(&path, PutPayload::from(buf))
                .await
                .map_err(to_io)?;
            return Ok(true);
        }
        let upload = store.put_multipart(&path).await.map_err(to_io)?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match f.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = w.abort().await;
                    return Err(e);
                }
            };
            if n == 0 {
                break;
            }
            // At most two parts in flight.
            if let Err(e) = w.wait_for_capacity(2).await {
                let _ = w.abort().await;
                return Err(to_io(e));
            }
            w.write(&buf[..n]);
        }
        // (finish aborts the upload when it fails.)
        w.finish().await.map_err(to_io)?;
        Ok(true)
    }

    pub async fn get_range(&self, key: &str, range: Range<u64>) -> io::Result<Bytes> {
        match &self.client {
            Client::Os(s) => s.get_range(&self.path(key), range).await.map_err(to_io),
            Client::Gcs(g) => g.get_range(&self.name(key), range).await,
        }
    }

    pub async fn get(&self, key: &str, range: Option<Range<u64>>) -> io::Result<ByteStream> {
        let store = match &self.client {
            Client::Os(s) => s,
            Client::Gcs(g) => return g.get(&self.name(key), range).await,
        };
        let opts = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let r = store.get_opts(&self.path(key), opts).await.map_err(to_io)?;
        Ok(r.into_stream().map_err(to_io).boxed())
    }

    pub async fn delete(&self, key: &str) -> io::Result<()> {
        match &self.client {
            Client::Os(s) => match s.delete(&self.path(key)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(to_io(e)),
            },
            Client::Gcs(g) => g.delete(&self.name(key)).await,
        }
    }

    /// Deletes every object under `dir/`.
    async fn delete_dir(&self, dir: &str) -> io::Result<()> {
        let store = match &self.client {
            Client::Os(s) => s,
            Client::Gcs(g) => return g.delete_prefix(&format!("{}/", self.name(dir))).await,
        };
        let prefix = self.path(dir);
        let mut listed = store.list(Some(&prefix));
        while let Some(meta) = listed.next().await {
            let meta = meta.map_err(to_io)?;
            match store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(to_io(e)),
            }
        }
        Ok(())
    }
}

/// Run log segments as objects `logs/<run id>/<segment>`: each written whole, once
/// (not [`appendable`](SegmentStore::appendable)).
pub struct ObjectSegments {
    blobs: ObjectBlobs,
}

#[async_trait]
impl SegmentStore for ObjectSegments {
    fn appendable(&self) -> bool {
        false
    }

    async fn append(&self, key: &str, at: u64, data: Bytes) -> io::Result<()> {
        super::check_segment_key(key, 2)?;
        if at != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "log segment {key}: an object store segment is written once, from byte 0, not at {at}"
                ),
            ));
        }
        self.blobs.put(&format!("logs/{key}"), data).await
    }

    async fn read(&self, key: &str, at: u64, len: usize) -> io::Result<Vec<u8>> {
        super::check_segment_key(key, 2)?;
        let data = self
            .blobs
            .get_range(&format!("logs/{key}"), at..at + len as u64)
            .await?;
        if data.len() != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("log segment {key}: {} bytes at {at}, not {len}", data.len()),
            ));
        }
        Ok(data.to_vec())
    }

    async fn delete_run(&self, run_id: &str) -> io::Result<()> {
        super::check_segment_key(run_id, 1)?;
        self.blobs.delete_dir(&format!("logs/{run_id}")).await
    }
}
