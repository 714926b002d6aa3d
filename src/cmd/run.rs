//! `order-expire run` (the default): the worker, until a stop signal.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cli::{RunArgs, WritePathArg};
use crate::config::Settings;
use crate::error::Error;
use crate::shutdown;
use crate::worker::{self, WorkerOptions};

/// The worker's tuning as the command line gives it.
pub fn options(args: &RunArgs) -> WorkerOptions {
    WorkerOptions {
        concurrency: usize::from(args.concurrency),
        queue_size: args.queue_size,
        configure_redis: args.configure_redis,
        stop_timeout: Duration::from_secs(args.stop_timeout),
        batch_size: usize::from(args.batch_size),
        batch_wait: Duration::from_millis(args.batch_wait_ms),
        lock_wait: args.write_path == WritePathArg::LockWait,
    }
}

/// Runs the worker until SIGTERM, SIGINT or SIGHUP.
pub async fn run(settings: &Settings, args: &RunArgs) -> Result<(), Error> {
    let stop = CancellationToken::new();
    shutdown::cancel_on_signal(stop.clone())
        .map_err(|e| Error::Runtime(format!("cannot install signal handlers: {e}")))?;
    worker::run(settings, &options(args), stop)
        .await
        .map(|_| ())
}
