-- Results and evaluation of experiments with an attribution window or an exposure event
-- count raw events at query time, always of one experiment and one event name: this index
-- makes their cost follow the experiment's own events rather than the whole table (the
-- MongoDB adapter has the same index on `events`).
CREATE INDEX events_by_experiment ON events (experiment_id, event, ts);
