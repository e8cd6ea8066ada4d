//! When to try a failed delivery again: exponential backoff with equal
//! jitter that never goes below `min_backoff_ms`, bounded by the retry
//! window and attempt count.

use std::time::Duration;

use hookline_sink_api::RetryClass;
use rand::Rng;

use crate::settings::RetrySettings;

/// What to do with a delivery after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NextStep {
    /// Try again after this delay.
    RetryIn(Duration),
    /// Split the batch and send the halves now.
    Split,
    /// Give up: dead-letter with this reason.
    GiveUp(String),
}

/// Decides the next step.
///
/// `attempts` counts attempts so far (including the failed one, unless it
/// was a throttle, which does not count); `failures` counts every failed
/// try, throttles included, so the backoff grows for a target that keeps
/// throttling; `age` is the time since the batch was formed.
pub(crate) fn next_step(
    class: RetryClass,
    policy: &RetrySettings,
    attempts: u32,
    failures: u32,
    age: Duration,
    rng: &mut impl Rng,
) -> NextStep {
    let exponent = attempts.max(failures);
    let window = Duration::from_millis(policy.max_age_ms);
    let delay = match class {
        RetryClass::Final => {
            return NextStep::GiveUp("the target refused the batch (not retryable)".into());
        }
        RetryClass::Split => return NextStep::Split,
        // A wait shorter than the policy's floor (`Retry-After: 0`, or a
        // date in the past) would retry in a tight loop: back off instead
        // (the backoff is never below the floor).
        RetryClass::RetryAfter(wait) if wait < Duration::from_millis(policy.min_backoff_ms) => {
            backoff(exponent, policy, rng)
        }
        RetryClass::RetryAfter(wait) => wait.min(Duration::from_millis(policy.max_backoff_ms)),
        RetryClass::Retry { at_least } => {
            if policy.max_attempts > 0 && attempts >= policy.max_attempts {
                return NextStep::GiveUp(format!("gave up after {attempts} attempts"));
            }
            let asked = at_least
                .unwrap_or_default()
                .min(Duration::from_millis(policy.max_backoff_ms));
            backoff(exponent, policy, rng).max(asked)
        }
    };
    if age + delay > window {
        return NextStep::GiveUp(format!(
            "retry window of {} s exhausted after {attempts} attempts",
            window.as_secs()
        ));
    }
    NextStep::RetryIn(delay)
}

/// Equal jitter with a floor: uniform in `[max(min, cap / 2), cap]`, where
/// `cap = min(max, min * 2^attempts)`.
///
/// `min_backoff_ms` is a floor, as users read it: no draw is below it
/// (the first retry waits between `min` and `2 * min`). The lower half of
/// the range grows with the cap, so retries of a batch still spread out,
/// and the upper half is random, so many batches failing together do not
/// retry together. Settings validation keeps `min <= max`; were it not so,
/// `max` would win.
pub(crate) fn backoff(attempts: u32, policy: &RetrySettings, rng: &mut impl Rng) -> Duration {
    let exp = attempts.min(32);
    let cap = policy
        .min_backoff_ms
        .saturating_mul(1u64 << exp)
        .min(policy.max_backoff_ms);
    let floor = (cap / 2).max(policy.min_backoff_ms).min(cap);
    Duration::from_millis(rng.random_range(floor..=cap))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::collections::HashSet;

    fn policy() -> RetrySettings {
        RetrySettings::default()
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // The ranges written out (1-2 s, 2-4 s … up to 150-300 s), not
        // recomputed with the formula under test.
        let ranges_ms = [
            (1_000, 2_000),
            (2_000, 4_000),
            (4_000, 8_000),
            (8_000, 16_000),
            (16_000, 32_000),
            (32_000, 64_000),
            (64_000, 128_000),
            (128_000, 256_000),
            (150_000, 300_000),
            (150_000, 300_000),
        ];
        let mut largest_seen = Vec::new();
        for (i, (low, high)) in ranges_ms.iter().enumerate() {
            let attempts = i as u32 + 1;
            let draws: Vec<Duration> = (0..400).map(|_| backoff(attempts, &policy(), &mut rng)).collect();
            let smallest = *draws.iter().min().unwrap();
            let largest = *draws.iter().max().unwrap();
            assert!(
                smallest >= Duration::from_millis(*low) && largest <= Duration::from_millis(*high),
                "{attempts}: {smallest:?}..{largest:?} outside {low}..{high} ms"
            );
            // The jitter spans the range: draws land in its bottom and top tenths.
            let tenth = (high - low) / 10;
            assert!(
                smallest < Duration::from_millis(low + tenth) && largest > Duration::from_millis(high - tenth),
                "{attempts}: only {smallest:?}..{largest:?}"
            );
            largest_seen.push(largest);
        }
        // Growth: each bound until the cap is above the previous one's.
        for pair in largest_seen[..9].windows(2) {
            assert!(pair[1] > pair[0], "no growth: {largest_seen:?}");
        }
        assert!(backoff(1000, &policy(), &mut rng) <= Duration::from_secs(300));
    }

    /// `min_backoff_ms` is a floor: whatever the attempt, no draw is below
    /// it or above its cap, and the draws differ (it is jitter, not a
    /// constant).
    #[test]
    fn min_backoff_is_a_floor_for_every_draw() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        // The settings of the report: `retry_in_ms=5` was logged with these.
        let tight = RetrySettings {
            min_backoff_ms: 100,
            max_backoff_ms: 5_000,
            ..policy()
        };
        // attempt → the cap, written out: min(5000, 100 * 2^attempt).
        let caps_ms = [
            (0, 100),
            (1, 200),
            (2, 400),
            (3, 800),
            (5, 3_200),
            (6, 5_000),
            (40, 5_000),
        ];
        for (attempts, cap) in caps_ms {
            let draws: Vec<u64> = (0..2_000)
                .map(|_| backoff(attempts, &tight, &mut rng).as_millis() as u64)
                .collect();
            for &draw in &draws {
                assert!(
                    (100..=cap).contains(&draw),
                    "attempt {attempts}: {draw} ms outside 100..={cap}"
                );
            }
            let distinct: HashSet<u64> = draws.iter().copied().collect();
            if cap > 100 {
                assert!(distinct.len() > 20, "attempt {attempts}: only {distinct:?}");
            }
        }
        // Every kind of retry the policy schedules keeps the floor, the
        // `Retry-After: 0` rule included.
        let classes = [
            RetryClass::Retry { at_least: None },
            RetryClass::Retry {
                at_least: Some(Duration::ZERO),
            },
            RetryClass::RetryAfter(Duration::ZERO),
            RetryClass::RetryAfter(Duration::from_millis(5)),
        ];
        for class in classes {
            for attempts in [0, 1, 2, 8] {
                for _ in 0..500 {
                    let NextStep::RetryIn(delay) =
                        next_step(class, &tight, attempts, attempts, Duration::ZERO, &mut rng)
                    else {
                        panic!("{class:?} retries")
                    };
                    assert!(
                        delay >= Duration::from_millis(100) && delay <= Duration::from_millis(5_000),
                        "{class:?} after {attempts} attempts: {delay:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_target_that_keeps_throttling_gets_a_growing_backoff() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        // A bare 429 uses up no attempt, but each failure still counts.
        let longest = (0..200)
            .filter_map(|_| {
                match next_step(
                    RetryClass::Retry { at_least: None },
                    &policy(),
                    0,
                    8,
                    Duration::ZERO,
                    &mut rng,
                ) {
                    NextStep::RetryIn(d) => Some(d),
                    _ => None,
                }
            })
            .max()
            .unwrap();
        assert!(longest > Duration::from_secs(64), "{longest:?}");
    }

    #[test]
    fn gives_up_at_max_attempts_and_window() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let limited = RetrySettings {
            max_attempts: 3,
            ..policy()
        };
        assert!(matches!(
            next_step(
                RetryClass::Retry { at_least: None },
                &limited,
                2,
                2,
                Duration::ZERO,
                &mut rng
            ),
            NextStep::RetryIn(_)
        ));
        assert!(matches!(
            next_step(
                RetryClass::Retry { at_least: None },
                &limited,
                3,
                3,
                Duration::ZERO,
                &mut rng
            ),
            NextStep::GiveUp(_)
        ));
        let day = Duration::from_millis(policy().max_age_ms);
        assert!(matches!(
            next_step(RetryClass::Retry { at_least: None }, &policy(), 1, 1, day, &mut rng),
            NextStep::GiveUp(_)
        ));
        assert!(matches!(
            next_step(RetryClass::Final, &policy(), 1, 1, Duration::ZERO, &mut rng),
            NextStep::GiveUp(_)
        ));
        assert_eq!(
            next_step(RetryClass::Split, &policy(), 1, 1, Duration::ZERO, &mut rng),
            NextStep::Split
        );
    }

    #[test]
    fn a_retryable_answers_retry_after_is_a_lower_bound() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..20 {
            let class = RetryClass::Retry {
                at_least: Some(Duration::from_secs(2)),
            };
            let NextStep::RetryIn(d) = next_step(class, &policy(), 1, 1, Duration::ZERO, &mut rng) else {
                panic!("retries")
            };
            assert!(d >= Duration::from_secs(2));
        }
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let wait = next_step(
            RetryClass::RetryAfter(Duration::from_secs(3)),
            &policy(),
            100,
            100,
            Duration::ZERO,
            &mut rng,
        );
        assert_eq!(wait, NextStep::RetryIn(Duration::from_secs(3)));
        let capped = next_step(
            RetryClass::RetryAfter(Duration::from_secs(9999)),
            &policy(),
            1,
            1,
            Duration::ZERO,
            &mut rng,
        );
        assert_eq!(capped, NextStep::RetryIn(Duration::from_secs(300)));
        // Retry-After: 0 (or a date in the past) backs off, never below the floor.
        for attempts in [0, 1, 5] {
            let NextStep::RetryIn(d) = next_step(
                RetryClass::RetryAfter(Duration::ZERO),
                &policy(),
                attempts,
                attempts,
                Duration::ZERO,
                &mut rng,
            ) else {
                panic!("retries")
            };
            assert!(d >= Duration::from_secs(1), "{d:?} after {attempts} attempts");
        }
    }
}
