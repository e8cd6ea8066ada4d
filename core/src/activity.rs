//! What the daemon has been doing lately, for the admin API and the status
//! page: per-second and per-minute counts over the last hour, and each
//! webhook's last outcomes.
//!
//! Counts are kept in two fixed rings (60 seconds, 60 minutes), so a
//! webhook's history costs a few hundred bytes however busy it is, and
//! recording an outcome is a lock and two increments.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

use serde::Serialize;

/// Counts over the last minute (per second) and the last hour (per minute).
#[derive(Debug, Clone)]
pub(crate) struct RateWindow {
    seconds: [u32; 60],
    minutes: [u32; 60],
    /// The second (since the Unix epoch) the rings were last moved to.
    now_s: u64,
}

impl Default for RateWindow {
    fn default() -> Self {
        Self {
            seconds: [0; 60],
            minutes: [0; 60],
            now_s: 0,
        }
    }
}

impl RateWindow {
    /// Clears the buckets that fell out of the window since the last move.
    /// A clock that went back leaves the rings as they are.
    fn advance(&mut self, now_s: u64) {
        if now_s <= self.now_s {
            return;
        }
        let (before_s, before_m) = (self.now_s, self.now_s / 60);
        for s in (before_s + 1..=now_s).take(60) {
            self.seconds[(s % 60) as usize] = 0;
        }
        for m in (before_m + 1..=now_s / 60).take(60) {
            self.minutes[(m % 60) as usize] = 0;
        }
        self.now_s = now_s;
    }

    /// Counts `n` at `now_s`.
    pub(crate) fn add(&mut self, now_s: u64, n: u32) {
        self.advance(now_s);
        let s = &mut self.seconds[(now_s % 60) as usize];
        *s = s.saturating_add(n);
        let m = &mut self.minutes[((now_s / 60) % 60) as usize];
        *m = m.saturating_add(n);
    }

    /// The count of the last 60 seconds, this one included.
    pub(crate) fn last_minute(&mut self, now_s: u64) -> u64 {
        self.advance(now_s);
        self.seconds.iter().map(|&n| u64::from(n)).sum()
    }

    /// The count of this minute and the 59 before it.
    pub(crate) fn last_hour(&mut self, now_s: u64) -> u64 {
        self.advance(now_s);
        self.minutes.iter().map(|&n| u64::from(n)).sum()
    }

    /// Per-minute counts of the last hour, oldest first, this minute last.
    pub(crate) fn per_minute(&mut self, now_s: u64) -> Vec<u32> {
        self.advance(now_s);
        let this = (now_s / 60) % 60;
        (1..=60).map(|i| self.minutes[((this + i) % 60) as usize]).collect()
    }

    /// The counts as the API shows them.
    pub(crate) fn view(&mut self, now_s: u64) -> Rate {
        Rate {
            last_minute: self.last_minute(now_s),
            last_hour: self.last_hour(now_s),
        }
    }
}

/// A count over the last minute and the last hour.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub(crate) struct Rate {
    /// In the last 60 seconds.
    pub last_minute: u64,
    /// In the last 60 minutes.
    pub last_hour: u64,
}

impl std::ops::AddAssign for Rate {
    fn add_assign(&mut self, other: Self) {
        self.last_minute += other.last_minute;
        self.last_hour += other.last_hour;
    }
}

/// A [`RateWindow`] shared between threads.
#[derive(Debug, Default)]
pub(crate) struct SharedRate(Mutex<RateWindow>);

impl SharedRate {
    /// Counts `n` now.
    pub(crate) fn add(&self, n: u32) {
        self.lock().add(now_s(), n);
    }

    /// The counts now.
    pub(crate) fn view(&self) -> Rate {
        self.lock().view(now_s())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RateWindow> {
        self.0.lock().expect("rate lock is never held across a panic")
    }
}

/// The last failed attempt of a webhook.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LastError {
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
    /// The status the target answered, if it answered.
    pub status: Option<u16>,
    /// What went wrong (as the dead-letter history says it; no secrets).
    pub reason: String,
}

/// A webhook's circuit breaker state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Circuit {
    /// Delivering.
    Closed = 0,
    /// One probe may go out.
    HalfOpen = 1,
    /// Resting after failures.
    Open = 2,
}

impl Circuit {
    /// Its name, as the API gives it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Circuit::Closed => "closed",
            Circuit::HalfOpen => "half_open",
            Circuit::Open => "open",
        }
    }

    fn from_u8(n: u8) -> Self {
        match n {
            1 => Circuit::HalfOpen,
            2 => Circuit::Open,
            _ => Circuit::Closed,
        }
    }
}

/// One webhook lane's activity, written by the lane, read by the admin API.
#[derive(Debug, Default)]
pub(crate) struct WebhookActivity {
    in_flight: AtomicUsize,
    /// A [`Circuit`].
    circuit: AtomicU8,
    /// The next attempt waits for a rate-limit token.
    rate_limited: AtomicBool,
    /// Attempts that waited for a rate-limit token.
    rate_limit_waits: AtomicU64,
    outcomes: Mutex<Outcomes>,
}

#[derive(Debug, Default)]
struct Outcomes {
    last_success_ms: Option<u64>,
    last_error: Option<LastError>,
    delivered: RateWindow,
    failed: RateWindow,
}

/// A webhook's activity at one moment.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ActivityView {
    /// The circuit breaker's state.
    pub circuit: Circuit,
    /// Attempts being made now.
    pub in_flight: usize,
    /// Whether the next attempt is waiting for a rate-limit token.
    pub rate_limited: bool,
    /// Attempts that waited for a rate-limit token since the lane started.
    pub rate_limit_waits: u64,
    /// When the last batch was delivered (ms since the Unix epoch).
    pub last_success_ms: Option<u64>,
    /// The last failed attempt.
    pub last_error: Option<LastError>,
    /// Batches delivered.
    pub delivered: Rate,
    /// Attempts that failed.
    pub failed: Rate,
    /// Batches delivered per minute over the last hour, oldest first.
    pub delivered_per_minute: Vec<u32>,
    /// Failed attempts per minute over the last hour, oldest first.
    pub failed_per_minute: Vec<u32>,
}

impl ActivityView {
    /// The view of a webhook that has not delivered anything yet.
    pub(crate) fn idle() -> Self {
        WebhookActivity::default().view()
    }
}

impl WebhookActivity {
    /// The lane's attempts in flight and circuit now.
    pub(crate) fn set_lane(&self, in_flight: usize, circuit: Circuit) {
        self.in_flight.store(in_flight, Ordering::Relaxed);
        self.circuit.store(circuit as u8, Ordering::Relaxed);
    }

    /// Whether the lane's next attempt waits for a rate-limit token; `first`
    /// counts a delivery's first wait.
    pub(crate) fn set_rate_limited(&self, waiting: bool, first: bool) {
        self.rate_limited.store(waiting, Ordering::Relaxed);
        if first {
            self.rate_limit_waits.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A batch was delivered.
    pub(crate) fn delivered(&self) {
        let now = crate::delivery::now_ms();
        let mut outcomes = self.lock();
        outcomes.last_success_ms = Some(now);
        outcomes.delivered.add(now / 1000, 1);
    }

    /// An attempt failed.
    pub(crate) fn failed(&self, status: Option<u16>, reason: String) {
        let now = crate::delivery::now_ms();
        let mut outcomes = self.lock();
        outcomes.last_error = Some(LastError {
            at_ms: now,
            status,
            reason,
        });
        outcomes.failed.add(now / 1000, 1);
    }

    /// The activity now.
    pub(crate) fn view(&self) -> ActivityView {
        let now = now_s();
        let mut outcomes = self.lock();
        ActivityView {
            circuit: Circuit::from_u8(self.circuit.load(Ordering::Relaxed)),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            rate_limit_waits: self.rate_limit_waits.load(Ordering::Relaxed),
            last_success_ms: outcomes.last_success_ms,
            last_error: outcomes.last_error.clone(),
            delivered: outcomes.delivered.view(now),
            failed: outcomes.failed.view(now),
            delivered_per_minute: outcomes.delivered.per_minute(now),
            failed_per_minute: outcomes.failed.per_minute(now),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Outcomes> {
        self.outcomes
            .lock()
            .expect("outcomes lock is never held across a panic")
    }
}

fn now_s() -> u64 {
    crate::delivery::now_ms() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_leave_the_minute_after_sixty_seconds_and_the_hour_after_sixty_minutes() {
        let mut rate = RateWindow::default();
        let t = 1_700_000_000;
        rate.add(t, 2);
        rate.add(t + 30, 3);
        assert_eq!(rate.last_minute(t + 30), 5);
        assert_eq!(rate.last_minute(t + 60), 3, "the count at t left after 60 s");
        assert_eq!(rate.last_minute(t + 91), 0);
        assert_eq!(rate.last_hour(t + 91), 5, "still within the hour");
        assert_eq!(rate.last_hour(t + 3600 + 60), 0, "an hour and a minute later");
    }

    #[test]
    fn per_minute_is_oldest_first_with_this_minute_last() {
        let mut rate = RateWindow::default();
        let t = 1_700_000_000 / 60 * 60;
        rate.add(t - 120, 1);
        rate.add(t, 4);
        let minutes = rate.per_minute(t + 5);
        assert_eq!(minutes.len(), 60);
        assert_eq!(minutes[59], 4);
        assert_eq!(minutes[57], 1);
        assert_eq!(minutes.iter().sum::<u32>(), 5);
    }

    #[test]
    fn a_long_silence_clears_everything_and_a_clock_going_back_changes_nothing() {
        let mut rate = RateWindow::default();
        rate.add(1000, 7);
        assert_eq!(rate.last_hour(1000 + 86_400), 0);
        rate.add(2_000_000, 1);
        assert_eq!(rate.last_minute(1_999_990), 1, "a clock gone back keeps the counts");
    }
}
