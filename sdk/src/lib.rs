//! Write [Hookline](https://github.com/) WASM filters in a few lines of Rust.
//!
//! A filter sees each batch of Pusher webhook events before it is delivered
//! to a webhook and decides what is delivered: everything ([`Verdict::Keep`]),
//! nothing ([`Verdict::Drop`]), some events ([`Verdict::Select`]), or a new
//! batch ([`Verdict::Replace`]).
//!
//! ```
//! use hookline_filter::{Batch, Context, Filter, Verdict};
//!
//! #[derive(Default, serde::Deserialize)]
//! struct Config {
//!     prefix: String,
//! }
//!
//! struct DropPrefix;
//!
//! impl Filter for DropPrefix {
//!     type Config = Config;
//!     fn filter(config: &Config, _ctx: &Context, batch: &Batch) -> Result<Verdict, String> {
//!         Ok(batch.retain(|event| !event.channel.starts_with(&config.prefix)))
//!     }
//! }
//!
//! hookline_filter::export_filter!(DropPrefix);
//!
//! // Natively, a filter is plain Rust: test it with `cargo test`.
//! let batch = Batch::new(vec![
//!     hookline_filter::Event::new("channel_occupied", "debug-1"),
//!     hookline_filter::Event::new("channel_occupied", "room-1"),
//! ]);
//! let verdict = hookline_filter::testing::run::<DropPrefix>(r#"{"prefix":"debug-"}"#, &batch).unwrap();
//! assert_eq!(verdict, Verdict::Select(vec![1]));
//! ```
//!
//! Build for Hookline with `cargo build --release --target wasm32-wasip2`;
//! the `.wasm` in `target/wasm32-wasip2/release/` is the component to name
//! in an app file's `filters`.

use serde::de::DeserializeOwned;

/// The `serde_json` this crate is built with, so a filter can name the types
/// [`Event::data_json`] and [`Event::extra_json`] return
/// (`hookline_filter::serde_json::Value`) without a dependency of its own.
pub use serde_json;

/// One Pusher webhook event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// `channel_occupied`, `member_added`, `client_event`, …
    pub name: String,
    /// The channel.
    pub channel: String,
    /// `member_added` / `member_removed` / `client_event`: the user.
    pub user_id: Option<String>,
    /// `client_event`: the sender's socket.
    pub socket_id: Option<String>,
    /// `client_event`: the client event's own name (`client-typing`).
    pub event: Option<String>,
    /// `client_event`: the data, when it is a JSON string.
    pub data: Option<String>,
    /// `subscription_count`: the count.
    pub subscription_count: Option<u64>,
    /// Every other field (and a non-string `data`), as a JSON object text.
    pub extra: Option<String>,
}

impl Event {
    /// An event with just a name and a channel.
    pub fn new(name: impl Into<String>, channel: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            channel: channel.into(),
            ..Self::default()
        }
    }

    /// `data` parsed as JSON, when it is a JSON text.
    pub fn data_json(&self) -> Option<serde_json::Value> {
        self.data.as_deref().and_then(|d| serde_json::from_str(d).ok())
    }

    /// The `extra` fields as a JSON object (empty when there are none).
    ///
    /// ```
    /// use hookline_filter::{Event, serde_json::Value};
    ///
    /// let mut event = Event::new("client_event", "room-1");
    /// event.extra = Some(r#"{"tenant":"acme"}"#.into());
    /// assert_eq!(event.extra_json().get("tenant"), Some(&Value::from("acme")));
    /// ```
    pub fn extra_json(&self) -> serde_json::Map<String, serde_json::Value> {
        self.extra
            .as_deref()
            .and_then(|e| serde_json::from_str(e).ok())
            .unwrap_or_default()
    }
}

/// A batch of events, in the order they were accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// When the batch was formed (ms since the Unix epoch).
    pub time_ms: u64,
    /// The events.
    pub events: Vec<Event>,
}

impl Batch {
    /// A batch of these events.
    pub fn new(events: Vec<Event>) -> Self {
        Self { time_ms: 0, events }
    }

    /// Keeps the events for which `keep` is true: [`Verdict::Keep`] if that
    /// is all of them, [`Verdict::Drop`] if none, else [`Verdict::Select`].
    /// Kept events are delivered byte for byte as they arrived.
    pub fn retain(&self, mut keep: impl FnMut(&Event) -> bool) -> Verdict {
        self.retain_indexed(|_, event| keep(event))
    }

    /// Like [`Batch::retain`], with each event's index.
    pub fn retain_indexed(&self, mut keep: impl FnMut(usize, &Event) -> bool) -> Verdict {
        let kept: Vec<u32> = (0..self.events.len())
            .filter(|&i| keep(i, &self.events[i]))
            .map(|i| i as u32)
            .collect();
        if kept.len() == self.events.len() {
            Verdict::Keep
        } else if kept.is_empty() {
            Verdict::Drop("no event passed the filter".to_string())
        } else {
            Verdict::Select(kept)
        }
    }
}

/// What to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The batch unchanged.
    Keep,
    /// Nothing; the reason is logged and counted.
    Drop(String),
    /// Only the events at these distinct indices, in this order.
    Select(Vec<u32>),
    /// This batch instead (its `time_ms` is ignored).
    Replace(Batch),
}

impl Verdict {
    /// The batch this verdict delivers, or `None` for [`Verdict::Drop`].
    pub fn apply(&self, batch: &Batch) -> Option<Batch> {
        match self {
            Verdict::Keep => Some(batch.clone()),
            Verdict::Drop(_) => None,
            Verdict::Select(indices) => Some(Batch {
                time_ms: batch.time_ms,
                events: indices
                    .iter()
                    .filter_map(|&i| batch.events.get(i as usize).cloned())
                    .collect(),
            }),
            Verdict::Replace(new) => Some(new.clone()),
        }
    }
}

/// Where the batch is going.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// The app id.
    pub app_id: String,
    /// The webhook's id (by default its url or lambda_function).
    pub webhook: String,
}

/// Log levels for [`log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Warn.
    Warn,
    /// Error.
    Error,
}

/// Writes to Hookline's log (with the app, webhook and filter named).
/// A call may log 100 lines, counting what it prints; the rest is dropped.
/// Natively, to stderr.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        use __private::bindings::hookline::filter::types::Level as L;
        let level = match level {
            Level::Debug => L::Debug,
            Level::Info => L::Info,
            Level::Warn => L::Warn,
            Level::Error => L::Error,
        };
        __private::bindings::log(level, message);
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// A filter. Implement it on a unit struct and export it with
/// [`export_filter!`].
pub trait Filter {
    /// The filter's `config` from the app file (`null` gives `Default`).
    type Config: DeserializeOwned + Default;

    /// Checks a config when the app file loads; an `Err` is a load error.
    /// The config has already been parsed into `Self::Config`.
    fn validate_config(config: &Self::Config) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

    /// Decides what to deliver from `batch`. An `Err` is handled by the
    /// filter entry's `on_error` (retry, skip or drop).
    fn filter(config: &Self::Config, ctx: &Context, batch: &Batch) -> Result<Verdict, String>;
}

/// Parses a config text as the host passes it (`"null"` when none).
pub fn parse_config<C: DeserializeOwned + Default>(text: &str) -> Result<C, String> {
    if text.trim() == "null" {
        return Ok(C::default());
    }
    serde_json::from_str(text).map_err(|e| format!("invalid config: {e}"))
}

/// Running filters natively, as Hookline would, for tests.
pub mod testing {
    use super::{Batch, Context, Filter, Verdict, parse_config};

    /// Validates `config` and runs the filter once on `batch`.
    pub fn run<F: Filter>(config: &str, batch: &Batch) -> Result<Verdict, String> {
        let parsed = parse_config::<F::Config>(config)?;
        F::validate_config(&parsed)?;
        F::filter(&parsed, &Context::default(), batch)
    }

    /// Runs the filter and returns the batch it would deliver.
    pub fn deliver<F: Filter>(config: &str, batch: &Batch) -> Result<Option<Batch>, String> {
        Ok(run::<F>(config, batch)?.apply(batch))
    }
}

/// Exports a [`Filter`] as the component's `hookline:filter` world. Does
/// nothing when compiled natively, so the same crate tests natively.
#[macro_export]
macro_rules! export_filter {
    ($filter:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __HooklineFilterExport;
            impl $crate::__private::bindings::Guest for __HooklineFilterExport {
                fn validate_config(config: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__private::validate_config::<$filter>(&config)
                }
                fn filter(
                    ctx: $crate::__private::bindings::hookline::filter::types::Context,
                    batch: $crate::__private::bindings::hookline::filter::types::Batch,
                ) -> ::std::result::Result<
                    $crate::__private::bindings::hookline::filter::types::Verdict,
                    ::std::string::String,
                > {
                    $crate::__private::filter::<$filter>(ctx, batch)
                }
            }
            $crate::__private::bindings::__export_filter_world!(
                __HooklineFilterExport with_types_in $crate::__private::bindings
            );
        };
    };
}

#[doc(hidden)]
pub mod __private {
    #[cfg(target_arch = "wasm32")]
    pub use self::wasm::*;

    #[cfg(target_arch = "wasm32")]
    mod wasm {
        use std::any::Any;
        use std::cell::RefCell;

        use super::super::{Batch, Context, Event, Filter, Verdict, parse_config};

        #[allow(missing_docs, unreachable_pub, unsafe_code)]
        pub mod bindings {
            wit_bindgen::generate!({
                world: "filter",
                path: "wit/filter.wit",
                pub_export_macro: true,
                export_macro_name: "__export_filter_world",
            });
        }

        use bindings::hookline::filter::types as wit;

        thread_local! {
            /// The last config text and its parsed form: an instance serves one
            /// (app, webhook, filter), so the config rarely changes.
            static CONFIG: RefCell<Option<(String, Box<dyn Any>)>> = const { RefCell::new(None) };
        }

        fn with_config<F: Filter, R>(text: &str, run: impl FnOnce(&F::Config) -> R) -> Result<R, String>
        where
            F::Config: 'static,
        {
            CONFIG.with(|cell| {
                let mut cell = cell.borrow_mut();
                let cached = cell
                    .as_ref()
                    .is_some_and(|(t, c)| t == text && c.downcast_ref::<F::Config>().is_some());
                if !cached {
                    let parsed: F::Config = parse_config(text)?;
                    *cell = Some((text.to_string(), Box::new(parsed)));
                }
                let (_, config) = cell.as_ref().expect("just filled");
                Ok(run(config.downcast_ref::<F::Config>().expect("checked above")))
            })
        }

        pub fn validate_config<F: Filter>(text: &str) -> Result<(), String>
        where
            F::Config: 'static,
        {
            with_config::<F, _>(text, |c| F::validate_config(c))?
        }

        pub fn filter<F: Filter>(ctx: wit::Context, batch: wit::Batch) -> Result<wit::Verdict, String>
        where
            F::Config: 'static,
        {
            let batch = Batch {
                time_ms: batch.time_ms,
                events: batch.events.into_iter().map(from_wit).collect(),
            };
            let context = Context {
                app_id: ctx.app_id,
                webhook: ctx.webhook,
            };
            let verdict = with_config::<F, _>(&ctx.config, |c| F::filter(c, &context, &batch))??;
            Ok(match verdict {
                Verdict::Keep => wit::Verdict::Keep,
                Verdict::Drop(reason) => wit::Verdict::Drop(reason),
                Verdict::Select(indices) => wit::Verdict::Select(indices),
                Verdict::Replace(batch) => wit::Verdict::Replace(wit::Batch {
                    time_ms: batch.time_ms,
                    events: batch.events.into_iter().map(to_wit).collect(),
                }),
            })
        }

        fn from_wit(e: wit::Event) -> Event {
            Event {
                name: e.name,
                channel: e.channel,
                user_id: e.user_id,
                socket_id: e.socket_id,
                event: e.event,
                data: e.data,
                subscription_count: e.subscription_count,
                extra: e.extra,
            }
        }

        fn to_wit(e: Event) -> wit::Event {
            wit::Event {
                name: e.name,
                channel: e.channel,
                user_id: e.user_id,
                socket_id: e.socket_id,
                event: e.event,
                data: e.data,
                subscription_count: e.subscription_count,
                extra: e.extra,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retain_picks_the_smallest_verdict() {
        let batch = Batch::new(vec![Event::new("a", "1"), Event::new("b", "2")]);
        assert_eq!(batch.retain(|_| true), Verdict::Keep);
        assert!(matches!(batch.retain(|_| false), Verdict::Drop(_)));
        assert_eq!(batch.retain(|e| e.name == "b"), Verdict::Select(vec![1]));
    }

    #[test]
    fn null_config_is_the_default() {
        #[derive(Default, serde::Deserialize, PartialEq, Debug)]
        struct C {
            n: u32,
        }
        assert_eq!(parse_config::<C>("null").unwrap(), C::default());
        assert_eq!(parse_config::<C>(r#"{"n":3}"#).unwrap(), C { n: 3 });
        assert!(parse_config::<C>("[").unwrap_err().starts_with("invalid config"));
    }
}
