//! [`SageMakerRunner`]: the [`Runner`] of sagemaker queues.
//!
//! A start builds the request ([`spec::build`]; a role name needs the agent's account,
//! from STS `GetCallerIdentity` once), then `CreateTrainingJob`. `ResourceInUse` (the
//! name is taken) is an earlier attempt of the same start when the job carries the
//! run's `hoist:run-id` tag (followed), a start failure naming the job otherwise.
//! `ValidationException` and `ResourceLimitExceeded` fail the start with SageMaker's
//! own message; throttling and no answer are transient (the run task tries again).
//!
//! Re-adoption finds the job by its name ([`spec::job_name`]: known from the run) and
//! checks its tags (`ListTags`: `DescribeTrainingJob` does not return them).
//!
//! Sweep: training jobs of this agent still `InProgress` whose run the server no longer
//! assigns to it are stopped (`ListTrainingJobs` with `StatusEquals: InProgress`, then
//! `ListTags` of each): they would otherwise run, and bill, unsupervised. Ended jobs
//! are left alone (SageMaker cannot delete them, and they cost nothing).

use async_trait::async_trait;
use hoist_core::resource::ResourceType;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::api::{Api, ApiError, Service};
use super::execution::{Polling, SageMakerExecution, Target};
use super::spec::{self, SpecContext};
use super::status::JobStatus;
use crate::environments::aws::AwsEnvironment;
use crate::logs::LogSink;
use crate::runners::{
    Adopted, Capabilities, DryRun, Execution, JobSpec, LogResume, Runner, RunnerError,
};

/// Runs jobs as SageMaker training jobs.
pub struct SageMakerRunner {
    api: Api,
    account: OnceCell<String>,
    polling: Polling,
}

/// Whose a training job is.
enum Owner {
    /// The run's (its `hoist:run-id` tag), as described.
    Ours(Box<Value>),
    /// Another's: why.
    Other(String),
    /// No such job.
    Missing,
}

impl SageMakerRunner {
    /// A runner on `env`'s region, credentials and endpoints. Calls nothing yet.
    pub fn new(env: AwsEnvironment) -> SageMakerRunner {
        SageMakerRunner {
            api: Api::new(env),
            account: OnceCell::new(),
            polling: Polling::default(),
        }
    }

    /// How often SageMaker and CloudWatch Logs are asked (tests poll faster).
    pub fn with_polling(mut self, polling: Polling) -> SageMakerRunner {
        self.polling = polling;
        self
    }

    pub fn api(&self) -> &Api {
        &self.api
    }

    /// The agent's account (STS, once).
    async fn account(&self) -> Result<&str, RunnerError> {
        self.account
            .get_or_try_init(|| async {
                self.api
                    .environment()
                    .caller_identity()
                    .await
                    .map(|id| id.account)
                    .map_err(|e| RunnerError::Api {
                        message: format!(
                            "the agent's account (to expand the queue config's RoleArn role name): {e}"
                        ),
                        transient: e.is_transient(),
                        source: Box::new(e),
                    })
            })
            .await
            .map(String::as_str)
    }

    /// The request of `job` (the account looked up when the role is a name).
    pub async fn request(&self, job: &JobSpec) -> Result<spec::Request, RunnerError> {
        let account = if spec::needs_account(&job.resource_config) {
            Some(self.account().await?)
        } else {
            None
        };
        let cx = SpecContext {
            region: self.api.environment().region(),
            account,
        };
        spec::build(job, &cx)
    }

    /// The tags of `arn` (`ListTags`, every page).
    async fn tags(&self, arn: &str) -> Result<Vec<(String, String)>, ApiError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..10 {
            let mut body = json!({"ResourceArn": arn, "MaxResults": 100});
            if let Some(t) = &token {
                body["NextToken"] = json!(t);
            }
            let v = self.api.call(Service::SageMaker, "ListTags", &body).await?;
            for t in v["Tags"].as_array().into_iter().flatten() {
                if let (Some(k), Some(val)) = (t["Key"].as_str(), t["Value"].as_str()) {
                    out.push((k.to_string(), val.to_string()));
                }
            }
            token = v["NextToken"].as_str().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// Whether the training job `name` is the run `run_id`'s.
    async fn owner(&self, name: &str, run_id: &str) -> Result<Owner, RunnerError> {
        let v = match self
            .api
            .call(
                Service::SageMaker,
                "DescribeTrainingJob",
                &json!({"TrainingJobName": name}),
            )
            .await
        {
            Ok(v) => v,
            Err(e) if e.is_not_found() => return Ok(Owner::Missing),
            Err(e) => return Err(e.into_runner()),
        };
        let arn = v["TrainingJobArn"].as_str().unwrap_or_default().to_string();
        let tags = self.tags(&arn).await.map_err(ApiError::into_runner)?;
        let tag = tags
            .iter()
            .find(|(k, _)| k == spec::TAG_RUN_ID)
            .map(|(_, v)| v.as_str());
        Ok(match tag {
            Some(t) if t == spec::tag_value(run_id) => Owner::Ours(Box::new(v)),
            Some(t) => Owner::Other(format!("its {} tag is {t}", spec::TAG_RUN_ID)),
            None => Owner::Other(format!("it has no {} tag", spec::TAG_RUN_ID)),
        })
    }

    fn execution(
        &self,
        name: String,
        described: &Value,
        reported: usize,
        logs: LogSink,
        resume: LogResume,
    ) -> SageMakerExecution {
        SageMakerExecution::supervise(
            Target {
                api: self.api.clone(),
                name,
                prefixed: spec::instance_count(described) > 1,
                reported,
                polling: self.polling,
            },
            logs,
            resume,
        )
    }
}

#[async_trait]
impl Runner for SageMakerRunner {
    fn resource(&self) -> ResourceType {
        ResourceType::Sagemaker
    }

    fn capabilities(&self) -> Capabilities {
        super::CAPABILITIES
    }

    async fn start(&self, job: &JobSpec, logs: LogSink) -> Result<Box<dyn Execution>, RunnerError> {
        let req = self.request(job).await?;
        for n in &req.notes {
            logs.system(&format!("[hoist: {n}]"));
        }
        match self
            .api
            .call(Service::SageMaker, "CreateTrainingJob", &req.body)
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == Some("ResourceInUse") => {
                match self.owner(&req.name, &job.run_id).await? {
                    Owner::Ours(v) => {
                        logs.system(&format!(
                            "[hoist: training job {} exists already for this run (an earlier attempt of its start); following it]",
                            req.name
                        ));
                        let reported = JobStatus::parse(&v).transitions.len();
                        return Ok(Box::new(self.execution(
                            req.name.clone(),
                            &v,
                            reported,
                            logs,
                            LogResume::default(),
                        )));
                    }
                    Owner::Other(why) => {
                        return Err(RunnerError::Start {
                            message: format!(
                                "a training job named {} exists already and is not this run's ({why}); training job names are unique per account and region: change the queue config's TrainingJobName (e.g. prefix-${{run_id}}), or leave it out",
                                req.name
                            ),
                            source: Some(Box::new(e)),
                        });
                    }
                    // Gone between the two calls: try again.
                    Owner::Missing => return Err(e.into_runner()),
                }
            }
            Err(e) if e.is_transient() => return Err(e.into_runner()),
            Err(e)
                if matches!(
                    e.code(),
                    Some("ValidationException" | "ResourceLimitExceeded")
                ) =>
            {
                let hint = if e.code() == Some("ResourceLimitExceeded") {
                    " (an account quota: wait for other training jobs to end, or ask for more in Service Quotas)"
                } else {
                    ""
                };
                return Err(RunnerError::Start {
                    message: format!(
                        "SageMaker refused training job {}: {}: {}{hint}",
                        req.name,
                        e.code().unwrap_or_default(),
                        e.message().unwrap_or_default()
                    ),
                    source: Some(Box::new(e)),
                });
            }
            Err(e) => return Err(e.into_runner()),
        }
        Ok(Box::new(self.execution(
            req.name,
            &req.body,
            0,
            logs,
            LogResume::default(),
        )))
    }

    async fn adopt_resuming(
        &self,
        job: &JobSpec,
        logs: LogSink,
        resume: LogResume,
    ) -> Result<Adopted, RunnerError> {
        let name = spec::job_name(job)?;
        match self.owner(&name, &job.run_id).await? {
            Owner::Missing => Ok(Adopted::Gone(format!(
                "training job {name} of this run does not exist (SageMaker does not know it)"
            ))),
            Owner::Other(why) => Ok(Adopted::Gone(format!(
                "training job {name} is not this run's ({why})"
            ))),
            Owner::Ours(v) => {
                let reported = JobStatus::parse(&v).transitions.len();
                Ok(Adopted::Found(Box::new(
                    self.execution(name, &v, reported, logs, resume),
                )))
            }
        }
    }

    async fn sweep(&self, agent: &str, keep: &[String]) -> Result<Vec<String>, RunnerError> {
        let mut stopped = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..20 {
            let mut body = json!({"StatusEquals": "InProgress", "MaxResults": 100});
            if let Some(t) = &token {
                body["NextToken"] = json!(t);
            }
            let v = self
                .api
                .call(Service::SageMaker, "ListTrainingJobs", &body)
                .await
                .map_err(ApiError::into_runner)?;
            for s in v["TrainingJobSummaries"].as_array().into_iter().flatten() {
                let (Some(name), Some(arn)) =
                    (s["TrainingJobName"].as_str(), s["TrainingJobArn"].as_str())
                else {
                    continue;
                };
                if s["TrainingJobStatus"].as_str() != Some("InProgress") {
                    continue;
                }
                let tags = self.tags(arn).await.map_err(ApiError::into_runner)?;
                let get = |k: &str| {
                    tags.iter()
                        .find(|(key, _)| key == k)
                        .map(|(_, v)| v.clone())
                };
                let (Some(owner), Some(run)) = (get(spec::TAG_AGENT), get(spec::TAG_RUN_ID)) else {
                    continue;
                };
                if owner != spec::tag_value(agent) || keep.iter().any(|k| spec::tag_value(k) == run)
                {
                    continue;
                }
                match self
                    .api
                    .call(
                        Service::SageMaker,
                        "StopTrainingJob",
                        &json!({"TrainingJobName": name}),
                    )
                    .await
                {
                    Ok(_) => {
                        tracing::info!(message = "Stopped a training job of a run this agent no longer holds.", job = name, run = %run);
                        stopped.push(run);
                    }
                    Err(e) => {
                        tracing::warn!(message = "Could not stop a training job of a run this agent no longer holds.", job = name, error = %e);
                    }
                }
            }
            token = v["NextToken"].as_str().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(stopped)
    }

    /// The request as it would be sent (the run token and secret-looking values
    /// masked); a role name is expanded with the agent's account when STS answers.
    async fn dry_run(&self, job: &JobSpec) -> Result<DryRun, RunnerError> {
        let req = self.request(job).await?;
        Ok(DryRun {
            objects: vec![req.masked()],
            backend_check: None,
        })
    }
}
