//! What a process costs, read from `/proc`: CPU seconds and resident memory.
//!
//! The benchmark names every process it reports by role (worker 1, redis-server, mariadbd, the
//! benchmark itself) and takes their CPU at the start and the end of a measured window, so a
//! figure is what that process spent on that run and nothing else on the machine.

use std::fs;

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds (user + system) process `pid` has used so far; `None` once it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    stat_cpu(&format!("/proc/{pid}/stat"))
}

/// CPU seconds the benchmark's own process (all its threads) has used so far.
pub fn own_cpu_seconds() -> Option<f64> {
    stat_cpu("/proc/self/stat")
}

fn stat_cpu(path: &str) -> Option<f64> {
    let stat = fs::read_to_string(path).ok()?;
    // The fields after the command name (which may hold spaces and parentheses) start after the
    // last ')': state is the first, utime the 12th and stime the 13th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / TICKS_PER_SECOND)
}

/// The largest resident set process `pid` has had (`VmHWM`), in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// The resident set of process `pid` now (`VmRSS`), in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A process the benchmark reports on: its role and pid (`None` for the benchmark itself).
#[derive(Debug, Clone)]
pub struct Watched {
    pub role: String,
    pub pid: Option<u32>,
}

impl Watched {
    pub fn new(role: impl Into<String>, pid: Option<u32>) -> Self {
        Self {
            role: role.into(),
            pid,
        }
    }

    /// The benchmark's own process: the emission subscriber, the log readers, the floor's client.
    pub fn benchmark() -> Self {
        Self::new("benchmark", None)
    }

    fn cpu(&self) -> Option<f64> {
        match self.pid {
            Some(pid) => cpu_seconds(pid),
            None => own_cpu_seconds(),
        }
    }
}

/// CPU seconds per process at one moment.
pub struct CpuSample {
    watched: Vec<Watched>,
    seconds: Vec<Option<f64>>,
}

impl CpuSample {
    pub fn take(watched: &[Watched]) -> Self {
        Self {
            seconds: watched.iter().map(Watched::cpu).collect(),
            watched: watched.to_vec(),
        }
    }

    /// CPU seconds each process used since `self`, by role, in the order they were given; a
    /// process that could not be read either time is left out.
    pub fn until_now(&self) -> Vec<(String, f64)> {
        self.watched
            .iter()
            .zip(&self.seconds)
            .filter_map(|(w, before)| Some((w.role.clone(), w.cpu()? - (*before)?)))
            .collect()
    }
}

/// `role a.aa s, role b.bb s` for a log line or a table cell.
pub fn cpu_line(cpu: &[(String, f64)]) -> String {
    cpu.iter()
        .map(|(role, s)| format!("{role} {s:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}
