//! The native executor: a task is its command run as a process in its own process group, its
//! output appended to a file in the state dir.

use super::{ExecError, Executor, Exit, Setup, Started};
use crate::netns::Sandboxes;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use shoal_api::objects::Task;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;

/// Runs tasks as processes, each in its own sandbox when the host allows it.
pub struct NativeExecutor {
    sandboxes: Option<Sandboxes>,
}

impl NativeExecutor {
    /// With `sandboxes`, every task gets its own network and mount namespaces.
    pub fn new(sandboxes: Option<Sandboxes>) -> Self {
        NativeExecutor { sandboxes }
    }
}

/// Environment variable holding the task's directory in the state dir.
pub const TASK_DIR_ENV: &str = "SHOAL_TASK_DIR";

/// Kills task processes left behind by an earlier shoald of this state dir (crash, SIGKILL).
/// Their tasks are reported lost and replaced; adopting them comes with the sandboxes.
pub fn kill_leftovers(tasks_dir: &Path) -> usize {
    let marker = format!("{TASK_DIR_ENV}={}", tasks_dir.display());
    let mut killed = 0;
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for entry in procs.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let ours = env
            .split(|b| *b == 0)
            .any(|kv| kv.starts_with(marker.as_bytes()));
        if ours {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
            killed += 1;
        }
    }
    killed
}

impl Executor for NativeExecutor {
    fn name(&self) -> &'static str {
        "native"
    }

    fn start(&self, task: &Task, log: &Path, setup: &Setup<'_>) -> Result<Started, ExecError> {
        let cs = &task.spec.container_spec;
        let argv: Vec<&String> = cs.command.iter().chain(cs.args.iter()).collect();
        let Some((program, args)) = argv.split_first() else {
            return Err(ExecError::Invalid {
                task: task.id.clone(),
                reason: "a native task needs a command".into(),
            });
        };
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).map_err(|source| ExecError::Output {
                task: task.id.clone(),
                path: dir.display().to_string(),
                source,
            })?;
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|source| ExecError::Output {
                task: task.id.clone(),
                path: log.display().to_string(),
                source,
            })?;
        let err = out.try_clone().map_err(|source| ExecError::Output {
            task: task.id.clone(),
            path: log.display().to_string(),
            source,
        })?;
        let sandbox = match &self.sandboxes {
            Some(sb) => {
                let name = sb.create(&task.id).map_err(|e| ExecError::Invalid {
                    task: task.id.clone(),
                    reason: format!("sandbox: {e}"),
                })?;
                if let Err(reason) = setup(&name) {
                    sb.remove(&task.id);
                    return Err(ExecError::Invalid {
                        task: task.id.clone(),
                        reason: format!("network setup: {reason}"),
                    });
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
                    program: program.to_string(),
                    source,
                });
            }
        };
        let cleanup = self.sandboxes.clone().map(|sb| (sb, task.id.clone()));
        let pid = child.id().unwrap_or(0);
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
            let _ = tx.send(exit);
        });
        Ok(Started { pid, exit: rx })
    }

    fn terminate(&self, pid: u32) {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }

    fn kill(&self, pid: u32) {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}
