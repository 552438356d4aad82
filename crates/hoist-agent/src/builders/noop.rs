//! The `noop` builder: prebuilt images only. A run whose job must be built from git or
//! code fails at once (stage `build`), saying what to configure.

use async_trait::async_trait;
use hoist_core::api::{JobSource, Run};

use super::{BuildError, Builder, Built, buildable_source, job_label};
use crate::logs::LogSink;

#[derive(Debug, Clone, Copy, Default)]
pub struct NoopBuilder;

#[async_trait]
impl Builder for NoopBuilder {
    fn kind(&self) -> &'static str {
        "noop"
    }

    async fn build(&self, run: &Run, logs: &LogSink) -> Result<Built, BuildError> {
        let source = buildable_source(run)?;
        let kind = match source {
            JobSource::Git { .. } => "git",
            _ => "code",
        };
        let msg = format!(
            "this agent's builder is `noop` (prebuilt images only): job {} needs an image built from its {kind} source; configure `builder: {{type: docker}}` (or kaniko) on an agent that serves this queue",
            job_label(run)
        );
        logs.system(&format!("[hoist: {msg}]"));
        Err(BuildError::Unsupported(msg))
    }
}
