//! What systemd hears from the worker under `Type=notify`: `READY=1` once it is subscribed and
//! has checked MySQL, a short `STATUS=` line, `WATCHDOG=1` while its loops move, and
//! `STOPPING=1` as soon as a stop signal comes.
//!
//! The watchdog pings come from [`supervise`], every half of `WATCHDOG_USEC` (as systemd
//! advises), and only while no work loop is stuck (see [`crate::stats::health`]): a
//! subscription waiting on a frozen Redis or a write blocked on a row lock for longer than
//! `WatchdogSec` stops them, and systemd restarts the worker. `WATCHDOG_USEC` is honoured only
//! when `WATCHDOG_PID` is unset or names this process, as `sd_watchdog_enabled(3)` does. Without
//! `NOTIFY_SOCKET` nothing is sent; the loop still logs when loops get stuck and move again.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::stats::Stats;

/// systemd's watchdog interval (`WATCHDOG_USEC`), when it applies to this process.
pub(crate) fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|interval| !interval.is_zero())
}

/// Tells systemd the worker is up, with its first status line.
pub(crate) fn ready(stats: &Stats) {
    send(&[
        NotifyState::Ready,
        NotifyState::Status(&status_line(stats, &[])),
    ]);
}

/// Tells systemd the worker is stopping: sent by the signal handler before any task sees the
/// stop, so it comes before the drain.
pub(crate) fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: writing the orders already received"),
    ]);
}

/// Sends `states`; a failure is only worth a debug line (systemd may be gone at shutdown).
fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "cannot notify systemd");
    }
}

/// The live summary for `STATUS=`, e.g. `listening on 1 node; 1234 cancelled; queue 0`.
fn status_line(stats: &Stats, stuck: &[String]) -> String {
    let (up, expected) = stats.health.subscriptions();
    let listening = match (up, expected) {
        (1, 1) => "listening on 1 node".to_string(),
        (up, expected) if up == expected => format!("listening on {up} nodes"),
        (up, 1) => format!("listening on {up} of 1 node"),
        (up, expected) => format!("listening on {up} of {expected} nodes"),
    };
    let mut line = format!(
        "{listening}; {} cancelled; queue {}",
        Stats::get(&stats.cancelled),
        stats.backlog.len()
    );
    if !stuck.is_empty() {
        // The names only: the status changes when a loop gets stuck, not every second.
        let names: Vec<&str> = stuck
            .iter()
            .map(|s| s.split(" (").next().unwrap_or(s))
            .collect();
        line.push_str("; stuck: ");
        line.push_str(&names.join(", "));
    }
    line
}

/// Until the process exits: pings the watchdog (every half of `watchdog`) while no loop is
/// stuck, keeps `STATUS=` current, and logs when loops get stuck and when they move again.
/// Once `shutdown` fires (`STOPPING=1` is sent by the signal handler), the stop has its own
/// deadline: the pings go on whatever the loops do.
pub(crate) async fn supervise(
    stats: Arc<Stats>,
    watchdog: Option<Duration>,
    shutdown: CancellationToken,
) {
    let period = match watchdog {
        Some(interval) => (interval / 2).max(Duration::from_millis(10)),
        None => stats.health.beat_every(),
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_stuck = false;
    let mut last_status = String::new();
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled(), if !stopping => {
                stopping = true;
                continue;
            }
        }
        if stopping {
            if watchdog.is_some() {
                send(&[NotifyState::Watchdog]);
            }
            continue;
        }
        let stuck = stats.health.stalled();
        match (stuck.is_empty(), was_stuck) {
            (true, true) => {
                tracing::info!(event = "loops_moving", "every work loop moves again");
                was_stuck = false;
            }
            (false, false) => {
                tracing::warn!(event = "loops_stuck", loops = %stuck.join(", "),
                    stuck_after_ms = stats.health.stall_after().as_millis() as u64,
                    watchdog = if watchdog.is_some() { "withheld" } else { "off" },
                    "a work loop has waited on a server for too long; /healthz answers 503 and systemd's watchdog (if any) is no longer pinged");
                was_stuck = true;
            }
            _ => {}
        }
        if stuck.is_empty() && watchdog.is_some() {
            send(&[NotifyState::Watchdog]);
        }
        let status = status_line(&stats, &stuck);
        if status != last_status {
            send(&[NotifyState::Status(&status)]);
            last_status = status;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_sums_up_the_worker() {
        let stats = Arc::new(Stats::default());
        let node = stats.health.expect_node("127.0.0.1:6379");
        assert_eq!(
            status_line(&stats, &[]),
            "listening on 0 of 1 node; 0 cancelled; queue 0"
        );
        node.subscribed(true);
        Stats::add_n(&stats.cancelled, 1234);
        assert_eq!(
            status_line(&stats, &["writer (no progress for 3.0 s)".into()]),
            "listening on 1 node; 1234 cancelled; queue 0; stuck: writer"
        );
    }
}
