//! Run logs in the database: the index of log segments (`log_chunks`), each run's log
//! length, size and quota flag (`runs.log_lines`, `log_bytes`, `log_capped`), lines
//! stored before segments existed (`run_logs`, read only), and retention.
//!
//! The lines themselves live in segments in the blob store; [`crate::logs`] writes
//! and reads them and calls these queries.

use futures::TryStreamExt;
use hoist_core::api::{LogStream, StoredLogLine};
use sqlx::Row;

use super::rows::corrupt;
use super::{Store, StoreError};
use crate::clock::to_datetime;

/// Rows per INSERT statement of chunks.
const CHUNK_INSERT: usize = 100;

pub fn stream_str(s: LogStream) -> &'static str {
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

/// Consecutive lines of a run's log, stored at `seg_offset..seg_offset + bytes` of a
/// segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    pub first_line: u64,
    pub lines: u64,
    pub seg_key: String,
    pub seg_offset: u64,
    pub bytes: u64,
}

impl LogChunk {
    /// The line after this chunk's last.
    pub fn end_line(&self) -> u64 {
        self.first_line + self.lines
    }
}

/// A run's log as the next append sees it.
#[derive(Debug, Clone)]
pub struct LogHead {
    /// Lines in the log.
    pub lines: u64,
    /// Bytes stored in segments (what the quota counts).
    pub bytes: u64,
    /// The quota was reached; later lines are dropped.
    pub capped: bool,
    /// The chunk holding the last lines.
    pub last: Option<LogChunk>,
}

/// What one append changes, committed only if the log still has `old_lines` lines.
#[derive(Debug, Clone)]
pub struct LogCommit {
    pub run_id: String,
    pub old_lines: u64,
    pub new_lines: u64,
    pub added_bytes: u64,
    pub capped: bool,
    /// The last chunk grows: (its first line, lines added, bytes added).
    pub extend: Option<(u64, u64, u64)>,
    pub new_chunks: Vec<LogChunk>,
}

fn chunk_row(r: &sqlx::any::AnyRow) -> Result<LogChunk, StoreError> {
    Ok(LogChunk {
        first_line: r.try_get::<i64, _>("first_line")? as u64,
        lines: r.try_get::<i64, _>("lines")? as u64,
        seg_key: r.try_get("seg_key")?,
        seg_offset: r.try_get::<i64, _>("seg_offset")? as u64,
        bytes: r.try_get::<i64, _>("bytes")? as u64,
    })
}

const CHUNK_COLS: &str = "first_line, lines, seg_key, seg_offset, bytes";

impl Store {
    /// The run's log length, size, quota flag and last chunk; `None`: no such run.
    pub async fn log_head(&self, run_id: &str) -> Result<Option<LogHead>, StoreError> {
        let Some(r) =
            sqlx::query("SELECT log_lines, log_bytes, log_capped FROM runs WHERE id = $1")
                .bind(run_id)
                .fetch_optional(self.reader())
                .await?
        else {
            return Ok(None);
        };
        let last = sqlx::query(dynsql!(
            "SELECT {CHUNK_COLS} FROM log_chunks WHERE run_id = $1 ORDER BY first_line DESC LIMIT 1"
        ))
        .bind(run_id)
        .fetch_optional(self.reader())
        .await?
        .map(|r| chunk_row(&r))
        .transpose()?;
        Ok(Some(LogHead {
            lines: r.try_get::<i64, _>("log_lines")? as u64,
            bytes: r.try_get::<i64, _>("log_bytes")? as u64,
            capped: r.try_get::<i64, _>("log_capped")? != 0,
            last,
        }))
    }

    /// Records an append whose lines are already durable in their segment. Returns
    /// false, changing nothing, when the log no longer has `old_lines` lines (another
    /// writer appended first: the caller reads the head again and retries).
    pub async fn commit_log_append(&self, c: LogCommit) -> Result<bool, StoreError> {
        self.write(move |conn| {
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE runs SET log_lines = $1, log_bytes = log_bytes + $2, log_capped = $3 \
                     WHERE id = $4 AND log_lines = $5",
                )
                .bind(c.new_lines as i64)
                .bind(c.added_bytes as i64)
                .bind(i64::from(c.capped))
                .bind(&c.run_id)
                .bind(c.old_lines as i64)
                .execute(&mut *conn)
                .await?
                .rows_affected();
                if n == 0 {
                    return Ok(false);
                }
                if let Some((first, lines, bytes)) = c.extend {
                    sqlx::query(
                        "UPDATE log_chunks SET lines = lines + $1, bytes = bytes + $2 \
                         WHERE run_id = $3 AND first_line = $4",
                    )
                    .bind(lines as i64)
                    .bind(bytes as i64)
                    .bind(&c.run_id)
                    .bind(first as i64)
                    .execute(&mut *conn)
                    .await?;
                }
                for group in c.new_chunks.chunks(CHUNK_INSERT) {
                    let mut sql = String::from(
                        "INSERT INTO log_chunks (run_id, first_line, lines, seg_key, seg_offset, bytes) VALUES ",
                    );
                    for i in 0..group.len() {
                        let b = i * 6;
                        if i > 0 {
                            sql.push_str(", ");
                        }
                        sql += &format!(
                            "(${}, ${}, ${}, ${}, ${}, ${})",
                            b + 1,
                            b + 2,
                            b + 3,
                            b + 4,
                            b + 5,
                            b + 6
                        );
                    }
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(&sql[..]));
                    for ch in group {
                        q = q
                            .bind(&c.run_id)
                            .bind(ch.first_line as i64)
                            .bind(ch.lines as i64)
                            .bind(&ch.seg_key)
                            .bind(ch.seg_offset as i64)
                            .bind(ch.bytes as i64);
                    }
                    q.execute(&mut *conn).await?;
                }
                Ok(true)
            })
        })
        .await
    }

    /// The chunk holding line `offset` (or the last one before it), if any, then up to
    /// `max` chunks after it, in order.
    pub async fn log_chunks_from(
        &self,
        run_id: &str,
        offset: u64,
        max: u64,
    ) -> Result<Vec<LogChunk>, StoreError> {
        let mut out = Vec::new();
        if let Some(r) = sqlx::query(dynsql!(
            "SELECT {CHUNK_COLS} FROM log_chunks WHERE run_id = $1 AND first_line <= $2 \
             ORDER BY first_line DESC LIMIT 1"
        ))
        .bind(run_id)
        .bind(offset as i64)
        .fetch_optional(self.reader())
        .await?
        {
            out.push(chunk_row(&r)?);
        }
        let rows = sqlx::query(dynsql!(
            "SELECT {CHUNK_COLS} FROM log_chunks WHERE run_id = $1 AND first_line > $2 \
             ORDER BY first_line LIMIT $3"
        ))
        .bind(run_id)
        .bind(offset as i64)
        .bind(max as i64)
        .fetch_all(self.reader())
        .await?;
        for r in &rows {
            out.push(chunk_row(r)?);
        }
        Ok(out)
    }

    /// Lines stored in `run_logs` (before segments existed) from `offset` to before
    /// `end`: at most `limit`, and no more once `max_bytes` of text were read (at least
    /// one line). Rows are streamed, not loaded at once.
    pub async fn legacy_log_lines(
        &self,
        run_id: &str,
        offset: u64,
        end: u64,
        limit: u64,
        max_bytes: usize,
    ) -> Result<Vec<StoredLogLine>, StoreError> {
        let mut rows = sqlx::query(
            "SELECT line_no, ts, stream, text FROM run_logs \
             WHERE run_id = $1 AND line_no >= $2 AND line_no < $3 ORDER BY line_no LIMIT $4",
        )
        .bind(run_id)
        .bind(offset as i64)
        .bind(end.min(i64::MAX as u64) as i64)
        .bind(limit.min(i64::MAX as u64) as i64)
        .fetch(self.reader());
        let mut out = Vec::new();
        let mut bytes = 0;
        while let Some(r) = rows.try_next().await? {
            let stream: String = r.try_get("stream")?;
            let line = StoredLogLine {
                offset: r.try_get::<i64, _>("line_no")? as u64,
                ts: to_datetime(r.try_get("ts")?),
                stream: parse_stream(&stream)?,
                text: r.try_get("text")?,
            };
            bytes += line.text.len();
            out.push(line);
            if bytes >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// Number of lines in a run's log, and whether its quota was reached.
    pub async fn log_len(&self, run_id: &str) -> Result<Option<(u64, bool)>, StoreError> {
        let r = sqlx::query("SELECT log_lines, log_capped FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(self.reader())
            .await?;
        r.map(|r| {
            Ok((
                r.try_get::<i64, _>("log_lines")? as u64,
                r.try_get::<i64, _>("log_capped")? != 0,
            ))
        })
        .transpose()
    }

    /// Runs that ended before `cutoff_ms` and still have a log, oldest first.
    pub async fn runs_with_expired_logs(
        &self,
        cutoff_ms: i64,
        max: u64,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM runs WHERE log_lines > 0 AND ended_at < $1 ORDER BY ended_at LIMIT $2",
        )
        .bind(cutoff_ms)
        .bind(max as i64)
        .fetch_all(self.reader())
        .await?)
    }

    /// Forgets a run's log, first step of its deletion: its index rows, the lines
    /// stored before segments and its length go, and the run is recorded in
    /// `log_deletions` until its segment files are gone too
    /// ([`Store::log_deletion_done`]). From this commit on, readers see an empty log.
    pub async fn forget_log(&self, run_id: &str, now: i64) -> Result<(), StoreError> {
        let run_id = run_id.to_string();
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query("DELETE FROM log_chunks WHERE run_id = $1")
                    .bind(&run_id)
                    .execute(&mut *c)
                    .await?;
                sqlx::query("DELETE FROM run_logs WHERE run_id = $1")
                    .bind(&run_id)
                    .execute(&mut *c)
                    .await?;
                sqlx::query(
                    "UPDATE runs SET log_lines = 0, log_bytes = 0, log_capped = 0 WHERE id = $1",
                )
                .bind(&run_id)
                .execute(&mut *c)
                .await?;
                sqlx::query(
                    "INSERT INTO log_deletions (run_id, at) VALUES ($1, $2) ON CONFLICT (run_id) DO NOTHING",
                )
                .bind(&run_id)
                .bind(now)
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        })
        .await
    }

    /// Runs whose log was forgotten but whose segment files may remain (a sweep that
    /// stopped half-way).
    pub async fn pending_log_deletions(&self, max: u64) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT run_id FROM log_deletions ORDER BY at LIMIT $1")
                .bind(max as i64)
                .fetch_all(self.reader())
                .await?,
        )
    }

    /// The run's segment files are gone: its deletion is complete.
    pub async fn log_deletion_done(&self, run_id: &str) -> Result<(), StoreError> {
        let run_id = run_id.to_string();
        self.write(move |c| {
            Box::pin(async move {
                sqlx::query("DELETE FROM log_deletions WHERE run_id = $1")
                    .bind(&run_id)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        })
        .await
    }
}
