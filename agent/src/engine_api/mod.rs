//! Docker's Engine API on a unix socket of shoald (`--engine-api-socket`): the Swarm
//! routes and what the `docker` CLI and SDKs call around them, so that unmodified Docker
//! tools drive the cluster.
//!
//! One layer only: each handler turns the HTTP request into the `LocalRequest` the shoal
//! CLI would send and hands it to the daemon in-process; validation and business logic
//! stay in the daemon and the manager. What this layer adds is Docker's shapes (engine
//! networks, the `Swarm` object, filters, the multiplexed log stream) and status codes.

mod error;
mod files;
mod filters;
mod gojson;
mod logs;
mod networks;
mod nodes;
mod removal;
mod service_spec;
mod services;
mod swarm;
mod system;
mod tasks;
mod tcp;

pub use tcp::{TlsFiles, serve_tls};

use crate::daemon::Daemon;
use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use error::{ApiError, ApiResult};
use shoal_api::control::{ControlRequest, ControlResponse};
use shoal_api::local::{LocalRequest, LocalResponse};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The API version served: Docker 20.10's, which Debian's `docker.io` engine has and
/// which newer CLIs (28.x) negotiate down to. Routes and shapes follow its reference.
pub const API_VERSION: &str = "1.41";
/// The oldest version a client may ask for in its path (`/v1.24/...`).
pub const MIN_API_VERSION: &str = "1.24";

/// Where the Engine API listens by default: `/run/shoal/docker.sock`, or a name made
/// from `--state-dir` when that is not the default, so that several daemons on one host
/// (the testbed) don't take each other's socket.
pub fn default_socket(state_dir: &Path) -> PathBuf {
    match crate::identity::state_dir_tag(state_dir) {
        None => PathBuf::from("/run/shoal/docker.sock"),
        Some(tag) => PathBuf::from(format!("/run/shoal/docker{tag}.sock")),
    }
}

#[derive(Clone)]
pub struct Api {
    daemon: Arc<Daemon>,
}

impl Api {
    pub fn new(daemon: Arc<Daemon>) -> Api {
        Api { daemon }
    }

    async fn local(&self, req: LocalRequest) -> ApiResult<LocalResponse> {
        Ok(self.daemon.handle(req).await?)
    }

    /// A control request, answered by the manager this node is (or forwards to).
    async fn control(&self, req: ControlRequest) -> ApiResult<ControlResponse> {
        match self.local(LocalRequest::Control(req)).await? {
            LocalResponse::Control(c) => Ok(c),
            other => Err(unexpected(&other)),
        }
    }

    async fn info(&self) -> ApiResult<shoal_api::local::NodeInfo> {
        match self.local(LocalRequest::Info).await? {
            LocalResponse::Info(i) => Ok(*i),
            other => Err(unexpected(&other)),
        }
    }
}

fn unexpected(answer: &impl std::fmt::Debug) -> ApiError {
    ApiError::internal(format!("unexpected answer from the daemon: {answer:?}"))
}

/// The router over unversioned paths; `serve` strips the version first.
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/_ping", get(system::ping).head(system::ping))
        .route("/version", get(system::version))
        .route("/info", get(system::info))
        .merge(swarm::routes())
        .merge(nodes::routes())
        .merge(services::routes())
        .merge(tasks::routes())
        .merge(networks::routes())
        .merge(files::routes())
        .route("/distribution/{*name}", get(system::distribution))
        .route("/session", post(system::no_session))
        .fallback(any(system::not_ours))
        .with_state(api)
}

/// Takes `/v1.41/services` to `/services`, refusing versions outside what is served with
/// Docker's own messages; adds Docker's `API-Version` and `Server` headers to every answer.
async fn versioned(router: Router, req: Request) -> Response {
    let mut resp = match unversioned(req) {
        Ok(req) => tower::ServiceExt::oneshot(router, req)
            .await
            .unwrap_or_else(|e| match e {}),
        Err(refused) => refused.into_response(),
    };
    let h = resp.headers_mut();
    h.insert("API-Version", HeaderValue::from_static(API_VERSION));
    h.insert(
        "Server",
        HeaderValue::from_static(concat!("shoal/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
    resp
}

/// The request with its `/vX.Y` prefix taken off, or Docker's refusal of that version.
fn unversioned(mut req: Request) -> ApiResult<Request> {
    let path = req.uri().path().to_string();
    let Some((version, tail)) = path
        .strip_prefix("/v")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(v, _)| {
            v.split('.')
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        })
    else {
        return Ok(req);
    };
    if newer(version, API_VERSION) {
        return Err(ApiError::bad(format!(
            "client version {version} is too new. Maximum supported API version is {API_VERSION}"
        )));
    }
    if newer(MIN_API_VERSION, version) {
        return Err(ApiError::bad(format!(
            "client version {version} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
        )));
    }
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    *req.uri_mut() = format!("/{tail}{query}")
        .parse()
        .map_err(|_| ApiError::bad("malformed request path"))?;
    Ok(req)
}

/// Whether dotted version `a` is newer than `b`.
fn newer(a: &str, b: &str) -> bool {
    let parse = |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parse(a) > parse(b)
}

/// Serves the API on `path` until the process ends: mode 0660, group `docker` when the
/// host has one (as dockerd makes its socket), so only who may open it can talk.
pub async fn serve_unix(path: &Path, daemon: Arc<Daemon>) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("--engine-api-socket {}: {e}", path.display()),
    }
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| anyhow::anyhow!("--engine-api-socket {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Ok(Some(group)) = nix::unistd::Group::from_name("docker") {
        nix::unistd::chown(path, None, Some(group.gid))
            .map_err(|e| anyhow::anyhow!("--engine-api-socket {}: chown: {e}", path.display()))?;
    }
    let router = router(Api::new(daemon));
    let app = tower::service_fn(move |req: Request| {
        let router = router.clone();
        async move { Ok::<_, std::convert::Infallible>(versioned(router, req).await) }
    });
    tracing::info!(socket = %path.display(), api = API_VERSION, "serving Docker's Engine API");
    let path = path.to_path_buf();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(
            listener,
            axum::ServiceExt::<Request>::into_make_service(app),
        )
        .await
        {
            tracing::warn!(error = %e, socket = %path.display(), "engine API server stopped");
        }
    });
    Ok(())
}

/// An empty answer with a status (Docker's 200/201/204 without a body).
fn empty(status: StatusCode) -> Response {
    (status, Body::empty()).into_response()
}

#[cfg(test)]
mod tests;
