//! Service templates expanded per task before it starts, for both executors, in the fields
//! swarmkit expands (`template/expand.go`): the hostname, env values, mount sources and
//! targets, volume labels and volume driver options. The engine is `shoal_api::template`;
//! this module picks the fields and builds the context from what the node's view knows.
//!
//! Templated secrets and configs (`--template-driver golang`) render their whole data with
//! the same context plus swarmkit's payload functions (`template/context.go`): `secret T`
//! and `config T` give the data of the task's secret or config whose file target is `T`
//! (as written in the reference), `env V` the value of the task's env variable `V` (empty
//! when unset).

use shoal_api::dispatch::NodeView;
use shoal_api::objects::{ContainerSpec, Task};
use shoal_api::secrets::SensitiveBytes;
use shoal_api::template::{
    Context, FuncError, PlatformContext, TemplateError, TemplateValue, render, render_with,
};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// A template in one field of a task's spec that cannot be expanded.
#[derive(Debug, thiserror::Error)]
#[error("expanding {field}: {source}")]
pub struct ExpandError {
    /// Which field, as an operator would name it ("env GREETING", "mount /data source").
    pub field: String,
    #[source]
    pub source: TemplateError,
}

/// The template context of `task` on this node, from the view's annotations of the
/// task's service (its endpoint's name when a manager of an older version sends none).
pub fn context(task: &Task, view: &NodeView) -> Context {
    let annotations = view
        .services
        .iter()
        .find(|s| s.service_id == task.service_id);
    let service_name = annotations
        .map(|s| s.name.clone())
        .or_else(|| {
            view.endpoints
                .iter()
                .find(|e| e.service_id == task.service_id)
                .map(|e| e.service_name.clone())
        })
        .unwrap_or_default();
    let labels = annotations.map(|s| s.labels.clone()).unwrap_or_default();
    if service_name.is_empty() {
        tracing::debug!(task = %task.id, service = %task.service_id, "service name not in this node's view; templates see an empty .Service.Name");
    }
    let (hostname, platform) = match &view.node {
        Some(n) => (
            n.description.hostname.clone(),
            PlatformContext {
                architecture: n.description.platform.architecture.clone(),
                os: n.description.platform.os.clone(),
            },
        ),
        None => (
            String::new(),
            PlatformContext {
                architecture: std::env::consts::ARCH.to_string(),
                os: std::env::consts::OS.to_string(),
            },
        ),
    };
    let mut ctx = Context::for_task(task, &service_name, &labels, &hostname, platform);
    if ctx.node.id.is_empty()
        && let Some(n) = &view.node
    {
        ctx.node.id = n.id.clone();
    }
    ctx
}

/// `cs` with its templates expanded for one task; everything else is kept as it is.
pub fn expand(cs: &ContainerSpec, ctx: &Context) -> Result<ContainerSpec, ExpandError> {
    let mut out = cs.clone();
    shoal_api::template::for_each_field(&mut out, |f, text| {
        *text = render(text, ctx).map_err(|source| ExpandError {
            field: f.name(),
            source,
        })?;
        Ok(())
    })?;
    Ok(out)
}

/// `task` with its container spec expanded.
pub fn expand_task(task: &Task, ctx: &Context) -> Result<Task, ExpandError> {
    let mut t = task.clone();
    t.spec.container_spec = expand(&task.spec.container_spec, ctx)?;
    Ok(t)
}

/// What the payload functions of one render may return: the task's secrets and configs by
/// file target, and its env.
#[derive(Default)]
pub struct PayloadScope {
    pub secrets: BTreeMap<String, SensitiveBytes>,
    pub configs: BTreeMap<String, String>,
    pub env: BTreeMap<String, String>,
}

thread_local! {
    // gtmpl's functions are plain `fn`s; the render is synchronous on this thread, so the
    // scope of the payload being rendered lives here for the duration of one call.
    static SCOPE: RefCell<Option<PayloadScope>> = const { RefCell::new(None) };
}

/// Clears the scope (and wipes the secrets in it) however the render ends.
struct ScopeGuard;

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        SCOPE.with(|s| s.borrow_mut().take());
    }
}

fn one_string_arg(name: &str, args: &[TemplateValue]) -> Result<String, FuncError> {
    match args {
        [TemplateValue::String(s)] => Ok(s.clone()),
        [_] => Err(FuncError::UnableToConvertFromValue),
        _ => Err(FuncError::ExactlyXArgs(name.into(), 1)),
    }
}

fn secret_fn(args: &[TemplateValue]) -> Result<TemplateValue, FuncError> {
    let target = one_string_arg("secret", args)?;
    SCOPE.with(|s| {
        let scope = s.borrow();
        scope
            .as_ref()
            .and_then(|sc| sc.secrets.get(&target))
            // Go's string(bytes) keeps any bytes; a Rust string needs UTF-8.
            .map(|v| TemplateValue::from(String::from_utf8_lossy(v.as_slice()).as_ref()))
            .ok_or_else(|| FuncError::Generic(format!("secret target {target} not found")))
    })
}

fn config_fn(args: &[TemplateValue]) -> Result<TemplateValue, FuncError> {
    let target = one_string_arg("config", args)?;
    SCOPE.with(|s| {
        let scope = s.borrow();
        scope
            .as_ref()
            .and_then(|sc| sc.configs.get(&target))
            .map(|v| TemplateValue::from(v.as_str()))
            .ok_or_else(|| FuncError::Generic(format!("config target {target} not found")))
    })
}

fn env_fn(args: &[TemplateValue]) -> Result<TemplateValue, FuncError> {
    let name = one_string_arg("env", args)?;
    SCOPE.with(|s| {
        let scope = s.borrow();
        let value = scope.as_ref().and_then(|sc| sc.env.get(&name));
        Ok(TemplateValue::from(value.map(String::as_str).unwrap_or("")))
    })
}

/// Renders a templated secret's or config's data for one task.
pub fn render_payload(
    text: &str,
    ctx: &Context,
    scope: PayloadScope,
) -> Result<SensitiveBytes, TemplateError> {
    SCOPE.with(|s| *s.borrow_mut() = Some(scope));
    let _clear = ScopeGuard;
    render_with(
        text,
        ctx,
        &[
            ("secret", secret_fn),
            ("config", config_fn),
            ("env", env_fn),
        ],
    )
    // The rendered text becomes the zeroized buffer without a copy.
    .map(|text| SensitiveBytes::new(text.into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_api::objects::{Driver, Mount, VolumeOptions};

    fn task() -> Task {
        serde_json::from_value(serde_json::json!({
            "ID": "t1", "Version": {"Index": 1}, "CreatedAt": "", "UpdatedAt": "",
            "ServiceID": "s1", "Slot": 2, "NodeID": "n1",
            "Spec": {"ContainerSpec": {}, "Runtime": "docker"},
            "SpecVersion": {"Index": 1},
            "Status": {"Timestamp": "", "State": "new"},
            "DesiredState": "running"
        }))
        .unwrap()
    }

    fn view() -> NodeView {
        serde_json::from_value(serde_json::json!({
            "node": {
                "ID": "n1", "Version": {"Index": 1}, "CreatedAt": "", "UpdatedAt": "",
                "Spec": {"Role": "worker", "Availability": "active", "Labels": {}},
                "Description": {"Hostname": "host-a", "Platform": {"Architecture": "x86_64", "OS": "linux"}, "Executor": "docker"},
                "Status": {"State": "ready", "Addr": "198.18.0.1"}
            },
            "tasks": [], "networks": [], "managers": [],
            "endpoints": [{"service_id": "s1", "service_name": "web", "mode": "vip", "ports": [], "virtual_ips": [], "backends": []}],
            "heartbeat_period_ns": 5000000000u64, "data_path_port": 4789
        }))
        .unwrap()
    }

    #[test]
    fn context_comes_from_the_task_and_the_view() {
        let c = context(&task(), &view());
        assert_eq!(c.service.name, "web");
        assert_eq!(c.service.id, "s1");
        assert_eq!(c.node.hostname, "host-a");
        assert_eq!(c.node.platform.os, "linux");
        assert_eq!(c.task.name, "web.2.t1");
        assert_eq!(c.task.slot, "2");
    }

    #[test]
    fn service_annotations_give_name_and_labels() {
        let mut v = view();
        v.endpoints.clear();
        v.services = vec![shoal_api::dispatch::ServiceAnnotations {
            service_id: "s1".into(),
            name: "shop_web".into(),
            labels: [("tier".to_string(), "front".to_string())].into(),
            registry_auth: None,
        }];
        let c = context(&task(), &v);
        assert_eq!(c.service.name, "shop_web", "no endpoint needed");
        let out = expand(
            &ContainerSpec {
                hostname: "{{index .Service.Labels \"tier\"}}-{{.Task.Slot}}".into(),
                ..Default::default()
            },
            &c,
        )
        .unwrap();
        assert_eq!(out.hostname, "front-2");
    }

    #[test]
    fn expands_hostname_env_and_mounts_only() {
        let ctx = context(&task(), &view());
        let cs = ContainerSpec {
            image: "img:{{.Task.Slot}}".into(),
            hostname: "{{.Service.Name}}-{{.Task.Slot}}".into(),
            env: vec![
                "NODE={{.Node.Hostname}}".into(),
                "PLAIN=x".into(),
                "BARE".into(),
            ],
            args: vec!["{{.Task.ID}}".into()],
            mounts: vec![Mount {
                kind: "volume".into(),
                source: "data-{{.Task.Slot}}".into(),
                target: "/data/{{.Node.ID}}".into(),
                volume_options: Some(VolumeOptions {
                    labels: [("slot".to_string(), "{{.Task.Slot}}".to_string())].into(),
                    driver_config: Some(Driver {
                        name: "local".into(),
                        options: [("device".to_string(), "/srv/{{.Task.ID}}".to_string())].into(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let out = expand(&cs, &ctx).unwrap();
        assert_eq!(out.hostname, "web-2");
        assert_eq!(out.env, ["NODE=host-a", "PLAIN=x", "BARE"]);
        assert_eq!(out.image, cs.image, "the image is not a template field");
        assert_eq!(out.args, cs.args, "nor are the args");
        let m = &out.mounts[0];
        assert_eq!(m.source, "data-2");
        assert_eq!(m.target, "/data/n1");
        let vo = m.volume_options.as_ref().unwrap();
        assert_eq!(vo.labels["slot"], "2");
        assert_eq!(
            vo.driver_config.as_ref().unwrap().options["device"],
            "/srv/t1"
        );
    }

    #[test]
    fn a_bad_template_names_its_field() {
        let ctx = context(&task(), &view());
        let cs = ContainerSpec {
            env: vec!["GREETING={{.Task.Nope}}".into()],
            ..Default::default()
        };
        let err = expand(&cs, &ctx).unwrap_err();
        assert_eq!(err.field, "env GREETING");
        assert!(
            err.to_string()
                .starts_with("expanding env GREETING: template")
        );
    }
}
