//! `shoal stack deploy|ls|services|ps|rm`: a Compose file as a set of services, overlay
//! networks, secrets and configs named `<stack>_<name>` and labelled with the stack, like
//! Docker does. The whole file is read, every service checked and every secret's and
//! config's data read before anything is sent; a redeploy updates only the services whose
//! spec changed.

pub mod compose;
pub mod convert;
pub mod files;
pub mod interpolate;
pub mod load;

use crate::daemon::Daemon;
use crate::service::spec::{self, CreatePlan};
use crate::table::Table;
use crate::{Output, print};
use anyhow::{Result, anyhow, bail};
use clap::Subcommand;
use shoal_api::control::{ControlRequest, ControlResponse, ServiceView, StackSecret};
use shoal_api::objects::*;
use shoal_api::secrets::ConfigSpec;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Docker's label for the stack an object belongs to.
pub const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";

#[derive(Subcommand, Debug)]
pub enum StackCommand {
    /// Deploy a new stack or update an existing one
    Deploy {
        /// Path to a Compose file, or "-" to read from stdin (repeat to merge files in order)
        #[arg(
            short = 'c',
            long = "compose-file",
            value_name = "FILE",
            required = true
        )]
        compose_file: Vec<String>,
        /// Prune services that are no longer referenced
        #[arg(long)]
        prune: bool,
        /// Send registry authentication details to Swarm agents
        #[arg(long)]
        with_registry_auth: bool,
        /// Query the registry to resolve image digest and supported platforms (accepted;
        /// shoal pulls on the node)
        #[arg(long, value_name = "always|changed|never")]
        resolve_image: Option<String>,
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

/// What a Compose file asks for, checked: networks, secrets and configs to create, and
/// services to create or update.
#[derive(Debug, Clone, PartialEq)]
pub struct StackPlan {
    pub networks: Vec<NetworkSpec>,
    /// External networks the services use, by their own names.
    pub external: Vec<String>,
    pub services: Vec<CreatePlan>,
    /// With their data, read and size-checked.
    pub secrets: Vec<StackSecret>,
    pub configs: Vec<ConfigSpec>,
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

/// Reads the `-c` files (`-` is standard input) in order.
fn read_sources(files: &[String]) -> Result<Vec<load::Source>> {
    let mut out = Vec::new();
    for f in files {
        let text = if f == "-" {
            std::io::read_to_string(std::io::stdin()).map_err(|e| anyhow!("stdin: {e}"))?
        } else {
            std::fs::read_to_string(f).map_err(|e| anyhow!("{f}: {e}"))?
        };
        out.push(load::Source {
            name: f.clone(),
            text,
        });
    }
    Ok(out)
}

/// Loads, merges and converts the files: everything `deploy` checks before it sends.
pub fn plan_files(
    stack: &str,
    sources: &[load::Source],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(StackPlan, Vec<String>)> {
    plan_files_reading(stack, sources, lookup, &|p| std::fs::read(p))
}

/// [`plan_files`] with the files the stack names (env files, secret and config data) read
/// through `read`.
pub fn plan_files_reading(
    stack: &str,
    sources: &[load::Source],
    lookup: &dyn Fn(&str) -> Option<String>,
    read: &dyn Fn(&std::path::Path) -> std::io::Result<Vec<u8>>,
) -> Result<(StackPlan, Vec<String>)> {
    let loaded = load::load(sources, lookup).map_err(anyhow::Error::msg)?;
    // Docker takes relative paths from the first file's directory (stdin: the current one).
    let workdir = match sources.first().map(|s| s.name.as_str()) {
        Some("-") | None => std::env::current_dir().unwrap_or_else(|_| "/".into()),
        Some(f) => std::path::Path::new(f)
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    std::env::current_dir().unwrap_or_else(|_| "/".into())
                } else {
                    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
                }
            })
            .unwrap_or_else(|| "/".into()),
    };
    let env = convert::Env {
        stack,
        workdir: &workdir,
        lookup,
        read,
    };
    let first = sources.first().map(|s| s.name.clone()).unwrap_or_default();
    let plan = convert::plan(&env, &loaded.file).map_err(|e| anyhow!("{first}: {e}"))?;
    Ok((plan, loaded.warnings))
}

async fn deploy(
    files: &[String],
    stack: &str,
    prune: bool,
    with_registry_auth: bool,
    daemon: &mut Daemon,
    out: &mut Output,
) -> Result<()> {
    let sources = read_sources(files)?;
    let (plan, warnings) = plan_files(stack, &sources, &|k| std::env::var(k).ok())?;
    for w in &warnings {
        eprintln!("{w}");
    }
    let file = files.join(", ");
    let file = file.as_str();
    let wanted: BTreeSet<String> = plan.services.iter().map(|s| s.spec.name.clone()).collect();
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
    // `--with-registry-auth`: each service gets the credentials for its own image's registry.
    let mut registry_auth = BTreeMap::new();
    if with_registry_auth {
        for svc in &plan.services {
            let image = &svc.spec.task_template.container_spec.image;
            if let Some(auth) = crate::service::registry_auth_for(true, image)? {
                registry_auth.insert(svc.spec.name.clone(), auth);
            }
        }
    }
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
            registry_auth,
            secrets: plan.secrets,
            configs: plan.configs,
        })
        .await?;
    // In docker/cli's order: networks, secrets, configs, then services.
    for n in &done.created_networks {
        print(out, &format!("Creating network {n}\n"))?;
    }
    for n in &done.created_secrets {
        print(out, &format!("Creating secret {n}\n"))?;
    }
    for n in &done.created_configs {
        print(out, &format!("Creating config {n}\n"))?;
    }
    for (name, id) in &done.updated_services {
        print(out, &format!("Updating service {name} (id: {id})\n"))?;
    }
    for (name, _) in &done.created_services {
        print(out, &format!("Creating service {name}\n"))?;
    }
    if prune {
        // Services of the stack that the files no longer name, as Docker's --prune.
        let services = daemon.services().await?;
        for v in in_stack(&services, stack) {
            if !wanted.contains(&v.service.spec.name) {
                print(out, &format!("Removing service {}\n", v.service.spec.name))?;
                daemon
                    .done(ControlRequest::ServiceRemove {
                        service: v.service.id.clone(),
                    })
                    .await?;
            }
        }
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

fn labelled(labels: &BTreeMap<String, String>, stack: &str) -> bool {
    labels.get(NAMESPACE_LABEL).map(String::as_str) == Some(stack)
}

/// The stack's secrets and configs, as (name, id).
async fn stack_files(
    stack: &str,
    daemon: &mut Daemon,
) -> Result<(Vec<(String, String)>, Vec<(String, String)>)> {
    let secrets = match daemon.control(ControlRequest::SecretList).await? {
        ControlResponse::Secrets(list) => list
            .into_iter()
            .filter(|s| labelled(&s.spec.labels, stack))
            .map(|s| (s.spec.name, s.id))
            .collect(),
        _ => bail!("the daemon answered the secret list with something else"),
    };
    let configs = match daemon.control(ControlRequest::ConfigList).await? {
        ControlResponse::Configs(list) => list
            .into_iter()
            .filter(|c| labelled(&c.spec.labels, stack))
            .map(|c| (c.spec.name, c.id))
            .collect(),
        _ => bail!("the daemon answered the config list with something else"),
    };
    Ok((secrets, configs))
}

/// Sends a removal, retrying for a while as long as the manager says a stopping task still
/// uses the object: removed services leave tasks behind that take a moment to stop.
async fn remove_when_free(daemon: &mut Daemon, req: ControlRequest) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match daemon.done(req.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() < deadline && e.to_string().contains("still uses it") => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `stack rm` as docker/cli's: services, then secrets, configs and networks labelled with
/// the stack. A failure is reported and the rest still removed; the command then fails.
async fn remove(stack: &str, daemon: &mut Daemon, out: &mut Output) -> Result<()> {
    let services = daemon.services().await?;
    let mut mine: Vec<&ServiceView> = in_stack(&services, stack);
    mine.sort_by(|a, b| a.service.spec.name.cmp(&b.service.spec.name));
    let networks: Vec<Network> = daemon
        .networks()
        .await?
        .into_iter()
        .filter(|n| labelled(&n.spec.labels, stack))
        .collect();
    let (secrets, configs) = stack_files(stack, daemon).await?;
    if mine.is_empty() && networks.is_empty() && secrets.is_empty() && configs.is_empty() {
        bail!("nothing found in stack {stack}");
    }
    let mut failed = false;
    let mut report = |what: &str, name: &str, e: anyhow::Error| {
        eprintln!("Failed to remove {what} {name}: {e:#}");
        failed = true;
    };
    for v in mine {
        let name = &v.service.spec.name;
        print(out, &format!("Removing service {name}\n"))?;
        let req = ControlRequest::ServiceRemove {
            service: v.service.id.clone(),
        };
        if let Err(e) = daemon.done(req).await {
            report("service", name, e.into());
        }
    }
    for (name, id) in secrets {
        print(out, &format!("Removing secret {name}\n"))?;
        if let Err(e) = remove_when_free(daemon, ControlRequest::SecretRemove { secret: id }).await
        {
            report("secret", &name, e);
        }
    }
    for (name, id) in configs {
        print(out, &format!("Removing config {name}\n"))?;
        if let Err(e) = remove_when_free(daemon, ControlRequest::ConfigRemove { config: id }).await
        {
            report("config", &name, e);
        }
    }
    // A network goes once its tasks have stopped.
    for n in networks {
        print(out, &format!("Removing network {}\n", n.spec.name))?;
        let req = ControlRequest::NetworkRemove {
            network: n.id.clone(),
        };
        if let Err(e) = remove_when_free(daemon, req).await {
            report("network", &n.spec.name, e);
        }
    }
    if failed {
        bail!("failed to remove some resources from stack: {stack}");
    }
    Ok(())
}

pub async fn run(cmd: StackCommand, daemon: &mut Daemon, out: &mut Output) -> Result<()> {
    match cmd {
        StackCommand::Deploy {
            compose_file,
            prune,
            with_registry_auth,
            resolve_image: _,
            name,
        } => deploy(&compose_file, &name, prune, with_registry_auth, daemon, out).await,
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

#[cfg(test)]
mod public_tests;
