//! A job's source checked out into a directory (for local-process runs, which run the
//! entry point in the source tree instead of an image). The filesystem work (creating
//! the directory, resolving the build context, unpacking) runs on tokio's blocking
//! pool; `git` runs through tokio::process.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hoist_core::api::JobSource;

use super::{ArtifactSource, BuildError, off_runtime, unpack_artifact};
use crate::logs::LogSink;

/// Longest a `git fetch` may take.
const GIT_TIMEOUT: Duration = Duration::from_secs(600);
/// Largest unpacked code artifact.
const MAX_UNPACKED: u64 = 8 << 30;

/// Puts the source of a git or code job into `dest` (created, must not exist or be
/// empty). Returns the directory the entry point runs in (the git build context, or
/// `dest`). Image jobs have nothing to check out.
pub async fn checkout(
    source: &JobSource,
    dest: &Path,
    artifacts: &dyn ArtifactSource,
    logs: &LogSink,
) -> Result<PathBuf, BuildError> {
    tokio::fs::create_dir_all(dest)
        .await
        .map_err(|source| BuildError::Io {
            message: format!("cannot create {}: {source}", dest.display()),
            source,
        })?;
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
                    let (dest, sub, repo) = (dest.to_path_buf(), sub.clone(), repo.clone());
                    off_runtime("resolving the build context", move || {
                        super::source::resolve_inside(&dest, &sub, "build context", &repo)
                            .map(|(p, _)| p)
                    })
                    .await
                }
                None => Ok(dest.to_path_buf()),
            }
        }
        JobSource::Code { artifact, .. } => {
            let parent = dest.parent().unwrap_or(dest).to_path_buf();
            let tmp = off_runtime("creating a temporary file", move || {
                tempfile::NamedTempFile::new_in(&parent).map_err(|source| BuildError::Io {
                    message: format!("cannot create a temporary file: {source}"),
                    source,
                })
            })
            .await?;
            logs.system(&format!("[hoist: fetching code artifact {artifact}]"));
            if let Err(source) = artifacts.fetch(artifact, tmp.path()).await {
                // (Deleting the file is a blocking call too.)
                let _ = off_runtime("removing the download", move || {
                    drop(tmp);
                    Ok(())
                })
                .await;
                return Err(BuildError::Artifact {
                    message: format!("fetching code artifact {artifact} failed: {source}"),
                    source,
                });
            }
            let (to, digest) = (dest.to_path_buf(), artifact.clone());
            off_runtime("unpacking the code artifact", move || {
                let unpacked = unpack_artifact(tmp.path(), &to, MAX_UNPACKED);
                drop(tmp);
                unpacked.map_err(|source| BuildError::Context {
                    message: format!("unpacking code artifact {digest} failed: {source}"),
                    source,
                })
            })
            .await?;
            Ok(dest.to_path_buf())
        }
    }
}
