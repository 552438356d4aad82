-- hoist store, PostgreSQL dialect. Keep in step with ../sqlite/0001_init.sql:
-- the same tables, columns and indexes; only types and autoincrement differ.
-- Times are milliseconds since the Unix epoch; booleans are 0/1; JSON is TEXT.

CREATE TABLE entities (
    name        TEXT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('user', 'team')),
    created_at  BIGINT NOT NULL
);

CREATE TABLE users (
    name        TEXT PRIMARY KEY REFERENCES entities(name),
    admin       BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL
);

CREATE TABLE team_members (
    team        TEXT NOT NULL REFERENCES entities(name),
    user_name   TEXT NOT NULL REFERENCES users(name),
    added_at    BIGINT NOT NULL,
    PRIMARY KEY (team, user_name)
);
CREATE INDEX team_members_user ON team_members(user_name);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    user_name     TEXT NOT NULL REFERENCES users(name),
    name          TEXT NOT NULL,
    secret_hash   TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT,
    revoked_at    BIGINT
);
CREATE INDEX api_keys_user ON api_keys(user_name);

CREATE TABLE queues (
    id              TEXT PRIMARY KEY,
    entity          TEXT NOT NULL REFERENCES entities(name),
    name            TEXT NOT NULL,
    resource        TEXT NOT NULL,
    config          TEXT NOT NULL,
    template_vars   TEXT NOT NULL,
    prioritize      BIGINT NOT NULL,
    description     TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    UNIQUE (entity, name)
);

CREATE TABLE runs (
    seq              BIGSERIAL PRIMARY KEY,
    id               TEXT NOT NULL UNIQUE,
    queue_id         TEXT NOT NULL,
    entity           TEXT NOT NULL,
    queue_name       TEXT NOT NULL,
    project          TEXT NOT NULL,
    name             TEXT NOT NULL,
    spec             TEXT NOT NULL,
    resource         TEXT NOT NULL,
    resource_config  TEXT NOT NULL,
    priority         BIGINT NOT NULL,
    eff_prio         BIGINT NOT NULL,
    state            TEXT NOT NULL,
    state_reason     TEXT NOT NULL,
    state_actor      TEXT NOT NULL,
    stop_requested   BIGINT NOT NULL DEFAULT 0,
    stop_pending     BIGINT NOT NULL DEFAULT 0,
    created_by       TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    started_at       BIGINT,
    ended_at         BIGINT,
    agent_id         TEXT,
    agent_name       TEXT,
    lease_expires_at BIGINT,
    unknown_since    BIGINT,
    attempts         BIGINT NOT NULL DEFAULT 0,
    lapses           BIGINT NOT NULL DEFAULT 0,
    exit_code        BIGINT,
    failure          TEXT,
    log_lines        BIGINT NOT NULL DEFAULT 0
);
-- The claim index: only queued runs, in serving order. Its size is the queue depth,
-- and finding the head of a queue is one index seek whatever the depth.
CREATE INDEX runs_queued ON runs(queue_id, eff_prio, seq) WHERE state = 'queued';
CREATE INDEX runs_claimed_lease ON runs(lease_expires_at) WHERE state = 'claimed';
CREATE INDEX runs_unknown ON runs(unknown_since) WHERE state = 'unknown';
CREATE INDEX runs_agent ON runs(agent_id) WHERE agent_id IS NOT NULL;
CREATE INDEX runs_stop_pending ON runs(agent_id) WHERE stop_pending = 1;
CREATE INDEX runs_queue_seq ON runs(queue_id, seq);
CREATE INDEX runs_entity_seq ON runs(entity, seq);
CREATE INDEX runs_state_seq ON runs(state, seq);

CREATE TABLE run_transitions (
    seq         BIGSERIAL PRIMARY KEY,
    run_id      TEXT NOT NULL,
    from_state  TEXT,
    to_state    TEXT NOT NULL,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    reason      TEXT NOT NULL
);
CREATE INDEX run_transitions_run ON run_transitions(run_id, seq);

CREATE TABLE run_tokens (
    id           TEXT PRIMARY KEY,
    run_id       TEXT NOT NULL,
    secret_hash  TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX run_tokens_run ON run_tokens(run_id);

CREATE TABLE run_logs (
    run_id   TEXT NOT NULL,
    line_no  BIGINT NOT NULL,
    ts       BIGINT NOT NULL,
    stream   TEXT NOT NULL,
    text     TEXT NOT NULL,
    PRIMARY KEY (run_id, line_no)
);

CREATE TABLE agents (
    id                 TEXT PRIMARY KEY,
    owner              TEXT NOT NULL REFERENCES users(name),
    name               TEXT NOT NULL,
    host               TEXT NOT NULL,
    version            TEXT NOT NULL,
    queues             TEXT NOT NULL,
    max_jobs           BIGINT NOT NULL,
    status             TEXT NOT NULL,
    session            TEXT NOT NULL,
    started_at         BIGINT NOT NULL,
    last_heartbeat_at  BIGINT NOT NULL,
    UNIQUE (owner, name)
);

-- Every state change of a run is recorded by the database itself, from the row's
-- new values: no code path can change a state without leaving a transition.
CREATE FUNCTION hoist_run_transition() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO run_transitions (run_id, from_state, to_state, at, actor, reason)
        VALUES (NEW.id, NULL, NEW.state, NEW.updated_at, NEW.state_actor, NEW.state_reason);
    ELSIF NEW.state IS DISTINCT FROM OLD.state THEN
        INSERT INTO run_transitions (run_id, from_state, to_state, at, actor, reason)
        VALUES (NEW.id, OLD.state, NEW.state, NEW.updated_at, NEW.state_actor, NEW.state_reason);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER runs_transition AFTER INSERT OR UPDATE OF state ON runs
FOR EACH ROW EXECUTE FUNCTION hoist_run_transition();
