//! The targets of the performance issue, each judged met or missed from this run's own numbers.
//!
//! A missed target is reported, never a failure of the run: only a section's correctness check
//! (every order cancelled exactly once, stock exact) makes the benchmark exit non-zero.

use crate::database::ROWS_EXAMINED;
use crate::results::Results;

/// One target and how this run did.
pub struct Verdict {
    pub target: String,
    pub measured: String,
    /// `None` when the run did not measure it.
    pub met: Option<bool>,
}

impl Verdict {
    pub fn word(&self) -> &'static str {
        match self.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        }
    }
}

/// The burst sizes the targets name (100k and 200k, those of them the run has); a run with
/// neither (the smoke run) is judged at its two largest sizes instead, so every check still
/// runs. The last one is the size of the memory target.
fn target_sizes(results: &Results) -> Vec<usize> {
    let sizes = &results.options.sizes;
    let named: Vec<usize> = [100_000, 200_000]
        .into_iter()
        .filter(|s| sizes.contains(s))
        .collect();
    if !named.is_empty() {
        return named;
    }
    let mut sorted = sizes.clone();
    sorted.sort_unstable();
    sorted.dedup();
    let from = sorted.len().saturating_sub(2);
    sorted.split_off(from)
}

fn k(size: usize) -> String {
    if size >= 1000 && size.is_multiple_of(1000) {
        format!("{}k", size / 1000)
    } else {
        size.to_string()
    }
}

pub fn judge(results: &Results) -> Vec<Verdict> {
    let sizes = target_sizes(results);
    let large = sizes.last().copied().unwrap_or(0);
    let mut out = Vec::new();
    for size in sizes.iter().copied() {
        let run = results.ours(size, 1);
        let limit = run.and_then(|r| results.limit_ms(r));
        let ratio = run.and_then(|r| results.over_limit(r));
        out.push(Verdict {
            target: format!("{} drain <= 1.2 x max(emission, floor)", k(size)),
            measured: match (run.and_then(|r| r.drain_ms), limit, ratio) {
                (Some(d), Some(l), Some(x)) => format!("{d} ms against {l} ms: {x:.2} x"),
                _ => "-".into(),
            },
            met: ratio.map(|x| x <= 1.2),
        });
    }
    for size in sizes.iter().copied() {
        let speed_up = results.ours(size, 1).and_then(|r| results.speed_up(r));
        out.push(Verdict {
            target: format!("{} at least 100 x the PHP command", k(size)),
            measured: speed_up
                .map(|x| format!("{x:.0} x"))
                .unwrap_or_else(|| "-".into()),
            met: speed_up.map(|x| x >= 100.0),
        });
    }
    let rss = results
        .ours(large, 1)
        .and_then(|r| r.peak_rss_kib.first().copied().flatten());
    out.push(Verdict {
        target: format!("peak RSS <= 30 MB at {}", k(large)),
        measured: rss
            .map(|kib| format!("{:.1} MB", kib as f64 / 1024.0))
            .unwrap_or_else(|| "-".into()),
        met: rss.map(|kib| kib <= 30 * 1024),
    });
    let per_order = results.million.as_ref().and_then(|m| m.bytes_per_order());
    out.push(Verdict {
        target: format!(
            "<= 32 bytes per pending order beyond the idle base{}",
            results
                .million
                .as_ref()
                .map(|m| format!(" ({} orders)", k(m.size)))
                .unwrap_or_default()
        ),
        measured: per_order
            .map(|b| format!("{b:.1} bytes"))
            .unwrap_or_else(|| "-".into()),
        met: per_order.map(|b| b <= 32.0),
    });
    let steady_p99 = results.steady.as_ref().map(|s| s.p99_ms);
    let db_p99 = results.single.as_ref().map(|s| s.p99_ms);
    out.push(Verdict {
        target: "steady 1k/s p99 <= 1.5 x the database's single-commit p99".into(),
        measured: match (steady_p99, db_p99) {
            (Some(s), Some(d)) => format!("{s:.2} ms against {d:.2} ms: {:.2} x", s / d),
            _ => "-".into(),
        },
        met: steady_p99.zip(db_p99).map(|(s, d)| s <= 1.5 * d),
    });
    out.push(Verdict {
        target: "steady 1k/s p99 <= 5 ms".into(),
        measured: steady_p99
            .map(|s| format!("{s:.2} ms"))
            .unwrap_or_else(|| "-".into()),
        met: steady_p99.map(|s| s <= 5.0),
    });
    for size in sizes.iter().copied() {
        let one = results.ours(size, 1);
        for workers in results.options.workers.iter().filter(|w| **w > 1) {
            let many = results.ours(size, *workers);
            let drains = one
                .and_then(|o| o.drain_ms)
                .zip(many.and_then(|m| m.drain_ms));
            out.push(Verdict {
                target: format!("{} with {workers} workers drains no slower than 1", k(size)),
                measured: drains
                    .map(|(a, b)| format!("{b} ms against {a} ms"))
                    .unwrap_or_else(|| "-".into()),
                met: drains.map(|(a, b)| b <= a),
            });
            let rows = one
                .and_then(|o| o.counters.get(ROWS_EXAMINED))
                .zip(many.and_then(|m| m.counters.get(ROWS_EXAMINED)));
            out.push(Verdict {
                target: format!(
                    "{} with {workers} workers: rows examined and locked ({ROWS_EXAMINED}) <= 1.1 x one worker's",
                    k(size)
                ),
                measured: rows
                    .map(|(a, b)| format!("{b} against {a}: {:.2} x", b as f64 / a.max(1) as f64))
                    .unwrap_or_else(|| "-".into()),
                met: rows.map(|(a, b)| b as f64 <= 1.1 * a as f64),
            });
        }
    }
    out
}
