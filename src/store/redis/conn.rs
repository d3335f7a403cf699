//! One connection type for a single Redis and for a Redis Cluster (the
//! redis crate's own cluster client: it discovers the nodes and follows
//! MOVED/ASK redirections and failovers).

use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClient, ClusterClientBuilder};
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use ::redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// Where to connect, parsed from the store URL.
#[derive(Clone)]
pub enum Target {
    Single(::redis::Client),
    Cluster(Box<ClusterClient>),
}

/// Seed node URLs of `redis-cluster://[:PASSWORD@]HOST:PORT[,HOST:PORT…]`
/// (as `redis://…` URLs), and the password if any.
pub fn cluster_nodes(url: &str) -> Result<(Vec<String>, Option<String>), String> {
    const MAX_NODES: usize = 64;
    let rest = url
        .strip_prefix("redis-cluster://")
        .ok_or("a cluster store URL starts with redis-cluster://")?;
    let rest = rest.trim_end_matches('/');
    let (password, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => {
            let pw = auth.strip_prefix(':').unwrap_or(auth);
            (Some(pw.to_owned()).filter(|p| !p.is_empty()), hosts)
        }
        None => (None, rest),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| format!("redis://{h}/"))
        .collect();
    let well_formed = |n: &String| {
        n.trim_start_matches("redis://")
            .trim_end_matches('/')
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    };
    if nodes.is_empty() || nodes.len() > MAX_NODES || !nodes.iter().all(well_formed) {
        return Err(format!(
            "redis-cluster:// needs 1 to {MAX_NODES} seed nodes as HOST:PORT[,HOST:PORT…]"
        ));
    }
    Ok((nodes, password))
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, String> {
        if url.starts_with("redis-cluster://") {
            let (nodes, password) = cluster_nodes(url)?;
            let mut builder = ClusterClientBuilder::new(nodes)
                .connection_timeout(Duration::from_secs(1))
                .response_timeout(Duration::from_secs(5))
                .retries(2)
                .min_retry_wait(20)
                .max_retry_wait(200);
            if let Some(pw) = password {
                builder = builder.password(pw);
            }
            let client = builder.build().map_err(|e| format!("bad redis URL: {e}"))?;
            Ok(Target::Cluster(Box::new(client)))
        } else {
            let client = ::redis::Client::open(url).map_err(|e| format!("bad redis URL: {e}"))?;
            Ok(Target::Single(client))
        }
    }

    /// A connection whose calls time out after `response_timeout` (longer
    /// for the tailers, whose XREAD blocks).
    pub fn connect(&self, response_timeout: Duration) -> RedisResult<Conn> {
        match self {
            Target::Single(client) => Ok(Conn::Single(ConnectionManager::new_lazy_with_config(
                client.clone(),
                ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_response_timeout(Some(response_timeout))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(20))
                    .set_max_delay(Duration::from_millis(100)),
            )?)),
            Target::Cluster(client) => {
                let config = ::redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(Duration::from_secs(1))
                    .set_response_timeout(response_timeout);
                // Connects in the background: a cluster that is down now
                // makes calls UNAVAILABLE until it is back.
                Ok(Conn::Cluster(
                    client.get_pending_async_connection_with_config(config),
                ))
            }
        }
    }
}

/// A single Redis or a cluster; both multiplex many calls on few sockets.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// `WAIT replicas timeout` on the primary that holds `tag`'s slot (where
    /// this connection's last write to that shard went).
    pub async fn wait_replicas(
        &mut self,
        slot: u16,
        replicas: u32,
        timeout_ms: u64,
    ) -> RedisResult<i64> {
        let mut cmd = ::redis::cmd("WAIT");
        cmd.arg(replicas).arg(timeout_ms);
        match self {
            Conn::Single(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => {
                let route = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
                let v = c.route_command(cmd, RoutingInfo::SingleNode(route)).await?;
                ::redis::from_redis_value(v).map_err(Into::into)
            }
        }
    }
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
