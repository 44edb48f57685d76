//! One core's shard replicas and the I/O they ask for.
//!
//! The [`CoreHost`] owns every replica placed on its core. Each event (a message, a tick,
//! a proposal, a durable record) goes to the replica, and the replica's actions are
//! carried out at once: records are written to the core's shard log, messages queued on
//! the link to the peer's core (only after the records before them are durable, I-L1:
//! the replica withholds them until [`Replica::persisted`]), clients answered once their
//! delta is applied (I-L2). Nothing here is shared with another core.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use kiseki_consensus::{peek_route, Action, ConsensusError, ProposalId, ReadBatcher, Replica, ReplicaConfig};
use kiseki_namespace::{Delta, NamespaceConfig, NamespaceId};
use kiseki_net::{encode_body, RpcClient, Transport};
use kiseki_runtime::local::{oneshot, Notify, OneshotSender};

use crate::log::ShardLog;
use crate::machine::NamespaceMachine;
use crate::HostError;
use kiseki_api::meta::{ConsensusMessage, ProposeReply, ReadReply, Redirect, ReplicaStatus, MSG_CONSENSUS};
use kiseki_api::ClusterMap;
use kiseki_api::{DeltaOutcome, ReadQuery};

/// Settings of a core's host.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// This node's id.
    pub node_id: u64,
    /// This core's index.
    pub core: usize,
    /// Time between replica ticks.
    pub tick_interval_ms: u64,
    /// Ticks without a leader's heartbeat before an election.
    pub election_timeout_ticks: u64,
    /// Applied entries between snapshot records (at least).
    pub snapshot_every_entries: u64,
    /// Log bytes between snapshot records, in percent of the last snapshot record (at
    /// least; 0: entries only). See `ReplicaConfig::snapshot_log_bytes_percent`.
    pub snapshot_log_bytes_percent: u64,
    /// How long a proposal or read waits for its answer before the client is told to retry.
    pub request_timeout_ms: u64,
    /// Messages queued per peer link; beyond it messages are dropped (the protocol
    /// resends what matters).
    pub peer_queue_max: usize,
}

impl HostConfig {
    /// Defaults for `node_id`'s core `core`.
    pub fn new(node_id: u64, core: usize) -> HostConfig {
        HostConfig {
            node_id,
            core,
            tick_interval_ms: 20,
            election_timeout_ticks: 10,
            snapshot_every_entries: 10_000,
            snapshot_log_bytes_percent: 100,
            request_timeout_ms: 5_000,
            peer_queue_max: 16 * 1024,
        }
    }
}

/// The namespace configuration of a shard: identical on every replica.
pub fn shard_namespace_config(shard: u64) -> NamespaceConfig {
    NamespaceConfig {
        namespace_id: NamespaceId(shard),
        ..NamespaceConfig::default()
    }
}

struct Shard {
    replica: Replica<NamespaceMachine>,
    proposals: BTreeMap<ProposalId, OneshotSender<ProposeReply>>,
    reads: BTreeMap<ProposalId, (ReadQuery, OneshotSender<ReadReply>)>,
    /// The reads waiting for read barriers, which concurrent reads share (I-R2).
    read_batcher: ReadBatcher,
    /// Records handed to the log, in order, not yet reported durable.
    unreported: VecDeque<u64>,
    /// Records durable on the device but behind an earlier one still being written.
    durable: BTreeSet<u64>,
}

/// A queue of consensus messages to one core of one peer node, drained by its own task.
struct PeerLink {
    node: u64,
    address: SocketAddr,
    queue: RefCell<VecDeque<Vec<u8>>>,
    ready: Notify,
    dropped: Cell<u64>,
}

struct Inner {
    config: HostConfig,
    transport: Rc<dyn Transport>,
    map: ClusterMap,
    log: ShardLog,
    shards: RefCell<BTreeMap<u64, Shard>>,
    peers: RefCell<BTreeMap<SocketAddr, Rc<PeerLink>>>,
    read_client_id: u64,
    read_sequence: Cell<u64>,
    /// When this host started: the read batchers' clock.
    started: Instant,
    /// Shards with proposals, reads, messages or durability reports not polled yet: the
    /// pump task polls each once per executor turn, so everything that arrived in the
    /// same turn goes into one log record (group commit).
    pumps_due: RefCell<BTreeSet<u64>>,
    /// Wakes the pump task (apart from `Inner`, so the task holds no strong reference).
    pump_wake: Rc<Notify>,
    stopping: Cell<bool>,
    /// Records whose writer task could not be spawned (the core at its task limit);
    /// retried every tick. Their replica waits, since durability is reported in order.
    deferred_persists: RefCell<VecDeque<(u64, u64, Vec<u8>)>>,
}

/// The shard replicas of one core.
#[derive(Clone)]
pub struct CoreHost {
    inner: Rc<Inner>,
}

impl CoreHost {
    /// Recovers (or creates) every replica the map places on this core from the core's
    /// shard log, and starts the ticker. `transport` (TCP, or TLS with mutual
    /// authentication) carries the traffic to peers and serves clients.
    pub async fn start(
        config: HostConfig,
        map: ClusterMap,
        log: ShardLog,
        transport: Rc<dyn Transport>,
    ) -> Result<CoreHost, HostError> {
        map.validate()?;
        let mut shards = BTreeMap::new();
        for shard in map.shards_on(config.node_id, config.core) {
            let replica = recover_replica(&config, &map, &log, shard).await?;
            shards.insert(
                shard,
                Shard {
                    replica,
                    proposals: BTreeMap::new(),
                    reads: BTreeMap::new(),
                    read_batcher: ReadBatcher::new(config.request_timeout_ms / 4),
                    unreported: VecDeque::new(),
                    durable: BTreeSet::new(),
                },
            );
        }
        // Reads use their own session per core; its sequence restarts high enough to
        // stay above anything an earlier life of this core proposed.
        let read_client_id = (1 << 63) | (config.node_id << 16) | config.core as u64;
        let read_sequence = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.as_micros() as u64)
            .unwrap_or(1);
        let host = CoreHost {
            inner: Rc::new(Inner {
                config,
                transport,
                map,
                log,
                shards: RefCell::new(shards),
                peers: RefCell::new(BTreeMap::new()),
                read_client_id,
                read_sequence: Cell::new(read_sequence),
                started: Instant::now(),
                pumps_due: RefCell::new(BTreeSet::new()),
                pump_wake: Rc::new(Notify::new()),
                stopping: Cell::new(false),
                deferred_persists: RefCell::new(VecDeque::new()),
            }),
        };
        let shard_ids: Vec<u64> = host.inner.shards.borrow().keys().copied().collect();
        for shard in shard_ids {
            host.pump(shard);
        }
        let ticker = Rc::downgrade(&host.inner);
        kiseki_runtime::spawn("shard-ticker", tick_loop(ticker))?;
        kiseki_runtime::spawn(
            "shard-pump",
            pump_loop(Rc::downgrade(&host.inner), Rc::clone(&host.inner.pump_wake)),
        )?;
        Ok(host)
    }

    /// The cluster map.
    pub fn map(&self) -> &ClusterMap {
        &self.inner.map
    }

    /// The transport peers and clients reach this core through.
    pub fn transport(&self) -> Rc<dyn Transport> {
        Rc::clone(&self.inner.transport)
    }

    /// Node id and core index.
    pub fn identity(&self) -> (u64, usize) {
        (self.inner.config.node_id, self.inner.config.core)
    }

    /// Stops ticking and sending; pending requests are answered `Busy`.
    pub fn stop(&self) {
        self.inner.stopping.set(true);
        for link in self.inner.peers.borrow().values() {
            link.ready.notify();
        }
        let mut shards = self.inner.shards.borrow_mut();
        for shard in shards.values_mut() {
            fail_waiters(shard, Redirect::Busy);
        }
    }

    /// A consensus message arrived from node `from`.
    pub fn receive(&self, from: u64, bytes: &[u8]) -> Result<(), HostError> {
        let route = peek_route(bytes)?;
        if route.from != from || route.to != self.inner.config.node_id {
            return Err(HostError::Invalid(format!(
                "message for node {} from {} arrived at node {} from {from}",
                route.to, route.from, self.inner.config.node_id
            )));
        }
        {
            let mut shards = self.inner.shards.borrow_mut();
            let shard = shards
                .get_mut(&route.shard_id)
                .ok_or(HostError::WrongCore { shard: route.shard_id })?;
            match shard.replica.receive(from, bytes) {
                Ok(()) => {}
                // Overload and stale traffic are the protocol's to recover from.
                Err(ConsensusError::Busy { .. }) => return Ok(()),
                Err(error) => return Err(error.into()),
            }
        }
        self.pump_soon(route.shard_id);
        Ok(())
    }

    /// Proposes `delta` on `shard` and waits until it is applied (committed on a majority).
    pub async fn propose(&self, shard: u64, proposal_id: ProposalId, delta: Delta) -> ProposeReply {
        let receiver = {
            let mut shards = self.inner.shards.borrow_mut();
            let Some(slot) = shards.get_mut(&shard) else {
                return ProposeReply::Redirect(Redirect::WrongCore);
            };
            if let Err(error) = slot.replica.propose(delta, proposal_id) {
                return ProposeReply::Redirect(redirect_of(&error));
            }
            let (sender, receiver) = oneshot();
            // A retry of a proposal still waiting replaces the older waiter.
            slot.proposals.insert(proposal_id, sender);
            receiver
        };
        self.pump_soon(shard);
        let timeout = Duration::from_millis(self.inner.config.request_timeout_ms);
        match kiseki_runtime::timeout(timeout, receiver).await {
            Some(Some(reply)) => reply,
            // A retry of the same proposal took over the waiter slot: it gets the answer.
            Some(None) => ProposeReply::Redirect(Redirect::Busy),
            None => {
                if let Some(slot) = self.inner.shards.borrow_mut().get_mut(&shard) {
                    slot.proposals.remove(&proposal_id);
                }
                ProposeReply::Redirect(self.not_leader_or_busy(shard))
            }
        }
    }

    /// Answers `query` on `shard` linearizably: after a read barrier through the log,
    /// which concurrent reads share (`ReadBatcher`, I-R2: a read waits for a barrier
    /// appended after it arrived).
    pub async fn read(&self, shard: u64, query: ReadQuery) -> ReadReply {
        let read_id = self.next_read_id();
        let receiver = {
            let mut shards = self.inner.shards.borrow_mut();
            let Some(slot) = shards.get_mut(&shard) else {
                return ReadReply::Redirect(Redirect::WrongCore);
            };
            let now_ms = self.now_ms();
            let Shard {
                replica, read_batcher, ..
            } = slot;
            if let Err(error) = read_batcher.read(replica, read_id, || self.next_read_id(), now_ms) {
                return ReadReply::Redirect(redirect_of(&error));
            }
            let (sender, receiver) = oneshot();
            slot.reads.insert(read_id, (query, sender));
            receiver
        };
        self.pump_soon(shard);
        let timeout = Duration::from_millis(self.inner.config.request_timeout_ms);
        match kiseki_runtime::timeout(timeout, receiver).await {
            Some(Some(reply)) => reply,
            _ => {
                if let Some(slot) = self.inner.shards.borrow_mut().get_mut(&shard) {
                    slot.reads.remove(&read_id);
                }
                ReadReply::Redirect(self.not_leader_or_busy(shard))
            }
        }
    }

    /// Milliseconds since this host started (the read batcher's clock).
    fn now_ms(&self) -> u64 {
        self.inner.started.elapsed().as_millis() as u64
    }

    /// A fresh id of this core's read session (reads and barriers).
    fn next_read_id(&self) -> ProposalId {
        let sequence = self.inner.read_sequence.get() + 1;
        self.inner.read_sequence.set(sequence);
        ProposalId {
            client_id: self.inner.read_client_id,
            sequence,
        }
    }

    /// Leader hints of this core's shards: (shard, leader node, 0 if unknown).
    pub fn leaders(&self) -> Vec<(u64, u64)> {
        let shards = self.inner.shards.borrow();
        shards
            .iter()
            .map(|(shard, slot)| (*shard, slot.replica.leader().unwrap_or(0)))
            .collect()
    }

    /// The state of each replica on this core.
    pub fn status(&self) -> Vec<ReplicaStatus> {
        let shards = self.inner.shards.borrow();
        shards
            .iter()
            .map(|(shard, slot)| {
                let state = slot.replica.state().state();
                ReplicaStatus {
                    shard: *shard,
                    leader: slot.replica.leader().unwrap_or(0),
                    decided_index: slot.replica.decided_index(),
                    applied_index: slot.replica.applied_index(),
                    digest: state.state_digest().to_vec(),
                    inodes: state.statfs().inodes,
                }
            })
            .collect()
    }

    fn not_leader_or_busy(&self, shard: u64) -> Redirect {
        let shards = self.inner.shards.borrow();
        match shards.get(&shard) {
            Some(slot) if !slot.replica.is_leader() => Redirect::NotLeader {
                leader: slot.replica.leader().unwrap_or(0),
            },
            Some(_) => Redirect::Busy,
            None => Redirect::WrongCore,
        }
    }

    /// Has the pump task poll `shard` once the tasks ready now have run: proposals,
    /// reads, peer messages and durability reports of one executor turn share one poll,
    /// hence one log record and one store put.
    fn pump_soon(&self, shard: u64) {
        if self.inner.pumps_due.borrow_mut().insert(shard) {
            self.inner.pump_wake.notify();
        }
    }

    /// Carries out everything `shard`'s replica asks for.
    fn pump(&self, shard: u64) {
        let mut persists = Vec::new();
        let mut sends = Vec::new();
        let mut trims = Vec::new();
        {
            let mut shards = self.inner.shards.borrow_mut();
            let Some(slot) = shards.get_mut(&shard) else { return };
            loop {
                let actions = slot.replica.poll_actions();
                if actions.is_empty() {
                    break;
                }
                for action in actions {
                    match action {
                        Action::Persist { record_seq, bytes } => {
                            slot.unreported.push_back(record_seq);
                            persists.push((record_seq, bytes));
                        }
                        Action::Send { to, bytes, .. } => sends.push((to, bytes)),
                        Action::Applied {
                            index,
                            proposal_id,
                            output,
                        } => {
                            if let Some(waiter) = slot.proposals.remove(&proposal_id) {
                                let events = slot.replica.state().events_of(index);
                                waiter.send(ProposeReply::Applied {
                                    index,
                                    outcome: encode_outcome(&output),
                                    events: postcard::to_allocvec(&events).unwrap_or_default(),
                                });
                            }
                        }
                        Action::ReadReady { read_id, index } => {
                            let now_ms = self.now_ms();
                            let Shard {
                                replica, read_batcher, ..
                            } = &mut *slot;
                            let decided = read_batcher.decided(replica, read_id, || self.next_read_id(), now_ms);
                            for read in decided.answered {
                                if let Some((query, waiter)) = slot.reads.remove(&read) {
                                    let answer = slot.replica.state().read(&query);
                                    waiter.send(ReadReply::Done {
                                        index,
                                        answer: postcard::to_allocvec(&answer).unwrap_or_default(),
                                    });
                                }
                            }
                            for (read, error) in decided.refused {
                                if let Some((_, waiter)) = slot.reads.remove(&read) {
                                    waiter.send(ReadReply::Redirect(redirect_of(&error)));
                                }
                            }
                        }
                        Action::Trim { below_record_seq } => trims.push(below_record_seq),
                        Action::LeaderChanged { leader } => {
                            tracing::info!(shard, ?leader, node = self.inner.config.node_id, "shard leader changed");
                            if leader != Some(self.inner.config.node_id) {
                                // Clients retry at the new leader with the same proposal ids;
                                // deduplication applies each at most once.
                                fail_waiters(
                                    slot,
                                    Redirect::NotLeader {
                                        leader: leader.unwrap_or(0),
                                    },
                                );
                            }
                        }
                        Action::Reconfigured {
                            configuration_id,
                            members,
                        } => {
                            tracing::warn!(
                                shard,
                                configuration_id,
                                ?members,
                                "reconfiguration decided; not hosted yet"
                            );
                        }
                    }
                }
            }
        }
        for (record_seq, bytes) in persists {
            self.spawn_persist(shard, record_seq, bytes);
        }
        for (to, bytes) in sends {
            self.send(shard, to, bytes);
        }
        for below in trims {
            let log = self.inner.log.clone();
            let spawned = kiseki_runtime::spawn("shard-log-trim", async move {
                if let Err(error) = log.trim(shard, below).await {
                    tracing::warn!(shard, below, %error, "shard log trim failed");
                }
            });
            if let Err(error) = spawned {
                tracing::warn!(shard, %error, "shard log trim not started");
            }
        }
    }

    fn spawn_persist(&self, shard: u64, record_seq: u64, bytes: Vec<u8>) {
        let host = self.clone();
        let bytes = Rc::new(bytes);
        let record = Rc::clone(&bytes);
        let spawned = kiseki_runtime::spawn("shard-log-write", async move {
            match host.inner.log.write(shard, record_seq, &record).await {
                Ok(()) => host.record_durable(shard, record_seq),
                Err(error) => {
                    // A record that cannot be made durable blocks its replica for good
                    // (nothing after it may be sent): the node must stop serving it.
                    tracing::error!(shard, record_seq, %error, "shard log write failed; replica halted");
                }
            }
        });
        if let Err(error) = spawned {
            tracing::warn!(shard, record_seq, %error, "shard log write deferred to the next tick");
            let bytes = Rc::try_unwrap(bytes).unwrap_or_else(|shared| shared.as_ref().clone());
            self.inner
                .deferred_persists
                .borrow_mut()
                .push_back((shard, record_seq, bytes));
        }
    }

    /// Retries record writes whose task could not be spawned.
    fn retry_deferred_persists(&self) {
        let deferred = std::mem::take(&mut *self.inner.deferred_persists.borrow_mut());
        for (shard, record_seq, bytes) in deferred {
            self.spawn_persist(shard, record_seq, bytes);
        }
    }

    /// Reports durable records to the replica in sequence order.
    fn record_durable(&self, shard: u64, record_seq: u64) {
        {
            let mut shards = self.inner.shards.borrow_mut();
            let Some(slot) = shards.get_mut(&shard) else { return };
            slot.durable.insert(record_seq);
            while let Some(next) = slot.unreported.front().copied() {
                if !slot.durable.remove(&next) {
                    break;
                }
                slot.unreported.pop_front();
                if let Err(error) = slot.replica.persisted(next) {
                    tracing::error!(shard, next, %error, "replica refused a durability report");
                }
            }
        }
        self.pump_soon(shard);
    }

    fn send(&self, shard: u64, to: u64, bytes: Vec<u8>) {
        if self.inner.stopping.get() {
            return;
        }
        let Some(address) = self.inner.map.shard_address(shard, to) else {
            tracing::warn!(shard, to, "message for a node outside the cluster map dropped");
            return;
        };
        let link = {
            let mut peers = self.inner.peers.borrow_mut();
            if let Some(link) = peers.get(&address) {
                Rc::clone(link)
            } else {
                let link = Rc::new(PeerLink {
                    node: to,
                    address,
                    queue: RefCell::new(VecDeque::new()),
                    ready: Notify::new(),
                    dropped: Cell::new(0),
                });
                peers.insert(address, Rc::clone(&link));
                let host = Rc::downgrade(&self.inner);
                if let Err(error) = kiseki_runtime::spawn("peer-link", peer_loop(host, Rc::clone(&link))) {
                    tracing::warn!(%error, "peer link task not started");
                }
                link
            }
        };
        let mut queue = link.queue.borrow_mut();
        if queue.len() >= self.inner.config.peer_queue_max {
            link.dropped.set(link.dropped.get() + 1);
            return;
        }
        queue.push_back(bytes);
        drop(queue);
        link.ready.notify();
    }
}

fn fail_waiters(slot: &mut Shard, redirect: Redirect) {
    for (_, waiter) in std::mem::take(&mut slot.proposals) {
        waiter.send(ProposeReply::Redirect(redirect.clone()));
    }
    for (_, (_, waiter)) in std::mem::take(&mut slot.reads) {
        waiter.send(ReadReply::Redirect(redirect.clone()));
    }
    slot.read_batcher.clear();
}

fn redirect_of(error: &ConsensusError) -> Redirect {
    match error {
        ConsensusError::NotLeader { leader } => Redirect::NotLeader {
            leader: leader.unwrap_or(0),
        },
        _ => Redirect::Busy,
    }
}

fn encode_outcome(outcome: &DeltaOutcome) -> Vec<u8> {
    postcard::to_allocvec(outcome).unwrap_or_default()
}

async fn recover_replica(
    config: &HostConfig,
    map: &ClusterMap,
    log: &ShardLog,
    shard: u64,
) -> Result<Replica<NamespaceMachine>, HostError> {
    let members = map.members(shard);
    // Leader balancing at start: each shard prefers a different member, round robin.
    let preferred = members[(shard as usize) % members.len()];
    let mut replica_config = ReplicaConfig::new(shard, config.node_id, members);
    replica_config.leader_priority = u32::from(preferred == config.node_id);
    replica_config.election_timeout_ticks = config.election_timeout_ticks;
    replica_config.resend_timeout_ticks = config.election_timeout_ticks * 2;
    replica_config.snapshot_every_entries = config.snapshot_every_entries;
    replica_config.snapshot_log_bytes_percent = config.snapshot_log_bytes_percent;
    let records = log.load(shard).await?;
    if records.is_empty() {
        let machine = NamespaceMachine::new(shard_namespace_config(shard))?;
        return Ok(Replica::new(replica_config, machine)?);
    }
    tracing::info!(shard, records = records.len(), "recovering shard replica from its log");
    Ok(Replica::recover(
        replica_config,
        records.into_iter().map(|(_, bytes)| bytes),
    )?)
}

/// Polls the shards `pump_soon` marked, until the host is dropped (its drop wakes this).
async fn pump_loop(host: Weak<Inner>, wake: Rc<Notify>) {
    loop {
        {
            let Some(inner) = host.upgrade() else { return };
            let host = CoreHost { inner };
            loop {
                let due = std::mem::take(&mut *host.inner.pumps_due.borrow_mut());
                if due.is_empty() {
                    break;
                }
                for shard in due {
                    host.pump(shard);
                }
            }
        }
        wake.notified().await;
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.pump_wake.notify();
    }
}

async fn tick_loop(host: Weak<Inner>) {
    loop {
        let Some(inner) = host.upgrade() else { return };
        if inner.stopping.get() {
            return;
        }
        let interval = Duration::from_millis(inner.config.tick_interval_ms);
        let host = CoreHost { inner };
        host.retry_deferred_persists();
        let shards: Vec<u64> = host.inner.shards.borrow().keys().copied().collect();
        for shard in shards {
            if let Some(slot) = host.inner.shards.borrow_mut().get_mut(&shard) {
                slot.replica.tick();
            }
            host.pump(shard);
        }
        drop(host);
        kiseki_runtime::sleep(interval).await;
    }
}

/// Drains one peer link: connects (again) when needed and sends queued messages as
/// one-way frames. Messages queued while the peer is unreachable are dropped after a
/// failed connect; consensus resends what it still needs.
async fn peer_loop(host: Weak<Inner>, link: Rc<PeerLink>) {
    let mut client: Option<RpcClient> = None;
    loop {
        let Some(inner) = host.upgrade() else { return };
        if inner.stopping.get() {
            return;
        }
        let from = inner.config.node_id;
        drop(inner);
        if link.queue.borrow().is_empty() {
            link.ready.notified().await;
            continue;
        }
        if client.as_ref().is_none_or(RpcClient::is_closed) {
            let Some(transport) = host.upgrade().map(|inner| Rc::clone(&inner.transport)) else {
                return;
            };
            client = connect_peer(transport.as_ref(), &link).await;
            match &client {
                Some(_) => reconnected(&host, link.node),
                None => {
                    let dropped = link.queue.borrow().len() as u64;
                    link.queue.borrow_mut().clear();
                    link.dropped.set(link.dropped.get() + dropped);
                    kiseki_runtime::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let Some(connected) = client.as_ref() else { continue };
        let next = link.queue.borrow_mut().pop_front();
        let Some(bytes) = next else { continue };
        let body = match encode_body(&ConsensusMessage { from, bytes }) {
            Ok(body) => body,
            Err(error) => {
                tracing::warn!(%error, "consensus message not encodable");
                continue;
            }
        };
        if let Err(error) = connected.send_one_way(MSG_CONSENSUS, &body).await {
            tracing::debug!(peer = %link.address, %error, "peer link lost");
            client = None;
        }
    }
}

async fn connect_peer(transport: &dyn Transport, link: &PeerLink) -> Option<RpcClient> {
    let name = link.address.ip().to_string();
    let connecting = transport.connect(link.address, &name);
    let stream = match kiseki_runtime::timeout(Duration::from_secs(1), connecting).await {
        Some(Ok(stream)) => stream,
        Some(Err(error)) => {
            tracing::debug!(peer = %link.address, %error, "peer unreachable");
            return None;
        }
        None => return None,
    };
    RpcClient::new(stream, crate::peer_rpc_config()).ok()
}

/// Tells the replicas that talk to `node` that the link is back, so that a follower
/// that lost the last messages does not wait for the next proposal.
fn reconnected(host: &Weak<Inner>, node: u64) {
    let Some(inner) = host.upgrade() else { return };
    let host = CoreHost { inner };
    let shards: Vec<u64> = host.inner.shards.borrow().keys().copied().collect();
    for shard in shards {
        if let Some(slot) = host.inner.shards.borrow_mut().get_mut(&shard) {
            if slot.replica.config().members.contains(&node) {
                slot.replica.reconnected(node);
            }
        }
        host.pump(shard);
    }
}
