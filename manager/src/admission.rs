//! Who may call the manager's services at all, decided from the TLS handshake before a
//! request body is read or decoded: a certificate of this cluster, of a node the store still
//! has. The services then check roles and ownership (server.rs). Only `Ca.Join` takes
//! anonymous callers, so the CA service has no admission of its own, and a small body limit.
//!
//! Checking here and not in the handlers matters for size: tonic decodes the whole message
//! before a handler runs, so without this an anonymous caller could make the manager take
//! in 256 MiB `Raft.Send` bodies just to be refused.

use crate::ca::{NodeIdentity, peer_identity};
use crate::consensus::RaftHandle;
use shoal_api::objects::NodeRole;
use shoal_api::wire::ErrorKind;
use tonic::{Request, Status};

/// What an admitted caller proved, for the checks that follow. `own_cluster` is the cluster
/// id of this manager's own certificate.
pub fn admit(
    raft: &RaftHandle,
    own_cluster: &str,
    req: &Request<()>,
) -> Result<NodeIdentity, Status> {
    let id = peer_identity(req).ok_or_else(|| {
        ErrorKind::Permission
            .status("a node certificate of this swarm is required; join the swarm first")
    })?;
    let state = raft.state();
    let Some(cluster) = state.cluster.as_ref() else {
        // A manager that is joining has no store yet, so no member list to check against:
        // it takes only other managers of its own cluster, whose raft messages bring the
        // store. Workers are sent to a manager that can serve them.
        if id.cluster_id != own_cluster {
            tracing::warn!(node = %id.node_id, cluster = %id.cluster_id, "refused a certificate of another cluster");
            return Err(another_cluster(&id, own_cluster));
        }
        if id.role != NodeRole::Manager {
            return Err(ErrorKind::Unavailable.status(format!(
                "this manager is still joining the swarm and serves only its managers; \
                 node {} should use another manager",
                id.node_id
            )));
        }
        return Ok(id);
    };
    if id.cluster_id != cluster.cluster.id {
        tracing::warn!(node = %id.node_id, cluster = %id.cluster_id, "refused a certificate of another cluster");
        return Err(another_cluster(&id, &cluster.cluster.id));
    }
    if !state.nodes.contains_key(&id.node_id) {
        // A removed node keeps a valid certificate until it expires; the store is the
        // revocation list (as swarmkit's removed-nodes check).
        tracing::warn!(node = %id.node_id, "refused the certificate of a node no longer in the swarm");
        return Err(ErrorKind::Permission.status(format!(
            "node {} is not a member of this swarm (removed?); leave and join again",
            id.node_id
        )));
    }
    Ok(id)
}

fn another_cluster(id: &NodeIdentity, ours: &str) -> Status {
    ErrorKind::Permission.status(format!(
        "the certificate of node {} is for cluster {}, not this one ({ours})",
        id.node_id, id.cluster_id
    ))
}

/// The interceptor the Raft, Control and Dispatcher services are wrapped in.
pub fn interceptor(
    raft: RaftHandle,
    own_cluster: String,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req| admit(&raft, &own_cluster, &req).map(|_| req)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::RootCa;
    use crate::ca::tls::{client_tls, install_crypto_provider, join_client_tls, server_tls};
    use crate::ca::{DEFAULT_NODE_VALIDITY, new_key_and_csr};
    use shoal_api::pb::Frame;
    use shoal_api::pb::ca_client::CaClient;
    use shoal_api::pb::ca_server::{Ca, CaServer};
    use tonic::Response;
    use tonic::service::interceptor::InterceptedService;
    use tonic::transport::{Channel, ClientTlsConfig, Endpoint, Server};

    struct Echo;

    #[tonic::async_trait]
    impl Ca for Echo {
        async fn join(&self, req: Request<Frame>) -> Result<Response<Frame>, Status> {
            Ok(Response::new(req.into_inner()))
        }
        async fn renew(&self, req: Request<Frame>) -> Result<Response<Frame>, Status> {
            self.join(req).await
        }
    }

    async fn channel(addr: std::net::SocketAddr, tls: ClientTlsConfig) -> Channel {
        Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// A TLS server as the manager `n1` of cluster c1 with `state` as its store, whose one
    /// service echoes what it reads, behind the admission interceptor and a 1 KiB body limit:
    /// a refusal before decoding says PermissionDenied (or Unavailable), one after says the
    /// message is too large.
    async fn serve(ca: &RootCa, state: crate::store::ClusterState) -> std::net::SocketAddr {
        let (raft, _fake) = RaftHandle::in_memory(state);
        let (mgr_key, mgr_csr) = new_key_and_csr().unwrap();
        let mgr_cert = ca
            .issue(
                &mgr_csr,
                "n1",
                "c1",
                NodeRole::Manager,
                DEFAULT_NODE_VALIDITY,
            )
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = InterceptedService::new(
            CaServer::new(Echo).max_decoding_message_size(1024),
            interceptor(raft, "c1".into()),
        );
        let server = Server::builder()
            .tls_config(server_tls(ca.cert_pem(), &mgr_cert, &mgr_key))
            .unwrap()
            .add_service(svc);
        tokio::spawn(
            server.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }

    fn cert(ca: &RootCa, id: &str, cluster: &str, role: NodeRole) -> ClientTlsConfig {
        let (key, csr) = new_key_and_csr().unwrap();
        let cert = ca
            .issue(&csr, id, cluster, role, DEFAULT_NODE_VALIDITY)
            .unwrap();
        client_tls(ca.cert_pem(), &cert, &key)
    }

    async fn call(
        addr: std::net::SocketAddr,
        tls: ClientTlsConfig,
        len: usize,
    ) -> Result<Response<Frame>, Status> {
        CaClient::new(channel(addr, tls).await)
            .join(Frame {
                json: vec![b' '; len],
            })
            .await
    }

    const BIG: usize = 1 << 20;

    #[tokio::test]
    async fn only_certificates_of_this_clusters_members_get_their_request_read() {
        install_crypto_provider();
        let ca = RootCa::generate().unwrap();
        // The store knows cluster c1 with nodes n1 (manager) and n2.
        let mut state = crate::store::tests::cluster((30000, 32767));
        let mut n2 = state.nodes["n1"].clone();
        n2.id = "n2".into();
        state.nodes.insert("n2".into(), n2);
        let addr = serve(&ca, state).await;
        for (who, tls, says) in [
            (
                "anonymous",
                join_client_tls(ca.cert_pem()),
                "join the swarm first",
            ),
            (
                "another cluster",
                cert(&ca, "n2", "c9", NodeRole::Worker),
                "is for cluster c9",
            ),
            (
                "a removed node",
                cert(&ca, "n7", "c1", NodeRole::Manager),
                "n7 is not a member",
            ),
        ] {
            let e = call(addr, tls, BIG).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::PermissionDenied, "{who}: {e:?}");
            assert!(e.message().contains(says), "{who}: {}", e.message());
        }
        // A member gets through, to the body limit and its handler.
        let member = cert(&ca, "n2", "c1", NodeRole::Worker);
        let e = call(addr, member.clone(), BIG).await.unwrap_err();
        assert_ne!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        assert_eq!(
            call(addr, member, 10)
                .await
                .unwrap()
                .into_inner()
                .json
                .len(),
            10
        );
    }

    #[tokio::test]
    async fn a_joining_manager_reads_only_its_own_clusters_managers() {
        install_crypto_provider();
        let ca = RootCa::generate().unwrap();
        // No store yet: the manager is joining and waits for the leader's raft messages.
        let addr = serve(&ca, crate::store::ClusterState::default()).await;
        for (who, tls, code, says) in [
            (
                "anonymous",
                join_client_tls(ca.cert_pem()),
                tonic::Code::PermissionDenied,
                "join the swarm first",
            ),
            (
                "a manager of another cluster",
                cert(&ca, "m9", "c9", NodeRole::Manager),
                tonic::Code::PermissionDenied,
                "is for cluster c9",
            ),
            (
                "a worker of this cluster",
                cert(&ca, "w1", "c1", NodeRole::Worker),
                tonic::Code::Unavailable,
                "w1 should use another manager",
            ),
        ] {
            let e = call(addr, tls, BIG).await.unwrap_err();
            assert_eq!(e.code(), code, "{who}: {e:?}");
            assert!(e.message().contains(says), "{who}: {}", e.message());
        }
        let leader = cert(&ca, "m2", "c1", NodeRole::Manager);
        assert_eq!(
            call(addr, leader, 10)
                .await
                .unwrap()
                .into_inner()
                .json
                .len(),
            10
        );
    }
}
