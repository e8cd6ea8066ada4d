//! A webhook's circuit breaker: after `circuit_failures` consecutive failed
//! attempts that say the endpoint is unwell (network errors, timeouts, 5xx),
//! the lane starts nothing for a while (no sockets, no CPU spent on a dead
//! endpoint), then lets one attempt through as a probe. The probe's success
//! closes the circuit; its failure reopens it for twice as long, up to a
//! bound. Waiting deliveries keep their place meanwhile.

use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Instant;

use crate::activity::Circuit;
use crate::settings::DeliverySettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    /// One probe may be in flight.
    HalfOpen,
}

/// How an attempt ended, as far as the breaker cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    /// The endpoint answered (success, or a refusal that is final or a
    /// throttle): it is alive.
    Alive,
    /// It failed in a way that says it is unwell.
    Unwell,
    /// It asked us to wait (429): alive, but not a success either, so it
    /// neither closes the circuit nor counts towards opening it.
    Throttled,
}

/// One lane's breaker.
#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    first_open: Duration,
    max_open: Duration,
    open_for: Duration,
    failures: u32,
    state: State,
    gauge: Gauge,
    label: String,
}

impl Breaker {
    /// A closed breaker reporting its state on `gauge`; `label` names the
    /// webhook in logs.
    pub(crate) fn new(settings: &DeliverySettings, gauge: Gauge, label: String) -> Self {
        let first_open = Duration::from_millis(settings.circuit_open_ms.max(1));
        gauge.set(0);
        Self {
            threshold: settings.circuit_failures,
            first_open,
            max_open: Duration::from_millis(settings.circuit_max_open_ms).max(first_open),
            open_for: first_open,
            failures: 0,
            state: State::Closed,
            gauge,
            label,
        }
    }

    /// Whether an attempt may start now, with `in_flight` attempts running.
    pub(crate) fn allows(&mut self, in_flight: usize, now: Instant) -> bool {
        match self.state {
            State::Closed => true,
            State::Open { until } if now >= until => {
                self.set(State::HalfOpen);
                tracing::info!(webhook = %self.label, "circuit half-open: probing with one attempt");
                in_flight == 0
            }
            State::Open { .. } => false,
            State::HalfOpen => in_flight == 0,
        }
    }

    /// When an open circuit lets a probe through.
    pub(crate) fn reopens_at(&self) -> Option<Instant> {
        match self.state {
            State::Open { until } => Some(until),
            _ => None,
        }
    }

    /// Takes an attempt's outcome.
    pub(crate) fn record(&mut self, health: Health, now: Instant) {
        match health {
            Health::Alive => {
                if self.state != State::Closed {
                    tracing::info!(webhook = %self.label, "circuit closed: the endpoint answers again");
                }
                self.failures = 0;
                self.open_for = self.first_open;
                self.set(State::Closed);
            }
            Health::Throttled => {}
            Health::Unwell => {
                self.failures = self.failures.saturating_add(1);
                let trip = match self.state {
                    State::HalfOpen => true,
                    State::Closed => self.threshold > 0 && self.failures >= self.threshold,
                    State::Open { .. } => false,
                };
                if trip {
                    tracing::warn!(webhook = %self.label, failures = self.failures, open_ms = self.open_for.as_millis() as u64,
                        "circuit open: pausing deliveries to this webhook, then probing");
                    self.set(State::Open {
                        until: now + self.open_for,
                    });
                    self.open_for = (self.open_for * 2).min(self.max_open);
                }
            }
        }
    }

    fn set(&mut self, state: State) {
        self.state = state;
        self.gauge.set(self.circuit() as i64);
    }

    /// The state as the admin API and the gauge give it.
    pub(crate) fn circuit(&self) -> Circuit {
        match self.state {
            State::Closed => Circuit::Closed,
            State::HalfOpen => Circuit::HalfOpen,
            State::Open { .. } => Circuit::Open,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        let settings = DeliverySettings {
            circuit_failures: 3,
            circuit_open_ms: 100,
            circuit_max_open_ms: 250,
            ..DeliverySettings::default()
        };
        Breaker::new(&settings, Gauge::default(), "w".into())
    }

    #[test]
    fn opens_after_consecutive_failures_probes_once_and_backs_off() {
        let mut b = breaker();
        let t0 = Instant::now();
        for _ in 0..2 {
            b.record(Health::Unwell, t0);
        }
        assert!(b.allows(5, t0), "still closed after two failures");
        b.record(Health::Alive, t0);
        for _ in 0..3 {
            b.record(Health::Unwell, t0);
        }
        assert_eq!(b.gauge.get(), 2);
        assert!(!b.allows(0, t0 + Duration::from_millis(99)));
        assert_eq!(b.reopens_at(), Some(t0 + Duration::from_millis(100)));
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.allows(0, t1), "one probe");
        assert!(!b.allows(1, t1), "only one");
        assert_eq!(b.gauge.get(), 1);
        b.record(Health::Unwell, t1);
        assert_eq!(b.reopens_at(), Some(t1 + Duration::from_millis(200)), "doubled");
        let t2 = t1 + Duration::from_millis(200);
        assert!(b.allows(0, t2));
        b.record(Health::Unwell, t2);
        assert_eq!(b.reopens_at(), Some(t2 + Duration::from_millis(250)), "capped");
        let t3 = t2 + Duration::from_millis(250);
        assert!(b.allows(0, t3));
        b.record(Health::Alive, t3);
        assert_eq!(b.gauge.get(), 0);
        assert!(b.allows(7, t3));
    }

    #[test]
    fn zero_failures_turns_it_off() {
        let settings = DeliverySettings {
            circuit_failures: 0,
            ..DeliverySettings::default()
        };
        let mut b = Breaker::new(&settings, Gauge::default(), "w".into());
        for _ in 0..100 {
            b.record(Health::Unwell, Instant::now());
        }
        assert!(b.allows(3, Instant::now()));
    }
}
