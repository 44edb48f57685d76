//! [`Client`]: the cluster map, the connections, and the two services of a node: shard
//! requests to a shard's leader (with retries that keep the proposal id) and fragment
//! requests to the core that owns the fragment.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;
use kiseki_api::fragment::{
    DevicesReply, DevicesRequest, FragmentDelete, FragmentGet, FragmentList, FragmentPut, FragmentReply, MSG_DEVICES,
    MSG_FRAGMENT_DELETE, MSG_FRAGMENT_GET, MSG_FRAGMENT_LIST, MSG_FRAGMENT_PUT,
};
use kiseki_api::meta::{
    DiscoverReply, DiscoverRequest, ProposeReply, ProposeRequest, ReadReply, ReadRequest, Redirect, StatusReply,
    StatusRequest, MSG_DISCOVER, MSG_PROPOSE, MSG_READ, MSG_STATUS,
};
use kiseki_api::{
    split_device_id, ClusterMap, DeltaOutcome, ReadAnswer, ReadQuery, READDIR_ENTRIES_MAX, WATCH_EVENTS_PER_READ_MAX,
};
use kiseki_namespace::{Delta, DirEntry, InodeId, NamespaceError, WatchEvent, READDIR_COOKIE_FIRST};
use kiseki_net::{decode_body, encode_body, NetError};
use kiseki_placement::{Device, DeviceId, NodeId, PoolMap};

use crate::links::{back_off, Connector, Links};
use crate::metadata::{MetadataCacheOptions, ShardMetadataCache};
use crate::ClientError;

/// Settings of a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// How nodes are reached.
    pub connector: Connector,
    /// How long a request keeps retrying (leader changes, lost connections, busy
    /// replicas) before it fails `Unavailable`.
    pub deadline_ms: u64,
    /// Idle client sessions kept for reuse (each holds one proposal at a time).
    pub sessions_max: usize,
    /// The metadata cache of every shard (off by default: a client that caches reads
    /// another process's changes up to a watch interval late).
    pub metadata_cache: MetadataCacheOptions,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            connector: Connector::default(),
            deadline_ms: 30_000,
            sessions_max: 1024,
            metadata_cache: MetadataCacheOptions::off(),
        }
    }
}

/// A client session: one outstanding proposal at a time, numbered in order, so the
/// replicas apply a retried proposal at most once.
#[derive(Debug)]
struct Session {
    client_id: u64,
    sequence: u64,
}

impl Session {
    fn new() -> Session {
        let client_id = loop {
            let id = rand::random::<u64>() >> 1;
            if id != 0 {
                break id;
            }
        };
        Session { client_id, sequence: 0 }
    }
}

struct Inner {
    map: ClusterMap,
    pool: PoolMap,
    links: Links,
    /// Leader hint per shard (index shard - 1; 0: unknown).
    leaders: Vec<AtomicU64>,
    sessions: ArrayQueue<Session>,
    deadline_ms: u64,
    /// Metadata cache per shard (index shard - 1).
    metadata: Vec<ShardMetadataCache>,
}

/// The native client of a Kiseki cluster. Cheap to clone; every clone shares the
/// connections. Runs on tokio (any flavour).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("nodes", &self.inner.map.nodes.len())
            .field("shards", &self.inner.map.shards)
            .finish_non_exhaustive()
    }
}

/// What to do after one attempt of a request.
enum Attempt<T> {
    Done(T),
    /// Try again: at the leader named, at once, or after a pause at the next member.
    Retry {
        reason: String,
        leader: Option<u64>,
    },
}

impl<T> Attempt<T> {
    fn retry(node: u64, error: impl std::fmt::Display) -> Attempt<T> {
        Attempt::Retry {
            reason: format!("node {node}: {error}"),
            leader: None,
        }
    }
}

impl Client {
    /// Connects to `seed` (any core of any node), fetches the cluster map and builds the
    /// connection table and the device pool from it.
    pub async fn connect(seed: SocketAddr, options: ClientOptions) -> Result<Client, ClientError> {
        let first = options.connector.connect(seed).await?;
        let reply: DiscoverReply = decode_body(&first.call(MSG_DISCOVER, &encode_body(&DiscoverRequest {})?).await?)?;
        first.close();
        let map = ClusterMap::from_json(&reply.cluster_json)?;
        let devices = map
            .devices()
            .into_iter()
            .map(|(device, node, _)| Device::new(DeviceId(device), NodeId(node as u32)))
            .collect();
        let pool = PoolMap::new(devices)?;
        let leaders = (0..map.shards).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
        for (shard, leader) in reply.leaders {
            if let Some(slot) = shard.checked_sub(1).and_then(|index| leaders.get(index as usize)) {
                slot.store(leader, Ordering::Relaxed);
            }
        }
        let links = Links::new(&map, options.connector);
        let epoch = Instant::now();
        let metadata = (0..map.shards)
            .map(|_| ShardMetadataCache::new(options.metadata_cache, epoch))
            .collect();
        Ok(Client {
            inner: Arc::new(Inner {
                pool,
                links,
                leaders,
                sessions: ArrayQueue::new(options.sessions_max.max(1)),
                deadline_ms: options.deadline_ms,
                metadata,
                map,
            }),
        })
    }

    /// The cluster map.
    pub fn map(&self) -> &ClusterMap {
        &self.inner.map
    }

    /// Every device of the cluster, for placement.
    pub fn pool(&self) -> &PoolMap {
        &self.inner.pool
    }

    /// Closes every connection (later calls connect again).
    pub fn close(&self) {
        self.inner.links.close_all();
    }

    fn deadline(&self) -> Instant {
        Instant::now() + Duration::from_millis(self.inner.deadline_ms)
    }

    fn leader_slot(&self, shard: u64) -> Option<&AtomicU64> {
        shard
            .checked_sub(1)
            .and_then(|index| self.inner.leaders.get(index as usize))
    }

    /// The metadata cache of `shard` (whether it holds anything depends on
    /// [`ClientOptions::metadata_cache`]).
    pub fn metadata(&self, shard: u64) -> Option<&ShardMetadataCache> {
        shard
            .checked_sub(1)
            .and_then(|index| self.inner.metadata.get(index as usize))
    }

    /// Prometheus text of the metadata caches' counters, per shard that used its cache.
    pub fn metadata_metrics_text(&self) -> String {
        let mut text = String::new();
        let names = [
            ("hits", "lookups answered from the metadata cache"),
            ("misses", "lookups the metadata cache sent to the shard"),
            ("invalidations", "cached values dropped by watch events"),
            ("resets", "times the metadata cache dropped everything"),
        ];
        let stats: Vec<(u64, crate::metadata::MetadataCacheStats)> = (1..=self.inner.metadata.len() as u64)
            .filter_map(|shard| Some((shard, self.metadata(shard)?.stats())))
            .filter(|(_, stats)| *stats != Default::default())
            .collect();
        for (name, help) in names {
            text += &format!(
                "# HELP kiseki_metadata_cache_{name}_total {help}\n# TYPE kiseki_metadata_cache_{name}_total counter\n"
            );
            for (shard, stats) in &stats {
                let value = match name {
                    "hits" => stats.hits,
                    "misses" => stats.misses,
                    "invalidations" => stats.invalidations,
                    _ => stats.resets,
                };
                text += &format!("kiseki_metadata_cache_{name}_total{{shard=\"{shard}\"}} {value}\n");
            }
        }
        text
    }

    /// Starts following `shard`'s watch events from `index` if nobody does yet.
    fn arm_metadata(&self, shard: u64, index: u64) {
        let Some(cache) = self.metadata(shard) else { return };
        if cache.arm(index, Instant::now()) {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(watch_shard(Arc::downgrade(&self.inner), shard));
                }
                Err(_) => cache.reset(u64::MAX),
            }
        }
    }

    /// Proposes `delta` on `shard` and waits until it is applied on a majority: the log
    /// index and the outcome. A refused delta is `Ok` with `DeltaOutcome::Refused`.
    pub async fn propose(&self, shard: u64, delta: &Delta) -> Result<(u64, DeltaOutcome), ClientError> {
        let asked = Instant::now();
        let mut session = self.inner.sessions.pop().unwrap_or_else(Session::new);
        session.sequence += 1;
        let body = encode_body(&ProposeRequest {
            shard,
            client_id: session.client_id,
            sequence: session.sequence,
            delta: delta.encode(),
        })?;
        let answer = self
            .call_leader(shard, MSG_PROPOSE, &body, |bytes| {
                Ok(match decode_body::<ProposeReply>(bytes)? {
                    ProposeReply::Applied { index, outcome, events } => Ok((index, outcome, events)),
                    ProposeReply::Redirect(redirect) => Err(redirect),
                })
            })
            .await;
        // A session whose last proposal has an unknown outcome is still usable: its next
        // proposal takes the next sequence number.
        let _ = self.inner.sessions.push(session);
        let (index, outcome, events) = answer?;
        let outcome: DeltaOutcome = postcard::from_bytes(&outcome)
            .map_err(|error| ClientError::Invalid(format!("a node sent an undecodable outcome: {error}")))?;
        if let Some(cache) = self.metadata(shard).filter(|cache| cache.options().enabled()) {
            // Undecodable events count as unknown: the cache drops everything.
            let events: Option<Vec<WatchEvent>> = postcard::from_bytes(&events).unwrap_or(None);
            let changed = match &outcome {
                DeltaOutcome::Done {
                    inode: Some(inode),
                    attributes: Some(attributes),
                } => Some((*inode, attributes)),
                _ => None,
            };
            self.arm_metadata(shard, index);
            cache.applied(index, events.as_deref(), changed, asked, Instant::now());
        }
        Ok((index, outcome))
    }

    /// Reads `query` on `shard`, linearizably (the leader answers after a read barrier).
    pub async fn read(&self, shard: u64, query: &ReadQuery) -> Result<ReadAnswer, ClientError> {
        Ok(self.read_at(shard, query).await?.1)
    }

    /// [`Self::read`], with the log index the answer reflects (at least).
    pub async fn read_at(&self, shard: u64, query: &ReadQuery) -> Result<(u64, ReadAnswer), ClientError> {
        let query = postcard::to_allocvec(query).map_err(|error| ClientError::Invalid(error.to_string()))?;
        let body = encode_body(&ReadRequest { shard, query })?;
        let (index, answer) = self
            .call_leader(shard, MSG_READ, &body, |bytes| {
                Ok(match decode_body::<ReadReply>(bytes)? {
                    ReadReply::Done { index, answer } => Ok((index, answer)),
                    ReadReply::Redirect(redirect) => Err(redirect),
                })
            })
            .await?;
        let answer = postcard::from_bytes(&answer)
            .map_err(|error| ClientError::Invalid(format!("a node sent an undecodable read answer: {error}")))?;
        if self.metadata(shard).is_some_and(|cache| cache.options().enabled()) {
            self.arm_metadata(shard, index);
        }
        Ok((index, answer))
    }

    /// Every entry of directory `dir` in `shard`'s namespace, in cookie order (paged
    /// through with linearizable `ReadDir` reads).
    pub async fn read_dir(&self, shard: u64, dir: InodeId) -> Result<Vec<DirEntry>, ClientError> {
        let mut entries = Vec::new();
        let mut after_cookie = READDIR_COOKIE_FIRST - 1;
        loop {
            let query = ReadQuery::ReadDir {
                dir,
                after_cookie,
                limit: READDIR_ENTRIES_MAX,
            };
            let page = match self.read(shard, &query).await? {
                ReadAnswer::Entries(page) => page,
                other => return Err(ClientError::Invalid(format!("readdir answered {other:?}"))),
            };
            let full = page.len() as u32 == READDIR_ENTRIES_MAX;
            let last = page.last().map(|entry| entry.cookie);
            entries.extend(page);
            match last {
                Some(cookie) if full => after_cookie = cookie,
                _ => return Ok(entries),
            }
        }
    }

    /// The replicas of `node`'s core `core`.
    pub async fn status(&self, node: u64, core: usize) -> Result<StatusReply, ClientError> {
        let address = self.core_address(node, core)?;
        let bytes = self
            .call_once(address, MSG_STATUS, &encode_body(&StatusRequest {})?)
            .await?;
        Ok(decode_body(&bytes)?)
    }

    /// The devices of `node` as its core `core` sees them (its allocation groups).
    pub async fn devices(&self, node: u64, core: usize) -> Result<DevicesReply, ClientError> {
        let address = self.core_address(node, core)?;
        let bytes = self
            .call_once(address, MSG_DEVICES, &encode_body(&DevicesRequest {})?)
            .await?;
        Ok(decode_body(&bytes)?)
    }

    fn core_address(&self, node: u64, core: usize) -> Result<SocketAddr, ClientError> {
        self.inner
            .map
            .address(node, core)
            .ok_or_else(|| ClientError::Invalid(format!("node {node} core {core} is not in the cluster map")))
    }

    async fn call_once(&self, address: SocketAddr, message_type: u16, body: &[u8]) -> Result<Vec<u8>, ClientError> {
        let connection = self.inner.links.get(address).await?;
        match connection.call(message_type, body).await {
            Ok(bytes) => Ok(bytes),
            Err(error) => {
                if error.is_retryable() {
                    self.inner.links.forget(&connection);
                }
                Err(error.into())
            }
        }
    }

    async fn call_leader<T>(
        &self,
        shard: u64,
        message_type: u16,
        body: &[u8],
        parse: impl Fn(&[u8]) -> Result<Result<T, Redirect>, NetError>,
    ) -> Result<T, ClientError> {
        let members = self.inner.map.members(shard);
        let Some(hint) = self.leader_slot(shard) else {
            return Err(ClientError::Invalid(format!(
                "shard {shard} is not in the cluster map (1..={})",
                self.inner.map.shards
            )));
        };
        let deadline = self.deadline();
        let mut last_error = String::from("no attempt");
        let mut attempt = 0usize;
        while Instant::now() < deadline {
            let hinted = hint.load(Ordering::Relaxed);
            let node = if members.contains(&hinted) {
                hinted
            } else {
                members[attempt % members.len()]
            };
            attempt += 1;
            let address = self
                .inner
                .map
                .shard_address(shard, node)
                .ok_or_else(|| ClientError::Invalid(format!("shard {shard} node {node} is not in the map")))?;
            let outcome = self.leader_attempt(address, node, message_type, body, &parse).await?;
            match outcome {
                Attempt::Done(value) => {
                    hint.store(node, Ordering::Relaxed);
                    return Ok(value);
                }
                Attempt::Retry {
                    reason,
                    leader: Some(leader),
                } => {
                    last_error = reason;
                    hint.store(leader, Ordering::Relaxed);
                }
                Attempt::Retry { reason, leader: None } => {
                    last_error = reason;
                    if hint.load(Ordering::Relaxed) == node {
                        hint.store(0, Ordering::Relaxed);
                    }
                    back_off(attempt.min(4)).await;
                }
            }
        }
        Err(ClientError::Unavailable(format!("shard {shard}: {last_error}")))
    }

    async fn leader_attempt<T>(
        &self,
        address: SocketAddr,
        node: u64,
        message_type: u16,
        body: &[u8],
        parse: &impl Fn(&[u8]) -> Result<Result<T, Redirect>, NetError>,
    ) -> Result<Attempt<T>, ClientError> {
        let connection = match self.inner.links.get(address).await {
            Ok(connection) => connection,
            Err(error) => return Ok(Attempt::retry(node, error)),
        };
        let redirect = match connection
            .call(message_type, body)
            .await
            .and_then(|bytes| parse(&bytes))
        {
            Ok(Ok(value)) => return Ok(Attempt::Done(value)),
            Ok(Err(redirect)) => redirect,
            Err(NetError::Remote { code, message }) if !code.is_retryable() => {
                return Err(ClientError::Refused {
                    node: format!("node {node}"),
                    reason: format!("{code:?}: {message}"),
                })
            }
            Err(error) => {
                self.inner.links.forget(&connection);
                return Ok(Attempt::retry(node, error));
            }
        };
        let leader = match redirect {
            Redirect::NotLeader { leader } if leader != 0 && leader != node => Some(leader),
            _ => None,
        };
        Ok(Attempt::Retry {
            reason: format!("node {node}: {redirect:?}"),
            leader,
        })
    }
}

/// How hard a fragment request tries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Persistence {
    /// Until the deadline (deletes: the fragment must go).
    UntilDeadline,
    /// Until the deadline while the node can be reached; at once when it cannot be
    /// connected to (writes: the chunk's other fragments may make its write quorum).
    WhileReachable,
    /// Once more after a lost connection (reads: other fragments can stand in).
    Twice,
}

impl Client {
    /// Where fragments of `locator` on cluster device `device` are served.
    fn fragment_target(&self, device: u32, locator: &[u8; 32]) -> Result<(u64, u16, SocketAddr), ClientError> {
        let (node, index) = split_device_id(device);
        let address = self
            .inner
            .map
            .fragment_address(locator, node)
            .ok_or_else(|| ClientError::Invalid(format!("device {device:#x}: node {node} is not in the map")))?;
        Ok((node, index, address))
    }

    async fn fragment_call(
        &self,
        node: u64,
        address: SocketAddr,
        message_type: u16,
        body: &[u8],
        persistence: Persistence,
    ) -> Result<FragmentReply, ClientError> {
        let deadline = self.deadline();
        let mut attempt = 0usize;
        // Lost or refused connections; a busy answer does not count (the node is alive
        // and sheds load: it is asked again until the deadline, on the same connection).
        let mut connection_failures = 0usize;
        loop {
            attempt += 1;
            let out_of_time = Instant::now() >= deadline;
            let last_chance = out_of_time || (persistence == Persistence::Twice && connection_failures >= 1);
            let connection = match self.inner.links.get(address).await {
                Ok(connection) => connection,
                Err(error) if persistence == Persistence::WhileReachable => {
                    return Err(ClientError::Unavailable(format!("node {node}: {error}")));
                }
                Err(error) if !last_chance => {
                    tracing::debug!(node, %error, "fragment request: no connection; retrying");
                    connection_failures += 1;
                    back_off(attempt).await;
                    continue;
                }
                Err(error) => return Err(ClientError::Unavailable(format!("node {node}: {error}"))),
            };
            let error = match connection.call(message_type, body).await {
                Ok(bytes) => match decode_body::<FragmentReply>(&bytes)? {
                    FragmentReply::Busy if !out_of_time => {
                        back_off(attempt).await;
                        continue;
                    }
                    reply => return Ok(reply),
                },
                Err(error) => error,
            };
            if !error.is_retryable() {
                return Err(ClientError::Refused {
                    node: format!("node {node}"),
                    reason: error.to_string(),
                });
            }
            if is_busy(&error) {
                if out_of_time {
                    return Err(ClientError::Unavailable(format!("node {node}: {error}")));
                }
                back_off(attempt).await;
                continue;
            }
            self.inner.links.forget(&connection);
            connection_failures += 1;
            if last_chance {
                return Err(ClientError::Unavailable(format!("node {node}: {error}")));
            }
            back_off(attempt).await;
        }
    }

    /// Stores `bytes` as the fragment of `locator` on cluster device `device`; returns
    /// once it is durable there. Storing the same bytes again is a no-op. Fails at once
    /// when the node cannot be connected to (it was refused within the last second).
    pub async fn put_fragment(&self, device: u32, locator: &[u8; 32], bytes: Vec<u8>) -> Result<(), ClientError> {
        let (node, index, address) = self.fragment_target(device, locator)?;
        let body = encode_body(&FragmentPut {
            device: index,
            locator: *locator,
            bytes,
        })?;
        match self
            .fragment_call(node, address, MSG_FRAGMENT_PUT, &body, Persistence::WhileReachable)
            .await?
        {
            FragmentReply::Done => Ok(()),
            FragmentReply::NoSpace { free_bytes } => Err(ClientError::NoSpace(format!(
                "node {node} device {index}: {free_bytes} bytes free"
            ))),
            other => Err(refusal(node, index, other)),
        }
    }

    /// The fragment of `locator` on cluster device `device`, or `None` when it is not
    /// there, is corrupt or its node cannot be reached (a reader decodes around it).
    pub async fn get_fragment(&self, device: u32, locator: &[u8; 32]) -> Option<Vec<u8>> {
        let (node, index, address) = self.fragment_target(device, locator).ok()?;
        let body = encode_body(&FragmentGet {
            device: index,
            locator: *locator,
            offset_bytes: 0,
            length_bytes: 0,
        })
        .ok()?;
        match self
            .fragment_call(node, address, MSG_FRAGMENT_GET, &body, Persistence::Twice)
            .await
        {
            Ok(FragmentReply::Data(bytes)) => Some(bytes),
            Ok(FragmentReply::NotFound) => None,
            Ok(other) => {
                tracing::warn!(node, device = index, reply = ?other, "fragment read refused");
                None
            }
            Err(error) => {
                tracing::debug!(node, device = index, %error, "fragment read failed");
                None
            }
        }
    }

    /// Deletes the fragment of `locator` on cluster device `device`; `false` if it was
    /// not there.
    pub async fn delete_fragment(&self, device: u32, locator: &[u8; 32]) -> Result<bool, ClientError> {
        let (node, index, address) = self.fragment_target(device, locator)?;
        let body = encode_body(&FragmentDelete {
            device: index,
            locator: *locator,
        })?;
        match self
            .fragment_call(node, address, MSG_FRAGMENT_DELETE, &body, Persistence::UntilDeadline)
            .await?
        {
            FragmentReply::Done => Ok(true),
            FragmentReply::NotFound => Ok(false),
            other => Err(refusal(node, index, other)),
        }
    }

    /// Up to `limit` fragment locators after `after` on device `device_index` of `node`,
    /// held by its core `core`.
    pub async fn list_fragments(
        &self,
        node: u64,
        core: usize,
        device_index: u16,
        after: Option<[u8; 32]>,
        limit: u32,
    ) -> Result<Vec<[u8; 32]>, ClientError> {
        let address = self.core_address(node, core)?;
        let body = encode_body(&FragmentList {
            device: device_index,
            after,
            limit,
        })?;
        match self
            .fragment_call(node, address, MSG_FRAGMENT_LIST, &body, Persistence::Twice)
            .await?
        {
            FragmentReply::Locators(locators) => Ok(locators),
            other => Err(refusal(node, device_index, other)),
        }
    }
}

/// Whether `error` says the node (or this connection's window) is busy, not gone.
fn is_busy(error: &NetError) -> bool {
    match error {
        NetError::Busy { .. } => true,
        NetError::Remote { code, .. } => *code == kiseki_net::ErrorCode::Busy,
        _ => false,
    }
}

fn refusal(node: u64, device: u16, reply: FragmentReply) -> ClientError {
    ClientError::Refused {
        node: format!("node {node} device {device}"),
        reason: format!("{reply:?}"),
    }
}

/// Follows `shard`'s watch events into its metadata cache until the client is dropped.
async fn watch_shard(client: Weak<Inner>, shard: u64) {
    loop {
        let pause = match client.upgrade() {
            Some(inner) => inner.metadata[(shard - 1) as usize].watch_pause(Instant::now()),
            None => return,
        };
        tokio::time::sleep(pause).await;
        let Some(inner) = client.upgrade() else { return };
        let client = Client { inner };
        let Some(cache) = client.metadata(shard) else { return };
        loop {
            let query = ReadQuery::WatchSince {
                sequence: cache.watched(),
                limit: WATCH_EVENTS_PER_READ_MAX,
            };
            match client.read(shard, &query).await {
                Ok(ReadAnswer::Events(events)) => {
                    let truncated = events.len() >= WATCH_EVENTS_PER_READ_MAX as usize;
                    cache.watch_read(&events, truncated, Instant::now());
                    if !truncated {
                        break;
                    }
                }
                Ok(ReadAnswer::Failed(NamespaceError::WatchGap { oldest_available, .. })) => {
                    cache.watch_gap(oldest_available, Instant::now());
                    break;
                }
                Ok(other) => {
                    tracing::warn!(
                        shard,
                        ?other,
                        "watch read answered something else; metadata cache dropped"
                    );
                    cache.reset(cache.watched());
                    break;
                }
                Err(error) => {
                    // Values expire by their TTL meanwhile.
                    tracing::debug!(shard, %error, "watch read failed; trying again");
                    break;
                }
            }
        }
    }
}
