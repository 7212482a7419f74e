//! What another dataplane left in a namespace, removed when this node switches dataplanes
//! (`--dataplane` changed between two runs of shoald, as recorded in the state dir). Tasks
//! outlive a restart of shoald, so their namespaces still hold the old dataplane's rules,
//! which would go on balancing beside the new ones (both NAT at the same hook priority: the
//! first to DNAT wins) or, for the mesh guard, drop what the new one forwards.
//!
//! eBPF leaves nothing inside namespaces: `choose` unpins its programs when another
//! dataplane takes over.

use super::Netns;
use std::collections::HashSet;
use std::process::Stdio;
use std::sync::Mutex;

/// Which part of a namespace: a task's VIP table or the node's routing mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    Vips,
    Mesh,
}

/// Removes what dataplane `previous` left of `part` in `ns`. Best effort: a failure is
/// logged, and the namespace is served by the new dataplane anyway.
pub fn remove(previous: &str, ns: &Netns, part: Part) {
    let result = match previous {
        "nftables" => {
            let table = match part {
                Part::Vips => super::nft::VIP_TABLE,
                Part::Mesh => super::nft::MESH_TABLE,
            };
            // No such table (a namespace made after the switch): nothing to remove.
            ns.command("nft")
                .args(["delete", "table", "ip", table])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        "iptables" => match part {
            Part::Vips => super::iptables::remove_vip_chains(ns),
            Part::Mesh => super::iptables::remove_mesh_chains(ns),
        }
        .map_err(|e| e.to_string()),
        _ => Ok(()),
    };
    match result {
        Ok(()) => tracing::debug!(
            ?ns,
            ?part,
            previous,
            "leftovers of the previous dataplane removed"
        ),
        Err(e) => {
            tracing::warn!(?ns, ?part, previous, error = %e, "leftovers of the previous dataplane not removed")
        }
    }
}

/// The dataplane a node switched from, and the namespaces already cleaned of it.
#[derive(Default)]
pub struct Takeover {
    previous: Mutex<Option<String>>,
    done: Mutex<HashSet<(Netns, Part)>>,
}

impl Takeover {
    pub fn set_previous(&self, previous: &str) {
        *self.previous.lock().expect("lock") = Some(previous.to_string());
    }

    /// Before this backend first programs `part` of `ns`: remove the previous dataplane's.
    pub fn before_first(&self, ns: &Netns, part: Part) {
        let Some(previous) = self.previous.lock().expect("lock").clone() else {
            return;
        };
        if self.done.lock().expect("lock").insert((ns.clone(), part)) {
            remove(&previous, ns, part);
        }
    }

    /// A namespace that is gone: if it comes back, it is a new one.
    pub fn forget(&self, ns: &Netns) {
        self.done.lock().expect("lock").retain(|(n, _)| n != ns);
    }
}
