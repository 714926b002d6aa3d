//! Tests of the dispatch settings as `Settings` resolves them from a `.env` and Laravel's stock
//! config files (apart from `dispatch.rs`, which `settings.rs` uses).

use std::path::Path;

use crate::dispatch::{DispatchArgument, DispatchSettings, KeyJobSettings, QueueTarget};
use crate::environment::Environment;
use crate::error::ConfigError;
use crate::settings::{Overrides, Settings};
use crate::version::LaravelVersion;

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

/// The other key types' jobs of a `.env` (Laravel 8's stock config), with `process` set in the
/// process environment.
fn key_jobs(
    text: &str,
    process: &'static [(&'static str, &'static str)],
) -> Result<Vec<KeyJobSettings>, ConfigError> {
    let names: Vec<&str> = process.iter().map(|(name, _)| *name).collect();
    let env = Environment::parse(
        &format!("CACHE_DRIVER=redis\nDB_CONNECTION=mysql\n{text}"),
        Box::new(move |name| {
            process
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_string())
        }),
    )
    .expect("valid .env")
    .with_process_names(&names);
    Settings::resolve_for(
        Path::new("/nonexistent-app/.env"),
        &env,
        &Overrides::new(),
        LaravelVersion::given("8"),
    )
    .map(|s| s.key_jobs)
}

fn key_jobs_error(text: &str) -> String {
    match key_jobs(text, &[]) {
        Err(e) => e.to_string(),
        Ok(j) => panic!("expected an error, got {j:?}"),
    }
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

#[test]
fn other_key_types_get_their_job_with_or_without_the_order_job() {
    let jobs = key_jobs(
        "QUEUE_CONNECTION=database\nORDER_EXPIRE_ON_ORDER_OTHEREVENT=\\App\\Jobs\\OrderIdExpired\nORDER_EXPIRE_ON_ORDER_OTHEREVENT_PROPERTY=orderId\nORDER_EXPIRE_ON_COUPON_HOLD=App\\Jobs\\CouponReleased\nORDER_EXPIRE_ON_EMPTY=",
        &[],
    )
    .expect("ok");
    assert_eq!(
        jobs,
        vec![
            KeyJobSettings {
                key_type: "COUPON_HOLD".into(),
                class: "App\\Jobs\\CouponReleased".into(),
                property: "id".into(),
                connection: "database".into(),
                queue: "default".into(),
                target: QueueTarget::Database {
                    table: "jobs".into()
                },
            },
            KeyJobSettings {
                key_type: "ORDER_OTHEREVENT".into(),
                class: "App\\Jobs\\OrderIdExpired".into(),
                property: "orderId".into(),
                connection: "database".into(),
                queue: "default".into(),
                target: QueueTarget::Database {
                    table: "jobs".into()
                },
            },
        ]
    );
    // With the order job, on the same connection and queue settings.
    let jobs = key_jobs(
        "ORDER_EXPIRE_DISPATCH=App\\Jobs\\OrderExpired\nQUEUE_CONNECTION=redis\nORDER_EXPIRE_DISPATCH_QUEUE=events\nORDER_EXPIRE_ON_ORDER_OTHEREVENT=App\\Jobs\\X",
        &[],
    )
    .expect("ok");
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].queue, "events");
    assert!(matches!(jobs[0].target, QueueTarget::Redis { .. }));
    assert_eq!(key_jobs("QUEUE_CONNECTION=sync", &[]).expect("ok"), vec![]);
}

#[test]
fn other_key_types_are_found_in_the_process_environment_too() {
    let jobs = key_jobs(
        "QUEUE_CONNECTION=database",
        &[
            ("ORDER_EXPIRE_ON_ORDER_OTHEREVENT", "App\\Jobs\\X"),
            ("ORDER_EXPIRE_ON_ORDER_OTHEREVENT_PROPERTY", "orderId"),
        ],
    )
    .expect("ok");
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].key_type, "ORDER_OTHEREVENT");
    assert_eq!(jobs[0].property, "orderId");
}

#[test]
fn other_key_types_are_refused_as_the_order_job_is() {
    let e = key_jobs_error("QUEUE_CONNECTION=sync\nORDER_EXPIRE_ON_ORDER_OTHEREVENT=App\\Jobs\\X");
    assert!(
        e.contains("sync driver") && e.contains("QUEUE_CONNECTION"),
        "{e}"
    );
    let e = key_jobs_error("QUEUE_CONNECTION=sqs\nORDER_EXPIRE_ON_ORDER_OTHEREVENT=App\\Jobs\\X");
    assert!(e.contains("sqs driver"), "{e}");
    let e = key_jobs_error(
        "QUEUE_CONNECTION=database\nORDER_EXPIRE_ON_ORDER_OTHEREVENT='App\\Jobs\\Not A Class'",
    );
    assert!(e.contains("ORDER_EXPIRE_ON_ORDER_OTHEREVENT"), "{e}");
    let e = key_jobs_error(
        "QUEUE_CONNECTION=database\nORDER_EXPIRE_ON_ORDER_OTHEREVENT=App\\Jobs\\X\nORDER_EXPIRE_ON_ORDER_OTHEREVENT_PROPERTY=order-id",
    );
    assert!(
        e.contains("ORDER_EXPIRE_ON_ORDER_OTHEREVENT_PROPERTY"),
        "{e}"
    );
    let e = key_jobs_error("QUEUE_CONNECTION=database\nORDER_EXPIRE_ON_COUPON_PROPERTY=id");
    assert!(
        e.contains("ORDER_EXPIRE_ON_COUPON_PROPERTY") && e.contains("set ORDER_EXPIRE_ON_COUPON"),
        "{e}"
    );
    let e = key_jobs_error("QUEUE_CONNECTION=database\nORDER_EXPIRE_ON_ORDER_CONFIRM=App\\Jobs\\X");
    assert!(e.contains("ORDER_EXPIRE_DISPATCH"), "{e}");
    let e = key_jobs_error("QUEUE_CONNECTION=database\nORDER_EXPIRE_ON_ORDER.EVENT=App\\Jobs\\X");
    assert!(e.contains("ORDER_EXPIRE_ON_ORDER.EVENT"), "{e}");
    assert_eq!(e.lines().count(), 1);
}

#[test]
fn an_encrypted_key_job_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("app/Jobs")).expect("mkdir");
    std::fs::write(
        dir.path().join("app/Jobs/Secret.php"),
        "<?php class Secret implements ShouldQueue, ShouldBeEncrypted {}",
    )
    .expect("write");
    std::fs::write(
        dir.path().join(".env"),
        "CACHE_DRIVER=redis\nQUEUE_CONNECTION=database\nORDER_EXPIRE_ON_ORDER_OTHEREVENT=App\\Jobs\\Secret\n",
    )
    .expect("write .env");
    let e = Settings::load(&dir.path().join(".env"), &Overrides::new()).expect_err("refused");
    assert!(e.to_string().contains("ShouldBeEncrypted"), "{e}");
}
