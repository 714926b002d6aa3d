//! The command line: what each option means, in the words a Laravel developer uses.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{Overrides, keys};
use crate::logging::LogFormat;

/// The longest `schedule --ttl`: a hundred years. Redis refuses a `SETEX` whose expiry overflows
/// its millisecond clock (about 9.2e15 s); a bound this far below it is never refused there.
pub const MAX_TTL: u64 = 100 * 365 * 24 * 3600;

/// Cancels unpaid Laravel orders when their Redis cache key expires, and returns their stock.
///
/// A drop-in replacement for `php artisan order:expire`: point it at the app's .env and it finds
/// the same Redis connection, cache database, key prefixes and MySQL credentials as the app. When
/// `ORDER_CONFIRM:<id>` expires, order `<id>` is cancelled (status 2) if it is still unpaid (status
/// 0), and its quantity goes back to products.stock, exactly once even with several workers.
///
/// Settings come from the .env (Laravel 8 defaults for anything unset); variables in the process
/// environment win over the file, and the flags below win over both.
#[derive(Debug, Parser)]
#[command(
    name = "order-expire",
    version,
    about,
    long_about,
    propagate_version = true
)]
pub struct Cli {
    /// The Laravel app's .env file, e.g. /var/www/app/.env (the app root is its folder).
    #[arg(long = "env", value_name = "FILE", global = true)]
    pub env_file: Option<PathBuf>,

    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// More logging: -v for debug, -vv for trace. Without it, RUST_LOG applies (default info).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// The worker's options (`run`).
    #[command(flatten)]
    pub run: RunArgs,

    /// The `ORDER_EXPIRE_*` schema mapping given as flags; they win over the `.env`.
    #[command(flatten)]
    pub mapping: MappingArgs,

    /// The subcommand; `None` runs the worker.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands of `order-expire`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker (the default when no command is given).
    Run,
    /// Write an order's expiry key exactly as Laravel's Cache::store('redis')->put() would.
    ///
    /// Sends `SETEX <REDIS_PREFIX><CACHE_PREFIX>:ORDER_CONFIRM:<ORDER_ID> <TTL> <value>` to the
    /// cache database. Use it from services not written in PHP, or to test a deployment.
    Schedule {
        /// The order id (orders.id), as Laravel writes it: digits, no leading zero.
        #[arg(value_name = "ORDER_ID", value_parser = crate::key::order_id_argument)]
        order_id: u64,
        /// Seconds until the key expires and the order is cancelled if still unpaid (1 to
        /// 3,153,600,000: a hundred years, well within what Redis's SETEX accepts).
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=MAX_TTL))]
        ttl: u64,
        /// The cached value; defaults to the order id, like the blog post's put().
        #[arg(long, value_name = "VALUE")]
        value: Option<String>,
    },
    /// Print the settings order-expire resolved from the app (secrets masked), the channel and
    /// key pattern it listens for, then connect to Redis and MySQL and report what it found.
    ///
    /// Exits 0 when the worker can run, 1 otherwise.
    Check {
        /// Print one JSON object instead of text (also when a connection fails).
        #[arg(long)]
        json: bool,
        /// Only resolve the settings; do not connect.
        #[arg(long)]
        no_connect: bool,
        /// Also ask the app's own Laravel (php and its vendor/ must be here) and show every
        /// resolved setting on which it and order-expire's reading differ; any difference fails.
        #[arg(long)]
        compare: bool,
    },
    /// Run one reconciliation pass: cancel unpaid orders whose deadline has passed but whose
    /// expired event was missed (worker down, Redis restarted, cache:clear).
    ///
    /// Candidates are unpaid orders created at least ORDER_EXPIRE_TTL seconds ago whose cache key
    /// no longer exists; each is cancelled through the same exactly-once transaction as an event.
    /// Prints one line per order and a summary. The worker runs the same pass at start, after
    /// every Redis reconnect and every ORDER_EXPIRE_SWEEP_INTERVAL seconds.
    Sweep {
        /// Only print what would be cancelled; write nothing to MySQL.
        #[arg(long)]
        dry_run: bool,
    },
    /// Is anyone listening, are the workers alive, is anything overdue? One line per fact, the
    /// verdict first: `ok`, `degraded: <reasons>` or `unknown: <reasons>`.
    ///
    /// Reads, from the app's settings: the subscribers of the `expired` channel and the
    /// keyspace notifications on each Redis master, the live workers (their member slots), the
    /// unpaid orders past their deadline (with ORDER_EXPIRE_TTL), the outbox backlog (with a
    /// redis queue), and each worker endpoint's readiness, lateness p99 and queue depth.
    /// Exits 0 when ok, 1 when degraded or when a deciding fact cannot be read.
    Status {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// A worker's metrics endpoint to read, HOST:PORT; repeat it or give a comma-separated
        /// list for several workers [default: ORDER_EXPIRE_METRICS_ADDR of the settings].
        #[arg(long = "metrics-addr", value_name = "HOST:PORT", value_delimiter = ',', value_parser = host_port)]
        metrics_addrs: Vec<String>,
    },
}

/// `HOST:PORT` (`[::1]:9464` for an IPv6 address), as `status --metrics-addr` takes it.
fn host_port(text: &str) -> Result<String, String> {
    let text = text.trim();
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("`{text}` is not HOST:PORT"))?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("`{text}` is not HOST:PORT (a port 1-65535)"));
    }
    Ok(text.to_string())
}

/// Options of the worker.
#[derive(Debug, Args)]
#[command(next_help_heading = "Worker")]
pub struct RunArgs {
    /// Orders written at the same time (also the number of MySQL connections).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,

    /// Order ids that may wait for a writer before new ones are refused (and logged).
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    pub queue_size: usize,

    /// If Redis has keyspace notifications off, turn them on (CONFIG SET notify-keyspace-events)
    /// instead of exiting with an explanation.
    #[arg(long)]
    pub configure_redis: bool,

    /// Most orders cancelled in one MySQL transaction (1-512). Bursts are written in batches,
    /// single events at once.
    #[arg(long, value_name = "N", default_value_t = 512, value_parser = clap::value_parser!(u16).range(1..=512))]
    pub batch_size: u16,

    /// Milliseconds a writer waits for more orders to fill a batch once it has one. 0 (the
    /// default) takes what is queued: under a burst the queue fills batches by itself, and a
    /// lone event is not delayed.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub batch_wait_ms: u64,

    /// Seconds allowed, after SIGTERM, SIGINT, SIGHUP or SIGQUIT, to finish the orders already
    /// received; then writes in flight are abandoned (MySQL rolls them back) and listed in the
    /// log. A second signal exits at once with status 130.
    #[arg(long, value_name = "SECONDS", default_value_t = 8, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub stop_timeout: u64,

    /// How a transaction locks its orders: `auto` skips the rows another transaction holds
    /// (the app in the middle of a payment, another worker) with FOR UPDATE SKIP LOCKED where
    /// the server has it (MySQL 8.0.1+, MariaDB 10.6+), and tries them again shortly after;
    /// elsewhere, and with `lock-wait`, it waits for them, as every server can. The worker logs
    /// the path it runs at start (`write_path`); `check` shows it.
    #[arg(long, value_enum, value_name = "PATH", default_value_t = WritePathArg::Auto)]
    pub write_path: WritePathArg,

    /// Serve GET /metrics (Prometheus), /healthz (200 while the worker's loops run) and /readyz
    /// (200 while it is subscribed to Redis and MySQL answers, else 503 with the reason) on
    /// HOST:PORT, an IP address and a port, e.g. 127.0.0.1:9464 [ORDER_EXPIRE_METRICS_ADDR,
    /// default off].
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
}

/// `--write-path`: how the writer locks a batch's orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WritePathArg {
    /// Skip rows another transaction holds where the server can, else wait for them.
    Auto,
    /// Always wait for rows another transaction holds.
    LockWait,
}

impl Cli {
    /// The flags that override `.env` settings, keyed by the setting: the schema mapping and
    /// `--metrics-addr`.
    pub fn overrides(&self) -> Overrides {
        let mut overrides = self.mapping.overrides();
        if let Some(addr) = &self.run.metrics_addr {
            overrides.insert(keys::METRICS_ADDR, addr.clone());
        }
        overrides
    }
}

/// The schema mapping and key type. Each flag overrides the .env setting named in brackets.
#[derive(Debug, Args)]
#[command(next_help_heading = "Schema mapping (each overrides the .env setting in brackets)")]
pub struct MappingArgs {
    /// Key type after the cache prefix [ORDER_EXPIRE_KEY_TYPE, default ORDER_CONFIRM].
    #[arg(long, value_name = "TYPE", global = true)]
    pub key_type: Option<String>,
    /// Orders table [ORDER_EXPIRE_ORDERS_TABLE, default orders].
    #[arg(long, value_name = "TABLE", global = true)]
    pub orders_table: Option<String>,
    /// Order status column [ORDER_EXPIRE_ORDERS_STATUS_COLUMN, default status].
    #[arg(long, value_name = "COLUMN", global = true)]
    pub orders_status_column: Option<String>,
    /// Product column of an order [ORDER_EXPIRE_ORDERS_PRODUCT_COLUMN, default product_id].
    #[arg(long, value_name = "COLUMN", global = true)]
    pub orders_product_column: Option<String>,
    /// Quantity column of an order [ORDER_EXPIRE_ORDERS_QUANTITY_COLUMN, default quantity].
    #[arg(long, value_name = "COLUMN", global = true)]
    pub orders_quantity_column: Option<String>,
    /// Status of an unpaid order, the only one cancelled [ORDER_EXPIRE_UNPAID_STATUS, default 0].
    #[arg(long, value_name = "N", global = true)]
    pub unpaid_status: Option<String>,
    /// Status written when cancelling [ORDER_EXPIRE_CANCELLED_STATUS, default 2].
    #[arg(long, value_name = "N", global = true)]
    pub cancelled_status: Option<String>,
    /// A column of the orders table whose non-null value means paid, e.g. paid_at: such an order
    /// is never cancelled, whatever its status [ORDER_EXPIRE_PAID_COLUMN, default none].
    #[arg(long, value_name = "COLUMN", global = true)]
    pub paid_column: Option<String>,
    /// Products table [ORDER_EXPIRE_PRODUCTS_TABLE, default products].
    #[arg(long, value_name = "TABLE", global = true)]
    pub products_table: Option<String>,
    /// Stock column of a product [ORDER_EXPIRE_PRODUCTS_STOCK_COLUMN, default stock].
    #[arg(long, value_name = "COLUMN", global = true)]
    pub products_stock_column: Option<String>,
    /// Order lines table; when set, stock comes from its rows instead of the order
    /// [ORDER_EXPIRE_ITEMS_TABLE, default none].
    #[arg(long, value_name = "TABLE", global = true)]
    pub items_table: Option<String>,
    /// Order column of the items table [ORDER_EXPIRE_ITEMS_ORDER_COLUMN, default order_id].
    #[arg(long, value_name = "COLUMN", global = true)]
    pub items_order_column: Option<String>,
    /// Product column of the items table [ORDER_EXPIRE_ITEMS_PRODUCT_COLUMN, default product_id].
    #[arg(long, value_name = "COLUMN", global = true)]
    pub items_product_column: Option<String>,
    /// Quantity column of the items table [ORDER_EXPIRE_ITEMS_QUANTITY_COLUMN, default quantity].
    #[arg(long, value_name = "COLUMN", global = true)]
    pub items_quantity_column: Option<String>,
    /// The app's time zone, in which updated_at is written, as config('app.timezone')
    /// [ORDER_EXPIRE_TIMEZONE, default UTC as in Laravel 8's config/app.php].
    #[arg(long, value_name = "ZONE", global = true)]
    pub timezone: Option<String>,
    /// The TTL the app passes to put(): an unpaid order whose key is gone is overdue this long
    /// after its created_at. Turns on reconciliation [ORDER_EXPIRE_TTL, default none].
    #[arg(long, value_name = "SECONDS", global = true)]
    pub order_ttl: Option<String>,
    /// Seconds between two reconciliation sweeps [ORDER_EXPIRE_SWEEP_INTERVAL, default 60].
    #[arg(long, value_name = "SECONDS", global = true)]
    pub sweep_interval: Option<String>,
    /// The app's Laravel version, e.g. 8 or 10.48, when it cannot be read from vendor/,
    /// composer.lock or composer.json; it decides the key format (the `:` after the cache prefix
    /// exists only in 8-10) [ORDER_EXPIRE_LARAVEL_VERSION, default detected, else 8].
    #[arg(long, value_name = "VERSION", global = true)]
    pub laravel_version: Option<String>,
    /// Where Laravel's settings are read: auto (the config cache, else config/*.php evaluated
    /// by order-expire, asking the app's own Laravel for what it cannot evaluate),
    /// config-cache, laravel (always the app's own Laravel) or evaluator (never run PHP)
    /// [ORDER_EXPIRE_CONFIG_SOURCE, default auto].
    #[arg(long, value_name = "SOURCE", global = true)]
    pub config_source: Option<String>,
    /// The php binary that runs the app, for its version and to ask its Laravel
    /// [ORDER_EXPIRE_PHP, default php in PATH].
    #[arg(long, value_name = "PATH", global = true)]
    pub php: Option<String>,
    /// The app's PHP version, e.g. 8.3, when no php binary can tell: it decides PHP_VERSION_ID
    /// and the PDO attribute numbers PHP 8.5 changed [ORDER_EXPIRE_PHP_VERSION, default the
    /// php binary's, else composer.json's, else the lowest of the Laravel version].
    #[arg(long, value_name = "VERSION", global = true)]
    pub php_version: Option<String>,
    /// A Laravel job class to queue on the app's queue for every cancelled order, e.g.
    /// App\Jobs\OrderExpired: it runs what the app's observers did after $order->save()
    /// [ORDER_EXPIRE_DISPATCH, default none].
    #[arg(long, value_name = "CLASS", global = true)]
    pub dispatch: Option<String>,
    /// The Eloquent Order model the job receives [ORDER_EXPIRE_ORDER_MODEL, default App\Models\Order].
    #[arg(long, value_name = "CLASS", global = true)]
    pub order_model: Option<String>,
    /// What the job's property holds: model (the Order, with SerializesModels) or id
    /// [ORDER_EXPIRE_DISPATCH_ARGUMENT, default model].
    #[arg(long, value_name = "model|id", global = true)]
    pub dispatch_argument: Option<String>,
    /// The job's public property [ORDER_EXPIRE_DISPATCH_PROPERTY, default order, or orderId for id].
    #[arg(long, value_name = "NAME", global = true)]
    pub dispatch_property: Option<String>,
    /// The queue connection of config/queue.php [ORDER_EXPIRE_DISPATCH_CONNECTION, default queue.default].
    #[arg(long, value_name = "NAME", global = true)]
    pub dispatch_connection: Option<String>,
    /// The queue name [ORDER_EXPIRE_DISPATCH_QUEUE, default the connection's queue].
    #[arg(long, value_name = "NAME", global = true)]
    pub dispatch_queue: Option<String>,
}

impl MappingArgs {
    /// The flags given, keyed by the .env setting they override.
    pub fn overrides(&self) -> Overrides {
        [
            (keys::KEY_TYPE, &self.key_type),
            (keys::ORDERS_TABLE, &self.orders_table),
            (keys::ORDERS_STATUS_COLUMN, &self.orders_status_column),
            (keys::ORDERS_PRODUCT_COLUMN, &self.orders_product_column),
            (keys::ORDERS_QUANTITY_COLUMN, &self.orders_quantity_column),
            (keys::UNPAID_STATUS, &self.unpaid_status),
            (keys::CANCELLED_STATUS, &self.cancelled_status),
            (keys::PAID_COLUMN, &self.paid_column),
            (keys::PRODUCTS_TABLE, &self.products_table),
            (keys::PRODUCTS_STOCK_COLUMN, &self.products_stock_column),
            (keys::ITEMS_TABLE, &self.items_table),
            (keys::ITEMS_ORDER_COLUMN, &self.items_order_column),
            (keys::ITEMS_PRODUCT_COLUMN, &self.items_product_column),
            (keys::ITEMS_QUANTITY_COLUMN, &self.items_quantity_column),
            (keys::TIMEZONE, &self.timezone),
            (keys::ORDER_TTL, &self.order_ttl),
            (keys::SWEEP_INTERVAL, &self.sweep_interval),
            (keys::LARAVEL_VERSION, &self.laravel_version),
            (keys::CONFIG_SOURCE, &self.config_source),
            (keys::PHP, &self.php),
            (keys::PHP_VERSION, &self.php_version),
            (keys::DISPATCH, &self.dispatch),
            (keys::ORDER_MODEL, &self.order_model),
            (keys::DISPATCH_ARGUMENT, &self.dispatch_argument),
            (keys::DISPATCH_PROPERTY, &self.dispatch_property),
            (keys::DISPATCH_CONNECTION, &self.dispatch_connection),
            (keys::DISPATCH_QUEUE, &self.dispatch_queue),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.clone().map(|v| (key, v)))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_map_to_env_settings() {
        let cli = Cli::parse_from([
            "order-expire",
            "--env",
            "/app/.env",
            "--orders-table",
            "shop_orders",
            "--concurrency",
            "2",
            "run",
        ]);
        let overrides = cli.mapping.overrides();
        assert_eq!(
            overrides.get(keys::ORDERS_TABLE).map(String::as_str),
            Some("shop_orders")
        );
        assert_eq!(overrides.len(), 1);
        assert_eq!(cli.run.concurrency, 2);
        assert!(matches!(cli.command, Some(Command::Run)));
    }

    #[test]
    fn every_setting_names_its_real_flag() {
        let cli = Cli::command();
        let longs: Vec<String> = cli
            .get_arguments()
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect();
        for name in [
            keys::KEY_TYPE,
            keys::ORDERS_TABLE,
            keys::ORDERS_STATUS_COLUMN,
            keys::ORDERS_PRODUCT_COLUMN,
            keys::ORDERS_QUANTITY_COLUMN,
            keys::UNPAID_STATUS,
            keys::CANCELLED_STATUS,
            keys::PRODUCTS_TABLE,
            keys::PRODUCTS_STOCK_COLUMN,
            keys::ITEMS_TABLE,
            keys::ITEMS_ORDER_COLUMN,
            keys::ITEMS_PRODUCT_COLUMN,
            keys::ITEMS_QUANTITY_COLUMN,
            keys::TIMEZONE,
            keys::ORDER_TTL,
            keys::SWEEP_INTERVAL,
            keys::LARAVEL_VERSION,
            keys::CONFIG_SOURCE,
            keys::PHP,
            keys::PHP_VERSION,
            keys::DISPATCH,
            keys::ORDER_MODEL,
            keys::DISPATCH_ARGUMENT,
            keys::DISPATCH_PROPERTY,
            keys::DISPATCH_CONNECTION,
            keys::DISPATCH_QUEUE,
            keys::METRICS_ADDR,
        ] {
            assert!(
                longs.contains(&config::flag_of(name)),
                "{name}: {}",
                config::flag_of(name)
            );
        }
    }
}
