//! The cluster map: nodes, their cores and ports, and where each shard's replicas live.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ApiError;

/// One storage node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node id: 1..=4096, unique in the cluster.
    pub id: u64,
    /// The address its cores listen on.
    pub host: IpAddr,
    /// Core `c` listens on `port_base + c`.
    pub port_base: u16,
    /// Cores (executors) it runs.
    pub cores: u16,
    /// Devices it stores fragments on (`kiseki-server run --device`, in that order).
    #[serde(default = "one_device")]
    pub devices: u16,
}

fn one_device() -> u16 {
    1
}

/// Nodes and shard placement. Placement is a pure function of the map, so every node
/// and client computes the same replica sets without asking.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// The nodes, by ascending id.
    pub nodes: Vec<NodeInfo>,
    /// Shards of the namespace, numbered from 1.
    pub shards: u64,
    /// Replicas per shard (capped by the node count).
    pub replicas: usize,
}

impl ClusterMap {
    /// Checks ids, ports and counts.
    pub fn validate(&self) -> Result<(), ApiError> {
        if self.nodes.is_empty() || self.shards == 0 || self.replicas == 0 {
            return Err(ApiError::Invalid("a cluster needs nodes, shards and replicas".into()));
        }
        let mut ids: Vec<u64> = self.nodes.iter().map(|node| node.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.nodes.len() || ids.iter().any(|id| *id == 0 || *id > 4096) {
            return Err(ApiError::Invalid("node ids must be unique and in 1..=4096".into()));
        }
        if self.nodes.iter().any(|node| node.cores == 0 || node.devices == 0) {
            return Err(ApiError::Invalid(
                "every node needs at least one core and one device".into(),
            ));
        }
        if self.nodes.iter().any(|node| node.devices > DEVICES_PER_NODE_MAX) {
            return Err(ApiError::Invalid(format!(
                "a node has at most {DEVICES_PER_NODE_MAX} devices"
            )));
        }
        Ok(())
    }

    /// Reads a map written by [`save`](Self::save).
    pub fn load(path: &Path) -> Result<ClusterMap, ApiError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| ApiError::Invalid(format!("reading {}: {error}", path.display())))?;
        let map = Self::from_json(&text)?;
        Ok(map)
    }

    /// Parses and validates JSON.
    pub fn from_json(text: &str) -> Result<ClusterMap, ApiError> {
        let map: ClusterMap =
            serde_json::from_str(text).map_err(|error| ApiError::Invalid(format!("cluster map: {error}")))?;
        map.validate()?;
        Ok(map)
    }

    /// The map as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Writes the map (atomically: a temporary file renamed into place).
    pub fn save(&self, path: &Path) -> Result<(), ApiError> {
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, self.to_json())
            .and_then(|()| std::fs::rename(&temporary, path))
            .map_err(|error| ApiError::Invalid(format!("writing {}: {error}", path.display())))
    }

    /// The node with `id`.
    pub fn node(&self, id: u64) -> Option<&NodeInfo> {
        self.nodes.iter().find(|node| node.id == id)
    }

    /// The nodes holding `shard`'s replicas, ascending: the `replicas` nodes with the
    /// highest rendezvous weight for the shard.
    pub fn members(&self, shard: u64) -> Vec<u64> {
        let mut weighted: Vec<(u64, u64)> = self
            .nodes
            .iter()
            .map(|node| (rendezvous_weight(shard, node.id), node.id))
            .collect();
        weighted.sort_unstable_by(|a, b| b.cmp(a));
        let mut members: Vec<u64> = weighted.iter().take(self.replicas).map(|(_, id)| *id).collect();
        members.sort_unstable();
        members
    }

    /// The core of `node` that owns `shard`'s replica there.
    pub fn core_of(&self, shard: u64, node: u64) -> Option<usize> {
        self.node(node).map(|info| (shard % u64::from(info.cores)) as usize)
    }

    /// The address of `node`'s core `core`.
    pub fn address(&self, node: u64, core: usize) -> Option<SocketAddr> {
        let info = self.node(node)?;
        let port = info.port_base.checked_add(u16::try_from(core).ok()?)?;
        Some(SocketAddr::new(info.host, port))
    }

    /// Where `shard`'s replica on `node` listens.
    pub fn shard_address(&self, shard: u64, node: u64) -> Option<SocketAddr> {
        self.address(node, self.core_of(shard, node)?)
    }

    /// The shards with a replica on `node`'s core `core`.
    pub fn shards_on(&self, node: u64, core: usize) -> Vec<u64> {
        (1..=self.shards)
            .filter(|shard| self.members(*shard).contains(&node) && self.core_of(*shard, node) == Some(core))
            .collect()
    }
}

impl ClusterMap {
    /// The core of `node` that owns the fragments of `locator` there:
    /// `hash(locator) mod cores` (the locator is already a hash; its first 8 bytes are
    /// used).
    pub fn fragment_core(&self, locator: &[u8; 32], node: u64) -> Option<usize> {
        let info = self.node(node)?;
        let mut word = [0u8; 8];
        word.copy_from_slice(&locator[..8]);
        Some((u64::from_le_bytes(word) % u64::from(info.cores)) as usize)
    }

    /// Where the fragments of `locator` on `node` are served.
    pub fn fragment_address(&self, locator: &[u8; 32], node: u64) -> Option<SocketAddr> {
        self.address(node, self.fragment_core(locator, node)?)
    }

    /// Every device of the cluster as `(device id, node id, device index on the node)`,
    /// with device ids from [`device_id`].
    pub fn devices(&self) -> Vec<(u32, u64, u16)> {
        self.nodes
            .iter()
            .flat_map(|node| (0..node.devices).map(move |index| (device_id(node.id, index), node.id, index)))
            .collect()
    }
}

/// Devices a node may have at most (device ids leave 8 bits for the index).
pub const DEVICES_PER_NODE_MAX: u16 = 256;

/// The cluster-wide id of device `index` of `node`: `node × 256 + index`.
pub fn device_id(node: u64, index: u16) -> u32 {
    (node as u32) << 8 | u32::from(index)
}

/// The node and device index of a device id from [`device_id`].
pub fn split_device_id(device: u32) -> (u64, u16) {
    (u64::from(device >> 8), (device & 0xff) as u16)
}

/// A deterministic 64-bit mix of shard and node (splitmix64 of their combination).
fn rendezvous_weight(shard: u64, node: u64) -> u64 {
    let mut value = shard.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ node.rotate_left(32);
    value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}
