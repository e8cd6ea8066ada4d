//! A test filter that misbehaves as its config's `mode` asks, to check that
//! the host contains every kind of failure.

use hookline_filter::{Batch, Context, Event, Filter, Verdict};
use serde::Deserialize;

/// `{"mode": "...", "until_ms": n}`
#[derive(Debug, Default, Deserialize)]
pub struct Config {
    /// `keep`, `loop`, `memory`, `panic`, `err`, `select-out-of-range`,
    /// `replace-empty-channel`, `reject-config`, `err-until`, `print`,
    /// `chatty` (20 KiB of stdout per call), `sleep` (a 10 s sleep),
    /// `replace-aliased` (3000 events sharing one 1 MiB name).
    /// Default `keep`.
    #[serde(default = "keep")]
    pub mode: String,
    /// For `err-until`: fail while the wall clock is before this (ms).
    #[serde(default)]
    pub until_ms: u64,
}

fn keep() -> String {
    "keep".to_string()
}

/// The filter.
pub struct Hostile;

impl Filter for Hostile {
    type Config = Config;

    fn validate_config(config: &Config) -> Result<(), String> {
        match config.mode.as_str() {
            "reject-config" => Err("this config is rejected on purpose".to_string()),
            _ => Ok(()),
        }
    }

    fn filter(config: &Config, _ctx: &Context, batch: &Batch) -> Result<Verdict, String> {
        match config.mode.as_str() {
            "keep" => Ok(Verdict::Keep),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "memory" => {
                // Try to grow to 4 GiB, 16 MiB at a time.
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                for _ in 0..256 {
                    hoard.push(vec![1u8; 16 << 20]);
                }
                Ok(Verdict::Drop(format!("held {} chunks", hoard.len())))
            }
            "panic" => panic!("hostile filter panics on purpose"),
            "err" => Err("hostile filter returns an error on purpose".to_string()),
            "select-out-of-range" => Ok(Verdict::Select(vec![0, 99])),
            "replace-empty-channel" => Ok(Verdict::Replace(Batch::new(vec![Event::new("channel_occupied", "")]))),
            "err-until" => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                if now < config.until_ms {
                    Err(format!("not yet: {} ms to go", config.until_ms - now))
                } else {
                    Ok(Verdict::Keep)
                }
            }
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(10));
                Ok(Verdict::Keep)
            }
            "chatty" => {
                // 20 KiB of stdout per call: more than the old per-instance
                // capture held over a few calls, and more lines (200) than a
                // call may log.
                for line in 0..200 {
                    println!("chatty line {line:03}: {}", "x".repeat(80));
                }
                Ok(Verdict::Keep)
            }
            "print" => {
                println!("hostile filter saw {} events", batch.events.len());
                hookline_filter::log(hookline_filter::Level::Info, "hello from the filter log");
                Ok(Verdict::Keep)
            }
            // Opens WASI resources and never closes them.
            "leak-pollables" => {
                #[cfg(target_arch = "wasm32")]
                for _ in 0..200 {
                    std::mem::forget(wasip2::clocks::monotonic_clock::subscribe_duration(1));
                }
                Ok(Verdict::Keep)
            }
            // 3000 events whose names all point at the same 1 MiB string:
            // 1 MiB of guest memory that a host copying naively turns into
            // 3 GiB.
            "replace-aliased" => Ok(Verdict::Replace(Batch::new(aliased_events(3000, 1 << 20)))),
            other => Err(format!("unknown mode {other:?}")),
        }
    }
}

/// `count` events whose names share one buffer of `len` bytes.
fn aliased_events(count: usize, len: usize) -> Vec<Event> {
    let mut shared = std::mem::ManuallyDrop::new("n".repeat(len));
    let (ptr, cap) = (shared.as_mut_ptr(), shared.capacity());
    (0..count)
        .map(|_| {
            // SAFETY: none. Every name aliases one allocation on purpose; the
            // strings are only handed to the host (never read or written
            // here), and the instance is thrown away after the call fails.
            #[allow(unsafe_code)]
            let name = unsafe { String::from_raw_parts(ptr, len, cap) };
            Event::new(name, "c")
        })
        .collect()
}

hookline_filter::export_filter!(Hostile);
