//! The nats webhook's own keys: `nats_subject` and the `nats` object (`url`,
//! one of `credentials` / `token` / `nkey` / `user`+`password`, `tls`,
//! `jetstream`, `max_payload_bytes`), validated offline.

use std::path::PathBuf;

use hookline_sink_api::{SinkConfigError, WebhookSpec, object_key, optional_str};
use serde::Deserialize;

/// The server a webhook connects to when `nats.url` is not set.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// nats-server's default `max_payload` (1 MiB), used until the connected
/// server states its own.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// A validated nats webhook target.
#[derive(Clone, PartialEq, Eq)]
pub struct NatsTarget {
    /// The subject every batch is published to (no wildcards).
    pub subject: String,
    /// The connection this webhook uses (shared with every webhook that
    /// names the same servers, authentication and TLS settings).
    pub connection: ConnectionSpec,
    /// Publish through JetStream and wait for the `PubAck` (the default);
    /// `false` is a plain core NATS publish, with no acknowledgement.
    pub jetstream: bool,
    /// `nats.max_payload_bytes`: the payload limit to assume before the
    /// server states its own (and an upper bound after).
    pub max_payload_bytes: Option<usize>,
}

/// What identifies one NATS connection: servers, authentication and TLS.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ConnectionSpec {
    /// The servers, as written (`nats://host:port`, `tls://host:port`,
    /// `host:port`), in order.
    pub servers: Vec<String>,
    /// At most one authentication method.
    pub auth: Auth,
    /// TLS settings.
    pub tls: TlsSpec,
}

/// How the connection authenticates. Every secret is kept out of `Debug`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Auth {
    /// No authentication.
    None,
    /// A `.creds` file's contents (user JWT and nkey seed), read when the
    /// webhook is loaded.
    Credentials {
        /// The file it was read from, for messages.
        path: PathBuf,
        /// The file's contents. Never logged.
        contents: String,
    },
    /// A token. Never logged.
    Token(String),
    /// An nkey seed. Never logged.
    Nkey(String),
    /// A user and password. The password is never logged.
    UserPassword {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Credentials { path, .. } => write!(f, "Credentials({})", path.display()),
            Auth::Token(_) => f.write_str("Token(***)"),
            Auth::Nkey(_) => f.write_str("Nkey(***)"),
            Auth::UserPassword { user, .. } => write!(f, "UserPassword({user}, ***)"),
        }
    }
}

/// `nats.tls`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsSpec {
    /// Extra root certificates (PEM) to trust.
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM), with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's key (PEM).
    pub key_file: Option<PathBuf>,
    /// Refuse a connection that is not TLS.
    pub required: bool,
}

impl std::fmt::Debug for NatsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsTarget")
            .field("subject", &self.subject)
            .field("connection", &self.connection)
            .field("jetstream", &self.jetstream)
            .field("max_payload_bytes", &self.max_payload_bytes)
            .finish()
    }
}

impl std::fmt::Debug for ConnectionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionSpec")
            .field(
                "servers",
                &self.servers.iter().map(|s| redact_server(s)).collect::<Vec<_>>(),
            )
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .finish()
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NatsObject {
    url: Option<UrlList>,
    credentials: Option<String>,
    token: Option<String>,
    nkey: Option<String>,
    user: Option<String>,
    password: Option<String>,
    tls: Option<TlsObject>,
    jetstream: Option<bool>,
    max_payload_bytes: Option<usize>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum UrlList {
    One(String),
    Many(Vec<String>),
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsObject {
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default)]
    required: bool,
}

impl NatsTarget {
    /// Reads and validates a webhook's nats keys. Reads a `.creds` file
    /// (local, never the network) and checks that TLS files exist.
    pub fn from_spec(spec: &WebhookSpec) -> Result<Self, SinkConfigError> {
        let subject = optional_str(spec, "nats_subject")?.unwrap_or_default().to_string();
        validate_subject(&subject)?;
        let nats: NatsObject = object_key(spec, "nats")?.unwrap_or_default();
        let servers = parse_servers(nats.url)?;
        let auth = parse_auth(nats.credentials, nats.token, nats.nkey, nats.user, nats.password)?;
        let tls = nats.tls.unwrap_or_default();
        for (key, path) in [
            ("ca_file", &tls.ca_file),
            ("cert_file", &tls.cert_file),
            ("key_file", &tls.key_file),
        ] {
            if let Some(path) = path
                && !path.is_file()
            {
                return Err(SinkConfigError::new(format!(
                    "`nats.tls.{key}` {} is not a readable file; give the path of a PEM file",
                    path.display()
                )));
            }
        }
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            return Err(SinkConfigError::new(
                "`nats.tls.cert_file` and `nats.tls.key_file` go together; set both (a client certificate and its key) or neither",
            ));
        }
        if let Some(limit) = nats.max_payload_bytes
            && limit < 1024
        {
            return Err(SinkConfigError::new(
                "`nats.max_payload_bytes` must be at least 1024 (nats-server's default is 1048576)",
            ));
        }
        Ok(Self {
            subject,
            connection: ConnectionSpec {
                servers,
                auth,
                tls: TlsSpec {
                    ca_file: tls.ca_file,
                    cert_file: tls.cert_file,
                    key_file: tls.key_file,
                    required: tls.required,
                },
            },
            jetstream: nats.jetstream.unwrap_or(true),
            max_payload_bytes: nats.max_payload_bytes,
        })
    }
}

/// A publish subject: dot-separated non-empty tokens, no wildcards, no
/// whitespace.
fn validate_subject(subject: &str) -> Result<(), SinkConfigError> {
    let refuse = |why: &str| {
        Err(SinkConfigError::new(format!(
            "`nats_subject` {subject:?} {why}; write a subject such as \"pusher.webhooks\" (dot-separated tokens, no wildcards or spaces)"
        )))
    };
    if subject.is_empty() {
        return refuse("is empty");
    }
    if subject.contains(['*', '>']) {
        return refuse("contains a wildcard (`*` or `>`), which cannot be published to");
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return refuse("contains whitespace");
    }
    if subject.split('.').any(str::is_empty) {
        return refuse("has an empty token (a leading, trailing or doubled `.`)");
    }
    Ok(())
}

fn parse_servers(url: Option<UrlList>) -> Result<Vec<String>, SinkConfigError> {
    let written: Vec<String> = match url {
        None => vec![DEFAULT_URL.to_string()],
        Some(UrlList::One(list)) => list.split(',').map(|s| s.trim().to_string()).collect(),
        Some(UrlList::Many(list)) => list.into_iter().map(|s| s.trim().to_string()).collect(),
    };
    if written.is_empty() || written.iter().any(String::is_empty) {
        return Err(SinkConfigError::new(
            "`nats.url` names an empty server; write \"nats://host:4222\", a comma-separated list of them, or an array",
        ));
    }
    for server in &written {
        let with_scheme = if server.contains("://") {
            server.clone()
        } else {
            format!("nats://{server}")
        };
        let parsed = url::Url::parse(&with_scheme).map_err(|e| {
            SinkConfigError::new(format!(
                "`nats.url` {:?} is not a server address ({e}); write \"nats://host:4222\"",
                redact_server(server)
            ))
        })?;
        if !matches!(parsed.scheme(), "nats" | "tls") {
            return Err(SinkConfigError::new(format!(
                "`nats.url` {:?} has scheme {:?}; use nats:// (or tls:// to require TLS)",
                redact_server(server),
                parsed.scheme()
            )));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(SinkConfigError::new(format!(
                "`nats.url` {:?} names no host; write \"nats://host:4222\"",
                redact_server(server)
            )));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(SinkConfigError::new(
                "`nats.url` carries credentials; put them in `nats.user` and `nats.password` (or `nats.token`) instead, so they stay out of logs",
            ));
        }
    }
    Ok(written)
}

fn parse_auth(
    credentials: Option<String>,
    token: Option<String>,
    nkey: Option<String>,
    user: Option<String>,
    password: Option<String>,
) -> Result<Auth, SinkConfigError> {
    let chosen = [
        credentials.is_some(),
        token.is_some(),
        nkey.is_some(),
        user.is_some() || password.is_some(),
    ]
    .iter()
    .filter(|set| **set)
    .count();
    if chosen > 1 {
        return Err(SinkConfigError::new(
            "`nats` sets more than one of `credentials`, `token`, `nkey` and `user`/`password`; keep exactly one",
        ));
    }
    if let Some(path) = credentials {
        let path = PathBuf::from(path);
        let contents = std::fs::read_to_string(&path).map_err(|e| {
            SinkConfigError::new(format!(
                "`nats.credentials` {} cannot be read ({e}); give the path of a NATS .creds file",
                path.display()
            ))
        })?;
        if async_nats::ConnectOptions::with_credentials(&contents).is_err() {
            return Err(SinkConfigError::new(format!(
                "`nats.credentials` {} is not a NATS .creds file (a user JWT and an nkey seed, as `nsc generate creds` writes)",
                path.display()
            )));
        }
        return Ok(Auth::Credentials { path, contents });
    }
    if let Some(token) = token {
        if token.is_empty() {
            return Err(SinkConfigError::new("`nats.token` is empty; set the server's token"));
        }
        return Ok(Auth::Token(token));
    }
    if let Some(seed) = nkey {
        // An nkey user seed: "SU" then base32 (RFC 4648 alphabet), 58 characters.
        let shaped = seed.len() == 58
            && seed.starts_with("SU")
            && seed
                .bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b));
        if !shaped {
            return Err(SinkConfigError::new(
                "`nats.nkey` is not an nkey user seed (58 characters starting with \"SU\", as `nk -gen user` prints)",
            ));
        }
        return Ok(Auth::Nkey(seed));
    }
    match (user, password) {
        (None, None) => Ok(Auth::None),
        (Some(user), Some(password)) if !user.is_empty() => Ok(Auth::UserPassword { user, password }),
        _ => Err(SinkConfigError::new(
            "`nats.user` and `nats.password` go together; set a non-empty user and its password",
        )),
    }
}

/// A server address as it may be logged: without user, password or path.
pub fn redact_server(server: &str) -> String {
    let with_scheme = if server.contains("://") {
        server.to_string()
    } else {
        format!("nats://{server}")
    };
    match url::Url::parse(&with_scheme) {
        Ok(url) => match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => format!("{host}:4222"),
            _ => "?".to_string(),
        },
        Err(_) => "?".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(json: serde_json::Value) -> Result<NatsTarget, SinkConfigError> {
        NatsTarget::from_spec(json.as_object().unwrap())
    }

    fn refusal(json: serde_json::Value) -> String {
        target(json).unwrap_err().message
    }

    #[test]
    fn defaults_to_jetstream_on_the_local_server() {
        let t = target(serde_json::json!({"nats_subject": "pusher.hooks", "event_types": ["a"]})).unwrap();
        assert_eq!(t.subject, "pusher.hooks");
        assert!(t.jetstream);
        assert_eq!(t.connection.servers, [DEFAULT_URL]);
        assert_eq!(t.connection.auth, Auth::None);
        assert_eq!(t.max_payload_bytes, None);
    }

    #[test]
    fn reads_server_lists_and_core_nats() {
        let t = target(serde_json::json!({"nats_subject": "a.b",
            "nats": {"url": "nats://n1:4222, n2:4223", "jetstream": false, "max_payload_bytes": 65536}}))
        .unwrap();
        assert_eq!(t.connection.servers, ["nats://n1:4222", "n2:4223"]);
        assert!(!t.jetstream);
        assert_eq!(t.max_payload_bytes, Some(65536));
        let t =
            target(serde_json::json!({"nats_subject": "a", "nats": {"url": ["tls://n1:4222", "nats://n2"]}})).unwrap();
        assert_eq!(t.connection.servers, ["tls://n1:4222", "nats://n2"]);
    }

    #[test]
    fn refuses_subjects_that_cannot_be_published_to() {
        for (subject, why) in [
            ("", "is empty"),
            ("a.*", "wildcard"),
            ("a.>", "wildcard"),
            ("a b", "whitespace"),
            ("a..b", "empty token"),
            (".a", "empty token"),
            ("a.", "empty token"),
        ] {
            let message = refusal(serde_json::json!({"nats_subject": subject}));
            assert!(message.starts_with("`nats_subject`"), "{message}");
            assert!(message.contains(why), "{subject:?}: {message}");
        }
        let message = refusal(serde_json::json!({"nats_subject": 5}));
        assert!(message.contains("`nats_subject` must be a string"), "{message}");
    }

    #[test]
    fn refuses_bad_urls_and_options() {
        let message = refusal(serde_json::json!({"nats_subject": "a", "nats": {"url": "http://h:4222"}}));
        assert!(
            message.contains("`nats.url`") && message.contains("use nats://"),
            "{message}"
        );
        let message = refusal(serde_json::json!({"nats_subject": "a", "nats": {"url": "nats://a:1,,nats://b:2"}}));
        assert!(message.contains("empty server"), "{message}");
        let message = refusal(serde_json::json!({"nats_subject": "a", "nats": {"url": "nats://u:pw@h:4222"}}));
        assert!(
            message.contains("carries credentials") && !message.contains("pw"),
            "{message}"
        );
        let message = refusal(serde_json::json!({"nats_subject": "a", "nats": {"jetsream": false}}));
        assert!(message.contains("unknown field `jetsream`"), "{message}");
        let message = refusal(serde_json::json!({"nats_subject": "a", "nats": "nats://h"}));
        assert!(message.contains("`nats` must be an object"), "{message}");
        let message = refusal(serde_json::json!({"nats_subject": "a", "nats": {"max_payload_bytes": 10}}));
        assert!(message.contains("`nats.max_payload_bytes`"), "{message}");
        let message =
            refusal(serde_json::json!({"nats_subject": "a", "nats": {"tls": {"ca_file": "/nonexistent/ca.pem"}}}));
        assert!(message.contains("`nats.tls.ca_file`"), "{message}");
    }

    #[test]
    fn takes_at_most_one_authentication_and_never_shows_secrets() {
        let message =
            refusal(serde_json::json!({"nats_subject": "a", "nats": {"token": "t0k", "user": "u", "password": "p"}}));
        assert!(message.contains("more than one"), "{message}");
        let message = refusal(serde_json::json!({"nats_subject": "a", "nats": {"user": "u"}}));
        assert!(message.contains("`nats.user` and `nats.password`"), "{message}");
        let message = refusal(serde_json::json!({"nats_subject": "a", "nats": {"nkey": "SUNOTASEED"}}));
        assert!(
            message.contains("`nats.nkey`") && !message.contains("SUNOTASEED"),
            "{message}"
        );
        let message =
            refusal(serde_json::json!({"nats_subject": "a", "nats": {"credentials": "/nonexistent/x.creds"}}));
        assert!(message.contains("`nats.credentials`"), "{message}");

        let seed = "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY";
        for (nats, secret) in [
            (serde_json::json!({"token": "s3cret-token"}), "s3cret-token"),
            (serde_json::json!({"user": "alice", "password": "pa55word"}), "pa55word"),
            (serde_json::json!({"nkey": seed}), seed),
        ] {
            let t = target(serde_json::json!({"nats_subject": "a", "nats": nats})).unwrap();
            let debug = format!("{t:?}");
            assert!(!debug.contains(secret), "{debug}");
        }
    }

    #[test]
    fn reads_and_checks_a_creds_file() {
        let dir = std::env::temp_dir().join(format!("hookline-nats-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.creds");
        std::fs::write(&bad, "not a creds file").unwrap();
        let message = refusal(serde_json::json!({"nats_subject": "a", "nats": {"credentials": bad}}));
        assert!(message.contains("is not a NATS .creds file"), "{message}");
        let good = dir.join("good.creds");
        std::fs::write(
            &good,
            "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.c2ln\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\nSUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY\n------END USER NKEY SEED------\n",
        )
        .unwrap();
        let t = target(serde_json::json!({"nats_subject": "a", "nats": {"credentials": good}})).unwrap();
        assert!(!format!("{t:?}").contains("SUACSSL3"), "{t:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn redacts_servers_to_host_and_port() {
        assert_eq!(redact_server("nats://u:p@h:1"), "h:1");
        assert_eq!(redact_server("h"), "h:4222");
        assert_eq!(redact_server("tls://h.example:4443"), "h.example:4443");
    }
}
