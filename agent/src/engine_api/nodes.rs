//! `/nodes`: list with filters, inspect, update (a whole spec against a version), remove.

use super::error::{ApiError, ApiResult};
use super::filters::Filters;
use super::gojson::{self, query_bool};
use super::{Api, empty, unexpected};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::Value;
use shoal_api::control::{ControlRequest, ControlResponse, NodeUpdate};
use shoal_api::objects::{Node, NodeSpec};
use std::collections::HashMap;

pub fn routes() -> Router<Api> {
    Router::new()
        .route("/nodes", get(list))
        .route("/nodes/{id}", get(inspect).delete(remove))
        .route("/nodes/{id}/update", post(update))
}

pub async fn list_all(api: &Api) -> ApiResult<Vec<Node>> {
    match api.control(ControlRequest::NodeList).await? {
        ControlResponse::Nodes(n) => Ok(n),
        other => Err(unexpected(&other)),
    }
}

async fn node(api: &Api, id: &str) -> ApiResult<Node> {
    match api
        .control(ControlRequest::NodeInspect {
            node: id.to_string(),
        })
        .await?
    {
        ControlResponse::Node(n) => Ok(*n),
        other => Err(unexpected(&other)),
    }
}

/// Docker's node JSON: shoal's node with `Description.Engine`, which `node ls` prints.
fn engine_node(n: &Node) -> Value {
    let mut v = serde_json::to_value(n).expect("nodes serialize");
    v["Description"]["Engine"] = serde_json::json!({
        "EngineVersion": concat!("shoal-", env!("CARGO_PKG_VERSION")),
        "Labels": {},
        "Plugins": [{"Type": "Network", "Name": "overlay"}],
    });
    v
}

fn matches(f: &Filters, n: &Node) -> bool {
    let role = n.spec.role.to_string();
    f.any("id", |v| n.id.starts_with(v))
        && f.any("name", |v| n.hostname().starts_with(v))
        && f.any("role", |v| v == role)
        && f.any("membership", |v| v == "accepted")
        && f.labels("node.label", &n.spec.labels)
        // Engine labels: shoal nodes have none.
        && f.labels("label", &Default::default())
}

async fn list(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Vec<Value>>> {
    let f = Filters::parse(
        q.get("filters").map(String::as_str),
        &["id", "label", "membership", "name", "node.label", "role"],
    )?;
    let nodes = list_all(&api).await?;
    Ok(Json(
        nodes
            .iter()
            .filter(|n| matches(&f, n))
            .map(engine_node)
            .collect(),
    ))
}

async fn inspect(State(api): State<Api>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(engine_node(&node(&api, &id).await?)))
}

/// Docker sends the whole new spec; shoal's request carries what changed, and the version
/// read, so a node changed in between is refused as Docker does.
async fn update(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult<Response> {
    let version = q
        .get("version")
        .ok_or_else(|| {
            ApiError::bad(format!(
                "node {id}: the version query parameter is required"
            ))
        })?
        .parse::<u64>()
        .map_err(|_| ApiError::bad(format!("node {id}: invalid version")))?;
    let spec: NodeSpec = gojson::decode(gojson::parse(&body, "node spec")?, "node spec")?;
    let current = node(&api, &id).await?;
    if !spec.name.is_empty() && spec.name != current.spec.name {
        return Err(ApiError::bad(format!(
            "node {}: Name can't be changed in shoal (the node's --hostname names it)",
            current.hostname()
        )));
    }
    let was = &current.spec;
    let update = NodeUpdate {
        node: current.id.clone(),
        version: Some(version),
        availability: Some(spec.availability).filter(|a| *a != was.availability),
        role: Some(spec.role).filter(|r| *r != was.role),
        labels_add: spec
            .labels
            .iter()
            .filter(|(k, v)| was.labels.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        labels_rm: was
            .labels
            .keys()
            .filter(|k| !spec.labels.contains_key(*k))
            .cloned()
            .collect(),
    };
    api.control(ControlRequest::NodeUpdate(update)).await?;
    Ok(empty(StatusCode::OK))
}

async fn remove(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let force = query_bool(q.get("force").map(String::as_str));
    api.control(ControlRequest::NodeRemove { node: id, force })
        .await?;
    Ok(empty(StatusCode::OK))
}
