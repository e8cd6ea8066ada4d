//! The documentation as tests: README's quick start and the SDK tutorial
//! (sdk/README.md) are run as written, against the binary this suite built,
//! so an edit that breaks a documented command fails here.
//!
//! Each page section becomes one bash script, block by block:
//! * ` ```sh ` runs in the foreground and must succeed;
//! * ` ```sh fails ` runs in the foreground and must fail (a refusal the
//!   page shows);
//! * ` ```sh background ready="TEXT" ` starts a long-running command (a
//!   daemon, a receiver: what the reader runs "in another terminal") and
//!   waits until its output shows TEXT;
//! * ` ```sh skip="why" ` is not run, and the test prints why (the test
//!   suite itself, a release install the suite replaces with its own build);
//! * ` ```LANG file=PATH ` / ` append=PATH ` writes / appends the block to
//!   PATH, as the reader does in an editor;
//! * any other block (sample output) is not run.
//!
//! The scripts run with the suite's `hookline` first on PATH, and the
//! quick start's `scripts/run.sh` runs that binary (`HOOKLINE_BIN`) instead
//! of a release build. Both use the documented ports 7077/7078, so the two
//! tests take turns. The Lambda example's local try-out (examples/lambda)
//! runs the same way. README's cluster quick start ("Running several
//! daemons") runs its own Redis and daemons in a scratch directory, on
//! ports 6390, 7071–7073 and 7080, and must leave them free again.

mod support;

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::{PATIENCE, hookline_bin, wasm_filters};

/// The documented ports are fixed; one page at a time.
static PORTS: Mutex<()> = Mutex::new(());

/// How long a background command may take to be ready: `scripts/run.sh`
/// may first build the example filters.
const READY_WITHIN_SECS: u32 = 600;

#[derive(Debug)]
struct Block {
    lang: String,
    attrs: HashMap<String, String>,
    flags: Vec<String>,
    body: String,
}

/// The fenced blocks of the section whose heading is `heading`, up to the
/// next heading of the same level.
fn section_blocks(markdown: &str, heading: &str) -> Vec<Block> {
    let level = heading.chars().take_while(|c| *c == '#').count();
    let start = markdown
        .lines()
        .position(|l| l.trim_end() == heading)
        .unwrap_or_else(|| panic!("no section {heading:?}"));
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for line in markdown.lines().skip(start + 1) {
        if let Some(block) = open.as_mut() {
            if line.trim_start().starts_with("```") {
                blocks.push(open.take().unwrap());
            } else {
                block.body.push_str(line);
                block.body.push('\n');
            }
            continue;
        }
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if hashes > 0 && hashes <= level && line[hashes..].starts_with(' ') {
            break;
        }
        if let Some(info) = line.trim_start().strip_prefix("```") {
            let (lang, attrs, flags) = parse_info(info);
            open = Some(Block {
                lang,
                attrs,
                flags,
                body: String::new(),
            });
        }
    }
    assert!(open.is_none(), "an unclosed block in {heading:?}");
    blocks
}

/// `sh background ready="listening on"` → ("sh", {ready: …}, [background]).
fn parse_info(info: &str) -> (String, HashMap<String, String>, Vec<String>) {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in info.trim().chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    let mut words = words.into_iter();
    let lang = words.next().unwrap_or_default();
    let (mut attrs, mut flags) = (HashMap::new(), Vec::new());
    for word in words {
        match word.split_once('=') {
            Some((k, v)) => {
                attrs.insert(k.to_string(), v.to_string());
            }
            None => flags.push(word),
        }
    }
    (lang, attrs, flags)
}

/// A page section as one script, plus the blocks it skipped and why.
struct Script {
    text: String,
    skipped: Vec<(String, String)>,
    /// How many blocks run (commands and files).
    runnable: usize,
}

fn script(blocks: &[Block]) -> Script {
    let mut text = String::from(
        r#"set -eo pipefail
doc_wait_ready() { # LOG TEXT PID
    for _ in $(seq 1 $((READY_WITHIN_SECS * 10))); do
        if grep -qF -- "$2" "$1"; then return 0; fi
        if ! kill -0 "$3" 2>/dev/null; then echo "exited before it was ready:" >&2; cat "$1" >&2; return 1; fi
        sleep 0.1
    done
    echo "not ready after ${READY_WITHIN_SECS}s:" >&2; cat "$1" >&2; return 1
}
"#,
    );
    let (mut skipped, mut runnable, mut background) = (Vec::new(), 0, 0);
    for block in blocks {
        let target = block
            .attrs
            .get("file")
            .map(|p| (p, ">"))
            .or_else(|| block.attrs.get("append").map(|p| (p, ">>")));
        if let Some((path, redirect)) = target {
            assert!(!block.body.contains("HOOKLINE_DOC_EOF"));
            text.push_str(&format!(
                "mkdir -p \"$(dirname '{path}')\"\ncat {redirect} '{path}' <<'HOOKLINE_DOC_EOF'\n{}HOOKLINE_DOC_EOF\n",
                block.body
            ));
            runnable += 1;
            continue;
        }
        if block.lang != "sh" {
            continue;
        }
        if let Some(why) = block.attrs.get("skip") {
            skipped.push((block.body.trim().to_string(), why.clone()));
            continue;
        }
        runnable += 1;
        text.push_str(&format!("echo '### running:' {}\n", shell_quote(block.body.trim())));
        if block.flags.iter().any(|f| f == "background") {
            let ready = block
                .attrs
                .get("ready")
                .expect("a background block names what `ready` looks like");
            let command = block.body.trim().replace("\\\n", " ");
            assert!(!command.contains('\n'), "a background block is one command: {command}");
            background += 1;
            text.push_str(&format!(
                "{command} > \"$DOC_LOGS/background-{background}.log\" 2>&1 &\n\
                 doc_wait_ready \"$DOC_LOGS/background-{background}.log\" {} $!\n",
                shell_quote(ready)
            ));
        } else if block.flags.iter().any(|f| f == "fails") {
            text.push_str(&format!(
                "if ( set -e\n{}); then echo 'expected to fail, but it succeeded' >&2; exit 1; fi\n",
                block.body
            ));
        } else {
            text.push_str(&block.body);
        }
    }
    Script {
        text,
        skipped,
        runnable,
    }
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Runs a page section's script from the repository root; returns the
/// directory holding each background command's output. Everything the
/// script started is stopped when the returned guard drops.
fn run_section(page: &str, heading: &str, env: &[(&str, &Path)]) -> RunningScript {
    // The previous page's processes may still be exiting; anything else
    // on the documented ports is a daemon the reader left running.
    for port in [7077, 7078] {
        let deadline = Instant::now() + PATIENCE;
        while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "port {port} is in use, and the documented commands need it: is scripts/run.sh (or another hookline) running? Stop it and run the tests again"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let markdown = std::fs::read_to_string(root.join(page)).unwrap();
    let script = script(&section_blocks(&markdown, heading));
    assert!(script.runnable > 0, "{page} {heading:?}: no block to run");
    for (command, why) in &script.skipped {
        eprintln!("{page}: not run ({why}): {command}");
    }
    let work = tempfile::tempdir().unwrap();
    let bin = work.path().join("bin");
    let logs = work.path().join("logs");
    let tmp = work.path().join("tmp");
    for dir in [&bin, &logs, &tmp] {
        std::fs::create_dir(dir).unwrap();
    }
    std::os::unix::fs::symlink(hookline_bin(), bin.join("hookline")).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(&script.text)
        .current_dir(root)
        .env("PATH", path)
        .env("TMPDIR", &tmp)
        .env("DOC_LOGS", &logs)
        .env("READY_WITHIN_SECS", READY_WITHIN_SECS.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so every command it left running is
        // stopped with it.
        .process_group(0);
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command.spawn().expect("run bash");
    let mut running = RunningScript {
        group: child.id(),
        logs,
        stdout: String::new(),
        _work: work,
    };
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    running.stdout = stdout.to_string();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{page} {heading:?} failed as written:\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- background\n{}",
        running.background_output()
    );
    running
}

struct RunningScript {
    group: u32,
    logs: PathBuf,
    /// What the script printed.
    stdout: String,
    _work: tempfile::TempDir,
}

impl RunningScript {
    /// The output of background command `n` (from 1, in page order).
    fn background(&self, n: usize) -> String {
        std::fs::read_to_string(self.logs.join(format!("background-{n}.log"))).unwrap_or_default()
    }

    fn background_output(&self) -> String {
        (1..=4)
            .map(|n| format!("[{n}]\n{}", self.background(n)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until background command `n` printed all of `texts` on one
    /// delivery; returns its output.
    fn wait_for(&self, n: usize, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let output = self.background(n);
            if done(&output) {
                return output;
            }
            assert!(
                Instant::now() < deadline,
                "waited for {what}; background output:\n{}",
                self.background_output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RunningScript {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.group)])
            .stderr(Stdio::null())
            .status();
    }
}

/// Sums every series of a metric on the documented daemon.
fn metric_sum(name: &str) -> f64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let text = runtime.block_on(async {
        reqwest::get("http://127.0.0.1:7077/metrics")
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    support::metric_sum_in(&text, name)
}

#[test]
fn the_readme_quick_start_delivers_a_signed_event() {
    let _ports = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    wasm_filters();
    let data = tempfile::tempdir().unwrap();
    let run = run_section(
        "README.md",
        "## Quick start",
        &[
            ("HOOKLINE_DATA_DIR", data.path()),
            ("HOOKLINE_BIN", Path::new(hookline_bin())),
        ],
    );
    // 1: scripts/run.sh, 2: hookline listen.
    let received = run.wait_for(2, "the delivery of room-1", |out| out.contains("\"room-1\""));
    assert!(
        received.contains("POST /hooks key=demo-key batch=") && received.contains("signature OK"),
        "{received}"
    );
    assert!(
        received.contains(r#""events":[{"name":"channel_occupied","channel":"room-1"}]"#),
        "{received}"
    );
}

/// The ports the cluster quick start uses: its Redis, three daemons and
/// the receiver.
const CLUSTER_PORTS: [u16; 5] = [6390, 7071, 7072, 7073, 7080];

#[test]
fn the_readme_cluster_quick_start_delivers_through_three_daemons_and_stops_them() {
    let _ports = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    for port in CLUSTER_PORTS {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is in use, and the cluster quick start needs it: stop what listens there and run the tests again"
        );
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let had_aof = root.join("appendonlydir").exists();
    let run = run_section("README.md", "## Running several daemons", &[]);
    // The page waited for the delivery and printed the receiver's log
    // (the script's echo of each block holds "signature OK" too: look at
    // the receiver's own line).
    let delivery = run
        .stdout
        .lines()
        .find(|line| line.starts_with("POST /hooks key=cluster-key batch="));
    assert!(
        delivery.is_some_and(|line| line.ends_with("signature OK")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(r#""events":[{"name":"channel_occupied","channel":"room-1"}]"#),
        "{}",
        run.stdout
    );
    // It stopped everything it started, and kept its files out of the
    // checkout.
    for port in CLUSTER_PORTS {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is still in use after the page stopped everything"
        );
    }
    assert_eq!(
        root.join("appendonlydir").exists(),
        had_aof,
        "Redis wrote into the checkout"
    );
}

#[test]
fn the_sdk_tutorial_goes_from_cargo_new_to_a_filtered_delivery() {
    let _ports = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let run = run_section("sdk/README.md", "## From `cargo new` to a running filter", &[]);
    // 1: hookline serve, 2: hookline listen.
    let received = run.wait_for(2, "the delivery of room-1", |out| out.contains("\"room-1\""));
    assert!(
        received.contains("POST /hooks key=my-key batch=") && received.contains("signature OK (app my-app)"),
        "{received}"
    );
    // debug-1 was sent first: its batch was formed (and filtered) before
    // room-1's. Once nothing waits for delivery, it can no longer arrive.
    let deadline = Instant::now() + PATIENCE;
    while metric_sum("hookline_queue_depth") > 0.0 {
        assert!(Instant::now() < deadline, "deliveries still waiting");
        std::thread::sleep(Duration::from_millis(20));
    }
    let received = run.background(2);
    assert!(
        !received.contains("debug-1"),
        "the filter let debug-1 through:\n{received}"
    );
    assert!(metric_sum("hookline_filter_calls_total") >= 1.0);
}

#[test]
fn the_lambda_example_accepts_its_signed_sample_and_refuses_another_secret() {
    // The page writes mine.json beside the example; it is not to be kept.
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _mine = Remove(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lambda/mine.json"));
    run_section("examples/lambda/README.md", "### Try it locally", &[]);
}

#[test]
fn blocks_are_read_with_their_directives() {
    let page = "# T\n## A\n```sh background ready=\"listening on\"\nx --y \\\n  z\n```\ntext\n```json file=apps/a.json\n{}\n```\n```\nout\n```\n## B\n```sh\nno\n```\n";
    let blocks = section_blocks(page, "## A");
    assert_eq!(blocks.len(), 3);
    assert_eq!(blocks[0].flags, ["background"]);
    assert_eq!(blocks[0].attrs["ready"], "listening on");
    assert_eq!(blocks[1].attrs["file"], "apps/a.json");
    let script = script(&blocks);
    assert_eq!(script.runnable, 2);
    assert!(
        script.text.contains("x --y    z > \"$DOC_LOGS/background-1.log\""),
        "{}",
        script.text
    );
    assert!(!script.text.contains("no\n"));
}
