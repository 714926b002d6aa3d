//! The tables: a summary per burst size with the targets (printed, in `docs/bench/results.md`
//! and between the markers of `docs/performance.md`), and the details of every run (CPU per
//! process, the database's counters, memory), which `docs/bench/results.md` adds.

use std::fmt::Write as _;

use crate::database::{COUNTERS, ROWS_EXAMINED};
use crate::process::cpu_line;
use crate::results::Results;
use crate::targets;

fn secs(ms: Option<u64>) -> String {
    ms.map(|m| format!("{:.2} s", m as f64 / 1000.0))
        .unwrap_or_else(|| "-".into())
}

fn mb(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1} MB", k as f64 / 1024.0))
        .unwrap_or_else(|| "-".into())
}

fn times(x: Option<f64>, digits: usize) -> String {
    x.map(|x| format!("{x:.digits$} x"))
        .unwrap_or_else(|| "-".into())
}

/// The drain per burst size against its limits, then the targets, then the latency sections.
pub fn summary(r: &Results) -> String {
    let mut t = String::new();
    let workers = &r.options.workers;
    let mut head = "| burst | Redis emission | database floor | order-expire drain | drain / max(emission, floor) | orders/s | peak RSS".to_string();
    let mut rule = "|---:|---:|---:|---:|---:|---:|---:".to_string();
    for w in workers.iter().filter(|w| **w > 1) {
        let _ = write!(head, " | drain, {w} workers");
        rule.push_str("|---:");
    }
    head.push_str(" | PHP command drain | speed-up |");
    rule.push_str("|---:|---:|");
    let _ = writeln!(t, "{head}\n{rule}");
    for size in &r.options.sizes {
        let one = r
            .ours(*size, 1)
            .or_else(|| r.ours.iter().find(|o| o.size == *size));
        let php = r.php(*size);
        let _ = write!(
            t,
            "| {size} | {} | {} | {} | {} | {} | {}",
            secs(one.and_then(|o| o.emission_ms)),
            secs(r.floor(*size).and_then(|f| f.drain_ms)),
            secs(one.and_then(|o| o.drain_ms)),
            times(one.and_then(|o| r.over_limit(o)), 2),
            one.and_then(|o| o.drain_ms)
                .map(|d| format!("{:.0}", *size as f64 / (d.max(1) as f64 / 1000.0)))
                .unwrap_or_else(|| "-".into()),
            mb(one.and_then(|o| o.peak_rss_kib.first().copied().flatten())),
        );
        for w in workers.iter().filter(|w| **w > 1) {
            let _ = write!(t, " | {}", secs(r.ours(*size, *w).and_then(|o| o.drain_ms)));
        }
        let php_cell = match php {
            None => "not run".to_string(),
            Some(p) if p.drain_ms.is_some() => secs(p.drain_ms),
            Some(p) => format!("stalled at {} of {}", p.cancelled, p.size),
        };
        let _ = writeln!(
            t,
            " | {php_cell} | {} |",
            times(one.and_then(|o| r.speed_up(o)), 0)
        );
    }
    let _ = writeln!(t);
    if let Some(size) = r
        .options
        .sizes
        .iter()
        .copied()
        .filter(|s| *s <= 100_000)
        .max()
    {
        let one = r.ours(size, 1);
        let _ = writeln!(
            t,
            "CPU seconds from the deadline to the last commit of the {size} burst: {}; the floor's run: {}.\n",
            one.map(|o| cpu_line(&o.cpu)).unwrap_or_else(|| "-".into()),
            r.floor(size)
                .map(|f| cpu_line(&f.cpu))
                .unwrap_or_else(|| "-".into())
        );
    }
    if let (Some(s), Some(d)) = (&r.steady, &r.single) {
        let _ = writeln!(
            t,
            "Steady 1,000 events/s for {} s: event-to-commit p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} orders); the database alone, one order per transaction at the same rate over {} connections: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms.\n",
            r.options.steady_seconds,
            s.p50_ms,
            s.p99_ms,
            s.max_ms,
            s.orders,
            r.options.connections,
            d.p50_ms,
            d.p99_ms,
            d.max_ms
        );
    }
    if let Some(l) = &r.lateness {
        let _ = writeln!(
            t,
            "Lateness after the deadline among {} other keys with a TTL: {} orders, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms.\n",
            r.options.lateness_keys, l.orders, l.p50_ms, l.p99_ms, l.max_ms
        );
    }
    if let Some(m) = &r.million {
        let _ = writeln!(
            t,
            "Memory of pending orders, {} orders expiring at once through one worker: RSS idle before any order {}, with every order pending {}, peak {}: {} per order beyond the idle base. Emission {}, drain {}.\n",
            m.size,
            mb(m.base_kib),
            mb(m.pending_kib),
            mb(m.peak_kib),
            m.bytes_per_order()
                .map(|b| format!("{b:.1} bytes"))
                .unwrap_or_else(|| "-".into()),
            secs(m.emission_ms),
            secs(m.drain_ms)
        );
    }
    let _ = writeln!(t, "| target | this run | |\n|---|---|---|");
    for v in targets::judge(r) {
        let _ = writeln!(t, "| {} | {} | {} |", v.target, v.measured, v.word());
    }
    t
}

/// Every run: times, memory, CPU seconds per process over the measured window, and the
/// database's counters over the same window.
pub fn details(r: &Results) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| burst | run | emission | drain | peak RSS per worker | CPU seconds (deadline to last commit) | {} | {ROWS_EXAMINED} / one worker's |",
        COUNTERS.join(" | ")
    );
    let _ = writeln!(
        t,
        "|---:|---|---:|---:|---|---|{}---:|",
        "---:|".repeat(COUNTERS.len())
    );
    let counter_cells = |c: &crate::database::Counters| {
        COUNTERS
            .iter()
            .map(|n| {
                c.get(n)
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into())
            })
            .collect::<Vec<_>>()
            .join(" | ")
    };
    for size in &r.options.sizes {
        if let Some(f) = r.floor(*size) {
            let _ = writeln!(
                t,
                "| {size} | floor, {} connections | | {} | | {} | {} | |",
                r.options.connections,
                secs(f.drain_ms),
                cpu_line(&f.cpu),
                counter_cells(&f.counters)
            );
        }
        let base = r.ours(*size, 1).and_then(|o| o.counters.get(ROWS_EXAMINED));
        for w in &r.options.workers {
            let Some(o) = r.ours(*size, *w) else { continue };
            let rss = o
                .peak_rss_kib
                .iter()
                .map(|k| mb(*k))
                .collect::<Vec<_>>()
                .join(", ");
            let mut notes = if o.write_paths.is_empty() {
                String::new()
            } else {
                format!(" (write_path {})", o.write_paths.join(", "))
            };
            if o.settled_ms.is_none() {
                notes.push_str(" (still learning the orders at the deadline)");
            }
            let _ = writeln!(
                t,
                "| {size} | order-expire, {w} worker(s){notes} | {} | {} | {rss} | {} | {} | {} |",
                secs(o.emission_ms),
                if o.drain_ms.is_some() {
                    secs(o.drain_ms)
                } else {
                    format!("stalled at {} of {size}", o.cancelled)
                },
                cpu_line(&o.cpu),
                counter_cells(&o.counters),
                times(
                    base.zip(o.counters.get(ROWS_EXAMINED))
                        .map(|(a, b)| b as f64 / a.max(1) as f64),
                    2
                )
            );
        }
    }
    if !r.php.is_empty() {
        let _ = writeln!(
            t,
            "\n| burst | Redis emission | PHP command drain | its CPU seconds | its peak RSS |\n|---:|---:|---:|---:|---:|"
        );
        for p in &r.php {
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} |",
                p.size,
                secs(p.emission_ms),
                if p.drain_ms.is_some() {
                    secs(p.drain_ms)
                } else {
                    format!("stalled at {} of {}", p.cancelled, p.size)
                },
                p.cpu_s
                    .map(|c| format!("{c:.1}"))
                    .unwrap_or_else(|| "-".into()),
                mb(p.peak_rss_kib)
            );
        }
    }
    t
}

/// `docs/bench/results.md`: where and how the numbers were taken, the summary and the details.
pub fn document(r: &Results, header: &str) -> String {
    format!("{header}\n\n{}\n## Every run\n\n{}", summary(r), details(r))
}
