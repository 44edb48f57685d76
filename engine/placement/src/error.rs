//! The placement crate's error type.

use crate::pool::DeviceId;

/// Errors of placement and repair planning. All of them describe bad input; none is a
/// transient condition worth retrying with the same arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// The pool has fewer eligible devices than the chunk has fragments.
    #[error("not enough eligible devices: {needed} fragments, {available} devices")]
    NotEnoughDevices {
        /// Fragments to place.
        needed: usize,
        /// Devices that are in the pool (up or down, not out) with a non-zero weight.
        available: usize,
    },
    /// A device id appears twice in a pool map or a placement (I-D4 for caller input).
    #[error("device {0} appears twice")]
    DuplicateDevice(DeviceId),
    /// A device id is not part of the pool map.
    #[error("device {0} is not in the pool")]
    UnknownDevice(DeviceId),
    /// A parameter is out of range (fragment count, needed fragments, ...).
    #[error("invalid placement parameters: {reason}")]
    InvalidParams {
        /// What is wrong.
        reason: String,
    },
}
