//! The cluster data key: 32 bytes every manager holds in its state dir (never in raft), under
//! which secrets that must travel through raft are sealed, such as the registry credentials
//! of `service create --with-registry-auth`. `swarm init` makes it; a joining manager gets it
//! in its join answer and a promoted node in its renewal answer, both over TLS.
//!
//! Sealed bytes are `nonce (24) || XChaCha20-Poly1305 ciphertext`, with the owning object's
//! id as associated data, so a sealed value moved to another object does not open.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use zeroize::Zeroizing;

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

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
    pub fn load(path: &Path) -> Result<Option<DataKey>, DataKeyError> {
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
        DataKey::from_base64(&text).map(Some)
    }

    /// Writes the key file atomically, mode 0600, in a directory made (or narrowed to) 0700.
    pub fn save(&self, path: &Path) -> Result<(), DataKeyError> {
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
        f.write_all(self.to_base64().as_bytes()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))?;
        Ok(())
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        let key: &[u8; KEY_LEN] = &self.0;
        XChaCha20Poly1305::new(key.into())
    }

    /// Seals `plaintext` for the object `aad` with a fresh random nonce.
    pub fn seal(&self, aad: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any message that fits in memory");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Opens what [`seal`](Self::seal) made for the same `aad`; refuses anything altered.
    pub fn open(&self, aad: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, DataKeyError> {
        let refused = || DataKeyError::Open {
            aad: aad.to_string(),
        };
        if sealed.len() < NONCE_LEN {
            return Err(refused());
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        self.cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| refused())
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

    #[test]
    fn key_file_is_private_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("swarm-data.key");
        assert!(DataKey::load(&path).unwrap().is_none());
        let key = DataKey::generate();
        key.save(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        let back = DataKey::load(&path).unwrap().unwrap();
        let sealed = key.seal("s", b"x");
        assert_eq!(back.open("s", &sealed).unwrap().as_slice(), b"x");
        assert_eq!(format!("{back:?}"), "DataKey(..)");
        std::fs::write(&path, "short").unwrap();
        assert!(matches!(DataKey::load(&path), Err(DataKeyError::Malformed)));
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
