//! The Compose file format's swarm subset (version 3.x and the Compose Specification's
//! additions that `docker stack deploy` honours), as typed structs read strictly: a key in
//! no Compose schema is an error. Keys swarm mode ignores are taken out before these structs
//! see the file (`load.rs` warns about them), and so are `x-*` extension fields.
//!
//! Values arrive after interpolation, so numbers and booleans may come as strings
//! (`replicas: ${N}`); `load.rs` casts the known numeric and boolean keys back.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ComposeFile {
    #[serde(default)]
    pub version: Option<Scalar>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
    #[serde(default)]
    pub networks: BTreeMap<String, Option<Network>>,
    #[serde(default)]
    pub volumes: BTreeMap<String, Option<Volume>>,
    #[serde(default)]
    pub secrets: BTreeMap<String, Option<SecretDef>>,
    #[serde(default)]
    pub configs: BTreeMap<String, Option<ConfigDef>>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub image: Option<String>,
    pub command: Option<Words>,
    pub entrypoint: Option<Words>,
    pub deploy: Option<Deploy>,
    #[serde(default)]
    pub ports: Vec<Port>,
    pub networks: Option<ServiceNetworks>,
    pub environment: Option<Pairs>,
    pub env_file: Option<EnvFiles>,
    pub labels: Option<Pairs>,
    pub healthcheck: Option<Healthcheck>,
    #[serde(default)]
    pub volumes: Vec<ServiceVolume>,
    pub hostname: Option<String>,
    pub dns: Option<OneOrMany>,
    pub dns_search: Option<OneOrMany>,
    pub dns_opt: Option<Vec<String>>,
    pub extra_hosts: Option<Pairs>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub init: Option<bool>,
    pub read_only: Option<bool>,
    pub stop_signal: Option<String>,
    pub stop_grace_period: Option<String>,
    pub cap_add: Option<Vec<String>>,
    pub cap_drop: Option<Vec<String>>,
    pub sysctls: Option<Pairs>,
    pub ulimits: Option<BTreeMap<String, UlimitValue>>,
    pub tty: Option<bool>,
    pub stdin_open: Option<bool>,
    pub logging: Option<Logging>,
    pub isolation: Option<String>,
    /// Ignored by swarm mode (with a warning), but used for the restart policy when
    /// `deploy.restart_policy` is absent, as docker/cli does.
    pub restart: Option<String>,
    /// Paths mounted as tmpfs (`/run`, or `/run:size=64m,mode=1777`).
    pub tmpfs: Option<OneOrMany>,
    #[serde(default)]
    pub secrets: Vec<FileRef>,
    #[serde(default)]
    pub configs: Vec<FileRef>,
}

/// A command as a list, or as one string split like a shell would.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Words {
    List(Vec<String>),
    Line(String),
}

impl Words {
    pub fn to_vec(&self) -> Result<Vec<String>, String> {
        match self {
            Words::List(l) => Ok(l.clone()),
            Words::Line(s) => {
                shlex::split(s).ok_or_else(|| format!("command {s:?} has unbalanced quotes"))
            }
        }
    }
}

#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(l) => l.clone(),
        }
    }
}

#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum EnvFiles {
    One(String),
    Many(Vec<EnvFileEntry>),
}

#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum EnvFileEntry {
    Path(String),
    Long(EnvFileLong),
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct EnvFileLong {
    pub path: String,
    #[serde(default = "yes")]
    pub required: bool,
}

fn yes() -> bool {
    true
}

impl EnvFiles {
    /// (path, required).
    pub fn entries(&self) -> Vec<(String, bool)> {
        match self {
            EnvFiles::One(p) => vec![(p.clone(), true)],
            EnvFiles::Many(l) => l
                .iter()
                .map(|e| match e {
                    EnvFileEntry::Path(p) => (p.clone(), true),
                    EnvFileEntry::Long(l) => (l.path.clone(), l.required),
                })
                .collect(),
        }
    }
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    pub mode: Option<String>,
    pub replicas: Option<u64>,
    pub labels: Option<Pairs>,
    pub endpoint_mode: Option<String>,
    pub placement: Option<Placement>,
    pub update_config: Option<UpdateConfig>,
    pub rollback_config: Option<UpdateConfig>,
    pub resources: Option<Resources>,
    pub restart_policy: Option<RestartPolicy>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    #[serde(default)]
    pub constraints: Vec<String>,
    #[serde(default)]
    pub preferences: Vec<Preference>,
    pub max_replicas_per_node: Option<u64>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Preference {
    pub spread: String,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    pub parallelism: Option<u64>,
    pub delay: Option<String>,
    pub failure_action: Option<String>,
    pub monitor: Option<String>,
    pub max_failure_ratio: Option<f32>,
    pub order: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub limits: Option<ResourceLimits>,
    pub reservations: Option<ResourceReservations>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimits {
    pub cpus: Option<Scalar>,
    pub memory: Option<Scalar>,
    pub pids: Option<i64>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ResourceReservations {
    pub cpus: Option<Scalar>,
    pub memory: Option<Scalar>,
    /// Swarm's generic resources (GPUs): refused by the converter with the reason.
    pub generic_resources: Option<serde_norway::Value>,
    /// The Compose Specification's device requests: refused likewise.
    pub devices: Option<serde_norway::Value>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    pub condition: Option<String>,
    pub delay: Option<String>,
    pub max_attempts: Option<u64>,
    pub window: Option<String>,
}

/// `"8080:80"`, `80`, or the long form.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Port {
    Number(u16),
    Short(String),
    Long(LongPort),
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct LongPort {
    pub target: u16,
    pub published: Option<Scalar>,
    pub protocol: Option<String>,
    pub mode: Option<String>,
    pub name: Option<String>,
    pub host_ip: Option<String>,
    pub app_protocol: Option<String>,
}

impl Port {
    /// The same port as `--publish` takes it.
    pub fn to_flag(&self) -> Result<String, String> {
        Ok(match self {
            Port::Number(n) => n.to_string(),
            Port::Short(s) => s.clone(),
            Port::Long(l) => {
                if l.host_ip.is_some() {
                    return Err(format!(
                        "ports: host_ip is not supported in swarm mode (port {}); a published port answers on every address of every node",
                        l.target
                    ));
                }
                let mut parts = vec![format!("target={}", l.target)];
                if let Some(p) = &l.published {
                    parts.push(format!("published={}", p.text()));
                }
                if let Some(p) = &l.protocol {
                    parts.push(format!("protocol={p}"));
                }
                if let Some(m) = &l.mode {
                    parts.push(format!("mode={m}"));
                }
                parts.join(",")
            }
        })
    }
}

#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum ServiceNetworks {
    List(Vec<String>),
    Map(BTreeMap<String, Option<NetworkAttach>>),
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct NetworkAttach {
    #[serde(default)]
    pub aliases: Vec<String>,
    pub ipv4_address: Option<String>,
    pub ipv6_address: Option<String>,
    pub priority: Option<i64>,
}

impl ServiceNetworks {
    /// (network key in the file, its attachment options).
    pub fn entries(&self) -> Vec<(String, NetworkAttach)> {
        match self {
            ServiceNetworks::List(l) => l
                .iter()
                .map(|n| (n.clone(), NetworkAttach::default()))
                .collect(),
            ServiceNetworks::Map(m) => m
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
                .collect(),
        }
    }
}

/// A list of `KEY=VALUE` (or `KEY:VALUE` for extra_hosts), or a map.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Pairs {
    List(Vec<String>),
    Map(BTreeMap<String, Option<Scalar>>),
}

#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(untagged)]
pub enum Scalar {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    pub fn text(&self) -> String {
        match self {
            Scalar::Text(s) => s.clone(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

impl Pairs {
    /// (key, value); a key without a value (list `KEY` or map `KEY:`) has `None`.
    pub fn entries(&self, list_separators: &[char]) -> Vec<(String, Option<String>)> {
        match self {
            Pairs::List(l) => l
                .iter()
                .map(|e| match e.split_once(list_separators) {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (e.clone(), None),
                })
                .collect(),
            Pairs::Map(m) => m
                .iter()
                .map(|(k, v)| (k.clone(), v.as_ref().map(Scalar::text)))
                .collect(),
        }
    }
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Healthcheck {
    pub test: Option<Words>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub retries: Option<u64>,
    pub start_period: Option<String>,
    pub start_interval: Option<String>,
    #[serde(default)]
    pub disable: bool,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum UlimitValue {
    Single(i64),
    Pair { soft: i64, hard: i64 },
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    pub driver: Option<String>,
    #[serde(default)]
    pub options: BTreeMap<String, Option<Scalar>>,
}

/// `SOURCE:TARGET[:MODE]`, `TARGET` (anonymous volume), or the long form.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum ServiceVolume {
    Short(String),
    Long(LongVolume),
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct LongVolume {
    #[serde(rename = "type")]
    pub kind: String,
    pub source: Option<String>,
    pub target: Option<String>,
    #[serde(default)]
    pub read_only: bool,
    pub consistency: Option<String>,
    pub bind: Option<BindVolume>,
    pub volume: Option<VolumeVolume>,
    pub tmpfs: Option<TmpfsVolume>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct BindVolume {
    pub propagation: Option<String>,
    pub create_host_path: Option<bool>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct VolumeVolume {
    #[serde(default)]
    pub nocopy: bool,
    pub subpath: Option<String>,
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct TmpfsVolume {
    pub size: Option<Scalar>,
    pub mode: Option<u32>,
}

/// `external: true`, or the older `external: {name: N}`.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum External {
    Flag(bool),
    Named { name: String },
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Network {
    pub driver: Option<String>,
    #[serde(default)]
    pub driver_opts: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub attachable: bool,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub enable_ipv6: bool,
    pub ipam: Option<Ipam>,
    pub external: Option<External>,
    pub name: Option<String>,
    pub labels: Option<Pairs>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Ipam {
    pub driver: Option<String>,
    #[serde(default)]
    pub config: Vec<IpamConfig>,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct IpamConfig {
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub ip_range: Option<String>,
    pub aux_addresses: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    pub driver: Option<String>,
    #[serde(default)]
    pub driver_opts: BTreeMap<String, Scalar>,
    pub external: Option<External>,
    pub name: Option<String>,
    pub labels: Option<Pairs>,
}

impl External {
    /// Whether the object is external, and the name it has outside the stack if given.
    pub fn resolve(ext: &Option<External>) -> (bool, Option<String>) {
        match ext {
            None | Some(External::Flag(false)) => (false, None),
            Some(External::Flag(true)) => (true, None),
            Some(External::Named { name }) => (true, Some(name.clone())),
        }
    }
}

/// A top-level `secrets:` entry (docker/cli `SecretConfig`): data from a file, or from a
/// variable of the deploying shell (`environment:`, the Compose Specification's addition),
/// or an existing secret (`external:`).
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct SecretDef {
    pub name: Option<String>,
    pub file: Option<String>,
    pub environment: Option<String>,
    pub external: Option<External>,
    pub labels: Option<Pairs>,
    /// An external secret store; shoal has none, so the converter refuses it.
    pub driver: Option<String>,
    #[serde(default)]
    pub driver_opts: BTreeMap<String, Scalar>,
    pub template_driver: Option<String>,
}

/// A top-level `configs:` entry (docker/cli `ConfigObjConfig`); like a secret without a
/// driver. `content:` is the Compose Specification's inline form, which `docker stack
/// deploy` does not take: it is read so that the converter can say so.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct ConfigDef {
    pub name: Option<String>,
    pub file: Option<String>,
    pub environment: Option<String>,
    pub content: Option<String>,
    pub external: Option<External>,
    pub labels: Option<Pairs>,
    pub template_driver: Option<String>,
}

/// A service's `secrets:` or `configs:` entry: `- NAME`, or the long form.
#[derive(Debug, Clone)]
pub enum FileRef {
    Short(String),
    Long(LongFileRef),
}

#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct LongFileRef {
    pub source: Option<String>,
    pub target: Option<String>,
    pub uid: Option<Scalar>,
    pub gid: Option<Scalar>,
    /// A number; YAML's `0440` arrives as text and is read as octal, as Go's YAML does.
    pub mode: Option<Scalar>,
}

impl FileRef {
    pub fn long(&self) -> LongFileRef {
        match self {
            FileRef::Short(s) => LongFileRef {
                source: Some(s.clone()),
                ..Default::default()
            },
            FileRef::Long(l) => l.clone(),
        }
    }
}

// By hand rather than `untagged`, so that an unknown key in the long form is reported as
// such (with its path) instead of "did not match any variant".
impl<'de> Deserialize<'de> for FileRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_norway::Value::deserialize(d)? {
            serde_norway::Value::String(s) => Ok(FileRef::Short(s)),
            v @ serde_norway::Value::Mapping(_) => LongFileRef::deserialize(v)
                .map(FileRef::Long)
                .map_err(D::Error::custom),
            _ => Err(D::Error::custom(
                "use a name, or a mapping with source, target, uid, gid and mode",
            )),
        }
    }
}
