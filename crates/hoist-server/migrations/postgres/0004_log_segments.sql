-- Run logs move out of the database: lines are appended to segment files in the blob
-- store (`<blob dir>/logs/<run id>/…`), and this table indexes them in chunks of
-- consecutive lines: which lines, which segment, where in it. Lines already in
-- `run_logs` stay there and stay readable; no new lines are written to it.
CREATE TABLE log_chunks (
    run_id     TEXT NOT NULL,
    first_line BIGINT NOT NULL,
    lines      BIGINT NOT NULL,
    seg_key    TEXT NOT NULL,
    seg_offset BIGINT NOT NULL,
    bytes      BIGINT NOT NULL,
    PRIMARY KEY (run_id, first_line)
);
-- Bytes stored for the run's log (for its quota), and whether the quota was reached.
ALTER TABLE runs ADD COLUMN log_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN log_capped BIGINT NOT NULL DEFAULT 0;
-- Retention: ended runs that still have a log, oldest first.
CREATE INDEX runs_log_retention ON runs(ended_at) WHERE log_lines > 0;
-- Retention deletes a run's log in two steps: its index rows go (in one transaction
-- that records the run here), then its segment files, then this row. Readers never see
-- index rows whose files are gone, and a crash between the steps leaves a row here
-- that the next sweep finishes.
CREATE TABLE log_deletions (
    run_id  TEXT PRIMARY KEY,
    at      BIGINT NOT NULL
);
