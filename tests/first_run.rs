//! The first-run path: what a newcomer meets before anything is delivered.
//! `hookline check` reports every problem at once, settings errors name
//! where the bad value came from, a missing or empty apps directory says
//! where it looked, and JSON logs stay JSON on every line. `hookline send`
//! prints the answer (a refusal says what to check), `hookline listen`
//! verifies deliveries with several secrets or an apps directory's, and a
//! scaffolded Rust filter can use the SDK's `extra_json()`.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use support::*;

fn hookline(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(hookline_bin());
    command.args(args).current_dir(cwd).stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

/// Kills a daemon started by hand when the test ends, passed or not.
struct KillOnDrop(std::process::Child);

impl KillOnDrop {
    /// The daemon's first line on stdout: its ready line.
    fn ready_line(&mut self) -> String {
        let mut line = String::new();
        BufReader::new(self.0.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        line
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_reports_every_problem_of_every_file_in_one_run() {
    let apps = AppsDir::new();
    apps.write(
        "one.json",
        r#"[{"id": "a", "key": "ka", "secret": "${HOOKLINE_TEST_UNSET_ONE}",
             "webhooks": [{"url": "http://127.0.0.1:1/h", "event_types": ["channel_occupied"],
                           "headers": {"Authorization": "Bearer ${HOOKLINE_TEST_UNSET_TWO}"}}]},
            {"id": "b", "key": "kb", "secret": "s", "batching": {"max_events": 0},
             "webhooks": [{"url": "http://127.0.0.1:1/h", "event_types": [], "timeout_ms": -1},
                          {"event_types": ["member_added"]}]}]"#,
    );
    apps.write(
        "two.toml",
        "[[apps]]\nid = \"c\"\nkey = \"kc\"\nsecret = \"s\"\nwebhooks = [{ url = \"http://127.0.0.1:1/h\", event_types = [\"channel_occupied\"], ordering = \"sometimes\", max_in_flight = 0 }]\n",
    );
    let output = hookline(&["check", "--apps", apps.path().to_str().unwrap()], apps.path(), &[]);
    let (stdout, stderr) = text(&output);
    assert!(!output.status.success());
    let one = apps.path().join("one.json").display().to_string();
    let two = apps.path().join("two.toml").display().to_string();
    for expected in [
        format!("error: {one}: app \"a\": environment variable HOOKLINE_TEST_UNSET_ONE is not set (in `secret`)"),
        format!(
            "error: {one}: app \"a\": environment variable HOOKLINE_TEST_UNSET_TWO is not set (in `webhooks.0.headers.Authorization`)"
        ),
        format!("error: {one}: app \"b\": `batching.max_events` must be at least 1"),
        format!("error: {one}: app \"b\": webhook 0: `event_types` is empty"),
        format!("error: {one}: app \"b\": webhook 0: `timeout_ms` must be a positive whole number"),
        format!("error: {one}: app \"b\": webhook 1: a webhook needs a target"),
        format!("error: {two}: app \"c\": webhook 0: `ordering` must be \"none\" or \"strict\""),
        format!("error: {two}: app \"c\": webhook 0: `max_in_flight` must be a whole number of at least 1"),
    ] {
        assert!(stderr.contains(&expected), "missing {expected:?} in:\n{stderr}");
    }
    assert!(
        stdout.contains("2 of 2 files have problems; 0 apps would serve (8 problems in all)"),
        "{stdout}"
    );
}

#[test]
fn check_warns_of_event_types_that_are_not_pusher_events() {
    let apps = AppsDir::new();
    apps.write(
        "a.json",
        r#"{"id": "a", "key": "ka", "secret": "s",
            "webhooks": [{"url": "http://127.0.0.1:1/h", "event_types": ["channel_ocupied", "member_added"]}]}"#,
    );
    let output = hookline(&["check", "--apps", "."], apps.path(), &[]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "a warning is not an error: {stdout}{stderr}");
    assert!(
        stderr.contains("warning: ")
            && stderr.contains("app \"a\": webhook 0: `event_types` has \"channel_ocupied\", which is not a Pusher webhook event; did you mean \"channel_occupied\"?"),
        "{stderr}"
    );
    assert!(!stderr.contains("member_added"), "{stderr}");
}

#[test]
fn an_app_level_filter_that_does_not_exist_fails_check_without_webhooks() {
    let apps = AppsDir::new();
    apps.write(
        "a.json",
        r#"{"id": "a", "key": "ka", "secret": "s", "filters": [{"wasm": "missing.wasm"}]}"#,
    );
    let output = hookline(&["check", "--apps", "."], apps.path(), &[]);
    let (stdout, stderr) = text(&output);
    assert!(!output.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("missing.wasm"), "{stderr}");
}

#[test]
fn a_missing_or_empty_apps_directory_is_one_line_saying_where_it_looked() {
    let work = tempfile::tempdir().unwrap();
    let expected_path = work.path().join("apps").display().to_string();
    for args in [&["check"][..], &["serve", "--listen", "127.0.0.1:0"][..]] {
        let output = hookline(args, work.path(), &[]);
        let (_, stderr) = text(&output);
        assert!(!output.status.success(), "{args:?}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("the apps directory {expected_path} does not exist"))
                && stderr.contains("--apps examples/apps"),
            "{args:?}: {stderr}"
        );
        assert!(!work.path().join("apps").exists(), "{args:?} created the directory");
    }

    std::fs::create_dir(work.path().join("apps")).unwrap();
    let output = hookline(&["check"], work.path(), &[]);
    let (_, stderr) = text(&output);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!(
            "no app files (*.json, *.toml) in the apps directory {expected_path}"
        )) && stderr.contains("--apps examples/apps"),
        "{stderr}"
    );

    // serve starts (files added later load), saying the same once.
    let daemon = Daemon::start_with(
        Path::new("apps"),
        DaemonOptions {
            cwd: Some(work.path().to_path_buf()),
            ..Default::default()
        },
    );
    let logs = daemon.logs();
    assert_eq!(logs.matches("no app files").count(), 1, "{logs}");
    assert!(logs.contains(&expected_path), "{logs}");
}

#[test]
fn settings_errors_name_the_file_the_variable_or_the_flag() {
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir(work.path().join("apps")).unwrap();
    let config = work.path().join("hookline.toml");
    std::fs::write(&config, "[retry]\nmax_age_ms = \"a day\"\n").unwrap();
    let config_arg = config.to_str().unwrap();

    let output = hookline(&["check", "--config", config_arg], work.path(), &[]);
    let (_, stderr) = text(&output);
    assert!(
        stderr.starts_with(&format!("error: config file {config_arg}: ")),
        "{stderr}"
    );

    std::fs::write(&config, "[retry]\nmax_age_ms = 5000\n").unwrap();
    let output = hookline(
        &["check", "--config", config_arg],
        work.path(),
        &[("HOOKLINE_DELIVERY_MAX_IN_FLIGHT", "lots")],
    );
    let (_, stderr) = text(&output);
    assert!(
        stderr.starts_with("error: environment variable HOOKLINE_DELIVERY_MAX_IN_FLIGHT: "),
        "{stderr}"
    );
    assert!(!stderr.contains(config_arg), "the file is not to blame: {stderr}");

    let output = hookline(&["serve", "--listen", "here"], work.path(), &[]);
    let (_, stderr) = text(&output);
    assert!(stderr.starts_with("error: --listen: "), "{stderr}");
}

#[test]
fn an_unknown_hookline_variable_is_a_warning_naming_the_nearest() {
    let apps = AppsDir::new();
    apps.write("a.json", r#"{"id": "a", "key": "ka", "secret": "s"}"#);
    let daemon = Daemon::start_with(
        apps.path(),
        DaemonOptions::with_env(&[("HOOKLINE_RETRY_MAX_AGE", "1000")]),
    );
    let logs = daemon.logs();
    assert!(
        logs.contains("WARN")
            && logs.contains(
                "environment variable HOOKLINE_RETRY_MAX_AGE is not a Hookline setting and is ignored; did you mean HOOKLINE_RETRY_MAX_AGE_MS?"
            ),
        "{logs}"
    );
}

#[tokio::test]
async fn paths_in_a_config_file_are_relative_to_that_file() {
    let receiver = Receiver::start().await;
    let deploy = tempfile::tempdir().unwrap();
    std::fs::create_dir(deploy.path().join("apps")).unwrap();
    std::fs::write(
        deploy.path().join("apps/a.json"),
        format!(
            r#"{{"id": "a", "key": "ka", "secret": "sa", "webhooks": [{{"url": "{}", "event_types": ["channel_occupied"]}}]}}"#,
            receiver.url("/h")
        ),
    )
    .unwrap();
    std::fs::write(
        deploy.path().join("hookline.toml"),
        "listen = \"127.0.0.1:0\"\napps_dir = \"apps\"\ndata_dir = \"state\"\n",
    )
    .unwrap();
    // Started from elsewhere, as a service manager would.
    let elsewhere = tempfile::tempdir().unwrap();
    let mut child = KillOnDrop(
        Command::new(hookline_bin())
            .arg("serve")
            .arg("--config")
            .arg(deploy.path().join("hookline.toml"))
            .current_dir(elsewhere.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let line = child.ready_line();
    let addr = listening_address(line.trim()).unwrap_or_else(|| panic!("no ready line: {line:?}"));
    let body = events_body(&[("channel_occupied", "room-1")]);
    let status = post_native(&format!("http://{addr}"), "a", "ka", "sa", &body)
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 200);
    receiver.wait_for("/h", 1).await;
    drop(child);
    assert!(
        deploy.path().join("state/store.redb").is_file(),
        "the store is beside the config"
    );
    assert!(!elsewhere.path().join("state").exists());
}

#[test]
fn json_logs_stay_json_on_every_line() {
    let apps = AppsDir::new();
    apps.write("a.json", r#"{"id": "a", "key": "ka", "secret": "s"}"#);
    let json_lines = |text: &str| {
        for line in text.lines().filter(|l| !l.is_empty()) {
            assert!(
                serde_json::from_str::<serde_json::Value>(line).is_ok(),
                "not JSON: {line:?}\nin:\n{text}"
            );
        }
    };
    let data = tempfile::tempdir().unwrap();
    let stderr_path = data.path().join("stderr.log");
    let mut child = KillOnDrop(
        Command::new(hookline_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--apps"])
            .arg(apps.path())
            .arg("--data-dir")
            .arg(data.path())
            .env("HOOKLINE_SOMETHING_UNKNOWN", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let line = child.ready_line();
    assert!(listening_address(line.trim()).is_some(), "{line:?}");
    json_lines(&line);
    // SIGTERM: the shutdown lines are JSON too.
    let stopped = Command::new("kill").arg(child.0.id().to_string()).status().unwrap();
    assert!(stopped.success());
    assert!(child.0.wait().unwrap().success());
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(stderr.contains("HOOKLINE_SOMETHING_UNKNOWN"), "{stderr}");
    json_lines(&stderr);

    // A refused setting, and a fatal error at start, in JSON too.
    let output = hookline(
        &["serve", "--log-format", "json", "--listen", "nowhere"],
        apps.path(),
        &[],
    );
    let (_, stderr) = text(&output);
    assert!(!output.status.success());
    assert!(stderr.contains("--listen"), "{stderr}");
    json_lines(&stderr);
    let output = hookline(
        &["serve", "--listen", "127.0.0.1:0", "--apps", "missing"],
        apps.path(),
        &[("HOOKLINE_LOG_FORMAT", "json")],
    );
    let (_, stderr) = text(&output);
    assert!(stderr.contains("does not exist"), "{stderr}");
    json_lines(&stderr);
}

#[test]
fn an_offline_replay_without_apps_says_why_it_needs_them_once() {
    let data = tempfile::tempdir().unwrap();
    // A store with no dead letters: the daemon made it and stopped.
    let apps = AppsDir::new();
    apps.write("a.json", r#"{"id": "a", "key": "ka", "secret": "s"}"#);
    drop(Daemon::start_with(
        apps.path(),
        DaemonOptions {
            data_dir: Some(data.path().to_path_buf()),
            ..Default::default()
        },
    ));
    let work = tempfile::tempdir().unwrap();
    let output = hookline(
        &["dlq", "replay", "--all", "--data-dir", data.path().to_str().unwrap()],
        work.path(),
        &[],
    );
    let (_, stderr) = text(&output);
    assert!(!output.status.success());
    assert_eq!(stderr.matches("apps directory").count(), 1, "{stderr}");
    assert!(
        stderr.contains("no daemon answered") && stderr.contains("--apps"),
        "{stderr}"
    );

    let output = hookline(
        &["dlq", "list", "--data-dir", data.path().to_str().unwrap()],
        work.path(),
        &[],
    );
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("no dead letters"), "{stdout}");
}

/// A running `hookline listen`, killed on drop, and its stdout.
struct Listen {
    _child: KillOnDrop,
    stdout: BufReader<std::process::ChildStdout>,
    url: String,
}

impl Listen {
    /// Starts `hookline listen --listen 127.0.0.1:0 ARGS` and waits for its
    /// ready line.
    fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(hookline_bin());
        command
            .args(["listen", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = KillOnDrop(command.spawn().unwrap());
        let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("no ready line: {line:?}"));
        let url = format!("http://{addr}/hooks");
        Self {
            _child: child,
            stdout,
            url,
        }
    }

    /// Delivers `body` with `X-Pusher-Key: key`, signed with `secret`;
    /// returns the two lines `listen` printed for it (it prints them before
    /// it answers).
    async fn deliver(&mut self, key: &str, secret: &str, body: &str) -> String {
        let answer = reqwest::Client::new()
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-pusher-key", key)
            .header("x-pusher-signature", sign(secret, body))
            .body(body.to_string())
            .timeout(PATIENCE)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 200);
        let mut printed = String::new();
        for _ in 0..2 {
            self.stdout.read_line(&mut printed).unwrap();
        }
        assert!(printed.ends_with(&format!("{body}\n")), "{printed}");
        printed
    }
}

#[tokio::test]
async fn listen_verifies_a_delivery_signed_with_any_of_its_secrets() {
    let mut listen = Listen::start(&["--secret", "first-secret", "--secret", "second-secret"], &[]);
    let body = r#"{"time_ms":1,"events":[{"name":"channel_occupied","channel":"room-1"}]}"#;
    let first = listen.deliver("key-1", "first-secret", body).await;
    assert!(
        first.starts_with("POST /hooks key=key-1 batch=- signature OK (--secret 1 of 2)\n"),
        "{first}"
    );
    let second = listen.deliver("key-2", "second-secret", body).await;
    assert!(
        second.starts_with("POST /hooks key=key-2 batch=- signature OK (--secret 2 of 2)\n"),
        "{second}"
    );
    let third = listen.deliver("key-3", "third-secret", body).await;
    assert!(
        third.starts_with("POST /hooks key=key-3 batch=- signature INVALID\n"),
        "{third}"
    );
}

#[tokio::test]
async fn listen_with_apps_verifies_each_delivery_with_the_secret_of_its_keys_app() {
    let apps = AppsDir::new();
    apps.write(
        "a.json",
        r#"{"id": "app-a", "key": "key-a", "secret": "${LISTEN_TEST_SECRET}"}"#,
    );
    // Its filter is not built: `listen` needs only the key and the secret.
    apps.write(
        "b.toml",
        "id = \"app-b\"\nkey = \"key-b\"\nsecret = \"secret-b\"\n[[filters]]\nwasm = \"not-built.wasm\"\n",
    );
    apps.write("broken.json", "{");
    let dir = apps.path().to_str().unwrap();
    let mut listen = Listen::start(&["--apps", dir], &[("LISTEN_TEST_SECRET", "secret-a")]);
    let body = r#"{"time_ms":1,"events":[{"name":"channel_occupied","channel":"room-1"}]}"#;
    let a = listen.deliver("key-a", "secret-a", body).await;
    assert!(a.contains(" signature OK (app app-a)\n"), "{a}");
    let b = listen.deliver("key-b", "secret-b", body).await;
    assert!(b.contains(" signature OK (app app-b)\n"), "{b}");
    let wrong = listen.deliver("key-a", "secret-b", body).await;
    assert!(
        wrong.contains(" signature INVALID (not app app-a's secret)\n"),
        "{wrong}"
    );
    let unknown = listen.deliver("key-z", "secret-z", body).await;
    assert!(
        unknown.contains(&format!(
            " signature not checked: unknown key key-z (no app in {dir} has it)\n"
        )),
        "{unknown}"
    );
    // An app added while it runs is read when its key first arrives.
    apps.write("c.json", r#"{"id": "app-c", "key": "key-c", "secret": "secret-c"}"#);
    let c = listen.deliver("key-c", "secret-c", body).await;
    assert!(c.contains(" signature OK (app app-c)\n"), "{c}");
}

#[tokio::test]
async fn send_prints_the_answer_and_a_refusal_is_an_error_saying_what_to_check() {
    let apps = AppsDir::new();
    apps.write("a.json", r#"{"id": "a", "key": "ka", "secret": "sa"}"#);
    let daemon = Daemon::start(apps.path());
    let send = |secret: &str| {
        hookline(
            &[
                "send",
                "--app",
                "a",
                "--key",
                "ka",
                "--secret",
                secret,
                "--event",
                "channel_occupied",
                "--channel",
                "room-1",
                "--url",
            ]
            .into_iter()
            .chain([daemon.url().as_str()])
            .collect::<Vec<_>>(),
            Path::new("."),
            &[],
        )
    };
    let sent = send("sa");
    let (stdout, stderr) = text(&sent);
    assert!(sent.status.success(), "{stderr}");
    assert_eq!(stdout, "200 {}: accepted channel_occupied on room-1 for app a\n");
    let refused = send("not-sa");
    let (stdout, stderr) = text(&refused);
    assert!(!refused.status.success());
    assert_eq!(stdout, "");
    assert!(
        stderr.starts_with("error: hookline refused the event: 401 {\"error\":")
            && stderr.contains("check that --key ka and --secret are app a's key and secret in its app file"),
        "{stderr}"
    );
}

/// A Rust filter from `hookline filter new` reads events' other fields with
/// `extra_json()`, naming its types through its own `serde_json` and the
/// SDK's re-export alike; it builds for wasm32-wasip2 and runs in Hookline.
#[test]
fn a_scaffolded_rust_filter_reads_extra_fields_and_builds_for_wasm() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("no-internal");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let created = Command::new(hookline_bin())
        .args(["filter", "new"])
        .arg(&dir)
        .args(["--lang", "rust", "--sdk"])
        .arg(repo.join("sdk"))
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", text(&created).1);
    let lib = dir.join("src/lib.rs");
    let code = std::fs::read_to_string(&lib).unwrap();
    let retain = "batch.retain(|event| !event.channel.starts_with(&config.prefix))";
    assert!(code.contains(retain), "the scaffold's filter changed:\n{code}");
    let code = code.replace(
        retain,
        "batch.retain(|event| {\n            !event.channel.starts_with(&config.prefix)\n                \
         && tenant(event) != Some(serde_json::Value::from(\"internal\"))\n        })",
    ) + r#"
/// The event's `tenant`, one of the fields the SDK has no name for.
fn tenant(event: &hookline_filter::Event) -> Option<hookline_filter::serde_json::Value> {
    let extra: hookline_filter::serde_json::Map<String, hookline_filter::serde_json::Value> = event.extra_json();
    extra.get("tenant").cloned()
}
"#;
    std::fs::write(&lib, code).unwrap();
    // The workspace's lock file pins the versions this suite already
    // fetched; the project's own target directory under target/ keeps
    // what it compiled for the next run.
    std::fs::copy(repo.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let built = Command::new(cargo)
        .current_dir(&dir)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .env("CARGO_TARGET_DIR", repo.join("target/scaffold"))
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", text(&built).1);
    let wasm = repo.join("target/scaffold/wasm32-wasip2/release/no_internal.wasm");
    let mut run = Command::new(hookline_bin())
        .args(["filter", "run"])
        .arg(&wasm)
        .args(["--config", r#"{"prefix":"debug-"}"#])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let batch = r#"{"time_ms":7,"events":[{"name":"channel_occupied","channel":"debug-1"},{"name":"channel_occupied","channel":"room-1","tenant":"internal"},{"name":"channel_occupied","channel":"room-2","tenant":"acme"}]}"#;
    std::io::Write::write_all(&mut run.stdin.take().unwrap(), batch.as_bytes()).unwrap();
    let ran = run.wait_with_output().unwrap();
    let (stdout, stderr) = text(&ran);
    assert!(ran.status.success(), "{stderr}");
    assert_eq!(
        stdout,
        "verdict: select [2]\n{\"time_ms\":7,\"events\":[{\"name\":\"channel_occupied\",\"channel\":\"room-2\",\"tenant\":\"acme\"}]}\n"
    );
}
