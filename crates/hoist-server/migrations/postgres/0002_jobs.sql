-- Jobs (versioned definitions of what to run) and the blob store's index (code
-- artifacts). PostgreSQL dialect; keep in step with ../sqlite/0002_jobs.sql.

CREATE TABLE jobs (
    id           TEXT PRIMARY KEY,
    entity       TEXT NOT NULL REFERENCES entities(name) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    description  TEXT NOT NULL,
    -- The newest version number (`latest`).
    latest       BIGINT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    UNIQUE (entity, name)
);

CREATE TABLE job_versions (
    job_id      TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    -- 0, 1, 2, … (shown as v0, v1, …).
    version     BIGINT NOT NULL,
    -- The JobSource as JSON.
    source      TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (job_id, version)
);

-- Stored blobs, by content digest; the bytes live in the blob directory.
CREATE TABLE blobs (
    digest      TEXT PRIMARY KEY,
    size        BIGINT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Which entities a blob was uploaded for (or handed to): only users who can use one
-- of them may see it. A deleted team takes its jobs and its references with it.
CREATE TABLE blob_refs (
    digest      TEXT NOT NULL REFERENCES blobs(digest),
    entity      TEXT NOT NULL REFERENCES entities(name) ON DELETE CASCADE,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (digest, entity)
);
