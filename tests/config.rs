//! App files end to end: soketi's formats load unchanged, `hookline check`
//! reports problems with file and line, and a bad file never stops the good
//! ones from serving.

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

fn check(dir: &Path) -> (bool, String, String) {
    check_with_env(dir, &[])
}

/// `hookline check --apps DIR` with these environment variables set.
fn check_with_env(dir: &Path, env: &[(&str, &str)]) -> (bool, String, String) {
    let output = Command::new(hookline_bin())
        .arg("check")
        .arg("--apps")
        .arg(dir)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The soketi array-format example, verbatim.
fn soketi_example() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/apps/soketi-array.json")).unwrap()
}

#[test]
fn the_soketi_array_example_passes_check() {
    let apps = AppsDir::new();
    apps.write("soketi.json", &soketi_example());
    let (ok, stdout, stderr) = check(apps.path());
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("ok: 2 apps in 1 files"), "{stdout}");
}

#[tokio::test]
async fn a_soketi_array_file_loads_unchanged_and_routes_like_soketi() {
    let receiver = Receiver::start().await;
    let apps = AppsDir::new();
    apps.write(
        "soketi.json",
        &soketi_example().replace("http://127.0.0.1:7078", &receiver.url("")),
    );
    let daemon = Daemon::start(apps.path());

    let chat = events_body(&[
        ("channel_occupied", "private-a-chat"),
        ("client_event", "private-a-chat"),
        ("client_event", "public"),
    ]);
    assert_eq!(
        native(&daemon, "chat-app", "chat-key", "chat-secret", &chat).await.0,
        200
    );
    let presence = events_body(&[("member_added", "presence-x"), ("member_added", "other")]);
    assert_eq!(
        native(&daemon, "presence-app", "presence-key", "presence-secret", &presence)
            .await
            .0,
        200
    );

    let lifecycle = receiver.wait_for("/chat/lifecycle", 1).await;
    let messages = receiver.wait_for("/chat/messages", 1).await;
    let members = receiver.wait_for("/presence", 1).await;
    assert_eq!(lifecycle[0].event_names(), ["channel_occupied"]);
    assert_eq!(messages[0].event_names(), ["client_event"]);
    assert_eq!(messages[0].json()["events"][0]["channel"], "private-a-chat");
    assert_eq!(messages[0].header("x-source"), "hookline-example");
    assert_eq!(members[0].json()["events"][0]["channel"], "presence-x");
    assert_eq!(members[0].event_count(), 1);
    assert_officially_valid("chat-key", "chat-secret", &[lifecycle, messages].concat());
    assert_officially_valid("presence-key", "presence-secret", &members);
}

#[test]
fn check_names_the_broken_file_and_line() {
    let apps = AppsDir::new();
    apps.write("good.json", &soketi_example());
    apps.write(
        "broken.json",
        "[\n  {\"id\": \"x\", \"key\": \"k\",\n    \"secret\": }\n]\n",
    );
    let (ok, stdout, stderr) = check(apps.path());
    assert!(!ok, "check must fail: {stdout}{stderr}");
    let broken = apps.path().join("broken.json");
    assert!(
        stderr.contains(&format!("{}: line 3 column 15", broken.display())),
        "{stderr}"
    );
    assert!(
        stdout.contains("1 of 2 files have problems; 2 apps would serve"),
        "{stdout}"
    );
}

#[test]
fn check_reports_validation_problems_with_what_to_do() {
    let apps = AppsDir::new();
    apps.write(
        "a.toml",
        r#"
[[apps]]
id = "a"
key = "k"
secret = "${HOOKLINE_TEST_UNSET_VARIABLE}"

[[apps]]
id = "b"
key = "kb"
secret = "s"
webhooks = [{ url = "http://x/h" }]

[[apps]]
id = "c"
key = "kc"
secret = "s"
webhooks = [{ event_types = ["a"] }]
"#,
    );
    apps.write(
        "dup.json",
        r#"[{"id": "a2", "key": "k2", "secret": "s", "webhooks": [
            {"id": "same", "url": "http://x/1", "event_types": ["a"]},
            {"id": "same", "url": "http://x/2", "event_types": ["a"]}]}]"#,
    );
    let (ok, _, stderr) = check(apps.path());
    assert!(!ok);
    assert!(
        stderr.contains("environment variable HOOKLINE_TEST_UNSET_VARIABLE is not set (in `secret`)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("app \"b\": webhook 0: `event_types` is missing"),
        "{stderr}"
    );
    assert!(
        stderr.contains("app \"c\": webhook 0: a webhook needs a target: set `url`"),
        "{stderr}"
    );
    assert!(stderr.contains("two webhooks have the id \"same\""), "{stderr}");
}

#[test]
fn duplicate_ids_and_keys_across_files_are_refused_naming_both() {
    let apps = AppsDir::new();
    apps.write("1.json", r#"{"id": "a", "key": "k", "secret": "s"}"#);
    apps.write("2.json", r#"{"id": "a", "key": "other", "secret": "s"}"#);
    apps.write("3.json", r#"{"id": "b", "key": "k", "secret": "s"}"#);
    let (ok, _, stderr) = check(apps.path());
    assert!(!ok);
    let one = apps.path().join("1.json");
    assert!(
        stderr.contains(&format!("app id \"a\" is also defined in {}", one.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("app key \"k\" (app \"b\") is also used in {}", one.display())),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_bad_file_does_not_stop_the_good_ones() {
    let receiver = Receiver::start().await;
    let apps = AppsDir::new();
    apps.write(
        "good.json",
        &format!(r#"{{"id": "good", "key": "kg", "secret": "sg", "webhooks": [{{"url": "{}", "event_types": ["cache_miss"]}}]}}"#, receiver.url("/g")),
    );
    apps.write(
        "bad.json",
        r#"{"id": "bad", "key": "kb", "secret": "sb", "webhooks": [{"url": "ftp://nope", "event_types": ["x"]}]}"#,
    );
    let daemon = Daemon::start(apps.path());
    assert_eq!(
        native(&daemon, "good", "kg", "sg", &events_body(&[("cache_miss", "c")]))
            .await
            .0,
        200
    );
    assert_eq!(
        native(&daemon, "bad", "kb", "sb", &events_body(&[("cache_miss", "c")]))
            .await
            .0,
        404
    );
    receiver.wait_for("/g", 1).await;
    let logs = daemon.logs();
    assert!(
        logs.contains("bad.json") && logs.contains("must start with http:// or https://"),
        "{logs}"
    );
    let ready: serde_json::Value = serde_json::from_str(
        &reqwest::get(format!("{}/readyz", daemon.url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(ready["ready"], true, "a bad app file does not make the daemon unready");
    assert_eq!(ready["file_errors"].as_array().unwrap().len(), 1);
}

/// Sets a file's modification time to `ago` before now.
fn written_ago(path: &Path, ago: std::time::Duration) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - ago)
        .unwrap();
}

/// Two files claim one app id: the file written last is refused, by
/// `hookline check`, by a daemon starting on the directory and by a
/// running daemon the file is added to, whatever the files' names.
#[tokio::test]
async fn check_and_the_daemon_refuse_the_same_file_of_two_claiming_one_id() {
    let apps = AppsDir::new();
    let first = apps.write("soketi-array.json", r#"{"id": "chat-app", "key": "k1", "secret": "s"}"#);
    written_ago(&first, std::time::Duration::from_secs(3600));
    // Sorted before the first by name; written after it.
    let later = apps.write("chat.json", r#"{"id": "chat-app", "key": "k2", "secret": "s"}"#);
    let blame = format!(
        "{}: app id \"chat-app\" is also defined in {}",
        later.display(),
        first.display()
    );

    let (ok, stdout, stderr) = check(apps.path());
    assert!(!ok);
    assert!(stderr.contains(&blame), "check blames the later file:\n{stderr}");
    assert!(
        stdout.contains("1 of 2 files have problems; 1 apps would serve"),
        "{stdout}"
    );

    let started = Daemon::start(apps.path());
    let status = readyz(&started).await;
    assert_eq!(status["file_errors"].as_array().unwrap().len(), 1, "{status}");
    assert!(status["file_errors"][0].as_str().unwrap().contains(&blame), "{status}");
    let answer = native(&started, "chat-app", "k1", "s", &events_body(&[("cache_miss", "c")])).await;
    assert_eq!(answer.0, 200, "the earlier file's app serves");
    drop(started);

    // A daemon already running on the first file when the second appears.
    std::fs::remove_file(&later).unwrap();
    let running = Daemon::start(apps.path());
    apps.write("chat.json", r#"{"id": "chat-app", "key": "k2", "secret": "s"}"#);
    let status = wait_ready(&running, "the added file refused", |s| {
        !s["file_errors"].as_array().unwrap().is_empty()
    })
    .await;
    assert!(status["file_errors"][0].as_str().unwrap().contains(&blame), "{status}");
}

/// A file refused for an error still has its warnings printed, beside the
/// error, so one run of `check` shows every mistake in it.
#[test]
fn check_prints_a_refused_files_warnings_beside_its_errors() {
    let apps = AppsDir::new();
    let file = apps.write(
        "a.json",
        r#"{"id": "a", "key": "k", "secret": "s", "webhooks": [
            {"url": "ftp://nope", "event_types": ["channel_occupied"]},
            {"url": "http://127.0.0.1:9/", "event_types": ["channel_ocupied"], "timeout": 5}]}"#,
    );
    let (ok, _, stderr) = check(apps.path());
    assert!(!ok);
    assert!(
        stderr.contains(&format!("error: {}: ", file.display()))
            && stderr.contains("must start with http:// or https://"),
        "{stderr}"
    );
    for warned in ["unknown key `timeout`", "did you mean \"channel_occupied\"?"] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&format!("warning: {}: ", file.display())) && l.contains(warned)),
            "{warned}: {stderr}"
        );
    }
}

/// Every app and webhook the README's "Queues and streams" section shows
/// passes `check` (a webhook shown alone, in an app of its own), so the
/// keys it documents are the keys the daemon reads.
#[test]
fn the_readmes_queue_and_stream_examples_pass_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let start = readme
        .find("\n## Queues and streams")
        .expect("a Queues and streams section");
    let section = &readme[start..start + 1 + readme[start + 1..].find("\n## ").unwrap()];
    let apps = AppsDir::new();
    let mut shown = 0;
    for (i, block) in section.split("```json\n").skip(1).enumerate() {
        let json: serde_json::Value = serde_json::from_str(&block[..block.find("```").unwrap()]).unwrap();
        let app = if json.get("webhooks").is_some() {
            json
        } else {
            serde_json::json!({"id": format!("shown-{i}"), "key": format!("shown-key-{i}"), "secret": "s",
                "webhooks": [json]})
        };
        apps.write(&format!("shown-{i}.json"), &app.to_string());
        shown += 1;
    }
    assert!(shown >= 3, "{shown} JSON blocks");
    let (ok, stdout, stderr) = check_with_env(apps.path(), &[("AWS_DEMO_SECRET", "s"), ("NATS_TOKEN", "t")]);
    assert!(ok, "{stdout}{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
}

/// A key of another sink kind (`sqs` on an http webhook, `lambda` on a
/// NATS one) is named with the kind it belongs to, not taken silently;
/// a key two kinds share (`region`) is fine on either.
#[test]
fn check_names_keys_that_belong_to_another_kind() {
    let apps = AppsDir::new();
    let file = apps.write(
        "a.json",
        r#"{"id": "a", "key": "k", "secret": "s", "webhooks": [
            {"url": "http://127.0.0.1:9/", "event_types": ["channel_occupied"], "sqs": {"group_by": "app"}},
            {"nats_subject": "hooks.a", "event_types": ["channel_occupied"], "lambda": {"async": true}},
            {"lambda_function": "f", "region": "eu-west-1", "event_types": ["channel_occupied"]}]}"#,
    );
    let (ok, stdout, stderr) = check(apps.path());
    assert!(ok, "{stdout}{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with(&format!("warning: {}: ", file.display())))
        .collect();
    for (key, owner, kind) in [
        ("sqs", "sqs (`sqs_queue_url`)", "http"),
        ("lambda", "lambda (`lambda_function`)", "nats"),
    ] {
        assert!(
            warnings.iter().any(|l| l.contains(&format!(
                "`{key}` belongs to {owner} webhooks and is ignored on this {kind} webhook"
            ))),
            "{key}: {stderr}"
        );
    }
    assert_eq!(warnings.len(), 2, "`region` is the lambda webhook's own key: {stderr}");
}

/// The ingest listener's ready line is the only line that says
/// "listening on"; the admin listener's starts otherwise.
#[test]
fn the_ready_lines_of_ingest_and_admin_start_differently() {
    let apps = AppsDir::new();
    apps.write("a.json", r#"{"id": "a", "key": "k", "secret": "s"}"#);
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(hookline_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--apps"])
        .arg(apps.path())
        .arg("--data-dir")
        .arg(data.path())
        .env("HOOKLINE_ADMIN_LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let admin = lines.next().unwrap().unwrap();
    let ingest = lines.next().unwrap().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(admin.starts_with("admin api on 127.0.0.1:"), "{admin:?}");
    assert!(!admin.contains("listening on"), "{admin:?}");
    assert!(listening_address(&ingest).is_some(), "{ingest:?}");
}

/// The README's app-file example, written beside the shipped examples as a
/// reader would, passes `check`: its ids and keys are its own.
#[test]
fn the_readmes_app_example_passes_check_beside_the_shipped_examples() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = &readme[readme.find("\n## App files").expect("an App files section")..];
    let start = section.find("```json\n").expect("a JSON block") + "```json\n".len();
    let example = &section[start..start + section[start..].find("```").unwrap()];
    let apps = AppsDir::new();
    for entry in std::fs::read_dir(root.join("examples/apps")).unwrap() {
        let path = entry.unwrap().path();
        // filtered.json's filters are built by the filter tests, which
        // check that directory whole (filters::the_example_apps_directory_passes_check).
        let name = path.file_name().unwrap().to_str().unwrap();
        if name.ends_with(".json") && name != "filtered.json" {
            apps.write(name, &std::fs::read_to_string(&path).unwrap());
        }
    }
    apps.write("mine.json", example);
    let (ok, stdout, stderr) = check_with_env(apps.path(), &[("MY_APP_SECRET", "s3cret"), ("HOOK_TOKEN", "t0ken")]);
    assert!(ok, "{stdout}{stderr}");
    assert!(!stderr.contains("also defined in"), "{stderr}");
}
