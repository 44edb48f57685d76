//! Network messages: omnipaxos messages and snapshot transfers, in an envelope that names
//! shard, configuration, sender and receiver, framed by [`codec`] (magic `KSCM`).

use crate::{codec, entry::Entry, record::Image, ConsensusError};
use omnipaxos::{
    ballot_leader_election::Ballot,
    messages::{
        ballot_leader_election::HeartbeatMsg,
        sequence_paxos::{PaxosMessage, PaxosMsg},
        Message,
    },
    storage::StopSign,
    util::LogSync,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::fmt::Debug;

/// Where a message goes: what a host needs to hand it to the right replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The shard.
    pub shard_id: u64,
    /// The configuration of the shard's replica set.
    pub configuration_id: u32,
    /// The sending node.
    pub from: u64,
    /// The receiving node.
    pub to: u64,
}

/// The position of a message on its link (sender to receiver, one shard and
/// configuration). omnipaxos assumes each link delivers in order and without duplicates
/// (as one TCP connection does); a transport that reconnects, or the simulation, can
/// reorder and repeat. The receiver keeps the highest position seen per sender and drops
/// anything at or below it, as if lost. `epoch` is the sequence number of the first record
/// of the sender's incarnation, so positions grow across restarts too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct LinkPosition {
    /// The sender's incarnation.
    pub epoch: u64,
    /// Messages sent on the link in this incarnation, this one included.
    pub seq: u64,
}

/// A snapshot sent to a replica that needs entries the sender has compacted away.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct InstallSnapshot<C> {
    /// The snapshot.
    pub image: Image,
    /// Set when a leader sends it in place of an `AcceptSync`: the leader's round and its
    /// log after the snapshot, which the receiver accepts as the `AcceptSync` would have
    /// made it. Unset when a follower sends it in place of a `Promise` to a candidate that
    /// is behind: the receiver then keeps its own accepted entries after the snapshot.
    pub sync: Option<InstallSync<C>>,
}

/// The leader's log after an installed snapshot.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct InstallSync<C> {
    /// The leader's round.
    pub round: Ballot,
    /// The leader's entries from the snapshot's index on.
    pub suffix: Vec<Entry<C>>,
    /// The leader's stop-sign, after the suffix.
    pub stopsign: Option<StopSign>,
}

/// What a message carries.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum WireBody<C>
where
    Entry<C>: omnipaxos::storage::Entry,
{
    /// An omnipaxos message.
    Paxos(Message<Entry<C>>),
    /// A snapshot transfer.
    Install(InstallSnapshot<C>),
}

#[derive(Serialize)]
struct EnvelopeRef<'a, C>
where
    Entry<C>: omnipaxos::storage::Entry,
{
    route: Route,
    link: LinkPosition,
    body: &'a WireBody<C>,
}

#[derive(Deserialize)]
struct EnvelopeOwned<C>
where
    Entry<C>: omnipaxos::storage::Entry,
{
    route: Route,
    link: LinkPosition,
    body: WireBody<C>,
}

/// Encodes a message.
pub(crate) fn encode<C>(route: Route, link: LinkPosition, body: &WireBody<C>) -> Vec<u8>
where
    C: Clone + Debug + Serialize + DeserializeOwned,
{
    codec::seal(codec::MESSAGE_MAGIC, &EnvelopeRef { route, link, body })
}

/// Decodes a message.
pub(crate) fn decode<C>(bytes: &[u8]) -> Result<(Route, LinkPosition, WireBody<C>), ConsensusError>
where
    C: Clone + Debug + Serialize + DeserializeOwned,
{
    let corrupt = |reason: String| ConsensusError::CorruptMessage { reason };
    let payload = codec::open(codec::MESSAGE_MAGIC, bytes).map_err(corrupt)?;
    let envelope: EnvelopeOwned<C> = codec::decode(payload).map_err(corrupt)?;
    Ok((envelope.route, envelope.link, envelope.body))
}

/// Reads the route of a message without decoding its body (checks the frame first), so
/// a host can hand the message to the replica of the right shard and configuration.
pub fn peek_route(bytes: &[u8]) -> Result<Route, ConsensusError> {
    let corrupt = |reason: String| ConsensusError::CorruptMessage { reason };
    let payload = codec::open(codec::MESSAGE_MAGIC, bytes).map_err(corrupt)?;
    postcard::take_from_bytes::<Route>(payload)
        .map(|(route, _)| route)
        .map_err(|error| corrupt(format!("undecodable route: {error}")))
}

/// Checks an omnipaxos message from `from` to `me` against the members of the
/// configuration: sender and receiver, every ballot's node, and that it is a kind this
/// crate sends (no forwarded proposals, no compaction requests, no omnipaxos snapshots).
/// omnipaxos indexes tables by node id, so an unchecked id could crash it.
pub(crate) fn check_paxos<C>(message: &Message<Entry<C>>, from: u64, me: u64, members: &[u64]) -> Result<(), String>
where
    C: Clone + Debug + Serialize + DeserializeOwned,
{
    let known = |ballot: &Ballot| ballot.pid == 0 || members.contains(&ballot.pid);
    let (sender, receiver, ballots_ok) = match message {
        Message::BLE(ble) => {
            let ok = match &ble.msg {
                HeartbeatMsg::Request(_) => true,
                HeartbeatMsg::Reply(reply) => known(&reply.ballot) && known(&reply.leader),
            };
            (ble.from, ble.to, ok)
        }
        Message::SequencePaxos(PaxosMessage { from, to, msg }) => (*from, *to, check_paxos_msg(msg, members)?),
    };
    if sender != from || receiver != me {
        return Err(format!("addressed {sender} -> {receiver}, delivered {from} -> {me}"));
    }
    if !ballots_ok {
        return Err("a ballot names a node outside the configuration".to_owned());
    }
    Ok(())
}

fn check_paxos_msg<C>(msg: &PaxosMsg<Entry<C>>, members: &[u64]) -> Result<bool, String>
where
    C: Clone + Debug + Serialize + DeserializeOwned,
{
    let known = |ballot: &Ballot| ballot.pid == 0 || members.contains(&ballot.pid);
    let sync_ok = |sync: &LogSync<Entry<C>>| sync.decided_snapshot.is_none() && stopsign_ok(sync.stopsign.as_ref());
    Ok(match msg {
        PaxosMsg::PrepareReq(m) => known(&m.n),
        PaxosMsg::Prepare(m) => known(&m.n) && known(&m.n_accepted),
        PaxosMsg::Promise(m) => known(&m.n) && known(&m.n_accepted) && m.log_sync.as_ref().is_none_or(sync_ok),
        PaxosMsg::AcceptSync(m) => known(&m.n) && sync_ok(&m.log_sync),
        PaxosMsg::AcceptDecide(m) => known(&m.n),
        PaxosMsg::Accepted(m) => known(&m.n),
        PaxosMsg::NotAccepted(m) => known(&m.n),
        PaxosMsg::Decide(m) => known(&m.n),
        PaxosMsg::AcceptStopSign(m) => known(&m.n) && stopsign_ok(Some(&m.ss)),
        PaxosMsg::ForwardStopSign(ss) => stopsign_ok(Some(ss)),
        PaxosMsg::ProposalForward(_) => return Err("forwarded proposals are not used".to_owned()),
        PaxosMsg::Compaction(_) => return Err("compaction requests are not used".to_owned()),
    })
}

/// What a receiver knows of its own log, to judge a log sync.
pub(crate) struct LogView {
    /// Entries below it are decided.
    pub decided_idx: usize,
    /// One past the last accepted entry, the stop-sign included.
    pub accepted_end_idx: usize,
    /// The round of the accepted log.
    pub accepted_round: Ballot,
}

/// Screens the log sync of an `AcceptSync` or a `Promise` before omnipaxos applies it.
/// omnipaxos trusts these to be fresh, but a delayed or duplicated message (or one built
/// from a delayed promise) is not:
/// - it may start below the decided index: entries there are the same on every replica,
///   so the sync is cut to start at the decided index (omnipaxos asserts this, and the
///   log may be compacted there);
/// - it may start past the end of the receiver's log, which would leave a gap;
/// - an `AcceptSync` of the round the receiver already accepted in may be older than what
///   the receiver accepted since; a leader's log only grows within its round, so a sync
///   that would shorten the log is stale, and applying it would forget accepted entries.
///
/// Returns false for a stale message, which is dropped as if lost.
pub(crate) fn screen_log_sync<C>(message: &mut Message<Entry<C>>, view: &LogView) -> bool
where
    C: Clone + Debug + Serialize + DeserializeOwned,
{
    let (sync, accept_round) = match message {
        Message::SequencePaxos(PaxosMessage {
            msg: PaxosMsg::AcceptSync(accept_sync),
            ..
        }) => (&mut accept_sync.log_sync, Some(accept_sync.n)),
        Message::SequencePaxos(PaxosMessage {
            msg: PaxosMsg::Promise(promise),
            ..
        }) => match promise.log_sync.as_mut() {
            Some(sync) => (sync, None),
            None => return true,
        },
        _ => return true,
    };
    if sync.sync_idx < view.decided_idx {
        let below = view.decided_idx - sync.sync_idx;
        if sync.suffix.len() < below {
            return false;
        }
        sync.suffix.drain(..below);
        sync.sync_idx = view.decided_idx;
    }
    if sync.sync_idx > view.accepted_end_idx {
        return false;
    }
    let synced_end_idx = sync.sync_idx + sync.suffix.len() + usize::from(sync.stopsign.is_some());
    let same_round = accept_round.is_some_and(|round| round == view.accepted_round);
    !(same_round && synced_end_idx < view.accepted_end_idx)
}

fn stopsign_ok(stopsign: Option<&StopSign>) -> bool {
    // A stop-sign names an omnipaxos configuration: two members or more.
    stopsign.is_none_or(|ss| crate::config::check_members(&ss.next_config.nodes, 2).is_ok())
}
