//! The node's executor: native tasks run as processes, image tasks as containers when the
//! node has a Docker engine. Signals go by pid to whichever started the task. A task's
//! secrets and configs are written to the node's in-memory store here, before either
//! starts it, and removed when it ends.

use super::docker::DockerExecutor;
use super::native::NativeExecutor;
use super::{ExecError, Executor, Preparation, Setup, Started, TaskContext};
use crate::taskfiles::{TaskFile, TaskFilesDir};
use nix::sys::signal::Signal;
use shoal_api::objects::{Runtime, Task};
use shoal_api::registry_auth::RegistryAuth;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

pub struct ByRuntime {
    native: NativeExecutor,
    docker: Option<DockerExecutor>,
    node_name: String,
    /// Tasks found running in containers at start-up, so `adopt` knows which executor.
    containers: Mutex<HashSet<String>>,
    files: TaskFilesDir,
}

impl ByRuntime {
    pub fn new(
        native: NativeExecutor,
        docker: Option<DockerExecutor>,
        node_name: String,
        files: TaskFilesDir,
    ) -> Self {
        ByRuntime {
            native,
            docker,
            node_name,
            containers: Mutex::default(),
            files,
        }
    }

    /// `started` with its files removed once it ends, before the runner hears of it.
    fn removing_files_at_exit(&self, task_id: &str, mut started: Started) -> Started {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let inner = std::mem::replace(&mut started.exit, rx);
        let files = self.files.clone();
        let id = task_id.to_string();
        tokio::spawn(async move {
            let exit = inner.await;
            files.remove(&id);
            if let Ok(exit) = exit {
                let _ = tx.send(exit);
            }
        });
        started
    }
}

impl Executor for ByRuntime {
    fn name(&self) -> &'static str {
        if self.docker.is_some() {
            "docker"
        } else {
            "native"
        }
    }

    fn prepare(
        &self,
        task: &Task,
        auth: Option<&RegistryAuth>,
    ) -> Result<Option<Preparation>, ExecError> {
        match (task.spec.runtime, &self.docker) {
            (Runtime::Docker, Some(d)) => d.prepare(task, auth),
            // A missing engine is reported by `start`.
            _ => Ok(None),
        }
    }

    fn start(
        &self,
        task: &Task,
        ctx: &TaskContext,
        log: &Path,
        setup: &Setup<'_>,
        files: &[TaskFile],
    ) -> Result<Started, ExecError> {
        if task.spec.runtime == Runtime::Docker && self.docker.is_none() {
            return Err(ExecError::Invalid {
                task: task.id.clone(),
                reason: format!(
                    "node {} runs no Docker engine (shoald --executor native); constrain the service with node.executor==docker",
                    self.node_name
                ),
            });
        }
        let placed = self
            .files
            .write(&task.id, files)
            .map_err(|source| ExecError::Store {
                task: task.id.clone(),
                source,
            })?;
        let started = match (task.spec.runtime, &self.docker) {
            (Runtime::Docker, Some(d)) => d.start(task, ctx, log, setup, &placed),
            _ => self.native.start(task, ctx, log, setup, &placed),
        };
        match started {
            Ok(s) if placed.is_empty() => Ok(s),
            Ok(s) => Ok(self.removing_files_at_exit(&task.id, s)),
            Err(e) => {
                self.files.remove(&task.id);
                Err(e)
            }
        }
    }

    fn terminate(&self, pid: u32) {
        match &self.docker {
            Some(d) if d.owns(pid) => d.stop(pid),
            _ => self.native.terminate(pid),
        }
    }

    fn kill(&self, pid: u32) {
        match &self.docker {
            Some(d) if d.owns(pid) => d.signal(pid, Signal::SIGKILL),
            _ => self.native.kill(pid),
        }
    }

    fn adopt(&self, task_id: &str, pid: u32) -> Started {
        let started = match &self.docker {
            Some(d) if self.containers.lock().expect("lock").contains(task_id) => {
                d.adopt(task_id, pid)
            }
            _ => self.native.adopt(task_id, pid),
        };
        // Its files (if it has any) were kept at start-up; they go when it ends.
        self.removing_files_at_exit(task_id, started)
    }

    fn leftovers(&self) -> Vec<(String, u32)> {
        let mut all = self.native.leftovers();
        if let Some(d) = &self.docker {
            let containers = d.leftovers();
            self.containers
                .lock()
                .expect("lock")
                .extend(containers.iter().map(|(t, _)| t.clone()));
            all.extend(containers);
        }
        all
    }

    fn sandbox(&self, task_id: &str) -> Option<String> {
        // Both name a task's namespace the same way.
        self.native.sandbox(task_id)
    }

    fn discard_leftovers(&self, keep: &[String]) {
        self.files.discard_except(keep);
        self.native.discard_leftovers(keep);
        if let Some(d) = &self.docker {
            d.discard_leftovers(keep);
        }
    }
}
