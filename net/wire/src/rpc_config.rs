//! The limits and timeouts of one connection, shared by every RPC implementation.

use crate::frame::FRAME_BYTES_MAX_DEFAULT;

/// Limits and timeouts of one connection (client or server side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcConfig {
    /// Largest frame sent or accepted, header included.
    pub frame_bytes_max: usize,
    /// Requests in flight per connection. A client waits for a free slot (or answers
    /// `Busy`, see `wait_for_window`); a server answers requests beyond it with `Busy`.
    pub in_flight_max: usize,
    /// Whether a client call waits for a free slot of a full window (up to its timeout)
    /// instead of failing at once with `NetError::Busy`.
    pub wait_for_window: bool,
    /// Deadline of a client call, from the call to its answer, waiting for a slot included.
    pub call_timeout_ms: u64,
    /// Encoded frames waiting for the socket; producers wait above it. A frame larger
    /// than this still goes out alone.
    pub outbox_bytes_max: usize,
    /// Time one send of queued frames may take; a peer that stops reading for longer is
    /// cut off (its connection fails with `NetError::Timeout`).
    pub send_timeout_ms: u64,
    /// Bytes asked of the socket per receive (more while a large frame is coming in).
    pub recv_bytes: usize,
    /// Time a closing connection gives its last answers (and a GoAway) to go out.
    pub close_timeout_ms: u64,
    /// Time the rest of a frame may take once its first bytes arrived; a peer that
    /// stalls inside a frame longer is cut off (`NetError::Timeout`).
    pub partial_frame_timeout_ms: u64,
    /// Connections an [`RpcServer`] serves at once; more are closed when accepted.
    pub connections_max: usize,
}

impl Default for RpcConfig {
    fn default() -> RpcConfig {
        RpcConfig {
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            in_flight_max: 256,
            wait_for_window: true,
            call_timeout_ms: 30_000,
            outbox_bytes_max: 8 * 1024 * 1024,
            send_timeout_ms: 30_000,
            recv_bytes: 64 * 1024,
            close_timeout_ms: 5_000,
            partial_frame_timeout_ms: 30_000,
            connections_max: 4096,
        }
    }
}

impl RpcConfig {
    /// A tiny configuration whose limits tests actually reach.
    pub fn tiny() -> RpcConfig {
        RpcConfig {
            frame_bytes_max: 64 * 1024,
            in_flight_max: 2,
            wait_for_window: true,
            call_timeout_ms: 5_000,
            outbox_bytes_max: 4 * 1024,
            send_timeout_ms: 1_000,
            recv_bytes: 512,
            close_timeout_ms: 1_000,
            partial_frame_timeout_ms: 1_000,
            connections_max: 4,
        }
    }
}
