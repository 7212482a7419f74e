//! The raft node: one thread owns the `RawNode` and the cluster state and is driven by a
//! message enum, following raft-rs's Ready order step by step. Everything else holds a
//! cloneable `RaftHandle`.

use super::logger::raft_logger;
use super::storage::{DiskStorage, StorageError};
use super::transport::Transport;
use crate::store::{Applied, ClusterState, Command, Proposal, StoreError};
use ::raft::prelude::*;
use ::raft::{RawNode, SnapshotStatus, StateRole};
use protobuf::Message as _;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

#[derive(Debug, Clone)]
pub struct RaftConfig {
    pub id: u64,
    /// One raft tick. Elections start after 10-20 ticks without a leader's heartbeat.
    pub tick: Duration,
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    /// Applied entries between snapshots (log compaction).
    pub snapshot_every: u64,
    /// How long a write waits for its entry to commit and apply.
    pub propose_timeout: Duration,
}

impl RaftConfig {
    pub fn new(id: u64) -> Self {
        RaftConfig {
            id,
            tick: Duration::from_millis(50),
            election_tick: 10,
            heartbeat_tick: 1,
            snapshot_every: 10_000,
            propose_timeout: Duration::from_secs(5),
        }
    }
}

fn no_leader_message(reachable: usize, managers: usize, needed: usize) -> String {
    if reachable < needed {
        format!(
            "quorum lost: {reachable} of {managers} managers reachable, {needed} needed; writes are refused until a majority of managers is back (reads still answer)"
        )
    } else {
        format!(
            "no raft leader at the moment: an election is under way ({reachable} of {managers} managers reachable); retry in a few seconds"
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error("{}", no_leader_message(*reachable, *managers, *needed))]
    NoQuorum {
        reachable: usize,
        managers: usize,
        needed: usize,
    },
    #[error(
        "the write was not committed within {secs}s ({reachable} of {managers} managers reachable); it may still apply, check before retrying"
    )]
    Timeout {
        secs: u64,
        reachable: usize,
        managers: usize,
    },
    #[error(transparent)]
    Rejected(#[from] StoreError),
    #[error("raft membership change refused: {0}")]
    ConfChange(String),
    #[error("this manager is shutting down")]
    Stopped,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("raft storage: {0}")]
    Storage(#[from] StorageError),
    #[error("raft: {0}")]
    Raft(#[from] ::raft::Error),
    #[error("the raft snapshot in the state dir does not decode: {0}")]
    Snapshot(serde_json::Error),
}

/// Messages to the raft thread.
pub(crate) enum Msg {
    Propose {
        request_id: u64,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<Applied, ProposeError>>,
    },
    ConfChange {
        request_id: u64,
        change: ConfChange,
        reply: oneshot::Sender<Result<Applied, ProposeError>>,
    },
    Raft(Box<Message>),
    Unreachable(u64),
    SnapshotSent {
        to: u64,
        ok: bool,
    },
    Campaign,
    TransferLeader,
    Stop,
}

/// Raft facts other threads read without asking the raft thread.
#[derive(Default)]
pub struct RaftStatus {
    pub leader_id: AtomicU64,
    pub term: AtomicU64,
    pub commit: AtomicU64,
    pub applied: AtomicU64,
    /// 0 follower, 1 candidate, 2 leader, 3 pre-candidate.
    pub role: AtomicU64,
    /// Leader that has committed an entry of its own term and applied everything committed:
    /// only then is its state complete enough to orchestrate from.
    pub leader_ready: std::sync::atomic::AtomicBool,
    pub voters: RwLock<Vec<u64>>,
}

#[derive(Clone)]
pub struct RaftHandle {
    pub id: u64,
    tx: mpsc::Sender<Msg>,
    state: Arc<RwLock<ClusterState>>,
    pub status: Arc<RaftStatus>,
    applied: watch::Receiver<u64>,
    transport: Arc<Transport>,
    next_request: Arc<AtomicU64>,
    propose_timeout: Duration,
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl RaftHandle {
    /// Opens the log in `dir` and starts the raft thread. `bootstrap` makes a brand-new
    /// single-voter cluster; a joining manager starts empty and learns from the leader.
    pub fn start(
        cfg: RaftConfig,
        dir: &std::path::Path,
        bootstrap: bool,
        transport: Arc<Transport>,
    ) -> Result<RaftHandle, StartError> {
        let storage = DiskStorage::open(dir)?;
        if bootstrap && storage.is_empty() {
            let mut cs = ConfState::default();
            cs.voters = vec![cfg.id];
            storage.initialize_with_conf_state(cs)?;
        }
        let snapshot = storage.snapshot_data();
        let applied = snapshot.get_metadata().index;
        let state: ClusterState = if snapshot.data.is_empty() {
            ClusterState::default()
        } else {
            serde_json::from_slice(&snapshot.data).map_err(StartError::Snapshot)?
        };
        let raft_cfg = Config {
            id: cfg.id,
            election_tick: cfg.election_tick,
            heartbeat_tick: cfg.heartbeat_tick,
            applied,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        let raw = RawNode::new(&raft_cfg, storage, &raft_logger())?;
        let (tx, rx) = mpsc::channel();
        let (applied_tx, applied_rx) = watch::channel(applied);
        let state = Arc::new(RwLock::new(state));
        let status = Arc::new(RaftStatus::default());
        status.applied.store(applied, Ordering::SeqCst);
        transport.attach(tx.clone(), state.clone());
        let mut thread = RaftThread {
            raw,
            rx,
            state: state.clone(),
            status: status.clone(),
            applied_tx,
            transport: transport.clone(),
            waiters: HashMap::new(),
            cfg: cfg.clone(),
            last_snapshot: applied,
            proposed_to: 0,
        };
        let single_voter_bootstrap = bootstrap;
        let join = std::thread::Builder::new()
            .name(format!("raft-{}", cfg.id))
            .spawn(move || {
                fail_stop(
                    || thread.run(single_voter_bootstrap),
                    || std::process::exit(RAFT_PANIC_EXIT),
                )
            })
            .expect("spawn raft thread");
        Ok(RaftHandle {
            id: cfg.id,
            tx,
            state,
            status,
            applied: applied_rx,
            transport,
            next_request: Arc::new(AtomicU64::new(rand::random::<u64>() >> 16)),
            propose_timeout: cfg.propose_timeout,
            thread: Arc::new(std::sync::Mutex::new(Some(join))),
        })
    }

    pub fn state(&self) -> RwLockReadGuard<'_, ClusterState> {
        self.state.read().expect("state lock poisoned")
    }

    pub fn is_leader(&self) -> bool {
        self.status.role.load(Ordering::SeqCst) == 2
    }

    /// A leader whose state includes everything committed before it took over.
    pub fn is_leader_ready(&self) -> bool {
        self.status.leader_ready.load(Ordering::SeqCst)
    }

    pub fn leader_id(&self) -> u64 {
        self.status.leader_id.load(Ordering::SeqCst)
    }

    /// The gRPC address of the current leader, if one is known.
    pub fn leader_addr(&self) -> Option<String> {
        let leader = self.leader_id();
        if leader == 0 {
            return None;
        }
        self.state()
            .manager_peers()
            .into_iter()
            .find(|p| p.raft_id == leader)
            .map(|p| p.addr)
    }

    /// Applied index changes: the store moved.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    pub fn voters(&self) -> Vec<u64> {
        self.status.voters.read().expect("voters lock").clone()
    }

    pub fn peer_reachable(&self, raft_id: u64) -> bool {
        raft_id == self.id || self.transport.recently_reached(raft_id)
    }

    /// Managers that answered raft traffic recently, this one included.
    pub fn reachable(&self) -> (usize, usize) {
        let voters = self.voters();
        let reachable = voters.iter().filter(|v| self.peer_reachable(**v)).count();
        (reachable, voters.len().max(1))
    }

    fn quorum_error(&self) -> ProposeError {
        let (reachable, managers) = self.reachable();
        ProposeError::NoQuorum {
            reachable,
            managers,
            needed: managers / 2 + 1,
        }
    }

    /// Whether a write has a chance now; fails at once when quorum is known to be lost.
    pub fn check_quorum(&self) -> Result<(), ProposeError> {
        // No leader, but a majority answers: an election is under way (the leader just
        // died) and the write waits for its outcome. No leader and no majority: it can't.
        let (reachable, managers) = self.reachable();
        if self.leader_id() == 0 && reachable < managers / 2 + 1 {
            return Err(self.quorum_error());
        }
        // A leader that lost its majority steps down within an election timeout
        // (check_quorum), after which this fails at once; until then the commit timeout
        // bounds the wait.
        Ok(())
    }

    /// Replicates a command and waits until this manager has applied it.
    pub async fn propose(&self, command: Command) -> Result<Applied, ProposeError> {
        self.check_quorum()?;
        let request_id = self.next_request.fetch_add(1, Ordering::SeqCst);
        let data = serde_json::to_vec(&Proposal {
            request_id,
            command,
        })
        .expect("commands serialize");
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Propose {
                request_id,
                data,
                reply,
            })
            .map_err(|_| ProposeError::Stopped)?;
        self.wait(rx).await
    }

    /// Adds or removes a voter and waits until the change is applied here.
    pub async fn change_membership(&self, change: ConfChange) -> Result<Applied, ProposeError> {
        self.check_quorum()?;
        let request_id = self.next_request.fetch_add(1, Ordering::SeqCst);
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::ConfChange {
                request_id,
                change,
                reply,
            })
            .map_err(|_| ProposeError::Stopped)?;
        self.wait(rx).await
    }

    async fn wait(
        &self,
        rx: oneshot::Receiver<Result<Applied, ProposeError>>,
    ) -> Result<Applied, ProposeError> {
        match tokio::time::timeout(self.propose_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ProposeError::Stopped),
            Err(_) => {
                let (reachable, managers) = self.reachable();
                Err(ProposeError::Timeout {
                    secs: self.propose_timeout.as_secs(),
                    reachable,
                    managers,
                })
            }
        }
    }

    /// A raft message from a peer.
    pub fn step(&self, msg: Message) {
        let _ = self.tx.send(Msg::Raft(Box::new(msg)));
    }

    /// Starts an election now (used when a leader steps down on purpose).
    pub fn campaign(&self) {
        let _ = self.tx.send(Msg::Campaign);
    }

    /// Hands leadership to the most up-to-date other voter.
    pub fn transfer_leadership(&self) {
        let _ = self.tx.send(Msg::TransferLeader);
    }

    /// Stops the raft thread and waits until it has let go of the log.
    pub fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.thread.lock().expect("thread lock").take() {
            let _ = t.join();
        }
    }
}

/// Exit status of a manager whose raft thread panicked (EX_SOFTWARE).
pub const RAFT_PANIC_EXIT: i32 = 70;

/// Runs the raft loop; if it panics, calls `stop` instead of returning. A manager whose raft
/// thread is gone applies nothing more and may hold the state lock poisoned, yet would go
/// on answering from a frozen store: a zombie. Stopping the process lets its supervisor
/// start it again from the on-disk log, which is what raft's crash model expects.
fn fail_stop(run: impl FnOnce(), stop: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).is_err() {
        tracing::error!(
            "the raft thread panicked; stopping the process so it restarts from its log"
        );
        stop();
    }
}

/// A stand-in for the raft node in tests of what runs on a leader: see
/// [`RaftHandle::in_memory`].
#[cfg(test)]
pub(crate) struct InMemoryRaft {
    /// Every command committed, in log order: what would have been raft entries.
    pub entries: Arc<std::sync::Mutex<Vec<Command>>>,
    /// While set, proposals are taken but never committed (a leader that lost its quorum).
    pub stall: Arc<std::sync::atomic::AtomicBool>,
}

#[cfg(test)]
impl RaftHandle {
    /// A leader of a one-manager cluster without disk or consensus: each proposal applies to
    /// `state` at once, in order. Must be called inside a tokio runtime.
    pub(crate) fn in_memory(state: ClusterState) -> (RaftHandle, InMemoryRaft) {
        let (tx, rx) = mpsc::channel::<Msg>();
        let state = Arc::new(RwLock::new(state));
        let status = Arc::new(RaftStatus::default());
        status.role.store(2, Ordering::SeqCst);
        status.leader_id.store(1, Ordering::SeqCst);
        status.leader_ready.store(true, Ordering::SeqCst);
        *status.voters.write().expect("voters lock") = vec![1];
        let (applied_tx, applied_rx) = watch::channel(0);
        let fake = InMemoryRaft {
            entries: Arc::default(),
            stall: Arc::default(),
        };
        let (entries, stall, applied_state) =
            (fake.entries.clone(), fake.stall.clone(), state.clone());
        let join = std::thread::spawn(move || {
            // Past the indexes a test's hand-built state used.
            let mut index = 1_000;
            let mut stalled = Vec::new();
            while let Ok(msg) = rx.recv() {
                match msg {
                    Msg::Propose { data, reply, .. } => {
                        if stall.load(Ordering::SeqCst) {
                            stalled.push(reply);
                            continue;
                        }
                        let p: Proposal = serde_json::from_slice(&data).expect("proposal");
                        index += 1;
                        entries.lock().expect("lock").push(p.command.clone());
                        let r = applied_state
                            .write()
                            .expect("state lock")
                            .apply(index, p.command)
                            .map_err(ProposeError::from);
                        let _ = applied_tx.send(index);
                        let _ = reply.send(r);
                    }
                    Msg::ConfChange { reply, .. } => {
                        let _ = reply.send(Err(ProposeError::ConfChange("in-memory raft".into())));
                    }
                    Msg::Stop => return,
                    _ => {}
                }
            }
        });
        let transport = Transport::new(
            1,
            tonic::transport::ClientTlsConfig::new(),
            tokio::runtime::Handle::current(),
        );
        let handle = RaftHandle {
            id: 1,
            tx,
            state,
            status,
            applied: applied_rx,
            transport,
            next_request: Arc::default(),
            propose_timeout: Duration::from_secs(5),
            thread: Arc::new(std::sync::Mutex::new(Some(join))),
        };
        (handle, fake)
    }
}

struct Waiter {
    reply: oneshot::Sender<Result<Applied, ProposeError>>,
    /// The proposal, kept until it applies so it can be sent again to a new leader: one
    /// forwarded to a leader that then died is otherwise lost. None for conf changes.
    data: Option<Vec<u8>>,
}

struct RaftThread {
    raw: RawNode<DiskStorage>,
    rx: mpsc::Receiver<Msg>,
    state: Arc<RwLock<ClusterState>>,
    status: Arc<RaftStatus>,
    applied_tx: watch::Sender<u64>,
    transport: Arc<Transport>,
    waiters: HashMap<u64, Waiter>,
    cfg: RaftConfig,
    last_snapshot: u64,
    /// The leader the waiting proposals were last sent to (0: none yet).
    proposed_to: u64,
}

impl RaftThread {
    fn run(&mut self, bootstrap: bool) {
        if bootstrap && self.raw.raft.prs().conf().voters().ids().len() == 1 {
            // A single voter need not wait an election timeout to lead.
            let _ = self.raw.campaign();
        }
        let mut last_tick = Instant::now();
        loop {
            let wait = self.cfg.tick.saturating_sub(last_tick.elapsed());
            match self.rx.recv_timeout(wait) {
                Ok(msg) => {
                    if !self.handle(msg) {
                        return;
                    }
                    // Take whatever else is queued so one Ready (one fsync) covers it all.
                    while let Ok(msg) = self.rx.try_recv() {
                        if !self.handle(msg) {
                            return;
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            if last_tick.elapsed() >= self.cfg.tick {
                last_tick = Instant::now();
                self.raw.tick();
                self.waiters.retain(|_, w| !w.reply.is_closed());
            }
            if let Err(e) = self.on_ready() {
                // Storage failures are fatal: continuing could acknowledge unpersisted writes.
                tracing::error!(error = %e, "raft storage failed; stopping this manager's raft node");
                std::process::exit(70);
            }
            self.publish_status();
            self.repropose_on_leader_change();
        }
    }

    /// Sends every proposal still waiting to a leader that was not the one it went to. A
    /// proposal forwarded to a leader that died (or was partitioned away) before it
    /// replicated the entry is gone; one it did replicate may now be in the log twice, and
    /// apply skips the copy by its request id.
    fn repropose_on_leader_change(&mut self) {
        let leader = self.raw.raft.leader_id;
        if leader == 0 || leader == self.proposed_to {
            return;
        }
        let first = self.proposed_to == 0 && self.waiters.is_empty();
        self.proposed_to = leader;
        if first {
            return;
        }
        let mut sent = 0;
        for w in self.waiters.values() {
            if let Some(data) = &w.data
                && self.raw.propose(vec![], data.clone()).is_ok()
            {
                sent += 1;
            }
        }
        if sent > 0 {
            tracing::info!(
                leader,
                proposals = sent,
                "proposals sent again to the new leader"
            );
        }
    }

    fn handle(&mut self, msg: Msg) -> bool {
        match msg {
            Msg::Propose {
                request_id,
                data,
                reply,
            } => {
                // Without a leader (an election under way) raft drops it; it is proposed
                // again once one is known, within the caller's commit timeout.
                if self.raw.propose(vec![], data.clone()).is_err() && self.raw.raft.leader_id != 0 {
                    let _ = reply.send(Err(self.no_quorum()));
                } else {
                    self.waiters.insert(
                        request_id,
                        Waiter {
                            reply,
                            data: Some(data),
                        },
                    );
                }
            }
            Msg::ConfChange {
                request_id,
                change,
                reply,
            } => match self
                .raw
                .propose_conf_change(request_id.to_le_bytes().to_vec(), change)
            {
                Ok(()) => {
                    self.waiters
                        .insert(request_id, Waiter { reply, data: None });
                }
                Err(e) => {
                    let _ = reply.send(Err(ProposeError::ConfChange(e.to_string())));
                }
            },
            Msg::Raft(m) => {
                let _ = self.raw.step(*m);
            }
            Msg::Unreachable(id) => self.raw.report_unreachable(id),
            Msg::SnapshotSent { to, ok } => {
                let status = if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.raw.report_snapshot(to, status);
            }
            Msg::Campaign => {
                let _ = self.raw.campaign();
            }
            Msg::TransferLeader => {
                let me = self.cfg.id;
                let target = self
                    .raw
                    .raft
                    .prs()
                    .iter()
                    .filter(|(id, _)| **id != me)
                    .max_by_key(|(_, p)| p.matched)
                    .map(|(id, _)| *id);
                if let Some(t) = target {
                    self.raw.transfer_leader(t);
                }
            }
            Msg::Stop => return false,
        }
        true
    }

    fn no_quorum(&self) -> ProposeError {
        let voters = self
            .raw
            .raft
            .prs()
            .conf()
            .voters()
            .ids()
            .iter()
            .collect::<Vec<_>>();
        let reachable = voters
            .iter()
            .filter(|v| **v == self.cfg.id || self.transport.recently_reached(**v))
            .count();
        ProposeError::NoQuorum {
            reachable,
            managers: voters.len(),
            needed: voters.len() / 2 + 1,
        }
    }

    fn publish_status(&self) {
        let r = &self.raw.raft;
        self.status.leader_id.store(r.leader_id, Ordering::SeqCst);
        self.status.term.store(r.term, Ordering::SeqCst);
        self.status
            .commit
            .store(r.raft_log.committed, Ordering::SeqCst);
        let role = match r.state {
            StateRole::Follower => 0,
            StateRole::Candidate => 1,
            StateRole::Leader => 2,
            StateRole::PreCandidate => 3,
        };
        let was = self.status.role.swap(role, Ordering::SeqCst);
        // Said at info, as swarmkit does: an operator reading the logs of all managers
        // sees who led each term (and the fault suite checks that one node did).
        if role == 2 && was != 2 {
            tracing::info!(
                raft_id = r.id,
                term = r.term,
                "this manager is now the raft leader"
            );
        } else if was == 2 && role != 2 {
            tracing::info!(
                raft_id = r.id,
                term = r.term,
                "this manager is no longer the raft leader"
            );
        }
        let log = &r.raft_log;
        let ready = r.state == StateRole::Leader
            && log.term(log.committed).is_ok_and(|t| t == r.term)
            && log.applied >= log.committed;
        self.status.leader_ready.store(ready, Ordering::SeqCst);
        let mut voters: Vec<u64> = r.prs().conf().voters().ids().iter().collect();
        voters.sort_unstable();
        let mut current = self.status.voters.write().expect("voters lock");
        if *current != voters {
            *current = voters;
        }
    }

    /// raft-rs's Ready handling, in the order its examples prescribe.
    fn on_ready(&mut self) -> Result<(), StorageError> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        // 1. A leader may send its messages before persisting (raft thesis 10.2.1).
        if !ready.messages().is_empty() {
            self.transport.send(ready.take_messages());
        }
        // 2. A snapshot from the leader replaces the state machine.
        if !ready.snapshot().is_empty() {
            let snap = ready.snapshot().clone();
            self.install_snapshot(snap)?;
        }
        // 3. Apply what is committed.
        self.apply_entries(ready.take_committed_entries());
        // 4. Persist new entries, then the hard state, before anyone hears we have them.
        if !ready.entries().is_empty() {
            self.raw.mut_store().append(ready.entries())?;
        }
        if let Some(hs) = ready.hs() {
            self.raw.mut_store().set_hard_state(hs)?;
        }
        // 5. Messages that must follow persistence (votes, append responses).
        if !ready.persisted_messages().is_empty() {
            self.transport.send(ready.take_persisted_messages());
        }
        // 6. Advance, then handle what the light ready carries.
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit)?;
        }
        self.transport.send(light.take_messages());
        self.apply_entries(light.take_committed_entries());
        self.raw.advance_apply();
        self.maybe_compact()?;
        Ok(())
    }

    fn install_snapshot(&mut self, snap: Snapshot) -> Result<(), StorageError> {
        let index = snap.get_metadata().index;
        let state: ClusterState = if snap.data.is_empty() {
            ClusterState::default()
        } else {
            match serde_json::from_slice(&snap.data) {
                Ok(s) => s,
                Err(e) => {
                    // raft-rs already took the snapshot; carrying on would diverge.
                    tracing::error!(error = %e, index, "snapshot from the leader does not decode; stopping");
                    std::process::exit(70);
                }
            }
        };
        self.raw.mut_store().apply_snapshot(snap)?;
        *self.state.write().expect("state lock") = state;
        self.last_snapshot = index;
        self.set_applied(index);
        Ok(())
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) {
        let mut last = None;
        for entry in entries {
            last = Some(entry.index);
            if entry.data.is_empty() && entry.get_entry_type() == EntryType::EntryNormal {
                continue; // a new leader's empty entry
            }
            match entry.get_entry_type() {
                EntryType::EntryNormal => self.apply_normal(&entry),
                EntryType::EntryConfChange => self.apply_conf_change(&entry),
                EntryType::EntryConfChangeV2 => {
                    tracing::warn!(
                        index = entry.index,
                        "ignoring a joint-consensus entry, which shoal never proposes"
                    );
                }
            }
        }
        if let Some(index) = last {
            self.set_applied(index);
        }
    }

    fn apply_normal(&mut self, entry: &Entry) {
        let proposal: Proposal = match serde_json::from_slice(&entry.data) {
            Ok(p) => p,
            Err(e) => {
                // Every manager skips the same undecodable entry, so states stay equal.
                tracing::error!(index = entry.index, error = %e, "skipping an undecodable raft entry");
                return;
            }
        };
        let result = {
            let mut state = self.state.write().expect("state lock");
            if !state.recent_requests.first_time(proposal.request_id) {
                // A copy re-sent after a leader change; the first one was applied (and its
                // waiter, if here, answered).
                tracing::debug!(
                    index = entry.index,
                    request = proposal.request_id,
                    "skipping a repeated proposal"
                );
                return;
            }
            state.apply(entry.index, proposal.command)
        };
        if let Err(e) = &result {
            tracing::debug!(index = entry.index, error = %e, "command refused");
        }
        if let Some(w) = self.waiters.remove(&proposal.request_id) {
            let _ = w.reply.send(result.map_err(ProposeError::Rejected));
        }
    }

    fn apply_conf_change(&mut self, entry: &Entry) {
        let cc = match ConfChange::parse_from_bytes(&entry.data) {
            Ok(cc) => cc,
            Err(e) => {
                tracing::error!(index = entry.index, error = %e, "skipping an undecodable conf change");
                return;
            }
        };
        let result = match self.raw.apply_conf_change(&cc) {
            Ok(cs) => {
                tracing::info!(node = cc.node_id, change = ?cc.get_change_type(), voters = ?cs.voters, "raft membership changed");
                if let Err(e) = self.raw.mut_store().set_conf_state(cs.clone()) {
                    tracing::error!(error = %e, "persisting the conf state failed");
                    std::process::exit(70);
                }
                // raft-rs only restores a snapshot whose members include the receiver, so a
                // manager joining with an empty log needs a snapshot taken after its own
                // addition: take one now.
                if let Err(e) = self.snapshot_at(entry.index, cs) {
                    tracing::error!(error = %e, "snapshot after a membership change failed");
                    std::process::exit(70);
                }
                Ok(Applied::Done)
            }
            Err(e) => Err(ProposeError::ConfChange(e.to_string())),
        };
        // The proposal's context travels in the entry, not in the conf change.
        if entry.context.len() == 8 {
            let id = u64::from_le_bytes(entry.context[..8].try_into().expect("8 bytes"));
            if let Some(w) = self.waiters.remove(&id) {
                let _ = w.reply.send(result);
            }
        }
    }

    fn set_applied(&mut self, index: u64) {
        self.status.applied.store(index, Ordering::SeqCst);
        let _ = self.applied_tx.send(index);
    }

    /// Snapshots the state machine and drops the log behind it every `snapshot_every`
    /// entries, so restarts and slow followers don't replay the whole history.
    fn maybe_compact(&mut self) -> Result<(), StorageError> {
        let applied = self.raw.raft.raft_log.applied;
        if applied < self.last_snapshot + self.cfg.snapshot_every {
            return Ok(());
        }
        let cs = self.raw.store().conf_state();
        self.snapshot_at(applied, cs)
    }

    /// Snapshots the state machine as applied through `index` and compacts the log.
    fn snapshot_at(&mut self, index: u64, cs: ConfState) -> Result<(), StorageError> {
        let data =
            serde_json::to_vec(&*self.state.read().expect("state lock")).expect("state serializes");
        self.raw.mut_store().compact_to_snapshot(index, cs, data)?;
        self.last_snapshot = index;
        tracing::debug!(index, "raft log compacted into a snapshot");
        Ok(())
    }
}

#[cfg(test)]
mod fail_stop_tests {
    use super::fail_stop;
    use std::cell::Cell;

    #[test]
    fn a_panicking_raft_loop_stops_the_process_and_a_clean_end_does_not() {
        let stopped = Cell::new(false);
        fail_stop(
            || panic!("apply found a broken invariant"),
            || stopped.set(true),
        );
        assert!(stopped.get());
        let stopped = Cell::new(false);
        fail_stop(|| {}, || stopped.set(true));
        assert!(!stopped.get());
    }
}
