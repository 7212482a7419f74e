//! Secrets and configs as files in a task. `files_for` is the pure part: from a task's
//! references and the node's view, the files it gets (target inside the task, owner, mode,
//! content, templated ones rendered). `store.rs` keeps them in memory only, on a tmpfs
//! shoald mounts outside its state dir, one directory per task; the executors mount them
//! into the task from there (Docker: a read-only bind per file, as Docker's swarm does from
//! its own tmpfs; native: see `exec/native_plan.rs`).

pub mod store;

use shoal_api::dispatch::NodeView;
use shoal_api::objects::Task;
use shoal_api::secrets::{FileTarget, GOLANG_TEMPLATE_DRIVER, Kind, SensitiveBytes, target_path};
use shoal_api::template::{Context, TemplateError};

pub use store::{PlacedFile, TaskFiles, TaskFilesDir};

/// One file a task gets from a secret or a config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskFile {
    pub kind: Kind,
    /// The secret's or config's name, for messages.
    pub source: String,
    /// Absolute path inside the task.
    pub target: String,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
    pub data: SensitiveBytes,
}

#[derive(Debug, thiserror::Error)]
pub enum TaskFilesError {
    #[error(
        "{kind} {name} (id {id}) is not on this node: the managers send a {kind} only with a task that uses it; it may have been removed, or the reference is stale (update the service)",
        kind = kind.word()
    )]
    Missing {
        kind: Kind,
        name: String,
        id: String,
    },
    #[error("{kind} {name}: {field} {value:?} is not a number; give a numeric {field} such as {field}=1000", kind = kind.word())]
    Owner {
        kind: Kind,
        name: String,
        field: &'static str,
        value: String,
    },
    #[error("{kind} {name}: template driver {driver:?} is unknown; the only one is {GOLANG_TEMPLATE_DRIVER:?}", kind = kind.word())]
    Driver {
        kind: Kind,
        name: String,
        driver: String,
    },
    #[error("{kind} {name}: a templated {kind} must be UTF-8 text", kind = kind.word())]
    NotText { kind: Kind, name: String },
    #[error("{kind} {name}: {source}", kind = kind.word())]
    Template {
        kind: Kind,
        name: String,
        #[source]
        source: TemplateError,
    },
}

/// Docker's uid/gid strings: numbers, "0" when empty.
fn id(kind: Kind, name: &str, field: &'static str, value: &str) -> Result<u32, TaskFilesError> {
    if value.is_empty() {
        return Ok(0);
    }
    value.parse().map_err(|_| TaskFilesError::Owner {
        kind,
        name: name.to_string(),
        field,
        value: value.to_string(),
    })
}

/// A reference as both kinds have it.
struct Reference<'a> {
    kind: Kind,
    id: &'a str,
    name: &'a str,
    file: &'a FileTarget,
}

/// The references of `task` that name a file; swarmkit skips the others (a reference
/// without a file target is for runtimes that read secrets themselves).
fn references(task: &Task) -> Vec<Reference<'_>> {
    let cs = &task.spec.container_spec;
    let secrets = cs.secrets.iter().filter_map(|r| {
        Some(Reference {
            kind: Kind::Secret,
            id: &r.secret_id,
            name: &r.secret_name,
            file: r.file.as_ref()?,
        })
    });
    let configs = cs.configs.iter().filter_map(|r| {
        Some(Reference {
            kind: Kind::Config,
            id: &r.config_id,
            name: &r.config_name,
            file: r.file.as_ref()?,
        })
    });
    secrets.chain(configs).collect()
}

/// Found by id; by name only for a reference the manager left without one.
fn matches(r: &Reference<'_>, id: &str, name: &str) -> bool {
    if r.id.is_empty() {
        r.name == name
    } else {
        r.id == id
    }
}

/// A secret's or config's raw data and template driver, from the view.
fn lookup<'v>(
    r: &Reference<'_>,
    view: &'v NodeView,
) -> Option<(&'v [u8], Option<&'v shoal_api::objects::Driver>)> {
    match r.kind {
        Kind::Secret => view
            .secrets
            .iter()
            .find(|s| matches(r, &s.id, &s.spec.name))
            .map(|s| (s.data.as_slice(), s.spec.templating.as_ref())),
        Kind::Config => view
            .configs
            .iter()
            .find(|c| matches(r, &c.id, &c.spec.name))
            .map(|c| (c.spec.data.as_slice(), c.spec.templating.as_ref())),
    }
}

/// The payload functions' view of `task`: raw data of its secrets and configs by file
/// target as written, and its env (as the task gets it, templates expanded).
fn scope(task: &Task, view: &NodeView) -> crate::template::PayloadScope {
    let mut scope = crate::template::PayloadScope::default();
    for r in references(task) {
        let Some((data, _)) = lookup(&r, view) else {
            continue;
        };
        match r.kind {
            Kind::Secret => {
                scope
                    .secrets
                    .insert(r.file.name.clone(), SensitiveBytes::new(data.to_vec()));
            }
            Kind::Config => {
                scope.configs.insert(
                    r.file.name.clone(),
                    String::from_utf8_lossy(data).into_owned(),
                );
            }
        }
    }
    for kv in &task.spec.container_spec.env {
        if let Some((k, v)) = kv.split_once('=') {
            scope.env.insert(k.to_string(), v.to_string());
        }
    }
    scope
}

/// The files `task` gets, in the order of its references (secrets, then configs). A
/// reference whose secret or config is not in the view fails the task by name: starting
/// it without the file, or waiting, would hide the problem.
pub fn files_for(
    task: &Task,
    view: &NodeView,
    ctx: &Context,
) -> Result<Vec<TaskFile>, TaskFilesError> {
    let mut out = Vec::new();
    for r in references(task) {
        let Some((data, templating)) = lookup(&r, view) else {
            return Err(TaskFilesError::Missing {
                kind: r.kind,
                name: r.name.to_string(),
                id: r.id.to_string(),
            });
        };
        let data = match templating.filter(|t| !t.name.is_empty()) {
            None => SensitiveBytes::new(data.to_vec()),
            Some(t) if t.name != GOLANG_TEMPLATE_DRIVER => {
                return Err(TaskFilesError::Driver {
                    kind: r.kind,
                    name: r.name.to_string(),
                    driver: t.name.clone(),
                });
            }
            Some(_) => {
                let text = std::str::from_utf8(data).map_err(|_| TaskFilesError::NotText {
                    kind: r.kind,
                    name: r.name.to_string(),
                })?;
                crate::template::render_payload(text, ctx, scope(task, view)).map_err(|source| {
                    TaskFilesError::Template {
                        kind: r.kind,
                        name: r.name.to_string(),
                        // The task's error goes into raft, `service ps` and the log.
                        source: match r.kind {
                            Kind::Secret => source.withheld(),
                            Kind::Config => source,
                        },
                    }
                })?
            }
        };
        out.push(TaskFile {
            kind: r.kind,
            source: r.name.to_string(),
            target: target_path(r.kind, &r.file.name),
            uid: id(r.kind, r.name, "uid", &r.file.uid)?,
            gid: id(r.kind, r.name, "gid", &r.file.gid)?,
            mode: r.file.mode & 0o7777,
            data,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
