//! Azure Blob build contexts: azure_storage_blob with a `TokenCredential` over the
//! `azure` environment's Azure AD token for `https://storage.azure.com/.default`.
//!
//! Below [`PART_SIZE`] one Put Blob; above, Put Block for each part of [`PART_SIZE`]
//! and Put Block List. Staged blocks are not a blob until the list is committed (Azure
//! drops uncommitted blocks after a week), so a failed or dropped upload leaves no
//! blob. Container check: Get Container Properties; size: Get Blob Properties; delete:
//! Delete Blob (absent is fine).
//!
//! The account's endpoint is `https://ACCOUNT.blob.core.windows.net`, or
//! `AZURE_STORAGE_BLOB_ENDPOINT` (hoist's variable, e.g. Azurite's
//! `https://127.0.0.1:10000/devstoreaccount1`). Azure AD tokens travel over https
//! only: the SDK refuses a bearer token on plain http, and so does this store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use azure_core::Bytes;
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind;
use azure_core::http::{
    ClientOptions, ExponentialRetryOptions, NoFormat, RequestContent, RetryOptions, Transport,
};
use azure_core::time::{Duration as AzDuration, OffsetDateTime};
use azure_storage_blob::models::{BlockBlobClientUploadOptions, BlockLookupList};
use azure_storage_blob::{
    BlobClient, BlobClientOptions, BlobContainerClient, BlobContainerClientOptions,
};
use tokio::sync::OnceCell;

use super::{
    ContextStore, ContextStoreError, Operation, PART_SIZE, Parts, doing, http_client, object_name,
};
use crate::environments::Ambient;
use crate::environments::azure::AzureEnvironment;
use crate::environments::http::error_chain;

/// The scope of Azure Storage's data plane.
pub const SCOPE: &str = "https://storage.azure.com/.default";
/// hoist's variable for another blob endpoint (an emulator, a private endpoint).
pub const ENDPOINT_VAR: &str = "AZURE_STORAGE_BLOB_ENDPOINT";
const CONTENT_TYPE: &str = "application/gzip";

/// The blob endpoint of `account`: `AZURE_STORAGE_BLOB_ENDPOINT` when set (https only),
/// else `https://ACCOUNT.blob.core.windows.net`.
pub fn endpoint(account: &str, ambient: &Ambient) -> Result<url::Url, ContextStoreError> {
    let Some(v) = ambient.var(ENDPOINT_VAR) else {
        return url::Url::parse(&format!("https://{account}.blob.core.windows.net")).map_err(|e| {
            ContextStoreError::Config {
                message: format!("storage account `{account}` gives no endpoint URL: {e}"),
                source: Some(Box::new(e)),
            }
        });
    };
    // (A query may hold a SAS signature: never shown.)
    let shown = crate::environments::http::masked_url(v.split('?').next().unwrap_or(v));
    let url = url::Url::parse(v.trim()).map_err(|e| ContextStoreError::Config {
        message: format!("{ENDPOINT_VAR} `{shown}` is not a URL: {e}"),
        source: Some(Box::new(e)),
    })?;
    if url.scheme() != "https" {
        return Err(ContextStoreError::config(format!(
            "{ENDPOINT_VAR} `{shown}` must be https://: Azure AD tokens are sent over TLS only (give an emulator a certificate, and its CA in {})",
            super::CA_FILE_VAR
        )));
    }
    if url.query().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(ContextStoreError::config(format!(
            "{ENDPOINT_VAR} `{shown}` must be the account's blob endpoint alone (no query, no credentials)"
        )));
    }
    Ok(url)
}

/// The `azure` environment as azure_core's credential: its Azure AD token for the
/// scope asked (cached by the environment).
#[derive(Debug)]
struct EnvCredential(AzureEnvironment);

#[async_trait]
impl TokenCredential for EnvCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let scope = scopes.first().copied().unwrap_or(SCOPE);
        let (token, _) = self.0.token(scope).await.map_err(|e| {
            azure_core::Error::with_error(
                ErrorKind::Credential,
                e,
                "no Azure AD token from the azure environment",
            )
        })?;
        // The environment caches the token until five minutes before it expires; the
        // SDK's policy asks again when it has less than five minutes left, so this
        // makes it ask (the environment's cache) about once a minute.
        Ok(AccessToken::new(
            token.expose().to_string(),
            OffsetDateTime::now_utc() + AzDuration::minutes(6),
        ))
    }
}

/// A container and prefix in an Azure storage account.
pub struct AzureBlobStore {
    account: String,
    container: String,
    prefix: String,
    endpoint: url::Url,
    env: AzureEnvironment,
    credential: Arc<dyn TokenCredential>,
    ca_file: Option<PathBuf>,
    http: OnceCell<reqwest::Client>,
}

impl std::fmt::Debug for AzureBlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureBlobStore")
            .field("account", &self.account)
            .field("container", &self.container)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint.as_str())
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

impl AzureBlobStore {
    /// The store `https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX/`, reached at
    /// `endpoint` (see [`endpoint`]). Calls nothing yet.
    pub fn new(
        account: String,
        container: String,
        prefix: String,
        endpoint: url::Url,
        env: AzureEnvironment,
        ca_file: Option<PathBuf>,
    ) -> AzureBlobStore {
        AzureBlobStore {
            account,
            container,
            prefix: prefix.trim_matches('/').to_string(),
            endpoint,
            credential: Arc::new(EnvCredential(env.clone())),
            env,
            ca_file,
            http: OnceCell::new(),
        }
    }

    fn store_url(&self) -> String {
        let base = format!(
            "https://{}.blob.core.windows.net/{}/",
            self.account, self.container
        );
        if self.prefix.is_empty() {
            base
        } else {
            format!("{base}{}/", self.prefix)
        }
    }

    fn doing(&self, op: Operation, key: Option<&str>) -> String {
        let object = key.map(|k| self.object_url(k)).unwrap_or_default();
        doing(
            op,
            &format!("container `{}`", self.container),
            &self.store_url(),
            &object,
        )
    }

    /// `endpoint/container[/blob/name/parts]`, each segment percent-encoded.
    fn url(&self, blob: Option<&str>) -> url::Url {
        let mut u = self.endpoint.clone();
        if let Ok(mut p) = u.path_segments_mut() {
            p.pop_if_empty();
            p.push(&self.container);
            if let Some(b) = blob {
                p.extend(b.split('/'));
            }
        }
        u
    }

    async fn client_options(&self) -> Result<ClientOptions, ContextStoreError> {
        let http = self
            .http
            .get_or_try_init(|| http_client(self.ca_file.as_deref(), self.store_url()))
            .await?
            .clone();
        Ok(ClientOptions {
            transport: Some(Transport::new(Arc::new(http))),
            // A few quick retries (the default is eight over a minute): the builder
            // decides about trying again from `is_transient`.
            retry: RetryOptions::exponential(ExponentialRetryOptions {
                max_retries: 3,
                initial_delay: AzDuration::milliseconds(200),
                max_delay: AzDuration::seconds(2),
                max_total_elapsed: AzDuration::seconds(30),
            }),
            ..ClientOptions::default()
        })
    }

    /// Who the requests are made as (the environment's source), checked before each
    /// operation so that a missing credential is a [`ContextStoreError::Credentials`].
    async fn identity(
        &self,
        op: Operation,
        key: Option<&str>,
    ) -> Result<String, ContextStoreError> {
        self.env
            .token(SCOPE)
            .await
            .map(|(_, from)| from)
            .map_err(|source| ContextStoreError::Credentials {
                message: format!(
                    "{}: no Azure AD token for Azure Storage from the azure environment: {source}",
                    self.doing(op, key)
                ),
                source,
            })
    }

    async fn blob(&self, key: &str) -> Result<BlobClient, ContextStoreError> {
        let options = BlobClientOptions {
            client_options: self.client_options().await?,
            ..BlobClientOptions::default()
        };
        let url = self.url(Some(&object_name(&self.prefix, key)));
        BlobClient::new(url, Some(self.credential.clone()), Some(options)).map_err(|e| {
            ContextStoreError::Config {
                message: format!(
                    "{}: the blob client cannot be set up: {e}",
                    self.object_url(key)
                ),
                source: Some(Box::new(e)),
            }
        })
    }

    /// The error for `e`, from `op` on `key` (`None`: the container) as `who`.
    fn error(
        &self,
        op: Operation,
        key: Option<&str>,
        who: &str,
        e: azure_core::Error,
    ) -> ContextStoreError {
        let what = self.doing(op, key);
        let (status, code, message) = match e.kind() {
            ErrorKind::HttpResponse {
                status,
                error_code,
                raw_response,
            } => (
                Some(u16::from(*status)),
                error_code.clone(),
                raw_response
                    .as_ref()
                    .and_then(|r| xml_message(r.body().as_ref())),
            ),
            _ => (None, None, None),
        };
        let detail = match (&code, &message, status) {
            (Some(c), Some(m), _) => format!("{c}: {m}"),
            (Some(c), None, _) => c.clone(),
            (None, _, Some(s)) => format!("HTTP {s}"),
            (None, _, None) => error_chain(&e as &(dyn std::error::Error + 'static)),
        };
        match status {
            Some(404) if code.as_deref() == Some("ContainerNotFound") || op == Operation::Check => {
                ContextStoreError::MissingBucket {
                    message: format!(
                        "container `{}` does not exist in storage account `{}` ({}): create it or fix builder.build-context-store",
                        self.container,
                        self.account,
                        self.store_url()
                    ),
                    source: Some(Box::new(e)),
                }
            }
            Some(401 | 403) => {
                let action = match op {
                    Operation::Check => "read",
                    Operation::Size => "read",
                    Operation::Upload => "write",
                    Operation::Delete => "delete",
                };
                ContextStoreError::Denied {
                    message: format!(
                        "{what}: Azure Storage refused the credentials from {who} ({detail}); give that identity a role with the blob {action} data action on the container (Storage Blob Data Contributor), or fix builder.build-context-store"
                    ),
                    source: Some(Box::new(e)),
                }
            }
            Some(s) => {
                let hint = if crate::environments::http::transient_status(s) {
                    "; try again later"
                } else {
                    ""
                };
                ContextStoreError::Status {
                    message: format!("{what}: Azure Storage answered {detail}{hint}"),
                    status: s,
                    source: Some(Box::new(e)),
                }
            }
            None if matches!(e.kind(), ErrorKind::Connection | ErrorKind::Io) => {
                let endpoint = self.endpoint.as_str().trim_end_matches('/');
                let via = if endpoint.ends_with(".blob.core.windows.net") {
                    String::new()
                } else {
                    format!(" ({ENDPOINT_VAR})")
                };
                ContextStoreError::Unreachable {
                    message: format!(
                        "{what}: {endpoint}{via} could not be reached ({detail}); check the network and the endpoint"
                    ),
                    source: Box::new(e),
                }
            }
            None => ContextStoreError::Unreadable {
                message: format!("{what}: {detail}"),
                source: Some(Box::new(e)),
            },
        }
    }

    async fn blocks(
        &self,
        client: &BlobClient,
        key: &str,
        who: &str,
        parts: &mut Parts,
        len: u64,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<(), ContextStoreError> {
        let op = Operation::Upload;
        let block = client.block_blob_client();
        let mut ids = Vec::new();
        while let Some(bytes) = parts.next(PART_SIZE).await? {
            // Block ids: the same length for every block of a blob.
            let id = format!("hoist-{:08}", ids.len()).into_bytes();
            let n = bytes.len() as u64;
            let body: RequestContent<Bytes, NoFormat> = bytes.into();
            block
                .stage_block(&id, n, body, None)
                .await
                .map_err(|e| self.error(op, Some(key), who, e))?;
            ids.push(id);
            progress(parts.offset(), len);
        }
        let list = BlockLookupList {
            latest: Some(ids),
            ..BlockLookupList::default()
        };
        let content: RequestContent<BlockLookupList, _> = list
            .try_into()
            .map_err(|e| self.error(op, Some(key), who, e))?;
        let options = azure_storage_blob::models::BlockBlobClientCommitBlockListOptions {
            blob_content_type: Some(CONTENT_TYPE.to_string()),
            ..Default::default()
        };
        block
            .commit_block_list(content, Some(options))
            .await
            .map_err(|e| self.error(op, Some(key), who, e))?;
        Ok(())
    }
}

/// `<Message>…</Message>` of an Azure Storage error body (its first line: the rest
/// is a request id and a time).
fn xml_message(body: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(body).ok()?;
    let start = s.find("<Message>")? + "<Message>".len();
    let end = s[start..].find("</Message>")? + start;
    let m = s[start..end].lines().next()?.trim();
    (!m.is_empty()).then(|| m.to_string())
}

#[async_trait]
impl ContextStore for AzureBlobStore {
    fn describe(&self) -> String {
        self.store_url()
    }

    fn object_url(&self, key: &str) -> String {
        format!(
            "https://{}.blob.core.windows.net/{}/{}",
            self.account,
            self.container,
            object_name(&self.prefix, key)
        )
    }

    async fn check(&self) -> Result<(), ContextStoreError> {
        let op = Operation::Check;
        let who = self.identity(op, None).await?;
        let options = BlobContainerClientOptions {
            client_options: self.client_options().await?,
            ..BlobContainerClientOptions::default()
        };
        let client =
            BlobContainerClient::new(self.url(None), Some(self.credential.clone()), Some(options))
                .map_err(|e| ContextStoreError::Config {
                    message: format!(
                        "{}: the container client cannot be set up: {e}",
                        self.store_url()
                    ),
                    source: Some(Box::new(e)),
                })?;
        client
            .get_properties(None)
            .await
            .map(|_| ())
            .map_err(|e| self.error(op, None, &who, e))
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, ContextStoreError> {
        let op = Operation::Size;
        let who = self.identity(op, Some(key)).await?;
        let client = self.blob(key).await?;
        match client.get_properties(None).await {
            Ok(resp) => {
                use azure_storage_blob::models::BlobClientGetPropertiesResultHeaders;
                let n = resp
                    .content_length()
                    .map_err(|e| self.error(op, Some(key), &who, e))?;
                Ok(Some(n.unwrap_or(0)))
            }
            // A missing blob (or container): nothing is there.
            Err(e) if e.http_status().map(u16::from) == Some(404) => Ok(None),
            Err(e) => Err(self.error(op, Some(key), &who, e)),
        }
    }

    async fn upload(
        &self,
        key: &str,
        file: &Path,
        len: u64,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<(), ContextStoreError> {
        let op = Operation::Upload;
        let who = self.identity(op, Some(key)).await?;
        let mut parts = Parts::open(file, len).await?;
        let client = self.blob(key).await?;
        if len > PART_SIZE {
            return self
                .blocks(&client, key, &who, &mut parts, len, progress)
                .await;
        }
        let bytes = parts.next(PART_SIZE).await?.unwrap_or_default();
        let options = BlockBlobClientUploadOptions {
            blob_content_type: Some(CONTENT_TYPE.to_string()),
            parallel: std::num::NonZero::new(1),
            partition_size: std::num::NonZero::new(PART_SIZE),
            ..Default::default()
        };
        let body: RequestContent<Bytes, NoFormat> = bytes.into();
        client
            .block_blob_client()
            .upload(body, Some(options))
            .await
            .map_err(|e| self.error(op, Some(key), &who, e))?;
        progress(len, len);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), ContextStoreError> {
        let op = Operation::Delete;
        let who = self.identity(op, Some(key)).await?;
        let client = self.blob(key).await?;
        match client.delete(None).await {
            Ok(_) => Ok(()),
            // Absent (or no container): nothing is there.
            Err(e) if e.http_status().map(u16::from) == Some(404) => Ok(()),
            Err(e) => Err(self.error(op, Some(key), &who, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let none = Ambient::default();
        assert_eq!(
            endpoint("acct", &none).unwrap().as_str(),
            "https://acct.blob.core.windows.net/"
        );
        let amb = |v: &str| Ambient::new([(ENDPOINT_VAR, v)], None);
        assert_eq!(
            endpoint("x", &amb("https://127.0.0.1:5021/devstoreaccount1"))
                .unwrap()
                .as_str(),
            "https://127.0.0.1:5021/devstoreaccount1"
        );
        let e = endpoint("x", &amb("http://127.0.0.1:5021/devstoreaccount1")).unwrap_err();
        assert!(e.to_string().contains("must be https://"), "{e}");
        let e = endpoint("x", &amb("https://h/a?sig=hunter2")).unwrap_err();
        assert!(e.to_string().contains("no query"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn storage_error_messages() {
        let body = b"\xef\xbb\xbf<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>ContainerNotFound</Code><Message>The specified container does not exist.\nRequestId:0f3c\nTime:2026-12-07T10:00:00Z</Message></Error>";
        assert_eq!(
            xml_message(body).as_deref(),
            Some("The specified container does not exist.")
        );
        assert_eq!(xml_message(b""), None);
    }
}
