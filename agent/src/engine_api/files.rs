//! `/secrets` and `/configs`.

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
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use shoal_api::control::{ControlRequest, ControlResponse};
use shoal_api::objects::Driver;
use shoal_api::secrets::{ConfigSpec, SecretSpec, SensitiveBytes};
use std::collections::{BTreeMap, HashMap};

pub fn routes() -> Router<Api> {
    Router::new()
        .route("/secrets", get(secret_list))
        .route("/secrets/create", post(secret_create))
        .route("/secrets/{id}", get(secret_inspect).delete(secret_remove))
        .route("/secrets/{id}/update", post(immutable))
        .route("/configs", get(config_list))
        .route("/configs/create", post(config_create))
        .route("/configs/{id}", get(config_inspect).delete(config_remove))
        .route("/configs/{id}/update", post(immutable))
}

const FILTERS: &[&str] = &["id", "label", "name", "names"];

fn matches(f: &Filters, id: &str, name: &str, labels: &BTreeMap<String, String>) -> bool {
    f.any("id", |v| id.starts_with(v))
        && f.any("name", |v| name.starts_with(v))
        && f.any("names", |v| name == v)
        && f.labels("label", labels)
}

fn filters(q: &HashMap<String, String>) -> ApiResult<Filters> {
    Filters::parse(q.get("filters").map(String::as_str), FILTERS)
}

async fn secret_list(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let f = filters(&q)?;
    match api.control(ControlRequest::SecretList).await? {
        ControlResponse::Secrets(list) => Ok(Json(json!(
            list.iter()
                .filter(|s| matches(&f, &s.id, &s.spec.name, &s.spec.labels))
                .collect::<Vec<_>>()
        ))),
        other => Err(unexpected(&other)),
    }
}

async fn secret_inspect(State(api): State<Api>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    match api
        .control(ControlRequest::SecretInspect { secret: id })
        .await?
    {
        ControlResponse::Secret(s) => Ok(Json(json!(s))),
        other => Err(unexpected(&other)),
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct FileCreate {
    name: String,
    labels: BTreeMap<String, String>,
    /// Base64, as Go's `[]byte`.
    data: String,
    driver: Option<Driver>,
    templating: Option<Driver>,
}

fn data(kind: &str, req: &FileCreate) -> ApiResult<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(req.data.trim())
        .map_err(|e| ApiError::bad(format!("{kind} {}: Data is not base64: {e}", req.name)))
}

async fn secret_create(State(api): State<Api>, body: Bytes) -> ApiResult<Response> {
    let req: FileCreate = gojson::decode(gojson::parse(&body, "secret create")?, "secret create")?;
    let bytes = SensitiveBytes::new(data("secret", &req)?);
    let spec = SecretSpec {
        name: req.name,
        labels: req.labels,
        driver: req.driver,
        templating: req.templating,
    };
    created(
        api.control(ControlRequest::SecretCreate { spec, data: bytes })
            .await?,
    )
}

fn created(answer: ControlResponse) -> ApiResult<Response> {
    match answer {
        ControlResponse::Created { id } => {
            Ok((StatusCode::CREATED, Json(json!({"ID": id}))).into_response())
        }
        other => Err(unexpected(&other)),
    }
}

async fn secret_remove(State(api): State<Api>, Path(id): Path<String>) -> ApiResult<Response> {
    let secret_id = match api
        .control(ControlRequest::SecretInspect { secret: id })
        .await?
    {
        ControlResponse::Secret(s) => s.id,
        other => return Err(unexpected(&other)),
    };
    super::removal::once_tasks_stop(
        &api,
        ControlRequest::SecretRemove {
            secret: secret_id.clone(),
        },
        |t| {
            t.spec
                .container_spec
                .secrets
                .iter()
                .any(|r| r.secret_id == secret_id)
        },
    )
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

async fn config_list(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let f = filters(&q)?;
    match api.control(ControlRequest::ConfigList).await? {
        ControlResponse::Configs(list) => Ok(Json(json!(
            list.iter()
                .filter(|c| matches(&f, &c.id, &c.spec.name, &c.spec.labels))
                .collect::<Vec<_>>()
        ))),
        other => Err(unexpected(&other)),
    }
}

async fn config_inspect(State(api): State<Api>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    match api
        .control(ControlRequest::ConfigInspect { config: id })
        .await?
    {
        ControlResponse::Config(c) => Ok(Json(json!(c))),
        other => Err(unexpected(&other)),
    }
}

async fn config_create(State(api): State<Api>, body: Bytes) -> ApiResult<Response> {
    let req: FileCreate = gojson::decode(gojson::parse(&body, "config create")?, "config create")?;
    if req.driver.is_some() {
        return Err(ApiError::bad(format!(
            "config {}: configs have no driver",
            req.name
        )));
    }
    let bytes = data("config", &req)?;
    let spec = ConfigSpec {
        name: req.name,
        labels: req.labels,
        data: bytes,
        templating: req.templating,
    };
    created(api.control(ControlRequest::ConfigCreate { spec }).await?)
}

async fn config_remove(State(api): State<Api>, Path(id): Path<String>) -> ApiResult<Response> {
    let config_id = match api
        .control(ControlRequest::ConfigInspect { config: id })
        .await?
    {
        ControlResponse::Config(c) => c.id,
        other => return Err(unexpected(&other)),
    };
    super::removal::once_tasks_stop(
        &api,
        ControlRequest::ConfigRemove {
            config: config_id.clone(),
        },
        |t| {
            t.spec
                .container_spec
                .configs
                .iter()
                .any(|r| r.config_id == config_id)
        },
    )
    .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// Docker lets labels change; shoal keeps secrets and configs immutable as a whole.
async fn immutable(Path(id): Path<String>) -> ApiError {
    ApiError::bad(format!(
        "{id}: secrets and configs can't be changed in shoal; create a new one and point the services at it"
    ))
}
