//! What a node keeps in its state dir: who it is, its certificates and the managers it knows.
//!
//! Layout: `node.json`, `certificates/{swarm-root-ca.crt, swarm-node.crt, swarm-node.key}`,
//! `raft/` and `keys/swarm-data.key` (the cluster data key) on managers,
//! `tasks/<id>/output.log`. The state dir and those directories are 0700 and their files
//! 0600 (`shoal_manager::private_files`): the TLS key, and on managers the raft log with
//! the CA key and join tokens, are readable by root only. Opening the state dir narrows
//! what an older shoal left looser.
//!
//! On the managers of an autolocked swarm, `swarm-data.key` is locked under the swarm's
//! unlock key and `swarm-node.key` under the data key (`shoal_manager::ca::unlock`), as
//! Docker locks its TLS key and raft DEK: with the TLS key in the clear, a copy of the state
//! dir could still renew its manager certificate and be handed the data key. (The raft log
//! itself still holds the CA key and join tokens in the clear; see `ca::unlock`.)

use serde::{Deserialize, Serialize};
use shoal_api::dispatch::ManagerPeer;
use shoal_api::objects::NodeRole;
use shoal_manager::ca::unlock::{UnlockError, is_locked};
use shoal_manager::ca::{DataKey, DataKeyError, KeyFile};
use shoal_manager::private_files;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub node_id: String,
    pub cluster_id: String,
    pub role: NodeRole,
    pub raft_id: u64,
    /// Underlay address other nodes reach this one at.
    pub advertise_addr: String,
    /// Where this node's gRPC listener binds.
    pub listen_addr: String,
    /// `advertise_ip:listen_port`, what other nodes dial.
    pub grpc_addr: String,
    pub managers: Vec<ManagerPeer>,
}

#[derive(Clone, Debug)]
pub struct Certs {
    pub ca_pem: String,
    pub cert_pem: String,
    /// The node's TLS key, PEM; as read from disk, locked text until
    /// [`unlock`](Self::unlock) opens it.
    pub key_pem: String,
}

/// What a locked TLS key is bound to (associated data of its lock).
pub const NODE_KEY_PURPOSE: &str = "swarm-node.key";

impl Certs {
    /// The TLS key was read locked (autolock), and the node can't use it yet.
    pub fn key_locked(&self) -> bool {
        is_locked(&self.key_pem)
    }

    /// Opens a locked TLS key in place with the data key; a plain one is left as it is.
    pub fn unlock(&mut self, data_key: &DataKey) -> Result<(), UnlockError> {
        if !self.key_locked() {
            return Ok(());
        }
        let pem = data_key.unlock_text(NODE_KEY_PURPOSE, &self.key_pem)?;
        self.key_pem = String::from_utf8(pem.to_vec()).map_err(|_| UnlockError::WrongKey)?;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not a valid node identity file: {source}; remove the state dir to start over"
    )]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where `save_certs` puts a new set of certificates before it takes their place.
const STAGED_CERTS: &str = "certificates.new";

/// Makes a directory's entries (renames, new files) durable.
fn sync_dir(dir: &Path) -> Result<(), IdentityError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Writes a file durably and atomically (temp file, fsync, rename), private to root.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), IdentityError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(data).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    // The rename itself is durable only once the directory is.
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

pub struct StateDir {
    pub root: PathBuf,
}

impl StateDir {
    /// Opens the state dir, making it and `certificates/` 0700; key-bearing paths that
    /// allow more (an older shoal made them with the umask's modes) are narrowed.
    pub fn new(root: PathBuf) -> Result<Self, IdentityError> {
        private_files::create_dir(&root).map_err(io(&root))?;
        let certs = root.join("certificates");
        private_files::create_dir(&certs).map_err(io(&certs))?;
        // A save that stopped half-way: the exchange below did not happen (this is the new
        // set) or did (this is the old one); either way `certificates/` is a whole set.
        let staged = root.join(STAGED_CERTS);
        if staged.exists() {
            std::fs::remove_dir_all(&staged).map_err(io(&staged))?;
        }
        let node = root.join("node.json");
        private_files::restrict(&node, private_files::FILE_MODE).map_err(io(&node))?;
        for dir in ["certificates", "keys", "raft"] {
            let dir = root.join(dir);
            private_files::restrict_dir_and_files(&dir).map_err(io(&dir))?;
        }
        Ok(StateDir { root })
    }

    fn node_file(&self) -> PathBuf {
        self.root.join("node.json")
    }

    pub fn raft_dir(&self) -> PathBuf {
        self.root.join("raft")
    }

    /// The cluster data key, on managers only (`shoal_manager::ca::DataKey`).
    pub fn data_key_path(&self) -> PathBuf {
        self.root.join("keys").join("swarm-data.key")
    }

    /// The data key file, if there is one; locked on an autolocked manager, which may then
    /// start nothing until it is given the unlock key.
    pub fn data_key_file(&self) -> Result<Option<KeyFile>, DataKeyError> {
        DataKey::read_file(&self.data_key_path())
    }

    pub fn tasks_dir(&self) -> PathBuf {
        self.root.join("tasks")
    }

    fn cert_path(&self, name: &str) -> PathBuf {
        self.root.join("certificates").join(name)
    }

    pub fn load(&self) -> Result<Option<(Identity, Certs)>, IdentityError> {
        let path = self.node_file();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let identity = serde_json::from_slice(&bytes).map_err(|source| IdentityError::Decode {
            path: path.clone(),
            source,
        })?;
        let read = |name: &str| {
            let p = self.cert_path(name);
            std::fs::read_to_string(&p).map_err(io(&p))
        };
        let certs = Certs {
            ca_pem: read("swarm-root-ca.crt")?,
            cert_pem: read("swarm-node.crt")?,
            key_pem: read("swarm-node.key")?,
        };
        Ok(Some((identity, certs)))
    }

    pub fn save_identity(&self, identity: &Identity) -> Result<(), IdentityError> {
        let json = serde_json::to_vec_pretty(identity).expect("identity serializes");
        write_private(&self.node_file(), &json)
    }

    /// Writes the certificates, with the TLS key locked under the data key `lock` when the
    /// swarm is autolocked (managers only).
    pub fn save_certs(&self, certs: &Certs, lock: Option<&DataKey>) -> Result<(), IdentityError> {
        // The key and the certificate must change together: a crash between two renames
        // would leave a key that does not match its certificate, and a node that can't
        // talk to its swarm. So the new set is written whole into a staged directory,
        // which then trades places with `certificates/` in one atomic rename.
        let live = self.root.join("certificates");
        let staged = self.root.join(STAGED_CERTS);
        if staged.exists() {
            std::fs::remove_dir_all(&staged).map_err(io(&staged))?;
        }
        private_files::create_dir(&staged).map_err(io(&staged))?;
        let key = match lock {
            Some(lock) => lock.lock_text(NODE_KEY_PURPOSE, certs.key_pem.as_bytes()),
            None => certs.key_pem.clone(),
        };
        for (name, data) in [
            ("swarm-root-ca.crt", certs.ca_pem.as_bytes()),
            ("swarm-node.key", key.as_bytes()),
            ("swarm-node.crt", certs.cert_pem.as_bytes()),
        ] {
            write_private(&staged.join(name), data)?;
        }
        sync_dir(&staged)?;
        nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &staged,
            nix::fcntl::AT_FDCWD,
            &live,
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        )
        .map_err(|e| io(&live)(e.into()))?;
        sync_dir(&self.root)?;
        std::fs::remove_dir_all(&staged).map_err(io(&staged))
    }

    /// Forgets the swarm: identity, certificates, raft log and task output.
    pub fn wipe(&self) -> Result<(), IdentityError> {
        for p in [
            self.node_file(),
            self.raft_dir(),
            self.root.join("keys"),
            self.tasks_dir(),
            self.root.join("certificates"),
        ] {
            let r = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            match r {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&p)(e)),
            }
        }
        let certs = self.root.join("certificates");
        private_files::create_dir(&certs).map_err(io(&certs))?;
        Ok(())
    }
}

/// A name that sets the host-wide objects of the daemon with state in `state_dir` apart
/// from other daemons' (the testbed runs several on one host): `None` for the default
/// state dir, else its absolute path with everything but letters, digits and `-` as `_`
/// (bpffs and mount paths take that form; bpffs names may not hold dots).
pub fn state_dir_tag(state_dir: &Path) -> Option<String> {
    if state_dir == Path::new("/var/lib/shoal") {
        return None;
    }
    let abs = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    Some(
        abs.to_string_lossy()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_manager::ca::UnlockKey;

    fn certs() -> Certs {
        Certs {
            ca_pem: "CA".into(),
            cert_pem: "CERT".into(),
            key_pem: "-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n".into(),
        }
    }

    #[test]
    fn key_and_certificate_change_together_and_a_half_save_leaves_the_old_pair() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().to_path_buf()).unwrap();
        state.save_certs(&certs(), None).unwrap();
        let mut next = certs();
        next.cert_pem = "CERT2".into();
        next.key_pem = "KEY2".into();
        state.save_certs(&next, None).unwrap();
        let live = dir.path().join("certificates");
        assert_eq!(
            std::fs::read_to_string(live.join("swarm-node.crt")).unwrap(),
            "CERT2"
        );
        assert_eq!(
            std::fs::read_to_string(live.join("swarm-node.key")).unwrap(),
            "KEY2"
        );
        assert!(!dir.path().join(STAGED_CERTS).exists());
        // A crash after the new key was staged but before the exchange: the old pair stays,
        // and the next start clears the staged one.
        let staged = dir.path().join(STAGED_CERTS);
        std::fs::create_dir(&staged).unwrap();
        std::fs::write(staged.join("swarm-node.key"), "KEY3").unwrap();
        let state = StateDir::new(dir.path().to_path_buf()).unwrap();
        assert!(!staged.exists());
        let pair = (
            std::fs::read_to_string(live.join("swarm-node.key")).unwrap(),
            std::fs::read_to_string(live.join("swarm-node.crt")).unwrap(),
        );
        assert_eq!(pair, ("KEY2".to_string(), "CERT2".to_string()));
        state.save_certs(&certs(), None).unwrap();
    }

    #[test]
    fn a_locked_tls_key_is_unreadable_without_the_data_key() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().to_path_buf()).unwrap();
        let id = Identity {
            node_id: "n".into(),
            cluster_id: "c".into(),
            role: NodeRole::Manager,
            raft_id: 1,
            advertise_addr: String::new(),
            listen_addr: String::new(),
            grpc_addr: String::new(),
            managers: vec![],
        };
        state.save_identity(&id).unwrap();
        let data_key = DataKey::generate();
        let unlock = UnlockKey::generate();
        data_key
            .save(&state.data_key_path(), Some(&unlock))
            .unwrap();
        state.save_certs(&certs(), Some(&data_key)).unwrap();
        let on_disk =
            std::fs::read_to_string(dir.path().join("certificates/swarm-node.key")).unwrap();
        assert!(!on_disk.contains("secret"));
        let (_, mut loaded) = state.load().unwrap().unwrap();
        assert!(loaded.key_locked());
        let file = state.data_key_file().unwrap().unwrap();
        assert!(file.is_locked());
        assert_eq!(
            loaded.clone().unlock(&DataKey::generate()),
            Err(UnlockError::WrongKey)
        );
        // The unlock key opens the data key, which opens the TLS key.
        let opened = file.open(&state.data_key_path(), Some(&unlock)).unwrap();
        loaded.unlock(&opened).unwrap();
        assert_eq!(loaded.key_pem, certs().key_pem);
        // Written plain again when autolock is turned off.
        state.save_certs(&loaded, None).unwrap();
        let (_, plain) = state.load().unwrap().unwrap();
        assert!(!plain.key_locked());
        assert_eq!(plain.key_pem, certs().key_pem);
    }

    #[test]
    fn the_state_dir_is_private_and_loose_modes_are_narrowed_on_open() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let chmod = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        // Under the usual umask (022) these would be 0755.
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("state");
        let state = StateDir::new(root.clone()).unwrap();
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("certificates")), 0o700);
        // As an older shoal left a manager's state dir.
        state.save_certs(&certs(), None).unwrap();
        std::fs::create_dir(state.raft_dir()).unwrap();
        std::fs::write(state.raft_dir().join("snapshot"), "CA key").unwrap();
        std::fs::write(root.join("node.json"), "{}").unwrap();
        for dir in [root.clone(), root.join("certificates"), state.raft_dir()] {
            chmod(&dir, 0o755);
        }
        let files = [
            root.join("node.json"),
            root.join("certificates/swarm-node.key"),
            state.raft_dir().join("snapshot"),
        ];
        for f in &files {
            chmod(f, 0o644);
        }
        StateDir::new(root.clone()).unwrap();
        for dir in [root.clone(), root.join("certificates"), state.raft_dir()] {
            assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        }
        for f in &files {
            assert_eq!(mode(f), 0o600, "{}", f.display());
        }
    }

    #[test]
    fn daemons_with_other_state_dirs_get_other_tags() {
        assert_eq!(state_dir_tag(Path::new("/var/lib/shoal")), None);
        let a = state_dir_tag(Path::new("/tmp/bed/node-1/state")).unwrap();
        assert_eq!(a, "_tmp_bed_node-1_state");
        assert_ne!(Some(a), state_dir_tag(Path::new("/tmp/bed/node-2/state")));
    }
}
