//! How authchat reaches Redis: one server (`redis.url`) or a Redis Cluster
//! (`redis.cluster_nodes`). Both give a [`Connection`] for commands that reconnects by itself,
//! and a [`Target`] to open the connections that subscribe.
//!
//! Under Redis Cluster a command goes to the shard of its key, so whatever must run as one
//! step (a script, an atomic pipeline) touches keys of one hash tag only, and a pipeline is
//! never spread across shards: the store's callers send such work as separate commands.
//! Keyspace notifications and `SCAN` are per server, so [`Target::servers`] names them all.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Client, Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisFuture, Value};
use secrecy::ExposeSecret;

use crate::config::RedisSettings;

/// A command connection: cheap to clone, shared by every caller, reconnecting by itself.
#[derive(Clone)]
pub enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// What further connections (subscriptions) are opened to.
#[derive(Clone)]
pub enum Target {
    Single(Client),
    Cluster(ClusterSeeds),
}

/// A cluster's seed nodes and the timeouts, to build clients from.
#[derive(Clone)]
pub struct ClusterSeeds {
    seeds: Vec<ConnectionInfo>,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl ClusterSeeds {
    /// A cluster client; with `pushes`, one that subscribes (RESP3), whose messages and
    /// subscription confirmations arrive there, and that subscribes again by itself after a
    /// reconnection or a change of which shard holds a channel's slot.
    pub fn client(
        &self,
        pushes: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
    ) -> Result<ClusterClient, String> {
        let mut builder = ClusterClientBuilder::new(self.seeds.clone())
            .connection_timeout(self.connect_timeout)
            .response_timeout(self.response_timeout)
            // Fail fast while a shard fails over: the sender gets `unavailable` and resends,
            // rather than a request hanging through many retries.
            .retries(2)
            .min_retry_wait(50)
            .max_retry_wait(500);
        if let Some(pushes) = pushes {
            builder = builder.use_protocol(redis::ProtocolVersion::RESP3).push_sender(pushes);
        }
        builder.build().map_err(|e| format!("redis.cluster_nodes is not usable: {:?}", e.kind()))
    }
}

impl Target {
    /// Every server of the deployment: the one server, or each primary of the cluster as it
    /// is now (asked of the cluster). For what Redis does per server: keyspace notifications
    /// and `SCAN`.
    pub async fn servers(&self, conn: &mut Connection) -> redis::RedisResult<Vec<Client>> {
        match (self, conn) {
            (Self::Single(client), _) => Ok(vec![client.clone()]),
            (Self::Cluster(seeds), Connection::Cluster(conn)) => {
                let nodes = conn
                    .route_command(
                        redis::cmd("CLUSTER").arg("NODES").clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                    )
                    .await?;
                let text: String = redis::from_redis_value(nodes)?;
                let seed = seeds.seeds.first().expect("a cluster has seeds");
                primaries(&text).into_iter().map(|(host, port)| Client::open(at_address(seed, host, port))).collect()
            }
            (Self::Cluster(_), Connection::Single(_)) => unreachable!("a cluster target has a cluster connection"),
        }
    }
}

/// Connects to `redis.url`, or to the cluster of `redis.cluster_nodes`; each command is
/// bounded by `redis.response_timeout`. The error names the setting, never its text (it may
/// hold a password).
pub async fn connect(settings: &RedisSettings) -> Result<(Target, Connection), String> {
    let give_up = settings.connect_timeout * 2;
    if settings.is_cluster() {
        let seeds = settings
            .cluster_nodes
            .iter()
            .enumerate()
            .map(|(i, url)| {
                url.expose_secret()
                    .into_connection_info()
                    .map_err(|e| format!("redis.cluster_nodes[{i}] is not a usable Redis URL: {:?}", e.kind()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let seeds = ClusterSeeds {
            seeds,
            connect_timeout: settings.connect_timeout,
            response_timeout: settings.response_timeout,
        };
        let conn = tokio::time::timeout(give_up, seeds.client(None)?.get_async_connection())
            .await
            .map_err(|_| "cannot reach the Redis Cluster at redis.cluster_nodes: timed out".to_owned())?
            .map_err(|e| format!("cannot reach the Redis Cluster at redis.cluster_nodes: {e}"))?;
        return Ok((Target::Cluster(seeds), Connection::Cluster(conn)));
    }
    let client = Client::open(settings.url.expose_secret())
        .map_err(|e| format!("redis.url is not a usable Redis URL: {:?}", e.kind()))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(Some(settings.response_timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(2));
    let conn = tokio::time::timeout(give_up, client.get_connection_manager_with_config(config))
        .await
        .map_err(|_| "cannot reach Redis at redis.url: timed out".to_owned())?
        .map_err(|e| format!("cannot reach Redis at redis.url: {e}"))?;
    Ok((Target::Single(client), Connection::Single(conn)))
}

/// The primaries in a `CLUSTER NODES` answer that are not failed, as (host, port).
fn primaries(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let flags = fields.get(2)?;
            let is_live_primary = flags.split(',').any(|f| f == "master") && !flags.contains("fail");
            if !is_live_primary {
                return None;
            }
            // ip:port@cport[,hostname]
            let address = fields.get(1)?.split('@').next()?;
            let (host, port) = address.rsplit_once(':')?;
            Some((host.trim_matches(['[', ']']).to_owned(), port.parse().ok()?))
        })
        .collect()
}

/// `seed`'s credentials and TLS settings, at another node's address.
fn at_address(seed: &ConnectionInfo, host: String, port: u16) -> ConnectionInfo {
    let addr = match seed.addr() {
        ConnectionAddr::TcpTls { insecure, tls_params, .. } => {
            ConnectionAddr::TcpTls { host, port, insecure: *insecure, tls_params: tls_params.clone() }
        }
        _ => ConnectionAddr::Tcp(host, port),
    };
    seed.clone().set_addr(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_live_primaries_are_servers() {
        let nodes = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7002@17002 master - 0 1 2 connected 5461-10922
c3 127.0.0.1:7003@17003 master,fail - 0 1 3 connected
d4 127.0.0.1:7004@17004 slave a1 0 1 1 connected
e5 [::1]:7005@17005,redis-5 master - 0 1 5 connected 10923-16383
";
        assert_eq!(
            primaries(nodes),
            vec![("127.0.0.1".into(), 7001), ("127.0.0.1".into(), 7002), ("::1".into(), 7005)]
        );
    }
}
