//! Writing an order's expiry key exactly as Laravel does.
//!
//! `Cache::store('redis')->put('ORDER_CONFIRM:'.$id, $id, $ttl)` sends
//! `SETEX <REDIS_PREFIX><CACHE_PREFIX>:ORDER_CONFIRM:<id> <ttl> <value>` to the cache database
//! (on a cluster, to the master of the key's slot; under Sentinel, to the current master),
//! where RedisStore stores a numeric value as its plain digits and anything else through PHP's
//! `serialize()`. A key written here is indistinguishable from one written by the app, so the
//! demo, the tests and services not written in PHP can place orders that the worker (and the app)
//! treat the same way.

use crate::config::Settings;
use crate::config::is_numeric;
use crate::error::Error;
use crate::key::KeyPattern;
use crate::redis::RedisServers;

/// The bytes RedisStore stores for `value` (`RedisStore::serialize`): numbers raw, anything else
/// PHP-serialized, so that Laravel's `Cache::get()` reads back the same value.
pub fn laravel_cache_value(value: &str) -> Vec<u8> {
    let finite_number = is_numeric(value)
        && value
            .trim()
            .parse::<f64>()
            .map(f64::is_finite)
            .unwrap_or(false);
    if finite_number {
        return value.as_bytes().to_vec();
    }
    match serde_php::to_vec(&value) {
        Ok(bytes) => bytes,
        // Serializing a string cannot fail; keep a correct fallback rather than a panic.
        Err(_) => format!("s:{}:\"{}\";", value.len(), value).into_bytes(),
    }
}

/// Writes the key for `order` with a time to live of `ttl_seconds` and returns the key.
/// `value` defaults to the order id, as in the blog post's `put('ORDER_CONFIRM:'.$id, $id, ...)`.
pub async fn schedule(
    settings: &Settings,
    order: u64,
    ttl_seconds: u64,
    value: Option<&str>,
) -> Result<String, Error> {
    if ttl_seconds == 0 {
        // Laravel turns a TTL of 0 into forget(): a DEL that never fires `expired`.
        return Err(Error::Usage(
            "--ttl must be at least 1 second (Laravel deletes the key for a TTL of 0, so no expiry would ever fire)".into(),
        ));
    }
    let key = KeyPattern::new(&settings.keys).key_for(order);
    let id = order.to_string();
    let bytes = laravel_cache_value(value.unwrap_or(&id));
    // On a cluster the key's master takes it, in database 0 as Laravel's cluster connection.
    let mut conn = RedisServers::new(&settings.redis)?.connect().await?;
    conn.setex(&key, ttl_seconds, &bytes).await?;
    Ok(key)
}

/// `order-expire schedule`: writes the key and prints it with its TTL.
pub async fn command(
    settings: &Settings,
    order: u64,
    ttl_seconds: u64,
    value: Option<&str>,
) -> Result<(), Error> {
    let key = schedule(settings, order, ttl_seconds, value).await?;
    println!("{key} expires in {ttl_seconds} s");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_stored_as_redis_store_stores_them() {
        assert_eq!(laravel_cache_value("7"), b"7");
        assert_eq!(laravel_cache_value("1.5"), b"1.5");
        assert_eq!(laravel_cache_value("pending"), b"s:7:\"pending\";");
        assert_eq!(laravel_cache_value("商城"), "s:6:\"商城\";".as_bytes());
        assert_eq!(laravel_cache_value(""), b"s:0:\"\";");
        assert_eq!(laravel_cache_value("1e999"), b"s:5:\"1e999\";");
    }
}
