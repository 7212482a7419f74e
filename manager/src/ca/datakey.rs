//! The cluster data key: 32 bytes every manager holds in its state dir (never in raft), under
//! which secrets that must travel through raft are sealed, such as the registry credentials
//! of `service create --with-registry-auth`. `swarm init` makes it; a joining manager gets it
//! in its join answer and a promoted node in its renewal answer, both over TLS.
//!
//! Sealed bytes are `nonce (24) || XChaCha20-Poly1305 ciphertext`, with the owning object's
//! id as associated data, so a sealed value moved to another object does not open.
//!
//! The key file holds the key in base64, or, when the swarm is autolocked, the key locked
//! under the swarm's unlock key (`super::unlock`); [`KeyFile`] says which.

use super::unlock::{UnlockError, UnlockKey, is_locked, lock_with, unlock_with};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::Zeroizing;

pub(crate) const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

/// What a locked data key file is bound to (associated data of its lock).
pub const KEY_FILE_PURPOSE: &str = "swarm-data.key";

/// `nonce || XChaCha20-Poly1305(key, aad, plaintext)` with a fresh random nonce; the one
/// sealing routine for the data key and the unlock key.
pub(crate) fn aead_seal(key: &[u8; KEY_LEN], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let ciphertext = XChaCha20Poly1305::new(key.into())
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("XChaCha20-Poly1305 encrypts any message that fits in memory");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ciphertext);
    out
}

/// Opens what [`aead_seal`] made with the same key and `aad`; `None` for anything else.
pub(crate) fn aead_open(
    key: &[u8; KEY_LEN],
    aad: &[u8],
    sealed: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    XChaCha20Poly1305::new(key.into())
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
        .map(Zeroizing::new)
}

#[derive(Debug, thiserror::Error)]
pub enum DataKeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the cluster data key is not {KEY_LEN} bytes of base64")]
    Malformed,
    #[error("sealed value for {aad} does not open under this cluster's data key")]
    Open { aad: String },
    #[error(
        "{path} is locked (the swarm is autolocked): run `shoal swarm unlock` with the unlock key"
    )]
    Locked { path: PathBuf },
    #[error(transparent)]
    Unlock(#[from] UnlockError),
}

/// What the key file on disk holds.
pub enum KeyFile {
    Plain(DataKey),
    /// The file's text, locked under the swarm's unlock key.
    Locked(Zeroizing<String>),
}

impl KeyFile {
    pub fn is_locked(&self) -> bool {
        matches!(self, KeyFile::Locked(_))
    }

    /// The key, opening a locked file with `unlock`; a locked file without one, or with a
    /// wrong one, is refused.
    pub fn open(self, path: &Path, unlock: Option<&UnlockKey>) -> Result<DataKey, DataKeyError> {
        match (self, unlock) {
            (KeyFile::Plain(key), _) => Ok(key),
            (KeyFile::Locked(_), None) => Err(DataKeyError::Locked {
                path: path.to_path_buf(),
            }),
            (KeyFile::Locked(text), Some(unlock)) => {
                let base64 = unlock.unlock(KEY_FILE_PURPOSE, &text)?;
                let base64 = std::str::from_utf8(&base64).map_err(|_| DataKeyError::Malformed)?;
                DataKey::from_base64(base64)
            }
        }
    }
}

/// The key; cheap to clone, wiped from memory when the last clone drops. Its `Debug` shows
/// nothing of it.
#[derive(Clone)]
pub struct DataKey(Arc<Zeroizing<[u8; KEY_LEN]>>);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    pub fn generate() -> DataKey {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        rand::rng().fill_bytes(key.as_mut());
        DataKey(Arc::new(key))
    }

    /// The key as base64, for the join and renewal answers.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(B64.encode(self.0.as_ref()))
    }

    pub fn from_base64(text: &str) -> Result<DataKey, DataKeyError> {
        let bytes = Zeroizing::new(
            B64.decode(text.trim())
                .map_err(|_| DataKeyError::Malformed)?,
        );
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if bytes.len() != KEY_LEN {
            return Err(DataKeyError::Malformed);
        }
        key.copy_from_slice(&bytes);
        Ok(DataKey(Arc::new(key)))
    }

    /// Reads the key file; `None` when there is none (a node that was never a manager, or a
    /// cluster made before data keys existed).
    pub fn read_file(path: &Path) -> Result<Option<KeyFile>, DataKeyError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => Zeroizing::new(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(DataKeyError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        if is_locked(&text) {
            return Ok(Some(KeyFile::Locked(text)));
        }
        DataKey::from_base64(&text).map(|k| Some(KeyFile::Plain(k)))
    }

    /// Writes the key file atomically, mode 0600, in a directory made (or narrowed to) 0700:
    /// locked under `lock` when the swarm is autolocked, else in base64.
    pub fn save(&self, path: &Path, lock: Option<&UnlockKey>) -> Result<(), DataKeyError> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DataKeyError::Io { path, source }
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io(dir))?;
        }
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        let text = match lock {
            Some(lock) => Zeroizing::new(lock.lock(KEY_FILE_PURPOSE, self.to_base64().as_bytes())),
            None => self.to_base64(),
        };
        f.write_all(text.as_bytes()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))?;
        Ok(())
    }

    /// A locked file's text (`super::unlock`'s format) holding `plaintext` under this key:
    /// how an autolocked manager keeps its TLS key.
    pub fn lock_text(&self, purpose: &str, plaintext: &[u8]) -> String {
        lock_with(&self.0, purpose, plaintext)
    }

    /// Opens what [`lock_text`](Self::lock_text) wrote for the same `purpose`.
    pub fn unlock_text(
        &self,
        purpose: &str,
        text: &str,
    ) -> Result<Zeroizing<Vec<u8>>, UnlockError> {
        unlock_with(&self.0, purpose, text)
    }

    /// Seals `plaintext` for the object `aad` with a fresh random nonce.
    pub fn seal(&self, aad: &str, plaintext: &[u8]) -> Vec<u8> {
        aead_seal(&self.0, aad.as_bytes(), plaintext)
    }

    /// Opens what [`seal`](Self::seal) made for the same `aad`; refuses anything altered.
    pub fn open(&self, aad: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, DataKeyError> {
        aead_open(&self.0, aad.as_bytes(), sealed).ok_or_else(|| DataKeyError::Open {
            aad: aad.to_string(),
        })
    }

    /// [`seal`](Self::seal) as base64 text, the form the store keeps.
    pub fn seal_text(&self, aad: &str, plaintext: &str) -> String {
        self.seal_b64(aad, plaintext.as_bytes())
    }

    /// [`seal`](Self::seal) of any bytes, as base64 text.
    pub fn seal_b64(&self, aad: &str, plaintext: &[u8]) -> String {
        B64.encode(self.seal(aad, plaintext))
    }

    /// Opens what [`seal_b64`](Self::seal_b64) made.
    pub fn open_b64(&self, aad: &str, sealed: &str) -> Result<Zeroizing<Vec<u8>>, DataKeyError> {
        let bytes = B64.decode(sealed).map_err(|_| DataKeyError::Open {
            aad: aad.to_string(),
        })?;
        self.open(aad, &bytes)
    }

    /// Opens what [`seal_text`](Self::seal_text) made.
    pub fn open_text(&self, aad: &str, sealed: &str) -> Result<Zeroizing<String>, DataKeyError> {
        let plain = self.open_b64(aad, sealed)?;
        String::from_utf8(plain.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| DataKeyError::Open {
                aad: aad.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn seal_and_open_round_trip() {
        let key = DataKey::generate();
        let sealed = key.seal_text("svc1", "eyJ1c2VybmFtZSI6ImEifQ");
        assert!(!sealed.contains("eyJ1c2VybmFtZSI6ImEifQ"));
        assert_eq!(
            key.open_text("svc1", &sealed).unwrap().as_str(),
            "eyJ1c2VybmFtZSI6ImEifQ"
        );
        // A fresh nonce each time: the same secret never seals to the same bytes.
        assert_ne!(sealed, key.seal_text("svc1", "eyJ1c2VybmFtZSI6ImEifQ"));
    }

    #[test]
    fn tampered_moved_or_foreign_sealed_values_are_refused() {
        let key = DataKey::generate();
        let mut sealed = key.seal("svc1", b"secret");
        assert!(key.open("svc2", &sealed).is_err(), "other service id");
        assert!(
            DataKey::generate().open("svc1", &sealed).is_err(),
            "other key"
        );
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(key.open("svc1", &sealed).is_err(), "flipped tag bit");
        sealed[last] ^= 1;
        sealed[0] ^= 1;
        assert!(key.open("svc1", &sealed).is_err(), "flipped nonce bit");
        assert!(key.open("svc1", &[1, 2, 3]).is_err(), "too short");
        assert!(key.open_text("svc1", "not base64!").is_err());
    }

    fn load(path: &Path, unlock: Option<&UnlockKey>) -> Result<DataKey, DataKeyError> {
        DataKey::read_file(path)
            .unwrap()
            .unwrap()
            .open(path, unlock)
    }

    #[test]
    fn key_file_is_private_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("swarm-data.key");
        assert!(DataKey::read_file(&path).unwrap().is_none());
        let key = DataKey::generate();
        key.save(&path, None).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            key.to_base64().as_str()
        );
        let back = load(&path, None).unwrap();
        let sealed = key.seal("s", b"x");
        assert_eq!(back.open("s", &sealed).unwrap().as_slice(), b"x");
        assert_eq!(format!("{back:?}"), "DataKey(..)");
        std::fs::write(&path, "short").unwrap();
        assert!(matches!(
            DataKey::read_file(&path),
            Err(DataKeyError::Malformed)
        ));
    }

    #[test]
    fn a_locked_key_file_holds_nothing_in_the_clear_and_needs_its_unlock_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("swarm-data.key");
        let key = DataKey::generate();
        let unlock = UnlockKey::generate();
        key.save(&path, Some(&unlock)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(super::super::unlock::LOCKED_HEADER));
        assert!(!text.contains(key.to_base64().as_str()));
        let raw = B64.decode(key.to_base64().as_bytes()).unwrap();
        assert!(
            !std::fs::read(&path)
                .unwrap()
                .windows(KEY_LEN)
                .any(|w| w == raw.as_slice())
        );
        assert!(DataKey::read_file(&path).unwrap().unwrap().is_locked());
        assert!(matches!(
            load(&path, None),
            Err(DataKeyError::Locked { .. })
        ));
        assert!(matches!(
            load(&path, Some(&UnlockKey::generate())),
            Err(DataKeyError::Unlock(UnlockError::WrongKey))
        ));
        let back = load(&path, Some(&unlock)).unwrap();
        assert_eq!(
            back.open("s", &key.seal("s", b"x")).unwrap().as_slice(),
            b"x"
        );
        // A locked TLS key does not pass for a locked data key.
        std::fs::write(
            &path,
            unlock.lock("swarm-node.key", key.to_base64().as_bytes()),
        )
        .unwrap();
        assert!(load(&path, Some(&unlock)).is_err());
        // Turning autolock off writes the plain form again.
        key.save(&path, None).unwrap();
        assert!(!DataKey::read_file(&path).unwrap().unwrap().is_locked());
        assert!(load(&path, Some(&unlock)).is_ok());
    }

    #[test]
    fn base64_round_trip() {
        let key = DataKey::generate();
        let back = DataKey::from_base64(&key.to_base64()).unwrap();
        assert_eq!(
            back.open("a", &key.seal("a", b"z")).unwrap().as_slice(),
            b"z"
        );
        assert!(DataKey::from_base64("AAAA").is_err());
    }
}
