//! `hoist launch`: put a run on a queue, optionally wait for it with its logs live.

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
  id=$(hoist launch -q gpu --image me/train:1 --set-var gpus=2 --priority high)")]
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
    #[arg(short, long)]
    pub wait: bool,
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
    })
}

pub async fn launch(ctx: &Ctx, a: LaunchArgs) -> anyhow::Result<()> {
    let wait = a.wait;
    let req = request(a)?;
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
