//! Conformance of `verdict_domain::hashing` with GrowthBook.
//!
//! Two fixtures, both checked case by case with no skipping:
//! - `growthbook_hash_cases.json`: the hashing sections of GrowthBook's own SDK conformance
//!   suite (`cases.json`, spec 0.8.0);
//! - `hash_vectors.json`: cases from GrowthBook's Python SDK 4.0 with the intermediate FNV-1a
//!   values, exact bucket ranges and end-to-end assignments.
//!
//! Each section asserts its case count first, so a truncated fixture cannot pass silently.

use serde_json::Value;
use verdict_domain::hashing::{
    Assigner, bucket_ranges, choose_variation, equal_weights, fnv1a32, fnv1a32_concat, hash,
    in_namespace,
};

const GROWTHBOOK_CASES: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/growthbook_hash_cases.json"
));
const HASH_VECTORS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/hash_vectors.json"
));

/// GrowthBook's test suite compares bucket ranges after rounding, and some expected values
/// are the rounded ones (`0.2 * 0.2` is `0.04000000000000001` in float64, listed as `0.04`).
const RANGE_TOLERANCE: f64 = 1e-9;

fn section(fixture: &str, name: &str, expected_len: usize) -> Vec<Value> {
    let root: Value = serde_json::from_str(fixture).expect("fixture is valid JSON");
    let cases = root[name]
        .as_array()
        .unwrap_or_else(|| panic!("section `{name}` is missing or not an array"))
        .clone();
    assert_eq!(
        cases.len(),
        expected_len,
        "section `{name}` should have {expected_len} cases"
    );
    cases
}

fn as_str<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {v}"))
}

fn as_f64(v: &Value, what: &str) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what}: expected a number, got {v}"))
}

fn as_u32(v: &Value, what: &str) -> u32 {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or_else(|| panic!("{what}: expected a u32, got {v}"))
}

fn as_usize(v: &Value, what: &str) -> usize {
    v.as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or_else(|| panic!("{what}: expected a non-negative integer, got {v}"))
}

fn as_f64_vec(v: &Value, what: &str) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: expected an array, got {v}"))
        .iter()
        .map(|x| as_f64(x, what))
        .collect()
}

fn as_ranges(v: &Value, what: &str) -> Vec<(f64, f64)> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: expected an array of ranges, got {v}"))
        .iter()
        .map(|r| match as_f64_vec(r, what).as_slice() {
            &[start, end] => (start, end),
            other => panic!("{what}: a range must have 2 numbers, got {other:?}"),
        })
        .collect()
}

fn assert_ranges_close(actual: &[(f64, f64)], expected: &[(f64, f64)], case: &str) {
    assert_eq!(
        actual.len(),
        expected.len(),
        "{case}: got ranges {actual:?}, expected {expected:?}"
    );
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a.0 - e.0).abs() <= RANGE_TOLERANCE && (a.1 - e.1).abs() <= RANGE_TOLERANCE,
            "{case}: range {i} is {a:?}, expected {e:?} (all: {actual:?})"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// growthbook_hash_cases.json (GrowthBook cases.json, spec 0.8.0)
// ---------------------------------------------------------------------------------------------

#[test]
fn hash_matches_every_growthbook_case() {
    // [seed, value, version, expected_float_or_null]
    for (i, case) in section(GROWTHBOOK_CASES, "hash", 15).iter().enumerate() {
        let name = format!("hash case #{i} {case}");
        let seed = as_str(&case[0], &name);
        let value = as_str(&case[1], &name);
        let version = as_u32(&case[2], &name);
        let expected = case[3].as_f64();
        // `n % m / m` is correctly rounded in both JS and Rust, so the floats are identical.
        assert_eq!(hash(seed, value, version), expected, "{name}");
    }
}

#[test]
fn bucket_ranges_match_every_growthbook_get_bucket_range_case() {
    // [name, [numVariations, coverage, weights_or_null], expected_ranges]
    for case in section(GROWTHBOOK_CASES, "getBucketRange", 13) {
        let name = format!("getBucketRange `{}`", as_str(&case[0], "case name"));
        let args = &case[1];
        let num_variations = as_usize(&args[0], &name);
        let coverage = as_f64(&args[1], &name);
        let weights = (!args[2].is_null()).then(|| as_f64_vec(&args[2], &name));
        let expected = as_ranges(&case[2], &name);

        let actual = bucket_ranges(num_variations, coverage, weights.as_deref());
        assert_ranges_close(&actual, &expected, &name);
    }
}

#[test]
fn choose_variation_matches_every_growthbook_case() {
    // [name, n, ranges, expected_index (-1 = not in experiment)]
    for case in section(GROWTHBOOK_CASES, "chooseVariation", 13) {
        let name = format!("chooseVariation `{}`", as_str(&case[0], "case name"));
        let n = as_f64(&case[1], &name);
        let ranges = as_ranges(&case[2], &name);
        let expected = case[3]
            .as_i64()
            .unwrap_or_else(|| panic!("{name}: expected index is not an integer"));
        let expected = usize::try_from(expected).ok();

        assert_eq!(choose_variation(n, &ranges), expected, "{name}");
    }
}

#[test]
fn in_namespace_matches_every_growthbook_case() {
    // [name, userId, [namespaceId, start, end], expected_bool]
    for case in section(GROWTHBOOK_CASES, "inNamespace", 16) {
        let name = format!("inNamespace `{}`", as_str(&case[0], "case name"));
        let user_id = as_str(&case[1], &name);
        let ns = &case[2];
        let namespace = (
            as_str(&ns[0], &name),
            as_f64(&ns[1], &name),
            as_f64(&ns[2], &name),
        );
        let expected = case[3]
            .as_bool()
            .unwrap_or_else(|| panic!("{name}: expected value is not a bool"));

        assert_eq!(in_namespace(user_id, namespace), expected, "{name}");
    }
}

#[test]
fn equal_weights_match_every_growthbook_get_equal_weights_case() {
    // [numVariations, expected_weights]
    for case in section(GROWTHBOOK_CASES, "getEqualWeights", 6) {
        let n = case[0]
            .as_i64()
            .unwrap_or_else(|| panic!("getEqualWeights {case}: n is not an integer"));
        let name = format!("getEqualWeights({n})");
        let expected = as_f64_vec(&case[1], &name);

        let actual = equal_weights(n);
        // The fixture lists 8 decimals (0.33333333); GrowthBook's suite compares
        // `Math.floor(w * 1e8) / 1e8`, so do the same rather than loosen a tolerance.
        let truncated: Vec<f64> = actual.iter().map(|w| (w * 1e8).floor() / 1e8).collect();
        assert_eq!(truncated, expected, "{name}: got {actual:?}");
        // And the untruncated weights are exactly 1/n, which the ranges rely on (n is tiny,
        // so the conversion to f64 is exact).
        let exact = 1.0 / n as f64;
        assert!(actual.iter().all(|&w| w == exact), "{name}: got {actual:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// hash_vectors.json (GrowthBook Python SDK 4.0, with intermediates)
// ---------------------------------------------------------------------------------------------

#[test]
fn vector_hashes_and_their_intermediate_fnv_values_match() {
    for (i, case) in section(HASH_VECTORS, "hash", 30).iter().enumerate() {
        let seed = as_str(&case["seed"], "seed");
        let value = as_str(&case["value"], "value");
        let version = as_u32(&case["version"], "version");
        let name = format!("hash vector #{i} (seed {seed:?}, value {value:?}, v{version})");
        let actual = hash(seed, value, version);

        let Some(expected) = case["expected"].as_f64() else {
            assert!(case["expected"].is_null(), "{name}: bad expected value");
            assert_eq!(actual, None, "{name}: unsupported version must not bucket");
            continue;
        };
        assert_eq!(actual, Some(expected), "{name}");

        // Which string is hashed first: v1 hashes `value + seed`, v2 `seed + value`.
        let hashed_string = as_str(&case["hashed_string"], &name);
        let (first, second) = if version == 1 {
            (value, seed)
        } else {
            (seed, value)
        };
        assert_eq!(
            format!("{first}{second}"),
            hashed_string,
            "{name}: concatenation order"
        );

        let fnv = as_u32(&case["fnv1a32"], &name);
        assert_eq!(
            fnv1a32(hashed_string),
            fnv,
            "{name}: fnv1a32 of {hashed_string:?}"
        );
        assert_eq!(
            fnv1a32_concat(first, second),
            fnv,
            "{name}: fnv1a32_concat must equal hashing the joined string"
        );

        let modulus = as_u32(&case["modulus"], &name);
        let last_fnv = if version == 2 {
            let second_string = as_str(&case["second_string"], &name);
            assert_eq!(fnv.to_string(), second_string, "{name}: second string");
            let fnv_second = as_u32(&case["fnv1a32_second"], &name);
            assert_eq!(
                fnv1a32(second_string),
                fnv_second,
                "{name}: fnv1a32 of second string {second_string:?}"
            );
            assert_eq!(modulus, 10_000, "{name}: v2 modulus");
            fnv_second
        } else {
            assert_eq!(modulus, 1000, "{name}: v1 modulus");
            fnv
        };
        assert_eq!(
            f64::from(last_fnv % modulus) / f64::from(modulus),
            expected,
            "{name}: final reduction"
        );

        // Non-ASCII cases only match when hashing UTF-16 code units, not UTF-8 bytes.
        if case["non_ascii"].as_bool() == Some(true) {
            assert!(!hashed_string.is_ascii(), "{name}: flagged non-ASCII");
        }
    }
}

#[test]
fn vector_bucket_ranges_match_bit_for_bit() {
    for (i, case) in section(HASH_VECTORS, "bucket_ranges", 7).iter().enumerate() {
        let name = format!("bucket_ranges vector #{i} {case}");
        let num_variations = as_usize(&case["numVariations"], &name);
        let coverage = as_f64(&case["coverage"], &name);
        let weights = (!case["weights"].is_null()).then(|| as_f64_vec(&case["weights"], &name));
        let expected = as_ranges(&case["expected"], &name);

        let actual = bucket_ranges(num_variations, coverage, weights.as_deref());
        // These were produced by float64 code doing the same operations in the same order
        // (e.g. 0.16000000000000003, 0.30000000000000004), so demand identical floats.
        assert_eq!(actual, expected, "{name}");
    }
}

#[test]
fn vector_assignments_match_end_to_end() {
    for (i, case) in section(HASH_VECTORS, "assignments", 30).iter().enumerate() {
        let exp = &case["experiment"];
        let user_id = as_str(&case["user_id"], "user_id");
        let key = as_str(&exp["key"], "experiment key");
        let name = format!("assignment #{i} (experiment {key:?}, user {user_id:?})");

        // GrowthBook's experiment defaults: seed = key, hashVersion = 1, coverage = 1,
        // weights = equal.
        let seed = exp["seed"].as_str().unwrap_or(key);
        let version = if exp["hashVersion"].is_null() {
            1
        } else {
            as_u32(&exp["hashVersion"], &name)
        };
        let coverage = if exp["coverage"].is_null() {
            1.0
        } else {
            as_f64(&exp["coverage"], &name)
        };
        let num_variations = exp["variations"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: variations is not an array"))
            .len();
        let weights = (!exp["weights"].is_null()).then(|| as_f64_vec(&exp["weights"], &name));

        let expected_hash = as_f64(&case["hash"], &name);
        let expected_ranges = as_ranges(&case["ranges"], &name);
        let expected_variation = as_usize(&case["variationId"], &name);
        let expected_in_experiment = case["inExperiment"]
            .as_bool()
            .unwrap_or_else(|| panic!("{name}: inExperiment is not a bool"));

        let n = hash(seed, user_id, version).unwrap_or_else(|| panic!("{name}: no hash"));
        assert_eq!(n, expected_hash, "{name}: hash");

        let ranges = bucket_ranges(num_variations, coverage, weights.as_deref());
        assert_eq!(ranges, expected_ranges, "{name}: ranges");

        let chosen = choose_variation(n, &ranges);
        assert_eq!(
            chosen.is_some(),
            expected_in_experiment,
            "{name}: inExperiment"
        );
        // Outside the experiment GrowthBook reports variation 0 (the control) as the value
        // served; inside, the chosen index.
        assert_eq!(
            chosen.unwrap_or(0),
            expected_variation,
            "{name}: variationId"
        );
        if expected_in_experiment {
            assert_eq!(chosen, Some(expected_variation), "{name}: variationId");
        }

        // The composed helper must agree with the step-by-step pipeline.
        let assigner = match &weights {
            Some(w) => Assigner::new(seed, coverage, w),
            None => Assigner::equal(seed, num_variations, coverage),
        }
        .with_hash_version(version);
        assert_eq!(
            assigner.ranges(),
            expected_ranges.as_slice(),
            "{name}: Assigner ranges"
        );
        assert_eq!(assigner.assign(user_id), chosen, "{name}: Assigner::assign");
    }
}
