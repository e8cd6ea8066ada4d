//! `hookline listen`: a local webhook receiver for trying Hookline out. It
//! prints every delivery and whether its signature verifies.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use hookline_core::signing::verify_hmac_sha256_hex;

/// Flags of `hookline listen`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7078")]
    listen: String,
    /// The app secret, to verify `X-Pusher-Signature`.
    #[arg(long)]
    secret: Option<String>,
}

pub(crate) async fn run(args: Args) -> Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen ADDR)", args.listen))?;
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush().ok();
    let app = Router::new().fallback(receive).with_state(args.secret);
    axum::serve(listener, app).await?;
    Ok(ExitCode::SUCCESS)
}

async fn receive(
    State(secret): State<Option<String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> &'static str {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("-");
    let verdict = match &secret {
        None => "signature not checked (pass --secret)",
        Some(secret) if verify_hmac_sha256_hex(secret.as_bytes(), &body, header("x-pusher-signature")) => {
            "signature OK"
        }
        Some(_) => "signature INVALID",
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{method} {uri} key={} batch={} {verdict}\n{}",
        header("x-pusher-key"),
        header("x-hookline-batch-id"),
        String::from_utf8_lossy(&body)
    );
    let _ = out.flush();
    "ok"
}
