//! Raft messages between managers over gRPC with mutual TLS: one sender task per peer that
//! batches whatever queued up while the previous call was in flight.

use super::node::Msg;
use crate::store::{ClusterState, GRPC_ADDR_LABEL};
use ::raft::prelude::{Message, MessageType};
use protobuf::Message as _;
use shoal_api::pb::RaftBatch;
use shoal_api::pb::raft_client::RaftClient;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock, mpsc};
use std::time::{Duration, Instant};
use tokio::sync::mpsc as tmpsc;
use tonic::transport::{ClientTlsConfig, Endpoint};

/// A peer counts as reachable this long after its last successful exchange.
const REACHABLE_FOR: Duration = Duration::from_millis(1500);
const MAX_BATCH: usize = 512;
/// How often peers without recent traffic are checked.
const PROBE_EVERY: Duration = Duration::from_millis(500);

pub struct Transport {
    my_id: u64,
    tls: ClientTlsConfig,
    runtime: tokio::runtime::Handle,
    peers: Mutex<HashMap<u64, tmpsc::UnboundedSender<Message>>>,
    /// Addresses known before the store has them (from the join answer).
    bootstrap: RwLock<HashMap<u64, String>>,
    reached: Mutex<HashMap<u64, Instant>>,
    node: OnceLock<mpsc::Sender<Msg>>,
    state: OnceLock<Arc<RwLock<ClusterState>>>,
}

impl Transport {
    pub fn new(my_id: u64, tls: ClientTlsConfig, runtime: tokio::runtime::Handle) -> Arc<Self> {
        Arc::new(Transport {
            my_id,
            tls,
            runtime,
            peers: Mutex::default(),
            bootstrap: RwLock::default(),
            reached: Mutex::default(),
            node: OnceLock::new(),
            state: OnceLock::new(),
        })
    }

    pub(crate) fn attach(&self, node: mpsc::Sender<Msg>, state: Arc<RwLock<ClusterState>>) {
        let _ = self.node.set(node);
        let _ = self.state.set(state);
    }

    pub fn add_bootstrap_peer(&self, raft_id: u64, addr: String) {
        self.bootstrap.write().expect("lock").insert(raft_id, addr);
    }

    /// Where a manager listens: from the store, else from the join answer.
    pub fn addr_of(&self, raft_id: u64) -> Option<String> {
        if let Some(state) = self.state.get() {
            let state = state.read().expect("state lock");
            // A demoted manager keeps its raft seat until the change that removes it commits,
            // so its address must stay known after its manager status is gone.
            let node = state.nodes.values().find(|n| n.raft_id == raft_id);
            if let Some(addr) = node
                .and_then(|n| n.manager_status.as_ref())
                .map(|m| m.addr.clone())
                .or_else(|| node.and_then(|n| n.spec.labels.get(GRPC_ADDR_LABEL).cloned()))
                .filter(|a| !a.is_empty())
            {
                return Some(addr);
            }
        }
        self.bootstrap.read().expect("lock").get(&raft_id).cloned()
    }

    pub fn recently_reached(&self, raft_id: u64) -> bool {
        self.reached
            .lock()
            .expect("lock")
            .get(&raft_id)
            .is_some_and(|t| t.elapsed() < REACHABLE_FOR)
    }

    /// Marks a peer reachable because it just sent us something.
    pub fn heard_from(&self, raft_id: u64) {
        self.reached
            .lock()
            .expect("lock")
            .insert(raft_id, Instant::now());
    }

    /// Queues messages from the raft thread; never blocks it.
    pub fn send(self: &Arc<Self>, msgs: Vec<Message>) {
        for m in msgs {
            if m.to == self.my_id {
                continue;
            }
            let to = m.to;
            let mut peers = self.peers.lock().expect("lock");
            let tx = peers.entry(to).or_insert_with(|| {
                let (tx, rx) = tmpsc::unbounded_channel();
                let me = self.clone();
                self.runtime
                    .spawn(async move { me.peer_loop(to, rx).await });
                tx
            });
            let _ = tx.send(m);
        }
    }

    fn report(&self, msg: Msg) {
        if let Some(node) = self.node.get() {
            let _ = node.send(msg);
        }
    }

    async fn peer_loop(self: Arc<Self>, to: u64, mut rx: tmpsc::UnboundedReceiver<Message>) {
        let mut client: Option<(String, RaftClient<tonic::transport::Channel>)> = None;
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let has_snapshot = batch
                .iter()
                .any(|m| m.get_msg_type() == MessageType::MsgSnapshot);
            let dropped = |me: &Self| {
                me.report(Msg::Unreachable(to));
                if has_snapshot {
                    // raft-rs waits for this before it sends the snapshot again.
                    me.report(Msg::SnapshotSent { to, ok: false });
                }
            };
            let Some(addr) = self.addr_of(to) else {
                tracing::debug!(peer = to, "no address for raft peer yet; dropping messages");
                dropped(&self);
                continue;
            };
            if client.as_ref().is_none_or(|(a, _)| *a != addr) {
                client = self.connect(&addr).map(|c| (addr.clone(), c));
            }
            let Some((_, c)) = client.as_mut() else {
                dropped(&self);
                continue;
            };
            let payload = RaftBatch {
                messages: batch
                    .iter()
                    .map(|m| m.write_to_bytes().expect("raft message encodes"))
                    .collect(),
            };
            let mut req = tonic::Request::new(payload);
            req.set_timeout(Duration::from_secs(if has_snapshot { 30 } else { 2 }));
            match c.send(req).await {
                Ok(_) => {
                    self.heard_from(to);
                    if has_snapshot {
                        self.report(Msg::SnapshotSent { to, ok: true });
                    }
                }
                Err(status) => {
                    tracing::debug!(peer = to, %addr, error = %status.message(), "raft send failed");
                    // A fresh channel next time: a failed one backs off for seconds, long
                    // enough for check_quorum to depose a healthy leader.
                    client = None;
                    self.report(Msg::Unreachable(to));
                    if has_snapshot {
                        self.report(Msg::SnapshotSent { to, ok: false });
                    }
                }
            }
        }
    }

    /// Followers only hear from the leader; to report every manager's reachability, each
    /// manager checks in with any peer it has not exchanged messages with lately.
    pub async fn probe_loop(self: Arc<Self>) {
        let mut clients: HashMap<String, RaftClient<tonic::transport::Channel>> = HashMap::new();
        loop {
            tokio::time::sleep(PROBE_EVERY).await;
            let peers: Vec<(u64, String)> = match self.state.get() {
                Some(state) => state
                    .read()
                    .expect("state lock")
                    .managers()
                    .filter(|n| n.raft_id != self.my_id && n.raft_id != 0)
                    .filter_map(|n| Some((n.raft_id, n.manager_status.as_ref()?.addr.clone())))
                    .collect(),
                None => continue,
            };
            for (id, addr) in peers {
                let fresh = self
                    .reached
                    .lock()
                    .expect("lock")
                    .get(&id)
                    .is_some_and(|t| t.elapsed() < PROBE_EVERY);
                if fresh {
                    continue;
                }
                let Some(client) = clients.get(&addr).cloned().or_else(|| self.connect(&addr))
                else {
                    continue;
                };
                clients.insert(addr.clone(), client.clone());
                let me = self.clone();
                tokio::spawn(async move {
                    let mut client = client;
                    let mut req = tonic::Request::new(RaftBatch { messages: vec![] });
                    req.set_timeout(PROBE_EVERY);
                    if client.send(req).await.is_ok() {
                        me.heard_from(id);
                    }
                });
            }
        }
    }

    fn connect(&self, addr: &str) -> Option<RaftClient<tonic::transport::Channel>> {
        let endpoint = Endpoint::from_shared(format!("https://{addr}"))
            .ok()?
            .tls_config(self.tls.clone())
            .ok()?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true);
        Some(
            RaftClient::new(endpoint.connect_lazy())
                .max_decoding_message_size(256 << 20)
                .max_encoding_message_size(256 << 20),
        )
    }
}
