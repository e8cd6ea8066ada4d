//! Direct requests to the daemon: signed native and relay ingest.

use super::*;

// ---------------------------------------------------------------------------
// Direct requests.

pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// POSTs `body` to the relay endpoint signed with `secret`.
pub async fn relay(daemon: &Daemon, key: &str, signature: &str, body: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{}/pusher/webhooks", daemon.url()))
        .header("content-type", "application/json")
        .header("x-pusher-key", key)
        .header("x-pusher-signature", signature)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

pub fn sign(secret: &str, body: &str) -> String {
    hookline_core::signing::hmac_sha256_hex(secret.as_bytes(), body.as_bytes())
}

/// POSTs a native ingest body signed by our own signer (for tests that are
/// not about signing itself).
pub async fn native_response(daemon: &Daemon, app: &str, key: &str, secret: &str, body: &str) -> reqwest::Response {
    post_native(&daemon.url(), app, key, secret, body).await.unwrap()
}

/// [`native_response`] against a base URL, with the transport error
/// instead of a panic (for daemons killed mid-request).
pub async fn post_native(
    base_url: &str,
    app: &str,
    key: &str,
    secret: &str,
    body: &str,
) -> reqwest::Result<reqwest::Response> {
    let path = format!("/apps/{app}/webhook_events");
    let query = hookline_core::signing::pusher_signed_query(key, secret, &path, body.as_bytes(), unix_ms() / 1000);
    reqwest::Client::new()
        .post(format!("{base_url}{path}?{query}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .timeout(PATIENCE)
        .send()
        .await
}

/// [`native_response`]'s status and body text.
pub async fn native(daemon: &Daemon, app: &str, key: &str, secret: &str, body: &str) -> (u16, String) {
    let response = native_response(daemon, app, key, secret, body).await;
    (response.status().as_u16(), response.text().await.unwrap())
}

/// `{"events":[...]}` of simple events `(name, channel)`.
pub fn events_body(events: &[(&str, &str)]) -> String {
    let events: Vec<serde_json::Value> = events
        .iter()
        .map(|(name, channel)| serde_json::json!({"name": name, "channel": channel}))
        .collect();
    serde_json::json!({ "events": events }).to_string()
}
