//! `/_ping`, `/version`, `/info`, and the answers for what is not shoal's to serve.

use super::error::{ApiError, ApiResult};
use super::{API_VERSION, Api, MIN_API_VERSION};
use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use shoal_api::local::NodeInfo;

/// The `Swarm` header of `/_ping`: how the CLI learns, before anything else, whether
/// swarm commands make sense here.
fn swarm_header(info: &NodeInfo) -> &'static str {
    match (info.local_node_state.as_str(), info.control_available) {
        ("active", true) => "active/manager",
        ("active", false) => "active/worker",
        ("locked", _) => "locked",
        _ => "inactive",
    }
}

pub async fn ping(State(api): State<Api>, method: Method) -> Response {
    let swarm = api
        .info()
        .await
        .map(|i| swarm_header(&i))
        .unwrap_or("error");
    let mut h = HeaderMap::new();
    h.insert("OSType", HeaderValue::from_static("linux"));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert("Swarm", HeaderValue::from_static(swarm));
    h.insert(
        "Cache-Control",
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert("Pragma", HeaderValue::from_static("no-cache"));
    let body = if method == Method::HEAD { "" } else { "OK" };
    (h, body).into_response()
}

fn uname() -> (String, String) {
    let u = nix::sys::utsname::uname().ok();
    let release = u
        .as_ref()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    (
        release,
        std::env::consts::ARCH
            .replace("x86_64", "amd64")
            .replace("aarch64", "arm64"),
    )
}

pub async fn version() -> Json<Value> {
    let (kernel, arch) = uname();
    let v = env!("CARGO_PKG_VERSION");
    Json(json!({
        "Platform": {"Name": "shoal"},
        "Components": [{
            "Name": "Engine",
            "Version": v,
            "Details": {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION,
                        "Os": "linux", "Arch": arch, "KernelVersion": kernel}
        }],
        "Version": v,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "Os": "linux",
        "Arch": arch,
        "KernelVersion": kernel,
        "GitCommit": "",
        "GoVersion": "",
    }))
}

fn memory_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// `/info`: the node, with the `Swarm` section the CLI reads (`LocalNodeState`, `NodeID`,
/// `ControlAvailable`, `Cluster`, node and manager counts).
pub async fn info(State(api): State<Api>) -> ApiResult<Json<Value>> {
    let info = api.info().await?;
    let (kernel, arch) = uname();
    let mut swarm = json!({
        "NodeID": info.node_id,
        "NodeAddr": info.node_addr,
        "LocalNodeState": info.local_node_state,
        "ControlAvailable": info.control_available,
        "Error": "",
        "RemoteManagers": info.remote_managers.iter().map(|a| json!({"NodeID": "", "Addr": a})).collect::<Vec<_>>(),
    });
    if info.control_available {
        let nodes = super::nodes::list_all(&api).await?;
        let managers: Vec<_> = nodes
            .iter()
            .filter(|n| n.manager_status.is_some())
            .collect();
        swarm["Nodes"] = json!(nodes.len());
        swarm["Managers"] = json!(managers.len());
        swarm["RemoteManagers"] = managers
            .iter()
            .map(|n| {
                let addr = n
                    .manager_status
                    .as_ref()
                    .map(|m| m.addr.clone())
                    .unwrap_or_default();
                json!({"NodeID": n.id, "Addr": addr})
            })
            .collect();
        swarm["Cluster"] = super::swarm::cluster_info(&api).await?;
    }
    let hostname = info
        .node
        .as_ref()
        .map(|n| n.hostname().to_string())
        .unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap_or_default()
                .trim()
                .to_string()
        });
    Ok(Json(json!({
        "ID": info.node_id,
        "Name": hostname,
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "OperatingSystem": "shoal",
        "OSType": "linux",
        "Architecture": arch,
        "KernelVersion": kernel,
        "NCPU": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "MemTotal": memory_total(),
        "Containers": 0, "ContainersRunning": 0, "ContainersPaused": 0, "ContainersStopped": 0,
        "Images": 0,
        "Driver": "",
        "Plugins": {"Network": ["overlay"], "Volume": [], "Log": []},
        "Labels": [],
        "Swarm": swarm,
        "Warnings": [],
    })))
}

/// Image digests: shoal does not reach registries from the manager, so the CLI is told so
/// once; it then warns that each node resolves the tag itself, and goes on.
pub async fn distribution() -> ApiError {
    ApiError::not_implemented(
        "shoal does not resolve image digests on the manager; each node pulls the image by its tag",
    )
}

/// `docker build` and BuildKit open sessions here; they are the node's engine's.
pub async fn no_session() -> ApiError {
    ApiError::not_implemented(
        "sessions (docker build) are the node's own engine's: use DOCKER_HOST=unix:///var/run/docker.sock",
    )
}

/// Every route that is not swarm's: containers, images, volumes, plugins, events.
pub async fn not_ours(req: Request) -> ApiError {
    let what = req
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("");
    ApiError::not_implemented(format!(
        "{} {} is not served by shoal, which speaks only the Swarm part of the Engine API; for {what}, use the node's own engine (DOCKER_HOST=unix:///var/run/docker.sock)",
        req.method(),
        req.uri().path()
    ))
}
