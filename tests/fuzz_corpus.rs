//! The fuzz corpus (`fuzz/corpus/TARGET/`) and every crash found so far
//! (`fuzz/regressions/TARGET/`) replayed as ordinary tests on stable, with
//! the same checks the fuzz targets make (`hookline_core::fuzzing`). The
//! serializer's corpus is also compared with Node itself: for every input,
//! the same bytes as `JSON.stringify(JSON.parse(input))`, or both refuse.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};

use hookline_core::config::{AppLoader, EnvLookup, LoadDefaults};
use hookline_core::fuzzing;
use hookline_core::settings::Settings;

/// Every input of a target: its corpus and its regressions, by path.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut found = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_file() && path.file_name().is_some_and(|n| n != ".gitkeep") {
                let bytes = std::fs::read(&path).unwrap();
                found.push((path, bytes));
            }
        }
    }
    found.sort();
    assert!(!found.is_empty(), "no corpus for {target}");
    found
}

/// Runs `check` on every input, naming the input that panicked.
fn replay(target: &str, check: impl Fn(&[u8]) + std::panic::RefUnwindSafe) {
    for (path, bytes) in inputs(target) {
        if std::panic::catch_unwind(|| check(&bytes)).is_err() {
            panic!("{target}: {} fails its checks", path.display());
        }
    }
}

#[test]
fn native_ingest_corpus() {
    replay("native_ingest", fuzzing::native_ingest_bytes);
}

#[test]
fn store_journal_corpus() {
    replay("store_journal", fuzzing::store_journal);
}

#[test]
fn relay_body_corpus() {
    replay("relay_body", fuzzing::relay_ingest);
}

#[test]
fn replace_event_corpus() {
    replay("replace_event", |data| {
        fuzzing::replace_event_bytes(data);
    });
}

fn loader() -> &'static AppLoader {
    static LOADER: OnceLock<AppLoader> = OnceLock::new();
    LOADER.get_or_init(|| {
        let sinks = hookline::builtin_sinks().unwrap();
        let env: EnvLookup = Arc::new(|name| (name == "SET").then(|| "value".to_string()));
        AppLoader::new(sinks, LoadDefaults::from(&Settings::default()), env)
    })
}

#[test]
fn app_file_corpus() {
    replay("app_file", |data| {
        let Some((&kind, rest)) = data.split_first() else {
            return;
        };
        if let Ok(text) = std::str::from_utf8(rest) {
            fuzzing::app_file(loader(), kind % 2 == 1, text);
        }
    });
}

/// What Node answers for each input: the canonical text, or `None` when
/// `JSON.parse` (or strict UTF-8 decoding) refuses it.
fn node_canonical(inputs: &[Vec<u8>]) -> Vec<Option<String>> {
    let script = r#"
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
let input = "";
process.stdin.on("data", (c) => (input += c));
process.stdin.on("end", () => {
  const out = JSON.parse(input).map((bytes) => {
    try { return JSON.stringify(JSON.parse(decoder.decode(Uint8Array.from(bytes)))); }
    catch (e) { return null; }
  });
  process.stdout.write(JSON.stringify(out));
});"#;
    let node = std::env::var("TEST_PEERS_NODE").unwrap_or_else(|_| "node".to_string());
    let mut child = Command::new(node)
        .args(["-e", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node runs (scripts/setup-tests.sh checks it is installed)");
    // Each input as an array of byte values: JSON carries any bytes as is.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(inputs).unwrap().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn json_canonical_corpus_matches_node() {
    let corpus = inputs("json_canonical");
    let bytes: Vec<Vec<u8>> = corpus.iter().map(|(_, b)| b.clone()).collect();
    let node = node_canonical(&bytes);
    for ((path, input), expected) in corpus.iter().zip(node) {
        let ours = std::panic::catch_unwind(|| fuzzing::json_canonical(input))
            .unwrap_or_else(|_| panic!("{} fails its checks", path.display()));
        // Deeper than our nesting limit: we refuse on purpose.
        if fuzzing::json_too_deep(input) {
            continue;
        }
        assert_eq!(ours, expected, "{}: ours vs Node", path.display());
    }
}
