//! The swarm's certificate authority: the root CA (ECDSA P-256, as Swarm's), node
//! certificates whose OU carries the role (`swarm-manager`/`swarm-worker`), and what a
//! presented certificate says about its holder.

pub mod tls;
mod token;

pub use tls::peer_identity;
pub use token::{JoinToken, TokenError};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};
use sha2::{Digest, Sha256};
use shoal_api::objects::NodeRole;
use std::time::Duration;
use time::OffsetDateTime;

/// Swarm's names for the CA and the roles.
pub const ROOT_CN: &str = "swarm-ca";
pub const MANAGER_OU: &str = "swarm-manager";
pub const WORKER_OU: &str = "swarm-worker";
const ROOT_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// Certificates start an hour in the past, so clock skew between nodes does not reject them.
const BACKDATE: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("certificate generation: {0}")]
    Generate(#[source] rcgen::Error),
    #[error("the root CA certificate or key does not parse: {0}")]
    BadRoot(#[source] rcgen::Error),
    #[error("this node holds no CA key, so it cannot sign certificates")]
    NoKey,
    #[error("certificate signing request: {0}")]
    BadCsr(#[source] rcgen::Error),
    #[error("not a PEM certificate")]
    BadPem,
    #[error("certificate does not parse: {0}")]
    BadCert(String),
    #[error("certificate is not a swarm node certificate: {0}")]
    NotNodeCert(&'static str),
    #[error(
        "the manager at {addr} presented a CA with digest {actual}, but the join token expects {expected}: is the token for this cluster?"
    )]
    DigestMismatch {
        addr: String,
        expected: String,
        actual: String,
    },
    #[error("cannot reach {addr} to fetch the root CA: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the manager at {addr} presented no usable certificate chain: {reason}")]
    BadChain { addr: String, reason: String },
}

pub struct RootCa {
    cert_pem: String,
    der: Vec<u8>,
    key: Option<KeyPair>,
}

fn pem_to_der(pem_str: &str) -> Result<Vec<u8>, CaError> {
    let mut reader = pem_str.as_bytes();
    rustls_pemfile::certs(&mut reader)
        .next()
        .and_then(|r| r.ok())
        .map(|c| c.to_vec())
        .ok_or(CaError::BadPem)
}

impl RootCa {
    pub fn generate() -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::Generate)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, ROOT_CN);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + ROOT_VALIDITY;
        let cert = params.self_signed(&key).map_err(CaError::Generate)?;
        Ok(RootCa {
            cert_pem: cert.pem(),
            der: cert.der().to_vec(),
            key: Some(key),
        })
    }

    /// From stored PEMs; workers have no key: they can verify, not sign.
    pub fn from_pem(cert_pem: &str, key_pem: Option<&str>) -> Result<Self, CaError> {
        let der = pem_to_der(cert_pem)?;
        let key = key_pem
            .map(KeyPair::from_pem)
            .transpose()
            .map_err(CaError::BadRoot)?;
        Ok(RootCa {
            cert_pem: cert_pem.to_string(),
            der,
            key,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> Option<String> {
        self.key.as_ref().map(|k| k.serialize_pem())
    }

    /// SHA-256 of the certificate, base36, zero-padded to 50 characters: the digest in a
    /// join token.
    pub fn digest(&self) -> String {
        token::base36(&Sha256::digest(&self.der), 50)
    }

    /// Signs a node's CSR. The CA sets every field itself; only the public key comes from
    /// the request, so a node can't ask for a role or a name.
    pub fn issue(
        &self,
        csr_pem: &str,
        node_id: &str,
        cluster_id: &str,
        role: NodeRole,
        validity: Duration,
    ) -> Result<String, CaError> {
        let key = self.key.as_ref().ok_or(CaError::NoKey)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, key).map_err(CaError::BadRoot)?;
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(CaError::BadCsr)?;
        let ou = match role {
            NodeRole::Manager => MANAGER_OU,
            NodeRole::Worker => WORKER_OU,
        };
        let mut params = CertificateParams::new(vec![node_id.to_string(), ou.to_string()])
            .map_err(CaError::Generate)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node_id);
        dn.push(DnType::OrganizationalUnitName, ou);
        dn.push(DnType::OrganizationName, cluster_id);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + validity;
        let cert = params
            .signed_by(&csr.public_key, &issuer)
            .map_err(CaError::Generate)?;
        Ok(cert.pem())
    }
}

/// A fresh P-256 key and a CSR for it, as PEM: (key, csr).
pub fn new_key_and_csr() -> Result<(String, String), CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::Generate)?;
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .map_err(CaError::Generate)?
        .pem()
        .map_err(CaError::Generate)?;
    Ok((key.serialize_pem(), csr))
}

/// What a node certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub node_id: String,
    pub cluster_id: String,
    pub role: NodeRole,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
}

pub fn parse_node_cert_pem(pem: &str) -> Result<NodeIdentity, CaError> {
    parse_node_cert_der(&pem_to_der(pem)?)
}

pub fn parse_node_cert_der(der: &[u8]) -> Result<NodeIdentity, CaError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| CaError::BadCert(e.to_string()))?;
    let subject = cert.subject();
    let first = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue>| {
        it.next().and_then(|a| a.as_str().ok()).map(str::to_string)
    };
    let node_id =
        first(&mut subject.iter_common_name()).ok_or(CaError::NotNodeCert("no common name"))?;
    let ou = first(&mut subject.iter_organizational_unit()).ok_or(CaError::NotNodeCert("no OU"))?;
    let cluster_id = first(&mut subject.iter_organization()).unwrap_or_default();
    let role = match ou.as_str() {
        MANAGER_OU => NodeRole::Manager,
        WORKER_OU => NodeRole::Worker,
        _ => return Err(CaError::NotNodeCert("OU is not a swarm role")),
    };
    Ok(NodeIdentity {
        node_id,
        cluster_id,
        role,
        not_before_unix: cert.validity().not_before.timestamp(),
        not_after_unix: cert.validity().not_after.timestamp(),
    })
}

/// Whether to renew now: past a point between 50% and 80% of the lifetime (Swarm's range),
/// chosen from the node id so nodes spread out but each node's answer is stable.
pub fn needs_renewal(id: &NodeIdentity, now_unix: i64) -> bool {
    let life = (id.not_after_unix - id.not_before_unix).max(1);
    let h = Sha256::digest(id.node_id.as_bytes());
    let spread = i64::from(h[0]) * 30 / 255; // 0..=30 percent
    let point = id.not_before_unix + life * (50 + spread) / 100;
    now_unix >= point
}

#[cfg(test)]
mod tests;
