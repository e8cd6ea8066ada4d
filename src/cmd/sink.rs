//! `hookline sink …`, for authors of sink components: `hookline sink new`
//! starts a project (a sink and its native test) on the Rust SDK
//! (`sdk/sink`, crate `hookline-sink`) or the JavaScript one (`sdk/js-sink`,
//! package `@hookline/sink`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

/// `hookline sink …`
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Start a sink component project (a sink that POSTs each batch's
    /// events as JSON, and its native test) in a new directory.
    New(NewArgs),
    /// Deliver one batch through a sink component, for real, to the origins
    /// allowed, and print its outcome (exit 0 only when delivered).
    Run(RunArgs),
}

/// Flags of `hookline sink run`.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The sink component (`.wasm`).
    sink: PathBuf,
    /// The sink's `config`, as JSON.
    #[arg(long, default_value = "null")]
    config: String,
    /// An origin the sink may send to (`https://hooks.slack.com`); repeat
    /// for more. Secret headers need `--allowed-hosts`.
    #[arg(long = "allow", value_name = "ORIGIN")]
    allow: Vec<String>,
    /// Let the `--allow` origins be loopback or private addresses (a
    /// receiver on this machine).
    #[arg(long)]
    allow_private: bool,
    /// The whole `allowed_hosts` array, as in an app file (entries with
    /// `headers` and `allow_private`), as JSON; `${NAME}` is not expanded.
    #[arg(long, value_name = "JSON")]
    allowed_hosts: Option<String>,
    /// The batch: `{"time_ms", "events": […]}` or an array of events; `-`
    /// (the default) reads stdin.
    #[arg(long, default_value = "-")]
    batch: PathBuf,
    /// The app id, key and secret the batch is signed for.
    #[arg(long, default_value = "app")]
    app: String,
    #[arg(long, default_value = "test-key")]
    key: String,
    #[arg(long, default_value = "test-secret")]
    secret: String,
    /// The webhook id the sink is told.
    #[arg(long, default_value = "hook")]
    webhook: String,
    /// The attempt's timeout.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// The CPU budget and memory cap of the call.
    #[arg(long, default_value_t = 50)]
    cpu_ms: u64,
    #[arg(long, default_value_t = 64)]
    memory_mb: u64,
}

/// A sink component language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Lang {
    /// Rust, with the hookline-sink crate (`sdk/sink`).
    Rust,
    /// JavaScript, with @hookline/sink (`sdk/js-sink`; componentize-js,
    /// whose `fetch` goes over wasi:http).
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
        Command::Run(args) => run_sink(args).await,
    }
}

/// `hookline sink run`: loads the component as a webhook would, signs the
/// batch as the daemon does, and delivers it once.
async fn run_sink(args: RunArgs) -> Result<ExitCode> {
    use std::io::Read;

    use hookline_core::event::{join_events, parse_ingest_body, render_body};
    use hookline_core::signing::hmac_sha256_hex;
    use hookline_core::sink_component::{CallOutcome, ComponentSink, SinkComponentHost};

    super::init_logging(hookline_core::settings::LogFormat::Text);
    let config: serde_json::Value = serde_json::from_str(&args.config).context("--config is not valid JSON")?;
    let allowed_hosts: serde_json::Value = match &args.allowed_hosts {
        Some(text) => serde_json::from_str(text).context("--allowed-hosts is not valid JSON")?,
        None => args
            .allow
            .iter()
            .map(|origin| serde_json::json!({ "origin": origin, "allow_private": args.allow_private }))
            .collect(),
    };
    let mut input = Vec::new();
    if args.batch.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut input)
            .context("cannot read the batch from stdin")?;
    } else {
        input = std::fs::read(&args.batch).with_context(|| format!("cannot read --batch {}", args.batch.display()))?;
    }
    // An array of events is the `events` of a batch.
    if input.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        let mut wrapped = b"{\"events\":".to_vec();
        wrapped.extend_from_slice(&input);
        wrapped.push(b'}');
        input = wrapped;
    }
    let batch = parse_ingest_body(&input).map_err(|e| anyhow::anyhow!("the batch: {e}"))?;
    let time_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let body = render_body(time_ms, &join_events(&batch.events));
    let signed = [
        ("X-Pusher-Key", args.key.clone()),
        (
            "X-Pusher-Signature",
            hmac_sha256_hex(args.secret.as_bytes(), body.as_bytes()),
        ),
        ("X-Hookline-Batch-Id", format!("{:016x}-1", time_ms)),
        ("X-Hookline-Batch-Time", time_ms.to_string()),
    ];
    let sink = serde_json::json!({
        "wasm": args.sink,
        "config": config,
        "allowed_hosts": allowed_hosts,
        "cpu_ms": args.cpu_ms,
        "memory_mb": args.memory_mb,
    });
    let host = SinkComponentHost::new(hookline_core::settings::FilterSettings::default(), None);
    let app = args.app.clone();
    let component = tokio::task::spawn_blocking(move || ComponentSink::load(&host, &sink, Path::new("."), &app))
        .await?
        .map_err(anyhow::Error::msg)?;
    let request = hookline_sink_api::SinkRequest {
        body: bytes::Bytes::from(body),
        signed_headers: &signed,
        extra_headers: &[],
        timeout: std::time::Duration::from_millis(args.timeout_ms.max(1)),
        app_id: &args.app,
        webhook_id: &args.webhook,
        channel: None,
        attempt: 1,
        answer: None,
    };
    let outcome = tokio::time::timeout(
        request.timeout + std::time::Duration::from_millis(50),
        component.call(&request),
    )
    .await
    .unwrap_or_else(|_| CallOutcome::Failed(format!("timed out after {} ms (--timeout-ms)", args.timeout_ms)));
    match outcome {
        CallOutcome::Delivered => {
            println!("delivered");
            return Ok(ExitCode::SUCCESS);
        }
        CallOutcome::Retry {
            after: Some(after),
            reason,
        } => {
            println!("retry (after {} ms): {reason}", after.as_millis())
        }
        CallOutcome::Retry { after: None, reason } => println!("retry: {reason}"),
        CallOutcome::Reject(reason) => println!("reject: {reason}"),
        CallOutcome::Failed(cause) => println!("failed: {cause}"),
    }
    Ok(ExitCode::FAILURE)
}

/// `hookline sink new`.
fn new(args: NewArgs) -> Result<ExitCode> {
    let sdk = super::scaffold::find_sdk(args.sdk)?;
    let package = match args.lang {
        Lang::Rust => "sink/Cargo.toml",
        Lang::Js => "js-sink/package.json",
    };
    if !sdk.join("wit/sink.wit").is_file() || !sdk.join(package).is_file() {
        bail!(
            "{} has no sink SDK (wit/sink.wit and {package}): pass --sdk with the sdk/ directory of a Hookline checkout that has sink components",
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
    if lang == Lang::Js {
        return scaffold_js(dir, name, &snake, sdk_text);
    }
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

/// Writes `files` (relative paths) into `dir`.
fn write_files(dir: &Path, files: &[(&str, String)]) -> Result<()> {
    for (file, text) in files {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().expect("a file in the project"))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The JavaScript project: sink.js, its native test, package.json.
fn scaffold_js(dir: &Path, name: &str, snake: &str, sdk: &str) -> Result<String> {
    // npm package names are lower case.
    let package = name.to_ascii_lowercase();
    write_files(
        dir,
        &[
            (
                "package.json",
                JS_PACKAGE
                    .replace("{name}", &package)
                    .replace("{snake}", snake)
                    .replace("{sdk}", sdk),
            ),
            ("sink.js", JS_SINK.to_string()),
            ("sink.test.js", JS_TEST.to_string()),
            ("README.md", JS_README.replace("{name}", name).replace("{snake}", snake)),
            (".gitignore", "node_modules/\n.hookline/\n*.wasm\n".to_string()),
        ],
    )?;
    Ok(format!(
        "cd {}\nnpm install --install-links\nnpm test\nnpm run build   # {snake}.wasm",
        dir.display()
    ))
}

const JS_PACKAGE: &str = r#"{
  "name": "{name}",
  "version": "0.1.0",
  "private": true,
  "type": "module",
  "scripts": {
    "build": "hookline-sink-js build sink.js -o {snake}.wasm",
    "test": "node --test"
  },
  "dependencies": {
    "@hookline/sink": "file:{sdk}/js-sink"
  }
}
"#;

const JS_SINK: &str = r#"// POSTs each batch's events, as a JSON array, to the configured URL.
import { outcomeOf } from "@hookline/sink";

// The sink's "config" in the app file: {"url": "https://…"}.
export function validateConfig(config) {
  for (const field of Object.keys(config ?? {})) {
    if (field !== "url") return `unknown field \`${field}\`, expected \`url\``;
  }
  if (typeof config?.url !== "string" || !/^https?:\/\/[^/]/.test(config.url)) {
    return `\`url\` must be an absolute http(s) URL, not ${JSON.stringify(config?.url)}`;
  }
}

// `request.events` are the parsed events (`name`, `channel`, `userId`, …,
// `extra`); `request.body` and `request.headers` are what Hookline's HTTP
// sink would send (`forward(url, request)` sends them untouched). The
// origin of every URL fetched must be in the webhook's `allowed_hosts`:
// any other is refused, which `fetch` reports as a NetworkError.
export async function deliver(request) {
  const events = JSON.parse(request.body).events;
  // 2xx: delivered; 429, 408, 425, 5xx and no answer: retried
  // (Retry-After honoured); any other status: dead letters.
  return outcomeOf(
    fetch(request.config.url, {
      method: "POST",
      headers: { "content-type": "application/json", "idempotency-key": request.batchId },
      body: JSON.stringify(events),
    }),
  );
}
"#;

const JS_TEST: &str = r#"// Runs natively, node's fetch against a local server: npm test
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Receiver, request, withAllowedHosts } from "@hookline/sink/testing";
import { deliver, validateConfig } from "./sink.js";

let receiver;
before(async () => {
  receiver = await Receiver.start();
});
after(() => receiver.close());

test("posts the events as a JSON array", async () => {
  const req = request({ config: { url: receiver.url("/events") }, events: [{ name: "channel_occupied", channel: "room-1" }] });
  assert.deepEqual(await deliver(req), { tag: "delivered" });
  const received = receiver.requests.at(-1);
  assert.equal(received.path, "/events");
  assert.equal(received.headers["idempotency-key"], req.batchId);
  assert.deepEqual(JSON.parse(received.body), [{ name: "channel_occupied", channel: "room-1" }]);
});

test("a throttled answer is retried after its wait", async () => {
  receiver.script({ status: 429, headers: { "retry-after": "2" } });
  const outcome = await deliver(request({ config: { url: receiver.url("/events") } }));
  assert.deepEqual(outcome, { tag: "retry", val: { reason: "answered 429 (throttled)", afterMs: 2000 } });
});

test("a host outside allowed_hosts is retried, naming the NetworkError", async () => {
  const outcome = await withAllowedHosts([receiver.origin], () =>
    deliver(request({ config: { url: "https://api.example.com/events" } })),
  );
  assert.equal(outcome.tag, "retry");
  assert.match(outcome.val.reason, /NetworkError/);
});

test("requires an absolute url", () => {
  assert.match(validateConfig({ url: "example.com" }), /absolute/);
  assert.equal(validateConfig({ url: "https://example.com/in" }), undefined);
});
"#;

const JS_README: &str = r#"# {name}

A Hookline sink component in JavaScript: POSTs each batch's events, as a
JSON array, to the configured `url`.

```sh
npm install --install-links   # @hookline/sink, componentize-js, rolldown
npm test                      # natively, node's fetch against a local HTTP server
npm run build                 # {snake}.wasm (StarlingMonkey, about 12 MiB)
```

In an app file (`wasm` is relative to the app file; the origin of `url`
must be listed in `allowed_hosts`, whose `headers` the host adds to every
request to that origin, so a secret never enters the component):

```json
{
  "id": "app-1", "key": "app-key", "secret": "${APP_SECRET}",
  "webhooks": [{
    "id": "{name}",
    "event_types": ["channel_occupied", "channel_vacated", "member_added", "member_removed", "client_event"],
    "sink": {
      "wasm": "{name}/{snake}.wasm",
      "config": {"url": "https://api.example.com/events"},
      "allowed_hosts": [
        {"origin": "https://api.example.com", "headers": {"Authorization": "Bearer ${API_TOKEN}"}}
      ]
    }
  }]
}
```
"#;

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
    "event_types": ["channel_occupied", "channel_vacated", "member_added", "member_removed", "client_event"],
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
    fn writes_a_javascript_project() {
        let root = tempfile::tempdir().unwrap();
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk");
        let dir = root.path().join("My-Sink");
        let next = scaffold(&dir, Lang::Js, &sdk).unwrap();
        assert!(next.ends_with("npm run build   # My_Sink.wasm"), "{next}");
        let package = std::fs::read_to_string(dir.join("package.json")).unwrap();
        let package: serde_json::Value = serde_json::from_str(&package).unwrap();
        assert_eq!(package["name"], "my-sink");
        assert_eq!(
            package["dependencies"]["@hookline/sink"],
            format!("file:{}/js-sink", sdk.display())
        );
        assert!(dir.join("sink.js").is_file() && dir.join("sink.test.js").is_file());
        let error = scaffold(&dir, Lang::Js, &sdk).unwrap_err();
        assert!(error.to_string().contains("already exists"));
    }

    #[test]
    fn refuses_bad_names() {
        let root = tempfile::tempdir().unwrap();
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk");
        assert!(scaffold(&root.path().join("no spaces"), Lang::Rust, &sdk).is_err());
        assert!(scaffold(&root.path().join("no spaces"), Lang::Js, &sdk).is_err());
    }
}
