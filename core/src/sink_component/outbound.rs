//! A sink component's only door to the world: outgoing HTTP, checked and
//! sent by the host.
//!
//! Every request a guest hands to `wasi:http/outgoing-handler` lands in
//! [`OutboundHooks::send_request`] before any connection exists. It must
//! name an absolute URI whose scheme, host and port are one of the
//! webhook's `allowed_hosts`; names are resolved by the host, which refuses
//! non-public addresses unless the origin allows them; the origin's secret
//! headers are added here, where the guest never sees them; and the request
//! goes out on one pooled client shared by every component, with redirects
//! left to the guest (which may only follow them to allowed origins).

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// Largest request body a guest may send (and at most its memory cap:
/// the host buffers each body, and the guest's cap must bound that too).
const MAX_REQUEST_BYTES: usize = 16 << 20;
/// Outgoing requests one call may have open at once.
const MAX_OPEN_REQUESTS: usize = 8;
/// Refusals logged per call; the rest are counted in the last line.
const REFUSALS_LOGGED_PER_CALL: u32 = 3;

/// One entry of a webhook's `allowed_hosts`.
#[derive(Clone)]
pub(crate) struct AllowedOrigin {
    pub scheme: http::uri::Scheme,
    /// Lower case, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// Added to every request to this origin (replacing the guest's own).
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Loopback, private and link-local addresses are allowed.
    pub allow_private: bool,
}

impl std::fmt::Debug for AllowedOrigin {
    // Header values are secrets: only their names are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AllowedOrigin")
            .field("origin", &self.to_string())
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            )
            .field("allow_private", &self.allow_private)
            .finish()
    }
}

impl std::fmt::Display for AllowedOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{}://{host}:{}", self.scheme, self.port)
    }
}

impl AllowedOrigin {
    /// Parses an origin (`https://hooks.slack.com`, `http://127.0.0.1:8080`):
    /// a scheme (http or https), a host, an optional port, nothing else.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let url = url::Url::parse(text)
            .map_err(|e| format!("`{text}` is not an origin ({e}); write it as https://host[:port]"))?;
        let scheme = match url.scheme() {
            "http" => http::uri::Scheme::HTTP,
            "https" => http::uri::Scheme::HTTPS,
            other => {
                return Err(format!(
                    "`{text}` has the scheme `{other}`; only http and https origins are allowed"
                ));
            }
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "`{text}` holds credentials; put them in the entry's `headers` (e.g. Authorization) instead"
            ));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "`{text}` has a path, query or fragment; an origin is only scheme://host[:port] (every path on it is allowed)"
            ));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(format!("`{text}` has no host")),
        };
        let port = url.port_or_known_default().unwrap_or(80);
        Ok(Self {
            scheme,
            host,
            port,
            headers: Vec::new(),
            allow_private: false,
        })
    }

    fn matches(&self, scheme: &http::uri::Scheme, host: &str, port: u16) -> bool {
        self.scheme == *scheme && self.host == host && self.port == port
    }
}

/// Whether an address is one a sink may not reach unless its origin says
/// `allow_private`: loopback, private (RFC 1918, unique local), link-local,
/// carrier-grade NAT, unspecified, broadcast, multicast, and IPv4 written
/// as IPv6.
pub(crate) fn is_non_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (b & 0xc0) == 64)
                // IETF protocol assignments, benchmarking, reserved.
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (b & 0xfe) == 18)
                || a >= 240
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // IPv4 inside IPv6: mapped, compatible, NAT64 (DNS64 turns an
            // internal A record into one) and 6to4: judged by the IPv4.
            let low32 = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
            let compatible = s[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified();
            let nat64 = s[0] == 0x64 && s[1] == 0xff9b && (s[2..6] == [0; 4] || s[2] == 1);
            let embedded = if let Some(v4) = v6.to_ipv4_mapped() {
                Some(v4)
            } else if compatible || nat64 {
                Some(low32())
            } else if s[0] == 0x2002 {
                Some(Ipv4Addr::new(
                    (s[1] >> 8) as u8,
                    s[1] as u8,
                    (s[2] >> 8) as u8,
                    s[2] as u8,
                ))
            } else {
                None
            };
            if let Some(v4) = embedded {
                return is_non_public(IpAddr::V4(v4));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
        }
    }
}

/// The resolver of the strict client: a name any of whose addresses is
/// non-public is refused (a public name pointed at 127.0.0.1 is the classic
/// way around an allowlist).
struct PublicOnlyResolver;

#[derive(Debug)]
struct NonPublicAddress(IpAddr);

impl std::fmt::Display for NonPublicAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "resolves to the non-public address {}", self.0)
    }
}

impl std::error::Error for NonPublicAddress {}

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(bad) = addrs.iter().find(|a| is_non_public(a.ip())) {
                return Err(Box::new(NonPublicAddress(bad.ip())) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The two pooled clients every sink component shares: one that reaches
/// public addresses only, one for origins with `allow_private`.
#[derive(Clone, Debug)]
pub(crate) struct OutboundClients {
    public_only: reqwest::Client,
    any_address: reqwest::Client,
}

impl OutboundClients {
    pub(crate) fn new() -> Result<Self, reqwest::Error> {
        let builder = || {
            reqwest::Client::builder()
                // A proxy would resolve names itself, past the address check.
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .pool_idle_timeout(Duration::from_secs(90))
                .tcp_nodelay(true)
        };
        Ok(Self {
            public_only: builder().dns_resolver(Arc::new(PublicOnlyResolver)).build()?,
            any_address: builder().build()?,
        })
    }
}

/// What one delivery call may reach, and until when.
pub(crate) struct OutboundHooks {
    pub origins: Arc<[AllowedOrigin]>,
    pub clients: OutboundClients,
    /// When the attempt's `timeout_ms` runs out: no request outlives it.
    pub deadline: Instant,
    /// Largest response body read for the guest.
    pub max_response_bytes: usize,
    /// No request at all (while `validate-config` runs: loads and
    /// `hookline check` stay offline).
    pub offline: bool,
    /// Names the component in the log lines of refused requests.
    pub label: Arc<str>,
    /// Largest request body (the smaller of 16 MiB and the memory cap).
    pub max_request_bytes: usize,
    /// Requests of this instance not yet answered.
    pub open: Arc<AtomicUsize>,
    /// Refusals in the current call (reset by the call).
    pub refusals: Arc<AtomicU32>,
}

/// Logs a refused request, at most [`REFUSALS_LOGGED_PER_CALL`] per call
/// (a guest looping on refusals must not flood the log). The URI is not
/// logged: its query may hold a token; the origin is.
fn log_refusal(label: &str, refusals: &AtomicU32, why: &str) {
    match refusals.fetch_add(1, Ordering::Relaxed) {
        n if n < REFUSALS_LOGGED_PER_CALL => tracing::warn!(sink = label, "outgoing request refused: {why}"),
        REFUSALS_LOGGED_PER_CALL => tracing::warn!(
            sink = label,
            "outgoing request refused: {why}; further refusals in this call are not logged"
        ),
        _ => {}
    }
}

/// Counts a request as open until dropped.
struct OpenRequest(Arc<AtomicUsize>);

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

type ResponseFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

/// A refusal, after reading what the guest writes of the body: a guest
/// whose body stream closed under it (StarlingMonkey) traps instead of
/// seeing the refusal.
fn refuse(body: WasiBody, error: HttpError) -> ResponseFuture {
    Box::new(async move {
        // Read and dropped, not kept; a guest writing forever is cut off.
        let mut body = body;
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, Bytes::len);
            if seen > MAX_REQUEST_BYTES {
                break;
            }
        }
        Err(error)
    })
}

impl WasiHttpHooks for OutboundHooks {
    /// Room for a whole body of writes before the guest must wait: the
    /// request is sent once the body is complete anyway, and each wait is a
    /// round trip between the guest and the request's task.
    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        64
    }

    /// A request without a scheme is refused rather than sent as https.
    fn default_scheme(&mut self) -> Option<http::uri::Scheme> {
        None
    }

    /// The client writes `Host` from the checked URI.
    fn set_host_header(&mut self) -> bool {
        false
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _body_sent: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> ResponseFuture {
        let uri = request.uri().clone();
        let (Some(scheme), Some(host)) = (uri.scheme().cloned(), uri.host()) else {
            log_refusal(
                &self.label,
                &self.refusals,
                "the request's URI is not absolute (scheme://host/path)",
            );
            return refuse(request.into_body(), HttpError::HttpRequestUriInvalid);
        };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == http::uri::Scheme::HTTPS { 443 } else { 80 });
        let origin = format!("{scheme}://{}:{port}", uri.authority().map_or("", |a| a.host()));
        if self.offline {
            log_refusal(
                &self.label,
                &self.refusals,
                &format!("{origin}: validate-config may not make requests"),
            );
            return refuse(request.into_body(), HttpError::HttpRequestDenied);
        }
        let Some(allowed) = self.origins.iter().find(|o| o.matches(&scheme, &host, port)).cloned() else {
            log_refusal(
                &self.label,
                &self.refusals,
                &format!("{origin} is not in the webhook's allowed_hosts"),
            );
            return refuse(request.into_body(), HttpError::HttpRequestDenied);
        };
        // The client resolves names through the address check; an address
        // written in the URI never reaches a resolver.
        if let Ok(ip) = host.parse::<IpAddr>()
            && is_non_public(ip)
            && !allowed.allow_private
        {
            log_refusal(
                &self.label,
                &self.refusals,
                &format!(
                    "{origin} is a non-public address; set \"allow_private\": true on its allowed_hosts entry to reach it"
                ),
            );
            return refuse(request.into_body(), HttpError::DestinationIpProhibited);
        }
        let client = if allowed.allow_private {
            self.clients.any_address.clone()
        } else {
            self.clients.public_only.clone()
        };
        let deadline = self.deadline;
        let first_byte = options.and_then(|o| o.first_byte_timeout);
        let max_response_bytes = self.max_response_bytes;
        let max_request_bytes = self.max_request_bytes;
        let (label, refusals) = (self.label.clone(), self.refusals.clone());
        if self.open.fetch_add(1, Ordering::Relaxed) >= MAX_OPEN_REQUESTS {
            self.open.fetch_sub(1, Ordering::Relaxed);
            log_refusal(
                &self.label,
                &self.refusals,
                &format!("{origin}: more than {MAX_OPEN_REQUESTS} requests of one call are open at once"),
            );
            return refuse(request.into_body(), HttpError::HttpRequestDenied);
        }
        let open = OpenRequest(self.open.clone());
        Box::new(async move {
            let _open = open;
            let (mut parts, body) = request.into_parts();
            for (name, value) in &allowed.headers {
                parts.headers.insert(name.clone(), value.clone());
            }
            let body = http_body_util::Limited::new(body, max_request_bytes)
                .collect()
                .await
                .map_err(|_| HttpError::HttpRequestBodySize(Some(max_request_bytes as u64)))?
                .to_bytes();
            let request = reqwest::Request::try_from(http::Request::from_parts(parts, body))
                .map_err(|_| HttpError::HttpRequestUriInvalid)?;
            // The guest's own first-byte timeout, never past the attempt's.
            let answer_by = first_byte.map_or(deadline, |t| deadline.min(Instant::now() + t));
            let response = match tokio::time::timeout_at(answer_by, client.execute(request)).await {
                Err(_) => return Err(HttpError::ConnectionReadTimeout),
                Ok(Err(e)) if caused_by::<NonPublicAddress>(&e) => {
                    log_refusal(
                        &label,
                        &refusals,
                        &format!(
                            "{origin} resolves to a non-public address; set \"allow_private\": true on its allowed_hosts entry to reach it"
                        ),
                    );
                    return Err(HttpError::DestinationIpProhibited);
                }
                Ok(Err(e)) if e.is_timeout() => return Err(HttpError::ConnectionTimeout),
                Ok(Err(e)) if e.is_connect() => return Err(HttpError::ConnectionRefused),
                Ok(Err(e)) => return Err(HttpError::InternalError(Some(error_chain(&e)))),
                Ok(Ok(response)) => response,
            };
            let status = response.status();
            let version = response.version();
            let headers = response.headers().clone();
            let mut response = response;
            let mut body = Vec::new();
            loop {
                match tokio::time::timeout_at(deadline, response.chunk()).await {
                    Err(_) => return Err(HttpError::HttpResponseTimeout),
                    Ok(Err(_)) => return Err(HttpError::HttpResponseIncomplete),
                    Ok(Ok(None)) => break,
                    Ok(Ok(Some(chunk))) => {
                        if body.len() + chunk.len() > max_response_bytes {
                            return Err(HttpError::HttpResponseBodySize(Some(max_response_bytes as u64)));
                        }
                        body.extend_from_slice(&chunk);
                    }
                }
            }
            let mut out = http::Response::new(
                Full::new(Bytes::from(body))
                    .map_err(|never: Infallible| match never {})
                    .boxed_unsync(),
            );
            *out.status_mut() = status;
            *out.version_mut() = version;
            *out.headers_mut() = headers;
            let done: Box<dyn Future<Output = Result<(), HttpError>> + Send> = Box::new(async { Ok(()) });
            Ok((out, done))
        })
    }
}

fn caused_by<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<E>() {
            return true;
        }
        current = e.source();
    }
    false
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(e) = current {
        text.push_str(": ");
        text.push_str(&e.to_string());
        current = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        let o = AllowedOrigin::parse("https://Hooks.Slack.com").unwrap();
        assert_eq!((o.host.as_str(), o.port), ("hooks.slack.com", 443));
        assert_eq!(AllowedOrigin::parse("http://127.0.0.1:8080").unwrap().port, 8080);
        assert_eq!(AllowedOrigin::parse("http://[::1]:81").unwrap().host, "::1");
        assert!(
            AllowedOrigin::parse("https://hooks.slack.com/services/x")
                .unwrap_err()
                .contains("path")
        );
        assert!(
            AllowedOrigin::parse("ftp://x")
                .unwrap_err()
                .contains("only http and https")
        );
        assert!(
            AllowedOrigin::parse("https://u:p@x")
                .unwrap_err()
                .contains("credentials")
        );
        assert!(AllowedOrigin::parse("hooks.slack.com").is_err());
    }

    #[test]
    fn non_public_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_non_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "2606:4700::1111",
            "100.128.0.1",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(!is_non_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
