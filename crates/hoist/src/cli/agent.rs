//! `hoist agent list` (the agent itself is `crate::agent_cmd`).

use hoist_core::api::Agent;

use super::Ctx;
use super::output::{Table, ago, json, out};

pub fn agent_table(agents: &[Agent]) -> Table {
    let mut t = Table::new(&[
        "ID",
        "NAME",
        "STATUS",
        "HOST",
        "STARTED",
        "LAST HEARTBEAT",
        "QUEUES",
        "RUNNING/MAX",
        "VERSION",
    ]);
    for a in agents {
        let max = if a.max_jobs < 0 {
            "∞".to_string()
        } else {
            a.max_jobs.to_string()
        };
        t.row(vec![
            a.id.clone(),
            a.name.clone(),
            a.status.as_str().to_string(),
            a.host.clone(),
            ago(a.started_at),
            ago(a.last_heartbeat_at),
            a.queues.join(","),
            format!("{}/{max}", a.running),
            a.version.clone(),
        ]);
    }
    t
}

pub async fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let agents = client.list_agents().await?;
    if ctx.json() {
        return json(&agents);
    }
    if agents.is_empty() {
        out("No agents. Start one with `hoist agent --queue NAME`.")?;
        return Ok(());
    }
    agent_table(&agents).print()
}
