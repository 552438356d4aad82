-- Web UI sessions: one row per signed-in browser. The cookie holds `hs_<id>_<secret>`;
-- only the secret's SHA-256 is stored. A session acts with the API key it was opened
-- with (`key_id`): revoking the key, or deleting its user, ends the session too.
-- `expires_at` is absolute (sign-in + the session lifetime); sign-out deletes the row.
CREATE TABLE web_sessions (
    id          TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    key_id      TEXT NOT NULL REFERENCES api_keys(id) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX web_sessions_expires ON web_sessions(expires_at);
