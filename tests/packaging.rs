//! How Hookline is installed and operated: shell completions and man pages
//! generated from the command line, the hardened systemd unit (verified and
//! scored by `systemd-analyze`), and the container image built FROM scratch
//! by `scripts/image.sh`, run with podman and delivering a signed event
//! through a WASM filter.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

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

// ---------------------------------------------------------------------------
// The container image.

/// A container run in the foreground by `podman run`, removed on drop.
struct Container {
    name: String,
    child: Child,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Container {
    fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "--force", "--volumes", "--time", "1", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `podman run` needs on machines like this project's (root in a
/// container without systemd, on cgroup v1): the runc runtime, and resource
/// limits within the host's, since podman's defaults are above them and it
/// may not raise them (runc fails with "error setting rlimits").
const PODMAN_RUN: &[&str] = &[
    "run",
    "--runtime",
    "runc",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=4096:4096",
];

/// Builds the image with `scripts/image.sh`, the release build users get;
/// returns its tag. A cold static build takes about 10 minutes on 2 cores;
/// the script keeps the binary and the image when nothing changed, so a
/// second run of the suite reuses them.
fn build_image() -> String {
    let started = std::time::Instant::now();
    let output = Command::new(root().join("scripts/image.sh"))
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(output.status.success(), "scripts/image.sh failed (its output is above)");
    eprintln!("scripts/image.sh took {:.0?}", started.elapsed());
    String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .lines()
        .last()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn the_container_image_delivers_a_signed_event_through_a_filter() {
    if !on_path("podman") {
        eprintln!("SKIPPED the container image: podman is not installed (scripts/setup-tests.sh installs it)");
        return;
    }
    let image = build_image();

    let inspect = Command::new("podman")
        .args([
            "image",
            "inspect",
            "--format",
            "{{.Config.User}} {{.Config.Entrypoint}} {{.Size}}",
            &image,
        ])
        .output()
        .unwrap();
    let config = String::from_utf8_lossy(&inspect.stdout).trim().to_string();
    assert!(config.starts_with("65532:65532 [/hookline] "), "{config}");
    eprintln!("image {image}: user, entrypoint and size {config}");

    // Can this machine run a container at all? Exit code 125 is podman's
    // own failure, 126 with one of these words the runtime's (limits,
    // cgroups, namespaces it may not set up); anything else is the image's.
    let probe = Command::new("podman")
        .args(PODMAN_RUN)
        .args(["--rm", "--network", "none", &image, "--version"])
        .output()
        .unwrap();
    let why = String::from_utf8_lossy(&probe.stderr);
    let environment = ["rlimit", "cgroup", "namespace", "mount"]
        .iter()
        .any(|w| why.contains(w));
    if probe.status.code() == Some(125) || (probe.status.code() == Some(126) && environment) {
        eprintln!("SKIPPED running the container image: podman cannot run containers here:\n{why}");
        return;
    }
    assert!(
        probe.status.success() && String::from_utf8_lossy(&probe.stdout).starts_with("hookline "),
        "`hookline --version` in the image failed ({}):\n{}{}",
        probe.status,
        String::from_utf8_lossy(&probe.stdout),
        String::from_utf8_lossy(&probe.stderr)
    );

    // An app whose webhook drops debug-* channels with the example filter,
    // mounted read-only where the image looks for apps.
    let receiver = Receiver::start().await;
    let apps = AppsDir::new();
    std::fs::copy(
        wasm_filter("drop_by_channel.wasm"),
        apps.path().join("drop_by_channel.wasm"),
    )
    .unwrap();
    let app = serde_json::json!({"id": "img", "key": "img-key", "secret": "img-secret",
        "batching": {"max_wait_ms": 50},
        "webhooks": [{"url": receiver.url("/hooks"), "event_types": ["channel_occupied"],
            "filters": [{"wasm": "drop_by_channel.wasm", "config": {"channels": ["debug-*"]}}]}]});
    apps.write("apps.json", &app.to_string());
    // The daemon runs as 65532, not as the owner of the test's files.
    for path in [
        apps.path().to_path_buf(),
        apps.path().join("apps.json"),
        apps.path().join("drop_by_channel.wasm"),
    ] {
        let mode = if path.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    let listen = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let stderr = dir.path().join("stderr.log");
    let name = format!("hookline-test-{}", std::process::id());
    let mut child = Command::new("podman")
        .args(PODMAN_RUN)
        .args(["--rm", "--name", &name, "--network", "host"])
        .arg("--volume")
        .arg(format!("{}:/etc/hookline/apps:ro", apps.path().display()))
        .args(["--env", &format!("HOOKLINE_LISTEN={listen}")])
        .args(["--env", "RUST_LOG=info,hookline_core=debug"])
        .args([&image, "serve"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut container = Container {
        name,
        child,
        stderr,
        _dir: dir,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = listening_address(&line) {
                let _ = tx.send(addr);
            }
        }
    });
    // The first start compiles the filter; give it more than a test's patience.
    let addr = rx
        .recv_timeout(PATIENCE * 3)
        .unwrap_or_else(|_| panic!("the container did not start; its log:\n{}", container.logs()));
    assert_eq!(addr, listen);

    let body = events_body(&[("channel_occupied", "room-1"), ("channel_occupied", "debug-1")]);
    let response = post_native(&format!("http://{addr}"), "img", "img-key", "img-secret", &body)
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    let delivered = receiver.wait_for("/hooks", 1).await;
    let delivery = &delivered[0];
    assert_eq!(delivery.event_names(), ["channel_occupied"]);
    assert_eq!(
        delivery.json()["events"][0]["channel"],
        "room-1",
        "the filter dropped debug-1"
    );
    assert_eq!(delivery.header("x-pusher-key"), "img-key");
    assert_eq!(
        delivery.header("x-pusher-signature"),
        sign("img-secret", &delivery.body)
    );
    assert!(delivery.header("user-agent").starts_with("hookline/"));

    // `podman stop` sends SIGTERM to the daemon (PID 1 in the container),
    // which shuts down gracefully and exits 0.
    let stop = Command::new("podman")
        .args(["stop", "--time", "20", &container.name])
        .output()
        .unwrap();
    assert!(stop.status.success(), "{}", String::from_utf8_lossy(&stop.stderr));
    let status = container.child.wait().unwrap();
    assert!(
        status.success(),
        "the container exited with {status}; its log:\n{}",
        container.logs()
    );
}
