//! Hot reload end to end: every way tools write files is picked up; with
//! events flowing the whole time, adding, changing, corrupting, fixing and
//! deleting app and filter files loses and misroutes nothing.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;
use support::*;

fn app(id: &str, key: &str, secret: &str, url: &str) -> String {
    json!({"id": id, "key": key, "secret": secret, "batching": {"max_wait_ms": 10},
        "webhooks": [{"url": url, "event_types": ["channel_occupied"]}]})
    .to_string()
}

/// Writes through a temporary file and a rename, so no reader sees half.
fn replace_file(path: &Path, contents: &str) {
    let tmp = path.with_file_name(format!(".{}.tmp", path.file_name().unwrap().to_str().unwrap()));
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn generation_after(daemon: &Daemon, previous: u64) -> u64 {
    wait_ready(daemon, "a new generation", |s| {
        s["generation"].as_u64().unwrap() > previous
    })
    .await["generation"]
        .as_u64()
        .unwrap()
}

/// Sends one event on a fresh channel until one is accepted by `generation`
/// or later, and waits for its delivery to `path`.
async fn routed_to(daemon: &Daemon, receiver: &Receiver, secret: &str, generation: u64, path: &str, tag: &str) {
    let body = events_body(&[("channel_occupied", tag)]);
    let (status, accepted_by) = native_generation(daemon, "a", "ka", secret, &body).await;
    assert_eq!(status, 200);
    assert!(accepted_by.unwrap() >= generation);
    receiver
        .wait_until(|all| all.iter().any(|r| r.path == path && r.body.contains(tag)))
        .await;
}

#[tokio::test]
async fn every_way_of_writing_a_file_is_picked_up() {
    let receiver = Receiver::start().await;
    let apps = AppsDir::new();
    let file = apps.write("a.json", &app("a", "ka", "sa", &receiver.url("/initial")));
    let daemon = Daemon::start(apps.path());
    let mut generation = readyz(&daemon).await["generation"].as_u64().unwrap();

    // In place: overwrite the existing bytes without truncating first.
    let text = app("a", "ka", "sa", &receiver.url("/in-place"));
    let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.set_len(text.len() as u64).unwrap();
    drop(f);
    generation = generation_after(&daemon, generation).await;
    routed_to(&daemon, &receiver, "sa", generation, "/in-place", "t1").await;

    // Truncate, then write in two parts.
    let text = app("a", "ka", "sa", &receiver.url("/truncated"));
    let mut f = std::fs::File::create(&file).unwrap();
    f.write_all(&text.as_bytes()[..10]).unwrap();
    f.flush().unwrap();
    f.write_all(&text.as_bytes()[10..]).unwrap();
    drop(f);
    generation = generation_after(&daemon, generation).await;
    routed_to(&daemon, &receiver, "sa", generation, "/truncated", "t2").await;

    // Write a temporary file, rename it over.
    replace_file(&file, &app("a", "ka", "sa", &receiver.url("/renamed")));
    generation = generation_after(&daemon, generation).await;
    routed_to(&daemon, &receiver, "sa", generation, "/renamed", "t3").await;

    // Delete, then create.
    std::fs::remove_file(&file).unwrap();
    std::fs::write(&file, app("a", "ka", "sa", &receiver.url("/recreated"))).unwrap();
    generation = generation_after(&daemon, generation).await;
    routed_to(&daemon, &receiver, "sa", generation, "/recreated", "t4").await;
}

#[tokio::test]
async fn a_configmap_style_symlink_swap_is_picked_up() {
    let receiver = Receiver::start().await;
    let apps = AppsDir::new();
    let root = apps.path();
    // The Kubernetes layout: apps.json -> ..data/apps.json, ..data -> ..v1.
    std::fs::create_dir(root.join("..v1")).unwrap();
    std::fs::write(root.join("..v1/apps.json"), app("a", "ka", "sa", &receiver.url("/v1"))).unwrap();
    std::os::unix::fs::symlink("..v1", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/apps.json", root.join("apps.json")).unwrap();
    let daemon = Daemon::start(root);
    let generation = readyz(&daemon).await["generation"].as_u64().unwrap();
    routed_to(&daemon, &receiver, "sa", generation, "/v1", "s1").await;

    std::fs::create_dir(root.join("..v2")).unwrap();
    std::fs::write(root.join("..v2/apps.json"), app("a", "ka", "sa", &receiver.url("/v2"))).unwrap();
    std::os::unix::fs::symlink("..v2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    let generation = generation_after(&daemon, generation).await;
    routed_to(&daemon, &receiver, "sa", generation, "/v2", "s2").await;
}

/// One accepted event: which generation accepted it.
#[derive(Debug, Clone)]
struct Accepted {
    tag: String,
    generation: u64,
}

#[tokio::test]
async fn nothing_is_lost_or_misrouted_while_files_change_under_steady_load() {
    let receiver = Receiver::start().await;
    let apps = AppsDir::new();
    let file_a = apps.path().join("a.json");
    replace_file(&file_a, &app("a", "ka", "s1", &receiver.url("/v1")));
    let daemon = Arc::new(Daemon::start(apps.path()));
    let g1 = readyz(&daemon).await["generation"].as_u64().unwrap();

    // A steady sender: one event every few ms, on its own channel name,
    // signed with whichever secret the daemon currently accepts.
    let accepted: Arc<Mutex<Vec<Accepted>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (daemon, accepted, stop) = (daemon.clone(), accepted.clone(), stop.clone());
        tokio::spawn(async move {
            let mut secrets = ["s1", "s2"];
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let tag = format!("e{n:05}");
                let body = events_body(&[("channel_occupied", &tag)]);
                let (status, generation) = native_generation(&daemon, "a", "ka", secrets[0], &body).await;
                match status {
                    200 => accepted.lock().unwrap().push(Accepted {
                        tag,
                        generation: generation.unwrap(),
                    }),
                    401 => secrets.swap(0, 1),
                    404 => {} // the app was deleted
                    other => panic!("unexpected answer {other}"),
                }
                tokio::time::sleep(std::time::Duration::from_millis(3)).await;
            }
        })
    };
    let accepted_at = |g: u64| {
        let accepted = accepted.clone();
        move || accepted.lock().unwrap().iter().filter(|a| a.generation == g).count()
    };
    let wait_some = |g: u64| {
        let count = accepted_at(g);
        async move {
            let deadline = std::time::Instant::now() + PATIENCE;
            while count() < 5 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no events accepted under generation {g}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    };
    wait_some(g1).await;

    // Point the webhook elsewhere.
    replace_file(&file_a, &app("a", "ka", "s1", &receiver.url("/v2")));
    let g2 = generation_after(&daemon, g1).await;
    wait_some(g2).await;
    // Rotate the secret.
    replace_file(&file_a, &app("a", "ka", "s2", &receiver.url("/v2")));
    let g3 = generation_after(&daemon, g2).await;
    wait_some(g3).await;
    // Corrupt the file: the last good version keeps serving.
    replace_file(&file_a, "{\"id\": \"a\", \"key\": ");
    let status = wait_ready(&daemon, "the corrupt file reported", |s| {
        !s["file_errors"].as_array().unwrap().is_empty()
    })
    .await;
    assert_eq!(
        status["generation"].as_u64(),
        Some(g3),
        "a corrupt file changes nothing"
    );
    assert_eq!(status["last_reload"]["result"], "partial");
    assert!(
        status["file_errors"][0].as_str().unwrap().contains("line 1 column"),
        "{status}"
    );
    let before = accepted_at(g3)();
    let deadline = std::time::Instant::now() + PATIENCE;
    while accepted_at(g3)() < before + 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "no events accepted under generation {g3} after the corrupt write"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Fix it, with a new URL.
    replace_file(&file_a, &app("a", "ka", "s2", &receiver.url("/v4")));
    let g4 = generation_after(&daemon, g3).await;
    assert!(readyz(&daemon).await["file_errors"].as_array().unwrap().is_empty());
    wait_some(g4).await;
    // Add another app in a new file.
    apps.write("b.json", &app("b", "kb", "sb", &receiver.url("/b")));
    let g5 = generation_after(&daemon, g4).await;
    assert_eq!(
        native(&daemon, "b", "kb", "sb", &events_body(&[("channel_occupied", "b1")]))
            .await
            .0,
        200
    );
    wait_some(g5).await;
    // Enough load for the checks below to mean something (on a busy machine
    // the steps above can pass in fewer events).
    let accepted_total = || accepted.lock().unwrap().len();
    let deadline = std::time::Instant::now() + PATIENCE;
    while accepted_total() <= 50 {
        assert!(std::time::Instant::now() < deadline, "the sender stalled");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Delete the first app's file: its ingest is refused from then on.
    std::fs::remove_file(&file_a).unwrap();
    let g6 = generation_after(&daemon, g5).await;
    assert_eq!(
        native(&daemon, "a", "ka", "s2", &events_body(&[("channel_occupied", "late")]))
            .await
            .0,
        404
    );
    stop.store(true, Ordering::Relaxed);
    sender.await.unwrap();
    assert!(accepted.lock().unwrap().iter().all(|a| a.generation < g6));

    // Every accepted event is delivered exactly once, where the config that
    // accepted it said, signed with the secret current when it was sent.
    let expected_path: HashMap<u64, &str> = [(g1, "/v1"), (g2, "/v2"), (g3, "/v2"), (g4, "/v4"), (g5, "/v4")].into();
    let accepted = accepted.lock().unwrap().clone();
    let total = accepted.len();
    receiver
        .wait_until(|all| {
            all.iter()
                .filter(|r| r.path != "/b")
                .map(Received::event_count)
                .sum::<usize>()
                >= total
        })
        .await;
    let mut delivered: BTreeMap<String, (String, usize)> = BTreeMap::new();
    for delivery in receiver.all().iter().filter(|r| r.path != "/b") {
        for event in delivery.json()["events"].as_array().unwrap() {
            let tag = event["channel"].as_str().unwrap().to_string();
            let entry = delivered.entry(tag).or_insert((delivery.path.clone(), 0));
            entry.1 += 1;
        }
        let valid_old = sign("s1", &delivery.body) == delivery.header("x-pusher-signature");
        let valid_new = sign("s2", &delivery.body) == delivery.header("x-pusher-signature");
        assert!(valid_old || valid_new, "signed with neither secret: {delivery:?}");
    }
    let generation_of: HashMap<&str, u64> = accepted.iter().map(|a| (a.tag.as_str(), a.generation)).collect();
    for delivery in receiver.all().iter().filter(|r| r.path != "/b") {
        let all_after_rotation = delivery.json()["events"].as_array().unwrap().iter().all(|e| {
            generation_of
                .get(e["channel"].as_str().unwrap())
                .is_some_and(|g| *g >= g3)
        });
        if all_after_rotation {
            assert_eq!(
                sign("s2", &delivery.body),
                delivery.header("x-pusher-signature"),
                "signed with the rotated secret"
            );
        }
    }
    for a in &accepted {
        let (path, count) = delivered
            .get(&a.tag)
            .unwrap_or_else(|| panic!("{} was accepted but never delivered", a.tag));
        assert_eq!(*count, 1, "{} delivered {count} times", a.tag);
        assert_eq!(
            path, expected_path[&a.generation],
            "{} accepted under generation {} went to {path}",
            a.tag, a.generation
        );
    }
    assert!(total > 50, "the load was steady: {total} events");
}

#[tokio::test]
async fn sighup_reloads() {
    let receiver = Receiver::start().await;
    let apps = AppsDir::new();
    let file = apps.write("a.json", &app("a", "ka", "sa", &receiver.url("/before")));
    let options = DaemonOptions::with_env(&[("HOOKLINE_WATCH", "false")]);
    let daemon = Daemon::start_with(apps.path(), options);
    let generation = readyz(&daemon).await["generation"].as_u64().unwrap();
    replace_file(&file, &app("a", "ka", "sa", &receiver.url("/after")));
    // With watch = false the change waits for the signal: an event sent
    // now still goes where the old file said.
    routed_to(&daemon, &receiver, "sa", generation, "/before", "h0").await;
    assert_eq!(readyz(&daemon).await["generation"].as_u64(), Some(generation));
    daemon.signal("HUP");
    let generation = generation_after(&daemon, generation).await;
    routed_to(&daemon, &receiver, "sa", generation, "/after", "h1").await;
}

#[tokio::test]
async fn a_changed_filter_file_is_swapped_and_a_broken_one_keeps_the_old() {
    let receiver = Receiver::start().await;
    let apps = AppsDir::new();
    let filters = tempfile::tempdir().unwrap();
    let filter = filters.path().join("current.wasm");
    std::fs::copy(wasm_filter("drop_by_channel.wasm"), &filter).unwrap();
    let config = json!({"id": "a", "key": "ka", "secret": "sa", "batching": {"max_wait_ms": 10},
        "webhooks": [{"url": receiver.url("/h"), "event_types": ["channel_occupied"],
            "filters": [{"wasm": filter.to_str().unwrap(), "config": {"channels": ["drop-*"]}}]}]});
    apps.write("a.json", &config.to_string());
    let daemon = Daemon::start(apps.path());
    let deliver = |tags: &'static [&'static str]| {
        let daemon = &daemon;
        let receiver = &receiver;
        async move {
            let events: Vec<(&str, &str)> = tags.iter().map(|t| ("channel_occupied", *t)).collect();
            assert_eq!(native(daemon, "a", "ka", "sa", &events_body(&events)).await.0, 200);
            let marker = tags.last().unwrap();
            receiver
                .wait_until(|all| all.iter().any(|r| r.body.contains(marker)))
                .await;
            let got = receiver.all().into_iter().find(|r| r.body.contains(marker)).unwrap();
            got.json()["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["channel"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(deliver(&["drop-1", "keep-1"]).await, ["keep-1"]);
    let generation = readyz(&daemon).await["generation"].as_u64().unwrap();

    // A broken new version: reported, and the old one keeps running.
    std::fs::write(&filter, b"not a component").unwrap();
    wait_ready(&daemon, "the broken filter reported", |s| {
        !s["file_errors"].as_array().unwrap().is_empty()
    })
    .await;
    assert_eq!(deliver(&["drop-2", "keep-2"]).await, ["keep-2"]);

    // A working new version (one that keeps everything): swapped in.
    let tmp = filters.path().join("next.wasm");
    std::fs::copy(wasm_filter("hostile_filter.wasm"), &tmp).unwrap();
    std::fs::rename(&tmp, &filter).unwrap();
    generation_after(&daemon, generation).await;
    assert_eq!(deliver(&["drop-3", "keep-3"]).await, ["drop-3", "keep-3"]);
    assert!(
        readyz(&daemon).await["file_errors"].as_array().unwrap().is_empty(),
        "the fixed filter clears the error"
    );
}

/// Starts a daemon in `work` with `--apps FORM` (`apps`, `./apps/`, a
/// symlink…), and shows a changed app file, a new one and a changed filter
/// file are all picked up.
async fn reloads_with_apps_given_as(form: &str, prepare: impl FnOnce(&Path) -> std::path::PathBuf) {
    let receiver = Receiver::start().await;
    let work = tempfile::tempdir().unwrap();
    // The directory the files are written in (what `form` leads to).
    let apps = prepare(work.path());
    std::fs::create_dir_all(apps.join("filters")).unwrap();
    let filter = apps.join("filters/f.wasm");
    std::fs::copy(wasm_filter("drop_by_channel.wasm"), &filter).unwrap();
    let filtered = |url: String| {
        json!({"id": "a", "key": "ka", "secret": "sa", "batching": {"max_wait_ms": 10},
            "webhooks": [{"url": url, "event_types": ["channel_occupied"],
                "filters": [{"wasm": "filters/f.wasm", "config": {"channels": ["drop-*"]}}]}]})
        .to_string()
    };
    replace_file(&apps.join("a.json"), &filtered(receiver.url("/v1")));
    let options = DaemonOptions {
        cwd: Some(work.path().to_path_buf()),
        ..Default::default()
    };
    let daemon = Daemon::start_with(Path::new(form), options);
    let generation = readyz(&daemon).await["generation"].as_u64().unwrap();
    routed_to(&daemon, &receiver, "sa", generation, "/v1", &format!("{form}-1")).await;

    // An edited app file.
    replace_file(&apps.join("a.json"), &filtered(receiver.url("/v2")));
    let generation = generation_after(&daemon, generation).await;
    routed_to(&daemon, &receiver, "sa", generation, "/v2", &format!("{form}-2")).await;

    // A new app file.
    std::fs::write(apps.join("b.json"), app("b", "kb", "sb", &receiver.url("/b"))).unwrap();
    let generation = generation_after(&daemon, generation).await;
    let body = events_body(&[("channel_occupied", "new-file")]);
    assert_eq!(native(&daemon, "b", "kb", "sb", &body).await.0, 200);
    receiver.wait_for("/b", 1).await;

    // A changed filter file (one that keeps everything, so drop-* arrives).
    let tmp = apps.join("filters/next.wasm");
    std::fs::copy(wasm_filter("hostile_filter.wasm"), &tmp).unwrap();
    std::fs::rename(&tmp, &filter).unwrap();
    generation_after(&daemon, generation).await;
    let body = events_body(&[("channel_occupied", "drop-kept")]);
    assert_eq!(native(&daemon, "a", "ka", "sa", &body).await.0, 200);
    receiver
        .wait_until(|all| all.iter().any(|r| r.path == "/v2" && r.body.contains("drop-kept")))
        .await;
}

fn plain_dir(work: &Path) -> std::path::PathBuf {
    let apps = work.join("apps");
    std::fs::create_dir(&apps).unwrap();
    apps
}

#[tokio::test]
async fn a_relative_apps_directory_is_watched() {
    reloads_with_apps_given_as("apps", plain_dir).await;
}

#[tokio::test]
async fn a_dotted_relative_apps_directory_is_watched() {
    reloads_with_apps_given_as("./apps/", plain_dir).await;
}

#[tokio::test]
async fn an_apps_directory_reached_through_a_symlink_is_watched() {
    reloads_with_apps_given_as("current", |work| {
        let apps = plain_dir(work);
        std::os::unix::fs::symlink("apps", work.join("current")).unwrap();
        apps
    })
    .await;
}

/// The directory itself is a symlink swapped to a new release, as deploy
/// tools and Kubernetes ConfigMap mounts of a whole directory do.
#[tokio::test]
async fn swapping_the_apps_directory_symlink_to_a_new_release_is_picked_up() {
    let receiver = Receiver::start().await;
    let work = tempfile::tempdir().unwrap();
    for release in ["v1", "v2"] {
        let dir = work.path().join("releases").join(release);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("a.json"),
            app("a", "ka", "sa", &receiver.url(&format!("/{release}"))),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("releases/v1", work.path().join("apps")).unwrap();
    let options = DaemonOptions {
        cwd: Some(work.path().to_path_buf()),
        ..Default::default()
    };
    let daemon = Daemon::start_with(Path::new("apps"), options);
    let generation = readyz(&daemon).await["generation"].as_u64().unwrap();
    routed_to(&daemon, &receiver, "sa", generation, "/v1", "release-1").await;

    // ln -sfn releases/v2 apps, atomically: a new link renamed over.
    std::os::unix::fs::symlink("releases/v2", work.path().join("apps.tmp")).unwrap();
    std::fs::rename(work.path().join("apps.tmp"), work.path().join("apps")).unwrap();
    let generation = generation_after(&daemon, generation).await;
    routed_to(&daemon, &receiver, "sa", generation, "/v2", "release-2").await;

    // The watch followed the swap: an edit inside the new release counts.
    replace_file(
        &work.path().join("releases/v2/a.json"),
        &app("a", "ka", "sa", &receiver.url("/v2-edited")),
    );
    let generation = generation_after(&daemon, generation).await;
    routed_to(&daemon, &receiver, "sa", generation, "/v2-edited", "release-3").await;
}
