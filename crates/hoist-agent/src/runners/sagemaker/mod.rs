//! The SageMaker runner: a run is a training job (`CreateTrainingJob`), polled for its
//! status, followed in CloudWatch Logs, stopped with `StopTrainingJob` and found again
//! by name and tags after an agent restart.
//!
//! The pure half (JSON in, JSON out):
//! - [`spec`]: a run and its queue config → the `CreateTrainingJob` request (name,
//!   image and command, `HOIST_*` environment, `hoist:*` tags, role and S3 rules).
//! - [`status`]: what `DescribeTrainingJob` says → starting, running, ended (the
//!   status mapping table).
//!
//! The IO half:
//! - [`api`]: SageMaker's and CloudWatch Logs' JSON 1.1 APIs over reqwest, SigV4-signed
//!   with `aws-sigv4` and the `aws` environment's credential chain (no SDK client).
//! - [`runner`]: [`SageMakerRunner`]: start, adopt, sweep, dry run.
//! - [`execution`]: supervision by polling with backoff; stop.
//! - [`logs`]: every log stream of the job, followed.
//!
//! The agent needs `environment: {type: aws, region: …}`: the region, credentials and
//! endpoints (`AWS_ENDPOINT_URL_SAGEMAKER`, `AWS_ENDPOINT_URL_CLOUDWATCH_LOGS`,
//! `AWS_ENDPOINT_URL`) are the environment's. IAM permissions the agent's credentials
//! need: `sagemaker:CreateTrainingJob`, `DescribeTrainingJob`, `StopTrainingJob`,
//! `ListTrainingJobs`, `ListTags`, `AddTags` (tags on create), `iam:PassRole` on the
//! job's role, `logs:DescribeLogStreams` and `logs:GetLogEvents` on
//! `/aws/sagemaker/TrainingJobs`, and `sts:GetCallerIdentity`.

use crate::runners::{Capabilities, DryRun, JobSpec, RunnerError};

pub mod api;
pub mod execution;
pub mod logs;
pub mod runner;
pub mod spec;
pub mod status;

pub use execution::Polling;
pub use runner::SageMakerRunner;

/// What the SageMaker runner does: runs need an image in ECR (a registry: SageMaker
/// pulls it), training jobs outlive the agent, and wait for instances before they run.
pub const CAPABILITIES: Capabilities = Capabilities {
    needs_image: true,
    survives_restart: true,
    needs_registry: true,
    reports_pending: true,
};

/// [`crate::runners::Runner::dry_run`] without AWS (for the CLI): the request as it
/// would be sent, masked. A role name keeps `ACCOUNT_ID` in its ARN.
pub fn offline_dry_run(job: &JobSpec, region: &str) -> Result<DryRun, RunnerError> {
    let req = spec::build(
        job,
        &spec::SpecContext {
            region,
            account: None,
        },
    )?;
    Ok(DryRun {
        objects: vec![req.masked()],
        backend_check: None,
    })
}
