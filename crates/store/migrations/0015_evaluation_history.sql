-- The figures of an experiment's primary metric at each evaluation that found them changed
-- (`RollupStore::record_evaluation`; the point as JSON in `doc`): each arm's estimate, its
-- interval and P(best) over time. `seq` is the order of recording; `at` the evaluation's
-- time (unix ms), by which retention deletes them as it deletes buckets. A deleted
-- experiment's points are purged with the rest of its data.
CREATE TABLE evaluation_history (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    experiment_id TEXT NOT NULL,
    at            INTEGER NOT NULL,
    doc           TEXT NOT NULL
);
CREATE INDEX evaluation_history_by_experiment ON evaluation_history (experiment_id, seq);
CREATE INDEX evaluation_history_by_time ON evaluation_history (at);
