//! `/api/v1/blobs`: the blob store for code artifacts (`.tar.gz`), addressed by
//! content digest.
//!
//! Blobs live in the server's [`BlobStore`](crate::blobstore::BlobStore) (a directory,
//! or an object store shared by the replicas) under `sha256/<hex>`. An upload is
//! streamed to a local temporary file while it is hashed and counted, fsynced, then
//! handed to the blob store, which renames or uploads it: a blob is complete or absent,
//! never partial. Before it is stored,
//! the upload is read as the agent would unpack it ([`hoist_context::inspect`], nothing
//! written): absolute paths, `..`, links out of the archive, devices and FIFOs, more
//! than [`MAX_UNPACKED_BYTES`] and decompression bombs are refused with 422
//! (`invalid_artifact`), each problem with its entry's path. The same bytes uploaded
//! twice are stored once, and both uploads get the same answer (201, digest and size),
//! so nobody learns whether someone else holds them. The index (`store::blobs`)
//! records which entities each blob was uploaded for; only users who can use one of
//! them may see it (others get 404, as for a blob that does not exist).

use std::path::PathBuf;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use hoist_core::api::{Blob, ErrorBody, ErrorCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, Query};
use crate::auth::{User, UserPrincipal};
use crate::error::{ApiError, ApiResult};

/// Response header (on `HEAD /api/v1/blobs/…`, found or not) with the largest upload
/// the server accepts, so a client can refuse before uploading.
pub const MAX_BYTES_HEADER: &str = "x-hoist-max-artifact-bytes";

/// The most file data an uploaded artifact may unpack to (the agents' default cap;
/// each agent applies its own per-run budget too).
pub const MAX_UNPACKED_BYTES: u64 = 8 << 30;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload_blob))
        .routes(routes!(get_blob, head_blob))
        // Uploads are streamed to disk and limited by `max_artifact_bytes`.
        .layer(DefaultBodyLimit::disable())
}

/// Checks `sha256:` followed by 64 lowercase hex digits.
pub fn validate_digest(d: &str) -> Result<(), String> {
    let ok = d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid digest {:?}: expected `sha256:` followed by 64 lowercase hex digits",
            d.chars().take(100).collect::<String>()
        ))
    }
}

fn mib(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else {
        format!("{n} bytes")
    }
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
        format!(
            "the artifact is larger than this server accepts ({}, {limit} bytes); leave large files out with .hoistignore, or ask the server's admin to raise --max-artifact-bytes",
            mib(limit)
        ),
    )
}

fn blob_not_found(digest: &str) -> ApiError {
    ApiError::not_found(format!("no blob {digest}"))
}

/// A temporary file removed when dropped (if the blob store did not move it).
struct TempFile {
    path: PathBuf,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The entity an upload or lookup is for: `entity`, or the caller's own.
fn target_entity(u: &UserPrincipal, entity: Option<&str>) -> ApiResult<String> {
    let e = entity.unwrap_or(&u.name).to_string();
    if !u.can_use(&e) {
        return Err(ApiError::not_found(format!(
            "no entity {e:?} that you can use; yours are {}",
            u.entities.join(", ")
        )));
    }
    Ok(e)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct BlobParams {
    /// The entity the blob is for (default: your own). Jobs of this entity may use it.
    entity: Option<String>,
}

/// Upload a code artifact (a `.tar.gz`, the raw body). It is checked as the agent
/// would unpack it, and stored once per content; every successful upload answers 201
/// with the digest and size, whether or not the same bytes were stored before.
#[utoipa::path(post, path = "/api/v1/blobs", tag = "jobs", params(BlobParams),
    request_body(content = Vec<u8>, content_type = "application/gzip", description = "the artifact, a gzip-compressed tar"),
    responses((status = 201, body = Blob, description = "stored (or stored before: the answer is the same)"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
              (status = 422, body = ErrorBody, description = "an unsafe archive: each problem with its entry's path")))]
async fn upload_blob(
    State(s): State<AppState>,
    User(u): User,
    Query(p): Query<BlobParams>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, axum::Json<Blob>)> {
    let entity = target_entity(&u, p.entity.as_deref())?;
    if s.store.entity_kind(&entity).await?.is_none() {
        return Err(ApiError::not_found(format!("no entity {entity:?}")));
    }
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        let base = ct.split(';').next().unwrap_or("").trim();
        if !matches!(
            base,
            "application/gzip" | "application/x-gzip" | "application/octet-stream"
        ) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::BadRequest,
                format!("an artifact is uploaded as Content-Type: application/gzip, not {ct:?}"),
            ));
        }
    }
    let limit = s.cfg.max_artifact_bytes;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit
    {
        return Err(too_large(limit));
    }

    let tmp = TempFile {
        path: s
            .blobs
            .tmp_dir()
            .join(format!("upload-{}", crate::secrets::new_id(16))),
    };
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp.path)
        .await
        .map_err(|e| io_error("create an upload file", &e))?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut head: Vec<u8> = Vec::with_capacity(2);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk: Bytes = chunk.map_err(|e| {
            ApiError::bad_request(format!("the upload broke off after {size} bytes: {e}"))
        })?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(too_large(limit));
        }
        if head.len() < 2 {
            let need = 2 - head.len();
            head.extend_from_slice(&chunk[..need.min(chunk.len())]);
            if head.len() == 2 && head != [0x1f, 0x8b] {
                return Err(not_gzip());
            }
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| io_error("write the upload", &e))?;
    }
    if size == 0 {
        return Err(ApiError::bad_request(
            "the upload is empty; send the artifact (a .tar.gz) as the request body",
        ));
    }
    if head != [0x1f, 0x8b] {
        return Err(not_gzip());
    }
    file.sync_all()
        .await
        .map_err(|e| io_error("sync the upload", &e))?;
    drop(file);
    inspect_upload(tmp.path.clone()).await?;
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    let created = s
        .blobs
        .put_artifact(&digest, &tmp.path, size)
        .await
        .map_err(|e| store_error("store the blob", &e))?;
    drop(tmp);
    s.store
        .record_blob(&digest, size, &entity, &u.name, s.now())
        .await?;
    if created {
        tracing::info!(message = "Blob stored.", %digest, size, entity = %entity, by = %u.name);
    }
    // The same answer whether the bytes are new or were stored before (perhaps by
    // someone else): an upload must not tell who holds what.
    Ok((StatusCode::CREATED, axum::Json(Blob { digest, size })))
}

/// Reads the uploaded archive as an agent would unpack it (on a blocking thread,
/// writing nothing) and refuses it with every problem found.
async fn inspect_upload(path: PathBuf) -> ApiResult<()> {
    let limits = hoist_context::Limits {
        max_bytes: Some(MAX_UNPACKED_BYTES),
        ..hoist_context::Limits::default()
    };
    let inspected = tokio::task::spawn_blocking(move || {
        let f = std::fs::File::open(&path)?;
        Ok::<_, std::io::Error>(hoist_context::inspect(std::io::BufReader::new(f), &limits))
    })
    .await
    .map_err(|e| io_error("inspect the upload", &std::io::Error::other(e)))?
    .map_err(|e| io_error("read the upload", &e))?;
    match inspected {
        Ok(_) => Ok(()),
        Err(hoist_context::ContextError::Io { source, .. }) => {
            Err(io_error("read the upload", &source))
        }
        Err(e) => Err(artifact_refused(&e)),
    }
}

/// 422 `invalid_artifact`, with each problem and the archive entry it is about.
fn artifact_refused(e: &hoist_context::ContextError) -> ApiError {
    let list: Vec<&hoist_context::ContextError> = match e {
        hoist_context::ContextError::Unsafe { problems } => problems.iter().collect(),
        other => vec![other],
    };
    let problems: Vec<serde_json::Value> = list
        .iter()
        .map(|p| serde_json::json!({"path": p.entry().unwrap_or(""), "message": p.to_string()}))
        .collect();
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::InvalidArtifact,
        format!("the artifact is refused: {e}; an artifact is a .tar.gz of a source tree (`hoist job create code` packs one)"),
    )
    .with_details(serde_json::json!({ "problems": problems }))
}

fn not_gzip() -> ApiError {
    ApiError::bad_request(
        "the upload is not gzip data (it does not start with the gzip magic bytes 1f 8b); an artifact is a .tar.gz",
    )
}

fn io_error(what: &str, e: &std::io::Error) -> ApiError {
    tracing::error!(message = "Blob store I/O failed.", what, error = %e);
    internal(what)
}

fn store_error(what: &str, e: &crate::blobstore::BlobStoreError) -> ApiError {
    tracing::error!(message = "Blob store request failed.", what, error = %e);
    internal(what)
}

fn internal(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Internal,
        format!("the server could not {what} in its blob store; the server log has the details"),
    )
}

/// The size of a blob the caller may see (in `entity` when given), or 404.
async fn visible_blob(
    s: &AppState,
    u: &UserPrincipal,
    digest: &str,
    entity: Option<&str>,
) -> ApiResult<u64> {
    validate_digest(digest).map_err(ApiError::bad_request)?;
    let refs = s.store.blob_entities(digest).await?;
    let visible = match entity {
        Some(e) => u.can_use(e) && refs.iter().any(|r| r == e),
        None => refs.iter().any(|r| u.can_use(r)),
    };
    if !visible {
        return Err(blob_not_found(digest));
    }
    let size = s
        .store
        .blob_size(digest)
        .await?
        .ok_or_else(|| blob_not_found(digest))?;
    Ok(size)
}

/// Download a blob (streamed). Visible to users who can use an entity it was uploaded
/// for.
#[utoipa::path(get, path = "/api/v1/blobs/{digest}", tag = "jobs",
    params(("digest" = String, Path, description = "sha256:<hex>")),
    responses((status = 200, content_type = "application/gzip", body = Vec<u8>),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_blob(
    State(s): State<AppState>,
    User(u): User,
    UrlPath(digest): UrlPath<String>,
) -> ApiResult<Response> {
    let size = visible_blob(&s, &u, &digest, None).await?;
    let Some(stream) = s
        .blobs
        .get_artifact(&digest, None)
        .await
        .map_err(|e| store_error("read the blob", &e))?
    else {
        tracing::warn!(message = "Blob indexed but missing from the blob store.", %digest, store = %s.blobs.url());
        return Err(blob_not_found(&digest));
    };
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/gzip"),
            ),
            (header::CONTENT_LENGTH, HeaderValue::from(size)),
            (
                header::ETAG,
                HeaderValue::from_str(&format!("\"{digest}\""))
                    .expect("a digest is a header value"),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Does the caller have this blob (in `entity`, default their own)? 200 or 404, no
/// body; either answer carries `x-hoist-max-artifact-bytes`, the largest upload
/// accepted.
#[utoipa::path(head, path = "/api/v1/blobs/{digest}", tag = "jobs",
    params(("digest" = String, Path, description = "sha256:<hex>"), BlobParams),
    responses((status = 200, description = "the entity has the blob"),
              (status = 404, description = "unknown, or not the entity's")))]
async fn head_blob(
    State(s): State<AppState>,
    User(u): User,
    UrlPath(digest): UrlPath<String>,
    Query(p): Query<BlobParams>,
) -> Response {
    let found = async {
        let entity = target_entity(&u, p.entity.as_deref())?;
        let size = visible_blob(&s, &u, &digest, Some(&entity)).await?;
        // A client skips its upload on 200: the bytes must really be there.
        match s.blobs.artifact_size(&digest).await {
            Ok(Some(_)) => Ok(size),
            Ok(None) => {
                tracing::warn!(message = "Blob indexed but missing from the blob store.", %digest, store = %s.blobs.url());
                Err(blob_not_found(&digest))
            }
            Err(e) => Err(store_error("look the blob up", &e)),
        }
    }
    .await;
    let mut resp = match found {
        Ok(size) => (
            StatusCode::OK,
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/gzip"),
                ),
                (header::CONTENT_LENGTH, HeaderValue::from(size)),
            ],
        )
            .into_response(),
        Err(e) => e.into_response(),
    };
    resp.headers_mut().insert(
        MAX_BYTES_HEADER,
        HeaderValue::from(s.cfg.max_artifact_bytes),
    );
    resp
}
