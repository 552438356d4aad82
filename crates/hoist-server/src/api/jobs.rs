//! `/api/v1/jobs`: create (a new version when the source changed), list, show,
//! versions, delete; the checks of job sources; job resolution for launches.
//!
//! Version rules: versions are `v0`, `v1`, … in creation order, never changed or
//! reused; creating a job whose source equals its latest version's source adds no
//! version and answers the latest (200 instead of 201); `latest` names the newest.

use std::net::{Ipv4Addr, Ipv6Addr};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use hoist_core::api::{CreateJob, ErrorBody, Job, JobRef, JobSource, JobVersion};
use hoist_core::names;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::blobs::validate_digest;
use super::{AppState, Json, Query};
use crate::auth::{User, UserPrincipal, entity_for};
use crate::error::{ApiError, ApiResult};
use crate::store::jobs::{NewJobVersion, VersionSel};

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_job, list_jobs))
        .routes(routes!(get_job, delete_job))
        .routes(routes!(get_job_version))
}

/// Longest accepted string in a job source (URLs, refs, paths, image references).
const MAX_FIELD: usize = 2048;
/// Longest job description.
const MAX_DESCRIPTION: usize = 4096;

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Checks a container image reference ([`names::validate_image_ref`], the same check
/// as a launch's `image`).
pub fn validate_image(image: &str) -> Result<(), String> {
    names::validate_image_ref(image).map_err(|e| e.to_string())
}

fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

/// True for `localhost`, `127.0.0.0/8` (dotted decimal) and `[::1]`.
fn loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().is_ok_and(|a| a.is_loopback());
    }
    host.parse::<Ipv4Addr>().is_ok_and(|a| a.is_loopback())
}

fn valid_host(host: &str) -> bool {
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && !host.starts_with(['-', '.'])
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

fn valid_user(user: &str) -> bool {
    !user.is_empty()
        && !user.starts_with('-')
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Checks a git remote. Accepted: `https://HOST/PATH`, `ssh://[USER@]HOST[:PORT]/PATH`,
/// `USER@HOST:PATH` (scp form), and `http://` or `git://` to loopback hosts only
/// (127.0.0.0/8, ::1, localhost: tests and local mirrors). Refused: every other
/// transport (`file://`, `ext::`, …), anything with `::`, a leading `-`, whitespace or
/// control characters, credentials in the URL.
pub fn validate_repo(repo: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "git repository {:?} is not accepted: {why}",
            clip(repo)
        ))
    };
    if repo.is_empty() {
        return bad("it is empty");
    }
    if repo.len() > MAX_FIELD {
        return bad("it is too long");
    }
    if repo.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("it contains whitespace or control characters");
    }
    if repo.starts_with('-') {
        return bad("it starts with '-'");
    }
    if outside_brackets(repo).contains("::") {
        return bad("`::` transports (such as ext::) are not allowed");
    }
    const EXPECTED: &str = "use https://HOST/PATH, ssh://HOST/PATH or git@HOST:PATH (http:// and git:// only to 127.0.0.1, ::1 or localhost)";
    if let Some((scheme, rest)) = repo.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        if path.is_empty() {
            return bad("it names no repository path");
        }
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if let Some(u) = user {
            if u.contains(':') {
                return bad(
                    "it contains a password; use a git credential helper or an SSH key instead",
                );
            }
            if !valid_user(u) {
                return bad("the user name is not valid");
            }
        }
        let host = if hostport.starts_with('[') {
            match hostport.find(']') {
                Some(i) => {
                    let port = &hostport[i + 1..];
                    if !port.is_empty() && !valid_port(port) {
                        return bad("the port is not valid");
                    }
                    &hostport[..=i]
                }
                None => return bad("the host is not valid"),
            }
        } else {
            match hostport.split_once(':') {
                Some((h, port)) => {
                    if !valid_port(&format!(":{port}")) {
                        return bad("the port is not valid");
                    }
                    h
                }
                None => hostport,
            }
        };
        if !valid_host(host) {
            return bad("the host is not valid");
        }
        return match scheme.as_str() {
            "https" | "ssh" | "git+ssh" | "ssh+git" => Ok(()),
            "http" | "git" if loopback_host(host) => Ok(()),
            "http" | "git" => bad(&format!(
                "{scheme}:// is only allowed to loopback hosts (127.0.0.1, ::1, localhost); {EXPECTED}"
            )),
            _ => bad(&format!(
                "the {scheme}:// transport is not allowed; {EXPECTED}"
            )),
        };
    }
    // scp form: USER@HOST:PATH (no slash before the colon).
    if let Some((userhost, path)) = repo.split_once(':')
        && let Some((user, host)) = userhost.split_once('@')
        && !userhost.contains('/')
    {
        if !valid_user(user) || !valid_host(host) || host.starts_with('[') {
            return bad("the user or host is not valid");
        }
        if path.is_empty() || path == "/" {
            return bad("it names no repository path");
        }
        if path.starts_with('-') {
            return bad("the path starts with '-'");
        }
        return Ok(());
    }
    bad(EXPECTED)
}

/// The text without `[…]` parts (IPv6 hosts such as `[::1]`).
fn outside_brackets(s: &str) -> String {
    let mut depth = 0usize;
    s.chars()
        .filter(|c| match c {
            '[' => {
                depth += 1;
                false
            }
            ']' => {
                depth = depth.saturating_sub(1);
                false
            }
            _ => depth == 0,
        })
        .collect()
}

fn valid_port(p: &str) -> bool {
    p.strip_prefix(':')
        .is_some_and(|d| !d.is_empty() && d.len() <= 5 && d.bytes().all(|b| b.is_ascii_digit()))
        && p[1..].parse::<u16>().is_ok_and(|n| n > 0)
}

/// A commit id: 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
pub fn validate_commit(commit: &str) -> Result<(), String> {
    if matches!(commit.len(), 40 | 64)
        && commit
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        Ok(())
    } else {
        Err(format!(
            "commit {:?} is not a commit id: expected 40 (or 64) lowercase hex digits",
            clip(commit)
        ))
    }
}

/// A branch, tag or commit name as asked for: git's ref-name rules, loosely.
pub fn validate_git_ref(r: &str) -> Result<(), String> {
    let bad = r.is_empty()
        || r.len() > 256
        || r.starts_with(['-', '/', '.'])
        || r.ends_with(['/', '.'])
        || r.ends_with(".lock")
        || r.contains("..")
        || r.contains("@{")
        || r.contains("//")
        || r.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\')
        });
    if bad {
        Err(format!(
            "git ref {:?} is not a valid branch, tag or commit name",
            clip(r)
        ))
    } else {
        Ok(())
    }
}

/// A path inside a repository or build context: relative, no `..`.
pub fn validate_rel_path(what: &str, p: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{what} {:?} is not valid: {why}", clip(p)));
    if p.is_empty() {
        return bad("it is empty");
    }
    if p.len() > MAX_FIELD || has_control(p) || p.contains('\\') {
        return bad("it is too long or contains control characters or backslashes");
    }
    if p.starts_with('/') {
        return bad("it must be relative (no leading '/')");
    }
    if p.split('/').any(|c| c == "..") {
        return bad("it must not contain '..'");
    }
    if p.starts_with('-') {
        return bad("it must not start with '-'");
    }
    Ok(())
}

fn validate_entry_point(ep: &[String]) -> Result<(), String> {
    if ep.is_empty() || ep[0].is_empty() {
        return Err("the entry point is empty; give the command to run (--entry-point)".into());
    }
    names::validate_command("the entry point", ep).map_err(|e| e.to_string())
}

/// Checks a job source on its own (a code artifact's existence is checked apart).
pub fn validate_source(src: &JobSource) -> Result<(), String> {
    match src {
        JobSource::Image { image } => validate_image(image),
        JobSource::Git {
            repo,
            git_ref,
            commit,
            entry_point,
            build_context,
            dockerfile,
        } => {
            validate_repo(repo)?;
            if let Some(r) = git_ref {
                validate_git_ref(r)?;
            }
            validate_commit(commit)?;
            validate_entry_point(entry_point)?;
            if let Some(b) = build_context {
                validate_rel_path("build context", b)?;
            }
            if let Some(d) = dockerfile {
                validate_rel_path("dockerfile", d)?;
            }
            Ok(())
        }
        JobSource::Code {
            artifact,
            entry_point,
            dockerfile,
            ..
        } => {
            validate_digest(artifact)?;
            validate_entry_point(entry_point)?;
            if let Some(d) = dockerfile {
                validate_rel_path("dockerfile", d)?;
            }
            Ok(())
        }
    }
}

fn job_not_found(entity: &str, name: &str) -> ApiError {
    ApiError::not_found(format!(
        "no job {entity}/{name}; `hoist job list` shows the jobs you can use"
    ))
}

/// `v0..v3` (or `v0` for one version).
fn version_range(job: &Job) -> String {
    match job.versions.len() {
        0 => "no versions".into(),
        1 => format!("version {}", job.latest),
        _ => format!(
            "versions {}..{}",
            job.versions
                .last()
                .map(|v| v.version.as_str())
                .unwrap_or("v0"),
            job.latest
        ),
    }
}

/// One version of a job the caller found; `None` version = latest.
fn pick_version(job: &Job, version: Option<&str>) -> ApiResult<JobVersion> {
    let label = version.unwrap_or("latest");
    let sel = VersionSel::parse(label).ok_or_else(|| {
        ApiError::bad_request(format!(
            "invalid job version {label:?}; expected vN (v0, v1, …) or latest"
        ))
    })?;
    let want = match sel {
        VersionSel::Latest => job.latest.clone(),
        VersionSel::Number(n) => crate::store::jobs::version_label(n),
    };
    job.versions
        .iter()
        .find(|v| v.version == want)
        .cloned()
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "job {}/{} has {}; there is no {label}",
                job.entity,
                job.name,
                version_range(job)
            ))
        })
}

/// Resolves a launch's `--job NAME[:VER]`: the job is looked up in the queue's entity
/// first, then in the caller's own entity; a reference that names its entity is looked
/// up there only. Returns the job's entity and the version.
pub async fn resolve_for_launch(
    s: &AppState,
    u: &UserPrincipal,
    queue_entity: &str,
    jr: &JobRef,
) -> ApiResult<(String, JobVersion)> {
    names::validate("job", &jr.name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if let Some(e) = &jr.entity {
        // Named: there only, among the entities the caller may use.
        let job = find_job(s, u, e, &jr.name).await?;
        let v = pick_version(&job, jr.version.as_deref())?;
        return Ok((job.entity, v));
    }
    let mut places = vec![queue_entity.to_string()];
    if u.name != queue_entity {
        places.push(u.name.clone());
    }
    for e in &places {
        if !u.can_use(e) {
            continue;
        }
        if let Some(job) = s.store.get_job(e, &jr.name).await? {
            let v = pick_version(&job, jr.version.as_deref())?;
            return Ok((job.entity, v));
        }
    }
    Err(ApiError::not_found(format!(
        "no job named {:?} in {} (a launch looks in the queue's entity, then in yours); `hoist job list` shows the jobs you can use",
        jr.name,
        places.join(" or ")
    )))
}

/// Create a job, or a new version of it when its source differs from the latest
/// version's (201). An identical source adds nothing and answers the job as it is
/// (200). A code job's artifact must have been uploaded for the job's entity.
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs", request_body = CreateJob,
    responses((status = 201, body = Job, description = "created, or a new version added; `latest` is it"),
              (status = 200, body = Job, description = "the latest version has this source already"),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn create_job(
    State(s): State<AppState>,
    User(u): User,
    Json(req): Json<CreateJob>,
) -> ApiResult<(StatusCode, axum::Json<Job>)> {
    names::validate("job", &req.name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let entity = entity_for(&s, &u, req.entity.as_deref(), true).await?;
    if let Some(d) = &req.description
        && (d.len() > MAX_DESCRIPTION || d.contains('\0'))
    {
        return Err(ApiError::bad_request(format!(
            "the description must be at most {MAX_DESCRIPTION} bytes of text"
        )));
    }
    validate_source(&req.source).map_err(ApiError::bad_request)?;
    if let JobSource::Code { artifact, size, .. } = &req.source {
        let refs = s.store.blob_entities(artifact).await?;
        if !refs.contains(&entity) {
            return Err(ApiError::not_found(format!(
                "no artifact {artifact} uploaded for {entity}; upload it first (POST /api/v1/blobs?entity={entity}; `hoist job create code` does both)"
            )));
        }
        let stored = s.store.blob_size(artifact).await?.unwrap_or(0);
        if stored != *size {
            return Err(ApiError::bad_request(format!(
                "the artifact {artifact} has {stored} bytes, not {size}"
            )));
        }
    }
    let (job, created) = s
        .store
        .create_job_version(
            NewJobVersion {
                entity,
                name: req.name,
                description: req.description,
                source: req.source,
                created_by: u.name.clone(),
            },
            s.now(),
        )
        .await?;
    if created {
        tracing::info!(message = "Job version created.", job = %format!("{}/{}", job.entity, job.name), version = %job.latest, by = %u.name);
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(job)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobListParams {
    /// Only this entity's jobs.
    pub entity: Option<String>,
    /// Only jobs with this name (in any of your entities).
    pub name: Option<String>,
}

/// Jobs of the entities the caller may use, each with its latest version only.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(JobListParams),
    responses((status = 200, body = Vec<Job>), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_jobs(
    State(s): State<AppState>,
    User(u): User,
    Query(p): Query<JobListParams>,
) -> ApiResult<axum::Json<Vec<Job>>> {
    if let Some(e) = &p.entity {
        entity_for(&s, &u, Some(e), false).await?;
    }
    let only = p.entity.clone().map(|e| vec![e]).or_else(|| u.visible());
    let mut jobs = s.store.list_jobs(only.as_deref()).await?;
    if let Some(n) = &p.name {
        jobs.retain(|j| &j.name == n);
    }
    Ok(axum::Json(jobs))
}

async fn find_job(s: &AppState, u: &UserPrincipal, entity: &str, name: &str) -> ApiResult<Job> {
    if !u.can_use(entity) {
        return Err(job_not_found(entity, name));
    }
    s.store
        .get_job(entity, name)
        .await?
        .ok_or_else(|| job_not_found(entity, name))
}

/// A job with all its versions, newest first.
#[utoipa::path(get, path = "/api/v1/jobs/{entity}/{name}", tag = "jobs",
    params(("entity" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_job(
    State(s): State<AppState>,
    User(u): User,
    Path((entity, name)): Path<(String, String)>,
) -> ApiResult<axum::Json<Job>> {
    Ok(axum::Json(find_job(&s, &u, &entity, &name).await?))
}

/// One version of a job: `v0`, `v1`, … or `latest`.
#[utoipa::path(get, path = "/api/v1/jobs/{entity}/{name}/versions/{version}", tag = "jobs",
    params(("entity" = String, Path), ("name" = String, Path), ("version" = String, Path, description = "vN or latest")),
    responses((status = 200, body = JobVersion), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_job_version(
    State(s): State<AppState>,
    User(u): User,
    Path((entity, name, version)): Path<(String, String, String)>,
) -> ApiResult<axum::Json<JobVersion>> {
    let job = find_job(&s, &u, &entity, &name).await?;
    Ok(axum::Json(pick_version(&job, Some(&version))?))
}

/// Delete a job and all its versions. Runs launched from it keep their copy of the
/// source; uploaded artifacts stay in the blob store.
#[utoipa::path(delete, path = "/api/v1/jobs/{entity}/{name}", tag = "jobs",
    params(("entity" = String, Path), ("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_job(
    State(s): State<AppState>,
    User(u): User,
    Path((entity, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    find_job(&s, &u, &entity, &name).await?;
    s.store.delete_job(&entity, &name).await?;
    tracing::info!(message = "Job deleted.", job = %format!("{entity}/{name}"), by = %u.name);
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repos() {
        for ok in [
            "https://github.com/org/repo.git",
            "https://github.com/org/repo",
            "ssh://git@github.com/org/repo.git",
            "ssh://git@github.com:2222/org/repo.git",
            "https://org@dev.azure.com/org/project/_git/repo",
            "git@github.com:org/repo.git",
            "git@gitlab.example.com:/srv/repo.git",
            "http://127.0.0.1:8080/repo.git",
            "git://127.0.0.1:9418/repo.git",
            "git://localhost/repo.git",
            "http://[::1]:80/repo.git",
            "http://127.1.2.3/x",
        ] {
            assert!(validate_repo(ok).is_ok(), "{ok}: {:?}", validate_repo(ok));
        }
        for bad in [
            "",
            "file:///etc",
            "file://localhost/etc/repo",
            "ext::sh -c touch% /tmp/pwned",
            "ext::sh",
            "fd::17",
            "http::[::1]/x",
            "[::1]::x",
            "http://example.com/repo.git",
            "git://example.com/repo.git",
            "http://127.0.0.1.evil.com/repo.git",
            "http://0x7f.1/repo.git",
            "-oProxyCommand=touch /tmp/x",
            "--upload-pack=touch /tmp/x",
            "https://github.com/org/repo.git --upload-pack=x",
            "https://user:token@github.com/org/repo.git",
            "https://github.com",
            "https://github.com/",
            "ssh://-oProxyCommand=x/repo",
            "git@-oProxyCommand=x:repo",
            "/srv/repo.git",
            "./repo",
            "repo",
            "https://git\nhub.com/x",
            "ftp://127.0.0.1/x",
            "git@host:-x",
        ] {
            assert!(validate_repo(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn commits_refs_paths() {
        assert!(validate_commit(&"a".repeat(40)).is_ok());
        assert!(validate_commit(&"0".repeat(64)).is_ok());
        assert!(validate_commit(&"A".repeat(40)).is_err());
        assert!(validate_commit("main").is_err());
        assert!(validate_commit(&"a".repeat(41)).is_err());
        for ok in ["main", "v1.2", "feature/x", "HEAD", "refs/tags/v1"] {
            assert!(validate_git_ref(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", "a..b", "a b", "a:b", "x.lock", "a^", "/x"] {
            assert!(validate_git_ref(bad).is_err(), "{bad}");
        }
        for ok in ["Dockerfile", "docker/Dockerfile.gpu", ".", "sub/dir"] {
            assert!(validate_rel_path("p", ok).is_ok(), "{ok}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a\\b", "-x"] {
            assert!(validate_rel_path("p", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn versions() {
        assert_eq!(VersionSel::parse("latest"), Some(VersionSel::Latest));
        assert_eq!(VersionSel::parse("v0"), Some(VersionSel::Number(0)));
        assert_eq!(VersionSel::parse("v12"), Some(VersionSel::Number(12)));
        for bad in ["", "v", "3", "v-1", "v+1", "V1", "v1x", "v9999999999"] {
            assert_eq!(VersionSel::parse(bad), None, "{bad}");
        }
    }
}
