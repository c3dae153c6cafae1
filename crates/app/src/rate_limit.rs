//! Per-key token buckets for event ingestion.
//!
//! Each API key gets `burst` tokens refilled at `per_second`; an ingestion request costs one
//! token per event. Refused requests learn how long to wait (`Retry-After`). In-process:
//! with several replicas each enforces the limit on the traffic it receives.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_second == 0` disables limiting.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(per_second)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The largest cost a single request can ever be granted (the burst), when limiting.
    pub fn max_cost(&self) -> Option<usize> {
        (self.per_second > 0.0).then_some(self.burst as usize)
    }

    /// Take `cost` tokens for `key`, or say how many whole seconds to wait.
    pub fn try_take(&self, key: &str, cost: usize) -> Result<(), u64> {
        self.try_take_at(key, cost, Instant::now())
    }

    fn try_take_at(&self, key: &str, cost: usize, now: Instant) -> Result<(), u64> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let cost = cost as f64;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = buckets.entry(key.to_owned()).or_insert((self.burst, now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * self.per_second).min(self.burst);
        *last = now;
        if *tokens >= cost {
            *tokens -= cost;
            Ok(())
        } else {
            let missing = cost.min(self.burst) - *tokens;
            Err((missing / self.per_second).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_over_time() {
        let rl = RateLimiter::new(10, 20);
        let t0 = Instant::now();
        assert!(rl.try_take_at("k", 20, t0).is_ok());
        assert_eq!(rl.try_take_at("k", 5, t0), Err(1));
        assert!(
            rl.try_take_at("other", 5, t0).is_ok(),
            "keys are independent"
        );
        assert!(
            rl.try_take_at("k", 5, t0 + Duration::from_millis(500))
                .is_ok()
        );
        assert_eq!(
            rl.try_take_at("k", 20, t0 + Duration::from_millis(500)),
            Err(2)
        );
    }

    #[test]
    fn zero_disables_the_limit() {
        let rl = RateLimiter::new(0, 0);
        assert!(rl.try_take("k", 1_000_000).is_ok());
    }
}
