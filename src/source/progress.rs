//! How far a long reconciliation pass has got: the orders examined out of those counted at its
//! start, the rate, and an estimate of the time left.
//!
//! A sweep over a large backlog (after an outage, say) can take minutes; without a word an
//! operator cannot tell a slow pass from a stuck one. The pass reports to a [`Progress`]: the
//! command draws a bar on a terminal (`cmd::sweep`), and everywhere else [`LogProgress`] writes a
//! structured `sweep_progress` log line every few seconds once the pass has lasted that long, so
//! that short passes (nearly all of them) say nothing more than before.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a pass reports as it goes.
pub(crate) trait Progress: Send + Sync {
    /// The pass starts, with `total` orders to examine (counted at its start: orders paid or
    /// cancelled meanwhile make the pass examine fewer).
    fn start(&self, total: u64);
    /// `examined` orders so far.
    fn advance(&self, examined: u64);
    /// The pass is over, having examined `examined` orders.
    fn finish(&self, examined: u64);
}

/// How long a pass runs before its first progress line, and the time between two lines.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(3);

/// Progress as log lines: `sweep_progress` with `examined`, `total`, `rate_per_s`, `eta_s` and
/// `elapsed_s`, every [`LOG_EVERY`] once the pass has lasted that long, and a last one
/// (`done = true`, `total` then the orders examined) when any was written.
pub(crate) struct LogProgress {
    /// Which pass, for the line: `sweep` (the command) or `sweep at start` (the worker's).
    pass: &'static str,
    state: Mutex<LogState>,
}

struct LogState {
    started: Instant,
    total: u64,
    /// When the last line was written; `None` before the first.
    last: Option<Instant>,
}

impl LogProgress {
    pub(crate) fn new(pass: &'static str) -> Self {
        Self {
            pass,
            state: Mutex::new(LogState {
                started: Instant::now(),
                total: 0,
                last: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LogState> {
        match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl Progress for LogProgress {
    fn start(&self, total: u64) {
        let mut state = self.state();
        state.started = Instant::now();
        state.total = total;
    }

    fn advance(&self, examined: u64) {
        let mut state = self.state();
        let now = Instant::now();
        let since = state.last.unwrap_or(state.started);
        if now.duration_since(since) < LOG_EVERY {
            return;
        }
        state.last = Some(now);
        let elapsed = now.duration_since(state.started);
        let rate = Rate::of(examined, elapsed);
        // The count was taken at the start; a pass may find a few more than counted.
        let total = state.total.max(examined);
        tracing::info!(
            event = "sweep_progress",
            pass = self.pass,
            examined,
            total,
            rate_per_s = rate.per_second(),
            eta_s = rate.eta(total - examined),
            elapsed_s = elapsed.as_secs(),
            done = false,
            "{}: {examined} of {total} overdue unpaid orders examined",
            self.pass
        );
    }

    fn finish(&self, examined: u64) {
        let state = self.state();
        if state.last.is_none() {
            return;
        }
        let elapsed = state.started.elapsed();
        tracing::info!(
            event = "sweep_progress",
            pass = self.pass,
            examined,
            total = examined,
            rate_per_s = Rate::of(examined, elapsed).per_second(),
            eta_s = 0_u64,
            elapsed_s = elapsed.as_secs(),
            done = true,
            "{}: done, {examined} overdue unpaid orders examined",
            self.pass
        );
    }
}

/// Orders per second over a pass so far.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rate(f64);

impl Rate {
    pub(crate) fn of(examined: u64, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64();
        Self(if seconds > 0.0 {
            examined as f64 / seconds
        } else {
            0.0
        })
    }

    /// Whole orders per second.
    pub(crate) fn per_second(self) -> u64 {
        self.0 as u64
    }

    /// Seconds until `left` more orders are examined at this rate (0 when nothing is left or
    /// nothing was examined yet).
    pub(crate) fn eta(self, left: u64) -> u64 {
        if self.0 > 0.0 {
            (left as f64 / self.0).ceil() as u64
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Rate;
    use std::time::Duration;

    #[test]
    fn the_estimate_follows_the_rate() {
        let rate = Rate::of(10_000, Duration::from_secs(4));
        assert_eq!(rate.per_second(), 2500);
        assert_eq!(rate.eta(5000), 2);
        assert_eq!(rate.eta(0), 0);
        assert_eq!(Rate::of(0, Duration::ZERO).eta(100), 0);
    }
}
