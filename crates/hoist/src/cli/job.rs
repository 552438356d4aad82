//! `hoist job create image|git|code`, `hoist job list|show|delete`.
//!
//! - `create git` resolves the ref to a commit here, with `git ls-remote` (the user's
//!   own git credentials apply), and sends the commit.
//! - `create code` packs the directory with `hoist-context` (honouring `.gitignore` and
//!   `.hoistignore`), refuses above the server's size limit before uploading, skips the
//!   upload when the server has the artifact already, uploads, then creates the job.
//!
//! Each create makes a new version only when the source differs from the job's latest
//! version; otherwise the job is left as it is (and said so).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hoist_client::Client;
use hoist_context::{ContextError, PackOptions, human_bytes};
use hoist_core::api::{CreateJob, Job, JobRef, JobSource, JobVersion};
use hoist_server::api::jobs::{validate_git_ref, validate_image, validate_rel_path, validate_repo};
use indicatif::{ProgressBar, ProgressStyle};

use super::output::{Fields, Table, ago, err_line, json, or_dash, out, when};
use super::{Ctx, invalid, shell_words, split_ref};

#[derive(Debug, clap::Subcommand)]
pub enum JobCmd {
    /// Create a job, or a new version of it when its source changed.
    #[command(subcommand)]
    Create(CreateCmd),
    /// List the jobs you can use, with their latest versions.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show a job: a version's source (default: the latest) and every version.
    /// With -o json: the job, or the version when NAME:VERSION names one.
    Show(ShowArgs),
    /// Delete a job and all its versions (runs keep their copy of the source).
    #[command(visible_alias = "rm")]
    Delete(DeleteArgs),
}

#[derive(Debug, clap::Subcommand)]
pub enum CreateCmd {
    /// A prebuilt container image.
    Image(ImageArgs),
    /// A git repository at a commit (the ref is resolved to a commit now).
    Git(GitArgs),
    /// A local directory, uploaded as a code artifact.
    Code(CodeArgs),
}

#[derive(Debug, clap::Args)]
pub struct CommonArgs {
    /// The job: NAME, or ENTITY/NAME.
    pub name: String,
    /// Owner: a team you belong to (default: yourself).
    #[arg(short, long)]
    pub entity: Option<String>,
    /// A description (replaces the job's current one).
    #[arg(short, long)]
    pub description: Option<String>,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  hoist job create image train --image ghcr.io/me/train:1")]
pub struct ImageArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The image reference.
    #[arg(long, value_name = "REF")]
    pub image: String,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Remotes: https://HOST/PATH, ssh://HOST/PATH or git@HOST:PATH (http:// and git:// only to
127.0.0.1, ::1 or localhost). The ref is resolved with `git ls-remote` and your own git
credentials; a full 40-hex commit is used as it is.

Example:
  hoist job create git train --repo https://github.com/me/train.git --ref main \\
      --entry-point 'python train.py'")]
pub struct GitArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The repository.
    #[arg(long, value_name = "URL")]
    pub repo: String,
    /// A branch, tag or full commit (default: the remote's HEAD).
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,
    /// The command to run, split like a shell would: --entry-point "python train.py".
    #[arg(long, value_name = "CMD")]
    pub entry_point: String,
    /// Sub-directory of the repository to build from.
    #[arg(long, value_name = "DIR")]
    pub build_context: Option<String>,
    /// Dockerfile, relative to the build context.
    #[arg(long, value_name = "PATH")]
    pub dockerfile: Option<String>,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
What is uploaded: the directory's files, minus what .gitignore and .hoistignore files
inside it leave out (and .git), as a deterministic .tar.gz: the same files give the same
artifact, which is uploaded once.

Example:
  hoist job create code train ./src --entry-point 'python3 train.py'")]
pub struct CodeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The directory to upload.
    pub path: PathBuf,
    /// The command to run, split like a shell would: --entry-point "python3 train.py".
    #[arg(long, value_name = "CMD")]
    pub entry_point: String,
    /// Dockerfile, relative to the directory.
    #[arg(long, value_name = "PATH")]
    pub dockerfile: Option<String>,
    /// Refuse artifacts larger than this many bytes (default: the server's limit).
    #[arg(long, value_name = "BYTES")]
    pub max_size: Option<u64>,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only this entity's jobs.
    #[arg(short, long)]
    pub entity: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// NAME[:VERSION] or ENTITY/NAME[:VERSION] (VERSION: v0, v1, …, latest).
    pub job: String,
    #[arg(short, long)]
    pub entity: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// NAME or ENTITY/NAME.
    pub name: String,
    #[arg(short, long)]
    pub entity: Option<String>,
}

pub async fn run(ctx: &Ctx, cmd: JobCmd) -> anyhow::Result<()> {
    match cmd {
        JobCmd::Create(CreateCmd::Image(a)) => create_image(ctx, a).await,
        JobCmd::Create(CreateCmd::Git(a)) => create_git(ctx, a).await,
        JobCmd::Create(CreateCmd::Code(a)) => create_code(ctx, a).await,
        JobCmd::List(a) => list(ctx, a).await,
        JobCmd::Show(a) => show(ctx, a).await,
        JobCmd::Delete(a) => delete(ctx, a).await,
    }
}

fn entry_point(cmd: &str) -> anyhow::Result<Vec<String>> {
    let words =
        shell_words::split(cmd).map_err(|e| invalid(format!("--entry-point {cmd:?}: {e}")))?;
    if words.is_empty() {
        return Err(invalid("--entry-point is empty"));
    }
    Ok(words)
}

/// `(entity, name)` from NAME or ENTITY/NAME and --entity, with the name checked.
fn job_name(text: &str, entity: Option<&str>) -> anyhow::Result<(Option<String>, String)> {
    let (e, name) = split_ref("job", text, entity)?;
    hoist_core::names::validate("job", &name).map_err(|e| invalid(e.to_string()))?;
    Ok((e, name))
}

async fn send_create(
    ctx: &Ctx,
    client: &Client,
    common: CommonArgs,
    source: JobSource,
) -> anyhow::Result<()> {
    let (entity, name) = job_name(&common.name, common.entity.as_deref())?;
    let req = CreateJob {
        name,
        entity,
        source,
        description: common.description,
    };
    let (job, created) = client.create_job(&req).await?;
    if ctx.json() {
        return json(&job);
    }
    let summary = job
        .versions
        .first()
        .map(|v| source_summary(&v.source))
        .unwrap_or_default();
    let msg = match (created, job.latest.as_str()) {
        (true, "v0") => format!("Created job {}/{} v0 ({summary}).", job.entity, job.name),
        (true, v) => format!(
            "Created version {v} of job {}/{} ({summary}).",
            job.entity, job.name
        ),
        (false, v) => format!(
            "Job {}/{} is unchanged: its latest version {v} has this source.",
            job.entity, job.name
        ),
    };
    out(&msg)?;
    Ok(())
}

async fn create_image(ctx: &Ctx, a: ImageArgs) -> anyhow::Result<()> {
    validate_image(&a.image).map_err(|e| invalid(format!("--image: {e}")))?;
    job_name(&a.common.name, a.common.entity.as_deref())?;
    let client = ctx.client()?;
    send_create(ctx, &client, a.common, JobSource::Image { image: a.image }).await
}

// ---------------------------------------------------------------------------------
// git

fn is_full_commit(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// How long `git ls-remote` may take.
const LS_REMOTE_TIMEOUT: Duration = Duration::from_secs(120);

/// Resolves `git_ref` (default HEAD) in `repo` to a commit with `git ls-remote`.
pub async fn resolve_commit(repo: &str, git_ref: Option<&str>) -> anyhow::Result<String> {
    if let Some(r) = git_ref
        && is_full_commit(r)
    {
        return Ok(r.to_ascii_lowercase());
    }
    let pattern = git_ref.unwrap_or("HEAD");
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("ls-remote")
        .arg("--")
        .arg(repo)
        .arg(pattern)
        // Annotated tags: the commit they point to is listed as `TAG^{}`, which the
        // pattern alone does not match.
        .arg(format!("{pattern}^{{}}"))
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ALLOW_PROTOCOL", "https:ssh:git:http")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "`git` is not installed (or not on PATH); it is needed to resolve --ref"
            )
        } else {
            anyhow::anyhow!("cannot run git: {e}")
        }
    })?;
    let output = tokio::time::timeout(LS_REMOTE_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "`git ls-remote {repo}` did not answer within {}s",
                LS_REMOTE_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| anyhow::anyhow!("git ls-remote failed: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        anyhow::bail!(
            "`git ls-remote {repo}` failed ({}): {}",
            output.status,
            stderr.trim()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    pick_commit(&text, pattern).ok_or_else(|| {
        let full = if pattern.bytes().all(|b| b.is_ascii_hexdigit()) {
            " (a commit must be given in full: 40 hex digits)"
        } else {
            ""
        };
        invalid(format!(
            "no branch or tag {pattern:?} in {repo}{full}; `git ls-remote {repo}` lists what there is"
        ))
    })
}

/// The commit a ref names in `git ls-remote` output: `HEAD`, a full `refs/…` name, a
/// branch, else a tag (peeled to its commit).
fn pick_commit(ls_remote: &str, pattern: &str) -> Option<String> {
    let refs: Vec<(&str, &str)> = ls_remote
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(sha, _)| is_full_commit(sha))
        .collect();
    let find = |name: &str| {
        refs.iter()
            .find(|(_, r)| *r == name)
            .map(|(sha, _)| sha.to_ascii_lowercase())
    };
    if pattern == "HEAD" || pattern.starts_with("refs/") {
        return find(&format!("{pattern}^{{}}")).or_else(|| find(pattern));
    }
    find(&format!("refs/heads/{pattern}"))
        .or_else(|| find(&format!("refs/tags/{pattern}^{{}}")))
        .or_else(|| find(&format!("refs/tags/{pattern}")))
}

async fn create_git(ctx: &Ctx, a: GitArgs) -> anyhow::Result<()> {
    validate_repo(&a.repo).map_err(invalid)?;
    if let Some(r) = &a.git_ref {
        validate_git_ref(r).map_err(|e| invalid(format!("--ref: {e}")))?;
    }
    if let Some(b) = &a.build_context {
        validate_rel_path("--build-context", b).map_err(invalid)?;
    }
    if let Some(d) = &a.dockerfile {
        validate_rel_path("--dockerfile", d).map_err(invalid)?;
    }
    let entry_point = entry_point(&a.entry_point)?;
    job_name(&a.common.name, a.common.entity.as_deref())?;
    let client = ctx.client()?;
    let commit = resolve_commit(&a.repo, a.git_ref.as_deref()).await?;
    if !ctx.json() {
        err_line(&format!(
            "hoist: {} {} is commit {commit}",
            a.repo,
            a.git_ref.as_deref().unwrap_or("HEAD")
        ));
    }
    let source = JobSource::Git {
        repo: a.repo,
        git_ref: a.git_ref,
        commit,
        entry_point,
        build_context: a.build_context,
        dockerfile: a.dockerfile,
    };
    send_create(ctx, &client, a.common, source).await
}

// ---------------------------------------------------------------------------------
// code

/// Progress for people: a bar on a terminal, a few plain lines otherwise.
#[derive(Clone)]
struct Meter {
    bar: Option<ProgressBar>,
}

impl Meter {
    fn new(quiet: bool) -> Meter {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template(
                    "{msg:>10} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            b
        });
        Meter { bar }
    }
    fn start(&self, what: &str, total: u64) {
        if let Some(b) = &self.bar {
            b.reset();
            // Unknown yet (0): an empty bar rather than a full one.
            b.set_length(total.max(1));
            b.set_position(0);
            b.set_message(what.to_string());
        }
    }
    fn set(&self, done: u64, total: u64) {
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.set_position(done);
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn context_error(dir: &Path, e: ContextError) -> anyhow::Error {
    match e {
        ContextError::Io { .. } => anyhow::anyhow!("cannot pack {}: {e}", dir.display()),
        e => invalid(format!("cannot pack {}: {e}", dir.display())),
    }
}

/// A digest no artifact has: asked about only to learn the server's size limit.
const PROBE_DIGEST: &str =
    "sha256:0000000000000000000000000000000000000000000000000000000000000000";

async fn create_code(ctx: &Ctx, a: CodeArgs) -> anyhow::Result<()> {
    let entry_point = entry_point(&a.entry_point)?;
    if let Some(d) = &a.dockerfile {
        validate_rel_path("--dockerfile", d).map_err(invalid)?;
    }
    let (entity, _) = job_name(&a.common.name, a.common.entity.as_deref())?;
    let meta =
        std::fs::metadata(&a.path).map_err(|e| invalid(format!("{}: {e}", a.path.display())))?;
    if !meta.is_dir() {
        return Err(invalid(format!(
            "{} is not a directory; give the directory to upload",
            a.path.display()
        )));
    }
    if let Some(d) = &a.dockerfile
        && !a.path.join(d).is_file()
    {
        return Err(invalid(format!(
            "--dockerfile {d}: no such file in {}",
            a.path.display()
        )));
    }
    let client = ctx.client()?;
    let server_limit = client
        .head_blob(PROBE_DIGEST, entity.as_deref())
        .await?
        .max_bytes;
    let limit = match (server_limit, a.max_size) {
        (Some(s), Some(m)) => Some(s.min(m)),
        (s, m) => s.or(m),
    };
    let quiet = ctx.json();
    let meter = Meter::new(quiet);
    meter.start("packing", 0);
    let progress = {
        let meter = meter.clone();
        Box::new(move |done, total| meter.set(done, total)) as hoist_context::Progress
    };
    let dir = a.path.clone();
    let packed = tokio::task::spawn_blocking(move || {
        hoist_context::pack_dir(
            &dir,
            &PackOptions {
                max_bytes: limit,
                progress: Some(progress),
                temp_dir: None,
            },
        )
    })
    .await
    .map_err(|e| anyhow::anyhow!("packing failed: {e}"))?;
    meter.finish();
    let packed = packed.map_err(|e| context_error(&a.path, e))?;
    if let Some(limit) = limit
        && packed.compressed > limit
    {
        return Err(invalid(format!(
            "the packed artifact of {} is {} ({} bytes), over the limit of {} ({limit} bytes); leave large files out with .hoistignore",
            a.path.display(),
            human_bytes(packed.compressed),
            packed.compressed,
            human_bytes(limit)
        )));
    }
    if !quiet {
        err_line(&format!(
            "hoist: packed {} ({} files, {}; {} compressed): {}",
            a.path.display(),
            packed.files,
            human_bytes(packed.bytes),
            human_bytes(packed.compressed),
            packed.digest
        ));
    }
    let have = client
        .head_blob(&packed.digest, entity.as_deref())
        .await?
        .exists;
    if have {
        if !quiet {
            err_line("hoist: the server has this artifact already; nothing to upload");
        }
    } else {
        if !quiet && meter.bar.is_none() {
            err_line(&format!(
                "hoist: uploading {}",
                human_bytes(packed.compressed)
            ));
        }
        meter.start("uploading", packed.compressed);
        let total = packed.compressed;
        let m = meter.clone();
        let blob = client
            .upload_blob_file(&packed.path, entity.as_deref(), move |done| {
                m.set(done, total)
            })
            .await;
        meter.finish();
        let blob = blob?;
        if blob.digest != packed.digest {
            anyhow::bail!(
                "the server stored the upload as {}, not {}; the upload was damaged in transit",
                blob.digest,
                packed.digest
            );
        }
        if !quiet {
            err_line("hoist: uploaded");
        }
    }
    let source = JobSource::Code {
        artifact: packed.digest.clone(),
        size: packed.compressed,
        entry_point,
        dockerfile: a.dockerfile,
    };
    send_create(ctx, &client, a.common, source).await
}

// ---------------------------------------------------------------------------------
// list, show, delete

/// One line about a source: the image, `repo@commit`, or the artifact.
pub fn source_summary(s: &JobSource) -> String {
    match s {
        JobSource::Image { image } => image.clone(),
        JobSource::Git { repo, commit, .. } => {
            format!("{repo}@{}", &commit[..commit.len().min(12)])
        }
        JobSource::Code { artifact, size, .. } => {
            let short = artifact
                .strip_prefix("sha256:")
                .map(|h| format!("sha256:{}", &h[..h.len().min(12)]))
                .unwrap_or_else(|| artifact.clone());
            format!("{short} ({})", human_bytes(*size))
        }
    }
}

async fn list(ctx: &Ctx, a: ListArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let jobs = client.list_jobs(a.entity.as_deref()).await?;
    if ctx.json() {
        return json(&jobs);
    }
    if jobs.is_empty() {
        out(
            "No jobs. Create one with `hoist job create image|git|code NAME …` (see `hoist job create --help`).",
        )?;
        return Ok(());
    }
    let mut t = Table::new(&["ENTITY/NAME", "LATEST", "TYPE", "SOURCE", "UPDATED"]);
    for j in &jobs {
        let v = j.versions.first();
        t.row(vec![
            format!("{}/{}", j.entity, j.name),
            j.latest.clone(),
            v.map(|v| v.source.kind().to_string()).unwrap_or_default(),
            v.map(|v| source_summary(&v.source)).unwrap_or_default(),
            v.map(|v| ago(v.created_at)).unwrap_or_default(),
        ]);
    }
    t.print()
}

/// The entity of a job given by NAME alone: the one you can use (yours first).
async fn resolve(client: &Client, entity: Option<String>, name: &str) -> anyhow::Result<String> {
    if let Some(e) = entity {
        return Ok(e);
    }
    let found: Vec<Job> = client
        .list_jobs(None)
        .await?
        .into_iter()
        .filter(|j| j.name == name)
        .collect();
    match found.len() {
        0 => anyhow::bail!(
            "no job named {name:?} that you can use; `hoist job list` shows the jobs you can use"
        ),
        1 => Ok(found[0].entity.clone()),
        _ => {
            let me = client.me().await?;
            if let Some(j) = found.iter().find(|j| j.entity == me.user.name) {
                return Ok(j.entity.clone());
            }
            Err(invalid(format!(
                "job {name:?} exists in several of your entities ({}); name one as ENTITY/{name} or with --entity",
                found
                    .iter()
                    .map(|j| j.entity.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }
}

fn source_fields(f: &mut Fields, s: &JobSource) {
    f.add("type", s.kind());
    match s {
        JobSource::Image { image } => f.add("image", image),
        JobSource::Git {
            repo,
            git_ref,
            commit,
            entry_point,
            build_context,
            dockerfile,
        } => {
            f.add("repo", repo);
            f.add("ref", git_ref.as_deref().unwrap_or("HEAD (default)"));
            f.add("commit", commit);
            f.add(
                "build context",
                or_dash(build_context.as_deref().unwrap_or("")),
            );
            f.add("dockerfile", or_dash(dockerfile.as_deref().unwrap_or("")));
            f.add("entry point", shell_words::join(entry_point));
        }
        JobSource::Code {
            artifact,
            size,
            entry_point,
            dockerfile,
        } => {
            f.add("artifact", artifact);
            f.add("size", format!("{} ({size} bytes)", human_bytes(*size)));
            f.add("dockerfile", or_dash(dockerfile.as_deref().unwrap_or("")));
            f.add("entry point", shell_words::join(entry_point));
        }
    }
}

fn describe(job: &Job, v: &JobVersion) -> String {
    let mut f = Fields::new();
    f.add("job", format!("{}/{}", job.entity, job.name));
    f.add("description", or_dash(&job.description));
    f.add("created", when(job.created_at));
    f.add("latest", &job.latest);
    let label = if v.version == job.latest {
        format!("{} (latest)", v.version)
    } else {
        v.version.clone()
    };
    f.add("version", label);
    source_fields(&mut f, &v.source);
    f.add(
        "version created",
        format!("{} by {}", when(v.created_at), v.created_by),
    );
    let mut s = f.render();
    let mut t = Table::new(&["VERSION", "TYPE", "SOURCE", "CREATED", "BY"]);
    for v in &job.versions {
        t.row(vec![
            v.version.clone(),
            v.source.kind().to_string(),
            source_summary(&v.source),
            ago(v.created_at),
            v.created_by.clone(),
        ]);
    }
    s.push_str("\nversions:\n");
    s.push_str(
        &t.render()
            .lines()
            .map(|l| format!("  {l}"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    s
}

async fn show(ctx: &Ctx, a: ShowArgs) -> anyhow::Result<()> {
    let (entity, rest) = split_ref("job", &a.job, a.entity.as_deref())?;
    let jr = JobRef::parse(&rest).map_err(invalid)?;
    let client = ctx.client()?;
    let entity = resolve(&client, entity, &jr.name).await?;
    let job = client.get_job(&entity, &jr.name).await?;
    let version = match &jr.version {
        None => None,
        Some(v) => Some(client.get_job_version(&entity, &jr.name, v).await?),
    };
    if ctx.json() {
        return match &version {
            Some(v) => json(v),
            None => json(&job),
        };
    }
    let v = match version {
        Some(v) => v,
        None => job
            .versions
            .first()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("job {entity}/{} has no versions", jr.name))?,
    };
    out(&describe(&job, &v))?;
    Ok(())
}

async fn delete(ctx: &Ctx, a: DeleteArgs) -> anyhow::Result<()> {
    let (entity, name) = job_name(&a.name, a.entity.as_deref())?;
    let client = ctx.client()?;
    let entity = resolve(&client, entity, &name).await?;
    client.delete_job(&entity, &name).await?;
    if !ctx.json() {
        out(&format!("Deleted job {entity}/{name}."))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const C: &str = "3333333333333333333333333333333333333333";

    #[test]
    fn picks_commits_from_ls_remote() {
        let out = format!(
            "{A}\tHEAD\n{A}\trefs/heads/main\n{B}\trefs/heads/dev\n{C}\trefs/tags/v1\n{B}\trefs/tags/v1^{{}}\n{C}\trefs/tags/light\n{A}\trefs/heads/feature/main\n"
        );
        assert_eq!(pick_commit(&out, "HEAD").as_deref(), Some(A));
        assert_eq!(pick_commit(&out, "main").as_deref(), Some(A));
        assert_eq!(pick_commit(&out, "dev").as_deref(), Some(B));
        // Annotated tags resolve to the commit, not the tag object.
        assert_eq!(pick_commit(&out, "v1").as_deref(), Some(B));
        assert_eq!(pick_commit(&out, "light").as_deref(), Some(C));
        assert_eq!(pick_commit(&out, "refs/heads/dev").as_deref(), Some(B));
        assert_eq!(pick_commit(&out, "nope"), None);
        assert_eq!(pick_commit("", "HEAD"), None);
    }

    #[test]
    fn summaries() {
        let s = JobSource::Git {
            repo: "https://h/r.git".into(),
            git_ref: None,
            commit: A.into(),
            entry_point: vec!["x".into()],
            build_context: None,
            dockerfile: None,
        };
        assert_eq!(source_summary(&s), "https://h/r.git@111111111111");
        let c = JobSource::Code {
            artifact: format!("sha256:{}", "ab".repeat(32)),
            size: 2048,
            entry_point: vec!["x".into()],
            dockerfile: None,
        };
        assert_eq!(source_summary(&c), "sha256:abababababab (2.0 KiB)");
    }
}
