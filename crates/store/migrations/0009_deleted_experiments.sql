-- Deleted experiments whose data is still being removed. A deletion removes the
-- experiment's row and inserts one here in the same transaction; the retention job then
-- deletes the experiment's events, rollups, assignments, QA overrides and evaluation state
-- in bounded batches, and finally this row. The experiment's audit log is kept.
CREATE TABLE deleted_experiments (
    id            TEXT PRIMARY KEY,
    deleted_at    INTEGER NOT NULL
);
