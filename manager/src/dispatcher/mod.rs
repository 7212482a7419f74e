//! Agent sessions on the leader: a snapshot of the node's view then deltas as the store
//! moves, heartbeats that keep the node ready, and task status reports batched into raft.

mod drain;
mod logs;
pub mod view;

#[cfg(test)]
mod tests;

use crate::consensus::RaftHandle;
use crate::store::{Command, TaskOp};
use shoal_api::dispatch::*;
use shoal_api::now_rfc3339;
use shoal_api::objects::*;
use shoal_api::wire::ErrorKind;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tonic::Status;

/// Per node: the open session's number and the channel that puts messages into it.
type SessionInjectors = Arc<Mutex<HashMap<String, (u64, mpsc::UnboundedSender<SessionMessage>)>>>;

/// Removes a session's injection channel when its stream ends (unless a newer session of
/// the same node replaced it).
struct Unregister {
    sessions: SessionInjectors,
    node_id: String,
    session: u64,
}

impl Drop for Unregister {
    fn drop(&mut self) {
        let mut s = self.sessions.lock().expect("lock");
        if s.get(&self.node_id)
            .is_some_and(|(id, _)| *id == self.session)
        {
            s.remove(&self.node_id);
        }
    }
}

/// Reports are merged for this long into one raft entry.
const STATUS_BATCH_WINDOW: Duration = Duration::from_millis(5);
/// Status updates in one raft entry at most, as swarmkit caps the changes of one store
/// transaction (200): an entry stays quick to replicate and apply however much is queued.
const STATUS_BATCH_MAX: usize = 200;
/// Status updates waiting for raft, from all nodes. When raft falls behind, reports wait
/// for room instead of the leader's memory growing.
const STATUS_QUEUE: usize = 4096;
/// How long a report waits for room in the queue before it fails with ResourceExhausted;
/// the agent keeps the updates of a failed report and sends them again.
const STATUS_QUEUE_WAIT: Duration = Duration::from_secs(2);
/// Store changes are merged for this long into one delta.
const VIEW_COALESCE: Duration = Duration::from_millis(10);

#[derive(Clone)]
pub struct Dispatcher {
    raft: RaftHandle,
    /// Opens the sealed registry credentials the views carry; `None` on a manager of a
    /// cluster made before data keys existed.
    data_key: Option<crate::ca::DataKey>,
    last_seen: Arc<Mutex<HashMap<String, Instant>>>,
    statuses: mpsc::Sender<TaskStatusUpdate>,
    /// Messages to put into each node's open session (log subscriptions), keyed by node.
    sessions: SessionInjectors,
    next_session: Arc<std::sync::atomic::AtomicU64>,
    logs: logs::LogBroker,
    /// What each connected node has programmed, from its acknowledgements.
    programmed: drain::Programmed,
}

impl Dispatcher {
    /// Starts the dispatcher and returns its background loops, for the caller to stop.
    pub fn start(
        raft: RaftHandle,
        data_key: Option<crate::ca::DataKey>,
    ) -> (Self, Vec<tokio::task::JoinHandle<()>>) {
        let (tx, rx) = mpsc::channel(STATUS_QUEUE);
        let d = Dispatcher {
            raft,
            data_key,
            last_seen: Arc::default(),
            statuses: tx,
            sessions: Arc::default(),
            next_session: Arc::new(std::sync::atomic::AtomicU64::new(drain::first_session())),
            logs: logs::LogBroker::default(),
            programmed: drain::Programmed::default(),
        };
        let loops = vec![
            tokio::spawn(d.clone().status_batcher(rx)),
            tokio::spawn(d.clone().liveness_loop()),
        ];
        (d, loops)
    }

    fn require_leader(&self) -> Result<(), Status> {
        if self.raft.is_leader() {
            return Ok(());
        }
        let addr = self.raft.leader_addr().unwrap_or_default();
        let mut status = ErrorKind::Precondition.status(format!(
            "this manager is not the leader; the leader is {}",
            if addr.is_empty() { "unknown" } else { &addr }
        ));
        if let Ok(v) = addr.parse() {
            status.metadata_mut().insert("shoal-leader", v);
        }
        Err(status)
    }

    /// Opens a session: marks the node ready and streams its view.
    pub async fn session(
        &self,
        node_id: &str,
        req: SessionRequest,
    ) -> Result<mpsc::Receiver<Result<SessionMessage, Status>>, Status> {
        self.require_leader()?;
        let (addr, needs_update) = {
            let state = self.raft.state();
            let node = state.nodes.get(node_id).ok_or_else(|| {
                ErrorKind::Permission.status(format!(
                    "node {node_id} is not a member of this swarm (removed?); leave and join again"
                ))
            })?;
            (
                node.status.addr.clone(),
                node.status.state != NodeState::Ready || node.description != req.description,
            )
        };
        self.last_seen
            .lock()
            .expect("lock")
            .insert(node_id.to_string(), Instant::now());
        if needs_update {
            self.raft
                .propose(Command::NodeStatus {
                    id: node_id.to_string(),
                    status: NodeStatus {
                        state: NodeState::Ready,
                        message: String::new(),
                        addr,
                    },
                    description: Some(req.description),
                    now: now_rfc3339(),
                })
                .await
                .map_err(crate::controlapi::propose_status)?;
        }
        let (tx, rx) = mpsc::channel(16);
        let me = self.clone();
        let node_id = node_id.to_string();
        tokio::spawn(async move { me.stream_view(node_id, tx).await });
        Ok(rx)
    }

    async fn stream_view(self, node_id: String, tx: mpsc::Sender<Result<SessionMessage, Status>>) {
        let mut changes = self.raft.subscribe();
        let session = self
            .next_session
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // Versions carry the session number, so a late acknowledgement from an earlier
        // session of the node is never taken for one of this session.
        let mut version = drain::first_version(session);
        let mut last = view::node_view(&self.raft.state(), &node_id, self.data_key.as_ref());
        self.programmed.open(&node_id, session, version, &last);
        let _forget = drain::Forget {
            programmed: self.programmed.clone(),
            node_id: node_id.clone(),
            session,
        };
        let first = SessionMessage::Snapshot {
            version,
            view: Box::new(last.clone()),
        };
        if tx.send(Ok(first)).await.is_err() {
            return;
        }
        let (inject, mut injected) = mpsc::unbounded_channel();
        self.sessions
            .lock()
            .expect("lock")
            .insert(node_id.clone(), (session, inject));
        let _unregister = Unregister {
            sessions: self.sessions.clone(),
            node_id: node_id.clone(),
            session,
        };
        loop {
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = tx.closed() => return,
                Some(msg) = injected.recv() => {
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                    continue;
                }
            }
            tokio::time::sleep(VIEW_COALESCE).await;
            if !self.raft.is_leader() {
                let _ = tx
                    .send(Err(
                        ErrorKind::Unavailable.status("leadership moved; reconnect")
                    ))
                    .await;
                return;
            }
            let next = view::node_view(&self.raft.state(), &node_id, self.data_key.as_ref());
            if next.node.is_none() {
                let _ = tx
                    .send(Err(
                        ErrorKind::Permission.status("this node was removed from the swarm")
                    ))
                    .await;
                return;
            }
            let delta = view::diff(&last, &next);
            if delta.is_empty() {
                continue;
            }
            version += 1;
            self.programmed.sent(&node_id, version, &next);
            last = next;
            if tx
                .send(Ok(SessionMessage::Delta {
                    version,
                    changes: delta,
                }))
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// Starts gathering a service's task output from the nodes that ran its tasks.
    pub fn subscribe_logs(
        &self,
        req: shoal_api::logs::LogsRequest,
    ) -> Result<mpsc::Receiver<Result<shoal_api::logs::LogLine, Status>>, Status> {
        self.require_leader()?;
        let state = self.raft.state();
        let service = crate::store::lookup(&state.services, &req.service)
            .map_err(|e| crate::controlapi::store_status(&e))?;
        let mut per_node: HashMap<String, Vec<String>> = HashMap::new();
        let mut names = HashMap::new();
        for t in state
            .service_tasks(&service.id)
            .filter(|t| !t.node_id.is_empty())
        {
            per_node
                .entry(t.node_id.clone())
                .or_default()
                .push(t.id.clone());
            let node_name = state
                .nodes
                .get(&t.node_id)
                .map(|n| n.hostname().to_string())
                .unwrap_or_default();
            names.insert(t.id.clone(), (t.name(&service.spec.name), node_name));
        }
        drop(state);
        let sessions = self.sessions.lock().expect("lock");
        // Nodes without a session now can't answer; their tasks' output is left out.
        let reachable: Vec<(String, Vec<String>)> = per_node
            .into_iter()
            .filter(|(node, _)| sessions.contains_key(node))
            .collect();
        let (id, rx) = self.logs.open(names, &reachable);
        for (node, task_ids) in reachable {
            let sub = shoal_api::logs::LogSubscription {
                id,
                task_ids,
                follow: req.follow,
                tail: req.tail,
                since: req.since,
            };
            if let Some((_, s)) = sessions.get(&node) {
                let _ = s.send(SessionMessage::Logs(sub));
            }
        }
        Ok(rx)
    }

    /// A node's published answer to a log subscription.
    pub async fn publish_logs(
        &self,
        node_id: &str,
        mut items: impl tokio_stream::Stream<Item = Result<shoal_api::logs::PublishItem, Status>>
        + Unpin,
    ) -> Result<(), Status> {
        use tokio_stream::StreamExt;
        let Some(Ok(shoal_api::logs::PublishItem::Start { subscription })) = items.next().await
        else {
            return Err(ErrorKind::Invalid.status("a log stream starts with its subscription"));
        };
        let gone = || ErrorKind::Unavailable.status("nobody reads these logs any more");
        match self.logs.publisher(subscription, node_id) {
            logs::Publisher::Allowed => {}
            logs::Publisher::Gone => return Err(gone()),
            logs::Publisher::NotAsked => {
                // Not counted as one of its publishers: its end closes nobody's stream.
                tracing::warn!(
                    node = node_id,
                    subscription,
                    "refusing a log stream for a subscription this node was not sent"
                );
                return Err(ErrorKind::Permission.status(format!(
                    "log subscription {subscription} was not sent to node {node_id}"
                )));
            }
        }
        let _done = logs::Finish {
            broker: self.logs.clone(),
            id: subscription,
            node_id: node_id.to_string(),
        };
        let mut dropped = 0u64;
        while let Some(item) = items.next().await {
            match item? {
                shoal_api::logs::PublishItem::Line {
                    task_id,
                    line,
                    time,
                    stream,
                } => {
                    let written = logs::Written { line, time, stream };
                    match self
                        .logs
                        .line(subscription, node_id, task_id.clone(), written)
                        .await
                    {
                        logs::Delivery::Sent => {}
                        logs::Delivery::NotAsked => {
                            if dropped == 0 {
                                tracing::warn!(
                                    node = node_id,
                                    subscription,
                                    task = %task_id,
                                    "dropping log lines of a task this node was not asked for"
                                );
                            }
                            dropped += 1;
                        }
                        // The reader went away: tell the node to stop.
                        logs::Delivery::Gone => return Err(gone()),
                    }
                }
                shoal_api::logs::PublishItem::Done => break,
                shoal_api::logs::PublishItem::Start { .. } => {}
            }
        }
        tracing::trace!(node = node_id, subscription, dropped, "log stream finished");
        Ok(())
    }

    /// Heartbeat plus status reports. The heartbeat counts even when the status queue is
    /// full and the call fails with ResourceExhausted.
    pub async fn report(
        &self,
        node_id: &str,
        req: ReportRequest,
    ) -> Result<ReportResponse, Status> {
        self.require_leader()?;
        let (period, statuses) = {
            let state = self.raft.state();
            if !state.nodes.contains_key(node_id) {
                return Err(ErrorKind::Permission
                    .status(format!("node {node_id} is not a member of this swarm")));
            }
            let period = state
                .cluster
                .as_ref()
                .map(|c| c.cluster.spec.dispatcher_heartbeat_period)
                .unwrap_or(5_000_000_000);
            (period, own_statuses(&state, node_id, req.statuses))
        };
        self.last_seen
            .lock()
            .expect("lock")
            .insert(node_id.to_string(), Instant::now());
        // A node marked down (a pause longer than the heartbeat period) that reports again
        // is back: mark it ready without waiting for a new session.
        let down = {
            let state = self.raft.state();
            state
                .nodes
                .get(node_id)
                .filter(|n| n.status.state != NodeState::Ready)
                .map(|n| n.status.addr.clone())
        };
        if let Some(addr) = down {
            let raft = self.raft.clone();
            let id = node_id.to_string();
            tokio::spawn(async move {
                let _ = raft
                    .propose(Command::NodeStatus {
                        id,
                        status: NodeStatus {
                            state: NodeState::Ready,
                            message: String::new(),
                            addr,
                        },
                        description: None,
                        now: now_rfc3339(),
                    })
                    .await;
            });
        }
        self.programmed.acked(node_id, req.applied_version);
        let drained = {
            let state = self.raft.state();
            // Nodes that are up may route to the task; down ones no longer count.
            let live: Vec<&str> = state
                .nodes
                .values()
                .filter(|n| n.status.state == NodeState::Ready)
                .map(|n| n.id.as_str())
                .collect();
            req.draining
                .iter()
                .filter(|t| {
                    // Only this node's own tasks, and only once nobody may pick them.
                    state.tasks.get(*t).is_none_or(|task| {
                        task.node_id == node_id && task.desired_state > TaskState::Running
                    }) && self.programmed.drained(t, live.iter().copied())
                })
                .cloned()
                .collect()
        };
        let queued = tokio::time::timeout(STATUS_QUEUE_WAIT, async {
            for s in statuses {
                if self.statuses.send(s).await.is_err() {
                    // The batcher stopped with the dispatcher; nothing will propose them.
                    return;
                }
            }
        })
        .await;
        if queued.is_err() {
            // Updates queued before the wait ran out may be proposed twice: applying the
            // same status again changes nothing.
            return Err(ErrorKind::Exhausted.status(format!(
                "the leader's task status queue is full ({STATUS_QUEUE} updates); \
                 the agent sends its updates again"
            )));
        }
        Ok(ReportResponse {
            heartbeat_period_ns: period,
            drained,
        })
    }

    async fn status_batcher(self, mut rx: mpsc::Receiver<TaskStatusUpdate>) {
        let mut backlog = false;
        while let Some(first) = rx.recv().await {
            // A backlog is proposed at once; only a fresh update waits for company.
            if !backlog {
                tokio::time::sleep(STATUS_BATCH_WINDOW).await;
            }
            let mut ops = vec![TaskOp::Status {
                id: first.task_id,
                status: first.status,
            }];
            while ops.len() < STATUS_BATCH_MAX {
                let Ok(s) = rx.try_recv() else { break };
                ops.push(TaskOp::Status {
                    id: s.task_id,
                    status: s.status,
                });
            }
            backlog = ops.len() == STATUS_BATCH_MAX;
            if let Err(e) = self
                .raft
                .propose(Command::Tasks {
                    ops,
                    now: now_rfc3339(),
                })
                .await
            {
                tracing::warn!(error = %e, "task status reports not committed; agents resend them");
            }
        }
    }

    /// Marks nodes down whose heartbeats stopped. A new leader first gives every node a full
    /// period, since it has not heard from anyone yet.
    async fn liveness_loop(self) {
        let mut was_leader = false;
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let leader = self.raft.is_leader();
            if leader && !was_leader {
                let now = Instant::now();
                let ids: Vec<String> = self.raft.state().nodes.keys().cloned().collect();
                let mut seen = self.last_seen.lock().expect("lock");
                for id in ids {
                    seen.insert(id, now);
                }
            }
            was_leader = leader;
            if !leader {
                continue;
            }
            let down: Vec<(String, String)> = {
                let state = self.raft.state();
                let period = state
                    .cluster
                    .as_ref()
                    .map(|c| Duration::from_nanos(c.cluster.spec.dispatcher_heartbeat_period))
                    .unwrap_or(Duration::from_secs(5));
                let seen = self.last_seen.lock().expect("lock");
                state
                    .nodes
                    .values()
                    .filter(|n| n.status.state == NodeState::Ready)
                    .filter(|n| seen.get(&n.id).is_none_or(|t| t.elapsed() > period))
                    .map(|n| (n.id.clone(), n.status.addr.clone()))
                    .collect()
            };
            for (id, addr) in down {
                // It may have reported while the previous node was being marked down.
                let silent = self
                    .last_seen
                    .lock()
                    .expect("lock")
                    .get(&id)
                    .is_none_or(|t| t.elapsed() > Duration::from_millis(500));
                if !silent {
                    continue;
                }
                tracing::info!(node = %id, "heartbeats stopped; marking the node down");
                let _ = self
                    .raft
                    .propose(Command::NodeStatus {
                        id,
                        status: NodeStatus {
                            state: NodeState::Down,
                            message: "heartbeat failure".into(),
                            addr,
                        },
                        description: None,
                        now: now_rfc3339(),
                    })
                    .await;
            }
        }
    }
}

/// The updates of a report that the node may make: those for tasks the store has on that
/// node. The rest (ids the store does not know, other nodes' tasks) are dropped and named
/// once per report in the log, so a worker certificate can neither write another node's
/// tasks nor fill raft entries with ids that apply to nothing. Dropping, not refusing the
/// report, keeps the heartbeat and the valid updates of an agent that still reports a task
/// the store has deleted meanwhile. Updates that would change nothing (a state the task
/// already has, or one behind it) are dropped too: an agent that repeats itself, or a
/// worker flooding its own tasks' statuses, costs the leader a lookup, not a raft entry.
fn own_statuses(
    state: &crate::store::ClusterState,
    node_id: &str,
    statuses: Vec<TaskStatusUpdate>,
) -> Vec<TaskStatusUpdate> {
    let mut foreign = Vec::new();
    let own = statuses
        .into_iter()
        .filter(|s| match state.tasks.get(&s.task_id) {
            Some(t) if t.node_id == node_id => crate::store::status_changes(&t.status, &s.status),
            _ => {
                foreign.push(s.task_id.clone());
                false
            }
        })
        .collect();
    if let Some(first) = foreign.first() {
        tracing::warn!(
            node = node_id,
            ignored = foreign.len(),
            first = %first,
            "report has updates for tasks that are unknown or run on other nodes; ignoring them"
        );
    }
    own
}
