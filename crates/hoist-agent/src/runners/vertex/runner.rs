//! [`VertexRunner`]: the [`Runner`] of vertex queues.
//!
//! A start first looks for a job of the run that is still going (by its
//! `hoist-run-id` label and exact `HOIST_RUN_ID`): an earlier attempt of the same start
//! whose create was sent but not answered is adopted instead of created twice (Vertex
//! AI assigns a CustomJob's id itself, so the id cannot be derived from the run).
//! Re-adoption after an agent restart finds the job the same way; an ended job is
//! adopted too (its end and the rest of its log are then reported).

use async_trait::async_trait;
use chrono::Utc;
use hoist_core::resource::ResourceType;
use serde_json::Value;

use super::api::VertexApi;
use super::execution::{Timing, VertexExecution};
use super::spec::{self, SpecContext, Submission};
use crate::environments::Ambient;
use crate::environments::gcp::GcpEnvironment;
use crate::logs::LogSink;
use crate::runners::{
    Adopted, Capabilities, DryRun, Execution, JobSpec, LogResume, Runner, RunnerError,
};

/// Runs jobs as Vertex AI CustomJobs.
#[derive(Debug)]
pub struct VertexRunner {
    api: VertexApi,
    timing: Timing,
}

impl VertexRunner {
    /// The runner of `env`'s project (resolved now: configured, from the credentials,
    /// or the metadata server's) and region, endpoints from `ambient`
    /// (`HOIST_VERTEX_ENDPOINT`, `HOIST_LOGGING_ENDPOINT`).
    pub async fn new(env: GcpEnvironment, ambient: &Ambient) -> Result<VertexRunner, RunnerError> {
        let project = env.project().await.map_err(|e| {
            RunnerError::Setup(format!("a vertex queue needs the gcp project: {e}"))
        })?;
        Ok(VertexRunner {
            api: VertexApi::new(env, project, ambient)?,
            timing: Timing::default(),
        })
    }

    /// The same, with other pauses (tests).
    pub fn with_timing(mut self, timing: Timing) -> VertexRunner {
        self.timing = timing;
        self
    }

    pub fn project(&self) -> &str {
        &self.api.project
    }

    pub fn region(&self) -> &str {
        &self.api.region
    }

    fn build(&self, job: &JobSpec) -> Result<Submission, RunnerError> {
        spec::build(
            job,
            &SpecContext {
                project: &self.api.project,
                region: &self.api.region,
                now: Utc::now(),
            },
        )
    }

    /// The newest job of `job`'s run (its labels and exact run id), if any.
    async fn find(&self, job: &JobSpec) -> Result<Option<Value>, RunnerError> {
        let labels = spec::hoist_labels(job);
        let found = self
            .api
            .list(&spec::run_filter(&job.run_id))
            .await
            .map_err(|e| {
                e.into_runner(&format!("looking for the CustomJob of run {}", job.run_id))
            })?;
        Ok(found
            .into_iter()
            .filter(|j| {
                spec::is_ours(j, &labels)
                    && spec::run_id_of(j).as_deref() == Some(job.run_id.as_str())
            })
            .max_by(|a, b| {
                let t = |j: &Value| {
                    j.get("createTime")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                t(a).cmp(&t(b))
            }))
    }

    fn supervise(&self, found: Value, logs: LogSink, resume: LogResume) -> Box<dyn Execution> {
        Box::new(VertexExecution::supervise(
            self.api.clone(),
            found,
            logs,
            resume,
            self.timing,
            false,
        ))
    }
}

#[async_trait]
impl Runner for VertexRunner {
    fn resource(&self) -> ResourceType {
        ResourceType::Vertex
    }

    fn capabilities(&self) -> Capabilities {
        super::CAPABILITIES
    }

    async fn start(&self, job: &JobSpec, logs: LogSink) -> Result<Box<dyn Execution>, RunnerError> {
        let sub = self.build(job)?;
        if let Some(found) = self.find(job).await?
            && !spec::is_terminal(found.get("state").and_then(Value::as_str).unwrap_or(""))
        {
            logs.system(&format!(
                "[hoist: an earlier attempt of this start created {}; supervising it]",
                found
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("a CustomJob")
            ));
            return Ok(self.supervise(found, logs, LogResume::default()));
        }
        let created = self.api.create(&sub.body).await.map_err(|e| {
            let code = e.code();
            let err = e.into_runner(&format!("creating the CustomJob in {}", sub.parent));
            match (code, err) {
                // Vertex refused the request as given: the job cannot start so.
                (
                    Some(400),
                    RunnerError::Api {
                        message, source, ..
                    },
                ) => RunnerError::Start {
                    message,
                    source: Some(source),
                },
                (_, err) => err,
            }
        })?;
        Ok(self.supervise(created, logs, LogResume::default()))
    }

    /// Finds the run's job by its labels (see the module docs) and supervises it again,
    /// its log resuming after what the server has.
    async fn adopt_resuming(
        &self,
        job: &JobSpec,
        logs: LogSink,
        resume: LogResume,
    ) -> Result<Adopted, RunnerError> {
        match self.find(job).await? {
            Some(found) => Ok(Adopted::Found(self.supervise(found, logs, resume))),
            None => Ok(Adopted::Gone(format!(
                "no Vertex AI CustomJob of this run (label {}={}) is left in {} (deleted while the agent was away)",
                spec::LABEL_RUN_ID,
                spec::label_value(&job.run_id),
                self.api.parent()
            ))),
        }
    }

    /// Cancels the jobs of this agent's runs that the server no longer assigns to it
    /// and that still run (a run that went back to its queue, or ended, while the
    /// agent was away must not keep its machines). Ended jobs are left: they are the
    /// runs' records and hold nothing.
    async fn sweep(&self, agent: &str, keep: &[String]) -> Result<Vec<String>, RunnerError> {
        let jobs = self
            .api
            .list(&spec::agent_filter(agent))
            .await
            .map_err(|e| e.into_runner("listing this agent's CustomJobs"))?;
        let mut swept = Vec::new();
        for j in jobs {
            let state = j.get("state").and_then(Value::as_str).unwrap_or("");
            let (Some(run), Some(name)) =
                (spec::run_id_of(&j), j.get("name").and_then(Value::as_str))
            else {
                continue;
            };
            if spec::is_terminal(state) || state == "JOB_STATE_CANCELLING" || keep.contains(&run) {
                continue;
            }
            match self.api.cancel(name).await {
                Ok(()) => swept.push(run),
                Err(e) if e.status() == Some("FAILED_PRECONDITION") => {}
                Err(e) => return Err(e.into_runner(&format!("cancelling {name}"))),
            }
        }
        Ok(swept)
    }

    /// The CustomJob a start would create, masked. Vertex AI has no validate-only
    /// create, so the backend is not asked.
    async fn dry_run(&self, job: &JobSpec) -> Result<DryRun, RunnerError> {
        let sub = self.build(job)?;
        Ok(DryRun {
            objects: vec![super::dry_run_object(&sub)],
            backend_check: None,
        })
    }
}
