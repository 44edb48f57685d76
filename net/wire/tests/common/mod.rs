//! What the integration tests share: a small executor configuration, a representative
//! message type and a test service.
#![allow(dead_code)]

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use kiseki_net::{decode_body, encode_body, ErrorCode, RemoteError, Request, Service};
use kiseki_runtime::local::Notify;
use kiseki_runtime::ExecutorConfig;
// Derived through the re-export, as API crates can do without depending on rkyv.
use kiseki_net::rkyv::{Archive, Deserialize, Serialize};

pub const ECHO: u16 = 1;
pub const PUT: u16 = 2;
pub const SLOW: u16 = 3;
pub const FAIL: u16 = 4;
pub const GATE: u16 = 5;
pub const COUNT: u16 = 6;
pub const PEER: u16 = 7;

/// A representative request: fixed arrays, integers, strings, vectors, an option and an enum.
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
#[rkyv(crate = kiseki_net::rkyv)]
pub struct FragmentPut {
    pub locator: [u8; 32],
    pub epoch: u32,
    pub offset: u64,
    pub data: Vec<u8>,
    pub tags: Vec<String>,
    pub expected_generation: Option<u64>,
    pub durability: Durability,
}

/// A representative enum with data.
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
#[rkyv(crate = kiseki_net::rkyv)]
pub enum Durability {
    Replicas(u8),
    ErasureCoded { data: u8, parity: u8 },
}

pub fn sample_put(seed: u64) -> FragmentPut {
    FragmentPut {
        locator: [seed as u8; 32],
        epoch: seed as u32,
        offset: seed.wrapping_mul(4096),
        data: (0..(seed % 300)).map(|byte| byte as u8).collect(),
        tags: vec![format!("tag-{seed}")],
        expected_generation: seed.is_multiple_of(2).then_some(seed),
        durability: if seed.is_multiple_of(3) {
            Durability::Replicas(3)
        } else {
            Durability::ErasureCoded { data: 4, parity: 2 }
        },
    }
}

/// A small executor: tests start many.
pub fn executor_config() -> ExecutorConfig {
    ExecutorConfig {
        ring_entries: 64,
        dma_arena_bytes: 1 << 20,
        ..ExecutorConfig::default()
    }
}

/// Runs `future` on a fresh executor of this thread.
pub fn run<F>(future: F) -> F::Output
where
    F: Future + 'static,
    F::Output: 'static,
{
    kiseki_runtime::block_on(executor_config(), 0, future).expect("executor")
}

/// The test service.
#[derive(Default)]
pub struct TestService {
    /// Requests waiting in GATE.
    pub gated: Cell<usize>,
    /// Releases every GATE request.
    pub gate: Notify,
    pub gate_open: Cell<bool>,
    /// One-way COUNT messages seen.
    pub counted: Cell<u64>,
    pub counted_notify: Notify,
}

impl TestService {
    pub fn open_gate(&self) {
        self.gate_open.set(true);
        self.gate.notify();
    }
}

impl Service for TestService {
    async fn handle(&self, request: Request) -> Result<Vec<u8>, RemoteError> {
        match request.message_type {
            ECHO => Ok(request.body),
            PUT => {
                let put: FragmentPut = decode_body(&request.body)?;
                Ok(encode_body(&put.offset)?)
            }
            SLOW => {
                let milliseconds = request.body.first().copied().unwrap_or(10);
                kiseki_runtime::sleep(Duration::from_millis(milliseconds as u64)).await;
                Ok(request.body)
            }
            FAIL => Err(RemoteError::new(ErrorCode::NotFound, "no such fragment")),
            GATE => {
                self.gated.set(self.gated.get() + 1);
                while !self.gate_open.get() {
                    self.gate.notified().await;
                }
                self.gated.set(self.gated.get() - 1);
                Ok(request.body)
            }
            COUNT => {
                self.counted.set(self.counted.get() + 1);
                self.counted_notify.notify();
                Ok(Vec::new())
            }
            PEER => Ok(request.peer.certificate_der.clone().unwrap_or_default()),
            other => Err(RemoteError::new(ErrorCode::UnknownMethod, format!("no method {other}"))),
        }
    }
}

/// Waits until `condition` holds, polling every millisecond, for at most `limit`.
pub async fn wait_until(limit: Duration, condition: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while !condition() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        kiseki_runtime::sleep(Duration::from_millis(1)).await;
    }
    true
}
