//! Runs the tasks the manager assigns to this node and reports their state. A task only
//! moves forward: starting, running, then complete, failed or shutdown.

use crate::exec::{Executor, Exit};
use crate::lb::{LbBackend, Netns};
use crate::overlay::apply::Overlay;
use crate::overlay::{NetworkPlan, desired};
use shoal_api::dispatch::{NodeView, TaskStatusUpdate};
use shoal_api::now_rfc3339;
use shoal_api::objects::*;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the runner needs to plumb overlays and program the dataplane: who this node is,
/// its underlay side, and the load-balancer backend.
pub struct OverlayCtx {
    pub node_id: String,
    pub overlay: Overlay,
    pub lb: Arc<dyn LbBackend>,
    /// The backend as shown to operators, with why eBPF was not taken under `auto`.
    pub dataplane: String,
}

/// How long a stopping task waits to leave every node's load balancer and DNS before it
/// gets SIGTERM anyway (a manager that does not answer must not block stops forever).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

struct Running {
    pid: u32,
    stopping: bool,
    /// Killed because its health check failed.
    unhealthy: bool,
}

#[derive(Clone)]
pub struct TaskRunner {
    executor: Arc<dyn Executor>,
    tasks_dir: PathBuf,
    running: Arc<Mutex<HashMap<String, Running>>>,
    /// Tasks this agent has finished with (exited or stopped); never started again.
    done: Arc<Mutex<HashSet<String>>>,
    /// Reports not yet acknowledged by a manager.
    outbox: Arc<Mutex<Vec<TaskStatusUpdate>>>,
    /// The last status reported for each task, sent again while the manager's copy lags
    /// (a report can be acknowledged and still not commit, e.g. across a leader change).
    last: Arc<Mutex<HashMap<String, TaskStatus>>>,
    /// The node's overlays, when tasks get sandboxes.
    overlay: Arc<Mutex<Option<Arc<OverlayCtx>>>>,
    /// The embedded DNS server answering sandboxed tasks on 127.0.0.11.
    dns: Arc<crate::dns::Dns>,
    /// Session version of the last view fully applied.
    applied: Arc<AtomicU64>,
    /// Tasks waiting to leave every node's LB and DNS before SIGTERM, and those the
    /// leader said have.
    draining: Arc<Mutex<HashMap<String, Instant>>>,
    drained: Arc<Mutex<HashSet<String>>>,
    /// Whether forwarding is on in the node's namespace (the routing mesh needs it).
    forwarding: Arc<AtomicBool>,
    /// Tasks whose executor is preparing them (pulling an image), off the reconcile path.
    preparing: Arc<Mutex<HashSet<String>>>,
    /// Tasks prepared and waiting for the next reconcile to start them.
    prepared: Arc<Mutex<HashSet<String>>>,
    /// Asks the session to reconcile again (a preparation finished).
    wake: Arc<tokio::sync::Notify>,
}

impl TaskRunner {
    pub fn new(executor: Arc<dyn Executor>, tasks_dir: PathBuf) -> Self {
        TaskRunner {
            executor,
            tasks_dir,
            running: Arc::default(),
            done: Arc::default(),
            outbox: Arc::default(),
            last: Arc::default(),
            overlay: Arc::default(),
            dns: Arc::default(),
            applied: Arc::default(),
            draining: Arc::default(),
            drained: Arc::default(),
            forwarding: Arc::default(),
            preparing: Arc::default(),
            prepared: Arc::default(),
            wake: Arc::default(),
        }
    }

    /// Resolves when the runner wants a reconcile with the current view (a task it was
    /// preparing is ready to start).
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    pub fn set_applied(&self, version: u64) {
        self.applied.store(version, Ordering::SeqCst);
    }

    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::SeqCst)
    }

    pub fn draining(&self) -> Vec<String> {
        self.draining
            .lock()
            .expect("lock")
            .keys()
            .cloned()
            .collect()
    }

    pub fn is_draining(&self) -> bool {
        !self.draining.lock().expect("lock").is_empty()
    }

    pub fn mark_drained(&self, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        // Only tasks still waiting: a late answer for one already stopped is dropped.
        let waiting = self.draining.lock().expect("lock");
        self.drained
            .lock()
            .expect("lock")
            .extend(ids.into_iter().filter(|id| waiting.contains_key(id)));
    }

    /// Programs the load balancer: VIPs in every running task's namespace and the routing
    /// mesh in the node's. Failures are logged and retried on the next view.
    fn program_lb(&self, ctx: &OverlayCtx, view: &NodeView) -> bool {
        let metrics = crate::metrics::global();
        let mut ok = true;
        let record =
            |table: &str, started: Instant, r: &Result<crate::lb::Synced, crate::lb::LbError>| {
                let kind = match r {
                    Ok(crate::lb::Synced::Full) => "full",
                    Ok(crate::lb::Synced::Incremental { .. }) => "incremental",
                    Ok(crate::lb::Synced::Unchanged) => "unchanged",
                    Err(_) => "error",
                };
                metrics.sync(table, kind, started.elapsed().as_secs_f64());
            };
        let running: HashSet<String> = self.running.lock().expect("lock").keys().cloned().collect();
        let (mut vips, mut backends) = (0usize, 0usize);
        let mut live = Vec::new();
        for task in view.tasks.iter().filter(|t| running.contains(&t.id)) {
            let Some(netns) = self.executor.sandbox(&task.id) else {
                continue;
            };
            live.push(Netns::Named(netns.clone()));
            let table = crate::lb::plan::vip_table(view, task);
            vips += table.vips.len();
            backends += table.vips.values().map(|b| b.len()).sum::<usize>();
            let started = Instant::now();
            let result = ctx.lb.apply_vips(&Netns::Named(netns), &table);
            record("vips", started, &result);
            if let Err(e) = result {
                // A namespace that went away with its task needs nothing any more.
                if self.running.lock().expect("lock").contains_key(&task.id) {
                    ok = false;
                    tracing::warn!(task = %task.id, error = %e, "task load balancer not programmed");
                }
            }
        }
        // What an earlier shoald programmed for tasks that ended while it was away.
        ctx.lb.sweep(&live);
        metrics.lb_vips.set(vips as i64);
        metrics.lb_backends.set(backends as i64);
        if !self.forwarding.load(Ordering::SeqCst) {
            // Published ports are forwarded from the underlay into the ingress overlay.
            match std::fs::write("/proc/sys/net/ipv4/ip_forward", "1") {
                Ok(()) => self.forwarding.store(true, Ordering::SeqCst),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot turn on IPv4 forwarding for the routing mesh")
                }
            }
        }
        let bridge = view
            .networks
            .iter()
            .find(|n| n.network.spec.ingress)
            .and_then(|n| n.network.vni())
            .map(crate::overlay::bridge_name);
        let mesh = crate::lb::plan::mesh_table(view, &ctx.node_id, bridge);
        metrics
            .mesh_ports
            .set(mesh.ports.values().filter(|b| !b.is_empty()).count() as i64);
        let started = Instant::now();
        let result = ctx.lb.apply_mesh(&Netns::Node, &mesh);
        record("mesh", started, &result);
        if let Err(e) = result {
            ok = false;
            tracing::warn!(error = %e, "routing mesh not programmed");
        }
        ok
    }

    /// Stops a task once no node balances to it or resolves it any more (the leader says
    /// so), or after `DRAIN_TIMEOUT`.
    fn drain_then_stop(&self, id: String, grace_ns: u64) {
        {
            let running = self.running.lock().expect("lock");
            if running.get(&id).is_none_or(|r| r.stopping) {
                return;
            }
            let mut draining = self.draining.lock().expect("lock");
            if draining.contains_key(&id) {
                return;
            }
            draining.insert(id.clone(), Instant::now());
        }
        let me = self.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            loop {
                if me.drained.lock().expect("lock").remove(&id) {
                    tracing::debug!(task = %id, waited = ?started.elapsed(), "task left every load balancer");
                    break;
                }
                if started.elapsed() > DRAIN_TIMEOUT {
                    tracing::warn!(task = %id, "not confirmed out of every load balancer in time; stopping anyway");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            me.draining.lock().expect("lock").remove(&id);
            me.drained.lock().expect("lock").remove(&id);
            me.stop(id, grace_ns);
        });
    }

    /// Takes over tasks whose processes outlived an earlier shoald; returns their ids. The
    /// rest of what that run left is removed.
    pub fn adopt_leftovers(&self) -> Vec<String> {
        let found = self.executor.leftovers();
        let ids: Vec<String> = found.iter().map(|(t, _)| t.clone()).collect();
        self.executor.discard_leftovers(&ids);
        for (id, pid) in found {
            tracing::info!(task = %id, pid, "adopted a running task");
            let started = self.executor.adopt(&id, pid);
            if let Some(netns) = self.executor.sandbox(&id) {
                self.dns.serve(&id, netns);
            }
            self.running.lock().expect("lock").insert(
                id.clone(),
                Running {
                    pid,
                    stopping: false,
                    unhealthy: false,
                },
            );
            let status = Some(ContainerStatus { pid, exit_code: 0 });
            match started.health {
                // A container with a health check is watched again: killed if unhealthy.
                Some(health) => self.follow_health(&id, pid, health, status),
                // Its `running` report may have died with the earlier shoald; a repeat is
                // ignored by the manager.
                None => self.report(
                    &id,
                    TaskState::Running,
                    "adopted after a shoald restart",
                    String::new(),
                    status,
                ),
            }
            let me = self.clone();
            tokio::spawn(async move {
                let exit = started.exit.await.unwrap_or(Exit::Unknown);
                me.finished(&id, exit);
            });
        }
        ids
    }

    /// Gives running tasks back interfaces that disappeared (links deleted by hand, a node
    /// namespace rebuilt): the overlay is reconciled for them as for everything else.
    fn replumb(&self, ctx: &OverlayCtx, view: &NodeView, plans: &[NetworkPlan]) {
        let running: HashMap<String, u32> = self
            .running
            .lock()
            .expect("lock")
            .iter()
            .map(|(id, r)| (id.clone(), r.pid))
            .collect();
        let mut links = None;
        for task in view.tasks.iter() {
            let Some(pid) = running.get(&task.id).copied() else {
                continue;
            };
            if task.networks_attachments.is_empty() {
                continue;
            }
            let links = links.get_or_insert_with(crate::overlay::apply::link_names);
            let missing = (0..task.networks_attachments.len())
                .any(|i| !links.contains(&crate::overlay::apply::veth_name(&task.id, i)));
            if !missing {
                continue;
            }
            if self.executor.sandbox(&task.id).is_none() {
                continue;
            }
            let netns = crate::overlay::apply::TaskNetns::Process(pid);
            match ctx.overlay.attach(&netns, task, plans, view.data_path_port) {
                Ok(()) => tracing::info!(task = %task.id, "task interfaces restored"),
                Err(e) => {
                    tracing::warn!(task = %task.id, error = %e, "cannot restore the task's interfaces")
                }
            }
        }
    }

    /// Turns on overlay networking for the tasks this runner starts from now on.
    pub fn set_overlay(&self, ctx: Option<OverlayCtx>) {
        *self.overlay.lock().expect("lock") = ctx.map(Arc::new);
    }

    /// The load-balancer backend in use, or why there is none.
    pub fn dataplane_name(&self) -> String {
        match self.overlay.lock().expect("lock").as_ref() {
            Some(ctx) => ctx.dataplane.clone(),
            None => "none (shoald is not root, or the underlay address is not on this node)".into(),
        }
    }

    pub fn executor_name(&self) -> &'static str {
        self.executor.name()
    }

    pub fn log_path(&self, task_id: &str) -> PathBuf {
        self.tasks_dir.join(task_id).join("output.log")
    }

    fn report(
        &self,
        task_id: &str,
        state: TaskState,
        message: &str,
        err: String,
        cs: Option<ContainerStatus>,
    ) {
        let status = TaskStatus {
            timestamp: now_rfc3339(),
            state,
            message: message.to_string(),
            err,
            container_status: cs,
        };
        self.last
            .lock()
            .expect("lock")
            .insert(task_id.to_string(), status.clone());
        self.outbox.lock().expect("lock").push(TaskStatusUpdate {
            task_id: task_id.to_string(),
            status,
        });
    }

    /// Sends again what the manager has not recorded yet, and forgets tasks it dropped.
    fn resend_lagging(&self, view: &NodeView) {
        let mut last = self.last.lock().expect("lock");
        last.retain(|id, _| view.tasks.iter().any(|t| &t.id == id));
        let mut outbox = self.outbox.lock().expect("lock");
        for t in &view.tasks {
            let Some(st) = last.get(&t.id) else { continue };
            let queued = outbox
                .iter()
                .any(|u| u.task_id == t.id && u.status.state == st.state);
            if st.state > t.status.state && !queued {
                outbox.push(TaskStatusUpdate {
                    task_id: t.id.clone(),
                    status: st.clone(),
                });
            }
        }
    }

    pub fn has_reports(&self) -> bool {
        !self.outbox.lock().expect("lock").is_empty()
    }

    /// Reports to send; put back with `requeue` if sending fails.
    pub fn drain_reports(&self) -> Vec<TaskStatusUpdate> {
        std::mem::take(&mut *self.outbox.lock().expect("lock"))
    }

    pub fn requeue(&self, mut reports: Vec<TaskStatusUpdate>) {
        let mut outbox = self.outbox.lock().expect("lock");
        reports.append(&mut outbox);
        *outbox = reports;
    }

    /// Brings local processes and the dataplane in line with the view; false when the load
    /// balancer could not be programmed (the caller retries before acknowledging the view).
    pub fn reconcile(&self, view: &NodeView) -> bool {
        self.resend_lagging(view);
        self.dns.update(view);
        let overlay = self.overlay.lock().expect("lock").clone();
        let plans: Vec<NetworkPlan> = match &overlay {
            Some(ctx) => {
                let plans = desired(view, &ctx.node_id);
                let senders = crate::overlay::vxlan_senders(view, &ctx.node_id);
                for e in ctx.overlay.sync(&plans, view.data_path_port, senders) {
                    tracing::warn!(error = %e, "overlay not in its desired state");
                }
                self.replumb(ctx, view, &plans);
                plans
            }
            None => Vec::new(),
        };
        let lb_ctx = overlay.clone();
        let wanted: HashSet<&str> = view.tasks.iter().map(|t| t.id.as_str()).collect();
        for task in &view.tasks {
            let is_running = self.running.lock().expect("lock").contains_key(&task.id);
            let is_done = self.done.lock().expect("lock").contains(&task.id);
            if task.desired_state <= TaskState::Running {
                if !is_running && !is_done && !task.status.state.is_terminal() {
                    if task.status.state >= TaskState::Starting {
                        // Started by an earlier shoald whose processes are gone.
                        self.done.lock().expect("lock").insert(task.id.clone());
                        self.report(
                            &task.id,
                            TaskState::Failed,
                            "task lost",
                            "task lost: shoald restarted while it ran".into(),
                            None,
                        );
                    } else {
                        self.start(task, view, overlay.as_deref(), &plans);
                    }
                }
            } else if is_running {
                self.drain_then_stop(task.id.clone(), task.spec.container_spec.stop_grace_period);
            } else if !task.status.state.is_terminal() && !is_done {
                // Never started here (or started before a restart of this agent), or
                // stopped while its image was pulled.
                self.prepared.lock().expect("lock").remove(&task.id);
                self.done.lock().expect("lock").insert(task.id.clone());
                self.report(
                    &task.id,
                    TaskState::Shutdown,
                    "shutdown",
                    String::new(),
                    None,
                );
            }
        }
        self.prepared
            .lock()
            .expect("lock")
            .retain(|id| wanted.contains(id.as_str()));
        // Tasks the manager no longer lists: stop them.
        let orphans: Vec<String> = self
            .running
            .lock()
            .expect("lock")
            .keys()
            .filter(|id| !wanted.contains(id.as_str()))
            .cloned()
            .collect();
        for id in orphans {
            self.stop(id, 10_000_000_000);
        }
        // Tasks started above are programmed too, before the view counts as applied.
        match lb_ctx {
            Some(ctx) => self.program_lb(&ctx, view),
            None => true,
        }
    }

    fn reject(&self, id: &str, err: String) {
        self.done.lock().expect("lock").insert(id.to_string());
        self.report(id, TaskState::Rejected, "failed to start", err, None);
    }

    /// Starts a task: its templates expanded, its image pulled first when the node lacks it
    /// (in the background: the task starts at the reconcile after the pull).
    fn start(
        &self,
        task: &Task,
        view: &NodeView,
        overlay: Option<&OverlayCtx>,
        plans: &[NetworkPlan],
    ) {
        if self.preparing.lock().expect("lock").contains(&task.id) {
            return;
        }
        let ctx = crate::template::context(task, view);
        let task = &match crate::template::expand_task(task, &ctx) {
            Ok(t) => t,
            Err(source) => {
                let e = crate::exec::ExecError::Template {
                    task: task.id.clone(),
                    source,
                };
                return self.reject(&task.id, e.to_string());
            }
        };
        let prepared = self.prepared.lock().expect("lock").remove(&task.id);
        if !prepared {
            let auth = view
                .services
                .iter()
                .find(|s| s.service_id == task.service_id)
                .and_then(|s| s.registry_auth.as_ref());
            match self.executor.prepare(task, auth) {
                Err(e) => return self.reject(&task.id, e.to_string()),
                Ok(Some(prep)) => {
                    tracing::info!(task = %task.id, "{}", prep.message);
                    self.report(
                        &task.id,
                        TaskState::Preparing,
                        &prep.message,
                        String::new(),
                        None,
                    );
                    self.preparing.lock().expect("lock").insert(task.id.clone());
                    let me = self.clone();
                    let id = task.id.clone();
                    if let Some(mut progress) = prep.progress {
                        let me = self.clone();
                        let id = id.clone();
                        // Ends when the preparation drops its sender (the pull is over).
                        tokio::spawn(async move {
                            while progress.changed().await.is_ok() {
                                let message = progress.borrow_and_update().clone();
                                if !me.preparing.lock().expect("lock").contains(&id) {
                                    break;
                                }
                                me.report(&id, TaskState::Preparing, &message, String::new(), None);
                                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                            }
                        });
                    }
                    tokio::spawn(async move {
                        let result = prep.done.await;
                        me.preparing.lock().expect("lock").remove(&id);
                        if me.done.lock().expect("lock").contains(&id) {
                            return;
                        }
                        match result {
                            Ok(()) => {
                                me.prepared.lock().expect("lock").insert(id);
                                me.wake.notify_one();
                            }
                            Err(e) => {
                                tracing::warn!(task = %id, error = %e, "task not prepared");
                                me.reject(&id, e.to_string());
                            }
                        }
                    });
                    return;
                }
                Ok(None) => {}
            }
        }
        // Its secrets and configs, from the view as it is now: one that is missing fails
        // the task by name rather than starting it without the file.
        let files = match crate::taskfiles::files_for(task, view, &ctx) {
            Ok(f) => f,
            Err(source) => {
                let e = crate::exec::ExecError::Files {
                    task: task.id.clone(),
                    source,
                };
                tracing::warn!(task = %task.id, error = %e, "task not started");
                return self.reject(&task.id, e.to_string());
            }
        };
        let port = view.data_path_port;
        self.report(
            &task.id,
            TaskState::Starting,
            "starting",
            String::new(),
            None,
        );
        let log = self.log_path(&task.id);
        let setup = |netns: &str| match overlay {
            Some(ctx) => ctx
                .overlay
                .attach(
                    &crate::overlay::apply::TaskNetns::Named(netns.to_string()),
                    task,
                    plans,
                    port,
                )
                .map_err(|e| e.to_string()),
            None => Ok(()),
        };
        match self.executor.start(task, &ctx, &log, &setup, &files) {
            Err(e) => self.reject(&task.id, e.to_string()),
            Ok(started) => {
                if let Some(netns) = self.executor.sandbox(&task.id) {
                    self.dns.serve(&task.id, netns);
                }
                tracing::info!(task = %task.id, pid = started.pid, "task started");
                self.running.lock().expect("lock").insert(
                    task.id.clone(),
                    Running {
                        pid: started.pid,
                        stopping: false,
                        unhealthy: false,
                    },
                );
                let status = Some(ContainerStatus {
                    pid: started.pid,
                    exit_code: 0,
                });
                match started.health {
                    // Running (and so a backend) only once its health check passes.
                    Some(health) => self.follow_health(&task.id, started.pid, health, status),
                    None => self.report(
                        &task.id,
                        TaskState::Running,
                        "started",
                        String::new(),
                        status,
                    ),
                }
                let me = self.clone();
                let id = task.id.clone();
                tokio::spawn(async move {
                    let exit = started.exit.await.unwrap_or(Exit::Code(-1));
                    me.finished(&id, exit);
                });
            }
        }
    }

    /// Reports a task running once it is healthy; kills it when it turns unhealthy (its
    /// replacement follows from the restart policy).
    fn follow_health(
        &self,
        id: &str,
        pid: u32,
        mut health: tokio::sync::watch::Receiver<crate::exec::Health>,
        status: Option<ContainerStatus>,
    ) {
        use crate::exec::Health;
        let me = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            let mut reported = false;
            loop {
                let now = *health.borrow_and_update();
                match now {
                    Health::Healthy if !reported => {
                        reported = true;
                        me.report(
                            &id,
                            TaskState::Running,
                            "started, healthy",
                            String::new(),
                            status.clone(),
                        );
                    }
                    // Failing checks while shutting down are expected; the stop goes on.
                    Health::Unhealthy
                        if me
                            .running
                            .lock()
                            .expect("lock")
                            .get(&id)
                            .is_none_or(|r| r.stopping) =>
                    {
                        return;
                    }
                    Health::Unhealthy => {
                        tracing::info!(task = %id, "health check failed; killing the task");
                        if let Some(r) = me.running.lock().expect("lock").get_mut(&id) {
                            r.unhealthy = true;
                        }
                        me.executor.kill(pid);
                        return;
                    }
                    _ => {}
                }
                if health.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    fn finished(&self, id: &str, exit: Exit) {
        self.dns.stop(id);
        if let (Some(ctx), Some(netns)) = (
            self.overlay.lock().expect("lock").clone(),
            self.executor.sandbox(id),
        ) {
            ctx.lb.forget(&Netns::Named(netns));
        }
        let Some(r) = self.running.lock().expect("lock").remove(id) else {
            return;
        };
        self.done.lock().expect("lock").insert(id.to_string());
        let (state, message, err, code) = match (r.stopping, exit) {
            _ if r.unhealthy => (
                TaskState::Failed,
                "task: unhealthy container",
                "task: its health check failed".to_string(),
                137,
            ),
            (true, Exit::Code(c)) => (TaskState::Shutdown, "shutdown", String::new(), c),
            (true, Exit::Signal(s)) => (TaskState::Shutdown, "shutdown", String::new(), 128 + s),
            (false, Exit::Code(0)) => (TaskState::Complete, "finished", String::new(), 0),
            (false, Exit::Code(c)) => (
                TaskState::Failed,
                "task: non-zero exit",
                format!("task: non-zero exit ({c})"),
                c,
            ),
            (false, Exit::Signal(s)) => (
                TaskState::Failed,
                "task: killed by a signal",
                format!("task: killed by signal {s}"),
                128 + s,
            ),
            (true, Exit::Unknown) => (TaskState::Shutdown, "shutdown", String::new(), 0),
            (_, Exit::OutOfMemory) => (
                TaskState::Failed,
                "task: out of memory",
                "task: killed by the kernel for exceeding its memory limit (OOM)".to_string(),
                137,
            ),
            (false, Exit::Unknown) => (
                TaskState::Failed,
                "task: exited",
                "task: exited after being adopted by a restarted shoald; its exit code is unknown"
                    .to_string(),
                -1,
            ),
        };
        tracing::info!(task = %id, %state, code, "task ended");
        self.report(
            id,
            state,
            message,
            err,
            Some(ContainerStatus {
                pid: r.pid,
                exit_code: code,
            }),
        );
    }

    /// SIGTERM, then SIGKILL once the grace period is over.
    fn stop(&self, id: String, grace_ns: u64) {
        let pid = {
            let mut running = self.running.lock().expect("lock");
            let Some(r) = running.get_mut(&id) else {
                return;
            };
            if r.stopping {
                return;
            }
            r.stopping = true;
            r.pid
        };
        self.executor.terminate(pid);
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_nanos(grace_ns)).await;
            if me.running.lock().expect("lock").contains_key(&id) {
                tracing::info!(task = %id, "grace period over; killing the task");
                me.executor.kill(pid);
            }
        });
    }

    /// Removes the node's routing mesh (leaving the swarm): published ports stop being
    /// redirected to tasks that are gone.
    pub fn remove_mesh(&self) {
        if let Some(ctx) = self.overlay.lock().expect("lock").clone() {
            if let Err(e) = ctx.lb.remove_mesh(&Netns::Node) {
                tracing::warn!(error = %e, "routing mesh not removed");
            }
            ctx.lb.leave();
        }
    }

    /// Stops every task (leaving the swarm).
    pub async fn stop_all(&self) {
        let ids: Vec<String> = self.running.lock().expect("lock").keys().cloned().collect();
        for id in ids {
            self.stop(id, 2_000_000_000);
        }
        for _ in 0..50 {
            if self.running.lock().expect("lock").is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::{ExecError, Preparation, Setup, Started, TaskContext};
    use std::path::Path;

    /// Prepares every task with a pull the test finishes by hand; records starts.
    #[derive(Default)]
    struct Fake {
        pulls: Mutex<Vec<tokio::sync::oneshot::Sender<Result<(), String>>>>,
        /// The registry credentials each pull was given.
        pull_auth: Mutex<Vec<Option<String>>>,
        /// Each pull's progress messages, sent by the test.
        progress: Mutex<Vec<tokio::sync::watch::Sender<String>>>,
        started: Mutex<Vec<(String, TaskContext, String)>>,
        /// The files each started task was given.
        files: Mutex<Vec<Vec<crate::taskfiles::TaskFile>>>,
        /// Kept so the started tasks run until the test ends.
        exits: Mutex<Vec<tokio::sync::oneshot::Sender<Exit>>>,
    }

    impl Executor for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn prepare(
            &self,
            task: &Task,
            auth: Option<&shoal_api::registry_auth::RegistryAuth>,
        ) -> Result<Option<Preparation>, ExecError> {
            self.pull_auth
                .lock()
                .unwrap()
                .push(auth.map(|a| a.as_str().to_string()));
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.pulls.lock().unwrap().push(tx);
            let id = task.id.clone();
            let (progress_tx, progress) = tokio::sync::watch::channel(String::new());
            self.progress.lock().unwrap().push(progress_tx);
            Ok(Some(Preparation {
                message: "pulling image img:latest".into(),
                progress: Some(progress),
                done: Box::pin(async move {
                    rx.await
                        .unwrap_or(Ok(()))
                        .map_err(|reason| ExecError::Pull {
                            task: id,
                            image: "img:latest".into(),
                            reason,
                        })
                }),
            }))
        }
        fn start(
            &self,
            task: &Task,
            ctx: &TaskContext,
            _log: &Path,
            _setup: &Setup<'_>,
            files: &[crate::taskfiles::TaskFile],
        ) -> Result<Started, ExecError> {
            self.files.lock().unwrap().push(files.to_vec());
            self.started.lock().unwrap().push((
                task.id.clone(),
                ctx.clone(),
                task.spec.container_spec.hostname.clone(),
            ));
            let (tx, exit) = tokio::sync::oneshot::channel();
            self.exits.lock().unwrap().push(tx);
            Ok(Started {
                pid: 4242,
                exit,
                health: None,
            })
        }
        fn terminate(&self, _pid: u32) {}
        fn adopt(&self, _task_id: &str, _pid: u32) -> Started {
            unreachable!("nothing to adopt")
        }
        fn leftovers(&self) -> Vec<(String, u32)> {
            Vec::new()
        }
        fn sandbox(&self, _task_id: &str) -> Option<String> {
            None
        }
        fn discard_leftovers(&self, _keep: &[String]) {}
        fn kill(&self, _pid: u32) {}
    }

    fn view(ids: &[&str], desired: &str) -> NodeView {
        let tasks: Vec<serde_json::Value> = ids
            .iter()
            .map(|id| {
                serde_json::json!({
                    "ID": id, "Version": {"Index": 1}, "CreatedAt": "", "UpdatedAt": "",
                    "ServiceID": "s1", "Slot": 1, "NodeID": "n1",
                    "Spec": {"ContainerSpec": {"Image": "img", "Hostname": "{{.Service.Name}}-{{.Task.Slot}}"}, "Runtime": "docker"},
                    "SpecVersion": {"Index": 1},
                    "Status": {"Timestamp": "", "State": "assigned"},
                    "DesiredState": desired
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "node": null, "tasks": tasks, "networks": [], "managers": [],
            "endpoints": [{"service_id": "s1", "service_name": "web", "mode": "vip", "ports": [], "virtual_ips": [], "backends": []}],
            "heartbeat_period_ns": 5000000000u64, "data_path_port": 4789
        }))
        .unwrap()
    }

    fn states(r: &TaskRunner) -> Vec<(String, TaskState, String)> {
        r.drain_reports()
            .into_iter()
            .map(|u| (u.task_id, u.status.state, u.status.message + &u.status.err))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_task_starts_after_its_image_is_pulled() {
        let fake = Arc::new(Fake::default());
        let dir = tempfile::tempdir().unwrap();
        let r = TaskRunner::new(fake.clone(), dir.path().to_path_buf());
        let v = view(&["t1"], "running");
        r.reconcile(&v);
        assert_eq!(
            states(&r),
            [(
                "t1".to_string(),
                TaskState::Preparing,
                "pulling image img:latest".to_string()
            )]
        );
        // Another pass while the pull runs neither prepares nor starts it again.
        r.reconcile(&v);
        assert_eq!(fake.pulls.lock().unwrap().len(), 1);
        assert!(fake.started.lock().unwrap().is_empty());
        let pull = fake.pulls.lock().unwrap().pop().unwrap();
        pull.send(Ok(())).unwrap();
        tokio::time::timeout(Duration::from_secs(5), r.woken())
            .await
            .expect("the runner asks for a reconcile");
        r.reconcile(&v);
        let started = fake.started.lock().unwrap().clone();
        assert_eq!(started.len(), 1);
        assert_eq!(started[0].1.service.name, "web");
        assert_eq!(started[0].2, "web-1", "started with its templates expanded");
        // (Preparing is sent again while the manager's copy lags: the view still says assigned.)
        let s: Vec<TaskState> = states(&r)
            .into_iter()
            .map(|s| s.1)
            .filter(|s| *s != TaskState::Preparing)
            .collect();
        assert_eq!(s, [TaskState::Starting, TaskState::Running]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pull_progress_is_reported_while_preparing() {
        let fake = Arc::new(Fake::default());
        let dir = tempfile::tempdir().unwrap();
        let r = TaskRunner::new(fake.clone(), dir.path().to_path_buf());
        r.reconcile(&view(&["t1"], "running"));
        states(&r);
        let tx = fake.progress.lock().unwrap().pop().unwrap();
        tx.send("pulling image img:latest: 1 of 3 layers".into())
            .unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let s = states(&r);
                if let Some(m) = s.into_iter().find(|s| s.1 == TaskState::Preparing) {
                    return m.2;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(seen, "pulling image img:latest: 1 of 3 layers");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_pull_rejects_the_task_with_the_registrys_answer() {
        let fake = Arc::new(Fake::default());
        let dir = tempfile::tempdir().unwrap();
        let r = TaskRunner::new(fake.clone(), dir.path().to_path_buf());
        let v = view(&["t1"], "running");
        r.reconcile(&v);
        states(&r);
        let pull = fake.pulls.lock().unwrap().pop().unwrap();
        pull.send(Err("manifest unknown".into())).unwrap();
        let rejected = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let s = states(&r);
                if !s.is_empty() {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(rejected[0].1, TaskState::Rejected);
        assert!(
            rejected[0]
                .2
                .ends_with("task t1: pulling img:latest: manifest unknown"),
            "{rejected:?}"
        );
        r.reconcile(&v);
        assert!(fake.started.lock().unwrap().is_empty());
        assert_eq!(fake.pulls.lock().unwrap().len(), 0, "not pulled again");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_task_stopped_while_pulling_never_starts() {
        let fake = Arc::new(Fake::default());
        let dir = tempfile::tempdir().unwrap();
        let r = TaskRunner::new(fake.clone(), dir.path().to_path_buf());
        r.reconcile(&view(&["t1"], "running"));
        r.reconcile(&view(&["t1"], "shutdown"));
        let pull = fake.pulls.lock().unwrap().pop().unwrap();
        pull.send(Ok(())).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        r.reconcile(&view(&["t1"], "shutdown"));
        assert!(fake.started.lock().unwrap().is_empty());
        let s = states(&r);
        assert_eq!(s.last().unwrap().1, TaskState::Shutdown);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pull_gets_the_credentials_of_the_tasks_service_only() {
        let fake = Arc::new(Fake::default());
        let dir = tempfile::tempdir().unwrap();
        let r = TaskRunner::new(fake.clone(), dir.path().to_path_buf());
        let mut v = view(&["t1"], "running");
        v.services = vec![shoal_api::dispatch::ServiceAnnotations {
            service_id: "other".into(),
            name: "other".into(),
            labels: Default::default(),
            registry_auth: Some(shoal_api::registry_auth::RegistryAuth::from_encoded(
                "b3RoZXI".into(),
            )),
        }];
        r.reconcile(&v);
        let mut w = view(&["t2"], "running");
        w.services = vec![shoal_api::dispatch::ServiceAnnotations {
            service_id: "s1".into(),
            name: "web".into(),
            labels: Default::default(),
            registry_auth: Some(shoal_api::registry_auth::RegistryAuth::from_encoded(
                "d2Vi".into(),
            )),
        }];
        r.reconcile(&w);
        assert_eq!(
            *fake.pull_auth.lock().unwrap(),
            [None, Some("d2Vi".to_string())],
            "another service's credentials are not used"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_task_starts_with_its_files_or_fails_naming_the_one_missing() {
        let fake = Arc::new(Fake::default());
        let dir = tempfile::tempdir().unwrap();
        let r = TaskRunner::new(fake.clone(), dir.path().to_path_buf());
        let mut v = view(&["t1", "t2"], "running");
        for t in &mut v.tasks {
            t.spec.container_spec.secrets = vec![shoal_api::secrets::SecretReference {
                file: Some(shoal_api::secrets::FileTarget::new("db")),
                secret_id: format!("sec-{}", t.id),
                secret_name: format!("db_{}", t.id),
            }];
        }
        // Only t1's secret is in the view.
        v.secrets = vec![shoal_api::secrets::SecretPayload {
            id: "sec-t1".into(),
            spec: shoal_api::secrets::SecretSpec {
                name: "db_t1".into(),
                ..Default::default()
            },
            data: shoal_api::secrets::SensitiveBytes::new(b"hunter2".to_vec()),
        }];
        r.reconcile(&v);
        let pulls: Vec<_> = std::mem::take(&mut *fake.pulls.lock().unwrap());
        for p in pulls {
            p.send(Ok(())).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while fake.started.lock().unwrap().is_empty() && Instant::now() < deadline {
            tokio::time::timeout(Duration::from_millis(200), r.woken())
                .await
                .ok();
            r.reconcile(&v);
        }
        let started: Vec<String> = fake
            .started
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.0.clone())
            .collect();
        assert_eq!(started, ["t1"]);
        let files = fake.files.lock().unwrap()[0].clone();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].target, "/run/secrets/db");
        assert_eq!(files[0].data.as_slice(), b"hunter2");
        let rejected: Vec<_> = states(&r)
            .into_iter()
            .filter(|s| s.1 == TaskState::Rejected)
            .collect();
        assert_eq!(rejected.len(), 1, "{rejected:?}");
        assert_eq!(rejected[0].0, "t2");
        assert!(
            rejected[0]
                .2
                .contains("task t2: secret db_t2 (id sec-t2) is not on this node"),
            "{rejected:?}"
        );
    }
}
