//! `/networks`: swarm-scoped overlay networks, in the engine's network shape.

use super::error::{ApiError, ApiResult};
use super::filters::Filters;
use super::gojson;
use super::{Api, empty, unexpected};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use shoal_api::control::{ControlRequest, ControlResponse};
use shoal_api::objects::{Driver, IpamConfig, IpamOptions, Network, NetworkSpec};
use std::collections::{BTreeMap, HashMap};

pub fn routes() -> Router<Api> {
    Router::new()
        .route("/networks", get(list))
        .route("/networks/create", post(create))
        .route("/networks/prune", post(prune))
        .route("/networks/{id}", get(inspect).delete(remove))
        .route("/networks/{id}/connect", post(connect))
        .route("/networks/{id}/disconnect", post(connect))
}

async fn list_all(api: &Api) -> ApiResult<Vec<Network>> {
    match api.control(ControlRequest::NetworkList).await? {
        ControlResponse::Networks(n) => Ok(n),
        other => Err(unexpected(&other)),
    }
}

/// The engine's network JSON (`docker network inspect`), from a swarm network.
fn engine_network(n: &Network) -> Value {
    let s = &n.spec;
    let config: Vec<Value> = n
        .ipam_options
        .configs
        .iter()
        .map(|c| {
            let mut v = json!({"Subnet": c.subnet, "Gateway": c.gateway});
            if !c.ip_range.is_empty() {
                v["IPRange"] = json!(c.ip_range);
            }
            v
        })
        .collect();
    let mut options = n.driver_state.options.clone();
    options.extend(s.driver_configuration.options.clone());
    json!({
        "Name": s.name,
        "Id": n.id,
        "Created": n.created_at,
        "Scope": "swarm",
        "Driver": if s.driver_configuration.name.is_empty() { "overlay" } else { s.driver_configuration.name.as_str() },
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": config},
        "Internal": s.internal,
        "Attachable": s.attachable,
        "Ingress": s.ingress,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": {},
        "Options": options,
        "Labels": s.labels,
    })
}

fn matches(f: &Filters, n: &Network) -> bool {
    let driver = if n.spec.driver_configuration.name.is_empty() {
        "overlay"
    } else {
        n.spec.driver_configuration.name.as_str()
    };
    f.any("driver", |v| v == driver)
        && f.any("id", |v| n.id.contains(v))
        && f.any("name", |v| n.spec.name.contains(v))
        && f.any("scope", |v| v == "swarm")
        // Every swarm network but ingress is a user's ("custom").
        && f.any("type", |v| (v == "custom") != n.spec.ingress)
        && f.labels("label", &n.spec.labels)
}

async fn list(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Vec<Value>>> {
    let f = Filters::parse(
        q.get("filters").map(String::as_str),
        &["driver", "id", "label", "name", "scope", "type", "dangling"],
    )?;
    if f.has("dangling") {
        return Err(ApiError::bad(
            "invalid filter 'dangling': shoal does not track which networks are unused",
        ));
    }
    let nets = list_all(&api).await?;
    Ok(Json(
        nets.iter()
            .filter(|n| matches(&f, n))
            .map(engine_network)
            .collect(),
    ))
}

async fn inspect(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    if q.get("scope")
        .is_some_and(|s| !s.is_empty() && s != "swarm")
    {
        return Err(ApiError::not_found(format!("network {id} not found")));
    }
    match api
        .control(ControlRequest::NetworkInspect {
            network: id.clone(),
        })
        .await
    {
        Ok(ControlResponse::Network(n)) => Ok(Json(engine_network(&n))),
        Ok(other) => Err(unexpected(&other)),
        Err(e) if e.status == StatusCode::NOT_FOUND => {
            Err(ApiError::not_found(format!("network {id} not found")))
        }
        Err(e) => Err(e),
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct IpamRequest {
    driver: String,
    config: Vec<IpamConfigRequest>,
    options: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct IpamConfigRequest {
    subnet: String,
    #[serde(rename = "IPRange")]
    ip_range: String,
    gateway: String,
    aux_address: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct CreateRequest {
    name: String,
    driver: String,
    scope: String,
    #[serde(rename = "EnableIPv6")]
    enable_ipv6: bool,
    #[serde(rename = "IPAM")]
    ipam: IpamRequest,
    internal: bool,
    attachable: bool,
    ingress: bool,
    config_only: bool,
    config_from: Value,
    options: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
}

async fn create(State(api): State<Api>, body: Bytes) -> ApiResult<Response> {
    let req: CreateRequest =
        gojson::decode(gojson::parse(&body, "network create")?, "network create")?;
    let name = &req.name;
    if req.driver != "overlay" {
        return Err(ApiError::not_implemented(format!(
            "network {name}: driver {:?} is the node's own engine's; shoal makes swarm-scoped overlay networks (--driver overlay); for others use DOCKER_HOST=unix:///var/run/docker.sock",
            req.driver
        )));
    }
    if !matches!(req.scope.as_str(), "" | "swarm") {
        return Err(ApiError::bad(format!(
            "network {name}: scope {:?}: overlay networks are swarm-scoped",
            req.scope
        )));
    }
    let refusals = [
        (
            req.enable_ipv6,
            "EnableIPv6: IPv6 overlays are not supported",
        ),
        (
            req.ingress,
            "Ingress: shoal has one ingress network, made at swarm init",
        ),
        (
            req.config_only || !gojson::is_unset(&req.config_from),
            "ConfigOnly/ConfigFrom: configuration-only networks are not supported",
        ),
        (
            !matches!(req.ipam.driver.as_str(), "" | "default"),
            "IPAM.Driver: only the default IPAM driver is supported",
        ),
        (
            !req.ipam.options.is_empty(),
            "IPAM.Options are not supported",
        ),
        (
            req.ipam.config.iter().any(|c| !c.aux_address.is_empty()),
            "IPAM.Config[].AuxiliaryAddresses are not supported",
        ),
    ];
    if let Some((_, why)) = refusals.iter().find(|(on, _)| *on) {
        return Err(ApiError::bad(format!("network {name}: {why}")));
    }
    let spec = NetworkSpec {
        name: req.name.clone(),
        labels: req.labels,
        driver_configuration: Driver {
            name: "overlay".into(),
            options: req.options,
        },
        ingress: false,
        attachable: req.attachable,
        internal: req.internal,
        ipam_options: IpamOptions {
            configs: req
                .ipam
                .config
                .into_iter()
                .map(|c| IpamConfig {
                    subnet: c.subnet,
                    gateway: c.gateway,
                    ip_range: c.ip_range,
                })
                .collect(),
        },
    };
    match api.control(ControlRequest::NetworkCreate { spec }).await? {
        ControlResponse::Created { id } => {
            Ok((StatusCode::CREATED, Json(json!({"Id": id, "Warning": ""}))).into_response())
        }
        other => Err(unexpected(&other)),
    }
}

/// Docker removes a network as soon as no service uses it (`docker stack rm` removes the
/// services, then at once their networks); shoal's manager waits for their tasks to stop.
async fn remove(State(api): State<Api>, Path(id): Path<String>) -> ApiResult<Response> {
    let net_id = match api
        .control(ControlRequest::NetworkInspect {
            network: id.clone(),
        })
        .await?
    {
        ControlResponse::Network(n) => n.id,
        other => return Err(unexpected(&other)),
    };
    super::removal::once_tasks_stop(
        &api,
        ControlRequest::NetworkRemove {
            network: net_id.clone(),
        },
        |t| {
            t.networks_attachments
                .iter()
                .any(|a| a.network_id == net_id)
        },
    )
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn connect(Path(id): Path<String>) -> ApiError {
    ApiError::not_implemented(format!(
        "network {id}: connecting containers is the node's own engine's; services join networks with `docker service update --network-add`"
    ))
}

async fn prune() -> ApiError {
    ApiError::not_implemented(
        "network prune is not supported: remove swarm networks by name with `docker network rm`",
    )
}
