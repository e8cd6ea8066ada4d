//! The `http` sink plugin: a webhook with a `url` key is delivered by POSTing
//! the signed body to that URL.
//!
//! One pooled [`reqwest::Client`] is shared by every http webhook (it is
//! cheap to clone and keeps connections alive per host); a webhook with
//! its own `tls` or `proxy` gets a client of its own. Redirects are not
//! followed: a 3xx is a final answer, as the product contract says.

mod client;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use hookline_sink_api::{
    Answer, BoxFuture, BuildContext, DeliveryError, Sink, SinkConfigError, SinkPlugin, SinkRequest, WebhookSpec,
    optional_str,
};
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};

/// The `User-Agent` every delivery carries.
pub const USER_AGENT_VALUE: &str = concat!("hookline/", env!("CARGO_PKG_VERSION"));

/// Longest excerpt of an error answer kept for logs and dead letters.
const DETAIL_LIMIT: usize = 512;

/// Builds [`HttpSink`]s for webhooks that carry a `url`.
#[derive(Debug, Clone)]
pub struct HttpSinkPlugin {
    /// Shared by every sink this plugin builds without a `tls` or `proxy`
    /// of its own, so connections are pooled.
    client: reqwest::Client,
    /// The daemon's `delivery.proxy`.
    default_proxy: Option<reqwest::Proxy>,
}

impl HttpSinkPlugin {
    /// Creates the plugin with its pooled client, which honours the
    /// environment's `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY`.
    pub fn new() -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: client::shared(None)?,
            default_proxy: None,
        })
    }

    /// Creates the plugin with a daemon-wide proxy (`delivery.proxy`) for
    /// every webhook without its own, except the hosts `NO_PROXY` names.
    pub fn with_default_proxy(proxy: Option<&str>) -> Result<Self, String> {
        let Some(text) = proxy.filter(|p| !p.trim().is_empty()) else {
            return Self::new().map_err(|e| format!("cannot build the HTTP client: {e}"));
        };
        let proxy = client::proxy_of(text).map_err(|e| format!("`delivery.proxy` {e}"))?;
        Ok(Self {
            client: client::shared(Some(&proxy)).map_err(|e| format!("cannot build the HTTP client: {e}"))?,
            default_proxy: Some(proxy),
        })
    }
}

impl SinkPlugin for HttpSinkPlugin {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn selector_key(&self) -> &'static str {
        "url"
    }

    fn own_keys(&self) -> &'static [&'static str] {
        &["tls", "proxy"]
    }

    fn build(&self, spec: &WebhookSpec) -> Result<Box<dyn Sink>, SinkConfigError> {
        self.build_with(
            spec,
            &BuildContext {
                base_dir: Path::new("."),
                app_id: "",
            },
        )
    }

    fn build_with(&self, spec: &WebhookSpec, context: &BuildContext<'_>) -> Result<Box<dyn Sink>, SinkConfigError> {
        let raw = optional_str(spec, "url")?.ok_or_else(|| SinkConfigError::new("`url` is missing"))?;
        let url =
            url::Url::parse(raw).map_err(|e| SinkConfigError::new(format!("`url` {raw:?} is not a valid URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SinkConfigError::new(format!(
                "`url` {raw:?} must start with http:// or https://"
            )));
        }
        if url.host().is_none() {
            return Err(SinkConfigError::new(format!("`url` {raw:?} has no host")));
        }
        let described = hookline_sink_api::redact_for_logs(url.as_str());
        let Some(options) = client::ClientOptions::read(spec, context.base_dir)? else {
            return Ok(Box::new(HttpSink {
                client: self.client.clone(),
                described,
                url,
            }));
        };
        let mut target = url.clone();
        if let Some(name) = &options.server_name {
            target
                .set_host(Some(name))
                .map_err(|e| SinkConfigError::new(format!("`tls.server_name` {name:?}: {e}")))?;
        }
        Ok(Box::new(HttpSink {
            client: client::own(options, self.default_proxy.as_ref(), &url)?,
            described,
            url: target,
        }))
    }
}

/// POSTs batches to one URL.
#[derive(Debug)]
pub struct HttpSink {
    client: reqwest::Client,
    /// Where requests go (its host is `tls.server_name` when set).
    url: url::Url,
    /// The URL without any `user:password@`, for logs.
    described: String,
}

impl Sink for HttpSink {
    fn describe(&self) -> String {
        self.described.clone()
    }

    fn max_body_bytes(&self, _extra_headers: &[(String, String)]) -> Option<usize> {
        None
    }

    fn default_timeout(&self) -> Duration {
        Duration::from_secs(10)
    }

    fn send<'a>(&'a self, request: SinkRequest<'a>) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let headers = build_headers(&request)?;
            let response = self
                .client
                .post(self.url.clone())
                .headers(headers)
                .timeout(request.timeout)
                .body(request.body)
                .send()
                .await
                .map_err(classify_reqwest_error)?;
            let status = response.status();
            let headers = request.answer.map(|_| response.headers().clone());
            let retry_after = if status.is_success() {
                None
            } else {
                response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after)
            };
            // Read whole even on success, so the connection goes back to the pool.
            let body = response.bytes().await.unwrap_or_default();
            if let (Some(slot), Some(headers)) = (request.answer, headers) {
                slot.record(Answer::new(headers, &body));
            }
            if status.is_success() {
                return Ok(());
            }
            let detail = excerpt(body);
            Err(DeliveryError::Status {
                code: status.as_u16(),
                retry_after,
                detail,
            })
        })
    }
}

/// The webhook's own headers first, then the signed ones, which replace any
/// header of the same name, and the fixed `Content-Type`.
fn build_headers(request: &SinkRequest<'_>) -> Result<http::HeaderMap, DeliveryError> {
    let mut headers = http::HeaderMap::with_capacity(request.extra_headers.len() + 6);
    for (name, value) in request.extra_headers {
        let name = HeaderName::try_from(name.as_str())
            .map_err(|_| DeliveryError::Final(format!("webhook header name {name:?} is not valid in HTTP")))?;
        let value = HeaderValue::try_from(value.as_str()).map_err(|_| {
            DeliveryError::Final(format!("webhook header {name} has a value that is not valid in HTTP"))
        })?;
        headers.append(name, value);
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    for (name, value) in request.signed_headers {
        let value = HeaderValue::try_from(value.as_str())
            .map_err(|_| DeliveryError::Final(format!("header {name} has a value that is not valid in HTTP")))?;
        headers.insert(HeaderName::from_static(lowercase_static(name)), value);
    }
    Ok(headers)
}

/// `HeaderName::from_static` needs lowercase; the signed header names are
/// fixed, so map them once here.
fn lowercase_static(name: &'static str) -> &'static str {
    match name {
        "X-Pusher-Key" => "x-pusher-key",
        "X-Pusher-Signature" => "x-pusher-signature",
        "X-Hookline-Batch-Id" => "x-hookline-batch-id",
        "X-Hookline-Batch-Time" => "x-hookline-batch-time",
        other => {
            debug_assert!(other.bytes().all(|b| !b.is_ascii_uppercase()), "{other}");
            other
        }
    }
}

fn classify_reqwest_error(error: reqwest::Error) -> DeliveryError {
    // Without the URL: it may carry credentials or tokens.
    let error = error.without_url();
    if error.is_timeout() {
        DeliveryError::Timeout
    } else if error.is_builder() {
        DeliveryError::Final(format!("could not build the request: {}", error_chain(&error)))
    } else {
        // Connect errors, resets, TLS and protocol errors are all worth
        // another try: the endpoint may come back.
        let mut reason = error_chain(&error);
        reason.push_str(tls_hint(&reason));
        DeliveryError::Connect(reason)
    }
}

/// What to do about a TLS failure the reason names.
fn tls_hint(reason: &str) -> &'static str {
    if reason.contains("CertificateRequired") || reason.contains("alert: HandshakeFailure") {
        " (the receiver wants a client certificate: set the webhook's tls.client_cert and tls.client_key)"
    } else if reason.contains("UnknownIssuer") || reason.contains("invalid peer certificate") {
        " (the receiver's certificate is not trusted: set the webhook's tls.ca to its CA, or tls.server_name to the name it was issued to)"
    } else {
        ""
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// `Retry-After` as delta-seconds or an HTTP date (a date in the past is
/// zero; the retry policy bounds both ends).
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn excerpt(body: Bytes) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(DETAIL_LIMIT)]);
    text.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> WebhookSpec {
        json.as_object().unwrap().clone()
    }

    #[test]
    fn refuses_non_http_urls() {
        let plugin = HttpSinkPlugin::new().unwrap();
        let err = plugin
            .build(&spec(serde_json::json!({"url": "ftp://x/y"})))
            .unwrap_err();
        assert!(err.message.contains("http://"), "{err}");
        let err = plugin
            .build(&spec(serde_json::json!({"url": "not a url"})))
            .unwrap_err();
        assert!(err.message.contains("not a valid URL"), "{err}");
        let err = plugin.build(&spec(serde_json::json!({"url": 5}))).unwrap_err();
        assert!(err.message.contains("must be a string"), "{err}");
    }

    #[test]
    fn describe_hides_credentials_and_query() {
        let plugin = HttpSinkPlugin::new().unwrap();
        let sink = plugin
            .build(&spec(
                serde_json::json!({"url": "https://user:pw@example.com/h?token=s3cret"}),
            ))
            .unwrap();
        let shown = sink.describe();
        assert!(!shown.contains("pw") && !shown.contains("s3cret"), "{shown}");
        assert!(shown.starts_with("https://example.com/h"), "{shown}");
    }

    #[test]
    fn parses_retry_after_forms() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO),
            "a date in the past"
        );
        let far = parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT").unwrap();
        assert!(far > Duration::from_secs(7000 * 365 * 86_400), "{far:?}");
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("Fri, 31 Dec 99999999 23:59:59 GMT"), None);
    }

    #[test]
    fn signed_headers_win_over_webhook_headers() {
        let signed = [
            ("X-Pusher-Key", "k".to_string()),
            ("X-Pusher-Signature", "abc".to_string()),
        ];
        let extra = [
            ("x-pusher-signature".to_string(), "forged".to_string()),
            ("Content-Type".to_string(), "text/plain".to_string()),
            ("X-Custom".to_string(), "1".to_string()),
        ];
        let request = SinkRequest {
            body: Bytes::new(),
            signed_headers: &signed,
            extra_headers: &extra,
            timeout: Duration::from_secs(1),
            app_id: "app",
            webhook_id: "hook",
            channel: None,
            attempt: 1,
            answer: None,
        };
        let headers = build_headers(&request).unwrap();
        assert_eq!(headers.get_all("x-pusher-signature").iter().count(), 1);
        assert_eq!(headers["x-pusher-signature"], "abc");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["x-custom"], "1");
    }
}
