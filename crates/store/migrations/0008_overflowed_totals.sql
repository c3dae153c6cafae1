-- Rollup totals that overflowed before event values were bounded (`ingest.max_abs_value`):
-- a bucket whose Σ or Σ² is infinite, a subject whose |total| is beyond √(f64::MAX), so that
-- its square, which results sum, is infinite. (A NaN cannot be stored: SQLite reads it as
-- NULL, which these NOT NULL columns refuse.) Partial indexes: they hold only such rows,
-- none normally, so finding the experiments to repair reads no healthy row, and a rollup
-- pays nothing for them. The queries repeat these conditions word for word, as SQLite uses
-- a partial index only for a query whose WHERE clause contains its own.
CREATE INDEX buckets_overflowed ON buckets (experiment_id)
    WHERE abs(sum) > 1.7976931348623157e308 OR sum_sq > 1.7976931348623157e308;
CREATE INDEX subject_metrics_overflowed ON subject_metrics (experiment)
    WHERE abs(total) > 1.3407807929942596e154;
