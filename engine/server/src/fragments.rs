//! The fragment RPCs of one core, and the service a core serves: these plus the shard
//! host's metadata RPCs.

use std::ops::Range;

use kiseki_api::fragment::{
    DeviceStatus, DevicesReply, FragmentDelete, FragmentGet, FragmentList, FragmentPut, FragmentReply,
    FRAGMENT_LIST_MAX, MSG_DEVICES, MSG_FRAGMENT_DELETE, MSG_FRAGMENT_GET, MSG_FRAGMENT_LIST, MSG_FRAGMENT_PUT,
};
use kiseki_api::ClusterMap;
use kiseki_net::{decode_body, encode_answer, ErrorCode, RemoteError, Request, Service};
use kiseki_shard_host::{is_log_locator, CoreService};
use kiseki_store::{FragmentStore, Locator, StoreError};

/// Serves the fragments this core owns on every device of the node.
pub struct FragmentService {
    node: u64,
    core: usize,
    map: ClusterMap,
    /// One store per device, in device order: this core's allocation group of each.
    stores: Vec<FragmentStore>,
}

/// Whether `message_type` is one of the fragment service's.
pub fn is_fragment_message(message_type: u16) -> bool {
    message_type >> 8 == 0x02
}

impl FragmentService {
    /// The service of `core` on `node`, over the core's stores in device order.
    pub fn new(node: u64, core: usize, map: ClusterMap, stores: Vec<FragmentStore>) -> FragmentService {
        FragmentService {
            node,
            core,
            map,
            stores,
        }
    }

    /// The store of `device` for a fragment of `locator`, or the reply that refuses it.
    fn store_for(&self, device: u16, locator: &[u8; 32]) -> Result<(&FragmentStore, Locator), FragmentReply> {
        let locator = Locator(*locator);
        if is_log_locator(&locator) {
            return Err(FragmentReply::Invalid {
                reason: "the locator is reserved for the node's shard log".into(),
            });
        }
        match self.map.fragment_core(&locator.0, self.node) {
            Some(owner) if owner == self.core => {}
            Some(owner) => return Err(FragmentReply::WrongCore { core: owner as u16 }),
            None => {
                return Err(FragmentReply::Invalid {
                    reason: format!("node {} is not in the cluster map", self.node),
                })
            }
        }
        let store = self.device(device)?;
        Ok((store, locator))
    }

    fn device(&self, device: u16) -> Result<&FragmentStore, FragmentReply> {
        self.stores
            .get(usize::from(device))
            .ok_or_else(|| FragmentReply::Invalid {
                reason: format!(
                    "node {} has {} device(s); there is no device {device}",
                    self.node,
                    self.stores.len()
                ),
            })
    }

    async fn put(&self, request: FragmentPut) -> FragmentReply {
        let (store, locator) = match self.store_for(request.device, &request.locator) {
            Ok(found) => found,
            Err(reply) => return reply,
        };
        if request.bytes.is_empty() {
            return FragmentReply::Invalid {
                reason: "a fragment cannot be empty".into(),
            };
        }
        match store.put(locator, &request.bytes).await {
            Ok(()) => FragmentReply::Done,
            Err(error) => store_error_reply(error),
        }
    }

    async fn get(&self, request: FragmentGet) -> FragmentReply {
        let (store, locator) = match self.store_for(request.device, &request.locator) {
            Ok(found) => found,
            Err(reply) => return reply,
        };
        let range = match byte_range(request.offset_bytes, request.length_bytes) {
            Ok(range) => range,
            Err(reply) => return reply,
        };
        match store.get(&locator, range).await {
            Ok(fragment) => FragmentReply::Data(fragment.as_slice().to_vec()),
            Err(error) => store_error_reply(error),
        }
    }

    async fn delete(&self, request: FragmentDelete) -> FragmentReply {
        let (store, locator) = match self.store_for(request.device, &request.locator) {
            Ok(found) => found,
            Err(reply) => return reply,
        };
        match store.delete(&locator).await {
            Ok(()) => FragmentReply::Done,
            Err(error) => store_error_reply(error),
        }
    }

    fn list(&self, request: FragmentList) -> FragmentReply {
        let store = match self.device(request.device) {
            Ok(store) => store,
            Err(reply) => return reply,
        };
        let limit = request.limit.clamp(1, FRAGMENT_LIST_MAX) as usize;
        let mut after = request.after.map(Locator);
        let mut locators = Vec::with_capacity(limit);
        // Shard-log records are skipped; they sit in one contiguous range of the index.
        while locators.len() < limit {
            let page = store.list(after.as_ref(), limit - locators.len());
            let Some(last) = page.last().copied() else { break };
            locators.extend(
                page.iter()
                    .filter(|locator| !is_log_locator(locator))
                    .map(|locator| locator.0),
            );
            after = Some(last);
        }
        FragmentReply::Locators(locators)
    }

    fn devices(&self) -> DevicesReply {
        DevicesReply {
            node: self.node,
            core: self.core as u16,
            devices: self
                .stores
                .iter()
                .enumerate()
                .map(|(index, store)| {
                    let space = store.space();
                    DeviceStatus {
                        index: index as u16,
                        path: store.device().display().to_string(),
                        total_bytes: space.total_bytes,
                        free_bytes: space.free_bytes,
                        live_bytes: space.live_bytes,
                        fragments: space.fragments,
                        failure: store.failure(),
                    }
                })
                .collect(),
        }
    }

    /// Handles one fragment request (`is_fragment_message`).
    pub async fn handle(&self, request: &Request) -> Result<Vec<u8>, RemoteError> {
        let reply = match request.message_type {
            MSG_FRAGMENT_PUT => self.put(decode_body(&request.body)?).await,
            MSG_FRAGMENT_GET => self.get(decode_body(&request.body)?).await,
            MSG_FRAGMENT_DELETE => self.delete(decode_body(&request.body)?).await,
            MSG_FRAGMENT_LIST => self.list(decode_body(&request.body)?),
            MSG_DEVICES => return encode_answer(&self.devices()),
            other => {
                return Err(RemoteError::new(
                    ErrorCode::UnknownMethod,
                    format!("message type {other:#06x}"),
                ))
            }
        };
        encode_answer(&reply)
    }
}

/// The store's range of a request: whole fragment for length 0.
fn byte_range(offset_bytes: u64, length_bytes: u64) -> Result<Option<Range<usize>>, FragmentReply> {
    if length_bytes == 0 {
        return Ok(None);
    }
    let start = usize::try_from(offset_bytes).ok();
    let end = offset_bytes
        .checked_add(length_bytes)
        .and_then(|end| usize::try_from(end).ok());
    match (start, end) {
        (Some(start), Some(end)) => Ok(Some(start..end)),
        _ => Err(FragmentReply::Invalid {
            reason: format!("range {offset_bytes}+{length_bytes} is out of bounds"),
        }),
    }
}

/// The one place store errors become fragment replies.
fn store_error_reply(error: StoreError) -> FragmentReply {
    match error {
        StoreError::NotFound { .. } => FragmentReply::NotFound,
        StoreError::AlreadyExists { .. } => FragmentReply::AlreadyExists,
        StoreError::NoSpace { free_bytes, .. } => FragmentReply::NoSpace { free_bytes },
        StoreError::Corrupt { detail, .. } => FragmentReply::Corrupt { detail },
        StoreError::Invalid(reason) => FragmentReply::Invalid { reason },
        StoreError::Busy(_) => FragmentReply::Busy,
        other => FragmentReply::Unavailable {
            reason: other.to_string(),
        },
    }
}

/// What a core serves: fragment RPCs here, everything else to the shard host.
pub struct NodeService {
    shards: CoreService,
    fragments: FragmentService,
}

impl NodeService {
    /// The service of one core.
    pub fn new(shards: CoreService, fragments: FragmentService) -> NodeService {
        NodeService { shards, fragments }
    }
}

impl Service for NodeService {
    async fn handle(&self, request: Request) -> Result<Vec<u8>, RemoteError> {
        if is_fragment_message(request.message_type) {
            self.fragments.handle(&request).await
        } else {
            self.shards.handle(request).await
        }
    }
}
