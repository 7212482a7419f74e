//! The container, resource and rollout flags of `service create|update`, with Docker's
//! names, turned into `SpecEdits`. Scalar flags are spelled the same on both commands; list
//! flags are `--x` on create and `--x-add`/`--x-rm` on update, as in Docker.

use super::files;
use super::options::{self, HealthEdits, ListEdit, RolloutEdits, SpecEdits};
use super::spec::{self, SpecError};
use crate::duration;
use clap::Args;
use shoal_api::objects::UpdateOrder;

/// `--flag`, `--flag=true` or `--flag=false`.
const OPTIONAL_BOOL: &str = "true";

#[derive(Args, Debug, Default)]
pub struct SharedArgs {
    /// Container hostname (service templates allowed, e.g. "{{.Service.Name}}-{{.Task.Slot}}")
    #[arg(long)]
    pub hostname: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image ("" resets it)
    #[arg(long, allow_hyphen_values = true)]
    pub entrypoint: Option<String>,
    /// Use an init inside each service container to forward signals and reap processes
    #[arg(long, num_args = 0..=1, default_missing_value = OPTIONAL_BOOL)]
    pub init: Option<bool>,
    /// Mount the container's root filesystem as read only
    #[arg(long, num_args = 0..=1, default_missing_value = OPTIONAL_BOOL)]
    pub read_only: Option<bool>,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long, num_args = 0..=1, default_missing_value = OPTIONAL_BOOL)]
    pub tty: Option<bool>,
    /// Signal to stop the container
    #[arg(long, value_name = "SIGNAL")]
    pub stop_signal: Option<String>,
    /// Logging driver for the service's containers
    #[arg(long, value_name = "DRIVER")]
    pub log_driver: Option<String>,
    /// Logging driver options (KEY=VALUE)
    #[arg(long, value_name = "KEY=VALUE")]
    pub log_opt: Vec<String>,
    /// Memory limit of each container (e.g. 64M)
    #[arg(long, value_name = "BYTES")]
    pub limit_memory: Option<String>,
    /// CPU limit of each container (e.g. 0.5)
    #[arg(long, value_name = "CPUS")]
    pub limit_cpu: Option<String>,
    /// Limit the number of processes of each container (0: no limit)
    #[arg(long, value_name = "N")]
    pub limit_pids: Option<i64>,
    /// Memory set aside for each task on its node (the scheduler's)
    #[arg(long, value_name = "BYTES")]
    pub reserve_memory: Option<String>,
    /// CPUs set aside for each task on its node (the scheduler's)
    #[arg(long, value_name = "CPUS")]
    pub reserve_cpu: Option<String>,
    /// Window used to evaluate the restart policy
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_nanos)]
    pub restart_window: Option<u64>,
    /// Maximum number of tasks per node (0: unlimited)
    #[arg(long, value_name = "N")]
    pub replicas_max_per_node: Option<u64>,
    /// Action on update failure ("pause", "continue" or "rollback")
    #[arg(long, value_name = "ACTION")]
    pub update_failure_action: Option<String>,
    /// Time to monitor each updated task for failure
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_nanos)]
    pub update_monitor: Option<u64>,
    /// Failure rate to tolerate during an update
    #[arg(long, value_name = "RATIO")]
    pub update_max_failure_ratio: Option<String>,
    /// Maximum number of tasks rolled back simultaneously (0 to roll back all at once)
    #[arg(long, value_name = "N")]
    pub rollback_parallelism: Option<u64>,
    /// Delay between task rollbacks
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_nanos)]
    pub rollback_delay: Option<u64>,
    /// Action on rollback failure ("pause" or "continue")
    #[arg(long, value_name = "ACTION")]
    pub rollback_failure_action: Option<String>,
    /// Time to monitor each rolled back task for failure
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_nanos)]
    pub rollback_monitor: Option<u64>,
    /// Failure rate to tolerate during a rollback
    #[arg(long, value_name = "RATIO")]
    pub rollback_max_failure_ratio: Option<String>,
    /// Rollback order ("start-first" or "stop-first")
    #[arg(long, value_enum)]
    pub rollback_order: Option<super::UpdateOrderArg>,
    /// Command to check a container's health (run by its shell)
    #[arg(long, value_name = "CMD")]
    pub health_cmd: Option<String>,
    /// Time between health checks
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_nanos)]
    pub health_interval: Option<u64>,
    /// Failures in a row before a container is unhealthy
    #[arg(long, value_name = "N")]
    pub health_retries: Option<u64>,
    /// Time a health check may take
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_nanos)]
    pub health_timeout: Option<u64>,
    /// Time to start before failed checks count
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_nanos)]
    pub health_start_period: Option<u64>,
    /// Time between health checks during the start period
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_nanos)]
    pub health_start_interval: Option<u64>,
    /// Disable any health check the image has
    #[arg(long)]
    pub no_healthcheck: bool,
}

/// List flags of `service create`.
#[derive(Args, Debug, Default)]
pub struct CreateListArgs {
    /// Container labels (KEY=VALUE)
    #[arg(long, value_name = "KEY=VALUE")]
    pub container_label: Vec<String>,
    /// Set custom DNS servers (forwarders of the task's resolver)
    #[arg(long, value_name = "IP")]
    pub dns: Vec<String>,
    /// Set custom DNS search domains
    #[arg(long, value_name = "DOMAIN")]
    pub dns_search: Vec<String>,
    /// Set DNS options
    #[arg(long, value_name = "OPTION")]
    pub dns_option: Vec<String>,
    /// Set one or more custom host-to-IP mappings (HOST:IP; Docker's `--host` also works)
    #[arg(long, value_name = "HOST:IP")]
    pub add_host: Vec<String>,
    /// Add Linux capabilities
    #[arg(long, value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities
    #[arg(long, value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Sysctl options (KEY=VALUE)
    #[arg(long, value_name = "KEY=VALUE")]
    pub sysctl: Vec<String>,
    /// Ulimit options (NAME=SOFT[:HARD])
    #[arg(long, value_name = "ULIMIT")]
    pub ulimit: Vec<String>,
    /// Add a placement preference (spread=node.labels.KEY)
    #[arg(long, value_name = "PREF")]
    pub placement_pref: Vec<String>,
    /// Attach a filesystem mount: type=volume|bind|tmpfs,source=...,target=...[,readonly][,volume-opt=K=V]...
    #[arg(long, value_name = "SPEC")]
    pub mount: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<String>,
    /// Give the tasks a secret: NAME, or source=NAME,target=T,uid=U,gid=G,mode=0440
    #[arg(long, value_name = "SECRET")]
    pub secret: Vec<String>,
    /// Give the tasks a config: NAME, or source=NAME,target=/PATH,uid=U,gid=G,mode=0440
    #[arg(long, value_name = "CONFIG")]
    pub config: Vec<String>,
}

/// List flags of `service update`.
#[derive(Args, Debug, Default)]
pub struct UpdateListArgs {
    /// Add or update a container label
    #[arg(long, value_name = "KEY=VALUE")]
    pub container_label_add: Vec<String>,
    /// Remove a container label by its key
    #[arg(long, value_name = "KEY")]
    pub container_label_rm: Vec<String>,
    /// Add or update a custom DNS server
    #[arg(long, value_name = "IP")]
    pub dns_add: Vec<String>,
    /// Remove a custom DNS server
    #[arg(long, value_name = "IP")]
    pub dns_rm: Vec<String>,
    /// Add or update a custom DNS search domain
    #[arg(long, value_name = "DOMAIN")]
    pub dns_search_add: Vec<String>,
    /// Remove a DNS search domain
    #[arg(long, value_name = "DOMAIN")]
    pub dns_search_rm: Vec<String>,
    /// Add or update a DNS option
    #[arg(long, value_name = "OPTION")]
    pub dns_option_add: Vec<String>,
    /// Remove a DNS option
    #[arg(long, value_name = "OPTION")]
    pub dns_option_rm: Vec<String>,
    /// Add a custom host-to-IP mapping (HOST:IP)
    #[arg(long, value_name = "HOST:IP")]
    pub host_add: Vec<String>,
    /// Remove a custom host-to-IP mapping (HOST or HOST:IP)
    #[arg(long, value_name = "HOST")]
    pub host_rm: Vec<String>,
    /// Add Linux capabilities
    #[arg(long, value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities
    #[arg(long, value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Add or update a sysctl option
    #[arg(long, value_name = "KEY=VALUE")]
    pub sysctl_add: Vec<String>,
    /// Remove a sysctl option
    #[arg(long, value_name = "KEY")]
    pub sysctl_rm: Vec<String>,
    /// Add or update a ulimit option
    #[arg(long, value_name = "ULIMIT")]
    pub ulimit_add: Vec<String>,
    /// Remove a ulimit option
    #[arg(long, value_name = "NAME")]
    pub ulimit_rm: Vec<String>,
    /// Add a placement preference
    #[arg(long, value_name = "PREF")]
    pub placement_pref_add: Vec<String>,
    /// Remove a placement preference
    #[arg(long, value_name = "PREF")]
    pub placement_pref_rm: Vec<String>,
    /// Add or update a mount on a service
    #[arg(long, value_name = "SPEC")]
    pub mount_add: Vec<String>,
    /// Remove a mount by its target path
    #[arg(long, value_name = "PATH")]
    pub mount_rm: Vec<String>,
    /// Add a secret: NAME, or source=NAME,target=T,uid=U,gid=G,mode=0440
    #[arg(long, value_name = "SECRET")]
    pub secret_add: Vec<String>,
    /// Remove a secret by its name
    #[arg(long, value_name = "SECRET")]
    pub secret_rm: Vec<String>,
    /// Add a config: NAME, or source=NAME,target=/PATH,uid=U,gid=G,mode=0440
    #[arg(long, value_name = "CONFIG")]
    pub config_add: Vec<String>,
    /// Remove a config by its name
    #[arg(long, value_name = "CONFIG")]
    pub config_rm: Vec<String>,
}

fn each<T>(
    flag: &'static str,
    values: &[String],
    parse: impl Fn(&'static str, &str) -> Result<T, SpecError>,
) -> Result<Vec<T>, SpecError> {
    values.iter().map(|v| parse(flag, v)).collect()
}

fn text(_: &'static str, v: &str) -> Result<String, SpecError> {
    Ok(v.to_string())
}

fn label(flag: &'static str, v: &str) -> Result<(String, String), SpecError> {
    spec::parse_label(flag, v)
}

impl SharedArgs {
    /// The scalar edits of these flags.
    pub fn edits(&self) -> Result<SpecEdits, SpecError> {
        let rollout_order = self.rollback_order.map(UpdateOrder::from);
        let entrypoint = match &self.entrypoint {
            None => None,
            Some(e) => Some(shlex::split(e).ok_or_else(|| SpecError::BadValue {
                flag: "--entrypoint",
                value: e.clone(),
                reason: "unbalanced quotes",
            })?),
        };
        let log_opts = if self.log_opt.is_empty() {
            None
        } else {
            Some(
                each("--log-opt", &self.log_opt, options::parse_pair)?
                    .into_iter()
                    .collect(),
            )
        };
        Ok(SpecEdits {
            hostname: self.hostname.clone(),
            user: self.user.clone(),
            workdir: self.workdir.clone(),
            entrypoint,
            init: self.init,
            read_only: self.read_only,
            tty: self.tty,
            stop_signal: self
                .stop_signal
                .as_deref()
                .map(|s| options::check_signal("--stop-signal", s))
                .transpose()?,
            log_driver: self.log_driver.clone(),
            log_opts,
            limit_memory: self
                .limit_memory
                .as_deref()
                .map(spec::parse_memory_limit)
                .transpose()?,
            limit_cpu: self
                .limit_cpu
                .as_deref()
                .map(|c| options::parse_cpus("--limit-cpu", c))
                .transpose()?,
            limit_pids: match self.limit_pids {
                Some(p) if p < 0 => {
                    return Err(SpecError::BadValue {
                        flag: "--limit-pids",
                        value: p.to_string(),
                        reason: "use a number of processes, or 0 for no limit",
                    });
                }
                p => p,
            },
            reserve_memory: self
                .reserve_memory
                .as_deref()
                .map(|m| options::parse_bytes("--reserve-memory", m))
                .transpose()?,
            reserve_cpu: self
                .reserve_cpu
                .as_deref()
                .map(|c| options::parse_cpus("--reserve-cpu", c))
                .transpose()?,
            restart_window: self.restart_window,
            max_replicas: self.replicas_max_per_node,
            update: RolloutEdits {
                failure_action: self
                    .update_failure_action
                    .as_deref()
                    .map(|a| options::parse_failure_action("--update-failure-action", a, true))
                    .transpose()?,
                monitor: self.update_monitor,
                max_failure_ratio: self
                    .update_max_failure_ratio
                    .as_deref()
                    .map(|r| options::parse_ratio("--update-max-failure-ratio", r))
                    .transpose()?,
                ..Default::default()
            },
            rollback: RolloutEdits {
                parallelism: self.rollback_parallelism,
                delay: self.rollback_delay,
                failure_action: self
                    .rollback_failure_action
                    .as_deref()
                    .map(|a| options::parse_failure_action("--rollback-failure-action", a, false))
                    .transpose()?,
                monitor: self.rollback_monitor,
                max_failure_ratio: self
                    .rollback_max_failure_ratio
                    .as_deref()
                    .map(|r| options::parse_ratio("--rollback-max-failure-ratio", r))
                    .transpose()?,
                order: rollout_order,
            },
            health: HealthEdits {
                cmd: self.health_cmd.clone(),
                interval: self.health_interval,
                timeout: self.health_timeout,
                retries: self.health_retries,
                start_period: self.health_start_period,
                start_interval: self.health_start_interval,
                disable: self.no_healthcheck,
            },
            ..Default::default()
        })
    }
}

fn add<T>(add: Vec<T>) -> ListEdit<T> {
    ListEdit { add, rm: vec![] }
}

impl CreateListArgs {
    /// Adds the list edits of these flags to `e`.
    pub fn add_to(&self, e: &mut SpecEdits) -> Result<(), SpecError> {
        e.container_labels = add(each("--container-label", &self.container_label, label)?);
        e.dns = add(each("--dns", &self.dns, options::parse_dns)?);
        e.dns_search = add(each("--dns-search", &self.dns_search, text)?);
        e.dns_options = add(each("--dns-option", &self.dns_option, text)?);
        e.hosts = add(each("--host", &self.add_host, options::parse_host)?);
        e.cap_add = each("--cap-add", &self.cap_add, options::parse_cap)?;
        e.cap_drop = each("--cap-drop", &self.cap_drop, options::parse_cap)?;
        e.sysctls = add(each("--sysctl", &self.sysctl, options::parse_pair)?);
        e.ulimits = add(each("--ulimit", &self.ulimit, options::parse_ulimit)?);
        e.placement_prefs = add(each(
            "--placement-pref",
            &self.placement_pref,
            options::parse_placement_pref,
        )?);
        e.mounts = add(each("--mount", &self.mount, options::parse_mount)?);
        e.secrets = add(each("--secret", &self.secret, files::parse_secret)?);
        e.configs = add(each("--config", &self.config, files::parse_config)?);
        Ok(())
    }
}

impl UpdateListArgs {
    /// Adds the list edits of these flags to `e`.
    pub fn add_to(&self, e: &mut SpecEdits) -> Result<(), SpecError> {
        e.container_labels = ListEdit {
            add: each("--container-label-add", &self.container_label_add, label)?,
            rm: self.container_label_rm.clone(),
        };
        e.dns = ListEdit {
            add: each("--dns-add", &self.dns_add, options::parse_dns)?,
            rm: each("--dns-rm", &self.dns_rm, options::parse_dns)?,
        };
        e.dns_search = ListEdit {
            add: self.dns_search_add.clone(),
            rm: self.dns_search_rm.clone(),
        };
        e.dns_options = ListEdit {
            add: self.dns_option_add.clone(),
            rm: self.dns_option_rm.clone(),
        };
        e.hosts = ListEdit {
            add: each("--host-add", &self.host_add, options::parse_host)?,
            rm: self.host_rm.clone(),
        };
        e.cap_add = each("--cap-add", &self.cap_add, options::parse_cap)?;
        e.cap_drop = each("--cap-drop", &self.cap_drop, options::parse_cap)?;
        e.sysctls = ListEdit {
            add: each("--sysctl-add", &self.sysctl_add, options::parse_pair)?,
            rm: self.sysctl_rm.clone(),
        };
        e.ulimits = ListEdit {
            add: each("--ulimit-add", &self.ulimit_add, options::parse_ulimit)?,
            rm: self.ulimit_rm.clone(),
        };
        e.placement_prefs = ListEdit {
            add: each(
                "--placement-pref-add",
                &self.placement_pref_add,
                options::parse_placement_pref,
            )?,
            rm: self.placement_pref_rm.clone(),
        };
        e.mounts = ListEdit {
            add: each("--mount-add", &self.mount_add, options::parse_mount)?,
            rm: self.mount_rm.clone(),
        };
        e.secrets = ListEdit {
            add: each("--secret-add", &self.secret_add, files::parse_secret)?,
            rm: self.secret_rm.clone(),
        };
        e.configs = ListEdit {
            add: each("--config-add", &self.config_add, files::parse_config)?,
            rm: self.config_rm.clone(),
        };
        Ok(())
    }
}
