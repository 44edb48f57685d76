//! Receiving a snapshot transfer.

use super::{Engine, Replica};
use crate::{sessions::Sessions, wire::InstallSnapshot, ConsensusError, StateMachine};

impl<S: StateMachine> Replica<S> {
    /// Installs a snapshot sent by a peer that could not serve the log entries this
    /// replica needs. Stale transfers are ignored.
    ///
    /// With `sync` (from a leader, in place of an `AcceptSync`) the replica takes the
    /// leader's log after the snapshot and its round as accepted round, exactly what the
    /// `AcceptSync` would have done; it does so only while it has promised that round and
    /// holds no entry of that round beyond what the transfer carries. Without `sync` (from
    /// a follower, in place of a `Promise`) it keeps its own accepted round and its
    /// entries after the snapshot: only entries at decided indexes are replaced, by their
    /// decided values. Either way the replica then restarts omnipaxos from the new storage
    /// (as after a crash) and resynchronizes.
    pub(super) fn install(&mut self, install: InstallSnapshot<S::Command>) -> Result<(), ConsensusError> {
        let Engine::Paxos(paxos) = &self.engine else {
            // A solo replica refuses every message before decoding it.
            return Ok(());
        };
        let target_idx = install.image.applied_idx;
        let decided_idx = paxos.get_decided_idx() as u64;
        if target_idx <= decided_idx.max(self.applied_idx) {
            return Ok(());
        }
        if let Some(sync) = &install.sync {
            let storage = self.storage.borrow();
            let accepted_round = storage.accepted_round.unwrap_or_default();
            let accepted_end_idx = storage.log_end_idx() + u64::from(storage.stopsign.is_some());
            let install_end_idx = target_idx + sync.suffix.len() as u64 + u64::from(sync.stopsign.is_some());
            // Entries accepted in the leader's round are a prefix of its log; a transfer
            // built before some of them (a late duplicate) would drop them: ignore it.
            let keeps_round_entries = accepted_round < sync.round || accepted_end_idx <= install_end_idx;
            if paxos.get_promise() != sync.round || accepted_round > sync.round || !keeps_round_entries {
                return Ok(());
            }
        }
        let corrupt = |reason: String| ConsensusError::CorruptSnapshot { reason };
        let state = S::restore(&install.image.state).map_err(|error| corrupt(error.to_string()))?;
        let sessions = Sessions::from_image(&install.image.sessions, self.config.sessions_max).map_err(corrupt)?;
        // Everything produced so far goes out first, in order.
        self.cut_record();
        {
            let mut storage = self.storage.borrow_mut();
            match install.sync {
                Some(sync) => {
                    storage.accepted_round = Some(sync.round);
                    storage.log = sync.suffix;
                    storage.stopsign = sync.stopsign;
                }
                None if storage.log_end_idx() >= target_idx => {
                    let below = (target_idx - storage.log_start_idx) as usize;
                    storage.log.drain(..below);
                }
                None => {
                    storage.log.clear();
                    storage.stopsign = None;
                }
            }
            storage.log_start_idx = target_idx;
            storage.compacted_idx = target_idx;
            storage.decided_idx = target_idx;
        }
        self.state = state;
        self.sessions = sessions;
        self.applied_idx = target_idx;
        self.index_base = install.image.index_base;
        self.image = install.image;
        self.pending_proposals.clear();
        self.engine = Engine::Paxos(Box::new(Self::build_paxos(&self.config, &self.storage)?));
        self.write_snapshot_record();
        self.snapshots_installed += 1;
        Ok(())
    }
}
