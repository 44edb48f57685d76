//! Deduplication of retried proposals: per client, the last applied sequence number and
//! its output. Part of the replicated state (every replica updates it in log order, and
//! snapshots carry it), so a retry answered by any later leader gets the same result.

use crate::codec;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;

/// What to do with a proposal of a client.
pub(crate) enum SessionCheck<O> {
    /// Never applied: apply it.
    Fresh,
    /// The client's last applied proposal again: answer with its output, apply nothing.
    Duplicate(O),
    /// Older than the client's last applied proposal: the client gave up on it; skip.
    Stale,
}

/// The deduplication table.
#[derive(Clone, Debug)]
pub(crate) struct Sessions<O> {
    by_client: BTreeMap<u64, Session<O>>,
    clients_max: usize,
}

#[derive(Clone, Debug)]
struct Session<O> {
    sequence: u64,
    output: O,
    /// Log index of the last applied proposal; the least recent session is evicted first.
    index: u64,
}

/// One session as stored in snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionImage {
    client_id: u64,
    sequence: u64,
    index: u64,
    #[serde(with = "serde_bytes")]
    output: Vec<u8>,
}

impl<O: Clone + Serialize + DeserializeOwned> Sessions<O> {
    /// An empty table holding at most `clients_max` clients.
    pub fn new(clients_max: usize) -> Self {
        Self {
            by_client: BTreeMap::new(),
            clients_max,
        }
    }

    /// Classifies a proposal.
    pub fn check(&self, client_id: u64, sequence: u64) -> SessionCheck<O> {
        match self.by_client.get(&client_id) {
            None => SessionCheck::Fresh,
            Some(session) if sequence > session.sequence => SessionCheck::Fresh,
            Some(session) if sequence == session.sequence => SessionCheck::Duplicate(session.output.clone()),
            Some(_) => SessionCheck::Stale,
        }
    }

    /// Remembers an applied proposal, evicting the least recently used client when full.
    /// Eviction depends only on the log, so every replica evicts the same client.
    pub fn record(&mut self, client_id: u64, sequence: u64, index: u64, output: O) {
        if !self.by_client.contains_key(&client_id) && self.by_client.len() >= self.clients_max {
            let oldest = self
                .by_client
                .iter()
                .min_by_key(|(_, session)| session.index)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.by_client.remove(&oldest);
            }
        }
        self.by_client.insert(
            client_id,
            Session {
                sequence,
                output,
                index,
            },
        );
    }

    /// The table as stored in snapshots.
    pub fn to_image(&self) -> Vec<SessionImage> {
        self.by_client
            .iter()
            .map(|(client_id, session)| SessionImage {
                client_id: *client_id,
                sequence: session.sequence,
                index: session.index,
                output: postcard::to_allocvec(&session.output).unwrap_or_default(),
            })
            .collect()
    }

    /// Rebuilds a table from a snapshot.
    pub fn from_image(images: &[SessionImage], clients_max: usize) -> Result<Self, String> {
        let mut sessions = Self::new(clients_max);
        for image in images {
            let output = codec::decode::<O>(&image.output)?;
            sessions.by_client.insert(
                image.client_id,
                Session {
                    sequence: image.sequence,
                    output,
                    index: image.index,
                },
            );
        }
        Ok(sessions)
    }
}
