//! How Hookline is installed and operated: shell completions and man pages
//! generated from the command line, and the hardened systemd unit (verified
//! and scored by `systemd-analyze`).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn hookline(args: &[&str]) -> Output {
    let output = Command::new(hookline_bin()).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "hookline {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Every subcommand a user can type.
const SUBCOMMANDS: &[&str] = &[
    "serve",
    "check",
    "send",
    "listen",
    "dlq",
    "filter",
    "completions",
    "man",
];

#[test]
fn completions_cover_every_subcommand_in_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = String::from_utf8(hookline(&["completions", shell]).stdout).unwrap();
        for subcommand in SUBCOMMANDS {
            assert!(script.contains(subcommand), "{shell} completions lack `{subcommand}`");
        }
        assert!(script.contains("data-dir"), "{shell} completions lack serve's flags");
    }
    // Bash itself accepts the script and registers the completion.
    let bash = String::from_utf8(hookline(&["completions", "bash"]).stdout).unwrap();
    let output = Command::new("bash")
        .args(["-c", "eval \"$0\" && complete -p hookline", &bash])
        .output()
        .unwrap();
    assert!(
        output.status.success() && String::from_utf8_lossy(&output.stdout).contains("hookline"),
        "bash refused the completion script:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn unknown_shells_are_refused_naming_the_known_ones() {
    let output = Command::new(hookline_bin())
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bash") && stderr.contains("zsh"), "{stderr}");
}

/// Writes every man page into `DIR/man1`, the layout `MANPATH` expects.
fn man_pages(dir: &Path) -> PathBuf {
    let man1 = dir.join("man1");
    hookline(&["man", "--out", man1.to_str().unwrap()]);
    man1
}

#[test]
fn man_pages_render_for_the_command_and_each_subcommand() {
    let page = String::from_utf8(hookline(&["man"]).stdout).unwrap();
    assert!(page.contains(".TH hookline 1"), "{page}");

    let dir = tempfile::tempdir().unwrap();
    let man1 = man_pages(dir.path());
    for name in [
        "hookline",
        "hookline-serve",
        "hookline-dlq",
        "hookline-filter",
        "hookline-filter-run",
        "hookline-man",
    ] {
        let path = man1.join(format!("{name}.1"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(text.contains(".TH"), "{name}.1 has no title:\n{text}");
    }
    if !on_path("man") {
        eprintln!("SKIPPED rendering with man(1): `man` is not installed");
        return;
    }
    let output = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(man1.join("hookline-serve.1"))
        .env("MANWIDTH", "100")
        .env("MAN_KEEP_FORMATTING", "")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let warnings = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "man failed: {warnings}");
    assert!(warnings.trim().is_empty(), "groff warned: {warnings}");
    assert!(
        text.contains("hookline-serve") && text.contains("--data-dir") && text.contains("Run the daemon"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------
// The systemd unit.

/// The unit's value for `key` (the last one, as systemd reads it).
fn unit_value(unit: &str, key: &str) -> Option<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .next_back()
        .map(str::to_string)
}

#[test]
fn the_systemd_unit_verifies_and_scores_at_most_2() {
    let unit_path = root().join("packaging/systemd/hookline.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    assert_eq!(
        unit_value(&unit, "ExecReload").as_deref(),
        Some("/bin/kill -HUP $MAINPID")
    );
    assert_eq!(unit_value(&unit, "DynamicUser").as_deref(), Some("yes"));
    assert_eq!(unit_value(&unit, "CapabilityBoundingSet").as_deref(), Some(""));
    assert!(
        !unit.lines().any(|l| l.starts_with("MemoryDenyWriteExecute=")),
        "wasmtime compiles filters to native code at run time: MemoryDenyWriteExecute would stop every filter"
    );

    // The example settings load, and the unit waits longer than they let
    // deliveries finish at shutdown.
    let settings = root().join("packaging/systemd/hookline.toml");
    let apps = AppsDir::new();
    apps.write(
        "a.json",
        r#"{"id": "a", "key": "k", "secret": "s", "webhooks": [{"url": "http://127.0.0.1:9/", "event_types": ["channel_occupied"]}]}"#,
    );
    hookline(&[
        "check",
        "--config",
        settings.to_str().unwrap(),
        "--apps",
        apps.path().to_str().unwrap(),
    ]);
    let grace_ms: u64 = std::fs::read_to_string(&settings)
        .unwrap()
        .parse::<toml::Table>()
        .unwrap()["shutdown"]["grace_ms"]
        .as_integer()
        .unwrap()
        .try_into()
        .unwrap();
    let stop_s: u64 = unit_value(&unit, "TimeoutStopSec")
        .and_then(|v| v.strip_suffix('s')?.parse().ok())
        .expect("TimeoutStopSec=Ns");
    assert!(
        stop_s * 1000 >= 2 * grace_ms,
        "TimeoutStopSec {stop_s}s is too close to grace_ms {grace_ms}"
    );

    if !on_path("systemd-analyze") {
        eprintln!("SKIPPED systemd-analyze verify and security: systemd-analyze is not installed (Debian: systemd)");
        return;
    }
    // verify checks that ExecStart's binary exists and that the
    // Documentation= man page resolves: point both at this build.
    let dir = tempfile::tempdir().unwrap();
    man_pages(&dir.path().join("man"));
    let exec_start = unit_value(&unit, "ExecStart").unwrap();
    let program = exec_start.split(' ').next().unwrap();
    let copy = dir.path().join("hookline.service");
    std::fs::write(&copy, unit.replace(program, hookline_bin())).unwrap();
    let analyze = |args: &[&str]| {
        Command::new("systemd-analyze")
            .args(args)
            .arg(&copy)
            .env("MANPATH", dir.path().join("man"))
            .env("SYSTEMD_LOG_COLOR", "0")
            .env("SYSTEMD_COLORS", "0")
            .output()
            .unwrap()
    };

    let verify = analyze(&["verify"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        verify.status.success() && said.trim().is_empty(),
        "systemd-analyze verify complained:\n{said}"
    );

    let security = analyze(&["security", "--offline=true"]);
    let report = String::from_utf8_lossy(&security.stdout);
    let score: f64 = report
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for hookline.service:"))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no overall exposure level in:\n{report}{}",
                String::from_utf8_lossy(&security.stderr)
            )
        });
    eprintln!("systemd-analyze security: {score}");
    assert!(score <= 2.0, "exposure {score} is above 2.0:\n{report}");
}
