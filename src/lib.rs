#![warn(missing_docs, unreachable_pub)]
//! order-expire: a drop-in replacement for Laravel's `php artisan order:expire`.
//!
//! A Laravel app stores `Cache::store('redis')->put('ORDER_CONFIRM:'.$id, $id, $ttl)` when an order
//! is placed. When that key expires the order is still unpaid: this worker hears Redis's keyspace
//! notification, cancels the order and returns its stock, exactly once, writing the app's own
//! `orders` and `products` tables as Eloquent would.
//!
//! # Layout
//!
//! The data path is a pipeline, Laravel config -> event sources -> key parsing -> queue ->
//! database writer (MySQL or PostgreSQL), and the modules are layered so that every dependency
//! points down (checked by `tests/layering.rs`):
//!
//! ```text
//! cmd, cli          the subcommands and the command line       (main.rs only parses and calls)
//! worker            wires sources -> queue -> dispatcher -> writer; the stop deadline
//! error             the top-level Error wrapping each layer's; one line, one exit code
//! source, sink      pipeline stages
//! key, queue, job,  transforms and the contract with the app
//!   contract
//! redis, mysql,     server adapters, and the HTTP endpoint; `db` is the seam between the
//!   pgsql, db,      stages and the two database adapters
//!   endpoint
//! config, ...       the leaf (crates/config), and small shared pieces (stats, systemd...)
//! ```
//!
//! * [`config`] (the leaf, its own crate in `crates/config`, re-exported here): reads the Laravel app's
//!   configuration the way Laravel boots (`.env` with phpdotenv's rules and `env()` mapping;
//!   then its configuration cache, else its `config/*.php` evaluated with a PHP parser, else the
//!   stock files of its Laravel version) and resolves every [`config::Settings`] the worker needs
//!   as Laravel's managers would. Its errors are [`config::ConfigError`].
//! * `redis` and `mysql`: the server adapters. `redis` opens connections to the app's cache
//!   Redis and holds every command we send (`PTTL`, `EXISTS`, `SETEX`, `CONFIG`, `SUBSCRIBE`,
//!   `PUBSUB`, `CLUSTER SHARDS`, `SENTINEL`, `ROLE`): `redis::RedisTarget` is one server,
//!   `redis::RedisServers` the cache Redis whatever its topology (the servers whose events must
//!   be heard: the one server, a cluster's masters, the Sentinel's master), and
//!   `redis::RoutedConnection` sends each key's command to the master of its slot;
//!   `redis::server` tells Redis from Valkey (and each one's own version) in `INFO server`;
//!   `mysql` holds the pool with Laravel's session settings, the schema check, and every
//!   statement against the app's tables (`mysql::orders`), the readiness check on a
//!   connection of its own (`mysql::probe`), the member slots (named locks) through which the
//!   replicas of one orders table find each other (`mysql::members`), which server it is
//!   (`mysql::server`: MySQL or MariaDB, and its version, from which what differs is decided)
//!   and which way the writer locks rows on it (`mysql::write_path`: `SKIP LOCKED` or
//!   waiting). `pgsql` is the same for an app on PostgreSQL: the pool with PostgresConnector's
//!   session and TLS as libpq reads `sslmode`, the schema and privilege check, the statements,
//!   the readiness probe, the member slots as advisory locks, and errors told apart by SQLSTATE.
//!   `db` is the seam between them and the stages: one enum per concept (`db::Database`,
//!   `db::Conn`, `db::Tx`, `db::orders`, `db::jobs`, `db::members`, `db::probe`) with a variant
//!   per adapter, chosen once from the app's connection, so there is one writer, one sweep and one
//!   deadline watcher for both databases. Each has its own error type. `endpoint` serves
//!   `/metrics`, `/healthz` and `/readyz` over HTTP (`--metrics-addr`); its error is
//!   `EndpointError`.
//! * `key`: turns the full Redis key Laravel wrote (`<REDIS_PREFIX><CACHE_PREFIX>:ORDER_CONFIRM:<id>`)
//!   back into an order id (canonical ids only), and builds it for `schedule`; keys of other
//!   types with a job are read with the same rules.
//! * `queue`: the typed queue between the sources and the dispatcher: each order with its origin
//!   (event, deadline, sweep) and when it became due, in 16 bytes; the full-queue policy per
//!   origin, the fixed-size dedup window, the id order of what is queued at once, and
//!   per-origin counters.
//! * [`job`]: Laravel queue job payloads per Laravel version; `contract`: what cancels an order
//!   and what keeps it (the mode and the guard `check` and the worker state).
//! * `source`: where expired orders come from: `source::keyspace` keeps a subscription to
//!   `__keyevent@<db>__:expired` on one server alive across disconnects; `source::topology`
//!   keeps one per master, re-reading the cluster's or the Sentinel's topology and moving the
//!   subscriptions when the masters change; `source::deadline` makes Redis expire
//!   each order key at its deadline; `source::reconcile` reconciles the database with the cache
//!   for events that were never delivered, and `source::progress` says how far a long pass has
//!   got (log lines; `cmd::sweep` draws a bar on a terminal).
//! * `sink`: `sink::dispatch` hands queued orders to concurrent batch writes (dedup, retries with
//!   backoff, the split of a failing batch, parking of an order MySQL refuses for good, the stop
//!   deadline), generic over the writer so it is unit-tested without servers; `sink::share`
//!   decides which orders this worker writes when replicas run (blocks of ids per live member;
//!   the others' set aside and taken over when their owner leaves or leaves them unwritten);
//!   `sink::writer` is the exactly-once transaction that cancels the still-unpaid orders of a
//!   batch and returns their stock; `sink::jobs` adds the app's Laravel job for each cancelled order to that
//!   transaction (the `jobs` row, or an outbox row that `sink::outbox` pushes to a redis queue
//!   after the commit); `sink::key_jobs` queues the Laravel job of an expired key of another type
//!   (`ORDER_EXPIRE_ON_<TYPE>`) with the id from the key, and writes nothing else.
//! * [`error`]: the top-level [`Error`], which wraps each layer's error; [`Error::render`] is the
//!   one line printed before exiting and [`Error::exit_code`] its status (2 only for usage
//!   mistakes).
//! * `worker`: wires source -> queue -> dispatcher -> writer and runs until the stop signal.
//! * [`cmd`]: the subcommands (`run`, `check`, `sweep`, `status`, `schedule`); `cmd::status`
//!   reads what an operator asks first from the servers and the workers' endpoints (the HTTP
//!   client and the Prometheus reading are the commands' own, `cmd::scrape`); [`cli`]: the
//!   command line and its `--help`. `main.rs` only parses the arguments and calls them.
//! * `backoff`, `shutdown` (signals), [`logging`] (text lines escape control characters),
//!   `throttle` (rate limits for warnings outside input can repeat): small shared pieces.
//!   `stats` is what the worker knows about itself: the metrics every stage records (one
//!   Prometheus registry, handles made up front), the queue's backlog, and the health of the
//!   work loops (heartbeats: liveness) and of the subscriptions and MySQL (readiness).
//!   `systemd` tells systemd `READY=1`, `STATUS=`, `STOPPING=1`, and pings its watchdog while the
//!   work loops move.

mod backoff;
pub mod cli;
pub mod cmd;
pub use order_expire_config as config;
mod contract;
mod db;
mod endpoint;
pub mod error;
pub mod job;
mod key;
pub mod logging;
mod mysql;
mod pgsql;
mod queue;
mod redis;
mod shutdown;
mod sink;
mod source;
mod stats;
mod systemd;
mod throttle;
mod worker;

pub use error::Error;
