//! Criterion benchmarks of the hot paths: canonicalising an ingested event,
//! routing an app batch to its webhooks, rendering and signing a delivery
//! body, and the filter stage through the drop-by-channel example filter
//! (built for wasm32-wasip2 on first use).
//!
//! Run with `cargo bench -p hookline-core --bench hot_paths`.

#![allow(missing_docs)]

use std::path::{Path, PathBuf};

#[path = "../../tests/support/cargo_wasm.rs"]
mod cargo_wasm;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use std::sync::Arc;
use std::time::Duration;

use hookline_core::config::{AppLoader, LoadDefaults};
use hookline_core::event::join_events;
use hookline_core::event::render_body;
use hookline_core::event::{Event, parse_ingest_body};
use hookline_core::filter::{ChainOutcome, FilterChain, FilterHost, FilterSpec, OnError};
use hookline_core::fuzzing::bench::{chunk_to_fit, select_for};
use hookline_core::settings::FilterSettings;
use hookline_core::settings::Settings;
use hookline_core::signing::hmac_sha256_hex;
use hookline_core::sinks::SinkRegistry;
use hookline_sink_api::{BoxFuture, DeliveryError, Sink, SinkConfigError, SinkPlugin, SinkRequest, WebhookSpec};

/// The daemon's allocator, so the figures are the daemon's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A batch of `n` events of the webhook kinds in turn: `client_event`
/// (six strings), `member_added`, `channel_occupied`, `subscription_count`;
/// every other event is on a `debug-` channel.
fn mixed_events(n: usize) -> Vec<Event> {
    let items: Vec<String> = (0..n)
        .map(|i| {
            let channel = if i % 2 == 0 { format!("debug-{i}") } else { format!("presence-room-{i}") };
            match i % 4 {
                0 => format!(
                    r#"{{"name":"client_event","channel":"{channel}","event":"client-message","data":"{{\"text\":\"hello number {i}\",\"n\":{i}}}","socket_id":"123.456","user_id":"user-{i}"}}"#
                ),
                1 => format!(r#"{{"name":"member_added","channel":"{channel}","user_id":"user-{i}"}}"#),
                2 => format!(r#"{{"name":"channel_occupied","channel":"{channel}"}}"#),
                _ => format!(r#"{{"name":"subscription_count","channel":"{channel}","subscription_count":{i}}}"#),
            }
        })
        .collect();
    let body = format!(r#"{{"events":[{}]}}"#, items.join(","));
    parse_ingest_body(body.as_bytes()).unwrap().events
}

/// A batch of `n` `client_event`s (six strings each, the heaviest kind).
fn events(n: usize) -> Vec<Event> {
    let items: Vec<String> = (0..n)
        .map(|i| {
            let channel = if i % 2 == 0 { format!("debug-{i}") } else { format!("private-room-{i}") };
            format!(
                r#"{{"name":"client_event","channel":"{channel}","event":"client-message","data":"{{\"text\":\"hello number {i}\",\"n\":{i}}}","socket_id":"123.456","user_id":"user-{i}"}}"#
            )
        })
        .collect();
    let body = format!(r#"{{"events":[{}]}}"#, items.join(","));
    parse_ingest_body(body.as_bytes()).unwrap().events
}

fn drop_by_channel_wasm() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    cargo_wasm::build_wasm_packages(root, &["drop-by-channel"])
        .unwrap_or_else(|e| panic!("{e}"))
        .join("drop_by_channel.wasm")
}

fn ingest(c: &mut Criterion) {
    let body = br#"{"events":[{"name":"client_event","channel":"private-room-1","event":"client-message","data":"{\"text\":\"hello\",\"n\":1}","socket_id":"123.456","user_id":"u1"}]}"#;
    c.bench_function("ingest/parse+canonicalise 1 event", |b| {
        b.iter(|| parse_ingest_body(std::hint::black_box(body)).unwrap())
    });
    let (query, authenticate) = hookline_core::fuzzing::native_auth_case(body);
    c.bench_function("ingest/native auth (Pusher HTTP API signature)", |b| {
        b.iter(|| assert!(authenticate(std::hint::black_box(&query), body)))
    });
}

fn render_and_sign(c: &mut Criterion) {
    let mut group = c.benchmark_group("deliver/render+sign");
    for n in [1, 10, 100] {
        let joined: String = events(n).iter().map(|e| &*e.json).collect::<Vec<_>>().join(",");
        group.bench_with_input(BenchmarkId::from_parameter(n), &joined, |b, joined| {
            b.iter(|| {
                let body = render_body(1_795_722_962_259, joined);
                hmac_sha256_hex(b"app-secret", body.as_bytes())
            })
        });
    }
    group.finish();
}

fn filter_stage(c: &mut Criterion) {
    let host = FilterHost::new(FilterSettings::default(), None, None).unwrap();
    let spec = FilterSpec {
        path: drop_by_channel_wasm(),
        config: r#"{"channels":["debug-*"]}"#.to_string(),
        on_error: OnError::Retry,
        cpu_ms: 50,
        memory_mb: 64,
    };
    let chain = FilterChain::of(vec![host.load(spec, "app", "webhook").unwrap()]);
    for (name, make) in [
        ("filter/drop-by-channel", events as fn(usize) -> Vec<Event>),
        ("filter/drop-by-channel-mixed", mixed_events),
    ] {
        let mut group = c.benchmark_group(name);
        for n in [1, 10, 100] {
            let batch = make(n);
            group.bench_with_input(BenchmarkId::from_parameter(n), &batch, |b, batch| {
                // The batcher hands the chain its events; cloning them is setup.
                b.iter_batched(
                    || batch.clone(),
                    // A failing filter (retry) would time the error path
                    // unnoticed: a verdict is required.
                    |batch| match chain.run("app", "webhook", 0, batch) {
                        ChainOutcome::Retry { reason, .. } => panic!("the filter failed in the benchmark: {reason}"),
                        verdict => verdict,
                    },
                    // Few inputs at a time, so their memory is reused rather than
                    // faulted in afresh.
                    BatchSize::NumIterations(256),
                )
            });
        }
        group.finish();
    }
}

/// A sink that is never called: routing only needs webhooks built.
#[derive(Debug)]
struct NullSink;

impl Sink for NullSink {
    fn describe(&self) -> String {
        "null".into()
    }
    fn max_body_bytes(&self, _: &[(String, String)]) -> Option<usize> {
        Some(1 << 20)
    }
    fn default_timeout(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn send<'a>(&'a self, _: SinkRequest<'a>) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async { Ok(()) })
    }
}

struct NullPlugin;

impl SinkPlugin for NullPlugin {
    fn kind(&self) -> &'static str {
        "null"
    }
    fn selector_key(&self) -> &'static str {
        "url"
    }
    fn build(&self, _: &WebhookSpec) -> Result<Box<dyn Sink>, SinkConfigError> {
        Ok(Box::new(NullSink))
    }
}

/// An app batch of 100 events through three webhooks: select by event type
/// and channel, split to the sink's limit, join into delivery bodies.
fn routing(c: &mut Criterion) {
    let mut sinks = SinkRegistry::new();
    sinks.register(Arc::new(NullPlugin));
    let loader = AppLoader::new(sinks, LoadDefaults::from(&Settings::default()), Arc::new(|_| None));
    let app = r#"{"id": "a", "key": "k", "secret": "s", "webhooks": [
        {"url": "http://x/1", "event_types": ["client_event"]},
        {"url": "http://x/2", "event_types": ["client_event"], "filter": {"channel_name_starts_with": "private-"}},
        {"url": "http://x/3", "event_types": ["member_added"]}]}"#;
    let loaded = loader.load_text(Path::new("bench.json"), app).unwrap();
    let webhooks = &loaded.apps[0].webhooks;
    let batch = events(100);
    c.bench_function("route/100 events to 3 webhooks", |b| {
        b.iter(|| {
            let mut bodies = 0;
            for webhook in webhooks {
                let selected = select_for(webhook, &batch);
                for chunk in chunk_to_fit(&selected, webhook.max_body_bytes) {
                    bodies += join_events(chunk).len();
                }
            }
            bodies
        })
    });
}

criterion_group!(benches, ingest, routing, render_and_sign, filter_stage);
criterion_main!(benches);
