//! Log capture and shipping.
//!
//! Runners push lines into a [`LogSink`]; a shipper task per run sends them to the
//! server in batches as they come (the first line of a quiet period goes at once, the
//! rest accumulate while a request is in flight). Memory is bounded: the sink holds at
//! most [`MAX_BUFFERED_BYTES`]; beyond that, lines are dropped and a note saying how
//! many is inserted once room frees up. Lines longer than [`MAX_LINE_BYTES`] are split.
//!
//! The last [`TAIL_LINES`] lines are kept for failure reports.
//!
//! When the server answers that the run's log reached its quota, the shipper stops
//! sending for that run: what is buffered and everything pushed later is dropped (the
//! tail is still kept).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use hoist_client::Client;
use hoist_core::api::{LogBatch, LogLine, LogStream};
use tokio::sync::Notify;

/// Log filter directives every process that runs agent code applies on top of the
/// filter it was given (`HOIST_LOG`, `--log-level`): the Docker client (bollard) logs
/// request bodies at debug level, and a container's create request holds its
/// environment (the run token, the run's env). Secrets never reach a log, whatever the
/// verbosity asked for.
pub const SECRET_SAFE_LOG_DIRECTIVES: &[&str] = &["bollard=info", "bollard::docker=info"];

pub const MAX_BUFFERED_BYTES: usize = 8 << 20;
pub const MAX_LINE_BYTES: usize = 16 * 1024;
pub const TAIL_LINES: usize = 30;
const MAX_BATCH_LINES: usize = 2000;
const MAX_BATCH_BYTES: usize = 1 << 20;

#[derive(Default)]
struct Buf {
    lines: VecDeque<LogLine>,
    bytes: usize,
    dropped: u64,
    closed: bool,
    /// The server keeps no more lines of this run (its log quota is reached).
    refused: bool,
    /// Lines taken by the shipper and not yet acknowledged by the server.
    in_flight: usize,
    tail: VecDeque<String>,
    /// Warnings not yet taken by the shipper.
    warnings: Vec<String>,
    /// Warnings pushed so far (bounded like the server's list).
    warned: usize,
}

/// The start of a line of a run whose output comes from several sources at once (the
/// containers of a Kubernetes run's pods): `[source] `. The server keeps a line's text
/// only, so this prefix is how a line read back says where it came from
/// ([`source_of`]): the run task resumes a re-adopted run's log per source
/// ([`crate::runners::LogResume::for_source`]). A source name is not empty and holds no
/// whitespace, `[` or `]` (a pod and container name, `pod/container`, never does).
/// A run with one source writes its lines as they are, and is never asked for sources.
pub fn source_prefix(source: &str) -> String {
    debug_assert!(is_source_name(source), "not a log source name: {source:?}");
    format!("[{source}] ")
}

/// The source of a line written with [`source_prefix`]: `Some("pod/main")` for
/// `[pod/main] text` (and for `[pod/main] `, an empty line); `None` for a line that does
/// not start with a source.
pub fn source_of(text: &str) -> Option<&str> {
    let rest = text.strip_prefix('[')?;
    let (name, after) = rest.split_once(']')?;
    (is_source_name(name) && after.starts_with(' ')).then_some(name)
}

fn is_source_name(s: &str) -> bool {
    !s.is_empty() && !s.contains(|c: char| c.is_whitespace() || c == '[' || c == ']')
}

/// Where a run's output goes. Cheap to clone; never blocks the writer.
#[derive(Clone, Default)]
pub struct LogSink {
    buf: Arc<Mutex<Buf>>,
    ready: Arc<Notify>,
    drained: Arc<Notify>,
}

impl LogSink {
    pub fn new() -> LogSink {
        LogSink::default()
    }

    /// Adds one line (without its newline). Long lines are split.
    pub fn push(&self, stream: LogStream, text: &str) {
        let ts = Utc::now();
        self.push_at(stream, text, ts);
    }

    /// Adds a line with its original timestamp (re-adopted containers).
    pub fn push_at(&self, stream: LogStream, text: &str, ts: chrono::DateTime<Utc>) {
        let mut b = self.buf.lock().expect("log buffer");
        let mut rest = text;
        loop {
            let mut cut = rest.len().min(MAX_LINE_BYTES);
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            let (piece, more) = rest.split_at(cut);
            if b.refused {
                // Not shipped; only the tail below keeps it.
            } else if b.bytes + piece.len() > MAX_BUFFERED_BYTES {
                b.dropped += 1;
            } else {
                if b.dropped > 0 {
                    let note = format!(
                        "[hoist: {} line(s) dropped: the job wrote faster than the logs could be shipped]",
                        b.dropped
                    );
                    b.dropped = 0;
                    b.bytes += note.len();
                    b.lines.push_back(LogLine {
                        ts,
                        stream: LogStream::System,
                        text: note,
                    });
                }
                b.bytes += piece.len();
                b.lines.push_back(LogLine {
                    ts,
                    stream,
                    text: piece.to_string(),
                });
            }
            if stream != LogStream::System || b.tail.len() < TAIL_LINES {
                if b.tail.len() == TAIL_LINES {
                    b.tail.pop_front();
                }
                b.tail.push_back(piece.to_string());
            }
            if more.is_empty() {
                break;
            }
            rest = more;
        }
        drop(b);
        self.ready.notify_one();
    }

    /// A line from hoist itself.
    pub fn system(&self, text: &str) {
        self.push(LogStream::System, text);
    }

    /// A warning about the run from hoist: a line of the log, and an entry of the run's
    /// warnings on the server (`hoist run show`). The same text twice is one entry;
    /// past [`hoist_core::api::MAX_RUN_WARNINGS`] they are log lines only.
    pub fn warn(&self, text: &str) {
        {
            let mut b = self.buf.lock().expect("log buffer");
            if b.warned < hoist_core::api::MAX_RUN_WARNINGS {
                b.warned += 1;
                b.warnings.push(text.to_string());
            }
        }
        self.system(&format!("[hoist: warning: {text}]"));
    }

    /// The last lines written (for failure reports).
    pub fn tail(&self) -> Vec<String> {
        self.buf
            .lock()
            .expect("log buffer")
            .tail
            .iter()
            .cloned()
            .collect()
    }

    /// The lines buffered and not yet taken by the shipper, without removing them
    /// (tests, diagnostics).
    pub fn snapshot(&self) -> Vec<LogLine> {
        self.buf
            .lock()
            .expect("log buffer")
            .lines
            .iter()
            .cloned()
            .collect()
    }

    /// No more lines will come; the shipper ends after sending what is buffered.
    pub fn close(&self) {
        self.buf.lock().expect("log buffer").closed = true;
        self.ready.notify_one();
    }

    fn take_batch(&self) -> (Vec<LogLine>, Vec<String>, bool) {
        let mut b = self.buf.lock().expect("log buffer");
        let warnings = std::mem::take(&mut b.warnings);
        let mut out = Vec::new();
        let mut bytes = 0;
        while let Some(l) = b.lines.front() {
            if out.len() >= MAX_BATCH_LINES || (bytes > 0 && bytes + l.text.len() > MAX_BATCH_BYTES)
            {
                break;
            }
            bytes += l.text.len();
            out.push(b.lines.pop_front().expect("front"));
        }
        b.bytes -= bytes;
        b.in_flight += out.len();
        let done = b.closed && b.lines.is_empty() && b.warnings.is_empty();
        (out, warnings, done)
    }

    /// Waits until everything pushed so far has been shipped (or the shipper gave up).
    pub async fn flushed(&self) {
        loop {
            let notified = self.drained.notified();
            {
                let b = self.buf.lock().expect("log buffer");
                if b.lines.is_empty() && b.in_flight == 0 {
                    return;
                }
            }
            notified.await;
        }
    }
}

/// Ships a sink's lines to the server until the sink is closed and empty. Transient
/// failures are retried with backoff (lines stay buffered, bounded); a refusal
/// (the run is gone) drops what is left.
pub async fn ship(sink: LogSink, client: Client, run_id: String, session: String) {
    let mut backoff = Duration::from_millis(100);
    let mut pending: Vec<LogLine> = Vec::new();
    let mut pending_warnings: Vec<String> = Vec::new();
    loop {
        let notified = sink.ready.notified();
        let done = if pending.is_empty() && pending_warnings.is_empty() {
            let (batch, warnings, done) = sink.take_batch();
            pending = batch;
            pending_warnings = warnings;
            done
        } else {
            false
        };
        if !pending.is_empty() || !pending_warnings.is_empty() {
            let batch = LogBatch {
                warnings: std::mem::take(&mut pending_warnings),
                session: Some(session.clone()),
                lines: std::mem::take(&mut pending),
            };
            match client.append_logs(&run_id, &batch).await {
                Ok(page) if page.quota_reached => {
                    tracing::info!(message = "The run's log reached the server's quota; no more lines are sent.", run = %run_id);
                    let mut b = sink.buf.lock().expect("log buffer");
                    b.refused = true;
                    b.lines.clear();
                    b.bytes = 0;
                    b.dropped = 0;
                }
                Ok(_) => backoff = Duration::from_millis(100),
                Err(e) if e.is_transient() => {
                    tracing::debug!(message = "Log shipping failed; retrying.", run = %run_id, error = %e);
                    pending = batch.lines;
                    pending_warnings = batch.warnings;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
                Err(e) => {
                    tracing::warn!(message = "Server refused the run's logs; dropping them.", run = %run_id, error = %e);
                    let mut b = sink.buf.lock().expect("log buffer");
                    b.lines.clear();
                    b.bytes = 0;
                }
            }
            sink.buf.lock().expect("log buffer").in_flight = 0;
            sink.drained.notify_waiters();
            continue;
        }
        sink.drained.notify_waiters();
        if done {
            return;
        }
        notified.await;
    }
}

/// Reads lines from a pipe into the sink until EOF, holding at most one
/// [`MAX_LINE_BYTES`] piece in memory (longer lines are cut into pieces).
pub async fn pump<R>(reader: R, stream: LogStream, sink: LogSink)
where
    R: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncBufReadExt;
    let mut r = tokio::io::BufReader::with_capacity(64 * 1024, reader);
    let mut line: Vec<u8> = Vec::with_capacity(256);
    loop {
        let buf = match r.fill_buf().await {
            Ok(b) => b,
            Err(e) => {
                sink.system(&format!(
                    "[hoist: reading the job's {stream:?} failed: {e}]"
                ));
                break;
            }
        };
        if buf.is_empty() {
            break;
        }
        let (used, found) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let take = if found { used - 1 } else { used };
        let room = MAX_LINE_BYTES.saturating_sub(line.len());
        let n = take.min(room);
        line.extend_from_slice(&buf[..n]);
        // Consume only what was copied when the line is full, so the rest starts the
        // next piece.
        let consumed = if n < take { n } else { used };
        r.consume(consumed);
        if found && consumed == used || line.len() >= MAX_LINE_BYTES {
            emit(&sink, stream, &mut line);
        }
    }
    if !line.is_empty() {
        emit(&sink, stream, &mut line);
    }
}

fn emit(sink: &LogSink, stream: LogStream, line: &mut Vec<u8>) {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    sink.push(stream, &String::from_utf8_lossy(line));
    line.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_split() {
        let s = LogSink::new();
        let long = "x".repeat(MAX_LINE_BYTES * 2 + 5);
        s.push(LogStream::Stdout, &long);
        let (b, _, _) = s.take_batch();
        assert_eq!(b.len(), 3);
        assert_eq!(b[2].text.len(), 5);
        // Fill beyond the budget: the overflow is counted, then noted.
        let line = "y".repeat(MAX_LINE_BYTES);
        for _ in 0..(MAX_BUFFERED_BYTES / MAX_LINE_BYTES + 10) {
            s.push(LogStream::Stdout, &line);
        }
        assert!(s.buf.lock().unwrap().bytes <= MAX_BUFFERED_BYTES);
        assert_eq!(s.buf.lock().unwrap().dropped, 10);
        while !s.take_batch().0.is_empty() {}
        s.push(LogStream::Stderr, "after");
        let (b, _, _) = s.take_batch();
        assert!(b[0].text.contains("10 line(s) dropped"), "{:?}", b[0]);
        assert_eq!(b[1].text, "after");
        assert_eq!(s.tail().last().unwrap(), "after");
    }

    #[test]
    fn lines_name_their_source() {
        let line = format!("{}text", source_prefix("pod-0/main"));
        assert_eq!(line, "[pod-0/main] text");
        assert_eq!(source_of(&line), Some("pod-0/main"));
        assert_eq!(
            source_of(&source_prefix("p/c")),
            Some("p/c"),
            "an empty line"
        );
        assert_eq!(source_of("[p/c] [INFO] x"), Some("p/c"));
        for no in [
            "text", "[] x", "[a b] x", "[p/c]x", "[p/c]", "[[p] x", " [p] x",
        ] {
            assert_eq!(source_of(no), None, "{no:?}");
        }
    }

    #[tokio::test]
    async fn pump_splits_lines_and_bounds_memory() {
        let s = LogSink::new();
        let mut data = b"one\r\ntwo\n".to_vec();
        data.extend(std::iter::repeat_n(b'z', MAX_LINE_BYTES + 10));
        data.extend(b"\nlast-no-newline");
        pump(&data[..], LogStream::Stdout, s.clone()).await;
        let (b, _, _) = s.take_batch();
        let texts: Vec<_> = b.iter().map(|l| l.text.len()).collect();
        assert_eq!(b[0].text, "one");
        assert_eq!(b[1].text, "two");
        assert_eq!(texts[2], MAX_LINE_BYTES);
        assert_eq!(texts[3], 10);
        assert_eq!(b[4].text, "last-no-newline");
    }
}
