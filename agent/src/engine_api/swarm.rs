//! `/swarm`: init, join, leave, inspect, update, and the unlock key.

use super::error::{ApiError, ApiResult};
use super::gojson::{self, query_bool};
use super::{Api, empty, unexpected};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use shoal_api::control::{ControlRequest, ControlResponse, SwarmUpdate};
use shoal_api::join::KeyText;
use shoal_api::local::{LocalRequest, LocalResponse, SwarmInit, SwarmJoin};
use shoal_api::objects::{Cluster, NodeRole};
use std::collections::HashMap;

pub fn routes() -> Router<Api> {
    Router::new()
        .route("/swarm", get(inspect))
        .route("/swarm/init", post(init))
        .route("/swarm/join", post(join))
        .route("/swarm/leave", post(leave))
        .route("/swarm/update", post(update))
        .route("/swarm/unlockkey", get(unlock_key))
        .route("/swarm/unlock", post(unlock))
}

/// Swarm's defaults where the request leaves a field out.
const DEFAULT_LISTEN: &str = "0.0.0.0:2377";
const DEFAULT_POOL: &str = "10.0.0.0/8";

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct InitRequest {
    listen_addr: String,
    advertise_addr: String,
    data_path_addr: String,
    data_path_port: u32,
    default_addr_pool: Vec<String>,
    subnet_size: u32,
    force_new_cluster: bool,
    auto_lock_managers: bool,
    availability: String,
    spec: Value,
}

/// `host` or `host:port` with Docker's default port for an address flag.
fn with_port(addr: &str, port: u16) -> String {
    if addr.is_empty()
        || addr
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        addr.to_string()
    } else {
        format!("{addr}:{port}")
    }
}

async fn init(State(api): State<Api>, body: Bytes) -> ApiResult<Json<String>> {
    let req: InitRequest = gojson::decode(gojson::parse(&body, "swarm init")?, "swarm init")?;
    if req.force_new_cluster {
        return Err(ApiError::bad(
            "swarm init: ForceNewCluster is not supported by shoal; restore a manager's state dir instead",
        ));
    }
    if !req.data_path_addr.is_empty() {
        return Err(ApiError::bad(
            "swarm init: DataPathAddr is not supported: overlay traffic uses the advertise address",
        ));
    }
    if !matches!(req.availability.as_str(), "" | "active") {
        return Err(ApiError::bad(format!(
            "swarm init: Availability {:?} is not supported at init; set it afterwards with `docker node update --availability`",
            req.availability
        )));
    }
    if !gojson::is_unset(&req.spec) {
        tracing::info!(
            "swarm init: the request's Spec is ignored; use `docker swarm update` afterwards"
        );
    }
    let subnet_size = match req.subnet_size {
        0 => 24,
        n => u8::try_from(n)
            .map_err(|_| ApiError::bad(format!("swarm init: SubnetSize {n} is out of range")))?,
    };
    let data_path_port = match req.data_path_port {
        0 => 4789,
        n => u16::try_from(n)
            .map_err(|_| ApiError::bad(format!("swarm init: DataPathPort {n} is out of range")))?,
    };
    let listen_addr = match req.listen_addr.as_str() {
        "" => DEFAULT_LISTEN.to_string(),
        a => with_port(a, 2377),
    };
    let init = SwarmInit {
        advertise_addr: req.advertise_addr,
        listen_addr,
        default_addr_pool: if req.default_addr_pool.is_empty() {
            vec![DEFAULT_POOL.into()]
        } else {
            req.default_addr_pool
        },
        subnet_size,
        data_path_port,
        dynamic_port_range: None,
        autolock: req.auto_lock_managers,
    };
    match api.local(LocalRequest::SwarmInit(init)).await? {
        LocalResponse::Joined { node_id } => Ok(Json(node_id)),
        other => Err(unexpected(&other)),
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct JoinRequest {
    listen_addr: String,
    advertise_addr: String,
    data_path_addr: String,
    remote_addrs: Vec<String>,
    join_token: String,
    availability: String,
}

async fn join(State(api): State<Api>, body: Bytes) -> ApiResult<Response> {
    let req: JoinRequest = gojson::decode(gojson::parse(&body, "swarm join")?, "swarm join")?;
    let Some(remote) = req.remote_addrs.first() else {
        return Err(ApiError::bad(
            "swarm join: RemoteAddrs is empty; give a manager's address",
        ));
    };
    if !req.data_path_addr.is_empty() {
        return Err(ApiError::bad(
            "swarm join: DataPathAddr is not supported: overlay traffic uses the advertise address",
        ));
    }
    if !matches!(req.availability.as_str(), "" | "active") {
        return Err(ApiError::bad(format!(
            "swarm join: Availability {:?} is not supported at join; set it afterwards with `docker node update --availability`",
            req.availability
        )));
    }
    let join = SwarmJoin {
        token: req.join_token.trim().to_string(),
        remote_addr: with_port(remote, 2377),
        advertise_addr: req.advertise_addr,
        listen_addr: match req.listen_addr.as_str() {
            "" => DEFAULT_LISTEN.to_string(),
            a => with_port(a, 2377),
        },
    };
    api.local(LocalRequest::SwarmJoin(join)).await?;
    Ok(empty(StatusCode::OK))
}

async fn leave(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let force = query_bool(q.get("force").map(String::as_str));
    api.local(LocalRequest::SwarmLeave { force }).await?;
    Ok(empty(StatusCode::OK))
}

async fn cluster(api: &Api) -> ApiResult<Cluster> {
    match api.control(ControlRequest::SwarmInspect).await? {
        ControlResponse::Swarm(c) => Ok(*c),
        other => Err(unexpected(&other)),
    }
}

/// Docker's `ClusterInfo` from shoal's cluster object.
fn engine_cluster(c: &Cluster) -> Value {
    let s = &c.spec;
    json!({
        "ID": c.id,
        "Version": {"Index": c.version.index},
        "CreatedAt": c.created_at,
        "UpdatedAt": c.updated_at,
        "Spec": {
            "Name": s.name,
            "Labels": {},
            "Orchestration": {"TaskHistoryRetentionLimit": s.task_history_retention_limit},
            // shoal's raft ticks are fixed; shown as Docker's defaults so tools that read
            // them find numbers, and refused when an update tries to change them.
            "Raft": {"SnapshotInterval": 10000, "KeepOldSnapshots": 0,
                     "LogEntriesForSlowFollowers": 500, "ElectionTick": 10, "HeartbeatTick": 1},
            "Dispatcher": {"HeartbeatPeriod": s.dispatcher_heartbeat_period},
            "CAConfig": {"NodeCertExpiry": s.node_cert_expiry},
            "TaskDefaults": {},
            "EncryptionConfig": {"AutoLockManagers": s.encryption_config.auto_lock_managers},
        },
        "TLSInfo": {"TrustRoot": c.tls_info},
        "RootRotationInProgress": false,
        "DefaultAddrPool": c.default_addr_pool,
        "SubnetSize": c.subnet_size,
        "DataPathPort": c.data_path_port,
    })
}

/// `/info`'s `Swarm.Cluster`.
pub async fn cluster_info(api: &Api) -> ApiResult<Value> {
    Ok(engine_cluster(&cluster(api).await?))
}

async fn token(api: &Api, role: NodeRole, rotate: bool) -> ApiResult<String> {
    match api
        .control(ControlRequest::JoinToken { role, rotate })
        .await?
    {
        ControlResponse::Token(t) => Ok(t),
        other => Err(unexpected(&other)),
    }
}

async fn inspect(State(api): State<Api>) -> ApiResult<Json<Value>> {
    let mut v = engine_cluster(&cluster(&api).await?);
    v["JoinTokens"] = json!({
        "Worker": token(&api, NodeRole::Worker, false).await?,
        "Manager": token(&api, NodeRole::Manager, false).await?,
    });
    Ok(Json(v))
}

fn u64_at(spec: &Value, path: &[&str]) -> Option<u64> {
    path.iter().try_fold(spec, |v, p| v.get(*p))?.as_u64()
}

/// `POST /swarm/update?version=N&rotateWorkerToken=..`: the spec's changed fields become
/// one `SwarmUpdate`, checked against the version read; token rotations follow it.
async fn update(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult<Response> {
    let version = q
        .get("version")
        .ok_or_else(|| ApiError::bad("swarm update: the version query parameter is required"))?
        .parse::<u64>()
        .map_err(|_| ApiError::bad("swarm update: invalid version"))?;
    let spec = gojson::parse(&body, "swarm update")?;
    let current = cluster(&api).await?;
    let now = &current.spec;
    let changed = |path: &[&str], have: u64| u64_at(&spec, path).filter(|&v| v != have);
    for (path, fixed) in [
        (&["Raft", "ElectionTick"][..], 10),
        (&["Raft", "HeartbeatTick"][..], 1),
        (&["Raft", "SnapshotInterval"][..], 10000),
        (&["Raft", "KeepOldSnapshots"][..], 0),
        (&["Raft", "LogEntriesForSlowFollowers"][..], 500),
    ] {
        if changed(path, fixed).is_some() {
            return Err(ApiError::bad(format!(
                "swarm update: Spec.{} can't be changed in shoal",
                path.join(".")
            )));
        }
    }
    if let Some(ext) = spec.pointer("/CAConfig/ExternalCAs")
        && !gojson::is_unset(ext)
    {
        return Err(ApiError::bad(
            "swarm update: external CAs are not supported",
        ));
    }
    let autolock = spec
        .pointer("/EncryptionConfig/AutoLockManagers")
        .and_then(Value::as_bool)
        .filter(|&on| on != now.encryption_config.auto_lock_managers);
    let update = SwarmUpdate {
        version: Some(version),
        cert_expiry_ns: changed(&["CAConfig", "NodeCertExpiry"], now.node_cert_expiry),
        heartbeat_period_ns: changed(
            &["Dispatcher", "HeartbeatPeriod"],
            now.dispatcher_heartbeat_period,
        ),
        task_history_limit: changed(
            &["Orchestration", "TaskHistoryRetentionLimit"],
            now.task_history_retention_limit,
        ),
        autolock,
    };
    api.control(ControlRequest::SwarmUpdate(update)).await?;
    let flag = |k: &str| query_bool(q.get(k).map(String::as_str));
    if flag("rotateWorkerToken") {
        token(&api, NodeRole::Worker, true).await?;
    }
    if flag("rotateManagerToken") {
        token(&api, NodeRole::Manager, true).await?;
    }
    if flag("rotateManagerUnlockKey") {
        api.control(ControlRequest::UnlockKey { rotate: true })
            .await?;
    }
    Ok(empty(StatusCode::OK))
}

async fn unlock_key(State(api): State<Api>) -> ApiResult<Json<Value>> {
    match api
        .control(ControlRequest::UnlockKey { rotate: false })
        .await?
    {
        ControlResponse::UnlockKey(k) => Ok(Json(json!({"UnlockKey": k.0}))),
        other => Err(unexpected(&other)),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UnlockRequest {
    unlock_key: String,
}

async fn unlock(State(api): State<Api>, body: Bytes) -> ApiResult<Response> {
    let req: UnlockRequest = gojson::decode(gojson::parse(&body, "swarm unlock")?, "swarm unlock")?;
    api.local(LocalRequest::SwarmUnlock {
        key: KeyText(req.unlock_key),
    })
    .await?;
    Ok(empty(StatusCode::OK))
}
