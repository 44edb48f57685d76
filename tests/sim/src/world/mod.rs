//! The simulated cluster: event queue, nodes, disks, network, clients and the checks.

mod clients;
mod net;

use crate::{
    history::{check_linearizable, HistoryOp, OpKind, Outcome},
    kv::{mix, mix_bytes, KvState},
};
use clients::Client;
use kiseki_consensus::{ProposalId, ReadBatcher, Replica, ReplicaConfig};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Simulated microseconds between two ticks of a replica.
const TICK_US: u64 = 1_000;
/// Search steps the linearizability checker may take per run.
const LINEARIZABILITY_STEPS_MAX: u64 = 5_000_000;
/// Lines of trace kept for a failure report.
const TRACE_LINES_MAX: usize = 400;

/// What to simulate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Nodes, each holding one replica of every shard (3 or 5).
    pub replicas: u64,
    /// Shards (independent consensus groups).
    pub shards: u64,
    /// Clients, each with at most one operation in flight.
    pub clients: u64,
    /// Registers the clients work on (register `k` lives in shard `k % shards + 1`).
    pub keys: u64,
    /// Length of the safety phase (faults on), in ticks.
    pub safety_ticks: u64,
    /// Longest liveness phase (faults off) before the run fails, in ticks.
    pub liveness_ticks: u64,
    /// Keep a readable trace (the last lines are returned with a failure).
    pub trace: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            replicas: 3,
            shards: 2,
            clients: 4,
            keys: 4,
            safety_ticks: 1_500,
            liveness_ticks: 3_000,
            trace: false,
        }
    }
}

/// What a passing run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Hash of every event and action, in order: equal for equal seeds (replay).
    pub trace_hash: u64,
    /// Events processed.
    pub events: u64,
    /// Simulated time at the end, in microseconds.
    pub end_us: u64,
    /// Operations acknowledged, refused before being proposed, and of unknown outcome.
    pub ops_ok: u64,
    /// Operations refused before being proposed.
    pub ops_failed: u64,
    /// Operations given up on without an answer.
    pub ops_unknown: u64,
    /// Messages sent, and dropped by faults or partitions.
    pub messages_sent: u64,
    /// Messages dropped by faults, partitions or down nodes.
    pub messages_dropped: u64,
    /// Messages corrupted in flight (each must be refused).
    pub messages_corrupted: u64,
    /// Node crashes.
    pub crashes: u64,
    /// Partitions started.
    pub partitions: u64,
    /// Records persisted.
    pub records: u64,
    /// Snapshot transfers installed (summed over the final replicas).
    pub snapshots_installed: u64,
    /// Final applied index of each shard.
    pub applied_indexes: Vec<u64>,
}

/// Why a run failed. Every variant names the seed, which replays the run.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// A safety invariant was broken.
    #[error("seed {seed}: {invariant} broken at {time_us} us: {detail}")]
    Invariant {
        /// The seed.
        seed: u64,
        /// The invariant (I-L1 …).
        invariant: &'static str,
        /// Simulated time.
        time_us: u64,
        /// What was seen.
        detail: String,
        /// The last trace lines, when tracing.
        trace: Vec<String>,
    },
    /// The liveness phase did not finish the work or converge in time.
    #[error("seed {seed}: no progress in the liveness phase: {detail}")]
    Liveness {
        /// The seed.
        seed: u64,
        /// What was still pending.
        detail: String,
        /// The last trace lines, when tracing.
        trace: Vec<String>,
    },
    /// The options cannot be simulated.
    #[error("invalid options: {reason}")]
    InvalidOptions {
        /// What is wrong.
        reason: String,
    },
}

impl Failure {
    /// The trace lines kept with the failure (empty unless `Options::trace`).
    pub fn trace(&self) -> &[String] {
        match self {
            Failure::Invariant { trace, .. } | Failure::Liveness { trace, .. } => trace,
            Failure::InvalidOptions { .. } => &[],
        }
    }
}

/// Something that happens at a simulated time.
#[derive(Debug)]
enum Event {
    Tick(u64),
    Deliver {
        from: u64,
        to: u64,
        bytes: Vec<u8>,
        corrupted: bool,
    },
    DiskDone {
        node: u64,
        shard: u64,
        incarnation: u64,
        record_seq: u64,
    },
    Fault,
    Restart(u64),
    Heal(Vec<(u64, u64)>),
    ClientWake {
        client: usize,
        attempt: u64,
    },
    Liveness,
    Check,
}

/// One replica slot of a node, with its simulated disk.
struct SimReplica {
    config: ReplicaConfig,
    replica: Option<Replica<KvState>>,
    durable: Vec<(u64, Vec<u8>)>,
    unflushed: VecDeque<(u64, Vec<u8>)>,
    flush_done_us: u64,
    /// Last record this incarnation handed over, and last reported durable to it.
    emitted_last: u64,
    reported_durable: u64,
    /// `after_record_seq` of the last message this incarnation sent.
    sent_after_record_seq: u64,
    /// Client reads waiting for shared read barriers (I-R2), as a node's host keeps them.
    reads: ReadBatcher,
}

/// The session of the read barriers the replicas' batchers append.
const BARRIER_CLIENT_ID: u64 = u64::MAX - 1;
/// A barrier in flight this long (ms of simulated time) is not waited for.
const BARRIER_STALE_MS: u64 = 10;

struct SimNode {
    up: bool,
    incarnation: u64,
    replicas: BTreeMap<u64, SimReplica>,
}

/// The whole simulated world.
struct World {
    options: Options,
    seed: u64,
    rng: ChaCha8Rng,
    now_us: u64,
    /// Logical time of history events (strictly increasing).
    clock: u64,
    event_seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    nodes: BTreeMap<u64, SimNode>,
    members: Vec<u64>,
    faults: bool,
    issuing: bool,
    blocked: BTreeSet<(u64, u64)>,
    clients: Vec<Client>,
    history: Vec<HistoryOp>,
    chains: BTreeMap<(u64, u64), u64>,
    nudge_sequence: u64,
    /// Last sequence of the barrier session (`BARRIER_CLIENT_ID`).
    barrier_sequence: u64,
    trace: Option<VecDeque<String>>,
    trace_hash: u64,
    report: Report,
    failure: Option<Failure>,
    finished: bool,
}

/// Runs one simulation. The same seed and options give the same events, the same
/// `Report::trace_hash` and the same outcome.
pub fn run(seed: u64, options: &Options) -> Result<Report, Failure> {
    if !(3..=7).contains(&options.replicas) || options.shards == 0 || options.keys == 0 || options.clients == 0 {
        return Err(Failure::InvalidOptions {
            reason: format!("{options:?}"),
        });
    }
    let mut world = World::new(seed, options.clone())?;
    while let Some(((time_us, _), event)) = world.queue.pop_first() {
        world.now_us = time_us;
        world.report.events += 1;
        world.handle(event);
        if let Some(failure) = world.failure.take() {
            return Err(failure);
        }
        if world.finished {
            break;
        }
    }
    world.final_checks()?;
    Ok(world.finish_report())
}

impl World {
    fn new(seed: u64, options: Options) -> Result<Self, Failure> {
        let members: Vec<u64> = (1..=options.replicas).collect();
        let mut world = World {
            rng: ChaCha8Rng::seed_from_u64(seed),
            seed,
            now_us: 0,
            clock: 0,
            event_seq: 0,
            queue: BTreeMap::new(),
            nodes: BTreeMap::new(),
            members: members.clone(),
            faults: true,
            issuing: true,
            blocked: BTreeSet::new(),
            clients: Vec::new(),
            history: Vec::new(),
            chains: BTreeMap::new(),
            nudge_sequence: 0,
            barrier_sequence: 0,
            trace: options.trace.then(VecDeque::new),
            trace_hash: 0,
            report: Report {
                seed,
                ..Report::default()
            },
            failure: None,
            finished: false,
            options,
        };
        for &node in &members {
            let mut replicas = BTreeMap::new();
            for shard in 1..=world.options.shards {
                let config = ReplicaConfig::tiny(shard, node, members.clone());
                let replica = Replica::new(config.clone(), KvState::default())
                    .map_err(|error| world.broken("setup", error.to_string()))?;
                let slot = SimReplica {
                    config,
                    replica: Some(replica),
                    durable: Vec::new(),
                    unflushed: VecDeque::new(),
                    flush_done_us: 0,
                    emitted_last: 0,
                    reported_durable: 0,
                    sent_after_record_seq: 0,
                    reads: ReadBatcher::new(BARRIER_STALE_MS),
                };
                replicas.insert(shard, slot);
            }
            world.nodes.insert(
                node,
                SimNode {
                    up: true,
                    incarnation: 0,
                    replicas,
                },
            );
            let offset_us = world.rng.gen_range(0..TICK_US);
            world.schedule(offset_us, Event::Tick(node));
        }
        for node in members {
            for shard in 1..=world.options.shards {
                world.drain(node, shard);
            }
        }
        for client in 0..world.options.clients {
            world.clients.push(Client::new(1_000 + client));
            let start_us = world.rng.gen_range(0..20 * TICK_US);
            world.schedule(
                start_us,
                Event::ClientWake {
                    client: client as usize,
                    attempt: 0,
                },
            );
        }
        let first_fault_us = world.rng.gen_range(10..100) * TICK_US;
        world.schedule(first_fault_us, Event::Fault);
        world.schedule(world.options.safety_ticks * TICK_US, Event::Liveness);
        Ok(world)
    }

    fn schedule(&mut self, after_us: u64, event: Event) {
        self.event_seq += 1;
        self.queue.insert((self.now_us + after_us, self.event_seq), event);
    }

    /// Adds words to the trace hash, and a line to the trace when tracing.
    fn note(&mut self, words: &[u64], line: impl FnOnce() -> String) {
        self.trace_hash = words
            .iter()
            .fold(mix(self.trace_hash, self.now_us), |hash, word| mix(hash, *word));
        if let Some(trace) = self.trace.as_mut() {
            if trace.len() == TRACE_LINES_MAX {
                trace.pop_front();
            }
            trace.push_back(format!("{:>10} us  {}", self.now_us, line()));
        }
    }

    fn broken(&self, invariant: &'static str, detail: String) -> Failure {
        Failure::Invariant {
            seed: self.seed,
            invariant,
            time_us: self.now_us,
            detail,
            trace: self.trace.iter().flatten().cloned().collect(),
        }
    }

    fn fail(&mut self, invariant: &'static str, detail: String) {
        if self.failure.is_none() {
            self.failure = Some(self.broken(invariant, detail));
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Tick(node) => {
                self.note(&[1, node], || format!("tick node {node}"));
                if self.nodes[&node].up {
                    for shard in 1..=self.options.shards {
                        if let Some(replica) = self.replica_mut(node, shard) {
                            replica.tick();
                        }
                        self.drain(node, shard);
                    }
                }
                self.schedule(TICK_US, Event::Tick(node));
            }
            Event::Deliver {
                from,
                to,
                bytes,
                corrupted,
            } => self.deliver(from, to, &bytes, corrupted),
            Event::DiskDone {
                node,
                shard,
                incarnation,
                record_seq,
            } => self.disk_done(node, shard, incarnation, record_seq),
            Event::Fault => self.fault(),
            Event::Restart(node) => self.restart(node),
            Event::Heal(pairs) => self.heal(&pairs),
            Event::ClientWake { client, attempt } => self.client_wake(client, attempt),
            Event::Liveness => self.start_liveness(),
            Event::Check => self.check_progress(),
        }
    }

    fn replica_mut(&mut self, node: u64, shard: u64) -> Option<&mut Replica<KvState>> {
        self.nodes.get_mut(&node)?.replicas.get_mut(&shard)?.replica.as_mut()
    }

    /// A fresh read barrier id.
    fn next_barrier_id(&mut self) -> ProposalId {
        self.barrier_sequence += 1;
        ProposalId {
            client_id: BARRIER_CLIENT_ID,
            sequence: self.barrier_sequence,
        }
    }

    fn slot_mut(&mut self, node: u64, shard: u64) -> &mut SimReplica {
        match self.nodes.get_mut(&node).and_then(|n| n.replicas.get_mut(&shard)) {
            Some(slot) => slot,
            None => panic!("the simulation has no replica of shard {shard} on node {node}"),
        }
    }

    fn start_liveness(&mut self) {
        self.note(&[9], || {
            "liveness phase: faults off, every node up, partitions healed".to_owned()
        });
        self.faults = false;
        self.issuing = false;
        let pairs: Vec<(u64, u64)> = self.blocked.iter().copied().collect();
        self.heal(&pairs);
        let down: Vec<u64> = self.nodes.iter().filter(|(_, n)| !n.up).map(|(id, _)| *id).collect();
        for node in down {
            self.restart(node);
        }
        for node in self.members.clone() {
            for peer in self.members.clone() {
                for shard in 1..=self.options.shards {
                    if let Some(replica) = self.replica_mut(node, shard) {
                        replica.reconnected(peer);
                    }
                }
            }
        }
        self.schedule(10 * TICK_US, Event::Check);
    }

    /// In the liveness phase: done once no operation is pending and every shard's
    /// replicas applied the same index; meanwhile, barriers through each leader make
    /// followers that missed the last messages resynchronize.
    fn check_progress(&mut self) {
        let idle = self.clients.iter().all(|client| client.op.is_none());
        let mut converged = true;
        for shard in 1..=self.options.shards {
            let applied: BTreeSet<u64> = self
                .members
                .clone()
                .into_iter()
                .filter_map(|node| self.replica_mut(node, shard).map(|r| r.applied_index()))
                .collect();
            if applied.len() != 1 {
                converged = false;
                self.nudge(shard);
            }
        }
        if idle && converged {
            self.note(&[10], || "converged".to_owned());
            self.finished = true;
            return;
        }
        let deadline_us = (self.options.safety_ticks + self.options.liveness_ticks) * TICK_US;
        if self.now_us >= deadline_us {
            let pending: Vec<String> = self
                .clients
                .iter()
                .filter_map(|c| c.op.as_ref().map(|op| format!("{op:?}")))
                .collect();
            let applied = self.applied_table();
            let detail = format!("pending operations {pending:?}; replicas {applied:?}");
            let trace = self.trace.iter().flatten().cloned().collect();
            self.failure = Some(Failure::Liveness {
                seed: self.seed,
                detail,
                trace,
            });
            return;
        }
        self.schedule(10 * TICK_US, Event::Check);
    }

    fn nudge(&mut self, shard: u64) {
        let leader = self
            .members
            .clone()
            .into_iter()
            .find(|node| self.replica_mut(*node, shard).is_some_and(|r| r.is_leader()));
        if let Some(leader) = leader {
            self.nudge_sequence += 1;
            let read_id = kiseki_consensus::ProposalId {
                client_id: u64::MAX,
                sequence: self.nudge_sequence,
            };
            if let Some(replica) = self.replica_mut(leader, shard) {
                let _ = replica.read_barrier(read_id);
            }
            self.drain(leader, shard);
        }
    }

    /// Per replica: node, shard, applied and decided index, believed leader, leading.
    fn applied_table(&mut self) -> Vec<String> {
        let mut table = Vec::new();
        for node in self.members.clone() {
            for shard in 1..=self.options.shards {
                if let Some(replica) = self.replica_mut(node, shard) {
                    table.push(format!(
                        "node {node} shard {shard}: applied {} decided {} leader {:?}{}",
                        replica.applied_index(),
                        replica.decided_index(),
                        replica.leader(),
                        if replica.is_leader() { " (leading)" } else { "" }
                    ));
                }
            }
        }
        table
    }

    /// I-L2, I-L3 (final states) and I-L4 after the run.
    fn final_checks(&mut self) -> Result<(), Failure> {
        let mut finals: BTreeMap<u64, KvState> = BTreeMap::new();
        for shard in 1..=self.options.shards {
            let mut digests = BTreeMap::new();
            for node in self.members.clone() {
                let Some(replica) = self.replica_mut(node, shard) else {
                    continue;
                };
                let digest = mix_bytes(0, &kiseki_consensus::StateMachine::snapshot(replica.state()));
                digests.insert(node, (replica.applied_index(), digest));
                finals.entry(shard).or_insert_with(|| replica.state().clone());
            }
            let distinct: BTreeSet<&(u64, u64)> = digests.values().collect();
            if distinct.len() != 1 {
                return Err(self.broken("I-L3", format!("shard {shard}: (applied, digest) by node {digests:?}")));
            }
            self.report
                .applied_indexes
                .push(digests.values().next().map_or(0, |(applied, _)| *applied));
        }
        let shards = self.options.shards;
        let writes_of = |key: u64| -> Vec<u64> {
            finals
                .get(&(key % shards + 1))
                .and_then(|state| state.writes.get(&key))
                .cloned()
                .unwrap_or_default()
        };
        for op in &self.history {
            let value = match (&op.kind, &op.outcome) {
                (OpKind::Put(value), Outcome::Ok { .. }) => *value,
                (OpKind::Cas { new, .. }, Outcome::Ok { written: true, .. }) => *new,
                _ => continue,
            };
            if !writes_of(op.key).contains(&value) {
                return Err(self.broken("I-L2", format!("acknowledged write lost: {op:?}")));
            }
        }
        check_linearizable(&self.history, writes_of, LINEARIZABILITY_STEPS_MAX)
            .map_err(|detail| self.broken("I-L4", detail))?;
        Ok(())
    }

    fn finish_report(mut self) -> Report {
        for op in &self.history {
            match op.outcome {
                Outcome::Ok { .. } => self.report.ops_ok += 1,
                Outcome::Failed => self.report.ops_failed += 1,
                Outcome::Unknown | Outcome::Pending => self.report.ops_unknown += 1,
            }
        }
        for node in self.members.clone() {
            for shard in 1..=self.options.shards {
                if let Some(replica) = self.replica_mut(node, shard) {
                    self.report.snapshots_installed += replica.snapshot_transfers().1;
                }
            }
        }
        self.report.trace_hash = self.trace_hash;
        self.report.end_us = self.now_us;
        self.report
    }
}
