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
use shoal_api::wire::ErrorKind;
use tonic::{Request, Status};

/// What an admitted caller proved, for the checks that follow.
pub fn admit(raft: &RaftHandle, req: &Request<()>) -> Result<NodeIdentity, Status> {
    let id = peer_identity(req).ok_or_else(|| {
        ErrorKind::Permission
            .status("a node certificate of this swarm is required; join the swarm first")
    })?;
    let state = raft.state();
    // A manager that is joining has no store yet: it can only take the CA's word.
    let Some(cluster) = state.cluster.as_ref() else {
        return Ok(id);
    };
    if id.cluster_id != cluster.cluster.id {
        tracing::warn!(node = %id.node_id, cluster = %id.cluster_id, "refused a certificate of another cluster");
        return Err(ErrorKind::Permission.status(format!(
            "the certificate of node {} is for cluster {}, not this one ({})",
            id.node_id, id.cluster_id, cluster.cluster.id
        )));
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

/// The interceptor the Raft, Control and Dispatcher services are wrapped in.
pub fn interceptor(
    raft: RaftHandle,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |req| admit(&raft, &req).map(|_| req)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::RootCa;
    use crate::ca::tls::{client_tls, install_crypto_provider, join_client_tls, server_tls};
    use crate::ca::{DEFAULT_NODE_VALIDITY, new_key_and_csr};
    use shoal_api::objects::NodeRole;
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

    #[tokio::test]
    async fn only_certificates_of_this_clusters_members_get_their_request_read() {
        install_crypto_provider();
        let ca = RootCa::generate().unwrap();
        let cert = |id: &str, cluster: &str, role| {
            let (key, csr) = new_key_and_csr().unwrap();
            let cert = ca
                .issue(&csr, id, cluster, role, DEFAULT_NODE_VALIDITY)
                .unwrap();
            client_tls(ca.cert_pem(), &cert, &key)
        };
        // The store knows cluster c1 with nodes n1 (manager) and n2.
        let mut state = crate::store::tests::cluster((30000, 32767));
        let mut n2 = state.nodes["n1"].clone();
        n2.id = "n2".into();
        state.nodes.insert("n2".into(), n2);
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
        // A body limit below what the callers send: a refusal before decoding says
        // PermissionDenied, one after says the message is too large.
        let svc = InterceptedService::new(
            CaServer::new(Echo).max_decoding_message_size(1024),
            interceptor(raft),
        );
        let server = Server::builder()
            .tls_config(server_tls(ca.cert_pem(), &mgr_cert, &mgr_key))
            .unwrap()
            .add_service(svc);
        tokio::spawn(
            server.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let call = |tls: ClientTlsConfig, len: usize| async move {
            CaClient::new(channel(addr, tls).await)
                .join(Frame {
                    json: vec![b' '; len],
                })
                .await
        };
        let big = 1 << 20;
        for (who, tls, says) in [
            (
                "anonymous",
                join_client_tls(ca.cert_pem()),
                "join the swarm first",
            ),
            (
                "another cluster",
                cert("n2", "c9", NodeRole::Worker),
                "is for cluster c9",
            ),
            (
                "a removed node",
                cert("n7", "c1", NodeRole::Manager),
                "n7 is not a member",
            ),
        ] {
            let e = call(tls, big).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::PermissionDenied, "{who}: {e:?}");
            assert!(e.message().contains(says), "{who}: {}", e.message());
        }
        // A member gets through, to the body limit and its handler.
        let member = cert("n2", "c1", NodeRole::Worker);
        let e = call(member.clone(), big).await.unwrap_err();
        assert_ne!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        assert_eq!(call(member, 10).await.unwrap().into_inner().json.len(), 10);
    }
}
