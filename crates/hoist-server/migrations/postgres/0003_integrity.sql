-- Integrity (issue 8). PostgreSQL dialect; keep in step with ../sqlite/0003_integrity.sql.
--
-- 1. `runs.state` holds only the states hoist knows (RunState::ALL; a test compares
--    this list with it). `lapses` goes (the re-queue bound now counts `attempts`).
-- 2. Run tokens are revoked when their run ends or goes back to its queue.
-- 3. Agent sessions are kept, so that a superseded session, one the server ended and
--    one that never existed get different answers; an agent remembers the API key it
--    registered with (revoking that key ends its session).
-- 4. Users are deleted softly: their name stays reserved and their history readable.

ALTER TABLE runs ADD CONSTRAINT runs_state_check CHECK (state IN ('queued', 'claimed', 'building', 'starting', 'running', 'stopping', 'unknown', 'finished', 'failed', 'stopped', 'cancelled'));
ALTER TABLE runs DROP COLUMN lapses;

ALTER TABLE run_tokens ADD COLUMN revoked_at BIGINT;

ALTER TABLE agents ADD COLUMN key_id TEXT;
CREATE INDEX agents_key ON agents(key_id);

CREATE TABLE agent_sessions (
    session     TEXT PRIMARY KEY,
    agent_id    TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    ended_at    BIGINT,
    -- 'superseded' (a newer registration) or 'access' (the owner lost access).
    end_code    TEXT CHECK (end_code IN ('superseded', 'access')),
    end_reason  TEXT
);
CREATE INDEX agent_sessions_agent ON agent_sessions(agent_id);
INSERT INTO agent_sessions (session, agent_id, started_at)
SELECT session, id, started_at FROM agents;

ALTER TABLE users ADD COLUMN deleted_at BIGINT;
