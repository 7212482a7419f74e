//! The node's executor: native tasks run as processes, image tasks as containers when the
//! node has a Docker engine. Signals go by pid to whichever started the task.

use super::docker::DockerExecutor;
use super::native::NativeExecutor;
use super::{ExecError, Executor, Preparation, Setup, Started, TaskContext};
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
}

impl ByRuntime {
    pub fn new(native: NativeExecutor, docker: Option<DockerExecutor>, node_name: String) -> Self {
        ByRuntime {
            native,
            docker,
            node_name,
            containers: Mutex::default(),
        }
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
    ) -> Result<Started, ExecError> {
        match (task.spec.runtime, &self.docker) {
            (Runtime::Native, _) => self.native.start(task, ctx, log, setup),
            (Runtime::Docker, Some(d)) => d.start(task, ctx, log, setup),
            (Runtime::Docker, None) => Err(ExecError::Invalid {
                task: task.id.clone(),
                reason: format!(
                    "node {} runs no Docker engine (shoald --executor native); constrain the service with node.executor==docker",
                    self.node_name
                ),
            }),
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
        match &self.docker {
            Some(d) if self.containers.lock().expect("lock").contains(task_id) => {
                d.adopt(task_id, pid)
            }
            _ => self.native.adopt(task_id, pid),
        }
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
        self.native.discard_leftovers(keep);
        if let Some(d) = &self.docker {
            d.discard_leftovers(keep);
        }
    }
}
