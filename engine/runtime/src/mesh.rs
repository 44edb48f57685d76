//! Bounded channels between cores: the only way one core asks another for anything.
//!
//! A [`Mesh`] of N cores gives each core one inbox and a sender to every inbox, each of
//! a fixed capacity. Sending waits when the receiver's inbox is full (backpressure), or
//! answers [`MeshError::Busy`] with [`MeshEndpoint::try_send_to`]. Channels are flume's
//! bounded MPSC channels, whose async side works with any executor's wakers.

/// Errors of the mesh.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MeshError {
    /// The destination inbox is full; retry later.
    #[error("core {core}: inbox full")]
    Busy {
        /// Destination core.
        core: usize,
    },
    /// The destination core has stopped.
    #[error("core {core}: stopped")]
    Disconnected {
        /// Destination core.
        core: usize,
    },
    /// No such core.
    #[error("no core {core} in a mesh of {cores}")]
    NoSuchCore {
        /// The asked index.
        core: usize,
        /// Cores in the mesh.
        cores: usize,
    },
}

/// A message with the core it came from.
#[derive(Debug)]
pub struct Envelope<T> {
    /// Sending core.
    pub from: usize,
    /// The message.
    pub message: T,
}

/// One core's end of the mesh.
#[derive(Debug)]
pub struct MeshEndpoint<T> {
    core: usize,
    inbox: flume::Receiver<Envelope<T>>,
    peers: Vec<flume::Sender<Envelope<T>>>,
}

/// Builds the endpoints of a mesh.
#[derive(Debug)]
pub struct Mesh;

impl Mesh {
    /// Endpoints for `cores` cores, each inbox holding at most `inbox_capacity` messages.
    pub fn endpoints<T>(cores: usize, inbox_capacity: usize) -> Vec<MeshEndpoint<T>> {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..cores).map(|_| flume::bounded(inbox_capacity.max(1))).unzip();
        receivers
            .into_iter()
            .enumerate()
            .map(|(core, inbox)| MeshEndpoint {
                core,
                inbox,
                peers: senders.clone(),
            })
            .collect()
    }
}

impl<T> MeshEndpoint<T> {
    /// This endpoint's core.
    pub fn core(&self) -> usize {
        self.core
    }

    /// Cores in the mesh.
    pub fn cores(&self) -> usize {
        self.peers.len()
    }

    fn peer(&self, core: usize) -> Result<&flume::Sender<Envelope<T>>, MeshError> {
        self.peers.get(core).ok_or(MeshError::NoSuchCore {
            core,
            cores: self.peers.len(),
        })
    }

    /// Sends, waiting while the destination inbox is full.
    pub async fn send_to(&self, core: usize, message: T) -> Result<(), MeshError> {
        let envelope = Envelope {
            from: self.core,
            message,
        };
        self.peer(core)?
            .send_async(envelope)
            .await
            .map_err(|_| MeshError::Disconnected { core })
    }

    /// Sends without waiting; `Busy` when the destination inbox is full.
    pub fn try_send_to(&self, core: usize, message: T) -> Result<(), MeshError> {
        let envelope = Envelope {
            from: self.core,
            message,
        };
        self.peer(core)?.try_send(envelope).map_err(|error| match error {
            flume::TrySendError::Full(_) => MeshError::Busy { core },
            flume::TrySendError::Disconnected(_) => MeshError::Disconnected { core },
        })
    }

    /// Receives the next message of this core's inbox. Every endpoint holds a sender to
    /// every inbox (its own too), so this waits as long as the mesh exists; `None` only if
    /// the channel is torn down.
    pub async fn recv(&self) -> Option<Envelope<T>> {
        self.inbox.recv_async().await.ok()
    }

    /// A message if one is waiting.
    pub fn try_recv(&self) -> Option<Envelope<T>> {
        self.inbox.try_recv().ok()
    }
}
