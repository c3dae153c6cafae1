-- Retention deletes raw events received before a cutoff, oldest first. Without this index
-- each run read the whole events table to learn that nothing was old enough yet (half a
-- second at 5 million events, on the writer, every run); with it the cost follows the
-- expired events alone. `received_at` only grows, so each insert appends to the index.
CREATE INDEX events_by_received ON events (received_at);
