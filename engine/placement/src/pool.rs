//! Pool maps: the devices of a pool, their nodes, weights and states.

use std::collections::BTreeSet;
use std::fmt;

use crate::error::PlacementError;

/// A device (an NVMe namespace or a file standing in for one), unique within a cluster.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct DeviceId(pub u32);

impl fmt::Display for DeviceId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "dev{}", self.0)
    }
}

/// A storage node: the failure domain above the device.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "node{}", self.0)
    }
}

/// The state of a device in the pool map.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DeviceState {
    /// In the pool and serving.
    Up,
    /// In the pool but not answering (transient): placement still counts it, reads of its
    /// fragments go degraded, repair does not read from it.
    Down,
    /// Removed from placement: its fragments are re-placed and rebuilt elsewhere.
    Out,
}

/// One device of a pool.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Device {
    /// Device id.
    pub id: DeviceId,
    /// The node holding the device.
    pub node: NodeId,
    /// Relative capacity share (for example capacity in GiB); 0 takes no fragments.
    pub weight: u32,
    /// Up, down or out.
    pub state: DeviceState,
}

impl Device {
    /// An up device of weight 1.
    pub fn new(id: DeviceId, node: NodeId) -> Device {
        Device {
            id,
            node,
            weight: 1,
            state: DeviceState::Up,
        }
    }

    /// Whether placement may put fragments on this device (in the pool, non-zero weight).
    pub fn is_eligible(&self) -> bool {
        self.state != DeviceState::Out && self.weight > 0
    }
}

/// The devices of one pool, sorted by id, ids unique.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct PoolMap {
    devices: Vec<Device>,
}

impl PoolMap {
    /// Builds a pool map; rejects duplicate device ids.
    pub fn new(mut devices: Vec<Device>) -> Result<PoolMap, PlacementError> {
        devices.sort_by_key(|device| device.id);
        for pair in devices.windows(2) {
            if pair[0].id == pair[1].id {
                return Err(PlacementError::DuplicateDevice(pair[0].id));
            }
        }
        Ok(PoolMap { devices })
    }

    /// All devices, sorted by id.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// The device with this id.
    pub fn device(&self, id: DeviceId) -> Option<&Device> {
        self.devices
            .binary_search_by_key(&id, |device| device.id)
            .ok()
            .map(|index| &self.devices[index])
    }

    /// Adds a device; rejects an id already present.
    pub fn add_device(&mut self, device: Device) -> Result<(), PlacementError> {
        match self.devices.binary_search_by_key(&device.id, |d| d.id) {
            Ok(_) => Err(PlacementError::DuplicateDevice(device.id)),
            Err(index) => {
                self.devices.insert(index, device);
                Ok(())
            }
        }
    }

    /// Changes a device's state.
    pub fn set_state(&mut self, id: DeviceId, state: DeviceState) -> Result<(), PlacementError> {
        match self.devices.binary_search_by_key(&id, |d| d.id) {
            Ok(index) => {
                self.devices[index].state = state;
                Ok(())
            }
            Err(_) => Err(PlacementError::UnknownDevice(id)),
        }
    }

    /// Marks every device of a node with `state`.
    pub fn set_node_state(&mut self, node: NodeId, state: DeviceState) {
        for device in self.devices.iter_mut().filter(|d| d.node == node) {
            device.state = state;
        }
    }

    /// Devices placement may use.
    pub fn eligible_devices(&self) -> impl Iterator<Item = &Device> {
        self.devices.iter().filter(|device| device.is_eligible())
    }

    /// Distinct nodes holding at least one eligible device.
    pub fn eligible_nodes(&self) -> BTreeSet<NodeId> {
        self.eligible_devices().map(|device| device.node).collect()
    }
}
