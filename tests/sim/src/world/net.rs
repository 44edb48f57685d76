//! Replica actions, the simulated disks and network, crashes and partitions.

use super::{Event, World, TICK_US};
use crate::kv::{mix_bytes, KvOutput, KvState};
use kiseki_consensus::{peek_route, Action, ConsensusError, Replica};
use rand::Rng;

/// Per-mille chances of a fault per message in the safety phase.
const DROP_PER_MILLE: u32 = 20;
const DUPLICATE_PER_MILLE: u32 = 20;
const SLOW_PER_MILLE: u32 = 50;
const CORRUPT_PER_MILLE: u32 = 2;
/// Per-mille chance that a record takes 3 to 30 ms to become durable.
const SLOW_FLUSH_PER_MILLE: u32 = 50;

impl World {
    /// Polls a replica and carries out its actions.
    pub(super) fn drain(&mut self, node: u64, shard: u64) {
        let Some(replica) = self.replica_mut(node, shard) else {
            return;
        };
        for action in replica.poll_actions() {
            self.carry_out(node, shard, action);
        }
    }

    fn carry_out(&mut self, node: u64, shard: u64, action: Action<KvOutput>) {
        match action {
            Action::Persist { record_seq, bytes } => {
                self.note(&[20, node, shard, record_seq, mix_bytes(0, &bytes)], || {
                    format!(
                        "node {node} shard {shard}: persist record {record_seq} ({} bytes)",
                        bytes.len()
                    )
                });
                self.report.records += 1;
                let delay_us = if self.rng.gen_ratio(SLOW_FLUSH_PER_MILLE, 1000) {
                    self.rng.gen_range(3_000..30_000)
                } else {
                    self.rng.gen_range(100..3_000)
                };
                let done_us = self.now_us + delay_us;
                let incarnation = self.nodes[&node].incarnation;
                let slot = self.slot_mut(node, shard);
                slot.emitted_last = record_seq;
                slot.flush_done_us = slot.flush_done_us.max(done_us);
                slot.unflushed.push_back((record_seq, bytes));
                let after_us = slot.flush_done_us - self.now_us;
                self.schedule(
                    after_us,
                    Event::DiskDone {
                        node,
                        shard,
                        incarnation,
                        record_seq,
                    },
                );
            }
            Action::Send {
                to,
                bytes,
                after_record_seq,
            } => {
                // I-L1: the record the message follows must be durable on this simulated
                // disk (and reported so), and messages never go back to earlier records.
                let slot = self.slot_mut(node, shard);
                let on_disk = slot.durable.iter().any(|(seq, _)| *seq >= after_record_seq) || after_record_seq == 0;
                let in_order = after_record_seq >= slot.sent_after_record_seq;
                slot.sent_after_record_seq = after_record_seq;
                let durable = slot.reported_durable;
                if after_record_seq > durable || !on_disk || !in_order {
                    let detail = format!(
                        "node {node} shard {shard} sent to {to} after record {after_record_seq}, durable {durable}"
                    );
                    self.fail("I-L1", detail);
                    return;
                }
                self.send(node, to, bytes);
            }
            Action::Applied {
                index,
                proposal_id,
                output,
            } => {
                self.note(&[21, node, shard, index, output.chain], || {
                    format!("node {node} shard {shard}: applied {index} {proposal_id:?} {output:?}")
                });
                if let Some(previous) = self.chains.insert((shard, index), output.chain) {
                    if previous != output.chain && proposal_id.client_id != 0 {
                        self.fail(
                            "I-L3",
                            format!(
                                "shard {shard} index {index}: chain {previous:x} elsewhere, {:x} on node {node}",
                                output.chain
                            ),
                        );
                        return;
                    }
                }
                self.client_applied(node, shard, proposal_id, &output);
            }
            Action::ReadReady { read_id, index } => {
                self.note(&[22, node, shard, index], || {
                    format!("node {node} shard {shard}: read {read_id:?} at {index}")
                });
                let (barrier_id, now_ms) = (self.next_barrier_id(), self.now_us / 1_000);
                let slot = self.slot_mut(node, shard);
                let decided = match slot.replica.as_mut() {
                    Some(replica) => slot.reads.decided(replica, read_id, || barrier_id, now_ms),
                    None => Default::default(),
                };
                for read in decided.answered {
                    self.client_read_ready(node, shard, read);
                }
            }
            Action::Trim { below_record_seq } => {
                self.note(&[23, node, shard, below_record_seq], || {
                    format!("node {node} shard {shard}: trim below {below_record_seq}")
                });
                self.slot_mut(node, shard)
                    .durable
                    .retain(|(seq, _)| *seq >= below_record_seq);
            }
            Action::LeaderChanged { leader } => {
                self.note(&[24, node, shard, leader.unwrap_or(0)], || {
                    format!("node {node} shard {shard}: leader {leader:?}")
                });
                if leader != Some(node) {
                    // As a host does: the waiting reads are refused; their clients retry.
                    self.slot_mut(node, shard).reads.clear();
                }
            }
            Action::Reconfigured { configuration_id, .. } => {
                self.fail("setup", format!("unexpected reconfiguration to {configuration_id}"));
            }
        }
    }

    fn send(&mut self, from: u64, to: u64, bytes: Vec<u8>) {
        self.report.messages_sent += 1;
        let dropped = self.faults && self.rng.gen_ratio(DROP_PER_MILLE, 1000);
        if dropped || self.blocked.contains(&(from, to)) {
            self.report.messages_dropped += 1;
            return;
        }
        let copies = if self.faults && self.rng.gen_ratio(DUPLICATE_PER_MILLE, 1000) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay_us = if self.faults && self.rng.gen_ratio(SLOW_PER_MILLE, 1000) {
                self.rng.gen_range(2_000..20_000)
            } else {
                self.rng.gen_range(50..1_500)
            };
            let mut bytes = bytes.clone();
            let corrupted = self.faults && self.rng.gen_ratio(CORRUPT_PER_MILLE, 1000);
            if corrupted {
                let bit = self.rng.gen_range(0..bytes.len() * 8);
                bytes[bit / 8] ^= 1 << (bit % 8);
                self.report.messages_corrupted += 1;
            }
            self.schedule(
                delay_us,
                Event::Deliver {
                    from,
                    to,
                    bytes,
                    corrupted,
                },
            );
        }
    }

    pub(super) fn deliver(&mut self, from: u64, to: u64, bytes: &[u8], corrupted: bool) {
        self.note(&[2, from, to, mix_bytes(0, bytes)], || {
            format!("deliver {from} -> {to} ({} bytes)", bytes.len())
        });
        if !self.nodes[&to].up || self.blocked.contains(&(from, to)) {
            self.report.messages_dropped += 1;
            return;
        }
        let route = match peek_route(bytes) {
            Ok(route) => route,
            Err(_) if corrupted => return,
            Err(error) => return self.fail("wire", format!("undecodable message {from} -> {to}: {error}")),
        };
        let shard = route.shard_id;
        let Some(replica) = self.replica_mut(to, shard) else {
            return self.fail("wire", format!("message for unknown shard {shard}"));
        };
        match replica.receive(from, bytes) {
            Ok(()) => self.drain(to, shard),
            Err(ConsensusError::Busy { .. }) => self.report.messages_dropped += 1,
            Err(ConsensusError::CorruptMessage { .. }) if corrupted => {}
            Err(error) => self.fail("wire", format!("node {to} refused a message from {from}: {error}")),
        }
    }

    pub(super) fn disk_done(&mut self, node: u64, shard: u64, incarnation: u64, record_seq: u64) {
        if self.nodes[&node].incarnation != incarnation {
            return;
        }
        self.note(&[3, node, shard, record_seq], || {
            format!("node {node} shard {shard}: record {record_seq} durable")
        });
        let slot = self.slot_mut(node, shard);
        while slot.unflushed.front().is_some_and(|(seq, _)| *seq <= record_seq) {
            if let Some(record) = slot.unflushed.pop_front() {
                slot.durable.push(record);
            }
        }
        slot.reported_durable = slot.reported_durable.max(record_seq);
        let persisted = slot.replica.as_mut().map(|replica| replica.persisted(record_seq));
        if let Some(Err(error)) = persisted {
            return self.fail("disk", error.to_string());
        }
        self.drain(node, shard);
    }

    /// A random fault: a crash, a partition (symmetric or one-way), or nothing.
    pub(super) fn fault(&mut self) {
        if !self.faults {
            return;
        }
        let roll = self.rng.gen_range(0..100);
        if roll < 8 {
            // Power loss: several nodes at once, each losing its unflushed records.
            let count = self.rng.gen_range(2..=self.members.len());
            let mut up: Vec<u64> = self.nodes.iter().filter(|(_, n)| n.up).map(|(id, _)| *id).collect();
            for _ in 0..count.min(up.len()) {
                let node = up.remove(self.rng.gen_range(0..up.len()));
                self.crash(node);
            }
        } else if roll < 25 {
            let up: Vec<u64> = self.nodes.iter().filter(|(_, n)| n.up).map(|(id, _)| *id).collect();
            if !up.is_empty() {
                let node = up[self.rng.gen_range(0..up.len())];
                self.crash(node);
            }
        } else if roll < 75 {
            let pairs = self.random_partition(roll < 60);
            self.report.partitions += 1;
            self.note(&[4, pairs.len() as u64], || format!("partition {pairs:?}"));
            self.blocked.extend(pairs.iter().copied());
            let heal_us = self.rng.gen_range(10..300) * TICK_US;
            self.schedule(heal_us, Event::Heal(pairs));
        }
        let next_us = self.rng.gen_range(10..150) * TICK_US;
        self.schedule(next_us, Event::Fault);
    }

    fn random_partition(&mut self, symmetric: bool) -> Vec<(u64, u64)> {
        let members = self.members.clone();
        if symmetric {
            let side: Vec<bool> = loop {
                let side: Vec<bool> = members.iter().map(|_| self.rng.gen_bool(0.5)).collect();
                if side.iter().any(|s| *s) && side.iter().any(|s| !*s) {
                    break side;
                }
            };
            let mut pairs = Vec::new();
            for (a, side_a) in members.iter().zip(&side) {
                for (b, side_b) in members.iter().zip(&side) {
                    if side_a != side_b {
                        pairs.push((*a, *b));
                    }
                }
            }
            pairs
        } else {
            let from = members[self.rng.gen_range(0..members.len())];
            let others: Vec<u64> = members.iter().copied().filter(|m| *m != from).collect();
            vec![(from, others[self.rng.gen_range(0..others.len())])]
        }
    }

    pub(super) fn heal(&mut self, pairs: &[(u64, u64)]) {
        self.note(&[5, pairs.len() as u64], || format!("heal {pairs:?}"));
        for pair in pairs {
            self.blocked.remove(pair);
        }
        // A re-established connection is reported to both ends, as a transport would.
        for &(a, b) in pairs {
            for shard in 1..=self.options.shards {
                if let Some(replica) = self.replica_mut(a, shard) {
                    replica.reconnected(b);
                }
                self.drain(a, shard);
            }
        }
    }

    /// A node crashes: its replicas vanish; of the records not yet durable, a random
    /// prefix survives (writes that reached the platter), the rest is lost.
    fn crash(&mut self, node: u64) {
        self.report.crashes += 1;
        self.note(&[6, node], || format!("crash node {node}"));
        let survivors: Vec<usize> = {
            let slots = self.nodes[&node]
                .replicas
                .values()
                .map(|slot| slot.unflushed.len())
                .collect::<Vec<_>>();
            slots.into_iter().map(|len| self.rng.gen_range(0..=len)).collect()
        };
        if let Some(node_state) = self.nodes.get_mut(&node) {
            node_state.up = false;
            node_state.incarnation += 1;
            for (slot, keep) in node_state.replicas.values_mut().zip(survivors) {
                slot.replica = None;
                slot.reads.clear();
                let kept: Vec<_> = slot.unflushed.drain(..).take(keep).collect();
                slot.durable.extend(kept);
                slot.flush_done_us = 0;
            }
        }
        let restart_us = self.rng.gen_range(5..150) * TICK_US;
        self.schedule(restart_us, Event::Restart(node));
    }

    /// A node restarts: every replica recovers from its surviving records.
    pub(super) fn restart(&mut self, node: u64) {
        if self.nodes[&node].up {
            return;
        }
        self.note(&[7, node], || format!("restart node {node}"));
        if let Some(node_state) = self.nodes.get_mut(&node) {
            node_state.up = true;
        }
        for shard in 1..=self.options.shards {
            let slot = self.slot_mut(node, shard);
            let records = slot.durable.iter().map(|(_, bytes)| bytes.clone()).collect::<Vec<_>>();
            // No record survived: the replica never made one durable, so it never sent a
            // message either; it starts afresh.
            let recovered = if records.is_empty() {
                Replica::new(slot.config.clone(), KvState::default())
            } else {
                Replica::recover(slot.config.clone(), records)
            };
            match recovered {
                Ok(replica) => {
                    let (last, _) = replica.record_seqs();
                    slot.emitted_last = last;
                    slot.reported_durable = last;
                    slot.sent_after_record_seq = 0;
                    slot.replica = Some(replica);
                }
                Err(error) => return self.fail("recovery", format!("node {node} shard {shard}: {error}")),
            }
            self.drain(node, shard);
        }
        for peer in self.members.clone() {
            for shard in 1..=self.options.shards {
                if peer != node && self.nodes[&peer].up {
                    if let Some(replica) = self.replica_mut(peer, shard) {
                        replica.reconnected(node);
                    }
                    self.drain(peer, shard);
                }
            }
        }
    }
}
