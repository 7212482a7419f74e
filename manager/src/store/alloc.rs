//! Cluster-wide allocations kept inside the replicated state: overlay subnets, VXLAN ids,
//! addresses per network, published ports and who holds them. Every change happens while a
//! raft entry is applied, so no allocation can be handed out twice, across leader changes
//! and restarts alike.

use super::StoreError;
use crate::allocator::ipam::Ipv4Pool;
use crate::allocator::ports::PublishedPorts;
use crate::allocator::serial::SerialSpace;
use crate::allocator::subnets::SubnetPool;
use crate::allocator::{AllocError, Allocator};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use shoal_api::objects::*;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

pub const VNI_FIRST: u32 = 4096;
pub const VNI_LAST: u32 = (1 << 24) - 1;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Allocations {
    subnets: SubnetPool,
    vnis: SerialSpace,
    /// Address pool of each network, by network id.
    addresses: BTreeMap<String, Ipv4Pool>,
    ports: PublishedPorts,
    /// Holders of each published port, keyed `proto/port`. Several services may share a
    /// host-mode port (the scheduler keeps them on different nodes); an ingress port has one.
    port_holders: BTreeMap<String, Vec<PortHolder>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct PortHolder {
    service_id: String,
    mode: PublishMode,
}

fn port_taken(port: &PortConfig, h: &PortHolder, names: &BTreeMap<String, String>) -> StoreError {
    StoreError::PortTaken {
        port: port.published_port,
        protocol: port.protocol,
        service: names.get(&h.service_id).cloned().unwrap_or_default(),
        service_id: h.service_id.clone(),
        as_what: match h.mode {
            PublishMode::Ingress => "an ingress port",
            PublishMode::Host => "a host-published port",
        },
    }
}

fn port_key(proto: Protocol, port: u16) -> String {
    format!("{proto}/{port}")
}

/// Allocations made so far by one command, undone in reverse if a later step fails so that a
/// refused command leaves nothing behind.
#[derive(Default)]
pub struct Undo {
    steps: Vec<UndoStep>,
}

enum UndoStep {
    Port(Protocol, u16, String),
    Address(String, Ipv4Addr),
}

impl Allocations {
    pub fn new(
        pools: &[Ipv4Net],
        subnet_len: u8,
        dynamic_ports: (u16, u16),
    ) -> Result<Self, StoreError> {
        let subnets = SubnetPool::new(pools.to_vec(), subnet_len)
            .map_err(|e| StoreError::invalid("default address pool", e.to_string()))?;
        Ok(Allocations {
            subnets,
            vnis: SerialSpace::new("VXLAN id", VNI_FIRST, VNI_LAST),
            addresses: BTreeMap::new(),
            ports: PublishedPorts::new(dynamic_ports.0, dynamic_ports.1),
            port_holders: BTreeMap::new(),
        })
    }

    /// Subnet, gateway and VNI for a new overlay network.
    pub fn create_network(
        &mut self,
        id: &str,
        name: &str,
        requested: Option<(Ipv4Net, Option<Ipv4Addr>, Option<Ipv4Net>)>,
    ) -> Result<(Ipv4Net, Ipv4Addr, u32), StoreError> {
        let subnet = match requested {
            Some((net, _, _)) => {
                let net = net.trunc();
                self.subnets.allocate_specific(net).map_err(|e| match e {
                    AllocError::Overlaps { other, .. } => StoreError::invalid(
                        format!("network {name}"),
                        format!("subnet {net} overlaps {other} of another network; choose another --subnet"),
                    ),
                    other => StoreError::invalid(format!("network {name}"), other.to_string()),
                })?;
                net
            }
            None => self
                .subnets
                .allocate_next()
                .map_err(|e| StoreError::Exhausted {
                    what: format!("network {name}"),
                    detail: format!(
                        "{e}; widen --default-addr-pool or give the network an explicit --subnet"
                    ),
                })?,
        };
        let vni = match self.vnis.allocate_next() {
            Ok(v) => v,
            Err(e) => {
                self.subnets.release(&subnet);
                return Err(StoreError::Exhausted {
                    what: format!("network {name}"),
                    detail: e.to_string(),
                });
            }
        };
        let mut pool = match requested {
            Some((_, _, Some(range))) => Ipv4Pool::with_range(subnet, range),
            _ => Ipv4Pool::new(subnet),
        };
        let mut gateway = pool.gateway();
        // A gateway outside the range is never handed out, so it needs no reservation.
        if let Some((_, Some(gw), range)) = requested
            && gw != gateway
            && (range.is_none() || pool.in_range(gw))
        {
            if let Err(e) = pool.allocate_specific(gw) {
                self.subnets.release(&subnet);
                self.vnis.release(&vni);
                return Err(StoreError::invalid(
                    format!("network {name}"),
                    format!("gateway {gw}: {e}"),
                ));
            }
            gateway = gw;
        } else if let Some((_, Some(gw), Some(_))) = requested {
            gateway = gw;
        }
        self.addresses.insert(id.to_string(), pool);
        Ok((subnet, gateway, vni))
    }

    pub fn release_network(&mut self, id: &str, vni: Option<u32>) {
        if let Some(pool) = self.addresses.remove(id) {
            self.subnets.release(&pool.subnet());
        }
        if let Some(v) = vni {
            self.vnis.release(&v);
        }
    }

    /// Free addresses on a network.
    pub fn free_addresses(&self, network_id: &str) -> u64 {
        self.addresses
            .get(network_id)
            .map(|p| p.capacity() - p.in_use())
            .unwrap_or(0)
    }

    pub fn network_subnet(&self, network_id: &str) -> Option<Ipv4Net> {
        self.addresses.get(network_id).map(|p| p.subnet())
    }

    /// One address on a network, as `ip/prefix`.
    pub fn allocate_address(
        &mut self,
        network_id: &str,
        network_name: &str,
        undo: &mut Undo,
    ) -> Result<String, StoreError> {
        let pool = self
            .addresses
            .get_mut(network_id)
            .ok_or_else(|| StoreError::NotFound {
                kind: "network",
                name: network_id.to_string(),
            })?;
        let ip = pool.allocate_next().map_err(|e| StoreError::Exhausted {
            what: format!("network {network_name} ({})", pool.subnet()),
            detail: format!(
                "{e}; remove services from it or create a network with a larger --subnet"
            ),
        })?;
        undo.steps
            .push(UndoStep::Address(network_id.to_string(), ip));
        Ok(format!("{ip}/{}", pool.subnet().prefix_len()))
    }

    /// Releases an `ip/prefix` address; unknown networks or addresses are ignored.
    pub fn release_address(&mut self, network_id: &str, addr: &str) {
        let ip = addr
            .split('/')
            .next()
            .and_then(|s| s.parse::<Ipv4Addr>().ok());
        if let (Some(pool), Some(ip)) = (self.addresses.get_mut(network_id), ip) {
            pool.release(&ip);
        }
    }

    /// Which service holds a published port, if one conflicts with publishing it in `mode`.
    fn conflicting_holder(
        &self,
        proto: Protocol,
        port: u16,
        mode: PublishMode,
        service_id: &str,
    ) -> Option<&PortHolder> {
        self.port_holders
            .get(&port_key(proto, port))?
            .iter()
            .find(|h| {
                h.service_id != service_id
                    && (mode == PublishMode::Ingress || h.mode == PublishMode::Ingress)
            })
    }

    /// Publishes the ports of a service. `keep` are its ports as allocated before an update:
    /// a dynamic port asked again (same target, protocol and mode) keeps its number, so that
    /// `--publish-add`/`--publish-rm` leave the other ports stable.
    pub fn allocate_ports(
        &mut self,
        service_id: &str,
        service_name: &str,
        wanted: &[PortConfig],
        keep: &[PortConfig],
        names: &BTreeMap<String, String>,
        undo: &mut Undo,
    ) -> Result<Vec<PortConfig>, StoreError> {
        // Conflicts of explicitly chosen ports first, so that a refusal moves no cursor.
        for want in wanted.iter().filter(|w| w.published_port != 0) {
            if let Some(h) = self.conflicting_holder(
                want.protocol,
                want.published_port,
                want.publish_mode,
                service_id,
            ) {
                return Err(port_taken(want, h, names));
            }
        }
        let mut out = Vec::with_capacity(wanted.len());
        let mut reused: Vec<bool> = vec![false; keep.len()];
        for want in wanted {
            let mut port = want.clone();
            if port.published_port == 0 && port.publish_mode == PublishMode::Ingress {
                let previous = keep.iter().enumerate().find(|(i, k)| {
                    !reused[*i]
                        && k.target_port == want.target_port
                        && k.protocol == want.protocol
                        && k.publish_mode == want.publish_mode
                        && !wanted.iter().any(|w| w.published_port == k.published_port)
                });
                if let Some((i, k)) = previous {
                    reused[i] = true;
                    port.published_port = k.published_port;
                }
            }
            if port.published_port == 0 && port.publish_mode == PublishMode::Host {
                // Host mode without a published port binds the target port on the node.
                port.published_port = port.target_port;
            }
            let already_ours = self
                .port_holders
                .get(&port_key(port.protocol, port.published_port))
                .is_some_and(|hs| hs.iter().any(|h| h.service_id == service_id))
                && port.published_port != 0;
            if port.published_port != 0
                && let Some(h) = self.conflicting_holder(
                    port.protocol,
                    port.published_port,
                    port.publish_mode,
                    service_id,
                )
            {
                return Err(port_taken(&port, h, names));
            }
            if port.publish_mode == PublishMode::Ingress && !already_ours {
                let space = self.ports.space(port.protocol);
                if port.published_port == 0 {
                    port.published_port =
                        space.allocate_next().map_err(|e| StoreError::Exhausted {
                            what: format!("service {service_name}"),
                            detail: format!(
                                "{e}; choose a published port explicitly or remove unused ones"
                            ),
                        })?;
                } else {
                    space.allocate_specific(port.published_port).map_err(|e| {
                        StoreError::invalid(format!("service {service_name}"), e.to_string())
                    })?;
                }
            }
            if !already_ours {
                self.port_holders
                    .entry(port_key(port.protocol, port.published_port))
                    .or_default()
                    .push(PortHolder {
                        service_id: service_id.to_string(),
                        mode: port.publish_mode,
                    });
                undo.steps.push(UndoStep::Port(
                    port.protocol,
                    port.published_port,
                    service_id.to_string(),
                ));
            }
            out.push(port);
        }
        Ok(out)
    }

    /// Drops a service's hold on each port; a port nobody holds returns to the free space.
    pub fn release_ports(&mut self, service_id: &str, ports: &[PortConfig]) {
        for p in ports {
            self.release_port(p.protocol, p.published_port, service_id);
        }
    }

    fn release_port(&mut self, proto: Protocol, port: u16, service_id: &str) {
        let key = port_key(proto, port);
        let Some(holders) = self.port_holders.get_mut(&key) else {
            return;
        };
        let Some(pos) = holders.iter().position(|h| h.service_id == service_id) else {
            return;
        };
        let removed = holders.remove(pos);
        if holders.is_empty() {
            self.port_holders.remove(&key);
        }
        if removed.mode == PublishMode::Ingress {
            self.ports.space(proto).release(&port);
        }
    }

    /// Reverts what a failed command allocated.
    pub fn rollback(&mut self, undo: Undo) {
        for step in undo.steps.into_iter().rev() {
            match step {
                UndoStep::Port(proto, port, service) => self.release_port(proto, port, &service),
                UndoStep::Address(net, ip) => {
                    if let Some(pool) = self.addresses.get_mut(&net) {
                        pool.release(&ip);
                    }
                }
            }
        }
    }

    /// Everything handed out, for duplicate checks in tests and `network inspect`.
    pub fn ports_in_use(&self) -> usize {
        self.port_holders.len()
    }
}
