//! Criterion benchmarks of the hot paths: canonicalising an ingested event,
//! rendering and signing a delivery body, and the filter stage through the
//! drop-by-channel example filter (built for wasm32-wasip2 on first use).
//!
//! Run with `cargo bench -p hookline-core --bench hot_paths`.

#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hookline_core::delivery::render_body;
use hookline_core::event::{Event, parse_ingest_body};
use hookline_core::filter::{FilterChain, FilterHost, FilterSpec, OnError};
use hookline_core::settings::FilterSettings;
use hookline_core::signing::hmac_sha256_hex;

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
    let target = root.join("target/wasm");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            "drop-by-channel",
            "--target-dir",
        ])
        .arg(&target)
        .status()
        .expect("run cargo");
    assert!(status.success(), "building drop-by-channel for wasm32-wasip2 failed");
    target.join("wasm32-wasip2/release/drop_by_channel.wasm")
}

fn ingest(c: &mut Criterion) {
    let body = br#"{"events":[{"name":"client_event","channel":"private-room-1","event":"client-message","data":"{\"text\":\"hello\",\"n\":1}","socket_id":"123.456","user_id":"u1"}]}"#;
    c.bench_function("ingest/parse+canonicalise 1 event", |b| {
        b.iter(|| parse_ingest_body(std::hint::black_box(body)).unwrap())
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
    let chain = FilterChain {
        filters: vec![host.load(spec, "app", "webhook").unwrap()],
    };
    let mut group = c.benchmark_group("filter/drop-by-channel");
    for n in [1, 10, 100] {
        let batch = events(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &batch, |b, batch| {
            b.iter(|| chain.run("app", "webhook", 0, batch.clone()))
        });
    }
    group.finish();
}

criterion_group!(benches, ingest, render_and_sign, filter_stage);
criterion_main!(benches);
