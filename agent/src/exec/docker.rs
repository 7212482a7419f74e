//! The Docker executor: a task whose spec names an image runs as a container on the node's
//! Docker engine, through bollard. Containers are created with network mode `none` and DNS
//! 127.0.0.11, labelled with their task, service and owner; once the container runs, its
//! network namespace gets the sandbox name a native task's would have, and the overlay plumbs
//! it like any other (veth, address, routes), so the LB, DNS and overlay code do not care
//! which executor made a task.
//!
//! Several shoalds may share one engine (the testbed): the owner label, derived from the
//! state dir like sandbox names, keeps each to its own containers.

use super::{ExecError, Exit, Health, Setup, Started};
use crate::netns::Sandboxes;
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HealthConfig, HealthStatusEnum, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shoal_api::objects::Task;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_stream::StreamExt;

pub const TASK_LABEL: &str = "com.shoal.task.id";
pub const SERVICE_LABEL: &str = "com.shoal.service.id";
pub const OWNER_LABEL: &str = "com.shoal.owner";

/// How long a call to the engine may take before the task is given up on.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct DockerExecutor {
    docker: Docker,
    /// The state dir's tasks directory, where each task's output.log lives.
    log_dir: Option<std::path::PathBuf>,
    sandboxes: Sandboxes,
    owner: String,
    node_name: String,
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

impl DockerExecutor {
    /// Connects to the local engine (DOCKER_HOST or /var/run/docker.sock) and agrees on an
    /// API version; fails when nothing answers.
    pub async fn connect(
        sandboxes: Sandboxes,
        node_name: String,
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
            node_name,
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

    async fn create_and_start(&self, task: &Task, log: &Path) -> Result<(String, u32), ExecError> {
        let cs = &task.spec.container_spec;
        let image = cs.image.clone();
        match self.docker.inspect_image(&image).await {
            Ok(_) => {}
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {
                return Err(invalid(
                    &task.id,
                    format!(
                        "image {image} is not present on node {}; load or build it there (no registry is used)",
                        self.node_name
                    ),
                ));
            }
            Err(e) => return Err(invalid(&task.id, format!("Docker engine: {e}"))),
        }
        let name = container_name(&task.id);
        // A leftover of the same task (crash between create and start) is replaced.
        let _ = self
            .docker
            .remove_container(
                &name,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await;
        let mut labels: HashMap<String, String> = cs.labels.clone().into_iter().collect();
        labels.insert(TASK_LABEL.into(), task.id.clone());
        labels.insert(SERVICE_LABEL.into(), task.service_id.clone());
        labels.insert(OWNER_LABEL.into(), self.owner.clone());
        let mut env = cs.env.clone();
        env.push(format!("SHOAL_TASK_ID={}", task.id));
        env.push(format!("SHOAL_SERVICE_ID={}", task.service_id));
        env.push(format!("SHOAL_TASK_SLOT={}", task.slot));
        let cmd: Vec<String> = cs.command.iter().chain(cs.args.iter()).cloned().collect();
        let limits = &task.spec.resources.limits;
        let healthcheck = cs.healthcheck.as_ref().map(|h| HealthConfig {
            test: Some(h.test.clone()),
            interval: Some(h.interval).filter(|v| *v > 0),
            timeout: Some(h.timeout).filter(|v| *v > 0),
            retries: Some(h.retries).filter(|v| *v > 0),
            start_period: Some(h.start_period).filter(|v| *v > 0),
            ..Default::default()
        });
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            cmd: (!cmd.is_empty()).then_some(cmd),
            env: Some(env),
            labels: Some(labels),
            healthcheck,
            host_config: Some(HostConfig {
                // Networking is ours: the overlay plumbs the namespace once it exists.
                network_mode: Some("none".into()),
                dns: Some(vec![crate::netns::TASK_RESOLVER.into()]),
                binds: (!cs.mounts.is_empty()).then(|| {
                    cs.mounts
                        .iter()
                        .map(|m| {
                            let ro = if m.read_only { ":ro" } else { "" };
                            format!("{}:{}{ro}", m.source, m.target)
                        })
                        .collect()
                }),
                memory: Some(limits.memory_bytes).filter(|m| *m > 0),
                nano_cpus: Some(limits.nano_cpus).filter(|c| *c > 0),
                ..Default::default()
            }),
            ..Default::default()
        };
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

    async fn remove(&self, id: &str) {
        let _ = self
            .docker
            .remove_container(
                id,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
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
        let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        else {
            return;
        };
        let opts = LogsOptionsBuilder::new()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .since(since)
            .build();
        let mut stream = self.docker.logs(id, Some(opts));
        tokio::spawn(async move {
            while let Some(Ok(chunk)) = stream.next().await {
                let _ = file.write_all(&chunk.into_bytes());
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
                    Some(RemoveContainerOptionsBuilder::new().force(true).build()),
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

    pub fn start(&self, task: &Task, log: &Path, setup: &Setup<'_>) -> Result<Started, ExecError> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).map_err(|source| ExecError::Output {
                task: task.id.clone(),
                path: dir.display().to_string(),
                source,
            })?;
        }
        let (id, pid) = block_on(async {
            match tokio::time::timeout(ENGINE_TIMEOUT, self.create_and_start(task, log)).await {
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

#[cfg(test)]
mod tests {
    use super::*;

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
