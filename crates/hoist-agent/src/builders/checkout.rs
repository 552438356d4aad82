//! A job's source checked out into a directory (for local-process runs, which run the
//! entry point in the source tree instead of an image).

use std::path::Path;
use std::time::Duration;

use hoist_core::api::JobSource;

use super::{ArtifactSource, BuildError};
use crate::logs::LogSink;

/// Longest a `git fetch` may take.
const GIT_TIMEOUT: Duration = Duration::from_secs(600);
/// Puts the source of a git or code job into `dest` (created, must not exist or be
/// empty). Returns the directory the entry point runs in (the git build context, or
/// `dest`). Image jobs have nothing to check out. A code artifact unpacks into at most
/// `max_unpacked` bytes (the run's disk budget).
pub async fn checkout(
    source: &JobSource,
    dest: &Path,
    artifacts: &dyn ArtifactSource,
    logs: &LogSink,
    max_unpacked: u64,
) -> Result<std::path::PathBuf, BuildError> {
    std::fs::create_dir_all(dest)
        .map_err(|e| BuildError::new(format!("cannot create {}: {e}", dest.display())))?;
    match source {
        JobSource::Image { .. } => Ok(dest.to_path_buf()),
        JobSource::Git {
            repo,
            commit,
            build_context,
            ..
        } => {
            super::source::fetch_git(repo, commit, dest, GIT_TIMEOUT, logs).await?;
            match build_context {
                Some(sub) => {
                    super::source::resolve_inside(dest, sub, "build context", repo).map(|(p, _)| p)
                }
                None => Ok(dest.to_path_buf()),
            }
        }
        JobSource::Code { artifact, .. } => {
            let tmp = tempfile::NamedTempFile::new_in(dest.parent().unwrap_or(dest))
                .map_err(|e| BuildError::new(format!("cannot create a temporary file: {e}")))?;
            logs.system(&format!("[hoist: fetching code artifact {artifact}]"));
            artifacts.fetch(artifact, tmp.path()).await.map_err(|e| {
                BuildError::new(format!("fetching code artifact {artifact} failed: {e}"))
            })?;
            let (file, to) = (tmp.path().to_path_buf(), dest.to_path_buf());
            tokio::task::spawn_blocking(move || {
                let f = std::fs::File::open(&file)?;
                hoist_context::unpack(f, &to, Some(max_unpacked))
                    .map_err(|e| std::io::Error::other(e.to_string()))
            })
            .await
            .map_err(|e| BuildError::new(format!("unpacking the code artifact failed: {e}")))?
            .map_err(|e| {
                BuildError::new(format!("unpacking code artifact {artifact} failed: {e}"))
            })?;
            Ok(dest.to_path_buf())
        }
    }
}
