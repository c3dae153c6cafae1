//! What the `verdict-bench` commands share: writing a marked section of `BENCHMARKS.md`,
//! and the fixtures of the store benchmarks (a running experiment, pre-assigned subjects,
//! a deterministic random stream, number formatting).
//!
//! # Layout
//! - `main.rs` (`verdict-bench`): HTTP paths against a bare axum baseline; its `scale`
//!   (`scale.rs`) and `soak` (`soak.rs`) commands drive a `verdict serve` the same way.
//! - `bin/ingest_mongo.rs` (`ingest_mongo`): `MongoStore::append_events` against the
//!   driver's raw `insert_many`.
//! - `bin/rollup.rs` (`rollup`): cold and incremental `Store::rollup` on SQLite and MongoDB.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use time::OffsetDateTime;
use time::macros::datetime;
use verdict_domain::assignment::{Bucket, bucket};
use verdict_domain::experiment::Provided;
use verdict_domain::{Assignment, Experiment, ExperimentInput, Scope, Status};
use verdict_store::{DynStore, StatusChange};

/// Replace what lies between `<!-- {name}:begin -->` and `<!-- {name}:end -->` in `old` with
/// `body` (which should end with a newline); append the section, markers included, when
/// they are absent.
pub fn replace_section(old: &str, name: &str, body: &str) -> String {
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if b < e => format!("{}{begin}\n{body}{}", &old[..b], &old[e..]),
        _ => format!("{old}\n{begin}\n{body}{end}\n"),
    }
}

/// [`replace_section`] applied to the file at `path` (created when missing).
pub fn write_section(path: &Path, name: &str, body: &str) -> anyhow::Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    std::fs::write(path, replace_section(&old, name, body))
        .with_context(|| format!("writing {}", path.display()))
}

/// A local webhook receiver that answers 200 to anything and counts: its base URL and the
/// count.
pub async fn counting_receiver() -> anyhow::Result<(String, Arc<std::sync::atomic::AtomicU64>)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let app = axum::Router::new().fallback(move || {
        let c = c.clone();
        async move {
            c.fetch_add(1, Ordering::Relaxed);
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}"), count))
}

/// The start of the benchmarks' simulated time.
pub const T0: OffsetDateTime = datetime!(2026-01-01 00:00:00 UTC);

/// Create a two-arm experiment (`control` / `treatment`, 50/50) and move it to `running`.
pub async fn running_experiment(
    store: &DynStore,
    id: &str,
    key: &str,
) -> anyhow::Result<Experiment> {
    running_experiment_with(store, id, key, json!({})).await
}

/// [`running_experiment`] with the fields of `extra` (an object) added to its definition.
pub async fn running_experiment_with(
    store: &DynStore,
    id: &str,
    key: &str,
    extra: serde_json::Value,
) -> anyhow::Result<Experiment> {
    let mut definition = json!({
        "key": key,
        "variants": [
            {"key": "control", "config": {"color": "blue"}},
            {"key": "treatment", "config": {"color": "green"}}
        ]
    });
    if let (Some(d), Some(extra)) = (definition.as_object_mut(), extra.as_object()) {
        d.extend(extra.clone());
    }
    let input: ExperimentInput = serde_json::from_value(definition)?;
    let experiment = input
        .into_experiment(
            Scope::default(),
            Provided {
                id: id.into(),
                salt: format!("salt-{id}"),
                now: T0,
            },
        )
        .map_err(|p| anyhow::anyhow!("invalid bench experiment: {p:?}"))?;
    store.create_experiment(&experiment, "bench").await?;
    store
        .transition_status(&StatusChange {
            experiment_id: id.into(),
            from: Status::Draft,
            to: Status::Running,
            at: T0,
            actor: "bench".into(),
        })
        .await?
        .context("activating the bench experiment")
}

/// A subject and the variant it was assigned.
#[derive(Debug, Clone)]
pub struct Subject {
    pub id: String,
    pub variant: String,
    pub assigned_at: OffsetDateTime,
}

/// Assign `n` subjects (`user-0` …) through [`verdict_store::AssignmentStore::get_or_create_assignment`],
/// `concurrency` at a time, bucketed by the domain's hashing like the API does. Subject
/// `i` is assigned at `assigned_at(i)`.
pub async fn assign_subjects(
    store: &DynStore,
    experiment: &Experiment,
    n: usize,
    concurrency: usize,
    assigned_at: impl Fn(usize) -> OffsetDateTime,
) -> anyhow::Result<Vec<Subject>> {
    let wanted: Vec<Assignment> = (0..n)
        .map(|i| {
            let subject = format!("user-{i}");
            let variant = match bucket(experiment, &subject) {
                Bucket::Variant(v) => experiment.variants[v].key.clone(),
                Bucket::OutsideCoverage => experiment.variants[0].key.clone(),
            };
            Assignment {
                experiment_id: experiment.id.clone(),
                subject,
                variant,
                assigned_at: verdict_store::model::truncate_to_millis(assigned_at(i)),
                context: None,
            }
        })
        .collect();
    let store = Arc::clone(store);
    futures::stream::iter(wanted)
        .map(|a| {
            let store = store.clone();
            async move {
                let (stored, _) = store.get_or_create_assignment(&a).await?;
                anyhow::Ok(Subject {
                    id: stored.subject,
                    variant: stored.variant,
                    assigned_at: stored.assigned_at,
                })
            }
        })
        .buffered(concurrency.max(1))
        .try_collect()
        .await
}

/// SplitMix64: a tiny deterministic random stream (the benchmarks need reproducible data,
/// not cryptographic quality).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration for a table: milliseconds below 10 s, seconds above.
pub fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{:.0} ms", s * 1e3)
    } else {
        format!("{s:.1} s")
    }
}

/// The `p` quantile of `sorted` (nearest rank); zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Available cores, for the report's conditions line.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_is_replaced_between_its_markers_and_appended_when_absent() {
        let doc = "intro\n<!-- x:begin -->\nold\n<!-- x:end -->\ntail\n";
        assert_eq!(
            replace_section(doc, "x", "new\n"),
            "intro\n<!-- x:begin -->\nnew\n<!-- x:end -->\ntail\n"
        );
        assert_eq!(
            replace_section("intro\n", "y", "body\n"),
            "intro\n\n<!-- y:begin -->\nbody\n<!-- y:end -->\n"
        );
        // Another section whose name starts the same is left alone.
        let both = replace_section(doc, "x-more", "m\n");
        assert_eq!(replace_section(&both, "x", "n\n").matches("m\n").count(), 1);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.50), Duration::from_millis(50));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&v[..1], 0.99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn thousands_separates_groups() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
