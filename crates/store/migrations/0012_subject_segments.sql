-- Breakdowns by an event-meta dimension: each subject's segment, the string value of the
-- dimension's key in the meta of its first event carrying it (ingestion order).
-- Written by the rollup step that folds that event (INSERT OR IGNORE: the first wins, as
-- steps fold increasing ranges), for experiments whose `breakdown.source` is `event`.
CREATE TABLE subject_segments (
    experiment    INTEGER NOT NULL,       -- rollup_names.id of the experiment id
    subject       TEXT NOT NULL,
    segment       TEXT NOT NULL,
    PRIMARY KEY (experiment, subject)
) WITHOUT ROWID;
