//! The native executor: a task is its command run as a process in its own process group, its
//! output appended to a file in the state dir.

use super::{ExecError, Executor, Exit, Started};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use shoal_api::objects::Task;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;

pub struct NativeExecutor;

impl Executor for NativeExecutor {
    fn name(&self) -> &'static str {
        "native"
    }

    fn start(&self, task: &Task, log: &Path) -> Result<Started, ExecError> {
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
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("SHOAL_TASK_ID", &task.id)
            .env("SHOAL_SERVICE_ID", &task.service_id)
            .env("SHOAL_TASK_SLOT", task.slot.to_string())
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
        let mut child = cmd.spawn().map_err(|source| ExecError::Spawn {
            task: task.id.clone(),
            program: program.to_string(),
            source,
        })?;
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
