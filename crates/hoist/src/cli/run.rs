//! `hoist run list|show|logs|stop|cancel`.

use std::io::Write;

use futures::StreamExt;
use hoist_client::RunQuery;
use hoist_core::api::{LogStream, Run, StoredLogLine};
use hoist_core::run::RunState;

use super::output::{Fields, Table, ago, err_line, json, opt_when, or_dash, out, when, yaml_block};
use super::{Ctx, shell_words, split_ref};

#[derive(Debug, clap::Subcommand)]
pub enum RunCmd {
    /// List runs you can see, newest first.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show a run with its timeline (every state change, when, by whom, why).
    Show(IdArg),
    /// Print a run's logs (stdout lines on stdout, the rest on stderr).
    Logs(LogsArgs),
    /// Ask the agent running a run to stop it (SIGTERM, then kill after a grace period).
    Stop(StopArgs),
    /// Cancel a run that has not started yet.
    Cancel(IdArg),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only runs of this queue (NAME or ENTITY/NAME).
    #[arg(short, long)]
    pub queue: Option<String>,
    /// Only runs of this entity.
    #[arg(short, long)]
    pub entity: Option<String>,
    /// Only runs in this state (queued, running, finished, failed, …).
    #[arg(short, long)]
    pub state: Option<RunState>,
    /// At most this many runs (1 to 1000; default 50).
    #[arg(short = 'n', long)]
    pub limit: Option<i64>,
}

#[derive(Debug, clap::Args)]
pub struct IdArg {
    /// The run id.
    pub run: String,
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The run id.
    pub run: String,
    /// Keep printing lines as they arrive, until the run ends.
    #[arg(short, long)]
    pub follow: bool,
    /// Start at this line (0-based).
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
}

#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// The run id.
    pub run: String,
    /// Why (recorded in the run's timeline).
    #[arg(short, long)]
    pub reason: Option<String>,
}

pub async fn run(ctx: &Ctx, cmd: RunCmd) -> anyhow::Result<()> {
    match cmd {
        RunCmd::List(a) => list(ctx, a).await,
        RunCmd::Show(a) => show(ctx, a).await,
        RunCmd::Logs(a) => logs(ctx, a).await,
        RunCmd::Stop(a) => stop(ctx, a).await,
        RunCmd::Cancel(a) => cancel(ctx, a).await,
    }
}

/// Where log lines go.
#[derive(Debug, Clone, Copy)]
pub enum LogSink {
    /// stdout lines to stdout; stderr and hoist's own lines to stderr.
    Split,
    /// Everything to stderr (stdout is reserved for JSON).
    AllStderr,
    /// Each line as a JSON object on stdout (NDJSON).
    Json,
}

impl LogSink {
    pub fn write(self, line: &StoredLogLine) -> anyhow::Result<()> {
        match (self, line.stream) {
            (LogSink::Json, _) => out(&serde_json::to_string(line)?)?,
            (LogSink::Split, LogStream::Stdout) => out(&line.text)?,
            // hoist's own notes already read `[hoist: …]`; raw build and git output
            // lines get the marker so they are not taken for the job's output.
            (_, LogStream::System) if line.text.starts_with("[hoist") => err_line(&line.text),
            (_, LogStream::System) => err_line(&format!("[hoist] {}", line.text)),
            _ => err_line(&line.text),
        }
        Ok(())
    }
}

/// The tail of a failed run's logs (stderr), as the failure recorded it.
pub fn print_log_tail(run: &Run) {
    if let Some(f) = run.failure.as_ref().filter(|f| !f.log_tail.is_empty()) {
        err_line("hoist: last log lines:");
        for l in &f.log_tail {
            err_line(&format!("  {l}"));
        }
    }
}

pub fn run_table(runs: &[Run]) -> Table {
    let mut t = Table::new(&["ID", "STATE", "QUEUE", "PROJECT", "NAME", "AGE"]);
    for r in runs {
        t.row(vec![
            r.id.clone(),
            r.state.to_string(),
            format!("{}/{}", r.entity, r.queue),
            r.project.clone(),
            if r.name == r.id {
                "-".into()
            } else {
                r.name.clone()
            },
            ago(r.created_at),
        ]);
    }
    t
}

async fn list(ctx: &Ctx, a: ListArgs) -> anyhow::Result<()> {
    let mut q = RunQuery {
        entity: a.entity.clone(),
        state: a.state,
        limit: a.limit,
        ..Default::default()
    };
    if let Some(queue) = &a.queue {
        let (e, n) = split_ref("queue", queue, a.entity.as_deref())?;
        q.queue = Some(n);
        q.entity = e;
    }
    let client = ctx.client()?;
    let page = client.list_runs(&q).await?;
    if ctx.json() {
        return json(&page);
    }
    if page.runs.is_empty() {
        out("No runs.")?;
        return Ok(());
    }
    run_table(&page.runs).print()?;
    if page.next_cursor.is_some() {
        err_line(&format!(
            "hoist: showing the newest {}; use --limit for more",
            page.runs.len()
        ));
    }
    Ok(())
}

fn describe(r: &Run) -> String {
    let mut f = Fields::new();
    f.add("run", &r.id);
    if r.name != r.id {
        f.add("name", &r.name);
    }
    // A reason that already starts with the state ("stopped (killed by signal 15)")
    // is shown as it is.
    let state_name = r.state.to_string();
    let reason = if r.state_reason.is_empty() {
        String::new()
    } else if r.state_reason.starts_with(&state_name) {
        r.state_reason[state_name.len()..].to_string()
    } else {
        format!(" ({})", r.state_reason)
    };
    f.add(
        "state",
        format!(
            "{}{reason}{}",
            r.state,
            if r.stop_requested && !r.state.is_terminal() {
                ", stop requested"
            } else {
                ""
            }
        ),
    );
    f.add(
        "queue",
        format!("{}/{} ({})", r.entity, r.queue, r.resource),
    );
    f.add("project", &r.project);
    f.add("priority", r.priority.to_string());
    f.add("created by", &r.created_by);
    f.add("created", when(r.created_at));
    f.add("started", opt_when(r.started_at));
    f.add("ended", opt_when(r.ended_at));
    f.add(
        "agent",
        r.agent
            .as_ref()
            .map(|a| format!("{} ({})", a.name, a.id))
            .unwrap_or_else(|| "-".into()),
    );
    f.add("attempts", r.attempts.to_string());
    f.add(
        "exit code",
        r.exit_code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into()),
    );
    if let Some(i) = &r.image {
        f.add("image", i);
    }
    if let Some(j) = &r.job {
        f.add("job", j.to_string());
    }
    if let Some(b) = &r.built {
        let how = if b.cache_hit {
            "cache hit: not rebuilt".to_string()
        } else {
            format!("built by {}", b.builder)
        };
        // A run names an image or has one built for its job, not both.
        let label = if r.image.is_some() {
            "built image"
        } else {
            "image"
        };
        f.add(label, format!("{} ({how})", b.image));
    }
    if let Some(ep) = &r.entry_point {
        f.add("entry point", shell_words::join(ep));
    }
    if !r.args.is_empty() {
        f.add("args", shell_words::join(&r.args));
    }
    if !r.env.is_empty() {
        f.add(
            "env",
            r.env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    if !r.template_values.is_empty() {
        f.add(
            "template values",
            r.template_values
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{k}={}",
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string())
                    )
                })
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    if let Some(fl) = &r.failure {
        f.add("failure", format!("{} stage: {}", fl.stage, fl.message));
    }
    let mut s = f.render();
    if let Some(fl) = &r.failure
        && !fl.log_tail.is_empty()
    {
        s.push_str("\nlog tail:");
        for l in &fl.log_tail {
            s.push_str("\n  ");
            s.push_str(l);
        }
    }
    let is_empty = |v: &serde_json::Value| v.as_object().is_none_or(|m| m.is_empty());
    if !is_empty(&r.config) {
        s.push_str("\nconfig:\n");
        s.push_str(&yaml_block(&r.config, 2));
    }
    if !is_empty(&r.resource_config) {
        s.push_str("\nresource config:\n");
        s.push_str(&yaml_block(&r.resource_config, 2));
    }
    if let Some(tl) = &r.timeline {
        let mut t = Table::new(&["AT", "FROM", "TO", "BY", "REASON"]);
        for tr in tl {
            t.row(vec![
                tr.at.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
                tr.from.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
                tr.to.to_string(),
                tr.actor.to_string(),
                or_dash(&tr.reason),
            ]);
        }
        s.push_str("\ntimeline (UTC):\n");
        s.push_str(
            &t.render()
                .lines()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n"),
        );
    }
    if let Some(ws) = r.warnings.as_ref().filter(|w| !w.is_empty()) {
        s.push_str("\nwarnings (UTC):");
        for w in ws {
            s.push_str(&format!(
                "\n  {}  {}",
                w.at.format("%Y-%m-%d %H:%M:%S%.3f"),
                w.message
            ));
        }
    }
    s
}

async fn show(ctx: &Ctx, a: IdArg) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let r = client.get_run(&a.run).await?;
    if ctx.json() {
        return json(&r);
    }
    out(&describe(&r))?;
    Ok(())
}

async fn logs(ctx: &Ctx, a: LogsArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let sink = if ctx.json() {
        LogSink::Json
    } else {
        LogSink::Split
    };
    if a.follow {
        let stream = client.follow_logs(&a.run, a.offset).await?;
        let mut stream = std::pin::pin!(stream);
        while let Some(line) = stream.next().await {
            sink.write(&line?)?;
        }
        return Ok(());
    }
    let mut offset = a.offset;
    loop {
        let page = client.read_logs(&a.run, offset, Some(1000)).await?;
        for l in &page.lines {
            sink.write(l)?;
        }
        if page.complete || page.lines.is_empty() || page.next_offset <= offset {
            break;
        }
        offset = page.next_offset;
    }
    std::io::stdout().flush()?;
    Ok(())
}

async fn stop(ctx: &Ctx, a: StopArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let r = client.stop_run(&a.run, a.reason).await?;
    if ctx.json() {
        return json(&r);
    }
    out(&format!(
        "Stop requested for run {} (now {}); the agent stops it within its grace period.",
        r.id, r.state
    ))?;
    Ok(())
}

async fn cancel(ctx: &Ctx, a: IdArg) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let r = client.cancel_run(&a.run).await?;
    if ctx.json() {
        return json(&r);
    }
    out(&format!("Cancelled run {} (now {}).", r.id, r.state))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of a job as `GET /runs/{id}` answers it, with `built` as given.
    fn job_run(built: serde_json::Value) -> Run {
        serde_json::from_value(serde_json::json!({
            "id": "r1", "entity": "u", "queue": "q", "project": "p", "name": "r1",
            "image": null, "job": {"name": "j", "version": "v2"},
            "entry_point": null, "args": [], "env": {}, "config": {}, "resource_args": {},
            "template_values": {}, "priority": "medium", "resource": "docker",
            "resource_config": {}, "state": "running", "state_reason": "",
            "stop_requested": false, "created_by": "u",
            "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z",
            "started_at": null, "ended_at": null, "agent": null, "attempts": 1,
            "exit_code": null, "failure": null, "built": built
        }))
        .unwrap()
    }

    #[test]
    fn show_names_the_built_image_and_how_it_came() {
        let line = |built| {
            describe(&job_run(built))
                .lines()
                .find(|l| l.starts_with("image:"))
                .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        };
        assert_eq!(
            line(
                serde_json::json!({"image": "hoist-build:0123456789ab", "cache_hit": false, "builder": "kaniko"})
            ),
            Some("hoist-build:0123456789ab (built by kaniko)".into())
        );
        assert_eq!(
            line(
                serde_json::json!({"image": "hoist-build:0123456789ab", "cache_hit": true, "builder": "docker"})
            ),
            Some("hoist-build:0123456789ab (cache hit: not rebuilt)".into())
        );
        assert_eq!(line(serde_json::Value::Null), None);
    }
}
