CREATE TABLE experiments (
    id            TEXT PRIMARY KEY,
    environment   TEXT NOT NULL,
    organization  TEXT NOT NULL,          -- '' for global experiments
    key           TEXT NOT NULL,
    status        TEXT NOT NULL,
    audience      TEXT NOT NULL,          -- '' when none
    version       INTEGER NOT NULL,
    doc           TEXT NOT NULL,          -- the whole Experiment as JSON
    UNIQUE (environment, organization, key)
);
CREATE INDEX experiments_list ON experiments (environment, status);
CREATE INDEX experiments_by_audience ON experiments (environment, audience, status);

CREATE TABLE assignments (
    experiment_id TEXT NOT NULL,
    subject       TEXT NOT NULL,
    variant       TEXT NOT NULL,
    assigned_at   INTEGER NOT NULL,        -- unix milliseconds
    PRIMARY KEY (experiment_id, subject)
) WITHOUT ROWID;

CREATE TABLE events (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,  -- ingestion order, never reused
    experiment_id TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    dedupe        INTEGER NOT NULL,       -- dedupe_key(experiment_id, event_id)
    subject       TEXT NOT NULL,
    variant       TEXT NOT NULL,
    event         TEXT NOT NULL,
    value         REAL NOT NULL,
    ts            INTEGER NOT NULL,
    received_at   INTEGER NOT NULL,
    meta          TEXT
);
-- Idempotency: a compact 64-bit key instead of a unique index on two long strings. The
-- index is ~5x smaller, so inserts of random client ids touch far fewer pages; a match on
-- the key is confirmed on the full (experiment_id, event_id), so a hash collision can
-- never drop an event.
CREATE INDEX events_dedupe ON events (dedupe);

CREATE TABLE audit (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    experiment_id TEXT NOT NULL,
    at            INTEGER NOT NULL,
    actor         TEXT NOT NULL,
    action        TEXT NOT NULL,
    details       TEXT NOT NULL
);
CREATE INDEX audit_by_experiment ON audit (experiment_id, id);

CREATE TABLE forced_variants (
    experiment_id TEXT NOT NULL,
    subject       TEXT NOT NULL,
    variant       TEXT NOT NULL,
    PRIMARY KEY (experiment_id, subject)
) WITHOUT ROWID;

-- Small administrative collections: a key and the record as JSON.
CREATE TABLE environments (key TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE audiences (
    environment TEXT NOT NULL,
    key         TEXT NOT NULL,
    doc         TEXT NOT NULL,
    UNIQUE (environment, key)
);
CREATE TABLE api_keys (id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, doc TEXT NOT NULL);
