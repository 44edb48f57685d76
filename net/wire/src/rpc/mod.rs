//! Multiplexed RPC over one byte stream: [`RpcClient`] (calls and one-way messages from
//! many tasks of one core) and [`serve_connection`] / [`RpcServer`] (a per-connection loop
//! handing requests to a [`Service`]).
//!
//! Each connection has a reader task, a writer task and, on the server, one task per
//! request being handled. Everything a connection holds is bounded: requests in flight
//! (`in_flight_max`, on both sides), bytes waiting to be sent (`outbox_bytes_max`), frame
//! size (`frame_bytes_max`).

mod client;
mod connection;
mod server;

pub use client::RpcClient;
pub use server::{serve_connection, PeerInfo, Request, RpcServer, Service};

pub use crate::rpc_config::RpcConfig;
