//! Admission of new nodes (join token in, node certificate out) and certificate renewal.

use crate::ca::{DataKey, JoinToken, NodeIdentity, RootCa};
use crate::consensus::RaftHandle;
use crate::controlapi::propose_status;
use crate::ids::{new_id, new_raft_id};
use crate::store::{Command, GRPC_ADDR_LABEL};
use shoal_api::dispatch::ManagerPeer;
use shoal_api::join::*;
use shoal_api::now_rfc3339;
use shoal_api::objects::*;
use shoal_api::wire::ErrorKind;
use std::collections::BTreeMap;
use std::time::Duration;
use tonic::Status;

/// The CA with its key, as every manager holds it in the replicated state.
fn signing_ca(raft: &RaftHandle) -> Result<(RootCa, String, Duration), Status> {
    let state = raft.state();
    let rec = state
        .cluster
        .as_ref()
        .ok_or_else(|| ErrorKind::Unavailable.status("this manager has no cluster state yet"))?;
    let ca = RootCa::from_pem(&rec.cluster.tls_info, Some(&rec.ca_key_pem))
        .map_err(|e| ErrorKind::Internal.status(format!("root CA: {e}")))?;
    Ok((
        ca,
        rec.cluster.id.clone(),
        Duration::from_nanos(rec.cluster.spec.node_cert_expiry),
    ))
}

fn secrets_equal(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

pub async fn join(
    raft: &RaftHandle,
    data_key: Option<&DataKey>,
    req: JoinRequest,
) -> Result<JoinResponse, Status> {
    let token = JoinToken::parse(&req.token)
        .map_err(|e| ErrorKind::Invalid.status(format!("invalid join token: {e}")))?;
    let (ca, cluster_id, validity) = signing_ca(raft)?;
    if token.ca_digest != ca.digest() {
        return Err(ErrorKind::Permission.status(
            "the join token was issued for another swarm's root CA; get a token from this swarm with 'shoal swarm join-token worker'",
        ));
    }
    let role = {
        let state = raft.state();
        let rec = state
            .record()
            .map_err(|e| ErrorKind::Unavailable.status(e.to_string()))?;
        let secret_of = |t: &str| JoinToken::parse(t).map(|t| t.secret).unwrap_or_default();
        if secrets_equal(&token.secret, &secret_of(&rec.worker_token)) {
            NodeRole::Worker
        } else if secrets_equal(&token.secret, &secret_of(&rec.manager_token)) {
            NodeRole::Manager
        } else {
            return Err(ErrorKind::Permission.status(
                "invalid join token: it was rotated or never valid; get the current one with 'shoal swarm join-token worker' (or manager) on a manager",
            ));
        }
    };
    let node_id = new_id();
    let raft_id = new_raft_id();
    let cert_pem = ca
        .issue(&req.csr_pem, &node_id, &cluster_id, role, validity)
        .map_err(|e| ErrorKind::Invalid.status(format!("certificate request refused: {e}")))?;
    let now = now_rfc3339();
    let mut labels = BTreeMap::new();
    labels.insert(GRPC_ADDR_LABEL.to_string(), req.grpc_addr.clone());
    let node = Node {
        id: node_id.clone(),
        version: Version::default(),
        created_at: now.clone(),
        updated_at: now,
        spec: NodeSpec {
            name: String::new(),
            labels,
            role,
            availability: Availability::Active,
        },
        description: req.description,
        status: NodeStatus {
            state: NodeState::Unknown,
            message: String::new(),
            addr: req.advertise_addr,
        },
        manager_status: (role == NodeRole::Manager).then(|| ManagerStatus {
            addr: req.grpc_addr.clone(),
            ..Default::default()
        }),
        raft_id,
        ingress_addr: String::new(),
    };
    raft.propose(Command::AddNode(Box::new(node)))
        .await
        .map_err(propose_status)?;
    tracing::info!(node = %node_id, %role, "node joined");
    Ok(JoinResponse {
        node_id,
        cluster_id,
        role,
        raft_id,
        cert_pem,
        ca_pem: ca.cert_pem().to_string(),
        managers: managers(raft),
        data_key: key_for(role, data_key),
        unlock_key: unlock_key_for(raft, role, data_key),
    })
}

pub fn managers(raft: &RaftHandle) -> Vec<ManagerPeer> {
    raft.state().manager_peers()
}

/// A new certificate for a member, carrying its current role from the store (so promotion
/// and demotion reach the certificate at the next renewal).
pub fn renew(
    raft: &RaftHandle,
    data_key: Option<&DataKey>,
    caller: &NodeIdentity,
    req: RenewRequest,
) -> Result<RenewResponse, Status> {
    let role = {
        let state = raft.state();
        let node = state.nodes.get(&caller.node_id).ok_or_else(|| {
            ErrorKind::Permission.status(format!(
                "node {} is not a member of this swarm; it can't renew its certificate",
                caller.node_id
            ))
        })?;
        node.spec.role
    };
    let (ca, cluster_id, validity) = signing_ca(raft)?;
    let cert_pem = ca
        .issue(&req.csr_pem, &caller.node_id, &cluster_id, role, validity)
        .map_err(|e| ErrorKind::Invalid.status(format!("certificate request refused: {e}")))?;
    Ok(RenewResponse {
        cert_pem,
        role,
        data_key: key_for(role, data_key),
        unlock_key: unlock_key_for(raft, role, data_key),
    })
}

/// The cluster data key goes to managers only (over the TLS of the join or renewal).
fn key_for(role: NodeRole, data_key: Option<&DataKey>) -> Option<KeyText> {
    (role == NodeRole::Manager)
        .then_some(data_key)
        .flatten()
        .map(|k| KeyText(k.to_base64().to_string()))
}

/// The swarm's unlock key, when it is autolocked, goes to managers with the data key, so
/// they lock their key files from the start.
fn unlock_key_for(
    raft: &RaftHandle,
    role: NodeRole,
    data_key: Option<&DataKey>,
) -> Option<KeyText> {
    let data_key = data_key.filter(|_| role == NodeRole::Manager)?;
    let sealed = raft.state().unlock_key.clone()?;
    match crate::ca::UnlockKey::open_under(data_key, &sealed) {
        Ok(key) => Some(KeyText(key.to_human().to_string())),
        Err(e) => {
            tracing::warn!(error = %e, "the swarm's unlock key does not open here; the new manager gets none");
            None
        }
    }
}
