//! Properties of assignment hashing and bucketing that must hold for any input, not just the
//! GrowthBook fixtures: stability (a subject never changes bucket), uniformity (traffic splits
//! match the weights), and range invariants.

use std::fmt::Write as _;

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use verdict_domain::hashing::{
    Assigner, assign, bucket_ranges, choose_variation, fnv1a32, fnv1a32_concat, hash, hash_v2,
    in_namespace,
};

/// Subjects per split measurement.
const SUBJECTS: u32 = 100_000;
/// Allowed gap between a variation's observed share and its weight: 1 percentage point. With
/// 100,000 subjects the standard error of a 50% share is 0.16 points, so this is > 6σ.
const TOLERANCE: f64 = 0.01;

/// Config for the distribution tests: few cases because each hashes 100,000 subjects, and a
/// fixed seed so a statistical test can never flake in CI.
fn distribution_config() -> ProptestConfig {
    ProptestConfig {
        cases: 8,
        rng_seed: RngSeed::Fixed(0x5EED_CAFE),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Salts as Verdict generates them or users might type them, including non-ASCII.
fn salt() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9-]{1,40}", "\\PC{1,24}",]
}

/// 1 to 6 positive weights normalized to sum to 1, as a valid experiment would have.
fn weights() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(0.01f64..1.0, 1..=6).prop_map(|raw| {
        let total: f64 = raw.iter().sum();
        raw.iter().map(|w| w / total).collect()
    })
}

/// Per-variation counts and the number of excluded subjects over subjects `user-0 ..`.
fn split(assigner: &Assigner, variations: usize) -> (Vec<u32>, u32) {
    let mut counts = vec![0u32; variations];
    let mut excluded = 0u32;
    let mut subject = String::with_capacity(16);
    for i in 0..SUBJECTS {
        subject.clear();
        write!(subject, "user-{i}").expect("writing to a String cannot fail");
        match assigner.assign(&subject) {
            Some(v) => counts[v] += 1,
            None => excluded += 1,
        }
    }
    (counts, excluded)
}

fn share(count: u32) -> f64 {
    f64::from(count) / f64::from(SUBJECTS)
}

fn assert_split_matches(salt: &str, weights: &[f64]) {
    let assigner = Assigner::new(salt, 1.0, weights);
    let (counts, excluded) = split(&assigner, weights.len());
    assert_eq!(
        excluded, 0,
        "salt {salt:?}, weights {weights:?}: full coverage excludes none"
    );
    for (v, (&count, &weight)) in counts.iter().zip(weights).enumerate() {
        let observed = share(count);
        assert!(
            (observed - weight).abs() <= TOLERANCE,
            "salt {salt:?}, weights {weights:?}: variation {v} got {observed:.4}, \
             expected {weight} ± {TOLERANCE} (counts {counts:?})"
        );
    }
}

proptest! {
    #![proptest_config(distribution_config())]

    #[test]
    fn a_50_50_split_matches_its_weights_within_one_point(salt in salt()) {
        assert_split_matches(&salt, &[0.5, 0.5]);
    }

    #[test]
    fn a_10_90_split_matches_its_weights_within_one_point(salt in salt()) {
        assert_split_matches(&salt, &[0.1, 0.9]);
    }

    #[test]
    fn a_20_30_50_split_matches_its_weights_within_one_point(salt in salt()) {
        assert_split_matches(&salt, &[0.2, 0.3, 0.5]);
    }

    #[test]
    fn a_four_way_25_split_matches_its_weights_within_one_point(salt in salt()) {
        assert_split_matches(&salt, &[0.25; 4]);
    }

    #[test]
    fn half_coverage_excludes_half_the_subjects_and_splits_the_rest_evenly(salt in salt()) {
        let assigner = Assigner::new(salt.as_str(), 0.5, &[0.5, 0.5]);
        let (counts, excluded) = split(&assigner, 2);
        let excluded_share = share(excluded);
        prop_assert!(
            (excluded_share - 0.5).abs() <= TOLERANCE,
            "salt {salt:?}: {excluded_share:.4} excluded, expected 0.5 ± {TOLERANCE}"
        );
        for (v, &count) in counts.iter().enumerate() {
            let observed = share(count);
            prop_assert!(
                (observed - 0.25).abs() <= TOLERANCE,
                "salt {salt:?}: variation {v} got {observed:.4}, expected 0.25 ± {TOLERANCE}"
            );
        }
    }
}

proptest! {
    #[test]
    fn a_subjects_bucket_never_changes_across_calls_or_call_orders(
        salt in salt(),
        other_salt in salt(),
        subjects in prop::collection::vec("\\PC{0,40}", 1..40),
        weights in weights(),
        coverage in 0.0f64..=1.0,
    ) {
        let assigner = Assigner::new(salt.as_str(), coverage, &weights);
        let other = Assigner::new(other_salt.as_str(), 1.0, &[0.5, 0.5]);

        let forward: Vec<_> = subjects.iter().map(|s| assigner.assign(s)).collect();

        // Reverse order, interleaved with another experiment's assignments: no hidden state
        // may leak between calls.
        let mut backward: Vec<_> = subjects
            .iter()
            .rev()
            .map(|s| {
                let _ = other.assign(s);
                assigner.assign(s)
            })
            .collect();
        backward.reverse();
        prop_assert_eq!(&forward, &backward);

        // A freshly built assigner, the one-shot helper and repeated calls all agree.
        let rebuilt = Assigner::new(salt.as_str(), coverage, &weights);
        for (s, &expected) in subjects.iter().zip(&forward) {
            prop_assert_eq!(rebuilt.assign(s), expected, "subject {:?}", s);
            prop_assert_eq!(assign(&salt, s, coverage, &weights), expected, "subject {:?}", s);
            prop_assert_eq!(assigner.assign(s), expected, "subject {:?}", s);
        }
    }

    #[test]
    fn raising_coverage_never_moves_an_included_subject(
        salt in salt(),
        subject in "\\PC{0,40}",
        weights in weights(),
        low in 0.0f64..=1.0,
        high in 0.0f64..=1.0,
    ) {
        // GrowthBook's ranges keep their starts fixed as coverage grows, so ramping traffic
        // up only adds subjects; it must never reshuffle those already in.
        let (low, high) = if low <= high { (low, high) } else { (high, low) };
        if let Some(v) = assign(&salt, &subject, low, &weights) {
            prop_assert_eq!(assign(&salt, &subject, high, &weights), Some(v));
        }
    }

    #[test]
    fn hash_values_are_always_in_the_unit_interval(
        seed in "\\PC{0,40}",
        value in "\\PC{0,40}",
        version in 1u32..=2,
    ) {
        let h = hash(&seed, &value, version);
        prop_assert!(
            matches!(h, Some(n) if (0.0..1.0).contains(&n)),
            "hash({:?}, {:?}, {}) = {:?}", seed, value, version, h
        );
    }

    #[test]
    fn unknown_hash_versions_never_bucket(
        seed in "\\PC{0,20}",
        value in "\\PC{0,20}",
        version in prop_oneof![Just(0u32), 3u32..],
    ) {
        prop_assert_eq!(hash(&seed, &value, version), None);
        let assigner = Assigner::new(seed.as_str(), 1.0, &[0.5, 0.5]).with_hash_version(version);
        prop_assert_eq!(assigner.assign(&value), None);
    }

    #[test]
    fn fnv_hashes_utf16_code_units_and_concat_equals_joining(a in "\\PC{0,30}", b in "\\PC{0,30}") {
        // Reference: the textbook loop over UTF-16 code units, with the joined string.
        let joined = format!("{a}{b}");
        let reference = joined
            .encode_utf16()
            .fold(0x811C_9DC5u32, |h, u| (h ^ u32::from(u)).wrapping_mul(0x0100_0193));
        prop_assert_eq!(fnv1a32(&joined), reference);
        prop_assert_eq!(fnv1a32_concat(&a, &b), reference);
    }

    #[test]
    fn ranges_are_ordered_disjoint_and_cover_the_requested_share(
        weights in weights(),
        coverage in -0.5f64..1.5,
    ) {
        let ranges = bucket_ranges(weights.len(), coverage, Some(&weights));
        prop_assert_eq!(ranges.len(), weights.len());
        let clamped = coverage.clamp(0.0, 1.0);
        let mut previous_end = 0.0;
        let mut covered = 0.0;
        for &(start, end) in &ranges {
            prop_assert!(start >= previous_end - 1e-12 && start <= end && end <= 1.0 + 1e-12,
                "ranges {:?}", ranges);
            covered += end - start;
            previous_end = end;
        }
        prop_assert!((covered - clamped).abs() < 1e-9, "covered {} of {}", covered, clamped);
    }

    #[test]
    fn a_hash_maps_to_at_most_the_variation_whose_range_contains_it(
        seed in "[a-z0-9-]{1,20}",
        subject in "\\PC{0,30}",
        weights in weights(),
        coverage in 0.0f64..=1.0,
    ) {
        let n = hash_v2(&seed, &subject);
        let ranges = bucket_ranges(weights.len(), coverage, Some(&weights));
        match choose_variation(n, &ranges) {
            Some(i) => prop_assert!(ranges[i].0 <= n && n < ranges[i].1),
            None => prop_assert!(ranges.iter().all(|&(s, e)| n < s || n >= e)),
        }
    }

    #[test]
    fn the_whole_namespace_contains_every_subject_and_an_empty_one_none(
        subject in "\\PC{0,30}",
        id in "\\PC{0,20}",
        cut in 0.0f64..=1.0,
    ) {
        prop_assert!(in_namespace(&subject, (&id, 0.0, 1.0)));
        prop_assert!(!in_namespace(&subject, (&id, cut, cut)));
        // Two adjacent slices partition the line: a subject is in exactly one.
        prop_assert_ne!(
            in_namespace(&subject, (&id, 0.0, cut)),
            in_namespace(&subject, (&id, cut, 1.0))
        );
    }
}
