//! `hoist launch`: put a run on a queue, optionally wait for it with its logs live;
//! or, with `--dry-run`, show what the run would submit and enqueue nothing.
//!
//! A dry run goes through everything a launch and an agent do up to the start: the
//! server checks the launch exactly as a real one and answers with the run it would
//! create (`dry_run` in the request); this machine's agent config (`--agent-config`,
//! else `~/.config/hoist/launch-config.yaml`) then prepares it as a claimed run
//! (macros, `HOIST_*` variables with a placeholder run token) and the queue's runner
//! checks and maps it ([`hoist_agent::dry_run`]). The objects go to stdout (YAML, or
//! JSON with `-o json`), secrets masked; what was checked goes to stderr.

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use hoist_client::Client;
use hoist_core::api::{JobRef, LaunchRequest, Run};
use hoist_core::names;
use hoist_core::run::{Priority, RunState};
use serde_json::Value;

use super::input::{object_inline_or_file, pairs};
use super::output::{err_line, json, out};
use super::run::{LogSink, print_log_tail};
use super::{Ctx, Exit, invalid, shell_words, split_ref};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  hoist launch --queue default -- python3 train.py --epochs 3
  hoist launch --queue gpu --image ghcr.io/me/train:1 --env EPOCHS=3 -- --lr 0.1
  id=$(hoist launch -q gpu --image me/train:1 --set-var gpus=2 --priority high)
  hoist launch -q gpu --image me/train:1 --dry-run      # show what would be submitted")]
pub struct LaunchArgs {
    /// The queue: NAME (among your entities, yours first) or ENTITY/NAME.
    #[arg(short, long)]
    pub queue: String,
    /// The entity of the queue.
    #[arg(short, long)]
    pub entity: Option<String>,
    /// Project the run belongs to (default: `default`).
    #[arg(short, long)]
    pub project: Option<String>,
    /// A container image to run.
    #[arg(long, value_name = "IMAGE", conflicts_with = "job")]
    pub image: Option<String>,
    /// A stored job: NAME or NAME:VERSION (v3, latest).
    #[arg(long, value_name = "NAME[:VER]")]
    pub job: Option<String>,
    /// The command, as one string split like a shell would (quotes honoured, nothing
    /// expanded): --entry-point "python3 train.py --lr 0.1".
    #[arg(long, value_name = "CMD")]
    pub entry_point: Option<String>,
    /// An environment variable for the run: KEY=VALUE, or KEY to pass this shell's
    /// value. Repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// The run config (handed to the job as HOIST_RUN_CONFIG): inline JSON when it
    /// starts with `{`, else a YAML or JSON file.
    #[arg(long, value_name = "JSON|FILE")]
    pub config: Option<String>,
    /// Resource args merged over the queue's config for this run: a YAML or JSON file
    /// (or inline JSON starting with `{`).
    #[arg(long, value_name = "FILE")]
    pub resource_args: Option<String>,
    /// A value for one of the queue's template variables: NAME=VALUE. Repeatable.
    #[arg(long = "set-var", value_name = "NAME=VALUE")]
    pub set_var: Vec<String>,
    /// critical, high, medium or low (used when the queue prioritizes).
    #[arg(long)]
    pub priority: Option<Priority>,
    /// A name for the run (default: its id).
    #[arg(long)]
    pub name: Option<String>,
    /// Follow the run's logs until it ends; exit 0 if it finished, 1 otherwise.
    #[arg(short, long, conflicts_with = "dry_run")]
    pub wait: bool,
    /// Enqueue nothing: print what the queue's runner would submit (the container
    /// config, the command, the Kubernetes objects), checked by the server and by the
    /// runner as this machine's agent config sets it up; exit 2 when refused.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: the agent config to prepare the run with (default:
    /// ~/.config/hoist/launch-config.yaml, when it exists).
    #[arg(long, value_name = "FILE", requires = "dry_run")]
    pub agent_config: Option<PathBuf>,
    /// Without --image, --job or --entry-point: the command to run (local-process
    /// queues). Otherwise: arguments for the entry point.
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

/// The request a launch sends (everything checked that can be checked locally).
pub fn request(a: LaunchArgs) -> anyhow::Result<LaunchRequest> {
    let (entity, queue) = split_ref("queue", &a.queue, a.entity.as_deref())?;
    let job = a
        .job
        .as_deref()
        .map(|j| JobRef::parse(j).map_err(|e| invalid(format!("--job: {e}"))))
        .transpose()?;
    let mut entry_point = match &a.entry_point {
        Some(cmd) => {
            let words = shell_words::split(cmd)
                .map_err(|e| invalid(format!("--entry-point {cmd:?}: {e}")))?;
            if words.is_empty() {
                return Err(invalid("--entry-point is empty"));
            }
            Some(words)
        }
        None => None,
    };
    let mut args = a.args;
    if entry_point.is_none() && a.image.is_none() && job.is_none() && !args.is_empty() {
        // A bare command for a local-process queue.
        entry_point = Some(std::mem::take(&mut args));
    }
    // The server's checks (hoist-core's `names`), before anything is sent.
    if let Some(img) = &a.image {
        names::validate_image_ref(img).map_err(|e| invalid(format!("--image: {e}")))?;
    }
    if let Some(ep) = &entry_point {
        names::validate_command("the entry point", ep).map_err(|e| invalid(e.to_string()))?;
    }
    names::validate_command("the arguments", &args).map_err(|e| invalid(e.to_string()))?;
    let env = pairs("--env", &a.env, true)?;
    names::validate_env(&env).map_err(|e| invalid(format!("--env: {e}")))?;
    let config = a
        .config
        .as_deref()
        .map(|c| object_inline_or_file("--config", c))
        .transpose()?;
    let resource_args = a
        .resource_args
        .as_deref()
        .map(|c| object_inline_or_file("--resource-args", c))
        .transpose()?;
    Ok(LaunchRequest {
        queue,
        entity,
        project: a.project,
        name: a.name,
        image: a.image,
        job,
        entry_point,
        args,
        env: env.into(),
        config,
        resource_args,
        template_values: pairs("--set-var", &a.set_var, false)?
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
        priority: a.priority,
        dry_run: a.dry_run,
    })
}

pub async fn launch(ctx: &Ctx, a: LaunchArgs) -> anyhow::Result<()> {
    let wait = a.wait;
    let agent_config = a.agent_config.clone();
    let req = request(a)?;
    if req.dry_run {
        return dry_run(ctx, &req, agent_config).await;
    }
    let client = ctx.client()?;
    let run = client.launch(&req).await?;
    if !wait {
        if ctx.json() {
            return json(&run);
        }
        out(&run.id)?;
        return Ok(());
    }
    err_line(&format!(
        "hoist: launched run {} on {}/{}; following its logs (Ctrl-C stops following, not the run)",
        run.id, run.entity, run.queue
    ));
    // With --output json, stdout carries the final run only: logs go to stderr.
    let sink = if ctx.json() {
        LogSink::AllStderr
    } else {
        LogSink::Split
    };
    let follow = follow_to_end(&client, &run.id, sink);
    let run = tokio::select! {
        r = follow => r?,
        _ = tokio::signal::ctrl_c() => {
            err_line(&format!(
                "\nhoist: stopped following; run {id} goes on (`hoist run stop {id}` stops it, `hoist run cancel {id}` while it is queued)",
                id = run.id
            ));
            return Err(Exit(130).into());
        }
    };
    finish(ctx, &run)
}

/// `hoist launch --dry-run`: the server's dry-run answer, prepared and checked by the
/// runner as this machine's agent would.
async fn dry_run(
    ctx: &Ctx,
    req: &LaunchRequest,
    agent_config: Option<PathBuf>,
) -> anyhow::Result<()> {
    use hoist_agent::config::{self, ConfigOverrides};
    use hoist_agent::dry_run::{DryRunAgent, dry_run};
    use hoist_agent::runners::RunnerError;

    // The agent config first: a bad one is found before anything is sent.
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let path = agent_config.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        config::load(path.as_deref(), &env, &ConfigOverrides::default())
    })
    .await?
    .map_err(|e| invalid(format!("the agent configuration is not valid:\n{e}")))?;
    for w in &loaded.warnings {
        err_line(&format!("warning: {w}"));
    }
    let cfg = loaded.config;
    let target = ctx.target()?;
    let client = ctx.client()?;
    let run = client.launch(req).await?;
    if run.state_reason != hoist_core::api::DRY_RUN_REASON {
        // A server that took the launch for real (it cannot: an unknown field is
        // refused), said so plainly.
        anyhow::bail!(
            "the server enqueued run {} instead of a dry run; cancel it with `hoist run cancel {}`",
            run.id,
            run.id
        );
    }
    let base_url = cfg.base_url.clone().unwrap_or_else(|| target.host.clone());
    let agent_name = cfg.agent_name(&crate::agent_start::hostname());
    let work_root = cfg
        .local_process
        .work_dir
        .clone()
        .unwrap_or_else(crate::agent_start::default_work_root);
    let agent = DryRunAgent {
        config: &cfg,
        host_env: std::sync::Arc::new(hoist_agent::host_env::HostEnv::capture()),
        agent_name: &agent_name,
        base_url: &base_url,
        work_root,
    };
    let config_from = match &loaded.path {
        Some(p) => p.display().to_string(),
        None => "the default agent config (no launch-config.yaml)".to_string(),
    };
    err_line(&format!(
        "hoist: dry run of a {} run on {}/{}, prepared as agent {agent_name} would with {config_from}",
        run.resource, run.entity, run.queue
    ));
    err_line("checked by the server: ok");
    let report = dry_run(&run, &agent).await;
    let (objects, notes, runner_check, backend_check) = match &report {
        Ok(r) => (
            r.result.objects.clone(),
            r.notes.clone(),
            Ok(()),
            r.result.backend_check.clone(),
        ),
        Err(e @ (RunnerError::Refused(_) | RunnerError::Start { .. })) => {
            (Vec::new(), Vec::new(), Err(e.to_string()), None)
        }
        Err(e) => {
            err_line(&format!("hoist: the runner's checks were not made: {e}"));
            err_line("nothing was enqueued");
            return Err(Exit(1).into());
        }
    };
    let refused = runner_check.is_err() || matches!(backend_check, Some(Err(_)));
    if ctx.json() {
        let check = |c: &Result<(), String>| match c {
            Ok(()) => serde_json::json!("ok"),
            Err(m) => serde_json::json!({"refused": m}),
        };
        json(&serde_json::json!({
            "run": run,
            "objects": objects,
            "notes": notes,
            "runner_check": check(&runner_check),
            "backend_check": backend_check.as_ref().map(check),
            "enqueued": false,
        }))?;
    } else {
        let docs: Vec<String> = objects
            .iter()
            .map(|o| {
                serde_saphyr::to_string(o)
                    .unwrap_or_else(|_| serde_json::to_string_pretty(o).unwrap_or_default())
            })
            .collect();
        if !docs.is_empty() {
            print!("{}", docs.join("---\n"));
        }
    }
    for n in &notes {
        err_line(&format!("note: {n}"));
    }
    match &runner_check {
        Ok(()) => err_line("checked by the runner: ok"),
        Err(m) => err_line(&format!("refused by the runner: {m}")),
    }
    match &backend_check {
        None => {}
        Some(Ok(())) => err_line("checked by the backend (server-side dry run): ok"),
        Some(Err(m)) => err_line(&format!(
            "refused by the backend (server-side dry run): {m}"
        )),
    }
    err_line("nothing was enqueued");
    if refused {
        return Err(Exit(2).into());
    }
    Ok(())
}

/// Follows the log until the run has ended and returns the ended run. Reconnects from
/// the last line seen when the connection breaks (up to 10 failures in a row) or when
/// the server closed the stream early (a replica shutting down).
pub async fn follow_to_end(client: &Client, id: &str, sink: LogSink) -> anyhow::Result<Run> {
    let mut offset = 0u64;
    let mut failures = 0u32;
    loop {
        match client.follow_logs(id, offset).await {
            Ok(stream) => {
                let mut stream = std::pin::pin!(stream);
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(line) => {
                            failures = 0;
                            offset = line.offset + 1;
                            sink.write(&line)?;
                        }
                        Err(e) if e.is_transient() && failures < 10 => {
                            failures += 1;
                            break;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Err(e) if e.is_transient() && failures < 10 => failures += 1,
            Err(e) => return Err(e.into()),
        }
        match client.get_run(id).await {
            Ok(run) if run.state.is_terminal() => return Ok(run),
            Ok(_) => {}
            Err(e) if e.is_transient() && failures < 10 => failures += 1,
            Err(e) => return Err(e.into()),
        }
        tokio::time::sleep(Duration::from_millis(250 * u64::from(failures.max(1)))).await;
    }
}

/// Reports the end of a waited-for run; exit 0 only if it finished.
fn finish(ctx: &Ctx, run: &Run) -> anyhow::Result<()> {
    if ctx.json() {
        json(run)?;
    }
    let code = run
        .exit_code
        .map(|c| format!(" (exit code {c})"))
        .unwrap_or_default();
    match run.state {
        RunState::Finished => {
            err_line(&format!("hoist: run {} finished{code}", run.id));
            Ok(())
        }
        state => {
            // One line says what happened: the failure's stage and message when the
            // agent recorded one, else the state's reason.
            let why = match &run.failure {
                Some(f) => format!(" in the {} stage: {}", f.stage, f.message),
                None if run.state_reason.is_empty() => String::new(),
                None => format!(": {}", run.state_reason),
            };
            err_line(&format!("hoist: run {} {state}{code}{why}", run.id));
            print_log_tail(run);
            Err(Exit(1).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: LaunchArgs,
    }

    fn req(args: &[&str]) -> anyhow::Result<LaunchRequest> {
        let t = T::try_parse_from(std::iter::once("launch").chain(args.iter().copied()))?;
        request(t.a)
    }

    #[test]
    fn bare_command_is_the_entry_point() {
        let r = req(&["-q", "default", "--", "python3", "train.py"]).unwrap();
        assert_eq!(r.entry_point.unwrap(), ["python3", "train.py"]);
        assert!(r.args.is_empty());
        assert_eq!(r.queue, "default");
    }

    #[test]
    fn image_args_are_args() {
        let r = req(&["-q", "t/gpu", "--image", "img:1", "--", "--lr", "0.1"]).unwrap();
        assert_eq!(r.entity.as_deref(), Some("t"));
        assert_eq!(r.queue, "gpu");
        assert!(r.entry_point.is_none());
        assert_eq!(r.args, ["--lr", "0.1"]);
    }

    #[test]
    fn entry_point_split() {
        let r = req(&[
            "-q",
            "q",
            "--entry-point",
            "python3 -c 'print(1)'",
            "--set-var",
            "gpus=2",
            "--env",
            "A=1",
            "--config",
            r#"{"lr": 0.1}"#,
            "--priority",
            "high",
            "--",
            "x",
        ])
        .unwrap();
        assert_eq!(r.entry_point.unwrap(), ["python3", "-c", "print(1)"]);
        assert_eq!(r.args, ["x"]);
        assert_eq!(r.template_values["gpus"], Value::String("2".into()));
        assert_eq!(r.env["A"], "1");
        assert_eq!(r.config.unwrap()["lr"], 0.1);
        assert_eq!(r.priority, Some(Priority::High));
        let e = req(&["-q", "q", "--entry-point", "echo 'x"]).unwrap_err();
        assert_eq!(super::super::exit_code(&e), 2, "{e}");
    }

    #[test]
    fn bad_input_is_refused_before_sending() {
        for (args, why) in [
            (vec!["-q", "q", "--image=--privileged"], "starts with '-'"),
            (vec!["-q", "q", "--image=-v/:/host"], "starts with '-'"),
            (vec!["-q", "q", "--image", "img\n"], "control characters"),
            (
                vec!["-q", "q", "--env", "A=x\ny", "--", "true"],
                "line break",
            ),
            (
                vec!["-q", "q", "--env", "HOIST_RUN_ID=1", "--", "true"],
                "reserved",
            ),
            (vec!["-q", "q", "--", "a\0b"], "NUL"),
        ] {
            let e = req(&args).unwrap_err();
            assert_eq!(super::super::exit_code(&e), 2, "{args:?}: {e}");
            assert!(e.to_string().contains(why), "{args:?}: {e}");
        }
    }
}
