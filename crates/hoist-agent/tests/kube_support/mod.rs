//! Shared by the Kubernetes runner's tests: `kubernetes_runner.rs` (the test cluster)
//! and `kubernetes_mock.rs` (the scripted API server of `kube_mock`).

use std::collections::BTreeMap;

use hoist_agent::runners::JobSpec;
use serde_json::Value;

/// The run token every test run gets: it must never appear literally in an object.
pub const RUN_TOKEN: &str = "hrt_s3cret-run-token";

/// A run of queue `admin/kq` by agent `agent`, with the test image, `args`, and an env
/// holding a run token ([`RUN_TOKEN`]) and a plain value; `config` is the queue config.
pub fn job_spec(run_id: &str, agent: &str, config: Value, args: &[&str]) -> JobSpec {
    JobSpec {
        run_id: run_id.into(),
        run_name: run_id.into(),
        project: "p".into(),
        entity: "admin".into(),
        queue: "admin/kq".into(),
        agent_name: agent.into(),
        image: Some(hoist_testkit::busybox_image()),
        entry_point: None,
        args: args.iter().map(|s| s.to_string()).collect(),
        env: [
            ("HOIST_RUN_ID", run_id),
            ("HOIST_RUN_TOKEN", RUN_TOKEN),
            ("PLAIN", "visible"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        resource_config: config,
        labels: BTreeMap::new(),
        source: None,
    }
}
