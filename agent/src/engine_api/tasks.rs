//! `/tasks`: list with filters, inspect, logs.

use super::error::{ApiError, ApiResult};
use super::filters::Filters;
use super::{Api, logs, service_spec, services, unexpected};
use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use serde_json::Value;
use shoal_api::control::{ControlRequest, ControlResponse, TaskView};
use std::collections::HashMap;

pub fn routes() -> Router<Api> {
    Router::new()
        .route("/tasks", get(list))
        .route("/tasks/{id}", get(inspect))
        .route("/tasks/{id}/logs", get(logs::task_logs))
}

pub async fn list_all(api: &Api) -> ApiResult<Vec<TaskView>> {
    match api
        .control(ControlRequest::TaskList {
            service: None,
            node: None,
        })
        .await?
    {
        ControlResponse::Tasks(t) => Ok(t),
        other => Err(unexpected(&other)),
    }
}

/// A task by id or unique id prefix.
pub async fn task(api: &Api, id: &str) -> ApiResult<TaskView> {
    let tasks = list_all(api).await?;
    if let Some(t) = tasks.iter().find(|t| t.task.id == id) {
        return Ok(t.clone());
    }
    let mut found = tasks
        .into_iter()
        .filter(|t| !id.is_empty() && t.task.id.starts_with(id));
    match (found.next(), found.next()) {
        (Some(t), None) => Ok(t),
        (Some(_), Some(_)) => Err(ApiError::bad(format!(
            "task {id} is ambiguous; give more of its id"
        ))),
        (None, _) => Err(ApiError::not_found(format!("task {id} not found"))),
    }
}

fn engine_task(t: &TaskView) -> Value {
    let mut v = serde_json::to_value(t).expect("tasks serialize");
    if let Some(spec) = v.get_mut("Spec") {
        service_spec::task_spec_to_engine(spec);
    }
    v
}

async fn list(
    State(api): State<Api>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Vec<Value>>> {
    let f = Filters::parse(
        q.get("filters").map(String::as_str),
        &[
            "id",
            "name",
            "service",
            "node",
            "label",
            "desired-state",
            "_up-to-date",
        ],
    )?;
    for s in f.values("desired-state") {
        if !matches!(s.as_str(), "running" | "shutdown" | "accepted") {
            return Err(ApiError::bad(format!(
                "invalid filter 'desired-state={s}': use running, shutdown or accepted"
            )));
        }
    }
    let tasks = list_all(&api).await?;
    // Labels and up-to-dateness are the services': read them only when asked.
    let services: HashMap<String, services::ServiceFacts> =
        if f.has("label") || f.has("_up-to-date") {
            services::list_all(&api)
                .await?
                .into_iter()
                .map(|s| (s.service.id.clone(), services::ServiceFacts::of(&s)))
                .collect()
        } else {
            HashMap::new()
        };
    let nodes = if f.has("node") {
        super::nodes::list_all(&api).await?
    } else {
        vec![]
    };
    let out = tasks
        .iter()
        .filter(|t| {
            let task = &t.task;
            let svc = services.get(&task.service_id);
            f.any("id", |v| task.id.starts_with(v))
                && f.any("name", |v| t.name.starts_with(v))
                && f.any("service", |v| {
                    task.service_id == v
                        || t.service_name == v
                        || (v.len() >= 3 && task.service_id.starts_with(v))
                })
                && f.any("node", |v| {
                    task.node_id == v
                        || t.node_name == v
                        || nodes
                            .iter()
                            .any(|n| n.id == task.node_id && n.id.starts_with(v))
                })
                && f.any("desired-state", |v| {
                    // Docker's "accepted" takes in the states before running.
                    let d = task.desired_state.to_string();
                    d == v
                        || (v == "accepted"
                            && task.desired_state < shoal_api::objects::TaskState::Running)
                })
                && (!f.has("label") || svc.is_some_and(|s| f.labels("label", &s.labels)))
                && (!f.has("_up-to-date")
                    || svc.is_some_and(|s| s.spec_version == task.spec_version.index))
        })
        .map(engine_task)
        .collect();
    Ok(Json(out))
}

async fn inspect(State(api): State<Api>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    Ok(Json(engine_task(&task(&api, &id).await?)))
}
