//! The cluster's certificate authority: the root CA, node certificates and join tokens.
//!
//! As in Swarm (`ca/certificates.go`), every node holds a certificate signed by one root CA.
//! The certificate carries the node's identity: CN = node id, OU = role
//! (`swarm-manager`/`swarm-worker`), O = cluster id. Managers also hold the root key and sign
//! certificate requests; workers hold only the root certificate, enough to verify peers.

pub mod datakey;
pub mod tls;
mod token;
pub mod unlock;

pub use datakey::{DataKey, DataKeyError, KeyFile};
pub use tls::peer_identity;
pub use token::{JoinToken, TokenError};
pub use unlock::{UnlockError, UnlockKey};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use sha2::{Digest, Sha256};
use shoal_api::objects::NodeRole;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use x509_parser::error::X509Error;

/// Common name of the root certificate, as in Swarm.
pub const ROOT_CN: &str = "swarm-ca";
/// OU and DNS name of manager certificates; also the TLS server name clients ask for.
pub const MANAGER_OU: &str = "swarm-manager";
/// OU and DNS name of worker certificates.
pub const WORKER_OU: &str = "swarm-worker";
/// Root CA lifetime: 20 years, Swarm's `630720000s`.
pub const ROOT_VALIDITY: Duration = Duration::from_secs(630_720_000);
/// Node certificate lifetime by default: 90 days, Swarm's `2160h`.
pub const DEFAULT_NODE_VALIDITY: Duration = Duration::from_secs(2160 * 3600);
/// Shortest node certificate lifetime Swarm accepts in a cluster spec.
pub const MIN_NODE_VALIDITY: Duration = Duration::from_secs(3600);
/// Certificates start an hour in the past so that peers with slow clocks accept them.
const BACKDATE: time::Duration = time::Duration::hours(1);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot generate a key or certificate")]
    Generate {
        #[source]
        source: rcgen::Error,
    },
    #[error("the {what} is not valid PEM")]
    Pem {
        what: &'static str,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("the {what} is not a valid X.509 certificate")]
    Certificate {
        what: &'static str,
        #[source]
        source: X509Error,
    },
    #[error("the root CA certificate is not a CA certificate (basic constraints CA:TRUE missing)")]
    NotACa,
    #[error("the root CA key is not a valid private key")]
    Key {
        #[source]
        source: rcgen::Error,
    },
    #[error("the root CA key does not belong to the root CA certificate")]
    KeyMismatch,
    #[error(
        "this node holds the root CA certificate but not its key: only managers can sign node certificates"
    )]
    NoSigningKey,
    #[error("the certificate signing request is not valid")]
    Csr {
        #[source]
        source: rcgen::Error,
    },
    #[error("{what} {value:?} cannot go in a certificate: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("certificate validity {validity:?} is out of range")]
    Validity { validity: Duration },
    #[error("cannot sign the certificate of node {node_id}")]
    Sign {
        node_id: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("the node certificate has no {field}")]
    MissingField { field: &'static str },
    #[error("the node certificate has role OU {ou:?}; expected swarm-manager or swarm-worker")]
    UnknownRole { ou: String },
    #[error("the certificate is not signed by this cluster's root CA, or is not valid now")]
    Untrusted {
        #[source]
        source: rustls::Error,
    },
    #[error("cannot build a TLS configuration")]
    TlsConfig {
        #[source]
        source: rustls::Error,
    },
    #[error("cannot build a certificate verifier for the root CA")]
    Verifier {
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    #[error("cannot connect to the manager at {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake with the manager at {addr} failed")]
    Handshake {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the manager at {addr} did not complete a TLS handshake within {after:?}")]
    Timeout { addr: SocketAddr, after: Duration },
    #[error(
        "the manager at {addr} presented {certs} certificate(s); expected its own followed by the root CA"
    )]
    NoCaInChain { addr: SocketAddr, certs: usize },
    #[error(
        "the manager at {addr} presented a CA whose digest does not match the join token: is the token for this cluster? (token: {expected}, manager's CA: {actual})"
    )]
    DigestMismatch {
        addr: SocketAddr,
        expected: String,
        actual: String,
    },
    #[error("the manager at {addr} presented a certificate its own root CA did not sign")]
    UntrustedManager {
        addr: SocketAddr,
        #[source]
        source: rustls::Error,
    },
}

/// The cluster's root CA. Managers hold its key and can sign; workers can only verify.
#[derive(Clone)]
pub struct RootCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    digest: String,
    not_after: OffsetDateTime,
    signer: Option<Arc<Signer>>,
}

struct Signer {
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for RootCa {
    // Never print the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootCa")
            .field("digest", &self.digest)
            .field("can_sign", &self.signer.is_some())
            .finish()
    }
}

impl RootCa {
    /// New self-signed root: ECDSA P-256, CN "swarm-ca", valid 20 years, backdated 1 h.
    pub fn generate() -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|source| CaError::Generate { source })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, ROOT_CN);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + time::Duration::seconds(ROOT_VALIDITY.as_secs() as i64);
        params.serial_number = Some(random_serial());
        let cert = params
            .self_signed(&key)
            .map_err(|source| CaError::Generate { source })?;
        // Going through from_pem keeps one path for fresh and stored roots.
        Self::from_pem(&cert.pem(), Some(&key.serialize_pem()))
    }

    /// From stored PEMs; `key_pem` is None on workers (can verify, cannot sign).
    pub fn from_pem(cert_pem: &str, key_pem: Option<&str>) -> Result<Self, CaError> {
        let cert_der =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|source| CaError::Pem {
                what: "root CA certificate",
                source,
            })?;
        let (_, x509) =
            x509_parser::parse_x509_certificate(&cert_der).map_err(|e| CaError::Certificate {
                what: "root CA certificate",
                source: x509_error(e),
            })?;
        if !x509.is_ca() {
            return Err(CaError::NotACa);
        }
        let not_after = x509.validity().not_after.to_datetime();
        let signer = match key_pem {
            None => None,
            Some(key_pem) => {
                let key = KeyPair::from_pem(key_pem).map_err(|source| CaError::Key { source })?;
                if key.public_key_raw() != &*x509.public_key().subject_public_key.data {
                    return Err(CaError::KeyMismatch);
                }
                let issuer = Issuer::from_ca_cert_der(&cert_der, key)
                    .map_err(|source| CaError::Key { source })?;
                Some(Arc::new(Signer {
                    key_pem: key_pem.to_string(),
                    issuer,
                }))
            }
        };
        Ok(Self {
            // Canonical PEM of the one certificate we use, whatever surrounded it.
            cert_pem: der_to_pem("CERTIFICATE", &cert_der),
            digest: digest_der(&cert_der),
            cert_der,
            not_after,
            signer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub fn key_pem(&self) -> Option<String> {
        self.signer.as_ref().map(|s| s.key_pem.clone())
    }

    /// True on managers, which hold the root key.
    pub fn can_sign(&self) -> bool {
        self.signer.is_some()
    }

    /// SHA-256 of the certificate DER, base36 lowercase, zero-padded to 50 chars (Swarm's token digest).
    pub fn digest(&self) -> String {
        self.digest.clone()
    }

    /// Signs a node's CSR. Only the CSR's public key is used: the CA sets the subject, names,
    /// usages and validity itself, so a node cannot ask for another identity or role.
    pub fn issue(
        &self,
        csr_pem: &str,
        node_id: &str,
        cluster_id: &str,
        role: NodeRole,
        validity: Duration,
    ) -> Result<String, CaError> {
        let signer = self.signer.as_ref().ok_or(CaError::NoSigningKey)?;
        check_dns_label("node id", node_id)?;
        if cluster_id.is_empty() || !cluster_id.chars().all(|c| c.is_ascii_graphic()) {
            return Err(CaError::InvalidName {
                what: "cluster id",
                value: cluster_id.to_string(),
                reason: "it must be non-empty printable ASCII",
            });
        }
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|source| CaError::Csr { source })?;

        let ou = role_ou(role);
        let sign_err = |source| CaError::Sign {
            node_id: node_id.to_string(),
            source,
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, node_id);
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, ou);
        params
            .distinguished_name
            .push(DnType::OrganizationName, cluster_id);
        params.subject_alt_names = vec![
            SanType::DnsName(node_id.try_into().map_err(sign_err)?),
            SanType::DnsName(ou.try_into().map_err(sign_err)?),
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        let not_after = time::Duration::try_from(validity)
            .ok()
            .and_then(|v| now.checked_add(v))
            .ok_or(CaError::Validity { validity })?;
        params.not_before = now - BACKDATE;
        // A certificate cannot outlive the CA that vouches for it.
        params.not_after = not_after.min(self.not_after);
        // Random serials: rcgen's default hashes the public key, which repeats on renewal.
        params.serial_number = Some(random_serial());
        let cert = params
            .signed_by(&csr.public_key, &signer.issuer)
            .map_err(sign_err)?;
        Ok(cert.pem())
    }

    /// Verifies that a node certificate chains to this root and is valid now, and returns the
    /// identity it carries.
    pub fn verify_node_cert_der(&self, der: &[u8]) -> Result<NodeIdentity, CaError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots
            .add(self.cert_der.clone())
            .map_err(|source| CaError::TlsConfig { source })?;
        // The client verifier checks the chain, validity and the clientAuth usage, which
        // every node certificate has; it needs no server name.
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|source| CaError::Verifier { source })?;
        verifier
            .verify_client_cert(&CertificateDer::from(der), &[], UnixTime::now())
            .map_err(|source| CaError::Untrusted { source })?;
        parse_node_cert_der(der)
    }

    pub fn verify_node_cert_pem(&self, pem: &str) -> Result<NodeIdentity, CaError> {
        let der = node_cert_der(pem)?;
        self.verify_node_cert_der(&der)
    }
}

/// A fresh P-256 key and a CSR for it (subject is ignored by the CA, which sets its own).
/// Returns (key_pem, csr_pem).
pub fn new_key_and_csr() -> Result<(String, String), CaError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|source| CaError::Generate { source })?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "shoal-node");
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|source| CaError::Generate { source })?;
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

/// Reads the identity from a node certificate without verifying it; see
/// [`RootCa::verify_node_cert_pem`] for that.
pub fn parse_node_cert_pem(pem: &str) -> Result<NodeIdentity, CaError> {
    parse_node_cert_der(&node_cert_der(pem)?)
}

pub fn parse_node_cert_der(der: &[u8]) -> Result<NodeIdentity, CaError> {
    let (_, x509) = x509_parser::parse_x509_certificate(der).map_err(|e| CaError::Certificate {
        what: "node certificate",
        source: x509_error(e),
    })?;
    let subject = x509.subject();
    let node_id = first_attr(subject.iter_common_name(), "common name (node id)")?;
    let cluster_id = first_attr(subject.iter_organization(), "organization (cluster id)")?;
    let ou = first_attr(
        subject.iter_organizational_unit(),
        "organizational unit (role)",
    )?;
    let role = match ou.as_str() {
        MANAGER_OU => NodeRole::Manager,
        WORKER_OU => NodeRole::Worker,
        _ => return Err(CaError::UnknownRole { ou }),
    };
    Ok(NodeIdentity {
        node_id,
        cluster_id,
        role,
        not_before_unix: x509.validity().not_before.timestamp(),
        not_after_unix: x509.validity().not_after.timestamp(),
    })
}

/// True when a certificate with this identity should be renewed now: past a point between
/// 50% and 80% of its validity. The point comes from a hash of the node id, so it is stable
/// across calls (no flapping) yet spread across nodes (no renewal storm when a whole cluster
/// got its certificates at once). Validity counts from issuance: the hour of backdating is
/// left out, or a short-lived certificate would be due the moment it is issued.
pub fn needs_renewal(id: &NodeIdentity, now_unix: i64) -> bool {
    let hash = Sha256::digest(id.node_id.as_bytes());
    let h = u64::from_be_bytes(hash[..8].try_into().expect("SHA-256 is 32 bytes"));
    let permille = 500 + (h % 301) as i128; // 500..=800
    let full = (id.not_after_unix as i128 - id.not_before_unix as i128).max(0);
    let backdate = BACKDATE.whole_seconds() as i128;
    let backdate = if full > backdate { backdate } else { 0 };
    let issued = id.not_before_unix as i128 + backdate;
    let validity = id.not_after_unix as i128 - issued;
    let point = issued + validity * permille / 1000;
    now_unix as i128 >= point
}

/// The first value of a subject attribute, if any.
fn first_attr<'a, 'b: 'a>(
    mut it: impl Iterator<Item = &'a x509_parser::x509::AttributeTypeAndValue<'b>>,
    field: &'static str,
) -> Result<String, CaError> {
    it.next()
        .and_then(|a| a.as_str().ok())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or(CaError::MissingField { field })
}

fn role_ou(role: NodeRole) -> &'static str {
    match role {
        NodeRole::Manager => MANAGER_OU,
        NodeRole::Worker => WORKER_OU,
    }
}

/// The node id goes in a DNS SAN, so it must be a DNS label (Swarm ids are base36).
fn check_dns_label(what: &'static str, value: &str) -> Result<(), CaError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(CaError::InvalidName {
            what,
            value: value.to_string(),
            reason: "it must be a DNS label: 1 to 63 letters, digits or inner dashes",
        })
    }
}

fn node_cert_der(pem: &str) -> Result<CertificateDer<'static>, CaError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|source| CaError::Pem {
        what: "node certificate",
        source,
    })
}

fn x509_error(e: x509_parser::nom::Err<X509Error>) -> X509Error {
    match e {
        x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e) => e,
        x509_parser::nom::Err::Incomplete(_) => X509Error::InvalidCertificate,
    }
}

/// Positive 128-bit serial number.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // keep it 16 bytes long and non-zero
    SerialNumber::from_slice(&bytes)
}

pub(crate) fn digest_der(der: &[u8]) -> String {
    token::base36(&Sha256::digest(der), token::DIGEST_LEN)
}

/// PEM-encodes DER.
pub(crate) fn der_to_pem(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> i64 {
        OffsetDateTime::now_utc().unix_timestamp()
    }

    fn issue(ca: &RootCa, node: &str, role: NodeRole) -> (String, String) {
        let (key, csr) = new_key_and_csr().unwrap();
        let cert = ca
            .issue(&csr, node, "cluster1", role, DEFAULT_NODE_VALIDITY)
            .unwrap();
        (cert, key)
    }

    #[test]
    fn root_ca_round_trips_through_pem() {
        let ca = RootCa::generate().unwrap();
        assert!(ca.can_sign());
        let again = RootCa::from_pem(ca.cert_pem(), ca.key_pem().as_deref()).unwrap();
        assert_eq!(again.cert_pem(), ca.cert_pem());
        assert_eq!(again.digest(), ca.digest());
        let worker = RootCa::from_pem(ca.cert_pem(), None).unwrap();
        assert!(!worker.can_sign());
        assert_eq!(worker.key_pem(), None);
        let (_, x509) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
        assert_eq!(
            x509.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            ROOT_CN
        );
        let life = x509.validity().not_after.timestamp() - x509.validity().not_before.timestamp();
        assert_eq!(life, ROOT_VALIDITY.as_secs() as i64 + 3600);
    }

    #[test]
    fn from_pem_rejects_a_foreign_key_and_garbage() {
        let a = RootCa::generate().unwrap();
        let b = RootCa::generate().unwrap();
        let err = RootCa::from_pem(a.cert_pem(), b.key_pem().as_deref()).unwrap_err();
        assert!(matches!(err, CaError::KeyMismatch), "{err:?}");
        let err = RootCa::from_pem("not pem", None).unwrap_err();
        assert!(matches!(err, CaError::Pem { .. }), "{err:?}");
        // A node certificate is not a CA.
        let (cert, _) = issue(&a, "node1", NodeRole::Worker);
        let err = RootCa::from_pem(&cert, None).unwrap_err();
        assert!(matches!(err, CaError::NotACa), "{err:?}");
    }

    #[test]
    fn digest_is_stable_and_distinct() {
        let a = RootCa::generate().unwrap();
        let b = RootCa::generate().unwrap();
        assert_eq!(a.digest(), a.digest());
        assert_eq!(
            a.digest(),
            RootCa::from_pem(a.cert_pem(), None).unwrap().digest()
        );
        assert_ne!(a.digest(), b.digest());
        for d in [a.digest(), b.digest()] {
            assert_eq!(d.len(), 50);
            assert!(
                d.bytes()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
            );
        }
    }

    #[test]
    fn issued_certs_carry_identity_role_and_validity() {
        let ca = RootCa::generate().unwrap();
        for (node, role) in [("mgr1", NodeRole::Manager), ("wkr1", NodeRole::Worker)] {
            let (cert, _) = issue(&ca, node, role);
            let id = parse_node_cert_pem(&cert).unwrap();
            assert_eq!(id.node_id, node);
            assert_eq!(id.cluster_id, "cluster1");
            assert_eq!(id.role, role);
            let t = now();
            assert!((id.not_before_unix - (t - 3600)).abs() < 60);
            let want = t + DEFAULT_NODE_VALIDITY.as_secs() as i64;
            assert!((id.not_after_unix - want).abs() < 60);
            assert_eq!(ca.verify_node_cert_pem(&cert).unwrap(), id);

            let der = node_cert_der(&cert).unwrap();
            let (_, x509) = x509_parser::parse_x509_certificate(&der).unwrap();
            let sans: Vec<String> = x509
                .subject_alternative_name()
                .unwrap()
                .unwrap()
                .value
                .general_names
                .iter()
                .map(|n| n.to_string())
                .collect();
            assert_eq!(
                sans,
                [
                    format!("DNSName({node})"),
                    format!("DNSName({})", role_ou(role))
                ]
            );
            let eku = x509.extended_key_usage().unwrap().unwrap().value;
            assert!(eku.server_auth && eku.client_auth);
            assert!(!x509.is_ca());
        }
    }

    #[test]
    fn a_worker_without_the_key_cannot_issue() {
        let ca = RootCa::generate().unwrap();
        let worker = RootCa::from_pem(ca.cert_pem(), None).unwrap();
        let (_, csr) = new_key_and_csr().unwrap();
        let err = worker
            .issue(&csr, "n1", "c1", NodeRole::Worker, DEFAULT_NODE_VALIDITY)
            .unwrap_err();
        assert!(matches!(err, CaError::NoSigningKey), "{err:?}");
    }

    #[test]
    fn issue_rejects_bad_input() {
        let ca = RootCa::generate().unwrap();
        let (_, csr) = new_key_and_csr().unwrap();
        let err = ca
            .issue(
                "garbage",
                "n1",
                "c1",
                NodeRole::Worker,
                DEFAULT_NODE_VALIDITY,
            )
            .unwrap_err();
        assert!(matches!(err, CaError::Csr { .. }), "{err:?}");
        let err = ca
            .issue(&csr, "a b", "c1", NodeRole::Worker, DEFAULT_NODE_VALIDITY)
            .unwrap_err();
        assert!(matches!(err, CaError::InvalidName { .. }), "{err:?}");
    }

    #[test]
    fn certs_do_not_verify_against_another_ca() {
        let a = RootCa::generate().unwrap();
        let b = RootCa::generate().unwrap();
        let (cert, _) = issue(&a, "n1", NodeRole::Manager);
        assert!(a.verify_node_cert_pem(&cert).is_ok());
        let err = b.verify_node_cert_pem(&cert).unwrap_err();
        assert!(matches!(err, CaError::Untrusted { .. }), "{err:?}");
    }

    #[test]
    fn node_cert_never_outlives_its_ca() {
        let ca = RootCa::generate().unwrap();
        let (_, csr) = new_key_and_csr().unwrap();
        let cert = ca
            .issue(&csr, "n1", "c1", NodeRole::Worker, ROOT_VALIDITY * 2)
            .unwrap();
        let id = parse_node_cert_pem(&cert).unwrap();
        assert_eq!(id.not_after_unix, ca.not_after.unix_timestamp());
    }

    #[test]
    fn renewal_happens_between_half_and_four_fifths_of_the_lifetime() {
        for n in 0..50 {
            let id = NodeIdentity {
                node_id: format!("node{n}"),
                cluster_id: "c".into(),
                role: NodeRole::Worker,
                not_before_unix: 1_000_000,
                not_after_unix: 1_000_000 + 1000 * 3600,
            };
            let at = |pct: i64| 1_000_000 + 1000 * 3600 * pct / 100;
            assert!(!needs_renewal(&id, at(10)));
            assert!(!needs_renewal(&id, at(49)));
            assert!(needs_renewal(&id, at(81)));
            assert!(needs_renewal(&id, at(90)));
            assert!(needs_renewal(&id, at(200)));
            // Stable across calls.
            assert_eq!(needs_renewal(&id, at(65)), needs_renewal(&id, at(65)));
        }
    }

    #[test]
    fn short_lived_certificates_count_from_issuance_not_from_the_backdate() {
        // A 60 s certificate, backdated by an hour as issued.
        let issued = 5_000_000;
        let id = NodeIdentity {
            node_id: "n".into(),
            cluster_id: "c".into(),
            role: NodeRole::Worker,
            not_before_unix: issued - 3600,
            not_after_unix: issued + 60,
        };
        assert!(!needs_renewal(&id, issued));
        assert!(!needs_renewal(&id, issued + 29));
        assert!(needs_renewal(&id, issued + 49));
    }

    #[test]
    fn pem_encoder_matches_the_parser() {
        for len in 1..70 {
            let der: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(37)).collect();
            let pem = der_to_pem("CERTIFICATE", &der);
            let back = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
            assert_eq!(back.as_ref(), der.as_slice());
        }
    }
}
