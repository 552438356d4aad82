//! A training job's CloudWatch logs: every stream of `/aws/sagemaker/TrainingJobs`
//! whose name starts with `<job name>/` (one per instance, `algo-1-1700000000`, and a
//! new one when SageMaker restarts an instance), each read from its head with
//! `GetLogEvents` and followed by its `nextForwardToken` (the same token back means
//! the end for now). `DescribeLogStreams` is asked on every pass until a stream is
//! found, then every [`RELIST_EVERY`] and once more after the end, so streams that
//! appear later (a restarted instance) are followed too without spending CloudWatch's
//! small `DescribeLogStreams` quota (5 requests per second per account) on every pass. A job on several instances writes each line as
//! `[algo-1-1700000000] text` ([`crate::logs::source_prefix`]), so a re-adopted run
//! resumes each stream where the server's copy of it ends.
//!
//! Passes come every [`Polling::log_first`] while lines come, backing off to
//! [`Polling::log_cap`] while none do. Once the job ended, passes go on until one finds
//! nothing new at least [`Polling::log_settle`] after the end (or [`LOG_DRAIN`] passed).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use hoist_core::api::LogStream;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::api::{Api, ApiError, Service};
use super::execution::Polling;
use super::spec::LOG_GROUP;
use crate::logs::{LogSink, source_prefix};
use crate::runners::LogResume;

/// The longest the logs are read after the end.
pub const LOG_DRAIN: Duration = Duration::from_secs(60);

/// How often the streams are listed again once one is known.
pub const RELIST_EVERY: Duration = Duration::from_secs(30);

/// The most `GetLogEvents` pages read from one stream in one pass.
const MAX_PAGES_PER_PASS: usize = 50;

struct Stream {
    /// The token to ask from (`None`: the head).
    token: Option<String>,
    resume: LogResume,
    /// `[short] ` when prefixed.
    prefix: String,
}

/// Follows the job's streams into `sink` until the job ended (`ended`) and its logs
/// are read, or `cancel`.
#[allow(clippy::too_many_arguments)]
pub async fn follow(
    api: Api,
    job: String,
    prefixed: bool,
    sink: LogSink,
    resume: LogResume,
    mut ended: watch::Receiver<bool>,
    cancel: CancellationToken,
    polling: Polling,
) {
    let mut streams: BTreeMap<String, Stream> = BTreeMap::new();
    let mut backoff = polling.log_first;
    let mut ended_at: Option<tokio::time::Instant> = None;
    let mut warned = false;
    let mut listed_at: Option<tokio::time::Instant> = None;
    let mut listed_after_end = false;
    loop {
        if ended_at.is_none() && *ended.borrow() {
            ended_at = Some(tokio::time::Instant::now());
        }
        let list = streams.is_empty()
            || listed_at.is_none_or(|t| t.elapsed() >= RELIST_EVERY)
            || (ended_at.is_some() && !listed_after_end);
        if list {
            listed_at = Some(tokio::time::Instant::now());
            listed_after_end = ended_at.is_some();
        }
        let found = pass(&api, &job, prefixed, &sink, &resume, &mut streams, list).await;
        let new = match found {
            Ok(n) => n,
            Err(e) => {
                if !warned && !e.is_transient() {
                    warned = true;
                    sink.warn(&format!(
                        "the job's CloudWatch logs cannot be read: {e} (the agent's credentials need logs:DescribeLogStreams and logs:GetLogEvents on {LOG_GROUP})"
                    ));
                }
                tracing::warn!(message = "Reading a training job's logs failed.", job = %job, error = %e);
                0
            }
        };
        if let Some(at) = ended_at {
            if (new == 0 && at.elapsed() >= polling.log_settle) || at.elapsed() >= LOG_DRAIN {
                return;
            }
            backoff = polling.log_first.min(Duration::from_millis(500));
        } else if new > 0 {
            backoff = polling.log_first;
        } else {
            backoff = (backoff * 2).min(polling.log_cap);
        }
        let was_ended = ended_at.is_some();
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            r = ended.changed(), if !was_ended => {
                if r.is_err() {
                    // The supervisor is gone.
                    return;
                }
            }
            _ = cancel.cancelled() => return,
        }
    }
}

/// One pass: the streams (when `list`), then each stream to its end for now. Returns
/// how many lines were read.
async fn pass(
    api: &Api,
    job: &str,
    prefixed: bool,
    sink: &LogSink,
    resume: &LogResume,
    streams: &mut BTreeMap<String, Stream>,
    list: bool,
) -> Result<usize, ApiError> {
    let names = if list {
        stream_names(api, job).await?
    } else {
        Vec::new()
    };
    for name in names {
        streams.entry(name.clone()).or_insert_with(|| {
            let short = short_name(job, &name);
            if prefixed {
                Stream {
                    token: None,
                    resume: resume.for_source(&short),
                    prefix: source_prefix(&short),
                }
            } else {
                Stream {
                    token: None,
                    resume: resume.clone(),
                    prefix: String::new(),
                }
            }
        });
    }
    let mut lines = 0;
    for (name, s) in streams.iter_mut() {
        for _ in 0..MAX_PAGES_PER_PASS {
            let mut body = json!({
                "logGroupName": LOG_GROUP,
                "logStreamName": name,
                "startFromHead": true,
            });
            if let Some(t) = &s.token {
                body["nextToken"] = json!(t);
            }
            let v = api.call(Service::Logs, "GetLogEvents", &body).await?;
            let events = v["events"].as_array().cloned().unwrap_or_default();
            for ev in &events {
                let ts = ev["timestamp"]
                    .as_i64()
                    .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
                    .unwrap_or_else(Utc::now);
                let message = ev["message"].as_str().unwrap_or_default();
                lines += push(sink, &mut s.resume, &s.prefix, message, ts);
            }
            let next = v["nextForwardToken"].as_str().map(str::to_string);
            let at_end = next.is_none() || next == s.token;
            if next.is_some() {
                s.token = next;
            }
            if at_end || events.is_empty() {
                break;
            }
        }
    }
    Ok(lines)
}

/// Pushes the lines of one event (a trailing newline dropped); returns how many were
/// new.
fn push(
    sink: &LogSink,
    resume: &mut LogResume,
    prefix: &str,
    message: &str,
    ts: DateTime<Utc>,
) -> usize {
    let message = message.strip_suffix('\n').unwrap_or(message);
    let message = message.strip_suffix('\r').unwrap_or(message);
    let mut n = 0;
    for line in message.split('\n') {
        if resume.skip(ts, false) {
            continue;
        }
        sink.push_at(LogStream::Stdout, &format!("{prefix}{line}"), ts);
        n += 1;
    }
    n
}

/// The streams of `job`, every page.
async fn stream_names(api: &Api, job: &str) -> Result<Vec<String>, ApiError> {
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..20 {
        let mut body = json!({
            "logGroupName": LOG_GROUP,
            "logStreamNamePrefix": format!("{job}/"),
        });
        if let Some(t) = &token {
            body["nextToken"] = json!(t);
        }
        let v = match api.call(Service::Logs, "DescribeLogStreams", &body).await {
            Ok(v) => v,
            // No job has logged in this region yet.
            Err(e) if e.is_not_found() => return Ok(names),
            Err(e) => return Err(e),
        };
        names.extend(
            v["logStreams"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["logStreamName"].as_str().map(str::to_string)),
        );
        token = v["nextToken"].as_str().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    Ok(names)
}

/// `algo-1-1700000000` of `job/algo-1-1700000000`, made a valid log source name.
fn short_name(job: &str, stream: &str) -> String {
    let short = stream
        .strip_prefix(job)
        .and_then(|s| s.strip_prefix('/'))
        .unwrap_or(stream);
    let s: String = short
        .chars()
        .map(|c| {
            if c.is_whitespace() || c == '[' || c == ']' {
                '_'
            } else {
                c
            }
        })
        .collect();
    if s.is_empty() { "stream".into() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names() {
        assert_eq!(short_name("j", "j/algo-1-17"), "algo-1-17");
        assert_eq!(short_name("j", "other/x y"), "other/x_y");
        assert_eq!(short_name("j", "j/"), "stream");
    }

    #[test]
    fn events_split_into_lines_and_resume() {
        let sink = LogSink::new();
        let ts = Utc.timestamp_millis_opt(1_700_000_000_000).unwrap();
        let mut resume = LogResume::after(Some(ts - chrono::TimeDelta::milliseconds(1)));
        assert_eq!(push(&sink, &mut resume, "[a] ", "one\ntwo\n", ts), 2);
        let mut old = LogResume::after(Some(ts));
        assert_eq!(push(&sink, &mut old, "", "three", ts), 0);
        let texts: Vec<String> = sink.snapshot().into_iter().map(|l| l.text).collect();
        assert_eq!(texts, vec!["[a] one", "[a] two"]);
    }
}
