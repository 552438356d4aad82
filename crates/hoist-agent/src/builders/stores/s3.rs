//! S3 build contexts: aws-sdk-s3 with the `aws` environment's SDK configuration
//! (region, credential chain), on `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` when set
//! (then with path-style addressing, as emulators and private endpoints need).
//!
//! Below [`PART_SIZE`] one `PutObject`; above, `CreateMultipartUpload`, `UploadPart`s
//! of [`PART_SIZE`] and `CompleteMultipartUpload`. A multipart upload that fails is
//! aborted before the error is returned; one whose future is dropped is aborted by a
//! task spawned from the drop, so S3 keeps no parts (and bills none).

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use tokio::sync::OnceCell;

use super::{
    ContextStore, ContextStoreError, Operation, PART_SIZE, Parts, doing, object_name, read_ca_file,
};
use crate::environments::aws::AwsEnvironment;
use crate::environments::http::error_chain;

const CONTENT_TYPE: &str = "application/gzip";

/// A bucket and prefix in S3.
pub struct S3Store {
    bucket: String,
    prefix: String,
    env: AwsEnvironment,
    ca_file: Option<PathBuf>,
    client: OnceCell<aws_sdk_s3::Client>,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.env.s3_endpoint())
            .field("region", &self.env.region())
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// The store `s3://bucket/prefix/`. Calls nothing yet.
    pub fn new(
        env: &AwsEnvironment,
        bucket: String,
        prefix: String,
        ca_file: Option<PathBuf>,
    ) -> S3Store {
        S3Store {
            bucket,
            prefix: prefix.trim_matches('/').to_string(),
            env: env.clone(),
            ca_file,
            client: OnceCell::new(),
        }
    }

    fn store_url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}/", self.bucket)
        } else {
            format!("s3://{}/{}/", self.bucket, self.prefix)
        }
    }

    async fn client(&self) -> Result<&aws_sdk_s3::Client, ContextStoreError> {
        self.client
            .get_or_try_init(|| async {
                let mut b = aws_sdk_s3::config::Builder::from(self.env.sdk_config());
                if let Some(e) = self.env.s3_endpoint() {
                    b = b.endpoint_url(e).force_path_style(true);
                }
                if let Some(path) = &self.ca_file {
                    use aws_smithy_http_client::tls;
                    let pem = read_ca_file(path, &self.store_url()).await?;
                    let ctx = tls::TlsContext::builder()
                        .with_trust_store(
                            tls::TrustStore::default()
                                .with_native_roots(true)
                                .with_pem_certificate(pem),
                        )
                        .build()
                        .map_err(|e| ContextStoreError::Config {
                            message: format!(
                                "{}: {} ({}) cannot be used as a trust store: {e}",
                                self.store_url(),
                                super::CA_FILE_VAR,
                                path.display()
                            ),
                            source: Some(Box::new(e)),
                        })?;
                    let http = aws_smithy_http_client::Builder::new()
                        .tls_provider(tls::Provider::Rustls(
                            tls::rustls_provider::CryptoMode::AwsLc,
                        ))
                        .tls_context(ctx)
                        .build_https();
                    b = b.http_client(http);
                }
                Ok(aws_sdk_s3::Client::from_conf(b.build()))
            })
            .await
    }

    /// Maps an SDK error of `op` on `key` (`None`: the bucket) to a message that names
    /// the store, what was tried and what to do.
    async fn error<E>(
        &self,
        op: Operation,
        key: Option<&str>,
        e: SdkError<E, HttpResponse>,
    ) -> ContextStoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let store = self.store_url();
        let object = key.map(|k| self.object_url(k)).unwrap_or_default();
        let what = doing(op, &format!("bucket `{}`", self.bucket), &store, &object);
        let endpoint = self
            .env
            .s3_endpoint()
            .map(|e| format!("{e} (AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL)"))
            .unwrap_or_else(|| format!("S3 in {}", self.env.region()));
        let status = match &e {
            SdkError::ServiceError(se) => Some(se.raw().status().as_u16()),
            SdkError::ResponseError(re) => Some(re.raw().status().as_u16()),
            _ => None,
        };
        let code = e.code().map(str::to_string);
        let detail = match (e.code(), e.message()) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.to_string(),
            (None, _) => status
                .map(|s| format!("HTTP {s}"))
                .unwrap_or_else(|| error_chain(&e as &(dyn std::error::Error + 'static))),
        };
        // The chain had no credentials (the SDK reports it as a dispatch failure):
        // the environment's own error says what it tried.
        if status.is_none() && caused_by_credentials(&e) {
            return match self.env.credentials_from().await {
                Err(source) => ContextStoreError::Credentials {
                    message: format!("{what}: no credentials from the aws environment: {source}"),
                    source,
                },
                Ok(from) => ContextStoreError::Config {
                    message: format!(
                        "{what}: the credentials from {from} could not be used: {}",
                        error_chain(&e as &(dyn std::error::Error + 'static))
                    ),
                    source: Some(Box::new(e)),
                },
            };
        }
        let no_bucket = status == Some(404)
            && (code.as_deref() == Some("NoSuchBucket") || op == Operation::Check);
        match (&e, status) {
            (SdkError::ServiceError(_), Some(404)) if no_bucket => {
                ContextStoreError::MissingBucket {
                    message: format!(
                        "bucket `{}` does not exist ({store}): create it or fix builder.build-context-store",
                        self.bucket
                    ),
                    source: Some(Box::new(e)),
                }
            }
            (SdkError::ServiceError(_), Some(401 | 403)) => {
                let who = match self.env.credentials_from().await {
                    Ok(from) => format!("the credentials from {from}"),
                    Err(_) => "the aws environment's credentials".to_string(),
                };
                let action = match op {
                    Operation::Check => "s3:ListBucket on the bucket",
                    // (Without s3:ListBucket, S3 answers a missing object 403.)
                    Operation::Size => "s3:GetObject on the prefix and s3:ListBucket on the bucket",
                    Operation::Upload => "s3:PutObject (and s3:AbortMultipartUpload) on the prefix",
                    Operation::Delete => "s3:DeleteObject on the prefix",
                };
                ContextStoreError::Denied {
                    message: format!(
                        "{what}: S3 refused {who} ({detail}); allow {action} for that identity, or fix builder.build-context-store"
                    ),
                    source: Some(Box::new(e)),
                }
            }
            (SdkError::ServiceError(se), Some(301 | 400)) if bucket_region(se.raw()).is_some() => {
                let there = bucket_region(se.raw()).unwrap_or_default();
                let here = self.env.region().to_string();
                ContextStoreError::Config {
                    message: format!(
                        "{what}: bucket `{}` is in region {there}, but the aws environment's region is {here}; set environment.region: {there}, or use a bucket in {here}",
                        self.bucket
                    ),
                    source: Some(Box::new(e)),
                }
            }
            (SdkError::ServiceError(_) | SdkError::ResponseError(_), Some(s)) => {
                let hint = if crate::environments::http::transient_status(s) {
                    "; try again later"
                } else {
                    ""
                };
                ContextStoreError::Status {
                    message: format!("{what}: S3 answered {detail}{hint}"),
                    status: s,
                    source: Some(Box::new(e)),
                }
            }
            (SdkError::TimeoutError(_) | SdkError::DispatchFailure(_), _) => {
                let cause = error_chain(&e as &(dyn std::error::Error + 'static));
                ContextStoreError::Unreachable {
                    message: format!(
                        "{what}: {endpoint} could not be reached ({cause}); check the network and the endpoint"
                    ),
                    source: Box::new(e),
                }
            }
            (SdkError::ConstructionFailure(_), _) => {
                let cause = error_chain(&e as &(dyn std::error::Error + 'static));
                // The request could not be built (a name the SDK refuses…).
                ContextStoreError::Config {
                    message: format!("{what}: the request could not be made: {cause}"),
                    source: Some(Box::new(e)),
                }
            }
            _ => ContextStoreError::Unreadable {
                message: format!(
                    "{what}: S3 answered something unreadable: {}",
                    error_chain(&e as &(dyn std::error::Error + 'static))
                ),
                source: Some(Box::new(e)),
            },
        }
    }

    async fn multipart(
        &self,
        client: &aws_sdk_s3::Client,
        key: &str,
        name: &str,
        mut parts: Parts,
        len: u64,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<(), ContextStoreError> {
        let created = client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(name)
            .content_type(CONTENT_TYPE)
            .send()
            .await;
        let created = match created {
            Ok(c) => c,
            Err(e) => return Err(self.error(Operation::Upload, Some(key), e).await),
        };
        let Some(upload_id) = created.upload_id().map(str::to_string) else {
            return Err(ContextStoreError::Unreadable {
                message: format!(
                    "uploading {}: S3 started a multipart upload without an upload id",
                    self.object_url(key)
                ),
                source: None,
            });
        };
        let mut guard = AbortOnDrop {
            client: client.clone(),
            bucket: self.bucket.clone(),
            name: name.to_string(),
            upload_id: Some(upload_id.clone()),
        };
        let result = self
            .upload_parts(client, key, name, &upload_id, &mut parts, len, progress)
            .await;
        match result {
            Ok(()) => {
                guard.upload_id = None;
                Ok(())
            }
            Err(e) => {
                // Abort now (not from the drop), so the parts are gone when the
                // caller sees the error.
                if let Some(id) = guard.upload_id.take() {
                    abort(client, &self.bucket, name, &id).await;
                }
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_parts(
        &self,
        client: &aws_sdk_s3::Client,
        key: &str,
        name: &str,
        upload_id: &str,
        parts: &mut Parts,
        len: u64,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<(), ContextStoreError> {
        let mut done = Vec::new();
        let mut number = 1;
        while let Some(bytes) = parts.next(PART_SIZE).await? {
            let n = bytes.len() as i64;
            let out = client
                .upload_part()
                .bucket(&self.bucket)
                .key(name)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(n)
                .body(ByteStream::from(bytes))
                .send()
                .await;
            let out = match out {
                Ok(o) => o,
                Err(e) => return Err(self.error(Operation::Upload, Some(key), e).await),
            };
            done.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build(),
            );
            progress(parts.offset(), len);
            number += 1;
        }
        let completed = client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(name)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            )
            .send()
            .await;
        match completed {
            Ok(_) => Ok(()),
            Err(e) => Err(self.error(Operation::Upload, Some(key), e).await),
        }
    }
}

/// The `x-amz-bucket-region` S3 names when a bucket is asked for in the wrong region.
fn bucket_region(resp: &HttpResponse) -> Option<String> {
    resp.headers()
        .get("x-amz-bucket-region")
        .map(str::to_string)
        .filter(|r| !r.is_empty())
}

/// Whether a credential provider's failure is among the causes of `e`.
fn caused_by_credentials(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if c.downcast_ref::<CredentialsError>().is_some() {
            return true;
        }
        cur = c.source();
    }
    false
}

/// Aborts a multipart upload when dropped unfinished (the upload's future was
/// dropped): in a task of its own, since a drop cannot wait.
struct AbortOnDrop {
    client: aws_sdk_s3::Client,
    bucket: String,
    name: String,
    upload_id: Option<String>,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(id) = self.upload_id.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                message = "A dropped multipart upload could not be aborted (no runtime); S3's lifecycle rules must remove it.",
                bucket = %self.bucket,
                key = %self.name,
            );
            return;
        };
        let (client, bucket, name) = (self.client.clone(), self.bucket.clone(), self.name.clone());
        rt.spawn(async move { abort(&client, &bucket, &name, &id).await });
    }
}

async fn abort(client: &aws_sdk_s3::Client, bucket: &str, name: &str, upload_id: &str) {
    let r = client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(name)
        .upload_id(upload_id)
        .send()
        .await;
    match r {
        Ok(_) => tracing::debug!(message = "Multipart upload aborted.", bucket, key = name),
        Err(e) => tracing::warn!(
            message = "A multipart upload could not be aborted; S3 keeps its parts until a lifecycle rule (AbortIncompleteMultipartUpload) removes them.",
            bucket,
            key = name,
            error = %error_chain(&e as &(dyn std::error::Error + 'static)),
        ),
    }
}

#[async_trait]
impl ContextStore for S3Store {
    fn describe(&self) -> String {
        self.store_url()
    }

    fn object_url(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, object_name(&self.prefix, key))
    }

    async fn check(&self) -> Result<(), ContextStoreError> {
        let client = self.client().await?;
        match client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.error(Operation::Check, None, e).await),
        }
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, ContextStoreError> {
        let client = self.client().await?;
        let r = client
            .head_object()
            .bucket(&self.bucket)
            .key(object_name(&self.prefix, key))
            .send()
            .await;
        match r {
            Ok(o) => Ok(Some(o.content_length().unwrap_or(0).max(0) as u64)),
            Err(SdkError::ServiceError(se)) if se.err().is_not_found() => Ok(None),
            Err(e) => Err(self.error(Operation::Size, Some(key), e).await),
        }
    }

    async fn upload(
        &self,
        key: &str,
        file: &Path,
        len: u64,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<(), ContextStoreError> {
        let client = self.client().await?;
        let name = object_name(&self.prefix, key);
        let mut parts = Parts::open(file, len).await?;
        if len > PART_SIZE {
            return self
                .multipart(client, key, &name, parts, len, progress)
                .await;
        }
        let bytes = parts.next(PART_SIZE).await?.unwrap_or_default();
        let r = client
            .put_object()
            .bucket(&self.bucket)
            .key(&name)
            .content_type(CONTENT_TYPE)
            .content_length(bytes.len() as i64)
            .body(ByteStream::from(bytes))
            .send()
            .await;
        match r {
            Ok(_) => {
                progress(len, len);
                Ok(())
            }
            Err(e) => Err(self.error(Operation::Upload, Some(key), e).await),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), ContextStoreError> {
        let client = self.client().await?;
        let r = client
            .delete_object()
            .bucket(&self.bucket)
            .key(object_name(&self.prefix, key))
            .send()
            .await;
        match r {
            Ok(_) => Ok(()),
            // Absent (S3 answers 204 anyway), or no bucket: nothing is there.
            Err(SdkError::ServiceError(se)) if se.raw().status().as_u16() == 404 => Ok(()),
            Err(e) => Err(self.error(Operation::Delete, Some(key), e).await),
        }
    }
}
