//! `hookline sink …`, for authors of sink components: `hookline sink new`
//! starts a project (a sink and its native test) on the Rust SDK
//! (`sdk/sink`, crate `hookline-sink`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

/// `hookline sink …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Start a sink component project (a sink that POSTs each batch's
    /// events as JSON, and its native test) in a new directory.
    New(NewArgs),
    // `run`: `hookline sink run SINK.wasm --config … --batch FILE` takes its
    // variant here and its function beside `new` below.
}

/// A sink component language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Lang {
    /// Rust, with the hookline-sink crate (`sdk/sink`).
    Rust,
    /// JavaScript: not yet.
    #[value(hide = true)]
    Js,
}

/// Flags of `hookline sink new`.
#[derive(Debug, clap::Args)]
pub(crate) struct NewArgs {
    /// The project directory to create; its name is the sink's.
    dir: PathBuf,
    /// The language.
    #[arg(long, value_enum)]
    lang: Lang,
    /// The sdk/ directory of a Hookline checkout (default: HOOKLINE_SDK, or
    /// the checkout this binary was built in).
    #[arg(long)]
    sdk: Option<PathBuf>,
}

pub(crate) async fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::New(args) => new(args),
    }
}

/// `hookline sink new`.
fn new(args: NewArgs) -> Result<ExitCode> {
    let sdk = super::scaffold::find_sdk(args.sdk)?;
    if !sdk.join("wit/sink.wit").is_file() || !sdk.join("sink/Cargo.toml").is_file() {
        bail!(
            "{} has no sink SDK (wit/sink.wit and sink/Cargo.toml): pass --sdk with the sdk/ directory of a Hookline checkout that has sink components",
            sdk.display()
        );
    }
    let next = scaffold(&args.dir, args.lang, &sdk)?;
    println!("created {}; next:\n{next}", args.dir.display());
    Ok(ExitCode::SUCCESS)
}

/// Writes the project into `dir` (which must not exist); returns what to
/// run next.
pub(crate) fn scaffold(dir: &Path, lang: Lang, sdk: &Path) -> Result<String> {
    if lang != Lang::Rust {
        bail!("--lang {lang:?}: sink components can be written in Rust only for now; use --lang rust");
    }
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .with_context(|| format!("{}: a sink's name is letters, digits, - and _", dir.display()))?;
    if dir.exists() {
        bail!("{} already exists; choose another name", dir.display());
    }
    let sdk_text = sdk.to_str().context("the SDK path is not UTF-8")?;
    let snake = name.replace('-', "_");
    let files = [
        (
            "Cargo.toml",
            RUST_CARGO.replace("{name}", name).replace("{sdk}", sdk_text),
        ),
        ("src/lib.rs", RUST_LIB.to_string()),
        ("README.md", README.replace("{name}", name).replace("{snake}", &snake)),
        (".gitignore", "target/\n".to_string()),
    ];
    for (file, text) in files {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().expect("a file in the project"))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(format!(
        "cd {}\ncargo test\ncargo build --release --target wasm32-wasip2   # target/wasm32-wasip2/release/{snake}.wasm",
        dir.display()
    ))
}

const RUST_CARGO: &str = r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
hookline-sink = { path = "{sdk}/sink" }
serde = { version = "1", features = ["derive"] }
serde_json = "1"
"#;

const RUST_LIB: &str = r##"//! POSTs each batch's events, as a JSON array, to the configured URL.

use hookline_sink::{Outcome, Request, Sink, http};

/// The sink's "config" in the app file.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    url: String,
}

pub struct EventsSink;

impl Sink for EventsSink {
    type Config = Config;

    fn validate_config(config: &Config) -> Result<(), String> {
        if !config.url.starts_with("https://") && !config.url.starts_with("http://") {
            return Err(format!("`url` must be an absolute http(s) URL, not {:?}", config.url));
        }
        Ok(())
    }

    // `request.events` are the parsed events (`name`, `channel`, `user_id`,
    // …), `request.events_json()` the same as JSON objects; `request.body`
    // and `request.signed_headers()` are what Hookline's HTTP sink would
    // send (`request.forward(url)` sends them untouched). The origin of
    // every URL requested must be in the webhook's `allowed_hosts`.
    fn deliver(request: &Request, config: &Config) -> Outcome {
        let sent = http::Request::post(&config.url)
            .header("Idempotency-Key", &request.batch_id)
            .json(&request.events_json())
            .send();
        // 2xx: delivered; 429, 408, 425, 5xx and no answer: retried
        // (Retry-After honoured); any other status: dead letters.
        Outcome::from_http(sent)
    }
}

hookline_sink::export_sink!(EventsSink);

#[cfg(test)]
mod tests {
    use super::*;
    use hookline_sink::testing::{self, Answer, Receiver};
    use hookline_sink::{Event, serde_json::json};

    #[test]
    fn posts_the_events_as_a_json_array() {
        let receiver = Receiver::start();
        let config = format!(r#"{{"url":"{}/events"}}"#, receiver.url());
        let request = testing::request(vec![Event::new("channel_occupied", "room-1")]).build();
        assert_eq!(testing::deliver::<EventsSink>(&config, &request), Ok(Outcome::Delivered));
        let received = receiver.requests();
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].path, "/events");
        assert_eq!(received[0].header("idempotency-key"), Some(request.batch_id.as_str()));
        assert_eq!(received[0].json(), json!([{"name": "channel_occupied", "channel": "room-1"}]));
    }

    #[test]
    fn a_throttled_answer_is_retried_after_its_wait() {
        let receiver = Receiver::start();
        receiver.respond_with(Answer::status(429).header("Retry-After", "2"));
        let config = format!(r#"{{"url":"{}/events"}}"#, receiver.url());
        let request = testing::request(vec![Event::new("channel_vacated", "room-1")]).build();
        assert_eq!(
            testing::deliver::<EventsSink>(&config, &request),
            Ok(Outcome::retry_after(2000, "answered 429 (throttled)"))
        );
    }

    #[test]
    fn requires_an_absolute_url() {
        assert!(testing::validate::<EventsSink>(r#"{"url":"example.com"}"#).is_err());
    }
}
"##;

const README: &str = r#"# {name}

A Hookline sink component: POSTs each batch's events, as a JSON array, to
the configured `url`.

```sh
cargo test                                        # natively, against a local HTTP server
cargo build --release --target wasm32-wasip2      # target/wasm32-wasip2/release/{snake}.wasm
```

In an app file (`wasm` is relative to the app file; the origin of `url`
must be listed in `allowed_hosts`, whose `headers` the host adds to every
request to that origin, so a secret never enters the component):

```json
{
  "id": "app-1", "key": "app-key", "secret": "${APP_SECRET}",
  "webhooks": [{
    "id": "{name}",
    "sink": {
      "wasm": "{name}/target/wasm32-wasip2/release/{snake}.wasm",
      "config": {"url": "https://api.example.com/events"},
      "allowed_hosts": [
        {"origin": "https://api.example.com", "headers": {"Authorization": "Bearer ${API_TOKEN}"}}
      ]
    }
  }]
}
```
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_rust_project_and_refuses_an_existing_directory() {
        let root = tempfile::tempdir().unwrap();
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk");
        let dir = root.path().join("my-sink");
        let next = scaffold(&dir, Lang::Rust, &sdk).unwrap();
        assert!(next.ends_with("target/wasm32-wasip2/release/my_sink.wasm"), "{next}");
        let cargo = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(cargo.contains(&format!("hookline-sink = {{ path = \"{}/sink\" }}", sdk.display())));
        assert!(dir.join("src/lib.rs").is_file());
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
        assert!(
            readme.contains("my-sink/target/wasm32-wasip2/release/my_sink.wasm"),
            "{readme}"
        );
        let error = scaffold(&dir, Lang::Rust, &sdk).unwrap_err();
        assert!(error.to_string().contains("already exists"));
    }

    #[test]
    fn refuses_other_languages_and_bad_names() {
        let root = tempfile::tempdir().unwrap();
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk");
        let error = scaffold(&root.path().join("js-sink"), Lang::Js, &sdk).unwrap_err();
        assert!(error.to_string().contains("--lang rust"), "{error}");
        assert!(!root.path().join("js-sink").exists());
        assert!(scaffold(&root.path().join("no spaces"), Lang::Rust, &sdk).is_err());
    }
}
