//! Redis Sentinel, as a client follows it: ask a sentinel for the master's address, make sure
//! that server really is a master (`ROLE`), and hear `+switch-master` when a failover moves it.
//!
//! A sentinel's answer may be stale (it has not heard of the last failover yet), and a server
//! just demoted keeps answering, so the address alone is not trusted: the Sentinel client
//! specification has clients check `ROLE` on the server before using it, and so do we.

use ::redis::Value;
use ::redis::aio::{MultiplexedConnection, PubSub};

use super::cluster::{MAX_HOST, NodeAddr, announced_host, int, items, text};
use super::{RedisError, RedisTarget};

/// The channel sentinels announce a failover on: `<service> <old-ip> <old-port> <new-ip>
/// <new-port>`.
pub(crate) const SWITCH_MASTER: &str = "+switch-master";

/// A failover a sentinel announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SwitchMaster {
    pub(crate) service: String,
    pub(crate) from: NodeAddr,
    pub(crate) to: NodeAddr,
}

/// `SENTINEL get-master-addr-by-name <service>` on a sentinel: the master's address, or `None`
/// when this sentinel does not monitor `service`.
pub(crate) async fn master_addr(
    sentinel: &RedisTarget,
    conn: &mut MultiplexedConnection,
    service: &str,
) -> Result<Option<NodeAddr>, RedisError> {
    let reply: Value = ::redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(service)
        .query_async(conn)
        .await
        .map_err(|e| sentinel.command_error("SENTINEL get-master-addr-by-name", e))?;
    parse_master_addr(&reply).map_err(|reason| RedisError::Reply {
        endpoint: sentinel.endpoint().to_string(),
        command: "SENTINEL get-master-addr-by-name",
        reason,
    })
}

/// The server's replication role (`master`, `slave`, `sentinel`): `ROLE`, else the `role:` line
/// of `INFO replication` for a user allowed `INFO` but not `ROLE`.
pub(crate) async fn role(
    server: &RedisTarget,
    conn: &mut MultiplexedConnection,
) -> Result<String, RedisError> {
    let reply: ::redis::RedisResult<Value> = ::redis::cmd("ROLE").query_async(conn).await;
    match reply {
        Ok(reply) => parse_role(&reply).ok_or_else(|| RedisError::Reply {
            endpoint: server.endpoint().to_string(),
            command: "ROLE",
            reason: "expected the role first".into(),
        }),
        Err(e) if e.is_io_error() || e.is_timeout() => Err(server.command_error("ROLE", e)),
        Err(_) => {
            let info: String = ::redis::cmd("INFO")
                .arg("replication")
                .query_async(conn)
                .await
                .map_err(|e| server.command_error("INFO replication", e))?;
            info.lines()
                .find_map(|l| l.strip_prefix("role:"))
                .map(|r| r.trim().to_string())
                .ok_or_else(|| RedisError::Reply {
                    endpoint: server.endpoint().to_string(),
                    command: "INFO replication",
                    reason: "no role: line".into(),
                })
        }
    }
}

/// A pub/sub connection to `sentinel`, subscribed to [`SWITCH_MASTER`].
pub(crate) async fn switch_master_events(sentinel: &RedisTarget) -> Result<PubSub, RedisError> {
    let mut pubsub = sentinel.pubsub().await?;
    pubsub
        .subscribe(SWITCH_MASTER)
        .await
        .map_err(|e| sentinel.command_error(&format!("SUBSCRIBE {SWITCH_MASTER}"), e))?;
    Ok(pubsub)
}

/// Reads a `get-master-addr-by-name` reply: `[ip, port]`, or nil for an unknown service.
pub(crate) fn parse_master_addr(reply: &Value) -> Result<Option<NodeAddr>, String> {
    if matches!(reply, Value::Nil) {
        return Ok(None);
    }
    let parts = items(reply).ok_or("expected [ip, port]")?;
    let [host, port] = parts else {
        return Err("expected [ip, port]".into());
    };
    let host = announced_host(
        text(host)
            .filter(|h| !h.is_empty())
            .ok_or("expected the master's host")?,
    )?;
    let port = int(port)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or("expected the master's port")?;
    Ok(Some(NodeAddr { host, port }))
}

/// The role in a `ROLE` reply: its first element.
pub(crate) fn parse_role(reply: &Value) -> Option<String> {
    items(reply)?
        .first()
        .and_then(text)
        .map(|role| role.chars().take(32).collect())
}

/// Reads a `+switch-master` message; `None` for anything else.
pub(crate) fn parse_switch_master(payload: &[u8]) -> Option<SwitchMaster> {
    let text = std::str::from_utf8(payload).ok()?;
    let parts: Vec<&str> = text.split_ascii_whitespace().collect();
    let [service, old_host, old_port, new_host, new_port] = parts[..] else {
        return None;
    };
    if [service, old_host, new_host]
        .iter()
        .any(|p| p.len() > MAX_HOST)
    {
        return None;
    }
    Some(SwitchMaster {
        service: service.to_string(),
        from: NodeAddr {
            host: old_host.to_string(),
            port: old_port.parse().ok()?,
        },
        to: NodeAddr {
            host: new_host.to_string(),
            port: new_port.parse().ok()?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn the_master_address_is_ip_and_port_or_nil() {
        let reply = Value::Array(vec![bulk("127.0.0.1"), bulk("6380")]);
        assert_eq!(
            parse_master_addr(&reply),
            Ok(Some(NodeAddr {
                host: "127.0.0.1".into(),
                port: 6380
            }))
        );
        assert_eq!(parse_master_addr(&Value::Nil), Ok(None));
        for bad in [
            Value::Array(vec![bulk("127.0.0.1")]),
            Value::Array(vec![bulk("127.0.0.1"), bulk("port")]),
            Value::Array(vec![bulk(""), bulk("6379")]),
            Value::Array(vec![bulk("127.0.0.1"), bulk("70000")]),
            Value::Int(3),
        ] {
            assert!(parse_master_addr(&bad).is_err(), "{bad:?}");
        }
    }

    /// A host name of 100,000 bytes is refused, and the error says so in a few dozen bytes.
    #[test]
    fn a_huge_announced_host_is_refused_and_not_repeated() {
        let host = "h".repeat(100_000);
        let reply = Value::Array(vec![bulk(&host), bulk("6379")]);
        let error = parse_master_addr(&reply).expect_err("refused");
        assert!(error.contains("100000 bytes"), "{error}");
        assert!(error.len() < 200, "{} bytes", error.len());
        let message = format!("mymaster 127.0.0.1 6379 {host} 6380");
        assert_eq!(parse_switch_master(message.as_bytes()), None);
    }

    /// `ROLE` on a master, a replica and a sentinel (Redis 7.0).
    #[test]
    fn the_role_is_the_first_element() {
        let master = Value::Array(vec![
            bulk("master"),
            Value::Int(3129659),
            Value::Array(vec![Value::Array(vec![
                bulk("127.0.0.1"),
                bulk("9001"),
                bulk("3129242"),
            ])]),
        ]);
        assert_eq!(parse_role(&master).as_deref(), Some("master"));
        let replica = Value::Array(vec![
            bulk("slave"),
            bulk("127.0.0.1"),
            Value::Int(9000),
            bulk("connected"),
            Value::Int(3167038),
        ]);
        assert_eq!(parse_role(&replica).as_deref(), Some("slave"));
        let sentinel = Value::Array(vec![bulk("sentinel"), Value::Array(vec![bulk("mymaster")])]);
        assert_eq!(parse_role(&sentinel).as_deref(), Some("sentinel"));
        assert_eq!(parse_role(&Value::Array(vec![])), None);
        assert_eq!(parse_role(&Value::Okay), None);
    }

    #[test]
    fn switch_master_names_the_service_and_both_masters() {
        let message = parse_switch_master(b"mymaster 127.0.0.1 6379 127.0.0.1 6380").expect("read");
        assert_eq!(message.service, "mymaster");
        assert_eq!(message.from.port, 6379);
        assert_eq!(
            message.to,
            NodeAddr {
                host: "127.0.0.1".into(),
                port: 6380
            }
        );
        assert_eq!(parse_switch_master(b"mymaster 127.0.0.1 6379"), None);
        assert_eq!(parse_switch_master(b"m a b c d"), None);
        assert_eq!(parse_switch_master(&[0xff, 0xfe]), None);
    }
}
