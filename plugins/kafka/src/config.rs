//! The kafka webhook's own keys: `kafka_topic` and the `kafka` object
//! (`brokers`, `key`, `acks`, `partition`, `sasl`, `tls`,
//! `max_message_bytes`), validated offline: `build` reads the TLS files
//! named here but never opens a connection.

use std::sync::Arc;

use hookline_sink_api::{SinkConfigError, WebhookSpec, json_type_name, object_key, optional_str};
use serde::Deserialize;

/// Kafka's default `message.max.bytes` is 1 MiB plus 12 bytes; Hookline stays
/// at 1 MiB so a broker on defaults never refuses a record it sized.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// The longest topic name Kafka accepts.
const MAX_TOPIC_LEN: usize = 249;

/// A validated kafka webhook target.
#[derive(Clone)]
pub struct KafkaTarget {
    /// The topic records are produced to (it must exist: Hookline creates none).
    pub topic: String,
    /// Bootstrap brokers, `host:port` each.
    pub brokers: Vec<String>,
    /// What each record's key is.
    pub key: KeyBy,
    /// A fixed partition; `None` picks one by hashing the key.
    pub partition: Option<i32>,
    /// SASL authentication, if any.
    pub sasl: Option<Sasl>,
    /// TLS, if any.
    pub tls: Option<Tls>,
    /// The largest record batch the broker takes (`message.max.bytes`).
    pub max_message_bytes: usize,
}

impl std::fmt::Debug for KafkaTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaTarget")
            .field("topic", &self.topic)
            .field("brokers", &self.brokers)
            .field("key", &self.key)
            .field("partition", &self.partition)
            .field("sasl", &self.sasl)
            .field("tls", &self.tls)
            .field("max_message_bytes", &self.max_message_bytes)
            .finish()
    }
}

/// `kafka.key`: which value keys each record (and so picks its partition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyBy {
    /// The webhook's id: one ordered stream per webhook.
    #[default]
    Webhook,
    /// The app's id: one ordered stream per app.
    App,
    /// The channel: batches are formed per channel, one ordered stream each.
    Channel,
}

/// `kafka.sasl`: the mechanisms rskafka speaks with a username and password.
#[derive(Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sasl {
    /// The mechanism.
    pub mechanism: SaslMechanism,
    /// The user name.
    pub username: String,
    /// The password. Never logged.
    pub password: String,
}

impl std::fmt::Debug for Sasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// `kafka.sasl.mechanism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum SaslMechanism {
    /// `PLAIN` (send it over TLS only: the password travels as is).
    #[serde(rename = "PLAIN")]
    Plain,
    /// `SCRAM-SHA-256`.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// `SCRAM-SHA-512`.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

/// `kafka.tls`: `true` (the public web roots) or files. The files' contents
/// are read when the webhook is built, so a reload picks up rotated files.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Tls {
    /// PEM CA certificates to trust instead of the public web roots.
    pub ca_pem: Option<Vec<u8>>,
    /// A PEM client certificate chain and its private key, for mutual TLS.
    pub client_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// The paths they came from, for messages.
    paths: Vec<String>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.paths).finish()
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KafkaObject {
    brokers: Option<serde_json::Value>,
    key: Option<KeyBy>,
    acks: Option<serde_json::Value>,
    partition: Option<i32>,
    sasl: Option<Sasl>,
    tls: Option<TlsObject>,
    max_message_bytes: Option<usize>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TlsObject {
    On(bool),
    Files(TlsFiles),
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFiles {
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
}

impl KafkaTarget {
    /// Reads and validates a webhook's kafka keys.
    pub fn from_spec(spec: &WebhookSpec) -> Result<Self, SinkConfigError> {
        let topic = optional_str(spec, "kafka_topic")?.unwrap_or_default().to_string();
        validate_topic(&topic)?;
        let kafka: KafkaObject = object_key(spec, "kafka")?.ok_or_else(|| {
            SinkConfigError::new(format!(
                "the Kafka webhook for topic {topic:?} names no brokers; set `kafka.brokers`, e.g. [\"kafka-1:9092\"]"
            ))
        })?;
        let tls = kafka.tls.map(read_tls).transpose()?.flatten();
        let brokers = brokers(kafka.brokers.as_ref(), &topic, tls.is_some())?;
        if let Some(acks) = &kafka.acks
            && acks != "all"
        {
            // rskafka writes acks=-1 into every produce request, so any other
            // setting would be a promise the client cannot keep.
            return Err(SinkConfigError::new(format!(
                "`kafka.acks` {acks} is not supported: Hookline's Kafka client always waits for every in-sync replica; remove `kafka.acks` or set it to \"all\""
            )));
        }
        if let Some(partition) = kafka.partition
            && partition < 0
        {
            return Err(SinkConfigError::new(format!(
                "`kafka.partition` {partition} must be 0 or more, or left out to pick the partition by key"
            )));
        }
        if let Some(sasl) = &kafka.sasl
            && (sasl.username.is_empty() || sasl.password.is_empty())
        {
            return Err(SinkConfigError::new(
                "`kafka.sasl` needs a non-empty `username` and `password`",
            ));
        }
        let max_message_bytes = kafka.max_message_bytes.unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
        if !(4096..=100 * 1024 * 1024).contains(&max_message_bytes) {
            return Err(SinkConfigError::new(format!(
                "`kafka.max_message_bytes` {max_message_bytes} must be between 4096 and 104857600; set it to the topic's `max.message.bytes` (1048576 when unsure)"
            )));
        }
        Ok(Self {
            topic,
            brokers,
            key: kafka.key.unwrap_or_default(),
            partition: kafka.partition,
            sasl: kafka.sasl,
            tls,
            max_message_bytes,
        })
    }
}

impl Tls {
    /// Builds the rustls configuration: the CA file's certificates or the
    /// public web roots, and the client certificate when set.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, SinkConfigError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_pem {
            Some(pem) => {
                let certs = CertificateDer::pem_slice_iter(pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| SinkConfigError::new(format!("`kafka.tls.ca_file`: not PEM certificates: {e}")))?;
                if certs.is_empty() {
                    return Err(SinkConfigError::new(
                        "`kafka.tls.ca_file` holds no certificate; give a PEM file with `-----BEGIN CERTIFICATE-----` blocks",
                    ));
                }
                for cert in certs {
                    roots
                        .add(cert)
                        .map_err(|e| SinkConfigError::new(format!("`kafka.tls.ca_file`: {e}")))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| SinkConfigError::new(format!("`kafka.tls`: {e}")))?
            .with_root_certificates(roots);
        let config = match &self.client_pem {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| SinkConfigError::new(format!("`kafka.tls.cert_file`: not PEM certificates: {e}")))?;
                if chain.is_empty() {
                    return Err(SinkConfigError::new("`kafka.tls.cert_file` holds no certificate"));
                }
                // The error names no key material, only what is wrong.
                let key = PrivateKeyDer::from_pem_slice(key).map_err(|_| {
                    SinkConfigError::new("`kafka.tls.key_file` holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| SinkConfigError::new(format!("`kafka.tls.cert_file`/`key_file`: {e}")))?
            }
        };
        Ok(Arc::new(config))
    }
}

fn validate_topic(topic: &str) -> Result<(), SinkConfigError> {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if topic.is_empty() || topic == "." || topic == ".." || topic.len() > MAX_TOPIC_LEN || !topic.chars().all(legal) {
        return Err(SinkConfigError::new(format!(
            "`kafka_topic` {topic:?} is not a Kafka topic name: use 1 to 249 of a-z, A-Z, 0-9, '.', '_' and '-'"
        )));
    }
    Ok(())
}

fn brokers(value: Option<&serde_json::Value>, topic: &str, tls: bool) -> Result<Vec<String>, SinkConfigError> {
    let list = match value {
        None | Some(serde_json::Value::Null) => {
            return Err(SinkConfigError::new(format!(
                "the Kafka webhook for topic {topic:?} names no brokers; set `kafka.brokers`, e.g. [\"kafka-1:9092\"]"
            )));
        }
        Some(serde_json::Value::String(s)) => {
            return Err(SinkConfigError::new(format!(
                "`kafka.brokers` must be an array of \"host:port\" strings; write [{}]",
                s.split(',')
                    .map(|b| serde_json::Value::String(b.trim().to_string()).to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Some(serde_json::Value::Array(list)) if !list.is_empty() => list,
        Some(other) => {
            return Err(SinkConfigError::new(format!(
                "`kafka.brokers` must be a non-empty array of \"host:port\" strings, found {}",
                json_type_name(other)
            )));
        }
    };
    list.iter()
        .enumerate()
        .map(|(i, broker)| {
            let Some(broker) = broker.as_str() else {
                return Err(SinkConfigError::new(format!(
                    "`kafka.brokers[{i}]` must be a \"host:port\" string, found {}",
                    json_type_name(broker)
                )));
            };
            validate_broker(broker, tls)
                .map_err(|why| SinkConfigError::new(format!("`kafka.brokers[{i}]` {broker:?} {why}")))?;
            Ok(broker.to_string())
        })
        .collect()
}

/// Checks one `host:port`, as the client will connect to it.
fn validate_broker(broker: &str, tls: bool) -> Result<(), String> {
    if broker.contains("://") {
        return Err("has a scheme; write \"host:port\" alone (TLS is `kafka.tls`)".to_string());
    }
    let Some((host, port)) = broker.rsplit_once(':') else {
        return Err("has no port; write \"host:port\", e.g. \"kafka-1:9092\"".to_string());
    };
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("has port {port:?}; write a port from 1 to 65535"));
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("has a bracketed host that is not an IPv6 address".to_string());
        }
        if tls {
            // The client takes the TLS server name from the text before the
            // first ':', which an IPv6 literal breaks.
            return Err("is an IPv6 literal, which the Kafka client cannot use with TLS; use a host name".to_string());
        }
        return Ok(());
    }
    let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if host.is_empty() || !host.chars().all(name_char) {
        return Err("has no valid host; write \"host:port\" with a host name or IPv4 address".to_string());
    }
    Ok(())
}

fn read_tls(tls: TlsObject) -> Result<Option<Tls>, SinkConfigError> {
    let files = match tls {
        TlsObject::On(false) => return Ok(None),
        TlsObject::On(true) => TlsFiles::default(),
        TlsObject::Files(files) => files,
    };
    let read = |key: &str, path: &str| {
        std::fs::read(path).map_err(|e| {
            SinkConfigError::new(format!(
                "`kafka.tls.{key}` {path:?} cannot be read ({e}); give the path of a PEM file"
            ))
        })
    };
    let mut paths = Vec::new();
    let ca_pem = match &files.ca_file {
        Some(path) => {
            paths.push(path.clone());
            Some(read("ca_file", path)?)
        }
        None => None,
    };
    let client_pem = match (&files.cert_file, &files.key_file) {
        (Some(cert), Some(key)) => {
            paths.push(cert.clone());
            paths.push(key.clone());
            Some((read("cert_file", cert)?, read("key_file", key)?))
        }
        (None, None) => None,
        _ => {
            return Err(SinkConfigError::new(
                "`kafka.tls` needs both `cert_file` and `key_file` for a client certificate, or neither",
            ));
        }
    };
    let tls = Tls {
        ca_pem,
        client_pem,
        paths,
    };
    // Built once here so that `check` reports a bad file.
    tls.client_config()?;
    Ok(Some(tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(json: serde_json::Value) -> Result<KafkaTarget, SinkConfigError> {
        KafkaTarget::from_spec(json.as_object().unwrap())
    }

    fn refusal(json: serde_json::Value) -> String {
        target(json).unwrap_err().message
    }

    #[test]
    fn reads_the_full_form_and_defaults() {
        let t = target(serde_json::json!({"kafka_topic": "pusher.events",
            "kafka": {"brokers": ["k1:9092", "10.0.0.2:9093", "[::1]:9094"]}}))
        .unwrap();
        assert_eq!(t.key, KeyBy::Webhook);
        assert_eq!(t.partition, None);
        assert_eq!(t.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
        assert!(t.sasl.is_none() && t.tls.is_none());
        let t = target(
            serde_json::json!({"kafka_topic": "t", "kafka": {"brokers": ["k:1"], "key": "channel",
            "acks": "all", "partition": 2, "tls": true, "max_message_bytes": 8192,
            "sasl": {"mechanism": "SCRAM-SHA-512", "username": "u", "password": "hunter2"}}}),
        )
        .unwrap();
        assert_eq!(t.key, KeyBy::Channel);
        assert_eq!(t.partition, Some(2));
        assert_eq!(t.sasl.as_ref().unwrap().mechanism, SaslMechanism::ScramSha512);
        assert!(t.tls.is_some());
        assert!(
            !format!("{t:?}").contains("hunter2"),
            "the password never shows in Debug"
        );
    }

    #[test]
    fn refusals_name_the_key_and_say_what_to_write() {
        let cases = [
            (serde_json::json!({"kafka_topic": "t"}), "set `kafka.brokers`"),
            (
                serde_json::json!({"kafka_topic": "", "kafka": {"brokers": ["k:1"]}}),
                "`kafka_topic` \"\"",
            ),
            (
                serde_json::json!({"kafka_topic": "a b", "kafka": {"brokers": ["k:1"]}}),
                "not a Kafka topic name",
            ),
            (
                serde_json::json!({"kafka_topic": "t", "kafka": {"brokers": "k1:9092,k2:9092"}}),
                "write [\"k1:9092\", \"k2:9092\"]",
            ),
            (
                serde_json::json!({"kafka_topic": "t", "kafka": {"brokers": []}}),
                "non-empty array",
            ),
            (
                serde_json::json!({"kafka_topic": "t", "kafka": {"brokers": ["k1"]}}),
                "`kafka.brokers[0]` \"k1\" has no port",
            ),
            (
                serde_json::json!({"kafka_topic": "t", "kafka": {"brokers": ["k:1", "kafka://k:9092"]}}),
                "`kafka.brokers[1]`",
            ),
            (
                serde_json::json!({"kafka_topic": "t", "kafka": {"brokers": ["k:99999"]}}),
                "port from 1 to 65535",
            ),
            (
                serde_json::json!({"kafka_topic": "t", "kafka": {"brokers": ["[::1]:9092"], "tls": true}}),
                "IPv6",
            ),
            (
                serde_json::json!({"kafka_topic": "t", "kafka": {"brokers": ["k:1"], "acks": "leader"}}),
                "`kafka.acks` \"leader\" is not supported",
            ),
            (
                serde_json::json!({"kafka_topic": "t", "kafka": {"brokers": ["k:1"], "acks": 1}}),
                "set it to \"all\"",
            ),
            (
                serde_json::json!({"kafka_topic": "t", "kafka": {"brokers": ["k:1"], "key": "event"}}),
                "unknown variant `event`",
            ),
            (
                serde_json::json!({"kafka_topic": "t", "kafka": {"brokers": ["k:1"], "partition": -1}}),
                "`kafka.partition` -1",
            ),
            (
                serde_json::json!({"kafka_topic": "t", "kafka": {"brokers": ["k:1"], "max_message_bytes": 100}}),
                "`kafka.max_message_bytes` 100",
            ),
            (
                serde_json::json!({"kafka_topic": "t", "kafka": {"brokers": ["k:1"], "brokr": []}}),
                "unknown field `brokr`",
            ),
            (
                serde_json::json!({"kafka_topic": "t", "kafka": {"brokers": ["k:1"],
                "sasl": {"mechanism": "GSSAPI", "username": "u", "password": "p"}}}),
                "unknown variant `GSSAPI`",
            ),
            (
                serde_json::json!({"kafka_topic": "t", "kafka": {"brokers": ["k:1"],
                "sasl": {"mechanism": "PLAIN", "username": "u", "password": ""}}}),
                "non-empty `username` and `password`",
            ),
            (
                serde_json::json!({"kafka_topic": "t", "kafka": {"brokers": ["k:1"], "tls": {"cert_file": "/c"}}}),
                "both `cert_file` and `key_file`",
            ),
            (
                serde_json::json!({"kafka_topic": "t", "kafka": {"brokers": ["k:1"], "tls": {"ca_file": "/nonexistent/ca.pem"}}}),
                "`kafka.tls.ca_file` \"/nonexistent/ca.pem\" cannot be read",
            ),
            (
                serde_json::json!({"kafka_topic": "t", "kafka": []}),
                "`kafka` must be an object",
            ),
        ];
        for (spec, expected) in cases {
            let message = refusal(spec.clone());
            assert!(message.contains(expected), "{spec}: {message}");
        }
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("hookline-kafka-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let message = refusal(serde_json::json!({"kafka_topic": "t",
            "kafka": {"brokers": ["k:1"], "tls": {"ca_file": path.to_str().unwrap()}}}));
        assert!(
            message.contains("`kafka.tls.ca_file` holds no certificate"),
            "{message}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
