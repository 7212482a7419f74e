//! Connecting to a local `shoald` over its unix socket.

use crate::local::{LocalRequest, LocalResponse};
use crate::pb::local_client::LocalClient;
use crate::wire::{frame, unframe};
use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

/// Default socket of the daemon, like `/var/run/docker.sock` for dockerd.
pub const DEFAULT_SOCKET: &str = "/run/shoal/shoald.sock";

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("host {0:?} is not a unix socket address; use unix:///path/to/shoald.sock")]
    BadHost(String),
    #[error("cannot connect to shoald at {path}: {source}. Is shoald running there?")]
    Connect {
        path: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Parses `unix:///path` (or a bare path) into the socket path.
pub fn socket_path(host: &str) -> Result<PathBuf, ConnectError> {
    if let Some(p) = host.strip_prefix("unix://") {
        return Ok(PathBuf::from(p));
    }
    if host.starts_with('/') {
        return Ok(PathBuf::from(host));
    }
    Err(ConnectError::BadHost(host.to_string()))
}

pub async fn connect_local(host: &str) -> Result<LocalClient<Channel>, ConnectError> {
    let path = socket_path(host)?;
    let shown = path.display().to_string();
    // The URI is required by tonic but unused: the connector below dials the socket.
    let channel = Endpoint::from_static("http://shoald.local")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|source| ConnectError::Connect {
            path: shown,
            source,
        })?;
    Ok(LocalClient::new(channel)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20))
}

/// One request to the local daemon.
pub async fn call_local(
    client: &mut LocalClient<Channel>,
    req: &LocalRequest,
) -> Result<LocalResponse, Status> {
    let reply = client.call(frame(req)).await?;
    unframe(reply.get_ref())
}
