-- Webhook delivery (crates/store/src/sqlite/webhooks.rs).
CREATE TABLE webhook_endpoints (
    id          TEXT PRIMARY KEY,
    environment TEXT NOT NULL,
    created_seq INTEGER NOT NULL,         -- creation order, for lists
    doc         TEXT NOT NULL             -- the whole Endpoint as JSON
);
CREATE INDEX webhook_endpoints_by_environment ON webhook_endpoints (environment, created_seq);

-- One row per (endpoint, outbox message). `seq` is the creation order: claims take the
-- oldest due first, so an endpoint receives its messages in the order they were created.
CREATE TABLE webhook_deliveries (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id      TEXT NOT NULL,
    message_id       TEXT NOT NULL,
    message          TEXT NOT NULL,       -- the OutboxMessage as JSON
    status           TEXT NOT NULL,       -- pending | delivered | failed
    attempts         INTEGER NOT NULL,    -- in the current round
    next_attempt_at  INTEGER,             -- unix ms; NULL unless pending
    lease_token      TEXT,
    lease_until      INTEGER NOT NULL DEFAULT 0,
    last_attempt_at  INTEGER,
    last_status_code INTEGER,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    UNIQUE (endpoint_id, message_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (endpoint_id, status, seq);

CREATE TABLE webhook_attempts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id     TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    attempt         INTEGER NOT NULL,
    at              INTEGER NOT NULL,
    status_code     INTEGER,
    latency_ms      INTEGER NOT NULL,
    response        TEXT,
    error           TEXT,
    result          TEXT NOT NULL,
    next_attempt_at INTEGER
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (endpoint_id, message_id, id);

-- The fan-out cursor: outbox rows up to this seq have their deliveries.
CREATE TABLE webhook_fanout (name TEXT PRIMARY KEY, seq INTEGER NOT NULL);
