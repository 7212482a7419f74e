//! `shoal service ...`: create, list, inspect, scale, update and remove services.

pub mod args;
pub mod files;
pub mod options;
pub mod render;
pub mod spec;

use crate::daemon::Daemon;
use crate::duration;
use crate::format::now_nanos;
use crate::resolve;
use crate::{Output, print};
use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use shoal_api::control::ControlRequest;
use shoal_api::objects::{EndpointMode, RestartCondition, UpdateOrder};
use spec::{CreateOptions, UpdateFlags, UpdateOps};

#[derive(Subcommand, Debug)]
pub enum ServiceCommand {
    /// Create a new service
    Create(Box<CreateArgs>),
    /// List services
    #[command(visible_alias = "list")]
    Ls {
        /// Only display IDs
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        list: crate::listing::ListFlags,
    },
    /// List the tasks of one or more services
    Ps {
        /// Only display task IDs
        #[arg(short, long)]
        quiet: bool,
        /// Do not truncate output
        #[arg(long)]
        no_trunc: bool,
        #[command(flatten)]
        list: crate::listing::ListFlags,
        #[arg(required = true, value_name = "SERVICE")]
        services: Vec<String>,
    },
    /// Display detailed information on one or more services
    Inspect {
        /// Print the information in a human friendly format
        #[arg(long)]
        pretty: bool,
        /// Format output using a Go template (or "json")
        #[arg(short, long, value_name = "FORMAT")]
        format: Option<String>,
        #[arg(required = true, value_name = "SERVICE")]
        services: Vec<String>,
    },
    /// Scale one or more replicated services
    Scale {
        /// Detach immediately (accepted for Docker compatibility; shoal never waits)
        #[arg(short, long)]
        detach: bool,
        #[arg(required = true, value_name = "SERVICE=REPLICAS")]
        scales: Vec<String>,
    },
    /// Update a service
    Update(Box<UpdateArgs>),
    /// Revert changes to a service's configuration
    Rollback {
        /// Exit immediately (accepted for Docker compatibility; shoal never waits)
        #[arg(short, long)]
        detach: bool,
        /// Suppress progress output
        #[arg(short, long)]
        quiet: bool,
        service: String,
    },
    /// Remove one or more services
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true, value_name = "SERVICE")]
        services: Vec<String>,
    },
    /// Fetch the output of a service's tasks
    Logs {
        /// Follow the output
        #[arg(short, long)]
        follow: bool,
        /// Number of lines from the end of each task's output, or "all"
        #[arg(short = 'n', long, default_value = "all")]
        tail: String,
        /// Do not truncate task ids
        #[arg(long)]
        no_trunc: bool,
        /// Show when each line was written
        #[arg(short, long)]
        timestamps: bool,
        /// Only lines written since this time: RFC 3339 (2026-12-04T18:00:00Z), Unix
        /// seconds, or a duration before now (10m, 1h30m)
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        service: String,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeArg {
    Replicated,
    Global,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointModeArg {
    Vip,
    Dnsrr,
}

impl From<EndpointModeArg> for EndpointMode {
    fn from(m: EndpointModeArg) -> EndpointMode {
        match m {
            EndpointModeArg::Vip => EndpointMode::Vip,
            EndpointModeArg::Dnsrr => EndpointMode::Dnsrr,
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionAffinityArg {
    None,
    #[value(name = "client-ip", alias = "clientip")]
    ClientIp,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateOrderArg {
    StopFirst,
    StartFirst,
}

impl From<UpdateOrderArg> for UpdateOrder {
    fn from(o: UpdateOrderArg) -> UpdateOrder {
        match o {
            UpdateOrderArg::StopFirst => UpdateOrder::StopFirst,
            UpdateOrderArg::StartFirst => UpdateOrder::StartFirst,
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartConditionArg {
    Any,
    OnFailure,
    None,
}

impl From<RestartConditionArg> for RestartCondition {
    fn from(c: RestartConditionArg) -> RestartCondition {
        match c {
            RestartConditionArg::Any => RestartCondition::Any,
            RestartConditionArg::OnFailure => RestartCondition::OnFailure,
            RestartConditionArg::None => RestartCondition::None,
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RuntimeArg {
    #[default]
    Docker,
    Native,
}

/// Flags shared by `create` and `update` that change the same spec fields.
#[derive(Args, Debug, Default)]
pub struct CommonArgs {
    /// Endpoint mode
    #[arg(long, value_enum)]
    pub endpoint_mode: Option<EndpointModeArg>,
    /// Keep each client on one task (client-ip, like Kubernetes' ClientIP), or not (none)
    #[arg(long, value_enum)]
    pub session_affinity: Option<SessionAffinityArg>,
    /// How long a client keeps its task after its last connection (default 3h, at most 24h)
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_nanos)]
    pub session_affinity_timeout: Option<u64>,
    /// Time to wait before force killing a task
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_nanos)]
    pub stop_grace_period: Option<u64>,
    /// Maximum number of tasks updated simultaneously (0 to update all at once)
    #[arg(long, value_name = "N")]
    pub update_parallelism: Option<u64>,
    /// Delay between updates
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_nanos)]
    pub update_delay: Option<u64>,
    /// Update order
    #[arg(long, value_enum)]
    pub update_order: Option<UpdateOrderArg>,
    /// Restart when condition is met
    #[arg(long, value_enum)]
    pub restart_condition: Option<RestartConditionArg>,
    /// Delay between restart attempts
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_nanos)]
    pub restart_delay: Option<u64>,
    /// Maximum number of restarts before giving up (0: no limit)
    #[arg(long, value_name = "N")]
    pub restart_max_attempts: Option<u64>,
    /// Exit immediately (accepted for Docker compatibility; shoal never waits)
    #[arg(short, long)]
    pub detach: bool,
    /// Suppress progress output
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Service name
    #[arg(long)]
    pub name: Option<String>,
    /// Send registry authentication details to swarm agents
    #[arg(long)]
    pub with_registry_auth: bool,
    /// Do not query the registry to resolve image digest (shoal never does; accepted)
    #[arg(long)]
    pub no_resolve_image: bool,
    /// Number of tasks
    #[arg(long, value_name = "N")]
    pub replicas: Option<u64>,
    /// Service mode
    #[arg(long, value_enum, default_value = "replicated")]
    pub mode: ModeArg,
    /// Network attachments (NAME, or name=NAME,alias=ALIAS)
    #[arg(long, value_name = "NETWORK")]
    pub network: Vec<String>,
    /// Publish a port: [PUBLISHED:]TARGET[/PROTOCOL] or published=P,target=T,protocol=udp,mode=host
    #[arg(short, long, value_name = "SPEC")]
    pub publish: Vec<String>,
    /// Placement constraints (e.g. node.role==manager)
    #[arg(long, value_name = "EXPR")]
    pub constraint: Vec<String>,
    /// Set environment variables
    #[arg(short, long, value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Service labels
    #[arg(short, long, value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Task runtime: docker containers, or plain processes (native)
    #[arg(long, value_enum, default_value = "docker")]
    pub runtime: RuntimeArg,
    #[command(flatten)]
    pub shared: args::SharedArgs,
    #[command(flatten)]
    pub lists: args::CreateListArgs,
    #[command(flatten)]
    pub common: CommonArgs,
    /// IMAGE [ARG...], or COMMAND [ARG...] with --runtime native
    #[arg(
        value_name = "IMAGE_OR_COMMAND",
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// Number of tasks
    #[arg(long, value_name = "N")]
    pub replicas: Option<u64>,
    /// Service image tag
    #[arg(long)]
    pub image: Option<String>,
    /// Service command args (the command of a native service), split on whitespace
    #[arg(long, allow_hyphen_values = true)]
    pub args: Option<String>,
    /// Add or update an environment variable
    #[arg(long, value_name = "KEY=VALUE")]
    pub env_add: Vec<String>,
    /// Remove an environment variable
    #[arg(long, value_name = "KEY")]
    pub env_rm: Vec<String>,
    /// Add or update a published port
    #[arg(long, value_name = "SPEC", alias = "port-add")]
    pub publish_add: Vec<String>,
    /// Remove a published port (PUBLISHED, PUBLISHED:TARGET, or the target port)
    #[arg(long, value_name = "SPEC", alias = "port-rm")]
    pub publish_rm: Vec<String>,
    /// Add a network
    #[arg(long, value_name = "NETWORK")]
    pub network_add: Vec<String>,
    /// Remove a network
    #[arg(long, value_name = "NETWORK")]
    pub network_rm: Vec<String>,
    /// Add or update a placement constraint
    #[arg(long, value_name = "EXPR")]
    pub constraint_add: Vec<String>,
    /// Remove a constraint
    #[arg(long, value_name = "EXPR")]
    pub constraint_rm: Vec<String>,
    /// Add or update a service label
    #[arg(long, value_name = "KEY=VALUE")]
    pub label_add: Vec<String>,
    /// Remove a label by its key
    #[arg(long, value_name = "KEY")]
    pub label_rm: Vec<String>,
    /// Force update even if no changes require it
    #[arg(long)]
    pub force: bool,
    /// Roll back to the previous specification
    #[arg(long)]
    pub rollback: bool,
    /// Send registry authentication details to swarm agents
    #[arg(long)]
    pub with_registry_auth: bool,
    /// Do not query the registry to resolve image digest (shoal never does; accepted)
    #[arg(long)]
    pub no_resolve_image: bool,
    #[command(flatten)]
    pub shared: args::SharedArgs,
    #[command(flatten)]
    pub lists: args::UpdateListArgs,
    #[command(flatten)]
    pub common: CommonArgs,
    pub service: String,
}

pub async fn run(cmd: ServiceCommand, daemon: &mut Daemon, out: &mut Output) -> Result<()> {
    match cmd {
        ServiceCommand::Create(args) => create(*args, daemon, out).await,
        ServiceCommand::Logs {
            follow,
            tail,
            no_trunc,
            timestamps,
            since,
            service,
        } => {
            let opts = LogsOptions {
                follow,
                tail: parse_tail(&tail)?,
                since: since.as_deref().map(parse_since).transpose()?,
                no_trunc,
                timestamps,
            };
            logs(&service, &opts, daemon, out).await
        }
        ServiceCommand::Ls { quiet, list } => {
            let ls = crate::listing::ServiceLs::new(quiet, &list)?;
            let services = daemon.services().await?;
            print(out, &ls.render(&services)?)
        }
        ServiceCommand::Ps {
            quiet,
            no_trunc,
            list,
            services,
        } => ps(&services, quiet, no_trunc, &list, daemon, out).await,
        ServiceCommand::Inspect {
            pretty,
            format,
            services,
        } => {
            let inspect = crate::listing::Inspect::new(format.as_deref())?;
            if pretty && inspect.is_template() {
                anyhow::bail!("--format is incompatible with human friendly format");
            }
            let mut views = Vec::new();
            for s in &services {
                views.push(daemon.service(s).await?);
            }
            if pretty {
                let text: Vec<String> = views.iter().map(render::render_pretty).collect();
                print(out, &text.join("\n"))
            } else {
                print(out, &inspect.render(&views)?)
            }
        }
        ServiceCommand::Scale { detach: _, scales } => scale(&scales, daemon, out).await,
        ServiceCommand::Update(args) => update(*args, daemon, out).await,
        ServiceCommand::Rollback {
            detach: _,
            quiet: _,
            service,
        } => rollback(&service, daemon, out).await,
        ServiceCommand::Rm { services } => {
            // Resolve every name first so that a typo removes nothing.
            let mut ids = Vec::new();
            for s in &services {
                ids.push(daemon.service(s).await?.service.id);
            }
            for (name, id) in services.iter().zip(ids) {
                daemon
                    .done(ControlRequest::ServiceRemove { service: id })
                    .await?;
                print(out, &format!("{name}\n"))?;
            }
            Ok(())
        }
    }
}

fn lookup_env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

fn affinity_flags(c: &CommonArgs) -> spec::AffinityFlags {
    spec::AffinityFlags {
        client_ip: c
            .session_affinity
            .map(|a| a == SessionAffinityArg::ClientIp),
        timeout_ns: c.session_affinity_timeout,
    }
}

pub fn create_options(args: &CreateArgs) -> Result<CreateOptions> {
    let c = &args.common;
    let mut edits = args.shared.edits()?;
    args.lists.add_to(&mut edits)?;
    // Docker reads --env-file first, so --env wins over it.
    let mut env = Vec::new();
    for path in &args.lists.env_file {
        let text =
            std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("--env-file {path}: {e}"))?;
        env.extend(options::parse_env_file(path, &text, &lookup_env).map_err(anyhow::Error::msg)?);
    }
    env.extend(args.env.iter().cloned());
    Ok(CreateOptions {
        name: args.name.clone().unwrap_or_default(),
        replicas: args.replicas,
        global: args.mode == ModeArg::Global,
        native: args.runtime == RuntimeArg::Native,
        args: args.args.clone(),
        networks: args.network.clone(),
        publish: args.publish.clone(),
        endpoint_mode: c.endpoint_mode.map(Into::into),
        affinity: affinity_flags(c),
        stop_grace_period: c.stop_grace_period,
        constraints: args.constraint.clone(),
        env,
        labels: args.label.clone(),
        update_parallelism: c.update_parallelism,
        update_delay: c.update_delay,
        update_order: c.update_order.map(Into::into),
        restart_condition: c.restart_condition.map(Into::into),
        restart_delay: c.restart_delay,
        restart_max_attempts: c.restart_max_attempts,
        edits,
    })
}

async fn create(args: CreateArgs, daemon: &mut Daemon, out: &mut Output) -> Result<()> {
    let mut plan = spec::create_plan(&create_options(&args)?, &lookup_env)?;
    if plan.spec.name.is_empty() {
        plan.spec.name = spec::random_name(now_nanos() as u64 ^ u64::from(std::process::id()));
    }
    let ids = resolve::network_ids(daemon, plan.networks.iter().map(|n| n.name.as_str())).await?;
    plan.spec.task_template.networks = spec::attachments(&plan.networks, &ids);
    let registry_auth = registry_auth_for(
        args.with_registry_auth,
        &plan.spec.task_template.container_spec.image,
    )?;
    let id = daemon
        .created(ControlRequest::ServiceCreate {
            spec: plan.spec,
            registry_auth,
        })
        .await?;
    print(out, &format!("{id}\n"))
}

pub fn update_ops(args: &UpdateArgs) -> Result<UpdateOps, spec::SpecError> {
    let c = &args.common;
    let mut edits = args.shared.edits()?;
    args.lists.add_to(&mut edits)?;
    let ops = UpdateOps {
        replicas: args.replicas,
        image: args.image.clone(),
        env_rm: args.env_rm.clone(),
        network_rm: args.network_rm.clone(),
        constraint_rm: args.constraint_rm.clone(),
        endpoint_mode: c.endpoint_mode.map(Into::into),
        affinity: affinity_flags(c),
        stop_grace_period: c.stop_grace_period,
        update_parallelism: c.update_parallelism,
        update_delay: c.update_delay,
        update_order: c.update_order.map(Into::into),
        restart_condition: c.restart_condition.map(Into::into),
        restart_delay: c.restart_delay,
        restart_max_attempts: c.restart_max_attempts,
        force: args.force,
        label_rm: args.label_rm.clone(),
        edits,
        ..UpdateOps::default()
    };
    let flags = UpdateFlags {
        args: args.args.as_deref(),
        env_add: &args.env_add,
        publish_add: &args.publish_add,
        publish_rm: &args.publish_rm,
        network_add: &args.network_add,
        constraint_add: &args.constraint_add,
        label_add: &args.label_add,
    };
    ops.parse(&flags, &lookup_env)
}

/// `service rollback` and `service update --rollback`: the manager swaps in the previous
/// spec and rolls it out with the rollback config.
async fn rollback(service: &str, daemon: &mut Daemon, out: &mut Output) -> Result<()> {
    let id = daemon.service(service).await?.service.id;
    daemon
        .done(ControlRequest::ServiceRollback { service: id })
        .await?;
    print(out, &format!("{service}\n"))
}

/// `--with-registry-auth`: the user's credentials for the registry of `image`, if any.
pub(crate) fn registry_auth_for(
    given: bool,
    image: &str,
) -> Result<Option<shoal_api::registry_auth::RegistryAuth>> {
    if !given {
        return Ok(None);
    }
    Ok(crate::registry_auth::for_image(image)?)
}

async fn update(args: UpdateArgs, daemon: &mut Daemon, out: &mut Output) -> Result<()> {
    let ops = update_ops(&args)?;
    if args.rollback {
        if ops != UpdateOps::default() {
            anyhow::bail!(
                "--rollback cannot be combined with other changes; roll back first, then update"
            );
        }
        return rollback(&args.service, daemon, out).await;
    }
    let view = daemon.service(&args.service).await?;
    let ids = resolve::network_ids(daemon, ops.network_names()).await?;
    let new_spec = spec::apply_update(&view, &ops, &ids)?;
    let registry_auth = registry_auth_for(
        args.with_registry_auth,
        &new_spec.task_template.container_spec.image,
    )?;
    daemon
        .done(ControlRequest::ServiceUpdate {
            service: view.service.id.clone(),
            version: view.service.version.index,
            spec: new_spec,
            registry_auth,
        })
        .await?;
    print(out, &format!("{}\n", args.service))
}

async fn scale(scales: &[String], daemon: &mut Daemon, out: &mut Output) -> Result<()> {
    let parsed = scales
        .iter()
        .map(|s| spec::parse_scale(s))
        .collect::<Result<Vec<_>, _>>()?;
    // Check every service before changing any.
    let mut updates = Vec::new();
    for (name, replicas) in &parsed {
        let view = daemon.service(name).await?;
        let new_spec = spec::scaled(&view.service.spec, *replicas)
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        updates.push((name, *replicas, view, new_spec));
    }
    for (name, replicas, view, new_spec) in updates {
        daemon
            .done(ControlRequest::ServiceUpdate {
                service: view.service.id.clone(),
                version: view.service.version.index,
                spec: new_spec,
                registry_auth: None,
            })
            .await?;
        print(out, &format!("{name} scaled to {replicas}\n"))?;
    }
    Ok(())
}

pub(crate) async fn ps(
    services: &[String],
    quiet: bool,
    no_trunc: bool,
    list: &crate::listing::ListFlags,
    daemon: &mut Daemon,
    out: &mut Output,
) -> Result<()> {
    let ps = crate::listing::TaskPs::new(quiet, no_trunc, list)?;
    let mut all = Vec::new();
    let mut views: Vec<shoal_api::control::ServiceView> = Vec::new();
    for s in services {
        let view = daemon.service(s).await?;
        if views.iter().any(|v| v.service.id == view.service.id) {
            continue;
        }
        all.extend(daemon.tasks(Some(view.service.id.clone()), None).await?);
        views.push(view);
    }
    print(out, &ps.render(daemon, &all, &views, now_nanos()).await?)
}

/// `--tail`: a count or "all".
fn parse_tail(tail: &str) -> Result<Option<u64>> {
    if tail == "all" {
        return Ok(None);
    }
    tail.parse()
        .map(Some)
        .map_err(|_| anyhow::anyhow!("invalid --tail {tail:?}: use a number of lines or \"all\""))
}

/// Docker's prefix: `service.slot.taskid@node`, the task id cut to 12 characters.
pub fn log_prefix(line: &shoal_api::logs::LogLine, no_trunc: bool) -> String {
    let name = if no_trunc {
        line.task_name.clone()
    } else {
        match line.task_name.rsplit_once('.') {
            Some((head, id)) => format!("{head}.{}", &id[..id.len().min(12)]),
            None => line.task_name.clone(),
        }
    };
    format!("{name}@{}", line.node_name)
}

struct LogsOptions {
    follow: bool,
    tail: Option<u64>,
    /// Unix nanoseconds.
    since: Option<i64>,
    no_trunc: bool,
    timestamps: bool,
}

/// `--since` as Docker's CLI takes it, as Unix nanoseconds.
fn parse_since(v: &str) -> Result<i64> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(v, &Rfc3339) {
        return Ok(t.unix_timestamp_nanos() as i64);
    }
    if let Ok(secs) = v.parse::<f64>()
        && secs >= 0.0
    {
        return Ok((secs * 1e9) as i64);
    }
    if let Ok(ago) = crate::duration::parse_nanos(v) {
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
        return Ok(now.saturating_sub(ago as i64));
    }
    Err(anyhow::anyhow!(
        "invalid --since {v:?}: give a time (2026-12-04T18:00:00Z), Unix seconds, or a duration before now (10m)"
    ))
}

async fn logs(
    service: &str,
    opts: &LogsOptions,
    daemon: &mut Daemon,
    out: &mut Output,
) -> Result<()> {
    let mut stream = daemon
        .stream(&shoal_api::local::LocalStreamRequest::ServiceLogs(
            shoal_api::logs::LogsRequest {
                service: service.to_string(),
                follow: opts.follow,
                tail: opts.tail,
                since: opts.since,
            },
        ))
        .await?;
    while let Some(frame) = stream
        .message()
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
    {
        let line: shoal_api::logs::LogLine =
            shoal_api::wire::unframe(&frame).map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        let at = match (opts.timestamps, line.time) {
            (false, _) => String::new(),
            (true, t) => format!(
                "{} ",
                t.map(shoal_api::logs::format_time)
                    .as_deref()
                    .unwrap_or(shoal_api::logs::ZERO_TIME)
            ),
        };
        print(
            out,
            &format!(
                "{at}{}    | {}\n",
                log_prefix(&line, opts.no_trunc),
                line.line
            ),
        )?;
    }
    Ok(())
}
