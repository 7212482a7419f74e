//! Agent sessions on the leader: a snapshot of the node's view then deltas as the store
//! moves, heartbeats that keep the node ready, and task status reports batched into raft.

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

/// Reports are merged for this long into one raft entry.
const STATUS_BATCH_WINDOW: Duration = Duration::from_millis(5);
/// Store changes are merged for this long into one delta.
const VIEW_COALESCE: Duration = Duration::from_millis(10);

#[derive(Clone)]
pub struct Dispatcher {
    raft: RaftHandle,
    last_seen: Arc<Mutex<HashMap<String, Instant>>>,
    statuses: mpsc::UnboundedSender<TaskStatusUpdate>,
}

impl Dispatcher {
    /// Starts the dispatcher and returns its background loops, for the caller to stop.
    pub fn start(raft: RaftHandle) -> (Self, Vec<tokio::task::JoinHandle<()>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let d = Dispatcher {
            raft,
            last_seen: Arc::default(),
            statuses: tx,
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
        let leader = self.raft.leader_id();
        let addr = {
            let state = self.raft.state();
            state
                .nodes
                .values()
                .find(|n| n.raft_id == leader && leader != 0)
                .and_then(|n| n.manager_status.as_ref())
                .map(|m| m.addr.clone())
                .unwrap_or_default()
        };
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
        let mut version = 1u64;
        let mut last = view::node_view(&self.raft.state(), &node_id);
        let first = SessionMessage::Snapshot {
            version,
            view: Box::new(last.clone()),
        };
        if tx.send(Ok(first)).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = tx.closed() => return,
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
            let next = view::node_view(&self.raft.state(), &node_id);
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

    /// Heartbeat plus status reports.
    pub fn report(&self, node_id: &str, req: ReportRequest) -> Result<ReportResponse, Status> {
        self.require_leader()?;
        let period = {
            let state = self.raft.state();
            let node = state.nodes.get(node_id).ok_or_else(|| {
                ErrorKind::Permission
                    .status(format!("node {node_id} is not a member of this swarm"))
            })?;
            // A node may only report its own tasks.
            for s in &req.statuses {
                if state
                    .tasks
                    .get(&s.task_id)
                    .is_some_and(|t| t.node_id != node.id)
                {
                    return Err(ErrorKind::Permission
                        .status(format!("task {} does not run on node {node_id}", s.task_id)));
                }
            }
            state
                .cluster
                .as_ref()
                .map(|c| c.cluster.spec.dispatcher_heartbeat_period)
                .unwrap_or(5_000_000_000)
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
        for s in req.statuses {
            let _ = self.statuses.send(s);
        }
        Ok(ReportResponse {
            heartbeat_period_ns: period,
        })
    }

    async fn status_batcher(self, mut rx: mpsc::UnboundedReceiver<TaskStatusUpdate>) {
        while let Some(first) = rx.recv().await {
            tokio::time::sleep(STATUS_BATCH_WINDOW).await;
            let mut ops = vec![TaskOp::Status {
                id: first.task_id,
                status: first.status,
            }];
            while let Ok(s) = rx.try_recv() {
                ops.push(TaskOp::Status {
                    id: s.task_id,
                    status: s.status,
                });
            }
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
