//! The `local-process` runner: the run's command on the agent's machine.
//!
//! - Each run gets its own process group (stopping signals the whole group) and its own
//!   directory, `<work-dir>/<run id>`: the working directory (unless the queue config
//!   names one), and where a git or code job's source is checked out (`src/`).
//! - The job's environment ([`LocalProcessRunner::environment`]): with
//!   `local-process.allow-env-passthrough: false` (the default) a minimal base of the
//!   agent's ([`BASE_ENV`] and `LC_*`); with `true` all of the agent's. Either way
//!   without the variables the agent never hands out (names that look secret, values
//!   that look like credentials, its `HOIST_*` settings; see [`crate::host_env`]) unless
//!   `env-allow-list` names them. On top: the queue config's `env` (a `NAME` without a
//!   value is taken from the agent's environment under the same rule), then the run's
//!   own env and hoist's `HOIST_*` variables.
//! - Disk: a code artifact unpacks into at most `local-process.max-run-dir-bytes`, and
//!   a watcher measures the run's directory while the job runs (a walk on a blocking
//!   thread, less often the longer it takes); a job whose directory outgrows the budget
//!   is stopped and fails with that reason ([`Exit::Failed`]).
//! - The run's directory is deleted when the run ends, off the runtime; after a
//!   failure it is kept when `local-process.keep-failed-run-dirs` is set.
//!
//! A local process cannot be re-adopted (its output pipes died with the agent). The
//! runner records each run's process group in `<work-dir>/.pids/<run id>`; an agent
//! restarted after a crash stops whatever its predecessor left running (after checking
//! the process still belongs to that run) and reports the run failed ("agent
//! restarted").
//!
//! Every task an execution spawns (output pumps, the process supervisor, the disk
//! watcher, the kill after the grace period) is joined or aborted by the execution.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hoist_core::api::LogStream;
use hoist_core::resource::{ResourceType, local_process};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

use super::{
    Adopted, Capabilities, DryRun, Execution, Exit, JobSpec, LogResume, Runner, RunnerError,
};
use crate::config::{BASE_ENV, LocalProcessSettings};
use crate::host_env::{HostEnv, Lookup};
use crate::logs::{LogSink, pump};

/// Shortest time between two measurements of a run's directory.
const MIN_DISK_CHECK: Duration = Duration::from_secs(2);
/// Longest time between two measurements of a run's directory.
const MAX_DISK_CHECK: Duration = Duration::from_secs(60);
/// How long a job over its disk budget has between SIGTERM and SIGKILL.
const DISK_KILL_GRACE: Duration = Duration::from_secs(10);
/// How long a leader's group keeps the output pipes after the leader ended.
const PIPE_GRACE: Duration = Duration::from_secs(2);

pub struct LocalProcessRunner {
    work_root: PathBuf,
    env_allow_list: Vec<String>,
    settings: LocalProcessSettings,
    host_env: Arc<HostEnv>,
    /// Where code artifacts of code jobs come from (the server).
    artifacts: Option<Arc<dyn crate::builders::ArtifactSource>>,
}

impl LocalProcessRunner {
    /// A runner with run directories under `work_root`, the default
    /// `local-process` settings and the agent's environment as it is now.
    pub fn new(work_root: PathBuf, env_allow_list: Vec<String>) -> LocalProcessRunner {
        LocalProcessRunner {
            work_root,
            env_allow_list,
            settings: LocalProcessSettings::default(),
            host_env: Arc::new(HostEnv::capture()),
            artifacts: None,
        }
    }

    /// The agent config's `local-process` settings (its `work-dir` is not used: the
    /// run directories go under the `work_root` given to [`LocalProcessRunner::new`]).
    pub fn with_settings(mut self, settings: &LocalProcessSettings) -> Self {
        self.settings = settings.clone();
        self
    }

    /// The agent's environment to take variables from (instead of the process's).
    pub fn with_host_env(mut self, env: Arc<HostEnv>) -> Self {
        self.host_env = env;
        self
    }

    /// Lets code jobs run: their artifacts are fetched from `artifacts`.
    pub fn with_artifacts(mut self, artifacts: Arc<dyn crate::builders::ArtifactSource>) -> Self {
        self.artifacts = Some(artifacts);
        self
    }

    fn pid_file(&self, run_id: &str) -> PathBuf {
        self.work_root.join(".pids").join(run_id)
    }

    /// The run's own directory.
    fn run_dir(&self, run_id: &str) -> PathBuf {
        self.work_root.join(run_id)
    }

    /// Records the run's process group (the `.pids` directory exists: see
    /// [`fresh_run_dir`]).
    async fn record_pid(&self, run_id: &str, pid: u32) {
        let f = self.pid_file(run_id);
        if let Err(e) = tokio::fs::write(&f, pid.to_string()).await {
            tracing::warn!(message = "Could not record a run's process group; a restarted agent will not find it.", run = %run_id, error = %e);
        }
    }

    /// Stops the process group a previous agent process started for `run_id`, if it
    /// is still there and still that run's. Returns what was done, for the report.
    async fn stop_leftover(&self, run_id: &str, grace: Duration) -> Option<String> {
        let f = self.pid_file(run_id);
        let pid: i32 = tokio::fs::read_to_string(&f)
            .await
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let _ = tokio::fs::remove_file(&f).await;
        // The pid may have been reused since: only touch it if it is that run's.
        let environ = tokio::fs::read(format!("/proc/{pid}/environ")).await.ok()?;
        let marker = format!("HOIST_RUN_ID={run_id}");
        if !environ.split(|b| *b == 0).any(|v| v == marker.as_bytes()) {
            return None;
        }
        let pgid = Pid::from_raw(pid);
        let _ = killpg(pgid, Signal::SIGTERM);
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let t0 = Instant::now();
        while t0.elapsed() < grace && tokio::fs::try_exists(&proc_dir).await.unwrap_or(false) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = killpg(pgid, Signal::SIGKILL);
        Some(format!(
            "its process group {pid}, left running by the previous agent process, was stopped"
        ))
    }

    /// The job's environment, and notes for the run's log about queue-config variables
    /// not passed. Later entries win.
    pub fn environment(
        &self,
        job: &JobSpec,
        opts: &local_process::LocalProcessOptions,
    ) -> (Vec<(String, String)>, Vec<String>) {
        let allow = &self.env_allow_list;
        let mut env: Vec<(String, String)> = if self.settings.allow_env_passthrough {
            self.host_env
                .passable(allow)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        } else {
            self.host_env
                .passable_matching(allow, |k| BASE_ENV.contains(&k) || k.starts_with("LC_"))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let mut notes = Vec::new();
        for (k, v) in &opts.env {
            match v {
                Some(v) => env.push((k.clone(), v.clone())),
                None => match self.host_env.lookup(k, allow) {
                    Lookup::Value(v) => env.push((k.clone(), v.to_string())),
                    Lookup::Unset => {}
                    Lookup::Withheld(w) => notes.push(format!(
                        "queue config env {k} not passed from the agent's environment: {} (list it in env-allow-list in the agent config to pass it)",
                        w.why()
                    )),
                },
            }
        }
        env.extend(job.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        (env, notes)
    }

    /// Removes a run's directory (off the runtime); failures are logged.
    async fn remove_run_dir(dir: &Path) {
        match tokio::fs::remove_dir_all(dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(message = "Could not remove a run's directory.", dir = %dir.display(), error = %e)
            }
        }
    }

    /// The queue config and the command line of `job`, checked: what `start` runs.
    fn command_of(
        job: &JobSpec,
    ) -> Result<(local_process::LocalProcessOptions, Vec<String>), RunnerError> {
        let opts = local_process::parse(&job.resource_config).map_err(|p| {
            RunnerError::Refused(format!(
                "the local-process config is not valid: {}",
                p.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
        })?;
        let mut argv = job.command();
        if argv.is_empty() {
            return Err(RunnerError::start(
                "the run has no command: launch it with `-- COMMAND ARGS` or --entry-point",
            ));
        }
        if opts.shell {
            argv = vec!["sh".into(), "-c".into(), argv.join(" ")];
        }
        Ok((opts, argv))
    }

    /// Everything of `start` after the run directory exists.
    async fn spawn(
        &self,
        job: &JobSpec,
        logs: &LogSink,
        run_dir: &Path,
    ) -> Result<LocalExecution, RunnerError> {
        let (opts, argv) = Self::command_of(job)?;
        let mut dir = match &opts.working_dir {
            Some(d) => PathBuf::from(d),
            None => run_dir.to_path_buf(),
        };
        // A git or code job runs in its checked-out source.
        if let Some(src) = &job.source {
            let dest = run_dir.join("src");
            let none = crate::builders::DirArtifacts {
                dir: self.work_root.join(".no-artifacts"),
            };
            let artifacts: &dyn crate::builders::ArtifactSource = match &self.artifacts {
                Some(a) => a.as_ref(),
                None => &none,
            };
            let top = crate::builders::checkout::checkout(
                src,
                &dest,
                artifacts,
                logs,
                self.settings.max_run_dir_bytes,
            )
            .await
            .map_err(|e| {
                let mut message = format!("fetching the job's source failed: {e}");
                // hoist-context's size refusal: say which setting it comes from.
                if matches!(
                    &e,
                    crate::builders::BuildError::Context {
                        source: hoist_context::ContextError::TooLarge { .. },
                        ..
                    }
                ) {
                    message.push_str(&format!(
                        " (the agent's local-process.max-run-dir-bytes, {}, caps a run's directory)",
                        human_bytes(self.settings.max_run_dir_bytes)
                    ));
                }
                RunnerError::Source {
                    message,
                    source: Box::new(e),
                }
            })?;
            // A relative working_dir is inside the source; an absolute one is kept.
            dir = match &opts.working_dir {
                Some(d) => top.join(d),
                None => top,
            };
        }
        if dir != run_dir {
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(|e| RunnerError::Io {
                    message: format!("cannot create the working directory {}: {e}", dir.display()),
                    source: e,
                })?;
        }
        let (env, notes) = self.environment(job, &opts);
        for n in notes {
            logs.system(&format!("[hoist: {n}]"));
        }
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env_clear()
            .envs(env)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd.spawn().map_err(|e| {
            let message = if e.kind() == std::io::ErrorKind::NotFound {
                format!(
                    "command `{}` not found on the agent's machine (or the working directory {} vanished)",
                    argv[0],
                    dir.display()
                )
            } else {
                format!("cannot start `{}`: {e}", argv[0])
            };
            RunnerError::Start {
                message,
                source: Some(Box::new(e)),
            }
        })?;
        let pid = child
            .id()
            .ok_or_else(|| RunnerError::start("the process ended at once"))?;
        self.record_pid(&job.run_id, pid).await;
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        let r_out = tokio::spawn(pump(out, LogStream::Stdout, logs.clone()));
        let r_err = tokio::spawn(pump(err, LogStream::Stderr, logs.clone()));
        let (out_pump, err_pump) = (r_out.abort_handle(), r_err.abort_handle());

        let over_budget: Arc<Mutex<Option<String>>> = Arc::default();
        let (tx, rx) = watch::channel(None);
        let supervisor = {
            let over_budget = over_budget.clone();
            tokio::spawn(async move {
                let status = child.wait().await;
                let readers = async {
                    let _ = r_out.await;
                    let _ = r_err.await;
                };
                tokio::pin!(readers);
                // The leader is gone; whatever else of its group still holds the pipes
                // gets a moment, then is killed so the run ends.
                if tokio::time::timeout(PIPE_GRACE, &mut readers)
                    .await
                    .is_err()
                {
                    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                    readers.await;
                }
                let exit = match status {
                    Ok(s) => match (s.code(), s.signal()) {
                        (Some(c), _) => Ok(Exit::Code(c)),
                        (None, Some(sig)) => Ok(Exit::Signal(sig)),
                        (None, None) => Err(RunnerError::Gone(
                            "the process ended without a status".into(),
                        )),
                    },
                    Err(e) => Err(RunnerError::Io {
                        message: format!("waiting for the process failed: {e}"),
                        source: e,
                    }),
                };
                let over = over_budget.lock().expect("budget").take();
                let exit = match (over, exit) {
                    (Some(reason), Ok(e)) => Ok(Exit::Failed {
                        reason,
                        code: e.code(),
                    }),
                    (_, other) => other,
                };
                let _ = tx.send(Some(exit.map_err(Arc::new)));
            })
        };
        let watcher = tokio::spawn(watch_disk(
            run_dir.to_path_buf(),
            self.settings.max_run_dir_bytes,
            pid,
            over_budget,
            rx.clone(),
            logs.clone(),
        ));
        Ok(LocalExecution {
            pid,
            pid_file: self.pid_file(&job.run_id),
            run_dir: run_dir.to_path_buf(),
            keep_failed: self.settings.keep_failed_run_dirs,
            exit: rx,
            stop_requested: std::sync::atomic::AtomicBool::new(false),
            tasks: Mutex::new(vec![
                supervisor.abort_handle(),
                watcher.abort_handle(),
                out_pump,
                err_pump,
            ]),
        })
    }
}

/// A fresh, empty `dir` for a run (an earlier attempt's removed), and the directory of
/// the process-group records. Blocking: call it on a blocking thread.
fn fresh_run_dir(dir: &Path, pids: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::create_dir_all(dir)?;
    std::fs::create_dir_all(pids)
}

/// Measures `dir` every so often (off the runtime) while the job runs; when it holds
/// more than `max` bytes, records why in `over` and stops the process group (SIGTERM,
/// SIGKILL after [`DISK_KILL_GRACE`]).
async fn watch_disk(
    dir: PathBuf,
    max: u64,
    pid: u32,
    over: Arc<Mutex<Option<String>>>,
    mut exit: watch::Receiver<Option<Result<Exit, Arc<RunnerError>>>>,
    logs: LogSink,
) {
    let mut every = MIN_DISK_CHECK;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = exit.wait_for(Option::is_some) => return,
        }
        let d = dir.clone();
        let t0 = Instant::now();
        let Ok(used) = tokio::task::spawn_blocking(move || disk_use(&d, max)).await else {
            return;
        };
        // A walk of a big tree is not repeated every couple of seconds.
        every = (t0.elapsed() * 20).clamp(MIN_DISK_CHECK, MAX_DISK_CHECK);
        if used <= max {
            continue;
        }
        let reason = format!(
            "the run's directory {} grew beyond local-process.max-run-dir-bytes ({}): the job was stopped (raise the limit in the agent config, or write less)",
            dir.display(),
            human_bytes(max)
        );
        logs.system(&format!("[hoist: {reason}]"));
        *over.lock().expect("budget") = Some(reason);
        let pgid = Pid::from_raw(pid as i32);
        let _ = killpg(pgid, Signal::SIGTERM);
        if tokio::time::timeout(DISK_KILL_GRACE, exit.wait_for(Option::is_some))
            .await
            .is_err()
        {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        return;
    }
}

/// Bytes allocated on disk under `dir` (not following links), counting stops once
/// beyond `stop_after`. Blocking: call it on a blocking thread.
fn disk_use(dir: &Path, stop_after: u64) -> u64 {
    let mut total = 0u64;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            total = total.saturating_add(m.blocks().saturating_mul(512));
            if m.is_dir() {
                todo.push(e.path());
            }
            if total > stop_after {
                return total;
            }
        }
    }
    total
}

/// `10 GiB`, `512 MiB`, `1000 bytes`.
fn human_bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (unit, size) in UNITS {
        if n >= size && n.is_multiple_of(size) {
            return format!("{} {unit}", n / size);
        }
    }
    format!("{n} bytes")
}

struct LocalExecution {
    pid: u32,
    pid_file: PathBuf,
    run_dir: PathBuf,
    keep_failed: bool,
    exit: watch::Receiver<Option<Result<Exit, Arc<RunnerError>>>>,
    stop_requested: std::sync::atomic::AtomicBool,
    /// The supervisor, the disk watcher, the kill after the grace period.
    tasks: Mutex<Vec<AbortHandle>>,
}

impl LocalExecution {
    fn abort_tasks(&self) {
        for t in self.tasks.lock().expect("tasks").drain(..) {
            t.abort();
        }
    }

    /// The run failed (not stopped on request, not a success).
    fn failed(&self) -> bool {
        let stopped = self
            .stop_requested
            .load(std::sync::atomic::Ordering::SeqCst);
        match &*self.exit.borrow() {
            Some(Ok(e)) => !e.success() && (!stopped || matches!(e, Exit::Failed { .. })),
            Some(Err(_)) => true,
            None => !stopped,
        }
    }
}

impl Drop for LocalExecution {
    fn drop(&mut self) {
        self.abort_tasks();
    }
}

#[async_trait]
impl Runner for LocalProcessRunner {
    fn resource(&self) -> ResourceType {
        ResourceType::LocalProcess
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            needs_image: false,
            survives_restart: false,
            needs_registry: false,
            reports_pending: false,
        }
    }

    /// The command, its working directory and its environment (values that look secret
    /// masked), as `start` would run them; nothing is created.
    async fn dry_run(&self, job: &JobSpec) -> Result<DryRun, RunnerError> {
        let (opts, argv) = Self::command_of(job)?;
        let run_dir = self.run_dir(&job.run_id);
        let working_dir = match (&job.source, &opts.working_dir) {
            (None, Some(d)) => d.clone(),
            (None, None) => run_dir.display().to_string(),
            // A git or code job runs in its checked-out source (a relative working_dir
            // inside it).
            (Some(_), Some(d)) if Path::new(d).is_absolute() => d.clone(),
            (Some(_), d) => {
                let mut s = format!("{}/<the job's source>", run_dir.join("src").display());
                if let Some(d) = d {
                    s.push('/');
                    s.push_str(d);
                }
                s
            }
        };
        let (env, mut notes) = self.environment(job, &opts);
        // Later entries win, as for the process.
        let env: std::collections::BTreeMap<String, String> = env
            .into_iter()
            .map(|(k, v)| {
                let v = hoist_core::secret::masked_value(&k, &v).map_or(v, str::to_string);
                (k, v)
            })
            .collect();
        if let Some(src) = &job.source {
            notes.push(format!(
                "the job's {} source would be checked out into {} first (at most {})",
                match src {
                    hoist_core::api::JobSource::Git { .. } => "git",
                    hoist_core::api::JobSource::Code { .. } => "code",
                    hoist_core::api::JobSource::Image { .. } => "image",
                },
                run_dir.join("src").display(),
                human_bytes(self.settings.max_run_dir_bytes)
            ));
        }
        let mut object = serde_json::json!({
            "command": argv,
            "working_dir": working_dir,
            "process_group": "its own (a stop signals the whole group)",
            "env": env,
        });
        if !notes.is_empty() {
            object["notes"] = serde_json::json!(notes);
        }
        crate::dry_run::mask_value_tree(&mut object);
        Ok(DryRun {
            objects: vec![object],
            backend_check: None,
        })
    }

    async fn start(&self, job: &JobSpec, logs: LogSink) -> Result<Box<dyn Execution>, RunnerError> {
        // A fresh directory for each attempt (an earlier one may be left by a killed
        // agent, or kept after a failure).
        let run_dir = self.run_dir(&job.run_id);
        let (dir, pids) = (run_dir.clone(), self.work_root.join(".pids"));
        tokio::task::spawn_blocking(move || fresh_run_dir(&dir, &pids))
            .await
            .map_err(|e| RunnerError::Io {
                message: format!("preparing the run's directory failed: {e}"),
                source: std::io::Error::other(e),
            })?
            .map_err(|e| RunnerError::Io {
                message: format!(
                    "cannot create the run's directory {}: {e}",
                    run_dir.display()
                ),
                source: e,
            })?;
        match self.spawn(job, &logs, &run_dir).await {
            Ok(exec) => Ok(Box::new(exec)),
            Err(e) => {
                if self.settings.keep_failed_run_dirs {
                    logs.system(&format!(
                        "[hoist: the run's directory {} is kept (local-process.keep-failed-run-dirs)]",
                        run_dir.display()
                    ));
                } else {
                    Self::remove_run_dir(&run_dir).await;
                }
                Err(e)
            }
        }
    }

    async fn adopt_resuming(
        &self,
        job: &JobSpec,
        _logs: LogSink,
        _resume: LogResume,
    ) -> Result<Adopted, RunnerError> {
        let base = "agent restarted: local processes are not re-adopted (their output went to the previous agent process)";
        let what = self
            .stop_leftover(&job.run_id, Duration::from_secs(5))
            .await;
        // The run is reported failed: its directory goes unless failures are kept.
        if !self.settings.keep_failed_run_dirs {
            Self::remove_run_dir(&self.run_dir(&job.run_id)).await;
        }
        Ok(Adopted::Gone(match what {
            Some(what) => format!("{base}; {what}"),
            None => format!("{base}; the process had already ended"),
        }))
    }
}

#[async_trait]
impl Execution for LocalExecution {
    fn describe(&self) -> String {
        format!("pid {}", self.pid)
    }

    async fn wait(&self) -> Result<Exit, RunnerError> {
        let mut rx = self.exit.clone();
        let v = rx
            .wait_for(|v| v.is_some())
            .await
            .map_err(|_| RunnerError::Gone("the process supervisor ended".into()))?;
        match v.as_ref().expect("some") {
            Ok(e) => Ok(e.clone()),
            Err(e) => Err(e.share()),
        }
    }

    async fn stop(&self, grace: Duration) -> Result<(), RunnerError> {
        self.stop_requested
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if self.exit.borrow().is_some() {
            return Ok(());
        }
        let pgid = Pid::from_raw(self.pid as i32);
        let _ = killpg(pgid, Signal::SIGTERM);
        let mut rx = self.exit.clone();
        let killer: JoinHandle<()> = tokio::spawn(async move {
            if tokio::time::timeout(grace, rx.wait_for(|v| v.is_some()))
                .await
                .is_err()
            {
                let _ = killpg(pgid, Signal::SIGKILL);
            }
        });
        self.tasks
            .lock()
            .expect("tasks")
            .push(killer.abort_handle());
        Ok(())
    }

    async fn cleanup(&self) {
        self.abort_tasks();
        let keep = self.keep_failed && self.failed();
        if keep {
            tracing::info!(message = "Keeping a failed run's directory (local-process.keep-failed-run-dirs).", dir = %self.run_dir.display());
        }
        let (pid_file, run_dir) = (self.pid_file.clone(), self.run_dir.clone());
        let removed = tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_file(&pid_file);
            if keep {
                return Ok(());
            }
            match std::fs::remove_dir_all(&run_dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        })
        .await;
        if let Ok(Err(e)) = removed {
            tracing::warn!(message = "Could not remove a run's directory.", dir = %self.run_dir.display(), error = %e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_well() {
        assert_eq!(human_bytes(10 << 30), "10 GiB");
        assert_eq!(human_bytes(512 << 20), "512 MiB");
        assert_eq!(human_bytes(1000), "1000 bytes");
    }
}
