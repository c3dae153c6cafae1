//! Deterministic assignment hashing, bit-for-bit compatible with GrowthBook (SDK spec 0.8.0).
//!
//! Verdict must put a subject in the same variation that a GrowthBook SDK would, so that
//! experiments can be migrated in either direction and client-side SDKs can evaluate
//! assignments locally. Everything here therefore mirrors GrowthBook's JavaScript SDK
//! (`packages/sdk-js/src/util.ts`) down to float arithmetic order, and is checked against
//! GrowthBook's own conformance cases in `tests/growthbook_conformance.rs`.
//!
//! The pipeline for one subject is:
//!
//! 1. [`hash`] the experiment seed (its salt) and the subject id to a number in `[0, 1)`;
//! 2. split `[0, 1)` into one range per variation with [`bucket_ranges`];
//! 3. [`choose_variation`] picks the range containing the hash, or none when the subject falls
//!    in the part left out by a coverage below 1.
//!
//! [`Assigner`] and [`assign`] compose the three steps.

/// FNV-1a 32-bit offset basis.
const FNV_OFFSET_BASIS: u32 = 0x811C_9DC5;
/// FNV-1a 32-bit prime.
const FNV_PRIME: u32 = 0x0100_0193;

/// Hash version used by [`Assigner::new`] and [`assign`]: GrowthBook's v2, which fixes v1's
/// correlation between experiments that share a prefix or suffix of their seeds.
pub const DEFAULT_HASH_VERSION: u32 = 2;

/// Incremental FNV-1a 32-bit hasher over UTF-16 code units, as GrowthBook's `hashFnv32a`.
///
/// GrowthBook's JavaScript iterates `str.charCodeAt(i)`, i.e. UTF-16 code units, so non-ASCII
/// text must be hashed as UTF-16 (a character outside the Basic Multilingual Plane is two
/// surrogate units), never as UTF-8 bytes. Feeding several strings in turn hashes their
/// concatenation, which lets callers hash `seed + value` without allocating a joined string.
///
/// ```
/// use verdict_domain::hashing::{Fnv1a32, fnv1a32};
///
/// let joined = Fnv1a32::new().write_str("seed").write_str("a").finish();
/// assert_eq!(joined, fnv1a32("seeda"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fnv1a32 {
    state: u32,
}

impl Default for Fnv1a32 {
    fn default() -> Self {
        Self::new()
    }
}

impl Fnv1a32 {
    /// A hasher in the initial state (the FNV offset basis), i.e. the hash of `""`.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            state: FNV_OFFSET_BASIS,
        }
    }

    /// Feeds `s` as UTF-16 code units; returns the hasher so calls can be chained.
    #[must_use]
    pub fn write_str(mut self, s: &str) -> Self {
        // Subject ids and seeds are nearly always ASCII, where one byte is one UTF-16 code
        // unit, so the UTF-8 decoding done by `encode_utf16` can be skipped; the `is_ascii`
        // scan is word-at-a-time and cheaper than the decoding it saves.
        if s.is_ascii() {
            for &b in s.as_bytes() {
                self.write_unit(u16::from(b));
            }
        } else {
            for unit in s.encode_utf16() {
                self.write_unit(unit);
            }
        }
        self
    }

    /// One FNV-1a round. GrowthBook's JS computes the multiplication as a sum of shifts in
    /// float64 and truncates with `ToInt32` / `>>> 0`, which is exactly multiplication by the
    /// prime modulo 2^32.
    #[inline]
    fn write_unit(&mut self, unit: u16) {
        self.state = (self.state ^ u32::from(unit)).wrapping_mul(FNV_PRIME);
    }

    /// The 32-bit hash of everything fed so far.
    #[must_use]
    pub const fn finish(self) -> u32 {
        self.state
    }
}

/// FNV-1a 32-bit of `s` over UTF-16 code units; mirrors GrowthBook's `hashFnv32a`.
#[must_use]
pub fn fnv1a32(s: &str) -> u32 {
    Fnv1a32::new().write_str(s).finish()
}

/// FNV-1a 32-bit of the concatenation `a + b`, without building the concatenated string;
/// mirrors GrowthBook's `hashFnv32a(a + b)`.
#[must_use]
pub fn fnv1a32_concat(a: &str, b: &str) -> u32 {
    Fnv1a32::new().write_str(a).write_str(b).finish()
}

/// FNV-1a 32-bit of the decimal representation of `n`, i.e. GrowthBook's
/// `hashFnv32a(n + "")`, formatted on the stack so hash v2 never allocates.
fn fnv1a32_of_decimal(mut n: u32) -> u32 {
    // u32::MAX has 10 decimal digits.
    let mut digits = [0u8; 10];
    let mut start = digits.len();
    loop {
        start -= 1;
        // `n % 10 < 10`, so the narrowing cannot lose information.
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut hasher = Fnv1a32::new();
    for &d in &digits[start..] {
        hasher.write_unit(u16::from(d));
    }
    hasher.finish()
}

/// GrowthBook hash version 1: `(fnv(value + seed) % 1000) / 1000`.
///
/// Note the order: the value comes *first* in v1 (and second in v2). Only 1000 distinct
/// outcomes, so it is coarse; kept for compatibility with experiments created with v1.
#[must_use]
pub fn hash_v1(seed: &str, value: &str) -> f64 {
    f64::from(fnv1a32_concat(value, seed) % 1000) / 1000.0
}

/// GrowthBook hash version 2: `(fnv(decimal string of fnv(seed + value)) % 10000) / 10000`.
///
/// Re-hashing the decimal digits decorrelates experiments whose seeds share a prefix, which
/// v1 does not.
#[must_use]
pub fn hash_v2(seed: &str, value: &str) -> f64 {
    f64::from(fnv1a32_of_decimal(fnv1a32_concat(seed, value)) % 10_000) / 10_000.0
}

/// Hashes `value` (a subject id) under `seed` (an experiment's salt) to a number in `[0, 1)`;
/// mirrors GrowthBook's `hash(seed, value, version)`.
///
/// Returns `None` for a version other than 1 or 2, like GrowthBook's `null`: a subject whose
/// hash is unknown must not be bucketed at all.
#[must_use]
pub fn hash(seed: &str, value: &str, version: u32) -> Option<f64> {
    match version {
        1 => Some(hash_v1(seed, value)),
        2 => Some(hash_v2(seed, value)),
        _ => None,
    }
}

/// `n` equal weights of `1 / n`; mirrors GrowthBook's `getEqualWeights`. Empty when `n <= 0`.
#[must_use]
pub fn equal_weights(n: i64) -> Vec<f64> {
    usize::try_from(n).map_or_else(|_| Vec::new(), equal_weights_usize)
}

fn equal_weights_usize(n: usize) -> Vec<f64> {
    // Exactly `1 / n` (not a rounded literal) so range ends add up the way GrowthBook's do.
    // Variation counts are tiny, so the `usize -> f64` conversion is exact.
    let w = 1.0 / n as f64;
    vec![w; n]
}

/// Splits `[0, 1)` into one `[start, end)` range per variation; mirrors GrowthBook's
/// `getBucketRanges(numVariations, coverage, weights)`.
///
/// - `coverage` is clamped to `[0, 1]` (`NaN` is treated as 0, which is what it amounts to in
///   GrowthBook: no hash is ever inside a `NaN`-ended range).
/// - `weights` fall back to [`equal_weights`] when absent, of the wrong length, or summing to
///   less than 0.99 or more than 1.01.
/// - Variation `i` starts at the cumulative weight of the variations before it and covers
///   `coverage * weights[i]` of the line. Starts do not move with coverage, so lowering or
///   raising coverage never moves an already-included subject to another variation.
#[must_use]
pub fn bucket_ranges(
    num_variations: usize,
    coverage: f64,
    weights: Option<&[f64]>,
) -> Vec<(f64, f64)> {
    let coverage = if coverage.is_nan() {
        0.0
    } else {
        coverage.clamp(0.0, 1.0)
    };

    // Same left-to-right summation as JS `reduce`, so borderline sums decide identically.
    let usable = weights.filter(|w| {
        let total: f64 = w.iter().fold(0.0, |acc, x| acc + x);
        w.len() == num_variations && (0.99..=1.01).contains(&total)
    });
    let fallback;
    let weights = match usable {
        Some(w) => w,
        None => {
            fallback = equal_weights_usize(num_variations);
            &fallback
        }
    };

    let mut cumulative = 0.0;
    weights
        .iter()
        .map(|&w| {
            let start = cumulative;
            cumulative += w;
            (start, start + coverage * w)
        })
        .collect()
}

/// Index of the first range with `start <= n < end`, or `None` when `n` is in none of them
/// (the subject is not in the experiment); mirrors GrowthBook's `chooseVariation`, whose `-1`
/// becomes `None`.
#[must_use]
pub fn choose_variation(n: f64, ranges: &[(f64, f64)]) -> Option<usize> {
    ranges
        .iter()
        .position(|&(start, end)| n >= start && n < end)
}

/// Whether `subject` falls in `namespace = (id, start, end)`; mirrors GrowthBook's
/// `inNamespace(hashValue, namespace)`.
///
/// Namespaces make experiments mutually exclusive: each takes a disjoint `[start, end)` slice
/// of the same hash line. The line is hash v1 of `subject` with seed `"__" + id`, i.e.
/// `fnv(subject + "__" + id)`, hashed here without allocating.
#[must_use]
pub fn in_namespace(subject: &str, namespace: (&str, f64, f64)) -> bool {
    let (id, start, end) = namespace;
    let h = Fnv1a32::new()
        .write_str(subject)
        .write_str("__")
        .write_str(id)
        .finish();
    let n = f64::from(h % 1000) / 1000.0;
    n >= start && n < end
}

/// Precomputed assignment for one experiment: its seed, hash version and bucket ranges.
///
/// Build it once per experiment and call [`Assigner::assign`] per subject; it composes
/// [`hash`], [`bucket_ranges`] and [`choose_variation`] the way GrowthBook's
/// `_runExperiment` does (ignoring targeting, forcing and namespaces, handled elsewhere).
#[derive(Debug, Clone, PartialEq)]
pub struct Assigner {
    seed: String,
    hash_version: u32,
    ranges: Vec<(f64, f64)>,
}

impl Assigner {
    /// An assigner for an experiment with `weights.len()` variations, using hash v2.
    ///
    /// `seed` is GrowthBook's `experiment.seed || experiment.key`. Invalid weights fall back to
    /// equal weights and coverage is clamped, exactly as in [`bucket_ranges`].
    #[must_use]
    pub fn new(seed: impl Into<String>, coverage: f64, weights: &[f64]) -> Self {
        Self {
            seed: seed.into(),
            hash_version: DEFAULT_HASH_VERSION,
            ranges: bucket_ranges(weights.len(), coverage, Some(weights)),
        }
    }

    /// An assigner for `num_variations` equally weighted variations, using hash v2.
    #[must_use]
    pub fn equal(seed: impl Into<String>, num_variations: usize, coverage: f64) -> Self {
        Self {
            seed: seed.into(),
            hash_version: DEFAULT_HASH_VERSION,
            ranges: bucket_ranges(num_variations, coverage, None),
        }
    }

    /// The same assigner hashing with `version` (GrowthBook's `experiment.hashVersion`).
    /// With an unknown version every subject is unassigned.
    #[must_use]
    pub fn with_hash_version(mut self, version: u32) -> Self {
        self.hash_version = version;
        self
    }

    /// The experiment seed (salt).
    #[must_use]
    pub fn seed(&self) -> &str {
        &self.seed
    }

    /// The hash version in use.
    #[must_use]
    pub fn hash_version(&self) -> u32 {
        self.hash_version
    }

    /// The `[start, end)` range of each variation.
    #[must_use]
    pub fn ranges(&self) -> &[(f64, f64)] {
        &self.ranges
    }

    /// The variation index for `subject`, or `None` when the subject is outside coverage (or
    /// the hash version is unknown).
    #[must_use]
    pub fn assign(&self, subject: &str) -> Option<usize> {
        let n = hash(&self.seed, subject, self.hash_version)?;
        choose_variation(n, &self.ranges)
    }
}

/// One-shot assignment of `subject` in the experiment salted `salt`, with `weights.len()`
/// variations and the given `coverage`, using hash v2; `None` when outside coverage.
///
/// Computes the ranges on every call; prefer [`Assigner`] when assigning many subjects.
#[must_use]
pub fn assign(salt: &str, subject: &str, coverage: f64, weights: &[f64]) -> Option<usize> {
    let ranges = bucket_ranges(weights.len(), coverage, Some(weights));
    choose_variation(hash_v2(salt, subject), &ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_hash_matches_hashing_the_formatted_string() {
        for n in [0, 7, 10, 717_764_279, u32::MAX] {
            assert_eq!(fnv1a32_of_decimal(n), fnv1a32(&n.to_string()), "n = {n}");
        }
    }

    #[test]
    fn non_ascii_is_hashed_as_utf16_code_units() {
        let s = "seedemoji-🙂";
        let by_units = s.encode_utf16().fold(FNV_OFFSET_BASIS, |h, u| {
            (h ^ u32::from(u)).wrapping_mul(FNV_PRIME)
        });
        assert_eq!(fnv1a32(s), by_units);
        assert_eq!(fnv1a32(s), 3_928_120_174);
    }
}
