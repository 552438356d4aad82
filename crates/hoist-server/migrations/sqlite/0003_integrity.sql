-- Integrity (issue 8). SQLite dialect; keep in step with ../postgres/0003_integrity.sql.
--
-- 1. `runs.state` holds only the states hoist knows (RunState::ALL; a test compares
--    this list with it). SQLite adds a CHECK only by rebuilding the table: the rows,
--    the sequence, the indexes and the transition triggers are kept. The rebuild also
--    drops `lapses` (the re-queue bound now counts `attempts`).
-- 2. Run tokens are revoked when their run ends or goes back to its queue.
-- 3. Agent sessions are kept, so that a superseded session, one the server ended and
--    one that never existed get different answers; an agent remembers the API key it
--    registered with (revoking that key ends its session).
-- 4. Users are deleted softly: their name stays reserved and their history readable.

CREATE TABLE runs_new (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    queue_id         TEXT NOT NULL,
    entity           TEXT NOT NULL,
    queue_name       TEXT NOT NULL,
    project          TEXT NOT NULL,
    name             TEXT NOT NULL,
    spec             TEXT NOT NULL,
    resource         TEXT NOT NULL,
    resource_config  TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    eff_prio         INTEGER NOT NULL,
    state            TEXT NOT NULL CONSTRAINT runs_state_check CHECK (state IN ('queued', 'claimed', 'building', 'starting', 'running', 'stopping', 'unknown', 'finished', 'failed', 'stopped', 'cancelled')),
    state_reason     TEXT NOT NULL,
    state_actor      TEXT NOT NULL,
    stop_requested   INTEGER NOT NULL DEFAULT 0,
    stop_pending     INTEGER NOT NULL DEFAULT 0,
    created_by       TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    started_at       INTEGER,
    ended_at         INTEGER,
    agent_id         TEXT,
    agent_name       TEXT,
    lease_expires_at INTEGER,
    unknown_since    INTEGER,
    attempts         INTEGER NOT NULL DEFAULT 0,
    exit_code        INTEGER,
    failure          TEXT,
    log_lines        INTEGER NOT NULL DEFAULT 0
);
INSERT INTO runs_new (seq, id, queue_id, entity, queue_name, project, name, spec, resource,
    resource_config, priority, eff_prio, state, state_reason, state_actor, stop_requested,
    stop_pending, created_by, created_at, updated_at, started_at, ended_at, agent_id,
    agent_name, lease_expires_at, unknown_since, attempts, exit_code, failure, log_lines)
SELECT seq, id, queue_id, entity, queue_name, project, name, spec, resource,
    resource_config, priority, eff_prio, state, state_reason, state_actor, stop_requested,
    stop_pending, created_by, created_at, updated_at, started_at, ended_at, agent_id,
    agent_name, lease_expires_at, unknown_since, attempts, exit_code, failure, log_lines
FROM runs;
DROP TABLE runs;
ALTER TABLE runs_new RENAME TO runs;

CREATE INDEX runs_queued ON runs(queue_id, eff_prio, seq) WHERE state = 'queued';
CREATE INDEX runs_claimed_lease ON runs(lease_expires_at) WHERE state = 'claimed';
CREATE INDEX runs_unknown ON runs(unknown_since) WHERE state = 'unknown';
CREATE INDEX runs_agent ON runs(agent_id) WHERE agent_id IS NOT NULL;
CREATE INDEX runs_stop_pending ON runs(agent_id) WHERE stop_pending = 1;
CREATE INDEX runs_queue_seq ON runs(queue_id, seq);
CREATE INDEX runs_entity_seq ON runs(entity, seq);
CREATE INDEX runs_state_seq ON runs(state, seq);

CREATE TRIGGER runs_transition_insert AFTER INSERT ON runs BEGIN
    INSERT INTO run_transitions (run_id, from_state, to_state, at, actor, reason)
    VALUES (NEW.id, NULL, NEW.state, NEW.updated_at, NEW.state_actor, NEW.state_reason);
END;

CREATE TRIGGER runs_transition_update AFTER UPDATE OF state ON runs
WHEN OLD.state <> NEW.state BEGIN
    INSERT INTO run_transitions (run_id, from_state, to_state, at, actor, reason)
    VALUES (NEW.id, OLD.state, NEW.state, NEW.updated_at, NEW.state_actor, NEW.state_reason);
END;

ALTER TABLE run_tokens ADD COLUMN revoked_at INTEGER;

ALTER TABLE agents ADD COLUMN key_id TEXT;
CREATE INDEX agents_key ON agents(key_id);

CREATE TABLE agent_sessions (
    session     TEXT PRIMARY KEY,
    agent_id    TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    ended_at    INTEGER,
    -- 'superseded' (a newer registration) or 'access' (the owner lost access).
    end_code    TEXT CHECK (end_code IN ('superseded', 'access')),
    end_reason  TEXT
);
CREATE INDEX agent_sessions_agent ON agent_sessions(agent_id);
INSERT INTO agent_sessions (session, agent_id, started_at)
SELECT session, id, started_at FROM agents;

ALTER TABLE users ADD COLUMN deleted_at INTEGER;
