//! VXLAN overlays on a node: per network a bridge and a vxlan device (no learning; the
//! vxlan answers ARP from its static neighbour table), a veth into each local task, and a
//! static FDB and neighbour entry for every remote task. `desired` is pure; `apply` makes
//! the kernel match it.

pub mod apply;

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
    wanted
        .into_iter()
        .map(|(network_id, vni)| {
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
            remotes.sort_by_key(|r| r.ip);
            remotes.dedup();
            NetworkPlan {
                network_id,
                vni,
                remotes,
            }
        })
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
