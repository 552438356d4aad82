//! A container's output, followed through the logs endpoint into the run's
//! [`LogSink`].
//!
//! The stream is asked with `timestamps=true`, so each frame starts with the time the
//! daemon received it; lines keep that time. Frames are not lines: docker splits long
//! lines into several frames (16 KiB each) and a program may write a line in pieces, so
//! each stream keeps its unfinished line (bounded by [`MAX_LINE_BYTES`]: longer ones
//! are pushed in pieces). `\r\n` ends a line; a lone `\r` (progress bars) also does.
//!
//! When the connection breaks while the container runs (daemon restart), the stream is
//! asked again from a little before the last timestamp seen, skipping the frames
//! already pushed. Once the container has stopped, the output is read one last time
//! without following: docker 20.10 sometimes ends a followed stream before the last
//! message of a container whose output does not end with a newline.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::LogsOptions;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use hoist_core::api::LogStream;

use crate::logs::{LogSink, MAX_LINE_BYTES};
use crate::runners::LogResume;

/// Consecutive failed attempts to (re)open the stream before giving up.
const MAX_RETRIES: u32 = 30;

/// How far back a reopened stream looks for frames it may have missed. Frames of
/// stdout and stderr are stamped by different goroutines, so they are ordered by time
/// only up to a few milliseconds.
const OVERLAP: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

/// Frames remembered for de-duplication (those within [`OVERLAP`] of the newest).
const MAX_SEEN: usize = 100_000;

/// The frames pushed recently, to skip them when the stream is read again.
#[derive(Default)]
struct Seen {
    newest: Option<DateTime<Utc>>,
    order: VecDeque<(DateTime<Utc>, bool)>,
    set: HashSet<(DateTime<Utc>, bool)>,
}

impl Seen {
    fn add(&mut self, ts: DateTime<Utc>, stderr: bool) {
        let newest = self.newest.map_or(ts, |n| n.max(ts));
        self.newest = Some(newest);
        if self.set.insert((ts, stderr)) {
            self.order.push_back((ts, stderr));
        }
        while let Some(&(t, e)) = self.order.front() {
            if t >= newest - OVERLAP && self.order.len() <= MAX_SEEN {
                break;
            }
            self.order.pop_front();
            self.set.remove(&(t, e));
        }
    }
}

/// Follows `id`'s output until the container stops, pushing lines into `sink`. Lines
/// `resume` says were shipped already are skipped.
pub(crate) async fn follow(docker: Docker, id: String, sink: LogSink, mut resume: LogResume) {
    let mut seen = Seen::default();
    let mut out = Lines::new(LogStream::Stdout);
    let mut err = Lines::new(LogStream::Stderr);
    let mut failures = 0u32;
    let mut reopened = false;
    let mut last_pass = false;
    loop {
        // On a reopened stream: frames older than this were all read before; newer
        // ones may have been, and are looked up.
        let window = if reopened {
            seen.newest.map(|n| n - OVERLAP)
        } else {
            None
        };
        let from = window.or(resume.from());
        let opts = LogsOptions {
            follow: !last_pass,
            stdout: true,
            stderr: true,
            // Docker's `since` is in whole seconds: fetch from that second, skip by
            // timestamp.
            since: from
                .map(|t| i32::try_from(t.timestamp()).unwrap_or(0))
                .unwrap_or(0),
            until: 0,
            timestamps: true,
            tail: "all".to_string(),
        };
        let mut stream = docker.logs(&id, Some(opts));
        let mut failed: Option<DockerError> = None;
        let mut got_any = false;
        while let Some(item) = stream.next().await {
            let frame = match item {
                Ok(f) => f,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            got_any = true;
            let (lines, bytes, stderr) = match &frame {
                LogOutput::StdErr { message } => (&mut err, message, true),
                LogOutput::StdOut { message } | LogOutput::Console { message } => {
                    (&mut out, message, false)
                }
                LogOutput::StdIn { .. } => continue,
            };
            let (ts, text) = split_timestamp(bytes);
            let ts = ts.unwrap_or_else(Utc::now);
            if window.is_some_and(|w| ts < w) || (reopened && seen.set.contains(&(ts, stderr))) {
                continue;
            }
            if resume.skip(ts, stderr) {
                // Shipped by an earlier agent process; a reopened stream skips it too.
                seen.add(ts, stderr);
                continue;
            }
            lines.feed(text, ts, &sink);
            seen.add(ts, stderr);
        }
        drop(stream);
        if last_pass {
            break;
        }
        reopened = true;
        let Some(e) = failed else {
            // The daemon ends the stream when the container stops, and also when it
            // shuts down itself (live-restore keeps the container running).
            if still_running(&docker, &id).await && failures < MAX_RETRIES {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            } else {
                last_pass = true;
            }
            continue;
        };
        if let DockerError::DockerResponseServerError { message, .. } = &e {
            // The daemon said no (a log driver that cannot be read, container gone).
            out.finish(&sink);
            err.finish(&sink);
            sink.system(&format!(
                "[hoist: the container's output cannot be read: {message}]"
            ));
            return;
        }
        if got_any {
            failures = 0;
        }
        failures += 1;
        if failures > MAX_RETRIES {
            out.finish(&sink);
            err.finish(&sink);
            sink.system(&format!("[hoist: lost the container's output stream: {e}]"));
            return;
        }
        tracing::debug!(message = "Container log stream broke; resuming.", container = %id, error = %e);
        tokio::time::sleep(Duration::from_millis(500).saturating_mul(failures.min(10))).await;
    }
    out.finish(&sink);
    err.finish(&sink);
}

async fn still_running(docker: &Docker, id: &str) -> bool {
    match docker.inspect_container(id, None).await {
        Ok(c) => c
            .state
            .is_some_and(|s| s.running.unwrap_or(false) || s.restarting.unwrap_or(false)),
        Err(_) => false,
    }
}

/// `2024-05-01T12:00:00.123456789Z text` → the time and the text.
pub(crate) fn split_timestamp(frame: &[u8]) -> (Option<DateTime<Utc>>, &[u8]) {
    let Some(sp) = frame.iter().take(40).position(|b| *b == b' ') else {
        // A bare timestamp: an empty message.
        return match std::str::from_utf8(frame).ok().and_then(parse_ts) {
            Some(t) => (Some(t), &frame[frame.len()..]),
            None => (None, frame),
        };
    };
    match std::str::from_utf8(&frame[..sp]).ok().and_then(parse_ts) {
        Some(t) => (Some(t), &frame[sp + 1..]),
        None => (None, frame),
    }
}

fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// One stream's unfinished line.
pub(crate) struct Lines {
    stream: LogStream,
    pending: Vec<u8>,
    /// When the unfinished line started.
    started: Option<DateTime<Utc>>,
    /// The last byte seen was a `\r` that ended a line (so a `\n` right after it
    /// completes a `\r\n` rather than an empty line).
    after_cr: bool,
}

impl Lines {
    pub(crate) fn new(stream: LogStream) -> Lines {
        Lines {
            stream,
            pending: Vec::new(),
            started: None,
            after_cr: false,
        }
    }

    pub(crate) fn feed(&mut self, mut text: &[u8], ts: DateTime<Utc>, sink: &LogSink) {
        while !text.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if text[0] == b'\n' {
                    text = &text[1..];
                    continue;
                }
            }
            match text.iter().position(|b| *b == b'\n' || *b == b'\r') {
                Some(i) => {
                    self.append(&text[..i], ts, sink);
                    let cr = text[i] == b'\r';
                    // A lone `\r` with nothing before it (`\r\r`, a bar redrawn over
                    // an empty line) is not a line.
                    if !(cr && self.pending.is_empty() && self.started.is_none()) {
                        self.emit(ts, sink);
                    }
                    self.after_cr = cr;
                    text = &text[i + 1..];
                }
                None => {
                    self.append(text, ts, sink);
                    text = &[];
                }
            }
        }
    }

    fn append(&mut self, bytes: &[u8], ts: DateTime<Utc>, sink: &LogSink) {
        if self.started.is_none() && !bytes.is_empty() {
            self.started = Some(ts);
        }
        self.pending.extend_from_slice(bytes);
        // Bounded: a line that never ends goes out in pieces.
        while self.pending.len() >= MAX_LINE_BYTES {
            let mut cut = MAX_LINE_BYTES;
            if let Err(e) = std::str::from_utf8(&self.pending[..cut])
                && e.error_len().is_none()
                && e.valid_up_to() > 0
            {
                // Do not split a character.
                cut = e.valid_up_to();
            }
            let rest = self.pending.split_off(cut);
            let piece = std::mem::replace(&mut self.pending, rest);
            sink.push_at(
                self.stream,
                &String::from_utf8_lossy(&piece),
                self.started.unwrap_or(ts),
            );
            self.started = Some(ts);
        }
    }

    fn emit(&mut self, ts: DateTime<Utc>, sink: &LogSink) {
        let ts = self.started.take().unwrap_or(ts);
        let line = std::mem::take(&mut self.pending);
        sink.push_at(self.stream, &String::from_utf8_lossy(&line), ts);
    }

    /// The stream ended: a last line without a newline is still a line.
    pub(crate) fn finish(&mut self, sink: &LogSink) {
        if !self.pending.is_empty() {
            self.emit(Utc::now(), sink);
        }
        self.started = None;
        self.after_cr = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sink: &LogSink) -> Vec<String> {
        sink.snapshot().into_iter().map(|l| l.text).collect()
    }

    #[test]
    fn timestamps() {
        let (t, rest) = split_timestamp(b"2024-05-01T12:00:00.123456789Z hello\n");
        assert_eq!(t.unwrap().timestamp_subsec_nanos(), 123_456_789);
        assert_eq!(rest, b"hello\n");
        let (t, rest) = split_timestamp(b"no timestamp here");
        assert!(t.is_none());
        assert_eq!(rest, b"no timestamp here");
    }

    #[test]
    fn partial_lines_and_cr() {
        let sink = LogSink::new();
        let mut l = Lines::new(LogStream::Stdout);
        let ts = Utc::now();
        l.feed(b"hel", ts, &sink);
        l.feed(b"lo\nwor", ts, &sink);
        l.feed(b"ld\r\n\n", ts, &sink);
        l.feed(b"10%\r20%\r", ts, &sink);
        l.feed(b"\ndone", ts, &sink);
        l.finish(&sink);
        assert_eq!(texts(&sink), ["hello", "world", "", "10%", "20%", "done"]);
    }

    #[test]
    fn long_lines_bounded() {
        let sink = LogSink::new();
        let mut l = Lines::new(LogStream::Stdout);
        let chunk = "é".repeat(5000); // 10000 bytes
        for _ in 0..4 {
            l.feed(chunk.as_bytes(), Utc::now(), &sink);
        }
        assert!(l.pending.len() < MAX_LINE_BYTES);
        l.feed(b"\n", Utc::now(), &sink);
        let lines = sink.snapshot();
        assert_eq!(lines.iter().map(|x| x.text.len()).sum::<usize>(), 40_000);
        assert!(lines.iter().all(|x| !x.text.contains('\u{fffd}')));
    }
}
