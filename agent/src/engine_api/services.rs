//! `/services`: list with filters and `status=true`, create, inspect, update (against a
//! version, or a rollback), remove, logs.

use super::error::{ApiError, ApiResult};
use super::filters::Filters;
use super::gojson::query_bool;
use super::{Api, empty, logs, service_spec, unexpected};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use shoal_api::control::{ControlRequest, ControlResponse, ServiceView};
use shoal_api::objects::ServiceMode;
use shoal_api::registry_auth::RegistryAuth;
use std::collections::HashMap;

pub fn routes() -> Router<Api> {
    Router::new()
        .route("/services", get(list))
        .route("/services/create", post(create))
        .route("/services/{id}", get(inspect).delete(remove))
        .route("/services/{id}/update", post(update))
        .route("/services/{id}/logs", get(logs::service_logs))
}

pub async fn list_all(api: &Api) -> ApiResult<Vec<ServiceView>> {
    match api.control(ControlRequest::ServiceList).await? {
        ControlResponse::Services(s) => Ok(s),
        other => Err(unexpected(&other)),
    }
}

pub async fn service(api: &Api, id: &str) -> ApiResult<ServiceView> {
    match api
        .control(ControlRequest::ServiceInspect {
            service: id.to_string(),
        })
        .await?
    {
        ControlResponse::Service(s) => Ok(*s),
        other => Err(unexpected(&other)),
    }
}

/// Docker's service JSON; `ServiceStatus` only when asked for (`status=true`).
fn engine_service(s: &ServiceView, status: bool) -> Value {
    let mut v = serde_json::to_value(s).expect("services serialize");
    if let Some(spec) = v.get_mut("Spec") {
        service_spec::to_engine(spec);
    }
    if let Some(spec) = v.get_mut("PreviousSpec") {
        service_spec::to_engine(spec);
    }
    let obj = v.as_object_mut().expect("a service is an object");
    if status {
        obj.insert(
            "ServiceStatus".into(),
            json!({
                "RunningTasks": s.service_status.running_tasks,
                "DesiredTasks": s.service_status.desired_tasks,
                "CompletedTasks": 0,
            }),
        );
    } else {
        obj.remove("ServiceStatus");
    }
    v
}

fn matches(f: &Filters, s: &ServiceView) -> bool {
    let spec = &s.service.spec;
    let mode = match spec.mode {
        ServiceMode::Replicated { .. } => "replicated",
        ServiceMode::Global {} => "global",
    };
    f.any("id", |v| s.service.id.starts_with(v))
        && f.any("name", |v| spec.name.starts_with(v))
        && f.any("mode", |v| v == mode)
        && f.labels("label", &spec.labels)
}

async fn list(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Vec<Value>>> {
    let f = Filters::parse(
        q.get("filters").map(String::as_str),
        &["id", "label", "mode", "name"],
    )?;
    let status = query_bool(q.get("status").map(String::as_str));
    let services = list_all(&api).await?;
    Ok(Json(
        services
            .iter()
            .filter(|s| matches(&f, s))
            .map(|s| engine_service(s, status))
            .collect(),
    ))
}

async fn inspect(State(api): State<Api>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    // `insertDefaults` asks for the defaults to be filled in: shoal's specs always hold them.
    Ok(Json(engine_service(&service(&api, &id).await?, false)))
}

/// `X-Registry-Auth`, as the CLI sends it with `--with-registry-auth`.
fn registry_auth(headers: &HeaderMap) -> ApiResult<Option<RegistryAuth>> {
    let Some(h) = headers.get("X-Registry-Auth") else {
        return Ok(None);
    };
    let text = h
        .to_str()
        .map_err(|_| ApiError::bad("X-Registry-Auth is not base64 text"))?
        .trim();
    if text.is_empty() {
        return Ok(None);
    }
    let auth = RegistryAuth::from_encoded(text.to_string());
    let creds = auth
        .decode()
        .map_err(|e| ApiError::bad(format!("X-Registry-Auth: {e}")))?;
    // `{}`: the CLI had no credentials for the image's registry.
    if creds.username.is_empty() && creds.password.is_empty() && creds.identitytoken.is_empty() {
        return Ok(None);
    }
    Ok(Some(auth))
}

async fn create(State(api): State<Api>, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    let spec = service_spec::from_engine(&api, &body).await?;
    let registry_auth = registry_auth(&headers)?;
    match api
        .control(ControlRequest::ServiceCreate {
            spec,
            registry_auth,
        })
        .await?
    {
        ControlResponse::Created { id } => {
            Ok((StatusCode::CREATED, Json(json!({"ID": id, "Warnings": []}))).into_response())
        }
        other => Err(unexpected(&other)),
    }
}

async fn update(
    State(api): State<Api>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let version = q
        .get("version")
        .ok_or_else(|| {
            ApiError::bad(format!(
                "service {id}: the version query parameter is required"
            ))
        })?
        .parse::<u64>()
        .map_err(|_| ApiError::bad(format!("service {id}: invalid version")))?;
    match q.get("rollback").map(String::as_str) {
        None | Some("") => {}
        Some("previous") => {
            let current = service(&api, &id).await?;
            if current.service.version.index != version {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "update out of sequence: service {} changed since it was read (version {version}, now {}); read it again and retry",
                        current.service.spec.name, current.service.version.index
                    ),
                ));
            }
            api.control(ControlRequest::ServiceRollback {
                service: current.service.id,
            })
            .await?;
            return Ok(Json(json!({"Warnings": []})));
        }
        Some(other) => {
            return Err(ApiError::bad(format!(
                "service {id}: unknown rollback {other:?}; the only one is \"previous\""
            )));
        }
    }
    let spec = service_spec::from_engine(&api, &body).await?;
    let registry_auth = match q.get("registryAuthFrom").map(String::as_str) {
        None | Some("") | Some("spec") => registry_auth(&headers)?,
        // The credentials the service already has stay when none are sent.
        Some("previous-spec") => None,
        Some(other) => {
            return Err(ApiError::bad(format!(
                "service {id}: unknown registryAuthFrom {other:?}; use \"spec\" or \"previous-spec\""
            )));
        }
    };
    api.control(ControlRequest::ServiceUpdate {
        service: id,
        version,
        spec,
        registry_auth,
    })
    .await?;
    Ok(Json(json!({"Warnings": []})))
}

async fn remove(State(api): State<Api>, Path(id): Path<String>) -> ApiResult<Response> {
    api.control(ControlRequest::ServiceRemove { service: id })
        .await?;
    Ok(empty(StatusCode::OK))
}

/// What task filters need of a task's service.
pub struct ServiceFacts {
    pub labels: std::collections::BTreeMap<String, String>,
    pub spec_version: u64,
}

impl ServiceFacts {
    pub fn of(s: &ServiceView) -> ServiceFacts {
        ServiceFacts {
            labels: s.service.spec.labels.clone(),
            spec_version: s.service.spec_version.index,
        }
    }
}
