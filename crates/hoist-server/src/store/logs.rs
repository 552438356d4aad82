//! Run logs: numbered lines, appended in batches, read from an offset.

use hoist_core::api::{LogLine, LogStream, StoredLogLine};
use sqlx::Row;

use super::rows::corrupt;
use super::{Store, StoreError};
use crate::clock::to_datetime;

/// Longest line kept; longer lines are cut and marked.
pub const MAX_LINE_BYTES: usize = 16 * 1024;
/// Rows per INSERT statement.
const CHUNK: usize = 100;

fn stream_str(s: LogStream) -> &'static str {
    match s {
        LogStream::Stdout => "stdout",
        LogStream::Stderr => "stderr",
        LogStream::System => "system",
    }
}

fn parse_stream(s: &str) -> Result<LogStream, StoreError> {
    Ok(match s {
        "stdout" => LogStream::Stdout,
        "stderr" => LogStream::Stderr,
        "system" => LogStream::System,
        other => return Err(corrupt(format!("log stream {other:?}"))),
    })
}

fn clip(text: &str) -> String {
    if text.len() <= MAX_LINE_BYTES {
        return text.to_string();
    }
    let mut end = MAX_LINE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [line cut at {MAX_LINE_BYTES} bytes]", &text[..end])
}

impl Store {
    /// Appends lines to a run's log; returns the offset after the last one.
    pub async fn append_logs(&self, run_id: &str, lines: Vec<LogLine>) -> Result<u64, StoreError> {
        let run_id = run_id.to_string();
        self.write(move |c| {
            Box::pin(async move {
                let n = lines.len() as i64;
                let end: Option<i64> = sqlx::query_scalar(
                    "UPDATE runs SET log_lines = log_lines + $1 WHERE id = $2 RETURNING log_lines",
                )
                .bind(n)
                .bind(&run_id)
                .fetch_optional(&mut *c)
                .await?;
                let Some(end) = end else {
                    return Err(StoreError::NotFound(format!("no run with id {run_id:?}")));
                };
                let mut next = end - n;
                for chunk in lines.chunks(CHUNK) {
                    let mut sql = String::from(
                        "INSERT INTO run_logs (run_id, line_no, ts, stream, text) VALUES ",
                    );
                    for i in 0..chunk.len() {
                        let b = i * 5;
                        if i > 0 {
                            sql.push_str(", ");
                        }
                        sql += &format!(
                            "(${}, ${}, ${}, ${}, ${})",
                            b + 1,
                            b + 2,
                            b + 3,
                            b + 4,
                            b + 5
                        );
                    }
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(&sql[..]));
                    for l in chunk {
                        q = q
                            .bind(&run_id)
                            .bind(next)
                            .bind(l.ts.timestamp_millis())
                            .bind(stream_str(l.stream))
                            .bind(clip(&l.text));
                        next += 1;
                    }
                    q.execute(&mut *c).await?;
                }
                Ok(end as u64)
            })
        })
        .await
    }

    /// Up to `limit` lines from `offset`.
    pub async fn read_logs(
        &self,
        run_id: &str,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<StoredLogLine>, StoreError> {
        let rows = sqlx::query(
            "SELECT line_no, ts, stream, text FROM run_logs WHERE run_id = $1 AND line_no >= $2 ORDER BY line_no LIMIT $3",
        )
        .bind(run_id)
        .bind(offset as i64)
        .bind(limit as i64)
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|r| {
                let stream: String = r.try_get("stream")?;
                Ok(StoredLogLine {
                    offset: r.try_get::<i64, _>("line_no")? as u64,
                    ts: to_datetime(r.try_get("ts")?),
                    stream: parse_stream(&stream)?,
                    text: r.try_get("text")?,
                })
            })
            .collect()
    }

    /// Number of lines in a run's log.
    pub async fn log_len(&self, run_id: &str) -> Result<Option<u64>, StoreError> {
        let n: Option<i64> = sqlx::query_scalar("SELECT log_lines FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(self.reader())
            .await?;
        Ok(n.map(|n| n as u64))
    }
}
