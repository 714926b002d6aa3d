//! Rate limits for warnings that outside input can repeat at will.
//!
//! A buggy or hostile client that writes 20k malformed order keys must not write 20k warnings:
//! the log would bury everything else and cost more than the events. Each such warning goes
//! through a [`Throttle`]: the first few in a window are logged, the rest only counted, and the
//! next warning logged carries how many were left out (the stop summary has the totals).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most `burst` occurrences logged per `window`.
#[derive(Debug)]
pub(crate) struct Throttle {
    window: Duration,
    burst: u32,
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    logged: u32,
    suppressed: u64,
}

/// Whether one occurrence is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Log it, saying that `suppressed` similar ones before it were not logged.
    Log { suppressed: u64 },
    /// Count it only.
    Suppress,
}

impl Throttle {
    /// Ten a minute: enough to see what is wrong, few enough to keep the log readable.
    pub(crate) fn per_minute() -> Self {
        Self::new(10, Duration::from_secs(60))
    }

    pub(crate) fn new(burst: u32, window: Duration) -> Self {
        Self {
            window,
            burst,
            state: Mutex::new(Window {
                started: Instant::now(),
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Decides about one occurrence now.
    pub(crate) fn admit(&self) -> Admission {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Admission {
        let mut window = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if now.duration_since(window.started) >= self.window {
            window.started = now;
            window.logged = 0;
        }
        if window.logged < self.burst {
            window.logged += 1;
            Admission::Log {
                suppressed: std::mem::take(&mut window.suppressed),
            }
        } else {
            window.suppressed += 1;
            Admission::Suppress
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_a_burst_per_window_and_counts_the_rest() {
        let throttle = Throttle::new(2, Duration::from_secs(60));
        let start = Instant::now();
        assert_eq!(throttle.admit_at(start), Admission::Log { suppressed: 0 });
        assert_eq!(throttle.admit_at(start), Admission::Log { suppressed: 0 });
        for _ in 0..5 {
            assert_eq!(throttle.admit_at(start), Admission::Suppress);
        }
        let later = start + Duration::from_secs(61);
        assert_eq!(throttle.admit_at(later), Admission::Log { suppressed: 5 });
        assert_eq!(throttle.admit_at(later), Admission::Log { suppressed: 0 });
        assert_eq!(throttle.admit_at(later), Admission::Suppress);
    }
}
