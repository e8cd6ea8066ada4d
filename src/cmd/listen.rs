//! `hookline listen`: a local webhook receiver for trying Hookline out. It
//! prints every delivery and whether its signature verifies: against any of
//! the `--secret`s, or against the secret of the app whose key the delivery
//! carries, read from the app files of `--apps DIR`.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use hookline_core::config::{App, read_apps_without_filters};
use hookline_core::signing::verify_hmac_sha256_hex;

/// Flags of `hookline listen`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7078")]
    listen: String,
    /// An app secret, to verify `X-Pusher-Signature`. Repeat it for several
    /// apps: a delivery verifies if any of them matches.
    #[arg(long = "secret", value_name = "SECRET")]
    secrets: Vec<String>,
    /// A directory of app files (as `serve --apps` reads them, `${NAME}`
    /// references included): each delivery is verified with the secret of
    /// the app whose key is in its `X-Pusher-Key`.
    #[arg(long = "apps", value_name = "DIR")]
    apps: Option<PathBuf>,
}

pub(crate) async fn run(args: Args) -> Result<ExitCode> {
    let apps = match args.apps {
        Some(dir) => Some(AppKeys::read(dir).await?),
        None => None,
    };
    let verifier = Arc::new(Verifier {
        secrets: args.secrets,
        apps,
    });
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen ADDR)", args.listen))?;
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush().ok();
    let app = Router::new().fallback(receive).with_state(verifier);
    axum::serve(listener, app).await?;
    Ok(ExitCode::SUCCESS)
}

/// Decides what a delivery's signature is: the secrets it may be signed
/// with, from `--secret` and from `--apps`.
struct Verifier {
    /// The `--secret`s, in the order given.
    secrets: Vec<String>,
    /// The apps of `--apps DIR`, by key.
    apps: Option<AppKeys>,
}

impl Verifier {
    /// The verdict printed for a delivery with these headers and body.
    async fn verdict(&self, key: &str, signature: &str, body: &[u8]) -> String {
        let signed_with = |secret: &str| verify_hmac_sha256_hex(secret.as_bytes(), body, signature);
        // The key's app first: it names the app that matched.
        let app = match &self.apps {
            Some(apps) => apps.find(key, &signed_with).await,
            None => None,
        };
        if let Some(app) = &app
            && signed_with(app.secret.expose())
        {
            return format!("signature OK (app {})", app.id);
        }
        if let Some(index) = self.secrets.iter().position(|s| signed_with(s)) {
            return match self.secrets.len() {
                1 => "signature OK".to_string(),
                n => format!("signature OK (--secret {} of {n})", index + 1),
            };
        }
        let no_secret_matches = match self.secrets.len() {
            0 => "",
            1 => ", nor --secret",
            _ => ", nor any --secret",
        };
        match (&self.apps, app) {
            (None, _) if self.secrets.is_empty() => "signature not checked (pass --secret or --apps)".to_string(),
            (None, _) => "signature INVALID".to_string(),
            (Some(_), Some(app)) => format!("signature INVALID (not app {}'s secret{no_secret_matches})", app.id),
            (Some(apps), None) if self.secrets.is_empty() => format!(
                "signature not checked: unknown key {key} (no app in {} has it)",
                apps.dir.display()
            ),
            (Some(apps), None) => format!(
                "signature INVALID: unknown key {key} (no app in {} has it){no_secret_matches}",
                apps.dir.display()
            ),
        }
    }
}

/// The apps of `--apps DIR`, by key, as last read.
struct AppKeys {
    /// The directory.
    dir: PathBuf,
    /// Its apps and the refused files last reported; behind an async lock
    /// so that one delivery at a time re-reads the directory.
    current: tokio::sync::Mutex<Read>,
}

/// One reading of the apps directory.
#[derive(Default)]
struct Read {
    /// Every app that would serve, by key.
    by_key: HashMap<String, Arc<App>>,
    /// The problems printed for this reading, so a re-read prints only new ones.
    problems: Vec<String>,
}

impl AppKeys {
    /// Reads `dir`, printing what it refused.
    async fn read(dir: PathBuf) -> Result<Self> {
        if !dir.is_dir() {
            bail!(
                "--apps {}: not a directory; give the directory of app files `hookline serve --apps` reads",
                dir.display()
            );
        }
        let apps = Self {
            dir,
            current: tokio::sync::Mutex::default(),
        };
        let read = apps.reread(&Read::default()).await?;
        eprintln!(
            "verifying deliveries with the secrets of {} apps under {}",
            read.by_key.len(),
            apps.dir.display()
        );
        *apps.current.lock().await = read;
        Ok(apps)
    }

    /// The app with `key`. When there is none, or its secret does not sign
    /// the delivery (`signed_with`), the directory is read again first: an
    /// app file may have been added or changed since.
    async fn find(&self, key: &str, signed_with: &impl Fn(&str) -> bool) -> Option<Arc<App>> {
        let mut current = self.current.lock().await;
        if let Some(app) = current.by_key.get(key)
            && signed_with(app.secret.expose())
        {
            return Some(app.clone());
        }
        match self.reread(&current).await {
            Ok(read) => *current = read,
            Err(error) => eprintln!("warning: {error:#}"),
        }
        current.by_key.get(key).cloned()
    }

    /// Reads the directory again; prints the problems `last` did not have.
    async fn reread(&self, last: &Read) -> Result<Read> {
        let settings = hookline_core::Settings {
            apps_dir: self.dir.clone(),
            ..hookline_core::Settings::default()
        };
        let read = read_apps_without_filters(&settings, super::sink_registry(&settings)?, super::process_env())
            .await
            .with_context(|| format!("--apps {}", self.dir.display()))?;
        let problems: Vec<String> = read
            .report
            .failures
            .iter()
            .flat_map(|f| f.to_string().lines().map(str::to_string).collect::<Vec<_>>())
            .collect();
        for problem in problems.iter().filter(|p| !last.problems.contains(p)) {
            eprintln!("warning: {problem} (its apps' deliveries show an unknown key)");
        }
        let by_key = read.apps.into_iter().map(|app| (app.key.to_string(), app)).collect();
        Ok(Read { by_key, problems })
    }
}

async fn receive(
    State(verifier): State<Arc<Verifier>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> &'static str {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("-");
    let key = header("x-pusher-key");
    let verdict = verifier.verdict(key, header("x-pusher-signature"), &body).await;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{method} {uri} key={key} batch={} {verdict}\n{}",
        header("x-hookline-batch-id"),
        String::from_utf8_lossy(&body)
    );
    let _ = out.flush();
    "ok"
}
