//! What a sink component adds to one delivery: the CloudEvents example
//! sink (`examples/sinks/cloudevents`, batch mode, built for wasm32-wasip2
//! on first use) against the built-in HTTP sink, each sending the same
//! signed 10-event batch to the same local hyper receiver, one request per
//! attempt. The difference of the two medians is the component's added
//! p50 per delivery (the issue asks at most 50 µs).
//!
//! Run with `cargo bench -p hookline-core --bench sink_component`.

#![allow(missing_docs)]

use std::convert::Infallible;
use std::path::Path;
use std::time::Duration;

#[path = "../../tests/support/cargo_wasm.rs"]
mod cargo_wasm;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use hookline_core::event::{join_events, parse_ingest_body, render_body};
use hookline_core::settings::FilterSettings;
use hookline_core::signing::hmac_sha256_hex;
use hookline_core::sink_component::{ComponentSink, SinkComponentHost};
use hookline_sink_api::{Sink, SinkPlugin, SinkRequest};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A receiver answering every request 200 `{}`, as the load script's.
async fn receiver() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: hyper::Request<hyper::body::Incoming>| async move {
                    use http_body_util::BodyExt;
                    let _ = request.into_body().collect().await;
                    Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(Bytes::from_static(
                        b"{}",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn body() -> String {
    let n: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10);
    let items: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"name":"client_event","channel":"private-room-{i}","event":"client-message","data":"{{\"text\":\"hello number {i}\",\"n\":{i}}}","socket_id":"123.456","user_id":"user-{i}"}}"#
            )
        })
        .collect();
    let events = parse_ingest_body(format!(r#"{{"events":[{}]}}"#, items.join(",")).as_bytes())
        .unwrap()
        .events;
    render_body(1_700_000_000_000, &join_events(&events))
}

fn deliveries(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = cargo_wasm::build_wasm_packages(root, &["cloudevents", "raw-sink"]).unwrap_or_else(|e| panic!("{e}"));
    let wasm = dir.join("cloudevents.wasm");
    let runtime = if std::env::var_os("BENCH_CURRENT_THREAD").is_some() {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    }
    .enable_all()
    .build()
    .unwrap();
    let addr = runtime.block_on(receiver());
    let url = format!("http://{addr}/hook");

    let http = hookline_sink_http::HttpSinkPlugin::new()
        .unwrap()
        .build(&serde_json::from_value(serde_json::json!({ "url": url })).unwrap())
        .unwrap();
    let host = SinkComponentHost::new(FilterSettings::default(), None);
    let sink = serde_json::json!({
        "wasm": wasm,
        "config": { "url": url },
        "allowed_hosts": [{ "origin": format!("http://{addr}"), "allow_private": true }],
    });
    let component = ComponentSink::load(&host, &sink, root, "bench").unwrap_or_else(|e| panic!("{e}"));
    let raw_sink = serde_json::json!({
        "wasm": dir.join("raw_sink.wasm"),
        "config": { "url": url },
        "allowed_hosts": [{ "origin": format!("http://{addr}"), "allow_private": true }],
    });
    let raw = ComponentSink::load(&host, &raw_sink, root, "bench").unwrap_or_else(|e| panic!("{e}"));
    let noop_sink = serde_json::json!({ "wasm": dir.join("raw_sink.wasm"), "config": { "url": url, "noop": true } });
    let noop = ComponentSink::load(&host, &noop_sink, root, "bench").unwrap_or_else(|e| panic!("{e}"));

    let body = body();
    let signed: &'static [(&str, String)] = Box::leak(Box::new([
        ("X-Pusher-Key", "bench-key".to_string()),
        ("X-Pusher-Signature", hmac_sha256_hex(b"bench-secret", body.as_bytes())),
        ("X-Hookline-Batch-Id", "0123456789abcdef-1".to_string()),
        ("X-Hookline-Batch-Time", "1700000000000".to_string()),
    ]));
    // Each send runs as a task on the runtime's workers, as a lane's
    // delivery does in the daemon (not on the thread that drives the
    // benchmark, which no delivery runs on).
    let request: &'static SinkRequest<'static> = Box::leak(Box::new(SinkRequest {
        body: Bytes::from(body),
        signed_headers: signed,
        extra_headers: &[],
        timeout: Duration::from_secs(10),
        app_id: "bench",
        webhook_id: "hook",
        channel: None,
        attempt: 1,
        answer: None,
    }));
    let sinks: [(&str, &'static dyn Sink); 4] = [
        ("built-in http sink", Box::leak(http)),
        ("cloudevents sink component", Box::leak(Box::new(component))),
        ("raw sink component (forwards the body)", Box::leak(Box::new(raw))),
        ("a call that sends nothing", Box::leak(Box::new(noop))),
    ];
    let mut group = c.benchmark_group("delivery of a 10-event batch");
    for (name, sink) in sinks {
        group.bench_function(name, |b| {
            b.to_async(&runtime)
                .iter(|| async { tokio::spawn(sink.send(request.clone())).await.unwrap().unwrap() })
        });
    }
    group.finish();
}

criterion_group!(benches, deliveries);
criterion_main!(benches);
