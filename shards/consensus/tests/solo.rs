//! Solo mode: a replica set of one, driven through the same `Replica` API as a replicated
//! one. Entries are applied only once their record is durable, many proposals share one
//! record, retries are deduplicated, reads wait for earlier entries, snapshots trim,
//! recovery replays exactly the durable records, and bad input is a typed error.

mod common;

use common::{Kv, Put};
use kiseki_consensus::{Action, ConsensusError, ProposalId, Replica, ReplicaConfig};

const SHARD: u64 = 7;
const NODE: u64 = 3;

fn id(client_id: u64, sequence: u64) -> ProposalId {
    ProposalId { client_id, sequence }
}

/// The host of one solo replica, with a disk that keeps what was flushed.
struct Host {
    replica: Option<Replica<Kv>>,
    config: ReplicaConfig,
    /// Records made durable, in order.
    durable: Vec<(u64, Vec<u8>)>,
    /// Records handed over and not yet durable.
    unflushed: Vec<(u64, Vec<u8>)>,
    applied: Vec<(u64, ProposalId, Option<u64>)>,
    reads: Vec<(ProposalId, u64)>,
    leaders: Vec<Option<u64>>,
    trims: usize,
    /// Bytes of every record handed over.
    persisted_bytes: usize,
}

impl Host {
    fn new(config: ReplicaConfig) -> Self {
        let replica = Replica::new(config.clone(), Kv::default()).unwrap();
        Self {
            replica: Some(replica),
            config,
            durable: Vec::new(),
            unflushed: Vec::new(),
            applied: Vec::new(),
            reads: Vec::new(),
            leaders: Vec::new(),
            trims: 0,
            persisted_bytes: 0,
        }
    }

    fn tiny() -> Self {
        Self::new(ReplicaConfig::tiny(SHARD, NODE, vec![NODE]))
    }

    fn replica(&mut self) -> &mut Replica<Kv> {
        self.replica.as_mut().unwrap()
    }

    /// Polls and carries out the actions; returns them.
    fn poll(&mut self) -> Vec<Action<Option<u64>>> {
        let actions = self.replica().poll_actions();
        for action in &actions {
            match action {
                Action::Persist { record_seq, bytes } => {
                    self.persisted_bytes += bytes.len();
                    self.unflushed.push((*record_seq, bytes.clone()));
                }
                Action::Applied {
                    index,
                    proposal_id,
                    output,
                } => self.applied.push((*index, *proposal_id, *output)),
                Action::ReadReady { read_id, index } => self.reads.push((*read_id, *index)),
                Action::Trim { below_record_seq } => {
                    self.trims += 1;
                    self.durable.retain(|(seq, _)| seq >= below_record_seq);
                }
                Action::LeaderChanged { leader } => self.leaders.push(*leader),
                Action::Send { .. } | Action::Reconfigured { .. } => panic!("a solo replica emitted {action:?}"),
            }
        }
        actions
    }

    /// Makes every handed-over record durable and reports it.
    fn flush(&mut self) {
        if let Some(&(last, _)) = self.unflushed.last() {
            self.durable.append(&mut self.unflushed);
            self.replica().persisted(last).unwrap();
        }
    }

    /// Poll, flush, poll: what a host does until the replica is quiet.
    fn settle(&mut self) {
        self.poll();
        self.flush();
        self.poll();
    }

    fn durable_records(&self) -> Vec<Vec<u8>> {
        self.durable.iter().map(|(_, bytes)| bytes.clone()).collect()
    }

    /// Crash: records not flushed are lost, except the first `surviving` of them (they
    /// reached the disk without being reported). Restart from what survived.
    fn crash_and_recover(&mut self, surviving: usize) {
        self.replica = None;
        let surviving = surviving.min(self.unflushed.len());
        let kept: Vec<_> = self.unflushed.drain(..surviving).collect();
        self.durable.extend(kept);
        self.unflushed.clear();
        // No record survived: the replica never committed anything, and starts anew.
        let replica = if self.durable.is_empty() {
            Replica::new(self.config.clone(), Kv::default())
        } else {
            Replica::recover(self.config.clone(), self.durable_records())
        };
        self.replica = Some(replica.unwrap());
    }
}

fn persists(actions: &[Action<Option<u64>>]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Persist { record_seq, .. } => Some(*record_seq),
            _ => None,
        })
        .collect()
}

fn count_applied(actions: &[Action<Option<u64>>]) -> usize {
    actions
        .iter()
        .filter(|action| matches!(action, Action::Applied { .. }))
        .count()
}

#[test]
fn a_solo_replica_leads_at_once_and_applies_only_after_persisted() {
    let mut host = Host::new(ReplicaConfig::new(SHARD, NODE, vec![NODE]));
    assert!(host.config.is_solo());
    assert!(host.replica().is_leader());
    assert_eq!(host.replica().leader(), Some(NODE));
    let actions = host.poll();
    assert_eq!(persists(&actions), vec![1], "the initial snapshot record");
    assert_eq!(host.leaders, vec![Some(NODE)]);

    host.replica().propose(Put::Put(1, 10), id(1, 1)).unwrap();
    let actions = host.poll();
    assert_eq!(persists(&actions), vec![2]);
    assert_eq!(count_applied(&actions), 0, "applied before its record was durable");
    for _ in 0..5 {
        host.replica().tick();
        let actions = host.poll();
        assert!(actions.is_empty(), "a quiet solo replica does nothing: {actions:?}");
    }
    assert_eq!((host.replica().decided_index(), host.replica().applied_index()), (0, 0));
    assert!(host.replica().state().map.is_empty());

    // The snapshot record alone is not enough.
    host.replica().persisted(1).unwrap();
    assert_eq!(count_applied(&host.poll()), 0);
    assert!(matches!(
        host.replica().persisted(3),
        Err(ConsensusError::UnknownRecord {
            record_seq: 3,
            last_seq: 2
        })
    ));
    host.replica().persisted(2).unwrap();
    assert_eq!(
        host.replica().decided_index(),
        1,
        "durable is committed: a majority of one"
    );
    host.poll();
    assert_eq!(host.applied, vec![(1, id(1, 1), None)]);
    assert_eq!(host.replica().applied_index(), 1);
    assert_eq!(host.replica().state().map.get(&1), Some(&10));
    assert_eq!(host.leaders, vec![Some(NODE)], "the leader is reported once");
    assert_eq!(host.replica().record_seqs(), (2, 2));
}

#[test]
fn a_solo_replica_takes_no_messages_and_no_reconfiguration() {
    let mut host = Host::tiny();
    host.settle();
    let error = host.replica().receive(1, b"anything").unwrap_err();
    assert!(
        matches!(error, ConsensusError::UnexpectedMessage { from: 1, .. }),
        "{error}"
    );
    host.replica().reconnected(1);
    host.replica().reconnected(NODE);
    let error = host.replica().reconfigure(vec![NODE, 4, 5]).unwrap_err();
    assert!(matches!(error, ConsensusError::Unsupported { .. }), "{error}");
    assert!(matches!(host.replica().handoff(), Err(ConsensusError::NotReconfigured)));
    assert!(!host.replica().is_stopped());
    assert!(host.poll().is_empty());
    // A one-member set must be this node.
    let error = Replica::new(ReplicaConfig::new(SHARD, NODE, vec![4]), Kv::default())
        .err()
        .unwrap();
    assert!(matches!(error, ConsensusError::InvalidConfig { .. }), "{error}");
    let error = Replica::new(ReplicaConfig::new(SHARD, NODE, Vec::new()), Kv::default())
        .err()
        .unwrap();
    assert!(matches!(error, ConsensusError::InvalidConfig { .. }), "{error}");
}

#[test]
fn group_commit_cuts_the_proposals_between_two_polls_into_one_record() {
    let mut host = Host::new(ReplicaConfig::new(SHARD, NODE, vec![NODE]));
    host.settle();
    for sequence in 1..=100 {
        host.replica()
            .propose(Put::Put(sequence % 7, sequence), id(1, sequence))
            .unwrap();
    }
    let actions = host.poll();
    assert_eq!(persists(&actions), vec![2], "one record for 100 proposals");
    host.flush();
    let actions = host.poll();
    assert_eq!(count_applied(&actions), 100);
    assert!(persists(&actions).is_empty());
    let indexes: Vec<u64> = host.applied.iter().map(|(index, _, _)| *index).collect();
    assert_eq!(indexes, (1..=100).collect::<Vec<_>>(), "applied in proposal order");
    let ids: Vec<ProposalId> = host.applied.iter().map(|(_, id, _)| *id).collect();
    assert_eq!(ids, (1..=100).map(|sequence| id(1, sequence)).collect::<Vec<_>>());
    assert_eq!(host.applied[7].2, Some(1), "key 1 held 1 before sequence 8");
    assert_eq!(host.replica().state().applied, (1..=100).collect::<Vec<_>>());
}

#[test]
fn limits_answer_busy() {
    let config = ReplicaConfig {
        batch_entries_max: 8,
        pending_proposals_max: 100,
        records_in_flight_max: 3,
        ..ReplicaConfig::new(SHARD, NODE, vec![NODE])
    };
    let mut host = Host::new(config);
    let mut sequence = 0;
    let mut propose = |host: &mut Host| {
        sequence += 1;
        host.replica().propose(Put::Put(1, sequence), id(1, sequence))
    };
    // The initial snapshot record is in flight.
    for _ in 0..8 {
        propose(&mut host).unwrap();
    }
    let error = propose(&mut host).unwrap_err();
    assert!(
        matches!(
            error,
            ConsensusError::Busy {
                what: "batch_entries_max",
                limit: 8
            }
        ),
        "{error}"
    );
    host.poll();
    for _ in 0..8 {
        propose(&mut host).unwrap();
    }
    host.poll();
    let error = propose(&mut host).unwrap_err();
    assert!(
        matches!(
            error,
            ConsensusError::Busy {
                what: "records_in_flight_max",
                limit: 3
            }
        ),
        "{error}"
    );
    host.flush();
    propose(&mut host).unwrap();
    host.settle();
    assert_eq!(host.replica().applied_index(), 17);

    let config = ReplicaConfig {
        batch_entries_max: 8,
        pending_proposals_max: 10,
        ..ReplicaConfig::new(SHARD, NODE, vec![NODE])
    };
    let mut host = Host::new(config);
    for sequence in 1..=8 {
        host.replica().propose(Put::Put(1, 1), id(1, sequence)).unwrap();
    }
    host.poll();
    host.replica().propose(Put::Put(1, 1), id(1, 9)).unwrap();
    // Nothing committed waits to be applied: the read is answered at once and holds no
    // place among the pending.
    host.replica().read_barrier(id(2, 1)).unwrap();
    host.replica().propose(Put::Put(1, 1), id(1, 10)).unwrap();
    let error = host.replica().propose(Put::Put(1, 1), id(1, 11)).unwrap_err();
    assert!(
        matches!(
            error,
            ConsensusError::Busy {
                what: "pending_proposals_max",
                limit: 10
            }
        ),
        "{error}"
    );
    let error = host.replica().read_barrier(id(2, 2)).unwrap_err();
    assert!(
        matches!(
            error,
            ConsensusError::Busy {
                what: "pending_proposals_max",
                ..
            }
        ),
        "{error}"
    );
    host.settle();
    assert_eq!((host.replica().applied_index(), host.reads.len()), (10, 1));
    host.replica().propose(Put::Put(1, 1), id(1, 11)).unwrap();
}

#[test]
fn a_retried_proposal_is_applied_once_and_a_stale_one_not_at_all() {
    let mut host = Host::tiny();
    host.replica().propose(Put::Put(5, 40), id(8, 1)).unwrap();
    host.replica().propose(Put::Put(5, 50), id(9, 1)).unwrap();
    // A retry while the original is still on its way to the disk.
    host.replica().propose(Put::Put(5, 50), id(9, 1)).unwrap();
    host.settle();
    // A retry after the answer was lost.
    host.replica().propose(Put::Put(5, 50), id(9, 1)).unwrap();
    host.settle();
    let answers: Vec<_> = host.applied.iter().filter(|(_, p, _)| *p == id(9, 1)).collect();
    assert_eq!(answers.len(), 3, "every retry is answered");
    assert!(
        answers.iter().all(|(_, _, output)| *output == Some(40)),
        "with the original output: {answers:?}"
    );
    assert_eq!(
        host.replica().state().applied,
        vec![1, 2],
        "the retries were not applied again"
    );
    assert_eq!(host.replica().applied_index(), 4, "retries still take a log index");
    // The client moved on; a late copy of its first proposal is skipped.
    host.replica().propose(Put::Put(6, 60), id(9, 2)).unwrap();
    host.replica().propose(Put::Put(5, 99), id(9, 1)).unwrap();
    host.settle();
    assert_eq!(
        host.applied.last().map(|(_, p, _)| *p),
        Some(id(9, 2)),
        "no answer for the stale one"
    );
    assert_eq!(host.replica().state().map.get(&5), Some(&50));
    assert_eq!(host.replica().state().applied, vec![1, 2, 5]);
    // Deduplication survives a restart.
    host.crash_and_recover(0);
    host.replica().propose(Put::Put(6, 60), id(9, 2)).unwrap();
    host.settle();
    assert_eq!(host.applied.last(), Some(&(7, id(9, 2), None)));
    assert_eq!(host.replica().state().applied, vec![1, 2, 5]);
}

#[test]
fn a_read_barrier_waits_for_committed_entries_not_for_unflushed_ones() {
    let mut host = Host::tiny();
    host.settle();
    // Nothing before it: ready at once, without a record.
    host.replica().read_barrier(id(4, 1)).unwrap();
    let actions = host.poll();
    assert!(persists(&actions).is_empty(), "a read writes no record");
    assert_eq!(host.reads, vec![(id(4, 1), 0)]);

    // An entry whose record is not durable was acknowledged to nobody: the read is
    // concurrent with it and does not wait for its fdatasync.
    host.replica().propose(Put::Put(1, 1), id(1, 1)).unwrap();
    host.poll();
    host.replica().read_barrier(id(4, 2)).unwrap();
    host.poll();
    assert_eq!(host.reads[1], (id(4, 2), 0), "ready before the unflushed entry");
    assert_eq!(host.replica().applied_index(), 0);

    // Committed (its record durable) but not applied yet: a read waits for it, since its
    // proposer may be answered before the read is.
    host.flush();
    host.replica().propose(Put::Put(1, 2), id(1, 2)).unwrap();
    host.replica().read_barrier(id(4, 3)).unwrap();
    let actions = host.poll();
    let order: Vec<String> = actions
        .iter()
        .filter_map(|action| match action {
            Action::Applied { index, .. } => Some(format!("applied {index}")),
            Action::ReadReady { read_id, index } => Some(format!("read {} at {index}", read_id.sequence)),
            _ => None,
        })
        .collect();
    assert_eq!(order, ["applied 1", "read 3 at 1"]);
    host.settle();
    assert_eq!(host.replica().applied_index(), 2, "reads take no log index");
    assert_eq!(host.replica().state().map.get(&1), Some(&2));
}

#[test]
fn snapshots_trim_old_records_and_recovery_starts_from_them() {
    let mut host = Host::tiny();
    for round in 0..25 {
        for sequence in 1..=4 {
            let sequence = round * 4 + sequence;
            host.replica()
                .propose(Put::Put(sequence % 5, sequence), id(1, sequence))
                .unwrap();
        }
        host.settle();
    }
    assert_eq!(host.replica().applied_index(), 100);
    assert!(
        host.trims >= 5,
        "a snapshot every 16 entries trims records: {} trims",
        host.trims
    );
    assert!(
        host.durable.len() <= 6,
        "records are trimmed: {} kept",
        host.durable.len()
    );
    let before = host.replica().state().clone();
    let (last_seq, _) = host.replica().record_seqs();
    host.crash_and_recover(0);
    assert_eq!(host.replica().state(), &before);
    assert_eq!(host.replica().applied_index(), 100);
    assert_eq!(host.replica().decided_index(), 100);
    assert_eq!(host.replica().record_seqs(), (last_seq, last_seq));
    assert!(host.replica().is_leader());
    // Indexes and record sequence numbers continue.
    host.replica().propose(Put::Put(1, 101), id(1, 101)).unwrap();
    let actions = host.poll();
    assert_eq!(persists(&actions), vec![last_seq + 1]);
    assert_eq!(host.leaders, vec![Some(NODE), Some(NODE)], "one report per incarnation");
    for sequence in 102..=120 {
        host.replica()
            .propose(Put::Put(sequence % 5, sequence), id(1, sequence))
            .unwrap();
        if sequence % 4 == 0 {
            host.settle();
        }
    }
    host.settle();
    assert_eq!(host.replica().applied_index(), 120);
    assert_eq!(host.replica().state().applied, (1..=120).collect::<Vec<_>>());
    let acknowledged: Vec<u64> = host.applied.iter().map(|(index, _, _)| *index).collect();
    assert_eq!(acknowledged, (1..=120).collect::<Vec<_>>());
}

/// Writes 4,000 entries with a snapshot allowed after every 4; returns the snapshots
/// (trims) and the bytes of every record written. The state grows with every entry.
fn snapshots_and_bytes(snapshot_log_bytes_percent: u64) -> (usize, usize) {
    let mut config = ReplicaConfig::tiny(SHARD, NODE, vec![NODE]);
    config.snapshot_every_entries = 4;
    config.snapshot_log_bytes_percent = snapshot_log_bytes_percent;
    let mut host = Host::new(config);
    for sequence in 1..=4_000 {
        host.replica()
            .propose(Put::Put(sequence, sequence), id(1, sequence))
            .unwrap();
        if sequence % 4 == 0 {
            host.settle();
        }
    }
    assert_eq!(host.replica().applied_index(), 4_000);
    let before = host.replica().state().clone();
    host.crash_and_recover(0);
    assert_eq!(
        host.replica().state(),
        &before,
        "recovery from the last snapshot and the log after it"
    );
    (host.trims, host.persisted_bytes)
}

#[test]
fn snapshots_are_spaced_by_their_own_size_as_the_state_grows() {
    let (snapshots_by_entries, bytes_by_entries) = snapshots_and_bytes(0);
    let (snapshots_by_size, bytes_by_size) = snapshots_and_bytes(100);
    // By entries alone, the whole growing state is rewritten every 4 entries: quadratic.
    assert_eq!(snapshots_by_entries, 1_000);
    // Spaced by size, snapshot n+1 waits until the log since snapshot n is as large as
    // it: the number of snapshots grows with the logarithm of the entries, and the
    // snapshot bytes stay within the log bytes (so at most about twice the log in all).
    assert!(
        snapshots_by_size <= 40,
        "{snapshots_by_size} snapshots for 4,000 entries"
    );
    assert!(
        bytes_by_size * 20 < bytes_by_entries,
        "{bytes_by_size} bytes written, against {bytes_by_entries} by entries alone"
    );
}

#[test]
fn a_crash_keeps_exactly_the_acknowledged_entries() {
    let mut host = Host::tiny();
    for sequence in 1..=5 {
        host.replica()
            .propose(Put::Put(sequence, sequence), id(1, sequence))
            .unwrap();
    }
    host.settle();
    let acknowledged = host.replica().state().clone();
    assert_eq!(acknowledged.applied, vec![1, 2, 3, 4, 5]);
    // Three more reach a record that never becomes durable.
    for sequence in 6..=8 {
        host.replica()
            .propose(Put::Put(sequence, sequence), id(1, sequence))
            .unwrap();
    }
    assert_eq!(persists(&host.poll()).len(), 1);
    host.crash_and_recover(0);
    assert_eq!(
        host.replica().state(),
        &acknowledged,
        "exactly the acknowledged entries"
    );
    assert_eq!((host.replica().decided_index(), host.replica().applied_index()), (5, 5));
    assert_eq!(host.applied.len(), 5);
    // The client retries; the lost entries take the lost indexes.
    for sequence in 6..=8 {
        host.replica()
            .propose(Put::Put(sequence, sequence), id(1, sequence))
            .unwrap();
    }
    host.settle();
    assert_eq!(host.replica().state().applied, (1..=8).collect::<Vec<_>>());
    assert_eq!(host.applied.len(), 8);

    // A record that reached the disk without being reported survives: its entries are
    // applied at recovery, and a retry gets the original answer.
    host.replica().propose(Put::Put(1, 100), id(1, 9)).unwrap();
    host.poll();
    host.crash_and_recover(1);
    assert_eq!(host.replica().applied_index(), 9);
    assert_eq!(host.replica().state().map.get(&1), Some(&100));
    host.replica().propose(Put::Put(1, 100), id(1, 9)).unwrap();
    host.settle();
    assert_eq!(host.applied.last(), Some(&(10, id(1, 9), Some(1))));
    assert_eq!(host.replica().state().applied, (1..=9).collect::<Vec<_>>());
}

#[test]
fn random_crashes_lose_no_acknowledged_entry() {
    let mut totals = Coverage::default();
    for seed in 1..=40u64 {
        let coverage = random_run(seed);
        totals.acknowledged += coverage.acknowledged;
        totals.crashes += coverage.crashes;
        totals.lost += coverage.lost;
        totals.reads += coverage.reads;
        totals.trims += coverage.trims;
    }
    let enough = totals.acknowledged > 4_000
        && totals.crashes > 1_000
        && totals.lost > 400
        && totals.reads > 500
        && totals.trims > 200;
    assert!(enough, "the runs exercise too little: {totals:?}");
}

/// What random runs went through.
#[derive(Debug, Default)]
struct Coverage {
    acknowledged: u64,
    crashes: u64,
    /// Crashes that lost proposed entries.
    lost: u64,
    reads: u64,
    trims: usize,
}

/// A splitmix64 stream: the test's only randomness.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % bound
    }
}

/// Random proposals, reads, partial flushes and crashes that keep a random part of the
/// unflushed records. The model log holds what each index carries (a restart cuts it to
/// what was recovered); after every restart the state must be exactly the model log up to
/// the recovered index, which must cover every acknowledged entry; every answer and every
/// read must match the model.
fn random_run(seed: u64) -> Coverage {
    let mut rng = Rng(seed);
    let mut host = Host::tiny();
    let mut model: Vec<Put> = Vec::new();
    let mut sequence = 0;
    let mut acknowledged = 0;
    let mut coverage = Coverage::default();
    // Reads waiting, with what was acknowledged and the model's log end when they were
    // issued: a read sees every acknowledged entry, and none proposed after it.
    let mut reads = std::collections::BTreeMap::new();
    for step in 0..400u64 {
        let context = format!("seed {seed} step {step}");
        match rng.below(10) {
            0..=4 => {
                for _ in 0..=rng.below(4) {
                    let put = Put::Put(rng.below(4), sequence + 1);
                    match host.replica().propose(put.clone(), id(1, sequence + 1)) {
                        Ok(()) => {
                            // Appended at the end of the log, which the model mirrors.
                            sequence += 1;
                            model.push(put);
                        }
                        Err(ConsensusError::Busy { .. }) => break,
                        Err(error) => panic!("{context}: {error}"),
                    }
                }
            }
            5 => match host.replica().read_barrier(id(2, step)) {
                Ok(()) => {
                    reads.insert(id(2, step), (acknowledged, model.len() as u64));
                }
                Err(ConsensusError::Busy { .. }) => {}
                Err(error) => panic!("{context}: {error}"),
            },
            6 | 7 => {
                let count = rng.below(host.unflushed.len() as u64 + 1) as usize;
                if count > 0 {
                    let last = host.unflushed[count - 1].0;
                    let flushed: Vec<_> = host.unflushed.drain(..count).collect();
                    host.durable.extend(flushed);
                    host.replica().persisted(last).unwrap();
                }
            }
            8 => {
                let surviving = rng.below(host.unflushed.len() as u64 + 1) as usize;
                host.crash_and_recover(surviving);
                let applied = host.replica().applied_index();
                assert!(applied >= acknowledged, "{context}: acknowledged entries lost");
                coverage.crashes += 1;
                coverage.lost += u64::from((applied as usize) < model.len());
                model.truncate(applied as usize);
                reads.clear();
                assert_eq!(host.replica().state(), &replay(&model), "{context}");
            }
            _ => {}
        }
        host.poll();
        for (index, proposal_id, _) in std::mem::take(&mut host.applied) {
            let Put::Put(_, value) = &model[index as usize - 1];
            assert_eq!(
                proposal_id.sequence, *value,
                "{context}: index {index} answered another proposal"
            );
            acknowledged = acknowledged.max(index);
            coverage.acknowledged += 1;
        }
        for (read_id, index) in std::mem::take(&mut host.reads) {
            let Some((acknowledged_then, end_then)) = reads.remove(&read_id) else {
                panic!("{context}: read {read_id:?} answered twice or never asked");
            };
            assert!(
                (acknowledged_then..=end_then).contains(&index),
                "{context}: read {read_id:?} ready at {index}, outside {acknowledged_then}..={end_then}"
            );
            assert!(
                host.replica().applied_index() >= index,
                "{context}: read ready too early"
            );
            coverage.reads += 1;
        }
    }
    host.flush();
    host.settle();
    assert_eq!(host.replica().state(), &replay(&model), "seed {seed}: final state");
    coverage.trims = host.trims;
    coverage
}

fn replay(model: &[Put]) -> Kv {
    use kiseki_consensus::StateMachine;
    let mut kv = Kv::default();
    for (position, put) in model.iter().enumerate() {
        kv.apply(position as u64 + 1, put);
    }
    kv
}

#[test]
fn damaged_records_are_typed_errors() {
    let mut host = Host::tiny();
    for sequence in 1..=5 {
        host.replica()
            .propose(Put::Put(sequence, sequence), id(1, sequence))
            .unwrap();
        host.settle();
    }
    let records = host.durable_records();
    assert!(records.len() >= 3);
    let last = records.len() - 1;
    for byte in [0, 4, 9, 20, records[last].len() - 1] {
        let mut damaged = records.clone();
        damaged[last][byte] ^= 0x40;
        let error = Replica::<Kv>::recover(host.config.clone(), damaged).err().unwrap();
        assert!(
            matches!(error, ConsensusError::CorruptRecord { position, .. } if position == last),
            "{error}"
        );
    }
    let mut truncated = records.clone();
    truncated[last].pop();
    assert!(matches!(
        Replica::<Kv>::recover(host.config.clone(), truncated),
        Err(ConsensusError::CorruptRecord { .. })
    ));
    let mut gap = records.clone();
    gap.remove(1);
    assert!(matches!(
        Replica::<Kv>::recover(host.config.clone(), gap),
        Err(ConsensusError::CorruptRecord { .. })
    ));
    let without_snapshot = records[1..].to_vec();
    assert!(matches!(
        Replica::<Kv>::recover(host.config.clone(), without_snapshot),
        Err(ConsensusError::CorruptRecord { position: 0, .. })
    ));
    let other_node = ReplicaConfig::tiny(SHARD, NODE + 1, vec![NODE + 1]);
    assert!(matches!(
        Replica::<Kv>::recover(other_node, records.clone()),
        Err(ConsensusError::CorruptRecord { .. })
    ));
    assert!(matches!(
        Replica::<Kv>::recover(host.config.clone(), Vec::new()),
        Err(ConsensusError::CorruptRecord { .. })
    ));
    // The intact records still recover.
    let replica = Replica::<Kv>::recover(host.config.clone(), records).unwrap();
    assert_eq!(replica.applied_index(), 5);
}
