//! [`EventStore`] on SQLite: table `events`. `seq` (AUTOINCREMENT) is the ingestion order,
//! never reused; a 64-bit dedupe key (indexed, confirmed on the full ids) makes batches
//! idempotent. Batches are group-committed on the writer thread.

use std::collections::hash_map::Entry;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Transaction, params};
use verdict_domain::{EventRecord, NewEvent};

use super::{
    Message, STARTS, SUBJECT_FIGURES, SqliteStore, WriteJob, decode, encode, internal,
    variant_counts_row, variant_sums,
};
use crate::Result;
use crate::events::EventStore;
use crate::model::{AppendOutcome, Attribution, VariantCounts, from_millis, to_millis};
use crate::rollup::check_cap;

/// Append one batch inside `tx`: attribute each event to its subject's assignment, skip
/// duplicates (confirmed on the full id), insert the rest. Runs inside a group commit of
/// the writer thread.
pub(super) fn append_in(tx: &Transaction<'_>, batch: &[NewEvent]) -> Result<Vec<AppendOutcome>> {
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut assigned = tx
        .prepare_cached("SELECT variant FROM assignments WHERE experiment_id = ?1 AND subject = ?2")
        .map_err(internal("preparing the assignment lookup"))?;
    // Two statements, not one `INSERT … SELECT … WHERE NOT EXISTS`: reading the table it
    // inserts into, that one would build a temporary table per event (measured: slower).
    let mut seen = tx
        .prepare_cached(
            "SELECT 1 FROM events WHERE dedupe = ?1 AND experiment_id = ?2 AND event_id = ?3",
        )
        .map_err(internal("preparing the duplicate check"))?;
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO events (experiment_id, event_id, dedupe, subject, variant,
                                 event, value, ts, received_at, meta)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )
        .map_err(internal("preparing the event insert"))?;
    // Subjects repeat within a batch; look each up once.
    let mut variants: foldhash::HashMap<(&str, &str), Option<String>> =
        foldhash::HashMap::with_capacity_and_hasher(batch.len(), Default::default());
    for e in batch {
        let variant = match variants.entry((&e.experiment_id, &e.subject)) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(slot) => slot.insert(
                assigned
                    .query_row(params![e.experiment_id, e.subject], |r| r.get(0))
                    .optional()
                    .map_err(internal("looking up an event's assignment"))?,
            ),
        };
        let Some(variant) = variant.as_deref() else {
            outcomes.push(AppendOutcome::NotInExperiment);
            continue;
        };
        if e.variant
            .as_deref()
            .is_some_and(|claimed| claimed != variant)
        {
            outcomes.push(AppendOutcome::VariantMismatch);
            continue;
        }
        let key = dedupe_key(&e.experiment_id, &e.event_id);
        if seen
            .exists(params![key, e.experiment_id, e.event_id])
            .map_err(internal("checking for a duplicate event"))?
        {
            outcomes.push(AppendOutcome::Duplicate);
            continue;
        }
        let meta = e.meta.as_ref().map(encode).transpose()?;
        insert
            .execute(params![
                e.experiment_id,
                e.event_id,
                key,
                e.subject,
                variant,
                e.event,
                e.value,
                to_millis(e.ts),
                to_millis(e.received_at),
                meta
            ])
            .map_err(internal("inserting an event"))?;
        outcomes.push(AppendOutcome::Accepted);
    }
    Ok(outcomes)
}

/// The 64-bit idempotency key of an event: FNV-1a over `experiment_id`, a 0 byte, and
/// `event_id`. Persisted, so it must never change (no `std` hasher, whose output may).
fn dedupe_key(experiment_id: &str, event_id: &str) -> i64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut h = OFFSET;
    for b in experiment_id
        .bytes()
        .chain(std::iter::once(0))
        .chain(event_id.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    h as i64
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append_events(&self, batch: Vec<NewEvent>) -> Result<Vec<AppendOutcome>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send(Message::Commit(WriteJob::Append { batch, reply }), answer)
            .await
    }

    async fn scan_events(&self, after_seq: u64, limit: usize) -> Result<Vec<EventRecord>> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT seq, experiment_id, event_id, subject, variant, event, value, ts,
                            received_at, meta
                     FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                )
                .map_err(internal("scanning events"))?;
            let rows = stmt
                .query_map(params![after_seq as i64, limit as i64], |r| {
                    Ok((
                        EventRecord {
                            seq: r.get::<_, i64>(0)? as u64,
                            experiment_id: r.get(1)?,
                            event_id: r.get(2)?,
                            subject: r.get(3)?,
                            variant: r.get(4)?,
                            event: r.get(5)?,
                            value: r.get(6)?,
                            ts: from_millis(r.get(7)?),
                            received_at: from_millis(r.get(8)?),
                            meta: None,
                        },
                        r.get::<_, Option<String>>(9)?,
                    ))
                })
                .map_err(internal("scanning events"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(internal("scanning events"))?;
            rows.into_iter()
                .map(|(mut rec, meta)| {
                    rec.meta = meta
                        .map(|m| decode(&m, "scanning events (an event's meta)"))
                        .transpose()?;
                    Ok(rec)
                })
                .collect()
        })
        .await
    }

    /// One query for every attribution: `STARTS` is each counted subject with its start;
    /// a subject's figures are its `event` events from the start, within the window and
    /// range (`SUBJECT_FIGURES`), its total capped before the sums.
    async fn variant_counts(
        &self,
        experiment_id: &str,
        event: &str,
        attribution: &Attribution,
        cap: Option<f64>,
    ) -> Result<Vec<VariantCounts>> {
        check_cap(cap, "counting variants")?;
        let (eid, ev) = (experiment_id.to_owned(), event.to_owned());
        let from = attribution.range.from.map(to_millis);
        let to = attribution.range.to.map(to_millis);
        let exposure = attribution.exposure_event.clone();
        let window = attribution.window_millis();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "WITH {STARTS}
                     SELECT p.variant, COUNT(*), {sums}
                     FROM starts p
                     LEFT JOIN ({SUBJECT_FIGURES}) s ON s.subject = p.subject
                     GROUP BY p.variant ORDER BY p.variant",
                    sums = variant_sums(7)
                ))
                .map_err(internal("counting variants"))?;
            stmt.query_map(
                params![eid, ev, from, to, exposure, window, cap],
                variant_counts_row,
            )
            .map_err(internal("counting variants"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(internal("counting variants"))
        })
        .await
    }
}
