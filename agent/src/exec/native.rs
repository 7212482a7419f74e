//! The native executor: a task is its command run as a process in its own process group, its
//! output appended to a file in the state dir. Which container-spec fields it honours,
//! refuses or ignores, and why, is in `native_plan.rs`, which builds its program line.

use super::{ExecError, Exit, Setup, Started, TaskContext};
use crate::netns::Sandboxes;
use crate::taskfiles::TaskFiles;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use shoal_api::objects::Task;
use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

/// Runs tasks as processes, each in its own sandbox when the host allows it.
pub struct NativeExecutor {
    sandboxes: Option<Sandboxes>,
    tasks_dir: std::path::PathBuf,
    /// The signal that stops each task's process group (its spec's, else SIGTERM).
    stop_signals: Arc<Mutex<HashMap<u32, Signal>>>,
    log_writer: crate::logs::writer::WriterProgram,
}

impl NativeExecutor {
    /// With `sandboxes`, every task gets its own network and mount namespaces. `tasks_dir`
    /// is `<state-dir>/tasks`; local volumes live beside it in `<state-dir>/volumes`.
    pub fn new(sandboxes: Option<Sandboxes>, tasks_dir: std::path::PathBuf) -> Self {
        NativeExecutor {
            sandboxes,
            tasks_dir,
            stop_signals: Arc::default(),
            log_writer: Default::default(),
        }
    }

    /// Tasks' output is written by `exe log-writer` (shoald itself), which outlives a
    /// restart of shoald; without it, by a thread of this process.
    pub fn with_log_writer(mut self, exe: std::path::PathBuf) -> Self {
        self.log_writer = crate::logs::writer::WriterProgram(Some(exe));
        self
    }

    /// Where local volumes of native tasks are directories, one per volume name.
    pub fn volumes_dir(&self) -> std::path::PathBuf {
        self.tasks_dir
            .parent()
            .unwrap_or(&self.tasks_dir)
            .join("volumes")
    }
}

/// Sets `net.*` sysctls inside the task's network namespace (`/proc/sys/net` is the
/// namespace's own for a process in it).
fn set_sysctls(netns: &str, sysctls: &[(String, String)]) -> Result<(), String> {
    for (path, value) in sysctls {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                netns,
                "sh",
                "-c",
                "printf '%s' \"$2\" > \"/proc/sys/$1\"",
                "sh",
            ])
            .arg(path)
            .arg(value)
            .output()
            .map_err(|e| format!("sysctl {path}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "sysctl {}={value}: {}",
                path.replace('/', "."),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// Environment variable holding the task's directory in the state dir.
pub const TASK_DIR_ENV: &str = "SHOAL_TASK_DIR";

/// Processes whose environment marks them as tasks under `tasks_dir`: (task id, pid, is
/// the leader of its process group).
fn task_processes(tasks_dir: &Path) -> Vec<(String, u32, bool)> {
    let marker = format!("{TASK_DIR_ENV}={}/", tasks_dir.display());
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in procs.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let Some(task) = env.split(|b| *b == 0).find_map(|kv| {
            let kv = std::str::from_utf8(kv).ok()?;
            kv.strip_prefix(&marker)
                .map(|rest| rest.trim_end_matches('/').to_string())
        }) else {
            continue;
        };
        // Field 5 of /proc/PID/stat is the process group; the comm field may hold spaces.
        let leader = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.to_string()))
            .and_then(|r| {
                r.split_whitespace()
                    .nth(2)
                    .and_then(|g| g.parse::<u32>().ok())
            })
            .is_some_and(|pgrp| pgrp == pid);
        out.push((task, pid, leader));
    }
    out
}

fn alive(pid: u32) -> bool {
    // A zombie is gone for our purposes.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

/// What `ByRuntime` calls; the same as the `Executor` trait, with the task's files
/// already in the store.
impl NativeExecutor {
    pub fn start(
        &self,
        task: &Task,
        _ctx: &TaskContext,
        log: &Path,
        setup: &Setup<'_>,
        files: &TaskFiles,
    ) -> Result<Started, ExecError> {
        let cs = &task.spec.container_spec;
        let invalid = |reason: String| ExecError::Invalid {
            task: task.id.clone(),
            reason,
        };
        let task_dir = log.parent().unwrap_or(log).to_path_buf();
        let plan = super::native_plan::plan(
            task,
            &self.volumes_dir(),
            &task_dir,
            self.sandboxes.is_some(),
            files,
        )
        .map_err(invalid)?;
        if !plan.ignored.is_empty() {
            tracing::debug!(task = %task.id, fields = ?plan.ignored, "container-only fields ignored for a native task");
        }
        for dir in &plan.dirs {
            std::fs::create_dir_all(dir).map_err(|e| {
                invalid(format!(
                    "making the volume directory {}: {e}",
                    dir.display()
                ))
            })?;
        }
        let (program, args) = plan.argv.split_first().expect("a plan has a command");
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).map_err(|source| ExecError::Output {
                task: task.id.clone(),
                path: dir.display().to_string(),
                source,
            })?;
        }
        let output_error = |source: std::io::Error| ExecError::Output {
            task: task.id.clone(),
            path: log.display().to_string(),
            source,
        };
        let limits = crate::logs::rotate::Limits::from_driver(task.spec.log_driver.as_ref())
            .map_err(invalid)?;
        let output = crate::logs::writer::start(&self.log_writer, &task_dir, log, limits)
            .map_err(output_error)?;
        let (out, err) = (output.stdout, output.stderr);
        let sandbox = match &self.sandboxes {
            Some(sb) => {
                let dns = cs.dns_config.clone().unwrap_or_default();
                let files = crate::netns::TaskFiles {
                    search: dns.search,
                    options: dns.options,
                    hosts: cs.hosts.clone(),
                };
                let name = sb
                    .create_with(&task.id, &files)
                    .map_err(|e| invalid(format!("sandbox: {e}")))?;
                let ready = setup(&name)
                    .map_err(|reason| format!("network setup: {reason}"))
                    .and_then(|()| set_sysctls(&name, &plan.sysctls));
                if let Err(reason) = ready {
                    sb.remove(&task.id);
                    return Err(invalid(reason));
                }
                Some(name)
            }
            None => None,
        };
        let mut cmd = match &sandbox {
            // `ip netns exec` enters the namespace, gives the task its own mount namespace
            // with /etc/netns/NAME/resolv.conf, then execs the command (same pid).
            Some(name) => {
                let mut c = tokio::process::Command::new("ip");
                c.args(["netns", "exec", name]).arg(program);
                c
            }
            None => tokio::process::Command::new(program),
        };
        if let Some(dir) = &plan.dir {
            cmd.current_dir(dir);
        }
        cmd.args(args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("SHOAL_TASK_ID", &task.id)
            .env("SHOAL_SERVICE_ID", &task.service_id)
            .env("SHOAL_TASK_SLOT", task.slot.to_string())
            // Marks the process as ours, so a restarted shoald can find and clean it up.
            .env(TASK_DIR_ENV, log.parent().unwrap_or(log))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Own process group, so stop signals reach the task's children too.
            .process_group(0)
            .kill_on_drop(false);
        for kv in &cs.env {
            if let Some((k, v)) = kv.split_once('=') {
                cmd.env(k, v);
            }
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(source) => {
                if let Some(sb) = &self.sandboxes {
                    sb.remove(&task.id);
                }
                return Err(ExecError::Spawn {
                    task: task.id.clone(),
                    program: program.clone(),
                    source,
                });
            }
        };
        let cleanup = self.sandboxes.clone().map(|sb| (sb, task.id.clone()));
        let scratch = plan.scratch.clone();
        let pid = child.id().unwrap_or(0);
        let signal = super::docker::parse_stop_signal(Some(&cs.stop_signal));
        let stop_signals = self.stop_signals.clone();
        stop_signals.lock().expect("lock").insert(pid, signal);
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let exit = match child.wait().await {
                Ok(s) => match (s.code(), s.signal()) {
                    (Some(c), _) => Exit::Code(c),
                    (None, Some(sig)) => Exit::Signal(sig),
                    _ => Exit::Code(-1),
                },
                Err(_) => Exit::Code(-1),
            };
            if let Some((sb, id)) = cleanup {
                sb.remove(&id);
            }
            for dir in scratch {
                let _ = std::fs::remove_dir_all(dir);
            }
            stop_signals.lock().expect("lock").remove(&pid);
            let _ = tx.send(exit);
        });
        Ok(Started {
            pid,
            exit: rx,
            health: None,
        })
    }

    pub fn adopt(&self, task_id: &str, pid: u32) -> Started {
        if let Some(sb) = &self.sandboxes
            && let Err(e) = sb.reattach(task_id, pid)
        {
            tracing::warn!(task = task_id, error = %e, "cannot name the adopted task's namespace");
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let cleanup = self.sandboxes.clone();
        let id = task_id.to_string();
        tokio::spawn(async move {
            // Not our child: watch for it to go.
            while alive(pid) {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            if let Some(sb) = cleanup {
                sb.remove(&id);
            }
            let _ = tx.send(Exit::Unknown);
        });
        Started {
            pid,
            exit: rx,
            health: None,
        }
    }

    pub fn sandbox(&self, task_id: &str) -> Option<String> {
        self.sandboxes.as_ref().map(|sb| sb.name(task_id))
    }

    pub fn leftovers(&self) -> Vec<(String, u32)> {
        task_processes(&self.tasks_dir)
            .into_iter()
            .filter(|(_, _, leader)| *leader)
            .map(|(task, pid, _)| (task, pid))
            .collect()
    }

    pub fn discard_leftovers(&self, keep: &[String]) {
        for (task, pid, _) in task_processes(&self.tasks_dir) {
            if !keep.contains(&task) {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        if let Some(sb) = &self.sandboxes {
            for name in sb.list() {
                if !keep.iter().any(|t| name == sb.name(t)) {
                    sb.remove_name(&name);
                }
            }
        }
    }

    pub fn terminate(&self, pid: u32) {
        let sig = self
            .stop_signals
            .lock()
            .expect("lock")
            .get(&pid)
            .copied()
            .unwrap_or(Signal::SIGTERM);
        let _ = killpg(Pid::from_raw(pid as i32), sig);
    }

    pub fn kill(&self, pid: u32) {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}
