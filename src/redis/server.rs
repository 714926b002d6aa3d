//! Which server a Redis connection reached: Redis or Valkey, and its own version, from
//! `INFO server`.
//!
//! Valkey reports the Redis version it is compatible with as `redis_version` (7.2.4 on every
//! Valkey 8 and 9) and its own as `valkey_version`, with `server_name:valkey`; reading only
//! `redis_version` names a Valkey 8.1 "Redis 7.2.4", which is neither what runs nor what an
//! operator looks up.

use std::fmt;

/// Redis or Valkey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RedisFamily {
    Redis,
    Valkey,
}

impl RedisFamily {
    /// The stable name `check --json` uses: `redis` or `valkey`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Valkey => "valkey",
        }
    }
}

/// A Redis-protocol server's family and versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RedisServerInfo {
    pub(crate) family: RedisFamily,
    /// The server's own version (`valkey_version` on Valkey); `unknown` when not reported.
    pub(crate) version: String,
    /// `redis_version`: the same as `version` on Redis, the compatible Redis on Valkey.
    pub(crate) redis_version: String,
}

impl RedisServerInfo {
    /// Reads the answer to `INFO server`.
    pub(crate) fn parse(info: &str) -> Self {
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        };
        let redis_version = field("redis_version").unwrap_or_else(|| "unknown".into());
        let valkey_version = field("valkey_version");
        let valkey = valkey_version.is_some()
            || field("server_name").is_some_and(|name| name.eq_ignore_ascii_case("valkey"));
        if valkey {
            Self {
                family: RedisFamily::Valkey,
                version: valkey_version.unwrap_or_else(|| redis_version.clone()),
                redis_version,
            }
        } else {
            Self {
                family: RedisFamily::Redis,
                version: redis_version.clone(),
                redis_version,
            }
        }
    }
}

impl fmt::Display for RedisServerInfo {
    /// `Redis 8.2.3`, `Valkey 8.1.8 (Redis 7.2.4 compatible)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.family {
            RedisFamily::Redis => write!(f, "Redis {}", self.version),
            RedisFamily::Valkey => write!(
                f,
                "Valkey {} (Redis {} compatible)",
                self.version, self.redis_version
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valkey_is_named_by_its_own_version_and_redis_by_redis_version() {
        let valkey = RedisServerInfo::parse(
            "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.1.8\r\nredis_git_sha1:00000000\r\n",
        );
        assert_eq!(valkey.family, RedisFamily::Valkey);
        assert_eq!(valkey.version, "8.1.8");
        assert_eq!(valkey.to_string(), "Valkey 8.1.8 (Redis 7.2.4 compatible)");
        let redis =
            RedisServerInfo::parse("# Server\r\nredis_version:8.2.3\r\nredis_mode:standalone\r\n");
        assert_eq!(redis.family, RedisFamily::Redis);
        assert_eq!(redis.to_string(), "Redis 8.2.3");
        let quiet = RedisServerInfo::parse("");
        assert_eq!(quiet.to_string(), "Redis unknown");
    }
}
