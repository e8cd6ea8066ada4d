//! `hookline filter new NAME --lang rust|js|python`: a filter project with
//! one filter (drop events whose channel starts with a configured prefix)
//! and its test, ready to build with the language's SDK.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// A filter language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Lang {
    /// Rust, with the hookline-filter crate (`sdk/`).
    Rust,
    /// JavaScript, with @hookline/filter (`sdk/js`, QuickJS).
    Js,
    /// Python, with hookline-filter (`sdk/python`, componentize-py).
    Python,
}

/// Where the SDKs are: `--sdk`, `HOOKLINE_SDK`, or the `sdk/` of the
/// checkout this binary was built in.
pub(crate) fn find_sdk(given: Option<PathBuf>) -> Result<PathBuf> {
    let candidate = given
        .or_else(|| std::env::var_os("HOOKLINE_SDK").map(PathBuf::from))
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            // target/{debug,release}/hookline → the checkout's sdk/
            let sdk = exe.parent()?.parent()?.parent()?.join("sdk");
            sdk.join("wit/filter.wit").is_file().then_some(sdk)
        });
    let Some(sdk) = candidate else {
        bail!(
            "cannot find the filter SDKs: pass --sdk PATH (the sdk/ directory of a Hookline checkout) or set HOOKLINE_SDK"
        );
    };
    let sdk = std::fs::canonicalize(&sdk).with_context(|| format!("--sdk {}", sdk.display()))?;
    if !sdk.join("wit/filter.wit").is_file() {
        bail!(
            "{} is not Hookline's sdk/ directory (no wit/filter.wit in it)",
            sdk.display()
        );
    }
    Ok(sdk)
}

/// Writes the project into `dir` (which must not exist); returns what to
/// run next.
pub(crate) fn scaffold(dir: &Path, lang: Lang, sdk: &Path) -> Result<String> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .with_context(|| format!("{}: a filter's name is letters, digits, - and _", dir.display()))?;
    if dir.exists() {
        bail!("{} already exists; choose another name", dir.display());
    }
    let sdk_text = sdk.to_str().context("the SDK path is not UTF-8")?;
    let files: Vec<(&str, String)> = match lang {
        Lang::Rust => vec![
            (
                "Cargo.toml",
                RUST_CARGO.replace("{name}", name).replace("{sdk}", sdk_text),
            ),
            ("src/lib.rs", RUST_LIB.to_string()),
        ],
        Lang::Js => vec![
            (
                "package.json",
                JS_PACKAGE.replace("{name}", name).replace("{sdk}", sdk_text),
            ),
            ("filter.js", JS_FILTER.to_string()),
            ("filter.test.js", JS_TEST.to_string()),
            (".gitignore", "node_modules/\n.hookline/\n*.wasm\n".to_string()),
        ],
        Lang::Python => vec![
            ("filter.py", PY_FILTER.to_string()),
            ("test_filter.py", PY_TEST.to_string()),
            (".gitignore", ".venv/\n__pycache__/\n*.wasm\n".to_string()),
        ],
    };
    for (file, text) in files {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().expect("a file in the project"))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let shown = dir.display();
    let snake = name.replace('-', "_");
    Ok(match lang {
        Lang::Rust => format!(
            "cd {shown}\ncargo test\ncargo build --release --target wasm32-wasip2   # target/wasm32-wasip2/release/{snake}.wasm"
        ),
        Lang::Js => format!("cd {shown}\nnpm install --install-links\nnpm test\nnpm run build   # {name}.wasm"),
        // The SDK and componentize-py go into the project's own venv
        // (Debian: `apt install python3-venv` first), and every later step
        // runs from it, so nothing needs activating.
        Lang::Python => format!(
            "cd {shown}\npython3 -m venv .venv && .venv/bin/pip install {sdk_text}/python\n.venv/bin/python -m unittest\n.venv/bin/hookline-filter-py build filter.py -o {snake}.wasm --config '{{\"prefix\":\"debug-\"}}'"
        ),
    })
}

const RUST_CARGO: &str = r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
hookline-filter = { path = "{sdk}" }
serde = { version = "1", features = ["derive"] }
serde_json = "1"
"#;

const RUST_LIB: &str = r##"//! Drops events whose channel starts with the configured prefix.

use hookline_filter::{Batch, Context, Filter, Verdict};

/// The filter entry's "config" in the app file.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    prefix: String,
}

pub struct PrefixFilter;

impl Filter for PrefixFilter {
    type Config = Config;

    fn validate_config(config: &Config) -> Result<(), String> {
        if config.prefix.is_empty() {
            return Err("`prefix` is required".into());
        }
        Ok(())
    }

    // Each event has Pusher's fields (`name`, `channel`, `user_id`, …);
    // `event.data_json()` parses `data` and `event.extra_json()` holds every
    // other field, both as `serde_json` values.
    fn filter(config: &Config, _ctx: &Context, batch: &Batch) -> Result<Verdict, String> {
        Ok(batch.retain(|event| !event.channel.starts_with(&config.prefix)))
    }
}

hookline_filter::export_filter!(PrefixFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use hookline_filter::{Event, testing};

    #[test]
    fn drops_channels_with_the_prefix() {
        let batch = Batch::new(vec![
            Event::new("channel_occupied", "debug-1"),
            Event::new("channel_occupied", "room-1"),
        ]);
        let verdict = testing::run::<PrefixFilter>(r#"{"prefix":"debug-"}"#, &batch).unwrap();
        assert_eq!(verdict, Verdict::Select(vec![1]));
    }
}
"##;

const JS_PACKAGE: &str = r#"{
  "name": "{name}",
  "version": "0.1.0",
  "private": true,
  "type": "module",
  "scripts": {
    "build": "hookline-filter-js build filter.js -o {name}.wasm --config '{\"prefix\":\"debug-\"}'",
    "test": "node --test"
  },
  "dependencies": {
    "@hookline/filter": "file:{sdk}/js"
  }
}
"#;

const JS_FILTER: &str = r#"// Drops events whose channel starts with the configured prefix.
import { retain } from "@hookline/filter";

export function validateConfig(config) {
  for (const field of Object.keys(config ?? {})) {
    if (field !== "prefix") throw `unknown field \`${field}\`, expected \`prefix\``;
  }
  if (typeof config?.prefix !== "string" || config.prefix === "") throw "`prefix` is required";
}

export function filter(ctx, batch) {
  return retain(batch, (event) => !event.channel.startsWith(ctx.config.prefix));
}
"#;

const JS_TEST: &str = r#"// Runs natively: npm test
import assert from "node:assert/strict";
import { test } from "node:test";

import { filter, validateConfig } from "./filter.js";

test("drops channels with the prefix", () => {
  const batch = { timeMs: 0, events: [{ channel: "debug-1" }, { channel: "room-1" }] };
  assert.deepEqual(filter({ config: { prefix: "debug-" } }, batch), { tag: "select", val: [1] });
});

test("requires a prefix", () => {
  assert.throws(() => validateConfig({}), /prefix/);
});
"#;

const PY_FILTER: &str = r#""""Drops events whose channel starts with the configured prefix."""

from hookline_filter import retain


def validate_config(config):
    for field in config or {}:
        if field != "prefix":
            raise ValueError(f"unknown field `{field}`, expected `prefix`")
    if not isinstance((config or {}).get("prefix"), str) or not config["prefix"]:
        raise ValueError("`prefix` is required")


def filter(ctx, batch):
    return retain(batch, lambda event: not event.channel.startswith(ctx.config["prefix"]))
"#;

const PY_TEST: &str = r#""""Runs natively: python -m unittest"""

import unittest

from hookline_filter import Batch, Context, Event, Select

from filter import filter, validate_config


class PrefixFilter(unittest.TestCase):
    def test_drops_channels_with_the_prefix(self):
        batch = Batch(0, [Event("channel_occupied", "debug-1"), Event("channel_occupied", "room-1")])
        self.assertEqual(filter(Context("app", "webhook", {"prefix": "debug-"}), batch), Select([1]))

    def test_requires_a_prefix(self):
        with self.assertRaisesRegex(ValueError, "prefix"):
            validate_config({})


if __name__ == "__main__":
    unittest.main()
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_each_language_and_refuses_an_existing_directory() {
        let root = tempfile::tempdir().unwrap();
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk");
        for (lang, file) in [
            (Lang::Rust, "src/lib.rs"),
            (Lang::Js, "filter.js"),
            (Lang::Python, "filter.py"),
        ] {
            let dir = root.path().join(format!("f-{lang:?}"));
            scaffold(&dir, lang, &sdk).unwrap();
            assert!(dir.join(file).is_file());
            let error = scaffold(&dir, lang, &sdk).unwrap_err();
            assert!(error.to_string().contains("already exists"));
        }
        let cargo = std::fs::read_to_string(root.path().join("f-Rust/Cargo.toml")).unwrap();
        assert!(cargo.contains(&format!("path = \"{}\"", sdk.display())));
    }

    #[test]
    fn the_python_steps_create_the_venv_every_later_step_runs_from() {
        let root = tempfile::tempdir().unwrap();
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk");
        let dir = root.path().join("my-py");
        let steps = scaffold(&dir, Lang::Python, &sdk).unwrap();
        let lines: Vec<&str> = steps.lines().collect();
        assert_eq!(lines[0], format!("cd {}", dir.display()));
        assert_eq!(
            lines[1],
            format!(
                "python3 -m venv .venv && .venv/bin/pip install {}/python",
                sdk.display()
            )
        );
        assert!(lines.len() > 2, "{steps}");
        for line in &lines[2..] {
            assert!(
                line.starts_with(".venv/bin/"),
                "{line:?} does not run from the venv:\n{steps}"
            );
        }
        let ignored = std::fs::read_to_string(dir.join(".gitignore")).unwrap();
        assert!(ignored.lines().any(|l| l == ".venv/"), "{ignored}");
    }

    #[test]
    fn refuses_a_name_that_is_no_package_name() {
        let root = tempfile::tempdir().unwrap();
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk");
        assert!(scaffold(&root.path().join("no spaces"), Lang::Js, &sdk).is_err());
    }
}
