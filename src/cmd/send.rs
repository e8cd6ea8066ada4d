//! `hookline send`: publish one event through the native ingest, signed as
//! a Pusher server library would sign it.

use std::process::ExitCode;

use anyhow::{Context, Result};
use hookline_core::signing::pusher_signed_query;

/// Flags of `hookline send`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The app id.
    #[arg(long)]
    app: String,
    /// The app key.
    #[arg(long)]
    key: String,
    /// The app secret.
    #[arg(long)]
    secret: String,
    /// The event name (channel_occupied, member_added, client_event, …).
    #[arg(long)]
    event: String,
    /// The channel.
    #[arg(long)]
    channel: String,
    /// The event's `data` (a string, as Pusher sends it).
    #[arg(long)]
    data: Option<String>,
    /// Hookline's address.
    #[arg(long, default_value = "http://127.0.0.1:7077")]
    url: String,
}

pub(crate) async fn run(args: Args) -> Result<ExitCode> {
    let mut event = serde_json::json!({ "name": args.event, "channel": args.channel });
    if let Some(data) = &args.data {
        event["data"] = data.as_str().into();
    }
    let body = format!("{{\"events\":[{event}]}}");
    let path = format!("/apps/{}/webhook_events", args.app);
    let timestamp = hookline_core::store::now_ms() / 1000;
    let query = pusher_signed_query(&args.key, &args.secret, &path, body.as_bytes(), timestamp);
    let url = format!("{}{path}?{query}", args.url.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .with_context(|| format!("cannot reach hookline at {}; is `hookline serve` running?", args.url))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    println!("{} {}", status.as_u16(), text.trim());
    Ok(if status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
