//! The one error type of the crate.

/// Everything that can go wrong in a replica: refusals the caller may retry
/// (`NotLeader`, `Busy`, `Reconfiguring`), bad input from outside (corrupt records,
/// messages and snapshots, misrouted messages), and caller mistakes (`InvalidConfig`,
/// `UnknownRecord`, `NotReconfigured`, `Unsupported`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsensusError {
    /// Only the leader accepts proposals, read barriers and reconfigurations.
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader {
        /// The node this replica believes leads the shard, if it knows one.
        leader: Option<u64>,
    },
    /// A bounded queue is full; retry later.
    #[error("busy: {what} is at its limit of {limit}")]
    Busy {
        /// Which limit was reached (the configuration field's name).
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// A stop-sign has been accepted: this configuration takes no new entries.
    #[error("the configuration is being replaced by a reconfiguration")]
    Reconfiguring,
    /// The configuration handed to a constructor is not usable.
    #[error("invalid replica configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// A persisted record failed its checks (CRC32C, version, owner, order, content).
    #[error("corrupt log record at position {position}: {reason}")]
    CorruptRecord {
        /// Position of the record in the sequence handed to `recover` (0-based).
        position: usize,
        /// What is wrong.
        reason: String,
    },
    /// A message from the network failed its checks (CRC32C, version, encoding).
    #[error("corrupt message: {reason}")]
    CorruptMessage {
        /// What is wrong.
        reason: String,
    },
    /// A well-formed message that this replica must not handle (another shard or
    /// configuration, wrong sender or receiver, a kind of message this crate never sends).
    #[error("refused message from node {from}: {reason}")]
    UnexpectedMessage {
        /// The sender named by the caller.
        from: u64,
        /// Why it was refused.
        reason: String,
    },
    /// A state machine snapshot (in a record, a message or a handoff) could not be restored.
    #[error("corrupt snapshot: {reason}")]
    CorruptSnapshot {
        /// What is wrong.
        reason: String,
    },
    /// `persisted` named a record this replica never produced.
    #[error("record {record_seq} was never produced (last produced: {last_seq})")]
    UnknownRecord {
        /// The sequence number the caller named.
        record_seq: u64,
        /// The last sequence number produced.
        last_seq: u64,
    },
    /// `handoff` was called before this configuration's stop-sign was decided and applied.
    #[error("the configuration has not been stopped by a decided reconfiguration")]
    NotReconfigured,
    /// The operation is not available for this kind of replica (e.g. `reconfigure` on a
    /// replica in solo mode).
    #[error("not supported: {what}")]
    Unsupported {
        /// What was asked, and why it is not available.
        what: &'static str,
    },
}
