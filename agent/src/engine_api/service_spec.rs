//! Docker's `ServiceSpec` in and out: the fields shoal has under the same names, Docker's
//! runtime names, network names resolved, and every Docker field shoal lacks refused by
//! name when it is set.

use super::error::{ApiError, ApiResult};
use super::gojson::{self, canonical_keys, object_at, refuse_set};
use super::{Api, unexpected};
use serde_json::Value;
use shoal_api::control::{ControlRequest, ControlResponse};
use shoal_api::objects::ServiceSpec;

const WHAT: &str = "service spec";

/// Docker fields of the container spec that shoal does not implement.
const CONTAINER_UNSUPPORTED: &[(&str, &str)] = &[
    (
        "Groups",
        "give the groups with User (`user:group`) or in the image",
    ),
    (
        "Privileges",
        "credential specs, SELinux and AppArmor profiles and seccomp are not applied by shoal",
    ),
    ("OomScoreAdj", "not applied by shoal"),
];

const TASK_UNSUPPORTED: &[(&str, &str)] = &[
    ("PluginSpec", "plugin tasks are not supported"),
    (
        "NetworkAttachmentSpec",
        "attachment tasks are not supported",
    ),
];

/// Reads the body of `POST /services/create` or `/services/{id}/update` into shoal's spec.
pub async fn from_engine(api: &Api, body: &[u8]) -> ApiResult<ServiceSpec> {
    let mut v = gojson::parse(body, WHAT)?;
    normalize(&mut v)?;
    resolve_networks(api, &mut v).await?;
    gojson::decode(v, WHAT)
}

/// Docker's spec in shoal's words: modes, runtimes, old field places; Docker fields shoal
/// lacks are refused here.
fn normalize(v: &mut Value) -> ApiResult<()> {
    let Some(spec) = v.as_object_mut() else {
        return Err(ApiError::bad(format!("{WHAT}: not a JSON object")));
    };
    // API < 1.29 put networks beside the task template.
    if let Some(nets) = spec.remove("Networks")
        && let Some(tt) = spec.get_mut("TaskTemplate").and_then(Value::as_object_mut)
        && !tt.contains_key("Networks")
    {
        tt.insert("Networks".into(), nets);
    }
    if let Some(mode) = spec.get_mut("Mode").and_then(Value::as_object_mut) {
        canonical_keys(
            mode,
            &["Replicated", "Global", "ReplicatedJob", "GlobalJob"],
        );
        if mode.contains_key("ReplicatedJob") || mode.contains_key("GlobalJob") {
            return Err(ApiError::bad(format!(
                "{WHAT}: Mode: jobs (replicated-job, global-job) are not supported by shoal"
            )));
        }
        if let Some(r) = mode.get_mut("Replicated").and_then(Value::as_object_mut) {
            r.entry("Replicas").or_insert(Value::from(1));
        }
    } else {
        spec.insert(
            "Mode".into(),
            serde_json::json!({"Replicated": {"Replicas": 1}}),
        );
    }
    task_template(v)
}

fn task_template(v: &mut Value) -> ApiResult<()> {
    let Some(tt) = object_at(v, &["TaskTemplate"]) else {
        return Err(ApiError::bad(format!("{WHAT}: TaskTemplate is missing")));
    };
    refuse_set(tt, "TaskTemplate", TASK_UNSUPPORTED)?;
    let runtime = match tt.get("Runtime").and_then(Value::as_str).unwrap_or("") {
        "" | "container" | "docker" => "docker",
        "native" => "native",
        other => {
            return Err(ApiError::bad(format!(
                "{WHAT}: TaskTemplate.Runtime {other:?} is not supported: use \"container\" (or shoal's \"native\")"
            )));
        }
    };
    tt.insert("Runtime".into(), Value::from(runtime));
    if let Some(p) = tt.get("Placement").and_then(Value::as_object) {
        refuse_set(
            p,
            "TaskTemplate.Placement",
            &[(
                "Platforms",
                "shoal does not match image platforms; use a node.platform constraint",
            )],
        )?;
    }
    if let Some(r) = tt
        .get("Resources")
        .and_then(|r| r.get("Reservations"))
        .and_then(Value::as_object)
    {
        refuse_set(
            r,
            "TaskTemplate.Resources.Reservations",
            &[(
                "GenericResources",
                "generic resources are not scheduled by shoal",
            )],
        )?;
    }
    if let Some(nets) = tt.get("Networks").and_then(Value::as_array) {
        for n in nets.iter().filter_map(Value::as_object) {
            refuse_set(
                n,
                "TaskTemplate.Networks[]",
                &[(
                    "DriverOpts",
                    "per-attachment driver options are not supported",
                )],
            )?;
        }
    }
    let Some(cs) = tt.get_mut("ContainerSpec").and_then(Value::as_object_mut) else {
        return Err(ApiError::bad(format!(
            "{WHAT}: TaskTemplate.ContainerSpec is missing"
        )));
    };
    refuse_set(cs, "TaskTemplate.ContainerSpec", CONTAINER_UNSUPPORTED)?;
    if let Some(mounts) = cs.get("Mounts").and_then(Value::as_array) {
        for m in mounts.iter().filter_map(Value::as_object) {
            for (opts, fields) in [
                (
                    "BindOptions",
                    &[
                        "NonRecursive",
                        "CreateMountpoint",
                        "ReadOnlyNonRecursive",
                        "ReadOnlyForceRecursive",
                    ][..],
                ),
                ("VolumeOptions", &["Subpath"][..]),
                ("TmpfsOptions", &["Options"][..]),
            ] {
                if let Some(o) = m.get(opts).and_then(Value::as_object) {
                    let refused: Vec<(&str, &str)> = fields
                        .iter()
                        .map(|f| (*f, "not supported by shoal"))
                        .collect();
                    refuse_set(
                        o,
                        &format!("TaskTemplate.ContainerSpec.Mounts[].{opts}"),
                        &refused,
                    )?;
                }
            }
        }
    }
    if let Some(configs) = cs.get("Configs").and_then(Value::as_array)
        && configs.iter().any(|c| c.get("Runtime").is_some())
    {
        return Err(ApiError::bad(format!(
            "{WHAT}: TaskTemplate.ContainerSpec.Configs[].Runtime (credential spec configs) is not supported"
        )));
    }
    Ok(())
}

/// Docker takes network names or ids in `Target`; the manager takes ids.
async fn resolve_networks(api: &Api, v: &mut Value) -> ApiResult<()> {
    let Some(nets) = v
        .pointer_mut("/TaskTemplate/Networks")
        .and_then(Value::as_array_mut)
    else {
        return Ok(());
    };
    for n in nets.iter_mut() {
        let Some(target) = n.get("Target").and_then(Value::as_str).map(str::to_string) else {
            continue;
        };
        let id = match api
            .control(ControlRequest::NetworkInspect {
                network: target.clone(),
            })
            .await
        {
            Ok(ControlResponse::Network(net)) => net.id,
            Ok(other) => return Err(unexpected(&other)),
            Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => {
                return Err(ApiError::not_found(format!("network {target} not found")));
            }
            Err(e) => return Err(e),
        };
        n["Target"] = Value::from(id);
    }
    Ok(())
}

/// shoal's spec in Docker's words: the "docker" runtime is Docker's "container".
pub fn to_engine(spec: &mut Value) {
    if let Some(rt) = spec.pointer_mut("/TaskTemplate/Runtime")
        && rt == "docker"
    {
        *rt = Value::from("container");
    }
}

/// The same for a task's spec (`Task.Spec`, a task template).
pub fn task_spec_to_engine(task_spec: &mut Value) {
    if let Some(rt) = task_spec.get_mut("Runtime")
        && rt == "docker"
    {
        *rt = Value::from("container");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::objects::{Runtime, ServiceMode};

    fn spec(v: Value) -> ApiResult<ServiceSpec> {
        let mut v = v;
        gojson::strip_nulls(&mut v);
        normalize(&mut v)?;
        gojson::decode(v, WHAT)
    }

    #[test]
    fn what_the_docker_cli_and_docker_py_send_becomes_shoal_s_spec() {
        // The CLI's shape, nulls and all; docker-py's lower-case mode without replicas.
        let s = spec(serde_json::json!({
            "Name": "web", "Labels": null,
            "TaskTemplate": {
                "ContainerSpec": {"Image": "busybox", "Args": ["httpd"], "Mounts": null, "Privileges": {"CredentialSpec": null}},
                "RestartPolicy": {"Condition": "on-failure", "MaxAttempts": 3},
                "Resources": {"Limits": {}, "Reservations": {}},
                "Placement": {}, "Runtime": ""
            },
            "Mode": {"Replicated": {"Replicas": 2}},
            "UpdateConfig": {"Parallelism": 1, "FailureAction": "pause", "MaxFailureRatio": 0, "Order": "stop-first"},
            "EndpointSpec": {"Mode": "vip", "Ports": [{"TargetPort": 80, "PublishedPort": 8080}]}
        }))
        .unwrap();
        assert_eq!(s.mode, ServiceMode::Replicated { replicas: 2 });
        assert_eq!(s.task_template.runtime, Runtime::Docker);
        assert_eq!(s.task_template.restart_policy.max_attempts, 3);
        assert_eq!(s.endpoint_spec.ports[0].published_port, 8080);
        let s = spec(serde_json::json!({
            "Name": "py", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}, "Mode": {"replicated": {}}
        }))
        .unwrap();
        assert_eq!(s.mode, ServiceMode::Replicated { replicas: 1 });
        let mut out = serde_json::to_value(&s).unwrap();
        to_engine(&mut out);
        assert_eq!(out["TaskTemplate"]["Runtime"], "container");
    }

    #[test]
    fn docker_fields_shoal_lacks_are_refused_by_name() {
        let base = |cs: Value, extra: Value| {
            let mut v = serde_json::json!({"Name": "x", "TaskTemplate": {"ContainerSpec": cs}});
            for (k, x) in extra.as_object().unwrap() {
                v["TaskTemplate"][k] = x.clone();
            }
            spec(v).unwrap_err().message
        };
        let e = base(
            serde_json::json!({"Image": "i", "Groups": ["wheel"]}),
            serde_json::json!({}),
        );
        assert!(e.contains("TaskTemplate.ContainerSpec.Groups"), "{e}");
        let e = base(
            serde_json::json!({"Image": "i"}),
            serde_json::json!({"Runtime": "plugin"}),
        );
        assert!(e.contains("Runtime \"plugin\""), "{e}");
        let e = base(
            serde_json::json!({"Image": "i"}),
            serde_json::json!({"Placement": {"Platforms": [{"OS": "linux"}]}}),
        );
        assert!(e.contains("Placement.Platforms"), "{e}");
        let e = spec(serde_json::json!({"Name": "j", "TaskTemplate": {"ContainerSpec": {"Image": "i"}}, "Mode": {"ReplicatedJob": {}}})).unwrap_err().message;
        assert!(e.contains("jobs"), "{e}");
        let e = spec(serde_json::json!({"Name": "x", "TaskTemplate": {"ContainerSpec": {"Image": "i"}, "RestartPolicy": {"Condition": "sometimes"}}})).unwrap_err().message;
        assert!(
            e.starts_with("service spec: TaskTemplate.RestartPolicy.Condition: unknown variant"),
            "{e}"
        );
    }
}
