//! The RPC face of a core: consensus traffic from peers and requests from clients.

use std::rc::Rc;

use kiseki_consensus::ProposalId;
use kiseki_namespace::Delta;
use kiseki_net::{decode_body, encode_answer, ErrorCode, RemoteError, Request, RpcServer, Service};

use crate::host::CoreHost;
use crate::HostError;
use kiseki_api::meta::{
    ConsensusMessage, DiscoverReply, ProposeRequest, ReadRequest, StatusReply, MSG_CONSENSUS, MSG_DISCOVER,
    MSG_PROPOSE, MSG_READ, MSG_STATUS,
};
use kiseki_api::ReadQuery;

/// Answers the metadata RPCs of one core.
pub struct CoreService {
    host: CoreHost,
}

impl CoreService {
    /// A service for `host`.
    pub fn new(host: CoreHost) -> CoreService {
        CoreService { host }
    }

    async fn propose(&self, body: &[u8]) -> Result<Vec<u8>, RemoteError> {
        let request: ProposeRequest = decode_body(body)?;
        if request.client_id == 0 || request.client_id >> 63 == 1 {
            return Err(RemoteError::new(
                ErrorCode::BadRequest,
                "client ids are nonzero and below 2^63",
            ));
        }
        let delta = Delta::decode(&request.delta)
            .map_err(|error| RemoteError::new(ErrorCode::BadRequest, format!("delta: {error}")))?;
        let proposal_id = ProposalId {
            client_id: request.client_id,
            sequence: request.sequence,
        };
        let reply = self.host.propose(request.shard, proposal_id, delta).await;
        encode_answer(&reply)
    }

    async fn read(&self, body: &[u8]) -> Result<Vec<u8>, RemoteError> {
        let request: ReadRequest = decode_body(body)?;
        let query: ReadQuery = postcard::from_bytes(&request.query)
            .map_err(|error| RemoteError::new(ErrorCode::BadRequest, format!("read query: {error}")))?;
        let reply = self.host.read(request.shard, query).await;
        encode_answer(&reply)
    }
}

impl Service for CoreService {
    async fn handle(&self, request: Request) -> Result<Vec<u8>, RemoteError> {
        match request.message_type {
            MSG_CONSENSUS => {
                let message: ConsensusMessage = decode_body(&request.body)?;
                if let Err(error) = self.host.receive(message.from, &message.bytes) {
                    tracing::debug!(from = message.from, %error, "consensus message refused");
                    return Err(RemoteError::new(ErrorCode::BadRequest, error.to_string()));
                }
                Ok(Vec::new())
            }
            MSG_PROPOSE => self.propose(&request.body).await,
            MSG_READ => self.read(&request.body).await,
            MSG_DISCOVER => encode_answer(&DiscoverReply {
                cluster_json: self.host.map().to_json(),
                leaders: self.host.leaders(),
            }),
            MSG_STATUS => {
                let (node, core) = self.host.identity();
                encode_answer(&StatusReply {
                    node,
                    core: core as u64,
                    replicas: self.host.status(),
                })
            }
            other => Err(RemoteError::new(
                ErrorCode::UnknownMethod,
                format!("message type {other:#06x}"),
            )),
        }
    }
}

/// Serves `service` on the address the cluster map gives `host`'s core until `stop` is
/// notified, then stops the host. The service is a [`CoreService`] for `host`, or a
/// node's service that hands the metadata RPCs to one (the node adds its fragment RPCs).
pub async fn serve_core<S: Service>(
    host: CoreHost,
    service: Rc<S>,
    stop: Rc<kiseki_runtime::local::Notify>,
) -> Result<(), HostError> {
    let (node, core) = host.identity();
    let address = host
        .map()
        .address(node, core)
        .ok_or_else(|| HostError::Invalid(format!("node {node} core {core} is not in the cluster map")))?;
    let listener = host.transport().listen(address)?;
    let server = Rc::new(RpcServer::new(listener, service, crate::peer_rpc_config()));
    let stopper = Rc::clone(&server);
    kiseki_runtime::spawn("core-server-stop", async move {
        stop.notified().await;
        stopper.stop();
    })?;
    tracing::info!(node, core, %address, "core listening");
    server.run().await?;
    host.stop();
    Ok(())
}
