//! A running manager: raft, its gRPC services and the leader loops, started together and
//! stopped together.

use crate::ca::tls::{client_tls, server_tls};
use crate::consensus::transport::Transport;
use crate::consensus::{RaftConfig, RaftHandle};
use crate::controlapi::ControlApi;
use crate::dispatcher::Dispatcher;
use crate::server::*;
use shoal_api::dispatch::ManagerPeer;
use shoal_api::pb;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;

/// Streams one connection may hold open: a node needs a session, reports, log streams and
/// raft traffic, far fewer than this.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// A join or a renewal: a token, a CSR and the node's description.
const CA_MESSAGE_MAX: usize = 1 << 20;

pub struct ManagerConfig {
    pub raft_dir: PathBuf,
    pub raft: RaftConfig,
    pub listen_addr: SocketAddr,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    /// Start a new single-manager cluster (swarm init).
    pub bootstrap: bool,
    /// Managers known from the join answer, before the store arrives.
    pub peers: Vec<ManagerPeer>,
    /// The cluster data key from the state dir (`None`: a cluster made before data keys,
    /// whose services then carry no registry credentials).
    pub data_key: Option<crate::ca::DataKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(transparent)]
    Raft(#[from] crate::consensus::node::StartError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(#[from] tonic::transport::Error),
    #[error("this manager's own certificate: {0}")]
    OwnCertificate(#[from] crate::ca::CaError),
}

pub struct ManagerRuntime {
    pub raft: RaftHandle,
    pub control: ControlApi,
    pub dispatcher: Dispatcher,
    tasks: Vec<JoinHandle<()>>,
}

impl ManagerRuntime {
    pub async fn start(cfg: ManagerConfig) -> Result<ManagerRuntime, ManagerError> {
        let own_cluster = crate::ca::parse_node_cert_pem(&cfg.cert_pem)?.cluster_id;
        let transport = Transport::new(
            cfg.raft.id,
            client_tls(&cfg.ca_pem, &cfg.cert_pem, &cfg.key_pem),
            tokio::runtime::Handle::current(),
        );
        for p in &cfg.peers {
            transport.add_bootstrap_peer(p.raft_id, p.addr.clone());
        }
        let raft = RaftHandle::start(cfg.raft, &cfg.raft_dir, cfg.bootstrap, transport.clone())?;
        let control = ControlApi::new(raft.clone(), cfg.data_key.clone());
        let (dispatcher, dispatcher_loops) = Dispatcher::start(raft.clone(), cfg.data_key.clone());
        let listener = tokio::net::TcpListener::bind(cfg.listen_addr)
            .await
            .map_err(|source| ManagerError::Listen {
                addr: cfg.listen_addr,
                source,
            })?;
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let admitted = || crate::admission::interceptor(raft.clone(), own_cluster.clone());
        let router = tonic::transport::Server::builder()
            .tls_config(server_tls(&cfg.ca_pem, &cfg.cert_pem, &cfg.key_pem))?
            .tcp_nodelay(true)
            // A peer that goes silent (a partition, a crashed host) is noticed in about 30 s
            // rather than after TCP's retransmissions give up, and one connection can't
            // open streams without bound.
            .tcp_keepalive(Some(Duration::from_secs(30)))
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
            .add_service(InterceptedService::new(
                pb::raft_server::RaftServer::new(RaftService {
                    raft: raft.clone(),
                    transport: transport.clone(),
                })
                .max_decoding_message_size(256 << 20),
                admitted(),
            ))
            .add_service(InterceptedService::new(
                pb::control_server::ControlServer::new(ControlService {
                    raft: raft.clone(),
                    api: control.clone(),
                    dispatcher: dispatcher.clone(),
                }),
                admitted(),
            ))
            .add_service(InterceptedService::new(
                pb::dispatcher_server::DispatcherServer::new(DispatcherService {
                    dispatcher: dispatcher.clone(),
                }),
                admitted(),
            ))
            // Joiners are anonymous; a join or renewal is a token, a CSR and a description.
            .add_service(
                pb::ca_server::CaServer::new(CaService {
                    raft: raft.clone(),
                    data_key: cfg.data_key.clone(),
                })
                .max_decoding_message_size(CA_MESSAGE_MAX),
            );
        let addr = cfg.listen_addr;
        let mut tasks = vec![
            tokio::spawn(async move {
                if let Err(e) = router.serve_with_incoming(incoming).await {
                    tracing::error!(%addr, error = %e, "manager gRPC server stopped");
                }
            }),
            tokio::spawn(crate::leader::reconcile_loop(raft.clone())),
            tokio::spawn(crate::leader::membership_loop(raft.clone())),
            tokio::spawn(transport.clone().probe_loop()),
        ];
        tasks.extend(dispatcher_loops);
        tracing::info!(%addr, raft_id = raft.id, "manager started");
        Ok(ManagerRuntime {
            raft,
            control,
            dispatcher,
            tasks,
        })
    }

    /// Stops the services and loops, then the raft thread; returns once the raft log is
    /// closed, so the state dir may be reopened or removed.
    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        let raft = self.raft.clone();
        let _ = tokio::task::spawn_blocking(move || raft.stop()).await;
    }
}
