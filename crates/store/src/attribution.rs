//! Which of a subject's events count for a metric (SPEC §2): events at or after the subject's
//! start, and within the metric's window of it. The start is the subject's assignment, or,
//! when the experiment names an `exposure_event`, its first such event at or after the
//! assignment; subjects that never sent it are not in the analysed population at all.
//!
//! The rollups cannot apply these rules as events arrive (an exposure may arrive after the
//! metric events it gates), so experiments using them are counted from raw events at query
//! time, as GrowthBook does: the stores fetch the candidate rows (each event with its
//! subject's assignment, and each exposed subject's first exposure) and [`tally`] applies the
//! rules. Pure: no IO.

use std::collections::{BTreeMap, HashMap};

use crate::model::{TimeRange, VariantCounts};

/// How a metric's events are attributed to subjects, beyond "at or after the assignment".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attribution {
    /// Count only events inside this range (results' `from` / `to`).
    pub range: TimeRange,
    /// Only subjects who sent this event at or after their assignment count, from their
    /// first such event.
    pub exposure_event: Option<String>,
    /// Count a subject's events within this long of its start.
    pub window: Option<time::Duration>,
}

impl Attribution {
    /// Counting in `range` with no exposure event and no window.
    pub fn in_range(range: TimeRange) -> Self {
        Self {
            range,
            ..Self::default()
        }
    }

    /// Whether only "at or after the assignment" applies: what the rollups count.
    pub fn is_plain(&self) -> bool {
        self.range == TimeRange::default() && self.exposure_event.is_none() && self.window.is_none()
    }

    /// Whether per-subject starts or windows apply (else a store may count in one query).
    pub(crate) fn needs_starts(&self) -> bool {
        self.exposure_event.is_some() || self.window.is_some()
    }
}

/// One metric event at or after its subject's assignment and inside the range, with that
/// assignment (unix milliseconds).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CandidateEvent {
    pub subject: String,
    pub variant: String,
    pub assigned_at: i64,
    pub ts: i64,
    pub value: f64,
}

/// One exposed subject: its variant and first exposure at or after its assignment (ms).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Exposure {
    pub subject: String,
    pub variant: String,
    pub first: i64,
}

/// The analysed population: every assigned subject (its count per variant), or only the
/// exposed ones.
pub(crate) enum Population {
    Assigned(BTreeMap<String, u64>),
    Exposed(Vec<Exposure>),
}

/// Per-variant figures of `events` under `window`, for `population`, ordered by variant
/// (one entry per variant with at least one subject in the population).
pub(crate) fn tally(
    population: Population,
    window: Option<time::Duration>,
    events: impl IntoIterator<Item = CandidateEvent>,
) -> Vec<VariantCounts> {
    let window_ms = window.map(|w| i64::try_from(w.whole_milliseconds()).unwrap_or(i64::MAX));
    let (subjects, starts) = match population {
        Population::Assigned(subjects) => (subjects, None),
        Population::Exposed(exposed) => {
            let mut subjects = BTreeMap::new();
            let mut starts = HashMap::with_capacity(exposed.len());
            for x in exposed {
                *subjects.entry(x.variant).or_insert(0) += 1;
                starts.insert(x.subject, x.first);
            }
            (subjects, Some(starts))
        }
    };
    // Per subject: its variant, event count and Σ value.
    let mut per_subject: HashMap<String, (String, u64, f64)> = HashMap::new();
    for e in events {
        let start = match &starts {
            None => e.assigned_at,
            Some(starts) => match starts.get(&e.subject) {
                Some(&first) => first,
                None => continue,
            },
        };
        let in_window = window_ms.is_none_or(|w| e.ts < start.saturating_add(w));
        if e.ts < start || !in_window {
            continue;
        }
        let entry = per_subject
            .entry(e.subject)
            .or_insert_with(|| (e.variant, 0, 0.0));
        entry.1 += 1;
        entry.2 += e.value;
    }
    let mut out: BTreeMap<String, VariantCounts> = subjects
        .into_iter()
        .map(|(variant, n)| {
            let counts = VariantCounts {
                variant: variant.clone(),
                subjects: n,
                ..VariantCounts::default()
            };
            (variant, counts)
        })
        .collect();
    for (variant, n, total) in per_subject.into_values() {
        if let Some(c) = out.get_mut(&variant) {
            c.converted_subjects += 1;
            c.events += n;
            c.sum += total;
            c.sum_of_squares += total * total;
        }
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn ev(subject: &str, variant: &str, assigned_at: i64, ts: i64, value: f64) -> CandidateEvent {
        CandidateEvent {
            subject: subject.into(),
            variant: variant.into(),
            assigned_at,
            ts,
            value,
        }
    }

    fn exposed(subject: &str, variant: &str, first: i64) -> Exposure {
        Exposure {
            subject: subject.into(),
            variant: variant.into(),
            first,
        }
    }

    fn figures(c: &VariantCounts) -> (u64, u64, u64, f64, f64) {
        (
            c.subjects,
            c.converted_subjects,
            c.events,
            c.sum,
            c.sum_of_squares,
        )
    }

    #[test]
    fn a_window_counts_events_before_start_plus_window_only() {
        let population = Population::Assigned(BTreeMap::from([("a".into(), 2), ("b".into(), 1)]));
        let events = [
            ev("s1", "a", 0, 0, 1.0),                 // at the start: counts
            ev("s1", "a", 0, 2 * HOUR - 1, 2.0),      // just inside 2 h
            ev("s1", "a", 0, 2 * HOUR, 5.0),          // at start + window: out (half-open)
            ev("s2", "a", 10 * HOUR, 11 * HOUR, 3.0), // its own start
            ev("s3", "b", 0, 3 * HOUR, 7.0),          // late: s3 stays unconverted
        ];
        let out = tally(population, Some(time::Duration::hours(2)), events);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].variant, "a");
        assert_eq!(figures(&out[0]), (2, 2, 3, 6.0, 9.0 + 9.0));
        assert_eq!(out[1].variant, "b");
        assert_eq!(figures(&out[1]), (1, 0, 0, 0.0, 0.0));
    }

    #[test]
    fn an_exposure_event_limits_the_population_and_starts_at_the_first_exposure() {
        let population =
            Population::Exposed(vec![exposed("s1", "a", 5 * HOUR), exposed("s2", "b", HOUR)]);
        let events = [
            ev("s1", "a", 0, 4 * HOUR, 1.0),  // before its exposure: not counted
            ev("s1", "a", 0, 5 * HOUR, 1.0),  // at its exposure
            ev("s2", "b", 0, 30 * HOUR, 2.0), // past a 24 h window from exposure
            ev("s2", "b", 0, 2 * HOUR, 4.0),
            ev("s9", "a", 0, 6 * HOUR, 1.0), // never exposed: not in the population
        ];
        let out = tally(population, Some(time::Duration::hours(24)), events);
        assert_eq!(figures(&out[0]), (1, 1, 1, 1.0, 1.0));
        assert_eq!(figures(&out[1]), (1, 1, 1, 4.0, 16.0));
    }

    #[test]
    fn without_a_window_every_event_from_the_start_counts() {
        let population = Population::Exposed(vec![exposed("s1", "a", HOUR)]);
        let events = [
            ev("s1", "a", 0, HOUR, 2.0),
            ev("s1", "a", 0, 1_000 * HOUR, 3.0),
        ];
        let out = tally(population, None, events);
        assert_eq!(
            out.len(),
            1,
            "variants with no exposed subject are left out"
        );
        assert_eq!(figures(&out[0]), (1, 1, 2, 5.0, 25.0));
    }

    #[test]
    fn plain_attribution_is_only_the_default() {
        assert!(Attribution::default().is_plain());
        let windowed = Attribution {
            window: Some(time::Duration::hours(1)),
            ..Attribution::default()
        };
        assert!(!windowed.is_plain() && windowed.needs_starts());
        let ranged = Attribution::in_range(TimeRange {
            from: Some(time::OffsetDateTime::UNIX_EPOCH),
            to: None,
        });
        assert!(!ranged.is_plain() && !ranged.needs_starts());
    }
}
