//! The Laravel 8 fixture app (`fixtures/laravel-app` on Debian's php-laravel-framework and
//! php-pgsql) on `DB_CONNECTION=pgsql`: its own migrations make the schema on a private
//! PostgreSQL 15, Eloquent and `Cache::store('redis')->put()` place the orders, order-expire
//! cancels the expired ones, and the `jobs` rows it writes in the cancel transaction are run by
//! Laravel's own `php artisan queue:work`.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::pgsql::{PgDb, PgServer, env_text};
use common::{LaravelApp, RedisServer, wait_until};

const WAIT: Duration = Duration::from_secs(90);

/// Places `n` orders through the Laravel app with keys expiring after `ttl` s; their ids.
fn place(laravel: &LaravelApp, n: usize, ttl: u64) -> Vec<u64> {
    let out = laravel.artisan(&["orders:place", &n.to_string(), &format!("--ttl={ttl}")]);
    let json: serde_json::Value =
        serde_json::from_str(out.trim()).expect("orders:place prints JSON");
    json["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .filter_map(serde_json::Value::as_u64)
        .collect()
}

async fn rows(db: &PgDb, sql: &str) -> Vec<(i64, i64)> {
    db.client()
        .await
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_placed_by_laravel_on_postgresql_expire_once_and_their_jobs_run_in_queue_work() {
    let redis = RedisServer::start();
    let pg = PgServer::start();
    let db = pg.create_empty_db().await;
    let laravel = LaravelApp::new(&env_text(
        redis.port,
        &db,
        "QUEUE_CONNECTION=database\nORDER_EXPIRE_DISPATCH=App\\Jobs\\OrderExpired\nORDER_EXPIRE_TTL=600",
    ));
    laravel.artisan(&["migrate", "--force"]);
    let mut worker = laravel.app.start_worker(&[]);
    // Paid before its key expires (in 5 s): the app's payment, through its own connection.
    let paid = place(&laravel, 1, 5)[0];
    db.client()
        .await
        .execute(
            "UPDATE orders SET status = 1 WHERE id = $1",
            &[&i64::try_from(paid).expect("id")],
        )
        .await
        .expect("pay");
    let expiring = place(&laravel, 40, 1);
    let later = place(&laravel, 5, 600);
    wait_until(WAIT, "the expired unpaid orders cancelled", || async {
        db.count_status(2).await == expiring.len()
    })
    .await;
    // The paid order's key has expired too by now.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let statuses: BTreeMap<u64, i64> = db.statuses().await.into_iter().collect();
    for id in &expiring {
        assert_eq!(statuses[id], 2, "order {id} cancelled");
    }
    assert_eq!(statuses[&paid], 1, "the paid order stays paid");
    for id in &later {
        assert_eq!(
            statuses[id], 0,
            "order {id}, whose key lives on, stays unpaid"
        );
    }
    // The products were made with 1000 each by orders:place; what is not cancelled still holds.
    db.assert_stock_returned(1000).await;
    // Eloquent's timestamp(0) without time zone, written in the app's time zone (UTC).
    let fresh = db
        .client()
        .await
        .query_one(
            "SELECT COUNT(*) FROM orders WHERE status = 2 AND updated_at >= created_at \
             AND abs(extract(epoch FROM (updated_at - (now() AT TIME ZONE 'UTC')))) < 120",
            &[],
        )
        .await
        .expect("updated_at")
        .get::<_, i64>(0);
    assert_eq!(
        fresh,
        expiring.len() as i64,
        "updated_at as Eloquent writes it"
    );
    assert_eq!(worker.stop(WAIT).code(), Some(0));

    // One jobs row per cancelled order, run by Laravel's own worker.
    let jobs = rows(&db, "SELECT COUNT(*), COUNT(DISTINCT payload) FROM jobs").await;
    assert_eq!(jobs, vec![(expiring.len() as i64, expiring.len() as i64)]);
    laravel.artisan(&[
        "queue:work",
        "database",
        "--stop-when-empty",
        "--tries=1",
        "--quiet",
    ]);
    let runs = rows(
        &db,
        "SELECT order_id, status_seen::int8 FROM expired_job_runs ORDER BY order_id",
    )
    .await;
    let ran: Vec<u64> = runs
        .iter()
        .map(|(id, _)| u64::try_from(*id).expect("id"))
        .collect();
    assert_eq!(ran, expiring, "one job ran per cancelled order");
    assert!(
        runs.iter().all(|(_, status)| *status == 2),
        "each job saw its order cancelled: {runs:?}"
    );
    let left = rows(&db, "SELECT COUNT(*), 0::int8 FROM jobs").await;
    assert_eq!(left, vec![(0, 0)], "the queue is empty");
    let failed = rows(&db, "SELECT COUNT(*), 0::int8 FROM failed_jobs").await;
    assert_eq!(failed, vec![(0, 0)], "Laravel's worker failed none");
}
