//! Baseline: the scope's operations applied to `kiseki_namespace::NamespaceState` alone,
//! in this process, on one thread: one state per shard in scope, each with the shard's
//! configuration. Only the apply (or read) calls are timed; their sum is the elapsed
//! time, so the figure is what the state machine itself can do without consensus, log,
//! network or client.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kiseki_namespace::{Delta, InodeId, NamespaceState};
use kiseki_shard_host::{shard_namespace_config, READDIR_ENTRIES_MAX};

use super::workload::{record, Op, OpFigures, Workload, OPS};

struct Shard {
    state: NamespaceState,
    directory: InodeId,
    index: u64,
}

impl Shard {
    fn apply(&mut self, delta: &Delta) -> anyhow::Result<Duration> {
        self.index += 1;
        let begun = Instant::now();
        let applied = self.state.apply(self.index, delta);
        let elapsed = begun.elapsed();
        applied.with_context(|| format!("state machine refused {delta:?}"))?;
        Ok(elapsed)
    }
}

/// Runs every operation of `workload`; figures in [`OPS`] order.
pub(crate) fn run(workload: &Workload) -> anyhow::Result<Vec<OpFigures>> {
    let mut shards = Vec::with_capacity(workload.shards.len());
    for &shard in &workload.shards {
        let mut state = NamespaceState::new(shard_namespace_config(shard))?;
        let applied = state.apply(1, &Workload::mkdir())?;
        let Some(directory) = applied.inode else {
            bail!("mkdir returned no inode");
        };
        shards.push(Shard {
            state,
            directory,
            index: 1,
        });
    }
    let mut figures = Vec::with_capacity(OPS.len());
    for op in OPS {
        let mut op_figures = OpFigures::new();
        if op == Op::Readdir {
            for shard in &shards {
                readdir(shard, &mut op_figures)?;
            }
        } else {
            for index in 0..workload.count(op) {
                let position = workload.position(index);
                let shard_id = workload.shards[position];
                let shard = &mut shards[position];
                let directory = shard.directory;
                let elapsed = match op {
                    Op::Create => shard.apply(&Workload::create(directory, index))?,
                    Op::Rename => shard.apply(&Workload::rename(shard_id, directory, index))?,
                    Op::Unlink => shard.apply(&Workload::unlink(directory, index))?,
                    Op::Stat | Op::Readdir => {
                        let name = Workload::name(index);
                        let begun = Instant::now();
                        let found = shard.state.lookup(directory, &name);
                        let elapsed = begun.elapsed();
                        found.context("state machine lookup")?;
                        elapsed
                    }
                };
                op_figures.count += 1;
                op_figures.elapsed += elapsed;
                record(&mut op_figures.latency_ns, elapsed);
            }
        }
        figures.push(op_figures);
    }
    Ok(figures)
}

/// Pages through the shard's directory as a client does (pages of the service's maximum).
fn readdir(shard: &Shard, figures: &mut OpFigures) -> anyhow::Result<()> {
    let mut after = 0;
    loop {
        let begun = Instant::now();
        let page = shard
            .state
            .readdir(shard.directory, after, READDIR_ENTRIES_MAX as usize);
        let elapsed = begun.elapsed();
        let page = page.context("state machine readdir")?;
        figures.elapsed += elapsed;
        record(&mut figures.latency_ns, elapsed);
        let Some(last) = page.last() else { return Ok(()) };
        after = last.cookie;
        figures.count += page.len() as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_every_operation() {
        let workload = Workload {
            files: 50,
            ops: 20,
            shards: vec![1, 2],
        };
        let figures = run(&workload).expect("baseline");
        let counts: Vec<u64> = figures.iter().map(|figures| figures.count).collect();
        assert_eq!(counts, vec![50, 20, 50, 20, 20]);
    }
}
