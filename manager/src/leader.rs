//! Loops that only the raft leader runs: orchestration plus scheduling, and keeping raft
//! membership equal to the set of manager nodes in the store.

use crate::consensus::RaftHandle;
use crate::ids::new_id;
use crate::store::Command;
use crate::{orchestrator, scheduler};
use ::raft::prelude::{ConfChange, ConfChangeType};
use shoal_api::now_rfc3339;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Re-evaluates at least this often even without store changes (restart backoff, update delay).
const RECONCILE_EVERY: Duration = Duration::from_millis(500);

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as i128
}

/// Orchestrator and scheduler: compute task ops from the state, propose them, repeat.
pub async fn reconcile_loop(raft: RaftHandle) {
    let mut changes = raft.subscribe();
    loop {
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(RECONCILE_EVERY) => {}
        }
        if !raft.is_leader_ready() {
            continue;
        }
        // Orchestrate first; the scheduler places what exists now and the next pass places
        // the tasks just created.
        let ops = {
            let state = raft.state();
            if state.cluster.is_none() {
                continue;
            }
            let mut ops = orchestrator::reconcile(&state, now_ns(), &mut new_id);
            ops.extend(scheduler::schedule(&state));
            ops
        };
        if ops.is_empty() {
            continue;
        }
        if let Err(e) = raft
            .propose(Command::Tasks {
                ops,
                now: now_rfc3339(),
            })
            .await
        {
            tracing::warn!(error = %e, "orchestration step not committed; retrying");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Adds promoted managers as raft voters and removes demoted ones, one change at a time.
pub async fn membership_loop(raft: RaftHandle) {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if !raft.is_leader_ready() {
            continue;
        }
        let voters = raft.voters();
        let (add, remove) = {
            let state = raft.state();
            let wanted: Vec<u64> = state
                .managers()
                .map(|n| n.raft_id)
                .filter(|id| *id != 0)
                .collect();
            (
                // Only a manager that answers: a voter that never comes up would cost quorum.
                wanted
                    .iter()
                    .copied()
                    .find(|id| !voters.contains(id) && raft.peer_reachable(*id)),
                voters.iter().copied().find(|id| !wanted.contains(id)),
            )
        };
        let change = match (add, remove) {
            (Some(id), _) => (ConfChangeType::AddNode, id),
            (None, Some(id)) if id == raft.id => {
                // A leader does not remove itself: hand over and let the next leader do it.
                tracing::info!("this manager was demoted; handing leadership over");
                raft.transfer_leadership();
                continue;
            }
            (None, Some(id)) => (ConfChangeType::RemoveNode, id),
            (None, None) => continue,
        };
        let mut cc = ConfChange::default();
        cc.set_change_type(change.0);
        cc.node_id = change.1;
        tracing::info!(node = change.1, change = ?change.0, "changing raft membership");
        if let Err(e) = raft.change_membership(cc).await {
            tracing::warn!(error = %e, "raft membership change failed; retrying");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
