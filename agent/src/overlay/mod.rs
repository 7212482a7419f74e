//! VXLAN overlays on a node: per network a bridge and a vxlan device (no learning; the
//! vxlan answers ARP from its static neighbour table), a veth into each local task, and a
//! static FDB and neighbour entry for every remote task. `desired` is pure; `apply` makes
//! the kernel match it.

pub mod apply;
pub mod underlay_filter;

use shoal_api::dispatch::NodeView;
use shoal_api::objects::{Task, TaskState};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// VXLAN adds 50 bytes of headers to every frame it carries.
pub const VXLAN_OVERHEAD: u32 = 50;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub ip: Ipv4Addr,
    pub mac: String,
    /// Underlay address of the node the task runs on.
    pub vtep: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPlan {
    pub network_id: String,
    pub vni: u32,
    pub remotes: Vec<Remote>,
    /// The node's own address on the network, `ip/prefix`, put on the bridge (ingress
    /// only): the routing mesh sends from it, and local tasks route through it.
    pub gateway: Option<String>,
}

impl NetworkPlan {
    pub fn bridge(&self) -> String {
        bridge_name(self.vni)
    }
    pub fn vxlan(&self) -> String {
        vxlan_name(self.vni)
    }
}

pub fn bridge_name(vni: u32) -> String {
    format!("sb{vni}")
}

pub fn vxlan_name(vni: u32) -> String {
    format!("sv{vni}")
}

/// The MAC of a task's interface, derived from its address as Docker does (02:42 + IPv4),
/// so every node computes the same one.
pub fn mac_for(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// `ip/prefix` to the address.
pub fn parse_addr(addr: &str) -> Option<Ipv4Addr> {
    addr.split('/').next()?.parse().ok()
}

fn runs_here(t: &Task) -> bool {
    t.desired_state <= TaskState::Running && !t.status.state.is_terminal()
}

/// Networks this node needs (those its live tasks attach to), each with the remote tasks
/// that run on them.
pub fn desired(view: &NodeView, my_node: &str) -> Vec<NetworkPlan> {
    let peers: BTreeMap<&str, Ipv4Addr> = view
        .networks
        .iter()
        .flat_map(|n| n.peers.iter())
        .filter_map(|p| Some((p.node_id.as_str(), p.addr.parse().ok()?)))
        .collect();
    let mut wanted: BTreeMap<String, u32> = BTreeMap::new();
    // Ingress is on every node, so a published port can answer anywhere (routing mesh).
    for n in view.networks.iter().filter(|n| n.network.spec.ingress) {
        if let Some(vni) = n.network.vni() {
            wanted.insert(n.network.id.clone(), vni);
        }
    }
    for t in view.tasks.iter().filter(|t| runs_here(t)) {
        for a in &t.networks_attachments {
            if let Some(vni) = view
                .networks
                .iter()
                .find(|n| n.network.id == a.network_id)
                .and_then(|n| n.network.vni())
            {
                wanted.insert(a.network_id.clone(), vni);
            }
        }
    }
    let my_ingress = view
        .node
        .as_ref()
        .map(|n| n.ingress_addr.clone())
        .filter(|a| parse_addr(a).is_some());
    wanted
        .into_iter()
        .map(|(network_id, vni)| {
            let net = view.networks.iter().find(|n| n.network.id == network_id);
            let is_ingress = net.is_some_and(|n| n.network.spec.ingress);
            // Other nodes' own ingress addresses: replies to the mesh's SNAT come back
            // to them over the overlay.
            let peer_endpoints: Vec<Remote> = net
                .filter(|_| is_ingress)
                .map(|n| n.peers.as_slice())
                .unwrap_or_default()
                .iter()
                .filter_map(|p| {
                    let ip = parse_addr(&p.endpoint)?;
                    Some(Remote {
                        ip,
                        mac: mac_for(ip),
                        vtep: p.addr.parse().ok()?,
                    })
                })
                .collect();
            let mut remotes: Vec<Remote> = view
                .endpoints
                .iter()
                .flat_map(|e| e.backends.iter())
                .filter(|b| b.network_id == network_id && b.node_id != my_node)
                .filter_map(|b| {
                    let ip = parse_addr(&b.addr)?;
                    Some(Remote {
                        ip,
                        mac: mac_for(ip),
                        vtep: *peers.get(b.node_id.as_str())?,
                    })
                })
                .collect();
            remotes.extend(peer_endpoints);
            remotes.sort_by_key(|r| r.ip);
            remotes.dedup();
            NetworkPlan {
                network_id,
                vni,
                remotes,
                gateway: my_ingress.clone().filter(|_| is_ingress),
            }
        })
        .collect()
}

/// Underlay addresses that may send this node VXLAN: the other nodes on its networks
/// (ingress is on every node, so in practice every node of the cluster).
pub fn vxlan_senders(view: &NodeView, my_node: &str) -> std::collections::BTreeSet<Ipv4Addr> {
    view.networks
        .iter()
        .flat_map(|n| n.peers.iter())
        .filter(|p| p.node_id != my_node)
        .filter_map(|p| p.addr.parse().ok())
        .collect()
}

/// What to add and what to remove to turn `have` into `want`.
pub fn diff<T: Ord + Clone>(
    want: &std::collections::BTreeSet<T>,
    have: &std::collections::BTreeSet<T>,
) -> (Vec<T>, Vec<T>) {
    (
        want.difference(have).cloned().collect(),
        have.difference(want).cloned().collect(),
    )
}

#[cfg(test)]
mod tests;
