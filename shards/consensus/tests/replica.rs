//! A deterministic in-memory cluster of replicas: election, ordering, durability before
//! send (I-L1), recovery, snapshots and trimming, snapshot transfer, deduplication, read
//! barriers, reconfiguration, and typed errors for bad input.

mod common;

use common::{Kv, Put};
use kiseki_consensus::{Action, ConsensusError, ProposalId, ReadBatcher, Replica, ReplicaConfig};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

struct Node {
    replica: Option<Replica<Kv>>,
    config: ReplicaConfig,
    /// Records made durable, in order.
    durable: Vec<(u64, Vec<u8>)>,
    /// Records handed over and not yet durable.
    unflushed: Vec<(u64, Vec<u8>)>,
    applied: Vec<(u64, ProposalId, Option<u64>)>,
    reads: Vec<(ProposalId, u64)>,
    reconfigured: Option<(u32, Vec<u64>)>,
    trims: usize,
}

struct Cluster {
    nodes: BTreeMap<u64, Node>,
    network: VecDeque<(u64, u64, Vec<u8>)>,
    /// Nodes whose messages (both ways) are dropped.
    isolated: BTreeSet<u64>,
    auto_persist: bool,
}

impl Cluster {
    fn new(members: &[u64], tiny: bool) -> Self {
        let mut nodes = BTreeMap::new();
        for &id in members {
            let config = if tiny {
                ReplicaConfig::tiny(7, id, members.to_vec())
            } else {
                ReplicaConfig {
                    election_timeout_ticks: 4,
                    resend_timeout_ticks: 6,
                    ..ReplicaConfig::new(7, id, members.to_vec())
                }
            };
            let replica = Replica::new(config.clone(), Kv::default()).unwrap();
            nodes.insert(id, Node::new(config, replica));
        }
        Self {
            nodes,
            network: VecDeque::new(),
            isolated: BTreeSet::new(),
            auto_persist: true,
        }
    }

    fn replica(&mut self, id: u64) -> &mut Replica<Kv> {
        self.nodes.get_mut(&id).unwrap().replica.as_mut().unwrap()
    }

    /// Polls every replica and carries out its actions; checks I-L1 on every send.
    fn poll(&mut self) {
        for (&id, node) in self.nodes.iter_mut() {
            let Some(replica) = node.replica.as_mut() else { continue };
            for action in replica.poll_actions() {
                match action {
                    Action::Persist { record_seq, bytes } => node.unflushed.push((record_seq, bytes)),
                    Action::Send {
                        to,
                        bytes,
                        after_record_seq,
                    } => {
                        let durable = node.durable.last().map_or(0, |(seq, _)| *seq);
                        assert!(
                            after_record_seq <= durable,
                            "I-L1: node {id} sent after record {after_record_seq}, durable {durable}"
                        );
                        assert!(
                            node.unflushed.first().is_none_or(|(seq, _)| *seq > after_record_seq),
                            "I-L1: node {id} sent with records not durable"
                        );
                        self.network.push_back((id, to, bytes));
                    }
                    Action::Applied {
                        index,
                        proposal_id,
                        output,
                    } => node.applied.push((index, proposal_id, output)),
                    Action::ReadReady { read_id, index } => node.reads.push((read_id, index)),
                    Action::Trim { below_record_seq } => {
                        node.trims += 1;
                        node.durable.retain(|(seq, _)| *seq >= below_record_seq);
                    }
                    Action::LeaderChanged { .. } => {}
                    Action::Reconfigured {
                        configuration_id,
                        members,
                    } => node.reconfigured = Some((configuration_id, members)),
                }
            }
            if self.auto_persist {
                node.flush();
            }
        }
    }

    fn deliver(&mut self) {
        while let Some((from, to, bytes)) = self.network.pop_front() {
            if self.isolated.contains(&from) || self.isolated.contains(&to) {
                continue;
            }
            if let Some(replica) = self.nodes.get_mut(&to).and_then(|node| node.replica.as_mut()) {
                match replica.receive(from, &bytes) {
                    Ok(()) | Err(ConsensusError::Busy { .. }) => {}
                    Err(error) => panic!("node {to} refused a message from {from}: {error}"),
                }
            }
        }
    }

    fn tick(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(replica) = node.replica.as_mut() {
                replica.tick();
            }
        }
    }

    fn run(&mut self, ticks: usize) {
        for _ in 0..ticks {
            self.tick();
            for _ in 0..3 {
                self.poll();
                self.deliver();
            }
        }
    }

    fn leader(&mut self) -> u64 {
        for _ in 0..200 {
            let leader = self
                .nodes
                .iter()
                .find_map(|(id, node)| node.replica.as_ref().filter(|replica| replica.is_leader()).map(|_| *id));
            if let Some(leader) = leader {
                return leader;
            }
            self.run(1);
        }
        panic!("no leader elected");
    }

    fn propose_all(&mut self, client_id: u64, count: u64) {
        for sequence in 1..=count {
            loop {
                let leader = self.leader();
                match self
                    .replica(leader)
                    .propose(Put::Put(sequence % 7, sequence), ProposalId { client_id, sequence })
                {
                    Ok(()) => break,
                    Err(ConsensusError::Busy { .. } | ConsensusError::NotLeader { .. }) => self.run(1),
                    Err(error) => panic!("{error}"),
                }
            }
            self.poll();
            self.deliver();
        }
        self.run(10);
    }

    fn states(&self) -> Vec<(u64, u64, Kv)> {
        self.nodes
            .iter()
            .filter_map(|(id, node)| {
                node.replica
                    .as_ref()
                    .map(|r| (*id, r.applied_index(), r.state().clone()))
            })
            .collect()
    }

    fn assert_converged(&self) {
        let states = self.states();
        for (id, applied, state) in &states[1..] {
            assert_eq!(
                (applied, state),
                (&states[0].1, &states[0].2),
                "node {id} differs from node {}",
                states[0].0
            );
        }
    }
}

impl Node {
    fn new(config: ReplicaConfig, replica: Replica<Kv>) -> Self {
        Self {
            replica: Some(replica),
            config,
            durable: Vec::new(),
            unflushed: Vec::new(),
            applied: Vec::new(),
            reads: Vec::new(),
            reconfigured: None,
            trims: 0,
        }
    }

    fn flush(&mut self) {
        if let Some(&(last, _)) = self.unflushed.last() {
            self.durable.append(&mut self.unflushed);
            if let Some(replica) = self.replica.as_mut() {
                replica.persisted(last).unwrap();
            }
        }
    }

    /// Crash: unflushed records are lost. Restart: recover from the durable ones.
    fn crash_and_recover(&mut self) {
        self.replica = None;
        self.unflushed.clear();
        let records = self.durable.iter().map(|(_, bytes)| bytes.clone()).collect::<Vec<_>>();
        self.replica = Some(Replica::recover(self.config.clone(), records).unwrap());
    }
}

#[test]
fn a_leader_is_elected_and_every_replica_applies_the_same_entries_in_order() {
    let mut cluster = Cluster::new(&[1, 2, 3], false);
    let leader = cluster.leader();
    assert!(cluster
        .nodes
        .keys()
        .all(|id| cluster.nodes[id].replica.as_ref().unwrap().leader() == Some(leader)));
    cluster.propose_all(1, 60);
    cluster.assert_converged();
    let (_, applied, state) = cluster.states().remove(0);
    assert_eq!(applied, 60);
    assert_eq!(state.applied, (1..=60).collect::<Vec<_>>());
    let orders: Vec<Vec<u64>> = cluster
        .nodes
        .values()
        .map(|node| node.replica.as_ref().unwrap().state().applied.clone())
        .collect();
    assert!(orders.windows(2).all(|pair| pair[0] == pair[1]));
    // The leader answered every proposal once, with the previous value.
    let answers = &cluster.nodes[&leader].applied;
    assert_eq!(answers.len(), 60);
    assert_eq!(answers[7].2, Some(1), "key 1 held 1 before sequence 8");
}

#[test]
fn messages_wait_until_their_records_are_durable() {
    let mut cluster = Cluster::new(&[1, 2, 3], false);
    let leader = cluster.leader();
    cluster.run(5);
    cluster.auto_persist = false;
    cluster
        .replica(leader)
        .propose(
            Put::Put(1, 1),
            ProposalId {
                client_id: 1,
                sequence: 1,
            },
        )
        .unwrap();
    let actions = cluster.replica(leader).poll_actions();
    let persist = actions.iter().find_map(|action| match action {
        Action::Persist { record_seq, .. } => Some(*record_seq),
        _ => None,
    });
    let record_seq = persist.expect("the proposal produced a record");
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Send { .. })),
        "sent before the record was durable"
    );
    // Ticks produce heartbeats, still held back.
    for _ in 0..10 {
        cluster.replica(leader).tick();
        let actions = cluster.replica(leader).poll_actions();
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Send { .. })),
            "sent before the record was durable"
        );
    }
    assert!(matches!(
        cluster.replica(leader).persisted(record_seq + 100),
        Err(ConsensusError::UnknownRecord { .. })
    ));
    let (record_seq_last, _) = cluster.replica(leader).record_seqs();
    cluster.replica(leader).persisted(record_seq_last).unwrap();
    let actions = cluster.replica(leader).poll_actions();
    assert!(
        actions.iter().any(|a| matches!(a, Action::Send { .. })),
        "durable record releases the messages"
    );
    // Nothing is applied until followers persisted and acknowledged.
    assert!(!actions.iter().any(|a| matches!(a, Action::Applied { .. })));
    for action in actions {
        if let Action::Send { to, bytes, .. } = action {
            cluster.network.push_back((leader, to, bytes));
        }
    }
    cluster.auto_persist = true;
    cluster.run(5);
    assert_eq!(cluster.replica(leader).applied_index(), 1);
}

#[test]
fn records_rebuild_a_crashed_replica() {
    let mut cluster = Cluster::new(&[1, 2, 3], false);
    cluster.propose_all(1, 30);
    let before = cluster.states();
    for id in [1, 2, 3] {
        cluster.nodes.get_mut(&id).unwrap().crash_and_recover();
    }
    let after = cluster.states();
    assert_eq!(before, after, "recovered replicas hold the state they had");
    cluster.propose_all(2, 10);
    cluster.assert_converged();
    assert_eq!(cluster.states()[0].1, 40);
}

#[test]
fn snapshots_trim_old_records_and_recovery_starts_from_them() {
    let mut cluster = Cluster::new(&[1, 2, 3], true);
    cluster.propose_all(1, 100);
    cluster.assert_converged();
    for node in cluster.nodes.values_mut() {
        assert!(
            node.trims >= 5,
            "snapshot every 16 entries trims records: {} trims",
            node.trims
        );
        assert!(
            node.durable.len() < 40,
            "records are trimmed: {} kept",
            node.durable.len()
        );
        let before = node.replica.as_ref().unwrap().state().clone();
        node.crash_and_recover();
        assert_eq!(node.replica.as_ref().unwrap().state(), &before);
    }
    cluster.propose_all(2, 20);
    cluster.assert_converged();
    assert_eq!(cluster.states()[0].1, 120);
}

#[test]
fn a_follower_behind_the_compacted_log_catches_up_by_snapshot_transfer() {
    let mut cluster = Cluster::new(&[1, 2, 3], true);
    let leader = cluster.leader();
    let lagging = *cluster.nodes.keys().find(|id| **id != leader).unwrap();
    cluster.propose_all(1, 5);
    cluster.isolated.insert(lagging);
    cluster.propose_all(2, 120);
    assert!(cluster.replica(lagging).applied_index() <= 5);
    cluster.isolated.clear();
    for id in [1, 2, 3] {
        for peer in [1, 2, 3] {
            cluster.replica(id).reconnected(peer);
        }
    }
    cluster.run(40);
    cluster.propose_all(3, 3);
    cluster.assert_converged();
    assert_eq!(cluster.states()[0].1, 128);
    assert!(
        cluster.replica(lagging).snapshot_transfers().1 >= 1,
        "the lagging follower installed a snapshot"
    );
}

#[test]
fn a_retried_proposal_is_applied_once() {
    let mut cluster = Cluster::new(&[1, 2, 3], false);
    let leader = cluster.leader();
    let id = ProposalId {
        client_id: 9,
        sequence: 1,
    };
    cluster.replica(leader).propose(Put::Put(5, 50), id).unwrap();
    cluster.run(3);
    cluster.replica(leader).propose(Put::Put(5, 50), id).unwrap();
    cluster.run(3);
    let state = cluster.replica(leader).state().clone();
    assert_eq!(state.applied.len(), 1, "the retry was not applied again");
    let answers: Vec<_> = cluster.nodes[&leader]
        .applied
        .iter()
        .filter(|(_, p, _)| *p == id)
        .collect();
    assert_eq!(answers.len(), 2);
    assert_eq!(answers[0].2, answers[1].2, "the retry gets the original answer");
}

#[test]
fn a_read_barrier_is_answered_once_applied_and_only_by_the_leader() {
    let mut cluster = Cluster::new(&[1, 2, 3], false);
    cluster.propose_all(1, 3);
    let leader = cluster.leader();
    let follower = *cluster.nodes.keys().find(|id| **id != leader).unwrap();
    let read_id = ProposalId {
        client_id: 4,
        sequence: 1,
    };
    match cluster.replica(follower).read_barrier(read_id) {
        Err(ConsensusError::NotLeader { leader: hint }) => assert_eq!(hint, Some(leader)),
        other => panic!("expected NotLeader, got {other:?}"),
    }
    cluster.replica(leader).read_barrier(read_id).unwrap();
    cluster.run(3);
    assert_eq!(cluster.nodes[&leader].reads, vec![(read_id, 4)]);
}

#[test]
fn limits_answer_busy() {
    let mut cluster = Cluster::new(&[1, 2, 3], true);
    let leader = cluster.leader();
    cluster.auto_persist = false;
    let mut accepted = 0;
    let refusal = loop {
        let id = ProposalId {
            client_id: 1,
            sequence: accepted + 1,
        };
        match cluster.replica(leader).propose(Put::Put(1, 1), id) {
            Ok(()) => accepted += 1,
            Err(error) => break error,
        }
    };
    assert!(
        matches!(
            refusal,
            ConsensusError::Busy {
                what: "batch_entries_max",
                limit: 8
            }
        ),
        "{refusal}"
    );
    assert_eq!(accepted, 8);
}

#[test]
fn bad_input_is_a_typed_error() {
    let mut cluster = Cluster::new(&[1, 2, 3], false);
    cluster.propose_all(1, 5);
    // A message caught on the wire, then damaged.
    cluster.replica(1).tick();
    cluster.run(1);
    let mut message = None;
    for _ in 0..20 {
        cluster.tick();
        cluster.poll();
        if let Some(found) = cluster.network.iter().find(|(_, to, _)| *to == 2).cloned() {
            message = Some(found);
            break;
        }
    }
    let (from, _, bytes) = message.expect("a message to node 2");
    for index in [0, 4, 8, 12, bytes.len() / 2, bytes.len() - 1] {
        let mut damaged = bytes.clone();
        damaged[index] ^= 0x10;
        let error = cluster.replica(2).receive(from, &damaged).unwrap_err();
        assert!(matches!(error, ConsensusError::CorruptMessage { .. }), "{error}");
    }
    assert!(matches!(
        cluster.replica(2).receive(from, &[]),
        Err(ConsensusError::CorruptMessage { .. })
    ));
    let misrouted = cluster.replica(3).receive(from, &bytes).unwrap_err();
    assert!(
        matches!(misrouted, ConsensusError::UnexpectedMessage { .. }),
        "{misrouted}"
    );
    let spoofed = cluster
        .replica(2)
        .receive(if from == 1 { 3 } else { 1 }, &bytes)
        .unwrap_err();
    assert!(matches!(spoofed, ConsensusError::UnexpectedMessage { .. }), "{spoofed}");
    // A damaged record.
    let node = &cluster.nodes[&1];
    let mut records: Vec<Vec<u8>> = node.durable.iter().map(|(_, bytes)| bytes.clone()).collect();
    let last = records.len() - 1;
    records[last][20] ^= 1;
    let error = Replica::<Kv>::recover(node.config.clone(), records.clone())
        .err()
        .unwrap();
    assert!(
        matches!(error, ConsensusError::CorruptRecord { position, .. } if position == last),
        "{error}"
    );
    // A record missing in the middle, a record of another replica.
    let mut records: Vec<Vec<u8>> = node.durable.iter().map(|(_, bytes)| bytes.clone()).collect();
    records.remove(1);
    assert!(matches!(
        Replica::<Kv>::recover(node.config.clone(), records),
        Err(ConsensusError::CorruptRecord { .. })
    ));
    let records: Vec<Vec<u8>> = node.durable.iter().map(|(_, bytes)| bytes.clone()).collect();
    let other = cluster.nodes[&2].config.clone();
    assert!(matches!(
        Replica::<Kv>::recover(other, records),
        Err(ConsensusError::CorruptRecord { .. })
    ));
    assert!(matches!(
        Replica::<Kv>::recover(node.config.clone(), Vec::new()),
        Err(ConsensusError::CorruptRecord { .. })
    ));
    // A bad configuration.
    let bad = ReplicaConfig::new(7, 9, vec![1, 2, 3]);
    assert!(matches!(
        Replica::new(bad, Kv::default()),
        Err(ConsensusError::InvalidConfig { .. })
    ));
}

#[test]
fn a_reconfiguration_hands_the_state_to_the_next_replica_set() {
    let mut cluster = Cluster::new(&[1, 2, 3], false);
    cluster.propose_all(1, 20);
    let leader = cluster.leader();
    cluster.replica(leader).reconfigure(vec![1, 2, 4]).unwrap();
    cluster.run(10);
    for id in [1, 2, 3] {
        assert_eq!(cluster.nodes[&id].reconfigured, Some((2, vec![1, 2, 4])), "node {id}");
        assert!(cluster.replica(id).is_stopped());
        let refused = cluster.replica(id).propose(
            Put::Put(1, 1),
            ProposalId {
                client_id: 1,
                sequence: 99,
            },
        );
        assert!(matches!(refused, Err(ConsensusError::Reconfiguring)));
    }
    let handoff = cluster.replica(1).handoff().unwrap();
    let old_state = cluster.replica(1).state().clone();
    let mut next = Cluster {
        nodes: BTreeMap::new(),
        network: VecDeque::new(),
        isolated: BTreeSet::new(),
        auto_persist: true,
    };
    for id in [1, 2, 4] {
        let config = ReplicaConfig {
            configuration_id: 2,
            election_timeout_ticks: 4,
            resend_timeout_ticks: 6,
            ..ReplicaConfig::new(7, id, vec![1, 2, 4])
        };
        let replica = Replica::<Kv>::next_configuration(config.clone(), &handoff).unwrap();
        assert_eq!(replica.state(), &old_state);
        next.nodes.insert(id, Node::new(config, replica));
    }
    let wrong = ReplicaConfig {
        configuration_id: 3,
        ..ReplicaConfig::new(7, 1, vec![1, 2, 4])
    };
    assert!(matches!(
        Replica::<Kv>::next_configuration(wrong, &handoff),
        Err(ConsensusError::InvalidConfig { .. })
    ));
    // A message of the old configuration is refused by the new one.
    next.propose_all(2, 10);
    next.assert_converged();
    let (_, applied, state) = next.states().remove(0);
    assert_eq!(applied, 31, "20 entries and the stop-sign, then 10 more");
    assert_eq!(state.applied.len(), 30);
}

fn proposal(client_id: u64, sequence: u64) -> ProposalId {
    ProposalId { client_id, sequence }
}

/// The barriers the leader reported ready since the last call.
fn ready_barriers(cluster: &mut Cluster, leader: u64) -> Vec<ProposalId> {
    let node = cluster.nodes.get_mut(&leader).unwrap();
    std::mem::take(&mut node.reads).into_iter().map(|(id, _)| id).collect()
}

/// I-R2: reads that arrive while a barrier is in flight share the next one, and are never
/// answered by the barrier that was in flight when they arrived.
#[test]
fn reads_share_barriers_but_never_one_appended_before_them() {
    let mut cluster = Cluster::new(&[1, 2, 3], false);
    cluster.propose_all(1, 3);
    let leader = cluster.leader();
    let follower = *cluster.nodes.keys().find(|id| **id != leader).unwrap();
    let (read, barrier) = (|sequence| proposal(8, sequence), |sequence| proposal(9, sequence));
    let mut batcher = ReadBatcher::new(1_000);
    batcher
        .read(cluster.replica(leader), read(1), || barrier(1), 0)
        .unwrap();
    // In flight: the next reads wait, and no barrier is appended for them yet.
    for sequence in [2, 3] {
        batcher
            .read(cluster.replica(leader), read(sequence), || panic!("no barrier yet"), 1)
            .unwrap();
    }
    assert_eq!(batcher.len(), 3);
    let mut elsewhere = ReadBatcher::new(1_000);
    assert!(matches!(
        elsewhere.read(cluster.replica(follower), read(4), || barrier(4), 0),
        Err(ConsensusError::NotLeader { leader: Some(hint) }) if hint == leader
    ));
    assert!(elsewhere.is_empty(), "a refused read is not kept");

    cluster.run(3);
    assert_eq!(ready_barriers(&mut cluster, leader), vec![barrier(1)]);
    let first = batcher.decided(cluster.replica(leader), barrier(1), || barrier(2), 2);
    assert_eq!(first.answered, vec![read(1)], "reads 2 and 3 arrived after barrier 1");
    assert!(first.refused.is_empty());
    assert_eq!(batcher.len(), 2);
    cluster.run(3);
    assert_eq!(ready_barriers(&mut cluster, leader), vec![barrier(2)]);
    let second = batcher.decided(cluster.replica(leader), barrier(2), || panic!("nobody waits"), 3);
    assert_eq!(second.answered, vec![read(2), read(3)], "one barrier for both");
    assert!(batcher.is_empty());

    // A barrier in flight past the stale limit is not waited for: the read appends anew.
    let mut batcher = ReadBatcher::new(10);
    batcher
        .read(cluster.replica(leader), read(5), || barrier(3), 100)
        .unwrap();
    batcher
        .read(cluster.replica(leader), read(6), || barrier(4), 111)
        .unwrap();
    cluster.run(3);
    assert_eq!(ready_barriers(&mut cluster, leader), vec![barrier(3), barrier(4)]);
    let late = batcher.decided(cluster.replica(leader), barrier(3), || panic!("nobody waits"), 112);
    assert_eq!(late.answered, vec![read(5)]);
    let fresh = batcher.decided(cluster.replica(leader), barrier(4), || panic!("nobody waits"), 112);
    assert_eq!(fresh.answered, vec![read(6)]);
    // An unknown barrier answers nothing; a cleared batcher holds nothing.
    assert!(batcher
        .decided(cluster.replica(leader), barrier(77), || barrier(78), 113)
        .answered
        .is_empty());
    batcher
        .read(cluster.replica(leader), read(7), || barrier(5), 200)
        .unwrap();
    batcher.clear();
    assert!(batcher.is_empty());
}
