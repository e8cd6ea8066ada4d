//! The physical-limit baseline for the load benchmark: a bare hyper HTTP/1
//! server whose every answer is `200 {}`. `scripts/bench/load.py` drives it
//! with the same load generator as Hookline, and also uses it as the fast
//! receiver Hookline delivers to.
//!
//! `cargo run --release --example bare-hyper -- 127.0.0.1:9000`
//!
//! With `BARE_HYPER_WORK_NS=N` each answer first busy-waits N ns: a server
//! doing N ns of work per request, which calibrates what a given amount of
//! per-request work costs in throughput on the same loopback (BENCHMARKS.md).

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9000".to_string());
    let work = std::time::Duration::from_nanos(
        std::env::var("BARE_HYPER_WORK_NS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|request: Request<hyper::body::Incoming>| async move {
                // Read the whole body, as a receiver must.
                let _ = request.into_body().collect().await;
                if !work.is_zero() {
                    let started = std::time::Instant::now();
                    while started.elapsed() < work {
                        std::hint::spin_loop();
                    }
                }
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
