//! Service templates expanded per task before it starts, for both executors, in the fields
//! swarmkit expands (`template/expand.go`): the hostname, env values, mount sources and
//! targets, volume labels and volume driver options. The engine is `shoal_api::template`;
//! this module picks the fields and builds the context from what the node's view knows.

use shoal_api::dispatch::NodeView;
use shoal_api::objects::{ContainerSpec, Task};
use shoal_api::template::{Context, PlatformContext, TemplateError, render};

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
