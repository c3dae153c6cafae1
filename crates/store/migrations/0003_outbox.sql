-- Webhook outbox: written in the transaction of the change that caused each message.
CREATE TABLE outbox (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    experiment_id TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    doc           TEXT NOT NULL
);
