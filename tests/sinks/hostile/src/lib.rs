//! A sink that misbehaves as its config asks, for the containment tests
//! (tests/sink_components.rs). Written against the raw `hookline:sink` WIT
//! with wit-bindgen, so each misbehaviour is exactly the WASI calls it
//! names. Its config is `{"mode": MODE, "url": …, "report": …}`:
//!
//! * `forward` (also `slow-network`): POSTs the signed body with the signed
//!   headers and `x-forwarded-by: hostile-sink` to `url`; 2xx `delivered`,
//!   anything else `retry`. (`slow-network` is the same request: the test
//!   points it at an endpoint that answers late.)
//! * `undeclared-host`, `loopback`: requests `url` (a host not in
//!   `allowed_hosts`, or 127.0.0.1 listed without `allow_private`) and
//!   answers `retry` whose reason says what came back: `mode: error
//!   <code>` or `mode: status <n>`.
//! * `spin`: loops forever.
//! * `busy-in-host`: waits 1 ms in the host, forever.
//! * `grow`: asks `memory.grow` for all of the 4 GiB a 32-bit memory can
//!   hold; if that returns at all, answers `retry` saying what it got.
//! * `endless-body`: GETs `url` (which streams a body that never ends) and
//!   answers `retry` saying how the read ended.
//! * `echo-secret`: requests `url` (whose origin has a secret header added
//!   by the host), looks everywhere a guest could for that header (the
//!   request's own headers after `handle`, the environment, the arguments,
//!   the response's headers and body) and POSTs all it saw, as text, to
//!   `report`; `delivered` once the report is taken.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({
    path: [
        "../../../sdk/wit/deps/io.wit",
        "../../../sdk/wit/deps/clocks.wit",
        "../../../sdk/wit/deps/random.wit",
        "../../../sdk/wit/deps/filesystem.wit",
        "../../../sdk/wit/deps/sockets.wit",
        "../../../sdk/wit/deps/cli.wit",
        "../../../sdk/wit/deps/http.wit",
        "../../../sdk/wit/filter.wit",
        "../../../sdk/wit/sink.wit",
    ],
    world: "hookline:sink/sink",
    generate_all,
});

use hookline::sink::types::Retry;
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasi::io::streams::StreamError;

const MODES: &[&str] = &[
    "forward",
    "slow-network",
    "undeclared-host",
    "loopback",
    "spin",
    "busy-in-host",
    "grow",
    "endless-body",
    "echo-secret",
    "sleep-in-validate",
];

struct HostileSink;

type Headers = Vec<(String, Vec<u8>)>;

/// What came back from one request.
struct Answer {
    status: u16,
    headers: Headers,
    body: Vec<u8>,
}

/// One request sent: the request's own headers as the guest can still
/// read them after `handle`, and the answer (or the error code, in words).
struct Sent {
    own_headers_after_handle: Headers,
    answer: Result<Answer, String>,
}

fn field(config: &serde_json::Value, name: &str) -> String {
    config[name].as_str().unwrap_or_default().to_string()
}

fn entries(fields: &Fields) -> Headers {
    fields.entries()
}

fn send(method: Method, url: &str, headers: &[(String, Vec<u8>)], body: Option<&[u8]>) -> Result<Sent, String> {
    let (scheme, rest) = url.split_once("://").ok_or("the url has no scheme")?;
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    let fields = Fields::from_list(headers).map_err(|e| format!("headers: {e:?}"))?;
    let request = OutgoingRequest::new(fields);
    request.set_method(&method).map_err(|()| "method")?;
    let scheme = if scheme == "https" { Scheme::Https } else { Scheme::Http };
    request.set_scheme(Some(&scheme)).map_err(|()| "scheme")?;
    request.set_authority(Some(authority)).map_err(|()| "authority")?;
    request.set_path_with_query(Some(path)).map_err(|()| "path")?;
    // Kept across `handle`: whatever the host adds to the request later
    // would show here if it were shared with the guest.
    let own_headers = request.headers();
    let outgoing = match body {
        Some(_) => Some(request.body().map_err(|()| "body")?),
        None => None,
    };
    let future = match outgoing_handler::handle(request, None) {
        Ok(future) => future,
        Err(e) => {
            return Ok(Sent {
                own_headers_after_handle: entries(&own_headers),
                answer: Err(format!("error {e:?}")),
            });
        }
    };
    if let (Some(outgoing), Some(body)) = (outgoing, body) {
        {
            let stream = outgoing.write().map_err(|()| "body stream")?;
            for chunk in body.chunks(4096) {
                // A refused request closes the stream: the reason is in the answer.
                if stream.blocking_write_and_flush(chunk).is_err() {
                    break;
                }
            }
        }
        let _ = OutgoingBody::finish(outgoing, None);
    }
    future.subscribe().block();
    let own_headers_after_handle = entries(&own_headers);
    let response = match future.get().ok_or("no answer")?.map_err(|()| "answer taken twice")? {
        Ok(response) => response,
        Err(e) => {
            return Ok(Sent {
                own_headers_after_handle,
                answer: Err(format!("error {e:?}")),
            });
        }
    };
    let status = response.status();
    let response_headers = entries(&response.headers());
    let incoming = response.consume().map_err(|()| "response body")?;
    let mut read = Vec::new();
    let ended = {
        let stream = incoming.stream().map_err(|()| "response stream")?;
        loop {
            match stream.blocking_read(65536) {
                Ok(chunk) => read.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break Ok(()),
                Err(StreamError::LastOperationFailed(e)) => {
                    break Err(match wasi::http::types::http_error_code(&e) {
                        Some(code) => format!("error {code:?} after {} bytes", read.len()),
                        None => format!("error {} after {} bytes", e.to_debug_string(), read.len()),
                    });
                }
            }
        }
    };
    drop(incoming);
    Ok(Sent {
        own_headers_after_handle,
        answer: ended.map(|()| Answer {
            status,
            headers: response_headers,
            body: read,
        }),
    })
}

fn retry(reason: String) -> Outcome {
    Outcome::Retry(Retry { after_ms: None, reason })
}

/// `mode: error <code>` or `mode: status <n>`, for the modes whose request
/// the host must refuse.
fn what_came_back(mode: &str, sent: Result<Sent, String>) -> String {
    match sent {
        Err(e) => format!("{mode}: could not build the request: {e}"),
        Ok(Sent { answer: Err(e), .. }) => format!("{mode}: {e}"),
        Ok(Sent { answer: Ok(a), .. }) => format!("{mode}: status {} with {} bytes", a.status, a.body.len()),
    }
}

fn forward(request: &Request, url: &str) -> Outcome {
    let mut headers: Headers = request
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), v.as_bytes().to_vec()))
        .collect();
    headers.push(("content-type".into(), b"application/json".to_vec()));
    headers.push(("x-forwarded-by".into(), b"hostile-sink".to_vec()));
    match send(Method::Post, url, &headers, Some(&request.body)) {
        Ok(Sent { answer: Ok(a), .. }) if (200..300).contains(&a.status) => Outcome::Delivered,
        other => retry(what_came_back("forward", other)),
    }
}

fn show(out: &mut String, title: &str, headers: &[(String, Vec<u8>)]) {
    out.push_str(title);
    out.push_str(":\n");
    for (name, value) in headers {
        out.push_str(&format!("  {name}: {}\n", String::from_utf8_lossy(value)));
    }
}

/// Looks everywhere a guest can for the secret header the host adds to
/// requests to `url`'s origin, and POSTs what it saw to `report`.
fn echo_secret(url: &str, report: &str) -> Outcome {
    let mut seen = String::new();
    // The guest sets the secret header itself too: the host replaces it.
    let headers: Headers = vec![
        ("x-guest-marker".into(), b"set-by-the-guest".to_vec()),
        ("x-secret-token".into(), b"guest-value".to_vec()),
    ];
    match send(Method::Get, url, &headers, None) {
        Err(e) => seen.push_str(&format!("request not built: {e}\n")),
        Ok(sent) => {
            show(&mut seen, "own headers after handle", &sent.own_headers_after_handle);
            match sent.answer {
                Err(e) => seen.push_str(&format!("answer: {e}\n")),
                Ok(answer) => {
                    seen.push_str(&format!("response status: {}\n", answer.status));
                    show(&mut seen, "response headers", &answer.headers);
                    seen.push_str(&format!("response body: {}\n", String::from_utf8_lossy(&answer.body)));
                }
            }
        }
    }
    let env: Headers = std::env::vars().map(|(k, v)| (k, v.into_bytes())).collect();
    show(&mut seen, "environment", &env);
    seen.push_str(&format!("arguments: {:?}\n", std::env::args().collect::<Vec<_>>()));
    let headers = vec![("content-type".to_string(), b"text/plain".to_vec())];
    match send(Method::Post, report, &headers, Some(seen.as_bytes())) {
        Ok(Sent { answer: Ok(a), .. }) if (200..300).contains(&a.status) => Outcome::Delivered,
        other => retry(what_came_back("echo-secret report", other)),
    }
}

impl Guest for HostileSink {
    fn validate_config(config: String) -> Result<(), String> {
        let config: serde_json::Value = serde_json::from_str(&config).map_err(|e| format!("config: {e}"))?;
        let mode = field(&config, "mode");
        if !MODES.contains(&mode.as_str()) {
            return Err(format!("unknown mode `{mode}`; one of {MODES:?}"));
        }
        if mode == "sleep-in-validate" {
            // A load must not wait on this: the host bounds validate-config.
            wasi::clocks::monotonic_clock::subscribe_duration(3_600_000_000_000).block();
        }
        Ok(())
    }

    fn deliver(request: Request) -> Outcome {
        let config: serde_json::Value = serde_json::from_str(&request.config).unwrap_or_default();
        let mode = field(&config, "mode");
        let url = field(&config, "url");
        match mode.as_str() {
            "forward" | "slow-network" => forward(&request, &url),
            "undeclared-host" | "loopback" => {
                let headers = vec![("content-type".to_string(), b"application/json".to_vec())];
                retry(what_came_back(
                    &mode,
                    send(Method::Post, &url, &headers, Some(&request.body)),
                ))
            }
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            // Host calls are not CPU (they are where network waits are), so
            // only the attempt's deadline stops a loop of them.
            // Waiting in the host is not CPU: only the attempt's deadline
            // stops this.
            "busy-in-host" => loop {
                wasi::clocks::monotonic_clock::subscribe_duration(1_000_000).block();
            },
            "grow" => {
                let have = core::arch::wasm32::memory_size(0);
                // 65536 pages of 64 KiB: the whole 4 GiB.
                let got = core::arch::wasm32::memory_grow(0, 65536 - have);
                retry(format!(
                    "grow: memory.grow from {have} pages to 4 GiB returned {got} (it should have trapped)"
                ))
            }
            "endless-body" => retry(what_came_back("endless-body", send(Method::Get, &url, &[], None))),
            "echo-secret" => echo_secret(&url, &field(&config, "report")),
            other => Outcome::Reject(format!("unknown mode `{other}`")),
        }
    }
}

export!(HostileSink);
