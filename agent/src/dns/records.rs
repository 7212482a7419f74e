//! What a task may resolve: built from the node's view, scoped to the networks the asking
//! task is attached to (ingress excluded: publishing a port does not make names visible).

use shoal_api::dispatch::NodeView;
use shoal_api::objects::{EndpointMode, Task};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// Answers for one task: names (lowercase, no trailing dot) to addresses, and addresses to
/// names for PTR.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scope {
    pub names: BTreeMap<String, Vec<Ipv4Addr>>,
    pub reverse: BTreeMap<Ipv4Addr, String>,
    /// Where names that are not the cluster's go for this task: its `--dns` servers
    /// (Compose `dns:`), or the host's resolvers when it has none.
    pub forwarders: Vec<std::net::SocketAddr>,
}

fn ip(addr: &str) -> Option<Ipv4Addr> {
    addr.split('/').next()?.parse().ok()
}

pub fn scope_for(view: &NodeView, task: &Task) -> Scope {
    let ingress: BTreeSet<&str> = view
        .networks
        .iter()
        .filter(|n| n.network.spec.ingress)
        .map(|n| n.network.id.as_str())
        .collect();
    let nets: BTreeSet<&str> = task
        .networks_attachments
        .iter()
        .map(|a| a.network_id.as_str())
        .filter(|n| !ingress.contains(n))
        .collect();
    let mut scope = Scope {
        forwarders: task
            .spec
            .container_spec
            .dns_config
            .iter()
            .flat_map(|d| d.nameservers.iter())
            .filter_map(|n| n.parse::<std::net::IpAddr>().ok())
            .map(|ip| std::net::SocketAddr::new(ip, 53))
            .collect(),
        ..Scope::default()
    };
    for e in &view.endpoints {
        let backends: Vec<(Ipv4Addr, &str)> = e
            .backends
            .iter()
            .filter(|b| nets.contains(b.network_id.as_str()))
            .filter_map(|b| Some((ip(&b.addr)?, b.task_name.as_str())))
            .collect();
        let vips: Vec<Ipv4Addr> = e
            .virtual_ips
            .iter()
            .filter(|v| nets.contains(v.network_id.as_str()))
            .filter_map(|v| ip(&v.addr))
            .collect();
        if backends.is_empty() && vips.is_empty() {
            continue;
        }
        let name = e.service_name.to_ascii_lowercase();
        let task_ips: Vec<Ipv4Addr> = backends.iter().map(|(ip, _)| *ip).collect();
        let service_answer = match e.mode {
            EndpointMode::Vip => vips.clone(),
            EndpointMode::Dnsrr => task_ips.clone(),
        };
        // Names merge rather than replace: another service's alias may be this name.
        if !service_answer.is_empty() {
            add_all(&mut scope.names, name.clone(), service_answer);
        }
        add_all(&mut scope.names, format!("tasks.{name}"), task_ips);
        // An alias answers like the service name, and `tasks.<alias>` like `tasks.<name>`,
        // with the addresses on the alias's own network only: a task that shares another
        // network with the service does not see the alias there.
        for (net, alias) in &e.aliases {
            if !nets.contains(net.as_str()) {
                continue;
            }
            let on_net: Vec<Ipv4Addr> = e
                .backends
                .iter()
                .filter(|b| &b.network_id == net)
                .filter_map(|b| ip(&b.addr))
                .collect();
            let answer: Vec<Ipv4Addr> = match e.mode {
                EndpointMode::Vip => e
                    .virtual_ips
                    .iter()
                    .filter(|v| &v.network_id == net)
                    .filter_map(|v| ip(&v.addr))
                    .collect(),
                EndpointMode::Dnsrr => on_net.clone(),
            };
            let alias = alias.to_ascii_lowercase();
            if !answer.is_empty() {
                add_all(&mut scope.names, alias.clone(), answer);
            }
            add_all(&mut scope.names, format!("tasks.{alias}"), on_net);
        }
        for (addr, task_name) in &backends {
            scope
                .names
                .insert(task_name.to_ascii_lowercase(), vec![*addr]);
            scope.reverse.insert(*addr, task_name.to_string());
        }
        for v in &vips {
            scope.reverse.insert(*v, e.service_name.clone());
        }
    }
    scope
}

/// Adds `addrs` to what `name` answers: two services may carry the same alias on one
/// network, and then the name answers for both, as Docker's resolver does.
fn add_all(names: &mut BTreeMap<String, Vec<Ipv4Addr>>, name: String, addrs: Vec<Ipv4Addr>) {
    let entry = names.entry(name).or_default();
    for a in addrs {
        if !entry.contains(&a) {
            entry.push(a);
        }
    }
}

impl Scope {
    pub fn lookup(&self, name: &str) -> Option<&Vec<Ipv4Addr>> {
        self.names
            .get(name.trim_end_matches('.').to_ascii_lowercase().as_str())
    }

    /// `d.c.b.a.in-addr.arpa` to the name of a.b.c.d.
    pub fn lookup_ptr(&self, name: &str) -> Option<&String> {
        let labels: Vec<&str> = name
            .trim_end_matches('.')
            .strip_suffix(".in-addr.arpa")?
            .split('.')
            .collect();
        if labels.len() != 4 {
            return None;
        }
        let octets: Vec<u8> = labels.iter().rev().filter_map(|l| l.parse().ok()).collect();
        let ip = Ipv4Addr::new(
            *octets.first()?,
            *octets.get(1)?,
            *octets.get(2)?,
            *octets.get(3)?,
        );
        self.reverse.get(&ip)
    }
}
