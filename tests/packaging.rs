//! How Hookline is installed and operated: shell completions and man pages
//! generated from the command line.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::*;

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
