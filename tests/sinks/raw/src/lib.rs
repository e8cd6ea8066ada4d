//! A sink written against `sdk/wit/sink.wit` with wit-bindgen alone, to
//! show the world is usable without the SDK. Its config is
//! `{"url": "http://host:port/path"}`: it POSTs the signed body there with
//! the signed headers, and turns the answer into an outcome: 2xx
//! `delivered`; 429, 408 and 5xx `retry` (with `Retry-After`, in seconds,
//! as `after-ms`); anything else `reject`. A refused or failed request is
//! a `retry` naming the error code.
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

struct RawSink;

/// The `url` of the config text, found without a JSON library.
fn config_url(config: &str) -> Option<&str> {
    let start = config.find("\"url\"")? + 5;
    let rest = config[start..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    Some(&rest[..rest.find('"')?])
}

fn post(url: &str, headers: &[(String, String)], body: &[u8]) -> Result<(u16, Option<u64>), String> {
    let (scheme, rest) = url.split_once("://").ok_or("the url has no scheme")?;
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    let mut entries: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(n, v)| (n.clone(), v.as_bytes().to_vec()))
        .collect();
    entries.push(("content-type".to_string(), b"application/json".to_vec()));
    let fields = Fields::from_list(&entries).map_err(|e| format!("headers: {e:?}"))?;
    let request = OutgoingRequest::new(fields);
    request.set_method(&Method::Post).map_err(|()| "method")?;
    let scheme = if scheme == "https" { Scheme::Https } else { Scheme::Http };
    request.set_scheme(Some(&scheme)).map_err(|()| "scheme")?;
    request.set_authority(Some(authority)).map_err(|()| "authority")?;
    request.set_path_with_query(Some(path)).map_err(|()| "path")?;
    let outgoing = request.body().map_err(|()| "body")?;
    let future = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
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
    future.subscribe().block();
    let response = future
        .get()
        .ok_or("no answer")?
        .map_err(|()| "answer taken twice")?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .first()
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok());
    let incoming = response.consume().map_err(|()| "response body")?;
    let stream = incoming.stream().map_err(|()| "response stream")?;
    loop {
        match stream.blocking_read(65536) {
            Ok(_) => {}
            Err(StreamError::Closed) => break,
            Err(e) => return Err(format!("reading the answer: {e:?}")),
        }
    }
    Ok((status, retry_after))
}

impl Guest for RawSink {
    fn validate_config(config: String) -> Result<(), String> {
        config_url(&config)
            .map(|_| ())
            .ok_or_else(|| "config needs a \"url\"".to_string())
    }

    fn deliver(request: Request) -> Outcome {
        // The benchmark's floor: a call that sends nothing.
        if request.config.contains("\"noop\"") {
            return Outcome::Delivered;
        }
        let Some(url) = config_url(&request.config) else {
            return Outcome::Reject("config needs a \"url\"".to_string());
        };
        log(
            Level::Info,
            &format!(
                "batch {} attempt {}: {} events",
                request.batch_id,
                request.attempt,
                request.events.len()
            ),
        );
        match post(url, &request.headers, &request.body) {
            Ok((200..=299, _)) => Outcome::Delivered,
            Ok((status @ (408 | 429 | 500..=599), retry_after)) => Outcome::Retry(Retry {
                after_ms: retry_after.map(|s| s * 1000),
                reason: format!("the receiver answered {status}"),
            }),
            Ok((status, _)) => Outcome::Reject(format!("the receiver answered {status}")),
            Err(e) => Outcome::Retry(Retry {
                after_ms: None,
                reason: format!("request failed: {e}"),
            }),
        }
    }
}

export!(RawSink);
