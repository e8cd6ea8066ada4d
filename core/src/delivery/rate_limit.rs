//! A webhook's `rate_limit`: a token bucket the lane takes one token from
//! per attempt. Waiting for a token is not an attempt and not a failure.
//!
//! The lane that holds a webhook's deliveries is the only one sending them
//! (on a shared store, the node owning the app's partition), so the limit
//! holds for the whole cluster without any coordination.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::RateLimit;

/// The lane's bucket: `burst` tokens at most, refilled at `per_second`.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            limit,
            tokens: f64::from(limit.burst),
            refilled_at: now,
        }
    }

    /// Follows a reloaded config, keeping what is in the bucket (capped at
    /// the new burst): a reload must not hand out a fresh burst.
    pub(crate) fn follow(&mut self, limit: RateLimit, now: Instant) {
        if self.limit != limit {
            self.refill(now);
            self.limit = limit;
            self.tokens = self.tokens.min(f64::from(limit.burst));
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.limit.per_second).min(f64::from(self.limit.burst));
        self.refilled_at = now;
    }

    /// Puts back a token taken for an attempt that did not start.
    pub(crate) fn refund(&mut self) {
        self.tokens = (self.tokens + 1.0).min(f64::from(self.limit.burst));
    }

    /// Takes a token, or says when the next one will be there.
    pub(crate) fn take(&mut self, now: Instant) -> Result<(), Instant> {
        self.refill(now);
        // A token short by a rounding error is there: waking at the time
        // computed below must find it.
        if self.tokens >= 1.0 - 1e-6 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            return Ok(());
        }
        let missing = 1.0 - self.tokens;
        Err(now + Duration::from_secs_f64(missing / self.limit.per_second).max(Duration::from_micros(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_second: f64, burst: u64) -> RateLimit {
        RateLimit::new(per_second, Some(burst)).unwrap()
    }

    #[test]
    fn a_full_bucket_gives_its_burst_then_one_token_per_interval() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(limit(50.0, 10), start);
        for _ in 0..10 {
            assert_eq!(bucket.take(start), Ok(()));
        }
        let next = bucket.take(start).unwrap_err();
        assert_eq!(next - start, Duration::from_millis(20));
        assert!(bucket.take(next - Duration::from_micros(1)).is_err());
        assert_eq!(bucket.take(next), Ok(()));
        // Ten seconds of steady demand after the burst: 500 more tokens.
        let mut now = next;
        let mut taken = 0;
        while now <= next + Duration::from_secs(10) {
            match bucket.take(now) {
                Ok(()) => taken += 1,
                Err(at) => now = at,
            }
        }
        assert_eq!(taken, 500);
    }

    #[test]
    fn a_quiet_spell_refills_no_more_than_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(limit(5.0, 3), start);
        for _ in 0..3 {
            bucket.take(start).unwrap();
        }
        let later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(bucket.take(later), Ok(()));
        }
        assert!(bucket.take(later).is_err());
    }

    #[test]
    fn a_reload_keeps_what_the_bucket_holds() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(limit(10.0, 10), start);
        for _ in 0..10 {
            bucket.take(start).unwrap();
        }
        bucket.follow(limit(10.0, 20), start);
        assert!(bucket.take(start).is_err(), "a reload handed out a fresh burst");
        bucket.follow(limit(1.0, 2), start + Duration::from_secs(5));
        // Five seconds at the old rate filled it, capped at the new burst.
        let at = start + Duration::from_secs(5);
        assert_eq!(bucket.take(at), Ok(()));
        assert_eq!(bucket.take(at), Ok(()));
        assert_eq!(bucket.take(at).unwrap_err() - at, Duration::from_secs(1));
    }
}
