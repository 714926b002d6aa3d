//! Tests of the dispatch settings as `Settings` resolves them from a `.env` and Laravel's stock
//! config files (apart from `dispatch.rs`, which `settings.rs` uses).

use std::path::Path;

use crate::config::dispatch::{DispatchArgument, DispatchSettings, QueueTarget};
use crate::config::environment::Environment;
use crate::config::error::ConfigError;
use crate::config::settings::{Overrides, Settings};
use crate::config::version::LaravelVersion;

/// The dispatch settings of a `.env` with the stock config files of Laravel `major`.
fn dispatch(text: &str, major: &str) -> Result<Option<DispatchSettings>, ConfigError> {
    let env = Environment::parse(
        &format!("CACHE_DRIVER=redis\nCACHE_STORE=redis\nDB_CONNECTION=mysql\n{text}"),
        Box::new(|_| None),
    )
    .expect("valid .env");
    Settings::resolve_for(
        Path::new("/nonexistent-app/.env"),
        &env,
        &Overrides::new(),
        LaravelVersion::given(major),
    )
    .map(|s| s.dispatch)
}

fn error(text: &str, major: &str) -> String {
    match dispatch(text, major) {
        Err(e) => e.to_string(),
        Ok(d) => panic!("expected an error, got {d:?}"),
    }
}

#[test]
fn unset_dispatches_nothing() {
    assert_eq!(dispatch("QUEUE_CONNECTION=sync", "8").expect("ok"), None);
}

#[test]
fn laravel_8_to_10_default_to_sync_which_is_refused_with_the_fix() {
    for major in ["8", "9", "10"] {
        let e = error("ORDER_EXPIRE_DISPATCH=App\\Jobs\\OrderExpired", major);
        assert!(e.contains("sync driver"), "{major}: {e}");
        assert!(e.contains("QUEUE_CONNECTION"), "{major}: {e}");
        assert_eq!(e.lines().count(), 1);
    }
}

#[test]
fn laravel_11_defaults_to_the_database_queue_with_its_env_names() {
    let d = dispatch(
        "ORDER_EXPIRE_DISPATCH=\\App\\Jobs\\OrderExpired\nDB_QUEUE_TABLE=queue_jobs\nDB_QUEUE=orders\nDB_PREFIX=shop_",
        "11",
    )
    .expect("ok")
    .expect("dispatch");
    assert_eq!(d.class, "App\\Jobs\\OrderExpired");
    assert_eq!(d.connection, "database");
    assert_eq!(d.queue, "orders");
    assert_eq!(d.property, "order");
    assert!(
        matches!(d.argument, DispatchArgument::Model { ref model, .. } if model == "App\\Models\\Order")
    );
    assert_eq!(
        d.target,
        QueueTarget::Database {
            table: "queue_jobs".into()
        }
    );
}

#[test]
fn the_redis_queue_uses_its_own_connection_database_and_prefix() {
    let d = dispatch(
        "ORDER_EXPIRE_DISPATCH=App\\Jobs\\OrderExpired\nQUEUE_CONNECTION=redis\nREDIS_DB=5\nREDIS_CACHE_DB=1\nREDIS_QUEUE=mails\nAPP_NAME=\"Mall Shop\"\nORDER_EXPIRE_DISPATCH_ARGUMENT=id",
        "8",
    )
    .expect("ok")
    .expect("dispatch");
    assert_eq!(d.queue, "mails");
    assert_eq!(d.property, "orderId");
    assert_eq!(d.argument, DispatchArgument::Id);
    let QueueTarget::Redis { redis, prefix } = &d.target else {
        panic!("{:?}", d.target);
    };
    assert_eq!(redis.database, 5);
    assert_eq!(prefix, "mall_shop_database_");
}

#[test]
fn drivers_order_expire_cannot_write_are_refused() {
    for (queue, words) in [
        ("sqs", "sqs driver"),
        ("beanstalkd", "beanstalkd driver"),
        ("nowhere", "not configured"),
    ] {
        let e = error(
            &format!("ORDER_EXPIRE_DISPATCH=App\\Jobs\\OrderExpired\nQUEUE_CONNECTION={queue}"),
            "8",
        );
        assert!(e.contains(words), "{queue}: {e}");
        assert!(e.contains("QUEUE_CONNECTION"), "{queue}: {e}");
    }
    let e = error(
        "ORDER_EXPIRE_DISPATCH=App\\Jobs\\OrderExpired\nQUEUE_CONNECTION=database\nORDER_EXPIRE_DISPATCH_ARGUMENT=object",
        "8",
    );
    assert!(e.contains("ORDER_EXPIRE_DISPATCH_ARGUMENT"), "{e}");
    let e = error("ORDER_EXPIRE_DISPATCH='App\\Jobs\\Order Expired'", "8");
    assert!(e.contains("ORDER_EXPIRE_DISPATCH"), "{e}");
}
