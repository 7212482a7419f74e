//! Join tokens in Swarm's format: `SWMTKN-1-<root CA digest>-<secret>`, both base36.

use super::RootCa;
use std::fmt;

const PREFIX: &str = "SWMTKN";
const VERSION: &str = "1";
const DIGEST_LEN: usize = 50;
const SECRET_LEN: usize = 25;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub ca_digest: String,
    pub secret: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a swarm join token (expected SWMTKN-1-...)")]
    NotAToken,
    #[error("join token version {0} is not supported (expected 1)")]
    Version(String),
    #[error("the join token's CA digest is malformed (expected {DIGEST_LEN} base36 characters)")]
    Digest,
    #[error("the join token's secret is malformed (expected {SECRET_LEN} base36 characters)")]
    Secret,
}

/// Big-endian bytes as base36, left-padded with zeros to `width`.
pub(crate) fn base36(bytes: &[u8], width: usize) -> String {
    let mut digits = Vec::new();
    let mut num: Vec<u8> = bytes.to_vec();
    while num.iter().any(|b| *b != 0) {
        let mut rem = 0u32;
        for b in num.iter_mut() {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 36) as u8;
            rem = cur % 36;
        }
        digits.push(char::from_digit(rem, 36).expect("digit below 36"));
    }
    while digits.len() < width {
        digits.push('0');
    }
    digits.iter().rev().collect()
}

fn is_base36(s: &str, len: usize) -> bool {
    s.len() == len
        && s.chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
}

impl JoinToken {
    pub fn generate(ca: &RootCa) -> Self {
        let secret: [u8; 16] = rand::random();
        JoinToken {
            ca_digest: ca.digest(),
            secret: base36(&secret, SECRET_LEN),
        }
    }

    pub fn parse(s: &str) -> Result<Self, TokenError> {
        let parts: Vec<&str> = s.trim().split('-').collect();
        if parts.len() != 4 || parts[0] != PREFIX {
            return Err(TokenError::NotAToken);
        }
        if parts[1] != VERSION {
            return Err(TokenError::Version(parts[1].to_string()));
        }
        if !is_base36(parts[2], DIGEST_LEN) {
            return Err(TokenError::Digest);
        }
        if !is_base36(parts[3], SECRET_LEN) {
            return Err(TokenError::Secret);
        }
        Ok(JoinToken {
            ca_digest: parts[2].to_string(),
            secret: parts[3].to_string(),
        })
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}-{VERSION}-{}-{}", self.ca_digest, self.secret)
    }
}
