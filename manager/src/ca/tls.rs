//! TLS for node-to-node gRPC: configs for tonic, the caller's identity from its client
//! certificate, and fetching the root CA when joining (checked against the token's digest).

use super::{CaError, NodeIdentity, RootCa, parse_node_cert_der};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::net::SocketAddr;
use std::sync::Arc;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Server name every manager certificate carries.
pub const MANAGER_NAME: &str = "swarm-manager";

/// Installs ring as rustls's process-wide provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Our node certificate followed by the root CA, so a joiner can read the CA from the
/// handshake; client certificates are verified but optional (joiners have none yet).
pub fn server_tls(ca_pem: &str, cert_pem: &str, key_pem: &str) -> ServerTlsConfig {
    install_crypto_provider();
    let chain = format!("{}\n{}", cert_pem.trim_end(), ca_pem);
    ServerTlsConfig::new()
        .identity(Identity::from_pem(chain, key_pem))
        .client_ca_root(Certificate::from_pem(ca_pem))
        .client_auth_optional(true)
}

pub fn client_tls(ca_pem: &str, cert_pem: &str, key_pem: &str) -> ClientTlsConfig {
    install_crypto_provider();
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(Identity::from_pem(cert_pem, key_pem))
        .domain_name(MANAGER_NAME)
}

/// For joining: trusts the (already digest-checked) root CA, presents no certificate.
pub fn join_client_tls(ca_pem: &str) -> ClientTlsConfig {
    install_crypto_provider();
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(MANAGER_NAME)
}

/// The verified identity behind a request's client certificate.
pub fn peer_identity<T>(req: &tonic::Request<T>) -> Option<NodeIdentity> {
    let certs = req.peer_certs()?;
    parse_node_cert_der(certs.first()?.as_ref()).ok()
}

/// Accepts any server certificate but still checks handshake signatures: used only to read
/// the chain, which is then checked against the token's digest before anything is trusted.
#[derive(Debug)]
struct CaptureChain(Arc<CryptoProvider>);

impl ServerCertVerifier for CaptureChain {
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
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Reads the root CA a manager presents and returns it only if its digest matches the
/// token's and it signed the manager's certificate.
pub async fn fetch_root_ca(addr: SocketAddr, expected_digest: &str) -> Result<String, CaError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| CaError::BadChain {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CaptureChain(provider.clone())))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = ServerName::try_from(MANAGER_NAME).expect("static name");
        connector.connect(name, tcp).await
    };
    let stream = tokio::time::timeout(std::time::Duration::from_secs(5), connect)
        .await
        .map_err(|_| CaError::Connect {
            addr: addr.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"),
        })?
        .map_err(|source| CaError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    let chain: Vec<CertificateDer<'static>> = stream
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    let bad = |reason: &str| CaError::BadChain {
        addr: addr.to_string(),
        reason: reason.to_string(),
    };
    let (leaf, root) = match chain.as_slice() {
        [leaf, .., root] => (leaf.clone(), root.clone()),
        _ => return Err(bad("expected the node certificate followed by the root CA")),
    };
    let root_pem = pem::encode(&pem::Pem::new("CERTIFICATE", root.as_ref().to_vec()));
    let ca = RootCa::from_pem(&root_pem, None)?;
    let actual = ca.digest();
    if actual != expected_digest {
        return Err(CaError::DigestMismatch {
            addr: addr.to_string(),
            expected: expected_digest.to_string(),
            actual,
        });
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).map_err(|e| bad(&e.to_string()))?;
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| bad(&e.to_string()))?;
    verifier
        .verify_server_cert(
            &leaf,
            &[],
            &ServerName::try_from(MANAGER_NAME).expect("static name"),
            &[],
            UnixTime::now(),
        )
        .map_err(|e| {
            bad(&format!(
                "its certificate is not signed by the presented CA: {e}"
            ))
        })?;
    Ok(root_pem)
}
