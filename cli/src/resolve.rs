//! Turning what the user typed into the ids requests carry: `self` for nodes, network names
//! for service attachments, and where a joining node should dial.

use crate::addr::{SWARM_PORT, is_unspecified, join_host_port, split_host_port};
use crate::daemon::Daemon;
use anyhow::{Result, bail};
use shoal_api::local::NodeInfo;
use shoal_api::objects::Node;
use std::collections::BTreeMap;

/// This node's id, or a clear error when it is in no swarm.
pub async fn self_id(daemon: &mut Daemon) -> Result<String> {
    let info = daemon.info().await?;
    if info.node_id.is_empty() {
        bail!(
            "this node is not part of a swarm (state {:?}); run 'shoal swarm init' or 'shoal swarm join' first",
            info.local_node_state
        );
    }
    Ok(info.node_id)
}

/// Node references with `self` replaced by this node's id.
pub async fn node_refs(daemon: &mut Daemon, nodes: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(nodes.len());
    let mut me = None;
    for node in nodes {
        if node == "self" {
            if me.is_none() {
                me = Some(self_id(daemon).await?);
            }
            out.extend(me.clone());
        } else {
            out.push(node.clone());
        }
    }
    Ok(out)
}

/// Network ids for network names, id prefixes or ids, as the daemon resolves them.
pub async fn network_ids<'a>(
    daemon: &mut Daemon,
    networks: impl IntoIterator<Item = &'a str>,
) -> Result<BTreeMap<String, String>> {
    let mut ids = BTreeMap::new();
    for name in networks {
        if !ids.contains_key(name) {
            let network = daemon.network(name).await?;
            ids.insert(name.to_string(), network.id);
        }
    }
    Ok(ids)
}

/// The `ip:port` a joining node dials to reach this manager, as `swarm join-token` prints it.
///
/// Docker reads the manager's own advertised address; when it is a wildcard (a manager that
/// listens on 0.0.0.0 and advertised nothing better), the node's underlay address stands in.
pub fn join_addr(info: &NodeInfo, node: Option<&Node>) -> Option<String> {
    let manager_addr = node
        .or(info.node.as_ref())
        .and_then(|n| n.manager_status.as_ref())
        .map(|m| m.addr.as_str())
        .filter(|a| !a.is_empty());
    let node_addr = node
        .map(|n| n.status.addr.as_str())
        .filter(|a| !a.is_empty())
        .unwrap_or(info.node_addr.as_str());
    if let Some(addr) = manager_addr {
        let (host, port) = split_host_port(addr);
        let port = port.and_then(|p| p.parse().ok()).unwrap_or(SWARM_PORT);
        if !is_unspecified(host) && !host.is_empty() {
            return Some(join_host_port(host, port));
        }
        if !node_addr.is_empty() {
            return Some(join_host_port(split_host_port(node_addr).0, port));
        }
    }
    if !node_addr.is_empty() {
        let host = split_host_port(node_addr).0;
        let known = info
            .remote_managers
            .iter()
            .find(|m| split_host_port(m).0 == host);
        return Some(match known {
            Some(m) => m.clone(),
            None => join_host_port(host, SWARM_PORT),
        });
    }
    info.remote_managers.first().cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::objects::*;

    fn info(node_addr: &str, remotes: &[&str]) -> NodeInfo {
        NodeInfo {
            local_node_state: "active".into(),
            node_id: "n1".into(),
            cluster_id: "c1".into(),
            control_available: true,
            node_addr: node_addr.into(),
            remote_managers: remotes.iter().map(|s| s.to_string()).collect(),
            node: None,
            held_secrets: vec![],
        }
    }

    fn manager(addr: &str, status_addr: &str) -> Node {
        Node {
            id: "n1".into(),
            version: Version::default(),
            created_at: String::new(),
            updated_at: String::new(),
            spec: NodeSpec {
                name: String::new(),
                labels: Default::default(),
                role: NodeRole::Manager,
                availability: Availability::Active,
            },
            description: NodeDescription::default(),
            status: NodeStatus {
                state: NodeState::Ready,
                message: String::new(),
                addr: status_addr.into(),
            },
            manager_status: Some(ManagerStatus {
                leader: true,
                reachability: "reachable".into(),
                addr: addr.into(),
            }),
            raft_id: 1,
            ingress_addr: String::new(),
        }
    }

    #[test]
    fn prefers_the_managers_advertised_address() {
        let n = manager("198.18.0.1:4000", "198.18.0.1");
        assert_eq!(
            join_addr(&info("198.18.0.9", &[]), Some(&n)).as_deref(),
            Some("198.18.0.1:4000")
        );
    }

    #[test]
    fn replaces_a_wildcard_host_with_the_node_address() {
        let n = manager("0.0.0.0:2377", "198.18.0.2");
        assert_eq!(
            join_addr(&info("", &[]), Some(&n)).as_deref(),
            Some("198.18.0.2:2377")
        );
    }

    #[test]
    fn falls_back_to_remote_managers_and_the_default_port() {
        assert_eq!(
            join_addr(
                &info("198.18.0.3", &["198.18.0.1:2377", "198.18.0.3:5000"]),
                None
            )
            .as_deref(),
            Some("198.18.0.3:5000")
        );
        assert_eq!(
            join_addr(&info("198.18.0.3", &[]), None).as_deref(),
            Some("198.18.0.3:2377")
        );
        assert_eq!(
            join_addr(&info("", &["198.18.0.1:2377"]), None).as_deref(),
            Some("198.18.0.1:2377")
        );
        assert_eq!(join_addr(&info("", &[]), None), None);
    }
}
