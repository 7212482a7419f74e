//! `shoal stack deploy|ls|services|ps|rm`: a Compose file as a set of services and overlay
//! networks named `<stack>_<name>` and labelled with the stack, like Docker does. The whole
//! file is read and every service checked before anything is sent; a redeploy updates only
//! the services whose spec changed.

pub mod compose;

use crate::daemon::Daemon;
use crate::service::spec::{self, CreateOptions, CreatePlan};
use crate::table::Table;
use crate::{Output, duration, print};
use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use compose::ComposeFile;
use shoal_api::control::{ControlRequest, ServiceView};
use shoal_api::objects::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Docker's label for the stack an object belongs to.
pub const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";

#[derive(Subcommand, Debug)]
pub enum StackCommand {
    /// Deploy a new stack or update an existing one
    Deploy {
        /// Path to a Compose file
        #[arg(short = 'c', long = "compose-file", value_name = "FILE")]
        compose_file: String,
        /// Stack name
        name: String,
    },
    /// List stacks
    #[command(alias = "list")]
    Ls {
        /// Format output: "table", "table TEMPLATE", "json", or a Go template
        #[arg(long, value_name = "FORMAT")]
        format: Option<String>,
    },
    /// List the services in a stack
    Services {
        name: String,
        /// Only display IDs
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        list: crate::listing::ListFlags,
    },
    /// List the tasks in a stack
    Ps {
        name: String,
        /// Only display task IDs
        #[arg(short, long)]
        quiet: bool,
        /// Do not truncate output
        #[arg(long)]
        no_trunc: bool,
        #[command(flatten)]
        list: crate::listing::ListFlags,
    },
    /// Remove one or more stacks
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// What a Compose file asks for, checked: networks to create and services to create or update.
#[derive(Debug, Clone, PartialEq)]
pub struct StackPlan {
    pub networks: Vec<NetworkSpec>,
    /// External networks the services use, by their own names.
    pub external: Vec<String>,
    pub services: Vec<CreatePlan>,
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

fn duration_of(what: &str, s: &Option<String>) -> Result<u64> {
    match s {
        None => Ok(0),
        Some(v) => duration::parse_nanos(v).map_err(|e| anyhow!("{what} {v:?}: {e}")),
    }
}

fn healthcheck(h: &compose::Healthcheck) -> Result<HealthConfig> {
    if h.disable {
        return Ok(HealthConfig {
            test: vec!["NONE".into()],
            ..Default::default()
        });
    }
    let test = match &h.test {
        None => bail!("healthcheck needs a test (or disable: true)"),
        Some(compose::Words::Line(s)) => vec!["CMD-SHELL".to_string(), s.clone()],
        Some(compose::Words::List(l)) => match l.first().map(String::as_str) {
            Some("CMD") | Some("CMD-SHELL") | Some("NONE") => l.clone(),
            _ => bail!("healthcheck test must start with CMD, CMD-SHELL or NONE"),
        },
    };
    Ok(HealthConfig {
        test,
        interval: duration_of("healthcheck interval", &h.interval)? as i64,
        timeout: duration_of("healthcheck timeout", &h.timeout)? as i64,
        retries: h.retries.unwrap_or(0) as i64,
        start_period: duration_of("healthcheck start_period", &h.start_period)? as i64,
        start_interval: 0,
    })
}

fn service_options(
    stack: &str,
    name: &str,
    svc: &compose::Service,
    networks: &BTreeMap<String, String>,
) -> Result<CreateOptions> {
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
        Some("global") => true,
        Some(m) => bail!("deploy.mode {m:?}: use replicated or global"),
    };
    let endpoint_mode = match deploy.and_then(|d| d.endpoint_mode.as_deref()) {
        None => None,
        Some("vip") => Some(EndpointMode::Vip),
        Some("dnsrr") => Some(EndpointMode::Dnsrr),
        Some(m) => bail!("deploy.endpoint_mode {m:?}: use vip or dnsrr"),
    };
    let update = deploy.and_then(|d| d.update_config.as_ref());
    let update_order = match update.and_then(|u| u.order.as_deref()) {
        None => None,
        Some("stop-first") => Some(UpdateOrder::StopFirst),
        Some("start-first") => Some(UpdateOrder::StartFirst),
        Some(o) => bail!("deploy.update_config.order {o:?}: use stop-first or start-first"),
    };
    let mut nets = Vec::new();
    let entries = match &svc.networks {
        Some(n) => n.entries(),
        None => vec![("default".to_string(), vec![])],
    };
    for (key, aliases) in entries {
        let Some(full) = networks.get(&key) else {
            bail!("network {key:?} is not declared under the file's top-level networks");
        };
        if aliases.is_empty() {
            nets.push(full.clone());
        }
        for a in aliases {
            nets.push(format!("name={full},alias={a}"));
        }
    }
    Ok(CreateOptions {
        name: format!("{stack}_{name}"),
        replicas: deploy.and_then(|d| d.replicas),
        global,
        native: svc.image.is_none(),
        args,
        networks: nets,
        publish: svc.ports.iter().map(compose::Port::to_flag).collect(),
        endpoint_mode,
        constraints: deploy
            .and_then(|d| d.placement.as_ref())
            .map(|p| p.constraints.clone())
            .unwrap_or_default(),
        env: svc
            .environment
            .as_ref()
            .map(compose::Environment::to_flags)
            .unwrap_or_default(),
        labels: vec![format!("{NAMESPACE_LABEL}={stack}")],
        update_parallelism: update.and_then(|u| u.parallelism),
        update_delay: match update.map(|u| &u.delay) {
            Some(d @ Some(_)) => Some(duration_of("deploy.update_config.delay", d)?),
            _ => None,
        },
        update_order,
        health: svc.healthcheck.as_ref().map(healthcheck).transpose()?,
        ..Default::default()
    })
}

/// Checks the whole file and builds what `deploy` sends. Pure: no daemon involved.
pub fn plan(
    stack: &str,
    file: &ComposeFile,
    lookup_env: &dyn Fn(&str) -> Option<String>,
) -> Result<StackPlan> {
    check_name(stack)?;
    if file.services.is_empty() {
        bail!("the Compose file defines no services");
    }
    // File key -> the network's name in the swarm.
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut networks = Vec::new();
    let mut external = Vec::new();
    let uses_default = file.services.values().any(|s| s.networks.is_none());
    let mut declared: Vec<(String, compose::Network)> = file
        .networks
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_ref().map(|n| compose::Network {
                    driver: n.driver.clone(),
                    attachable: n.attachable,
                    ipam: n.ipam.as_ref().map(|i| compose::Ipam {
                        config: i
                            .config
                            .iter()
                            .map(|c| compose::IpamConfig {
                                subnet: c.subnet.clone(),
                            })
                            .collect(),
                    }),
                    external: n.external,
                    labels: n.labels.clone(),
                }),
            )
        })
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect();
    if uses_default && !file.networks.contains_key("default") {
        declared.push(("default".into(), compose::Network::default()));
    }
    for (key, n) in declared {
        if n.external {
            names.insert(key.clone(), key.clone());
            external.push(key);
            continue;
        }
        if let Some(d) = &n.driver
            && !d.eq_ignore_ascii_case("overlay")
        {
            bail!("network {key}: driver {d:?} is not supported; stacks use overlay networks");
        }
        let mut configs = Vec::new();
        for c in n.ipam.iter().flat_map(|i| i.config.iter()) {
            if let Some(s) = &c.subnet {
                crate::addr::Cidr::parse("ipam.config.subnet", s)
                    .with_context(|| format!("network {key}"))?;
                configs.push(IpamConfig {
                    subnet: s.clone(),
                    gateway: String::new(),
                });
            }
        }
        let mut labels = n.labels.clone();
        labels.insert(NAMESPACE_LABEL.into(), stack.into());
        let full = format!("{stack}_{key}");
        names.insert(key, full.clone());
        networks.push(NetworkSpec {
            name: full,
            labels,
            driver_configuration: Driver {
                name: "overlay".into(),
                options: Default::default(),
            },
            ingress: false,
            attachable: n.attachable,
            ipam_options: IpamOptions { configs },
        });
    }
    let mut services = Vec::new();
    for (name, svc) in &file.services {
        let opts = service_options(stack, name, svc, &names)
            .map_err(|e| anyhow!("service {name}: {e}"))?;
        let plan =
            spec::create_plan(&opts, lookup_env).map_err(|e| anyhow!("service {name}: {e}"))?;
        services.push(plan);
    }
    Ok(StackPlan {
        networks,
        external,
        services,
    })
}

fn in_stack<'a>(services: &'a [ServiceView], stack: &str) -> Vec<&'a ServiceView> {
    services
        .iter()
        .filter(|v| {
            v.service
                .spec
                .labels
                .get(NAMESPACE_LABEL)
                .map(String::as_str)
                == Some(stack)
        })
        .collect()
}

async fn deploy(file: &str, stack: &str, daemon: &mut Daemon, out: &mut Output) -> Result<()> {
    let text = std::fs::read_to_string(file).map_err(|e| anyhow!("{file}: {e}"))?;
    let parsed = compose::parse(&text).map_err(|e| anyhow!("{file}: {e}"))?;
    let plan =
        plan(stack, &parsed, &|k| std::env::var(k).ok()).map_err(|e| anyhow!("{file}: {e}"))?;
    // Everything the plan refers to must exist before anything is changed.
    let existing: BTreeMap<String, Network> = daemon
        .networks()
        .await?
        .into_iter()
        .map(|n| (n.spec.name.clone(), n))
        .collect();
    for e in &plan.external {
        if !existing.contains_key(e) {
            bail!("{file}: external network {e} does not exist; create it first");
        }
    }
    // One request: the manager applies the networks and services all together or refuses
    // the whole deploy, so a refused service never leaves the ones before it half-deployed.
    let services = plan
        .services
        .into_iter()
        .map(|mut svc| {
            // Targets go by name; the manager resolves them, including networks it is
            // about to create.
            let names: BTreeMap<String, String> = svc
                .networks
                .iter()
                .map(|n| (n.name.clone(), n.name.clone()))
                .collect();
            svc.spec.task_template.networks = spec::attachments(&svc.networks, &names);
            svc.spec
        })
        .collect();
    let done = daemon
        .stack_deploy(ControlRequest::StackDeploy {
            networks: plan.networks,
            services,
        })
        .await?;
    for n in &done.created_networks {
        print(out, &format!("Creating network {n}\n"))?;
    }
    for (name, id) in &done.updated_services {
        print(out, &format!("Updating service {name} (id: {id})\n"))?;
    }
    for (name, _) in &done.created_services {
        print(out, &format!("Creating service {name}\n"))?;
    }
    Ok(())
}

fn render_stacks(services: &[ServiceView]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for v in services {
        if let Some(s) = v.service.spec.labels.get(NAMESPACE_LABEL) {
            *counts.entry(s).or_default() += 1;
        }
    }
    let mut t = Table::new(["NAME", "SERVICES"]);
    for (name, n) in counts {
        t.row([name.to_string(), n.to_string()]);
    }
    t.render()
}

async fn remove(stack: &str, daemon: &mut Daemon, out: &mut Output) -> Result<()> {
    let services = daemon.services().await?;
    let mine: Vec<&ServiceView> = in_stack(&services, stack);
    let networks: Vec<Network> = daemon
        .networks()
        .await?
        .into_iter()
        .filter(|n| n.spec.labels.get(NAMESPACE_LABEL).map(String::as_str) == Some(stack))
        .collect();
    if mine.is_empty() && networks.is_empty() {
        bail!("nothing found in stack {stack}");
    }
    for v in mine {
        print(out, &format!("Removing service {}\n", v.service.spec.name))?;
        daemon
            .done(ControlRequest::ServiceRemove {
                service: v.service.id.clone(),
            })
            .await?;
    }
    // A network goes once its tasks have stopped.
    for n in networks {
        print(out, &format!("Removing network {}\n", n.spec.name))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match daemon
                .done(ControlRequest::NetworkRemove {
                    network: n.id.clone(),
                })
                .await
            {
                Ok(()) => break,
                Err(e) if Instant::now() < deadline && e.to_string().contains("still uses it") => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

pub async fn run(cmd: StackCommand, daemon: &mut Daemon, out: &mut Output) -> Result<()> {
    match cmd {
        StackCommand::Deploy { compose_file, name } => {
            deploy(&compose_file, &name, daemon, out).await
        }
        StackCommand::Ls { format } => {
            let ls = crate::listing::StackLs::new(format.as_deref())?;
            let services = daemon.services().await?;
            print(
                out,
                &ls.render(&services)?
                    .unwrap_or_else(|| render_stacks(&services)),
            )
        }
        StackCommand::Services { name, quiet, list } => {
            let ls = crate::listing::ServiceLs::new(quiet, &list)?;
            let services = daemon.services().await?;
            let mine: Vec<ServiceView> = in_stack(&services, &name).into_iter().cloned().collect();
            if mine.is_empty() {
                bail!("nothing found in stack {name}");
            }
            print(out, &ls.render(&mine)?)
        }
        StackCommand::Ps {
            name,
            quiet,
            no_trunc,
            list,
        } => {
            let services = daemon.services().await?;
            let ids: BTreeSet<String> = in_stack(&services, &name)
                .iter()
                .map(|v| v.service.id.clone())
                .collect();
            if ids.is_empty() {
                bail!("nothing found in stack {name}");
            }
            let ids: Vec<String> = ids.into_iter().collect();
            crate::service::ps(&ids, quiet, no_trunc, &list, daemon, out).await
        }
        StackCommand::Rm { names } => {
            for n in &names {
                remove(n, daemon, out).await?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests;
