//! Criterion benchmarks for the hot paths of an analysis refresh.
//!
//! Reference (GrowthBook's gbstats on the same kind of machine): 1.75 ms for one two-arm
//! Bayesian test, 0.24 ms for a t-test, 0.08 ms for an SRM check.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use verdict_stats::{
    Objective, RatioStats, SummaryStats, expected_loss, prob_b_beats_a, prob_best,
    prob_best_normal, srm_check, summarize, summarize_normal, welch_t_test,
};

fn two_arm(c: &mut Criterion) {
    c.bench_function("p_b_beats_a/n=1e3", |b| {
        b.iter(|| prob_b_beats_a(black_box((100, 1_000)), black_box((120, 1_000))))
    });
    c.bench_function("p_b_beats_a/n=1e6", |b| {
        b.iter(|| {
            prob_b_beats_a(
                black_box((32_000, 1_000_000)),
                black_box((32_500, 1_000_000)),
            )
        })
    });
    c.bench_function("p_b_beats_a+expected_loss/n=1e4", |b| {
        b.iter(|| {
            summarize(
                black_box(&[(1_000, 10_000), (1_060, 10_000)]),
                Objective::Maximize,
            )
        })
    });
}

fn four_arm(c: &mut Criterion) {
    let arms = [(75, 2_500), (90, 2_500), (80, 2_500), (95, 2_500)];
    c.bench_function("prob_best/k=4,n=2500", |b| {
        b.iter(|| prob_best(black_box(&arms)))
    });
    c.bench_function("expected_loss/k=4,n=2500", |b| {
        b.iter(|| expected_loss(black_box(&arms)))
    });
    let big = [
        (32_000, 1_000_000),
        (32_500, 1_000_000),
        (31_800, 1_000_000),
        (32_200, 1_000_000),
    ];
    c.bench_function("prob_best+loss/k=4,n=1e6", |b| {
        b.iter(|| summarize(black_box(&big), Objective::Maximize))
    });
}

fn frequentist(c: &mut Criterion) {
    c.bench_function("srm/k=2", |b| {
        b.iter(|| srm_check(black_box(&[10_000, 10_700]), black_box(&[0.5, 0.5])))
    });
    let a = SummaryStats::from_sums(20_000, 5_000_000.0, 1_377_993_600.0).expect("valid");
    let v = SummaryStats::from_sums(20_100, 4_984_800.0, 1_381_445_675.0).expect("valid");
    c.bench_function("welch/n=2e4", |b| {
        b.iter(|| welch_t_test(black_box(&a), black_box(&v), 0.05))
    });
}

fn normal(c: &mut Criterion) {
    c.bench_function("normal/prob_best+loss/k=2", |b| {
        b.iter(|| summarize_normal(black_box(&[(52.1, 0.9), (53.4, 0.95)]), Objective::Maximize))
    });
    c.bench_function("normal/prob_best+loss/k=2,far_tail", |b| {
        b.iter(|| summarize_normal(black_box(&[(0.0, 0.6), (-9.0, 0.8)]), Objective::Maximize))
    });
    let latency = [
        (250.0, 3.0),
        (248.0, 3.1),
        (251.5, 2.9),
        (245.0, 3.3),
        (249.0, 3.0),
        (250.5, 2.8),
        (247.0, 3.4),
        (252.0, 3.2),
    ];
    c.bench_function("normal/prob_best/k=8", |b| {
        b.iter(|| prob_best_normal(black_box(&latency)))
    });
    // Every standard error different: each arm's grid also resolves all narrower arms.
    let spread = [
        (0.0, 0.001),
        (0.002, 0.01),
        (0.01, 0.1),
        (-0.05, 1.0),
        (0.5, 10.0),
        (0.003, 0.002),
        (-0.001, 0.05),
        (0.02, 0.03),
    ];
    c.bench_function("normal/prob_best+loss/k=8,unequal_se", |b| {
        b.iter(|| summarize_normal(black_box(&spread), Objective::Maximize))
    });
    c.bench_function("normal/prob_best+loss/k=4", |b| {
        b.iter(|| summarize_normal(black_box(&latency[..4]), Objective::Maximize))
    });
}

fn ratio(c: &mut Criterion) {
    c.bench_function("ratio/delta_method", |b| {
        b.iter(|| {
            RatioStats::from_sums(
                black_box(20_000),
                black_box(118_734.0),
                black_box(29_512_873.0),
                black_box(1_021_456.0),
                black_box(5.713_912_7e11),
                black_box(2.398_112_3e8),
            )
        })
    });
}

criterion_group!(benches, two_arm, four_arm, frequentist, normal, ratio);
criterion_main!(benches);
