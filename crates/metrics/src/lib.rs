//! Verdict's Prometheus metrics, served as text at `/metrics`.
//!
//! One [`Metrics`] per process (cheap to clone), with its own registry: no global state, so
//! tests can run several servers in one process. Counters the code increments where things
//! happen (requests, events, job runs, webhook attempts); values owned elsewhere are set
//! from memory by the `/metrics` handler just before rendering (cache statistics,
//! [`Metrics::observe_cache`]) or in the background (the aggregation lag, refreshed every
//! few seconds and after each aggregation, [`Metrics::set_aggregation_lag`]): a scrape never
//! reads the store.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Labels of a request: a struct (not a list of pairs), the route shared with the route's
/// other label sets, so that counting a request allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Arc<str>,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Arc<str>,
}

/// The method as a label value; anything unusual is `OTHER` (bounded label values).
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or("OTHER")
}

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric Verdict exports.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RouteLabels, Histogram>,
    events_ingested: Counter,
    events_rejected: Family<Labels, Counter>,
    /// Every rejection reason counted so far (the family cannot be listed).
    rejection_reasons: RwLock<BTreeSet<String>>,
    job_runs: Family<Labels, Counter>,
    job_seconds: Family<Labels, Histogram>,
    aggregation_lag: Gauge<f64, std::sync::atomic::AtomicU64>,
    webhook_attempts: Family<Labels, Counter>,
    cache: Family<Labels, Counter>,
    /// Cache figures last seen, to turn the cache's running totals into counter increments.
    cache_seen: Mutex<CacheFigures>,
    /// Every route name seen, shared by its label sets (routes are few: templates).
    routes: RwLock<HashSet<Arc<str>>>,
}

/// Running totals of cache lookups (as the cache counts them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheFigures {
    pub hits: u64,
    pub misses: u64,
    /// Reads answered from the store because the cache failed.
    pub fallbacks: u64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn histogram() -> Histogram {
    // 1 ms .. ~33 s
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("verdict");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        let request_seconds =
            Family::<RouteLabels, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            request_seconds.clone(),
        );
        let events_ingested = Counter::default();
        registry.register(
            "events_ingested",
            "Raw events accepted and stored",
            events_ingested.clone(),
        );
        let events_rejected = Family::<Labels, Counter>::default();
        registry.register(
            "events_rejected",
            "Raw events not stored, by reason",
            events_rejected.clone(),
        );
        let job_runs = Family::<Labels, Counter>::default();
        registry.register("job_runs", "Job runs by job and outcome", job_runs.clone());
        let job_seconds =
            Family::<Labels, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        registry.register(
            "job_run_duration_seconds",
            "Job run durations by job",
            job_seconds.clone(),
        );
        let aggregation_lag = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "aggregation_lag_seconds",
            "Age of the oldest raw event not yet aggregated (0 when caught up)",
            aggregation_lag.clone(),
        );
        let webhook_attempts = Family::<Labels, Counter>::default();
        registry.register(
            "webhook_attempts",
            "Webhook delivery attempts by outcome",
            webhook_attempts.clone(),
        );
        let cache = Family::<Labels, Counter>::default();
        registry.register(
            "cache_lookups",
            "Winner snapshot lookups by result (hit, miss, fallback to the store)",
            cache.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                requests,
                request_seconds,
                events_ingested,
                events_rejected,
                rejection_reasons: RwLock::default(),
                job_runs,
                job_seconds,
                aggregation_lag,
                webhook_attempts,
                cache,
                cache_seen: Mutex::new(CacheFigures::default()),
                routes: RwLock::default(),
            }),
        }
    }

    /// One HTTP request answered. `route` is the matched route template, never the raw path
    /// (bounded label values).
    pub fn request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let route = self.route(route);
        self.inner
            .request_seconds
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .observe(seconds);
        self.inner
            .requests
            .get_or_create(&RequestLabels {
                route,
                method: method_label(method),
                status,
            })
            .inc();
    }

    /// The shared name of `route`.
    fn route(&self, route: &str) -> Arc<str> {
        let known = self.inner.routes.read().unwrap_or_else(|p| p.into_inner());
        if let Some(name) = known.get(route) {
            return name.clone();
        }
        drop(known);
        let mut known = self.inner.routes.write().unwrap_or_else(|p| p.into_inner());
        if let Some(name) = known.get(route) {
            return name.clone();
        }
        let name = Arc::<str>::from(route);
        known.insert(name.clone());
        name
    }

    pub fn events_ingested(&self, n: u64) {
        self.inner.events_ingested.inc_by(n);
    }

    /// `reason`: `duplicate`, `not_in_experiment`, `variant_mismatch`, `invalid`, …
    pub fn events_rejected(&self, reason: &str, n: u64) {
        if n > 0 {
            self.inner
                .events_rejected
                .get_or_create(&vec![("reason", reason.to_owned())])
                .inc_by(n);
            let known = self
                .inner
                .rejection_reasons
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(reason);
            if !known {
                self.inner
                    .rejection_reasons
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(reason.to_owned());
            }
        }
    }

    /// Raw events this process rejected since it started, by reason (the
    /// `verdict_events_rejected_total` counters), in the order of the reasons' names.
    pub fn events_rejected_by_reason(&self) -> Vec<(String, u64)> {
        let reasons = self
            .inner
            .rejection_reasons
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        reasons
            .into_iter()
            .map(|reason| {
                let n = self
                    .inner
                    .events_rejected
                    .get(&vec![("reason", reason.clone())])
                    .map_or(0, |c| c.get());
                (reason, n)
            })
            .collect()
    }

    pub fn job_run(&self, job: &str, outcome: &str, seconds: f64) {
        self.inner
            .job_runs
            .get_or_create(&vec![
                ("job", job.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
        self.inner
            .job_seconds
            .get_or_create(&vec![("job", job.to_owned())])
            .observe(seconds);
    }

    /// `outcome`: `delivered`, `retried`, `failed`, …
    pub fn webhook_attempts(&self, outcome: &str, n: u64) {
        if n > 0 {
            self.inner
                .webhook_attempts
                .get_or_create(&vec![("outcome", outcome.to_owned())])
                .inc_by(n);
        }
    }

    pub fn set_aggregation_lag(&self, seconds: f64) {
        self.inner.aggregation_lag.set(seconds.max(0.0));
    }

    /// Bring the cache counters up to the cache's running totals `now`.
    pub fn observe_cache(&self, now: CacheFigures) {
        let mut seen = self
            .inner
            .cache_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (result, total, before) in [
            ("hit", now.hits, seen.hits),
            ("miss", now.misses, seen.misses),
            ("fallback", now.fallbacks, seen.fallbacks),
        ] {
            let counter = self
                .inner
                .cache
                .get_or_create(&vec![("result", result.to_owned())]);
            counter.inc_by(total.saturating_sub(before));
        }
        *seen = now;
    }

    /// The whole registry in the OpenMetrics text format (which Prometheus scrapes).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.inner.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("valid text format");
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
    }

    #[test]
    fn counters_render_in_the_text_format_and_move() {
        let m = Metrics::new();
        m.request("/v1/events", "POST", 202, 0.004);
        m.request("/v1/events", "POST", 202, 0.002);
        m.events_ingested(500);
        m.events_rejected("duplicate", 3);
        m.job_run("aggregate", "succeeded", 0.2);
        m.webhook_attempts("delivered", 2);
        m.set_aggregation_lag(12.5);
        m.observe_cache(CacheFigures {
            hits: 10,
            misses: 2,
            fallbacks: 0,
        });
        m.observe_cache(CacheFigures {
            hits: 15,
            misses: 2,
            fallbacks: 1,
        });
        let text = m.render();
        let at = |name, labels: &[(&str, &str)]| sample(&text, name, labels);
        assert_eq!(
            at(
                "verdict_http_requests_total",
                &[("route", "/v1/events"), ("status", "202")]
            ),
            Some(2.0)
        );
        assert_eq!(at("verdict_events_ingested_total", &[]), Some(500.0));
        assert_eq!(
            at("verdict_events_rejected_total", &[("reason", "duplicate")]),
            Some(3.0)
        );
        m.events_rejected("not_in_experiment", 1);
        m.events_rejected("duplicate", 2);
        m.events_rejected("invalid_event", 0);
        assert_eq!(
            m.events_rejected_by_reason(),
            [
                ("duplicate".to_owned(), 5),
                ("not_in_experiment".to_owned(), 1)
            ]
        );
        assert_eq!(
            at(
                "verdict_job_runs_total",
                &[("job", "aggregate"), ("outcome", "succeeded")]
            ),
            Some(1.0)
        );
        assert_eq!(
            at(
                "verdict_webhook_attempts_total",
                &[("outcome", "delivered")]
            ),
            Some(2.0)
        );
        assert_eq!(at("verdict_aggregation_lag_seconds", &[]), Some(12.5));
        assert_eq!(
            at("verdict_cache_lookups_total", &[("result", "hit")]),
            Some(15.0)
        );
        assert_eq!(
            at("verdict_cache_lookups_total", &[("result", "fallback")]),
            Some(1.0)
        );
    }
}
