//! TLS between nodes: tonic configs for mutual TLS, the caller's identity, and the CA probe
//! a joining node runs before it trusts anyone.

use super::{CaError, MANAGER_OU, NodeIdentity, RootCa, digest_der, parse_node_cert_der};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// How long `fetch_root_ca` waits for the connection and the handshake.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Makes ring the process-wide rustls provider; call once at start-up. tonic builds its
/// server configs with the process default. With only rustls's `ring` feature in the build
/// rustls picks ring by itself, but this keeps working if another crate ever enables
/// `aws-lc-rs` too (rustls then refuses to guess and panics). Idempotent.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is all we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// tonic server TLS: our node certificate followed by the root CA (so joiners can read the CA
/// from the handshake); client certificates are verified against the root CA but optional,
/// because joiners have none yet. Handlers check [`peer_identity`].
pub fn server_tls(ca_pem: &str, cert_pem: &str, key_pem: &str) -> ServerTlsConfig {
    let chain = format!("{}\n{}\n", cert_pem.trim_end(), ca_pem.trim_end());
    ServerTlsConfig::new()
        .identity(Identity::from_pem(chain, key_pem))
        .client_ca_root(Certificate::from_pem(ca_pem))
        .client_auth_optional(true)
}

/// tonic client TLS presenting our node certificate and trusting only the root CA. Every
/// manager certificate names `swarm-manager`, so that is the name we check, whatever address
/// we dialled.
pub fn client_tls(ca_pem: &str, cert_pem: &str, key_pem: &str) -> ClientTlsConfig {
    join_client_tls(ca_pem).identity(Identity::from_pem(cert_pem, key_pem))
}

/// Client TLS for joining: trusts the root CA (already checked against the token), no client
/// certificate.
pub fn join_client_tls(ca_pem: &str) -> ClientTlsConfig {
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(MANAGER_OU)
}

/// The verified identity of the caller of a gRPC request, from its client certificate; None
/// if it showed none. The TLS layer has already checked the certificate against the root CA.
pub fn peer_identity<T>(req: &tonic::Request<T>) -> Option<NodeIdentity> {
    let certs = req.peer_certs()?;
    let leaf = certs.first()?;
    match parse_node_cert_der(leaf) {
        Ok(id) => Some(id),
        Err(error) => {
            // Signed by our CA but not shaped like a node certificate: treat as anonymous.
            tracing::warn!(%error, "peer presented a certificate without a node identity");
            None
        }
    }
}

/// Joining: downloads the root CA from the manager at `addr` and checks it against the join
/// token's digest.
///
/// The joiner trusts no CA yet, so the handshake accepts any server certificate (still
/// checking the handshake signature); trust comes from the digest instead. The manager sends
/// its certificate followed by the root CA (see [`server_tls`]); the last one is the root.
/// The leaf must also chain to that root, so a manager cannot show a CA it does not belong to.
pub async fn fetch_root_ca(addr: SocketAddr, expected_digest: &str) -> Result<String, CaError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| CaError::TlsConfig { source })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert {
            provider: provider.clone(),
        }))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));

    let chain = tokio::time::timeout(FETCH_TIMEOUT, async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|source| CaError::Connect { addr, source })?;
        let mut tls = connector
            .connect(manager_name(), tcp)
            .await
            .map_err(|source| CaError::Handshake { addr, source })?;
        let chain: Vec<CertificateDer<'static>> = tls
            .get_ref()
            .1
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default();
        // Best effort: we have what we came for.
        let _ = tls.shutdown().await;
        Ok::<_, CaError>(chain)
    })
    .await
    .map_err(|_| CaError::Timeout {
        addr,
        after: FETCH_TIMEOUT,
    })??;

    let [leaf, intermediates @ .., root] = chain.as_slice() else {
        return Err(CaError::NoCaInChain {
            addr,
            certs: chain.len(),
        });
    };
    let actual = digest_der(root);
    if actual != expected_digest {
        return Err(CaError::DigestMismatch {
            addr,
            expected: expected_digest.to_string(),
            actual,
        });
    }
    let ca = RootCa::from_pem(&super::der_to_pem("CERTIFICATE", root), None)?;

    let mut roots = RootCertStore::empty();
    roots
        .add(root.clone())
        .map_err(|source| CaError::TlsConfig { source })?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|source| CaError::Verifier { source })?;
    verifier
        .verify_server_cert(leaf, intermediates, &manager_name(), &[], UnixTime::now())
        .map_err(|source| CaError::UntrustedManager { addr, source })?;
    Ok(ca.cert_pem().to_string())
}

fn manager_name() -> ServerName<'static> {
    ServerName::try_from(MANAGER_OU).expect("swarm-manager is a valid DNS name")
}

/// Accepts any server certificate, for the one handshake whose point is to read it. The
/// handshake signatures are still checked, so the peer holds the key of what it showed.
#[derive(Debug)]
struct AcceptAnyServerCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{DEFAULT_NODE_VALIDITY, new_key_and_csr};
    use shoal_api::objects::NodeRole;
    use shoal_api::pb::Frame;
    use shoal_api::pb::ca_client::CaClient;
    use shoal_api::pb::ca_server::{Ca, CaServer};
    use shoal_api::wire::{frame, unframe};
    use tonic::transport::{Channel, Endpoint, Server};
    use tonic::{Request, Response, Status};

    /// Answers with who the caller is, as the TLS layer saw it.
    struct WhoAmI;

    #[tonic::async_trait]
    impl Ca for WhoAmI {
        async fn join(&self, req: Request<Frame>) -> Result<Response<Frame>, Status> {
            let who = peer_identity(&req).map(|id| (id.node_id, id.role));
            Ok(Response::new(frame(&who)))
        }
        async fn renew(&self, req: Request<Frame>) -> Result<Response<Frame>, Status> {
            self.join(req).await
        }
    }

    struct Node {
        cert: String,
        key: String,
    }

    fn node(ca: &RootCa, id: &str, role: NodeRole) -> Node {
        let (key, csr) = new_key_and_csr().unwrap();
        let cert = ca
            .issue(&csr, id, "cluster1", role, DEFAULT_NODE_VALIDITY)
            .unwrap();
        Node { cert, key }
    }

    /// Serves `WhoAmI` with `tls` on an ephemeral port until the test's runtime ends.
    async fn serve(tls: ServerTlsConfig) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let server = Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(CaServer::new(WhoAmI));
        tokio::spawn(server.serve_with_incoming(incoming));
        addr
    }

    async fn connect(
        addr: SocketAddr,
        tls: ClientTlsConfig,
    ) -> Result<Channel, tonic::transport::Error> {
        Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
    }

    async fn who(channel: Channel) -> Option<(String, NodeRole)> {
        let reply = CaClient::new(channel)
            .join(Frame { json: vec![] })
            .await
            .unwrap();
        unframe(reply.get_ref()).unwrap()
    }

    #[tokio::test]
    async fn mutual_tls_round_trip_and_ca_probe() {
        install_crypto_provider();
        let ca = RootCa::generate().unwrap();
        let mgr = node(&ca, "mgr1", NodeRole::Manager);
        let wkr = node(&ca, "wkr1", NodeRole::Worker);
        let addr = serve(server_tls(ca.cert_pem(), &mgr.cert, &mgr.key)).await;

        // A node with a certificate is known by it.
        let ch = connect(addr, client_tls(ca.cert_pem(), &wkr.cert, &wkr.key))
            .await
            .unwrap();
        assert_eq!(who(ch).await, Some(("wkr1".to_string(), NodeRole::Worker)));

        // A joiner without one gets through, anonymously.
        let ch = connect(addr, join_client_tls(ca.cert_pem())).await.unwrap();
        assert_eq!(who(ch).await, None);

        // The CA probe reads the root from the handshake and checks its digest.
        let pem = fetch_root_ca(addr, &ca.digest()).await.unwrap();
        assert_eq!(pem, ca.cert_pem());
        let other = RootCa::generate().unwrap();
        let err = fetch_root_ca(addr, &other.digest()).await.unwrap_err();
        match &err {
            CaError::DigestMismatch {
                addr: a,
                expected,
                actual,
            } => {
                assert_eq!(*a, addr);
                assert_eq!(*expected, other.digest());
                assert_eq!(*actual, ca.digest());
            }
            _ => panic!("want DigestMismatch, got {err:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(&addr.to_string()) && msg.contains("is the token for this cluster?"));

        // A client that trusts another CA refuses the server.
        assert!(
            connect(addr, join_client_tls(other.cert_pem()))
                .await
                .is_err()
        );
        let stranger = node(&other, "x1", NodeRole::Worker);
        assert!(
            connect(
                addr,
                client_tls(other.cert_pem(), &stranger.cert, &stranger.key)
            )
            .await
            .is_err()
        );
    }

    #[tokio::test]
    async fn a_client_cert_from_another_ca_is_refused() {
        install_crypto_provider();
        let ca = RootCa::generate().unwrap();
        let other = RootCa::generate().unwrap();
        let mgr = node(&ca, "mgr1", NodeRole::Manager);
        let stranger = node(&other, "x1", NodeRole::Manager);
        let addr = serve(server_tls(ca.cert_pem(), &mgr.cert, &mgr.key)).await;
        // Trusts the right CA but shows a foreign certificate: the server ends the handshake.
        // With TLS 1.3 the client learns it on its first request, not on connect.
        let result = match connect(
            addr,
            client_tls(ca.cert_pem(), &stranger.cert, &stranger.key),
        )
        .await
        {
            Err(_) => true,
            Ok(ch) => CaClient::new(ch)
                .join(Frame { json: vec![] })
                .await
                .is_err(),
        };
        assert!(result, "a foreign client certificate was accepted");
    }

    #[tokio::test]
    async fn probe_refuses_a_leaf_its_ca_did_not_sign() {
        install_crypto_provider();
        let real = RootCa::generate().unwrap();
        let decoy = RootCa::generate().unwrap();
        let mgr = node(&real, "mgr1", NodeRole::Manager);
        // Shows the decoy CA after a leaf the decoy never signed.
        let addr = serve(server_tls(decoy.cert_pem(), &mgr.cert, &mgr.key)).await;
        let err = fetch_root_ca(addr, &decoy.digest()).await.unwrap_err();
        assert!(matches!(err, CaError::UntrustedManager { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn probe_reports_a_closed_port() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = fetch_root_ca(addr, "x").await.unwrap_err();
        assert!(matches!(err, CaError::Connect { .. }), "{err:?}");
    }
}
