//! A small blocking HTTP client: the sink's only door to the world.
//!
//! ```no_run
//! use hookline_sink::http;
//!
//! let response = http::Request::post("https://hooks.example.com/in")
//!     .header("Content-Type", "application/json")
//!     .body(r#"{"text":"hi"}"#)
//!     .send()?;
//! assert!(response.is_success());
//! # Ok::<(), http::Error>(())
//! ```
//!
//! In Hookline (wasm32) requests go through `wasi:http/outgoing-handler`:
//! the host sends them, only to the origins the webhook's `allowed_hosts`
//! lists, adds those origins' secret headers, clamps the timeout to the
//! webhook's `timeout_ms`, caps the response body and follows no
//! redirect. Natively (in `cargo test`) they go through a plain HTTP/1.1
//! client that follows no redirect either, so a sink behaves the same in
//! both.

use std::time::{Duration, SystemTime};

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
}

impl Method {
    /// The method's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// An outgoing request, built step by step and sent with [`Request::send`].
#[derive(Debug, Clone)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The absolute URL (`https://host[:port]/path?query`).
    pub url: String,
    /// Headers in the order they are sent.
    pub headers: Vec<(String, String)>,
    /// The body (empty for none).
    pub body: Vec<u8>,
    /// How long to wait for the whole answer; `None` is the host's limit
    /// (the webhook's `timeout_ms`), and the host cuts any longer one.
    pub timeout_ms: Option<u64>,
}

impl Request {
    /// A request with this method to `url`.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Self {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout_ms: None,
        }
    }

    /// A `GET` to `url`.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new(Method::Get, url)
    }

    /// A `POST` to `url`.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new(Method::Post, url)
    }

    /// A `PUT` to `url`.
    pub fn put(url: impl Into<String>) -> Self {
        Self::new(Method::Put, url)
    }

    /// Adds a header (several of one name are all sent).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Adds every header of `headers`, e.g. a Hookline request's
    /// [`crate::Request::signed_headers`] to forward a signed body.
    pub fn headers<'a>(mut self, headers: impl IntoIterator<Item = &'a (String, String)>) -> Self {
        self.headers.extend(headers.into_iter().cloned());
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets the body to `value` as JSON, with `Content-Type:
    /// application/json` unless a content type is already set.
    pub fn json<T: serde::Serialize + ?Sized>(mut self, value: &T) -> Self {
        // Serializing plain data (serde_json::Value, derived structs with
        // string keys) cannot fail.
        self.body = serde_json::to_vec(value).expect("a JSON value serializes");
        if !self.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-type")) {
            self.headers
                .push(("Content-Type".to_string(), "application/json".to_string()));
        }
        self
    }

    /// Waits at most this long for the answer (the host's limit still
    /// applies).
    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = Some(ms);
        self
    }

    /// Sends the request and reads the whole answer. Any status is an
    /// `Ok` (map it with [`crate::Outcome::from_response`]); an `Err` means
    /// no answer came.
    pub fn send(self) -> Result<Response, Error> {
        let url = Url::parse(&self.url)?;
        imp::send(self, url)
    }
}

/// An answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, names as the server sent them.
    pub headers: Vec<(String, String)>,
    /// The whole body (the host caps it, 1 MiB by default).
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `Retry-After` in milliseconds: delta-seconds, or an HTTP date (one
    /// in the past is 0). `None` when absent or unreadable.
    ///
    /// ```
    /// let response = hookline_sink::http::Response {
    ///     status: 429,
    ///     headers: vec![("retry-after".into(), "3".into())],
    ///     body: vec![],
    /// };
    /// assert_eq!(response.retry_after_ms(), Some(3000));
    /// ```
    pub fn retry_after_ms(&self) -> Option<u64> {
        parse_retry_after(self.header("retry-after")?)
    }
}

/// `Retry-After` as delta-seconds or an HTTP date, in milliseconds.
pub(crate) fn parse_retry_after(value: &str) -> Option<u64> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(secs.saturating_mul(1000));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    let wait = when.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
    Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX))
}

/// Why no answer came.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The URL is not an absolute `http`/`https` URL.
    #[error("invalid URL {url:?}: {problem}; give an absolute http:// or https:// URL")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The host refused to send it: its origin is not in the webhook's
    /// `allowed_hosts` (`HTTP-request-denied`).
    #[error("the host denied the request to {origin}: add its origin to the webhook's allowed_hosts")]
    Denied {
        /// `scheme://host[:port]`.
        origin: String,
    },
    /// The host refused to send it: the origin is allowed, but its address
    /// (written in the URL, or what its name resolves to) is loopback,
    /// private or link-local, and its `allowed_hosts` entry does not say
    /// `allow_private` (`destination-IP-prohibited`).
    #[error(
        "the host refused the request to {origin}: it is or resolves to a non-public address (loopback, private or link-local); if the receiver is on your own network, set \"allow_private\": true on its entry in the webhook's allowed_hosts"
    )]
    NonPublicAddress {
        /// `scheme://host[:port]`.
        origin: String,
    },
    /// No answer in time.
    #[error("no answer from {origin} in time")]
    Timeout {
        /// `scheme://host[:port]`.
        origin: String,
    },
    /// DNS, connection, TLS or protocol failure, or a body over the cap.
    #[error("request to {origin} failed: {detail}")]
    Transport {
        /// `scheme://host[:port]`.
        origin: String,
        /// What failed.
        detail: String,
    },
}

impl Error {
    /// Whether another attempt may succeed (everything but a bad URL, a
    /// denied origin and a refused non-public address, which only an app
    /// file change fixes).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Timeout { .. } | Error::Transport { .. })
    }
}

/// The parts of an absolute URL the outgoing handler wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    /// `http` or `https` (lowercase).
    pub(crate) scheme: String,
    /// `host[:port]`.
    pub(crate) authority: String,
    /// `/path?query` (never empty; no fragment).
    pub(crate) path_with_query: String,
}

impl Url {
    pub(crate) fn parse(url: &str) -> Result<Self, Error> {
        let invalid = |problem: &str| Error::InvalidUrl {
            url: url.to_string(),
            problem: problem.to_string(),
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("no scheme"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(invalid("the scheme is not http or https"));
        }
        let rest = rest.split('#').next().unwrap_or_default();
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if authority.is_empty() {
            return Err(invalid("no host"));
        }
        if authority.contains('@') {
            // Credentials belong in allowed_hosts' headers, where the
            // guest never sees them.
            return Err(invalid("user info in the URL is not supported"));
        }
        if authority.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("the host has a space or control character"));
        }
        let path_with_query = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        Ok(Self {
            scheme,
            authority: authority.to_string(),
            path_with_query,
        })
    }

    /// `scheme://authority`, for messages.
    pub(crate) fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use std::io::Read;
    use std::time::Duration;

    use super::{Error, Method, Request, Response, Url};

    /// The most of a body read natively, as the host's default cap.
    const BODY_CAP: u64 = 1 << 20;

    pub(super) fn send(request: Request, url: Url) -> Result<Response, Error> {
        let origin = url.origin();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // The host follows no redirect; neither does the native client.
            .max_redirects(0)
            .timeout_global(request.timeout_ms.map(Duration::from_millis))
            .build()
            .into();
        let target = format!("{}://{}{}", url.scheme, url.authority, url.path_with_query);
        let result = match request.method {
            Method::Get | Method::Delete => {
                let mut builder = if request.method == Method::Get {
                    agent.get(&target)
                } else {
                    agent.delete(&target)
                };
                for (name, value) in &request.headers {
                    builder = builder.header(name, value);
                }
                builder.call()
            }
            Method::Post | Method::Put | Method::Patch => {
                let mut builder = match request.method {
                    Method::Post => agent.post(&target),
                    Method::Put => agent.put(&target),
                    _ => agent.patch(&target),
                };
                for (name, value) in &request.headers {
                    builder = builder.header(name, value);
                }
                builder.send(&request.body[..])
            }
        };
        let mut response = result.map_err(|error| classify(error, &origin))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut body = Vec::new();
        response
            .body_mut()
            .as_reader()
            .take(BODY_CAP)
            .read_to_end(&mut body)
            .map_err(|e| Error::Transport {
                origin: origin.clone(),
                detail: format!("reading the body: {e}"),
            })?;
        Ok(Response { status, headers, body })
    }

    fn classify(error: ureq::Error, origin: &str) -> Error {
        match error {
            ureq::Error::Timeout(_) => Error::Timeout {
                origin: origin.to_string(),
            },
            other => Error::Transport {
                origin: origin.to_string(),
                detail: other.to_string(),
            },
        }
    }
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::{Error, Method, Request, Response, Url};
    use crate::__private::bindings::wasi::http::outgoing_handler;
    use crate::__private::bindings::wasi::http::types::{
        ErrorCode, Fields, FutureIncomingResponse, IncomingBody, IncomingResponse, Method as WasiMethod, OutgoingBody,
        OutgoingRequest, RequestOptions, Scheme, http_error_code,
    };
    use crate::__private::bindings::wasi::io::streams::{OutputStream, StreamError};

    /// The most read a call; the host caps the whole body.
    const READ: u64 = 64 * 1024;

    pub(super) fn send(request: Request, url: Url) -> Result<Response, Error> {
        let origin = url.origin();
        let transport = |detail: String| Error::Transport {
            origin: origin.clone(),
            detail,
        };
        let entries: Vec<(String, Vec<u8>)> = request
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), v.clone().into_bytes()))
            .collect();
        let headers = Fields::from_list(&entries).map_err(|e| transport(format!("invalid header: {e:?}")))?;
        let outgoing = OutgoingRequest::new(headers);
        let method = match request.method {
            Method::Get => WasiMethod::Get,
            Method::Post => WasiMethod::Post,
            Method::Put => WasiMethod::Put,
            Method::Patch => WasiMethod::Patch,
            Method::Delete => WasiMethod::Delete,
        };
        let scheme = if url.scheme == "https" {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let set = outgoing
            .set_method(&method)
            .and_then(|()| outgoing.set_scheme(Some(&scheme)))
            .and_then(|()| outgoing.set_authority(Some(&url.authority)))
            .and_then(|()| outgoing.set_path_with_query(Some(&url.path_with_query)));
        if set.is_err() {
            return Err(Error::InvalidUrl {
                url: request.url.clone(),
                problem: "the host refused its authority or path".to_string(),
            });
        }
        let options = request.timeout_ms.map(|ms| {
            let options = RequestOptions::new();
            let ns = ms.saturating_mul(1_000_000);
            // A host that does not support a timeout keeps its own.
            let _ = options.set_connect_timeout(Some(ns));
            let _ = options.set_first_byte_timeout(Some(ns));
            let _ = options.set_between_bytes_timeout(Some(ns));
            options
        });
        let body = outgoing
            .body()
            .map_err(|()| transport("the request body was already taken".into()))?;
        // The body goes into the host's buffer before the request is handed
        // over, so that a body that fits (most do) leaves whole, without a
        // wait between this guest and the task that sends it.
        let stream = body
            .write()
            .map_err(|()| transport("the body stream was already taken".into()))?;
        let rest = write_available(&stream, &request.body).map_err(&transport)?;
        let future = if rest.is_empty() {
            // The stream is a child of the body: dropped before finish.
            drop(stream);
            OutgoingBody::finish(body, None).map_err(|code| transport(format!("finishing the body: {code:?}")))?;
            outgoing_handler::handle(outgoing, options).map_err(|code| error_from(code, &origin))?
        } else {
            let future = outgoing_handler::handle(outgoing, options).map_err(|code| error_from(code, &origin))?;
            // The host reads the rest while it sends; when it denies the
            // request it closes the stream, and the reason is in the future.
            if let Err(written) = write_rest(stream, body, rest) {
                return Err(answer(&future, &origin).err().unwrap_or_else(|| transport(written)));
            }
            future
        };
        let incoming = answer(&future, &origin)?;
        let status = incoming.status();
        let headers = incoming
            .headers()
            .entries()
            .into_iter()
            .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let body = incoming
            .consume()
            .map_err(|()| transport("the response body was already taken".into()))?;
        let bytes = read_body(&body, &origin)?;
        drop(IncomingBody::finish(body));
        Ok(Response {
            status,
            headers,
            body: bytes,
        })
    }

    /// Writes as much of `bytes` as the stream takes without waiting;
    /// returns what is left.
    fn write_available<'a>(stream: &OutputStream, mut bytes: &'a [u8]) -> Result<&'a [u8], String> {
        while !bytes.is_empty() {
            let room = stream
                .check_write()
                .map_err(|e| format!("writing the body: {}", stream_error(e)))?;
            if room == 0 {
                break;
            }
            let (now, later) = bytes.split_at(bytes.len().min(usize::try_from(room).unwrap_or(usize::MAX)));
            stream
                .write(now)
                .map_err(|e| format!("writing the body: {}", stream_error(e)))?;
            bytes = later;
        }
        Ok(bytes)
    }

    /// Writes the rest of a body the host is already sending, waiting for
    /// room as it goes (as much as the stream takes per write, not 4096-byte
    /// `blocking-write-and-flush` calls: each wait is a round trip through
    /// the host), and finishes it.
    fn write_rest(stream: OutputStream, body: OutgoingBody, mut rest: &[u8]) -> Result<(), String> {
        while !rest.is_empty() {
            rest = write_available(&stream, rest)?;
            if !rest.is_empty() {
                stream.subscribe().block();
            }
        }
        stream
            .blocking_flush()
            .map_err(|e| format!("writing the body: {}", stream_error(e)))?;
        // The stream is a child of the body: dropped before finish.
        drop(stream);
        OutgoingBody::finish(body, None).map_err(|code| format!("finishing the body: {code:?}"))
    }

    fn read_body(body: &IncomingBody, origin: &str) -> Result<Vec<u8>, Error> {
        let stream = body.stream().map_err(|()| Error::Transport {
            origin: origin.to_string(),
            detail: "the response body stream was already taken".to_string(),
        })?;
        let mut bytes = Vec::new();
        loop {
            match stream.blocking_read(READ) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(StreamError::Closed) => return Ok(bytes),
                // A body over the host's cap, a reset or a timeout: the
                // host says which as an HTTP error code.
                Err(StreamError::LastOperationFailed(error)) => {
                    return Err(match http_error_code(&error) {
                        Some(code) => error_from(code, origin),
                        None => Error::Transport {
                            origin: origin.to_string(),
                            detail: format!("reading the body: {}", error.to_debug_string()),
                        },
                    });
                }
            }
        }
    }

    fn stream_error(error: StreamError) -> String {
        match error {
            StreamError::Closed => "the stream closed".to_string(),
            StreamError::LastOperationFailed(e) => match http_error_code(&e) {
                Some(code) => format!("{code:?}"),
                None => e.to_debug_string(),
            },
        }
    }

    /// Waits for the response head.
    fn answer(future: &FutureIncomingResponse, origin: &str) -> Result<IncomingResponse, Error> {
        future.subscribe().block();
        match future.get() {
            Some(Ok(Ok(response))) => Ok(response),
            Some(Ok(Err(code))) => Err(error_from(code, origin)),
            Some(Err(())) => Err(Error::Transport {
                origin: origin.into(),
                detail: "the response was already taken".into(),
            }),
            None => Err(Error::Transport {
                origin: origin.into(),
                detail: "no response after waiting for it".into(),
            }),
        }
    }

    fn error_from(code: ErrorCode, origin: &str) -> Error {
        let origin = origin.to_string();
        match code {
            ErrorCode::HttpRequestDenied => Error::Denied { origin },
            ErrorCode::DestinationIpProhibited => Error::NonPublicAddress { origin },
            ErrorCode::ConnectionTimeout
            | ErrorCode::ConnectionReadTimeout
            | ErrorCode::ConnectionWriteTimeout
            | ErrorCode::HttpResponseTimeout => Error::Timeout { origin },
            ErrorCode::HttpRequestUriInvalid => Error::InvalidUrl {
                url: origin,
                problem: "the host calls it invalid".to_string(),
            },
            other => Error::Transport {
                origin,
                detail: format!("{other:?}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_absolute_urls() {
        let url = Url::parse("HTTPS://hooks.slack.com:8443/services/T/B?x=1#frag").unwrap();
        assert_eq!(url.scheme, "https");
        assert_eq!(url.authority, "hooks.slack.com:8443");
        assert_eq!(url.path_with_query, "/services/T/B?x=1");
        assert_eq!(Url::parse("http://a").unwrap().path_with_query, "/");
        assert_eq!(Url::parse("http://a?q").unwrap().path_with_query, "/?q");
        for bad in ["hooks.slack.com/x", "ftp://a/b", "http:///x", "http://u:p@a/"] {
            let error = Url::parse(bad).unwrap_err();
            assert!(error.to_string().contains("absolute http"), "{error}");
        }
    }

    #[test]
    fn reads_retry_after_in_both_forms() {
        assert_eq!(parse_retry_after(" 120 "), Some(120_000));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), Some(0));
        assert!(parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT").unwrap() > 1_000_000);
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn refusals_by_the_host_are_final_and_say_what_to_change() {
        let denied = Error::Denied {
            origin: "https://evil.example:443".into(),
        };
        assert!(!denied.is_transient());
        assert!(denied.to_string().contains("allowed_hosts"), "{denied}");
        let private = Error::NonPublicAddress {
            origin: "http://127.0.0.1:8080".into(),
        };
        assert!(!private.is_transient());
        let text = private.to_string();
        assert!(
            text.contains("http://127.0.0.1:8080")
                && text.contains("non-public address")
                && text.contains(r#"set "allow_private": true"#),
            "{text}"
        );
    }

    #[test]
    fn json_sets_the_content_type_once() {
        let request = Request::post("http://a/").json(&serde_json::json!({"a": 1}));
        assert_eq!(request.body, br#"{"a":1}"#);
        assert_eq!(
            request.headers,
            vec![("Content-Type".into(), "application/json".into())]
        );
        let request = Request::post("http://a/").header("content-type", "text/plain").json(&1);
        assert_eq!(request.headers.len(), 1);
    }
}
