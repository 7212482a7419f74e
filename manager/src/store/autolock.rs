//! Autolock in the store: the swarm's unlock key, sealed under the cluster data key and kept
//! in step with the spec's `EncryptionConfig.AutoLockManagers`, and what that asks of each
//! manager's key files.

use super::{ClusterState, StoreError};
use crate::ca::{DataKey, DataKeyError, UnlockKey};
use crate::store::Applied;
use shoal_api::objects::Version;

/// The replicated autolock setting: the spec's flag and the sealed key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockSetting {
    pub autolock: bool,
    pub sealed: Option<String>,
}

/// What a manager's key files should be.
#[derive(Debug, PartialEq, Eq)]
pub enum LockWanted {
    /// Locked under this unlock key.
    Locked(UnlockKey),
    /// In the clear (autolock off).
    Plain,
    /// Flag and key disagree (a spec change committed without its key): leave the files as
    /// they are rather than unlock them on a half-made change.
    Unsettled,
}

impl LockSetting {
    pub fn wanted(&self, data_key: &DataKey) -> Result<LockWanted, DataKeyError> {
        match (self.autolock, &self.sealed) {
            (true, Some(sealed)) => UnlockKey::open_under(data_key, sealed).map(LockWanted::Locked),
            (false, None) => Ok(LockWanted::Plain),
            _ => Ok(LockWanted::Unsettled),
        }
    }
}

impl ClusterState {
    /// `None` before the cluster record arrives (a joining manager), when there is nothing
    /// to go by yet.
    pub fn lock_setting(&self) -> Option<LockSetting> {
        let rec = self.cluster.as_ref()?;
        Some(LockSetting {
            autolock: rec.cluster.spec.encryption_config.auto_lock_managers,
            sealed: self.unlock_key.clone(),
        })
    }

    /// Sets the key and, with it, the spec's autolock flag: on with a key, off without. The
    /// flag changes only here (a spec update keeps it), so a `swarm update` built from a
    /// spec read before autolock changed can't undo it, and flag and key always agree.
    pub(super) fn set_unlock_key(
        &mut self,
        version: Version,
        sealed: Option<String>,
        now: String,
    ) -> Result<Applied, StoreError> {
        let rec = self.cluster.as_mut().ok_or(StoreError::NotInitialized)?;
        rec.cluster.spec.encryption_config.auto_lock_managers = sealed.is_some();
        self.unlock_key = sealed;
        rec.cluster.version = version;
        rec.cluster.updated_at = now;
        Ok(Applied::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Command;
    use shoal_api::objects::ClusterSpec;

    fn with_cluster() -> ClusterState {
        let mut s = ClusterState::default();
        s.cluster = Some(crate::store::ClusterRecord {
            cluster: shoal_api::objects::Cluster {
                id: "c".into(),
                version: Version::default(),
                created_at: String::new(),
                updated_at: String::new(),
                spec: ClusterSpec::default(),
                tls_info: String::new(),
                default_addr_pool: vec![],
                subnet_size: 24,
                data_path_port: 4789,
                join_tokens: None,
            },
            ca_key_pem: String::new(),
            worker_token: String::new(),
            manager_token: String::new(),
        });
        s
    }

    fn spec(autolock: bool) -> Command {
        let mut spec = ClusterSpec::default();
        spec.encryption_config.auto_lock_managers = autolock;
        Command::UpdateClusterSpec {
            spec,
            now: "t".into(),
            expected: None,
        }
    }

    fn key(sealed: Option<&str>) -> Command {
        Command::SetUnlockKey {
            sealed: sealed.map(String::from),
            now: "t".into(),
        }
    }

    #[test]
    fn the_key_follows_the_autolock_setting() {
        let data_key = DataKey::generate();
        let unlock = UnlockKey::generate();
        let sealed = unlock.seal_under(&data_key);
        let mut s = ClusterState::default();
        assert_eq!(s.lock_setting(), None, "nothing to go by before init");
        s = with_cluster();
        let wanted = |s: &ClusterState| s.lock_setting().unwrap().wanted(&data_key).unwrap();
        assert_eq!(wanted(&s), LockWanted::Plain);

        // A spec update alone never moves the flag: a stale `swarm update` can't undo it.
        s.apply(2, spec(true)).unwrap();
        assert_eq!(wanted(&s), LockWanted::Plain);

        // On, with its key, as `swarm update --autolock=true` proposes it.
        s.apply(3, Command::All(vec![spec(true), key(Some(&sealed))]))
            .unwrap();
        assert_eq!(wanted(&s), LockWanted::Locked(unlock.clone()));
        assert!(
            s.record()
                .unwrap()
                .cluster
                .spec
                .encryption_config
                .auto_lock_managers
        );
        assert_eq!(s.record().unwrap().cluster.version.index, 3);
        s.apply(4, spec(false)).unwrap();
        assert_eq!(
            wanted(&s),
            LockWanted::Locked(unlock.clone()),
            "still locked"
        );

        // Rotation alone.
        let next = UnlockKey::generate();
        s.apply(5, key(Some(&next.seal_under(&data_key)))).unwrap();
        assert_eq!(wanted(&s), LockWanted::Locked(next));

        // Off drops the key.
        s.apply(6, Command::All(vec![spec(false), key(None)]))
            .unwrap();
        assert_eq!(wanted(&s), LockWanted::Plain);
        assert_eq!(s.unlock_key, None);

        // A key sealed under another data key does not open.
        s.apply(7, Command::All(vec![spec(true), key(Some(&sealed))]))
            .unwrap();
        assert!(
            s.lock_setting()
                .unwrap()
                .wanted(&DataKey::generate())
                .is_err()
        );
    }

    #[test]
    fn specs_and_states_from_before_autolock_read_as_off() {
        let mut json = serde_json::to_value(ClusterSpec::default()).unwrap();
        assert_eq!(
            json["EncryptionConfig"],
            serde_json::json!({"AutoLockManagers": false})
        );
        json.as_object_mut().unwrap().remove("EncryptionConfig");
        let old: ClusterSpec = serde_json::from_value(json).unwrap();
        assert!(!old.encryption_config.auto_lock_managers);
        let state: ClusterState = serde_json::from_str("{\"cluster\":null,\"nodes\":{},\"services\":{},\"tasks\":{},\"networks\":{},\"alloc\":null}").unwrap();
        assert_eq!(state.unlock_key, None);
    }
}
