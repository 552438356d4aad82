//! Cloud Storage through its JSON API on reqwest (feature `blob-cloud`).
//!
//! object_store's GCS client speaks the XML API, which fake-gcs-server (the emulator the
//! tests run against) does not serve for uploads; the JSON API is what both Google and
//! the emulator serve, and what the agent's build-context store uses. Tokens come from
//! object_store's Google credential chain (service account, application default
//! credentials, the metadata server); an emulator (`STORAGE_EMULATOR_HOST`) gets none.
//!
//! Uploads are one streamed `uploadType=media` request (artifacts are at most
//! `--max-artifact-bytes`; segments are small).

use std::io;
use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::CredentialProvider;
use object_store::gcp::GcpCredential;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use super::ByteStream;

/// Google's endpoint; `STORAGE_EMULATOR_HOST` replaces it.
pub const GOOGLE_BASE: &str = "https://storage.googleapis.com";

type Credentials = Arc<dyn CredentialProvider<Credential = GcpCredential>>;

#[derive(Clone)]
pub struct GcsJson {
    http: reqwest::Client,
    base: String,
    bucket: String,
    /// `None`: an emulator, no token.
    credentials: Option<Credentials>,
}

fn enc(s: &str) -> String {
    const SET: &[u8] = b"-._~";
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || SET.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn status_error(status: StatusCode, body: &str, what: &str) -> io::Error {
    let kind = match status {
        StatusCode::NOT_FOUND => io::ErrorKind::NotFound,
        StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::Other,
    };
    let body: String = body.chars().take(300).collect();
    io::Error::new(
        kind,
        format!("{what}: Cloud Storage answered {status}: {}", body.trim()),
    )
}

fn send_error(e: reqwest::Error, what: &str) -> io::Error {
    // Without the URL: it names nothing secret, but the message stays short.
    io::Error::other(format!("{what}: {}", e.without_url()))
}

#[derive(Deserialize)]
struct Meta {
    name: String,
    #[serde(default)]
    size: Option<String>,
}

#[derive(Deserialize)]
struct Listing {
    #[serde(default)]
    items: Vec<Meta>,
    #[serde(rename = "nextPageToken")]
    next: Option<String>,
}

impl GcsJson {
    pub fn new(
        http: reqwest::Client,
        base: &str,
        bucket: &str,
        credentials: Option<Credentials>,
    ) -> GcsJson {
        GcsJson {
            http,
            base: base.trim_end_matches('/').to_string(),
            bucket: bucket.to_string(),
            credentials,
        }
    }

    async fn req(&self, method: Method, url: String) -> io::Result<RequestBuilder> {
        let r = self.http.request(method, url);
        match &self.credentials {
            None => Ok(r),
            Some(c) => {
                let token = c.get_credential().await.map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!("no Google access token: {e}"),
                    )
                })?;
                Ok(r.bearer_auth(&token.bearer))
            }
        }
    }

    fn object_url(&self, name: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.base,
            enc(&self.bucket),
            enc(name)
        )
    }

    async fn upload(&self, name: &str, body: reqwest::Body, len: u64) -> io::Result<()> {
        let url = format!(
            "{}/upload/storage/v1/b/{}/o?uploadType=media&name={}",
            self.base,
            enc(&self.bucket),
            enc(name)
        );
        let r = self
            .req(Method::POST, url)
            .await?
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(body)
            .send()
            .await
            .map_err(|e| send_error(e, "upload"))?;
        let status = r.status();
        if status.is_success() {
            return Ok(());
        }
        Err(status_error(
            status,
            &r.text().await.unwrap_or_default(),
            "upload",
        ))
    }

    pub async fn put(&self, name: &str, data: Bytes) -> io::Result<()> {
        let len = data.len() as u64;
        self.upload(name, reqwest::Body::from(data), len).await
    }

    pub async fn put_file(&self, name: &str, file: &FsPath, size: u64) -> io::Result<()> {
        let mut f = tokio::fs::File::open(file).await?;
        let stream = async_stream::stream! {
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match f.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => yield Ok::<Bytes, io::Error>(Bytes::copy_from_slice(&buf[..n])),
                    Err(e) => {
                        yield Err(e);
                        break;
                    }
                }
            }
        };
        self.upload(name, reqwest::Body::wrap_stream(stream), size)
            .await
    }

    pub async fn size(&self, name: &str) -> io::Result<Option<u64>> {
        let r = self
            .req(Method::GET, self.object_url(name))
            .await?
            .send()
            .await
            .map_err(|e| send_error(e, "metadata"))?;
        let status = r.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(status_error(
                status,
                &r.text().await.unwrap_or_default(),
                "metadata",
            ));
        }
        let m: Meta = r.json().await.map_err(|e| send_error(e, "metadata"))?;
        m.size
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| io::Error::other(format!("metadata of {}: no size", m.name)))
    }

    pub async fn get(&self, name: &str, range: Option<Range<u64>>) -> io::Result<ByteStream> {
        let mut req = self
            .req(Method::GET, format!("{}?alt=media", self.object_url(name)))
            .await?;
        if let Some(r) = &range {
            if r.end <= r.start {
                return Ok(futures::stream::empty().boxed());
            }
            req = req.header(
                reqwest::header::RANGE,
                format!("bytes={}-{}", r.start, r.end - 1),
            );
        }
        let r = req.send().await.map_err(|e| send_error(e, "download"))?;
        let status = r.status();
        if !status.is_success() {
            return Err(status_error(
                status,
                &r.text().await.unwrap_or_default(),
                "download",
            ));
        }
        if range.is_some() && status != StatusCode::PARTIAL_CONTENT {
            return Err(io::Error::other(format!(
                "download of a range: Cloud Storage answered {status}, not 206"
            )));
        }
        Ok(r.bytes_stream()
            .map_err(|e| send_error(e, "download"))
            .boxed())
    }

    pub async fn get_range(&self, name: &str, range: Range<u64>) -> io::Result<Bytes> {
        let want = (range.end - range.start) as usize;
        let mut s = self.get(name, Some(range)).await?;
        let mut out = Vec::with_capacity(want);
        while let Some(chunk) = s.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out.into())
    }

    pub async fn delete(&self, name: &str) -> io::Result<()> {
        let r = self
            .req(Method::DELETE, self.object_url(name))
            .await?
            .send()
            .await
            .map_err(|e| send_error(e, "delete"))?;
        let status = r.status();
        if status.is_success() || status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        Err(status_error(
            status,
            &r.text().await.unwrap_or_default(),
            "delete",
        ))
    }

    /// Deletes every object whose name starts with `prefix`.
    pub async fn delete_prefix(&self, prefix: &str) -> io::Result<()> {
        let mut page: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/storage/v1/b/{}/o?prefix={}&fields=items(name),nextPageToken",
                self.base,
                enc(&self.bucket),
                enc(prefix)
            );
            if let Some(p) = &page {
                url.push_str(&format!("&pageToken={}", enc(p)));
            }
            let r = self
                .req(Method::GET, url)
                .await?
                .send()
                .await
                .map_err(|e| send_error(e, "list"))?;
            let status = r.status();
            if !status.is_success() {
                return Err(status_error(
                    status,
                    &r.text().await.unwrap_or_default(),
                    "list",
                ));
            }
            let l: Listing = r.json().await.map_err(|e| send_error(e, "list"))?;
            for m in l.items {
                self.delete(&m.name).await?;
            }
            match l.next {
                Some(n) if !n.is_empty() => page = Some(n),
                _ => return Ok(()),
            }
        }
    }
}
