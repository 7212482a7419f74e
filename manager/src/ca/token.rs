//! Join tokens: `SWMTKN-1-<root CA digest>-<secret>`, as in Swarm's `ca/config.go`.
//!
//! The digest lets a joining node check the CA it downloads from a manager it does not yet
//! trust; the secret proves it may join, and which role it gets.

use super::RootCa;
use std::fmt;

const PREFIX: &str = "SWMTKN";
const VERSION: &str = "1";
/// Length of the base36 SHA-256 digest (Swarm's `base36DigestLen`).
pub(crate) const DIGEST_LEN: usize = 50;
/// Length of the base36 secret (Swarm's `maxGeneratedSecretLength`).
const SECRET_LEN: usize = 25;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a join token: expected SWMTKN-1-<digest>-<secret>, as printed by `join-token`")]
    NotAToken,
    #[error("join token version {version} is not supported (only SWMTKN-1)")]
    UnsupportedVersion { version: String },
    #[error(
        "the CA digest in the join token is malformed: expected {DIGEST_LEN} lowercase base36 characters, got {len} characters"
    )]
    MalformedDigest { len: usize },
    #[error(
        "the secret in the join token is malformed: expected {SECRET_LEN} lowercase base36 characters, got {len} characters"
    )]
    MalformedSecret { len: usize },
}

/// A parsed join token. `==` compares secrets in constant time; `Debug` hides the secret.
#[derive(Clone, Eq)]
pub struct JoinToken {
    pub ca_digest: String,
    pub secret: String,
}

impl JoinToken {
    /// New random 16-byte secret (base36, zero-padded to 25 chars) for this CA.
    pub fn generate(ca: &RootCa) -> Self {
        let secret: [u8; 16] = rand::random();
        Self {
            ca_digest: ca.digest(),
            secret: base36(&secret, SECRET_LEN),
        }
    }

    /// Parses `SWMTKN-1-<50 base36>-<25 base36>`; surrounding whitespace is ignored.
    pub fn parse(s: &str) -> Result<Self, TokenError> {
        let parts: Vec<&str> = s.trim().split('-').collect();
        if parts.len() < 2 || parts[0] != PREFIX {
            return Err(TokenError::NotAToken);
        }
        if parts[1] != VERSION {
            return Err(TokenError::UnsupportedVersion {
                version: parts[1].to_string(),
            });
        }
        let [_, _, digest, secret] = parts[..] else {
            return Err(TokenError::NotAToken);
        };
        if !is_base36(digest, DIGEST_LEN) {
            return Err(TokenError::MalformedDigest { len: digest.len() });
        }
        if !is_base36(secret, SECRET_LEN) {
            return Err(TokenError::MalformedSecret { len: secret.len() });
        }
        Ok(Self {
            ca_digest: digest.to_string(),
            secret: secret.to_string(),
        })
    }

    /// True when this token was made for `ca`.
    pub fn is_for(&self, ca: &RootCa) -> bool {
        self.ca_digest == ca.digest()
    }
}

impl PartialEq for JoinToken {
    // Constant time, so that a remote guesser learns nothing from how fast a wrong secret
    // is rejected. The digest is public; the secret is not.
    fn eq(&self, other: &Self) -> bool {
        self.ca_digest == other.ca_digest && constant_time_eq(&self.secret, &other.secret)
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_digest", &self.ca_digest)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}-{VERSION}-{}-{}", self.ca_digest, self.secret)
    }
}

/// Compares without stopping at the first difference. Lengths are not secret (always 25).
fn constant_time_eq(a: &str, b: &str) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .bytes()
        .zip(b.bytes())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn is_base36(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
}

/// Big-endian bytes as a lowercase base36 number, zero-padded to `width`, like Go's
/// `fmt.Sprintf("%0*s", width, big.Int.Text(36))` in Swarm.
pub(crate) fn base36(bytes: &[u8], width: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut n = bytes.to_vec();
    let mut out = Vec::new();
    // Long division by 36, least significant digit first.
    while n.iter().any(|&b| b != 0) {
        let mut rem = 0u32;
        for b in n.iter_mut() {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 36) as u8;
            rem = cur % 36;
        }
        out.push(DIGITS[rem as usize]);
    }
    while out.len() < width {
        out.push(b'0');
    }
    out.reverse();
    String::from_utf8(out).expect("base36 digits are ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_matches_known_values() {
        assert_eq!(base36(&[], 3), "000");
        assert_eq!(base36(&[35], 1), "z");
        assert_eq!(base36(&[36], 1), "10");
        assert_eq!(base36(&[0x01, 0x00], 0), "74"); // 256 = 7*36 + 4
        // The largest values fit the Swarm widths exactly or with padding.
        assert_eq!(base36(&[0xff; 32], DIGEST_LEN).len(), DIGEST_LEN);
        assert_eq!(base36(&[0xff; 16], SECRET_LEN).len(), SECRET_LEN);
        assert_eq!(
            base36(&[0xff; 16], 0),
            "f5lxx1zz5pnorynqglhzmsp33" // 2^128 - 1, from Go's big.Int.Text(36)
        );
    }

    #[test]
    fn format_and_parse_round_trip_with_swarm_lengths() {
        let ca = RootCa::generate().unwrap();
        let token = JoinToken::generate(&ca);
        assert!(token.is_for(&ca));
        let s = token.to_string();
        assert!(s.starts_with("SWMTKN-1-"));
        let parts: Vec<&str> = s.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[2].len(), 50);
        assert_eq!(parts[3].len(), 25);
        assert_eq!(JoinToken::parse(&s).unwrap(), token);
        assert_eq!(JoinToken::parse(&format!("  {s}\n")).unwrap(), token);
        assert!(!format!("{token:?}").contains(&token.secret));
    }

    #[test]
    fn generate_gives_different_secrets() {
        let ca = RootCa::generate().unwrap();
        let a = JoinToken::generate(&ca);
        let b = JoinToken::generate(&ca);
        assert_eq!(a.ca_digest, b.ca_digest);
        assert_ne!(a.secret, b.secret);
        assert_ne!(a, b);
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        let d = "a".repeat(50);
        let s = "b".repeat(25);
        let cases = [
            ("garbage".to_string(), TokenError::NotAToken),
            ("".to_string(), TokenError::NotAToken),
            (format!("XXTKN-1-{d}-{s}"), TokenError::NotAToken),
            (
                format!("SWMTKN-2-1-{d}-{s}"),
                TokenError::UnsupportedVersion {
                    version: "2".into(),
                },
            ),
            (format!("SWMTKN-1-{d}"), TokenError::NotAToken),
            (format!("SWMTKN-1-{d}-{s}-x"), TokenError::NotAToken),
            (
                format!("SWMTKN-1-abc-{s}"),
                TokenError::MalformedDigest { len: 3 },
            ),
            (
                format!("SWMTKN-1-{}-{s}", "A".repeat(50)),
                TokenError::MalformedDigest { len: 50 },
            ),
            (
                format!("SWMTKN-1-{d}-{}", "b".repeat(24)),
                TokenError::MalformedSecret { len: 24 },
            ),
            (
                format!("SWMTKN-1-{d}-{}!", "b".repeat(24)),
                TokenError::MalformedSecret { len: 25 },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(JoinToken::parse(&input), Err(want), "{input}");
        }
        assert!(JoinToken::parse(&format!("SWMTKN-1-{d}-{s}")).is_ok());
    }

    #[test]
    fn equality_needs_the_same_secret() {
        let a = JoinToken {
            ca_digest: "d".into(),
            secret: "abc".into(),
        };
        let mut b = a.clone();
        assert_eq!(a, b);
        b.secret = "abd".into();
        assert_ne!(a, b);
        b.secret = "ab".into();
        assert_ne!(a, b);
    }
}
