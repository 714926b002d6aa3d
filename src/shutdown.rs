//! Turns SIGTERM and SIGINT into a cancellation every task watches.
//!
//! supervisor and systemd stop the worker with SIGTERM and wait `stopwaitsecs` before SIGKILL;
//! on the first signal we stop taking events, let the writes in flight finish, and exit 0.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Spawns a task that cancels `token` on the first SIGTERM or SIGINT.
pub fn cancel_on_signal(token: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            () = token.cancelled() => return,
        };
        tracing::info!(
            signal = name,
            "stopping: no new events are taken, writes in flight finish"
        );
        token.cancel();
    });
    Ok(())
}
