//! Which backends each connected node has programmed into its load balancer and DNS, as
//! told by its acknowledgements, so that a stopping task receives SIGTERM only once no
//! node sends it new connections: the leader waits for the nodes, not for a fixed sleep.

use shoal_api::dispatch::NodeView;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

/// First view version of a session: the session number in the high half. Session numbers
/// start at a random point on every leader, so an acknowledgement meant for another leader's
/// session is not taken for one of this leader's.
pub fn first_version(session: u64) -> u64 {
    ((session & 0xffff_ffff) << 32) | 1
}

/// Where a leader starts numbering sessions.
pub fn first_session() -> u64 {
    u64::from(rand::random::<u32>())
}

fn session_of(version: u64) -> u64 {
    version >> 32
}

fn same_session(a: u64, b: u64) -> bool {
    (a & 0xffff_ffff) == (b & 0xffff_ffff)
}

/// Task ids a view makes a node balance to or resolve.
fn backends(view: &NodeView) -> HashSet<String> {
    view.endpoints
        .iter()
        .flat_map(|e| e.backends.iter().map(|b| b.task_id.clone()))
        .collect()
}

#[derive(Default)]
struct NodeState {
    session: u64,
    /// Backends of the newest view the node acknowledged.
    acked: HashSet<String>,
    /// Views sent and not acknowledged yet, oldest first.
    pending: VecDeque<(u64, HashSet<String>)>,
}

#[derive(Clone, Default)]
pub struct Programmed(Arc<Mutex<HashMap<String, NodeState>>>);

impl Programmed {
    /// A session starts with its snapshot: nothing is known to be programmed until the
    /// node acknowledges it, so whatever it had before counts as still there.
    pub fn open(&self, node: &str, session: u64, version: u64, view: &NodeView) {
        let mut all = self.0.lock().expect("lock");
        let previous = all.remove(node).map(|s| {
            let mut have = s.acked;
            for (_, p) in s.pending {
                have.extend(p);
            }
            have
        });
        let mut pending = VecDeque::new();
        if let Some(have) = previous {
            // Until the snapshot is applied the node may still route to its old backends.
            pending.push_back((0, have));
        }
        pending.push_back((version, backends(view)));
        all.insert(
            node.to_string(),
            NodeState {
                session,
                acked: HashSet::new(),
                pending,
            },
        );
    }

    pub fn sent(&self, node: &str, version: u64, view: &NodeView) {
        if let Some(s) = self.0.lock().expect("lock").get_mut(node)
            && same_session(s.session, session_of(version))
        {
            s.pending.push_back((version, backends(view)));
        }
    }

    /// The node applied every view up to `version` of its current session.
    pub fn acked(&self, node: &str, version: u64) {
        let mut all = self.0.lock().expect("lock");
        let Some(s) = all.get_mut(node) else { return };
        if version == 0 || s.session == u64::MAX || !same_session(session_of(version), s.session) {
            return;
        }
        while let Some((v, _)) = s.pending.front() {
            if *v > version {
                break;
            }
            let (_, set) = s.pending.pop_front().expect("front exists");
            s.acked = set;
        }
    }

    /// Whether none of `live` (the nodes that are up) has, or may still get, `task` as a
    /// backend. A live node this leader has no record of (it has not connected since this
    /// manager took over) might still route to the task, so it keeps the task undrained.
    pub fn drained<'a>(&self, task: &str, live: impl IntoIterator<Item = &'a str>) -> bool {
        let all = self.0.lock().expect("lock");
        live.into_iter().all(|node| {
            all.get(node).is_some_and(|s| {
                !s.acked.contains(task) && s.pending.iter().all(|(_, p)| !p.contains(task))
            })
        })
    }

    /// A session ended: what the node had programmed stays counted (its tables still hold
    /// it) until it acknowledges the snapshot of its next session, or is no longer live.
    fn close(&self, node: &str, session: u64) {
        let mut all = self.0.lock().expect("lock");
        if let Some(s) = all.get_mut(node)
            && s.session == session
        {
            // No acknowledgement of this session can come any more.
            s.session = u64::MAX;
        }
    }
}

/// Forgets a node's programming when its session stream ends.
pub struct Forget {
    pub programmed: Programmed,
    pub node_id: String,
    pub session: u64,
}

impl Drop for Forget {
    fn drop(&mut self) {
        self.programmed.close(&self.node_id, self.session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::dispatch::{Backend, ServiceEndpoint};
    use shoal_api::objects::{EndpointMode, TaskState};

    fn view(tasks: &[&str]) -> NodeView {
        NodeView {
            endpoints: vec![ServiceEndpoint {
                service_id: "s".into(),
                service_name: "web".into(),
                mode: EndpointMode::Vip,
                ports: vec![],
                virtual_ips: vec![],
                backends: tasks
                    .iter()
                    .map(|t| Backend {
                        task_id: t.to_string(),
                        task_name: format!("web.{t}"),
                        node_id: "n".into(),
                        network_id: "net".into(),
                        addr: "198.19.0.2/24".into(),
                        state: TaskState::Running,
                    })
                    .collect(),
                aliases: vec![],
                session_affinity: Default::default(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn drained_only_after_every_node_acknowledges_a_view_without_the_task() {
        let p = Programmed::default();
        let (a, b) = (first_version(1), first_version(2));
        p.open("a", 1, a, &view(&["t1", "t2"]));
        p.open("b", 2, b, &view(&["t1", "t2"]));
        let live = ["a", "b"];
        p.acked("a", a);
        p.acked("b", b);
        assert!(!p.drained("t1", live));
        p.sent("a", a + 1, &view(&["t2"]));
        p.sent("b", b + 1, &view(&["t2"]));
        assert!(!p.drained("t1", live), "sent is not applied");
        p.acked("a", a + 1);
        assert!(!p.drained("t1", live), "node b has not applied it yet");
        p.acked("b", b + 1);
        assert!(p.drained("t1", live));
        assert!(!p.drained("t2", live));
        assert!(
            !p.drained("t1", ["a", "b", "c"]),
            "a live node never heard from"
        );
    }

    #[test]
    fn late_acknowledgements_of_an_old_session_are_ignored() {
        let p = Programmed::default();
        let v1 = first_version(1);
        p.open("a", 1, v1, &view(&["t1"]));
        p.acked("a", v1);
        // The node's stream ends, then it reconnects: its old programming still counts until
        // the new snapshot is acknowledged, and an acknowledgement from session 1 does not
        // count for it.
        p.close("a", 1);
        assert!(!p.drained("t1", ["a"]), "closed, its tables still hold t1");
        p.acked("a", v1 + 1);
        let v2 = first_version(2);
        p.open("a", 2, v2, &view(&[]));
        p.acked("a", v1 + 5);
        assert!(!p.drained("t1", ["a"]));
        p.acked("a", v2);
        assert!(p.drained("t1", ["a"]));
    }

    #[test]
    fn a_closed_session_holds_tasks_while_its_node_is_live() {
        let p = Programmed::default();
        let v = first_version(3);
        p.open("a", 3, v, &view(&["t1"]));
        assert!(!p.drained("t1", ["a"]));
        p.close("a", 3);
        assert!(
            !p.drained("t1", ["a"]),
            "closed but live: its tables may hold t1"
        );
        assert!(p.drained("t1", []), "a node that is down no longer counts");
    }
}
