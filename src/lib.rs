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
//! The data path is a small pipeline, and the modules follow it:
//!
//! * [`config`]: reads the Laravel app's configuration the way Laravel boots (`.env` with
//!   phpdotenv semantics and `env()` mapping; then its configuration cache, else its
//!   `config/*.php` evaluated with a PHP parser, else the stock files of its Laravel version) and
//!   resolves every [`config::Settings`] the worker needs as Laravel's managers would.
//! * [`source`]: where expired orders come from. [`source::keyspace`] keeps a subscription to
//!   `__keyevent@<db>__:expired` alive across disconnects; [`source::deadline`] makes Redis expire
//!   each order key at its deadline; [`source::reconcile`] reconciles the database with the cache for
//!   events that were never delivered; [`source::redis`] opens connections to the app's Redis.
//! * [`key`]: the transform: turns the full Redis key Laravel wrote
//!   (`<REDIS_PREFIX><CACHE_PREFIX>:ORDER_CONFIRM:<id>`) back into an order id, and builds it for
//!   `schedule`.
//! * [`sink`]: the MySQL writer: one transaction per order that cancels it only if it is still
//!   unpaid and returns its stock, so duplicate events and concurrent workers are harmless.
//! * [`queue`]: the typed queue between the sources and the dispatcher: each order with its
//!   origin (event, deadline, sweep), the full-queue policy per origin, dedup, counters.
//! * [`worker`]: wires source -> key -> sink with a bounded queue, a fixed number of concurrent
//!   writers, retries with backoff, and a clean shutdown on SIGTERM/SIGINT.
//! * [`cmd`]: the subcommands: [`cmd::check`] (`order-expire check`, the resolved settings and a
//!   probe of both servers), [`cmd::sweep`] (`order-expire sweep`, one reconciliation pass by
//!   hand), [`cmd::schedule`] (writes an order's key exactly as Laravel's cache would: used by
//!   the demo, the tests and non-PHP services).
//! * [`cli`]: the command line and its `--help`; `main.rs` only parses it and wires the above.
//! * [`backoff`], [`shutdown`], [`logging`] (text lines escape control characters),
//!   [`throttle`] (rate limits for warnings outside input can repeat), [`stats`]: small shared
//!   pieces.
//! * [`error`]: the error type every fallible entry point returns; each message is one line that
//!   says what failed, where, and how to fix it.

mod backoff;
pub mod cli;
pub mod cmd;
pub mod config;
mod contract;
pub mod error;
pub mod job;
mod key;
pub mod logging;
mod mysql;
mod queue;
mod redis;
mod shutdown;
mod sink;
mod source;
mod stats;
mod throttle;
mod worker;

pub use error::Error;
