//! The messages of the fragment service: what clients and gateways send a storage node's
//! cores to store, fetch and delete the fragments of chunks.
//!
//! A fragment of locator `L` on node `n` belongs to core `hash(L) mod cores` of `n`
//! ([`crate::ClusterMap::fragment_core`]); that core owns its allocation group on every
//! device of the node, so a request names the device by its index on the node. A request
//! that reaches another core is answered [`FragmentReply::WrongCore`] with the owner.
//! Fragments are opaque ciphertext to the node: it checks lengths and checksums, never
//! contents.

// rkyv's derive generates resolver types for enums whose fields carry no docs; every
// item written here is documented.
#![allow(missing_docs)]

use kiseki_net::rkyv::{Archive, Deserialize, Serialize};

/// Store a fragment durably: [`FragmentPut`] → [`FragmentReply`] (`Done` once durable).
pub const MSG_FRAGMENT_PUT: u16 = 0x0201;
/// Fetch a fragment or a byte range of it: [`FragmentGet`] → [`FragmentReply`] (`Data`).
pub const MSG_FRAGMENT_GET: u16 = 0x0202;
/// Delete a fragment: [`FragmentDelete`] → [`FragmentReply`] (`Done` once durable).
pub const MSG_FRAGMENT_DELETE: u16 = 0x0203;
/// List the fragment locators of one device on one core: [`FragmentList`] →
/// [`FragmentReply`] (`Locators`).
pub const MSG_FRAGMENT_LIST: u16 = 0x0204;
/// The devices of the answering core: [`DevicesRequest`] → [`DevicesReply`].
pub const MSG_DEVICES: u16 = 0x0210;

/// Locators one list answer holds at most.
pub const FRAGMENT_LIST_MAX: u32 = 4096;

/// Stores `bytes` as the fragment `locator` on device `device` of the node.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct FragmentPut {
    /// The device's index on the node (its position in `kiseki-server run --device`).
    pub device: u16,
    /// The chunk locator (a device holds at most one fragment of a chunk).
    pub locator: [u8; 32],
    /// The fragment: header and payload, as the pipeline sealed it.
    pub bytes: Vec<u8>,
}

/// Fetches fragment `locator` from device `device`: the whole fragment when
/// `length_bytes` is 0, else `[offset_bytes, offset_bytes + length_bytes)`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct FragmentGet {
    /// The device's index on the node.
    pub device: u16,
    /// The chunk locator.
    pub locator: [u8; 32],
    /// First byte wanted.
    pub offset_bytes: u64,
    /// Bytes wanted; 0 for the whole fragment.
    pub length_bytes: u64,
}

/// Deletes fragment `locator` from device `device`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct FragmentDelete {
    /// The device's index on the node.
    pub device: u16,
    /// The chunk locator.
    pub locator: [u8; 32],
}

/// Lists the fragments of device `device` held by the answering core, in locator order.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct FragmentList {
    /// The device's index on the node.
    pub device: u16,
    /// Start after this locator; `None` from the first.
    pub after: Option<[u8; 32]>,
    /// At most this many (capped at [`FRAGMENT_LIST_MAX`]).
    pub limit: u32,
}

/// The answer to every fragment request.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub enum FragmentReply {
    /// The put or delete is durable.
    Done,
    /// The fragment's bytes (or the asked range).
    Data(Vec<u8>),
    /// Locators of a list, in order; fewer than asked means the end.
    Locators(Vec<[u8; 32]>),
    /// No fragment under that locator on that device.
    NotFound,
    /// Another fragment is stored under that locator (fragments are immutable).
    AlreadyExists,
    /// The stored extent failed its checksum; its bytes are not returned.
    Corrupt {
        /// What failed.
        detail: String,
    },
    /// The device's allocation group of this core is full.
    NoSpace {
        /// Bytes free.
        free_bytes: u64,
    },
    /// The fragment belongs to another core of this node.
    WrongCore {
        /// The owning core.
        core: u16,
    },
    /// A bounded queue of the store is full; retry shortly.
    Busy,
    /// The device's store failed or is shutting down; it takes no writes.
    Unavailable {
        /// Why.
        reason: String,
    },
    /// The request cannot be served as it is (no such device, bad range, reserved locator).
    Invalid {
        /// What is wrong.
        reason: String,
    },
}

/// Asks a core for its devices.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct DevicesRequest {}

/// One device as one core sees it (its allocation group).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct DeviceStatus {
    /// Index on the node.
    pub index: u16,
    /// Path the node opened.
    pub path: String,
    /// Data bytes of this core's allocation group.
    pub total_bytes: u64,
    /// Bytes writers may still use.
    pub free_bytes: u64,
    /// Bytes of live fragments.
    pub live_bytes: u64,
    /// Fragments stored (shard log records included).
    pub fragments: u64,
    /// Why the store refuses writes, if it failed.
    pub failure: Option<String>,
}

/// The devices of one core.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct DevicesReply {
    /// Node id.
    pub node: u64,
    /// Core index.
    pub core: u16,
    /// One entry per device, in index order.
    pub devices: Vec<DeviceStatus>,
}
