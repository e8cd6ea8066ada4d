//! Secrets stay secret: app secrets, URL credentials and tokens, and AWS
//! credentials never appear in the daemon's logs, text or JSON, even when
//! every delivery fails and every app file is wrong.

mod support;

use serde_json::json;
use support::*;

const SECRETS: [&str; 7] = [
    "app-secret-Zq81",
    "url-password-Zq82",
    "query-token-Zq83",
    "aws-secret-key-Zq84",
    "aws-session-token-Zq85",
    "header-token-Zq86",
    "path-secret-Zq87",
];

#[tokio::test]
async fn no_secret_reaches_the_logs() {
    for format in ["text", "json"] {
        let receiver = Receiver::start().await;
        receiver.script("/h", vec![Reply::status(500), Reply::status(400)]);
        let lambda = LambdaServer::start(&[("AKIDSECRETS", SECRETS[3], Some(SECRETS[4]))]);
        lambda.script("fn", json!([{"kind": "access_denied"}])).await;
        let apps = AppsDir::new();
        let url = format!("http://user:{}@{}/h?token={}", SECRETS[1], receiver.addr, SECRETS[2]);
        let app = json!({"id": "s", "key": "sk", "secret": SECRETS[0], "retry": {"min_backoff_ms": 10, "max_backoff_ms": 20},
        "webhooks": [
            {"url": url, "event_types": ["e"], "headers": {"Authorization": SECRETS[5]}},
            {"url": format!("http://{}/services/T000/{}", receiver.addr, SECRETS[6]), "event_types": ["e"]},
            {"url": "http://127.0.0.1:9/unreachable?token=".to_string() + SECRETS[2], "event_types": ["e"],
             "retry": {"max_attempts": 2, "min_backoff_ms": 10, "max_backoff_ms": 20}},
            {"lambda_function": "fn", "event_types": ["e"], "lambda": {"region": "eu-west-1", "client_options": {
                "credentials": {"accessKeyId": "AKIDSECRETS", "secretAccessKey": SECRETS[3], "sessionToken": SECRETS[4]},
                "endpoint": lambda.endpoint()}}}
        ]});
        apps.write("app.json", &app.to_string());
        // Broken files that hold secrets too.
        apps.write(
            "broken.json",
            &format!(
                r#"{{"id": "b", "key": "bk", "secret": "{}", "webhooks": [}}"#,
                SECRETS[0]
            ),
        );
        apps.write(
            "broken.toml",
            &format!("id = \"t\"\nkey = \"tk\"\nsecret = \"{}\" trailing\n", SECRETS[0]),
        );
        let options = DaemonOptions {
            args: vec!["--log-format".into(), format.into()],
            env: vec![("AWS_EC2_METADATA_DISABLED".into(), "true".into())],
            ..Default::default()
        };
        let daemon = Daemon::start_with(apps.path(), options);
        assert_eq!(
            native(&daemon, "s", "sk", SECRETS[0], &events_body(&[("e", "c")]))
                .await
                .0,
            200
        );
        // Wait until every webhook failed at least once and ended: the http
        // one dead-lettered on its 400, the unreachable one after 2 attempts,
        // the lambda one on access denied.
        daemon
            .wait_metric(
                r#"hookline_delivery_attempts_total{sink="http",outcome="dead_letter"}"#,
                2.0,
            )
            .await;
        daemon
            .wait_metric(
                r#"hookline_delivery_attempts_total{sink="lambda",outcome="dead_letter"}"#,
                1.0,
            )
            .await;
        let logs = daemon.logs();
        assert!(logs.contains("delivery dead-lettered"), "{logs}");
        assert!(
            logs.contains("lambda:fn@eu-west-1"),
            "a lambda failure names function and region: {logs}"
        );
        assert!(logs.contains("broken.json") && logs.contains("broken.toml"), "{logs}");
        for secret in SECRETS {
            assert!(!logs.contains(secret), "{format} logs leak {secret}:\n{logs}");
        }
        // The redacted forms are what the logs name.
        assert!(logs.contains(&format!("http://{}/h", receiver.addr)), "{logs}");
        // The unauthenticated /metrics labels webhooks the same way.
        let metrics = daemon.metrics_text().await;
        assert!(
            metrics.contains(&format!("webhook=\"http://{}/services/...\"", receiver.addr)),
            "{metrics}"
        );
        for secret in SECRETS {
            assert!(!metrics.contains(secret), "/metrics leaks {secret}:\n{metrics}");
        }
    }
}
