//! Turns stop signals into a cancellation every task watches, and keeps other signals from
//! killing the worker silently.
//!
//! supervisor and systemd stop the worker with SIGTERM and wait `stopwaitsecs` before SIGKILL;
//! on the first stop signal we stop taking events, write what was received until
//! `--stop-timeout`, and exit 0. SIGHUP (a closed terminal, `kill -HUP`) and SIGQUIT (a graceful
//! stop for php-fpm and nginx) stop the same way: the worker has no configuration to reload.
//! A second stop signal means the operator will not wait: the process exits at once with
//! [`FORCED_EXIT`]; MySQL rolls back the transactions in flight, so nothing is half-written.
//! SIGUSR1 and SIGUSR2, whose default action would end the process without a word, are logged
//! and ignored.

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::systemd;

/// Exit status after a second stop signal: 128 + SIGINT, as a shell reports an interrupted job.
pub(crate) const FORCED_EXIT: i32 = 130;

/// What a signal asks of the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meaning {
    Stop,
    Ignore,
}

/// The signals handled, with their names and meaning.
const HANDLED: [(SignalKind, &str, Meaning); 6] = [
    (SignalKind::terminate(), "SIGTERM", Meaning::Stop),
    (SignalKind::interrupt(), "SIGINT", Meaning::Stop),
    (SignalKind::hangup(), "SIGHUP", Meaning::Stop),
    (SignalKind::quit(), "SIGQUIT", Meaning::Stop),
    (SignalKind::user_defined1(), "SIGUSR1", Meaning::Ignore),
    (SignalKind::user_defined2(), "SIGUSR2", Meaning::Ignore),
];

/// Spawns a task that cancels `token` on the first stop signal (telling systemd `STOPPING=1`
/// first) and exits the process on the second; it logs every signal it handles.
pub(crate) fn cancel_on_signal(token: CancellationToken) -> std::io::Result<()> {
    let mut streams = Vec::with_capacity(HANDLED.len());
    for (kind, name, meaning) in HANDLED {
        streams.push((signal(kind)?, name, meaning));
    }
    tokio::spawn(async move {
        loop {
            let (name, meaning) = next_signal(&mut streams).await;
            match meaning {
                Meaning::Ignore => tracing::info!(
                    event = "signal_ignored",
                    signal = name,
                    "signal ignored: SIGTERM, SIGINT, SIGHUP or SIGQUIT stop the worker"
                ),
                Meaning::Stop if !token.is_cancelled() => {
                    tracing::info!(
                        event = "stopping",
                        signal = name,
                        "stopping: no new events are taken, writes in flight finish until --stop-timeout (a second signal exits at once)"
                    );
                    systemd::stopping();
                    token.cancel();
                }
                Meaning::Stop => {
                    tracing::warn!(
                        event = "forced_exit",
                        signal = name,
                        exit_code = FORCED_EXIT,
                        "second stop signal: exiting now; the database rolls back the writes in flight, so their orders stay unpaid"
                    );
                    std::process::exit(FORCED_EXIT);
                }
            }
        }
    });
    Ok(())
}

/// Waits for the next of `streams` to deliver.
async fn next_signal(streams: &mut [(Signal, &'static str, Meaning)]) -> (&'static str, Meaning) {
    let waits = streams.iter_mut().map(|(stream, name, meaning)| {
        Box::pin(async move {
            if stream.recv().await.is_none() {
                // The runtime is shutting down: no signal comes any more.
                std::future::pending::<()>().await;
            }
            (*name, *meaning)
        })
    });
    futures_util::future::select_all(waits).await.0
}
