//! JSON frames inside gRPC, and the errors that travel as gRPC statuses.

use crate::pb::Frame;
use serde::{Serialize, de::DeserializeOwned};
use tonic::{Code, Status};

/// Encodes a value as a frame. Serializing our own types cannot fail.
pub fn frame<T: Serialize>(value: &T) -> Frame {
    Frame {
        json: serde_json::to_vec(value).expect("API types serialize to JSON"),
    }
}

/// Decodes a frame, answering a malformed one with InvalidArgument.
pub fn unframe<T: DeserializeOwned>(frame: &Frame) -> Result<T, Status> {
    serde_json::from_slice(&frame.json)
        .map_err(|e| Status::invalid_argument(format!("malformed request: {e}")))
}

/// The kinds of failure a user sees; each maps to one gRPC code so it survives forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input: malformed flag, port out of range, overlapping subnet.
    Invalid,
    NotFound,
    /// Name or port already taken.
    Conflict,
    /// Pool or range exhausted.
    Exhausted,
    /// Not allowed for this caller's role or token.
    Permission,
    /// No quorum, no leader, not part of a swarm yet.
    Unavailable,
    /// Wrong state for the request (already in a swarm, not a manager).
    Precondition,
    Internal,
}

impl ErrorKind {
    pub fn code(self) -> Code {
        match self {
            ErrorKind::Invalid => Code::InvalidArgument,
            ErrorKind::NotFound => Code::NotFound,
            ErrorKind::Conflict => Code::AlreadyExists,
            ErrorKind::Exhausted => Code::ResourceExhausted,
            ErrorKind::Permission => Code::PermissionDenied,
            ErrorKind::Unavailable => Code::Unavailable,
            ErrorKind::Precondition => Code::FailedPrecondition,
            ErrorKind::Internal => Code::Internal,
        }
    }

    pub fn status(self, message: impl Into<String>) -> Status {
        Status::new(self.code(), message)
    }
}
