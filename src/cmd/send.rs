//! `hookline send`: publish one event through the native ingest, signed as
//! a Pusher server library would sign it. It prints hookline's answer
//! (`200 {}: accepted …`); a refusal is an error saying what to check.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
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
    let answer = format!("{} {}", status.as_u16(), text.trim());
    if !status.is_success() {
        bail!(
            "hookline refused the event: {answer}{}",
            refusal_hint(status.as_u16(), &args)
        );
    }
    println!(
        "{answer}: accepted {} on {} for app {}",
        args.event, args.channel, args.app
    );
    Ok(ExitCode::SUCCESS)
}

/// What to do about a refusal, by status (the answer's own `error` says
/// what was wrong).
fn refusal_hint(status: u16, args: &Args) -> String {
    match status {
        401 => format!(
            "; check that --key {} and --secret are app {}'s key and secret in its app file",
            args.key, args.app
        ),
        403 => format!("; app {} is disabled (\"enabled\": false in its app file)", args.app),
        404 => format!(
            "; no app {} is served at {}: check --app and --url (`hookline check` lists the apps)",
            args.app, args.url
        ),
        503 => "; hookline is shutting down or its backlog is full: try again later".to_string(),
        _ => String::new(),
    }
}
