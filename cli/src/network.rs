//! `shoal network ...`: overlay networks of the swarm.

use crate::addr::{AddrError, Cidr, parse_ip};
use crate::daemon::Daemon;
use crate::format::id_column;
use crate::listing::{Inspect, ListFlags, NetworkLs};
use crate::service::spec::parse_label;
use crate::table::Table;
use crate::{Output, print};
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use shoal_api::control::ControlRequest;
use shoal_api::objects::{Driver, IpamConfig, IpamOptions, Network, NetworkSpec};
use std::collections::BTreeMap;

const OVERLAY: &str = "overlay";

#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create an overlay network
    Create(CreateArgs),
    /// List networks
    #[command(visible_alias = "list")]
    Ls {
        /// Only display IDs
        #[arg(short, long)]
        quiet: bool,
        /// Do not truncate the output
        #[arg(long)]
        no_trunc: bool,
        #[command(flatten)]
        list: ListFlags,
    },
    /// Display detailed information on one or more networks
    Inspect {
        /// Format output using a Go template (or "json")
        #[arg(short, long, value_name = "FORMAT")]
        format: Option<String>,
        #[arg(required = true, value_name = "NETWORK")]
        networks: Vec<String>,
    },
    /// Remove one or more networks
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true, value_name = "NETWORK")]
        networks: Vec<String>,
    },
}

#[derive(Args, Debug, Default)]
pub struct CreateArgs {
    /// Driver to manage the network (shoal has overlay networks only)
    #[arg(short, long, default_value = OVERLAY)]
    pub driver: String,
    /// Subnet in CIDR format (default: one from the swarm's address pool)
    #[arg(long, value_name = "CIDR")]
    pub subnet: Vec<String>,
    /// Gateway of the subnet
    #[arg(long, value_name = "IP")]
    pub gateway: Vec<String>,
    /// Allocate task addresses and VIPs from a sub-range of the subnet
    #[arg(long, value_name = "CIDR")]
    pub ip_range: Vec<String>,
    /// Let standalone tasks attach to the network
    #[arg(long)]
    pub attachable: bool,
    /// Create the ingress network of the routing mesh
    #[arg(long)]
    pub ingress: bool,
    /// Restrict external access to the network (shoal's overlays always are)
    #[arg(long)]
    pub internal: bool,
    /// Network labels
    #[arg(long, value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Driver options
    #[arg(short, long, value_name = "KEY=VALUE")]
    pub opt: Vec<String>,
    pub name: String,
}

pub async fn run(cmd: NetworkCommand, daemon: &mut Daemon, out: &mut Output) -> Result<()> {
    match cmd {
        NetworkCommand::Create(args) => {
            let spec = network_spec(&args)?;
            let id = daemon
                .created(ControlRequest::NetworkCreate { spec })
                .await?;
            print(out, &format!("{id}\n"))
        }
        NetworkCommand::Ls {
            quiet,
            no_trunc,
            list,
        } => {
            let ls = NetworkLs::new(quiet, no_trunc, &list)?;
            let networks = daemon.networks().await?;
            print(out, &ls.render(&networks)?)
        }
        NetworkCommand::Inspect { format, networks } => {
            let inspect = Inspect::new(format.as_deref())?;
            let mut found = Vec::new();
            for n in &networks {
                found.push(daemon.network(n).await?);
            }
            print(out, &inspect.render(&found)?)
        }
        NetworkCommand::Rm { networks } => {
            // Resolve every name first so that a typo removes nothing.
            let mut ids = Vec::new();
            for n in &networks {
                ids.push(daemon.network(n).await?.id);
            }
            for (name, id) in networks.iter().zip(ids) {
                daemon
                    .done(ControlRequest::NetworkRemove { network: id })
                    .await?;
                print(out, &format!("{name}\n"))?;
            }
            Ok(())
        }
    }
}

/// Checks the `network create` flags and builds the spec.
pub fn network_spec(args: &CreateArgs) -> Result<NetworkSpec> {
    if !args.driver.eq_ignore_ascii_case(OVERLAY) {
        bail!(
            "network driver {:?} is not supported: shoal networks are swarm-wide overlays; use -d overlay",
            args.driver
        );
    }
    if args.name.trim().is_empty() {
        bail!("network name must not be empty");
    }
    let subnets = args
        .subnet
        .iter()
        .map(|s| Cidr::parse("--subnet", s).map(|c| (s, c)))
        .collect::<Result<Vec<_>, AddrError>>()?;
    let mut configs: Vec<IpamConfig> = subnets
        .iter()
        .map(|(s, _)| IpamConfig {
            subnet: s.to_string(),
            gateway: String::new(),
            ip_range: String::new(),
        })
        .collect();
    for g in &args.gateway {
        let ip = parse_ip("--gateway", g)?;
        let Some(i) = subnets.iter().position(|(_, c)| c.contains(ip)) else {
            if subnets.is_empty() {
                bail!("invalid --gateway {g:?}: a gateway needs a --subnet that contains it");
            }
            bail!("invalid --gateway {g:?}: it is in none of the given subnets");
        };
        if !configs[i].gateway.is_empty() {
            bail!(
                "invalid --gateway {g:?}: subnet {} already has gateway {}",
                configs[i].subnet,
                configs[i].gateway
            );
        }
        configs[i].gateway = g.clone();
    }
    for r in &args.ip_range {
        let range = Cidr::parse("--ip-range", r)?;
        let Some(i) = subnets
            .iter()
            .position(|(_, c)| c.contains(range.addr) && c.prefix <= range.prefix)
        else {
            bail!("invalid --ip-range {r:?}: it must lie inside one of the given --subnet values");
        };
        if !configs[i].ip_range.is_empty() {
            bail!(
                "invalid --ip-range {r:?}: subnet {} already has ip range {}",
                configs[i].subnet,
                configs[i].ip_range
            );
        }
        configs[i].ip_range = r.clone();
    }
    let mut labels = BTreeMap::new();
    for l in &args.label {
        let (k, v) = parse_label("--label", l)?;
        labels.insert(k, v);
    }
    let mut options = BTreeMap::new();
    for o in &args.opt {
        let (k, v) = parse_label("--opt", o)?;
        options.insert(k, v);
    }
    Ok(NetworkSpec {
        name: args.name.trim().to_string(),
        labels,
        driver_configuration: Driver {
            name: OVERLAY.into(),
            options,
        },
        ingress: args.ingress,
        attachable: args.attachable,
        internal: args.internal,
        ipam_options: IpamOptions { configs },
    })
}

pub fn sorted(networks: &[Network]) -> Vec<&Network> {
    let mut out: Vec<&Network> = networks.iter().collect();
    out.sort_by(|a, b| (&a.spec.name, &a.id).cmp(&(&b.spec.name, &b.id)));
    out
}

/// `network ls`: `NETWORK ID  NAME  DRIVER  SCOPE`, by name.
pub fn render_networks(networks: &[Network], no_trunc: bool) -> String {
    let mut table = Table::new(["NETWORK ID", "NAME", "DRIVER", "SCOPE"]);
    for n in sorted(networks) {
        let driver = if n.spec.driver_configuration.name.is_empty() {
            OVERLAY
        } else {
            n.spec.driver_configuration.name.as_str()
        };
        table.row([
            id_column(&n.id, no_trunc),
            n.spec.name.as_str(),
            driver,
            "swarm",
        ]);
    }
    table.render()
}

pub fn render_network_ids(networks: &[Network], no_trunc: bool) -> String {
    sorted(networks)
        .iter()
        .map(|n| format!("{}\n", id_column(&n.id, no_trunc)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::objects::Version;

    fn args(name: &str) -> CreateArgs {
        CreateArgs {
            driver: OVERLAY.into(),
            name: name.into(),
            ..CreateArgs::default()
        }
    }

    #[test]
    fn builds_overlay_specs() {
        let mut a = args("backend");
        a.subnet = vec!["198.19.10.0/24".into()];
        a.gateway = vec!["198.19.10.1".into()];
        a.ip_range = vec!["198.19.10.128/25".into()];
        a.attachable = true;
        a.label = vec!["team=web".into()];
        let spec = network_spec(&a).unwrap();
        assert_eq!(spec.name, "backend");
        assert_eq!(spec.driver_configuration.name, "overlay");
        assert!(spec.attachable);
        assert_eq!(
            spec.ipam_options.configs,
            vec![IpamConfig {
                subnet: "198.19.10.0/24".into(),
                gateway: "198.19.10.1".into(),
                ip_range: "198.19.10.128/25".into(),
            }]
        );
        assert_eq!(spec.labels.get("team").map(String::as_str), Some("web"));
    }

    #[test]
    fn rejects_bad_network_flags() {
        let cases: Vec<(CreateArgs, &str)> = vec![
            (
                CreateArgs {
                    driver: "bridge".into(),
                    ..args("n")
                },
                r#"network driver "bridge" is not supported: shoal networks are swarm-wide overlays; use -d overlay"#,
            ),
            (
                CreateArgs {
                    subnet: vec!["198.19.10.0/40".into()],
                    ..args("n")
                },
                r#"invalid --subnet "198.19.10.0/40": prefix too long for the address (use a CIDR like 10.0.0.0/8)"#,
            ),
            (
                CreateArgs {
                    gateway: vec!["198.19.10.1".into()],
                    ..args("n")
                },
                r#"invalid --gateway "198.19.10.1": a gateway needs a --subnet that contains it"#,
            ),
            (
                CreateArgs {
                    subnet: vec!["198.19.10.0/24".into()],
                    gateway: vec!["198.19.11.1".into()],
                    ..args("n")
                },
                r#"invalid --gateway "198.19.11.1": it is in none of the given subnets"#,
            ),
            (
                CreateArgs {
                    subnet: vec!["198.19.10.0/24".into()],
                    gateway: vec!["x".into()],
                    ..args("n")
                },
                r#"invalid --gateway "x": not an IP address"#,
            ),
            (
                CreateArgs {
                    subnet: vec!["198.19.10.0/24".into()],
                    ip_range: vec!["198.19.11.0/25".into()],
                    ..args("n")
                },
                r#"invalid --ip-range "198.19.11.0/25": it must lie inside one of the given --subnet values"#,
            ),
        ];
        for (a, want) in cases {
            assert_eq!(network_spec(&a).unwrap_err().to_string(), want);
        }
    }

    fn network(id: &str, name: &str) -> Network {
        Network {
            id: id.into(),
            version: Version::default(),
            created_at: String::new(),
            updated_at: String::new(),
            spec: network_spec(&args(name)).unwrap(),
            driver_state: Driver::default(),
            ipam_options: IpamOptions::default(),
        }
    }

    #[test]
    fn renders_network_ls() {
        let nets = vec![
            network("zz0123456789abcdefghijklm", "web"),
            network("aa0123456789abcdefghijklm", "ingress"),
        ];
        let want = "\
NETWORK ID     NAME      DRIVER    SCOPE
aa0123456789   ingress   overlay   swarm
zz0123456789   web       overlay   swarm
";
        assert_eq!(render_networks(&nets, false), want);
        assert_eq!(
            render_network_ids(&nets, false),
            "aa0123456789\nzz0123456789\n"
        );
    }
}
