//! Entry points for the fuzz targets (`fuzz/`) and for their corpus replay
//! (`tests/fuzz_corpus.rs`), so both run exactly the same checks, and the
//! inner steps the benchmarks time ([`bench`]). Not an API: each function
//! feeds one parser untrusted input and panics when an invariant of its
//! answer breaks (a panic is what libFuzzer reports).

use std::path::Path;
use std::sync::Arc;

use crate::config::{App, AppLoader, Secret};
use crate::event::parse_ingest_body;
use crate::json;
use crate::settings::Settings;

/// The routing steps `core/benches/hot_paths.rs` times one by one.
pub mod bench {
    pub use crate::batcher::{chunk_to_fit, select_for};
}

const APP_ID: &str = "fuzz-app";
const KEY: &str = "fuzz-key";
const SECRET: &str = "fuzz-secret";

fn app() -> App {
    App {
        id: APP_ID.into(),
        key: KEY.into(),
        secret: Secret::new(SECRET),
        enabled: true,
        batching: Settings::default().batching,
        dead_letters: crate::config::DeadLetterRetention::from(&Settings::default().dead_letter),
        webhooks: Vec::new(),
        source: Arc::from(Path::new("fuzz.json")),
        definition: serde_json::Value::Null,
        fingerprint: "fuzz".into(),
    }
}

/// Native ingest: the Pusher HTTP API authentication of an arbitrary query
/// and body, then the body. The same body correctly signed (with the
/// query's other parameters kept) must pass authentication.
pub fn native_ingest(query: &str, body: &[u8]) {
    let app = app();
    let path = format!("/apps/{APP_ID}/webhook_events");
    let _ = crate::ingest::check_native_auth(&app, &path, query, body);
    let now = crate::delivery::now_ms() / 1000;
    // The query's other parameters are signed too, as Pusher libraries do;
    // a repeated or empty name would make the request ambiguous.
    let mut extra: Vec<(String, String)> = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let reserved = k.starts_with("auth_") || k == "body_md5";
        if !reserved && !k.is_empty() && !extra.iter().any(|(name, _)| *name == k) {
            extra.push((k.into_owned(), v.into_owned()));
        }
    }
    let signed = crate::signing::pusher_signed_query_with(KEY, SECRET, &path, body, now, extra);
    if let Err(refused) = crate::ingest::check_native_auth(&app, &path, &signed, body) {
        panic!("a correctly signed request was refused: {refused:?} (query {signed:?})");
    }
    ingest_body(body);
}

/// A correctly signed native request's query for `body`, and a function
/// that authenticates it: what `benches/hot_paths.rs` times.
pub fn native_auth_case(body: &[u8]) -> (String, impl Fn(&str, &[u8]) -> bool) {
    let app = app();
    let path = format!("/apps/{APP_ID}/events");
    let now = crate::delivery::now_ms() / 1000;
    let query = crate::signing::pusher_signed_query(KEY, SECRET, &path, body, now);
    (query, move |query: &str, body: &[u8]| {
        crate::ingest::check_native_auth(&app, &path, query, body).is_ok()
    })
}

/// The store journal's reader: any bytes read as whole records up to the
/// first that is not, never a panic, and what it reads round-trips.
pub fn store_journal(bytes: &[u8]) {
    crate::store::check_journal_reader(bytes);
}

/// Relay ingest: the body and its `time_ms`.
pub fn relay_ingest(body: &[u8]) {
    if let Some(parsed) = ingest_body(body)
        && let Some(time_ms) = parsed
    {
        let now = crate::delivery::now_ms();
        let _ = crate::ingest::check_relay_time(time_ms, now, 600_000);
    }
}

/// Parses an ingest body; every accepted event must be canonical JSON with
/// its `name` and `channel`. Returns the body's `time_ms` when it parsed.
fn ingest_body(body: &[u8]) -> Option<Option<f64>> {
    let parsed = parse_ingest_body(body).ok()?;
    for event in &parsed.events {
        let again = json::canonicalize(event.json.as_bytes())
            .unwrap_or_else(|e| panic!("an accepted event is not JSON ({e}): {}", event.json));
        assert_eq!(&*again, &*event.json, "an accepted event is not canonical");
        let value = json::parse(event.json.as_bytes()).expect("parsed above");
        assert_eq!(value.get("name").and_then(json::Value::as_str), Some(&*event.name));
        assert_eq!(
            value.get("channel").and_then(json::Value::as_str),
            Some(&*event.channel)
        );
    }
    Some(parsed.time_ms)
}

/// `JSON.stringify(JSON.parse(input))`: returns the canonical text, after
/// checking it is a fixed point and agrees with the parsed value.
pub fn json_canonical(input: &[u8]) -> Option<String> {
    let canonical = json::canonicalize(input);
    let parsed = json::parse(input);
    assert_eq!(canonical.is_ok(), parsed.is_ok(), "canonicalize and parse disagree");
    let canonical = canonical.ok()?;
    let mut written = String::new();
    parsed.expect("agreed above").write_canonical(&mut written);
    assert_eq!(written, canonical, "the parsed value writes other text");
    let again = json::canonicalize(canonical.as_bytes()).expect("canonical text parses");
    assert_eq!(again, canonical, "canonical text is not a fixed point");
    check_scan_joined(&canonical);
    Some(canonical)
}

/// The stores' quick split of canonical objects agrees with the parser:
/// every canonical object splits off whole, twice joined splits in two,
/// and the top-level string fields it picks are the parser's.
fn check_scan_joined(canonical: &str) {
    let value = json::parse(canonical.as_bytes()).expect("canonical text parses");
    if value.as_object().is_none() {
        return;
    }
    let joined = format!("{canonical},{canonical}");
    let scanned = json::scan_joined(&joined, ["name", "channel"]);
    // A wanted string written with an escape sends the caller to the parser.
    let escaped = |key: &str| {
        value
            .get(key)
            .is_some_and(|v| v.as_js_string().is_some() && v.to_canonical_string().contains('\\'))
    };
    if escaped("name") || escaped("channel") {
        return;
    }
    let plain = |key: &str| value.get(key).and_then(json::Value::as_str);
    let scanned = scanned.expect("canonical objects split");
    assert_eq!(scanned.len(), 2, "two joined objects split in two");
    for object in scanned {
        assert_eq!(object.text, canonical, "an object splits off whole");
        assert_eq!(
            object.fields,
            [plain("name"), plain("channel")],
            "the fields picked are the parser's"
        );
    }
}

/// Whether `input` nests deeper than the parser takes (refused on purpose,
/// where other parsers may accept it).
pub fn json_too_deep(input: &[u8]) -> bool {
    json::canonicalize(input).is_err_and(|e| e.message.contains("deep"))
}

/// One event a filter's `replace` verdict returned, as the guest lowered
/// it: the host's conversion must refuse it with a message or produce
/// canonical JSON with the same name and channel.
pub fn replace_event(
    name: &str,
    channel: &str,
    strings: [Option<&str>; 5],
    subscription_count: Option<u64>,
) -> Option<String> {
    let [user_id, socket_id, event, data, extra] = strings;
    let converted = crate::filter::convert_replace_event(
        name,
        channel,
        [user_id, socket_id, event, data, extra],
        subscription_count,
    );
    let converted = converted.ok()?;
    let again = json::canonicalize(converted.json.as_bytes())
        .unwrap_or_else(|e| panic!("a converted event is not JSON ({e}): {}", converted.json));
    assert_eq!(&*again, &*converted.json, "a converted event is not canonical");
    assert_eq!(&*converted.name, name);
    assert_eq!(&*converted.channel, channel);
    Some(converted.json.into())
}

/// One app file's text (JSON, or TOML when `toml`): loaded or refused with
/// messages, never a panic; what loads has an id, a key and a secret.
pub fn app_file(loader: &AppLoader, toml: bool, text: &str) {
    let path = Path::new(if toml { "fuzz.toml" } else { "fuzz.json" });
    match loader.load_text(path, text) {
        Ok(loaded) => {
            for app in loaded.apps {
                assert!(!app.id.is_empty() && !app.key.is_empty() && !app.secret.expose().is_empty());
            }
        }
        Err(problems) => assert!(!problems.is_empty(), "a refusal says why"),
    }
}

/// [`native_ingest`] from one input: the query up to the first newline,
/// then the body.
pub fn native_ingest_bytes(data: &[u8]) {
    let (query, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    native_ingest(&String::from_utf8_lossy(query), body);
}

/// [`replace_event`] from one input: fields separated by 0xFF bytes (name,
/// channel, user_id, socket_id, event, data, extra, subscription_count);
/// an empty optional field is absent.
pub fn replace_event_bytes(data: &[u8]) -> Option<String> {
    let parts: Vec<String> = data
        .split(|&b| b == 0xFF)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let part = |i: usize| parts.get(i).map(String::as_str).unwrap_or("");
    let optional = |i: usize| parts.get(i).map(String::as_str).filter(|s| !s.is_empty());
    let count = optional(7).and_then(|s| s.parse().ok());
    replace_event(
        part(0),
        part(1),
        [optional(2), optional(3), optional(4), optional(5), optional(6)],
        count,
    )
}
