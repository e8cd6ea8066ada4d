//! The engine embedded in this test process through its front door —
//! `Engine::start` on settings, the built-in sinks and a store, then
//! `Engine::serve` on a listener with a shutdown future — as a program
//! embedding Hookline would. Routing, batching and retries need no process
//! boundary, so they are shown here against a real receiver, without
//! spawning the daemon.

mod support;

use std::sync::Arc;

use hookline_core::Engine;
use hookline_core::settings::{Durability, Settings};
use support::*;

/// An engine serving on a loopback port until dropped (or `stop`ped).
struct Embedded {
    engine: Arc<Engine>,
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<Result<(), std::io::Error>>,
    _dirs: tempfile::TempDir,
}

impl Embedded {
    /// Starts an engine on `apps` (an apps directory) with default settings
    /// but for its directories and in-memory durability.
    async fn start(apps: &AppsDir) -> Self {
        Self::start_with(apps, Durability::Memory).await
    }

    async fn start_with(apps: &AppsDir, durability: Durability) -> Self {
        let dirs = tempfile::tempdir().unwrap();
        let settings = Settings {
            apps_dir: apps.path().to_path_buf(),
            data_dir: dirs.path().join("data"),
            watch: false,
            ingest: hookline_core::settings::IngestSettings {
                durability,
                ..Default::default()
            },
            ..Settings::default()
        };
        let store = Engine::open_embedded_store(&settings).unwrap();
        let env: hookline_core::config::EnvLookup = Arc::new(|_| None);
        let (engine, report) = Engine::start(settings, hookline::builtin_sinks().unwrap(), env, store)
            .await
            .unwrap();
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let served = tokio::spawn(engine.clone().serve(listener, async move {
            let _ = stopped.await;
        }));
        Self {
            engine,
            url,
            stop: Some(stop),
            served,
            _dirs: dirs,
        }
    }

    async fn send(&self, app: &str, key: &str, secret: &str, body: &str) -> u16 {
        post_native(&self.url, app, key, secret, body)
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Stops ingest, flushes open batches and waits for `serve` to return.
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.served).await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_webhook_gets_the_events_it_asked_for() {
    let receiver = Receiver::start().await;
    let apps = receiver.apps(
        r#"{"id": "a", "key": "ka", "secret": "sa", "batching": {"enabled": false},
            "webhooks": [{"url": "RECEIVER/occupied", "event_types": ["channel_occupied"]},
                         {"url": "RECEIVER/members", "event_types": ["member_added"]}]}"#,
    );
    let engine = Embedded::start(&apps).await;
    let body = r#"{"events": [{"name": "channel_occupied", "channel": "c1"},
                              {"name": "member_added", "channel": "presence-c2", "user_id": "u"}]}"#;
    assert_eq!(engine.send("a", "ka", "sa", body).await, 200);
    let occupied = receiver.wait_for_events("/occupied", 1).await;
    let members = receiver.wait_for_events("/members", 1).await;
    assert_eq!(occupied[0].event_names(), ["channel_occupied"]);
    assert_eq!(members[0].event_names(), ["member_added"]);
    engine.stop().await;
    assert_eq!(receiver.all().len(), 2, "nothing else was delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_several_requests_make_one_batch_and_shutdown_flushes_the_open_one() {
    let receiver = Receiver::start().await;
    let apps = receiver.apps(
        r#"{"id": "a", "key": "ka", "secret": "sa",
            "batching": {"enabled": true, "max_events": 3, "max_wait_ms": 600000},
            "webhooks": [{"url": "RECEIVER/h", "event_types": ["channel_occupied"]}]}"#,
    );
    let engine = Embedded::start(&apps).await;
    for i in 0..4 {
        let body = events_body(&[("channel_occupied", &format!("c{i}"))]);
        assert_eq!(engine.send("a", "ka", "sa", &body).await, 200);
    }
    // Three close the batch; the fourth waits in the open one.
    let full = receiver.wait_for("/h", 1).await;
    assert_eq!(full[0].event_count(), 3);
    engine.stop().await;
    let all = receiver.on("/h");
    assert_eq!(all.len(), 2, "shutdown delivered the open batch");
    assert_eq!(all[1].event_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempt_is_retried_with_the_same_batch_id() {
    let receiver = Receiver::start().await;
    receiver.script("/h", vec![Reply::status(503), Reply::status(200)]);
    let apps = receiver.apps(
        r#"{"id": "a", "key": "ka", "secret": "sa", "batching": {"enabled": false},
            "retry": {"min_backoff_ms": 10, "max_backoff_ms": 20},
            "webhooks": [{"url": "RECEIVER/h", "event_types": ["channel_occupied"]}]}"#,
    );
    let engine = Embedded::start(&apps).await;
    assert_eq!(
        engine
            .send("a", "ka", "sa", &events_body(&[("channel_occupied", "c")]))
            .await,
        200
    );
    let attempts = receiver.wait_for("/h", 2).await;
    assert!(!attempts[0].status_ok() && attempts[1].status_ok());
    assert_eq!(
        attempts[0].header("x-hookline-batch-id"),
        attempts[1].header("x-hookline-batch-id")
    );
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_whose_request_is_abandoned_while_they_are_stored_are_still_delivered() {
    let receiver = Receiver::start().await;
    let apps = receiver.apps(
        r#"{"id": "a", "key": "ka", "secret": "sa", "batching": {"enabled": false},
            "webhooks": [{"url": "RECEIVER/h", "event_types": ["channel_occupied"]}]}"#,
    );
    let embedded = Embedded::start_with(&apps, Durability::Fsync).await;
    let app = embedded.engine.app("a").unwrap();
    let body = events_body(&[("channel_occupied", "c")]);
    let events = hookline_core::event::parse_ingest_body(body.as_bytes()).unwrap().events;
    // Polled once, the events are queued for the disk; then the request is
    // dropped (its client gone) before the fsync answers.
    let mut accepting = Box::pin(embedded.engine.accept(&app, events, "native"));
    let first_poll = std::future::poll_fn(|cx| std::task::Poll::Ready(accepting.as_mut().poll(cx))).await;
    assert!(first_poll.is_pending(), "the fsync cannot have answered yet");
    drop(accepting);
    let delivered = receiver.wait_for("/h", 1).await;
    assert_eq!(delivered[0].event_names(), ["channel_occupied"]);
    embedded.stop().await;
}
