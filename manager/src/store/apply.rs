//! Applying one committed command. Each command is checked in full before anything changes;
//! allocation steps that can still fail are undone, so a refused command changes nothing.

use super::alloc::{Allocations, Undo};
use super::command::{Command, InitCluster, TaskOp};
use super::{ClusterRecord, ClusterState, StoreError, lookup};
use ipnet::Ipv4Net;
use shoal_api::objects::*;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// What an applied command produced, for the caller waiting on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Done,
    Created(String),
}

impl ClusterState {
    /// Applies the command of raft entry `index`.
    pub fn apply(&mut self, index: u64, command: Command) -> Result<Applied, StoreError> {
        let version = Version { index };
        match command {
            Command::Init(init) => self.init(version, *init),
            Command::AddNode(node) => self.add_node(version, *node),
            Command::UpdateNodeSpec {
                id,
                spec,
                now,
                expected,
            } => self.update_node_spec(version, &id, spec, now, expected),
            Command::NodeStatus {
                id,
                status,
                description,
                now,
            } => {
                let node = self
                    .nodes
                    .get_mut(&id)
                    .ok_or_else(|| StoreError::NotFound {
                        kind: "node",
                        name: id.clone(),
                    })?;
                node.status = status;
                if let Some(d) = description {
                    node.description = d;
                }
                node.version = version;
                node.updated_at = now;
                // Nodes of a cluster made before nodes had ingress addresses, or that
                // joined while ingress was full, get one when they report.
                self.give_ingress_addr(&id);
                Ok(Applied::Done)
            }
            Command::RemoveNode { id, force } => self.remove_node(&id, force),
            Command::SetJoinToken { role, token, now } => {
                let rec = self.cluster.as_mut().ok_or(StoreError::NotInitialized)?;
                match role {
                    NodeRole::Worker => rec.worker_token = token,
                    NodeRole::Manager => rec.manager_token = token,
                }
                rec.cluster.version = version;
                rec.cluster.updated_at = now;
                Ok(Applied::Done)
            }
            Command::UpdateClusterSpec {
                spec,
                now,
                expected,
            } => {
                let rec = self.cluster.as_mut().ok_or(StoreError::NotInitialized)?;
                if let Some(expected) = expected.filter(|&e| e != rec.cluster.version.index) {
                    return Err(StoreError::VersionMismatch {
                        object: "the swarm".into(),
                        expected,
                        actual: rec.cluster.version.index,
                    });
                }
                // Autolock moves only with its key (`SetUnlockKey`).
                let encryption = rec.cluster.spec.encryption_config.clone();
                rec.cluster.spec = spec;
                rec.cluster.spec.encryption_config = encryption;
                rec.cluster.version = version;
                rec.cluster.updated_at = now;
                Ok(Applied::Done)
            }
            Command::CreateNetwork { id, spec, now } => self.create_network(version, id, spec, now),
            Command::RemoveNetwork { id } => self.remove_network(&id),
            Command::CreateService { id, spec, now } => self.create_service(version, id, spec, now),
            Command::UpdateService {
                id,
                version: expected,
                spec,
                now,
            } => self.update_service(version, &id, expected, spec, now),
            Command::RollbackService { id, now } => {
                self.rollback_service(version, &id, &now, true, "manually requested rollback")
            }
            Command::RemoveService { id, now } => self.remove_service(version, &id, &now),
            Command::SetRegistryAuth { service_id, sealed } => {
                if !self.services.contains_key(&service_id) {
                    return Err(StoreError::NotFound {
                        kind: "service",
                        name: service_id,
                    });
                }
                self.registry_auth.insert(service_id, sealed);
                Ok(Applied::Done)
            }
            Command::CreateSecret {
                id,
                spec,
                sealed,
                now,
            } => self.create_secret(version, id, spec, sealed, now),
            Command::RemoveSecret { id } => self.remove_secret(&id),
            Command::CreateConfig { id, spec, now } => self.create_config(version, id, spec, now),
            Command::RemoveConfig { id } => self.remove_config(&id),
            Command::All(commands) => self.apply_all(index, commands),
            Command::Tasks { ops, now } => {
                for op in ops {
                    self.apply_task_op(version, op, &now);
                }
                Ok(Applied::Done)
            }
            Command::SetUnlockKey { sealed, now } => self.set_unlock_key(version, sealed, now),
        }
    }

    /// Applies `commands` to a copy and keeps it only if every one of them was taken. The
    /// copy costs a clone of the state; this serves stack deploys and creates or updates
    /// with registry credentials, which are rare, and it keeps each command's own checks
    /// the only checks.
    fn apply_all(&mut self, index: u64, commands: Vec<Command>) -> Result<Applied, StoreError> {
        let mut next = self.clone();
        for command in commands {
            let object = match &command {
                Command::All(_) | Command::Init(_) => {
                    return Err(StoreError::invalid(
                        "command group",
                        "it may not hold another group or a cluster init",
                    ));
                }
                Command::CreateNetwork { spec, .. } => format!("network {}", spec.name),
                Command::CreateSecret { spec, .. } => format!("secret {}", spec.name),
                Command::CreateConfig { spec, .. } => format!("config {}", spec.name),
                Command::CreateService { spec, .. } | Command::UpdateService { spec, .. } => {
                    format!("service {}", spec.name)
                }
                _ => "command group".to_string(),
            };
            next.apply(index, command).map_err(|e| {
                let named = e.to_string().starts_with(&format!("{object}:"));
                StoreError::InGroup {
                    object: if named {
                        String::new()
                    } else {
                        format!("{object}: ")
                    },
                    source: Box::new(e),
                }
            })?;
        }
        *self = next;
        Ok(Applied::Done)
    }

    fn alloc(&mut self) -> Result<&mut Allocations, StoreError> {
        self.alloc.as_mut().ok_or(StoreError::NotInitialized)
    }

    fn init(&mut self, version: Version, init: InitCluster) -> Result<Applied, StoreError> {
        if self.cluster.is_some() {
            return Err(StoreError::precondition("swarm", "already initialized"));
        }
        let pools = parse_pools(&init.cluster.default_addr_pool)?;
        self.alloc = Some(Allocations::new(
            &pools,
            init.cluster.subnet_size,
            init.dynamic_ports,
        )?);
        let mut cluster = init.cluster;
        cluster.version = version;
        self.cluster = Some(ClusterRecord {
            cluster,
            ca_key_pem: init.ca_key_pem,
            worker_token: init.worker_token,
            manager_token: init.manager_token,
        });
        let mut node = init.node;
        node.version = version;
        self.nodes.insert(node.id.clone(), node);
        let now = self.record()?.cluster.created_at.clone();
        let node_id = node_id_of(&self.nodes);
        self.create_network(version, init.ingress_id, init.ingress_spec, now)?;
        self.give_ingress_addr(&node_id);
        Ok(Applied::Done)
    }

    fn add_node(&mut self, version: Version, mut node: Node) -> Result<Applied, StoreError> {
        if self.nodes.contains_key(&node.id) {
            return Err(StoreError::precondition(
                format!("node {}", node.id),
                "already a member",
            ));
        }
        node.version = version;
        let id = node.id.clone();
        self.nodes.insert(id.clone(), node);
        self.give_ingress_addr(&id);
        Ok(Applied::Done)
    }

    /// The node's own address on ingress, for the routing mesh. A full ingress subnet
    /// leaves it without one (its published ports then reach only local tasks) rather than
    /// refusing the node.
    fn give_ingress_addr(&mut self, node_id: &str) {
        let Some(ingress) = self.ingress().map(|n| (n.id.clone(), n.spec.name.clone())) else {
            return;
        };
        if self
            .nodes
            .get(node_id)
            .is_none_or(|n| !n.ingress_addr.is_empty())
        {
            return;
        }
        let Some(alloc) = self.alloc.as_mut() else {
            return;
        };
        let mut undo = Undo::default();
        if let Ok(addr) = alloc.allocate_address(&ingress.0, &ingress.1, &mut undo)
            && let Some(node) = self.nodes.get_mut(node_id)
        {
            node.ingress_addr = addr;
        }
    }

    fn update_node_spec(
        &mut self,
        version: Version,
        id: &str,
        spec: NodeSpec,
        now: String,
        expected: Option<u64>,
    ) -> Result<Applied, StoreError> {
        let node = self.nodes.get(id).ok_or_else(|| StoreError::NotFound {
            kind: "node",
            name: id.to_string(),
        })?;
        if let Some(expected) = expected.filter(|&e| e != node.version.index) {
            return Err(StoreError::VersionMismatch {
                object: format!("node {}", node.hostname()),
                expected,
                actual: node.version.index,
            });
        }
        if node.spec.role == NodeRole::Manager && spec.role == NodeRole::Worker {
            let managers = self.managers().count();
            if managers <= 1 {
                return Err(StoreError::precondition(
                    format!("node {}", node.hostname()),
                    "it is the last manager of the swarm; promote another node first",
                ));
            }
        }
        let node = self.nodes.get_mut(id).expect("checked above");
        if spec.role == NodeRole::Manager && node.manager_status.is_none() {
            // The gRPC address the node gave when it joined becomes its raft address.
            node.manager_status = Some(ManagerStatus {
                addr: node
                    .spec
                    .labels
                    .get(GRPC_ADDR_LABEL)
                    .cloned()
                    .unwrap_or_default(),
                ..Default::default()
            });
        }
        if spec.role == NodeRole::Worker {
            node.manager_status = None;
        }
        let mut spec = spec;
        if let Some(addr) = node.spec.labels.get(GRPC_ADDR_LABEL) {
            spec.labels.insert(GRPC_ADDR_LABEL.into(), addr.clone());
        }
        node.spec = spec;
        node.version = version;
        node.updated_at = now;
        Ok(Applied::Done)
    }

    fn remove_node(&mut self, id: &str, force: bool) -> Result<Applied, StoreError> {
        let node = self.nodes.get(id).ok_or_else(|| StoreError::NotFound {
            kind: "node",
            name: id.to_string(),
        })?;
        if node.spec.role == NodeRole::Manager {
            return Err(StoreError::precondition(
                format!("node {}", node.hostname()),
                "it is a manager; demote it first (shoal node demote)",
            ));
        }
        if node.status.state == NodeState::Ready && !force {
            return Err(StoreError::precondition(
                format!("node {}", node.hostname()),
                "it is not down and can't be removed; stop it first or use --force",
            ));
        }
        if let Some(node) = self.nodes.remove(id)
            && let (Some(ingress), Some(alloc)) =
                (self.ingress().map(|n| n.id.clone()), self.alloc.as_mut())
        {
            alloc.release_address(&ingress, &node.ingress_addr);
        }
        // Nobody will report for the node's tasks again: end them and free their addresses.
        let orphans: Vec<String> = self
            .tasks
            .values()
            .filter(|t| t.node_id == id && !t.status.state.is_terminal())
            .map(|t| t.id.clone())
            .collect();
        for tid in orphans {
            let now = self.tasks[&tid].updated_at.clone();
            if let Some(t) = self.tasks.get_mut(&tid) {
                t.status = status(TaskState::Orphaned, "node removed from the swarm", &now);
                t.desired_state = t.desired_state.max(TaskState::Shutdown);
            }
            self.release_task(&tid);
        }
        Ok(Applied::Done)
    }

    fn create_network(
        &mut self,
        version: Version,
        id: String,
        spec: NetworkSpec,
        now: String,
    ) -> Result<Applied, StoreError> {
        validate_name("network", &spec.name)?;
        if let Some(other) = self.networks.values().find(|n| n.spec.name == spec.name) {
            return Err(StoreError::NameTaken {
                kind: "network",
                name: spec.name.clone(),
                id: other.id.clone(),
            });
        }
        if spec.driver_configuration.name != "overlay" {
            return Err(StoreError::invalid(
                format!("network {}", spec.name),
                format!(
                    "driver {:?} is not supported; use -d overlay",
                    spec.driver_configuration.name
                ),
            ));
        }
        if spec.ingress && self.ingress().is_some() {
            return Err(StoreError::precondition(
                format!("network {}", spec.name),
                "another ingress network is already present",
            ));
        }
        let requested = match spec.ipam_options.configs.as_slice() {
            [] => None,
            [c] => {
                let net: Ipv4Net = c.subnet.parse().map_err(|_| {
                    StoreError::invalid(
                        format!("network {}", spec.name),
                        format!(
                            "subnet {:?} is not an IPv4 CIDR like 198.19.5.0/24",
                            c.subnet
                        ),
                    )
                })?;
                if net.prefix_len() > 29 {
                    return Err(StoreError::invalid(
                        format!("network {}", spec.name),
                        format!("subnet {net} is too small; use a /29 or larger"),
                    ));
                }
                let gw = if c.gateway.is_empty() {
                    None
                } else {
                    let gw: Ipv4Addr = c.gateway.parse().map_err(|_| {
                        StoreError::invalid(
                            format!("network {}", spec.name),
                            format!("gateway {:?} is not an IPv4 address", c.gateway),
                        )
                    })?;
                    if !net.contains(&gw) {
                        return Err(StoreError::invalid(
                            format!("network {}", spec.name),
                            format!("gateway {gw} is outside subnet {net}"),
                        ));
                    }
                    Some(gw)
                };
                let range = if c.ip_range.is_empty() {
                    None
                } else {
                    let r: Ipv4Net = c.ip_range.parse().map_err(|_| {
                        StoreError::invalid(
                            format!("network {}", spec.name),
                            format!(
                                "ip range {:?} is not an IPv4 CIDR like 198.19.5.128/25",
                                c.ip_range
                            ),
                        )
                    })?;
                    let r = r.trunc();
                    if !net.trunc().contains(&r) || r.prefix_len() > 30 {
                        return Err(StoreError::invalid(
                            format!("network {}", spec.name),
                            format!(
                                "ip range {r} must be a /30 or larger inside subnet {}",
                                net.trunc()
                            ),
                        ));
                    }
                    Some(r)
                };
                Some((net, gw, range))
            }
            _ => {
                return Err(StoreError::invalid(
                    format!("network {}", spec.name),
                    "only one IPv4 subnet per network is supported",
                ));
            }
        };
        let ip_range = requested
            .and_then(|(_, _, r)| r)
            .map(|r| r.to_string())
            .unwrap_or_default();
        let (subnet, gateway, vni) = self.alloc()?.create_network(&id, &spec.name, requested)?;
        let mut options = BTreeMap::new();
        options.insert(VXLAN_ID_OPTION.to_string(), vni.to_string());
        let network = Network {
            id: id.clone(),
            version,
            created_at: now.clone(),
            updated_at: now,
            spec,
            driver_state: Driver {
                name: "overlay".into(),
                options,
            },
            ipam_options: IpamOptions {
                configs: vec![IpamConfig {
                    subnet: subnet.to_string(),
                    gateway: gateway.to_string(),
                    ip_range,
                }],
            },
        };
        self.networks.insert(id.clone(), network);
        Ok(Applied::Created(id))
    }

    fn remove_network(&mut self, id: &str) -> Result<Applied, StoreError> {
        let net = self.networks.get(id).ok_or_else(|| StoreError::NotFound {
            kind: "network",
            name: id.to_string(),
        })?;
        if net.spec.ingress {
            return Err(StoreError::precondition(
                format!("network {}", net.spec.name),
                "the ingress network can't be removed while the swarm uses it for published ports",
            ));
        }
        if let Some(s) = self
            .services
            .values()
            .find(|s| s.spec.task_template.networks.iter().any(|a| a.target == id))
        {
            return Err(StoreError::precondition(
                format!("network {}", net.spec.name),
                format!(
                    "it is in use by service {} ({}); remove the service first",
                    s.spec.name, s.id
                ),
            ));
        }
        if let Some(t) = self.tasks.values().find(|t| {
            !t.status.state.is_terminal()
                && t.networks_attachments.iter().any(|a| a.network_id == id)
        }) {
            return Err(StoreError::precondition(
                format!("network {}", net.spec.name),
                format!("task {} still uses it; retry once it has stopped", t.id),
            ));
        }
        let vni = net.vni();
        self.networks.remove(id);
        self.alloc()?.release_network(id, vni);
        Ok(Applied::Done)
    }

    /// Checks a spec against the cluster; returns the ids of the networks its tasks join
    /// (attached networks, then ingress when it publishes through the routing mesh).
    fn check_service_spec(&self, id: &str, spec: &ServiceSpec) -> Result<Vec<String>, StoreError> {
        validate_name("service", &spec.name)?;
        let object = format!("service {}", spec.name);
        if let Some(other) = self
            .services
            .values()
            .find(|s| s.spec.name == spec.name && s.id != id)
        {
            return Err(StoreError::NameTaken {
                kind: "service",
                name: spec.name.clone(),
                id: other.id.clone(),
            });
        }
        let tt = &spec.task_template;
        match tt.runtime {
            Runtime::Native if tt.container_spec.command.is_empty() => {
                return Err(StoreError::invalid(object, "a native task needs a command"));
            }
            Runtime::Docker if tt.container_spec.image.is_empty() => {
                return Err(StoreError::invalid(object, "an image is required"));
            }
            _ => {}
        }
        for c in &tt.placement.constraints {
            crate::scheduler::Constraint::parse(c)
                .map_err(|e| StoreError::invalid(object.clone(), e.to_string()))?;
        }
        check_deploy_settings(spec)
            .map_err(|reason| StoreError::invalid(object.clone(), reason))?;
        shoal_api::logs::Limits::from_driver(tt.log_driver.as_ref())
            .map_err(|reason| StoreError::invalid(object.clone(), reason))?;
        let ports = &spec.endpoint_spec.ports;
        let mut seen = BTreeSet::new();
        for p in ports {
            if p.target_port == 0 {
                return Err(StoreError::invalid(
                    object,
                    "target port 0 is out of range 1-65535",
                ));
            }
            if p.published_port != 0 && !seen.insert((p.protocol, p.published_port)) {
                return Err(StoreError::invalid(
                    object,
                    format!(
                        "published port {}/{} is listed twice",
                        p.published_port, p.protocol
                    ),
                ));
            }
        }
        if spec.endpoint_spec.mode == EndpointMode::Dnsrr && Self::uses_ingress(spec) {
            return Err(StoreError::invalid(
                object,
                "port published with ingress mode can't be used with dnsrr mode; use --publish mode=host or --endpoint-mode vip",
            ));
        }
        match spec.endpoint_spec.session_affinity.timeout_s() {
            Some(_) if spec.endpoint_spec.mode == EndpointMode::Dnsrr => {
                return Err(StoreError::invalid(
                    object,
                    "session affinity needs a VIP; use --endpoint-mode vip",
                ));
            }
            Some(t) if t == 0 || t > SessionAffinity::MAX_TIMEOUT_S => {
                return Err(StoreError::invalid(
                    object,
                    format!(
                        "session affinity timeout {t}s: give 1s to {}s",
                        SessionAffinity::MAX_TIMEOUT_S
                    ),
                ));
            }
            _ => {}
        }
        let mut nets = Vec::new();
        for a in &tt.networks {
            let net = self
                .networks
                .get(&a.target)
                .ok_or_else(|| StoreError::NotFound {
                    kind: "network",
                    name: a.target.clone(),
                })?;
            if net.spec.ingress {
                return Err(StoreError::invalid(
                    object,
                    "the ingress network can't be attached explicitly; publish a port instead",
                ));
            }
            if nets.contains(&net.id) {
                return Err(StoreError::invalid(
                    object,
                    format!("network {} is attached twice", net.spec.name),
                ));
            }
            nets.push(net.id.clone());
        }
        // Ingress-mode ports go through the routing mesh; host-mode ports are reached on
        // the task's ingress address too, so every publishing task joins ingress.
        if !spec.endpoint_spec.ports.is_empty() {
            let ingress = self.ingress().ok_or_else(|| {
                StoreError::precondition(object.clone(), "the swarm has no ingress network")
            })?;
            nets.push(ingress.id.clone());
        }
        Ok(nets)
    }

    /// Refuses a spec whose tasks could not all get an address, instead of leaving tasks
    /// stuck in pending (Swarm's silent failure).
    fn check_capacity(
        &self,
        spec: &ServiceSpec,
        nets: &[String],
        previous: Option<&Service>,
    ) -> Result<(), StoreError> {
        let replicas = match spec.mode {
            ServiceMode::Replicated { replicas } => replicas,
            ServiceMode::Global {} => self.nodes.len() as u64,
        };
        let alloc = self.alloc.as_ref().ok_or(StoreError::NotInitialized)?;
        for net_id in nets {
            let held_now = previous
                .map(|s| {
                    self.service_tasks(&s.id)
                        .filter(|t| !t.status.state.is_terminal())
                        .filter(|t| {
                            t.networks_attachments
                                .iter()
                                .any(|a| &a.network_id == net_id)
                        })
                        .count() as u64
                        + s.endpoint
                            .virtual_ips
                            .iter()
                            .filter(|v| &v.network_id == net_id)
                            .count() as u64
                })
                .unwrap_or(0);
            let vip = u64::from(spec.endpoint_spec.mode == EndpointMode::Vip);
            let needed = replicas + vip;
            let free = alloc.free_addresses(net_id) + held_now;
            if needed > free {
                let net = &self.networks[net_id];
                return Err(StoreError::Exhausted {
                    what: format!(
                        "network {} ({})",
                        net.spec.name,
                        alloc
                            .network_subnet(net_id)
                            .map(|s| s.to_string())
                            .unwrap_or_default()
                    ),
                    detail: format!(
                        "service {} needs {needed} addresses ({replicas} tasks{}) but only {free} are free; use a network with a larger --subnet or fewer replicas",
                        spec.name,
                        if vip == 1 { " + 1 VIP" } else { "" }
                    ),
                });
            }
        }
        Ok(())
    }

    fn service_names(&self) -> BTreeMap<String, String> {
        self.services
            .values()
            .map(|s| (s.id.clone(), s.spec.name.clone()))
            .collect()
    }

    fn create_service(
        &mut self,
        version: Version,
        id: String,
        mut spec: ServiceSpec,
        now: String,
    ) -> Result<Applied, StoreError> {
        self.record()?;
        self.resolve_file_refs(
            &spec.name,
            &mut spec.task_template.container_spec,
            &Default::default(),
        )?;
        let nets = self.check_service_spec(&id, &spec)?;
        self.check_capacity(&spec, &nets, None)?;
        let endpoint = self.allocate_endpoint(&id, &spec, &nets, None)?;
        let service = Service {
            id: id.clone(),
            version,
            created_at: now.clone(),
            updated_at: now,
            spec,
            previous_spec: None,
            endpoint,
            update_status: None,
            spec_version: version,
        };
        self.services.insert(id.clone(), service);
        Ok(Applied::Created(id))
    }

    /// Ports and VIPs for a spec; on failure nothing stays allocated.
    fn allocate_endpoint(
        &mut self,
        id: &str,
        spec: &ServiceSpec,
        nets: &[String],
        previous: Option<&Endpoint>,
    ) -> Result<Endpoint, StoreError> {
        let names = self.service_names();
        let net_names: BTreeMap<String, String> = self
            .networks
            .values()
            .map(|n| (n.id.clone(), n.spec.name.clone()))
            .collect();
        let self_ingress = self.ingress().map(|n| n.id.clone());
        let alloc = self.alloc()?;
        let mut undo = Undo::default();
        let result = (|| {
            let keep = previous.map(|e| e.ports.as_slice()).unwrap_or(&[]);
            let ports = alloc.allocate_ports(
                id,
                &spec.name,
                &spec.endpoint_spec.ports,
                keep,
                &names,
                &mut undo,
            )?;
            let mut vips = Vec::new();
            if spec.endpoint_spec.mode == EndpointMode::Vip {
                let ingress = self_ingress.as_deref();
                // Host-mode ports alone need no VIP on ingress.
                let wants_ingress_vip = ClusterState::uses_ingress(spec);
                for net in nets
                    .iter()
                    .filter(|n| wants_ingress_vip || Some(n.as_str()) != ingress)
                {
                    let kept =
                        previous.and_then(|e| e.virtual_ips.iter().find(|v| &v.network_id == net));
                    let addr = match kept {
                        Some(v) => v.addr.clone(),
                        None => alloc.allocate_address(net, &net_names[net], &mut undo)?,
                    };
                    vips.push(VirtualIp {
                        network_id: net.clone(),
                        addr,
                    });
                }
            }
            Ok(Endpoint {
                spec: spec.endpoint_spec.clone(),
                ports,
                virtual_ips: vips,
            })
        })();
        if result.is_err() {
            alloc.rollback(undo);
        }
        result
    }

    fn update_service(
        &mut self,
        version: Version,
        id: &str,
        expected: u64,
        spec: ServiceSpec,
        now: String,
    ) -> Result<Applied, StoreError> {
        let current = lookup(&self.services, id)?.clone();
        if current.version.index != expected {
            return Err(StoreError::VersionMismatch {
                object: format!("service {}", current.spec.name),
                expected,
                actual: current.version.index,
            });
        }
        let tasks_change = self.replace_spec(version, &current, spec, &now)?;
        let service = self.services.get_mut(&current.id).expect("looked up");
        service.previous_spec = Some(current.spec);
        if tasks_change {
            service.spec_version = version;
            service.update_status = Some(UpdateStatus {
                state: "updating".into(),
                started_at: now,
                completed_at: String::new(),
                message: "update in progress".into(),
            });
        }
        Ok(Applied::Done)
    }

    /// Rolls a service back to its previous spec: by request (`manual`: the current spec
    /// becomes the previous one, as `docker service rollback` does) or because its update
    /// failed (the previous spec is then forgotten, as swarmkit does).
    fn rollback_service(
        &mut self,
        version: Version,
        id: &str,
        now: &str,
        manual: bool,
        message: &str,
    ) -> Result<Applied, StoreError> {
        let current = lookup(&self.services, id)?.clone();
        let Some(previous) = current.previous_spec.clone() else {
            return Err(StoreError::NoPreviousSpec {
                service: current.spec.name,
            });
        };
        let nets: BTreeSet<String> = self
            .check_service_spec(&current.id, &previous)
            .map_err(|e| {
                StoreError::precondition(
                    format!("service {}", current.spec.name),
                    format!("its previous spec can't be restored: {e}"),
                )
            })?
            .into_iter()
            .collect();
        let template = previous.task_template.clone();
        let tasks_change = self.replace_spec(version, &current, previous, now)?;
        // Tasks still running the spec rolled back to stay: the service takes their spec
        // version back (swarmkit's PreviousSpecVersion), so only the updated ones go.
        let kept_version = self
            .service_tasks(&current.id)
            .filter(|t| !t.status.state.is_terminal() && t.desired_state <= TaskState::Running)
            .filter(|t| {
                t.spec == template
                    && t.networks_attachments
                        .iter()
                        .map(|a| a.network_id.clone())
                        .collect::<BTreeSet<_>>()
                        == nets
            })
            .map(|t| t.spec_version)
            .max_by_key(|v| v.index);
        let service = self.services.get_mut(&current.id).expect("looked up");
        service.previous_spec = manual.then_some(current.spec);
        if tasks_change {
            service.spec_version = kept_version.unwrap_or(version);
        }
        service.update_status = Some(UpdateStatus {
            state: "rollback_started".into(),
            started_at: now.to_string(),
            completed_at: String::new(),
            message: message.to_string(),
        });
        Ok(Applied::Done)
    }

    /// Checks `spec` against the cluster, reallocates the endpoint for it and makes it the
    /// service's spec. Returns whether its tasks must be replaced (task template or
    /// networks changed). Nothing changes on refusal.
    fn replace_spec(
        &mut self,
        version: Version,
        current: &Service,
        mut spec: ServiceSpec,
        now: &str,
    ) -> Result<bool, StoreError> {
        self.resolve_file_refs(
            &current.spec.name,
            &mut spec.task_template.container_spec,
            &Default::default(),
        )?;
        if matches!(current.spec.mode, ServiceMode::Global {})
            != matches!(spec.mode, ServiceMode::Global {})
        {
            return Err(StoreError::invalid(
                format!("service {}", current.spec.name),
                "the service mode can't be changed; remove and create the service again",
            ));
        }
        let nets = self.check_service_spec(&current.id, &spec)?;
        self.check_capacity(&spec, &nets, Some(current))?;
        // Tasks join a network only when they are made: a changed set of networks
        // (publishing the first port joins ingress) replaces them.
        let old_nets: BTreeSet<String> = self
            .check_service_spec(&current.id, &current.spec)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let nets_changed = old_nets != nets.iter().cloned().collect::<BTreeSet<_>>();
        // Release first what the new spec no longer holds (ports removed, VIPs of detached
        // networks); allocate_endpoint keeps what stays and reuses dynamic port numbers.
        let old = current.endpoint.clone();
        let alloc = self.alloc()?;
        alloc.release_ports(&current.id, &old.ports);
        let endpoint = match self.allocate_endpoint(&current.id, &spec, &nets, Some(&old)) {
            Ok(e) => e,
            Err(e) => {
                // Put the old ports back exactly as they were.
                let names = self.service_names();
                let alloc = self.alloc()?;
                let mut undo = Undo::default();
                let _ = alloc.allocate_ports(
                    &current.id,
                    &current.spec.name,
                    &old.ports,
                    &[],
                    &names,
                    &mut undo,
                );
                return Err(e);
            }
        };
        let alloc = self.alloc()?;
        for v in &old.virtual_ips {
            if !endpoint.virtual_ips.contains(v) {
                alloc.release_address(&v.network_id, &v.addr);
            }
        }
        let task_changed = spec.task_template != current.spec.task_template;
        let service = self.services.get_mut(&current.id).expect("looked up");
        service.spec = spec;
        service.endpoint = endpoint;
        service.version = version;
        service.updated_at = now.to_string();
        Ok(task_changed || nets_changed)
    }

    fn remove_service(
        &mut self,
        version: Version,
        id: &str,
        now: &str,
    ) -> Result<Applied, StoreError> {
        let service = lookup(&self.services, id)?.clone();
        self.services.remove(&service.id);
        self.registry_auth.remove(&service.id);
        let alloc = self.alloc()?;
        alloc.release_ports(&service.id, &service.endpoint.ports);
        for v in &service.endpoint.virtual_ips {
            alloc.release_address(&v.network_id, &v.addr);
        }
        let ids: Vec<String> = self
            .service_tasks(&service.id)
            .map(|t| t.id.clone())
            .collect();
        for tid in ids {
            self.apply_task_op(
                version,
                TaskOp::SetDesired {
                    id: tid,
                    state: TaskState::Shutdown,
                },
                now,
            );
        }
        Ok(Applied::Done)
    }

    /// Task ops come from the leader's loops and from agents' reports; a stale or repeated
    /// op is ignored rather than refused so that one late report can't fail a whole batch.
    fn apply_task_op(&mut self, version: Version, op: TaskOp, now: &str) {
        match op {
            TaskOp::Create(task) => self.create_task(version, *task, now),
            TaskOp::Assign { id, node_id } => {
                if let Some(t) = self.tasks.get_mut(&id)
                    && t.node_id.is_empty()
                    && t.status.state.can_move_to(TaskState::Assigned)
                {
                    t.node_id = node_id;
                    t.status = status(TaskState::Assigned, "assigned", now);
                    t.version = version;
                    t.updated_at = now.to_string();
                }
            }
            TaskOp::SetDesired { id, state } => {
                if let Some(t) = self.tasks.get_mut(&id) {
                    if state > t.desired_state {
                        t.desired_state = state;
                        t.version = version;
                        t.updated_at = now.to_string();
                    }
                    // A task no node ever took can be stopped right here.
                    if state >= TaskState::Shutdown
                        && t.node_id.is_empty()
                        && !t.status.state.is_terminal()
                    {
                        t.status =
                            status(TaskState::Shutdown, "shutdown before it was scheduled", now);
                        self.release_task(&id);
                    }
                }
            }
            TaskOp::Status { id, status: st } => {
                if let Some(t) = self.tasks.get_mut(&id)
                    && status_changes(&t.status, &st)
                {
                    let terminal = st.state.is_terminal();
                    let running = st.state == TaskState::Running;
                    t.status = st;
                    t.version = version;
                    t.updated_at = now.to_string();
                    if running {
                        self.task_times.entry(id.clone()).or_default().running_at = now.to_string();
                    }
                    if terminal {
                        self.task_times.entry(id.clone()).or_default().ended_at = now.to_string();
                        self.release_task(&id);
                    }
                }
            }
            TaskOp::Delete { id } => {
                self.task_times.remove(&id);
                if self
                    .tasks
                    .get(&id)
                    .is_some_and(|t| !t.status.state.is_terminal())
                {
                    self.release_task(&id);
                }
                self.tasks.remove(&id);
            }
            TaskOp::ServiceUpdateStatus { service_id, status } => {
                if let Some(s) = self.services.get_mut(&service_id) {
                    s.update_status = status;
                }
            }
            TaskOp::Rollback {
                service_id,
                from,
                message,
            } => {
                let Some(service) = self.services.get(&service_id) else {
                    return;
                };
                let updating = service
                    .update_status
                    .as_ref()
                    .is_some_and(|u| u.state == "updating");
                if service.spec_version != from || !updating {
                    return;
                }
                if let Err(e) = self.rollback_service(version, &service_id, now, false, &message)
                    && let Some(u) = self
                        .services
                        .get_mut(&service_id)
                        .and_then(|s| s.update_status.as_mut())
                {
                    u.state = "paused".into();
                    u.message = format!("{message}; the rollback failed: {e}");
                }
            }
        }
    }

    fn create_task(&mut self, version: Version, mut task: Task, now: &str) {
        if self.tasks.contains_key(&task.id) {
            return;
        }
        let Some(service) = self.services.get(&task.service_id) else {
            return;
        };
        let nets = self
            .check_service_spec(&service.id, &service.spec)
            .unwrap_or_default();
        let aliases: BTreeMap<String, Vec<String>> = service
            .spec
            .task_template
            .networks
            .iter()
            .map(|a| (a.target.clone(), a.aliases.clone()))
            .collect();
        let names: BTreeMap<String, String> = self
            .networks
            .values()
            .map(|n| (n.id.clone(), n.spec.name.clone()))
            .collect();
        task.version = version;
        task.created_at = now.to_string();
        task.updated_at = now.to_string();
        let Some(alloc) = self.alloc.as_mut() else {
            return;
        };
        let mut undo = Undo::default();
        let mut attachments = Vec::new();
        let mut failure = None;
        for net in &nets {
            match alloc.allocate_address(net, &names[net], &mut undo) {
                Ok(addr) => attachments.push(NetworkAttachment {
                    network_id: net.clone(),
                    addresses: vec![addr],
                    aliases: aliases.get(net).cloned().unwrap_or_default(),
                }),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failure {
            alloc.rollback(undo);
            task.status = TaskStatus {
                timestamp: now.to_string(),
                state: TaskState::Rejected,
                message: "address allocation failed".into(),
                err: e.to_string(),
                container_status: None,
            };
        } else {
            task.networks_attachments = attachments;
            task.status = if task.node_id.is_empty() {
                status(TaskState::Pending, "pending task scheduling", now)
            } else {
                status(TaskState::Assigned, "assigned", now)
            };
        }
        self.tasks.insert(task.id.clone(), task);
    }

    /// Frees a task's addresses when it stops (serial allocation keeps them from coming back
    /// at once).
    fn release_task(&mut self, id: &str) {
        let Some(t) = self.tasks.get(id) else { return };
        let attachments = t.networks_attachments.clone();
        if let Some(alloc) = self.alloc.as_mut() {
            for a in &attachments {
                for addr in &a.addresses {
                    alloc.release_address(&a.network_id, addr);
                }
            }
        }
    }
}

/// Resources, placement, restart and update settings that make no sense, refused with the
/// field (Docker's name) and the flag that sets it.
/// Replicas one service may ask for. Each is a task the leader allocates an address for
/// and proposes at once; without a bound one `--replicas 100000000` would take every
/// manager's memory. Far above what any one service of a real cluster runs.
pub const MAX_REPLICAS: u64 = 100_000;

fn check_deploy_settings(spec: &ServiceSpec) -> Result<(), String> {
    if let ServiceMode::Replicated { replicas } = spec.mode
        && replicas > MAX_REPLICAS
    {
        return Err(format!(
            "{replicas} replicas is more than a service may have ({MAX_REPLICAS}); split it into several services"
        ));
    }
    let tt = &spec.task_template;
    let (limits, reservations) = (&tt.resources.limits, &tt.resources.reservations);
    let amounts = [
        ("Limits.NanoCPUs", "--limit-cpu", limits.nano_cpus, true),
        (
            "Limits.MemoryBytes",
            "--limit-memory",
            limits.memory_bytes,
            false,
        ),
        (
            "Reservations.NanoCPUs",
            "--reserve-cpu",
            reservations.nano_cpus,
            true,
        ),
        (
            "Reservations.MemoryBytes",
            "--reserve-memory",
            reservations.memory_bytes,
            false,
        ),
    ];
    for (field, flag, value, cpu) in amounts {
        let shown = if cpu { cpus(value) } else { value.to_string() };
        if value < 0 {
            return Err(format!(
                "Resources.{field} ({flag}) is {shown}; it can't be negative"
            ));
        }
        // swarmkit's minimums: a thousandth of a CPU, 4 MiB.
        if cpu && value != 0 && value < 1_000_000 {
            return Err(format!(
                "Resources.{field} ({flag}) is {shown} CPUs; give at least 0.001"
            ));
        }
        if !cpu && value != 0 && value < 4 << 20 {
            return Err(format!(
                "Resources.{field} ({flag}) is {value} bytes; give at least 4MiB"
            ));
        }
    }
    if limits.pids < 0 {
        return Err(format!(
            "Resources.Limits.Pids (--limit-pids) is {}; it can't be negative",
            limits.pids
        ));
    }
    if limits.nano_cpus > 0 && reservations.nano_cpus > limits.nano_cpus {
        return Err(format!(
            "Resources.Reservations.NanoCPUs (--reserve-cpu {}) is above Resources.Limits.NanoCPUs (--limit-cpu {}); reserve at most the limit",
            cpus(reservations.nano_cpus),
            cpus(limits.nano_cpus)
        ));
    }
    if limits.memory_bytes > 0 && reservations.memory_bytes > limits.memory_bytes {
        return Err(format!(
            "Resources.Reservations.MemoryBytes (--reserve-memory {}) is above Resources.Limits.MemoryBytes (--limit-memory {}); reserve at most the limit",
            reservations.memory_bytes, limits.memory_bytes
        ));
    }
    let placement = &tt.placement;
    if placement.max_replicas > 0 && matches!(spec.mode, ServiceMode::Global {}) {
        return Err(
            "Placement.MaxReplicas (--replicas-max-per-node) applies to replicated services only"
                .into(),
        );
    }
    for p in &placement.preferences {
        let d = &p.spread.spread_descriptor;
        if crate::scheduler::spread_attribute(d).is_none() {
            return Err(format!(
                "Placement.Preferences (--placement-pref spread={d}): spread over node.labels.KEY or a node attribute (node.hostname, node.role, node.platform.os, ...)"
            ));
        }
    }
    for (name, flag, config) in [
        ("UpdateConfig", "--update", Some(&spec.update_config)),
        (
            "RollbackConfig",
            "--rollback",
            spec.rollback_config.as_ref(),
        ),
    ] {
        let Some(config) = config else { continue };
        let ratio = config.max_failure_ratio.0;
        if !(0.0..=1.0).contains(&ratio) {
            return Err(format!(
                "{name}.MaxFailureRatio ({flag}-max-failure-ratio) is {ratio}; give a value from 0 to 1"
            ));
        }
    }
    if spec
        .rollback_config
        .as_ref()
        .is_some_and(|c| c.failure_action == FailureAction::Rollback)
    {
        return Err(
            "RollbackConfig.FailureAction (--rollback-failure-action) can't be rollback; use pause or continue"
                .into(),
        );
    }
    Ok(())
}

/// Nano-CPUs as CPUs, like Docker prints them: 1500000000 is "1.5".
pub(crate) fn cpus(nano: i64) -> String {
    let s = format!("{:.9}", nano as f64 / 1e9);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The only node of a state being initialised.
fn node_id_of(nodes: &BTreeMap<String, Node>) -> String {
    nodes.keys().next().cloned().unwrap_or_default()
}

/// Node label where a node's gRPC address is kept from its join until it is promoted.
pub const GRPC_ADDR_LABEL: &str = "com.shoal.grpc-addr";

pub(crate) fn status(state: TaskState, message: &str, now: &str) -> TaskStatus {
    TaskStatus {
        timestamp: now.to_string(),
        state,
        message: message.to_string(),
        err: String::new(),
        container_status: None,
    }
}

fn parse_pools(pools: &[String]) -> Result<Vec<Ipv4Net>, StoreError> {
    pools
        .iter()
        .map(|p| {
            p.parse::<Ipv4Net>().map_err(|_| {
                StoreError::invalid(
                    "default address pool",
                    format!("{p:?} is not an IPv4 CIDR like 10.0.0.0/8"),
                )
            })
        })
        .collect()
}

/// Docker's rule for object names: letters, digits, `_`, `.`, `-`, not starting with `-`/`.`.
fn validate_name(kind: &str, name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid(
            format!("{kind} name {name:?}"),
            "use 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit",
        ))
    }
}

/// Whether applying `next` over `current` changes the task: a move forward, or the same
/// state with news (why a task is pending, how far its image pull has come). The dispatcher
/// drops reports that change nothing before they cost a raft entry.
pub fn status_changes(current: &TaskStatus, next: &TaskStatus) -> bool {
    let pending_message = next.state == current.state
        && (next.state < TaskState::Assigned || next.state == TaskState::Preparing)
        && (next.message != current.message || next.err != current.err);
    current.state.can_move_to(next.state) || pending_message
}
