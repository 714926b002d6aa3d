//! `order-expire schedule` writes the key exactly as Laravel's `Cache::put()` does.

mod common;

use common::{App, RedisServer};

fn key_ttl_value(redis: &RedisServer, db: i64, key: &str) -> (i64, Option<Vec<u8>>) {
    let mut conn = redis.conn(db);
    let ttl: i64 = redis::cmd("TTL").arg(key).query(&mut conn).expect("TTL");
    let value: Option<Vec<u8>> = redis::cmd("GET").arg(key).query(&mut conn).expect("GET");
    (ttl, value)
}

#[test]
fn schedule_writes_laravels_key_in_the_cache_database() {
    let redis = RedisServer::start();
    let app = App::with_env(&format!("CACHE_DRIVER=redis\nREDIS_PORT={}\n", redis.port));
    let output = app.run(&["schedule", "42", "--ttl", "300"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (ttl, value) = key_ttl_value(&redis, 1, "laravel_database_laravel_cache:ORDER_CONFIRM:42");
    assert!((295..=300).contains(&ttl), "ttl {ttl}");
    assert_eq!(
        value.as_deref(),
        Some(&b"42"[..]),
        "numbers are stored raw, as RedisStore does"
    );
}

#[test]
fn schedule_follows_prefixes_and_serializes_other_values() {
    let redis = RedisServer::start();
    let app = App::with_env(&format!(
        "CACHE_DRIVER=redis\nREDIS_PORT={}\nREDIS_PREFIX=\nCACHE_PREFIX=shop\nREDIS_CACHE_DB=2\n",
        redis.port
    ));
    let output = app.run(&["schedule", "7", "--ttl", "60", "--value", "pending"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (ttl, value) = key_ttl_value(&redis, 2, "shop:ORDER_CONFIRM:7");
    assert!(ttl > 0, "ttl {ttl}");
    assert_eq!(
        value.as_deref(),
        Some(&b"s:7:\"pending\";"[..]),
        "PHP serialize() for non-numbers"
    );
}

#[test]
fn schedule_refuses_a_zero_ttl() {
    let app = App::with_env("CACHE_DRIVER=redis\n");
    let output = app.run(&["schedule", "7", "--ttl", "0"]);
    assert!(!output.status.success());
}

/// What `schedule` refuses, it refuses before Redis sees anything: an id Laravel never writes
/// (`05` would be the key `...:05`, not order 5's) and a TTL Redis itself refuses.
#[test]
fn schedule_refuses_ids_laravel_never_writes_and_ttls_redis_refuses() {
    let redis = RedisServer::start();
    let app = App::with_env(&format!("CACHE_DRIVER=redis\nREDIS_PORT={}\n", redis.port));
    let huge = "9300000000000000";
    let refused_by_redis = redis::cmd("SETEX")
        .arg("probe")
        .arg(huge)
        .arg("1")
        .query::<()>(&mut redis.conn(1))
        .is_err();
    assert!(
        refused_by_redis,
        "Redis refuses SETEX with a TTL of {huge} s"
    );
    let mut codes = Vec::new();
    for args in [
        ["schedule", "05", "--ttl", "60"],
        ["schedule", "+5", "--ttl", "60"],
        ["schedule", "5", "--ttl", huge],
    ] {
        let output = app.run(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: a usage mistake");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.trim().is_empty(), "{args:?}: says why");
        codes.push(output.status.code());
    }
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut redis.conn(1))
        .expect("KEYS");
    assert!(keys.is_empty(), "nothing written: {keys:?}");
    let ok = app.run(&["schedule", "5", "--ttl", "3153600000"]);
    assert!(ok.status.success(), "a hundred years is accepted");
    println!(
        "{}",
        serde_json::json!({"test": "schedule_refusals", "refused": codes.len(), "exit_codes": codes, "keys_written": 0})
    );
}
