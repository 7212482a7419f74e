//! Autolock in the cluster API: `swarm update --autolock`, `swarm unlock-key [--rotate]`.
//! A new unlock key is sealed under the data key here, before it is proposed, so raft never
//! holds it in the clear; the store keeps it in step with the spec (`store/autolock.rs`).

use super::{ControlApi, store_status};
use crate::ca::{DataKey, UnlockKey};
use crate::store::Command;
use shoal_api::control::ControlResponse;
use shoal_api::join::KeyText;
use shoal_api::now_rfc3339;
use shoal_api::objects::ClusterSpec;
use shoal_api::wire::ErrorKind;
use tonic::Status;

/// `spec_change` (a spec update that turns autolock on or off), grouped with the unlock key
/// that goes with it: `unlock` sealed under `data_key` when on, none when off. The daemon's
/// `swarm init --autolock` proposes it too, with the key it locked its files under.
pub fn with_unlock_key(
    spec_change: Command,
    autolock: bool,
    unlock: Option<&UnlockKey>,
    data_key: &DataKey,
) -> Command {
    let sealed = autolock
        .then_some(unlock)
        .flatten()
        .map(|k| k.seal_under(data_key));
    Command::All(vec![
        spec_change,
        Command::SetUnlockKey {
            sealed,
            now: now_rfc3339(),
        },
    ])
}

/// The spec update for `swarm init --autolock`, right after the cluster is made.
pub fn init_autolock(spec: &ClusterSpec, unlock: &UnlockKey, data_key: &DataKey) -> Command {
    let mut spec = spec.clone();
    spec.encryption_config.auto_lock_managers = true;
    with_unlock_key(
        Command::UpdateClusterSpec {
            spec,
            now: now_rfc3339(),
            expected: None,
        },
        true,
        Some(unlock),
        data_key,
    )
}

impl ControlApi {
    fn lock_key(&self) -> Result<&DataKey, Status> {
        self.data_key.as_ref().ok_or_else(|| {
            ErrorKind::Precondition.status(
                "autolock: this manager has no cluster data key (the swarm was initialized before shoal had one), so there is nothing to lock",
            )
        })
    }

    /// `spec_change` with the key that goes with turning autolock `on` (a new one) or off.
    pub(super) fn autolock_command(
        &self,
        spec_change: Command,
        on: bool,
    ) -> Result<Command, Status> {
        let data_key = self.lock_key()?;
        let unlock = on.then(UnlockKey::generate);
        Ok(with_unlock_key(spec_change, on, unlock.as_ref(), data_key))
    }

    /// `swarm unlock-key`: the current key, or a new one when `rotate`. Managers that learn
    /// the new key re-lock their files with it; one that is down keeps the old lock until it
    /// is unlocked with the old key, as in Docker.
    pub(super) async fn unlock_key(&self, rotate: bool) -> Result<ControlResponse, Status> {
        let data_key = self.lock_key()?;
        let current = {
            let state = self.raft.state();
            let rec = state.record().map_err(|e| store_status(&e))?;
            if rotate && !rec.cluster.spec.encryption_config.auto_lock_managers {
                return Err(ErrorKind::Precondition
                    .status("cannot rotate because autolock is not turned on"));
            }
            state.unlock_key.clone()
        };
        let key = if rotate {
            let next = UnlockKey::generate();
            self.propose(Command::SetUnlockKey {
                sealed: Some(next.seal_under(data_key)),
                now: now_rfc3339(),
            })
            .await?;
            Some(next)
        } else {
            current
                .map(|sealed| UnlockKey::open_under(data_key, &sealed))
                .transpose()
                .map_err(|e| ErrorKind::Internal.status(format!("the swarm's unlock key: {e}")))?
        };
        Ok(ControlResponse::UnlockKey(KeyText(
            key.map(|k| k.to_human().to_string()).unwrap_or_default(),
        )))
    }
}
