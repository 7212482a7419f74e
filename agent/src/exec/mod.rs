//! Task executors behind one trait. The native executor runs a task's command as a plain
//! process; the Docker executor runs an image as a container; `ByRuntime` picks one of them
//! per task from its runtime, so a node with Docker runs both kinds.

pub mod by_runtime;
pub mod docker;
pub mod native;
pub mod native_plan;

use crate::taskfiles::TaskFile;
use shoal_api::objects::Task;
use shoal_api::registry_auth::RegistryAuth;
use std::path::Path;

/// What a task is beyond its spec, for Swarm's container labels and for service templates
/// (the spec a task is started with has its templates expanded already).
pub use shoal_api::template::Context as TaskContext;

/// Long work a task needs before it can start (pulling its image), run off the runner's
/// path so other tasks go on meanwhile.
pub struct Preparation {
    /// What the task's status says meanwhile ("pulling image busybox:latest").
    pub message: String,
    /// Newer status messages while the work goes on ("pulling image X: 2 of 5 layers");
    /// the runner reports the latest at most once a second.
    pub progress: Option<tokio::sync::watch::Receiver<String>>,
    pub done: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ExecError>> + Send>>,
}

/// How a task's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// An adopted task ended; only the process that started it could read its status.
    Unknown,
    /// The kernel killed it for exceeding its memory limit.
    OutOfMemory,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("task {task}: cannot start {program:?}: {source}")]
    Spawn {
        task: String,
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("task {task}: {reason}")]
    Invalid { task: String, reason: String },
    #[error("task {task}: pulling {image}: {reason}")]
    Pull {
        task: String,
        image: String,
        /// The registry's answer, as the engine passes it on.
        reason: String,
    },
    #[error("task {task}: volume {volume}: {reason}")]
    Volume {
        task: String,
        volume: String,
        reason: String,
    },
    #[error("task {task}: {source}")]
    Template {
        task: String,
        #[source]
        source: crate::template::ExpandError,
    },
    #[error("task {task}: {source}")]
    Files {
        task: String,
        #[source]
        source: crate::taskfiles::TaskFilesError,
    },
    #[error("task {task}: {source}")]
    Store {
        task: String,
        #[source]
        source: crate::taskfiles::store::StoreError,
    },
    #[error("task {task}: output file {path}: {source}")]
    Output {
        task: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Called with the name of a task's network namespace before the task starts.
pub type Setup<'a> = dyn Fn(&str) -> Result<(), String> + 'a;

/// What a health check says of a running task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy,
}

/// A started task.
pub struct Started {
    pub pid: u32,
    /// Resolves when the task's process ends.
    pub exit: tokio::sync::oneshot::Receiver<Exit>,
    /// For a task with a health check: its state as it changes. Such a task counts as
    /// running (and joins the LB and DNS) only once healthy.
    pub health: Option<tokio::sync::watch::Receiver<Health>>,
}

pub trait Executor: Send + Sync {
    fn name(&self) -> &'static str;
    /// What must happen before `start` that may take long (an image pull); `None` when the
    /// task can start at once. `auth`: the service's `--with-registry-auth` credentials.
    fn prepare(
        &self,
        _task: &Task,
        _auth: Option<&RegistryAuth>,
    ) -> Result<Option<Preparation>, ExecError> {
        Ok(None)
    }
    /// Starts a task, writing its output to `log`. `setup` runs once the task's network
    /// namespace exists (given its name) and before the task's process starts: the overlay
    /// plumbs the task's interfaces there. `files` are its secrets and configs, kept in
    /// memory for as long as it runs.
    fn start(
        &self,
        task: &Task,
        ctx: &TaskContext,
        log: &Path,
        setup: &Setup<'_>,
        files: &[TaskFile],
    ) -> Result<Started, ExecError>;
    /// Asks a task to stop (SIGTERM); the caller escalates with `kill` after the grace period.
    fn terminate(&self, pid: u32);
    /// Takes over a task started by an earlier run of this shoald, whose process lives on.
    fn adopt(&self, task_id: &str, pid: u32) -> Started;
    /// Task processes of an earlier run still alive: (task id, pid of its process group).
    fn leftovers(&self) -> Vec<(String, u32)>;
    /// The network namespace of a task, when tasks get their own.
    fn sandbox(&self, task_id: &str) -> Option<String>;
    /// Ends leftover tasks that are not adopted and removes whatever they left behind.
    fn discard_leftovers(&self, keep: &[String]);
    fn kill(&self, pid: u32);
}
