//! Simulated clients: one operation at a time, sent to the node believed to lead the
//! register's shard, retried on refusals and timeouts (same proposal id, so the replica's
//! deduplication applies it at most once), recorded in the history.

use super::{Event, World, TICK_US};
use crate::{
    history::{HistoryOp, OpKind, Outcome},
    kv::{KvCommand, KvOutput},
};
use kiseki_consensus::{ConsensusError, ProposalId};
use rand::Rng;
use std::collections::BTreeMap;

/// Ticks a client waits for an answer before retrying.
const CLIENT_TIMEOUT_TICKS: u64 = 40;
/// Attempts before a client gives up on an operation (safety phase only).
const ATTEMPTS_MAX: u64 = 6;

/// One client.
pub(super) struct Client {
    id: u64,
    sequence: u64,
    pub(super) op: Option<ClientOp>,
    leader_guess: BTreeMap<u64, u64>,
    observed: BTreeMap<u64, Option<u64>>,
}

/// The client's operation in flight.
#[derive(Debug)]
pub(super) struct ClientOp {
    history_index: usize,
    key: u64,
    shard: u64,
    /// `None` for a read.
    command: Option<KvCommand>,
    proposal_id: ProposalId,
    attempt: u64,
    node: u64,
    proposed: bool,
    waiting: bool,
}

impl Client {
    pub(super) fn new(id: u64) -> Self {
        Self {
            id,
            sequence: 0,
            op: None,
            leader_guess: BTreeMap::new(),
            observed: BTreeMap::new(),
        }
    }
}

impl World {
    pub(super) fn client_wake(&mut self, client: usize, attempt: u64) {
        match &self.clients[client].op {
            None if attempt == 0 && self.issuing => self.start_op(client),
            Some(op) if op.attempt == attempt => {
                let give_up = self.faults && op.attempt >= ATTEMPTS_MAX;
                if give_up {
                    self.finish_op(client, None);
                } else {
                    if op.waiting {
                        // Timed out: maybe the node is gone; try the next one.
                        let (shard, node) = (op.shard, op.node);
                        let next = self.next_member(node);
                        self.clients[client].leader_guess.insert(shard, next);
                    }
                    self.attempt_op(client);
                }
            }
            _ => {}
        }
    }

    fn start_op(&mut self, client: usize) {
        let key = self.rng.gen_range(0..self.options.keys);
        let shard = key % self.options.shards + 1;
        let roll = self.rng.gen_range(0..100);
        let state = &mut self.clients[client];
        state.sequence += 1;
        let value = state.id * 1_000_000 + state.sequence;
        let (kind, command) = if roll < 35 {
            (OpKind::Put(value), Some(KvCommand::Put { key, value }))
        } else if roll < 70 {
            (OpKind::Get, None)
        } else {
            let expected = state.observed.get(&key).copied().flatten();
            (
                OpKind::Cas { expected, new: value },
                Some(KvCommand::Cas {
                    key,
                    expected,
                    new: value,
                }),
            )
        };
        let proposal_id = ProposalId {
            client_id: state.id,
            sequence: state.sequence,
        };
        let client_id = state.id;
        self.clock += 1;
        self.history.push(HistoryOp {
            client: client_id,
            key,
            kind,
            invoke: self.clock,
            outcome: Outcome::Pending,
        });
        let guess = match self.clients[client].leader_guess.get(&shard) {
            Some(node) => *node,
            None => self.members[self.rng.gen_range(0..self.members.len())],
        };
        self.clients[client].leader_guess.insert(shard, guess);
        self.clients[client].op = Some(ClientOp {
            history_index: self.history.len() - 1,
            key,
            shard,
            command,
            proposal_id,
            attempt: 0,
            node: guess,
            proposed: false,
            waiting: false,
        });
        let invoked = format!("{:?}", self.history.last());
        self.note(&[30, client_id, key], || {
            format!("client {client_id}: invoke {invoked}")
        });
        self.attempt_op(client);
    }

    fn attempt_op(&mut self, client: usize) {
        let Some(op) = self.clients[client].op.as_mut() else {
            return;
        };
        op.attempt += 1;
        op.waiting = false;
        let (shard, attempt, proposal_id, command) = (op.shard, op.attempt, op.proposal_id, op.command.clone());
        let node = self.clients[client]
            .leader_guess
            .get(&shard)
            .copied()
            .unwrap_or(self.members[0]);
        if !self.nodes[&node].up {
            let next = self.next_member(node);
            self.clients[client].leader_guess.insert(shard, next);
            self.schedule(TICK_US, Event::ClientWake { client, attempt });
            return;
        }
        if self.replica_mut(node, shard).is_none() {
            return;
        }
        let (barrier_id, now_ms) = (self.next_barrier_id(), self.now_us / 1_000);
        let slot = self.slot_mut(node, shard);
        let Some(replica) = slot.replica.as_mut() else {
            return;
        };
        let result = match command {
            Some(command) => replica.propose(command, proposal_id),
            None => slot.reads.read(replica, proposal_id, || barrier_id, now_ms),
        };
        let client_id = self.clients[client].id;
        self.note(&[31, client_id, node, attempt], || {
            format!("client {client_id}: attempt {attempt} at node {node}: {result:?}")
        });
        match result {
            Ok(()) => {
                if let Some(op) = self.clients[client].op.as_mut() {
                    op.proposed = true;
                    op.waiting = true;
                    op.node = node;
                }
                self.schedule(CLIENT_TIMEOUT_TICKS * TICK_US, Event::ClientWake { client, attempt });
                self.drain(node, shard);
            }
            Err(ConsensusError::NotLeader { leader }) => {
                let next = leader.unwrap_or_else(|| self.next_member(node));
                self.clients[client].leader_guess.insert(shard, next);
                let delay_us = self.rng.gen_range(200..1_500);
                self.schedule(delay_us, Event::ClientWake { client, attempt });
            }
            Err(ConsensusError::Busy { .. } | ConsensusError::Reconfiguring) => {
                self.schedule(2 * TICK_US, Event::ClientWake { client, attempt });
            }
            Err(error) => self.fail("client", format!("unexpected refusal: {error}")),
        }
    }

    fn next_member(&self, node: u64) -> u64 {
        let position = self.members.iter().position(|m| *m == node).unwrap_or(0);
        self.members[(position + 1) % self.members.len()]
    }

    fn waiting_client(&self, node: u64, shard: u64, proposal_id: ProposalId) -> Option<usize> {
        self.clients.iter().position(|client| {
            client
                .op
                .as_ref()
                .is_some_and(|op| op.waiting && op.node == node && op.shard == shard && op.proposal_id == proposal_id)
        })
    }

    pub(super) fn client_applied(&mut self, node: u64, shard: u64, proposal_id: ProposalId, output: &KvOutput) {
        if let Some(client) = self.waiting_client(node, shard, proposal_id) {
            self.finish_op(client, Some((None, output.ok)));
        }
    }

    pub(super) fn client_read_ready(&mut self, node: u64, shard: u64, read_id: ProposalId) {
        let Some(client) = self.waiting_client(node, shard, read_id) else {
            return;
        };
        let key = self.clients[client].op.as_ref().map_or(0, |op| op.key);
        let value = self
            .replica_mut(node, shard)
            .and_then(|replica| replica.state().registers.get(&key).copied());
        self.finish_op(client, Some((value, false)));
    }

    /// Records the outcome (`None`: given up) and schedules the client's next operation.
    fn finish_op(&mut self, client: usize, answer: Option<(Option<u64>, bool)>) {
        let Some(op) = self.clients[client].op.take() else {
            return;
        };
        self.clock += 1;
        let outcome = match answer {
            Some((value, written)) => Outcome::Ok {
                response: self.clock,
                value,
                written,
            },
            None if op.proposed => Outcome::Unknown,
            None => Outcome::Failed,
        };
        let observed = match (&self.history[op.history_index].kind, &outcome) {
            (OpKind::Put(value), Outcome::Ok { .. }) => Some(Some(*value)),
            (OpKind::Cas { new, .. }, Outcome::Ok { written: true, .. }) => Some(Some(*new)),
            (OpKind::Get, Outcome::Ok { value, .. }) => Some(*value),
            _ => None,
        };
        if let Some(observed) = observed {
            self.clients[client].observed.insert(op.key, observed);
        }
        let client_id = self.clients[client].id;
        self.note(&[32, client_id, self.clock], || {
            format!("client {client_id}: {outcome:?}")
        });
        self.history[op.history_index].outcome = outcome;
        let think_us = self.rng.gen_range(0..3 * TICK_US);
        self.schedule(think_us, Event::ClientWake { client, attempt: 0 });
    }
}
