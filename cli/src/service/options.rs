//! The container, resource and rollout options of a service spec (`--hostname`, `--dns`,
//! `--mount`, `--reserve-cpu`, `--update-failure-action`, ...), as one set of edits that
//! `service create` applies to a new spec and `service update` to the current one, and that
//! `stack deploy` fills from a Compose file. Pure: files (`--env-file`) are read by the
//! caller.

use super::spec::SpecError;
use shoal_api::objects::*;
use shoal_api::secrets::{ConfigReference, Kind, SecretReference, check_references};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Adds and removals of one list-valued field. On create only `add` is used.
#[derive(Debug, Clone, PartialEq)]
pub struct ListEdit<T> {
    pub add: Vec<T>,
    pub rm: Vec<String>,
}

impl<T> Default for ListEdit<T> {
    fn default() -> Self {
        ListEdit {
            add: vec![],
            rm: vec![],
        }
    }
}

impl<T> ListEdit<T> {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.rm.is_empty()
    }
}

/// One rollout's settings (`--update-*` or `--rollback-*`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RolloutEdits {
    pub parallelism: Option<u64>,
    pub delay: Option<u64>,
    pub failure_action: Option<FailureAction>,
    pub monitor: Option<u64>,
    pub max_failure_ratio: Option<f32>,
    pub order: Option<UpdateOrder>,
}

impl RolloutEdits {
    fn is_empty(&self) -> bool {
        *self == RolloutEdits::default()
    }

    fn apply(&self, c: &mut UpdateConfig) {
        if let Some(p) = self.parallelism {
            c.parallelism = p;
        }
        if let Some(d) = self.delay {
            c.delay = d;
        }
        if let Some(a) = self.failure_action {
            c.failure_action = a;
        }
        if let Some(m) = self.monitor {
            c.monitor = m;
        }
        if let Some(r) = self.max_failure_ratio {
            c.max_failure_ratio = Ratio(r);
        }
        if let Some(o) = self.order {
            c.order = o;
        }
    }
}

/// Health check flags; on update they change only what is given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthEdits {
    pub cmd: Option<String>,
    pub interval: Option<u64>,
    pub timeout: Option<u64>,
    pub retries: Option<u64>,
    pub start_period: Option<u64>,
    pub start_interval: Option<u64>,
    pub disable: bool,
}

impl HealthEdits {
    fn is_empty(&self) -> bool {
        *self == HealthEdits::default()
    }
}

/// Every option of this module, parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpecEdits {
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    /// Replaces the image's entrypoint; `Some(vec![])` resets it to the image's.
    pub entrypoint: Option<Vec<String>>,
    pub init: Option<bool>,
    pub read_only: Option<bool>,
    pub tty: Option<bool>,
    pub open_stdin: Option<bool>,
    pub stop_signal: Option<String>,
    pub isolation: Option<String>,
    pub log_driver: Option<String>,
    /// Replace the log driver's options (given with or without `--log-driver`).
    pub log_opts: Option<BTreeMap<String, String>>,
    pub limit_memory: Option<i64>,
    pub limit_cpu: Option<i64>,
    pub limit_pids: Option<i64>,
    pub reserve_memory: Option<i64>,
    pub reserve_cpu: Option<i64>,
    pub restart_window: Option<u64>,
    pub max_replicas: Option<u64>,
    pub update: RolloutEdits,
    pub rollback: RolloutEdits,
    pub health: HealthEdits,
    /// A whole health check (Compose's `healthcheck`), applied before `health`.
    pub healthcheck: Option<HealthConfig>,
    pub container_labels: ListEdit<(String, String)>,
    pub dns: ListEdit<String>,
    pub dns_search: ListEdit<String>,
    pub dns_options: ListEdit<String>,
    /// `IP HOST` entries, as Docker stores them; removals by host name or `HOST:IP`.
    pub hosts: ListEdit<String>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub sysctls: ListEdit<(String, String)>,
    pub ulimits: ListEdit<Ulimit>,
    pub placement_prefs: ListEdit<PlacementPreference>,
    /// Removals by target path.
    pub mounts: ListEdit<Mount>,
    /// Removals by secret name, as docker/cli's `--secret-rm`.
    pub secrets: ListEdit<SecretReference>,
    /// Removals by config name.
    pub configs: ListEdit<ConfigReference>,
}

fn bad(flag: &'static str, value: &str, reason: &'static str) -> SpecError {
    SpecError::BadValue {
        flag,
        value: value.to_string(),
        reason,
    }
}

/// Bytes from `64M`, `1.5g`, `512k`, `1GiB` or a plain number.
pub fn parse_bytes(flag: &'static str, value: &str) -> Result<i64, SpecError> {
    let err = || bad(flag, value, "use a size like 64M, 1G or 512k");
    let v = value.trim().to_ascii_lowercase();
    let v = v
        .strip_suffix("ib")
        .or_else(|| v.strip_suffix('b'))
        .unwrap_or(&v);
    let (num, unit) = match v.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&v[..i], &v[i..]),
        None => (v, ""),
    };
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(err()),
    };
    let n: f64 = num.trim().parse().map_err(|_| err())?;
    if n.is_nan() || n < 0.0 {
        return Err(err());
    }
    Ok((n * mult) as i64)
}

/// Billionths of a CPU from `0.5` or `2`; `0` clears the limit or reservation, as in Docker.
pub fn parse_cpus(flag: &'static str, value: &str) -> Result<i64, SpecError> {
    match value.trim().parse::<f64>() {
        Ok(c) if (0.0..=4096.0).contains(&c) => Ok((c * 1e9).round() as i64),
        _ => Err(bad(
            flag,
            value,
            "use a number of CPUs like 0.5 or 2 (0 for none)",
        )),
    }
}

/// A fraction from 0 to 1.
pub fn parse_ratio(flag: &'static str, value: &str) -> Result<f32, SpecError> {
    match value.trim().parse::<f32>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(bad(flag, value, "use a fraction from 0 to 1, e.g. 0.2")),
    }
}

pub fn parse_failure_action(
    flag: &'static str,
    value: &str,
    rollback_allowed: bool,
) -> Result<FailureAction, SpecError> {
    match value.trim() {
        "pause" => Ok(FailureAction::Pause),
        "continue" => Ok(FailureAction::Continue),
        "rollback" if rollback_allowed => Ok(FailureAction::Rollback),
        _ if rollback_allowed => Err(bad(flag, value, "use pause, continue or rollback")),
        _ => Err(bad(flag, value, "use pause or continue")),
    }
}

/// `KEY=VALUE` (a value is required).
pub fn parse_pair(flag: &'static str, value: &str) -> Result<(String, String), SpecError> {
    match value.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(bad(flag, value, "use KEY=VALUE")),
    }
}

/// Docker's `--host HOST:IP`, stored as `IP HOST` like Docker's spec does.
pub fn parse_host(flag: &'static str, value: &str) -> Result<String, SpecError> {
    // Split at the first ':' so that IPv6 addresses keep theirs.
    let (host, ip) = value
        .split_once(':')
        .or_else(|| value.split_once('='))
        .ok_or_else(|| bad(flag, value, "use HOST:IP, e.g. db.local:198.18.0.5"))?;
    let ip = ip.trim().trim_start_matches('[').trim_end_matches(']');
    if host.trim().is_empty() || ip.parse::<IpAddr>().is_err() {
        return Err(bad(flag, value, "use HOST:IP, e.g. db.local:198.18.0.5"));
    }
    Ok(format!("{ip} {}", host.trim()))
}

pub fn parse_dns(flag: &'static str, value: &str) -> Result<String, SpecError> {
    value
        .trim()
        .parse::<IpAddr>()
        .map(|ip| ip.to_string())
        .map_err(|_| bad(flag, value, "use a resolver's IP address"))
}

/// `NAME=SOFT[:HARD]`.
pub fn parse_ulimit(flag: &'static str, value: &str) -> Result<Ulimit, SpecError> {
    let err = || bad(flag, value, "use NAME=SOFT[:HARD], e.g. nofile=1024:2048");
    let (name, limits) = value.split_once('=').ok_or_else(err)?;
    let (soft, hard) = match limits.split_once(':') {
        Some((s, h)) => (s, h),
        None => (limits, limits),
    };
    let soft: i64 = soft.trim().parse().map_err(|_| err())?;
    let hard: i64 = hard.trim().parse().map_err(|_| err())?;
    if name.trim().is_empty() || soft > hard {
        return Err(err());
    }
    Ok(Ulimit {
        name: name.trim().to_string(),
        soft,
        hard,
    })
}

/// `spread=node.labels.KEY`.
pub fn parse_placement_pref(
    flag: &'static str,
    value: &str,
) -> Result<PlacementPreference, SpecError> {
    match value.split_once('=') {
        Some(("spread", d)) if !d.trim().is_empty() => Ok(PlacementPreference {
            spread: SpreadOver {
                spread_descriptor: d.trim().to_string(),
            },
        }),
        _ => Err(bad(flag, value, "use spread=node.labels.KEY")),
    }
}

/// A capability as Docker normalizes it: `net_admin` -> `CAP_NET_ADMIN`, `ALL` kept.
pub fn parse_cap(flag: &'static str, v: &str) -> Result<String, SpecError> {
    let c = v.trim().to_ascii_uppercase();
    if c.is_empty() || !c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
        return Err(bad(flag, v, "use a capability name like NET_ADMIN or ALL"));
    }
    Ok(if c == "ALL" || c.starts_with("CAP_") {
        c
    } else {
        format!("CAP_{c}")
    })
}

/// Docker's stop signals: a name with or without SIG, or a number.
pub fn check_signal(flag: &'static str, value: &str) -> Result<String, SpecError> {
    let v = value.trim();
    let upper = v.to_ascii_uppercase();
    let name = upper.trim_start_matches("SIG").to_string();
    let known = v.parse::<u8>().is_ok_and(|n| (1..=64).contains(&n))
        || format!("SIG{name}")
            .parse::<nix::sys::signal::Signal>()
            .is_ok()
        || name.starts_with("RTMIN")
        || name.starts_with("RTMAX");
    if known {
        Ok(v.to_string())
    } else {
        Err(bad(
            flag,
            value,
            "use a signal name like SIGQUIT or a number",
        ))
    }
}

/// Splits a `--mount`, `--secret` or `--config` value on commas, honouring double quotes
/// (Docker reads them as CSV, so `"volume-opt=o=addr=198.18.0.5,rw"` is one field).
pub(crate) fn csv_fields(value: &str) -> Result<Vec<String>, &'static str> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in value.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if quoted {
        return Err("unbalanced quotes");
    }
    fields.push(cur);
    Ok(fields)
}

fn parse_bool_field(v: &str) -> Option<bool> {
    match v {
        "" | "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// Docker's `--mount` syntax: `type=volume|bind|tmpfs` (volume by default), `source`,
/// `target`, `readonly`, `volume-driver`, `volume-opt`, `volume-label`, `volume-nocopy`,
/// `tmpfs-size`, `tmpfs-mode`, `bind-propagation`.
pub fn parse_mount(flag: &'static str, value: &str) -> Result<Mount, SpecError> {
    let b = |reason| bad(flag, value, reason);
    let mut m = Mount {
        kind: "volume".into(),
        ..Default::default()
    };
    let mut volume = VolumeOptions::default();
    let mut tmpfs = TmpfsOptions::default();
    let mut bind = BindOptions::default();
    let (mut has_volume, mut has_tmpfs, mut has_bind) = (false, false, false);
    for field in csv_fields(value).map_err(b)? {
        let field = field.trim();
        if field.is_empty() {
            continue;
        }
        let (k, v) = field.split_once('=').unwrap_or((field, ""));
        match k.to_ascii_lowercase().as_str() {
            "type" => m.kind = v.to_ascii_lowercase(),
            "source" | "src" => m.source = v.to_string(),
            "target" | "destination" | "dst" => m.target = v.to_string(),
            "readonly" | "ro" => {
                m.read_only =
                    parse_bool_field(v).ok_or_else(|| b("readonly takes true or false"))?
            }
            "consistency" => {}
            "volume-driver" => {
                has_volume = true;
                volume
                    .driver_config
                    .get_or_insert_with(Default::default)
                    .name = v.to_string();
            }
            "volume-opt" => {
                has_volume = true;
                let (ok, ov) = v
                    .split_once('=')
                    .ok_or_else(|| b("volume-opt takes KEY=VALUE"))?;
                volume
                    .driver_config
                    .get_or_insert_with(Default::default)
                    .options
                    .insert(ok.to_string(), ov.to_string());
            }
            "volume-label" => {
                has_volume = true;
                let (lk, lv) = v.split_once('=').unwrap_or((v, ""));
                volume.labels.insert(lk.to_string(), lv.to_string());
            }
            "volume-nocopy" => {
                has_volume = true;
                volume.no_copy =
                    parse_bool_field(v).ok_or_else(|| b("volume-nocopy takes true or false"))?;
            }
            "tmpfs-size" => {
                has_tmpfs = true;
                tmpfs.size_bytes = parse_bytes(flag, v)?;
            }
            "tmpfs-mode" => {
                has_tmpfs = true;
                tmpfs.mode = u32::from_str_radix(v, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| b("tmpfs-mode takes octal file mode bits, e.g. 1770"))?;
            }
            "bind-propagation" => {
                has_bind = true;
                const MODES: [&str; 6] = [
                    "rprivate", "private", "rshared", "shared", "rslave", "slave",
                ];
                if !MODES.contains(&v) {
                    return Err(b(
                        "bind-propagation takes rprivate, private, rshared, shared, rslave or slave",
                    ));
                }
                bind.propagation = v.to_string();
            }
            _ => {
                return Err(b(
                    "unknown key; use type, source, target, readonly, volume-driver, volume-opt, volume-label, volume-nocopy, tmpfs-size, tmpfs-mode or bind-propagation",
                ));
            }
        }
    }
    if m.target.is_empty() {
        return Err(b("missing target=PATH"));
    }
    if !m.target.starts_with('/') {
        return Err(b("target must be an absolute path"));
    }
    match m.kind.as_str() {
        "bind" => {
            if has_volume || has_tmpfs {
                return Err(b("volume-* and tmpfs-* options need type=volume or tmpfs"));
            }
            if m.source.is_empty() {
                return Err(b("a bind mount needs source=HOST_PATH"));
            }
            if !m.source.starts_with('/') && !m.source.starts_with("{{") {
                return Err(b("a bind mount's source must be an absolute path"));
            }
            if has_bind {
                m.bind_options = Some(bind);
            }
        }
        "volume" => {
            if has_tmpfs || has_bind {
                return Err(b("tmpfs-* and bind-* options do not apply to type=volume"));
            }
            if m.source.starts_with('/') {
                return Err(b(
                    "a volume's source is a volume name; for a host path use type=bind",
                ));
            }
            if has_volume {
                m.volume_options = Some(volume);
            }
        }
        "tmpfs" => {
            if has_volume || has_bind {
                return Err(b("volume-* and bind-* options do not apply to type=tmpfs"));
            }
            if !m.source.is_empty() {
                return Err(b("a tmpfs mount takes no source"));
            }
            if has_tmpfs {
                m.tmpfs_options = Some(tmpfs);
            }
        }
        _ => return Err(b("type must be volume, bind or tmpfs")),
    }
    Ok(m)
}

/// `--env-file` content: `KEY=VALUE` lines, `#` comments and blank lines skipped, a bare
/// `KEY` taken from the CLI's environment (dropped when unset), as Docker reads it.
pub fn parse_env_file(
    path: &str,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((k, _)) if k.trim().is_empty() => {
                return Err(format!(
                    "{path}:{}: missing variable name (use KEY=VALUE)",
                    n + 1
                ));
            }
            Some((k, v)) => out.push(format!("{}={v}", k.trim())),
            None => {
                if let Some(v) = lookup(line.trim()) {
                    out.push(format!("{}={v}", line.trim()));
                }
            }
        }
    }
    Ok(out)
}

fn edit_list<T: Clone + PartialEq>(
    list: &mut Vec<T>,
    edit: &ListEdit<T>,
    removes: impl Fn(&T, &str) -> bool,
    same: impl Fn(&T, &T) -> bool,
) {
    list.retain(|x| !edit.rm.iter().any(|r| removes(x, r)));
    for a in &edit.add {
        list.retain(|x| !same(x, a));
        list.push(a.clone());
    }
}

/// docker/cli's update of secret and config references: removals by name, then additions
/// appended (a target already in use is refused by the check that follows, as Docker's
/// daemon refuses it). A removal the service has no reference for is an error here, where
/// Docker ignores it: a typo would otherwise leave the old secret mounted.
fn edit_refs<T: Clone>(
    list: &mut Vec<T>,
    edit: &ListEdit<T>,
    kind: Kind,
    name: impl Fn(&T) -> &String,
) -> Result<(), SpecError> {
    if let Some(missing) = edit
        .rm
        .iter()
        .find(|rm| !list.iter().any(|r| name(r) == *rm))
    {
        return Err(SpecError::NotReferenced {
            kind: kind.word(),
            name: missing.clone(),
        });
    }
    list.retain(|r| !edit.rm.contains(name(r)));
    list.extend(edit.add.iter().cloned());
    Ok(())
}

fn host_matches(entry: &str, rm: &str) -> bool {
    // Entry `IP HOST...`; a removal names the host, or `HOST:IP`.
    let mut parts = entry.split_whitespace();
    let ip = parts.next().unwrap_or("");
    let hosts: Vec<&str> = parts.collect();
    match rm.split_once(':') {
        Some((h, i)) => hosts.contains(&h) && ip == i,
        None => hosts.contains(&rm),
    }
}

impl SpecEdits {
    /// Applies the edits to `spec`; a native service refuses what only a container has.
    pub fn apply(&self, spec: &mut ServiceSpec) -> Result<(), SpecError> {
        let native = spec.task_template.runtime == Runtime::Native;
        if native {
            self.check_native()?;
        }
        let task = &mut spec.task_template;
        let cs = &mut task.container_spec;
        if let Some(h) = &self.hostname {
            cs.hostname = h.clone();
        }
        if let Some(u) = &self.user {
            cs.user = u.clone();
        }
        if let Some(w) = &self.workdir {
            cs.dir = w.clone();
        }
        if let Some(e) = &self.entrypoint {
            cs.command = e.clone();
        }
        if let Some(i) = self.init {
            cs.init = Some(i);
        }
        if let Some(r) = self.read_only {
            cs.read_only = r;
        }
        if let Some(t) = self.tty {
            cs.tty = t;
        }
        if let Some(o) = self.open_stdin {
            cs.open_stdin = o;
        }
        if let Some(s) = &self.stop_signal {
            cs.stop_signal = s.clone();
        }
        if let Some(i) = &self.isolation {
            cs.isolation = i.clone();
        }
        let mut labels: Vec<(String, String)> =
            std::mem::take(&mut cs.labels).into_iter().collect();
        edit_list(
            &mut labels,
            &self.container_labels,
            |(k, _), r| k == r,
            |a, b| a.0 == b.0,
        );
        cs.labels = labels.into_iter().collect();
        let mut dns = cs.dns_config.take().unwrap_or_default();
        edit_list(
            &mut dns.nameservers,
            &self.dns,
            |x, r| x == r,
            |a, b| a == b,
        );
        edit_list(
            &mut dns.search,
            &self.dns_search,
            |x, r| x == r,
            |a, b| a == b,
        );
        edit_list(
            &mut dns.options,
            &self.dns_options,
            |x, r| x == r,
            |a, b| a == b,
        );
        if dns != DnsConfig::default() {
            cs.dns_config = Some(dns);
        }
        edit_list(
            &mut cs.hosts,
            &self.hosts,
            |x, r| host_matches(x, r),
            |a, b| a == b,
        );
        // Docker's update: adding a capability takes it off the drop list, and the reverse.
        for c in &self.cap_add {
            cs.capability_drop.retain(|x| x != c);
            if !cs.capability_add.contains(c) {
                cs.capability_add.push(c.clone());
            }
        }
        for c in &self.cap_drop {
            cs.capability_add.retain(|x| x != c);
            if !cs.capability_drop.contains(c) {
                cs.capability_drop.push(c.clone());
            }
        }
        let mut sysctls: Vec<(String, String)> =
            std::mem::take(&mut cs.sysctls).into_iter().collect();
        edit_list(
            &mut sysctls,
            &self.sysctls,
            |(k, _), r| k == r,
            |a, b| a.0 == b.0,
        );
        cs.sysctls = sysctls.into_iter().collect();
        edit_list(
            &mut cs.ulimits,
            &self.ulimits,
            |u, r| u.name == r.split('=').next().unwrap_or(r),
            |a, b| a.name == b.name,
        );
        edit_list(
            &mut cs.mounts,
            &self.mounts,
            |m, r| m.target == r,
            |a, b| a.target == b.target,
        );
        edit_refs(&mut cs.secrets, &self.secrets, Kind::Secret, |r| {
            &r.secret_name
        })?;
        edit_refs(&mut cs.configs, &self.configs, Kind::Config, |r| {
            &r.config_name
        })?;
        check_references(&cs.secrets, &cs.configs).map_err(SpecError::Files)?;
        if let Some(hc) = &self.healthcheck {
            cs.healthcheck = Some(hc.clone());
        }
        if !self.health.is_empty() {
            let h = &self.health;
            if h.disable {
                cs.healthcheck = Some(HealthConfig {
                    test: vec!["NONE".into()],
                    ..Default::default()
                });
            } else {
                let mut hc = cs.healthcheck.take().unwrap_or_default();
                if hc.test.first().map(String::as_str) == Some("NONE") {
                    hc = HealthConfig::default();
                }
                if let Some(cmd) = &h.cmd {
                    hc.test = vec!["CMD-SHELL".into(), cmd.clone()];
                }
                // No test at all: the image's own check, with these timings (Docker's
                // empty Test).
                let set = |dst: &mut i64, v: Option<u64>| {
                    if let Some(v) = v {
                        *dst = v as i64;
                    }
                };
                set(&mut hc.interval, h.interval);
                set(&mut hc.timeout, h.timeout);
                set(&mut hc.retries, h.retries);
                set(&mut hc.start_period, h.start_period);
                set(&mut hc.start_interval, h.start_interval);
                cs.healthcheck = Some(hc);
            }
        }
        if let Some(d) = &self.log_driver {
            let options = match &self.log_opts {
                Some(o) => o.clone(),
                None => task
                    .log_driver
                    .as_ref()
                    .filter(|l| &l.name == d)
                    .map(|l| l.options.clone())
                    .unwrap_or_default(),
            };
            task.log_driver = Some(Driver {
                name: d.clone(),
                options,
            });
        } else if let Some(o) = &self.log_opts {
            match &mut task.log_driver {
                Some(l) => l.options = o.clone(),
                None => return Err(SpecError::Missing("--log-driver for --log-opt")),
            }
        }
        let res = &mut task.resources;
        if let Some(m) = self.limit_memory {
            res.limits.memory_bytes = m;
        }
        if let Some(c) = self.limit_cpu {
            res.limits.nano_cpus = c;
        }
        if let Some(p) = self.limit_pids {
            res.limits.pids = p;
        }
        if let Some(m) = self.reserve_memory {
            res.reservations.memory_bytes = m;
        }
        if let Some(c) = self.reserve_cpu {
            res.reservations.nano_cpus = c;
        }
        if res.limits.memory_bytes > 0 && res.reservations.memory_bytes > res.limits.memory_bytes {
            return Err(SpecError::ReservationOverLimit("memory"));
        }
        if res.limits.nano_cpus > 0 && res.reservations.nano_cpus > res.limits.nano_cpus {
            return Err(SpecError::ReservationOverLimit("cpu"));
        }
        if let Some(w) = self.restart_window {
            task.restart_policy.window = w;
        }
        if let Some(m) = self.max_replicas {
            if matches!(spec.mode, ServiceMode::Global {}) && m > 0 {
                return Err(SpecError::MaxReplicasGlobal);
            }
            task.placement.max_replicas = m;
        }
        edit_list(
            &mut task.placement.preferences,
            &self.placement_prefs,
            |p, r| {
                let r = r.strip_prefix("spread=").unwrap_or(r);
                p.spread.spread_descriptor == r
            },
            |a, b| a == b,
        );
        self.update.apply(&mut spec.update_config);
        if !self.rollback.is_empty() {
            let mut rb = spec.rollback_config.take().unwrap_or_default();
            self.rollback.apply(&mut rb);
            spec.rollback_config = Some(rb);
        }
        Ok(())
    }

    /// What a native task cannot have: it runs on the node's own root filesystem, in no
    /// container, so these would silently do nothing.
    fn check_native(&self) -> Result<(), SpecError> {
        let container_only: [(&'static str, bool); 12] = [
            ("--hostname", self.hostname.is_some()),
            ("--entrypoint", self.entrypoint.is_some()),
            ("--init", self.init == Some(true)),
            ("--read-only", self.read_only == Some(true)),
            ("--tty", self.tty == Some(true)),
            // The node keeps a native task's output itself, capped by these two options.
            (
                "--log-driver other than json-file",
                self.log_driver.as_deref().is_some_and(|d| d != "json-file"),
            ),
            (
                "--log-opt other than max-size and max-file",
                self.log_opts
                    .as_ref()
                    .is_some_and(|o| o.keys().any(|k| k != "max-size" && k != "max-file")),
            ),
            (
                "--limit-memory/--limit-cpu/--limit-pids",
                self.limit_memory.is_some()
                    || self.limit_cpu.is_some()
                    || self.limit_pids.is_some(),
            ),
            ("--container-label", !self.container_labels.add.is_empty()),
            (
                "--cap-add/--cap-drop",
                !self.cap_add.is_empty() || !self.cap_drop.is_empty(),
            ),
            (
                "--sysctl other than net.* (a native task shares the node's kernel settings)",
                self.sysctls.add.iter().any(|(k, _)| !k.starts_with("net.")),
            ),
            (
                "--health-cmd",
                self.health.cmd.is_some() || self.health.disable || self.healthcheck.is_some(),
            ),
        ];
        if let Some((flag, _)) = container_only.iter().find(|(_, set)| *set) {
            return Err(SpecError::ContainerOnly(flag));
        }
        // Binds, tmpfs and local volumes are made in the task's own mount namespace, ulimits
        // by prlimit and net.* sysctls in its network namespace (exec/native_plan.rs).
        for m in &self.mounts.add {
            if m.kind == "volume"
                && m.volume_options
                    .as_ref()
                    .and_then(|v| v.driver_config.as_ref())
                    .is_some_and(|d| {
                        !d.options.is_empty() || !(d.name.is_empty() || d.name == "local")
                    })
            {
                return Err(SpecError::NativeVolumeDriver(m.source.clone()));
            }
        }
        Ok(())
    }
}
