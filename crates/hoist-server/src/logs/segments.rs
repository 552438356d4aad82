//! Where log segments are kept: the [`SegmentStore`] trait and its filesystem
//! implementation, [`FsSegments`] (`<blob dir>/logs/`). An object-store backend
//! implements the same trait.
//!
//! A segment key is `<run id>/<name>`; every segment of a run shares the prefix, so a
//! run's log is deleted as a whole.

use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

/// Storage of log segments: byte strings under keys.
#[async_trait]
pub trait SegmentStore: Send + Sync + 'static {
    /// Whether [`append`](Self::append) may write after the start of an existing
    /// segment. A store that cannot (most object stores) gets a new segment for every
    /// append.
    fn appendable(&self) -> bool;

    /// Writes `data` at byte `at` of segment `key` (creating the segment when `at` is
    /// 0) and drops whatever the segment held from `at` on. Durable when it returns.
    async fn append(&self, key: &str, at: u64, data: Bytes) -> io::Result<()>;

    /// `len` bytes from byte `at` of segment `key`; an error when the segment is
    /// missing or shorter.
    async fn read(&self, key: &str, at: u64, len: usize) -> io::Result<Vec<u8>>;

    /// Deletes every segment of a run; nothing to delete is not an error.
    async fn delete_run(&self, run_id: &str) -> io::Result<()>;
}

/// Segments as files under a directory: `<root>/<run id>/<name>`. Writes are
/// positioned writes followed by `fdatasync`; a new segment's directory entry is
/// made durable too (the run directory, and the root when the run directory is new).
#[derive(Debug, Clone)]
pub struct FsSegments {
    root: PathBuf,
}

impl FsSegments {
    /// Segments under `root` (which the server creates at start; see
    /// [`FsSegments::prepare`]).
    pub fn new(root: impl Into<PathBuf>) -> FsSegments {
        FsSegments { root: root.into() }
    }

    /// Creates the root directory.
    pub fn prepare(&self) -> io::Result<()> {
        std::fs::create_dir_all(&self.root)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> io::Result<PathBuf> {
        // Keys are made by the server from run ids and numbers; refuse anything that
        // could leave the root all the same.
        crate::blobstore::check_segment_key(key, 2)?;
        Ok(self.root.join(key))
    }

    fn run_dir(&self, run_id: &str) -> io::Result<PathBuf> {
        let p = self.path(&format!("{run_id}/x"))?;
        Ok(p.parent().expect("has a parent").to_path_buf())
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[async_trait]
impl SegmentStore for FsSegments {
    fn appendable(&self) -> bool {
        true
    }

    async fn append(&self, key: &str, at: u64, data: Bytes) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let path = self.path(key)?;
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let dir = path.parent().expect("has a parent");
            let new = at == 0;
            let mut new_dir = false;
            if new && !dir.exists() {
                std::fs::create_dir_all(dir)?;
                new_dir = true;
            }
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create(new)
                .truncate(false)
                .open(&path)?;
            f.write_all_at(&data, at)?;
            f.set_len(at + data.len() as u64)?;
            f.sync_data()?;
            if new {
                sync_dir(dir)?;
                if new_dir {
                    sync_dir(&root)?;
                }
            }
            Ok(())
        })
        .await
        .map_err(io::Error::other)?
    }

    async fn read(&self, key: &str, at: u64, len: usize) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let path = self.path(key)?;
        tokio::task::spawn_blocking(move || {
            let f = std::fs::File::open(&path)?;
            let mut buf = vec![0; len];
            f.read_exact_at(&mut buf, at)?;
            Ok(buf)
        })
        .await
        .map_err(io::Error::other)?
    }

    async fn delete_run(&self, run_id: &str) -> io::Result<()> {
        let dir = self.run_dir(run_id)?;
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}
