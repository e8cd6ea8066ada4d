//! The `kafka` sink plugin: a webhook with a `kafka_topic` key is delivered
//! by producing one record per batch to that topic, through rskafka (pure
//! Rust, no librdkafka, so the static scratch image keeps building).
//!
//! A record's value is the exact signed body (`{"time_ms", "events"}`); its
//! headers are the webhook's `headers` and then `X-Pusher-Key`,
//! `X-Pusher-Signature`, `X-Hookline-Batch-Id` and `X-Hookline-Batch-Time`,
//! which win over a webhook header of the same name; its key is the
//! webhook id, the app id or the channel (`kafka.key`). The partition is
//! Kafka's own default choice for a keyed record (murmur2 of the key,
//! positive, modulo the partition count), so one key keeps its order and
//! lands where a Java producer would put it; `kafka.partition` fixes one.
//!
//! The produce waits for every in-sync replica (`acks=all`, the only level
//! rskafka sends). Hookline never creates topics: a missing one is a dead
//! letter that names it.

mod config;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use hookline_sink_api::{BoxFuture, DeliveryError, Sink, SinkConfigError, SinkPlugin, SinkRequest, WebhookSpec};
use rskafka::BackoffConfig;
use rskafka::client::error::{Error as ClientError, ProtocolError, RequestError};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rskafka::record::Record;

pub use config::{DEFAULT_MAX_MESSAGE_BYTES, KafkaTarget, KeyBy, Sasl, SaslMechanism, Tls};

/// A record batch's fixed header in the v2 format (base offset, length,
/// epoch, magic, CRC, attributes, offsets, timestamps, producer fields,
/// record count).
const RECORD_BATCH_OVERHEAD: usize = 61;
/// One record's own framing at most: length, attributes, timestamp and
/// offset deltas, key and value lengths, header count (varints).
const RECORD_OVERHEAD: usize = 40;
/// Room for the key, which `max_body_bytes` cannot see (a channel name is at
/// most 200 bytes, a topic name, the default webhook id, 249).
const KEY_ALLOWANCE: usize = 256;
/// Room for the signed headers: names, the app key, a 64-digit signature,
/// the batch id and time, and their varints.
const SIGNED_HEADERS_ALLOWANCE: usize = 512;
/// How long a topic's partition count is trusted before it is asked again
/// (Kafka producers' `metadata.max.age.ms`); any failed produce forgets it.
const METADATA_MAX_AGE: Duration = Duration::from_secs(300);

/// Builds [`KafkaSink`]s for webhooks that carry a `kafka_topic`.
#[derive(Default)]
pub struct KafkaSinkPlugin {
    /// Clients in use, by brokers, SASL and TLS; weak so that a client (and
    /// its connections) goes away with the last webhook using it.
    clients: Mutex<HashMap<ClientKey, Weak<SharedClient>>>,
}

impl std::fmt::Debug for KafkaSinkPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSinkPlugin").finish_non_exhaustive()
    }
}

/// What makes two webhooks' connections interchangeable. The TLS files'
/// contents (not their paths) are part of it, so a rotated certificate
/// gets a new client on reload.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    brokers: Vec<String>,
    sasl: Option<Sasl>,
    tls: Option<Tls>,
}

impl KafkaSinkPlugin {
    /// Creates the plugin.
    pub fn new() -> Self {
        Self::default()
    }

    fn client_for(&self, target: &KafkaTarget) -> Result<Arc<SharedClient>, SinkConfigError> {
        let key = ClientKey {
            brokers: target.brokers.clone(),
            sasl: target.sasl.clone(),
            tls: target.tls.clone(),
        };
        let mut clients = self.clients.lock().expect("clients lock is never held across a panic");
        if let Some(client) = clients.get(&key).and_then(Weak::upgrade) {
            return Ok(client);
        }
        clients.retain(|_, weak| weak.strong_count() > 0);
        let tls = target.tls.as_ref().map(Tls::client_config).transpose()?;
        let client = Arc::new(SharedClient {
            brokers: key.brokers.clone(),
            sasl: key.sasl.clone(),
            tls,
            client: tokio::sync::OnceCell::new(),
            partitions: Mutex::default(),
            topics: Mutex::default(),
        });
        clients.insert(key, Arc::downgrade(&client));
        Ok(client)
    }
}

impl SinkPlugin for KafkaSinkPlugin {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn selector_key(&self) -> &'static str {
        "kafka_topic"
    }

    fn own_keys(&self) -> &'static [&'static str] {
        &["kafka"]
    }

    fn build(&self, spec: &WebhookSpec) -> Result<Box<dyn Sink>, SinkConfigError> {
        let target = KafkaTarget::from_spec(spec)?;
        let client = self.client_for(&target)?;
        Ok(Box::new(KafkaSink { client, target }))
    }
}

/// One connection set to a cluster, shared by every webhook with the same
/// brokers, SASL and TLS; connected on first use.
struct SharedClient {
    brokers: Vec<String>,
    sasl: Option<Sasl>,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The rskafka client, built (bootstrap metadata fetched) by the first
    /// send; a failed bootstrap leaves it empty for the next attempt.
    client: tokio::sync::OnceCell<Client>,
    /// Partition leaders' clients, by topic and partition.
    partitions: Mutex<HashMap<(String, i32), Arc<PartitionClient>>>,
    /// Partition counts by topic, and when they were read.
    topics: Mutex<HashMap<String, (i32, Instant)>>,
}

impl SharedClient {
    async fn client(&self) -> Result<&Client, ClientError> {
        self.client
            .get_or_try_init(|| async {
                let mut builder = ClientBuilder::new(self.brokers.clone())
                    .client_id("hookline")
                    // Hookline's retry policy owns retries. rskafka retries
                    // once or twice (a connection the broker closed while
                    // idle, a leader that just moved), then reports the error
                    // for the engine to classify. The deadline is short
                    // because rskafka nests these loops (a produce retries
                    // a metadata request that retries a connect, each with
                    // its own deadline counting only its own sleeps).
                    .backoff_config(BackoffConfig {
                        init_backoff: Duration::from_millis(100),
                        max_backoff: Duration::from_millis(500),
                        base: 2.0,
                        deadline: Some(Duration::from_millis(300)),
                    });
                if let Some(tls) = &self.tls {
                    builder = builder.tls_config(Arc::clone(tls));
                }
                if let Some(sasl) = &self.sasl {
                    let credentials = Credentials::new(sasl.username.clone(), sasl.password.clone());
                    builder = builder.sasl_config(match sasl.mechanism {
                        SaslMechanism::Plain => SaslConfig::Plain(credentials),
                        SaslMechanism::ScramSha256 => SaslConfig::ScramSha256(credentials),
                        SaslMechanism::ScramSha512 => SaslConfig::ScramSha512(credentials),
                    });
                }
                builder.build().await
            })
            .await
    }

    /// The topic's partition count, from a metadata answer at most
    /// [`METADATA_MAX_AGE`] old; `None` when the cluster has no such topic.
    async fn partition_count(&self, topic: &str) -> Result<Option<i32>, ClientError> {
        if let Some((count, at)) = self.topics.lock().expect("never poisoned").get(topic)
            && at.elapsed() < METADATA_MAX_AGE
        {
            return Ok(Some(*count));
        }
        // An all-topics request: unlike a request naming the topic, it never
        // makes a broker with `auto.create.topics.enable` create it.
        let topics = self.client().await?.list_topics().await?;
        let count = topics
            .iter()
            .find(|t| t.name == topic)
            .map(|t| t.partitions.len() as i32)
            .filter(|n| *n > 0);
        if let Some(count) = count {
            self.topics
                .lock()
                .expect("never poisoned")
                .insert(topic.to_string(), (count, Instant::now()));
        }
        Ok(count)
    }

    async fn partition_client(&self, topic: &str, partition: i32) -> Result<Arc<PartitionClient>, ClientError> {
        let key = (topic.to_string(), partition);
        if let Some(client) = self.partitions.lock().expect("never poisoned").get(&key) {
            return Ok(Arc::clone(client));
        }
        let client = Arc::new(
            self.client()
                .await?
                .partition_client(topic, partition, UnknownTopicHandling::Error)
                .await?,
        );
        // Two sends may race to create one; either client works.
        Ok(Arc::clone(
            self.partitions
                .lock()
                .expect("never poisoned")
                .entry(key)
                .or_insert(client),
        ))
    }

    /// Forgets what a failed produce may have made stale: the partition
    /// count and the leader's client (rskafka reconnects a broken one by
    /// itself, but not one for a partition that moved or went away).
    fn forget(&self, topic: &str, partition: i32) {
        self.topics.lock().expect("never poisoned").remove(topic);
        self.partitions
            .lock()
            .expect("never poisoned")
            .remove(&(topic.to_string(), partition));
    }
}

/// Produces to one topic.
pub struct KafkaSink {
    client: Arc<SharedClient>,
    target: KafkaTarget,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Sink for KafkaSink {
    fn describe(&self) -> String {
        format!("kafka:{}@{}", self.target.topic, self.target.brokers[0])
    }

    fn max_body_bytes(&self, extra_headers: &[(String, String)]) -> Option<usize> {
        let headers: usize = extra_headers.iter().map(|(k, v)| k.len() + v.len() + 10).sum();
        Some(self.target.max_message_bytes.saturating_sub(
            RECORD_BATCH_OVERHEAD + RECORD_OVERHEAD + KEY_ALLOWANCE + SIGNED_HEADERS_ALLOWANCE + headers,
        ))
    }

    fn default_timeout(&self) -> Duration {
        // rskafka asks the leader to wait up to 30 s for the replicas.
        Duration::from_secs(35)
    }

    fn batches_per_channel(&self) -> bool {
        self.target.key == KeyBy::Channel
    }

    fn send<'a>(&'a self, request: SinkRequest<'a>) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let topic = &self.target.topic;
            let record = record(&request, self.target.key);
            let size = record_batch_size(&record);
            if size > self.target.max_message_bytes {
                return Err(DeliveryError::TooLarge(format!(
                    "a record of {size} bytes is over `kafka.max_message_bytes` ({})",
                    self.target.max_message_bytes
                )));
            }
            let count = match self.client.partition_count(topic).await {
                Ok(Some(count)) => count,
                Ok(None) => return Err(self.missing_topic()),
                Err(error) => return Err(self.classify(error)),
            };
            let partition = match self.target.partition {
                Some(p) if p >= count => {
                    return Err(DeliveryError::Final(format!(
                        "`kafka.partition` is {p} but Kafka topic {topic:?} has {count} partitions"
                    )));
                }
                Some(p) => p,
                None => partition_for(record.key.as_deref().unwrap_or_default(), count),
            };
            let result = match self.client.partition_client(topic, partition).await {
                Ok(client) => client.produce(vec![record], Compression::NoCompression).await.map(drop),
                Err(error) => Err(error),
            };
            match result {
                Ok(()) => Ok(()),
                Err(error) => {
                    self.client.forget(topic, partition);
                    if matches!(
                        protocol_code(&error),
                        Some(ProtocolError::UnknownTopicOrPartition | ProtocolError::UnknownTopicId)
                    ) {
                        // Final only once a fresh metadata answer agrees: a
                        // leader may not know a topic created a moment ago.
                        return Err(if self.topic_is_gone().await {
                            self.missing_topic()
                        } else {
                            DeliveryError::Transient(format!(
                                "the leader of Kafka topic {topic:?} partition {partition} does not know it yet"
                            ))
                        });
                    }
                    let error = self.classify(error);
                    if matches!(error, DeliveryError::Final(_)) && self.topic_is_gone().await {
                        return Err(self.missing_topic());
                    }
                    Err(error)
                }
            }
        })
    }
}

impl KafkaSink {
    fn missing_topic(&self) -> DeliveryError {
        DeliveryError::Final(format!(
            "Kafka topic {:?} does not exist on {}; create it (Hookline does not create topics)",
            self.target.topic,
            self.target.brokers.join(",")
        ))
    }

    /// After an unknown-topic answer: whether a fresh metadata request
    /// confirms the topic is gone (rather than a broker lagging behind).
    async fn topic_is_gone(&self) -> bool {
        matches!(self.client.partition_count(&self.target.topic).await, Ok(None))
    }

    fn classify(&self, error: ClientError) -> DeliveryError {
        classify(&error, &self.target.topic)
    }
}

/// The record of one batch: the signed body as value, the key per
/// `kafka.key`, the webhook's headers and then the signed ones, which
/// replace a webhook header of the same name in any case.
fn record(request: &SinkRequest<'_>, key: KeyBy) -> Record {
    let mut headers = BTreeMap::new();
    for (name, value) in request.extra_headers {
        if request
            .signed_headers
            .iter()
            .any(|(signed, _)| signed.eq_ignore_ascii_case(name))
        {
            continue;
        }
        headers.insert(name.clone(), value.as_bytes().to_vec());
    }
    for (name, value) in request.signed_headers {
        headers.insert((*name).to_string(), value.as_bytes().to_vec());
    }
    let key = match key {
        KeyBy::Webhook => request.webhook_id,
        KeyBy::App => request.app_id,
        // Set whenever batches are formed per channel; a batch formed before
        // `key` became "channel" (stored, or a replayed dead letter) may mix
        // channels: it goes under the webhook's key, as one stream.
        KeyBy::Channel => request.channel.unwrap_or(request.webhook_id),
    };
    Record {
        key: Some(key.as_bytes().to_vec()),
        value: Some(request.body.to_vec()),
        headers,
        timestamp: now(),
    }
}

/// The record's create time (rskafka's chrono has no clock of its own).
fn now() -> rskafka::chrono::DateTime<rskafka::chrono::Utc> {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    rskafka::chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// An upper bound of the record batch holding `record` alone, as the
/// broker measures it against `message.max.bytes`.
fn record_batch_size(record: &Record) -> usize {
    RECORD_BATCH_OVERHEAD + RECORD_OVERHEAD + record.approximate_size() + record.headers.len() * 10
}

/// Kafka's default partitioner for a keyed record:
/// `(murmur2(key) & 0x7fffffff) % partitions`.
fn partition_for(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// MurmurHash2 as Kafka's `Utils.murmur2` computes it (seed `0x9747b28c`).
fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() == 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Maps rskafka's typed errors to delivery outcomes; never reads messages.
fn classify(error: &ClientError, topic: &str) -> DeliveryError {
    match error {
        ClientError::ServerError { protocol_error, .. } => classify_protocol(*protocol_error, topic),
        ClientError::Connection(e) => classify_connection(e),
        ClientError::Request(e) => classify_request(e),
        ClientError::Timeout => DeliveryError::Timeout,
        ClientError::InvalidResponse(what) => DeliveryError::Transient(format!("invalid answer from Kafka: {what}")),
        // rskafka's own short retries gave up: what matters is the last error.
        ClientError::RetryFailed(rskafka::BackoffError::DeadlineExceded { source, .. }) => {
            if let Some(inner) = source.downcast_ref::<ClientError>() {
                classify(inner, topic)
            } else if let Some(inner) = source.downcast_ref::<rskafka::ConnectionError>() {
                classify_connection(inner)
            } else {
                // The bootstrap's "no broker answered" list, which rskafka
                // does not expose by type.
                DeliveryError::Connect(format!("no Kafka broker could be reached: {source}"))
            }
        }
        other => DeliveryError::Transient(format!("{other}")),
    }
}

/// The Kafka error code behind an error, through rskafka's retry wrapper.
fn protocol_code(error: &ClientError) -> Option<ProtocolError> {
    match error {
        ClientError::ServerError { protocol_error, .. } => Some(*protocol_error),
        ClientError::RetryFailed(rskafka::BackoffError::DeadlineExceded { source, .. }) => {
            source.downcast_ref::<ClientError>().and_then(protocol_code)
        }
        _ => None,
    }
}

fn classify_connection(error: &rskafka::ConnectionError) -> DeliveryError {
    use rskafka::ConnectionError as E;
    match error {
        E::SaslFailed(rskafka::SaslError::ApiError(code)) => DeliveryError::Final(format!(
            "Kafka SASL authentication failed ({code:?}); check `kafka.sasl`"
        )),
        E::SaslFailed(rskafka::SaslError::UnsupportedSaslMechanism) => DeliveryError::Final(
            "the Kafka broker does not offer the SASL mechanism in `kafka.sasl.mechanism`".to_string(),
        ),
        E::RetryFailed(rskafka::BackoffError::DeadlineExceded { source, .. }) => {
            match source.downcast_ref::<rskafka::ConnectionError>() {
                Some(inner) => classify_connection(inner),
                None => DeliveryError::Connect(format!("no Kafka broker could be reached: {source}")),
            }
        }
        other => DeliveryError::Connect(format!("{other}")),
    }
}

fn classify_request(error: &RequestError) -> DeliveryError {
    match error {
        RequestError::IO(_) | RequestError::Poisoned(_) => DeliveryError::Connect(format!("{error}")),
        RequestError::NoVersionMatch { .. } => DeliveryError::Final(format!(
            "the Kafka broker speaks no version of a request Hookline needs: {error}"
        )),
        other => DeliveryError::Transient(format!("{other}")),
    }
}

/// Kafka error codes, by what a retry can do about them.
fn classify_protocol(code: ProtocolError, topic: &str) -> DeliveryError {
    use ProtocolError as P;
    match code {
        // Quotas and a shrunken in-sync replica set: the cluster asks us
        // to wait; waiting uses up no attempt.
        P::ThrottlingQuotaExceeded | P::NotEnoughReplicas | P::NotEnoughReplicasAfterAppend => {
            DeliveryError::Throttled { retry_after: None }
        }
        P::MessageTooLarge | P::RecordListTooLarge => {
            DeliveryError::TooLarge(format!("Kafka topic {topic:?} refused the record: {code:?}"))
        }
        P::UnknownTopicOrPartition | P::UnknownTopicId | P::InvalidTopicException => {
            DeliveryError::Final(format!("Kafka topic {topic:?}: {code:?}"))
        }
        P::TopicAuthorizationFailed | P::ClusterAuthorizationFailed | P::TransactionalIdAuthorizationFailed => {
            DeliveryError::Final(format!(
                "not allowed to produce to Kafka topic {topic:?} ({code:?}); grant the `kafka.sasl` user WRITE on it"
            ))
        }
        P::SaslAuthenticationFailed | P::UnsupportedSaslMechanism | P::IllegalSaslState => DeliveryError::Final(
            format!("Kafka SASL authentication failed ({code:?}); check `kafka.sasl`"),
        ),
        P::InvalidRecord
        | P::CorruptMessage
        | P::InvalidRequiredAcks
        | P::InvalidTimestamp
        | P::PolicyViolation
        | P::UnsupportedVersion
        | P::UnsupportedForMessageFormat
        | P::UnsupportedCompressionType
        | P::InvalidRequest => DeliveryError::Final(format!("Kafka topic {topic:?} refused the record: {code:?}")),
        // Leader elections, replicas catching up, a broker restarting, a
        // request timing out: retried, and counted.
        other => DeliveryError::Transient(format!("Kafka topic {topic:?}: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(spec: serde_json::Value) -> Box<dyn Sink> {
        KafkaSinkPlugin::new().build(spec.as_object().unwrap()).unwrap()
    }

    #[test]
    fn murmur2_matches_kafkas_test_vectors() {
        // From Kafka's UtilsTest.testMurmur2.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            (b"abc", 479_470_107),
        ];
        for (data, hash) in cases {
            assert_eq!(murmur2(data), hash, "{}", String::from_utf8_lossy(data));
        }
        for n in 1..20 {
            let p = partition_for(b"some-channel", n);
            assert!((0..n).contains(&p));
            assert_eq!(p, partition_for(b"some-channel", n), "stable");
        }
    }

    #[test]
    fn the_record_carries_the_exact_body_key_and_headers_and_signed_ones_win() {
        let body = bytes::Bytes::from_static(br#"{"time_ms":1,"events":[{"name":"a","channel":"c"}]}"#);
        let signed = [
            ("X-Pusher-Key", "k".to_string()),
            ("X-Pusher-Signature", "sig".to_string()),
        ];
        let extra = [
            ("x-pusher-signature".to_string(), "forged".to_string()),
            ("X-Env".to_string(), "prod".to_string()),
        ];
        let request = SinkRequest {
            body: body.clone(),
            signed_headers: &signed,
            extra_headers: &extra,
            timeout: Duration::from_secs(1),
            app_id: "app",
            webhook_id: "hook",
            channel: Some("c"),
            attempt: 1,
            answer: None,
        };
        let r = record(&request, KeyBy::Webhook);
        assert_eq!(r.value.as_deref(), Some(&body[..]));
        assert_eq!(r.key.as_deref(), Some(&b"hook"[..]));
        assert_eq!(
            r.headers.keys().collect::<Vec<_>>(),
            ["X-Env", "X-Pusher-Key", "X-Pusher-Signature"]
        );
        assert_eq!(r.headers["X-Pusher-Signature"], b"sig");
        assert_eq!(record(&request, KeyBy::App).key.as_deref(), Some(&b"app"[..]));
        assert_eq!(record(&request, KeyBy::Channel).key.as_deref(), Some(&b"c"[..]));
    }

    #[test]
    fn describe_limits_and_per_channel_batching() {
        let s = sink(
            serde_json::json!({"kafka_topic": "events", "kafka": {"brokers": ["k1:9092", "k2:9092"],
            "sasl": {"mechanism": "PLAIN", "username": "u", "password": "hunter2"}}}),
        );
        assert_eq!(s.describe(), "kafka:events@k1:9092");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!s.batches_per_channel());
        let limit = s.max_body_bytes(&[]).unwrap();
        assert!(
            limit < DEFAULT_MAX_MESSAGE_BYTES - 800 && limit > DEFAULT_MAX_MESSAGE_BYTES - 2000,
            "{limit}"
        );
        let with_header = s.max_body_bytes(&[("X-Env".to_string(), "x".repeat(100))]).unwrap();
        assert!(with_header <= limit - 105);
        let s = sink(serde_json::json!({"kafka_topic": "events", "kafka": {"brokers": ["k1:9092"], "key": "channel"}}));
        assert!(s.batches_per_channel());
    }

    #[test]
    fn clients_are_shared_per_brokers_and_credentials_and_built_without_network() {
        let plugin = KafkaSinkPlugin::new();
        let target = |brokers: &[&str], user: &str| {
            KafkaTarget::from_spec(
                serde_json::json!({"kafka_topic": "t", "kafka": {"brokers": brokers,
                    "sasl": {"mechanism": "PLAIN", "username": user, "password": "p"}}})
                .as_object()
                .unwrap(),
            )
            .unwrap()
        };
        let a = plugin.client_for(&target(&["k:1"], "u")).unwrap();
        let b = plugin.client_for(&target(&["k:1"], "u")).unwrap();
        let c = plugin.client_for(&target(&["k:1"], "v")).unwrap();
        let d = plugin.client_for(&target(&["k:2"], "u")).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert!(!Arc::ptr_eq(&a, &d));
        assert!(a.client.get().is_none(), "nothing connected yet");
    }

    #[test]
    fn classifies_kafka_error_codes() {
        let server = |code| ClientError::ServerError {
            protocol_error: code,
            error_message: None,
            request: rskafka::client::error::RequestContext::Topic("t".to_string()),
            response: None,
            is_virtual: false,
        };
        let class = |code| classify(&server(code), "t");
        assert!(matches!(
            class(ProtocolError::ThrottlingQuotaExceeded),
            DeliveryError::Throttled { retry_after: None }
        ));
        assert!(matches!(
            class(ProtocolError::NotEnoughReplicas),
            DeliveryError::Throttled { .. }
        ));
        assert!(matches!(
            class(ProtocolError::MessageTooLarge),
            DeliveryError::TooLarge(_)
        ));
        assert!(matches!(
            class(ProtocolError::RecordListTooLarge),
            DeliveryError::TooLarge(_)
        ));
        for code in [
            ProtocolError::UnknownTopicOrPartition,
            ProtocolError::TopicAuthorizationFailed,
        ] {
            match class(code) {
                DeliveryError::Final(text) => assert!(text.contains("\"t\""), "{text}"),
                other => panic!("{code:?}: {other:?}"),
            }
        }
        assert!(matches!(
            class(ProtocolError::SaslAuthenticationFailed),
            DeliveryError::Final(_)
        ));
        assert!(matches!(
            class(ProtocolError::LeaderNotAvailable),
            DeliveryError::Transient(_)
        ));
        assert!(matches!(
            class(ProtocolError::NotLeaderOrFollower),
            DeliveryError::Transient(_)
        ));
        assert!(matches!(
            class(ProtocolError::RequestTimedOut),
            DeliveryError::Transient(_)
        ));
        assert!(matches!(classify(&ClientError::Timeout, "t"), DeliveryError::Timeout));
        let io = ClientError::Request(RequestError::IO(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert!(matches!(classify(&io, "t"), DeliveryError::Connect(_)));
        let gave_up = ClientError::RetryFailed(rskafka::BackoffError::DeadlineExceded {
            deadline: Duration::from_secs(2),
            source: Box::new(server(ProtocolError::LeaderNotAvailable)),
        });
        assert!(matches!(classify(&gave_up, "t"), DeliveryError::Transient(_)));
        assert_eq!(protocol_code(&gave_up), Some(ProtocolError::LeaderNotAvailable));
        assert_eq!(protocol_code(&ClientError::Timeout), None);
    }
}
