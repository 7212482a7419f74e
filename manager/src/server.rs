//! The manager's gRPC services on its listen address, all behind mutual TLS. Each handler
//! checks the caller's certificate role, then hands over to the layer that does the work.

use crate::ca::{NodeIdentity, peer_identity};
use crate::consensus::RaftHandle;
use crate::consensus::transport::Transport;
use crate::controlapi::ControlApi;
use crate::dispatcher::Dispatcher;
use ::raft::prelude::Message;
use protobuf::Message as _;
use shoal_api::objects::NodeRole;
use shoal_api::pb::{self, Empty, Frame, RaftBatch};
use shoal_api::wire::{ErrorKind, frame, unframe};
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

/// The caller's certificate identity, or a permission error.
fn caller<T>(req: &Request<T>) -> Result<NodeIdentity, Status> {
    peer_identity(req).ok_or_else(|| {
        ErrorKind::Permission
            .status("a node certificate of this swarm is required; join the swarm first")
    })
}

/// Requires a manager certificate whose node is still a manager in the store.
fn require_manager<T>(raft: &RaftHandle, req: &Request<T>) -> Result<NodeIdentity, Status> {
    let id = caller(req)?;
    let is_manager = raft
        .state()
        .nodes
        .get(&id.node_id)
        .is_some_and(|n| n.spec.role == NodeRole::Manager);
    if id.role != NodeRole::Manager || !is_manager {
        // Logged: a worker certificate asking for cluster state (secrets among it) is either
        // a bug or an attempt worth an operator's attention.
        tracing::warn!(node = %id.node_id, "refused a cluster API call from a worker certificate");
        return Err(ErrorKind::Permission.status(format!(
            "node {} is a worker: only managers may change or read cluster state",
            id.node_id
        )));
    }
    Ok(id)
}

pub struct RaftService {
    pub raft: RaftHandle,
    pub transport: Arc<Transport>,
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn send(&self, req: Request<RaftBatch>) -> Result<Response<Empty>, Status> {
        let id = caller(&req)?;
        if id.role != NodeRole::Manager {
            return Err(ErrorKind::Permission.status("raft traffic needs a manager certificate"));
        }
        // The sender must still be a manager or a voter being removed, and may only speak
        // for its own raft id: a certificate alone is not enough after a demotion.
        let raft_id = {
            let state = self.raft.state();
            match state.nodes.get(&id.node_id) {
                Some(n)
                    if n.spec.role == NodeRole::Manager
                        || self.raft.voters().contains(&n.raft_id) =>
                {
                    n.raft_id
                }
                // Before the store arrives (a manager just joining) nothing can be checked.
                None if state.cluster.is_none() => 0,
                _ => {
                    return Err(ErrorKind::Permission.status(format!(
                        "node {} is not a manager of this swarm",
                        id.node_id
                    )));
                }
            }
        };
        for bytes in &req.get_ref().messages {
            let msg = Message::parse_from_bytes(bytes)
                .map_err(|e| ErrorKind::Invalid.status(format!("malformed raft message: {e}")))?;
            if raft_id != 0 && msg.from != raft_id {
                return Err(ErrorKind::Permission.status(format!(
                    "node {} may only send raft messages as member {raft_id}",
                    id.node_id
                )));
            }
            self.transport.heard_from(msg.from);
            self.raft.step(msg);
        }
        Ok(Response::new(Empty {}))
    }
}

pub struct ControlService {
    pub raft: RaftHandle,
    pub api: ControlApi,
    pub dispatcher: Dispatcher,
}

#[tonic::async_trait]
impl pb::control_server::Control for ControlService {
    async fn call(&self, req: Request<Frame>) -> Result<Response<Frame>, Status> {
        require_manager(&self.raft, &req)?;
        let request = unframe(req.get_ref())?;
        let answer = self.api.handle(request).await?;
        Ok(Response::new(frame(&answer)))
    }

    type LogsStream = FrameStream;

    async fn logs(&self, req: Request<Frame>) -> Result<Response<FrameStream>, Status> {
        require_manager(&self.raft, &req)?;
        let request = unframe(req.get_ref())?;
        let rx = self.dispatcher.subscribe_logs(request)?;
        let stream = ReceiverStream::new(rx).map(|item| item.map(|l| frame(&l)));
        Ok(Response::new(Box::pin(stream)))
    }
}

pub struct DispatcherService {
    pub dispatcher: Dispatcher,
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<Frame, Status>> + Send>>;

#[tonic::async_trait]
impl pb::dispatcher_server::Dispatcher for DispatcherService {
    type SessionStream = FrameStream;

    async fn session(&self, req: Request<Frame>) -> Result<Response<FrameStream>, Status> {
        let id = caller(&req)?;
        let request: shoal_api::dispatch::SessionRequest = unframe(req.get_ref())?;
        if request.node_id != id.node_id {
            return Err(ErrorKind::Permission.status("a node may only open its own session"));
        }
        let rx = self.dispatcher.session(&id.node_id, request).await?;
        let stream = ReceiverStream::new(rx).map(|item| item.map(|m| frame(&m)));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn report(&self, req: Request<Frame>) -> Result<Response<Frame>, Status> {
        let id = caller(&req)?;
        let request: shoal_api::dispatch::ReportRequest = unframe(req.get_ref())?;
        if request.node_id != id.node_id {
            return Err(ErrorKind::Permission.status("a node may only report for itself"));
        }
        let answer = self.dispatcher.report(&id.node_id, request).await?;
        Ok(Response::new(frame(&answer)))
    }

    async fn publish_logs(
        &self,
        req: Request<tonic::Streaming<Frame>>,
    ) -> Result<Response<Empty>, Status> {
        let id = caller(&req)?;
        let items = req
            .into_inner()
            .map(|f| f.and_then(|f| unframe::<shoal_api::logs::PublishItem>(&f)));
        self.dispatcher
            .publish_logs(&id.node_id, Box::pin(items))
            .await?;
        Ok(Response::new(Empty {}))
    }
}

pub struct CaService {
    pub raft: RaftHandle,
    /// Handed to managers that join or are promoted.
    pub data_key: Option<crate::ca::DataKey>,
}

#[tonic::async_trait]
impl pb::ca_server::Ca for CaService {
    async fn join(&self, req: Request<Frame>) -> Result<Response<Frame>, Status> {
        let request = unframe(req.get_ref())?;
        let answer = crate::join::join(&self.raft, self.data_key.as_ref(), request).await?;
        Ok(Response::new(frame(&answer)))
    }

    async fn renew(&self, req: Request<Frame>) -> Result<Response<Frame>, Status> {
        let id = caller(&req)?;
        let request = unframe(req.get_ref())?;
        let answer = crate::join::renew(&self.raft, self.data_key.as_ref(), &id, request)?;
        Ok(Response::new(frame(&answer)))
    }
}
