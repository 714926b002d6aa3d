//! Everything one run measured, and the lookups the tables, targets and chart share.

use crate::floor::{FloorRun, SingleCommits};
use crate::measure::{MillionRun, OursRun};
use crate::options::Options;
use crate::php::PhpRun;
use crate::steady::Latency;

pub struct Results {
    pub options: Options,
    pub floors: Vec<FloorRun>,
    pub ours: Vec<OursRun>,
    pub single: Option<SingleCommits>,
    pub steady: Option<Latency>,
    pub lateness: Option<Latency>,
    pub million: Option<MillionRun>,
    pub php: Vec<PhpRun>,
}

impl Results {
    pub fn new(options: Options) -> Self {
        Self {
            options,
            floors: Vec::new(),
            ours: Vec::new(),
            single: None,
            steady: None,
            lateness: None,
            million: None,
            php: Vec::new(),
        }
    }

    pub fn ours(&self, size: usize, workers: usize) -> Option<&OursRun> {
        self.ours
            .iter()
            .find(|r| r.size == size && r.workers == workers)
    }

    pub fn floor(&self, size: usize) -> Option<&FloorRun> {
        self.floors.iter().find(|r| r.size == size)
    }

    pub fn php(&self, size: usize) -> Option<&PhpRun> {
        self.php.iter().find(|r| r.size == size)
    }

    /// The physical limit for a burst: the later of Redis's emission (in that run) and the
    /// database floor, in ms.
    pub fn limit_ms(&self, run: &OursRun) -> Option<u64> {
        let floor = self.floor(run.size)?.drain_ms?;
        Some(run.emission_ms?.max(floor))
    }

    /// Drain / max(emission, floor).
    pub fn over_limit(&self, run: &OursRun) -> Option<f64> {
        Some(run.drain_ms? as f64 / self.limit_ms(run)?.max(1) as f64)
    }

    /// How many times faster than the PHP command (its drain over ours, same size).
    pub fn speed_up(&self, run: &OursRun) -> Option<f64> {
        Some(self.php(run.size)?.drain_ms? as f64 / run.drain_ms?.max(1) as f64)
    }

    /// Every correctness problem any section found.
    pub fn problems(&self) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        all.extend(self.floors.iter().flat_map(|r| r.problems.clone()));
        all.extend(self.ours.iter().flat_map(|r| r.problems.clone()));
        all.extend(self.single.iter().flat_map(|r| r.problems.clone()));
        all.extend(self.steady.iter().flat_map(|r| r.problems.clone()));
        all.extend(self.lateness.iter().flat_map(|r| r.problems.clone()));
        all.extend(self.million.iter().flat_map(|r| r.problems.clone()));
        all.extend(self.php.iter().flat_map(|r| r.problems.clone()));
        all
    }
}
