//! The replica: omnipaxos plus durable-before-send records, application to the state
//! machine, snapshots, snapshot transfer and reconfiguration handoff; and solo mode, the
//! same replica for a replica set of one, without omnipaxos.

mod install;
mod solo;
mod step;

use crate::{
    codec,
    config::{check_members, ReplicaConfig},
    entry::{Entry, Payload, ProposalId},
    record::{self, Image, RecordBody, RecordHeader},
    sessions::Sessions,
    storage::{LogOp, SharedStorage, StorageState},
    wire::{self, LinkPosition, WireBody},
    ConsensusError, StateMachine,
};
use omnipaxos::{ballot_leader_election::Ballot, storage::StopSign, ClusterConfig, OmniPaxos, ProposeErr};
use serde::{Deserialize, Serialize};
use solo::Solo;
use std::{
    cell::RefCell,
    collections::{BTreeMap, VecDeque},
    rc::Rc,
};

/// What the host must do for a replica, in the order given by
/// [`Replica::poll_actions`].
#[derive(Clone, Debug, PartialEq)]
pub enum Action<O> {
    /// Make `bytes` durable (write, then `fdatasync`) after every earlier record of this
    /// replica, then call [`Replica::persisted`] with `record_seq`. Records must become
    /// durable in sequence order: on a crash, what survives is a prefix.
    Persist {
        /// Sequence number of the record (consecutive from 1 for a new replica).
        record_seq: u64,
        /// The record, to hand back to [`Replica::recover`] after a restart.
        bytes: Vec<u8>,
    },
    /// Send `bytes` to node `to` (to the replica of the same shard and configuration;
    /// [`peek_route`](crate::peek_route) reads both). Emitted only once every record
    /// produced before the message was reported durable (I-L1); records produced after
    /// it may still be in flight.
    Send {
        /// The receiving node.
        to: u64,
        /// The message.
        bytes: Vec<u8>,
        /// The last record produced before the message (0: none). It is durable, and so
        /// is every record before it; a host can check that against its own bookkeeping.
        after_record_seq: u64,
    },
    /// A decided command was applied (I-L2: it is committed on a majority). The host
    /// answers the client waiting for `proposal_id`, if it has one. A retried proposal
    /// that was applied before is answered again with the original output.
    Applied {
        /// Global log index of the entry.
        index: u64,
        /// Who proposed it.
        proposal_id: ProposalId,
        /// What the state machine returned.
        output: O,
    },
    /// A read barrier was decided and every entry before it applied: the read `read_id`
    /// may now be answered from [`Replica::state`] (linearizable).
    ReadReady {
        /// The id given to [`Replica::read_barrier`].
        read_id: ProposalId,
        /// Global log index of the barrier (in solo mode, which puts no barrier in the
        /// log: of the last entry proposed before the read, 0 if none).
        index: u64,
    },
    /// Records with a sequence number below `below_record_seq` are superseded by a
    /// durable snapshot record: the host may delete them.
    Trim {
        /// The snapshot record's sequence number.
        below_record_seq: u64,
    },
    /// The replica's view of the leader changed.
    LeaderChanged {
        /// The new leader, if any.
        leader: Option<u64>,
    },
    /// A reconfiguration was decided and applied: this configuration is stopped. The host
    /// creates the next configuration's replicas with [`Replica::next_configuration`]
    /// from [`Replica::handoff`].
    Reconfigured {
        /// The next configuration's id.
        configuration_id: u32,
        /// The next configuration's members.
        members: Vec<u64>,
    },
}

/// State handed from a stopped configuration to the next one.
#[derive(Serialize, Deserialize)]
struct Handoff {
    shard_id: u64,
    configuration_id: u32,
    members: Vec<u64>,
    image: Image,
}

/// A message held until the record it depends on is durable.
struct Gated {
    record_seq: u64,
    to: u64,
    bytes: Vec<u8>,
}

type Paxos<C> = OmniPaxos<Entry<C>, SharedStorage<C>>;

/// What orders the log.
enum Engine<S: StateMachine> {
    /// Two members or more: omnipaxos (boxed: it is much larger than `Solo`).
    Paxos(Box<Paxos<S::Command>>),
    /// One member: the replica orders its log itself (solo mode).
    Solo(Solo),
}

/// One replica of one shard: a sans-IO omnipaxos node. The host feeds it messages
/// ([`receive`](Self::receive)), ticks ([`tick`](Self::tick)), proposals and durability
/// reports, and carries out the [`Action`]s it returns.
///
/// **Solo mode.** omnipaxos refuses a replica set of one, but a single-node deployment
/// still runs every shard through this type, driven exactly the same way. When
/// [`ReplicaConfig::members`] is this node alone the replica runs without omnipaxos: it
/// leads from the start (one [`Action::LeaderChanged`] naming itself), proposals are
/// appended to its log and cut into one record per poll (group commit), and an entry is
/// committed — applied and reported [`Action::Applied`] — once its record is reported
/// durable (a majority of one). Read barriers wait for the entries proposed before them
/// without entering the log. Deduplication, snapshots, trimming and recovery are those of
/// the replicated path, with the same records. There are no messages: `tick` and
/// `reconnected` do nothing, `receive` refuses everything, `reconfigure` is
/// [`Unsupported`](ConsensusError::Unsupported).
///
/// A replica is `!Send` (its storage is an `Rc`): it lives on the core that owns it.
pub struct Replica<S: StateMachine> {
    config: ReplicaConfig,
    engine: Engine<S>,
    storage: Rc<RefCell<StorageState<S::Command>>>,
    state: S,
    sessions: Sessions<S::Output>,
    /// Entries of this configuration below this index are applied.
    applied_idx: u64,
    index_base: u64,
    /// The latest snapshot (the one a snapshot transfer sends).
    image: Image,
    record_seq_last: u64,
    record_seq_durable: u64,
    /// A snapshot record whose durability will let the host trim older records.
    trim_record_seq: Option<u64>,
    /// Size of the last snapshot record, and bytes of the records written after it
    /// (`snapshot_log_bytes_percent`).
    snapshot_record_bytes: u64,
    record_bytes_since_snapshot: u64,
    outgoing: VecDeque<Gated>,
    actions: Vec<Action<S::Output>>,
    /// Proposals of this leader not yet applied, by local log index (in solo mode
    /// too; solo read barriers wait apart, in `Solo`).
    pending_proposals: BTreeMap<u64, ProposalId>,
    proposals_since_poll: usize,
    leader_reported: Option<u64>,
    promise_seen: Ballot,
    stopped: Option<StopSign>,
    reconfigured_reported: bool,
    messages_dropped: u64,
    snapshots_sent: u64,
    snapshots_installed: u64,
    /// This incarnation's link epoch, and the last position sent to each peer.
    link_epoch: u64,
    link_sent: BTreeMap<u64, u64>,
    /// The highest link position received from each peer.
    link_received: BTreeMap<u64, LinkPosition>,
    messages_stale: u64,
}

impl<S: StateMachine> Replica<S> {
    /// A new, empty replica starting from `state` (normally the state machine's empty
    /// state). Its first action persists a snapshot record of `state`, which recovery
    /// starts from.
    pub fn new(config: ReplicaConfig, state: S) -> Result<Self, ConsensusError> {
        let sessions = Sessions::new(config.sessions_max);
        Self::start(config, state, sessions, 0)
    }

    /// The replica of the next configuration, started from a [`handoff`](Self::handoff)
    /// of the stopped one (state transfer). `config` must name the configuration id and
    /// members the decided reconfiguration named.
    pub fn next_configuration(config: ReplicaConfig, handoff: &[u8]) -> Result<Self, ConsensusError> {
        let corrupt = |reason: String| ConsensusError::CorruptSnapshot { reason };
        let handoff: Handoff =
            codec::decode(codec::open(codec::HANDOFF_MAGIC, handoff).map_err(corrupt)?).map_err(corrupt)?;
        let mut members = config.members.clone();
        let mut handoff_members = handoff.members.clone();
        members.sort_unstable();
        handoff_members.sort_unstable();
        if handoff.shard_id != config.shard_id
            || handoff.configuration_id != config.configuration_id
            || members != handoff_members
        {
            return Err(ConsensusError::InvalidConfig {
                reason: format!(
                    "handoff is for shard {} configuration {} members {:?}",
                    handoff.shard_id, handoff.configuration_id, handoff.members
                ),
            });
        }
        let state = S::restore(&handoff.image.state).map_err(|error| corrupt(error.to_string()))?;
        let sessions = Sessions::from_image(&handoff.image.sessions, config.sessions_max).map_err(corrupt)?;
        Self::start(config, state, sessions, handoff.image.index_base)
    }

    fn start(
        config: ReplicaConfig,
        state: S,
        sessions: Sessions<S::Output>,
        index_base: u64,
    ) -> Result<Self, ConsensusError> {
        let mut replica = Self::assemble(config, state, sessions, index_base, 0, StorageState::default(), 0)?;
        replica.image = replica.take_image();
        replica.write_snapshot_record();
        Ok(replica)
    }

    /// Rebuilds a replica from the records its host persisted, in order (a durable
    /// prefix of what it produced, minus what `Trim` allowed to drop). Decided entries
    /// after the last snapshot are applied again, silently. Damage, records of another
    /// replica, gaps and misordering are errors.
    ///
    /// In solo mode every entry of a surviving record is decided (its record is durable):
    /// all of them are applied. Log indexes and record sequence numbers continue.
    pub fn recover(config: ReplicaConfig, records: impl IntoIterator<Item = Vec<u8>>) -> Result<Self, ConsensusError> {
        let mut recovered: Option<(StorageState<S::Command>, Image)> = None;
        let mut record_seq_last = 0;
        let mut position = 0;
        let (mut snapshot_record_bytes, mut record_bytes_since_snapshot) = (0, 0);
        for bytes in records {
            let corrupt = |reason: String| ConsensusError::CorruptRecord { position, reason };
            let (header, body) = record::decode::<S::Command>(&bytes).map_err(corrupt)?;
            let owner = (config.shard_id, config.node_id, config.configuration_id);
            if (header.shard_id, header.node_id, header.configuration_id) != owner {
                return Err(corrupt(format!("record of another replica: {header:?}")));
            }
            if record_seq_last != 0 && header.record_seq != record_seq_last + 1 {
                return Err(corrupt(format!(
                    "record {} follows record {record_seq_last}",
                    header.record_seq
                )));
            }
            record_seq_last = header.record_seq;
            match (body, recovered.as_mut()) {
                (RecordBody::Snapshot(snapshot), _) => {
                    recovered = Some((snapshot.storage, snapshot.image));
                    (snapshot_record_bytes, record_bytes_since_snapshot) = (bytes.len() as u64, 0);
                }
                (RecordBody::Ops(ops), Some((storage, _))) => {
                    record_bytes_since_snapshot += bytes.len() as u64;
                    for op in &ops {
                        storage.apply(op).map_err(|reason| corrupt(reason.to_owned()))?;
                    }
                }
                (RecordBody::Ops(_), None) => return Err(corrupt("the first record is not a snapshot".to_owned())),
            }
            position += 1;
        }
        let Some((storage, image)) = recovered else {
            return Err(ConsensusError::CorruptRecord {
                position,
                reason: "no records".to_owned(),
            });
        };
        let mut replica = Self::recover_from(config, storage, image, record_seq_last)?;
        replica.snapshot_record_bytes = snapshot_record_bytes;
        replica.record_bytes_since_snapshot += record_bytes_since_snapshot;
        Ok(replica)
    }

    fn recover_from(
        config: ReplicaConfig,
        storage: StorageState<S::Command>,
        image: Image,
        record_seq_last: u64,
    ) -> Result<Self, ConsensusError> {
        let inconsistent = |reason: String| ConsensusError::CorruptRecord { position: 0, reason };
        if storage.log_start_idx != storage.compacted_idx
            || image.applied_idx < storage.compacted_idx
            || image.applied_idx > storage.decided_idx
            || storage.decided_idx > storage.log_end_idx() + u64::from(storage.stopsign.is_some())
        {
            return Err(inconsistent(format!(
                "inconsistent indexes: applied {}, log {}..{}, compacted {}, decided {}",
                image.applied_idx,
                storage.log_start_idx,
                storage.log_end_idx(),
                storage.compacted_idx,
                storage.decided_idx
            )));
        }
        // A solo replica decides every entry it writes, in the same record.
        if config.is_solo() && (storage.decided_idx != storage.log_end_idx() || storage.stopsign.is_some()) {
            return Err(inconsistent(format!(
                "solo replica with undecided entries: log {}..{}, decided {}",
                storage.log_start_idx,
                storage.log_end_idx(),
                storage.decided_idx
            )));
        }
        let corrupt = |reason: String| ConsensusError::CorruptSnapshot { reason };
        let state = S::restore(&image.state).map_err(|error| corrupt(error.to_string()))?;
        let sessions = Sessions::from_image(&image.sessions, config.sessions_max).map_err(corrupt)?;
        let (applied_idx, index_base) = (image.applied_idx, image.index_base);
        let mut replica = Self::assemble(
            config,
            state,
            sessions,
            index_base,
            applied_idx,
            storage,
            record_seq_last,
        )?;
        replica.image = image;
        replica.apply_decided(false);
        if !replica.config.is_solo() {
            // The first record of this incarnation (its sequence number is the link epoch).
            replica.push_record(&RecordBody::Ops(Vec::new()));
        }
        Ok(replica)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        config: ReplicaConfig,
        state: S,
        sessions: Sessions<S::Output>,
        index_base: u64,
        applied_idx: u64,
        storage: StorageState<S::Command>,
        record_seq_last: u64,
    ) -> Result<Self, ConsensusError> {
        config.validate()?;
        let decided_idx = storage.decided_idx;
        let storage = Rc::new(RefCell::new(storage));
        let engine = if config.is_solo() {
            Engine::Solo(Solo::new(decided_idx))
        } else {
            Engine::Paxos(Box::new(Self::build_paxos(&config, &storage)?))
        };
        Ok(Self {
            config,
            engine,
            storage,
            state,
            sessions,
            applied_idx,
            index_base,
            image: Image {
                applied_idx,
                index_base,
                state: Vec::new(),
                sessions: Vec::new(),
            },
            record_seq_last,
            record_seq_durable: record_seq_last,
            trim_record_seq: None,
            snapshot_record_bytes: 0,
            record_bytes_since_snapshot: 0,
            outgoing: VecDeque::new(),
            actions: Vec::new(),
            pending_proposals: BTreeMap::new(),
            proposals_since_poll: 0,
            leader_reported: None,
            promise_seen: Ballot::default(),
            stopped: None,
            reconfigured_reported: false,
            messages_dropped: 0,
            snapshots_sent: 0,
            snapshots_installed: 0,
            link_epoch: record_seq_last + 1,
            link_sent: BTreeMap::new(),
            link_received: BTreeMap::new(),
            messages_stale: 0,
        })
    }

    fn build_paxos(
        config: &ReplicaConfig,
        storage: &Rc<RefCell<StorageState<S::Command>>>,
    ) -> Result<Paxos<S::Command>, ConsensusError> {
        let paxos = config
            .omnipaxos()
            .build(SharedStorage(Rc::clone(storage)))
            .map_err(|error| ConsensusError::InvalidConfig {
                reason: error.to_string(),
            })?;
        // Building stores the recovered promise again: nothing new to persist.
        storage.borrow_mut().pending.clear();
        Ok(paxos)
    }

    /// Proposes `command`. Only the leader accepts proposals; the outcome arrives as
    /// [`Action::Applied`] with the same `proposal_id` once the entry is decided, or
    /// never (leader change): the client then retries with the same id, and
    /// deduplication makes sure the command is applied at most once. In solo mode the
    /// entry is decided once the record the next poll cuts is reported durable.
    pub fn propose(&mut self, command: S::Command, proposal_id: ProposalId) -> Result<(), ConsensusError> {
        self.append(Entry {
            proposal_id,
            payload: Payload::Command(command),
        })
    }

    /// Starts a linearizable read: appends a barrier entry; when it is applied,
    /// [`Action::ReadReady`] says the local state may answer reads issued before this
    /// call (read-index through the log; no clock is trusted). Leader only.
    ///
    /// In solo mode no entry is appended (no other node can have decided anything): the
    /// read is ready once every entry proposed before it is applied, which needs no record.
    pub fn read_barrier(&mut self, read_id: ProposalId) -> Result<(), ConsensusError> {
        if self.config.is_solo() {
            return self.solo_read_barrier(read_id);
        }
        self.append(Entry {
            proposal_id: read_id,
            payload: Payload::Barrier,
        })
    }

    fn append(&mut self, entry: Entry<S::Command>) -> Result<(), ConsensusError> {
        self.check_can_propose()?;
        let limits = [
            (
                "pending_proposals_max",
                self.pending_count(),
                self.config.pending_proposals_max,
            ),
            (
                "batch_entries_max",
                self.proposals_since_poll,
                self.config.batch_entries_max,
            ),
            ("outgoing_max", self.outgoing.len(), self.config.outgoing_max),
            (
                "records_in_flight_max",
                self.records_in_flight(),
                self.config.records_in_flight_max,
            ),
        ];
        for (what, used, limit) in limits {
            if used >= limit {
                return Err(ConsensusError::Busy { what, limit });
            }
        }
        let proposal_id = entry.proposal_id;
        let local_idx = match &mut self.engine {
            Engine::Paxos(paxos) => {
                paxos.append(entry).map_err(|_| ConsensusError::Reconfiguring)?;
                (paxos.get_accepted_idx() as u64).saturating_sub(1)
            }
            Engine::Solo(_) => {
                let mut storage = self.storage.borrow_mut();
                let local_idx = storage.log_end_idx();
                storage.record(LogOp::Append(vec![entry]));
                local_idx
            }
        };
        self.pending_proposals.insert(local_idx, proposal_id);
        self.proposals_since_poll += 1;
        Ok(())
    }

    fn check_can_propose(&self) -> Result<(), ConsensusError> {
        if self.stopped.is_some() || self.storage.borrow().stopsign.is_some() {
            return Err(ConsensusError::Reconfiguring);
        }
        if !self.is_leader() {
            let leader = self.leader().filter(|leader| *leader != self.config.node_id);
            return Err(ConsensusError::NotLeader { leader });
        }
        Ok(())
    }

    /// Proposes to replace the replica set by `members` (leader only). omnipaxos decides
    /// a stop-sign; after it is applied the replica reports [`Action::Reconfigured`] and
    /// takes no more entries. The next replica set has two members or more (omnipaxos
    /// decides the stop-sign in the old set and starts the new one as a cluster).
    ///
    /// Not available in solo mode yet ([`ConsensusError::Unsupported`]): growing a shard
    /// from one node needs a stop-sign this replica would decide alone, and a handoff to
    /// the new set; nothing does that yet.
    pub fn reconfigure(&mut self, members: Vec<u64>) -> Result<(), ConsensusError> {
        let solo = ConsensusError::Unsupported {
            what: "reconfiguring a single-member (solo) replica",
        };
        if self.config.is_solo() {
            return Err(solo);
        }
        check_members(&members, 2).map_err(|reason| ConsensusError::InvalidConfig { reason })?;
        self.check_can_propose()?;
        let next = ClusterConfig {
            configuration_id: self.config.configuration_id + 1,
            nodes: members,
            flexible_quorum: None,
        };
        let Engine::Paxos(paxos) = &mut self.engine else {
            return Err(solo);
        };
        paxos.reconfigure(next, None).map_err(|error| match error {
            ProposeErr::ConfigError(error, ..) => ConsensusError::InvalidConfig {
                reason: error.to_string(),
            },
            _ => ConsensusError::Reconfiguring,
        })
    }

    /// The state to hand to the next configuration's replicas, once this configuration's
    /// stop-sign is decided and applied.
    pub fn handoff(&self) -> Result<Vec<u8>, ConsensusError> {
        let stopsign = self.stopped.as_ref().ok_or(ConsensusError::NotReconfigured)?;
        let image = Image {
            applied_idx: 0,
            index_base: self.index_base + self.applied_idx,
            state: self.state.snapshot(),
            sessions: self.sessions.to_image(),
        };
        let handoff = Handoff {
            shard_id: self.config.shard_id,
            configuration_id: stopsign.next_config.configuration_id,
            members: stopsign.next_config.nodes.clone(),
            image,
        };
        Ok(codec::seal(codec::HANDOFF_MAGIC, &handoff))
    }

    /// Handles a message from node `from`. Corrupt, misrouted or unexpected messages are
    /// refused with an error and change nothing. While `records_in_flight_max` records
    /// await durability the message is refused with `Busy` (as if lost). In solo mode
    /// every message is refused (`UnexpectedMessage`): there is no peer.
    pub fn receive(&mut self, from: u64, bytes: &[u8]) -> Result<(), ConsensusError> {
        if self.config.is_solo() {
            return Err(ConsensusError::UnexpectedMessage {
                from,
                reason: "a single-member (solo) replica takes no messages".to_owned(),
            });
        }
        if self.records_in_flight() >= self.config.records_in_flight_max {
            return Err(ConsensusError::Busy {
                what: "records_in_flight_max",
                limit: self.config.records_in_flight_max,
            });
        }
        let (route, link, body) = wire::decode::<S::Command>(bytes)?;
        let me = self.config.node_id;
        let unexpected = |reason: String| ConsensusError::UnexpectedMessage { from, reason };
        if route.shard_id != self.config.shard_id || route.configuration_id != self.config.configuration_id {
            return Err(unexpected(format!(
                "for shard {} configuration {}, this is shard {} configuration {}",
                route.shard_id, route.configuration_id, self.config.shard_id, self.config.configuration_id
            )));
        }
        if route.from != from || route.to != me || from == me || !self.config.members.contains(&from) {
            return Err(unexpected(format!("routed {} -> {}", route.from, route.to)));
        }
        if self.link_received.get(&from).is_some_and(|last| link <= *last) {
            // A duplicate, or overtaken by a later message: dropped as if lost.
            self.messages_stale += 1;
            return Ok(());
        }
        self.link_received.insert(from, link);
        match body {
            WireBody::Paxos(mut message) => {
                wire::check_paxos(&message, from, me, &self.config.members).map_err(unexpected)?;
                let Engine::Paxos(paxos) = &mut self.engine else {
                    return Err(unexpected(
                        "a single-member (solo) replica takes no messages".to_owned(),
                    ));
                };
                let view = {
                    let storage = self.storage.borrow();
                    wire::LogView {
                        decided_idx: paxos.get_decided_idx(),
                        accepted_end_idx: (storage.log_end_idx() + u64::from(storage.stopsign.is_some())) as usize,
                        accepted_round: storage.accepted_round.unwrap_or_default(),
                    }
                };
                if wire::screen_log_sync(&mut message, &view) {
                    paxos.handle_incoming(message);
                }
                Ok(())
            }
            WireBody::Install(install) => self.install(install),
        }
    }

    /// Advances the logical clock by one tick (the host calls it at a fixed interval):
    /// drives leader election and resends. Does nothing in solo mode.
    pub fn tick(&mut self) {
        if let Engine::Paxos(paxos) = &mut self.engine {
            paxos.tick();
        }
    }

    /// Tells the replica that the connection to `peer` was re-established (messages may
    /// have been lost): it asks the peer to resynchronize. Does nothing in solo mode.
    pub fn reconnected(&mut self, peer: u64) {
        if let Engine::Paxos(paxos) = &mut self.engine {
            if peer != self.config.node_id && self.config.members.contains(&peer) {
                paxos.reconnected(peer);
            }
        }
    }

    /// Reports records up to `record_seq` durable (every earlier one too). In solo mode
    /// this commits the entries of those records; the next poll applies them.
    pub fn persisted(&mut self, record_seq: u64) -> Result<(), ConsensusError> {
        if record_seq > self.record_seq_last {
            return Err(ConsensusError::UnknownRecord {
                record_seq,
                last_seq: self.record_seq_last,
            });
        }
        self.record_seq_durable = self.record_seq_durable.max(record_seq);
        if let Engine::Solo(solo) = &mut self.engine {
            solo.settle(self.record_seq_durable);
        }
        Ok(())
    }

    /// The node this replica believes leads the shard (in solo mode: this node).
    pub fn leader(&self) -> Option<u64> {
        match &self.engine {
            Engine::Paxos(paxos) => paxos.get_current_leader().map(|(leader, _)| leader),
            Engine::Solo(_) => Some(self.config.node_id),
        }
    }

    /// Whether this replica leads and accepts proposals (in solo mode: always).
    pub fn is_leader(&self) -> bool {
        match &self.engine {
            Engine::Paxos(paxos) => {
                matches!(paxos.get_current_leader(), Some((leader, true)) if leader == self.config.node_id)
            }
            Engine::Solo(_) => true,
        }
    }

    /// Global index of the last decided entry (0: none). In solo mode: the last entry
    /// whose record is reported durable.
    pub fn decided_index(&self) -> u64 {
        self.index_base + self.decided_idx()
    }

    /// Local index one past the last decided entry.
    fn decided_idx(&self) -> u64 {
        match &self.engine {
            Engine::Paxos(paxos) => paxos.get_decided_idx() as u64,
            Engine::Solo(solo) => solo.committed_idx(),
        }
    }

    /// Global index of the last applied entry (0: none).
    pub fn applied_index(&self) -> u64 {
        self.index_base + self.applied_idx
    }

    /// The state machine, as of [`applied_index`](Self::applied_index).
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The configuration.
    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    /// Whether this configuration was stopped by a decided and applied reconfiguration.
    pub fn is_stopped(&self) -> bool {
        self.stopped.is_some()
    }

    /// The last record sequence number produced, and the last reported durable.
    pub fn record_seqs(&self) -> (u64, u64) {
        (self.record_seq_last, self.record_seq_durable)
    }

    /// Messages dropped because `outgoing_max` was reached.
    pub fn messages_dropped(&self) -> u64 {
        self.messages_dropped
    }

    /// Messages received as duplicates or behind a later message of the same link, and
    /// dropped.
    pub fn messages_stale(&self) -> u64 {
        self.messages_stale
    }

    /// Snapshot transfers sent to peers and installed from peers.
    pub fn snapshot_transfers(&self) -> (u64, u64) {
        (self.snapshots_sent, self.snapshots_installed)
    }

    /// Proposals and read barriers waiting to be applied or answered.
    fn pending_count(&self) -> usize {
        let reads = match &self.engine {
            Engine::Solo(solo) => solo.reads_waiting(),
            Engine::Paxos(_) => 0,
        };
        self.pending_proposals.len() + reads
    }

    fn records_in_flight(&self) -> usize {
        (self.record_seq_last - self.record_seq_durable) as usize
    }

    fn record_header(&self, record_seq: u64) -> RecordHeader {
        RecordHeader {
            shard_id: self.config.shard_id,
            node_id: self.config.node_id,
            configuration_id: self.config.configuration_id,
            record_seq,
        }
    }
}
