//! Service templates, as swarmkit's `template/` has them: a service's hostname, env values
//! and mount sources may hold `{{.Service.Name}}`, `{{.Node.Hostname}}`, `{{.Task.Slot}}`
//! and the like. They stay verbatim in the spec and are expanded per task by the agent that
//! runs it. The syntax is Go's text/template (the gtmpl crate) with swarmkit's one extra
//! function, `join SEP A B...`, and its strictness (`missingkey=error`): a field or label
//! that does not exist is an error, not an empty string.
//!
//! `check` is for the CLI and the manager, which can refuse a malformed template when a
//! service is created instead of letting every task fail on its node.

use crate::objects::{ContainerSpec, Task};
use gtmpl::Value;
/// What a template function is and returns, for callers of `render_with`.
pub use gtmpl::{Func, FuncError, Value as TemplateValue};
use std::collections::{BTreeMap, HashMap};

/// What a template may name, swarmkit's `template.Context`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    pub service: ServiceContext,
    pub node: NodeContext,
    pub task: TaskContext,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceContext {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeContext {
    pub id: String,
    pub hostname: String,
    pub platform: PlatformContext,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlatformContext {
    pub architecture: String,
    pub os: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskContext {
    pub id: String,
    /// Docker's task name: `service.slot.id`, or `service.node.id` for a global service.
    pub name: String,
    /// The replica slot; a global service's tasks have the node id here, as in swarmkit.
    pub slot: String,
}

/// The fields a template may use, for error messages.
const FIELDS: &str = ".Service.ID .Service.Name .Service.Labels .Node.ID .Node.Hostname .Node.Platform.OS .Node.Platform.Architecture .Task.ID .Task.Name .Task.Slot";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("template {text:?} is malformed: {reason}")]
    Parse { text: String, reason: String },
    #[error("template {text:?}: {reason}")]
    Render { text: String, reason: String },
    /// A secret's template failed: its text, and the engine's reason (which can quote it),
    /// are left out, so that a task error or an answer never carries the secret.
    #[error(
        "its template does not parse or render; the text and the reason are withheld because they could quote the secret (the same text as a config shows the error)"
    )]
    Withheld,
}

impl TemplateError {
    /// This error as it may be shown for a secret: [`TemplateError::Withheld`].
    pub fn withheld(self) -> TemplateError {
        TemplateError::Withheld
    }
}

impl Context {
    /// The context of `task`, its service and the node it runs on.
    pub fn for_task(
        task: &Task,
        service_name: &str,
        service_labels: &BTreeMap<String, String>,
        node_hostname: &str,
        platform: PlatformContext,
    ) -> Context {
        Context {
            service: ServiceContext {
                id: task.service_id.clone(),
                name: service_name.to_string(),
                labels: service_labels.clone(),
            },
            node: NodeContext {
                id: task.node_id.clone(),
                hostname: node_hostname.to_string(),
                platform,
            },
            task: TaskContext {
                id: task.id.clone(),
                name: task.name(service_name),
                slot: if task.slot > 0 {
                    task.slot.to_string()
                } else {
                    task.node_id.clone()
                },
            },
        }
    }

    /// Labels as a `Map` are lenient (a missing key is `<no value>`), as an `Object` strict.
    fn value(&self, strict_labels: bool) -> Value {
        fn object(fields: Vec<(&str, Value)>) -> Value {
            Value::Object(
                fields
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            )
        }
        let labels: HashMap<String, Value> = self
            .service
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        let labels = if strict_labels {
            Value::Object(labels)
        } else {
            Value::Map(labels)
        };
        object(vec![
            (
                "Service",
                object(vec![
                    ("ID", Value::from(self.service.id.as_str())),
                    ("Name", Value::from(self.service.name.as_str())),
                    ("Labels", labels),
                ]),
            ),
            (
                "Node",
                object(vec![
                    ("ID", Value::from(self.node.id.as_str())),
                    ("Hostname", Value::from(self.node.hostname.as_str())),
                    (
                        "Platform",
                        object(vec![
                            (
                                "Architecture",
                                Value::from(self.node.platform.architecture.as_str()),
                            ),
                            ("OS", Value::from(self.node.platform.os.as_str())),
                        ]),
                    ),
                ]),
            ),
            (
                "Task",
                object(vec![
                    ("ID", Value::from(self.task.id.as_str())),
                    ("Name", Value::from(self.task.name.as_str())),
                    ("Slot", Value::from(self.task.slot.as_str())),
                ]),
            ),
        ])
    }
}

/// swarmkit's `join`: the first argument is the separator.
fn join(args: &[Value]) -> Result<Value, FuncError> {
    let Some((sep, parts)) = args.split_first() else {
        return Err(FuncError::AtLeastXArgs("join".into(), 1));
    };
    let parts: Vec<String> = parts.iter().map(Value::to_string).collect();
    Ok(Value::from(parts.join(&sep.to_string())))
}

/// Actions a service template may not use: `define`/`template`/`block` can recurse until
/// the stack overflows, and `printf`/`print`/`println` can be asked for widths that
/// exhaust memory. Swarm's templates need none of them (fields, `index`, `join`).
const REFUSED_ACTIONS: [&str; 6] = ["define", "template", "block", "printf", "print", "println"];

fn refuse_unsafe(text: &str) -> Result<(), TemplateError> {
    for (i, _) in text.match_indices("{{") {
        let rest = text[i + 2..].trim_start_matches('-').trim_start();
        // Every word of the action: a pipeline can call a function after `|`.
        let action = rest.split("}}").next().unwrap_or("");
        for word in action.split(|c: char| c.is_whitespace() || c == '|' || c == '(') {
            if REFUSED_ACTIONS.contains(&word) {
                return Err(TemplateError::Parse {
                    text: text.to_string(),
                    reason: format!(
                        "{word:?} is not allowed in service templates (use fields, index and join)"
                    ),
                });
            }
        }
    }
    Ok(())
}

fn parse(text: &str, funcs: &[(&str, Func)]) -> Result<gtmpl::Template, TemplateError> {
    refuse_unsafe(text)?;
    let mut tmpl = gtmpl::Template::default();
    tmpl.add_func("join", join);
    for (name, f) in funcs {
        tmpl.add_func(name, *f);
    }
    tmpl.parse(text).map_err(|e| TemplateError::Parse {
        text: text.to_string(),
        reason: e.to_string(),
    })?;
    Ok(tmpl)
}

fn run(text: &str, value: Value, funcs: &[(&str, Func)]) -> Result<String, TemplateError> {
    let tmpl = parse(text, funcs)?;
    tmpl.render(&gtmpl::Context::from(value))
        .map_err(|e| TemplateError::Render {
            text: text.to_string(),
            reason: match e {
                // gtmpl's own message prints the whole receiver.
                gtmpl::error::ExecError::NoFiledFor(field, _) => {
                    format!("no field or label {field:?} (templates know {FIELDS})")
                }
                e => e.to_string(),
            },
        })
}

/// Expands `text` for one task. Text without `{{` is returned as it is.
pub fn render(text: &str, ctx: &Context) -> Result<String, TemplateError> {
    if !text.contains("{{") {
        return Ok(text.to_string());
    }
    run(text, ctx.value(true), &[])
}

/// Like `render`, with functions beside `join`: the agent's `secret`, `config` and `env`
/// for templated secrets and configs (swarmkit's `PayloadContext`).
pub fn render_with(
    text: &str,
    ctx: &Context,
    funcs: &[(&str, Func)],
) -> Result<String, TemplateError> {
    if !text.contains("{{") {
        return Ok(text.to_string());
    }
    run(text, ctx.value(true), funcs)
}

/// One field of a container spec that may hold a service template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Hostname,
    /// An env value, by its key.
    Env(String),
    /// A mount's source or target, by the mount's target as written.
    MountSource(String),
    MountTarget(String),
    /// A volume label or driver option of a mount, by mount target and key.
    VolumeLabel(String, String),
    DriverOption(String, String),
}

impl Field {
    /// As an operator names it in a task error ("env GREETING", "mount /data source").
    pub fn name(&self) -> String {
        match self {
            Field::Hostname => "hostname".into(),
            Field::Env(k) => format!("env {k}"),
            Field::MountSource(t) => format!("mount {t} source"),
            Field::MountTarget(t) => format!("mount {t} target"),
            Field::VolumeLabel(t, k) => format!("mount {t} volume label {k}"),
            Field::DriverOption(t, k) => format!("mount {t} driver option {k}"),
        }
    }

    /// The `service create` flag that sets it.
    pub fn flag(&self) -> &'static str {
        match self {
            Field::Hostname => "--hostname",
            Field::Env(_) => "--env",
            Field::MountSource(_) => "--mount source",
            Field::MountTarget(_) => "--mount target",
            Field::VolumeLabel(..) => "--mount volume-label",
            Field::DriverOption(..) => "--mount volume-opt",
        }
    }

    /// Docker's spec field, with its flag.
    pub fn spec_field(&self) -> &'static str {
        match self {
            Field::Hostname => "ContainerSpec.Hostname (--hostname)",
            Field::Env(_) => "ContainerSpec.Env (--env)",
            Field::MountSource(_) => "ContainerSpec.Mounts.Source (--mount)",
            Field::MountTarget(_) => "ContainerSpec.Mounts.Target (--mount)",
            Field::VolumeLabel(..) => "ContainerSpec.Mounts.VolumeOptions.Labels (--mount)",
            Field::DriverOption(..) => {
                "ContainerSpec.Mounts.VolumeOptions.DriverConfig.Options (--mount)"
            }
        }
    }
}

/// Calls `f` on every field of `cs` that service templates may fill, in place: the one
/// list of those fields, shared by the agent's expansion and the create-time check.
pub fn for_each_field<E>(
    cs: &mut ContainerSpec,
    mut f: impl FnMut(Field, &mut String) -> Result<(), E>,
) -> Result<(), E> {
    f(Field::Hostname, &mut cs.hostname)?;
    for kv in &mut cs.env {
        if let Some((k, v)) = kv.split_once('=') {
            let (k, mut v) = (k.to_string(), v.to_string());
            f(Field::Env(k.clone()), &mut v)?;
            *kv = format!("{k}={v}");
        }
    }
    for m in &mut cs.mounts {
        let target = m.target.clone();
        f(Field::MountSource(target.clone()), &mut m.source)?;
        f(Field::MountTarget(target.clone()), &mut m.target)?;
        if let Some(vo) = &mut m.volume_options {
            for (k, v) in vo.labels.iter_mut() {
                f(Field::VolumeLabel(target.clone(), k.clone()), v)?;
            }
            if let Some(d) = &mut vo.driver_config {
                for (k, v) in d.options.iter_mut() {
                    f(Field::DriverOption(target.clone(), k.clone()), v)?;
                }
            }
        }
    }
    Ok(())
}

/// Checks every templated field of `cs` (see `for_each_field`); the first bad one is
/// returned with its field.
pub fn check_container_spec(cs: &ContainerSpec) -> Result<(), (Field, TemplateError)> {
    let mut copy = cs.clone();
    for_each_field(&mut copy, |field, text| check(text).map_err(|e| (field, e)))
}

/// Whether `text` is a template the agent can expand: it parses and names only fields that
/// exist (labels are not known before a task runs, so any label is accepted).
pub fn check(text: &str) -> Result<(), TemplateError> {
    check_with(text, &[])
}

/// [`check`] for a templated secret's or config's data, which may also call the agent's
/// `secret`, `config` and `env` (their results are only known on the node).
pub fn check_payload(text: &str) -> Result<(), TemplateError> {
    fn stub(_: &[TemplateValue]) -> Result<TemplateValue, FuncError> {
        Ok(TemplateValue::from(""))
    }
    check_with(text, &[("secret", stub), ("config", stub), ("env", stub)])
}

fn check_with(text: &str, funcs: &[(&str, Func)]) -> Result<(), TemplateError> {
    if !text.contains("{{") {
        return Ok(());
    }
    let placeholder = Context {
        service: ServiceContext {
            id: "service-id".into(),
            name: "service".into(),
            labels: BTreeMap::new(),
        },
        node: NodeContext {
            id: "node-id".into(),
            hostname: "node".into(),
            platform: PlatformContext {
                architecture: "x86_64".into(),
                os: "linux".into(),
            },
        },
        task: TaskContext {
            id: "task-id".into(),
            name: "service.1.task-id".into(),
            slot: "1".into(),
        },
    };
    run(text, placeholder.value(false), funcs).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            service: ServiceContext {
                id: "svc1".into(),
                name: "web".into(),
                labels: [("tier".to_string(), "front".to_string())].into(),
            },
            node: NodeContext {
                id: "node1".into(),
                hostname: "host-a".into(),
                platform: PlatformContext {
                    architecture: "x86_64".into(),
                    os: "linux".into(),
                },
            },
            task: TaskContext {
                id: "task1".into(),
                name: "web.3.task1".into(),
                slot: "3".into(),
            },
        }
    }

    #[test]
    fn expands_every_field_swarmkit_knows() {
        let c = ctx();
        let cases = [
            ("{{.Service.Name}}-{{.Task.Slot}}", "web-3"),
            ("{{.Service.ID}}", "svc1"),
            ("{{.Service.Labels.tier}}", "front"),
            ("{{index .Service.Labels \"tier\"}}", "front"),
            ("{{.Node.ID}}/{{.Node.Hostname}}", "node1/host-a"),
            (
                "{{.Node.Platform.OS}} {{.Node.Platform.Architecture}}",
                "linux x86_64",
            ),
            ("{{.Task.ID}} {{.Task.Name}}", "task1 web.3.task1"),
            ("{{ .Task.Slot }}", "3"),
            ("{{join \"-\" .Service.Name .Task.Slot}}", "web-3"),
            ("plain text, no template", "plain text, no template"),
            ("only }} closing", "only }} closing"),
        ];
        for (text, want) in cases {
            assert_eq!(render(text, &c).as_deref(), Ok(want), "{text}");
        }
    }

    #[test]
    fn unknown_fields_and_labels_are_errors_not_empty_strings() {
        let c = ctx();
        let err = render("{{.Service.Nmae}}", &c).unwrap_err();
        assert!(
            matches!(&err, TemplateError::Render { reason, .. } if reason.contains("\"Nmae\"") && reason.contains(".Task.Slot")),
            "{err}"
        );
        assert!(render("{{.Service.Labels.nope}}", &c).is_err());
        let err = render("{{.Task.Slot", &c).unwrap_err();
        assert!(matches!(err, TemplateError::Parse { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("template \"{{.Task.Slot\" is malformed")
        );
    }

    #[test]
    fn check_refuses_what_no_task_could_expand() {
        assert_eq!(check("web-{{.Task.Slot}}"), Ok(()));
        assert_eq!(check("{{.Service.Labels.anything}}"), Ok(()));
        assert_eq!(check("no template"), Ok(()));
        assert!(check("{{.Task.Slot").is_err());
        assert!(check("{{.Task.Nope}}").is_err());
        assert!(check("{{nosuchfunc .Task.ID}}").is_err());
    }

    #[test]
    fn the_create_time_check_covers_every_field_the_agent_expands() {
        let mut cs: ContainerSpec = serde_json::from_value(serde_json::json!({
            "Hostname": "{{.Task.Slot}}",
            "Env": ["A={{.Node.ID}}", "BARE"],
            "Mounts": [{"Type": "volume", "Source": "d-{{.Task.Slot}}", "Target": "/d",
                "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": {"device": "/x"}}}}]
        }))
        .unwrap();
        assert_eq!(check_container_spec(&cs), Ok(()));
        cs.mounts[0]
            .volume_options
            .as_mut()
            .unwrap()
            .driver_config
            .as_mut()
            .unwrap()
            .options
            .insert("o".into(), "{{.Task.Nope}}".into());
        let (field, _) = check_container_spec(&cs).unwrap_err();
        assert_eq!(field, Field::DriverOption("/d".into(), "o".into()));
        assert_eq!(field.name(), "mount /d driver option o");
    }

    #[test]
    fn recursion_and_unbounded_formatting_are_refused_before_parsing() {
        for bad in [
            r#"{{define "a"}}{{template "a" .}}{{end}}{{template "a" .}}"#,
            r#"{{- block "b" .}}x{{end}}"#,
            r#"{{printf "%999999999d" 1}}"#,
            r#"{{.Task.ID | printf "%s"}}"#,
            r#"{{ println .Task.ID }}"#,
        ] {
            let e = check(bad).unwrap_err().to_string();
            assert!(e.contains("not allowed in service templates"), "{bad}: {e}");
        }
        assert_eq!(check(r#"{{index .Service.Labels "templated"}}"#), Ok(()));
    }

    #[test]
    fn context_of_a_task_follows_swarmkit() {
        let mut task: Task = serde_json::from_value(serde_json::json!({
            "ID": "t1", "Version": {"Index": 1}, "CreatedAt": "", "UpdatedAt": "",
            "ServiceID": "s1", "Slot": 2, "NodeID": "n1",
            "Spec": {"ContainerSpec": {}, "Runtime": "docker"},
            "SpecVersion": {"Index": 1},
            "Status": {"Timestamp": "", "State": "new"},
            "DesiredState": "running"
        }))
        .unwrap();
        let labels = BTreeMap::new();
        let c = Context::for_task(&task, "web", &labels, "h", PlatformContext::default());
        assert_eq!(c.task.name, "web.2.t1");
        assert_eq!(c.task.slot, "2");
        task.slot = 0;
        let c = Context::for_task(&task, "web", &labels, "h", PlatformContext::default());
        assert_eq!(c.task.name, "web.n1.t1");
        assert_eq!(c.task.slot, "n1", "a global task's slot is its node");
    }
}
