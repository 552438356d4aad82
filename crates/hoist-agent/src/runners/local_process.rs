//! The `local-process` runner: the run's command on the agent's machine.
//!
//! Each run gets its own process group (stopping signals the whole group) and its own
//! working directory (`<work-dir>/<run id>` unless the queue config names one). The
//! job's environment is the agent's, minus `HOIST_*` and minus variables whose names
//! look secret (unless the agent config allow-lists them), plus the queue config's
//! `env`, plus the run's own env and hoist's `HOIST_*` variables.
//!
//! A local process cannot be re-adopted (its output pipes died with the agent). The
//! runner records each run's process group in `<work-dir>/.pids/<run id>`; an agent
//! restarted after a crash stops whatever its predecessor left running (after checking
//! the process still belongs to that run) and reports the run failed ("agent
//! restarted").

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use hoist_core::api::{LogStream, looks_secret};
use hoist_core::resource::{ResourceType, local_process};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::watch;

use super::{Adopted, Execution, Exit, JobSpec, Runner, RunnerError};
use crate::logs::{LogSink, pump};

pub struct LocalProcessRunner {
    work_root: PathBuf,
    env_allow_list: Vec<String>,
    /// Where code artifacts of code jobs come from (the server).
    artifacts: Option<std::sync::Arc<dyn crate::builders::ArtifactSource>>,
}

impl LocalProcessRunner {
    fn pid_file(&self, run_id: &str) -> PathBuf {
        self.work_root.join(".pids").join(run_id)
    }

    fn record_pid(&self, run_id: &str, pid: u32) {
        let f = self.pid_file(run_id);
        if let Some(dir) = f.parent()
            && std::fs::create_dir_all(dir).is_ok()
        {
            let _ = std::fs::write(&f, pid.to_string());
        }
    }

    /// Stops the process group a previous agent process started for `run_id`, if it
    /// is still there and still that run's. Returns what was done, for the report.
    async fn stop_leftover(&self, run_id: &str, grace: Duration) -> Option<String> {
        let f = self.pid_file(run_id);
        let pid: i32 = std::fs::read_to_string(&f).ok()?.trim().parse().ok()?;
        let _ = std::fs::remove_file(&f);
        // The pid may have been reused since: only touch it if it is that run's.
        let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        let marker = format!("HOIST_RUN_ID={run_id}");
        if !environ.split(|b| *b == 0).any(|v| v == marker.as_bytes()) {
            return None;
        }
        let pgid = Pid::from_raw(pid);
        let _ = killpg(pgid, Signal::SIGTERM);
        let t0 = std::time::Instant::now();
        while t0.elapsed() < grace && std::path::Path::new(&format!("/proc/{pid}")).exists() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = killpg(pgid, Signal::SIGKILL);
        Some(format!(
            "its process group {pid}, left running by the previous agent process, was stopped"
        ))
    }

    pub fn new(work_root: PathBuf, env_allow_list: Vec<String>) -> LocalProcessRunner {
        LocalProcessRunner {
            work_root,
            env_allow_list,
            artifacts: None,
        }
    }

    /// Lets code jobs run: their artifacts are fetched from `artifacts`.
    pub fn with_artifacts(
        mut self,
        artifacts: std::sync::Arc<dyn crate::builders::ArtifactSource>,
    ) -> Self {
        self.artifacts = Some(artifacts);
        self
    }

    fn allowed(&self, name: &str) -> bool {
        !looks_secret(name) || self.env_allow_list.iter().any(|a| a == name)
    }

    /// The job's environment, in the order later entries win.
    fn environment(
        &self,
        job: &JobSpec,
        opts: &local_process::LocalProcessOptions,
    ) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| !k.starts_with("HOIST_") && self.allowed(k))
            .collect();
        for (k, v) in &opts.env {
            match v {
                Some(v) => env.push((k.clone(), v.clone())),
                None => {
                    if self.allowed(k)
                        && let Ok(v) = std::env::var(k)
                    {
                        env.push((k.clone(), v));
                    }
                }
            }
        }
        env.extend(job.env.iter().cloned());
        env
    }
}

struct LocalExecution {
    pid: u32,
    pid_file: PathBuf,
    exit: watch::Receiver<Option<Result<Exit, RunnerError>>>,
}

#[async_trait]
impl Runner for LocalProcessRunner {
    fn resource(&self) -> ResourceType {
        ResourceType::LocalProcess
    }

    async fn start(&self, job: &JobSpec, logs: LogSink) -> Result<Box<dyn Execution>, RunnerError> {
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
            return Err(RunnerError::Start(
                "the run has no command: launch it with `-- COMMAND ARGS` or --entry-point".into(),
            ));
        }
        if opts.shell {
            argv = vec!["sh".into(), "-c".into(), argv.join(" ")];
        }
        let mut dir = match &opts.working_dir {
            Some(d) => PathBuf::from(d),
            None => self.work_root.join(&job.run_id),
        };
        // A git or code job runs in its checked-out source.
        if let Some(src) = &job.source {
            let dest = self.work_root.join(&job.run_id).join("src");
            let _ = std::fs::remove_dir_all(&dest);
            let none = crate::builders::DirArtifacts {
                dir: self.work_root.join(".no-artifacts"),
            };
            let artifacts: &dyn crate::builders::ArtifactSource = match &self.artifacts {
                Some(a) => a.as_ref(),
                None => &none,
            };
            let top = crate::builders::checkout::checkout(src, &dest, artifacts, &logs)
                .await
                .map_err(|e| {
                    RunnerError::Source(format!("fetching the job's source failed: {e}"))
                })?;
            // A relative working_dir is inside the source; an absolute one is kept.
            dir = match &opts.working_dir {
                Some(d) => top.join(d),
                None => top,
            };
        }
        std::fs::create_dir_all(&dir).map_err(|e| {
            RunnerError::Start(format!(
                "cannot create the working directory {}: {e}",
                dir.display()
            ))
        })?;
        let env = self.environment(job, &opts);
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
            if e.kind() == std::io::ErrorKind::NotFound {
                RunnerError::Start(format!(
                    "command `{}` not found on the agent's machine (or the working directory {} vanished)",
                    argv[0],
                    dir.display()
                ))
            } else {
                RunnerError::Start(format!("cannot start `{}`: {e}", argv[0]))
            }
        })?;
        let pid = child
            .id()
            .ok_or_else(|| RunnerError::Start("the process ended at once".into()))?;
        self.record_pid(&job.run_id, pid);
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        let r_out = tokio::spawn(pump(out, LogStream::Stdout, logs.clone()));
        let r_err = tokio::spawn(pump(err, LogStream::Stderr, logs.clone()));
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let status = child.wait().await;
            // The leader is gone; whatever else of its group still holds the pipes
            // gets a moment, then is killed so the run ends.
            let readers = async {
                let _ = r_out.await;
                let _ = r_err.await;
            };
            tokio::pin!(readers);
            if tokio::time::timeout(Duration::from_secs(2), &mut readers)
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
                    (None, None) => Err(RunnerError::Backend(
                        "the process ended without a status".into(),
                    )),
                },
                Err(e) => Err(RunnerError::Backend(format!(
                    "waiting for the process failed: {e}"
                ))),
            };
            let _ = tx.send(Some(exit));
        });
        Ok(Box::new(LocalExecution {
            pid,
            pid_file: self.pid_file(&job.run_id),
            exit: rx,
        }))
    }

    async fn adopt(
        &self,
        job: &JobSpec,
        _logs: LogSink,
        _since: Option<DateTime<Utc>>,
    ) -> Result<Adopted, RunnerError> {
        let base = "agent restarted: local processes are not re-adopted (their output went to the previous agent process)";
        Ok(Adopted::Gone(
            match self
                .stop_leftover(&job.run_id, Duration::from_secs(5))
                .await
            {
                Some(what) => format!("{base}; {what}"),
                None => format!("{base}; the process had already ended"),
            },
        ))
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
            .map_err(|_| RunnerError::Backend("the process supervisor ended".into()))?;
        v.clone().expect("some")
    }

    async fn stop(&self, grace: Duration) -> Result<(), RunnerError> {
        let pgid = Pid::from_raw(self.pid as i32);
        if self.exit.borrow().is_some() {
            return Ok(());
        }
        let _ = killpg(pgid, Signal::SIGTERM);
        let mut rx = self.exit.clone();
        tokio::spawn(async move {
            if tokio::time::timeout(grace, rx.wait_for(|v| v.is_some()))
                .await
                .is_err()
            {
                let _ = killpg(pgid, Signal::SIGKILL);
            }
        });
        Ok(())
    }

    async fn cleanup(&self) {
        let _ = std::fs::remove_file(&self.pid_file);
    }
}
