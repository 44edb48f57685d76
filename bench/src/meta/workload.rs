//! The operation sequences of one scope, shared by the cluster load and the state-machine
//! baseline so that both apply the same deltas and reads.
//!
//! File `i` (from 0) is `f<i>` in the benchmark directory of shard `shards[i % shards.len()]`;
//! creates make files `0..files`; stats look up, renames rename (to `r<i>`, same
//! directory) and unlinks remove files `0..ops`.

use std::time::Duration;

use hdrhistogram::Histogram;
use kiseki_namespace::{Delta, InodeId, NamespaceId, NewAttributes, RenameFlags, Timestamp};

/// The measured operations, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Op {
    /// Exclusive create of a new file.
    Create,
    /// Lookup of a file by name (stat of a path).
    Stat,
    /// Paging through the directories.
    Readdir,
    /// Rename within the directory.
    Rename,
    /// Unlink of the renamed file.
    Unlink,
}

/// Every operation, in the order a scope runs them.
pub(crate) const OPS: [Op; 5] = [Op::Create, Op::Stat, Op::Readdir, Op::Rename, Op::Unlink];

impl Op {
    /// The name used in case names.
    pub fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Stat => "stat",
            Op::Readdir => "readdir",
            Op::Rename => "rename",
            Op::Unlink => "unlink",
        }
    }
}

/// Name of the benchmark directory in each shard's root.
pub(crate) const DIRECTORY_NAME: &[u8] = b"bench";

/// One operation's figures: operations (entries, for readdir) done, the wall time they
/// took, and the latency of each (each page, for readdir) in nanoseconds.
#[derive(Debug, Clone)]
pub(crate) struct OpFigures {
    pub count: u64,
    pub elapsed: Duration,
    pub latency_ns: Histogram<u64>,
}

impl OpFigures {
    pub fn new() -> OpFigures {
        OpFigures {
            count: 0,
            elapsed: Duration::ZERO,
            latency_ns: latency_histogram(),
        }
    }

    /// Operations (or entries) per second.
    pub fn per_second(&self) -> f64 {
        if self.elapsed.is_zero() {
            0.0
        } else {
            self.count as f64 / self.elapsed.as_secs_f64()
        }
    }

    /// A latency quantile in microseconds.
    pub fn quantile_us(&self, quantile: f64) -> f64 {
        if self.latency_ns.is_empty() {
            0.0
        } else {
            self.latency_ns.value_at_quantile(quantile) as f64 / 1000.0
        }
    }

    /// Adds the figures of work that ran in parallel: counts add up, the time is the
    /// longest.
    pub fn merge_parallel(&mut self, other: &OpFigures) {
        self.count += other.count;
        self.elapsed = self.elapsed.max(other.elapsed);
        let _ = self.latency_ns.add(&other.latency_ns);
    }
}

/// A histogram of nanoseconds from 1 ns to 10 minutes, 3 significant digits.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("static histogram bounds")
}

/// Records `elapsed` (at least 1 ns).
pub(crate) fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let _ = histogram.record((elapsed.as_nanos() as u64).max(1));
}

/// The operations of one scope.
#[derive(Debug, Clone)]
pub(crate) struct Workload {
    /// Files created (and readdir's entries, over all directories).
    pub files: u64,
    /// Files stat'ed, renamed and unlinked (at most `files`).
    pub ops: u64,
    /// The shards in scope.
    pub shards: Vec<u64>,
}

/// The time every delta carries (the leader would stamp it; here it is fixed).
const TIME: Timestamp = Timestamp::new(1_700_000_000, 0);

impl Workload {
    /// How many times `op` runs (entries listed, for readdir).
    pub fn count(&self, op: Op) -> u64 {
        match op {
            Op::Create | Op::Readdir => self.files,
            Op::Stat | Op::Rename | Op::Unlink => self.ops.min(self.files),
        }
    }

    /// The position in `shards` of file `index`'s shard.
    pub fn position(&self, index: u64) -> usize {
        (index % self.shards.len() as u64) as usize
    }

    /// Files in the directory of the shard at `position`.
    pub fn files_at(&self, position: usize) -> u64 {
        let shards = self.shards.len() as u64;
        self.files / shards + u64::from((position as u64) < self.files % shards)
    }

    /// The name of file `index`.
    pub fn name(index: u64) -> Vec<u8> {
        format!("f{index:08}").into_bytes()
    }

    /// The name file `index` is renamed to.
    pub fn renamed(index: u64) -> Vec<u8> {
        format!("r{index:08}").into_bytes()
    }

    /// The benchmark directory of a shard.
    pub fn mkdir() -> Delta {
        Delta::Mkdir {
            parent: InodeId::ROOT,
            name: DIRECTORY_NAME.to_vec(),
            attributes: attributes(0o755),
        }
    }

    /// The exclusive create of file `index` in `directory`.
    pub fn create(directory: InodeId, index: u64) -> Delta {
        Delta::Create {
            parent: directory,
            name: Self::name(index),
            attributes: attributes(0o644),
            exclusive: true,
        }
    }

    /// The rename of file `index` within `directory` of shard `shard`.
    pub fn rename(shard: u64, directory: InodeId, index: u64) -> Delta {
        Delta::Rename {
            source_namespace: NamespaceId(shard),
            from_parent: directory,
            from_name: Self::name(index),
            to_parent: directory,
            to_name: Self::renamed(index),
            flags: RenameFlags::default(),
            ctime: TIME,
        }
    }

    /// The unlink of renamed file `index` in `directory`.
    pub fn unlink(directory: InodeId, index: u64) -> Delta {
        Delta::Unlink {
            parent: directory,
            name: Self::renamed(index),
            ctime: TIME,
        }
    }
}

fn attributes(mode: u32) -> NewAttributes {
    NewAttributes {
        mode,
        uid: 1000,
        gid: 1000,
        time: TIME,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_spread_over_the_shards_in_scope() {
        let workload = Workload {
            files: 10,
            ops: 20,
            shards: vec![1, 2, 3],
        };
        assert_eq!(workload.count(Op::Stat), 10);
        assert_eq!(workload.position(4), 1);
        let per_shard: Vec<u64> = (0..3).map(|position| workload.files_at(position)).collect();
        assert_eq!(per_shard, vec![4, 3, 3]);
        let mut counted = [0u64; 3];
        for index in 0..workload.files {
            counted[workload.position(index)] += 1;
        }
        assert_eq!(counted.to_vec(), per_shard);
    }
}
