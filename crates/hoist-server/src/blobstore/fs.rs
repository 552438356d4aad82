//! The directory store: artifacts at `<dir>/sha256/<2 hex>/<62 hex>`, log segments in
//! [`FsSegments`] under `<dir>/logs/`, upload files in `<dir>/tmp/`.
//!
//! An artifact is renamed into place from its fsynced temporary file and the directory
//! fsynced: a blob file is complete or absent, never partial.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::ByteStream;
use crate::logs::FsSegments;

/// Temporary upload files older than this are removed when the server starts (they
/// were left by a crash; younger ones may belong to another replica's upload).
const STALE_TMP: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct FsBlobs {
    dir: PathBuf,
}

impl FsBlobs {
    pub fn new(dir: PathBuf) -> FsBlobs {
        FsBlobs { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    pub fn segments(&self) -> FsSegments {
        FsSegments::new(self.dir.join("logs"))
    }

    /// Creates the layout and removes stale temporary files.
    pub async fn prepare(&self) -> io::Result<()> {
        tokio::fs::create_dir_all(self.dir.join("sha256")).await?;
        let segments = self.segments();
        tokio::task::spawn_blocking(move || segments.prepare())
            .await
            .map_err(io::Error::other)??;
        prepare_tmp(&self.tmp_dir()).await
    }

    /// Where `key` is: `sha256/<hex>` fans out by the first two digits.
    fn path(&self, key: &str) -> io::Result<PathBuf> {
        super::check_segment_key(key, 2)?;
        Ok(match key.strip_prefix("sha256/") {
            Some(hex) if hex.len() > 2 => self.dir.join("sha256").join(&hex[..2]).join(&hex[2..]),
            _ => self.dir.join(key),
        })
    }

    /// Moves a complete file into place (unless the blob is there already). Returns
    /// whether it is new.
    pub async fn persist(&self, key: &str, file: &Path) -> io::Result<bool> {
        let dest = self.path(key)?;
        let file = file.to_path_buf();
        tokio::task::spawn_blocking(move || {
            if dest.exists() {
                return Ok(false);
            }
            let parent = dest.parent().expect("blob paths have a parent");
            std::fs::create_dir_all(parent)?;
            std::fs::rename(&file, &dest)?;
            std::fs::File::open(parent)?.sync_all()?;
            Ok(true)
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Writes `data` as `key` (through a temporary file; the probe).
    pub async fn put(&self, key: &str, data: Bytes) -> io::Result<()> {
        let tmp = self
            .tmp_dir()
            .join(format!("put-{}", crate::secrets::new_id(12)));
        tokio::fs::write(&tmp, &data).await?;
        let dest = self.path(key)?;
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let r = tokio::fs::rename(&tmp, &dest).await;
        if r.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        r
    }

    pub async fn size(&self, key: &str) -> io::Result<Option<u64>> {
        match tokio::fs::metadata(self.path(key)?).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn get_range(&self, key: &str, range: Range<u64>) -> io::Result<Bytes> {
        let mut f = tokio::fs::File::open(self.path(key)?).await?;
        f.seek(io::SeekFrom::Start(range.start)).await?;
        let mut buf = vec![0; (range.end - range.start) as usize];
        f.read_exact(&mut buf).await?;
        Ok(buf.into())
    }

    /// The file's bytes in `range` (or all) as a stream; NotFound when absent.
    pub async fn get(&self, key: &str, range: Option<Range<u64>>) -> io::Result<ByteStream> {
        let mut file = tokio::fs::File::open(self.path(key)?).await?;
        let len = match range {
            Some(r) => {
                file.seek(io::SeekFrom::Start(r.start)).await?;
                r.end.saturating_sub(r.start)
            }
            None => u64::MAX,
        };
        let reader = file.take(len);
        Ok(tokio_util_stream(reader).boxed())
    }

    pub async fn delete(&self, key: &str) -> io::Result<()> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Reads `r` in 256 KiB pieces.
fn tokio_util_stream(
    mut r: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> impl futures::Stream<Item = io::Result<Bytes>> + Send + 'static {
    async_stream::stream! {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => yield Ok(Bytes::copy_from_slice(&buf[..n])),
                Err(e) => {
                    yield Err(e);
                    break;
                }
            }
        }
    }
}

/// Creates a temporary-file directory and removes its stale files.
pub async fn prepare_tmp(tmp: &Path) -> io::Result<()> {
    let tmp = tmp.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&tmp)?;
        for entry in std::fs::read_dir(&tmp)? {
            let entry = entry?;
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_TMP);
            if stale {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    })
    .await
    .map_err(io::Error::other)?
}
