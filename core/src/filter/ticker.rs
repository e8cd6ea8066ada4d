//! The clock behind filter deadlines: a thread that advances the engine's
//! epoch while any filter runs, and sleeps while none does.
//!
//! A call's deadline is a number of epochs from its start (wasmtime's epoch
//! interruption), so the epoch only has to move while guest code runs. A
//! ticker that never stopped would wake the process a thousand times a
//! second for nothing: about 1 % of a core for an idle daemon.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::Thread;
use std::time::Duration;

use wasmtime::{Engine, EngineWeak};

/// How often the epoch advances while filters run: a deadline's resolution.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Ticks without a running call before the ticker sleeps (about a second),
/// so a steady stream of calls never pays for waking it.
const IDLE_TICKS_BEFORE_SLEEP: u32 = 1000;

/// Handle to the ticker thread; calls hold a [`Ticking`] while guest code may run.
#[derive(Debug)]
pub(crate) struct DeadlineTicker {
    thread: Thread,
    state: Arc<TickerState>,
}

#[derive(Debug, Default)]
struct TickerState {
    running_calls: AtomicUsize,
    /// A call started since the ticker last looked: calls shorter than a
    /// tick would otherwise go unseen.
    called: AtomicBool,
    asleep: AtomicBool,
    stopped: AtomicBool,
}

/// Keeps the epoch advancing while alive.
#[must_use = "the epoch only advances while the guard is held"]
pub(crate) struct Ticking<'a>(&'a DeadlineTicker);

impl DeadlineTicker {
    /// Starts the thread; it ends when the ticker is dropped (or, while it
    /// is awake, once `engine` is gone).
    pub(crate) fn start(engine: &Engine) -> std::io::Result<Self> {
        let state = Arc::new(TickerState::default());
        let engine = engine.weak();
        let thread = std::thread::Builder::new()
            .name("hookline-filter-epoch".to_string())
            .spawn({
                let state = state.clone();
                move || tick(&engine, &state)
            })?
            .thread()
            .clone();
        Ok(Self { thread, state })
    }

    /// Makes the epoch advance until the returned guard is dropped.
    pub(crate) fn hold(&self) -> Ticking<'_> {
        // Counted before the wake-up: a ticker that saw no call and is about
        // to sleep then either sees this count or gets this unpark's token.
        self.state.running_calls.fetch_add(1, Ordering::SeqCst);
        self.state.called.store(true, Ordering::SeqCst);
        self.thread.unpark();
        Ticking(self)
    }

    /// The ticker is asleep (no call for about a second).
    #[cfg(test)]
    pub(crate) fn is_asleep(&self) -> bool {
        self.state.asleep.load(Ordering::SeqCst)
    }
}

impl Drop for DeadlineTicker {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        self.thread.unpark();
    }
}

impl Drop for Ticking<'_> {
    fn drop(&mut self) {
        self.0.state.running_calls.fetch_sub(1, Ordering::SeqCst);
    }
}

fn tick(engine: &EngineWeak, state: &TickerState) {
    let mut idle_ticks = 0u32;
    while !state.stopped.load(Ordering::SeqCst) {
        let Some(engine) = engine.upgrade() else {
            return;
        };
        let called = state.called.swap(false, Ordering::SeqCst);
        if called || state.running_calls.load(Ordering::SeqCst) > 0 {
            idle_ticks = 0;
        } else {
            idle_ticks += 1;
        }
        if idle_ticks > IDLE_TICKS_BEFORE_SLEEP {
            drop(engine);
            state.asleep.store(true, Ordering::SeqCst);
            // `park` also returns for tokens left by earlier calls and
            // spuriously: sleep until a call runs or the ticker is dropped.
            while state.running_calls.load(Ordering::SeqCst) == 0 && !state.stopped.load(Ordering::SeqCst) {
                std::thread::park();
            }
            state.asleep.store(false, Ordering::SeqCst);
            idle_ticks = 0;
            continue;
        }
        engine.increment_epoch();
        drop(engine);
        std::thread::sleep(EPOCH_TICK);
    }
}

#[cfg(test)]
mod tests {
    use wasmtime::{Config, Instance, Module, Store, Trap};

    use super::*;

    #[test]
    fn a_call_after_the_ticker_fell_asleep_still_meets_its_deadline() {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).unwrap();
        let ticker = DeadlineTicker::start(&engine).unwrap();
        // Waits for the state change the test is about; bounded so a broken
        // ticker fails the test instead of hanging it.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !ticker.is_asleep() {
            assert!(
                std::time::Instant::now() < deadline,
                "the ticker never fell asleep without calls"
            );
            std::thread::sleep(Duration::from_millis(10));
        }

        let module = Module::new(&engine, r#"(module (func (export "spin") (loop (br 0))))"#).unwrap();
        let mut store = Store::new(&engine, ());
        store.set_epoch_deadline(5);
        store.epoch_deadline_trap();
        let spin = Instance::new(&mut store, &module, &[])
            .unwrap()
            .get_typed_func::<(), ()>(&mut store, "spin")
            .unwrap();
        let (done, outcome) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ticking = ticker.hold();
            done.send(spin.call(&mut store, ())).ok();
        });
        let error = outcome
            .recv_timeout(Duration::from_secs(30))
            .expect("the call ran on without a deadline: the ticker did not wake")
            .unwrap_err();
        assert_eq!(error.downcast_ref::<Trap>(), Some(&Trap::Interrupt), "{error:#}");
    }
}
