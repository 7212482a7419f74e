//! Building a service spec from `service create` flags and changing one for `service update`.
//! Pure: networks arrive already resolved to ids, so every rule here is unit-tested.

use super::options::SpecEdits;
use crate::publish::{PortMatch, PublishError, parse_publish, parse_publish_rm, port_label};
use shoal_api::control::ServiceView;
use shoal_api::objects::*;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("replicas can only be used with replicated mode")]
    ReplicasWithGlobal,
    #[error("scale can only be used with replicated mode")]
    ScaleGlobal,
    #[error("invalid {flag} {value:?}: {reason}")]
    BadValue {
        flag: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(
        "{0} applies to containers only; a native task runs on the host's own filesystem and without limits"
    )]
    ContainerOnly(&'static str),
    #[error("invalid --constraint {0:?}: use KEY==VALUE or KEY!=VALUE (e.g. node.role==manager)")]
    BadConstraint(String),
    #[error(
        "port {port} is published twice (targets {first} and {second}); publish each port once"
    )]
    DuplicatePort {
        port: String,
        first: u16,
        second: u16,
    },
    #[error(
        "port {port} is already published to target port {target}; remove it first with --publish-rm {published}"
    )]
    PortTaken {
        port: String,
        target: u16,
        published: u16,
    },
    #[error(
        "--endpoint-mode dnsrr cannot be used with ingress port {0}; publish it with mode=host or use --endpoint-mode vip"
    )]
    DnsrrIngress(String),
    #[error("--session-affinity client-ip needs a VIP; use --endpoint-mode vip")]
    AffinityDnsrr,
    #[error(
        "--session-affinity-timeout {0}: give whole seconds from 1s to 24h (Kubernetes' limits)"
    )]
    AffinityTimeout(String),
    #[error("--session-affinity-timeout without affinity: add --session-affinity client-ip")]
    AffinityTimeoutAlone,
    #[error("--publish-rm {0:?}: the service publishes no such port")]
    NoSuchPort(String),
    #[error("service is already attached to network {0}")]
    AlreadyAttached(String),
    #[error("--network-rm {0:?}: the service is not attached to this network")]
    NotAttached(String),
    #[error("--image cannot be used with a native service; change its command with --args")]
    ImageOnNative,
    #[error("missing {0}")]
    Missing(&'static str),
    #[error(
        "{field}: {reason}; service templates use {{{{.Service.Name}}}}, {{{{.Task.Slot}}}} and the like"
    )]
    Template { field: &'static str, reason: String },
    #[error("the {0} reservation is above its limit; lower --reserve-{0} or raise --limit-{0}")]
    ReservationOverLimit(&'static str),
    #[error("--replicas-max-per-node applies to replicated services only")]
    MaxReplicasGlobal,
    #[error(
        "volume {0:?}: a native task gets a local directory for a volume and takes no volume driver or driver options; drop them or run the service as a container"
    )]
    NativeVolumeDriver(String),
    /// A secret or config reference that breaks Docker's rules (`shoal_api::secrets`).
    #[error("{0}")]
    Files(String),
    #[error("--{kind}-rm {name}: the service has no {kind} {name}")]
    NotReferenced { kind: &'static str, name: String },
}

/// Docker's `--stop-grace-period` default, 10s. `ContainerSpec::default()` has 0.
pub const DEFAULT_STOP_GRACE: u64 = 10_000_000_000;

/// A `--network` value: a name (or id) with optional aliases (`name=NET,alias=A`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRef {
    pub name: String,
    pub aliases: Vec<String>,
}

pub fn parse_network(flag: &'static str, value: &str) -> Result<NetworkRef, SpecError> {
    let bad = |reason| SpecError::BadValue {
        flag,
        value: value.to_string(),
        reason,
    };
    let value = value.trim();
    if value.is_empty() {
        return Err(bad("empty network name"));
    }
    if !value.contains('=') {
        return Ok(NetworkRef {
            name: value.to_string(),
            aliases: vec![],
        });
    }
    let mut net = NetworkRef {
        name: String::new(),
        aliases: vec![],
    };
    for field in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        match field.split_once('=') {
            Some((k, v)) if !v.trim().is_empty() => match k.trim().to_ascii_lowercase().as_str() {
                "name" | "target" => net.name = v.trim().to_string(),
                "alias" => net.aliases.push(v.trim().to_string()),
                _ => return Err(bad("unknown key (use name=NETWORK,alias=ALIAS)")),
            },
            _ => return Err(bad("use name=NETWORK,alias=ALIAS")),
        }
    }
    if net.name.is_empty() {
        return Err(bad("missing name=NETWORK"));
    }
    Ok(net)
}

/// `KEY=VALUE`, or `KEY` taking its value from the CLI's environment as Docker does (left as
/// `KEY` when unset).
pub fn parse_env(
    flag: &'static str,
    value: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, SpecError> {
    if value.is_empty() || value.starts_with('=') {
        return Err(SpecError::BadValue {
            flag,
            value: value.to_string(),
            reason: "missing variable name (use KEY=VALUE)",
        });
    }
    if value.contains('=') {
        return Ok(value.to_string());
    }
    Ok(match lookup(value) {
        Some(v) => format!("{value}={v}"),
        None => value.to_string(),
    })
}

fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

/// `KEY=VALUE` or `KEY` (empty value).
pub fn parse_label(flag: &'static str, value: &str) -> Result<(String, String), SpecError> {
    let (k, v) = value.split_once('=').unwrap_or((value, ""));
    if k.trim().is_empty() {
        return Err(SpecError::BadValue {
            flag,
            value: value.to_string(),
            reason: "missing label key (use KEY=VALUE)",
        });
    }
    Ok((k.trim().to_string(), v.to_string()))
}

pub fn check_constraint(expr: &str) -> Result<String, SpecError> {
    let expr = expr.trim();
    let ok = ["==", "!="].iter().any(|op| {
        expr.split_once(op)
            .is_some_and(|(k, v)| !k.trim().is_empty() && !v.trim().is_empty())
    });
    if ok {
        Ok(expr.to_string())
    } else {
        Err(SpecError::BadConstraint(expr.to_string()))
    }
}

/// Rejects a published port given twice and ingress ports under dnsrr.
pub fn check_ports(mode: EndpointMode, ports: &[PortConfig]) -> Result<(), SpecError> {
    for (i, p) in ports.iter().enumerate() {
        if mode == EndpointMode::Dnsrr && p.publish_mode == PublishMode::Ingress {
            return Err(SpecError::DnsrrIngress(port_label(
                p.target_port,
                p.protocol,
            )));
        }
        if p.published_port == 0 {
            continue;
        }
        if let Some(q) = ports[..i]
            .iter()
            .find(|q| q.published_port == p.published_port && q.protocol == p.protocol)
        {
            return Err(SpecError::DuplicatePort {
                port: port_label(p.published_port, p.protocol),
                first: q.target_port,
                second: p.target_port,
            });
        }
    }
    Ok(())
}

/// `--session-affinity` (client-ip: true, none: false) and `--session-affinity-timeout`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AffinityFlags {
    pub client_ip: Option<bool>,
    pub timeout_ns: Option<u64>,
}

/// The affinity `flags` make of `current` (create: none) for a service in `mode`.
pub fn session_affinity(
    current: SessionAffinity,
    flags: AffinityFlags,
    mode: EndpointMode,
) -> Result<SessionAffinity, SpecError> {
    let timeout = |ns: u64| {
        let s = ns / 1_000_000_000;
        if !ns.is_multiple_of(1_000_000_000)
            || s == 0
            || s > u64::from(SessionAffinity::MAX_TIMEOUT_S)
        {
            return Err(SpecError::AffinityTimeout(crate::duration::format_nanos(
                ns,
            )));
        }
        Ok(s as u32)
    };
    let next = match (flags.client_ip, flags.timeout_ns, current) {
        (Some(false), Some(_), _) => return Err(SpecError::AffinityTimeoutAlone),
        (Some(false), None, _) => SessionAffinity::None,
        (Some(true), Some(ns), _) | (None, Some(ns), SessionAffinity::ClientIp { .. }) => {
            SessionAffinity::ClientIp {
                timeout_s: timeout(ns)?,
            }
        }
        (None, Some(_), SessionAffinity::None) => return Err(SpecError::AffinityTimeoutAlone),
        (Some(true), None, SessionAffinity::ClientIp { timeout_s }) => {
            SessionAffinity::ClientIp { timeout_s }
        }
        (Some(true), None, SessionAffinity::None) => SessionAffinity::ClientIp {
            timeout_s: SessionAffinity::DEFAULT_TIMEOUT_S,
        },
        (None, None, current) => current,
    };
    if mode == EndpointMode::Dnsrr && !next.is_none() {
        return Err(SpecError::AffinityDnsrr);
    }
    Ok(next)
}

/// The `service create` flags that shape the spec, as plain values.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub name: String,
    pub replicas: Option<u64>,
    pub global: bool,
    pub native: bool,
    pub args: Vec<String>,
    pub networks: Vec<String>,
    pub publish: Vec<String>,
    pub endpoint_mode: Option<EndpointMode>,
    pub affinity: AffinityFlags,
    pub stop_grace_period: Option<u64>,
    pub constraints: Vec<String>,
    pub env: Vec<String>,
    pub labels: Vec<String>,
    pub update_parallelism: Option<u64>,
    pub update_delay: Option<u64>,
    pub update_order: Option<UpdateOrder>,
    pub restart_condition: Option<RestartCondition>,
    pub restart_delay: Option<u64>,
    pub restart_max_attempts: Option<u64>,
    /// Container, resource and rollout options, shared with `service update`.
    pub edits: SpecEdits,
}

/// `--limit-memory`: a size, at least Docker's minimum of 6 MiB, or 0 for no limit.
pub fn parse_memory_limit(value: &str) -> Result<i64, SpecError> {
    let bytes = super::options::parse_bytes("--limit-memory", value)?;
    // Docker refuses less than 6 MiB; so do we, before a task fails for it.
    if bytes != 0 && bytes < 6 * 1024 * 1024 {
        return Err(SpecError::BadValue {
            flag: "--limit-memory",
            value: value.to_string(),
            reason: "the minimum is 6M (0 for no limit)",
        });
    }
    Ok(bytes)
}

/// A checked `service create`: the spec without networks, and the networks to resolve.
#[derive(Debug, Clone, PartialEq)]
pub struct CreatePlan {
    pub spec: ServiceSpec,
    pub networks: Vec<NetworkRef>,
}

pub fn create_plan(
    o: &CreateOptions,
    lookup_env: &dyn Fn(&str) -> Option<String>,
) -> Result<CreatePlan, SpecError> {
    let mode = match (o.global, o.replicas) {
        (true, Some(_)) => return Err(SpecError::ReplicasWithGlobal),
        (true, None) => ServiceMode::Global {},
        (false, r) => ServiceMode::Replicated {
            replicas: r.unwrap_or(1),
        },
    };
    let (first, rest) = o.args.split_first().ok_or(SpecError::Missing(if o.native {
        "COMMAND"
    } else {
        "IMAGE"
    }))?;
    let mut container_spec = ContainerSpec::default();
    if o.native {
        container_spec.command = o.args.clone();
    } else {
        container_spec.image = first.clone();
        container_spec.args = rest.to_vec();
    }
    container_spec.env = o
        .env
        .iter()
        .map(|e| parse_env("--env", e, lookup_env))
        .collect::<Result<_, _>>()?;
    container_spec.stop_grace_period = o.stop_grace_period.unwrap_or(DEFAULT_STOP_GRACE);
    let mut ports = Vec::new();
    for p in &o.publish {
        ports.extend(parse_publish("publish", p)?);
    }
    let endpoint_mode = o.endpoint_mode.unwrap_or_default();
    check_ports(endpoint_mode, &ports)?;
    let session_affinity = session_affinity(SessionAffinity::None, o.affinity, endpoint_mode)?;
    let constraints = o
        .constraints
        .iter()
        .map(|c| check_constraint(c))
        .collect::<Result<_, _>>()?;
    let labels = o
        .labels
        .iter()
        .map(|l| parse_label("--label", l))
        .collect::<Result<_, _>>()?;
    let networks = o
        .networks
        .iter()
        .map(|n| parse_network("--network", n))
        .collect::<Result<_, _>>()?;
    let mut restart_policy = RestartPolicy::default();
    if let Some(c) = o.restart_condition {
        restart_policy.condition = c;
    }
    if let Some(d) = o.restart_delay {
        restart_policy.delay = d;
    }
    if let Some(m) = o.restart_max_attempts {
        restart_policy.max_attempts = m;
    }
    let mut update_config = UpdateConfig::default();
    if let Some(p) = o.update_parallelism {
        update_config.parallelism = p;
    }
    if let Some(d) = o.update_delay {
        update_config.delay = d;
    }
    if let Some(order) = o.update_order {
        update_config.order = order;
    }
    let spec = ServiceSpec {
        name: o.name.clone(),
        labels,
        task_template: TaskSpec {
            container_spec,
            runtime: if o.native {
                Runtime::Native
            } else {
                Runtime::Docker
            },
            placement: Placement {
                constraints,
                ..Default::default()
            },
            networks: vec![],
            restart_policy,
            resources: ResourceRequirements::default(),
            log_driver: None,
            force_update: 0,
        },
        mode,
        update_config,
        rollback_config: None,
        endpoint_spec: EndpointSpec {
            mode: endpoint_mode,
            ports,
            session_affinity,
        },
    };
    let mut spec = spec;
    o.edits.apply(&mut spec)?;
    check_templates(&spec)?;
    Ok(CreatePlan { spec, networks })
}

/// Refuses a malformed service template in any field the agent expands, before anything
/// is sent.
pub fn check_templates(spec: &ServiceSpec) -> Result<(), SpecError> {
    shoal_api::template::check_container_spec(&spec.task_template.container_spec).map_err(
        |(field, e)| SpecError::Template {
            field: field.flag(),
            reason: e.to_string(),
        },
    )
}

/// Network attachments with names replaced by the resolved ids.
pub fn attachments(
    networks: &[NetworkRef],
    ids: &BTreeMap<String, String>,
) -> Vec<NetworkAttachmentConfig> {
    let mut out: Vec<NetworkAttachmentConfig> = Vec::new();
    for n in networks {
        let target = ids.get(&n.name).cloned().unwrap_or_else(|| n.name.clone());
        match out.iter_mut().find(|a| a.target == target) {
            Some(a) => a.aliases.extend(n.aliases.iter().cloned()),
            None => out.push(NetworkAttachmentConfig {
                target,
                aliases: n.aliases.clone(),
            }),
        }
    }
    out
}

/// The `service update` flags, parsed and checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateOps {
    pub replicas: Option<u64>,
    pub image: Option<String>,
    pub args: Option<Vec<String>>,
    pub env_add: Vec<String>,
    pub env_rm: Vec<String>,
    pub publish_add: Vec<PortConfig>,
    pub publish_rm: Vec<(String, PortMatch)>,
    pub network_add: Vec<NetworkRef>,
    pub network_rm: Vec<String>,
    pub constraint_add: Vec<String>,
    pub constraint_rm: Vec<String>,
    pub endpoint_mode: Option<EndpointMode>,
    pub affinity: AffinityFlags,
    pub stop_grace_period: Option<u64>,
    pub update_parallelism: Option<u64>,
    pub update_delay: Option<u64>,
    pub update_order: Option<UpdateOrder>,
    pub restart_condition: Option<RestartCondition>,
    pub restart_delay: Option<u64>,
    pub restart_max_attempts: Option<u64>,
    pub force: bool,
    pub label_add: Vec<(String, String)>,
    pub label_rm: Vec<String>,
    /// Container, resource and rollout options, shared with `service create`.
    pub edits: SpecEdits,
}

/// The raw `service update` flag values that need parsing.
#[derive(Debug, Clone, Default)]
pub struct UpdateFlags<'a> {
    pub args: Option<&'a str>,
    pub env_add: &'a [String],
    pub publish_add: &'a [String],
    pub publish_rm: &'a [String],
    pub network_add: &'a [String],
    pub constraint_add: &'a [String],
    pub label_add: &'a [String],
}

impl UpdateOps {
    /// Parses the flag values of `flags` into `self`, failing on the first bad one.
    pub fn parse(
        mut self,
        flags: &UpdateFlags<'_>,
        lookup_env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<UpdateOps, SpecError> {
        if let Some(args) = flags.args {
            self.args = Some(args.split_whitespace().map(String::from).collect());
        }
        for e in flags.env_add {
            self.env_add.push(parse_env("--env-add", e, lookup_env)?);
        }
        for p in flags.publish_add {
            self.publish_add.extend(parse_publish("publish-add", p)?);
        }
        for p in flags.publish_rm {
            self.publish_rm.push((p.clone(), parse_publish_rm(p)?));
        }
        for n in flags.network_add {
            self.network_add.push(parse_network("--network-add", n)?);
        }
        for c in flags.constraint_add {
            self.constraint_add.push(check_constraint(c)?);
        }
        for l in flags.label_add {
            self.label_add.push(parse_label("--label-add", l)?);
        }
        Ok(self)
    }

    /// Network names that must be resolved to ids before `apply`.
    pub fn network_names(&self) -> impl Iterator<Item = &str> {
        self.network_add
            .iter()
            .map(|n| n.name.as_str())
            .chain(self.network_rm.iter().map(String::as_str))
    }
}

/// The published port each spec port has now: its own, or the one allocated for it when the
/// spec asked for a dynamic port.
pub fn effective_published(spec: &[PortConfig], allocated: &[PortConfig]) -> Vec<u16> {
    let explicit: Vec<(u16, Protocol)> = spec
        .iter()
        .filter(|p| p.published_port != 0)
        .map(|p| (p.published_port, p.protocol))
        .collect();
    let mut used = vec![false; allocated.len()];
    spec.iter()
        .map(|p| {
            if p.published_port != 0 {
                return p.published_port;
            }
            let found = allocated.iter().enumerate().position(|(i, a)| {
                !used[i]
                    && a.target_port == p.target_port
                    && a.protocol == p.protocol
                    && a.publish_mode == p.publish_mode
                    && a.published_port != 0
                    && !explicit.contains(&(a.published_port, a.protocol))
            });
            match found {
                Some(i) => {
                    used[i] = true;
                    allocated[i].published_port
                }
                None => 0,
            }
        })
        .collect()
}

/// Removes the ports `--publish-rm` names and adds the `--publish-add` ones. Ports asking
/// for a dynamic port keep published port 0 so the daemon keeps their allocation.
pub fn update_ports(
    spec: &[PortConfig],
    allocated: &[PortConfig],
    remove: &[(String, PortMatch)],
    add: &[PortConfig],
) -> Result<Vec<PortConfig>, SpecError> {
    let published = effective_published(spec, allocated);
    let mut keep = vec![true; spec.len()];
    for (text, m) in remove {
        let matches: Vec<usize> = match m {
            PortMatch::Number { port, protocol } => {
                let by_published: Vec<usize> = (0..spec.len())
                    .filter(|&i| published[i] == *port && spec[i].protocol == *protocol)
                    .collect();
                if by_published.is_empty() {
                    (0..spec.len())
                        .filter(|&i| spec[i].target_port == *port && spec[i].protocol == *protocol)
                        .collect()
                } else {
                    by_published
                }
            }
            PortMatch::Fields {
                published: want_published,
                target,
                protocol,
                mode,
            } => (0..spec.len())
                .filter(|&i| {
                    let p = &spec[i];
                    p.protocol == *protocol
                        && want_published.is_none_or(|w| published[i] == w)
                        && target.is_none_or(|t| p.target_port == t)
                        && mode.is_none_or(|m| p.publish_mode == m)
                })
                .collect(),
        };
        if matches.is_empty() {
            return Err(SpecError::NoSuchPort(text.clone()));
        }
        for i in matches {
            keep[i] = false;
        }
    }
    let mut ports: Vec<PortConfig> = Vec::new();
    let mut kept_published: Vec<u16> = Vec::new();
    for (i, p) in spec.iter().enumerate() {
        if keep[i] {
            ports.push(p.clone());
            kept_published.push(published[i]);
        }
    }
    for p in add {
        let same = |q: &PortConfig| {
            q.target_port == p.target_port
                && q.protocol == p.protocol
                && q.publish_mode == p.publish_mode
        };
        if p.published_port == 0 {
            if !ports.iter().any(|q| same(q) && q.published_port == 0) {
                ports.push(p.clone());
                kept_published.push(0);
            }
            continue;
        }
        let taken = (0..ports.len())
            .find(|&i| kept_published[i] == p.published_port && ports[i].protocol == p.protocol);
        match taken {
            // Already published as asked (possibly as an allocated dynamic port): nothing to do.
            Some(i) if same(&ports[i]) => {}
            Some(i) => {
                return Err(SpecError::PortTaken {
                    port: port_label(p.published_port, p.protocol),
                    target: ports[i].target_port,
                    published: p.published_port,
                });
            }
            None => {
                ports.push(p.clone());
                kept_published.push(p.published_port);
            }
        }
    }
    Ok(ports)
}

/// The spec `service update` sends: the current spec with the flags applied.
pub fn apply_update(
    view: &ServiceView,
    ops: &UpdateOps,
    network_ids: &BTreeMap<String, String>,
) -> Result<ServiceSpec, SpecError> {
    let service = &view.service;
    let mut spec = service.spec.clone();
    if let Some(r) = ops.replicas {
        match &mut spec.mode {
            ServiceMode::Replicated { replicas } => *replicas = r,
            ServiceMode::Global {} => return Err(SpecError::ReplicasWithGlobal),
        }
    }
    let native = spec.task_template.runtime == Runtime::Native;
    let task = &mut spec.task_template;
    if let Some(image) = &ops.image {
        if native {
            return Err(SpecError::ImageOnNative);
        }
        task.container_spec.image = image.clone();
    }
    if let Some(args) = &ops.args {
        // A native task's positionals are its command, so --args replaces that.
        if native {
            task.container_spec.command = args.clone();
            task.container_spec.args.clear();
        } else {
            task.container_spec.args = args.clone();
        }
    }
    let env = &mut task.container_spec.env;
    env.retain(|e| !ops.env_rm.iter().any(|k| env_key(e) == k));
    for e in &ops.env_add {
        env.retain(|x| env_key(x) != env_key(e));
        env.push(e.clone());
    }
    if let Some(g) = ops.stop_grace_period {
        task.container_spec.stop_grace_period = g;
    }
    let constraints = &mut task.placement.constraints;
    constraints.retain(|c| !ops.constraint_rm.iter().any(|r| r.trim() == c.trim()));
    for c in &ops.constraint_add {
        if !constraints.contains(c) {
            constraints.push(c.clone());
        }
    }
    for name in &ops.network_rm {
        let id = network_ids.get(name).unwrap_or(name);
        let before = task.networks.len();
        task.networks.retain(|n| &n.target != id);
        if task.networks.len() == before {
            return Err(SpecError::NotAttached(name.clone()));
        }
    }
    for n in &ops.network_add {
        let id = network_ids.get(&n.name).unwrap_or(&n.name);
        if task.networks.iter().any(|a| &a.target == id) {
            return Err(SpecError::AlreadyAttached(n.name.clone()));
        }
        task.networks.push(NetworkAttachmentConfig {
            target: id.clone(),
            aliases: n.aliases.clone(),
        });
    }
    if let Some(c) = ops.restart_condition {
        task.restart_policy.condition = c;
    }
    if let Some(d) = ops.restart_delay {
        task.restart_policy.delay = d;
    }
    if let Some(m) = ops.restart_max_attempts {
        task.restart_policy.max_attempts = m;
    }
    if ops.force {
        task.force_update += 1;
    }
    if let Some(p) = ops.update_parallelism {
        spec.update_config.parallelism = p;
    }
    if let Some(d) = ops.update_delay {
        spec.update_config.delay = d;
    }
    if let Some(o) = ops.update_order {
        spec.update_config.order = o;
    }
    for k in &ops.label_rm {
        spec.labels.remove(k);
    }
    for (k, v) in &ops.label_add {
        spec.labels.insert(k.clone(), v.clone());
    }
    if let Some(m) = ops.endpoint_mode {
        spec.endpoint_spec.mode = m;
    }
    if !ops.publish_rm.is_empty() || !ops.publish_add.is_empty() {
        spec.endpoint_spec.ports = update_ports(
            &spec.endpoint_spec.ports,
            &service.endpoint.ports,
            &ops.publish_rm,
            &ops.publish_add,
        )?;
    }
    check_ports(spec.endpoint_spec.mode, &spec.endpoint_spec.ports)?;
    ops.edits.apply(&mut spec)?;
    check_templates(&spec)?;
    spec.endpoint_spec.session_affinity = session_affinity(
        spec.endpoint_spec.session_affinity,
        ops.affinity,
        spec.endpoint_spec.mode,
    )?;
    Ok(spec)
}

/// `SERVICE=REPLICAS` of `service scale`.
pub fn parse_scale(value: &str) -> Result<(String, u64), SpecError> {
    let bad = |reason| SpecError::BadValue {
        flag: "scale specifier",
        value: value.to_string(),
        reason,
    };
    let (name, n) = value
        .split_once('=')
        .ok_or_else(|| bad("use SERVICE=REPLICAS, e.g. web=3"))?;
    if name.is_empty() {
        return Err(bad(
            "missing service name (use SERVICE=REPLICAS, e.g. web=3)",
        ));
    }
    let n = n
        .parse()
        .map_err(|_| bad("replicas must be a whole number (use SERVICE=REPLICAS, e.g. web=3)"))?;
    Ok((name.to_string(), n))
}

/// The spec after `service scale`.
pub fn scaled(spec: &ServiceSpec, replicas: u64) -> Result<ServiceSpec, SpecError> {
    match spec.mode {
        ServiceMode::Replicated { .. } => Ok(ServiceSpec {
            mode: ServiceMode::Replicated { replicas },
            ..spec.clone()
        }),
        ServiceMode::Global {} => Err(SpecError::ScaleGlobal),
    }
}

/// A Docker-like random name (`adjective_surname`) for a service created without `--name`.
pub fn random_name(seed: u64) -> String {
    const LEFT: &[&str] = &[
        "admiring",
        "brave",
        "clever",
        "dazzling",
        "eager",
        "festive",
        "gallant",
        "happy",
        "jolly",
        "keen",
        "loving",
        "modest",
        "nifty",
        "optimistic",
        "quirky",
        "relaxed",
        "serene",
        "tender",
        "upbeat",
        "vibrant",
        "wizardly",
        "zealous",
    ];
    const RIGHT: &[&str] = &[
        "babbage", "curie", "darwin", "euler", "feynman", "gauss", "hopper", "hypatia", "kepler",
        "lovelace", "meitner", "noether", "pascal", "ritchie", "shannon", "tesla", "thompson",
        "turing", "wozniak", "yalow",
    ];
    // splitmix64: spreads nearby seeds (consecutive nanoseconds) over the lists.
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let l = LEFT[(z % LEFT.len() as u64) as usize];
    let r = RIGHT[((z >> 32) % RIGHT.len() as u64) as usize];
    format!("{l}_{r}")
}

#[cfg(test)]
mod tests;
