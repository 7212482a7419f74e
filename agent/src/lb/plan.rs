//! What the load balancer must do, computed from the node's view: pure functions, no kernel.
//!
//! East-west, each task namespace balances the VIPs of the networks the task shares with a
//! service (ingress excluded) to that service's running tasks on the same network; the
//! connection is DNATed in the client's own namespace, where both directions pass, so the
//! backend sees the client's address and no SNAT is needed.
//!
//! The routing mesh, in the node's namespace, sends each published port to the service's
//! tasks on ingress: anywhere for ingress mode, only local ones for host mode.

use crate::overlay::parse_addr;
use shoal_api::dispatch::NodeView;
use shoal_api::objects::{EndpointMode, Protocol, PublishMode, Task, TaskState};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};

/// VIPs to balance inside one task's namespace, each with its backends' addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VipTable {
    pub vips: BTreeMap<Ipv4Addr, BTreeSet<Ipv4Addr>>,
    /// VIPs whose service keeps each client on one task, with the timeout in seconds.
    pub affinity: BTreeMap<Ipv4Addr, u32>,
}

/// Published ports of the node, each with the task addresses and target ports behind it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshTable {
    pub ports: BTreeMap<(Protocol, u16), BTreeSet<SocketAddrV4>>,
    /// Backends on this node: reached without SNAT, so they see the client's address.
    pub local: BTreeSet<Ipv4Addr>,
    /// Where remote backends' traffic is sent from (the node's ingress address) and the
    /// device it leaves by (the ingress bridge); without them remote backends are left
    /// out, since their replies could not come back.
    pub snat: Option<(Ipv4Addr, String)>,
    /// Published ports whose service keeps each client address on one task, with the
    /// timeout in seconds.
    pub affinity: BTreeMap<(Protocol, u16), u32>,
}

fn ingress_ids(view: &NodeView) -> BTreeSet<&str> {
    view.networks
        .iter()
        .filter(|n| n.network.spec.ingress)
        .map(|n| n.network.id.as_str())
        .collect()
}

pub fn vip_table(view: &NodeView, task: &Task) -> VipTable {
    let ingress = ingress_ids(view);
    let nets: BTreeSet<&str> = task
        .networks_attachments
        .iter()
        .map(|a| a.network_id.as_str())
        .filter(|n| !ingress.contains(n))
        .collect();
    let mut table = VipTable::default();
    for e in view
        .endpoints
        .iter()
        .filter(|e| e.mode == EndpointMode::Vip)
    {
        for vip in e
            .virtual_ips
            .iter()
            .filter(|v| nets.contains(v.network_id.as_str()))
        {
            let Some(vip_ip) = parse_addr(&vip.addr) else {
                continue;
            };
            let backends = e
                .backends
                .iter()
                .filter(|b| b.network_id == vip.network_id && b.state == TaskState::Running)
                .filter_map(|b| parse_addr(&b.addr))
                .collect();
            table.vips.insert(vip_ip, backends);
            if let Some(t) = e.session_affinity.timeout_s() {
                table.affinity.insert(vip_ip, t);
            }
        }
    }
    table
}

pub fn mesh_table(view: &NodeView, my_node: &str, ingress_bridge: Option<String>) -> MeshTable {
    let ingress = ingress_ids(view);
    let snat = view
        .node
        .as_ref()
        .and_then(|n| parse_addr(&n.ingress_addr))
        .zip(ingress_bridge);
    let mut table = MeshTable::default();
    for e in &view.endpoints {
        let on_ingress: Vec<_> = e
            .backends
            .iter()
            .filter(|b| ingress.contains(b.network_id.as_str()) && b.state == TaskState::Running)
            .filter_map(|b| Some((parse_addr(&b.addr)?, b.node_id == my_node)))
            .collect();
        for p in e.ports.iter().filter(|p| p.published_port != 0) {
            if let Some(t) = e.session_affinity.timeout_s() {
                table.affinity.insert((p.protocol, p.published_port), t);
            }
            let entry = table
                .ports
                .entry((p.protocol, p.published_port))
                .or_default();
            for (ip, local) in &on_ingress {
                let reachable = match p.publish_mode {
                    PublishMode::Host => *local,
                    PublishMode::Ingress => *local || snat.is_some(),
                };
                if reachable {
                    entry.insert(SocketAddrV4::new(*ip, p.target_port));
                    if *local {
                        table.local.insert(*ip);
                    }
                }
            }
        }
    }
    table.snat = snat;
    table
}

/// (key, backend) pairs of `slots` for which `still` no longer holds: the backends that
/// left a key (their UDP flows are forgotten).
pub fn left_backends<K: Clone, V: Clone>(
    slots: &BTreeMap<K, Vec<V>>,
    still: impl Fn(&K, &V) -> bool,
) -> Vec<(K, V)> {
    slots
        .iter()
        .flat_map(|(k, vs)| vs.iter().map(move |v| (k, v)))
        .filter(|(k, v)| !still(k, v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Backends in slots: the ones that stay keep their slot, newcomers fill the holes, and
/// the last slots move down into holes that remain, so one change touches few slots.
pub fn assign_slots<T: Ord + Clone>(old: &[T], want: &BTreeSet<T>) -> Vec<T> {
    let mut slots: Vec<Option<T>> = old
        .iter()
        .map(|b| want.contains(b).then(|| b.clone()))
        .collect();
    let kept: BTreeSet<T> = slots.iter().flatten().cloned().collect();
    let mut newcomers = want.iter().filter(|b| !kept.contains(*b)).cloned();
    for slot in slots.iter_mut().filter(|s| s.is_none()) {
        match newcomers.next() {
            Some(b) => *slot = Some(b),
            None => break,
        }
    }
    slots.extend(newcomers.map(Some));
    // Compact: fill remaining holes from the end.
    let mut i = 0;
    while i < slots.len() {
        if slots[i].is_none() {
            let last = slots.pop().flatten();
            if i < slots.len() {
                slots[i] = last;
            } else if let Some(b) = last {
                slots.push(Some(b));
            }
            continue;
        }
        i += 1;
    }
    slots.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::dispatch::{Backend, NetworkView, ServiceEndpoint};
    use shoal_api::objects::*;

    fn network(id: &str, ingress: bool) -> NetworkView {
        NetworkView {
            network: Network {
                id: id.into(),
                version: Version::default(),
                created_at: String::new(),
                updated_at: String::new(),
                spec: NetworkSpec {
                    name: id.into(),
                    labels: Default::default(),
                    driver_configuration: Driver::default(),
                    ingress,
                    attachable: false,
                    internal: false,
                    ipam_options: IpamOptions::default(),
                },
                driver_state: Driver::default(),
                ipam_options: IpamOptions::default(),
            },
            peers: vec![],
        }
    }

    fn backend(task: &str, node: &str, net: &str, addr: &str, state: TaskState) -> Backend {
        Backend {
            task_id: task.into(),
            task_name: format!("web.{task}"),
            node_id: node.into(),
            network_id: net.into(),
            addr: addr.into(),
            state,
        }
    }

    fn port(mode: PublishMode, published: u16, target: u16, protocol: Protocol) -> PortConfig {
        PortConfig {
            name: String::new(),
            protocol,
            target_port: target,
            published_port: published,
            publish_mode: mode,
        }
    }

    fn task_on(nets: &[&str]) -> Task {
        Task {
            id: "client".into(),
            version: Version::default(),
            created_at: String::new(),
            updated_at: String::new(),
            service_id: "c".into(),
            slot: 1,
            node_id: "n1".into(),
            spec: TaskSpec::default(),
            spec_version: Version::default(),
            status: TaskStatus::default(),
            desired_state: TaskState::Running,
            networks_attachments: nets
                .iter()
                .map(|n| NetworkAttachment {
                    network_id: n.to_string(),
                    addresses: vec!["198.19.1.99/24".into()],
                    aliases: vec![],
                })
                .collect(),
            restart_count: 0,
        }
    }

    fn view() -> NodeView {
        let web = ServiceEndpoint {
            service_id: "s1".into(),
            service_name: "web".into(),
            mode: EndpointMode::Vip,
            ports: vec![
                port(PublishMode::Ingress, 30080, 80, Protocol::Tcp),
                port(PublishMode::Host, 9000, 90, Protocol::Udp),
            ],
            virtual_ips: vec![
                VirtualIp {
                    network_id: "app".into(),
                    addr: "198.19.1.2/24".into(),
                },
                VirtualIp {
                    network_id: "ingress".into(),
                    addr: "198.19.0.2/24".into(),
                },
            ],
            backends: vec![
                backend("t1", "n1", "app", "198.19.1.3/24", TaskState::Running),
                backend("t1", "n1", "ingress", "198.19.0.3/24", TaskState::Running),
                backend("t2", "n2", "app", "198.19.1.4/24", TaskState::Running),
                backend("t2", "n2", "ingress", "198.19.0.4/24", TaskState::Running),
                backend("t3", "n2", "app", "198.19.1.5/24", TaskState::Starting),
            ],
            aliases: vec![],
            session_affinity: Default::default(),
        };
        let other = ServiceEndpoint {
            service_id: "s2".into(),
            service_name: "db".into(),
            mode: EndpointMode::Vip,
            ports: vec![],
            virtual_ips: vec![VirtualIp {
                network_id: "back".into(),
                addr: "198.19.2.2/24".into(),
            }],
            backends: vec![backend(
                "t9",
                "n2",
                "back",
                "198.19.2.3/24",
                TaskState::Running,
            )],
            aliases: vec![],
            session_affinity: Default::default(),
        };
        let rr = ServiceEndpoint {
            service_id: "s3".into(),
            service_name: "rr".into(),
            mode: EndpointMode::Dnsrr,
            ports: vec![],
            virtual_ips: vec![],
            backends: vec![backend(
                "t7",
                "n2",
                "app",
                "198.19.1.7/24",
                TaskState::Running,
            )],
            aliases: vec![],
            session_affinity: Default::default(),
        };
        let mut node = None::<Node>;
        node.get_or_insert_with(|| Node {
            id: "n1".into(),
            version: Version::default(),
            created_at: String::new(),
            updated_at: String::new(),
            spec: NodeSpec {
                name: String::new(),
                labels: Default::default(),
                role: NodeRole::Worker,
                availability: Availability::Active,
            },
            description: NodeDescription::default(),
            status: NodeStatus::default(),
            manager_status: None,
            raft_id: 0,
            ingress_addr: "198.19.0.250/24".into(),
        });
        NodeView {
            node,
            networks: vec![
                network("app", false),
                network("back", false),
                network("ingress", true),
            ],
            endpoints: vec![web, other, rr],
            ..Default::default()
        }
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn a_task_balances_vips_of_its_own_networks_to_running_tasks_there() {
        let t = vip_table(&view(), &task_on(&["app"]));
        assert_eq!(
            t.vips.len(),
            1,
            "no VIP of another network, none on ingress, none for dnsrr"
        );
        assert_eq!(
            t.vips[&ip("198.19.1.2")],
            [ip("198.19.1.3"), ip("198.19.1.4")].into()
        );
        let both = vip_table(&view(), &task_on(&["app", "back", "ingress"]));
        assert_eq!(both.vips.len(), 2);
        assert!(!both.vips.contains_key(&ip("198.19.0.2")));
    }

    #[test]
    fn the_mesh_reaches_every_ingress_task_and_host_ports_only_local_ones() {
        let m = mesh_table(&view(), "n1", Some("sb4097".into()));
        assert_eq!(
            m.ports[&(Protocol::Tcp, 30080)],
            [
                SocketAddrV4::new(ip("198.19.0.3"), 80),
                SocketAddrV4::new(ip("198.19.0.4"), 80)
            ]
            .into()
        );
        assert_eq!(
            m.ports[&(Protocol::Udp, 9000)],
            [SocketAddrV4::new(ip("198.19.0.3"), 90)].into()
        );
        assert_eq!(m.local, [ip("198.19.0.3")].into());
        assert_eq!(m.snat, Some((ip("198.19.0.250"), "sb4097".to_string())));
    }

    #[test]
    fn without_an_ingress_address_the_mesh_keeps_to_local_tasks() {
        let mut v = view();
        v.node.as_mut().unwrap().ingress_addr.clear();
        let m = mesh_table(&v, "n1", Some("sb4097".into()));
        assert_eq!(
            m.ports[&(Protocol::Tcp, 30080)],
            [SocketAddrV4::new(ip("198.19.0.3"), 80)].into()
        );
        assert_eq!(m.snat, None);
    }

    #[test]
    fn slots_stay_put_and_holes_are_filled() {
        let set = |v: &[u8]| v.iter().copied().collect::<BTreeSet<u8>>();
        assert_eq!(assign_slots(&[], &set(&[3, 1, 2])), vec![1, 2, 3]);
        assert_eq!(assign_slots(&[5, 6, 7], &set(&[5, 6, 7])), vec![5, 6, 7]);
        // The removed middle one is replaced by a newcomer in place.
        assert_eq!(assign_slots(&[5, 6, 7], &set(&[5, 7, 9])), vec![5, 9, 7]);
        // Without a newcomer the last slot moves into the hole.
        assert_eq!(assign_slots(&[5, 6, 7, 8], &set(&[5, 7, 8])), vec![5, 8, 7]);
        assert_eq!(assign_slots(&[5, 6, 7], &set(&[7])), vec![7]);
        assert_eq!(assign_slots(&[5, 6, 7], &set(&[])), Vec::<u8>::new());
        assert_eq!(assign_slots(&[5], &set(&[5, 6, 7])), vec![5, 6, 7]);
    }
}
