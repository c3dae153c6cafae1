//! Breakdowns: an experiment's results per segment of one declared dimension (country,
//! platform, …), to see whether an effect holds in each.
//!
//! Each subject belongs to one segment, fixed once known, so that every segment is a
//! sub-experiment with the same randomization and the same subject-level statistics:
//!
//! - `source: assignment`: the value of an attribute the experiment keeps with each
//!   assignment (one of `assignment.context`), as the request that first assigned the
//!   subject carried it;
//! - `source: event`: the value of a key of event `meta`, from the subject's first event
//!   (in ingestion order) that carries it, whether or not that event counts towards a
//!   metric (one sent before the assignment does not): a property of the subject, such as
//!   its platform. The rollup records it incrementally, so the dimension must be declared
//!   before events arrive (at creation, or while a draft).
//!
//! Only string values form segments; a subject without one is in the `missing` segment.
//! Results show the `max_segments` values with the most subjects and merge the rest into
//! one `other` segment ([`SegmentKind`]).

use serde::{Deserialize, Serialize};

use crate::validation::Problems;

/// Segments shown when a breakdown sets none; the rest are merged into `other`.
pub const DEFAULT_MAX_SEGMENTS: u32 = 50;
/// Most segments a breakdown may show.
pub const MAX_SEGMENTS: u32 = 200;
/// Longest attribute name.
pub const MAX_ATTRIBUTE_LEN: usize = 64;

/// Where a subject's segment comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DimensionSource {
    /// An attribute kept with the assignment (one of `assignment.context`).
    Assignment,
    /// A key of the `meta` of the subject's first event carrying it.
    Event,
}

/// The one dimension an experiment's results are broken down by:
/// `{"source": "assignment", "attribute": "country"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Breakdown {
    pub source: DimensionSource,
    /// The attribute or meta key (letters, digits, `_` and `-`; at most 64).
    pub attribute: String,
    /// Segments shown, those with the most subjects (default 50, at most 200); the rest
    /// are merged into one `other` segment.
    #[serde(default = "default_max_segments")]
    pub max_segments: u32,
}

fn default_max_segments() -> u32 {
    DEFAULT_MAX_SEGMENTS
}

impl Breakdown {
    /// Problems of this breakdown, given the attributes the experiment keeps with its
    /// assignments.
    pub fn check(&self, p: &mut Problems, context: &[String]) {
        let a = &self.attribute;
        if a.is_empty()
            || a.len() > MAX_ATTRIBUTE_LEN
            || !a
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        {
            p.push(
                "breakdown.attribute",
                format!("must be 1 to {MAX_ATTRIBUTE_LEN} letters, digits, '_' or '-'"),
            );
        } else if self.source == DimensionSource::Assignment && !context.contains(a) {
            p.push(
                "breakdown.attribute",
                "must be one of `assignment.context` (the attributes kept with each assignment)",
            );
        }
        if !(1..=MAX_SEGMENTS).contains(&self.max_segments) {
            p.push(
                "breakdown.max_segments",
                format!("must be between 1 and {MAX_SEGMENTS}"),
            );
        }
    }
}

/// What a segment of a breakdown holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SegmentKind {
    /// The subjects with one value.
    Value,
    /// The subjects of every value beyond `max_segments`, merged.
    Other,
    /// The subjects without a (string) value.
    Missing,
}

/// How the values of a breakdown become the segments shown: the `max` values with the most
/// subjects (ties by value), then `other` (when some are left) and `missing`. Takes
/// `(value, subjects)` pairs; returns, per input pair in order, the index of its segment in
/// the returned list of `(kind, value)`.
pub fn segments_of(
    values: &[(Option<&str>, u64)],
    max: u32,
) -> (Vec<(SegmentKind, Option<String>)>, Vec<usize>) {
    let mut ranked: Vec<(&str, u64)> = Vec::new();
    for (v, n) in values {
        if let Some(v) = v {
            match ranked.iter_mut().find(|(r, _)| r == v) {
                Some((_, total)) => *total += n,
                None => ranked.push((v, *n)),
            }
        }
    }
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let shown = ranked.len().min(max as usize);
    let mut segments: Vec<(SegmentKind, Option<String>)> = ranked[..shown]
        .iter()
        .map(|(v, _)| (SegmentKind::Value, Some((*v).to_owned())))
        .collect();
    let other = (ranked.len() > shown).then(|| {
        segments.push((SegmentKind::Other, None));
        segments.len() - 1
    });
    let missing = values.iter().any(|(v, _)| v.is_none()).then(|| {
        segments.push((SegmentKind::Missing, None));
        segments.len() - 1
    });
    let index = values
        .iter()
        .map(|(v, _)| match v {
            None => missing.unwrap_or_default(),
            Some(v) => ranked[..shown]
                .iter()
                .position(|(r, _)| r == v)
                .or(other)
                .unwrap_or_default(),
        })
        .collect();
    (segments, index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_largest_values_are_shown_and_the_rest_merged() {
        let values = [
            (Some("FR"), 5),
            (Some("US"), 30),
            (None, 4),
            (Some("DE"), 5),
            (Some("US"), 10),
            (Some("IT"), 1),
        ];
        let (segments, index) = segments_of(&values, 2);
        assert_eq!(
            segments,
            [
                (SegmentKind::Value, Some("US".into())),
                (SegmentKind::Value, Some("DE".into())),
                (SegmentKind::Other, None),
                (SegmentKind::Missing, None),
            ]
        );
        // FR ties DE on subjects and loses on the value's order.
        assert_eq!(index, [2, 0, 3, 1, 0, 2]);
        let (segments, index) = segments_of(&values[..2], 50);
        assert_eq!(segments.len(), 2, "nothing to merge, nothing missing");
        assert_eq!(index, [1, 0]);
    }

    #[test]
    fn a_breakdown_names_a_kept_attribute_with_a_sane_cap() {
        let check = |v: serde_json::Value| {
            let b: Breakdown = serde_json::from_value(v).unwrap();
            let mut p = Problems::new();
            b.check(&mut p, &["country".to_owned()]);
            p.iter().map(|p| p.field.clone()).collect::<Vec<_>>()
        };
        assert!(check(json!({"source": "assignment", "attribute": "country"})).is_empty());
        assert!(check(json!({"source": "event", "attribute": "platform"})).is_empty());
        assert_eq!(
            check(json!({"source": "assignment", "attribute": "platform", "max_segments": 0})),
            ["breakdown.attribute", "breakdown.max_segments"]
        );
        assert_eq!(
            check(json!({"source": "event", "attribute": "a.b"})),
            ["breakdown.attribute"]
        );
        let b: Breakdown =
            serde_json::from_value(json!({"source": "event", "attribute": "p"})).unwrap();
        assert_eq!(b.max_segments, DEFAULT_MAX_SEGMENTS);
    }
}
