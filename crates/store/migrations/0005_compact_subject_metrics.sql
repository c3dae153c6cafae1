-- Compact per-subject rollups (an incremental rollup's cost must follow the new events,
-- not the history). A rollup upserts the rows of the subjects it saw, at random
-- places in `subject_metrics`, so the pages it dirties (and writes at commit) grow with the
-- table; narrower rows mean fewer pages. Experiment ids and event names are stored once in
-- `rollup_names` and referenced by integers, and the variant is no longer copied into
-- every row (it is the subject's assignment, which never changes: reads join
-- `assignments`). The existing rows are converted, not rebuilt: raw events already
-- deleted by retention would be missing from a rebuild. The watermark is unchanged.
CREATE TABLE rollup_names (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE
);
INSERT OR IGNORE INTO rollup_names (name)
    SELECT experiment_id FROM subject_metrics UNION SELECT event FROM subject_metrics;
ALTER TABLE subject_metrics RENAME TO subject_metrics_text_keys;
CREATE TABLE subject_metrics (
    experiment    INTEGER NOT NULL,       -- rollup_names.id of the experiment id
    event         INTEGER NOT NULL,       -- rollup_names.id of the event name
    subject       TEXT NOT NULL,
    n             INTEGER NOT NULL,
    total         REAL NOT NULL,
    first_ts      INTEGER NOT NULL,
    PRIMARY KEY (experiment, event, subject)
) WITHOUT ROWID;
INSERT INTO subject_metrics (experiment, event, subject, n, total, first_ts)
    SELECT x.id, v.id, o.subject, o.n, o.total, o.first_ts
    FROM subject_metrics_text_keys o
    JOIN rollup_names x ON x.name = o.experiment_id
    JOIN rollup_names v ON v.name = o.event;
DROP TABLE subject_metrics_text_keys;
