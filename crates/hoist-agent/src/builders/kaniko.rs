//! The `kaniko` builder: builds as Kubernetes Jobs running the kaniko executor, with
//! the build context uploaded to the configured store (S3, GCS, Azure Blob).
//!
//! Its configuration (`build-context-store`, `build-job-name`, `secret-name`,
//! `secret-key`, `kaniko-config`) is parsed and validated by `config/` now; the builds
//! themselves arrive with the Kubernetes runner. Until then every build fails with a
//! message that says so.

use async_trait::async_trait;
use hoist_core::api::Run;

use super::{BuildError, Builder, Built, buildable_source, job_label};
use crate::logs::LogSink;

#[derive(Debug, Clone, Copy, Default)]
pub struct KanikoBuilder;

#[async_trait]
impl Builder for KanikoBuilder {
    fn kind(&self) -> &'static str {
        "kaniko"
    }

    async fn build(&self, run: &Run, logs: &LogSink) -> Result<Built, BuildError> {
        buildable_source(run)?;
        let msg = format!(
            "job {}: the kaniko builder runs builds as Kubernetes Jobs, which arrive with the Kubernetes runner (not available yet); use `builder: {{type: docker}}` on an agent with a Docker daemon meanwhile",
            job_label(run)
        );
        logs.system(&format!("[hoist: {msg}]"));
        Err(BuildError::Unsupported(msg))
    }
}
