//! Connections to the cores of the cluster: one multiplexed connection per core address,
//! made on first use, replaced when it fails, shared by every task of the client.
//!
//! The table has one slot per core of the cluster map, fixed at start-up; a slot holds
//! its connection behind an atomic pointer (`ArcSwapOption`), so tasks on any thread find
//! and replace connections without a lock. An address whose connection attempt failed is
//! skipped for `down_backoff_ms`, so reads around a dead node do not wait for a connect
//! timeout on every fragment.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use kiseki_api::ClusterMap;
use kiseki_net::tokio_rpc::RpcClient;
use kiseki_net::{NetError, RpcConfig};

/// How the client reaches nodes.
#[derive(Clone, Debug)]
pub struct Connector {
    /// TLS 1.3 client configuration (with the client's certificate) for a cluster that
    /// requires mutual TLS; plain TCP without it.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Limits and timeouts of each connection.
    pub rpc: RpcConfig,
    /// Deadline of one connection attempt.
    pub connect_timeout_ms: u64,
}

impl Default for Connector {
    fn default() -> Connector {
        Connector {
            tls: None,
            rpc: RpcConfig {
                // Above a node's 5 s answer deadline for shard requests.
                call_timeout_ms: 6_000,
                // A core's server takes frames up to 256 MiB; fragments are at most a few MiB.
                frame_bytes_max: 256 << 20,
                ..RpcConfig::default()
            },
            connect_timeout_ms: 2_000,
        }
    }
}

impl Connector {
    /// Connects to `address`.
    pub async fn connect(&self, address: SocketAddr) -> Result<RpcClient, NetError> {
        match &self.tls {
            Some(config) => {
                let name = address.ip().to_string();
                RpcClient::connect_tls(
                    address,
                    &name,
                    Arc::clone(config),
                    self.connect_timeout_ms,
                    self.rpc.clone(),
                )
                .await
            }
            None => RpcClient::connect_tcp(address, self.connect_timeout_ms, self.rpc.clone()).await,
        }
    }
}

struct Slot {
    connection: ArcSwapOption<RpcClient>,
    /// Milliseconds since `Links::epoch` until which the address counts as down.
    down_until_ms: AtomicU64,
}

/// The connection table.
pub(crate) struct Links {
    connector: Connector,
    slots: Vec<Slot>,
    by_address: HashMap<SocketAddr, usize>,
    epoch: Instant,
    down_backoff_ms: u64,
}

impl Links {
    /// One slot per core address of `map`.
    pub(crate) fn new(map: &ClusterMap, connector: Connector) -> Links {
        let mut slots = Vec::new();
        let mut by_address = HashMap::new();
        for node in &map.nodes {
            for core in 0..usize::from(node.cores) {
                if let Some(address) = map.address(node.id, core) {
                    by_address.entry(address).or_insert_with(|| {
                        slots.push(Slot {
                            connection: ArcSwapOption::empty(),
                            down_until_ms: AtomicU64::new(0),
                        });
                        slots.len() - 1
                    });
                }
            }
        }
        Links {
            connector,
            slots,
            by_address,
            epoch: Instant::now(),
            down_backoff_ms: 1_000,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A live connection to `address`, made now if there is none.
    pub(crate) async fn get(&self, address: SocketAddr) -> Result<Arc<RpcClient>, NetError> {
        let Some(slot) = self.by_address.get(&address).map(|index| &self.slots[*index]) else {
            return Err(NetError::Closed {
                reason: format!("{address} is not a core of the cluster map"),
            });
        };
        if let Some(connection) = slot.connection.load_full() {
            if !connection.is_closed() {
                return Ok(connection);
            }
        }
        if slot.down_until_ms.load(Ordering::Relaxed) > self.now_ms() {
            return Err(NetError::Closed {
                reason: format!("{address} was unreachable moments ago"),
            });
        }
        match self.connector.connect(address).await {
            Ok(connection) => {
                let connection = Arc::new(connection);
                slot.connection.store(Some(Arc::clone(&connection)));
                Ok(connection)
            }
            Err(error) => {
                slot.down_until_ms
                    .store(self.now_ms() + self.down_backoff_ms, Ordering::Relaxed);
                Err(error)
            }
        }
    }

    /// Drops `connection` from its slot after it failed (a newer one is left alone).
    pub(crate) fn forget(&self, connection: &Arc<RpcClient>) {
        let Some(address) = connection.peer_addr() else { return };
        if let Some(index) = self.by_address.get(&address) {
            let slot = &self.slots[*index];
            let current = slot.connection.load();
            if current.as_ref().is_some_and(|held| Arc::ptr_eq(held, connection)) {
                slot.connection.store(None);
            }
        }
        connection.close();
    }

    /// Closes every connection.
    pub(crate) fn close_all(&self) {
        for slot in &self.slots {
            if let Some(connection) = slot.connection.swap(None) {
                connection.close();
            }
        }
    }
}

/// Sleeps a little before the next attempt: 10 ms doubling to 200 ms.
pub(crate) async fn back_off(attempt: usize) {
    let delay_ms = (10u64 << attempt.min(5)).min(200);
    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
}
