//! The configuration of one replica.

use crate::ConsensusError;

/// Largest node id. omnipaxos keeps per-node tables indexed by node id, sized by the
/// largest id of the configuration, so ids must be small integers.
pub const NODE_ID_MAX: u64 = 4096;

/// Configuration of one replica of one shard. The limits bound every queue the replica
/// keeps (style: limits on everything); [`ReplicaConfig::tiny`] makes them small enough
/// that tests reach them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// The shard this replica belongs to.
    pub shard_id: u64,
    /// This node's id (the omnipaxos pid): nonzero, at most [`NODE_ID_MAX`].
    pub node_id: u64,
    /// The omnipaxos configuration id: 1 for a shard's first replica set, one more for
    /// each reconfiguration.
    pub configuration_id: u32,
    /// Every member of the replica set, this node included. One member (this node alone)
    /// runs the replica in solo mode, without omnipaxos (see [`Replica`](crate::Replica));
    /// two or more run omnipaxos.
    pub members: Vec<u64>,
    /// Ticks between leader-election rounds (heartbeat timeout). Unused in solo mode.
    pub election_timeout_ticks: u64,
    /// Ticks before omnipaxos resends a message it considers lost.
    pub resend_timeout_ticks: u64,
    /// Proposals accepted between two `poll_actions` (bounds one record's size).
    pub batch_entries_max: usize,
    /// Messages waiting for their record to be durable; beyond it new messages are
    /// dropped (the protocol recovers from lost messages).
    pub outgoing_max: usize,
    /// Proposals of this leader not yet applied (in solo mode, read barriers not yet
    /// answered count too).
    pub pending_proposals_max: usize,
    /// Records handed to the host and not yet reported durable; beyond it proposals and
    /// incoming messages are refused with `Busy`.
    pub records_in_flight_max: usize,
    /// A snapshot record is written after at least this many applied entries...
    pub snapshot_every_entries: u64,
    /// ...and once the log records written since the last snapshot add up to this
    /// percentage of that snapshot's record. A snapshot holds the whole state (small
    /// files' data too), so a fixed entry count would make its cost grow with the state:
    /// writing it every 10,000 entries of a million-file shard rewrites the shard for
    /// every few thousand creates. Proportional, the snapshot bytes written stay within
    /// `100 / snapshot_log_bytes_percent` times the log bytes, and the log kept in memory
    /// and replayed on restart within this percentage of the snapshot. 0: entries only.
    pub snapshot_log_bytes_percent: u64,
    /// Entries kept in the log below the snapshot index, so that a briefly lagging peer
    /// catches up from the log rather than from a snapshot transfer. In solo mode there is
    /// no peer: the log is compacted up to the snapshot index.
    pub log_retained_entries: u64,
    /// Clients remembered for deduplication; the least recently used is forgotten first.
    pub sessions_max: usize,
    /// Preference of this replica in leader elections (omnipaxos ballot priority; higher
    /// wins a contested election). Hosts spread leaders by giving each shard's preferred
    /// member a higher value.
    pub leader_priority: u32,
}

impl ReplicaConfig {
    /// Production defaults for a member of `members`.
    pub fn new(shard_id: u64, node_id: u64, members: Vec<u64>) -> Self {
        Self {
            shard_id,
            node_id,
            configuration_id: 1,
            members,
            election_timeout_ticks: 10,
            resend_timeout_ticks: 20,
            batch_entries_max: 1024,
            outgoing_max: 16 * 1024,
            pending_proposals_max: 8 * 1024,
            records_in_flight_max: 64,
            snapshot_every_entries: 10_000,
            snapshot_log_bytes_percent: 100,
            log_retained_entries: 1_000,
            sessions_max: 64 * 1024,
            leader_priority: 0,
        }
    }

    /// Small limits, so that tests and the simulation reach them.
    pub fn tiny(shard_id: u64, node_id: u64, members: Vec<u64>) -> Self {
        Self {
            election_timeout_ticks: 4,
            resend_timeout_ticks: 6,
            batch_entries_max: 8,
            outgoing_max: 256,
            pending_proposals_max: 16,
            records_in_flight_max: 16,
            snapshot_every_entries: 16,
            log_retained_entries: 4,
            sessions_max: 64,
            ..Self::new(shard_id, node_id, members)
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConsensusError> {
        let invalid = |reason: String| Err(ConsensusError::InvalidConfig { reason });
        if let Err(reason) = check_members(&self.members, 1) {
            return invalid(reason);
        }
        if !self.members.contains(&self.node_id) {
            return invalid(format!("node {} is not a member of {:?}", self.node_id, self.members));
        }
        if self.configuration_id == 0 {
            return invalid("configuration id 0 is reserved".to_owned());
        }
        let limits = [
            ("election_timeout_ticks", self.election_timeout_ticks),
            ("resend_timeout_ticks", self.resend_timeout_ticks),
            ("batch_entries_max", self.batch_entries_max as u64),
            ("outgoing_max", self.outgoing_max as u64),
            ("pending_proposals_max", self.pending_proposals_max as u64),
            ("records_in_flight_max", self.records_in_flight_max as u64),
            ("snapshot_every_entries", self.snapshot_every_entries),
            ("sessions_max", self.sessions_max as u64),
        ];
        for (name, value) in limits {
            if value == 0 {
                return invalid(format!("{name} must be at least 1"));
            }
        }
        Ok(())
    }

    /// Whether the replica set is this node alone: the replica runs in solo mode (no
    /// omnipaxos, no messages; an entry is committed once its record is durable).
    pub fn is_solo(&self) -> bool {
        self.members.len() == 1 && self.members[0] == self.node_id
    }

    pub(crate) fn omnipaxos(&self) -> omnipaxos::OmniPaxosConfig {
        omnipaxos::OmniPaxosConfig {
            cluster_config: omnipaxos::ClusterConfig {
                configuration_id: self.configuration_id,
                nodes: self.members.clone(),
                flexible_quorum: None,
            },
            server_config: omnipaxos::ServerConfig {
                pid: self.node_id,
                election_tick_timeout: self.election_timeout_ticks,
                resend_message_tick_timeout: self.resend_timeout_ticks,
                buffer_size: self.outgoing_max,
                // Group commit happens per record, not in omnipaxos: an entry is accepted
                // (and its AcceptDecide queued) at once.
                batch_size: 1,
                leader_priority: self.leader_priority,
                ..omnipaxos::ServerConfig::default()
            },
        }
    }
}

/// Checks a member list: at least `members_min`, distinct, each in `1..=NODE_ID_MAX`.
pub(crate) fn check_members(members: &[u64], members_min: usize) -> Result<(), String> {
    if members.len() < members_min.max(1) {
        return Err(format!(
            "at least {} members needed, got {members:?}",
            members_min.max(1)
        ));
    }
    if let Some(bad) = members.iter().find(|id| **id == 0 || **id > NODE_ID_MAX) {
        return Err(format!("node id {bad} is outside 1..={NODE_ID_MAX}"));
    }
    let mut sorted = members.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != members.len() {
        return Err(format!("duplicate member in {members:?}"));
    }
    Ok(())
}
