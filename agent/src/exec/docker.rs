//! The Docker executor: a task whose spec names an image runs as a container on the node's
//! Docker engine, through bollard. Containers are created with network mode `none` and DNS
//! 127.0.0.11, labelled with their task, service and owner; once the container runs, its
//! network namespace gets the sandbox name a native task's would have, and the overlay plumbs
//! it like any other (veth, address, routes), so the LB, DNS and overlay code do not care
//! which executor made a task.
//!
//! Several shoalds may share one engine (the testbed): the owner label, derived from the
//! state dir like sandbox names, keeps each to its own containers.

use super::{ExecError, Exit, Health, Preparation, Setup, Started, TaskContext};
use crate::netns::Sandboxes;
use crate::taskfiles::TaskFiles;
use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, HealthConfig, HealthStatusEnum, HostConfig, HostConfigLogConfig,
    MountBindOptions, MountBindOptionsPropagationEnum, MountTmpfsOptions, MountType,
    MountVolumeOptions, MountVolumeOptionsDriverConfig, ResourcesUlimits, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, InspectContainerOptions,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shoal_api::objects::Task;
use shoal_api::registry_auth::RegistryAuth;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_stream::StreamExt;

pub const TASK_LABEL: &str = "com.shoal.task.id";
pub const SERVICE_LABEL: &str = "com.shoal.service.id";
pub const OWNER_LABEL: &str = "com.shoal.owner";

/// How long a call to the engine may take before the task is given up on.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an image pull may take.
const PULL_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The layers of a pull as the engine's progress stream names them, for the task's status
/// message ("3 of 5 layers").
#[derive(Default, Debug)]
pub struct PullProgress {
    /// Layer id -> whether it is on the node (pulled, or there already).
    layers: std::collections::BTreeMap<String, bool>,
}

impl PullProgress {
    /// Takes one progress line; says whether the summary changed. Lines about the
    /// reference itself ("Pulling from library/x", "Digest: ...") name no layer.
    pub fn note(&mut self, id: &str, status: &str) -> bool {
        let layer_status = matches!(
            status,
            "Pulling fs layer"
                | "Waiting"
                | "Downloading"
                | "Verifying Checksum"
                | "Download complete"
                | "Extracting"
                | "Pull complete"
                | "Already exists"
        );
        if !layer_status {
            return false;
        }
        let done = matches!(status, "Pull complete" | "Already exists");
        let before = self.layers.insert(id.to_string(), done);
        before != Some(done)
    }

    pub fn summary(&self) -> String {
        let done = self.layers.values().filter(|d| **d).count();
        format!("{done} of {} layers", self.layers.len())
    }
}

pub struct DockerExecutor {
    docker: Docker,
    /// The state dir's tasks directory, where each task's output.log lives.
    log_dir: Option<std::path::PathBuf>,
    sandboxes: Sandboxes,
    owner: String,
    /// Task of each container's main process, for the signals the runner sends by pid.
    pids: Arc<Mutex<HashMap<u32, String>>>,
    /// What stops each container's main process: its image's or its own `StopSignal`.
    stop_signals: Arc<Mutex<HashMap<u32, Signal>>>,
}

/// A Docker stop signal ("SIGQUIT", "QUIT" or "3"); SIGTERM when unset or unknown.
pub fn parse_stop_signal(s: Option<&str>) -> Signal {
    let Some(s) = s.map(str::trim).filter(|s| !s.is_empty()) else {
        return Signal::SIGTERM;
    };
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).unwrap_or(Signal::SIGTERM);
    }
    let name = s.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse().unwrap_or_else(|_| {
        // Real-time signals (SIGRTMIN+3, systemd's) have no name here.
        tracing::warn!(signal = s, "unknown stop signal; stopping with SIGTERM");
        Signal::SIGTERM
    })
}

/// Runs `fut` to completion from the runner's synchronous code, on the current runtime.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(fut))
}

fn container_name(task_id: &str) -> String {
    format!("shoal-{task_id}")
}

fn invalid(task: &str, reason: impl Into<String>) -> ExecError {
    ExecError::Invalid {
        task: task.to_string(),
        reason: reason.into(),
    }
}

/// What the engine said, without bollard's wrapping ("Docker responded with status code").
fn engine_message(e: &bollard::errors::Error) -> String {
    use bollard::errors::Error as E;
    match e {
        E::DockerResponseServerError { message, .. } => message.clone(),
        E::DockerStreamError { error } => error.clone(),
        e => e.to_string(),
    }
}

/// The engine's form of X-Registry-Auth credentials.
fn docker_credentials(
    c: shoal_api::registry_auth::Credentials,
) -> bollard::auth::DockerCredentials {
    let some = |s: String| (!s.is_empty()).then_some(s);
    bollard::auth::DockerCredentials {
        username: some(c.username),
        password: some(c.password),
        identitytoken: some(c.identitytoken),
        serveraddress: some(c.serveraddress),
        ..Default::default()
    }
}

/// The reference an image is pulled by: its tag or digest, `latest` when it names neither
/// (a pull without a tag would fetch every tag of the repository).
pub fn pull_reference(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

/// The stack a service belongs to (`docker stack deploy`, `shoal stack deploy`).
const STACK_NAMESPACE_LABEL: &str = "com.docker.stack.namespace";

/// Swarm's labels on a task's container (`com.docker.swarm.*`), which override the spec's.
pub const SWARM_LABEL_PREFIX: &str = "com.docker.swarm";

fn propagation(p: &str) -> Result<Option<MountBindOptionsPropagationEnum>, String> {
    use MountBindOptionsPropagationEnum as P;
    Ok(Some(match p {
        "" => return Ok(None),
        "private" => P::PRIVATE,
        "rprivate" => P::RPRIVATE,
        "shared" => P::SHARED,
        "rshared" => P::RSHARED,
        "slave" => P::SLAVE,
        "rslave" => P::RSLAVE,
        other => {
            return Err(format!(
                "bind propagation {other:?} is not one of private, rprivate, shared, rshared, slave, rslave"
            ));
        }
    }))
}

fn mount(m: &shoal_api::objects::Mount) -> Result<bollard::models::Mount, String> {
    let typ = match m.kind.as_str() {
        "bind" => MountType::BIND,
        "volume" => MountType::VOLUME,
        "tmpfs" => MountType::TMPFS,
        other => {
            return Err(format!(
                "mount {}: type {other:?} is not bind, volume or tmpfs",
                m.target
            ));
        }
    };
    let bind_options = match &m.bind_options {
        Some(b) => propagation(&b.propagation)
            .map_err(|e| format!("mount {}: {e}", m.target))?
            .map(|p| MountBindOptions {
                propagation: Some(p),
                ..Default::default()
            }),
        None => None,
    };
    Ok(bollard::models::Mount {
        typ: Some(typ),
        // An anonymous volume has no source; the engine names it and removes it with the
        // container.
        source: Some(m.source.clone()).filter(|s| !s.is_empty()),
        target: Some(m.target.clone()),
        read_only: Some(m.read_only).filter(|r| *r),
        bind_options,
        volume_options: m.volume_options.as_ref().map(|v| MountVolumeOptions {
            no_copy: Some(v.no_copy).filter(|n| *n),
            labels: Some(v.labels.clone().into_iter().collect())
                .filter(|l: &HashMap<_, _>| !l.is_empty()),
            driver_config: v
                .driver_config
                .as_ref()
                .map(|d| MountVolumeOptionsDriverConfig {
                    name: Some(d.name.clone()).filter(|n| !n.is_empty()),
                    options: Some(d.options.clone().into_iter().collect())
                        .filter(|o: &HashMap<_, _>| !o.is_empty()),
                }),
            ..Default::default()
        }),
        tmpfs_options: m.tmpfs_options.as_ref().map(|t| MountTmpfsOptions {
            size_bytes: Some(t.size_bytes).filter(|s| *s > 0),
            mode: Some(i64::from(t.mode)).filter(|m| *m > 0),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Named volumes a task mounts, as the engine creates them when missing.
pub fn volume_requests(task: &Task) -> Vec<VolumeCreateRequest> {
    task.spec
        .container_spec
        .mounts
        .iter()
        .filter(|m| m.kind == "volume" && !m.source.is_empty())
        .map(|m| {
            let vo = m.volume_options.clone().unwrap_or_default();
            let driver = vo.driver_config.clone().unwrap_or_default();
            VolumeCreateRequest {
                name: Some(m.source.clone()),
                // No driver named: the engine's default (local) when it creates the volume,
                // and whatever driver an existing one has, as Docker does.
                driver: Some(driver.name).filter(|n| !n.is_empty()),
                driver_opts: Some(driver.options.into_iter().collect())
                    .filter(|o: &HashMap<_, _>| !o.is_empty()),
                labels: Some(vo.labels.into_iter().collect())
                    .filter(|l: &HashMap<_, _>| !l.is_empty()),
                ..Default::default()
            }
        })
        .collect()
}

/// The container a task runs as, as Docker's swarm executor builds it
/// (moby `daemon/cluster/executor/container/container.go`), except the network: mode
/// `none`, shoal plumbs it, and the resolver is the embedded DNS at 127.0.0.11 with the
/// spec's search domains and options. `task` has its templates expanded already; `files`
/// are its secrets and configs in shoald's in-memory store, each bound read-only at its
/// target as Docker binds them from its own tmpfs.
pub fn container_body(
    task: &Task,
    ctx: &TaskContext,
    owner: &str,
    files: &TaskFiles,
) -> Result<ContainerCreateBody, String> {
    let cs = &task.spec.container_spec;
    let mut labels: HashMap<String, String> = cs.labels.clone().into_iter().collect();
    for (k, v) in [
        ("task", ""),
        ("task.id", task.id.as_str()),
        ("task.name", ctx.task.name.as_str()),
        ("node.id", ctx.node.id.as_str()),
        ("service.id", task.service_id.as_str()),
        ("service.name", ctx.service.name.as_str()),
    ] {
        labels.insert(format!("{SWARM_LABEL_PREFIX}.{k}"), v.to_string());
    }
    // Monitoring and log shippers group a stack's containers by this label, which Docker
    // copies from the service (the CLI puts it on every stack object).
    if let Some(ns) = ctx.service.labels.get(STACK_NAMESPACE_LABEL) {
        labels.insert(STACK_NAMESPACE_LABEL.into(), ns.clone());
    }
    labels.insert(TASK_LABEL.into(), task.id.clone());
    labels.insert(SERVICE_LABEL.into(), task.service_id.clone());
    labels.insert(OWNER_LABEL.into(), owner.to_string());
    let mut env = cs.env.clone();
    env.push(format!("SHOAL_TASK_ID={}", task.id));
    env.push(format!("SHOAL_SERVICE_ID={}", task.service_id));
    env.push(format!("SHOAL_TASK_SLOT={}", task.slot));
    // Docker's split: the spec's command replaces the image's entrypoint, its args the
    // image's command.
    let entrypoint = (!cs.command.is_empty()).then(|| cs.command.clone());
    let cmd = (!cs.args.is_empty()).then(|| cs.args.clone());
    let limits = &task.spec.resources.limits;
    let healthcheck = cs.healthcheck.as_ref().map(|h| HealthConfig {
        test: Some(h.test.clone()),
        interval: Some(h.interval).filter(|v| *v > 0),
        timeout: Some(h.timeout).filter(|v| *v > 0),
        retries: Some(h.retries).filter(|v| *v > 0),
        start_period: Some(h.start_period).filter(|v| *v > 0),
        start_interval: Some(h.start_interval).filter(|v| *v > 0),
    });
    let mut mounts = cs.mounts.iter().map(mount).collect::<Result<Vec<_>, _>>()?;
    mounts.extend(files.files.iter().map(|f| bollard::models::Mount {
        typ: Some(MountType::BIND),
        source: Some(f.host.display().to_string()),
        target: Some(f.target.clone()),
        read_only: Some(true),
        ..Default::default()
    }));
    // Docker stores `IP HOST [ALIAS...]` (hosts(5)); the engine wants `HOST:IP`, one per name.
    let mut extra_hosts = Vec::new();
    for line in &cs.hosts {
        let mut words = line.split_whitespace();
        let (Some(ip), Some(first)) = (words.next(), words.next()) else {
            return Err(format!(
                "host entry {line:?} is not \"IP HOSTNAME [ALIAS...]\""
            ));
        };
        for name in std::iter::once(first).chain(words) {
            extra_hosts.push(format!("{name}:{ip}"));
        }
    }
    let dns = cs.dns_config.clone().unwrap_or_default();
    let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    Ok(ContainerCreateBody {
        image: Some(cs.image.clone()),
        entrypoint,
        cmd,
        env: Some(env),
        labels: Some(labels),
        healthcheck,
        hostname: Some(cs.hostname.clone()).filter(|h| !h.is_empty()),
        working_dir: Some(cs.dir.clone()).filter(|d| !d.is_empty()),
        user: Some(cs.user.clone()).filter(|u| !u.is_empty()),
        stop_signal: Some(cs.stop_signal.clone()).filter(|s| !s.is_empty()),
        tty: Some(cs.tty).filter(|t| *t),
        open_stdin: Some(cs.open_stdin).filter(|o| *o),
        host_config: Some(HostConfig {
            // Networking is ours: the overlay plumbs the namespace once it exists.
            network_mode: Some("none".into()),
            // The embedded DNS answers and forwards; the spec's nameservers are for it, not
            // for the task's resolv.conf.
            dns: Some(vec![crate::netns::TASK_RESOLVER.into()]),
            dns_search: non_empty(&dns.search),
            dns_options: non_empty(&dns.options),
            extra_hosts: (!extra_hosts.is_empty()).then_some(extra_hosts),
            mounts: (!mounts.is_empty()).then_some(mounts),
            memory: Some(limits.memory_bytes).filter(|m| *m > 0),
            nano_cpus: Some(limits.nano_cpus).filter(|c| *c > 0),
            pids_limit: Some(limits.pids).filter(|p| *p > 0),
            readonly_rootfs: Some(cs.read_only).filter(|r| *r),
            init: cs.init,
            sysctls: (!cs.sysctls.is_empty()).then(|| cs.sysctls.clone().into_iter().collect()),
            cap_add: non_empty(&cs.capability_add),
            cap_drop: non_empty(&cs.capability_drop),
            ulimits: (!cs.ulimits.is_empty()).then(|| {
                cs.ulimits
                    .iter()
                    .map(|u| ResourcesUlimits {
                        name: Some(u.name.clone()),
                        soft: Some(u.soft),
                        hard: Some(u.hard),
                    })
                    .collect()
            }),
            log_config: task.spec.log_driver.as_ref().map(|d| HostConfigLogConfig {
                typ: Some(d.name.clone()),
                config: Some(d.options.clone().into_iter().collect()),
            }),
            // `isolation` is Windows-only; Docker ignores it on Linux, and so does shoal.
            ..Default::default()
        }),
        ..Default::default()
    })
}

impl DockerExecutor {
    /// Connects to the local engine (DOCKER_HOST or /var/run/docker.sock) and agrees on an
    /// API version; fails when nothing answers.
    pub async fn connect(
        sandboxes: Sandboxes,
        tasks_dir: std::path::PathBuf,
    ) -> Result<Self, String> {
        let docker = Docker::connect_with_local_defaults().map_err(|e| e.to_string())?;
        let docker = tokio::time::timeout(Duration::from_secs(3), docker.negotiate_version())
            .await
            .map_err(|_| "the Docker engine did not answer within 3 s".to_string())?
            .map_err(|e| e.to_string())?;
        tokio::time::timeout(Duration::from_secs(3), docker.ping())
            .await
            .map_err(|_| "the Docker engine did not answer within 3 s".to_string())?
            .map_err(|e| e.to_string())?;
        Ok(DockerExecutor {
            docker,
            log_dir: Some(tasks_dir),
            owner: sandboxes.prefix().to_string(),
            sandboxes,
            pids: Arc::default(),
            stop_signals: Arc::default(),
        })
    }

    /// Whether `pid` is the main process of one of this executor's containers.
    pub fn owns(&self, pid: u32) -> bool {
        self.pids.lock().expect("lock").contains_key(&pid)
    }

    /// Containers of this shoald: (task id, container id, pid when running).
    async fn mine(&self, all: bool) -> Vec<(String, String, Option<u32>)> {
        let filters: HashMap<String, Vec<String>> = [(
            "label".to_string(),
            vec![format!("{OWNER_LABEL}={}", self.owner)],
        )]
        .into();
        let opts = ListContainersOptionsBuilder::new()
            .all(all)
            .filters(&filters)
            .build();
        let Ok(list) = self.docker.list_containers(Some(opts)).await else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for c in list {
            let (Some(id), Some(labels)) = (c.id, c.labels) else {
                continue;
            };
            let Some(task) = labels.get(TASK_LABEL).cloned() else {
                continue;
            };
            let pid = match self
                .docker
                .inspect_container(&id, None::<InspectContainerOptions>)
                .await
            {
                Ok(i) => i
                    .state
                    .filter(|s| s.running == Some(true))
                    .and_then(|s| s.pid)
                    .filter(|p| *p > 0)
                    .map(|p| p as u32),
                Err(_) => None,
            };
            out.push((task, id, pid));
        }
        out
    }

    async fn create_and_start(
        &self,
        task: &Task,
        ctx: &TaskContext,
        log: &Path,
        files: &TaskFiles,
    ) -> Result<(String, u32), ExecError> {
        let body =
            container_body(task, ctx, &self.owner, files).map_err(|r| invalid(&task.id, r))?;
        for v in volume_requests(task) {
            self.ensure_volume(&task.id, v).await?;
        }
        let name = container_name(&task.id);
        // A leftover of the same task (crash between create and start) is replaced.
        let _ = self
            .docker
            .remove_container(
                &name,
                Some(
                    RemoveContainerOptionsBuilder::new()
                        .force(true)
                        .v(true)
                        .build(),
                ),
            )
            .await;
        let opts = CreateContainerOptionsBuilder::new().name(&name).build();
        let created = self
            .docker
            .create_container(Some(opts), body)
            .await
            .map_err(|e| invalid(&task.id, format!("creating the container: {e}")))?;
        if let Err(e) = self.docker.start_container(&created.id, None).await {
            self.remove(&created.id).await;
            return Err(invalid(&task.id, format!("starting the container: {e}")));
        }
        let pid = self
            .docker
            .inspect_container(&created.id, None::<InspectContainerOptions>)
            .await
            .ok()
            .and_then(|i| i.state)
            .and_then(|s| s.pid)
            .filter(|p| *p > 0)
            .map(|p| p as u32);
        let Some(pid) = pid else {
            self.remove(&created.id).await;
            return Err(invalid(&task.id, "the container exited at once"));
        };
        self.follow_logs(&created.id, log);
        Ok((created.id, pid))
    }

    /// A named volume the task mounts: created through the engine when missing (its driver,
    /// `local` unless the mount names one, with the mount's options and labels), reused
    /// afterwards. One of that name made with another driver than the mount names is not
    /// silently taken; a mount that names none takes the volume as it is (an external one).
    async fn ensure_volume(&self, task: &str, want: VolumeCreateRequest) -> Result<(), ExecError> {
        let name = want.name.clone().unwrap_or_default();
        let named = want.driver.clone();
        let driver = named.clone().unwrap_or_else(|| "local".into());
        let fail = |reason: String| ExecError::Volume {
            task: task.to_string(),
            volume: name.clone(),
            reason,
        };
        match self.docker.inspect_volume(&name).await {
            Ok(v) if named.is_none() || v.driver == driver => Ok(()),
            Ok(v) => Err(fail(format!(
                "it exists with driver {} and the service asks for driver {driver}; remove the volume or name another",
                v.driver
            ))),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                tracing::info!(task, volume = %name, %driver, "creating a volume");
                self.docker
                    .create_volume(want)
                    .await
                    .map(|_| ())
                    .map_err(|e| fail(format!("creating it: {}", engine_message(&e))))
            }
            Err(e) => Err(fail(format!("Docker engine: {}", engine_message(&e)))),
        }
    }

    /// A task whose image is not on the node pulls it first, with the service's
    /// `--with-registry-auth` credentials when it has some.
    pub fn prepare(
        &self,
        task: &Task,
        auth: Option<&RegistryAuth>,
    ) -> Result<Option<Preparation>, ExecError> {
        let image = task.spec.container_spec.image.clone();
        match block_on(self.docker.inspect_image(&image)) {
            Ok(_) => return Ok(None),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => {
                return Err(invalid(
                    &task.id,
                    format!("Docker engine: {}", engine_message(&e)),
                ));
            }
        }
        let reference = pull_reference(&image);
        let credentials = match auth.map(RegistryAuth::decode) {
            None => None,
            Some(Ok(c)) => Some(docker_credentials(c)),
            Some(Err(e)) => {
                tracing::warn!(task = %task.id, error = %e, "pulling without the service's registry credentials");
                None
            }
        };
        let docker = self.docker.clone();
        let task_id = task.id.clone();
        let message = format!("pulling image {reference}");
        let (progress_tx, progress) = tokio::sync::watch::channel(message.clone());
        let done = Box::pin(async move {
            let pull = async {
                let opts = CreateImageOptionsBuilder::new()
                    .from_image(&reference)
                    .build();
                let mut stream = docker.create_image(Some(opts), None, credentials);
                let mut layers = PullProgress::default();
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(info) => {
                            if let Some(e) = info.error_detail.and_then(|d| d.message) {
                                return Err(e);
                            }
                            if let (Some(id), Some(status)) = (&info.id, &info.status)
                                && layers.note(id, status)
                            {
                                let _ = progress_tx.send(format!(
                                    "pulling image {reference}: {}",
                                    layers.summary()
                                ));
                            }
                        }
                        Err(e) => return Err(engine_message(&e)),
                    }
                }
                Ok(())
            };
            let result = match tokio::time::timeout(PULL_TIMEOUT, pull).await {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "no answer within {} minutes",
                    PULL_TIMEOUT.as_secs() / 60
                )),
            };
            result.map_err(|reason| ExecError::Pull {
                task: task_id,
                image: reference,
                reason,
            })
        });
        Ok(Some(Preparation {
            message,
            progress: Some(progress),
            done,
        }))
    }

    async fn remove(&self, id: &str) {
        let _ = self
            .docker
            .remove_container(
                id,
                Some(
                    RemoveContainerOptionsBuilder::new()
                        .force(true)
                        .v(true)
                        .build(),
                ),
            )
            .await;
    }

    /// After an adoption: only what the container writes from now on (the earlier output is
    /// in the log file already).
    fn follow_logs_since_now(&self, id: &str, log: &Path) {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i32)
            .unwrap_or(0);
        self.follow(id, log, since);
    }

    /// Appends the container's output to the task's log file (for `service logs`).
    fn follow_logs(&self, id: &str, log: &Path) {
        self.follow(id, log, 0);
    }

    fn follow(&self, id: &str, log: &Path, since: i32) {
        let docker = self.docker.clone();
        let id = id.to_string();
        let log = log.to_path_buf();
        tokio::spawn(async move {
            // The container's own log options cap shoal's copy too (the task's spec gave
            // them to the container; after an adoption only the container has them).
            let options = docker
                .inspect_container(&id, None::<InspectContainerOptions>)
                .await
                .ok()
                .and_then(|i| i.host_config)
                .and_then(|h| h.log_config)
                .and_then(|c| c.config)
                .unwrap_or_default();
            let driver = shoal_api::objects::Driver {
                name: "json-file".into(),
                options: options.into_iter().collect(),
            };
            let limits =
                crate::logs::rotate::Limits::from_driver(Some(&driver)).unwrap_or_default();
            let mut file = match crate::logs::rotate::RotatingLog::open(&log, limits) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "task output not kept");
                    return;
                }
            };
            let opts = LogsOptionsBuilder::new()
                .follow(true)
                .stdout(true)
                .stderr(true)
                .timestamps(true)
                .since(since)
                .build();
            let mut stream = docker.logs(&id, Some(opts));
            let mut buf = Vec::new();
            while let Some(Ok(chunk)) = stream.next().await {
                buf.clear();
                engine_line_to_record(&chunk, &mut buf);
                let _ = file.write(&buf);
            }
        });
    }

    /// Follows the container's health check, when it has one (its own or its image's).
    fn health(&self, id: &str) -> Option<tokio::sync::watch::Receiver<Health>> {
        let status = |i: &bollard::models::ContainerInspectResponse| {
            i.state
                .as_ref()
                .and_then(|s| s.health.as_ref())
                .and_then(|h| h.status)
        };
        let first = block_on(
            self.docker
                .inspect_container(id, None::<InspectContainerOptions>),
        )
        .ok()?;
        status(&first)
            .filter(|s| !matches!(s, HealthStatusEnum::NONE | HealthStatusEnum::EMPTY))?;
        let (tx, rx) = tokio::sync::watch::channel(Health::Starting);
        let docker = self.docker.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            loop {
                let Ok(i) = docker
                    .inspect_container(&id, None::<InspectContainerOptions>)
                    .await
                else {
                    return;
                };
                if i.state.as_ref().and_then(|s| s.running) != Some(true) {
                    return;
                }
                let now = match status(&i) {
                    Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
                    Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
                    _ => Health::Starting,
                };
                tx.send_if_modified(|h| std::mem::replace(h, now) != now);
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Some(rx)
    }

    /// Waits for the container to end, then reports how and removes it with its sandbox.
    fn watch(&self, task_id: &str, id: String, pid: u32) -> tokio::sync::oneshot::Receiver<Exit> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let docker = self.docker.clone();
        let sandboxes = self.sandboxes.clone();
        let pids = self.pids.clone();
        let stop_signals = self.stop_signals.clone();
        let task = task_id.to_string();
        tokio::spawn(async move {
            let exit = loop {
                let mut wait = docker.wait_container(&id, None);
                match wait.next().await {
                    Some(Ok(r)) => break Some(r.status_code),
                    Some(Err(bollard::errors::Error::DockerContainerWaitError {
                        code, ..
                    })) => {
                        break Some(code);
                    }
                    // The engine went away (restart): wait for it and look again.
                    _ => {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        match docker
                            .inspect_container(&id, None::<InspectContainerOptions>)
                            .await
                        {
                            Ok(i) if i.state.as_ref().and_then(|s| s.running) == Some(true) => {
                                continue;
                            }
                            Ok(i) => break i.state.and_then(|s| s.exit_code),
                            Err(bollard::errors::Error::DockerResponseServerError {
                                status_code: 404,
                                ..
                            }) => break None,
                            Err(_) => continue,
                        }
                    }
                }
            };
            let oom = docker
                .inspect_container(&id, None::<InspectContainerOptions>)
                .await
                .ok()
                .and_then(|i| i.state)
                .and_then(|s| s.oom_killed)
                .unwrap_or(false);
            let _ = docker
                .remove_container(
                    &id,
                    Some(
                        RemoveContainerOptionsBuilder::new()
                            .force(true)
                            .v(true)
                            .build(),
                    ),
                )
                .await;
            pids.lock().expect("lock").remove(&pid);
            stop_signals.lock().expect("lock").remove(&pid);
            sandboxes.remove(&task);
            let exit = match (oom, exit) {
                (true, _) => Exit::OutOfMemory,
                (false, Some(c)) => Exit::Code(c as i32),
                (false, None) => Exit::Unknown,
            };
            let _ = tx.send(exit);
        });
        rx
    }

    pub fn start(
        &self,
        task: &Task,
        ctx: &TaskContext,
        log: &Path,
        setup: &Setup<'_>,
        files: &TaskFiles,
    ) -> Result<Started, ExecError> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).map_err(|source| ExecError::Output {
                task: task.id.clone(),
                path: dir.display().to_string(),
                source,
            })?;
        }
        let (id, pid) = block_on(async {
            match tokio::time::timeout(ENGINE_TIMEOUT, self.create_and_start(task, ctx, log, files))
                .await
            {
                Ok(r) => r,
                Err(_) => {
                    // It may have been created or started meanwhile: leave nothing behind.
                    self.remove(&container_name(&task.id)).await;
                    Err(invalid(
                        &task.id,
                        "the Docker engine did not answer in time",
                    ))
                }
            }
        })?;
        // Name the container's network namespace like a sandbox and plumb it.
        let plumbed = self
            .sandboxes
            .reattach(&task.id, pid)
            .map_err(|e| format!("naming the container's namespace: {e}"))
            .and_then(|netns| setup(&netns));
        if let Err(reason) = plumbed {
            block_on(self.remove(&id));
            self.sandboxes.remove(&task.id);
            return Err(invalid(&task.id, format!("network setup: {reason}")));
        }
        self.pids.lock().expect("lock").insert(pid, task.id.clone());
        self.record_stop_signal(&id, pid);
        let health = self.health(&id);
        let exit = self.watch(&task.id, id, pid);
        Ok(Started { pid, exit, health })
    }

    /// Takes over a container an earlier shoald started.
    pub fn adopt(&self, task_id: &str, pid: u32) -> Started {
        if let Err(e) = self.sandboxes.reattach(task_id, pid) {
            tracing::warn!(task = task_id, error = %e, "cannot name the adopted container's namespace");
        }
        let id = block_on(self.mine(false))
            .into_iter()
            .find(|(t, _, _)| t == task_id)
            .map(|(_, id, _)| id)
            .unwrap_or_else(|| container_name(task_id));
        self.pids
            .lock()
            .expect("lock")
            .insert(pid, task_id.to_string());
        self.record_stop_signal(&id, pid);
        if let Some(log) = self
            .log_dir
            .as_ref()
            .map(|d| d.join(task_id).join("output.log"))
        {
            self.follow_logs_since_now(&id, &log);
        }
        let health = self.health(&id);
        let exit = self.watch(task_id, id, pid);
        Started { pid, exit, health }
    }

    /// Running containers of an earlier run: (task id, pid).
    pub fn leftovers(&self) -> Vec<(String, u32)> {
        block_on(self.mine(false))
            .into_iter()
            .filter_map(|(t, _, pid)| Some((t, pid?)))
            .collect()
    }

    /// Removes this shoald's containers of tasks not in `keep`.
    pub fn discard_leftovers(&self, keep: &[String]) {
        block_on(async {
            for (task, id, _) in self.mine(true).await {
                if !keep.contains(&task) {
                    tracing::info!(task = %task, "removing a leftover container");
                    self.remove(&id).await;
                }
            }
        });
    }

    fn record_stop_signal(&self, id: &str, pid: u32) {
        let configured = block_on(
            self.docker
                .inspect_container(id, None::<InspectContainerOptions>),
        )
        .ok()
        .and_then(|i| i.config)
        .and_then(|c| c.stop_signal);
        self.stop_signals
            .lock()
            .expect("lock")
            .insert(pid, parse_stop_signal(configured.as_deref()));
    }

    /// Asks the container to stop with its stop signal (SIGTERM unless it names another).
    pub fn stop(&self, pid: u32) {
        let sig = self
            .stop_signals
            .lock()
            .expect("lock")
            .get(&pid)
            .copied()
            .unwrap_or(Signal::SIGTERM);
        self.signal(pid, sig);
    }

    pub fn signal(&self, pid: u32, sig: Signal) {
        let _ = kill(Pid::from_raw(pid as i32), sig);
    }
}

/// One message of the engine's log stream (`TIME text`, asked for with timestamps) as a
/// record of the task's output file; the engine's time is kept.
fn engine_line_to_record(chunk: &bollard::container::LogOutput, out: &mut Vec<u8>) {
    use shoal_api::logs::Stream;
    let (stream, bytes) = match chunk {
        bollard::container::LogOutput::StdErr { message } => (Stream::Stderr, message),
        bollard::container::LogOutput::StdOut { message }
        | bollard::container::LogOutput::Console { message }
        | bollard::container::LogOutput::StdIn { message } => (Stream::Stdout, message),
    };
    let text = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let (time, text) = match text.iter().position(|b| *b == b' ') {
        Some(i) => match std::str::from_utf8(&text[..i]).ok().and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        }) {
            Some(t) => (t.unix_timestamp_nanos() as i64, &text[i + 1..]),
            None => (crate::logs::record::now(), text),
        },
        None => (crate::logs::record::now(), text),
    };
    crate::logs::record::encode(time, stream, text, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::template::Context;

    #[test]
    fn the_engines_lines_keep_their_time_and_stream() {
        let mut out = Vec::new();
        engine_line_to_record(
            &bollard::container::LogOutput::StdErr {
                message: "2026-12-04T18:00:00.5Z oops at 10:00\n".into(),
            },
            &mut out,
        );
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "2026-12-04T18:00:00.500000000Z stderr oops at 10:00\n"
        );
    }

    fn task(spec: serde_json::Value) -> Task {
        serde_json::from_value(serde_json::json!({
            "ID": "t1", "Version": {"Index": 1}, "CreatedAt": "", "UpdatedAt": "",
            "ServiceID": "s1", "Slot": 2, "NodeID": "n1",
            "Spec": spec,
            "SpecVersion": {"Index": 1},
            "Status": {"Timestamp": "", "State": "new"},
            "DesiredState": "running"
        }))
        .unwrap()
    }

    fn ctx(t: &Task) -> Context {
        Context::for_task(t, "web", &Default::default(), "host-a", Default::default())
    }

    #[test]
    fn a_stack_service_s_containers_carry_the_stack_label() {
        let t = task(serde_json::json!({
            "Runtime": "docker",
            "ContainerSpec": {"Image": "busybox:1"}
        }));
        let labels = [("com.docker.stack.namespace".to_string(), "shop".to_string())].into();
        let stack_ctx = Context::for_task(&t, "shop_web", &labels, "host-a", Default::default());
        let b = container_body(&t, &stack_ctx, "owner", &TaskFiles::default()).unwrap();
        assert_eq!(
            b.labels.as_ref().unwrap()["com.docker.stack.namespace"],
            "shop"
        );
        let b = container_body(&t, &ctx(&t), "owner", &TaskFiles::default()).unwrap();
        assert!(!b.labels.unwrap().contains_key("com.docker.stack.namespace"));
    }

    #[test]
    fn every_spec_field_reaches_the_container_as_dockers_swarm_executor_puts_it() {
        let t = task(serde_json::json!({
            "Runtime": "docker",
            "ContainerSpec": {
                "Image": "busybox:1",
                "Labels": {"app": "shop", "com.docker.swarm.task.id": "forged"},
                "Command": ["/entry"], "Args": ["a", "b"],
                "Hostname": "web-2", "Env": ["A=1"], "Dir": "/work", "User": "1000:1000",
                "Init": true, "StopSignal": "SIGQUIT", "TTY": true, "OpenStdin": true,
                "ReadOnly": true,
                "Mounts": [
                    {"Type": "bind", "Source": "/srv", "Target": "/srv", "ReadOnly": true,
                     "BindOptions": {"Propagation": "rslave"}},
                    {"Type": "volume", "Source": "data", "Target": "/data",
                     "VolumeOptions": {"NoCopy": true, "Labels": {"l": "v"},
                        "DriverConfig": {"Name": "local", "Options": {"type": "tmpfs", "device": "tmpfs"}}}},
                    {"Type": "volume", "Target": "/anon"},
                    {"Type": "tmpfs", "Target": "/run/x", "TmpfsOptions": {"SizeBytes": 1048576, "Mode": 448}}
                ],
                "StopGracePeriod": 1,
                "Healthcheck": {"Test": ["CMD", "true"], "Interval": 1, "StartInterval": 5},
                "Hosts": ["10.1.2.3 db db.local", "bad"],
                "DNSConfig": {"Nameservers": ["9.9.9.9"], "Search": ["corp"], "Options": ["timeout:2"]},
                "Isolation": "process",
                "Sysctls": {"net.ipv4.ip_unprivileged_port_start": "0"},
                "CapabilityAdd": ["NET_ADMIN"], "CapabilityDrop": ["MKNOD"],
                "Ulimits": [{"Name": "nofile", "Soft": 512, "Hard": 1024}]
            },
            "Resources": {"Limits": {"NanoCPUs": 500000000, "MemoryBytes": 67108864, "Pids": 64}},
            "LogDriver": {"Name": "json-file", "Options": {"max-size": "1m"}}
        }));
        // A hosts line without a name is refused, naming it.
        let err = container_body(&t, &ctx(&t), "owner", &TaskFiles::default()).unwrap_err();
        assert!(err.contains("\"bad\""), "{err}");
        let mut t = t;
        t.spec.container_spec.hosts.pop();
        let b = container_body(&t, &ctx(&t), "owner", &TaskFiles::default()).unwrap();
        assert_eq!(b.image.as_deref(), Some("busybox:1"));
        assert_eq!(b.entrypoint, Some(vec!["/entry".to_string()]));
        assert_eq!(b.cmd, Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(b.hostname.as_deref(), Some("web-2"));
        assert_eq!(b.working_dir.as_deref(), Some("/work"));
        assert_eq!(b.user.as_deref(), Some("1000:1000"));
        assert_eq!(b.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!((b.tty, b.open_stdin), (Some(true), Some(true)));
        let labels = b.labels.as_ref().unwrap();
        assert_eq!(labels["app"], "shop");
        assert_eq!(
            labels["com.docker.swarm.task.id"], "t1",
            "system labels win"
        );
        assert_eq!(labels["com.docker.swarm.task.name"], "web.2.t1");
        assert_eq!(labels["com.docker.swarm.service.name"], "web");
        assert_eq!(labels["com.docker.swarm.service.id"], "s1");
        assert_eq!(labels["com.docker.swarm.node.id"], "n1");
        assert_eq!(labels["com.docker.swarm.task"], "");
        assert_eq!(labels[OWNER_LABEL], "owner");
        let hc = b.healthcheck.as_ref().unwrap();
        assert_eq!(hc.start_interval, Some(5));
        let h = b.host_config.as_ref().unwrap();
        assert_eq!(h.network_mode.as_deref(), Some("none"));
        assert_eq!(
            h.dns,
            Some(vec!["127.0.0.11".to_string()]),
            "the embedded DNS, not the spec's servers"
        );
        assert_eq!(h.dns_search, Some(vec!["corp".to_string()]));
        assert_eq!(h.dns_options, Some(vec!["timeout:2".to_string()]));
        assert_eq!(
            h.extra_hosts,
            Some(vec![
                "db:10.1.2.3".to_string(),
                "db.local:10.1.2.3".to_string()
            ])
        );
        assert_eq!(h.readonly_rootfs, Some(true));
        assert_eq!(h.init, Some(true));
        assert_eq!(h.pids_limit, Some(64));
        assert_eq!(h.memory, Some(64 << 20));
        assert_eq!(h.nano_cpus, Some(500_000_000));
        assert_eq!(
            h.sysctls.as_ref().unwrap()["net.ipv4.ip_unprivileged_port_start"],
            "0"
        );
        assert_eq!(h.cap_add, Some(vec!["NET_ADMIN".to_string()]));
        assert_eq!(h.cap_drop, Some(vec!["MKNOD".to_string()]));
        let u = &h.ulimits.as_ref().unwrap()[0];
        assert_eq!(
            (u.name.as_deref(), u.soft, u.hard),
            (Some("nofile"), Some(512), Some(1024))
        );
        let log = h.log_config.as_ref().unwrap();
        assert_eq!(log.typ.as_deref(), Some("json-file"));
        assert_eq!(log.config.as_ref().unwrap()["max-size"], "1m");
        assert_eq!(h.isolation, None, "isolation is Windows-only");
        assert_eq!(
            h.binds, None,
            "mounts go by the Mounts API, as Docker's swarm executor"
        );
        let m = h.mounts.as_ref().unwrap();
        assert_eq!(m[0].typ, Some(MountType::BIND));
        assert_eq!(m[0].read_only, Some(true));
        assert_eq!(
            m[0].bind_options.as_ref().unwrap().propagation,
            Some(MountBindOptionsPropagationEnum::RSLAVE)
        );
        assert_eq!(m[1].typ, Some(MountType::VOLUME));
        assert_eq!(m[1].source.as_deref(), Some("data"));
        let vo = m[1].volume_options.as_ref().unwrap();
        assert_eq!(vo.no_copy, Some(true));
        assert_eq!(vo.labels.as_ref().unwrap()["l"], "v");
        assert_eq!(m[2].source, None, "an anonymous volume");
        let tmpfs = m[3].tmpfs_options.as_ref().unwrap();
        assert_eq!((tmpfs.size_bytes, tmpfs.mode), (Some(1 << 20), Some(0o700)));
        // The named volume is created with its driver, options and labels; not the anonymous.
        let v = volume_requests(&t);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].name.as_deref(), Some("data"));
        assert_eq!(v[0].driver.as_deref(), Some("local"));
        assert_eq!(v[0].driver_opts.as_ref().unwrap()["type"], "tmpfs");
        assert_eq!(v[0].labels.as_ref().unwrap()["l"], "v");
    }

    #[test]
    fn a_bare_spec_leaves_the_engine_its_defaults() {
        let t = task(
            serde_json::json!({"Runtime": "docker", "ContainerSpec": {"Image": "busybox", "Args": ["sleep", "1"]}}),
        );
        let b = container_body(&t, &ctx(&t), "o", &TaskFiles::default()).unwrap();
        assert_eq!(b.entrypoint, None);
        assert_eq!(b.cmd, Some(vec!["sleep".to_string(), "1".to_string()]));
        assert_eq!(
            (b.hostname.as_ref(), b.user.as_ref(), b.stop_signal.as_ref()),
            (None, None, None)
        );
        let h = b.host_config.unwrap();
        assert_eq!(
            (h.mounts, h.log_config, h.init, h.pids_limit),
            (None, None, None, None)
        );
        assert_eq!(h.dns_search, None);
        let t = task(
            serde_json::json!({"Runtime": "docker", "ContainerSpec": {"Image": "b", "Mounts": [
            {"Type": "bind", "Source": "/a", "Target": "/a", "BindOptions": {"Propagation": "sideways"}}]}}),
        );
        assert!(
            container_body(&t, &ctx(&t), "o", &TaskFiles::default())
                .unwrap_err()
                .contains("sideways")
        );
        let t = task(
            serde_json::json!({"Runtime": "docker", "ContainerSpec": {"Image": "b", "Mounts": [
            {"Type": "npipe", "Source": "/a", "Target": "/a"}]}}),
        );
        assert!(container_body(&t, &ctx(&t), "o", &TaskFiles::default()).is_err());
    }

    #[test]
    fn secrets_and_configs_are_read_only_binds_from_the_store() {
        use crate::taskfiles::PlacedFile;
        use shoal_api::secrets::Kind;
        let t = task(serde_json::json!({"Runtime": "docker", "ContainerSpec": {"Image": "b"}}));
        let files = TaskFiles {
            root: "/run/shoal/task-files".into(),
            dir: "/run/shoal/task-files/t1".into(),
            files: vec![
                PlacedFile {
                    kind: Kind::Secret,
                    source: "db".into(),
                    target: "/run/secrets/db".into(),
                    host: "/run/shoal/task-files/t1/secret-0".into(),
                },
                PlacedFile {
                    kind: Kind::Config,
                    source: "app".into(),
                    target: "/app.conf".into(),
                    host: "/run/shoal/task-files/t1/config-1".into(),
                },
            ],
        };
        let b = container_body(&t, &ctx(&t), "o", &files).unwrap();
        let mounts = serde_json::to_value(b.host_config.unwrap().mounts.unwrap()).unwrap();
        assert_eq!(
            mounts,
            serde_json::json!([
                {"Type": "bind", "Source": "/run/shoal/task-files/t1/secret-0", "Target": "/run/secrets/db", "ReadOnly": true},
                {"Type": "bind", "Source": "/run/shoal/task-files/t1/config-1", "Target": "/app.conf", "ReadOnly": true}
            ])
        );
    }

    #[test]
    fn images_are_pulled_by_tag_latest_when_none() {
        assert_eq!(pull_reference("busybox"), "busybox:latest");
        assert_eq!(pull_reference("busybox:1.36"), "busybox:1.36");
        assert_eq!(
            pull_reference("127.0.0.1:5000/app"),
            "127.0.0.1:5000/app:latest"
        );
        assert_eq!(
            pull_reference("127.0.0.1:5000/app:v2"),
            "127.0.0.1:5000/app:v2"
        );
        assert_eq!(pull_reference("app@sha256:abcd"), "app@sha256:abcd");
    }

    #[test]
    fn pull_progress_counts_layers_from_the_engines_stream() {
        let mut p = PullProgress::default();
        assert!(
            !p.note("latest", "Pulling from library/redis"),
            "not a layer"
        );
        assert!(p.note("a1", "Pulling fs layer"));
        assert!(p.note("b2", "Already exists"));
        assert!(!p.note("a1", "Downloading"), "no change in the count");
        assert_eq!(p.summary(), "1 of 2 layers");
        assert!(p.note("a1", "Pull complete"));
        assert_eq!(p.summary(), "2 of 2 layers");
    }

    #[test]
    fn stop_signals_read_like_dockers() {
        assert_eq!(parse_stop_signal(None), Signal::SIGTERM);
        assert_eq!(parse_stop_signal(Some("")), Signal::SIGTERM);
        assert_eq!(parse_stop_signal(Some("SIGQUIT")), Signal::SIGQUIT);
        assert_eq!(parse_stop_signal(Some("usr1")), Signal::SIGUSR1);
        assert_eq!(parse_stop_signal(Some("9")), Signal::SIGKILL);
        assert_eq!(parse_stop_signal(Some("SIGNOPE")), Signal::SIGTERM);
    }
}
