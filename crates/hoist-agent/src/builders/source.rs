//! Getting a job's source onto the agent's disk: a git commit (the `git` CLI, through
//! tokio::process) or a code artifact (downloaded, then unpacked with
//! [`hoist_context::unpack`]).
//!
//! git runs with `GIT_TERMINAL_PROMPT=0` (and ssh in batch mode unless
//! `GIT_SSH_COMMAND` is set), so a missing credential fails instead of waiting for a
//! person; only the `https`, `http`, `ssh` and `git` transports are allowed
//! (`GIT_ALLOW_PROTOCOL`: no `file://`, no `ext::`); the URL and the commit always come
//! after `--`. The commit is fetched alone (`git fetch --depth 1 -- URL COMMIT`, which
//! servers speaking protocol v2 allow); when the server refuses, every branch and tag
//! is fetched and the commit checked out from them. Submodules and LFS objects are not
//! fetched. URLs are shown without their user-info.

use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::{BuildError, GitError};
use crate::logs::{LogSink, TAIL_LINES};

/// `repo` with any `user:password@` removed, for messages.
pub(crate) fn redact_url(repo: &str) -> String {
    if let Some((scheme, rest)) = repo.split_once("://") {
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if let Some((_, host)) = authority.rsplit_once('@') {
            return format!("{scheme}://***@{host}{path}");
        }
    }
    repo.to_string()
}

/// Resolves `rel` (relative to `root`) to an existing path inside `root`: absolute
/// paths, `..` that climbs out, and links that lead out are refused. Returns the
/// absolute path and the normalised relative one (`/`-separated). Blocking (it asks
/// the filesystem): call it from [`super::off_runtime`].
pub(crate) fn resolve_inside(
    root: &Path,
    rel: &str,
    what: &str,
    describe: &str,
) -> Result<(PathBuf, String), BuildError> {
    let outside = || {
        BuildError::Source(format!(
            "the {what} path {rel:?} points outside the build context ({describe}); give a path relative to the build context"
        ))
    };
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(s) => parts.push(s),
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(outside());
                }
            }
            Component::RootDir | Component::Prefix(_) => return Err(outside()),
        }
    }
    let normalised: PathBuf = parts.iter().collect();
    let shown = normalised.to_string_lossy().into_owned();
    let abs = root.join(&normalised);
    let real_root = std::fs::canonicalize(root).map_err(|source| BuildError::Io {
        message: format!("{}: {source}", root.display()),
        source,
    })?;
    match std::fs::canonicalize(&abs) {
        Ok(real) if real.starts_with(&real_root) => Ok((real, shown)),
        Ok(_) => Err(outside()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A dangling link that points out is still "outside".
            if let Ok(t) = std::fs::read_link(&abs)
                && (t.is_absolute() || !link_inside(&normalised, &t))
            {
                return Err(outside());
            }
            Err(BuildError::Source(format!(
                "the {what} {rel:?} does not exist in {describe}"
            )))
        }
        Err(source) => Err(BuildError::Io {
            message: format!("{what} {rel:?}: {source}"),
            source,
        }),
    }
}

fn link_inside(link_rel: &Path, target: &Path) -> bool {
    let mut depth = link_rel.components().count().saturating_sub(1) as i64;
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::ParentDir => depth -= 1,
            Component::CurDir => {}
            _ => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// Whether `commit` looks like a git object name (hex, 4 to 64 digits).
fn is_commit_id(commit: &str) -> bool {
    (4..=64).contains(&commit.len()) && commit.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Runs `git` with hoist's environment in `dir`; returns its standard output.
async fn git(dir: &Path, args: &[&str], timeout: Duration) -> Result<String, GitError> {
    let mut cmd = Command::new("git");
    cmd.arg("-C")
        .arg(dir)
        .args([
            "-c",
            "advice.detachedHead=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GCM_INTERACTIVE", "never")
        .env("GIT_ALLOW_PROTOCOL", "https:http:ssh:git")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if std::env::var_os("GIT_SSH_COMMAND").is_none() && std::env::var_os("GIT_SSH").is_none() {
        cmd.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
    }
    let child = cmd.spawn().map_err(GitError::Spawn)?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return Err(GitError::Wait(e)),
        Err(_) => {
            return Err(GitError::Timeout {
                command: args.first().unwrap_or(&"").to_string(),
                timeout,
            });
        }
    };
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let mut stderr: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(redact_urls_in)
        .filter(|l| !l.trim().is_empty())
        .collect();
    if stderr.len() > TAIL_LINES {
        stderr.drain(..stderr.len() - TAIL_LINES);
    }
    Err(GitError::Exited {
        status: out.status,
        stderr,
    })
}

/// A line of git's output with the user-info of any URL in it masked (git quotes the
/// URL it was given, password included, in some of its errors).
fn redact_urls_in(line: &str) -> String {
    line.split(' ')
        .map(|w| {
            if w.contains("://") {
                redact_url(w)
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Fetches `commit` of `repo` into `dir` (a new, empty directory) and checks it out.
pub(crate) async fn fetch_git(
    repo: &str,
    commit: &str,
    dir: &Path,
    timeout: Duration,
    logs: &LogSink,
) -> Result<(), BuildError> {
    let shown = redact_url(repo);
    if !is_commit_id(commit) {
        return Err(BuildError::Source(format!(
            "the job's git commit {commit:?} is not a commit id"
        )));
    }
    let fail = |what: &str, source: GitError| {
        let lines = source.lines();
        for l in &lines {
            logs.system(l);
        }
        BuildError::Git {
            message: format!("{what} {shown} at {commit} failed: {source}"),
            output_tail: lines,
            source,
        }
    };
    logs.system(&format!("[hoist: fetching {shown} at {commit}]"));
    git(dir, &["init", "-q"], timeout)
        .await
        .map_err(|e| fail("git init for", e))?;
    let direct = git(
        dir,
        &[
            "fetch",
            "--quiet",
            "--depth",
            "1",
            "--no-tags",
            "--",
            repo,
            commit,
        ],
        timeout,
    )
    .await;
    let checkout_target = match direct {
        Ok(_) => "FETCH_HEAD".to_string(),
        Err(e) => {
            logs.system(&format!(
                "[hoist: the server did not give commit {commit} alone ({e}); fetching its branches and tags]"
            ));
            git(
                dir,
                &[
                    "fetch",
                    "--quiet",
                    "--no-tags",
                    "--",
                    repo,
                    "+refs/heads/*:refs/remotes/origin/*",
                    "+refs/tags/*:refs/tags/*",
                ],
                timeout,
            )
            .await
            .map_err(|e| fail("git fetch of", e))?;
            commit.to_string()
        }
    };
    git(
        dir,
        &["checkout", "--quiet", "--detach", &checkout_target, "--"],
        timeout,
    )
    .await
    .map_err(|e| fail("git checkout of", e))?;
    let head = git(dir, &["rev-parse", "HEAD"], timeout)
        .await
        .map_err(|e| fail("git rev-parse of", e))?;
    if !head.starts_with(&commit.to_ascii_lowercase()) {
        return Err(BuildError::Source(format!(
            "fetching {shown} at {commit} gave commit {head}"
        )));
    }
    logs.system(&format!("[hoist: checked out {head}]"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("https://user:tok@github.com/a/b.git"),
            "https://***@github.com/a/b.git"
        );
        assert_eq!(
            redact_url("https://github.com/a/b.git"),
            "https://github.com/a/b.git"
        );
        assert_eq!(
            redact_url("git@github.com:a/b.git"),
            "git@github.com:a/b.git"
        );
        assert_eq!(redact_url("ssh://git@h:22/x"), "ssh://***@h:22/x");
        assert_eq!(
            redact_urls_in("fatal: unable to access 'https://u:tok@h/x.git/': refused"),
            "fatal: unable to access 'https://***@h/x.git/': refused"
        );
    }

    #[test]
    fn commit_ids() {
        assert!(is_commit_id("0123abcd"));
        assert!(is_commit_id(&"a".repeat(40)));
        assert!(!is_commit_id("main"));
        assert!(!is_commit_id("--upload-pack=x"));
        assert!(!is_commit_id("abc"));
    }

    #[test]
    fn inside_checks() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/b")).unwrap();
        let (abs, rel) = resolve_inside(t.path(), "a/./b/", "context", "x").unwrap();
        assert_eq!(rel, "a/b");
        assert!(abs.ends_with("a/b"));
        assert_eq!(resolve_inside(t.path(), "a/../a", "c", "x").unwrap().1, "a");
        assert!(resolve_inside(t.path(), "../x", "c", "x").is_err());
        let e = resolve_inside(t.path(), "nope", "build context", "repo@1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the build context \"nope\" does not exist in repo@1"
        );
        std::os::unix::fs::symlink("../../outside", t.path().join("a/dangling")).unwrap();
        let e = resolve_inside(t.path(), "a/dangling", "Dockerfile", "x").unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
    }
}
