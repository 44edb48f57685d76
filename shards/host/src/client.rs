//! A shard-aware client of the metadata service.
//!
//! It learns the cluster map from any node, sends each request straight to the core
//! that holds the shard's replica on the node it believes leads, follows `NotLeader`
//! hints, and retries on lost connections and timeouts with the same proposal id, so a
//! retried delta is applied at most once (the replicas' deduplication table).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use kiseki_namespace::Delta;
use kiseki_net::{decode_body, encode_body, NetError, RpcClient, RpcConfig, TcpTransport, Transport};

use crate::HostError;
use kiseki_api::meta::{
    DiscoverReply, DiscoverRequest, ProposeReply, ProposeRequest, ReadReply, ReadRequest, Redirect, StatusReply,
    StatusRequest, MSG_DISCOVER, MSG_PROPOSE, MSG_READ, MSG_STATUS,
};
use kiseki_api::{ClusterMap, DeltaOutcome, ReadAnswer, ReadQuery};

/// One client session: at most one outstanding proposal, numbered in order. Open one per
/// concurrent stream of proposals.
#[derive(Debug)]
pub struct Session {
    client_id: u64,
    sequence: Cell<u64>,
}

/// The shard-aware client. Lives on one executor (its connections are that core's).
pub struct MetaClient {
    map: ClusterMap,
    transport: Rc<dyn Transport>,
    connections: RefCell<BTreeMap<SocketAddr, Rc<RpcClient>>>,
    leaders: RefCell<BTreeMap<u64, u64>>,
    deadline_ms: u64,
}

impl MetaClient {
    /// Connects to `seed` (any core of any node) over plain TCP and fetches the cluster map.
    pub async fn connect(seed: SocketAddr) -> Result<MetaClient, HostError> {
        Self::connect_with(seed, Rc::new(TcpTransport)).await
    }

    /// Connects to `seed` over `transport` (TLS for a cluster that requires it).
    pub async fn connect_with(seed: SocketAddr, transport: Rc<dyn Transport>) -> Result<MetaClient, HostError> {
        let client = connect(transport.as_ref(), seed).await?;
        let reply: DiscoverReply = decode_body(&client.call(MSG_DISCOVER, &encode_body(&DiscoverRequest {})?).await?)?;
        let map = ClusterMap::from_json(&reply.cluster_json)?;
        let meta = MetaClient {
            map,
            transport,
            connections: RefCell::new(BTreeMap::from([(seed, Rc::new(client))])),
            leaders: RefCell::new(reply.leaders.into_iter().filter(|(_, leader)| *leader != 0).collect()),
            deadline_ms: 30_000,
        };
        Ok(meta)
    }

    /// The cluster map.
    pub fn map(&self) -> &ClusterMap {
        &self.map
    }

    /// Sets how long a request keeps retrying before it fails `Unavailable`.
    pub fn set_deadline_ms(&mut self, deadline_ms: u64) {
        self.deadline_ms = deadline_ms;
    }

    /// A new session with a random id.
    pub fn session(&self) -> Session {
        let client_id = loop {
            let id = rand::random::<u64>() >> 1;
            if id != 0 {
                break id;
            }
        };
        Session {
            client_id,
            sequence: Cell::new(0),
        }
    }

    /// Proposes `delta` on `shard`; returns the log index and outcome once applied.
    pub async fn propose(
        &self,
        session: &Session,
        shard: u64,
        delta: &Delta,
    ) -> Result<(u64, DeltaOutcome), HostError> {
        let sequence = session.sequence.get() + 1;
        session.sequence.set(sequence);
        let body = encode_body(&ProposeRequest {
            shard,
            client_id: session.client_id,
            sequence,
            delta: delta.encode(),
        })?;
        let answer = self.call_leader(shard, MSG_PROPOSE, &body, |bytes| {
            let reply: ProposeReply = decode_body(bytes)?;
            Ok(match reply {
                ProposeReply::Applied { index, outcome, .. } => Ok((index, outcome)),
                ProposeReply::Redirect(redirect) => Err(redirect),
            })
        });
        let (index, outcome) = answer.await?;
        let outcome: DeltaOutcome =
            postcard::from_bytes(&outcome).map_err(|error| HostError::Invalid(format!("outcome: {error}")))?;
        Ok((index, outcome))
    }

    /// Reads `query` on `shard` (linearizable).
    pub async fn read(&self, shard: u64, query: &ReadQuery) -> Result<(u64, ReadAnswer), HostError> {
        let query = postcard::to_allocvec(query).map_err(|error| HostError::Invalid(error.to_string()))?;
        let body = encode_body(&ReadRequest { shard, query })?;
        let answer = self.call_leader(shard, MSG_READ, &body, |bytes| {
            let reply: ReadReply = decode_body(bytes)?;
            Ok(match reply {
                ReadReply::Done { index, answer } => Ok((index, answer)),
                ReadReply::Redirect(redirect) => Err(redirect),
            })
        });
        let (index, answer) = answer.await?;
        let answer: ReadAnswer =
            postcard::from_bytes(&answer).map_err(|error| HostError::Invalid(format!("read answer: {error}")))?;
        Ok((index, answer))
    }

    /// The replicas of `node`'s core `core`.
    pub async fn status(&self, node: u64, core: usize) -> Result<StatusReply, HostError> {
        let address = self
            .map
            .address(node, core)
            .ok_or_else(|| HostError::Invalid(format!("node {node} core {core} not in the map")))?;
        let client = self.connection(address).await?;
        let answer = client.call(MSG_STATUS, &encode_body(&StatusRequest {})?).await;
        let bytes = match answer {
            Ok(bytes) => bytes,
            Err(error) => {
                self.connections.borrow_mut().remove(&address);
                return Err(error.into());
            }
        };
        Ok(decode_body(&bytes)?)
    }

    /// The leader this client believes `shard` has.
    pub fn leader_hint(&self, shard: u64) -> Option<u64> {
        self.leaders.borrow().get(&shard).copied()
    }

    async fn call_leader<T>(
        &self,
        shard: u64,
        message_type: u16,
        body: &[u8],
        parse: impl Fn(&[u8]) -> Result<Result<T, Redirect>, NetError>,
    ) -> Result<T, HostError> {
        let members = self.map.members(shard);
        let started = Instant::now();
        let mut attempt = 0usize;
        let mut last_error = String::from("no attempt");
        while started.elapsed() < Duration::from_millis(self.deadline_ms) {
            let node = self
                .leader_hint(shard)
                .filter(|leader| members.contains(leader))
                .unwrap_or(members[attempt % members.len()]);
            attempt += 1;
            let Some(address) = self.map.shard_address(shard, node) else {
                return Err(HostError::Invalid(format!("shard {shard} node {node} not in the map")));
            };
            let client = match self.connection(address).await {
                Ok(client) => client,
                Err(error) => {
                    last_error = format!("node {node}: {error}");
                    self.leaders.borrow_mut().remove(&shard);
                    kiseki_runtime::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let answer = client.call(message_type, body).await;
            let redirect = match answer.and_then(|bytes| parse(&bytes)) {
                Ok(Ok(value)) => {
                    self.leaders.borrow_mut().insert(shard, node);
                    return Ok(value);
                }
                Ok(Err(redirect)) => redirect,
                Err(NetError::Remote { code, message }) => {
                    return Err(HostError::Invalid(format!("node {node} refused: {code:?} {message}")));
                }
                Err(error) => {
                    // Lost connection or timeout: forget the link and try the next member.
                    last_error = format!("node {node}: {error}");
                    self.connections.borrow_mut().remove(&address);
                    self.leaders.borrow_mut().remove(&shard);
                    kiseki_runtime::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            last_error = format!("node {node}: {redirect:?}");
            match redirect {
                Redirect::NotLeader { leader } if leader != 0 && leader != node => {
                    self.leaders.borrow_mut().insert(shard, leader);
                }
                _ => {
                    // No leader known yet (an election is running) or busy: back off.
                    self.leaders.borrow_mut().remove(&shard);
                    kiseki_runtime::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        Err(HostError::Unavailable(format!("shard {shard}: {last_error}")))
    }

    async fn connection(&self, address: SocketAddr) -> Result<Rc<RpcClient>, HostError> {
        if let Some(client) = self.connections.borrow().get(&address) {
            if !client.is_closed() {
                return Ok(Rc::clone(client));
            }
        }
        let client = Rc::new(connect(self.transport.as_ref(), address).await?);
        self.connections.borrow_mut().insert(address, Rc::clone(&client));
        Ok(client)
    }
}

async fn connect(transport: &dyn Transport, address: SocketAddr) -> Result<RpcClient, HostError> {
    let name = address.ip().to_string();
    let connecting = transport.connect(address, &name);
    let stream = kiseki_runtime::timeout(Duration::from_secs(2), connecting)
        .await
        .ok_or_else(|| HostError::Unavailable(format!("connecting to {address} timed out")))??;
    let config = RpcConfig {
        // Above the host's 5 s answer deadline; a node cut off is given up after this.
        call_timeout_ms: 6_000,
        ..RpcConfig::default()
    };
    Ok(RpcClient::new(stream, config)?)
}
