-- Warnings an agent reported about a run it holds without changing the run's state
-- (a pod that cannot be scheduled, an image still being pulled…): shown with the run
-- (`GET /api/v1/runs/{id}`, `hoist run show`). At most a bounded number per run.
CREATE TABLE run_warnings (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id  TEXT NOT NULL,
    at      INTEGER NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX run_warnings_run ON run_warnings(run_id, seq);
