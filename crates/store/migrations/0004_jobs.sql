-- Job leases (one row per job: the holder, its expiry, the fencing token, the last
-- scheduled tick granted) and run records.
CREATE TABLE leases (
    job           TEXT PRIMARY KEY,
    owner         TEXT NOT NULL,
    token         INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,       -- unix ms
    last_tick     INTEGER                 -- unix ms
);
CREATE TABLE job_runs (
    id            TEXT PRIMARY KEY,
    job           TEXT NOT NULL,
    started_at    INTEGER NOT NULL,       -- unix ms
    finished_at   INTEGER,                -- unix ms; NULL while running
    doc           TEXT NOT NULL
);
CREATE INDEX job_runs_by_job ON job_runs (job, started_at);
CREATE INDEX job_runs_by_start ON job_runs (started_at);
CREATE INDEX job_runs_by_finish ON job_runs (finished_at);
