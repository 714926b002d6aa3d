//! What can go wrong talking to the app's Redis, each rendered as one line with its fix.

/// A failure of the Redis adapter: connecting, a command, or a server that would never publish
/// the events the worker waits for.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The server could not be reached or refused the credentials; `hint` names the settings
    /// to check (empty when none applies).
    #[error("cannot connect to Redis at {endpoint}: {cause}{hint}")]
    Connect {
        endpoint: String,
        cause: String,
        hint: String,
    },

    /// A TLS file of the connection (`cafile`, `local_cert`, `local_pk`) could not be read or
    /// holds no usable PEM; `setting` is the config key that names it.
    #[error(
        "cannot use the Redis TLS file {path} ({setting}): {cause}; fix the path in config/database.php or the file (PEM)"
    )]
    TlsFile {
        path: String,
        setting: String,
        cause: String,
    },

    /// A command failed on an open connection; `action` names it as the log should.
    #[error("Redis at {endpoint}: {action} failed: {source}")]
    Command {
        endpoint: String,
        action: String,
        #[source]
        source: redis::RedisError,
    },

    /// The ACL user may not run a command the worker needs; `rules` are the `ACL SETUSER`
    /// rules that grant everything it needs.
    #[error(
        "Redis at {endpoint}: the user may not run {action} ({cause}); grant what the worker needs with `ACL SETUSER <user> {rules}` (docs/topologies.md, \"ACL users\")"
    )]
    Permission {
        endpoint: String,
        action: String,
        cause: String,
        rules: String,
    },

    /// `notify-keyspace-events` lacks `E` and `x`: no `expired` event would ever arrive.
    #[error(
        "keyspace notifications are off on Redis at {endpoint} (notify-keyspace-events is {current:?}), so no `expired` event would ever arrive: run `redis-cli -h <host> CONFIG SET notify-keyspace-events Ex` and add `notify-keyspace-events Ex` to redis.conf, set it in the parameter group (AWS ElastiCache), the Advanced settings (Azure) or --redis-config (Google Memorystore), or start order-expire with --configure-redis"
    )]
    NotificationsOff { endpoint: String, current: String },

    /// A server answered a command with something we cannot read.
    #[error("Redis at {endpoint}: unexpected reply to {command}: {reason}")]
    Reply {
        endpoint: String,
        command: &'static str,
        reason: String,
    },

    /// The configuration lists a cluster, but this node runs without cluster mode.
    #[error(
        "Redis at {endpoint} is not a cluster node (cluster support disabled), but the cache store's connection is under database.redis.clusters: point it at the cluster's nodes, or move the server to database.redis.<connection> if it is a single server"
    )]
    NotACluster { endpoint: String },

    /// No seed node of a cluster, or no sentinel, gave the servers to use; `tried` says what
    /// each one answered.
    #[error("cannot find the {what}: {tried}; {hint}")]
    NoServer {
        what: String,
        tried: String,
        hint: &'static str,
    },
}
