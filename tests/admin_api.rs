//! The admin API (docs/contract.md §10, docs/openapi.json) against the real
//! binary: off by default and never on the ingest port, the token, every
//! endpoint's shape checked against the OpenAPI document, paging and
//! filters, and what replay, purge and reload do.

mod support;

use serde_json::Value;
use support::*;

const TOKEN: &str = "admin-token-for-the-tests-0123";

/// A daemon with the admin listener on a loopback port, its token read
/// from the environment as `${ADMIN_TOKEN}`.
fn admin_daemon(apps: &AppsDir, token: Option<&str>) -> Daemon {
    let mut env = vec![("HOOKLINE_ADMIN_LISTEN", "127.0.0.1:0")];
    if let Some(token) = token {
        env.push(("HOOKLINE_ADMIN_TOKEN", "${ADMIN_TOKEN}"));
        env.push(("ADMIN_TOKEN", token));
    }
    let daemon = Daemon::start_with(apps.path(), DaemonOptions::with_env(&env));
    assert!(daemon.admin.is_some(), "no admin line on stdout");
    daemon
}

/// The API's client: `GET`/`POST`/`DELETE` with the token, answers as
/// (status, JSON).
struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    fn of(daemon: &Daemon, token: Option<&str>) -> Self {
        Self {
            base: format!("http://{}", daemon.admin.unwrap()),
            token: token.map(str::to_string),
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let answer = request.send().await.unwrap();
        let status = answer.status().as_u16();
        let text = answer.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }
}

/// The checked-in OpenAPI document.
fn openapi() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Checks `value` against the OpenAPI schema `schema` (the subset the
/// document uses: type, required, properties, items, $ref, oneOf, allOf,
/// enum, min/maxItems, additionalProperties). Returns every mismatch.
fn mismatches(doc: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return mismatches(doc, &doc["components"]["schemas"][name], value, at);
    }
    if let Some(all) = schema["allOf"].as_array() {
        for part in all {
            found.extend(mismatches(doc, part, value, at));
        }
        return found;
    }
    if let Some(any) = schema["oneOf"].as_array() {
        if any.iter().all(|s| !mismatches(doc, s, value, at).is_empty()) {
            found.push(format!("{at}: {value} matches none of oneOf"));
        }
        return found;
    }
    let type_ok = |t: &str| match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_u64() || value.is_i64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        other => panic!("schema type {other} not handled"),
    };
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !types.is_empty() && !types.iter().any(|t| type_ok(t)) {
        found.push(format!("{at}: {value} is not {types:?}"));
        return found;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        found.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let Value::Object(map) = value {
        for key in schema["required"].as_array().into_iter().flatten() {
            if !map.contains_key(key.as_str().unwrap()) {
                found.push(format!("{at}: missing {key}"));
            }
        }
        for (key, property) in schema["properties"].as_object().into_iter().flatten() {
            if let Some(v) = map.get(key) {
                found.extend(mismatches(doc, property, v, &format!("{at}.{key}")));
            }
        }
        if schema["additionalProperties"].is_object() {
            for (key, v) in map {
                found.extend(mismatches(
                    doc,
                    &schema["additionalProperties"],
                    v,
                    &format!("{at}.{key}"),
                ));
            }
        }
    }
    if let Value::Array(items) = value {
        if let Some(min) = schema["minItems"].as_u64()
            && (items.len() as u64) < min
        {
            found.push(format!("{at}: {} items, fewer than {min}", items.len()));
        }
        if let Some(max) = schema["maxItems"].as_u64()
            && (items.len() as u64) > max
        {
            found.push(format!("{at}: {} items, more than {max}", items.len()));
        }
        for (i, item) in items.iter().enumerate() {
            found.extend(mismatches(doc, &schema["items"], item, &format!("{at}[{i}]")));
        }
    }
    found
}

/// Asserts an answer is documented for `path` and `method` with `status`
/// and matches its schema.
fn assert_documented(doc: &Value, path: &str, method: &str, status: u16, body: &Value) {
    let operation = &doc["paths"][path][method];
    assert!(operation.is_object(), "{method} {path} is not in docs/openapi.json");
    let response = &operation["responses"][status.to_string()];
    assert!(
        response.is_object(),
        "{method} {path} answered {status}, which the document does not list: {body}"
    );
    let schema = &response["content"]["application/json"]["schema"];
    let problems = mismatches(doc, schema, body, "$");
    assert!(
        problems.is_empty(),
        "{method} {path} {status}:\n{}\n{body:#}",
        problems.join("\n")
    );
}

/// Two apps: `a` with a webhook that answers 400 (dead letters at once)
/// and one that is fine, `b` with one that answers 400.
fn two_apps(receiver: &Receiver) -> AppsDir {
    receiver.by_default("/broken", Reply::status(400));
    receiver.by_default("/b", Reply::status(400));
    let apps = AppsDir::new();
    let url = |path: &str| receiver.url(path);
    apps.write(
        "a.json",
        &format!(
            r#"{{"id": "a", "key": "ka", "secret": "sa", "batching": {{"enabled": false}},
                "webhooks": [{{"id": "broken", "url": "{}?secret-query=hunter2", "event_types": ["channel_occupied"]}},
                             {{"id": "fine", "url": "{}", "event_types": ["channel_vacated"]}}]}}"#,
            url("/broken"),
            url("/fine")
        ),
    );
    apps.write(
        "b.json",
        &format!(
            r#"{{"id": "b", "key": "kb", "secret": "sb", "batching": {{"enabled": false}},
                "webhooks": [{{"id": "only", "url": "{}", "event_types": ["channel_occupied"]}}]}}"#,
            url("/b")
        ),
    );
    apps
}

/// Sends `n` separate `channel_occupied` events to `app` (each its own
/// batch, so its own dead letter).
async fn occupy(daemon: &Daemon, app: &str, key: &str, secret: &str, n: usize) {
    for i in 0..n {
        let body = events_body(&[("channel_occupied", &format!("room-{app}-{i}"))]);
        assert_eq!(native(daemon, app, key, secret, &body).await.0, 200);
    }
}

#[tokio::test]
async fn the_admin_listener_is_off_by_default_and_never_on_the_ingest_port() {
    let receiver = Receiver::start().await;
    let apps = two_apps(&receiver);
    let daemon = Daemon::start(apps.path());
    assert_eq!(daemon.admin, None, "no admin listener unless admin.listen is set");
    let with_admin = admin_daemon(&apps, Some(TOKEN));
    for d in [&daemon, &with_admin] {
        for path in ["/", "/api/v1/status", "/api/v1/openapi.json", "/assets/status.js"] {
            let answer = reqwest::Client::new()
                .get(format!("{}{path}", d.url()))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status().as_u16(), 404, "{path} on the ingest port");
        }
    }
}

#[tokio::test]
async fn without_the_token_nothing_but_the_document_and_the_login_form_is_served() {
    let receiver = Receiver::start().await;
    let apps = two_apps(&receiver);
    let daemon = admin_daemon(&apps, Some(TOKEN));
    let doc = openapi();
    for (who, api) in [
        ("no token", Api::of(&daemon, None)),
        ("wrong token", Api::of(&daemon, Some("admin-token-for-the-tests-0124"))),
    ] {
        for path in [
            "/api/v1/status",
            "/api/v1/apps",
            "/api/v1/dead-letters",
            "/api/v1/dead-letters/x",
        ] {
            let (status, body) = api.get(path).await;
            assert_eq!(status, 401, "{who}: GET {path}");
            assert_documented(&doc, &path.replace("/x", "/{id}"), "get", 401, &body);
        }
        let (status, _) = api
            .post("/api/v1/dead-letters/purge", serde_json::json!({"all": true}))
            .await;
        assert_eq!(status, 401, "{who}: purge");
        let (status, _) = api.post("/api/v1/reload", Value::Null).await;
        assert_eq!(status, 401, "{who}: reload");
    }
    // The document and the page's assets need no token.
    let (status, served) = Api::of(&daemon, None).get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(served, doc, "the served document is the checked-in docs/openapi.json");
    // The page asks for the token, and the form turns it into a cookie.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = format!("http://{}", daemon.admin.unwrap());
    let page = http.get(&base).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    let text = page.text().await.unwrap();
    assert!(text.contains("name=\"token\"") && !text.contains("Webhooks"), "{text}");
    let wrong = http
        .post(format!("{base}/login"))
        .body("token=nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let login = http
        .post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status().as_u16(), 303);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains(TOKEN), "the cookie must not hold the token: {cookie}");
    let session = cookie.split(';').next().unwrap().to_string();
    let page = http
        .get(&base)
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<h2>Webhooks</h2>"), "{page}");
    // A change asked for by another site's page is refused, cookie or not.
    let forged = http
        .post(format!("{base}/api/v1/dead-letters/purge"))
        .header("cookie", &session)
        .header("origin", "https://evil.example")
        .body(r#"{"all":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 403);
    assert!(!daemon.logs().contains(TOKEN), "the token was logged");
}

#[tokio::test]
async fn a_public_admin_listener_without_a_token_is_refused_at_start() {
    let apps = AppsDir::new();
    let output = std::process::Command::new(hookline_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--apps"])
        .arg(apps.path())
        .arg("--data-dir")
        .arg(apps.path().join("data"))
        .env("HOOKLINE_ADMIN_LISTEN", "0.0.0.0:0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("admin.token is required"), "{stderr}");
}

#[tokio::test]
async fn every_endpoint_answers_in_the_documented_shape_and_nothing_shows_a_secret() {
    let receiver = Receiver::start().await;
    let apps = two_apps(&receiver);
    let daemon = admin_daemon(&apps, Some(TOKEN));
    let api = Api::of(&daemon, Some(TOKEN));
    let doc = openapi();
    occupy(&daemon, "a", "ka", "sa", 2).await;
    let body = events_body(&[("channel_vacated", "room-1")]);
    assert_eq!(native(&daemon, "a", "ka", "sa", &body).await.0, 200);
    receiver.wait_for("/fine", 1).await;
    daemon.wait_metric("hookline_dead_letters", 2.0).await;

    let (status, s) = api.get("/api/v1/status").await;
    assert_documented(&doc, "/api/v1/status", "get", status, &s);
    assert_eq!((s["apps"].as_u64(), s["webhooks"].as_u64()), (Some(2), Some(3)));
    assert_eq!(s["ingested_events"]["last_minute"], 3);
    assert_eq!(s["store"]["dead_letters"], 2);
    assert_eq!(s["ready"], true);

    let (status, apps_view) = api.get("/api/v1/apps").await;
    assert_documented(&doc, "/api/v1/apps", "get", status, &apps_view);
    let webhook = |app: &str, id_part: &str| -> Value {
        let app = apps_view["apps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == app)
            .unwrap();
        app["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["target"].as_str().unwrap().contains(id_part))
            .unwrap_or_else(|| panic!("no webhook {id_part} in {app}"))
            .clone()
    };
    let broken = webhook("a", "/broken");
    assert_eq!(broken["last_error"]["status"], 400);
    assert_eq!(broken["failed"]["last_minute"], 2);
    assert_eq!(broken["last_success_ms"], Value::Null);
    let fine = webhook("a", "/fine");
    assert!(fine["last_success_ms"].as_u64().unwrap() > 0);
    assert_eq!(fine["delivered"]["last_minute"], 1);
    assert_eq!(fine["delivered_per_minute"].as_array().unwrap().last().unwrap(), 1);
    assert_eq!(fine["circuit"], "closed");

    let (status, page) = api.get("/api/v1/dead-letters").await;
    assert_documented(&doc, "/api/v1/dead-letters", "get", status, &page);
    let id = page["dead_letters"][0]["id"].as_str().unwrap().to_string();
    let (status, letter) = api.get(&format!("/api/v1/dead-letters/{id}")).await;
    assert_documented(&doc, "/api/v1/dead-letters/{id}", "get", status, &letter);
    assert_eq!(letter["payload"][0]["name"], "channel_occupied");
    let (status, missing) = api.get("/api/v1/dead-letters/no-such-id").await;
    assert_documented(&doc, "/api/v1/dead-letters/{id}", "get", status, &missing);
    assert_eq!(status, 404);
    let (status, bad) = api.get("/api/v1/dead-letters?cursor=garbage").await;
    assert_documented(&doc, "/api/v1/dead-letters", "get", status, &bad);
    let (status, neither) = api.post("/api/v1/dead-letters/replay", serde_json::json!({})).await;
    assert_documented(&doc, "/api/v1/dead-letters/replay", "post", status, &neither);
    assert_eq!(status, 400);
    let (status, reloaded) = api.post("/api/v1/reload", Value::Null).await;
    assert_documented(&doc, "/api/v1/reload", "post", status, &reloaded);
    let (status, purged) = api.delete(&format!("/api/v1/dead-letters/{id}")).await;
    assert_documented(&doc, "/api/v1/dead-letters/{id}", "delete", status, &purged);
    let (status, purged) = api
        .post("/api/v1/dead-letters/purge", serde_json::json!({"app": "a"}))
        .await;
    assert_documented(&doc, "/api/v1/dead-letters/purge", "post", status, &purged);

    // Every answer together: no secret, token or webhook URL query.
    let everything = format!("{s}{apps_view}{page}{letter}");
    for secret in ["\"secret\"", TOKEN, "hunter2", "secret-query"] {
        assert!(!everything.contains(secret), "{secret} shown:\n{everything}");
    }
}

#[tokio::test]
async fn dead_letters_page_filter_replay_and_purge_with_an_audit_line_each() {
    let receiver = Receiver::start().await;
    let apps = two_apps(&receiver);
    let daemon = admin_daemon(&apps, Some(TOKEN));
    let api = Api::of(&daemon, Some(TOKEN));
    occupy(&daemon, "a", "ka", "sa", 5).await;
    occupy(&daemon, "b", "kb", "sb", 2).await;
    daemon.wait_metric("hookline_dead_letters", 7.0).await;

    // Pages of 2: every letter once, oldest first, `total` on each.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/dead-letters?limit=2&cursor={c}"),
            None => "/api/v1/dead-letters?limit=2".to_string(),
        };
        let (status, page) = api.get(&path).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["total"], 7);
        let letters = page["dead_letters"].as_array().unwrap();
        assert!(letters.len() <= 2);
        seen.extend(
            letters
                .iter()
                .map(|l| (l["id"].as_str().unwrap().to_string(), l["dead_at_ms"].as_u64().unwrap())),
        );
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7, "{seen:?}");
    let ids: std::collections::HashSet<_> = seen.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids.len(), 7, "a letter appeared twice: {seen:?}");

    // Filters: by app, by webhook (as the API shows it), by reason.
    let (_, only_b) = api.get("/api/v1/dead-letters?app=b").await;
    assert_eq!(only_b["total"], 2);
    let shown_webhook = only_b["dead_letters"][0]["webhook_id"].as_str().unwrap().to_string();
    let (_, by_webhook) = api.get(&format!("/api/v1/dead-letters?webhook={shown_webhook}")).await;
    assert_eq!(by_webhook["total"], 2, "{by_webhook}");
    let (_, by_reason) = api.get("/api/v1/dead-letters?reason=ANSWERED%20400").await;
    assert_eq!(by_reason["total"], 7);
    let (_, by_other_reason) = api.get("/api/v1/dead-letters?reason=timed%20out").await;
    assert_eq!(by_other_reason["total"], 0);
    // By the last answer's class, and by when they died.
    let (_, by_class) = api.get("/api/v1/dead-letters?status=4xx").await;
    assert_eq!(by_class["total"], 7);
    let (_, by_exact) = api.get("/api/v1/dead-letters?status=500").await;
    assert_eq!(by_exact["total"], 0);
    let (status, teapot) = api.get("/api/v1/dead-letters?status=teapot").await;
    assert!(
        status == 400 && teapot["error"].as_str().unwrap().contains("teapot"),
        "{teapot}"
    );
    let mut died: Vec<u64> = seen.iter().map(|(_, at)| *at).collect();
    died.sort_unstable();
    let (_, before_last) = api.get(&format!("/api/v1/dead-letters?until_ms={}", died[6])).await;
    let (_, from_last) = api.get(&format!("/api/v1/dead-letters?since_ms={}", died[6])).await;
    assert_eq!(
        before_last["total"].as_u64().unwrap() + from_last["total"].as_u64().unwrap(),
        7,
        "the window splits the letters in two"
    );
    assert!(from_last["total"].as_u64().unwrap() >= 1);
    // A dry run says what a bulk purge would touch, and touches nothing.
    let doc = openapi();
    let (status, dry) = api
        .post(
            "/api/v1/dead-letters/purge",
            serde_json::json!({"app": "b", "dry_run": true}),
        )
        .await;
    assert_documented(&doc, "/api/v1/dead-letters/purge", "post", status, &dry);
    assert_eq!((status, dry["total"].as_u64()), (200, Some(2)), "{dry}");
    assert_eq!(dry["dead_letters"][0]["webhook_id"], shown_webhook.as_str());
    let output = dlq_through_the_api(
        &daemon,
        TOKEN,
        &["replay", "--app", "a", "--status", "4xx", "--dry-run"],
    );
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.contains("5 dead letters would be touched"), "{printed}");
    let (_, all) = api.get("/api/v1/dead-letters").await;
    assert_eq!(all["total"], 7, "a dry run touched letters");

    // Replay one: the receiver now answers, and gets it with its batch id.
    let (_, a_letters) = api.get("/api/v1/dead-letters?app=a").await;
    let one = a_letters["dead_letters"][0]["id"].as_str().unwrap().to_string();
    receiver.by_default("/broken", Reply::status(200));
    let (status, done) = api
        .post(&format!("/api/v1/dead-letters/{one}/replay"), Value::Null)
        .await;
    assert_eq!(
        (status, done["done"].clone()),
        (200, serde_json::json!([one])),
        "{done}"
    );
    receiver
        .wait_until(|all| {
            all.iter()
                .any(|r| r.status_ok() && r.header("x-hookline-batch-id") == one)
        })
        .await;
    daemon.wait_metric("hookline_dead_letters", 6.0).await;

    // Purge by app, then all; each leaves what it should.
    let (status, done) = api
        .post("/api/v1/dead-letters/purge", serde_json::json!({"app": "b"}))
        .await;
    assert_eq!((status, done["done"].as_array().unwrap().len()), (200, 2));
    let (_, left) = api.get("/api/v1/dead-letters").await;
    assert_eq!(left["total"], 4);
    assert!(
        left["dead_letters"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["app_id"] == "a")
    );
    // Through the CLI from "another host": the API, not the socket.
    let output = dlq_through_the_api(&daemon, TOKEN, &["list", "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let listed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(listed["letters"].as_array().unwrap().len(), 4);
    let output = dlq_through_the_api(&daemon, "the-wrong-token-entirely", &["purge", "--all"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("refused the token"));
    let (status, done) = api
        .post("/api/v1/dead-letters/purge", serde_json::json!({"all": true}))
        .await;
    assert_eq!((status, done["done"].as_array().unwrap().len()), (200, 4));
    let (_, left) = api.get("/api/v1/dead-letters").await;
    assert_eq!(left["total"], 0);

    let logs = daemon.logs();
    let audits: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("admin action: dead letters"))
        .collect();
    assert_eq!(audits.len(), 3, "one audit line per replay or purge:\n{logs}");
    assert!(
        audits[0].contains("via=\"api\"") || audits[0].contains("via=api"),
        "{}",
        audits[0]
    );
}

/// `hookline dlq ARGS --url` against `daemon`'s admin API, with `token` in
/// `HOOKLINE_ADMIN_TOKEN`, from a directory with no data directory (so the
/// admin socket cannot be what answers).
fn dlq_through_the_api(daemon: &Daemon, token: &str, args: &[&str]) -> std::process::Output {
    let elsewhere = tempfile::tempdir().unwrap();
    std::process::Command::new(hookline_bin())
        .arg("dlq")
        .args(args)
        .arg("--url")
        .arg(format!("http://{}", daemon.admin.unwrap()))
        .env("HOOKLINE_ADMIN_TOKEN", token)
        .current_dir(elsewhere.path())
        .output()
        .unwrap()
}

#[tokio::test]
async fn reload_now_picks_up_a_changed_file_and_reports_a_broken_one() {
    let receiver = Receiver::start().await;
    let apps = two_apps(&receiver);
    let daemon = Daemon::start_with(
        apps.path(),
        DaemonOptions::with_env(&[("HOOKLINE_ADMIN_LISTEN", "127.0.0.1:0"), ("HOOKLINE_WATCH", "false")]),
    );
    let api = Api::of(&daemon, None);
    apps.write("c.json", r#"{"id": "c", "key": "kc", "secret": "sc", "webhooks": []}"#);
    apps.write("broken.json", "{ not json");
    let (status, report) = api.post("/api/v1/reload", Value::Null).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["added"], serde_json::json!(["c"]));
    let failed = report["failed_files"].as_object().unwrap();
    assert_eq!(failed.len(), 1);
    assert!(failed.keys().next().unwrap().ends_with("broken.json"));
    let (_, s) = api.get("/api/v1/status").await;
    assert_eq!(s["apps"], 3);
    assert_eq!(s["file_errors"].as_array().unwrap().len(), 1);
    assert!(daemon.logs().contains("admin action: reload"));
}

/// Four http webhooks on one receiver (two alike once redacted, one a
/// repeat, one with an `id`) and a Lambda one: each has its own id in
/// `/api/v1/apps`, with its kind and redacted target, and a dead letter
/// shows the id of the webhook it came from.
#[tokio::test]
async fn every_webhook_has_an_id_of_its_own_shown_with_its_kind_and_target() {
    let receiver = Receiver::start().await;
    receiver.by_default("/mine/two", Reply::status(400));
    let apps = AppsDir::new();
    let base = receiver.url("");
    apps.write(
        "m.json",
        &format!(
            r#"{{"id": "m", "key": "km", "secret": "sm", "batching": {{"enabled": false}},
                "webhooks": [
                  {{"url": "{base}/mine/one", "event_types": ["channel_vacated"]}},
                  {{"url": "{base}/mine/two", "event_types": ["channel_occupied"]}},
                  {{"url": "{base}/mine/one", "event_types": ["channel_vacated"]}},
                  {{"id": "audit", "url": "{base}/mine/three?token=hunter2", "event_types": ["channel_vacated"]}},
                  {{"lambda_function": "fn-orders", "region": "eu-west-1", "event_types": ["member_added"]}}]}}"#
        ),
    );
    let daemon = admin_daemon(&apps, Some(TOKEN));
    let api = Api::of(&daemon, Some(TOKEN));
    occupy(&daemon, "m", "km", "sm", 1).await;
    daemon.wait_metric("hookline_dead_letters", 1.0).await;

    let (status, view) = api.get("/api/v1/apps").await;
    assert_eq!(status, 200);
    assert_documented(&openapi(), "/api/v1/apps", "get", status, &view);
    let webhooks = view["apps"][0]["webhooks"].as_array().unwrap();
    let shown = |key: &str| -> Vec<String> { webhooks.iter().map(|w| w[key].as_str().unwrap().to_string()).collect() };
    // The redacted URL for those without an `id`, numbered where two
    // would read alike; the `id` where there is one.
    assert_eq!(
        shown("id"),
        [
            format!("{base}/mine/..."),
            format!("{base}/mine/...#2"),
            format!("{base}/mine/...#3"),
            "audit".to_string(),
            "fn-orders".to_string(),
        ]
    );
    assert_eq!(shown("kind"), ["http", "http", "http", "http", "lambda"]);
    let targets = shown("target");
    assert_eq!(
        targets[..4],
        [
            format!("{base}/mine/..."),
            format!("{base}/mine/..."),
            format!("{base}/mine/..."),
            format!("{base}/mine/...")
        ]
    );
    assert!(targets[4].contains("fn-orders"), "{targets:?}");

    // The dead letter came from `/mine/two`: it shows that webhook's id,
    // which also selects it.
    let (_, letters) = api.get("/api/v1/dead-letters").await;
    assert_eq!(
        letters["dead_letters"][0]["webhook_id"],
        format!("{base}/mine/...#2"),
        "{letters}"
    );
    let (_, by_webhook) = api
        .get(&format!("/api/v1/dead-letters?webhook={base}/mine/...%232"))
        .await;
    assert_eq!(by_webhook["total"], 1, "{by_webhook}");
    let (_, by_other) = api.get(&format!("/api/v1/dead-letters?webhook={base}/mine/...")).await;
    assert_eq!(by_other["total"], 0, "{by_other}");

    // The page shows the same ids, in the webhooks table and the dead letters.
    let page = reqwest::Client::new()
        .get(format!("http://{}/", daemon.admin.unwrap()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for id in shown("id") {
        assert!(
            page.contains(&format!("<td class=\"webhook-id\"><code>{id}</code></td>")),
            "{id} not in the webhooks table:\n{page}"
        );
    }
    assert!(
        page.contains(&format!("data-webhook=\"{base}/mine/...#2\"><td><code>")),
        "the dead letter's row does not name its webhook:\n{page}"
    );
    assert!(!page.contains("hunter2") && !view.to_string().contains("hunter2"));
}

/// `/` takes the bearer token as the API does: a script or a headless
/// browser gets the page itself, not the login form.
#[tokio::test]
async fn the_page_takes_the_bearer_token_too() {
    let receiver = Receiver::start().await;
    let apps = two_apps(&receiver);
    let daemon = admin_daemon(&apps, Some(TOKEN));
    let page = |token: Option<&'static str>| {
        let mut request = reqwest::Client::new().get(format!("http://{}/", daemon.admin.unwrap()));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let answer = request.send().await.unwrap();
            (answer.status().as_u16(), answer.text().await.unwrap())
        }
    };
    let (status, text) = page(Some(TOKEN)).await;
    assert_eq!(status, 200);
    assert!(
        text.contains("<h2>Webhooks</h2>") && text.contains("<code>only</code>") && !text.contains("name=\"token\""),
        "{text}"
    );
    // A wrong token (or none) gets the login form, not the page.
    for token in [Some("admin-token-for-the-tests-0124"), None] {
        let (status, text) = page(token).await;
        assert_eq!(status, 200);
        assert!(
            text.contains("name=\"token\"") && !text.contains("<h2>Webhooks</h2>"),
            "{token:?}: {text}"
        );
    }
}

/// Queue and stream webhooks show in the API with their kind and a target
/// that names the queue, topic, bus, subject or topic and never a
/// credential, and no credential reaches the logs.
#[tokio::test]
async fn queue_and_stream_webhooks_show_their_kind_and_a_target_without_credentials() {
    let apps = AppsDir::new();
    let secrets = ["sqs-secret-key", "nats-secret-token", "kafka-secret-pw"];
    let app = serde_json::json!({"id": "q", "key": "qk", "secret": "qs", "webhooks": [
        {"sqs_queue_url": "https://sqs.eu-west-1.amazonaws.com/123456789012/orders.fifo", "event_types": ["x"],
         "sqs": {"client_options": {"credentials": {"accessKeyId": "AKIDSHOWN", "secretAccessKey": secrets[0]}}}},
        {"sns_topic_arn": "arn:aws:sns:us-east-2:123456789012:presence", "event_types": ["x"]},
        {"eventbridge_bus": "default", "region": "eu-central-1", "event_types": ["x"]},
        {"nats_subject": "hooks.a", "event_types": ["x"],
         "nats": {"url": "nats://127.0.0.1:4999", "token": secrets[1]}},
        {"kafka_topic": "events", "event_types": ["x"],
         "kafka": {"brokers": ["127.0.0.1:9999"],
                   "sasl": {"mechanism": "PLAIN", "username": "u", "password": secrets[2]}}}]});
    apps.write("q.json", &app.to_string());
    let daemon = admin_daemon(&apps, Some(TOKEN));
    let api = Api::of(&daemon, Some(TOKEN));
    let (status, view) = api.get("/api/v1/apps").await;
    assert_eq!(status, 200);
    assert_documented(&openapi(), "/api/v1/apps", "get", status, &view);
    let webhooks = view["apps"][0]["webhooks"].as_array().unwrap();
    let shown = |key: &str| -> Vec<String> { webhooks.iter().map(|w| w[key].as_str().unwrap().to_string()).collect() };
    assert_eq!(shown("kind"), ["sqs", "sns", "eventbridge", "nats", "kafka"]);
    assert_eq!(
        shown("target"),
        [
            "sqs:orders.fifo@eu-west-1",
            "sns:presence@us-east-2",
            "eventbridge:default@eu-central-1",
            "nats:hooks.a@127.0.0.1:4999",
            "kafka:events@127.0.0.1:9999"
        ]
    );
    for secret in secrets {
        assert!(!view.to_string().contains(secret), "{secret} in {view}");
        assert!(!daemon.logs().contains(secret), "{secret} in the logs");
    }
}

/// The attempt log (contract §10): a receiver's 400 with its body and
/// headers, a success after it, newest first and paged, request headers
/// without their secrets, kept across a restart, and bounded by
/// `delivery.attempt_log`.
#[tokio::test]
async fn the_attempt_log_shows_what_the_receiver_answered_and_survives_a_restart() {
    let receiver = Receiver::start().await;
    let apps = AppsDir::new();
    apps.write(
        "a.json",
        &format!(
            r#"{{"id": "a", "key": "ka", "secret": "sa", "batching": {{"enabled": false}},
                "webhooks": [{{"url": "{}", "event_types": ["channel_occupied"],
                               "headers": {{"Authorization": "Bearer hunter2-token"}}}}]}}"#,
            receiver.url("/hook/secret-path")
        ),
    );
    receiver.script(
        "/hook/secret-path",
        vec![
            Reply::status(400)
                .with_header("x-receiver", "test")
                .with_body("channel room-0 is not one we know"),
        ],
    );
    let data = tempfile::tempdir().unwrap();
    let start = |entries: &str| {
        let mut options = DaemonOptions::with_env(&[
            ("HOOKLINE_ADMIN_LISTEN", "127.0.0.1:0"),
            ("HOOKLINE_ADMIN_TOKEN", TOKEN),
            ("HOOKLINE_DELIVERY_ATTEMPT_LOG", entries),
        ]);
        options.data_dir = Some(data.path().to_path_buf());
        Daemon::start_with(apps.path(), options)
    };
    let mut daemon = start("100");
    let api = Api::of(&daemon, Some(TOKEN));
    occupy(&daemon, "a", "ka", "sa", 1).await;
    daemon.wait_metric("hookline_dead_letters", 1.0).await;
    occupy(&daemon, "a", "ka", "sa", 1).await;
    receiver.wait_for("/hook/secret-path", 2).await;
    daemon.wait_idle().await;

    // The id as /api/v1/apps shows it, percent-encoded into the path.
    let (_, apps_view) = api.get("/api/v1/apps").await;
    let id = apps_view["apps"][0]["webhooks"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(id, receiver.url("/hook/..."));
    let path = format!("/api/v1/apps/a/webhooks/{}/attempts", encode(&id));
    let (status, page) = api.get(&path).await;
    assert_eq!(status, 200, "{page}");
    assert_documented(
        &openapi(),
        "/api/v1/apps/{app}/webhooks/{id}/attempts",
        "get",
        status,
        &page,
    );
    assert_eq!(page["webhook"], id.as_str());
    assert_eq!(page["total"], 2, "{page:#}");
    let [delivered, failed] = [&page["attempts"][0], &page["attempts"][1]];
    assert_eq!(delivered["outcome"], "delivered", "newest first: {page:#}");
    assert_eq!(failed["outcome"], "failed");
    assert_eq!(failed["status"], 400);
    assert_eq!(failed["error_class"], "status");
    assert_eq!(failed["response_body"], "channel room-0 is not one we know");
    let answered: Vec<(String, String)> = serde_json::from_value(failed["response_headers"].clone()).unwrap();
    assert!(answered.contains(&("x-receiver".into(), "test".into())), "{answered:?}");
    let sent: Vec<(String, String)> = serde_json::from_value(failed["request_headers"].clone()).unwrap();
    let value_of = |name: &str| sent.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    assert_eq!(value_of("X-Pusher-Key"), Some("ka"));
    assert_eq!(value_of("X-Pusher-Signature"), Some("(redacted)"));
    assert_eq!(value_of("Authorization"), Some("(redacted)"));
    assert!(!page.to_string().contains("hunter2"), "a secret in the log: {page}");
    assert!(
        !page.to_string().contains("secret-path"),
        "the target's path in the log: {page}"
    );
    // The batch ids are the deliveries'.
    let hits = receiver.on("/hook/secret-path");
    assert_eq!(failed["batch_id"], hits[0].header("x-hookline-batch-id"));
    assert_eq!(delivered["batch_id"], hits[1].header("x-hookline-batch-id"));

    // Paged: one at a time, by `before`.
    let (_, first) = api.get(&format!("{path}?limit=1")).await;
    assert_eq!(first["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(first["attempts"][0]["seq"], delivered["seq"]);
    let before = first["next"].as_u64().expect("a next page");
    let (_, second) = api.get(&format!("{path}?limit=1&before={before}")).await;
    assert_eq!(second["attempts"][0]["seq"], failed["seq"]);
    assert!(second["next"].is_null(), "{second}");

    // An unknown webhook is a 404 that says where the ids are.
    let (status, missing) = api.get("/api/v1/apps/a/webhooks/nope/attempts").await;
    assert_eq!(status, 404);
    assert!(
        missing["error"].as_str().unwrap().contains("GET /api/v1/apps"),
        "{missing}"
    );

    // After a restart the log is still there, and goes on from it; with a
    // bound of 2 the oldest entry goes.
    daemon.signal("TERM");
    assert!(daemon.wait().success());
    let daemon = start("2");
    let api = Api::of(&daemon, Some(TOKEN));
    let (_, kept) = api.get(&path).await;
    assert_eq!(kept["attempts"], page["attempts"], "kept across the restart");
    occupy(&daemon, "a", "ka", "sa", 1).await;
    receiver.wait_for("/hook/secret-path", 3).await;
    daemon.wait_idle().await;
    let (_, after) = api.get(&path).await;
    assert_eq!(after["total"], 2, "{after:#}");
    let seqs: Vec<u64> = after["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["seq"].as_u64().unwrap())
        .collect();
    let last = delivered["seq"].as_u64().unwrap();
    assert_eq!(seqs, [last + 1, last], "{after:#}");
}

/// Percent-encodes a path segment.
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
