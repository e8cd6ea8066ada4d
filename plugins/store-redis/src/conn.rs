//! One kind of connection for a single Redis (or Valkey) and a Redis
//! Cluster: which one is found out at connect time (`INFO cluster` on the
//! node in `redis_url`). Every command and script names keys of one
//! partition (one slot), so a cluster routes each to its node.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// A shared, reconnecting connection.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Makes connections: the shared one, and one of its own for each inbox
/// reader (a blocking read holds its connection).
#[derive(Clone)]
pub(crate) enum Connector {
    Single(redis::Client),
    Cluster(Box<ClusterClient>),
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Connector::Single(_) => "single",
            Connector::Cluster(_) => "cluster",
        })
    }
}

impl Connector {
    /// A connection whose replies may take `response` (a blocking read's
    /// wait and then some). Redis down: one reconnect try, then an error,
    /// so ingest answers 503 at once and the next request tries again.
    pub(crate) async fn connect(&self, response: Duration) -> RedisResult<Conn> {
        match self {
            Connector::Single(client) => client
                .get_connection_manager_with_config(manager_config(response))
                .await
                .map(Conn::Single),
            Connector::Cluster(client) => {
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(Duration::from_secs(5))
                    .set_response_timeout(response);
                client.get_async_connection_with_config(config).await.map(Conn::Cluster)
            }
        }
    }
}

/// How every connection to a single Redis behaves: replies may take
/// `response`; Redis down, one reconnect try and then an error, so ingest
/// answers 503 at once and the next request tries again.
pub(crate) fn manager_config(response: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(response))
        .set_max_delay(Duration::from_secs(1))
        .set_number_of_retries(1)
}

/// The connector for `url`: a cluster client when the node it names runs
/// in cluster mode.
pub(crate) async fn connector(url: &str, seed: &mut ConnectionManager) -> RedisResult<Connector> {
    let info: String = redis::cmd("INFO").arg("cluster").query_async(seed).await?;
    if info.lines().any(|l| l.trim() == "cluster_enabled:1") {
        let client = ClusterClient::builder(vec![url]).retries(1).build()?;
        Ok(Connector::Cluster(Box::new(client)))
    } else {
        Ok(Connector::Single(redis::Client::open(url)?))
    }
}
