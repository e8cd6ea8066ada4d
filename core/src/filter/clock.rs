//! `wasi:clocks/monotonic-clock` for filters, with sleeps that end at the
//! call's deadline.
//!
//! The CPU deadline (epoch interruption) stops guest code, not the host: a
//! guest that sleeps (subscribes to a duration and polls it) waits inside
//! the host, where no epoch check runs, and could hold its batch for as long
//! as it liked. Here every sleep ends by the deadline at the latest, and a
//! sleep cut short by it marks the call as overrun, whatever the guest
//! does next (the epoch alone may lag the wall clock by a few ticks).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{HasData, Resource, ResourceTable};
use wasmtime_wasi::clocks::{HostMonotonicClock, MonotonicClock};
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;
use wasmtime_wasi::p2::{DynPollable, Pollable, subscribe};

/// One instance's monotonic clock and the running call's deadline.
pub(crate) struct CallClock {
    clock: MonotonicClock,
    /// When the running call's CPU deadline passes, in wall time.
    deadline: tokio::time::Instant,
    /// A sleep of the running call was cut short at the deadline.
    overran: Arc<AtomicBool>,
}

impl CallClock {
    /// A clock whose sleeps end at most `budget` from now.
    pub(crate) fn new(budget: Duration) -> Self {
        let mut clock = Self {
            clock: MonotonicClock::new(),
            deadline: tokio::time::Instant::now(),
            overran: Arc::default(),
        };
        clock.start_call(budget);
        clock
    }

    /// A call starts: its sleeps end at most `budget` from now.
    pub(crate) fn start_call(&mut self, budget: Duration) {
        let now = tokio::time::Instant::now();
        self.deadline = now.checked_add(budget).unwrap_or(now);
        // A fresh flag: a pooled instance may keep a sleep from an earlier
        // call and poll it in this one.
        self.overran = Arc::default();
    }

    /// The running call slept until its deadline.
    pub(crate) fn overran(&self) -> bool {
        self.overran.load(Ordering::SeqCst)
    }
}

/// What the linker hands the monotonic-clock host functions.
pub(crate) struct CallClockView<'a> {
    pub(crate) clock: &'a mut CallClock,
    pub(crate) table: &'a mut ResourceTable,
}

/// Marker for linking [`CallClockView`].
pub(crate) struct CallClockData;

impl HasData for CallClockData {
    type Data<'a> = CallClockView<'a>;
}

impl CallClockView<'_> {
    fn sleep(&mut self, duration: Duration) -> wasmtime::Result<Resource<DynPollable>> {
        let wanted = tokio::time::Instant::now().checked_add(duration);
        let sleep = match wanted {
            // A zero timeout is a non-blocking poll, not a wait.
            _ if duration.is_zero() => Sleep::Now { yielded: false },
            Some(until) if until < self.clock.deadline => Sleep::Until { until, cut_short: None },
            _ => Sleep::Until {
                until: self.clock.deadline,
                cut_short: Some(self.clock.overran.clone()),
            },
        };
        let sleep = self.table.push(sleep)?;
        subscribe(self.table, sleep)
    }
}

impl monotonic_clock::Host for CallClockView<'_> {
    fn now(&mut self) -> wasmtime::Result<monotonic_clock::Instant> {
        Ok(self.clock.clock.now())
    }

    fn resolution(&mut self) -> wasmtime::Result<monotonic_clock::Duration> {
        Ok(self.clock.clock.resolution())
    }

    fn subscribe_instant(&mut self, when: monotonic_clock::Instant) -> wasmtime::Result<Resource<DynPollable>> {
        let now = self.clock.clock.now();
        self.sleep(Duration::from_nanos(when.saturating_sub(now)))
    }

    fn subscribe_duration(&mut self, duration: monotonic_clock::Duration) -> wasmtime::Result<Resource<DynPollable>> {
        self.sleep(Duration::from_nanos(duration))
    }
}

enum Sleep {
    /// Ready at once (after one yield to tokio, as wasmtime-wasi does, so
    /// a guest polling in a loop cannot starve the I/O driver).
    Now { yielded: bool },
    Until {
        until: tokio::time::Instant,
        /// Set once the sleep ends, when it ends at the call's deadline.
        cut_short: Option<Arc<AtomicBool>>,
    },
}

#[wasmtime_wasi::async_trait]
impl Pollable for Sleep {
    async fn ready(&mut self) {
        match self {
            Sleep::Now { yielded: true } => {}
            Sleep::Now { yielded } => {
                *yielded = true;
                tokio::task::yield_now().await;
            }
            Sleep::Until { until, cut_short } => {
                tokio::time::sleep_until(*until).await;
                if let Some(overran) = cut_short {
                    overran.store(true, Ordering::SeqCst);
                }
            }
        }
    }
}
