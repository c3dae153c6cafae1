-- The crossing state of each experiment's metric thresholds (verdict_domain::ThresholdState
-- as JSON in `doc`), replaced with a compare-and-set on `announced` in the transaction that
-- writes the outbox messages announcing its new crossings.
CREATE TABLE threshold_states (
    experiment_id TEXT PRIMARY KEY,
    announced     INTEGER NOT NULL,
    doc           TEXT NOT NULL
);
