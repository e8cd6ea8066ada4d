//! The lambda sink end to end, against a local server that speaks the Lambda
//! Invoke API and verifies every request's SigV4 signature with botocore
//! (tests/peers/lambda_server.py).

mod support;

use serde_json::{Value, json};
use support::*;

const AKID: &str = "AKIDHOOKLINETEST";
const SECRET_KEY: &str = "hookline/test/secret+key";

/// Daemon options without any AWS configuration leaking in from the
/// machine, and no instance-metadata lookups.
fn isolated_aws(extra: &[(&str, &str)]) -> DaemonOptions {
    let mut env: Vec<(String, String)> = [
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials"),
        ("AWS_CONFIG_FILE", "/nonexistent/config"),
        ("AWS_ACCESS_KEY_ID", ""),
        ("AWS_SECRET_ACCESS_KEY", ""),
        ("AWS_SESSION_TOKEN", ""),
        ("AWS_PROFILE", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        env.retain(|(name, _)| name != k);
        env.push((k.to_string(), v.to_string()));
    }
    // An empty AWS_* variable is not the same as an unset one for the SDK.
    env.retain(|(_, v)| !v.is_empty());
    DaemonOptions {
        env,
        ..Default::default()
    }
}

fn inline_credentials(endpoint: &str) -> Value {
    json!({"region": "eu-west-1", "client_options": {
        "credentials": {"accessKeyId": AKID, "secretAccessKey": SECRET_KEY}, "endpoint": endpoint}})
}

fn payload(invocation: &Value) -> Value {
    serde_json::from_str(invocation["body"].as_str().unwrap()).unwrap()
}

fn function_names(invocations: &[Value]) -> Vec<String> {
    invocations
        .iter()
        .map(|i| i["function"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn event_and_request_response_invocations_for_name_and_arn_forms() {
    let server = LambdaServer::start(&[(AKID, SECRET_KEY, None)]);
    let endpoint = server.endpoint();
    let mut async_options = inline_credentials(&endpoint);
    async_options["async"] = json!(true);
    let apps = AppsDir::new();
    let app = json!({"id": "l", "key": "lk", "secret": "ls", "webhooks": [
        {"lambda_function": "fn-async", "event_types": ["client_event"], "lambda": async_options,
         "headers": {"X-Env": "test", "X-Pusher-Signature": "forged"}},
        {"lambda_function": "arn:aws:lambda:eu-west-1:123456789012:function:fn-sync:prod",
         "event_types": ["client_event"], "lambda": inline_credentials(&endpoint)},
        {"lambda_function": "123456789012:function:fn-partial", "event_types": ["client_event"],
         "region": "eu-west-1", "lambda": {"client_options": inline_credentials(&endpoint)["client_options"]}}
    ]});
    apps.write("lambda.json", &app.to_string());
    let daemon = Daemon::start_with(apps.path(), isolated_aws(&[]));

    let body = r#"{"events":[{"name":"client_event","channel":"private-é","event":"client-msg","data":"héllo 😀 \"q\" \\ \u0001\u001f\n\t","user_id":"u"}]}"#;
    assert_eq!(native(&daemon, "l", "lk", "ls", body).await.0, 200);
    let all = server.wait_until("three invocations", |all| all.len() >= 3).await;
    assert_eq!(all.len(), 3, "no extra requests");
    let mut names = function_names(&all);
    names.sort();
    assert_eq!(
        names,
        [
            "123456789012:function:fn-partial",
            "arn:aws:lambda:eu-west-1:123456789012:function:fn-sync:prod",
            "fn-async"
        ]
    );
    for invocation in &all {
        assert_eq!(invocation["signature_valid"], true, "{invocation:#}");
        assert_eq!(invocation["access_key"], AKID);
        assert_eq!(invocation["region"], "eu-west-1");
        let expected_type = if invocation["function"] == "fn-async" {
            "Event"
        } else {
            "RequestResponse"
        };
        assert_eq!(invocation["invocation_type"], expected_type, "{invocation:#}");
        let status = if expected_type == "Event" { 202 } else { 200 };
        assert_eq!(invocation["status"], status);

        let payload = payload(invocation);
        let headers = &payload["headers"];
        assert_eq!(headers["X-Pusher-Key"], "lk");
        assert!(headers["X-Hookline-Batch-Id"].is_string());
        assert!(headers["X-Hookline-Batch-Time"].is_string());
        assert_eq!(
            payload["payload"]["events"][0]["data"],
            "héllo 😀 \"q\" \\ \u{1}\u{1f}\n\t"
        );
        if invocation["function"] == "fn-async" {
            assert_eq!(headers["X-Env"], "test", "webhook headers are merged");
        }
        assert_ne!(headers["X-Pusher-Signature"], "forged", "the Pusher headers win");
        // The soketi page's handler, completed, verifies it with node…
        let raw = invocation["body"].as_str().unwrap();
        assert!(example_lambda_accepts("ls", raw), "the example handler refused {raw}");
        // …and refuses it with one byte of the payload flipped.
        let flipped = raw.replacen("client-msg", "client-msh", 1);
        assert!(
            !example_lambda_accepts("ls", &flipped),
            "the example handler accepted a tampered payload"
        );
    }
}

#[tokio::test]
async fn credentials_from_the_environment_and_from_a_profile_sign_the_requests() {
    let server = LambdaServer::start(&[
        ("AKIDFROMENV", "env-secret", Some("env-token")),
        ("AKIDFROMPROFILE", "profile-secret", None),
    ]);
    let apps = AppsDir::new();
    let app = json!({"id": "c", "key": "ck", "secret": "cs", "webhooks": [
        {"lambda_function": "fn", "region": "eu-west-1", "event_types": ["channel_occupied"],
         "lambda": {"client_options": {"endpoint": server.endpoint()}}}]});
    apps.write("app.json", &app.to_string());
    let body = events_body(&[("channel_occupied", "c")]);

    {
        let env = isolated_aws(&[
            ("AWS_ACCESS_KEY_ID", "AKIDFROMENV"),
            ("AWS_SECRET_ACCESS_KEY", "env-secret"),
            ("AWS_SESSION_TOKEN", "env-token"),
        ]);
        let daemon = Daemon::start_with(apps.path(), env);
        assert_eq!(native(&daemon, "c", "ck", "cs", &body).await.0, 200);
        let all = server.wait_until("one invocation", |all| !all.is_empty()).await;
        assert_eq!(all[0]["access_key"], "AKIDFROMENV");
        assert_eq!(all[0]["signature_valid"], true, "{:#}", all[0]);
        assert_eq!(all[0]["headers"]["x-amz-security-token"], "env-token");
    }

    let aws = tempfile::tempdir().unwrap();
    let credentials = aws.path().join("credentials");
    std::fs::write(
        &credentials,
        "[default]\naws_access_key_id = AKIDWRONG\naws_secret_access_key = wrong\n\n\
         [hookline-test]\naws_access_key_id = AKIDFROMPROFILE\naws_secret_access_key = profile-secret\n",
    )
    .unwrap();
    let env = isolated_aws(&[
        ("AWS_SHARED_CREDENTIALS_FILE", credentials.to_str().unwrap()),
        ("AWS_PROFILE", "hookline-test"),
    ]);
    let daemon = Daemon::start_with(apps.path(), env);
    assert_eq!(native(&daemon, "c", "ck", "cs", &body).await.0, 200);
    let all = server.wait_until("a second invocation", |all| all.len() >= 2).await;
    assert_eq!(all[1]["access_key"], "AKIDFROMPROFILE");
    assert_eq!(all[1]["signature_valid"], true, "{:#}", all[1]);
}

#[tokio::test]
async fn a_webhook_without_region_fails_check_while_other_apps_load() {
    let receiver = Receiver::start().await;
    let apps = AppsDir::new();
    apps.write(
        "noregion.json",
        r#"{"id": "nr", "key": "nrk", "secret": "s", "webhooks": [{"lambda_function": "fn", "event_types": ["a"]}]}"#,
    );
    apps.write(
        "good.json",
        &json!({"id": "g", "key": "gk", "secret": "gs", "webhooks": [{"url": receiver.url("/g"), "event_types": ["a"]}]}).to_string(),
    );
    let (ok, stderr) = check(&apps);
    assert!(!ok);
    assert!(
        stderr.contains(
            "noregion.json: app \"nr\": webhook 0: the Lambda webhook for \"fn\" names no region; set `region`"
        ),
        "{stderr}"
    );
    let daemon = Daemon::start_with(apps.path(), isolated_aws(&[]));
    assert_eq!(
        native(&daemon, "g", "gk", "gs", &events_body(&[("a", "c")])).await.0,
        200
    );
    receiver.wait_for("/g", 1).await;
    assert!(daemon.logs().contains("names no region"), "serve reports it");
}

#[tokio::test]
async fn retries_follow_the_policy_with_no_hidden_sdk_retries() {
    let server = LambdaServer::start(&[(AKID, SECRET_KEY, None)]);
    let mut async_options = inline_credentials(&server.endpoint());
    async_options["async"] = json!(true);
    server
        .script("throttled", json!([{"kind": "throttle", "retry_after": 1}]))
        .await;
    server.script("missing", json!([{"kind": "not_found"}])).await;
    server.script("failing", json!([{"kind": "function_error"}])).await;
    let apps = AppsDir::new();
    let app = json!({"id": "r", "key": "rk", "secret": "rs", "retry": {"min_backoff_ms": 100, "max_backoff_ms": 200}, "webhooks": [
        {"lambda_function": "throttled", "event_types": ["e"], "lambda": async_options},
        {"lambda_function": "missing", "event_types": ["e"], "lambda": async_options},
        {"lambda_function": "failing", "event_types": ["e"], "lambda": inline_credentials(&server.endpoint())}
    ]});
    apps.write("app.json", &app.to_string());
    let daemon = Daemon::start_with(apps.path(), isolated_aws(&[]));
    assert_eq!(
        native(&daemon, "r", "rk", "rs", &events_body(&[("e", "c")])).await.0,
        200
    );

    daemon
        .wait_metric(
            r#"hookline_delivery_attempts_total{sink="lambda",outcome="success"}"#,
            2.0,
        )
        .await;
    daemon
        .wait_metric(
            r#"hookline_delivery_attempts_total{sink="lambda",outcome="dead_letter"}"#,
            1.0,
        )
        .await;
    let all = server.invocations().await;
    let of = |name: &str| {
        all.iter()
            .filter(|i| i["function"] == name)
            .cloned()
            .collect::<Vec<_>>()
    };

    let throttled = of("throttled");
    assert_eq!(
        throttled
            .iter()
            .map(|i| i["status"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [429, 202]
    );
    let batch = |i: &Value| payload(i)["headers"]["X-Hookline-Batch-Id"].clone();
    assert_eq!(batch(&throttled[0]), batch(&throttled[1]), "same batch id on the retry");

    let missing = of("missing");
    assert_eq!(missing.len(), 1, "404 is final: {missing:#?}");

    let failing = of("failing");
    assert_eq!(
        failing
            .iter()
            .map(|i| i["status"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [200, 200]
    );
    assert_eq!(
        failing[0]["headers"]["x-amz-function-error"],
        Value::Null,
        "request headers carry no error"
    );
    assert_eq!(batch(&failing[0]), batch(&failing[1]));
    assert!(all.iter().all(|i| i["signature_valid"] == true));
    assert_eq!(all.len(), 5, "exactly the attempts the policy asked for");
}

#[tokio::test]
async fn batches_over_the_payload_limit_are_split_and_a_413_splits_and_resends() {
    let server = LambdaServer::start(&[(AKID, SECRET_KEY, None)]);
    server.script("too-large-once", json!([{"kind": "too_large"}])).await;
    let mut limited = inline_credentials(&server.endpoint());
    limited["max_payload_bytes"] = json!(4096);
    let apps = AppsDir::new();
    let app = json!({"id": "s", "key": "sk", "secret": "ss", "batching": {"max_wait_ms": 200}, "webhooks": [
        {"lambda_function": "limited", "event_types": ["client_event"], "lambda": limited},
        {"lambda_function": "too-large-once", "event_types": ["client_event"], "lambda": inline_credentials(&server.endpoint())}
    ]});
    apps.write("app.json", &app.to_string());
    let daemon = Daemon::start_with(apps.path(), isolated_aws(&[]));
    let events: Vec<Value> = (0..20)
        .map(|i| json!({"name": "client_event", "channel": format!("c{i}"), "event": "client-x", "data": "x".repeat(400)}))
        .collect();
    let body = json!({"events": events}).to_string();
    assert_eq!(native(&daemon, "s", "sk", "ss", &body).await.0, 200);

    let count = |invocations: &[Value], name: &str| -> usize {
        invocations
            .iter()
            .filter(|i| i["function"] == name && i["status"].as_u64().unwrap() < 300)
            .map(|i| {
                payload(i)["payload"]["events"]
                    .as_array()
                    .map(Vec::len)
                    .unwrap_or_else(|| panic!("not a batch: {i:#}"))
            })
            .sum()
    };
    let all = server
        .wait_until("every event delivered to both", |all| {
            count(all, "limited") == 20 && count(all, "too-large-once") == 20
        })
        .await;
    let limited: Vec<&Value> = all.iter().filter(|i| i["function"] == "limited").collect();
    assert!(limited.len() >= 3, "split into several invocations: {}", limited.len());
    let mut channels = Vec::new();
    for invocation in &limited {
        assert!(invocation["body"].as_str().unwrap().len() <= 4096);
        for event in payload(invocation)["payload"]["events"].as_array().unwrap() {
            channels.push(event["channel"].as_str().unwrap().to_string());
        }
        assert!(example_lambda_accepts("ss", invocation["body"].as_str().unwrap()));
    }
    channels.sort();
    let mut expected: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
    expected.sort();
    assert_eq!(channels, expected, "every event exactly once");

    let resent: Vec<&Value> = all.iter().filter(|i| i["function"] == "too-large-once").collect();
    assert_eq!(resent[0]["status"], 413);
    assert_eq!(resent.len(), 3, "the refused batch was resent as two halves");
    assert_eq!(count(&all, "too-large-once"), 20);
}
