//! A loaded Compose file turned into what `stack deploy` sends, as docker/cli's converter
//! (`cli/compose/convert`) does: objects named `<stack>_<name>` and labelled with the stack,
//! each service's Compose name an alias on every one of its networks, named volumes scoped
//! to the stack with their driver options, relative bind sources resolved against the
//! directory of the first Compose file, secrets and configs as `files.rs` makes them. Pure
//! but for reading `env_file`s and secret and config data through `read`.

use super::compose::{self, ComposeFile, External, Scalar};
use super::files;
use super::{NAMESPACE_LABEL, StackPlan};
use crate::addr::Cidr;
use crate::duration;
use crate::service::options::{self, ListEdit, RolloutEdits};
use crate::service::spec::{self, CreateOptions};
use anyhow::{Context, Result, anyhow, bail};
use shoal_api::objects::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What the conversion needs from outside the file.
pub struct Env<'a> {
    pub stack: &'a str,
    /// Directory relative paths (bind sources, env files) are taken from.
    pub workdir: &'a Path,
    pub lookup: &'a dyn Fn(&str) -> Option<String>,
    /// Reads a file the stack names (an env file, a secret's or config's data).
    pub read: &'a dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
}

fn check_name(stack: &str) -> Result<()> {
    let ok = !stack.is_empty()
        && stack
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !ok {
        bail!("invalid stack name {stack:?}: use letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

fn nanos(what: &str, s: &Option<String>) -> Result<Option<u64>> {
    s.as_ref()
        .map(|v| duration::parse_nanos(v).map_err(|e| anyhow!("{what} {v:?}: {e}")))
        .transpose()
}

pub(super) fn with_stack_label(
    stack: &str,
    labels: &Option<compose::Pairs>,
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = labels
        .as_ref()
        .map(|l| {
            l.entries(&['='])
                .into_iter()
                .map(|(k, v)| (k, v.unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    out.insert(NAMESPACE_LABEL.into(), stack.into());
    out
}

fn healthcheck(h: &compose::Healthcheck) -> Result<HealthConfig> {
    if h.disable {
        return Ok(HealthConfig {
            test: vec!["NONE".into()],
            ..Default::default()
        });
    }
    let test = match &h.test {
        // No test: the image's own check runs with these timings, as Docker sends it.
        None => vec![],
        Some(compose::Words::Line(s)) => vec!["CMD-SHELL".to_string(), s.clone()],
        Some(compose::Words::List(l)) => match l.first().map(String::as_str) {
            Some("CMD") | Some("CMD-SHELL") | Some("NONE") => l.clone(),
            _ => bail!("healthcheck test must start with CMD, CMD-SHELL or NONE"),
        },
    };
    let ns = |what: &str, v: &Option<String>| -> Result<i64> {
        Ok(nanos(&format!("healthcheck {what}"), v)?.unwrap_or(0) as i64)
    };
    Ok(HealthConfig {
        test,
        interval: ns("interval", &h.interval)?,
        timeout: ns("timeout", &h.timeout)?,
        retries: h.retries.unwrap_or(0) as i64,
        start_period: ns("start_period", &h.start_period)?,
        start_interval: ns("start_interval", &h.start_interval)?,
    })
}

fn rollout(what: &str, u: &compose::UpdateConfig, rollback: bool) -> Result<RolloutEdits> {
    let order = match u.order.as_deref() {
        None => None,
        Some("stop-first") => Some(UpdateOrder::StopFirst),
        Some("start-first") => Some(UpdateOrder::StartFirst),
        Some(o) => bail!("deploy.{what}.order {o:?}: use stop-first or start-first"),
    };
    let failure_action = u
        .failure_action
        .as_deref()
        .map(|a| {
            options::parse_failure_action("failure_action", a, !rollback)
                .map_err(|e| anyhow!("deploy.{what}.{e}"))
        })
        .transpose()?;
    if let Some(r) = u.max_failure_ratio
        && !(0.0..=1.0).contains(&r)
    {
        bail!("deploy.{what}.max_failure_ratio {r}: use a fraction from 0 to 1");
    }
    Ok(RolloutEdits {
        // Docker's converter: one task at a time unless the file says otherwise.
        parallelism: Some(u.parallelism.unwrap_or(1)),
        delay: nanos(&format!("deploy.{what}.delay"), &u.delay)?,
        failure_action,
        monitor: nanos(&format!("deploy.{what}.monitor"), &u.monitor)?,
        max_failure_ratio: u.max_failure_ratio,
        order,
    })
}

fn cpus(what: &str, v: &Option<Scalar>) -> Result<Option<i64>> {
    v.as_ref()
        .map(|c| options::parse_cpus("cpus", &c.text()).map_err(|e| anyhow!("{what}: {e}")))
        .transpose()
}

fn memory(what: &str, v: &Option<Scalar>) -> Result<Option<i64>> {
    v.as_ref()
        .map(|m| options::parse_bytes("memory", &m.text()).map_err(|e| anyhow!("{what}: {e}")))
        .transpose()
}

/// `deploy.restart_policy`, or else the ignored `restart:` key, as docker/cli does.
fn restart(
    deploy: Option<&compose::Deploy>,
    restart: &Option<String>,
    o: &mut CreateOptions,
) -> Result<()> {
    let cond = |c: &str| -> Result<RestartCondition> {
        Ok(match c {
            "none" | "no" => RestartCondition::None,
            "on-failure" => RestartCondition::OnFailure,
            "any" | "always" | "unless-stopped" => RestartCondition::Any,
            _ => bail!("restart condition {c:?}: use none, on-failure or any"),
        })
    };
    if let Some(p) = deploy.and_then(|d| d.restart_policy.as_ref()) {
        o.restart_condition = p.condition.as_deref().map(cond).transpose()?;
        o.restart_delay = nanos("deploy.restart_policy.delay", &p.delay)?;
        o.restart_max_attempts = p.max_attempts;
        o.edits.restart_window = nanos("deploy.restart_policy.window", &p.window)?;
    } else if let Some(r) = restart {
        // docker/cli's convertRestartPolicy: `no` sets no policy, so swarm's default (any)
        // applies.
        if r == "no" {
            return Ok(());
        }
        let (c, n) = r.split_once(':').unwrap_or((r, ""));
        o.restart_condition = Some(cond(c).map_err(|e| anyhow!("restart: {e}"))?);
        if !n.is_empty() {
            o.restart_max_attempts = Some(
                n.parse()
                    .map_err(|_| anyhow!("restart {r:?}: use on-failure:N"))?,
            );
        }
    }
    Ok(())
}

/// Top-level volumes, as the mounts that name them need them.
struct Volumes<'a> {
    stack: &'a str,
    declared: &'a BTreeMap<String, Option<compose::Volume>>,
}

impl Volumes<'_> {
    /// The volume's name on the node and its options.
    fn named(&self, key: &str) -> Result<(String, Option<VolumeOptions>)> {
        let Some(v) = self.declared.get(key) else {
            bail!("volume {key:?} is not declared under the file's top-level volumes");
        };
        let v = v.as_ref();
        let (external, ext_name) = External::resolve(&v.and_then(|v| v.external.clone()));
        let given = v.and_then(|v| v.name.clone());
        if external {
            return Ok((ext_name.or(given).unwrap_or_else(|| key.to_string()), None));
        }
        let name = given.unwrap_or_else(|| format!("{}_{key}", self.stack));
        let mut opts = VolumeOptions {
            labels: with_stack_label(self.stack, &v.and_then(|v| v.labels.clone())),
            ..Default::default()
        };
        if let Some(v) = v
            && (v.driver.is_some() || !v.driver_opts.is_empty())
        {
            opts.driver_config = Some(Driver {
                name: v.driver.clone().unwrap_or_else(|| "local".into()),
                options: v
                    .driver_opts
                    .iter()
                    .map(|(k, s)| (k.clone(), s.text()))
                    .collect(),
            });
        }
        Ok((name, Some(opts)))
    }
}

fn host_path(env: &Env<'_>, p: &str) -> String {
    if let Some(rest) = p.strip_prefix('~')
        && let Some(home) = (env.lookup)("HOME")
    {
        return format!("{home}{rest}");
    }
    if p.starts_with('/') {
        return p.to_string();
    }
    lexical_join(env.workdir, p).display().to_string()
}

/// `p` against `base` as Docker's `filepath.Join` resolves `./data` and `../x`: lexically,
/// without touching the disk (an absolute `p` replaces `base`).
pub(super) fn lexical_join(base: &Path, p: &str) -> PathBuf {
    let joined: PathBuf = base.join(p);
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn is_path(s: &str) -> bool {
    s.starts_with('/') || s.starts_with('.') || s.starts_with('~')
}

/// A service's `volumes:` entry as a mount.
fn mount(env: &Env<'_>, vols: &Volumes<'_>, v: &compose::ServiceVolume) -> Result<Mount> {
    let long = match v {
        compose::ServiceVolume::Long(l) => l.clone(),
        compose::ServiceVolume::Short(s) => {
            // SOURCE:TARGET[:MODE], or TARGET alone (an anonymous volume).
            let parts: Vec<&str> = s.split(':').collect();
            let (source, target, mode) = match parts.as_slice() {
                [t] => (None, *t, ""),
                [s, t] => (Some(*s), *t, ""),
                [s, t, m] => (Some(*s), *t, *m),
                _ => bail!("volume {s:?}: use SOURCE:TARGET[:MODE]"),
            };
            let mut l = compose::LongVolume {
                kind: if source.is_some_and(is_path) {
                    "bind".into()
                } else {
                    "volume".into()
                },
                source: source.map(String::from),
                target: Some(target.into()),
                ..Default::default()
            };
            for opt in mode.split(',').filter(|o| !o.is_empty()) {
                match opt {
                    "ro" => l.read_only = true,
                    "rw" => l.read_only = false,
                    "nocopy" => l.volume.get_or_insert_with(Default::default).nocopy = true,
                    // SELinux relabelling: no meaning without SELinux, as with Docker there.
                    "z" | "Z" => {}
                    "rprivate" | "private" | "rshared" | "shared" | "rslave" | "slave" => {
                        l.bind.get_or_insert_with(Default::default).propagation = Some(opt.into())
                    }
                    "cached" | "delegated" | "consistent" => {}
                    _ => bail!(
                        "volume {s:?}: unknown mode {opt:?} (use ro, rw, nocopy or a propagation mode)"
                    ),
                }
            }
            l
        }
    };
    let target = long
        .target
        .clone()
        .ok_or_else(|| anyhow!("volume: missing target"))?;
    if !target.starts_with('/') {
        bail!("volume target {target:?} must be an absolute path");
    }
    let mut m = Mount {
        kind: long.kind.clone(),
        target,
        read_only: long.read_only,
        ..Default::default()
    };
    match long.kind.as_str() {
        "bind" => {
            let src = long
                .source
                .as_deref()
                .ok_or_else(|| anyhow!("bind mount at {}: missing source", m.target))?;
            m.source = host_path(env, src);
            if let Some(p) = long.bind.as_ref().and_then(|b| b.propagation.clone()) {
                m.bind_options = Some(BindOptions { propagation: p });
            }
        }
        "volume" => match long.source.as_deref() {
            None | Some("") => {}
            Some(src) => {
                let (name, opts) = vols.named(src)?;
                m.source = name;
                m.volume_options = opts;
                if long.volume.as_ref().is_some_and(|v| v.nocopy) {
                    m.volume_options
                        .get_or_insert_with(Default::default)
                        .no_copy = true;
                }
                if long.volume.as_ref().is_some_and(|v| v.subpath.is_some()) {
                    bail!("volume {src}: subpath is not supported by shoal");
                }
            }
        },
        "tmpfs" => {
            if long.source.is_some() {
                bail!("tmpfs mount at {}: takes no source", m.target);
            }
            if let Some(t) = &long.tmpfs {
                m.tmpfs_options = Some(TmpfsOptions {
                    size_bytes: memory("tmpfs.size", &t.size)?.unwrap_or(0),
                    mode: t.mode.unwrap_or(0),
                });
            }
        }
        other => bail!("volume type {other:?} is not supported; use volume, bind or tmpfs"),
    }
    Ok(m)
}

/// The short `tmpfs:` list: `/path` or `/path:size=64m,mode=1777`.
fn tmpfs_mount(entry: &str) -> Result<Mount> {
    let (target, opts) = entry.split_once(':').unwrap_or((entry, ""));
    let mut t = TmpfsOptions::default();
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o.split_once('=') {
            Some(("size", v)) => t.size_bytes = options::parse_bytes("tmpfs size", v)?,
            Some(("mode", v)) => {
                t.mode = u32::from_str_radix(v, 8)
                    .map_err(|_| anyhow!("tmpfs {entry:?}: mode takes octal bits"))?
            }
            _ => bail!("tmpfs {entry:?}: use PATH[:size=SIZE,mode=MODE]"),
        }
    }
    Ok(Mount {
        kind: "tmpfs".into(),
        target: target.into(),
        tmpfs_options: (t != TmpfsOptions::default()).then_some(t),
        ..Default::default()
    })
}

fn environment(env: &Env<'_>, svc: &compose::Service) -> Result<Vec<String>> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    for (path, required) in svc.env_file.iter().flat_map(|e| e.entries()) {
        let full = PathBuf::from(host_path(env, &path));
        let text = match (env.read)(&full) {
            Ok(t) => String::from_utf8(t)
                .map_err(|_| anyhow!("env_file {}: is not UTF-8 text", full.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => continue,
            Err(e) => bail!("env_file {}: {e}", full.display()),
        };
        for kv in options::parse_env_file(&full.display().to_string(), &text, env.lookup)
            .map_err(anyhow::Error::msg)?
        {
            let (k, v) = kv.split_once('=').unwrap_or((&kv, ""));
            vars.insert(k.to_string(), v.to_string());
        }
    }
    for (k, v) in svc.environment.iter().flat_map(|e| e.entries(&['='])) {
        // A key without a value comes from the deploying shell, and is left out when unset.
        match v.or_else(|| (env.lookup)(&k)) {
            Some(v) => vars.insert(k, v),
            None => vars.remove(&k),
        };
    }
    Ok(vars.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

fn service_options(
    env: &Env<'_>,
    name: &str,
    svc: &compose::Service,
    networks: &BTreeMap<String, String>,
    vols: &Volumes<'_>,
) -> Result<CreateOptions> {
    let stack = env.stack;
    let command = match &svc.command {
        Some(c) => c.to_vec().map_err(|e| anyhow!(e))?,
        None => vec![],
    };
    let args = match &svc.image {
        Some(image) => std::iter::once(image.clone()).chain(command).collect(),
        None if command.is_empty() => bail!("needs an image, or a command to run natively"),
        None => command,
    };
    let deploy = svc.deploy.as_ref();
    let global = match deploy.and_then(|d| d.mode.as_deref()) {
        None | Some("replicated") => false,
        Some("global") if deploy.and_then(|d| d.replicas).is_some() => {
            bail!("deploy.replicas cannot be used with mode: global; remove one of them")
        }
        Some("global") => true,
        Some(m @ ("replicated-job" | "global-job")) => bail!(
            "deploy.mode {m:?}: jobs are not supported by shoal's orchestrator yet; use replicated or global"
        ),
        Some(m) => bail!("deploy.mode {m:?}: use replicated or global"),
    };
    let endpoint_mode = match deploy.and_then(|d| d.endpoint_mode.as_deref()) {
        None => None,
        Some("vip") => Some(EndpointMode::Vip),
        Some("dnsrr") => Some(EndpointMode::Dnsrr),
        Some(m) => bail!("deploy.endpoint_mode {m:?}: use vip or dnsrr"),
    };
    // Every network of the service carries its Compose name as an alias, as in Docker, so
    // `name` and `tasks.name` resolve inside the stack.
    let mut nets = Vec::new();
    let entries = networks_of(svc);
    for (key, attach) in entries {
        let Some(full) = networks.get(&key) else {
            bail!("network {key:?} is not declared under the file's top-level networks");
        };
        if attach.ipv4_address.is_some() || attach.ipv6_address.is_some() {
            bail!(
                "networks.{key}: ipv4_address/ipv6_address cannot be set in swarm mode; task addresses are allocated by the managers"
            );
        }
        let mut aliases = attach.aliases.clone();
        if !aliases.iter().any(|a| a == name) {
            aliases.push(name.to_string());
        }
        let mut flag = format!("name={full}");
        for a in aliases {
            flag.push_str(&format!(",alias={a}"));
        }
        nets.push(flag);
    }
    let mut labels = vec![format!("{NAMESPACE_LABEL}={stack}")];
    if let Some(l) = deploy.and_then(|d| d.labels.as_ref()) {
        for (k, v) in l.entries(&['=']) {
            if k != NAMESPACE_LABEL {
                labels.push(format!("{k}={}", v.unwrap_or_default()));
            }
        }
    }
    let placement = deploy.and_then(|d| d.placement.as_ref());
    let mut o = CreateOptions {
        name: format!("{stack}_{name}"),
        replicas: if global {
            None
        } else {
            Some(deploy.and_then(|d| d.replicas).unwrap_or(1))
        },
        global,
        native: svc.image.is_none(),
        args,
        networks: nets,
        publish: svc
            .ports
            .iter()
            .map(compose::Port::to_flag)
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::msg)?,
        endpoint_mode,
        stop_grace_period: nanos("stop_grace_period", &svc.stop_grace_period)?,
        constraints: placement.map(|p| p.constraints.clone()).unwrap_or_default(),
        env: environment(env, svc)?,
        labels,
        ..Default::default()
    };
    restart(deploy, &svc.restart, &mut o)?;
    let e = &mut o.edits;
    e.hostname = svc.hostname.clone();
    e.user = svc.user.clone();
    e.workdir = svc.working_dir.clone();
    e.entrypoint = svc
        .entrypoint
        .as_ref()
        .map(|w| w.to_vec().map_err(|e| anyhow!("entrypoint: {e}")))
        .transpose()?;
    e.init = svc.init;
    e.read_only = svc.read_only;
    e.tty = svc.tty;
    e.open_stdin = svc.stdin_open;
    e.stop_signal = svc
        .stop_signal
        .as_deref()
        .map(|s| options::check_signal("stop_signal", s))
        .transpose()?;
    e.isolation = svc.isolation.clone();
    // A native task has no container to label; its service still carries the stack label.
    if svc.image.is_some() || svc.labels.is_some() {
        e.container_labels = ListEdit {
            add: with_stack_label(stack, &svc.labels).into_iter().collect(),
            rm: vec![],
        };
    }
    let list = |v: Vec<String>| ListEdit { add: v, rm: vec![] };
    e.dns = list(
        svc.dns
            .iter()
            .flat_map(|d| d.to_vec())
            .map(|d| options::parse_dns("dns", &d))
            .collect::<Result<_, _>>()?,
    );
    e.dns_search = list(svc.dns_search.iter().flat_map(|d| d.to_vec()).collect());
    e.dns_options = list(svc.dns_opt.clone().unwrap_or_default());
    let mut hosts = Vec::new();
    for (h, ip) in svc.extra_hosts.iter().flat_map(|x| x.entries(&[':', '='])) {
        let ip = ip.ok_or_else(|| anyhow!("extra_hosts {h:?}: use HOST:IP"))?;
        hosts.push(options::parse_host("extra_hosts", &format!("{h}:{ip}"))?);
    }
    e.hosts = list(hosts);
    let caps = |what: &'static str, l: &Option<Vec<String>>| -> Result<Vec<String>> {
        Ok(l.iter()
            .flatten()
            .map(|c| options::parse_cap(what, c))
            .collect::<Result<_, _>>()?)
    };
    e.cap_add = caps("cap_add", &svc.cap_add)?;
    e.cap_drop = caps("cap_drop", &svc.cap_drop)?;
    e.sysctls = ListEdit {
        add: svc
            .sysctls
            .iter()
            .flat_map(|s| s.entries(&['=']))
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect(),
        rm: vec![],
    };
    e.ulimits = ListEdit {
        add: svc
            .ulimits
            .iter()
            .flatten()
            .map(|(name, v)| {
                let (soft, hard) = match v {
                    compose::UlimitValue::Single(n) => (*n, *n),
                    compose::UlimitValue::Pair { soft, hard } => (*soft, *hard),
                };
                Ulimit {
                    name: name.clone(),
                    soft,
                    hard,
                }
            })
            .collect(),
        rm: vec![],
    };
    if let Some(l) = &svc.logging {
        // No driver keeps the engine's default with these options, as docker/cli sends it.
        e.log_driver = Some(l.driver.clone().unwrap_or_default());
        e.log_opts = Some(
            l.options
                .iter()
                .map(|(k, v)| (k.clone(), v.as_ref().map(Scalar::text).unwrap_or_default()))
                .collect(),
        );
    }
    e.healthcheck = svc.healthcheck.as_ref().map(healthcheck).transpose()?;
    let mut mounts = Vec::new();
    for v in &svc.volumes {
        mounts.push(mount(env, vols, v)?);
    }
    for t in svc.tmpfs.iter().flat_map(|t| t.to_vec()) {
        mounts.push(tmpfs_mount(&t)?);
    }
    e.mounts = ListEdit {
        add: mounts,
        rm: vec![],
    };
    if let Some(d) = deploy {
        if let Some(u) = &d.update_config {
            e.update = rollout("update_config", u, false)?;
        }
        if let Some(u) = &d.rollback_config {
            e.rollback = rollout("rollback_config", u, true)?;
        }
        if let Some(r) = &d.resources {
            if let Some(l) = &r.limits {
                e.limit_cpu = cpus("deploy.resources.limits.cpus", &l.cpus)?;
                e.limit_memory = memory("deploy.resources.limits.memory", &l.memory)?;
                e.limit_pids = l.pids;
            }
            if let Some(r) = &r.reservations {
                if r.generic_resources.is_some() || r.devices.is_some() {
                    bail!(
                        "deploy.resources.reservations: generic_resources and devices (GPUs) are not supported by shoal's scheduler"
                    );
                }
                e.reserve_cpu = cpus("deploy.resources.reservations.cpus", &r.cpus)?;
                e.reserve_memory = memory("deploy.resources.reservations.memory", &r.memory)?;
            }
        }
    }
    if let Some(p) = placement {
        e.max_replicas = p.max_replicas_per_node;
        e.placement_prefs = ListEdit {
            add: p
                .preferences
                .iter()
                .map(|p| PlacementPreference {
                    spread: SpreadOver {
                        spread_descriptor: p.spread.clone(),
                    },
                })
                .collect(),
            rm: vec![],
        };
    }
    Ok(o)
}

/// A service's networks by file key: none given (or an empty list) is the stack's
/// `default`, as in Docker.
fn networks_of(svc: &compose::Service) -> Vec<(String, compose::NetworkAttach)> {
    match svc.networks.as_ref().map(|n| n.entries()) {
        Some(e) if !e.is_empty() => e,
        _ => vec![("default".to_string(), compose::NetworkAttach::default())],
    }
}

fn network_spec(stack: &str, key: &str, n: &compose::Network) -> Result<NetworkSpec> {
    if let Some(d) = &n.driver
        && !d.eq_ignore_ascii_case("overlay")
    {
        bail!("network {key}: driver {d:?} is not supported; stacks use overlay networks");
    }
    if n.enable_ipv6 {
        bail!("network {key}: enable_ipv6 is not supported; shoal's overlays are IPv4");
    }
    let mut configs = Vec::new();
    if let Some(ipam) = &n.ipam {
        if let Some(d) = &ipam.driver
            && d != "default"
        {
            bail!("network {key}: ipam driver {d:?} is not supported; use the default");
        }
        for c in &ipam.config {
            if c.aux_addresses.is_some() {
                bail!(
                    "network {key}: ipam aux_addresses are not supported; give the subnet, gateway and ip_range only"
                );
            }
            let Some(s) = &c.subnet else {
                bail!("network {key}: an ipam config needs a subnet");
            };
            let subnet =
                Cidr::parse("ipam.config.subnet", s).with_context(|| format!("network {key}"))?;
            if let Some(r) = &c.ip_range {
                let range = Cidr::parse("ipam.config.ip_range", r)
                    .with_context(|| format!("network {key}"))?;
                if !subnet.contains(range.addr) || range.prefix < subnet.prefix {
                    bail!("network {key}: ip_range {r} is not inside subnet {s}");
                }
            }
            configs.push(IpamConfig {
                subnet: s.clone(),
                gateway: c.gateway.clone().unwrap_or_default(),
                ip_range: c.ip_range.clone().unwrap_or_default(),
            });
        }
    }
    Ok(NetworkSpec {
        name: n.name.clone().unwrap_or_else(|| format!("{stack}_{key}")),
        labels: with_stack_label(stack, &n.labels),
        driver_configuration: Driver {
            name: "overlay".into(),
            options: n
                .driver_opts
                .iter()
                .map(|(k, v)| (k.clone(), v.text()))
                .collect(),
        },
        ingress: false,
        attachable: n.attachable,
        internal: n.internal,
        ipam_options: IpamOptions { configs },
    })
}

/// Checks the whole file and builds what `deploy` sends.
pub fn plan(env: &Env<'_>, file: &ComposeFile) -> Result<StackPlan> {
    let stack = env.stack;
    check_name(stack)?;
    if file.services.is_empty() {
        bail!("the Compose file defines no services");
    }
    // File key -> the network's name in the swarm.
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut networks = Vec::new();
    let mut external = Vec::new();
    // Only the networks some service uses are made (or looked for, when external), as
    // docker/cli's converter does.
    let used: BTreeSet<String> = file
        .services
        .values()
        .flat_map(|s| networks_of(s).into_iter().map(|(k, _)| k))
        .collect();
    let mut declared: Vec<(String, Option<&compose::Network>)> = file
        .networks
        .iter()
        .filter(|(k, _)| used.contains(*k))
        .map(|(k, v)| (k.clone(), v.as_ref()))
        .collect();
    if used.contains("default") && !file.networks.contains_key("default") {
        declared.push(("default".into(), None));
    }
    let empty = compose::Network::default();
    for (key, n) in declared {
        let n = n.unwrap_or(&empty);
        let (is_external, ext_name) = External::resolve(&n.external);
        if is_external {
            let name = ext_name.or(n.name.clone()).unwrap_or_else(|| key.clone());
            names.insert(key, name.clone());
            external.push(name);
            continue;
        }
        let spec = network_spec(stack, &key, n)?;
        names.insert(key, spec.name.clone());
        networks.push(spec);
    }
    let vols = Volumes {
        stack,
        declared: &file.volumes,
    };
    // Every declared secret and config is made, used or not, as docker/cli does.
    let files = files::declared(env, file)?;
    let mut services = Vec::new();
    for (name, svc) in &file.services {
        let in_service = |e: anyhow::Error| anyhow!("service {name}: {e}");
        let opts = service_options(env, name, svc, &names, &vols).map_err(in_service)?;
        let mut plan = spec::create_plan(&opts, env.lookup).map_err(|e| in_service(e.into()))?;
        let (secrets, configs) = files
            .references(&svc.secrets, &svc.configs)
            .map_err(in_service)?;
        let cs = &mut plan.spec.task_template.container_spec;
        cs.secrets = secrets;
        cs.configs = configs;
        services.push(plan);
    }
    Ok(StackPlan {
        networks,
        external,
        services,
        secrets: files.secrets,
        configs: files.configs,
    })
}
