use super::*;

#[test]
fn token_round_trip_and_shape() {
    let ca = RootCa::generate().unwrap();
    let t = JoinToken::generate(&ca);
    let s = t.to_string();
    assert!(s.starts_with("SWMTKN-1-"));
    assert_eq!(t.ca_digest.len(), 50);
    assert_eq!(t.secret.len(), 25);
    assert_eq!(JoinToken::parse(&s).unwrap(), t);
    assert_ne!(JoinToken::generate(&ca).secret, t.secret);
    assert_eq!(JoinToken::parse("hello"), Err(TokenError::NotAToken));
    assert!(matches!(
        JoinToken::parse("SWMTKN-2-a-b"),
        Err(TokenError::Version(_))
    ));
    assert_eq!(
        JoinToken::parse("SWMTKN-1-abc-0123456789012345678901234"),
        Err(TokenError::Digest)
    );
}

#[test]
fn digest_is_stable_per_ca_and_differs_between_cas() {
    let a = RootCa::generate().unwrap();
    let b = RootCa::generate().unwrap();
    let a2 = RootCa::from_pem(a.cert_pem(), None).unwrap();
    assert_eq!(a.digest(), a2.digest());
    assert_ne!(a.digest(), b.digest());
}

#[test]
fn base36_of_known_values() {
    assert_eq!(token::base36(&[0], 3), "000");
    assert_eq!(token::base36(&[35], 1), "z");
    assert_eq!(token::base36(&[1, 0], 0), "74"); // 256 = 7*36 + 4
}

#[test]
fn issued_certificates_carry_id_cluster_and_role() {
    let ca = RootCa::generate().unwrap();
    let (_key, csr) = new_key_and_csr().unwrap();
    let day = Duration::from_secs(86_400);
    let cert = ca
        .issue(&csr, "node1", "cluster1", NodeRole::Manager, day)
        .unwrap();
    let id = parse_node_cert_pem(&cert).unwrap();
    assert_eq!(id.node_id, "node1");
    assert_eq!(id.cluster_id, "cluster1");
    assert_eq!(id.role, NodeRole::Manager);
    assert_eq!(id.not_after_unix - id.not_before_unix, 86_400 + 3600);
    let worker = ca
        .issue(&csr, "node2", "cluster1", NodeRole::Worker, day)
        .unwrap();
    assert_eq!(parse_node_cert_pem(&worker).unwrap().role, NodeRole::Worker);
    let verify_only = RootCa::from_pem(ca.cert_pem(), None).unwrap();
    assert!(matches!(
        verify_only.issue(&csr, "n", "c", NodeRole::Worker, day),
        Err(CaError::NoKey)
    ));
}

#[test]
fn renewal_point_is_between_half_and_four_fifths() {
    let id = NodeIdentity {
        node_id: "n".into(),
        cluster_id: "c".into(),
        role: NodeRole::Worker,
        not_before_unix: 0,
        not_after_unix: 1000,
    };
    assert!(!needs_renewal(&id, 100));
    assert!(!needs_renewal(&id, 499));
    assert!(needs_renewal(&id, 800));
    assert!(needs_renewal(&id, 900));
}
