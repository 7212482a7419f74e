//! The Compose file subset Swarm users write for `stack deploy` (version 3), read strictly:
//! an unknown or unsupported key is an error naming the key and its line, and nothing is
//! deployed from a file with one.

use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct ComposeFile {
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
    #[serde(default)]
    pub networks: BTreeMap<String, Option<Network>>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub image: Option<String>,
    pub command: Option<Words>,
    pub deploy: Option<Deploy>,
    #[serde(default)]
    pub ports: Vec<Port>,
    pub networks: Option<ServiceNetworks>,
    pub environment: Option<Environment>,
    pub healthcheck: Option<Healthcheck>,
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

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    pub replicas: Option<u64>,
    pub mode: Option<String>,
    pub endpoint_mode: Option<String>,
    pub placement: Option<Placement>,
    pub update_config: Option<UpdateConfig>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    #[serde(default)]
    pub constraints: Vec<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    pub parallelism: Option<u64>,
    pub delay: Option<String>,
    pub order: Option<String>,
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
    pub published: Option<u16>,
    pub protocol: Option<String>,
    pub mode: Option<String>,
}

impl Port {
    /// The same port as `--publish` takes it.
    pub fn to_flag(&self) -> String {
        match self {
            Port::Number(n) => n.to_string(),
            Port::Short(s) => s.clone(),
            Port::Long(l) => {
                let mut parts = vec![format!("target={}", l.target)];
                if let Some(p) = l.published {
                    parts.push(format!("published={p}"));
                }
                if let Some(p) = &l.protocol {
                    parts.push(format!("protocol={p}"));
                }
                if let Some(m) = &l.mode {
                    parts.push(format!("mode={m}"));
                }
                parts.join(",")
            }
        }
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
}

impl ServiceNetworks {
    /// (network key in the file, aliases).
    pub fn entries(&self) -> Vec<(String, Vec<String>)> {
        match self {
            ServiceNetworks::List(l) => l.iter().map(|n| (n.clone(), vec![])).collect(),
            ServiceNetworks::Map(m) => m
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default().aliases))
                .collect(),
        }
    }
}

#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Environment {
    List(Vec<String>),
    Map(BTreeMap<String, Option<Scalar>>),
}

#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum Scalar {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Environment {
    /// `KEY=VALUE` (a key without a value is taken from the deploying shell, as `--env KEY`).
    pub fn to_flags(&self) -> Vec<String> {
        match self {
            Environment::List(l) => l.clone(),
            Environment::Map(m) => m
                .iter()
                .map(|(k, v)| match v {
                    None => k.clone(),
                    Some(Scalar::Text(s)) => format!("{k}={s}"),
                    Some(Scalar::Int(i)) => format!("{k}={i}"),
                    Some(Scalar::Float(f)) => format!("{k}={f}"),
                    Some(Scalar::Bool(b)) => format!("{k}={b}"),
                })
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
    #[serde(default)]
    pub disable: bool,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Network {
    pub driver: Option<String>,
    #[serde(default)]
    pub attachable: bool,
    pub ipam: Option<Ipam>,
    #[serde(default)]
    pub external: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct Ipam {
    #[serde(default)]
    pub config: Vec<IpamConfig>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct IpamConfig {
    pub subnet: Option<String>,
}

/// Reads a Compose file; the error names the key path and the line.
pub fn parse(text: &str) -> Result<ComposeFile, String> {
    let file: ComposeFile = serde_norway::from_str(text).map_err(|e| {
        let msg = e.to_string();
        // "unknown field `x`, expected one of ..." says which key; keep what helps.
        match msg.split_once(", expected") {
            Some((head, rest)) => {
                let at = rest.rfind(" at line ").map(|i| &rest[i..]).unwrap_or("");
                format!("{head} (not supported by shoal){at}")
            }
            None => msg,
        }
    })?;
    if let Some(v) = &file.version
        && !v.starts_with('3')
    {
        return Err(format!(
            "version {v:?}: stacks take Compose file format 3 (version: \"3.8\")"
        ));
    }
    Ok(file)
}
