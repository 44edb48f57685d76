//! Producing actions: records, gated messages, applied entries, snapshots.

use super::{Action, Engine, Gated, Replica};
use crate::{
    entry::{Entry, Payload},
    record::{self, Image, RecordBody},
    sessions::SessionCheck,
    wire::{self, InstallSnapshot, InstallSync, LinkPosition, Route, WireBody},
    StateMachine,
};
use omnipaxos::{
    messages::{
        sequence_paxos::{Compaction, PaxosMessage, PaxosMsg},
        Message,
    },
    util::LogEntry,
};

impl<S: StateMachine> Replica<S> {
    /// Everything the host must do now, in order: messages whose records are durable and
    /// trims first, then new records to persist, applied entries and read results, leader
    /// changes. A message produced now leaves at a later poll, after `persisted`. Call it
    /// after every batch of calls (`receive`, `tick`, `propose`, `persisted`): what
    /// happened since the previous poll becomes one record. In solo mode: the entries
    /// proposed since the previous poll become one record, and the entries of records
    /// reported durable are applied.
    pub fn poll_actions(&mut self) -> Vec<Action<S::Output>> {
        // Messages already behind durable records go first, so that every send follows
        // only records reported durable (new records are cut below, after them).
        let mut actions = Vec::new();
        while self
            .outgoing
            .front()
            .is_some_and(|gated| gated.record_seq <= self.record_seq_durable)
        {
            if let Some(gated) = self.outgoing.pop_front() {
                actions.push(Action::Send {
                    to: gated.to,
                    bytes: gated.bytes,
                    after_record_seq: gated.record_seq,
                });
            }
        }
        if let Some(record_seq) = self.trim_record_seq.filter(|seq| *seq <= self.record_seq_durable) {
            self.trim_record_seq = None;
            actions.push(Action::Trim {
                below_record_seq: record_seq,
            });
        }
        self.cut_record();
        self.apply_decided(true);
        self.track_leader();
        self.maybe_snapshot();
        self.proposals_since_poll = 0;
        actions.append(&mut self.actions);
        actions
    }

    /// Turns the storage mutations since the last cut into one record, and queues the
    /// messages omnipaxos produced meanwhile behind it (I-L1: they announce state that
    /// record holds).
    pub(super) fn cut_record(&mut self) {
        let Engine::Paxos(paxos) = &mut self.engine else {
            return self.cut_solo_record();
        };
        let mut messages = Vec::new();
        paxos.take_outgoing_messages(&mut messages);
        let ops = std::mem::take(&mut self.storage.borrow_mut().pending);
        if !ops.is_empty() {
            self.push_record(&RecordBody::Ops(ops));
        }
        let gate = self.record_seq_last;
        for message in messages {
            self.queue_message(gate, message);
        }
    }

    fn queue_message(&mut self, record_seq: u64, message: Message<Entry<S::Command>>) {
        let to = message.get_receiver();
        if to == self.config.node_id || !self.config.members.contains(&to) {
            return;
        }
        let body = match self.needs_snapshot_transfer(&message) {
            Some(None) => return,
            Some(Some(install)) => {
                self.snapshots_sent += 1;
                WireBody::Install(install)
            }
            None => WireBody::Paxos(message),
        };
        if self.outgoing.len() >= self.config.outgoing_max {
            self.messages_dropped += 1;
            return;
        }
        let route = Route {
            shard_id: self.config.shard_id,
            configuration_id: self.config.configuration_id,
            from: self.config.node_id,
            to,
        };
        let seq = self.link_sent.entry(to).or_insert(0);
        *seq += 1;
        let link = LinkPosition {
            epoch: self.link_epoch,
            seq: *seq,
        };
        let bytes = wire::encode(route, link, &body);
        self.outgoing.push_back(Gated { record_seq, to, bytes });
    }

    /// An `AcceptSync` or `Promise` whose log suffix starts below the start of this
    /// replica's log could not be filled (the entries were compacted away): send the
    /// latest snapshot instead. `Some(None)`: drop the message (this leader's round ended
    /// since it was built, so its log may no longer be the one the message describes).
    fn needs_snapshot_transfer(
        &self,
        message: &Message<Entry<S::Command>>,
    ) -> Option<Option<InstallSnapshot<S::Command>>> {
        let Message::SequencePaxos(PaxosMessage { msg, .. }) = message else {
            return None;
        };
        let Engine::Paxos(paxos) = &self.engine else {
            return None;
        };
        let storage = self.storage.borrow();
        match msg {
            PaxosMsg::AcceptSync(sync) if (sync.log_sync.sync_idx as u64) < storage.log_start_idx => {
                if paxos.get_promise() != sync.n || !self.is_leader() {
                    return Some(None);
                }
                let from = (self.image.applied_idx - storage.log_start_idx) as usize;
                let suffix = storage.log.get(from..).map(<[_]>::to_vec).unwrap_or_default();
                let install = InstallSync {
                    round: sync.n,
                    suffix,
                    stopsign: storage.stopsign.clone(),
                };
                Some(Some(InstallSnapshot {
                    image: self.image.clone(),
                    sync: Some(install),
                }))
            }
            PaxosMsg::Promise(promise)
                if promise
                    .log_sync
                    .as_ref()
                    .is_some_and(|sync| (sync.sync_idx as u64) < storage.log_start_idx) =>
            {
                Some(Some(InstallSnapshot {
                    image: self.image.clone(),
                    sync: None,
                }))
            }
            _ => None,
        }
    }

    pub(super) fn push_record(&mut self, body: &RecordBody<S::Command>) {
        self.record_seq_last += 1;
        let bytes = record::encode(self.record_header(self.record_seq_last), body);
        self.record_bytes_since_snapshot += bytes.len() as u64;
        self.actions.push(Action::Persist {
            record_seq: self.record_seq_last,
            bytes,
        });
    }

    /// Applies every decided entry not yet applied; `emit` is false while recovering
    /// (those entries were answered before the crash, or will be through retries).
    pub(super) fn apply_decided(&mut self, emit: bool) {
        let Engine::Paxos(paxos) = &self.engine else {
            return self.apply_committed(emit);
        };
        let decided_idx = paxos.get_decided_idx() as u64;
        if decided_idx <= self.applied_idx {
            return;
        }
        let log_start_idx = self.storage.borrow().log_start_idx;
        assert!(
            self.applied_idx >= log_start_idx,
            "I-L3: entries {}..{log_start_idx} were compacted before being applied",
            self.applied_idx
        );
        let entries = paxos.read_entries(self.applied_idx as usize..decided_idx as usize);
        let entries = entries.unwrap_or_default();
        assert_eq!(
            entries.len() as u64,
            decided_idx - self.applied_idx,
            "I-L3: decided entries {}..{decided_idx} are missing from the log",
            self.applied_idx
        );
        for entry in entries {
            match entry {
                LogEntry::Decided(entry) => self.apply_entry(entry, emit),
                LogEntry::StopSign(stopsign, true) => {
                    self.stopped = Some(stopsign);
                    self.applied_idx += 1;
                }
                other => panic!("I-L3: entry {} is decided but reads as {other:?}", self.applied_idx),
            }
        }
        if let Some(stopsign) = self.stopped.as_ref().filter(|_| emit && !self.reconfigured_reported) {
            self.actions.push(Action::Reconfigured {
                configuration_id: stopsign.next_config.configuration_id,
                members: stopsign.next_config.nodes.clone(),
            });
            self.reconfigured_reported = true;
        }
    }

    pub(super) fn apply_entry(&mut self, entry: Entry<S::Command>, emit: bool) {
        let local_idx = self.applied_idx;
        let index = self.index_base + local_idx + 1;
        let proposal_id = entry.proposal_id;
        match entry.payload {
            Payload::Barrier => {
                if emit {
                    self.actions.push(Action::ReadReady {
                        read_id: proposal_id,
                        index,
                    });
                }
            }
            Payload::Command(command) => {
                let output = match self.sessions.check(proposal_id.client_id, proposal_id.sequence) {
                    _ if proposal_id.client_id == 0 => Some(self.state.apply(index, &command)),
                    SessionCheck::Fresh => {
                        let output = self.state.apply(index, &command);
                        self.sessions
                            .record(proposal_id.client_id, proposal_id.sequence, index, output.clone());
                        Some(output)
                    }
                    SessionCheck::Duplicate(output) => Some(output),
                    SessionCheck::Stale => None,
                };
                if let Some(output) = output.filter(|_| emit) {
                    self.actions.push(Action::Applied {
                        index,
                        proposal_id,
                        output,
                    });
                }
            }
        }
        self.applied_idx = local_idx + 1;
        self.pending_proposals = self.pending_proposals.split_off(&self.applied_idx);
    }

    fn track_leader(&mut self) {
        let Engine::Paxos(paxos) = &self.engine else {
            let leader = Some(self.config.node_id);
            if leader != self.leader_reported {
                self.leader_reported = leader;
                self.actions.push(Action::LeaderChanged { leader });
            }
            return;
        };
        let promise = paxos.get_promise();
        if promise != self.promise_seen {
            // A new round: proposals of an earlier one may never be decided.
            self.promise_seen = promise;
            self.pending_proposals.clear();
        }
        let leader = (promise.pid != 0).then_some(promise.pid);
        if leader != self.leader_reported {
            self.leader_reported = leader;
            self.actions.push(Action::LeaderChanged { leader });
        }
    }

    /// Every `snapshot_every_entries` applied entries, once the records written since the
    /// last snapshot reach `snapshot_log_bytes_percent` of its size: compact the omnipaxos log up to
    /// `log_retained_entries` below the applied index (in solo mode, with no peer to
    /// serve, up to the applied index) and write a snapshot record, which supersedes every
    /// earlier record.
    fn maybe_snapshot(&mut self) {
        if self.applied_idx < self.image.applied_idx + self.config.snapshot_every_entries {
            return;
        }
        let log_bytes_wanted = self
            .snapshot_record_bytes
            .saturating_mul(self.config.snapshot_log_bytes_percent)
            / 100;
        if self.record_bytes_since_snapshot < log_bytes_wanted {
            return;
        }
        match &mut self.engine {
            Engine::Paxos(paxos) => {
                let trim_idx = self.applied_idx.saturating_sub(self.config.log_retained_entries);
                if trim_idx > self.storage.borrow().compacted_idx {
                    // omnipaxos's own `trim` waits for every replica to accept the index; a
                    // local compaction request trims this replica alone (laggards get
                    // snapshots).
                    let me = self.config.node_id;
                    let msg = PaxosMsg::Compaction(Compaction::Trim(trim_idx as usize));
                    paxos.handle_incoming(Message::SequencePaxos(PaxosMessage { from: me, to: me, msg }));
                }
            }
            Engine::Solo(_) => self.storage.borrow_mut().compact(self.applied_idx),
        }
        self.image = self.take_image();
        self.write_snapshot_record();
    }

    pub(super) fn take_image(&self) -> Image {
        Image {
            applied_idx: self.applied_idx,
            index_base: self.index_base,
            state: self.state.snapshot(),
            sessions: self.sessions.to_image(),
        }
    }

    /// Writes `self.image` and the whole storage as one record. Pending mutations are
    /// part of it, so they need no record of their own (in solo mode, pending entries get
    /// their own record first, which commits them once durable).
    pub(super) fn write_snapshot_record(&mut self) {
        if let Engine::Solo(_) = self.engine {
            self.cut_solo_record();
        }
        self.record_seq_last += 1;
        let header = self.record_header(self.record_seq_last);
        let bytes = {
            let mut storage = self.storage.borrow_mut();
            storage.pending.clear();
            record::encode_snapshot(header, &self.image, &storage)
        };
        self.snapshot_record_bytes = bytes.len() as u64;
        self.record_bytes_since_snapshot = 0;
        self.actions.push(Action::Persist {
            record_seq: self.record_seq_last,
            bytes,
        });
        self.trim_record_seq = Some(self.record_seq_last);
    }
}
