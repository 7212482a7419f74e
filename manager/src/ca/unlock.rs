//! The unlock key of an autolocked swarm (Docker's KEK): 32 random bytes, shown to the
//! operator as `SWMKEY-1-<base64>` as swarmkit prints it. With autolock on, every manager keeps
//! its key files (the cluster data key, its TLS key) locked under it, so a manager that
//! restarts serves nothing until someone types the key in, and a copied disk does not open
//! the sealed values in raft (secrets, registry credentials) offline. It is not yet Docker's
//! whole guarantee: raft still holds the root CA key and the join tokens in the clear, so a
//! copy of the log, with a way into the running cluster, could join as a manager and be
//! handed the keys (sealing those is left to the hardening work, issue 16).
//! The cluster keeps the key in raft sealed under the data key (which a running manager holds
//! in memory), so all managers learn a new one and re-lock their files with it.
//!
//! A locked file is text: the [`LOCKED_HEADER`] line, then base64 of
//! `nonce (24) || XChaCha20-Poly1305 ciphertext`, with the header and the file's purpose as
//! associated data, so a locked data key does not open as a TLS key, nor the other way round.
//! The key is already uniformly random, so it is the AEAD key itself: no KDF is needed.
//!
//! Only the data key file is locked under the unlock key; the TLS key is locked under the
//! data key (the same format, [`lock_with`]). So a rotation rewrites one file, atomically,
//! and a crash can never leave the two files under two different unlock keys.

use super::datakey::{DataKey, DataKeyError, KEY_LEN, aead_open, aead_seal};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD as B64, STANDARD_NO_PAD as B64_RAW};
use rand::RngCore;
use std::sync::Arc;
use zeroize::Zeroizing;

/// swarmkit's prefix for human-readable unlock keys (`encryption.HumanReadableKey`).
pub const PREFIX: &str = "SWMKEY-1-";

/// First line of a locked key file; names the format so that a reader never mistakes it
/// for a plain key, and binds the ciphertext to this format version.
pub const LOCKED_HEADER: &str = "SHOAL-LOCKED-KEY-1 xchacha20poly1305";

/// Associated data of the unlock key sealed in raft under the data key.
const STORE_AAD: &str = "swarm-unlock-key";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnlockError {
    /// Docker says "invalid key" for both a malformed and a wrong key; so do we, with a hint.
    #[error(
        "swarm could not be unlocked: invalid key (an unlock key looks like SWMKEY-1-<43 characters>; `shoal swarm unlock-key` on an unlocked manager shows it)"
    )]
    Malformed,
    #[error("swarm could not be unlocked: invalid key")]
    WrongKey,
    #[error("{purpose} is not a locked key file")]
    NotLocked { purpose: String },
}

/// The key; cheap to clone, wiped from memory when the last clone drops. Its `Debug` shows
/// nothing of it.
#[derive(Clone)]
pub struct UnlockKey(Arc<Zeroizing<[u8; KEY_LEN]>>);

impl std::fmt::Debug for UnlockKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnlockKey(..)")
    }
}

impl PartialEq for UnlockKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_ref() == other.0.as_ref()
    }
}

impl Eq for UnlockKey {}

/// Whether a key file's text is locked (and so needs a key to open).
pub fn is_locked(text: &str) -> bool {
    text.lines().next() == Some(LOCKED_HEADER)
}

fn aad(purpose: &str) -> Vec<u8> {
    format!("{LOCKED_HEADER}\n{purpose}").into_bytes()
}

/// A locked file's text: `plaintext` sealed under `key` for the file named by `purpose`.
pub(crate) fn lock_with(key: &[u8; KEY_LEN], purpose: &str, plaintext: &[u8]) -> String {
    let sealed = aead_seal(key, &aad(purpose), plaintext);
    format!("{LOCKED_HEADER}\n{}\n", B64.encode(sealed))
}

/// Opens what [`lock_with`] wrote under the same key for the same purpose.
pub(crate) fn unlock_with(
    key: &[u8; KEY_LEN],
    purpose: &str,
    text: &str,
) -> Result<Zeroizing<Vec<u8>>, UnlockError> {
    let mut lines = text.lines();
    if lines.next() != Some(LOCKED_HEADER) {
        return Err(UnlockError::NotLocked {
            purpose: purpose.to_string(),
        });
    }
    let sealed = B64
        .decode(lines.next().unwrap_or("").trim())
        .map_err(|_| UnlockError::WrongKey)?;
    aead_open(key, &aad(purpose), &sealed).ok_or(UnlockError::WrongKey)
}

impl UnlockKey {
    pub fn generate() -> UnlockKey {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        rand::rng().fill_bytes(key.as_mut());
        UnlockKey(Arc::new(key))
    }

    fn from_slice(bytes: &[u8]) -> Option<UnlockKey> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if bytes.len() != KEY_LEN {
            return None;
        }
        key.copy_from_slice(bytes);
        Some(UnlockKey(Arc::new(key)))
    }

    /// `SWMKEY-1-` and the key in unpadded base64, as `docker swarm unlock-key` prints it.
    pub fn to_human(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{PREFIX}{}", B64_RAW.encode(self.0.as_ref())))
    }

    /// Reads what [`to_human`](Self::to_human) printed; surrounding whitespace is ignored.
    pub fn parse(text: &str) -> Result<UnlockKey, UnlockError> {
        let rest = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or(UnlockError::Malformed)?;
        let bytes = Zeroizing::new(B64_RAW.decode(rest).map_err(|_| UnlockError::Malformed)?);
        UnlockKey::from_slice(&bytes).ok_or(UnlockError::Malformed)
    }

    /// The text of a locked file holding `plaintext`, for the file named by `purpose`.
    pub fn lock(&self, purpose: &str, plaintext: &[u8]) -> String {
        lock_with(&self.0, purpose, plaintext)
    }

    /// Opens what [`lock`](Self::lock) wrote for the same `purpose`; a wrong key, another
    /// file's purpose or an altered byte are all refused.
    pub fn unlock(&self, purpose: &str, text: &str) -> Result<Zeroizing<Vec<u8>>, UnlockError> {
        unlock_with(&self.0, purpose, text)
    }

    /// The key sealed under the cluster data key, the form raft keeps.
    pub fn seal_under(&self, data_key: &DataKey) -> String {
        data_key.seal_b64(STORE_AAD, &self.0[..])
    }

    /// Opens what [`seal_under`](Self::seal_under) made.
    pub fn open_under(data_key: &DataKey, sealed: &str) -> Result<UnlockKey, DataKeyError> {
        let bytes = data_key.open_b64(STORE_AAD, sealed)?;
        UnlockKey::from_slice(&bytes).ok_or(DataKeyError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_form_is_swarmkits_and_round_trips() {
        let key = UnlockKey::generate();
        let text = key.to_human();
        assert!(text.starts_with("SWMKEY-1-"));
        // 32 bytes in unpadded base64.
        assert_eq!(text.len(), PREFIX.len() + 43);
        assert!(!text.contains('='));
        assert_eq!(UnlockKey::parse(&format!("  {}\n", text.as_str())), Ok(key));
        assert_eq!(format!("{:?}", UnlockKey::generate()), "UnlockKey(..)");
    }

    #[test]
    fn malformed_keys_are_refused() {
        let good = UnlockKey::generate().to_human();
        for bad in [
            "",
            "SWMKEY-1-",
            "SWMKEY-2-abc",
            &good[PREFIX.len()..],
            &good[..good.len() - 1],
            &format!("{}AA", good.as_str()),
            "SWMKEY-1-!!!!",
        ] {
            assert_eq!(
                UnlockKey::parse(bad),
                Err(UnlockError::Malformed),
                "{bad:?}"
            );
        }
        assert!(UnlockError::Malformed.to_string().contains("invalid key"));
    }

    #[test]
    fn locked_text_opens_only_with_its_key_and_purpose() {
        let key = UnlockKey::generate();
        let text = key.lock("swarm-data.key", b"the data key");
        assert!(is_locked(&text));
        assert!(!is_locked("c2VjcmV0\n"));
        assert!(!text.contains("the data key"));
        assert_eq!(
            key.unlock("swarm-data.key", &text).unwrap().as_slice(),
            b"the data key"
        );
        assert_eq!(
            UnlockKey::generate().unlock("swarm-data.key", &text),
            Err(UnlockError::WrongKey)
        );
        assert_eq!(
            key.unlock("swarm-node.key", &text),
            Err(UnlockError::WrongKey)
        );
        assert!(matches!(
            key.unlock("swarm-data.key", "c2VjcmV0\n"),
            Err(UnlockError::NotLocked { .. })
        ));
        // One flipped character of the ciphertext.
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        let flipped = if lines[1].starts_with('A') { "B" } else { "A" };
        lines[1].replace_range(0..1, flipped);
        assert_eq!(
            key.unlock("swarm-data.key", &lines.join("\n")),
            Err(UnlockError::WrongKey)
        );
        assert_eq!(
            key.unlock("swarm-data.key", LOCKED_HEADER),
            Err(UnlockError::WrongKey)
        );
        // A fresh nonce each time.
        assert_ne!(text, key.lock("swarm-data.key", b"the data key"));
    }

    #[test]
    fn sealed_in_the_store_under_the_data_key() {
        let data_key = DataKey::generate();
        let key = UnlockKey::generate();
        let sealed = key.seal_under(&data_key);
        assert!(!sealed.contains(&key.to_human()[PREFIX.len()..]));
        assert_eq!(UnlockKey::open_under(&data_key, &sealed).unwrap(), key);
        assert!(UnlockKey::open_under(&DataKey::generate(), &sealed).is_err());
        // Another sealed value of the same length does not pass as an unlock key.
        let other = data_key.seal_b64("svc1", &[0u8; KEY_LEN]);
        assert!(UnlockKey::open_under(&data_key, &other).is_err());
    }
}
