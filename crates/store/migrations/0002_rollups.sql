-- Rollups (aggregator). Both tables only ever grow by adding the figures of events past
-- the watermark, in the transaction that advances the watermark.
CREATE TABLE buckets (
    experiment_id TEXT NOT NULL,
    event         TEXT NOT NULL,
    granularity   TEXT NOT NULL,          -- 'hour' | 'day'
    start         INTEGER NOT NULL,       -- unix ms, aligned to the granularity (UTC)
    variant       TEXT NOT NULL,
    count         INTEGER NOT NULL,
    sum           REAL NOT NULL,
    sum_sq        REAL NOT NULL,
    PRIMARY KEY (experiment_id, event, granularity, start, variant)
) WITHOUT ROWID;

-- Per (experiment, event, subject): the randomization unit's figures, so statistics count
-- subjects, not events.
CREATE TABLE subject_metrics (
    experiment_id TEXT NOT NULL,
    event         TEXT NOT NULL,
    subject       TEXT NOT NULL,
    variant       TEXT NOT NULL,
    n             INTEGER NOT NULL,
    total         REAL NOT NULL,
    first_ts      INTEGER NOT NULL,
    PRIMARY KEY (experiment_id, event, subject)
) WITHOUT ROWID;

CREATE TABLE rollup_state (name TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE evaluation_state (experiment_id TEXT PRIMARY KEY, state TEXT NOT NULL);
