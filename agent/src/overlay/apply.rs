//! Makes the kernel match the overlay plan, with iproute2 (netlink): get-or-create of the
//! bridge and vxlan of each network (recreated when the VNI, port or local address differ),
//! FDB and neighbour entries added and removed to match exactly, devices of networks no
//! longer needed deleted, and veths plumbed into task namespaces.

use super::{NetworkPlan, VXLAN_OVERHEAD, bridge_name, diff, mac_for, parse_addr, vxlan_name};
use serde_json::Value;
use shoal_api::objects::Task;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("{cmd}: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("cannot run {tool} (install iproute2): {source}")]
    Missing {
        tool: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("no interface has the advertise address {0}; is it configured on this node?")]
    NoUnderlay(Ipv4Addr),
    #[error("task {task}: network {network} is not set up on this node")]
    NoNetwork { task: String, network: String },
}

fn run(tool: &'static str, args: &[&str]) -> Result<String, OverlayError> {
    let out = Command::new(tool)
        .args(args)
        .output()
        .map_err(|source| OverlayError::Missing { tool, source })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(OverlayError::Command {
            cmd: format!("{tool} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn json(tool: &'static str, args: &[&str]) -> Vec<Value> {
    run(tool, args)
        .ok()
        .and_then(|s| serde_json::from_str::<Vec<Value>>(&s).ok())
        .unwrap_or_default()
}

pub struct Overlay {
    local: Ipv4Addr,
    /// Underlay MTU minus the VXLAN overhead.
    pub mtu: u32,
    filter: super::underlay_filter::UnderlayFilter,
}

impl Overlay {
    /// Reads the MTU of the device that holds `local`.
    pub fn new(local: Ipv4Addr) -> Result<Overlay, OverlayError> {
        let dev = json("ip", &["-j", "addr", "show"])
            .into_iter()
            .find(|l| {
                l["addr_info"].as_array().is_some_and(|a| {
                    a.iter()
                        .any(|i| i["local"].as_str() == Some(&local.to_string()))
                })
            })
            .ok_or(OverlayError::NoUnderlay(local))?;
        let mtu = dev["mtu"].as_u64().unwrap_or(1500) as u32;
        Ok(Overlay {
            local,
            mtu: mtu.saturating_sub(VXLAN_OVERHEAD),
            filter: Default::default(),
        })
    }

    /// Brings every planned network to its desired state and removes the others, and lets
    /// VXLAN in from `senders` only. Goes on after a failure and returns every error.
    pub fn sync(
        &self,
        plans: &[NetworkPlan],
        port: u16,
        senders: BTreeSet<Ipv4Addr>,
    ) -> Vec<OverlayError> {
        let mut errors = Vec::new();
        // The filter first: a network is never up without it.
        if let Err(e) = self.filter.sync(port, self.local, senders, plans.len()) {
            errors.push(e);
        }
        for plan in plans {
            if let Err(e) = self.ensure_network(plan.vni, port) {
                errors.push(e);
                continue;
            }
            if let Some(gw) = &plan.gateway
                && let Err(e) = ensure_gateway(&plan.bridge(), gw)
            {
                errors.push(e);
            }
            errors.extend(self.sync_remotes(plan));
        }
        let wanted: BTreeSet<u32> = plans.iter().map(|p| p.vni).collect();
        for vni in existing_vnis() {
            if !wanted.contains(&vni) {
                let _ = run("ip", &["link", "del", &vxlan_name(vni)]);
                let _ = run("ip", &["link", "del", &bridge_name(vni)]);
            }
        }
        errors
    }

    fn ensure_network(&self, vni: u32, port: u16) -> Result<(), OverlayError> {
        let (br, vx) = (bridge_name(vni), vxlan_name(vni));
        let mtu = self.mtu.to_string();
        if json("ip", &["-j", "link", "show", "dev", &br]).is_empty() {
            run("ip", &["link", "add", &br, "mtu", &mtu, "type", "bridge"])?;
        }
        let current = json("ip", &["-j", "-d", "link", "show", "dev", &vx]);
        let matches = current.first().is_some_and(|l| {
            let d = &l["linkinfo"]["info_data"];
            d["id"].as_u64() == Some(u64::from(vni))
                && d["port"].as_u64() == Some(u64::from(port))
                && d["local"].as_str() == Some(&self.local.to_string())
        });
        if !matches {
            if !current.is_empty() {
                run("ip", &["link", "del", &vx])?;
            }
            run(
                "ip",
                &[
                    "link",
                    "add",
                    &vx,
                    "mtu",
                    &mtu,
                    "type",
                    "vxlan",
                    "id",
                    &vni.to_string(),
                    "dstport",
                    &port.to_string(),
                    "local",
                    &self.local.to_string(),
                    "nolearning",
                    "proxy",
                ],
            )?;
        }
        run("ip", &["link", "set", &vx, "master", &br, "up"])?;
        // Remote MACs come from the manager, never from traffic: the bridge doesn't learn
        // them on the vxlan port either.
        run("bridge", &["link", "set", "dev", &vx, "learning", "off"])?;
        run("ip", &["link", "set", &br, "up"])?;
        Ok(())
    }

    /// Exactly one permanent neighbour and FDB entry per remote task.
    fn sync_remotes(&self, plan: &NetworkPlan) -> Vec<OverlayError> {
        let vx = plan.vxlan();
        let mut errors = Vec::new();
        let want_neigh: BTreeSet<(String, String)> = plan
            .remotes
            .iter()
            .map(|r| (r.ip.to_string(), r.mac.clone()))
            .collect();
        let want_fdb: BTreeSet<(String, String)> = plan
            .remotes
            .iter()
            .map(|r| (r.mac.clone(), r.vtep.to_string()))
            .collect();
        let have_neigh: BTreeSet<(String, String)> =
            json("ip", &["-j", "neigh", "show", "dev", &vx])
                .iter()
                .filter_map(|n| {
                    Some((
                        n["dst"].as_str()?.to_string(),
                        n["lladdr"].as_str()?.to_string(),
                    ))
                })
                .collect();
        let have_fdb: BTreeSet<(String, String)> =
            json("bridge", &["-j", "fdb", "show", "dev", &vx])
                .iter()
                .filter_map(|f| {
                    Some((
                        f["mac"].as_str()?.to_string(),
                        f["dst"].as_str()?.to_string(),
                    ))
                })
                .collect();
        let (add_neigh, stale_neigh) = diff(&want_neigh, &have_neigh);
        let (add_fdb, stale_fdb) = diff(&want_fdb, &have_fdb);
        for (ip, _) in &stale_neigh {
            let _ = run("ip", &["neigh", "del", ip, "dev", &vx]);
        }
        for (mac, dst) in &stale_fdb {
            let _ = run(
                "bridge",
                &["fdb", "del", mac, "dev", &vx, "dst", dst, "self"],
            );
        }
        for (ip, mac) in &add_neigh {
            if let Err(e) = run(
                "ip",
                &[
                    "neigh",
                    "replace",
                    ip,
                    "lladdr",
                    mac,
                    "dev",
                    &vx,
                    "nud",
                    "permanent",
                ],
            ) {
                errors.push(e);
            }
        }
        for (mac, dst) in &add_fdb {
            if let Err(e) = run(
                "bridge",
                &[
                    "fdb",
                    "replace",
                    mac,
                    "dev",
                    &vx,
                    "dst",
                    dst,
                    "self",
                    "permanent",
                ],
            ) {
                errors.push(e);
            }
        }
        errors
    }

    /// Plumbs the task's interfaces: per attachment a veth whose peer is `ethN` in the task's
    /// namespace, with the task's address and MAC, on the network's bridge.
    pub fn attach(
        &self,
        netns: &TaskNetns,
        task: &Task,
        plans: &[NetworkPlan],
        port: u16,
    ) -> Result<(), OverlayError> {
        let mtu = self.mtu.to_string();
        let target = netns.target();
        for (i, a) in task.networks_attachments.iter().enumerate() {
            let plan = plans
                .iter()
                .find(|p| p.network_id == a.network_id)
                .ok_or_else(|| OverlayError::NoNetwork {
                    task: task.id.clone(),
                    network: a.network_id.clone(),
                })?;
            self.ensure_network(plan.vni, port)?;
            let Some(addr) = a.addresses.first() else {
                continue;
            };
            let ip = parse_addr(addr).ok_or_else(|| OverlayError::NoNetwork {
                task: task.id.clone(),
                network: a.network_id.clone(),
            })?;
            let host = veth_name(&task.id, i);
            let peer = format!("eth{i}");
            let _ = run("ip", &["link", "del", &host]);
            run(
                "ip",
                &[
                    "link", "add", &host, "mtu", &mtu, "type", "veth", "peer", "name", &peer,
                    "netns", &target,
                ],
            )?;
            run(
                "ip",
                &["link", "set", &host, "master", &plan.bridge(), "up"],
            )?;
            let mac = mac_for(ip);
            netns.ip(&["link", "set", &peer, "address", &mac, "mtu", &mtu])?;
            netns.ip(&["addr", "add", addr, "dev", &peer])?;
            netns.ip(&["link", "set", &peer, "up"])?;
            // A task on ingress answers mesh clients (outside addresses) through the node.
            if let Some(gw) = plan.gateway.as_deref().and_then(parse_addr) {
                let gw = gw.to_string();
                netns.ip(&["route", "replace", "default", "via", &gw, "dev", &peer])?;
            }
        }
        Ok(())
    }
}

/// On a host where Docker runs, its iptables FORWARD policy is DROP and br_netfilter sends
/// bridged frames through it, which would drop overlay and routing-mesh traffic through
/// shoal's bridges; accept them in Docker's DOCKER-USER chain (get-or-create), as Swarm does
/// for its own bridges. Without that chain (no Docker in this namespace) nothing is needed.
pub fn accept_in_docker_forward() -> Result<bool, OverlayError> {
    if run("iptables", &["-S", "DOCKER-USER"]).is_err() {
        return Ok(false);
    }
    for dir in ["-i", "-o"] {
        let rule = ["DOCKER-USER", dir, "sb+", "-j", "ACCEPT"];
        let mut check = vec!["-C"];
        check.extend_from_slice(&rule);
        if run("iptables", &check).is_err() {
            let mut insert = vec!["-I"];
            insert.extend_from_slice(&rule);
            run("iptables", &insert)?;
        }
    }
    Ok(true)
}

/// The node's address and matching MAC on a bridge (get-or-create): remote nodes reach it
/// through their static neighbour and FDB entries, like a task.
fn ensure_gateway(bridge: &str, addr: &str) -> Result<(), OverlayError> {
    let Some(ip) = parse_addr(addr) else {
        return Ok(());
    };
    let mac = mac_for(ip);
    let link = json("ip", &["-j", "addr", "show", "dev", bridge]);
    let Some(l) = link.first() else {
        return Ok(());
    };
    if l["address"].as_str() != Some(mac.as_str()) {
        run("ip", &["link", "set", bridge, "address", &mac])?;
    }
    let has = l["addr_info"].as_array().is_some_and(|a| {
        a.iter()
            .any(|i| i["local"].as_str() == Some(&ip.to_string()))
    });
    if !has {
        run("ip", &["addr", "replace", addr, "dev", bridge])?;
    }
    Ok(())
}

/// Where a task's interfaces go: a named namespace (a task being started) or the namespace
/// of a running process (an adopted task, whose name may not be visible to this shoald).
pub enum TaskNetns {
    Named(String),
    Process(u32),
}

impl TaskNetns {
    /// What `ip link ... netns` takes: a name or a pid.
    fn target(&self) -> String {
        match self {
            TaskNetns::Named(n) => n.clone(),
            TaskNetns::Process(pid) => pid.to_string(),
        }
    }

    /// Runs `ip ARGS` inside the namespace.
    fn ip(&self, args: &[&str]) -> Result<String, OverlayError> {
        match self {
            TaskNetns::Named(n) => {
                let mut all = vec!["-n", n.as_str()];
                all.extend_from_slice(args);
                run("ip", &all)
            }
            TaskNetns::Process(pid) => {
                let pid = pid.to_string();
                let mut all = vec!["-t", pid.as_str(), "-n", "ip"];
                all.extend_from_slice(args);
                run("nsenter", &all)
            }
        }
    }
}

/// Name of the host side of a task's veth for its `index`th network.
pub fn veth_name(task_id: &str, index: usize) -> String {
    format!("st{}{}", &task_id[..task_id.len().min(10)], index)
}

/// Names of the links present now.
pub fn link_names() -> BTreeSet<String> {
    json("ip", &["-j", "link", "show"])
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect()
}

/// VNIs of the overlay devices present now.
fn existing_vnis() -> Vec<u32> {
    json("ip", &["-j", "link", "show"])
        .iter()
        .filter_map(|l| l["ifname"].as_str())
        .filter_map(|n| n.strip_prefix("sv").or_else(|| n.strip_prefix("sb")))
        .filter_map(|v| v.parse().ok())
        .collect::<BTreeSet<u32>>()
        .into_iter()
        .collect()
}
