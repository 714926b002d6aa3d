//! The subcommands, one module each, so that `main.rs` only parses the command line and calls
//! one of them.
//!
//! * [`run`]: `order-expire run` (the default), the worker (`crate::worker`) until a stop
//!   signal.
//! * [`check`]: `order-expire check`, the resolved settings and a probe of both servers; exits
//!   non-zero when something would stop the worker.
//! * [`sweep`]: `order-expire sweep`, one reconciliation pass by hand (after an outage, or with
//!   `--dry-run` to see what is pending), written through the worker's queue and dispatcher.
//! * [`status`]: `order-expire status`, what an operator asks first (anyone listening, the
//!   workers alive, anything overdue), a verdict and an exit status for monitoring.
//! * [`schedule`]: `order-expire schedule`, writes an order's key exactly as Laravel's cache
//!   would (used by the demo, the tests and services not written in PHP).
//! * `scrape`: a running worker's endpoint read over HTTP, bounded: `status` reads each
//!   worker's readiness and lateness there, `check` whether the metrics port is held by one.

pub mod check;
pub mod run;
pub mod schedule;
mod scrape;
pub mod status;
pub mod sweep;
