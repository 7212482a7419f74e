//! Autolock on a node. A manager of an autolocked swarm keeps its key files locked under the
//! swarm's unlock key; after a restart it starts nothing (no manager, no agent session, as
//! Docker's locked node) and answers only `Info`, `swarm unlock` and `swarm leave --force`
//! until it is given the key. While a manager runs, the keeper below rewrites its key files
//! whenever its raft replica's autolock setting or unlock key changes, so every manager
//! follows `swarm update --autolock` and `unlock-key --rotate` wherever they were run.

use super::{Daemon, Running, err, internal};
use crate::identity::{Certs, Identity, StateDir};
use shoal_api::local::{LocalRequest, LocalResponse, NodeInfo};
use shoal_api::wire::ErrorKind;
use shoal_manager::ca::{DataKey, DataKeyError, UnlockKey};
use shoal_manager::consensus::RaftHandle;
use shoal_manager::store::LockWanted;
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;

/// What a locked node knows of itself: enough to answer `Info` and to start once unlocked.
pub(super) struct LockedNode {
    pub identity: Identity,
    /// As read from disk: the TLS key still locked.
    pub certs: Certs,
}

pub(super) fn locked_error() -> Status {
    err(
        ErrorKind::Unavailable,
        "this node's swarm is locked: run `shoal swarm unlock` with the unlock key",
    )
}

/// `swarm unlock` on a node that is not locked, with Docker's words.
pub(super) fn not_locked(in_swarm: bool) -> Status {
    err(
        ErrorKind::Precondition,
        if in_swarm {
            "swarm is not locked"
        } else {
            "This node is not part of a swarm"
        },
    )
}

/// A wrong or malformed unlock key reads as Docker's "invalid key"; anything else (an
/// unreadable file) as itself.
fn unlock_status(e: DataKeyError) -> Status {
    match e {
        DataKeyError::Unlock(e) => err(ErrorKind::Invalid, e.to_string()),
        DataKeyError::Malformed => err(
            ErrorKind::Invalid,
            shoal_manager::ca::UnlockError::WrongKey.to_string(),
        ),
        e => internal(e),
    }
}

impl Daemon {
    /// At start-up: `true` when the data key file is locked (the node must wait for the
    /// unlock key). Otherwise a TLS key still locked under the data key, as a crash while
    /// autolock was turned on or off leaves it, is opened and written plain.
    pub(super) fn open_at_start(&self, certs: &mut Certs) -> anyhow::Result<bool> {
        let path = self.dir.data_key_path();
        match self.dir.data_key_file()? {
            Some(file) if file.is_locked() => Ok(true),
            Some(file) if certs.key_locked() => {
                certs.unlock(&file.open(&path, None)?)?;
                self.dir.save_certs(certs, None)?;
                Ok(false)
            }
            None if certs.key_locked() => anyhow::bail!(
                "the node's TLS key is locked, but {} is missing; remove the state dir and join again",
                path.display()
            ),
            _ => Ok(false),
        }
    }

    pub(super) fn is_locked(&self) -> bool {
        self.locked.lock().expect("lock state").is_some()
    }

    pub(super) async fn handle_locked(
        self: &Arc<Self>,
        req: LocalRequest,
    ) -> Result<LocalResponse, Status> {
        match req {
            LocalRequest::Info => Ok(self.locked_info()),
            LocalRequest::SwarmUnlock { key } => self.unlock(&key.0).await,
            LocalRequest::SwarmLeave { force: true } => self.leave_locked().await,
            LocalRequest::SwarmLeave { force: false } => Err(err(
                ErrorKind::Precondition,
                "Swarm is encrypted and locked. Please unlock it first or use `--force` to ignore this message.",
            )),
            _ => Err(locked_error()),
        }
    }

    fn locked_info(&self) -> LocalResponse {
        let locked = self.locked.lock().expect("lock state");
        let id = locked.as_ref().map(|l| &l.identity);
        LocalResponse::Info(Box::new(NodeInfo {
            local_node_state: "locked".into(),
            node_id: id.map(|i| i.node_id.clone()).unwrap_or_default(),
            cluster_id: id.map(|i| i.cluster_id.clone()).unwrap_or_default(),
            control_available: false,
            node_addr: id.map(|i| i.advertise_addr.clone()).unwrap_or_default(),
            remote_managers: id
                .map(|i| i.managers.iter().map(|m| m.addr.clone()).collect())
                .unwrap_or_default(),
            node: None,
            held_secrets: vec![],
        }))
    }

    /// Opens the key files with `key` and starts the node as a resume would; a wrong key
    /// leaves it locked.
    async fn unlock(self: &Arc<Self>, key: &str) -> Result<LocalResponse, Status> {
        let key = UnlockKey::parse(key).map_err(|e| err(ErrorKind::Invalid, e.to_string()))?;
        let mut inner = self.inner.lock().await;
        let (identity, mut certs) = {
            let locked = self.locked.lock().expect("lock state");
            let Some(node) = locked.as_ref() else {
                return Err(not_locked(inner.is_some()));
            };
            (node.identity.clone(), node.certs.clone())
        };
        let path = self.dir.data_key_path();
        let Some(file) = self.dir.data_key_file().map_err(internal)? else {
            return Err(internal(format!("{} is gone", path.display())));
        };
        let data_key = file.open(&path, Some(&key)).map_err(unlock_status)?;
        certs
            .unlock(&data_key)
            .map_err(|e| internal(format!("the TLS key does not open under the data key: {e}")))?;
        tracing::info!(node = %identity.node_id, "unlocked; starting");
        let running = self
            .start_node(identity, certs, false, None, Some(key))
            .await?;
        *self.locked.lock().expect("lock state") = None;
        self.install(&mut inner, running);
        Ok(LocalResponse::Done)
    }

    /// `swarm leave --force` on a locked node, as Docker allows: the state dir goes, keys
    /// and all, and the node is out of the swarm.
    async fn leave_locked(&self) -> Result<LocalResponse, Status> {
        let _inner = self.inner.lock().await;
        self.dir.wipe().map_err(internal)?;
        *self.locked.lock().expect("lock state") = None;
        self.executor.discard_leftovers(&[]);
        Ok(LocalResponse::Done)
    }

    /// Follows the replica's autolock setting for as long as this generation of the node's
    /// parts runs: locks the key files under a new unlock key, or writes them plain when
    /// autolock goes off. Reads only the setting on each applied entry; writes only when it
    /// changed.
    pub(super) async fn keep_key_files(
        self: Arc<Self>,
        generation: u64,
        raft: RaftHandle,
        data_key: DataKey,
    ) {
        let mut applied = raft.subscribe();
        let mut last = None;
        loop {
            let setting = raft.state().lock_setting();
            if let Some(now) = setting.filter(|s| last.as_ref() != Some(s)) {
                let kek = match now.wanted(&data_key) {
                    Ok(LockWanted::Locked(key)) => Some(Some(key)),
                    Ok(LockWanted::Plain) => Some(None),
                    Ok(LockWanted::Unsettled) => None,
                    Err(e) => {
                        tracing::warn!(error = %e, "the swarm's unlock key does not open under this manager's data key; key files left as they are");
                        None
                    }
                };
                last = Some(now);
                if let Some(kek) = kek {
                    let mut inner = self.inner.lock().await;
                    let Some(r) = inner.as_mut().filter(|r| r.generation == generation) else {
                        return;
                    };
                    if let Err(e) = r.relock(&self.dir, kek) {
                        tracing::warn!(error = %e, "rewriting the key files failed; retrying at the next change");
                        last = None;
                    }
                }
            }
            // Wake on the next applied entry; now and then anyway, to notice a newer
            // generation whose raft replaced this one.
            match tokio::time::timeout(Duration::from_secs(5), applied.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    let inner = self.inner.lock().await;
                    if inner.as_ref().is_none_or(|r| r.generation != generation) {
                        return;
                    }
                }
            }
        }
    }
}

impl Running {
    /// Rewrites the key files under `kek` (plain when `None`) unless they already are. The
    /// TLS key is locked under the data key, so a rotation rewrites the data key file only;
    /// turning autolock on locks the TLS key first, turning it off unlocks the data key
    /// first, so a crash in between leaves a data key file in the clear next to a TLS key
    /// it opens, which the next start-up tidies (`open_at_start`).
    fn relock(&mut self, dir: &StateDir, kek: Option<UnlockKey>) -> Result<(), Status> {
        if self.kek == kek {
            return Ok(());
        }
        let Some(data_key) = &self.data_key else {
            return Ok(());
        };
        let path = dir.data_key_path();
        match (&self.kek, &kek) {
            (None, Some(_)) => {
                dir.save_certs(&self.certs, Some(data_key))
                    .map_err(internal)?;
                data_key.save(&path, kek.as_ref()).map_err(internal)?;
            }
            (Some(_), Some(_)) => data_key.save(&path, kek.as_ref()).map_err(internal)?,
            _ => {
                data_key.save(&path, None).map_err(internal)?;
                dir.save_certs(&self.certs, None).map_err(internal)?;
            }
        }
        match kek {
            Some(_) => tracing::info!("key files locked under the swarm's unlock key"),
            None => tracing::info!("autolock is off: key files written in the clear"),
        }
        self.kek = kek;
        Ok(())
    }
}
