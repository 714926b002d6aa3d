//! Following a worker's JSON log as it grows: which orders it cancelled, and when.
//!
//! The benchmark knows a burst is drained from the workers' own `orders_cancelled` lines, not by
//! polling the database: a poll would add its own rows to the status counters a run is judged
//! by, and CPU to the server being measured. Each read takes only the bytes written since the
//! last one, so following a 1M-order burst costs the same per line as a small one.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// One worker's log, read so far.
pub struct LogTail {
    path: PathBuf,
    offset: u64,
    /// The end of the last read when it stopped inside a line.
    partial: Vec<u8>,
    /// Each cancelled order with the commit time (epoch µs: the line's timestamp).
    commits: Vec<(u64, i64)>,
    /// The `write_path` field of the first line that has one (how the worker splits work with
    /// others, when it says).
    write_path: Option<String>,
}

impl LogTail {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            offset: 0,
            partial: Vec::new(),
            commits: Vec::new(),
            write_path: None,
        }
    }

    /// Reads what was written since the last call.
    pub fn poll(&mut self) {
        let Ok(mut file) = File::open(&self.path) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut fresh = Vec::new();
        let Ok(read) = file.read_to_end(&mut fresh) else {
            return;
        };
        self.offset += read as u64;
        self.partial.extend_from_slice(&fresh);
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return;
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        for line in complete.split(|b| *b == b'\n') {
            self.read_line(line);
        }
    }

    fn read_line(&mut self, line: &[u8]) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
            return;
        };
        if self.write_path.is_none() {
            self.write_path = v
                .get("write_path")
                .or_else(|| v.get("fields").and_then(|f| f.get("write_path")))
                .map(|p| {
                    p.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| p.to_string())
                });
        }
        if v["event"] != "orders_cancelled" {
            return;
        }
        let Some(at) = v["timestamp"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        else {
            return;
        };
        let at = at.as_microsecond();
        if let Some(ids) = v["order_ids"].as_str() {
            self.commits.extend(
                ids.split(',')
                    .filter_map(|id| id.parse().ok())
                    .map(|id| (id, at)),
            );
        }
    }

    /// How many orders this worker has reported cancelled.
    pub fn cancelled(&self) -> usize {
        self.commits.len()
    }

    /// Each cancelled order with its commit time (epoch µs).
    pub fn commits(&self) -> &[(u64, i64)] {
        &self.commits
    }

    /// The last commit (epoch µs).
    pub fn last_commit_us(&self) -> Option<i64> {
        self.commits.iter().map(|(_, at)| *at).max()
    }

    pub fn write_path(&self) -> Option<&str> {
        self.write_path.as_deref()
    }
}

/// The exactly-once check over every worker of a run: each of `orders` reported cancelled by
/// exactly one worker, and nothing else reported. Returns what is wrong, if anything.
pub fn exactly_once(what: &str, orders: &[u64], tails: &[LogTail]) -> Vec<String> {
    let mut seen: std::collections::HashMap<u64, u32> = orders.iter().map(|id| (*id, 0)).collect();
    let mut foreign = 0usize;
    for (id, _) in tails.iter().flat_map(|t| t.commits()) {
        match seen.get_mut(id) {
            Some(times) => *times += 1,
            None => foreign += 1,
        }
    }
    let twice = seen.values().filter(|t| **t > 1).count();
    let never = seen.values().filter(|t| **t == 0).count();
    let mut problems = Vec::new();
    if twice > 0 || never > 0 || foreign > 0 {
        problems.push(format!(
            "{what}: {twice} orders reported cancelled more than once, {never} never, {foreign} unknown ids"
        ));
    }
    problems
}
